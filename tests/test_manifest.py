"""Tests of calibrate.manifest: every manifest format against real files in tmp_path."""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import warnings

import numpy as np
import pytest
from PIL import Image

from calibrate.errors import CalibrateWarning, InputError
from calibrate.manifest import (
    LabeledImage,
    LabeledSet,
    Problem,
    dataset_fingerprint,
    read_manifest,
)

# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------


def png_bytes(seed: int = 0, size=(16, 12)) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def jpeg_bytes(seed: int = 0, size=(32, 24), **save) -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", **save)
    return buf.getvalue()


def write_image(path, data: bytes | None = None, seed: int = 0):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(seed) if data is None else data)
    return path


def write_jsonl(path, rows):
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def parts(tmp_path):
    """A small JSONL set: two defective, one clean image, in two splits."""
    for i in range(3):
        write_image(tmp_path / "images" / f"p{i}.png", seed=i)
    write_jsonl(
        tmp_path / "manifest.jsonl",
        [
            {"id": "p0", "image": "images/p0.png", "labels": ["scratch"], "split": "cal"},
            {"id": "p1", "image": "images/p1.png", "labels": ["dent", "scratch"],
             "split": "test", "severity": 0.4, "nuisances": ["dust"]},
            {"id": "p2", "image": "images/p2.png", "labels": [], "split": "cal"},
        ],
    )
    return tmp_path / "manifest.jsonl"


# ---------------------------------------------------------------------------------------
# formats
# ---------------------------------------------------------------------------------------


def test_jsonl_reads_ids_labels_hashes_splits_and_metadata(parts):
    s = read_manifest(parts)
    assert isinstance(s, LabeledSet)
    assert len(s) == 3 and [img.image_id for img in s] == ["p0", "p1", "p2"]
    assert s.labels == ("dent", "scratch")
    assert s.problems == []
    assert s.name == parts.parent.name  # "manifest" says nothing; its folder does
    assert s.source == str(parts)
    p0, p1, p2 = s.images
    assert p1.labels == frozenset({"dent", "scratch"}) and p2.labels == frozenset()
    assert p0.split == "cal" and p1.split == "test"
    assert p1.metadata == {"severity": 0.4, "nuisances": ["dust"]}
    assert p0.uri == str(parts.parent / "images" / "p0.png") and p0.is_local
    assert p0.content_hash == sha((parts.parent / "images" / "p0.png").read_bytes())
    assert p1.source == f"{parts}:2"
    assert p0.to_array().shape == (12, 16, 3)


def test_jsonl_without_id_uses_normalised_relative_path(tmp_path):
    write_image(tmp_path / "imgs" / "a.png")
    write_image(tmp_path / "imgs" / "sub" / "b.png", seed=1)
    write_image(tmp_path / "c.png", seed=2)
    write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"image": "./imgs/a.png", "labels": []},
            {"image": "imgs/x/../sub/b.png", "labels": ["dent"]},
            {"image": str(tmp_path / "c.png"), "labels": []},  # absolute, inside root
            {"image": "file://" + str(tmp_path / "imgs" / "a.png"), "labels": [],
             "id": 7},  # integer ids become strings
        ],
    )
    s = read_manifest(tmp_path / "m.jsonl")
    assert [img.image_id for img in s] == ["imgs/a.png", "imgs/sub/b.png", "c.png", "7"]
    assert s.images[1].uri == str(tmp_path / "imgs" / "sub" / "b.png")
    assert s.images[3].uri == str(tmp_path / "imgs" / "a.png")
    assert s.name == "m"


def test_relative_paths_resolve_against_base_dir(tmp_path):
    write_image(tmp_path / "data" / "images" / "a.png")
    (tmp_path / "manifests").mkdir()
    manifest = write_jsonl(
        tmp_path / "manifests" / "m.jsonl", [{"image": "images/a.png", "labels": ["x"]}]
    )
    s = read_manifest(manifest, base_dir=tmp_path / "data")
    assert s.images[0].uri == str(tmp_path / "data" / "images" / "a.png")
    assert s.images[0].image_id == "images/a.png"
    # Without base_dir the paths start at the manifest's folder, where there is nothing:
    # every image is missing, which is reported with a hint instead of an empty set.
    with pytest.raises(InputError, match="base_dir"):
        read_manifest(manifest)
    with pytest.raises(InputError, match="not a directory"):
        read_manifest(manifest, base_dir=tmp_path / "nope")


def test_csv_reads_both_separators_optional_columns_and_metadata(tmp_path):
    for name in ("a", "b", "c"):
        write_image(tmp_path / f"{name}.png", seed=ord(name))
    (tmp_path / "set.csv").write_text(
        "\ufeffimage,labels,id,split,operator\n"  # BOM as Excel writes it
        "a.png,scratch;dent,A,cal,ann\n"
        "\n"
        'b.png,dent | crack,,test,"bob, jr"\n'
        "c.png,,C,,\n",
        encoding="utf-8",
    )
    s = read_manifest(tmp_path / "set.csv")
    a, b, c = s.images
    assert (a.image_id, b.image_id, c.image_id) == ("A", "b.png", "C")
    assert a.labels == {"scratch", "dent"} and b.labels == {"dent", "crack"}
    assert c.labels == frozenset()
    assert (a.split, b.split, c.split) == ("cal", "test", None)
    assert b.metadata == {"operator": "bob, jr"} and c.metadata == {"operator": ""}
    assert b.source == f"{tmp_path / 'set.csv'}:4"  # the blank line counts
    assert s.labels == ("crack", "dent", "scratch")
    assert s.name == "set"


def test_csv_missing_column_and_ragged_row(tmp_path):
    (tmp_path / "a.csv").write_text("path,labels\nx.png,\n")
    with pytest.raises(InputError, match=r"line 1 \(header\): no 'image' column"):
        read_manifest(tmp_path / "a.csv")
    (tmp_path / "b.csv").write_text("image;labels\nx.png;\n")
    with pytest.raises(InputError, match="semicolon"):
        read_manifest(tmp_path / "b.csv")
    (tmp_path / "c.csv").write_text("image,labels\nx.png,a,b\n")
    with pytest.raises(InputError, match=r"line 2: 3 cells but the header has 2"):
        read_manifest(tmp_path / "c.csv")


def coco(images, annotations, categories):
    return {"images": images, "annotations": annotations, "categories": categories}


def test_coco_labels_from_annotations_and_clean_image_without_annotations(tmp_path):
    write_image(tmp_path / "imgs" / "a.png", seed=1)
    write_image(tmp_path / "imgs" / "b.png", seed=2)
    write_image(tmp_path / "imgs" / "c.png", seed=3)
    data = coco(
        images=[
            {"id": 10, "file_name": "imgs/a.png", "width": 16, "height": 12},
            {"id": 11, "file_name": "imgs/b.png", "width": 16, "height": 12},
            {"id": 12, "file_name": "imgs/c.png", "width": 16, "height": 12},
        ],
        annotations=[
            {"id": 1, "image_id": 10, "category_id": 1, "bbox": [0, 0, 2, 2]},
            {"id": 2, "image_id": 10, "category_id": 2, "bbox": [0, 0, 2, 2]},
            {"id": 3, "image_id": 10, "category_id": 1, "bbox": [4, 4, 2, 2]},
            {"id": 4, "image_id": 12, "category_id": 2, "bbox": [0, 0, 2, 2]},
        ],
        categories=[
            {"id": 1, "name": "scratch"},
            {"id": 2, "name": "dent"},
            {"id": 3, "name": "crack"},  # declared, never annotated: still a label
        ],
    )
    (tmp_path / "instances.json").write_text(json.dumps(data))
    s = read_manifest(tmp_path / "instances.json")
    by_id = {img.image_id: img for img in s}
    assert list(by_id) == ["imgs/a.png", "imgs/b.png", "imgs/c.png"]
    assert by_id["imgs/a.png"].labels == {"scratch", "dent"}
    assert by_id["imgs/b.png"].labels == frozenset()  # no annotations: clean
    assert by_id["imgs/c.png"].labels == {"dent"}
    assert by_id["imgs/a.png"].metadata == {"coco_id": 10, "width": 16, "height": 12}
    assert s.labels == ("crack", "dent", "scratch")
    assert all(img.content_hash for img in s)


def test_coco_structural_errors(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"images": [], "categories": []}))
    with pytest.raises(InputError, match="no \"annotations\""):
        read_manifest(path)
    path.write_text(json.dumps([{"image": "a.png", "labels": []}]))
    with pytest.raises(InputError, match=r"COCO.*\.jsonl"):
        read_manifest(path)
    path.write_text(
        json.dumps(
            coco(
                [{"id": 1, "file_name": "a.png"}],
                [{"image_id": 2, "category_id": 1}, {"image_id": 1, "category_id": 9}],
                [{"id": 1, "name": "dent"}],
            )
        )
    )
    with pytest.raises(InputError) as err:
        read_manifest(path)
    msg = str(err.value)
    assert "2 errors" in msg
    assert "annotations[0]: image_id 2 is not in" in msg
    assert "annotations[1]: category_id 9" in msg
    path.write_text(json.dumps(coco([{"id": [1], "file_name": "a.png"}], [], [])))
    with pytest.raises(InputError, match=r"images\[0\]: each image needs an \"id\""):
        read_manifest(path)
    path.write_text('{"images": [\n{"id": 1,,}]}')
    with pytest.raises(InputError, match=r"bad\.json, line 2: not valid JSON"):
        read_manifest(path)


def test_folder_per_label_with_clean_folder_and_multi_label_copies(tmp_path):
    root = tmp_path / "inspection"
    shared = png_bytes(seed=42)
    write_image(root / "scratch" / "p1.png", shared)
    write_image(root / "dent" / "p1.png", shared)  # same name, same bytes: both labels
    write_image(root / "dent" / "p2.jpg", jpeg_bytes(seed=2))
    write_image(root / "dent" / "batch2" / "p3.JPEG", jpeg_bytes(seed=3))
    write_image(root / "_clean" / "p4.png", seed=4)
    write_image(root / "negative" / "p5.png", seed=5)
    (root / "crack").mkdir()  # a label with no image yet
    write_image(root / ".thumbs" / "p9.png", seed=9)  # hidden: ignored silently
    (root / "dent" / ".DS_Store").write_bytes(b"x")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing worth a warning here
        s = read_manifest(root)
    by_id = {img.image_id: img for img in s}
    assert sorted(by_id) == ["batch2/p3.JPEG", "p1.png", "p2.jpg", "p4.png", "p5.png"]
    assert by_id["p1.png"].labels == {"dent", "scratch"}
    assert by_id["p1.png"].content_hash == sha(shared)
    assert by_id["p1.png"].metadata == {"copies": ["dent/p1.png", "scratch/p1.png"]}
    assert by_id["p1.png"].uri == str(root / "dent" / "p1.png")
    assert by_id["batch2/p3.JPEG"].labels == {"dent"}
    assert by_id["p4.png"].labels == frozenset() and by_id["p5.png"].labels == frozenset()
    assert s.labels == ("crack", "dent", "scratch")
    assert s.name == "inspection" and s.source == str(root)


def test_folder_per_label_conflicts_and_stray_files(tmp_path):
    root = tmp_path / "set"
    write_image(root / "scratch" / "p1.png", seed=1)
    write_image(root / "dent" / "p1.png", seed=2)  # same name, different image
    with pytest.raises(InputError, match=r"p1\.png is in several label folders.*rename"):
        read_manifest(root)
    with pytest.raises(InputError, match=r"differ"):
        read_manifest(root, hash_images=False)  # compared byte by byte instead

    root = tmp_path / "set2"
    write_image(root / "scratch" / "p1.png", seed=1)
    write_image(root / "_clean" / "p1.png", seed=1)
    with pytest.raises(InputError, match="either clean or labeled"):
        read_manifest(root)

    root = tmp_path / "set3"
    write_image(root / "scratch" / "p1.png", seed=1)
    (root / "scratch" / "notes.txt").write_text("hi")
    (root / "README.md").write_text("hi")
    with pytest.warns(CalibrateWarning, match=r"ignored 2 file\(s\).*README\.md"):
        s = read_manifest(root)
    assert len(s) == 1
    with pytest.raises(InputError, match="base_dir"):
        read_manifest(root, base_dir=tmp_path)


def test_folder_per_label_unknown_label_and_empty(tmp_path):
    root = tmp_path / "set"
    write_image(root / "scrach" / "p1.png")
    with pytest.raises(InputError, match=r"folder scrach/: unknown label 'scrach'.*'scratch'"):
        read_manifest(root, labels=["scratch", "dent"])
    empty = tmp_path / "empty"
    (empty / "scratch").mkdir(parents=True)
    with pytest.raises(InputError, match="no images found"):
        read_manifest(empty)


def test_remote_uris_are_kept_without_hash(tmp_path):
    write_image(tmp_path / "a.png")
    uris = [
        "s3://bucket/k/1.jpg",
        "oss://bucket/k/2.jpg",
        "gs://bucket/k/3.jpg",
        "http://example.com/4.jpg",
        "https://example.com/5.jpg",
    ]
    rows = [{"image": u, "labels": ["x"]} for u in uris]
    rows.append({"image": "a.png", "labels": []})
    s = read_manifest(write_jsonl(tmp_path / "m.jsonl", rows))
    remote = s.images[:5]
    assert [img.uri for img in remote] == uris
    assert [img.image_id for img in remote] == uris  # no id given: the URI is the id
    assert all(img.content_hash is None and not img.is_local for img in remote)
    assert s.problems == []
    with pytest.raises(InputError, match="remote"):
        remote[0].path  # noqa: B018

    write_jsonl(tmp_path / "bad.jsonl", [{"image": "ftp://host/a.png", "labels": []}])
    with pytest.raises(InputError, match=r"line 1: .*unsupported URI scheme 'ftp'"):
        read_manifest(tmp_path / "bad.jsonl")


def test_remote_only_set_is_not_empty(tmp_path):
    s = read_manifest(write_jsonl(tmp_path / "m.jsonl", [{"image": "s3://b/k", "labels": []}]))
    assert len(s) == 1 and s.fingerprint.startswith("sha256:")


# ---------------------------------------------------------------------------------------
# structural errors
# ---------------------------------------------------------------------------------------


def test_duplicate_ids_name_both_lines(tmp_path):
    write_image(tmp_path / "a.png")
    write_image(tmp_path / "b.png", seed=1)
    path = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"id": "x", "image": "a.png", "labels": []},
            {"id": "y", "image": "b.png", "labels": []},
            "",
            {"id": "x", "image": "b.png", "labels": []},
        ],
    )
    with pytest.raises(InputError) as err:
        read_manifest(path)
    msg = str(err.value)
    assert str(path) in msg
    assert "duplicate image id 'x': first on line 1, again on line 4" in msg


def test_duplicate_ids_from_paths_in_csv(tmp_path):
    write_image(tmp_path / "a.png")
    (tmp_path / "m.csv").write_text("image,labels\na.png,\nb.png,\n./a.png,dent\n")
    with pytest.raises(InputError, match="'a.png': first on line 2, again on line 4"):
        read_manifest(tmp_path / "m.csv")


def test_malformed_jsonl_line_number(tmp_path):
    write_image(tmp_path / "a.png")
    path = write_jsonl(
        tmp_path / "m.jsonl",
        [{"image": "a.png", "labels": []}, "", '{"image": "b.png", "labels": [}'],
    )
    with pytest.raises(InputError, match=r"m\.jsonl, line 3: not valid JSON"):
        read_manifest(path)


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ({"labels": []}, 'no "image" key'),
        ({"image": "", "labels": []}, '"image" must be a non-empty'),
        ({"image": "a.png"}, 'no "labels" key'),
        ({"image": "a.png", "labels": "scratch"}, r'write "labels": \["scratch"\]'),
        ({"image": "a.png", "labels": None}, '"labels" must be a list'),
        ({"image": "a.png", "labels": [1]}, "must hold non-empty strings"),
        ({"image": "a.png", "labels": [], "id": True}, '"id" must be'),
        ({"image": "a.png", "labels": [], "split": 3}, '"split" must be'),
        (["a.png"], "expected a JSON object"),
    ],
)
def test_jsonl_record_errors_name_file_and_line(tmp_path, row, expected):
    write_image(tmp_path / "a.png")
    path = write_jsonl(tmp_path / "m.jsonl", [{"image": "a.png", "labels": [], "id": "ok"}, row])
    with pytest.raises(InputError, match=expected) as err:
        read_manifest(path)
    assert f"{path}, line 2:" in str(err.value)


def test_several_errors_are_reported_together(tmp_path):
    rows = ["{bad"] * 25
    with pytest.raises(InputError) as err:
        read_manifest(write_jsonl(tmp_path / "m.jsonl", rows))
    msg = str(err.value)
    assert "25 errors" in msg and "line 1:" in msg and "line 20:" in msg
    assert "line 21:" not in msg and "and 5 more" in msg


def test_unknown_label(tmp_path):
    write_image(tmp_path / "a.png")
    path = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"image": "a.png", "labels": ["scratch"], "id": "1"},
            {"image": "a.png", "labels": ["scrach"], "id": "2"},
            {"image": "a.png", "labels": ["scrach", "dent"], "id": "3"},
        ],
    )
    with pytest.raises(InputError) as err:
        read_manifest(path, labels=["scratch", "dent"])
    msg = str(err.value)
    assert "line 2: unknown label 'scrach' (also line 3)" in msg
    assert "Did you mean 'scratch'?" in msg
    # The allowed vocabulary becomes the set's labels, even labels no image carries.
    s = read_manifest(path, labels=["scratch", "scrach", "dent", "crack"])
    assert s.labels == ("crack", "dent", "scrach", "scratch")
    with pytest.raises(InputError, match=r"labels=\['scratch'\]"):
        read_manifest(path, labels="scratch")


def test_empty_set(tmp_path):
    (tmp_path / "m.jsonl").write_text("\n\n")
    with pytest.raises(InputError, match="lists no images"):
        read_manifest(tmp_path / "m.jsonl")
    (tmp_path / "m.csv").write_text("image,labels\n")
    with pytest.raises(InputError, match="lists no images"):
        read_manifest(tmp_path / "m.csv")
    (tmp_path / "c.json").write_text(json.dumps(coco([], [], [])))
    with pytest.raises(InputError, match="lists no images"):
        read_manifest(tmp_path / "c.json")


def test_unknown_format_and_missing_manifest(tmp_path):
    (tmp_path / "m.txt").write_text("a.png\n")
    with pytest.raises(InputError, match="suffix '.txt'"):
        read_manifest(tmp_path / "m.txt")
    with pytest.raises(InputError, match="no such file"):
        read_manifest(tmp_path / "nope.jsonl")


# ---------------------------------------------------------------------------------------
# bad images: reported, not fatal
# ---------------------------------------------------------------------------------------


def test_missing_empty_truncated_and_non_images_are_problems(tmp_path):
    good = write_image(tmp_path / "good.png")
    (tmp_path / "empty.png").write_bytes(b"")
    png = png_bytes(seed=3, size=(64, 64))
    (tmp_path / "cut.png").write_bytes(png[: len(png) // 2])
    jpg = jpeg_bytes(seed=4, size=(64, 64))
    (tmp_path / "cut.jpg").write_bytes(jpg[: len(jpg) - 100])
    (tmp_path / "text.jpg").write_text("not an image")
    (tmp_path / "folder.png").mkdir()
    path = write_jsonl(
        tmp_path / "m.jsonl",
        [
            {"image": "good.png", "labels": ["dent"]},
            {"image": "missing.png", "labels": ["dent"], "split": "test"},
            {"image": "empty.png", "labels": []},
            {"image": "cut.png", "labels": []},
            {"image": "cut.jpg", "labels": ["scratch"]},
            {"image": "text.jpg", "labels": []},
            {"image": "folder.png", "labels": []},
        ],
    )
    s = read_manifest(path)
    assert [img.image_id for img in s] == ["good.png"]
    assert s.images[0].content_hash == sha(good.read_bytes())
    got = {(p.image_id, p.kind, p.line) for p in s.problems}
    assert got == {
        ("missing.png", "missing", 2),
        ("empty.png", "empty", 3),
        ("cut.png", "corrupt", 4),
        ("cut.jpg", "corrupt", 5),
        ("text.jpg", "corrupt", 6),
        ("folder.png", "not_a_file", 7),
    }
    for p in s.problems:
        assert isinstance(p, Problem)
        assert p.file == str(path)
        assert p.message.startswith(f"{path}, line {p.line}: image {p.image_id!r}")
        assert p.location == f"{path}:{p.line}"
        assert p.image is not None and p.image.image_id == p.image_id
    missing = next(p for p in s.problems if p.kind == "missing")
    assert "does not exist" in missing.message and "base_dir" in missing.message
    assert missing.image.labels == {"dent"} and missing.image.split == "test"
    # Problem images still count for the vocabulary and the splits, not for the data.
    assert s.labels == ("dent", "scratch")
    assert s.splits == ("test",)
    assert s.filter(split="test").images == [] and len(s.filter(split="test").problems) == 1


def with_comment(jpeg: bytes, payload: bytes) -> bytes:
    """``jpeg`` with a COM segment holding ``payload`` right after its SOI marker."""
    return jpeg[:2] + b"\xff\xfe" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


def test_jpeg_end_check_is_not_fooled_by_embedded_or_trailing_data(tmp_path):
    full = jpeg_bytes(seed=5, size=(64, 48))
    thumb = jpeg_bytes(seed=6, size=(8, 8))  # has its own FF D9, like an EXIF thumbnail
    progressive = jpeg_bytes(seed=7, size=(64, 48), progressive=True)
    files = {
        "thumb_ok.jpg": with_comment(full, thumb),
        "thumb_cut.jpg": with_comment(full, thumb)[:-300],
        "trailer.jpg": full + b"\x00" * 50 + b"ftypmp42 video bytes",  # motion photo
        "prog_ok.jpg": progressive,
        "prog_cut.jpg": progressive[: len(progressive) // 2],
        "header_only.jpg": full[:200],
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    path = write_jsonl(tmp_path / "m.jsonl", [{"image": n, "labels": []} for n in files])
    for decode in (False, True):
        s = read_manifest(path, decode_images=decode)
        assert sorted(img.image_id for img in s) == ["prog_ok.jpg", "thumb_ok.jpg", "trailer.jpg"]
        assert sorted((p.image_id, p.kind) for p in s.problems) == [
            ("header_only.jpg", "corrupt"),
            ("prog_cut.jpg", "corrupt"),
            ("thumb_cut.jpg", "corrupt"),
        ]
    with pytest.raises(InputError, match="decode_images"):
        read_manifest(path, hash_images=False, decode_images=True)


def test_without_hashing_only_existence_and_size_are_checked(tmp_path):
    write_image(tmp_path / "a.png")
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    path = write_jsonl(
        tmp_path / "m.jsonl",
        [{"image": n, "labels": []} for n in ("a.png", "text.png", "empty.png", "gone.png")],
    )
    s = read_manifest(path, hash_images=False)
    assert [img.image_id for img in s] == ["a.png", "text.png"]
    assert all(img.content_hash is None for img in s)
    assert sorted(p.kind for p in s.problems) == ["empty", "missing"]


def test_all_images_bad_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [{"image": "gone.png", "labels": []}])
    with pytest.raises(InputError, match=r"none of the 1 images can be used \(missing\)"):
        read_manifest(path)


def test_bad_copy_in_folder_layout_is_a_problem(tmp_path):
    root = tmp_path / "set"
    write_image(root / "dent" / "good.png", seed=1)
    write_image(root / "dent" / "cut.png", png_bytes(seed=2, size=(64, 64))[:300])
    write_image(root / "scratch" / "cut.png", png_bytes(seed=2, size=(64, 64)))
    s = read_manifest(root)
    assert [img.image_id for img in s] == ["good.png"]
    (problem,) = s.problems
    bad_file = str(root / "dent" / "cut.png")
    assert (problem.kind, problem.line, problem.file) == ("corrupt", None, bad_file)
    assert problem.image.labels == {"dent", "scratch"}
    assert problem.message.startswith(str(root / "dent" / "cut.png"))
    assert "delete it" in problem.message


# ---------------------------------------------------------------------------------------
# fingerprint
# ---------------------------------------------------------------------------------------


def test_fingerprint_is_stable_under_reordering_and_tracks_bytes_and_labels(tmp_path):
    rows = []
    for i in range(12):
        write_image(tmp_path / f"{i}.png", seed=i)
        rows.append({"image": f"{i}.png", "labels": ["dent", "scratch"][: i % 3], "split": "a"})
    base = read_manifest(write_jsonl(tmp_path / "m.jsonl", rows)).fingerprint
    assert base.startswith("sha256:") and len(base) == len("sha256:") + 64

    shuffled = [dict(r, labels=list(reversed(r["labels"]))) for r in rows]  # order: irrelevant
    random.Random(1).shuffle(shuffled)
    s2 = read_manifest(write_jsonl(tmp_path / "m2.jsonl", shuffled))
    assert [img.image_id for img in s2] != [r["image"] for r in rows]
    assert s2.fingerprint == base
    # Splits and metadata are not content.
    other = [dict(r, split="b", note="x") for r in rows]
    assert read_manifest(write_jsonl(tmp_path / "m3.jsonl", other)).fingerprint == base

    changed_labels = [dict(r) for r in rows]
    changed_labels[5] = dict(rows[5], labels=["crack"])
    f_labels = read_manifest(write_jsonl(tmp_path / "m4.jsonl", changed_labels)).fingerprint
    assert f_labels != base

    write_image(tmp_path / "5.png", seed=99)
    assert read_manifest(tmp_path / "m.jsonl").fingerprint not in (base, f_labels)


def test_fingerprint_is_independent_of_location(tmp_path):
    for where in ("one", "two/deeper"):
        write_image(tmp_path / where / "img" / "a.png", seed=1)
        write_jsonl(tmp_path / where / "m.jsonl", [{"image": "img/a.png", "labels": ["x"]}])
    a = read_manifest(tmp_path / "one" / "m.jsonl")
    b = read_manifest(tmp_path / "two/deeper" / "m.jsonl")
    assert a.images[0].uri != b.images[0].uri
    assert a.fingerprint == b.fingerprint == dataset_fingerprint(reversed(b.images))


def test_dataset_fingerprint_public_function():
    imgs = [
        LabeledImage("a", "/x/a.png", frozenset({"d"}), "sha256:" + "0" * 64),
        LabeledImage("b", "s3://b/k.png", frozenset()),
        LabeledImage("c", "/x/c.png", frozenset()),  # local, not hashed
    ]
    f = dataset_fingerprint(imgs)
    assert f == dataset_fingerprint(imgs[::-1])
    moved = [imgs[0], imgs[1], LabeledImage("c", "/elsewhere/c.png", frozenset())]
    assert dataset_fingerprint(moved) == f  # unhashed local paths do not leak in
    assert dataset_fingerprint([*imgs[:2], LabeledImage("c", "/x/c.png", {"d"})]) != f
    assert dataset_fingerprint(imgs[:2] + [LabeledImage("c", "s3://b/c", frozenset())]) != f
    assert dataset_fingerprint([]) != f


# ---------------------------------------------------------------------------------------
# LabeledSet behaviour
# ---------------------------------------------------------------------------------------


def test_filter_by_split(parts):
    s = read_manifest(parts)
    cal = s.filter(split="cal")
    assert [img.image_id for img in cal] == ["p0", "p2"]
    assert cal.labels == s.labels and cal.name == s.name
    assert cal.fingerprint != s.fingerprint
    assert len(s.filter(split=["cal", "test"])) == 3
    assert s.splits == ("cal", "test")
    with pytest.raises(InputError, match=r"no image has split 'calibration'.*'cal', 'test'"):
        s.filter(split="calibration")
    assert "images=3" in repr(s)


def test_many_files_are_hashed_on_a_thread_pool(tmp_path):
    rows = []
    for i in range(200):
        data = png_bytes(seed=i, size=(8, 8))
        (tmp_path / f"{i:03d}.png").write_bytes(data)
        rows.append({"image": f"{i:03d}.png", "labels": []})
    (tmp_path / "050.png").write_bytes(b"")
    s = read_manifest(write_jsonl(tmp_path / "m.jsonl", rows))
    assert len(s) == 199 and [p.line for p in s.problems] == [51]
    # Order is the manifest's, and each hash belongs to its own file.
    assert [img.image_id for img in s][:3] == ["000.png", "001.png", "002.png"]
    for img in s.images[::37]:
        assert img.content_hash == sha(img.read_bytes())


def test_large_file_hash_spans_chunks(tmp_path):
    # Bigger than one 1 MiB read, so the chunked loop is exercised.
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, size=(800, 800, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "big.png", compress_level=0)
    assert os.path.getsize(tmp_path / "big.png") > 1 << 20
    s = read_manifest(write_jsonl(tmp_path / "m.jsonl", [{"image": "big.png", "labels": []}]))
    assert s.images[0].content_hash == sha((tmp_path / "big.png").read_bytes())


# ---------------------------------------------------------------------------------------
# EXIF orientation
# ---------------------------------------------------------------------------------------


def test_open_applies_exif_orientation(tmp_path):
    # Stored 40 wide x 20 high with a red block at the top-left. Orientation 6 means
    # "rotate 90 degrees clockwise to display": shown 20 wide x 40 high, block top-right.
    arr = np.zeros((20, 40, 3), dtype=np.uint8)
    arr[:8, :8] = (255, 0, 0)
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation
    img.save(tmp_path / "rot.jpg", "JPEG", exif=exif.tobytes(), quality=95)
    with Image.open(tmp_path / "rot.jpg") as raw:  # the file really is stored unrotated
        assert raw.size == (40, 20) and raw.getexif()[0x0112] == 6

    s = read_manifest(write_jsonl(tmp_path / "m.jsonl", [{"image": "rot.jpg", "labels": []}]))
    decoded = s.images[0].to_array()
    assert decoded.shape == (40, 20, 3)
    assert decoded[2, 17, 0] > 200 and decoded[2, 17, 1] < 60  # top-right is red
    assert decoded[2, 2, 0] < 60  # top-left is not
    assert s.images[0].open().mode == "RGB"
