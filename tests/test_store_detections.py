"""Ground-truth boxes in the score store (schema version 4) and ``detection_rows``,
against real DuckDB files: a real version-3 file migrated, boxes written and replaced
with the images, and detections read back in pixels under the count tables' selection
rules."""

from __future__ import annotations

import gzip
import math
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest

from calibrate.detectors.base import Box, Detection, Result
from calibrate.errors import InputError
from calibrate.manifest import GroundTruthObject, LabeledImage, dataset_fingerprint
from calibrate.store import (
    SCHEMA_VERSION,
    DetectionRows,
    IncompleteDataError,
    IncompleteDataWarning,
    ScoreStore,
)

DATA = Path(__file__).parent / "data"

pytestmark = pytest.mark.filterwarnings("ignore::calibrate.store.DatasetOverlapWarning")


def obj(label, x0, y0, x1, y1, ignore=False):
    return GroundTruthObject(label, (x0, y0, x1, y1), ignore)


def img(image_id, objects=None, *, labels=None, size=(200, 100), split=None, content=None):
    if labels is None:
        labels = {o.label for o in objects or () if not o.ignore}
    width, height = size if size else (None, None)
    return LabeledImage(image_id, f"/data/{image_id}.png", frozenset(labels),
                        content_hash=f"sha256:{content or image_id}", split=split,
                        objects=None if objects is None else tuple(objects),
                        width=width, height=height)


def begin(store, dataset="parts", version="v1", fingerprint="fp", source=None):
    return store.begin_run(detector="surface-defect", model_version=version, dataset=dataset,
                           dataset_fingerprint=fingerprint, settings={}, labels=None,
                           detection_floor=None, source=source)


def det(*results):
    return Detection([Result(*r) for r in results])


def rows(frame: pd.DataFrame) -> list[tuple]:
    return [tuple(r) for r in frame.itertuples(index=False)]


@pytest.fixture
def store(tmp_path):
    with ScoreStore(tmp_path / "calibrate.duckdb") as s:
        yield s


def object_rows(store):
    return store._db().execute(
        "SELECT i.image_id, o.label, o.x_min, o.y_min, o.x_max, o.y_max, o.ignore, o.rowid "
        "FROM objects o JOIN images i USING (image_key) ORDER BY i.image_key, o.rowid"
    ).fetchall()


# ---------------------------------------------------------------------------------------
# migration of a real version-3 file
# ---------------------------------------------------------------------------------------


def test_real_version_3_file_is_migrated_and_gains_boxes(tmp_path):
    # store_v3.duckdb.gz was written by calibrate at schema version 3 (commit 0a95bdd)
    # with tests/data/make_store_v3.py: 5 images (p0 changed content afterwards, p4
    # failed), boxes in pixels, in ratios, and one result without a box.
    path = tmp_path / "v3.duckdb"
    with gzip.open(DATA / "store_v3.duckdb.gz", "rb") as src, open(path, "wb") as dst:
        shutil.copyfileobj(src, dst)
    con = duckdb.connect(str(path), read_only=True)
    assert con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall() == [("3",)]
    con.close()
    # p0's new content was never scored, so the data is incomplete: allowed here.
    with pytest.warns(IncompleteDataWarning), ScoreStore(path, allow_incomplete=True) as store:
        meta = dict(store._db().execute("SELECT key, value FROM meta").fetchall())
        assert SCHEMA_VERSION == 5
        assert meta["schema_version"] == "5" and "migrated_from_3" in meta
        assert store._db().execute(
            "SELECT image_id, width, height, has_objects FROM images ORDER BY image_key"
        ).fetchall() == [(f"p{i}.png", None, None, None) for i in (0, 1, 2, 3, 4, 0)]
        assert store._db().execute("SELECT count(*) FROM objects").fetchall() == [(0,)]
        # Everything a version-3 store answered, it still answers.
        scores = store.scores("surface-defect", "v1", "scratch")
        assert dict(zip(scores.image_ids, scores.scores)) == {
            "p1.png": 0.9, "p2.png": 0.3, "p3.png": 0.7}
        assert scores.n_failed == 1
        # No image has boxes yet: the detection unit says so and what to do.
        with pytest.raises(InputError, match=r"none of the 3 images .* has ground-truth "
                                             r"boxes.*Register a manifest with boxes"):
            store.detection_rows("surface-defect", "v1")
        # Registering the manifest again with boxes and sizes makes them usable (same
        # content, so the stored scores keep counting).
        images = [
            img("p0.png", [], content="p0b", split="cal"),
            img("p1.png", [obj("scratch", 10, 20, 30, 40)], content="p1", split="cal"),
            img("p2.png", [], content="p2", split="cal"),
            img("p3.png", [obj("scratch", 1, 2, 3, 4)], content="p3", split="test"),
            img("p4.png", [], content="p4", split="test"),
        ]
        store.add_images("parts", images, complete=True)
        # p3's second result has no box, so the whole version cannot be matched...
        with pytest.raises(InputError, match=r"image 'p3.png': the 'scratch' result "
                                             r"\(score 0.2, run \w+\) has no box"):
            store.detection_rows("surface-defect", "v1")
        # ...but the cal split has none; p2's ratio box is converted with its size.
        rows_ = store.detection_rows("surface-defect", "v1", split="cal")
        assert rows(rows_.detections) == [
            ("p1.png", "scratch", 0.9, 10.0, 20.0, 30.0, 40.0),
            ("p2.png", "scratch", 0.3, 0.1 * 200, 0.2 * 100, 0.3 * 200, 0.4 * 100),
        ]
        assert rows(rows_.objects) == [("p1.png", "scratch", 10.0, 20.0, 30.0, 40.0, False)]
        # p0's new content was never scored: not in the selection (nor in count tables).
        assert rows_.n_images == 2 and list(rows_.image_ids) == ["p1.png", "p2.png"]
        assert (rows_.n_failed, rows_.n_without_boxes) == (0, 0)
        assert store.detection_rows("surface-defect", "v1", split="test",
                                    labels=["dent"]).n_failed == 1


# ---------------------------------------------------------------------------------------
# writing boxes with the images
# ---------------------------------------------------------------------------------------


def test_boxes_are_written_replaced_and_kept_with_their_identity(store):
    a = img("a", [obj("scratch", 1, 2, 3, 4), obj("dent", 5, 5, 9, 9),
                  obj("scratch", 0, 0, 50, 50, ignore=True)])
    b = img("b", [])
    c = img("c", None, labels={"scratch"}, size=None)
    store.add_images("parts", [a, b, c])
    first = object_rows(store)
    assert [r[:7] for r in first] == [
        ("a", "scratch", 1.0, 2.0, 3.0, 4.0, False), ("a", "dent", 5.0, 5.0, 9.0, 9.0, False),
        ("a", "scratch", 0.0, 0.0, 50.0, 50.0, True)]
    assert store._db().execute(
        "SELECT image_id, width, height, has_objects FROM images ORDER BY image_key"
    ).fetchall() == [("a", 200, 100, True), ("b", 200, 100, True), ("c", None, None, False)]
    # The same images again (boxes in another order) write nothing: same rows, same rowids.
    store.add_images("parts", [img("a", list(reversed(a.objects))), b, c])
    assert object_rows(store) == first
    # A corrected box replaces the image's boxes; the other images' rows are untouched.
    b2 = img("b", [obj("dent", 10, 10, 20, 30)])
    store.add_images("parts", [img("a", [obj("scratch", 1, 2, 3, 5)]), b2, c])
    assert [r[:7] for r in object_rows(store)] == [
        ("a", "scratch", 1.0, 2.0, 3.0, 5.0, False), ("b", "dent", 10.0, 10.0, 20.0, 30.0, False)]
    # A manifest without boxes for an image takes them away (it is the truth now).
    store.add_images("parts", [img("a", None, labels={"scratch"}), b2])
    assert [r[0] for r in object_rows(store)] == ["b"]
    assert store._db().execute(
        "SELECT has_objects FROM images WHERE image_id = 'a'").fetchall() == [(False,)]
    # New content is a new identity with its own boxes; the old one keeps its own.
    store.add_images("parts", [img("b", [obj("dent", 1, 1, 2, 2)], content="b-new")])
    assert store._db().execute(
        """SELECT i.current, o.x_max FROM objects o JOIN images i USING (image_key)
           WHERE i.image_id = 'b' ORDER BY i.image_key""").fetchall() == [(False, 20.0), (True, 2.0)]


def test_parquet_import_keeps_boxes_and_sizes(store, tmp_path):
    store.add_images("parts", [img("a", [obj("scratch", 1, 2, 3, 4)]), img("b", [])])
    run = begin(store)
    store.record(run, [("a", det(("scratch", 0.8, Box(1, 2, 3, 4))), 1), ("b", det(), 1)], [])
    store.finish_run(run)
    out = tmp_path / "scores.parquet"
    store.export_parquet(out)
    store.import_parquet(out, dataset="parts")  # carries no boxes: must not erase them
    assert [r[:2] for r in object_rows(store)] == [("a", "scratch")]
    assert store._db().execute(
        "SELECT width, has_objects FROM images ORDER BY image_key").fetchall() == [
        (200, True), (200, True)]


def test_bad_sizes_are_refused(store):
    for width, height in ((0, 10), (10, None), (10.5, 10), (True, 4)):
        bad = LabeledImage("a", "/a.png", frozenset(), width=width, height=height)
        with pytest.raises(InputError, match=r"image 'a': width and height must be positive"):
            store.add_images("parts", [bad])
    assert store._db().execute("SELECT count(*) FROM images").fetchall() == [(0,)]


# ---------------------------------------------------------------------------------------
# the records
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("box, match", [
    ((1, 2, 3), "4 finite numbers"),
    ((1, 2, 3, float("nan")), "4 finite numbers"),
    ((1, 2, "x", 4), "4 numbers"),
    ((3, 2, 3, 4), "no area"),
    ((1, 5, 3, 4), "no area"),
])
def test_ground_truth_object_refuses_unusable_boxes(box, match):
    with pytest.raises(InputError, match=match):
        GroundTruthObject("scratch", box)


def test_labels_and_objects_must_agree():
    scratch = obj("scratch", 1, 1, 5, 5)
    with pytest.raises(InputError, match=r"image 'a' \(m.jsonl:3\): an object has label "
                                         r"'scratch' but the image's labels \[\] do not"):
        LabeledImage("a", "/a", frozenset(), objects=(scratch,), source="m.jsonl:3")
    with pytest.raises(InputError, match=r"labeled 'dent' but none of its objects is"):
        LabeledImage("a", "/a", frozenset({"scratch", "dent"}), objects=(scratch,))
    with pytest.raises(InputError, match=r"labeled 'dent' but none"):
        LabeledImage("a", "/a", frozenset({"dent"}), objects=())
    # An ignore region may label its image (as a COCO crowd annotation does), or not.
    crowd = obj("dent", 0, 0, 9, 9, ignore=True)
    assert LabeledImage("a", "/a", frozenset({"dent"}), objects=(crowd,)).objects == (crowd,)
    assert LabeledImage("a", "/a", frozenset(), objects=[crowd]).objects == (crowd,)


def test_fingerprint_covers_boxes_only_where_given():
    plain = LabeledImage("a", "/a", frozenset({"scratch"}), "sha256:a")
    # The fingerprint of a box-less set is what it was before boxes existed.
    assert dataset_fingerprint([plain]) == (
        "sha256:" + __import__("hashlib").sha256(
            b'calibrate-dataset-fingerprint-v1\n["a","sha256:a",["scratch"]]').hexdigest())
    boxed = [LabeledImage("a", "/a", frozenset({"scratch"}), "sha256:a",
                          objects=(obj("scratch", 1, 1, 5, 5),))]
    moved = [LabeledImage("a", "/a", frozenset({"scratch"}), "sha256:a",
                          objects=(obj("scratch", 1, 1, 5, 6),))]
    assert len({dataset_fingerprint([plain]), dataset_fingerprint(boxed),
                dataset_fingerprint(moved)}) == 3


# ---------------------------------------------------------------------------------------
# detection_rows: selection rules and units
# ---------------------------------------------------------------------------------------


@pytest.fixture
def scored(store):
    """Images a..f of 'parts' with boxes (e without), scored by two runs of v1."""
    store.add_images("parts", [
        img("a", [obj("scratch", 10, 10, 50, 50), obj("dent", 60, 10, 90, 40)], split="cal"),
        img("b", [], split="cal"),
        img("c", [obj("scratch", 0, 0, 20, 20, ignore=True)], labels=set(), split="cal"),
        img("d", [obj("scratch", 5, 5, 15, 15)], split="test"),
        img("e", None, labels={"scratch"}, split="test"),
        img("f", [], split="test"),
    ], complete=True)
    r1 = begin(store, source="/m.jsonl")
    store.record(r1, [
        ("a", det(("scratch", 0.4, Box(10, 10, 50, 50)), ("scratch", 0.9, Box(0, 0, 5, 5)),
                  ("dent", 0.4, Box(0.3, 0.1, 0.45, 0.4, "ratio")),
                  ("scratch", 0.4, Box(11, 11, 50, 50))), 1),
        ("b", det(("scratch", 0.2, Box(1, 1, 9, 9))), 1),
        ("c", det(("scratch", 0.6, Box(2, 2, 8, 8))), 1),
        ("d", det(("scratch", 0.1, Box(5, 5, 15, 15))), 1),
        ("e", det(("scratch", 0.3)), 1),
    ], [("f", "image", "truncated", 1)])
    store.finish_run(r1)
    r2 = begin(store, fingerprint="fp2", source="/m.jsonl")
    # A later run rescored b (its detections replace r1's) and failed on d (r1's stand).
    store.record(r2, [("b", det(("dent", 0.7, Box(0.0, 0.0, 0.5, 0.5, "ratio"))), 1)],
                 [("d", "retryable", "timeout", 3)])
    store.finish_run(r2)
    return store, (r1, r2)


def test_detection_rows_follow_the_count_table_selection(scored):
    store, (r1, r2) = scored
    got = store.detection_rows("surface-defect", "v1", labels=["scratch", "dent"])
    assert isinstance(got, DetectionRows)
    # e has no boxes: left out, so its box-less result is no obstacle; f failed.
    assert (got.n_images, got.n_failed, got.n_without_boxes) == (4, 1, 1)
    assert list(got.image_ids) == ["a", "b", "c", "d"]
    assert (got.dataset, got.run_ids, got.incomplete) == ("parts", (r1, r2), None)
    assert list(got.detections.columns) == ["image_id", "label", "score", "x_min", "y_min",
                                           "x_max", "y_max"]
    # Per image and label by descending score; equal scores in the detector's order.
    assert rows(got.detections) == [
        ("a", "dent", 0.4, 60.0, 10.0, 90.0, 40.0),
        ("a", "scratch", 0.9, 0.0, 0.0, 5.0, 5.0),
        ("a", "scratch", 0.4, 10.0, 10.0, 50.0, 50.0),
        ("a", "scratch", 0.4, 11.0, 11.0, 50.0, 50.0),
        ("b", "dent", 0.7, 0.0, 0.0, 100.0, 50.0),
        ("c", "scratch", 0.6, 2.0, 2.0, 8.0, 8.0),
        ("d", "scratch", 0.1, 5.0, 5.0, 15.0, 15.0),
    ]
    assert rows(got.objects) == [
        ("a", "scratch", 10.0, 10.0, 50.0, 50.0, False), ("a", "dent", 60.0, 10.0, 90.0, 40.0, False),
        ("c", "scratch", 0.0, 0.0, 20.0, 20.0, True), ("d", "scratch", 5.0, 5.0, 15.0, 15.0, False)]
    assert got.objects["ignore"].dtype == bool and got.detections["score"].dtype == np.float64
    # The image level sees the same images (plus e, which needs no box there).
    assert sorted(store.scores("surface-defect", "v1", "scratch").image_ids) == [
        "a", "b", "c", "d", "e"]
    # Split and label filters.
    test = store.detection_rows("surface-defect", "v1", split="test", labels=["scratch"])
    assert (test.n_images, test.n_failed, test.n_without_boxes) == (1, 1, 1)
    assert rows(test.detections) == [("d", "scratch", 0.1, 5.0, 5.0, 15.0, 15.0)]
    dent = store.detection_rows("surface-defect", "v1", split="cal", labels=["dent"])
    assert dent.n_images == 3 and set(dent.detections["label"]) == set(dent.objects["label"]) == {"dent"}


def test_detection_rows_refuse_what_cannot_be_matched(scored):
    store, _ = scored
    # All labels: e's box-less result is left out with e, so nothing is refused...
    assert store.detection_rows("surface-defect", "v1").n_images == 4
    # ...but a box-less result on an image with boxes is.
    store.add_images("parts", [img("e", [obj("scratch", 1, 1, 4, 4)], split="test")])
    with pytest.raises(InputError, match=r"surface-defect v1, image 'e': the 'scratch' "
                                         r"result \(score 0.3, run \w+\) has no box, so it "
                                         r"cannot be matched"):
        store.detection_rows("surface-defect", "v1")
    # A ratio box needs the image's size.
    store.add_images("parts", [img("a", [obj("scratch", 10, 10, 50, 50),
                                         obj("dent", 60, 10, 90, 40)], size=None, split="cal")])
    with pytest.raises(InputError, match=r"image 'a': the 'dent' result .* in ratios of the "
                                         r"image size, and the store does not know that "
                                         r"image's size; register the manifest again"):
        store.detection_rows("surface-defect", "v1", labels=["dent"])
    # An unknown unit (a bulk import can write any) is named.
    store.add_images("parts", [img("g", [])])
    run = begin(store, version="v2", fingerprint="x")
    store.write_results_frame(run, pd.DataFrame({
        "image_id": ["g"], "label": ["dent"], "score": [0.5], "x_min": [0.0], "y_min": [0.0],
        "x_max": [1.0], "y_max": [1.0], "box_unit": ["normalized"]}))
    store.finish_run(run)
    with pytest.raises(InputError, match=r"image 'g'.* unknown unit 'normalized'"):
        store.detection_rows("surface-defect", "v2")
    with pytest.raises(InputError, match="labels must be a list"):
        store.detection_rows("surface-defect", "v2", labels="dent")


def test_detection_rows_refuse_incomplete_runs_unless_allowed(store):
    store.add_images("parts", [img("a", []), img("b", [obj("dent", 1, 1, 3, 3)])],
                     complete=True)
    run = begin(store, source="/m.jsonl")
    store.record(run, [("a", det(("dent", 0.5, Box(1, 1, 3, 3))), 1)], [])
    with pytest.raises(IncompleteDataError, match="1 of 2 images"):
        store.detection_rows("surface-defect", "v1")
    with pytest.warns(match="INCOMPLETE DATA"):
        got = store.detection_rows("surface-defect", "v1", allow_incomplete=True)
    assert got.n_images == 1 and got.incomplete.startswith("INCOMPLETE DATA")
    with pytest.raises(InputError, match="no runs of detector 'surface-defect' version 'v9'"):
        store.detection_rows("surface-defect", "v9")


def test_detection_rows_of_a_large_run_equal_a_python_reading(store):
    # 300 images, several boxes each in both units: the frame equals what a plain
    # Python pass over the recorded detections gives.
    rng = np.random.default_rng(7)
    images, recorded, expected = [], [], []
    for i in range(300):
        w, h = int(rng.integers(50, 400)), int(rng.integers(50, 400))
        n_obj = int(rng.integers(0, 3))
        objects = [obj("scratch", 1, 1, 1 + rng.uniform(1, w - 2), 1 + rng.uniform(1, h - 2))
                   for _ in range(n_obj)]
        images.append(img(f"i{i:03d}", objects, size=(w, h)))
        results = []
        for _ in range(int(rng.integers(0, 4))):
            x0, y0 = rng.uniform(0, 0.5, 2)
            x1, y1 = x0 + rng.uniform(0.01, 0.5), y0 + rng.uniform(0.01, 0.5)
            score = round(float(rng.uniform()), 2)
            if rng.uniform() < 0.5:
                results.append(Result("scratch", score, Box(x0, y0, x1, y1, "ratio")))
                px = (x0 * w, y0 * h, x1 * w, y1 * h)
            else:
                results.append(Result("scratch", score, Box(x0 * w, y0 * h, x1 * w, y1 * h)))
                px = (x0 * w, y0 * h, x1 * w, y1 * h)
            expected.append((i, -score, len(results), (f"i{i:03d}", "scratch", score, *px)))
        recorded.append((f"i{i:03d}", Detection(results), 1))
    store.add_images("parts", images, complete=True)
    run = begin(store, source="/m.jsonl")
    store.record(run, recorded, [])
    store.finish_run(run)
    got = store.detection_rows("surface-defect", "v1")
    want = [e[3] for e in sorted(expected, key=lambda e: e[:3])]
    assert got.n_images == 300 and len(got.detections) == len(want)
    for g, w in zip(rows(got.detections), want):
        assert g[:3] == w[:3] and all(math.isclose(a, b, rel_tol=1e-12) for a, b in zip(g[3:], w[3:]))
    assert len(got.objects) == sum(len(i.objects) for i in images)
