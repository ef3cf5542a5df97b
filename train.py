"""Trains the multi-label model from TFRecords, with checkpoints and TensorBoard summaries.

Run it beside evaluate.py, and watch both in TensorBoard:

    python train.py --label_count=35 --input_tfrecord_file='data/train-*' --train_dir=runs/coco \\
        --base_network_checkpoint=resnet_v2_50.ckpt
    python evaluate.py --checkpoint_dir=runs/coco --input_tfrecord_file='data/eval-*'
    tensorboard --logdir runs/coco

On an empty train_dir the backbone starts from `base_network_checkpoint`; on a train_dir with
checkpoints, training resumes from the latest (weights, optimiser state, global step). Ctrl-C or
SIGTERM saves a checkpoint before exiting. A full disk stops it with one line (the space a
checkpoint needs, and what is free), the last good checkpoint intact; at start-up it removes what
a killed or failed save left in train_dir. With --data_service_address=grpc://host:port
the decoding and augmentation run on tf.data service workers (data_service.py).

What else ends in one line (README.md, "When something fails midway"): a second train.py on the
same train_dir (a lock); a resume whose settings would change the variables; a loss, gradient
norm or weight that is not finite (nothing of it is saved); a tf.data service that gives no
batch for --data_service_timeout_secs (after a save). A damaged checkpoint is skipped for the
next newest.
"""

import dataclasses
import os
import shutil
import signal
import tempfile
import time

# GPU kernel launches get their own threads, so tf.data's threads don't delay them. Read when
# TensorFlow initialises the GPUs, so set before importing it; no effect on a CPU.
os.environ.setdefault("TF_GPU_THREAD_MODE", "gpu_private")
import tensorflow as tf  # noqa: E402

import configs
from multi_label_classification_model import (MultiLabelClassificationModel, head_depth,
                                              restore_backbone)
from multilabel import (arguments, checkpoints, config_files, errors, locks, runtime, summaries,
                        textfiles)
from multilabel.data import input_service, records
from multilabel.data.preprocessing import build_dataset
from multilabel.runtime import log
from multilabel.training import optimizers
from multilabel.training.pos_weight import resolve_pos_weight
from multilabel.training.train_step import (DeadUnitWatch, FiniteWatch, make_train_step,
                                             non_finite_finder)


# What a resumed run must keep: each decides which variables its checkpoints hold, or their
# shapes (the network's, the optimiser's slots, the moving average, the loss scale's), so that
# with another value they would not restore. (section, field, the value that counts, what it
# decides); head_depth 0 means label_count, so 0 and label_count are the same head.
RESUME_FIXED = (
    ("model", "backbone", lambda c: c.backbone, "the backbone's variables"),
    ("model", "label_count", lambda c: c.label_count, "the shape of the head's last layer"),
    ("model", "head_depth", head_depth, "the head's width"),
    ("model", "target_height", lambda c: c.target_height, "the head's last kernel (size / 32)"),
    ("model", "target_width", lambda c: c.target_width, "the head's last kernel (size / 32)"),
    ("model", "train_base_network", lambda c: c.train_base_network,
     "the variables the optimiser and the moving average keep state for"),
    ("model", "precision", lambda c: c.precision == "mixed_float16",
     "whether the optimiser keeps a loss scale (mixed_float16 only)"),
    ("train", "optimizer", lambda c: c.optimizer, "the optimiser's slot variables"),
    ("train", "momentum", lambda c: c.optimizer in ("Momentum", "RMSProp") and c.momentum > 0,
     "whether the optimiser keeps momentum slots (momentum 0 or not)"),
    ("train", "ema_decay", lambda c: c.ema_decay > 0,
     "whether the checkpoints hold a moving average (ema_decay 0 or not)"),
)


def check_resume_settings(model_config, train_config):
  """On a train_dir with checkpoints, before anything is built or written: a ConfigError naming
  the first RESUME_FIXED field whose value differs from its config.json's, its old and new
  values, and how to do what was meant."""
  train_dir = train_config.train_dir
  path = os.path.join(train_dir, config_files.TRAIN_CONFIG_FILE)
  if not os.path.exists(path) or not checkpoints.listed(train_dir):
    return
  now = {"model": model_config, "train": train_config}
  saved = {"model": config_files.load_config(path, configs.ModelConfig),
           "train": config_files.load_config(path, configs.TrainConfig)}
  for section, name, key, what in RESUME_FIXED:
    old, new = saved[section], now[section]
    if key(old) != key(new):
      raise errors.ConfigError(resume_refusal(train_dir, name, key, what, old, new))


def resume_refusal(train_dir, name, key, what, old, new):
  """The line that refuses a changed RESUME_FIXED field: its old and new values (as flags take
  them, and what they mean where that differs: head_depth=0 (= 4)), and what to do instead."""
  def flag(config):
    value = getattr(config, name)
    return str(value).lower() if isinstance(value, bool) else str(value)

  def shown(config):
    means = key(config)
    return flag(config) if isinstance(means, bool) or str(means) == flag(config) else (
        f"{flag(config)} (= {means})")

  if name == "train_base_network" and new.train_base_network:
    # Resuming cannot add optimiser slots and moving averages for the backbone: a new run does.
    how = ("for the second stage of a fine-tune, start a new run from this one: --train_dir=<a "
           f"new folder> --base_network_checkpoint={train_dir} --train_base_network=true (it "
           "takes this run's backbone; its head starts fresh)")
  else:
    how = (f"keep --{name}={flag(old)} to resume it, or start a new run: a new --train_dir, "
           f"with --base_network_checkpoint={train_dir} to start from this run's backbone")
  return (f"--{name}={shown(new)} cannot resume {train_dir}, whose checkpoints were made with "
          f"{name}={shown(old)}: it changes {what}, so they would not restore; {how}")


def restore_or_start(manager, model, model_config, train_dir):
  """Resumes from the newest checkpoint of train_dir that restores, else restores the backbone
  for a first run. Multi-worker runs pass the chief's train_dir, so every worker resumes alike.
  Returns True if it resumed.

  Each newer checkpoint it skips (damaged, missing) is named in one line, and the chief drops
  them from train_dir's state file, so that the one it resumed from is the latest again (their
  files stay; a save of the same step replaces them). None restoring is a DataError."""
  if checkpoints.listed(train_dir):
    prefix, skipped = checkpoints.restore_newest_good(manager.checkpoint, train_dir)
    for _, line in skipped:
      log(f"skipped {line}")
    names = ", ".join(os.path.basename(p) for p, _ in skipped)
    if prefix is None:
      raise errors.DataError(f"{train_dir}: no checkpoint restores ({names}; why: the lines "
                             "above): move them and its `checkpoint` file elsewhere to train from "
                             "the start, or give a new --train_dir")
    if skipped and manager.directory == train_dir:
      checkpoints.forget(train_dir, [p for p, _ in skipped])
      log(f"{os.path.join(train_dir, 'checkpoint')} no longer lists {names} (the files stay)")
    log(f"resumed from {prefix}; base_network_checkpoint is ignored")
    return True
  path = model_config.base_network_checkpoint
  if not path:
    log("warning: no base_network_checkpoint: training the backbone from scratch")
    return False
  if not (tf.io.gfile.exists(path) or tf.io.gfile.exists(path + ".index")):
    raise errors.MissingFileError(f"base_network_checkpoint={path!r} does not exist")
  log(restore_backbone(model, path))
  return False


def make_manager(checkpoint, save_dir, train_config):
  return tf.train.CheckpointManager(
      checkpoint, save_dir, max_to_keep=train_config.max_to_keep,
      keep_checkpoint_every_n_hours=train_config.keep_checkpoint_every_n_hours)


def train_dir_or_new_temp_dir(strategy, train_dir):
  """The chief writes train_dir; other workers write a temp dir (they must save too, since saving
  is collective) that is deleted afterwards, as TensorFlow's multi-worker guide prescribes."""
  if runtime.is_chief(strategy):
    return train_dir
  return tempfile.mkdtemp(prefix="worker_ckpt_")


class StopFlag:
  """Set by SIGINT/SIGTERM; the loop saves a checkpoint and exits at the end of the step."""

  def __init__(self):
    self.signal = None
    self._previous = {sig: signal.signal(sig, self._handle)
                      for sig in (signal.SIGINT, signal.SIGTERM)}

  def restore(self):
    """Puts the previous handlers back (main() may run inside a longer-lived process)."""
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def _handle(self, signum, _frame):
    if self.signal is not None:  # a second Ctrl-C: stop now
      raise KeyboardInterrupt
    self.signal = signum
    log(f"received {signal.Signals(signum).name}: saving a checkpoint after this step")


class WindowLog:
  """What train_loop reports: each window of log_every_n_steps steps (and the last step) as
  TensorBoard scalars and one log line (losses, learning rate, dead head units, images/s, ETA);
  a few augmented inputs every image_summary_steps, and at the first step."""

  def __init__(self, writer, strategy, model_config, train_config, learning_rate, guard):
    self.writer, self.strategy, self.learning_rate = writer, strategy, learning_rate
    self.guard = guard  # sees every step; checks them before each line: a diverged one stops
    self.model_config, self.train_config = model_config, train_config
    self.dead_units = DeadUnitWatch(head_depth(model_config))
    self.batch = model_config.batch_size * strategy.num_replicas_in_sync  # all replicas' images
    self.start, self.steps = time.time(), 0

  def step(self, step_no, scalars, activity, iterator, first):
    """Counts one step; logs at the window's end and summarises the inputs when due."""
    config, self.steps = self.train_config, self.steps + 1
    self.guard.add(step_no, scalars)
    self.dead_units.add(activity)
    if step_no % config.log_every_n_steps == 0 or step_no == config.number_of_steps:
      self.guard.check()
      self.write(step_no, scalars)
    if config.image_summary_steps > 0 and (step_no % config.image_summary_steps == 0 or first):
      with self.writer.as_default():
        summaries.summarize_images(iterator, self.strategy, step_no, self.model_config)

  def write(self, step_no, scalars):
    elapsed = time.time() - self.start
    rate = self.steps * self.batch / elapsed
    eta = (self.train_config.number_of_steps - step_no) * elapsed / self.steps
    values = {k: float(v) for k, v in scalars.items()}
    values.update(self.dead_units.read())
    values["loss/total"] = values["loss/classification"] + values["loss/regularization"]
    # the rate this step used: the optimiser reads the schedule before counting the step
    values["learning_rate"] = float(self.learning_rate(step_no - 1))
    values["images_per_sec"] = rate
    with self.writer.as_default(step=step_no):
      for name, value in values.items():
        tf.summary.scalar(name, value)
    log(f"step {step_no}: loss {values['loss/total']:.4f} "
        f"(classification {values['loss/classification']:.4f}, regularization "
        f"{values['loss/regularization']:.4f}) lr {values['learning_rate']:.2e} dead head "
        f"units {values['head/dead_units_1']:.0f}+{values['head/dead_units_2']:.0f} "
        f"{rate:.1f} images/s, eta {eta / 60:.1f} min")
    self.start, self.steps = time.time(), 0


class CheckpointTrigger:
  """Saves every save_checkpoint_steps steps and every save_checkpoint_secs seconds.

  Saving is collective across workers (ON_READ variables are reduced), so every worker must save
  at the same step: a wall-clock trigger would fire on one and hang the others, and multi-worker
  runs save by steps only."""

  def __init__(self, manager, strategy, train_config, guard):
    self.manager, self.steps, self.guard = manager, train_config.save_checkpoint_steps, guard
    self.secs = 0 if runtime.is_multi_worker(strategy) else train_config.save_checkpoint_secs
    if self.secs != train_config.save_checkpoint_secs:
      log("note: multi-worker training saves every save_checkpoint_steps only "
          "(save_checkpoint_secs is ignored)")
    self.last = time.time()

  def __call__(self, step_no):
    if (self.steps > 0 and step_no % self.steps == 0) or (
        self.secs > 0 and time.time() - self.last >= self.secs):
      self.save(step_no)

  def save(self, step_no):
    """Saves the state after step_no, once the guard has found it finite (else its error)."""
    self.guard.check_before_save(step_no)
    checkpoints.save(self.manager, step_no)  # a full disk: one line, the last checkpoint kept
    self.last = time.time()


class DivergenceGuard:
  """Stops training at the first step whose loss terms or gradient norm are not finite, or whose
  update left a weight that is not: a DataError naming the step and what went non-finite.

  WindowLog checks before each log line and CheckpointTrigger before each save (the weights
  too), reading the steps' scalars only then (FiniteWatch), so that nothing of a diverged step
  is logged or saved, and the last good checkpoint stays the latest."""

  def __init__(self, model, ema, manager, model_config, train_config):
    self.watch = FiniteWatch(loss_scaled=model_config.precision == "mixed_float16")
    # The trained weights and their averages; not batch norm's moving statistics, whose read
    # under multi-worker training is a collective, and which follow the activations whose loss
    # is checked.
    self.find_non_finite = non_finite_finder(
        [*model.trainable_variables, *(ema.shadows if ema is not None else [])])
    self.manager, self.clipping = manager, train_config.clip_gradients > 0

  def add(self, step_no, scalars):
    self.watch.add(step_no, scalars)

  def check(self):
    found = self.watch.check()
    if found:
      raise self.error(*found)

  def check_before_save(self, step_no):
    self.check()
    name = self.find_non_finite()
    if name:
      raise self.error(step_no, {"a weight": f"not finite after the update ({name})"})

  def error(self, step_no, found):
    said = [f"{name} is {value}" for name, value in found.items()]
    what = " and ".join([", ".join(said[:-1]), said[-1]] if len(said) > 1 else said)
    last = self.manager.latest_checkpoint
    then = (f"nothing after {os.path.basename(last)} was saved, and it stays the latest" if last
            else "nothing was saved")
    advice = "a lower --learning_rate" + ("" if self.clipping else " or --clip_gradients > 0")
    return errors.DataError(f"step {step_no}: {what}: the training diverged and stopped; "
                            f"{then}: rerun with {advice}" + (" to resume from it" if last else ""))


def train_loop(run_step, iterator, global_step, number_of_steps, window_log, save_if_due, stop):
  """Runs steps from global_step to number_of_steps (or a stop signal, or run_step() returning
  None: a step stopped while it waited for the tf.data service): each step is counted by
  window_log (a WindowLog, whose guard sees every step's scalars) and offered to save_if_due (a
  CheckpointTrigger). Returns the last finished step's number."""
  step_no = start = int(global_step.numpy())
  log(f"training from step {step_no} to {number_of_steps}")
  while step_no < number_of_steps and stop.signal is None:
    result = run_step()
    if result is None:
      break
    scalars, activity = result
    step_no += 1
    window_log.step(step_no, scalars, activity, iterator, first=step_no == start + 1)
    save_if_due(step_no)
  return step_no


def step_runner(step, iterator, watch, stop):
  """What train_loop calls for a step: step(iterator); with the tf.data service (an
  ElementWatch), in a helper thread that gives up on a step stuck waiting for its batch, after
  the timeout or on a stop signal (input_service.run_step returns None then)."""
  if watch is None:
    return lambda: step(iterator)
  return lambda: input_service.run_step(lambda: step(iterator), watch,
                                        lambda: stop.signal is not None)


def finish(step_no, trigger, strategy, train_config, stop):
  """After the loop: saves step_no (the end, a stop signal, or a stall of the tf.data service),
  then raises the stall's error. A multi-worker run that stalled saves nothing: saving is
  collective, and the other workers may not be there."""
  manager = trigger.manager
  stalled = step_no < train_config.number_of_steps and stop.signal is None
  if not (stalled and runtime.is_multi_worker(strategy)):
    if manager.latest_checkpoint != os.path.join(manager.directory, f"ckpt-{step_no}"):
      trigger.save(step_no)  # checked first, as every save
    log(f"saved {manager.latest_checkpoint}")
  if stalled:
    raise input_service.stall_error(train_config.data_service_address,
                                    train_config.data_service_timeout_secs, step_no,
                                    manager.latest_checkpoint)


def main(argv):
  model_config = configs.ModelConfig()  # edit here, e.g. label_count=35, input_tfrecord_file=...
  train_config = configs.TrainConfig()  # e.g. train_dir="runs/coco", number_of_steps=20000
  arguments.parse_overrides(argv, model_config, train_config, usage=__doc__)
  check_resume_settings(model_config, train_config)  # before anything is built or written
  if train_config.data_service_address:
    input_service.parse_address(train_config.data_service_address)
  records.expand_file_spec(model_config.input_tfrecord_file)  # missing records: an error now
  service = (input_service.connect(train_config.data_service_address,
                                   train_config.data_service_timeout_secs, log)
             if train_config.data_service_address else None)  # a dead dispatcher: an error now
  # Given once, here: stored in config.json, where evaluate, calibration, inference and the
  # SavedModel find them. A resumed run without the flag keeps the names stored before.
  label_names = textfiles.load_label_names(model_config.label_names_file,
                                             model_config.label_count,
                                             run_dir=train_config.train_dir)
  if train_config.seed >= 0:
    tf.random.set_seed(train_config.seed)

  runtime.select_devices(train_config.gpu_id)
  strategy = runtime.make_strategy(train_config.strategy)
  # A record with another label count would stop training at its first batch: read the first
  # record of each file now (after the devices and the strategy, which must come before the
  # first TensorFlow op), before anything is built or written.
  files = records.check_label_count(model_config.input_tfrecord_file, model_config.label_count,
                                    model_config.image_label_key)
  # One trainer per train_dir, from before its first write to the end (two would overwrite each
  # other's checkpoints and state file); workers other than the chief write elsewhere.
  lock = (locks.hold_train_dir(train_config.train_dir, log) if runtime.is_chief(strategy)
          else None)
  try:
    return train(model_config, train_config, strategy, service, label_names, files)
  finally:
    if lock:
      lock.release()


def train(model_config, train_config, strategy, service, label_names, files):
  """Builds, restores and trains, as main() set up. Returns the exit status."""
  log(f"{strategy.num_replicas_in_sync} replica(s); global batch "
      f"{model_config.batch_size * strategy.num_replicas_in_sync}")
  pos_weight = resolve_pos_weight(train_config, model_config)  # None = off
  with strategy.scope():
    model = MultiLabelClassificationModel(model_config)
    optimizer = optimizers.make_optimizer(
        train_config, model.trainable_variables,
        loss_scale=model_config.precision == "mixed_float16",
        weight_decay=model_config.weight_decay, decayed=model.conv_weights)
    ema = (optimizers.ExponentialMovingAverage(model.trainable_variables, train_config.ema_decay)
           if train_config.ema_decay > 0 else None)
  checkpoint = checkpoints.make_checkpoint(model, optimizer, ema)
  if runtime.is_chief(strategy):  # what a killed or failed save left can keep a disk full
    for path in checkpoints.remove_leftovers(train_config.train_dir):
      log(f"removed {path}: left by a save that was killed or failed")
  save_dir = train_dir_or_new_temp_dir(strategy, train_config.train_dir)
  # Every worker resumes from the chief's train_dir (shared storage across machines), not from
  # its own temp dir, or the workers would start from different states and step counts.
  resumed = restore_or_start(make_manager(checkpoint, save_dir, train_config), model,
                             model_config, train_config.train_dir)
  # made again: the restore may have dropped damaged checkpoints from the state file, which a
  # CheckpointManager reads only when it is made
  manager = make_manager(checkpoint, save_dir, train_config)
  if ema is not None and not resumed:
    ema.reset()  # the shadows were copied before the backbone was restored
  if runtime.is_chief(strategy):
    # config.json records the pos_weight values used, not the "auto" or file that gave them
    saved = dataclasses.replace(train_config, pos_weight=pos_weight) if pos_weight else train_config
    config_files.save_configs(os.path.join(train_config.train_dir, config_files.TRAIN_CONFIG_FILE),
                          model_config, saved, label_names=label_names)

  seed = train_config.seed if train_config.seed >= 0 else None
  # tf.distribute strategies copy batches to their devices; on one GPU the pipeline does it.
  single_gpu = train_config.strategy == "default" and tf.config.list_logical_devices("GPU")
  if service:  # every worker of a multi-worker run joins this job and takes its own elements
    service = service.job(input_service.train_job_name(train_config.train_dir,
                                                       int(optimizer.iterations.numpy())))
  # Each input pipeline makes whole batches of batch_size, one per replica in turn.
  dataset = strategy.distribute_datasets_from_function(
      lambda context: build_dataset(model_config, "train", input_context=context, seed=seed,
                                    device="/gpu:0" if single_gpu else None, service=service))
  watch = input_service.ElementWatch(train_config.data_service_timeout_secs) if service else None
  step = make_train_step(model, optimizer, ema, strategy, model_config, train_config, pos_weight,
                         element_watch=watch)
  writer = tf.summary.create_file_writer(save_dir)
  stop = StopFlag()
  guard = DivergenceGuard(model, ema, manager, model_config, train_config)
  trigger = CheckpointTrigger(manager, strategy, train_config, guard)
  try:
    iterator = iter(dataset)
    window_log = WindowLog(writer, strategy, model_config, train_config,
                           optimizers.learning_rate_schedule(train_config), guard)
    step_no = train_loop(step_runner(step, iterator, watch, stop), iterator, optimizer.iterations,
                         train_config.number_of_steps, window_log, trigger, stop)
    writer.flush()
    finish(step_no, trigger, strategy, train_config, stop)
  except tf.errors.DataLossError as e:  # a cut-off or corrupt record: which, and what to do
    last = manager.latest_checkpoint
    raise records.damage_error(files, e, "; training stopped, and resumes from " + (
        os.path.basename(last) if last else "the start") + " once the records are mended") from None
  finally:
    stop.restore()
    if save_dir != train_config.train_dir:  # a non-chief worker's temp dir
      shutil.rmtree(save_dir, ignore_errors=True)
  return 128 + stop.signal if stop.signal else 0


if __name__ == "__main__":
  errors.run(main)
