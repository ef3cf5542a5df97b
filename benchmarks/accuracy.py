"""Accuracy of the toolkit's training recipes against a hand-written Keras fine-tune (issue 11).

Builds the demo's multi-label digits (make_demo_data.py, sklearn's handwritten digits: no
download) and writes train and eval TFRecords with create_tfrecord.py (bench_data.py). Then, for
each seed, it trains every recipe with train.py (a subprocess, exactly as a user runs it) and
the Keras peer (keras_peer.py: ResNet50V2(weights=None) + the original head, Adam with clipping
at 5 and the `short` recipe's learning-rate schedule), with the same steps, batch, image size
and seed, from scratch. Every model is scored on the held-out eval split at a few step counts by the same code
(metrics.mean_average_precision over build_dataset's eval pass). Prints a table, then as the
last line one JSON object with every figure.

Recipes (train.py flags on top of the demo's: 32 px crops of the 64 px images, the whole network
trained, batch norm decay 0.9, Adam at lr 0.001 with global-norm clipping at 5):
  original     the original toolkit's: augmentation=seed, head_depth=0 (label_count wide),
               exponential decay
  short        for short runs from scratch: augmentation=none, head_depth=256, cosine decay
               after a 5% warmup
  long         for long runs: as short, with augmentation=randaugment
The Keras peer sees the same images as `short` (no augmentation) through the toolkit's pipeline.

    python benchmarks/accuracy.py --quick          # ~10 min on 2 cores: short and Keras
    python benchmarks/accuracy.py                  # every recipe: ~80 min on 2 cores
    python benchmarks/accuracy.py --recipes=short,keras --seeds=0,1,2,3,4 --steps=300
"""

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import numpy as np
import tensorflow as tf

import configs
import multi_label_classification_model as mlc
from multilabel import metrics
from multilabel.training import optimizers
from multilabel.data.preprocessing import build_dataset
from benchmarks.bench_data import make_demo_records, run_script
from benchmarks.keras_peer import keras_model

LABELS = 10  # make_demo_data.py's digits 0..9
COMMON = [f"--label_count={LABELS}", "--train_base_network=true", "--batch_norm_decay=0.9",
          "--gpu_id=-1"]
RECIPES = {
    "original": [],
    "short": ["--augmentation=none", "--head_depth=256", "--lr_schedule=cosine",
              "--warmup_steps={warmup}"],
    "long": ["--augmentation=randaugment", "--head_depth=256", "--lr_schedule=cosine",
             "--warmup_steps={warmup}"],
}
PEER = "keras"


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--quick", action="store_true", help="recipes short + keras, 150 steps")
  p.add_argument("--recipes", default="", help=f"comma list of {','.join(RECIPES)},{PEER} "
                 "(default: all; --quick: short,keras)")
  p.add_argument("--seeds", default="0,1,2", help="comma list of seeds (weights and shuffling)")
  p.add_argument("--steps", type=int, default=0, help="train steps; 0 = 600 (--quick: 150)")
  p.add_argument("--evals", type=int, default=3, help="score at this many evenly spaced steps")
  p.add_argument("--batch_size", type=int, default=64, help="images per step")
  p.add_argument("--image_size", type=int, default=32, help="network input side (a multiple "
                 "of 32); train crops come from a resize 9/8 as large, as the demo's")
  p.add_argument("--flags", default="", help="extra train.py flags for every toolkit recipe, "
                 "e.g. '--learning_rate=0.0003'")
  p.add_argument("--data_flags", default="", help="extra make_demo_data.py flags, e.g. "
                 "'--num_train=1000'")
  p.add_argument("--keep_dir", default="", help="work here and keep it (default: a temp dir)")
  args = p.parse_args(argv)
  args.steps = args.steps or (150 if args.quick else 600)
  if args.image_size % 32:
    p.error(f"--image_size={args.image_size}: must be a multiple of 32")
  names = args.recipes or ("short,keras" if args.quick else ",".join([*RECIPES, PEER]))
  args.recipes = [r for r in names.split(",") if r]
  unknown = sorted(set(args.recipes) - {*RECIPES, PEER})
  if unknown:
    p.error(f"--recipes: unknown {unknown}; known: {', '.join([*RECIPES, PEER])}")
  args.seeds = [int(s) for s in args.seeds.split(",")]
  if not 1 <= args.evals <= args.steps:
    p.error(f"--evals={args.evals}: must be in [1, --steps]")
  args.eval_steps = [round(args.steps * (i + 1) / args.evals) for i in range(args.evals)]
  return args


def sizes(size):
  """The demo's geometry: size x size crops of a resize 9/8 as large (72 for 64, 36 for 32)."""
  resize = round(size * 9 / 8)
  return dict(target_height=size, target_width=size, resize_height=resize, resize_width=resize)


def mean_ap(predict, eval_spec, size):
  """mAP on the eval split of `predict`: [B, size, size, 3] in [-1, 1] -> [B, L] scores."""
  config = configs.ModelConfig(label_count=LABELS, input_tfrecord_file=eval_spec, batch_size=50,
                               **sizes(size))
  scores, labels = [], []
  for images, batch_labels, _ in build_dataset(config, "eval"):
    scores.append(np.asarray(predict(images)))
    labels.append(batch_labels.numpy())
  return metrics.mean_average_precision(np.concatenate(labels), np.concatenate(scores))[0]


def train_recipe(args, work, specs, recipe, seed):
  """train.py with the recipe's flags; mAP of the checkpoints at args.eval_steps.
  Returns ({step: mAP}, train images/s (the median logged window), dead head units at the end
  (my_conv_1, my_conv_2))."""
  train_dir = os.path.join(work, f"{recipe}_seed{seed}")
  every = args.eval_steps[0]  # evenly spaced: the first is the interval
  recipe_flags = [f.format(warmup=args.steps // 20) for f in RECIPES[recipe]]  # 5%
  geometry = [f"--{key}={value}" for key, value in sizes(args.image_size).items()]
  flags = [*COMMON, *geometry, *recipe_flags, *args.flags.split(), f"--input_tfrecord_file={specs['train']}",
           f"--train_dir={train_dir}", f"--number_of_steps={args.steps}",
           f"--batch_size={args.batch_size}", f"--seed={seed}", "--max_to_keep=1000",
           f"--save_checkpoint_steps={every}", "--save_checkpoint_secs=0",
           f"--log_every_n_steps={min(20, args.steps)}", "--image_summary_steps=0"]
  run_script(["train.py", *flags], train_dir + ".log")
  with open(train_dir + ".log") as f:
    log = f.read()
  dead = re.findall(r"dead head units (\d+)\+(\d+)", log)
  rates = [float(r) for r in re.findall(r"([0-9.]+) images/s", log)][1:]  # the first traces
  result = {}
  for step in args.eval_steps:
    model = mlc.load_trained_model(os.path.join(train_dir, f"ckpt-{step}"))[0]
    forward = tf.function(lambda images: model(images)[1]["predictions"])
    result[step] = mean_ap(forward, specs["eval"], args.image_size)
  rate = statistics.median(rates) if rates else float("nan")
  return result, rate, tuple(int(n) for n in dead[-1]) if dead else None


class EvalAt(tf.keras.callbacks.Callback):
  """Scores the peer on the eval split at the end of each 'epoch' (one eval interval), and keeps
  the time that takes, so that the peer's train time leaves it out as the toolkit's does."""

  def __init__(self, eval_spec, steps, size):
    super().__init__()
    self.eval_spec, self.steps, self.size, self.result, self.seconds = eval_spec, list(steps), \
        size, {}, 0.0

  def on_epoch_end(self, epoch, logs=None):
    start = time.time()
    forward = tf.function(lambda images: self.model(images, training=False))
    self.result[self.steps[epoch]] = mean_ap(forward, self.eval_spec, self.size)
    self.seconds += time.time() - start


def peer_schedule(args):
  """The `short` recipe's learning-rate schedule, built by the toolkit's own function."""
  train_config = configs.TrainConfig(lr_schedule="cosine", warmup_steps=args.steps // 20,
                                     number_of_steps=args.steps)
  return optimizers.learning_rate_schedule(train_config)


def train_keras(args, specs, seed):
  """The Keras peer on the toolkit's un-augmented train pipeline, fit over the same steps."""
  tf.keras.utils.set_random_seed(seed)
  model = keras_model(args.image_size, LABELS, learning_rate=peer_schedule(args))
  config = configs.ModelConfig(label_count=LABELS, input_tfrecord_file=specs["train"],
                               batch_size=args.batch_size, augmentation="none",
                               **sizes(args.image_size))
  data = build_dataset(config, "train", seed=seed)
  steps = [0, *args.eval_steps]
  if len({b - a for a, b in zip(steps, steps[1:])}) != 1:
    raise ValueError(f"the peer scores at evenly spaced steps; got {args.eval_steps}")
  callback = EvalAt(specs["eval"], args.eval_steps, args.image_size)
  start = time.time()
  model.fit(data, steps_per_epoch=steps[1], epochs=len(args.eval_steps), verbose=0,
            callbacks=[callback])
  seconds = time.time() - start - callback.seconds  # tracing included, scoring left out
  return callback.result, args.steps * args.batch_size / seconds, None


def summarize(runs, args):
  """{recipe: {step: {"per_seed": [...], "median", "min"}}} over the seeds."""
  table = {}
  for recipe in args.recipes:
    table[recipe] = {}
    for step in args.eval_steps:
      values = [runs[recipe][seed]["mAP"][step] for seed in args.seeds]
      table[recipe][step] = {"per_seed": values, "median": statistics.median(values),
                             "min": min(values)}
  return table


def print_table(table, runs, args):
  seeds = " ".join(f"{'seed ' + str(s):>8}" for s in args.seeds)
  print(f"\nmAP on the eval split ({args.batch_size} images a step, {args.image_size} px, "
        "from scratch)")
  print(f"{'recipe':<10}{'step':>6} {seeds} {'median':>8}{'min':>8}  {'img/s':>6}  dead units")
  for recipe, by_step in table.items():
    for step, row in by_step.items():
      values = " ".join(f"{v:8.3f}" for v in row["per_seed"])
      last = step == args.eval_steps[-1]
      rate = statistics.median(r["images_per_sec"] for r in runs[recipe].values())
      dead = " ".join(str(r["dead_units"]) for r in runs[recipe].values()) if last else ""
      print(f"{recipe:<10}{step:>6} {values} {row['median']:8.3f}{row['min']:8.3f}  "
            f"{f'{rate:6.1f}' if last else '':>6}  {dead}")


def main(argv):
  args = parse_args(argv)
  tf.config.set_visible_devices([], "GPU")
  work = args.keep_dir or tempfile.mkdtemp(prefix="accuracy_")
  os.makedirs(work, exist_ok=True)
  print(f"working in {work}: recipes {', '.join(args.recipes)}; seeds {args.seeds}; "
        f"{args.steps} steps of {args.batch_size}; scored at {args.eval_steps}", flush=True)
  specs = make_demo_records(work, args.data_flags)
  runs = {recipe: {} for recipe in args.recipes}
  for seed in args.seeds:  # seed by seed, so that a cut-short run still compares like with like
    for recipe in args.recipes:
      if recipe == PEER:
        result, rate, dead = train_keras(args, specs, seed)
      else:
        result, rate, dead = train_recipe(args, work, specs, recipe, seed)
      runs[recipe][seed] = {"mAP": result, "images_per_sec": round(rate, 1), "dead_units": dead}
      print(f"seed {seed} {recipe:<9} " + " ".join(f"step {s}: {v:.3f}" for s, v in
                                                    result.items())
            + f"  ({rate:.1f} images/s; dead head units {dead})", flush=True)
  table = summarize(runs, args)
  print_table(table, runs, args)
  print(json.dumps({"steps": args.steps, "batch_size": args.batch_size,
                    "image_size": args.image_size,
                    "seeds": args.seeds, "flags": args.flags, "data_flags": args.data_flags, "table": table,
                    "runs": runs}, default=str))


if __name__ == "__main__":
  main(sys.argv[1:])
