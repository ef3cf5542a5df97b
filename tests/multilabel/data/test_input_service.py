"""multilabel/data/input_service.py: the input pipeline on a tf.data service, on this machine's
loopback only: conftest.py's in-process dispatcher and two workers (`service`) serve the records
of `shards`. Oracle: the direct pipeline's own pass over the same records. (From
tests/test_data_service.py; its tests of the scripts stay there.)"""
import collections

import numpy as np
import pytest
import tensorflow as tf

from multilabel import errors
from multilabel.data import input_service
from multilabel.data.preprocessing import build_dataset
from tests.helpers import ID_BITS as LABELS, id_labels as _id_labels


def _eval_pass(dataset):
  """Counter of the image paths of one eval pass, and {path: labels}."""
  seen, labels = collections.Counter(), {}
  for _, batch_labels, paths in dataset:
    for path, row in zip(paths.numpy(), batch_labels.numpy()):
      seen[path.decode()] += 1
      labels[path.decode()] = row.astype(int).tolist()
  return seen, labels


def test_an_eval_pass_over_two_workers_sees_each_record_as_often_as_without(service, shards,
                                                                            service_config):
  address, _ = service
  config = service_config(shards)
  direct, direct_labels = _eval_pass(build_dataset(config, "eval"))
  served, served_labels = _eval_pass(build_dataset(config, "eval",
                                                   service=input_service.Service(address)))
  assert sum(direct.values()) == 40 and set(direct.values()) == {1}
  assert served == direct
  assert served_labels == direct_labels == {f"img{i}.jpg": _id_labels(i) for i in range(40)}


def test_two_trainers_sharing_a_job_split_the_records_without_duplicates(service, shards,
                                                                         service_config):
  """Two input pipelines of a multi-worker run (InputContext 2 of 2) join one job: each record
  goes to exactly one of them, though each would read every file on its own."""
  address, _ = service
  config = service_config(shards)
  shared = input_service.Service(address, job_name="test-shared-eval-pass")
  iterators = [iter(build_dataset(config, "eval", input_context=tf.distribute.InputContext(
      2, i, 2), service=shared)) for i in range(2)]
  seen = [collections.Counter(), collections.Counter()]
  live = [0, 1]
  while live:  # take turns, as two trainers stepping together would
    for i in list(live):
      try:
        _, _, paths = next(iterators[i])
      except StopIteration:
        live.remove(i)
        continue
      seen[i].update(p.decode() for p in paths.numpy())
  assert seen[0] + seen[1] == collections.Counter(f"img{i}.jpg" for i in range(40))
  assert not set(seen[0]) & set(seen[1])


def test_train_batches_are_whole_and_randaugment_runs_on_the_workers(service, shards,
                                                                     service_config):
  """Keras's RandAugment layers are part of the graph the workers get; the trainer batches."""
  address, _ = service
  config = service_config(shards, augmentation="randaugment")
  served = input_service.Service(address, job_name="test-randaugment")
  for images, labels in build_dataset(config, "train", seed=0, service=served).take(3):
    assert images.shape == (4, 32, 32, 3) and labels.shape == (4, LABELS)
    assert -1.0 <= float(tf.reduce_min(images)) < float(tf.reduce_max(images)) <= 1.0
    ids = labels.numpy() @ 2 ** np.arange(LABELS)
    assert set(ids.astype(int)) <= set(range(40))


def test_a_pipeline_the_service_refuses_is_one_config_error(service):
  address, _ = service
  options = tf.data.Options()
  options.experimental_external_state_policy = tf.data.experimental.ExternalStatePolicy.FAIL
  stateful = tf.data.Dataset.range(4).map(lambda x: x + tf.random.uniform([], 0, 2, tf.int64))
  with pytest.raises(errors.ConfigError, match=r"^--data_service_address: a test pipeline "
                     r"cannot run on the tf\.data service \(") as raised:
    input_service.Service(address).distribute(stateful.with_options(options), "a test pipeline")
  assert "\n" not in str(raised.value)


def test_addresses_and_what_answers_there(service):
  address, workers = service
  assert input_service.check_dispatcher(address, 10) == 2
  for bad in ("localhost", "http://a:1", "grpc://a:0", "a:99999", "grpc://a:b"):
    with pytest.raises(errors.ConfigError, match=f"--data_service_address={bad!r}: "):
      input_service.check_dispatcher(bad, 10)
  with pytest.raises(errors.ConfigError, match="--data_service_timeout_secs=0: expected > 0"):
    input_service.check_dispatcher(address, 0)
  worker = workers[0]._address  # pylint: disable=protected-access
  with pytest.raises(errors.DataError, match=f"{worker!r} answers, but not as a tf.data "
                     "dispatcher: UNIMPLEMENTED"):
    input_service.check_dispatcher(worker, 10)
