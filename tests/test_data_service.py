"""The input pipeline on a tf.data service, on this machine's loopback only (issue 15).

An in-process dispatcher and two workers on 127.0.0.1 serve the tests; data_service.py's own
test starts the script's dispatcher and worker as processes. Oracles: the direct pipeline's own
pass over the same records, and train.py's checkpoints.

  .venv/bin/python -m pytest tests/test_data_service.py    # ~2-3 min on 2 CPU cores
"""
import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

import configs
import data_service
from multilabel import errors
from multilabel.data import input_service
from multilabel.data.preprocessing import build_dataset
import evaluate
from tests import inference_fixture
import train
from tests.helpers import run_script_main, train_until_sigterm
from tests.test_distribute import free_ports, write_records

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVICE = tf.data.experimental.service
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
PROCESS_TIMEOUT = 240  # seconds for any subprocess here: a hang fails the test, not the suite
LABELS = 6


def _id_labels(i):
  return [(i >> b) & 1 for b in range(LABELS)]  # record i's labels spell i in binary


@pytest.fixture(scope="module")
def service():
  """An in-process dispatcher and two workers on 127.0.0.1: (grpc address, workers)."""
  dispatcher = SERVICE.DispatchServer(SERVICE.DispatcherConfig(port=0))
  port = dispatcher.target.rsplit(":", 1)[1]
  workers = [SERVICE.WorkerServer(SERVICE.WorkerConfig(
      dispatcher_address=f"127.0.0.1:{port}", worker_address="127.0.0.1:%port%"))
      for _ in range(2)]
  deadline = time.time() + 60
  registered = dispatcher._num_workers  # pylint: disable=protected-access
  while registered() < 2 and time.time() < deadline:
    time.sleep(0.1)
  assert registered() == 2
  yield f"grpc://127.0.0.1:{port}", workers
  for server in workers + [dispatcher]:
    server.stop()


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
  """40 records in 4 files: the service hands out files, so that it has several to hand out."""
  folder = tmp_path_factory.mktemp("records")
  write_records(folder / "r.tfrecord", 4, _id_labels, count=40)
  return str(folder / "r.tfrecord-*")


def _config(spec, **overrides):
  return configs.ModelConfig(label_count=LABELS, target_height=32, target_width=32,
                             resize_height=36, resize_width=36, batch_size=4,
                             input_tfrecord_file=spec, **overrides)


def _eval_pass(dataset):
  """Counter of the image paths of one eval pass, and {path: labels}."""
  seen, labels = collections.Counter(), {}
  for _, batch_labels, paths in dataset:
    for path, row in zip(paths.numpy(), batch_labels.numpy()):
      seen[path.decode()] += 1
      labels[path.decode()] = row.astype(int).tolist()
  return seen, labels


def test_an_eval_pass_over_two_workers_sees_each_record_as_often_as_without(service, shards):
  address, _ = service
  config = _config(shards)
  direct, direct_labels = _eval_pass(build_dataset(config, "eval"))
  served, served_labels = _eval_pass(build_dataset(config, "eval",
                                                   service=input_service.Service(address)))
  assert sum(direct.values()) == 40 and set(direct.values()) == {1}
  assert served == direct
  assert served_labels == direct_labels == {f"img{i}.jpg": _id_labels(i) for i in range(40)}


def test_two_trainers_sharing_a_job_split_the_records_without_duplicates(service, shards):
  """Two input pipelines of a multi-worker run (InputContext 2 of 2) join one job: each record
  goes to exactly one of them, though each would read every file on its own."""
  address, _ = service
  config = _config(shards)
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


def test_train_batches_are_whole_and_randaugment_runs_on_the_workers(service, shards):
  """Keras's RandAugment layers are part of the graph the workers get; the trainer batches."""
  address, _ = service
  config = _config(shards, augmentation="randaugment")
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


def test_a_dead_dispatcher_is_one_line_within_the_timeout(shards, tmp_path, capsys):
  dead = f"grpc://127.0.0.1:{free_ports(1)[0]}"  # nothing listens there
  argv = [f"--label_count={LABELS}", f"--input_tfrecord_file={shards}", "--gpu_id=-1",
          f"--train_dir={tmp_path / 'train'}", f"--data_service_address={dead}",
          "--data_service_timeout_secs=2"]
  proc = subprocess.run([sys.executable, "train.py", *argv], cwd=REPO, env=ENV, text=True,
                        capture_output=True, timeout=PROCESS_TIMEOUT)
  expected = (f"error: --data_service_address={dead!r}: no tf.data dispatcher answered within "
              "2 s (is data_service.py --role=dispatcher running there, and the port open?)")
  assert proc.returncode == 1, proc.stdout + proc.stderr
  assert proc.stderr.strip().splitlines()[-1] == expected and "Traceback" not in proc.stderr
  assert not os.path.exists(tmp_path / "train")  # nothing was written

  status, _, err = run_script_main(capsys, evaluate.main, [
      f"--input_tfrecord_file={shards}", f"--checkpoint_dir={tmp_path}",
      f"--data_service_address={dead}", "--data_service_timeout_secs=2"])
  assert status == 1 and err.strip() == expected


def test_train_through_the_service_stops_on_sigterm_and_resumes(service, tmp_path,
                                                               monkeypatch):
  """train.py (a process of its own) trains through the two workers until SIGTERM, saves its
  step, and a second run resumes from it, one more step through the service in a job of its
  own."""
  address, _ = service
  data = write_records(tmp_path / "train.tfrecord", 2, _id_labels, count=16)
  train_dir = str(tmp_path / "train")
  argv = [f"--label_count={LABELS}", f"--input_tfrecord_file={tmp_path}/train.tfrecord-*",
          f"--train_dir={train_dir}", "--target_height=32", "--target_width=32",
          "--resize_height=36", "--resize_width=36", "--batch_size=4", "--shuffle_buffer=16",
          "--gpu_id=-1", f"--data_service_address={address}", "--log_every_n_steps=1",
          "--save_checkpoint_steps=0", "--save_checkpoint_secs=0", "--image_summary_steps=0"]
  assert len(data) == 2
  status, lines = train_until_sigterm(argv + ["--number_of_steps=100000"], REPO, ENV,
                                      PROCESS_TIMEOUT)
  output = "".join(lines)
  assert status == 128 + signal.SIGTERM, output
  assert f"input: the tf.data service at {address} (2 worker(s) registered)" in output
  last = int([line for line in lines if line.startswith("step ")][-1].split(":")[0][5:])
  assert f"saved {train_dir}/ckpt-{last}" in output and "Traceback" not in output

  jobs, distribute = [], input_service.Service.distribute
  monkeypatch.setattr(input_service.Service, "distribute",
                      lambda self, *args: jobs.append(self) or distribute(self, *args))
  status = train.main(argv + [f"--number_of_steps={last + 1}"])
  assert status == 0
  assert jobs == [input_service.Service(address, f"train:{train_dir}:{last}")]
  prefix = tf.train.latest_checkpoint(train_dir)
  assert prefix == f"{train_dir}/ckpt-{last + 1}"
  assert tf.train.load_checkpoint(prefix).get_tensor(
      "global_step/.ATTRIBUTES/VARIABLE_VALUE") == last + 1


def test_evaluate_through_the_service_gives_the_direct_metrics_and_rows(service, tmp_path,
                                                                       capsys):
  """evaluate.py --run_once on a random-weights train dir, without and with the service: the
  same metrics, and the same (scores, labels) rows, in another order."""
  address, _ = service
  train_dir = inference_fixture.build(str(tmp_path / "fixture")).train_dir
  labels_of = lambda i: [i % 2, (i >> 1) % 2, int(i % 3 == 0)]
  write_records(tmp_path / "eval.tfrecord", 4, labels_of, count=24)
  runs = {}
  for name, extra in (("direct", []), ("service", [f"--data_service_address={address}"])):
    out = tmp_path / name
    status, _, err = run_script_main(capsys, evaluate.main, [
        f"--checkpoint_dir={train_dir}", f"--input_tfrecord_file={tmp_path}/eval.tfrecord-*",
        "--run_once=true", f"--eval_dir={out}", f"--score_file={out}/scores.txt",
        f"--label_file={out}/labels.txt", *extra])
    assert status == 0, err
    with open(out / "metrics.jsonl") as f:
      result = json.loads(f.readline())
    rows = np.hstack([np.loadtxt(out / "scores.txt"), np.loadtxt(out / "labels.txt")])
    runs[name] = result, rows[np.lexsort(rows.T[::-1])]  # rows sorted, for the comparison
  (direct, direct_rows), (served, served_rows) = runs["direct"], runs["service"]
  assert served["num_images"] == direct["num_images"] == 24
  for key in ("loss", "mAP", "CF1", "OF1"):
    assert served[key] == pytest.approx(direct[key], abs=1e-6), key
  np.testing.assert_allclose(served_rows, direct_rows, atol=2e-6)


def _start_script(*args):
  return subprocess.Popen([sys.executable, "data_service.py", *args], cwd=REPO, env=ENV,
                          text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _read_until(proc, needle, lines):
  """Reads proc's output lines into `lines` until one holds `needle` (or the output ends)."""
  for line in proc.stdout:
    lines.append(line)
    if needle in line:
      return line
  raise AssertionError("".join(lines))


def test_data_service_script_serves_a_randaugment_pipeline_and_stops_on_sigterm(shards, tmp_path):
  """The script's dispatcher (fault-tolerant, with a journal) and a worker, each a process:
  status lines, a train pipeline with Keras layers run in another process, a clean stop."""
  port = free_ports(1)[0]
  work_dir = tmp_path / "dispatcher"
  dispatcher = _start_script("--role=dispatcher", f"--port={port}", f"--work_dir={work_dir}")
  procs, logs = [dispatcher], {"dispatcher": [], "worker": []}
  watchdog = threading.Timer(PROCESS_TIMEOUT, lambda: [p.kill() for p in procs])
  watchdog.start()
  try:
    _read_until(dispatcher, f"dispatcher on port {port} (fault-tolerant", logs["dispatcher"])
    worker = _start_script("--role=worker", "--port=0", "--worker_address=127.0.0.1",
                           f"--dispatcher_address=grpc://127.0.0.1:{port}")
    procs.append(worker)
    _read_until(worker, "registered with", logs["worker"])
    _read_until(dispatcher, "1 worker(s) registered", logs["dispatcher"])
    config = _config(shards, augmentation="randaugment")
    served = input_service.Service(f"grpc://127.0.0.1:{port}", job_name="script-test")
    images, _ = next(iter(build_dataset(config, "train", seed=0, service=served)))
    assert images.shape == (4, 32, 32, 3)
    line = _read_until(worker, "1 task(s)", logs["worker"])
    assert f"for grpc://127.0.0.1:{port}, CPU" in line
    assert os.listdir(work_dir / "tf_data_dispatcher_journal")  # fault-tolerant mode is on
    for proc, name in ((worker, "worker"), (dispatcher, "dispatcher")):
      proc.send_signal(signal.SIGTERM)
      logs[name] += proc.stdout.readlines()
      assert proc.wait(timeout=60) == 0, "".join(logs[name])
      assert logs[name][-1].strip() == "received SIGTERM: stopped"
  finally:
    watchdog.cancel()
    for proc in procs:
      proc.kill()


@pytest.mark.parametrize("argv, message", [
    (["--role=trainer"], "--role='trainer': expected dispatcher or worker"),
    (["--role=worker"], "a worker needs --dispatcher_address=grpc://host:port"),
    (["--role=dispatcher", "--dispatcher_address=a:1"], "are a worker's"),
    (["--role=worker", "--dispatcher_address=a:1", "--work_dir=x"], "is the dispatcher's"),
    (["--role=dispatcher", "--port=70000"], "--port=70000: expected 0"),
    (["--role=worker", "--dispatcher_address=a"], "--dispatcher_address='a': expected grpc://"),
])
def test_data_service_script_refuses_bad_settings_in_one_line(argv, message, capsys):
  status, _, err = run_script_main(capsys, data_service.main, argv)
  assert status == 2
  assert err.count("\n") == 1 and err.startswith("error: ") and message in err
