"""evaluate.py beside train.py on tiny data (random 40x40 JPEGs, 4 labels, 32x32, frozen backbone).

One module fixture starts train.py and evaluate.py as two processes, as a user would; the other
tests evaluate that run's checkpoints in-process. Oracles: sklearn's metrics on the written score
and label files, the records' own labels, the model restored by hand, TensorBoard's event files.
(The AP chart's layout on hand values is tested in tests/multilabel/test_summaries.py.)

  .venv/bin/python -m pytest tests/test_evaluate.py
"""
import contextlib
import glob
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import average_precision_score, precision_score, recall_score

import configs
import evaluate
import multi_label_classification_model as mlc
import threshold_calibration
from multilabel import arguments, checkpoints, config_files
from multi_label_classification_model import MultiLabelClassificationModel
from multilabel.data.preprocessing import build_dataset
from tests.helpers import (REPO, chart_geometry_matches, eval_events, pr_counts_checked,
                           run_captured, write_records)
LABELS = 4
PRF = ("CP", "CR", "CF1", "OP", "OR", "OF1")
FIELDS = ("global_step", "loss", "mAP", "per_label_ap", *PRF, *(f"{n}_top3" for n in PRF))
TIMEOUT = 120  # evaluate.py's --timeout_secs backstop; max_evaluations should stop it first


def eval_labels():
  """12 images; label 0 has no positives (excluded from mAP), the others both classes."""
  labels = np.random.default_rng(5).integers(0, 2, (12, LABELS))
  labels[:, 0] = 0
  labels[0, 1:], labels[1, 1:] = 1, 0
  return labels


def run_evaluate(argv):
  """evaluate.main in-process: (exit status, its log)."""
  return run_captured(evaluate.main, argv)


def read_jsonl(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def model_scores(model, model_config, file_spec):
  dataset = build_dataset(model_config, "eval", file_spec=file_spec)
  return np.concatenate([model(images)[1]["predictions"].numpy() for images, _, _ in dataset])


def spawn(script, argv, log_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
  log = open(log_path, "w")
  return subprocess.Popen([sys.executable, script, *argv], cwd=REPO, env=env, stdout=log,
                          stderr=subprocess.STDOUT), log


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """train.py (frozen backbone, EMA 0.9, checkpoints at steps 10 to 40) and evaluate.py
  (--max_evaluations=2) started together; both must end by themselves."""
  root = tmp_path_factory.mktemp("side_by_side")
  train_data = write_records(root / "train.tfrecord",
                             np.random.default_rng(1).integers(0, 2, (16, LABELS)))
  labels = eval_labels()
  eval_data = write_records(root / "eval.tfrecord", labels, seed=2)
  train_dir, eval_dir = str(root / "train"), str(root / "eval")
  paths = dict(root=root, train_dir=train_dir, eval_dir=eval_dir, eval_data=eval_data,
               labels=labels, scores=str(root / "scores.txt"), label_file=str(root / "labels.txt"))
  trainer, train_log = spawn("train.py", [
      f"--label_count={LABELS}", f"--input_tfrecord_file={train_data}", f"--train_dir={train_dir}",
      "--target_height=32", "--target_width=32", "--resize_height=36", "--resize_width=36",
      "--batch_size=4", "--shuffle_buffer=16", "--gpu_id=-1", "--learning_rate=1e-5",
      "--ema_decay=0.9", "--number_of_steps=40", "--save_checkpoint_steps=10",
      "--log_every_n_steps=10", "--image_summary_steps=0"], root / "train.log")
  start = time.time()
  evaluator, eval_log = spawn("evaluate.py", [
      f"--checkpoint_dir={train_dir}", f"--input_tfrecord_file={eval_data}",
      f"--eval_dir={eval_dir}", "--max_evaluations=2", "--eval_interval_secs=1",
      "--min_global_step=0", f"--timeout_secs={TIMEOUT}", "--batch_size=5",
      f"--score_file={paths['scores']}", f"--label_file={paths['label_file']}"],
      root / "evaluate.log")
  watchdogs = [threading.Timer(TIMEOUT + 240, p.kill) for p in (trainer, evaluator)]
  for w in watchdogs:
    w.start()
  try:
    paths["eval_status"] = evaluator.wait()
    paths["eval_seconds"] = time.time() - start
    paths["train_status"] = trainer.wait()
  finally:
    for w in watchdogs:
      w.cancel()
    for p in (trainer, evaluator):
      p.kill()
    train_log.close()
    eval_log.close()
  paths["train_log"] = (root / "train.log").read_text()
  paths["eval_log"] = (root / "evaluate.log").read_text()
  return paths


@pytest.mark.slow
def test_evaluator_beside_trainer_evaluates_two_checkpoints_and_stops(run):
  assert run["train_status"] == 0, run["train_log"]
  assert run["eval_status"] == 0, run["eval_log"]
  assert "evaluated 2 checkpoint(s)" in run["eval_log"], run["eval_log"]
  assert run["eval_seconds"] < TIMEOUT  # stopped by max_evaluations, not by the timeout
  results = read_jsonl(os.path.join(run["eval_dir"], evaluate.METRICS_FILE))
  steps = [r["global_step"] for r in results]
  assert len(steps) == 2 and steps[0] < steps[1] and set(steps) <= {10, 20, 30, 40}, steps
  for r in results:
    assert r["checkpoint"] == f"ckpt-{r['global_step']}"
    assert re.search(rf"ckpt-{r['global_step']} \(step {r['global_step']}\): loss [\d.]+ mAP ",
                     run["eval_log"])


@pytest.mark.slow
def test_metrics_jsonl_fields_match_sklearn(run):
  results = read_jsonl(os.path.join(run["eval_dir"], evaluate.METRICS_FILE))
  for r in results:
    missing = [f for f in FIELDS if f not in r]
    assert not missing, missing
    assert r["num_images"] == 12 and math.isfinite(r["loss"]) and r["loss"] > 0
    assert len(r["per_label_ap"]) == LABELS
    assert r["per_label_ap"][0] is None and r["excluded_labels"] == [0]  # no positives
    assert r["mAP"] == pytest.approx(np.mean(r["per_label_ap"][1:]))
  assert "excluded, no positives: label_0" in run["eval_log"]
  # The last evaluation wrote the score and label files: recompute its metrics with sklearn.
  labels = np.loadtxt(run["label_file"], dtype=int)
  np.testing.assert_array_equal(labels, run["labels"])  # in record order
  scores = np.loadtxt(run["scores"])
  assert scores.shape == (12, LABELS)
  last = results[-1]
  for j in range(1, LABELS):
    assert last["per_label_ap"][j] == pytest.approx(
        average_precision_score(labels[:, j], scores[:, j]), abs=1e-4)
  top3 = np.zeros_like(labels)
  np.put_along_axis(top3, np.argsort(-scores, axis=1, kind="stable")[:, :3], 1, axis=1)
  for suffix, predictions in (("", (scores >= 0.5).astype(int)), ("_top3", top3)):
    cp = precision_score(labels, predictions, average="macro", zero_division=0)
    cr = recall_score(labels, predictions, average="macro", zero_division=0)
    op = precision_score(labels, predictions, average="micro", zero_division=0)
    o_r = recall_score(labels, predictions, average="micro", zero_division=0)
    want = {"CP": cp, "CR": cr, "CF1": 2 * cp * cr / (cp + cr) if cp + cr else 0.0,
            "OP": op, "OR": o_r, "OF1": 2 * op * o_r / (op + o_r) if op + o_r else 0.0}
    for name, value in want.items():
      assert last[name + suffix] == pytest.approx(value, abs=1e-9), name + suffix


@pytest.mark.slow
def test_best_holds_a_restorable_checkpoint_config_and_metrics(run):
  results = read_jsonl(os.path.join(run["eval_dir"], evaluate.METRICS_FILE))
  best_dir = os.path.join(run["eval_dir"], evaluate.BEST_DIR)
  with open(os.path.join(best_dir, "metrics.json")) as f:
    best = json.load(f)
  top = max(results, key=lambda r: r["mAP"])
  assert best["mAP"] == top["mAP"]
  name = best["checkpoint"]
  assert name == f"ckpt-{best['global_step']}"
  assert sorted(os.listdir(best_dir)) == sorted(
      ["checkpoint", "config.json", "metrics.json", f"{name}.index",
       f"{name}.data-00000-of-00001"])
  # The weights evaluate.py scored (issue 16: written from its memory, no longer a copy of
  # train.py's files): train.py's checkpoint with its moving average applied, variable by variable.
  assert_same_weights(best_dir, os.path.join(run["train_dir"], name))
  model, model_config, prefix, step = mlc.load_trained_model(best_dir)
  assert prefix == os.path.join(best_dir, name) and step == best["global_step"]
  assert (model_config.label_count, model_config.target_height) == (LABELS, 32)
  assert not glob.glob(best_dir + ".*")  # no staging left behind


@pytest.mark.slow
def test_eval_tensorboard_scalars_and_per_label_ap(run):
  tags = {}
  for path in glob.glob(os.path.join(run["eval_dir"], "events.out.tfevents.*")):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        tags.setdefault(value.tag, []).append(event.step)
  steps = sorted(r["global_step"] for r in read_jsonl(
      os.path.join(run["eval_dir"], evaluate.METRICS_FILE)))
  for tag in ("eval/loss", "eval/mAP", "eval/CF1", "eval/OF1", "eval/CF1_top3",
              "per_label_ap/label_1", "per_label_ap/label_3"):
    assert sorted(tags.get(tag, [])) == steps, tag
  assert "per_label_ap/label_0" not in tags  # None: the label has no positives


@pytest.mark.slow
def test_run_once_checkpoint_path_score_files_and_ema_weights(run, tmp_path):
  prefix = os.path.join(run["train_dir"], "ckpt-10")
  scores_file, labels_file = str(tmp_path / "s.txt"), str(tmp_path / "l.txt")
  status, log = run_evaluate([
      f"--checkpoint_dir={run['train_dir']}", f"--checkpoint_path={prefix}", "--run_once=true",
      f"--input_tfrecord_file={run['eval_data']}", f"--eval_dir={tmp_path / 'eval'}",
      "--batch_size=5", f"--score_file={scores_file}", f"--label_file={labels_file}"])
  assert status == 0
  (result,) = read_jsonl(tmp_path / "eval" / evaluate.METRICS_FILE)
  assert (result["checkpoint"], result["global_step"]) == ("ckpt-10", 10)
  lines = open(scores_file).read().splitlines()
  assert len(lines) == 12
  number = r"\d(\.\d+)?(e-\d+)?"  # exact (Python's float repr), no longer %.6f
  assert all(re.fullmatch(rf"{number}( {number}){{3}}", line) for line in lines), lines[0]
  np.testing.assert_array_equal(np.loadtxt(labels_file, dtype=int), run["labels"])
  assert open(labels_file).read().splitlines()[0] == " ".join(map(str, run["labels"][0]))
  # The scores are the EMA weights' (ckpt-10 holds 'ema'), not the raw weights'.
  assert any(k.startswith("ema/") for k in tf.train.load_checkpoint(prefix)
             .get_variable_to_shape_map())
  model, model_config, _, step = mlc.load_trained_model(prefix)  # use_ema=True
  assert step == 10
  written = np.loadtxt(scores_file)
  # %.6f rounds by up to 5e-7, and batches of another size sum in another order (~1e-6).
  np.testing.assert_allclose(model_scores(model, model_config, run["eval_data"]), written,
                             atol=1e-5)
  checkpoints.restore_model(model, prefix, use_ema=False)
  raw = model_scores(model, model_config, run["eval_data"])
  assert np.abs(raw - written).max() > 1e-3


@pytest.mark.slow
def test_deleted_checkpoints_under_the_evaluator_are_skipped(run, tmp_path, monkeypatch):
  """train.py's max_to_keep deletes old checkpoints under the evaluator: the first before the
  model is even built, the next with only its data file gone: each is logged and skipped. One is
  deleted while it is being scored: it was read, so it is evaluated, and best/ can hold it (its
  weights come from the evaluator's memory). The last one evaluates normally."""
  ckpt_dir = tmp_path / "train"
  ckpt_dir.mkdir()
  shutil.copy(os.path.join(run["train_dir"], config_files.TRAIN_CONFIG_FILE), ckpt_dir)
  for path in glob.glob(os.path.join(run["train_dir"], "ckpt-*")):
    shutil.copy(path, ckpt_dir)
  remove = lambda name, pattern=".*": [os.remove(p) for p in glob.glob(str(ckpt_dir / name)
                                                                       + pattern)]

  def listed(eval_config):
    remove("ckpt-10")
    yield str(ckpt_dir / "ckpt-10")
    remove("ckpt-20", ".data-*")  # its .index is still there
    yield str(ckpt_dir / "ckpt-20")
    yield str(ckpt_dir / "ckpt-30")
    yield str(ckpt_dir / "ckpt-40")

  score_dataset = evaluate.score_dataset
  scored = []

  def score_and_delete(predict, dataset, paths=None):
    scored.append(True)
    if len(scored) == 1:
      remove("ckpt-30")
    return score_dataset(predict, dataset, paths)

  monkeypatch.setattr(evaluate, "checkpoints_to_evaluate", listed)
  monkeypatch.setattr(evaluate, "score_dataset", score_and_delete)
  eval_dir = tmp_path / "eval"
  status, log = run_evaluate([f"--checkpoint_dir={ckpt_dir}", "--min_global_step=0",
                              f"--input_tfrecord_file={run['eval_data']}",
                              f"--eval_dir={eval_dir}", "--batch_size=5"])
  assert status == 0
  assert "skipping ckpt-10: it was deleted" in log
  assert "skipping ckpt-20: it was deleted" in log
  assert "skipping ckpt-30" not in log  # read before it was deleted: evaluated
  results = read_jsonl(eval_dir / evaluate.METRICS_FILE)
  assert [r["checkpoint"] for r in results] == ["ckpt-30", "ckpt-40"]
  best = max(results, key=lambda r: r["mAP"])["checkpoint"]  # the first of equals stays
  with open(eval_dir / evaluate.BEST_DIR / "metrics.json") as f:
    assert json.load(f)["checkpoint"] == best
  assert checkpoints.resolve_checkpoint(str(eval_dir / evaluate.BEST_DIR))[0] == str(
      eval_dir / evaluate.BEST_DIR / best)
  assert_same_weights(str(eval_dir / evaluate.BEST_DIR), os.path.join(run["train_dir"], best))
  assert not glob.glob(str(eval_dir / evaluate.BEST_DIR) + ".*")


def assert_same_weights(best_dir, prefix):
  """best/'s model holds the weights evaluate.py scores for `prefix`: its moving average where
  the run kept one (restored by checkpoints.restore_model, as inference.py restores them), and its step."""
  got, _, _, step = mlc.load_trained_model(best_dir)
  want, _, _, want_step = mlc.load_trained_model(prefix)
  assert step == want_step
  assert len(got.variables) == len(want.variables) > 270
  for a, b in zip(got.variables, want.variables):
    assert a.name == b.name
    np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.name)
  raw = MultiLabelClassificationModel(mlc.load_model_config(best_dir))
  checkpoints.restore_model(raw, prefix, use_ema=False)
  assert any(np.abs(a.numpy() - r.numpy()).max() > 0 for a, r in zip(got.variables,
                                                                      raw.variables))


def copy_run(run, folder, names):
  """A train dir holding config.json and the run's checkpoints `names`, listed in its state."""
  folder.mkdir()
  shutil.copy(os.path.join(run["train_dir"], config_files.TRAIN_CONFIG_FILE), folder)
  for name in names:
    for path in glob.glob(os.path.join(run["train_dir"], name + ".*")):
      shutil.copy(path, folder)
  (folder / "checkpoint").write_text(f'model_checkpoint_path: "{names[-1]}"\n' + "".join(
      f'all_model_checkpoint_paths: "{name}"\n' for name in names))
  return folder


@pytest.mark.slow
def test_every_listed_checkpoint_is_evaluated_and_the_best_survives_its_deletion(
    run, tmp_path, monkeypatch):
  """Four checkpoints listed at once (train.py saved faster than the evaluator looked), each
  deleted by train.py's max_to_keep right after the evaluator read it: all four are evaluated,
  in order, and best/ holds the best of them, from the evaluator's memory."""
  names = ["ckpt-10", "ckpt-20", "ckpt-30", "ckpt-40"]
  ckpt_dir = copy_run(run, tmp_path / "train", names)
  restore_model = checkpoints.restore_model

  def restore_then_delete(model, prefix, use_ema):
    step = restore_model(model, prefix, use_ema)
    for path in glob.glob(prefix + ".*"):
      os.remove(path)
    return step

  monkeypatch.setattr(checkpoints, "restore_model", restore_then_delete)
  eval_dir = tmp_path / "eval"
  status, log = run_evaluate([f"--checkpoint_dir={ckpt_dir}", "--min_global_step=0",
                              f"--input_tfrecord_file={run['eval_data']}", "--batch_size=6",
                              f"--eval_dir={eval_dir}", "--eval_interval_secs=1",
                              "--timeout_secs=3"])
  monkeypatch.undo()
  assert status == 0 and "evaluated 4 checkpoint(s)" in log, log
  results = read_jsonl(eval_dir / evaluate.METRICS_FILE)
  assert [r["checkpoint"] for r in results] == names
  assert not glob.glob(str(ckpt_dir / "ckpt-*"))  # all deleted under the evaluator
  best = max(results, key=lambda r: r["mAP"])
  with open(eval_dir / evaluate.BEST_DIR / "metrics.json") as f:
    assert json.load(f) == best
  assert f"wrote {best['checkpoint']}'s weights, as evaluated, to {eval_dir}/best/ (train.py " \
         f"has deleted {best['checkpoint']} since it was read)" in log
  assert_same_weights(str(eval_dir / evaluate.BEST_DIR),
                      os.path.join(run["train_dir"], best["checkpoint"]))


@pytest.mark.slow
def test_a_kill_during_the_best_write_then_a_restart_leaves_the_best_in_best(run, tmp_path):
  """evaluate.py killed (SIGKILL, no clean-up) while putting best/ in place: the restarted
  evaluator evaluates that checkpoint again, since metrics.jsonl had not recorded it, and best/
  ends up holding the best checkpoint."""
  names = ["ckpt-10", "ckpt-20"]
  ckpt_dir = copy_run(run, tmp_path / "train", names)
  eval_dir = tmp_path / "eval"
  argv = [f"--checkpoint_dir={ckpt_dir}", "--min_global_step=0", f"--eval_dir={eval_dir}",
          f"--input_tfrecord_file={run['eval_data']}", "--batch_size=6",
          "--eval_interval_secs=1", "--timeout_secs=3"]
  kill_at_best = (  # kill -9 as the first best/ is renamed into place
      "import os, signal, sys\n"
      "import evaluate\n"
      "from multilabel import errors\n"
      "rename = os.replace\n"
      "def replace(src, dst):\n"
      "  if str(dst).endswith(os.sep + evaluate.BEST_DIR):\n"
      "    os.kill(os.getpid(), signal.SIGKILL)\n"
      "  return rename(src, dst)\n"
      "os.replace = replace\n"
      "errors.run(evaluate.main, sys.argv[1:])\n")
  killed = subprocess.run([sys.executable, "-c", kill_at_best, *argv], cwd=REPO, timeout=300,
                          capture_output=True, text=True,
                          env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO)))
  assert killed.returncode == -9, killed.stdout + killed.stderr
  assert not os.path.exists(eval_dir / evaluate.BEST_DIR)
  recorded = eval_dir / evaluate.METRICS_FILE
  assert not recorded.exists() or read_jsonl(recorded) == []  # ckpt-10 is not recorded yet

  status, log = run_evaluate(argv)
  assert status == 0 and "evaluated 2 checkpoint(s)" in log, log
  results = read_jsonl(recorded)
  assert [r["checkpoint"] for r in results] == names  # ckpt-10 evaluated again, once recorded
  best = max(results, key=lambda r: r["mAP"])
  with open(eval_dir / evaluate.BEST_DIR / "metrics.json") as f:
    assert json.load(f) == best
  assert_same_weights(str(eval_dir / evaluate.BEST_DIR),
                      os.path.join(run["train_dir"], best["checkpoint"]))
  assert not glob.glob(str(eval_dir / evaluate.BEST_DIR) + ".*")  # no best.tmp/ or best.old/


def test_recover_best_after_a_kill_between_the_two_renames(tmp_path, capsys):
  best = tmp_path / evaluate.BEST_DIR
  (tmp_path / "best.old").mkdir()
  (tmp_path / "best.old" / "metrics.json").write_text('{"mAP": 0.5}')
  (tmp_path / "best.tmp").mkdir()  # the new best, complete or not: evaluated again
  evaluate.recover_best(str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == ["best"]
  assert (best / "metrics.json").read_text() == '{"mAP": 0.5}'
  assert f"restored {best} from {best}.old" in capsys.readouterr().out
  (tmp_path / "best.old").mkdir()  # killed after both renames, before removing the old one
  evaluate.recover_best(str(tmp_path))
  assert sorted(os.listdir(tmp_path)) == ["best"]
  assert (best / "metrics.json").read_text() == '{"mAP": 0.5}'


@pytest.mark.slow
def test_eval_set_without_positives_gives_no_map_and_no_best(run, tmp_path):
  eval_data = write_records(tmp_path / "negatives.tfrecord", np.zeros((6, LABELS), int), seed=3)
  eval_dir = tmp_path / "eval"
  status, log = run_evaluate([
      f"--checkpoint_dir={run['train_dir']}", "--run_once=true", f"--eval_dir={eval_dir}",
      f"--input_tfrecord_file={eval_data}", "--batch_size=4"])
  assert status == 0
  assert re.search(r"ckpt-40 \(step 40\): loss [\d.]+ mAP n/a ", log), log
  (result,) = read_jsonl(eval_dir / evaluate.METRICS_FILE)
  assert result["mAP"] is None and result["per_label_ap"] == [None] * LABELS
  assert result["excluded_labels"] == list(range(LABELS))
  assert (result["CR"], result["OR"]) == (0.0, 0.0)  # nothing to recall
  assert not os.path.exists(eval_dir / evaluate.BEST_DIR)  # nothing to rank it by


@pytest.mark.slow
def test_unknown_labels_are_kept_and_skipped_label_by_label(run, tmp_path):
  """The eval images again (same seed), with a third of their labels hidden as -1: the label
  file keeps the -1s, each metric is sklearn's on the known subset of its column, and the loss is
  the mean cross-entropy of the known entries (recomputed from the %.6f scores)."""
  hidden = eval_labels()
  rng = np.random.default_rng(9)
  hidden[2:][rng.random((10, LABELS)) < 0.35] = -1
  hidden[:, 3] = np.where(np.arange(12) < 2, hidden[:, 3], -1)  # label 3: rows 0 and 1 only
  eval_data = write_records(tmp_path / "hidden.tfrecord", hidden, seed=2)
  files = {name: tmp_path / f"{name}.txt" for name in ("scores", "labels")}
  status, log = run_evaluate([
      f"--checkpoint_dir={run['train_dir']}", "--run_once=true", f"--eval_dir={tmp_path / 'e'}",
      f"--input_tfrecord_file={eval_data}", "--batch_size=5",
      f"--score_file={files['scores']}", f"--label_file={files['labels']}"])
  assert status == 0, log
  (result,) = read_jsonl(tmp_path / "e" / evaluate.METRICS_FILE)
  labels, scores = np.loadtxt(files["labels"], dtype=int), np.loadtxt(files["scores"])
  np.testing.assert_array_equal(labels, hidden)  # -1 kept, in record order
  known = labels >= 0
  assert result["unknown_entries"] == int((~known).sum())
  assert result["excluded_labels"] == [0]
  for j in range(1, LABELS):
    assert result["per_label_ap"][j] == pytest.approx(
        average_precision_score(labels[known[:, j], j], scores[known[:, j], j]), abs=1e-4)
  predictions = (scores >= 0.5).astype(int)
  per_label = [(precision_score(labels[known[:, j], j], predictions[known[:, j], j],
                                zero_division=0),
                recall_score(labels[known[:, j], j], predictions[known[:, j], j],
                             zero_division=0)) for j in range(LABELS)]
  assert result["CP"] == pytest.approx(np.mean([p for p, _ in per_label]), abs=1e-9)
  assert result["CR"] == pytest.approx(np.mean([r for _, r in per_label]), abs=1e-9)
  assert result["OP"] == pytest.approx(
      precision_score(labels[known], predictions[known], zero_division=0), abs=1e-9)
  p, z = np.clip(scores[known], 1e-6, 1 - 1e-6), labels[known]
  assert result["loss"] == pytest.approx(np.mean(-z * np.log(p) - (1 - z) * np.log(1 - p)),
                                         rel=1e-3)
  # TensorBoard's precision-recall curves count each label's known entries only, like its AP
  events = eval_events(tmp_path / "e")
  for j in range(LABELS):
    counts = events[f"pr_curve/label_{j}"][result["global_step"]][1][:4]  # [4, 201]
    column = known[:, j]
    assert counts[:, 0].sum() == column.sum()  # TP + FP + TN + FN: the known entries
    assert pr_counts_checked(counts, labels[column, j] == 1, scores[column, j]) > 190


def test_already_evaluated_ignores_a_line_cut_short(tmp_path, capsys):
  """A killed evaluator can leave a partial last line: a restart must not crash on it."""
  good = json.dumps({"checkpoint": "ckpt-10", "global_step": 10, "mAP": 0.5})
  (tmp_path / evaluate.METRICS_FILE).write_text(good + "\n" + good[:25])
  assert evaluate.already_evaluated(str(tmp_path)) == {"ckpt-10"}
  assert f"{evaluate.METRICS_FILE}:2: not a metrics record" in capsys.readouterr().out


@pytest.mark.slow
def test_names_from_config_json_reach_the_eval_config_tensorboard_and_calibration(run, tmp_path):
  """train.py's config.json holds the label names: evaluate.py uses them and saves
  eval_config.json (its EvalConfig, the model config it ran and the names), and
  threshold_calibration.py --run_dir=<eval_dir> names its thresholds by them."""
  names = ["none", "x", "y", "z"]  # label 0 has no eval positives
  train_dir = tmp_path / "train"
  train_dir.mkdir()
  for path in glob.glob(os.path.join(run["train_dir"], "ckpt-40.*")):
    os.link(path, train_dir / os.path.basename(path))
  with open(os.path.join(run["train_dir"], config_files.TRAIN_CONFIG_FILE)) as f:
    saved = json.load(f)
  (train_dir / config_files.TRAIN_CONFIG_FILE).write_text(json.dumps({**saved, "label_names": names}))
  eval_dir, scores, labels = tmp_path / "eval", tmp_path / "scores.txt", tmp_path / "labels.txt"
  argv = [f"--checkpoint_dir={train_dir}", f"--checkpoint_path={train_dir / 'ckpt-40'}",
          "--run_once=true", f"--input_tfrecord_file={run['eval_data']}", f"--eval_dir={eval_dir}",
          "--batch_size=6", f"--score_file={scores}", f"--label_file={labels}"]
  status, log = run_evaluate(argv)
  assert status == 0
  assert re.search(r"^y +\d\.\d{4}$", log, re.M) and "excluded, no positives: none" in log

  config_path = eval_dir / config_files.EVAL_CONFIG_FILE
  expected = configs.EvalConfig()
  arguments.parse_overrides(argv, expected)
  assert config_files.load_config(config_path, configs.EvalConfig) == expected
  model_config = mlc.load_model_config(str(train_dir))  # as trained: the eval batch is eval's
  assert config_files.load_config(config_path, configs.ModelConfig) == model_config
  assert config_files.load_config(config_path, configs.EvalConfig).batch_size == 6
  with open(config_path) as f:
    assert json.load(f)["label_names"] == names

  tags = {value.tag for path in glob.glob(str(eval_dir / "events.out.tfevents.*"))
          for event in tf.compat.v1.train.summary_iterator(path) for value in event.summary.value}
  assert {f"per_label_ap/{name}" for name in names[1:]} <= tags

  out = io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
    threshold_calibration.main([f"--label_file={labels}", f"--score_file={scores}",
                                f"--run_dir={eval_dir}"])
  lines = out.getvalue().splitlines()
  start = lines.index("thresholds (method=roc):") + 1
  assert [line.split(":")[0].strip() for line in lines[start:start + 4]] == names


@pytest.mark.slow
def test_tensorboard_pr_curve_per_label_and_the_ap_chart(run):
  """Each evaluation writes TensorBoard's pr_curve summary for every label (the no-positive one
  too) and one PNG bar chart of the per-label APs; the last one's counts at each of its 201
  thresholds t = k/200 equal numpy's on the written score and label files (except within 1e-5
  of a score, where the files' %.6f rounding could tip them)."""
  events = eval_events(run["eval_dir"])
  results = {r["global_step"]: r for r in read_jsonl(os.path.join(run["eval_dir"],
                                                                  evaluate.METRICS_FILE))}
  for step, result in results.items():
    for j in range(LABELS):
      plugin, curve = events[f"pr_curve/label_{j}"][step]
      assert plugin == "pr_curves" and curve.shape == (6, 201)  # tp fp tn fn precision recall
    plugin, encoded = events["per_label_ap_chart"][step]
    assert plugin == "images"
    image = tf.io.decode_png(encoded[2]).numpy()
    assert [int(encoded[0]), int(encoded[1])] == [image.shape[1], image.shape[0]]
    chart_geometry_matches(image, result["per_label_ap"], result["mAP"])
  scores, labels = np.loadtxt(run["scores"]), np.loadtxt(run["label_file"], dtype=int)
  checked = 0
  for j in range(LABELS):
    counts = events[f"pr_curve/label_{j}"][max(results)][1][:4]  # [4, 201]
    checked += pr_counts_checked(counts, labels[:, j] == 1, scores[:, j])
  assert checked > 190 * LABELS
