"""Helpers of test_evaluate_faults.py and test_inference_faults.py (not collected): damaged
checkpoints."""

import os
import shutil

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


def output_files(folder):
  """Every file under `folder` (relative paths, sorted); [] if it does not exist."""
  return sorted(os.path.relpath(os.path.join(root, name), folder)
                for root, _, names in os.walk(folder) for name in names)
