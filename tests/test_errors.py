"""One error style: each user mistake ends in one `error: ...` line, exit status 2 (configuration)
or 1 (data), and no traceback; a bug still raises. Each case runs its script's main through
errors.run, as `python <script>.py` does; three run as real processes. (errors.run's own tests
are in tests/multilabel/test_errors.py.)

The model cases use inference_fixture's train dir (3 labels, 64x96, random weights); the records
hold 4 labels.
"""

import importlib.util
import os
import shutil
import struct
import subprocess
import sys
import types

import numpy as np
import pytest

import evaluate
import export_saved_model
import inference
import read_tfrecord
import threshold_calibration
import train
from multilabel import errors
from tests import inference_fixture as fx
from tests.helpers import REPO, assert_one_error_line, write_records


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
  root = tmp_path_factory.mktemp("errors")
  trained = fx.build(str(root / "run"))
  empty_dir = root / "empty"
  empty_dir.mkdir()
  (empty_dir / "notes.txt").write_text("no image, no checkpoint\n")
  not_a_model = root / "not_a_model"
  not_a_model.mkdir()
  (not_a_model / "notes.txt").write_text("keep me\n")
  half = root / "half"  # a checkpoint whose data file train.py deleted (or never finished)
  half.mkdir()
  for name in ("config.json", "ckpt-10.index"):
    shutil.copy(os.path.join(trained.train_dir, name), half)
  (half / "checkpoint").write_text('model_checkpoint_path: "ckpt-10"\n')
  sixteen = write_records(root / "sixteen.tfrecord", np.eye(3, dtype=int)[np.arange(16) % 3])
  starts = record_starts(sixteen)
  data = open(sixteen, "rb").read()
  with open(root / "cut.tfrecord", "wb") as f:  # cut off inside record 10
    f.write(data[:starts[10] + 20])
  corrupt = bytearray(data)
  corrupt[starts[8] + 40] ^= 0xFF  # a byte of record 8's data: its checksum fails
  with open(root / "corrupt.tfrecord", "wb") as f:
    f.write(bytes(corrupt))
  with open(root / "cut_first.tfrecord", "wb") as f:  # cut off inside record 0
    f.write(data[:30])
  files = {"empty": "", "two_thresholds": "0.5\n0.4\n", "two_names": "cat\ndog\n",
           "labels": "1 0 1\n0 1 0\n"}
  for name, text in files.items():
    (root / f"{name}.txt").write_text(text)
  return types.SimpleNamespace(
      root=str(root), train_dir=trained.train_dir, image_dir=trained.image_dir,
      empty_dir=str(empty_dir), not_a_model=str(not_a_model), half=str(half),
      records=write_records(root / "four.tfrecord", np.eye(4, dtype=int)),
      records3=write_records(root / "three.tfrecord", np.eye(3, dtype=int)),
      cut=str(root / "cut.tfrecord"), corrupt=str(root / "corrupt.tfrecord"),
      cut_first=str(root / "cut_first.tfrecord"), starts=starts,
      empty_records=write_records(root / "none.tfrecord", []),
      **{name: str(root / f"{name}.txt") for name in files})


def record_starts(path):
  """The byte offset of each record of a TFRecord file, from its framing: a little-endian uint64
  length, its 4-byte CRC, the data, and the data's 4-byte CRC."""
  data, starts, offset = open(path, "rb").read(), [], 0
  while offset < len(data):
    starts.append(offset)
    offset += 16 + struct.unpack("<Q", data[offset:offset + 8])[0]
  return starts


def train_args(p, *extra):
  return [f"--train_dir={p.root}/train", "--gpu_id=-1", *extra]


def good_train_args(p, *extra):
  """train.py's arguments for a run that would start: 4 labels, the 4-label records."""
  return train_args(p, "--label_count=4", f"--input_tfrecord_file={p.records}", *extra)


def infer_args(p, *extra):
  return [f"--checkpoint_path={p.train_dir}", "--gpu_id=-1", f"--inference_dir={p.root}/out",
          *extra]


# case: (script's main, its arguments given the paths, exit status, what the error line says)
CASES = {
    "train: no flags": (train.main, lambda p: [], 2, "label_count=0: set --label_count"),
    "train: no records": (train.main, lambda p: train_args(p, "--label_count=4"), 2,
                          "set --input_tfrecord_file"),
    "train: bad flag value": (train.main, lambda p: train_args(p, "--number_of_steps=many"), 2,
                              "--number_of_steps='many': expected int"),
    # values out of range (issue 16): refused before any work, so nothing is written
    "train: a negative number of steps": (train.main, lambda p: good_train_args(
        p, "--number_of_steps=-5"), 2, "--number_of_steps=-5: must be >= 0"),
    "train: batch size 0": (train.main, lambda p: good_train_args(p, "--batch_size=0"), 2,
                            "--batch_size=0: must be >= 1"),
    # (more ranges, one per rule form, in test_configs.py)
    "train: unknown flag": (train.main, lambda p: train_args(p, "--label_cout=4"), 2,
                            "unknown field --label_cout; did you mean --label_count?"),
    "train: unknown loss": (train.main, lambda p: train_args(
        p, "--label_count=4", f"--input_tfrecord_file={p.records}", "--loss=hinge"), 2,
        "loss='hinge': expected sigmoid, focal, asymmetric"),
    "train: missing records": (train.main, lambda p: train_args(
        p, "--label_count=4", f"--input_tfrecord_file={p.root}/nothing.tfrecord"), 1,
        f"nothing.tfrecord' does not exist"),
    "train: empty records": (train.main, lambda p: train_args(
        p, "--label_count=4", f"--input_tfrecord_file={p.empty_records}"), 1,
        "none.tfrecord: no records in 1 file(s)"),
    "train: records with another label count": (train.main, lambda p: train_args(
        p, "--label_count=3", f"--input_tfrecord_file={p.records}"), 1,
        "four.tfrecord: its first record has 4 labels, but label_count is 3"),
    "train: label names of the wrong length": (train.main, lambda p: train_args(
        p, "--label_count=4", f"--input_tfrecord_file={p.records}",
        f"--label_names_file={p.two_names}"), 1,
        "two_names.txt: 2 label names, but the model has 4 labels"),
    "train: records cut off in the first record": (train.main, lambda p: train_args(
        p, "--label_count=3", f"--input_tfrecord_file={p.cut_first}"), 1,
        "cut_first.tfrecord: record 0 is cut off at byte 0: the file is damaged; rerun "
        "create_tfrecord.py to write it again"),
    "evaluate: no records": (evaluate.main, lambda p: [f"--checkpoint_dir={p.train_dir}"], 2,
                             "set --input_tfrecord_file"),
    "evaluate: checkpoint dir with no checkpoint": (evaluate.main, lambda p: [
        f"--checkpoint_dir={p.empty_dir}", "--run_once=true",
        f"--input_tfrecord_file={p.records}"], 1, "empty: no checkpoint in this directory"),
    "evaluate: run_once on a checkpoint whose data file is gone": (evaluate.main, lambda p: [
        f"--checkpoint_dir={p.half}", "--run_once=true", f"--input_tfrecord_file={p.records3}",
        f"--eval_dir={p.root}/eval"], 1,
        "half/ckpt-10: deleted (or never complete) before it could be read"),
    "evaluate: records with another label count": (evaluate.main, lambda p: [
        f"--checkpoint_dir={p.train_dir}", "--run_once=true", f"--input_tfrecord_file={p.records}",
        f"--eval_dir={p.root}/eval"], 1,
        "four.tfrecord: its first record has 4 labels, but label_count is 3"),
    "evaluate: top_k 0": (evaluate.main, lambda p: [
        f"--checkpoint_dir={p.train_dir}", f"--input_tfrecord_file={p.records3}", "--top_k=0",
        f"--eval_dir={p.root}/eval"], 2, "--top_k=0: must be >= 1"),
    "inference: batch size 0": (inference.main, lambda p: infer_args(
        p, f"--image_dir={p.image_dir}", "--batch_size=0"), 2, "--batch_size=0: must be >= 1"),
    "inference: no images given": (inference.main, lambda p: infer_args(p), 2,
                                   "set --image_list_file or --image_dir"),
    "inference: image folder with no images": (inference.main, lambda p: infer_args(
        p, f"--image_dir={p.empty_dir}"), 1, "empty': no images in it"),
    "inference: missing image list": (inference.main, lambda p: infer_args(
        p, f"--image_list_file={p.root}/no_list"), 1, "no_list: no such file"),
    "inference: empty image list": (inference.main, lambda p: infer_args(
        p, f"--image_list_file={p.empty}"), 1, "empty.txt: no image names in it"),
    "inference: checkpoint dir with no checkpoint": (inference.main, lambda p: [
        f"--checkpoint_path={p.empty_dir}", f"--image_dir={p.image_dir}"], 1,
        "empty: no checkpoint in this directory"),
    "inference: thresholds file of the wrong length": (inference.main, lambda p: infer_args(
        p, f"--image_dir={p.image_dir}", f"--thresholds_file={p.two_thresholds}"), 1,
        "two_thresholds.txt: 2 thresholds, but the model has 3 labels"),
    "inference: empty thresholds file": (inference.main, lambda p: infer_args(
        p, f"--image_dir={p.image_dir}", f"--thresholds_file={p.empty}"), 1,
        "empty.txt: no thresholds"),
    "inference: label names of the wrong length": (inference.main, lambda p: infer_args(
        p, f"--image_dir={p.image_dir}", f"--label_names_file={p.two_names}"), 1,
        "two_names.txt: 2 label names, but the model has 3 labels"),
    "inference: resize smaller than the crops": (inference.main, lambda p: infer_args(
        p, f"--image_dir={p.image_dir}", "--resize_height=50"), 2,
        "give a resize (50, 124) smaller than the model's (64, 96) crops"),
    "inference: unknown aggregation": (inference.main, lambda p: infer_args(
        p, f"--image_dir={p.image_dir}", "--aggregation=median", "--xla=false"), 2,
        "aggregation='median': expected mean or max"),
    "export: no export folder": (export_saved_model.main, lambda p: infer_args(p), 2,
                                 "set --export_saved_model"),
    "export: a folder that is no SavedModel": (export_saved_model.main, lambda p: infer_args(
        p, f"--export_saved_model={p.not_a_model}"), 2,
        "not_a_model' is a non-empty folder that holds no SavedModel"),
    "calibration: no flags": (threshold_calibration.main, lambda p: [], 2,
                              "--label_file and --score_file are both required"),
    "calibration: missing label file": (threshold_calibration.main, lambda p: [
        f"--label_file={p.root}/no_labels.txt", f"--score_file={p.labels}"], 1,
        "no_labels.txt: no such file"),
    "calibration: run_dir without a saved config": (threshold_calibration.main, lambda p: [
        f"--label_file={p.labels}", f"--score_file={p.labels}", f"--run_dir={p.empty_dir}"], 1,
        "empty': no config.json or eval_config.json or inference_config.json in it"),
    "calibration: empty score file": (threshold_calibration.main, lambda p: [
        f"--label_file={p.labels}", f"--score_file={p.empty}"], 1, "empty.txt: no data rows"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_mistake_is_one_line_and_its_status(paths, capsys, case):
  main, argv, want_status, says = CASES[case]
  with pytest.raises(SystemExit) as info:
    errors.run(main, argv(paths))
  assert_one_error_line(info.value.code, capsys.readouterr().err, want_status, says)
  assert not os.path.exists(os.path.join(paths.root, "train"))  # train.py wrote nothing
  assert not os.path.exists(os.path.join(paths.root, "out"))  # nor inference.py
  assert not os.path.exists(os.path.join(paths.root, "eval"))  # nor evaluate.py


def test_demo_report_without_the_demo_output(tmp_path, capsys):
  spec = importlib.util.spec_from_file_location("report", os.path.join(REPO, "demo", "report.py"))
  report = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(report)
  with pytest.raises(SystemExit) as info:
    errors.run(report.main, [f"--out={tmp_path}"])
  assert_one_error_line(info.value.code, capsys.readouterr().err, 1,
                        "label_names.txt: no such file")


@pytest.mark.slow
@pytest.mark.parametrize("script, argv, want_status, says", [
    ("train.py", [], 2, "label_count=0: set --label_count"),
    ("threshold_calibration.py", ["--label_file=no_such.txt", "--score_file=x"], 1,
     "no_such.txt: no such file"),
    ("inference.py", ["--image_dir=empty"], 1, "'empty': no images in it")])
def test_the_real_process(paths, script, argv, want_status, says):
  result = subprocess.run([sys.executable, os.path.join(REPO, script), *argv], cwd=paths.root,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
  assert_one_error_line(result.returncode, result.stderr, want_status, says)


@pytest.mark.parametrize("script", ["train", "evaluate", "read_tfrecord"])
@pytest.mark.parametrize("damage", ["cut", "corrupt"])
def test_a_damaged_records_file_is_one_line_naming_file_record_and_what_to_do(paths, capsys,
                                                                             tmp_path, script,
                                                                             damage):
  """A records file cut off inside record 10, or with a byte of record 8 flipped: the line names
  the file, the record's index and byte offset (its framing's, computed here), and says to
  rerun create_tfrecord.py. (TensorFlow names the byte where the part that fails starts: the
  cut-off record's length header, the corrupt record's data, 12 bytes further.)"""
  path = getattr(paths, damage)
  index = 10 if damage == "cut" else 8
  what = "cut off" if damage == "cut" else "corrupt"
  offset = paths.starts[index] + (0 if damage == "cut" else 12)
  argv = {"train": [f"--train_dir={tmp_path}/train", "--gpu_id=-1", "--label_count=3",
                    f"--input_tfrecord_file={path}", "--target_height=32", "--target_width=32",
                    "--resize_height=36", "--resize_width=36", "--batch_size=4",
                    "--number_of_steps=3", "--image_summary_steps=0"],
          "evaluate": [f"--checkpoint_dir={paths.train_dir}", "--run_once=true",
                       f"--input_tfrecord_file={path}", f"--eval_dir={tmp_path}/eval"],
          "read_tfrecord": [f"--data_path={path}"]}[script]
  main = {"train": train.main, "evaluate": evaluate.main, "read_tfrecord": read_tfrecord.main}
  with pytest.raises(SystemExit) as info:
    errors.run(main[script], argv)
  err = capsys.readouterr().err
  assert_one_error_line(info.value.code, err, 1,
                        f"{path}: record {index} is {what} at byte {offset}")
  line = err.splitlines()[-1]
  assert "the file is damaged; rerun create_tfrecord.py to write it again" in line
  then = {"train": "; training stopped, and resumes from the start once the records are mended",
          "evaluate": "; ckpt-20 was not evaluated", "read_tfrecord": ""}[script]
  assert line.endswith(f"rerun create_tfrecord.py to write it again{then}"), line


@pytest.mark.parametrize("folder, says", [
    ("empty_dir", "empty: no checkpoint in this directory"),
    ("half", "half/ckpt-10: deleted (or never complete) before it could be read")])
def test_run_once_that_reads_no_checkpoint_leaves_no_eval_dir(paths, capsys, folder, says):
  """The default eval dir is <checkpoint_dir>/eval: a run_once that reads nothing must not make
  it (nor eval_config.json, nor an event file)."""
  before = sorted(os.listdir(getattr(paths, folder)))
  with pytest.raises(SystemExit) as info:
    errors.run(evaluate.main, [f"--checkpoint_dir={getattr(paths, folder)}", "--run_once=true",
                               f"--input_tfrecord_file={paths.records3}"])
  assert_one_error_line(info.value.code, capsys.readouterr().err, 1, says)
  assert sorted(os.listdir(getattr(paths, folder))) == before
