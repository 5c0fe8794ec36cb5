"""A tie-exact bootstrap of the threshold choice, on the count table.

How stable is a chosen threshold? :func:`bootstrap_threshold` repeats the choice of
:func:`calibrate.thresholds.choose_threshold` on stratified resamples of the calibration
data. Resampling rows with replacement is the same as a multinomial draw over the count
table's cells, so ties stay exact and no row is touched; each resample applies the very
tie rule of the choice (:func:`calibrate.thresholds.tie_break`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from calibrate.checks import check_confidence
from calibrate.curves import CountTable, ErrorCurve, require_both_classes
from calibrate.errors import InputError
from calibrate.policy import Policy, by_action
from calibrate.thresholds import tie_bound, tie_break

__all__ = ["BootstrapResult", "bootstrap_threshold"]


@dataclass(frozen=True, eq=False)
class BootstrapResult:
    """Thresholds chosen on stratified bootstrap resamples of the calibration data.

    Attributes
    ----------
    thresholds : ndarray of float64, shape (n_resamples,)
        Threshold chosen in each resample; NaN where no threshold met the limits.
    false_accept_rates, false_reject_rates, expected_costs : ndarray
        The chosen threshold's rates and cost in its own resample (NaN if none).
    seed : int or None
        The seed that reproduces these resamples.
    """

    thresholds: np.ndarray
    false_accept_rates: np.ndarray
    false_reject_rates: np.ndarray
    expected_costs: np.ndarray
    seed: int | None

    @property
    def n_resamples(self) -> int:
        return int(self.thresholds.size)

    @property
    def feasible_fraction(self) -> float:
        """Share of resamples in which some threshold met every limit."""
        return float(np.mean(~np.isnan(self.thresholds)))

    def interval(self, level: float = 0.90) -> tuple[float, float]:
        """Percentile interval of the chosen threshold over feasible resamples."""
        c = check_confidence(level)
        t = self.thresholds[~np.isnan(self.thresholds)]
        if t.size == 0:
            return float("nan"), float("nan")
        a = (1 - c) / 2
        lo, hi = np.quantile(t, [a, 1 - a], method="inverted_cdf")
        return float(lo), float(hi)


def _multinomial_rows(rng: np.random.Generator, n: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """One multinomial draw per entry of ``n`` over categories weighted by ``counts``."""
    total = counts.sum()
    if total == 0:
        return np.zeros((n.size, counts.size), dtype=np.int64)
    return rng.multinomial(n, counts / total)


class _Best:
    """:func:`calibrate.thresholds.tie_break`, fed candidates piece by piece.

    Candidates are kept while they tie with the running minimum, so the final choice
    equals the one over all candidates at once, whatever order the pieces come in.
    """

    def __init__(self, policy: Policy, n_positive: int, n_negative: int):
        self.policy, self.n_positive, self.n_negative = policy, n_positive, n_negative
        self.w = policy.cost_weights(n_positive, n_negative)
        self.allow_fn, self.allow_fp = policy.error_allowances(n_positive, n_negative)
        self.min = np.inf
        self.kept: list[tuple[np.ndarray, ...]] = []

    def bound(self) -> float:
        """No candidate costing more than this can still win or tie."""
        return tie_bound(self.min)

    def add(self, fn, fp, idx) -> None:
        ok = (fn <= self.allow_fn) & (fp <= self.allow_fp)
        if not ok.any():
            return
        fn, fp, idx = fn[ok], fp[ok], idx[ok]
        cost = self.w.miss * fn + self.w.false_alarm * fp
        self.min = min(self.min, float(cost.min()))
        near = cost <= self.bound()
        self.kept.append((cost[near], fn[near], fp[near], idx[near]))

    def result(self):
        """(cost, cell index, fn, fp) of the winner, or None when nothing was feasible."""
        if not self.kept:
            return None
        cost, fn, fp, idx = (np.concatenate(parts) for parts in zip(*self.kept))
        fa = self.policy.errors(fn, fp, self.n_positive, self.n_negative).false_accepts
        j = tie_break(cost, fa, idx)
        return float(cost[j]), int(idx[j]), int(fn[j]), int(fp[j])


def bootstrap_threshold(
    table,
    policy,
    n_resamples: int = 1000,
    *,
    seed: int | None = None,
    block_size: int | None = None,
    _exhaustive: bool = False,
) -> BootstrapResult:
    """Bootstrap the threshold choice by resampling the count table, exactly and fast.

    Each resample draws ``n_positive`` positives and ``n_negative`` negatives with
    replacement (stratified, so both classes keep their sizes and the limits' error
    allowances stay fixed). Drawing rows with replacement is the same as drawing a
    multinomial over the table's cells, so ties are handled exactly and no row is ever
    touched. Cells are grouped in blocks: block totals are drawn first (one multinomial
    over blocks), which gives the exact counts at every block boundary; a block is then
    expanded (a multinomial over its cells, given its total) only if the cost inside it
    could beat the best boundary. The result has the distribution of a full resample,
    but a resample costs about ``sqrt(k)`` work instead of ``k``.

    Parameters
    ----------
    table : CountTable or ErrorCurve
        The calibration data of one label.
    policy : Policy
        Action, costs, prevalence and limits, as for :func:`calibrate.choose_threshold`.
        The prevalence is held at the policy's value (or the sample's).
    n_resamples : int, default 1000
    seed : int, optional
        Seed for :func:`numpy.random.default_rng`; the same seed gives the same result.
    block_size : int, optional
        Cells per block; default ``ceil(sqrt(k))``.

    Returns
    -------
    BootstrapResult
    """
    if getattr(policy, "detection_unit", False):
        # Resampling rows of the table treats objects and false detections as
        # independent items; at the detection unit they cluster by image, so the
        # spread would be understated. Refuse rather than mislead.
        raise InputError("bootstrap_threshold resamples independent items and is not "
                         "available at unit = \"detection\" (detections cluster by image).")
    if isinstance(table, ErrorCurve):
        curve = table
        n_pos_cells = -np.diff(np.concatenate([[curve.n_positive], curve.false_negatives]))
        n_neg_cells = np.diff(np.concatenate([[0], curve.false_positives]))
        thr = curve.thresholds
    elif isinstance(table, CountTable):
        n_pos_cells, n_neg_cells, thr = table.n_positive[::-1], table.n_negative[::-1], table.scores[::-1]
    else:
        raise InputError("bootstrap_threshold needs a CountTable or an ErrorCurve.")
    n_pos, n_neg = int(n_pos_cells.sum()), int(n_neg_cells.sum())
    require_both_classes(n_pos, n_neg)
    if int(n_resamples) < 1:
        raise InputError(f"n_resamples must be at least 1, got {n_resamples}.")
    R = int(n_resamples)
    K = thr.size
    L = int(block_size) if block_size else max(1, math.isqrt(K - 1) + 1)
    B = -(-K // L)
    wp, wn, _ = policy.cost_weights(n_pos, n_neg)
    kfn, kfp = policy.error_allowances(n_pos, n_neg)

    rng = np.random.default_rng(seed)
    entropy = rng.integers(0, 2**63 - 1)
    starts = np.arange(0, K, L)
    bpos = np.add.reduceat(n_pos_cells, starts)
    bneg = np.add.reduceat(n_neg_cells, starts)
    P = _multinomial_rows(rng, np.full(R, n_pos), bpos)  # (R, B)
    N = _multinomial_rows(rng, np.full(R, n_neg), bneg)
    fn_after = n_pos - np.cumsum(P, axis=1)
    fp_after = np.cumsum(N, axis=1)
    fn_before = np.concatenate([np.full((R, 1), n_pos), fn_after[:, :-1]], axis=1)
    fp_before = np.concatenate([np.zeros((R, 1), np.int64), fp_after[:, :-1]], axis=1)

    out_t = np.full(R, np.nan)
    out_fa = np.full(R, np.nan)
    out_fr = np.full(R, np.nan)
    out_c = np.full(R, np.nan)

    for r in range(R):
        # Candidates in a total order (cost, false accepts, cell index) so that the lazy
        # search and a full expansion pick the same cell. Index -1 is "never fire"; a
        # block boundary is the last cell of its block.
        cand_fn = np.concatenate([[n_pos], fn_after[r]])
        cand_fp = np.concatenate([[0], fp_after[r]])
        cand_idx = np.concatenate([[-1], np.minimum(starts + L, K) - 1])
        best = _Best(policy, n_pos, n_neg)
        best.add(cand_fn, cand_fp, cand_idx)
        if _exhaustive:
            blocks = range(B)
        else:
            lb = wp * fn_after[r] + wn * fp_before[r]
            possible = (fn_after[r] <= kfn) & (fp_before[r] <= kfp) & (lb <= best.bound())
            blocks = np.flatnonzero(possible)
        for b in blocks:
            lo, hi = starts[b], min(starts[b] + L, K)
            if hi - lo == 1:
                continue  # its only cell is the block boundary, already a candidate
            if not _exhaustive and wp * fn_after[r, b] + wn * fp_before[r, b] > best.bound():
                continue  # the minimum fell while earlier blocks were expanded
            brng = np.random.default_rng([int(entropy), r, int(b)])
            p = _multinomial_rows(brng, np.array([P[r, b]]), n_pos_cells[lo:hi])[0]
            q = _multinomial_rows(brng, np.array([N[r, b]]), n_neg_cells[lo:hi])[0]
            cfn = fn_before[r, b] - np.cumsum(p)
            cfp = fp_before[r, b] + np.cumsum(q)
            best.add(cfn, cfp, np.arange(lo, hi))
        won = best.result()
        if won is None:
            continue
        cost, idx, fn, fp = won
        out_t[r] = np.inf if idx < 0 else thr[idx]
        out_fa[r], out_fr[r] = by_action(policy.action, fn / n_pos, fp / n_neg)
        out_c[r] = cost
    return BootstrapResult(out_t, out_fa, out_fr, out_c, seed)
