"""Output files that are never seen half-written, and the one line of a full disk.

Standard library only, so that every module can use it (configs.py and metrics.py load no
TensorFlow). The one atomic write of the toolkit:

    with files.atomic_write("scores.txt") as f:  # a temp file beside it, renamed when complete
      f.write(...)
    files.write_text("config.json", text)  # the same, for text already in memory

A write that fails (an exception, Ctrl-C, a full disk) removes its temp file and leaves the file
it replaces as it was. A full disk (ENOSPC, or a full quota) becomes one DataError naming the
folder, what the write needed and what is free. New files get the mode every other output gets,
0666 less the umask (0644 under the usual 022), not tempfile.mkstemp's 0600, so that another
user's evaluator on shared storage can read them.

Temp names are hidden, .<name>.<pid>-<8 hex>.tmp, so that globs like `out-*` skip them;
stale_temp_files finds those that a killed run (kill -9, a power cut) left behind.
"""

import contextlib
import errno
import os
import re
import shutil
import sys
import time
import uuid

from multilabel import errors

NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
NO_SPACE_MESSAGES = ("No space left on device", "Disk quota exceeded")  # TensorFlow's wording
# Our temp names, and tempfile.mkstemp's (.config-abcd1234.tmp, .scores.txt-abcd1234.tmp) that
# configs.py and metrics.py used before this module: a train dir of an older run may hold them.
_TEMP_NAMES = (re.compile(r"^\.(?P<name>.+)\.\d+-[0-9a-f]{8}\.tmp$"),
               re.compile(r"^\.(?P<name>.+)-[a-z0-9_]{8}\.tmp$"))


def printable_name(path):
  """`path` as text that print() and a UTF-8 file take: itself, unless its name holds bytes that
  are not UTF-8 (any byte but / and NUL is allowed in a Linux file name). Python keeps such bytes
  as surrogate escapes, which print() and UTF-8 files refuse; they are shown as \\xff escapes,
  as repr shows bytes."""
  return os.fsencode(path).decode("utf-8", "backslashreplace")


def temp_path(path):
  """A hidden temp name beside `path` (same folder, so that the rename is atomic)."""
  folder, base = os.path.split(os.path.abspath(path))
  return os.path.join(folder, f".{base}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")


def is_no_space(error):
  """True if `error` says the disk (or the user's quota) is full: an OSError with ENOSPC or
  EDQUOT, or any error whose message says so (TensorFlow's ResourceExhaustedError does)."""
  if isinstance(error, OSError) and error.errno in NO_SPACE_ERRNOS:
    return True
  return any(text in str(error) for text in NO_SPACE_MESSAGES)


def size_text(num_bytes):
  """1536 -> '1.5 KiB'."""
  value = float(num_bytes)
  for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
    if value < 1024 or unit == "TiB":
      return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
    value /= 1024


def free_space(folder):
  """Bytes free to this user in `folder` (or its nearest existing parent)."""
  folder = os.path.abspath(folder)
  while not os.path.isdir(folder) and os.path.dirname(folder) != folder:
    folder = os.path.dirname(folder)
  return shutil.disk_usage(folder).free


def no_space_error(folder, needed, what, then=""):
  """The one line of a full disk: DataError('no space left on device in <folder>: <what> needs
  <needed>, <free> free<then>'). `needed` in bytes, or None when it is not known."""
  need = f"needs {size_text(needed)}" if needed is not None else "did not fit"
  return errors.DataError(f"no space left on device in {folder}: {what} {need}, "
                          f"{size_text(free_space(folder))} free{then}")


def discard(path):
  """Removes `path` if it is there."""
  with contextlib.suppress(FileNotFoundError):
    os.remove(path)


@contextlib.contextmanager
def atomic_write(path, mode="w", size=None, **open_kwargs):
  """Opens a temp file beside `path`; renames it to `path` only when the block completes.

  On any exception (Ctrl-C included) the temp file is removed and `path` is left as it was, so a
  file at `path` is always complete. A full disk is a DataError (no_space_error) naming the
  folder; `size`, the bytes the caller will write if it knows them, goes into that line.
  """
  if not any(c in mode for c in "wx"):
    raise ValueError(f"atomic_write needs a write mode ('w' or 'wb'), got {mode!r}")
  folder = os.path.dirname(os.path.abspath(path))
  tmp = temp_path(path)
  try:
    os.makedirs(folder, exist_ok=True)
    with open(tmp, mode.replace("w", "x"), **open_kwargs) as f:  # 0666 less the umask
      yield f
    os.replace(tmp, path)
  except OSError as e:
    discard(tmp)  # first, so that the line counts the space it held as free
    if is_no_space(e):
      raise no_space_error(folder, size, os.path.basename(path),
                           f"; {path} was not written") from None
    raise
  finally:
    discard(tmp)


def check_writable(folder, flag):
  """Checks, before any work, that files can be written in the output folder `folder` (set by
  `flag`), by creating and removing a temp file there: os.access cannot tell a read-only
  mount, root squashing or ACLs. A missing folder is not made here, so that a run that then
  stops on a mistake leaves no empty folder behind: its nearest existing parent, where the writes
  will make it, is checked instead. ConfigError naming the setting `flag` and the folder if it
  can't be written."""
  folder = existing = os.path.abspath(folder)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise errors.ConfigError(f"{flag}: cannot write in {folder}: {existing} is a file")
  probe = temp_path(os.path.join(existing, "write-check"))
  try:
    with open(probe, "x"):
      pass
  except OSError as e:
    where = folder if existing == folder else f"{existing}, where {folder} would be made"
    raise errors.ConfigError(f"{flag}: cannot write in {where} ({e.strerror})") from None
  discard(probe)


def write_text(path, text):
  """Writes `text` (UTF-8) to `path` atomically (atomic_write)."""
  with atomic_write(path, encoding="utf-8", size=len(text.encode("utf-8"))) as f:
    f.write(text)


def stale_temp_files(folder, names=None):
  """The temp files of our writes in `folder` (not below it), sorted: those a killed run left,
  since a finished or failed write removes its own. `names`: only the temp files of the file
  names it holds (a set), or for which it returns True (a function), e.g. a run's shards."""
  if not os.path.isdir(folder):
    return []
  found = []
  for entry in sorted(os.listdir(folder)):
    match = next((m for m in (p.match(entry) for p in _TEMP_NAMES) if m), None)
    path = os.path.join(folder, entry)
    if not match or not os.path.isfile(path):
      continue
    name = match["name"]
    if names is None or (names(name) if callable(names) else name in names):
      found.append(path)
  return found
