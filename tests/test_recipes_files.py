"""recipes/*.json, the README's recommended recipes as config files (issue 23): each loads
through train.py's argument parsing and sets exactly the flags the README's Recipes table lists
for it; its "recipe" section (what it is for, costs, how it was measured) is a record, not
settings, and is skipped silently; `python train.py recipes/short.json --help` works.

Oracle: the README's table, read as flags by the same parser (so the files and the README cannot
drift apart), and the configs' defaults.
"""

import dataclasses
import glob
import os
import re
import subprocess
import sys

import pytest

import configs
from multilabel import arguments, config_files

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = sorted(os.path.basename(p)[:-len(".json")]
                 for p in glob.glob(os.path.join(REPO, "recipes", "*.json")))
REQUIRED = ["--label_count=30", "--input_tfrecord_file=data/train.tfrecord-*"]


def readme_flags():
  """{recipe: [--field=value, ...]} from the README's Recipes table rows,
  "| `recipes/<name>.json` | <the flags it sets, or 'nothing'> | ... |"."""
  with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
    rows = re.findall(r"^\| `recipes/(\w+)\.json` \| ([^|]*) \|", f.read(), re.MULTILINE)
  return {name: re.findall(r"--\w+=[^\s`]+", cell) for name, cell in rows}


def parse(argv):
  model, train = configs.ModelConfig(), configs.TrainConfig()
  arguments.parse_overrides(argv, model, train)
  return model, train


def test_every_recipe_file_is_in_the_readme_table_and_the_names_are_known():
  assert {"original", "short", "long", "small_data"} <= set(RECIPES)
  assert sorted(readme_flags()) == RECIPES


@pytest.mark.parametrize("name", RECIPES)
def test_a_recipe_file_sets_exactly_the_flags_the_readme_lists(name, capsys):
  path = os.path.join("recipes", f"{name}.json")
  from_file = parse([path, *REQUIRED])
  out = capsys.readouterr().out
  assert f"from {path}" in out and "recipe" not in out.replace(path, "")  # skipped silently
  from_readme = parse([*readme_flags()[name], *REQUIRED])
  assert from_file == from_readme
  # ... and nothing else: every field the file changes is one the README names
  named = {flag[2:].split("=")[0] for flag in readme_flags()[name]}
  defaults = parse(REQUIRED)
  for got, default in zip(from_file, defaults):
    changed = {f.name for f in dataclasses.fields(got)
               if getattr(got, f.name) != getattr(default, f.name)}
    assert changed <= named, (name, changed - named)


@pytest.mark.parametrize("name", RECIPES)
def test_a_recipe_file_says_what_it_is_for_what_it_costs_and_how_it_was_measured(name):
  data = config_files.read_json(os.path.join(REPO, "recipes", f"{name}.json"))
  assert set(data) <= {"recipe", "model", "train"}
  record = data["recipe"]
  assert set(record) == {"for", "costs", "measured"}
  assert all(isinstance(text, str) and len(text) > 20 for text in record.values()), record


def test_the_original_recipe_sets_nothing_the_defaults_stay_the_originals(capsys):
  data = config_files.read_json(os.path.join(REPO, "recipes", "original.json"))
  assert set(data) == {"recipe"}
  assert parse(["recipes/original.json", *REQUIRED]) == parse(REQUIRED)
  assert "loaded no settings (the defaults stay) from recipes/original.json" in \
      capsys.readouterr().out


def test_the_small_data_recipe_is_short_with_the_originals_augmentation_prior_bias_and_l2():
  short, small = (parse([f"recipes/{n}.json", *REQUIRED]) for n in ("short", "small_data"))
  assert dataclasses.replace(small[1], head_bias=short[1].head_bias) == short[1]
  assert dataclasses.replace(small[0], augmentation="none", weight_decay=short[0].weight_decay) \
      == short[0]
  assert small[0].augmentation == "seed" and small[0].weight_decay > short[0].weight_decay
  assert small[1].head_bias == "prior"


def test_flags_after_a_recipe_override_it(capsys):
  model, train = parse(["recipes/short.json", *REQUIRED, "--head_depth=64",
                        "--number_of_steps=3000", "--warmup_steps=150"])
  assert (model.head_depth, model.augmentation, train.number_of_steps, train.warmup_steps) == \
      (64, "none", 3000, 150)


def test_the_recipe_record_is_not_a_setting_anywhere_else(tmp_path, capsys):
  """A "recipe" section loads silently in any script's configs, and save_configs may write it."""
  path = tmp_path / "mine.json"
  config_files.save_configs(str(path), configs.EvalConfig(input_tfrecord_file="e.rec"),
                            recipe={"for": "a test"})
  cfg = configs.EvalConfig(input_tfrecord_file="e.rec")
  arguments.parse_overrides([str(path)], cfg)
  assert cfg == configs.EvalConfig(input_tfrecord_file="e.rec")


def test_train_help_after_a_recipe_file():
  result = subprocess.run([sys.executable, "train.py", "recipes/short.json", "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
  assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
  assert result.stdout.startswith("Trains the multi-label model")
  assert "  --head_depth=" in result.stdout and "  --warmup_steps=" in result.stdout
