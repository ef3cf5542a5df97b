"""multilabel/runtime.py's select_devices: the default gpu_id on a machine without a GPU is no
mistake and says nothing; asking for a GPU that a GPU machine lacks is a note."""

import tensorflow as tf

from multilabel import runtime


def test_no_note_on_a_cpu_machine_for_the_default_gpu_id(capsys, monkeypatch):
  monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: [])
  monkeypatch.setattr(tf.config, "set_visible_devices", lambda devices, kind=None: None)
  assert runtime.select_devices("0") == []
  assert capsys.readouterr().out == ""


def test_a_missing_gpu_on_a_gpu_machine_is_a_note(capsys, monkeypatch):
  monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["gpu0"])
  chosen = []
  monkeypatch.setattr(tf.config, "set_visible_devices",
                      lambda devices, kind=None: chosen.extend(devices))
  assert runtime.select_devices("0,1") == ["gpu0"] and chosen == ["gpu0"]
  assert "note: gpu_id='0,1' but only 1 GPU(s) are visible" in capsys.readouterr().out
