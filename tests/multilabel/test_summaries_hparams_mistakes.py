"""multilabel/summaries.py: the mistakes per label against numpy, and the HParams session read
back with TensorBoard's own event reader."""

import io

import numpy as np
import tensorflow as tf
from PIL import Image
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import plugin_data_pb2

import configs
from multilabel import summaries


def test_mistake_indices_are_numpys_top_k_per_label_leaving_unknowns_out():
  rng = np.random.default_rng(0)
  scores = rng.uniform(size=(40, 4))
  labels = rng.integers(-1, 2, size=(40, 4))
  found = summaries.mistake_indices(scores, labels, k=3)
  for j in range(4):
    negatives = [(-scores[i, j], i) for i in range(40) if labels[i, j] == 0]
    positives = [(scores[i, j], i) for i in range(40) if labels[i, j] == 1]
    assert list(found[j][0]) == [i for _, i in sorted(negatives)[:3]]
    assert list(found[j][1]) == [i for _, i in sorted(positives)[:3]]
  assert summaries.mistake_indices(scores, np.zeros((40, 4), int), 3)[0][1].size == 0


def png(colour, size=(20, 12)):
  out = io.BytesIO()
  Image.new("RGB", size, colour).save(out, "PNG")
  return out.getvalue()


def events(folder):
  accumulator = event_accumulator.EventAccumulator(
      str(folder), size_guidance={event_accumulator.IMAGES: 0, event_accumulator.TENSORS: 0})
  accumulator.Reload()
  return accumulator


def test_mistake_images_are_the_chosen_ones_in_order_with_their_scores(tmp_path):
  scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
  labels = np.array([[0, 1], [1, 0], [0, -1]])
  found = summaries.mistake_indices(scores, labels, k=2)
  paths = ["a.png", "b.png", "c.png"]
  images = {0: png((255, 0, 0)), 1: png((0, 255, 0)), 2: png((0, 0, 255), (8, 30))}
  writer = tf.summary.create_file_writer(str(tmp_path))
  summaries.write_mistakes(writer, 7, ["cat", "dog"], found, scores, paths, images)
  accumulator = events(tmp_path)
  fp = accumulator.Tensors("mistakes/cat/false_positives")[0]
  assert fp.step == 7
  pictures = tf.make_ndarray(fp.tensor_proto)[2:]  # [width, height, encoded...]
  colours = [np.asarray(Image.open(io.BytesIO(p)))[64, 64] for p in pictures]
  assert [tuple(c) for c in colours] == [(255, 0, 0), (0, 0, 255)]  # a 0.9, then c 0.7
  tags = accumulator.Tags()["tensors"]
  assert "mistakes/dog/false_positives" in tags and "mistakes/dog/false_negatives" in tags
  assert "mistakes/cat/false_negatives" in tags  # b, the one positive of cat


def test_hparams_session_holds_the_recipe_and_names_evaluates_metrics(tmp_path):
  model = configs.ModelConfig(label_count=3, augmentation="crop_flip", head_depth=256)
  train = configs.TrainConfig(learning_rate=0.003, loss="focal")
  writer = tf.summary.create_file_writer(str(tmp_path))
  summaries.write_hparams(writer, "run_a", model, train)
  accumulator = events(tmp_path)
  content = {tag: accumulator.SummaryMetadata(tag).plugin_data.content
             for tag in accumulator.Tags()["tensors"] if tag.startswith("_hparams_/")}
  experiment = plugin_data_pb2.HParamsPluginData.FromString(
      content["_hparams_/experiment"]).experiment
  assert [m.name.tag for m in experiment.metric_infos] == list(summaries.EVAL_METRICS)
  assert {m.name.group for m in experiment.metric_infos} == {"eval"}
  session = plugin_data_pb2.HParamsPluginData.FromString(
      content["_hparams_/session_start_info"]).session_start_info
  values = {name: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
            for name, value in session.hparams.items()}
  assert session.group_name == "run_a"  # the trial id: one row per train dir
  assert values["augmentation"] == "crop_flip" and values["loss"] == "focal"
  assert values["head_depth"] == 256 and abs(values["learning_rate"] - 0.003) < 1e-12
  assert set(values) == {*summaries.HPARAMS["model"], *summaries.HPARAMS["train"]}
