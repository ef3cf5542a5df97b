"""The toolkit's text files: score files (np.savetxt '%.6f', one row per image), image_label
files ("1 0 1 ..."; -1 = unknown), label names (one per line) and threshold files (one per
line, '#' comments). Every reader names the file, and the line where it can, in its error.
Numpy only, as metrics.py, which computes the numbers these files hold.
"""

import numpy as np

import configs
import errors
import fileio
from metrics import LABEL_VALUES


def save_scores(path, scores):
  """The original's score file: np.savetxt '%.6f', one row per image, space-separated."""
  scores = np.asarray(scores, dtype=np.float64)
  if scores.ndim != 2:
    raise ValueError(f"{path}: scores must be [num_images, num_labels], got shape {scores.shape}")
  fileio.write_text(path, "".join(" ".join(f"{v:.6f}" for v in row) + "\n" for row in scores))


def save_labels(path, labels):
  """An image_label file: one row per image, "1 0 1 ..." (one 0/1 per label; -1 kept as -1)."""
  labels = np.asarray(labels)
  if labels.ndim != 2:
    raise ValueError(f"{path}: labels must be [num_images, num_labels], got shape {labels.shape}")
  fileio.write_text(path, "".join(" ".join(str(int(v)) for v in row) + "\n" for row in labels))


def read_lines(path):
  """The lines of a text input file; MissingFileError or DataError naming it if it can't be read."""
  try:
    with open(path, encoding="utf-8-sig") as f:  # a BOM (Windows editors) is no part of the text
      return f.read().split("\n")
  except FileNotFoundError:
    raise errors.MissingFileError(f"{path}: no such file") from None
  except OSError as e:  # a directory, no permission
    raise errors.DataError(f"{path}: cannot be read ({e.strerror})") from None
  except UnicodeDecodeError as e:
    raise errors.DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


def load_matrix(path):
  """A whitespace-separated numeric text file as float64 [num_rows, num_columns].

  Always 2-D (one row or one column included). Blank lines and '#' lines are skipped. A
  non-numeric value, a row of a different length, or an empty file is a DataError naming the
  file and line.
  """
  rows, width, first_line = [], None, None
  for line_number, line in enumerate(read_lines(path), 1):
    fields = line.split()
    if not fields or fields[0].startswith("#"):
      continue
    try:
      row = [float(field) for field in fields]
    except ValueError:
      bad = next(x for x in fields if not _is_float(x))
      raise errors.DataError(f"{path}:{line_number}: non-numeric value {bad!r}") from None
    if width is None:
      width, first_line = len(row), line_number
    elif len(row) != width:
      raise errors.DataError(f"{path}:{line_number}: {len(row)} values, but line {first_line} "
                             f"has {width}")
    rows.append(row)
  if not rows:
    raise errors.DataError(f"{path}: no data rows")
  return np.array(rows, dtype=np.float64)


def _is_float(text):
  try:
    float(text)
    return True
  except ValueError:
    return False


def load_labels(path):
  """An image_label file as int64 [num_images, num_labels]; a value other than 0/1/-1 (-1 =
  unknown) is an error."""
  matrix = load_matrix(path)
  bad = ~np.isin(matrix, LABEL_VALUES)
  if bad.any():
    i, j = np.argwhere(bad)[0]
    raise errors.DataError(f"{path}: labels must be 0 or 1; found {matrix[i, j]:g} in data row "
                           f"{i + 1}, column {j + 1} (-1, an unknown label, is allowed too)")
  return matrix.astype(np.int64)


def load_label_names(path, label_count, run_dir=""):
  """Label names: one per line of `path` (surrounding spaces stripped); without a path, those a
  run stored in `run_dir`'s config.json, eval_config.json or inference_config.json
  (configs.saved_label_names); else label_0, label_1, ...

  A blank name or a count other than `label_count` is a DataError naming the file.
  """
  if not path and run_dir:
    names, source = configs.saved_label_names(run_dir)
    if names is not None:
      if len(names) != label_count:
        raise errors.DataError(f"{source}: {len(names)} label names, but the model has "
                               f"{label_count} labels")
      return list(names)
  if not path:
    return [f"label_{j}" for j in range(label_count)]
  names = [line.strip() for line in read_lines(path)]
  while names and not names[-1]:  # trailing newlines
    names.pop()
  if "" in names:
    raise errors.DataError(f"{path}:{names.index('') + 1}: blank label name")
  if len(names) != label_count:
    raise errors.DataError(f"{path}: {len(names)} label names, but the model has {label_count} "
                           "labels")
  return names


def save_thresholds(path, thresholds, method):
  """One threshold per line (exact repr, so they round-trip), after a '# method=<method>' line."""
  lines = [f"# method={method}\n"] + [f"{float(t)!r}\n" for t in np.ravel(thresholds)]
  fileio.write_text(path, "".join(lines))


def prediction_thresholds(thresholds_file, threshold, label_count):
  """thresholds_file's per-label thresholds ([label_count] float64), else the single `threshold`.

  A thresholds file with a count other than label_count is a DataError naming the file.
  """
  if not thresholds_file:
    return threshold
  thresholds = load_thresholds(thresholds_file)
  if thresholds.size != label_count:
    raise errors.DataError(f"{thresholds_file}: {thresholds.size} thresholds, but the model has "
                           f"{label_count} labels")
  return thresholds


def load_thresholds(path):
  """A thresholds file (one per line, '#' comment lines skipped) as float64 [num_labels]."""
  thresholds = []
  for line_number, line in enumerate(read_lines(path), 1):
    text = line.strip()
    if not text or text.startswith("#"):
      continue
    try:
      thresholds.append(float(text))
    except ValueError:
      raise errors.DataError(f"{path}:{line_number}: expected one threshold per line, got "
                             f"{text!r}") from None
  if not thresholds:
    raise errors.DataError(f"{path}: no thresholds")
  return np.array(thresholds, dtype=np.float64)
