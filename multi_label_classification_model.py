"""The multi-label model, and rebuilding it from a trained run.

    backbone: resnet_v2_50, global_pool=False, no logits   [B, H/32, W/32, 2048]
    my_sub_network/my_conv_1: 1x1, D, ReLU                   [B, H/32, W/32, D]
    my_sub_network/my_conv_2: 1x1, D, ReLU                   [B, H/32, W/32, D]
    my_sub_network/my_conv_3: k x k VALID, linear (k = H/32) [B, 1, 1, L]
    squeeze -> logits [B, L] -> sigmoid

This is the original toolkit's network (a ResNet-50 v2 endpoint followed by three convolutions),
with TF-Slim's variable names so that its checkpoints and the official `resnet_v2_50.ckpt` restore
by name. D is `head_depth`, by default (0) the label count L as in the original; the backbone may
be ResNet-101/152/200 v2 (`backbone`), under slim's scope for each. The images it takes come from
multilabel/data/preprocessing.py (training, evaluation and the test-time views, in tf.data);
multilabel/serving.py combines its scores over the views; its loss is multilabel/training/losses.py.
"""

import os

import tensorflow as tf

import configs
import resnet_utils
import resnet_v2
from multilabel import checkpoints, config_files, errors, settings

HEAD_SCOPE = "my_sub_network"
# ModelConfig.backbone -> the slim builder; the name is also the variables' scope, as in slim.
BACKBONES = {name: getattr(resnet_v2, name) for name in configs.BACKBONES}
# The head's ReLUs. The original's head squeezes 2048 features through label_count ReLUs, twice;
# with few labels, early Adam steps can push a unit's pre-activation below 0 for every input, and
# a ReLU that is never positive gets no gradient again: it is dead for good.
HEAD_RELUS = (f"{HEAD_SCOPE}/my_conv_1", f"{HEAD_SCOPE}/my_conv_2")
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
    settings.check_values(config)  # the flags' ranges and choices, then label_count and sizes
    config.check()
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

  @staticmethod
  def head_activity(end_points):
    """{relu scope: [D] float32, 1 where the unit was positive somewhere in the batch, else 0},
    for my_conv_1 and my_conv_2: the dead-unit watch (multilabel/training/train_step.py)."""
    return {scope: tf.cast(tf.reduce_any(end_points[scope] > 0, axis=[0, 1, 2]), tf.float32)
            for scope in HEAD_RELUS}  # [B, h, w, D] -> [D]

  def restore_backbone(self, checkpoint_path):
    """First-run restore: the backbone's variables (e.g. `resnet_v2_50/`) from a slim-format
    checkpoint, all but its ImageNet logits. restore_backbone() also takes train.py's."""
    return resnet_utils.restore_from_checkpoint(
        self.backbone.variables, checkpoint_path,
        exclude_scopes=(f"{self.config.backbone}/logits",))


def head_depth(config):
  """The channels of my_conv_1 and my_conv_2: ModelConfig.head_depth, or 0 = label_count."""
  return config.head_depth or config.label_count


# ---------------------------------------------------------------------------------------------
# A trained model, rebuilt from its train dir.

def load_model_config(train_dir):
  """The ModelConfig a run saved in <train_dir>/config.json (a train dir, or a best/ copy)."""
  return config_files.load_config(os.path.join(train_dir, config_files.TRAIN_CONFIG_FILE),
                              configs.ModelConfig)


def load_trained_model(checkpoint_path, use_ema=True):
  """Rebuilds the model from a train dir's saved config and restores a checkpoint into it.

  Returns (model, model_config, checkpoint prefix, global step). A damaged checkpoint is one
  BadCheckpoint line naming it.
  """
  prefix, train_dir = checkpoints.resolve_checkpoint(checkpoint_path)
  model_config = load_model_config(train_dir)
  model = MultiLabelClassificationModel(model_config)
  try:
    step = checkpoints.restore_model(model, prefix, use_ema)
  except checkpoints.DAMAGE_ERRORS as e:
    raise checkpoints.checkpoint_damage(prefix, e, checkpoints.use_earlier(prefix)) from None
  return model, model_config, prefix, step


def restore_backbone(model, path):
  """A first run's backbone weights from `path`; returns a line saying what was restored.

  `path` is a slim-format checkpoint (the official resnet_v2_50.ckpt, a prefix or its folder), or
  a run of ours: a train dir (its latest checkpoint), an eval best/ dir, or a train.py checkpoint
  prefix. From a run of ours only the backbone is taken, with the moving average of the weights
  when that run kept one (what evaluate.py scored), whatever its label_count and head_depth: "my
  12 tags from the backbone I trained on COCO". The head keeps its fresh initial weights.
  """
  prefix = tf.train.latest_checkpoint(path) if os.path.isdir(path) else path
  if prefix is None or not checkpoints.is_training_checkpoint(prefix):
    result = model.restore_backbone(path)
    return (f"restored the backbone from {path}: {len(result.unused)} checkpoint tensors unused, "
            f"{len(result.unrestored)} variables not in it")
  source, source_config, prefix, step = load_trained_model(path)
  if source_config.backbone != model.config.backbone:
    raise errors.ConfigError(f"base_network_checkpoint={path!r} is a {source_config.backbone} "
                             f"run; this model's backbone is {model.config.backbone} (set "
                             "--backbone to match)")
  by_name = {v.name: v for v in source.backbone.variables}
  for v in model.backbone.variables:  # same builder, same scope: the same names and shapes
    v.assign(by_name[v.name])
  averaged = checkpoints.has_ema(prefix) and source_config.train_base_network  # else only its head was averaged
  weights = "its moving-average weights" if averaged else "its weights"
  return (f"restored the backbone ({len(by_name)} {source_config.backbone} variables, {weights}) "
          f"from {prefix}, step {step} of a run with {source_config.label_count} labels; the "
          f"head ({HEAD_SCOPE}, {model.config.label_count} labels) starts fresh")
