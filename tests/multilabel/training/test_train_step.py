"""multilabel/training/train_step.py: the distributed train step (learning, each optimiser and
loss, clipping and the learning rate, mixed_float16's loss scaling, the known-entry mean over two
replicas) and the head's dead-unit watch. Oracles: numpy counts of activations, the SGD update
formula, a float32 gradient computed by hand, one replica on the same global batch.

(From tests/test_model.py's and tests/test_recipes.py's dead-unit tests, tests/test_train.py's
train-step tests, tests/test_mixed_precision.py's loss-scaling test and tests/test_distribute.py's
two-replica test.)
"""
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import configs
import multi_label_classification_model as mlc
from multilabel.training import optimizers, train_step
from multilabel.training.losses import total_loss
from multi_label_classification_model import MultiLabelClassificationModel
from tests.helpers import REPO, const_feature_checkpoint, snapshot

LABELS = 4
PROCESS_TIMEOUT = 240  # seconds for the two-replica process


# ---------------------------------------------------------------------------------------------
# Dead head units, measured by the train step.

def test_dead_head_units_equal_a_numpy_count():
  """head_activity per batch and count_dead_units over a window, against numpy on hand-made
  activations: a unit is dead when it is never positive on any pixel of any batch."""
  rng = np.random.default_rng(4)
  batches = []
  for _ in range(3):
    one = rng.normal(size=(4, 2, 2, 6)).clip(min=0)  # after a ReLU
    one[..., [1, 4]] = 0  # units 1 and 4 never fire
    batches.append(one)
  batches[1][0, 1, 0, 4] = 0.3  # unit 4 fires once, in the second batch
  two = [np.zeros((4, 2, 2, 3)), np.zeros((4, 2, 2, 3))]
  two[0][2, 0, 1, 2] = 1.0  # only unit 2 of the second layer fires, once
  activities = [mlc.MultiLabelClassificationModel.head_activity({mlc.HEAD_RELUS[0]: tf.constant(a, tf.float32),
                                   mlc.HEAD_RELUS[1]: tf.constant(b, tf.float32)})
                for a, b in zip(batches, two + [np.zeros((4, 2, 2, 3))])]
  for layer, arrays in zip(mlc.HEAD_RELUS, (batches, two)):
    want = int(np.sum(~np.any(np.stack(arrays) > 0, axis=(0, 1, 2, 3))))
    assert train_step.count_dead_units(activities)[layer] == want
  assert train_step.count_dead_units(activities) == {mlc.HEAD_RELUS[0]: 1, mlc.HEAD_RELUS[1]: 2}
  assert train_step.count_dead_units(activities[:1])[mlc.HEAD_RELUS[0]] == 2


def test_train_step_reports_the_head_units_a_numpy_count_finds_dead():
  """Three units of my_conv_1 are killed by hand (a large negative bias); the step's activity
  must mark exactly the units that numpy finds never positive in the same batch's activations."""
  tf.random.set_seed(0)
  config = configs.ModelConfig(label_count=LABELS, target_height=32, target_width=32,
                               batch_size=4, head_depth=8)
  model = mlc.MultiLabelClassificationModel(config)
  biases = model.head[0].biases.numpy()
  biases[[1, 4, 6]] = -1e4
  model.head[0].biases.assign(biases)
  images = tf.random.stateless_uniform([4, 32, 32, 3], [1, 2], -1.0, 1.0)
  labels = tf.constant(np.random.default_rng(3).integers(0, 2, (4, LABELS)), tf.float32)
  end_points = model(images, training=True)[1]  # before the step's update, as the step sees it
  want = {scope: int(np.sum(~np.any(end_points[scope].numpy() > 0, axis=(0, 1, 2))))
          for scope in mlc.HEAD_RELUS}
  assert want[mlc.HEAD_RELUS[0]] >= 3

  train_config = configs.TrainConfig(learning_rate=1e-9)
  optimizer = optimizers.make_optimizer(train_config, model.trainable_variables)
  step = train_step.make_train_step(model, optimizer, None, tf.distribute.get_strategy(), config,
                               train_config)
  _, activity = step(iter(tf.data.Dataset.from_tensors((images, labels)).repeat()))
  assert activity[mlc.HEAD_RELUS[0]].shape == (8,)
  assert train_step.count_dead_units([activity]) == want
  watch = train_step.DeadUnitWatch(8)
  watch.add(activity)
  assert watch.read(0.5) == {"head/dead_units_1": want[mlc.HEAD_RELUS[0]],
                          "head/dead_units_2": want[mlc.HEAD_RELUS[1]]}


def test_dead_unit_watch_warns_once_naming_head_depth(capsys):
  watch = train_step.DeadUnitWatch(4)
  dead = {mlc.HEAD_RELUS[0]: np.array([1.0, 0, 0, 0]), mlc.HEAD_RELUS[1]: np.ones(4)}
  for _ in range(train_step.DeadUnitWatch.PATIENCE + 2):
    watch.add(dead)
    assert watch.read(0.3) == {"head/dead_units_1": 3, "head/dead_units_2": 0}
  out = capsys.readouterr().out
  assert out.count("warning:") == 1
  assert "3 of 4 units of my_sub_network/my_conv_1" in out and "--head_depth=256" in out
  assert f"has not fallen for {train_step.DeadUnitWatch.PATIENCE} log lines" in out
  wide = train_step.DeadUnitWatch(256)
  for _ in range(train_step.DeadUnitWatch.PATIENCE + 1):
    wide.add({scope: np.eye(1, 256)[0] for scope in mlc.HEAD_RELUS})
    wide.read(0.3)
  out = capsys.readouterr().out
  assert "255 of 256 units" in out and "--head_depth" not in out and "--head_bias=prior" in out
  alive = train_step.DeadUnitWatch(4)
  for _ in range(train_step.DeadUnitWatch.PATIENCE + 1):
    alive.add({scope: np.ones(4) for scope in mlc.HEAD_RELUS})
    alive.read(0.3)
  assert "warning" not in capsys.readouterr().out


def test_dead_unit_watch_waits_while_the_loss_falls(capsys):
  """Units dead from the start, a loss that halves each window, then flat: silent while it
  falls, one warning PATIENCE windows into the plateau (the smoothed loss then sets no new low
  below 99% of its best)."""
  watch = train_step.DeadUnitWatch(4)
  dead = {scope: np.array([1.0, 0, 0, 0]) for scope in mlc.HEAD_RELUS}
  losses = [0.7 * 0.5 ** i for i in range(8)] + [0.005] * 160
  warned_at = None
  for i, loss in enumerate(losses):
    watch.add(dead)
    watch.read(loss)
    if warned_at is None and "warning:" in capsys.readouterr().out:
      warned_at = i
  # by hand: the smoothed loss s = 0.9 s + 0.1 loss keeps falling by > 1% a window after the
  # halving stops while it still decays towards 0.005; the warning comes PATIENCE windows after
  # its last new low, and never while the loss halves
  smoothed, best, since, want = None, math.inf, 0, None
  for i, loss in enumerate(losses):
    smoothed = loss if smoothed is None else 0.9 * smoothed + 0.1 * loss
    best, since = (smoothed, 0) if smoothed < 0.99 * best else (best, since + 1)
    if want is None and since >= train_step.DeadUnitWatch.PATIENCE:
      want = i
  assert want is not None and warned_at == want
  assert warned_at >= 8 + train_step.DeadUnitWatch.PATIENCE


# ---------------------------------------------------------------------------------------------
# Learning, optimisers, losses, clipping, schedule.

def global_norm(arrays):
  return math.sqrt(sum(float(np.sum(np.square(a.astype(np.float64)))) for a in arrays))


@pytest.fixture(scope="module")
def frozen_model():
  """A frozen-backbone model (only the head trains) shared by the one-step tests, its initial
  weights, and one fixed batch."""
  tf.random.set_seed(0)
  config = configs.ModelConfig(label_count=LABELS, target_height=32, target_width=32,
                               batch_size=4)
  model = MultiLabelClassificationModel(config)
  images = tf.random.stateless_uniform([4, 32, 32, 3], [1, 2], -1.0, 1.0)
  labels = tf.constant(np.random.default_rng(3).integers(0, 2, (4, LABELS)), tf.float32)
  return model, config, snapshot(model.trainable_variables), (images, labels)


def one_batch_steps(model, model_config, batch, **train_overrides):
  """A train.make_train_step for a TrainConfig with the overrides, on a repeated fixed batch.
  Returns (step function taking no arguments, optimizer)."""
  train_config = configs.TrainConfig(**train_overrides)
  optimizer = optimizers.make_optimizer(train_config, model.trainable_variables)
  step = train_step.make_train_step(model, optimizer, None, tf.distribute.get_strategy(),
                               model_config, train_config)
  iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())
  return (lambda: {k: float(v) for k, v in step(iterator)[0].items()}), optimizer


def test_loss_falls_when_overfitting_one_fixed_batch():
  """Fine-tuning the whole net on one batch of 8 random images and labels: the loss must drop
  well below what the best label-blind (per-label constant) prediction reaches."""
  tf.random.set_seed(1)
  config = configs.ModelConfig(label_count=LABELS, target_height=32, target_width=32,
                               batch_size=8, train_base_network=True, use_regularizer=False)
  model = MultiLabelClassificationModel(config)
  labels = np.random.default_rng(0).integers(0, 2, (8, LABELS)).astype(np.float32)
  images = tf.random.stateless_uniform([8, 32, 32, 3], [4, 5], -1.0, 1.0)
  run, _ = one_batch_steps(model, config, (images, tf.constant(labels)), learning_rate=1e-3)
  losses = [run()["loss/classification"] for _ in range(30)]
  p = labels.mean(axis=0)
  constant_loss = float(np.mean([-(q * math.log(q) + (1 - q) * math.log(1 - q)) if 0 < q < 1
                                 else 0.0 for q in p]))
  # Adam on one batch oscillates, and multi-threaded CPU reductions make runs differ in the last
  # bits, which 30 steps of ResNet-50 amplify: judge the best of the last 10 steps.
  reached = min(losses[-10:])
  assert reached < 0.7 * losses[0], losses
  assert reached < constant_loss - 0.1, (losses, constant_loss)


@pytest.mark.parametrize("optimizer,loss", [
    ("Adam", "sigmoid"), ("SGD", "sigmoid"), ("Momentum", "sigmoid"), ("RMSProp", "sigmoid"),
    ("AdamW", "sigmoid"), ("Adam", "focal"), ("Adam", "asymmetric")])
def test_each_optimizer_and_loss_trains_without_nan(frozen_model, optimizer, loss):
  model, config, initial, batch = frozen_model
  for v, value in zip(model.trainable_variables, initial):
    v.assign(value)
  run, opt = one_batch_steps(model, config, batch, optimizer=optimizer, loss=loss,
                             learning_rate=1e-4)
  expected_class = {"Adam": "Adam", "SGD": "SGD", "Momentum": "SGD", "RMSProp": "RMSprop",
                    "AdamW": "AdamW"}[optimizer]
  assert type(opt).__name__ == expected_class
  if optimizer == "Momentum":
    assert opt.momentum == pytest.approx(0.9)
  for _ in range(2):
    scalars = run()
    assert all(math.isfinite(value) for value in scalars.values()), scalars
  assert int(opt.iterations) == 2
  after = snapshot(model.trainable_variables)
  assert all(np.all(np.isfinite(a)) for a in after)
  assert global_norm([a - b for a, b in zip(after, initial)]) > 0


def test_gradient_clipping_and_learning_rate_reach_the_update(frozen_model):
  """Plain SGD moves the weights by exactly lr_n * g: the update's global norm must be
  lr_n * min(norm, clip) with lr_n = 0.1 * 0.5 ** (n - 1) (staircase, decay every step)."""
  model, config, initial, batch = frozen_model
  schedule = dict(optimizer="SGD", learning_rate=0.1, decay_steps=1, decay_rate=0.5,
                  staircase=True)
  for clip in (0.0, 1.0):
    for v, value in zip(model.trainable_variables, initial):
      v.assign(value)
    run, _ = one_batch_steps(model, config, batch, clip_gradients=clip, **schedule)
    before = snapshot(model.trainable_variables)
    for n in (1, 2, 3) if clip else (1,):
      scalars = run()
      after = snapshot(model.trainable_variables)
      norm = scalars["gradient_norm"]
      if n == 1:
        assert norm > 10  # large enough for clip=1.0 to act
      moved = global_norm([a - b for a, b in zip(after, before)])
      want = 0.1 * 0.5 ** (n - 1) * (min(norm, clip) if clip else norm)
      assert moved == pytest.approx(want, rel=2e-3), (clip, n, norm)
      before = after


# ---------------------------------------------------------------------------------------------
# mixed_float16: dynamic loss scaling in make_train_step.

MP_LABELS = 3  # the label count of this test


def test_mixed_float16_clips_the_true_gradient_and_skips_overflow_steps(model_config):
  """SGD with clipping at half the true gradient norm, under LossScaleOptimizer (scale 2^15).

  Oracle: the float32 gradient g of the same model and batch, computed by hand; one SGD step
  with global-norm clipping at c moves the weights by -lr * g * c / |g|. Clipping the scaled
  gradient instead (c against |2^15 g|) would move them 2^15 times less and report a norm 2^15
  times larger. Step 1 is a batch that overflows float16: it must be skipped (weights and step
  unchanged) and the scale halved; step 2 must then clip at the new scale.
  """
  cfg16 = model_config(label_count=MP_LABELS, precision="mixed_float16", batch_size=4)
  cfg32 = model_config(label_count=MP_LABELS)
  tf.random.set_seed(0)
  model = MultiLabelClassificationModel(cfg16)
  twin = MultiLabelClassificationModel(cfg32)
  for a, b in zip(twin.variables, model.variables):
    a.assign(b)
  rng = np.random.default_rng(0)
  # 0.01-scaled images keep the random backbone's features (and the scaled float16 weight
  # gradients) in float16 range; 1e6-scaled ones overflow it (inf in, NaN out).
  images = tf.constant(0.01 * rng.uniform(-1, 1, (4, 64, 64, 3)), tf.float32)
  labels = tf.constant(rng.integers(0, 2, (4, MP_LABELS)), tf.float32)

  with tf.GradientTape() as tape:
    logits, _ = twin(images, training=True)
    loss = total_loss(twin, logits, labels, global_batch_size=4)[0]
  oracle = [g.numpy() for g in tape.gradient(loss, twin.trainable_variables)]
  norm = np.sqrt(sum(np.sum(g.astype(np.float64) ** 2) for g in oracle))
  clip, lr = 0.5 * norm, 0.1

  train_config = configs.TrainConfig(optimizer="SGD", learning_rate=lr, clip_gradients=clip)
  optimizer = optimizers.make_optimizer(train_config, model.trainable_variables, loss_scale=True)
  assert isinstance(optimizer, tf.keras.optimizers.LossScaleOptimizer)
  assert float(optimizer.dynamic_scale.numpy()) == 2.0 ** 15
  step = train_step.make_train_step(model, optimizer, None, tf.distribute.get_strategy(), cfg16,
                               train_config)
  batches = tf.data.Dataset.from_tensor_slices(
      (tf.stack([images * 1e6, images]), tf.stack([labels, labels])))
  iterator = iter(batches)
  before = [v.numpy() for v in model.trainable_variables]

  skipped, _ = step(iterator)
  assert not np.isfinite(float(skipped["gradient_norm"]))
  assert float(optimizer.dynamic_scale.numpy()) == 2.0 ** 14
  assert int(optimizer.iterations.numpy()) == 0
  for v, b in zip(model.trainable_variables, before):
    np.testing.assert_array_equal(v.numpy(), b, err_msg=f"{v.name} moved on a skipped step")

  taken, _ = step(iterator)
  np.testing.assert_allclose(float(taken["gradient_norm"]), norm, rtol=1e-2)
  assert int(optimizer.iterations.numpy()) == 1
  assert float(optimizer.dynamic_scale.numpy()) == 2.0 ** 14
  for v, b, g in zip(model.trainable_variables, before, oracle):
    want = -lr * g * clip / norm
    # float16 compute: about 3 significant digits
    np.testing.assert_allclose(v.numpy() - b, want, atol=1e-2 * np.abs(want).max(),
                               err_msg=v.name)


# ---------------------------------------------------------------------------------------------
# Unknown (-1) labels under two replicas: the loss averages the global batch's known entries

TWO_REPLICA_SCRIPT = r"""
import json, sys
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import configs
from multi_label_classification_model import MultiLabelClassificationModel
from multilabel.training import optimizers, train_step

tf.random.set_seed(0)
images = np.random.default_rng(0).uniform(-1, 1, (8, 64, 64, 3)).astype(np.float32)
labels = np.array(json.loads(sys.argv[1]), np.float32)
backbone = sys.argv[2]  # constant features: what the head sees depends on nothing random
train_config = configs.TrainConfig(optimizer="SGD", learning_rate=0.05, clip_gradients=0.0)
results, start = {}, None
for name, devices in (("one", None), ("two", ["/cpu:0", "/cpu:1"])):
  strategy = tf.distribute.MirroredStrategy(devices) if devices else tf.distribute.get_strategy()
  replicas = strategy.num_replicas_in_sync
  model_config = configs.ModelConfig(label_count=3, target_height=64, target_width=64,
                                     batch_size=8 // replicas)
  with strategy.scope():
    model = MultiLabelClassificationModel(model_config)
    optimizer = optimizers.make_optimizer(train_config, model.trainable_variables)
  if start is None:
    model.restore_backbone(backbone)
    start = [v.numpy() for v in model.variables]
  for v, value in zip(model.variables, start):  # both runs start from one state
    v.assign(value)
  step = train_step.make_train_step(model, optimizer, None, strategy, model_config, train_config)
  # the global batch of 8, split 4 + 4 in order over two replicas
  dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
  iterator = iter(strategy.experimental_distribute_dataset(dataset))
  losses = [float(step(iterator)[0]["loss/classification"]) for _ in range(3)]
  results[name] = {"replicas": replicas, "losses": losses,
                   "head": [v.numpy().ravel().tolist() for v in model.trainable_variables]}
print(json.dumps(results))
"""


def test_two_replicas_average_the_known_entries_of_the_global_batch(tmp_path):
  """MirroredStrategy over two logical CPUs (its own process: logical devices must be set before
  TensorFlow starts) against one replica on the same global batch of 8, 3 SGD steps from the same
  weights. Replica 0's half is mostly -1 (one row all -1), replica 1's all known: a mean over each
  replica's own known entries would weigh the halves differently, and change the loss and every
  update. The frozen backbone's features are a constant (see helpers.const_feature_checkpoint)."""
  labels = [[-1, -1, -1], [1, -1, -1], [-1, 0, -1], [-1, -1, 1],
            [1, 0, 1], [0, 1, 1], [1, 1, 0], [0, 0, 1]]
  backbone = tmp_path / "const.ckpt"
  const_feature_checkpoint(backbone)
  result = subprocess.run([sys.executable, "-c", TWO_REPLICA_SCRIPT, json.dumps(labels),
                           str(backbone)],
                          cwd=REPO, capture_output=True, text=True, timeout=PROCESS_TIMEOUT,
                          env=dict(os.environ, CUDA_VISIBLE_DEVICES="-1", TF_CPP_MIN_LOG_LEVEL="2",
                                   PYTHONPATH=REPO))
  assert result.returncode == 0, result.stderr[-3000:]
  runs = json.loads(result.stdout.splitlines()[-1])
  one, two = runs["one"], runs["two"]
  assert (one["replicas"], two["replicas"]) == (1, 2)
  assert len(set(one["losses"])) == 3 and one["losses"][2] < one["losses"][0]  # it trained
  np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-5)
  for got, want in zip(two["head"], one["head"], strict=True):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
