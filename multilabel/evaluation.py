"""What evaluate.py keeps between checkpoints, and its one pass over the eval records: the
scores, metrics.jsonl (a line per evaluated checkpoint, appended last), best/ (the best weights
so far, as evaluated), and the images of the mistakes it shows in TensorBoard.
"""

import json
import os
import shutil

import numpy as np
import tensorflow as tf

from multilabel import checkpoints, config_files, errors, files, runtime
from multilabel.data import records
from multilabel.runtime import log

METRICS_FILE = "metrics.jsonl"
BEST_DIR = "best"


def score_dataset(predict, dataset, paths=None):
  """One pass: (scores [N, L], labels [N, L], mean classification loss over the known entries;
  with no -1 label that is the plain mean; None when no entry is known). `paths`, a list, gets
  the N image paths, in order (the mistake images name and find them)."""
  scores, labels, losses = [], [], []
  progress = runtime.Progress(0, "eval images")
  for images, batch_labels, batch_paths in dataset:
    batch_scores, batch_losses = predict(images, batch_labels)
    scores.append(batch_scores.numpy())
    labels.append(batch_labels.numpy())
    losses.append(batch_losses.numpy())
    if paths is not None:
      paths.extend(batch_paths.numpy())
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


def encoded_images(files_, wanted, model_config):
  """{image path: the encoded image} of the paths in `wanted` (a set of bytes), read from the
  eval records in one pass that decodes no image."""
  keys = (model_config.image_path_key, model_config.image_data_key, model_config.image_label_key)
  found = {}
  for _, _, serialized, error in records.read_serialized(files_):
    if error is None:
      path, data, _ = records.parse_example(serialized, *keys)
      if path.numpy() in wanted:
        found[path.numpy()] = data.numpy()
  return found
