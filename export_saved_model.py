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

--format=onnx or --format=tflite (with --quantize=dynamic for int8 weights) writes instead the
network's forward pass on the views: float32 [N, H, W, 3] in [-1, 1] in, sigmoid scores [N, L]
out, with the label names, thresholds and how to make the views in the file's metadata
(multilabel/exports.py); --export_saved_model names the file, or a folder for model.onnx or
model.tflite. These need requirements-export.txt.

    python export_saved_model.py --checkpoint_path=runs/coco/eval/best --format=onnx \
        --export_saved_model=export/coco.onnx
"""

import os

import multilabel.startup  # noqa: F401 -- first: TensorFlow's C++ start-up lines filtered

import configs
from multi_label_classification_model import load_trained_model
from multilabel import arguments, errors, exports, serving
from multilabel.runtime import log, select_devices


def main(argv):
  config = configs.InferenceConfig()  # edit here, e.g. export_saved_model="export/coco"
  arguments.parse_overrides(argv, config, usage=__doc__)
  if not config.export_saved_model:
    raise errors.ConfigError("set --export_saved_model to the folder the SavedModel goes to")
  exports.check_target(config.export_saved_model, config.format)
  select_devices(config.gpu_id)

  model, model_config, prefix, step = load_trained_model(config.checkpoint_path)
  log(f"restored {prefix} (step {step})")
  scoring = serving.TestTimeScoring.for_run(config, model_config, os.path.dirname(prefix))
  written = exports.export(model, config.export_saved_model, scoring, config.format,
                           config.quantize)
  labels = model_config.label_count
  if config.format == "saved_model":
    log(f"wrote a SavedModel to {written}: {serving.SIGNATURE}(images: tf.string [N]) -> "
        f"scores [N, {labels}] ({scoring.describe()}), labels [N, {labels}]")
  else:
    log(f"wrote {written}: images float32 [N, {scoring.target[0]}, {scoring.target[1]}, 3] -> "
        f"scores [N, {labels}], per view ({scoring.describe()}); names, thresholds and views "
        f"in its '{exports.INFO_KEY}' metadata")
  return 0


if __name__ == "__main__":
  errors.run(main)
