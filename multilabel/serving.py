"""Scoring at test time: how a model is scored (TestTimeScoring, worked out once), the
combination over views, the scorer inference.py runs, and the serving SavedModel that
export_saved_model.py (and inference.py's --export_saved_model) writes.

    TestTimeScoring  target, resize, views, aggregation, thresholds and label names of a run
    score_ten_crops  [B, V, h, w, 3] views -> [B, L] scores, mean or max over the V views
    make_scorer      score_ten_crops as a tf.function, compiled by XLA or not ("auto": timed)
    serving_module   encoded images [N] -> scores [N, L] (and labels [N, L]), for serving
    export           serving_module saved to a folder, atomically
"""

import dataclasses
import os
import shutil
import tempfile
import time

import numpy as np
import tensorflow as tf

from multilabel import errors, files, textfiles
from multilabel.data.preprocessing import VIEWS, preprocess_views, ten_crop_resize, test_views
from multilabel.runtime import log

SIGNATURE = "serving_default"
NAMES_SIGNATURE = "label_names"


@dataclasses.dataclass(frozen=True)
class TestTimeScoring:
  """How a trained model scores an image at test time, worked out once from the InferenceConfig
  and the run's ModelConfig, for inference.py, export_saved_model.py and serving_module."""

  target: tuple  # (height, width) the network takes
  resize: tuple  # (height, width) the image is resized to before the 10 crops
  views: str  # "ten" (the 10 crops) or "one" (the image resized to target)
  aggregation: str  # "mean" or "max" over the views
  thresholds: object  # one threshold (float), or [L] float64, one per label
  label_names: list

  @classmethod
  def for_run(cls, config, model_config, run_dir):
    """From an InferenceConfig, the run's ModelConfig and the folder of its config.json (whose
    label names are used unless config.label_names_file names others). A bad thresholds or
    names file fails here, before any image is scored."""
    target = (model_config.target_height, model_config.target_width)
    return cls(target=target,
               resize=ten_crop_resize((config.resize_height, config.resize_width), target),
               views=test_views(config.views, model_config.augmentation),
               aggregation=config.aggregation,
               thresholds=textfiles.prediction_thresholds(
                   config.thresholds_file, config.threshold, model_config.label_count),
               label_names=textfiles.load_label_names(
                   config.label_names_file, model_config.label_count, run_dir=run_dir))

  @property
  def crops(self):
    """Images the network sees per image: 10 or 1."""
    return VIEWS[self.views]

  def describe(self):
    if self.views == "ten":
      return f"{self.aggregation} of 10 crops of {self.target} after resize {self.resize}"
    return f"one view: the image resized to {self.target}"


def score_ten_crops(model, crops, aggregation):
  """[B, V, h, w, 3] views (10 crops, or the one plain view) -> [B, L] sigmoid scores combined
  over the V views by mean or max.

  The one place `aggregation` is checked: a tf.function that calls this raises the ConfigError
  when it is traced, before it scores anything.
  """
  if aggregation not in ("mean", "max"):
    raise errors.ConfigError(f"aggregation={aggregation!r}: expected mean or max")
  views, height, width = crops.shape[1], crops.shape[2], crops.shape[3]
  flat = tf.reshape(crops, [-1, height, width, 3])  # [B, V, h, w, 3] -> [B*V, h, w, 3]
  _, end_points = model(flat, training=False)
  per_crop = tf.reshape(end_points["predictions"],
                        [tf.shape(crops)[0], views, model.config.label_count])  # [B, V, L]
  reduce = tf.reduce_mean if aggregation == "mean" else tf.reduce_max
  return reduce(per_crop, axis=1)



def make_scorer(model, aggregation, xla="false"):
  """crops [B, 10, h, w, 3] -> scores [B, L], the forward pass compiled by XLA or not.

  XLA fuses batch norm, ReLU and padding into the convs' neighbours, but its CPU convolutions
  are slow on tiny maps: on 2 cores it scored 80 crops 1.3x faster at 224 px and 8x slower at
  64 px. So "auto" compiles both on the first batch, times one run of each and keeps the faster
  for the rest (the first batch costs four passes). XLA compiles once per batch shape (~5 s for
  ResNet-50 on 2 cores): here twice, the full batches and the last one.
  """
  if xla not in ("auto", "true", "false"):
    raise errors.ConfigError(f"xla={xla!r}: expected auto, true or false")
  # autograph=False: nothing here branches on tensors, and autograph would turn the ConfigError
  # score_ten_crops raises for a bad aggregation (at the first trace) into a multi-line error.
  forward = lambda crops: score_ten_crops(model, crops, aggregation)
  plain = tf.function(forward, autograph=False)
  compiled = tf.function(forward, jit_compile=True, autograph=False)
  if xla != "auto":
    return compiled if xla == "true" else plain
  chosen = []

  def score(crops):
    if chosen:
      return chosen[0](crops)
    seconds, scores = {}, {}
    for name, scorer in (("XLA", compiled), ("plain", plain)):
      scorer(crops).numpy()  # traces (and compiles)
      start = time.perf_counter()
      scores[name] = scorer(crops)
      scores[name].numpy()  # waits for the result
      seconds[name] = time.perf_counter() - start
    best = min(seconds, key=seconds.get)
    chosen.append(compiled if best == "XLA" else plain)
    log(f"scorer: XLA {seconds['XLA']:.2f} s, plain {seconds['plain']:.2f} s a batch; "
        f"using {best}")
    return scores[best]
  return score


def serving_module(model, scoring):
  """A tf.Module holding `model` whose `serve(images)` is the serving signature (see above), and
  with label names, `label_names()` returning them (the label_names signature).

  Args:
    model: a MultiLabelClassificationModel with its trained weights.
    scoring: a TestTimeScoring; thresholds None means no `labels` output, label_names None no
      label_names signature.
  """
  labels, (th, tw), crops = model.config.label_count, scoring.target, scoring.crops
  resize, target, aggregation, views = (scoring.resize, scoring.target, scoring.aggregation,
                                        scoring.views)
  thresholds, label_names = scoring.thresholds, scoring.label_names
  if label_names is not None and len(label_names) != labels:
    raise ValueError(f"got {len(label_names)} label names for {labels} labels")
  if thresholds is not None:
    # float64, so that score >= threshold decides exactly as inference.py's numpy comparison.
    thresholds = np.asarray(thresholds, np.float64)
    if thresholds.ndim > 1 or thresholds.size not in (1, labels):
      raise ValueError(f"got {thresholds.size} thresholds for {labels} labels")
    thresholds = np.broadcast_to(thresholds, [labels]).copy()

  def preprocess(image_data):
    return tf.ensure_shape(preprocess_views(image_data, views, resize, target),
                           [crops, th, tw, 3])

  # autograph=False, as make_scorer: so that a bad aggregation stays one ConfigError.
  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="images")],
               autograph=False)
  def serve(images):
    views_batch = tf.map_fn(preprocess, images,
                      fn_output_signature=tf.TensorSpec([crops, th, tw, 3], tf.float32))
    outputs = {"scores": score_ten_crops(model, views_batch, aggregation)}
    if thresholds is not None:
      above = tf.cast(outputs["scores"], tf.float64) >= tf.constant(thresholds)
      outputs["labels"] = tf.cast(above, tf.int64)
    return outputs

  serve.get_concrete_function()  # traces now: a bad aggregation fails here, not at the save
  module = tf.Module()
  module.model = model  # tracks the variables, so that they are saved
  module.serve = serve
  if label_names is not None:
    module.label_names = tf.function(lambda: {"label_names": tf.constant(list(label_names))},
                                     input_signature=[], autograph=False)
  return module


class ExportDirError(errors.ConfigError, FileExistsError):
  """export_saved_model names a folder that must not be replaced (a ConfigError, exit 2)."""


def check_export_dir(export_dir):
  """ExportDirError if export_dir is a file, or a non-empty folder that holds no SavedModel, so
  that a typo never deletes someone's files; a ConfigError if its parent, where export() builds
  it, can't be written. The mains call it before any work."""
  files.check_writable(os.path.dirname(os.path.abspath(export_dir)), "export_saved_model")
  export_dir = os.path.abspath(export_dir)
  if (os.path.isdir(export_dir) and os.listdir(export_dir)
      and not os.path.exists(os.path.join(export_dir, "saved_model.pb"))):
    raise ExportDirError(f"export_saved_model={export_dir!r} is a non-empty folder that holds "
                         "no SavedModel; refusing to replace it")
  if os.path.exists(export_dir) and not os.path.isdir(export_dir):
    raise ExportDirError(f"export_saved_model={export_dir!r} is a file, not a folder")


def export(model, export_dir, scoring):
  """Writes the serving SavedModel to `export_dir`, atomically; returns export_dir.

  The SavedModel is written to a temporary folder beside export_dir and renamed into place, so a
  SavedModel at export_dir is always complete. An existing SavedModel there is replaced; any other
  non-empty folder is an error (check_export_dir).
  """
  check_export_dir(export_dir)
  export_dir = os.path.abspath(export_dir)
  module = serving_module(model, scoring)
  signatures = {SIGNATURE: module.serve}
  if scoring.label_names is not None:
    signatures[NAMES_SIGNATURE] = module.label_names
  parent, name = os.path.split(export_dir)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(dir=parent, prefix=f".{name}.tmp-")
  old = None
  try:
    # Serving takes no gradients: not tracing the custom ones (resnet_utils' convolutions) cuts
    # the save time by two thirds.
    tf.saved_model.save(module, staging, signatures=signatures,
                        options=tf.saved_model.SaveOptions(experimental_custom_gradients=False))
    if os.path.exists(export_dir):
      old = tempfile.mkdtemp(dir=parent, prefix=f".{name}.old-")
      os.replace(export_dir, os.path.join(old, name))
    try:
      os.replace(staging, export_dir)
    except OSError:
      if old is not None:  # put the previous export back rather than lose it
        os.replace(os.path.join(old, name), export_dir)
      raise
  finally:
    shutil.rmtree(staging, ignore_errors=True)
    if old is not None:
      shutil.rmtree(old, ignore_errors=True)
  return export_dir
