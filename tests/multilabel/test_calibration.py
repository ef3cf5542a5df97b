"""multilabel/calibration.py's threshold methods against hand computation and sklearn-based
re-implementations of each method (helpers.reference_*). (From
tests/test_threshold_calibration.py; its script tests stay there.)"""

import numpy as np
import pytest

from multilabel import calibration
from tests.helpers import reference_f1, reference_roc, reference_youden


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
# Against sklearn-based references.

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
