"""multilabel/settings.py: a field's declared range (membership and the text every message prints),
check_values and check against hand-worked cases, and the section registry. The configs are
plain dataclasses declared here with settings.setting (not Config subclasses, which would join
the registry that other tests walk)."""

import dataclasses
import math

import pytest

import configs
from multilabel import errors, settings


@pytest.mark.parametrize("valid, inside, outside, text", [
    (settings.at_least(1), [1, 2, 10**9], [0, -1, 0.5], ">= 1"),
    (settings.at_least(1, also=(-1,)), [-1, 1, 7], [0, -2], "-1 or >= 1"),
    (settings.above(0), [1e-9, 0.5, 3], [0, -0.1], "> 0"),
    (settings.between(0, 1), [0, 0.5, 1], [-0.01, 1.01], "in [0, 1]"),
    (settings.between(0, 1, high_open=True), [0, 0.999], [1, 1.5, -1e-9], "in [0, 1)"),
])
def test_a_range_holds_its_values_and_prints_as_the_messages_do(valid, inside, outside, text):
  assert all(v in valid for v in inside), [v for v in inside if v not in valid]
  assert not any(v in valid for v in outside), [v for v in outside if v in valid]
  assert str(valid) == text


@dataclasses.dataclass
class Example:
  """A config as configs.py declares one: a range, choices, a required field and a tie."""
  steps: int = settings.setting(10, "steps", settings.at_least(0))
  rate: float = settings.setting(0.5, "a rate", settings.between(0, 1, high_open=True))
  kind: str = settings.setting("a", "a kind", choices=("a", "b"))
  mode: str = settings.setting("", "a mode set later", choices=("x", "y", "z"))
  source: str = settings.setting("", "where from", required=True)
  names: str | list[float] = settings.setting("", "a name or weights")

  def check(self, *others):
    if self.kind == "b" and self.steps == 0:
      raise errors.ConfigError("--kind=b needs --steps > 0")


def test_check_values_names_the_first_bad_field_with_its_rule():
  settings.check_values(Example())  # every default is allowed, the unset "" choice too
  settings.check_values(Example(steps=0, rate=0.0, kind="b", mode="z"))  # the ends of the ranges
  for changes, message in [
      ({"steps": -1}, "--steps=-1: must be >= 0"),
      ({"rate": 1.0}, "--rate=1.0: must be in [0, 1)"),
      ({"rate": math.nan}, "--rate=nan: must be a finite number"),
      ({"rate": math.inf, "steps": -1}, "--steps=-1: must be >= 0"),  # fields in their order
      ({"kind": "c"}, "--kind='c': expected a or b"),
      ({"mode": "w"}, "--mode='w': expected x, y, z"),
      ({"kind": ""}, "--kind='': expected a or b"),  # "" passes only where it is the default
  ]:
    with pytest.raises(errors.ConfigError) as info:
      settings.check_values(Example(**changes))
    assert str(info.value) == message and info.value.status == 2


def test_check_runs_the_values_then_the_ties_then_the_required_fields():
  settings.check(Example(source="s"))
  with pytest.raises(errors.ConfigError, match=r"^--steps=-1: must be >= 0$"):
    settings.check(Example(steps=-1, kind="b"))  # the value first
  with pytest.raises(errors.ConfigError, match=r"^--kind=b needs --steps > 0$"):
    settings.check(Example(steps=0, kind="b"))  # then the config's own check
  with pytest.raises(errors.ConfigError) as info:
    settings.check(Example())  # then the required field, with its help
  assert str(info.value) == "--source is required (where from); set --source=..."


def test_a_check_sees_the_other_configs_of_the_script():
  """TrainConfig.check refuses AdamW with L2 only when it is given the ModelConfig."""
  train = configs.TrainConfig(optimizer="AdamW")
  model = configs.ModelConfig(label_count=2, input_tfrecord_file="train.rec")
  settings.check(train)
  with pytest.raises(errors.ConfigError, match="--optimizer=AdamW decays the weights itself"):
    settings.check(train, model)
  settings.check(train, dataclasses.replace(model, use_regularizer=False))


def test_type_names_as_help_prints_them():
  fields = {f.name: f.type for f in dataclasses.fields(Example)}
  assert [settings.type_name(fields[n]) for n in ("steps", "rate", "kind", "names")] == [
      "int", "float", "str", "str|list"]


def test_sections_are_every_config_class_by_its_section_name():
  """configs.py's ten configs by the section names it declares (other modules, demo/report.py
  for one, may add their own)."""
  ours = {name: cls for name, cls in settings.sections().items() if cls.__module__ == "configs"}
  assert ours == {
      "create_tfrecord": configs.CreateTFRecordConfig, "coco": configs.CocoConfig,
      "read_tfrecord": configs.ReadTFRecordConfig, "demo_data": configs.DemoDataConfig,
      "model": configs.ModelConfig, "train": configs.TrainConfig, "eval": configs.EvalConfig,
      "inference": configs.InferenceConfig, "calibration": configs.CalibrationConfig,
      "data_service": configs.DataServiceConfig}
  assert configs.EvalConfig.section == "eval" and settings.Config.section == ""
