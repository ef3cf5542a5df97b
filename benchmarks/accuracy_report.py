"""accuracy.py's report: per scored split, mAP per seed with the median and the minimum over the
seeds, at each scored step; then, at the last step, what shows memorising: the train
classification loss, and the head units that were never positive (toolkit recipes only).

runs: {recipe: {seed: {"mAP": {step: {split: mAP}}, "images_per_sec": float,
                       "train_loss": float or None, "dead_units": (n1, n2) or None}}}
"""

import statistics


def summarize(runs, recipes, seeds, steps, splits):
  """{recipe: {split: {step: {"per_seed": [...], "median", "min"}}}} over the seeds."""
  table = {}
  for recipe in recipes:
    table[recipe] = {}
    for split in splits:
      table[recipe][split] = {}
      for step in steps:
        values = [runs[recipe][seed]["mAP"][step][split] for seed in seeds]
        table[recipe][split][step] = {"per_seed": values, "median": statistics.median(values),
                                      "min": min(values)}
  return table


def _seed_header(seeds):
  return " ".join(f"{'seed ' + str(s):>8}" for s in seeds)


def print_table(table, runs, args, data):
  """One block per scored split (recipe x step rows), then the last step's train figures."""
  seeds = args.seeds
  width = max(len(r) for r in args.recipes) + 2
  for split, title in data.scored.items():
    print(f"\nmAP on {title} ({data.name}; {args.batch_size} images a step, {args.image_size} "
          "px, from scratch)")
    print(f"{'recipe':<{width}}{'step':>6} {_seed_header(seeds)} {'median':>8}{'min':>8}")
    for recipe in args.recipes:
      for step, row in table[recipe][split].items():
        values = " ".join(f"{v:8.3f}" for v in row["per_seed"])
        print(f"{recipe:<{width}}{step:>6} {values} {row['median']:8.3f}{row['min']:8.3f}")
  print(f"\nat step {args.steps}: train classification loss (last step) per seed, images/s "
        "(median), dead head units my_conv_1+my_conv_2 per seed")
  print(f"{'recipe':<{width}} {_seed_header(seeds)} {'img/s':>7}  dead units")
  for recipe in args.recipes:
    by_seed = [runs[recipe][seed] for seed in seeds]
    losses = " ".join(f"{r['train_loss']:8.4f}" if r["train_loss"] is not None else f"{'-':>8}"
                      for r in by_seed)
    rates = [r["images_per_sec"] for r in by_seed if r["images_per_sec"] is not None]
    rate = f"{statistics.median(rates):7.1f}" if rates else f"{'-':>7}"
    dead = " ".join(f"{r['dead_units'][0]}+{r['dead_units'][1]}" if r["dead_units"] else "-"
                    for r in by_seed)
    print(f"{recipe:<{width}} {losses} {rate}  {dead}")


def seed_line(seed, recipe, run, steps):
  """The line printed as each run ends: its mAP per scored split at the last step."""
  last = run["mAP"][steps[-1]]
  scores = " ".join(f"{split} {value:.3f}" for split, value in last.items())
  loss = run["train_loss"]
  rate = run["images_per_sec"]
  return (f"seed {seed} {recipe:<11} step {steps[-1]}: {scores}  ({'-' if rate is None else rate} "
          f"images/s; train loss {'-' if loss is None else f'{loss:.4f}'}; dead head units "
          f"{run['dead_units']})")
