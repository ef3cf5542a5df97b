"""export_saved_model.py: the serving SavedModel, loaded in a fresh process (which cannot import
this repository), gives inference.py's scores on the same image bytes, and its thresholded labels.

The export comes from inference.py's --export_saved_model, with a thresholds file, on the fixture
of inference_fixture.py (ckpt-20, EMA head B; conftest.py's `trained`). The script's main() does
the same steps; its test checks what it hands to export(). (tests/test_export.py, renamed; the
serving module's own tests are in tests/multilabel/test_serving.py.)
"""

import contextlib
import csv
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import export_saved_model
import inference
from multilabel import serving
from tests import inference_fixture as fx


NAMES = ["cat", "dog", "bird"]
THRESHOLDS = [0.3, 0.45, 0.6]
ATOL = 1e-5  # two float32 graphs of ResNet-50, and the score file's %.6f rounding (5e-7)
GOOD = ["c.png", "a.png", "e.jpg", "b.png", "d.png"]


# Runs in a fresh interpreter, from a folder outside the repository: only TensorFlow and the
# SavedModel itself.
LOADER = r"""
import json, sys
import numpy as np
import tensorflow as tf

config = json.load(open(sys.argv[1]))
images = [open(p, "rb").read() for p in config["images"]]
result = {}
for name, export_dir in config["exports"].items():
  signatures = tf.saved_model.load(export_dir).signatures
  serve = signatures["serving_default"]
  inputs = serve.structured_input_signature[1]
  outputs = serve.structured_outputs
  result[name] = {
      "inputs": {k: [str(v.dtype.name), v.shape.as_list()] for k, v in inputs.items()},
      "outputs": {k: [str(v.dtype.name), v.shape.as_list()] for k, v in outputs.items()},
      "signatures": sorted(signatures.keys())}
  if "label_names" in signatures:
    names = signatures["label_names"]()["label_names"]
    result[name]["label_names"] = [n.decode() for n in names.numpy()]
  batch = serve(images=tf.constant(images))
  single = serve(images=tf.constant(images[:1]))
  for key in outputs:
    np.save(f"{config['out']}/{name}_{key}.npy", batch[key].numpy())
    np.save(f"{config['out']}/{name}_{key}_single.npy", single[key].numpy())
  try:
    serve(images=tf.constant(images[:1] + [open(config["corrupt"], "rb").read()]))
    result[name]["corrupt"] = "no error"
  except tf.errors.InvalidArgumentError:
    result[name]["corrupt"] = "InvalidArgumentError"
json.dump(result, open(f"{config['out']}/result.json", "w"))
"""


def quiet(function, args):
  with contextlib.redirect_stdout(io.StringIO()):
    assert function(args) == 0


@pytest.fixture(scope="module")
def exported(trained):
  root = trained.root
  images = [os.path.join(trained.image_dir, n) for n in GOOD]
  list_file = os.path.join(root, "paths.txt")
  with open(list_file, "w") as f:
    f.write("\n".join(images) + "\n")
  thresholds_file = os.path.join(root, "thresholds.txt")
  np.savetxt(thresholds_file, THRESHOLDS, fmt="%.6f")
  names_file = os.path.join(root, "names.txt")
  with open(names_file, "w") as f:
    f.write("\n".join(NAMES) + "\n")
  common = ["--gpu_id=-1", f"--resize_height={fx.RESIZE[0]}", f"--resize_width={fx.RESIZE[1]}",
            f"--checkpoint_path={trained.train_dir}"]
  export_dir = os.path.join(root, "export")
  # An earlier export in the target folder: it must be replaced as a whole.
  os.makedirs(export_dir)
  for name in ("saved_model.pb", "stale.txt"):
    with open(os.path.join(export_dir, name), "w") as f:
      f.write("old export\n")
  quiet(inference.main, common + [
      f"--image_list_file={list_file}", f"--inference_dir={root}/out",
      f"--thresholds_file={thresholds_file}", f"--label_names_file={names_file}",
      f"--export_saved_model={export_dir}"])

  out = os.path.join(root, "loaded")
  os.makedirs(out)
  with open(os.path.join(out, "config.json"), "w") as f:
    json.dump({"images": images, "corrupt": os.path.join(trained.image_dir, fx.CORRUPT),
               "exports": {"flag": export_dir}, "out": out}, f)
  env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  env.update(TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1")
  process = subprocess.run([sys.executable, "-c", LOADER, os.path.join(out, "config.json")],
                           cwd=out, env=env, capture_output=True, text=True, timeout=300)
  assert process.returncode == 0, process.stderr[-3000:]
  with open(os.path.join(out, "result.json")) as f:
    result = json.load(f)
  load = lambda name: np.load(os.path.join(out, f"{name}.npy"))
  with open(os.path.join(root, "out", "predictions.csv"), newline="") as f:
    csv_rows = list(csv.reader(f))[1:]
  return dict(result=result, load=load, export_dir=export_dir, root=root,
              scores=np.loadtxt(os.path.join(root, "out", "scores.txt")), csv=csv_rows)


@pytest.mark.slow
def test_signature_takes_image_bytes_and_returns_scores_and_labels(exported):
  signature = exported["result"]["flag"]
  assert signature["inputs"] == {"images": ["string", [None]]}
  assert signature["outputs"] == {"scores": ["float32", [None, fx.LABELS]],
                                  "labels": ["int64", [None, fx.LABELS]]}


@pytest.mark.slow
def test_scores_equal_inference_py_on_the_same_images(exported):
  assert not np.isnan(exported["scores"]).any()
  scores = exported["load"]("flag_scores")
  assert scores.dtype == np.float32 and scores.shape == (len(GOOD), fx.LABELS)
  np.testing.assert_allclose(scores, exported["scores"], atol=ATOL)
  single = exported["load"]("flag_scores_single")  # a batch of one gives the same row
  np.testing.assert_allclose(single, scores[:1], atol=1e-6)


@pytest.mark.slow
def test_the_label_names_signature_returns_the_names(exported):
  assert exported["result"]["flag"]["signatures"] == ["label_names", "serving_default"]
  assert exported["result"]["flag"]["label_names"] == NAMES


@pytest.mark.slow
def test_labels_are_the_scores_thresholded_per_label(exported):
  scores, labels = exported["load"]("flag_scores"), exported["load"]("flag_labels")
  expected = (scores.astype(np.float64) >= np.array(THRESHOLDS)).astype(np.int64)
  np.testing.assert_array_equal(labels, expected)
  assert 0 < labels.sum() < labels.size  # the thresholds split the images
  # ... and they name the same labels as inference.py's predictions.csv.
  predicted = [row[-1] for row in exported["csv"]]
  assert predicted == [";".join(n for n, p in zip(NAMES, row) if p) for row in labels]


@pytest.mark.slow
def test_export_replaced_the_old_export_and_left_no_temporaries(exported):
  assert not os.path.exists(os.path.join(exported["export_dir"], "stale.txt"))
  assert os.path.isdir(os.path.join(exported["export_dir"], "variables"))
  assert not [n for n in os.listdir(exported["root"]) if n.startswith(".")]


def test_script_main_exports_the_checkpoint_with_inference_py_settings(trained, tmp_path,
                                                                      monkeypatch):
  """export_saved_model.main: the same model, sizes, aggregation and thresholds as inference.py
  would use (the SavedModel writing itself is tested above)."""
  calls = []
  monkeypatch.setattr(serving, "export", lambda *args: calls.append(args))
  thresholds_file = tmp_path / "thresholds.txt"
  thresholds_file.write_text("# method: roc\n0.25\n0.5\n0.75\n")
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    assert export_saved_model.main([
        "--gpu_id=-1", f"--checkpoint_path={trained.prefix_a}", "--resize_height=0",
        "--resize_width=120", "--aggregation=max", f"--thresholds_file={thresholds_file}",
        f"--export_saved_model={tmp_path / 'model'}"]) == 0
  assert f"restored {trained.prefix_a} (step 10)" in out.getvalue()
  [(model, export_dir, scoring)] = calls
  resize, target, aggregation, thresholds, label_names, views = (
      scoring.resize, scoring.target, scoring.aggregation, scoring.thresholds,
      scoring.label_names, scoring.views)
  assert views == "ten"  # the fixture's model trained with the original's random crops
  assert export_dir == str(tmp_path / "model")
  assert label_names == ["label_0", "label_1", "label_2"]  # the fixture's config.json has none
  assert (resize, target, aggregation) == ((round(64 * 290 / 224), 120), fx.TARGET, "max")
  np.testing.assert_array_equal(thresholds, [0.25, 0.5, 0.75])
  for v in model.trainable_variables:  # ckpt-10's head (A)
    np.testing.assert_array_equal(v.numpy(), trained.heads["A"][v.name])


@pytest.mark.slow
def test_an_undecodable_image_fails_the_call(exported):
  assert exported["result"]["flag"]["corrupt"] == "InvalidArgumentError"


def test_bad_arguments_are_clear_errors(trained):
  """(Its serving_module half is test_serving.py's
  test_serving_module_refuses_a_bad_aggregation_or_threshold_count.)"""
  with pytest.raises(ValueError, match="--export_saved_model"):
    quiet(export_saved_model.main, [f"--checkpoint_path={trained.train_dir}"])
