"""multilabel/data/mixing.py: MixUp on a batch, against numpy. Each test image is one-hot at its
own pixel, so a blended image shows its weight w (at its pixel) and its partner (the pixel
holding 1 - w); numpy then blends the labels by hand, keeping -1 wherever either image of the
pair did not know the label."""
import numpy as np
import pytest
import tensorflow as tf

import configs
from multilabel.data import mixing
from multilabel.data.preprocessing import build_dataset
from tests.helpers import write_records


def one_hot_images(batch):
  images = np.zeros((batch, 4, 4, 3), np.float32)
  for i in range(batch):
    images[i, i // 4, i % 4, :] = 1.0
  return images


def weights_and_partners(mixed):
  """From blended one-hot images: each one's weight and partner index."""
  flat = mixed[..., 0].reshape(len(mixed), -1)
  weights, partners = [], []
  for i, row in enumerate(flat):
    w = row[i]
    others = [j for j in np.flatnonzero(row > 1e-6) if j != i]
    partners.append(others[0] if others else i)  # paired with itself: all of it at its pixel
    weights.append(w if others else 1.0)
  return np.array(weights), np.array(partners)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mixup_blends_pairs_and_keeps_unknown_labels_unknown(seed):
  rng = np.random.RandomState(seed)
  batch, labels_n = 12, 5
  labels = rng.choice([-1.0, 0.0, 1.0], size=(batch, labels_n), p=[0.2, 0.5, 0.3]).astype(
      np.float32)
  images = one_hot_images(batch)
  mixed_images, mixed_labels = mixing.mixup(0.4, seed=seed)(tf.constant(images),
                                                            tf.constant(labels))
  mixed_images, mixed_labels = mixed_images.numpy(), mixed_labels.numpy()
  w, partner = weights_and_partners(mixed_images)
  assert sorted(partner) == list(range(batch))  # a permutation of the batch
  np.testing.assert_allclose(mixed_images, w[:, None, None, None] * images
                             + (1 - w[:, None, None, None]) * images[partner], atol=1e-6)
  known = (labels >= 0) & (labels[partner] >= 0)
  want = np.where(known, w[:, None] * labels + (1 - w[:, None]) * labels[partner], -1.0)
  np.testing.assert_allclose(mixed_labels, want, atol=1e-5)
  assert ((mixed_labels == -1) == ~known).all()


def test_the_train_pipeline_blends_only_when_asked(tmp_path):
  path = str(tmp_path / "r.tfrecord")
  labels = [[i % 2, 1 - i % 2] for i in range(16)]
  write_records(path, labels, side=32)
  def first_batch(mixup):
    config = configs.ModelConfig(label_count=2, input_tfrecord_file=path, target_height=32,
                                 target_width=32, batch_size=8, augmentation="none",
                                 mixup=mixup)
    images, got = next(iter(build_dataset(config, "train", seed=0)))
    return images.numpy(), got.numpy()
  images, plain = first_batch(0.0)
  assert set(np.unique(plain)) <= {0.0, 1.0}
  images, mixed = first_batch(0.4)
  assert images.shape == (8, 32, 32, 3) and images.min() >= -1 and images.max() <= 1
  assert ((mixed > 0) & (mixed < 1)).any()  # soft targets: some pairs blended
  np.testing.assert_allclose(mixed.sum(axis=1), 1.0, atol=1e-5)  # each pair's two labels sum to 1
