"""Chooses one decision threshold per label on a calibration (eval) set, and applies them.

Reads evaluate.py's --score_file/--label_file (rows = images, columns = labels; the shapes must
match), picks each label's threshold by `--method`, prints and saves them, and prints the
calibration-set metrics at 0.5 against the calibrated thresholds. Optionally thresholds a test
score file into 0/1 predictions in the image_label format, and scores them against test labels.
Every input is read and checked before anything is written. A NaN row of the test score file
(an image inference.py could not read) becomes a row of -1 (unknown) predictions, counted, and
is left out of the test-set metrics.

Methods (metrics.py), all predicting score >= threshold:
  roc     the original's: the ROC point nearest to (0, 1), as sklearn.metrics.roc_curve gave it
  f1      the score maximising the label's F1
  youden  the ROC point maximising TPR - FPR
A label with no positives or no negatives in the calibration set keeps 0.5, with a warning. The
calibration scores must be in [0, 1] (sigmoid scores), so that every threshold written is too, as
inference.py requires; "predict nothing" (an +inf ROC threshold) is written as 1.0.
Labels of -1 (unknown) are skipped: each label is calibrated, and scored, on its known entries.
The tables name the labels by --label_names_file, else by the names train.py kept in --run_dir (a
train dir's config.json or an eval dir's eval_config.json), else label_<i>.

    python threshold_calibration.py --label_file=eval/labels.txt --score_file=eval/scores.txt
    python threshold_calibration.py --label_file=eval/labels.txt --score_file=eval/scores.txt \\
        --method=f1 --output_file=eval/thresholds.txt
    python threshold_calibration.py --label_file=eval/labels.txt --score_file=eval/scores.txt \\
        --apply_to=inference/scores.txt --predictions_file=inference/predictions.txt \\
        --apply_labels=data/test_labels.txt
"""

import sys

import numpy as np

import configs
from multilabel import arguments, calibration, config_files, errors, metrics, textfiles

UNREADABLE = -1  # the prediction row of an image inference.py could not read (a NaN score row)


def load_pair(label_file, score_file):
  """Labels and scores of one image set; their shapes must be equal.

  Returns:
    labels: int64 [num_images, num_labels]; scores: float64 [num_images, num_labels].
  """
  labels = textfiles.load_labels(label_file)
  scores = textfiles.load_matrix(score_file)
  if labels.shape != scores.shape:
    raise errors.DataError(f"label file {label_file} has shape {labels.shape} (images, labels) "
                           f"but score file {score_file} has shape {scores.shape}; they must match")
  return labels, scores


def check_probabilities(score_file, scores):
  """The calibration scores must be probabilities in [0, 1], as evaluate.py writes them: the
  thresholds chosen among them go to inference.py, which takes thresholds in [0, 1] only (a
  threshold chosen among logits would be refused there, or mean nothing). Else a DataError
  naming the file, the data row and the column."""
  bad = ~((scores >= 0.0) & (scores <= 1.0))  # NaN is bad too
  if bad.any():
    i, j = np.argwhere(bad)[0]
    raise errors.DataError(f"{score_file}: score {float(scores[i, j])!r} in data row {i + 1}, "
                           f"column {j + 1} is not in [0, 1]; the thresholds are for sigmoid "
                           "scores, as evaluate.py writes them")


def comparison_table(labels, scores, thresholds, title, label_names=None):
  """Text: per-label F1 and threshold, then CP..OF1, at 0.5 against the calibrated thresholds."""
  names = label_names or textfiles.load_label_names("", labels.shape[1])
  at_half = metrics.multilabel_prf(labels, metrics.threshold_predictions(scores, 0.5))
  calibrated = metrics.multilabel_prf(labels, metrics.threshold_predictions(scores, thresholds))
  width = max(10, *(len(name) + 1 for name in names))
  lines = [f"{title} ({labels.shape[0]} images)",
           f"{'label':<{width}}{'positives':>10}{'threshold':>11}{'F1@0.5':>9}{'F1@thr':>9}"]
  for j, name in enumerate(names):
    lines.append(f"{name:<{width}}{int((labels[:, j] == 1).sum()):>10}{thresholds[j]:>11.6f}"
                 f"{at_half['per_label_f1'][j]:>9.4f}{calibrated['per_label_f1'][j]:>9.4f}")
  lines.append(f"{'':<14}" + "".join(f"{column:>8}" for column in metrics.PRF_NAMES))
  for row_name, result in (("at 0.5", at_half), ("calibrated", calibrated)):
    lines.append(f"{row_name:<14}"
                 + "".join(f"{result[column]:8.4f}" for column in metrics.PRF_NAMES))
  return "\n".join(lines)


def load_test_set(cfg, label_count):
  """--apply_to's scores [N, L] and, with --apply_labels, its labels [N, L] (else None), checked
  against the calibration set's label count: read before anything is written."""
  test_labels = None
  if cfg.apply_labels:
    test_labels, test_scores = load_pair(cfg.apply_labels, cfg.apply_to)
  else:
    test_scores = textfiles.load_matrix(cfg.apply_to)
  if test_scores.shape[1] != label_count:
    raise errors.DataError(f"score file {cfg.apply_to} has shape {test_scores.shape}, i.e. "
                           f"{test_scores.shape[1]} labels, but the calibration files have "
                           f"{label_count} labels")
  return test_scores, test_labels


def main(argv):
  cfg = configs.CalibrationConfig()
  arguments.parse_overrides(argv, cfg, usage=__doc__)
  if cfg.run_dir and config_files.saved_label_names(cfg.run_dir)[1] is None:
    raise errors.MissingFileError(
        f"--run_dir={cfg.run_dir!r}: no {config_files.TRAIN_CONFIG_FILE} or "
        f"{config_files.EVAL_CONFIG_FILE} or {config_files.INFERENCE_CONFIG_FILE} in it (give a train "
        "dir or an eval dir)")

  # Read every input first: a bad file fails before anything is written.
  labels, scores = load_pair(cfg.label_file, cfg.score_file)
  check_probabilities(cfg.score_file, scores)
  names = textfiles.load_label_names(cfg.label_names_file, labels.shape[1], run_dir=cfg.run_dir)
  if cfg.apply_to:
    test_scores, test_labels = load_test_set(cfg, labels.shape[1])

  # Choose the thresholds on the calibration set.
  thresholds, warnings = calibration.calibrate_thresholds(labels, scores, cfg.method, names)
  for warning in warnings:
    print(f"warning: {warning}", file=sys.stderr)
  print(f"thresholds (method={cfg.method}):")
  for name, threshold in zip(names, thresholds):
    print(f"  {name}: {threshold:.6f}")
  if cfg.output_file:
    textfiles.save_thresholds(cfg.output_file, thresholds, cfg.method)
    print(f"wrote {len(thresholds)} thresholds to {cfg.output_file}")
  print(comparison_table(labels, scores, thresholds, "calibration set", names))
  if not cfg.apply_to:
    return

  # Apply them to a test score file. A NaN row is an image inference.py could not read: its
  # predictions are -1 (unknown, as in image_label files), and the test metrics leave it out.
  unreadable = np.isnan(test_scores).any(axis=1)
  predictions = metrics.threshold_predictions(np.nan_to_num(test_scores), thresholds)
  predictions[unreadable] = UNREADABLE
  if unreadable.any():
    print(f"{unreadable.sum()} of {len(test_scores)} rows of {cfg.apply_to} are NaN (images "
          f"inference.py could not read): their predictions are {UNREADABLE} (unknown), and "
          "the test-set metrics leave them out")
  if cfg.predictions_file:
    textfiles.save_labels(cfg.predictions_file, predictions)
    print(f"wrote {predictions.shape[0]} prediction rows to {cfg.predictions_file}")
  if cfg.apply_labels:
    readable = ~unreadable
    if not readable.any():
      raise errors.DataError(f"every row of {cfg.apply_to} is NaN: no test-set metrics")
    test_labels, test_scores = test_labels[readable], test_scores[readable]
    print(comparison_table(test_labels, test_scores, thresholds, "test set", names))
    print("test set, ranking and top-k metrics:")
    print(metrics.format_metrics_table(metrics.evaluate_scores(test_labels, test_scores), names))


if __name__ == "__main__":
  errors.run(main)
