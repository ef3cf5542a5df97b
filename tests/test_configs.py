"""configs.parse_overrides: typed values, shared names, and exit status 2 naming bad input."""

import dataclasses
import os
import subprocess
import sys

import pytest

import configs
import errors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse(capsys, argv, *cfgs):
  """Runs parse_overrides as a script's main does, through errors.run; returns (exit status or
  None, stdout, stderr)."""
  try:
    errors.run(lambda args: configs.parse_overrides(args, *cfgs) and None, argv)
  except SystemExit as e:
    code = e.code
  out, err = capsys.readouterr()
  return code, out, err


def test_good_values_of_each_type(capsys):
  model, create = configs.ModelConfig(), configs.CreateTFRecordConfig()
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
  default = configs.ModelConfig()
  assert all(getattr(model, f) == getattr(default, f) for f in untouched)


@pytest.mark.parametrize("text, value", [("true", True), ("True", True), ("1", True),
                                         ("false", False), ("FALSE", False), ("0", False)])
def test_booleans(capsys, text, value):
  model = configs.ModelConfig(train_base_network=not value)
  assert parse(capsys, [f"--train_base_network={text}"], model)[0] is None
  assert model.train_base_network is value


def test_a_shared_name_sets_every_config_that_has_it(capsys):
  read, model = configs.ReadTFRecordConfig(), configs.ModelConfig()
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
