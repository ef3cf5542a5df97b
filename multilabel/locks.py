"""One trainer per train_dir: the lock train.py's chief holds on it for as long as it runs.

    lock = locks.hold_train_dir("runs/a", log)  # or a DataError naming the holder
    try:
      ...
    finally:
      lock.release()

The lock is fcntl.flock on <train_dir>/train.lock. The kernel releases it when its process ends,
however it ends (kill -9 included), so a lock file whose lock nobody holds was left by a run that
died: the next run takes it over and says so. The file's body names the holder (host, pid, start
time) for the line that refuses a second run. A clean release removes the file.

What it cannot promise on a network file system: NFS clients emulate flock with NFS byte-range
locks, which hold across hosts only where the server and the mount support locking (not with
`nolock` or `local_lock=flock`/`all`, where each host sees only its own locks), and a client cut
off from the server long enough may lose its lock. README.md says what that means for a run.
"""

import contextlib
import fcntl
import json
import os
import socket
import time

from multilabel import errors, files

LOCK_FILE = "train.lock"


class TrainDirLock:
  """A held lock: `release()` removes the file and lets go (idempotent)."""

  def __init__(self, path, fd):
    self.path, self.fd = path, fd

  def release(self):
    if self.fd is None:
      return
    # Removed while still held: a run that opened the file meanwhile finds, once it has the
    # lock, that the path no longer names what it locked, and tries again (hold_train_dir).
    with contextlib.suppress(FileNotFoundError):
      os.remove(self.path)
    os.close(self.fd)
    self.fd = None


def hold_train_dir(train_dir, log):
  """Takes train_dir's lock (creating the folder), or raises a DataError naming the run that
  holds it. Logs a line when it takes over the lock of a run that died."""
  os.makedirs(train_dir, exist_ok=True)
  path = os.path.join(train_dir, LOCK_FILE)
  while True:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      holder = _read(fd)
      os.close(fd)
      raise errors.DataError(
          f"{train_dir} is in use by another train.py ({describe(holder)}): one trainer per "
          "train_dir; wait for it to end, stop it (Ctrl-C or SIGTERM saves a checkpoint), or give "
          "another --train_dir") from None
    if _is_file_at(fd, path):
      break
    os.close(fd)  # its holder removed it after we opened it: lock the one there now
  left = _read(fd)
  if left is not None:
    elsewhere = left.get("host") != socket.gethostname()
    log(f"note: took over {path}, left by a run that ended without releasing it "
        f"({describe(left)}; killed, or its machine stopped)" + (
            ". It ran on another host: if it is still running there, this file system does "
            "not share locks between hosts (README.md: one trainer per train_dir)"
            if elsewhere else ""))
  try:
    _write(fd, {"host": socket.gethostname(), "pid": os.getpid(),
                "started": time.strftime("%Y-%m-%d %H:%M:%S %z")})
  except OSError as e:  # a full disk: the lock holds without its body; the next write says why
    if not files.is_no_space(e):
      raise
  return TrainDirLock(path, fd)


def describe(holder):
  """'pid 4242 on host gpu1, started 2026-12-03 10:00:00 +0000' from a lock file's body."""
  if not holder:
    return "a run whose lock file names no holder yet"
  return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started "
          f"{holder.get('started', '?')}")


def _is_file_at(fd, path):
  try:
    return os.fstat(fd).st_ino == os.stat(path).st_ino
  except FileNotFoundError:
    return False


def _read(fd):
  """The body's {host, pid, started}; {} if it can't be read (written this instant, or
  damaged); None if the file is empty (nobody has held it)."""
  text = os.pread(fd, 4096, 0)
  if not text:
    return None
  try:
    holder = json.loads(text)
  except ValueError:
    return {}
  return holder if isinstance(holder, dict) else {}


def _write(fd, holder):
  """Writes the body in place, under the lock. Not files.atomic_write: a rename would put a new
  file, one nobody holds a lock on, at the lock's path. It is one short write, and a reader that
  catches it half-written says it could not read the holder (_read)."""
  os.ftruncate(fd, 0)
  os.pwrite(fd, json.dumps(holder).encode("utf-8"), 0)
