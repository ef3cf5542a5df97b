"""Per-label decision thresholds from eval-set scores (threshold_calibration.py): the original's
ROC method, Youden's J and the best F1. Every method predicts score >= threshold. Numpy only.
"""

import numpy as np

from multilabel.metrics import check_pair, ranked_counts, roc_curve


def _finite_threshold(threshold, scores_col):
  """Replaces roc_curve's +inf threshold ("predict nothing") by a finite one: 1.0 for scores in
  [0, 1], else the next float above the highest score (scores that are not probabilities).

  1.0, not a float above it: inference.py takes thresholds in [0, 1] only, the range of the
  sigmoid scores it compares them with. 1.0 predicts nothing but a score of exactly 1.0, which a
  float32 sigmoid gives only for a logit above ~17: the most confident the model can be.
  """
  if np.isfinite(threshold):
    return float(threshold)
  highest = float(np.max(scores_col))
  return 1.0 if highest <= 1.0 else float(np.nextafter(highest, np.inf))


def roc_threshold(labels_col, scores_col):
  """The original's method: the ROC point nearest to (0, 1).

  Exactly what the TF1 script computed with sklearn: fpr, tpr, thr = roc_curve(y, s);
  thr[argmin(sqrt(fpr**2 + (1 - tpr)**2))] (first index on ties; the sqrt is kept because it can
  merge distances that differ only before rounding). An +inf result is made finite
  (_finite_threshold). Needs positives and negatives.
  """
  fpr, tpr, thresholds = roc_curve(labels_col, scores_col)
  index = np.argmin(np.sqrt(fpr ** 2 + (1 - tpr) ** 2))
  return _finite_threshold(thresholds[index], scores_col)


def youden_threshold(labels_col, scores_col):
  """Youden's J: the ROC threshold maximising TPR - FPR (first index on ties, i.e. the highest
  threshold; +inf made finite). Needs positives and negatives."""
  fpr, tpr, thresholds = roc_curve(labels_col, scores_col)
  index = np.argmax(tpr - fpr)
  return _finite_threshold(thresholds[index], scores_col)


def f1_threshold(labels_col, scores_col):
  """The distinct score t maximising the label's F1 when predicting score >= t.

  F1(t) = 2 TP / (TP + FP + num_positives); ties go to the highest such t. Needs positives.
  """
  tps, fps, thresholds = ranked_counts(labels_col, scores_col)
  f1 = 2.0 * tps / (tps + fps + tps[-1])
  return float(thresholds[np.argmax(f1)])


def calibrate_thresholds(labels, scores, method, label_names=None):
  """One threshold per label chosen on a calibration set.

  Args:
    labels: [num_images, num_labels] 0/1; each label is calibrated on its known (not -1)
      entries only.
    scores: [num_images, num_labels].
    method: "roc" (nearest (0, 1), the original) | "f1" | "youden".
    label_names: optional names used in the warnings.
  Returns:
    thresholds: [num_labels] float64. A label with no (known) positives or negatives gets 0.5.
    warnings: list of strings, one per such label, naming it.
  """
  if method == "roc":
    choose = roc_threshold
  elif method == "f1":
    choose = f1_threshold
  elif method == "youden":
    choose = youden_threshold
  else:
    raise ValueError(f"unknown calibration method {method!r}; expected roc, f1 or youden")
  labels, scores = check_pair(labels, scores)
  thresholds = np.full(labels.shape[1], 0.5)
  warnings = []
  for j in range(labels.shape[1]):
    known = labels[:, j] >= 0
    positives, count = int(labels[known, j].sum()), int(known.sum())
    if positives == 0 or positives == count:
      name = f" ({label_names[j]})" if label_names is not None else ""
      kind = "no positives" if positives == 0 else "no negatives"
      images = f"{labels.shape[0]} images" + (
          f", {count} of them with this label known" if count < labels.shape[0] else "")
      warnings.append(f"label {j}{name} has {kind} in the calibration set "
                      f"({images}); using threshold 0.5")
      continue
    thresholds[j] = choose(labels[known, j], scores[known, j])
  return thresholds, warnings


# ---------------------------------------------------------------------------------------------
# The one check of a (labels, scores) pair.
