"""multilabel/exports.py: ONNX run by onnxruntime and TFLite run by the LiteRT interpreter give
the toolkit's own scores on the same views, and carry the names, thresholds and views.

The fast tests export a small ResNet v2 (two tiny blocks, slim's layers) behind the toolkit's
model interface; the slow one exports ResNet-50 v2 + head at 224 px.
"""

import json
import os
import subprocess
import sys

import numpy as np
import onnxruntime
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

import configs
import resnet_utils
import resnet_v2
from multi_label_classification_model import MultiLabelClassificationModel
from multilabel import exports, serving

LABELS = 3
NAMES = ["cat", "dog; puppy", "caf\u00e9"]
THRESHOLDS = [0.25, 0.5, 0.75]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class SmallModel(tf.Module):
  """The toolkit's model interface (config; __call__ -> (logits, end_points["predictions"])) over
  two tiny slim ResNet v2 blocks and a 1x1 head, random weights spread so scores are not 0 or 1."""

  def __init__(self, size=32):
    super().__init__()
    tf.random.set_seed(0)
    self.config = configs.ModelConfig(label_count=LABELS, target_height=size, target_width=size)
    blocks = [resnet_v2.resnet_v2_block("block1", 8, 2, 2),
              resnet_v2.resnet_v2_block("block2", 16, 2, 1)]
    self.net = resnet_v2.resnet_v2(blocks, num_classes=None, global_pool=True, scope="small")
    self.head = resnet_utils.Conv2D("head", (1, 1), 64, LABELS, batch_norm=False,
                                    activation=None)

  def __call__(self, images, training=False):
    net, end_points = self.net(images, training=training)
    logits = tf.squeeze(self.head(net), axis=[1, 2]) * 4.0  # [B, 1, 1, L] -> [B, L]
    end_points["predictions"] = tf.sigmoid(logits)
    return logits, end_points


def scoring_for(size):
  return serving.TestTimeScoring(target=(size, size), resize=(size + 9, size + 9), views="ten",
                                 aggregation="mean", thresholds=np.array(THRESHOLDS),
                                 label_names=NAMES)


def views(size, count=6, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, (count, size, size, 3)).astype(np.float32)


def onnx_scores(path, images):
  session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
  return session.run(None, {session.get_inputs()[0].name: images})[0]


def tflite_scores(path, images):
  """The LiteRT interpreter, its batch resized to the input's (the file's batch is dynamic)."""
  interpreter = Interpreter(model_path=path)
  run = interpreter.get_signature_runner()
  return run(images=images)["scores"]


@pytest.fixture(scope="module")
def small():
  return SmallModel()


@pytest.fixture(scope="module")
def exported(small, tmp_path_factory):
  folder = tmp_path_factory.mktemp("exports")
  scoring = scoring_for(32)
  return {
      "onnx": exports.export(small, str(folder / "m.onnx"), scoring, "onnx"),
      "tflite": exports.export(small, str(folder), scoring, "tflite"),
      "int8": exports.export(small, str(folder / "int8.tflite"), scoring, "tflite", "dynamic")}


def test_onnx_in_onnxruntime_gives_the_toolkits_scores(small, exported):
  images = views(32)
  want = small(images)[1]["predictions"].numpy()
  for batch in (images, images[:1]):  # the batch dimension stays free
    got = onnx_scores(exported["onnx"], batch)
    assert got.shape == (len(batch), LABELS)
    assert np.abs(got - want[:len(batch)]).max() <= 1e-4
  assert 0.05 < want.mean() < 0.95  # scores that could differ, not saturated ones


def test_tflite_float_in_litert_gives_the_toolkits_scores(small, exported):
  images = views(32, seed=1)
  want = small(images)[1]["predictions"].numpy()
  assert exported["tflite"].endswith(os.sep + "model.tflite")  # a folder: model.tflite inside
  for batch in (images, images[:3]):
    assert np.abs(tflite_scores(exported["tflite"], batch) - want[:len(batch)]).max() <= 1e-4


def test_int8_weights_stay_close_and_shrink_the_file(small, exported):
  images = views(32, seed=2)
  want = small(images)[1]["predictions"].numpy()
  assert np.abs(tflite_scores(exported["int8"], images) - want).max() < 0.05
  assert os.path.getsize(exported["int8"]) < os.path.getsize(exported["tflite"])


def test_metadata_carries_names_thresholds_and_views_for_the_runtimes_own_readers(exported):
  """Read by onnxruntime's and LiteRT's own APIs, in a process without TensorFlow, as a user of
  the file would; and by exports.read_info."""
  code = ("import json, sys\nimport onnxruntime\n"
          "from ai_edge_litert import schema_py_generated as schema\n"
          "session = onnxruntime.InferenceSession(sys.argv[1], providers=['CPUExecutionProvider'])\n"
          "found = [session.get_modelmeta().custom_metadata_map['multilabel']]\n"
          "for path in sys.argv[2:]:\n"
          "  model = schema.Model.GetRootAs(open(path, 'rb').read(), 0)\n"
          "  meta = [model.Metadata(i) for i in range(model.MetadataLength())]\n"
          "  [m] = [m for m in meta if m.Name() == b'multilabel']\n"
          "  found.append(model.Buffers(m.Buffer()).DataAsNumpy().tobytes().decode())\n"
          "assert 'tensorflow' not in sys.modules\n"
          "print(json.dumps([json.loads(text) for text in found]))\n")
  paths = [exported[k] for k in ("onnx", "tflite", "int8")]
  result = subprocess.run([sys.executable, "-c", code, *paths], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
  assert result.returncode == 0, result.stderr
  infos = json.loads(result.stdout)
  assert infos == [exports.read_info(p) for p in paths]
  for info in infos:
    assert info["label_names"] == NAMES and info["thresholds"] == THRESHOLDS
    assert (info["views"], info["crops_per_image"], info["aggregation"]) == ("ten", 10, "mean")
    assert info["target"] == [32, 32] and info["resize"] == [41, 41]


def test_output_path_and_bad_choices():
  assert exports.output_path("out/m.onnx", "onnx") == "out/m.onnx"
  assert exports.output_path("out", "tflite") == os.path.join("out", "model.tflite")
  assert exports.output_path("out/m.onnx", "tflite") == os.path.join("out/m.onnx", "model.tflite")
  with pytest.raises(ValueError, match="--quantize=dynamic is for --format=tflite"):
    configs.InferenceConfig(format="onnx", quantize="dynamic").check()


@pytest.mark.slow
def test_resnet50_at_224_in_both_runtimes(tmp_path):
  """The toolkit's own network, ResNet-50 v2 + head, at the original's 224 px."""
  tf.random.set_seed(0)
  model = MultiLabelClassificationModel(configs.ModelConfig(label_count=LABELS))
  scoring = scoring_for(224)
  images = views(224, count=3)
  want = model(images)[1]["predictions"].numpy()
  onnx_path = exports.export(model, str(tmp_path / "r50.onnx"), scoring, "onnx")
  tflite_path = exports.export(model, str(tmp_path / "r50.tflite"), scoring, "tflite")
  assert np.abs(onnx_scores(onnx_path, images) - want).max() <= 1e-4
  assert np.abs(tflite_scores(tflite_path, images) - want).max() <= 1e-4
