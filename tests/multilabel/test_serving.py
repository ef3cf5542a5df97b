"""multilabel/serving.py: the serving module scores as evaluate.py and inference.py do, export()
replaces a SavedModel whole or not at all, and bad settings are clear errors. On the fixture of
inference_fixture.py (conftest.py's `trained`). (From tests/test_export.py's serving tests and
tests/test_inference.py's make_scorer test.)"""

import os

import numpy as np
import pytest
import tensorflow as tf

import configs
from multilabel import serving
from multilabel.data import preprocessing
from tests import inference_fixture as fx

ATOL = 1e-5  # two float32 graphs of ResNet-50
GOOD = ["c.png", "a.png", "e.jpg", "b.png", "d.png"]


def spec(**changes):
  """The TestTimeScoring of the fixture's 10 crops, mean, without thresholds or names."""
  return serving.TestTimeScoring(**{
      "target": fx.TARGET, "resize": fx.RESIZE, "views": "ten", "aggregation": "mean",
      "thresholds": None, "label_names": None, **changes})


def test_a_failed_export_leaves_the_previous_one_and_no_temporaries(trained, tmp_path,
                                                                     monkeypatch):
  export_dir = tmp_path / "model"
  export_dir.mkdir()
  (export_dir / "saved_model.pb").write_text("previous export\n")

  def crash(module, directory, **unused_options):
    with open(os.path.join(directory, "saved_model.pb"), "w") as f:
      f.write("half written")
    raise OSError("disk full")

  monkeypatch.setattr(tf.saved_model, "save", crash)
  with pytest.raises(OSError, match="disk full"):
    serving.export(trained.model, str(export_dir), spec())
  assert os.listdir(tmp_path) == ["model"]
  assert (export_dir / "saved_model.pb").read_text() == "previous export\n"


def test_refuses_to_replace_a_folder_that_is_not_a_saved_model(trained, tmp_path):
  (tmp_path / "notes.txt").write_text("keep me\n")
  with pytest.raises(FileExistsError, match=f"{tmp_path}.*holds no SavedModel"):
    serving.export(trained.model, str(tmp_path), spec())
  assert (tmp_path / "notes.txt").read_text() == "keep me\n"


def test_one_view_serving_scores_the_plain_resize(trained):
  """views="one" (a model trained without random crops): the serving function scores each image
  once, resized to the target, as evaluate.py does."""
  for v in trained.model.trainable_variables:
    v.assign(trained.heads["A"][v.name])
  module = serving.serving_module(trained.model, spec(resize=(0, 0), views="one"))
  data = []
  for name in GOOD:
    with open(os.path.join(trained.image_dir, name), "rb") as f:
      data.append(f.read())
  scores = module.serve(tf.constant(data))["scores"].numpy()
  config = configs.ModelConfig(label_count=fx.LABELS, target_height=fx.TARGET[0],
                               target_width=fx.TARGET[1])
  plain = tf.stack([preprocessing.preprocess_eval(d, config) for d in data])
  np.testing.assert_allclose(scores, trained.model(plain)[1]["predictions"].numpy(), atol=ATOL)


def test_serving_module_refuses_a_bad_aggregation_or_threshold_count(trained):
  """(The serving_module half of test_export_saved_model.py's
  test_bad_arguments_are_clear_errors.)"""
  with pytest.raises(ValueError, match="aggregation='median'"):
    serving.serving_module(trained.model, spec(aggregation="median"))
  with pytest.raises(ValueError, match=f"2 thresholds for {fx.LABELS} labels"):
    serving.serving_module(trained.model, spec(thresholds=[0.5, 0.5]))


def test_make_scorer_rejects_an_unknown_xla_value():
  with pytest.raises(ValueError, match="xla='yes'"):
    serving.make_scorer(None, "mean", "yes")
