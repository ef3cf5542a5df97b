"""Trains the multi-label model from TFRecords, with checkpoints and TensorBoard summaries.

Run it beside evaluate.py, and watch both in TensorBoard:

    python train.py --label_count=35 --input_tfrecord_file='data/train-*' --train_dir=runs/coco \\
        --base_network_checkpoint=resnet_v2_50.ckpt
    python evaluate.py --checkpoint_dir=runs/coco --input_tfrecord_file='data/eval-*'
    tensorboard --logdir runs/coco

On an empty train_dir the backbone starts from `base_network_checkpoint`; on a train_dir with
checkpoints, training resumes from the latest (weights, optimiser state, global step). Ctrl-C or
SIGTERM saves a checkpoint before exiting. A full disk stops it with one line (the space a
checkpoint needs, and what is free), the last good checkpoint intact; at start-up it removes what
a killed or failed save left in train_dir. With --data_service_address=grpc://host:port
the decoding and augmentation run on tf.data service workers (data_service.py).

What else ends in one line (README.md, "When something fails midway"): a second train.py on the
same train_dir (a lock); a resume whose settings would change the variables; a loss, gradient
norm or weight that is not finite (nothing of it is saved); a tf.data service that gives no
batch for --data_service_timeout_secs (after a save). A damaged checkpoint is skipped for the
next newest.
"""

import dataclasses
import os
import shutil

# GPU kernel launches get their own threads, so tf.data's threads don't delay them. Read when
# TensorFlow initialises the GPUs, so set before importing it; no effect on a CPU.
os.environ.setdefault("TF_GPU_THREAD_MODE", "gpu_private")
import multilabel.startup  # noqa: E402,F401 -- before TensorFlow: its start-up lines filtered
import tensorflow as tf  # noqa: E402

import configs
from multi_label_classification_model import MultiLabelClassificationModel, restore_backbone
from multilabel import (arguments, checkpoints, config_files, errors, locks, runtime, summaries,
                        textfiles)
from multilabel.data import input_service, records
from multilabel.data.preprocessing import build_dataset
from multilabel.runtime import log
from multilabel.training import optimizers
from multilabel.training.loop import (CheckpointTrigger, DivergenceGuard, StopFlag, WindowLog,
                                      finish, make_manager, step_runner,
                                      train_dir_or_new_temp_dir, train_loop)
from multilabel.training.pos_weight import label_counts, prior_log_odds, resolve_pos_weight
from multilabel.training.resume import check_resume_settings
from multilabel.training.train_step import make_train_step


def restore_or_start(manager, model, model_config, train_dir):
  """Resumes from the newest checkpoint of train_dir that restores, else restores the backbone
  for a first run. Multi-worker runs pass the chief's train_dir, so every worker resumes alike.
  Returns True if it resumed.

  Each newer checkpoint it skips (damaged, missing) is named in one line, and the chief drops
  them from train_dir's state file, so that the one it resumed from is the latest again (their
  files stay; a save of the same step replaces them). None restoring is a DataError."""
  if checkpoints.listed(train_dir):
    prefix, skipped = checkpoints.restore_newest_good(manager.checkpoint, train_dir)
    for _, line in skipped:
      log(f"skipped {line}")
    names = ", ".join(os.path.basename(p) for p, _ in skipped)
    if prefix is None:
      raise errors.DataError(f"{train_dir}: no checkpoint restores ({names}; why: the lines "
                             "above): move them and its `checkpoint` file elsewhere to train from "
                             "the start, or give a new --train_dir")
    if skipped and manager.directory == train_dir:
      checkpoints.forget(train_dir, [p for p, _ in skipped])
      log(f"{os.path.join(train_dir, 'checkpoint')} no longer lists {names} (the files stay)")
    log(f"resumed from {prefix}; base_network_checkpoint is ignored")
    return True
  path = model_config.base_network_checkpoint
  if not path:
    log("warning: no base_network_checkpoint: training the backbone from scratch")
    return False
  if not (tf.io.gfile.exists(path) or tf.io.gfile.exists(path + ".index")):
    raise errors.MissingFileError(f"base_network_checkpoint={path!r} does not exist")
  log(restore_backbone(model, path))
  return False


def main(argv):
  model_config = configs.ModelConfig()  # edit here, e.g. label_count=35, input_tfrecord_file=...
  train_config = configs.TrainConfig()  # e.g. train_dir="runs/coco", number_of_steps=20000
  arguments.parse_overrides(argv, model_config, train_config, usage=__doc__)
  check_resume_settings(model_config, train_config)  # before anything is built or written
  if train_config.data_service_address:
    input_service.parse_address(train_config.data_service_address)
  records.expand_file_spec(model_config.input_tfrecord_file)  # missing records: an error now
  service = (input_service.connect(train_config.data_service_address,
                                   train_config.data_service_timeout_secs, log)
             if train_config.data_service_address else None)  # a dead dispatcher: an error now
  # Given once, here: stored in config.json, where evaluate, calibration, inference and the
  # SavedModel find them. A resumed run without the flag keeps the names stored before.
  label_names = textfiles.load_label_names(model_config.label_names_file,
                                             model_config.label_count,
                                             run_dir=train_config.train_dir)
  if train_config.seed >= 0:
    tf.random.set_seed(train_config.seed)

  runtime.select_devices(train_config.gpu_id)
  strategy = runtime.make_strategy(train_config.strategy)
  # A record with another label count would stop training at its first batch: read the first
  # record of each file now (after the devices and the strategy, which must come before the
  # first TensorFlow op), before anything is built or written.
  files = records.check_label_count(model_config.input_tfrecord_file, model_config.label_count,
                                    model_config.image_label_key)
  # One trainer per train_dir, from before its first write to the end (two would overwrite each
  # other's checkpoints and state file); workers other than the chief write elsewhere.
  lock = (locks.hold_train_dir(train_config.train_dir, log) if runtime.is_chief(strategy)
          else None)
  try:
    return train(model_config, train_config, strategy, service, label_names, files)
  finally:
    if lock:
      lock.release()


def train(model_config, train_config, strategy, service, label_names, files):
  """Builds, restores and trains, as main() set up. Returns the exit status."""
  log(f"{strategy.num_replicas_in_sync} replica(s); global batch "
      f"{model_config.batch_size * strategy.num_replicas_in_sync}")
  # one labels-only pass over the records, shared with head_bias=prior (which a resumed run skips)
  counts = label_counts(train_config, model_config) if train_config.pos_weight == "auto" else None
  pos_weight = resolve_pos_weight(train_config, model_config, counts)  # None = off
  with strategy.scope():
    model = MultiLabelClassificationModel(model_config)
    optimizer = optimizers.make_optimizer(
        train_config, model.trainable_variables,
        loss_scale=model_config.precision == "mixed_float16",
        weight_decay=model_config.weight_decay, decayed=model.conv_weights)
    ema = (optimizers.ExponentialMovingAverage(model.trainable_variables, train_config.ema_decay)
           if train_config.ema_decay > 0 else None)
  checkpoint = checkpoints.make_checkpoint(model, optimizer, ema)
  if runtime.is_chief(strategy):  # what a killed or failed save left can keep a disk full
    for path in checkpoints.remove_leftovers(train_config.train_dir):
      log(f"removed {path}: left by a save that was killed or failed")
  save_dir = train_dir_or_new_temp_dir(strategy, train_config.train_dir)
  # Every worker resumes from the chief's train_dir (shared storage across machines), not from
  # its own temp dir, or the workers would start from different states and step counts.
  resumed = restore_or_start(make_manager(checkpoint, save_dir, train_config), model,
                             model_config, train_config.train_dir)
  # made again: the restore may have dropped damaged checkpoints from the state file, which a
  # CheckpointManager reads only when it is made
  manager = make_manager(checkpoint, save_dir, train_config)
  if train_config.head_bias == "prior" and not resumed:
    model.head[-1].biases.assign(prior_log_odds(train_config, model_config, counts))
  if ema is not None and not resumed:
    ema.reset()  # the shadows were copied before the backbone was restored
  if runtime.is_chief(strategy):
    # config.json records the pos_weight values used, not the "auto" or file that gave them
    saved = dataclasses.replace(train_config, pos_weight=pos_weight) if pos_weight else train_config
    config_files.save_configs(os.path.join(train_config.train_dir, config_files.TRAIN_CONFIG_FILE),
                              model_config, saved, label_names=label_names)

  seed = train_config.seed if train_config.seed >= 0 else None
  # tf.distribute strategies copy batches to their devices; on one GPU the pipeline does it.
  single_gpu = train_config.strategy == "default" and tf.config.list_logical_devices("GPU")
  if service:  # every worker of a multi-worker run joins this job and takes its own elements
    service = service.job(input_service.train_job_name(train_config.train_dir,
                                                       int(optimizer.iterations.numpy())))
  # Each input pipeline makes whole batches of batch_size, one per replica in turn.
  dataset = strategy.distribute_datasets_from_function(
      lambda context: build_dataset(model_config, "train", input_context=context, seed=seed,
                                    device="/gpu:0" if single_gpu else None, service=service))
  watch = input_service.ElementWatch(train_config.data_service_timeout_secs) if service else None
  step = make_train_step(model, optimizer, ema, strategy, model_config, train_config, pos_weight,
                         element_watch=watch)
  writer = tf.summary.create_file_writer(save_dir)
  if runtime.is_chief(strategy):  # the run's row in TensorBoard's HParams table
    summaries.write_hparams(writer, os.path.basename(os.path.abspath(train_config.train_dir)),
                            model_config, train_config)
  stop = StopFlag()
  guard = DivergenceGuard(model, ema, manager, model_config, train_config)
  trigger = CheckpointTrigger(manager, strategy, train_config, guard)
  try:
    iterator = iter(dataset)
    window_log = WindowLog(writer, strategy, model_config, train_config,
                           optimizers.learning_rate_schedule(train_config), guard)
    step_no = train_loop(step_runner(step, iterator, watch, stop), iterator, optimizer.iterations,
                         train_config.number_of_steps, window_log, trigger, stop)
    writer.flush()
    finish(step_no, trigger, strategy, train_config, stop)
  except tf.errors.DataLossError as e:  # a cut-off or corrupt record: which, and what to do
    last = manager.latest_checkpoint
    raise records.damage_error(files, e, "; training stopped, and resumes from " + (
        os.path.basename(last) if last else "the start") + " once the records are mended") from None
  finally:
    stop.restore()
    if save_dir != train_config.train_dir:  # a non-chief worker's temp dir
      shutil.rmtree(save_dir, ignore_errors=True)
  return 128 + stop.signal if stop.signal else 0


if __name__ == "__main__":
  errors.run(main)
