"""Ground-truth boxes in manifests: JSONL ``objects``, COCO ``annotations[].bbox`` and
CSV with one object per row, their checks (each error names file, line and key), image
sizes, and the boxes reaching the store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from calibrate.errors import InputError
from calibrate.manifest import GroundTruthObject, read_manifest
from calibrate.manifest.boxes import BOUNDS_TOLERANCE_PX
from calibrate.store import ScoreStore


@pytest.fixture
def folder(tmp_path) -> Path:
    for name in ("a", "b", "c"):
        Image.new("RGB", (200, 100), (90, 90, 90)).save(tmp_path / f"{name}.png")
    return tmp_path


def jsonl(folder: Path, *lines) -> Path:
    path = folder / "m.jsonl"
    path.write_text("\n".join(json.dumps(x) if not isinstance(x, str) else x for x in lines)
                    + "\n")
    return path


def by_id(labeled):
    return {img.image_id: img for img in labeled}


def G(label, *box, ignore=False):
    return GroundTruthObject(label, tuple(float(v) for v in box), ignore)


# ---------------------------------------------------------------------------------------
# JSONL
# ---------------------------------------------------------------------------------------


def test_jsonl_objects_in_pixels_and_ratios_with_labels_derived_or_checked(folder):
    path = jsonl(
        folder,
        {"image": "a.png", "objects": [
            {"label": "scratch", "box": [0.1, 0.2, 0.5, 0.6], "unit": "ratio"},
            {"label": "dent", "box": [150, 10, 199, 99]},
            {"label": "crack", "box": [0, 0, 200, 100], "ignore": True}]},
        {"image": "b.png", "objects": []},
        {"image": "c.png", "labels": ["dent", "crack"], "width": 200, "height": 100,
         "objects": [{"label": "dent", "box": [1, 1, 5, 5], "unit": "pixel"},
                     {"label": "crack", "box": [2, 2, 9, 9], "ignore": True}]},
    )
    images = by_id(read_manifest(path))
    a, b, c = images["a.png"], images["b.png"], images["c.png"]
    # Ratio boxes become pixels with the size read from the file; an ignore region
    # does not label the image unless the labels say so.
    assert a.objects == (G("scratch", 20, 20, 100, 60), G("dent", 150, 10, 199, 99),
                         G("crack", 0, 0, 200, 100, ignore=True))
    assert a.labels == {"scratch", "dent"} and (a.width, a.height) == (200, 100)
    assert b.objects == () and b.labels == frozenset()  # a real negative
    assert c.labels == {"dent", "crack"} and c.objects[1].ignore
    assert "objects" not in a.metadata and c.metadata == {"width": 200, "height": 100}
    # Without hashing, the header is read only where a ratio box needs the size.
    unhashed = by_id(read_manifest(path, hash_images=False))
    assert unhashed["a.png"].objects == a.objects and unhashed["a.png"].width == 200
    assert unhashed["b.png"].width is None and unhashed["c.png"].width == 200


def test_a_manifest_without_boxes_reads_as_before(folder):
    path = jsonl(folder, {"image": "a.png", "labels": ["scratch"]})
    (img,) = read_manifest(path)
    assert img.objects is None and (img.width, img.height) == (200, 100)


@pytest.mark.parametrize("objects, extra, match", [
    ([{"label": "s", "box": [10, 10, 10, 20]}], {}, r'"objects"\[0\]: "box" \[10.0, 10.0, 10.0, '
                                                   r"20.0\] has no width"),
    ([{"label": "s", "box": [10, 30, 20, 20]}], {}, r"has no height"),
    ([{"label": "s", "box": [1, 2, "3", 4]}], {}, r'"box" must be 4 numbers'),
    ([{"label": "s", "box": [1, 2, 3]}], {}, r'"box" must be 4 numbers'),
    ([{"label": "s", "box": [1, 2, 3, float("nan")]}], {}, r'"box" must be 4 numbers'),
    ([{"label": "s", "box": [1, 2, 3, 4], "unit": "percent"}], {},
     r'"objects"\[0\]: "unit" must be "pixel" or "ratio"'),
    ([{"label": "s", "box": [1, 2, 3, 4], "ignore": "yes"}], {}, r'"ignore" must be true or false'),
    ([{"label": "s", "box": [1, 2, 3, 4], "score": 1}], {}, r"unknown key 'score'"),
    ([{"label": "", "box": [1, 2, 3, 4]}], {}, r'"label" must be a non-empty string'),
    ([{"box": [1, 2, 3, 4]}], {}, r'"label" must be a non-empty string'),
    ({"label": "s"}, {}, r'"objects" must be a list'),
    (["s"], {}, r"each object must be"),
    # Out of the 200x100 image by more than the tolerance (1 pixel).
    ([{"label": "s", "box": [150, 10, 201.5, 50]}], {},
     r'"objects"\[0\]: box \[150.0, 10.0, 201.5, 50.0\] \(pixel\) lies outside the 200x100 '
     r"image by more than 1 pixel"),
    ([{"label": "s", "box": [-2, 10, 20, 50]}], {}, r"lies outside"),
    ([{"label": "s", "box": [10, 10, 150, 120], "unit": "ratio"}], {},
     r"lies outside .* are these pixels\? then \"unit\": \"pixel\""),
    # Labels that contradict the objects.
    ([{"label": "s", "box": [1, 2, 3, 4]}], {"labels": ["d"]},
     r"line 1: an object has label 's' but the image's labels \['d'\] do not"),
    ([{"label": "s", "box": [1, 2, 3, 4]}], {"labels": ["s", "d"]},
     r"line 1: the image is labeled 'd' but none of its objects is"),
    ([], {"labels": ["s"]}, r"labeled 's' but none of its objects is"),
    # Sizes.
    ([], {"width": 200}, r'"height" must be a positive whole number'),
    ([], {"width": 0, "height": 100}, r'"width" must be a positive whole number'),
    ([], {"width": 20.5, "height": 100}, r'"width" must be a positive whole number'),
    ([], {"width": 100, "height": 200},
     r"line 1: the manifest gives the image's size as 100x200 but .*a.png is 200x100"),
])
def test_jsonl_box_errors_name_file_line_and_key(folder, objects, extra, match):
    path = jsonl(folder, {"image": "a.png", "objects": objects, **extra})
    with pytest.raises(InputError, match=match) as info:
        read_manifest(path)
    message = str(info.value)
    assert message.startswith(f"{path}, line 1") and "\n" not in message


def test_tolerance_is_one_pixel(folder):
    assert BOUNDS_TOLERANCE_PX == 1.0
    path = jsonl(folder, {"image": "a.png", "objects": [
        {"label": "s", "box": [-1, -1, 201, 101]}]})
    (img,) = read_manifest(path)
    assert img.objects == (G("s", -1, -1, 201, 101),)  # kept as written, never clipped


def test_ratio_box_of_a_remote_image_needs_its_size(folder):
    path = jsonl(folder, {"image": "s3://bucket/a.png", "objects": [
        {"label": "s", "box": [0.1, 0.1, 0.2, 0.2], "unit": "ratio"}]})
    with pytest.raises(InputError, match=r'line 1, "objects"\[0\]: a box in ratios needs the '
                                         r"image's size.*\"width\" and \"height\""):
        read_manifest(path)
    sized = jsonl(folder, {"image": "s3://bucket/a.png", "width": 1000, "height": 500,
                           "objects": [{"label": "s", "box": [0.1, 0.1, 0.2, 0.2],
                                        "unit": "ratio"}]})
    (img,) = read_manifest(sized)
    assert img.objects == (G("s", 100, 50, 200, 100),)


def test_unknown_object_label_is_refused_with_a_vocabulary(folder):
    path = jsonl(folder, {"image": "a.png", "labels": [], "objects": [
        {"label": "scrach", "box": [1, 1, 9, 9], "ignore": True}]})
    with pytest.raises(InputError, match=r'"objects"\[0\]: unknown label \'scrach\'.*Did you '
                                         r"mean 'scratch'"):
        read_manifest(path, labels=["scratch"])


def test_exif_rotated_jpeg_size_is_as_displayed(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90: stored 300x100, displayed 100x300
    Image.new("RGB", (300, 100)).save(tmp_path / "r.jpg", exif=exif.tobytes())
    path = jsonl(tmp_path, {"image": "r.jpg", "objects": [
        {"label": "s", "box": [0.5, 0.5, 1, 1], "unit": "ratio"}]})
    (img,) = read_manifest(path)
    assert (img.width, img.height) == (100, 300) == img.open().size
    assert img.objects == (G("s", 50, 150, 100, 300),)


# ---------------------------------------------------------------------------------------
# COCO
# ---------------------------------------------------------------------------------------


def coco(folder: Path, annotations, images=None) -> Path:
    path = folder / "gt.json"
    path.write_text(json.dumps({
        "images": images or [{"id": 1, "file_name": "a.png", "width": 200, "height": 100},
                             {"id": 2, "file_name": "b.png", "width": 200, "height": 100}],
        "categories": [{"id": 1, "name": "scratch"}, {"id": 2, "name": "dent"}],
        "annotations": annotations,
    }))
    return path


def test_coco_bbox_xywh_and_crowd(folder):
    path = coco(folder, [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 20, 30.5, 40], "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [0, 0, 200, 100], "iscrowd": 1},
    ])
    images = by_id(read_manifest(path))
    a, b = images["a.png"], images["b.png"]
    assert a.objects == (G("scratch", 10, 20, 40.5, 60), G("dent", 0, 0, 200, 100, ignore=True))
    # A crowd annotation labels its image, as every COCO annotation does.
    assert a.labels == {"scratch", "dent"} and (a.width, a.height) == (200, 100)
    assert b.objects == () and b.labels == frozenset()


def test_coco_without_any_bbox_has_no_boxes(folder):
    path = coco(folder, [{"id": 1, "image_id": 1, "category_id": 1}])
    assert all(img.objects is None for img in read_manifest(path))


@pytest.mark.parametrize("annotations, match", [
    ([{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]},
      {"image_id": 2, "category_id": 1}], r"annotations\[1\]: no \"bbox\", while other"),
    ([{"image_id": 1, "category_id": 1, "bbox": [1, 2, "3", 4]}],
     r"annotations\[0\].bbox: must be 4 numbers \[x, y, width, height\]"),
    ([{"image_id": 1, "category_id": 1, "bbox": [1, 2, 0, 4]}],
     r"annotations\[0\].bbox: \[1, 2, 0, 4\] has no area"),
    ([{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, -4]}], r"has no area"),
    ([{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4], "iscrowd": 2}],
     r"annotations\[0\].iscrowd: must be 0 or 1, got 2"),
    ([{"image_id": 1, "category_id": 1, "bbox": [180, 2, 30, 4]}],
     r"annotations\[0\].bbox: box \[180.0, 2.0, 210.0, 6.0\] \(pixel\) lies outside the "
     r"200x100 image"),
])
def test_coco_box_errors_name_file_and_annotation(folder, annotations, match):
    path = coco(folder, annotations)
    with pytest.raises(InputError, match=match) as info:
        read_manifest(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


def test_coco_image_size_is_checked(folder):
    path = coco(folder, [], images=[{"id": 1, "file_name": "a.png", "width": "wide",
                                     "height": 100}])
    with pytest.raises(InputError, match=r"images\[0\]: \"width\" must be a positive whole"):
        read_manifest(path)


# ---------------------------------------------------------------------------------------
# CSV, one object per row
# ---------------------------------------------------------------------------------------


def csv_file(folder: Path, text: str) -> Path:
    path = folder / "m.csv"
    path.write_text(text)
    return path


def test_csv_one_object_per_row(folder):
    path = csv_file(folder, (
        "image,label,x_min,y_min,x_max,y_max,unit,ignore,split,station\n"
        "a.png,scratch,1,2,30,40,,,cal,s1\n"
        "b.png,,,,,,,,cal,s2\n"
        "a.png,dent,0.5,0.5,1,1,ratio,,cal,s1\n"
        "c.png,crack,0,0,200,100,,true,test,s3\n"
    ))
    images = by_id(read_manifest(path))
    assert list(images) == ["a.png", "b.png", "c.png"]
    a, b, c = images["a.png"], images["b.png"], images["c.png"]
    assert a.objects == (G("scratch", 1, 2, 30, 40), G("dent", 100, 50, 200, 100))
    assert a.labels == {"scratch", "dent"} and a.split == "cal" and a.metadata == {"station": "s1"}
    assert b.objects == () and b.labels == frozenset()
    assert c.objects == (G("crack", 0, 0, 200, 100, ignore=True),) and c.labels == frozenset()
    assert a.source.endswith("m.csv:2")


@pytest.mark.parametrize("text, match", [
    ("image,labels,x_min,y_min,x_max,y_max\na.png,s,1,2,3,4\n",
     r"line 1 \(header\): box columns need .*'label' missing.*name its label column 'label'"),
    ("image,label,x_min,y_min,x_max\na.png,s,1,2,3\n", r"'y_max' missing"),
    ("image,label,x_min,y_min,x_max,y_max\na.png,s,1,2,x,4\n",
     r"line 2, column 'x_max': 'x' is not a number"),
    ("image,label,x_min,y_min,x_max,y_max\na.png,s,1,2,,4\n",
     r"line 2: a row gives an object's 'label' and all four box cells, or none"),
    ("image,label,x_min,y_min,x_max,y_max\na.png,s,5,2,3,4\n", r"line 2: the box .* has no width"),
    ("image,label,x_min,y_min,x_max,y_max,unit\na.png,s,1,2,3,4,px\n",
     r"line 2, column 'unit': 'px' is neither 'pixel' nor 'ratio'"),
    ("image,label,x_min,y_min,x_max,y_max,ignore\na.png,s,1,2,3,4,maybe\n",
     r"line 2, column 'ignore': 'maybe' is not true/false"),
    ("image,label,x_min,y_min,x_max,y_max,split\na.png,s,1,2,3,4,cal\na.png,d,1,2,3,4,test\n",
     r"line 3: the 'split' cell 'test' differs from 'cal' on line 2"),
    ("image,label,x_min,y_min,x_max,y_max\na.png,s,1,2,3,4\na.png,,,,,\n",
     r"line 3: this row says the image has no object, but other rows give it 1"),
    ("image,label,x_min,y_min,x_max,y_max\na.png,s,1,2,300,4\n", r"line 2: box .* lies outside"),
    ("image,label,x_min,y_min,x_max,y_max,width,height\na.png,s,1,2,3,4,200,\n",
     r'line 2: "height" must be a positive whole number'),
])
def test_csv_box_errors_name_file_line_and_column(folder, text, match):
    path = csv_file(folder, text)
    with pytest.raises(InputError, match=match) as info:
        read_manifest(path)
    assert str(info.value).startswith(str(path)) and "\n" not in str(info.value)


# ---------------------------------------------------------------------------------------
# into the store
# ---------------------------------------------------------------------------------------


def test_manifest_boxes_reach_the_store(folder):
    path = coco(folder, [
        {"image_id": 1, "category_id": 1, "bbox": [10, 20, 30, 40]},
        {"image_id": 1, "category_id": 2, "bbox": [0, 0, 5, 5], "iscrowd": 1},
    ])
    labeled = read_manifest(path)
    with ScoreStore(folder / "s.duckdb") as store:
        store.add_images(labeled.name, labeled.images, complete=True)
        assert store._db().execute(
            """SELECT i.image_id, i.width, i.height, i.has_objects, o.label, o.x_min, o.y_min,
                      o.x_max, o.y_max, o.ignore
               FROM images i LEFT JOIN objects o USING (image_key)
               ORDER BY i.image_key, o.rowid""").fetchall() == [
            ("a.png", 200, 100, True, "scratch", 10.0, 20.0, 40.0, 60.0, False),
            ("a.png", 200, 100, True, "dent", 0.0, 0.0, 5.0, 5.0, True),
            ("b.png", 200, 100, True, None, None, None, None, None, None)]
