"""Building blocks of TF-Slim's ResNets in plain TF2 (tf.Module; no Keras, no tf-slim).

Re-creates tf_slim/nets/resnet_utils.py: `Block`, `conv2d_same`, `subsample`, `stack_blocks_dense`
(atrous `output_stride`), plus the layers slim's ResNet is made of (`Conv2D`, `BatchNorm`), slim's
arg-scope defaults in ONE place (`LayerDefaults`), slim's initializers, and
`restore_from_checkpoint` for slim/TF1 name-based checkpoints such as `resnet_v2_50.ckpt`.
Conv2D's stride-1 convolutions take their gradients from conv_gradients.py (faster on a CPU).
It is one file (~320 lines), as slim's resnet_utils.py is, with the few slim layers it builds on.

Variables are float32, created at construction (so `module.variables` is complete before the first
call) and named exactly as slim names them: `v.name` without ':0' is e.g.
'resnet_v2_50/block1/unit_1/bottleneck_v2/conv1/BatchNorm/gamma'. Layers cast their variables to
the input's dtype when called: feed bfloat16/float16 images and the whole net computes in it.

  python -c "import resnet_utils; print(resnet_utils.DEFAULTS)"
  python -c "import resnet_utils as u, resnet_v2 as r; \
    u.restore_from_checkpoint(r.resnet_v2_50(num_classes=1001).variables, 'resnet_v2_50.ckpt')"
"""
import collections
import dataclasses
import math
import os

import tensorflow as tf

from multilabel.conv_gradients import conv2d_stride1


@dataclasses.dataclass(frozen=True)
class LayerDefaults:
  """Slim's ResNet arg scope (resnet_utils.resnet_arg_scope): the one place these values live."""
  batch_norm_decay: float = 0.997  # moving averages: v <- decay * v + (1 - decay) * batch_stat
  batch_norm_epsilon: float = 1e-5  # added to the variance before the rsqrt
  batch_norm_scale: bool = True  # learn gamma (slim: scale=True)
  init_factor: float = 2.0  # He init: variance_scaling_initializer(2.0, "FAN_IN", uniform=False)
  pool_size: int = 3  # root max pool: 3x3 ...
  pool_stride: int = 2  # ... stride 2, SAME padding


DEFAULTS = LayerDefaults()

# Slim's Block: `unit_fn(scope, depth_in, rate=..., **layer_kw, **args[i])` builds unit i of the
# block, a module called as `unit(x, training, end_points)`; `args` holds one dict per unit,
# e.g. [{"depth": 256, "depth_bottleneck": 64, "stride": 1}, ...].
Block = collections.namedtuple("Block", ["scope", "unit_fn", "args"])


def variance_scaling_initializer(factor=2.0, mode="FAN_IN", uniform=False):
  """slim.variance_scaling_initializer: a function shape -> tensor, variance ~ factor / n.

  n is fan_in (kh * kw * depth_in), fan_out (kh * kw * depth) or their mean (FAN_AVG). Uniform:
  U(-sqrt(3 factor / n), +sqrt(3 factor / n)). Else a normal truncated at 2 sigma with
  sigma = sqrt(1.3 factor / n); the 1.3 brings the truncated std to about sqrt(factor / n).
  """
  def init(shape):
    fan_in, fan_out = math.prod(shape[:-1]), math.prod(shape[:-2]) * shape[-1]
    if mode == "FAN_IN":
      n = fan_in
    elif mode == "FAN_OUT":
      n = fan_out
    elif mode == "FAN_AVG":
      n = (fan_in + fan_out) / 2
    else:
      raise ValueError(f"mode={mode!r}: expected FAN_IN, FAN_OUT or FAN_AVG")
    if uniform:
      limit = math.sqrt(3 * factor / n)
      return tf.random.uniform(shape, -limit, limit)
    return tf.random.truncated_normal(shape, stddev=math.sqrt(1.3 * factor / n))
  return init


def xavier_initializer():
  """slim.xavier_initializer (Glorot & Bengio 2010): U(-sqrt(6 / (fan_in + fan_out)), +...)."""
  return variance_scaling_initializer(1.0, "FAN_AVG", uniform=True)


def new_variable(name, initial_value, trainable, **variable_kw):
  """A float32 tf.Variable whose name is exactly `name` (slim's full name)."""
  v = tf.Variable(initial_value, name=name, trainable=trainable, dtype=tf.float32, **variable_kw)
  if v.name != name + ":0":  # an enclosing tf.name_scope prefixed it: checkpoints would not match
    raise ValueError(f"variable {name!r} came out named {v.name!r}: build the network outside any "
                     "tf.name_scope (e.g. not under `with module.name_scope:`)")
  return v


class BatchNorm(tf.Module):
  """slim.batch_norm, fused, NHWC: `<scope>/{beta, gamma, moving_mean, moving_variance}`.

  training=True normalises with the batch statistics and moves the moving averages by slim's
  decay (toward the op's n/(n-1)-corrected batch variance, as slim's fused path did);
  training=False uses the moving statistics. `training`: a Python bool or a bool tensor.
  """

  def __init__(self, scope, depth, activation=None, trainable=True, defaults=DEFAULTS):
    super().__init__()
    self.beta = new_variable(f"{scope}/beta", tf.zeros([depth]), trainable)
    self.gamma = (new_variable(f"{scope}/gamma", tf.ones([depth]), trainable)
                  if defaults.batch_norm_scale else None)
    # Under tf.distribute each replica updates its own moving statistics, read as their mean.
    moving = dict(synchronization=tf.VariableSynchronization.ON_READ,
                  aggregation=tf.VariableAggregation.MEAN)
    self.moving_mean = new_variable(f"{scope}/moving_mean", tf.zeros([depth]), False, **moving)
    self.moving_variance = new_variable(f"{scope}/moving_variance", tf.ones([depth]), False,
                                        **moving)
    self.activation, self.decay = activation, defaults.batch_norm_decay
    # cuDNN rejects epsilon < 1e-5; TF's fused_batch_norm wrapper, which slim called, clamps so.
    self.epsilon = max(defaults.batch_norm_epsilon, 1.001e-5)

  def _fused(self, x, mean, variance, training):
    # Half-precision x takes float32 scale/offset/mean/variance; y comes back in x's dtype.
    scale = self.gamma if self.gamma is not None else tf.ones_like(self.beta)
    return tf.raw_ops.FusedBatchNormV3(
        x=x, scale=scale, offset=self.beta, mean=mean, variance=variance, epsilon=self.epsilon,
        is_training=training, data_format="NHWC")

  def _train(self, x):
    empty = tf.constant([], tf.float32)
    r = self._fused(x, empty, empty, True)
    # slim's assign_moving_average: v -= (1 - decay) * (v - batch_stat)
    self.moving_mean.assign_sub((1 - self.decay) * (self.moving_mean - r.batch_mean))
    self.moving_variance.assign_sub((1 - self.decay) * (self.moving_variance - r.batch_variance))
    return r.y

  def _infer(self, x):
    return self._fused(x, self.moving_mean, self.moving_variance, False).y

  def __call__(self, x, training=False):
    """x: [batch, height, width, depth] -> the same shape and dtype."""
    if isinstance(training, bool):
      y = self._train(x) if training else self._infer(x)
    else:
      y = tf.cond(training, lambda: self._train(x), lambda: self._infer(x))
    return y if self.activation is None else self.activation(y)


class Conv2D(tf.Module):
  """slim.conv2d in ResNet's arg scope: `<scope>/weights` [kh, kw, depth_in, depth], then either
  batch norm (`<scope>/BatchNorm/...`, no biases) or `<scope>/biases`, then `activation`.

  kernel: k or (kh, kw). padding: "SAME", "VALID", or [beg, end] explicit zero padding of both
  spatial dims followed by VALID (conv2d_same). initializer: shape -> tensor; None is slim's He
  init (variance_scaling_initializer(defaults.init_factor)). Calling with an `end_points` dict
  records the output under `scope`, as slim's outputs_collections did.
  """

  def __init__(self, scope, kernel, depth_in, depth, stride=1, rate=1, padding="SAME",
               batch_norm=True, activation=tf.nn.relu, initializer=None, trainable=True,
               defaults=DEFAULTS):
    super().__init__()
    self.scope, self.stride, self.rate, self.padding = scope, stride, rate, padding
    self.activation = activation
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    init = initializer or variance_scaling_initializer(defaults.init_factor)
    self.weights = new_variable(f"{scope}/weights", init([kh, kw, depth_in, depth]), trainable)
    self.biases = None if batch_norm else new_variable(f"{scope}/biases", tf.zeros([depth]),
                                                       trainable)
    self.batch_norm = (BatchNorm(f"{scope}/BatchNorm", depth, None, trainable, defaults)
                       if batch_norm else None)

  def __call__(self, x, training=False, end_points=None):
    """x: [batch, height, width, depth_in] -> [batch, height', width', depth], x's dtype."""
    padding = self.padding
    if not isinstance(padding, str):
      x = tf.pad(x, [[0, 0], padding, padding, [0, 0]])
      padding = "VALID"
    w = tf.cast(self.weights, x.dtype)
    kh, kw = w.shape[:2]
    if self.stride == 1 and kh % 2 and kw % 2 and (padding == "SAME" or kh == kw == 1):
      x = conv2d_stride1(x, w, self.rate)  # 1x1 VALID is SAME
    else:
      x = tf.nn.conv2d(x, w, self.stride, padding, dilations=self.rate)
    if self.batch_norm is not None:
      x = self.batch_norm(x, training)
    else:
      x = tf.nn.bias_add(x, tf.cast(self.biases, x.dtype))
    if self.activation is not None:
      x = self.activation(x)
    if end_points is not None:
      end_points[self.scope] = x
    return x


def conv2d_same(scope, kernel, depth_in, depth, stride, rate=1, **layer_kw):
  """slim's conv2d_same: a k x k Conv2D whose padding does not depend on the input size.

  stride 1: "SAME". stride > 1: zero-pad by k_eff - 1 in all, k_eff = k + (k - 1)(rate - 1), the
  smaller half before, then "VALID". Output pixel i is then centred on input pixel stride * i for
  even and odd input sizes alike, which TF's SAME padding does not guarantee.
  """
  if stride == 1:
    return Conv2D(scope, kernel, depth_in, depth, 1, rate, "SAME", **layer_kw)
  pad_total = kernel + (kernel - 1) * (rate - 1) - 1
  padding = [pad_total // 2, pad_total - pad_total // 2]
  return Conv2D(scope, kernel, depth_in, depth, stride, rate, padding, **layer_kw)


def subsample(x, factor):
  """slim's subsample: [B, H, W, C] -> [B, ceil(H / f), ceil(W / f), C], every factor-th pixel
  from the first, by slim's own 1x1 max pool with stride `factor`.

  Its gradient scatters dy back into zeros with one pad; TF's MaxPoolGrad, like the gradient of
  x[:, ::f, ::f], is 1.5-3x slower on the CPU."""
  if factor == 1:
    return x

  @tf.custom_gradient
  def pick(x):
    def grad(dy):
      n, h, w = tf.shape(x)[0], tf.shape(x)[1], tf.shape(x)[2]
      h_out, w_out, c = tf.shape(dy)[1], tf.shape(dy)[2], x.shape[3]
      dx = tf.pad(tf.reshape(dy, [n * h_out, 1, w_out, c]),  # [B*h', 1, w', C] ...
                  [[0, 0], [0, factor - 1], [0, 0], [0, (factor - 1) * c]])  # ... [B*h', f, w', fC]
      dx = tf.reshape(dx, [n, h_out * factor, w_out * factor, c])  # dy[b, i, j] at [fi, fj]
      if x.shape[1] is not None and x.shape[2] is not None and not (
          x.shape[1] % factor or x.shape[2] % factor):
        return dx
      return dx[:, :h, :w, :]  # ceil rounded up: drop the rows and columns past the input
    return tf.nn.max_pool2d(x, 1, factor, "SAME"), grad
  return pick(x)


def stack_blocks_dense(blocks, depth_in, output_stride=None, scope="", **layer_kw):
  """Builds the units of `blocks` as slim's stack_blocks_dense lays them out.

  With `output_stride` set, once the running stride reaches it every later unit gets stride 1
  and an atrous rate equal to the product of the strides it skipped (Chen et al. 2016,
  "DeepLab", arXiv:1606.00915), so the features stay at input_size / output_stride.

  Args:
    blocks: list of `Block`s.
    depth_in: channels of the tensor fed to the first unit.
    output_stride: None (nominal stride), or the wanted stride relative to this stack's input.
    scope: the network's scope; units are named "<scope>/<block.scope>/unit_<i>".
    **layer_kw: trainable, defaults; passed to every unit.
  Returns:
    [(block scope, [unit modules])]: run the units in order; a block's end_point is its last
    unit's output.
  Raises:
    ValueError: if `output_stride` cannot be reached.
  """
  current_stride, rate, stacked = 1, 1, []
  for block in blocks:
    units = []
    for i, unit in enumerate(block.args):
      if output_stride is not None and current_stride > output_stride:
        raise ValueError(f"output_stride {output_stride} cannot be reached: the stride is "
                         f"already {current_stride}")
      name = f"{scope}/{block.scope}/unit_{i + 1}"
      if output_stride is not None and current_stride == output_stride:
        units.append(block.unit_fn(name, depth_in, rate=rate, **dict(unit, stride=1), **layer_kw))
        rate *= unit.get("stride", 1)
      else:
        units.append(block.unit_fn(name, depth_in, rate=1, **unit, **layer_kw))
        current_stride *= unit.get("stride", 1)
      depth_in = unit["depth"]
    stacked.append((f"{scope}/{block.scope}", units))
  if output_stride is not None and current_stride != output_stride:
    raise ValueError(f"output_stride {output_stride} cannot be reached: the blocks stride by "
                     f"{current_stride}")
  return stacked


RestoreResult = collections.namedtuple("RestoreResult", ["unrestored", "unused"])


def restore_from_checkpoint(variables, checkpoint_path, exclude_scopes=(), name_fn=None):
  """Assigns a name-based (slim / TF1, V2 format) checkpoint into tf.Variables, by name.

  Args:
    variables: tf.Variables; each is looked up under its name without ":0".
    checkpoint_path: a checkpoint prefix (".../resnet_v2_50.ckpt") or a directory (its latest).
    exclude_scopes: skip variables named `s` or under `s/` for each s, e.g.
      ("resnet_v2_50/logits",) to fine-tune with a new head.
    name_fn: optional map from a variable name to its checkpoint key.
  Returns:
    RestoreResult(unrestored, unused): sorted names of the variables (excluded ones aside) that
    the checkpoint lacks, and of the checkpoint tensors no variable took. A summary is printed.
  Raises:
    FileNotFoundError: no checkpoint at `checkpoint_path`.
    ValueError: a shape differs (then nothing is assigned), or no variable matched at all.
  """
  path = checkpoint_path = os.fspath(checkpoint_path)
  if tf.io.gfile.isdir(path):
    path = tf.train.latest_checkpoint(path)
    if path is None:
      raise FileNotFoundError(f"no checkpoint in directory {checkpoint_path} (no 'checkpoint' "
                              "file naming one)")
  if not tf.io.gfile.exists(f"{path}.index"):
    raise FileNotFoundError(f"checkpoint {path} not found (no {path}.index)")
  reader = tf.train.load_checkpoint(path)
  shapes = reader.get_variable_to_shape_map()
  scopes = [s.rstrip("/") for s in exclude_scopes]
  pairs, unrestored, n_excluded = [], [], 0
  for v in variables:
    name = v.name[:-2] if v.name.endswith(":0") else v.name
    if any(name == s or name.startswith(s + "/") for s in scopes):
      n_excluded += 1
      continue
    key = name_fn(name) if name_fn else name
    if key not in shapes:
      unrestored.append(name)
      continue
    if list(shapes[key]) != v.shape.as_list():
      raise ValueError(f"shape mismatch restoring {name} from {path}: variable "
                       f"{v.shape.as_list()}, checkpoint tensor {key} {list(shapes[key])}")
    pairs.append((v, key))
  if not pairs:
    raise ValueError(f"nothing to restore from {path}: none of {len(unrestored)} variable names "
                     f"(e.g. {unrestored[:2]}) is in it (e.g. {sorted(shapes)[:2]})")
  for v, key in pairs:  # only once every shape has been checked: never a half-restored network
    v.assign(tf.cast(reader.get_tensor(key), v.dtype))
  unused = sorted(set(shapes) - {key for _, key in pairs})
  more = lambda names: " ..." if len(names) > 10 else ""
  print(f"restored {len(pairs)} variables from {path} ({n_excluded} excluded); "
        f"{len(unrestored)} unrestored: {unrestored[:10]}{more(unrestored)}; "
        f"{len(unused)} checkpoint tensors unused: {unused[:10]}{more(unused)}")
  return RestoreResult(sorted(unrestored), unused)
