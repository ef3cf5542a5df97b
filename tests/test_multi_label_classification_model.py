"""multi_label_classification_model against numpy, hand computations and TF-Slim's variable
lists: the head, the frozen and the fine-tuned backbone, the backbone choice, the compute dtype of
mixed precision, and first-run restore. (From tests/test_model.py's head and model parts,
tests/test_recipes.py's backbone choice and tests/test_mixed_precision.py's model parts.)

  .venv/bin/python -m pytest tests/test_multi_label_classification_model.py -m "not slow"
  .venv/bin/python -m pytest tests/test_multi_label_classification_model.py  # + the head at 224
"""
import json

import numpy as np
import pytest
import tensorflow as tf

import configs
import multi_label_classification_model as mlc
import resnet_utils
from multilabel import config_files
from multilabel.training import losses
from multilabel.training.losses import total_loss
from multi_label_classification_model import MultiLabelClassificationModel
from tests.helpers import TINY_LABELS as L, head_variables, sigmoid

HEAD = "my_sub_network"


def names_and_shapes(variables):
  return {v.name[:-2]: v.shape.as_list() for v in variables}


def head_names_and_shapes(labels, kernel):
  """What the issue specifies: 1x1 -> L, 1x1 -> L, kh x kw -> L, each with biases."""
  weights = {"my_conv_1": [1, 1, 2048, labels], "my_conv_2": [1, 1, labels, labels],
             "my_conv_3": [*kernel, labels, labels]}
  out = {f"{HEAD}/{c}/weights": s for c, s in weights.items()}
  out.update({f"{HEAD}/{c}/biases": [labels] for c in weights})
  return out


def snapshot(variables):
  return {v.name: v.numpy().copy() for v in variables}


@pytest.fixture(scope="module")
def wide(model_config):
  """A rectangular 64x96 target. test_first_run_restore restores its backbone (its head stays)."""
  return mlc.MultiLabelClassificationModel(model_config(target_width=96, resize_width=104))


# ---------------------------------------------------------------------------------------------
# The head.

def test_config_errors_name_the_bad_value(model_config):
  with pytest.raises(ValueError, match="label_count=0"):
    mlc.MultiLabelClassificationModel(model_config(label_count=0))
  with pytest.raises(ValueError, match="target_width=100"):
    mlc.MultiLabelClassificationModel(model_config(target_width=100))


def test_variables_are_slims_backbone_plus_the_head(frozen, backbone_ref):
  assert len(backbone_ref) == 270
  assert names_and_shapes(frozen.backbone.variables) == backbone_ref
  head = names_and_shapes(v for v in frozen.variables if v.name.startswith(HEAD + "/"))
  assert head == head_names_and_shapes(L, (2, 2))  # my_conv_3: 64 / 32 = 2
  assert len(frozen.variables) == 270 + 6
  for layer in frozen.head:  # Xavier: U(-l, l), l = sqrt(6 / (fan_in + fan_out)); zero biases
    kh, kw, depth_in, depth = layer.weights.shape
    limit = np.sqrt(6 / (kh * kw * (depth_in + depth)))
    assert 0 < np.abs(layer.weights.numpy()).max() <= limit
    assert not layer.biases.numpy().any()


def test_head_depth_sets_the_width_of_the_two_relu_layers(images, model_config):
  model = mlc.MultiLabelClassificationModel(model_config(head_depth=16))
  head = names_and_shapes(v for v in model.variables if v.name.startswith(HEAD + "/"))
  assert head == {f"{HEAD}/my_conv_1/weights": [1, 1, 2048, 16], f"{HEAD}/my_conv_1/biases": [16],
                  f"{HEAD}/my_conv_2/weights": [1, 1, 16, 16], f"{HEAD}/my_conv_2/biases": [16],
                  f"{HEAD}/my_conv_3/weights": [2, 2, 16, L], f"{HEAD}/my_conv_3/biases": [L]}
  logits, end_points = model(images)
  assert logits.shape == (2, L)
  assert end_points[f"{HEAD}/my_conv_1"].shape == (2, 2, 2, 16)
  assert end_points[f"{HEAD}/my_conv_2"].shape == (2, 2, 2, 16)
  with pytest.raises(ValueError, match="head_depth=-1"):
    mlc.MultiLabelClassificationModel(model_config(head_depth=-1))


def test_head_depth_0_is_the_originals_label_count_wide_head(frozen, model_config):
  """0 (the default) builds exactly today's variables: the same names, shapes and, from the same
  seed, values as an explicit head_depth=label_count."""
  assert mlc.head_depth(frozen.config) == L
  models = []
  for depth in (0, L):
    tf.random.set_seed(11)
    models.append(mlc.MultiLabelClassificationModel(model_config(head_depth=depth)))
  default, explicit = ([v for v in m.variables if v.name.startswith(HEAD + "/")] for m in models)
  assert names_and_shapes(default) == head_names_and_shapes(L, (2, 2))
  for a, b in zip(default, explicit):
    assert a.name == b.name
    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)


def test_head_output_at_64_equals_numpy_head(frozen, images):
  """logits [B, L] = my_conv_3(relu(my_conv_2(relu(my_conv_1(features))))), predictions = sigmoid."""
  rng = np.random.RandomState(1)
  for layer in frozen.head:  # non-zero biases, so that a missing bias add shows
    layer.biases.assign(rng.uniform(-0.5, 0.5, layer.biases.shape).astype(np.float32))
  logits, end_points = frozen(images, training=False)
  assert logits.shape == [2, L] and logits.dtype == tf.float32
  features = frozen.backbone(images, training=False)[0].numpy()  # [2, 2, 2, 2048]
  assert features.shape == (2, 2, 2, 2048)
  (w1, b1), (w2, b2), (w3, b3) = [(c.weights.numpy(), c.biases.numpy()) for c in frozen.head]
  net = np.maximum(features @ w1[0, 0] + b1, 0)
  net = np.maximum(net @ w2[0, 0] + b2, 0)
  want = np.einsum("bhwc,hwcd->bd", net, w3) + b3  # a VALID 2x2 conv over the 2x2 map
  np.testing.assert_allclose(logits, want, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(end_points["logits"], logits)
  np.testing.assert_allclose(end_points["predictions"], sigmoid(logits.numpy()), rtol=1e-5,
                             atol=1e-6)
  assert end_points["resnet_v2_50/block4"].shape == [2, 2, 2, 2048]


def test_rectangular_target(wide):
  head = names_and_shapes(v for v in wide.variables if v.name.startswith(HEAD + "/"))
  assert head == head_names_and_shapes(L, (2, 3))  # 64 / 32, 96 / 32
  logits, end_points = wide(tf.zeros([3, 64, 96, 3]))
  assert logits.shape == end_points["predictions"].shape == [3, L]


@pytest.mark.slow
def test_head_output_at_224(model_config):
  model = mlc.MultiLabelClassificationModel(model_config(
      target_height=224, target_width=224, resize_height=255, resize_width=255))
  head = names_and_shapes(v for v in model.variables if v.name.startswith(HEAD + "/"))
  assert head == head_names_and_shapes(L, (7, 7))
  logits, end_points = model(tf.random.uniform([2, 224, 224, 3], -1, 1))
  assert logits.shape == end_points["predictions"].shape == [2, L]
  assert end_points["resnet_v2_50/block4"].shape == [2, 7, 7, 2048]


# ---------------------------------------------------------------------------------------------
# Frozen backbone and fine-tuning.

def test_frozen_backbone_gets_no_gradients_and_keeps_moving_statistics(frozen, images):
  assert not any(v.trainable for v in frozen.backbone.variables)
  head_names = set(head_names_and_shapes(L, (2, 2)))
  assert {v.name[:-2] for v in frozen.trainable_variables} == head_names
  before = snapshot(frozen.variables)
  backbone = [v for v in frozen.backbone.variables if "moving_" not in v.name]
  with tf.GradientTape() as tape:
    tape.watch(backbone)  # even watched by hand, nothing flows into the backbone
    logits, _ = frozen(images, training=True)
    loss = tf.reduce_sum(logits ** 2)
  head_grads, backbone_grads = tape.gradient(loss, [frozen.trainable_variables, backbone])
  assert all(g is not None and np.abs(g.numpy()).sum() > 0 for g in head_grads)
  assert all(g is None for g in backbone_grads)
  after = snapshot(frozen.variables)
  for name, value in before.items():  # training=True moved no moving statistic
    np.testing.assert_array_equal(after[name], value, err_msg=name)
  # ... and normalised with them: training=True computes what inference computes
  np.testing.assert_allclose(logits, frozen(images, training=False)[0], rtol=1e-6, atol=1e-6)


def test_training_flag_may_be_a_tensor(frozen, images):
  """A bool tensor (e.g. one tf.function for train and eval) works as the Python bool does."""
  step = tf.function(lambda x, training: frozen(x, training=training)[0])
  want = frozen(images, training=False)[0]
  for training in [tf.constant(True), tf.constant(False)]:
    np.testing.assert_allclose(step(images, training), want, rtol=1e-5, atol=1e-5)


def test_fine_tuning_trains_the_backbone(tuned, images, backbone_ref):
  trainable = {v.name[:-2] for v in tuned.trainable_variables}
  backbone_trainable = {n for n in backbone_ref if "moving_" not in n}
  assert trainable == backbone_trainable | set(head_names_and_shapes(L, (2, 2)))
  before = snapshot(tuned.variables)
  with tf.GradientTape() as tape:
    logits, _ = tuned(images, training=True)
    loss = tf.reduce_sum(logits ** 2)
  grads = tape.gradient(loss, tuned.trainable_variables)
  assert all(g is not None and np.isfinite(g.numpy()).all() for g in grads)
  conv1 = dict(zip([v.name for v in tuned.trainable_variables], grads))["resnet_v2_50/conv1/weights:0"]
  assert np.abs(conv1.numpy()).sum() > 0
  for v in tuned.variables:  # batch norm ran in training mode: every moving statistic moved
    assert ("moving_" in v.name) == (not np.array_equal(v.numpy(), before[v.name])), v.name
  # batch statistics, not the moving ones: inference differs
  assert np.abs(logits.numpy() - tuned(images, training=False)[0].numpy()).max() > 1e-3


def test_regularized_weights(frozen, tuned, backbone_ref):
  head_weights = {f"{HEAD}/my_conv_{i}/weights" for i in (1, 2, 3)}
  backbone_weights = {n for n in backbone_ref if n.endswith("/weights")}
  assert len(backbone_weights) == 53  # slim's 54 conv weights less the logits
  assert {v.name[:-2] for v in frozen.regularized_weights} == head_weights
  names = [v.name[:-2] for v in tuned.regularized_weights]
  assert len(names) == 56 and set(names) == head_weights | backbone_weights


def test_no_regularizer(model_config):
  model = mlc.MultiLabelClassificationModel(
      model_config(train_base_network=True, use_regularizer=False))
  assert list(model.regularized_weights) == []
  logits = tf.constant([[1.0, -2.0, 0.5, 3.0, -1.0]])
  total, classification, regularization = losses.total_loss(model, logits, tf.ones([1, L]))
  assert float(regularization) == 0.0 and float(total) == float(classification)


# ---------------------------------------------------------------------------------------------
# The backbone as a choice.

@pytest.mark.parametrize("depth", [101, 152, 200])
def test_deeper_backbones_have_slims_variables(reference_dir, depth):
  name = f"resnet_v2_{depth}"
  slim = json.loads((reference_dir / "resnet_v2_101_152_200_variables.json").read_text())[name]
  model = mlc.MultiLabelClassificationModel(configs.ModelConfig(
      label_count=3, target_height=64, target_width=64, backbone=name))
  want = {n: s for n, s in slim if not n.startswith(f"{name}/logits/")}
  assert len(want) == len(slim) - 2
  assert {v.name[:-2]: v.shape.as_list() for v in model.backbone.variables} == want
  assert len(head_variables(model)) == 6
  logits, end_points = model(tf.zeros([1, 64, 64, 3]))
  assert logits.shape == (1, 3) and f"{name}/block4" in end_points


def test_unknown_backbone_is_an_error_naming_it():
  with pytest.raises(ValueError, match="backbone='resnet_v1_50'"):
    mlc.MultiLabelClassificationModel(configs.ModelConfig(label_count=2, backbone="resnet_v1_50"))


def test_a_saved_backbone_choice_rebuilds_in_evaluate_and_inference(tmp_path):
  """config.json carries `backbone`: load_trained_model rebuilds a resnet_v2_101 and restores."""
  config = configs.ModelConfig(label_count=3, target_height=32, target_width=32,
                               backbone="resnet_v2_101")
  model = mlc.MultiLabelClassificationModel(config)
  config_files.save_configs(str(tmp_path / config_files.TRAIN_CONFIG_FILE), config,
                        configs.TrainConfig())
  tf.train.Checkpoint(model=model).write(str(tmp_path / "ckpt-1"))
  rebuilt, rebuilt_config = mlc.load_trained_model(str(tmp_path / "ckpt-1"))[:2]
  assert rebuilt_config.backbone == "resnet_v2_101"
  assert [v.name for v in rebuilt.variables] == [v.name for v in model.variables]
  for a, b in zip(rebuilt.variables, model.variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)


# ---------------------------------------------------------------------------------------------
# Mixed precision: the compute dtype through backbone and head, float32 variables.

MP_LABELS = 3  # the label count of these tests
HALF = {"mixed_bfloat16": tf.bfloat16, "mixed_float16": tf.float16}


COMPUTE_OPS = {"Conv2D", "FusedBatchNormV3", "Relu", "MaxPool", "BiasAdd", "AddV2"}


@pytest.mark.parametrize("precision, training", [
    ("float32", False), ("mixed_bfloat16", False), ("mixed_bfloat16", True),
    ("mixed_float16", True)])  # training: fine-tuning, batch norm on batch statistics
def test_compute_dtype_runs_through_backbone_and_head(model_config, precision, training):
  """Every convolution, batch norm, ReLU, pool, bias and residual add on the [B, H, W, C] maps of
  the traced forward pass (backbone and head) computes in the compute dtype; the logits, the
  sigmoid and the loss are float32, as are all variables and their gradients."""
  dtype = HALF.get(precision, tf.float32)
  model = MultiLabelClassificationModel(model_config(
      label_count=MP_LABELS, precision=precision, train_base_network=training))
  images = tf.TensorSpec([2, 64, 64, 3], tf.float32)
  labels = tf.TensorSpec([2, MP_LABELS], tf.float32)

  def forward(images, labels):
    logits, end_points = model(images, training=training)
    return logits, end_points["predictions"], total_loss(model, logits, labels)[0]

  graph = tf.function(forward).get_concrete_function(images, labels).graph
  forward_ops = graph.get_operations()
  compute = [op for op in forward_ops
             if op.type in COMPUTE_OPS and op.outputs[0].shape.rank == 4]
  # 53 convolutions in ResNet-50 v2 (conv1, 16 units x 3, 4 shortcuts) + the head's 3
  n_convs = sum(isinstance(m, resnet_utils.Conv2D) for m in model.submodules)
  assert n_convs == 56 and sum(op.type == "Conv2D" for op in compute) == n_convs
  assert sum(op.type == "FusedBatchNormV3" for op in compute) == 49  # 16 units x 3 + postnorm
  assert sum(op.type == "AddV2" for op in compute) == 16  # one residual add per unit
  wrong = sorted({(op.type, op.get_attr("T").name) for op in compute
                  if op.get_attr("T") != dtype})
  assert not wrong, f"ops not in {dtype.name}: {wrong}"
  sigmoids = [op for op in forward_ops if op.type == "Sigmoid"]
  assert sigmoids and all(op.get_attr("T") == tf.float32 for op in sigmoids)
  assert all(t.dtype == tf.float32 for t in graph.structured_outputs)  # logits, sigmoid, loss
  assert {v.dtype for v in model.variables} == {tf.float32}
  x, y = tf.random.uniform([2, 64, 64, 3], -1, 1), tf.ones([2, MP_LABELS])
  with tf.GradientTape() as tape:
    loss = forward(x, y)[2]
  grads = tape.gradient(loss, model.trainable_variables)
  assert len(grads) == len(model.trainable_variables)
  assert (len(grads) > 6) == training  # the head's 3 weights + 3 biases, unless fine-tuning
  assert all(g is not None and g.dtype == tf.float32 for g in grads)


def test_bad_precision_is_refused(model_config):
  with pytest.raises(ValueError, match="precision='float64'"):
    MultiLabelClassificationModel(model_config(label_count=MP_LABELS, precision="float64"))


def save_name_based(prefix, variables):
  """Writes `variables` as a TF1/slim checkpoint: one tensor per variable, keyed by its name."""
  tf.raw_ops.SaveV2(prefix=str(prefix), tensor_names=[v.name[:-2] for v in variables],
                    shape_and_slices=[""] * len(variables), tensors=list(variables))


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "mixed_float16"])
def test_slim_checkpoint_restores_into_float32_variables(model_config, tmp_path, precision):
  tf.random.set_seed(1)
  # float32, its own random weights
  source = MultiLabelClassificationModel(model_config(label_count=MP_LABELS))
  prefix = tmp_path / "resnet_v2_50.ckpt"
  save_name_based(prefix, source.backbone.variables)
  tf.random.set_seed(2)
  model = MultiLabelClassificationModel(model_config(label_count=MP_LABELS, precision=precision))
  result = model.restore_backbone(str(prefix))
  assert result.unrestored == [] and result.unused == []
  for got, want in zip(model.backbone.variables, source.backbone.variables):
    assert got.name == want.name and got.dtype == tf.float32
    np.testing.assert_array_equal(got.numpy(), want.numpy(), err_msg=got.name)
  # ... and the half-precision backbone computes what the float32 one does, to half precision.
  images = tf.random.uniform([2, 64, 64, 3], -1, 1, seed=3)
  _, want = source(images)
  _, got = model(images)
  for name in ("resnet_v2_50/block1", "resnet_v2_50/block4"):
    assert got[name].dtype == HALF[precision]
    diff = np.abs(tf.cast(got[name], tf.float32).numpy() - want[name].numpy()).max()
    tol = {"mixed_bfloat16": 3e-2, "mixed_float16": 5e-3}[precision]  # 8 vs 11 mantissa bits
    assert diff <= tol * np.abs(want[name].numpy()).max(), (name, diff)


# ---------------------------------------------------------------------------------------------
# First-run restore from a slim (name-based) checkpoint.

def test_first_run_restore(wide, tmp_path):
  rng = np.random.RandomState(3)
  # A name-based checkpoint as slim's Saver wrote resnet_v2_50.ckpt: tensor name = variable name,
  # plus the ImageNet logits (excluded) and global_step (no variable takes it).
  tensors = {v.name[:-2]: rng.uniform(-1, 1, v.shape).astype(np.float32)
             for v in wide.backbone.variables}
  tensors["resnet_v2_50/logits/weights"] = rng.randn(1, 1, 2048, 3).astype(np.float32)
  tensors["global_step"] = np.array(1234, np.int64)
  prefix = str(tmp_path / "resnet_v2_50.ckpt")
  tf.raw_ops.SaveV2(prefix=prefix, tensor_names=list(tensors),
                    shape_and_slices=[""] * len(tensors), tensors=list(tensors.values()))
  head_before = snapshot(wide.head[0].variables + wide.head[1].variables + wide.head[2].variables)
  result = wide.restore_backbone(prefix)
  assert result.unrestored == [] and result.unused == ["global_step", "resnet_v2_50/logits/weights"]
  for v in wide.backbone.variables:
    np.testing.assert_array_equal(v.numpy(), tensors[v.name[:-2]], err_msg=v.name)
  assert len(head_before) == 6
  for v in wide.variables:
    if v.name.startswith(HEAD + "/"):
      np.testing.assert_array_equal(v.numpy(), head_before[v.name], err_msg=v.name)
