"""The text and JSON files the toolkit reads and writes, at their edges (issue 20): thresholds
out of [0, 1], strict JSON, label names a CSV list or TensorBoard cannot carry, and score files
that must give back exactly the metrics evaluate.py reported."""

import json

import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import average_precision_score, roc_curve

import configs
import evaluate
from tests import inference_fixture as fx
from multi_label_classification_model import MultiLabelClassificationModel
from multilabel import calibration, checkpoints, config_files, errors, metrics, textfiles
from multilabel.data.preprocessing import build_dataset
from multilabel.training import optimizers
import threshold_calibration
from tests.helpers import run_captured, run_script_main, write_records


def strict_json_loads(text):
  """json.loads that refuses NaN and Infinity, as strict JSON readers (jq, JavaScript) do."""
  def refuse(constant):
    raise ValueError(f"not strict JSON: {constant}")
  return json.loads(text, parse_constant=refuse)


# ---------------------------------------------------------------------------------------------
# Thresholds: finite and in [0, 1], or one line naming the file:line.

@pytest.mark.parametrize("bad", ["nan", "inf", "-inf", "-0.5", "1.5"])
def test_a_threshold_out_of_0_1_is_refused_naming_the_file_and_line(tmp_path, bad):
  path = tmp_path / "thresholds.txt"
  path.write_text(f"# method=roc\n0.25\n\n{bad}\n0.5\n")
  with pytest.raises(errors.DataError) as caught:
    textfiles.load_thresholds(str(path))
  assert str(caught.value) == (f"{path}:4: threshold {float(bad)!r} is not a number in [0, 1] "
                               "(a label is predicted when its score >= its threshold)")


def test_thresholds_0_and_1_are_accepted(tmp_path):
  path = tmp_path / "thresholds.txt"
  path.write_text("0\n1\n0.0\n1.0\n")
  np.testing.assert_array_equal(textfiles.load_thresholds(str(path)), [0, 1, 0, 1])


def test_predict_nothing_on_saturated_scores_is_threshold_1_not_above(tmp_path):
  """Scores anti-correlated with the labels make the ROC method pick +inf ("predict nothing").
  With a saturated score of exactly 1.0 (a float32 sigmoid of a logit above ~17) it was written
  as the float after 1.0, which inference.py would now refuse; it is 1.0."""
  labels = [0, 0, 1, 1]
  assert calibration.roc_threshold(labels, [1.0, 0.8, 0.2, 0.1]) == 1.0
  assert calibration.youden_threshold(labels, [1.0, 0.8, 0.2, 0.1]) == 1.0


def test_calibration_writes_thresholds_that_inference_reads_back(tmp_path, capsys):
  """threshold_calibration.py's output is always in [0, 1]: on saturated scores too. Scores
  that rank every negative above every positive: the ROC method picks "predict nothing"."""
  rng = np.random.default_rng(0)
  labels = rng.integers(0, 2, (40, 3))
  labels[0], labels[1] = 0, 1
  scores = np.where(labels == 1, 0.0, 0.6) + 0.4 * rng.random((40, 3))
  scores[0] = 1.0  # a negative of every label, saturated
  label_file, score_file = tmp_path / "labels.txt", tmp_path / "scores.txt"
  textfiles.save_labels(str(label_file), labels)
  textfiles.save_scores(str(score_file), scores)
  output = tmp_path / "thresholds.txt"
  status, out, err = run_script_main(capsys, threshold_calibration.main, [
      f"--label_file={label_file}", f"--score_file={score_file}", f"--output_file={output}"])
  assert status == 0, err
  thresholds = textfiles.load_thresholds(str(output))
  np.testing.assert_array_equal(thresholds, [1.0, 1.0, 1.0])


def test_calibration_scores_outside_0_1_are_refused_in_one_line(tmp_path, capsys):
  """Logits are not what evaluate.py writes, and thresholds among them would not be in [0, 1]."""
  label_file, score_file = tmp_path / "labels.txt", tmp_path / "scores.txt"
  label_file.write_text("1 0\n0 1\n")
  score_file.write_text("0.5 0.25\n3.0 0.5\n")
  status, _, err = run_script_main(capsys, threshold_calibration.main, [
      f"--label_file={label_file}", f"--score_file={score_file}",
      f"--output_file={tmp_path / 'thresholds.txt'}"])
  assert status == 1
  assert err == (f"error: {score_file}: score 3.0 in data row 2, column 1 is not in [0, 1]; the "
                 "thresholds are for sigmoid scores, as evaluate.py writes them\n")
  assert not (tmp_path / "thresholds.txt").exists()


# ---------------------------------------------------------------------------------------------
# What evaluate.py writes: strict JSON, and score files that give back its metrics exactly.

@pytest.fixture(scope="module")
def saturated_run(tmp_path_factory):
  """A train dir whose model is sure of itself (no training): ResNet-50 at 64x96 with 3 labels,
  its head's last convolution set so that the logits are ~N(0, 30^2) on the 40 eval images: many
  scores below 1e-6 (which '%.6f' wrote as 0.000000, ties) and many of exactly 1.0. Every label
  has positives and negatives."""
  root = tmp_path_factory.mktemp("saturated")
  model_config = configs.ModelConfig(label_count=fx.LABELS, target_height=fx.TARGET[0],
                                     target_width=fx.TARGET[1])
  labels = np.random.default_rng(3).integers(0, 2, (40, fx.LABELS))
  labels[0], labels[1] = 0, 1
  eval_data = write_records(root / "eval.tfrecord", labels, seed=4)
  tf.random.set_seed(0)
  model = MultiLabelClassificationModel(model_config)
  images = np.concatenate([batch for batch, _, _ in
                           build_dataset(model_config, "eval", file_spec=eval_data)])
  logits = model(images)[0].numpy()
  mean, std = logits.mean(axis=0), logits.std(axis=0)
  last = model.head[-1]  # logits = features * w + b, per output channel: 30 (logits - mean) / std
  last.weights.assign(last.weights * (30.0 / std))
  last.biases.assign((last.biases - mean) * (30.0 / std))
  train_config = configs.TrainConfig()
  train_dir = root / "train"
  optimizer = optimizers.make_optimizer(train_config, model.trainable_variables)
  optimizer.iterations.assign(10)
  tf.train.CheckpointManager(checkpoints.make_checkpoint(model, optimizer), str(train_dir),
                             max_to_keep=1).save(checkpoint_number=10)
  config_files.save_configs(str(train_dir / config_files.TRAIN_CONFIG_FILE), model_config,
                            train_config)
  return dict(root=root, train_dir=str(train_dir), eval_data=eval_data, labels=labels)


def run_evaluate(run, eval_dir, *flags):
  """evaluate.py --run_once on the run's checkpoint: its metrics.jsonl record (read strictly)."""
  status, log = run_captured(evaluate.main, [
      f"--checkpoint_dir={run['train_dir']}", "--run_once=true", f"--eval_dir={eval_dir}",
      "--batch_size=8", *flags])
  assert status == 0, log
  (line,) = (eval_dir / evaluate.METRICS_FILE).read_text().splitlines()
  return strict_json_loads(line)


@pytest.mark.slow
def test_the_score_file_gives_back_the_reported_metrics_exactly(saturated_run, tmp_path,
                                                               monkeypatch):
  """sklearn on evaluate.py's own score and label files: the mAP, each label's AP and the ROC
  curves' thresholds it reported, exactly (not approximately: '%.6f' made the scores below 5e-7
  ties, and the AP moved). The oracle for the ROC thresholds is the very scores evaluate.py
  ranked, taken on their way into metrics.evaluate_scores."""
  ranked = []
  evaluate_scores = metrics.evaluate_scores
  def spy(labels, scores, **kwargs):
    ranked.append(np.array(scores))
    return evaluate_scores(labels, scores, **kwargs)
  monkeypatch.setattr(metrics, "evaluate_scores", spy)
  score_file, label_file = tmp_path / "scores.txt", tmp_path / "labels.txt"
  reported = run_evaluate(saturated_run, tmp_path / "eval",
                          f"--input_tfrecord_file={saturated_run['eval_data']}",
                          f"--score_file={score_file}", f"--label_file={label_file}")
  scores, labels = np.loadtxt(score_file), np.loadtxt(label_file, dtype=int)
  np.testing.assert_array_equal(labels, saturated_run["labels"])
  tiny = (scores > 0) & (scores < 1e-6)
  assert len(np.unique(scores[tiny])) > 10 and (scores == 1.0).any()  # the case at issue
  per_label_ap = [average_precision_score(labels[:, j], scores[:, j]) for j in range(fx.LABELS)]
  assert reported["per_label_ap"] == per_label_ap
  assert reported["mAP"] == np.mean(per_label_ap)
  (in_memory,) = ranked
  np.testing.assert_array_equal(scores, in_memory.astype(np.float64))
  for j in range(fx.LABELS):
    np.testing.assert_array_equal(roc_curve(labels[:, j], scores[:, j])[2],
                                  roc_curve(labels[:, j], in_memory[:, j])[2])


@pytest.mark.slow
def test_metrics_files_are_strict_json_when_nothing_is_known(saturated_run, tmp_path):
  """Every label of every eval image unknown (-1): no loss can be computed. metrics.jsonl said
  "loss": NaN, which strict JSON readers reject; it says null, and the log says n/a."""
  unknown = write_records(tmp_path / "unknown.tfrecord", -np.ones((4, fx.LABELS), int), seed=5)
  result = run_evaluate(saturated_run, tmp_path / "eval", f"--input_tfrecord_file={unknown}")
  assert result["loss"] is None and result["mAP"] is None


# ---------------------------------------------------------------------------------------------
# Label names: used exactly as written, each its own, and none holding predictions.csv's ';'.

def names_file(tmp_path, text):
  path = tmp_path / "names.txt"
  path.write_bytes(text.encode("utf-8"))
  return str(path)


def test_a_repeated_label_name_is_refused_naming_both_lines(tmp_path):
  path = names_file(tmp_path, "cat\ndog\nbird\ndog\n")
  with pytest.raises(errors.DataError) as caught:
    textfiles.load_label_names(path, 4)
  assert str(caught.value) == (f"{path}:4: label name 'dog' repeats {path}:2; each label needs "
                               "its own name (its TensorBoard tags and predictions.csv column go "
                               "by it)")


def test_a_label_name_holding_the_list_separator_is_refused(tmp_path):
  path = names_file(tmp_path, "cat\ncat;dog\n")
  with pytest.raises(errors.DataError) as caught:
    textfiles.load_label_names(path, 2)
  assert str(caught.value) == (f"{path}:2: label name 'cat;dog' holds ';', which separates the "
                               "names in predictions.csv's predicted_labels")


@pytest.mark.parametrize("name", [" dog", "dog ", "\tdog", "dog\u00a0"])
def test_spaces_around_a_label_name_are_refused_not_stripped(tmp_path, name):
  path = names_file(tmp_path, f"cat\n{name}\n")
  with pytest.raises(errors.DataError) as caught:
    textfiles.load_label_names(path, 2)
  assert str(caught.value) == (f"{path}:2: label name {name!r} has spaces around it; remove "
                               "them (names are used exactly as written)")


def test_label_names_are_kept_exactly_crlf_bom_and_inner_spaces_included(tmp_path):
  path = names_file(tmp_path, "\ufefftraffic light\r\nhot dog, with mustard\r\n\"quoted\"\r\n\r\n")
  assert textfiles.load_label_names(path, 3) == [
      "traffic light", "hot dog, with mustard", '"quoted"']


def test_repeated_names_saved_in_a_run_are_refused_too(tmp_path):
  """A config.json written before names were checked (or by hand): the same rule, naming it."""
  config = tmp_path / config_files.TRAIN_CONFIG_FILE
  config.write_text(json.dumps({"label_names": ["cat", "dog", "cat"]}))
  with pytest.raises(errors.DataError) as caught:
    textfiles.load_label_names("", 3, run_dir=str(tmp_path))
  assert str(caught.value) == (f"{config}: label_names[2]: label name 'cat' repeats {config}: "
                               "label_names[0]; each label needs its own name (its TensorBoard "
                               "tags and predictions.csv column go by it)")


def test_evaluate_refuses_repeated_names_before_it_writes_anything(saturated_run, tmp_path,
                                                                  capsys):
  """Both columns would have shared the TensorBoard tags per_label_ap/dup and pr_curve/dup."""
  path = names_file(tmp_path, "dup\nother\ndup\n")
  status, _, err = run_script_main(capsys, evaluate.main, [
      f"--checkpoint_dir={saturated_run['train_dir']}", "--run_once=true",
      f"--eval_dir={tmp_path / 'eval'}", f"--input_tfrecord_file={saturated_run['eval_data']}",
      f"--label_names_file={path}"])
  assert status == 1 and err.count("\n") == 1
  assert err.startswith(f"error: {path}:3: label name 'dup' repeats {path}:1;")
  assert not (tmp_path / "eval").exists()
