"""The run's surroundings: the log line, the devices, the tf.distribute strategy, the stop
signals (Ctrl-C, SIGTERM) of evaluate.py and inference.py, and the progress line of long work."""

import contextlib
import os
import signal
import sys
import time

import tensorflow as tf

from multilabel import errors


def log(message):
  print(message, flush=True)


def select_devices(gpu_id):
  """Restricts TensorFlow to the GPUs in `gpu_id` ("0", "0,1"; "" = all; "-1" = CPU only).

  Must run before the first TensorFlow op, like CUDA_VISIBLE_DEVICES in the original.
  """
  gpus = tf.config.list_physical_devices("GPU")
  if gpu_id.strip() == "":
    return gpus
  try:
    wanted = [int(i) for i in gpu_id.split(",") if int(i) >= 0]
  except ValueError:
    raise errors.ConfigError(f"gpu_id={gpu_id!r}: expected GPU numbers such as 0 or 0,1; "
                             '"" = all, -1 = CPU only') from None
  missing = [i for i in wanted if i >= len(gpus)]
  if missing and gpus:  # no GPU at all is a CPU machine, not a mistake: the defaults say 0
    log(f"note: gpu_id={gpu_id!r} but only {len(gpus)} GPU(s) are visible; using what exists")
  chosen = [gpus[i] for i in wanted if i < len(gpus)]
  tf.config.set_visible_devices(chosen, "GPU")
  return chosen


def make_strategy(name):
  """default | mirrored | multi_worker -> a tf.distribute.Strategy."""
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    if not tf.config.list_logical_devices("GPU"):
      log("note: strategy=mirrored found no GPU; running one replica on the CPU")
      return tf.distribute.MirroredStrategy(["/cpu:0"])
    return tf.distribute.MirroredStrategy()
  if name == "multi_worker":
    if "TF_CONFIG" not in os.environ:
      raise errors.ConfigError("strategy=multi_worker needs the cluster in the TF_CONFIG variable")
    return tf.distribute.MultiWorkerMirroredStrategy()
  raise errors.ConfigError(f"strategy={name!r}: expected default, mirrored or multi_worker")


def is_chief(strategy):
  """True on the worker that owns train_dir (always, outside multi-worker training)."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return True
  return resolver.task_type == "chief" or (
      resolver.task_type == "worker" and resolver.task_id == 0
      and "chief" not in resolver.cluster_spec().as_dict())


def is_multi_worker(strategy):
  """True when the strategy spans several worker processes (TF_CONFIG with more than one task)."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return False
  return sum(len(tasks) for tasks in resolver.cluster_spec().as_dict().values()) > 1




class StopSignals:
  """SIGINT (Ctrl-C) and SIGTERM stop the run as one line and exit status 130 or 143 (an
  errors.Interrupted), with no traceback and no half-written output:

    with runtime.StopSignals(lambda: "no output was written") as stop:
      ...                  # stops at once (its temp files removed as atomic_write does)
      with stop.deferred():
        write the outputs  # a signal here stops the run once they are all written

  The handler raises KeyboardInterrupt, for SIGTERM too, so that the `finally` clauses run. Python
  raises it wherever the main thread is, inside TensorFlow's code too, where it can come out as
  another error (tf_stack's "AssertionError: Concurrent access?"): so once a signal has arrived,
  whatever error ends the block is the stop. `kept`, called then, says what was kept.
  """

  def __init__(self, kept):
    self.kept, self.received, self.deferring = kept, None, False

  def __enter__(self):
    self.previous = {sig: signal.signal(sig, self._handle)
                     for sig in (signal.SIGINT, signal.SIGTERM)}
    return self

  def _handle(self, signum, _frame):
    if self.received is None:
      self.received = signum
    if not self.deferring:
      raise KeyboardInterrupt

  @contextlib.contextmanager
  def deferred(self):
    """A block that a signal does not cut short: the run stops after it."""
    self.deferring = True
    try:
      yield
    finally:
      self.deferring = False
    if self.received is not None:
      raise KeyboardInterrupt

  def __exit__(self, exc_type, exc, tb):
    self.deferring = True  # a signal now must not interrupt the clean-up
    for sig, handler in self.previous.items():
      signal.signal(sig, handler)
    if self.received is None or exc_type is None:
      return False
    name = signal.Signals(self.received).name
    raise errors.Interrupted(self.received, f"stopped by {name}; {self.kept()}") from None


class Progress:
  """Prints "what: done/total, rate/s, ETA" to stderr at most once per `every` seconds.

  On a terminal it rewrites one line; otherwise (logs, CI) it prints every 10 s.
  """

  def __init__(self, total, what="images", every=1.0):
    self.total, self.what, self.start = total, what, time.time()
    self.tty = sys.stderr.isatty()
    self.every = every if self.tty else max(every, 10.0)
    self.last, self.printed = self.start, False  # the first line comes after `every` seconds

  def update(self, done, force=False, fraction=None):
    """`fraction` (0..1) overrides done/total for the ETA, e.g. bytes read / file size."""
    now = time.time()
    if not force and now - self.last < self.every:
      return
    self.last, self.printed = now, True
    elapsed = max(now - self.start, 1e-9)
    rate = done / elapsed
    if fraction is None and self.total:
      fraction = done / self.total
    eta = f", ETA {_clock(elapsed * (1 - fraction) / fraction)}" if fraction else ""
    of_total = f"/{self.total}" if self.total else ""
    line = f"{self.what}: {done}{of_total}, {rate:.1f}/s{eta}, elapsed {_clock(elapsed)}"
    sys.stderr.write(f"\r{line}\033[K" if self.tty else line + "\n")
    sys.stderr.flush()

  def clear(self):
    """Erases the rewritten progress line, so the next message starts on a clean line."""
    if self.tty and self.printed:
      sys.stderr.write("\r\033[K")
      sys.stderr.flush()

  def finish(self, done):
    self.update(done, force=True)
    if self.tty:
      sys.stderr.write("\n")


def _clock(seconds):
  seconds = int(seconds)
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
