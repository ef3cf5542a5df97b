"""What a resumed run must keep: the settings that decide which variables its checkpoints hold,
compared with the train dir's config.json before anything is built or written."""

import os

from multilabel import checkpoints, config_files, errors


# What a resumed run must keep: each decides which variables its checkpoints hold, or their
# shapes (the network's, the optimiser's slots, the moving average, the loss scale's), so that
# with another value they would not restore. (section, field, the value that counts, what it
# decides); head_depth 0 means label_count, so 0 and label_count are the same head.
RESUME_FIXED = (
    ("model", "backbone", lambda c: c.backbone, "the backbone's variables"),
    ("model", "label_count", lambda c: c.label_count, "the shape of the head's last layer"),
    ("model", "head_depth", lambda c: c.head_depth or c.label_count, "the head's width"),
    ("model", "target_height", lambda c: c.target_height, "the head's last kernel (size / 32)"),
    ("model", "target_width", lambda c: c.target_width, "the head's last kernel (size / 32)"),
    ("model", "train_base_network", lambda c: c.train_base_network,
     "the variables the optimiser and the moving average keep state for"),
    ("model", "precision", lambda c: c.precision == "mixed_float16",
     "whether the optimiser keeps a loss scale (mixed_float16 only)"),
    ("train", "optimizer", lambda c: c.optimizer, "the optimiser's slot variables"),
    ("train", "momentum", lambda c: c.optimizer in ("Momentum", "RMSProp") and c.momentum > 0,
     "whether the optimiser keeps momentum slots (momentum 0 or not)"),
    ("train", "ema_decay", lambda c: c.ema_decay > 0,
     "whether the checkpoints hold a moving average (ema_decay 0 or not)"),
)


def check_resume_settings(model_config, train_config):
  """On a train_dir with checkpoints, before anything is built or written: a ConfigError naming
  the first RESUME_FIXED field whose value differs from its config.json's, its old and new
  values, and how to do what was meant."""
  train_dir = train_config.train_dir
  path = os.path.join(train_dir, config_files.TRAIN_CONFIG_FILE)
  if not os.path.exists(path) or not checkpoints.listed(train_dir):
    return
  now = {"model": model_config, "train": train_config}
  saved = {"model": config_files.load_config(path, type(model_config)),
           "train": config_files.load_config(path, type(train_config))}
  for section, name, key, what in RESUME_FIXED:
    old, new = saved[section], now[section]
    if key(old) != key(new):
      raise errors.ConfigError(resume_refusal(train_dir, name, key, what, old, new))


def resume_refusal(train_dir, name, key, what, old, new):
  """The line that refuses a changed RESUME_FIXED field: its old and new values (as flags take
  them, and what they mean where that differs: head_depth=0 (= 4)), and what to do instead."""
  def flag(config):
    value = getattr(config, name)
    return str(value).lower() if isinstance(value, bool) else str(value)

  def shown(config):
    means = key(config)
    return flag(config) if isinstance(means, bool) or str(means) == flag(config) else (
        f"{flag(config)} (= {means})")

  if name == "train_base_network" and new.train_base_network:
    # Resuming cannot add optimiser slots and moving averages for the backbone: a new run does.
    how = ("for the second stage of a fine-tune, start a new run from this one: --train_dir=<a "
           f"new folder> --base_network_checkpoint={train_dir} --train_base_network=true (it "
           "takes this run's backbone; its head starts fresh)")
  else:
    how = (f"keep --{name}={flag(old)} to resume it, or start a new run: a new --train_dir, "
           f"with --base_network_checkpoint={train_dir} to start from this run's backbone")
  return (f"--{name}={shown(new)} cannot resume {train_dir}, whose checkpoints were made with "
          f"{name}={shown(old)}: it changes {what}, so they would not restore; {how}")
