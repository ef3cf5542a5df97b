"""Helpers of test_evaluate_faults.py and test_inference_faults.py (not collected): damaged
checkpoints, read-only folders."""

import builtins
import contextlib
import errno
import os
import shutil
import subprocess

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


def output_files(folder):
  """Every file under `folder` (relative paths, sorted); [] if it does not exist."""
  return sorted(os.path.relpath(os.path.join(root, name), folder)
                for root, _, names in os.walk(folder) for name in names)
