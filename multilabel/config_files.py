"""The config files a run writes (config.json, eval_config.json, inference_config.json): strict
JSON of {section: {field: value}}, written atomically, read back with errors that name the file,
the line and the field. A .json argument to a script is applied through apply_config_file.
"""

import dataclasses
import json
import os
import types
import typing

from multilabel import files, settings
from multilabel.errors import ConfigError, MissingFileError

# The config files a run writes, by stage; a run's label names are read from the first found.
TRAIN_CONFIG_FILE = "config.json"
EVAL_CONFIG_FILE = "eval_config.json"
INFERENCE_CONFIG_FILE = "inference_config.json"
# Sections that are not settings, never read back as such: what a run found or resolved
# ("label_names", "run"), and what a recipe file (recipes/*.json) says it is for, what it costs
# and how it was measured ("recipe": {"for": ..., "costs": ..., "measured": ...}).
RECORD_SECTIONS = ("label_names", "run", "recipe")


def read_json(path):
  """A config file's {section: {field: value}}; errors name the file (and the line)."""
  try:
    with open(path, "rb") as f:
      raw = f.read()
  except FileNotFoundError:
    raise MissingFileError(f"{path}: no such config file") from None
  except OSError as e:  # a directory, no permission
    raise ConfigError(f"{path}: cannot be read as a config file ({e.strerror})") from None
  try:
    data = json.loads(raw.decode("utf-8-sig"))
  except UnicodeDecodeError as e:  # e.g. a file cut off inside a character of a label name
    line = raw[:e.start].count(b"\n") + 1
    raise ConfigError(f"{path}:{line}: not valid JSON (not UTF-8: {e.reason} at byte "
                      f"{e.start})") from None
  except json.JSONDecodeError as e:
    raise ConfigError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
  if not isinstance(data, dict):
    raise ConfigError(f"{path}: expected a JSON object of sections, got {type(data).__name__}")
  return data


def _json_value(typ, value):
  """`value` read from JSON as a field of type `typ`, or None if it is not of that type. A
  `str | list[float]` field (a setting a run resolves to numbers) takes a list of numbers."""
  number = isinstance(value, (int, float)) and not isinstance(value, bool)
  if isinstance(typ, types.UnionType):
    for option in typing.get_args(typ):
      if typing.get_origin(option) is list:
        if isinstance(value, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                           for v in value):
          return [float(v) for v in value]
      elif (converted := _json_value(option, value)) is not None:
        return converted
    return None
  if typ is float and number or isinstance(value, typ) and not (typ is int and
                                                                isinstance(value, bool)):
    return typ(value)
  return None


def _set_fields(path, section, values, cfg):
  """Sets cfg's fields from one section's {field: value}, checking names and JSON types."""
  if not isinstance(values, dict):
    raise ConfigError(f"{path}: section {section!r} is not a JSON object")
  hints = typing.get_type_hints(type(cfg))
  for name, value in values.items():
    if name not in hints or name == "section":
      raise ConfigError(f"{path}: unknown field {section}.{name} ({type(cfg).__name__} has no "
                        f"field {name!r})")
    converted = _json_value(hints[name], value)
    if converted is None:
      raise ConfigError(f"{path}: {section}.{name}={value!r}: expected {settings.type_name(hints[name])}")
    setattr(cfg, name, converted)


def apply_config_file(path, *configs):
  """Applies a .json config file to the configs of its sections; prints what it set.

  The file is a saved config.json (or eval_config.json, inference_config.json) or one written by
  hand with a subset of its sections and fields. Sections of configs this script does not take
  are skipped with a note; RECORD_SECTIONS are skipped silently; any other section, an unknown
  field or a value of the wrong type is a ConfigError naming the file and the field.
  """
  by_section, known = {cfg.section: cfg for cfg in configs}, settings.sections()
  loaded, skipped = [], []
  for section, values in read_json(path).items():
    if section in RECORD_SECTIONS:
      continue
    if section not in known:
      raise ConfigError(f"{path}: unknown section {section!r}; config sections are "
                        f"{', '.join(known)}")
    cfg = by_section.get(section)
    if cfg is None:
      skipped.append(section)
      continue
    _set_fields(path, section, values, cfg)
    loaded.append(f"{type(cfg).__name__} ({len(values)} fields)")
  nothing = "no section of this script" if skipped else "no settings (the defaults stay)"
  print(f"loaded {' and '.join(loaded) or nothing} from {path}"
        + (f"; skipped {', '.join(skipped)} (not this script's)" if skipped else ""))


def strict_json(data, **kwargs):
  """`data` as strict JSON text (json.dumps with allow_nan=False): every JSON file the toolkit
  writes goes through here, because a bare NaN or Infinity is not JSON and strict readers (jq,
  JavaScript, Go) reject the whole file. A non-finite float is a ValueError here, a bug: the
  writers put None (null) where a value is undefined."""
  return json.dumps(data, allow_nan=False, **kwargs)


def save_configs(path, *configs, **records):
  """Writes {"model": {...}, "train": {...}, "label_names": [...], ...} as strict JSON,
  atomically (files.write_text): each config under its section, and `records` (RECORD_SECTIONS,
  e.g. what the run found, "label_names" and "run") as they are."""
  data = {cfg.section: dataclasses.asdict(cfg) for cfg in configs}
  for key, value in records.items():
    assert key in RECORD_SECTIONS, f"unknown section {key!r}"
    data[key] = value
  files.write_text(path, strict_json(data, indent=2, sort_keys=True))


def load_config(path, cls):
  """Reads one saved config section back as a `cls` instance.

  Fields the file lacks keep their defaults (older runs); fields the class lacks are an error,
  since they would silently change meaning. A missing file is a MissingFileError.
  """
  if not os.path.exists(path):
    raise MissingFileError(f"{path}: no saved config; was this directory written by train.py?")
  data = read_json(path)
  if cls.section not in data:
    raise ConfigError(f"{path}: no {cls.section!r} section (has {sorted(data)})")
  cfg = cls()
  _set_fields(path, cls.section, data[cls.section], cfg)
  return cfg


def saved_label_names(directory):
  """(names, file): the label names a run stored in `directory`'s config file (the first found
  of config.json, eval_config.json, inference_config.json), or None for names if it stored none;
  file is None if there is none."""
  for name in (TRAIN_CONFIG_FILE, EVAL_CONFIG_FILE, INFERENCE_CONFIG_FILE):
    path = os.path.join(directory, name)
    if os.path.exists(path):
      return read_json(path).get("label_names"), path
  return None, None
