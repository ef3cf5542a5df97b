"""ResNet v2 (pre-activation) in plain TF2, with TF-Slim's variable names and end_points.

Re-creates tf_slim/nets/resnet_v2.py so that slim's checkpoints (the official
resnet_v2_50_2017_04_14.tar.gz -> resnet_v2_50.ckpt) restore by name and compute what they computed
under slim; tests/test_resnet_v2.py checks it against slim's own outputs.

[1] K. He, X. Zhang, S. Ren, J. Sun. "Deep Residual Learning for Image Recognition". CVPR 2016,
    arXiv:1512.03385.
[2] K. He, X. Zhang, S. Ren, J. Sun. "Identity Mappings in Deep Residual Networks". ECCV 2016,
    arXiv:1603.05027. The v2 unit puts batch norm + ReLU before every weight layer.

Deviation from slim: end_points["predictions"] is a sigmoid, not a softmax (we are multi-label).
From the later tensorflow/models slim: `spatial_squeeze`, end_points "global_pool" and
"<scope>/spatial_squeeze".

    net = resnet_v2.resnet_v2_50(global_pool=False)  # [B, 224, 224, 3] -> [B, 7, 7, 2048]
    resnet_utils.restore_from_checkpoint(net.variables, "resnet_v2_50.ckpt")
    features, end_points = net(images, training=False)

  python -c "import resnet_v2; print(len(resnet_v2.resnet_v2_50(num_classes=1001).variables))"
"""
import dataclasses

import tensorflow as tf

from resnet_utils import (DEFAULTS, BatchNorm, Block, Conv2D, conv2d_same, stack_blocks_dense,
                          subsample)


class Bottleneck(tf.Module):
  """Slim's `bottleneck`: the full pre-activation bottleneck unit of [2], Fig. 1(b).

  preact = relu(BN(x)). shortcut = x subsampled by `stride` when depth_in == depth, else a 1x1
  stride-`stride` conv of preact (biases, no BN). residual: conv1 1x1 and conv2 3x3 (stride,
  atrous `rate`, conv2d_same), each with BN + ReLU, then conv3 1x1 with biases and nothing after.
  Output shortcut + residual: [B, H, W, depth_in] -> [B, ceil(H / stride), ceil(W / stride), depth],
  all under "<scope>/bottleneck_v2".
  """

  def __init__(self, scope, depth_in, depth, depth_bottleneck, stride, rate=1, **layer_kw):
    super().__init__()
    s = self.scope = f"{scope}/bottleneck_v2"
    self.stride = stride
    linear = dict(batch_norm=False, activation=None, **layer_kw)
    self.preact = BatchNorm(f"{s}/preact", depth_in, tf.nn.relu, **layer_kw)
    self.shortcut = (None if depth == depth_in else
                     Conv2D(f"{s}/shortcut", 1, depth_in, depth, stride, **linear))
    self.conv1 = Conv2D(f"{s}/conv1", 1, depth_in, depth_bottleneck, **layer_kw)
    self.conv2 = conv2d_same(f"{s}/conv2", 3, depth_bottleneck, depth_bottleneck, stride, rate,
                             **layer_kw)
    self.conv3 = Conv2D(f"{s}/conv3", 1, depth_bottleneck, depth, **linear)

  def __call__(self, x, training=False, end_points=None):
    preact = self.preact(x, training)
    if self.shortcut is None:
      shortcut = subsample(x, self.stride)  # of the raw input, not of preact, as slim
    else:
      shortcut = self.shortcut(preact, training, end_points)
    residual = self.conv1(preact, training, end_points)
    residual = self.conv2(residual, training, end_points)
    residual = self.conv3(residual, training, end_points)
    output = shortcut + residual
    if end_points is not None:
      end_points[self.scope] = output
    return output


def resnet_v2_block(scope, base_depth, num_units, stride):
  """A Block of `num_units` bottlenecks of depth 4 * base_depth; `stride` is on the LAST unit."""
  unit = {"depth": base_depth * 4, "depth_bottleneck": base_depth, "stride": 1}
  return Block(scope, Bottleneck, [unit] * (num_units - 1) + [dict(unit, stride=stride)])


class ResNetV2(tf.Module):
  """The network `resnet_v2()` builds (see there); call it as `net(images, training=False)`."""

  def __init__(self, blocks, num_classes, global_pool, output_stride, include_root_block,
               spatial_squeeze, scope, trainable, defaults, input_depth):
    super().__init__()
    kw = dict(trainable=trainable, defaults=defaults)
    self.scope, self.global_pool, self.spatial_squeeze = scope, global_pool, spatial_squeeze
    self.trainable, self.pool = trainable, (defaults.pool_size, defaults.pool_stride)
    self.conv1, depth, stack_stride = None, input_depth, output_stride
    if include_root_block:
      if output_stride is not None:
        if output_stride % 4 != 0:
          raise ValueError(f"output_stride {output_stride}: must be a multiple of 4")
        stack_stride = output_stride // 4  # conv1 and pool1 already stride by 4
      # No batch norm or activation on conv1: the first unit's preact does both ([2], appendix).
      self.conv1 = conv2d_same(f"{scope}/conv1", 7, depth, 64, 2, batch_norm=False,
                               activation=None, **kw)
      depth = 64
    try:
      self.blocks = stack_blocks_dense(blocks, depth, stack_stride, scope, **kw)
    except ValueError as e:
      raise ValueError(f"{scope}: output_stride {output_stride} ({stack_stride} after the root "
                       f"block): {e}") from e
    depth = blocks[-1].args[-1]["depth"]
    # The v2 unit's output has no BN/ReLU, so the stack gets them at its end ([2], appendix).
    self.postnorm = BatchNorm(f"{scope}/postnorm", depth, tf.nn.relu, **kw)
    self.logits = None if num_classes is None else Conv2D(
        f"{scope}/logits", 1, depth, num_classes, batch_norm=False, activation=None, **kw)

  @property
  def regularized_weights(self):
    """The conv `weights` that slim's l2 regularizer covered (not biases, not batch norm),
    trainable or not."""
    return [m.weights for m in self.submodules if isinstance(m, Conv2D)]

  def __call__(self, images, training=False):
    """[B, H, W, C] images (float32, or bfloat16/float16 to compute in it) -> (net, end_points).

    net: [B, H / s, W / s, depth] features after postnorm (s: output_stride, or nominally 32);
      [B, 1, 1, depth] with global_pool; with num_classes the logits, [B, 1, 1, num_classes],
      squeezed to [B, num_classes] with spatial_squeeze.
    end_points: slim's names -> tensors: every conv ("<scope>/conv1", ".../bottleneck_v2/conv1",
      projection ".../shortcut"s, "<scope>/logits"), unit (".../unit_1/bottleneck_v2") and block
      ("<scope>/block1"); when present "global_pool", "<scope>/spatial_squeeze" and
      "predictions" (the sigmoid of the logits).
    training: Python bool or bool tensor; True normalises with batch statistics and updates the
      moving ones.
    """
    end_points, x = {}, images
    if self.conv1 is not None:
      x = self.conv1(x, training, end_points)
      x = tf.nn.max_pool2d(x, self.pool[0], self.pool[1], "SAME")
    for block_scope, units in self.blocks:
      for unit in units:
        x = unit(x, training, end_points)
      end_points[block_scope] = x
    x = self.postnorm(x, training)
    if self.global_pool:
      x = tf.reduce_mean(x, [1, 2], keepdims=True)  # [B, 1, 1, depth]
      end_points["global_pool"] = x
    if self.logits is not None:
      x = self.logits(x, training, end_points)  # end_points["<scope>/logits"]: [B, 1, 1, classes]
      if self.spatial_squeeze:
        x = tf.squeeze(x, [1, 2])  # [B, classes]
        end_points[f"{self.scope}/spatial_squeeze"] = x
      end_points["predictions"] = tf.sigmoid(x)
    return x, end_points


def resnet_v2(blocks, num_classes=None, global_pool=True, output_stride=None,
              include_root_block=True, spatial_squeeze=True, scope="resnet_v2", trainable=True,
              batch_norm_decay=DEFAULTS.batch_norm_decay,
              batch_norm_epsilon=DEFAULTS.batch_norm_epsilon, input_depth=3):
  """Builds a v2 (pre-activation) ResNet as slim's resnet_v2() does; its variables exist now.

  At 224x224 the ResNets of [1, 2] end in 7x7 features (nominal stride 32). For dense prediction
  use global_pool=False and e.g. output_stride=16 (atrous); inputs of size 32k + 1 then give
  features aligned with the image corners.

  Args:
    blocks: list of `resnet_utils.Block`s, e.g. from `resnet_v2_block`.
    num_classes: None returns the features; else a 1x1 "<scope>/logits" conv (with biases) follows.
    global_pool: average the features over space (keepdims) before the logits.
    output_stride: None for the nominal stride, else the input / output resolution ratio.
    include_root_block: start with conv1 (7x7/2, biases, no BN/activation) and pool1 (3x3/2 max);
      without it, `images` must already be such activations, with `input_depth` channels.
    spatial_squeeze: squeeze the logits [B, 1, 1, C] to [B, C].
    scope: the variables' name prefix.
    trainable: False makes every variable non-trainable (moving statistics never are).
    batch_norm_decay, batch_norm_epsilon: override slim's 0.997 and 1e-5.
    input_depth: channels of `images`.
  Returns:
    A `ResNetV2` module: `net(images, training=False)` -> (net, end_points); `net.variables`,
    `net.regularized_weights`, `net.trainable`.
  Raises:
    ValueError: if output_stride is not a multiple of 4, or cannot be reached.
  """
  defaults = dataclasses.replace(DEFAULTS, batch_norm_decay=batch_norm_decay,
                                 batch_norm_epsilon=batch_norm_epsilon)
  return ResNetV2(blocks, num_classes, global_pool, output_stride, include_root_block,
                  spatial_squeeze, scope, trainable, defaults, input_depth)


# Slim's blocks, as (base_depth, stride) per block and units per block for each depth.
BLOCKS = [("block1", 64, 2), ("block2", 128, 2), ("block3", 256, 2), ("block4", 512, 1)]
UNITS = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3], 200: [3, 24, 36, 3]}


def resnet_v2_blocks(layers):
  """Slim's four blocks of ResNet-`layers` v2 (50, 101, 152 or 200)."""
  if layers not in UNITS:
    raise ValueError(f"layers={layers}: slim's ResNet v2 has {sorted(UNITS)}")
  return [resnet_v2_block(scope, base_depth, units, stride)
          for (scope, base_depth, stride), units in zip(BLOCKS, UNITS[layers])]


def resnet_v2_50(*, scope="resnet_v2_50", **kwargs):
  """ResNet-50 v2 ([1] depth, [2] units); keyword arguments as resnet_v2()."""
  return resnet_v2(resnet_v2_blocks(50), scope=scope, **kwargs)


def resnet_v2_101(*, scope="resnet_v2_101", **kwargs):
  """ResNet-101 v2; keyword arguments as resnet_v2()."""
  return resnet_v2(resnet_v2_blocks(101), scope=scope, **kwargs)


def resnet_v2_152(*, scope="resnet_v2_152", **kwargs):
  """ResNet-152 v2; keyword arguments as resnet_v2()."""
  return resnet_v2(resnet_v2_blocks(152), scope=scope, **kwargs)


def resnet_v2_200(*, scope="resnet_v2_200", **kwargs):
  """ResNet-200 v2 ([2]); keyword arguments as resnet_v2()."""
  return resnet_v2(resnet_v2_blocks(200), scope=scope, **kwargs)
