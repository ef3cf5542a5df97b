"""multilabel/training/pos_weight.py: TrainConfig.pos_weight resolved to the loss's weights:
"auto" from the records' label counts (by hand), a weights file and its errors. (From
tests/test_train.py's pos_weight tests; conftest.py's pos_data are their records.)"""
import numpy as np
import pytest

import configs
from multilabel import errors
from multilabel.training.pos_weight import prior_log_odds, resolve_pos_weight

LABELS = 4


@pytest.mark.parametrize("unknown_label", ["ignore", "negative"])
def test_pos_weight_auto_is_negatives_over_positives_by_hand(pos_data, unknown_label, capsys):
  model_config = configs.ModelConfig(label_count=LABELS, input_tfrecord_file=",".join(pos_data))
  train_config = configs.TrainConfig(pos_weight="auto", unknown_label=unknown_label)
  weights = resolve_pos_weight(train_config, model_config)
  # by hand, per column of POS_LABELS: 1s and 0s (and -1s, read as 0 under "negative")
  if unknown_label == "ignore":
    want = [2 / 3, 4 / 1, 3 / 1, 1.0]  # label 3 has no negatives: 1.0
  else:
    want = [3 / 3, 5 / 1, 5 / 1, 1.0]
  assert weights == pytest.approx(want, rel=1e-12)
  out = capsys.readouterr().out
  assert "pos_weight=auto: label counts of 6 records" in out
  assert "labels [3] have no positives" in out


@pytest.mark.parametrize("unknown_label", ["ignore", "negative"])
def test_prior_log_odds_by_hand(pos_data, unknown_label):
  model_config = configs.ModelConfig(label_count=LABELS, input_tfrecord_file=",".join(pos_data))
  train_config = configs.TrainConfig(head_bias="prior", unknown_label=unknown_label)
  got = prior_log_odds(train_config, model_config)
  # the same counts as above: p = 1s / (1s + 0s); label 3 is always positive: p clipped
  p = [3 / 5, 1 / 5, 1 / 4, 1.0] if unknown_label == "ignore" else [3 / 6, 1 / 6, 1 / 6, 1.0]
  p = np.clip(p, 1e-4, 1 - 1e-4)
  assert got.dtype == np.float32
  np.testing.assert_allclose(got, np.log(p / (1 - p)), rtol=1e-6)
  np.testing.assert_allclose(1 / (1 + np.exp(-got[:3])), p[:3], rtol=1e-6)  # sigmoid(bias) = p


def test_pos_weight_file_and_its_errors(tmp_path, capsys):
  model_config = configs.ModelConfig(label_count=3)
  path = tmp_path / "w.txt"
  path.write_text("# per label\n2.5\n\n1\n0.25\n")
  weights = resolve_pos_weight(configs.TrainConfig(pos_weight=str(path)), model_config)
  assert weights == [2.5, 1.0, 0.25]
  assert resolve_pos_weight(configs.TrainConfig(), model_config) is None
  for text, message in (("1\n2\n", "2 weights for label_count=3"),
                        ("1\n0\n2\n", "must be finite and > 0"),
                        ("1\ntwo\n3\n", f"{path}:2: expected one pos_weight per line")):
    path.write_text(text)
    with pytest.raises(SystemExit) as exit_info:  # through errors.run, as train.py's main runs
      errors.run(lambda _: resolve_pos_weight(
          configs.TrainConfig(pos_weight=str(path)), model_config) and None, [])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err
  with pytest.raises(SystemExit) as exit_info:
    errors.run(lambda _: resolve_pos_weight(
        configs.TrainConfig(pos_weight="atuo"), model_config) and None, [])
  assert exit_info.value.code == 2 and "'atuo'" in capsys.readouterr().err
