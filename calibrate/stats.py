"""Exact binomial bounds, samples needed, and a tie-exact bootstrap of the threshold choice.

Bounds are Clopper-Pearson (exact, from the beta distribution in :mod:`scipy.stats`):
the one-sided upper bound ``U(k, n)`` at confidence ``c`` is the largest error rate
under which seeing ``k`` or fewer errors in ``n`` trials still has probability at least
``1 - c``. ``U`` increases with ``k`` and decreases with ``n``; both facts are used
below to answer limit questions with a handful of bound evaluations.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as _sps

from calibrate.errors import InputError

__all__ = [
    "BootstrapResult",
    "bootstrap_threshold",
    "clopper_pearson_interval",
    "clopper_pearson_upper",
    "max_errors_within",
    "samples_needed",
    "zero_failure_sample_size",
]


def _check_confidence(confidence: float) -> float:
    c = float(confidence)
    if not 0.0 < c < 1.0:
        raise InputError(
            f"confidence must be strictly between 0 and 1 (e.g. 0.95), got {confidence!r}."
        )
    return c


def _check_limit(limit: float, name: str = "limit") -> float:
    x = float(limit)
    if not 0.0 < x < 1.0:
        raise InputError(
            f"{name} must be a rate strictly between 0 and 1 (0.001 means 0.1%), got {limit!r}."
        )
    return x


def _check_counts(errors, n) -> tuple[np.ndarray, np.ndarray]:
    k = np.asarray(errors)
    m = np.asarray(n)
    if np.any(m < 0) or np.any(k < 0) or np.any(k > m):
        raise InputError(
            f"error counts must satisfy 0 <= errors <= n; got errors={errors!r}, n={n!r}."
        )
    return k.astype(np.float64), m.astype(np.float64)


def clopper_pearson_upper(errors, n, confidence: float = 0.95):
    """Exact one-sided upper confidence bound of an error rate.

    Parameters
    ----------
    errors : int or array-like of int
        Errors observed.
    n : int or array-like of int
        Trials (items of the class the rate is about).
    confidence : float, default 0.95
        One-sided confidence level.

    Returns
    -------
    float or ndarray
        The bound; 1.0 where every trial was an error or there were no trials.

    Examples
    --------
    >>> round(float(clopper_pearson_upper(0, 3000)), 6)  # about 3/n: the rule of three
    0.000998
    """
    c = _check_confidence(confidence)
    k, m = _check_counts(errors, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        u = _sps.beta.ppf(c, k + 1.0, np.maximum(m - k, 1.0))
    u = np.where((k >= m) | (m == 0), 1.0, u)
    return float(u) if u.ndim == 0 else u


def clopper_pearson_interval(errors, n, confidence: float = 0.95):
    """Exact two-sided (Clopper-Pearson) confidence interval of an error rate.

    Parameters
    ----------
    errors, n : int or array-like of int
        Errors observed and trials.
    confidence : float, default 0.95
        Two-sided coverage.

    Returns
    -------
    lower, upper : float or ndarray
    """
    c = _check_confidence(confidence)
    k, m = _check_counts(errors, n)
    a = (1.0 - c) / 2.0
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = _sps.beta.ppf(a, np.maximum(k, 1.0), m - k + 1.0)
        hi = _sps.beta.ppf(1.0 - a, k + 1.0, np.maximum(m - k, 1.0))
    lo = np.where(k == 0, 0.0, lo)
    hi = np.where((k >= m) | (m == 0), 1.0, hi)
    if lo.ndim == 0:
        return float(lo), float(hi)
    return lo, hi


def max_errors_within(n: int, limit: float, confidence: float = 0.95) -> int:
    """Largest error count whose upper bound is still within ``limit``.

    Because the Clopper-Pearson upper bound increases with the error count, a threshold
    meets the limit exactly when its error count is at most this number. Found by
    bisection: about ``log2(n)`` bound evaluations instead of one per threshold.

    Parameters
    ----------
    n : int
        Items of the class the limit is about.
    limit : float
        Largest acceptable error rate.
    confidence : float, default 0.95

    Returns
    -------
    int
        ``-1`` when even zero errors in ``n`` cannot show the limit.
    """
    _check_limit(limit)
    c = _check_confidence(confidence)
    n = int(n)
    if n <= 0 or clopper_pearson_upper(0, n, c) > limit:
        return -1
    lo, hi = 0, n  # invariant: U(lo) <= limit; U(hi) > limit or hi == n
    if clopper_pearson_upper(n, n, c) <= limit:  # only possible if limit >= 1
        return n
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if clopper_pearson_upper(mid, n, c) <= limit:
            lo = mid
        else:
            hi = mid
    return lo


def zero_failure_sample_size(limit: float, confidence: float = 0.95) -> int:
    """Smallest ``n`` for which zero errors in ``n`` trials show ``rate <= limit``.

    The exact form of the "rule of three" (``n ~ 3 / limit`` at 95%):
    ``n = ceil(log(1 - confidence) / log(1 - limit))``.

    Parameters
    ----------
    limit : float
    confidence : float, default 0.95

    Returns
    -------
    int
    """
    return samples_needed(limit, confidence, errors=0, n=0)


def samples_needed(limit: float, confidence: float = 0.95, *, errors: int = 0, n: int = 0) -> int:
    """How many more samples, all without error, would show ``rate <= limit``.

    Parameters
    ----------
    limit : float
        Largest acceptable error rate.
    confidence : float, default 0.95
    errors : int, default 0
        Errors already observed at the threshold in question.
    n : int, default 0
        Samples of the class already observed.

    Returns
    -------
    int
        Additional samples of that class; 0 when the limit is already shown.

    Examples
    --------
    >>> samples_needed(0.001)  # the rule of three says about 3000
    2995
    >>> samples_needed(0.001, errors=0, n=500)
    2495
    """
    lim = _check_limit(limit)
    c = _check_confidence(confidence)
    errors, n = int(errors), int(n)
    _check_counts(errors, n)

    def ok(total: int) -> bool:
        return total > 0 and clopper_pearson_upper(errors, total, c) <= lim

    if ok(n):
        return 0
    # Upper bound is decreasing in the total for a fixed error count: start from the
    # closed form for zero errors (a lower bound for any error count), then bisect.
    guess = math.ceil(math.log1p(-c) / math.log1p(-lim))
    lo = max(n, errors, guess - 2, 0)  # not ok (or below the answer)
    while ok(lo) and lo > n:
        lo -= 1
    hi = max(lo + 1, int((errors + 3.0) / lim) + 1)
    while not ok(hi):
        hi *= 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi - n


# ---------------------------------------------------------------------------------------
# Bootstrap
# ---------------------------------------------------------------------------------------


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
        c = _check_confidence(level)
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
    """The tie rule of :func:`calibrate.choose_threshold`, fed candidates piece by piece.

    The cheapest candidate wins, costs within a relative ``1e-12`` of the minimum being
    ties (floating-point noise); among ties, fewer false accepts, then the smaller index
    (higher threshold). Candidates are kept while they are within the tolerance of the
    running minimum, so the final choice equals the one over all candidates at once,
    whatever order the pieces come in.
    """

    def __init__(self, w_fn, w_fp, allow_fn, allow_fp, reject):
        from calibrate.thresholds import _TIE

        self.tie = _TIE
        self.w_fn, self.w_fp = w_fn, w_fp
        self.allow_fn, self.allow_fp, self.reject = allow_fn, allow_fp, reject
        self.min = np.inf
        self.kept: list[tuple[np.ndarray, ...]] = []

    def bound(self) -> float:
        """No candidate costing more than this can still win or tie."""
        return self.min + self.tie * abs(self.min) if np.isfinite(self.min) else np.inf

    def add(self, fn, fp, idx) -> None:
        ok = (fn <= self.allow_fn) & (fp <= self.allow_fp)
        if not ok.any():
            return
        fn, fp, idx = fn[ok], fp[ok], idx[ok]
        cost = self.w_fn * fn + self.w_fp * fp
        self.min = min(self.min, float(cost.min()))
        near = cost <= self.bound()
        self.kept.append((cost[near], fn[near], fp[near], idx[near]))

    def result(self):
        """(cost, cell index, fn, fp) of the winner, or None when nothing was feasible."""
        if not self.kept:
            return None
        cost, fn, fp, idx = (np.concatenate(parts) for parts in zip(*self.kept))
        sel = cost <= self.bound()
        cost, fn, fp, idx = cost[sel], fn[sel], fp[sel], idx[sel]
        fa = fn if self.reject else fp
        order = np.lexsort((idx, fa))  # fewest false accepts, then the smallest index
        j = order[0]
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
    from calibrate.curves import CountTable, ErrorCurve
    from calibrate.thresholds import _cost_weights, _error_allowances

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
    from calibrate.curves import _require_both_classes

    _require_both_classes(n_pos, n_neg)
    if int(n_resamples) < 1:
        raise InputError(f"n_resamples must be at least 1, got {n_resamples}.")
    R = int(n_resamples)
    K = thr.size
    L = int(block_size) if block_size else max(1, math.isqrt(K - 1) + 1)
    B = -(-K // L)
    wp, wn, _ = _cost_weights(policy, n_pos, n_neg)
    kfn, kfp = _error_allowances(policy, n_pos, n_neg)
    reject = policy.action == "reject"

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
        best = _Best(wp, wn, kfn, kfp, reject)
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
        fa_rate, fr_rate = (fn / n_pos, fp / n_neg) if reject else (fp / n_neg, fn / n_pos)
        out_fa[r], out_fr[r], out_c[r] = fa_rate, fr_rate, cost
    return BootstrapResult(out_t, out_fa, out_fr, out_c, seed)
