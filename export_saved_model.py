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

import configs
from multi_label_classification_model import load_trained_model
from multilabel import arguments, errors, serving
from multilabel.runtime import log, select_devices


def main(argv):
  config = configs.InferenceConfig()  # edit here, e.g. export_saved_model="export/coco"
  arguments.parse_overrides(argv, config, usage=__doc__)
  if not config.export_saved_model:
    raise errors.ConfigError("set --export_saved_model to the folder the SavedModel goes to")
  serving.check_export_dir(config.export_saved_model)
  select_devices(config.gpu_id)

  model, model_config, prefix, step = load_trained_model(config.checkpoint_path)
  log(f"restored {prefix} (step {step})")
  scoring = serving.TestTimeScoring.for_run(config, model_config, os.path.dirname(prefix))
  serving.export(model, config.export_saved_model, scoring)
  log(f"wrote a SavedModel to {config.export_saved_model}: {serving.SIGNATURE}(images: "
      f"tf.string [N]) -> scores [N, {model_config.label_count}] ({scoring.describe()}), "
      f"labels [N, {model_config.label_count}]")
  return 0


if __name__ == "__main__":
  errors.run(main)
