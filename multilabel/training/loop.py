"""train.py's loop and what goes around each step: the log line and scalars of each window, the
saves (by steps and seconds), the guard that stops a diverged run before anything of it is
logged or saved, and the stop signals."""

import os
import signal
import tempfile
import time

import tensorflow as tf

from multilabel import checkpoints, errors, runtime, summaries
from multilabel.data import input_service
from multilabel.runtime import log
from multilabel.training.train_step import DeadUnitWatch, FiniteWatch, non_finite_finder


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
    self.dead_units = DeadUnitWatch(model_config.head_depth or model_config.label_count)
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
    values.update(self.dead_units.read(values["loss/classification"]))
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
