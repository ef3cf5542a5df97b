"""The multi-label model, its preprocessing, its input pipeline and its loss.

    backbone: resnet_v2_50, global_pool=False, no logits   [B, H/32, W/32, 2048]
    my_sub_network/my_conv_1: 1x1, D, ReLU                   [B, H/32, W/32, D]
    my_sub_network/my_conv_2: 1x1, D, ReLU                   [B, H/32, W/32, D]
    my_sub_network/my_conv_3: k x k VALID, linear (k = H/32) [B, 1, 1, L]
    squeeze -> logits [B, L] -> sigmoid

This is the original toolkit's network (a ResNet-50 v2 endpoint followed by three convolutions),
with TF-Slim's variable names so that its checkpoints and the official `resnet_v2_50.ckpt` restore
by name. D is `head_depth`, by default (0) the label count L as in the original; the backbone may
be ResNet-101/152/200 v2 (`backbone`), under slim's scope for each. Preprocessing runs inside
tf.data, once, for training (with the `augmentation` chosen), evaluation and 10-crop inference.
The file holds these four parts because each stage uses all of them together (~400 lines).
"""

import numpy as np
import tensorflow as tf

import errors
import records
import resnet_utils
import resnet_v2

HEAD_SCOPE = "my_sub_network"
# ModelConfig.backbone -> the slim builder; the name is also the variables' scope, as in slim.
BACKBONES = {"resnet_v2_50": resnet_v2.resnet_v2_50, "resnet_v2_101": resnet_v2.resnet_v2_101,
             "resnet_v2_152": resnet_v2.resnet_v2_152, "resnet_v2_200": resnet_v2.resnet_v2_200}
FEATURE_DEPTH = 2048  # the depth of every slim ResNet v2's last block
AUGMENTATIONS = ("seed", "crop_flip", "flip", "none", "randaugment")

COMPUTE_DTYPES = {"float32": tf.float32, "mixed_bfloat16": tf.bfloat16,
                  "mixed_float16": tf.float16}


def compute_dtype(precision):
  """The dtype activations run in for a ModelConfig.precision; variables always stay float32."""
  if precision not in COMPUTE_DTYPES:
    raise errors.ConfigError(f"precision={precision!r}: expected one of {sorted(COMPUTE_DTYPES)}")
  return COMPUTE_DTYPES[precision]


# ---------------------------------------------------------------------------------------------
# The model.

class MultiLabelClassificationModel(tf.Module):
  """ResNet v2 backbone + the original's three-convolution head, from a ModelConfig.

  `model(images, training)` takes [B, H, W, 3] images in [-1, 1] and returns
  `(logits [B, label_count] float32, end_points)`; end_points adds the head's three outputs
  ('my_sub_network/my_conv_1' ... '_3'), 'logits' and 'predictions' (the sigmoid) to the
  backbone's.

  With `train_base_network=False` (the original's default) the backbone's variables are not
  trainable and its batch norm always uses the moving statistics, even while training, so a
  frozen pretrained backbone computes exactly what it computed when it was trained.
  """

  def __init__(self, config, name=None):
    super().__init__(name=name)
    if config.label_count < 1:
      raise errors.ConfigError(f"label_count={config.label_count}: set it to the number of labels")
    for side in ("target_height", "target_width"):
      if getattr(config, side) % 32 or getattr(config, side) < 32:
        raise errors.ConfigError(f"{side}={getattr(config, side)}: must be a positive multiple of "
                                 "32 (the backbone's output stride)")
    if config.backbone not in BACKBONES:
      raise errors.ConfigError(f"backbone={config.backbone!r}: expected one of "
                               f"{', '.join(BACKBONES)}")
    if config.head_depth < 0:
      raise errors.ConfigError(f"head_depth={config.head_depth}: use 0 (= label_count, the "
                               "original) or a number of channels")
    self.config = config
    self.dtype = compute_dtype(config.precision)
    self.backbone = BACKBONES[config.backbone](
        num_classes=None, global_pool=False, scope=config.backbone,
        trainable=config.train_base_network,
        batch_norm_decay=config.batch_norm_decay,
        batch_norm_epsilon=config.batch_norm_epsilon)
    labels, depth = config.label_count, head_depth(config)
    kernel = (config.target_height // 32, config.target_width // 32)
    conv = lambda name, k, depth_in, depth_out, relu: resnet_utils.Conv2D(
        f"{HEAD_SCOPE}/{name}", k, depth_in, depth_out, padding="VALID", batch_norm=False,
        activation=tf.nn.relu if relu else None, initializer=resnet_utils.xavier_initializer())
    self.head = [conv("my_conv_1", (1, 1), FEATURE_DEPTH, depth, True),
                 conv("my_conv_2", (1, 1), depth, depth, True),
                 conv("my_conv_3", kernel, depth, labels, False)]

  @property
  def backbone_variables(self):
    return self.backbone.variables

  @property
  def conv_weights(self):
    """The trained conv weights (no biases, no batch norm): the head's, plus the backbone's when
    it is fine-tuned. L2 or AdamW's decay applies to these."""
    weights = [layer.weights for layer in self.head]
    if self.config.train_base_network:
      weights += list(self.backbone.regularized_weights)
    return weights

  @property
  def regularized_weights(self):
    """The weights that L2 covers: conv_weights, or none without use_regularizer."""
    return self.conv_weights if self.config.use_regularizer else []

  def __call__(self, images, training=False):
    # `training` may be a bool tensor: the backbone's batch norm then picks its mode in-graph
    backbone_training = training if self.config.train_base_network else False
    net, end_points = self.backbone(tf.cast(images, self.dtype), training=backbone_training)
    if not self.config.train_base_network:
      net = tf.stop_gradient(net)  # nothing below the head is trained: keep backprop out of it
    for layer in self.head:
      net = layer(net, end_points=end_points)  # end_points[<its scope>]: after its ReLU
    logits = tf.cast(tf.squeeze(net, axis=[1, 2]), tf.float32)  # [B, 1, 1, L] -> [B, L]
    end_points["logits"] = logits
    end_points["predictions"] = tf.sigmoid(logits)
    return logits, end_points

  def restore_backbone(self, checkpoint_path):
    """First-run restore: the backbone's variables (e.g. `resnet_v2_50/`) from a slim-format
    checkpoint, all but its ImageNet logits. run_utils.restore_backbone also takes train.py's."""
    return resnet_utils.restore_from_checkpoint(
        self.backbone.variables, checkpoint_path,
        exclude_scopes=(f"{self.config.backbone}/logits",))


def head_depth(config):
  """The channels of my_conv_1 and my_conv_2: ModelConfig.head_depth, or 0 = label_count."""
  return config.head_depth or config.label_count


# ---------------------------------------------------------------------------------------------
# Dead head units. The original's head squeezes 2048 features through label_count ReLUs, twice;
# with few labels, early Adam steps can push a unit's pre-activation below 0 for every input, and
# a ReLU that is never positive gets no gradient again: it is dead for good.

HEAD_RELUS = (f"{HEAD_SCOPE}/my_conv_1", f"{HEAD_SCOPE}/my_conv_2")


def head_activity(end_points):
  """{relu scope: [D] float32, 1 where the unit was positive somewhere in the batch, else 0}."""
  return {scope: tf.cast(tf.reduce_any(end_points[scope] > 0, axis=[0, 1, 2]), tf.float32)
          for scope in HEAD_RELUS}  # [B, h, w, D] -> [D]


def count_dead_units(activities):
  """Units never positive over a window of steps: [steps of {scope: [D]}] -> {scope: count}."""
  return {scope: int(np.sum(np.max(np.stack([a[scope] for a in activities]), axis=0) <= 0))
          for scope in HEAD_RELUS}


# ---------------------------------------------------------------------------------------------
# Loss.

LOSSES = ("sigmoid", "focal", "asymmetric")  # per_example_loss's kinds
UNKNOWN_LABEL_MODES = ("ignore", "negative")


def per_example_loss(logits, labels, kind="sigmoid", focal_gamma=2.0, gamma_neg=4.0,
                     gamma_pos=0.0, asl_clip=0.05, pos_weight=None, unknown_label="ignore"):
  """Classification loss per image, averaged over labels: [B, L] logits and labels -> [B].

  Labels are 0/1, or -1 for unknown (nobody annotated it), handled by unknown_label:
    ignore: an unknown entry adds 0 (the mean still divides by L; total_loss rescales the batch
      mean to the known entries);
    negative: an unknown entry is read as 0, the common baseline.
  kind:
    sigmoid: sigmoid cross-entropy, the original's loss.
    focal: (1 - p_t)^gamma * CE (Lin et al. 2017, "Focal Loss for Dense Object Detection").
    asymmetric: ASL (Ridnik et al. 2021, "Asymmetric Loss For Multi-Label Classification"):
      positives weighted by (1 - p)^gamma_pos, negatives use p_m = max(p - clip, 0) and are
      weighted by p_m^gamma_neg.
  pos_weight: None, or [L] weights of each label's positive term (-z log p becomes
    -w z log p; tf.nn.weighted_cross_entropy_with_logits for the sigmoid and focal losses).
  """
  if unknown_label not in UNKNOWN_LABEL_MODES:
    raise ValueError(f"unknown_label={unknown_label!r}: expected ignore or negative")
  logits = tf.cast(logits, tf.float32)
  labels = tf.cast(labels, tf.float32)
  known = labels >= 0
  labels = tf.maximum(labels, 0.0)  # -1 -> 0: a negative, or masked out below; 0/1 unchanged
  if pos_weight is not None:
    pos_weight = tf.convert_to_tensor(pos_weight, tf.float32)  # [L], broadcast over the batch
  if kind in ("sigmoid", "focal"):
    if pos_weight is None:
      ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
    else:
      ce = tf.nn.weighted_cross_entropy_with_logits(labels=labels, logits=logits,
                                                    pos_weight=pos_weight)
  if kind == "sigmoid":
    loss = ce
  elif kind == "focal":
    p = tf.sigmoid(logits)
    p_t = labels * p + (1 - labels) * (1 - p)
    loss = tf.pow(1 - p_t, focal_gamma) * ce
  elif kind == "asymmetric":
    p = tf.sigmoid(logits)
    p_neg = tf.maximum(p - asl_clip, 0.0) if asl_clip > 0 else p
    eps = 1e-8
    loss_pos = -tf.pow(1 - p, gamma_pos) * tf.math.log(tf.maximum(p, eps))
    loss_neg = -tf.pow(p_neg, gamma_neg) * tf.math.log(tf.maximum(1 - p_neg, eps))
    if pos_weight is not None:
      loss_pos = pos_weight * loss_pos
    loss = labels * loss_pos + (1 - labels) * loss_neg
  else:
    raise ValueError(f"loss={kind!r}: expected sigmoid, focal or asymmetric")
  if unknown_label == "ignore":
    loss = tf.where(known, loss, tf.zeros_like(loss))  # no loss, and no gradient, from -1
  return tf.reduce_mean(loss, axis=-1)


def count_known(labels):
  """The number of entries of a [B, L] label batch that are not -1 (unknown), float32."""
  return tf.reduce_sum(tf.cast(tf.cast(labels, tf.float32) >= 0, tf.float32))


def l2_loss(weights, weight_decay):
  """weight_decay * sum(w^2) / 2 over the regularized weights (slim's l2_regularizer)."""
  if not weights or weight_decay == 0:
    return tf.constant(0.0)
  return weight_decay * tf.add_n([tf.nn.l2_loss(w) for w in weights])


def total_loss(model, logits, labels, global_batch_size=None, known_entries=None, **loss_options):
  """(total, classification, regularization) for one (replica's) batch.

  The classification term is the mean over batch x labels, the original's. With
  unknown_label=ignore (the default) it is the mean over the known entries instead: the batch
  mean times entries / known entries, a factor of exactly 1.0 when no label is -1, so 0/1 data
  gives exactly the plain mean. Under tf.distribute it is averaged over the global batch
  (compute_average_loss) and the regularization is split per replica, so that the gradients
  summed over replicas equal one big batch's; then `known_entries` must be the known entries of
  the global batch (train.py sums them over the replicas). Without it the known fraction of
  `labels` itself is used, which is right for one replica.
  """
  per_example = per_example_loss(logits, labels, **loss_options)
  classification = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)
  if loss_options.get("unknown_label", "ignore") == "ignore":
    batch, label_count = tf.shape(labels)[0], tf.shape(labels)[1]
    if known_entries is None:
      entries, known = batch * label_count, count_known(labels)
    else:
      entries, known = (global_batch_size or batch) * label_count, known_entries
    # a batch with no known entry at all has nothing to learn from: loss 0, not 0/0
    classification = classification * tf.math.divide_no_nan(tf.cast(entries, tf.float32), known)
  regularization = tf.nn.scale_regularization_loss(
      l2_loss(model.regularized_weights, model.config.weight_decay))
  return classification + regularization, classification, regularization


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

  The crops decode only their window of the JPEG (train_crop_window).
  """
  kind, target = config.augmentation, (config.target_height, config.target_width)
  if kind == "none":
    return preprocess_eval(image_data, config)
  if kind == "flip":
    image = tf.io.decode_image(image_data, channels=3, expand_animations=False)
    image = tf.image.resize(_to_unit_range(image), target)
  elif kind in ("seed", "crop_flip", "randaugment"):
    window = train_crop_window(tf.io.extract_jpeg_shape(image_data),
                               (config.resize_height, config.resize_width), target)
    image = tf.io.decode_and_crop_jpeg(image_data, window, channels=3)
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


def score_ten_crops(model, crops, aggregation):
  """[B, V, h, w, 3] views (10 crops, or the one plain view) -> [B, L] sigmoid scores combined
  over the V views by mean or max.

  The one place `aggregation` is checked: a tf.function that calls this raises the ConfigError
  when it is traced, before it scores anything.
  """
  if aggregation not in ("mean", "max"):
    raise errors.ConfigError(f"aggregation={aggregation!r}: expected mean or max")
  views, height, width = crops.shape[1], crops.shape[2], crops.shape[3]
  flat = tf.reshape(crops, [-1, height, width, 3])  # [B, V, h, w, 3] -> [B*V, h, w, 3]
  _, end_points = model(flat, training=False)
  per_crop = tf.reshape(end_points["predictions"],
                        [tf.shape(crops)[0], views, model.config.label_count])  # [B, V, L]
  reduce = tf.reduce_mean if aggregation == "mean" else tf.reduce_max
  return reduce(per_crop, axis=1)


TEN_CROP_RESIZE_RATIO = 290 / 224  # the original resized to 290 before cutting 224 crops


def ten_crop_resize(resize_hw, target_hw):
  """The (height, width) an image is resized to before its 10 crops of target_hw.

  A side given as 0 follows the model: the original's 290/224 ratio applied to the trained
  target side, so 290 for a 224 model and 83 for a 64 one. A side given explicitly wins, but
  one smaller than the target's is a ConfigError: the crops would not fit.
  """
  resize = tuple(side or round(target * TEN_CROP_RESIZE_RATIO)
                 for side, target in zip(resize_hw, target_hw))
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
                  service=None):
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
  ds = ds.batch(config.batch_size, drop_remainder=training)
  if device:
    return ds.apply(tf.data.experimental.prefetch_to_device(device))
  return ds.prefetch(tf.data.AUTOTUNE)
