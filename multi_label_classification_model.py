"""The multi-label model and its loss.

    backbone: resnet_v2_50, global_pool=False, no logits   [B, H/32, W/32, 2048]
    my_sub_network/my_conv_1: 1x1, D, ReLU                   [B, H/32, W/32, D]
    my_sub_network/my_conv_2: 1x1, D, ReLU                   [B, H/32, W/32, D]
    my_sub_network/my_conv_3: k x k VALID, linear (k = H/32) [B, 1, 1, L]
    squeeze -> logits [B, L] -> sigmoid

This is the original toolkit's network (a ResNet-50 v2 endpoint followed by three convolutions),
with TF-Slim's variable names so that its checkpoints and the official `resnet_v2_50.ckpt` restore
by name. D is `head_depth`, by default (0) the label count L as in the original; the backbone may
be ResNet-101/152/200 v2 (`backbone`), under slim's scope for each. The images it takes come from
preprocessing.py (training, evaluation and the test-time views, in tf.data); scoring.py combines
its scores over the views.
"""


import numpy as np
import tensorflow as tf

import errors
import resnet_utils
import resnet_v2

HEAD_SCOPE = "my_sub_network"
# ModelConfig.backbone -> the slim builder; the name is also the variables' scope, as in slim.
BACKBONES = {"resnet_v2_50": resnet_v2.resnet_v2_50, "resnet_v2_101": resnet_v2.resnet_v2_101,
             "resnet_v2_152": resnet_v2.resnet_v2_152, "resnet_v2_200": resnet_v2.resnet_v2_200}
FEATURE_DEPTH = 2048  # the depth of every slim ResNet v2's last block

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
