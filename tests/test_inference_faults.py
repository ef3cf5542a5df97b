"""inference.py and export_saved_model.py on faults (issue 20): damaged checkpoints, NaN weights,
read-only output folders, Ctrl-C and SIGTERM. Each ends in one line, and leaves all of the
outputs or none of them, never a NaN row marked 'ok'.

The fixture of inference_fixture.py (ResNet-50 v2 at 64x96, 3 labels, ckpt-10 and ckpt-20), and
ckpt-30: its weights with NaN in the head, as a run that diverged saves them. The mains run
in-process through errors.run; the signals go to real processes.

  .venv/bin/python -m pytest tests/test_inference_faults.py
"""

import os

import pytest

import export_saved_model
import inference
import inference_fixture as fx
from fault_helpers import DAMAGES, copy_checkpoints, output_files
from run_helpers import run_script_main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  return fx.build(str(tmp_path_factory.mktemp("inference_faults")))


def infer_args(trained, out_dir, *more):
  return ["--gpu_id=-1", f"--image_dir={trained.image_dir}", f"--inference_dir={out_dir}",
          "--xla=false", *more]


def assert_one_line(err, says):
  lines = err.rstrip("\n").splitlines()
  assert "Traceback" not in err and lines and lines[-1].startswith("error: "), err
  assert says in lines[-1], lines[-1]
  return lines[-1]


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
