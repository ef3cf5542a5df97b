"""train.py, evaluate.py and data_service.py with the tf.data service, on this machine's loopback
only (issue 15).

conftest.py's in-process dispatcher and two workers on 127.0.0.1 serve train.py and evaluate.py;
data_service.py's own test starts the script's dispatcher and worker as processes. Oracles: the
direct pipeline's own pass over the same records, and train.py's checkpoints. (The pipeline's own
tests on the service are in tests/multilabel/data/test_input_service.py.)

  .venv/bin/python -m pytest tests/test_data_service.py    # ~2-3 min on 2 CPU cores
"""
import json
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
import tensorflow as tf

import data_service
import evaluate
import train
from multilabel.data import input_service
from multilabel.data.preprocessing import build_dataset
from tests import inference_fixture
from tests.helpers import (ID_BITS as LABELS, REPO, free_ports, id_labels as _id_labels,
                           run_script_main, train_until_sigterm, write_records)

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
PROCESS_TIMEOUT = 240  # seconds for any subprocess here: a hang fails the test, not the suite


@pytest.mark.slow
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


@pytest.mark.slow
def test_train_through_the_service_stops_on_sigterm_and_resumes(service, tmp_path,
                                                               monkeypatch):
  """train.py (a process of its own) trains through the two workers until SIGTERM, saves its
  step, and a second run resumes from it, one more step through the service in a job of its
  own."""
  address, _ = service
  data = write_records(tmp_path / "train.tfrecord", [_id_labels(i) for i in range(16)],
                       side=64, num_shards=2)
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


@pytest.mark.slow
def test_evaluate_through_the_service_gives_the_direct_metrics_and_rows(service, tmp_path,
                                                                       capsys):
  """evaluate.py --run_once on a random-weights train dir, without and with the service: the
  same metrics, and the same (scores, labels) rows, in another order."""
  address, _ = service
  train_dir = inference_fixture.build(str(tmp_path / "fixture")).train_dir
  labels_of = lambda i: [i % 2, (i >> 1) % 2, int(i % 3 == 0)]
  write_records(tmp_path / "eval.tfrecord", [labels_of(i) for i in range(24)], side=64,
                num_shards=4)
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


@pytest.mark.slow
def test_data_service_script_serves_a_randaugment_pipeline_and_stops_on_sigterm(shards, tmp_path,
                                                                            service_config):
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
    config = service_config(shards, augmentation="randaugment")
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
