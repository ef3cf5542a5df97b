"""Accuracy of the toolkit's recipes against a hand-written Keras fine-tune (issues 11 and 23).

For each seed it trains every recipe, recipes/<name>.json, with train.py (a subprocess, exactly as
a user runs it: `train.py recipes/<name>.json --flags...`), and the Keras peer (keras_peer.py:
ResNet50V2(weights=None) + the original head, Adam with clipping at 5 and the learning-rate
schedule of recipes/short.json), with the same steps, batch, image size and seed, from scratch,
on the whole network (--train_base_network=true --batch_norm_decay=0.9 where a recipe does not
say; a recipe's warmup_steps becomes 5% of --steps, as its 30 is of 600). The peer sees the
images as `short` does (no augmentation) through the toolkit's pipeline. Every model is scored at
a few step counts by the same code (metrics.mean_average_precision over build_dataset's eval
pass). Prints a table per scored split, the train classification loss and the dead head units at
the end, then as the last line one JSON object with every figure.

--data=digits (the default): the demo's multi-label digits (make_demo_data.py), 10 labels, 32 px
crops of a 36 px resize, 600 steps of 64; scored on the eval split.
--data=openmoji: the OpenMoji set (benchmarks/openmoji: emoji with their CLDR keywords, 30
labels), built into --data_dir first if it is not there; 64 px crops of a 73 px resize (255/224,
the original's ratio), 600 steps of 32; scored on OpenMoji eval, OpenMoji test and the same test
emoji in Noto's design (test_noto).

    python -m benchmarks.accuracy --quick          # digits: short and Keras, 150 steps, ~10 min
    python -m benchmarks.accuracy                  # digits: every recipe, ~100 min on 2 cores
    python -m benchmarks.accuracy --data=openmoji --quick   # small_data and Keras, seed 0,
                                  # 200 steps, scored at the end: ~10 min on 2 idle cores (est.)
    python -m benchmarks.accuracy --data=openmoji  # every recipe and Keras, seeds 0,1,2: ~3 h
    python -m benchmarks.accuracy --recipes=short,keras --seeds=0,1,2,3,4 --steps=300
    python -m benchmarks.accuracy --data=openmoji --steps=4 --evals=2 --max_images=40 --seeds=0
"""

import argparse
import contextlib
import glob
import io
import json
import os
import re
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import multilabel.startup  # noqa: F401 -- first: TensorFlow's C++ start-up lines filtered
import numpy as np
import tensorflow as tf

import configs
import multi_label_classification_model as mlc
from multilabel import config_files, errors, metrics
from multilabel.training import optimizers
from multilabel.data.preprocessing import build_dataset
from benchmarks import accuracy_data, accuracy_report
from benchmarks.bench_data import REPO, run_script
from benchmarks.keras_peer import keras_model

ORDER = ("original", "short", "long", "small_data")  # the README's; other files after them
RECIPES = {os.path.basename(path)[:-len(".json")]: path
           for path in sorted(glob.glob(os.path.join(REPO, "recipes", "*.json")))}
RECIPES = {name: RECIPES[name] for name in sorted(RECIPES, key=lambda n: (
    ORDER.index(n) if n in ORDER else len(ORDER), n))}
PEER, PEER_RECIPE = "keras", "short"  # the peer takes short's schedule and un-augmented images
COMMON = {"train_base_network": "true", "batch_norm_decay": "0.9", "gpu_id": "-1"}
DEFAULTS = {  # per --data; "quick" overrides them for --quick
    "digits": dict(batch_size=64, image_size=32, steps=600, seeds="0,1,2", evals=3,
                   recipes="", quick=dict(steps=150, recipes="short,keras")),
    "openmoji": dict(batch_size=32, image_size=64, steps=600, seeds="0,1,2", evals=3,
                     recipes="", quick=dict(steps=200, recipes="small_data,keras", seeds="0",
                                            evals=1)),
}


def parse_args(argv):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--data", choices=sorted(DEFAULTS), default="digits", help="the image set")
  p.add_argument("--data_dir", default=accuracy_data.OPENMOJI_DIR,
                 help="openmoji: the built set, built here first if missing (default "
                 "bench_out/openmoji)")
  p.add_argument("--max_images", type=int, default=0,
                 help="at most this many images per split, for a smoke test (0 = all)")
  p.add_argument("--quick", action="store_true",
                 help="digits: short + keras, 150 steps; openmoji: small_data + keras, seed 0, "
                      "200 steps, scored at the end")
  p.add_argument("--recipes", default="", help=f"comma list of {','.join(RECIPES)},{PEER} "
                 "(default: all)")
  p.add_argument("--seeds", default="", help="comma list of seeds (weights and shuffling); "
                 "default 0,1,2")
  p.add_argument("--steps", type=int, default=0, help="train steps (default 600)")
  p.add_argument("--evals", type=int, default=0, help="score at this many evenly spaced steps "
                 "(default 3)")
  p.add_argument("--batch_size", type=int, default=0, help="images per step (digits 64, "
                 "openmoji 32)")
  p.add_argument("--image_size", type=int, default=0, help="network input side, a multiple of "
                 "32 (digits 32, openmoji 64); train crops come from a resize 9/8 (digits) or "
                 "255/224 (openmoji) as large")
  p.add_argument("--flags", default="", help="extra train.py flags for every toolkit recipe, "
                 "e.g. '--learning_rate=0.0003'")
  p.add_argument("--data_flags", default="", help="digits: extra make_demo_data.py flags, e.g. "
                 "'--num_train=1000'; openmoji: extra create_tfrecord.py flags, e.g. "
                 "'--lossless=true'")
  p.add_argument("--keep_dir", default="", help="work here and keep it (default: a temp dir)")
  args = p.parse_args(argv)
  defaults = dict(DEFAULTS[args.data])
  defaults.update(defaults.pop("quick") if args.quick else {})
  for name in ("batch_size", "image_size", "steps", "seeds", "evals", "recipes"):
    setattr(args, name, getattr(args, name) or defaults[name])
  if args.image_size % 32:
    p.error(f"--image_size={args.image_size}: must be a multiple of 32")
  args.recipes = [r for r in (args.recipes or ",".join([*RECIPES, PEER])).split(",") if r]
  unknown = sorted(set(args.recipes) - {*RECIPES, PEER})
  if unknown:
    p.error(f"--recipes: unknown {unknown}; known: {', '.join([*RECIPES, PEER])} (recipes/)")
  args.seeds = [int(s) for s in args.seeds.split(",")]
  if not 1 <= args.evals <= args.steps:
    p.error(f"--evals={args.evals}: must be in [1, --steps]")
  if PEER in args.recipes and args.steps % args.evals:
    p.error(f"--evals={args.evals} must divide --steps={args.steps}: the Keras peer is scored "
            "every steps/evals steps")
  args.eval_steps = [round(args.steps * (i + 1) / args.evals) for i in range(args.evals)]
  return args


def recipe_fields(name):
  """The settings recipes/<name>.json sets: {field: value} over its model and train sections."""
  data = config_files.read_json(RECIPES[name])
  return {field: value for section in ("model", "train") for field, value in
          data.get(section, {}).items()}


def mean_ap(predict, data, split, size):
  """mAP on `split` of `predict`: [B, size, size, 3] in [-1, 1] -> [B, L] scores."""
  config = configs.ModelConfig(label_count=data.label_count, batch_size=50,
                               input_tfrecord_file=data.records[split], **data.sizes(size))
  scores, labels = [], []
  for images, batch_labels, _ in build_dataset(config, "eval"):
    scores.append(np.asarray(predict(images)))
    labels.append(batch_labels.numpy())
  return metrics.mean_average_precision(np.concatenate(labels), np.concatenate(scores))[0]


def score(predict, data, size):
  return {split: mean_ap(predict, data, split, size) for split in data.scored}


def train_recipe(args, data, work, recipe, seed):
  """train.py recipes/<recipe>.json; mAP of the checkpoints at args.eval_steps. Returns
  ({step: {split: mAP}}, train images/s (the median logged window), the last logged train
  classification loss, dead head units at the end (my_conv_1, my_conv_2))."""
  train_dir = os.path.join(work, f"{recipe}_seed{seed}")
  every = args.eval_steps[0]  # evenly spaced: the first is the interval
  sets = recipe_fields(recipe)
  common = [f"--{field}={value}" for field, value in COMMON.items() if field not in sets]
  warmup = [f"--warmup_steps={args.steps // 20}"] if "warmup_steps" in sets else []  # 5%
  geometry = [f"--{key}={value}" for key, value in data.sizes(args.image_size).items()]
  names = [f"--label_names_file={data.label_names_file}"] if data.label_names_file else []
  flags = [RECIPES[recipe], *common, *warmup, f"--label_count={data.label_count}", *names,
           *geometry, *args.flags.split(), f"--input_tfrecord_file={data.records['train']}",
           f"--train_dir={train_dir}", f"--number_of_steps={args.steps}",
           f"--batch_size={args.batch_size}", f"--seed={seed}", "--max_to_keep=1000",
           f"--save_checkpoint_steps={every}", "--save_checkpoint_secs=0",
           f"--log_every_n_steps={min(20, args.steps)}", "--image_summary_steps=0"]
  run_script(["train.py", *flags], train_dir + ".log")
  with open(train_dir + ".log") as f:
    log = f.read()
  dead = re.findall(r"dead head units (\d+)\+(\d+)", log)
  losses = re.findall(r"\(classification ([0-9.]+),", log)
  rates = [float(r) for r in re.findall(r"([0-9.]+) images/s", log)][1:]  # the first traces
  result = {}
  for step in args.eval_steps:
    model = mlc.load_trained_model(os.path.join(train_dir, f"ckpt-{step}"))[0]
    result[step] = score(tf.function(lambda images: model(images)[1]["predictions"],
                                     reduce_retracing=True), data,
                         args.image_size)
  rate = statistics.median(rates) if rates else float("nan")
  return (result, rate, float(losses[-1]) if losses else None,
          tuple(int(n) for n in dead[-1]) if dead else None)


class EvalAt(tf.keras.callbacks.Callback):
  """Scores the peer at the end of each 'epoch' (one eval interval), and keeps the time that
  takes, so that the peer's train time leaves it out as the toolkit's does. Also keeps the last
  batch's loss: Keras logs the epoch's running mean, so batch b's is (b+1)*mean_b - b*mean_b-1."""

  def __init__(self, data, steps, size):
    super().__init__()
    self.data, self.steps, self.size, self.result, self.seconds = data, list(steps), size, {}, 0.0
    self.mean, self.last_loss = 0.0, None

  def on_train_batch_end(self, batch, logs=None):
    mean = float(logs["loss"])
    self.last_loss = (batch + 1) * mean - batch * self.mean if batch else mean
    self.mean = mean

  def on_epoch_end(self, epoch, logs=None):
    start = time.time()
    forward = tf.function(lambda images: self.model(images, training=False),
                          reduce_retracing=True)
    self.result[self.steps[epoch]] = score(forward, self.data, self.size)
    self.seconds += time.time() - start


def peer_schedule(args):
  """recipes/short.json's learning-rate schedule over args.steps (its warmup 5% of them), built
  by the toolkit's own function."""
  train_config = configs.TrainConfig()
  with contextlib.redirect_stdout(io.StringIO()):  # not the "loaded ..." line
    config_files.apply_config_file(RECIPES[PEER_RECIPE], train_config)
  train_config.number_of_steps = args.steps
  if train_config.warmup_steps:
    train_config.warmup_steps = args.steps // 20
  return optimizers.learning_rate_schedule(train_config)


def train_keras(args, data, seed):
  """The Keras peer on the toolkit's un-augmented train pipeline, fit over the same steps."""
  tf.keras.utils.set_random_seed(seed)
  model = keras_model(args.image_size, data.label_count, learning_rate=peer_schedule(args))
  config = configs.ModelConfig(label_count=data.label_count, batch_size=args.batch_size,
                               input_tfrecord_file=data.records["train"], augmentation="none",
                               **data.sizes(args.image_size))
  dataset = build_dataset(config, "train", seed=seed)
  steps = [0, *args.eval_steps]  # evenly spaced (parse_args)
  callback = EvalAt(data, args.eval_steps, args.image_size)
  start = time.time()
  model.fit(dataset, steps_per_epoch=steps[1], epochs=len(args.eval_steps), verbose=0,
            callbacks=[callback])
  seconds = time.time() - start - callback.seconds  # tracing included, scoring left out
  return callback.result, args.steps * args.batch_size / seconds, callback.last_loss, None


def main(argv):
  args = parse_args(argv)
  tf.config.set_visible_devices([], "GPU")
  tf.get_logger().setLevel("ERROR")  # not a retracing warning per checkpoint scored
  work = os.path.abspath(args.keep_dir or tempfile.mkdtemp(prefix="accuracy_"))
  os.makedirs(work, exist_ok=True)
  print(f"working in {work}: {args.data}; recipes {', '.join(args.recipes)}; seeds "
        f"{args.seeds}; {args.steps} steps of {args.batch_size} at {args.image_size} px; scored "
        f"at {args.eval_steps}", flush=True)
  started = time.time()
  data = accuracy_data.prepare(args, work)
  runs = {recipe: {} for recipe in args.recipes}
  for seed in args.seeds:  # seed by seed, so that a cut-short run still compares like with like
    for recipe in args.recipes:
      if recipe == PEER:
        result, rate, loss, dead = train_keras(args, data, seed)
      else:
        result, rate, loss, dead = train_recipe(args, data, work, recipe, seed)
      runs[recipe][seed] = {"mAP": result, "images_per_sec": round(rate, 1) if rate == rate
                            else None,  # NaN: no window after the first (which traces)
                            "train_loss": loss, "dead_units": dead}
      print(accuracy_report.seed_line(seed, recipe, runs[recipe][seed], args.eval_steps),
            flush=True)
  table = accuracy_report.summarize(runs, args.recipes, args.seeds, args.eval_steps, data.scored)
  accuracy_report.print_table(table, runs, args, data)
  print(json.dumps({"data": args.data, "max_images": args.max_images, "steps": args.steps,
                    "batch_size": args.batch_size, "image_size": args.image_size,
                    "sizes": data.sizes(args.image_size), "seeds": args.seeds,
                    "recipes": {r: os.path.relpath(RECIPES[r], REPO) for r in args.recipes
                                if r in RECIPES},
                    "flags": args.flags, "data_flags": args.data_flags,
                    "seconds": round(time.time() - started), "table": table, "runs": runs},
                   default=str))


if __name__ == "__main__":
  errors.run(main)
