"""multilabel/conv_gradients.py: conv2d_stride1's hand-written gradient equals TensorFlow's own.
(From tests/test_resnet_v2.py.)"""
import numpy as np
import pytest
import tensorflow as tf

from multilabel import conv_gradients
from tests.helpers import assert_close


def tf_conv_gradients(conv, x, w, dy):
  """(dx, dw) of sum(conv(x, w) * dy), by GradientTape."""
  with tf.GradientTape() as tape:
    tape.watch([x, w])
    loss = tf.reduce_sum(conv(x, w) * dy)
  return tape.gradient(loss, [x, w])


@pytest.mark.parametrize("eager", [True, False], ids=["eager", "tf.function"])
@pytest.mark.parametrize("rate", [1, 2], ids=["rate1", "rate2"])
@pytest.mark.parametrize("kernel", [(1, 1), (3, 3), (1, 3), (5, 3)],
                         ids=["1x1", "3x3", "1x3", "5x3"])
@pytest.mark.parametrize("depths", [(3, 4), (5, 2)], ids=["in<out", "in>out"])
def test_conv2d_stride1_gradient_equals_tensorflows(kernel, rate, eager, depths):
  rng = np.random.RandomState(0)
  x = tf.constant(rng.randn(2, 5, 7, depths[0]), tf.float32)  # odd, non-square maps
  w = tf.constant(rng.randn(*kernel, *depths), tf.float32)
  dy = tf.constant(rng.randn(2, 5, 7, depths[1]), tf.float32)
  # TF's default gradient; tf.nn.convolution because tf.nn.conv2d's own gradient has no CPU
  # kernel for dilations > 1 (it runs a dilated conv as space_to_batch + conv2d there).
  reference = lambda x, w: tf.nn.convolution(x, w, 1, "SAME", dilations=rate)
  custom = lambda x, w: conv_gradients.conv2d_stride1(x, w, rate)
  run = (lambda f, *a: f(*a)) if eager else (lambda f, *a: tf.function(f)(*a))
  assert_close(custom(x, w), reference(x, w), what="forward")
  want = run(tf_conv_gradients, reference, x, w, dy)
  got = run(tf_conv_gradients, custom, x, w, dy)
  for name, g, r in zip(["dx", "dw"], got, want):
    assert_close(g, r, tol=1e-4, what=f"{name}, kernel {kernel}, rate {rate}")
