"""evaluate.py on faults (issue 20): damaged checkpoints, NaN weights, read-only output folders,
a metrics.jsonl line cut short, Ctrl-C and SIGTERM. Each ends in one line, or the evaluator goes
on, and leaves no half-written output.

The run: ResNet-50 v2 at 32x32, 4 labels, checkpoints saved as train.py saves them (no training
needed): ckpt-2, 4 and 6 with random weights, ckpt-8 with NaN in the head, as a run that diverged
saves them. evaluate.main runs in-process through errors.run; the signals go to real processes.

  .venv/bin/python -m pytest tests/test_evaluate_faults.py
"""

import json
import os
import re
import signal

import numpy as np
import pytest
import tensorflow as tf

import configs
import evaluate
from tests.fault_helpers import (DAMAGES, assert_one_line, copy_checkpoints, output_files,
                           read_only_folder, stop_while_working)
from multi_label_classification_model import MultiLabelClassificationModel
from multilabel import checkpoints, config_files, errors, files
from multilabel.training import optimizers
from tests.helpers import run_script_main, write_records

LABELS = 4


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  root = tmp_path_factory.mktemp("eval_faults")
  model_config = configs.ModelConfig(label_count=LABELS, target_height=32, target_width=32)
  train_config = configs.TrainConfig()
  tf.random.set_seed(0)
  model = MultiLabelClassificationModel(model_config)
  optimizer = optimizers.make_optimizer(train_config, model.trainable_variables)
  train_dir = str(root / "train")
  manager = tf.train.CheckpointManager(checkpoints.make_checkpoint(model, optimizer), train_dir,
                                       max_to_keep=None)
  for step in (2, 4, 6):
    optimizer.iterations.assign(step)
    manager.save(checkpoint_number=step)
  last = model.head[-1]
  last.weights.assign(tf.fill(last.weights.shape, float("nan")))  # a diverged run's head
  optimizer.iterations.assign(8)
  manager.save(checkpoint_number=8)
  config_files.save_configs(os.path.join(train_dir, config_files.TRAIN_CONFIG_FILE),
                            model_config, train_config)
  labels = np.random.default_rng(5).integers(0, 2, (12, LABELS))
  labels[0], labels[1] = 1, 0  # every label has both classes
  eval_data = write_records(root / "eval.tfrecord", labels, seed=2)
  return dict(root=root, train_dir=train_dir, eval_data=eval_data)


def evaluate_args(run, checkpoint_dir, eval_dir, *more):
  return [f"--checkpoint_dir={checkpoint_dir}", f"--input_tfrecord_file={run['eval_data']}",
          f"--eval_dir={eval_dir}", "--batch_size=6", "--min_global_step=0", *more]


def watch_args(run, checkpoint_dir, eval_dir):
  """A watching evaluator that stops 1 s after the last checkpoint listed."""
  return evaluate_args(run, checkpoint_dir, eval_dir, "--eval_interval_secs=1",
                       "--timeout_secs=1")


def recorded(eval_dir):
  with open(os.path.join(eval_dir, evaluate.METRICS_FILE)) as f:
    return [json.loads(line)["checkpoint"] for line in f]


# ---------------------------------------------------------------------------------------------
# Damaged checkpoints, and NaN weights.

@pytest.mark.parametrize("part, how", DAMAGES)
def test_run_once_on_a_damaged_checkpoint_is_one_line_naming_it(run, tmp_path, capsys, part,
                                                                how):
  """Before: IndexError "Read less bytes than requested", DataLossError "Checksum does not
  match", "not an sstable (bad magic number)": a traceback each."""
  train_dir = copy_checkpoints(run["train_dir"], tmp_path / "train", ["ckpt-2", "ckpt-4"],
                               damaged=("ckpt-4", part, how))
  status, out, err = run_script_main(capsys, evaluate.main, evaluate_args(
      run, train_dir, tmp_path / "eval", "--run_once=true"))
  assert status == 1, err
  line = assert_one_line(err, f"{train_dir}/ckpt-4: this checkpoint cannot be restored, its "
                              "files are damaged or incomplete (")
  assert line.endswith(f"; use {train_dir}/ckpt-2 instead")
  assert not os.path.exists(tmp_path / "eval" / evaluate.METRICS_FILE)


def test_a_watching_evaluator_names_a_damaged_and_a_nan_checkpoint_and_goes_on(run, tmp_path,
                                                                              capsys):
  """ckpt-4's data file has 64 bytes flipped, ckpt-8 holds NaN weights. Before: the watch died
  on ckpt-4 in a traceback, and never evaluated ckpt-6."""
  train_dir = copy_checkpoints(run["train_dir"], tmp_path / "train",
                               ["ckpt-2", "ckpt-4", "ckpt-6", "ckpt-8"],
                               damaged=("ckpt-4", "data-00000-of-00001", "flip"))
  eval_dir = tmp_path / "eval"
  status, out, err = run_script_main(capsys, evaluate.main, watch_args(run, train_dir, eval_dir))
  assert status == 0 and "Traceback" not in err, err
  assert re.search(r"^skipping ckpt-4: \S+/ckpt-4: this checkpoint cannot be restored, its files "
                   r"are damaged or incomplete \(.*Checksum does not match.*\); going on to the "
                   r"next one$", out, re.M), out
  assert re.search(r"^skipping ckpt-8: \S+/ckpt-8: its scores are not finite \(NaN or inf\) for "
                   r"12 of 12 images: .*; going on to the next one$", out, re.M), out
  assert "evaluated 2 checkpoint(s)" in out
  assert recorded(eval_dir) == ["ckpt-2", "ckpt-6"]  # the skipped ones are tried again at a restart
  with open(eval_dir / evaluate.BEST_DIR / "metrics.json") as f:
    assert json.load(f)["checkpoint"] in ("ckpt-2", "ckpt-6")


def test_run_once_on_nan_weights_names_the_checkpoint(run, tmp_path, capsys):
  """Before: `error: scores contain np.float64(nan) at image 0, label 0`, naming no checkpoint."""
  eval_dir = tmp_path / "eval"
  prefix = os.path.join(run["train_dir"], "ckpt-8")
  status, out, err = run_script_main(capsys, evaluate.main, evaluate_args(
      run, run["train_dir"], eval_dir, "--run_once=true", f"--checkpoint_path={prefix}",
      f"--score_file={tmp_path / 'scores.txt'}"))
  assert status == 1
  assert_one_line(err, f"error: {prefix}: its scores are not finite (NaN or inf) for 12 of 12 "
                       "images: the checkpoint holds the NaN or inf weights of a run that "
                       f"diverged; use {run['train_dir']}/ckpt-6 instead")
  assert not os.path.exists(eval_dir / evaluate.METRICS_FILE)
  assert not os.path.exists(eval_dir / evaluate.BEST_DIR)
  assert not os.path.exists(tmp_path / "scores.txt")


# ---------------------------------------------------------------------------------------------
# Read-only output folders.

@pytest.mark.parametrize("flag", ["eval_dir", "score_file"])
def test_a_read_only_output_folder_is_one_line_before_any_work(run, tmp_path, capsys,
                                                               monkeypatch, flag):
  """Before: the checkpoint was restored, then `PermissionError: ... .eval_config.json...tmp` (or
  the score file's, after the evaluation) in a traceback."""
  read_only = tmp_path / "read_only"
  eval_dir = read_only / "eval" if flag == "eval_dir" else tmp_path / "eval"
  more = [f"--score_file={read_only / 'scores.txt'}"] if flag == "score_file" else []
  with read_only_folder(read_only, monkeypatch):
    status, out, err = run_script_main(capsys, evaluate.main, evaluate_args(
        run, run["train_dir"], eval_dir, "--run_once=true", *more))
  assert status == 2, err
  assert_one_line(err, f"error: {flag}: cannot write in {read_only}")
  assert all(line.startswith("override ") for line in out.splitlines()), out  # no evaluation
  assert not os.path.exists(tmp_path / "eval")


def test_check_writable_names_a_file_in_the_way(tmp_path):
  (tmp_path / "file").write_text("")
  with pytest.raises(errors.ConfigError,
                     match=f"eval_dir: cannot write in {tmp_path}/file/eval: {tmp_path}/file is "
                           "a file"):
    files.check_writable(str(tmp_path / "file" / "eval"), "eval_dir")
  files.check_writable(str(tmp_path / "new" / "eval"), "eval_dir")
  assert sorted(os.listdir(tmp_path)) == ["file"]  # no folder made, no probe left


# ---------------------------------------------------------------------------------------------
# metrics.jsonl: a line cut short by a kill mid-append.

@pytest.mark.slow
def test_a_cut_last_line_is_ignored_once_and_the_next_record_starts_on_a_fresh_line(
    run, tmp_path, capsys):
  """The file state an evaluator killed while appending ckpt-2's record leaves: the restart
  notes the cut line and evaluates ckpt-2 again, on a line of its own; a third start has nothing
  to evaluate. Before: the new record was glued to the cut line, and every start evaluated
  ckpt-2 again."""
  train_dir = copy_checkpoints(run["train_dir"], tmp_path / "train", ["ckpt-2"])
  eval_dir = tmp_path / "eval"
  argv = watch_args(run, train_dir, eval_dir)
  status, out, _ = run_script_main(capsys, evaluate.main, argv)
  assert status == 0 and recorded(eval_dir) == ["ckpt-2"]
  metrics = eval_dir / evaluate.METRICS_FILE
  cut = metrics.read_text()[:40]  # killed halfway through its write
  metrics.write_text(cut)

  status, out, _ = run_script_main(capsys, evaluate.main, argv)
  assert status == 0 and "evaluated 1 checkpoint(s)" in out, out
  assert f"{evaluate.METRICS_FILE}:1: not a metrics record; ignored" in out
  assert re.search(r"^ckpt-2 \(step 2\): loss ", out, re.M)
  first, second = metrics.read_text().splitlines()
  assert first == cut and json.loads(second)["checkpoint"] == "ckpt-2"

  status, out, _ = run_script_main(capsys, evaluate.main, argv)
  assert status == 0 and "evaluated 0 checkpoint(s)" in out, out
  assert "not a metrics record" not in out  # noted once, the start after the kill


def test_an_append_after_a_file_without_a_final_newline_starts_a_line(tmp_path, capsys):
  path = tmp_path / evaluate.METRICS_FILE
  evaluate.append_record(str(path), {"checkpoint": "ckpt-1"})  # a new file
  path.write_text(path.read_text() + '{"checkpoint": "ckp')
  evaluate.append_record(str(path), {"checkpoint": "ckpt-2"})
  evaluate.append_record(str(path), {"checkpoint": "ckpt-3"})
  assert path.read_text().splitlines() == [
      '{"checkpoint": "ckpt-1"}', '{"checkpoint": "ckp', '{"checkpoint": "ckpt-2"}',
      '{"checkpoint": "ckpt-3"}']
  assert evaluate.already_evaluated(str(tmp_path)) == {"ckpt-1", "ckpt-2", "ckpt-3"}
  assert "not a metrics record" not in capsys.readouterr().out  # records follow the cut line


# ---------------------------------------------------------------------------------------------
# Ctrl-C and SIGTERM, to a real evaluate.py scoring a checkpoint.

@pytest.fixture(scope="module")
def many_images(run):
  """4,000 eval records: a few seconds of scoring, to be stopped in."""
  labels = np.random.default_rng(7).integers(0, 2, (4000, LABELS))
  return write_records(run["root"] / "many.tfrecord", labels, seed=3, side=32)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_while_scoring_is_one_line_its_status_and_no_output(run, many_images,
                                                                           tmp_path, signum):
  """Before: SIGINT gave `AssertionError: Concurrent access?` (a KeyboardInterrupt inside
  TensorFlow) in a traceback, SIGTERM a silent death (status -15)."""
  eval_dir = tmp_path / "eval"
  argv = [f"--checkpoint_dir={run['train_dir']}", f"--input_tfrecord_file={many_images}",
          f"--eval_dir={eval_dir}", "--batch_size=8", "--run_once=true",
          f"--checkpoint_path={run['train_dir']}/ckpt-6", f"--score_file={eval_dir}/scores.txt",
          f"--label_file={eval_dir}/labels.txt"]
  started = lambda: os.path.exists(eval_dir / config_files.EVAL_CONFIG_FILE)  # scoring next
  status, out, err = stop_while_working("evaluate.py", argv, started, signum, str(tmp_path))
  assert status == 128 + signum, err
  assert_one_line(err, f"error: stopped by {signum.name}; 0 checkpoint(s) evaluated and "
                       f"recorded in {eval_dir}/{evaluate.METRICS_FILE}")
  # Only what open_eval_dir wrote before the scoring: no metrics, best/, score file or temp file
  written = output_files(eval_dir)
  assert [f for f in written if not f.startswith("events.out.tfevents.")] == [
      config_files.EVAL_CONFIG_FILE], written
