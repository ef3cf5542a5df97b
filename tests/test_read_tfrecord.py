"""read_tfrecord.py: statistics, verification and dumps, on records in the original's layout."""

import io
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import read_tfrecord
from multilabel.data import records
from tests import helpers
from tests.helpers import REPO, run_script_main, write_records

# (path, (height, width), labels): sizes and labels chosen so every statistic is easy to check.
ITEMS = [(b"/data/a.jpg", (10, 12), [1, 0, 1, 0]),
         (b"/data/b.jpg", (6, 20), [0, 0, 0, 0]),
         (b"/data/c.jpg", (14, 8), [1, 1, 1, 0]),
         (b"/data/d.jpg", (9, 16), [0, 0, 1, 0]),
         (b"/data/e.jpg", (7, 11), [1, 0, 1, 0])]


def jpeg(height, width, seed):
  pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, "JPEG")
  return buffer.getvalue()


def original_record(*args, **kwargs):
  """Serialized exactly as the original TF1 create_tfrecord.py built records."""
  return helpers.original_record(*args, **kwargs).SerializeToString()


@pytest.fixture
def original_file(tmp_path):
  """ITEMS as one TFRecord file in the original layout; returns (path, [image bytes])."""
  images = [jpeg(*size, seed=i) for i, (_, size, _) in enumerate(ITEMS)]
  serialized = [original_record(p, d, l) for (p, _, l), d in zip(ITEMS, images)]
  return write_records(tmp_path / "original.tfrecord", serialized=serialized), images


def run(capsys, *argv):
  return run_script_main(capsys, read_tfrecord.main, argv)


def test_statistics_of_original_layout_records(original_file, capsys):
  path, _ = original_file
  code, out, err = run(capsys, f"--data_path={path}")
  assert code == 0, out + err
  labels = np.array([l for _, _, l in ITEMS])
  heights = [s[0] for _, s, _ in ITEMS]
  widths = [s[1] for _, s, _ in ITEMS]
  assert "records: 5 (5 good, 0 failed)" in out and "labels: 4" in out
  assert "unknown" not in out  # 0/1 records: today's report, no unknown column
  for j, positives in enumerate(labels.sum(axis=0)):  # numpy oracle: 3, 1, 4, 0
    assert f"  {j:5d}  {positives:9d}  {positives / 5:8.1%}" in out
  for k, n in [(0, 1), (1, 1), (2, 2), (3, 1)]:  # labels per image: b=0, d=1, a,e=2, c=3
    assert f"  {k:3d} labels: {n:7d} images ({n / 5:.1%})" in out
  for what, sizes in (("height", heights), ("width", widths)):
    assert f"image {what}: min {min(sizes)}, median {np.median(sizes):g}, max {max(sizes)}" in out


def test_original_layout_records_parse_with_the_pipeline_parser(original_file):
  path, images = original_file
  dataset = tf.data.TFRecordDataset(str(path)).map(records.parse_example)
  for (p, d, l), (want_p, _, want_l), want_d in zip(dataset, ITEMS, images, strict=True):
    assert p.numpy() == want_p and d.numpy() == want_d and l.numpy().tolist() == want_l


def test_dump_writes_named_jpegs_and_a_sidecar(original_file, tmp_path, capsys):
  path, images = original_file
  dump = tmp_path / "dump"
  code, out, _ = run(capsys, f"--data_path={path}", f"--dump_dir={dump}", "--num_samples=3")
  assert code == 0
  assert sorted(os.listdir(dump)) == ["00000_labels-0-2.jpg", "00001_labels-none.jpg",
                                      "00002_labels-0-1-2.jpg", "samples.tsv"]
  assert (dump / "00002_labels-0-1-2.jpg").read_bytes() == images[2]  # the stored JPEG itself
  rows = [line.split("\t") for line in (dump / "samples.tsv").read_text().splitlines()]
  assert rows[0][:6] == ["file", "record", "source", "image_path", "positive_labels", "label_row"]
  assert rows[1] == ["00000_labels-0-2.jpg", "0", str(path), "/data/a.jpg", "0 2", "1 0 1 0",
                     "10", "12"]
  assert len(rows) == 4 and "dumped 3 samples" in out


def test_unknown_labels_are_reported_per_label(tmp_path, capsys):
  rows = [[1, -1, 0], [-1, -1, 1], [0, 1, -1], [1, 0, 0]]
  serialized = [original_record(b"/u/%d.jpg" % i, jpeg(6, 6, i), row) for i, row in enumerate(rows)]
  path = write_records(tmp_path / "u.tfrecord", serialized=serialized)
  dump = tmp_path / "dump"
  code, out, err = run(capsys, f"--data_path={path}", f"--dump_dir={dump}", "--num_samples=2")
  assert code == 0, out + err
  labels = np.array(rows)
  assert "unknown (-1) entries: 4 of 12 (33.3%)" in out
  assert "  label  positives  fraction    unknown" in out
  for j in range(3):  # numpy oracle: the 1s, and the -1s, of each column
    positives, unknowns = (labels[:, j] == 1).sum(), (labels[:, j] == -1).sum()
    assert f"  {j:5d}  {positives:9d}  {positives / 4:8.1%}  {unknowns:9d}" in out
  for k, n in [(1, 4)]:  # every image carries exactly one 1
    assert f"  {k:3d} labels: {n:7d} images ({n / 4:.1%})" in out
  assert sorted(os.listdir(dump)) == ["00000_labels-0.jpg", "00001_labels-2.jpg", "samples.tsv"]
  assert "\t0\t1 -1 0\t" in (dump / "samples.tsv").read_text()


def test_globs_comma_lists_and_custom_keys(tmp_path, capsys):
  keys = ("path", "jpeg", "y")
  for shard in range(2):
    write_records(tmp_path / f"x.rec-0000{shard}-of-00002", serialized=[
        original_record(b"p%d" % i, jpeg(5, 5, i), [shard, 1], keys) for i in range(3)])
  key_flags = ["--image_path_key=path", "--image_data_key=jpeg", "--image_label_key=y"]
  code, out, _ = run(capsys, f"--data_path={tmp_path}/x.rec-*", *key_flags)
  assert code == 0 and "records: 6 (6 good, 0 failed)" in out
  spec = f"{tmp_path}/x.rec-00001-of-00002,{tmp_path}/x.rec-00000-of-00002"
  code, out, _ = run(capsys, f"--data_path={spec}", *key_flags)
  assert code == 0 and "records: 6" in out and "2 file(s)" in out
  code, out, _ = run(capsys, f"--data_path={tmp_path}/x.rec-*")  # default keys: every record fails
  assert code == 1 and "records: 6 (0 good, 6 failed)" in out
  assert "no context feature 'image_path'" in out


@pytest.mark.slow
def test_failures_are_reported_and_exit_nonzero_in_a_real_process(tmp_path):
  good = jpeg(6, 6, 0)
  serialized = [original_record(b"/data/good.jpg", good, [1, 0]),
                original_record(b"/data/broken.jpg", good[:len(good) // 2] + b"\x00" * 10, [0, 1]),
                original_record(b"/data/junk.jpg", b"not an image at all", [1, 1]),
                original_record(b"/data/three.jpg", good, [0, 1, 0]),  # label count differs
                original_record(b"/data/two.jpg", good, [1, 2]),  # label value 2
                tf.train.SequenceExample().SerializeToString(),  # no keys at all
                original_record(b"/data/good2.jpg", good, [0, 1])]
  path = write_records(tmp_path / "mixed.tfrecord", serialized=serialized)
  result = subprocess.run([sys.executable, "read_tfrecord.py", f"--data_path={path}"], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
  out = result.stdout
  assert result.returncode == 1
  assert "records: 7 (2 good, 5 failed)" in out
  assert f"FAILED record 1 ({path} #1): /data/broken.jpg: image does not decode" in out
  assert f"FAILED record 2 ({path} #2): /data/junk.jpg: image does not decode" in out
  assert f"FAILED record 3 ({path} #3): /data/three.jpg: 3 labels" in out
  assert f"FAILED record 4 ({path} #4): /data/two.jpg: label value 2" in out
  assert f"FAILED record 5 ({path} #5): no context feature 'image_path'" in out
  assert "5 failure(s)" in result.stderr


def test_damaged_file_reports_the_damage_and_keeps_the_readable_records(tmp_path, capsys):
  path = tmp_path / "r.tfrecord"
  write_records(path, serialized=[original_record(b"/p%d" % i, jpeg(4, 4, i), [1])
                                  for i in range(300)])
  data = path.read_bytes()
  path.write_bytes(data[:len(data) - 100])  # cut into the last record
  code, out, _ = run(capsys, f"--data_path={path}")
  assert code == 1
  assert "records: 299 (299 good, 1 failed)" in out
  assert f"FAILED record 299 ({path} #299): unreadable record data" in out


def test_missing_data_path_exits_nonzero_naming_it(tmp_path, capsys):
  code, _, err = run(capsys, f"--data_path={tmp_path}/none-*")
  assert code == 1 and f"{tmp_path}/none-*" in err
  code, _, err = run(capsys)
  assert code == 2 and "--data_path" in err


def test_empty_file_is_an_error(tmp_path, capsys):
  path = write_records(tmp_path / "empty.tfrecord", serialized=[])
  code, out, err = run(capsys, f"--data_path={path}")
  assert code == 1 and "records: 0" in out and "no records" in err
