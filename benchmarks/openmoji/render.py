"""The images: OpenMoji's SVGs rendered by cairosvg, and Noto's PNGs, each composited onto white
and saved as an RGB PNG, in worker processes. Pillow and cairosvg (with the system's cairo
library) are imported here only, so that the labels and splits need neither.
"""

import io
import time

from benchmarks.openmoji import MissingDependency

NOTO_SIZE = 64  # emoji-datasource-google's img/google/64/, kept at that size


def check_dependencies():
  """Imports Pillow and cairosvg (which loads the cairo library), or says what to install."""
  try:
    import PIL.Image  # noqa: F401
  except ImportError:
    raise MissingDependency("Pillow is not installed: pip install Pillow")
  try:
    import cairosvg  # noqa: F401
  except ImportError:
    raise MissingDependency("cairosvg is not installed: pip install -r "
                            "benchmarks/openmoji/requirements.txt (it also needs the cairo "
                            "library, Debian: apt-get install libcairo2)")
  except OSError:  # cairocffi: no library called "cairo-2" was found
    raise MissingDependency("the cairo library is missing (cairosvg needs it): "
                            "apt-get install libcairo2 (Debian/Ubuntu)")


def white_rgb(png_bytes):
  """An RGB image of a (possibly transparent) PNG composited onto white."""
  from PIL import Image
  with Image.open(io.BytesIO(png_bytes)) as image:
    rgba = image.convert("RGBA")
  background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
  background.alpha_composite(rgba)
  return background.convert("RGB")


def render_task(task):
  """Worker: ("svg", bytes, size, path) or ("png", bytes, size, path) -> path, written."""
  kind, data, size, path = task
  if kind == "svg":
    import cairosvg
    data = cairosvg.svg2png(bytestring=data, output_width=size, output_height=size)
  image = white_rgb(data)
  if image.size != (size, size):
    raise ValueError(f"{path}: {image.size[0]}x{image.size[1]}, expected {size}x{size}")
  image.save(path, "PNG")
  return path


def render_all(tasks, workers):
  """Writes every task's image, with a progress line every 2 s, and returns the seconds."""
  start = last = time.time()
  total = len(tasks)

  def report(done, final=False):
    elapsed = max(time.time() - start, 1e-9)
    rate = done / elapsed
    eta = (total - done) / rate if rate > 0 else 0
    tail = f", {elapsed:.1f} s" if final else f", ETA {eta:.0f} s"
    print(f"  rendered {done}/{total} ({rate:.0f} images/s{tail})", flush=True)

  if workers > 1:
    import multiprocessing
    with multiprocessing.get_context("fork").Pool(workers) as pool:
      for done, _ in enumerate(pool.imap_unordered(render_task, tasks, chunksize=16), 1):
        if time.time() - last >= 2:
          last = time.time()
          report(done)
  else:
    for done, task in enumerate(tasks, 1):
      render_task(task)
      if time.time() - last >= 2:
        last = time.time()
        report(done)
  report(total, final=True)
  return time.time() - start
