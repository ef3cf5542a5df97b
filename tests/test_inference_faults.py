"""inference.py and export_saved_model.py on faults (issue 20): damaged checkpoints, NaN weights,
read-only output folders, Ctrl-C and SIGTERM. Each ends in one line, and leaves all of the
outputs or none of them, never a NaN row marked 'ok'.

The fixture of inference_fixture.py (ResNet-50 v2 at 64x96, 3 labels, ckpt-10 and ckpt-20), and
ckpt-30: its weights with NaN in the head, as a run that diverged saves them. The mains run
in-process through errors.run; the signals go to real processes.

  .venv/bin/python -m pytest tests/test_inference_faults.py
"""

import csv
import json
import os
import signal

import numpy as np
import pytest
import tensorflow as tf

import configs
import export_saved_model
import inference
from tests import inference_fixture as fx
from tests.fault_helpers import (DAMAGES, assert_one_line, copy_checkpoints, output_files,
                           read_only_folder, stop_while_working)
from multilabel import checkpoints, config_files, errors, runtime
from multilabel.training import optimizers
from tests.helpers import run_script_main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """inference_fixture's train dir, and ckpt-30 in it: NaN in the head's last convolution."""
  fixture = fx.build(str(tmp_path_factory.mktemp("inference_faults")))
  last = fixture.model.head[-1]
  last.weights.assign(tf.fill(last.weights.shape, float("nan")))
  optimizer = optimizers.make_optimizer(configs.TrainConfig(),
                                        fixture.model.trainable_variables)
  optimizer.iterations.assign(30)
  tf.train.CheckpointManager(checkpoints.make_checkpoint(fixture.model, optimizer),
                             fixture.train_dir, max_to_keep=5).save(checkpoint_number=30)
  return fixture


def infer_args(trained, out_dir, *more):
  return ["--gpu_id=-1", f"--image_dir={trained.image_dir}", f"--inference_dir={out_dir}",
          "--xla=false", *more]


def read_rows(path):
  with open(path, newline="") as f:
    return list(csv.reader(f))[1:]


# ---------------------------------------------------------------------------------------------
# Damaged checkpoints.

@pytest.mark.parametrize("main", [inference.main, export_saved_model.main],
                         ids=["inference", "export"])
@pytest.mark.parametrize("part, how", DAMAGES)
def test_a_damaged_checkpoint_is_one_line_naming_it(trained, tmp_path, capsys, main, part, how):
  """The train dir's latest, ckpt-20, cut off or with 64 bytes flipped. Before: IndexError "Read
  less bytes than requested", DataLossError "Checksum does not match" or "not an sstable (bad
  magic number)", in a traceback."""
  train_dir = copy_checkpoints(trained.train_dir, tmp_path / "train", ["ckpt-10", "ckpt-20"],
                               damaged=("ckpt-20", part, how))
  status, out, err = run_script_main(capsys, main, infer_args(
      trained, tmp_path / "out", f"--checkpoint_path={train_dir}",
      f"--export_saved_model={tmp_path / 'export'}"))
  assert status == 1, err
  line = assert_one_line(err, f"error: {train_dir}/ckpt-20: this checkpoint cannot be restored, "
                              "its files are damaged or incomplete (")
  assert line.endswith(f"; use {train_dir}/ckpt-10 instead")
  assert output_files(tmp_path / "out") == output_files(tmp_path / "export") == []


# ---------------------------------------------------------------------------------------------
# NaN weights.

def test_nan_scores_are_never_ok_and_exit_1_naming_the_checkpoint(trained, tmp_path, capsys):
  """Before: exit 0, and every row `nan` with status 'ok'. Now the outputs are written, the rows
  marked 'non-finite' (the corrupt image stays 'unreadable'), no SavedModel of the NaN weights
  replaces a good one, and one line names the checkpoint."""
  prefix = os.path.join(trained.train_dir, "ckpt-30")
  out_dir, export_dir = tmp_path / "out", tmp_path / "export"
  status, out, err = run_script_main(capsys, inference.main, infer_args(
      trained, out_dir, f"--checkpoint_path={prefix}", f"--export_saved_model={export_dir}"))
  assert status == 1
  images = len(fx.IMAGES)
  assert_one_line(err, f"error: {prefix}: its scores are not finite (NaN or inf) for {images} "
                       f"of {images} images: the checkpoint holds the NaN or inf weights of a "
                       "run that diverged; their rows are marked 'non-finite' in "
                       "predictions.csv; the SavedModel was not written; use "
                       f"{trained.train_dir}/ckpt-20 instead")
  assert f"; {images} with NaN or inf scores (status 'non-finite')" in out
  rows = read_rows(out_dir / "predictions.csv")
  statuses = {os.path.basename(row[0]): row[1] for row in rows}
  assert statuses == {**{name: "non-finite" for name in fx.IMAGES}, fx.CORRUPT: "unreadable"}
  assert all(row[-1] == "" for row in rows)  # no label predicted from a NaN
  assert np.isnan(np.loadtxt(out_dir / "scores.txt")).all()
  with open(out_dir / config_files.INFERENCE_CONFIG_FILE) as f:
    assert json.load(f)["run"]["checkpoint"] == prefix
  assert not export_dir.exists()


def test_image_statuses():
  scores = np.array([[0.5, 0.1], [np.nan, 0.2], [np.nan, np.nan], [np.inf, 0.0]])
  assert inference.image_statuses(scores, [2]) == ["ok", "non-finite", "unreadable",
                                                   "non-finite"]


# ---------------------------------------------------------------------------------------------
# Read-only output folders.

@pytest.mark.parametrize("flag", ["inference_dir", "export_saved_model"])
def test_a_read_only_output_folder_is_one_line_before_any_image_is_scored(
    trained, tmp_path, capsys, monkeypatch, flag):
  """Before: every image was scored, then `PermissionError: ... .scores.txt...tmp` (or the
  export's) in a traceback."""
  read_only = tmp_path / "read_only"
  out_dir = read_only / "out" if flag == "inference_dir" else tmp_path / "out"
  more = [f"--export_saved_model={read_only / 'export'}"] if flag == "export_saved_model" else []
  with read_only_folder(read_only, monkeypatch):
    status, out, err = run_script_main(capsys, inference.main, infer_args(
        trained, out_dir, f"--checkpoint_path={trained.prefix_a}", *more))
  assert status == 2, err
  assert_one_line(err, f"error: {flag}: cannot write in {read_only}")
  assert "restored" not in out and "scored" not in out, out
  assert not os.path.exists(tmp_path / "out")


# ---------------------------------------------------------------------------------------------
# Ctrl-C and SIGTERM.

def test_a_signal_in_a_deferred_block_stops_the_run_after_it(capsys):
  """What keeps inference.py's outputs whole: a signal while they are written stops the run once
  they all are, with exit status 128 + the signal's number."""
  steps = []
  with pytest.raises(errors.Interrupted) as stopped:
    with runtime.StopSignals(lambda: "the outputs are all written") as stop:
      with stop.deferred():
        os.kill(os.getpid(), signal.SIGTERM)
        steps.append("written")
      steps.append("after")
  assert steps == ["written"] and stopped.value.status == 143
  assert str(stopped.value) == "stopped by SIGTERM; the outputs are all written"
  assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handlers are put back


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_while_scoring_is_one_line_its_status_and_no_output(trained, tmp_path,
                                                                           signum):
  """400 images to score, stopped a second into the scoring. Before: a KeyboardInterrupt
  traceback (SIGINT), a silent death with status -15 (SIGTERM)."""
  image_list = tmp_path / "images.txt"
  image_list.write_text("".join(f"{trained.image_dir}/d.png\n" for _ in range(400)))
  out_dir = tmp_path / "out"
  argv = ["--gpu_id=-1", f"--checkpoint_path={trained.prefix_a}",
          f"--image_list_file={image_list}", f"--inference_dir={out_dir}", "--xla=false",
          "--batch_size=2"]
  log = tmp_path / "stdout.log"
  started = lambda: "scoring 400 images" in log.read_text()
  status, out, err = stop_while_working("inference.py", argv, started, signum, str(tmp_path))
  assert status == 128 + signum, err
  assert_one_line(err, f"error: stopped by {signum.name}; no output was written")
  assert "wrote" not in out
  assert output_files(out_dir) == []
