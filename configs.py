"""Run configuration: one dataclass per stage, with the original toolkit's defaults.

Each field declares its type, default, one-line help (what --help prints) and the values it may
take; a config's `check` holds the rules that tie its fields together. Edit the config objects at
the top of a script's `main()`, pass `--field=value`, or give a .json file (a saved config.json,
or a hand-written subset), which loads before the flags (multilabel/settings.py does all three):

    python train.py --label_count=10 --input_tfrecord_file=data/train.tfrecord --train_dir=runs/a
    python train.py runs/a/config.json --number_of_steps=40000   # continue runs/a
    python evaluate.py --help
"""

from dataclasses import dataclass

from multilabel.errors import ConfigError
from multilabel.settings import Config, above, at_least, between, setting

BACKBONES = ("resnet_v2_50", "resnet_v2_101", "resnet_v2_152", "resnet_v2_200")
FRACTION = between(0, 1, high_open=True)


@dataclass
class CreateTFRecordConfig(Config, section="create_tfrecord"):
  """create_tfrecord.py: image folder + list/label files -> TFRecords."""
  image_dir: str = setting("", "folder the names in imglist_file are relative to")
  imglist_file: str = setting(
      "", '"name.jpg 3" per line: 3 = the 1s in its label row', required=True)
  imglabel_file: str = setting("", '"1 0 1 ..." per line; -1 = unknown', required=True)
  output_file: str = setting(
      "", "output path; <output_file>-0000i-of-0000N if sharded", required=True)
  gpu: str = setting("", "kept for the original's CLI; preparing data needs no GPU and ignores it")
  num_shards: int = setting(
      1, "output files; >= the number of training workers", between(1, 100000))
  seed: int = setting(0, "record order shuffle seed; -1 keeps the list order", between(-1, 2**63))
  num_workers: int = setting(0, "image decode processes; 0 = one per CPU core", between(0, 1024))
  max_side: int = setting(
      0, "downscale to this longer side (px); 0 = keep the size", between(0, 2**30))
  jpeg_quality: int = setting(95, "quality of images re-encoded as JPEG", between(1, 100))
  lossless: bool = setting(
      False, "non-JPEG images stored as PNG, not JPEG: flat-colour art keeps its edges")


@dataclass
class CocoConfig(Config, section="coco"):
  """coco_to_image_list.py: COCO instances JSON -> the original's image_list and image_label."""
  annotations: str = setting(
      "", "COCO instances JSON, e.g. instances_train2014.json", required=True)
  output_dir: str = setting(
      "", "image_list, image_label and label_names.txt go here", required=True)
  categories: str = setting("", '"name,name,..." keeps these, in order; "" = all, by category id')
  drop_empty: bool = setting(False, "drop images without a kept category (default: an all-0 row)")


@dataclass
class ReadTFRecordConfig(Config, section="read_tfrecord"):
  """read_tfrecord.py: statistics, verification and sample dumps of TFRecords."""
  data_path: str = setting("", "one file, a comma-separated list, or a glob", required=True)
  dump_dir: str = setting("", "if set, write num_samples sample images here")
  num_samples: int = setting(10, "how many sample images to dump", at_least(0))
  image_path_key: str = setting("image_path", "context key of the image path")
  image_data_key: str = setting("image_data", "context key of the encoded JPEG")
  image_label_key: str = setting("image_label", "feature-list key of the 0/1 labels")


@dataclass
class DemoDataConfig(Config, section="demo_data"):
  """make_demo_data.py: the multi-label digits image set built from sklearn's load_digits."""
  output_dir: str = setting(
      "demo_out/data", "<output_dir>/<split>/{images/,image_list,image_label}")
  num_train: int = setting(24000, "train images (0 = skip the split, else >= 10)")
  num_eval: int = setting(500, "eval images (0 = skip the split, else >= 10)")
  num_test: int = setting(200, "test images (0 = skip the split, else >= 10)")
  image_size: int = setting(64, "square image side (pixels), >= 32", at_least(32))
  max_digits: int = setting(4, "each image holds 1..max_digits distinct digits (at most 4)")
  min_digit: float = setting(0.4, "smallest digit side, as a fraction of image_size")
  max_digit: float = setting(0.5, "largest digit side, as a fraction of image_size (<= 0.5)")
  colours: str = setting(
      "mono", "mono = light on dark; random = random colours", choices=("mono", "random"))
  seed: int = setting(0, "seed for the source-digit split and the image generation")

  def check(self, *others):
    for name in ("num_train", "num_eval", "num_test"):  # 10 digits: a positive of each label
      if getattr(self, name) not in at_least(10, also=(0,)):
        raise ConfigError(f"--{name}={getattr(self, name)}: use 0 (skip the split) or >= 10, so "
                          "every label has a positive")
    if not 0 < self.min_digit <= self.max_digit <= 0.5:
      raise ConfigError(f"--min_digit={self.min_digit}, --max_digit={self.max_digit}: need "
                        "0 < min_digit <= max_digit <= 0.5 (a digit fits its quadrant)")
    if not 1 <= self.max_digits <= 4:
      raise ConfigError(f"--max_digits={self.max_digits}: must be 1..4 (one per quadrant)")


@dataclass
class ModelConfig(Config, section="model"):
  """The network (multi_label_classification_model.py), its input pipeline (data/preprocessing)."""
  label_count: int = setting(0, "number of labels (columns of image_label)", at_least(0))
  label_names_file: str = setting("", 'one name per line, kept in config.json; "" = as kept')
  backbone: str = setting("resnet_v2_50", "the ResNet v2 depth", choices=BACKBONES)
  base_network_checkpoint: str = setting("", "first run: slim .ckpt, or our train dir/best//prefix")
  head_depth: int = setting(0, "channels of my_conv_1/_2; 0 = label_count (original)", at_least(0))
  augmentation: str = setting(
      "seed", "seed is the original's",
      choices=("seed", "crop_flip", "flip", "none", "randaugment"))
  input_tfrecord_file: str = setting("", "TFRecords: a file, a comma list or a glob", required=True)
  target_height: int = setting(224, "network input height (pixels); a multiple of 32")
  target_width: int = setting(224, "network input width (pixels); a multiple of 32")
  mixup: float = setting(0.0, "train: MixUp's Beta(alpha, alpha) on batches; 0 = off, e.g. 0.2",
                         at_least(0))
  resize_height: int = setting(0, "train: resize before the crop; 0 = target * 255/224", at_least(0))
  resize_width: int = setting(0, "train: resize before the crop; 0 = target * 255/224", at_least(0))
  use_regularizer: bool = setting(True, "L2 weight decay on the head (and a fine-tuned backbone)")
  weight_decay: float = setting(1e-4, "L2: loss += weight_decay * sum(w**2) / 2", at_least(0))
  batch_size: int = setting(32, "images per batch (per replica under tf.distribute)", at_least(1))
  train_base_network: bool = setting(False, "False = frozen backbone (moving BN stats)")
  batch_norm_decay: float = setting(
      0.997, "BN moving-average decay; lower for short runs", FRACTION)
  batch_norm_epsilon: float = setting(1e-5, "slim's BN epsilon", above(0))
  image_path_key: str = setting("image_path", "context key of the image path in the records")
  image_data_key: str = setting("image_data", "context key of the encoded JPEG in the records")
  image_label_key: str = setting("image_label", "feature-list key of the 0/1 labels in the records")
  num_parallel_calls: int = setting(
      -1, "tf.data map threads; -1 = AUTOTUNE", at_least(1, also=(-1,)))
  shuffle_buffer: int = setting(1000, "records in the train shuffle buffer", at_least(1))
  precision: str = setting(
      "float32", "compute dtype", choices=("float32", "mixed_bfloat16", "mixed_float16"))

  def check(self, *others):
    if self.label_count < 1:
      raise ConfigError(f"label_count={self.label_count}: set --label_count to the number of "
                        "labels (the columns of image_label)")
    for side in ("target_height", "target_width"):
      if getattr(self, side) % 32 or getattr(self, side) < 32:
        raise ConfigError(f"{side}={getattr(self, side)}: must be a positive multiple of 32 (the "
                          "backbone's output stride)")


@dataclass
class TrainConfig(Config, section="train"):
  """train.py: optimisation, checkpoints and summaries."""
  train_dir: str = setting("train_dir", "checkpoints, config.json and summaries go here")
  gpu_id: str = setting("0", 'CUDA_VISIBLE_DEVICES for training; "" = all visible, "-1" = CPU only')
  learning_rate: float = setting(0.001, "the peak learning rate (after any warmup)", above(0))
  lr_schedule: str = setting(
      "exponential", "exponential is the original's", choices=("exponential", "cosine"))
  warmup_steps: int = setting(0, "cosine only: rise linearly from 0 over these steps", at_least(0))
  decay_steps: int = setting(1000, "exponential decay period (steps)", at_least(1))
  decay_rate: float = setting(0.9, "learning rate multiplier per decay period", above(0))
  staircase: bool = setting(True, "decay in whole periods rather than continuously")
  optimizer: str = setting(
      "Adam", "AdamW needs use_regularizer=false",
      choices=("Adam", "SGD", "Momentum", "RMSProp", "AdamW"))
  momentum: float = setting(0.9, "for Momentum and RMSProp", FRACTION)
  clip_gradients: float = setting(5.0, "global-norm gradient clipping; 0 = off", at_least(0))
  max_to_keep: int = setting(20, "recent checkpoints kept", at_least(1))
  keep_checkpoint_every_n_hours: float = setting(
      0.2, "also keep one checkpoint per this many hours", at_least(0))
  number_of_steps: int = setting(
      100000, "stop at this step; rerun with more to continue", at_least(0))
  save_checkpoint_steps: int = setting(
      500, "save every this many steps (0 = by seconds)", at_least(0))
  save_checkpoint_secs: int = setting(600, "save at least this often (s); 0 = off", at_least(0))
  log_every_n_steps: int = setting(10, "log and summarise every this many steps", at_least(1))
  image_summary_steps: int = setting(
      500, "augmented input images every this many steps", at_least(0))
  ema_decay: float = setting(0.0, "weights' moving average; 0 = off, e.g. 0.999", FRACTION)
  loss: str = setting("sigmoid", "classification loss", choices=("sigmoid", "focal", "asymmetric"))
  focal_gamma: float = setting(2.0, "focal loss focusing parameter (Lin et al. 2017)", at_least(0))
  gamma_neg: float = setting(4.0, "asymmetric loss: focusing for negatives", at_least(0))
  gamma_pos: float = setting(0.0, "asymmetric loss: focusing for positives", at_least(0))
  asl_clip: float = setting(0.05, "asymmetric loss: margin off negatives", FRACTION)
  unknown_label: str = setting(
      "ignore", "-1 labels: ignore, or read as 0", choices=("ignore", "negative"))
  pos_weight: str | list[float] = setting("", '"" off | auto (neg/pos) | a file of weights')
  head_bias: str = setting(
      "zero", "my_conv_3's first bias; prior = each label's log-odds in the train records",
      choices=("zero", "prior"))
  xla: bool = setting(False, "compile the train step with XLA (jit_compile)")
  strategy: str = setting(
      "default", "tf.distribute", choices=("default", "mirrored", "multi_worker"))
  seed: int = setting(0, "seed for weight init and shuffling; -1 = nondeterministic", at_least(-1))
  data_service_address: str = setting("", "grpc://host:port: decode on tf.data service workers")
  data_service_timeout_secs: int = setting(
      30, "wait this long for the dispatcher, or for a batch, then save and stop (s)", at_least(1))

  def check(self, *others):
    model = next((c for c in others if isinstance(c, ModelConfig)), None)
    if model is not None:
      for side in ("height", "width"):  # flip and none don't crop
        resize, target = getattr(model, f"resize_{side}"), getattr(model, f"target_{side}")
        if 0 < resize < target and model.augmentation not in ("flip", "none"):
          raise ConfigError(f"resize_{side}={resize} is smaller than target_{side}={target}: "
                            "the random crop needs resize >= target")
      if self.optimizer == "AdamW" and model.use_regularizer:
        raise ConfigError("--optimizer=AdamW decays the weights itself (by weight_decay, "
                          "decoupled): set --use_regularizer=false, or L2 would decay them twice")
    if self.warmup_steps and self.lr_schedule != "cosine":
      raise ConfigError(f"warmup_steps={self.warmup_steps}: warmup comes with lr_schedule=cosine "
                        "only")
    if self.lr_schedule == "cosine" and self.warmup_steps >= self.number_of_steps > 0:
      raise ConfigError(f"warmup_steps={self.warmup_steps}: must be in [0, number_of_steps="
                        f"{self.number_of_steps})")


@dataclass
class EvalConfig(Config, section="eval"):
  """evaluate.py: the evaluator that runs beside train.py."""
  checkpoint_dir: str = setting("train_dir", "the train_dir to watch")
  eval_dir: str = setting("", 'summaries, metrics.jsonl and best/; "" = <checkpoint_dir>/eval')
  input_tfrecord_file: str = setting("", "eval TFRecords (file, comma list or glob)", required=True)
  batch_size: int = setting(32, "images per eval batch", at_least(1))
  min_global_step: int = setting(200, "skip checkpoints before this step", at_least(0))
  eval_interval_secs: int = setting(30, "poll for new checkpoints this often (s)", at_least(0))
  gpu_id: str = setting("-1", "CUDA_VISIBLE_DEVICES; -1 = CPU, leaving the GPU to training")
  run_once: bool = setting(False, "evaluate one checkpoint (latest or checkpoint_path) and exit")
  checkpoint_path: str = setting("", "with run_once: this checkpoint prefix instead of the latest")
  max_evaluations: int = setting(0, "exit after this many evaluations; 0 = no limit", at_least(0))
  timeout_secs: int = setting(
      0, "exit after this long without a checkpoint (s); 0 = never", at_least(0))
  score_file: str = setting("", "if set, write the eval scores here (exact, one row per image)")
  label_file: str = setting("", "if set, write the eval labels here (image_label format)")
  top_k: int = setting(3, "k of the top-k metrics (CP/CR/CF1/OP/OR/OF1 at top-k)", at_least(1))
  mistake_images: int = setting(
      3, "TensorBoard: per label, this many worst false positives and negatives", at_least(0))
  label_names_file: str = setting("", 'one name per line; "" = the train dir\'s config.json names')
  data_service_address: str = setting("", "grpc://host:port: decode on tf.data service workers")
  data_service_timeout_secs: int = setting(30, "wait this long for the dispatcher to answer (s)")


@dataclass
class InferenceConfig(Config, section="inference"):
  """inference.py: 10-crop scoring of test images."""
  checkpoint_path: str = setting("train_dir", "a train dir (latest), an eval best/ dir or a prefix")
  inference_dir: str = setting("inference", "outputs go here")
  inference_file_name: str = setting("scores.txt", "the score file (exact, one row per image)")
  gpu_id: str = setting("0", 'CUDA_VISIBLE_DEVICES; "-1" = CPU')
  image_list_file: str = setting("", "plain list of paths, or an original-format image_list")
  image_dir: str = setting("", "image_list names are relative to this; alone: every image in it")
  resize_height: int = setting(0, "resize before the 10 crops; 0 = target * 290/224", at_least(0))
  resize_width: int = setting(0, "resize before the 10 crops; 0 = target * 290/224", at_least(0))
  aggregation: str = setting("mean", "over the 10 crops", choices=("mean", "max"))
  views: str = setting(
      "auto", "ten crops, one resize, or ten if trained on crops", choices=("ten", "one", "auto"))
  batch_size: int = setting(8, "images per batch (x10 crops through the network)", at_least(1))
  xla: str = setting(
      "auto", "auto = time both on the first batch", choices=("auto", "true", "false"))
  thresholds_file: str = setting("", "per-label thresholds from threshold_calibration.py")
  threshold: float = setting(0.5, "the threshold without a thresholds_file", between(0, 1))
  label_names_file: str = setting("", 'one name per line; "" = the train dir\'s config.json names')
  export_saved_model: str = setting("", "if set, also write a serving SavedModel to this folder")
  format: str = setting("saved_model", "what the export writes (onnx, tflite: the forward pass on "
                        "the views)", choices=("saved_model", "onnx", "tflite"))
  quantize: str = setting("none", "tflite: dynamic = int8 weights", choices=("none", "dynamic"))
  strict: bool = setting(False, "true: exit 1 if any image is unreadable (after the outputs)")


  def check(self, *others):
    if self.quantize != "none" and self.format != "tflite":
      raise ConfigError(f"--quantize={self.quantize} is for --format=tflite")


@dataclass
class CalibrationConfig(Config, section="calibration"):
  """threshold_calibration.py: per-label thresholds from eval scores."""
  label_file: str = setting("", "eval-set labels (image_label format)")
  score_file: str = setting("", "eval-set scores (evaluate.py --score_file)")
  method: str = setting("roc", "roc = nearest (0,1), the original", choices=("roc", "f1", "youden"))
  output_file: str = setting("", "write the thresholds here, one per line")
  apply_to: str = setting("", "a test score file to threshold")
  predictions_file: str = setting("", "where the 0/1 predictions for apply_to go (image_label)")
  apply_labels: str = setting("", "test labels for apply_to, to report test-set metrics")
  label_names_file: str = setting("", 'one name per line, for the tables; "" = run_dir\'s')
  run_dir: str = setting("", "a train or eval dir whose saved config holds the label names")

  def check(self, *others):
    if not self.label_file or not self.score_file:
      raise ConfigError("--label_file and --score_file are both required")
    if self.apply_to and not (self.predictions_file or self.apply_labels):
      raise ConfigError(f"--apply_to={self.apply_to}: give --predictions_file and/or "
                        "--apply_labels")
    if (self.predictions_file or self.apply_labels) and not self.apply_to:
      raise ConfigError("--predictions_file and --apply_labels need --apply_to=SCORES")


@dataclass
class DataServiceConfig(Config, section="data_service"):
  """data_service.py: a tf.data service dispatcher or worker (train.py --data_service_address)."""
  role: str = setting("", "what this process serves", choices=("dispatcher", "worker"))
  port: int = setting(5050, "port to listen on; 0 = any free one (one per worker on a host)")
  dispatcher_address: str = setting("", "worker: the dispatcher to register with, grpc://host:port")
  worker_address: str = setting("", 'worker: host[:port] trainers reach it at; "" = this host')
  work_dir: str = setting("", 'dispatcher: journal its state here to recover on restart; "" = none')
  timeout_secs: int = setting(30, "worker: wait this long for the dispatcher at the start (s)")
  status_secs: float = setting(1.0, "print a status line this often (seconds); 0 = none")

  def check(self, *others):
    if not self.role:
      raise ConfigError("--role='': expected dispatcher or worker")
    if not 0 <= self.port < 65536:
      raise ConfigError(f"--port={self.port}: expected 0 (any free port) to 65535")
    if self.role == "worker" and not self.dispatcher_address:
      raise ConfigError("a worker needs --dispatcher_address=grpc://host:port (the "
                        "dispatcher's)")
    if self.role == "dispatcher" and (self.dispatcher_address or self.worker_address):
      raise ConfigError("--dispatcher_address and --worker_address are a worker's; a "
                        "dispatcher takes --port and --work_dir")
    if self.role == "worker" and self.work_dir:
      raise ConfigError("--work_dir is the dispatcher's (its journal); a worker keeps no state")
