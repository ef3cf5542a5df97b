"""arguments.parse_overrides: typed values, shared names, exit status 2 naming bad input, --help
from configs.py's field comments, and .json config files."""

import dataclasses
import importlib
import importlib.util
import json
import os
import re
import subprocess
import sys

import pytest

import configs
from multilabel import arguments, config_files, errors, settings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse(capsys, argv, *cfgs):
  """Runs parse_overrides as a script's main does, through errors.run; returns (exit status or
  None, stdout, stderr)."""
  try:
    errors.run(lambda args: arguments.parse_overrides(args, *cfgs) and None, argv)
  except SystemExit as e:
    code = e.code
  out, err = capsys.readouterr()
  return code, out, err


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

def test_every_config_field_declares_its_help_and_valid_values():
  for cls in settings.sections().values():
    for field in dataclasses.fields(cls):
      meta = field.metadata
      assert meta.get("help"), f"{cls.__name__}.{field.name} has no help"
      assert "\n" not in meta["help"] and len(meta["help"]) < 120, field.name
      if meta.get("choices"):
        assert getattr(cls(), field.name) in meta["choices"] + ("",), field.name


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


# ---------------------------------------------------------------------------------------------
# .json config arguments: loaded first, then the --field=value overrides.

def test_a_saved_config_loads_and_the_flags_override_it(capsys, tmp_path):
  path = str(tmp_path / "config.json")
  saved_model = configs.ModelConfig(label_count=7, target_height=64, use_regularizer=False,
                                    weight_decay=3.0, input_tfrecord_file="d/*.rec")
  saved_train = configs.TrainConfig(train_dir="runs/a", number_of_steps=20, optimizer="SGD")
  config_files.save_configs(path, saved_model, saved_train, label_names=list("abcdefg"))
  model, train = configs.ModelConfig(), configs.TrainConfig()
  # The flag comes first on the command line, and still wins over the file.
  code, out, _ = parse(capsys, ["--number_of_steps=40000", path], model, train)
  assert code is None
  assert model == saved_model
  assert train == dataclasses.replace(saved_train, number_of_steps=40000)
  assert f"loaded ModelConfig ({len(dataclasses.fields(model))} fields) and TrainConfig" in out
  assert "override TrainConfig.number_of_steps = 40000" in out


def test_a_hand_written_subset_sets_only_its_fields_and_skips_other_stages(capsys, tmp_path):
  path = tmp_path / "mine.json"
  path.write_text(json.dumps({"eval": {"batch_size": 4, "run_once": True},
                              "model": {"label_count": 3}, "label_names": ["a", "b", "c"],
                              "run": {"global_step": 7}}))
  cfg = configs.EvalConfig(input_tfrecord_file="eval.rec")
  code, out, _ = parse(capsys, [str(path)], cfg)
  assert code is None
  assert cfg == configs.EvalConfig(input_tfrecord_file="eval.rec", batch_size=4, run_once=True)
  assert f"loaded EvalConfig (2 fields) from {path}; skipped model (not this script's)" in out
  float_field = tmp_path / "float.json"  # a JSON integer is a float field's value too
  float_field.write_text('{"train": {"learning_rate": 1}}')
  train = configs.TrainConfig()
  assert parse(capsys, [str(float_field)], train)[0] is None
  assert train.learning_rate == 1.0 and type(train.learning_rate) is float


@pytest.mark.parametrize("content, status, named", [
    ('{"modle": {"label_count": 3}}', 2, "unknown section 'modle'"),
    ('{"model": {"label_cuont": 3}}', 2, "unknown field model.label_cuont"),
    ('{"model": {"label_count": "3"}}', 2, "model.label_count='3': expected int"),
    ('{"model": {"label_count": 3.5}}', 2, "model.label_count=3.5: expected int"),
    ('{"model": {"use_regularizer": 1}}', 2, "model.use_regularizer=1: expected bool"),
    ('{"model": {"label_count": true}}', 2, "model.label_count=True: expected int"),
    ('{"model": [1]}', 2, "section 'model' is not a JSON object"),
    ('{"model": {"label_count": 3},\n "train": }', 2, ":2: not valid JSON"),
    ("[]", 2, "expected a JSON object of sections"),
    (None, 1, "no such config file")])
def test_a_bad_config_file_is_one_line_naming_the_file_and_field(capsys, tmp_path, content,
                                                                 status, named):
  path = tmp_path / "bad.json"
  if content is not None:
    path.write_text(content)
  model = configs.ModelConfig()
  code, _, err = parse(capsys, [str(path)], model, configs.TrainConfig())
  assert code == status
  assert err.startswith(f"error: {path}") and named in err and err.count("\n") == 1, err
  assert model == configs.ModelConfig()


def test_a_saved_pos_weight_list_reads_back_and_other_strings_still_refuse_lists(capsys,
                                                                                tmp_path):
  """train.py saves TrainConfig.pos_weight as the weights it resolved ("auto" or a file -> a
  list); a config file gives that list back as the setting (its type, str | list[float]), and only
  there."""
  path = tmp_path / "config.json"
  path.write_text(json.dumps({"train": {"pos_weight": [0.5, 2, 4.25],
                                        "unknown_label": "negative"}}))
  train = configs.TrainConfig()
  assert parse(capsys, [str(path)], train)[0] is None
  assert train.pos_weight == [0.5, 2.0, 4.25] and train.unknown_label == "negative"
  assert config_files.load_config(str(path), configs.TrainConfig).pos_weight == [0.5, 2.0, 4.25]
  for content, named in (({"train": {"pos_weight": [1, "two"]}}, "train.pos_weight=[1, 'two']"),
                         ({"train": {"pos_weight": [True]}}, "train.pos_weight=[True]"),
                         ({"train": {"optimizer": [1.0]}}, "train.optimizer=[1.0]")):
    path.write_text(json.dumps(content))
    code, _, err = parse(capsys, [str(path)], configs.TrainConfig())
    assert code == 2 and f"{named}: expected str" in err, err


def test_a_config_file_cut_off_inside_a_character_is_one_line_naming_its_line(capsys, tmp_path):
  """A config.json cut short (a full disk, a copy stopped) can end inside a UTF-8 character of
  a label name: one line with the file and the JSON line, not a UnicodeDecodeError."""
  path = tmp_path / "config.json"
  config_files.save_configs(str(path), configs.ModelConfig(label_count=2),
                        label_names=["caf\u00e9 au lait", "th\u00e9"])
  text = path.read_text(encoding="utf-8").replace("\\u00e9", "\u00e9")  # as an editor saves it
  data = text.encode("utf-8")
  cut = data.index("th\u00e9".encode("utf-8")) + 3  # inside the two bytes of the last e-acute
  path.write_bytes(data[:cut])
  code, _, err = parse(capsys, [str(path)], configs.ModelConfig())
  line = data[:cut].count(b"\n") + 1
  assert code == 2 and err.count("\n") == 1, err
  assert err.startswith(f"error: {path}:{line}: not valid JSON (not UTF-8: "), err
  path.write_bytes(data[:len(data) // 2])  # cut between characters: JSON's own error
  code, _, err = parse(capsys, [str(path)], configs.ModelConfig())
  assert code == 2 and err.startswith(f"error: {path}:") and "not valid JSON" in err, err


@pytest.mark.parametrize("argv, message", [
    (["--number_of_steps=-5"], "--number_of_steps=-5: must be >= 0"),
    (["--batch_size=0"], "--batch_size=0: must be >= 1"),
    (["--label_count=-1"], "--label_count=-1: must be >= 0"),
    (["--ema_decay=1"], "--ema_decay=1.0: must be in [0, 1)"),
    (["--batch_norm_decay=1.0"], "--batch_norm_decay=1.0: must be in [0, 1)"),
    (["--num_parallel_calls=0"], "--num_parallel_calls=0: must be -1 or >= 1"),
    (["--learning_rate=0"], "--learning_rate=0.0: must be > 0"),
    (["--learning_rate=nan"], "--learning_rate=nan: must be a finite number"),
    (["--asl_clip=-0.1"], "--asl_clip=-0.1: must be in [0, 1)"),
    (["--seed=-2"], "--seed=-2: must be >= -1")])
def test_values_out_of_range_are_one_line_before_any_work(capsys, argv, message):
  code, _, err = parse(capsys, argv, configs.ModelConfig(), configs.TrainConfig())
  assert code == 2 and err == f"error: {message}\n", err


def test_values_at_the_ends_of_their_ranges_are_taken(capsys):
  model = configs.ModelConfig(label_count=2, input_tfrecord_file="train.rec")
  train = configs.TrainConfig()
  code, _, err = parse(capsys, ["--ema_decay=0", "--batch_norm_decay=0", "--number_of_steps=0",
                                "--num_parallel_calls=-1", "--seed=-1", "--momentum=0.999"],
                       model, train)
  assert code is None, err
  assert (train.ema_decay, model.batch_norm_decay, model.num_parallel_calls) == (0.0, 0.0, -1)
  inference = configs.InferenceConfig()
  assert parse(capsys, ["--threshold=1"], inference)[0] is None and inference.threshold == 1.0
  code, _, err = parse(capsys, ["--threshold=1.5"], configs.InferenceConfig())
  assert code == 2 and "--threshold=1.5: must be in [0, 1]" in err


def test_every_config_default_is_in_range():
  for cls in settings.sections().values():
    settings.check_values(cls())  # raises if a default breaks its own rule


def test_a_config_file_value_out_of_range_is_refused_too(capsys, tmp_path):
  path = tmp_path / "config.json"
  path.write_text(json.dumps({"eval": {"top_k": 0}}))
  code, _, err = parse(capsys, [str(path)], configs.EvalConfig())
  assert code == 2 and err == "error: --top_k=0: must be >= 1\n", err
