"""Output files that are never seen half-written, the image_list reader, and the progress line.

Standard library only, so that every module can use it (configs.py and metrics.py load no
TensorFlow). The one atomic write of the toolkit:

    with fileio.atomic_write("scores.txt") as f:  # a temp file beside it, renamed when complete
      f.write(...)
    fileio.write_text("config.json", text)  # the same, for text already in memory

A write that fails (an exception, Ctrl-C, a full disk) removes its temp file and leaves the file
it replaces as it was. A full disk (ENOSPC, or a full quota) becomes one DataError naming the
folder, what the write needed and what is free. New files get the mode every other output gets,
0666 less the umask (0644 under the usual 022), not tempfile.mkstemp's 0600, so that another
user's evaluator on shared storage can read them.

Temp names are hidden, .<name>.<pid>-<8 hex>.tmp, so that globs like `out-*` skip them;
stale_temp_files finds those that a killed run (kill -9, a power cut) left behind.

The original's image_list ("<name> <count>" per line) is read by one parser, text_lines and
list_entry, wherever it is read: create_tfrecord.py, inference.py (image_names) and the demo.
"""

import contextlib
import errno
import os
import re
import shutil
import sys
import time
import uuid

import errors

NO_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
NO_SPACE_MESSAGES = ("No space left on device", "Disk quota exceeded")  # TensorFlow's wording
# Our temp names, and tempfile.mkstemp's (.config-abcd1234.tmp, .scores.txt-abcd1234.tmp) that
# configs.py and metrics.py used before this module: a train dir of an older run may hold them.
_TEMP_NAMES = (re.compile(r"^\.(?P<name>.+)\.\d+-[0-9a-f]{8}\.tmp$"),
               re.compile(r"^\.(?P<name>.+)-[a-z0-9_]{8}\.tmp$"))


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


# ---------------------------------------------------------------------------------------------
# The original's image_list, read alike by create_tfrecord.py and inference.py.

_COUNT = re.compile(r"[0-9]+")


def text_lines(path, what):
  """[(line number, text)] of the non-blank lines of a UTF-8 text file, each stripped.

  CRLF line ends and a UTF-8 BOM (as Windows editors save) are tolerated; blank lines are skipped
  but keep the numbering. A missing file is a MissingFileError, one that cannot be read or is not
  UTF-8 a DataError naming it (and the line); `what` names the setting, e.g. imglist_file.
  """
  try:
    with open(path, "rb") as f:
      raw_lines = f.read().split(b"\n")
  except FileNotFoundError:
    raise errors.MissingFileError(f"{path}: no such file (--{what})") from None
  except OSError as e:  # a directory, no permission
    raise errors.DataError(f"{path}: cannot be read (--{what}: {e.strerror})") from None
  lines = []
  for number, raw in enumerate(raw_lines, start=1):
    try:
      text = raw.decode("utf-8-sig" if number == 1 else "utf-8").strip()
    except UnicodeDecodeError as e:
      raise errors.DataError(f"{path}:{number}: not UTF-8 text ({e.reason} at byte "
                             f"{e.start})") from None
    if text:
      lines.append((number, text))
  return lines


def list_entry(text):
  """An image_list line "<name> <count>" -> (name, count): the name may hold spaces, the count
  is the last field. None if there is no count after a name."""
  fields = text.rsplit(maxsplit=1)
  if len(fields) != 2 or not _COUNT.fullmatch(fields[1]):
    return None
  return fields[0], int(fields[1])


def image_names(path, what="image_list_file"):
  """The image names of a list file, in order: an original-format image_list ("<name> <count>"
  on every line) gives its names, spaces kept; any other file is a plain list of paths, one
  whole line each (spaces kept too). So a plain list in which every name ends in " <digits>"
  would be read as an image_list. Lines as text_lines reads them."""
  lines = [text for _, text in text_lines(path, what)]
  entries = [list_entry(text) for text in lines]
  if lines and all(entries):
    return [name for name, _ in entries]
  return lines


class Progress:
  """Prints "what: done/total, rate/s, ETA" to stderr at most once per `every` seconds.

  On a terminal it rewrites one line; otherwise (logs, CI) it prints every 10 s.
  """

  def __init__(self, total, what="images", every=1.0):
    self.total, self.what, self.start = total, what, time.time()
    self.tty = sys.stderr.isatty()
    self.every = every if self.tty else max(every, 10.0)
    self.last, self.printed = self.start, False  # the first line comes after `every` seconds

  def update(self, done, force=False, fraction=None):
    """`fraction` (0..1) overrides done/total for the ETA, e.g. bytes read / file size."""
    now = time.time()
    if not force and now - self.last < self.every:
      return
    self.last, self.printed = now, True
    elapsed = max(now - self.start, 1e-9)
    rate = done / elapsed
    if fraction is None and self.total:
      fraction = done / self.total
    eta = f", ETA {_clock(elapsed * (1 - fraction) / fraction)}" if fraction else ""
    of_total = f"/{self.total}" if self.total else ""
    line = f"{self.what}: {done}{of_total}, {rate:.1f}/s{eta}, elapsed {_clock(elapsed)}"
    sys.stderr.write(f"\r{line}\033[K" if self.tty else line + "\n")
    sys.stderr.flush()

  def clear(self):
    """Erases the rewritten progress line, so the next message starts on a clean line."""
    if self.tty and self.printed:
      sys.stderr.write("\r\033[K")
      sys.stderr.flush()

  def finish(self, done):
    self.update(done, force=True)
    if self.tty:
      sys.stderr.write("\n")


def _clock(seconds):
  seconds = int(seconds)
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"
