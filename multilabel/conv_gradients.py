"""Convolution gradients written for the CPU: resnet_utils.Conv2D's stride-1 convolutions.

TensorFlow's CPU kernels for a convolution's input and filter gradients are much slower than its
forward convolution on ResNet's small, deep feature maps. `conv2d_stride1` is the forward conv
with a custom gradient that computes both as forward convolutions (or a matmul for 1x1 kernels),
equal to TensorFlow's own (tests/multilabel/test_conv_gradients.py checks it). On a GPU the filter gradient stays
cuDNN's.
"""

import tensorflow as tf


def conv2d_stride1(x, w, rate=1):
  """tf.nn.conv2d(x, w, 1, "SAME", dilations=rate) for odd kernels, with a faster gradient.

  TensorFlow's CPU Conv2DBackpropInput is very slow on small feature maps with many channels
  (13x slower than the forward conv at 2x2x512, 2.5x at 7x7x512: ResNet's block4). For stride 1
  and symmetric SAME padding the input gradient is itself a SAME convolution of the output
  gradient with the kernel flipped in space and transposed in depth, so it is computed that way.
  The filter gradient is a matmul for 1x1 kernels and, on the CPU, a forward conv otherwise
  (`_filter_gradient`). All equal TensorFlow's own gradients (tests check it).
  """
  @tf.custom_gradient
  def conv(x, w):
    def grad(dy):
      w_flipped = tf.transpose(tf.reverse(w, axis=[0, 1]), [0, 1, 3, 2])  # [kh, kw, out, in]
      dx = tf.nn.conv2d(dy, w_flipped, 1, "SAME", dilations=rate)
      return dx, _filter_gradient(x, w, dy, rate)
    return tf.nn.conv2d(x, w, 1, "SAME", dilations=rate), grad
  return conv(x, w)


def _filter_gradient(x, w, dy, rate):
  """dL/dw of y = conv2d(x, w, 1, "SAME", dilations=rate), odd kernel: [kh, kw, in, out].

  1x1: one matmul over the N*H*W pixels, ordered so the longer side of the [in, out] result is
  the matmul's row dimension (up to 1.4x faster on the CPU when in > out). Larger kernels on the
  CPU: dw[i, j, c, o] = sum_{n,h,w} x_pad[n, h + i*rate, w + j*rate, c] dy[n, h, w, o] is a VALID
  forward conv of x_pad laid out as [in, H', W', N] with dy as an [H, W, N, out] filter, at
  stride `rate`: 1.1-1.6x faster than TF's CPU Conv2DBackpropFilter on ResNet's 3x3 layers,
  whose forward conv kernel is better tuned. On a GPU, cuDNN's own filter gradient is kept.
  """
  kh, kw, depth_in, depth = w.shape
  if kh == kw == 1:
    if depth_in > depth:
      dw = tf.matmul(tf.reshape(dy, [-1, depth]), tf.reshape(x, [-1, depth_in]), transpose_a=True)
      return tf.reshape(tf.transpose(dw), tf.shape(w))  # [out, in] -> [1, 1, in, out]
    return tf.reshape(tf.matmul(tf.reshape(x, [-1, depth_in]), tf.reshape(dy, [-1, depth]),
                                transpose_a=True), tf.shape(w))  # [N*H*W, in]^T [N*H*W, out]
  if tf.config.list_logical_devices("GPU"):
    return _tape_filter_gradient(x, w, dy, rate)
  ph, pw = (kh - 1) // 2 * rate, (kw - 1) // 2 * rate
  x_pad = tf.pad(x, [[0, 0], [ph, ph], [pw, pw], [0, 0]])
  dw = tf.nn.conv2d(tf.transpose(x_pad, [3, 1, 2, 0]),  # [N, H', W', in] -> [in, H', W', N]
                    tf.transpose(dy, [1, 2, 0, 3]),  # [N, H, W, out] -> [H, W, N, out]
                    rate, "VALID")  # [in, kh, kw, out]
  return tf.transpose(dw, [1, 2, 0, 3])  # [in, kh, kw, out] -> [kh, kw, in, out]


def _tape_filter_gradient(x, w, dy, rate):
  """TensorFlow's own filter gradient (cuDNN's on a GPU; space_to_batch + conv if dilated)."""
  with tf.GradientTape() as tape:
    tape.watch(w)
    y = tf.nn.convolution(x, w, 1, "SAME", dilations=rate)
  return tape.gradient(y, w, output_gradients=dy)
