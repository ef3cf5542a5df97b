"""multilabel/checkpoints.py: a checkpoint's size as its files hold it, what killed saves leave and
its removal, restoring the raw or the moving-average weights, resolving a train dir or a prefix,
and the evaluator's watch for new checkpoints. Oracles: the files' own sizes, and names and values
set by hand. (The size test is from tests/test_train.py; train.py's and evaluate.py's tests run
the rest end to end.)"""
import glob
import os

import pytest
import tensorflow as tf

import configs
from multilabel import checkpoints, errors
from multilabel.training import optimizers


def test_checkpoint_size_counts_the_optimiser_slots_as_the_files_hold_them(tmp_path):
  # The full-disk line names the space a checkpoint needs: Adam's slots are two thirds of it.
  weights = tf.Variable(tf.zeros([100_000]))
  optimizer = optimizers.make_optimizer(configs.TrainConfig(), [weights])  # Adam, as train.py's
  checkpoint = tf.train.Checkpoint(weights=weights, optimizer=optimizer)
  prefix = checkpoint.save(str(tmp_path / "ckpt"))
  on_disk = sum(os.path.getsize(p) for p in glob.glob(prefix + ".data-*"))
  assert on_disk > 3 * 400_000
  assert abs(checkpoints.size(checkpoint) - on_disk) < 0.01 * on_disk


def test_leftovers_are_what_killed_saves_left_and_remove_leftovers_removes_only_them(tmp_path):
  """By hand: TensorFlow's <prefix>_temp/ folders and checkpoint.tmp<32 hex> files, and our own
  writes' temp files, are leftovers; checkpoints, the state file and look-alikes are not."""
  ours = ["ckpt-7_temp", "checkpoint.tmp" + "0123456789abcdef" * 2,
          ".config.json.4242-0123abcd.tmp"]
  others = ["checkpoint", "ckpt-6.index", "ckpt-6.data-00000-of-00001", "config.json",
            "notes_temp", "checkpoint.tmp0123", "checkpoint.tmp" + "0123456789abcdeg" * 2]
  (tmp_path / ours[0]).mkdir()
  (tmp_path / ours[0] / "part-00000-of-00001.data-00000-of-00001.tempstate3").write_bytes(b"\0")
  for name in ours[1:] + others:
    (tmp_path / name).write_text("x")
  assert checkpoints.leftovers(str(tmp_path)) == sorted(str(tmp_path / n) for n in ours)
  assert checkpoints.remove_leftovers(str(tmp_path)) == sorted(str(tmp_path / n) for n in ours)
  assert sorted(os.listdir(tmp_path)) == sorted(others)
  assert checkpoints.leftovers(str(tmp_path)) == []
  assert checkpoints.leftovers(str(tmp_path / "no_such_dir")) == []


class TwoVariables(tf.Module):
  """A model as the checkpoints see one: its trainable variables, tracked."""

  def __init__(self):
    super().__init__()
    self.w = tf.Variable([1.0, 2.0], name="w")
    self.b = tf.Variable([[3.0]], name="b")


def test_restore_model_gives_the_raw_or_the_moving_average_weights_and_the_step(tmp_path):
  """A checkpoint made as train.py makes one (make_checkpoint: model, optimizer, EMA), with shadows
  set by hand: use_ema picks them, else the raw weights; the step is the optimizer's iterations."""
  model = TwoVariables()
  optimizer = optimizers.make_optimizer(configs.TrainConfig(), model.trainable_variables)
  optimizer.iterations.assign(42)
  ema = optimizers.ExponentialMovingAverage(model.trainable_variables, 0.9)
  for shadow, v in zip(ema.shadows, model.trainable_variables):
    shadow.assign(v * 10.0)
  prefix = checkpoints.make_checkpoint(model, optimizer, ema).write(str(tmp_path / "ckpt-42"))
  plain = checkpoints.make_checkpoint(model, optimizer).write(str(tmp_path / "plain-42"))
  assert checkpoints.has_ema(prefix) and not checkpoints.has_ema(plain)
  assert checkpoints.is_training_checkpoint(prefix)
  for use_ema, want in ((False, ([1.0, 2.0], [[3.0]])), (True, ([10.0, 20.0], [[30.0]]))):
    restored = TwoVariables()
    for v in restored.trainable_variables:
      v.assign(tf.zeros_like(v))
    assert checkpoints.restore_model(restored, prefix, use_ema) == 42
    got = {v.name: v.numpy().tolist() for v in restored.trainable_variables}
    assert got == {"w:0": want[0], "b:0": want[1]}
  assert checkpoints.number(prefix) == 42


def test_resolve_checkpoint_takes_a_train_dir_a_best_dir_or_a_prefix(tmp_path):
  model = TwoVariables()
  manager = tf.train.CheckpointManager(checkpoints.make_checkpoint(model), str(tmp_path / "train"),
                                       max_to_keep=3)
  first, latest = manager.save(checkpoint_number=1), manager.save(checkpoint_number=2)
  assert checkpoints.resolve_checkpoint(str(tmp_path / "train")) == (latest,
                                                                     str(tmp_path / "train"))
  assert checkpoints.resolve_checkpoint(first) == (first, str(tmp_path / "train"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(errors.MissingFileError, match="empty: no checkpoint in this directory"):
    checkpoints.resolve_checkpoint(str(tmp_path / "empty"))
  with pytest.raises(errors.MissingFileError,
                     match="ckpt-9: neither a checkpoint directory nor a checkpoint prefix"):
    checkpoints.resolve_checkpoint(str(tmp_path / "train" / "ckpt-9"))


def test_new_checkpoints_yields_every_listed_checkpoint_once_oldest_first(tmp_path):
  """Three saves before the first look, one after: each is yielded once, in step order (the
  state file lists them), and the watch ends after timeout_secs without a new one."""
  model = TwoVariables()
  manager = tf.train.CheckpointManager(checkpoints.make_checkpoint(model), str(tmp_path),
                                       max_to_keep=10)
  saved = [manager.save(checkpoint_number=n) for n in (10, 20, 30)]
  watch = checkpoints.new_checkpoints(str(tmp_path), interval_secs=0.01, timeout_secs=0.5)
  got = [next(watch) for _ in range(3)]
  saved.append(manager.save(checkpoint_number=40))
  got += list(watch)
  assert got == saved == [str(tmp_path / f"ckpt-{n}") for n in (10, 20, 30, 40)]
