"""multilabel/training/losses.py against numpy: the sigmoid, focal and asymmetric losses, unknown
(-1) labels left out of the mean, pos_weight, the L2 term, and the gradients of 0/1 labels bit for
bit as before -1 existed. (From tests/test_model.py's loss tests.)"""
import numpy as np
import pytest
import tensorflow as tf

from multilabel.training import losses
from tests.helpers import TINY_LABELS as L, sigmoid


# The models are conftest's `frozen` and `tuned` (64 px, 5 labels).

LOGITS = np.array([[2.0, -1.0, 0.0, 30.0, -30.0],
                   [-4.5, 3.25, 0.5, -0.75, 1.5],
                   [0.1, -6.0, 5.0, -2.0, 12.0]], np.float32)
LABELS = np.array([[1, 0, 1, 0, 1], [0, 1, 1, 0, 0], [1, 1, 0, 0, 1]], np.float32)


def numpy_sigmoid_ce(x, z):
  """-z log p - (1 - z) log(1 - p), p = sigmoid(x), in the overflow-free form."""
  x, z = x.astype(np.float64), z.astype(np.float64)
  return np.maximum(x, 0) - x * z + np.log1p(np.exp(-np.abs(x)))


@pytest.mark.parametrize("model_name, n_weights", [("frozen", 3), ("tuned", 56)])
def test_total_loss_equals_numpy(model_name, n_weights, request):
  model = request.getfixturevalue(model_name)
  total, classification, regularization = losses.total_loss(model, LOGITS, LABELS)
  want_ce = numpy_sigmoid_ce(LOGITS, LABELS).mean()  # over batch x labels
  weights = [v.numpy().astype(np.float64) for v in model.regularized_weights]
  assert len(weights) == n_weights
  want_reg = model.config.weight_decay * sum((w ** 2).sum() / 2 for w in weights)
  assert want_reg > 0
  np.testing.assert_allclose(classification, want_ce, rtol=1e-6)
  np.testing.assert_allclose(regularization, want_reg, rtol=1e-5)
  np.testing.assert_allclose(total, want_ce + want_reg, rtol=1e-6)
  # under tf.distribute: the classification term is the per-example sum over the global batch
  _, classification, _ = losses.total_loss(model, LOGITS, LABELS, global_batch_size=12)
  np.testing.assert_allclose(classification, numpy_sigmoid_ce(LOGITS, LABELS).mean(1).sum() / 12,
                             rtol=1e-6)


@pytest.mark.parametrize("gamma", [0.0, 2.0, 1.5])
def test_focal_loss_equals_numpy(gamma):
  p = sigmoid(LOGITS.astype(np.float64))
  p_t = np.where(LABELS == 1, p, 1 - p)  # the probability given to the true value
  want = ((1 - p_t) ** gamma * -np.log(p_t)).mean(1)  # Lin et al. 2017, eq. 4, per label
  got = losses.per_example_loss(LOGITS, LABELS, kind="focal", focal_gamma=gamma)
  assert got.shape == [3]
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("gamma_neg, gamma_pos, clip", [(4.0, 0.0, 0.05), (2.0, 1.0, 0.2),
                                                        (4.0, 1.0, 0.0)])
def test_asymmetric_loss_equals_numpy(gamma_neg, gamma_pos, clip):
  logits = np.clip(LOGITS, -8, 8)  # ASL clamps log arguments at 1e-8; keep clear of it
  p = sigmoid(logits.astype(np.float64))
  p_m = np.maximum(p - clip, 0)  # Ridnik et al. 2021, eq. 5: shifted probability for negatives
  loss_pos = (1 - p) ** gamma_pos * np.log(p)
  loss_neg = p_m ** gamma_neg * np.log(1 - p_m)
  want = -(LABELS * loss_pos + (1 - LABELS) * loss_neg).mean(1)
  got = losses.per_example_loss(logits, LABELS, kind="asymmetric", gamma_neg=gamma_neg,
                             gamma_pos=gamma_pos, asl_clip=clip)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_sigmoid_per_example_and_unknown_kind():
  got = losses.per_example_loss(LOGITS, LABELS)
  np.testing.assert_allclose(got, numpy_sigmoid_ce(LOGITS, LABELS).mean(1), rtol=1e-6)
  with pytest.raises(ValueError, match="'softmax'"):
    losses.per_example_loss(LOGITS, LABELS, kind="softmax")


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


@pytest.mark.parametrize("kind", ["sigmoid", "focal", "asymmetric"])
def test_masked_loss_is_the_numpy_mean_over_the_known_entries(frozen, kind):
  logits = np.clip(LOGITS, -8, 8)  # ASL clamps log arguments at 1e-8; keep clear of it
  known = HIDDEN >= 0
  entries = numpy_entry_losses(kind, logits, np.maximum(HIDDEN, 0))
  options = dict(kind=kind, focal_gamma=2.0, gamma_neg=4.0, gamma_pos=0.0, asl_clip=0.05)
  per_example = losses.per_example_loss(logits, HIDDEN, **options)
  np.testing.assert_allclose(per_example, np.where(known, entries, 0).sum(1) / L, rtol=1e-5)
  _, classification, _ = losses.total_loss(frozen, logits, HIDDEN, **options)
  np.testing.assert_allclose(classification, entries[known].mean(), rtol=1e-5)
  assert known.sum() == 7 and abs(entries[known].mean() - entries.mean()) > 0.05  # it matters
  # unknown_label=negative: -1 is a 0, and the mean is over every entry
  _, negative, _ = losses.total_loss(frozen, logits, HIDDEN, unknown_label="negative", **options)
  np.testing.assert_allclose(negative, entries.mean(), rtol=1e-5)
  # no gradient reaches an unknown entry's logit
  logits_var = tf.Variable(logits)
  with tf.GradientTape() as tape:
    loss = losses.total_loss(frozen, logits_var, HIDDEN, **options)[1]
  grad = tape.gradient(loss, logits_var).numpy()
  assert np.all(grad[~known] == 0) and np.all(grad[known] != 0)


def test_known_mean_of_the_global_batch_equals_one_big_batch(frozen):
  """Two replicas' halves, each given the global batch's known count, sum to the loss of the
  whole batch; with a per-replica count they would not (the halves' known fractions differ)."""
  logits, labels = np.clip(LOGITS, -8, 8), HIDDEN
  whole = losses.total_loss(frozen, logits, labels)[1]
  known = losses.count_known(labels)
  halves = [losses.total_loss(frozen, logits[rows], labels[rows], global_batch_size=4,
                           known_entries=known)[1] for rows in ([0, 1], [2])]
  np.testing.assert_allclose(float(halves[0]) + float(halves[1]), whole, rtol=1e-6)
  per_replica = [losses.total_loss(frozen, logits[rows], labels[rows], global_batch_size=4)[1]
                 for rows in ([0, 1], [2])]
  assert abs(float(per_replica[0]) + float(per_replica[1]) - float(whole)) > 0.01


def test_a_batch_of_only_unknowns_has_zero_loss_and_zero_gradient(frozen):
  logits = tf.Variable(LOGITS)
  with tf.GradientTape() as tape:
    loss = losses.total_loss(frozen, logits, -np.ones_like(LABELS))[1]
  assert float(loss) == 0.0 and np.all(tape.gradient(loss, logits).numpy() == 0)


@pytest.mark.parametrize("kind", ["sigmoid", "focal", "asymmetric"])
def test_0_1_labels_give_exactly_todays_loss_and_gradients(frozen, kind):
  """Bit for bit: with no -1, `ignore` and `negative` compute what the loss computed before -1
  existed (for the sigmoid loss, today's formula written out here in TensorFlow)."""
  logits = tf.Variable(np.clip(LOGITS, -8, 8))

  def loss_and_grad(fn):
    with tf.GradientTape() as tape:
      loss = fn()
    return float(loss), tape.gradient(loss, logits).numpy()

  def mode(unknown_label, **kw):
    return lambda: losses.total_loss(frozen, logits, LABELS, kind=kind, unknown_label=unknown_label,
                                  **kw)[1]

  for kw in ({}, {"global_batch_size": 12}, {"global_batch_size": 12, "known_entries": 60.0}):
    ignore, negative = loss_and_grad(mode("ignore", **kw)), loss_and_grad(mode("negative", **kw))
    assert ignore[0] == negative[0] and np.array_equal(ignore[1], negative[1])
    if kind == "sigmoid":
      todays = loss_and_grad(lambda: tf.nn.compute_average_loss(
          tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels=LABELS, logits=logits),
                         axis=-1), global_batch_size=kw.get("global_batch_size")))
      assert ignore[0] == todays[0] and np.array_equal(ignore[1], todays[1])


POS_WEIGHT = [3.0, 0.5, 1.0, 7.25, 2.0]


@pytest.mark.parametrize("kind", ["sigmoid", "focal", "asymmetric"])
def test_pos_weight_scales_the_positive_term_as_numpy(frozen, kind):
  """-w z log p + (1 - z) * (the negative term), per label w, for all three losses; with -1
  entries the known-entry mean of those."""
  logits = np.clip(LOGITS, -8, 8)
  w = np.array(POS_WEIGHT)
  options = dict(kind=kind, focal_gamma=2.0, gamma_neg=4.0, gamma_pos=0.0, asl_clip=0.05)
  for labels in (LABELS, HIDDEN):
    z = np.maximum(labels, 0)
    plain = numpy_entry_losses(kind, logits, z)
    negatives = numpy_entry_losses(kind, logits, np.zeros_like(z))
    positives = numpy_entry_losses(kind, logits, np.ones_like(z))
    assert np.allclose(plain, np.where(z == 1, positives, negatives))
    want = np.where(z == 1, w * positives, negatives)
    known = labels >= 0
    got = losses.total_loss(frozen, logits, labels, pos_weight=POS_WEIGHT, **options)[1]
    np.testing.assert_allclose(got, want[known].mean(), rtol=1e-5)
  if kind == "sigmoid":  # it is TensorFlow's weighted cross-entropy, and weight 1 is no weight
    np.testing.assert_allclose(
        losses.per_example_loss(logits, LABELS, pos_weight=POS_WEIGHT),
        tf.reduce_mean(tf.nn.weighted_cross_entropy_with_logits(
            LABELS, logits, np.float32(POS_WEIGHT)), -1),
        rtol=1e-6)
  np.testing.assert_allclose(losses.per_example_loss(logits, LABELS, pos_weight=[1.0] * L, **options),
                             losses.per_example_loss(logits, LABELS, **options), rtol=1e-6)


def test_0_1_labels_give_todays_compiled_gradients_with_the_frozen_backbone(frozen, images):
  """The default config (frozen backbone) in a tf.function, as train.py runs it: today's formula
  and both unknown_label modes give bit-identical head gradients. (With train_base_network=True,
  TensorFlow's graph rewrites can round the changed loss graph's gradients differently in the
  last bit, so a fine-tuning run is not bit for bit the same.)"""
  labels = tf.constant(np.random.default_rng(3).integers(0, 2, (2, L)), tf.float32)

  def gradients(loss_fn):
    @tf.function
    def step(images, labels):
      with tf.GradientTape() as tape:
        logits, _ = frozen(images, training=True)
        loss = loss_fn(logits, labels)
      return loss, tape.gradient(loss, frozen.trainable_variables)
    return step(images, labels)

  def todays(logits, labels):
    per_example = tf.reduce_mean(
        tf.nn.sigmoid_cross_entropy_with_logits(labels=labels, logits=logits), axis=-1)
    return tf.nn.compute_average_loss(per_example, global_batch_size=2) + \
        tf.nn.scale_regularization_loss(losses.l2_loss(frozen.regularized_weights,
                                                    frozen.config.weight_decay))

  want_loss, want = gradients(todays)
  for mode in ("ignore", "negative"):
    got_loss, got = gradients(lambda logits, labels: losses.total_loss(
        frozen, logits, labels, global_batch_size=2, known_entries=tf.constant(2.0 * L),
        unknown_label=mode)[0])
    assert float(got_loss) == float(want_loss)
    for g, w in zip(got, want, strict=True):
      np.testing.assert_array_equal(g, w)


def test_unknown_label_mode_is_checked():
  with pytest.raises(ValueError, match="'skip'"):
    losses.per_example_loss(LOGITS, LABELS, unknown_label="skip")
