"""Helpers shared by the train/evaluate/distribute/mixed-precision tests (not collected)."""

import contextlib
import errno
import glob
import io
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import tensorflow as tf
from PIL import Image
from tensorflow.core.util import event_pb2

import errors
import records


def write_records(path, labels, seed=0, side=40):
  """One record per row of `labels`, each a random side x side JPEG."""
  rng = np.random.default_rng(seed)
  with tf.io.TFRecordWriter(str(path)) as writer:
    for i, row in enumerate(labels):
      buffer = io.BytesIO()
      Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buffer, "JPEG")
      writer.write(records.make_example(f"img{i}.jpg", buffer.getvalue(), row)
                   .SerializeToString())
  return str(path)


def read_scalars(log_dir):
  """{tag: {step: value}} from the TensorBoard event files train.py wrote to `log_dir`."""
  scalars = {}
  for path in sorted(glob.glob(os.path.join(log_dir, "events.out.tfevents.*"))):
    for record in tf.data.TFRecordDataset(path):
      event = event_pb2.Event.FromString(record.numpy())
      for value in event.summary.value:
        if value.metadata.plugin_data.plugin_name == "scalars":
          scalars.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
  return scalars


def run_script_main(capsys, main, argv):
  """A script's main(argv) in this process, through errors.run as `python <script>.py` runs it:
  (exit status, stdout, stderr)."""
  try:
    errors.run(main, argv)
  except SystemExit as e:
    code = e.code or 0  # errors.run exits with main's return value; None = 0
  out, err = capsys.readouterr()
  return code, out, err


def train_until_sigterm(argv, repo, env, timeout=240):
  """Runs `python train.py *argv` in `repo`, sends it SIGTERM at its first "step " log line,
  and waits for it to exit (killed after `timeout` s in all). Returns (exit status, log lines)."""
  proc = subprocess.Popen([sys.executable, "train.py", *argv], cwd=repo, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
  watchdog = threading.Timer(timeout, proc.kill)
  watchdog.start()
  lines = []
  try:
    for line in proc.stdout:
      lines.append(line)
      if line.startswith("step "):
        proc.send_signal(signal.SIGTERM)
        break
    lines += proc.stdout.readlines()
    return proc.wait(timeout=120), lines
  finally:
    watchdog.cancel()
    proc.kill()


@contextlib.contextmanager
def small_disk(folder, size):
  """A small filesystem at `folder`: a tmpfs of `size` bytes where this machine lets us mount one
  (root can), unmounted afterwards. Yields True if it is mounted; False if not, and `folder` is
  then a plain folder: the test fakes the full disk instead (a write raising ENOSPC), so that it
  runs everywhere and never skips."""
  os.makedirs(folder, exist_ok=True)
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                           capture_output=True).returncode == 0
  try:
    yield mounted
  finally:
    if mounted:
      subprocess.run(["umount", "-l", str(folder)], check=True)


def fill_disk(folder):
  """Writes zeros to <folder>/filler until the filesystem is full; returns its path."""
  path = os.path.join(folder, "filler")
  with open(path, "wb", buffering=0) as f:
    for chunk in (1 << 20, 1 << 12, 1):
      try:
        while True:
          f.write(b"\0" * chunk)
      except OSError as e:
        assert e.errno == errno.ENOSPC, e
  return path


def raise_no_space(*_args, **_kwargs):
  raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
