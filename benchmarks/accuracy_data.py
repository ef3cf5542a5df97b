"""The data accuracy.py trains and scores on, as TFRecords written by create_tfrecord.py (as a
user writes them), with each set's geometry and scored splits.

    digits    make_demo_data.py's multi-label digits (sklearn's: no download): train and eval
    openmoji  benchmarks/openmoji's OpenMoji emoji with CLDR keywords (a real set with human
              labels): train, eval, test and test_noto (the test emoji in Noto's design); built
              into --data_dir first if it is not there (npm, cairosvg: README.md beside it)
"""

import dataclasses
import os
import subprocess
import sys

from benchmarks.bench_data import REPO, create_records, make_demo_records
from multilabel import errors

OPENMOJI_DIR = os.path.join(REPO, "bench_out", "openmoji")
OPENMOJI_SPLITS = ("train", "eval", "test", "test_noto")
TRAIN_RESIZE_RATIO = 255 / 224  # the original's train resize for its 224 crops


@dataclasses.dataclass
class Data:
  """A prepared set: its records by split, the splits to score (with their names in the
  report), its label count and names file, and how its train crops are made."""
  name: str
  label_count: int
  records: dict  # {split: record file spec}
  scored: dict  # {split: what the report calls it}
  label_names_file: str = ""
  resize_ratio: float = TRAIN_RESIZE_RATIO

  def sizes(self, size):
    """ModelConfig's geometry: size x size crops of a resize resize_ratio as large."""
    resize = round(size * self.resize_ratio)
    return dict(target_height=size, target_width=size, resize_height=resize, resize_width=resize)


class BuildFailed(errors.UserError):
  """The OpenMoji builder's own one-line error, with its exit status (2: a missing npm,
  cairosvg or cairo library)."""

  def __init__(self, message, status):
    super().__init__(message)
    self.status = status


def digits(work, max_images=0, data_flags=""):
  """The demo's digits: 10 labels; the demo's 32 px crops of a 36 px resize (9/8) of 64 px
  images. max_images: at most this many train and eval images (at least 10 each)."""
  flags = data_flags.split()
  if max_images:
    count = max(max_images, 10)
    flags = [f"--num_train={count}", f"--num_eval={count}", *flags]
  records = make_demo_records(work, " ".join(flags))
  return Data("digits", 10, records, {"eval": "eval"}, resize_ratio=9 / 8)


def openmoji_ready(data_dir):
  return all(os.path.exists(os.path.join(data_dir, path)) for path in
             ["label_names.txt", *(f"{split}/image_list" for split in OPENMOJI_SPLITS)])


def build_openmoji(data_dir, log_path):
  """python -m benchmarks.openmoji.build --out data_dir with this Python, its output in
  log_path; a failure is the builder's own error line and exit status."""
  print(f"building the OpenMoji set into {data_dir} (log: {log_path})", flush=True)
  with open(log_path, "w") as log:
    status = subprocess.call([sys.executable, "-m", "benchmarks.openmoji.build",
                              f"--out={data_dir}"], cwd=REPO, stdout=log,
                             stderr=subprocess.STDOUT)
  if status:
    with open(log_path) as log:
      lines = [line.strip() for line in log if line.strip()]
    said = next((line[len("error: "):] for line in reversed(lines)
                 if line.startswith("error: ")), f"see {log_path}")
    raise BuildFailed(f"building the OpenMoji set failed: {said}", status)


def spread_lines(source, target, count):
  """Copies `count` lines of `source`, evenly spaced (all if count is 0), to `target`: a subset
  of a list sorted by hexcode that still spans the emoji groups."""
  with open(source, encoding="utf-8") as f:
    lines = f.readlines()
  if count:
    lines = lines[::max(1, len(lines) // count)][:count]
  with open(target, "w", encoding="utf-8") as f:
    f.writelines(lines)


def openmoji(work, data_dir, max_images=0, record_flags=""):
  """The OpenMoji set from data_dir (built there first if missing) as TFRecords under `work`:
  every split, or max_images of its images, evenly spaced, stored by create_tfrecord.py with
  `record_flags` (e.g. "--lossless=true"). 30 labels; the train crops come from a resize
  255/224 of the target, the original's ratio (73 px for 64)."""
  data_dir = os.path.abspath(data_dir)
  if not openmoji_ready(data_dir):
    os.makedirs(data_dir, exist_ok=True)
    build_openmoji(data_dir, os.path.join(work, "build_openmoji.log"))
  names_file = os.path.join(data_dir, "label_names.txt")
  with open(names_file, encoding="utf-8") as f:
    label_count = sum(1 for line in f if line.strip())
  records = {}
  for split in OPENMOJI_SPLITS:
    lists = os.path.join(work, "lists", split)  # the lists as used: all, or a few
    os.makedirs(lists, exist_ok=True)
    for name in ("image_list", "image_label"):  # the same lines of both
      spread_lines(os.path.join(data_dir, split, name), os.path.join(lists, name), max_images)
    records[split] = create_records(os.path.join(data_dir, split, "images"), lists,
                                    os.path.join(work, "records", f"{split}.tfrecord"),
                                    record_flags.split(),
                                    log_path=os.path.join(work, f"create_tfrecord_{split}.log"))
  scored = {"eval": "OpenMoji eval", "test": "OpenMoji test", "test_noto": "Noto test"}
  return Data("openmoji", label_count, records, scored, label_names_file=names_file)


def prepare(args, work):
  if args.data == "openmoji":
    return openmoji(work, args.data_dir, args.max_images, args.data_flags)
  return digits(work, args.max_images, args.data_flags)
