"""multilabel/summaries.py: the per-label AP bar chart against its documented layout on hand
values, and write_summaries' scalars and precision-recall counts against numpy. (The chart test
is from tests/test_evaluate.py, which checks the same summaries of a real evaluate.py run.)"""
import numpy as np
import pytest
import tensorflow as tf

from multilabel import summaries
from tests.helpers import chart_geometry_matches, eval_events, pr_counts_checked


def test_ap_chart_layout_on_hand_values():
  per_label_ap = [0.5, None, 1.0, 0.25, 0.0]
  image = summaries.ap_bar_chart(per_label_ap, 0.4375)
  chart_geometry_matches(image, per_label_ap, 0.4375)
  assert image.dtype == np.uint8 and (image[0] == 255).all()  # the margin stays white


def test_write_summaries_scalars_pr_counts_of_the_known_entries_and_the_chart(tmp_path):
  """One evaluation's summaries, read back from the event file: a scalar per float of the result
  (not its ints), per_label_ap/<name> for the labels with an AP, a pr_curve per label whose
  TP, FP, TN, FN at every t = k/200 (no score is near one) are numpy's over the label's known
  entries (-1 left out), and the chart of the APs."""
  labels = np.array([[1, 0, -1], [0, 0, 1], [1, -1, 0], [-1, 0, 1], [0, 0, 0], [1, 0, 1]])
  scores = np.array([[0.913, 0.123, 0.333], [0.273, 0.443, 0.713], [0.633, 0.983, 0.073],
                     [0.523, 0.383, 0.863], [0.163, 0.213, 0.423], [0.773, 0.583, 0.693]])
  result = {"global_step": 7, "num_images": 6, "loss": 0.25, "mAP": 0.625, "CF1": 0.4,
            "per_label_ap": [0.5, None, 0.75], "excluded_labels": [1]}
  names = ["cat", "dog", "bird"]
  writer = tf.summary.create_file_writer(str(tmp_path))
  summaries.write_summaries(writer, result, names, labels, scores)
  events = eval_events(str(tmp_path))
  scalars = {tag: float(step[7][1]) for tag, step in events.items() if step[7][0] == "scalars"}
  assert scalars == pytest.approx({"eval/loss": 0.25, "eval/mAP": 0.625, "eval/CF1": 0.4,
                                   "per_label_ap/cat": 0.5, "per_label_ap/bird": 0.75})
  for j, name in enumerate(names):
    plugin, curve = events[f"pr_curve/{name}"][7]
    assert plugin == "pr_curves" and curve.shape == (6, 201)
    known = labels[:, j] >= 0
    assert curve[:4, 0].sum() == known.sum()  # TP + FP + TN + FN: the known entries
    assert pr_counts_checked(curve[:4], labels[known, j] == 1, scores[known, j]) == 201
  plugin, encoded = events["per_label_ap_chart"][7]
  assert plugin == "images"
  chart_geometry_matches(tf.io.decode_png(encoded[2]).numpy(), result["per_label_ap"], 0.625)
