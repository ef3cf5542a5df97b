"""TensorFlow started without its C++ start-up lines: every script that uses TensorFlow imports
this module first (`import multilabel.startup`), before anything imports TensorFlow.

On a machine without a GPU, `import tensorflow` prints lines such as `WARNING: All log messages
before absl::InitializeLog() is called are written to STDERR`, `oneDNN custom operations are
on`, `Could not find cuda drivers` and, at the first device listing, `E0000 ... failed call to
cuInit`: twice over, from C++ code that runs before TF_CPP_MIN_LOG_LEVEL is read. A new user
reads the E0000 line as an error. So while TensorFlow loads and lists its devices, file
descriptor 2 points at a temporary file; then it is restored, and every captured line that is
not one of those start-up lines is written back to stderr, in order. Nothing is filtered after
that: a script's real C++ warnings and errors, Python warnings and tracebacks still show. No
environment variable changes (TF_ENABLE_ONEDNN_OPTS=0 would change numerics).

The cuInit line is dropped only where the machine has no NVIDIA device (/dev/nvidiactl): on a
GPU machine a failing CUDA start is a real problem. The lines that matter there (which GPU, its
memory) come later, when the devices are created, and are untouched. STARTUP_QUIET=0 in the
environment turns the filter off, e.g. to see what a crash during the import printed.
"""

import os
import re
import sys
import tempfile

_LOGGED = r"^[IWE]\d{4} [\d:.]+\s+\d+ "  # absl's prefix: I0000 00:00:1796487703.876520  9403
START_UP_LINES = (
    re.compile(r"^WARNING: All log messages before absl::InitializeLog\(\) is called are "
               r"written to STDERR$"),
    re.compile(_LOGGED + r"port\.cc:\d+\] oneDNN custom operations are on\. "),
    re.compile(_LOGGED + r"cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine"),
    re.compile(_LOGGED + r"cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized "),
    re.compile(r"^To enable the following instructions: .*rebuild TensorFlow with the "
               r"appropriate compiler flags\.$"))
NO_GPU_LINE = re.compile(_LOGGED + r"cuda_platform\.cc:\d+\] failed call to cuInit: ")


def is_start_up_line(line, has_gpu):
  """True for one of TensorFlow's start-up lines (the cuInit one only without a GPU)."""
  return (any(p.search(line) for p in START_UP_LINES)
          or not has_gpu and NO_GPU_LINE.search(line) is not None)


def import_tensorflow():
  """Imports TensorFlow and lists its devices with fd 2 captured; writes back what is not a
  start-up line. Does nothing if TensorFlow is already imported or STARTUP_QUIET=0."""
  if "tensorflow" in sys.modules or os.environ.get("STARTUP_QUIET", "1") == "0":
    return
  sys.stderr.flush()
  saved = os.dup(2)
  with tempfile.TemporaryFile() as captured:
    os.dup2(captured.fileno(), 2)
    try:
      import tensorflow as tf
      tf.config.list_physical_devices()  # where cuInit runs; it does not start the runtime
    finally:
      sys.stderr.flush()  # Python's own writes during the import went to fd 2 too
      os.dup2(saved, 2)
      os.close(saved)
      captured.seek(0)
      has_gpu = os.path.exists("/dev/nvidiactl")
      kept = [line for line in captured.read().decode("utf-8", "replace").splitlines(True)
              if not is_start_up_line(line.rstrip("\n"), has_gpu)]
      sys.stderr.write("".join(kept))
      sys.stderr.flush()


import_tensorflow()
