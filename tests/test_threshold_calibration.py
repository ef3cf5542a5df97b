"""threshold_calibration.py and metrics.py's threshold methods, against hand computation and
sklearn-based re-implementations of each method."""

import os
import subprocess
import sys

import numpy as np
import pytest
from sklearn import metrics as skm

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
from multilabel import calibration, metrics, textfiles


def run_cli(*args):
  return subprocess.run([sys.executable, os.path.join(REPO, "threshold_calibration.py"), *args],
                        capture_output=True, text=True, timeout=60, cwd=REPO)


def clamp(scores_col):
  """What an +inf ROC threshold becomes (calibration._finite_threshold's documented rule): 1.0
  for probabilities, the float above the highest score for scores above 1."""
  highest = np.max(scores_col)
  return 1.0 if highest <= 1.0 else np.nextafter(highest, np.inf)


# ---------------------------------------------------------------------------------------------
# Hand-made scores. Scores are listed highest first; every method predicts score >= t.

# P = 5, N = 4. ROC points (FPR, TPR) after sklearn drops collinear ones:
#   t=0.9 (0, .2), 0.7 (0, .6), 0.6 (.25, .6), 0.5 (.25, .8), 0.2 (1, .8), 0.1 (1, 1).
# Distance to (0, 1): .8, .4, .472, .320, 1.02, 1     -> roc 0.5
# TPR - FPR:          .2, .6, .35,  .55,  -.2,  0     -> youden 0.7
# F1 = 2TP/(TP+FP+P) at each score: .333 .571 .75 .667 .8 .727 .667 .615 .714 -> f1 0.5
LABELS_A = [1, 1, 1, 0, 1, 0, 0, 0, 1]
SCORES_A = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]

# P = 6, N = 2. ROC points: 0.8 (0, 1/6), 0.6 (0, .5), 0.5 (.5, .5), 0.2 (.5, 1), 0.1 (1, 1).
# Distances .833, .5, .707, .5, 1: an exact tie, the first (highest threshold) wins -> roc 0.6.
# TPR - FPR .167, .5, 0, .5, 0: again a tie -> youden 0.6.
# F1: .286 .5 .667 .6 .727 .833 .923 .857 -> f1 0.2
LABELS_B = [1, 1, 1, 0, 1, 1, 1, 0]
SCORES_B = [0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]

# P = 2, N = 6. ROC points: 0.9 (0, .5), 0.7 (1/3, .5), 0.6 (1/3, 1), 0.2 (1, 1).
# Distances .5, .601, .333, 1 -> roc 0.6.  TPR - FPR .5, .167, .667, 0 -> youden 0.6.
# F1: 2/3 at 0.9 and 4/6 at 0.6, a tie that goes to the higher threshold -> f1 0.9.
LABELS_C = [1, 0, 0, 1, 0, 0, 0, 0]
SCORES_C = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]


@pytest.mark.parametrize("labels,scores,roc,f1,youden", [
    (LABELS_A, SCORES_A, 0.5, 0.5, 0.7),
    (LABELS_B, SCORES_B, 0.6, 0.2, 0.6),
    (LABELS_C, SCORES_C, 0.6, 0.9, 0.6),
])
def test_hand_computed_thresholds(labels, scores, roc, f1, youden):
  assert calibration.roc_threshold(labels, scores) == roc
  assert calibration.f1_threshold(labels, scores) == f1
  assert calibration.youden_threshold(labels, scores) == youden


def test_infinite_roc_threshold_is_clamped_above_every_score():
  # Scores anti-correlated with the labels: (0, 0) at t=+inf is as near to (0, 1) as any point,
  # and first, so the original picks +inf ("predict nothing"); so does Youden (J = 0 there).
  labels = [0, 0, 1, 1]
  assert calibration.roc_threshold(labels, [0.9, 0.8, 0.2, 0.1]) == 1.0
  assert calibration.youden_threshold(labels, [0.9, 0.8, 0.2, 0.1]) == 1.0
  logits = np.array([3.0, 2.0, -1.0, -2.0])  # not probabilities: just above the highest score
  threshold = calibration.roc_threshold(labels, logits)
  assert threshold == np.nextafter(3.0, np.inf)
  assert not np.any(logits >= threshold)
  # All scores equal: the only finite candidate is that score for F1.
  assert calibration.roc_threshold([1, 0, 1], [0.3, 0.3, 0.3]) == 1.0
  assert calibration.f1_threshold([1, 0, 1], [0.3, 0.3, 0.3]) == 0.3


# ---------------------------------------------------------------------------------------------
# sklearn-based references.

def reference_roc(y, s):
  """The original TF1 script's computation."""
  fpr, tpr, thresholds = skm.roc_curve(y, s)
  t = thresholds[np.argmin(np.sqrt(fpr ** 2 + (1 - tpr) ** 2))]
  return clamp(s) if np.isinf(t) else t


def reference_youden(y, s):
  fpr, tpr, thresholds = skm.roc_curve(y, s)
  t = thresholds[np.argmax(tpr - fpr)]
  return clamp(s) if np.isinf(t) else t


def reference_f1(y, s):
  """Brute force: sklearn's F1 at every distinct score, highest threshold first on ties."""
  candidates = np.unique(s)[::-1]
  f1 = [skm.f1_score(y, (s >= t).astype(int), zero_division=0) for t in candidates]
  return candidates[int(np.argmax(f1))]


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("method,reference", [
    ("roc", reference_roc), ("f1", reference_f1), ("youden", reference_youden)])
def test_thresholds_equal_sklearn_reference(seed, method, reference):
  rng = np.random.default_rng(seed)
  labels = (rng.random((50, 5)) < rng.uniform(0.1, 0.7, 5)).astype(int)
  labels[0], labels[1] = 0, 1  # every label has both classes
  scores = np.clip(0.3 * labels + 0.7 * rng.random(labels.shape), 0, 1)
  if seed % 2:
    scores = np.round(scores, 1)  # ties
  if seed == 5:
    scores[:, 0] = 1 - scores[:, 0]  # a label whose scores mislead
  thresholds, warns = calibration.calibrate_thresholds(labels, scores, method)
  assert warns == []
  expected = [reference(labels[:, j], scores[:, j]) for j in range(labels.shape[1])]
  np.testing.assert_array_equal(thresholds, expected)


@pytest.mark.parametrize("method,reference", [
    ("roc", reference_roc), ("f1", reference_f1), ("youden", reference_youden)])
def test_each_label_is_calibrated_on_its_known_entries_only(method, reference):
  rng = np.random.default_rng(7)
  labels = (rng.random((60, 4)) < 0.4).astype(int)
  labels[0], labels[1] = 0, 1
  scores = np.clip(0.3 * labels + 0.7 * rng.random(labels.shape), 0, 1)
  hidden = labels.copy()
  hidden[2:][rng.random((58, 4)) < 0.3] = -1
  hidden[2:, 3] = -1  # label 3: known only in rows 0 and 1
  scores[hidden == -1] = 0.99  # if an unknown entry were used, it would move the threshold
  thresholds, warns = calibration.calibrate_thresholds(hidden, scores, method)
  assert warns == []
  expected = [reference(hidden[hidden[:, j] >= 0, j], scores[hidden[:, j] >= 0, j])
              for j in range(4)]
  np.testing.assert_array_equal(thresholds, expected)
  hidden[:, 3] = np.r_[0, [-1] * 59]  # one known entry, a negative: 0.5 and a warning
  _, warns = calibration.calibrate_thresholds(hidden, scores, method)
  assert len(warns) == 1 and "label 3 has no positives" in warns[0]
  assert "60 images, 1 of them with this label known" in warns[0]


def test_degenerate_labels_get_half_and_a_warning():
  labels = np.array([[0, 1, 1], [0, 1, 0], [0, 1, 1]])
  scores = np.array([[0.2, 0.9, 0.8], [0.1, 0.7, 0.3], [0.3, 0.6, 0.7]])
  for method in ("roc", "f1", "youden"):
    thresholds, warns = calibration.calibrate_thresholds(labels, scores, method,
                                                     label_names=["cat", "dog", "bird"])
    assert thresholds[0] == 0.5 and thresholds[1] == 0.5 and thresholds[2] != 0.5
    assert len(warns) == 2
    assert "label 0 (cat)" in warns[0] and "no positives" in warns[0]
    assert "label 1 (dog)" in warns[1] and "no negatives" in warns[1]


def test_unknown_method_is_an_error():
  with pytest.raises(ValueError, match="'median'"):
    calibration.calibrate_thresholds(np.array([[0], [1]]), np.array([[0.1], [0.9]]), "median")


def test_applying_thresholds_gives_the_right_rows():
  scores = np.array([[0.50, 0.20, 0.90],
                     [0.49, 0.21, 0.10],
                     [0.70, 0.05, 0.95]])
  thresholds = np.array([0.5, 0.21, 0.95])  # score == threshold counts as positive
  np.testing.assert_array_equal(metrics.threshold_predictions(scores, thresholds),
                                [[1, 0, 0], [0, 1, 0], [1, 0, 1]])


# ---------------------------------------------------------------------------------------------
# The script.

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
