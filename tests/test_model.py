"""multi_label_classification_model against numpy and hand computations: the head, the frozen and
the fine-tuned backbone, the losses, preprocessing, the tf.data pipeline and first-run restore.

  .venv/bin/python -m pytest tests/test_model.py -m "not slow"   # fast, 64 px
  .venv/bin/python -m pytest tests/test_model.py                 # + the head at 224
"""
import json

import numpy as np
import pytest
import tensorflow as tf

import configs
import multi_label_classification_model as mlc
from multilabel.data import preprocessing, records
from multilabel.training import losses, train_step

L = 5  # labels
HEAD = "my_sub_network"


def model_config(**overrides):
  kw = dict(label_count=L, target_height=64, target_width=64, resize_height=72, resize_width=72)
  return configs.ModelConfig(**dict(kw, **overrides))


def names_and_shapes(variables):
  return {v.name[:-2]: v.shape.as_list() for v in variables}


def head_names_and_shapes(labels, kernel):
  """What the issue specifies: 1x1 -> L, 1x1 -> L, kh x kw -> L, each with biases."""
  weights = {"my_conv_1": [1, 1, 2048, labels], "my_conv_2": [1, 1, labels, labels],
             "my_conv_3": [*kernel, labels, labels]}
  out = {f"{HEAD}/{c}/weights": s for c, s in weights.items()}
  out.update({f"{HEAD}/{c}/biases": [labels] for c in weights})
  return out


def sigmoid(x):
  return np.exp(-np.logaddexp(0, -x))  # 1 / (1 + exp(-x)) without overflow


def snapshot(variables):
  return {v.name: v.numpy().copy() for v in variables}


@pytest.fixture(scope="module")
def backbone_ref(reference_dir):
  """slim's resnet_v2_50 variables without the logits: what the backbone must hold."""
  ref = json.loads((reference_dir / "resnet_v2_50_variables.json").read_text())
  return {n: s for n, s in ref["variables"] if not n.startswith("resnet_v2_50/logits/")}


@pytest.fixture(scope="module")
def frozen():
  """train_base_network=False (the default), 64x64."""
  return mlc.MultiLabelClassificationModel(model_config())


@pytest.fixture(scope="module")
def tuned():
  """train_base_network=True, 64x64."""
  return mlc.MultiLabelClassificationModel(model_config(train_base_network=True))


@pytest.fixture(scope="module")
def wide():
  """A rectangular 64x96 target. test_first_run_restore restores its backbone (its head stays)."""
  return mlc.MultiLabelClassificationModel(model_config(target_width=96, resize_width=104))


@pytest.fixture(scope="module")
def images():
  return tf.constant(np.random.RandomState(0).uniform(-1, 1, [2, 64, 64, 3]), tf.float32)


# ---------------------------------------------------------------------------------------------
# The head.

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


# ---------------------------------------------------------------------------------------------
# Frozen backbone and fine-tuning.

# ---------------------------------------------------------------------------------------------
# Losses, against numpy.

LOGITS = np.array([[2.0, -1.0, 0.0, 30.0, -30.0],
                   [-4.5, 3.25, 0.5, -0.75, 1.5],
                   [0.1, -6.0, 5.0, -2.0, 12.0]], np.float32)
LABELS = np.array([[1, 0, 1, 0, 1], [0, 1, 1, 0, 0], [1, 1, 0, 0, 1]], np.float32)


def numpy_sigmoid_ce(x, z):
  """-z log p - (1 - z) log(1 - p), p = sigmoid(x), in the overflow-free form."""
  x, z = x.astype(np.float64), z.astype(np.float64)
  return np.maximum(x, 0) - x * z + np.log1p(np.exp(-np.abs(x)))


# Unknown (-1) labels: masked out, and the mean taken over the known entries.

HIDDEN = np.array([[1, -1, 1, 0, -1], [-1, -1, -1, -1, -1], [1, 1, -1, 0, 1]], np.float32)


def numpy_entry_losses(kind, x, z):
  """[B, L] per-entry losses of the three kinds, in numpy (z must be 0/1 here)."""
  x, z = x.astype(np.float64), z.astype(np.float64)
  p = sigmoid(x)
  if kind == "sigmoid":
    return numpy_sigmoid_ce(x, z)
  if kind == "focal":  # gamma 2
    p_t = np.where(z == 1, p, 1 - p)
    return (1 - p_t) ** 2 * -np.log(p_t)
  p_m = np.maximum(p - 0.05, 0)  # asymmetric: gamma_neg 4, gamma_pos 0, clip 0.05
  return -(z * np.log(p) + (1 - z) * p_m ** 4 * np.log(1 - p_m))


POS_WEIGHT = [3.0, 0.5, 1.0, 7.25, 2.0]


# ---------------------------------------------------------------------------------------------
# Preprocessing.

def smooth_image(height, width, seed=0):
  """A smooth uint8 RGB image: JPEG keeps it well, and resizing it is not trivial."""
  rng = np.random.RandomState(seed)
  yy, xx = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
  channels = [128 + 100 * np.sin(2 * np.pi * (a * 3 * yy + b * 3 * xx) + c)
              for a, b, c in rng.rand(3, 3)]
  return np.stack(channels, -1).round().astype(np.uint8)


def jpeg(image):
  # 4:4:4 at quality 100: a cropped decode then equals the full decode's pixels exactly
  return tf.io.encode_jpeg(image, quality=100, chroma_downsampling=False)


def decoded(data):
  """The test's own decode: [H, W, 3] float64 in [0, 1]."""
  return tf.io.decode_jpeg(data, channels=3).numpy().astype(np.float64) / 255.0


def resized(image, size):
  return tf.image.resize(image, size).numpy()  # bilinear, half-pixel centres


def fixed_uniform(monkeypatch, values):
  """tf.random.uniform returns `values` (the train crop's draw) instead of random numbers."""
  monkeypatch.setattr(tf.random, "uniform",
                      lambda shape, *args, **kw: tf.constant(values, tf.float32))


def window(source_hw, resize_hw, target_hw):
  return preprocessing.train_crop_window(source_hw, resize_hw, target_hw).numpy().tolist()


# Augmentation choices (ModelConfig.augmentation).

# ---------------------------------------------------------------------------------------------
# Input pipeline.

def write_records(path, labels, sizes=None):
  """Records as create_tfrecord.py writes them; returns [(path, jpeg bytes, labels)]."""
  written = []
  with records.atomic_tfrecord_writer(str(path)) as writer:
    for i, row in enumerate(labels):
      h, w = sizes[i] if sizes else (30 + 7 * i, 60 - 4 * i)
      data = jpeg(smooth_image(h, w, seed=i)).numpy()
      written.append((f"images/{i}.jpg", data, row))
      writer.write(records.make_example(*written[-1]).SerializeToString())
  return written


LABEL_ROWS = [[1, 0, 0, 1], [0, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 1], [1, 0, 1, 1], [0, 1, 1, 1],
              [0, 0, 1, 0]]  # 7 distinct rows: batches of 3 leave a partial one


@pytest.fixture(scope="module")
def record_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("records") / "train.tfrecord"
  return path, write_records(path, LABEL_ROWS)


def pipeline_config(path, **overrides):
  kw = dict(label_count=4, target_height=32, target_width=32, resize_height=36, resize_width=36,
            batch_size=3, input_tfrecord_file=str(path), shuffle_buffer=100)
  return configs.ModelConfig(**dict(kw, **overrides))


# ---------------------------------------------------------------------------------------------
# First-run restore from a slim (name-based) checkpoint.

