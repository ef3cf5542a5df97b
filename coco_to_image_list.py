"""COCO instances JSON -> image_list, image_label and label_names.txt, in the original's format.

    python coco_to_image_list.py --annotations=coco/annotations/instances_train2014.json \\
        --output_dir=coco/train
    python coco_to_image_list.py --annotations=coco/annotations/instances_val2014.json \\
        --output_dir=coco/val --categories="person,dog,cat" --drop_empty=true

One label per category: all of them, ordered by category id, or the --categories names in the
order given. An image's label is 1 when it has at least one annotation of that category; crowd
annotations (iscrowd=1) count too, as ASL's COCO loader reads every annotation of an image.
Images keep the JSON's order. An image with no annotation of a kept category is an all-zero row,
or is left out with --drop_empty. Written to --output_dir (create_tfrecord.py reads the first two,
with --image_dir set to the folder of the images, e.g. coco/train2014):
  image_list       "<file_name> <count>" per line; count = the number of 1s in its row
  image_label      "0 1 0 ..." per line, one 0/1 per label
  label_names.txt  one category name per line, in label order

The JSON is read with the standard library's json. Only each image's id and file name and each
annotation's image and category ids are kept, as they are parsed (json's object_hook), so the
polygons never pile up in memory: on a synthetic file of COCO train2017's size (440 MB, 860,001
annotations; benchmarks/coco_converter.py) it took 16 s and at most 852 MiB, about twice the
file, most of it the file's text while it is read. Each output is written to a temporary name
first; the old outputs are removed and the new ones renamed into place only once all three are
complete, with image_label last, so a crash never leaves a mismatched pair that looks complete.
"""

import contextlib
import json
import os
import time

import configs
from multilabel import arguments, errors, files

OUTPUTS = ("image_list", "label_names.txt", "image_label")  # renamed in this order


def _keep_ids(obj):
  """object_hook: shrinks an annotation or an image entry to the fields used, as it is parsed."""
  if "category_id" in obj:  # an annotation: segmentation, bbox and area are dropped here
    return {"image_id": obj.get("image_id"), "category_id": obj["category_id"],
            "iscrowd": obj.get("iscrowd", 0)}
  if "file_name" in obj:  # an image: sizes, dates, licence and URLs are dropped
    return {"id": obj.get("id"), "file_name": obj["file_name"]}
  return obj


def read_coco(path):
  """(images [(id, file_name)], categories [(id, name)] by id, annotations [(image_id,
  category_id, iscrowd)]) from a COCO instances file, or errors.DataError naming what is wrong."""
  try:
    # text mode: the file's bytes are freed once decoded, before parsing adds its objects
    with open(path, encoding="utf-8-sig") as f:
      data = json.load(f, object_hook=_keep_ids)
  except json.JSONDecodeError as e:
    raise errors.DataError(f"{path}:{e.lineno}:{e.colno}: not valid JSON ({e.msg})") from None
  except UnicodeDecodeError as e:
    raise errors.DataError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
  if not isinstance(data, dict):
    raise errors.DataError(f"{path}: expected a JSON object with images, annotations and "
                           "categories")
  missing = [key for key in ("images", "annotations", "categories")
             if not isinstance(data.get(key), list)]
  if missing:
    raise errors.DataError(f"{path}: no {' or '.join(missing)} list; is this an instances_*.json "
                           "file?")

  def fields(key, names, types):
    for i, entry in enumerate(data[key]):
      values = tuple(entry.get(name) if isinstance(entry, dict) else None for name in names)
      bad = [n for n, v, t in zip(names, values, types) if not isinstance(v, t)]
      if bad:
        raise errors.DataError(f"{path}: {key}[{i}] has no valid {', '.join(bad)}: "
                               f"{entry!r:.200}")
      yield values

  images = list(fields("images", ("id", "file_name"), (int, str)))
  categories = sorted(fields("categories", ("id", "name"), (int, str)))
  annotations = list(fields("annotations", ("image_id", "category_id", "iscrowd"),
                            (int, int, int)))
  for key, entries in (("images", images), ("categories", categories)):
    seen = set()
    for entry_id, _ in entries:
      if entry_id in seen:
        raise errors.DataError(f"{path}: {key} id {entry_id} appears more than once")
      seen.add(entry_id)
  for i, (_, name) in enumerate(images):
    if name != name.strip() or "\n" in name or "\r" in name:
      raise errors.DataError(f"{path}: images[{i}] file_name {name!r} has surrounding spaces or "
                             "a line break, which image_list cannot hold")
  return images, categories, annotations


def choose_categories(categories, wanted):
  """The (id, name) of the kept categories, in label order; ConfigError for an unknown name."""
  if not wanted.strip():
    return categories
  names = [name.strip() for name in wanted.split(",") if name.strip()]
  by_name = {}
  for category_id, name in categories:
    by_name.setdefault(name, []).append(category_id)
  for name in names:
    if name not in by_name:
      raise errors.ConfigError(f"--categories: unknown category {name!r}; the file has: "
                               f"{', '.join(n for _, n in categories)}")
    if len(by_name[name]) > 1:
      raise errors.ConfigError(f"--categories: {name!r} names categories {by_name[name]}")
    if names.count(name) > 1:
      raise errors.ConfigError(f"--categories: {name!r} is given twice")
  return [(by_name[name][0], name) for name in names]


def label_rows(images, categories, kept, annotations, path):
  """{image id: set of label columns}, and the number of kept annotations and crowd ones among
  them; errors.DataError for an annotation of an unknown image or category."""
  column = {category_id: j for j, (category_id, _) in enumerate(kept)}
  known_categories = {category_id for category_id, _ in categories}
  rows = {image_id: set() for image_id, _ in images}
  used = crowd = 0
  for i, (image_id, category_id, iscrowd) in enumerate(annotations):
    if image_id not in rows:
      raise errors.DataError(f"{path}: annotations[{i}] is of image {image_id}, which is not in "
                             "images")
    if category_id not in known_categories:
      raise errors.DataError(f"{path}: annotations[{i}] has category {category_id}, which is not "
                             "in categories")
    if category_id in column:
      rows[image_id].add(column[category_id])
      used += 1
      crowd += bool(iscrowd)
  return rows, used, crowd


def write_outputs(output_dir, texts):
  """Writes {name: text} to temp files, then replaces the outputs in OUTPUTS order
  (files.atomic_write renames each as its block exits, the last entered first): if one write
  fails, no output is replaced."""
  with contextlib.ExitStack() as stack:
    for name in reversed(OUTPUTS):
      path = os.path.join(output_dir, name)
      f = stack.enter_context(files.atomic_write(path, encoding="utf-8", newline="\n",
                                                 size=len(texts[name].encode())))
      f.write(texts[name])
      f.flush()  # a full disk fails here, before any old output is removed
    for name in OUTPUTS:  # no old file may stay beside a new one: they would not match
      files.discard(os.path.join(output_dir, name))


def main(argv):
  # Configuration: edit here, or override with --field=value.
  cfg = configs.CocoConfig()
  arguments.parse_overrides(argv, cfg, usage=__doc__)
  if not os.path.isfile(cfg.annotations):
    raise errors.MissingFileError(f"--annotations={cfg.annotations!r}: no such file")

  # 1. Read the JSON, keeping the ids only.
  start = time.time()
  print(f"reading {cfg.annotations} ({os.path.getsize(cfg.annotations) / 1e6:.1f} MB) ...",
        flush=True)
  images, categories, annotations = read_coco(cfg.annotations)
  print(f"{len(images)} images, {len(annotations)} annotations, {len(categories)} categories "
        f"read in {time.time() - start:.1f} s")

  # 2. One label per kept category; a row per image.
  kept = choose_categories(categories, cfg.categories)
  rows, used, crowd = label_rows(images, categories, kept, annotations, cfg.annotations)
  list_lines, label_lines, empty = [], [], 0
  for image_id, file_name in images:
    ones = rows[image_id]
    empty += not ones
    if cfg.drop_empty and not ones:
      continue
    list_lines.append(f"{file_name} {len(ones)}\n")
    label_lines.append(" ".join("1" if j in ones else "0" for j in range(len(kept))) + "\n")
  if not list_lines:
    raise errors.DataError(f"{cfg.annotations}: no image has an annotation of the kept "
                           "categories; nothing was written")

  # 3. Write the three files, atomically.
  write_outputs(cfg.output_dir, {"image_list": "".join(list_lines),
                                 "image_label": "".join(label_lines),
                                 "label_names.txt": "".join(f"{n}\n" for _, n in kept)})
  print(f"wrote {len(list_lines)} images x {len(kept)} labels to {cfg.output_dir}/"
        f"{{{','.join(OUTPUTS)}}}")
  print(f"  annotations of the kept categories: {used} (crowd: {crowd}); images without one: "
        f"{empty} ({'dropped' if cfg.drop_empty else 'kept as all-zero rows'})")
  print(f"  done in {time.time() - start:.1f} s")


if __name__ == "__main__":
  errors.run(main)
