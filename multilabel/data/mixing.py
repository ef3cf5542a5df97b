"""MixUp on training batches (Zhang et al. 2018, arXiv:1710.09412): each image is blended with
another of its batch, and so are their labels, by a weight drawn from Beta(alpha, alpha).

The blend is Keras 3's MixUp layer (its draw, its image and label transforms); what is added
here is the multi-label set's unknown labels: a -1 stays -1 wherever either image of a pair
did not know the label, so the loss still skips it (a blend of -1 with 0 or 1 would be a wrong
target). Known labels become soft targets in [0, 1], which the sigmoid losses take as they are.
"""

import tensorflow as tf


def mixup(alpha, seed=None):
  """(images [B, H, W, 3], labels [B, L] in {-1, 0, 1}) -> the same, blended pairwise.

  Built once per pipeline; runs in tf.data on TensorFlow's ops. alpha: Beta(alpha, alpha)'s
  parameter; small alphas (0.1 to 0.4) keep most pairs close to one of the two images.
  """
  import keras  # only this option needs it: evaluation and inference start faster without
  layer = keras.layers.MixUp(alpha=alpha, seed=seed)

  def blend(images, labels):
    draw = layer.get_random_transformation({"images": images, "labels": labels})
    images = tf.cast(layer.transform_images(images, draw), images.dtype)
    known = tf.cast(labels >= 0, labels.dtype)
    mixed = tf.cast(layer.transform_labels(labels * known, draw), labels.dtype)
    both_known = tf.cast(layer.transform_labels(known, draw), labels.dtype)
    # 1 exactly where both images know the label (a blend of two 1s); else one of them did not
    return images, tf.where(both_known > 1 - 1e-6, mixed, -tf.ones_like(labels))
  return blend
