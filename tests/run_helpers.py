"""Helpers shared by the train/evaluate/distribute/mixed-precision tests (not collected)."""

import builtins
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

from multilabel import errors, files
from multilabel.data import records


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


def run_captured(main, argv):
  """A script's main(argv) in this process, its stdout captured: (exit status, what it printed).
  Errors propagate (run_script_main turns them into exit statuses, as `python <script>.py`)."""
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    status = main(argv)
  return status, out.getvalue()


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
  runs everywhere and never skips. FAKE_FULL_DISK=1 in the environment fakes it even where a
  tmpfs could be mounted, to run those paths too."""
  os.makedirs(folder, exist_ok=True)
  mounted = os.environ.get("FAKE_FULL_DISK") != "1" and subprocess.run(
      ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
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


class FullDiskFile:
  """A file on a full disk: a write puts half of its data down, then raises ENOSPC."""

  def __init__(self, f):
    self.f = f

  def write(self, data):
    self.f.write(data[:len(data) // 2])
    self.f.flush()
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  def writelines(self, lines):
    self.write("".join(lines))

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.f.close()


_TFRecordWriter = tf.io.TFRecordWriter  # the real one, for the fake below


class FullDiskWriter:
  """tf.io.TFRecordWriter on a full disk: writes its first record, then raises as TensorFlow
  does there."""

  def __init__(self, path, options=None):
    self.writer, self.count = _TFRecordWriter(path, options), 0

  def write(self, record):
    self.count += 1
    if self.count > 1:
      raise tf.errors.ResourceExhaustedError(None, None, "write failed; No space left on device")
    self.writer.write(record)
    self.writer.flush()

  def close(self):
    self.writer.close()


def fake_full_disk(monkeypatch):
  """Every write of multilabel/files.py and of tf.io.TFRecordWriter fails as on a full disk (for a
  test where small_disk could not mount one)."""
  monkeypatch.setattr(files, "open", lambda *a, **k: FullDiskFile(builtins.open(*a, **k)),
                      raising=False)
  monkeypatch.setattr(tf.io, "TFRecordWriter", FullDiskWriter)


def fake_full_checkpoint_save(monkeypatch):
  """tf.train.CheckpointManager.save fails as on a full disk: it leaves a partial
  <prefix>_temp/part-...tempstate<n> file, as TensorFlow's SaveV2 does, and raises its error."""
  def save(manager, checkpoint_number=None, **_):
    temp = os.path.join(manager.directory, f"ckpt-{checkpoint_number}_temp")
    os.makedirs(temp)
    with open(os.path.join(temp, "part-00000-of-00001.data-00000-of-00001.tempstate1"), "wb") as f:
      f.write(b"\0" * 4096)
    raise tf.errors.ResourceExhaustedError(None, None, f"{temp}/part-00000-of-00001.data-00000-"
                                           "of-00001.tempstate1; No space left on device")
  monkeypatch.setattr(tf.train.CheckpointManager, "save", save)
