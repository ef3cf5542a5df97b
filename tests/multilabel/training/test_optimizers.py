"""multilabel/training/optimizers.py: the learning-rate schedules (the staircase and exponential
decay formula, cosine with warmup written out by hand) and AdamW's decoupled decay of the conv
weights only (its update formula). (From tests/test_train.py's schedule test and
tests/test_recipes.py's schedule and AdamW tests.)"""
import math

import numpy as np
import pytest
import tensorflow as tf

import configs
import multi_label_classification_model as mlc
from multilabel.training import optimizers
from tests.helpers import snapshot

LABELS = 4


# ---------------------------------------------------------------------------------------------
# Schedules.

def test_learning_rate_schedule_matches_exponential_decay_formula():
  for staircase in (True, False):
    config = configs.TrainConfig(learning_rate=0.03, decay_steps=7, decay_rate=0.9,
                                 staircase=staircase)
    schedule = optimizers.learning_rate_schedule(config)
    for step in range(0, 50, 3):
      exponent = step // 7 if staircase else step / 7
      assert float(schedule(step)) == pytest.approx(0.03 * 0.9 ** exponent, rel=1e-6)


@pytest.mark.parametrize("warmup", [0, 5])
def test_cosine_schedule_with_warmup_equals_the_formula(warmup):
  """lr(t) = lr * t / W during the warmup, then lr * (1 + cos(pi * (t - W) / (N - W))) / 2."""
  config = configs.TrainConfig(learning_rate=0.02, lr_schedule="cosine", warmup_steps=warmup,
                               number_of_steps=25)
  schedule = optimizers.learning_rate_schedule(config)
  for t in range(0, 26):
    if t < warmup:
      want = 0.02 * t / warmup
    else:
      want = 0.02 * (1 + math.cos(math.pi * (t - warmup) / (25 - warmup))) / 2
    assert float(schedule(t)) == pytest.approx(want, abs=1e-8), t
  assert float(schedule(25)) == pytest.approx(0.0, abs=1e-9)


def test_schedule_errors_name_the_value():
  with pytest.raises(ValueError, match="warmup_steps=3: warmup comes with lr_schedule=cosine"):
    optimizers.learning_rate_schedule(configs.TrainConfig(warmup_steps=3))
  with pytest.raises(ValueError, match="lr_schedule='linear'"):
    optimizers.learning_rate_schedule(configs.TrainConfig(lr_schedule="linear"))
  with pytest.raises(ValueError, match=r"warmup_steps=10: must be in \[0, number_of_steps=10\)"):
    optimizers.learning_rate_schedule(configs.TrainConfig(lr_schedule="cosine", warmup_steps=10,
                                                         number_of_steps=10))


# ---------------------------------------------------------------------------------------------
# AdamW.

def test_adamw_decays_the_conv_weights_by_the_configs_factor_and_nothing_else():
  """With zero gradients Adam's step is 0, so AdamW moves a decayed variable by exactly
  -lr * weight_decay * w (Keras: w -= lr * wd * w) and leaves the others."""
  weights = tf.Variable(np.full([1, 1, 3, 2], 2.0, np.float32))
  biases = tf.Variable(np.full([2], 3.0, np.float32))
  gamma = tf.Variable(np.full([3], 1.5, np.float32))
  config = configs.TrainConfig(optimizer="AdamW", learning_rate=0.1)
  optimizer = optimizers.make_optimizer(config, [weights, biases, gamma], weight_decay=0.25,
                                       decayed=[weights])
  optimizer.apply_gradients([(tf.zeros_like(v), v) for v in (weights, biases, gamma)])
  np.testing.assert_allclose(weights.numpy(), 2.0 * (1 - 0.1 * 0.25), rtol=1e-6)
  np.testing.assert_array_equal(biases.numpy(), 3.0)
  np.testing.assert_array_equal(gamma.numpy(), 1.5)


def test_train_py_decays_only_the_models_conv_weights_with_adamw():
  """Zero gradients through AdamW as train.py builds it: exactly the conv weights move (the
  head's 3 and ResNet-50's 53, shortcuts included), by lr * weight_decay; biases and batch norm
  stay."""
  model = mlc.MultiLabelClassificationModel(configs.ModelConfig(
      label_count=LABELS, target_height=32, target_width=32, train_base_network=True))
  variables = model.trainable_variables
  optimizer = optimizers.make_optimizer(configs.TrainConfig(optimizer="AdamW", learning_rate=0.1),
                                       variables, weight_decay=0.5, decayed=model.conv_weights)
  before = snapshot(variables)
  optimizer.apply_gradients([(tf.zeros_like(v), v) for v in variables])
  moved = sorted(v.name for v, b in zip(variables, before) if not np.array_equal(v.numpy(), b))
  assert moved == sorted(v.name for v in model.conv_weights)
  assert len(moved) == 53 + 3 and all(name.endswith("/weights:0") for name in moved)
  for v, b in zip(variables, before):
    if v.name in moved:
      np.testing.assert_allclose(v.numpy(), b * (1 - 0.1 * 0.5), rtol=1e-5, atol=1e-9)
