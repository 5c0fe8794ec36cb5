"""Runner throughput against a fake detector with fixed latency, as a fraction of ideal.

The ideal throughput of a run is ``concurrency / latency`` images per second (16 calls
in flight at 20 ms each: 800 images/s). This script scores ``--n`` images with a
detector that only sleeps, through the real runner into a real store, with retries and
a rate limit switched on (10% of images fail once with a retryable error; the rate limit
sits above the ideal so that it is exercised but does not bind), and prints the measured
throughput as a fraction of the ideal. DESIGN.md's target: at least 90%.

Usage: python benchmarks/bench_runner.py [--n 4000] [--concurrency 16] [--latency 0.02]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import zlib
from pathlib import Path

from calibrate.detectors.base import Detection, Result, RetryableError
from calibrate.manifest import LabeledImage, LabeledSet
from calibrate.runner import RunOptions, score_dataset
from calibrate.store import ScoreStore


class Sleeper:
    """Answers after a fixed latency; 10% of images are throttled once."""

    name = "sleeper"
    model_version = "bench"
    labels = ("defect",)
    kind = "io"
    detection_floor = None

    def __init__(self, latency: float, throttle_share: float):
        self.latency = latency
        self.throttle_share = throttle_share
        self.seen: set[str] = set()
        self.lock = threading.Lock()
        self.first_start = None
        self.last_end = None

    def settings(self):
        return {"latency": self.latency}

    def detect(self, image):
        start = time.perf_counter()
        with self.lock:
            if self.first_start is None:
                self.first_start = start
        time.sleep(self.latency)
        with self.lock:
            self.last_end = time.perf_counter()
        h = zlib.crc32(image.image_id.encode()) % 1000
        with self.lock:
            first = image.image_id not in self.seen
            self.seen.add(image.image_id)
        if first and h < self.throttle_share * 1000:
            raise RetryableError("throttled")
        return Detection([Result("defect", h / 1000)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=4000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--latency", type=float, default=0.02)
    ap.add_argument("--throttle-share", type=float, default=0.10)
    args = ap.parse_args()

    images = [
        LabeledImage(f"img{i:06d}", f"s3://bench/img{i:06d}.png",
                     frozenset({"defect"}) if i % 5 == 0 else frozenset())
        for i in range(args.n)
    ]
    ds = LabeledSet(name="bench", source="memory", images=images, labels=("defect",))
    det = Sleeper(args.latency, args.throttle_share)
    ideal = args.concurrency / args.latency
    calls_expected = args.n * (1 + args.throttle_share)
    with tempfile.TemporaryDirectory() as tmp, ScoreStore(Path(tmp) / "bench.duckdb") as store:
        opts = RunOptions(
            concurrency=args.concurrency, rate_limit=ideal * 1.5, max_attempts=3,
            backoff=0.01, progress=False,
        )
        t0 = time.perf_counter()
        s = score_dataset(ds, det, store, opts)
        elapsed = time.perf_counter() - t0
        assert s.scored == args.n, s
    # Every call, retries included, occupies a slot for one latency.
    achieved = s.calls / elapsed
    calling = det.last_end - det.first_start
    print(
        f"{args.n:,} images, {s.calls:,} calls ({s.retries:,} retries), concurrency "
        f"{args.concurrency}, latency {args.latency * 1000:.0f} ms, rate limit "
        f"{ideal * 1.5:.0f}/s: {elapsed:.2f}s"
    )
    print(
        f"throughput {achieved:.0f} calls/s vs ideal {ideal:.0f} calls/s = "
        f"{achieved / ideal:.1%} of ideal (images/s: {s.scored / elapsed:.0f}; "
        f"expected calls ~{calls_expected:,.0f}), set-up and final commit included"
    )
    print(
        f"while calling (first call start to last call end, {calling:.2f}s): "
        f"{s.calls / calling:.0f} calls/s = {s.calls / calling / ideal:.1%} of ideal"
    )


if __name__ == "__main__":
    main()
