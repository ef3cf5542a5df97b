"""The peer the benchmarks compare the toolkit with: what a practitioner writes in Keras.

keras.applications.ResNet50V2(weights=None, include_top=False) + the original toolkit's head
(1x1 L ReLU, 1x1 L ReLU, k x k VALID linear, squeeze, sigmoid), compiled with the toolkit's
default optimiser: Adam with lr 0.001 in the original's exponential decay and clipping by the
global norm at 5 (`global_clipnorm`), and binary cross-entropy. Keras's own layer defaults stay
(Glorot-uniform convs, batch norm momentum 0.99), as a hand-written fine-tune would have them.
Used by throughput.py (speed: the runners below, timed by timing.py) and accuracy.py (mAP).
"""

import math
import os

import tensorflow as tf

import configs
from multilabel.training import optimizers
from benchmarks.bench_data import memory_dataset
from benchmarks.timing import KerasWindow


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
  schedule = learning_rate or optimizers.learning_rate_schedule(defaults)  # 0.001, the decay
  # global_clipnorm: the toolkit clips by the global norm (clip_by_global_norm, 5.0).
  model.compile(optimizer=keras.optimizers.Adam(schedule,
                                                global_clipnorm=defaults.clip_gradients),
                loss=keras.losses.BinaryCrossentropy(),
                jit_compile=True if jit_compile else "auto")
  return model


def keras_forward_flops(model, batch):
  """Conv FLOPs of each conv layer of one forward pass (2 per multiply-add), in layer order,
  from the layers' static shapes."""
  flops = []
  for layer in model.layers:
    if isinstance(layer, tf.keras.layers.Conv2D):
      kh, kw, cin, _ = layer.kernel.shape
      flops.append(2 * batch * math.prod(layer.output.shape[1:]) * kh * kw * cin)
  return flops


def keras_fit_runner(model, data, batch, steps_per_window, warmup):
  dataset, timer = memory_dataset(*data, batch), KerasWindow()

  def run(steps):
    model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0, shuffle=False,
              callbacks=[timer])
    return timer.before, timer.after, steps * batch
  return lambda: run(warmup), lambda: run(steps_per_window)


def keras_predict_runner(model, crops, warmup, crops_per_batch=0):
  """Keras predict on the same crops, [B * 10, s, s, 3], as one batch (or batches of
  crops_per_batch); counted in images (10 crops each)."""
  flat = tf.reshape(crops, [-1] + crops.shape[2:].as_list())  # [B, 10, s, s, 3] -> [B*10, ...]
  per_batch = crops_per_batch or int(flat.shape[0])
  steps_per_pass = int(flat.shape[0]) // per_batch
  dataset = tf.data.Dataset.from_tensor_slices(flat).batch(per_batch).repeat()
  timer = KerasWindow()

  def run(passes):
    model.predict(dataset, steps=passes * steps_per_pass, verbose=0, callbacks=[timer])
    return timer.before, timer.after, passes * int(crops.shape[0])
  return lambda: run(warmup), lambda: run(1)
