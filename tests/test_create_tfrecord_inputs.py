"""create_tfrecord.py on inputs at their edges (issue 20): decompression bombs (the one pixel
limit it shares with inference.py), and list entries outside image_dir. main() runs in this
process, through errors.run as the script does."""

import io
import os

import numpy as np
from PIL import Image

import create_tfrecord
from tests.image_bombs import BOMB_SIDE, jpeg_bomb, png_bomb
from multilabel import errors
from multilabel.data import image_decoding


def jpeg(path, side=8):
  buffer = io.BytesIO()
  Image.fromarray(np.full((side, side, 3), 120, np.uint8)).save(buffer, "JPEG")
  path.write_bytes(buffer.getvalue())


def write_list(folder, names):
  """image_list and image_label with one label, 1 for every name."""
  list_file, label_file = folder / "image_list", folder / "image_label"
  list_file.write_text("".join(f"{name} 1\n" for name in names))
  label_file.write_text("1\n" * len(names))
  return list_file, label_file


def run(capsys, image_dir, list_file, label_file, output):
  """main() in this process: (exit status, stdout, stderr)."""
  try:
    errors.run(create_tfrecord.main, [
        f"--image_dir={image_dir}", f"--imglist_file={list_file}",
        f"--imglabel_file={label_file}", f"--output_file={output}", "--num_workers=1",
        "--seed=-1"])
  except SystemExit as e:
    code = e.code or 0
  out, err = capsys.readouterr()
  return code, out, err


# ---------------------------------------------------------------------------------------------
# The pixel limit: one check, from the header, for create_tfrecord.py and inference.py.

def test_the_pixel_limit_reads_only_the_header(tmp_path):
  png_bomb(tmp_path / "bomb.png")
  jpeg_bomb(tmp_path / "bomb.jpg")
  jpeg(tmp_path / "small.jpg")
  (tmp_path / "notes.jpg").write_text("not an image\n")
  for name in ("bomb.png", "bomb.jpg"):
    assert image_decoding.too_large(str(tmp_path / name)) == (
        f"Image size ({BOMB_SIDE ** 2} pixels) exceeds limit of {2 * Image.MAX_IMAGE_PIXELS} "
        "pixels, could be decompression bomb DOS attack.")
  # not too large; what is wrong with the others is for their decoder to say
  for name in ("small.jpg", "notes.jpg", "missing.jpg"):
    assert image_decoding.too_large(str(tmp_path / name)) is None


def test_create_tfrecord_skips_bombs_as_too_large(tmp_path, capsys):
  image_dir = tmp_path / "images"
  image_dir.mkdir()
  png_bomb(image_dir / "bomb.png")
  jpeg_bomb(image_dir / "bomb.jpg")
  jpeg(image_dir / "good.jpg")
  list_file, label_file = write_list(tmp_path, ["bomb.png", "good.jpg", "bomb.jpg"])
  code, out, err = run(capsys, image_dir, list_file, label_file, tmp_path / "out.rec")
  assert code == 0, err
  for name in ("bomb.png", "bomb.jpg"):
    assert f"skip {os.path.join(str(image_dir), name)}: too large (Image size (" in out
  assert "wrote 1 records" in out and "skipped: 2 (too large: 2)" in out


# ---------------------------------------------------------------------------------------------
# Entries outside image_dir: stored as listed, and counted in the summary.

def test_entries_outside_image_dir_are_stored_and_counted(tmp_path, capsys):
  """An absolute name, a ../ name, a symlink out of image_dir and a symlinked folder out of
  it: each is stored (as the original did), and one summary line counts the four. A symlink
  that stays inside image_dir and a name with .. that stays inside are not counted."""
  image_dir, elsewhere = tmp_path / "images", tmp_path / "elsewhere"
  (image_dir / "sub").mkdir(parents=True)
  elsewhere.mkdir()
  for path in (image_dir / "in.jpg", image_dir / "sub" / "deep.jpg", elsewhere / "out.jpg"):
    jpeg(path)
  (image_dir / "link_out.jpg").symlink_to(elsewhere / "out.jpg")
  (image_dir / "folder_out").symlink_to(elsewhere)
  (image_dir / "link_in.jpg").symlink_to(image_dir / "in.jpg")
  names = ["in.jpg", str(elsewhere / "out.jpg"), "../elsewhere/out.jpg", "link_out.jpg",
           "folder_out/out.jpg", "link_in.jpg", "sub/../sub/deep.jpg"]
  list_file, label_file = write_list(tmp_path, names)
  code, out, err = run(capsys, image_dir, list_file, label_file, tmp_path / "out.rec")
  assert code == 0, err
  assert "wrote 7 records" in out
  assert (f"  outside image_dir: 4 entries (absolute, ../ or a symlink out of it; stored as "
          f"listed, e.g. {elsewhere / 'out.jpg'})\n") in out


def test_no_entry_outside_image_dir_is_said_too(tmp_path, capsys):
  image_dir = tmp_path / "images"
  image_dir.mkdir()
  jpeg(image_dir / "a.jpg")
  list_file, label_file = write_list(tmp_path, ["a.jpg"])
  code, out, err = run(capsys, image_dir, list_file, label_file, tmp_path / "out.rec")
  assert code == 0, err
  assert "  outside image_dir: 0 entries\n" in out
