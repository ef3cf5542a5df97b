"""multilabel/errors.py: errors.run turns a user's mistake into one `error: ...` line and its
exit status, details first; a bug still raises; the classes library callers catch. (From
tests/test_errors.py; its tests of every script's mistakes stay there.)"""

import pytest

from multilabel import errors
from tests.helpers import assert_one_error_line


def test_a_bug_still_raises_with_its_traceback():
  def main(argv):
    return {}["no such key"]  # a bug, not a user's mistake
  with pytest.raises(KeyError):
    errors.run(main, [])


def test_details_come_before_the_one_error_line(capsys):
  def main(argv):
    print("working")
    raise errors.DataError("2 bad lines, listed above", ["a.txt:1: bad", "a.txt:3: bad"])
  with pytest.raises(SystemExit) as info:
    errors.run(main, [])
  out, err = capsys.readouterr()
  assert info.value.code == 1 and out == "working\n"
  assert err == "a.txt:1: bad\na.txt:3: bad\nerror: 2 bad lines, listed above\n"


def test_the_classes_are_what_library_callers_catch():
  assert errors.ConfigError.status == 2 and errors.DataError.status == 1
  assert issubclass(errors.ConfigError, ValueError) and issubclass(errors.DataError, ValueError)
  missing = errors.MissingFileError("x: no such file")
  assert isinstance(missing, FileNotFoundError) and isinstance(missing, errors.DataError)
  assert str(missing) == "x: no such file" and missing.status == 1


def test_a_full_disk_no_write_caught_is_still_one_line(capsys):
  def main(argv):
    print("working")
    raise OSError(28, "No space left on device", "/data/out/big.bin")
  with pytest.raises(SystemExit) as info:
    errors.run(main, [])
  assert_one_error_line(info.value.code, capsys.readouterr().err, 1,
                        "no space left on device writing /data/out/big.bin")
  with pytest.raises(PermissionError):  # any other OSError is no user's mistake we know of
    errors.run(lambda argv: (_ for _ in ()).throw(PermissionError(13, "denied")), [])
