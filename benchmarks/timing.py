"""The benchmarks' timing harness: windows of steps, host syncs, CPU snapshots, the machine.

A runner is (warmup(), window()); a window returns (snapshot before, snapshot after, items), the
after snapshot taken after a host sync on the last step's output. Runners that are compared
(toolkit vs Keras) run their windows in turn (`measure`), so that a colleague's job starting
halfway through slows both alike. Each figure: the median over windows of items/s, and of items
per CPU-second of this process (immune to what other processes take).
"""

import os
import platform
import statistics
import time

import numpy as np
import tensorflow as tf

# Process-wide settings that change these figures; the JSON records the ones that are set.
ENV_KNOBS = ("TF_ENABLE_ONEDNN_OPTS", "TF_CPU_ALLOCATOR_USE_BFC", "OMP_NUM_THREADS",
             "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "TF_XLA_FLAGS",
             "CUDA_VISIBLE_DEVICES")


def loadavg():
  return round(os.getloadavg()[0], 2)


def process_cpu_seconds(pid):
  """User + system CPU-seconds of another process, from /proc/<pid>/stat (0 if it is gone)."""
  try:
    with open(f"/proc/{pid}/stat") as f:
      fields = f.read().rsplit(")", 1)[1].split()  # after "pid (name)": state is field 3
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
  except (OSError, IndexError, ValueError):
    return 0.0


def cpu_snapshot(pids=()):
  """(wall, machine busy CPU-seconds, CPU-seconds of this process and of `pids`), for
  `others_cpu`: the processes in `pids` (e.g. tf.data service workers) count as this one."""
  busy = 0.0
  try:
    with open("/proc/stat") as f:
      ticks = [int(v) for v in f.readline().split()[1:9]]  # user nice system idle iowait ...
    busy = (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # steal counts as busy
  except (OSError, ValueError):
    pass
  own = os.times()
  return (time.perf_counter(), busy,
          own.user + own.system + sum(process_cpu_seconds(pid) for pid in pids))


def others_cpu(before, after):
  """Share of the machine's cores that other processes (colleagues' jobs, the hypervisor's
  steal) used between two snapshots: 0 = a quiet machine, 0.5 = one of 2 cores taken."""
  wall = after[0] - before[0]
  return max(0.0, (after[1] - before[1]) - (after[2] - before[2])) / (wall * os.cpu_count())


def wait_for_quiet(max_wait, threshold=0.1):
  """Sleeps (up to max_wait s) until other processes use < threshold of the machine."""
  deadline = time.perf_counter() + max_wait
  while time.perf_counter() < deadline:
    before = cpu_snapshot()
    time.sleep(1.0)
    if others_cpu(before, cpu_snapshot()) < threshold:
      return


def step_runner(step_once, sync, items_per_step, steps_per_window, warmup=2, pids=()):
  """A runner of any step function: `warmup` steps, then windows of steps_per_window steps.
  A window returns (snapshot before, snapshot after, items); `pids`: cpu_snapshot's."""
  def run(steps):
    before = cpu_snapshot(pids)
    for _ in range(steps):
      out = step_once()
    sync(out)
    return before, cpu_snapshot(pids), steps * items_per_step
  return lambda: run(warmup), lambda: run(steps_per_window)


def measure(runners, windows, max_wait=0.0, wait_each_round=True, seen=None):
  """Runs {name: (warmup, window)} interleaved: all warm-ups, then `windows` rounds of one
  window each. Returns {name: {"per_s": median items/s, "per_cpu_s": median items per second of
  this process's CPU time, "windows": [items/s], "others_cpu": [share per window]}}.

  per_cpu_s does not depend on how much CPU colleagues' jobs took; on a quiet 2-core machine
  per_s is about 2 x per_cpu_s x the step's parallel efficiency. Before the warm-up, and with
  wait_each_round before each round, it waits up to max_wait s for the machine to be quiet (not
  between an input pipeline's windows: its prefetch would fill up during the wait). seen: a dict
  that collects every result by name, e.g. all the windows of a run for its JSON."""
  if max_wait > 0:
    wait_for_quiet(max_wait)
  start = time.perf_counter()
  for warmup, _ in runners.values():
    warmup()
  print(f"  (warm-up, tracing included: {time.perf_counter() - start:.1f} s)", flush=True)
  samples = {name: [] for name in runners}
  for round_no in range(windows):
    if max_wait > 0 and wait_each_round and round_no > 0:
      wait_for_quiet(max_wait)
    for name, (_, window) in runners.items():
      before, after, items = window()
      samples[name].append((items / (after[0] - before[0]),
                            items / max(after[2] - before[2], 1e-3),
                            round(others_cpu(before, after), 2)))
  results = {}
  for name, values in samples.items():
    rates, per_cpu, others = zip(*values)
    results[name] = {"per_s": statistics.median(rates), "per_cpu_s": statistics.median(per_cpu),
                     "windows": [round(v, 3) for v in rates], "others_cpu": list(others)}
    if seen is not None:
      seen[name] = results[name]
    print(f"  {name}: {results[name]['per_s']:.2f}/s  windows {results[name]['windows']}  "
          f"per CPU-s {results[name]['per_cpu_s']:.2f}  others' CPU {list(others)}", flush=True)
  return results


class KerasWindow(tf.keras.callbacks.Callback):
  """Snapshots one model.fit / model.predict call from its first batch's start to its last
  batch's end (host-synced), so the per-call set-up, paid once in real use, stays out."""

  def __init__(self):
    super().__init__()
    self.before = self.after = None

  def _begin(self, batch, logs=None):
    if batch == 0:
      self.before = cpu_snapshot()

  def _end(self, batch, logs=None):
    for value in tf.nest.flatten(logs or {}):
      np.asarray(value)  # host sync on the step's outputs
    self.after = cpu_snapshot()

  on_train_batch_begin = on_predict_batch_begin = _begin
  on_train_batch_end = on_predict_batch_end = _end


def onednn_enabled():
  """Whether TF's oneDNN graph rewrites are on (TF_ENABLE_ONEDNN_OPTS, or TF's per-CPU
  default: on only for CPUs with AVX-512 VNNI/BF16 or AMX)."""
  try:
    from tensorflow.python.util import _pywrap_util_port  # private; no public query exists
    return bool(_pywrap_util_port.IsMklEnabled())
  except (ImportError, AttributeError):
    return None


def machine():
  cpu = platform.processor() or "unknown"
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
  except (OSError, StopIteration):
    pass
  return {"cpu": cpu, "cores": os.cpu_count(), "tensorflow": tf.__version__,
          "keras": tf.keras.__version__ if hasattr(tf.keras, "__version__") else "",
          "python": platform.python_version(),
          "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
          "onednn_opts": onednn_enabled(),
          "env": {k: os.environ[k] for k in ENV_KNOBS if k in os.environ},
          "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
          "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}
