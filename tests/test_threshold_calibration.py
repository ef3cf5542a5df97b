"""threshold_calibration.py end to end, in real processes: the thresholds and predictions files,
unknown labels, NaN rows of --apply_to, and its errors. (The threshold methods are tested in
tests/multilabel/test_calibration.py.)"""

import os
import subprocess
import sys

import numpy as np
import pytest

from multilabel import calibration, metrics, textfiles
from tests.helpers import REPO, reference_roc


def run_cli(*args):
  return subprocess.run([sys.executable, os.path.join(REPO, "threshold_calibration.py"), *args],
                        capture_output=True, text=True, timeout=60, cwd=REPO)


def test_shape_mismatch_is_an_error(tmp_path):
  textfiles.save_labels(tmp_path / "labels.txt", np.ones((4, 3), int))
  textfiles.save_scores(tmp_path / "scores.txt", np.full((5, 3), 0.5))
  result = run_cli(f"--label_file={tmp_path / 'labels.txt'}",
                   f"--score_file={tmp_path / 'scores.txt'}")
  assert result.returncode != 0
  assert "(4, 3)" in result.stderr and "(5, 3)" in result.stderr, result.stderr
  assert "labels.txt" in result.stderr and "scores.txt" in result.stderr
  assert "Traceback" not in result.stderr


def test_cli_end_to_end(tmp_path):
  rng = np.random.default_rng(0)
  labels = (rng.random((40, 4)) < 0.4).astype(int)
  labels[0], labels[1] = 0, 1
  labels[:, 3] = 0  # degenerate: threshold 0.5 with a warning
  scores = np.round(np.clip(0.3 * labels + 0.7 * rng.random(labels.shape), 0, 1), 6)
  test_labels = (rng.random((9, 4)) < 0.4).astype(int)
  test_scores = np.round(rng.random((9, 4)), 6)
  files = {name: str(tmp_path / f"{name}.txt") for name in
           ("labels", "scores", "test_labels", "test_scores", "thresholds", "predictions")}
  textfiles.save_labels(files["labels"], labels)
  textfiles.save_scores(files["scores"], scores)
  textfiles.save_labels(files["test_labels"], test_labels)
  textfiles.save_scores(files["test_scores"], test_scores)

  # The original's spelling (--flag value) for the first two.
  result = run_cli("--label_file", files["labels"], "--score_file", files["scores"], "--method=f1",
                   f"--output_file={files['thresholds']}", f"--apply_to={files['test_scores']}",
                   f"--predictions_file={files['predictions']}",
                   f"--apply_labels={files['test_labels']}")
  assert result.returncode == 0, result.stderr
  assert "label 3" in result.stderr and "no positives" in result.stderr
  assert "calibration set" in result.stdout and "test set" in result.stdout

  expected, _ = calibration.calibrate_thresholds(labels, scores, "f1")
  with open(files["thresholds"]) as f:
    assert f.readline().strip() == "# method=f1"
  np.testing.assert_array_equal(textfiles.load_thresholds(files["thresholds"]), expected)
  assert expected[3] == 0.5

  with open(files["predictions"]) as f:
    rows = f.read().splitlines()
  hand = [" ".join("1" if test_scores[i, j] >= expected[j] else "0" for j in range(4))
          for i in range(9)]
  assert rows == hand

  # Calibrated CF1 on the calibration set is printed, and equals metrics' value.
  calibrated = metrics.multilabel_prf(labels, metrics.threshold_predictions(scores, expected))
  calibrated_line = next(line for line in result.stdout.splitlines()
                         if line.startswith("calibrated"))
  assert f"{calibrated['CF1']:.4f}" in calibrated_line


def test_cli_rejects_unknown_method_and_missing_files(tmp_path):
  result = run_cli("--label_file=a.txt", "--score_file=b.txt", "--method=median")
  assert result.returncode != 0 and "'median'" in result.stderr
  result = run_cli(f"--label_file={tmp_path / 'missing.txt'}", "--score_file=b.txt")
  assert result.returncode != 0 and "missing.txt" in result.stderr


def test_cli_reads_unknown_labels_and_calibrates_on_the_known_entries(tmp_path):
  rng = np.random.default_rng(3)
  labels = (rng.random((30, 3)) < 0.5).astype(int)
  labels[0], labels[1] = 0, 1
  labels[2:][rng.random((28, 3)) < 0.3] = -1
  scores = np.round(rng.random((30, 3)), 6)
  textfiles.save_labels(tmp_path / "labels.txt", labels)
  textfiles.save_scores(tmp_path / "scores.txt", scores)
  result = run_cli(f"--label_file={tmp_path / 'labels.txt'}",
                   f"--score_file={tmp_path / 'scores.txt'}",
                   f"--output_file={tmp_path / 'thresholds.txt'}")
  assert result.returncode == 0, result.stderr
  expected = [reference_roc(labels[labels[:, j] >= 0, j], scores[labels[:, j] >= 0, j])
              for j in range(3)]
  np.testing.assert_array_equal(textfiles.load_thresholds(tmp_path / "thresholds.txt"), expected)
  rows = [line.split() for line in result.stdout.splitlines() if line.startswith("label_")]
  assert [int(row[1]) for row in rows] == (labels == 1).sum(axis=0).tolist()  # the 1s only


def calibration_files(tmp_path, test_rows=9):
  """Calibration labels and scores (40 x 4), test labels and scores; returns the paths."""
  rng = np.random.default_rng(0)
  labels = (rng.random((40, 4)) < 0.4).astype(int)
  labels[0], labels[1] = 0, 1
  scores = np.round(np.clip(0.3 * labels + 0.7 * rng.random(labels.shape), 0, 1), 6)
  test_labels = (rng.random((test_rows, 4)) < 0.5).astype(int)
  test_labels[0], test_labels[1] = 0, 1
  test_scores = np.round(rng.random((test_rows, 4)), 6)
  arrays = {"labels": labels, "scores": scores, "test_labels": test_labels,
            "test_scores": test_scores}
  files = {name: str(tmp_path / f"{name}.txt") for name in [*arrays, "thresholds", "predictions"]}
  for name, array in arrays.items():
    save = textfiles.save_labels if name.endswith("labels") else textfiles.save_scores
    save(files[name], array)
  return files, labels, scores, test_labels, test_scores


def test_nan_rows_of_apply_to_are_marked_unreadable_counted_and_left_out(tmp_path):
  """inference.py writes a NaN row for an image it could not read: its prediction row is -1
  (unknown) rather than a silent all-0 'no label', the count is said, and the test metrics are
  those of the readable rows (metrics.py on them, computed here)."""
  files, labels, scores, test_labels, test_scores = calibration_files(tmp_path)
  test_scores[[3, 6]] = np.nan
  textfiles.save_scores(files["test_scores"], test_scores)
  assert open(files["test_scores"]).read().splitlines()[3] == "nan nan nan nan"
  result = run_cli(f"--label_file={files['labels']}", f"--score_file={files['scores']}",
                   f"--apply_to={files['test_scores']}",
                   f"--predictions_file={files['predictions']}",
                   f"--apply_labels={files['test_labels']}")
  assert result.returncode == 0, result.stderr
  assert (f"2 of 9 rows of {files['test_scores']} are NaN (images inference.py could not "
          "read): their predictions are -1 (unknown)") in result.stdout
  thresholds, _ = calibration.calibrate_thresholds(labels, scores, "roc")
  rows = open(files["predictions"]).read().splitlines()
  for i, row in enumerate(rows):
    want = ([-1] * 4 if i in (3, 6) else
            [int(test_scores[i, j] >= thresholds[j]) for j in range(4)])
    assert row == " ".join(map(str, want)), (i, row)
  readable = np.array([i not in (3, 6) for i in range(9)])
  table = metrics.format_metrics_table(
      metrics.evaluate_scores(test_labels[readable], test_scores[readable]))
  assert table in result.stdout
  assert "test set (7 images)" in result.stdout


@pytest.mark.parametrize("bad", ["missing", "shape"])
def test_apply_labels_errors_are_found_before_anything_is_written(tmp_path, bad):
  files, *_ = calibration_files(tmp_path)
  if bad == "missing":
    os.remove(files["test_labels"])
  else:
    textfiles.save_labels(files["test_labels"], np.zeros((5, 4), int))  # 5 rows, 9 scores
  result = run_cli(f"--label_file={files['labels']}", f"--score_file={files['scores']}",
                   f"--output_file={files['thresholds']}", f"--apply_to={files['test_scores']}",
                   f"--predictions_file={files['predictions']}",
                   f"--apply_labels={files['test_labels']}")
  assert result.returncode == 1 and "Traceback" not in result.stderr
  assert result.stderr.count("error:") == 1 and "test_labels.txt" in result.stderr
  assert not os.path.exists(files["predictions"]) and not os.path.exists(files["thresholds"])
