"""Shared TFRecord helpers: the record layout, file specs, and writes never seen half-done.

Records keep the original TF1 toolkit's layout, so records from either toolkit work in the other.
Each record is a serialized `tf.train.SequenceExample`:

    context {
      feature["image_path"]: bytes_list { value: "<image_dir>/<name>" }
      feature["image_data"]: bytes_list { value: <encoded JPEG> }
    }
    feature_lists {
      feature_list["image_label"]: one Feature per label, each int64_list { value: 0 or 1 }
    }

A label may also be -1, "unknown" (nobody checked it), stored as is: the loss and the metrics
skip such entries. Records with only 0/1 are byte for byte what the original wrote.

Used by create_tfrecord.py (writing), read_tfrecord.py and preprocessing.py's tf.data input
pipeline (parsing):

    files = records.expand_file_spec("data/train.tfrecord-*")
    dataset = tf.data.TFRecordDataset(files).map(records.parse_example)

Everything that knows the layout or reads the files lives here (~300 lines), so that no other
file needs to: writing, parsing, counting, and naming a damaged record.
"""

import contextlib
import glob
import os
import re

import numpy as np
import tensorflow as tf

from multilabel import errors, files, runtime
from multilabel.textfiles import LABEL_VALUES, UNKNOWN

IMAGE_PATH_KEY = "image_path"
IMAGE_DATA_KEY = "image_data"
IMAGE_LABEL_KEY = "image_label"


def expand_file_spec(spec):
  """Expands one file, a comma-separated list, or glob(s) into a list of existing files.

  Args:
    spec: str, e.g. "a.tfrecord", "a.tfrecord,b.tfrecord" or "data/train.tfrecord-*"; a
      leading ~ is expanded (quoted globs reach us unexpanded).
  Returns:
    list of str: the files in the order given; each glob's matches sorted; no file twice.
  Raises:
    errors.MissingFileError (a FileNotFoundError): naming the spec (and the part of a list) that
      matches no file.
  """
  parts = [os.path.expanduser(part.strip()) for part in str(spec).split(",") if part.strip()]
  if not parts:
    raise errors.MissingFileError(f"empty file spec {spec!r}: give a file, a comma list or a glob")
  files = []
  for part in parts:
    where = f"{part!r}" if len(parts) == 1 else f"{part!r} (part of {spec!r})"
    if glob.has_magic(part):
      matches = sorted(m for m in glob.glob(part) if os.path.isfile(m))
      if not matches:
        raise errors.MissingFileError(f"glob {where} matches no file")
    elif os.path.isfile(part):
      matches = [part]
    else:
      raise errors.MissingFileError(f"file {where} does not exist" if not os.path.exists(part)
                                    else f"{where} is not a file")
    files.extend(m for m in matches if m not in files)
  return files


def check_label_count(file_spec, label_count, image_label_key=IMAGE_LABEL_KEY):
  """Reads the first record of each file of `file_spec` and checks its number of labels.

  Cheap (one record per file), so that a wrong --label_count or the wrong records stop a run
  before it starts, rather than at the first batch that holds such a record.
  Returns:
    the files (expand_file_spec).
  Raises:
    errors.MissingFileError: the spec matches no file.
    errors.DataError: a first record has no `image_label_key` feature list or another number of
      labels (naming the file and both counts), or no file holds a record.
  """
  files = expand_file_spec(file_spec)
  found = False
  for path in files:
    try:
      first = [r.numpy() for r in tf.data.TFRecordDataset(path).take(1)]
    except tf.errors.DataLossError as e:
      raise damaged_record(path, 0, e) from None
    for serialized in first:
      found = True
      lists = tf.train.SequenceExample.FromString(serialized).feature_lists.feature_list
      if image_label_key not in lists:
        raise errors.DataError(f"{path}: its first record has no feature list "
                               f"{image_label_key!r} (it has {sorted(lists)})")
      count = len(lists[image_label_key].feature)
      if count != label_count:
        raise errors.DataError(f"{path}: its first record has {count} labels, but label_count is "
                               f"{label_count}")
  if not found:
    raise errors.DataError(f"{file_spec}: no records in {len(files)} file(s)")
  return files


# ---------------------------------------------------------------------------------------------
# Damaged files: a cut-off or corrupt record stops every reader; say which and what to do.

_DAMAGE = re.compile(r"(truncated|corrupted) record at (\d+)")
REWRITE = "rerun create_tfrecord.py to write it again"


def read_serialized(files, batch_size=256):
  """Yields (file, index in file, serialized record, None) for every record, and (file, index,
  None, tf.errors.OpError) at a damaged file's first unreadable record, after every readable one
  before it; the file's rest cannot be read past it, and the next file follows.

  Reads in batches (much faster than one record at a time)."""
  for path in files:
    index = 0
    try:
      for batch in tf.data.TFRecordDataset(path).batch(batch_size).as_numpy_iterator():
        for serialized in batch:
          yield path, index, serialized, None
          index += 1
    except tf.errors.OpError:
      try:  # the damaged batch was lost: re-read it one record at a time up to the damage
        for serialized in tf.data.TFRecordDataset(path).skip(index).as_numpy_iterator():
          yield path, index, serialized, None
          index += 1
      except tf.errors.OpError as e:
        yield path, index, None, e


def damage_text(error):
  """What a DataLossError says of a record: "cut off at byte 17776" or "corrupt at byte 14213
  (its checksum does not match)"; else TensorFlow's own words."""
  match = _DAMAGE.search(str(getattr(error, "message", error)))
  if not match:
    return f"unreadable ({errors.tf_message(error)})"
  what = "cut off" if match[1] == "truncated" else "corrupt"
  return f"{what} at byte {match[2]}" + (" (its checksum does not match)" if what == "corrupt"
                                         else "")


def damaged_record(path, index, error, then=""):
  """The one line of a damaged record: its file and index, what is wrong, and what to do."""
  return errors.DataError(f"{path}: record {index} is {damage_text(error)}: the file is damaged; "
                          f"{REWRITE}{then}")


def damage_error(files, error, then=""):
  """The DataError for `error`, a DataLossError met while reading `files`: a tf.data pipeline's
  message names no file, so they are read again, to name the first damaged record's file and
  index and say what to do. `then` ends the line (what the script did about it)."""
  for path, index, _, damaged in read_serialized(files):
    if damaged is not None:
      return damaged_record(path, index, damaged, then)
  return errors.DataError(f"reading {', '.join(files)}: {damage_text(error)}; {REWRITE}{then}")


SHARD_GLOB = "-" + "[0-9]" * 5 + "-of-" + "[0-9]" * 5  # what shard_paths appends, as a glob


def shard_paths(output_file, num_shards):
  """Output names: the file itself for one shard, else <output_file>-00000-of-0000N etc. (the
  suffix SHARD_GLOB matches)."""
  if num_shards < 1:
    raise ValueError(f"num_shards must be >= 1, got {num_shards}")
  if num_shards == 1:
    return [output_file]
  return [f"{output_file}-{i:05d}-of-{num_shards:05d}" for i in range(num_shards)]


def make_example(image_path, image_data, labels, *, image_path_key=IMAGE_PATH_KEY,
                 image_data_key=IMAGE_DATA_KEY, image_label_key=IMAGE_LABEL_KEY):
  """Builds one record in the original toolkit's layout.

  Args:
    image_path: str or bytes, stored as UTF-8 bytes.
    image_data: bytes, the encoded JPEG.
    labels: sequence of L ints, each 0 or 1, or -1 for unknown.
  Returns:
    tf.train.SequenceExample.
  Raises:
    ValueError: naming a label that is not 0, 1 or -1.
  """
  if isinstance(image_path, str):
    image_path = image_path.encode("utf-8")
  values = [int(v) for v in labels]
  bad = [(i, v) for i, v in enumerate(values) if v not in LABEL_VALUES]
  if bad:
    raise ValueError(f"{image_path!r}: label {bad[0][0]} is {bad[0][1]}; labels must be 0 or 1 "
                     f"(or -1, unknown)")
  bytes_feature = lambda b: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b]))
  int64_feature = lambda v: tf.train.Feature(int64_list=tf.train.Int64List(value=[v]))
  return tf.train.SequenceExample(
      context=tf.train.Features(feature={
          image_path_key: bytes_feature(image_path),
          image_data_key: bytes_feature(bytes(image_data)),
      }),
      feature_lists=tf.train.FeatureLists(feature_list={
          image_label_key: tf.train.FeatureList(feature=[int64_feature(v) for v in values]),
      }))


def parse_example(serialized, image_path_key=IMAGE_PATH_KEY, image_data_key=IMAGE_DATA_KEY,
                  image_label_key=IMAGE_LABEL_KEY):
  """Parses one serialized record; graph-safe, for tf.data.Dataset.map.

  Args:
    serialized: tf.string scalar, one record.
  Returns:
    image_path: tf.string scalar.
    image_data: tf.string scalar, the encoded JPEG.
    labels: tf.int64 [L], 0/1 (-1 = unknown).
  """
  context, sequence = tf.io.parse_single_sequence_example(
      serialized,
      context_features={
          image_path_key: tf.io.FixedLenFeature([], tf.string),
          image_data_key: tf.io.FixedLenFeature([], tf.string),
      },
      sequence_features={image_label_key: tf.io.FixedLenSequenceFeature([1], tf.int64)})
  labels = tf.reshape(sequence[image_label_key], [-1])  # [L, 1] -> [L]
  return context[image_path_key], context[image_data_key], labels


def count_labels(files, label_count, image_label_key=IMAGE_LABEL_KEY, batch_size=1024):
  """Counts each label's 1s, 0s and -1s in TFRecords, reading the labels only.

  No image is decoded, but the records are still read whole: the pass costs about what reading
  the files costs (for pos_weight=auto, once at the start of training).

  Args:
    files: list of TFRecord files (expand_file_spec's result).
    label_count: the number of labels every record must hold.
  Returns:
    (positives, negatives, unknowns): int64 [label_count] each, and the number of records.
  Raises:
    errors.DataError: naming the file and record whose label count differs or that is damaged,
      or when there is no record.
  """
  counts = np.zeros((3, label_count), np.int64)  # rows: 1s, 0s, -1s
  sequence_features = {image_label_key: tf.io.FixedLenSequenceFeature([1], tf.int64)}
  progress, total = runtime.Progress(0, "records (labels only)"), 0
  for path in files:
    seen = 0
    try:
      for batch in tf.data.TFRecordDataset(path).batch(batch_size):
        _, sequence, lengths = tf.io.parse_sequence_example(
            batch, sequence_features=sequence_features)
        lengths = lengths[image_label_key].numpy()
        if np.any(lengths != label_count):
          index = seen + int(np.argmax(lengths != label_count))
          raise errors.DataError(f"{path}: record {index} has {lengths[index - seen]} labels, "
                                 f"but label_count={label_count}")
        labels = sequence[image_label_key].numpy()[:, :, 0]  # [b, L, 1] -> [b, L]
        for row, value in enumerate((1, 0, UNKNOWN)):
          counts[row] += (labels == value).sum(axis=0)
        seen += len(labels)
        progress.update(total + seen)
    except tf.errors.DataLossError as e:  # a cut-off or corrupt record: name it
      raise damage_error([path], e) from None
    total += seen
  progress.clear()
  if not total:
    raise errors.DataError(f"no records in {', '.join(files)}")
  return counts[0], counts[1], counts[2], total


@contextlib.contextmanager
def atomic_tfrecord_writer(path, options=None):
  """tf.io.TFRecordWriter to a temporary file (files.temp_path), renamed to `path` when the block
  completes; on failure the temp file is removed, and a full disk is files.no_space_error's line.

      with records.atomic_tfrecord_writer("train.tfrecord") as writer:
        writer.write(example.SerializeToString())
  """
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  tmp = files.temp_path(path)
  writer = tf.io.TFRecordWriter(tmp, options)
  try:
    yield writer
    writer.close()
    os.replace(tmp, path)
  except (OSError, tf.errors.OpError) as e:
    if not files.is_no_space(e):
      raise
    with contextlib.suppress(OSError, tf.errors.OpError):
      writer.close()  # its buffer cannot be written either
    files.discard(tmp)
    raise files.no_space_error(folder, None, os.path.basename(path),
                               f"; {path} was not written") from None
  finally:
    with contextlib.suppress(OSError, tf.errors.OpError):
      writer.close()  # a second close is a no-op
    files.discard(tmp)
