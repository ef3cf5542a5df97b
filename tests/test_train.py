"""train.py on tiny data (16 random 40x40 JPEGs, 4 labels, 32x32 crops, batch 4, a few steps).

The model is always ResNet-50, so runs share artefacts through module fixtures: one fine-tuning
first run from a slim-format checkpoint (EMA on, TensorBoard on, a checkpoint per step) and one
resume of it, and a source run that a new label set transfers from. Oracles: the slim checkpoint's
own tensors (tf.train.load_checkpoint), the EMA update formula, the staircase decay formula,
TensorBoard's event files, and a source run's own in-memory weights. (The train-step, schedule
and pos_weight units are under tests/multilabel/training/; the transfer and dead-unit logging
tests came from tests/test_recipes.py.)

  .venv/bin/python -m pytest tests/test_train.py
"""
import dataclasses
import glob
import json
import math
import os
import re
import shutil
import signal

import numpy as np
import pytest
import tensorflow as tf

import configs
import multi_label_classification_model as mlc
import train
from multilabel import checkpoints, config_files, errors
from multilabel.training import optimizers
from multilabel.training.pos_weight import resolve_pos_weight
from tests.helpers import (REPO, fake_full_checkpoint_save, fake_full_disk, fill_disk,
                           head_variables, read_scalars, run_captured, run_script_main,
                           small_disk, snapshot, train_until_sigterm, write_records)

LABELS = 4
SIZE = ["--target_height=32", "--target_width=32", "--resize_height=36", "--resize_width=36"]
STEP_KEY = "global_step/.ATTRIBUTES/VARIABLE_VALUE"


def train_args(data, train_dir, *extra):
  return [f"--label_count={LABELS}", f"--input_tfrecord_file={data}", f"--train_dir={train_dir}",
          *SIZE, "--batch_size=4", "--shuffle_buffer=16", "--gpu_id=-1", *extra]


def run_main(argv):
  """train.main in-process: (exit status, its log)."""
  return run_captured(train.main, argv)


class RestoreSpy:
  """Wraps train.restore_or_start to keep the run's tf.train.Checkpoint (model, optimizer, ema)
  and a copy of the model's and optimiser's state right after the restore."""

  def __init__(self, patch):
    original = train.restore_or_start

    def spy(manager, model, *args, **kwargs):
      resumed = original(manager, model, *args, **kwargs)
      self.checkpoint = manager.checkpoint
      self.model_after_restore = snapshot(model.variables)
      self.optimizer_after_restore = snapshot(manager.checkpoint.optimizer.variables)
      ema = getattr(manager.checkpoint, "ema", None)
      self.ema_after_restore = snapshot(ema.shadows) if ema is not None else None
      return resumed

    patch.setattr(train, "restore_or_start", spy)


def read_events(directory):
  """{tag: [(step, value)]} from the TensorBoard event files in `directory`; image summaries are
  stored as the number of images they hold."""
  plugins, found = {}, {}
  for path in sorted(glob.glob(os.path.join(directory, "events.out.tfevents.*"))):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        if value.metadata.plugin_data.plugin_name:  # written with a tag's first value only
          plugins[value.tag] = value.metadata.plugin_data.plugin_name
        if plugins.get(value.tag) == "hparams":  # the run's HParams row: strings, not values
          continue
        array = tf.make_ndarray(value.tensor)
        item = len(array) - 2 if plugins.get(value.tag) == "images" else float(array)
        found.setdefault(value.tag, []).append((event.step, item))
  return found, plugins


# ---------------------------------------------------------------------------------------------
# Fixtures.

@pytest.fixture(scope="module")
def data(tmp_path_factory):
  labels = np.random.default_rng(1).integers(0, 2, (16, LABELS))
  return write_records(tmp_path_factory.mktemp("data") / "train.tfrecord", labels)


@pytest.fixture(scope="module")
def slim_checkpoint(tmp_path_factory, reference_dir):
  """A name-based checkpoint as TF-Slim wrote resnet_v2_50.ckpt: slim's 272 variable names (the
  1001-way logits included) and a global_step, with random values, written by SaveV2."""
  names = json.loads((reference_dir / "resnet_v2_50_variables.json").read_text())["variables"]
  rng = np.random.default_rng(7)
  tensors = {}
  for name, shape in names:
    kind = name.rsplit("/", 1)[-1]
    if kind == "weights":
      value = rng.normal(0, math.sqrt(2.0 / math.prod(shape[:-1])), shape)
    elif kind in ("gamma", "moving_variance"):
      value = rng.uniform(0.5, 1.5, shape)
    else:  # beta, moving_mean, biases
      value = rng.normal(0, 0.1, shape)
    tensors[name] = tf.constant(value, tf.float32)
  tensors["global_step"] = tf.constant(123456, tf.int64)
  prefix = str(tmp_path_factory.mktemp("slim") / "resnet_v2_50.ckpt")
  tf.raw_ops.SaveV2(prefix=prefix, tensor_names=list(tensors),
                    shape_and_slices=[""] * len(tensors), tensors=list(tensors.values()))
  return prefix


FIRST_RUN = ["--train_base_network=true", "--ema_decay=0.5", "--learning_rate=0.01",
             "--decay_steps=1", "--decay_rate=0.5", "--staircase=true", "--save_checkpoint_steps=1",
             "--log_every_n_steps=1", "--image_summary_steps=1"]


@pytest.fixture(scope="module")
def first_run(data, slim_checkpoint, tmp_path_factory):
  """Fine-tunes 2 steps from the slim checkpoint: ckpt-1 and ckpt-2, EMA decay 0.5."""
  train_dir = str(tmp_path_factory.mktemp("first") / "train")
  with pytest.MonkeyPatch.context() as patch:
    spy = RestoreSpy(patch)
    status, log = run_main(train_args(data, train_dir, *FIRST_RUN, "--number_of_steps=2",
                                      f"--base_network_checkpoint={slim_checkpoint}"))
  ckpt = spy.checkpoint
  return dict(train_dir=train_dir, status=status, log=log, spy=spy, model=ckpt.model,
              model_at_end=snapshot(ckpt.model.variables),
              optimizer_at_end=snapshot(ckpt.optimizer.variables),
              ema_at_end=snapshot(ckpt.ema.shadows))


@pytest.fixture(scope="module")
def resumed_run(first_run, data):
  """Runs train.py again on the first run's train_dir, base_network_checkpoint now naming
  nothing. number_of_steps is already reached, so it restores and stops without tracing a step
  (the SIGTERM test resumes and trains on)."""
  with pytest.MonkeyPatch.context() as patch:
    spy = RestoreSpy(patch)
    status, log = run_main(train_args(data, first_run["train_dir"], *FIRST_RUN,
                                      "--number_of_steps=2",
                                      "--base_network_checkpoint=/nonexistent/ignored.ckpt"))
  return dict(status=status, log=log, spy=spy)


# ---------------------------------------------------------------------------------------------
# First run, resume, checkpoints.

@pytest.mark.slow
def test_first_run_restores_backbone_from_slim_checkpoint(first_run, slim_checkpoint):
  assert first_run["status"] == 0
  assert f"restored the backbone from {slim_checkpoint}" in first_run["log"]
  reader = tf.train.load_checkpoint(slim_checkpoint)
  model = first_run["model"]
  backbone = {id(v) for v in model.backbone.variables}
  compared = 0
  for v, value in zip(model.variables, first_run["spy"].model_after_restore):
    if id(v) in backbone:
      np.testing.assert_array_equal(value, reader.get_tensor(v.name[:-2]), err_msg=v.name)
      compared += 1
  assert compared == 270  # slim's 272 minus the 1001-way logits, which the head replaces


@pytest.mark.slow
def test_first_run_checkpoints_config_and_steps(first_run):
  train_dir = first_run["train_dir"]
  state = tf.train.get_checkpoint_state(train_dir)
  assert [os.path.basename(p) for p in state.all_model_checkpoint_paths] == ["ckpt-1", "ckpt-2"]
  for step in (1, 2):
    reader = tf.train.load_checkpoint(os.path.join(train_dir, f"ckpt-{step}"))
    assert reader.get_tensor(STEP_KEY) == step
  model_config = mlc.load_model_config(train_dir)
  assert (model_config.label_count, model_config.target_height, model_config.target_width,
          model_config.train_base_network) == (LABELS, 32, 32, True)
  saved = config_files.load_config(os.path.join(train_dir, config_files.TRAIN_CONFIG_FILE),
                               configs.TrainConfig)
  assert (saved.ema_decay, saved.number_of_steps, saved.decay_steps) == (0.5, 2, 1)


@pytest.mark.slow
def test_tensorboard_scalars_images_and_learning_rate_schedule(first_run):
  found, plugins = read_events(first_run["train_dir"])
  for tag in ("loss/classification", "loss/regularization", "learning_rate", "gradient_norm",
              "images_per_sec"):
    assert [step for step, _ in found[tag]] == [1, 2], tag
    assert plugins[tag] == "scalars"
    assert all(math.isfinite(value) for _, value in found[tag]), tag
  assert all(value > 0 for _, value in found["gradient_norm"] + found["images_per_sec"])
  # staircase decay every step by 0.5: step n ran at 0.01 * 0.5 ** (n - 1)
  for step, value in found["learning_rate"]:
    assert value == pytest.approx(0.01 * 0.5 ** (step - 1), rel=1e-6)
  images = [tag for tag, plugin in plugins.items() if plugin == "images"]
  assert images and all(count >= 1 for _, count in found[images[0]])


@pytest.mark.slow
def test_ema_starts_at_restored_weights_is_saved_and_restores(first_run):
  """shadow_1 = d * w_0 + (1 - d) * w_1, with w_0 the weights right after the slim restore."""
  model = first_run["model"]
  prefix = os.path.join(first_run["train_dir"], "ckpt-1")
  names = tf.train.load_checkpoint(prefix).get_variable_to_shape_map()
  assert any(name.startswith("ema/") for name in names)
  trainable = {id(v) for v in model.trainable_variables}
  w0 = [value for v, value in zip(model.variables, first_run["spy"].model_after_restore)
        if id(v) in trainable]
  w0 = dict(zip([v.name for v in model.variables if id(v) in trainable], w0))
  assert checkpoints.restore_model(model, prefix, use_ema=False) == 1
  w1 = {v.name: v.numpy() for v in model.trainable_variables}
  assert checkpoints.restore_model(model, prefix, use_ema=True) == 1
  assert len(w0) == len(model.trainable_variables) > 150  # the backbone is averaged too
  for v in model.trainable_variables:
    np.testing.assert_allclose(v.numpy(), 0.5 * w0[v.name] + 0.5 * w1[v.name],
                               rtol=1e-5, atol=1e-6, err_msg=v.name)
  moved = max(float(np.abs(w1[name] - w0[name]).max()) for name in w1)
  assert moved > 1e-4  # the step changed the weights, so the check above can fail


@pytest.mark.slow
def test_resume_restores_step_weights_optimizer_and_ema(first_run, resumed_run):
  assert resumed_run["status"] == 0
  train_dir = first_run["train_dir"]
  assert f"resumed from {os.path.join(train_dir, 'ckpt-2')}" in resumed_run["log"]
  assert "training from step 2 to 2" in resumed_run["log"]
  spy = resumed_run["spy"]
  optimizer = spy.checkpoint.optimizer
  # The optimiser state right after the restore equals ckpt-2's tensors, read by name.
  reader = tf.train.load_checkpoint(os.path.join(train_dir, "ckpt-2"))
  after = spy.optimizer_after_restore
  assert int(after[0]) == reader.get_tensor(STEP_KEY) == 2  # iterations = the global step
  slots = {}
  for key in reader.get_variable_to_shape_map():
    parts = key.split("/")
    if parts[:2] == ["optimizer", "_variables"]:
      slots[int(parts[2])] = reader.get_tensor(key)
  assert sorted(slots) == list(range(1, len(optimizer.variables)))
  assert len(slots) == 2 * len(spy.checkpoint.model.trainable_variables)  # Adam's m and v
  for index, value in slots.items():
    np.testing.assert_array_equal(after[index], value, err_msg=optimizer.variables[index].name)
  assert sum(float(np.abs(value).sum()) for value in slots.values()) > 0  # not fresh zeros
  # ... and equals the first run's final state, as do the weights and the EMA shadows.
  for got, want in zip(after, first_run["optimizer_at_end"]):
    np.testing.assert_array_equal(got, want)
  for got, want in zip(spy.model_after_restore, first_run["model_at_end"]):
    np.testing.assert_array_equal(got, want)
  for got, want in zip(spy.ema_after_restore, first_run["ema_at_end"]):
    np.testing.assert_array_equal(got, want)
  assert tf.train.latest_checkpoint(train_dir) == os.path.join(train_dir, "ckpt-2")


def test_saved_config_continues_the_run_and_keeps_the_label_names(data, tmp_path):
  """Label names are read once, into config.json; `train.py <train_dir>/config.json
  --number_of_steps=N` then continues that run with every setting it saved."""
  names = tmp_path / "names.txt"
  names.write_text("cat\ndog\nbird\nfish\n")
  train_dir = str(tmp_path / "train")
  status, _ = run_main(train_args(data, train_dir, "--number_of_steps=0", "--image_summary_steps=0",
                                  f"--label_names_file={names}"))
  config_path = os.path.join(train_dir, config_files.TRAIN_CONFIG_FILE)
  with open(config_path) as f:
    assert status == 0 and json.load(f)["label_names"] == ["cat", "dog", "bird", "fish"]
  names.unlink()  # the names now live in config.json alone
  status, log = run_main([config_path, "--number_of_steps=1", "--label_names_file="])
  assert status == 0, log
  assert f"loaded ModelConfig ({len(dataclasses.fields(configs.ModelConfig))} fields) and " \
         f"TrainConfig ({len(dataclasses.fields(configs.TrainConfig))} fields) from " \
         f"{config_path}" in log
  assert f"resumed from {os.path.join(train_dir, 'ckpt-0')}" in log
  assert tf.train.latest_checkpoint(train_dir) == os.path.join(train_dir, "ckpt-1")
  with open(config_path) as f:
    saved = json.load(f)
  assert saved["label_names"] == ["cat", "dog", "bird", "fish"]
  assert (saved["model"]["label_count"], saved["model"]["target_height"],
          saved["model"]["input_tfrecord_file"], saved["train"]["number_of_steps"],
          saved["train"]["gpu_id"]) == (LABELS, 32, data, 1, "-1")


def test_nonexistent_base_network_checkpoint_is_an_error(data, tmp_path):
  missing = str(tmp_path / "no_such_dir" / "resnet_v2_50.ckpt")
  with pytest.raises(FileNotFoundError, match="no_such_dir"):
    run_main(train_args(data, tmp_path / "train", "--number_of_steps=1",
                        f"--base_network_checkpoint={missing}"))
  assert tf.train.latest_checkpoint(str(tmp_path / "train")) is None


def test_unknown_optimizer_is_an_error_naming_it(data, tmp_path):
  with pytest.raises(ValueError, match="Adagrad"):
    run_main(train_args(data, tmp_path / "train", "--number_of_steps=1", "--optimizer=Adagrad"))
  with pytest.raises(ValueError, match="'adam'"):  # names are exact
    optimizers.make_optimizer(configs.TrainConfig(optimizer="adam"), [])


@pytest.mark.slow
def test_sigterm_saves_the_current_step_and_exits_143_then_resumes(data, tmp_path):
  train_dir = str(tmp_path / "train")
  argv = train_args(data, train_dir, "--number_of_steps=100000", "--log_every_n_steps=1",
                    "--save_checkpoint_steps=0", "--save_checkpoint_secs=0",
                    "--image_summary_steps=0")
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
  status, lines = train_until_sigterm(argv, REPO, env)
  output = "".join(lines)
  assert status == 128 + signal.SIGTERM, output
  assert "received SIGTERM" in output and "Traceback" not in output, output
  assert "warning: no base_network_checkpoint" in output
  last_step = int([line for line in lines if line.startswith("step ")][-1].split(":")[0][5:])
  prefix = os.path.join(train_dir, f"ckpt-{last_step}")
  assert f"saved {prefix}" in output
  assert tf.train.latest_checkpoint(train_dir) == prefix
  assert tf.train.load_checkpoint(prefix).get_tensor(STEP_KEY) == last_step < 100000

  handler = signal.getsignal(signal.SIGTERM)
  status, log = run_main(argv + [f"--number_of_steps={last_step + 1}"])
  assert status == 0
  assert f"resumed from {prefix}" in log
  assert f"training from step {last_step} to {last_step + 1}" in log
  assert tf.train.load_checkpoint(tf.train.latest_checkpoint(train_dir)).get_tensor(
      STEP_KEY) == last_step + 1
  assert signal.getsignal(signal.SIGTERM) == handler  # main() put the handler back


# ---------------------------------------------------------------------------------------------
# Training options: the dead-unit watch's TensorBoard scalars, AdamW's refusal of L2.

@pytest.mark.slow
def test_train_py_logs_dead_units_to_tensorboard(data, tmp_path):
  train_dir = tmp_path / "train"
  status, log = run_main(train_args(data, train_dir, "--number_of_steps=2", "--head_depth=6",
                                    "--log_every_n_steps=1", "--image_summary_steps=0"))
  assert status == 0
  scalars = read_scalars(str(train_dir))
  for tag in ("head/dead_units_1", "head/dead_units_2"):
    assert sorted(scalars[tag]) == [1, 2]
    assert all(0 <= n <= 6 and n == int(n) for n in scalars[tag].values())
  assert "dead head units" in log


def test_adamw_with_l2_is_refused_in_one_line(data, tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_info:  # through errors.run, as `python train.py` runs
    errors.run(train.main, train_args(data, tmp_path / "train", "--optimizer=AdamW",
                                      "--number_of_steps=1"))
  assert exit_info.value.code == 2
  assert "--optimizer=AdamW decays the weights itself" in capsys.readouterr().err
  assert not (tmp_path / "train").exists()


# ---------------------------------------------------------------------------------------------
# pos_weight and unknown_label: config.json's record of the values, and a bad mode.

@pytest.mark.slow
def test_pos_weight_auto_trains_and_config_json_holds_the_values(pos_data, tmp_path):
  train_dir = tmp_path / "train"
  status, log = run_main(train_args(",".join(pos_data), train_dir, "--number_of_steps=1",
                                    "--pos_weight=auto", "--image_summary_steps=0"))
  assert status == 0, log
  saved = json.loads((train_dir / config_files.TRAIN_CONFIG_FILE).read_text())["train"]
  assert saved["pos_weight"] == pytest.approx([2 / 3, 4.0, 3.0, 1.0], rel=1e-12)
  assert saved["unknown_label"] == "ignore"
  assert "pos_weight=auto: label counts of 6 records" in log
  # the saved list is a valid setting: a run rebuilt from config.json uses the same values
  loaded = config_files.load_config(str(train_dir / config_files.TRAIN_CONFIG_FILE), configs.TrainConfig)
  model_config = configs.ModelConfig(label_count=LABELS)
  assert resolve_pos_weight(loaded, model_config) == saved["pos_weight"]


def logits_bias(train_dir, step):
  """my_conv_3's bias in ckpt-<step>, as the model restores it."""
  model = mlc.load_trained_model(str(train_dir / f"ckpt-{step}"), use_ema=False)[0]
  return model.head[-1].biases.numpy()


@pytest.mark.slow
def test_head_bias_prior_starts_the_logits_at_the_label_log_odds_and_a_resume_keeps_its_own(
    pos_data, tmp_path):
  train_dir = tmp_path / "train"
  tiny = "--learning_rate=1e-9"  # one step moves the bias by ~1e-9: the checkpoint shows the start
  status, log = run_main(train_args(",".join(pos_data), train_dir, "--number_of_steps=1", tiny,
                                    "--head_bias=prior", "--image_summary_steps=0"))
  assert status == 0, log
  p = np.clip([3 / 5, 1 / 5, 1 / 4, 1.0], 1e-4, 1 - 1e-4)  # pos_data's labels, by hand
  np.testing.assert_allclose(logits_bias(train_dir, 1), np.log(p / (1 - p)), atol=1e-4)
  assert "head_bias=prior: label counts of 6 records" in log
  # zero stays the original's start; a resumed run keeps its trained bias whatever head_bias says
  other = tmp_path / "zero"
  status, log = run_main(train_args(",".join(pos_data), other, "--number_of_steps=1", tiny,
                                    "--image_summary_steps=0"))
  assert status == 0 and np.abs(logits_bias(other, 1)).max() < 1e-4, log
  status, log = run_main(train_args(",".join(pos_data), other, "--number_of_steps=2", tiny,
                                    "--head_bias=prior", "--image_summary_steps=0"))
  assert status == 0 and np.abs(logits_bias(other, 2)).max() < 1e-4, log
  assert "head_bias=prior" not in log


def test_unknown_label_mode_is_refused_in_one_line_before_any_work(data, tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_info:  # through errors.run, as `python train.py` runs
    errors.run(train.main, train_args(data, tmp_path / "train", "--unknown_label=skip"))
  assert exit_info.value.code == 2
  assert "error: --unknown_label='skip': expected ignore or negative" in capsys.readouterr().err
  assert not (tmp_path / "train").exists()


# ---------------------------------------------------------------------------------------------
# A full disk, and what killed saves leave.

@pytest.mark.slow
def test_a_full_disk_is_one_line_keeps_the_last_checkpoint_and_does_not_wedge(data, tmp_path,
                                                                             capsys):
  """On a 140 MB disk one checkpoint (94 MB) fits and two do not. The disk full when config.json
  is rewritten, then when the next checkpoint is saved: each time one line naming the folder and
  the space needed against what is free, no partial file left (config.json's temp, ckpt-2_temp/,
  ckpt-2.*), the last good checkpoint named in `checkpoint`. A rerun with room resumes, and
  removes and names what killed saves left. (A real tmpfs where root can mount one, else the
  same failures faked.)"""
  disk = tmp_path / "disk"
  train_dir = disk / "train"
  argv = train_args(data, train_dir, "--image_summary_steps=0", "--save_checkpoint_steps=0",
                    "--save_checkpoint_secs=0")
  with small_disk(disk, "140m") as mounted:
    assert run_script_main(capsys, train.main, argv + ["--number_of_steps=1"])[0] == 0
    config = (train_dir / config_files.TRAIN_CONFIG_FILE).read_bytes()
    first = str(train_dir / "ckpt-1")

    with pytest.MonkeyPatch.context() as patch:  # 1. no room for config.json
      filler = fill_disk(str(disk)) if mounted else fake_full_disk(patch)
      status, _, err = run_script_main(capsys, train.main, argv + ["--number_of_steps=2"])
    assert status == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"error: no space left on device in {train_dir}: config.json needs "
                          ) and " free; " in err, err
    assert (train_dir / config_files.TRAIN_CONFIG_FILE).read_bytes() == config  # the old one, intact
    assert checkpoints.leftovers(str(train_dir)) == []
    assert tf.train.latest_checkpoint(str(train_dir)) == first
    if mounted:
      os.remove(filler)

    with pytest.MonkeyPatch.context() as patch:  # 2. no room for ckpt-2
      if not mounted:
        fake_full_checkpoint_save(patch)
      status, out, err = run_script_main(capsys, train.main, argv + ["--number_of_steps=2"])
    assert status == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert "step 2: loss" in out and f"resumed from {first}" in out
    needed, free = re.search(r"a checkpoint needs ([\d.]+) MiB, ([\d.]+ [KMG]?i?B) free",
                             err).groups()
    on_disk = sum(os.path.getsize(p) for p in glob.glob(first + ".*"))
    assert float(needed) * 2**20 == pytest.approx(on_disk, rel=0.01)  # ckpt-1's size
    assert err.startswith(f"error: no space left on device in {train_dir}: a checkpoint needs "
                          ), err
    if mounted:
      assert free.endswith(" MiB") and float(free[:-4]) < float(needed)
    assert ("free; the last good checkpoint, ckpt-1, is intact: free some space and rerun to "
            "resume from it") in err, err
    assert tf.train.latest_checkpoint(str(train_dir)) == first
    assert tf.train.load_checkpoint(first).get_tensor(STEP_KEY) == 1
    assert checkpoints.leftovers(str(train_dir)) == []
    assert not glob.glob(str(train_dir / "ckpt-2*"))

    # 3. Room again (the run is not wedged); leftovers of killed saves are removed and named.
    (train_dir / "ckpt-7_temp").mkdir()
    (train_dir / "ckpt-7_temp" / "part-00000-of-00001.data-00000-of-00001.tempstate9").write_bytes(
        b"\0" * 100)
    stale = [".config.json.4242-0123abcd.tmp", ".config-ab12cd34.tmp",
             "checkpoint.tmp" + "0123456789abcdef" * 2]
    for name in stale:
      (train_dir / name).write_text("partial")
    status, out, err = run_script_main(capsys, train.main, argv + ["--number_of_steps=1"])
    assert status == 0, err
    for name in ["ckpt-7_temp", *stale]:
      assert f"removed {train_dir / name}: left by a save that was killed or failed" in out
    assert checkpoints.leftovers(str(train_dir)) == []
    assert f"resumed from {first}" in out and "training from step 1 to 1" in out


# ---------------------------------------------------------------------------------------------
# Transfer from a run of our own.

@pytest.fixture(scope="module")
def source_run(data, tmp_path_factory):
  """3 steps from scratch, the whole net trained, EMA on: the run a new label set starts from."""
  train_dir = tmp_path_factory.mktemp("source") / "train"
  with pytest.MonkeyPatch.context() as patch:
    spy = RestoreSpy(patch)
    status, _ = run_main(train_args(data, train_dir, "--train_base_network=true",
                                    "--ema_decay=0.5", "--number_of_steps=3",
                                    "--image_summary_steps=0"))
  assert status == 0
  ckpt = spy.checkpoint
  model = ckpt.model
  # What the backbone must receive: the moving average of each trained variable, and the
  # moving batch-norm statistics as they are (they are not averaged).
  averaged = {v.name: s.numpy() for v, s in zip(ckpt.ema._variables, ckpt.ema.shadows)}
  want = {v.name: averaged.get(v.name, v.numpy()) for v in model.backbone.variables}
  return dict(train_dir=str(train_dir), want=want)


@pytest.mark.slow
def test_transfer_trains_a_new_head_on_a_frozen_backbone_from_our_run(source_run, tmp_path):
  """A new label set (3 labels, head_depth 8) from the source run's train dir, on the default
  frozen path: the backbone equals the source's (EMA) weights after the restore and after
  training, and the new head's loss falls."""
  labels = np.random.default_rng(5).integers(0, 2, (16, 3))
  new_data = write_records(tmp_path / "new.tfrecord", labels, seed=9)
  train_dir = tmp_path / "new"
  args = train_args(new_data, train_dir, "--number_of_steps=8", "--log_every_n_steps=1",
                    "--image_summary_steps=0", "--head_depth=8", "--augmentation=none",
                    "--batch_size=16", "--learning_rate=0.01",
                    f"--base_network_checkpoint={source_run['train_dir']}")
  args[0] = "--label_count=3"
  with pytest.MonkeyPatch.context() as patch:
    spy = RestoreSpy(patch)
    status, log = run_main(args)
  assert status == 0
  assert "restored the backbone (270 resnet_v2_50 variables, its moving-average weights)" in log
  assert "step 3 of a run with 4 labels" in log
  model = spy.checkpoint.model
  after_restore = dict(zip((v.name for v in model.variables), spy.model_after_restore))
  for v in model.backbone.variables:
    np.testing.assert_array_equal(after_restore[v.name], source_run["want"][v.name], v.name)
    np.testing.assert_array_equal(v.numpy(), source_run["want"][v.name], v.name)
  losses = [float(x) for x in re.findall(r"classification ([0-9.]+)", log)]
  assert len(losses) == 8
  assert min(losses[-3:]) < losses[0] - 0.02, losses


@pytest.mark.slow
@pytest.mark.parametrize("form", ["prefix", "best_dir"])
def test_transfer_takes_a_prefix_or_a_best_dir(source_run, tmp_path, form):
  prefix = tf.train.latest_checkpoint(source_run["train_dir"])
  path = prefix
  if form == "best_dir":  # evaluate.py's best/: the checkpoint files and a config.json copy
    path = str(tmp_path / "best")
    shutil.copytree(source_run["train_dir"], path)
  model = mlc.MultiLabelClassificationModel(configs.ModelConfig(
      label_count=2, target_height=32, target_width=32, head_depth=5))
  head_before = snapshot(head_variables(model))
  message = mlc.restore_backbone(model, path)
  assert "restored the backbone (270 resnet_v2_50 variables" in message
  for v in model.backbone.variables:
    np.testing.assert_array_equal(v.numpy(), source_run["want"][v.name], v.name)
  for before, v in zip(head_before, head_variables(model)):
    np.testing.assert_array_equal(v.numpy(), before, v.name)


@pytest.mark.slow
def test_transfer_across_backbones_is_an_error_naming_both(source_run):
  model = mlc.MultiLabelClassificationModel(configs.ModelConfig(
      label_count=2, target_height=32, target_width=32, backbone="resnet_v2_101"))
  with pytest.raises(ValueError, match="is a resnet_v2_50 run; this model's backbone is "
                                       "resnet_v2_101"):
    mlc.restore_backbone(model, source_run["train_dir"])
