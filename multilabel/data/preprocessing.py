"""Preprocessing and the tf.data input pipeline over the records, for training, evaluation and
the test-time views (10 crops or the one plain view).

Preprocessing runs inside tf.data, once per image: decoded to float in [0, 1], augmented there
(training's `augmentation`), scaled to [-1, 1] as the last step. build_dataset reads the
create_tfrecord.py records for train.py and evaluate.py; inference.py and the SavedModel
(scoring.py) preprocess single encoded images with preprocess_views.
"""

import tensorflow as tf

from multilabel import errors
from multilabel.data import records
from multilabel.data.mixing import mixup

AUGMENTATIONS = ("seed", "crop_flip", "flip", "none", "randaugment")


# ---------------------------------------------------------------------------------------------
# Preprocessing. Images are decoded to float in [0, 1], augmented there, and scaled to [-1, 1]
# (the range the slim ResNet v2 checkpoints were trained on) as the last step.

def _to_unit_range(image_uint8):
  return tf.image.convert_image_dtype(image_uint8, tf.float32)


def _to_network_range(image):
  return (image - 0.5) * 2.0


def train_crop_window(image_shape, resize_hw, target_hw, seed=None):
  """The source window that resize-then-random-crop reads: [y, x, h, w] in source pixels.

  The original resized the whole image to resize_hw and cut a random target_hw crop from it. A
  crop of a bilinear resize is (up to rounding to whole source pixels, and interpolation at the
  window's edge) the bilinear resize of the matching source window, so decoding only that window
  (`tf.io.decode_and_crop_jpeg`) gives the same distribution of crops for far less work.
  """
  height, width = tf.cast(image_shape[0], tf.float32), tf.cast(image_shape[1], tf.float32)
  (rh, rw), (th, tw) = resize_hw, target_hw
  if rh < th or rw < tw:
    raise ValueError(f"resize {resize_hw} is smaller than target {target_hw}: the random crop "
                     "needs resize_height >= target_height and resize_width >= target_width")
  offset = tf.random.uniform([2], 0.0, 1.0, seed=seed) * [rh - th + 1, rw - tw + 1]
  offset = tf.floor(offset)  # the original's integer crop offset in the resized image
  scale = tf.stack([height / rh, width / rw])
  start = tf.cast(tf.floor(offset * scale), tf.int32)
  size = tf.maximum(tf.cast(tf.round(tf.constant([th, tw], tf.float32) * scale), tf.int32), 1)
  size = tf.minimum(size, tf.cast(tf.stack([height, width]), tf.int32) - start)
  return tf.concat([start, size], axis=0)


def decode_train_crop(image_data, resize_hw, target_hw, seed=None):
  """Encoded image -> the uint8 [h, w, 3] source window of a random train crop (train_crop_window).

  A JPEG decodes only that window (decode_and_crop_jpeg); any other format, e.g. the PNGs that
  create_tfrecord.py --lossless stores, is decoded whole and the window sliced out of it.
  """
  def jpeg():
    window = train_crop_window(tf.io.extract_jpeg_shape(image_data), resize_hw, target_hw, seed)
    return tf.io.decode_and_crop_jpeg(image_data, window, channels=3)

  def other():
    image = tf.io.decode_image(image_data, channels=3, expand_animations=False)
    y, x, h, w = tf.unstack(train_crop_window(tf.shape(image), resize_hw, target_hw, seed))
    return image[y:y + h, x:x + w]
  return tf.cond(tf.io.is_jpeg(image_data), jpeg, other)


def color_augment(image):
  """The original's photometric augmentation on a [H, W, 3] image in [0, 1]."""
  image = tf.image.random_brightness(image, max_delta=32.0 / 255.0)
  image = tf.image.random_saturation(image, lower=0.5, upper=1.5)
  image = tf.image.random_hue(image, max_delta=0.032)
  image = tf.image.random_contrast(image, lower=0.5, upper=1.5)
  return tf.clip_by_value(image, 0.0, 1.0)


def randaugment_layers(seed=None):
  """The multi-label recipe of ASL / ML-Decoder (Ridnik et al. 2021, 2023) on [H, W, 3] in [0, 1]:
  Keras 3's RandAugment (2 random ops of magnitude 0.5; Cubuk et al. 2020, arXiv:1909.13719),
  then RandomErasing (Zhong et al. 2020) on half the images. Built once per pipeline; they run in
  tf.data on TensorFlow's ops."""
  import keras  # only this choice needs it: evaluation and inference start faster without
  seeds = (None, None) if seed is None else (seed, seed + 1)
  augment = keras.layers.RandAugment(value_range=(0, 1), seed=seeds[0])
  erase = keras.layers.RandomErasing(factor=0.5, value_range=(0, 1), seed=seeds[1])
  return lambda image: erase(augment(image, training=True), training=True)


def preprocess_train(image_data, config, randaugment=None):
  """JPEG bytes -> [target_h, target_w, 3] in [-1, 1], augmented as config.augmentation says.

    seed         the original's: random crop (of a resize_h x resize_w resize), flip, colour
    crop_flip    the random crop and the flip, no colour jitter
    flip         eval's plain resize, then the flip
    none         eval's plain resize (preprocess_eval), nothing random
    randaugment  the random crop and the flip, then `randaugment` (default randaugment_layers())

  The crops decode only their window of a JPEG (decode_train_crop).
  """
  kind, target = config.augmentation, (config.target_height, config.target_width)
  if kind == "none":
    return preprocess_eval(image_data, config)
  if kind == "flip":
    image = tf.io.decode_image(image_data, channels=3, expand_animations=False)
    image = tf.image.resize(_to_unit_range(image), target)
  elif kind in ("seed", "crop_flip", "randaugment"):
    image = decode_train_crop(image_data, train_resize(config), target)
    image = tf.image.resize(_to_unit_range(image), target)
  else:
    raise ValueError(f"augmentation={kind!r}: expected one of {', '.join(AUGMENTATIONS)}")
  image = tf.image.random_flip_left_right(image)
  if kind == "seed":
    image = color_augment(image)
  elif kind == "randaugment":
    image = tf.clip_by_value((randaugment or randaugment_layers())(image), 0.0, 1.0)
  return _to_network_range(image)


def preprocess_eval(image_data, config):
  """Encoded image -> [target_h, target_w, 3] in [-1, 1]: a plain resize, as the original."""
  image = tf.io.decode_image(image_data, channels=3, expand_animations=False)
  image = tf.image.resize(_to_unit_range(image), (config.target_height, config.target_width))
  return _to_network_range(image)


def ten_crops(image, target_hw):
  """[H, W, 3] -> [10, th, tw, 3]: the 4 corners and the centre, then their mirrors, in order.

  Order: top-left, top-right, bottom-left, bottom-right, centre, then the same five flipped
  left-right.
  """
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  th, tw = target_hw
  offsets = [(0, 0), (0, width - tw), (height - th, 0), (height - th, width - tw),
             ((height - th) // 2, (width - tw) // 2)]
  crops = tf.stack([image[y:y + th, x:x + tw] for y, x in offsets])  # [5, th, tw, 3]
  return tf.concat([crops, tf.reverse(crops, axis=[2])], axis=0)  # [10, th, tw, 3]



TRAIN_RESIZE_RATIO = 255 / 224  # the original resized to 255 before its random 224 crop
TEN_CROP_RESIZE_RATIO = 290 / 224  # ... and to 290 before cutting its 10 test crops of 224


def followed_resize(resize_hw, target_hw, ratio):
  """(height, width): a side given as 0 follows the target by the original's `ratio`; a side
  given explicitly wins."""
  return tuple(side or round(target * ratio) for side, target in zip(resize_hw, target_hw))


def train_resize(config):
  """The resize before a training crop: ModelConfig.resize_height/width, 0 = 255/224 of the
  target (255 at 224, the original's; 73 at 64, so that a crop is most of the image)."""
  return followed_resize((config.resize_height, config.resize_width),
                         (config.target_height, config.target_width), TRAIN_RESIZE_RATIO)


def ten_crop_resize(resize_hw, target_hw):
  """The (height, width) an image is resized to before its 10 crops of target_hw.

  A side given as 0 follows the model: the original's 290/224 ratio applied to the trained
  target side, so 290 for a 224 model and 83 for a 64 one. A side given explicitly wins, but
  one smaller than the target's is a ConfigError: the crops would not fit.
  """
  resize = followed_resize(resize_hw, target_hw, TEN_CROP_RESIZE_RATIO)
  if resize[0] < target_hw[0] or resize[1] < target_hw[1]:
    raise errors.ConfigError(
        f"resize_height/resize_width {tuple(resize_hw)} give a resize {resize} smaller than the "
        f"model's {tuple(target_hw)} crops; use sides >= the target, or 0 to follow the model")
  return resize


def preprocess_ten_crop(image_data, resize_hw, target_hw):
  """Encoded image -> [10, th, tw, 3] in [-1, 1]: resize to resize_hw, then ten_crops."""
  image = tf.io.decode_image(image_data, channels=3, expand_animations=False)
  image = tf.image.resize(_to_unit_range(image), resize_hw)
  return _to_network_range(ten_crops(image, target_hw))


# Test-time views. The 10 crops are the original's test-time augmentation, and match a network
# trained on random crops and flips. One trained on the whole image (augmentation none or flip)
# never saw a crop, or a mirror with none: for digits, a mirrored 2 is no 2. On the demo's test
# split (32 px, augmentation none), 10 crops gave mAP 0.57 and the one view 0.91, in two runs of
# the same recipe whose eval mAP was 0.92 and 0.90.
VIEWS = {"ten": 10, "one": 1}  # InferenceConfig.views -> images the network sees per image
CROPPING_AUGMENTATIONS = ("seed", "crop_flip", "randaugment")  # train on random crops and flips


def test_views(views, augmentation):
  """InferenceConfig.views for a model trained with `augmentation`: "auto" is "ten" when
  training took random crops and flips (seed, crop_flip, randaugment), else "one"."""
  if views == "auto":
    return "ten" if augmentation in CROPPING_AUGMENTATIONS else "one"
  if views not in VIEWS:
    raise errors.ConfigError(f"views={views!r}: expected auto, ten or one")
  return views


def preprocess_views(image_data, views, resize_hw, target_hw):
  """Encoded image -> [V, th, tw, 3] in [-1, 1]: "ten" is preprocess_ten_crop; "one" is the
  plain resize to target_hw, exactly what evaluate.py scores (preprocess_eval)."""
  if views == "ten":
    return preprocess_ten_crop(image_data, resize_hw, target_hw)
  image = tf.io.decode_image(image_data, channels=3, expand_animations=False)
  image = tf.image.resize(_to_unit_range(image), target_hw)
  return _to_network_range(image)[tf.newaxis]  # [th, tw, 3] -> [1, th, tw, 3]


# ---------------------------------------------------------------------------------------------
# Input pipeline.

def input_files(file_spec, input_context=None):
  """The TFRecord files of `file_spec`, and whether records (not files) must be sharded."""
  files = records.expand_file_spec(file_spec)
  pipelines = input_context.num_input_pipelines if input_context else 1
  if pipelines > 1 and len(files) >= pipelines:
    return files[input_context.input_pipeline_id::pipelines], False
  return files, pipelines > 1


def build_dataset(config, mode, file_spec=None, input_context=None, seed=None, device=None,
                  service=None, batch_size=None):
  """A tf.data pipeline over SequenceExample TFRecords.

  Args:
    config: ModelConfig (keys, sizes, batch_size, parallelism, shuffle_buffer).
    mode: 'train' (shuffled, repeated, augmented, whole batches) or 'eval' (one pass in file
      order, plain resize, a final partial batch).
    file_spec: file, comma list or glob; defaults to config.input_tfrecord_file.
    input_context: a tf.distribute.InputContext: each input pipeline reads its own files when
      there are at least as many files as pipelines, else its own records.
    seed: shuffle seed (None = nondeterministic).
    device: e.g. '/gpu:0': copy batches to that device ahead of the step, as the last stage.
    batch_size: images per batch; default config.batch_size (evaluate.py passes its own).
    service: an input_service.Service: everything up to the batch (the files, shuffles, reads
      and the per-element map: parse, decode, augment) runs on its tf.data service workers, and
      the batch and the prefetch here. The service divides the records among the workers and
      the trainers that share its job, so `input_context` then shards nothing.
  Returns:
    train: (images [B, th, tw, 3] float32 in [-1, 1], labels [B, L] float32).
    eval: (images, labels, image_paths [B]).
  """
  if mode not in ("train", "eval"):
    raise ValueError(f"mode={mode!r}: expected 'train' or 'eval'")
  training = mode == "train"
  files, shard_records = input_files(file_spec or config.input_tfrecord_file,
                                     None if service else input_context)
  parallel = tf.data.AUTOTUNE if config.num_parallel_calls < 0 else config.num_parallel_calls
  ds = tf.data.Dataset.from_tensor_slices(files)
  if training:
    ds = ds.shuffle(len(files), seed=seed)
  read = tf.data.TFRecordDataset
  if shard_records:
    # Every n-th record of each file, not of the interleaved stream: the file shuffle and the
    # non-deterministic interleave order the stream differently on each worker, so shards of it
    # would overlap and miss records.
    n, i = input_context.num_input_pipelines, input_context.input_pipeline_id
    read = lambda path: tf.data.TFRecordDataset(path).shard(n, i)
  ds = ds.interleave(read, cycle_length=min(len(files), 8),
                     num_parallel_calls=parallel if len(files) > 1 else None,
                     deterministic=not training if len(files) > 1 else None)
  if training:
    ds = ds.shuffle(config.shuffle_buffer, seed=seed).repeat()

  label_count = config.label_count
  randaugment = (randaugment_layers(seed)
                 if training and config.augmentation == "randaugment" else None)

  def parse(serialized):
    path, data, labels = records.parse_example(
        serialized, config.image_path_key, config.image_data_key, config.image_label_key)
    count = tf.size(labels)
    check = tf.debugging.Assert(tf.equal(count, label_count), [
        f"a record's label count differs from label_count={label_count}: image_path", path,
        "has labels:", count])
    with tf.control_dependencies([check]):
      labels = tf.ensure_shape(tf.cast(labels, tf.float32), [label_count])
    if training:
      return preprocess_train(data, config, randaugment), labels
    return preprocess_eval(data, config), labels, path

  ds = ds.map(parse, num_parallel_calls=parallel, deterministic=not training)
  if service:
    what = f"augmentation={config.augmentation}" if training else "the eval pipeline"
    ds = service.distribute(ds, what)
  ds = ds.batch(batch_size or config.batch_size, drop_remainder=training)
  if training and config.mixup > 0:  # after the service: it blends within the local batch
    ds = ds.map(mixup(config.mixup, seed), num_parallel_calls=parallel)
  if device:
    return ds.apply(tf.data.experimental.prefetch_to_device(device))
  return ds.prefetch(tf.data.AUTOTUNE)
