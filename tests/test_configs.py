"""configs.py, the declarations: every field declares its help and valid values, every default is
in its range, and the declared ranges refuse a value out of them in one line before any work and
take the values at their ends. (The parse machinery is tested in tests/multilabel/test_arguments.py,
the .json files in tests/multilabel/test_config_files.py.)"""

import dataclasses

import pytest

import configs
from multilabel import settings
from tests.helpers import parse


def test_every_config_field_declares_its_help_and_valid_values():
  for cls in settings.sections().values():
    for field in dataclasses.fields(cls):
      meta = field.metadata
      assert meta.get("help"), f"{cls.__name__}.{field.name} has no help"
      assert "\n" not in meta["help"] and len(meta["help"]) < 120, field.name
      if meta.get("choices"):
        assert getattr(cls(), field.name) in meta["choices"] + ("",), field.name


def test_every_config_default_is_in_range():
  for cls in settings.sections().values():
    settings.check_values(cls())  # raises if a default breaks its own rule


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
