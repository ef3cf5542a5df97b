"""Run configuration: one dataclass per stage, and the one override helper every script uses.

The defaults are the original TF1 toolkit's. The documented way to configure a run is to edit the
config objects at the top of a script's `main()`; `--field=value` on the command line overrides
any field of that script's configs (a name two configs share, such as `batch_size`, sets both),
and a .json argument (a saved config.json, or a hand-written subset) loads before the flags:

    python train.py --label_count=10 --input_tfrecord_file=data/train.tfrecord --train_dir=runs/a
    python train.py runs/a/config.json --number_of_steps=40000   # continue runs/a
    python evaluate.py --checkpoint_dir=runs/a --run_once=true
    python evaluate.py --help

Every field's one-line comment here is also its --help text (field_comments reads this file), so
they are written in one place. That is why the helper lives beside the dataclasses, and why this
file is longer than ~300 lines.
"""

import ast
import dataclasses
import difflib
import io
import json
import math
import os
import tokenize
import typing
from dataclasses import dataclass

import fileio
from errors import ConfigError, MissingFileError


@dataclass
class CreateTFRecordConfig:
  """create_tfrecord.py: image folder + list/label files -> TFRecords."""
  image_dir: str = ""  # folder the names in imglist_file are relative to
  imglist_file: str = ""  # "name.jpg 3" per line; 3 = number of 1s in the matching label row
  imglabel_file: str = ""  # "1 0 1 ..." per line, one 0/1 per label; -1 = unknown (not checked)
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
  num_train: int = 24000  # train images (0 = skip the split, else >= 10)
  num_eval: int = 500  # eval images (0 = skip the split, else >= 10)
  num_test: int = 200  # test images (0 = skip the split, else >= 10)
  image_size: int = 64  # square image side (pixels), >= 32
  max_digits: int = 4  # each image holds 1..max_digits distinct digits (at most 4)
  min_digit: float = 0.4  # smallest digit side, as a fraction of image_size
  max_digit: float = 0.5  # largest digit side, as a fraction of image_size (<= 0.5, a quadrant)
  colours: str = "mono"  # mono (light on dark) | random (contrasting colours, random backgrounds)
  seed: int = 0  # seed for the source-digit split and the image generation


@dataclass
class ModelConfig:
  """The network (multi_label_classification_model.py), its input pipeline (preprocessing.py)."""
  label_count: int = 0  # number of labels (columns of image_label); must be set
  label_names_file: str = ""  # one name per line, kept in config.json; "" = as kept, else label_<i>
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
  data_service_address: str = ""  # grpc://host:port: decode/augment on tf.data service workers
  data_service_timeout_secs: int = 30  # wait this long for the service's dispatcher to answer (s)


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
  label_names_file: str = ""  # one name per line; "" = the names in the train dir's config.json
  data_service_address: str = ""  # grpc://host:port: decode on tf.data service workers (any order)
  data_service_timeout_secs: int = 30  # wait this long for the service's dispatcher to answer (s)


@dataclass
class InferenceConfig:
  """inference.py: 10-crop scoring of test images."""
  checkpoint_path: str = "train_dir"  # a train dir (latest), an eval best/ dir, or a prefix
  inference_dir: str = "inference"  # outputs go here
  inference_file_name: str = "scores.txt"  # the score file (np.savetxt, %.6f, one row per image)
  gpu_id: str = "0"  # CUDA_VISIBLE_DEVICES; "-1" = CPU
  image_list_file: str = ""  # plain list of paths, or an original-format image_list
  image_dir: str = ""  # image_list names are relative to this; alone: every image in it
  resize_height: int = 0  # resize before the 10 crops; 0 = target * 290/224 (290 at 224, 83 at 64)
  resize_width: int = 0  # resize before the 10 crops; 0 = target * 290/224 (290 at 224, 83 at 64)
  aggregation: str = "mean"  # mean | max over the 10 crops
  views: str = "auto"  # ten (the 10 crops) | one (eval's resize) | auto: ten if trained on crops
  batch_size: int = 8  # images per batch (x10 crops through the network)
  xla: str = "auto"  # auto (time both scorers on the first batch, keep the faster) | true | false
  thresholds_file: str = ""  # per-label thresholds from threshold_calibration.py
  threshold: float = 0.5  # single threshold when no thresholds_file is given
  label_names_file: str = ""  # one name per line; "" = the names in the train dir's config.json
  export_saved_model: str = ""  # if set, also write a serving SavedModel to this folder
  strict: bool = False  # true: exit 1 if any image is unreadable (after writing the outputs)


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
  label_names_file: str = ""  # one name per line, for the tables; "" = run_dir's, else label_<i>
  run_dir: str = ""  # a train or eval dir: use the label names its config.json/eval_config.json has


@dataclass
class DataServiceConfig:
  """data_service.py: a tf.data service dispatcher or worker (train.py --data_service_address)."""
  role: str = ""  # dispatcher | worker
  port: int = 5050  # port to listen on; 0 = any free one (a second worker on a host needs another)
  dispatcher_address: str = ""  # worker: the dispatcher to register with, grpc://host:port
  worker_address: str = ""  # worker: host (or host:port) trainers reach it at; "" = this host
  work_dir: str = ""  # dispatcher: journal its state here to recover it on restart; "" = none
  timeout_secs: int = 30  # worker: wait this long for the dispatcher to answer at the start (s)
  status_secs: float = 1.0  # print a status line this often (seconds); 0 = none


@dataclass
class ReportConfig:
  """demo/report.py: the demo's closing table."""
  out: str = "demo_out"  # the demo's output folder (demo.sh's DEMO_OUT)


@dataclass
class DeriveLabelsConfig:
  """demo/derive_labels.py: the second label set of the demo's transfer stage."""
  data: str = "demo_out/data"  # make_demo_data.py's output_dir, read
  out: str = "demo_out/data2"  # where the derived image_list/image_label/label_names.txt go


# ---------------------------------------------------------------------------------------------
# The values a field may take, checked by parse_overrides once the files and flags are applied,
# before any work: a rule is ">= n", "> n", "[a, b)", "[a, b]" or "v or <rule>". Choices (loss,
# backbone, ...) are checked by the code that owns them, still before anything is written, as
# are rules that tie fields together (make_demo_data.py's digit sizes). Every float field must
# also be finite.

VALUE_RULES = {
    CreateTFRecordConfig: {"num_shards": "[1, 100000]", "num_workers": "[0, 1024]",
                           "max_side": "[0, 1073741824]", "jpeg_quality": "[1, 100]",
                           "seed": "[-1, 9223372036854775808]"},
    ReadTFRecordConfig: {"num_samples": ">= 0"},
    DemoDataConfig: {"image_size": ">= 32"},
    ModelConfig: {"label_count": ">= 0", "head_depth": ">= 0", "resize_height": ">= 1",
                  "resize_width": ">= 1", "weight_decay": ">= 0", "batch_size": ">= 1",
                  "batch_norm_decay": "[0, 1)", "batch_norm_epsilon": "> 0",
                  "num_parallel_calls": "-1 or >= 1", "shuffle_buffer": ">= 1"},
    TrainConfig: {"learning_rate": "> 0", "warmup_steps": ">= 0", "decay_steps": ">= 1",
                  "decay_rate": "> 0", "momentum": "[0, 1)", "clip_gradients": ">= 0",
                  "max_to_keep": ">= 1", "keep_checkpoint_every_n_hours": ">= 0",
                  "number_of_steps": ">= 0", "save_checkpoint_steps": ">= 0",
                  "save_checkpoint_secs": ">= 0", "log_every_n_steps": ">= 1",
                  "image_summary_steps": ">= 0", "ema_decay": "[0, 1)", "focal_gamma": ">= 0",
                  "gamma_neg": ">= 0", "gamma_pos": ">= 0", "asl_clip": "[0, 1)",
                  "seed": ">= -1"},
    EvalConfig: {"batch_size": ">= 1", "min_global_step": ">= 0", "eval_interval_secs": ">= 0",
                 "max_evaluations": ">= 0", "timeout_secs": ">= 0", "top_k": ">= 1"},
    InferenceConfig: {"resize_height": ">= 0", "resize_width": ">= 0", "batch_size": ">= 1",
                      "threshold": "[0, 1]"},
}


def _meets(value, rule):
  """True if the number `value` meets `rule` (VALUE_RULES' forms)."""
  if " or " in rule:
    first, rest = rule.split(" or ", 1)
    return value == float(first) or _meets(value, rest)
  if rule.startswith(">="):
    return value >= float(rule[2:])
  if rule.startswith(">"):
    return value > float(rule[1:])
  low, high = (float(x) for x in rule[1:-1].split(","))
  return low <= value and (value < high if rule.endswith(")") else value <= high)


def check_values(*configs):
  """ConfigError naming the first field whose value breaks its VALUE_RULES rule, or a float
  field that is not finite (nan, inf)."""
  for cfg in configs:
    rules = VALUE_RULES.get(type(cfg), {})
    for field in dataclasses.fields(cfg):
      value, rule = getattr(cfg, field.name), rules.get(field.name)
      if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"--{field.name}={value!r}: must be a finite number")
      if rule and not _meets(value, rule):
        raise ConfigError(f"--{field.name}={value!r}: must be {'in ' * rule.startswith('[')}"
                          f"{rule}")


# ---------------------------------------------------------------------------------------------
# Config files: each config class has a section name; a run saves the sections it ran with.

SECTIONS = {"create_tfrecord": CreateTFRecordConfig, "coco": CocoConfig,
            "read_tfrecord": ReadTFRecordConfig, "demo_data": DemoDataConfig,
            "model": ModelConfig, "train": TrainConfig, "eval": EvalConfig,
            "inference": InferenceConfig, "calibration": CalibrationConfig,
            "data_service": DataServiceConfig, "report": ReportConfig,
            "derive_labels": DeriveLabelsConfig}
RECORD_SECTIONS = ("label_names", "run")  # what a run found or resolved; not read back as settings
# String settings that a run saves as the numbers it resolved them to (TrainConfig.pos_weight:
# "auto" or a file -> the list of weights used): a JSON list of numbers is read back as such.
RESOLVED_LISTS = {(TrainConfig, "pos_weight")}
CONFIG_FILES = ("config.json", "eval_config.json", "inference_config.json")  # train, eval, infer


def _read_json(path):
  """A config file's {section: {field: value}}; errors name the file (and the line)."""
  try:
    with open(path, "rb") as f:
      raw = f.read()
  except FileNotFoundError:
    raise MissingFileError(f"{path}: no such config file") from None
  except OSError as e:  # a directory, no permission
    raise ConfigError(f"{path}: cannot be read as a config file ({e.strerror})") from None
  try:
    data = json.loads(raw.decode("utf-8-sig"))
  except UnicodeDecodeError as e:  # e.g. a file cut off inside a character of a label name
    line = raw[:e.start].count(b"\n") + 1
    raise ConfigError(f"{path}:{line}: not valid JSON (not UTF-8: {e.reason} at byte "
                      f"{e.start})") from None
  except json.JSONDecodeError as e:
    raise ConfigError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
  if not isinstance(data, dict):
    raise ConfigError(f"{path}: expected a JSON object of sections, got {type(data).__name__}")
  return data


def _set_fields(path, section, values, cfg):
  """Sets cfg's fields from one section's {field: value}, checking names and JSON types."""
  if not isinstance(values, dict):
    raise ConfigError(f"{path}: section {section!r} is not a JSON object")
  types = typing.get_type_hints(type(cfg))
  for name, value in values.items():
    if name not in types:
      raise ConfigError(f"{path}: unknown field {section}.{name} ({type(cfg).__name__} has no "
                        f"field {name!r})")
    if (type(cfg), name) in RESOLVED_LISTS and isinstance(value, list) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
      setattr(cfg, name, [float(v) for v in value])
      continue
    typ = types[name]
    ok = (isinstance(value, typ) and not (typ is int and isinstance(value, bool))
          or typ is float and isinstance(value, int) and not isinstance(value, bool))
    if not ok:
      raise ConfigError(f"{path}: {section}.{name}={value!r}: expected {typ.__name__}")
    setattr(cfg, name, typ(value))


def apply_config_file(path, *configs):
  """Applies a .json config file to the configs of its sections; prints what it set.

  The file is a saved config.json (or eval_config.json, inference_config.json) or one written by
  hand with a subset of its sections and fields. Sections of configs this script does not take
  are skipped with a note; RECORD_SECTIONS are skipped silently; any other section, an unknown
  field or a value of the wrong type is a ConfigError naming the file and the field.
  """
  by_class = {type(cfg): cfg for cfg in configs}
  loaded, skipped = [], []
  for section, values in _read_json(path).items():
    if section in RECORD_SECTIONS:
      continue
    if section not in SECTIONS:
      raise ConfigError(f"{path}: unknown section {section!r}; config sections are "
                        f"{', '.join(SECTIONS)}")
    cfg = by_class.get(SECTIONS[section])
    if cfg is None:
      skipped.append(section)
      continue
    _set_fields(path, section, values, cfg)
    loaded.append(f"{type(cfg).__name__} ({len(values)} fields)")
  print(f"loaded {' and '.join(loaded) or 'no section of this script'} from {path}"
        + (f"; skipped {', '.join(skipped)} (not this script's)" if skipped else ""))


def save_configs(path, **sections):
  """Writes {"model": {...}, "train": {...}, ...} JSON atomically (fileio.write_text).

  Each keyword is a section: a config dataclass (its SECTIONS name), or a JSON value that
  records what the run found (RECORD_SECTIONS: "label_names", "run").
  """
  data = {}
  for key, value in sections.items():
    if dataclasses.is_dataclass(value):
      assert SECTIONS[key] is type(value), f"section {key!r} holds a {type(value).__name__}"
      data[key] = dataclasses.asdict(value)
    else:
      assert key in RECORD_SECTIONS, f"unknown section {key!r}"
      data[key] = value
  fileio.write_text(path, json.dumps(data, indent=2, sort_keys=True))


def load_config(path, key, cls):
  """Reads one saved config section back as a `cls` instance.

  Fields the file lacks keep their defaults (older runs); fields the class lacks are an error,
  since they would silently change meaning. A missing file is a MissingFileError.
  """
  if not os.path.exists(path):
    raise MissingFileError(f"{path}: no saved config; was this directory written by train.py?")
  data = _read_json(path)
  if key not in data:
    raise ConfigError(f"{path}: no {key!r} section (has {sorted(data)})")
  cfg = cls()
  _set_fields(path, key, data[key], cfg)
  return cfg


def saved_label_names(directory):
  """(names, file): the label names a run stored in `directory`'s config file (the first of
  CONFIG_FILES there), or None for names if it stored none; file is None if there is none."""
  for name in CONFIG_FILES:
    path = os.path.join(directory, name)
    if os.path.exists(path):
      return _read_json(path).get("label_names"), path
  return None, None


# ---------------------------------------------------------------------------------------------
# The override helper, and --help from this file's field comments.

_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}
HELP_FLAGS = ("-h", "--help")


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


def field_comments(source):
  """{class name: {field name: comment}} of the classes defined at the top level of `source`.

  A field is an annotated assignment in a class body; its comment is the `# ...` comment on the
  line where the assignment ends ("" if there is none). Python's tokenizer finds the comments,
  so a '#' inside a string default is not one.
  """
  comments = {token.start[0]: token.string[1:].strip()
              for token in tokenize.generate_tokens(io.StringIO(source).readline)
              if token.type == tokenize.COMMENT}
  return {node.name: {stmt.target.id: comments.get(stmt.end_lineno, "")
                      for stmt in node.body
                      if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)}
          for node in ast.parse(source).body if isinstance(node, ast.ClassDef)}


def _show(value):
  """A default as it is typed on the command line."""
  if isinstance(value, bool):
    return str(value).lower()
  return '""' if value == "" else str(value)


def help_text(usage, *configs):
  """The script's usage, then each config's fields: --name=default, type, comment."""
  with open(__file__, encoding="utf-8") as f:
    comments = field_comments(f.read())
  lines = [usage.strip("\n"), "",
           "Options: --field=value (or --field value) for any field below. A .json argument (a",
           "saved config.json, or a subset of its sections and fields) loads first; the flags",
           "then override it. -h, --help: this text."]
  rows = {type(cfg): [(f"--{f.name}={_show(getattr(cfg, f.name))}", f.type.__name__,
                       comments[type(cfg).__name__][f.name]) for f in dataclasses.fields(cfg)]
          for cfg in configs}
  width = max(len(flag) for fields in rows.values() for flag, _, _ in fields)
  for cls, fields in rows.items():
    lines += ["", f"{cls.__name__}: {cls.__doc__}"]
    lines += [f"  {flag:<{width}}  {typ:<5}  {comment}" for flag, typ, comment in fields]
  return "\n".join(lines)


def parse_overrides(argv, *configs, usage=""):
  """Applies a script's arguments to its config objects, in place.

  Arguments:
    -h, --help: print help_text(usage, *configs) and exit 0.
    a path ending in .json: a config file (apply_config_file), applied first, in order.
    --field=value (or --field value): sets that field, after the files. A field name that
      several configs share sets all of them. Each override is printed.
  Unknown fields, missing values, values of the wrong type and other arguments raise ConfigError
  naming them (exit status 2 through errors.run); so does a value out of its range once all are
  applied (check_values), before the script does any work.

  Args:
    argv: the arguments, e.g. sys.argv[1:].
    *configs: dataclass instances, modified in place.
    usage: the script's usage text for --help (its module docstring).
  Returns:
    The configs, for chaining.
  """
  args, files, overrides = list(argv), [], []
  while args:
    arg = args.pop(0)
    if arg in HELP_FLAGS:
      print(help_text(usage, *configs))
      raise SystemExit(0)
    if arg.endswith(".json") and not arg.startswith("-"):
      files.append(arg)
      continue
    if not arg.startswith("--"):
      raise ConfigError(f"unexpected argument {arg!r}: use --field=value (or a .json config "
                        "file)")
    name, eq, text = arg[2:].partition("=")
    if not eq:
      if not args:
        raise ConfigError(f"--{name} needs a value: use --{name}=value")
      text = args.pop(0)
    overrides.append((name, text))
  for path in files:
    apply_config_file(path, *configs)
  for name, text in overrides:
    targets = [c for c in configs if name in {f.name for f in dataclasses.fields(c)}]
    if not targets:
      known = sorted({f.name for c in configs for f in dataclasses.fields(c)})
      close = difflib.get_close_matches(name, known, n=1)
      hint = f"did you mean --{close[0]}? " if close else ""
      raise ConfigError(f"unknown field --{name}; {hint}(--help lists every field)")
    for cfg in targets:
      typ = typing.get_type_hints(type(cfg))[name]
      value = _convert(name, text, typ)
      setattr(cfg, name, value)
      print(f"override {type(cfg).__name__}.{name} = {value!r}")
  check_values(*configs)
  return configs
