"""TrainConfig.pos_weight resolved to the loss's per-label weights of the positive term: off, a
list, a weights file, or "auto" from the training records' label counts (train.py; the resolved
list is what config.json records).
"""

import math
import os
import time

import numpy as np

from multilabel import errors, textfiles
from multilabel.data import records
from multilabel.runtime import log


def resolve_pos_weight(train_config, model_config):
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
    try:
      files = records.expand_file_spec(model_config.input_tfrecord_file)
      start = time.time()
      positives, negatives, unknowns, count = records.count_labels(
          files, label_count, model_config.image_label_key)
    except errors.DataError as e:  # the same class (a MissingFileError stays one), named here
      raise type(e)(f"pos_weight=auto: {e}") from None
    if train_config.unknown_label == "negative":
      negatives = negatives + unknowns
    defined = (positives > 0) & (negatives > 0)
    weights = np.where(defined, negatives / np.maximum(positives, 1), 1.0).tolist()
    log(f"pos_weight=auto from {count} records ({time.time() - start:.1f} s, labels only): "
        + ", ".join(f"{w:.4g}" for w in weights))
    if not defined.all():
      log(f"note: pos_weight=auto: labels {np.flatnonzero(~defined).tolist()} have no positives "
          f"or no negatives in the training records; they get 1.0")
  else:
    weights = _read_pos_weight_file(spec)
  if len(weights) != label_count or not all(math.isfinite(w) and w > 0 for w in weights):
    raise errors.ConfigError(f"--pos_weight={spec!r}: {len(weights)} weights for "
                             f"label_count={label_count}, each must be finite and > 0")
  return weights


def _read_pos_weight_file(path):
  """The weights in a pos_weight file: one float per line; blank and '#' lines skipped. The file
  is a setting, so its mistakes are ConfigErrors naming the file (and line)."""
  if not os.path.isfile(path):
    raise errors.ConfigError(f"--pos_weight={path!r}: neither '', 'auto' nor an existing file")
  return list(textfiles.load_floats(path, "pos_weight", errors.ConfigError))
