"""inference.py: 10-crop scores against the model run by hand on numpy-made crops, the score file
and predictions.csv, unreadable images, the image-list hook, and checkpoint resolution (train dir,
eval best/ dir, prefix; EMA weights). ResNet-50 v2 at 64x96 with random weights (see
inference_fixture.py; conftest.py's `trained`); inference.main runs in-process. (The views, the
default resize and make_scorer are tested with their modules, in tests/multilabel/data/
test_preprocessing.py and tests/multilabel/test_serving.py.)"""

import contextlib
import csv
import glob
import io
import json
import os
import re
import shutil

import numpy as np
import pytest

import configs
import create_tfrecord
import inference
from multilabel import config_files
from tests import inference_fixture as fx
from tests.helpers import run_script_main

NAMES = ["cat", "dog", "bird"]
ATOL = 1e-5  # graph vs eager float32 ResNet-50, and the score file's %.6f rounding (5e-7)


def run_main(args):
  """inference.main(args) in-process; returns what it printed."""
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    assert inference.main(["--gpu_id=-1", f"--resize_height={fx.RESIZE[0]}",
                           f"--resize_width={fx.RESIZE[1]}"] + args) == 0
  return out.getvalue()


def read_csv(path):
  with open(path, newline="") as f:
    return list(csv.reader(f))


@pytest.fixture(scope="module")
def hand(trained):
  """{'A'|'B': {image path: [10, L] per-crop scores}} for every readable image."""
  paths = [os.path.join(trained.image_dir, name) for name in fx.IMAGES]
  return {head: fx.per_crop_scores(trained, head, paths) for head in ("A", "B")}


@pytest.fixture(scope="module")
def latest_run(trained, hand):
  """The train dir (-> ckpt-20 with EMA head B), mean, an original-format image_list with a
  corrupt image, per-label thresholds and label names, batches of 2."""
  root = os.path.join(trained.root, "latest_run")
  os.makedirs(root)
  names = ["c.png", "broken.jpg", "a.png", "e.jpg", "b.png", "d.png"]  # not sorted: list order
  list_file = os.path.join(root, "image_list")
  with open(list_file, "w") as f:
    f.write("".join(f"{name} {i % 3 + 1}\n" for i, name in enumerate(names)))
  # Thresholds halfway between the 2nd and 3rd lowest hand-computed scores of each label: some
  # images above, some below, none near a threshold.
  hand_mean = np.sort([s.mean(axis=0) for s in hand["B"].values()], axis=0)  # [5, L]
  thresholds = (hand_mean[1] + hand_mean[2]) / 2
  thresholds_file = os.path.join(root, "thresholds.txt")
  np.savetxt(thresholds_file, thresholds, fmt="%.9f", header="method: test")
  names_file = os.path.join(root, "names.txt")
  with open(names_file, "w") as f:
    f.write("\n".join(NAMES) + "\n")
  output_dir = os.path.join(root, "out")
  log = run_main([f"--checkpoint_path={trained.train_dir}", f"--image_list_file={list_file}",
                  f"--image_dir={trained.image_dir}", f"--thresholds_file={thresholds_file}",
                  f"--label_names_file={names_file}", f"--inference_dir={output_dir}",
                  "--batch_size=2"])
  return dict(log=log, paths=[os.path.join(trained.image_dir, n) for n in names],
              thresholds=np.loadtxt(thresholds_file), scores=os.path.join(output_dir, "scores.txt"),
              csv=os.path.join(output_dir, "predictions.csv"), thresholds_file=thresholds_file,
              config=os.path.join(output_dir, config_files.INFERENCE_CONFIG_FILE), list=list_file)


@pytest.fixture(scope="module")
def prefix_max_run(trained):
  """A checkpoint prefix (ckpt-10, head A, no EMA), max over the crops, a plain list of paths;
  the scorer without XLA (the other runs use the default, XLA)."""
  root = os.path.join(trained.root, "prefix_run")
  os.makedirs(root)
  paths = [os.path.join(trained.image_dir, name) for name in fx.IMAGES]
  list_file = os.path.join(root, "paths.txt")
  with open(list_file, "w") as f:
    f.write("\n".join(paths) + "\n")
  log = run_main([f"--checkpoint_path={trained.prefix_a}", f"--image_list_file={list_file}",
                  "--aggregation=max", f"--inference_dir={root}", "--xla=false"])
  return dict(log=log, paths=paths, scores=np.loadtxt(os.path.join(root, "scores.txt")))


# ---------------------------------------------------------------------------------------------
# Scores.

@pytest.mark.slow
def test_auto_xla_times_both_scorers_once_and_logs_its_choice(latest_run):
  """The default xla=auto: one 'scorer:' line with both timings; the scores (checked against the
  hand-made crops below) come from whichever it chose."""
  lines = [line for line in latest_run["log"].splitlines() if "scorer:" in line]
  assert len(lines) == 1, latest_run["log"]
  assert re.search(r"XLA \d+\.\d+ s, plain \d+\.\d+ s a batch; using (XLA|plain)$", lines[0]), lines[0]


@pytest.mark.slow
def test_mean_equals_the_mean_over_hand_made_crops(latest_run, hand):
  scores = np.loadtxt(latest_run["scores"])
  for path, row in zip(latest_run["paths"], scores):
    if path.endswith(fx.CORRUPT):
      continue
    np.testing.assert_allclose(row, hand["B"][path].mean(axis=0), atol=ATOL, err_msg=path)


def test_max_is_the_max_over_hand_made_crops_and_not_below_the_mean(prefix_max_run, hand):
  scores = prefix_max_run["scores"]
  per_crop = np.stack([hand["A"][p] for p in prefix_max_run["paths"]])  # [N, 10, L]
  np.testing.assert_allclose(scores, per_crop.max(axis=1), atol=ATOL)
  assert np.all(scores >= per_crop.mean(axis=1) - ATOL)
  # The crops disagree (noise images), so the max is above the mean everywhere.
  assert np.all(scores - per_crop.mean(axis=1) > 1e-3)


def test_the_ten_crops_differ(hand):
  """Sanity of the oracle: the mirrors and the corners give different scores, so the tests above
  would notice a wrong crop or a missing flip."""
  for per_crop in hand["A"].values():
    assert np.ptp(per_crop, axis=0).min() > 1e-3


# ---------------------------------------------------------------------------------------------
# Output files.

@pytest.mark.slow
def test_score_file_format_round_trips(latest_run, hand):
  with open(latest_run["scores"]) as f:
    lines = f.read().splitlines()
  assert len(lines) == len(latest_run["paths"])  # a row per image of the list, the corrupt too
  number = r"-?\d+(\.\d+)?(e-\d+)?"  # exact (Python's float repr), no longer %.6f
  for path, line in zip(latest_run["paths"], lines):
    if path.endswith(fx.CORRUPT):
      assert line == "nan nan nan"
    else:
      assert re.fullmatch(rf"{number}( {number}){{{fx.LABELS - 1}}}", line), line
  scores = np.loadtxt(latest_run["scores"])
  assert scores.shape == (len(latest_run["paths"]), fx.LABELS)
  assert np.array_equal(np.isnan(scores).any(axis=1),
                        [p.endswith(fx.CORRUPT) for p in latest_run["paths"]])
  expected = np.array([hand["B"][p].mean(axis=0) if p in hand["B"] else [np.nan] * fx.LABELS
                       for p in latest_run["paths"]])
  np.testing.assert_allclose(scores, expected, atol=ATOL)  # rows in list order


@pytest.mark.slow
def test_corrupt_image_is_reported_marked_and_keeps_its_row(latest_run):
  bad = os.path.join(os.path.dirname(latest_run["paths"][0]), fx.CORRUPT)
  assert re.search(rf"unreadable image {re.escape(bad)}: \S", latest_run["log"])
  assert "1 unreadable" in latest_run["log"]
  rows = read_csv(latest_run["csv"])[1:]
  assert [r[0] for r in rows] == latest_run["paths"]
  assert [r[1] for r in rows] == ["unreadable" if p == bad else "ok" for p in latest_run["paths"]]
  assert rows[latest_run["paths"].index(bad)][2:] == [""] * (fx.LABELS + 1)


@pytest.mark.slow
def test_predictions_csv_has_scores_and_label_names_above_the_thresholds(latest_run, hand):
  header, *rows = read_csv(latest_run["csv"])
  assert header == ["image_path", "status"] + NAMES + ["predicted_labels"]
  predicted_any = set()
  for row in rows:
    if row[1] != "ok":
      continue
    expected = hand["B"][row[0]].mean(axis=0)
    np.testing.assert_allclose([float(s) for s in row[2:2 + fx.LABELS]], expected, atol=ATOL)
    above = [n for n, s, t in zip(NAMES, expected, latest_run["thresholds"]) if s >= t]
    assert row[-1] == ";".join(above), row
    predicted_any.add(row[-1])
  assert len(predicted_any) > 1  # the thresholds split the images: not all rows alike


def test_threshold_count_mismatch_is_a_clear_error_before_scoring(trained, tmp_path):
  thresholds_file = tmp_path / "thresholds.txt"
  thresholds_file.write_text("0.5\n0.4\n")
  with pytest.raises(ValueError, match=rf"{re.escape(str(thresholds_file))}: 2 thresholds, but "
                                       rf"the model has {fx.LABELS} labels"):
    run_main([f"--checkpoint_path={trained.train_dir}", f"--image_dir={trained.image_dir}",
              f"--thresholds_file={thresholds_file}", f"--inference_dir={tmp_path / 'out'}"])
  assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------------------------------
# The default resize follows the model (the original's 290/224 of the trained target size).

@pytest.mark.slow
def test_defaults_score_crops_of_the_followed_resize(trained, tmp_path):
  """No resize flags: the 10-crop scores are the model's on numpy crops of an 83 x 124 resize
  (not of a 290 x 290 one, the old default whatever the model)."""
  paths = [os.path.join(trained.image_dir, name) for name in fx.IMAGES]
  out = io.StringIO()
  with contextlib.redirect_stdout(out):
    assert inference.main(["--gpu_id=-1", f"--checkpoint_path={trained.prefix_a}",
                           f"--image_dir={trained.image_dir}", f"--inference_dir={tmp_path}",
                           "--xla=false"]) == 0
  assert f"resize {fx.DEFAULT_RESIZE}, 10 crops of {fx.TARGET}" in out.getvalue()
  hand = fx.per_crop_scores(trained, "A", paths, fx.DEFAULT_RESIZE)
  rows = read_csv(tmp_path / "predictions.csv")[1:]
  scores = np.loadtxt(tmp_path / "scores.txt")
  checked = 0
  for row, score in zip(rows, scores):
    if row[1] == "ok":
      np.testing.assert_allclose(score, hand[row[0]].mean(axis=0), atol=ATOL, err_msg=row[0])
      checked += 1
  assert checked == len(fx.IMAGES)
  at_290 = fx.per_crop_scores(trained, "A", paths[:1], (290, 290))[paths[0]].mean(axis=0)
  assert np.abs(at_290 - hand[paths[0]].mean(axis=0)).max() > 1e-3  # the resize shows


@pytest.mark.slow
def test_inference_config_ties_the_scores_to_what_produced_them(latest_run, trained):
  with open(latest_run["config"]) as f:
    saved = json.load(f)
  assert saved["run"] == {
      "checkpoint": trained.prefix_b, "global_step": 20, "views": "ten", "crops_per_image": 10,
      "resize": list(fx.RESIZE),
      "target": list(fx.TARGET), "aggregation": "mean",
      "thresholds_file": latest_run["thresholds_file"],
      "thresholds": np.loadtxt(latest_run["thresholds_file"]).tolist(),  # the values it used
      "images": 6, "unreadable": 1}
  assert saved["label_names"] == NAMES
  config = config_files.load_config(latest_run["config"], configs.InferenceConfig)
  assert (config.image_list_file, config.batch_size, config.resize_height) == (
      latest_run["list"], 2, fx.RESIZE[0])
  model_config = config_files.load_config(latest_run["config"], configs.ModelConfig)
  assert (model_config.label_count, model_config.target_height, model_config.target_width) == (
      fx.LABELS, *fx.TARGET)


def train_dir_with_config(trained, folder, edit):
  """ckpt-10's files linked into `folder`, beside the fixture's config.json changed by `edit`
  (a function of the loaded JSON)."""
  folder.mkdir()
  for path in glob.glob(trained.prefix_a + ".*"):
    os.link(path, folder / os.path.basename(path))
  with open(os.path.join(trained.train_dir, "config.json")) as f:
    saved = json.load(f)
  edit(saved)
  (folder / "config.json").write_text(json.dumps(saved))
  return folder


@pytest.mark.slow
def test_label_names_come_from_the_train_dir_config(trained, tmp_path):
  """A train dir whose config.json holds label names (as train.py writes it): predictions.csv
  and inference_config.json name the labels by them, with no --label_names_file."""
  train_dir = train_dir_with_config(trained, tmp_path / "named",
                                    lambda saved: saved.update(label_names=NAMES))
  run_main([f"--checkpoint_path={train_dir / 'ckpt-10'}", f"--image_dir={trained.image_dir}",
            f"--inference_dir={tmp_path / 'out'}", "--xla=false"])
  assert read_csv(tmp_path / "out" / "predictions.csv")[0] == (
      ["image_path", "status"] + NAMES + ["predicted_labels"])
  with open(tmp_path / "out" / config_files.INFERENCE_CONFIG_FILE) as f:
    assert json.load(f)["label_names"] == NAMES


# ---------------------------------------------------------------------------------------------
# Views: the 10 crops for a model trained on crops, else the one view it trained on.

@pytest.mark.slow
def test_a_model_trained_without_crops_is_scored_on_its_one_view(trained, tmp_path):
  """A train dir whose config.json says augmentation=none: the default views=auto scores each
  image once, resized to the target: the model's own output on the plain resize, by hand."""
  train_dir = train_dir_with_config(trained, tmp_path / "uncropped",
                                    lambda saved: saved["model"].update(augmentation="none"))
  log = run_main([f"--checkpoint_path={train_dir / 'ckpt-10'}", f"--image_dir={trained.image_dir}",
                  f"--inference_dir={tmp_path / 'out'}", "--xla=false"])
  assert f"one view, resized to {fx.TARGET}" in log
  paths = [os.path.join(trained.image_dir, name) for name in fx.IMAGES]
  for v in trained.model.trainable_variables:
    v.assign(trained.heads["A"][v.name])
  plain = []
  for path in paths:  # the hand-made crops' decode (PIL for PNG, TF for JPEG), then the resize
    whole = fx.hand_ten_crops(path, fx.TARGET)[0]  # a resize to the target: crop 0 is all of it
    plain.append(whole)
  want = trained.model(np.stack(plain))[1]["predictions"].numpy()
  rows = read_csv(tmp_path / "out" / "predictions.csv")[1:]
  scores = dict(zip((row[0] for row in rows), np.loadtxt(tmp_path / "out" / "scores.txt")))
  for path, expected in zip(paths, want):
    np.testing.assert_allclose(scores[path], expected, atol=ATOL, err_msg=path)
  with open(tmp_path / "out" / config_files.INFERENCE_CONFIG_FILE) as f:
    run = json.load(f)["run"]
  assert (run["views"], run["crops_per_image"]) == ("one", 1)


# ---------------------------------------------------------------------------------------------
# Checkpoints.

@pytest.mark.slow
def test_train_dir_uses_its_latest_checkpoint_with_the_ema_weights(latest_run, hand):
  assert re.search(r"restored \S*/train/ckpt-20 \(step 20\)", latest_run["log"])
  scores = np.loadtxt(latest_run["scores"])
  good = [i for i, p in enumerate(latest_run["paths"]) if not p.endswith(fx.CORRUPT)]
  raw = np.array([hand["A"][latest_run["paths"][i]].mean(axis=0) for i in good])
  # ckpt-20's raw weights are A: scores of A would mean the EMA shadows were ignored.
  assert np.abs(scores[good] - raw).min() > 1e-3


def test_prefix_restores_that_checkpoint(prefix_max_run):
  assert re.search(r"restored \S*/train/ckpt-10 \(step 10\)", prefix_max_run["log"])


@pytest.mark.slow
def test_eval_best_dir_alone_with_image_dir_alone(trained, hand):
  """best/ away from its train dir (its own config.json), scoring every image of image_dir."""
  output_dir = os.path.join(trained.root, "best_run")
  log = run_main([f"--checkpoint_path={trained.best_dir}", f"--image_dir={trained.image_dir}",
                  f"--inference_dir={output_dir}"])
  assert re.search(r"restored \S*/elsewhere/best/ckpt-10 \(step 10\)", log)
  rows = read_csv(os.path.join(output_dir, "predictions.csv"))[1:]
  names = ["a.png", "b.png", fx.CORRUPT, "c.png", "d.png", "e.jpg"]  # sorted, no notes.txt
  assert [os.path.basename(r[0]) for r in rows] == names
  scores = np.loadtxt(os.path.join(output_dir, "scores.txt"))
  for row, score in zip(rows, scores):
    if row[1] == "ok":
      np.testing.assert_allclose(score, hand["A"][row[0]].mean(axis=0), atol=ATOL)
      assert row[-1] == ";".join(f"label_{j}" for j in range(fx.LABELS) if score[j] >= 0.5)


# ---------------------------------------------------------------------------------------------
# get_test_image_list.

def test_image_list_plain_paths(tmp_path):
  list_file = tmp_path / "paths.txt"
  list_file.write_text("/data/x/one.jpg\nrelative/two.png\n\n/data/three.jpg\n")
  config = configs.InferenceConfig(image_list_file=str(list_file))
  assert inference.get_test_image_list(config) == [
      "/data/x/one.jpg", "relative/two.png", "/data/three.jpg"]


def test_image_list_original_format_resolved_against_image_dir(tmp_path):
  list_file = tmp_path / "image_list"
  list_file.write_text("b.jpg 2\na.jpg 1\nsub/c.png 3\n/abs/d.jpg 1\n")
  config = configs.InferenceConfig(image_list_file=str(list_file), image_dir="/imgs")
  assert inference.get_test_image_list(config) == [
      "/imgs/b.jpg", "/imgs/a.jpg", "/imgs/sub/c.png", "/abs/d.jpg"]


def test_image_list_with_a_bom_crlf_blank_lines_and_spaces_reads_as_create_tfrecord_reads_it(
    tmp_path):
  list_file, label_file = tmp_path / "image_list", tmp_path / "image_label"
  list_file.write_bytes("\ufeffmy photo.jpg 2\r\n\r\n  \r\nsub/b c.png 0\r\nd.jpg 1\r\n\r\n"
                        .encode("utf-8"))
  label_file.write_text("1 1\n0 0\n1 0\n")
  names = [name for name, _ in create_tfrecord.read_list_and_labels(str(list_file),
                                                                    str(label_file))]
  assert names == ["my photo.jpg", "sub/b c.png", "d.jpg"]  # the oracle: create_tfrecord's
  config = configs.InferenceConfig(image_list_file=str(list_file), image_dir="/imgs")
  assert inference.get_test_image_list(config) == [f"/imgs/{n}" for n in names]


def test_a_plain_list_of_paths_with_spaces_keeps_whole_lines(tmp_path):
  list_file = tmp_path / "paths.txt"
  list_file.write_bytes(b"\xef\xbb\xbf/data/my photo 2.jpg\r\nrelative/two words.png\r\n\r\n"
                        b"/data/2019 trip/3\r\n")
  config = configs.InferenceConfig(image_list_file=str(list_file))
  assert inference.get_test_image_list(config) == [
      "/data/my photo 2.jpg", "relative/two words.png", "/data/2019 trip/3"]


def test_strict_exits_1_after_writing_outputs_that_mark_the_unreadable(trained, hand, tmp_path,
                                                                     capsys):
  """A list saved with a BOM and CRLF, names with spaces, one image corrupt: the readable one is
  scored (head A), the corrupt one counted and marked, and --strict=true makes that exit 1."""
  image_dir = tmp_path / "images"
  image_dir.mkdir()
  shutil.copy(os.path.join(trained.image_dir, "a.png"), image_dir / "my photo.png")
  shutil.copy(os.path.join(trained.image_dir, fx.CORRUPT), image_dir / "cut off.jpg")
  list_file = tmp_path / "image_list"
  list_file.write_bytes("\ufeffmy photo.png 1\r\ncut off.jpg 2\r\n".encode("utf-8"))
  out_dir = tmp_path / "out"
  status, out, err = run_script_main(capsys, inference.main, [
      "--gpu_id=-1", f"--resize_height={fx.RESIZE[0]}", f"--resize_width={fx.RESIZE[1]}",
      f"--checkpoint_path={trained.prefix_a}", f"--image_list_file={list_file}",
      f"--image_dir={image_dir}", f"--inference_dir={out_dir}", "--xla=false", "--strict=true"])
  assert status == 1 and "Traceback" not in err
  assert err.splitlines()[-1] == (
      "error: 1 of 2 images were unreadable (listed above; their rows are marked in the outputs) "
      "and --strict=true")
  assert "scored 1 images" in out and "1 unreadable (a NaN row each" in out
  scores = np.loadtxt(out_dir / "scores.txt")
  np.testing.assert_allclose(scores[0], hand["A"][os.path.join(trained.image_dir, "a.png")]
                             .mean(axis=0), atol=ATOL)
  assert np.isnan(scores[1]).all()
  rows = read_csv(out_dir / "predictions.csv")[1:]
  assert [(r[0], r[1]) for r in rows] == [(str(image_dir / "my photo.png"), "ok"),
                                          (str(image_dir / "cut off.jpg"), "unreadable")]


def test_image_dir_alone_is_every_image_sorted(tmp_path):
  for name in ["b.png", "a.jpg", "C.JPEG", "notes.txt", "d.bmp", "labels.csv"]:
    (tmp_path / name).write_bytes(b"")
  config = configs.InferenceConfig(image_dir=str(tmp_path))
  assert inference.get_test_image_list(config) == [
      str(tmp_path / n) for n in ["C.JPEG", "a.jpg", "b.png", "d.bmp"]]


def test_no_images_given_is_an_error():
  with pytest.raises(ValueError, match="image_list_file or --image_dir"):
    inference.get_test_image_list(configs.InferenceConfig())
