"""multilabel/metrics.py against sklearn.metrics and hand computation. (tests/test_metrics.py
without its text-file tests, which are in test_textfiles.py, plus
tests/test_threshold_calibration.py's test of applying thresholds.)"""

import json
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from multilabel import calibration, metrics


def random_problem(seed, num_images=60, num_labels=7, levels=0):
  """Labels with some signal in the scores; levels > 0 rounds scores to that many steps (ties)."""
  rng = np.random.default_rng(seed)
  labels = (rng.random((num_images, num_labels)) < rng.uniform(0.1, 0.6, num_labels)).astype(int)
  scores = np.clip(0.35 * labels + 0.65 * rng.random(labels.shape), 0, 1)
  if levels:
    scores = np.round(scores * levels) / levels
  return labels, scores


# ---------------------------------------------------------------------------------------------
# Average precision.

@pytest.mark.parametrize("seed,levels", [(0, 0), (1, 0), (2, 10), (3, 4), (4, 1)])
def test_average_precision_equals_sklearn(seed, levels):
  labels, scores = random_problem(seed, levels=levels)
  labels[:, 0] = 0  # no positives: excluded
  labels[:, 1] = 1  # no negatives: AP = 1, kept
  mean_ap, per_label_ap, excluded = metrics.mean_average_precision(labels, scores)
  assert excluded == [0]
  assert np.isnan(per_label_ap[0])
  for j in range(1, labels.shape[1]):
    expected = skm.average_precision_score(labels[:, j], scores[:, j])
    assert per_label_ap[j] == pytest.approx(expected, abs=1e-12)
    assert metrics.average_precision(labels[:, j], scores[:, j]) == pytest.approx(expected, abs=1e-12)
  expected_map = skm.average_precision_score(labels[:, 1:], scores[:, 1:], average="macro")
  assert mean_ap == pytest.approx(expected_map, abs=1e-12)


def test_average_precision_by_hand_with_a_tie():
  # Ranked: 0.9 (pos), then a tie at 0.5 between a pos and a neg, then 0.1 (pos). P = 3.
  # Steps: recall 1/3 at precision 1; recall +1/3 at precision 2/3; recall +1/3 at precision 3/4.
  labels = [1, 1, 0, 1]
  scores = [0.9, 0.5, 0.5, 0.1]
  expected = (1 / 3) * 1 + (1 / 3) * (2 / 3) + (1 / 3) * (3 / 4)
  assert metrics.average_precision(labels, scores) == pytest.approx(expected, abs=1e-12)


def test_mean_average_precision_without_any_positives_is_nan():
  mean_ap, per_label_ap, excluded = metrics.mean_average_precision(np.zeros((4, 2)), np.ones((4, 2)))
  assert np.isnan(mean_ap) and np.all(np.isnan(per_label_ap)) and excluded == [0, 1]


# ---------------------------------------------------------------------------------------------
# ROC curve.

@pytest.mark.parametrize("seed", range(12))
def test_roc_curve_equals_sklearn(seed):
  rng = np.random.default_rng(seed)
  num_images = int(rng.integers(2, 50))
  labels = rng.integers(0, 2, num_images)
  labels[:2] = [0, 1]
  scores = rng.random(num_images)
  if seed % 2:  # many ties
    scores = np.round(scores * 4) / 4
  expected = skm.roc_curve(labels, scores)
  got = metrics.roc_curve(labels, scores)
  for e, g in zip(expected, got):
    np.testing.assert_array_equal(g, e)
  assert got[2][0] == np.inf


def test_roc_curve_single_class_gives_nan_like_sklearn():
  labels, scores = np.ones(5, int), np.array([0.1, 0.2, 0.2, 0.7, 0.9])
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    expected = skm.roc_curve(labels, scores)
  for e, g in zip(expected, metrics.roc_curve(labels, scores)):
    np.testing.assert_array_equal(g, e)


# ---------------------------------------------------------------------------------------------
# Counting metrics.

@pytest.mark.parametrize("seed", range(4))
def test_prf_equals_sklearn(seed):
  labels, scores = random_problem(seed, num_images=40, num_labels=6)
  predictions = metrics.threshold_predictions(scores, 0.55)
  predictions[:, 0] = 0  # nothing predicted: precision 0/0 -> 0
  labels[:, 1] = 0  # no positives: recall 0/0 -> 0
  got = metrics.multilabel_prf(labels, predictions)

  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    p, r, f, _ = skm.precision_recall_fscore_support(labels, predictions, average=None,
                                                     zero_division=0)
    mp, mr, _, _ = skm.precision_recall_fscore_support(labels, predictions, average="macro",
                                                       zero_division=0)
    op, o_r, of1, _ = skm.precision_recall_fscore_support(labels, predictions, average="micro",
                                                          zero_division=0)
  np.testing.assert_allclose(got["per_label_precision"], p, atol=1e-12)
  np.testing.assert_allclose(got["per_label_recall"], r, atol=1e-12)
  np.testing.assert_allclose(got["per_label_f1"], f, atol=1e-12)
  assert got["CP"] == pytest.approx(mp, abs=1e-12)
  assert got["CR"] == pytest.approx(mr, abs=1e-12)
  assert got["CF1"] == pytest.approx(2 * mp * mr / (mp + mr), abs=1e-12)
  assert got["CF1"] != pytest.approx(np.mean(f), abs=1e-6)  # CF1 is not macro-F1
  assert got["OP"] == pytest.approx(op, abs=1e-12)
  assert got["OR"] == pytest.approx(o_r, abs=1e-12)
  assert got["OF1"] == pytest.approx(of1, abs=1e-12)


def test_prf_by_hand():
  labels = np.array([[1, 0], [1, 1], [0, 1]])
  predictions = np.array([[1, 1], [0, 1], [0, 0]])
  # label 0: TP 1, FP 0, FN 1 -> P 1, R 1/2.  label 1: TP 1, FP 1, FN 1 -> P 1/2, R 1/2.
  got = metrics.multilabel_prf(labels, predictions)
  assert got["CP"] == pytest.approx(0.75) and got["CR"] == pytest.approx(0.5)
  assert got["CF1"] == pytest.approx(2 * 0.75 * 0.5 / 1.25)
  assert got["OP"] == pytest.approx(2 / 3) and got["OR"] == pytest.approx(0.5)
  assert got["OF1"] == pytest.approx(2 * (2 / 3) * 0.5 / (2 / 3 + 0.5))
  np.testing.assert_allclose(got["per_label_f1"], [2 / 3, 0.5])


def test_prf_nothing_predicted_is_zero():
  got = metrics.multilabel_prf(np.array([[1, 0], [0, 1]]), np.zeros((2, 2)))
  assert [got[k] for k in ("CP", "CR", "CF1", "OP", "OR", "OF1")] == [0.0] * 6


def test_top_k_predictions():
  scores = np.array([[0.1, 0.9, 0.5, 0.7],
                     [0.4, 0.4, 0.4, 0.3]])  # a tie: lower label index wins
  np.testing.assert_array_equal(metrics.top_k_predictions(scores, 2), [[0, 1, 0, 1], [1, 1, 0, 0]])
  np.testing.assert_array_equal(metrics.top_k_predictions(scores, 9), np.ones((2, 4)))
  with pytest.raises(ValueError, match="k=0"):
    metrics.top_k_predictions(scores, 0)


def test_top_k_matches_sorting_on_random_scores():
  scores = np.random.default_rng(5).random((30, 8))
  got = metrics.top_k_predictions(scores, 3)
  kth_largest = np.sort(scores, axis=1)[:, -3][:, None]
  np.testing.assert_array_equal(got, (scores >= kth_largest).astype(int))


def test_threshold_predictions_scalar_and_per_label():
  scores = np.array([[0.2, 0.5, 0.8], [0.6, 0.4, 0.1]])
  np.testing.assert_array_equal(metrics.threshold_predictions(scores, 0.5), [[0, 1, 1], [1, 0, 0]])
  np.testing.assert_array_equal(metrics.threshold_predictions(scores, [0.1, 0.45, 0.9]),
                                [[1, 1, 0], [1, 0, 0]])
  with pytest.raises(ValueError, match="2 thresholds for 3 labels"):
    metrics.threshold_predictions(scores, [0.1, 0.2])


def test_evaluate_scores_is_json_and_consistent():
  labels, scores = random_problem(7, num_images=30, num_labels=5)
  labels[:, 2] = 0
  result = metrics.evaluate_scores(labels, scores, threshold=0.5, top_k=2)
  json.dumps(result, allow_nan=False)  # strict JSON: no NaN
  mean_ap, per_label_ap, excluded = metrics.mean_average_precision(labels, scores)
  assert result["num_images"] == 30 and result["excluded_labels"] == [2] == excluded
  assert result["mAP"] == pytest.approx(mean_ap)
  assert result["per_label_ap"][2] is None
  assert result["per_label_ap"][0] == pytest.approx(per_label_ap[0])
  at_half = metrics.multilabel_prf(labels, (scores >= 0.5).astype(int))
  at_top2 = metrics.multilabel_prf(labels, metrics.top_k_predictions(scores, 2))
  for name in ("CP", "CR", "CF1", "OP", "OR", "OF1"):
    assert result[name] == pytest.approx(at_half[name])
    assert result[f"{name}_top2"] == pytest.approx(at_top2[name])
  table = metrics.format_metrics_table(result, label_names=["a", "b", "cat", "d", "e"])
  assert f"{mean_ap:.4f}" in table and "top-2" in table and "cat" in table and "n/a" in table


# ---------------------------------------------------------------------------------------------
# Unknown (-1) labels: every metric is sklearn's on the known subset of each column.

def hide(labels, seed, fraction=0.3):
  """A copy of `labels` with a seeded `fraction` of the entries set to -1 (unknown)."""
  hidden = np.array(labels)
  rng = np.random.default_rng(seed + 1000)  # not random_problem's stream, which made the labels
  hidden[rng.random(hidden.shape) < fraction] = -1
  return hidden


@pytest.mark.parametrize("seed", range(4))
def test_each_metric_equals_sklearn_on_the_known_subset(seed):
  labels, scores = random_problem(seed, num_images=60, num_labels=6, levels=10 if seed % 2 else 0)
  hidden = hide(labels, seed)
  hidden[:, 4] = np.where(np.arange(60) < 30, -1, 0)  # known entries but no known positive
  hidden[:, 5] = -1  # no known entry at all: excluded like a label without positives
  known = hidden >= 0
  result = metrics.evaluate_scores(hidden, scores, threshold=0.5, top_k=2)
  assert result["unknown_entries"] == int((~known).sum())
  assert result["excluded_labels"] == [4, 5]
  kept = []
  for j in range(4):
    y, s = hidden[known[:, j], j], scores[known[:, j], j]
    assert 0 < y.sum() < y.size
    want = skm.average_precision_score(y, s)
    assert result["per_label_ap"][j] == pytest.approx(want, abs=1e-12)
    for e, g in zip(skm.roc_curve(y, s), metrics.roc_curve(hidden[:, j], scores[:, j])):
      np.testing.assert_array_equal(g, e)
    kept.append(want)
  assert result["mAP"] == pytest.approx(np.mean(kept), abs=1e-12)
  for suffix, predictions in (("", (scores >= 0.5).astype(int)),
                              ("_top2", metrics.top_k_predictions(scores, 2))):
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      per_label = [skm.precision_recall_fscore_support(
          hidden[known[:, j], j], predictions[known[:, j], j], average="binary",
          zero_division=0)[:2] for j in range(5)]
      op, o_r, of1, _ = skm.precision_recall_fscore_support(  # micro: all known entries
          hidden[known], predictions[known], average="binary", zero_division=0)
    per_label.append((0.0, 0.0))  # label 5 has no known entry: 0/0 precision and recall are 0
    cp, cr = np.mean(per_label, axis=0)
    assert result["CP" + suffix] == pytest.approx(cp, abs=1e-12)
    assert result["CR" + suffix] == pytest.approx(cr, abs=1e-12)
    assert result["CF1" + suffix] == pytest.approx(2 * cp * cr / (cp + cr), abs=1e-12)
    assert result["OP" + suffix] == pytest.approx(op, abs=1e-12)
    assert result["OR" + suffix] == pytest.approx(o_r, abs=1e-12)
    assert result["OF1" + suffix] == pytest.approx(of1, abs=1e-12)
  json.dumps(result, allow_nan=False)


def test_images_whose_labels_are_all_unknown_change_no_result_at_all():
  """Exactness: rows of -1 with any scores leave every number bit for bit as it was, and a 0/1
  result has no unknown_entries key: a file without -1 gives exactly the numbers it gave."""
  labels, scores = random_problem(11, num_images=40, num_labels=5, levels=8)
  rng = np.random.default_rng(0)
  more_labels = np.vstack([labels[:7], np.full((9, 5), -1), labels[7:]])
  more_scores = np.vstack([scores[:7], rng.random((9, 5)), scores[7:]])
  plain = metrics.evaluate_scores(labels, scores, top_k=2)
  padded = metrics.evaluate_scores(more_labels, more_scores, top_k=2)
  assert "unknown_entries" not in plain and padded.pop("unknown_entries") == 45
  assert padded.pop("num_images") == 49 and plain.pop("num_images") == 40
  assert padded == plain  # ==, not approx
  for method in ("roc", "f1", "youden"):
    np.testing.assert_array_equal(calibration.calibrate_thresholds(more_labels, more_scores, method)[0],
                                  calibration.calibrate_thresholds(labels, scores, method)[0])


def test_unknown_entries_are_no_false_positives_by_hand():
  labels = np.array([[1, -1], [-1, 0], [0, 1]])
  predictions = np.array([[1, 1], [1, 1], [1, 1]])
  # label 0: known rows 0, 2: TP 1, FP 1 -> P 1/2, R 1.  label 1: known rows 1, 2: TP 1, FP 1.
  got = metrics.multilabel_prf(labels, predictions)
  assert (got["CP"], got["CR"], got["OP"], got["OR"]) == (0.5, 1.0, 0.5, 1.0)


def test_applying_thresholds_gives_the_right_rows():
  scores = np.array([[0.50, 0.20, 0.90],
                     [0.49, 0.21, 0.10],
                     [0.70, 0.05, 0.95]])
  thresholds = np.array([0.5, 0.21, 0.95])  # score == threshold counts as positive
  np.testing.assert_array_equal(metrics.threshold_predictions(scores, thresholds),
                                [[1, 0, 0], [0, 1, 0], [1, 0, 1]])
