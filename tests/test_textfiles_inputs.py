"""The text and JSON files the toolkit reads and writes, at their edges (issue 20): thresholds
out of [0, 1], strict JSON, label names a CSV list or TensorBoard cannot carry, and score files
that must give back exactly the metrics evaluate.py reported."""

import numpy as np
import pytest

from multilabel import calibration, errors, textfiles
import threshold_calibration
from run_helpers import run_script_main


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

