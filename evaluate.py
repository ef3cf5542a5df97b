"""Evaluates each new checkpoint of a training run: loss, mAP, per-label AP, CP/CR/CF1/OP/OR/OF1.

Runs beside train.py (on the CPU by default, so it doesn't take the GPU from training), rebuilds
the model from the train dir's config.json, evaluates every checkpoint train.py lists (oldest
first), and keeps the best by mAP in <eval_dir>/best/, written from the weights it evaluated (so
train.py's max_to_keep cannot take it away; --run_once scores without choosing, and writes no
best/). TensorBoard gets each label's worst mistakes as pictures (--mistake_images). metrics.jsonl records a checkpoint last, once its
best/ is written: a restarted evaluator evaluates again what it had not finished. A damaged
checkpoint, or one whose weights give NaN scores, is named in one line and skipped (with
--run_once, the error). Ctrl-C or SIGTERM: exit status 130 or 143, nothing half-written.

    python evaluate.py --checkpoint_dir=runs/coco --input_tfrecord_file='data/eval-*'
    python evaluate.py --checkpoint_dir=runs/coco --input_tfrecord_file=data/eval.tfrecord \\
        --run_once=true --score_file=eval_scores.txt --label_file=eval_labels.txt
"""

import dataclasses
import json
import os
import shutil
import time

import multilabel.startup  # noqa: F401 -- first: TensorFlow's C++ start-up lines filtered

import numpy as np
import tensorflow as tf

import configs
from multi_label_classification_model import MultiLabelClassificationModel, load_model_config
from multilabel import (arguments, checkpoints, config_files, errors, files, metrics, runtime,
                        summaries, textfiles)
from multilabel.data import input_service, records
from multilabel.evaluation import (BEST_DIR, METRICS_FILE, already_evaluated, append_record,
                                   encoded_images, keep_if_best, recover_best, score_dataset)
from multilabel.data.preprocessing import build_dataset
from multilabel.runtime import log
from multilabel.training.losses import per_example_loss


def predict_fn(model):
  @tf.function
  def predict(images, labels):
    logits, end_points = model(images, training=False)
    return end_points["predictions"], per_example_loss(logits, labels)
  return predict


def evaluate_checkpoint(evaluator, prefix, step, eval_config, service=None):
  """Scores the eval set with the weights restored from `prefix` (at global step `step`);
  returns (result dict, scores, labels). Weights that give a NaN or inf score are a
  BadCheckpoint.
  service: an input_service.Service to decode on (each pass a job of its own), or None."""
  dataset = build_dataset(evaluator.model_config, "eval", file_spec=eval_config.input_tfrecord_file,
                          batch_size=eval_config.batch_size, service=service)
  start = time.time()
  try:
    evaluator.paths = []  # this pass's
    scores, labels, loss = score_dataset(evaluator.predict, dataset, evaluator.paths)
  except tf.errors.DataLossError as e:  # a cut-off or corrupt record: which, and what to do
    raise records.damage_error(records.expand_file_spec(eval_config.input_tfrecord_file), e,
                               f"; {os.path.basename(prefix)} was not evaluated") from None
  non_finite = np.count_nonzero(~np.isfinite(scores).all(axis=1))
  if non_finite:  # before the metrics, which would name no checkpoint
    raise checkpoints.non_finite_scores(prefix, non_finite, len(scores),
                                        next_step(prefix, eval_config.run_once))
  result = {"global_step": step, "checkpoint": os.path.basename(prefix), "loss": loss}
  result.update(metrics.evaluate_scores(labels, scores, threshold=0.5, top_k=eval_config.top_k))
  result["seconds"] = round(time.time() - start, 2)
  return result, scores, labels


def write_mistakes(step, scores, labels, evaluator, eval_config):
  """TensorBoard's mistakes/<label>/...: the mistake_images highest-scored negatives and
  lowest-scored positives of each label, read from the records in one pass."""
  found = summaries.mistake_indices(scores, labels, eval_config.mistake_images)
  chosen = {int(i) for pair in found.values() for side in pair for i in side}
  by_path = encoded_images(records.expand_file_spec(eval_config.input_tfrecord_file),
                           {evaluator.paths[i] for i in chosen}, evaluator.model_config)
  images = {i: by_path[evaluator.paths[i]] for i in chosen}
  names = [files.printable_name(p) for p in evaluator.paths]
  summaries.write_mistakes(evaluator.writer, step, evaluator.label_names, found, scores, names,
                           images)


@dataclasses.dataclass
class Evaluator:
  """What the evaluator builds once, on the first checkpoint it reads."""
  model: MultiLabelClassificationModel
  predict: object  # predict_fn(model)
  model_config: configs.ModelConfig
  label_names: list
  train_dir: str  # holds config.json: a train dir, or a best/ copy
  eval_dir: str
  writer: object = None  # the summary writer, opened once a checkpoint has been read
  paths: list = dataclasses.field(default_factory=list)  # the last pass's image paths (bytes)


def report(result, scores, labels, prefix, evaluator, eval_config):
  """Logs one checkpoint's result and writes it where it goes: TensorBoard, best/ (if it is the
  best so far, from the evaluator's model's weights), the score and label files if asked for, and
  last metrics.jsonl."""
  name, eval_dir, label_names = os.path.basename(prefix), evaluator.eval_dir, evaluator.label_names
  mean_ap = "n/a" if result["mAP"] is None else f"{result['mAP']:.4f}"  # None: no positives
  loss = "n/a" if result["loss"] is None else f"{result['loss']:.4f}"  # None: nothing known
  log(f"{name} (step {result['global_step']}): loss {loss} "
      f"mAP {mean_ap} CF1 {result['CF1']:.4f} OF1 {result['OF1']:.4f} "
      f"[{result['num_images']} images, {result['seconds']:.1f} s]")
  log(metrics.format_metrics_table(result, label_names))
  summaries.write_summaries(evaluator.writer, result, label_names, labels, scores)
  if eval_config.mistake_images:
    write_mistakes(result["global_step"], scores, labels, evaluator, eval_config)
  # Scoring a split (run_once) is not choosing a checkpoint: best/ is for a watched run.
  if not eval_config.run_once and keep_if_best(result, evaluator.model, prefix, eval_dir,
                                               evaluator.train_dir):
    gone = "" if tf.io.gfile.exists(prefix + ".index") else (
        f" (train.py has deleted {name} since it was read)")
    log(f"new best mAP {result['mAP']:.4f}: wrote {name}'s weights, as evaluated, to "
        f"{eval_dir}/{BEST_DIR}/{gone}")
  if eval_config.score_file:
    textfiles.save_scores(eval_config.score_file, scores)
  if eval_config.label_file:
    textfiles.save_labels(eval_config.label_file, labels)
  evaluator.writer.flush()  # so that a stop right after loses none of it
  # Last: a checkpoint is recorded only when all of the above is done, so that an evaluator
  # stopped before (best/ half-written) evaluates it again when restarted.
  append_record(os.path.join(eval_dir, METRICS_FILE), result)


def checkpoints_to_evaluate(eval_config):
  """The checkpoint prefixes to evaluate: one for run_once, else each new one as it appears."""
  if eval_config.run_once:
    yield checkpoints.resolve_checkpoint(eval_config.checkpoint_path
                                       or eval_config.checkpoint_dir)[0]
    return
  yield from checkpoints.new_checkpoints(eval_config.checkpoint_dir,
                                         eval_config.eval_interval_secs, eval_config.timeout_secs)


def build_evaluator(prefix, eval_config, eval_dir):
  """The Evaluator, built on the first checkpoint (train.py has then written config.json).
  Checks the eval records' label count against the model's; writes nothing."""
  train_dir = os.path.dirname(prefix)  # holds config.json (a train dir or a best/ copy)
  model_config = load_model_config(train_dir)
  records.check_label_count(eval_config.input_tfrecord_file, model_config.label_count,
                            model_config.image_label_key)
  label_names = textfiles.load_label_names(eval_config.label_names_file, model_config.label_count,
                                           run_dir=train_dir)
  model = MultiLabelClassificationModel(model_config)
  return Evaluator(model, predict_fn(model), model_config, label_names, train_dir, eval_dir)


def open_eval_dir(evaluator, eval_config):
  """Saves <eval_dir>/eval_config.json (this EvalConfig, the model config and the label names)
  and opens the summary writer: once a checkpoint has been read, so that a run that reads none
  leaves no eval dir behind."""
  config_files.save_configs(os.path.join(evaluator.eval_dir, config_files.EVAL_CONFIG_FILE), eval_config,
                        evaluator.model_config, label_names=evaluator.label_names)
  evaluator.writer = tf.summary.create_file_writer(evaluator.eval_dir)


def restore(model, prefix, run_once):
  """Restores `prefix` into `model` (its moving average, if any): its global step, or None if
  train.py's max_to_keep deleted it first (said in one line; an error for run_once, which has
  nothing else to evaluate). A checkpoint whose files are all there but unreadable is a
  BadCheckpoint."""
  try:
    return checkpoints.restore_model(model, prefix, use_ema=True)
  except (*checkpoints.DAMAGE_ERRORS, FileNotFoundError, ValueError) as e:
    if tf.io.gfile.exists(prefix + ".index") and tf.io.gfile.glob(prefix + ".data-*"):
      if isinstance(e, checkpoints.DAMAGE_ERRORS):  # cut off or corrupt
        raise checkpoints.checkpoint_damage(prefix, e, next_step(prefix, run_once)) from None
      raise  # the checkpoint is all there and reads: a real error
    if run_once:
      raise errors.MissingFileError(f"{prefix}: deleted (or never complete) before it could be "
                                    f"read ({type(e).__name__}); nothing was evaluated") from None
    log(f"skipping {os.path.basename(prefix)}: it was deleted before it could be read "
        f"(train.py's max_to_keep?): {type(e).__name__}")
    return None


def next_step(prefix, run_once):
  """How a BadCheckpoint's line ends: what to evaluate instead (run_once), or that the watch goes
  on."""
  return checkpoints.use_earlier(prefix) if run_once else "; going on to the next one"


def evaluate_or_skip(evaluator, prefix, eval_config, service):
  """Restores and evaluates `prefix`: (result, scores, labels), or None if it is skipped: deleted
  before it could be read, or a BadCheckpoint (damaged, or non-finite scores), which a watching
  evaluator names in one line and passes over (not recorded: a restart tries it again)."""
  try:
    step = restore(evaluator.model, prefix, eval_config.run_once)
    if step is None:
      return None
    if evaluator.writer is None:
      open_eval_dir(evaluator, eval_config)
    return evaluate_checkpoint(evaluator, prefix, step, eval_config, service)
  except checkpoints.BadCheckpoint as e:
    if eval_config.run_once:
      raise
    log(f"skipping {os.path.basename(prefix)}: {e}")
    return None


def check_output_folders(eval_config, eval_dir):
  """A read-only eval_dir, or score or label file folder, is one line now, before any work."""
  files.check_writable(eval_dir, "eval_dir")
  for flag in ("score_file", "label_file"):
    if getattr(eval_config, flag):
      files.check_writable(os.path.dirname(os.path.abspath(getattr(eval_config, flag))), flag)


def watch(eval_config, eval_dir, service, stop, recorded):
  """Evaluates each checkpoint to evaluate (checkpoints_to_evaluate) that metrics.jsonl does not
  record yet, appending its name to `recorded` once reported. A stop signal ends the run at once
  (no half-written output: the writes are atomic), except during report(), which it lets end, so
  that a checkpoint's outputs are all written, or, not recorded, written again at a restart."""
  evaluator = None
  recover_best(eval_dir)
  done = already_evaluated(eval_dir)
  for prefix in checkpoints_to_evaluate(eval_config):
    name = os.path.basename(prefix)
    if name in done and not eval_config.run_once:
      continue
    if not eval_config.run_once and checkpoints.number(prefix) < eval_config.min_global_step:
      log(f"skipping {name}: below min_global_step={eval_config.min_global_step}")
      continue
    if evaluator is None:
      evaluator = build_evaluator(prefix, eval_config, eval_dir)
    evaluated = evaluate_or_skip(evaluator, prefix, eval_config, service)
    if evaluated is None:
      continue
    with stop.deferred():
      report(*evaluated, prefix, evaluator, eval_config)
    done.add(name)
    recorded.append(name)
    if eval_config.max_evaluations and len(recorded) >= eval_config.max_evaluations:
      return


def main(argv):
  eval_config = configs.EvalConfig()  # edit here, e.g. checkpoint_dir="runs/coco"
  arguments.parse_overrides(argv, eval_config, usage=__doc__)
  eval_dir = eval_config.eval_dir or os.path.join(eval_config.checkpoint_dir, "eval")
  check_output_folders(eval_config, eval_dir)
  records.expand_file_spec(eval_config.input_tfrecord_file)  # missing records: an error now
  recorded = []  # the checkpoints this run evaluated and recorded
  metrics_path = os.path.join(eval_dir, METRICS_FILE)
  with runtime.StopSignals(lambda: f"{len(recorded)} checkpoint(s) evaluated and recorded in "
                           f"{metrics_path} with all their outputs; nothing is half-written"
                           ) as stop:
    service = (input_service.connect(eval_config.data_service_address,
                                     eval_config.data_service_timeout_secs, log)
               if eval_config.data_service_address else None)  # a dead dispatcher: an error now
    runtime.select_devices(eval_config.gpu_id)
    watch(eval_config, eval_dir, service, stop, recorded)
  log(f"evaluated {len(recorded)} checkpoint(s); metrics in {metrics_path}")
  return 0


if __name__ == "__main__":
  errors.run(main)
