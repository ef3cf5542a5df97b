"""Builds a small real multi-label image set from the handwritten digits scikit-learn ships.

Each image (64x64 RGB by default) holds 1-4 distinct digits from sklearn.datasets.load_digits
(1797 grey 8x8 scans, 10 classes), each upscaled to a random 0.4..0.5 of the image side (26-32 px,
nearly filling its quadrant), slightly rotated and placed at a random spot in its own quadrant
(so no digit hides another), drawn light on a dark background (`colours=mono`), plus light noise.
Its labels are the digits present, so there are 10 labels. The 1797 source scans are partitioned
per class between the splits, so train, eval and test never share a source digit; the first 10
images of every split each contain a different digit, so every label has positives in every split.

The design is what a ResNet-50 trained from scratch on 2 CPU cores can learn in minutes. With
the earlier one (`--min_digit=0.25 --max_digit=0.44 --colours=random --num_train=3000`: smaller
digits in random colours on random backgrounds) neither this toolkit nor a Keras ResNet50V2 got
far above chance in a few hundred steps (compare with benchmarks/accuracy.py --data_flags=...).
24,000 train images are drawn so that a short run sees each about once or twice: on 3,000 the
network memorises the images before it learns to read digits it has not seen.

Writes, in the original toolkit's formats (create_tfrecord.py reads them):
  <output_dir>/<split>/images/<split>_00000.jpg ...
  <output_dir>/<split>/image_list     "train_00000.jpg 3" per line
  <output_dir>/<split>/image_label    "0 1 0 0 1 1 0 0 0 0" per line
  <output_dir>/label_names.txt        "0" .. "9", one per line

    python make_demo_data.py
    python make_demo_data.py --output_dir=/tmp/digits --num_train=500 --num_eval=100 --num_test=50
"""

import os

import numpy as np
from PIL import Image
from sklearn.datasets import load_digits

import configs
from multilabel import arguments, errors, files

NUM_LABELS = 10
MIN_SPLIT_SHARE = 0.15  # eval/test get at least this share of each class's source scans


def split_sources(targets, sizes, rng):
  """Partitions the source scans of each class between the splits.

  Args:
    targets: int [N], the class of each source scan.
    sizes: {split: number of images}; the scans are shared out in proportion (at least
      MIN_SPLIT_SHARE each), so the splits are disjoint.
  Returns:
    {split: [10 arrays of source indices, one per class]}.
  """
  shares = np.array([max(n / sum(sizes.values()), MIN_SPLIT_SHARE) for n in sizes.values()])
  shares /= shares.sum()
  pools = {split: [] for split in sizes}
  for digit in range(NUM_LABELS):
    indices = rng.permutation(np.flatnonzero(targets == digit))
    bounds = np.round(np.cumsum(shares) * len(indices)).astype(int)  # end of each split's part
    for split, start, end in zip(sizes, np.concatenate([[0], bounds[:-1]]), bounds):
      assert end > start, f"digit {digit}: no source scan left for split {split!r}"
      pools[split].append(indices[start:end])
  return pools


LUMINANCE = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 weights of R, G, B


def contrasting_colour(rng, background):
  """A random colour whose luminance differs from the background's by at least 90 (of 255)."""
  while True:
    colour = rng.uniform(0, 255, 3)
    if abs((colour - background) @ LUMINANCE) >= 90:
      return colour


def render_image(rng, scans, pools, digits, size, digit_range=(0.25, 0.44), colours="random"):
  """Draws `digits` (distinct classes) into one image.

  Args:
    scans: float [N, 8, 8] in [0, 1], the source digits.
    pools: 10 arrays of indices into scans that this split may use.
    digits: the classes to draw, at most 4.
    size: image side in pixels.
  Returns:
    uint8 [size, size, 3].
  """
  background = rng.uniform(0, 255, 3) if colours == "random" else np.full(3, rng.uniform(0, 60))
  canvas = np.broadcast_to(background, (size, size, 3)).astype(np.float32)
  half = size // 2
  for digit, quadrant in zip(digits, rng.permutation(4)):
    scan = scans[rng.choice(pools[digit])]
    side = int(rng.integers(int(size * digit_range[0]), int(size * digit_range[1]) + 1))
    mask = Image.fromarray(np.uint8(scan * 255)).resize((side, side), Image.Resampling.BICUBIC)
    mask = mask.rotate(rng.uniform(-15, 15), Image.Resampling.BILINEAR)
    alpha = np.asarray(mask, dtype=np.float32)[:, :, None] / 255.0  # [side, side, 1]
    top = (quadrant // 2) * half + int(rng.integers(0, half - side + 1))
    left = (quadrant % 2) * half + int(rng.integers(0, half - side + 1))
    colour = (contrasting_colour(rng, background) if colours == "random"
              else np.full(3, rng.uniform(200, 255)))
    patch = canvas[top:top + side, left:left + side]
    canvas[top:top + side, left:left + side] = patch * (1 - alpha) + colour * alpha
  canvas += 6 * rng.standard_normal(canvas.shape, dtype=np.float32)  # light noise, sigma 6
  return np.clip(canvas + 0.5, 0, 255).astype(np.uint8)


def choose_digits(rng, index, max_digits):
  """1..max_digits distinct classes; image `index` < 10 always includes digit `index`."""
  count = int(rng.integers(1, max_digits + 1))
  if index >= NUM_LABELS:
    return [int(d) for d in rng.choice(NUM_LABELS, count, replace=False)]
  others = [d for d in range(NUM_LABELS) if d != index]
  return [index] + [int(d) for d in rng.choice(others, count - 1, replace=False)]


def write_split(cfg, split, num_images, scans, pools, rng):
  """Renders one split's images and writes its image_list and image_label."""
  image_dir = os.path.join(cfg.output_dir, split, "images")
  os.makedirs(image_dir, exist_ok=True)
  list_lines, label_lines = [], []
  for i in range(num_images):
    digits = choose_digits(rng, i, cfg.max_digits)
    name = f"{split}_{i:05d}.jpg"
    image = render_image(rng, scans, pools, digits, cfg.image_size,
                         (cfg.min_digit, cfg.max_digit), cfg.colours)
    Image.fromarray(image).save(os.path.join(image_dir, name), "JPEG", quality=90)
    row = [1 if d in digits else 0 for d in range(NUM_LABELS)]
    list_lines.append(f"{name} {sum(row)}")
    label_lines.append(" ".join(map(str, row)))
  # The lists come last: a split with lists is complete.
  for name, rows in (("image_label", label_lines), ("image_list", list_lines)):
    files.write_text(os.path.join(cfg.output_dir, split, name), "".join(f"{r}\n" for r in rows))


def main(argv):
  # Configuration: edit here, or override with --field=value.
  cfg = configs.DemoDataConfig()
  arguments.parse_overrides(argv, cfg, usage=__doc__)
  rng = np.random.default_rng(cfg.seed)

  # 1. The source digits, partitioned per class so the splits never share a scan.
  digits = load_digits()
  scans = digits.images / 16.0  # [1797, 8, 8], 0..16 -> [0, 1]
  sizes = {split: n for split, n in
           (("train", cfg.num_train), ("eval", cfg.num_eval), ("test", cfg.num_test)) if n}
  pools = split_sources(digits.target, sizes, rng)

  # 2. Render and write every split, then the label names.
  for split, num_images in sizes.items():
    write_split(cfg, split, num_images, scans, pools[split], rng)
    sources = sum(len(p) for p in pools[split])
    print(f"{split}: {num_images} images from {sources} source digits -> "
          f"{os.path.join(cfg.output_dir, split)}")
  files.write_text(os.path.join(cfg.output_dir, "label_names.txt"),
                   "".join(f"{d}\n" for d in range(NUM_LABELS)))
  print(f"label names -> {os.path.join(cfg.output_dir, 'label_names.txt')}")


if __name__ == "__main__":
  errors.run(main)
