"""TensorBoard summaries: evaluate.py's of one evaluation (the scalars eval/*, per-label AP, each
label's precision-recall curve and the per-label AP bar chart), and train.py's augmented inputs.
"""

import numpy as np
import tensorflow as tf
from tensorboard.plugins.pr_curve import summary as pr_curve_summary

# The per-label AP chart: bars of CHART_BAR px (1 px gaps) on a white ground, CHART_PLOT px tall
# for AP 0..1 inside a CHART_MARGIN px margin; grey lines at AP 0.25, 0.5, 0.75 and 1, a red one
# at the mAP (behind the bars, so it shows in the gaps and above the lower bars).
CHART_BAR, CHART_PLOT, CHART_MARGIN = 8, 120, 6
CHART_COLOURS = {"bar": (31, 119, 180), "mAP": (214, 39, 40), "grid": (210, 210, 210),
                 "axis": (0, 0, 0)}


def ap_bar_chart(per_label_ap, mean_ap):
  """A bar chart of the per-label APs, sorted from the highest, with a line at the mAP.

  Args:
    per_label_ap: [L] floats or None (labels without positives, which are left out).
    mean_ap: the mAP, or None.
  Returns:
    uint8 [CHART_PLOT + 2 * CHART_MARGIN, width, 3]: bar j fills CHART_BAR columns from
    CHART_MARGIN + j * (CHART_BAR + 1), round(AP * CHART_PLOT) px up from the axis row
    (CHART_MARGIN + CHART_PLOT); the mAP line is the row a bar of AP = mAP tops out at.
  """
  aps = sorted((ap for ap in per_label_ap if ap is not None), reverse=True)
  width = 2 * CHART_MARGIN + max(len(aps), 1) * (CHART_BAR + 1) - 1
  image = np.full((CHART_PLOT + 2 * CHART_MARGIN, width, 3), 255, np.uint8)
  bottom = CHART_MARGIN + CHART_PLOT  # the row just below AP 0
  row = lambda value: bottom - int(round(value * CHART_PLOT))  # AP -> the row of its top pixel
  plot = slice(CHART_MARGIN, width - CHART_MARGIN)
  for value in (0.25, 0.5, 0.75, 1.0):
    image[row(value), plot] = CHART_COLOURS["grid"]
  if mean_ap is not None:
    image[row(mean_ap), plot] = CHART_COLOURS["mAP"]
  for j, ap in enumerate(aps):
    left = CHART_MARGIN + j * (CHART_BAR + 1)
    image[row(ap):bottom, left:left + CHART_BAR] = CHART_COLOURS["bar"]
  image[bottom, plot] = CHART_COLOURS["axis"]
  return image


def write_summaries(writer, result, label_names, labels, scores):
  """Scalars (eval/*, per_label_ap/<name>), each label's precision-recall curve (TensorBoard's
  pr_curve summary, pr_curve/<name>) and the per-label AP bar chart (per_label_ap_chart)."""
  with writer.as_default(step=result["global_step"]):
    for key, value in result.items():
      if isinstance(value, float):
        tf.summary.scalar(f"eval/{key}", value)
    for name, ap in zip(label_names, result["per_label_ap"]):
      if ap is not None:
        tf.summary.scalar(f"per_label_ap/{name}", ap)
    for j, name in enumerate(label_names):
      # TensorBoard's own counts and metadata, written under our tag by tf.summary.write; over
      # the label's known entries, as its AP (an unknown, -1, is neither positive nor negative)
      known = labels[:, j] >= 0
      curve = pr_curve_summary.pb(name, labels[known, j] == 1,
                                  scores[known, j].astype(np.float32)).value[0]
      tf.summary.write(f"pr_curve/{name}", tf.make_ndarray(curve.tensor),
                       metadata=curve.metadata.SerializeToString())
    ranked = sorted(((ap, name) for name, ap in zip(label_names, result["per_label_ap"])
                     if ap is not None), reverse=True)
    chart = ap_bar_chart(result["per_label_ap"], result["mAP"])
    mean_ap = "" if result["mAP"] is None else f". Red line: mAP {result['mAP']:.3f}."
    tf.summary.image("per_label_ap_chart", chart[None], description="Per-label AP, highest "
                     "first: " + ", ".join(f"{name} {ap:.3f}" for ap, name in ranked) + mean_ap)
  writer.flush()


def summarize_images(iterator, strategy, step_no, model_config, count=3):
  """A few augmented training inputs, as the network sees them (mapped back to [0, 1])."""
  images, _ = next(iterator)
  images = strategy.experimental_local_results(images)[0][:count]
  tf.summary.image("augmented_inputs", (images + 1.0) / 2.0, step=step_no, max_outputs=count,
                   description=f"the inputs as the network sees them: augmentation="
                               f"{model_config.augmentation}")
