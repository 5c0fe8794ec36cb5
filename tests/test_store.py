"""Tests of the score store (calibrate.store) against real DuckDB files."""

from __future__ import annotations

import json
import math
import uuid
import zlib

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calibrate.curves import count_table
from calibrate.detectors.base import Box, Detection, Result
from calibrate.errors import CalibrateError, InputError
from calibrate.manifest import LabeledImage
from calibrate.store import (
    SCHEMA_VERSION,
    DatasetOverlapWarning,
    LabelScores,
    MigrationWarning,
    RunInfo,
    SchemaVersionError,
    ScoreStore,
    StoreError,
    redact_secrets,
)

# Most tests read runs they never finish, or that cover part of a dataset: what they
# check is the selection, and the incompleteness warning is tested on its own.
pytestmark = pytest.mark.filterwarnings("ignore::calibrate.store.IncompleteDataWarning")

# ---------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------


def image(i, labels=(), split=None, content_hash=None):
    image_id = i if isinstance(i, str) else f"img{i:03d}"
    return LabeledImage(
        image_id=image_id,
        uri=f"/data/{image_id}.jpg",
        labels=frozenset(labels),
        content_hash=content_hash or f"sha256:{image_id}",
        split=split,
    )


def det(*results, raw=None):
    out = []
    for r in results:
        if isinstance(r, Result):
            out.append(r)
        else:
            out.append(Result(*r))
    return Detection(out, raw=raw)


def begin(store, detector="viam", version="v1", dataset="parts", fingerprint="fp", **kw):
    args = dict(
        detector=detector,
        model_version=version,
        dataset=dataset,
        dataset_fingerprint=fingerprint,
        settings={},
        labels=None,
        detection_floor=None,
    )
    args.update(kw)
    return store.begin_run(**args)


def table_equal(a, b):
    return (
        np.array_equal(a.scores, b.scores)
        and np.array_equal(a.n_positive, b.n_positive)
        and np.array_equal(a.n_negative, b.n_negative)
    )


def as_dict(ls: LabelScores):
    return {
        i: (s, p)
        for i, s, p in zip(ls.image_ids.tolist(), ls.scores.tolist(), ls.positive.tolist())
    }


@pytest.fixture
def path(tmp_path):
    return tmp_path / "calibrate.duckdb"


@pytest.fixture
def store(path):
    with ScoreStore(path) as s:
        yield s


@pytest.fixture
def parts(store):
    """A store with 6 images of dataset 'parts': img000..img005, odd ones have 'scratch'."""
    store.add_images(
        "parts",
        [image(i, ["scratch"] if i % 2 else [], split="cal" if i < 4 else "test")
         for i in range(6)],
    )
    return store


def count_rows(store, table):
    return store._db().execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]


# ---------------------------------------------------------------------------------------
# schema, lifecycle
# ---------------------------------------------------------------------------------------


def test_new_file_gets_schema_and_version(path):
    assert not path.exists()
    with ScoreStore(path) as store:
        assert store.path == path
        assert not store.closed
    assert path.exists()
    con = duckdb.connect(str(path), read_only=True)
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    assert {"meta", "runs", "images", "run_images", "results", "failures",
            "raw_responses"} <= tables
    version = con.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchall()
    assert version == [(str(SCHEMA_VERSION),)]
    con.close()


def test_closed_store_says_so(path):
    store = ScoreStore(path)
    store.close()
    store.close()  # twice is fine
    assert store.closed
    with pytest.raises(StoreError, match="closed"):
        store.runs()


def test_default_path_is_calibrate_duckdb(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with ScoreStore() as store:
        assert store.path.name == "calibrate.duckdb"
    assert (tmp_path / "calibrate.duckdb").exists()


def test_not_a_duckdb_file_is_refused(tmp_path):
    p = tmp_path / "notes.duckdb"
    p.write_text("hello " * 1000)
    with pytest.raises(StoreError, match="not a DuckDB file"):
        ScoreStore(p)


def test_foreign_duckdb_file_is_refused(tmp_path):
    p = tmp_path / "other.duckdb"
    con = duckdb.connect(str(p))
    con.execute("CREATE TABLE sales (x INT)")
    con.close()
    with pytest.raises(StoreError, match="not a calibrate score store"):
        ScoreStore(p)


# ---------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------


def test_add_images_upserts_and_changed_labels_reach_the_truth(parts):
    run = begin(parts)
    parts.record(run, [("img000", det(("scratch", 0.7)), 1)], [])
    assert parts.scores("viam", "v1", "scratch").positive.tolist() == [False]
    key_before = parts._db().execute(
        "SELECT image_key FROM images WHERE image_id = 'img000'"
    ).fetchall()
    # The label was corrected; the content is the same, so it is the same image (a
    # changed content is another image: see tests/test_identity_store.py).
    parts.add_images("parts", [image(0, ["scratch"], split="cal")])
    row = parts._db().execute(
        "SELECT image_key, content_hash, labels FROM images WHERE image_id = 'img000'"
    ).fetchall()
    assert row == [(key_before[0][0], "sha256:img000", ["scratch"])]
    assert count_rows(parts, "images") == 6
    assert parts.scores("viam", "v1", "scratch").positive.tolist() == [True]
    # Re-adding the same images changes nothing.
    parts.add_images("parts", [image(0, ["scratch"], split="cal")])
    assert count_rows(parts, "images") == 6


def test_same_image_id_in_two_datasets_is_two_images(parts):
    parts.add_images("other", [image(0, ["dent"])])
    assert count_rows(parts, "images") == 7


@pytest.mark.parametrize(
    "images, match",
    [
        ([image(1), image(1)], "appears twice"),
        ([LabeledImage("a", "/a.jpg", labels="scratch")], "set of label names"),
        ([object()], "not a LabeledImage"),
        ([LabeledImage("", "/a.jpg")], "lack an image_id"),
        ([LabeledImage(7, "/a.jpg")], "wrong type"),
    ],
)
def test_add_images_rejects_bad_input(store, images, match):
    with pytest.raises(InputError, match=match):
        store.add_images("parts", images)
    assert count_rows(store, "images") == 0


# ---------------------------------------------------------------------------------------
# runs and recording
# ---------------------------------------------------------------------------------------


def test_begin_find_finish_run(parts):
    assert parts.find_run("viam", "v1", "fp") is None
    run = begin(parts, labels=["scratch", "dent"], detection_floor=0.05, settings={"iou": 0.5})
    assert len(run) == 32 and int(run, 16) >= 0
    info = parts.find_run("viam", "v1", "fp")
    assert isinstance(info, RunInfo)
    assert (info.run_id, info.status, info.labels, info.detection_floor) == (
        run, "running", ["scratch", "dent"], 0.05)
    assert info.settings == {"iou": 0.5}
    assert info.finished_at is None
    later = begin(parts)
    assert parts.find_run("viam", "v1", "fp").run_id == later  # most recent
    assert parts.find_run("viam", "v1", "other-fingerprint") is None
    parts.finish_run(run, "interrupted")
    info = parts.run_info(run)
    assert info.status == "interrupted" and info.finished_at >= info.started_at
    with pytest.raises(InputError, match="status must be one of"):
        parts.finish_run(run, "done")
    with pytest.raises(InputError, match="no run"):
        parts.finish_run("0" * 32)


def test_record_writes_results_raw_and_done(parts):
    run = begin(parts)
    raw = {"detections": [{"class_name": "scratch", "confidence": 0.9}], "when": object()}
    parts.record(
        run,
        [
            ("img000", det(("scratch", 0.2), ("scratch", 0.9, Box(1, 2, 30, 40)),
                           ("dent", 0.4, Box(0.1, 0.2, 0.3, 0.4, "ratio")), raw=raw), 1),
            ("img001", det(), 3),
        ],
        [("img002", "image", "cannot decode JPEG", 1)],
    )
    assert parts.done_image_ids(run) == {"img000", "img001", "img002"}
    assert count_rows(parts, "results") == 3
    boxes = parts._db().execute(
        "SELECT label, score, x_min, y_min, x_max, y_max, box_unit FROM result_rows "
        "ORDER BY score"
    ).fetchall()
    assert boxes == [
        ("scratch", 0.2, None, None, None, None, None),
        ("dent", 0.4, 0.1, 0.2, 0.3, 0.4, "ratio"),
        ("scratch", 0.9, 1.0, 2.0, 30.0, 40.0, "pixel"),
    ]
    got = parts.raw_response(run, "img000")
    assert got["detections"] == raw["detections"] and got["when"].startswith("<object")
    assert parts.raw_response(run, "img001") is None  # raw=None is kept as JSON null
    with pytest.raises(InputError, match="no raw response"):
        parts.raw_response(run, "img002")
    stored = parts._db().execute("SELECT response FROM raw_responses LIMIT 1").fetchall()[0][0]
    json.loads(zlib.decompress(stored))  # really zlib-compressed JSON
    attempts = dict(parts._db().execute(
        "SELECT image_id, attempts FROM run_image_rows").fetchall())
    assert attempts == {"img000": 1, "img001": 3, "img002": 1}
    runs = parts.runs()
    assert runs[["n_scored", "n_failed"]].values.tolist() == [[2, 1]]


def test_rerecording_is_idempotent(parts):
    run = begin(parts)
    batch = (
        [("img000", det(("scratch", 0.9)), 1), ("img001", det(("scratch", 0.3)), 1)],
        [("img002", "retryable", "throttled 5 times", 5)],
    )
    parts.record(run, *batch)
    counts = {t: count_rows(parts, t) for t in
              ("results", "run_images", "failures", "raw_responses")}
    parts.record(run, *batch)  # a batch whose commit the runner did not see
    # Already done as scored: a later failure or a different score does not change it.
    parts.record(run, [("img000", det(("scratch", 0.1)), 2)], [("img001", "error", "x", 1)])
    assert {t: count_rows(parts, t) for t in counts} == counts
    assert as_dict(parts.scores("viam", "v1", "scratch")) == {
        "img000": (0.9, False), "img001": (0.3, True)}
    # Duplicates inside one batch: the first scored entry wins, then failed ones.
    parts.record(
        run,
        [("img003", det(("scratch", 0.5)), 1), ("img003", det(("scratch", 0.6)), 1)],
        [("img003", "image", "x", 1), ("img004", "image", "bad", 1), ("img004", "error", "y", 2)],
    )
    assert as_dict(parts.scores("viam", "v1", "scratch"))["img003"] == (0.5, True)
    assert parts.failures(run)["image_id"].tolist() == ["img002", "img004"]
    assert count_rows(parts, "run_images") == 5


def test_failures_are_kept_apart_and_never_scores(parts):
    run = begin(parts)
    parts.record(
        run,
        [("img000", det(("scratch", 0.9)), 1)],
        [("img001", "retryable", "429 after 5 attempts", 5),
         ("img002", "image", "not an image", 1),
         ("img003", "error", "ValueError: boom", 1)],
    )
    ls = parts.scores("viam", "v1", "scratch")
    assert ls.image_ids.tolist() == ["img000"]
    assert ls.n_failed == 3
    table = parts.count_table("viam", "v1", "scratch")
    assert table.total_positive + table.total_negative == 1
    f = parts.failures()
    assert f.columns.tolist() == ["run_id", "detector", "model_version", "dataset", "image_id",
                                  "kind", "message", "attempts", "failed_at", "recovered"]
    assert not f["recovered"].any()
    assert f[["image_id", "kind", "attempts"]].values.tolist() == [
        ["img001", "retryable", 5], ["img002", "image", 1], ["img003", "error", 1]]
    assert parts.failures(run).shape[0] == 3
    assert count_rows(parts, "results") == 1
    v = parts.versions()
    assert v[["n_images", "n_failures"]].values.tolist() == [[1, 3]]


def test_failed_then_scored_by_a_later_run_counts_as_scored(parts):
    first = begin(parts)
    parts.record(first, [], [("img001", "retryable", "timeout", 3)])
    second = begin(parts)
    parts.record(second, [("img001", det(("scratch", 0.4)), 1)], [])
    ls = parts.scores("viam", "v1", "scratch")
    assert as_dict(ls) == {"img001": (0.4, True)} and ls.n_failed == 0
    # ... and a later failure does not hide an earlier valid score of the same version.
    third = begin(parts)
    parts.record(third, [], [("img001", "retryable", "timeout", 3)])
    ls = parts.scores("viam", "v1", "scratch")
    assert as_dict(ls) == {"img001": (0.4, True)} and ls.n_failed == 0


def test_no_result_scores_minus_inf(parts):
    run = begin(parts)
    parts.record(
        run,
        [("img000", det(("dent", 0.8)), 1),  # results, but not for scratch
         ("img001", det(), 1),                # nothing at all
         ("img002", det(("scratch", 0.1), ("scratch", 0.6)), 1)],  # max wins
        [],
    )
    ls = parts.scores("viam", "v1", "scratch")
    assert ls.scores.dtype == np.float64 and ls.positive.dtype == bool
    assert ls.image_ids.tolist() == ["img000", "img001", "img002"]
    assert ls.scores.tolist() == [-math.inf, -math.inf, 0.6]
    assert ls.positive.tolist() == [False, True, False]
    table = parts.count_table("viam", "v1", "scratch")
    assert table.scores.tolist() == [-math.inf, 0.6]
    assert table.n_positive.tolist() == [1, 0] and table.n_negative.tolist() == [1, 1]
    # A label nobody ever reported is -inf everywhere, not an error.
    assert parts.scores("viam", "v1", "crack").scores.tolist() == [-math.inf] * 3


def test_latest_run_rule(parts):
    old = begin(parts)
    parts.record(old, [("img000", det(("scratch", 0.9)), 1),
                       ("img001", det(("scratch", 0.8)), 1)], [])
    new = begin(parts, fingerprint="fp2")
    parts.record(new, [("img000", det(("scratch", 0.2)), 1),
                       ("img002", det(), 1)], [])
    other_version = begin(parts, version="v2")
    parts.record(other_version, [("img003", det(("scratch", 0.5)), 1)], [])
    ls = parts.scores("viam", "v1", "scratch")
    # img000 from the latest run, img001 only in the old run, img002 no result; v2 apart.
    assert as_dict(ls) == {"img000": (0.2, False), "img001": (0.8, True),
                           "img002": (-math.inf, False)}
    assert table_equal(parts.count_table("viam", "v1", "scratch"),
                       count_table(ls.scores, ls.positive))
    assert as_dict(parts.scores("viam", "v2", "scratch")) == {"img003": (0.5, True)}


def test_dataset_and_split_filters(parts):
    parts.add_images("lab", [image(0, ["scratch"])])
    run = begin(parts)
    parts.record(run, [(f"img00{i}", det(("scratch", i / 10)), 1) for i in range(6)], [])
    lab_run = begin(parts, dataset="lab", fingerprint="lab")
    parts.record(lab_run, [("img000", det(("scratch", 0.99)), 1)], [])
    # One dataset per version: the latest it ran on ('lab'), never both (img000 of 'lab'
    # is the same image as img000 of 'parts': same id and content), and the others named.
    with pytest.warns(DatasetOverlapWarning, match="'parts' .1 of its 6 images the same"):
        both = parts.scores("viam", "v1", "scratch")
    assert len(both) == 1 and both.scores.tolist() == [0.99]
    only_parts = parts.scores("viam", "v1", "scratch", dataset="parts")
    assert len(only_parts) == 6
    cal = parts.scores("viam", "v1", "scratch", dataset="parts", split="cal")
    assert cal.image_ids.tolist() == ["img000", "img001", "img002", "img003"]
    ct = parts.count_table("viam", "v1", "scratch", dataset="parts", split="test")
    assert ct.total_positive + ct.total_negative == 2
    with pytest.raises(InputError, match="no runs on dataset 'nope'"):
        parts.scores("viam", "v1", "scratch", dataset="nope")


def test_unknown_version_lists_the_known_ones(parts):
    begin(parts)
    with pytest.raises(InputError, match="Known .*'viam' 'v1'"):
        parts.scores("viam", "v9", "scratch")
    with pytest.raises(InputError, match="no runs of detector"):
        parts.count_table("rekognition", "v1", "scratch")
    with pytest.raises(InputError):
        parts.labels("viam", "v9")


@pytest.mark.parametrize(
    "scored, failed, match",
    [
        ([("img000", det(("scratch", float("nan"))), 1)], [], "finite number"),
        ([("img000", det(("scratch", float("inf"))), 1)], [], "finite number"),
        ([("img000", det(("", 0.5)), 1)], [], "label must be"),
        ([("img000", det(("scratch", 0.5, Box(0, 0, float("nan"), 1))), 1)], [], "box"),
        ([("img000", "not a detection", 1)], [], "expected a Detection"),
        ([("img000", det(), -1)], [], "attempts"),
        ([("img000", det())], [], "tuple"),
        ([], [("img000", "weird", "x", 1)], "kind must be one of"),
        ([("nope", det(("scratch", 0.5)), 1)], [], "not registered in dataset 'parts'"),
        ([("img000", det(raw={"x": 1}), 1)], [("nope", "image", "x", 1)], "not registered"),
    ],
)
def test_record_rejects_bad_input_and_writes_nothing(parts, scored, failed, match):
    run = begin(parts)
    with pytest.raises(InputError, match=match):
        parts.record(run, scored, failed)
    assert parts.done_image_ids(run) == set()
    assert count_rows(parts, "results") == count_rows(parts, "raw_responses") == 0


def test_record_into_unknown_run(parts):
    with pytest.raises(InputError, match="no run 'abc'"):
        parts.record("abc", [("img000", det(), 1)], [])
    with pytest.raises(InputError, match="no run"):
        parts.done_image_ids("abc")


def test_labels_and_versions(parts):
    run = begin(parts, labels=["scratch", "crack"])
    parts.record(run, [("img000", det(("dent", 0.3), ("scratch", 0.4)), 1)], [])
    begin(parts, detector="rekognition", version="2024")
    assert parts.labels("viam", "v1") == ["crack", "dent", "scratch"]
    v = parts.versions()
    assert v.columns.tolist()[:3] == ["detector", "model_version", "labels"]
    assert v["labels"].tolist() == [["crack", "dent", "scratch"], []]
    assert v[["n_runs", "n_images", "n_failures"]].values.tolist() == [[1, 1, 0], [1, 0, 0]]


# ---------------------------------------------------------------------------------------
# bulk writes
# ---------------------------------------------------------------------------------------


def test_write_results_frame(parts):
    run = begin(parts)
    frame = pd.DataFrame({
        "image_id": ["img000", "img000", "img001", "img002", "img003"],
        "label": ["scratch", "scratch", "dent", None, "scratch"],
        "score": [0.2, 0.7, 0.5, None, -math.inf],
        "x_min": [1.0, None, None, None, None], "y_min": [2.0, None, None, None, None],
        "x_max": [3.0, None, None, None, None], "y_max": [4.0, None, None, None, None],
    })
    parts.write_results_frame(run, frame)
    assert parts.done_image_ids(run) == {"img000", "img001", "img002", "img003"}
    assert as_dict(parts.scores("viam", "v1", "scratch")) == {
        "img000": (0.7, False), "img001": (-math.inf, True),
        "img002": (-math.inf, False), "img003": (-math.inf, True)}
    assert count_rows(parts, "results") == 3  # the -inf and the marker rows are not results
    units = parts._db().execute("SELECT box_unit FROM results ORDER BY score").fetchall()
    assert units == [("pixel",), (None,), (None,)]
    # Writing again (or an overlapping frame) adds nothing for images already done.
    parts.write_results_frame(run, frame)
    parts.write_results_frame(run, pa.table({"image_id": ["img000", "img004"],
                                             "label": ["scratch", "scratch"],
                                             "score": [0.99, 0.1]}))
    assert count_rows(parts, "results") == 4
    assert as_dict(parts.scores("viam", "v1", "scratch"))["img000"] == (0.7, False)
    assert count_rows(parts, "run_images") == 5


@pytest.mark.parametrize(
    "frame, match",
    [
        ({"image_id": ["img000"], "label": ["scratch"]}, "lacks column"),
        ({"image_id": ["img000"], "label": ["scratch"], "score": [0.1], "conf": [1]},
         "unknown column"),
        ({"image_id": ["img000"], "label": ["scratch"], "score": [0.1], "x_min": [1.0]},
         "all four"),
        ({"image_id": ["img000"], "label": ["scratch"], "score": ["high"]}, "numbers"),
        ({"image_id": ["img000"], "label": ["scratch"], "score": [float("nan")]},
         "invalid score"),
        ({"image_id": ["img000"], "label": ["scratch"], "score": [None]}, "invalid score"),
        ({"image_id": ["img000"], "label": [None], "score": [0.3]}, "invalid score"),
        ({"image_id": ["img000", "zzz"], "label": ["a", "a"], "score": [0.1, 0.2]},
         r"1 image\(s\) are not registered in dataset 'parts' \(e.g. 'zzz'\)"),
        ({"image_id": ["img000", None], "label": ["a", "a"], "score": [0.1, 0.2]},
         "1 result row.* no image_id"),
        ({"image_id": [None], "label": ["a"], "score": [0.1]}, "must hold strings"),
        ([1, 2, 3], "DataFrame"),
    ],
)
def test_write_results_frame_rejects_bad_frames(parts, frame, match):
    run = begin(parts)
    if isinstance(frame, dict):
        frame = pd.DataFrame(frame)
    with pytest.raises(InputError, match=match):
        parts.write_results_frame(run, frame)
    assert count_rows(parts, "results") == count_rows(parts, "run_images") == 0


# ---------------------------------------------------------------------------------------
# count table == table of scores(), under hypothesis
# ---------------------------------------------------------------------------------------

LABELS = ("a", "b")
score_values = st.one_of(
    st.sampled_from([0.0, 0.25, 0.5, 1.0]),  # ties
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=32),
)
result_lists = st.lists(st.tuples(st.sampled_from(LABELS), score_values), max_size=3)
# per image in a run: None = not in the run, a list = scored with these results, or a failure
image_outcome = st.one_of(st.none(), result_lists, st.just("failed"))


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory):
    with ScoreStore(tmp_path_factory.mktemp("hyp") / "calibrate.duckdb") as s:
        yield s


@settings(max_examples=35, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(
    truth=st.lists(st.tuples(st.sets(st.sampled_from(LABELS)), st.sampled_from(["cal", "test"])),
                   min_size=1, max_size=25),
    runs=st.lists(st.lists(image_outcome, min_size=25, max_size=25), min_size=1, max_size=3),
    data=st.data(),
)
def test_count_table_equals_table_of_scores(shared_store, truth, runs, data):
    store = shared_store
    dataset, detector = uuid.uuid4().hex, uuid.uuid4().hex  # isolated from other examples
    ids = [f"i{n}" for n in range(len(truth))]
    store.add_images(dataset, [image(i, labels, split) for i, (labels, split) in zip(ids, truth)])
    use_bulk = data.draw(st.booleans(), label="bulk")
    for outcomes in runs:
        run = begin(store, detector=detector, dataset=dataset, fingerprint=uuid.uuid4().hex)
        scored = [(i, det(*o), 1) for i, o in zip(ids, outcomes) if isinstance(o, list)]
        failed = [(i, "retryable", "x", 3) for i, o in zip(ids, outcomes) if o == "failed"]
        if use_bulk and scored:
            rows = [(i, lab, s) for i, d, _ in scored for lab, s in
                    [(r.label, r.score) for r in d.results] or [(None, None)]]
            frame = pd.DataFrame(rows, columns=["image_id", "label", "score"])
            store.write_results_frame(run, frame)
            store.record(run, [], failed)
        else:
            store.record(run, scored, failed)

    split = data.draw(st.sampled_from([None, "cal"]), label="split")
    for label in LABELS:
        # Reference: the latest run that scored each image, max per label, -inf if none.
        expected, failed_only = {}, set()
        for n, i in enumerate(ids):
            if split is not None and truth[n][1] != split:
                continue
            scored_in = [o[n] for o in runs if isinstance(o[n], list)]
            if scored_in:
                latest = scored_in[-1]
                s = max((float(np.float32(v)) for lab, v in latest if lab == label),
                        default=-math.inf)
                expected[i] = (s, label in truth[n][0])
            elif any(o[n] == "failed" for o in runs):
                failed_only.add(i)
        got = store.scores(detector, "v1", label, split=split)
        assert as_dict(got) == expected
        assert len(got.image_ids) == len(expected)  # every image once
        assert got.n_failed == len(failed_only)
        table = store.count_table(detector, "v1", label, split=split)
        assert table_equal(table, count_table(got.scores, got.positive))


# ---------------------------------------------------------------------------------------
# Parquet
# ---------------------------------------------------------------------------------------


def test_parquet_round_trip(parts, tmp_path):
    r1 = begin(parts, labels=["scratch", "dent"], settings={"iou": 0.4}, detection_floor=0.1)
    parts.record(r1, [("img000", det(("scratch", 0.9, Box(1, 2, 3, 4)), ("dent", 0.3)), 1),
                      ("img001", det(), 2),
                      ("img002", det(("scratch", 0.4)), 1)],
                 [("img003", "image", "broken", 1)])
    parts.finish_run(r1)
    r2 = begin(parts, fingerprint="fp2")
    parts.record(r2, [("img002", det(("scratch", 0.6)), 1), ("img004", det(("dent", 0.5)), 1)], [])
    parts.finish_run(r2)
    begin(parts, detector="other")  # not exported below

    out = tmp_path / "scores.parquet"
    n = parts.export_parquet(out, detector="viam", model_version="v1")
    frame = pd.read_parquet(out)
    assert n == len(frame) == 6  # 3 + 1 marker row for img001 + 2
    assert {"run_id", "detector", "model_version", "image_id", "label", "score", "x_min",
            "positive", "image_labels"} <= set(frame.columns)
    assert frame.loc[frame["label"] == "scratch", "positive"].tolist() == [False, False, False]

    with ScoreStore(tmp_path / "copy.duckdb") as copy:
        new_run = copy.import_parquet(out, dataset="parts")
        assert len(new_run) == 32
        assert len(copy.runs()) == 2
        for label in ("scratch", "dent", "crack"):
            a = parts.scores("viam", "v1", label)
            b = copy.scores("viam", "v1", label)
            assert as_dict(a) == as_dict(b)
            assert table_equal(parts.count_table("viam", "v1", label),
                               copy.count_table("viam", "v1", label))
        info = copy.run_info(new_run)
        assert info.settings["imported_from"]["run_id"] == r2
        first = copy.runs().iloc[0]
        assert first["labels"] == ["scratch", "dent"] and first["detection_floor"] == 0.1
        assert first["settings"]["iou"] == 0.4
        box = copy._db().execute(
            "SELECT x_min, y_min, x_max, y_max, box_unit FROM results WHERE x_min IS NOT NULL"
        ).fetchall()
        assert box == [(1.0, 2.0, 3.0, 4.0, "pixel")]
        # Importing into a store that already has it adds runs, not duplicate images.
        copy.import_parquet(out, dataset="parts")
        assert count_rows(copy, "images") == 4


def test_export_of_empty_selection_and_bad_import(parts, tmp_path):
    out = tmp_path / "empty.parquet"
    assert parts.export_parquet(out) == 0
    with pytest.raises(InputError, match="holds no rows"):
        parts.import_parquet(out, dataset="x")
    other = tmp_path / "other.parquet"
    pd.DataFrame({"image_id": ["a"], "score": [0.1]}).to_parquet(other)
    with pytest.raises(InputError, match="lacks column"):
        parts.import_parquet(other, dataset="x")
    with pytest.raises(InputError, match="no Parquet file"):
        parts.import_parquet(tmp_path / "missing.parquet", dataset="x")
    with pytest.raises(InputError, match="does not exist"):
        parts.export_parquet(tmp_path / "no" / "dir.parquet")


# ---------------------------------------------------------------------------------------
# reopening, read-only
# ---------------------------------------------------------------------------------------


def test_reopen_closed_file_and_read_back(path):
    with ScoreStore(path) as store:
        store.add_images("parts", [image(0, ["scratch"]), image(1)])
        run = begin(store)
        store.record(run, [("img000", det(("scratch", 0.8), raw={"k": [1, 2]}), 1)],
                     [("img001", "image", "bad", 1)])
        store.finish_run(run)
        before = as_dict(store.scores("viam", "v1", "scratch"))
    with ScoreStore(path) as store:
        assert as_dict(store.scores("viam", "v1", "scratch")) == before
        assert store.scores("viam", "v1", "scratch").n_failed == 1
        assert store.find_run("viam", "v1", "fp").status == "finished"
        assert store.raw_response(run, "img000") == {"k": [1, 2]}
        assert store.done_image_ids(run) == {"img000", "img001"}
        # Resuming into the same run keeps working after a reopen.
        store.add_images("parts", [image(2)])
        store.record(run, [("img002", det(), 1)], [])
        assert store.done_image_ids(run) == {"img000", "img001", "img002"}


def test_read_only(path):
    with ScoreStore(path) as store:
        store.add_images("parts", [image(0, ["scratch"])])
        run = begin(store)
        store.record(run, [("img000", det(("scratch", 0.8)), 1)], [])
    with ScoreStore(path, read_only=True) as ro:
        assert ro.read_only
        assert as_dict(ro.scores("viam", "v1", "scratch")) == {"img000": (0.8, True)}
        assert len(ro.runs()) == 1
        for call in (
            lambda: ro.add_images("parts", [image(1)]),
            lambda: begin(ro),
            lambda: ro.record(run, [("img000", det(), 1)], []),
            lambda: ro.finish_run(run),
            lambda: ro.write_results_frame(run, {"image_id": ["img000"], "label": ["a"],
                                                 "score": [0.1]}),
            lambda: ro.import_parquet(path, dataset="x"),
        ):
            with pytest.raises(StoreError, match="read_only"):
                call()


def test_read_only_needs_an_existing_store(tmp_path):
    with pytest.raises(StoreError, match="no score store at"):
        ScoreStore(tmp_path / "missing.duckdb", read_only=True)


def test_same_file_open_read_only_and_writable_in_one_process(path):
    with ScoreStore(path):
        with pytest.raises(StoreError, match="different read_only setting"):
            ScoreStore(path, read_only=True)


# ---------------------------------------------------------------------------------------
# schema versions
# ---------------------------------------------------------------------------------------

V0_DDL = """
CREATE TABLE runs (run_id VARCHAR PRIMARY KEY, detector VARCHAR, model_version VARCHAR,
    dataset VARCHAR, dataset_fingerprint VARCHAR, settings VARCHAR, labels VARCHAR,
    detection_floor DOUBLE, status VARCHAR, started_at TIMESTAMP, finished_at TIMESTAMP);
CREATE TABLE images (dataset VARCHAR, image_id VARCHAR, uri VARCHAR, content_hash VARCHAR,
    labels VARCHAR, split VARCHAR, PRIMARY KEY (dataset, image_id));
CREATE TABLE results (run_id VARCHAR, image_id VARCHAR, label VARCHAR, score DOUBLE,
    box VARCHAR, box_unit VARCHAR);
CREATE TABLE failures (run_id VARCHAR, image_id VARCHAR, kind VARCHAR, message VARCHAR,
    attempts INTEGER, failed_at TIMESTAMP);
CREATE TABLE raw_responses (run_id VARCHAR, image_id VARCHAR, response BLOB);
INSERT INTO runs VALUES
    ('r_old', 'viam', 'v1', 'parts', 'fp0', '{"api_key": "AKIA-SECRET", "iou": 0.5}',
     '["scratch"]', NULL, 'finished', '2024-01-01 10:00', '2024-01-01 11:00'),
    ('r_new', 'viam', 'v1', 'parts', 'fp1', '{}', NULL, NULL, 'running',
     '2024-02-01 10:00', NULL);
INSERT INTO images VALUES
    ('parts', 'a', '/a.jpg', 'sha256:a', 'scratch, dent', 'cal'),
    ('parts', 'b', '/b.jpg', NULL, '', NULL),
    ('parts', 'c', '/c.jpg', NULL, 'scratch', NULL);
INSERT INTO results VALUES
    ('r_old', 'a', 'scratch', 0.9, '[1, 2, 30, 40]', 'pixel'),
    ('r_old', 'b', 'scratch', 0.4, NULL, NULL),
    ('r_new', 'a', 'scratch', 0.7, NULL, NULL),
    ('r_new', 'a', 'scratch', 0.2, NULL, NULL),
    ('r_new', 'ghost', 'scratch', 0.5, NULL, NULL);
INSERT INTO failures VALUES ('r_new', 'c', 'image', 'truncated', 1, '2024-02-01 10:05');
"""


def make_v0(path):
    con = duckdb.connect(str(path))
    con.execute(V0_DDL)
    con.execute("INSERT INTO raw_responses VALUES ('r_old', 'a', ?)",
                [zlib.compress(b'{"x": 1}')])
    con.close()


def test_version_0_file_is_migrated(tmp_path):
    path = tmp_path / "old.duckdb"
    make_v0(path)
    with pytest.raises(SchemaVersionError, match="without read_only"):
        ScoreStore(path, read_only=True)
    with pytest.warns(MigrationWarning, match="1 results"):  # the 'ghost' row
        store = ScoreStore(path)
    with store:
        meta = dict(store._db().execute("SELECT key, value FROM meta").fetchall())
        assert meta["schema_version"] == str(SCHEMA_VERSION) and "migrated_from_0" in meta
        runs = store.runs()
        assert runs["run_id"].tolist() == ["r_old", "r_new"]  # ordered by start
        assert runs["settings"][0] == {"api_key": "<redacted>", "iou": 0.5}
        assert runs[["n_scored", "n_failed"]].values.tolist() == [[2, 0], [1, 1]]
        ls = store.scores("viam", "v1", "scratch")
        # a: latest run r_new (max 0.7); b: only r_old; c failed only
        assert as_dict(ls) == {"a": (0.7, True), "b": (0.4, False)}
        assert ls.n_failed == 1
        assert store.labels("viam", "v1") == ["scratch"]
        assert store._db().execute(
            "SELECT labels FROM images WHERE image_id = 'a'").fetchall() == [(["scratch", "dent"],)]
        assert store._db().execute(
            "SELECT x_min, y_min, x_max, y_max FROM results WHERE x_min IS NOT NULL"
        ).fetchall() == [(1.0, 2.0, 30.0, 40.0)]
        assert store.raw_response("r_old", "a") == {"x": 1}
        assert store.failures()["kind"].tolist() == ["image"]
        assert store.done_image_ids("r_new") == {"a", "c"}
        # New rows get keys past the migrated ones.
        store.add_images("parts", [image("d")])
        run = begin(store)
        store.record(run, [("d", det(("scratch", 0.1)), 1)], [])
        assert len(store.scores("viam", "v1", "scratch")) == 3
    with ScoreStore(path, read_only=True) as again:  # migrated once, for good
        assert len(again.runs()) == 3


def test_newer_schema_is_refused(path):
    ScoreStore(path).close()
    con = duckdb.connect(str(path))
    con.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    con.close()
    for read_only in (False, True):
        with pytest.raises(SchemaVersionError) as info:
            ScoreStore(path, read_only=read_only)
        message = str(info.value)
        assert str(path) in message and "99" in message and f"version {SCHEMA_VERSION}" in message
        assert "Upgrade calibrate" in message
        assert (info.value.found, info.value.supported) == (99, SCHEMA_VERSION)
        assert isinstance(info.value, CalibrateError)


def test_damaged_meta_is_reported(path):
    ScoreStore(path).close()
    con = duckdb.connect(str(path))
    con.execute("DELETE FROM meta")
    con.close()
    with pytest.raises(StoreError, match="without a valid schema_version"):
        ScoreStore(path)


# ---------------------------------------------------------------------------------------
# secrets
# ---------------------------------------------------------------------------------------


def test_secrets_are_redacted_from_settings(parts, path):
    settings = {
        "region": "eu-central-1",
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI",
        "apiKey": "k-123",
        "auth": {"Password": "hunter2", "user": "qa", "tokens": ["t1", "t2"]},
        "endpoints": [{"session_token": "abc", "url": "http://x"}],
        "threshold": 0.3,
    }
    run = begin(parts, settings=settings)
    stored = parts.run_info(run).settings
    assert stored == {
        "region": "eu-central-1",
        "AWS_SECRET_ACCESS_KEY": "<redacted>",
        "apiKey": "<redacted>",
        "auth": {"Password": "<redacted>", "user": "qa", "tokens": "<redacted>"},
        "endpoints": [{"session_token": "<redacted>", "url": "http://x"}],
        "threshold": 0.3,
    }
    assert settings["apiKey"] == "k-123"  # the caller's dict is untouched
    text = parts._db().execute("SELECT settings FROM runs").fetchall()[0][0]
    for secret in ("wJalrXUtnFEMI", "k-123", "hunter2", "abc", "t1"):
        assert secret not in text
    assert redact_secrets([{"token": 1}, 2]) == [{"token": "<redacted>"}, 2]


def _unique_run_images(store) -> bool:
    n, n_distinct = store._db().execute(
        "SELECT count(*), count(DISTINCT (run_key, image_key)) FROM run_images").fetchall()[0]
    return n == n_distinct


def test_no_image_is_marked_twice_by_bulk_writes_and_records(parts):
    # run_images has no primary key since schema version 2: the writes keep it unique.
    run = begin(parts)
    frame = {"image_id": ["img000", "img000", "img001", "img002"],
             "label": ["scratch", "dent", "scratch", None],
             "score": [0.9, 0.2, 0.4, None]}
    parts.write_results_frame(run, frame)
    parts.write_results_frame(run, frame)  # a repeated import of the same frame
    parts.record(run, [("img001", det(("scratch", 0.1)), 1), ("img003", det(), 1)],
                 [("img004", "image", "bad", 1)])
    parts.write_results_frame(run, {"image_id": ["img003", "img005"],
                                    "label": ["scratch", "scratch"], "score": [0.5, 0.6]})
    assert count_rows(parts, "run_images") == 6
    assert _unique_run_images(parts)
    assert as_dict(parts.scores("viam", "v1", "scratch")) == {
        "img000": (0.9, False), "img001": (0.4, True), "img002": (float("-inf"), False),
        "img003": (float("-inf"), True), "img005": (0.6, True)}


def test_version_1_file_is_migrated_to_drop_the_run_images_key(tmp_path):
    path = tmp_path / "v1.duckdb"
    with ScoreStore(path) as store:
        store.add_images("parts", [LabeledImage(f"img{i}", f"/x/img{i}.png",
                                                frozenset({"scratch"} if i % 2 else ()))
                                   for i in range(4)])
        run = store.begin_run(detector="viam", model_version="v1", dataset="parts",
                              dataset_fingerprint="fp", settings={}, labels=["scratch"],
                              detection_floor=None)
        store.record(run, [(f"img{i}", det(("scratch", i / 10)), 1) for i in range(3)],
                     [("img3", "image", "bad", 1)])
        store.finish_run(run)
        before = as_dict(store.scores("viam", "v1", "scratch"))
    # Rebuild the file as version 1 wrote it: run_images with its primary key.
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE ri AS SELECT * FROM run_images")
    con.execute("DROP VIEW run_image_rows")
    con.execute("DROP TABLE run_images")
    con.execute("""CREATE TABLE run_images (run_key INTEGER NOT NULL, image_key BIGINT NOT NULL,
                   status VARCHAR NOT NULL, attempts INTEGER NOT NULL,
                   scored_at TIMESTAMP NOT NULL, PRIMARY KEY (run_key, image_key))""")
    con.execute("INSERT INTO run_images SELECT * FROM ri")
    con.execute("DROP TABLE ri")
    con.execute("""CREATE VIEW run_image_rows AS SELECT r.run_id, i.image_id, ri.status,
                   ri.attempts, ri.scored_at FROM run_images ri
                   JOIN runs r ON r.run_key = ri.run_key
                   JOIN images i ON i.image_key = ri.image_key""")
    con.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    con.close()
    with pytest.raises(SchemaVersionError, match="without read_only"):
        ScoreStore(path, read_only=True)
    with ScoreStore(path) as store:
        meta = dict(store._db().execute("SELECT key, value FROM meta").fetchall())
        assert meta["schema_version"] == str(SCHEMA_VERSION) == "5"
        assert "migrated_from_1" in meta
        constraints = store._db().execute(
            "SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'run_images' "
            "AND constraint_type = 'PRIMARY KEY'").fetchall()[0][0]
        assert constraints == 0
        assert as_dict(store.scores("viam", "v1", "scratch")) == before
        assert len(store._db().execute("SELECT * FROM run_image_rows").fetchall()) == 4
        assert store.runs()[["n_scored", "n_failed"]].values.tolist() == [[3, 1]]
