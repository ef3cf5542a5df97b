"""multilabel/textfiles.py: score, label and threshold files and label names, written and read
back, with errors naming the file and line. (From tests/test_metrics.py's file tests.)"""

import os

import numpy as np
import pytest

from multilabel import textfiles


def test_score_file_round_trip(tmp_path):
  scores = np.random.default_rng(0).random((5, 3))
  path = tmp_path / "scores.txt"
  textfiles.save_scores(path, scores)
  np.testing.assert_array_equal(textfiles.load_matrix(path), scores)  # exact, not to 5e-7
  assert path.read_text().splitlines()[0] == " ".join(repr(float(v)) for v in scores[0])
  assert np.loadtxt(path).shape == (5, 3)  # the original's reader agrees
  assert os.listdir(tmp_path) == ["scores.txt"]  # no temp file left behind


def test_load_matrix_is_always_2d(tmp_path):
  (tmp_path / "row.txt").write_text("0.1 0.2 0.3\n")
  (tmp_path / "col.txt").write_text("0.1\n0.2\n\n")
  assert textfiles.load_matrix(tmp_path / "row.txt").shape == (1, 3)
  assert textfiles.load_matrix(tmp_path / "col.txt").shape == (2, 1)


def test_load_matrix_errors_name_file_and_line(tmp_path):
  ragged = tmp_path / "ragged.txt"
  ragged.write_text("1 0 1\n0 1\n")
  with pytest.raises(ValueError, match=r"ragged\.txt:2: 2 values, but line 1 has 3"):
    textfiles.load_matrix(ragged)
  text = tmp_path / "text.txt"
  text.write_text("0.5 0.5\n0.5 abc\n")
  with pytest.raises(ValueError, match=r"text\.txt:2: non-numeric value 'abc'"):
    textfiles.load_matrix(text)
  empty = tmp_path / "empty.txt"
  empty.write_text("\n")
  with pytest.raises(ValueError, match="empty.txt: no data rows"):
    textfiles.load_matrix(empty)


def test_labels_format_and_validation(tmp_path):
  path = tmp_path / "labels.txt"
  textfiles.save_labels(path, np.array([[1, 0, 1], [0, 0, 1]]))
  assert path.read_text() == "1 0 1\n0 0 1\n"
  np.testing.assert_array_equal(textfiles.load_labels(path), [[1, 0, 1], [0, 0, 1]])
  path.write_text("1 0 2\n")
  with pytest.raises(ValueError, match="labels.txt: labels must be 0 or 1; found 2"):
    textfiles.load_labels(path)
  textfiles.save_labels(path, np.array([[1, -1, 0], [-1, 0, 1]]))  # -1 (unknown) is kept as is
  assert path.read_text() == "1 -1 0\n-1 0 1\n"
  np.testing.assert_array_equal(textfiles.load_labels(path), [[1, -1, 0], [-1, 0, 1]])


def test_failed_write_leaves_no_file(tmp_path, monkeypatch):
  def broken_replace(src, dst):
    raise OSError("disk full")
  monkeypatch.setattr(os, "replace", broken_replace)  # os.replace, wherever it is called
  with pytest.raises(OSError, match="disk full"):
    textfiles.save_scores(tmp_path / "scores.txt", np.ones((2, 2)))
  assert os.listdir(tmp_path) == []


def test_thresholds_file_round_trip(tmp_path):
  path = tmp_path / "thresholds.txt"
  thresholds = np.array([0.1234567891, 1.0, np.nextafter(0.7, 1)])
  textfiles.save_thresholds(path, thresholds, "f1")
  assert path.read_text().splitlines()[0] == "# method=f1"
  np.testing.assert_array_equal(textfiles.load_thresholds(path), thresholds)
  path.write_text("# c\n0.5\nx\n")
  with pytest.raises(ValueError, match=r"thresholds\.txt:3"):
    textfiles.load_thresholds(path)


def test_label_names(tmp_path):
  assert textfiles.load_label_names("", 3) == ["label_0", "label_1", "label_2"]
  path = tmp_path / "names.txt"
  path.write_text("cat\ndog\n\n")  # spaces around a name are refused now: test_textfiles_inputs
  assert textfiles.load_label_names(path, 2) == ["cat", "dog"]
  with pytest.raises(ValueError, match="names.txt: 2 label names, but the model has 3"):
    textfiles.load_label_names(path, 3)
  path.write_text("cat\n\ndog\n")
  with pytest.raises(ValueError, match=r"names.txt:2: blank label name"):
    textfiles.load_label_names(path, 3)
