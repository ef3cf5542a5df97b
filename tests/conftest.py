"""Shared pytest fixtures: the slim reference dir, tiny model configs and models, images, the
records several modules read, a trained-dir-like fixture, and an in-process tf.data service.

Plain helper functions (the one records writer among them) are in helpers.py.
"""
import json
import pathlib
import time

import numpy as np
import pytest
import tensorflow as tf

import configs
import multi_label_classification_model as mlc
from tests import helpers
from tests import inference_fixture as fx

# TF-Slim ground truth, made by TF-Slim itself (tests/fixtures/slim_resnet_v2/README.md).
REFERENCE_DIR = pathlib.Path(__file__).resolve().parent / "fixtures/slim_resnet_v2"


@pytest.fixture(scope="session")
def reference_dir():
  """REFERENCE_DIR; fails (never skips) when it is missing."""
  assert REFERENCE_DIR.is_dir(), f"slim reference fixtures missing: {REFERENCE_DIR}"
  return REFERENCE_DIR


@pytest.fixture(scope="module")
def backbone_ref(reference_dir):
  """slim's resnet_v2_50 variables without the logits: what the backbone must hold."""
  ref = json.loads((reference_dir / "resnet_v2_50_variables.json").read_text())
  return {n: s for n, s in ref["variables"] if not n.startswith("resnet_v2_50/logits/")}


# ---------------------------------------------------------------------------------------------
# Tiny model configs and models (ResNet-50 v2 at 64 px, random weights).

@pytest.fixture(scope="session")
def model_config():
  """ModelConfig(**overrides) from a tiny default: 5 labels, 64x64 crops of a 72x72 resize."""
  def make(**overrides):
    kw = dict(label_count=helpers.TINY_LABELS, target_height=64, target_width=64,
              resize_height=72, resize_width=72)
    return configs.ModelConfig(**dict(kw, **overrides))
  return make


@pytest.fixture(scope="module")
def frozen(model_config):
  """train_base_network=False (the default), 64x64."""
  return mlc.MultiLabelClassificationModel(model_config())


@pytest.fixture(scope="module")
def tuned(model_config):
  """train_base_network=True, 64x64."""
  return mlc.MultiLabelClassificationModel(model_config(train_base_network=True))


@pytest.fixture(scope="module")
def images():
  """Two random 64x64 images in [-1, 1]."""
  return tf.constant(np.random.RandomState(0).uniform(-1, 1, [2, 64, 64, 3]), tf.float32)


# ---------------------------------------------------------------------------------------------
# Image files and records.

@pytest.fixture(scope="module")
def noise_image_dir(tmp_path_factory):
  """inference_fixture's image folder alone (no model): noise images of several sizes, a corrupt
  JPEG and a text file."""
  folder = str(tmp_path_factory.mktemp("images"))
  fx.write_images(folder)
  return folder


POS_LABELS = np.array([[1, 0, -1, 1], [0, 0, 1, 1], [1, -1, 0, 1], [0, 0, 0, 1], [1, 0, -1, 1],
                       [-1, 1, 0, 1]])  # pos_data's labels, by row


@pytest.fixture(scope="module")
def pos_data(tmp_path_factory):
  """POS_LABELS' rows dealt over two records files (4 labels, unknowns among them)."""
  folder = tmp_path_factory.mktemp("pos")
  return [helpers.write_records(folder / f"part{i}.tfrecord", POS_LABELS[i::2], seed=i)
          for i in range(2)]


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
  """40 records in 4 files, labels helpers.id_labels (the tf.data service hands out files, so
  that it has several to hand out)."""
  folder = tmp_path_factory.mktemp("records")
  helpers.write_records(folder / "r.tfrecord", [helpers.id_labels(i) for i in range(40)],
                        side=64, num_shards=4)
  return str(folder / "r.tfrecord-*")


# ---------------------------------------------------------------------------------------------
# A trained-dir-like folder (inference_fixture.py): checkpoints, config.json, images.

@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  return fx.build(str(tmp_path_factory.mktemp("trained")))


# ---------------------------------------------------------------------------------------------
# The tf.data service, in process.

@pytest.fixture(scope="session")
def service_config():
  """ModelConfig(**overrides) of the service tests: `spec`'s records (helpers.id_labels), 32x32
  crops of a 36x36 resize, batches of 4."""
  def make(spec, **overrides):
    return configs.ModelConfig(label_count=helpers.ID_BITS, target_height=32, target_width=32,
                               resize_height=36, resize_width=36, batch_size=4,
                               input_tfrecord_file=spec, **overrides)
  return make


@pytest.fixture(scope="module")
def service():
  """An in-process dispatcher and two workers on 127.0.0.1: (grpc address, workers)."""
  service = tf.data.experimental.service
  dispatcher = service.DispatchServer(service.DispatcherConfig(port=0))
  port = dispatcher.target.rsplit(":", 1)[1]
  workers = [service.WorkerServer(service.WorkerConfig(
      dispatcher_address=f"127.0.0.1:{port}", worker_address="127.0.0.1:%port%"))
      for _ in range(2)]
  deadline = time.time() + 60
  registered = dispatcher._num_workers  # pylint: disable=protected-access
  while registered() < 2 and time.time() < deadline:
    time.sleep(0.1)
  assert registered() == 2
  yield f"grpc://127.0.0.1:{port}", workers
  for server in workers + [dispatcher]:
    server.stop()
