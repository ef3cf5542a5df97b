"""Throughput of the toolkit against a hand-written Keras fine-tune, in one process (issue 6).

Generates COCO-like 640x480 JPEGs (smooth colour fields, shapes and sensor noise, ~140 KB each),
writes 2 TFRecord shards with create_tfrecord.py, then measures, warm-up excluded, each figure the
median of several timed windows (compared figures interleaved, window by window):
  a. the input pipeline alone (build_dataset, train mode), images/s, here and with its
     per-element map on 1 and 2 local tf.data service workers (data_service.py processes);
  b. the full fine-tune step (train_step.make_train_step, train_base_network=True), images/s;
  c. the frozen-backbone step (the default config), images/s;
  d. 10-crop inference (scoring.make_scorer), images/s;
  e. the peer: keras.applications.ResNet50V2(weights=None) + the same 3-conv head, same optimiser
     settings, model.fit and model.predict on the same in-memory batches and crops;
plus a conv/matmul peak (GFLOP/s) measured beside (b), the share of it that (b) achieves, and
scaling checks: the step at batch b/2, b, 2b (--quick: b/2, b) and the pipeline with 1 and 2
parallel calls. Prints a table, then as the last line one JSON object with every figure.
benchmarks/README.md explains each figure. This file holds the sections and the report; the
parts are timing.py (the harness), bench_data.py (the photos and records), toolkit_runners.py
(the toolkit's runners, the peak) and keras_peer.py (the peer and its runners).

    python benchmarks/throughput.py --quick     # ~3 min on 2 idle cores
    python benchmarks/throughput.py             # the full run, with levers: ~10 min
    python benchmarks/throughput.py --xla --precision=mixed_bfloat16 --batch_size=256   # a GPU
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import tensorflow as tf

import configs
from benchmarks.bench_data import make_records, ten_crop_batch
from benchmarks.keras_peer import (keras_fit_runner, keras_forward_flops, keras_model,
                                   keras_predict_runner)
from benchmarks.throughput_report import Figures, print_table, summarise
from benchmarks.timing import loadavg, machine, measure
from benchmarks.toolkit_runners import (build_toolkit, forward_flops, local_service,
                                        memory_batches, peak_runners, pipeline_rate,
                                        scorer_runner, train_runner)
from multi_label_classification_model import compute_dtype

SECTIONS = ("peak", "pipeline", "train", "frozen", "scaling", "inference", "keras")

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


def keras_peer(args, xla=None):
  """keras_peer.keras_model at this run's size, labels and precision; jit_compile=True with xla
  (default args.xla), else Keras's "auto" (which is off on a CPU-only machine)."""
  return keras_model(args.image_size, args.label_count, args.precision,
                     args.xla if xla is None else xla)


# ---------------------------------------------------------------------------------------------
# The sections, in the order they run.

def pipeline_section(args, folder, files, figs):
  """(a), and the pipeline's scaling with num_parallel_calls (and --max_side records)."""
  print(f"(a) input pipeline, batch {args.batch_size}:", flush=True)
  rate = lambda files, npc, what, *service: pipeline_rate(args, files, npc, what, *service,
                                                          seen=figs.windows)
  figs.record("pipeline", rate(files, -1, "AUTOTUNE images/s"))
  figs.record("pipeline_npc1", rate(files, 1, "num_parallel_calls=1 images/s"))
  figs.record("pipeline_npc2", rate(files, 2, "num_parallel_calls=2 images/s"))
  for workers in (1, 2):  # the same pipeline, its map on tf.data service workers (issue 15)
    with local_service(workers) as (service, pids):
      figs.record(f"pipeline_service_w{workers}", rate(
          files, -1, f"tf.data service, {workers} worker(s), images/s", service, pids))
  if args.max_side:
    small, stored, _ = make_records(folder, args.num_images, args.label_count, args.max_side)
    figs.fig[f"record_kb_max_side_{args.max_side}"] = stored / 1e3
    figs.record(f"pipeline_max_side_{args.max_side}",
                rate(small, -1, f"max_side={args.max_side} images/s"))


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
  result = measure(runners, args.train_windows, args.wait_quiet, seen=figs.windows)
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
        rates[batch] = measure({what: runner}, args.train_windows, args.wait_quiet,
                               seen=figs.windows)[what]
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
  result = measure({what: runner}, args.windows, args.wait_quiet, seen=figs.windows)[what]
  figs.record("train_frozen", result)
  if figs.flops:
    figs.record("train_frozen_gflops", result, figs.flops["train_frozen"] / args.batch_size / 1e9)


def inference_section(args, folder, keras_model, figs):
  """(d) interleaved with (e) predict on the same crops; with --levers also the scorer without
  XLA, Keras predict with XLA, and Keras predict one image (10 crops) per batch."""
  crops = ten_crop_batch(args.image_size, folder, args.infer_images)
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
  result = measure(runners, args.windows, args.wait_quiet, seen=figs.windows)
  for key, name in names.items():
    if name in result:
      figs.record(key, result[name])
  if keras_model:
    figs.record("keras_predict_crops", result[names["keras_predict_10crop_images"]], 10.0)


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
    figs.record_peak(measure(peak, args.windows, args.wait_quiet, seen=figs.windows))
  if "frozen" in sections:
    frozen_section(args, data, figs)
    lap("frozen")
  if "inference" in sections:
    inference_section(args, folder, keras_model, figs)
    lap("inference")
  if not args.keep_dir:
    shutil.rmtree(folder, ignore_errors=True)

  summarise(out, figs, start, section_s)
  print_table(out)
  print(json.dumps(out, default=float))


if __name__ == "__main__":
  main(sys.argv[1:])
