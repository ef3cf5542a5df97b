"""multilabel/files.py: the one atomic write (a complete file or the old one, never a temp file
left), the usual file mode, a full disk in one line, and the temp files a killed run left.

The full disk is a real one where this machine lets us mount a small tmpfs (root can), else a
write that raises ENOSPC: either way every test runs. (tests/test_fileio.py, renamed.)
"""

import glob
import os
import stat

import numpy as np
import pytest

import coco_to_image_list
import configs
from multilabel import config_files, errors, files, textfiles
from multilabel.data import records
from tests.helpers import fake_full_disk, fill_disk, small_disk


def _leftovers(folder):
  return sorted(os.listdir(folder))


def test_atomic_write_text_and_binary(tmp_path):
  with files.atomic_write(str(tmp_path / "sub" / "a.txt")) as f:
    f.write("hello\n")
    assert not (tmp_path / "sub" / "a.txt").exists()  # not visible until the block completes
    assert glob.glob(str(tmp_path / "sub" / "*")) == []  # the temp name is hidden from globs
  with files.atomic_write(str(tmp_path / "b.bin"), "wb") as f:
    f.write(b"\x00\x01")
  assert (tmp_path / "sub" / "a.txt").read_text() == "hello\n"
  assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
  assert _leftovers(tmp_path / "sub") == ["a.txt"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_atomic_write_failure_keeps_the_old_file_and_leaves_no_temp(tmp_path, error):
  target = tmp_path / "a.txt"
  target.write_text("old")
  with pytest.raises(error):
    with files.atomic_write(str(target)) as f:
      f.write("half of the new")
      raise error()
  assert target.read_text() == "old"
  assert _leftovers(tmp_path) == ["a.txt"]


def test_atomic_write_rejects_read_mode(tmp_path):
  with pytest.raises(ValueError, match="'r'"):
    with files.atomic_write(str(tmp_path / "x"), "r"):
      pass


# ---------------------------------------------------------------------------------------------
# Every writer of the toolkit: the usual mode, and a full disk.

def _write_config(path):
  config_files.save_configs(path, configs.EvalConfig())


def _write_scores(path):
  textfiles.save_scores(path, np.full((500, 8), 0.5))


def _write_labels(path):
  textfiles.save_labels(path, np.ones((500, 8), int))


def _write_thresholds(path):
  textfiles.save_thresholds(path, np.full(500, 0.25), "roc")


def _write_csv(path):  # inference.py's predictions.csv, read_tfrecord.py's samples.tsv
  with files.atomic_write(path, newline="") as f:
    f.writelines(f"image_{i}.jpg,ok,0.5\n" for i in range(2000))


def _write_records(path):
  with records.atomic_tfrecord_writer(path) as writer:
    for i in range(200):
      writer.write(os.urandom(512))


def _write_coco_outputs(path):  # three files; `path` names the first
  coco_to_image_list.write_outputs(os.path.dirname(path), {
      name: "x 1\n" * 2000 for name in coco_to_image_list.OUTPUTS})


WRITERS = {"config.json": _write_config, "scores.txt": _write_scores,
           "labels.txt": _write_labels, "thresholds.txt": _write_thresholds,
           "predictions.csv": _write_csv, "train.tfrecord": _write_records,
           "image_list": _write_coco_outputs}


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_every_writer_gives_the_usual_mode_under_the_umask(tmp_path, umask, mode):
  """0666 less the umask, as open() and every other output (tempfile.mkstemp would give 0600,
  which another user's evaluator on shared storage cannot read)."""
  previous = os.umask(umask)
  try:
    for name, write in WRITERS.items():
      write(str(tmp_path / name))
  finally:
    os.umask(previous)
  written = sorted(os.listdir(tmp_path))
  assert written == sorted({*WRITERS, *coco_to_image_list.OUTPUTS})
  for name in written:
    assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == mode, name


@pytest.mark.parametrize("name", list(WRITERS))
def test_a_full_disk_is_one_line_and_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch,
                                                                      name):
  folder = tmp_path / "disk"
  with small_disk(folder, "256k") as mounted:
    path = str(folder / name)
    WRITERS[name](path)
    old = {n: (folder / n).read_bytes() for n in os.listdir(folder)}
    if mounted:
      fill_disk(str(folder))
    else:  # the same failure, faked
      fake_full_disk(monkeypatch)
    with pytest.raises(errors.DataError) as info:
      WRITERS[name](path)
    message = str(info.value)
    assert message.startswith(f"no space left on device in {folder}: ") and " free; " in message
    assert "\n" not in message and info.value.status == 1
    if name in ("config.json", "scores.txt"):  # text in memory: its size is known
      assert f"{name} needs " in message
    assert files.stale_temp_files(str(folder)) == []
    assert sorted(set(os.listdir(folder)) - {"filler"}) == sorted(old)
    for n, data in old.items():
      assert (folder / n).read_bytes() == data, n


def test_stale_temp_files_are_ours_only(tmp_path):
  ours = [".config.json.123-0a1b2c3d.tmp", ".train.tfrecord-00001-of-00004.77-deadbeef.tmp",
          ".config-k2j_x9qa.tmp", ".scores.txt-abcdefgh.tmp"]  # the last two: mkstemp's
  others = [".bashrc", "a.tmp", ".x.tmp", "config.json", ".config.json.12-0a1b.tmp"]
  for name in ours + others:
    (tmp_path / name).write_text("x")
  (tmp_path / ".dir.1-0a1b2c3d.tmp").mkdir()  # not a file
  assert files.stale_temp_files(str(tmp_path)) == sorted(str(tmp_path / n) for n in ours)
  assert files.stale_temp_files(str(tmp_path), names={"train.tfrecord-00001-of-00004"}) == [
      str(tmp_path / ours[1])]
  assert files.stale_temp_files(str(tmp_path / "none")) == []
  assert files.temp_path(str(tmp_path / "config.json")) not in files.stale_temp_files(
      str(tmp_path))  # a name, nothing written
  assert [os.path.basename(p) for p in files.stale_temp_files(str(tmp_path), {"config.json"})] \
      == [ours[0]]
  tmp = files.temp_path(str(tmp_path / "scores.txt"))
  open(tmp, "w").close()
  assert tmp in files.stale_temp_files(str(tmp_path), {"scores.txt"})


def test_size_text():
  assert [files.size_text(n) for n in (0, 1023, 1536, 94411802, 3 << 40)] == [
      "0 B", "1023 B", "1.5 KiB", "90.0 MiB", "3.0 TiB"]
