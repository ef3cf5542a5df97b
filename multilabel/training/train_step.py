"""The distributed train step, and what the loop reads from it: losses, the gradient norm, the
head's ReLU activity and the dead-unit watch over it, and the watch for non-finite values.

    step(iterator) -> ({"loss/classification", "loss/regularization", "gradient_norm"}: scalars,
                       {head ReLU scope: [D] > 0 where a unit was positive}: activity)

train.py runs it; benchmarks/throughput.py and benchmarks/gpu_check.py time it as it is.
"""

import math

import numpy as np
import tensorflow as tf

from multilabel.runtime import log
from multilabel.training.losses import count_known, total_loss


def make_train_step(model, optimizer, ema, strategy, model_config, train_config,
                    pos_weight=None, element_watch=None):
  """One distributed step: forward, loss, gradients, clipping, update, EMA. Returns the loss
  terms and the global gradient norm, reduced over replicas. pos_weight: None or the [L] list
  of positive-term weights (pos_weight.resolve_pos_weight). element_watch: None, or an
  input_service.ElementWatch told when the step asks for its batch and when it has it (with the
  tf.data service, which can keep a step waiting for ever); none of the step's changes happen
  unless its got() lets the batch through."""
  variables = model.trainable_variables
  replicas = strategy.num_replicas_in_sync
  global_batch = model_config.batch_size * replicas
  loss_options = dict(kind=train_config.loss, focal_gamma=train_config.focal_gamma,
                      gamma_neg=train_config.gamma_neg, gamma_pos=train_config.gamma_pos,
                      asl_clip=train_config.asl_clip, unknown_label=train_config.unknown_label,
                      pos_weight=pos_weight)
  loss_scale = isinstance(optimizer, tf.keras.optimizers.LossScaleOptimizer)

  @tf.function(jit_compile=train_config.xla)
  def gradients(images, labels, known):
    with tf.GradientTape() as tape:
      logits, end_points = model(images, training=True)
      loss, classification, regularization = total_loss(
          model, logits, labels, global_batch_size=global_batch, known_entries=known,
          **loss_options)
      scaled = optimizer.scale_loss(loss) if loss_scale else loss
    grads = tape.gradient(scaled, variables)
    return grads, classification, regularization, model.head_activity(end_points)

  def replica_update(images, labels):
    known = count_known(labels)
    if replicas > 1:
      # The loss averages over the known (not -1) entries of the global batch, as it averages
      # over the global batch: a run on n replicas is one big batch's, whatever each one holds.
      known = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, known)
    grads, classification, regularization, activity = gradients(images, labels, known)
    if replicas > 1:
      # Keras 3 optimisers sum the replicas' gradients only inside apply_gradients, after the
      # clipping below (and LossScaleOptimizer's finite check) would have seen each replica's
      # partial sum: sum them first, so both see the gradient of the whole global batch.
      grads = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, grads)
    # Under loss scaling the gradients are multiplied by the scale (a power of two) until
    # LossScaleOptimizer divides it out: norm and clip threshold are scaled alike, so the clip
    # acts on the true gradient, and a non-finite norm gives non-finite grads (a skipped step).
    scale = tf.convert_to_tensor(optimizer.dynamic_scale) if loss_scale else 1.0
    scaled_norm = tf.linalg.global_norm(grads)
    norm = scaled_norm / scale
    if train_config.clip_gradients > 0:
      grads, _ = tf.clip_by_global_norm(grads, train_config.clip_gradients * scale,
                                        use_norm=scaled_norm)
    if replicas > 1:
      grads = [g / replicas for g in grads]  # the optimiser sums them over the replicas again
    optimizer.apply_gradients(zip(grads, variables))
    if ema is not None:
      ema.update()
    return classification, regularization, norm, activity

  def replica_step(images, labels, batch_let_through=None):
    if batch_let_through is None:
      return replica_update(images, labels)
    # With an element_watch, every op of the step waits for its got(): the optimiser's step
    # count too, which no data feeds (merge_call carries the dependency into the update).
    with tf.control_dependencies([batch_let_through]):
      return replica_update(images, labels)

  @tf.function
  def step(iterator):
    if element_watch is None:
      images, labels = next(iterator)
      args = (images, labels)
    else:
      args = watched_next(iterator, element_watch, strategy)
    classification, regularization, norm, activity = strategy.run(replica_step, args=args)
    total = lambda x: strategy.reduce(tf.distribute.ReduceOp.SUM, x, axis=None)
    # Both terms are already scaled per replica (global batch; replica count), so they sum.
    scalars = {"loss/classification": total(classification),
               "loss/regularization": total(regularization),
               "gradient_norm": strategy.reduce(tf.distribute.ReduceOp.MEAN, norm, axis=None)}
    # > 0 where a unit was positive on some replica's batch: [D] per head ReLU
    return scalars, {scope: total(a) for scope, a in activity.items()}

  return step


def watched_next(iterator, watch, strategy):
  """next(iterator) between watch.asked() and watch.got() (tf.py_function, in that order by
  control dependencies): (images, labels, the token of got(), which replica_step waits for)."""
  asked = tf.py_function(watch.asked, [], tf.bool)
  with tf.control_dependencies([asked]):
    images, labels = next(iterator)
  # on the ops that made the batch (not on a shape, which a static shape makes a constant)
  with tf.control_dependencies([*strategy.experimental_local_results(images),
                                *strategy.experimental_local_results(labels)]):
    return images, labels, tf.py_function(watch.got, [], tf.bool)


class FiniteWatch:
  """Finds the first step whose loss terms or gradient norm are not finite (nan, inf).

  The step returns these scalars anyway; they stay on the device until check() reads those of
  every step since the last check, in one transfer. train.py checks at each log window, where it
  reads them already, and before each save, so training waits on the device no more often than
  it did, and no save follows a step that was not checked.
  """

  NAMES = {"loss/classification": "the classification loss",
           "loss/regularization": "the regularization loss", "gradient_norm": "the gradient norm"}

  def __init__(self, loss_scaled=False):
    # Under mixed_float16's loss scaling a non-finite gradient is routine: LossScaleOptimizer
    # skips that step's update and lowers the scale. Only the losses count then.
    self.keys = [k for k in self.NAMES if not (loss_scaled and k == "gradient_norm")]
    self.pending = []

  def add(self, step_no, scalars):
    self.pending.append((step_no, [scalars[k] for k in self.keys]))

  def check(self):
    """None if every step since the last check was finite; else (step number, {name: value})
    of the first that was not, with each of its values that was not."""
    if not self.pending:
      return None
    pending, self.pending = self.pending, []
    values = tf.stack([v for _, step_values in pending for v in step_values]).numpy()
    bad = ~np.isfinite(values.reshape(len(pending), len(self.keys)))
    if not bad.any():
      return None
    row = int(np.argmax(bad.any(axis=1)))
    return pending[row][0], {self.NAMES[k]: float(values[row * len(self.keys) + j])
                             for j, k in enumerate(self.keys) if bad[row, j]}


def non_finite_finder(variables):
  """A function that returns the name of the first of `variables` that holds a nan or an inf, or
  None: one compiled pass over them, for before a save (an update can overflow the weights
  though the step's loss and gradient norm were finite)."""
  @tf.function
  def finite_flags():
    return tf.stack([tf.reduce_all(tf.math.is_finite(v)) for v in variables])

  def first():
    flags = finite_flags().numpy()
    return None if flags.all() else variables[int(np.argmin(flags))].name
  return first


class DeadUnitWatch:
  """Counts the head's dead ReLUs over each logging window (units never positive on any of its
  batches), and warns once when more than half of a layer's units are dead and the loss has
  stopped falling.

  Why it waits: units die while the learning rate is high (their inputs are all >= 0
  after the backbone's last ReLU, so one large step down turns a unit off for every image), and
  a wide head then learns on the rest: the demo's recommended run had 134 of 256 dead and still
  reached its mAP. Dead units are worth a line only when the loss no longer falls, where the
  lost width may be what holds it back.
  """

  # The loss each window reports is one step's, so noisy: smoothed over about 10 log lines, and
  # 20 without a new low (1% below the best) before it counts as stopped. A 3,000-step OpenMoji
  # run, whose loss fell slowly from 0.10 to 0.05 between steps 800 and 2,400, set off the
  # first version (0.7 and 5) at step 800; replayed on that log, these settings stay silent.
  PATIENCE = 20  # log lines without a new low of the smoothed loss: it stopped falling
  SMOOTHING = 0.9

  def __init__(self, depth):
    self.depth, self.window, self.warned = depth, [], False
    self.smoothed, self.best, self.since_best = None, math.inf, 0

  def add(self, activity):
    self.window.append(activity)  # device tensors: read only at the end of the window

  def read(self, loss):
    """{'head/dead_units_1': n, 'head/dead_units_2': n} over the window; starts a new one.
    loss: the window's classification loss, for the plateau test."""
    dead = count_dead_units(self.window)
    self.window = []
    counts = {f"head/dead_units_{i + 1}": n for i, n in enumerate(dead.values())}
    self.smoothed = (loss if self.smoothed is None
                     else self.SMOOTHING * self.smoothed + (1 - self.SMOOTHING) * loss)
    if self.smoothed < 0.99 * self.best:
      self.best, self.since_best = self.smoothed, 0
    else:
      self.since_best += 1
    worst = max(dead, key=dead.get)
    if (not self.warned and dead[worst] > self.depth / 2
        and self.since_best >= self.PATIENCE):
      self.warned = True
      advice = (f"The head is {self.depth} wide (head_depth); rerun with a wider head, e.g. "
                "--head_depth=256" if self.depth < 256 else
                "Try --head_bias=prior (the logits start at the labels' frequencies, not at "
                "0.5), a lower --learning_rate or a longer --warmup_steps")
      log(f"warning: {dead[worst]} of {self.depth} units of {worst} were never positive over "
          f"the last steps, and the classification loss has not fallen for "
          f"{self.since_best} log lines: a dead ReLU gets no gradient, and comes back only if the "
          f"backbone's features move (never with a frozen backbone). {advice}")
    return counts


def count_dead_units(activities):
  """Units never positive over a window of steps: [steps of {scope: [D]}] -> {scope: count}."""
  return {scope: int(np.sum(np.max(np.stack([a[scope] for a in activities]), axis=0) <= 0))
          for scope in activities[0]}
