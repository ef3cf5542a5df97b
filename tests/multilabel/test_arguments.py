"""multilabel/arguments.py: parse_overrides (typed values, shared names, exit status 2 naming bad
input) and --help from configs.py's field declarations, for every script. (From
tests/test_configs.py's parse and --help tests.)"""

import dataclasses
import importlib
import os
import re
import subprocess
import sys

import pytest

import configs
from multilabel import errors
from tests.helpers import REPO, parse


def test_good_values_of_each_type(capsys):
  model = configs.ModelConfig(label_count=2, input_tfrecord_file="a")
  create = configs.CreateTFRecordConfig(imglist_file="a", imglabel_file="b")
  code, out, _ = parse(capsys, ["--num_shards=4", "--weight_decay=3e-5", "--use_regularizer=false",
                                "--output_file=out/a=b.rec", "--batch_size", "7"], model, create)
  assert code is None
  assert create.num_shards == 4 and type(create.num_shards) is int
  assert model.weight_decay == 3e-5 and type(model.weight_decay) is float
  assert model.use_regularizer is False
  assert create.output_file == "out/a=b.rec"  # only the first '=' separates name and value
  assert model.batch_size == 7  # the "--field value" form
  assert "CreateTFRecordConfig.num_shards = 4" in out and "ModelConfig.weight_decay = 3e-05" in out
  untouched = {"label_count", "target_height", "image_data_key"}
  default = configs.ModelConfig(label_count=2, input_tfrecord_file="a")
  assert all(getattr(model, f) == getattr(default, f) for f in untouched)


@pytest.mark.parametrize("text, value", [("true", True), ("True", True), ("1", True),
                                         ("false", False), ("FALSE", False), ("0", False)])
def test_booleans(capsys, text, value):
  model = configs.ModelConfig(label_count=2, input_tfrecord_file="a", train_base_network=not value)
  assert parse(capsys, [f"--train_base_network={text}"], model)[0] is None
  assert model.train_base_network is value


def test_a_shared_name_sets_every_config_that_has_it(capsys):
  read, model = configs.ReadTFRecordConfig(data_path="a"), configs.ModelConfig(
      label_count=2, input_tfrecord_file="a")
  code, out, _ = parse(capsys, ["--image_label_key=y"], read, model)
  assert code is None and read.image_label_key == "y" and model.image_label_key == "y"
  assert "ReadTFRecordConfig.image_label_key" in out and "ModelConfig.image_label_key" in out
  train, inference = configs.TrainConfig(), configs.InferenceConfig()
  assert parse(capsys, ["--gpu_id=-1"], train, inference)[0] is None
  assert train.gpu_id == inference.gpu_id == "-1"


def test_unknown_field_exits_2_naming_it(capsys):
  cfg = configs.CreateTFRecordConfig()
  before = dataclasses.asdict(cfg)
  code, _, err = parse(capsys, ["--num_shards=2", "--num_shard=3"], cfg)
  assert code == 2 and "--num_shard" in err and "unknown" in err
  assert cfg.num_shards == 2 and dataclasses.asdict(cfg) == {**before, "num_shards": 2}


@pytest.mark.parametrize("arg, named", [("--num_shards=three", "'three'"),
                                        ("--num_shards=2.5", "'2.5'"),
                                        ("--weight_decay=lots", "'lots'"),
                                        ("--use_regularizer=maybe", "'maybe'")])
def test_bad_type_exits_2_naming_field_and_value(capsys, arg, named):
  code, _, err = parse(capsys, [arg], configs.CreateTFRecordConfig(), configs.ModelConfig())
  assert code == 2 and arg.split("=")[0] in err and named in err


@pytest.mark.parametrize("argv, named", [(["data.rec"], "'data.rec'"), (["--seed"], "--seed")])
def test_positional_or_missing_value_exits_2(capsys, argv, named):
  code, _, err = parse(capsys, argv, configs.CreateTFRecordConfig())
  assert code == 2 and named in err


def test_real_process_exits_2_on_an_unknown_field(tmp_path):
  result = subprocess.run([sys.executable, "make_demo_data.py", f"--output_dir={tmp_path}",
                           "--num_trian=5"], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2 and "--num_trian" in result.stderr
  assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------------------------------------
# --help: the usage, then every field with its type, default and configs.py comment.

def load_script(name):
  """A script as a module (demo/report.py and demo/derive_labels.py as demo.report, ...)."""
  return importlib.import_module(name.replace("/", "."))


SCRIPT_CONFIGS = {
    "create_tfrecord": [configs.CreateTFRecordConfig],
    "coco_to_image_list": [configs.CocoConfig],
    "read_tfrecord": [configs.ReadTFRecordConfig],
    "make_demo_data": [configs.DemoDataConfig],
    "train": [configs.ModelConfig, configs.TrainConfig],
    "evaluate": [configs.EvalConfig],
    "threshold_calibration": [configs.CalibrationConfig],
    "inference": [configs.InferenceConfig],
    "export_saved_model": [configs.InferenceConfig],
    "data_service": [configs.DataServiceConfig],
    "demo/report": ["ReportConfig"],
    "demo/derive_labels": ["DeriveLabelsConfig"]}


@pytest.mark.parametrize("script", sorted(SCRIPT_CONFIGS))
def test_help_prints_usage_and_every_field_and_exits_0(capsys, script):
  module = load_script(script)
  outputs = []
  for flag in ("--help", "-h"):
    with pytest.raises(SystemExit) as info:
      errors.run(module.main, ["--no_such_field=1", flag])  # help wins over a bad flag
    out, err = capsys.readouterr()
    assert info.value.code == 0 and err == ""
    outputs.append(out)
  out = outputs[0]
  assert outputs[1] == out
  assert out.startswith(module.__doc__.strip("\n") + "\n")
  lines = out.splitlines()
  for cls in SCRIPT_CONFIGS[script]:
    cls = getattr(module, cls) if isinstance(cls, str) else cls
    assert f"{cls.__name__}: {cls.__doc__}" in lines
    for field in dataclasses.fields(cls):
      default = getattr(cls(), field.name)
      shown = (str(default).lower() if isinstance(default, bool)
               else '""' if default == "" else str(default))
      typ = getattr(field.type, "__name__", "str|list")
      pattern = (rf"  --{field.name}={re.escape(shown)} +{re.escape(typ)} +"
                 rf"{re.escape(field.metadata['help'])}( \(.*\))?")
      assert any(re.fullmatch(pattern, line) for line in lines), (field.name, pattern)


def test_help_of_the_real_process(tmp_path):
  for flag in ("--help", "-h"):
    result = subprocess.run([sys.executable, "train.py", flag], cwd=REPO, capture_output=True,
                            text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert result.stdout.startswith("Trains the multi-label model")
    assert "  --label_count=0 " in result.stdout and "  --number_of_steps=100000 " in result.stdout
