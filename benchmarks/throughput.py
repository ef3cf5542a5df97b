"""Throughput of the toolkit against a hand-written Keras fine-tune, in one process (issue 6).

Generates COCO-like 640x480 JPEGs (smooth colour fields, shapes and sensor noise, ~140 KB each),
writes 2 TFRecord shards with create_tfrecord.py, then measures, warm-up excluded, each figure the
median of several timed windows (compared figures interleaved, window by window):
  a. the input pipeline alone (build_dataset, train mode), images/s, here and with its
     per-element map on 1 and 2 local tf.data service workers (data_service.py processes);
  b. the full fine-tune step (train.make_train_step, train_base_network=True), images/s;
  c. the frozen-backbone step (the default config), images/s;
  d. 10-crop inference (inference.make_scorer), images/s;
  e. the peer: keras.applications.ResNet50V2(weights=None) + the same 3-conv head, same optimiser
     settings, model.fit and model.predict on the same in-memory batches and crops;
plus a conv/matmul peak (GFLOP/s) measured beside (b), the share of it that (b) achieves, and
scaling checks: the step at batch b/2, b, 2b (--quick: b/2, b) and the pipeline with 1 and 2
parallel calls. Prints a table, then as the last line one JSON object with every figure.
benchmarks/README.md explains each figure.

    python benchmarks/throughput.py --quick     # ~3 min on 2 idle cores
    python benchmarks/throughput.py             # the full run, with levers: ~10 min
    python benchmarks/throughput.py --xla --precision=mixed_bfloat16 --batch_size=256   # a GPU
"""

import argparse
import contextlib
import dataclasses
import io
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from PIL import Image, ImageDraw, ImageFilter  # noqa: E402

import configs  # noqa: E402
import inference  # noqa: E402
import input_service  # noqa: E402
import records  # noqa: E402
import run_utils  # noqa: E402
import train  # noqa: E402
from keras_peer import keras_model  # noqa: E402
from multi_label_classification_model import (MultiLabelClassificationModel,  # noqa: E402
                                              build_dataset, compute_dtype,
                                              preprocess_ten_crop, ten_crop_resize)

# Process-wide settings that change these figures; the JSON records the ones that are set.
ENV_KNOBS = ("TF_ENABLE_ONEDNN_OPTS", "TF_CPU_ALLOCATOR_USE_BFC", "OMP_NUM_THREADS",
             "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS", "TF_XLA_FLAGS",
             "CUDA_VISIBLE_DEVICES")
SECTIONS = ("peak", "pipeline", "train", "frozen", "scaling", "inference", "keras")
GOALS = {"fit_ratio": 1.15, "frozen_ratio": 2.5, "pipeline_ratio": 5.0, "inference_ratio": 1.1,
         "peak_fraction": 0.6}


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true", help="fewer images and shorter windows")
  p.add_argument("--batch_size", type=int, default=16, help="train batch (scaling: b/2, b, 2b)")
  p.add_argument("--image_size", type=int, default=224, help="network input side, multiple of 32")
  p.add_argument("--label_count", type=int, default=80, help="labels (COCO has 80)")
  p.add_argument("--num_images", type=int, default=0, help="JPEGs to generate; 0 = 32/160")
  p.add_argument("--infer_images", type=int, default=0, help="images per 10-crop batch; 0 = 2/8")
  p.add_argument("--windows", type=int, default=0, help="timed windows per figure; 0 = 3/5")
  p.add_argument("--xla", action="store_true", help="TrainConfig.xla; Keras jit_compile=True")
  p.add_argument("--precision", default="float32", help="ModelConfig.precision, e.g. "
                 "mixed_bfloat16 (Keras gets the same global policy)")
  p.add_argument("--intra_op", type=int, default=0, help="TF intra-op threads; 0 = TF default")
  p.add_argument("--inter_op", type=int, default=0, help="TF inter-op threads; 0 = TF default")
  p.add_argument("--levers", type=int, default=-1, help="1: also measure the levers (the "
                 "scorer without XLA, Keras predict with jit_compile and with 10-crop batches, "
                 "--max_side records); -1 = on in the full run, off with --quick")
  p.add_argument("--max_side", type=int, default=-1, help="with --levers, also measure (a) on "
                 "records pre-resized by create_tfrecord --max_side; -1 = 340 (4:3 photos keep "
                 ">= 255 px on the short side, the train resize), 0 = off")
  p.add_argument("--only", default="", help="comma list of sections: peak,pipeline,train,"
                 "frozen,scaling,inference,keras (default: all)")
  p.add_argument("--keep_dir", default="", help="write the images/records here and keep them")
  p.add_argument("--wait_quiet", type=float, default=0.0, help="before each round of windows, "
                 "wait up to this many seconds for other processes to use < 10%% of the CPUs")
  args = p.parse_args(argv)
  args.num_images = args.num_images or (32 if args.quick else 160)
  args.infer_images = args.infer_images or (2 if args.quick else 8)
  args.windows = args.windows or (3 if args.quick else 5)
  args.levers = (not args.quick) if args.levers < 0 else bool(args.levers)
  args.max_side = (340 if args.max_side < 0 else args.max_side) if args.levers else 0
  args.train_windows = 2 if args.quick else args.windows  # (b) and (e): the slowest steps
  args.warmup = 1 if args.quick else 2  # steps before timing; the first one traces
  args.sections = set(args.only.split(",")) if args.only else set(SECTIONS)
  if args.sections - set(SECTIONS):
    p.error(f"--only={args.only!r}: unknown {sorted(args.sections - set(SECTIONS))}; "
            f"sections are {','.join(SECTIONS)}")
  if args.image_size % 32:
    p.error(f"--image_size={args.image_size}: must be a multiple of 32")
  compute_dtype(args.precision)  # raises naming a bad --precision
  return args


# ---------------------------------------------------------------------------------------------
# Timing. A runner is (warmup(), window()); a window returns (snapshot before, snapshot after,
# items), the after snapshot taken after a host sync on the last step's output. Runners that are
# compared (toolkit vs Keras) run their windows in turn, so that a colleague's job starting
# halfway through slows both alike. Each figure: the median over windows of items/s.

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


WINDOWS = {}  # every measured figure's windows, for the JSON line


def measure(runners, windows, max_wait=0.0, wait_each_round=True):
  """Runs {name: (warmup, window)} interleaved: all warm-ups, then `windows` rounds of one
  window each. Returns {name: {"per_s": median items/s, "per_cpu_s": median items per second of
  this process's CPU time, "windows": [items/s], "others_cpu": [share per window]}}.

  per_cpu_s does not depend on how much CPU colleagues' jobs took; on a quiet 2-core machine
  per_s is about 2 x per_cpu_s x the step's parallel efficiency. Before the warm-up, and with
  wait_each_round before each round, it waits up to max_wait s for the machine to be quiet (not
  between an input pipeline's windows: its prefetch would fill up during the wait)."""
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
    WINDOWS[name] = results[name]
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


# ---------------------------------------------------------------------------------------------
# Data: COCO-like photos -> create_tfrecord.py -> TFRecords.

def make_photo(rng, width=640, height=480):
  """A smooth random colour field with shapes, blurred, plus sensor-like noise: at quality 90
  it encodes to ~140 KB, like COCO's 640x480 photos (so JPEG decode costs what it would)."""
  coarse = rng.integers(0, 256, (int(rng.integers(3, 9)), int(rng.integers(3, 9)), 3), np.uint8)
  image = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
  draw = ImageDraw.Draw(image)
  for _ in range(int(rng.integers(5, 15))):
    x0, y0 = int(rng.integers(-50, width)), int(rng.integers(-50, height))
    box = [x0, y0, x0 + int(rng.integers(20, 320)), y0 + int(rng.integers(20, 240))]
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    kind = int(rng.integers(3))
    if kind == 0:
      draw.ellipse(box, fill=colour)
    elif kind == 1:
      draw.rectangle(box, fill=colour)
    else:
      draw.polygon([(int(rng.integers(width)), int(rng.integers(height))) for _ in range(5)],
                   fill=colour)
  image = image.filter(ImageFilter.GaussianBlur(1.0))
  noisy = np.asarray(image, np.float32) + rng.normal(0, 16, (height, width, 3)).astype(np.float32)
  return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def make_records(folder, num_images, label_count, max_side=0, seed=0):
  """Writes num_images JPEGs (kept if already there) + image_list / image_label, and runs
  create_tfrecord.py into 2 shards (with --max_side if set).

  Returns (glob of the shards, mean stored bytes per record, create_tfrecord seconds)."""
  images = os.path.join(folder, "images")
  os.makedirs(images, exist_ok=True)
  label_rng = np.random.default_rng(seed)
  list_lines, label_lines = [], []
  for i in range(num_images):
    name = f"photo_{i:05d}.jpg"
    path = os.path.join(images, name)
    if not os.path.exists(path):
      buffer = io.BytesIO()
      make_photo(np.random.default_rng([seed, i])).save(buffer, "JPEG", quality=90)
      with open(path, "wb") as f:
        f.write(buffer.getvalue())
    labels = np.zeros(label_count, int)
    labels[label_rng.choice(label_count, int(label_rng.integers(1, 5)), replace=False)] = 1
    list_lines.append(f"{name} {labels.sum()}\n")
    label_lines.append(" ".join(map(str, labels)) + "\n")
  with open(os.path.join(folder, "image_list"), "w") as f:
    f.writelines(list_lines)
  with open(os.path.join(folder, "image_label"), "w") as f:
    f.writelines(label_lines)
  output = os.path.join(folder, f"records_{max_side}", "train.tfrecord")
  start = time.perf_counter()
  subprocess.run([sys.executable, os.path.join(REPO, "create_tfrecord.py"),
                  f"--image_dir={images}", f"--imglist_file={folder}/image_list",
                  f"--imglabel_file={folder}/image_label", f"--output_file={output}",
                  "--num_shards=2", f"--max_side={max_side}"],
                 check=True, cwd=REPO, stdout=subprocess.DEVNULL)
  seconds = time.perf_counter() - start
  shards = records.expand_file_spec(output + "-*")
  return output + "-*", sum(os.path.getsize(f) for f in shards) / num_images, seconds


# ---------------------------------------------------------------------------------------------
# Peak: a large 3x3 conv, a 1x1 conv and a matmul, in GFLOP/s; and the FLOPs of a forward pass.

def peak_runners(warmup, dtype=tf.float32):
  """GFLOP/s runners: a large 3x3 conv, a 1x1 conv and a matmul, forward, in the compute dtype
  (--precision)."""
  g = tf.random.Generator.from_seed(0)
  x = tf.cast(g.normal([16, 56, 56, 256]), dtype)
  w3, w1 = tf.cast(g.normal([3, 3, 256, 256]), dtype), tf.cast(g.normal([1, 1, 256, 1024]), dtype)
  a, b = tf.cast(g.normal([2048, 2048]), dtype), tf.cast(g.normal([2048, 2048]), dtype)
  cases = {
      "peak conv3x3 256->256 56x56 b16 GFLOP/s": (lambda: tf.nn.conv2d(x, w3, 1, "SAME"),
                                                  2 * 16 * 56 * 56 * 9 * 256 * 256),
      "peak conv1x1 256->1024 56x56 b16 GFLOP/s": (lambda: tf.nn.conv2d(x, w1, 1, "SAME"),
                                                   2 * 16 * 56 * 56 * 256 * 1024),
      "peak matmul 2048^3 GFLOP/s": (lambda: tf.matmul(a, b), 2 * 2048 ** 3),
  }
  runners = {}
  for name, (op, flops) in cases.items():
    fn = tf.function(lambda op=op: tf.reshape(op(), [-1])[0])  # a scalar: a cheap host sync
    runners[name] = step_runner(fn, lambda out: out.numpy(), flops / 1e9, 2, warmup)
  return runners


def forward_flops(fn, batch, size):
  """Conv + matmul FLOPs (2 per multiply-add) of each layer of one forward pass, read from the
  shapes in the traced graph, in graph order."""
  graph = tf.function(fn).get_concrete_function(
      tf.TensorSpec([batch, size, size, 3], tf.float32)).graph
  flops = []
  for op in graph.get_operations():
    if op.type == "Conv2D":
      kh, kw, cin, _ = op.inputs[1].shape
      flops.append(2 * op.outputs[0].shape.num_elements() * kh * kw * cin)
    elif op.type in ("MatMul", "BatchMatMulV2"):
      flops.append(2 * op.outputs[0].shape.num_elements() * op.inputs[0].shape[-1])
  return flops


# ---------------------------------------------------------------------------------------------
# The toolkit.

def model_configs(args, train_base_network, batch_size, files=""):
  model_config = configs.ModelConfig(
      label_count=args.label_count, input_tfrecord_file=files, batch_size=batch_size,
      target_height=args.image_size, target_width=args.image_size,
      train_base_network=train_base_network, precision=args.precision)
  train_config = configs.TrainConfig(xla=args.xla, seed=0)
  return model_config, train_config


def pipeline_rate(args, files, num_parallel_calls, what, service=None, pids=()):
  """(a): build_dataset in train mode, batches pulled as fast as it makes them. Measured alone:
  a live iterator's background threads would take CPU from whatever is measured next.
  service, pids: local_service's (the workers' CPU counts as this process's)."""
  model_config, _ = model_configs(args, False, args.batch_size, files)
  model_config.num_parallel_calls = num_parallel_calls
  iterator = iter(build_dataset(model_config, "train", seed=0, service=service))
  batches = 12 if args.quick else 24
  runner = step_runner(lambda: next(iterator), lambda out: out[0].numpy(), args.batch_size,
                       batches, warmup=6, pids=pids)
  return measure({what: runner}, args.windows, args.wait_quiet, wait_each_round=False)[what]


@contextlib.contextmanager
def local_service(workers, timeout=180):
  """A tf.data service on 127.0.0.1: a dispatcher in this process and `workers` data_service.py
  worker processes, so that the elements cross gRPC as they would between hosts. Yields
  (input_service.Service with no job name, the workers' pids)."""
  service = tf.data.experimental.service
  dispatcher = service.DispatchServer(service.DispatcherConfig(port=0))
  address = f"grpc://127.0.0.1:{dispatcher.target.rsplit(':', 1)[1]}"
  procs = [subprocess.Popen([sys.executable, os.path.join(REPO, "data_service.py"),
                             "--role=worker", "--port=0", "--worker_address=127.0.0.1",
                             f"--dispatcher_address={address}", "--status_secs=0"],
                            cwd=REPO, stdout=subprocess.DEVNULL) for _ in range(workers)]
  try:
    deadline = time.perf_counter() + timeout
    while dispatcher._num_workers() < workers:  # pylint: disable=protected-access
      if time.perf_counter() > deadline or any(p.poll() is not None for p in procs):
        raise RuntimeError(f"{workers} data_service.py worker(s) did not register within "
                           f"{timeout} s")
      time.sleep(0.2)
    yield input_service.Service(address), [p.pid for p in procs]
  finally:
    for p in procs:
      p.terminate()
    for p in procs:
      p.wait(timeout=60)
    dispatcher.stop()


def memory_batches(args, files, count):
  """`count` pipeline-made images and labels held in memory (numpy)."""
  model_config, _ = model_configs(args, False, count, files)
  images, labels = next(iter(build_dataset(model_config, "train", seed=1)))
  return images.numpy(), labels.numpy()


def memory_dataset(images, labels, batch, device=None):
  """Whole batches from memory, repeated: the train step is measured without the pipeline.
  device: e.g. '/gpu:0': copied there ahead of the step, as train.py does on one GPU."""
  n = len(images) // batch * batch
  x = images[:n].reshape([-1, batch] + list(images.shape[1:]))  # [N, ...] -> [N/b, b, ...]
  y = labels[:n].reshape([-1, batch, labels.shape[1]])
  dataset = tf.data.Dataset.from_tensor_slices((x, y)).repeat()
  if device:
    return dataset.apply(tf.data.experimental.prefetch_to_device(device, buffer_size=2))
  return dataset.prefetch(2)


def build_toolkit(args, train_base_network, batch):
  model_config, train_config = model_configs(args, train_base_network, batch)
  tf.random.set_seed(0)
  model = MultiLabelClassificationModel(model_config)
  optimizer = run_utils.make_optimizer(train_config, model.trainable_variables,
                                       loss_scale=args.precision == "mixed_float16")
  return model, optimizer, model_config, train_config


def train_runner(toolkit, data, batch, steps_per_window, warmup, device=None):
  """(b)/(c): train.make_train_step under the default strategy, over in-memory batches
  (memory_dataset's `device`)."""
  model, optimizer, model_config, train_config = toolkit
  model_config = dataclasses.replace(model_config, batch_size=batch)
  strategy = run_utils.make_strategy("default")
  step = train.make_train_step(model, optimizer, None, strategy, model_config, train_config)
  iterator = iter(memory_dataset(*data, batch, device))
  return step_runner(lambda: step(iterator), lambda out: float(out[0]["loss/classification"]),
                     batch, steps_per_window, warmup)


def ten_crop_batch(args, folder, count):
  """[count, 10, s, s, 3] crops of generated photos, preprocessed as inference.py does (its
  default resize: the original's 290/224 of the target)."""
  target = (args.image_size, args.image_size)
  resize = ten_crop_resize((0, 0), target)
  paths = sorted(os.listdir(os.path.join(folder, "images")))[:count]
  return tf.stack([preprocess_ten_crop(tf.io.read_file(os.path.join(folder, "images", p)),
                                       resize, target) for p in paths])


def scorer_runner(model, crops, warmup, xla):
  """(d): inference.make_scorer on a batch of [B, 10, s, s, 3] crops; xla as InferenceConfig.xla
  ("auto" by default, as inference.py runs it: the warm-up step picks XLA or not)."""
  score = inference.make_scorer(model, "mean", xla)
  return step_runner(lambda: score(crops), lambda out: out.numpy(), int(crops.shape[0]), 1,
                     warmup)


# ---------------------------------------------------------------------------------------------
# The peer: Keras's own ResNet50V2 with the same head, optimiser and batches.

def keras_peer(args, xla=None):
  """keras_peer.keras_model at this run's size, labels and precision; jit_compile=True with xla
  (default args.xla), else Keras's "auto" (which is off on a CPU-only machine)."""
  return keras_model(args.image_size, args.label_count, args.precision,
                     args.xla if xla is None else xla)


def keras_forward_flops(model, batch):
  """Conv FLOPs of each conv layer of one forward pass (2 per multiply-add), in layer order,
  from the layers' static shapes."""
  flops = []
  for layer in model.layers:
    if isinstance(layer, tf.keras.layers.Conv2D):
      kh, kw, cin, _ = layer.kernel.shape
      flops.append(2 * batch * math.prod(layer.output.shape[1:]) * kh * kw * cin)
  return flops


def keras_fit_runner(model, data, batch, steps_per_window, warmup):
  dataset, timer = memory_dataset(*data, batch), KerasWindow()

  def run(steps):
    model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False,
              callbacks=[timer])
    return timer.before, timer.after, steps * batch
  return lambda: run(warmup), lambda: run(steps_per_window)


def keras_predict_runner(model, crops, warmup, crops_per_batch=0):
  """Keras predict on the same crops, [B * 10, s, s, 3], as one batch (or batches of
  crops_per_batch); counted in images (10 crops each)."""
  flat = tf.reshape(crops, [-1] + crops.shape[2:].as_list())  # [B, 10, s, s, 3] -> [B*10, ...]
  per_batch = crops_per_batch or int(flat.shape[0])
  steps_per_pass = int(flat.shape[0]) // per_batch
  dataset = tf.data.Dataset.from_tensor_slices(flat).batch(per_batch).repeat()
  timer = KerasWindow()

  def run(passes):
    model.predict(dataset, steps=passes * steps_per_pass, verbose=0, callbacks=[timer])
    return timer.before, timer.after, passes * int(crops.shape[0])
  return lambda: run(warmup), lambda: run(1)


# ---------------------------------------------------------------------------------------------

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


def ratio(numerator, denominator):
  return None if numerator is None or not denominator else numerator / denominator


class Figures:
  """The run's figures: wall clock (`fig`), per CPU-second of this process (`cpu`), FLOPs."""

  def __init__(self):
    self.fig, self.cpu, self.flops = {}, {}, {}

  def record(self, key, result, scale=1.0):
    self.fig[key], self.cpu[key] = scale * result["per_s"], scale * result["per_cpu_s"]

  def record_peak(self, results):
    """The best of the peak runners' medians is the peak."""
    peak = {name: r for name, r in results.items() if name.startswith("peak ")}
    self.fig["peak_detail"] = {name: r["per_s"] for name, r in peak.items()}
    self.record("peak_gflops", peak[max(peak, key=lambda name: peak[name]["per_s"])])


# ---------------------------------------------------------------------------------------------
# The sections, in the order they run.

def pipeline_section(args, folder, files, figs):
  """(a), and the pipeline's scaling with num_parallel_calls (and --max_side records)."""
  print(f"(a) input pipeline, batch {args.batch_size}:", flush=True)
  figs.record("pipeline", pipeline_rate(args, files, -1, "AUTOTUNE images/s"))
  figs.record("pipeline_npc1", pipeline_rate(args, files, 1, "num_parallel_calls=1 images/s"))
  figs.record("pipeline_npc2", pipeline_rate(args, files, 2, "num_parallel_calls=2 images/s"))
  for workers in (1, 2):  # the same pipeline, its map on tf.data service workers (issue 15)
    with local_service(workers) as (service, pids):
      figs.record(f"pipeline_service_w{workers}", pipeline_rate(
          args, files, -1, f"tf.data service, {workers} worker(s), images/s", service, pids))
  if args.max_side:
    small, stored, _ = make_records(folder, args.num_images, args.label_count, args.max_side)
    figs.fig[f"record_kb_max_side_{args.max_side}"] = stored / 1e3
    figs.record(f"pipeline_max_side_{args.max_side}",
                pipeline_rate(args, small, -1, f"max_side={args.max_side} images/s"))


def train_section(args, data, keras_model, figs, scaling):
  """(b) interleaved with (e) fit and the peak runners; then the batch scaling."""
  b, size, flops = args.batch_size, args.image_size, figs.flops
  toolkit = build_toolkit(args, True, b)
  layers = forward_flops(lambda x: toolkit[0](x, training=True)[0], b, size)
  flops["forward"], flops["head"] = sum(layers), sum(layers[-3:])  # the head: the last 3
  # Forward + input gradients + weight gradients, each costing the forward's FLOPs, except the
  # input gradients nothing uses: the image's (full), the backbone output's (frozen).
  flops["train_full"] = 3 * flops["forward"] - layers[0]
  flops["train_frozen"] = flops["forward"] + 2 * flops["head"] - layers[-3]
  print(f"FLOPs at batch {b}: forward {flops['forward'] / 1e9:.1f} G, full train step "
        f"{flops['train_full'] / 1e9:.1f} G", flush=True)
  print(f"(b) full fine-tune step, batch {b}" + (", (e) keras fit" if keras_model else "")
        + (", conv/matmul peak" if "peak" in args.sections else "") + ", interleaved:",
        flush=True)
  runners = {"toolkit full images/s": train_runner(toolkit, data, b, 1, args.warmup)}
  if keras_model:
    runners["keras fit images/s"] = keras_fit_runner(keras_model, data, b, 1, args.warmup)
  if "peak" in args.sections:  # under the same load as the step, for peak_fraction
    runners.update(peak_runners(args.warmup, compute_dtype(args.precision)))
  result = measure(runners, args.train_windows, args.wait_quiet)
  if "peak" in args.sections:
    figs.record_peak(result)
  figs.record("train_full", result["toolkit full images/s"])
  figs.record("train_full_gflops", result["toolkit full images/s"], flops["train_full"] / b / 1e9)
  if keras_model:
    keras_layers = keras_forward_flops(keras_model, b)
    flops["keras_train_full"] = 3 * sum(keras_layers) - keras_layers[0]  # as the toolkit's
    figs.record("keras_fit", result["keras fit images/s"])
    figs.record("keras_fit_gflops", result["keras fit images/s"],
                flops["keras_train_full"] / b / 1e9)
  if len(scaling) > 1:
    print("scaling, full fine-tune step:", flush=True)
    rates = {b: result["toolkit full images/s"]}
    for batch in scaling:
      if batch != b:
        what = f"batch {batch} images/s"
        runner = train_runner(toolkit, data, batch, 1, args.warmup)
        rates[batch] = measure({what: runner}, args.train_windows, args.wait_quiet)[what]
    rates = sorted(rates.items())
    figs.fig["scaling_step_s"] = {str(k): k / r["per_s"] for k, r in rates}
    figs.fig["scaling_ms_per_image"] = {str(k): 1e3 / r["per_s"] for k, r in rates}
    # CPU-ms per image: the same check, immune to colleagues' jobs taking cores mid-run.
    figs.fig["scaling_cpu_ms_per_image"] = {str(k): 1e3 / r["per_cpu_s"] for k, r in rates}


def frozen_section(args, data, figs):
  """(c): the default config's step: no gradients through the backbone."""
  print(f"(c) frozen-backbone step, batch {args.batch_size}:", flush=True)
  what = "toolkit frozen images/s"
  runner = train_runner(build_toolkit(args, False, args.batch_size), data, args.batch_size, 2,
                        args.warmup)
  result = measure({what: runner}, args.windows, args.wait_quiet)[what]
  figs.record("train_frozen", result)
  if figs.flops:
    figs.record("train_frozen_gflops", result, figs.flops["train_frozen"] / args.batch_size / 1e9)


def inference_section(args, folder, keras_model, figs):
  """(d) interleaved with (e) predict on the same crops; with --levers also the scorer without
  XLA, Keras predict with XLA, and Keras predict one image (10 crops) per batch."""
  crops = ten_crop_batch(args, folder, args.infer_images)
  print(f"(d) 10-crop inference, {args.infer_images} images ({10 * args.infer_images} crops) per "
        "batch" + (", (e) keras predict on the same crops" if keras_model else "") +
        ", interleaved:", flush=True)
  model = build_toolkit(args, False, args.batch_size)[0]
  names = {"inference": "toolkit 10-crop images/s",
           "keras_predict_10crop_images": "keras predict 10-crop images/s",
           "lever_inference_no_xla": "lever: toolkit 10-crop, scorer without XLA",
           "lever_keras_predict_xla": "lever: keras predict, jit_compile=True",
           "lever_keras_predict_b10": "lever: keras predict, batches of 10 crops"}
  warmup, xla = args.warmup, "true" if args.xla else configs.InferenceConfig().xla
  runners = {names["inference"]: scorer_runner(model, crops, warmup, xla)}
  if keras_model:
    runners[names["keras_predict_10crop_images"]] = keras_predict_runner(keras_model, crops,
                                                                         warmup)
  if args.levers:
    runners[names["lever_inference_no_xla"]] = scorer_runner(model, crops, warmup, xla="false")
    if keras_model:
      runners[names["lever_keras_predict_b10"]] = keras_predict_runner(keras_model, crops,
                                                                       warmup, 10)
      if not args.xla:
        runners[names["lever_keras_predict_xla"]] = keras_predict_runner(
            keras_peer(args, xla=True), crops, warmup)
  result = measure(runners, args.windows, args.wait_quiet)
  for key, name in names.items():
    if name in result:
      figs.record(key, result[name])
  if keras_model:
    figs.record("keras_predict_crops", result[names["keras_predict_10crop_images"]], 10.0)


RATIOS = {"fit_ratio": ("train_full", "keras_fit"),
          "frozen_ratio": ("train_frozen", "train_full"),
          "pipeline_ratio": ("pipeline", "train_full"),
          "pipeline_service_w1_ratio": ("pipeline_service_w1", "pipeline"),
          "pipeline_service_w2_ratio": ("pipeline_service_w2", "pipeline"),
          "inference_ratio": ("inference", "keras_predict_10crop_images"),
          "peak_fraction": ("train_full_gflops", "peak_gflops"),
          "keras_peak_fraction": ("keras_fit_gflops", "peak_gflops"),
          "lever_inference_no_xla_ratio": ("lever_inference_no_xla", "keras_predict_10crop_images"),
          "lever_inference_vs_keras_xla": ("inference", "lever_keras_predict_xla"),
          "lever_inference_vs_keras_b10": ("inference", "lever_keras_predict_b10")}


def print_table(out):
  """The figures: wall clock, and per CPU-second of this process where it applies."""
  fig, cpu = out["figures"], out["per_cpu_second"]
  rows = [(k, v, cpu.get(k)) for k, v in fig.items()
          if not isinstance(v, dict) and not (v is None and k.startswith("lever"))]
  for key in ("peak_detail", "scaling_step_s", "scaling_ms_per_image",
              "scaling_cpu_ms_per_image"):
    rows += [(f"{key} [{k}]", v, None) for k, v in fig.get(key, {}).items()]
  rows += [(f"goal {k} >= {v}", out["goals"][k], None) for k, v in GOALS.items()]
  rows += [("others' CPU share per window, median / max",
            "{median:.2f} / {max:.2f}".format(**out["others_cpu"]), None),
           ("load average start / end", f"{out['load_start']} / {out['load_end']}", None),
           ("seconds", out["seconds"], None)]
  fmt = lambda v: "-" if v is None else (f"{v:,.2f}" if isinstance(v, float) else str(v))
  width = max(len(name) for name, _, _ in rows)
  print("\n" + f"{'figure':<{width}}  {'wall clock':>14}  {'per CPU-second':>14}")
  print("-" * (width + 32))
  for name, value, per_cpu in rows:
    print(f"{name:<{width}}  {fmt(value):>14}  {'' if per_cpu is None else fmt(per_cpu):>14}")
  print("-" * (width + 32))


def main(argv):
  args = parse_args(argv)
  if args.intra_op:
    tf.config.threading.set_intra_op_parallelism_threads(args.intra_op)
  if args.inter_op:
    tf.config.threading.set_inter_op_parallelism_threads(args.inter_op)
  start, sections, figs, section_s = time.perf_counter(), args.sections, Figures(), {}
  out = {"machine": machine(), "settings": dict(vars(args), sections=sorted(sections)),
         "load_start": loadavg()}
  print(f"machine: {json.dumps(out['machine'])}\nload average (1 min): {out['load_start']}",
        flush=True)
  folder = args.keep_dir or tempfile.mkdtemp(prefix="throughput_")
  last = [start]

  def lap(name):
    section_s[name] = round(time.perf_counter() - last[0], 1)
    last[0] = time.perf_counter()

  print(f"data: {args.num_images} photos 640x480 -> create_tfrecord.py (2 shards)", flush=True)
  files, stored, figs.fig["create_tfrecord_s"] = make_records(folder, args.num_images,
                                                              args.label_count)
  figs.fig["record_kb"] = stored / 1e3
  lap("data")
  if "pipeline" in sections:
    pipeline_section(args, folder, files, figs)
    lap("pipeline")
  b = args.batch_size  # scaling: b/2, b, 2b; --quick leaves 2b out (its trace + steps: ~40 s)
  scaling = sorted(({max(1, b // 2), b} if args.quick else {max(1, b // 2), b, 2 * b})
                   if "scaling" in sections else {b})
  data = memory_batches(args, files, 2 * max(scaling))
  keras_model = keras_peer(args) if "keras" in sections else None
  if {"train", "scaling"} & sections:
    train_section(args, data, keras_model, figs, scaling)
    lap("train")
  elif "peak" in sections:
    peak = peak_runners(args.warmup, compute_dtype(args.precision))
    figs.record_peak(measure(peak, args.windows, args.wait_quiet))
  if "frozen" in sections:
    frozen_section(args, data, figs)
    lap("frozen")
  if "inference" in sections:
    inference_section(args, folder, keras_model, figs)
    lap("inference")
  if not args.keep_dir:
    shutil.rmtree(folder, ignore_errors=True)

  fig, cpu = figs.fig, figs.cpu
  for name, (num, den) in RATIOS.items():
    fig[name], cpu[name] = ratio(fig.get(num), fig.get(den)), ratio(cpu.get(num), cpu.get(den))
  out["goals"] = {k: (None if fig[k] is None else fig[k] >= v) for k, v in GOALS.items()}
  others = [o for r in WINDOWS.values() for o in r["others_cpu"]] or [0.0]
  out.update(figures=fig, per_cpu_second=cpu, flops_per_step=figs.flops, section_s=section_s,
             others_cpu={"median": statistics.median(others), "max": max(others),
                         "windows": len(others)},
             windows=WINDOWS, load_end=loadavg(), seconds=time.perf_counter() - start)
  print_table(out)
  print(json.dumps(out, default=float))


if __name__ == "__main__":
  main(sys.argv[1:])
