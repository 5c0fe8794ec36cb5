"""Benchmark: the PostgreSQL score store against the DuckDB store, in the same run.

1. **Count table.** The same ``--n`` results (one label, one result per image, scores
   with ``--decimals`` decimals as a detector reports them) are loaded into a DuckDB
   store file and a PostgreSQL store; :meth:`ScoreStore.count_table` is timed on both
   (best of ``--repeat``) and the tables are checked equal. DESIGN.md's target: the
   PostgreSQL store within 3x of the DuckDB store.
2. **Concurrent writes.** ``--writers`` processes each open the PostgreSQL store, begin a
   run of their own model version and record ``--write-n`` results through
   :meth:`ScoreStore.record` in batches of 128 images (what ``calibrate score`` does);
   the rows/s of all of them together are printed, and the same for bulk writes
   (:meth:`ScoreStore.write_results_frame` in chunks of 50,000 rows), beside one writer
   on a DuckDB file (which takes one writer at a time) in the same run.

The rows are loaded into the stores' tables with one SQL statement each (through the
store's own connection, so PostgreSQL's ``label_scores`` is kept by its trigger as in
any write): building 10^7 Python image objects would take longer than everything
measured here.

Usage::

    python benchmarks/bench_postgres_store.py [--n 10000000] [--url postgresql://...]

Without ``--url`` a throwaway PostgreSQL cluster is started (as the tests do, see
tests/pg_server.py) and removed at the end.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from calibrate.detectors.base import Detection, Result  # noqa: E402
from calibrate.manifest import LabeledImage  # noqa: E402
from calibrate.store import open_store  # noqa: E402

LABEL = "defect"


def make_rows(n: int, decimals: int, seed: int = 0) -> pa.Table:
    """image_key, image_id, positive, score for n images with one result each."""
    rng = np.random.default_rng(seed)
    truth = rng.random(n) < 0.1
    raw = rng.normal(np.where(truth, 1.0, -1.0), 1.0)
    score = np.round(1.0 / (1.0 + np.exp(-raw)), decimals)
    keys = np.arange(1, n + 1, dtype=np.int64)
    return pa.table({
        "image_key": keys,
        "image_id": pa.array(np.char.add("part-", keys.astype("U10")).astype(object)),
        "positive": truth,
        "score": score,
    })


def load(store, rows: pa.Table) -> float:
    """Register the images and one finished run with the rows' results; seconds taken."""
    t0 = time.perf_counter()
    con = store._db()
    con.register("bench_rows", rows)
    try:
        con.begin()
        con.execute(
            """INSERT INTO images (image_key, dataset, image_id, uri, labels, split)
               SELECT image_key, 'bench', image_id, '/data/' || image_id,
                      CASE WHEN positive THEN ['defect'] ELSE []::VARCHAR[] END, 'cal'
               FROM bench_rows""")
        con.execute("""INSERT INTO runs (run_id, run_key, detector, model_version, dataset,
                           dataset_fingerprint, settings, status, started_at, tool_version)
                       VALUES ('bench', 1, 'det', 'v1', 'bench', 'fp', '{}', 'finished',
                               now()::TIMESTAMP, 'bench')""")
        con.execute("""INSERT INTO run_images
                       SELECT 1, image_key, 'scored', 1, now()::TIMESTAMP FROM bench_rows""")
        con.execute("""INSERT INTO results (run_key, image_key, label, score)
                       SELECT 1, image_key, 'defect', score FROM bench_rows""")
        con.commit()
    finally:
        con.unregister("bench_rows")
    if hasattr(con, "run_native"):
        con.run_native("SELECT setval('image_keys', %s)", [rows.num_rows + 1])
        con.run_native("SELECT setval('run_keys', 2)")
        con.run_native("ANALYZE")
    else:
        con.execute("CHECKPOINT")
    return time.perf_counter() - t0


def time_count_table(store, repeat: int):
    best, table = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        table = store.count_table("det", "v1", LABEL)
        best = min(best, time.perf_counter() - t0)
    return best, table


def _writer(url: str, version: str, n: int, bulk: bool, start, out) -> None:
    images = [LabeledImage(image_id=f"w-{i:07d}", uri=f"/w/{i}", labels=frozenset())
              for i in range(n)]
    with open_store(url) as store:
        store.add_images("writes", images)
        run = store.begin_run(detector="writer", model_version=version, dataset="writes",
                              dataset_fingerprint=version, settings={}, labels=None,
                              detection_floor=None)
        rng = np.random.default_rng(hash(version) % 2**32)
        scores = np.round(rng.random(n), 3)
        start.wait()
        t0 = time.perf_counter()
        if bulk:
            for b in range(0, n, 50_000):
                ids = [img.image_id for img in images[b:b + 50_000]]
                store.write_results_frame(run, {"image_id": ids, "label": [LABEL] * len(ids),
                                                "score": scores[b:b + 50_000]})
        else:
            for b in range(0, n, 128):
                store.record(run, [(img.image_id, Detection([Result(LABEL, float(s))]), 1)
                                   for img, s in zip(images[b:b + 128], scores[b:b + 128])], [])
        out.put((t0, time.perf_counter()))


def concurrent_writes(url: str, writers: int, n: int, bulk: bool) -> float:
    """Rows per second of ``writers`` processes writing ``n`` results each at once."""
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Barrier(writers), ctx.Queue()
    tag = "bulk" if bulk else "record"
    procs = [ctx.Process(target=_writer, args=(url, f"{tag}{i}", n, bulk, start, out))
             for i in range(writers)]
    for p in procs:
        p.start()
    spans = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode:
            raise SystemExit(f"a writer failed (exit {p.exitcode})")
    wall = max(e for _, e in spans) - min(s for s, _ in spans)
    return writers * n / wall


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10_000_000, help="results (= images)")
    ap.add_argument("--decimals", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--writers", type=int, default=4)
    ap.add_argument("--write-n", type=int, default=50_000, help="results per writer")
    ap.add_argument("--url", help="an empty PostgreSQL database (default: a throwaway cluster)")
    args = ap.parse_args(argv)

    server = None
    url = args.url
    if url is None:
        from tests.pg_server import start_server

        server = start_server()
        url = server.url()
    try:
        return _run(args, url, server)
    finally:
        if server is not None:
            server.stop()


def _run(args, url: str, server) -> int:
    rows = make_rows(args.n, args.decimals)
    count_url = server.new_database() if server else url
    with tempfile.TemporaryDirectory() as tmp, \
            open_store(Path(tmp) / "bench.duckdb") as duck, open_store(count_url) as pg:
        t_duck_load, t_pg_load = load(duck, rows), load(pg, rows)
        print(f"loaded {args.n:,} results ({args.decimals}-decimal scores): DuckDB "
              f"{t_duck_load:.1f} s, PostgreSQL {t_pg_load:.1f} s (label_scores kept by trigger)")
        t_duck, a = time_count_table(duck, args.repeat)
        t_pg, b = time_count_table(pg, args.repeat)
    same = (np.array_equal(a.scores, b.scores) and np.array_equal(a.n_positive, b.n_positive)
            and np.array_equal(a.n_negative, b.n_negative))
    print(f"\ncount_table, {args.n:,} results, {len(a.scores):,} distinct scores, "
          f"best of {args.repeat}")
    print(f"  DuckDB store      {t_duck:8.3f} s")
    print(f"  PostgreSQL store  {t_pg:8.3f} s")
    print(f"  ratio             {t_pg / t_duck:8.2f}x   (target, DESIGN.md: <= 3x); "
          f"tables equal: {same}")
    for bulk in (False, True):
        write_url = server.new_database() if server else url
        with open_store(write_url):
            pass  # the schema, before the writers race to create it
        rate = concurrent_writes(write_url, args.writers, args.write_n, bulk)
        with tempfile.TemporaryDirectory() as tmp:
            # The baseline: a DuckDB file takes one writer at a time.
            alone = concurrent_writes(str(Path(tmp) / "w.duckdb"), 1, args.write_n, bulk)
        how = ("write_results_frame, 50,000-row chunks" if bulk
               else "record(), 128-image batches as calibrate score commits")
        print(f"\nwrites, {how}:")
        print(f"  PostgreSQL, {args.writers} writers x {args.write_n:,} results at once "
              f"{rate:>10,.0f} rows/s")
        print(f"  DuckDB file, 1 writer (a file's only mode)            {alone:>10,.0f} rows/s")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
