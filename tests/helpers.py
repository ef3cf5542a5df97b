"""Helpers shared by the test modules (not collected: no test module imports another).

Fixtures built on them are in conftest.py. What is here: the one records writer and the
original's record layout; running a script's main; TensorBoard event readers; the full-disk
fakes; and the small oracles that tests of a library module share with the end-to-end tests of
its script.
"""

import builtins
import contextlib
import errno
import glob
import io
import os
import signal
import socket
import subprocess
import sys
import threading

import numpy as np
import tensorflow as tf
from PIL import Image
from sklearn import metrics as skm
from tensorflow.core.util import event_pb2

import multi_label_classification_model as mlc
from multilabel import arguments, errors, files, summaries
from multilabel.data import records

TINY_LABELS = 5  # conftest.model_config's label count
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the repository's root


# ---------------------------------------------------------------------------------------------
# Records.

def write_records(path, labels=(), *, seed=0, side=40, images=None, name="img{}.jpg",
                  num_shards=None, serialized=None):
  """Writes TFRecords as create_tfrecord.py writes them: one records.make_example per row of
  `labels`, record i named name.format(i) and holding images[i] (encoded bytes) if `images` is
  given, else a random side x side JPEG (one generator seeded with `seed`, drawn in record order).
  `serialized`: records already serialized, written as they are instead.

  Returns str(path); with num_shards, the records are dealt round-robin into
  records.shard_paths(path, num_shards) and those paths are returned.
  """
  if serialized is None:
    rng = np.random.default_rng(seed)
    serialized = []
    for i, row in enumerate(labels):
      if images is None:
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buffer, "JPEG")
        data = buffer.getvalue()
      else:
        data = images[i]
      serialized.append(records.make_example(name.format(i), data, row).SerializeToString())
  paths = records.shard_paths(str(path), num_shards or 1)
  os.makedirs(os.path.dirname(os.path.abspath(paths[0])), exist_ok=True)
  for shard, shard_path in enumerate(paths):
    with tf.io.TFRecordWriter(shard_path) as writer:
      for record in serialized[shard::len(paths)]:
        writer.write(record)
  return str(path) if num_shards is None else paths


def original_record(path, data, labels, keys=("image_path", "image_data", "image_label")):
  """A record built by hand exactly as the original TF1 create_tfrecord.py built it (its
  layout): a tf.train.SequenceExample."""
  if isinstance(path, str):
    path = path.encode()
  return tf.train.SequenceExample(
      context=tf.train.Features(feature={
          keys[0]: tf.train.Feature(bytes_list=tf.train.BytesList(value=[path])),
          keys[1]: tf.train.Feature(bytes_list=tf.train.BytesList(value=[data])),
      }),
      feature_lists=tf.train.FeatureLists(feature_list={
          keys[2]: tf.train.FeatureList(feature=[
              tf.train.Feature(int64_list=tf.train.Int64List(value=[v])) for v in labels]),
      }))


ID_BITS = 6  # id_labels' labels: record i's labels spell i in binary


def id_labels(i):
  """Labels that name their record, so that train batches (no paths) name their records."""
  return [(i >> b) & 1 for b in range(ID_BITS)]


# ---------------------------------------------------------------------------------------------
# Images.

def gradient(width=16, height=12, seed=0):
  """A smooth RGB image (JPEG keeps it within a few levels), uint8 [height, width, 3]."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:height, 0:width]
  base = rng.uniform(40, 200, 3)
  slope = rng.uniform(-4, 4, (2, 3))
  pixels = base + y[..., None] * slope[0] + x[..., None] * slope[1]
  return np.clip(pixels, 0, 255).astype(np.uint8)


def save(path, image, fmt, **kwargs):
  buffer = io.BytesIO()
  image.save(buffer, fmt, **kwargs)
  path.write_bytes(buffer.getvalue())
  return path


def odd_images(folder):
  """{name: expected RGB uint8 [H, W, 3]} for images Pillow must convert, written to folder."""
  rgb = gradient(16, 12, seed=7)
  image = Image.fromarray(rgb)
  expected = {}
  for name, fmt, converted in [("a.png", "PNG", image), ("b.gif", "GIF", image.quantize(32)),
                               ("c.bmp", "BMP", image), ("d.webp", "WEBP", image),
                               ("e_grey.jpg", "JPEG", image.convert("L")),
                               ("f_palette.png", "PNG", image.quantize(16)),
                               ("g_cmyk.jpg", "JPEG", image.convert("CMYK")),
                               ("h_png_named.jpg", "PNG", image),
                               ("i_grey16.png", "PNG", None)]:
    path = folder / name
    if name == "i_grey16.png":  # 16-bit grey: 0..65535 must map to 0..255, not clip to white
      grey16 = (rgb[..., 0].astype(np.uint16) * 257)
      Image.fromarray(grey16).save(path)
      expected[name] = np.repeat(rgb[..., :1], 3, axis=2)
      continue
    save(path, converted, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    expected[name] = np.asarray(Image.open(path).convert("RGB"))  # Pillow's own conversion
  # RGBA with a transparent left half: composited on white (numpy oracle).
  alpha = np.zeros((12, 16), np.uint8)
  alpha[:, 8:] = 255
  alpha[:, 6:8] = 128
  save(folder / "j_rgba.png", Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), "PNG")
  a = alpha[..., None] / 255.0
  expected["j_rgba.png"] = np.round(rgb * a + 255 * (1 - a)).astype(np.uint8)
  return expected


def unreadable_images(folder):
  """Writes one image of each unreadable kind; returns {name: reason category}."""
  buffer = io.BytesIO()
  Image.fromarray(np.random.default_rng(0).integers(0, 256, (24, 32, 3), np.uint8)).save(
      buffer, "PNG")
  png = bytearray(buffer.getvalue())
  (folder / "truncated.png").write_bytes(bytes(png[:len(png) // 2]))
  corrupt = bytearray(png)
  for i in range(60, len(corrupt) - 20):  # scramble the compressed pixel data
    corrupt[i] ^= 0x5A
  (folder / "corrupt.png").write_bytes(bytes(corrupt))
  (folder / "empty.jpg").write_bytes(b"")
  (folder / "notes.jpg").write_text("these are not pixels\n")
  return {"truncated.png": "truncated", "corrupt.png": "corrupt", "empty.jpg": "empty",
          "notes.jpg": "not an image", "missing.jpg": "missing"}


# ---------------------------------------------------------------------------------------------
# Running a script's main, and what it leaves.

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


def parse(capsys, argv, *cfgs):
  """Runs parse_overrides as a script's main does, through errors.run; returns (exit status or
  None, stdout, stderr)."""
  try:
    errors.run(lambda args: arguments.parse_overrides(args, *cfgs) and None, argv)
  except SystemExit as e:
    code = e.code
  out, err = capsys.readouterr()
  return code, out, err


def assert_one_error_line(status, err, want_status, says):
  """The exit status, a last line `error: ...` saying `says`, no other error line, no traceback."""
  lines = err.rstrip("\n").splitlines()
  assert status == want_status, err
  assert lines and lines[-1].startswith("error: ") and says in lines[-1], err
  assert sum(line.startswith("error:") for line in lines) == 1 and "Traceback" not in err, err


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


def free_ports(count):
  """Distinct free loopback ports: bound to 127.0.0.1:0 together, then released."""
  sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
  try:
    for s in sockets:
      s.bind(("127.0.0.1", 0))
    return [s.getsockname()[1] for s in sockets]
  finally:
    for s in sockets:
      s.close()


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


def eval_events(eval_dir):
  """{tag: {step: (plugin name, tensor)}} from evaluate.py's event files."""
  found = {}
  for path in glob.glob(os.path.join(eval_dir, "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        found.setdefault(value.tag, {})[event.step] = (
            value.metadata.plugin_data.plugin_name, tf.make_ndarray(value.tensor))
  return found


def snapshot(variables):
  return [v.numpy().copy() for v in variables]


def head_variables(model):
  return [v for v in model.variables if v.name.startswith(mlc.HEAD_SCOPE + "/")]


def const_feature_checkpoint(prefix, depth=2048, seed=1):
  """A slim-format (name-based) backbone checkpoint with postnorm gamma = 0 and beta > 0: batch
  norm then outputs beta whatever its input, so the frozen backbone's features are the same
  constant for every image, augmented or not. Returns beta."""
  beta = np.random.default_rng(seed).uniform(0.0, 1.0, depth).astype(np.float32)
  tf.raw_ops.SaveV2(prefix=str(prefix),
                    tensor_names=["resnet_v2_50/postnorm/gamma", "resnet_v2_50/postnorm/beta"],
                    shape_and_slices=["", ""], tensors=[tf.zeros([depth]), tf.constant(beta)])
  return beta


# ---------------------------------------------------------------------------------------------
# Oracles.

def sigmoid(x):
  return np.exp(-np.logaddexp(0, -x))  # 1 / (1 + exp(-x)) without overflow


def assert_close(got, ref, tol=1e-4, what=""):
  """The reference's criterion: max |got - ref| <= tol * max(1, max |ref|)."""
  got, ref = np.asarray(got, np.float32), np.asarray(ref, np.float32)
  assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
  diff, bound = np.abs(got - ref).max(), tol * max(1.0, np.abs(ref).max())
  assert diff <= bound, f"{what}: max abs diff {diff} > {bound}"


def clamp(scores_col):
  """What an +inf ROC threshold becomes (calibration._finite_threshold's documented rule): 1.0
  for probabilities, the float above the highest score for scores above 1."""
  highest = np.max(scores_col)
  return 1.0 if highest <= 1.0 else np.nextafter(highest, np.inf)


def reference_roc(y, s):
  """The original TF1 script's computation."""
  fpr, tpr, thresholds = skm.roc_curve(y, s)
  t = thresholds[np.argmin(np.sqrt(fpr ** 2 + (1 - tpr) ** 2))]
  return clamp(s) if np.isinf(t) else t


def reference_youden(y, s):
  fpr, tpr, thresholds = skm.roc_curve(y, s)
  t = thresholds[np.argmax(tpr - fpr)]
  return clamp(s) if np.isinf(t) else t


def reference_f1(y, s):
  """Brute force: sklearn's F1 at every distinct score, highest threshold first on ties."""
  candidates = np.unique(s)[::-1]
  f1 = [skm.f1_score(y, (s >= t).astype(int), zero_division=0) for t in candidates]
  return candidates[int(np.argmax(f1))]


def chart_geometry_matches(image, per_label_ap, mean_ap):
  """Checks the chart against its documented layout: each bar's height from its AP (sorted), and
  the red mAP row in the gap after the first bar."""
  bar, plot, margin = (summaries.CHART_BAR, summaries.CHART_PLOT,
                       summaries.CHART_MARGIN)
  colours = summaries.CHART_COLOURS
  aps = sorted((ap for ap in per_label_ap if ap is not None), reverse=True)
  assert image.shape == (plot + 2 * margin, 2 * margin + len(aps) * (bar + 1) - 1, 3)
  bottom = margin + plot
  for j, ap in enumerate(aps):
    for column in (margin + j * (bar + 1), margin + j * (bar + 1) + bar - 1):
      is_bar = np.all(image[:, column] == colours["bar"], axis=-1)
      assert np.array_equal(np.flatnonzero(is_bar), np.arange(bottom - round(ap * plot), bottom))
  gap = margin + bar  # the column between the first two bars
  red = np.flatnonzero(np.all(image[:, gap] == colours["mAP"], axis=-1))
  assert red.tolist() == [bottom - round(mean_ap * plot)]


def pr_counts_checked(counts, positive, scores_col):
  """Asserts a pr_curve's [4, 201] TP, FP, TN, FN at each threshold t = k/200 against numpy's
  (except within 1e-5 of a score, where the files' %.6f rounding could tip them); returns how
  many thresholds it checked."""
  checked = 0
  for k in range(201):
    if np.abs(scores_col - k / 200).min() < 1e-5:
      continue
    above = scores_col >= k / 200
    assert counts[:, k].tolist() == [(above & positive).sum(), (above & ~positive).sum(),
                                     (~above & ~positive).sum(), (~above & positive).sum()]
    checked += 1
  return checked


# ---------------------------------------------------------------------------------------------
# A full disk: a real small one where root can mount it, else faked.

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
