"""Turns a folder of images plus the original's image_list / image_label files into TFRecords.

Input, as in the original toolkit (CRLF line endings and blank lines are fine):
  image_list   "<name> <count>" per line, e.g. "COCO_val2014_000000320715.jpg 3"; the name is
               relative to image_dir and may contain spaces; count = number of 1s in its label row
  image_label  "1 0 1 0 ..." per line, one 0/1 per label, same order as image_list; -1 marks a
               label nobody checked (unknown): stored as is, skipped by the loss and the metrics

Both files are checked completely before anything is written; every error names the file and line
(exit status 1). Names that lead out of image_dir (absolute, ../, or a symlink out of it) are
stored as listed, and the summary counts them. Every image is then decoded (Pillow, one process
per core; one over the pixel limit, image_decoding.too_large, is skipped undecoded): RGB JPEGs are
stored byte for byte; PNG, GIF, BMP, WebP, grayscale, RGBA (composited on white), palette and CMYK
images are converted to RGB and re-encoded as JPEG, whatever their extension (with --lossless,
as PNG instead, and RGB PNGs stored byte for byte: JPEG rings around the edges of flat-colour art
such as icons, emoji and diagrams); unreadable images are skipped with one line each. Records
are tf.train.SequenceExample in the original layout (see records.py), written in a seeded
shuffled order, round-robin over the shards; each shard is written to a temporary name and
renamed when complete. Temp files that an interrupted run (kill -9) left are removed, and
named, at the start. Ctrl-C or SIGTERM stops it with no output file
written.

    python create_tfrecord.py --image_dir=data/demo/train/images \\
        --imglist_file=data/demo/train/image_list --imglabel_file=data/demo/train/image_label \\
        --output_file=data/demo/train.tfrecord
    python create_tfrecord.py --image_dir=imgs --imglist_file=image_list \\
        --imglabel_file=image_label --output_file=out/train.tfrecord --num_shards=4 --max_side=512
"""

import collections
import contextlib
import fnmatch
import glob
import os
import random
import signal
import sys

import multilabel.startup  # noqa: F401 -- first: TensorFlow's C++ start-up lines filtered

import configs
from multilabel import arguments, errors, files, runtime, textfiles
from multilabel.data import records
from multilabel.data.image_decoding import image_results


# The original parsed labels as floats, so "1.0" is a 1; -1 is an unknown label.
LABEL_TOKENS = ("0", "1", "0.0", "1.0", "-1", "-1.0")


class InputError(errors.DataError):
  """Bad image_list / image_label content; the message names the file and line."""


def read_list_and_labels(imglist_file, imglabel_file, max_errors=20):
  """Reads and cross-checks both files; returns [(name, labels)] or raises InputError.

  All problems are collected, so that one run reports every bad line: one problem is the error's
  message; several are its details (up to max_errors of them), printed above it.
  """
  list_lines = textfiles.text_lines(imglist_file, "imglist_file")  # BOM, CRLF, blank lines
  label_lines = textfiles.text_lines(imglabel_file, "imglabel_file")
  if not list_lines:
    raise InputError(f"{imglist_file}: no entries")
  problems, entries, row_length = [], [], None
  if len(list_lines) != len(label_lines):
    longer, lines = ((imglist_file, list_lines) if len(list_lines) > len(label_lines)
                     else (imglabel_file, label_lines))
    first_extra = lines[min(len(list_lines), len(label_lines))][0]
    problems.append(f"{longer}:{first_extra}: line count mismatch: {imglist_file} has "
                    f"{len(list_lines)} entries but {imglabel_file} has {len(label_lines)} rows; "
                    f"this is the first line without a partner")
  for (list_no, list_text), (label_no, label_text) in zip(list_lines, label_lines):
    where_list, where_label = f"{imglist_file}:{list_no}", f"{imglabel_file}:{label_no}"
    entry = textfiles.list_entry(list_text)  # the name may contain spaces; the count is last
    if entry is None:
      problems.append(f"{where_list}: expected '<image name> <label count>', got {list_text!r}")
      continue
    name, count = entry
    tokens = label_text.split()
    labels = []
    for j, token in enumerate(tokens):
      if token not in LABEL_TOKENS:
        problems.append(f"{where_label}: label {j} is {token!r}; labels must be 0 or 1 "
                        f"(or -1, unknown)")
        break
      labels.append(int(float(token)))
    if len(labels) != len(tokens):
      continue
    if row_length is None:
      row_length = (len(labels), label_no)
    elif len(labels) != row_length[0]:
      problems.append(f"{where_label}: {len(labels)} labels, but line {row_length[1]} has "
                      f"{row_length[0]}; every row needs one 0/1 per label")
      continue
    if count != labels.count(1):  # the 1s only: an unknown is not a label the image carries
      problems.append(f"{where_list}: count {count} for {name!r}, but its label row "
                      f"{where_label} has {labels.count(1)} ones")
      continue
    entries.append((name, labels))
  if len(problems) == 1:
    raise InputError(problems[0])
  if problems:
    more = [f"... and {len(problems) - max_errors} more"] if len(problems) > max_errors else []
    raise InputError(f"{len(problems)} bad lines in {imglist_file} and {imglabel_file}, listed "
                     "above", problems[:max_errors] + more)
  return entries


def _raise_interrupt(signum, frame):
  raise KeyboardInterrupt(f"signal {signum}")


def stale_temp_files(output_file):
  """The temp files that interrupted runs writing `output_file` (its shards of any count
  included) left beside it: a run killed outright (kill -9, a power cut) cannot remove them."""
  base = os.path.basename(output_file)
  shard = glob.escape(base) + records.SHARD_GLOB
  return files.stale_temp_files(os.path.dirname(os.path.abspath(output_file)),
                                 lambda name: name == base or fnmatch.fnmatchcase(name, shard))


def write_records(outputs, entries, paths, num_workers, max_side, jpeg_quality, lossless):
  """Decodes every image in parallel (image_workers.prepare_image) and writes the good ones
  round-robin over the shard files `outputs`, each atomically. entries: (name, labels) in record order; paths:
  their image paths. Returns (counts: written, stored, re-encoded, resized, unknown; skipped:
  per reason). Ctrl-C or SIGTERM: no output file is written, exit 130."""
  counts, skipped = collections.Counter(), collections.Counter()
  progress = runtime.Progress(len(entries), "images")
  tasks = [(path, max_side, jpeg_quality, lossless) for path in paths]
  previous_handler = signal.signal(signal.SIGTERM, _raise_interrupt)  # kill cleans up like Ctrl-C
  try:
    with image_results(tasks, num_workers) as results, contextlib.ExitStack() as stack:
      writers = [stack.enter_context(records.atomic_tfrecord_writer(p)) for p in outputs]
      for i, result in enumerate(results):
        if result[0] == "skip":
          progress.clear()
          print(f"skip {paths[i]}: {result[1]} ({result[2]})")
          skipped[result[1]] += 1
        else:
          example = records.make_example(paths[i], result[1], entries[i][1])
          writers[counts["written"] % len(writers)].write(example.SerializeToString())
          counts["written"] += 1
          counts[result[2]] += 1
          counts["unknown"] += entries[i][1].count(textfiles.UNKNOWN)
        progress.update(i + 1)
      progress.finish(len(entries))
      if not counts["written"]:  # raised inside, so that the temp files are removed
        raise InputError(f"all {len(entries)} images were skipped; nothing was written")
  except KeyboardInterrupt:
    print("\ninterrupted; no output file was written", file=sys.stderr)
    sys.exit(130)
  finally:
    signal.signal(signal.SIGTERM, previous_handler)

  return counts, skipped


def outside_image_dir(image_dir, names):
  """The list's paths that are not inside image_dir once resolved: absolute names, ../ names
  and symlinks that lead out of it (os.path.realpath follows them). They are stored all the
  same, as the original did; the summary counts them, since a list that reaches out of its
  folder is often a mistake. realpath costs a few stats per entry, nothing beside the decode."""
  root = os.path.realpath(image_dir)
  paths = [os.path.join(image_dir, name) for name in names]
  return [path for path in paths
          if os.path.commonpath([root, os.path.realpath(path)]) != root]


def print_summary(output_file, outputs, counts, skipped, label_count, outside=None,
                  lossless=False):
  """What was written and skipped, the entries outside image_dir (a list of them; None without
  an image_dir), and a warning for shards of an earlier run beside them."""
  where = (outputs[0] if len(outputs) == 1
           else f"{len(outputs)} shards {outputs[0]} .. {outputs[-1]}")
  print(f"wrote {counts['written']} records to {where}")
  encoding = "PNG" if lossless else "JPEG"
  print(f"  stored unchanged: {counts['stored']}, re-encoded as {encoding}: "
        f"{counts['re-encoded'] + counts['resized']} (of which resized: {counts['resized']})")
  reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(skipped.items()))
  print(f"  skipped: {sum(skipped.values())}" + (f" ({reasons})" if reasons else ""))
  print(f"  unknown labels (-1): {counts['unknown']} of {counts['written'] * label_count} "
        f"entries")
  if outside is not None:
    print(f"  outside image_dir: {len(outside)} entries" + (
        f" (absolute, ../ or a symlink out of it; stored as listed, e.g. {outside[0]})"
        if outside else ""))
  stale = sorted(set(glob.glob(glob.escape(output_file) + records.SHARD_GLOB)) - set(outputs))
  if stale:  # e.g. 4 shards from an earlier run, 2 now: a glob over both would read old records
    print(f"warning: {len(stale)} shard(s) of an earlier run are still there, e.g. {stale[0]}; "
          f"delete them before reading {output_file}-* as a glob", file=sys.stderr)



def main(argv):
  # Configuration: edit here, or override with --field=value.
  cfg = configs.CreateTFRecordConfig()
  arguments.parse_overrides(argv, cfg, usage=__doc__)
  if cfg.image_dir and not os.path.isdir(cfg.image_dir):
    raise errors.ConfigError(f"--image_dir={cfg.image_dir!r}: no such directory")
  if os.path.isdir(cfg.output_file):
    raise errors.ConfigError(f"--output_file={cfg.output_file!r} is a directory; give a file name")
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  num_workers = cfg.num_workers or cores or 1
  max_side = cfg.max_side or sys.maxsize

  # 1. Read and check the list and label files completely; nothing is written before this.
  try:
    entries = read_list_and_labels(cfg.imglist_file, cfg.imglabel_file)
  except errors.DataError as e:  # InputError, or a list file missing or not UTF-8
    raise type(e)(f"{e}; nothing was written", e.details) from None
  print(f"{len(entries)} images, {len(entries[0][1])} labels in {cfg.imglist_file}")
  outside = (outside_image_dir(cfg.image_dir, [name for name, _ in entries])
             if cfg.image_dir else None)  # in list order, before the shuffle

  # 2. Shuffle the record order (the original shuffled too); seed -1 keeps the list order.
  if cfg.seed >= 0:
    random.Random(cfg.seed).shuffle(entries)
  paths = [os.path.join(cfg.image_dir, name) for name, _ in entries]  # stored as image_path

  # 3. Decode every image in parallel and write the good ones round-robin over the shards.
  outputs = records.shard_paths(cfg.output_file, cfg.num_shards)
  for path in stale_temp_files(cfg.output_file):
    os.remove(path)
    print(f"removed {path}: a temp file of an interrupted run")
  counts, skipped = write_records(outputs, entries, paths, num_workers, max_side,
                                  cfg.jpeg_quality, cfg.lossless)

  # 4. Summary.
  print_summary(cfg.output_file, outputs, counts, skipped, len(entries[0][1]), outside,
                cfg.lossless)


if __name__ == "__main__":
  errors.run(main)
