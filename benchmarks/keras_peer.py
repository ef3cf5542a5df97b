"""The peer the benchmarks compare the toolkit with: what a practitioner writes in Keras.

keras.applications.ResNet50V2(weights=None, include_top=False) + the original toolkit's head
(1x1 L ReLU, 1x1 L ReLU, k x k VALID linear, squeeze, sigmoid), compiled with the toolkit's
default optimiser: Adam with lr 0.001 in the original's exponential decay and clipping by the
global norm at 5 (`global_clipnorm`), and binary cross-entropy. Keras's own layer defaults stay
(Glorot-uniform convs, batch norm momentum 0.99), as a hand-written fine-tune would have them. Used by throughput.py (speed) and accuracy.py (mAP).
"""

import os
import sys

import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import configs  # noqa: E402
import run_utils  # noqa: E402


def keras_model(image_size, label_count, precision="float32", jit_compile=False,
                learning_rate=None):
  """The compiled peer for square `image_size` inputs in [-1, 1] (ResNet50V2's own range).

  jit_compile: True forces XLA; False leaves Keras's "auto" (off on a CPU-only machine).
  learning_rate: a schedule; default the toolkit's default (0.001, the original's decay).
  """
  keras = tf.keras
  if precision != "float32":
    keras.mixed_precision.set_global_policy(precision)
  base = keras.applications.ResNet50V2(weights=None, include_top=False,
                                       input_shape=(image_size, image_size, 3))
  x = keras.layers.Conv2D(label_count, 1, activation="relu", name="my_conv_1")(base.output)
  x = keras.layers.Conv2D(label_count, 1, activation="relu", name="my_conv_2")(x)
  x = keras.layers.Conv2D(label_count, image_size // 32, padding="valid", name="my_conv_3")(x)
  x = keras.layers.Reshape((label_count,))(x)  # squeeze [B, 1, 1, L] -> [B, L]
  out = keras.layers.Activation("sigmoid", dtype="float32")(x)
  model = keras.Model(base.input, out)
  defaults = configs.TrainConfig()
  schedule = learning_rate or run_utils.learning_rate_schedule(defaults)  # 0.001, the decay
  # global_clipnorm: the toolkit clips by the global norm (clip_by_global_norm, 5.0).
  model.compile(optimizer=keras.optimizers.Adam(schedule,
                                                global_clipnorm=defaults.clip_gradients),
                loss=keras.losses.BinaryCrossentropy(),
                jit_compile=True if jit_compile else "auto")
  return model
