"""Issue 11's training options: the dead-unit watch in the train step, the cosine schedule with
warmup, AdamW's decoupled decay, the backbone choice, and transfer from a run of our own.

Oracles: numpy counts of activations, Keras's documented CosineDecay formula written out by hand,
AdamW's update formula, TF-Slim's variable lists, and a source run's own in-memory weights.

  .venv/bin/python -m pytest tests/test_recipes.py
"""
import json
import math
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf

import configs
import multi_label_classification_model as mlc
from multilabel import config_files, errors
from multilabel.training import optimizers, train_step
import multi_label_classification_model as mlc
import train
from tests.helpers import read_scalars, write_records
from tests.test_train import RestoreSpy, run_main, snapshot, train_args

LABELS = 4


def head_variables(model):
  return [v for v in model.variables if v.name.startswith(mlc.HEAD_SCOPE + "/")]


# ---------------------------------------------------------------------------------------------
# Dead head units, measured by the train step.

@pytest.fixture(scope="module")
def data(tmp_path_factory):
  labels = np.random.default_rng(1).integers(0, 2, (16, LABELS))
  return write_records(tmp_path_factory.mktemp("data") / "train.tfrecord", labels)


def test_train_py_logs_dead_units_to_tensorboard(data, tmp_path):
  train_dir = tmp_path / "train"
  status, log = run_main(train_args(data, train_dir, "--number_of_steps=2", "--head_depth=6",
                                    "--log_every_n_steps=1", "--image_summary_steps=0"))
  assert status == 0
  scalars = read_scalars(str(train_dir))
  for tag in ("head/dead_units_1", "head/dead_units_2"):
    assert sorted(scalars[tag]) == [1, 2]
    assert all(0 <= n <= 6 and n == int(n) for n in scalars[tag].values())
  assert "dead head units" in log


# ---------------------------------------------------------------------------------------------
# Schedules and AdamW.

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


def test_adamw_with_l2_is_refused_in_one_line(data, tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_info:  # through errors.run, as `python train.py` runs
    errors.run(train.main, train_args(data, tmp_path / "train", "--optimizer=AdamW",
                                      "--number_of_steps=1"))
  assert exit_info.value.code == 2
  assert "--optimizer=AdamW decays the weights itself" in capsys.readouterr().err
  assert not (tmp_path / "train").exists()


# ---------------------------------------------------------------------------------------------
# The backbone as a choice.

# ---------------------------------------------------------------------------------------------
# Transfer from a run of our own.

@pytest.fixture(scope="module")
def source_run(data, tmp_path_factory):
  """3 steps from scratch, the whole net trained, EMA on: the run a new label set starts from."""
  train_dir = tmp_path_factory.mktemp("source") / "train"
  with pytest.MonkeyPatch.context() as patch:
    spy = RestoreSpy(patch)
    status, _ = run_main(train_args(data, train_dir, "--train_base_network=true",
                                    "--ema_decay=0.5", "--number_of_steps=3",
                                    "--image_summary_steps=0"))
  assert status == 0
  ckpt = spy.checkpoint
  model = ckpt.model
  # What the backbone must receive: the moving average of each trained variable, and the
  # moving batch-norm statistics as they are (they are not averaged).
  averaged = {v.name: s.numpy() for v, s in zip(ckpt.ema._variables, ckpt.ema.shadows)}
  want = {v.name: averaged.get(v.name, v.numpy()) for v in model.backbone.variables}
  return dict(train_dir=str(train_dir), want=want)


def test_transfer_trains_a_new_head_on_a_frozen_backbone_from_our_run(source_run, tmp_path):
  """A new label set (3 labels, head_depth 8) from the source run's train dir, on the default
  frozen path: the backbone equals the source's (EMA) weights after the restore and after
  training, and the new head's loss falls."""
  labels = np.random.default_rng(5).integers(0, 2, (16, 3))
  new_data = write_records(tmp_path / "new.tfrecord", labels, seed=9)
  train_dir = tmp_path / "new"
  args = train_args(new_data, train_dir, "--number_of_steps=8", "--log_every_n_steps=1",
                    "--image_summary_steps=0", "--head_depth=8", "--augmentation=none",
                    "--batch_size=16", "--learning_rate=0.01",
                    f"--base_network_checkpoint={source_run['train_dir']}")
  args[0] = "--label_count=3"
  with pytest.MonkeyPatch.context() as patch:
    spy = RestoreSpy(patch)
    status, log = run_main(args)
  assert status == 0
  assert "restored the backbone (270 resnet_v2_50 variables, its moving-average weights)" in log
  assert "step 3 of a run with 4 labels" in log
  model = spy.checkpoint.model
  after_restore = dict(zip((v.name for v in model.variables), spy.model_after_restore))
  for v in model.backbone.variables:
    np.testing.assert_array_equal(after_restore[v.name], source_run["want"][v.name], v.name)
    np.testing.assert_array_equal(v.numpy(), source_run["want"][v.name], v.name)
  losses = [float(x) for x in re.findall(r"classification ([0-9.]+)", log)]
  assert len(losses) == 8
  assert min(losses[-3:]) < losses[0] - 0.02, losses


@pytest.mark.parametrize("form", ["prefix", "best_dir"])
def test_transfer_takes_a_prefix_or_a_best_dir(source_run, tmp_path, form):
  prefix = tf.train.latest_checkpoint(source_run["train_dir"])
  path = prefix
  if form == "best_dir":  # evaluate.py's best/: the checkpoint files and a config.json copy
    path = str(tmp_path / "best")
    shutil.copytree(source_run["train_dir"], path)
  model = mlc.MultiLabelClassificationModel(configs.ModelConfig(
      label_count=2, target_height=32, target_width=32, head_depth=5))
  head_before = snapshot(head_variables(model))
  message = mlc.restore_backbone(model, path)
  assert "restored the backbone (270 resnet_v2_50 variables" in message
  for v in model.backbone.variables:
    np.testing.assert_array_equal(v.numpy(), source_run["want"][v.name], v.name)
  for before, v in zip(head_before, head_variables(model)):
    np.testing.assert_array_equal(v.numpy(), before, v.name)


def test_transfer_across_backbones_is_an_error_naming_both(source_run):
  model = mlc.MultiLabelClassificationModel(configs.ModelConfig(
      label_count=2, target_height=32, target_width=32, backbone="resnet_v2_101"))
  with pytest.raises(ValueError, match="is a resnet_v2_50 run; this model's backbone is "
                                       "resnet_v2_101"):
    mlc.restore_backbone(model, source_run["train_dir"])
