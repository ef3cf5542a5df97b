"""Checkpoints, all of them: building, saving (so that a full disk cannot wedge it), cleaning up
what a killed or failed save left, the evaluator's watch for new ones, finding and restoring
(the newest that restores, past damaged ones).

TensorFlow writes checkpoint <prefix> in three steps: the tensors into <prefix>_temp/ (as
part-...tempstate<n>, renamed when complete), merged into <prefix>.index and
<prefix>.data-00000-of-00001, then the `checkpoint` state file (written as
checkpoint.tmp<32 hex> and renamed). A kill or a full disk at any step leaves the pieces, which
can keep the disk full; the state file still names the last complete checkpoint, and that is
what a rerun resumes from.
"""

import glob
import itertools
import math
import os
import re
import shutil
import time

import tensorflow as tf
from google.protobuf import text_format

from multilabel import errors, files
from multilabel.training.optimizers import ExponentialMovingAverage

_STATE_TEMP = re.compile(r"^checkpoint\.tmp[0-9a-f]{32}$")  # file_io.atomic_write_string_to_file


def leftovers(train_dir):
  """What killed or failed saves left in `train_dir`, sorted: TensorFlow's <prefix>_temp/
  folders and checkpoint.tmp<hex> files, and the temp files of our own writes
  (files.stale_temp_files, e.g. config.json's)."""
  if not os.path.isdir(train_dir):
    return []
  found = [p for p in glob.glob(os.path.join(glob.escape(train_dir), "*_temp"))
           if os.path.isdir(p)]
  found += [os.path.join(train_dir, n) for n in os.listdir(train_dir) if _STATE_TEMP.match(n)]
  return sorted(found + files.stale_temp_files(train_dir))


def remove_leftovers(train_dir):
  """Removes leftovers(train_dir); returns the paths it removed. Only for the process that
  writes train_dir (train.py's chief), when no save is under way."""
  removed = leftovers(train_dir)
  for path in removed:
    if os.path.isdir(path):
      shutil.rmtree(path)
    else:
      files.discard(path)
  return removed


def size(checkpoint):
  """Bytes of the variables `checkpoint` (a tf.train.Checkpoint) saves: about its files' size.

  Counts the Keras optimiser's variables too (Adam's two slots per weight: two thirds of a
  checkpoint), which are keras.Variable objects, not tf.Variable ones."""
  variables = {id(v): v for v in tf.train.TrackableView(checkpoint).descendants()
               if isinstance(v, tf.Variable) or isinstance(getattr(v, "value", None), tf.Variable)}
  return sum(math.prod(v.shape) * tf.as_dtype(v.dtype).size for v in variables.values())


def save(manager, number):
  """manager.save(checkpoint_number=number); returns the new checkpoint's prefix.

  On a full disk it removes what the save wrote (the checkpoint's pieces, its _temp/ folder, a
  state temp file) and raises one DataError naming the folder, the checkpoint's size and the
  space free, and the last good checkpoint, which the state file still names.
  """
  try:
    return manager.save(checkpoint_number=number)
  except (tf.errors.OpError, OSError) as e:
    if not files.is_no_space(e):
      raise
  directory = manager.directory
  prefix = os.path.join(directory, f"ckpt-{number}")  # CheckpointManager's default name
  latest = tf.train.latest_checkpoint(directory)
  if latest != prefix:  # never recorded as complete: its pieces are no checkpoint
    for path in glob.glob(glob.escape(prefix) + ".*"):
      files.discard(path)
  remove_leftovers(directory)
  then = (f"; the last good checkpoint, {os.path.basename(latest)}, is intact: free some space "
          "and rerun to resume from it" if latest else
          "; there is no checkpoint yet: free some space and rerun")
  raise files.no_space_error(directory, size(manager.checkpoint), "a checkpoint", then)


def number(prefix):
  """.../ckpt-1500 -> 1500."""
  return int(prefix.rsplit("-", 1)[-1])


def new_checkpoints(directory, interval_secs, timeout_secs=0):
  """Yields each checkpoint that directory's `checkpoint` state file lists, oldest first, once,
  as it appears: every one listed, where tf.train.checkpoints_iterator yields only the latest at
  each look, so that checkpoints saved faster than the evaluator scores them are not passed over.

  Looks again right after the work on what it yielded, else every interval_secs; stops once
  timeout_secs have passed without a new checkpoint (0 = never). A checkpoint that train.py's
  max_to_keep deletes before the evaluator reads it is still yielded (it is named then); one
  saved and deleted between two looks cannot be seen.
  """
  seen, last_new = set(), time.time()
  while True:
    state = tf.train.get_checkpoint_state(directory)
    listed = state.all_model_checkpoint_paths if state else []
    fresh = sorted((p for p in listed if p not in seen), key=number)
    for prefix in fresh:
      seen.add(prefix)
      yield prefix
    if fresh:
      last_new = time.time()
      continue
    if timeout_secs and time.time() - last_new >= timeout_secs:
      return
    time.sleep(interval_secs)


# ---------------------------------------------------------------------------------------------
# Building, finding and restoring them.

def make_checkpoint(model, optimizer=None, ema=None):
  """The tf.train.Checkpoint train.py saves: model, optimiser, global step and EMA."""
  objects = {"model": model}
  if optimizer is not None:
    objects["optimizer"] = optimizer
    objects["global_step"] = optimizer.iterations  # a stable key for evaluate.py to read
  if ema is not None:
    objects["ema"] = ema
  return tf.train.Checkpoint(**objects)


def resolve_checkpoint(path):
  """A train dir (its latest), an eval best/ dir, or a checkpoint prefix -> (prefix, train dir).

  The train dir is where config.json lives: the directory itself, or the best/ copy (which holds
  its own config.json), or the prefix's directory.
  """
  if os.path.isdir(path):
    prefix = tf.train.latest_checkpoint(path)
    if prefix is None:
      raise errors.MissingFileError(f"{path}: no checkpoint in this directory")
    return prefix, path
  if tf.io.gfile.exists(path + ".index"):
    return path, os.path.dirname(path)
  raise errors.MissingFileError(f"{path}: neither a checkpoint directory nor a checkpoint prefix")


class BadCheckpoint(errors.DataError):
  """A checkpoint that cannot be used: damaged (checkpoint_damage), or whose weights give NaN or
  inf scores (non_finite_scores). A watching evaluator names it and goes on to the next."""


# What reading a damaged checkpoint raises: TensorFlow's errors ("not an sstable (bad magic
# number)", "Checksum does not match"), and IndexError ("Read less bytes than requested") for a
# cut-off data file.
DAMAGE_ERRORS = (tf.errors.OpError, IndexError)


def checkpoint_damage(prefix, error, then=""):
  """The one line for `error`, one of DAMAGE_ERRORS met restoring `prefix`: a BadCheckpoint
  naming the checkpoint, with TensorFlow's own words. `then` ends the line (what to do)."""
  return BadCheckpoint(f"{prefix}: this checkpoint cannot be restored, its files are damaged or "
                       f"incomplete ({errors.tf_message(error)}){then}")


def non_finite_scores(prefix, bad_images, total, then=""):
  """The one line for a checkpoint whose weights give NaN or inf scores to `bad_images` of
  `total` images: a BadCheckpoint naming it (train.py saved the weights of a diverged run)."""
  return BadCheckpoint(f"{prefix}: its scores are not finite (NaN or inf) for {bad_images} of "
                       f"{total} images: the checkpoint holds the NaN or inf weights of a run "
                       f"that diverged{then}")


def use_earlier(prefix):
  """'; use <the newest checkpoint listed before prefix> instead' (what to do about a bad
  checkpoint), or '' when its folder lists none before it."""
  numbered = lambda path: re.search(r"-\d+$", path)  # CheckpointManager's names
  state = tf.train.get_checkpoint_state(os.path.dirname(prefix))
  if not numbered(prefix) or not state:
    return ""
  earlier = [p for p in state.all_model_checkpoint_paths
             if numbered(p) and number(p) < number(prefix)]
  return f"; use {max(earlier, key=number)} instead" if earlier else ""


def listed(directory):
  """The checkpoints directory's `checkpoint` state file lists, oldest first (the order they
  were saved in), the latest last; [] if there is none."""
  state = tf.train.get_checkpoint_state(directory)
  if not state or not state.model_checkpoint_path:
    return []
  paths = [p for p in state.all_model_checkpoint_paths if p != state.model_checkpoint_path]
  return paths + [state.model_checkpoint_path]


def describe_restore_error(prefix, error):
  """One line naming the checkpoint and why it would not restore: its files missing, damaged
  (cut off, or bytes changed: a checksum or an sstable's magic number), or not this model's."""
  if isinstance(error, tf.errors.NotFoundError):
    why = "its files are missing"
  elif isinstance(error, (ValueError, AssertionError)):
    why = "it does not fit this model"
  else:  # DataLossError, an OpError on a bad .index, IndexError on a cut .data file
    why = "its files are damaged"
  return f"{prefix}: {why} ({errors.tf_message(error)})"


# What a damaged, missing or foreign checkpoint raises on restore (see describe_restore_error).
RESTORE_ERRORS = (tf.errors.OpError, IndexError, ValueError, AssertionError)


def restore_newest_good(checkpoint, directory):
  """Restores into `checkpoint` (a tf.train.Checkpoint) the newest checkpoint that directory's
  state file lists and that restores, trying the next-newest after each failure.

  Returns (the restored prefix, or None if none restored; [(prefix, describe_restore_error
  line)] for each newer one it skipped). Every object of `checkpoint` must be in the one it
  restores (assert_existing_objects_matched), so the one that restores overwrites whatever a
  failed try before it may have assigned.
  """
  skipped = []
  for prefix in reversed(listed(directory)):
    try:
      checkpoint.restore(prefix).assert_existing_objects_matched()
    except RESTORE_ERRORS as e:
      skipped.append((prefix, describe_restore_error(prefix, e)))
      continue
    return prefix, skipped
  return None, skipped


def forget(directory, prefixes):
  """Rewrites directory's state file without `prefixes` (their files stay), so that the newest
  one left is the latest again: what CheckpointManager, evaluate.py and a rerun then see."""
  state = tf.train.get_checkpoint_state(directory)
  kept = [(p, t) for p, t in itertools.zip_longest(state.all_model_checkpoint_paths,
                                                    state.all_model_checkpoint_timestamps)
          if p not in prefixes]
  del state.all_model_checkpoint_paths[:], state.all_model_checkpoint_timestamps[:]
  # relative, as CheckpointManager writes them: a train_dir may be moved, or given relatively
  state.all_model_checkpoint_paths.extend(os.path.basename(p) for p, _ in kept)
  if all(t is not None for _, t in kept):
    state.all_model_checkpoint_timestamps.extend(t for _, t in kept)
  state.model_checkpoint_path = state.all_model_checkpoint_paths[-1] if kept else ""
  files.write_text(os.path.join(directory, "checkpoint"), text_format.MessageToString(state))


def restore_model(model, prefix, use_ema):
  """Restores the model's weights from a train.py checkpoint; the EMA weights if there are any
  and `use_ema`. Returns the checkpoint's global step (or -1 if it has none). A damaged
  checkpoint raises one of DAMAGE_ERRORS, which the callers turn into checkpoint_damage."""
  reader = tf.train.load_checkpoint(prefix)
  ema = (ExponentialMovingAverage(model.trainable_variables, 0.0)
         if use_ema and has_ema(prefix) else None)
  make_checkpoint(model, ema=ema).restore(prefix).expect_partial()
  if ema is not None:
    ema.copy_to_model()
  key = "global_step/.ATTRIBUTES/VARIABLE_VALUE"
  return int(reader.get_tensor(key)) if reader.has_tensor(key) else -1


def has_ema(prefix):
  """True if the checkpoint holds a moving average of the weights (TrainConfig.ema_decay)."""
  return any(k.startswith("ema/") for k in
             tf.train.load_checkpoint(prefix).get_variable_to_shape_map())


def is_training_checkpoint(prefix):
  """True for a train.py (object-graph) checkpoint, False for a name-based (slim / TF1) one."""
  reader = tf.train.load_checkpoint(prefix)
  return reader.has_tensor("_CHECKPOINTABLE_OBJECT_GRAPH")
