"""Count tables where the scores live: one label's table from a hive-partitioned Parquet
dataset of 10^8 flat score rows, through DuckDB and through Spark.

The dataset (generated once into /tmp, then reused): one detector, 2 model versions x 10
labels = 20 partitions (``detector=/model_version=/label=`` folders, one file each),
scores with 3 decimals, 10% "no result" (NULL), 5% positives. The script prints

* the time of ``ScoresDataset.count_table`` for one label (it reads 1 of the 20 files;
  target <= 1 s on this machine class), and as a ratio to it the baseline of moving
  the same rows to Python (pyarrow) and counting them there (``calibrate.count_table``);
* the time of ``count_table_from_spark`` on the same data (``local[2]``; the session's
  start-up is reported apart, not counted) as a ratio to DuckDB's, with the check that
  both tables are equal. ``--spark-n`` uses a smaller dataset for Spark if 10^8 is too
  slow there (the ratio is then on that size, and says so).

Usage: python benchmarks/bench_sources.py [--n 100000000] [--spark-n N] [--no-spark]
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import duckdb
import numpy as np

from calibrate.store.sources import ScoresDataset, count_table_from_spark

LABELS = [f"label{i:02d}" for i in range(10)]
VERSIONS = ["v1", "v2"]


def generate(root: Path, n: int) -> tuple[float, int]:
    """Write the dataset (n rows over 20 partitions); return (seconds, bytes)."""
    t0 = time.perf_counter()
    tmp = root.with_name(root.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    per = n // (len(VERSIONS) * len(LABELS))
    with duckdb.connect() as con:
        con.execute("SET preserve_insertion_order = false")
        for j, (ver, lab) in enumerate((v, lb) for v in VERSIONS for lb in LABELS):
            folder = tmp / "detector=bench" / f"model_version={ver}" / f"label={lab}"
            folder.mkdir(parents=True)
            # Deterministic pseudo-random columns from a hash of the row number: the
            # same bytes on every run, no seed state.
            con.execute(f"""
                COPY (
                  SELECT i AS image_id,
                         CASE WHEN h1 < 0.10 THEN NULL
                              ELSE round(least(1.0, greatest(0.0,
                                   0.35 + 0.3 * (h2 < 0.05)::INT + 0.15 * (h3 - 0.5) * 3)), 3)
                         END AS score,
                         h2 < 0.05 AS positive
                  FROM (SELECT i,
                               (hash(i * 3 + {j}) % 1000000) / 1e6 AS h1,
                               (hash(i * 5 + {j}) % 1000000) / 1e6 AS h2,
                               (hash(i * 7 + {j}) % 1000000) / 1e6 AS h3
                        FROM range({per}) t(i))
                ) TO '{folder}/part-0.parquet' (FORMAT parquet, ROW_GROUP_SIZE 1000000)""")
    tmp.rename(root)
    size = sum(f.stat().st_size for f in root.rglob("*.parquet"))
    return time.perf_counter() - t0, size


def dataset(n: int) -> Path:
    root = Path(f"/tmp/calibrate-bench-sources-{n}")
    if root.exists():
        size = sum(f.stat().st_size for f in root.rglob("*.parquet"))
        print(f"dataset {root}: {n:,} rows, {size / 1e6:,.0f} MB (generated before)")
    else:
        secs, size = generate(root, n)
        print(f"dataset {root}: {n:,} rows, {size / 1e6:,.0f} MB, generated in {secs:.1f} s")
    return root


def best_of(repeat: int, fn):
    times, out = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def rows_to_python(ds: ScoresDataset, label: str) -> None:
    """The baseline: move the label's rows to Python (pyarrow) and count them there."""
    import pyarrow.parquet as pq

    from calibrate import count_table

    t = pq.read_table(ds.files("bench", "v2", label), columns=["score", "positive"])
    scores = t.column("score").to_numpy(zero_copy_only=False)
    count_table(np.where(np.isnan(scores), -np.inf, scores),
                t.column("positive").to_numpy(zero_copy_only=False))


def spark_ratio(root: Path, label: str, duck_time: float, duck_table, repeat: int) -> None:
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    t0 = time.perf_counter()
    spark = (SparkSession.builder.master("local[2]").appName("bench-sources")
             .config("spark.ui.enabled", "false").config("spark.ui.showConsoleProgress", "false")
             .config("spark.sql.shuffle.partitions", "2")
             .config("spark.driver.memory", "4g")
             .config("spark.sql.sources.partitionColumnTypeInference.enabled", "false")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    print(f"spark session start: {time.perf_counter() - t0:.1f} s (not counted)")
    try:
        df = spark.read.parquet(str(root))
        count_table_from_spark(df, "bench", "v2", label)  # warm-up: JIT, file listing
        secs, table = best_of(repeat, lambda: count_table_from_spark(df, "bench", "v2", label))
    finally:
        spark.stop()
    same = (np.array_equal(table.scores, duck_table.scores)
            and np.array_equal(table.n_positive, duck_table.n_positive)
            and np.array_equal(table.n_negative, duck_table.n_negative))
    print(f"spark count_table (same SQL string): {secs:.3f} s = {secs / duck_time:.1f}x "
          f"DuckDB's {duck_time:.3f} s on the same data; tables equal: {same}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000_000)
    ap.add_argument("--spark-n", type=int, default=None,
                    help="rows of the dataset Spark reads (default: --n)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-spark", action="store_true")
    args = ap.parse_args()
    root = dataset(args.n)
    ds = ScoresDataset(root)
    label = "label07"
    secs, table = best_of(args.repeat, lambda: ds.count_table("bench", "v2", label))
    rows = table.total_positive + table.total_negative
    print(f"one label's table ({rows:,} rows, 1 of 20 files, {len(table):,} distinct scores): "
          f"{secs:.3f} s (target <= 1 s)")
    t3, t3_table = best_of(args.repeat, lambda: ds.count_table("bench", "v2", label,
                                                               round_to=2))
    print(f"  rounded to 2 decimals: {t3:.3f} s, {len(t3_table):,} distinct scores")
    moved, _ = best_of(args.repeat, lambda: rows_to_python(ds, label))
    print(f"baseline, the same {rows:,} rows moved to Python and counted there: {moved:.3f} s "
          f"= {moved / secs:.1f}x the table counted in DuckDB")
    if args.no_spark:
        return
    if args.spark_n and args.spark_n != args.n:
        small = dataset(args.spark_n)
        small_ds = ScoresDataset(small)
        dsecs, dtable = best_of(args.repeat, lambda: small_ds.count_table("bench", "v2", label))
        print(f"Spark compared on {args.spark_n:,} rows (not {args.n:,}): DuckDB {dsecs:.3f} s")
        spark_ratio(small, label, dsecs, dtable, args.repeat)
    else:
        spark_ratio(root, label, secs, table, args.repeat)


if __name__ == "__main__":
    main()
