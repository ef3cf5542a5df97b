"""multilabel/runtime.py: the tf.distribute strategy by name, and which task is the chief.
(From tests/test_distribute.py's make_strategy, is_chief and is_multi_worker tests.)"""
import types

import pytest
import tensorflow as tf

from multilabel import runtime


def test_make_strategy_names_and_errors(monkeypatch):
  assert runtime.make_strategy("default") is tf.distribute.get_strategy()
  monkeypatch.delenv("TF_CONFIG", raising=False)
  with pytest.raises(ValueError, match="TF_CONFIG"):
    runtime.make_strategy("multi_worker")
  with pytest.raises(ValueError, match="'horovod'"):
    runtime.make_strategy("horovod")


def _with_cluster(cluster, task_type, task_id):
  resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
      tf.train.ClusterSpec(cluster), task_type=task_type, task_id=task_id)
  return types.SimpleNamespace(cluster_resolver=resolver)


def test_chief_is_worker_0_unless_the_cluster_has_a_chief():
  workers = {"worker": ["a:1", "b:1"]}
  assert runtime.is_chief(_with_cluster(workers, "worker", 0))
  assert not runtime.is_chief(_with_cluster(workers, "worker", 1))
  with_chief = {"chief": ["c:1"], "worker": ["a:1"]}
  assert runtime.is_chief(_with_cluster(with_chief, "chief", 0))
  assert not runtime.is_chief(_with_cluster(with_chief, "worker", 0))
  assert runtime.is_chief(tf.distribute.get_strategy())
  assert runtime.is_multi_worker(_with_cluster(workers, "worker", 1))
  assert not runtime.is_multi_worker(_with_cluster({"worker": ["a:1"]}, "worker", 0))
  assert not runtime.is_multi_worker(tf.distribute.get_strategy())
