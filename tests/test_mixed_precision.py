"""ModelConfig.precision: float32 | mixed_bfloat16 | mixed_float16, on the CPU.

  .venv/bin/python -m pytest tests/test_mixed_precision.py    # about 1 min on 2 CPU cores

The compute dtype runs through the backbone and the head while variables, logits, sigmoid and loss
stay float32; slim checkpoints restore into the float32 variables; mixed_float16 scales the loss
dynamically and clips the true (unscaled) gradient, and its checkpoints carry the loss scale
across a resume; a mixed_bfloat16 run trains and is evaluated and scored by evaluate.py and
inference.py, which rebuild it, in bfloat16, from its config.json. (The model's compute dtype and
the slim restore are tested in tests/test_multi_label_classification_model.py, the train step's
loss scaling in tests/multilabel/training/test_train_step.py.)
"""
import io
import json
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import evaluate
import inference
import multi_label_classification_model as mlc
import train
from multilabel import checkpoints, config_files
from multilabel.data.preprocessing import build_dataset
from multi_label_classification_model import MultiLabelClassificationModel
from tests.helpers import read_scalars, write_records

# Both tests here are whole train.py runs (then evaluate.py and inference.py): the slow tier.
pytestmark = pytest.mark.slow
L = 3
HALF = {"mixed_bfloat16": tf.bfloat16, "mixed_float16": tf.float16}
SMALL = dict(label_count=L, target_height=64, target_width=64, resize_height=72, resize_width=72)


# ---------------------------------------------------------------------------------------------
# Whole runs: train.py, then evaluate.py and inference.py on its checkpoint.

def jpeg(rng, size=64):
  buffer = io.BytesIO()
  Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, "JPEG")
  return buffer.getvalue()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  """16 random 64x64 JPEG records with random labels, in one file; and the same images as files."""
  root = tmp_path_factory.mktemp("data")
  rng = np.random.default_rng(0)
  path, images = root / "train.tfrecord", root / "images"
  images.mkdir()
  jpegs, labels = [], []
  for i in range(16):
    jpegs.append(jpeg(rng))
    (images / f"img{i:02d}.jpg").write_bytes(jpegs[-1])
    labels.append(rng.integers(0, 2, L))
  write_records(path, labels, images=jpegs, name="img{:02d}.jpg")
  return str(path), str(images)


def train_args(data_path, train_dir, **overrides):
  args = dict(SMALL, input_tfrecord_file=data_path, train_dir=train_dir, batch_size=4,
              log_every_n_steps=1, image_summary_steps=0, gpu_id="-1", **overrides)
  return [f"--{k}={v}" for k, v in args.items()]


def test_mixed_bfloat16_trains_without_nan_and_evaluates_and_infers(data, tmp_path):
  """3 fine-tuning steps in bfloat16 (the whole backbone's backward pass too); then evaluate.py
  and inference.py rebuild the model from config.json, in bfloat16."""
  data_path, image_dir = data
  train_dir = str(tmp_path / "train")
  # batch_norm_decay=0 (the moving statistics are the last batch's) and small SGD steps (which
  # keep them valid for the final weights): the evaluated network is then normalised and its
  # sigmoids are not all saturated, which would hide the compute dtype
  assert train.main(train_args(data_path, train_dir, precision="mixed_bfloat16",
                               number_of_steps=3, train_base_network=True,
                               batch_norm_decay=0.0, optimizer="SGD", learning_rate=0.01)) == 0
  scalars = read_scalars(train_dir)
  for tag in ("loss/total", "gradient_norm"):
    values = [scalars[tag][s] for s in (1, 2, 3)]
    assert np.all(np.isfinite(values)), (tag, values)
  assert scalars["gradient_norm"][1] > 0
  reader = tf.train.load_checkpoint(os.path.join(train_dir, "ckpt-3"))
  dtypes = reader.get_variable_to_dtype_map()
  for key, dtype in dtypes.items():
    if key.startswith("model/"):
      assert dtype == tf.float32, key
      assert np.isfinite(reader.get_tensor(key)).all(), key
  with open(os.path.join(train_dir, config_files.TRAIN_CONFIG_FILE)) as f:
    assert json.load(f)["model"]["precision"] == "mixed_bfloat16"

  # evaluate.py: its scores are the bfloat16 model's, not a float32 rebuild's.
  score_file = str(tmp_path / "eval_scores.txt")
  assert evaluate.main([f"--checkpoint_dir={train_dir}", f"--input_tfrecord_file={data_path}",
                        "--run_once=true", "--batch_size=8", f"--score_file={score_file}"]) == 0
  scores = np.loadtxt(score_file, ndmin=2)
  assert scores.shape == (16, L) and np.isfinite(scores).all()
  by_precision = {}
  for precision in ("mixed_bfloat16", "float32"):
    model_config = mlc.load_model_config(train_dir)
    model_config.precision = precision
    model = MultiLabelClassificationModel(model_config)
    step = checkpoints.restore_model(model, tf.train.latest_checkpoint(train_dir), use_ema=True)
    assert step == 3 and model.dtype == HALF.get(precision, tf.float32)
    model_config.batch_size = 8
    # In a tf.function, as evaluate.py runs it: graph rewrites (oneDNN's fusions, on CPUs that
    # have it) round bfloat16 differently from eager execution.
    predict = tf.function(lambda images: model(images)[1]["predictions"])
    by_precision[precision] = np.concatenate([
        predict(images).numpy() for images, _, _ in build_dataset(model_config, "eval")])
  np.testing.assert_allclose(scores, by_precision["mixed_bfloat16"], atol=1e-6)
  assert np.abs(scores - by_precision["float32"]).max() > 1e-4
  assert 0.05 < scores.mean() < 0.95

  # inference.py: 10-crop scores of the same images, finite probabilities.
  out = tmp_path / "inference"
  assert inference.main([f"--checkpoint_path={train_dir}", f"--image_dir={image_dir}",
                         f"--inference_dir={out}", "--gpu_id=-1", "--resize_height=0",
                         "--resize_width=0"]) == 0
  crops = np.loadtxt(out / "scores.txt", ndmin=2)
  assert crops.shape == (16, L) and np.isfinite(crops).all()
  assert ((crops >= 0) & (crops <= 1)).all()


def test_mixed_float16_checkpoint_keeps_the_loss_scale_and_resumes(data, tmp_path, capsys):
  """Dynamic loss scaling, accounted for: each train step either applies (the optimizer's step,
  saved as global_step, goes up by one) or overflows float16 (the scale halves; nothing else
  changes), and the scale only grows after 2000 good steps. So over n steps from scale s0,
  steps applied + log2(s0 / s) == n. Across a resume this holds only if the checkpoint restored
  the scale (a fresh 2^15 would make log2(s_2 / s) negative). A random frozen backbone's
  features are in the hundreds, so the first steps at 2^15 do overflow."""
  data_path, _ = data
  train_dir = str(tmp_path / "train")
  args = train_args(data_path, train_dir, precision="mixed_float16", optimizer="SGD",
                    learning_rate=0.01)

  def step_and_scale(prefix):
    reader = tf.train.load_checkpoint(os.path.join(train_dir, prefix))
    keys = [k for k in reader.get_variable_to_shape_map() if "dynamic_scale" in k]
    assert len(keys) == 1, "the loss scale is not in the checkpoint"
    return (int(reader.get_tensor("global_step/.ATTRIBUTES/VARIABLE_VALUE")),
            float(reader.get_tensor(keys[0])))

  assert train.main(args + ["--number_of_steps=4"]) == 0
  applied_4, scale_4 = step_and_scale("ckpt-4")
  assert applied_4 + np.log2(2.0 ** 15 / scale_4) == 4
  assert scale_4 < 2.0 ** 15  # it did overflow (else the resume below would check nothing)
  capsys.readouterr()
  assert train.main(args + ["--number_of_steps=16"]) == 0  # resumes: every object must match
  assert "resumed from" in capsys.readouterr().out
  # train.py runs 16 - applied_4 more steps: from the restored global step to 16
  prefix = tf.train.latest_checkpoint(train_dir)
  applied, scale = step_and_scale(os.path.basename(prefix))
  assert applied - applied_4 + np.log2(scale_4 / scale) == 16 - applied_4
  assert applied > applied_4  # it does train once the scale has come down
  losses = read_scalars(train_dir)["loss/total"]
  assert np.isfinite(losses[max(losses)])
