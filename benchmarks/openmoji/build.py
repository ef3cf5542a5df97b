"""Builds a multi-label emoji image set in the toolkit's input formats (README.md beside this).

Images: the colour OpenMoji emoji (npm `openmoji` 17.0.0, CC BY-SA 4.0), rendered from their
SVGs with cairosvg at --size px onto white (RGB PNG). A second design for the test split (and,
with --noto_all, for every split): the same emoji as drawn by Noto Color Emoji (npm
`emoji-datasource-google` 16.0.0, 64 px PNGs, kept at 64 px and composited onto white).

Labels: each emoji's Unicode CLDR keywords (`tags` in OpenMoji's data/openmoji.json; a skin-tone
variant has none of its own and takes those of its base emoji, `skintone_base_hexcode`) plus its
emoji group. Keywords without a letter (numbers, times, punctuation) are dropped; keywords and
group names are lowercased and plurals are merged into their singular when the singular also
occurs (labels.singular). The vocabulary is the --labels labels carried by the most emoji
families (ties: more images, then the name). An image may end up with no label of the
vocabulary: it is kept, with an all-zero row (count 0).

Splits: train/eval/test, about 60/20/20 of the images, never splitting an emoji family (every
skin-tone, gender, hair and direction variant of one base emoji: labels.family_key); families
are placed by iterative stratification (each label's images spread 60/20/20 as far as families
allow), with ties broken by a --seed shuffle of the sorted families.

Output, per split in train, eval, test, test_noto: <out>/<split>/images/<hexcode>.png,
<out>/<split>/image_list ("<file name> <number of labels>"), <out>/<split>/image_label (the
matching row of 0/1), plus <out>/label_names.txt, <out>/emoji.tsv (what each image is) and
<out>/ATTRIBUTION.txt. The same flags give byte-identical files.

    python -m benchmarks.openmoji.build --out data/openmoji [--size 128] [--labels 30] [--seed 0]

Needs Pillow, cairosvg (benchmarks/openmoji/requirements.txt, with the cairo library: Debian's
libcairo2) and, to fetch the two npm tarballs into --cache once, npm. Errors are one line: exit
status 2 for a missing dependency or a bad flag, 1 for a failed download or a tarball whose
checksum does not match.
"""

import argparse
import json
import os
import shutil
import sys
import time

from benchmarks.openmoji import labels, render
from benchmarks.openmoji.fetch import NOTO, OPENMOJI, fetch_tarball, read_tarball
from multilabel import errors
from multilabel.errors import DataError

ATTRIBUTION = """\
Images in train/, eval/, test/ (and the OpenMoji rows of emoji.tsv):
  All emojis designed by OpenMoji (https://openmoji.org/) - the open-source emoji and icon
  project. License: CC BY-SA 4.0 (https://creativecommons.org/licenses/by-sa/4.0/).
  Rendered from the colour SVGs of the npm package openmoji@{openmoji_version} at {size} px onto
  white; these renderings are adaptations and are shared under CC BY-SA 4.0 too.

Images in *_noto/:
  Noto Color Emoji, Copyright Google LLC, images under the Apache License 2.0
  (https://github.com/googlefonts/noto-emoji/blob/main/LICENSE; its flag images are in the
  public domain, third_party/region-flags there; the font itself is under the SIL Open Font
  License 1.1, but no font is used here), taken from the npm package
  emoji-datasource-google@{noto_version} (emoji-data, MIT, Copyright (c) 2013 Cal Henderson),
  composited onto white at 64 px.

Labels (label_names.txt, image_label):
  Unicode CLDR emoji annotations (keywords) as carried in OpenMoji's data/openmoji.json, and
  Unicode's emoji groups. Unicode data, Copyright Unicode, Inc., Unicode License v3
  (https://www.unicode.org/license.txt).

Built by python -m benchmarks.openmoji.build; not to be committed to a repository.
"""
OUTPUT_FILES = ("label_names.txt", "emoji.tsv", "ATTRIBUTION.txt")


def write_lines(path, lines):
  with open(path, "w", encoding="utf-8", newline="\n") as f:
    f.writelines(line + "\n" for line in lines)


def read_openmoji(path):
  """(kept entries sorted by hexcode, each with its file and family; entries by hexcode; the
  colour SVGs by member name) from the openmoji tarball."""
  openmoji = read_tarball(path, lambda name: name == "package/data/openmoji.json"
                          or name.startswith("package/color/svg/"))
  data = json.loads(openmoji["package/data/openmoji.json"])
  by_hexcode = {e["hexcode"]: e for e in data}
  entries = sorted((e for e in data if e["group"] and e["group"] not in labels.SKIPPED_GROUPS),
                   key=lambda e: e["hexcode"])
  print(f"OpenMoji {OPENMOJI[1]}: {len(data)} entries, {len(entries)} Unicode emoji kept "
        f"(skipped groups {', '.join(labels.SKIPPED_GROUPS)}: {len(data) - len(entries)})")
  for e in entries:
    e["file"] = e["hexcode"].lower() + ".png"
    e["family"] = labels.family_key(e["skintone_base_hexcode"] or e["hexcode"])
    if labels.family_key(e["hexcode"]) != e["family"]:
      raise DataError(f"{e['hexcode']}: family {labels.family_key(e['hexcode'])} differs from "
                      f"its skin-tone base's {e['family']}")
    if f"package/color/svg/{e['hexcode']}.svg" not in openmoji:
      raise DataError(f"{path}: no color/svg/{e['hexcode']}.svg")
  return entries, by_hexcode, openmoji


def match_noto(path, entries):
  """Sets each entry's "noto" to its Noto PNG's member name (None if Noto has none); returns
  the PNGs by member name. Matched on the codepoints without FE0F."""
  noto_files = read_tarball(path, lambda name: name == "package/emoji.json"
                            or name.startswith("package/img/google/64/"))
  noto_index = {}  # codepoints without FE0F -> PNG member name
  for item in json.loads(noto_files["package/emoji.json"]):
    for variant in [item] + list((item.get("skin_variations") or {}).values()):
      member = f"package/img/google/64/{variant['image']}"
      if variant.get("has_img_google") and member in noto_files:
        noto_index[variant["unified"].upper().replace("-FE0F", "")] = member
  for e in entries:
    e["noto"] = noto_index.get(e["hexcode"].upper().replace("-FE0F", ""))
  return noto_files


def write_set(args, entries, names, openmoji, noto_files):
  """Renders every image and writes the lists into <out>/.building, then moves them into place
  (replacing an earlier build's splits). Returns ({split: its entries}, the split names)."""
  noto_splits = ["train", "eval", "test"] if args.noto_all else ["test"]
  split_names = [name for name, _ in labels.SPLITS] + [f"{name}_noto" for name in noto_splits]
  staging = os.path.join(args.out, ".building")
  shutil.rmtree(staging, ignore_errors=True)
  tasks, members = [], {name: [] for name in split_names}
  for name in split_names:
    os.makedirs(os.path.join(staging, name, "images"))
  for e in entries:
    members[e["split"]].append(e)
    tasks.append(("svg", openmoji[f"package/color/svg/{e['hexcode']}.svg"], args.size,
                  os.path.join(staging, e["split"], "images", e["file"])))
    if e["noto"] and e["split"] in noto_splits:
      noto_split = e["split"] + "_noto"
      members[noto_split].append(e)
      tasks.append(("png", noto_files[e["noto"]], render.NOTO_SIZE,
                    os.path.join(staging, noto_split, "images", e["file"])))
  print(f"rendering {len(tasks)} images with {args.workers} worker(s)", flush=True)
  render.render_all(tasks, args.workers)

  for name in split_names:
    chosen = members[name]
    write_lines(os.path.join(staging, name, "image_list"),
                [f"{e['file']} {sum(e['row'])}" for e in chosen])
    write_lines(os.path.join(staging, name, "image_label"),
                [" ".join(map(str, e["row"])) for e in chosen])
  write_lines(os.path.join(staging, "label_names.txt"), names)
  header = "\t".join(["file", "split", "hexcode", "emoji", "annotation", "group", "subgroup",
                      "family", "noto", "labels"])
  write_lines(os.path.join(staging, "emoji.tsv"), [header] + [
      "\t".join([e["file"], e["split"], e["hexcode"], e["emoji"], e["annotation"], e["group"],
                 e["subgroups"], e["family"], "1" if e["noto"] else "0",
                 ",".join(n for n, v in zip(names, e["row"]) if v)]) for e in entries])
  write_lines(os.path.join(staging, "ATTRIBUTION.txt"), ATTRIBUTION.format(
      openmoji_version=OPENMOJI[1], noto_version=NOTO[1], size=args.size).splitlines())
  for name in ["train", "eval", "test", "train_noto", "eval_noto", "test_noto"]:
    shutil.rmtree(os.path.join(args.out, name), ignore_errors=True)
  for name in split_names + list(OUTPUT_FILES):
    os.replace(os.path.join(staging, name), os.path.join(args.out, name))
  os.rmdir(staging)
  return members, split_names


def build(args):
  started = time.time()
  render.check_dependencies()
  cache = args.cache or os.path.join(args.out, ".cache")
  openmoji_tgz = fetch_tarball(OPENMOJI, cache)
  noto_tgz = fetch_tarball(NOTO, cache)

  # 1. OpenMoji's data and colour SVGs; Noto's index and 64 px PNGs.
  entries, by_hexcode, openmoji = read_openmoji(openmoji_tgz)
  noto_files = match_noto(noto_tgz, entries)

  # 2. Labels and the vocabulary.
  per_entry, vocabulary, family_counts, merged_into = labels.build_labels(entries, by_hexcode,
                                                                          args.labels)
  names = [labels.label_name(label) for label in vocabulary]
  if len(set(names)) != len(names):
    raise DataError("two labels have the same name once spaces become underscores")
  rows = [[1 if label in found else 0 for label in vocabulary] for found in per_entry]

  # 3. Splits, by family.
  split_of_family = labels.assign_splits(entries, rows, args.seed)
  for e, row in zip(entries, rows):
    e["split"], e["row"] = split_of_family[e["family"]], row

  # 4. Write everything into a fresh folder, then move it into place.
  members, split_names = write_set(args, entries, names, openmoji, noto_files)
  summarize(entries, members, split_names, vocabulary, names, family_counts, merged_into)
  print(f"done in {time.time() - started:.1f} s: {args.out}")


def summarize(entries, members, split_names, vocabulary, names, family_counts, merged_into):
  print()
  print("split        images  families  labels/image (mean, min-max)  no label")
  for name in split_names:
    chosen = members[name]
    counts = [sum(e["row"]) for e in chosen]
    mean = sum(counts) / len(counts) if counts else 0.0
    spread = f"{min(counts)}-{max(counts)}" if counts else "-"
    print(f"{name:<12} {len(chosen):>6}  {len({e['family'] for e in chosen}):>8}  "
          f"{mean:>10.2f} ({spread:>5}){'':>14}{counts.count(0):>8}")
  test = members["test"]
  with_noto = sum(1 for e in test if e["noto"])
  print(f"test emoji with a Noto counterpart: {with_noto}/{len(test)}; "
        f"all splits: {sum(1 for e in entries if e['noto'])}/{len(entries)}")
  print()
  width = max(len(n) for n in names) if names else 5
  print(f"{'label':<{width}}  families     images  " + "  ".join(f"{n:>9}" for n in split_names)
        + "  merged from")
  for j, (label, name) in enumerate(zip(vocabulary, names)):
    per_split = [sum(e["row"][j] for e in members[split]) for split in split_names]
    merged = ", ".join(sorted(merged_into.get(label, ())))
    total = sum(e["row"][j] for e in entries)
    print(f"{name:<{width}}  {family_counts[label]:>8}  {total:>9}  "
          + "  ".join(f"{count:>9}" for count in per_split) + f"  {merged}")
  empty = [name for j, name in enumerate(names)
           if any(sum(e["row"][j] for e in members[split]) == 0
                  for split in ("train", "eval", "test"))]
  if empty:
    print(f"warning: labels without a positive in train, eval or test: {', '.join(empty)}")
  print()
  print("vocabulary: " + " ".join(names))


def positive_int(text):
  value = int(text)
  if value < 1:
    raise argparse.ArgumentTypeError(f"{text}: must be at least 1")
  return value


def parse_args(argv):
  parser = argparse.ArgumentParser(prog="python -m benchmarks.openmoji.build",
                                   description=__doc__.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", required=True, help="output folder")
  parser.add_argument("--size", type=positive_int, default=128,
                      help="OpenMoji image side in px (default 128)")
  parser.add_argument("--labels", type=positive_int, default=30,
                      help="vocabulary size (default 30)")
  parser.add_argument("--cache", default=None,
                      help="folder for the npm tarballs (default <out>/.cache)")
  parser.add_argument("--seed", type=int, default=0, help="split shuffle seed (default 0)")
  parser.add_argument("--workers", type=positive_int, default=2,
                      help="rendering processes (default 2)")
  parser.add_argument("--noto_all", "--noto-all", action="store_true",
                      help="also write train_noto and eval_noto, not only test_noto")
  return parser.parse_args(argv)


def main(argv):
  args = parse_args(argv)
  try:
    build(args)
  except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
    return 130
  return 0


if __name__ == "__main__":
  errors.run(main)
