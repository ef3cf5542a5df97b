"""The one error style of every script: a user's mistake ends in one line and an exit status.

    error: <what went wrong, naming the value, or the file:line>

Exit status 2 is a configuration error (a missing, unknown or impossible setting), 1 is bad data
(an input file that is missing, empty or does not fit the configuration). Code that finds such a
mistake raises ConfigError or DataError; every script's `__main__` block is

    if __name__ == "__main__":
      errors.run(main)

which prints the line and exits with the status. Any other exception is a bug and still ends in
a traceback. Standard library only, so that every module can raise these.
"""

import errno
import os
import re
import sys


class UserError(Exception):
  """A mistake in what the user gave; `status` is the exit status.

  Args:
    message: one line naming the bad value, or the file and line.
    details: optional lines printed before it (e.g. every bad line of an input file).
  """

  status = 1

  def __init__(self, message, details=()):
    super().__init__(message)
    self.details = list(details)


class ConfigError(UserError, ValueError):
  """A missing, unknown or impossible setting (a flag, a config file's field): exit status 2.

  A ValueError too, so that library callers that catch bad values keep working."""

  status = 2


class DataError(UserError, ValueError):
  """Input data that is missing, empty, unreadable or does not fit the configuration: status 1."""

  status = 1


class MissingFileError(DataError, FileNotFoundError):
  """An input file or directory that does not exist: a DataError that is still a
  FileNotFoundError for library callers."""


class Interrupted(UserError):
  """SIGINT (Ctrl-C) or SIGTERM stopped the run (runtime.StopSignals): one line saying what was
  kept, and exit status 128 + the signal's number (130, 143), as a shell reports a process the
  signal ended."""

  def __init__(self, signum, message):
    super().__init__(message)
    self.status = 128 + signum


def run(main, argv=None):
  """Runs `main(argv)` as a script and exits with its return value (None = 0).

  A UserError prints its details, then `error: <message>`, to stderr, and exits with its status
  (no traceback); a closed stdout (`| head`) exits 1 quietly, as Python's documentation advises;
  anything else propagates. `argv` defaults to sys.argv[1:]. A full disk that no write caught
  (files.py's writes name the folder and the space themselves) is still one line, exit status 1.
  """
  try:
    status = main(sys.argv[1:] if argv is None else list(argv))
    sys.stdout.flush()
  except UserError as e:
    sys.stdout.flush()  # what the script printed before comes first
    for line in e.details:
      print(line, file=sys.stderr)
    print(f"error: {e}", file=sys.stderr)
    sys.exit(e.status)
  except BrokenPipeError:  # e.g. `python train.py --help | head`: the reader has gone
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
    sys.exit(1)
  except OSError as e:
    if e.errno not in (errno.ENOSPC, errno.EDQUOT):
      raise
    sys.stdout.flush()
    where = f" writing {e.filename}" if e.filename else ""
    print(f"error: no space left on device{where} ({e.strerror}); free some space and rerun",
          file=sys.stderr)
    sys.exit(1)
  sys.exit(status)


def tf_message(error):
  """A TensorFlow error's own words (its first line), without its function, op and node tags:
  what a message about an unreadable image or record quotes."""
  tags = r"\{\{function_node [^}]*\}\}|\[\[\{\{node [^}]*\}\}\]\]|\[Op:[^\]]*\]( name: ?\S*)?"
  text = re.sub(tags, "", str(getattr(error, "message", error)))
  lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
  return lines[0] if lines else type(error).__name__
