"""train.py when something goes wrong (issue 20): damaged checkpoints, resuming with changed
settings, a second trainer on the same train_dir, a diverging run, a dead tf.data service.

Runs are tiny (16 random 40x40 JPEGs, 4 labels, 32x32 crops, batch 4, a few steps). Where a
second process is involved (two trainers, a killed trainer, the service) it is a real one.
Oracles: the checkpoint files and TensorFlow's own readers of them, the exit status and the
one `error:` line, and the files a refused run must not have touched.

  .venv/bin/python -m pytest tests/test_train_faults.py
"""
import glob
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from multilabel import checkpoints, config_files, errors, locks
from multilabel.training import train_step
from tests.helpers import run_captured, run_script_main, write_records
import train

REPO = pathlib.Path(__file__).resolve().parents[1]
ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
PROCESS_TIMEOUT = 240  # seconds for any subprocess here: a hang fails the test, not the suite
LABELS = 4
STEP_KEY = "global_step/.ATTRIBUTES/VARIABLE_VALUE"


def train_args(data, train_dir, *extra):
  return [f"--label_count={LABELS}", f"--input_tfrecord_file={data}", f"--train_dir={train_dir}",
          "--target_height=32", "--target_width=32", "--resize_height=36", "--resize_width=36",
          "--batch_size=4", "--shuffle_buffer=16", "--gpu_id=-1", "--image_summary_steps=0",
          *extra]


def one_error_line(err):
  """The `error: ...` line of a run that ended in one, asserting it is the only one."""
  lines = err.rstrip("\n").splitlines()
  assert lines and lines[-1].startswith("error: ") and "Traceback" not in err, err
  assert sum(line.startswith("error:") for line in lines) == 1, err
  return lines[-1]


def damage(path, how):
  """Cuts `path` to half its size, or inverts 64 bytes in its middle."""
  data = bytearray(pathlib.Path(path).read_bytes())
  if how == "cut":
    data = data[:len(data) // 2]
  else:
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
  pathlib.Path(path).write_bytes(bytes(data))


def piece(prefix, kind):
  """A checkpoint's .index or (only) .data file."""
  return prefix + ".index" if kind == "index" else glob.glob(prefix + ".data-*")[0]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  """16 records in two files (the tf.data service hands out files): their comma list."""
  folder = tmp_path_factory.mktemp("data")
  labels = np.random.default_rng(1).integers(0, 2, (16, LABELS))
  return ",".join(write_records(folder / f"train-{i}.tfrecord", labels[i::2], seed=i)
                  for i in range(2))


@pytest.fixture(scope="module")
def good_run(data, tmp_path_factory):
  """4 steps, a checkpoint every 2: ckpt-2 and ckpt-4. Tests copy it before changing it."""
  train_dir = tmp_path_factory.mktemp("good") / "train"
  status, log = run_captured(train.main, train_args(
      data, train_dir, "--number_of_steps=4", "--save_checkpoint_steps=2"))
  assert status == 0, log
  return train_dir


@pytest.fixture
def run_copy(good_run, tmp_path):
  train_dir = tmp_path / "train"
  shutil.copytree(good_run, train_dir)
  return train_dir


# ---------------------------------------------------------------------------------------------
# Damaged checkpoints: the newest that restores.

@pytest.fixture
def three_checkpoints(tmp_path):
  """A small tf.train.Checkpoint (weights and Adam's slots) saved at steps 2, 4 and 6, each with
  its step as the value of `w`."""
  v, w = tf.Variable(tf.random.normal([1000, 100])), tf.Variable(tf.zeros([10]))
  optimizer = tf.keras.optimizers.Adam()
  optimizer.build([v, w])
  checkpoint = tf.train.Checkpoint(v=v, w=w, optimizer=optimizer)
  manager = tf.train.CheckpointManager(checkpoint, str(tmp_path / "ckpts"), max_to_keep=5)
  for step in (2, 4, 6):
    w.assign(tf.fill([10], float(step)))
    manager.save(checkpoint_number=step)
  w.assign(tf.zeros([10]))
  return checkpoint, str(tmp_path / "ckpts"), w


@pytest.mark.parametrize("kind, how, says", [
    ("index", "cut", "not an sstable (bad magic number)"),
    ("index", "flip", "checksum"),
    ("data", "cut", "Read less bytes than requested"),
    ("data", "flip", "Checksum does not match")])
def test_restore_newest_good_skips_a_damaged_checkpoint_and_says_why(three_checkpoints, kind,
                                                                     how, says):
  checkpoint, directory, w = three_checkpoints
  newest = os.path.join(directory, "ckpt-6")
  damage(piece(newest, kind), how)
  prefix, skipped = checkpoints.restore_newest_good(checkpoint, directory)
  assert prefix == os.path.join(directory, "ckpt-4") and float(w[0]) == 4.0
  assert [p for p, _ in skipped] == [newest]
  assert skipped[0][1].startswith(f"{newest}: its files are damaged (") and says in skipped[0][1]
  assert "\n" not in skipped[0][1] and "{{" not in skipped[0][1]


def test_restore_newest_good_with_none_good_and_forget(three_checkpoints):
  checkpoint, directory, w = three_checkpoints
  damage(piece(os.path.join(directory, "ckpt-6"), "data"), "flip")
  damage(piece(os.path.join(directory, "ckpt-4"), "index"), "cut")
  for path in glob.glob(os.path.join(directory, "ckpt-2.*")):
    os.remove(path)
  prefix, skipped = checkpoints.restore_newest_good(checkpoint, directory)
  assert prefix is None and [os.path.basename(p) for p, _ in skipped] == ["ckpt-6", "ckpt-4",
                                                                           "ckpt-2"]
  assert "ckpt-2: its files are missing (" in skipped[2][1]
  # forget: the state file lists what is left, relative, and the newest left is the latest
  checkpoints.forget(directory, [skipped[0][0]])
  assert tf.train.latest_checkpoint(directory) == os.path.join(directory, "ckpt-4")
  assert 'all_model_checkpoint_paths: "ckpt-2"' in pathlib.Path(directory, "checkpoint").read_text()
  assert checkpoints.listed(directory) == [os.path.join(directory, f"ckpt-{n}") for n in (2, 4)]


@pytest.mark.parametrize("kind, how", [("data", "cut"), ("index", "flip")])
def test_train_resumes_from_the_newest_checkpoint_that_restores(run_copy, data, capsys, kind, how):
  damaged = str(run_copy / "ckpt-4")
  damage(piece(damaged, kind), how)
  status, out, err = run_script_main(capsys, train.main, train_args(
      data, run_copy, "--number_of_steps=2", "--save_checkpoint_steps=2"))
  assert status == 0 and "Traceback" not in err, err
  assert f"skipped {damaged}: its files are damaged (" in out
  assert f"resumed from {run_copy / 'ckpt-2'}" in out and "training from step 2 to 2" in out
  # ckpt-2 is the latest again, for evaluate.py and the next run; ckpt-4's files stay
  assert tf.train.latest_checkpoint(str(run_copy)) == str(run_copy / "ckpt-2")
  assert os.path.exists(damaged + ".index")


def test_train_saves_over_the_damaged_checkpoint_when_it_gets_there(run_copy, data, capsys):
  damage(piece(str(run_copy / "ckpt-4"), "data"), "flip")
  status, out, err = run_script_main(capsys, train.main, train_args(
      data, run_copy, "--number_of_steps=4", "--save_checkpoint_steps=2"))
  assert status == 0, err
  assert "training from step 2 to 4" in out and f"saved {run_copy / 'ckpt-4'}" in out
  assert checkpoints.listed(str(run_copy)) == [str(run_copy / "ckpt-2"), str(run_copy / "ckpt-4")]
  assert tf.train.load_checkpoint(str(run_copy / "ckpt-4")).get_tensor(STEP_KEY) == 4


def test_train_with_no_checkpoint_that_restores_is_one_line(run_copy, data, capsys):
  damage(piece(str(run_copy / "ckpt-4"), "data"), "cut")
  damage(piece(str(run_copy / "ckpt-2"), "index"), "cut")
  state = (run_copy / "checkpoint").read_bytes()
  status, _, err = run_script_main(capsys, train.main, train_args(
      data, run_copy, "--number_of_steps=6"))
  line = one_error_line(err)
  assert status == 1
  assert line.startswith(f"error: {run_copy}: no checkpoint restores (ckpt-4, ckpt-2; "), line
  assert (run_copy / "checkpoint").read_bytes() == state
  assert not glob.glob(str(run_copy / "ckpt-6*"))


# ---------------------------------------------------------------------------------------------
# Resuming with settings that change the variables: refused before anything is touched.

@pytest.mark.parametrize("flags, field, old, new, does", [
    (["--head_depth=8"], "head_depth", "0 (= 4)", "8", "the head's width"),
    (["--backbone=resnet_v2_101"], "backbone", "resnet_v2_50", "resnet_v2_101",
     "the backbone's variables"),
    (["--target_height=64", "--resize_height=68"], "target_height", "32", "64",
     "the head's last kernel"),
    (["--label_count=5"], "label_count", "4", "5", "the shape of the head's last layer"),
    (["--train_base_network=true"], "train_base_network", "false", "true",
     "the variables the optimiser and the moving average keep state for"),
    (["--ema_decay=0.5"], "ema_decay", "0.0", "0.5", "whether the checkpoints hold a moving"),
    (["--optimizer=SGD"], "optimizer", "Adam", "SGD", "the optimiser's slot variables"),
    (["--precision=mixed_float16"], "precision", "float32", "mixed_float16",
     "whether the optimiser keeps a loss scale")])
def test_a_resume_that_would_change_the_variables_is_one_line(run_copy, data, capsys, flags,
                                                              field, old, new, does):
  before = {p.name: p.read_bytes() for p in run_copy.iterdir() if p.is_file()}
  (run_copy / ".config.json.4242-0123abcd.tmp").write_text("a killed save's leftover")
  status, _, err = run_script_main(capsys, train.main, train_args(
      data, run_copy, "--number_of_steps=6", *flags))
  line = one_error_line(err)
  assert status == 2
  assert line.startswith(f"error: --{field}={new} cannot resume {run_copy}, whose checkpoints "
                         f"were made with {field}={old}: it changes {does}"), line
  if field == "train_base_network":  # the second stage of a fine-tune: the recipe
    assert line.endswith(f"start a new run from this one: --train_dir=<a new folder> "
                         f"--base_network_checkpoint={run_copy} --train_base_network=true (it "
                         "takes this run's backbone; its head starts fresh)"), line
  else:
    assert line.endswith(f"; keep --{field}={old.split()[0]} to resume it, or start a new run: a "
                         f"new --train_dir, with --base_network_checkpoint={run_copy} to start "
                         "from this run's backbone"), line
  # nothing touched: config.json, the checkpoints, even the leftovers a start would remove
  assert (run_copy / ".config.json.4242-0123abcd.tmp").exists()
  (run_copy / ".config.json.4242-0123abcd.tmp").unlink()
  assert {p.name: p.read_bytes() for p in run_copy.iterdir() if p.is_file()} == before


def test_a_resume_with_the_same_variables_goes_on(run_copy, data, capsys):
  """head_depth=label_count is the head head_depth=0 made; the learning rate and the loss shape
  no variable."""
  status, out, err = run_script_main(capsys, train.main, train_args(
      data, run_copy, "--number_of_steps=4", f"--head_depth={LABELS}", "--learning_rate=0.01",
      "--loss=focal", "--ema_decay=0"))
  assert status == 0, err
  assert f"resumed from {run_copy / 'ckpt-4'}" in out


# ---------------------------------------------------------------------------------------------
# One trainer per train_dir.

class Process:
  """`python <script> *argv` in the repo as a real process, its output read by a thread: `wait_for`
  a line holding some text, `quiet_for` a while. Killed when the test ends (`close`), or after
  PROCESS_TIMEOUT."""

  def __init__(self, script, argv):
    self.proc = subprocess.Popen([sys.executable, script, *argv], cwd=REPO, env=ENV, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    self.lines, self.changed = [], threading.Condition()
    self.timer = threading.Timer(PROCESS_TIMEOUT, self.proc.kill)
    self.timer.start()
    self.reader = threading.Thread(target=self._read, daemon=True)
    self.reader.start()

  def _read(self):
    for line in self.proc.stdout:
      with self.changed:
        self.lines.append(line)
        self.changed.notify_all()
    with self.changed:
      self.lines.append(None)  # the end
      self.changed.notify_all()

  def wait_for(self, text):
    """The first line holding `text`; an AssertionError if the output ends first."""
    with self.changed:
      while True:
        found = [line for line in self.lines if line is not None and text in line]
        if found:
          return found[0]
        assert None not in self.lines, f"{text!r} never came:\n{self.log()}"
        self.changed.wait()

  def quiet_for(self, secs):
    """Waits until no line has come for `secs` seconds."""
    with self.changed:
      while self.changed.wait(secs):
        pass

  def finish(self):
    """(exit status, the whole output), once it has ended."""
    status = self.proc.wait(timeout=PROCESS_TIMEOUT)
    self.reader.join()
    return status, self.log()

  def log(self):
    return "".join(line for line in self.lines if line is not None)

  def close(self):
    self.timer.cancel()
    self.proc.kill()
    self.proc.wait()


@pytest.fixture
def processes():
  """start(script, argv) -> a Process, each killed when the test ends."""
  started = []
  yield lambda script, argv: started.append(Process(script, argv)) or started[-1]
  for process in started:
    process.close()


def test_the_lock_refuses_a_second_holder_and_is_gone_after_release(tmp_path):
  logged = []
  lock = locks.hold_train_dir(str(tmp_path / "train"), logged.append)
  body = json.loads((tmp_path / "train" / locks.LOCK_FILE).read_text())
  assert body["pid"] == os.getpid() and body["host"] == socket.gethostname() and logged == []
  with pytest.raises(errors.DataError) as refused:  # a second open file: flock refuses it too
    locks.hold_train_dir(str(tmp_path / "train"), logged.append)
  assert str(refused.value).startswith(
      f"{tmp_path / 'train'} is in use by another train.py (pid {os.getpid()} on host "
      f"{socket.gethostname()}, started {body['started']}): one trainer per train_dir")
  lock.release()
  assert not (tmp_path / "train" / locks.LOCK_FILE).exists()
  locks.hold_train_dir(str(tmp_path / "train"), logged.append).release()
  assert logged == []  # a released lock is no dead run's


@pytest.mark.slow
def test_a_second_trainer_is_refused_and_a_killed_ones_lock_is_taken_over(data, tmp_path,
                                                                          processes, capsys):
  """Trainer A (a real process) trains; B on the same train_dir is refused in one line naming A
  before it touches anything; A is killed with SIGKILL; B then takes A's lock over and says so."""
  train_dir = tmp_path / "train"
  first = processes("train.py", train_args(data, train_dir, "--number_of_steps=100000",
                                           "--save_checkpoint_steps=0", "--save_checkpoint_secs=0"))
  first.wait_for("training from step 0")
  config = (train_dir / config_files.TRAIN_CONFIG_FILE).read_bytes()
  leftover = train_dir / ".config.json.4242-0123abcd.tmp"  # what a start would remove
  leftover.write_text("a killed save's leftover")
  status, _, err = run_script_main(capsys, train.main, train_args(
      data, train_dir, "--number_of_steps=0", "--label_names_file="))
  line = one_error_line(err)
  assert status == 1
  assert line.startswith(f"error: {train_dir} is in use by another train.py (pid "
                         f"{first.proc.pid} on host {socket.gethostname()}, started "), line
  assert line.endswith("): one trainer per train_dir; wait for it to end, stop it (Ctrl-C or "
                       "SIGTERM saves a checkpoint), or give another --train_dir"), line
  assert (train_dir / config_files.TRAIN_CONFIG_FILE).read_bytes() == config and leftover.exists()

  first.proc.kill()  # SIGKILL: no cleanup; the kernel lets go of the lock, the file stays
  first.proc.wait()
  assert (train_dir / locks.LOCK_FILE).exists()
  status, out, err = run_script_main(capsys, train.main, train_args(
      data, train_dir, "--number_of_steps=0"))
  assert status == 0, err
  assert (f"note: took over {train_dir / locks.LOCK_FILE}, left by a run that ended without "
          f"releasing it (pid {first.proc.pid} on host {socket.gethostname()}, started ") in out
  assert not (train_dir / locks.LOCK_FILE).exists()  # released at the end


# ---------------------------------------------------------------------------------------------
# A diverging run: stopped at the first non-finite step, nothing of it saved.

def test_finite_watch_names_the_first_non_finite_step_and_value():
  def scalars(classification, regularization, norm):
    return {"loss/classification": tf.constant(classification),
            "loss/regularization": tf.constant(regularization), "gradient_norm": tf.constant(norm)}
  watch = train_step.FiniteWatch()
  for step_no, values in enumerate([(0.7, 0.1, 3.0), (0.6, 0.1, 2.0), (np.nan, 0.1, np.inf),
                                    (np.nan, np.inf, np.nan)], start=1):
    watch.add(step_no, scalars(*values))
  assert watch.check() == (3, {"the classification loss": pytest.approx(np.nan, nan_ok=True),
                               "the gradient norm": np.inf})
  assert watch.check() is None  # those steps are read once
  scaled = train_step.FiniteWatch(loss_scaled=True)  # a skipped step's inf gradient is routine
  scaled.add(1, scalars(0.7, 0.1, np.inf))
  assert scaled.check() is None
  scaled.add(2, scalars(0.7, -np.inf, np.inf))
  assert scaled.check() == (2, {"the regularization loss": -np.inf})


def non_finite_tensors(prefix):
  reader = tf.train.load_checkpoint(prefix)
  return [key for key, dtype in reader.get_variable_to_dtype_map().items()
          if dtype.is_floating and not np.all(np.isfinite(reader.get_tensor(key)))]


def assert_stopped_without_saving_it(run_copy, err, status, last_good):
  """One line naming the first non-finite step; every checkpoint left is finite and older."""
  line = one_error_line(err)
  assert status == 1
  found = re.match(r"error: step (\d+): (the classification loss|the regularization loss|the "
                   r"gradient norm|a weight) is (nan|inf|-inf|not finite after the update)", line)
  assert found, line
  assert line.endswith(f": the training diverged and stopped; nothing after {last_good} was "
                       "saved, and it stays the latest: rerun with a lower --learning_rate or "
                       "--clip_gradients > 0 to resume from it"), line
  assert os.path.basename(tf.train.latest_checkpoint(str(run_copy))) == last_good
  for prefix in checkpoints.listed(str(run_copy)):
    assert checkpoints.number(prefix) < int(found[1])
    assert non_finite_tensors(prefix) == [], prefix
  assert not glob.glob(str(run_copy / f"ckpt-{found[1]}.*"))


def test_a_diverging_run_stops_before_a_save_and_keeps_the_last_good_checkpoint(run_copy, data,
                                                                                capsys):
  """lr 1e20 without clipping, a save every step, no log window: the check before each save."""
  status, out, err = run_script_main(capsys, train.main, train_args(
      data, run_copy, "--number_of_steps=30", "--learning_rate=1e20", "--clip_gradients=0",
      "--save_checkpoint_steps=1", "--log_every_n_steps=1000"))
  last_good = os.path.basename(tf.train.latest_checkpoint(str(run_copy)))
  assert_stopped_without_saving_it(run_copy, err, status, last_good)
  assert "step 30" not in out


def test_a_diverging_run_stops_at_a_log_window_and_the_exit_saves_nothing(run_copy, data, capsys):
  """No save until the end: the log window's check stops it, and no final save follows."""
  status, out, err = run_script_main(capsys, train.main, train_args(
      data, run_copy, "--number_of_steps=30", "--learning_rate=1e20", "--clip_gradients=0",
      "--save_checkpoint_steps=0", "--save_checkpoint_secs=0", "--log_every_n_steps=3"))
  assert_stopped_without_saving_it(run_copy, err, status, "ckpt-4")
  assert "loss nan" not in out and "loss inf" not in out


# ---------------------------------------------------------------------------------------------
# The tf.data service: no element for --data_service_timeout_secs, and signals while waiting.

def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture
def service(processes):
  """data_service.py's dispatcher and one worker, each a process: (address, worker)."""
  port = free_port()
  dispatcher = processes("data_service.py", ["--role=dispatcher", f"--port={port}"])
  dispatcher.wait_for(f"dispatcher on port {port}")
  worker = processes("data_service.py", ["--role=worker", "--port=0", "--worker_address=127.0.0.1",
                                          f"--dispatcher_address=grpc://127.0.0.1:{port}"])
  dispatcher.wait_for("1 worker(s) registered")
  return f"grpc://127.0.0.1:{port}", worker


def service_args(data, train_dir, address, timeout):
  return train_args(data, train_dir, f"--data_service_address={address}",
                    f"--data_service_timeout_secs={timeout}", "--number_of_steps=100000",
                    "--log_every_n_steps=1", "--save_checkpoint_steps=0",
                    "--save_checkpoint_secs=0")


def last_step(log):
  return int(re.findall(r"^step (\d+): loss", log, re.M)[-1])


def assert_saved_at(train_dir, step_no):
  prefix = str(train_dir / f"ckpt-{step_no}")
  assert tf.train.latest_checkpoint(str(train_dir)) == prefix
  assert tf.train.load_checkpoint(prefix).get_tensor(STEP_KEY) == step_no


@pytest.mark.slow
def test_a_service_with_no_worker_left_saves_and_stops_within_the_timeout(data, tmp_path, service,
                                                                          processes):
  address, worker = service
  train_dir = tmp_path / "train"
  trainer = processes("train.py", service_args(data, train_dir, address, 5))
  trainer.wait_for("step 2: loss")
  worker.proc.kill()  # SIGKILL: the service has no worker left, and never says so
  killed = time.monotonic()
  status, log = trainer.finish()
  assert status == 1 and "Traceback" not in log, log
  assert time.monotonic() - killed < 60, log  # the batches it had, then 5 s, then the save
  step_no = last_step(log)
  assert log.rstrip("\n").splitlines()[-1] == (
      f"error: the tf.data service at {address} gave no element for 5 s "
      f"(--data_service_timeout_secs) after step {step_no}: are its workers running "
      f"(data_service.py --role=worker --dispatcher_address={address})? saved "
      f"{train_dir}/ckpt-{step_no}: start workers and rerun to resume from it"), log
  assert_saved_at(train_dir, step_no)


@pytest.mark.slow
def test_sigterm_while_waiting_on_the_service_saves_and_exits(data, tmp_path, service, processes):
  address, worker = service
  train_dir = tmp_path / "train"
  trainer = processes("train.py", service_args(data, train_dir, address, 600))
  trainer.wait_for("step 2: loss")
  worker.proc.kill()
  trainer.quiet_for(5)  # no step for 5 s: it waits on the service
  trainer.proc.send_signal(signal.SIGTERM)
  signalled = time.monotonic()
  status, log = trainer.finish()
  assert status == 128 + signal.SIGTERM and "Traceback" not in log, log
  assert time.monotonic() - signalled < 30, log
  step_no = last_step(log)
  assert "received SIGTERM" in log and f"saved {train_dir}/ckpt-{step_no}" in log, log
  assert_saved_at(train_dir, step_no)
