"""Matches stored per run (schema version 5): the detection count table is one GROUP BY,
computed once, reused, and recomputed when results, boxes or image sizes change; always
equal to matching the rows ``detection_rows`` reads."""

from __future__ import annotations

import numpy as np
import pytest

import calibrate.store.matches as store_matches
from calibrate.detectors.base import Box, Detection, Result
from calibrate.errors import InputError
from calibrate.manifest import GroundTruthObject, LabeledImage
from calibrate.matching import match_detections
from calibrate.store import SCHEMA_VERSION, ScoreStore
from tests.detection_scenes import STORE_LABELS as LABELS
from tests.detection_scenes import store_run as _run
from tests.detection_scenes import store_scene as _scene

pytestmark = pytest.mark.filterwarnings("ignore::calibrate.store.DatasetOverlapWarning")



def _expected(store, label, split=None, tau=0.5):
    rows = store.detection_rows("surface-defect", "v1", split=split, labels=[label],
                                allow_incomplete=True)
    m = match_detections(rows.detections, rows.objects, iou_threshold=tau,
                         n_images=rows.n_images)
    return m.detection_table(label)


def _same(got, label, store, split=None, tau=0.5):
    table, n, _, scores = _expected(store, label, split, tau)
    assert got.n_images == n and got.iou_threshold == tau
    np.testing.assert_array_equal(got.detection_scores, scores)
    np.testing.assert_array_equal(got.table.scores, table.scores)
    np.testing.assert_array_equal(got.table.n_positive, table.n_positive)
    np.testing.assert_array_equal(got.table.n_negative, table.n_negative)


@pytest.fixture
def scored(tmp_path):
    images, results = _scene(7)
    with ScoreStore(tmp_path / "calibrate.duckdb") as store:
        store.add_images("parts", images, complete=True)
        ids = [im.image_id for im in images]
        _run(store, results, ids[:-2], failed=ids[-2:-1])
        # a second run scores some images again with other results: the latest counts
        _, again = _scene(8)
        again = {i: again[i] for i in ids[:10]}
        _run(store, {**results, **again}, ids[:10])
        yield store, images, results


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_stored_counts_equal_matching_the_rows_read(tmp_path, seed):
    images, results = _scene(seed)
    with ScoreStore(tmp_path / "s.duckdb") as store:
        store.add_images("parts", images, complete=True)
        _run(store, results, [im.image_id for im in images])
        for label in LABELS:
            for split in (None, "cal", "test"):
                for tau in (0.5, 0.3):
                    got = store.detection_count_table("surface-defect", "v1", label,
                                                      iou_threshold=tau, split=split)
                    _same(got, label, store, split, tau)


def test_latest_run_per_image_and_failures(scored):
    store, _, _ = scored
    for label in LABELS:
        _same(store.detection_count_table("surface-defect", "v1", label), label, store)
    # both runs were matched once each, per label and IoU threshold
    assert store._db().execute("SELECT count(*) FROM match_sets").fetchall() == [(4,)]


def test_matches_are_computed_once_and_reused(scored, monkeypatch):
    store, _, _ = scored
    calls = []
    real = store_matches.match_detections
    monkeypatch.setattr(store_matches, "match_detections",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    first = store.detection_count_table("surface-defect", "v1", "scratch")
    assert len(calls) == 2  # one per run
    second = store.detection_count_table("surface-defect", "v1", "scratch", split="cal")
    again = store.detection_count_table("surface-defect", "v1", "scratch")
    assert len(calls) == 2
    np.testing.assert_array_equal(first.table.scores, again.table.scores)
    _same(second, "scratch", store, "cal")
    store.detection_count_table("surface-defect", "v1", "scratch", iou_threshold=0.75)
    assert len(calls) == 4  # another IoU threshold is another match


def test_changed_boxes_sizes_and_results_are_matched_again(scored, monkeypatch):
    store, images, results = scored
    store.detection_count_table("surface-defect", "v1", "scratch")
    calls = []
    real = store_matches.match_detections
    monkeypatch.setattr(store_matches, "match_detections",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    # a corrected box (same content): the runs that scored the image match again
    target = next(im for im in images[12:] if any(o.label == "scratch" and not o.ignore
                                                   for o in im.objects))
    moved = tuple(GroundTruthObject(o.label, (o.box[0] + 40, o.box[1], o.box[2] + 40, o.box[3]),
                                    o.ignore) for o in target.objects)
    changed = [LabeledImage(im.image_id, im.uri, im.labels, content_hash=im.content_hash,
                            split=im.split, objects=moved if im is target else im.objects,
                            width=im.width, height=im.height) for im in images]
    store.add_images("parts", changed, complete=True)
    got = store.detection_count_table("surface-defect", "v1", "scratch")
    assert len(calls) == 1  # only the first run scored that image
    _same(got, "scratch", store)
    # another image size moves every ratio box
    resized = [LabeledImage(im.image_id, im.uri, im.labels, content_hash=im.content_hash,
                            split=im.split, objects=im.objects, width=im.width,
                            height=80 if im.image_id == "p1.png" else im.height)
               for im in changed]
    store.add_images("parts", resized, complete=True)
    _same(store.detection_count_table("surface-defect", "v1", "scratch"), "scratch", store)
    assert len(calls) == 3  # both runs scored p1
    # a run that gets more results (an image recorded later) is matched again
    last = images[-1].image_id
    run = store.runs()["run_id"].iloc[0]
    store.record(run, [(last, Detection(results[last]), 1)], [])
    _same(store.detection_count_table("surface-defect", "v1", "scratch"), "scratch", store)
    assert len(calls) == 4


def test_read_only_store_computes_the_same_without_writing(scored, tmp_path):
    store, _, _ = scored
    want = store.detection_count_table("surface-defect", "v1", "dent")
    path = store.path
    store.close()
    with ScoreStore(path, read_only=True) as ro:
        got = ro.detection_count_table("surface-defect", "v1", "dent", iou_threshold=0.6)
        _same(got, "dent", ro, tau=0.6)
        again = ro.detection_count_table("surface-defect", "v1", "dent")
        np.testing.assert_array_equal(again.table.n_positive, want.table.n_positive)
        assert ro._db().execute("SELECT count(*) FROM match_sets WHERE iou_threshold = 0.6"
                                ).fetchall() == [(0,)]


def test_no_boxes_is_said(tmp_path):
    with ScoreStore(tmp_path / "s.duckdb") as store:
        store.add_images("parts", [LabeledImage("a", "/a", frozenset({"scratch"}), "sha256:a")])
        _run(store, {"a": [Result("scratch", 0.5, Box(0, 0, 1, 1))]}, ["a"])
        with pytest.raises(InputError, match="has ground-truth boxes"):
            store.detection_count_table("surface-defect", "v1", "scratch")


def test_version_4_file_gains_the_matches_tables(tmp_path):
    path = tmp_path / "v4.duckdb"
    images, results = _scene(4, n=6)
    with ScoreStore(path) as store:
        store.add_images("parts", images, complete=True)
        _run(store, results, [im.image_id for im in images])
        con = store._db()
        # exactly what a version-4 file is: the same schema without the matches tables
        con.execute("DROP TABLE matches")
        con.execute("DROP TABLE match_sets")
        con.execute("UPDATE meta SET value = '4' WHERE key = 'schema_version'")
    with ScoreStore(path) as store:
        meta = dict(store._db().execute("SELECT key, value FROM meta").fetchall())
        assert meta["schema_version"] == str(SCHEMA_VERSION) == "5" and "migrated_from_4" in meta
        _same(store.detection_count_table("surface-defect", "v1", "scratch"), "scratch", store)
