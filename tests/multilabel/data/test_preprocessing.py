"""multilabel/data/preprocessing.py against numpy and hand computations: the train crop window,
train, eval and 10-crop preprocessing, the augmentation choices, the test-time views and their
default resize, and the tf.data pipeline over the records (one pass in order, repeated batches,
a part per input pipeline). (From tests/test_model.py's preprocessing and pipeline tests,
tests/test_inference.py's view and resize tests, and tests/test_distribute.py's input sharding.)
"""
import os

import numpy as np
import pytest
import tensorflow as tf

import configs
from multilabel import errors
from multilabel.data import preprocessing
from multilabel.data.preprocessing import build_dataset, input_files
from tests import inference_fixture as fx
from tests.helpers import ID_BITS, id_labels, write_records


# ---------------------------------------------------------------------------------------------
# Preprocessing.

def smooth_image(height, width, seed=0):
  """A smooth uint8 RGB image: JPEG keeps it well, and resizing it is not trivial."""
  rng = np.random.RandomState(seed)
  yy, xx = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
  channels = [128 + 100 * np.sin(2 * np.pi * (a * 3 * yy + b * 3 * xx) + c)
              for a, b, c in rng.rand(3, 3)]
  return np.stack(channels, -1).round().astype(np.uint8)


def jpeg(image):
  # 4:4:4 at quality 100: a cropped decode then equals the full decode's pixels exactly
  return tf.io.encode_jpeg(image, quality=100, chroma_downsampling=False)


def decoded(data):
  """The test's own decode: [H, W, 3] float64 in [0, 1]."""
  return tf.io.decode_jpeg(data, channels=3).numpy().astype(np.float64) / 255.0


def resized(image, size):
  return tf.image.resize(image, size).numpy()  # bilinear, half-pixel centres


@pytest.mark.parametrize("resize, target", [((41, 49), (32, 32)), ((40, 64), (32, 48)),
                                             ((32, 32), (32, 32))])
def test_ten_crops_equal_numpy_slicing(resize, target):
  data = jpeg(smooth_image(50, 70))
  image = resized(decoded(data), resize)
  (h, w), (th, tw) = resize, target
  corners = [(0, 0), (0, w - tw), (h - th, 0), (h - th, w - tw), ((h - th) // 2, (w - tw) // 2)]
  crops = [image[y:y + th, x:x + tw] for y, x in corners]  # TL, TR, BL, BR, centre
  want = np.stack(crops + [c[:, ::-1] for c in crops]) * 2 - 1  # then their mirrors
  got = preprocessing.preprocess_ten_crop(data, resize, target)
  assert got.shape == [10, th, tw, 3] and got.dtype == tf.float32
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_eval_preprocessing_is_a_plain_resize(model_config):
  config = model_config()
  data = jpeg(smooth_image(50, 70))
  got = preprocessing.preprocess_eval(data, config)
  want = resized(decoded(data), (64, 64)) * 2 - 1
  assert got.shape == [64, 64, 3] and got.dtype == tf.float32
  np.testing.assert_allclose(got, want, atol=1e-5)
  gray = tf.io.encode_jpeg(smooth_image(40, 30)[..., :1])  # 1 channel -> 3 equal channels
  got = preprocessing.preprocess_eval(gray, config).numpy()
  assert got.shape == (64, 64, 3) and (got[..., 0] == got[..., 2]).all()


def fixed_uniform(monkeypatch, values):
  """tf.random.uniform returns `values` (the train crop's draw) instead of random numbers."""
  monkeypatch.setattr(tf.random, "uniform",
                      lambda shape, *args, **kw: tf.constant(values, tf.float32))


def window(source_hw, resize_hw, target_hw):
  return preprocessing.train_crop_window(source_hw, resize_hw, target_hw).numpy().tolist()


def test_train_crop_window_by_hand(monkeypatch):
  # 510x255 source, resize 255x255, crop 224: offsets floor(u * 32); source scale 2 by 1
  fixed_uniform(monkeypatch, [0.5, 0.25])
  assert window((510, 255), (255, 255), (224, 224)) == [32, 8, 448, 224]  # 2 * 16, 1 * 8
  # odd 37x91 source, resize 72, crop 64: offsets floor(0.999999 * 9) = 8, the largest;
  # start floor(8 * 37 / 72) = 4, floor(8 * 91 / 72) = 10; size round(64 * 37 / 72) = 33,
  # round(64 * 91 / 72) = 81: both end exactly at the border
  fixed_uniform(monkeypatch, [0.999999, 0.999999])
  assert window((37, 91), (72, 72), (64, 64)) == [4, 10, 33, 81]
  fixed_uniform(monkeypatch, [0.0, 0.0])
  assert window((37, 91), (72, 72), (64, 64)) == [0, 0, 33, 81]
  with pytest.raises(ValueError, match=r"resize \(60, 72\) is smaller than target \(64, 64\)"):
    window((37, 91), (60, 72), (64, 64))


@pytest.mark.parametrize("source", [(37, 91), (91, 37), (1, 1), (3, 500), (255, 255), (256, 300)])
@pytest.mark.parametrize("resize, target", [((72, 72), (64, 64)), ((255, 255), (224, 224)),
                                             ((64, 96), (64, 64))])
def test_train_crop_window_fits_and_matches_the_resized_crop(monkeypatch, source, resize, target):
  """For every draw the window lies inside the image and covers the source region of the
  original's crop of the resized image, [offset, offset + target) * scale: its start floored to
  a whole pixel (< 1 off), its size rounded (so its end < 1.5 off)."""
  for u in [0.0, 0.3, 0.5, 0.77, 0.999999]:
    fixed_uniform(monkeypatch, [u, 1 - u if u else 0.999999])
    y, x, h, w = window(source, resize, target)
    for start, size, dim, r, t, draw in [(y, h, source[0], resize[0], target[0], u),
                                         (x, w, source[1], resize[1], target[1],
                                          1 - u if u else 0.999999)]:
      assert 0 <= start and 1 <= size and start + size <= dim, (source, u, y, x, h, w)
      offset = np.floor(np.float32(draw) * (r - t + 1))  # the original's crop offset
      scale = dim / r
      assert abs(start - offset * scale) < 1
      assert abs(start + size - min((offset + t) * scale, dim)) < 1.5


def test_train_preprocessing_crops_a_window_of_the_resized_image(monkeypatch, model_config):
  """Colour jitter set aside, a train image is the original's crop of the resized image."""
  config = model_config()  # resize 72, target 64
  data = jpeg(smooth_image(144, 144))  # twice the resize: windows fall on whole pixels
  monkeypatch.setattr(preprocessing, "color_augment", lambda image: image)
  monkeypatch.setattr(tf.image, "random_flip_left_right", lambda image: image[:, ::-1])
  fixed_uniform(monkeypatch, [0.5, 0.95])  # offsets floor(4.5) = 4, floor(8.55) = 8
  got = preprocessing.preprocess_train(data, config).numpy()
  original = resized(decoded(data), (72, 72))[4:68, 8:72][:, ::-1]  # crop, then mirror
  np.testing.assert_allclose(got, original * 2 - 1, atol=1e-5)


def test_train_preprocessing_window_on_an_odd_source(monkeypatch, model_config):
  config = model_config()
  data = jpeg(smooth_image(37, 91))
  monkeypatch.setattr(preprocessing, "color_augment", lambda image: image)
  monkeypatch.setattr(tf.image, "random_flip_left_right", lambda image: image)
  fixed_uniform(monkeypatch, [0.999999, 0.999999])  # window [4, 10, 33, 81], by hand above
  got = preprocessing.preprocess_train(data, config).numpy()
  want = resized(decoded(data)[4:4 + 33, 10:10 + 81], (64, 64)) * 2 - 1
  np.testing.assert_allclose(got, want, atol=1e-5)


def test_a_png_record_gives_the_same_window_as_its_jpeg_would(monkeypatch, model_config):
  """create_tfrecord.py --lossless stores PNGs, which decode_and_crop_jpeg cannot read: the
  window is then sliced from the whole decode, the same window of the same pixels."""
  config = model_config()
  pixels = smooth_image(37, 91)
  png = tf.io.encode_png(pixels).numpy()
  monkeypatch.setattr(preprocessing, "color_augment", lambda image: image)
  monkeypatch.setattr(tf.image, "random_flip_left_right", lambda image: image)
  fixed_uniform(monkeypatch, [0.999999, 0.999999])  # window [4, 10, 33, 81], by hand above
  got = preprocessing.preprocess_train(png, config).numpy()
  want = resized(pixels[4:4 + 33, 10:10 + 81].astype(np.float32) / 255, (64, 64)) * 2 - 1
  np.testing.assert_allclose(got, want, atol=1e-5)
  window = preprocessing.decode_train_crop(png, (72, 72), (64, 64)).numpy()
  np.testing.assert_array_equal(window, pixels[4:37, 10:91])


def test_train_preprocessing_shape_and_range(model_config):
  config = model_config()
  data = jpeg(smooth_image(37, 91))
  outs = np.stack([preprocessing.preprocess_train(data, config).numpy() for _ in range(8)])
  assert outs.shape == (8, 64, 64, 3) and outs.dtype == np.float32
  assert outs.min() >= -1 and outs.max() <= 1
  assert np.abs(outs - outs[0]).max() > 0.05  # random: crops, flips and colours differ


def test_color_augment_clips_to_unit_range():
  image = tf.constant(np.random.RandomState(0).uniform(0, 1, [16, 16, 3]), tf.float32)
  for _ in range(5):
    out = preprocessing.color_augment(image).numpy()
    assert out.shape == (16, 16, 3) and out.min() >= 0 and out.max() <= 1


# Augmentation choices (ModelConfig.augmentation).

def test_augmentation_none_is_eval_preprocessing_exactly(model_config):
  data = jpeg(smooth_image(50, 70))
  config = model_config(augmentation="none")
  want = preprocessing.preprocess_eval(data, config).numpy()
  for _ in range(3):
    np.testing.assert_array_equal(preprocessing.preprocess_train(data, config).numpy(), want)


def test_augmentation_flip_is_the_eval_image_or_its_mirror(model_config):
  data = jpeg(smooth_image(50, 70))
  config = model_config(augmentation="flip")
  plain = resized(decoded(data), (64, 64)) * 2 - 1  # eval's resize, by the test's own ops
  seen = set()
  for _ in range(12):
    got = preprocessing.preprocess_train(data, config).numpy()
    mirrored = np.abs(got - plain[:, ::-1]).max() < 1e-5
    assert mirrored or np.abs(got - plain).max() < 1e-5
    seen.add(mirrored)
  assert seen == {True, False}  # 12 fair coin flips all alike: p = 2 ** -11


def test_augmentation_crop_flip_is_the_originals_crop_without_colour(monkeypatch,
                                                                      model_config):
  """The original's crop of the resized image and its mirror, colour untouched: unlike the
  `seed` test above, color_augment is not patched out, so any jitter would show."""
  data = jpeg(smooth_image(144, 144))
  monkeypatch.setattr(tf.image, "random_flip_left_right", lambda image: image[:, ::-1])
  fixed_uniform(monkeypatch, [0.5, 0.95])  # offsets 4 and 8, as in the seed test
  got = preprocessing.preprocess_train(data, model_config(augmentation="crop_flip")).numpy()
  original = resized(decoded(data), (72, 72))[4:68, 8:72][:, ::-1]
  np.testing.assert_allclose(got, original * 2 - 1, atol=1e-5)


def test_augmentation_randaugment_changes_images_keeps_shape_and_range(monkeypatch,
                                                                       model_config):
  """On the same crop (the draw fixed, the flip off), randaugment differs from crop_flip."""
  monkeypatch.setattr(tf.image, "random_flip_left_right", lambda image: image)
  fixed_uniform(monkeypatch, [0.5, 0.5])
  config = model_config(augmentation="randaugment")
  layers = preprocessing.randaugment_layers(seed=3)
  changed = []
  for seed in range(8):
    data = jpeg(smooth_image(80, 80, seed=seed))
    crop_flip = preprocessing.preprocess_train(data, model_config(augmentation="crop_flip")).numpy()
    got = preprocessing.preprocess_train(data, config, layers).numpy()
    assert got.shape == (64, 64, 3) and got.dtype == np.float32
    assert got.min() >= -1 and got.max() <= 1
    changed.append(np.abs(got - crop_flip).mean())
  assert sum(c > 0.02 for c in changed) >= 4, changed  # 2 ops of magnitude 0.5 per image


def test_randaugment_is_deterministic_under_a_seed():
  """The same seed gives the same augmented images, inside tf.data as train.py runs it; another
  seed gives others."""
  images = tf.constant(np.stack([smooth_image(64, 64, seed=s) for s in range(6)]) / 255.0,
                       tf.float32)

  def augmented(seed):
    layers = preprocessing.randaugment_layers(seed)
    ds = tf.data.Dataset.from_tensor_slices(images).map(layers)
    return np.stack(list(ds.as_numpy_iterator()))

  first, again, other = augmented(5), augmented(5), augmented(6)
  np.testing.assert_array_equal(first, again)
  assert np.abs(first - other).max() > 0.1
  assert first.min() >= 0 and first.max() <= 1 and first.shape == (6, 64, 64, 3)


def test_unknown_augmentation_is_an_error_naming_it(model_config):
  with pytest.raises(ValueError, match="augmentation='mixup'"):
    preprocessing.preprocess_train(jpeg(smooth_image(40, 40)), model_config(augmentation="mixup"))


# ---------------------------------------------------------------------------------------------
# The test-time views, and the default resize: it follows the model (the original's
# 290/224 of the trained target size).

def test_the_resize_rule():
  assert preprocessing.ten_crop_resize((0, 0), (224, 224)) == (290, 290)  # the original's 290 at 224
  assert preprocessing.ten_crop_resize((0, 0), (64, 64)) == (83, 83)
  assert preprocessing.ten_crop_resize((0, 0), fx.TARGET) == fx.DEFAULT_RESIZE
  assert preprocessing.ten_crop_resize((300, 0), fx.TARGET) == (300, 124)  # a given side wins
  assert preprocessing.ten_crop_resize(fx.TARGET, fx.TARGET) == fx.TARGET  # crops of the whole image
  with pytest.raises(errors.ConfigError, match=r"\(0, 90\) give a resize \(83, 90\) smaller "
                                               r"than the model's \(64, 96\) crops"):
    preprocessing.ten_crop_resize((0, 90), fx.TARGET)


def test_default_crops_are_of_the_followed_resize(noise_image_dir):
  """preprocess_ten_crop at the default resize equals numpy's crops of an 83 x 124 resize."""
  path = os.path.join(noise_image_dir, "d.png")
  with open(path, "rb") as f:
    crops = preprocessing.preprocess_ten_crop(f.read(), preprocessing.ten_crop_resize((0, 0), fx.TARGET), fx.TARGET)
  np.testing.assert_allclose(crops.numpy(), fx.hand_ten_crops(path, fx.DEFAULT_RESIZE), atol=1e-5)


@pytest.mark.parametrize("augmentation, views", [
    ("seed", "ten"), ("crop_flip", "ten"), ("randaugment", "ten"), ("none", "one"),
    ("flip", "one")])
def test_auto_views_follow_the_training_augmentation(augmentation, views):
  assert preprocessing.test_views("auto", augmentation) == views
  assert preprocessing.test_views("ten", augmentation) == "ten"
  assert preprocessing.test_views("one", augmentation) == "one"


def test_unknown_views_is_an_error_naming_it():
  with pytest.raises(errors.ConfigError, match="views='five'"):
    preprocessing.test_views("five", "seed")


def test_one_view_is_eval_preprocessing_exactly(noise_image_dir):
  config = configs.ModelConfig(label_count=fx.LABELS, target_height=fx.TARGET[0],
                               target_width=fx.TARGET[1])
  for name in fx.IMAGES:
    with open(os.path.join(noise_image_dir, name), "rb") as f:
      data = f.read()
    one = preprocessing.preprocess_views(data, "one", (0, 0), fx.TARGET).numpy()
    assert one.shape == (1, *fx.TARGET, 3)
    np.testing.assert_array_equal(one[0], preprocessing.preprocess_eval(data, config).numpy())


# ---------------------------------------------------------------------------------------------
# Input pipeline.

def smooth_records(path, labels, sizes=None):
  """Records of smooth JPEGs (helpers.write_records), as create_tfrecord.py writes them; returns
  [(path, jpeg bytes, labels)]."""
  images = [jpeg(smooth_image(*(sizes[i] if sizes else (30 + 7 * i, 60 - 4 * i)), seed=i)).numpy()
            for i in range(len(labels))]
  write_records(path, labels, images=images, name="images/{}.jpg")
  return [(f"images/{i}.jpg", data, row) for i, (data, row) in enumerate(zip(images, labels))]


LABEL_ROWS = [[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 1], [1, 0, 1, 1], [0, 1, 1, 1],
              [0, 0, 1, 0]]  # 7 distinct rows: batches of 3 leave a partial one


@pytest.fixture(scope="module")
def record_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("records") / "train.tfrecord"
  return path, smooth_records(path, LABEL_ROWS)


def pipeline_config(path, **overrides):
  kw = dict(label_count=4, target_height=32, target_width=32, resize_height=36, resize_width=36,
            batch_size=3, input_tfrecord_file=str(path), shuffle_buffer=100)
  return configs.ModelConfig(**dict(kw, **overrides))


def test_eval_pipeline_one_pass_in_file_order(record_file):
  path, written = record_file
  config = pipeline_config(path)
  batches = list(preprocessing.build_dataset(config, "eval").as_numpy_iterator())
  assert [len(b[0]) for b in batches] == [3, 3, 1]  # the final partial batch is there
  images = np.concatenate([b[0] for b in batches])
  labels = np.concatenate([b[1] for b in batches])
  paths = [p.decode() for b in batches for p in b[2]]
  assert images.dtype == labels.dtype == np.float32
  assert images.shape == (7, 32, 32, 3) and labels.shape == (7, 4)
  assert paths == [p for p, _, _ in written]
  np.testing.assert_array_equal(labels, np.array(LABEL_ROWS, np.float32))
  for image, (_, data, _) in zip(images, written):  # each: the test's own resize, in [-1, 1]
    np.testing.assert_allclose(image, resized(decoded(data), (32, 32)) * 2 - 1, atol=1e-5)


def test_train_pipeline_whole_batches_repeated(record_file):
  path, _ = record_file
  config = pipeline_config(path)
  ds = preprocessing.build_dataset(config, "train", seed=1)
  images_spec, labels_spec = ds.element_spec
  assert images_spec.shape == [3, 32, 32, 3] and labels_spec.shape == [3, 4]
  batches = list(ds.take(5).as_numpy_iterator())  # 15 images: more than the 7 records
  labels = np.concatenate([b[1] for b in batches])
  for images, batch_labels in batches:
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.float32
    assert batch_labels.shape == (3, 4) and batch_labels.dtype == np.float32
    assert images.min() >= -1 and images.max() <= 1 and images.min() < 0 < images.max()
  # the first 7 are one epoch: every record once; the rest come around again
  assert sorted(map(tuple, labels[:7].tolist())) == sorted(map(tuple, LABEL_ROWS))
  assert {tuple(r) for r in labels.tolist()} <= {tuple(r) for r in LABEL_ROWS}


def test_pipeline_file_list(tmp_path, record_file):
  path, written = record_file
  second = smooth_records(tmp_path / "b.tfrecord", [[1, 1, 0, 0], [0, 0, 0, 0]])
  config = pipeline_config(path)
  batches = list(preprocessing.build_dataset(config, "eval", file_spec=f"{path},{tmp_path}/b.tfrecord")
                 .as_numpy_iterator())
  paths = sorted(p.decode() for b in batches for p in b[2])
  assert len(paths) == 9 and sorted(p for p, _, _ in written + second) == paths


def test_wrong_label_count_is_a_clear_error(tmp_path):
  path = tmp_path / "bad.tfrecord"
  smooth_records(path, [[1, 0, 1, 0], [1, 0, 1]], sizes=[(40, 40), (40, 40)])
  for mode in ["eval", "train"]:
    ds = preprocessing.build_dataset(pipeline_config(path, batch_size=1), mode)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"(?s)label_count=4.*images/1\.jpg.*3"):
      list(ds.take(4).as_numpy_iterator())


# ---------------------------------------------------------------------------------------------
# Input sharding: each pipeline reads its own files when there are enough, else its own
# records.

@pytest.mark.parametrize("num_files, pipelines, by_file", [
    (2, 2, True), (3, 2, True), (1, 2, False), (2, 3, False)])
def test_each_input_pipeline_reads_a_disjoint_part(tmp_path, num_files, pipelines, by_file):
  count = 24
  paths = write_records(tmp_path / "r.tfrecord", [id_labels(i) for i in range(count)], side=64,
                        num_shards=num_files)
  spec = str(tmp_path / "r.tfrecord*")
  config = configs.ModelConfig(label_count=ID_BITS, target_height=64, target_width=64,
                               resize_height=72, resize_width=72, batch_size=4,
                               input_tfrecord_file=spec)
  weights = 2 ** np.arange(ID_BITS)
  parts = []
  for i in range(pipelines):
    context = tf.distribute.InputContext(pipelines, i, pipelines)
    files, shard_records = input_files(spec, context)
    assert shard_records == (not by_file)
    assert files == (paths[i::pipelines] if by_file else paths)
    # eval: one pass, with the paths
    seen = [int(p.decode()[3:-4]) for _, _, batch in build_dataset(config, "eval",
                                                                    input_context=context)
            for p in batch.numpy()]
    assert len(seen) == len(set(seen))
    parts.append(set(seen))
    # train (shuffled, repeated, augmented): two passes' worth stays within this part
    train_ids = set()
    for _, labels in build_dataset(config, "train", input_context=context, seed=0).take(
        2 * len(seen) // config.batch_size + 1):
      train_ids.update((labels.numpy() @ weights).astype(int).tolist())
    assert train_ids == set(seen)
  assert set().union(*parts) == set(range(count))
  assert sum(len(p) for p in parts) == count  # disjoint
  if by_file:  # record r is in file r % num_files; pipeline i reads files i, i + pipelines, ...
    for i, part in enumerate(parts):
      assert part == {r for r in range(count) if r % num_files % pipelines == i}
