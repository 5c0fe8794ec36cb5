"""Images per second of ``--engine ray`` against ``--engine local`` on the same detector
and images, measured in the same run.

The script generates the parts set (``--n`` images of ``--size`` pixels) and scores it
with the ``surface-defect`` detector (v2) into a fresh DuckDB store three ways:

* **local**: :func:`calibrate.runner.score_dataset`, a process pool of ``--workers``
  processes (what ``calibrate score`` does by default);
* **ray, warm**: :func:`calibrate.ray_engine.score_dataset` with ``--workers`` actors on
  a local Ray instance that is already running (what a script calling the API several
  times, or a cluster, pays per run: the actors start and load the detector);
* **ray, cold**: the same plus starting the local Ray instance (what one
  ``calibrate score --engine ray`` on a laptop pays).

Each is the whole call: opening the run, scoring, committing, closing. It prints
images/s of each and the ratios to local (above 1: Ray is faster). Nothing is asserted:
the numbers depend on the machine. On one machine Ray cannot beat the process pool
(the same CPUs, plus actor start-up and Arrow hand-offs); the point of the engine is a
cluster, and the ratio shows the fixed cost to amortise.

Usage: python benchmarks/bench_ray_engine.py [--n 400] [--size 64] [--workers 2]
       [--batch-size 16]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def _score(engine: str, ds, folder: Path, workers: int, batch_size: int) -> float:
    """Seconds of one whole scoring call into a fresh store."""
    from calibrate import ray_engine
    from calibrate.detectors.surface import SurfaceDefectDetector
    from calibrate.runner import RunOptions, score_dataset
    from calibrate.store import ScoreStore

    opts = RunOptions(concurrency=workers, progress=False)
    with ScoreStore(folder / f"{engine}-{time.monotonic_ns()}.duckdb") as store:
        t0 = time.perf_counter()
        if engine == "local":
            summary = score_dataset(ds, SurfaceDefectDetector("v2"), store, opts)
        else:
            summary = ray_engine.score_dataset(
                ds, SurfaceDefectDetector("v2"), store, opts,
                ray_engine.RayOptions(batch_size=batch_size))
        took = time.perf_counter() - t0
    assert summary.scored == len(ds.images), summary
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    from calibrate.datasets import make_parts
    from calibrate.manifest import read_manifest
    from calibrate.ray_engine import RayOptions, connect

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        ds = read_manifest(make_parts(folder / "parts", n_parts=args.n, seed=1,
                                      image_size=args.size))
        n = len(ds.images)
        local = _score("local", ds, folder, args.workers, args.batch_size)
        cold = _score("ray", ds, folder, args.workers, args.batch_size)  # starts Ray itself
        t0 = time.perf_counter()
        with connect(RayOptions(), num_cpus=args.workers):
            start = time.perf_counter() - t0
            warm = _score("ray", ds, folder, args.workers, args.batch_size)
    print(f"{n} images of {args.size}x{args.size} px, surface-defect v2, {args.workers} "
          f"workers/actors, Ray batch size {args.batch_size}")
    print(f"  local (process pool): {n / local:8.1f} images/s  ({local:.2f} s)")
    print(f"  ray, warm instance:   {n / warm:8.1f} images/s  ({warm:.2f} s)  "
          f"ratio ray/local {local / warm:.2f}")
    print(f"  ray, cold (own start):{n / cold:8.1f} images/s  ({cold:.2f} s)  "
          f"ratio ray/local {local / cold:.2f}")
    print(f"  starting a local Ray instance: {start:.2f} s")


if __name__ == "__main__":
    main()
