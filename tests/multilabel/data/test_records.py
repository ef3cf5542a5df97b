"""multilabel/data/records.py: file specs, the original record layout, parsing, and the atomic
TFRecord writer. (tests/test_records.py, moved.)"""

import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from multilabel import errors
from multilabel.data import records
from tests.helpers import original_record


def _jpeg(seed, size=(6, 5)):
  pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, "JPEG")
  return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# expand_file_spec

@pytest.fixture
def spec_dir(tmp_path):
  for name in ["b-00001", "b-00000", "b-00002", "a.rec", "c.rec"]:
    (tmp_path / name).write_bytes(b"x")
  (tmp_path / "b-sub").mkdir()  # a folder the glob also matches: not a file, so left out
  return tmp_path


def test_expand_single_file(spec_dir):
  assert records.expand_file_spec(str(spec_dir / "a.rec")) == [str(spec_dir / "a.rec")]


def test_expand_glob_is_sorted_and_files_only(spec_dir):
  got = records.expand_file_spec(str(spec_dir / "b-*"))
  assert got == [str(spec_dir / f"b-0000{i}") for i in range(3)]


def test_expand_comma_list_keeps_order_and_drops_repeats(spec_dir):
  spec = (f"{spec_dir / 'c.rec'}, {spec_dir / 'b-0000[01]'},{spec_dir / 'a.rec'},"
          f"{spec_dir / 'c.rec'},")
  assert records.expand_file_spec(spec) == [
      str(spec_dir / "c.rec"), str(spec_dir / "b-00000"), str(spec_dir / "b-00001"),
      str(spec_dir / "a.rec")]


@pytest.mark.parametrize("part", ["missing.rec", "nothing-*"])
def test_expand_names_the_part_that_matches_nothing(spec_dir, part):
  spec = f"{spec_dir / 'a.rec'},{spec_dir / part}"
  with pytest.raises(FileNotFoundError) as info:
    records.expand_file_spec(spec)
  assert str(spec_dir / part) in str(info.value) and spec in str(info.value)


def test_expand_rejects_empty_spec_and_folders(spec_dir):
  with pytest.raises(FileNotFoundError, match="empty file spec"):
    records.expand_file_spec(" , ")
  with pytest.raises(FileNotFoundError, match="not a file"):
    records.expand_file_spec(str(spec_dir / "b-sub"))


def test_shard_paths():
  assert records.shard_paths("out/x.rec", 1) == ["out/x.rec"]
  assert records.shard_paths("out/x.rec", 3) == [
      "out/x.rec-00000-of-00003", "out/x.rec-00001-of-00003", "out/x.rec-00002-of-00003"]
  with pytest.raises(ValueError, match="0"):
    records.shard_paths("x", 0)


# ---------------------------------------------------------------------------------------------
# make_example / parse_example

def test_make_example_is_byte_identical_to_the_original_layout():
  data, labels = _jpeg(0), [1, 0, 0, 1, 1]
  ours = records.make_example("dir/a b.jpg", data, np.array(labels))
  original = original_record(b"dir/a b.jpg", data, labels)
  serialize = lambda proto: proto.SerializeToString(deterministic=True)
  assert serialize(ours) == serialize(original)


def test_make_example_custom_keys_and_bad_label():
  example = records.make_example(b"p", b"d", [0, 1], image_path_key="path",
                                 image_data_key="jpeg", image_label_key="y")
  assert set(example.context.feature) == {"path", "jpeg"}
  assert [f.int64_list.value[0] for f in example.feature_lists.feature_list["y"].feature] == [0, 1]
  with pytest.raises(ValueError, match="label 2 is 2"):
    records.make_example("p.jpg", b"d", [0, 1, 2])


def test_parse_example_reads_the_original_layout_eagerly_and_in_tf_data():
  items = [(b"img/%d.jpg" % i, _jpeg(i), np.random.default_rng(i).integers(0, 2, 7).tolist())
           for i in range(4)]
  serialized = [original_record(*item).SerializeToString() for item in items]

  path, data, labels = records.parse_example(serialized[0])
  assert path.dtype == tf.string and path.shape == [] and data.shape == []
  assert labels.dtype == tf.int64 and labels.shape == [7]

  dataset = tf.data.Dataset.from_tensor_slices(serialized).map(records.parse_example)  # graph mode
  for (path, data, labels), (want_path, want_data, want_labels) in zip(dataset, items, strict=True):
    assert path.numpy() == want_path and data.numpy() == want_data
    np.testing.assert_array_equal(labels.numpy(), want_labels)
    assert tf.io.decode_jpeg(data).shape == (5, 6, 3)


def test_parse_example_custom_keys_and_missing_key():
  serialized = records.make_example("p", b"d", [1], image_path_key="P", image_data_key="D",
                                    image_label_key="L").SerializeToString()
  path, data, labels = records.parse_example(serialized, "P", "D", "L")
  assert (path.numpy(), data.numpy(), labels.numpy().tolist()) == (b"p", b"d", [1])
  with pytest.raises(tf.errors.InvalidArgumentError):
    records.parse_example(serialized)  # default keys are absent


def test_make_then_parse_round_trip_through_a_file(tmp_path):
  path = str(tmp_path / "r.tfrecord")
  with tf.io.TFRecordWriter(path) as writer:
    writer.write(records.make_example("x.jpg", b"\xff\xd8\xffdata", [0, 1, 1]).SerializeToString())
  (got_path, got_data, got_labels), = list(tf.data.TFRecordDataset(path).map(records.parse_example))
  assert got_path.numpy() == b"x.jpg" and got_data.numpy() == b"\xff\xd8\xffdata"
  assert got_labels.numpy().tolist() == [0, 1, 1]


def test_unknown_labels_are_stored_as_is_and_round_trip(tmp_path):
  """-1 (unknown) is one more int64 value in the same layout: the hand-built record holding -1
  is byte-identical, and parse_example reads the -1 back in tf.data."""
  data, labels = _jpeg(1), [1, -1, 0, -1, 1]
  ours = records.make_example("u.jpg", data, labels)
  serialize = lambda proto: proto.SerializeToString(deterministic=True)
  assert serialize(ours) == serialize(original_record(b"u.jpg", data, labels))
  known = records.make_example("u.jpg", data, [max(v, 0) for v in labels])
  assert len(serialize(ours)) - len(serialize(known)) == 2 * 9  # a -1 is a 10-byte varint, a 0 one
  path = str(tmp_path / "u.tfrecord")
  with tf.io.TFRecordWriter(path) as writer:
    writer.write(ours.SerializeToString())
  (_, got_data, got_labels), = list(tf.data.TFRecordDataset(path).map(records.parse_example))
  assert got_data.numpy() == data and got_labels.numpy().tolist() == labels
  with pytest.raises(ValueError, match="label 1 is -2"):
    records.make_example("p.jpg", b"d", [0, -2])


def test_count_labels_counts_ones_zeros_and_unknowns_per_label(tmp_path):
  rows = np.random.default_rng(4).integers(-1, 2, (37, 5))
  paths = []
  for part in range(2):  # 37 records over two files, batches of 8
    paths.append(str(tmp_path / f"c{part}.tfrecord"))
    with tf.io.TFRecordWriter(paths[-1]) as writer:
      for i, row in enumerate(rows[part::2]):
        writer.write(records.make_example(f"{i}.jpg", _jpeg(i), row).SerializeToString())
  positives, negatives, unknowns, count = records.count_labels(paths, 5, batch_size=8)
  assert count == 37
  for got, value in ((positives, 1), (negatives, 0), (unknowns, -1)):
    np.testing.assert_array_equal(got, (rows == value).sum(axis=0))
  with pytest.raises(ValueError, match=r"c1.tfrecord: record 0 has 5 labels, but label_count=4"):
    records.count_labels(paths[1:], 4, batch_size=8)
  empty = tmp_path / "empty.tfrecord"
  empty.write_bytes(b"")
  with pytest.raises(ValueError, match="no records in"):
    records.count_labels([str(empty)], 5)



def test_count_labels_names_a_cut_off_record(tmp_path):
  """pos_weight=auto reads every record: a file cut off in record 12 is one DataError naming it,
  not TensorFlow's DataLossError. Record 12 starts at 12 x the record's framed size (all are
  equal here: the same 6x5 JPEG and 5 labels)."""
  path = str(tmp_path / "cut.tfrecord")
  example = records.make_example("0.jpg", _jpeg(0), [1, 0, 1, 0, 1]).SerializeToString()
  with tf.io.TFRecordWriter(path) as writer:
    for _ in range(20):
      writer.write(example)
  framed = 16 + len(example)  # length, its CRC, the data, its CRC
  with open(path, "r+b") as f:
    f.truncate(12 * framed + 30)
  with pytest.raises(errors.DataError, match=(
      rf"cut.tfrecord: record 12 is cut off at byte {12 * framed}: the file is damaged; rerun "
      r"create_tfrecord.py to write it again")):
    records.count_labels([path], 5, batch_size=8)


# ---------------------------------------------------------------------------------------------
# the atomic TFRecord writer

def _leftovers(folder):
  return sorted(os.listdir(folder))


def test_atomic_tfrecord_writer(tmp_path):
  good, bad = str(tmp_path / "good.rec"), str(tmp_path / "bad.rec")
  with records.atomic_tfrecord_writer(good) as writer:
    writer.write(b"one")
    writer.write(b"two")
  with pytest.raises(KeyboardInterrupt):
    with records.atomic_tfrecord_writer(bad) as writer:
      writer.write(b"one")
      raise KeyboardInterrupt()
  assert [r.numpy() for r in tf.data.TFRecordDataset(good)] == [b"one", b"two"]
  assert _leftovers(tmp_path) == ["good.rec"]
