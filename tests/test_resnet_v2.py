"""ResNet v2 against TF-Slim's own outputs (tests/fixtures/slim_resnet_v2) and numpy oracles.

  .venv/bin/python -m pytest tests/test_resnet_v2.py -m "not slow"   # fast
  .venv/bin/python -m pytest tests/test_resnet_v2.py                 # + ResNet-50 at 224

(conv2d_stride1's gradient, which resnet_utils.Conv2D uses, is tested in
tests/multilabel/test_conv_gradients.py.)
"""
import json
import math

import numpy as np
import pytest
import tensorflow as tf

import resnet_utils
import resnet_v2
from tests.helpers import assert_close


def names_and_shapes(variables):
  return {v.name[:-2]: v.shape.as_list() for v in variables}


@pytest.fixture(scope="module")
def ref50(reference_dir):
  return json.loads((reference_dir / "resnet_v2_50_variables.json").read_text())


@pytest.fixture(scope="module")
def resnet50():
  return resnet_v2.resnet_v2_50(num_classes=1001)


@pytest.fixture(scope="module")
def tiny(reference_dir):
  """spec.json, reference.npz's arrays and the checkpoint prefix of slim's tiny_resnet_v2."""
  d = reference_dir / "tiny_resnet_v2"
  spec = json.loads((d / "spec.json").read_text())
  return spec, dict(np.load(d / "reference.npz")), str(d / "model.ckpt")


def tiny_net(spec, **kwargs):
  blocks = [resnet_v2.resnet_v2_block(*b) for b in spec["blocks"]]
  kwargs.setdefault("scope", spec["scope"])
  return resnet_v2.resnet_v2(blocks, num_classes=None, global_pool=False, **kwargs)


def restored_tiny_net(tiny, **kwargs):
  spec, _, ckpt = tiny
  net = tiny_net(spec, **kwargs)
  assert resnet_utils.restore_from_checkpoint(net.variables, ckpt) == ([], [])
  return net


# a. ResNet-50's variables are the official checkpoint's, name for name and shape for shape.
def test_resnet_v2_50_variables_equal_slim(resnet50, ref50):
  assert len(ref50["variables"]) == 272 and len(resnet50.variables) == 272
  assert names_and_shapes(resnet50.variables) == {n: s for n, s in ref50["variables"]}


def test_resnet_v2_50_end_point_names_and_sigmoid(resnet50, ref50):
  logits, end_points = resnet50(tf.random.uniform([1, 64, 64, 3], -1, 1))
  # slim's keys, plus the later tensorflow/models slim's global_pool and spatial_squeeze
  want = set(ref50["end_points_at_224"]) | {"global_pool", "resnet_v2_50/spatial_squeeze"}
  assert set(end_points) == want
  assert logits.shape == [1, 1001]
  sigmoid = np.exp(-np.logaddexp(0, -logits.numpy()))  # 1 / (1 + exp(-x)) without overflow
  np.testing.assert_allclose(end_points["predictions"], sigmoid, rtol=1e-5, atol=1e-6)


def test_regularized_weights_are_slims_conv_weights(resnet50, ref50):
  expected = {n for n, _ in ref50["variables"] if n.endswith("/weights")}
  got = [v.name[:-2] for v in resnet50.regularized_weights]
  assert len(got) == len(expected) == 54 and set(got) == expected


def test_he_init_is_slims_truncated_normal(resnet50):
  name = "resnet_v2_50/block4/unit_1/bottleneck_v2/conv2/weights:0"
  w = next(v for v in resnet50.variables if v.name == name).numpy()
  sigma = math.sqrt(1.3 * 2.0 / (3 * 3 * 512))  # slim: sqrt(1.3 * factor / fan_in), cut at 2 sigma
  phi2, mass = math.exp(-2) / math.sqrt(2 * math.pi), math.erf(2 / math.sqrt(2))
  truncated_std = sigma * math.sqrt(1 - 4 * phi2 / mass)  # std of N(0, sigma^2) given |x| < 2 sigma
  assert abs(w.std() / truncated_std - 1) < 0.01 and np.abs(w).max() <= 2 * sigma
  assert abs(truncated_std / math.sqrt(2 / (3 * 3 * 512)) - 1) < 0.01  # i.e. He's sqrt(2 / fan_in)


def test_conv2d_rectangular_kernel_with_xavier_init_and_biases():
  conv = resnet_utils.Conv2D("head/conv", (2, 3), 100, 300, padding="VALID", batch_norm=False,
                             activation=None, initializer=resnet_utils.xavier_initializer())
  assert names_and_shapes(conv.variables) == {"head/conv/weights": [2, 3, 100, 300],
                                              "head/conv/biases": [300]}
  limit = math.sqrt(6 / (2 * 3 * 100 + 2 * 3 * 300))  # Glorot: U(-l, l), l = sqrt(6 / (in + out))
  w = conv.weights.numpy()
  assert np.abs(w).max() <= limit and abs(w.std() / (limit / math.sqrt(3)) - 1) < 0.01
  conv.biases.assign(tf.range(300, dtype=tf.float32))
  x = np.random.RandomState(0).randn(1, 2, 3, 100).astype(np.float32)
  want = np.einsum("bhwc,hwcd->bd", x, w) + np.arange(300)  # a VALID conv covering the whole input
  assert_close(conv(x)[:, 0, 0], want, tol=1e-5, what="VALID 2x3 conv")


# b. slim's tiny_resnet_v2, restored from its checkpoint, computes slim's outputs.
def test_tiny_matches_slim_reference(tiny):
  spec, ref, _ = tiny
  net = restored_tiny_net(tiny)
  assert names_and_shapes(net.variables) == {n: s for n, s in spec["variables"]}
  for out, end_points in [net(ref["input"], training=False),
                          tf.function(net)(ref["input"], training=False)]:
    assert_close(out, ref["output"], what="output")
    for name, shape in spec["end_points"].items():
      assert end_points[name].shape == shape
      assert_close(end_points[name], ref[f"end_point:{name}"], what=name)


# c. end_point shapes at 224.
@pytest.mark.slow
def test_resnet_v2_50_end_point_shapes_at_224(resnet50, ref50):
  images = tf.random.uniform([2, 224, 224, 3], -1, 1)
  want = {k: [2] + s[1:] for k, s in ref50["end_points_at_224"].items()}
  out, end_points = resnet_v2.resnet_v2_50(num_classes=1001, spatial_squeeze=False)(images)
  got = {k: v.shape.as_list() for k, v in end_points.items()}
  assert got == dict(want, global_pool=[2, 1, 1, 2048]) and out.shape == [2, 1, 1, 1001]
  out, end_points = resnet50(images)  # spatial_squeeze=True
  assert out.shape == end_points["predictions"].shape == [2, 1001]
  assert end_points["resnet_v2_50/spatial_squeeze"].shape == [2, 1001]
  assert end_points["resnet_v2_50/logits"].shape == [2, 1, 1, 1001]
  features, end_points = resnet_v2.resnet_v2_50(global_pool=False)(images)  # the backbone alone
  assert features.shape == [2, 7, 7, 2048] and "predictions" not in end_points


# d. restore_from_checkpoint.
def test_restore_shape_mismatch_names_variable_and_shapes_and_assigns_nothing(tiny):
  ok = tf.Variable(tf.zeros([32]), name="tiny_resnet_v2/postnorm/beta")
  bad = tf.Variable(tf.zeros([3]), name="tiny_resnet_v2/conv1/biases")
  with pytest.raises(ValueError, match=r"tiny_resnet_v2/conv1/biases.*\[3\].*\[64\]"):
    resnet_utils.restore_from_checkpoint([ok, bad], tiny[2])
  assert not ok.numpy().any()


def test_restore_exclude_scopes_and_directory(tiny, reference_dir):
  spec, _, ckpt = tiny
  net = tiny_net(spec)
  before = {v.name[:-2]: v.numpy() for v in net.variables}
  result = resnet_utils.restore_from_checkpoint(net.variables, reference_dir / "tiny_resnet_v2",
                                                exclude_scopes=["tiny_resnet_v2/block3"])
  block3 = sorted(n for n, _ in spec["variables"] if n.startswith("tiny_resnet_v2/block3/"))
  # block3 is one unit with depth_in == depth: preact 4 + conv1 5 + conv2 5 + conv3 2, no shortcut
  assert result.unrestored == [] and result.unused == block3 and len(block3) == 16
  reader = tf.train.load_checkpoint(ckpt)
  for v in net.variables:
    name = v.name[:-2]
    want = before[name] if name in block3 else reader.get_tensor(name)
    np.testing.assert_array_equal(v.numpy(), want, err_msg=name)


def test_restore_nothing_matched_name_fn_and_missing_path(tiny, tmp_path):
  spec, _, ckpt = tiny
  renamed = tiny_net(spec, scope="renamed")
  with pytest.raises(ValueError, match="nothing to restore"):
    resnet_utils.restore_from_checkpoint(renamed.variables, ckpt)
  result = resnet_utils.restore_from_checkpoint(
      renamed.variables + (tf.Variable(0.0, name="renamed/extra"),), ckpt,
      name_fn=lambda n: n.replace("renamed/", "tiny_resnet_v2/", 1))
  assert result == (["renamed/extra"], [])
  for path in [tmp_path / "nope.ckpt", tmp_path]:  # a missing prefix; a directory without one
    with pytest.raises(FileNotFoundError, match=str(path)):
      resnet_utils.restore_from_checkpoint(renamed.variables, path)


def test_building_under_a_name_scope_is_refused(tiny):
  with tf.name_scope("outer"), pytest.raises(ValueError, match="outer/tiny_resnet_v2/conv1/"):
    tiny_net(tiny[0])


# e. batch norm's training mode, the trainable flag, output_stride.
@pytest.mark.parametrize("decay", [None, 0.9])
def test_training_updates_moving_stats_with_decay(tiny, decay):
  _, ref, _ = tiny
  net = restored_tiny_net(tiny, **({} if decay is None else {"batch_norm_decay": decay}))
  decay = 0.997 if decay is None else decay  # slim's default
  bn = net.postnorm
  old = {v.name: v.numpy() for v in net.variables}
  out, end_points = net(ref["input"], training=True)
  x = end_points["tiny_resnet_v2/block3"].numpy()  # postnorm's input, [2, 4, 4, 32]
  mean, var = x.mean((0, 1, 2)), x.var((0, 1, 2))
  n = x.size // x.shape[-1]
  np.testing.assert_allclose(bn.moving_mean.numpy(),
                             decay * old[bn.moving_mean.name] + (1 - decay) * mean,
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(bn.moving_variance.numpy(),  # moved toward the unbiased variance
                             decay * old[bn.moving_variance.name] + (1 - decay) * var * n / (n - 1),
                             rtol=1e-5, atol=1e-6)
  expected = np.maximum(bn.gamma.numpy() * (x - mean) / np.sqrt(var + 1e-5) + bn.beta.numpy(), 0)
  assert_close(out, expected, what="postnorm with batch statistics")
  for v in net.variables:  # every moving statistic moved, nothing else did
    assert ("moving_" in v.name) == (not np.array_equal(v.numpy(), old[v.name])), v.name


def test_training_as_tensor_in_tf_function(tiny):
  _, ref, _ = tiny
  net = restored_tiny_net(tiny)
  step = tf.function(lambda x, training: net(x, training=training)[0])
  before = net.postnorm.moving_mean.numpy()
  assert_close(step(ref["input"], tf.constant(False)), ref["output"], what="tf.function inference")
  np.testing.assert_array_equal(net.postnorm.moving_mean.numpy(), before)
  step(ref["input"], tf.constant(True))
  assert not np.array_equal(net.postnorm.moving_mean.numpy(), before)


@pytest.mark.parametrize("training", [False, True])
def test_every_trainable_variable_gets_a_gradient(tiny, training):
  spec, ref, _ = tiny
  net = restored_tiny_net(tiny)
  with tf.GradientTape() as tape:
    out, _ = net(ref["input"], training=training)
    loss = tf.reduce_sum(out ** 2)
  grads = tape.gradient(loss, net.trainable_variables)
  assert len(grads) == sum("moving_" not in n for n, _ in spec["variables"])
  assert all(g is not None and np.isfinite(g.numpy()).all() and np.abs(g.numpy()).sum() > 0
             for g in grads)


def test_trainable_false_makes_nothing_trainable(tiny):
  spec = tiny[0]
  frozen, live = tiny_net(spec, trainable=False), tiny_net(spec)
  assert frozen.trainable is False and frozen.trainable_variables == ()
  assert len(frozen.variables) == len(live.variables) == len(spec["variables"])
  want = {n for n, _ in spec["variables"] if "moving_" not in n}
  assert {v.name[:-2] for v in live.trainable_variables} == want


def test_output_stride_atrous_equals_nominal_subsampled(tiny):
  """slim's atrous check: dense features subsampled to the nominal stride equal the nominal's."""
  _, ref, _ = tiny
  nominal = ref["output"]  # [2, 4, 4, 32]: tiny_resnet_v2's nominal stride is 16 at 64x64
  out, _ = restored_tiny_net(tiny, output_stride=16)(ref["input"])
  np.testing.assert_array_equal(out, restored_tiny_net(tiny)(ref["input"])[0])
  for output_stride in [8, 4]:
    out, end_points = restored_tiny_net(tiny, output_stride=output_stride)(ref["input"])
    size, factor = 64 // output_stride, 16 // output_stride
    assert out.shape == [2, size, size, 32]
    assert end_points["tiny_resnet_v2/block1"].shape == [2, size, size, 16]
    assert_close(out.numpy()[:, ::factor, ::factor], nominal, what=f"stride {output_stride}")
  for bad in [6, 32]:
    with pytest.raises(ValueError, match=f"output_stride {bad}"):
      tiny_net(tiny[0], output_stride=bad)


# f. half-precision compute, float32 variables.
@pytest.mark.parametrize("dtype", [tf.bfloat16, tf.float16])
def test_half_precision_input_runs_close_to_float32(tiny, dtype):
  _, ref, _ = tiny
  net = restored_tiny_net(tiny)
  out, end_points = net(tf.cast(ref["input"], dtype))
  assert out.dtype == dtype and end_points["tiny_resnet_v2/block1"].dtype == dtype
  assert_close(tf.cast(out, tf.float32), ref["output"], tol=3e-2, what=f"{dtype.name} output")
  net(tf.cast(ref["input"], dtype), training=True)  # the fused op's half path, float32 statistics
  assert all(v.dtype == tf.float32 for v in net.variables)
  assert np.isfinite(net.postnorm.moving_variance.numpy()).all()


# g. subsample's gradient, and Conv2D's use of conv2d_stride1's at stride 1.
@pytest.mark.parametrize("shape, factor", [
    ((2, 6, 8, 3), 2), ((2, 7, 5, 3), 2), ((1, 9, 10, 2), 3), ((2, 4, 4, 3), 1)])
def test_subsample_and_its_gradient_equal_a_strided_slice(shape, factor):
  """subsample's pad-based gradient equals the gradient of x[:, ::f, ::f] (TF's own), for even
  and odd sizes; the forward is slim's 1x1 max pool."""
  rng = np.random.RandomState(2)
  x = tf.constant(rng.randn(*shape), tf.float32)
  reference = lambda x: x[:, ::factor, ::factor, :]
  subsample = lambda x: resnet_utils.subsample(x, factor)
  dy = tf.constant(rng.randn(*reference(x).shape), tf.float32)

  def grad(f):
    def g(x):
      with tf.GradientTape() as tape:
        tape.watch(x)
        y = f(x)
      return tape.gradient(y, x, output_gradients=dy)
    return g
  for run in (lambda f: f(x), lambda f: tf.function(f)(x)):
    assert_close(run(subsample), reference(x), tol=0, what="forward")
    assert_close(run(grad(subsample)), run(grad(reference)), tol=0, what="dx")


def gradient_ops(f, *args):
  """The op types of the graph that computes f's gradients."""
  return {op.type for op in tf.function(f).get_concrete_function(*args).graph.get_operations()}


@pytest.mark.parametrize("kernel, stride, padding, custom", [
    (3, 1, "SAME", True), (1, 1, "VALID", True), (1, 1, "SAME", True),
    (3, 2, "SAME", False), (3, 1, "VALID", False), (2, 1, "SAME", False)])
def test_resnet_conv_uses_the_custom_gradient_at_stride_1(kernel, stride, padding, custom):
  """Conv2D at stride 1 with an odd kernel and SAME (or 1x1) goes through conv2d_stride1: its
  gradients equal plain tf.nn.conv2d's, and TF's Conv2DBackpropInput is gone from the graph."""
  rng = np.random.RandomState(1)
  conv = resnet_utils.Conv2D("g/conv", kernel, 3, 4, stride=stride, padding=padding,
                             batch_norm=False, activation=tf.nn.relu)
  conv.biases.assign(rng.randn(4).astype(np.float32))
  x = tf.constant(rng.randn(2, 6, 7, 3), tf.float32)

  def grads(module_fn, x):
    with tf.GradientTape() as tape:
      tape.watch(x)
      loss = tf.reduce_sum(module_fn(x) ** 2)
    return tape.gradient(loss, [x, conv.weights, conv.biases])

  plain = lambda x: tf.nn.relu(tf.nn.conv2d(x, conv.weights, stride, padding) + conv.biases)
  for g, r, name in zip(grads(conv, x), grads(plain, x), ["dx", "dw", "db"]):
    assert_close(g, r, tol=1e-4, what=f"{name} of a {kernel}x{kernel}/{stride} {padding} conv")
  ops = gradient_ops(lambda x: grads(conv, x), x)
  assert ("Conv2DBackpropInput" not in ops) == custom, sorted(ops)
