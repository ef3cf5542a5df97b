"""A trained-dir-like fixture (conftest.py's `trained`) for the inference, export and serving tests
(no training needed).

ResNet-50 v2 at 64x96 with 3 labels and random weights. The head's last convolution is rescaled so
that the logits are about N(0, 1) on noise images: random ResNet features are in the hundreds, and
saturated sigmoids (all 0 or 1) would make every comparison vacuous.

    <root>/train/config.json, ckpt-10   weights A (no EMA), global step 10
    <root>/train/ckpt-20                raw weights A again, plus EMA shadows holding head B
    <root>/elsewhere/best/              evaluate.py's best/ copy of ckpt-10 and its config.json
    <root>/images/                      noise images of several sizes, a corrupt one, a text file

Head B is head A with the last convolution negated, so scores_B = 1 - scores_A: ckpt-20 gives B
only if both the latest checkpoint and its EMA weights are used.
"""

import io
import os
import shutil
import types

import numpy as np
import tensorflow as tf
from PIL import Image

import configs
from multilabel import checkpoints, config_files
from multilabel.training import optimizers
from multi_label_classification_model import MultiLabelClassificationModel

LABELS = 3
TARGET = (64, 96)  # (height, width); non-square, so that a swapped axis shows
RESIZE = (75, 110)  # margins 11 and 14: the centre crop's offset (5, 7) is not symmetric
DEFAULT_RESIZE = (83, 124)  # round(64 * 290 / 224), round(96 * 290 / 224): inference.py's default
# name -> (height, width, mode); "L" is grayscale (decoded to 3 channels)
IMAGES = {"a.png": (70, 90, "RGB"), "b.png": (100, 64, "RGB"), "c.png": (75, 110, "L"),
          "d.png": (90, 120, "RGB"), "e.jpg": (80, 100, "RGB")}
CORRUPT = "broken.jpg"


def write_images(folder, seed=0):
  os.makedirs(folder, exist_ok=True)
  rng = np.random.default_rng(seed)
  for name, (height, width, mode) in IMAGES.items():
    shape = (height, width) if mode == "L" else (height, width, 3)
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    Image.fromarray(pixels, mode).save(os.path.join(folder, name))
  jpeg = io.BytesIO()
  Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(jpeg, "JPEG")
  with open(os.path.join(folder, CORRUPT), "wb") as f:
    f.write(jpeg.getvalue()[:60])  # a JPEG cut off inside its header
  with open(os.path.join(folder, "notes.txt"), "w") as f:
    f.write("not an image\n")


def calibrate_head(model):
  """Scales the last convolution so that the logits are ~N(0, 1) per label on noise inputs."""
  last = model.head[-1]
  noise = tf.random.stateless_uniform([16, *TARGET, 3], seed=[1, 2], minval=-1.0, maxval=1.0)
  logits, _ = model(noise)
  mean, std = tf.reduce_mean(logits, axis=0), tf.math.reduce_std(logits, axis=0)
  last.weights.assign(last.weights / std)  # [kh, kw, L, L] / [L]: per output channel
  last.biases.assign(last.biases / std - mean / std)


def build(root):
  """Writes the folders above under `root`; returns a namespace of paths, the model (weights A)
  and the head values {variable name: numpy} of A and B."""
  model_config = configs.ModelConfig(label_count=LABELS, target_height=TARGET[0],
                                     target_width=TARGET[1])
  train_config = configs.TrainConfig(ema_decay=0.99)
  tf.random.set_seed(0)
  model = MultiLabelClassificationModel(model_config)
  calibrate_head(model)
  head_a = {v.name: v.numpy() for v in model.trainable_variables}
  last = model.head[-1]
  head_b = dict(head_a)
  head_b[last.weights.name], head_b[last.biases.name] = -last.weights.numpy(), -last.biases.numpy()

  train_dir = os.path.join(root, "train")
  optimizer = optimizers.make_optimizer(train_config, model.trainable_variables)
  optimizer.iterations.assign(10)
  tf.train.CheckpointManager(checkpoints.make_checkpoint(model, optimizer), train_dir,
                             max_to_keep=5).save(checkpoint_number=10)
  ema = optimizers.ExponentialMovingAverage(model.trainable_variables, train_config.ema_decay)
  for shadow, v in zip(ema.shadows, model.trainable_variables):
    shadow.assign(head_b[v.name])
  optimizer.iterations.assign(20)
  tf.train.CheckpointManager(checkpoints.make_checkpoint(model, optimizer, ema), train_dir,
                             max_to_keep=5).save(checkpoint_number=20)
  config_files.save_configs(os.path.join(train_dir, config_files.TRAIN_CONFIG_FILE), model_config,
                        train_config)

  # evaluate.py's best/: the checkpoint's files, config.json and a `checkpoint` state file; moved
  # away from the train dir, so that only its own config.json can be read.
  best_dir = os.path.join(root, "elsewhere", "best")
  os.makedirs(best_dir)
  for path in tf.io.gfile.glob(os.path.join(train_dir, "ckpt-10.*")):
    shutil.copy2(path, best_dir)
  shutil.copy2(os.path.join(train_dir, config_files.TRAIN_CONFIG_FILE), best_dir)
  with open(os.path.join(best_dir, "checkpoint"), "w") as f:
    f.write('model_checkpoint_path: "ckpt-10"\nall_model_checkpoint_paths: "ckpt-10"\n')

  image_dir = os.path.join(root, "images")
  write_images(image_dir)
  return types.SimpleNamespace(
      root=root, train_dir=train_dir, best_dir=best_dir, image_dir=image_dir,
      prefix_a=os.path.join(train_dir, "ckpt-10"), prefix_b=os.path.join(train_dir, "ckpt-20"),
      model=model, heads={"A": head_a, "B": head_b})


def hand_ten_crops(path, resize=RESIZE):
  """The 10 crops built by hand: decode, resize, numpy slicing and np.flip -> [10, h, w, 3].

  PNGs are decoded by PIL (lossless, so exact); JPEGs by TensorFlow, since libjpeg builds differ
  in their rounding and decoding is not what is tested here.
  """
  if path.endswith(".jpg"):
    with open(path, "rb") as f:
      pixels = tf.io.decode_jpeg(f.read(), channels=3).numpy()
  else:
    pixels = np.asarray(Image.open(path).convert("RGB"))
  pixels = pixels.astype(np.float32) / 255.0
  resized = tf.image.resize(pixels, resize).numpy() * 2.0 - 1.0  # bilinear, as inference.py
  (height, width), (th, tw) = resize, TARGET
  corners = [(0, 0), (0, width - tw), (height - th, 0), (height - th, width - tw),
             ((height - th) // 2, (width - tw) // 2)]
  crops = [resized[y:y + th, x:x + tw] for y, x in corners]
  return np.stack(crops + [np.flip(c, axis=1) for c in crops])


def per_crop_scores(fixture, head, paths, resize=RESIZE):
  """{path: [10, L] sigmoid scores} of the model with head 'A' or 'B' on the hand-made crops of
  a `resize` resize, run eagerly (no tf.function, no tf.data)."""
  for v in fixture.model.trainable_variables:
    v.assign(fixture.heads[head][v.name])
  crops = np.concatenate([hand_ten_crops(p, resize) for p in paths])  # [N*10, h, w, 3]
  _, end_points = fixture.model(crops)
  scores = end_points["predictions"].numpy().reshape(len(paths), 10, LABELS)
  return dict(zip(paths, scores))
