"""coco_to_image_list.py on a small COCO instances JSON written here, checked by hand."""

import json
import os
import subprocess
import sys

import pytest

import coco_to_image_list
import create_tfrecord
from tests.helpers import REPO, run_script_main


def box(annotation_id, image_id, category_id, iscrowd=0):
  """An annotation as COCO writes one: a polygon, or RLE counts for a crowd region."""
  segmentation = ({"counts": [12, 3, 40, 2, 9], "size": [480, 640]} if iscrowd
                  else [[10.5, 20.25, 30.0, 20.25, 30.0, 44.75]])
  return {"id": annotation_id, "image_id": image_id, "category_id": category_id,
          "iscrowd": iscrowd, "segmentation": segmentation, "area": 321.5,
          "bbox": [10.5, 20.25, 19.5, 24.5]}


def image(image_id, file_name):
  return {"id": image_id, "file_name": file_name, "width": 640, "height": 480,
          "license": 3, "coco_url": f"http://images.cocodataset.org/val2014/{file_name}",
          "date_captured": "2013-11-14 16:28:13"}


COCO = {
    "info": {"description": "test", "year": 2014},
    "licenses": [{"id": 3, "name": "CC", "url": "http://x"}],
    # not in id order, and not sorted by file name either
    "images": [image(42, "COCO_val2014_000000000042.jpg"),
               image(7, "COCO_val2014_000000000007.jpg"), image(9, "no boxes.jpg"),
               image(13, "COCO_val2014_000000000013.jpg")],
    # out of id order: by id the labels are person (1), car (3), dog (18)
    "categories": [{"id": 18, "name": "dog", "supercategory": "animal"},
                   {"id": 1, "name": "person", "supercategory": "person"},
                   {"id": 3, "name": "car", "supercategory": "vehicle"}],
    "annotations": [box(100, 7, 1), box(101, 7, 1),  # two boxes of one class: one 1
                    box(102, 42, 18), box(103, 42, 3, iscrowd=1),  # a crowd car counts
                    box(104, 13, 3, iscrowd=1)],  # image 9 has no annotation at all
}


@pytest.fixture
def coco_file(tmp_path):
  path = tmp_path / "instances_val2014.json"
  path.write_text(json.dumps(COCO))
  return path


def run(capsys, *argv):
  return run_script_main(capsys, coco_to_image_list.main, argv)


def outputs(folder):
  return {name: (folder / name).read_text() for name in coco_to_image_list.OUTPUTS}


def test_all_categories_by_id_in_the_originals_format(coco_file, tmp_path, capsys):
  out_dir = tmp_path / "out"
  code, out, err = run(capsys, f"--annotations={coco_file}", f"--output_dir={out_dir}")
  assert code == 0, err
  assert outputs(out_dir) == {
      "label_names.txt": "person\ncar\ndog\n",
      "image_list": ("COCO_val2014_000000000042.jpg 2\nCOCO_val2014_000000000007.jpg 1\n"
                     "no boxes.jpg 0\nCOCO_val2014_000000000013.jpg 1\n"),
      "image_label": "0 1 1\n1 0 0\n0 0 0\n0 1 0\n"}
  assert sorted(os.listdir(out_dir)) == sorted(coco_to_image_list.OUTPUTS)  # no temp files
  assert "4 images, 5 annotations, 3 categories" in out
  assert "annotations of the kept categories: 5 (crowd: 2); images without one: 1" in out
  # create_tfrecord.py reads them as they are (count column = the 1s of each row)
  entries = create_tfrecord.read_list_and_labels(str(out_dir / "image_list"),
                                                 str(out_dir / "image_label"))
  assert entries[2] == ("no boxes.jpg", [0, 0, 0])


def test_a_subset_in_the_given_order_and_drop_empty(coco_file, tmp_path, capsys):
  out_dir = tmp_path / "out"
  code, out, err = run(capsys, f"--annotations={coco_file}", f"--output_dir={out_dir}",
                       "--categories= dog ,person", "--drop_empty=true")
  assert code == 0, err
  assert outputs(out_dir) == {
      "label_names.txt": "dog\nperson\n",
      "image_list": "COCO_val2014_000000000042.jpg 1\nCOCO_val2014_000000000007.jpg 1\n",
      "image_label": "1 0\n0 1\n"}
  assert "annotations of the kept categories: 3 (crowd: 0); images without one: 2 (dropped)" in out


def test_unknown_category_is_a_clear_error_and_writes_nothing(coco_file, tmp_path, capsys):
  out_dir = tmp_path / "out"
  assert run(capsys, f"--annotations={coco_file}", f"--output_dir={out_dir}")[0] == 0
  before = outputs(out_dir)
  code, _, err = run(capsys, f"--annotations={coco_file}", f"--output_dir={out_dir}",
                     "--categories=dog,unicorn")
  assert code == 2
  assert "error: --categories: unknown category 'unicorn'; the file has: person, car, dog" in err
  assert outputs(out_dir) == before and sorted(os.listdir(out_dir)) == sorted(before)
  code, _, err = run(capsys, f"--annotations={coco_file}", f"--output_dir={out_dir}",
                     "--categories=dog,dog")
  assert code == 2 and "'dog' is given twice" in err


@pytest.mark.parametrize("change, message", [
    (lambda d: d["annotations"].append(box(105, 99, 1)), "annotations[5] is of image 99"),
    (lambda d: d["annotations"].append(box(105, 7, 2)), "annotations[5] has category 2"),
    (lambda d: d["images"].append(image(7, "again.jpg")), "images id 7 appears more than once"),
    (lambda d: d["images"][1].pop("file_name"), "images[1] has no valid file_name"),
    (lambda d: d.pop("categories"), "no categories list"),
])
def test_bad_annotation_files_exit_1_naming_the_entry(tmp_path, capsys, change, message):
  data = json.loads(json.dumps(COCO))
  change(data)
  path = tmp_path / "bad.json"
  path.write_text(json.dumps(data))
  code, _, err = run(capsys, f"--annotations={path}", f"--output_dir={tmp_path / 'out'}")
  assert code == 1 and f"error: {path}: {message}" in err
  assert not (tmp_path / "out").exists()


def test_the_real_process_exit_statuses_without_tracebacks(tmp_path):
  broken = tmp_path / "broken.json"
  broken.write_text('{"images": [\n  {"id": 1,,}\n]}')
  cases = [([f"--annotations={broken}", f"--output_dir={tmp_path}"], 1, f"{broken}:2:"),
           ([f"--annotations={tmp_path / 'none.json'}", f"--output_dir={tmp_path}"], 1,
            "no such file"),  # a missing input file is bad data (issue 12's errors.py): 1
           ([f"--annotations={broken}"], 2, "--output_dir is required")]
  for argv, code, phrase in cases:
    result = subprocess.run([sys.executable, "coco_to_image_list.py", *argv], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == code and phrase in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1
