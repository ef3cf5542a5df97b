"""make_demo_data.py: the multi-label digits set, its file formats, and its disjoint splits.
(tests/test_demo_data.py, renamed after its script.)"""

import os

import numpy as np
import pytest
from PIL import Image
from sklearn.datasets import load_digits

import create_tfrecord
from multilabel import errors
import make_demo_data
import read_tfrecord

SIZES = {"train": 30, "eval": 12, "test": 10}


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
  out = tmp_path_factory.mktemp("demo")
  make_demo_data.main([f"--output_dir={out}", f"--num_train={SIZES['train']}",
                       f"--num_eval={SIZES['eval']}", f"--num_test={SIZES['test']}", "--seed=3"])
  return out


def read_split(demo_dir, split):
  lines = (demo_dir / split / "image_list").read_text().splitlines()
  rows = (demo_dir / split / "image_label").read_text().splitlines()
  names = [line.split()[0] for line in lines]
  counts = [int(line.split()[1]) for line in lines]
  labels = np.array([[int(v) for v in row.split()] for row in rows])
  return names, counts, labels


@pytest.mark.parametrize("split", sorted(SIZES))
def test_split_files_in_the_original_format(demo_dir, split):
  names, counts, labels = read_split(demo_dir, split)
  assert len(names) == SIZES[split] and labels.shape == (SIZES[split], 10)
  assert set(np.unique(labels)) <= {0, 1}
  np.testing.assert_array_equal(counts, labels.sum(axis=1))
  assert 1 <= labels.sum(axis=1).min() and labels.sum(axis=1).max() <= 4
  assert (labels.sum(axis=0) > 0).all(), "every label needs positives in every split"
  assert sorted(os.listdir(demo_dir / split / "images")) == sorted(names)
  for name in names[:5]:
    image = Image.open(demo_dir / split / "images" / name)
    assert (image.format, image.mode, image.size) == ("JPEG", "RGB", (64, 64))
  assert (demo_dir / "label_names.txt").read_text().split() == [str(d) for d in range(10)]


def test_mono_digits_are_light_on_dark_and_random_colours_are_colourful(demo_dir, tmp_path):
  """The default design draws grey digits brighter than a dark background; colours=random (the
  earlier design) draws coloured ones."""
  for name in sorted(os.listdir(demo_dir / "train" / "images"))[:5]:
    image = np.asarray(Image.open(demo_dir / "train" / "images" / name), np.float64)
    assert np.abs(image - image.mean(axis=2, keepdims=True)).max() < 40  # grey, up to JPEG
    grey = image.mean(axis=2)
    assert np.percentile(grey, 99) - np.median(grey) > 100  # light strokes on a dark ground
  make_demo_data.main([f"--output_dir={tmp_path}", "--num_train=10", "--num_eval=0",
                       "--num_test=0", "--colours=random"])
  spreads = [np.ptp(np.asarray(Image.open(p), np.float64).mean(axis=(0, 1)))
             for p in sorted((tmp_path / "train" / "images").iterdir())]
  assert max(spreads) > 40  # some background is far from grey


def test_same_seed_same_images(demo_dir, tmp_path):
  make_demo_data.main([f"--output_dir={tmp_path}", f"--num_train={SIZES['train']}",
                       f"--num_eval={SIZES['eval']}", f"--num_test={SIZES['test']}", "--seed=3"])
  for split in SIZES:
    for name in ("image_list", "image_label", "images/%s_00007.jpg" % split):
      assert (tmp_path / split / name).read_bytes() == (demo_dir / split / name).read_bytes()


def test_source_digits_are_partitioned_between_splits():
  targets = load_digits().target
  pools = make_demo_data.split_sources(targets, {"train": 3000, "eval": 500, "test": 200},
                                       np.random.default_rng(0))
  seen = {}
  for split, per_class in pools.items():
    for digit, indices in enumerate(per_class):
      assert len(indices) >= 10, (split, digit)
      assert (targets[indices] == digit).all()  # each pool holds only scans of its digit
      for i in indices:
        assert seen.setdefault(int(i), split) == split, f"scan {i} in two splits"
  assert len(seen) == len(targets)  # every scan used by exactly one split


def ink_quadrants(image, background):
  """Which quadrants hold pixels far from the background colour (the noise is sigma 6)."""
  far = np.abs(image.astype(float) - background).max(axis=2) > 60
  half = image.shape[0] // 2
  return {q for q in range(4) if far[(q // 2) * half:(q // 2 + 1) * half,
                                     (q % 2) * half:(q % 2 + 1) * half].sum() >= 10}


@pytest.mark.parametrize("digits", [[0], [3, 8], [1, 5, 9], [2, 4, 6, 7]])
def test_each_digit_is_drawn_in_its_own_quadrant(digits):
  scans = load_digits().images / 16.0
  pools = [np.arange(len(scans))[load_digits().target == d] for d in range(10)]
  rng = np.random.default_rng(len(digits))
  image = make_demo_data.render_image(rng, scans, pools, digits, 64)
  background = np.median(image.reshape(-1, 3), axis=0)  # most pixels are background
  assert image.shape == (64, 64, 3) and image.dtype == np.uint8
  assert len(ink_quadrants(image, background)) == len(digits)


def test_demo_data_goes_through_create_and_read(demo_dir, tmp_path, capsys):
  split = demo_dir / "test"
  output = tmp_path / "test.tfrecord"
  create_tfrecord.main([f"--image_dir={split / 'images'}", f"--imglist_file={split / 'image_list'}",
                        f"--imglabel_file={split / 'image_label'}", f"--output_file={output}",
                        "--num_workers=1"])
  read_tfrecord.main([f"--data_path={output}"])  # exits non-zero on any failure
  out = capsys.readouterr().out
  assert f"records: {SIZES['test']} ({SIZES['test']} good, 0 failed)" in out
  assert "labels: 10" in out and "image height: min 64, median 64, max 64" in out


@pytest.mark.parametrize("flag", ["--num_eval=5", "--image_size=16", "--max_digits=5"])
def test_bad_settings_exit_2(tmp_path, flag, capsys):
  with pytest.raises(SystemExit) as info:
    errors.run(make_demo_data.main, [f"--output_dir={tmp_path}", flag])
  assert info.value.code == 2 and flag.split("=")[0] in capsys.readouterr().err
  assert os.listdir(tmp_path) == []



def test_derived_label_set_for_the_transfer_stage(demo_dir, tmp_path):
  """demo/derive_labels.py: 'has an even digit' and 'has a digit > 5' from the digits present,
  in the original formats, for the same image names."""
  import importlib.util
  path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "demo", "derive_labels.py")
  spec = importlib.util.spec_from_file_location("derive_labels", path)
  derive = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(derive)
  derive.main([f"--data={demo_dir}", f"--out={tmp_path}"])
  assert (tmp_path / "label_names.txt").read_text().split() == ["has_even_digit",
                                                                 "has_digit_above_5"]
  for split in SIZES:
    names, _, digits = read_split(demo_dir, split)
    new_names, counts, labels = read_split(tmp_path, split)
    want = np.stack([digits[:, [0, 2, 4, 6, 8]].max(axis=1), digits[:, 6:].max(axis=1)], axis=1)
    assert new_names == names
    np.testing.assert_array_equal(labels, want)
    np.testing.assert_array_equal(counts, want.sum(axis=1))
    entries = create_tfrecord.read_list_and_labels(str(tmp_path / split / "image_list"),
                                                   str(tmp_path / split / "image_label"))
    assert [e[1] for e in entries] == want.tolist()
