"""Count tables where the scores live: a hive-partitioned Parquet dataset through DuckDB and
any DB-API engine (sqlite3, DuckDB) with the sqlglot-generated query. Spark is in
test_sources_spark.py. Every table is checked against the DuckDB store on the same scores
or against row-by-row counts (tests/reference.py)."""

from __future__ import annotations

import json
import math
import sqlite3
import tempfile
import warnings
from collections import Counter
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlglot
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from calibrate import choose_threshold, count_table
from calibrate.cli import app
from calibrate.errors import InputError, NoRankingInformationWarning
from calibrate.manifest import read_manifest
from calibrate.runner import RunOptions, score_dataset
from calibrate.store import ScoreStore
from calibrate.store.sources import (
    ScoresDataset,
    SourceCountTable,
    count_table_from_sql,
    count_table_query,
    count_table_sql,
    export_scores_dataset,
    round_scores,
)
from tests import fake_detectors as fd
from tests.parts_fixture import PARTS_POLICY
from tests.reference import brute_points
from tests.test_runner import QUIET, make_set

runner = CliRunner()


def _same(a, b) -> bool:
    return (np.array_equal(a.scores, b.scores) and np.array_equal(a.n_positive, b.n_positive)
            and np.array_equal(a.n_negative, b.n_negative))


@pytest.fixture(scope="module")
def parts_dataset(parts_store, tmp_path_factory):
    """The bundled parts store's scores exported to the flat layout: (store, folder)."""
    _, store_path = parts_store
    folder = tmp_path_factory.mktemp("sources") / "scores"
    with ScoreStore(store_path, read_only=True) as store:
        info = export_scores_dataset(store, folder)
    assert info["files"] == 8 and info["rows"] == 8 * 600
    return store_path, folder


def _flat_frame(folder: Path) -> pd.DataFrame:
    """The whole dataset as one flat table (partition columns as text)."""
    with duckdb.connect() as con:
        return con.execute(
            f"SELECT * FROM read_parquet('{folder}/**/*.parquet', hive_partitioning = true, "
            "hive_types = {'detector': VARCHAR, 'model_version': VARCHAR, 'label': VARCHAR})"
        ).df()


# ---------------------------------------------------------------------------------------
# The same scores: the store, the Parquet dataset, sqlite and DuckDB connections
# ---------------------------------------------------------------------------------------


def test_every_source_counts_what_the_store_counts(parts_dataset):
    store_path, folder = parts_dataset
    ds = ScoresDataset(folder)
    flat = _flat_frame(folder)
    lite = sqlite3.connect(":memory:")
    flat.assign(positive=flat["positive"].astype(int), failed=flat["failed"].astype(int)
                ).to_sql("calibrate_scores", lite, index=False)
    duck = duckdb.connect()
    duck.register("flat_view", flat)
    duck.execute("CREATE TABLE qc_scores AS SELECT * FROM flat_view")
    with ScoreStore(store_path, read_only=True) as store:
        for (det, ver), labels in ds.versions().items():
            assert labels == store.labels(det, ver)
            for label in labels:
                for split in (None, "calibration", "test"):
                    want = store.count_table(det, ver, label, split=split)
                    got = [ds.count_table(det, ver, label, split=split),
                           count_table_from_sql(lite, det, ver, label, split=split),
                           count_table_from_sql(duck, det, ver, label, split=split,
                                                table="qc_scores", dialect="duckdb")]
                    for t in got:
                        assert isinstance(t, SourceCountTable) and _same(t, want)
                        assert t.n_failed == store.n_failed(det, ver, split=split) == 0


def test_thresholds_from_the_dataset_equal_the_stores(parts_dataset):
    store_path, folder = parts_dataset
    common = ["--policy", str(PARTS_POLICY), "--split", "calibration", "--format", "json"]
    a = runner.invoke(app, ["thresholds", "--store", str(store_path), *common])
    b = runner.invoke(app, ["thresholds", "--scores-dataset", str(folder), *common])
    assert a.exit_code == 0 and b.exit_code == 0, (a.output, b.output)
    out_a, out_b = json.loads(a.stdout), json.loads(b.stdout)
    rows_a, rows_b = out_a["labels"], out_b["labels"]  # the parts policy has a [part] table
    assert len(rows_a) == 8 and rows_a == rows_b  # choices, held-out figures and flags
    # whole-part figures need per-part data: the store has it, a scores dataset does not,
    # and says so instead of leaving them out silently
    assert out_a["parts"] and out_a["parts_skipped"] is None
    assert out_b["parts"] == [] and "--store" in out_b["parts_skipped"]
    # the table for people too: only the source line differs
    a = runner.invoke(app, ["thresholds", "--store", str(store_path), "--policy",
                            str(PARTS_POLICY), "--model-version", "v2"])
    b = runner.invoke(app, ["thresholds", "--scores-dataset", str(folder), "--policy",
                            str(PARTS_POLICY), "--model-version", "v2"])
    assert a.exit_code == b.exit_code == 0
    lines_a, lines_b = a.stdout.splitlines(), b.stdout.splitlines()
    assert lines_a[0].replace(str(store_path), str(folder)) == lines_b[0]
    table_a = lines_a[1:lines_a.index(next(x for x in lines_a if x.startswith("Rule:")))]
    assert table_a == lines_b[1:len(table_a) + 1] and "crack v2" in "\n".join(table_a)


def test_thresholds_file_from_a_dataset_records_its_files(parts_dataset, tmp_path):
    _, folder = parts_dataset
    out = tmp_path / "t.json"
    r = runner.invoke(app, ["thresholds", "--scores-dataset", str(folder), "--policy",
                            str(PARTS_POLICY), "--detector", "surface-defect",
                            "--label", "dent", "-o", str(out)])
    assert r.exit_code == 0, r.output
    text = out.read_text()
    assert "files-sha256:" in text and "dent" in text and "crack" not in text


def test_only_the_labels_partition_is_read(parts_dataset, tmp_path):
    """Every other partition's file is replaced by garbage: the count still works, so
    those files are never opened. A garbage file in the label's own partition is named."""
    _, folder = parts_dataset
    copy = tmp_path / "scores"
    for f in folder.rglob("*.parquet"):
        target = copy / f.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        is_it = "model_version=v2" in str(f) and "label=dent" in str(f)
        target.write_bytes(f.read_bytes() if is_it else b"not parquet at all")
    ds = ScoresDataset(copy)
    assert [p.relative_to(copy).as_posix() for p in ds.files("surface-defect", "v2", "dent")] \
        == ["detector=surface-defect/model_version=v2/label=dent/part-0.parquet"]
    assert _same(ds.count_table("surface-defect", "v2", "dent"),
                 ScoresDataset(folder).count_table("surface-defect", "v2", "dent"))
    with pytest.raises(InputError, match=r"label=crack/part-0.parquet: not a readable Parquet"):
        ds.count_table("surface-defect", "v2", "crack")


def test_failed_calls_are_counted_not_scored(tmp_path):
    """A store with failed images (Picky fails ids ending in 3 and 7): the export marks
    them failed, every source leaves them out of the curve and counts them as the store."""
    ds = read_manifest(make_set(tmp_path, 40))
    with ScoreStore(tmp_path / "s.duckdb") as store:
        score_dataset(ds, fd.Picky(), store, RunOptions(**QUIET))
        export_scores_dataset(store, tmp_path / "flat")
        want, n_failed = store.count_table("picky", "h1", "defect"), store.n_failed("picky", "h1")
    assert n_failed == 8
    got = ScoresDataset(tmp_path / "flat").count_table("picky", "h1", "defect")
    assert _same(got, want) and got.n_failed == 8
    assert got.total_positive + got.total_negative == 32
    assert got.scores[0] == -math.inf  # Hash returns no result for low scores
    lite = sqlite3.connect(":memory:")
    flat = _flat_frame(tmp_path / "flat")
    flat.astype({"positive": int, "failed": int}).to_sql("calibrate_scores", lite, index=False)
    t = count_table_from_sql(lite, "picky", "h1", "defect")
    assert _same(t, want) and t.n_failed == 8
    r = runner.invoke(app, ["thresholds", "--scores-dataset", str(tmp_path / "flat"),
                            "--cost-false-accept", "5", "--cost-false-reject", "1"])
    assert r.exit_code == 0 and "8 failed detector call(s) excluded" in r.stdout


def test_rounding_merges_ties_and_stays_exact_for_the_rounded_scores(parts_dataset):
    store_path, folder = parts_dataset
    ds = ScoresDataset(folder)
    with ScoreStore(store_path, read_only=True) as store:
        raw = store.scores("surface-defect", "v1", "scratch")
    exact = ds.count_table("surface-defect", "v1", "scratch")
    sizes = {}
    for k in (4, 2, 1):
        t = ds.count_table("surface-defect", "v1", "scratch", round_to=k)
        assert t.round_to == k and f"* {10 ** k} + 0.5" in t.query
        assert _same(t, count_table(round_scores(raw.scores, k), raw.positive))
        assert t.total_positive == exact.total_positive
        sizes[k] = len(t)
    assert len(exact) > sizes[4] >= sizes[2] > sizes[1]
    # scores that already have k decimals are unchanged by rounding to k
    grid = np.array([float(f"{i / 10_000:.4f}") for i in range(-10_000, 10_001)])
    assert np.array_equal(round_scores(grid, 4), grid)
    assert np.array_equal(round_scores(np.array([-np.inf]), 2), [-np.inf])
    # a coarser grid: the choice is exact for rounded scores, and on raw scores it
    # differs only inside the half step below the threshold
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoRankingInformationWarning)
        c1 = choose_threshold(ds.count_table("surface-defect", "v1", "scratch", round_to=1),
                              cost_false_accept=20, cost_false_reject=1)
    s, y = raw.scores, raw.positive
    fires_rounded = round_scores(s, 1) >= c1.threshold
    assert c1.false_rejects + c1.false_accepts == int(np.sum(fires_rounded & ~y)) + int(
        np.sum(~fires_rounded & y))
    differ = fires_rounded != (s >= c1.threshold)
    assert np.all((s[differ] >= c1.threshold - 0.05) & (s[differ] < c1.threshold))
    with pytest.raises(InputError, match="round_to must be a whole number"):
        ds.count_table("surface-defect", "v1", "scratch", round_to=-1)


# ---------------------------------------------------------------------------------------
# One query: the canonical string and its dialects
# ---------------------------------------------------------------------------------------


def test_the_canonical_query_is_portable_sql():
    sql = count_table_sql(split=True, failed=True, round_to=3)
    assert sql.count("?") == 4 and "FILTER" not in sql and "SUM(CASE" in sql
    # sqlglot reads it as generic SQL and as DuckDB and Spark SQL, unchanged in meaning
    for dialect in ("duckdb", "spark"):
        assert sqlglot.transpile(sql, read=dialect, write=dialect)[0].count("?") == 4


@pytest.mark.parametrize("dialect", ["bigquery", "snowflake", "postgres", "trino", "tsql"])
def test_warehouse_dialects_inline_escaped_literals(dialect):
    """Not runnable offline: the generated text parses back in its dialect with the
    values (one with a quote) in the right places."""
    from sqlglot import exp

    sql = count_table_query(dialect, "surface-defect", "v'2", "crack", relation="qc.scores",
                            split="test", round_to=3)
    tree = sqlglot.parse_one(sql, read=dialect)
    eqs = {e.left.name: e.right.this for e in tree.find_all(exp.EQ)
           if isinstance(e.left, exp.Column) and isinstance(e.right, exp.Literal)
           and e.left.name != "positive"}  # T-SQL has no TRUE: positive = 1
    assert eqs == {"detector": "surface-defect", "model_version": "v'2", "label": "crack",
                   "split": "test"}
    assert "qc.scores" in sql


def test_generated_sqlite_query_escapes_quotes_and_runs(tmp_path):
    con = sqlite3.connect(":memory:")
    con.execute("CREATE TABLE calibrate_scores (detector TEXT, model_version TEXT, label TEXT,"
                " image_id TEXT, score REAL, positive BOOLEAN)")
    con.executemany("INSERT INTO calibrate_scores VALUES (?, ?, ?, ?, ?, ?)", [
        ("d", "v'1", "it's", "a", 0.9, True), ("d", "v'1", "it's", "b", None, False),
        ("d", "v'1", "it's", "c", 0.9, False), ("d", "v'1", "other", "a", 0.1, True)])
    t = count_table_from_sql(con, "d", "v'1", "it's")
    assert t.scores.tolist() == [-math.inf, 0.9]
    assert t.n_positive.tolist() == [0, 1] and t.n_negative.tolist() == [1, 1]
    assert "'v''1'" in t.query and "'it''s'" in t.query


# ---------------------------------------------------------------------------------------
# Random small data against row-by-row counts
# ---------------------------------------------------------------------------------------

_rows = st.lists(
    st.tuples(st.one_of(st.none(), st.sampled_from([0.1, 0.25, 0.5, 0.55, 0.9, 1.0, -0.35]),
                        st.floats(-2, 2, allow_nan=False, width=32)),
              st.booleans(), st.booleans(), st.sampled_from(["calibration", "test"])),
    min_size=1, max_size=30)


def _write_dataset(root: Path, rows, label: str) -> pd.DataFrame:
    df = pd.DataFrame({
        "image_id": [f"i{j}" for j in range(len(rows))],
        "score": pd.array([r[0] for r in rows], dtype="Float64"),
        "positive": [r[1] for r in rows],
        "failed": [r[2] for r in rows],
        "split": [r[3] for r in rows],
    })
    folder = root / "detector=det" / "model_version=v 1" / f"label={label}"
    folder.mkdir(parents=True)
    half = len(df) // 2  # two files in the partition
    pq.write_table(pa.Table.from_pandas(df.iloc[:half], preserve_index=False),
                   folder / "a.parquet")
    pq.write_table(pa.Table.from_pandas(df.iloc[half:], preserve_index=False),
                   folder / "b.parquet")
    return df


def _brute_counts(rows, round_to, split):
    """Per score, (positives, negatives) counted row by row; and the failed rows."""
    counts, failed = Counter(), 0
    for score, positive, is_failed, s in rows:
        if split is not None and s != split:
            continue
        if is_failed:
            failed += 1
            continue
        x = -math.inf if score is None else float(score)
        if round_to is not None and x != -math.inf:
            x = math.floor(x * 10 ** round_to + 0.5) / 10 ** round_to
        counts[(x, bool(positive))] += 1
    return counts, failed


@settings(max_examples=40, deadline=None)
@given(_rows, st.sampled_from([None, 0, 1, 2]), st.sampled_from([None, "test"]))
def test_sources_match_row_by_row_counts(rows, round_to, split):
    counts, n_failed = _brute_counts(rows, round_to, split)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "ds"
        df = _write_dataset(root, rows, "crack")
        lite = sqlite3.connect(":memory:")
        df.assign(detector="det", model_version="v 1", label="crack",
                  positive=df["positive"].astype(int), failed=df["failed"].astype(int),
                  score=df["score"].astype(float)).to_sql("calibrate_scores", lite,
                                                          index=False)
        duck = duckdb.connect()
        duck.execute("CREATE TABLE calibrate_scores AS SELECT *, 'det' AS detector, "
                     "'v 1' AS model_version, 'crack' AS label FROM df")
        tables = []
        for make in (lambda: ScoresDataset(root).count_table(
                         "det", "v 1", "crack", split=split, round_to=round_to),
                     lambda: count_table_from_sql(lite, "det", "v 1", "crack", split=split,
                                                  round_to=round_to),
                     lambda: count_table_from_sql(duck, "det", "v 1", "crack", split=split,
                                                  round_to=round_to, dialect="duckdb")):
            if not counts and not n_failed:
                with pytest.raises(InputError, match="no rows for det / v 1 / crack"):
                    make()
                continue
            tables.append(make())
    for t in tables:
        assert t.n_failed == n_failed
        got = Counter()
        for s, p, n in zip(t.scores, t.n_positive, t.n_negative):
            got[(float(s), True)] += int(p)
            got[(float(s), False)] += int(n)
        assert +got == counts
    if tables and counts and {p for _, p in counts} == {True, False}:
        s = np.array([x for (x, _), c in counts.items() for _ in range(c)])
        y = np.array([p for (_, p), c in counts.items() for _ in range(c)])
        policy = dict(action="reject", cost_false_accept=7.0, cost_false_reject=1.0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NoRankingInformationWarning)
            choices = [choose_threshold(t, **policy) for t in tables]
        best = min(brute_points(s, y, **policy), key=lambda r: r["cost"])
        for c in choices:
            assert c.threshold == choices[0].threshold
            assert math.isclose(c.expected_cost, best["cost"], rel_tol=1e-9, abs_tol=1e-15)


# ---------------------------------------------------------------------------------------
# Bad input: one line, naming the file or column, exit 2
# ---------------------------------------------------------------------------------------


def _one_file_dataset(root: Path, table: pa.Table, label: str = "crack") -> Path:
    folder = root / "detector=d" / "model_version=v1" / f"label={label}"
    folder.mkdir(parents=True)
    pq.write_table(table, folder / "part-0.parquet")
    return folder / "part-0.parquet"


def _cli_error(root: Path, *extra: str) -> str:
    r = runner.invoke(app, ["thresholds", "--scores-dataset", str(root),
                            "--cost-false-accept", "5", "--cost-false-reject", "1", *extra])
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    return " ".join(r.stderr.split())


GOOD = dict(image_id=pa.array(["a", "b"]), score=pa.array([0.5, None], pa.float64()),
            positive=pa.array([True, False]))


@pytest.mark.parametrize("change, message", [
    (dict(positive=None), r"part-0.parquet: missing column\(s\) positive"),
    (dict(score=pa.array(["0.5", "x"])), r"part-0.parquet: column 'score' is string, must be number"),
    (dict(positive=pa.array([1, 0])), r"part-0.parquet: column 'positive' is int64, must be boolean"),
    (dict(positive=pa.array([True, None])), r"label=crack: column 'positive' is neither true nor false on 1 row"),
    (dict(score=pa.array([0.5, float("nan")])), r"label=crack: column 'score' holds NaN"),
    (dict(score=pa.array([0.5, float("inf")])), r"label=crack: column 'score' holds \+inf"),
    (dict(split=pa.array([1, 2])), r"part-0.parquet: column 'split' is int64, must be text"),
])
def test_bad_files_are_named(tmp_path, change, message):
    cols = {**GOOD, **change}
    _one_file_dataset(tmp_path, pa.table({k: v for k, v in cols.items() if v is not None}))
    import re

    assert re.search(message, _cli_error(tmp_path)), _cli_error(tmp_path)


def test_optional_columns_missing_from_some_files_read_as_null(tmp_path):
    """One file of the partition has 'failed' and 'split', the other neither: its rows are
    not failed and in no split."""
    folder = _one_file_dataset(tmp_path, pa.table({
        **GOOD, "failed": pa.array([False, True]), "split": pa.array(["test", "test"])})).parent
    pq.write_table(pa.table({"image_id": ["c", "d"], "score": [0.7, 0.7],
                             "positive": [True, False]}), folder / "part-1.parquet")
    ds = ScoresDataset(tmp_path)
    t = ds.count_table("d", "v1", "crack")
    assert t.scores.tolist() == [0.5, 0.7] and t.n_failed == 1
    assert t.n_positive.tolist() == [1, 1] and t.n_negative.tolist() == [0, 1]
    t = ds.count_table("d", "v1", "crack", split="test")
    assert t.scores.tolist() == [0.5] and t.n_failed == 1


def test_unknown_partitions_and_folders_are_named(tmp_path):
    _one_file_dataset(tmp_path, pa.table(GOOD))
    assert "unknown detector 'x'" in _cli_error(tmp_path, "--detector", "x")
    assert "unknown label(s) 'dent'" in _cli_error(tmp_path, "--label", "dent")
    assert "unknown split 'test'" in _cli_error(tmp_path, "--split", "test")
    assert "no scores dataset at" in _cli_error(tmp_path / "missing")
    (tmp_path / "flat").mkdir()
    assert "has no detector=... folder" in _cli_error(tmp_path / "flat")
    assert "--round-to works with --scores-dataset" in " ".join(runner.invoke(app, [
        "thresholds", "--store", "x.duckdb", "--round-to", "2"]).stderr.split())
    ds = ScoresDataset(tmp_path)
    with pytest.raises(InputError, match=r"no partition label=dent \(unknown label 'dent'\); "
                                         r"there are 'crack'"):
        ds.count_table("d", "v1", "dent")


def test_bad_tables_in_sql_engines_are_named():
    con = sqlite3.connect(":memory:")
    con.execute("CREATE TABLE s (detector, model_version, label, image_id, score, truth)")
    with pytest.raises(InputError, match=r"table s: missing column\(s\) positive"):
        count_table_from_sql(con, "d", "v", "l", table="s")
    con.execute("CREATE TABLE t (detector, model_version, label, image_id, score, positive)")
    con.execute("INSERT INTO t VALUES ('d', 'v', 'l', 'a', 0.5, 'yes')")
    with pytest.raises(InputError, match=r"table t: column 'positive' is neither true nor false"):
        count_table_from_sql(con, "d", "v", "l", table="t")
    con.execute("INSERT INTO t VALUES ('d', 'v', 'm', 'a', 'high', 1)")
    with pytest.raises(InputError, match=r"table t: column 'score' holds 'high' \(str\), not a"):
        count_table_from_sql(con, "d", "v", "m", table="t")
    with pytest.raises(InputError, match=r"table t: no rows for d / v / zzz"):
        count_table_from_sql(con, "d", "v", "zzz", table="t")
    with pytest.raises(InputError, match=r"table nope: cannot read it"):
        count_table_from_sql(con, "d", "v", "l", table="nope")
    with pytest.raises(InputError, match=r"not a plain table name"):
        count_table_from_sql(con, "d", "v", "l", table="t; DROP TABLE t")
    with pytest.raises(InputError, match=r"unknown SQL dialect 'sqlitee'"):
        count_table_from_sql(con, "d", "v", "l", table="t", dialect="sqlitee")


def test_a_detection_unit_label_is_refused_from_a_scores_dataset(parts_dataset, tmp_path):
    # An image-level count table cannot answer a per-detection question: the label says why
    # instead of being chosen on the wrong unit.
    _, folder = parts_dataset
    policy = tmp_path / "p.toml"
    policy.write_text('[defaults]\ncost_false_accept = 10\ncost_false_reject = 1\n'
                      '[labels.dent]\nunit = "detection"\n')
    r = runner.invoke(app, ["thresholds", "--scores-dataset", str(folder), "--policy",
                            str(policy), "--split", "calibration", "--format", "json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)
    dent = [x for x in rows if x["label"] == "dent"]
    assert dent and all("unit = \"detection\"" in x["problem"] for x in dent)
    assert all("problem" not in x for x in rows if x["label"] != "dent")


def test_a_sqlalchemy_engine_or_connection_counts_what_the_store_counts(parts_dataset,
                                                                        tmp_path):
    """SQLAlchemy objects are taken as they are; the dialect comes from the engine."""
    sqlalchemy = pytest.importorskip("sqlalchemy")
    store_path, folder = parts_dataset
    flat = _flat_frame(folder)
    engine = sqlalchemy.create_engine(f"sqlite:///{tmp_path / 'scores.db'}")
    flat.assign(positive=flat["positive"].astype(int), failed=flat["failed"].astype(int)
                ).to_sql("qc_scores", engine, index=False)
    with ScoreStore(store_path, read_only=True) as store:
        want = store.count_table("surface-defect", "v2", "spot", split="calibration")
    by_engine = count_table_from_sql(engine, "surface-defect", "v2", "spot",
                                     table="qc_scores", split="calibration")
    with engine.connect() as con:
        by_connection = count_table_from_sql(con, "surface-defect", "v2", "spot",
                                             table="qc_scores", split="calibration")
    assert _same(by_engine, want) and _same(by_connection, want)
    assert engine.pool.checkedout() == 0  # the engine's connection went back to its pool
    with pytest.raises(InputError, match="pass dialect="):
        count_table_from_sql(type("E", (), {"dialect": type("D", (), {"name": "exotic"})(),
                                             "raw_connection": None})(),
                             "surface-defect", "v2", "spot")
