"""The classification losses, the original's sigmoid cross-entropy and two for imbalance, with
unknown (-1) labels left out, and the L2 term: what train.py minimises and evaluate.py reports.

The model comes in as an argument (its regularized_weights and config.weight_decay).
"""

import tensorflow as tf


LOSSES = ("sigmoid", "focal", "asymmetric")  # per_example_loss's kinds


UNKNOWN_LABEL_MODES = ("ignore", "negative")


def per_example_loss(logits, labels, kind="sigmoid", focal_gamma=2.0, gamma_neg=4.0,
                     gamma_pos=0.0, asl_clip=0.05, pos_weight=None, unknown_label="ignore"):
  """Classification loss per image, averaged over labels: [B, L] logits and labels -> [B].

  Labels are 0/1, or -1 for unknown (nobody annotated it), handled by unknown_label:
    ignore: an unknown entry adds 0 (the mean still divides by L; total_loss rescales the batch
      mean to the known entries);
    negative: an unknown entry is read as 0, the common baseline.
  kind:
    sigmoid: sigmoid cross-entropy, the original's loss.
    focal: (1 - p_t)^gamma * CE (Lin et al. 2017, "Focal Loss for Dense Object Detection").
    asymmetric: ASL (Ridnik et al. 2021, "Asymmetric Loss For Multi-Label Classification"):
      positives weighted by (1 - p)^gamma_pos, negatives use p_m = max(p - clip, 0) and are
      weighted by p_m^gamma_neg.
  pos_weight: None, or [L] weights of each label's positive term (-z log p becomes
    -w z log p; tf.nn.weighted_cross_entropy_with_logits for the sigmoid and focal losses).
  """
  if unknown_label not in UNKNOWN_LABEL_MODES:
    raise ValueError(f"unknown_label={unknown_label!r}: expected ignore or negative")
  logits = tf.cast(logits, tf.float32)
  labels = tf.cast(labels, tf.float32)
  known = labels >= 0
  labels = tf.maximum(labels, 0.0)  # -1 -> 0: a negative, or masked out below; 0/1 unchanged
  if pos_weight is not None:
    pos_weight = tf.convert_to_tensor(pos_weight, tf.float32)  # [L], broadcast over the batch
  if kind in ("sigmoid", "focal"):
    if pos_weight is None:
      ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits)
    else:
      ce = tf.nn.weighted_cross_entropy_with_logits(labels=labels, logits=logits,
                                                    pos_weight=pos_weight)
  if kind == "sigmoid":
    loss = ce
  elif kind == "focal":
    p = tf.sigmoid(logits)
    p_t = labels * p + (1 - labels) * (1 - p)
    loss = tf.pow(1 - p_t, focal_gamma) * ce
  elif kind == "asymmetric":
    p = tf.sigmoid(logits)
    p_neg = tf.maximum(p - asl_clip, 0.0) if asl_clip > 0 else p
    eps = 1e-8
    loss_pos = -tf.pow(1 - p, gamma_pos) * tf.math.log(tf.maximum(p, eps))
    loss_neg = -tf.pow(p_neg, gamma_neg) * tf.math.log(tf.maximum(1 - p_neg, eps))
    if pos_weight is not None:
      loss_pos = pos_weight * loss_pos
    loss = labels * loss_pos + (1 - labels) * loss_neg
  else:
    raise ValueError(f"loss={kind!r}: expected sigmoid, focal or asymmetric")
  if unknown_label == "ignore":
    loss = tf.where(known, loss, tf.zeros_like(loss))  # no loss, and no gradient, from -1
  return tf.reduce_mean(loss, axis=-1)


def count_known(labels):
  """The number of entries of a [B, L] label batch that are not -1 (unknown), float32."""
  return tf.reduce_sum(tf.cast(tf.cast(labels, tf.float32) >= 0, tf.float32))


def l2_loss(weights, weight_decay):
  """weight_decay * sum(w^2) / 2 over the regularized weights (slim's l2_regularizer)."""
  if not weights or weight_decay == 0:
    return tf.constant(0.0)
  return weight_decay * tf.add_n([tf.nn.l2_loss(w) for w in weights])


def total_loss(model, logits, labels, global_batch_size=None, known_entries=None, **loss_options):
  """(total, classification, regularization) for one (replica's) batch.

  The classification term is the mean over batch x labels, the original's. With
  unknown_label=ignore (the default) it is the mean over the known entries instead: the batch
  mean times entries / known entries, a factor of exactly 1.0 when no label is -1, so 0/1 data
  gives exactly the plain mean. Under tf.distribute it is averaged over the global batch
  (compute_average_loss) and the regularization is split per replica, so that the gradients
  summed over replicas equal one big batch's; then `known_entries` must be the known entries of
  the global batch (train.py sums them over the replicas). Without it the known fraction of
  `labels` itself is used, which is right for one replica.
  """
  per_example = per_example_loss(logits, labels, **loss_options)
  classification = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch_size)
  if loss_options.get("unknown_label", "ignore") == "ignore":
    batch, label_count = tf.shape(labels)[0], tf.shape(labels)[1]
    if known_entries is None:
      entries, known = batch * label_count, count_known(labels)
    else:
      entries, known = (global_batch_size or batch) * label_count, known_entries
    # a batch with no known entry at all has nothing to learn from: loss 0, not 0/0
    classification = classification * tf.math.divide_no_nan(tf.cast(entries, tf.float32), known)
  regularization = tf.nn.scale_regularization_loss(
      l2_loss(model.regularized_weights, model.config.weight_decay))
  return classification + regularization, classification, regularization
