"""train.py's checkpoints on disk: saves that a full disk cannot wedge, the clean-up of what a
killed or failed save left behind, and the evaluator's watch for new checkpoints.

TensorFlow writes checkpoint <prefix> in three steps: the tensors into <prefix>_temp/ (as
part-...tempstate<n>, renamed when complete), merged into <prefix>.index and
<prefix>.data-00000-of-00001, then the `checkpoint` state file (written as
checkpoint.tmp<32 hex> and renamed). A kill or a full disk at any step leaves the pieces, which
can keep the disk full; the state file still names the last complete checkpoint, and that is
what a rerun resumes from.
"""

import glob
import math
import os
import re
import shutil
import time

import tensorflow as tf

import fileio

_STATE_TEMP = re.compile(r"^checkpoint\.tmp[0-9a-f]{32}$")  # file_io.atomic_write_string_to_file


def leftovers(train_dir):
  """What killed or failed saves left in `train_dir`, sorted: TensorFlow's <prefix>_temp/
  folders and checkpoint.tmp<hex> files, and the temp files of our own writes
  (fileio.stale_temp_files, e.g. config.json's)."""
  if not os.path.isdir(train_dir):
    return []
  found = [p for p in glob.glob(os.path.join(glob.escape(train_dir), "*_temp"))
           if os.path.isdir(p)]
  found += [os.path.join(train_dir, n) for n in os.listdir(train_dir) if _STATE_TEMP.match(n)]
  return sorted(found + fileio.stale_temp_files(train_dir))


def remove_leftovers(train_dir):
  """Removes leftovers(train_dir); returns the paths it removed. Only for the process that
  writes train_dir (train.py's chief), when no save is under way."""
  removed = leftovers(train_dir)
  for path in removed:
    if os.path.isdir(path):
      shutil.rmtree(path)
    else:
      fileio.discard(path)
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
    if not fileio.is_no_space(e):
      raise
  directory = manager.directory
  prefix = os.path.join(directory, f"ckpt-{number}")  # CheckpointManager's default name
  latest = tf.train.latest_checkpoint(directory)
  if latest != prefix:  # never recorded as complete: its pieces are no checkpoint
    for path in glob.glob(glob.escape(prefix) + ".*"):
      fileio.discard(path)
  remove_leftovers(directory)
  then = (f"; the last good checkpoint, {os.path.basename(latest)}, is intact: free some space "
          "and rerun to resume from it" if latest else
          "; there is no checkpoint yet: free some space and rerun")
  raise fileio.no_space_error(directory, size(manager.checkpoint), "a checkpoint", then)


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
