"""What train.py, evaluate.py and inference.py share: devices, strategies, optimisers, the
weights' moving average, and rebuilding a trained model from its train dir.

Optimisers are Keras's (they are tf.distribute- and tf.train.Checkpoint-aware); the network
itself uses no Keras.
"""

import os

import tensorflow as tf

import configs
import errors
from multi_label_classification_model import HEAD_SCOPE, MultiLabelClassificationModel

CONFIG_FILE = configs.CONFIG_FILES[0]  # config.json


def log(message):
  print(message, flush=True)


def select_devices(gpu_id):
  """Restricts TensorFlow to the GPUs in `gpu_id` ("0", "0,1"; "" = all; "-1" = CPU only).

  Must run before the first TensorFlow op, like CUDA_VISIBLE_DEVICES in the original.
  """
  gpus = tf.config.list_physical_devices("GPU")
  if gpu_id.strip() == "":
    return gpus
  try:
    wanted = [int(i) for i in gpu_id.split(",") if int(i) >= 0]
  except ValueError:
    raise errors.ConfigError(f"gpu_id={gpu_id!r}: expected GPU numbers such as 0 or 0,1; "
                             '"" = all, -1 = CPU only') from None
  missing = [i for i in wanted if i >= len(gpus)]
  if missing:
    log(f"note: gpu_id={gpu_id!r} but only {len(gpus)} GPU(s) are visible; using what exists")
  chosen = [gpus[i] for i in wanted if i < len(gpus)]
  tf.config.set_visible_devices(chosen, "GPU")
  return chosen


def make_strategy(name):
  """default | mirrored | multi_worker -> a tf.distribute.Strategy."""
  if name == "default":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    if not tf.config.list_logical_devices("GPU"):
      log("note: strategy=mirrored found no GPU; running one replica on the CPU")
      return tf.distribute.MirroredStrategy(["/cpu:0"])
    return tf.distribute.MirroredStrategy()
  if name == "multi_worker":
    if "TF_CONFIG" not in os.environ:
      raise errors.ConfigError("strategy=multi_worker needs the cluster in the TF_CONFIG variable")
    return tf.distribute.MultiWorkerMirroredStrategy()
  raise errors.ConfigError(f"strategy={name!r}: expected default, mirrored or multi_worker")


def is_chief(strategy):
  """True on the worker that owns train_dir (always, outside multi-worker training)."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return True
  return resolver.task_type == "chief" or (
      resolver.task_type == "worker" and resolver.task_id == 0
      and "chief" not in resolver.cluster_spec().as_dict())


def is_multi_worker(strategy):
  """True when the strategy spans several worker processes (TF_CONFIG with more than one task)."""
  resolver = getattr(strategy, "cluster_resolver", None)
  if resolver is None or not resolver.task_type:
    return False
  return sum(len(tasks) for tasks in resolver.cluster_spec().as_dict().values()) > 1


def learning_rate_schedule(train_config):
  """exponential: the original's, learning_rate * decay_rate ** (step / decay_steps), floored to
  whole periods with staircase. cosine: Keras's CosineDecay (Loshchilov & Hutter 2017,
  arXiv:1608.03983) from learning_rate to 0 at number_of_steps, after a linear warmup from 0 over
  warmup_steps (Goyal et al. 2017, arXiv:1706.02677). The cosine is laid over number_of_steps, so
  continuing a finished run with a larger number_of_steps stretches it: the rate rises again."""
  lr, warmup = train_config.learning_rate, train_config.warmup_steps
  if train_config.lr_schedule == "exponential":
    if warmup:
      raise ValueError(f"warmup_steps={warmup}: warmup comes with lr_schedule=cosine only")
    return tf.keras.optimizers.schedules.ExponentialDecay(
        lr, train_config.decay_steps, train_config.decay_rate, staircase=train_config.staircase)
  if train_config.lr_schedule == "cosine":
    if not 0 <= warmup < train_config.number_of_steps:
      raise ValueError(f"warmup_steps={warmup}: must be in [0, number_of_steps="
                       f"{train_config.number_of_steps})")
    return tf.keras.optimizers.schedules.CosineDecay(
        0.0 if warmup else lr, train_config.number_of_steps - warmup,
        warmup_target=lr if warmup else None, warmup_steps=warmup)
  raise ValueError(f"lr_schedule={train_config.lr_schedule!r}: expected exponential or cosine")


def make_optimizer(train_config, variables, loss_scale=False, weight_decay=1e-4, decayed=None):
  """The optimiser named by train_config.optimizer, built for `variables`.

  Building it here (not lazily on the first step) fixes its slot variables before a checkpoint
  is restored, so that resuming restores the optimiser state too. Gradient clipping is done by
  the train step, not here. AdamW decays by `weight_decay` (ModelConfig.weight_decay) only the
  variables in `decayed` (default all): the conv weights, never biases or batch norm, which
  slim's L2 never covered either (Loshchilov & Hutter 2019, arXiv:1711.05101).
  """
  lr = learning_rate_schedule(train_config)
  name = train_config.optimizer
  if name == "Adam":
    optimizer = tf.keras.optimizers.Adam(lr)
  elif name == "AdamW":
    optimizer = tf.keras.optimizers.AdamW(lr, weight_decay=weight_decay)
    if decayed is not None:
      keep = {id(v) for v in decayed}
      optimizer.exclude_from_weight_decay(var_list=[v for v in variables if id(v) not in keep])
  elif name == "SGD":
    optimizer = tf.keras.optimizers.SGD(lr)
  elif name == "Momentum":
    optimizer = tf.keras.optimizers.SGD(lr, momentum=train_config.momentum)
  elif name == "RMSProp":
    optimizer = tf.keras.optimizers.RMSprop(lr, momentum=train_config.momentum)
  else:
    raise errors.ConfigError(f"optimizer={name!r}: expected Adam, SGD, Momentum, RMSProp or AdamW")
  if loss_scale:
    optimizer = tf.keras.optimizers.LossScaleOptimizer(optimizer)
  optimizer.build(variables)
  return optimizer


class ExponentialMovingAverage(tf.Module):
  """Shadow copies of the trainable weights: shadow = decay * shadow + (1 - decay) * weight.

  Saved in the checkpoint as `ema`; evaluation and inference copy the shadows into the model.
  """

  def __init__(self, variables, decay):
    super().__init__(name="ema")
    self.decay = decay
    self._variables = list(variables)
    self.shadows = [tf.Variable(v, trainable=False, name=v.name.split(":")[0] + "/ema",
                                aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
                    for v in self._variables]

  def update(self):
    for shadow, v in zip(self.shadows, self._variables):
      shadow.assign(self.decay * shadow + (1.0 - self.decay) * v)

  def copy_to_model(self):
    for shadow, v in zip(self.shadows, self._variables):
      v.assign(shadow)

  def reset(self):
    """shadow = weight: a first run calls it after restoring the backbone, so the average starts
    from the pretrained weights rather than from the random ones it was built with."""
    for shadow, v in zip(self.shadows, self._variables):
      shadow.assign(v)


def make_checkpoint(model, optimizer=None, ema=None):
  objects = {"model": model}
  if optimizer is not None:
    objects["optimizer"] = optimizer
    objects["global_step"] = optimizer.iterations  # a stable key for evaluate.py to read
  if ema is not None:
    objects["ema"] = ema
  return tf.train.Checkpoint(**objects)


def resolve_checkpoint(path):
  """A train dir (its latest), an eval best/ dir, or a checkpoint prefix -> (prefix, train dir).

  The train dir is where config.json lives: the directory itself, or the best/ copy (which holds
  its own config.json), or the prefix's directory.
  """
  if os.path.isdir(path):
    prefix = tf.train.latest_checkpoint(path)
    if prefix is None:
      raise errors.MissingFileError(f"{path}: no checkpoint in this directory")
    return prefix, path
  if tf.io.gfile.exists(path + ".index"):
    return path, os.path.dirname(path)
  raise errors.MissingFileError(f"{path}: neither a checkpoint directory nor a checkpoint prefix")


def load_model_config(train_dir):
  return configs.load_config(os.path.join(train_dir, CONFIG_FILE), "model", configs.ModelConfig)


def restore_model(model, prefix, use_ema):
  """Restores the model's weights from a train.py checkpoint; the EMA weights if there are any
  and `use_ema`. Returns the checkpoint's global step (or -1 if it has none)."""
  reader = tf.train.load_checkpoint(prefix)
  has_ema = any(k.startswith("ema/") for k in reader.get_variable_to_shape_map())
  ema = ExponentialMovingAverage(model.trainable_variables, 0.0) if has_ema and use_ema else None
  make_checkpoint(model, ema=ema).restore(prefix).expect_partial()
  if ema is not None:
    ema.copy_to_model()
  key = "global_step/.ATTRIBUTES/VARIABLE_VALUE"
  return int(reader.get_tensor(key)) if reader.has_tensor(key) else -1


def load_trained_model(checkpoint_path, use_ema=True, **config_overrides):
  """Rebuilds the model from a train dir's saved config and restores a checkpoint into it.

  Returns (model, model_config, checkpoint prefix, global step).
  """
  prefix, train_dir = resolve_checkpoint(checkpoint_path)
  model_config = load_model_config(train_dir)
  for key, value in config_overrides.items():
    setattr(model_config, key, value)
  model = MultiLabelClassificationModel(model_config)
  step = restore_model(model, prefix, use_ema)
  return model, model_config, prefix, step


def is_training_checkpoint(prefix):
  """True for a train.py (object-graph) checkpoint, False for a name-based (slim / TF1) one."""
  reader = tf.train.load_checkpoint(prefix)
  return reader.has_tensor("_CHECKPOINTABLE_OBJECT_GRAPH")


def restore_backbone(model, path):
  """A first run's backbone weights from `path`; returns a line saying what was restored.

  `path` is a slim-format checkpoint (the official resnet_v2_50.ckpt, a prefix or its folder), or
  a run of ours: a train dir (its latest checkpoint), an eval best/ dir, or a train.py checkpoint
  prefix. From a run of ours only the backbone is taken, with the moving average of the weights
  when that run kept one (what evaluate.py scored), whatever its label_count and head_depth: "my
  12 tags from the backbone I trained on COCO". The head keeps its fresh initial weights.
  """
  prefix = tf.train.latest_checkpoint(path) if os.path.isdir(path) else path
  if prefix is None or not is_training_checkpoint(prefix):
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
  has_ema = any(k.startswith("ema/") for k in
                tf.train.load_checkpoint(prefix).get_variable_to_shape_map())
  averaged = has_ema and source_config.train_base_network  # else only its head was averaged
  weights = "its moving-average weights" if averaged else "its weights"
  return (f"restored the backbone ({len(by_name)} {source_config.backbone} variables, {weights}) "
          f"from {prefix}, step {step} of a run with {source_config.label_count} labels; the "
          f"head ({HEAD_SCOPE}, {model.config.label_count} labels) starts fresh")
