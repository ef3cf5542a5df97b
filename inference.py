"""Scores test images with 10 crops (4 corners + centre + their mirrors), averaged or maxed.

`--views=auto` (the default) takes the 10 crops when the model trained on random crops and flips
(augmentation seed, the original's, crop_flip or randaugment), and otherwise the one view the
network trained on, the image resized to the target, exactly as evaluate.py scores it.

Rebuilds the model from the checkpoint's saved config (and uses the EMA weights if training kept
them), decodes images in parallel in tf.data, and writes:
  <inference_dir>/<inference_file_name>  the original's score file, a row per image, each
                                         score exact (textfiles.score_text)
  <inference_dir>/predictions.csv        path, status, every score (exact too), the predicted
                                         label names
  <inference_dir>/inference_config.json  this config, the model's, the label names, and what the
                                         run used: checkpoint and step, resize and crops,
                                         aggregation, thresholds (file and values)
The label names are the train dir's (train.py keeps them in config.json) unless
--label_names_file names others. A row's status is 'ok', 'unreadable' (a NaN row; --strict=true
exits 1) or 'non-finite': the checkpoint's weights gave a NaN or inf score (a run that diverged),
and the run exits 1 after writing the outputs, in one line naming the checkpoint. Ctrl-C or
SIGTERM stops it with exit status 130 or 143, and all of the outputs or none of them written.

    python inference.py --checkpoint_path=runs/coco/eval/best --image_dir=test_images
    python inference.py --checkpoint_path=runs/coco --image_list_file=test/image_list \\
        --image_dir=test/images --thresholds_file=thresholds.txt --label_names_file=names.txt
"""

import csv
import os
import time

import multilabel.startup  # noqa: F401 -- first: TensorFlow's C++ start-up lines filtered

import numpy as np
import tensorflow as tf

import configs
from multi_label_classification_model import load_trained_model
from multilabel import (arguments, checkpoints, config_files, errors, exports, files, metrics,
                        serving, textfiles)
from multilabel.data import image_decoding
from multilabel.data.preprocessing import preprocess_views
from multilabel.runtime import Progress, StopSignals, log, select_devices

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
OK, UNREADABLE, NON_FINITE = "ok", "unreadable", "non-finite"  # predictions.csv's statuses


def get_test_image_list(config):
  """The images to score, in output order. Edit this hook to score something else.

  image_list_file: an original-format image_list ("my photo.jpg 3": the names, read as
  create_tfrecord.py reads them) or a plain list of paths, one per line (textfiles.image_names);
  a BOM, CRLF and blank lines are fine, and relative names are resolved against image_dir.
  image_dir alone: every image in it, sorted. Neither is a ConfigError; a missing or empty list
  or folder is a DataError naming it.
  """
  if config.image_list_file:
    names = textfiles.image_names(config.image_list_file)
    if not names:
      raise errors.DataError(f"{config.image_list_file}: no image names in it")
    return [os.path.join(config.image_dir, n) if config.image_dir and not os.path.isabs(n)
            else n for n in names]
  if config.image_dir:
    if not os.path.isdir(config.image_dir):
      raise errors.MissingFileError(f"image_dir={config.image_dir!r}: no such directory")
    paths = sorted(os.path.join(config.image_dir, n) for n in os.listdir(config.image_dir)
                   if n.lower().endswith(IMAGE_EXTENSIONS))
    if not paths:
      raise errors.DataError(f"image_dir={config.image_dir!r}: no images in it (no file ending "
                             f"in {', '.join(IMAGE_EXTENSIONS)})")
    return paths
  raise errors.ConfigError("set --image_list_file or --image_dir to the images to score")


def too_large_images(paths):
  """{index: why} of the images over create_tfrecord.py's pixel limit (image_decoding.too_large,
  from each image's header: nothing is decoded). Found before TensorFlow sees them, since its
  decoder takes any size: a 20000 x 20000 image cost 13 GB at its peak."""
  return {i: why for i, path in enumerate(paths) if (why := image_decoding.too_large(path))}


def crops_dataset(paths, indices, scoring, batch_size):
  """(index, [V, h, w, 3]) batches of the views (preprocess_views) of the images `indices` of
  `paths`; images that fail to decode are dropped (found by index)."""
  def load(index, path):
    return index, preprocess_views(tf.io.read_file(path), scoring.views, scoring.resize,
                                   scoring.target)
  # The paths as the file system's bytes: a name that is not UTF-8 (os.listdir keeps its bytes
  # as surrogate escapes) cannot become a tf.string from a str.
  names = tf.constant([os.fsencode(paths[i]) for i in indices], tf.string)
  ds = tf.data.Dataset.from_tensor_slices((tf.constant(indices, tf.int32), names))
  ds = ds.map(load, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
  return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def score_images(score, paths, scoring, batch_size, skip=()):
  """Scores every path but those of the indices `skip` (not decoded at all); those and the
  images that fail to decode get a row of NaN. Returns (scores [N, L], failed indices)."""
  scores = np.full((len(paths), len(scoring.label_names)), np.nan, np.float32)
  seen = np.zeros(len(paths), bool)
  indices = [i for i in range(len(paths)) if i not in skip]
  progress = Progress(len(indices), "images")
  for batch, crops in crops_dataset(paths, indices, scoring, batch_size):
    scores[batch.numpy()] = score(crops).numpy()
    seen[batch.numpy()] = True
    progress.update(int(seen.sum()))
  progress.finish(int(seen.sum()))
  return scores, np.flatnonzero(~seen)


def failure_reason(path):
  try:
    tf.io.decode_image(tf.io.read_file(os.fsencode(path)), channels=3, expand_animations=False)
  except (tf.errors.OpError, ValueError) as e:
    return errors.tf_message(e)[:200]
  return "failed during cropping"


def image_statuses(scores, failed):
  """Each image's status in predictions.csv: 'unreadable' (not scored), 'non-finite' (a score is
  NaN or inf: the checkpoint's weights are), else 'ok'."""
  statuses = [OK if finite else NON_FINITE for finite in np.isfinite(scores).all(axis=1)]
  for i in failed:
    statuses[i] = UNREADABLE
  return statuses


def write_predictions_csv(path, paths, scores, statuses, thresholds, label_names):
  """One row per image: path (files.printable_name), status, every score, the names of the
  labels above threshold (none unless the status is 'ok')."""
  predictions = metrics.threshold_predictions(np.nan_to_num(scores, nan=-1.0), thresholds)
  with files.atomic_write(path, newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["image_path", "status"] + label_names + ["predicted_labels"])
    for i, (image, status) in enumerate(zip(map(files.printable_name, paths), statuses)):
      if status == UNREADABLE:
        writer.writerow([image, status] + [""] * len(label_names) + [""])
        continue
      names = [n for n, p in zip(label_names, predictions[i]) if p and status == OK]
      writer.writerow([image, status] + [textfiles.score_text(s) for s in scores[i]]
                      + [textfiles.LABEL_SEPARATOR.join(names)])


def score_all(model, paths, scoring, config):
  """Scores every image and logs what could not be: (scores [N, L], statuses)."""
  start = time.time()
  score = serving.make_scorer(model, config.aggregation, config.xla)
  too_large = too_large_images(paths)
  scores, failed = score_images(score, paths, scoring, config.batch_size, skip=too_large)
  for i in failed:
    why = f"too large ({too_large[i]})" if i in too_large else failure_reason(paths[i])
    log(f"unreadable image {files.printable_name(paths[i])}: {why}")
  statuses = image_statuses(scores, failed)
  non_finite = statuses.count(NON_FINITE)
  log(f"scored {len(paths) - len(failed)} images in {time.time() - start:.1f} s; "
      f"{len(failed)} unreadable" + (f", {len(too_large)} of them too large" if too_large else "")
      + (" (a NaN row each in the score file, status 'unreadable' in predictions.csv)"
         if len(failed) else "")
      + (f"; {non_finite} with NaN or inf scores (status '{NON_FINITE}')" if non_finite else ""))
  return scores, statuses


def check_output_folders(config):
  """A read-only inference_dir, or export folder's parent, is one line now, before any image is
  scored."""
  files.check_writable(config.inference_dir, "inference_dir")
  if config.export_saved_model:
    exports.check_target(config.export_saved_model, config.format)


def write_outputs(config, paths, scores, statuses, scoring, model_config, prefix, step):
  """The score file, predictions.csv, and last inference_config.json, which describes them."""
  score_path = os.path.join(config.inference_dir, config.inference_file_name)
  textfiles.save_scores(score_path, scores)
  csv_path = os.path.join(config.inference_dir, "predictions.csv")
  write_predictions_csv(csv_path, paths, scores, statuses, scoring.thresholds,
                        scoring.label_names)
  # Last, so that it describes outputs that are all there.
  config_path = os.path.join(config.inference_dir, config_files.INFERENCE_CONFIG_FILE)
  config_files.save_configs(config_path, config, model_config, label_names=scoring.label_names,
                        run={"checkpoint": prefix, "global_step": step, "views": scoring.views,
                             "crops_per_image": scoring.crops, "resize": list(scoring.resize),
                             "target": list(scoring.target), "aggregation": config.aggregation,
                             "thresholds_file": config.thresholds_file,
                             "thresholds": np.asarray(scoring.thresholds, np.float64).tolist(),
                             "images": len(paths), "unreadable": statuses.count(UNREADABLE)})
  log(f"wrote {score_path}, {csv_path} and {config_path}")


def main(argv):
  config = configs.InferenceConfig()  # edit here, e.g. checkpoint_path="runs/coco/eval/best"
  arguments.parse_overrides(argv, config, usage=__doc__)
  check_output_folders(config)
  paths = get_test_image_list(config)
  outcome = ["no output was written"]  # what a stop signal leaves, said in its line
  with StopSignals(lambda: outcome[0]) as stop:
    select_devices(config.gpu_id)
    model, model_config, prefix, step = load_trained_model(config.checkpoint_path)
    log(f"restored {prefix} (step {step})")
    # The names and thresholds are read here, so that a bad file fails before the images are
    # scored.
    scoring = serving.TestTimeScoring.for_run(config, model_config, os.path.dirname(prefix))
    if scoring.views == "ten":
      log(f"scoring {len(paths)} images: resize {scoring.resize}, 10 crops of {scoring.target}, "
          f"{config.aggregation}")
    else:  # the whole image, as the network saw it in training (augmentation=...)
      log(f"scoring {len(paths)} images: one view, resized to {scoring.target} as evaluate.py "
          f"does (trained with augmentation={model_config.augmentation}; --views=ten for 10 "
          "crops)")
    scores, statuses = score_all(model, paths, scoring, config)
    non_finite, unreadable = statuses.count(NON_FINITE), statuses.count(UNREADABLE)
    # Before the other outputs, since it takes a while: a stop during it leaves none (it is
    # atomic too). Not the NaN weights, which would replace a good export.
    if config.export_saved_model and not non_finite:
      written = exports.export(model, config.export_saved_model, scoring, config.format,
                               config.quantize)
      log(f"wrote {config.format} {written}")
    with stop.deferred():  # all of the outputs, or (stopped before) none
      write_outputs(config, paths, scores, statuses, scoring, model_config, prefix, step)
      outcome[0] = f"the outputs in {config.inference_dir} are all written"
  if non_finite:
    raise checkpoints.non_finite_scores(
        prefix, non_finite, len(paths) - unreadable,
        f"; their rows are marked '{NON_FINITE}' in predictions.csv"
        + ("; the SavedModel was not written" if config.export_saved_model else "")
        + checkpoints.use_earlier(prefix))
  if config.strict and unreadable:
    raise errors.DataError(f"{unreadable} of {len(paths)} images were unreadable (listed above; "
                           "their rows are marked in the outputs) and --strict=true")
  return 0


if __name__ == "__main__":
  errors.run(main)
