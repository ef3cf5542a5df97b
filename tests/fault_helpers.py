"""Helpers of test_evaluate_faults.py and test_inference_faults.py (not collected): damaged
checkpoints, read-only folders, and a script stopped by a signal while it works."""

import builtins
import contextlib
import errno
import os
import shutil
import subprocess
import sys
import time

from multilabel import files

DAMAGES = [(part, how) for part in ("data-00000-of-00001", "index")
           for how in ("truncate", "flip")]


def damage(path, how):
  """Cuts the file at `path` to half its size ("truncate"), or overwrites 64 bytes in its
  middle with 0xff ("flip"), as a full disk, a copy cut short or bad storage leaves it."""
  size = os.path.getsize(path)
  with open(path, "r+b") as f:
    if how == "truncate":
      f.truncate(size // 2)
    else:
      f.seek(size // 2)
      f.write(b"\xff" * 64)


def copy_checkpoints(source, folder, names, damaged=None):
  """A train dir at `folder` listing the checkpoints `names` of `source` (with its config.json):
  hard links, except the file `damaged` = (name, part, how) names, which is copied and damaged."""
  os.makedirs(folder)
  shutil.copy(os.path.join(source, "config.json"), folder)
  for name in names:
    for part in ("data-00000-of-00001", "index"):
      base = f"{name}.{part}"
      if damaged and damaged[:2] == (name, part):
        shutil.copy(os.path.join(source, base), folder)
        damage(os.path.join(folder, base), damaged[2])
      else:
        os.link(os.path.join(source, base), os.path.join(folder, base))
  with open(os.path.join(folder, "checkpoint"), "w") as f:
    f.write(f'model_checkpoint_path: "{names[-1]}"\n'
            + "".join(f'all_model_checkpoint_paths: "{n}"\n' for n in names))
  return str(folder)


@contextlib.contextmanager
def read_only_folder(folder, monkeypatch):
  """`folder`, read-only for real where this machine lets us: chmod 0555 for a user; for root,
  whom permissions do not stop, a read-only tmpfs mounted on it. Where root cannot mount, faked:
  files.py's opens under it fail with EROFS (in this process only). Yields True if it is real."""
  os.makedirs(folder, exist_ok=True)
  if os.geteuid() != 0:
    os.chmod(folder, 0o555)
    try:
      yield True
    finally:
      os.chmod(folder, 0o755)
    return
  mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)],
                           capture_output=True).returncode == 0
  if not mounted:
    def open_read_only(path, *args, **kwargs):
      if os.path.abspath(path).startswith(os.path.abspath(folder) + os.sep):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
      return builtins.open(path, *args, **kwargs)
    monkeypatch.setattr(files, "open", open_read_only, raising=False)
  try:
    yield mounted
  finally:
    if mounted:
      subprocess.run(["umount", "-l", str(folder)], check=True)


def stop_while_working(script, argv, started, signum, log_dir, settle=1.0, timeout=300):
  """Runs `python <script> *argv` from the repository, waits until started() is true (polled;
  e.g. an output of its work appeared), then `settle` seconds, and sends it `signum`. Returns
  (exit status, stdout, stderr). Fails if the script ended before it was signalled: the test
  then says nothing about stopping it."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  out_path, err_path = os.path.join(log_dir, "stdout.log"), os.path.join(log_dir, "stderr.log")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
  with open(out_path, "w") as out, open(err_path, "w") as err:
    proc = subprocess.Popen([sys.executable, script, *argv], cwd=repo, env=env, stdout=out,
                            stderr=err)
  try:
    deadline = time.time() + timeout
    while not started() and proc.poll() is None and time.time() < deadline:
      time.sleep(0.1)
    time.sleep(settle)
    running = proc.poll() is None
    if running:
      proc.send_signal(signum)
    status = proc.wait(timeout=120)
  finally:
    proc.kill()
  with open(out_path) as out, open(err_path) as err:
    stdout, stderr = out.read(), err.read()
  assert running, f"{script} ended before it was signalled:\n{stdout}\n{stderr}"
  return status, stdout, stderr


def assert_one_line(err, says):
  """The script's stderr `err` ends in one `error: ...` line saying `says`, with no traceback;
  returns that line."""
  lines = err.rstrip("\n").splitlines()
  assert "Traceback" not in err and lines and lines[-1].startswith("error: "), err
  assert says in lines[-1], lines[-1]
  return lines[-1]


def output_files(folder):
  """Every file under `folder` (relative paths, sorted); [] if it does not exist."""
  return sorted(os.path.relpath(os.path.join(root, name), folder)
                for root, _, names in os.walk(folder) for name in names)
