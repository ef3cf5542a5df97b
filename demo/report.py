"""The demo's closing table: test-set mAP, CF1 and OF1 at 0.5 and after calibration, and a few
test images with their predicted and true labels.

    python demo/report.py --out=demo_out
"""

import json
import os


from dataclasses import dataclass

from multilabel import arguments, errors, metrics, settings, textfiles


@dataclass
class ReportConfig(settings.Config, section="report"):
  """demo/report.py: the demo's closing table."""
  out: str = settings.setting("demo_out", "the demo's output folder (demo.sh's DEMO_OUT)")


def main(argv):
  config = ReportConfig()
  arguments.parse_overrides(argv, config, usage=__doc__)
  out = config.out
  names = textfiles.load_label_names(os.path.join(out, "data", "label_names.txt"), 10)
  labels = textfiles.load_labels(os.path.join(out, "data", "test", "image_label"))
  scores = textfiles.load_matrix(os.path.join(out, "inference", "scores.txt"))
  thresholds = textfiles.load_thresholds(os.path.join(out, "thresholds.txt"))
  images = textfiles.image_names(os.path.join(out, "data", "test", "image_list"))

  with open(os.path.join(out, "inference", "inference_config.json")) as f:
    run = json.load(f)["run"]  # what inference.py scored: 10 crops or the one view

  mAP = metrics.mean_average_precision(labels, scores)[0]
  rows = [("at 0.5", metrics.threshold_predictions(scores, 0.5)),
          ("calibrated", metrics.threshold_predictions(scores, thresholds))]
  views = ("10-crop mean scores" if run["views"] == "ten"
           else "one view each (the model trained without random crops)")
  print(f"test set: {len(labels)} images, {views}, mAP {mAP:.4f}")
  print(f"{'':12}{'CF1':>8}{'OF1':>8}{'CP':>8}{'CR':>8}")
  for name, predictions in rows:
    m = metrics.multilabel_prf(labels, predictions)
    print(f"{name:12}{m['CF1']:8.4f}{m['OF1']:8.4f}{m['CP']:8.4f}{m['CR']:8.4f}")
  calibrated = rows[1][1]
  print("\nsample test images (digits present):")
  for i in range(min(8, len(images))):
    true = " ".join(n for n, y in zip(names, labels[i]) if y)
    predicted = " ".join(n for n, y in zip(names, calibrated[i]) if y)
    mark = "ok" if (calibrated[i] == labels[i]).all() else "  "
    print(f"  {mark} {images[i]:<16} true [{true:<8}] predicted [{predicted}]")


if __name__ == "__main__":
  errors.run(main)
