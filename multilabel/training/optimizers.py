"""The optimiser, its learning-rate schedule, and the moving average of the weights.

Optimisers are Keras's (they are tf.distribute- and tf.train.Checkpoint-aware); the network
itself uses no Keras.
"""

import tensorflow as tf

from multilabel import errors


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
