"""evaluate.py's mistakes in TensorBoard: per label, exactly the k highest-scored negatives and
k lowest-scored positives of the score file it wrote, checked with numpy; --mistake_images=0
writes none; --run_once writes no best/ (issue 23: scoring a split is not choosing a
checkpoint)."""

import os

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

import evaluate
from tests import inference_fixture as fx
from tests.helpers import run_captured, write_records

K = 2


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  root = tmp_path_factory.mktemp("mistakes")
  trained = fx.build(str(root))
  labels = np.random.default_rng(1).integers(0, 2, size=(12, fx.LABELS))
  labels[0, :] = 1
  labels[1, :] = 0  # every label has a positive and a negative
  records = write_records(root / "eval.tfrecord", labels, side=96)
  return trained, records, labels


def evaluate_once(trained, records, out, *extra):
  argv = [f"--checkpoint_dir={trained.train_dir}", f"--checkpoint_path={trained.prefix_a}",
          "--run_once=true", f"--input_tfrecord_file={records}", f"--eval_dir={out}",
          f"--score_file={out}/scores.txt", "--batch_size=5", *extra]
  status, log = run_captured(evaluate.main, argv)
  assert status == 0, log
  return np.loadtxt(f"{out}/scores.txt", ndmin=2)


def image_descriptions(folder):
  accumulator = event_accumulator.EventAccumulator(
      str(folder), size_guidance={event_accumulator.TENSORS: 0})
  accumulator.Reload()
  return {tag: (accumulator.SummaryMetadata(tag).summary_description,
                len(tf.make_ndarray(accumulator.Tensors(tag)[-1].tensor_proto)) - 2)
          for tag in accumulator.Tags()["tensors"] if tag.startswith("mistakes/")}


def test_mistakes_are_the_top_k_of_the_score_file(run, tmp_path):
  trained, records, labels = run
  scores = evaluate_once(trained, records, tmp_path, f"--mistake_images={K}")
  found = image_descriptions(tmp_path)
  for j in range(fx.LABELS):
    negatives = np.flatnonzero(labels[:, j] == 0)
    positives = np.flatnonzero(labels[:, j] == 1)
    want = {"false_positives": negatives[np.argsort(-scores[negatives, j], kind="stable")[:K]],
            "false_negatives": positives[np.argsort(scores[positives, j], kind="stable")[:K]]}
    for kind, indices in want.items():
      description, pictures = found[f"mistakes/label_{j}/{kind}"]
      named = [part.split()[0] for part in description.split("in order: ", 1)[1].split("; ")]
      assert named == [f"img{i}.jpg" for i in indices]  # write_records' names, in order
      assert pictures == len(indices)
  assert not os.path.exists(tmp_path / evaluate.BEST_DIR)  # run_once: no best/


def test_mistake_images_0_writes_none(run, tmp_path):
  trained, records, _ = run
  evaluate_once(trained, records, tmp_path, "--mistake_images=0")
  assert image_descriptions(tmp_path) == {}
