"""mAP with unknown_label=ignore against negative, when a seeded share of the train labels is -1.

1. Takes the demo digits (make_demo_data.py's output in --data_dir; built there first if it is
   not), and hides exactly --hide (default 30%) of the train split's label entries as -1, chosen
   by --hide_seed (the same entries for every run). The image_list counts are the remaining 1s.
2. Writes the hidden train split and the untouched eval split as TFRecords (create_tfrecord.py).
3. For each --seeds value, trains train.py twice, --unknown_label=ignore and =negative, with the
   same seed, steps and flags (the demo's: from scratch at 32 px, 64 a batch, batch norm decay
   0.9, the short-run recipe: augmentation=none, head_depth=256, cosine after a 5% warmup), and
   num_parallel_calls=1 so that both runs read the same batches in the same order.
4. Evaluates each last checkpoint with evaluate.py --run_once on the eval split, and prints a
   table, then one JSON line.

Every stage is a subprocess running the project's own scripts, as a user would run them.

    python benchmarks/unknown_labels.py --seeds=0,1,2   # six demo-sized trainings: ~60 min
    python benchmarks/unknown_labels.py --steps=2 --num_train=20 --num_eval=10 --batch_size=4 \\
        --work_dir=/tmp/unknown_smoke            # a smoke run, ~2 min
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from multilabel import errors, textfiles

MODES = ("ignore", "negative")


def run(args, log_path=None):
  """Runs a project script with this Python; a failure is the error of its kind (the script's
  status 2: a ConfigError, else a DataError) naming the script and its log."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
  if log_path:
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
  with open(log_path or os.devnull, "w") as log:
    status = subprocess.run([sys.executable, *args], cwd=REPO, env=env, stdout=log,
                            stderr=subprocess.STDOUT).returncode
  if status:
    kind = errors.ConfigError if status == 2 else errors.DataError
    raise kind(f"{args[0]} exited {status}; see {log_path or 'its output (not kept)'}")


def hide_labels(split_dir, out_dir, fraction, seed):
  """Writes out_dir/image_list and image_label with `fraction` of the entries set to -1.
  Returns (hidden entries, all entries)."""
  labels = np.loadtxt(os.path.join(split_dir, "image_label"), dtype=np.int64, ndmin=2)
  names = textfiles.image_names(os.path.join(split_dir, "image_list"))  # create_tfrecord's reader
  hidden = labels.copy()
  count = round(fraction * labels.size)
  chosen = np.random.default_rng(seed).permutation(labels.size)[:count]
  hidden.reshape(-1)[chosen] = -1
  os.makedirs(out_dir, exist_ok=True)
  with open(os.path.join(out_dir, "image_label"), "w") as f:
    f.writelines(" ".join(str(v) for v in row) + "\n" for row in hidden)
  with open(os.path.join(out_dir, "image_list"), "w") as f:
    f.writelines(f"{name} {int((row == 1).sum())}\n" for name, row in zip(names, hidden))
  return count, labels.size


def main(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--work_dir", default="bench_out/unknown_labels")
  parser.add_argument("--data_dir", default="", help="make_demo_data.py output; default "
                      "<work_dir>/data, built if it has no train/image_list")
  parser.add_argument("--num_train", type=int, default=24000, help="when building the data")
  parser.add_argument("--num_eval", type=int, default=500, help="when building the data")
  parser.add_argument("--image_size", type=int, default=64, help="image side, when building")
  parser.add_argument("--target_size", type=int, default=32, help="network input side")
  parser.add_argument("--hide", type=float, default=0.3, help="share of train entries -> -1")
  parser.add_argument("--hide_seed", type=int, default=0)
  parser.add_argument("--steps", type=int, default=600)
  parser.add_argument("--seeds", default="0", help="comma list of train.py seeds")
  parser.add_argument("--batch_size", type=int, default=64)
  parser.add_argument("--gpu_id", default="0", help="train.py's gpu_id")
  args = parser.parse_args(argv)
  if not 0 <= args.hide < 1 or args.target_size % 32 or args.steps < 1:
    parser.error("--hide must be in [0, 1), --target_size a multiple of 32, --steps >= 1")
  seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
  work = os.path.abspath(args.work_dir)
  data = os.path.abspath(args.data_dir or os.path.join(work, "data"))
  start = time.time()
  stage = lambda text: print(f"[{time.time() - start:6.0f} s] {text}", flush=True)

  # 1. The data, and the train split with hidden labels.
  if not os.path.exists(os.path.join(data, "train", "image_list")):
    stage(f"building the demo digits in {data}")
    run(["make_demo_data.py", f"--output_dir={data}", f"--num_train={args.num_train}",
         f"--num_eval={args.num_eval}", "--num_test=0", f"--image_size={args.image_size}"],
        os.path.join(work, "make_demo_data.log"))
  hidden, entries = hide_labels(os.path.join(data, "train"), os.path.join(work, "hidden"),
                                args.hide, args.hide_seed)
  stage(f"hid {hidden} of {entries} train label entries ({hidden / entries:.1%}) as -1")

  # 2. Records: hidden train, untouched eval.
  records = {split: os.path.join(work, "records", f"{split}.tfrecord")
             for split in ("train", "eval")}
  lists = {"train": os.path.join(work, "hidden"), "eval": os.path.join(data, "eval")}
  for split, path in records.items():
    run(["create_tfrecord.py", f"--image_dir={os.path.join(data, split, 'images')}",
         f"--imglist_file={os.path.join(lists[split], 'image_list')}",
         f"--imglabel_file={os.path.join(lists[split], 'image_label')}", f"--output_file={path}"],
        os.path.join(work, f"create_tfrecord_{split}.log"))
  stage(f"wrote {records['train']} and {records['eval']}")

  # 3-4. Train twice per seed, evaluate each.
  size, resize = args.target_size, args.target_size + args.target_size // 8
  results = {mode: [] for mode in MODES}
  for seed in seeds:
    for mode in MODES:
      train_dir = os.path.join(work, "runs", f"{mode}-seed{seed}")
      shutil.rmtree(train_dir, ignore_errors=True)  # a fresh run, not a resumed one
      stage(f"train.py --unknown_label={mode} --seed={seed}, {args.steps} steps")
      run(["train.py", "--label_count=10", f"--input_tfrecord_file={records['train']}",
           f"--train_dir={train_dir}", f"--target_height={size}", f"--target_width={size}",
           f"--resize_height={resize}", f"--resize_width={resize}", "--train_base_network=true",
           "--batch_norm_decay=0.9", f"--batch_size={args.batch_size}",
           f"--number_of_steps={args.steps}", f"--save_checkpoint_steps={args.steps}",
           f"--log_every_n_steps={max(1, args.steps // 10)}", "--image_summary_steps=0",
           "--augmentation=none", "--head_depth=256", "--lr_schedule=cosine",
           f"--warmup_steps={args.steps // 20}",
           "--num_parallel_calls=1", f"--seed={seed}", f"--unknown_label={mode}",
           f"--gpu_id={args.gpu_id}"], train_dir + ".log")
      eval_dir = os.path.join(train_dir, "final_eval")
      run(["evaluate.py", f"--checkpoint_dir={train_dir}",
           f"--input_tfrecord_file={records['eval']}", "--run_once=true",
           f"--eval_dir={eval_dir}"], train_dir + "-eval.log")
      with open(os.path.join(eval_dir, "metrics.jsonl")) as f:
        result = json.loads(f.read().splitlines()[-1])
      results[mode].append({key: result[key] for key in ("mAP", "CF1", "OF1", "loss")})
      stage(f"  eval mAP {result['mAP']:.4f} (step {result['global_step']})")

  # 5. Table and JSON.
  print(f"\n{hidden / entries:.0%} of the train labels hidden as -1; {args.steps} steps of "
        f"{args.batch_size}; eval split untouched ({size} px)")
  print(f"{'seed':>6}  {'ignore mAP':>10}  {'negative mAP':>12}  {'ignore - negative':>17}")
  for i, seed in enumerate(seeds):
    a, b = results["ignore"][i]["mAP"], results["negative"][i]["mAP"]
    print(f"{seed:>6}  {a:10.4f}  {b:12.4f}  {a - b:+17.4f}")
  means = {mode: float(np.mean([r["mAP"] for r in results[mode]])) for mode in MODES}
  if len(seeds) > 1:
    print(f"{'mean':>6}  {means['ignore']:10.4f}  {means['negative']:12.4f}  "
          f"{means['ignore'] - means['negative']:+17.4f}")
  print(json.dumps({"hidden_fraction": hidden / entries, "steps": args.steps,
                    "batch_size": args.batch_size, "image_size": size, "seeds": seeds,
                    "runs": results, "mean_mAP": means,
                    "seconds": round(time.time() - start, 1)}))


if __name__ == "__main__":
  errors.run(main)
