"""What train.py derives from the training records' label counts (one labels-only pass):
TrainConfig.pos_weight resolved to the loss's per-label weights of the positive term (off, a
list, a weights file, or "auto"; the resolved list is what config.json records), and
head_bias=prior's first bias of the logits.
"""

import math
import os
import time

import numpy as np

from multilabel import errors, textfiles
from multilabel.data import records
from multilabel.runtime import log


def resolve_pos_weight(train_config, model_config, counts=None):
  """TrainConfig.pos_weight -> None (off) or the [label_count] list of weights the loss uses.

  "auto": negatives / positives of each label in the training records, from one labels-only pass
  (records.count_labels: no image decoding); the -1s count as negatives under
  unknown_label=negative, as the loss then sees them, and are left out under ignore. A label
  without positives or without negatives gets 1.0 (a ratio of 0 or inf would switch its positive
  term off or make it all there is). Else a file: one weight per line (blank and '#' lines
  skipped), each finite and > 0. A list (a config.json's record of the values) is taken as is.
  Bad records are a DataError (MissingFileError) naming them; a bad setting or weights file a
  ConfigError.
  """
  spec, label_count = train_config.pos_weight, model_config.label_count
  if isinstance(spec, (list, tuple)):
    weights = [float(w) for w in spec]
  elif not spec:
    return None
  elif spec == "auto":
    positives, negatives = counts or label_counts(train_config, model_config)
    defined = (positives > 0) & (negatives > 0)
    weights = np.where(defined, negatives / np.maximum(positives, 1), 1.0).tolist()
    log("pos_weight=auto: " + ", ".join(f"{w:.4g}" for w in weights))
    if not defined.all():
      log(f"note: pos_weight=auto: labels {np.flatnonzero(~defined).tolist()} have no positives "
          f"or no negatives in the training records; they get 1.0")
  else:
    weights = _read_pos_weight_file(spec)
  if len(weights) != label_count or not all(math.isfinite(w) and w > 0 for w in weights):
    raise errors.ConfigError(f"--pos_weight={spec!r}: {len(weights)} weights for "
                             f"label_count={label_count}, each must be finite and > 0")
  return weights


def label_counts(train_config, model_config):
  """(positives, negatives): int64 [label_count] each, from one labels-only pass over the train
  records (records.count_labels: no image decoding), made once for pos_weight=auto and
  head_bias=prior together. The -1s count as negatives under unknown_label=negative, as the loss
  then sees them, and are left out under ignore. Bad records are a DataError naming them."""
  why = ", ".join(name for name, used in (("pos_weight=auto", train_config.pos_weight == "auto"),
                                          ("head_bias=prior", train_config.head_bias == "prior"))
                  if used) or "label counts"
  try:
    files = records.expand_file_spec(model_config.input_tfrecord_file)
    start = time.time()
    positives, negatives, unknowns, count = records.count_labels(
        files, model_config.label_count, model_config.image_label_key)
  except errors.DataError as e:  # the same class (a MissingFileError stays one), named here
    raise type(e)(f"{why}: {e}") from None
  log(f"{why}: label counts of {count} records ({time.time() - start:.1f} s, labels only)")
  if train_config.unknown_label == "negative":
    negatives = negatives + unknowns
  return positives, negatives


def prior_log_odds(train_config, model_config, counts=None):
  """TrainConfig.head_bias=prior: [label_count] float32, log(p / (1 - p)) of each label's
  frequency p in the train records, p clipped to [1e-4, 1 - 1e-4] (a label never or always
  positive would get an infinite bias).

  Why (Lin et al. 2017, focal loss, sec. 4.1 "prior"): with a zero bias every logit starts at
  0, p = 0.5, while most labels are rare (0.064 on average on the OpenMoji set). The first
  gradients then push every logit down at once, and through the head's ReLUs, whose inputs are
  all >= 0 after the backbone's last ReLU, Adam's equal-sized first steps turn whole units off
  for every image: dead units. Starting at the prior leaves the gradient only what the images
  tell apart.
  """
  positives, negatives = counts or label_counts(train_config, model_config)
  p = positives / np.maximum(positives + negatives, 1)
  p = np.clip(p, 1e-4, 1 - 1e-4)
  return np.log(p / (1 - p)).astype(np.float32)


def _read_pos_weight_file(path):
  """The weights in a pos_weight file: one float per line; blank and '#' lines skipped. The file
  is a setting, so its mistakes are ConfigErrors naming the file (and line)."""
  if not os.path.isfile(path):
    raise errors.ConfigError(f"--pos_weight={path!r}: neither '', 'auto' nor an existing file")
  return list(textfiles.load_floats(path, "pos_weight", errors.ConfigError))
