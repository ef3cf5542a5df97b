"""Time and peak memory of coco_to_image_list.py on a synthetic COCO instances JSON of a real size.

The default size is COCO train2017's instances file: 118,287 images, 860,001 annotations and 80
categories in about 450 MB (the polygons are most of it). The synthetic file has the same
structure, the same numbers of entries and numbers written like COCO's (two decimals), ~1% crowd
annotations with RLE counts, and a byte size close to the real one; polygons are drawn from a
pool, so writing it takes seconds. The converter then runs in its own process; its wall time and
peak resident memory (getrusage of the child) are printed, then one JSON line.

    python benchmarks/coco_converter.py               # train2017's size: ~450 MB, ~1 min in all
    python benchmarks/coco_converter.py --scale=0.1   # a tenth of it
"""

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from multilabel import errors


def numbers(rng, count, scale=640.0):
  return ",".join(f"{rng.random() * scale:.2f}" for _ in range(count))


def write_synthetic_coco(path, num_images, num_annotations, num_categories, seed=0):
  """Writes a COCO-shaped instances JSON; returns its size in bytes."""
  rng = random.Random(seed)
  polygons = [f"[[{numbers(rng, 2 * rng.randint(10, 40))}]]" for _ in range(2000)]
  rles = ['{"counts":[%s],"size":[480,640]}' % ",".join(str(rng.randint(0, 900))
                                                        for _ in range(rng.randint(60, 300)))
          for _ in range(50)]
  with open(path, "w") as f:
    f.write('{"info":{"description":"synthetic COCO","year":2017},"licenses":[{"id":1,'
            '"name":"x","url":"http://x"}],"images":[')
    f.write(",".join(
        f'{{"license":1,"file_name":"{i:012d}.jpg","coco_url":'
        f'"http://images.cocodataset.org/train2017/{i:012d}.jpg","height":480,"width":640,'
        f'"date_captured":"2013-11-14 11:18:45","flickr_url":'
        f'"http://farm4.staticflickr.com/3153/{i}_b2c1e5a8d1_z.jpg","id":{i}}}'
        for i in range(1, num_images + 1)))
    f.write('],"annotations":[')
    for start in range(0, num_annotations, 10000):
      chunk = []
      for a in range(start, min(start + 10000, num_annotations)):
        crowd = rng.random() < 0.01
        segmentation = rng.choice(rles) if crowd else rng.choice(polygons)
        chunk.append(f'{{"segmentation":{segmentation},"area":{rng.random() * 9e4:.4f},'
                     f'"iscrowd":{int(crowd)},"image_id":{rng.randint(1, num_images)},'
                     f'"bbox":[{numbers(rng, 4)}],"category_id":{rng.randint(1, num_categories)},'
                     f'"id":{a + 1}}}')
      f.write(("," if start else "") + ",".join(chunk))
    f.write('],"categories":[')
    f.write(",".join(f'{{"supercategory":"s{c % 12}","id":{c},"name":"category {c}"}}'
                     for c in range(1, num_categories + 1)))
    f.write("]}")
  return os.path.getsize(path)


def main(argv):
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--scale", type=float, default=1.0, help="fraction of train2017's size")
  parser.add_argument("--work_dir", default="", help="where the JSON goes; default a temp dir")
  args = parser.parse_args(argv)
  work = args.work_dir or tempfile.mkdtemp(prefix="coco_bench_")
  os.makedirs(work, exist_ok=True)
  try:
    path = os.path.join(work, "instances_synthetic.json")
    start = time.time()
    size = write_synthetic_coco(path, round(118287 * args.scale), round(860001 * args.scale), 80)
    print(f"wrote {path}: {size / 1e6:.1f} MB in {time.time() - start:.1f} s", flush=True)
    start = time.time()
    result = subprocess.run([sys.executable, os.path.join(REPO, "coco_to_image_list.py"),
                             f"--annotations={path}", f"--output_dir={os.path.join(work, 'out')}"],
                            capture_output=True, text=True)
    seconds = time.time() - start
    if result.returncode:  # its own error lines first, then ours
      raise errors.DataError(f"coco_to_image_list.py exited {result.returncode} on {path}",
                             result.stderr.splitlines())
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    print(result.stdout, end="")
    print(f"converter: {seconds:.1f} s wall, peak resident memory {peak_mb:.0f} MiB "
          f"for a {size / 1e6:.0f} MB file")
    print(json.dumps({"json_mb": round(size / 1e6, 1), "images": round(118287 * args.scale),
                      "annotations": round(860001 * args.scale), "seconds": round(seconds, 2),
                      "peak_rss_mib": round(peak_mb)}))
  finally:
    if not args.work_dir:
      shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
  errors.run(main)
