"""A script's arguments applied to its configs: --field=value overrides, .json config files
(config_files.apply_config_file) first, and -h/--help from the fields' declarations; then the
range, choice and tie checks of multilabel/settings.py, before the script does any work.
"""

import dataclasses
import difflib
import types
import typing

from multilabel import config_files, settings
from multilabel.errors import ConfigError

HELP_FLAGS = ("-h", "--help")
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def _convert(name, text, typ):
  """Converts command-line `text` to the field type `typ`, or raises ConfigError naming it."""
  if typ is bool:
    if text.lower() in _TRUE:
      return True
    if text.lower() in _FALSE:
      return False
    raise ConfigError(f"--{name}={text!r}: expected a boolean (true/false/1/0)")
  if typ in (int, float):
    try:
      return typ(text)
    except ValueError:
      raise ConfigError(f"--{name}={text!r}: expected {typ.__name__}") from None
  if typ is str or isinstance(typ, types.UnionType) and str in typing.get_args(typ):
    return text
  raise ConfigError(f"--{name}: unsupported field type {typ!r}")


def _show(value):
  """A default as it is typed on the command line."""
  if isinstance(value, bool):
    return str(value).lower()
  return '""' if value == "" else str(value)


def _help_line(meta):
  """A field's help, then its choices or range, or that it must be given: 'the classification
  loss (sigmoid | focal)', 'eval TFRecords (required)'."""
  if meta.get("choices"):
    return f"{meta['help']} ({' | '.join(meta['choices'])})"
  if meta.get("valid") is not None:
    return f"{meta['help']} ({meta['valid']})"
  return meta["help"] + (" (required)" if meta.get("required") else "")


def help_text(usage, *configs):
  """The script's usage, then each config's fields: --name=default, type, help."""
  lines = [usage.strip("\n"), "",
           "Options: --field=value (or --field value) for any field below. A .json argument (a",
           "saved config.json, or a subset of its sections and fields) loads first; the flags",
           "then override it. -h, --help: this text."]
  rows = {type(cfg): [(f"--{f.name}={_show(getattr(cfg, f.name))}", settings.type_name(f.type),
                       _help_line(f.metadata)) for f in dataclasses.fields(cfg)]
          for cfg in configs}
  width = max(len(flag) for fields in rows.values() for flag, _, _ in fields)
  for cls, fields in rows.items():
    lines += ["", f"{cls.__name__}: {cls.__doc__}"]
    lines += [f"  {flag:<{width}}  {typ:<5}  {text}" for flag, typ, text in fields]
  return "\n".join(lines)


def parse_overrides(argv, *configs, usage=""):
  """Applies a script's arguments to its config objects, in place.

  Arguments:
    -h, --help: print help_text(usage, *configs) and exit 0.
    a path ending in .json: a config file (apply_config_file), applied first, in order.
    --field=value (or --field value): sets that field, after the files. Each override is
      printed.
  Unknown fields, missing values, values of the wrong type and other arguments raise ConfigError
  naming them (exit status 2 through errors.run); so does a value out of its range, not one of
  its choices, or in contradiction with another (check), once all are applied, before the
  script does any work.

  Args:
    argv: the arguments, e.g. sys.argv[1:].
    *configs: dataclass instances, modified in place.
    usage: the script's usage text for --help (its module docstring).
  Returns:
    The configs, for chaining.
  """
  args, paths, overrides = list(argv), [], []
  while args:
    arg = args.pop(0)
    if arg in HELP_FLAGS:
      print(help_text(usage, *configs))
      raise SystemExit(0)
    if arg.endswith(".json") and not arg.startswith("-"):
      paths.append(arg)
      continue
    if not arg.startswith("--"):
      raise ConfigError(f"unexpected argument {arg!r}: use --field=value (or a .json config "
                        "file)")
    name, eq, text = arg[2:].partition("=")
    if not eq:
      if not args:
        raise ConfigError(f"--{name} needs a value: use --{name}=value")
      text = args.pop(0)
    overrides.append((name, text))
  for path in paths:
    config_files.apply_config_file(path, *configs)
  for name, text in overrides:
    targets = [c for c in configs if name in {f.name for f in dataclasses.fields(c)}]
    if not targets:
      known = sorted({f.name for c in configs for f in dataclasses.fields(c)})
      close = difflib.get_close_matches(name, known, n=1)
      hint = f"did you mean --{close[0]}? " if close else ""
      raise ConfigError(f"unknown field --{name}; {hint}(--help lists every field)")
    for cfg in targets:
      value = _convert(name, text, typing.get_type_hints(type(cfg))[name])
      setattr(cfg, name, value)
      print(f"override {type(cfg).__name__}.{name} = {value!r}")
  settings.check(*configs)
  return configs
