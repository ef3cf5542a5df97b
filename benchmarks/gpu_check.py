"""The GPU check of issue 15: what one GPU gives, in one JSON, in under 8 minutes.

Run it through benchmarks/gpu_check.sh, which sets the time limit and the environment:

    bash benchmarks/gpu_check.sh              # one GPU: benchmarks/results/gpu_check_<date>.json
    bash benchmarks/gpu_check.sh --dry_run    # tiny sizes on any machine, a CPU too

It builds its records from bench_data.py's COCO-like photos (640x480 JPEGs of ~140 KB, through
create_tfrecord.py) and measures, each figure the median of timed windows after warm-up steps
(timing.measure; warm-up includes tracing and XLA's compilation):
  - pipeline: build_dataset in train mode at 224, batch 256, num_parallel_calls AUTOTUNE, that
    is every core of the machine; images/s;
  - inference: scoring.make_scorer(xla="auto") as inference.py runs it by default, on batches
    of 8 images (80 crops of 224); images/s;
  - train_<precision>_<xla|noxla>_b<batch>: train_step.make_train_step, the full fine-tune
    (train_base_network=True) at 224 for float32 and mixed_bfloat16, XLA off and on, batch 128
    and 256, over batches held on the GPU (prefetch_to_device, as train.py does on one GPU);
    images/s.
The JSON holds the machine (CPU, cores, GPUs and their compute capability, the driver's and
TensorFlow's CUDA and cuDNN versions) and is rewritten after each figure, so a run cut short
keeps what it measured; figures not started within --budget_s are listed in "skipped".
"""

import argparse
import datetime
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
BENCHMARKS = os.path.dirname(os.path.abspath(__file__))

import tensorflow as tf

from multilabel import files
from benchmarks import toolkit_runners as runners
from benchmarks.bench_data import make_records, ten_crop_batch
from benchmarks.timing import machine, measure

FULL = dict(image_size=224, batches=(256, 128), photos=256, pipeline_batch=256, windows=3,
            steps=10, warmup=3, infer_images=8)
DRY_RUN = dict(image_size=32, batches=(4, 2), photos=8, pipeline_batch=4, windows=1, steps=1,
               warmup=1, infer_images=2)
PRECISIONS = ("mixed_bfloat16", "float32")  # the faster first: the budget may cut the rest


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--dry_run", action="store_true", help="tiny sizes, to check the script")
  p.add_argument("--out", default="", help="the JSON; default benchmarks/results/"
                 "gpu_check_<date>.json, or gpu_check_dry_run.json in the temp dir")
  p.add_argument("--budget_s", type=float, default=400, help="start no figure after this many "
                 "seconds (gpu_check.sh kills the run at 480)")
  p.add_argument("--keep_dir", default="", help="write the photos and records here and keep "
                 "them (default: a temp dir, removed)")
  args = p.parse_args(argv)
  args.sizes = DRY_RUN if args.dry_run else FULL
  if not args.out:
    args.out = (os.path.join(os.environ.get("TMPDIR", "/tmp"), "gpu_check_dry_run.json")
                if args.dry_run else os.path.join(
                    BENCHMARKS, "results", f"gpu_check_{datetime.date.today()}.json"))
  return args


def gpu_versions():
  """The GPUs (name, compute capability), TensorFlow's CUDA/cuDNN build, and nvidia-smi's
  driver and CUDA versions (None without nvidia-smi)."""
  build = tf.sysconfig.get_build_info()
  info = {"tensorflow_cuda": build.get("cuda_version"), "tensorflow_cudnn":
          build.get("cudnn_version"),
          "devices": [tf.config.experimental.get_device_details(gpu)
                      for gpu in tf.config.list_physical_devices("GPU")]}
  try:
    smi = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=60).stdout
    query = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                            "--format=csv,noheader"], capture_output=True, text=True,
                           timeout=60).stdout
  except (OSError, subprocess.TimeoutExpired):
    smi = query = None
  cuda = re.search(r"CUDA Version: *([\d.]+)", smi or "")
  info.update(nvidia_smi=query.strip().splitlines() if query else None,
              driver_cuda=cuda[1] if cuda else None)
  return info


class Report:
  """The JSON, written atomically after each figure."""

  def __init__(self, path, settings):
    self.path, self.start = path, time.perf_counter()
    self.out = {"machine": machine(), "gpu": gpu_versions(), "settings": settings,
                "figures": {}, "seconds": {}, "skipped": [], "complete": False}

  def add(self, name, result, started):
    self.out["figures"][name] = round(result["per_s"], 2)
    self.out["seconds"][name] = round(time.perf_counter() - started, 1)
    self.write()

  def write(self):
    self.out["elapsed_s"] = round(time.perf_counter() - self.start, 1)
    with files.atomic_write(self.path) as f:
      json.dump(self.out, f, indent=2, default=str)


def figures(args, bench, folder, files):
  """(name, function returning a timing.measure result) in the order they run."""
  sizes, device = args.sizes, "/gpu:0" if tf.config.list_logical_devices("GPU") else None
  data = runners.memory_batches(bench, files, 2 * max(sizes["batches"]))

  def pipeline():
    bench.batch_size = sizes["pipeline_batch"]
    return runners.pipeline_rate(bench, files, -1, "pipeline images/s")

  def inference():
    bench.precision, bench.xla = "float32", False  # inference.py's defaults
    model = runners.build_toolkit(bench, False, sizes["infer_images"])[0]
    crops = ten_crop_batch(bench.image_size, folder, sizes["infer_images"])
    runner = runners.scorer_runner(model, crops, sizes["warmup"], "auto")
    return measure({"inference": runner}, sizes["windows"])["inference"]

  def train(precision, xla, batch):
    def run():
      bench.precision, bench.xla = precision, xla
      toolkit = runners.build_toolkit(bench, True, batch)
      runner = runners.train_runner(toolkit, data, batch, sizes["steps"], sizes["warmup"],
                                    device)
      return measure({"train": runner}, sizes["windows"])["train"]
    return run

  yield "pipeline", pipeline
  yield "inference", inference
  for precision in PRECISIONS:
    for xla in (True, False):
      for batch in sizes["batches"]:
        yield f"train_{precision}_{'xla' if xla else 'noxla'}_b{batch}", train(precision, xla,
                                                                               batch)


def main(argv):
  args = parse_args(argv)
  sizes = args.sizes
  bench = runners.Settings(image_size=sizes["image_size"], label_count=80,
                           windows=sizes["windows"])
  report = Report(args.out, dict(sizes, dry_run=args.dry_run, budget_s=args.budget_s))
  print(f"gpu check{' (dry run)' if args.dry_run else ''}: {json.dumps(report.out['gpu'])}",
        flush=True)
  folder = args.keep_dir or tempfile.mkdtemp(prefix="gpu_check_")
  files, _, _ = make_records(folder, sizes["photos"], bench.label_count)
  for name, measure in figures(args, bench, folder, files):
    if time.perf_counter() - report.start > args.budget_s:
      report.out["skipped"].append(name)
      continue
    print(f"{name}:", flush=True)
    started = time.perf_counter()
    report.add(name, measure(), started)
    gc.collect()  # the last figure's model and step: only one set on the GPU at a time
  report.out["complete"] = not report.out["skipped"]
  report.write()
  if not args.keep_dir:
    shutil.rmtree(folder, ignore_errors=True)
  width = max(map(len, report.out["figures"]))
  for name, value in report.out["figures"].items():
    print(f"{name:<{width}}  {value:>10,.2f} images/s  ({report.out['seconds'][name]} s)")
  if report.out["skipped"]:
    print(f"skipped (over --budget_s={args.budget_s:g}): {', '.join(report.out['skipped'])}")
  print(f"wrote {args.out}")
  print(json.dumps(report.out, default=str))


if __name__ == "__main__":
  main(sys.argv[1:])
