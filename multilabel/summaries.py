"""TensorBoard summaries: evaluate.py's of one evaluation (the scalars eval/*, per-label AP, each
label's precision-recall curve, the per-label AP bar chart and its mistakes as pictures),
train.py's augmented inputs, and the run's settings for the HParams dashboard.
"""

import numpy as np
import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api
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


# ---------------------------------------------------------------------------------------------
# The evaluator's mistakes: per label, the highest-scored negatives and lowest-scored positives.

MISTAKE_SIDE = 128  # px: every mistake image is shown resized (and padded) into this square


def mistake_indices(scores, labels, k):
  """{label j: (false positives, false negatives)}: the indices of the k negatives with the
  highest scores of label j, highest first, and of the k positives with the lowest, lowest
  first (ties: the lower index first). Unknown (-1) entries are neither. [N, L] -> k-lists."""
  found = {}
  for j in range(labels.shape[1]):
    negatives, positives = np.flatnonzero(labels[:, j] == 0), np.flatnonzero(labels[:, j] == 1)
    found[j] = (negatives[np.argsort(-scores[negatives, j], kind="stable")[:k]],
                positives[np.argsort(scores[positives, j], kind="stable")[:k]])
  return found


def write_mistakes(writer, step, label_names, found, scores, paths, images):
  """Per label, mistakes/<name>/false_positives and .../false_negatives: the images of
  mistake_indices' `found`, each with its path and score in the description. images: {index:
  encoded image bytes} of those indices; paths: [N] the eval images' paths."""
  with writer.as_default(step=step):
    for j, name in enumerate(label_names):
      for kind, indices in zip(("false_positives", "false_negatives"), found[j]):
        if not len(indices):
          continue
        pictures = [tf.image.resize_with_pad(
            tf.image.convert_image_dtype(tf.io.decode_image(images[i], channels=3,
                                                            expand_animations=False),
                                         tf.float32), MISTAKE_SIDE, MISTAKE_SIDE)
                    for i in indices]
        text = "; ".join(f"{paths[i]} {scores[i, j]:.4f}" for i in indices)
        what = ("negatives with the highest scores" if kind == "false_positives"
                else "positives with the lowest scores")
        tf.summary.image(f"mistakes/{name}/{kind}", tf.stack(pictures), max_outputs=len(pictures),
                         description=f"{name}: the {what}, in order: {text}")
  writer.flush()


# ---------------------------------------------------------------------------------------------
# The run's settings, for TensorBoard's HParams dashboard: one row per train dir.

HPARAMS = {"model": ("backbone", "augmentation", "head_depth", "batch_size", "target_height",
                     "train_base_network", "precision"),
           "train": ("loss", "optimizer", "lr_schedule", "learning_rate", "warmup_steps",
                     "ema_decay", "unknown_label", "seed")}
EVAL_METRICS = ("eval/mAP", "eval/CF1", "eval/OF1", "eval/loss")  # write_summaries' scalars


def write_hparams(writer, run_name, model_config, train_config, eval_group="eval"):
  """The recipe fields that matter, as an HParams session named `run_name`; its metrics are
  evaluate.py's scalars in the `eval_group` folder below the train dir (its default eval_dir)."""
  values = {name: getattr(model_config, name) for name in HPARAMS["model"]}
  values.update({name: getattr(train_config, name) for name in HPARAMS["train"]})
  with writer.as_default():
    hparams_api.hparams_config(hparams=[hparams_api.HParam(name) for name in values],
                               metrics=[hparams_api.Metric(tag, group=eval_group)
                                        for tag in EVAL_METRICS])
    hparams_api.hparams(values, trial_id=run_name)
  writer.flush()
