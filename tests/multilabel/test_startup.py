"""multilabel/startup.py: TensorFlow's C++ start-up lines are gone from stderr; everything else
a process writes there, before and after, still shows."""

import os
import subprocess
import sys

from multilabel import startup
from tests.helpers import write_records

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# What `import tensorflow` printed on this project's CPU machine (TensorFlow 2.21).
SEEN = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796487353.326844    2212 port.cc:153] oneDNN custom operations are on. You may "
    "see slightly different numerical results due to floating-point round-off errors from "
    "different computation orders. To turn them off, set the environment variable "
    "`TF_ENABLE_ONEDNN_OPTS=0`.",
    "I0000 00:00:1796487353.327710    2212 cudart_stub.cc:31] Could not find cuda drivers on your "
    "machine, GPU will not be used.",
    "I0000 00:00:1796487353.395165    2212 cpu_feature_guard.cc:227] This TensorFlow binary is "
    "optimized to use available CPU instructions in performance-critical operations.",
    "To enable the following instructions: AVX2 AVX512F AVX512_VNNI AVX512_BF16 FMA, in other "
    "operations, rebuild TensorFlow with the appropriate compiler flags."]
CU_INIT = ("E0000 00:00:1796488222.447274   20937 cuda_platform.cc:52] failed call to cuInit: "
           "INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)")
REAL = ["E0000 00:00:1796488222.447274   20937 jpeg_mem.cc:165] Invalid components value 0",
        "W0000 00:00:1796488222.447274   20937 op_kernel.cc:1857] OP_REQUIRES failed at "
        "whole_file_read_ops.cc:116 : NOT_FOUND: /nonexistent",
        "Traceback (most recent call last):", "error: label_count=0: set --label_count"]


def test_the_start_up_lines_and_only_they_are_recognised():
  assert all(startup.is_start_up_line(line, has_gpu=False) for line in SEEN + [CU_INIT])
  assert all(startup.is_start_up_line(line, has_gpu=True) for line in SEEN)
  assert not startup.is_start_up_line(CU_INIT, has_gpu=True)  # a GPU machine must see it
  assert not any(startup.is_start_up_line(line, has_gpu=False) for line in REAL)


PROBE = """
import sys, warnings
print("before", file=sys.stderr, flush=True)
import multilabel.startup
import tensorflow as tf
tf.constant(1.0) + 1.0
warnings.warn("a real warning")
try:
  tf.io.read_file("/nonexistent/file")
except tf.errors.NotFoundError:
  pass
print("after", file=sys.stderr)
"""


def run_probe(quiet):
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  env["STARTUP_QUIET"] = "1" if quiet else "0"
  result = subprocess.run([sys.executable, "-c", PROBE], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
  assert result.returncode == 0, result.stderr
  return result.stderr.splitlines()


def test_a_process_shows_no_start_up_line_and_keeps_its_own():
  has_gpu = os.path.exists("/dev/nvidiactl")
  noisy, quiet = run_probe(quiet=False), run_probe(quiet=True)
  assert any(startup.is_start_up_line(line, has_gpu) for line in noisy)  # the filter's work
  assert not any(startup.is_start_up_line(line, has_gpu) for line in quiet), quiet
  assert quiet[0] == "before" and quiet[-1] == "after"
  assert any("UserWarning: a real warning" in line for line in quiet)
  assert any("NOT_FOUND" in line or "nonexistent" in line for line in quiet)  # C++ after start


def test_train_py_help_and_a_two_step_training_print_no_start_up_line(tmp_path):
  """What a user sees: the stderr of `train.py --help` and of a 2-step run, with the
  environment as it comes (no TF_CPP_MIN_LOG_LEVEL)."""
  records = write_records(tmp_path / "train.tfrecord", [[1, 0], [0, 1]] * 4)
  env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
  has_gpu = os.path.exists("/dev/nvidiactl")
  for argv in (["--help"],
               ["--label_count=2", f"--input_tfrecord_file={records}", "--target_height=32",
                "--target_width=32", "--batch_size=4", "--number_of_steps=2", "--gpu_id=-1",
                f"--train_dir={tmp_path / 'run'}", "--log_every_n_steps=1",
                "--image_summary_steps=0"]):
    result = subprocess.run([sys.executable, "train.py", *argv], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert not any(startup.is_start_up_line(line, has_gpu) for line in lines), lines
  assert (tmp_path / "run" / "ckpt-2.index").exists()
