"""The toolkit's side of the benchmarks: its configs at a benchmark's settings, and runners
(timing.py's) of its input pipeline, train step and 10-crop scorer, as the scripts run them;
the conv/matmul peak beside them, and a forward pass's FLOPs.

`args` is any object with the fields of Settings (throughput.py's parsed flags have them).
"""

import contextlib
import dataclasses
import os
import subprocess
import sys
import time

import tensorflow as tf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import configs
from multilabel import runtime, serving
from multilabel.data import input_service
from multilabel.training import optimizers
from multi_label_classification_model import MultiLabelClassificationModel
from multilabel.data.preprocessing import build_dataset
from multilabel.training.train_step import make_train_step
from benchmarks.bench_data import memory_dataset
from benchmarks.timing import measure, step_runner


@dataclasses.dataclass
class Settings:
  """What the runners read of a benchmark's settings; throughput.py's flags of the same names."""
  batch_size: int = 16  # train batch, images
  image_size: int = 224  # network input side, a multiple of 32
  label_count: int = 80  # labels (COCO has 80)
  precision: str = "float32"  # ModelConfig.precision
  xla: bool = False  # TrainConfig.xla
  quick: bool = False  # fewer pipeline batches per window (12, not 24)
  windows: int = 5  # timed windows per figure
  wait_quiet: float = 0.0  # seconds to wait for a quiet machine before the windows


def model_configs(args, train_base_network, batch_size, files=""):
  model_config = configs.ModelConfig(
      label_count=args.label_count, input_tfrecord_file=files, batch_size=batch_size,
      target_height=args.image_size, target_width=args.image_size,
      train_base_network=train_base_network, precision=args.precision)
  train_config = configs.TrainConfig(xla=args.xla, seed=0)
  return model_config, train_config


def pipeline_rate(args, files, num_parallel_calls, what, service=None, pids=(), seen=None):
  """(a): build_dataset in train mode, batches pulled as fast as it makes them. Measured alone:
  a live iterator's background threads would take CPU from whatever is measured next.
  service, pids: local_service's (the workers' CPU counts as this process's). seen: measure's."""
  model_config, _ = model_configs(args, False, args.batch_size, files)
  model_config.num_parallel_calls = num_parallel_calls
  iterator = iter(build_dataset(model_config, "train", seed=0, service=service))
  batches = 12 if args.quick else 24
  runner = step_runner(lambda: next(iterator), lambda out: out[0].numpy(), args.batch_size,
                       batches, warmup=6, pids=pids)
  return measure({what: runner}, args.windows, args.wait_quiet, wait_each_round=False,
                 seen=seen)[what]


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


def build_toolkit(args, train_base_network, batch):
  model_config, train_config = model_configs(args, train_base_network, batch)
  tf.random.set_seed(0)
  model = MultiLabelClassificationModel(model_config)
  optimizer = optimizers.make_optimizer(train_config, model.trainable_variables,
                                       loss_scale=args.precision == "mixed_float16")
  return model, optimizer, model_config, train_config


def train_runner(toolkit, data, batch, steps_per_window, warmup, device=None):
  """(b)/(c): make_train_step under the default strategy, over in-memory batches
  (memory_dataset's `device`)."""
  model, optimizer, model_config, train_config = toolkit
  model_config = dataclasses.replace(model_config, batch_size=batch)
  strategy = runtime.make_strategy("default")
  step = make_train_step(model, optimizer, None, strategy, model_config, train_config)
  iterator = iter(memory_dataset(*data, batch, device))
  return step_runner(lambda: step(iterator), lambda out: float(out[0]["loss/classification"]),
                     batch, steps_per_window, warmup)


def scorer_runner(model, crops, warmup, xla):
  """(d): serving.make_scorer on a batch of [B, 10, s, s, 3] crops; xla as InferenceConfig.xla
  ("auto" by default, as inference.py runs it: the warm-up step picks XLA or not)."""
  score = serving.make_scorer(model, "mean", xla)
  return step_runner(lambda: score(crops), lambda out: out.numpy(), int(crops.shape[0]), 1,
                     warmup)


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
