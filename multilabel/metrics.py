"""Multi-label metrics and per-label thresholds in pure numpy, shared by evaluate.py,
threshold_calibration.py and inference.py.

Arrays follow one convention: `labels` and `scores` are [num_images, num_labels]; labels are 0/1,
scores any finite reals (sigmoid outputs in practice). Column helpers take one label's
[num_images] vectors.

A label of -1 means unknown (nobody annotated it). Every metric skips unknown entries label by
label: each column's AP, ROC curve, threshold and TP/FP/FN counts are those of its known entries
only (as sklearn on the known subset of the column), and the overall OP/OR count the known entries
of all columns. A label with no known entry is excluded from mAP like a label without positives.
With no -1 every result is exactly what it is without this rule.

Ranking metrics copy scikit-learn's definitions exactly (so the tests can hold them to it):
  * average precision = sum_n (R_n - R_{n-1}) P_n over the distinct scores, descending
    (sklearn.metrics.average_precision_score; tied scores form one step);
  * roc_curve = sklearn.metrics.roc_curve(drop_intermediate=True): a first point (0, 0) at
    threshold +inf, then one point per distinct score, dropping points collinear with both
    neighbours.
Counting metrics (CP, CR, CF1, OP, OR, OF1) follow the multi-label literature, e.g. Zhu et al.,
"Learning Spatial Regularization with Image-level Supervisions for Multi-label Image
Classification", CVPR 2017; Chen et al., "Multi-Label Image Recognition with Graph Convolutional
Networks", CVPR 2019:
  CP = mean_l TP_l / (TP_l + FP_l)     CR = mean_l TP_l / (TP_l + FN_l)     CF1 = 2 CP CR / (CP + CR)
  OP = sum TP / sum (TP + FP)          OR = sum TP / sum (TP + FN)          OF1 = 2 OP OR / (OP + OR)
A 0/0 counts as 0, as sklearn's zero_division=0: a label nothing is predicted for has precision 0,
a label without positives has recall 0, and CF1/OF1 are 0 when both their terms are 0. CP and CR
average over all labels, like sklearn's average='macro'. Note CF1 is not the macro-averaged F1.

The toolkit's text files of scores, labels, label names and thresholds are score_files.py's;
this file is numbers only. It stays one file (~380 lines) because its three parts, ranking,
counting and the per-label thresholds, share the ranked counts (ranked_counts) and the one
check of a labels/scores pair, and each part's definitions are what its tests hold it to.
"""

import math

import numpy as np

from multilabel import errors
from multilabel.textfiles import first_bad_label

PRF_NAMES = ("CP", "CR", "CF1", "OP", "OR", "OF1")  # the counting metrics, in table order


# ---------------------------------------------------------------------------------------------
# Ranking: average precision and the ROC curve.

def ranked_counts(labels_col, scores_col):
  """Cumulative counts at each distinct score, highest score first.

  Args:
    labels_col: [num_images] 0/1 labels of one label; -1 entries are left out.
    scores_col: [num_images] scores of that label.
  Returns:
    tps, fps: [num_distinct] float64 true / false positives when predicting score >= threshold
      (empty when no entry is known).
    thresholds: [num_distinct] the distinct scores, descending.
  """
  y = np.asarray(labels_col, dtype=np.float64).ravel()
  s = np.asarray(scores_col, dtype=np.float64).ravel()
  if y.shape != s.shape:
    raise ValueError(f"labels have {y.size} entries but scores have {s.size}")
  if not np.all(np.isfinite(s)):
    raise ValueError(f"scores contain NaN or inf (first at index {int(np.argmin(np.isfinite(s)))})")
  known = y >= 0  # unknown (-1) entries are not ranked at all
  y, s = y[known], s[known]
  if not s.size:
    return np.zeros(0), np.zeros(0), np.zeros(0)
  order = np.argsort(s, kind="stable")[::-1]
  s, y = s[order], y[order]
  # The last index of each run of equal scores, plus the end: tied scores are one threshold.
  last = np.r_[np.nonzero(np.diff(s))[0], s.size - 1]
  tps = np.cumsum(y)[last]
  fps = 1.0 + last - tps
  return tps, fps, s[last]


def average_precision(labels_col, scores_col):
  """Average precision of one label, equal to sklearn.metrics.average_precision_score.

  AP = sum_n (R_n - R_{n-1}) P_n over the distinct scores in descending order (no
  interpolation), over the known (not -1) entries. A label without (known) positives has no
  defined AP; this returns NaN (sklearn warns and returns 0), so callers can exclude it.
  """
  tps, fps, _ = ranked_counts(labels_col, scores_col)
  num_positives = tps[-1] if tps.size else 0.0
  if num_positives == 0:
    return float("nan")
  # sklearn's own arithmetic, in its order (recall decreasing), so that an AP recomputed with
  # sklearn from a score file equals the reported one to the last bit, not only to ~1e-16
  precision = (tps / (tps + fps))[::-1]
  recall = np.r_[(tps / num_positives)[::-1], 0.0]
  return float(max(0.0, -np.sum(np.diff(recall) * precision)))


def mean_average_precision(labels, scores):
  """mAP over the labels that have positives.

  Args:
    labels: [num_images, num_labels] 0/1 (-1 = unknown, skipped).
    scores: [num_images, num_labels].
  Returns:
    mAP: float, mean AP over labels with at least one positive (NaN when there are none).
    per_label_ap: [num_labels] float64, NaN for labels without positives (or no known entry).
    excluded: list of the label indices without positives.
  """
  labels, scores = check_pair(labels, scores)
  per_label_ap = np.array([average_precision(labels[:, j], scores[:, j])
                           for j in range(labels.shape[1])])
  excluded = [int(j) for j in np.nonzero(np.isnan(per_label_ap))[0]]
  kept = per_label_ap[~np.isnan(per_label_ap)]
  mean_ap = float(kept.mean()) if kept.size else float("nan")
  return mean_ap, per_label_ap, excluded


def roc_curve(labels_col, scores_col):
  """ROC curve of one label, equal to sklearn.metrics.roc_curve(drop_intermediate=True).

  Args:
    labels_col: [num_images] 0/1 (-1 entries are left out).
    scores_col: [num_images].
  Returns:
    fpr, tpr: [num_points] rates when predicting score >= thresholds[i]; NaN throughout when the
      label has no negatives (fpr) or no positives (tpr), where sklearn also warns.
    thresholds: [num_points] descending; thresholds[0] = +inf (the point (0, 0)), as sklearn >= 1.3.
  """
  tps, fps, thresholds = ranked_counts(labels_col, scores_col)
  if fps.size > 2:
    # Keep the ends and every corner: a point whose second difference is 0 in both fps and tps
    # lies on the segment between its neighbours and is dropped.
    keep = np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True]
    tps, fps, thresholds = tps[keep], fps[keep], thresholds[keep]
  tps, fps = np.r_[0.0, tps], np.r_[0.0, fps]
  thresholds = np.r_[np.inf, thresholds]
  fpr = fps / fps[-1] if fps[-1] > 0 else np.full(fps.shape, np.nan)
  tpr = tps / tps[-1] if tps[-1] > 0 else np.full(tps.shape, np.nan)
  return fpr, tpr, thresholds


# ---------------------------------------------------------------------------------------------
# Counting metrics on 0/1 predictions.

def _safe_divide(numerator, denominator):
  """numerator / denominator elementwise, 0 where the denominator is 0 (zero_division=0)."""
  numerator = np.asarray(numerator, dtype=np.float64)
  denominator = np.asarray(denominator, dtype=np.float64)
  return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), 0.0)


def _harmonic(p, r):
  """2 p r / (p + r), 0 when p + r = 0."""
  return float(_safe_divide(2.0 * p * r, p + r))


def multilabel_prf(labels, predictions):
  """CP, CR, CF1, OP, OR, OF1 of 0/1 predictions (definitions and 0/0 rule: module docstring).

  Args:
    labels: [num_images, num_labels] 0/1; -1 (unknown) entries count as neither TP, FP nor FN.
    predictions: [num_images, num_labels] 0/1.
  Returns:
    dict with floats CP, CR, CF1, OP, OR, OF1 and [num_labels] float64 arrays
    per_label_precision, per_label_recall, per_label_f1 (F1 = 2 TP / (2 TP + FP + FN), 0 when
    the label is neither present nor predicted).
  """
  labels, predictions = check_pair(labels, predictions, second_name="predictions")
  pred = predictions > 0
  truth = labels > 0
  negative = labels == 0  # not ~truth: a predicted unknown (-1) entry is no false positive
  tp = np.sum(pred & truth, axis=0)  # [num_labels]
  fp = np.sum(pred & negative, axis=0)
  fn = np.sum(~pred & truth, axis=0)
  precision = _safe_divide(tp, tp + fp)
  recall = _safe_divide(tp, tp + fn)
  cp, cr = float(precision.mean()), float(recall.mean())
  op = float(_safe_divide(tp.sum(), tp.sum() + fp.sum()))
  o_r = float(_safe_divide(tp.sum(), tp.sum() + fn.sum()))
  return {"CP": cp, "CR": cr, "CF1": _harmonic(cp, cr),
          "OP": op, "OR": o_r, "OF1": _harmonic(op, o_r),
          "per_label_precision": precision, "per_label_recall": recall,
          "per_label_f1": _safe_divide(2 * tp, 2 * tp + fp + fn)}


def top_k_predictions(scores, k):
  """[num_images, num_labels] 0/1 with a 1 at each row's k highest scores.

  Ties go to the lower label index; k larger than num_labels marks every label.
  """
  scores = np.asarray(scores, dtype=np.float64)
  if scores.ndim != 2:
    raise ValueError(f"scores must be [num_images, num_labels], got shape {scores.shape}")
  if k < 1:
    raise ValueError(f"top-k needs k >= 1, got k={k}")
  k = min(int(k), scores.shape[1])
  top = np.argsort(-scores, axis=1, kind="stable")[:, :k]  # [num_images, k]
  predictions = np.zeros(scores.shape, dtype=np.int64)
  np.put_along_axis(predictions, top, 1, axis=1)
  return predictions


def threshold_predictions(scores, thresholds):
  """0/1 predictions: score >= threshold, with one scalar threshold or one per label.

  Args:
    scores: [num_images, num_labels].
    thresholds: a scalar or [num_labels].
  Returns:
    [num_images, num_labels] int64 0/1.
  """
  scores = np.asarray(scores, dtype=np.float64)
  thresholds = np.asarray(thresholds, dtype=np.float64)
  if scores.ndim != 2:
    raise ValueError(f"scores must be [num_images, num_labels], got shape {scores.shape}")
  if thresholds.ndim > 1 or (thresholds.ndim == 1 and thresholds.size != scores.shape[1]):
    raise ValueError(f"got {thresholds.size} thresholds for {scores.shape[1]} labels "
                     f"(scores shape {scores.shape})")
  return (scores >= thresholds).astype(np.int64)


def evaluate_scores(labels, scores, threshold=0.5, top_k=3):
  """All evaluation metrics of one pass, as a JSON-serialisable dict.

  Returns:
    {"num_images", "mAP" (None if no label has positives), "per_label_ap" (list, None for
     excluded labels), "excluded_labels", "threshold", "top_k", "CP".."OF1" at `threshold`,
     "CP_top<k>".."OF1_top<k>" on each image's top k (top-k picks among all labels; unknown
     entries are then not counted)}, and "unknown_entries" when some labels are -1 (absent
     otherwise, so a 0/1 result is exactly what it was before -1 existed).
  """
  labels, scores = check_pair(labels, scores)
  mean_ap, per_label_ap, excluded = mean_average_precision(labels, scores)
  result = {"num_images": int(labels.shape[0]),
            "mAP": None if math.isnan(mean_ap) else mean_ap,
            "per_label_ap": [None if math.isnan(ap) else float(ap) for ap in per_label_ap],
            "excluded_labels": excluded,
            "threshold": float(threshold), "top_k": int(top_k)}
  unknown = int(np.count_nonzero(labels < 0))
  if unknown:
    result["unknown_entries"] = unknown
  at_threshold = multilabel_prf(labels, threshold_predictions(scores, threshold))
  at_top_k = multilabel_prf(labels, top_k_predictions(scores, top_k))
  for name in PRF_NAMES:
    result[name] = at_threshold[name]
  for name in PRF_NAMES:
    result[f"{name}_top{top_k}"] = at_top_k[name]
  return result



def _label_name(j, label_names):
  return label_names[j] if label_names is not None else f"label_{j}"


def format_metrics_table(metrics, label_names=None):
  """Readable text of an evaluate_scores() dict: mAP, the C/O metrics, and per-label AP."""
  k = metrics.get("top_k", 3)
  excluded = metrics.get("excluded_labels", [])
  mean_ap = metrics.get("mAP")
  lines = [f"images {metrics.get('num_images', '?')}   mAP "
           + ("n/a" if mean_ap is None else f"{mean_ap:.4f}")
           + (f"   (excluded, no positives: {', '.join(_label_name(j, label_names) for j in excluded)})"
              if excluded else ""),
           f"{'':>10}" + "".join(f"{name:>8}" for name in PRF_NAMES)]
  lines.append(f"{'@' + format(metrics.get('threshold', 0.5), 'g'):>10}"
               + "".join(f"{metrics[name]:8.4f}" for name in PRF_NAMES))
  if f"CP_top{k}" in metrics:
    lines.append(f"{'top-' + str(k):>10}"
                 + "".join(f"{metrics[f'{name}_top{k}']:8.4f}" for name in PRF_NAMES))
  per_label_ap = metrics.get("per_label_ap") or []
  if per_label_ap:
    width = max(len(_label_name(j, label_names)) for j in range(len(per_label_ap)))
    lines.append(f"{'label':<{width}}  {'AP':>7}")
    for j, ap in enumerate(per_label_ap):
      lines.append(f"{_label_name(j, label_names):<{width}}  "
                   + (f"{'n/a':>7}" if ap is None or ap != ap else f"{ap:7.4f}"))
  return "\n".join(lines)


def check_pair(labels, second, second_name="scores"):
  """Both as float64 [num_images, num_labels] of one shape; labels 0/1 or -1, no NaN/inf."""
  labels = np.asarray(labels, dtype=np.float64)
  second = np.asarray(second, dtype=np.float64)
  if labels.ndim != 2 or labels.shape != second.shape:
    raise errors.DataError(f"labels shape {labels.shape} and {second_name} shape {second.shape} "
                           f"must be equal and [num_images, num_labels]")
  if (bad := first_bad_label(labels)) is not None:
    i, j = bad
    raise errors.DataError(f"labels must be 0/1 (or -1, unknown); found {labels[i, j]!r} at image "
                           f"{i}, label {j}")
  if not np.all(np.isfinite(second)):
    i, j = np.argwhere(~np.isfinite(second))[0]
    raise errors.DataError(f"{second_name} contain {second[i, j]!r} at image {i}, label {j}")
  return labels, second
