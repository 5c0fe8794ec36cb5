"""Benchmark: the score store against plain Parquet files, measured in the same run.

Writes ``--n`` results through :meth:`ScoreStore.write_results_frame` and reads them back
with :meth:`ScoreStore.scores` and :meth:`ScoreStore.count_table`, then writes and reads
the same columns (image_id, label, score, positive) as a Parquet file with pyarrow and
turns them into the same numpy arrays / count tables. DESIGN.md's target: the store
within 3x of Parquet.

Usage::

    python benchmarks/bench_store.py [--n 1000000] [--labels 1] [--repeat 3]

``--labels k`` spreads the n results over n/k images with k labels each (a multi-label
detector); the default, one label per image, is the hardest case for the store, since
every result is also an image the run must mark as scored.

Each timing is the best of ``--repeat`` runs, so that noise from other processes on the
machine does not decide the ratio.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibrate.curves import count_table  # noqa: E402
from calibrate.manifest import LabeledImage  # noqa: E402
from calibrate.store import ScoreStore  # noqa: E402


def make_data(n: int, n_labels: int, seed: int = 0):
    """Results frame, LabeledImages and the truth column for n results."""
    rng = np.random.default_rng(seed)
    n_images = n // n_labels
    labels = [f"defect_{k}" for k in range(n_labels)]
    image_ids = np.array([f"part-{i:08d}.png" for i in range(n_images)], dtype=object)
    truth = rng.random((n_images, n_labels)) < 0.1
    # Detector-like scores: positives higher on average, overlapping, float32 precision.
    raw = rng.normal(np.where(truth, 1.0, -1.0), 1.0)
    score = (1.0 / (1.0 + np.exp(-raw))).astype(np.float32).astype(np.float64)
    gc.disable()  # a million small objects: collections would dominate the setup time
    images = [
        LabeledImage(
            image_id=image_ids[i],
            uri=f"/data/parts/{image_ids[i]}",
            labels=frozenset(labels[k] for k in np.flatnonzero(truth[i])),
        )
        for i in range(n_images)
    ]
    gc.enable()
    frame = pa.table(
        {
            "image_id": pa.array(np.repeat(image_ids, n_labels), pa.string()),
            "label": pa.array(np.tile(np.array(labels, dtype=object), n_images), pa.string()),
            "score": pa.array(score.reshape(-1)),
        }
    )
    positive = pa.array(truth.reshape(-1))
    return labels, images, frame, positive


def best(times: list[float]) -> float:
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="number of results")
    parser.add_argument("--labels", type=int, default=1, help="labels per image")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    args = parser.parse_args(argv)
    n, k = args.n, args.labels
    if n < k or n % k:
        parser.error("--n must be a positive multiple of --labels")

    t = time.perf_counter()
    labels, images, frame, positive = make_data(n, k)
    print(f"generated {n:,} results ({n // k:,} images x {k} label(s)) "
          f"in {time.perf_counter() - t:.1f} s")

    workdir = Path(tempfile.mkdtemp(prefix="bench_store_"))
    try:
        template = workdir / "template.duckdb"
        t = time.perf_counter()
        with ScoreStore(template) as store:
            store.add_images("parts", images)
        t_add_images = time.perf_counter() - t

        write_s, scores_s, table_s = [], [], []
        pq_write, pq_scores, pq_table = [], [], []
        parquet_table = frame.append_column("positive", positive)
        for rep in range(args.repeat):
            path = workdir / f"store{rep}.duckdb"
            shutil.copyfile(template, path)
            with ScoreStore(path) as store:
                run = store.begin_run(
                    detector="bench", model_version="v1", dataset="parts",
                    dataset_fingerprint="fp", settings={}, labels=labels,
                    detection_floor=None,
                )
                t = time.perf_counter()
                store.write_results_frame(run, frame)
                write_s.append(time.perf_counter() - t)
                store.finish_run(run)

                t = time.perf_counter()
                got = [store.scores("bench", "v1", lab) for lab in labels]
                scores_s.append(time.perf_counter() - t)
                t = time.perf_counter()
                tables = [store.count_table("bench", "v1", lab) for lab in labels]
                table_s.append(time.perf_counter() - t)
            assert sum(len(g) for g in got) == n
            assert sum(tb.total_positive + tb.total_negative for tb in tables) == n

            # Baseline: the same columns through a Parquet file.
            ppath = workdir / f"results{rep}.parquet"
            t = time.perf_counter()
            pq.write_table(parquet_table, ppath)
            pq_write.append(time.perf_counter() - t)

            t = time.perf_counter()
            tbl = pq.read_table(ppath)
            lab = tbl["label"].to_numpy()
            ids = tbl["image_id"].to_numpy()
            sc = tbl["score"].to_numpy()
            pos = tbl["positive"].to_numpy()
            base = [(ids[m], sc[m], pos[m]) for m in (lab == x for x in labels)]
            pq_scores.append(time.perf_counter() - t)
            assert sum(len(b[1]) for b in base) == n

            t = time.perf_counter()
            tbl = pq.read_table(ppath, columns=["label", "score", "positive"])
            lab = tbl["label"].to_numpy()
            sc = tbl["score"].to_numpy()
            pos = tbl["positive"].to_numpy()
            base_tables = [count_table(sc[m], pos[m]) for m in (lab == x for x in labels)]
            pq_table.append(time.perf_counter() - t)
            for a, b in zip(tables, base_tables):
                assert np.array_equal(a.scores, b.scores)
                assert np.array_equal(a.n_positive, b.n_positive)
                assert np.array_equal(a.n_negative, b.n_negative)

        # Not part of the ratio: the latest-run rule when a version has two runs.
        with ScoreStore(workdir / "store0.duckdb") as store:
            run = store.begin_run(
                detector="bench", model_version="v1", dataset="parts",
                dataset_fingerprint="fp2", settings={}, labels=labels, detection_floor=None,
            )
            store.write_results_frame(run, frame)
            t = time.perf_counter()
            for lab in labels:
                store.scores("bench", "v1", lab)
            t_two_runs = time.perf_counter() - t
        size_mb = (workdir / "store0.duckdb").stat().st_size / 1e6
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    rows = [
        ("write", best(write_s), best(pq_write)),
        ("read: scores()", best(scores_s), best(pq_scores)),
        ("read: count_table()", best(table_s), best(pq_table)),
        ("write + read scores()", best(write_s) + best(scores_s),
         best(pq_write) + best(pq_scores)),
    ]
    print(f"\nscore store vs Parquet, {n:,} results, best of {args.repeat}")
    print(f"{'':24}{'store':>10}{'parquet':>10}{'ratio':>9}")
    for name, s, p in rows:
        print(f"{name:24}{s:>9.3f}s{p:>9.3f}s{s / p:>8.1f}x")
    print("target (DESIGN.md): ratio <= 3x")
    print(f"\nnot in the ratio: add_images of {n // k:,} images {t_add_images:.2f} s; "
          f"scores() over 2 runs of the version (latest-run rule) {t_two_runs:.3f} s; "
          f"store file with 2 runs {size_mb:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
