"""Evaluates each new checkpoint of a training run: loss, mAP, per-label AP, CP/CR/CF1/OP/OR/OF1.

Runs beside train.py (on the CPU by default, so it doesn't take the GPU from training), rebuilds
the model from the train dir's config.json, and keeps the best checkpoint by mAP in
<eval_dir>/best/:

    python evaluate.py --checkpoint_dir=runs/coco --input_tfrecord_file='data/eval-*'
    python evaluate.py --checkpoint_dir=runs/coco --input_tfrecord_file=data/eval.tfrecord \\
        --run_once=true --score_file=eval_scores.txt --label_file=eval_labels.txt
"""

import json
import os
import shutil
import time

import numpy as np
import tensorflow as tf
from tensorboard.plugins.pr_curve import summary as pr_curve_summary

import configs
import errors
import fileio
import input_service
import metrics
import records
import run_utils
from multi_label_classification_model import (MultiLabelClassificationModel, build_dataset,
                                              per_example_loss)
from run_utils import log

METRICS_FILE = "metrics.jsonl"
BEST_DIR = "best"
EVAL_CONFIG_FILE = configs.CONFIG_FILES[1]  # eval_config.json


def predict_fn(model):
  @tf.function
  def predict(images, labels):
    logits, end_points = model(images, training=False)
    return end_points["predictions"], per_example_loss(logits, labels)
  return predict


def score_dataset(predict, dataset):
  """One pass: (scores [N, L], labels [N, L], mean classification loss over the known entries;
  with no -1 label that is the plain mean)."""
  scores, labels, losses = [], [], []
  progress = fileio.Progress(0, "eval images")
  for images, batch_labels, _ in dataset:
    batch_scores, batch_losses = predict(images, batch_labels)
    scores.append(batch_scores.numpy())
    labels.append(batch_labels.numpy())
    losses.append(batch_losses.numpy())
    progress.update(sum(len(s) for s in scores))
  progress.clear()
  if not scores:
    raise errors.DataError("the eval records are empty")
  labels = np.concatenate(labels).astype(int)
  known = np.count_nonzero(labels >= 0)
  # per-image losses are means over L with unknown entries adding 0: rescale to the known ones
  # (a factor of exactly 1.0 when every label is known)
  loss = np.concatenate(losses).mean() * (labels.size / known) if known else float("nan")
  return np.concatenate(scores), labels, loss


def already_evaluated(eval_dir):
  path = os.path.join(eval_dir, METRICS_FILE)
  if not os.path.exists(path):
    return set()
  done = set()
  with open(path) as f:
    for line_number, line in enumerate(f, 1):
      try:
        done.add(json.loads(line)["checkpoint"])
      except (ValueError, KeyError):  # e.g. a line cut short when the evaluator was killed
        if line.strip():
          log(f"note: {path}:{line_number}: not a metrics record; ignored")
  return done


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


def keep_if_best(result, prefix, eval_dir, train_dir):
  """Copies the checkpoint, config.json and its metrics to <eval_dir>/best/ if its mAP is the best
  so far. The copy is built beside and renamed into place, so best/ is always complete."""
  if result["mAP"] is None:  # no label has positives: nothing to rank by
    return False
  best_dir = os.path.join(eval_dir, BEST_DIR)
  best_metrics = os.path.join(best_dir, "metrics.json")
  if os.path.exists(best_metrics):
    with open(best_metrics) as f:
      if json.load(f)["mAP"] >= result["mAP"]:
        return False
  staging = best_dir + ".tmp"
  shutil.rmtree(staging, ignore_errors=True)
  os.makedirs(staging)
  name = os.path.basename(prefix)
  try:
    for path in tf.io.gfile.glob(prefix + ".*"):
      shutil.copy2(path, staging)
  except FileNotFoundError:
    pass  # train.py deleted it meanwhile (max_to_keep): caught just below
  copied = os.listdir(staging)
  if name + ".index" not in copied or not any(f.startswith(name + ".data-") for f in copied):
    shutil.rmtree(staging, ignore_errors=True)
    log(f"{name} was deleted before it could be copied to {BEST_DIR}/; best/ is unchanged")
    return False
  shutil.copy2(os.path.join(train_dir, run_utils.CONFIG_FILE), staging)
  with open(os.path.join(staging, "checkpoint"), "w") as f:
    f.write(f'model_checkpoint_path: "{name}"\nall_model_checkpoint_paths: "{name}"\n')
  with open(os.path.join(staging, "metrics.json"), "w") as f:
    json.dump(result, f, indent=1)
  old = best_dir + ".old"
  if os.path.exists(best_dir):
    os.replace(best_dir, old)
  os.replace(staging, best_dir)
  shutil.rmtree(old, ignore_errors=True)
  return True


def evaluate_checkpoint(model, predict, prefix, eval_config, model_config, service=None):
  """Restores `prefix`, scores the eval set, and returns (result dict, scores, labels).
  service: an input_service.Service to decode on (each pass a job of its own), or None."""
  step = run_utils.restore_model(model, prefix, use_ema=True)
  dataset = build_dataset(model_config, "eval", file_spec=eval_config.input_tfrecord_file,
                          service=service)
  start = time.time()
  scores, labels, loss = score_dataset(predict, dataset)
  result = {"global_step": step, "checkpoint": os.path.basename(prefix), "loss": float(loss)}
  result.update(metrics.evaluate_scores(labels, scores, threshold=0.5, top_k=eval_config.top_k))
  result["seconds"] = round(time.time() - start, 2)
  return result, scores, labels


def report(result, scores, labels, prefix, train_dir, eval_dir, eval_config, writer,
           label_names):
  """Logs one checkpoint's result and writes it where it goes: TensorBoard, metrics.jsonl,
  best/ (if it is the best so far), and the score and label files if asked for."""
  name = os.path.basename(prefix)
  mean_ap = "n/a" if result["mAP"] is None else f"{result['mAP']:.4f}"  # None: no positives
  log(f"{name} (step {result['global_step']}): loss {result['loss']:.4f} "
      f"mAP {mean_ap} CF1 {result['CF1']:.4f} OF1 {result['OF1']:.4f} "
      f"[{result['num_images']} images, {result['seconds']:.1f} s]")
  log(metrics.format_metrics_table(result, label_names))
  write_summaries(writer, result, label_names, labels, scores)
  with open(os.path.join(eval_dir, METRICS_FILE), "a") as f:
    f.write(json.dumps(result) + "\n")
  if keep_if_best(result, prefix, eval_dir, train_dir):
    log(f"new best mAP {result['mAP']:.4f}: copied {name} to {eval_dir}/{BEST_DIR}/")
  if eval_config.score_file:
    metrics.save_scores(eval_config.score_file, scores)
  if eval_config.label_file:
    metrics.save_labels(eval_config.label_file, labels)


def checkpoints_to_evaluate(eval_config):
  """The checkpoint prefixes to evaluate: one for run_once, else each new one as it appears."""
  if eval_config.run_once:
    yield run_utils.resolve_checkpoint(eval_config.checkpoint_path
                                       or eval_config.checkpoint_dir)[0]
    return
  yield from tf.train.checkpoints_iterator(
      eval_config.checkpoint_dir, min_interval_secs=eval_config.eval_interval_secs,
      timeout=eval_config.timeout_secs or None)


def build_evaluator(prefix, eval_config, eval_dir):
  """The model and what goes with it, built on the first checkpoint (train.py has then written
  config.json): (model, predict, model_config, label names, train dir, summary writer).

  Checks the eval records' label count against the model's before anything is written, then
  saves <eval_dir>/eval_config.json: this EvalConfig, the model config and the label names.
  """
  train_dir = os.path.dirname(prefix)  # holds config.json (a train dir or a best/ copy)
  model_config = run_utils.load_model_config(train_dir)
  model_config.batch_size = eval_config.batch_size
  records.check_label_count(eval_config.input_tfrecord_file, model_config.label_count,
                            model_config.image_label_key)
  label_names = metrics.load_label_names(eval_config.label_names_file, model_config.label_count,
                                         run_dir=train_dir)
  model = MultiLabelClassificationModel(model_config)
  configs.save_configs(os.path.join(eval_dir, EVAL_CONFIG_FILE), eval=eval_config,
                       model=model_config, label_names=label_names)
  writer = tf.summary.create_file_writer(eval_dir)
  return model, predict_fn(model), model_config, label_names, train_dir, writer


def main(argv):
  eval_config = configs.EvalConfig()  # edit here, e.g. checkpoint_dir="runs/coco"
  configs.parse_overrides(argv, eval_config, usage=__doc__)
  if not eval_config.input_tfrecord_file:
    raise errors.ConfigError("set --input_tfrecord_file to the eval TFRecords")
  records.expand_file_spec(eval_config.input_tfrecord_file)  # missing records: an error now
  service = (input_service.connect(eval_config.data_service_address,
                                   eval_config.data_service_timeout_secs, log)
             if eval_config.data_service_address else None)  # a dead dispatcher: an error now
  eval_dir = eval_config.eval_dir or os.path.join(eval_config.checkpoint_dir, "eval")
  run_utils.select_devices(eval_config.gpu_id)

  model = None
  done = already_evaluated(eval_dir)
  evaluations = 0
  for prefix in checkpoints_to_evaluate(eval_config):
    name = os.path.basename(prefix)
    if name in done and not eval_config.run_once:
      continue
    if model is None:
      model, predict, model_config, label_names, train_dir, writer = build_evaluator(
          prefix, eval_config, eval_dir)
    try:
      if not eval_config.run_once and int(name.rsplit("-", 1)[-1]) < eval_config.min_global_step:
        log(f"skipping {name}: below min_global_step={eval_config.min_global_step}")
        continue
      result, scores, labels = evaluate_checkpoint(model, predict, prefix, eval_config,
                                                   model_config, service)
    except (tf.errors.OpError, FileNotFoundError, ValueError) as e:
      if tf.io.gfile.exists(prefix + ".index") and tf.io.gfile.glob(prefix + ".data-*"):
        raise  # the checkpoint is all there: a real error
      log(f"skipping {name}: it was deleted before it could be read "
          f"(train.py's max_to_keep?): {type(e).__name__}")
      continue

    report(result, scores, labels, prefix, train_dir, eval_dir, eval_config, writer, label_names)
    done.add(name)
    evaluations += 1
    if eval_config.max_evaluations and evaluations >= eval_config.max_evaluations:
      break
  log(f"evaluated {evaluations} checkpoint(s); metrics in {eval_dir}/{METRICS_FILE}")
  return 0


if __name__ == "__main__":
  errors.run(main)
