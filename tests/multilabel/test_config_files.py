""".json config files (multilabel/config_files.py), as a script's arguments: loaded first, then
the --field=value overrides; a bad file is one line naming the file and the field. (From
tests/test_configs.py's .json tests.)"""

import dataclasses
import json

import pytest

import configs
from multilabel import config_files
from tests.helpers import parse


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


def test_a_config_file_value_out_of_range_is_refused_too(capsys, tmp_path):
  path = tmp_path / "config.json"
  path.write_text(json.dumps({"eval": {"top_k": 0}}))
  code, _, err = parse(capsys, [str(path)], configs.EvalConfig())
  assert code == 2 and err == "error: --top_k=0: must be >= 1\n", err
