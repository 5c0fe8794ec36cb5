"""Whole-part search speed: one exact coordinate sweep vs evaluating every candidate
cutoff of that label one by one (the naive way), measured in the same run.

    .venv/bin/python benchmarks/bench_parts.py [n_parts]
"""

from __future__ import annotations

import sys
import time

import numpy as np

from calibrate.parts import PartPolicy, choose_joint, choose_review_band, evaluate_parts
from calibrate.parts import part_data, part_problem
from calibrate.parts.search import _Search


def main(n: int = 20_000, n_labels: int = 4) -> None:
    rng = np.random.default_rng(0)
    truth = rng.random((n, n_labels)) < 0.05
    scores = np.round(rng.normal(0.4, 0.15, (n, n_labels)) + truth * 0.25, 3)
    pol = PartPolicy(50, 1, max_false_reject_rate=0.2, review_cost=2, max_review_fraction=0.05)
    prob = part_problem(part_data(scores, truth, [f"l{j}" for j in range(n_labels)]), pol)
    s = _Search(prob)
    ks = [ax.m // 2 for ax in s.axes]
    t0 = time.perf_counter()
    s.sweep(0, ks)
    sweep = time.perf_counter() - t0
    ax = s.axes[0]
    sample = np.linspace(0, ax.m, 50).astype(int)  # time 50 candidates, scale to all
    t0 = time.perf_counter()
    for k in sample:
        cut = [a.thresholds[kk] for a, kk in zip(s.axes, ks)]
        cut[0] = ax.thresholds[k]
        evaluate_parts(prob, np.array(cut))
    naive = (time.perf_counter() - t0) / len(sample) * (ax.m + 1)
    t0 = time.perf_counter()
    joint = choose_joint(prob)
    t_joint = time.perf_counter() - t0
    t0 = time.perf_counter()
    choose_review_band(prob, start_cutoffs=joint.reject_cutoffs)
    t_band = time.perf_counter() - t0
    print(f"{n:,} parts, {n_labels} labels, {ax.m + 1:,} candidates for one label")
    print(f"one exact sweep {sweep * 1e3:.1f} ms; candidate by candidate {naive * 1e3:.0f} ms "
          f"(ratio {naive / sweep:.0f}x)")
    print(f"joint choice {t_joint:.2f} s ({joint.n_sweeps} sweeps); review band {t_band:.2f} s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000)
