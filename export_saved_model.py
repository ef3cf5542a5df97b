"""Exports a trained model as a SavedModel for serving: encoded images in, 10-crop scores out.

The `serving_default` signature takes `images`, a batch of encoded images (JPEG, PNG, BMP or GIF
bytes; tf.string [N]), preprocesses each exactly as inference.py does (`views`: resize, 4 corners +
centre + their mirrors, `preprocess_ten_crop`; or, for a model trained without random crops, the
one plain view), and returns
  scores: [N, L] float32, the sigmoid scores combined over the views by `aggregation`;
  labels: [N, L] int64, 1 where score >= the label's threshold (the thresholds are a constant in
          the graph), when thresholds were given (inference.py always gives them: the thresholds
          file, or the single `threshold`).
One image that can't be decoded fails the whole call (inference.py instead skips it). The
`label_names` signature takes nothing and returns `label_names`: tf.string [L], the names of the
columns (the train dir's, as inference.py uses them, unless --label_names_file names others).

    python export_saved_model.py --checkpoint_path=runs/coco/eval/best \\
        --export_saved_model=export/coco
    python export_saved_model.py --checkpoint_path=runs/coco --thresholds_file=thresholds.txt \\
        --export_saved_model=export/coco
    saved_model_cli show --dir export/coco --signature_def serving_default
"""

import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

import configs
import errors
import metrics
import run_utils
from multi_label_classification_model import (VIEWS, preprocess_views, score_ten_crops,
                                              ten_crop_resize, test_views)
from run_utils import log

SIGNATURE = "serving_default"
NAMES_SIGNATURE = "label_names"


def serving_module(model, resize, target, aggregation, thresholds=None, label_names=None,
                   views="ten"):
  """A tf.Module holding `model` whose `serve(images)` is the serving signature (see above), and
  with label_names, `label_names()` returning them (the label_names signature).

  Args:
    model: a MultiLabelClassificationModel with its trained weights.
    resize, target: (height, width) of the resize and of the 10 crops (ten_crop_resize).
    aggregation: 'mean' or 'max' over the views.
    thresholds: None (no `labels` output), one threshold, or one per label.
    label_names: None, or one name per label, kept in the graph as a constant.
    views: "ten" (the 10 crops) or "one" (the plain resize to target), as inference.py's
      test_views resolves InferenceConfig.views.
  """
  labels, (th, tw), crops = model.config.label_count, target, VIEWS[views]
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

  # autograph=False, as inference.make_scorer: so that a bad aggregation stays one ConfigError.
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
  that a typo never deletes someone's files. The mains call it before any work."""
  export_dir = os.path.abspath(export_dir)
  if (os.path.isdir(export_dir) and os.listdir(export_dir)
      and not os.path.exists(os.path.join(export_dir, "saved_model.pb"))):
    raise ExportDirError(f"export_saved_model={export_dir!r} is a non-empty folder that holds "
                         "no SavedModel; refusing to replace it")
  if os.path.exists(export_dir) and not os.path.isdir(export_dir):
    raise ExportDirError(f"export_saved_model={export_dir!r} is a file, not a folder")


def export(model, export_dir, resize, target, aggregation, thresholds=None, label_names=None,
           views="ten"):
  """Writes the serving SavedModel to `export_dir`, atomically; returns export_dir.

  The SavedModel is written to a temporary folder beside export_dir and renamed into place, so a
  SavedModel at export_dir is always complete. An existing SavedModel there is replaced; any other
  non-empty folder is an error (check_export_dir).
  """
  check_export_dir(export_dir)
  export_dir = os.path.abspath(export_dir)
  module = serving_module(model, resize, target, aggregation, thresholds, label_names, views)
  signatures = {SIGNATURE: module.serve}
  if label_names is not None:
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


def main(argv):
  config = configs.InferenceConfig()  # edit here, e.g. export_saved_model="export/coco"
  configs.parse_overrides(argv, config, usage=__doc__)
  if not config.export_saved_model:
    raise errors.ConfigError("set --export_saved_model to the folder the SavedModel goes to")
  check_export_dir(config.export_saved_model)
  run_utils.select_devices(config.gpu_id)

  model, model_config, prefix, step = run_utils.load_trained_model(config.checkpoint_path)
  log(f"restored {prefix} (step {step})")
  target = (model_config.target_height, model_config.target_width)
  resize = ten_crop_resize((config.resize_height, config.resize_width), target)
  thresholds = metrics.prediction_thresholds(config.thresholds_file, config.threshold,
                                             model_config.label_count)
  label_names = metrics.load_label_names(config.label_names_file, model_config.label_count,
                                         run_dir=os.path.dirname(prefix))
  views = test_views(config.views, model_config.augmentation)
  export(model, config.export_saved_model, resize, target, config.aggregation, thresholds,
         label_names, views)
  what = (f"{config.aggregation} of 10 crops of {target} after resize {resize}" if views == "ten"
          else f"one view: the image resized to {target}")
  log(f"wrote a SavedModel to {config.export_saved_model}: {SIGNATURE}(images: tf.string [N]) -> "
      f"scores [N, {model_config.label_count}] ({what}), labels [N, {model_config.label_count}]")
  return 0


if __name__ == "__main__":
  errors.run(main)
