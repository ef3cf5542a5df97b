"""Run configuration: one dataclass per stage, and the one override helper every script uses.

The defaults are the original TF1 toolkit's. The documented way to configure a run is to edit the
config objects at the top of a script's `main()`; `--field=value` on the command line overrides
any field of that script's configs (a name two configs share, such as `batch_size`, sets both):

    python train.py --label_count=10 --input_tfrecord_file=data/train.tfrecord --train_dir=runs/a
    python evaluate.py --checkpoint_dir=runs/a --run_once=true
"""

import dataclasses
import json
import os
import sys
import tempfile
import typing
from dataclasses import dataclass


@dataclass
class CreateTFRecordConfig:
  """create_tfrecord.py: image folder + list/label files -> TFRecords."""
  image_dir: str = ""  # folder the names in imglist_file are relative to
  imglist_file: str = ""  # "name.jpg 3" per line; 3 = number of 1s in the matching label row
  imglabel_file: str = ""  # "1 0 1 ..." per line, one 0/1 per label
  output_file: str = ""  # output path; with num_shards > 1, <output_file>-0000i-of-0000N
  gpu: str = ""  # kept for the original's CLI; preparing data needs no GPU and ignores it
  num_shards: int = 1  # output files; use >= the number of training workers
  seed: int = 0  # shuffle seed for the record order; -1 keeps the list order
  num_workers: int = 0  # image decode/verify processes; 0 = one per CPU core
  max_side: int = 0  # >0: downscale so the longer side is at most this (pixels); 0 = keep size
  jpeg_quality: int = 95  # quality used when an image has to be re-encoded as JPEG


@dataclass
class CocoConfig:
  """coco_to_image_list.py: COCO instances JSON -> the original's image_list and image_label."""
  annotations: str = ""  # COCO instances JSON, e.g. annotations/instances_train2014.json
  output_dir: str = ""  # image_list, image_label and label_names.txt are written here
  categories: str = ""  # "name,name,..." keeps these, in this order; "" = all, by category id
  drop_empty: bool = False  # drop images without a kept category (default: an all-0 row)


@dataclass
class ReadTFRecordConfig:
  """read_tfrecord.py: statistics, verification and sample dumps of TFRecords."""
  data_path: str = ""  # one file, a comma-separated list, or a glob
  dump_dir: str = ""  # if set, write num_samples sample images here
  num_samples: int = 10  # how many sample images to dump
  image_path_key: str = "image_path"  # context key of the image path
  image_data_key: str = "image_data"  # context key of the encoded JPEG
  image_label_key: str = "image_label"  # feature-list key of the 0/1 labels


@dataclass
class DemoDataConfig:
  """make_demo_data.py: the multi-label digits image set built from sklearn's load_digits."""
  output_dir: str = "demo_out/data"  # <output_dir>/<split>/{images/,image_list,image_label}
  num_train: int = 3000  # train images (0 = skip the split, else >= 10)
  num_eval: int = 500  # eval images (0 = skip the split, else >= 10)
  num_test: int = 200  # test images (0 = skip the split, else >= 10)
  image_size: int = 64  # square image side (pixels), >= 32
  max_digits: int = 4  # each image holds 1..max_digits distinct digits (at most 4)
  min_digit: float = 0.25  # smallest digit side, as a fraction of image_size
  max_digit: float = 0.44  # largest digit side, as a fraction of image_size (<= 0.5, a quadrant)
  seed: int = 0  # seed for the source-digit split and the image generation


@dataclass
class ModelConfig:
  """The network, its preprocessing and its input pipeline (multi_label_classification_model.py)."""
  label_count: int = 0  # number of labels (columns of image_label); must be set
  backbone: str = "resnet_v2_50"  # resnet_v2_50 | resnet_v2_101 | resnet_v2_152 | resnet_v2_200
  base_network_checkpoint: str = ""  # first run: slim .ckpt, or a train dir/best//prefix of ours
  head_depth: int = 0  # channels of my_conv_1/_2; 0 = label_count (the original); 256 won't die
  augmentation: str = "seed"  # seed (original) | crop_flip | flip | none | randaugment (README)
  input_tfrecord_file: str = ""  # TFRecords: one file, a comma-separated list, or a glob
  target_height: int = 224  # network input height (pixels); a multiple of 32
  target_width: int = 224  # network input width (pixels); a multiple of 32
  resize_height: int = 255  # train: resize to this before the random crop to target
  resize_width: int = 255  # train: resize to this before the random crop to target
  use_regularizer: bool = True  # L2 weight decay on the head (and the backbone when fine-tuning)
  weight_decay: float = 1e-4  # L2 factor: loss += weight_decay * sum(w**2) / 2; AdamW: its decay
  batch_size: int = 32  # images per batch (per replica under tf.distribute)
  train_base_network: bool = False  # False = frozen backbone (moving BN statistics, no gradients)
  batch_norm_decay: float = 0.997  # slim's BN moving-average decay; lower it for short scratch runs
  batch_norm_epsilon: float = 1e-5  # slim's BN epsilon
  image_path_key: str = "image_path"  # context key of the image path in the records
  image_data_key: str = "image_data"  # context key of the encoded JPEG in the records
  image_label_key: str = "image_label"  # feature-list key of the 0/1 labels in the records
  num_parallel_calls: int = -1  # tf.data map parallelism; -1 = AUTOTUNE
  shuffle_buffer: int = 1000  # records in the train shuffle buffer
  precision: str = "float32"  # float32 | mixed_bfloat16 | mixed_float16 (compute dtype)


@dataclass
class TrainConfig:
  """train.py: optimisation, checkpoints and summaries."""
  train_dir: str = "train_dir"  # checkpoints, config.json and TensorBoard summaries go here
  gpu_id: str = "0"  # CUDA_VISIBLE_DEVICES for training; "" = all visible, "-1" = CPU only
  learning_rate: float = 0.001  # initial learning rate (the peak, after any warmup)
  lr_schedule: str = "exponential"  # exponential (the original's) | cosine: to 0 at the last step
  warmup_steps: int = 0  # cosine only: rise linearly from 0 to learning_rate over these steps
  decay_steps: int = 1000  # exponential decay period (steps)
  decay_rate: float = 0.9  # learning rate multiplier per decay period
  staircase: bool = True  # decay in whole periods rather than continuously
  optimizer: str = "Adam"  # Adam | SGD | Momentum | RMSProp | AdamW (needs use_regularizer=false)
  momentum: float = 0.9  # for Momentum and RMSProp
  clip_gradients: float = 5.0  # global-norm gradient clipping; 0 = off
  max_to_keep: int = 20  # recent checkpoints kept
  keep_checkpoint_every_n_hours: float = 0.2  # also keep one checkpoint per this many hours
  number_of_steps: int = 100000  # stop at this global step; rerun with more to continue
  save_checkpoint_steps: int = 500  # save every this many steps (0 = use save_checkpoint_secs)
  save_checkpoint_secs: int = 600  # save at least this often (seconds); 0 = off
  log_every_n_steps: int = 10  # log line and scalar summaries every this many steps
  image_summary_steps: int = 500  # write a few augmented input images every this many steps
  ema_decay: float = 0.0  # exponential moving average of the weights; 0 = off, e.g. 0.999
  loss: str = "sigmoid"  # sigmoid | focal | asymmetric
  focal_gamma: float = 2.0  # focal loss focusing parameter (Lin et al. 2017)
  gamma_neg: float = 4.0  # asymmetric loss: focusing for negatives (Ridnik et al. 2021)
  gamma_pos: float = 0.0  # asymmetric loss: focusing for positives
  asl_clip: float = 0.05  # asymmetric loss: probability margin shifted off negatives
  unknown_label: str = "ignore"  # -1 labels: ignore (loss = mean of the known entries) | negative
  pos_weight: str = ""  # per-label positive-term weight: "" off | auto (train neg/pos) | a file
  xla: bool = False  # compile the train step with XLA (jit_compile)
  strategy: str = "default"  # default | mirrored | multi_worker (tf.distribute)
  seed: int = 0  # seed for weight init and shuffling; -1 = nondeterministic


@dataclass
class EvalConfig:
  """evaluate.py: the evaluator that runs beside train.py."""
  checkpoint_dir: str = "train_dir"  # the train_dir to watch
  eval_dir: str = ""  # summaries, metrics.jsonl and best/; "" = <checkpoint_dir>/eval
  input_tfrecord_file: str = ""  # eval TFRecords (file, comma list or glob); required
  batch_size: int = 32  # images per eval batch
  min_global_step: int = 200  # skip checkpoints before this step
  eval_interval_secs: int = 30  # poll for new checkpoints this often (seconds)
  gpu_id: str = "-1"  # CUDA_VISIBLE_DEVICES; -1 = CPU, so the evaluator doesn't take the GPU
  run_once: bool = False  # evaluate one checkpoint (latest or checkpoint_path) and exit
  checkpoint_path: str = ""  # with run_once: this checkpoint prefix instead of the latest
  max_evaluations: int = 0  # exit after this many evaluations; 0 = no limit
  timeout_secs: int = 0  # exit when no new checkpoint came for this long (seconds); 0 = never
  score_file: str = ""  # if set, write the eval scores here (%.6f, one row per image)
  label_file: str = ""  # if set, write the eval labels here (image_label format)
  top_k: int = 3  # k of the top-k metrics (CP/CR/CF1/OP/OR/OF1 at top-k)
  label_names_file: str = ""  # one label name per line, for tables and TensorBoard; "" = label_<i>


@dataclass
class InferenceConfig:
  """inference.py: 10-crop scoring of test images."""
  checkpoint_path: str = "train_dir"  # a train dir (latest), an eval best/ dir, or a prefix
  inference_dir: str = "inference"  # outputs go here
  inference_file_name: str = "scores.txt"  # the score file (np.savetxt, %.6f, one row per image)
  gpu_id: str = "0"  # CUDA_VISIBLE_DEVICES; "-1" = CPU
  image_list_file: str = ""  # plain list of paths, or an original-format image_list
  image_dir: str = ""  # image_list names are relative to this; alone: every image in it
  resize_height: int = 290  # resize before the 10 crops; 0 = from the train config
  resize_width: int = 290  # resize before the 10 crops; 0 = from the train config
  aggregation: str = "mean"  # mean | max over the 10 crops
  batch_size: int = 8  # images per batch (x10 crops through the network)
  xla: str = "auto"  # auto (time both scorers on the first batch, keep the faster) | true | false
  thresholds_file: str = ""  # per-label thresholds from threshold_calibration.py
  threshold: float = 0.5  # single threshold when no thresholds_file is given
  label_names_file: str = ""  # one label name per line; default label_<i>
  export_saved_model: str = ""  # if set, also write a serving SavedModel to this folder


@dataclass
class CalibrationConfig:
  """threshold_calibration.py: per-label thresholds from eval scores."""
  label_file: str = ""  # eval-set labels (image_label format)
  score_file: str = ""  # eval-set scores (evaluate.py --score_file)
  method: str = "roc"  # roc (nearest (0,1), the original) | f1 | youden
  output_file: str = ""  # write the thresholds here, one per line
  apply_to: str = ""  # a test score file to threshold
  predictions_file: str = ""  # where the 0/1 predictions for apply_to go (image_label format)
  apply_labels: str = ""  # test labels for apply_to, to report test-set metrics
  label_names_file: str = ""  # one label name per line, for the tables; "" = label_<i>


# ---------------------------------------------------------------------------------------------
# The override helper.

class ConfigError(SystemExit):
  """A bad command-line override: exits with status 2 after printing the message."""

  def __init__(self, message):
    self.message = message
    print(f"error: {message}", file=sys.stderr)
    super().__init__(2)


_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def _convert(name, text, typ):
  """Converts command-line `text` to the field type `typ`, or raises ConfigError naming it."""
  if typ is bool:
    if text.lower() in _TRUE:
      return True
    if text.lower() in _FALSE:
      return False
    raise ConfigError(f"--{name}={text!r}: expected a boolean (true/false/1/0)")
  if typ in (int, float):
    try:
      return typ(text)
    except ValueError:
      raise ConfigError(f"--{name}={text!r}: expected {typ.__name__}") from None
  if typ is str:
    return text
  raise ConfigError(f"--{name}: unsupported field type {typ!r}")


def parse_overrides(argv, *configs):
  """Applies `--field=value` (or `--field value`) arguments to the given config objects.

  A field name that several configs share sets all of them. Unknown fields, missing values and
  values of the wrong type exit with status 2 and a message naming them. Each override is printed.

  Args:
    argv: the arguments, e.g. sys.argv[1:].
    *configs: dataclass instances, modified in place.
  Returns:
    The configs, for chaining.
  """
  args = list(argv)
  while args:
    arg = args.pop(0)
    if not arg.startswith("--"):
      raise ConfigError(f"unexpected argument {arg!r}: use --field=value")
    name, eq, text = arg[2:].partition("=")
    if not eq:
      if not args:
        raise ConfigError(f"--{name} needs a value: use --{name}=value")
      text = args.pop(0)
    targets = [c for c in configs if name in {f.name for f in dataclasses.fields(c)}]
    if not targets:
      known = sorted({f.name for c in configs for f in dataclasses.fields(c)})
      raise ConfigError(f"unknown field --{name}; known fields: {', '.join(known)}")
    for cfg in targets:
      typ = typing.get_type_hints(type(cfg))[name]
      value = _convert(name, text, typ)
      setattr(cfg, name, value)
      print(f"override {type(cfg).__name__}.{name} = {value!r}")
  return configs


def save_configs(path, **configs):
  """Writes {"model": {...}, "train": {...}} style JSON atomically (temp file + rename)."""
  data = {key: dataclasses.asdict(cfg) for key, cfg in configs.items()}
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, prefix=".config-", suffix=".tmp")
  with os.fdopen(fd, "w") as f:
    json.dump(data, f, indent=2, sort_keys=True)
  os.replace(tmp, path)


def load_config(path, key, cls):
  """Reads one saved config section back as a `cls` instance.

  Fields the file lacks keep their defaults (older runs); fields the class lacks are an error,
  since they would silently change meaning.
  """
  if not os.path.exists(path):
    raise FileNotFoundError(f"{path}: no saved config; was this directory written by train.py?")
  with open(path) as f:
    data = json.load(f)
  if key not in data:
    raise KeyError(f"{path}: no {key!r} section (has {sorted(data)})")
  known = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(set(data[key]) - known)
  if unknown:
    raise ValueError(f"{path}: unknown {cls.__name__} fields {unknown}")
  return cls(**data[key])
