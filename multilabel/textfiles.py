"""The toolkit's text files: the one line reader, image_list files ("<name> <count>"), score
files (one row per image, each score exact: score_text), image_label files ("1 0 1 ..."; -1 =
unknown), label names (one per line), and files of one number per line (thresholds,
pos_weight). Every reader names the file, and the line where it can, in its error. Numpy only:
metrics.py, which computes the numbers these files hold, loads no TensorFlow either.
"""

import re

import numpy as np

from multilabel import config_files, errors, files

# The label values of image_label files and of the records: 1 positive, 0 negative, -1 unknown
# (nobody annotated it).
UNKNOWN = -1
LABEL_VALUES = (0, 1, UNKNOWN)


def text_lines(path, what="", keep_blank=False, strip=True):
  """[(line number, text)] of the lines of a UTF-8 text file, each stripped: the one reader of
  the toolkit's text inputs.

  CRLF line ends and a UTF-8 BOM (as Windows editors save) are tolerated; blank lines are skipped
  (unless keep_blank) but keep the numbering. strip=False keeps the spaces around the text (only
  the CR of a CRLF goes), for a caller that must not change its input silently (label names).
  A missing file is a MissingFileError, one that cannot be read or is not UTF-8 a DataError
  naming it (and the line); `what` names the setting, e.g. imglist_file.
  """
  flag = f" (--{what})" if what else ""
  try:
    with open(path, "rb") as f:
      raw_lines = f.read().split(b"\n")
  except FileNotFoundError:
    raise errors.MissingFileError(f"{path}: no such file{flag}") from None
  except OSError as e:  # a directory, no permission
    raise errors.DataError(f"{path}: cannot be read ({what + ': ' if what else ''}"
                           f"{e.strerror})") from None
  lines = []
  for number, raw in enumerate(raw_lines, start=1):
    try:
      text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError as e:
      raise errors.DataError(f"{path}:{number}: not UTF-8 text ({e.reason} at byte "
                             f"{e.start})") from None
    text = text.strip() if strip else text.removesuffix("\r")
    if text.strip() or keep_blank:
      lines.append((number, text))
  if keep_blank and lines and raw_lines[-1] == b"":  # the file's last newline ends no line
    lines.pop()
  return lines


def numbered_floats(path, what, error=errors.DataError):
  """[(line number, value)] of a file of one number per line ('#' comment and blank lines
  skipped): so that a check of the values can name the line. A line that is not a number raises
  `error` naming the file and line."""
  values = []
  for number, text in text_lines(path):
    if text.startswith("#"):
      continue
    try:
      values.append((number, float(text)))
    except ValueError:
      raise error(f"{path}:{number}: expected one {what} per line, got {text!r}") from None
  return values


def load_floats(path, what, error=errors.DataError):
  """A file of one number per line (numbered_floats) as float64 [n]: the thresholds, pos_weight."""
  return np.array([value for _, value in numbered_floats(path, what, error)], dtype=np.float64)


_COUNT = re.compile(r"[0-9]+")


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


# ---------------------------------------------------------------------------------------------
# Scores, labels, label names and thresholds.

def score_text(value):
  """A score as the shortest text that reads back as exactly the same float64 (Python's repr):
  '0.25', '1.0000000116860974e-07', '1.0', 'nan'.

  Exact, so that the metrics recomputed from a score file are the ones its writer reported: the
  original's '%.6f' made every score within 5e-7 of 0 or 1 a tie (confident models have many),
  and AP, the ROC thresholds and the calibration then differed from the evaluator's. A float32
  score is written as its float64 value; any reader of '%.6f' files (np.loadtxt, float()) reads it.
  """
  return repr(float(value))


def save_scores(path, scores):
  """The original's score file, each score exact (score_text): one row per image,
  space-separated; an image that could not be read is a row of nan."""
  scores = np.asarray(scores, dtype=np.float64)
  if scores.ndim != 2:
    raise ValueError(f"{path}: scores must be [num_images, num_labels], got shape {scores.shape}")
  files.write_text(path, "".join(" ".join(map(score_text, row)) + "\n" for row in scores))


def save_labels(path, labels):
  """An image_label file: one row per image, "1 0 1 ..." (one 0/1 per label; -1 kept as -1)."""
  labels = np.asarray(labels)
  if labels.ndim != 2:
    raise ValueError(f"{path}: labels must be [num_images, num_labels], got shape {labels.shape}")
  files.write_text(path, "".join(" ".join(str(int(v)) for v in row) + "\n" for row in labels))


def load_matrix(path):
  """A whitespace-separated numeric text file as float64 [num_rows, num_columns].

  Always 2-D (one row or one column included). Blank lines and '#' lines are skipped. A
  non-numeric value, a row of a different length, or an empty file is a DataError naming the
  file and line.
  """
  rows, width, first_line = [], None, None
  for line_number, line in text_lines(path):
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


def first_bad_label(labels):
  """(row, column) of the first entry of a [N, L] array that is not 0, 1 or -1; None if none."""
  bad = np.argwhere(~np.isin(labels, LABEL_VALUES))
  return tuple(bad[0]) if len(bad) else None


def load_labels(path):
  """An image_label file as int64 [num_images, num_labels]; a value other than 0/1/-1 (-1 =
  unknown) is an error."""
  matrix = load_matrix(path)
  if (bad := first_bad_label(matrix)) is not None:
    i, j = bad
    raise errors.DataError(f"{path}: labels must be 0 or 1; found {matrix[i, j]:g} in data row "
                           f"{i + 1}, column {j + 1} (-1, an unknown label, is allowed too)")
  return matrix.astype(np.int64)


# predictions.csv's predicted_labels column joins the names with this; a name holding it is
# refused (check_label_names), so that the column splits back into exactly the names.
LABEL_SEPARATOR = ";"


def load_label_names(path, label_count, run_dir=""):
  """Label names: one per line of `path`, exactly as written; without a path, those a run stored
  in `run_dir`'s config.json, eval_config.json or inference_config.json
  (config_files.saved_label_names); else label_0, label_1, ...

  A count other than `label_count`, or a name check_label_names refuses, is a DataError naming
  the file (and the line).
  """
  if not path and run_dir:
    names, source = config_files.saved_label_names(run_dir)
    if names is not None:
      if len(names) != label_count:
        raise errors.DataError(f"{source}: {len(names)} label names, but the model has "
                               f"{label_count} labels")
      check_label_names(names, [f"{source}: label_names[{j}]" for j in range(len(names))])
      return list(names)
  if not path:
    return [f"label_{j}" for j in range(label_count)]
  lines = text_lines(path, keep_blank=True, strip=False)
  while lines and not lines[-1][1].strip():  # trailing newlines
    lines.pop()
  check_label_names([text for _, text in lines], [f"{path}:{number}" for number, _ in lines])
  if len(lines) != label_count:
    raise errors.DataError(f"{path}: {len(lines)} label names, but the model has {label_count} "
                           "labels")
  return [text for _, text in lines]


def check_label_names(names, places):
  """A DataError, naming its place (e.g. 'names.txt:3'), for the first name that cannot be used
  as it is: a blank one; one with spaces around it (kept or stripped, either would surprise
  someone: refused); one holding LABEL_SEPARATOR; one that repeats an earlier name (both places
  named), whose TensorBoard tags and predictions.csv columns would be indistinguishable."""
  first = {}
  for name, place in zip(names, places):
    if not isinstance(name, str):  # a hand-edited config.json
      raise errors.DataError(f"{place}: label name {name!r} is not a string")
    if not name.strip():
      raise errors.DataError(f"{place}: blank label name")
    if name != name.strip():
      raise errors.DataError(f"{place}: label name {name!r} has spaces around it; remove them "
                             "(names are used exactly as written)")
    if LABEL_SEPARATOR in name:
      raise errors.DataError(f"{place}: label name {name!r} holds {LABEL_SEPARATOR!r}, which "
                             "separates the names in predictions.csv's predicted_labels")
    if name in first:
      raise errors.DataError(f"{place}: label name {name!r} repeats {first[name]}; each label "
                             "needs its own name (its TensorBoard tags and predictions.csv "
                             "column go by it)")
    first[name] = place


def save_thresholds(path, thresholds, method):
  """One threshold per line (exact repr, so they round-trip), after a '# method=<method>' line."""
  lines = [f"# method={method}\n"] + [f"{float(t)!r}\n" for t in np.ravel(thresholds)]
  files.write_text(path, "".join(lines))


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
  """A thresholds file (one per line, '#' comment lines skipped) as float64 [num_labels].

  Each must be finite and in [0, 1], the range of the sigmoid scores it is compared with: nan,
  inf or 1.5 would predict nothing, and -0.5 every label, without a word. Else a DataError naming
  the file and line.
  """
  numbered = numbered_floats(path, "threshold")
  if not numbered:
    raise errors.DataError(f"{path}: no thresholds")
  for number, value in numbered:
    if not 0.0 <= value <= 1.0:  # False for nan too
      raise errors.DataError(f"{path}:{number}: threshold {value!r} is not a number in [0, 1] "
                             "(a label is predicted when its score >= its threshold)")
  return np.array([value for _, value in numbered], dtype=np.float64)
