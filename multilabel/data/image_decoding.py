"""Decoding images for create_tfrecord.py, in worker processes (Pillow, one per core), and the
toolkit's one pixel limit.

prepare_image decodes one image fully and says what to store: an RGB JPEG's bytes unchanged, or
any other image converted to RGB and re-encoded as JPEG (resized to max_side if larger), or why
it is skipped. With `lossless`, images that are not JPEGs are kept lossless instead: an RGB PNG's
bytes unchanged, any other converted to RGB and encoded as PNG. image_results runs it over all
the images in order, in a pool of forked workers that leave Ctrl-C and a scheduler's group
signal to the parent and die with it. too_large is the pixel limit, which create_tfrecord.py
and inference.py both apply before decoding.
"""

import contextlib
import ctypes
import io
import multiprocessing
import os
import signal
import sys

import numpy as np
from PIL import Image

# File signatures, to tell a damaged image from a file that is no image at all.
IMAGE_MAGIC = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG", "PNG"), (b"GIF8", "GIF"), (b"BM", "BMP"),
               (b"RIFF", "WebP"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))


def _to_rgb(image):
  """Converts any Pillow mode to RGB; transparent pixels become white."""
  if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
    rgba = image.convert("RGBA")
    background = Image.new("RGB", rgba.size, (255, 255, 255))
    background.paste(rgba, mask=rgba.getchannel("A"))
    return background
  if image.mode.startswith("I"):  # 16/32-bit grey (e.g. 16-bit PNG): scale 0..65535 to 0..255
    grey = np.asarray(image, dtype=np.float64) / 257.0
    return Image.fromarray(np.clip(grey + 0.5, 0, 255).astype(np.uint8)).convert("RGB")
  return image.convert("RGB")


def too_large(source):
  """Why the image at `source` (a path or a binary file) is over the pixel limit, or None.

  The limit is Pillow's decompression-bomb check, more than 2 * Image.MAX_IMAGE_PIXELS pixels
  (179 M by default, e.g. 13,400 x 13,400), on the size in the image's header: nothing is
  decoded, so a 20000 x 20000 PNG of 388 KB is judged from its first bytes, not from the 1.2 GB
  its pixels take (13 GB at TensorFlow's peak). An image Pillow cannot open is not judged here
  (None): whatever decodes it next says what is wrong with it.
  """
  try:
    with Image.open(source):
      return None
  except Image.DecompressionBombError as e:
    return str(e)
  except (OSError, SyntaxError, ValueError, EOFError):  # UnidentifiedImageError is an OSError
    return None


def prepare_image(task):
  """Decodes one image fully and returns what to store; runs in the worker processes.

  Args:
    task: (path, max_side, jpeg_quality, lossless).
  Returns:
    ("ok", image_bytes, how, (height, width)) with how in {"stored", "re-encoded", "resized"}, or
    ("skip", category, detail) with category e.g. "missing", "empty", "not an image", "truncated".
  """
  path, max_side, quality, lossless = task
  try:
    with open(path, "rb") as f:
      data = f.read()
  except FileNotFoundError:
    return ("skip", "missing", "no such file")
  except OSError as e:
    return ("skip", "unreadable", f"{type(e).__name__}: {e.strerror or e}")
  if not data:
    return ("skip", "empty", "0 bytes")
  reason = too_large(io.BytesIO(data))
  if reason:
    return ("skip", "too large", reason)
  try:
    with Image.open(io.BytesIO(data)) as image:
      image.load()  # the full decode: truncated or corrupt data fails here
      width, height = image.size
      keep = "PNG" if lossless else "JPEG"  # JPEGs stay JPEGs: a PNG of one only grows
      if (image.format in ("JPEG", keep) and image.mode == "RGB"
          and max(width, height) <= max_side):
        return ("ok", data, "stored", (height, width))  # fast path: keep the bytes unchanged
      rgb = _to_rgb(image)
  except Image.UnidentifiedImageError:
    kind = next((name for magic, name in IMAGE_MAGIC if data.startswith(magic)), None)
    if kind:  # the signature says image, the rest is damaged
      return ("skip", "corrupt", f"starts like a {kind} but Pillow cannot read it")
    return ("skip", "not an image", f"{len(data)} bytes Pillow cannot identify")
  except (OSError, SyntaxError, ValueError, EOFError) as e:  # Pillow's decoder errors
    category = "truncated" if "truncated" in str(e).lower() else "corrupt"
    return ("skip", category, f"{type(e).__name__}: {e}")
  how = "re-encoded"
  if max(width, height) > max_side:
    scale = max_side / max(width, height)
    rgb = rgb.resize((max(1, round(width * scale)), max(1, round(height * scale))),
                     Image.Resampling.LANCZOS)
    how = "resized"
  buffer = io.BytesIO()
  if lossless:
    rgb.save(buffer, "PNG")
  else:
    rgb.save(buffer, "JPEG", quality=quality)
  return ("ok", buffer.getvalue(), how, (rgb.height, rgb.width))


def _worker_setup(parent):
  """Runs first in each worker process (pid `parent` forked it).

  Its own process group: a Ctrl-C, or a `kill -TERM -<group>` from a job scheduler, reaches the
  parent alone, which then stops the pool in order (workers killed mid-task by the group signal
  could leave the pool's queue lock held, and the parent hung in terminate()). On Linux it also
  dies with the parent (PR_SET_PDEATHSIG): a parent killed outright leaves no worker behind to
  print BrokenPipe tracebacks when it hands in its next result.
  """
  os.setpgrp()
  signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is handled once, by the parent
  signal.signal(signal.SIGTERM, signal.SIG_DFL)  # so that pool.terminate() stops the workers
  if sys.platform.startswith("linux"):
    ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
  if os.getppid() != parent:  # the parent died before the line above: go now
    os._exit(1)


@contextlib.contextmanager
def image_results(tasks, num_workers):
  """Yields an iterator of prepare_image results in task order, from num_workers processes."""
  if num_workers == 1:
    yield map(prepare_image, tasks)
    return
  # fork: the workers only run Pillow, and forking spares each one re-importing TensorFlow.
  context = multiprocessing.get_context("fork" if sys.platform.startswith("linux") else None)
  with context.Pool(num_workers, initializer=_worker_setup, initargs=(os.getpid(),)) as pool:
    yield pool.imap(prepare_image, tasks, chunksize=4)
