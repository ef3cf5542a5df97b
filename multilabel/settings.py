"""Declaring a run's settings: the base of every config dataclass, `setting()` (a field's type,
default, one-line help and allowed range or choices, in one place) and the checks that read the
declarations. configs.py declares every stage's config with it:

    @dataclass
    class EvalConfig(Config, section="eval"):
      top_k: int = setting(3, "k of the top-k metrics", at_least(1))

A config may define `check(self, *others)`: the rules that tie its fields together (or to the
other configs of the same script), run once all values are in. multilabel/arguments.py applies
--field=value and .json arguments; multilabel/config_files.py reads and writes the config files.
Standard library only, so that configs.py loads no TensorFlow.
"""

import dataclasses
import math
import types
import typing
from dataclasses import dataclass

from multilabel.errors import ConfigError


class Config:
  """The base of every config dataclass: its `section` name in config files
  (`class EvalConfig(Config, section="eval")`), and `check`."""

  section: typing.ClassVar[str] = ""

  def __init_subclass__(cls, section="", **kwargs):
    super().__init_subclass__(**kwargs)
    cls.section = section

  def check(self, *others):
    """ConfigError naming the first setting that contradicts another; none by default."""


def sections():
  """{section name: config class} of every config class defined so far."""
  found, todo = {}, list(Config.__subclasses__())
  while todo:
    cls = todo.pop(0)
    found[cls.section] = cls
    todo += cls.__subclasses__()
  return found


# ---------------------------------------------------------------------------------------------
# Declaring a field.

@dataclass(frozen=True)
class Range:
  """The numbers a field may take: low (inclusive, or exclusive with low_open) up to high
  (inclusive, or exclusive with high_open), or any of `also`. Printed as '>= 1', '> 0',
  '[0, 1)' or '-1 or >= 1', the form every range message and --help uses."""

  low: float | None = None
  high: float | None = None
  low_open: bool = False
  high_open: bool = False
  also: tuple = ()

  def __contains__(self, value):
    if value in self.also:
      return True
    if self.low is not None and (value <= self.low if self.low_open else value < self.low):
      return False
    return self.high is None or (value < self.high if self.high_open else value <= self.high)

  def __str__(self):
    if self.high is None:
      text = f"{'>' if self.low_open else '>='} {self.low}"
    else:
      text = f"in [{self.low}, {self.high}{')' if self.high_open else ']'}"
    return " or ".join([str(v) for v in self.also] + [text])


def at_least(low, also=()):
  return Range(low=low, also=tuple(also))


def above(low):
  return Range(low=low, low_open=True)


def between(low, high, high_open=False):
  return Range(low=low, high=high, high_open=high_open)


def setting(default, help, valid=None, choices=None, required=False):
  """A config field: its default, one-line help (--help prints it), the values allowed (a Range,
  `valid`, or a tuple of `choices`), and whether a script that takes it needs it set."""
  return dataclasses.field(default=default, metadata={"help": help, "valid": valid,
                                                      "choices": choices, "required": required})


def type_name(typ):
  if isinstance(typ, types.UnionType):
    return "|".join(type_name(t) for t in typing.get_args(typ))
  return getattr(typ, "__name__", str(typ))


def _choice_text(choices):
  return " or ".join(choices) if len(choices) == 2 else ", ".join(choices)


def check_values(*configs):
  """ConfigError naming the first field whose value is out of its range or not one of its
  choices, or a float that is not finite (nan, inf)."""
  for cfg in configs:
    for field in dataclasses.fields(cfg):
      value, meta = getattr(cfg, field.name), field.metadata
      if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"--{field.name}={value!r}: must be a finite number")
      if meta.get("valid") is not None and value not in meta["valid"]:
        raise ConfigError(f"--{field.name}={value!r}: must be {meta['valid']}")
      unset = value == "" == field.default  # a required choice not given yet: its check's job
      if meta.get("choices") and value not in meta["choices"] and not unset:
        raise ConfigError(f"--{field.name}={value!r}: expected {_choice_text(meta['choices'])}")


def check(*configs):
  """check_values, each config's own check against the others, then its required fields: what
  a script's arguments must pass before any work."""
  check_values(*configs)
  for cfg in configs:
    cfg.check(*(other for other in configs if other is not cfg))
  for cfg in configs:
    for field in dataclasses.fields(cfg):
      if field.metadata.get("required") and not getattr(cfg, field.name):
        raise ConfigError(f"--{field.name} is required ({field.metadata['help']}); set "
                          f"--{field.name}=...")
