"""The benchmarks' data: COCO-like photos and the demo's digits, their TFRecords written by
create_tfrecord.py (as a user writes them), and batches of them held in memory.

    make_records       640x480 photos of ~140 KB -> 2 shards (throughput.py, gpu_check.py)
    make_demo_records  make_demo_data.py's digits -> train and eval shards (accuracy.py)
"""

import io
import os
import subprocess
import sys
import time

import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw, ImageFilter

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from multilabel.data import records
from multilabel.data.preprocessing import preprocess_ten_crop, ten_crop_resize


def run_script(command, log_path=None):
  """Runs a repo script with this Python; its output goes to log_path (default: nowhere, its
  errors to stderr); raises on failure."""
  if log_path is None:
    status = subprocess.call([sys.executable, *command], cwd=REPO, stdout=subprocess.DEVNULL)
  else:
    with open(log_path, "w") as log:
      status = subprocess.call([sys.executable, *command], cwd=REPO, stdout=log,
                               stderr=subprocess.STDOUT)
  if status:
    raise RuntimeError(f"{' '.join(command[:1])} failed with status {status}"
                       + (f"; see {log_path}" if log_path else ""))


def create_records(image_dir, list_dir, output, flags=(), log_path=None):
  """create_tfrecord.py on <list_dir>/image_list and image_label into 2 shards of `output`;
  returns the shards' glob."""
  run_script(["create_tfrecord.py", f"--image_dir={image_dir}",
              f"--imglist_file={list_dir}/image_list", f"--imglabel_file={list_dir}/image_label",
              f"--output_file={output}", "--num_shards=2", *flags], log_path)
  return output + "-*"


def make_photo(rng, width=640, height=480):
  """A smooth random colour field with shapes, blurred, plus sensor-like noise: at quality 90
  it encodes to ~140 KB, like COCO's 640x480 photos (so JPEG decode costs what it would)."""
  coarse = rng.integers(0, 256, (int(rng.integers(3, 9)), int(rng.integers(3, 9)), 3), np.uint8)
  image = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
  draw = ImageDraw.Draw(image)
  for _ in range(int(rng.integers(5, 15))):
    x0, y0 = int(rng.integers(-50, width)), int(rng.integers(-50, height))
    box = [x0, y0, x0 + int(rng.integers(20, 320)), y0 + int(rng.integers(20, 240))]
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    kind = int(rng.integers(3))
    if kind == 0:
      draw.ellipse(box, fill=colour)
    elif kind == 1:
      draw.rectangle(box, fill=colour)
    else:
      draw.polygon([(int(rng.integers(width)), int(rng.integers(height))) for _ in range(5)],
                   fill=colour)
  image = image.filter(ImageFilter.GaussianBlur(1.0))
  noisy = np.asarray(image, np.float32) + rng.normal(0, 16, (height, width, 3)).astype(np.float32)
  return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))


def make_records(folder, num_images, label_count, max_side=0, seed=0):
  """Writes num_images JPEGs (kept if already there) + image_list / image_label, and runs
  create_tfrecord.py into 2 shards (with --max_side if set).

  Returns (glob of the shards, mean stored bytes per record, create_tfrecord seconds)."""
  images = os.path.join(folder, "images")
  os.makedirs(images, exist_ok=True)
  label_rng = np.random.default_rng(seed)
  list_lines, label_lines = [], []
  for i in range(num_images):
    name = f"photo_{i:05d}.jpg"
    path = os.path.join(images, name)
    if not os.path.exists(path):
      buffer = io.BytesIO()
      make_photo(np.random.default_rng([seed, i])).save(buffer, "JPEG", quality=90)
      with open(path, "wb") as f:
        f.write(buffer.getvalue())
    labels = np.zeros(label_count, int)
    labels[label_rng.choice(label_count, int(label_rng.integers(1, 5)), replace=False)] = 1
    list_lines.append(f"{name} {labels.sum()}\n")
    label_lines.append(" ".join(map(str, labels)) + "\n")
  with open(os.path.join(folder, "image_list"), "w") as f:
    f.writelines(list_lines)
  with open(os.path.join(folder, "image_label"), "w") as f:
    f.writelines(label_lines)
  output = os.path.join(folder, f"records_{max_side}", "train.tfrecord")
  start = time.perf_counter()
  create_records(images, folder, output, [f"--max_side={max_side}"])
  seconds = time.perf_counter() - start
  shards = records.expand_file_spec(output + "-*")
  return output + "-*", sum(os.path.getsize(f) for f in shards) / num_images, seconds


def make_demo_records(work, data_flags=""):
  """The demo's digits (make_demo_data.py, sklearn's: no download) as train and eval TFRecords
  under `work`: {split: record file spec}; the scripts' logs beside."""
  data = os.path.join(work, "data")
  run_script(["make_demo_data.py", f"--output_dir={data}", "--num_test=0", *data_flags.split()],
             os.path.join(work, "make_demo_data.log"))
  return {split: create_records(f"{data}/{split}/images", f"{data}/{split}",
                                os.path.join(work, "records", f"{split}.tfrecord"),
                                log_path=os.path.join(work, f"create_tfrecord_{split}.log"))
          for split in ("train", "eval")}


def memory_dataset(images, labels, batch, device=None):
  """Whole batches from memory, repeated: the train step is measured without the pipeline.
  device: e.g. '/gpu:0': copied there ahead of the step, as train.py does on one GPU."""
  n = len(images) // batch * batch
  x = images[:n].reshape([-1, batch] + list(images.shape[1:]))  # [N, ...] -> [N/b, b, ...]
  y = labels[:n].reshape([-1, batch, labels.shape[1]])
  dataset = tf.data.Dataset.from_tensor_slices((x, y)).repeat()
  if device:
    return dataset.apply(tf.data.experimental.prefetch_to_device(device, buffer_size=2))
  return dataset.prefetch(2)


def ten_crop_batch(image_size, folder, count):
  """[count, 10, s, s, 3] crops of generated photos, preprocessed as inference.py does (its
  default resize: the original's 290/224 of the target)."""
  target = (image_size, image_size)
  resize = ten_crop_resize((0, 0), target)
  paths = sorted(os.listdir(os.path.join(folder, "images")))[:count]
  return tf.stack([preprocess_ten_crop(tf.io.read_file(os.path.join(folder, "images", p)),
                                       resize, target) for p in paths])
