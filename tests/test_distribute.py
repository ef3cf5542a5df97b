"""tf.distribute in train.py: the mirrored strategy's CPU fallback, and a real two-worker run on
localhost. (The strategy and chief units are in tests/multilabel/test_runtime.py, input sharding
in tests/multilabel/data/test_preprocessing.py, the two-replica loss in
tests/multilabel/training/test_train_step.py.)

  .venv/bin/python -m pytest tests/test_distribute.py    # 1.5-3 min on 2 CPU cores

The two-worker test starts two train.py processes with their own TF_CONFIG (free loopback ports,
CPU only) beside a single-process run with the same global batch, and compares them step by step.
"""
import glob
import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import evaluate
import multi_label_classification_model as mlc
import train
from multilabel import runtime
from tests.helpers import REPO, const_feature_checkpoint, free_ports, read_scalars, write_records

# Every test here trains with train.py, in process or as several processes: the slow tier.
pytestmark = pytest.mark.slow
PROCESS_TIMEOUT = 240  # seconds for the train.py processes
SMALL = ["--target_height=64", "--target_width=64", "--resize_height=72", "--resize_width=72"]


# ---------------------------------------------------------------------------------------------
# strategy=mirrored on a CPU-only machine

def test_mirrored_falls_back_to_one_cpu_replica_and_matches_default(tmp_path, capsys):
  """One file and num_parallel_calls=1 make the input (order and augmentation, seed 0) the same
  in both runs, so the losses may differ only by float rounding; a random frozen backbone and
  varied labels make them depend on every input."""
  rng = np.random.default_rng(1)
  labels = rng.integers(0, 2, (32, 3))
  data = write_records(tmp_path / "train.tfrecord", labels, side=64, num_shards=1)[0]
  args = ["--label_count=3", f"--input_tfrecord_file={data}", "--batch_size=4",
          "--number_of_steps=3", "--log_every_n_steps=1", "--num_parallel_calls=1",
          "--optimizer=SGD", "--learning_rate=0.01", "--image_summary_steps=0", *SMALL]
  losses = {}
  for name in ("default", "mirrored"):
    capsys.readouterr()
    assert train.main(args + [f"--strategy={name}", f"--train_dir={tmp_path / name}"]) == 0
    out = capsys.readouterr().out
    assert "1 replica(s); global batch 4" in out
    assert ("strategy=mirrored found no GPU; running one replica on the CPU" in out) == (
        name == "mirrored")
    scalars = read_scalars(str(tmp_path / name))
    losses[name] = [scalars["loss/total"][s] for s in (1, 2, 3)]
  assert np.all(np.isfinite(losses["default"]))
  assert len(set(losses["default"])) == 3  # it trained: the loss moved
  np.testing.assert_allclose(losses["mirrored"], losses["default"], rtol=1e-5)

  strategy = runtime.make_strategy("mirrored")
  assert isinstance(strategy, tf.distribute.MirroredStrategy)
  assert [d.split("/")[-1] for d in strategy.extended.worker_devices] == ["device:CPU:0"]


# ---------------------------------------------------------------------------------------------
# A real two-worker MultiWorkerMirroredStrategy run on localhost

def _start(args, log_path, env):
  log = open(log_path, "w")
  return subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=log,
                          stderr=subprocess.STDOUT), log


def _finish(procs, timeout):
  """Exit codes of the processes (None: still running after `timeout` seconds). Returns as soon
  as one fails, since its peer would otherwise wait for it in a collective until the timeout."""
  deadline = time.time() + timeout
  while True:
    codes = [proc.poll() for proc, _ in procs]
    if None not in codes or any(c not in (None, 0) for c in codes) or time.time() > deadline:
      return codes
    time.sleep(0.5)


def _stop_all(procs):
  for proc, log in procs:
    if proc.poll() is None:
      proc.kill()  # SIGKILL: a hung collective ignores SIGTERM's graceful stop
      proc.wait(timeout=30)
    log.close()


def _tail(path, lines=40):
  with open(path) as f:
    return "".join(f.readlines()[-lines:])


def _saved(log_path):
  """The last checkpoint prefix a train.py log reports ("saved <prefix>")."""
  with open(log_path) as f:
    saved = [line.split(" ", 1)[1].strip() for line in f if line.startswith("saved ")]
  assert saved, _tail(log_path)
  return saved[-1]


def _head_weights(train_dir):
  """{variable name: value} of the head in train_dir's latest checkpoint, restored by train dir."""
  model = mlc.load_trained_model(str(train_dir))[0]
  return {v.name[:-2]: v.numpy().astype(np.float64) for layer in model.head
          for v in (layer.weights, layer.biases)}


def _eval_loss_oracle(head, beta, labels):
  """numpy: the head on the constant features relu(beta) at every one of the 2x2 positions, and
  the mean sigmoid cross-entropy against `labels` (every record has the same)."""
  get = lambda name: head[f"my_sub_network/{name}"]
  h = np.maximum(beta, 0).astype(np.float64)
  h = np.maximum(h @ get("my_conv_1/weights")[0, 0] + get("my_conv_1/biases"), 0)
  h = np.maximum(h @ get("my_conv_2/weights")[0, 0] + get("my_conv_2/biases"), 0)
  # my_conv_3 is 2x2 VALID over four equal pixels: one matmul with the summed kernel
  logits = h @ get("my_conv_3/weights").sum(axis=(0, 1)) + get("my_conv_3/biases")
  y = np.asarray(labels, np.float64)
  return np.mean(np.maximum(logits, 0) - logits * y + np.log1p(np.exp(-np.abs(logits))))


def test_two_workers_on_localhost_match_one_process_with_the_global_batch(tmp_path):
  """Two train.py workers (MultiWorkerMirroredStrategy, batch 4 each) against one process
  (default strategy, batch 8), 4 steps of SGD with clipping, and evaluate.py --run_once.

  Why the losses can be compared step by step: sharded and unsharded input read different images
  in a different order, and the augmentation is random. So the backbone checkpoint makes the
  frozen backbone's output a constant (postnorm gamma = 0), and every record has the same labels:
  every image then has exactly the same loss and gradients, and any global batch of 8 has the
  same mean loss and gradient however it was split. Both runs start from the same weights (seed 0,
  and MultiWorkerMirroredStrategy broadcasts worker 0's initial values). What is left is float32
  summation order (4 + 4 images summed across workers vs 8 in one process): relative errors of a
  few 1e-7 per step, so rtol 1e-5 over 4 steps, while the errors this guards against are factors:
  - a loss averaged per replica instead of over the global batch: the summed loss doubles;
  - regularisation not scaled per replica: it doubles;
  - gradients clipped per replica before the cross-worker sum (Keras 3 sums inside
    apply_gradients): the reported norm halves, and with clip_gradients below half the norm each
    worker's clipped half adds up to twice the single process's step, so the loss path diverges;
  - workers out of step, or one worker's update lost: the loss path diverges.
  Worker sharding itself (which files/records a worker reads) is checked in-process by
  test_each_input_pipeline_reads_a_disjoint_part; here there are 2 files, so each worker reads one.
  """
  labels = [1, 0, 1]
  data = write_records(tmp_path / "data" / "train.tfrecord", [labels] * 32, side=64,
                       num_shards=2)
  base = tmp_path / "base" / "const.ckpt"
  beta = const_feature_checkpoint(base)
  spec = str(tmp_path / "data" / "train.tfrecord-*")
  common = ["train.py", "--label_count=3", f"--input_tfrecord_file={spec}", "--number_of_steps=4",
            "--log_every_n_steps=1", "--save_checkpoint_steps=2", "--optimizer=SGD",
            "--learning_rate=1.0", "--clip_gradients=0.1", f"--base_network_checkpoint={base}",
            "--gpu_id=-1", *SMALL]
  env = dict(os.environ, CUDA_VISIBLE_DEVICES="-1", TF_CPP_MIN_LOG_LEVEL="2")
  env.pop("TF_CONFIG", None)
  ports = free_ports(2)
  cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
  shared_dir = tmp_path / "train"  # both workers get the same flags, as on a shared file system
  logs = [tmp_path / "worker0.log", tmp_path / "worker1.log", tmp_path / "single.log"]
  worker_tmp = [tmp_path / "tmp0", tmp_path / "tmp1"]
  procs = []
  try:
    for i in range(2):
      worker_tmp[i].mkdir()
      worker_env = dict(env, TMPDIR=str(worker_tmp[i]), TF_CONFIG=json.dumps(
          {"cluster": cluster, "task": {"type": "worker", "index": i}}))
      procs.append(_start(common + ["--strategy=multi_worker", "--batch_size=4",
                                    f"--train_dir={shared_dir}"], logs[i], worker_env))
    procs.append(_start(common + ["--strategy=default", "--batch_size=8",
                                  f"--train_dir={tmp_path / 'single'}"], logs[2], env))
    codes = _finish(procs, PROCESS_TIMEOUT)
  finally:
    _stop_all(procs)
  for code, log in zip(codes, logs):
    state = "still ran after the timeout" if code is None else f"exited {code}"
    assert code == 0, f"{log.name} {state}:\n{_tail(log)}"

  # Both workers: 2 replicas, global batch 8, and the same last step.
  saved = [_saved(log) for log in logs]
  for log in logs[:2]:
    assert "2 replica(s); global batch 8" in log.read_text()
  steps = [int(s.rsplit("-", 1)[1]) for s in saved]
  assert steps == [4, 4, 4]
  # The chief (worker 0) wrote train_dir; worker 1 wrote a temp dir and deleted it.
  assert saved[0] == str(shared_dir / "ckpt-4")
  assert os.path.dirname(saved[1]).startswith(str(worker_tmp[1]))
  assert not os.path.exists(os.path.dirname(saved[1]))
  for folder in worker_tmp:
    assert not [n for n in os.listdir(folder) if n.startswith("worker_ckpt_")]
  assert (shared_dir / "config.json").exists()
  assert tf.train.get_checkpoint_state(str(shared_dir)).all_model_checkpoint_paths == [
      str(shared_dir / "ckpt-2"), str(shared_dir / "ckpt-4")]
  events = glob.glob(str(shared_dir / "events.out.tfevents.*"))
  assert len(events) == 1  # the chief's only
  chief = tf.train.load_checkpoint(saved[0])
  assert chief.get_tensor("global_step/.ATTRIBUTES/VARIABLE_VALUE") == 4

  # Step by step, the two workers' run is the single process's.
  multi, single = read_scalars(str(shared_dir)), read_scalars(str(tmp_path / "single"))
  for tag in ("loss/classification", "loss/regularization", "loss/total", "gradient_norm"):
    assert sorted(multi[tag]) == [1, 2, 3, 4]
    np.testing.assert_allclose([multi[tag][s] for s in range(1, 5)],
                               [single[tag][s] for s in range(1, 5)], rtol=1e-5, err_msg=tag)
  assert multi["gradient_norm"][1] > 2 * 0.1  # the clip acted, even on a per-worker half
  losses = [multi["loss/total"][s] for s in range(1, 5)]
  assert losses[3] < losses[0] - 1e-3  # and training moved the loss
  head, single_head = _head_weights(shared_dir), _head_weights(tmp_path / "single")
  assert len(head) == 6
  for name, value in head.items():
    np.testing.assert_allclose(value, single_head[name], rtol=1e-5, atol=1e-7, err_msg=name)

  # evaluate.py --run_once scores the chief's checkpoint as it is (rebuilt from its config.json).
  eval_dir = tmp_path / "eval"
  assert evaluate.main([f"--checkpoint_dir={shared_dir}", f"--input_tfrecord_file={data[0]}",
                        "--run_once=true", "--batch_size=8", f"--eval_dir={eval_dir}"]) == 0
  result = json.loads((eval_dir / "metrics.jsonl").read_text().splitlines()[-1])
  assert (result["checkpoint"], result["global_step"], result["num_images"]) == ("ckpt-4", 4, 16)
  np.testing.assert_allclose(result["loss"], _eval_loss_oracle(head, beta, labels), rtol=1e-5)
