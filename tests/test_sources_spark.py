"""Count tables computed by Spark SQL (pyspark in ``local[2]``), with the very query string
DuckDB runs over the Parquet dataset, against the DuckDB store on the same scores.

One Spark session for the whole module (starting one takes 8-20 s). Without Java or
pyspark these tests skip on a developer machine but fail under CI (``CI=true``), which
installs both (``.ci/run``). Select them with ``-m spark``; leave them out with
``-m "not spark"``.
"""

from __future__ import annotations

import math
import os
import shutil
import sqlite3
import subprocess

import numpy as np
import pandas as pd
import pytest

from calibrate.errors import InputError
from calibrate.policy import load_policy_file
from calibrate.store import ScoreStore
from calibrate.store.sources import (
    ScoresDataset,
    count_table_from_spark,
    count_table_from_sql,
    count_table_sql,
    export_scores_dataset,
)
from calibrate.thresholds import choose_label_threshold
from tests.parts_fixture import PARTS_POLICY

pytestmark = [pytest.mark.spark,
              # one Spark session per worker is enough: keep these tests together
              pytest.mark.xdist_group("spark"),
              # pyspark 4.3 says it does not yet fully support pandas 3; only
              # createDataFrame uses pandas here, on plain columns
              pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas")]


def _missing_spark() -> str | None:
    try:
        import pyspark  # noqa: F401
    except ImportError:
        return "pyspark is not installed (pip install -e '.[test]' or '.[spark]')"
    java = shutil.which("java") or (os.environ.get("JAVA_HOME") and
                                    os.path.join(os.environ["JAVA_HOME"], "bin", "java"))
    if not java or not os.path.exists(java):
        return "no Java runtime for Spark (apt-get install -y openjdk-17-jre-headless)"
    probe = subprocess.run([java, "-version"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"{java} -version failed: {probe.stderr.strip()[:200]}"
    return None


def _require_spark() -> None:
    """Skip without Java or pyspark, but fail under CI, which must have them."""
    why = _missing_spark()
    if why:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"CI must run the Spark count-table tests: {why}")
        pytest.skip(why)


def test_no_java_skips_on_a_developer_machine_but_fails_under_ci(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="no Java runtime"):
        _require_spark()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run the Spark"):
        _require_spark()


@pytest.fixture(scope="module")
def spark():
    _require_spark()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[2]").appName("calibrate-tests")
               .config("spark.ui.enabled", "false")
               .config("spark.ui.showConsoleProgress", "false")
               .config("spark.sql.shuffle.partitions", "2")
               .config("spark.driver.bindAddress", "127.0.0.1")
               # partition values stay text: model_version=2 is a version name, not 2
               .config("spark.sql.sources.partitionColumnTypeInference.enabled", "false")
               .getOrCreate())
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        session.stop()


@pytest.fixture(scope="module")
def parts_dataset(parts_store, tmp_path_factory):
    _, store_path = parts_store
    folder = tmp_path_factory.mktemp("spark-sources") / "scores"
    with ScoreStore(store_path, read_only=True) as store:
        export_scores_dataset(store, folder)
    return store_path, folder


def _same(a, b) -> bool:
    return (np.array_equal(a.scores, b.scores) and np.array_equal(a.n_positive, b.n_positive)
            and np.array_equal(a.n_negative, b.n_negative))


def test_spark_counts_and_chooses_what_the_store_does(spark, parts_dataset):
    store_path, folder = parts_dataset
    df = spark.read.parquet(str(folder)).cache()  # hive partitions become columns
    ds = ScoresDataset(folder)
    policies = load_policy_file(PARTS_POLICY)
    with ScoreStore(store_path, read_only=True) as store:
        for (det, ver), labels in ds.versions().items():
            # every label of v2 and one of v1 (a Spark query costs 1-3 s here); the split
            # the thresholds are chosen on (no split: the next test)
            for label in labels if ver == "v2" else labels[:1]:
                for split in ("calibration",):
                    want = store.count_table(det, ver, label, split=split)
                    got = count_table_from_spark(df, det, ver, label, split=split)
                    parquet = ds.count_table(det, ver, label, split=split)
                    assert _same(got, want) and got.n_failed == 0
                    # one SQL string, run unchanged by Spark and by DuckDB
                    assert got.query == parquet.query == count_table_sql(
                        split=split is not None, failed=True)
                    a = choose_label_threshold((det, ver, label), lambda t=want: t, policies)
                    b = choose_label_threshold((det, ver, label), lambda t=got: t, policies)
                    assert a.choice.to_dict() == b.choice.to_dict()
    # rounding is the same arithmetic in Spark as in DuckDB
    for k in (2,):
        assert _same(count_table_from_spark(df, "surface-defect", "v2", "spot", round_to=k),
                     ds.count_table("surface-defect", "v2", "spot", round_to=k))


def test_a_spark_table_by_name_with_ties_no_results_and_failures(spark, tmp_path):
    """Seeded random data with heavy ties, no-result and failed rows, read by name, equal
    to sqlite's count of the same rows (and to a count by hand); written by Spark as a
    hive-partitioned dataset (its own escaping of '/' and ':'), read back by DuckDB."""
    rng = np.random.default_rng(11)
    n = 400
    score = rng.choice([0.1, 0.2, 0.2, 0.35, 0.5, 0.9, np.nan], size=n)
    frame = pd.DataFrame({
        "detector": "d", "model_version": "2", "label": rng.choice(["crack", "deep/dent: 2"], size=n),
        "image_id": [f"i{j}" for j in range(n)],
        "score": pd.array(np.where(np.isnan(score), None, score), dtype="Float64"),
        "positive": rng.random(n) < 0.3, "failed": rng.random(n) < 0.05,
        "split": rng.choice(["calibration", "test"], size=n),
    })
    spark.createDataFrame(frame.astype({"score": object}).where(frame.notna(), None)
                          ).createOrReplaceTempView("qc_scores")
    lite = sqlite3.connect(":memory:")
    frame.astype({"positive": int, "failed": int, "score": float}).to_sql(
        "qc_scores", lite, index=False)
    spark.table("qc_scores").write.partitionBy("detector", "model_version", "label").parquet(
        str(tmp_path / "written"))
    written = ScoresDataset(tmp_path / "written")
    assert written.versions() == {("d", "2"): ["crack", "deep/dent: 2"]}
    for label in ("crack", "deep/dent: 2"):
        for split in (None, "test"):
            got = count_table_from_spark(spark, "d", "2", label, table="qc_scores", split=split)
            want = count_table_from_sql(lite, "d", "2", label, table="qc_scores", split=split)
            assert _same(got, want) and got.n_failed == want.n_failed > 0
            back = written.count_table("d", "2", label, split=split)
            assert _same(back, want) and back.n_failed == want.n_failed
            rows = frame[(frame["label"] == label) & ~frame["failed"]
                         & ((frame["split"] == split) if split else True)]
            assert got.total_positive == int(rows["positive"].sum())
            assert got.scores[0] == -math.inf
            assert got.n_negative[0] + got.n_positive[0] == int(rows["score"].isna().sum())


def test_bad_spark_input_is_named(spark):
    base = {"detector": ["d"], "model_version": ["v"], "label": ["l"], "image_id": ["a"],
            "score": [0.5], "positive": [True]}
    df = spark.createDataFrame(pd.DataFrame({k: v for k, v in base.items() if k != "positive"}))
    with pytest.raises(InputError, match=r"the Spark DataFrame: missing column\(s\) positive"):
        count_table_from_spark(df, "d", "v", "l")
    df = spark.createDataFrame(pd.DataFrame({**base, "positive": [1]}))
    with pytest.raises(InputError, match=r"column 'positive' is long, must be boolean"):
        count_table_from_spark(df, "d", "v", "l")
    df = spark.createDataFrame(pd.DataFrame({**base, "score": ["high"]}))
    with pytest.raises(InputError, match=r"column 'score' is string, must be number"):
        count_table_from_spark(df, "d", "v", "l")
    df = spark.createDataFrame(pd.DataFrame(base))
    with pytest.raises(InputError, match=r"the Spark DataFrame: no rows for d / v / other"):
        count_table_from_spark(df, "d", "v", "other")
    with pytest.raises(InputError, match=r"Spark table no_such_table: "):
        count_table_from_spark(spark, "d", "v", "l", table="no_such_table")
    with pytest.raises(InputError, match=r"name the scores table"):
        count_table_from_spark(spark, "d", "v", "l")
