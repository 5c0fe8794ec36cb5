"""Curves + threshold choice against same-run baselines.

Prints, for 10^7 continuous scores and for the same scores rounded to 3 decimals, the
time of ``choose_threshold`` (which builds the exact curve) under a false-accept limit,
as a ratio to ``np.sort`` of the same array and to ``sklearn.metrics.roc_curve``; and
the time of 1,000 bootstrap resamples of the choice on 10^6 scores.

Targets (DESIGN.md): continuous <= 3x np.sort and >= 6x faster than roc_curve;
3-decimal <= 2x np.sort; bootstrap <= 2 s.

Usage: python benchmarks/bench_curves.py [--n 10000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import roc_curve

from calibrate import Policy, choose_threshold, count_table
from calibrate.bootstrap import bootstrap_threshold


def best_of(repeat, fn):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000_000)
    ap.add_argument("--bootstrap-n", type=int, default=1_000_000)
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    y = rng.random(args.n) < 0.2
    s = rng.normal(size=args.n) + 1.5 * y
    policy = dict(cost_false_accept=20, cost_false_reject=1, prevalence=0.01,
                  max_false_accept_rate=0.05)

    print(f"n = {args.n:,} scores, 20% positive, best of {args.repeat}")
    for name, scores in (("continuous", s), ("3 decimals", np.round(s, 3))):
        t_sort = best_of(args.repeat, lambda x=scores: np.sort(x))
        t_ours = best_of(args.repeat, lambda x=scores: choose_threshold(x, y, **policy))
        t_roc = best_of(1, lambda x=scores: roc_curve(y, x))
        print(
            f"{name:>11}: choose_threshold {t_ours:.3f}s | np.sort {t_sort:.3f}s "
            f"| roc_curve {t_roc:.3f}s || ours/np.sort = {t_ours / t_sort:.2f}x, "
            f"roc_curve/ours = {t_roc / t_ours:.1f}x"
        )

    m = args.bootstrap_n
    y2 = y[:m]
    s2 = s[:m]
    p = Policy(**policy)
    for name, scores in (("continuous", s2), ("3 decimals", np.round(s2, 3))):
        table = count_table(scores, y2)
        t0 = time.perf_counter()
        res = bootstrap_threshold(table, p, args.resamples, seed=1)
        t_boot = time.perf_counter() - t0
        t_sort = best_of(args.repeat, lambda x=scores: np.sort(x))
        lo, hi = res.interval(0.9)
        print(
            f"bootstrap {args.resamples} resamples, {m:,} {name} scores "
            f"({len(table):,} distinct): {t_boot:.2f}s ({t_boot / t_sort:.0f}x np.sort); "
            f"90% interval of the threshold [{lo:.4f}, {hi:.4f}]"
        )


if __name__ == "__main__":
    main()
