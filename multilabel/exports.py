"""A trained model outside TensorFlow: ONNX (run by onnxruntime) and TFLite (run by the LiteRT
interpreter), beside serving.py's SavedModel.

Both formats hold the network's forward pass on the views inference.py makes, not the JPEG
decoding (neither runtime has a portable image decoder):

    images  float32 [N, H, W, 3] in [-1, 1]: the 10 crops of each image, or its one resized
            view (TestTimeScoring.views), preprocessed as multilabel/data/preprocessing.py does
    scores  float32 [N, L]: the sigmoid score of each view; an image's scores are the mean (or
            max: `aggregation`) over its views

The label names, the thresholds and how to make the views ride in the file as metadata under
INFO_KEY (JSON; read_info reads it back). The converters are optional dependencies
(requirements-export.txt): tf2onnx and onnx for ONNX, ai-edge-litert's flatbuffer schema for the
TFLite metadata; TensorFlow's own converter writes TFLite.
"""

import importlib
import json
import os

import numpy as np
import tensorflow as tf

from multilabel import errors, files, serving

FORMATS = {"onnx": ".onnx", "tflite": ".tflite"}
INFO_KEY = "multilabel"  # the metadata entry (ONNX metadata_props; TFLite Model.metadata)
ONNX_OPSET = 17


def _optional(module, what):
  """Imports an optional dependency, or says in one line how to install it."""
  try:
    return importlib.import_module(module)
  except ImportError:
    raise errors.ConfigError(f"{what} needs {module.split('.')[0]}: pip install -r "
                             "requirements-export.txt") from None


def check_target(path, fmt):
  """Before any work: a SavedModel folder must be one serving.export may replace; a file export
  needs a writable place."""
  if fmt == "saved_model":
    serving.check_export_dir(path)
  else:
    target = output_path(path, fmt)
    files.check_writable(os.path.dirname(os.path.abspath(target)), "export_saved_model")


def output_path(path, fmt):
  """The file a --format=onnx|tflite export writes: `path` itself, or <path>/model.<ext> when
  `path` is a folder or names none of that format's extension."""
  ext = FORMATS[fmt]
  if path.endswith(ext) and not os.path.isdir(path):
    return path
  return os.path.join(path, "model" + ext)


def info(model, scoring):
  """The metadata: what the input and output are, the names, thresholds and views."""
  thresholds = np.broadcast_to(np.asarray(scoring.thresholds, np.float64),
                               [model.config.label_count])
  return {"input": f"float32 [N, {scoring.target[0]}, {scoring.target[1]}, 3] in [-1, 1]",
          "output": "float32 [N, L] sigmoid scores, one row per view",
          "views": scoring.views, "crops_per_image": scoring.crops,
          "resize": list(scoring.resize), "target": list(scoring.target),
          "aggregation": scoring.aggregation, "thresholds": thresholds.tolist(),
          "label_names": list(scoring.label_names)}


def forward(model):
  """images [N, H, W, 3] -> {"scores": [N, L]}, as a tf.function with a fixed input signature."""
  config = model.config
  spec = tf.TensorSpec([None, config.target_height, config.target_width, 3], tf.float32,
                       name="images")

  @tf.function(input_signature=[spec], autograph=False)
  def scores(images):
    return {"scores": model(images, training=False)[1]["predictions"]}
  return scores


def write_onnx(model, path, metadata):
  """The forward pass as ONNX (opset ONNX_OPSET) with `metadata` under INFO_KEY, atomically."""
  tf2onnx = _optional("tf2onnx", "--format=onnx")
  onnx = _optional("onnx", "--format=onnx")
  function = forward(model)
  proto, _ = tf2onnx.convert.from_function(function, input_signature=function.input_signature,
                                           opset=ONNX_OPSET)
  onnx.helper.set_model_props(proto, {INFO_KEY: json.dumps(metadata)})
  data = proto.SerializeToString()
  with files.atomic_write(path, "wb", size=len(data)) as f:
    f.write(data)


def write_tflite(model, path, metadata, quantize="none"):
  """The forward pass as TFLite, float32, or with int8 weights (quantize="dynamic": dynamic-range
  quantisation, no calibration data), with `metadata` under INFO_KEY, atomically."""
  schema = _optional("ai_edge_litert.schema_py_generated", "--format=tflite")
  flatbuffers = _optional("flatbuffers", "--format=tflite")
  function = forward(model)
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [function.get_concrete_function()], model)
  if quantize == "dynamic":
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  flat = schema.ModelT.InitFromPackedBuf(bytearray(converter.convert()), 0)
  buffer = schema.BufferT()
  buffer.data = np.frombuffer(json.dumps(metadata).encode("utf-8"), np.uint8)
  flat.buffers.append(buffer)
  entry = schema.MetadataT()
  entry.name, entry.buffer = INFO_KEY, len(flat.buffers) - 1
  flat.metadata = (flat.metadata or []) + [entry]
  builder = flatbuffers.Builder(0)
  builder.Finish(flat.Pack(builder), file_identifier=b"TFL3")
  data = bytes(builder.Output())
  with files.atomic_write(path, "wb", size=len(data)) as f:
    f.write(data)


def export(model, path, scoring, fmt, quantize="none"):
  """Writes `model` as `fmt` (saved_model: serving.export's folder; onnx or tflite: the file
  output_path(path, fmt)); returns what it wrote."""
  if fmt == "saved_model":
    return serving.export(model, path, scoring)
  target = output_path(path, fmt)
  metadata = info(model, scoring)
  if fmt == "onnx":
    write_onnx(model, target, metadata)
  else:
    write_tflite(model, target, metadata, quantize)
  return target


def read_info(path):
  """The INFO_KEY metadata of an exported .onnx or .tflite file (a user needs only onnx, or
  ai-edge-litert, to read it: see the test)."""
  if path.endswith(FORMATS["onnx"]):
    onnx = _optional("onnx", "reading an .onnx file")
    props = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
    return json.loads(props[INFO_KEY])
  schema = _optional("ai_edge_litert.schema_py_generated", "reading a .tflite file")
  with open(path, "rb") as f:
    flat = schema.Model.GetRootAs(f.read(), 0)
  for i in range(flat.MetadataLength()):
    if flat.Metadata(i).Name().decode() == INFO_KEY:
      return json.loads(flat.Buffers(flat.Metadata(i).Buffer()).DataAsNumpy().tobytes())
  raise errors.DataError(f"{path}: no {INFO_KEY!r} metadata (not exported by this toolkit?)")
