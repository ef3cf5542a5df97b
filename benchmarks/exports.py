"""A trained run exported to ONNX and TFLite (float32 and int8 weights), checked on real data:
mAP on an eval split through each runtime beside TensorFlow's, and each runtime's time per
image against TensorFlow's, measured in one process, round by round.

Every runtime scores the same views: the eval split's records preprocessed as evaluate.py does
(the one resized view), so each runtime's mAP is comparable with the toolkit's own. After
`make demo`:

    python -m benchmarks.exports --checkpoint_path=demo_out/train \\
        --eval_records=demo_out/records/eval.tfrecord

Prints a table, then as the last line one JSON object with every figure.
"""

import argparse
import json
import os
import statistics
import tempfile
import time

import multilabel.startup  # noqa: F401 -- first: TensorFlow's C++ start-up lines filtered
import numpy as np
import onnxruntime
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

import configs
from multi_label_classification_model import load_trained_model
from multilabel import exports, metrics, serving
from multilabel.data.preprocessing import build_dataset


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--checkpoint_path", required=True, help="a train dir, best/ dir or prefix")
  p.add_argument("--eval_records", required=True, help="eval TFRecords (file, list or glob)")
  p.add_argument("--rounds", type=int, default=5, help="timed rounds per runtime (medians)")
  p.add_argument("--batch_size", type=int, default=8, help="views per timed call")
  p.add_argument("--threads", type=int, default=0, help="runtime threads; 0 = every core")
  return p.parse_args(argv)


def eval_views(model_config, spec):
  """(views [N, h, w, 3] float32, labels [N, L]) of the eval split, as evaluate.py sees them."""
  views, labels = [], []
  for images, batch_labels, _ in build_dataset(model_config, "eval", file_spec=spec):
    views.append(images.numpy())
    labels.append(batch_labels.numpy())
  return np.concatenate(views), np.concatenate(labels)


def runtimes(model, folder, scoring, threads):
  """{name: views -> scores} for TensorFlow, onnxruntime and LiteRT (float32, int8)."""
  forward = exports.forward(model)
  options = onnxruntime.SessionOptions()
  options.intra_op_num_threads = threads
  session = onnxruntime.InferenceSession(
      exports.export(model, os.path.join(folder, "m.onnx"), scoring, "onnx"), options,
      providers=["CPUExecutionProvider"])
  name = session.get_inputs()[0].name

  def litert(quantize):
    path = exports.export(model, os.path.join(folder, f"{quantize}.tflite"), scoring, "tflite",
                          quantize)
    runner = Interpreter(model_path=path, num_threads=threads or None).get_signature_runner()
    return lambda views: runner(images=views)["scores"]
  return {"tensorflow": lambda views: forward(tf.constant(views))["scores"].numpy(),
          "onnxruntime": lambda views: session.run(None, {name: views})[0],
          "litert_float32": litert("none"), "litert_int8": litert("dynamic"),
          "sizes_mb": {n: round(os.path.getsize(os.path.join(folder, n)) / 2**20, 1)
                       for n in ("m.onnx", "none.tflite", "dynamic.tflite")}}


def score_all(run, views, batch):
  return np.concatenate([run(views[i:i + batch]) for i in range(0, len(views), batch)])


def time_per_image(runs, views, batch, rounds):
  """Median ms per view of each runtime, rounds interleaved so drift hits all alike."""
  seconds = {name: [] for name in runs}
  chunk = views[:batch]
  for name, run in runs.items():
    run(chunk)  # warm-up: first-call allocation and tracing
  for _ in range(rounds):
    for name, run in runs.items():
      start = time.perf_counter()
      for _ in range(4):
        run(chunk)
      seconds[name].append((time.perf_counter() - start) / (4 * len(chunk)))
  return {name: 1000 * statistics.median(s) for name, s in seconds.items()}


def main(argv=None):
  args = parse_args(argv)
  model, model_config, prefix, step = load_trained_model(args.checkpoint_path)
  inference = configs.InferenceConfig(views="one", checkpoint_path=args.checkpoint_path)
  scoring = serving.TestTimeScoring.for_run(inference, model_config, os.path.dirname(prefix))
  views, labels = eval_views(model_config, args.eval_records)
  with tempfile.TemporaryDirectory() as folder:
    runs = runtimes(model, folder, scoring, args.threads)
    sizes = runs.pop("sizes_mb")
    scores = {name: score_all(run, views, args.batch_size) for name, run in runs.items()}
    ms = time_per_image(runs, views, args.batch_size, args.rounds)
  reference = scores["tensorflow"]
  out = {"checkpoint": prefix, "step": step, "views": len(views), "sizes_mb": sizes,
         "mAP": {n: metrics.mean_average_precision(labels, s)[0] for n, s in scores.items()},
         "max_abs_diff": {n: float(np.abs(s - reference).max()) for n, s in scores.items()},
         "ms_per_view": ms, "ratio_to_tensorflow": {n: ms[n] / ms["tensorflow"] for n in ms}}
  print(f"{'runtime':<16} {'mAP':>7} {'max |diff|':>11} {'ms/view':>8} {'vs TF':>6}")
  for name in scores:
    print(f"{name:<16} {out['mAP'][name]:7.4f} {out['max_abs_diff'][name]:11.2e} "
          f"{ms[name]:8.2f} {out['ratio_to_tensorflow'][name]:6.2f}")
  print(json.dumps(out))


if __name__ == "__main__":
  main()
