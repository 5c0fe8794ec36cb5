"""The score store on PostgreSQL: the store's own tests, run again against a real server
the test session starts (tests/pg_server.py), plus what only a shared store has.

The DuckDB tests below are imported, not copied: collected here, they get this
module's ``store`` fixture, a :class:`PostgresScoreStore` on a fresh database, so the
same assertions hold for both backends.
"""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd

import pytest

from calibrate.errors import InputError
from calibrate.store import StoreError, open_store
from calibrate.store.location import redact_url
from calibrate.store.pg_sql import to_postgres
from calibrate.store.postgres import PostgresScoreStore
from tests import test_store as base
from tests import test_store_detections as dets
from tests.test_store import begin, det, image

pytestmark = [pytest.mark.filterwarnings("ignore::calibrate.store.IncompleteDataWarning"),
              # one throwaway PostgreSQL cluster per worker: keep these tests together
              pytest.mark.xdist_group("postgresql")]


@pytest.fixture
def store(pg_url):
    with open_store(pg_url) as s:
        yield s


# tests/test_store.py's ``parts`` (6 images of dataset 'parts'), on this module's store.
parts = base.parts


@pytest.fixture
def path(pg_url):
    return pg_url


@pytest.fixture(scope="module")
def shared_store(pg_server):
    with open_store(pg_server.new_database()) as s:
        yield s


@pytest.fixture
def scored(store):
    return dets.scored.__wrapped__(store)


# -- the DuckDB store's tests, on PostgreSQL ----------------------------------------------

test_add_images_upserts_and_changed_labels_reach_the_truth = (
    base.test_add_images_upserts_and_changed_labels_reach_the_truth)
test_same_image_id_in_two_datasets_is_two_images = base.test_same_image_id_in_two_datasets_is_two_images
test_add_images_rejects_bad_input = base.test_add_images_rejects_bad_input
test_begin_find_finish_run = base.test_begin_find_finish_run
test_record_writes_results_raw_and_done = base.test_record_writes_results_raw_and_done
test_rerecording_is_idempotent = base.test_rerecording_is_idempotent
test_failures_are_kept_apart_and_never_scores = base.test_failures_are_kept_apart_and_never_scores
test_failed_then_scored_by_a_later_run_counts_as_scored = (
    base.test_failed_then_scored_by_a_later_run_counts_as_scored)
test_no_result_scores_minus_inf = base.test_no_result_scores_minus_inf
test_latest_run_rule = base.test_latest_run_rule
test_dataset_and_split_filters = base.test_dataset_and_split_filters
test_unknown_version_lists_the_known_ones = base.test_unknown_version_lists_the_known_ones
test_record_rejects_bad_input_and_writes_nothing = base.test_record_rejects_bad_input_and_writes_nothing
test_record_into_unknown_run = base.test_record_into_unknown_run
test_labels_and_versions = base.test_labels_and_versions
test_write_results_frame = base.test_write_results_frame
test_write_results_frame_rejects_bad_frames = base.test_write_results_frame_rejects_bad_frames
test_count_table_equals_table_of_scores = base.test_count_table_equals_table_of_scores
test_secrets_are_redacted_from_settings = base.test_secrets_are_redacted_from_settings
test_no_image_is_marked_twice_by_bulk_writes_and_records = (
    base.test_no_image_is_marked_twice_by_bulk_writes_and_records)
test_boxes_are_written_replaced_and_kept_with_their_identity = (
    dets.test_boxes_are_written_replaced_and_kept_with_their_identity)
test_detection_rows_follow_the_count_table_selection = (
    dets.test_detection_rows_follow_the_count_table_selection)
test_detection_rows_refuse_what_cannot_be_matched = (
    dets.test_detection_rows_refuse_what_cannot_be_matched)


# -- what only the PostgreSQL store has -----------------------------------------------------


def test_open_store_picks_the_backend_by_location(pg_url, tmp_path):
    with open_store(pg_url) as pg, open_store(tmp_path / "s.duckdb") as duck:
        assert isinstance(pg, PostgresScoreStore)
        assert not isinstance(duck, PostgresScoreStore)
        assert pg._db().run_native(
            "SELECT value FROM meta WHERE key = 'schema_version'").fetchall() == [("5",)]
    with open_store(pg_url.replace("postgresql://", "postgres://"), read_only=True) as again:
        assert again.read_only


def test_passwords_are_never_shown():
    assert redact_url("postgresql://qa:s3cret@db:5432/calib") == "postgresql://qa:***@db:5432/calib"
    assert redact_url("postgres://db/calib?password=s3cret") == "postgres://db/calib?password=***"
    with pytest.raises(StoreError) as err:
        open_store("postgresql://qa:s3cret@127.0.0.1:1/calib")
    assert "s3cret" not in str(err.value) and "qa:***@" in str(err.value)


def test_a_newer_schema_and_a_foreign_database_are_refused(pg_url, pg_server):
    with open_store(pg_url) as s:
        s._db().run_native("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="newer calibrate"):
        open_store(pg_url)
    other = pg_server.new_database()
    import psycopg

    with psycopg.connect(other, autocommit=True) as con:
        con.execute("CREATE TABLE cars (id int)")
    with pytest.raises(StoreError, match="not a calibrate score store"):
        open_store(other)


def test_duckdb_sql_constructs_are_translated():
    (sql,) = to_postgres("SELECT d, arg_max(x, k) FROM t GROUP BY ALL ORDER BY ALL")
    assert "ARRAY_AGG(x ORDER BY k DESC)" in sql and "GROUP BY 1" in sql
    drop, create = to_postgres("CREATE OR REPLACE TEMP TABLE _t AS SELECT 1 AS a")
    assert drop == "DROP TABLE IF EXISTS _t" and create.startswith("CREATE TEMPORARY TABLE")
    (ins,) = to_postgres("INSERT OR REPLACE INTO meta VALUES (?, ?)")
    assert ins.endswith("ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value")


def test_claims_leave_images_to_a_live_owner_and_take_over_a_dead_ones(parts, pg_url):
    run = begin(parts)
    ids = [f"img{i:03d}" for i in range(6)]
    assert parts.claim_images(run, ids[:4]) == set(ids[:4])
    assert parts.claim_images(run, ids[:2]) == set(ids[:2])  # its own claims again
    with open_store(pg_url) as other:
        assert other.claim_images(run, ids) == set(ids[4:])  # 0-3 belong to a live owner
        parts.record(run, [("img000", det(("scratch", 0.5)), 1)], [])
    parts.close()  # the owner's connection ends: its claims are free
    with open_store(pg_url) as other:
        assert other.claim_images(run, ids) == set(ids[1:])  # img000 is done


def test_a_shared_run_is_finished_by_the_last_process(parts, pg_url):
    run = begin(parts)
    ids = [f"img{i:03d}" for i in range(6)]
    with open_store(pg_url) as other:
        assert other.claim_images(run, ids[3:]) == set(ids[3:])
        parts.claim_images(run, ids[:3])
        parts.record(run, [(i, det(("scratch", 0.5)), 1) for i in ids[:3]], [])
        parts.finish_run(run)
        assert parts.run_info(run).status == "running"  # the other still works
        other.record(run, [(i, det(("scratch", 0.2)), 1) for i in ids[3:]], [])
        other.finish_run(run)
    assert parts.run_info(run).status == "finished"


def test_a_run_whose_claimer_died_is_interrupted_not_finished(parts, pg_url):
    run = begin(parts)
    with open_store(pg_url) as other:
        other.claim_images(run, ["img004", "img005"])
    parts.record(run, [(f"img{i:03d}", det(), 1) for i in range(4)], [])
    parts.finish_run(run)
    assert parts.run_info(run).status == "interrupted"


def test_the_same_image_recorded_by_two_stores_is_stored_once(parts, pg_url):
    run = begin(parts)
    with open_store(pg_url) as other:
        other.record(run, [("img001", det(("scratch", 0.4)), 1)], [])
        parts.record(run, [("img001", det(("scratch", 0.9)), 1), ("img002", det(), 1)], [])
    assert base.count_rows(parts, "results") == 1
    assert base.count_rows(parts, "run_images") == 2
    assert parts.scores("viam", "v1", "scratch").scores.max() == pytest.approx(0.4)


def test_parquet_export_and_import_work_as_on_the_duckdb_store(
        parts, tmp_path):
    from calibrate.store import ScoreStore

    with ScoreStore(tmp_path / "twin.duckdb") as duck:
        duck.add_images("parts", [image(i, ["scratch"] if i % 2 else [],
                                        split="cal" if i < 4 else "test") for i in range(6)])
        for st in (duck, parts):
            run = begin(st, labels=["scratch"], detection_floor=0.1)
            st.record(run, [("img000", det(("scratch", 0.9, base.Box(1, 2, 3, 4))), 1),
                            ("img001", det(), 2)], [("img003", "image", "broken", 1)])
            st.finish_run(run)
            assert st.export_parquet(tmp_path / f"{type(st).__name__}.parquet") == 2
            assert st.export_parquet(tmp_path / "none.parquet", detector="nobody") == 0
    import pyarrow.parquet as pq

    a = pq.read_table(tmp_path / "ScoreStore.parquet").drop(["run_id", "run_started_at",
                                                              "run_finished_at"])
    b = pq.read_table(tmp_path / "PostgresScoreStore.parquet").drop(
        ["run_id", "run_started_at", "run_finished_at"])
    assert [(f.name, f.type) for f in a.schema] == [(f.name, f.type) for f in b.schema]
    assert a.to_pylist() == b.to_pylist()
    with ScoreStore(tmp_path / "copy.duckdb") as copy:  # a PostgreSQL export imports
        copy.import_parquet(tmp_path / "PostgresScoreStore.parquet", dataset="parts")
        assert base.table_equal(copy.count_table("viam", "v1", "scratch"),
                                parts.count_table("viam", "v1", "scratch"))
    # ... and the DuckDB export imports into PostgreSQL, as into a DuckDB file.
    new_run = parts.import_parquet(tmp_path / "ScoreStore.parquet", dataset="parts")
    assert parts.run_info(new_run).settings["imported_from"]["file"].endswith("ScoreStore.parquet")
    with ScoreStore(tmp_path / "copy2.duckdb") as copy:
        copy.import_parquet(tmp_path / "ScoreStore.parquet", dataset="parts")
        for label in ("scratch", "dent"):
            assert base.table_equal(copy.count_table("viam", "v1", label),
                                    parts.count_table("viam", "v1", label))
            assert base.as_dict(copy.scores("viam", "v1", label)) == base.as_dict(
                parts.scores("viam", "v1", label))
    with pytest.raises(InputError, match="no Parquet file"):
        parts.import_parquet(tmp_path / "missing.parquet", dataset="parts")


def test_a_failed_statement_rolls_back_and_the_store_goes_on(parts):
    with pytest.raises(StoreError):
        with parts._lock, parts._transaction("a broken write") as con:
            con.execute("INSERT INTO meta VALUES ('k', 'v')")
            con.execute("SELECT no_such_column FROM meta")
    assert parts._db().execute("SELECT count(*) FROM meta WHERE key = 'k'").fetchall() == [(0,)]
    assert uuid.UUID(begin(parts))


def _table_of_scores(store, label, split=None):
    from calibrate.curves import count_table

    s = store.scores("viam", "v1", label, split=split)
    return count_table(s.scores, s.positive)


def test_the_flat_count_table_follows_corrected_labels_splits_and_retired_images(parts):
    run = begin(parts)
    parts.record(run, [(f"img{i:03d}", det(("scratch", 0.1 * i), ("dent", 0.5)) if i % 3
                        else det(), 1) for i in range(6)], [])
    parts.finish_run(run)
    for split in (None, "cal", "test"):
        assert base.table_equal(parts.count_table("viam", "v1", "scratch", split=split),
                                _table_of_scores(parts, "scratch", split))
    # img001 loses its scratch, img002 moves to the test split, img005 leaves the set.
    parts.add_images("parts", [image(0), image(1), image(2, ["scratch"], split="test"),
                               image(3, ["scratch"], split="cal"), image(4, split="test")],
                     complete=True)
    for label in ("scratch", "dent"):
        for split in (None, "cal", "test"):
            got = parts.count_table("viam", "v1", label, split=split)
            assert base.table_equal(got, _table_of_scores(parts, label, split))
    assert parts.count_table("viam", "v1", "scratch").n_positive.sum() == 2


# -- the same operations on both backends give the same answers ---------------------------


def _same_frames(a, b):
    drop = [c for c in ("run_id", "started_at", "finished_at", "failed_at") if c in a.columns]
    pd.testing.assert_frame_equal(a.drop(columns=drop), b.drop(columns=drop), check_dtype=False)


def _drive(store):
    """Runs, reuse, failures, floors, a removed dataset and detections, by the API."""
    from tests.test_store_matches import _run, _scene

    images, results = _scene(7)
    store.add_images("parts", images, complete=True)
    ids = [im.image_id for im in images]
    _run(store, results, ids[:-2], failed=ids[-2:-1])
    _, again = _scene(8)
    _run(store, {**results, **{i: again[i] for i in ids[:10]}}, ids[:10])
    store.add_images("copy", images[:5])
    run = store.begin_run(detector="surface-defect", model_version="v1", dataset="copy",
                          dataset_fingerprint="c", settings={}, labels=None,
                          detection_floor=None)
    reused = store.reuse_results(run, ids[:5])
    store.set_detection_floor(run, 0.05)
    store.record(run, [], [(ids[0], "retryable", "timeout", 3)])
    store.remove_dataset("copy")
    return reused


def test_every_read_agrees_with_the_duckdb_store(store, tmp_path):
    from calibrate.store import ScoreStore

    with ScoreStore(tmp_path / "twin.duckdb") as duck:
        assert _drive(duck) == _drive(store)
        for name in ("versions", "failures", "runs"):
            a, b = getattr(duck, name)(), getattr(store, name)()
            _same_frames(a, b)
        key = ("surface-defect", "v1")
        assert duck.labels(*key) == store.labels(*key)
        assert duck.truth_labels(*key) == store.truth_labels(*key)
        assert duck.splits() == store.splits() and duck.n_failed(*key) == store.n_failed(*key)
        for label in duck.labels(*key):
            assert base.table_equal(duck.count_table(*key, label), store.count_table(*key, label))
            a = duck.detection_count_table(*key, label)
            b = store.detection_count_table(*key, label)
            assert base.table_equal(a.table, b.table) and a.n_images == b.n_images
            np.testing.assert_array_equal(a.detection_scores, b.detection_scores)
        a = duck.detection_rows(*key, allow_incomplete=True)
        b = store.detection_rows(*key, allow_incomplete=True)
        assert a.detections.equals(b.detections) and a.objects.equals(b.objects)
        # stored matches are reused on the second call, as in DuckDB
        n = store._db().execute("SELECT count(*) FROM matches").fetchall()[0][0]
        store.detection_count_table(*key, duck.labels(*key)[0])
        assert store._db().execute("SELECT count(*) FROM matches").fetchall()[0][0] == n


def test_a_flat_table_in_postgresql_counts_what_the_store_counts(pg_url, tmp_path):
    """Scores already in a PostgreSQL table (the flat layout), read through a SQLAlchemy
    engine: the count table equals the DuckDB store's on the same scores."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    from calibrate.store import ScoreStore
    from calibrate.store.sources import count_table_from_sql, export_scores_dataset
    from tests.parts_fixture import build_parts_store
    from tests.test_sources import _flat_frame

    _, store_path = build_parts_store(tmp_path / "parts", n_parts=120)
    with ScoreStore(store_path, read_only=True) as store:
        export_scores_dataset(store, tmp_path / "flat")
    engine = sqlalchemy.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"))
    _flat_frame(tmp_path / "flat").to_sql("qc_scores", engine, index=False)
    try:
        with ScoreStore(store_path, read_only=True) as store:
            for label in store.labels("surface-defect", "v2"):
                want = store.count_table("surface-defect", "v2", label, split="calibration")
                got = count_table_from_sql(engine, "surface-defect", "v2", label,
                                           table="qc_scores", split="calibration")
                assert np.array_equal(got.scores, want.scores)
                assert np.array_equal(got.n_positive, want.n_positive)
                assert np.array_equal(got.n_negative, want.n_negative)
    finally:
        engine.dispose()
