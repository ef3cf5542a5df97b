"""Evaluates each new checkpoint of a training run: loss, mAP, per-label AP, CP/CR/CF1/OP/OR/OF1.

Runs beside train.py (on the CPU by default, so it doesn't take the GPU from training), rebuilds
the model from the train dir's config.json, evaluates every checkpoint train.py lists (oldest
first), and keeps the best by mAP in <eval_dir>/best/, written from the weights it evaluated (so
train.py's max_to_keep cannot take it away). metrics.jsonl records a checkpoint last, once its
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

import numpy as np
import tensorflow as tf

import configs
from multi_label_classification_model import MultiLabelClassificationModel, load_model_config
from multilabel import (arguments, checkpoints, config_files, errors, files, metrics, runtime,
                        summaries, textfiles)
from multilabel.data import input_service, records
from multilabel.data.preprocessing import build_dataset
from multilabel.runtime import log
from multilabel.training.losses import per_example_loss

METRICS_FILE = "metrics.jsonl"
BEST_DIR = "best"


def predict_fn(model):
  @tf.function
  def predict(images, labels):
    logits, end_points = model(images, training=False)
    return end_points["predictions"], per_example_loss(logits, labels)
  return predict


def score_dataset(predict, dataset):
  """One pass: (scores [N, L], labels [N, L], mean classification loss over the known entries;
  with no -1 label that is the plain mean; None when no entry is known)."""
  scores, labels, losses = [], [], []
  progress = runtime.Progress(0, "eval images")
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
  # (None, not NaN, when nothing is known: metrics.jsonl is strict JSON)
  loss = float(np.concatenate(losses).mean() * (labels.size / known)) if known else None
  return np.concatenate(scores), labels, loss


def already_evaluated(eval_dir):
  """The checkpoints metrics.jsonl records. A line that is no record (one cut short when the
  evaluator was killed mid-append) is ignored: with a note while it is the last line, the start
  after the kill, which evaluates its checkpoint again (append_record puts that record on a line
  of its own); silently once records follow it."""
  path = os.path.join(eval_dir, METRICS_FILE)
  if not os.path.exists(path):
    return set()
  done, bad = set(), None
  with open(path) as f:
    for line_number, line in enumerate(f, 1):
      try:
        done.add(json.loads(line)["checkpoint"])
        bad = None
      except (ValueError, KeyError):
        bad = line_number if line.strip() else bad
  if bad:
    log(f"note: {path}:{bad}: not a metrics record; ignored (cut short when the evaluator was "
        "stopped?); its checkpoint is evaluated again")
  return done


def recover_best(eval_dir):
  """Puts right what a kill during keep_if_best's two renames left: best.old/ without best/ goes
  back to best/ (the new best's checkpoint is evaluated again, since metrics.jsonl does not
  record it yet); a best.old/ beside best/ and a half-built best.tmp/ are removed."""
  best_dir = os.path.join(eval_dir, BEST_DIR)
  if os.path.isdir(best_dir + ".old"):
    if os.path.isdir(best_dir):
      shutil.rmtree(best_dir + ".old")
    else:
      os.replace(best_dir + ".old", best_dir)
      log(f"restored {best_dir} from {best_dir}.old: the evaluator was stopped while replacing it")
  shutil.rmtree(best_dir + ".tmp", ignore_errors=True)


def keep_if_best(result, model, prefix, eval_dir, train_dir):
  """Writes the weights just evaluated to <eval_dir>/best/ if their mAP is the best so far, with
  config.json and the metrics. Returns True if it did.

  The weights come from `model`, as the evaluator scored them (the moving average if the run
  kept one), in a tf.train.Checkpoint of the model and the global step: not a copy of train.py's
  files, which its max_to_keep may delete meanwhile. best/ is built beside (best.tmp/) and
  renamed into place, so it is always complete (recover_best covers a kill between the renames).
  """
  if result["mAP"] is None:  # no label has positives: nothing to rank by
    return False
  best_dir = os.path.join(eval_dir, BEST_DIR)
  best_metrics = os.path.join(best_dir, "metrics.json")
  if os.path.exists(best_metrics):
    with open(best_metrics) as f:
      if json.load(f)["mAP"] >= result["mAP"]:
        return False
  staging, name = best_dir + ".tmp", os.path.basename(prefix)
  shutil.rmtree(staging, ignore_errors=True)
  weights = tf.train.Checkpoint(model=model,
                                global_step=tf.Variable(result["global_step"], dtype=tf.int64))
  try:
    os.makedirs(staging)
    weights.write(os.path.join(staging, name))
    shutil.copy2(os.path.join(train_dir, config_files.TRAIN_CONFIG_FILE), staging)
    files.write_text(os.path.join(staging, "checkpoint"), f'model_checkpoint_path: "{name}"\n'
                      f'all_model_checkpoint_paths: "{name}"\n')
    files.write_text(os.path.join(staging, "metrics.json"),
                     config_files.strict_json(result, indent=1))
  except BaseException as e:  # Ctrl-C too: no half-built best.tmp/ stays
    shutil.rmtree(staging, ignore_errors=True)
    if isinstance(e, (tf.errors.OpError, OSError)) and files.is_no_space(e):
      raise files.no_space_error(eval_dir, checkpoints.size(weights), f"{BEST_DIR}/{name}",
                                  f"; {BEST_DIR}/ is unchanged") from None
    raise
  old = best_dir + ".old"
  if os.path.exists(best_dir):
    os.replace(best_dir, old)
  os.replace(staging, best_dir)
  shutil.rmtree(old, ignore_errors=True)
  return True


def evaluate_checkpoint(evaluator, prefix, step, eval_config, service=None):
  """Scores the eval set with the weights restored from `prefix` (at global step `step`);
  returns (result dict, scores, labels). Weights that give a NaN or inf score are a
  BadCheckpoint.
  service: an input_service.Service to decode on (each pass a job of its own), or None."""
  dataset = build_dataset(evaluator.model_config, "eval", file_spec=eval_config.input_tfrecord_file,
                          batch_size=eval_config.batch_size, service=service)
  start = time.time()
  try:
    scores, labels, loss = score_dataset(evaluator.predict, dataset)
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
  if keep_if_best(result, evaluator.model, prefix, eval_dir, evaluator.train_dir):
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


def append_record(path, result):
  """Appends `result` to metrics.jsonl as one line, in one write. The line starts on a fresh
  line: after a line cut short (an evaluator killed mid-append), which already_evaluated ignores,
  a newline comes first, or this record would be glued to it and unreadable too, and its
  checkpoint evaluated again at every restart."""
  line = config_files.strict_json(result) + "\n"
  if os.path.exists(path) and os.path.getsize(path):
    with open(path, "rb") as f:
      f.seek(-1, os.SEEK_END)
      if f.read(1) != b"\n":
        line = "\n" + line
  with open(path, "a") as f:
    f.write(line)


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
