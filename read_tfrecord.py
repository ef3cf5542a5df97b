"""Inspects and verifies TFRecords: counts, label statistics, image sizes, and sample dumps.

Works on records from create_tfrecord.py and from the original TF1 toolkit (same layout, see
records.py). Every record is parsed and its image decoded with TensorFlow's decoder, the one
training uses; each failure is reported with its record index, file, image path and reason, and
any failure makes the exit status 1.

    python read_tfrecord.py --data_path=data/demo/train.tfrecord
    python read_tfrecord.py --data_path="data/train.tfrecord-*" --dump_dir=/tmp/samples \\
        --num_samples=20
"""

import os

import multilabel.startup  # noqa: F401 -- first: TensorFlow's C++ start-up lines filtered

import numpy as np
import tensorflow as tf

import configs
from multilabel import arguments, errors, files, runtime, textfiles
from multilabel.data import records

JPEG_MAGIC = b"\xff\xd8\xff"


def parse_record(serialized, cfg):
  """Parses one record with the protobuf library: as strict as records.parse_example, 1000x faster
  than calling it eagerly per record, and its errors say exactly what is missing.

  Returns:
    (image_path: str, image_data: bytes, labels: int64 [L]).
  Raises:
    ValueError: naming what is wrong with the record.
  """
  try:
    example = tf.train.SequenceExample.FromString(serialized)
  except Exception as e:  # google.protobuf.message.DecodeError
    raise ValueError(f"not a tf.train.SequenceExample ({e})") from None
  context, feature_lists = example.context.feature, example.feature_lists.feature_list

  def one_bytes_value(key):
    if key not in context:
      raise ValueError(f"no context feature {key!r} (it has {sorted(context)})")
    values = context[key].bytes_list.value
    if len(values) != 1:
      raise ValueError(f"context feature {key!r} holds {len(values)} bytes values, expected 1")
    return values[0]

  path = one_bytes_value(cfg.image_path_key).decode("utf-8", "replace")
  data = one_bytes_value(cfg.image_data_key)
  if cfg.image_label_key not in feature_lists:
    raise ValueError(f"{path}: no feature list {cfg.image_label_key!r} "
                     f"(it has {sorted(feature_lists)})")
  labels = []
  for j, feature in enumerate(feature_lists[cfg.image_label_key].feature):
    if len(feature.int64_list.value) != 1:
      raise ValueError(f"{path}: label {j} holds {len(feature.int64_list.value)} int64 values, "
                       f"expected 1")
    labels.append(feature.int64_list.value[0])
  return path, data, np.array(labels, dtype=np.int64)


def inspect_record(serialized, cfg, cross_check=False):
  """Parses and decodes one record with TensorFlow's decoder (the one training uses).

  Args:
    cross_check: also parse with records.parse_example (the training parser) and compare.
  Returns:
    (image_path: str, image_data: bytes, labels: int64 [L], image: uint8 [H, W, 3]).
  Raises:
    ValueError: naming what is wrong with the record.
  """
  path, data, labels = parse_record(serialized, cfg)
  if cross_check:
    try:
      parsed = records.parse_example(serialized, cfg.image_path_key, cfg.image_data_key,
                                     cfg.image_label_key)
    except tf.errors.InvalidArgumentError as e:
      raise ValueError(f"{path}: records.parse_example fails: {errors.tf_message(e)}") from None
    if (parsed[1].numpy() != data or not np.array_equal(parsed[2].numpy(), labels)):
      raise ValueError(f"{path}: records.parse_example reads different data or labels")
  try:
    image = tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
  except tf.errors.InvalidArgumentError as e:
    raise ValueError(f"{path}: image does not decode ({len(data)} bytes): "
                     f"{errors.tf_message(e)}") from None
  bad = [int(v) for v in labels if v not in textfiles.LABEL_VALUES]
  if bad:
    raise ValueError(f"{path}: label value {bad[0]}; labels must be 0 or 1 (or -1, unknown)")
  return path, data, labels, image


def dump_sample(dump_dir, index, data, labels, image):
  """Writes one sample as <index>_labels-<positive label indices>.jpg; returns the file name."""
  positives = "-".join(str(i) for i in np.flatnonzero(labels == 1)) or "none"
  name = f"{index:05d}_labels-{positives}.jpg"
  if not data.startswith(JPEG_MAGIC):  # e.g. PNG bytes from another tool: store a real JPEG
    data = tf.io.encode_jpeg(image, quality=95).numpy()
  with files.atomic_write(os.path.join(dump_dir, name), "wb") as f:
    f.write(data)
  return name


def write_samples_tsv(path, samples):
  """One row per dumped sample: its file name, record index, source file, image path, positive
  labels, the whole label row and the image's height and width.
  samples: (name, index, file, path, labels [L], image shape) tuples, in dump order."""
  with files.atomic_write(path) as f:
    f.write("file\trecord\tsource\timage_path\tpositive_labels\tlabel_row\theight\twidth\n")
    for name, index, file, image_path, labels, shape in samples:
      positives = " ".join(str(i) for i in np.flatnonzero(labels == 1))
      row = " ".join(str(int(v)) for v in labels)
      f.write(f"{name}\t{index}\t{file}\t{image_path}\t{positives}\t{row}\t{shape[0]}\t"
              f"{shape[1]}\n")


def print_statistics(label_rows, heights, widths):
  """Positives (and unknowns, if any) per label, labels per image, and image sizes of the good
  records. The fraction is of all records; unknown (-1) entries are neither positive nor not."""
  labels = np.stack(label_rows)  # [N, L]
  n, label_count = labels.shape
  unknowns = (labels == textfiles.UNKNOWN).sum(axis=0)  # [L]
  print(f"labels: {label_count}")
  column = ""  # the unknown column only when there are unknowns: 0/1 records print as before
  if unknowns.any():
    total = int(unknowns.sum())
    print(f"unknown (-1) entries: {total} of {labels.size} ({total / labels.size:.1%})")
    column = "    unknown"
  print("positives per label:\n  label  positives  fraction" + column)
  for j, positives in enumerate((labels == 1).sum(axis=0)):
    unknown = f"  {unknowns[j]:9d}" if column else ""
    print(f"  {j:5d}  {positives:9d}  {positives / n:8.1%}{unknown}")
  per_image = (labels == 1).sum(axis=1)
  print(f"labels per image (mean {per_image.mean():.2f}):")
  for k, images in zip(*np.unique(per_image, return_counts=True)):
    print(f"  {k:3d} labels: {images:7d} images ({images / n:.1%})")
  for what, sizes in (("height", heights), ("width", widths)):
    print(f"image {what}: min {np.min(sizes)}, median {np.median(sizes):g}, max {np.max(sizes)}")


def main(argv):
  # Configuration: edit here, or override with --field=value.
  cfg = configs.ReadTFRecordConfig()
  arguments.parse_overrides(argv, cfg, usage=__doc__)
  try:
    tf.config.set_visible_devices([], "GPU")  # decoding is CPU work; leave the GPUs to training
  except RuntimeError:
    pass  # TensorFlow was already initialized by the caller (e.g. tests calling main())
  files = records.expand_file_spec(cfg.data_path)  # a MissingFileError names the spec
  print(f"{len(files)} file(s): {', '.join(files) if len(files) <= 5 else files[0] + ' ...'}")

  # 1. Parse and decode every record, collecting statistics, failures and samples as we go.
  total_bytes = sum(os.path.getsize(f) for f in files)
  label_rows, heights, widths, failures, samples = [], [], [], [], []
  progress = runtime.Progress(0, "records")
  read_bytes, count, damaged = 0, 0, []
  for file, index_in_file, serialized, error in records.read_serialized(files):
    where = f"record {count} ({file} #{index_in_file})"
    try:
      if error:
        damaged.append(records.damaged_record(file, index_in_file, error))
        raise ValueError(f"unreadable record data: {records.damage_text(error)}; rest of file "
                         f"skipped; {records.REWRITE}")
      count += 1
      read_bytes += len(serialized) + 16  # TFRecord framing: length, 2 CRCs
      path, data, labels, image = inspect_record(serialized, cfg, cross_check=index_in_file == 0)
      if label_rows and len(labels) != len(label_rows[0]):
        raise ValueError(f"{path}: {len(labels)} labels, but the first good record has "
                         f"{len(label_rows[0])}")
    except ValueError as e:
      progress.clear()
      print(f"FAILED {where}: {e}")
      failures.append(where)
      continue
    label_rows.append(labels)
    heights.append(image.shape[0])
    widths.append(image.shape[1])
    if cfg.dump_dir and len(samples) < cfg.num_samples:
      name = dump_sample(cfg.dump_dir, count - 1, data, labels, image)
      samples.append((name, count - 1, file, path, labels, image.shape))
    progress.update(count, fraction=read_bytes / max(total_bytes, 1))
  progress.finish(count)

  # 2. Report.
  print(f"records: {count} ({len(label_rows)} good, {len(failures)} failed)")
  if label_rows:
    if failures:
      print(f"statistics of the {len(label_rows)} good records:")
    print_statistics(label_rows, heights, widths)
  if samples:
    write_samples_tsv(os.path.join(cfg.dump_dir, "samples.tsv"), samples)
    print(f"dumped {len(samples)} samples and samples.tsv to {cfg.dump_dir}")
  if failures:  # a damaged file first: what stops training and evaluation
    raise errors.DataError(f"{len(failures)} failure(s), listed above as FAILED"
                           + (f"; {damaged[0]}" if damaged else ""))
  if not count:
    raise errors.DataError(f"no records in {cfg.data_path}")


if __name__ == "__main__":
  errors.run(main)
