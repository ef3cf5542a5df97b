"""multilabel/data/image_decoding.py: prepare_image's verdict on one image (an RGB JPEG stored
byte for byte, any other image converted to RGB and re-encoded, a large one resized, an
unreadable one skipped with its reason), and image_results' order with one worker and a pool.
Oracles: the files' own bytes and Pillow's decode of them, numpy compositing, hand-worked sizes.
(create_tfrecord.py's tests run the same images through the script.)"""
import io

import numpy as np
import pytest
from PIL import Image

from multilabel.data import image_decoding
from tests.helpers import gradient, odd_images, save, unreadable_images


def decoded(data):
  return np.asarray(Image.open(io.BytesIO(data)), dtype=float)


def test_an_rgb_jpeg_is_stored_byte_for_byte(tmp_path):
  path = save(tmp_path / "a.jpg", Image.fromarray(gradient(20, 10)), "JPEG", quality=70)
  assert image_decoding.prepare_image((str(path), 20, 95, False)) == (
      "ok", path.read_bytes(), "stored", (10, 20))


def test_other_images_are_re_encoded_as_rgb_jpeg(tmp_path):
  expected = odd_images(tmp_path)  # PNG, GIF, BMP, WebP, grey, palette, CMYK, 16-bit, RGBA
  for name, pixels in expected.items():
    status, data, how, size = image_decoding.prepare_image(
        (str(tmp_path / name), 10**6, 95, False))
    assert (status, how, size) == ("ok", "re-encoded", (12, 16)), name
    assert Image.open(io.BytesIO(data)).format == "JPEG"
    assert np.abs(decoded(data) - pixels).mean() < 4, name  # JPEG's loss, nothing more


def test_lossless_keeps_rgb_pngs_and_jpegs_and_stores_the_rest_as_exact_pngs(tmp_path):
  expected = odd_images(tmp_path)  # PNG, GIF, BMP, WebP, grey, palette, CMYK, 16-bit, RGBA
  for name, pixels in expected.items():
    path = tmp_path / name
    status, data, how, size = image_decoding.prepare_image((str(path), 10**6, 95, True))
    source = Image.open(path)
    if source.format == "PNG" and source.mode == "RGB":
      assert (how, data) == ("stored", path.read_bytes()), name
    else:
      assert (status, how, size) == ("ok", "re-encoded", (12, 16)), name
    assert Image.open(io.BytesIO(data)).format == "PNG", name
    # Lossless: exactly the pixels JPEG would only approximate (the oracle rounds the same way)
    assert np.abs(decoded(data) - pixels).max() <= 0.5, name
  jpeg = save(tmp_path / "a.jpg", Image.fromarray(gradient(20, 10)), "JPEG", quality=70)
  assert image_decoding.prepare_image((str(jpeg), 20, 95, True)) == (
      "ok", jpeg.read_bytes(), "stored", (10, 20))  # a JPEG stays one: a PNG of it only grows
  big = save(tmp_path / "big.png", Image.fromarray(gradient(40, 20)), "PNG")
  status, data, how, size = image_decoding.prepare_image((str(big), 10, 95, True))
  assert (how, size, Image.open(io.BytesIO(data)).format) == ("resized", (5, 10), "PNG")


def test_a_larger_image_is_resized_to_max_side_keeping_its_aspect(tmp_path):
  path = save(tmp_path / "big.jpg", Image.fromarray(gradient(40, 20)), "JPEG")
  status, data, how, size = image_decoding.prepare_image((str(path), 10, 95, False))
  assert (status, how, size) == ("ok", "resized", (5, 10))  # 40x20 scaled by 10 / 40
  assert Image.open(io.BytesIO(data)).size == (10, 5)
  status, data, how, size = image_decoding.prepare_image((str(path), 40, 95, False))
  assert (how, size) == ("stored", (20, 40)) and data == path.read_bytes()  # not larger


def test_unreadable_images_are_skipped_with_their_reason(tmp_path):
  reasons = unreadable_images(tmp_path)  # truncated, corrupt, empty, not an image, missing
  for name, reason in reasons.items():
    status, category, detail = image_decoding.prepare_image(
        (str(tmp_path / name), 100, 95, False))
    assert (status, category) == ("skip", reason), (name, detail)
    assert detail and "\n" not in detail


@pytest.mark.parametrize("num_workers", [1, 2])
def test_image_results_are_prepare_image_in_task_order(tmp_path, num_workers):
  names = [f"{i}.png" for i in range(7)]
  for i, name in enumerate(names):
    save(tmp_path / name, Image.fromarray(gradient(8 + i, 6, seed=i)), "PNG")
  tasks = [(str(tmp_path / name), 10, 95, False) for name in names + ["missing.jpg"]]
  with image_decoding.image_results(tasks, num_workers) as results:
    got = list(results)
  assert got == [image_decoding.prepare_image(task) for task in tasks]
  assert [r[2] for r in got[:-1]] == ["re-encoded"] * 3 + ["resized"] * 4  # 8..14 px wide
  assert got[-1][:2] == ("skip", "missing")
