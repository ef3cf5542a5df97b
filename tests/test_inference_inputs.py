"""inference.py on inputs at their edges (issue 20): bad thresholds, file names that are not
UTF-8, label names in predictions.csv, decompression bombs. ResNet-50 v2 at 64x96 with random
weights (inference_fixture.py); inference.main runs in-process, through errors.run as the script
does, but for the bombs: a process of its own, whose memory is watched."""

import csv
import os
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from tests.image_bombs import BOMB_SIDE, jpeg_bomb, png_bomb
import inference
from tests import inference_fixture as fx
from tests.helpers import run_script_main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  return fx.build(str(tmp_path_factory.mktemp("inference_inputs")))


def run_inference(capsys, trained, *flags):
  """inference.py on the fixture's ckpt-10 (one view, no XLA: the cheapest scoring):
  (exit status, stdout, stderr)."""
  return run_script_main(capsys, inference.main, [
      "--gpu_id=-1", f"--checkpoint_path={trained.prefix_a}", "--views=one", "--xla=false",
      *flags])


def read_csv(path):
  with open(path, newline="", encoding="utf-8") as f:
    return list(csv.reader(f))


def one_image_dir(trained, folder):
  """A folder holding one readable image of the fixture, a.png."""
  os.makedirs(folder)
  shutil.copy(os.path.join(trained.image_dir, "a.png"), os.path.join(folder, "a.png"))
  return folder


# ---------------------------------------------------------------------------------------------
# Thresholds: finite and in [0, 1], or one line naming the file:line, before any image is scored.

@pytest.mark.parametrize("bad", ["nan", "-0.5"])
def test_a_bad_threshold_is_one_line_naming_the_file_and_line(trained, tmp_path, capsys, bad):
  thresholds = tmp_path / "thresholds.txt"
  thresholds.write_text(f"# method=roc\n0.5\n{bad}\n0.5\n")
  out_dir = tmp_path / "out"
  status, _, err = run_inference(capsys, trained, f"--image_dir={trained.image_dir}",
                                 f"--thresholds_file={thresholds}", f"--inference_dir={out_dir}")
  assert status == 1
  assert err == (f"error: {thresholds}:3: threshold {float(bad)!r} is not a number in [0, 1] "
                 "(a label is predicted when its score >= its threshold)\n")
  assert not out_dir.exists()  # nothing scored, nothing written


# ---------------------------------------------------------------------------------------------
# File names: any name the file system allows is scored, and shown printably.

def test_a_file_name_that_is_not_utf8_is_scored_and_shown_with_escapes(trained, tmp_path,
                                                                       capsys):
  """b'\\xff.png' in --image_dir crashed inference.py (ValueError: Error converting unicode
  string), with no outputs. It is scored like any image; the log and predictions.csv show its
  name with \\xff escapes (print() and UTF-8 files refuse the raw byte)."""
  image_dir = one_image_dir(trained, str(tmp_path / "images"))
  with open(os.path.join(os.fsencode(image_dir), b"\xff\xfe photo.png"), "wb") as f:
    with open(os.path.join(trained.image_dir, "a.png"), "rb") as source:
      f.write(source.read())
  out_dir = tmp_path / "out"
  status, out, err = run_inference(capsys, trained, f"--image_dir={image_dir}",
                                   f"--inference_dir={out_dir}")
  assert status == 0, err
  assert "scored 2 images" in out and "0 unreadable" in out
  rows = read_csv(out_dir / "predictions.csv")[1:]
  assert [(row[0], row[1]) for row in rows] == [
      (os.path.join(image_dir, "a.png"), "ok"),
      (os.path.join(image_dir, "\\xff\\xfe photo.png"), "ok")]
  scores = np.loadtxt(out_dir / "scores.txt")
  np.testing.assert_array_equal(scores[0], scores[1])  # the same image under both names


def test_an_unreadable_file_whose_name_is_not_utf8_is_one_printable_line(trained, tmp_path,
                                                                         capsys):
  image_dir = one_image_dir(trained, str(tmp_path / "images"))
  with open(os.path.join(os.fsencode(image_dir), b"cut\xe9.jpg"), "wb") as f:
    f.write(b"\xff\xd8\xff\xe0 not the rest of a JPEG")
  out_dir = tmp_path / "out"
  status, out, err = run_inference(capsys, trained, f"--image_dir={image_dir}",
                                   f"--inference_dir={out_dir}")
  assert status == 0, err
  bad = os.path.join(image_dir, "cut\\xe9.jpg")
  assert f"unreadable image {bad}: " in out and "1 unreadable" in out
  rows = read_csv(out_dir / "predictions.csv")[1:]
  assert [(row[0], row[1]) for row in rows] == [(os.path.join(image_dir, "a.png"), "ok"),
                                                (bad, "unreadable")]


# ---------------------------------------------------------------------------------------------
# Label names: predicted_labels splits back into exactly the names.

def test_predicted_labels_split_back_into_exactly_the_names(trained, tmp_path, capsys):
  """Names with spaces, a comma and quotes: the CSV quotes the field, ';' joins the names (a
  name holding ';' is refused: test_textfiles_inputs), so split(';') gives them back."""
  names = ["traffic light", "hot dog, with mustard", 'say "cheese"']
  names_file = tmp_path / "names.txt"
  names_file.write_text("\n".join(names) + "\n")
  out_dir = tmp_path / "out"
  status, _, err = run_inference(capsys, trained, f"--image_dir={trained.image_dir}",
                                 f"--label_names_file={names_file}", "--threshold=0",
                                 f"--inference_dir={out_dir}")
  assert status == 0, err
  header, *rows = read_csv(out_dir / "predictions.csv")
  assert header == ["image_path", "status"] + names + ["predicted_labels"]
  ok = [row for row in rows if row[1] == "ok"]
  assert len(ok) == len(fx.IMAGES)
  for row in ok:  # threshold 0: every label is predicted
    assert row[-1].split(";") == names


# ---------------------------------------------------------------------------------------------
# Decompression bombs: create_tfrecord.py's pixel limit, checked before TensorFlow decodes.

MEMORY_LIMIT_GB = 3  # the bombs alone need more; the model and TensorFlow ~1 GB


# Runs a script as __main__ and prints its peak resident memory (KB on Linux) as it ends.
# The peak is VmHWM, this process's own high-water mark: ru_maxrss would carry over the RSS of
# the forked parent (pytest, gigabytes into the suite), which Linux keeps across exec.
PEAK_MEMORY = """
import runpy, sys
sys.argv = sys.argv[1:]
try:
  runpy.run_path(sys.argv[0], run_name="__main__")
finally:
  with open("/proc/self/status") as status:
    peak = next(line.split()[1] for line in status if line.startswith("VmHWM"))
  print(f"peak_rss_kb {peak}", file=sys.stderr)
"""


def run_watching_memory(argv, limit_gb, timeout=300):
  """`python *argv` in the repo, killed if its resident memory passes limit_gb (polled in /proc,
  where there is one): so that the old behaviour fails this test without taking the machine's
  memory. Returns (exit status, output, peak KB as the process saw it, killed)."""
  proc = subprocess.Popen([sys.executable, "-c", PEAK_MEMORY, *argv], cwd=REPO, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
  killed = []

  def watch():
    status = f"/proc/{proc.pid}/status"
    while proc.poll() is None and os.path.exists(status):
      try:
        with open(status) as f:
          rss_kb = next((int(line.split()[1]) for line in f if line.startswith("VmRSS")), 0)
      except OSError:  # it has just ended
        return
      if rss_kb > limit_gb * 2 ** 20:
        killed.append(rss_kb)
        proc.kill()
      time.sleep(0.05)
  watcher = threading.Thread(target=watch, daemon=True)
  watcher.start()
  try:
    out, _ = proc.communicate(timeout=timeout)
  finally:
    proc.kill()
    watcher.join()
  peaks = [int(line.split()[1]) for line in out.splitlines() if line.startswith("peak_rss_kb ")]
  return proc.returncode, out, peaks[-1] if peaks else None, bool(killed)


@pytest.mark.slow
def test_decompression_bombs_are_unreadable_rows_with_bounded_memory(trained, tmp_path):
  """A 20000 x 20000 PNG (388 KB) and JPEG: create_tfrecord.py skips them as "too large";
  inference.py decoded both, at 13.4 GB, and exited 0. Each is now an unreadable row, its log
  line says too large, the summary counts it, and memory stays that of the model."""
  image_dir = one_image_dir(trained, str(tmp_path / "images"))
  png_bomb(os.path.join(image_dir, "bomb.png"))
  jpeg_bomb(os.path.join(image_dir, "bomb.jpg"))
  out_dir = tmp_path / "out"
  status, out, peak_kb, killed = run_watching_memory(
      ["inference.py", "--gpu_id=-1", f"--checkpoint_path={trained.prefix_a}", "--xla=false",
       f"--image_dir={image_dir}", f"--inference_dir={out_dir}"], MEMORY_LIMIT_GB)
  assert not killed, f"past {MEMORY_LIMIT_GB} GB of memory: the bombs were decoded\n{out}"
  assert status == 0, out
  for name in ("bomb.jpg", "bomb.png"):
    assert (f"unreadable image {os.path.join(image_dir, name)}: too large (Image size "
            f"({BOMB_SIDE ** 2} pixels) exceeds limit of ") in out
  assert "scored 1 images" in out and "2 unreadable, 2 of them too large" in out
  rows = read_csv(out_dir / "predictions.csv")[1:]
  assert [(os.path.basename(row[0]), row[1]) for row in rows] == [
      ("a.png", "ok"), ("bomb.jpg", "unreadable"), ("bomb.png", "unreadable")]
  assert np.isnan(np.loadtxt(out_dir / "scores.txt")[1:]).all()
  assert peak_kb is not None and peak_kb < MEMORY_LIMIT_GB * 2 ** 20, out
