"""The demo's second label set, derived from the digits present: does the image hold an even
digit (0, 2, 4, 6, 8), and does it hold a digit greater than 5 (6, 7, 8, 9)?

Writes <out>/<split>/image_list, <out>/<split>/image_label and <out>/label_names.txt in the
original's formats, for each split of make_demo_data.py's output that exists; the image names
are those of the digits set, so the images are not copied (create_tfrecord.py's --image_dir
points at them).

    python demo/derive_labels.py --data=demo_out/data --out=demo_out/data2
"""

import os


from dataclasses import dataclass

from multilabel import arguments, errors, files, settings, textfiles


@dataclass
class DeriveLabelsConfig(settings.Config, section="derive_labels"):
  """demo/derive_labels.py: the second label set of the demo's transfer stage."""
  data: str = settings.setting("demo_out/data", "make_demo_data.py's output_dir, read")
  out: str = settings.setting(
      "demo_out/data2", "where the derived image_list/image_label/label_names.txt go")

NAMES = ("has_even_digit", "has_digit_above_5")
RULES = ({0, 2, 4, 6, 8}, {6, 7, 8, 9})  # the digits that make each label 1


def main(argv):
  cfg = DeriveLabelsConfig()
  arguments.parse_overrides(argv, cfg, usage=__doc__)
  splits = [s for s in ("train", "eval", "test") if os.path.isdir(os.path.join(cfg.data, s))]
  if not splits:
    raise errors.MissingFileError(f"--data={cfg.data!r}: no train/eval/test split in it")
  for split in splits:
    names = textfiles.image_names(os.path.join(cfg.data, split, "image_list"), "data")
    with open(os.path.join(cfg.data, split, "image_label")) as f:
      digits = [{d for d, v in enumerate(line.split()) if v == "1"} for line in f if line.strip()]
    rows = [[int(bool(present & rule)) for rule in RULES] for present in digits]
    folder = os.path.join(cfg.out, split)
    with files.atomic_write(os.path.join(folder, "image_label")) as f:
      f.writelines(" ".join(map(str, row)) + "\n" for row in rows)
    with files.atomic_write(os.path.join(folder, "image_list")) as f:
      f.writelines(f"{name} {sum(row)}\n" for name, row in zip(names, rows))
    print(f"{split}: {len(rows)} images; positives {[sum(c) for c in zip(*rows)]} of {NAMES}")
  with files.atomic_write(os.path.join(cfg.out, "label_names.txt")) as f:
    f.writelines(name + "\n" for name in NAMES)


if __name__ == "__main__":
  errors.run(main)
