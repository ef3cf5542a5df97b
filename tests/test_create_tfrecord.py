"""create_tfrecord.py: round trips, shards, bad list/label files, odd image formats, skips.

Most runs call main() in this process, through errors.run as the script does (a fresh Python
importing TensorFlow costs ~6 s); the exit status is then SystemExit.code, the same value the
process would exit with. One shard run and one
bad-input run go through a real subprocess to cover the command line and the worker pool.
"""

import contextlib
import glob
import io
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import configs
import create_tfrecord
from multilabel.data import records
from multilabel.data.preprocessing import build_dataset
from tests.helpers import (REPO, gradient, odd_images, original_record, run_script_main, save,
                           unreadable_images, write_records)

JPEG_MAGIC = b"\xff\xd8\xff"


def write_inputs(folder, names, labels, list_text=None, label_text=None):
  """Writes image_list / image_label (the images themselves are written by the caller)."""
  list_text = list_text if list_text is not None else "".join(
      f"{n} {sum(row)}\n" for n, row in zip(names, labels))
  label_text = label_text if label_text is not None else "".join(
      " ".join(map(str, row)) + "\n" for row in labels)
  list_file, label_file = folder / "image_list", folder / "image_label"
  for path, text in ((list_file, list_text), (label_file, label_text)):
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
  return list_file, label_file


def jpeg_set(tmp_path, count, label_count=5, seed=0):
  """`count` RGB JPEGs with random labels; returns (image_dir, names, labels, list, label)."""
  image_dir = tmp_path / "images"
  image_dir.mkdir()
  rng = np.random.default_rng(seed)
  names = [f"img_{i}.jpg" for i in range(count)]
  labels = [[int(v) for v in rng.integers(0, 2, label_count)] for _ in names]
  for i, name in enumerate(names):
    save(image_dir / name, Image.fromarray(gradient(8 + i, 6, seed=i)), "JPEG", quality=90)
  list_file, label_file = write_inputs(tmp_path, names, labels)
  return image_dir, names, labels, list_file, label_file


def run(capsys, image_dir, list_file, label_file, output, **flags):
  """Runs main() in this process; returns (exit status, stdout, stderr)."""
  argv = [f"--image_dir={image_dir}", f"--imglist_file={list_file}",
          f"--imglabel_file={label_file}", f"--output_file={output}", "--num_workers=1"]
  argv += [f"--{key}={value}" for key, value in flags.items()]
  return run_script_main(capsys, create_tfrecord.main, argv)


def read_back(files):
  """[(image_path str, image_data bytes, labels list)] in file order, via records.parse_example."""
  dataset = tf.data.TFRecordDataset([str(f) for f in files]).map(records.parse_example)
  return [(p.numpy().decode(), d.numpy(), l.numpy().tolist()) for p, d, l in dataset]


# ---------------------------------------------------------------------------------------------
# Round trips.

def test_round_trip_in_list_order(tmp_path, capsys):
  image_dir, names, labels, list_file, label_file = jpeg_set(tmp_path, 6)
  output = tmp_path / "out" / "train.tfrecord"
  code, out, err = run(capsys, image_dir, list_file, label_file, output, seed=-1)
  assert code == 0, err
  got = read_back([output])
  assert [g[0] for g in got] == [os.path.join(str(image_dir), n) for n in names]
  assert [g[2] for g in got] == labels
  for (_, data, _), name in zip(got, names):
    assert data == (image_dir / name).read_bytes()  # RGB JPEG: stored byte for byte
  assert "wrote 6 records" in out and "stored unchanged: 6" in out and "skipped: 0" in out
  assert "images: 6/6" in err  # the progress line
  assert sorted(os.listdir(output.parent)) == ["train.tfrecord"]


def hand_written_file(path, image_dir, names, labels):
  """The TFRecord file of hand-built records, in list order."""
  write_records(path, serialized=[
      original_record(os.path.join(str(image_dir), name), (image_dir / name).read_bytes(), row)
      .SerializeToString() for name, row in zip(names, labels)])
  return path.read_bytes()


def test_0_1_records_are_byte_identical_to_hand_built_original_records(tmp_path, capsys):
  image_dir, names, labels, list_file, label_file = jpeg_set(tmp_path, 5)
  output = tmp_path / "out.tfrecord"
  code, out, err = run(capsys, image_dir, list_file, label_file, output, seed=-1)
  assert code == 0, err
  assert output.read_bytes() == hand_written_file(tmp_path / "hand.tfrecord", image_dir, names,
                                                  labels)
  assert "unknown labels (-1): 0 of 25 entries" in out


def test_unknown_labels_round_trip_and_the_count_is_the_ones(tmp_path, capsys):
  image_dir, names, _, _, _ = jpeg_set(tmp_path, 3, label_count=4)
  labels = [[1, -1, 0, 1], [-1, -1, -1, -1], [0, 1, -1, 0]]
  list_file, label_file = write_inputs(
      tmp_path, names, None, list_text="img_0.jpg 2\nimg_1.jpg 0\nimg_2.jpg 1\n",
      label_text="1 -1 0 1\n-1 -1.0 -1 -1\n0 1 -1 0.0\n")
  output = tmp_path / "out.tfrecord"
  code, out, err = run(capsys, image_dir, list_file, label_file, output, seed=-1)
  assert code == 0, err
  assert [l for _, _, l in read_back([output])] == labels
  assert output.read_bytes() == hand_written_file(tmp_path / "hand.tfrecord", image_dir, names,
                                                  labels)
  assert "unknown labels (-1): 6 of 12 entries" in out
  # an unknown is not a 1: counting it is a mismatch naming file:line; -2 is not a label
  list_file.write_text("img_0.jpg 3\nimg_1.jpg 0\nimg_2.jpg 1\n")
  label_file.write_text("1 -1 0 1\n-1 -1 -1 -1\n0 1 -2 0\n")
  code, _, err = run(capsys, image_dir, list_file, label_file, tmp_path / "bad.tfrecord")
  assert code == 1 and f"{list_file}:1: count 3" in err and "has 2 ones" in err
  assert f"{label_file}:3: label 2 is '-2'" in err
  assert not (tmp_path / "bad.tfrecord").exists()


def test_shuffle_is_a_seeded_permutation(tmp_path, capsys):
  image_dir, names, labels, list_file, label_file = jpeg_set(tmp_path, 12)
  outputs = {key: tmp_path / f"{key}.rec" for key in ("a", "b", "c")}
  for key, seed in (("a", 0), ("b", 0), ("c", 1)):
    assert run(capsys, image_dir, list_file, label_file, outputs[key], seed=seed)[0] == 0
  a, b, c = (read_back([outputs[k]]) for k in "abc")
  assert outputs["a"].read_bytes() == outputs["b"].read_bytes()  # same seed, same file
  want = {(os.path.join(str(image_dir), n), tuple(row)) for n, row in zip(names, labels)}
  for got in (a, c):
    assert {(p, tuple(l)) for p, _, l in got} == want and len(got) == 12
  assert [p for p, _, _ in a] != [os.path.join(str(image_dir), n) for n in names]
  assert [p for p, _, _ in a] != [p for p, _, _ in c]


def test_crlf_blank_lines_bom_and_names_with_spaces(tmp_path, capsys):
  image_dir = tmp_path / "images"
  image_dir.mkdir()
  names = ["my photo.jpg", "b.jpg"]
  for i, name in enumerate(names):
    save(image_dir / name, Image.fromarray(gradient(seed=i)), "JPEG")
  list_file, label_file = write_inputs(
      tmp_path, names, None,
      list_text="\ufeffmy photo.jpg 2\r\n\r\n  \r\nb.jpg 0\r\n\r\n",
      label_text="1 0 1\r\n\r\n0 0 0\r\n")
  output = tmp_path / "x.rec"
  code, _, err = run(capsys, image_dir, list_file, label_file, output, seed=-1)
  assert code == 0, err
  assert [(os.path.basename(p), l) for p, _, l in read_back([output])] == [
      ("my photo.jpg", [1, 0, 1]), ("b.jpg", [0, 0, 0])]


@pytest.mark.slow
def test_shards_through_the_command_line_with_two_workers(tmp_path):
  image_dir, names, labels, list_file, label_file = jpeg_set(tmp_path, 10)
  pngs = {}
  for i in (3, 7):  # two PNGs, so the worker processes re-encode something
    pngs[names[i]] = gradient(9, 7, seed=100 + i)
    save(image_dir / names[i], Image.fromarray(pngs[names[i]]), "PNG")
  output = tmp_path / "out" / "train.tfrecord"
  result = subprocess.run(
      [sys.executable, "create_tfrecord.py", f"--image_dir={image_dir}",
       f"--imglist_file={list_file}", f"--imglabel_file={label_file}", f"--output_file={output}",
       "--num_shards=3", "--num_workers=2", "--seed=5"],
      cwd=REPO, capture_output=True, text=True, timeout=120,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
  assert result.returncode == 0, result.stderr
  shards = [output.parent / f"train.tfrecord-0000{i}-of-00003" for i in range(3)]
  assert sorted(os.listdir(output.parent)) == [s.name for s in shards]  # no temp files left
  per_shard = [read_back([s]) for s in shards]
  assert [len(s) for s in per_shard] == [4, 3, 3]  # round-robin
  got = [record for shard in per_shard for record in shard]
  assert sorted((p, tuple(l)) for p, _, l in got) == sorted(
      (os.path.join(str(image_dir), n), tuple(row)) for n, row in zip(names, labels))
  for path, data, _ in got:
    name = os.path.basename(path)
    if name in pngs:
      assert data.startswith(JPEG_MAGIC)
      decoded = np.asarray(Image.open(io.BytesIO(data)), dtype=float)
      assert np.abs(decoded - pngs[name]).mean() < 4
    else:
      assert data == (image_dir / name).read_bytes()
  assert "re-encoded as JPEG: 2" in result.stdout and "images: 10/10" in result.stderr


def test_warns_about_shards_of_an_earlier_run(tmp_path, capsys):
  image_dir, _, _, list_file, label_file = jpeg_set(tmp_path, 4)
  output = tmp_path / "out" / "x.rec"
  assert run(capsys, image_dir, list_file, label_file, output, num_shards=3)[0] == 0
  code, _, err = run(capsys, image_dir, list_file, label_file, output, num_shards=2)
  assert code == 0 and "3 shard(s) of an earlier run" in err and "x.rec-00000-of-00003" in err
  assert len(read_back([f"{output}-00000-of-00002", f"{output}-00001-of-00002"])) == 4


def test_max_side_downscales_only_larger_images(tmp_path, capsys):
  image_dir = tmp_path / "images"
  image_dir.mkdir()
  save(image_dir / "big.jpg", Image.fromarray(gradient(40, 20)), "JPEG")
  save(image_dir / "small.jpg", Image.fromarray(gradient(8, 4)), "JPEG")
  list_file, label_file = write_inputs(tmp_path, ["big.jpg", "small.jpg"], [[1, 0], [0, 1]])
  output = tmp_path / "x.rec"
  code, out, _ = run(capsys, image_dir, list_file, label_file, output, max_side=10, seed=-1)
  assert code == 0
  (_, big, _), (_, small, _) = read_back([output])
  assert Image.open(io.BytesIO(big)).size == (10, 5)
  assert small == (image_dir / "small.jpg").read_bytes()
  assert "resized: 1" in out


# ---------------------------------------------------------------------------------------------
# Bad list / label files: exit status, file:line, and nothing written.

BAD_INPUTS = {
    # case: (image_list text, image_label text, file named in the message, line, phrase)
    "list longer": ("a.jpg 1\nb.jpg 1\nc.jpg 1\n", "1 0\n0 1\n", "list", 3, "line count mismatch"),
    "labels longer": ("a.jpg 1\nb.jpg 1\n", "1 0\n0 1\n\n1 0\n", "label", 4, "line count mismatch"),
    "count not the row sum": ("a.jpg 1\nb.jpg 2\n", "1 0\n0 1\n", "list", 2, "count 2"),
    "label not 0/1": ("a.jpg 1\nb.jpg 1\n", "1 0\n2 0\n", "label", 2, "'2'"),
    "label fraction": ("a.jpg 1\n", "0.5 1\n", "label", 1, "'0.5'"),
    "unequal rows": ("a.jpg 1\nb.jpg 1\nc.jpg 1\n", "1 0\n0 1\n0 0 1\n", "label", 3, "3 labels"),
    "no count column": ("a.jpg 1\nb.jpg\n", "1 0\n0 1\n", "list", 2, "expected"),
    "count not a number": ("a.jpg x\n", "1 0\n", "list", 1, "expected"),
    "crlf and blank lines keep numbering": ("a.jpg 1\r\n\r\nb.jpg 5\r\n", "1 0\r\n0 1\r\n",
                                            "list", 3, "count 5"),
    "not utf-8": ("a.jpg 1\nb.jpg 1\n", b"1 0\n\xff\xfe 1\n", "label", 2, "not UTF-8"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_naming_file_and_line_and_writes_nothing(tmp_path, capsys, case):
  list_text, label_text, which, line, phrase = BAD_INPUTS[case]
  image_dir, *_ = jpeg_set(tmp_path, 3)
  (image_dir / "a.jpg").write_bytes((image_dir / "img_0.jpg").read_bytes())
  list_file, label_file = write_inputs(tmp_path, None, None, list_text, label_text)
  output = tmp_path / "out" / "x.rec"
  code, out, err = run(capsys, image_dir, list_file, label_file, output)
  named = list_file if which == "list" else label_file
  assert code == 1
  assert f"{named}:{line}:" in err and phrase in err
  assert not output.parent.exists()


def test_every_bad_line_is_reported_in_one_run(tmp_path, capsys):
  image_dir, *_ = jpeg_set(tmp_path, 1)
  list_file, label_file = write_inputs(tmp_path, None, None, "a.jpg 1\nb.jpg 3\nc.jpg 1\n",
                                       "1 0\n1 1\n7 0\n")
  code, _, err = run(capsys, image_dir, list_file, label_file, tmp_path / "x.rec")
  assert code == 1 and f"{list_file}:2:" in err and f"{label_file}:3:" in err
  assert not (tmp_path / "x.rec").exists()


@pytest.mark.parametrize("which", ["imglist_file", "imglabel_file"])
def test_missing_or_empty_list_files(tmp_path, capsys, which):
  image_dir, _, _, list_file, label_file = jpeg_set(tmp_path, 1)
  files = {"imglist_file": list_file, "imglabel_file": label_file}
  files[which] = tmp_path / "nope"
  code, _, err = run(capsys, image_dir, files["imglist_file"], files["imglabel_file"],
                     tmp_path / "x.rec")
  assert code == 1 and f"{tmp_path / 'nope'}" in err and "no such file" in err
  list_file.write_text("\n\n")
  code, _, err = run(capsys, image_dir, list_file, label_file, tmp_path / "x.rec")
  assert code == 1 and f"{list_file}: no entries" in err
  assert not (tmp_path / "x.rec").exists()


@pytest.mark.slow
def test_bad_input_exit_status_of_the_real_process(tmp_path):
  image_dir, *_ = jpeg_set(tmp_path, 2)
  list_file, label_file = write_inputs(tmp_path, None, None, "img_0.jpg 1\nimg_1.jpg 1\n",
                                       "1 0\n1 1\n")
  output = tmp_path / "out" / "x.rec"
  result = subprocess.run(
      [sys.executable, "create_tfrecord.py", f"--image_dir={image_dir}",
       f"--imglist_file={list_file}", f"--imglabel_file={label_file}", f"--output_file={output}"],
      cwd=REPO, capture_output=True, text=True, timeout=120,
      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
  assert result.returncode == 1
  assert f"{list_file}:2:" in result.stderr and f"{label_file}:2" in result.stderr
  assert not output.parent.exists()


@pytest.mark.parametrize("flag, value", [("num_shards", 0), ("jpeg_quality", 101),
                                         ("num_workers", -1)])
def test_bad_settings_exit_2_naming_them(tmp_path, capsys, flag, value):
  image_dir, _, _, list_file, label_file = jpeg_set(tmp_path, 1)
  code, _, err = run(capsys, image_dir, list_file, label_file, tmp_path / "x.rec", **{flag: value})
  assert code == 2 and f"--{flag}={value}" in err
  assert not (tmp_path / "x.rec").exists()


# ---------------------------------------------------------------------------------------------
# Odd formats and unreadable images.

def test_odd_formats_become_rgb_jpeg(tmp_path, capsys):
  image_dir = tmp_path / "images"
  image_dir.mkdir()
  expected = odd_images(image_dir)
  names = sorted(expected)
  labels = [[i % 2, 1 - i % 2] for i in range(len(names))]
  list_file, label_file = write_inputs(tmp_path, names, labels)
  output = tmp_path / "x.rec"
  code, out, err = run(capsys, image_dir, list_file, label_file, output, seed=-1)
  assert code == 0, err
  got = read_back([output])
  assert [os.path.basename(p) for p, _, _ in got] == names
  for (path, data, _), name in zip(got, names):
    assert data.startswith(JPEG_MAGIC), name
    stored = Image.open(io.BytesIO(data))
    assert (stored.format, stored.mode, stored.size) == ("JPEG", "RGB", (16, 12)), name
    difference = np.abs(np.asarray(stored, dtype=float) - expected[name])
    assert difference.mean() < 4, (name, difference.mean())
    decoded = tf.io.decode_jpeg(data).numpy()  # what training decodes
    assert decoded.shape == (12, 16, 3)
  assert f"re-encoded as JPEG: {len(names)}" in out and "stored unchanged: 0" in out


def test_lossless_stores_pngs_that_the_originals_reader_and_training_decode(tmp_path, capsys):
  image_dir = tmp_path / "images"
  image_dir.mkdir()
  expected = odd_images(image_dir)
  names = sorted(expected)
  list_file, label_file = write_inputs(tmp_path, names, [[i % 2] for i in range(len(names))])
  output = tmp_path / "x.rec"
  code, out, err = run(capsys, image_dir, list_file, label_file, output, seed=-1, lossless=True)
  assert code == 0, err
  for (path, data, _), name in zip(read_back([output]), names):
    assert Image.open(io.BytesIO(data)).format == "PNG", name
    # The original's reader is tf.image.decode_jpeg, which decodes PNG bytes as well
    decoded = tf.io.decode_jpeg(data, channels=3).numpy()
    assert np.abs(decoded - expected[name]).max() <= 0.5, name  # lossless
  assert "re-encoded as PNG: " in out and "stored unchanged: " in out
  config = configs.ModelConfig(label_count=1, input_tfrecord_file=str(output), target_height=32,
                               target_width=32, batch_size=4)  # random crops of a 36-px resize
  images, labels = next(iter(build_dataset(config, "train", seed=0)))
  assert images.shape == (4, 32, 32, 3) and labels.shape == (4, 1)


def test_rgb_jpegs_are_stored_unchanged(tmp_path, capsys):
  image_dir = tmp_path / "images"
  image_dir.mkdir()
  image = Image.fromarray(gradient(seed=3))
  save(image_dir / "baseline.jpg", image, "JPEG", quality=80)
  save(image_dir / "progressive.jpg", image, "JPEG", progressive=True)
  save(image_dir / "jpeg_named.png", image, "JPEG")
  names = ["baseline.jpg", "progressive.jpg", "jpeg_named.png"]
  list_file, label_file = write_inputs(tmp_path, names, [[1], [0], [1]])
  output = tmp_path / "x.rec"
  code, out, _ = run(capsys, image_dir, list_file, label_file, output, seed=-1)
  assert code == 0
  assert [d for _, d, _ in read_back([output])] == [(image_dir / n).read_bytes() for n in names]
  assert "stored unchanged: 3" in out


def test_unreadable_images_are_skipped_with_reasons(tmp_path, capsys):
  image_dir = tmp_path / "images"
  image_dir.mkdir()
  reasons = unreadable_images(image_dir)
  save(image_dir / "good.jpg", Image.fromarray(gradient()), "JPEG")
  names = sorted(reasons) + ["good.jpg"]
  labels = [[1, 0]] * len(reasons) + [[0, 1]]
  list_file, label_file = write_inputs(tmp_path, names, labels)
  output = tmp_path / "x.rec"
  code, out, err = run(capsys, image_dir, list_file, label_file, output)
  assert code == 0, err
  for name, reason in reasons.items():
    assert f"skip {os.path.join(str(image_dir), name)}: {reason} (" in out, name
  assert "skipped: 5 (corrupt: 1, empty: 1, missing: 1, not an image: 1, truncated: 1)" in out
  assert "wrote 1 records" in out
  assert [(os.path.basename(p), l) for p, _, l in read_back([output])] == [("good.jpg", [0, 1])]


def test_all_images_skipped_exits_nonzero_and_writes_nothing(tmp_path, capsys):
  image_dir = tmp_path / "images"
  image_dir.mkdir()
  (image_dir / "a.jpg").write_text("text")
  list_file, label_file = write_inputs(tmp_path, ["a.jpg", "gone.jpg"], [[1], [1]])
  output = tmp_path / "out" / "x.rec"
  code, _, err = run(capsys, image_dir, list_file, label_file, output, num_shards=2)
  assert code == 1 and "all 2 images were skipped" in err
  assert os.listdir(output.parent) == []


def test_interrupt_leaves_no_output_file(tmp_path, capsys, monkeypatch):
  image_dir, _, _, list_file, label_file = jpeg_set(tmp_path, 6)
  calls = []
  real_make_example = records.make_example

  def interrupted(*args, **kwargs):
    calls.append(1)
    if len(calls) == 4:
      raise KeyboardInterrupt()  # as if Ctrl-C arrived mid-run
    return real_make_example(*args, **kwargs)

  monkeypatch.setattr(records, "make_example", interrupted)
  output = tmp_path / "out" / "x.rec"
  code, _, err = run(capsys, image_dir, list_file, label_file, output, num_shards=2)
  assert code == 130 and "interrupted" in err
  assert os.listdir(output.parent) == [] and not glob.glob(str(tmp_path / "out" / ".*"))


# ---------------------------------------------------------------------------------------------
# Stopped runs: Ctrl-C, a job scheduler's SIGTERM to the group, kill -9; and what they leave.

def busy_inputs(folder, count=4000):
  """A list of `count` noisy 200x200 PNGs (20 files, each listed many times): seconds of work
  for two workers, so that a run can be stopped in the middle."""
  image_dir = folder / "images"
  image_dir.mkdir()
  rng = np.random.default_rng(0)
  for i in range(20):
    Image.fromarray(rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(
        image_dir / f"{i}.png")
  list_file, label_file = write_inputs(folder, None, None,
                                       "".join(f"{i % 20}.png 1\n" for i in range(count)),
                                       "1 0\n" * count)
  return image_dir, list_file, label_file


@pytest.mark.slow
@pytest.mark.parametrize("stop", ["ctrl_c", "sigterm_to_the_group", "kill_9_the_parent"])
def test_a_stopped_run_prints_no_traceback_leaves_no_worker_and_no_output(tmp_path, capsys,
                                                                          stop):
  """The run is a job of its own process group, as in a terminal. Ctrl-C (SIGINT to the group)
  and SIGTERM to the group end it in 'interrupted', status 130, with no file left; kill -9 of
  the parent leaves no worker behind (the output pipe closes at once) and no traceback. The
  hidden temp file kill -9 leaves is removed, and named, by the next run."""
  image_dir, list_file, label_file = busy_inputs(tmp_path)
  output = tmp_path / "out" / "train.tfrecord"
  proc = subprocess.Popen(
      [sys.executable, "create_tfrecord.py", f"--image_dir={image_dir}",
       f"--imglist_file={list_file}", f"--imglabel_file={label_file}", f"--output_file={output}",
       "--num_workers=2"], cwd=REPO, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      start_new_session=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
                                   "PYTHONUNBUFFERED": "1"},
      preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a terminal's job
  lines = []
  try:
    for line in proc.stdout:
      lines.append(line)
      if " images, 2 labels in " in line:
        break
    time.sleep(1.5)  # the workers are busy
    assert proc.poll() is None, "".join(lines)
    if stop == "kill_9_the_parent":
      os.kill(proc.pid, signal.SIGKILL)
    else:
      os.killpg(proc.pid, signal.SIGINT if stop == "ctrl_c" else signal.SIGTERM)
    rest, _ = proc.communicate(timeout=60)  # EOF: the parent and every worker have exited
  finally:
    with contextlib.suppress(ProcessLookupError):
      os.killpg(proc.pid, signal.SIGKILL)
  output_text = "".join(lines) + rest
  assert "Traceback" not in output_text and "Error" not in output_text, output_text
  assert not output.exists()
  left = create_tfrecord.stale_temp_files(str(output))
  if stop != "kill_9_the_parent":
    assert proc.returncode == 130, output_text
    assert "interrupted; no output file was written" in output_text
    assert os.listdir(output.parent) == []
    return
  assert proc.returncode == -signal.SIGKILL and len(left) == 1, (output_text, left)
  (tmp_path / "again").mkdir()
  small_dir, _, _, small_list, small_labels = jpeg_set(tmp_path / "again", 2)
  code, out, err = run(capsys, small_dir, small_list, small_labels, output, num_shards=1)
  assert code == 0, err
  assert f"removed {left[0]}: a temp file of an interrupted run" in out
  assert os.listdir(output.parent) == ["train.tfrecord"]


def test_stale_temp_files_of_this_output_only_are_removed_and_named(tmp_path, capsys):
  image_dir, _, _, list_file, label_file = jpeg_set(tmp_path, 3)
  out = tmp_path / "out"
  out.mkdir()
  ours = [".x.rec.4242-0123abcd.tmp", ".x.rec-00001-of-00004.77-deadbeef.tmp"]  # 4 shards once
  others = [".y.rec.4242-0123abcd.tmp", ".x.rec.old.1-0123abcd.tmp", "notes.txt"]
  for name in ours + others:
    (out / name).write_text("partial")
  code, stdout, err = run(capsys, image_dir, list_file, label_file, out / "x.rec", num_shards=2)
  assert code == 0, err
  for name in ours:
    assert f"removed {out / name}: a temp file of an interrupted run" in stdout
  assert sorted(os.listdir(out)) == sorted(others + ["x.rec-00000-of-00002",
                                                     "x.rec-00001-of-00002"])
