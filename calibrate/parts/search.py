"""Joint choice of all labels' cutoffs at the part level, with or without a review band.

**Objective.** Minimise the part-level expected cost per line part
(:func:`~calibrate.parts.evaluate.evaluate_parts`) among cutoff sets that meet the
part-level limits and each label's own limits. Each label's candidates are its
distinct scores plus ``+inf`` (never fire). Candidates are ranked by ``(violation,
cost)``: ``violation`` is how far the part-level limits are exceeded (excess false
accepts per defective part + excess false rejects per good part + excess review
share), so a search that starts infeasible walks towards feasibility first. Ties go
to fewer false accepts, then higher cutoffs.

**Search.** Coordinate descent: for one label, with the others fixed, every candidate
cutoff (or every ``(T_low, T_high)`` pair) is evaluated exactly on the per-part data at
once. The label's scores are sorted once; a sweep is a running sum over that order of
the parts the other labels do not already decide, so one sweep costs ``O(n)`` for
single cutoffs. For a review band the cost and violation of a pair split into a part
that depends on ``T_high`` and one that depends on ``T_low``; with a review capacity
the pairs within capacity form a range of ``T_low`` per ``T_high``, so all ``m^2``
pairs are searched with two range minimum queries per ``T_high`` (``O(m log m)``). Sweeps
cycle over the labels until none improves, from several starts (the per-label
choices, never fire, fire on everything, seeded random points); the best end point
wins. When the other labels' candidate grid is small enough (at most
``max_combinations`` combinations), every combination is enumerated instead, each with
an exact sweep of the remaining label: that result is the exact optimum
(``exact=True``). Otherwise the result is a local optimum, *not provably optimal*.

**What the limit guarantee means here.** A part-level limit is judged on the exact
one-sided Clopper-Pearson upper bound of the part-level rate (Bonferroni over two
limits). For one *fixed* set of cutoffs that is a valid test at the stated confidence.
The search looks at many sets on the same data, which is not a fixed-sequence test
(the part-level error count is not monotone along one path through the candidates),
so the calibration bound of the chosen set is optimistic. The honest figure is the
chosen set's bound on held-out parts: those parts played no part in the choice, so it
is an exact test of that one fixed set at the stated confidence.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from calibrate.errors import InputError
from calibrate.parts.evaluate import PartFigures, PartProblem, evaluate_parts

__all__ = ["GUARANTEE", "JointChoice", "choose_joint", "choose_review_band"]

#: How the part-level limit guarantee reads wherever a joint choice is shown.
GUARANTEE = (
    "Part-level limits are judged on exact one-sided Clopper-Pearson bounds. The joint "
    "search compares many cutoff sets on the calibration parts, which is not a "
    "fixed-sequence test, so the calibration bound of the chosen set is optimistic; the "
    "held-out bound (parts not used to choose) is the exact test of the chosen set.")

_TOL = 1e-12


@dataclass(frozen=True)
class JointChoice:
    """Cutoffs chosen together at the part level, with how they were found.

    Attributes
    ----------
    labels : tuple of str
    reject_cutoffs : dict of str to float
        ``T_high`` per label.
    review_cutoffs : dict of str to float or None
        ``T_low`` per label for a review band, else None.
    figures : PartFigures
        The set evaluated on the calibration parts.
    exact : bool
        True only when every combination was checked (the optimum is proven).
    method : str
        How the optimum was searched, in words (says "not provably optimal" unless
        ``exact``).
    start : str
        The start whose descent ended best (``"exhaustive"`` when exact).
    freed_labels : tuple of str
        Labels whose own limits no cutoff can show; the search ignores those limits
        for them (the per-label choice says what was signed off).
    n_sweeps : int
        Exact coordinate sweeps done.
    """

    labels: tuple[str, ...]
    reject_cutoffs: dict
    review_cutoffs: dict | None
    figures: PartFigures
    exact: bool
    method: str
    start: str
    freed_labels: tuple[str, ...] = ()
    n_sweeps: int = 0

    def to_dict(self) -> dict:
        """Plain-dict form (JSON friendly apart from ``inf``)."""
        return {"reject_cutoffs": dict(self.reject_cutoffs),
                "review_cutoffs": None if self.review_cutoffs is None else dict(
                    self.review_cutoffs),
                "exact": self.exact, "method": self.method, "start": self.start,
                "freed_labels": list(self.freed_labels), "n_sweeps": self.n_sweeps,
                "guarantee": GUARANTEE, "figures": self.figures.to_dict()}


class _Axis:
    """One label's candidates in descending score order (computed once per search)."""

    def __init__(self, problem: PartProblem, j: int):
        d = problem.data
        s = d.scores[:, j]
        self.order = np.argsort(-s, kind="stable")
        sv = s[self.order]
        change = np.flatnonzero(sv[1:] != sv[:-1]) + 1
        self.values = sv[np.concatenate([[0], change])]          # distinct, descending
        self.ends = np.concatenate([change, [len(sv)]])          # parts with s >= values[j]
        self.thresholds = np.concatenate([[np.inf], self.values])  # candidate k -> T
        self.m = len(self.values)
        self.a, self.b, self.free = 0, self.m, False
        pol = problem.label_policies.get(d.labels[j])
        pos = d.truth[:, j]
        n_pos, n_neg = int(pos.sum()), int((~pos).sum())
        if pol is not None and pol.has_limits and n_pos and n_neg:
            fires_pos = self.cum(pos)
            fires = np.concatenate([[0], self.ends])
            fn, fp = n_pos - fires_pos, fires - fires_pos
            allow_fn, allow_fp = pol.error_allowances(n_pos, n_neg)
            ok_fn, ok_fp = np.flatnonzero(fn <= allow_fn), np.flatnonzero(fp <= allow_fp)
            # Counts are monotone in k, so each limit keeps one end of the candidates.
            self.a = int(ok_fn[0]) if len(ok_fn) else None
            self.b = int(ok_fp[-1]) if len(ok_fp) else None
            if self.a is None or self.b is None or self.a > self.b:
                self.free = True

    def cum(self, x: np.ndarray) -> np.ndarray:
        """Sum of ``x`` over the parts candidate ``k`` fires on, for every ``k``."""
        c = np.concatenate([[0], np.cumsum(x[self.order])])
        return c[np.concatenate([[0], self.ends])]

    def index_of(self, t: float) -> int:
        """Candidate index making the same decisions as cutoff ``t``."""
        return int(np.sum(self.values >= t))

    def single_range(self) -> tuple[int, int]:
        """Candidates that meet the label's own limits (all when they cannot be met)."""
        return (0, self.m) if self.free else (self.a, self.b)

    def band_ranges(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """``(T_low range, T_high range)``: a false accept is a positive below ``T_low``
        (a reviewed defect is caught), a false reject a negative at or above ``T_high``."""
        lo = (0, self.m) if self.a is None else (self.a, self.m)
        hi = (0, self.m) if self.b is None else (0, self.b)
        return lo, hi


class _Search:
    """Shared state: the problem, the axes, the limits as count allowances."""

    def __init__(self, problem: PartProblem):
        self.p = problem
        d = problem.data
        self.axes = [_Axis(problem, j) for j in range(len(d.labels))]
        self.defective = d.defective
        self.good = ~self.defective
        self.n_def, self.n_good = max(d.n_defective, 1), max(d.n_good, 1)
        self.allow_fa, self.allow_fr = problem.policy.allowances(d.n_defective, d.n_good)
        cap = problem.policy.max_review_fraction
        self.cap = math.inf if cap is None else float(cap)
        self.sweeps = 0

    def violation(self, fa, fr, review):
        return (np.maximum(fa - self.allow_fa, 0) / self.n_def
                + np.maximum(fr - self.allow_fr, 0) / self.n_good
                + np.maximum(review - self.cap, 0.0))

    def fired(self, ks) -> np.ndarray:
        """Per part and label: does candidate ``ks[l]`` fire?"""
        t = np.array([ax.thresholds[k] for ax, k in zip(self.axes, ks)])
        return self.p.data.scores >= t

    # -- single cutoffs ------------------------------------------------------------------

    def sweep(self, j: int, ks) -> tuple[int, float, float]:
        """Best candidate of label ``j`` with the others at ``ks``: (k, violation, cost)."""
        self.sweeps += 1
        ax, p = self.axes[j], self.p
        f = self.fired(ks)
        f[:, j] = False
        o = f.any(axis=1)
        free = ~o
        cost = (p.scrap_cost[o].sum() + p.ship_cost[free].sum()
                + ax.cum(p.scrap_cost * free) - ax.cum(p.ship_cost * free))
        fa = (self.defective & free).sum() - ax.cum(self.defective & free)
        fr = (self.good & o).sum() + ax.cum(self.good & free)
        v = self.violation(fa, fr, 0.0)
        lo, hi = ax.single_range()
        k = _best(v[lo:hi + 1], cost[lo:hi + 1], fa[lo:hi + 1]) + lo
        return k, float(v[k]), float(cost[k])

    def descend(self, ks) -> tuple[list[int], float, float]:
        ks = list(ks)
        best = None
        for _ in range(100):
            improved = False
            for j in range(len(ks)):
                k, v, c = self.sweep(j, ks)
                if best is None or _better((v, c), best):
                    improved = best is not None and ks[j] != k
                    ks[j], best = k, (v, c)
            if not improved:
                break
        return ks, best[0], best[1]

    # -- review band ---------------------------------------------------------------------

    def band_sweep(self, j: int, hs, gs) -> tuple[int, int, float, float]:
        """Best ``(T_high k, T_low k)`` pair of label ``j`` with the others fixed."""
        self.sweeps += 1
        ax, p = self.axes[j], self.p
        fh, fg = self.fired(hs), self.fired(gs)
        fh[:, j] = fg[:, j] = False
        r = fh.any(axis=1)
        v_ = ~r & fg.any(axis=1)
        a_ = ~r & ~v_
        w = p.weights
        k0 = p.scrap_cost[r].sum() + p.review_cost[v_].sum() + p.ship_cost[a_].sum()
        a_h = (ax.cum(p.scrap_cost * v_) - ax.cum(p.review_cost * v_)
               + ax.cum(p.scrap_cost * a_) - ax.cum(p.review_cost * a_))
        b_g = ax.cum(p.review_cost * a_) - ax.cum(p.ship_cost * a_)
        fa_g = (self.defective & a_).sum() - ax.cum(self.defective & a_)
        fr_h = (self.good & r).sum() + ax.cum(self.good & ~r)
        x_h = (w * v_).sum() - ax.cum(w * v_) - ax.cum(w * a_)
        y_g = ax.cum(w * a_)
        (glo, ghi), (hlo, hhi) = ax.band_ranges()
        # cost(g, h) = k0 + a(h) + b(g); violation = F(g) + R(h) + max(0, x(h) + y(g) - cap)
        # with y non-decreasing in g. For each h the pairs without review excess are a
        # range of g, the others the rest up to ghi: one range minimum each (no m x m grid).
        f_g = np.maximum(fa_g - self.allow_fa, 0) / self.n_def
        r_h = np.maximum(fr_h - self.allow_fr, 0) / self.n_good
        h = np.arange(hlo, hhi + 1)
        start = np.maximum(h, glo)
        k = np.searchsorted(y_g, self.cap - x_h[h] + _TOL, side="right") - 1
        k = np.minimum(k, ghi)
        cands = []
        rank_a = _ranks(f_g, b_g, fa_g)
        ga = _range_argmin(rank_a, start, k)                     # -1 where empty
        rank_b = _ranks(f_g + y_g, b_g, fa_g)
        gb = _range_argmin(rank_b, np.maximum(start, k + 1), np.full_like(h, ghi))
        for g in (ga, gb):
            ok = g >= 0
            gg = np.where(ok, g, 0)
            v = f_g[gg] + r_h[h] + np.maximum(x_h[h] + y_g[gg] - self.cap, 0.0)
            cands.append((np.where(ok, v, np.inf), np.where(ok, k0 + a_h[h] + b_g[gg], np.inf),
                          np.where(ok, fa_g[gg], np.inf), gg))
        v, cost, fa, g = (np.column_stack(x).ravel() for x in zip(*cands))
        i = _best(v, cost, fa)
        return int(h[i // 2]), int(g[i]), float(v[i]), float(cost[i])

    def band_descend(self, hs, gs) -> tuple[list[int], list[int], float, float]:
        hs, gs = list(hs), list(gs)
        best = None
        for _ in range(100):
            improved = False
            for j in range(len(hs)):
                h, g, v, c = self.band_sweep(j, hs, gs)
                if best is None or _better((v, c), best):
                    improved = best is not None and (hs[j], gs[j]) != (h, g)
                    hs[j], gs[j], best = h, g, (v, c)
            if not improved:
                break
        return hs, gs, best[0], best[1]


def _better(x: tuple[float, float], y: tuple[float, float]) -> bool:
    """Is ``(violation, cost)`` x better than y beyond rounding?"""
    if x[0] < y[0] - _TOL:
        return True
    return abs(x[0] - y[0]) <= _TOL and x[1] < y[1] - _TOL * max(1.0, abs(y[1]))


def _best(v: np.ndarray, cost: np.ndarray, fa: np.ndarray) -> int:
    """Index of the least violation, then cost (within rounding), then fewest false
    accepts, then the first (highest cutoff)."""
    near = v <= np.min(v) + _TOL
    cmin = np.min(np.where(near, cost, np.inf))
    near &= cost <= cmin + _TOL * max(1.0, abs(cmin))
    fmin = np.min(np.where(near, fa, np.inf))
    return int(np.flatnonzero(near & (fa == fmin))[0])


def _ranks(*keys) -> np.ndarray:
    """Rank of each index by the keys, first key most significant, ties to the lower
    index (the higher cutoff)."""
    order = np.lexsort((np.arange(len(keys[0])),) + tuple(reversed(keys)))
    ranks = np.empty(len(order), dtype=np.int64)
    ranks[order] = np.arange(len(order))
    return ranks


def _range_argmin(ranks: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Per query, the index of the smallest rank in ``ranks[lo:hi + 1]`` (-1 if empty),
    with a sparse table: O(m log m) to build, O(1) per query."""
    n = len(ranks)
    table = [ranks]
    while 2 ** len(table) <= n:
        prev, half = table[-1], 2 ** (len(table) - 1)
        table.append(np.minimum(prev[:-half], prev[half:]))
    lo, hi = np.asarray(lo), np.asarray(hi)
    empty = hi < lo
    length = np.where(empty, 1, hi - lo + 1)
    level = np.floor(np.log2(length)).astype(np.int64)
    best = np.full(len(lo), n, dtype=np.int64)
    for j in np.unique(level):
        q = level == j
        a, b = lo[q], hi[q] - 2 ** j + 1
        ok = ~empty[q]
        best[q] = np.where(ok, np.minimum(table[j][np.where(ok, a, 0)],
                                          table[j][np.where(ok, b, 0)]), n)
    order = np.argsort(ranks)
    return np.where(best < n, order[np.minimum(best, n - 1)], -1)


def _starts(search: _Search, start_cutoffs, n_random: int, seed: int):
    axes = search.axes
    starts = []
    if start_cutoffs is not None:
        starts.append(("per-label choices", [ax.index_of(float(start_cutoffs[lab]))
                                             for ax, lab in zip(axes, search.p.labels)]))
    starts.append(("never fire", [0] * len(axes)))
    starts.append(("fire on everything", [ax.m for ax in axes]))
    rng = np.random.default_rng(seed)
    starts += [(f"random start {i + 1}", [int(rng.integers(0, ax.m + 1)) for ax in axes])
               for i in range(n_random)]
    out = []
    for name, ks in starts:
        clipped = []
        for ax, k in zip(axes, ks):
            lo, hi = ax.single_range()
            clipped.append(min(max(k, lo), hi))
        out.append((name, clipped))
    return out


def _method(exact: bool, n_starts: int, combos: int, limit: int, what: str) -> str:
    if exact:
        return (f"exhaustive: every combination of the other labels' {what} "
                f"({combos:,}) with an exact sweep of the last label; the optimum is exact")
    return (f"coordinate descent over each label's {what} with the others fixed, "
            f"{n_starts} starts; not provably optimal (exhaustive search would need "
            f"{combos:,} combinations, more than {limit:,})")


def choose_joint(problem: PartProblem, *, start_cutoffs=None, max_combinations: int = 20_000,
                 n_random: int = 3, seed: int = 0) -> JointChoice:
    """Choose every label's cutoff together to minimise part-level expected cost.

    Parameters
    ----------
    problem : PartProblem
    start_cutoffs : dict of str to float, optional
        The per-label choices; the search starts there too, so the joint choice is never
        worse than they are on ``(violation, cost)``.
    max_combinations : int, default 20000
        Search exhaustively when the other labels' candidate grid (all labels but the
        one with the most candidates) has at most this many combinations.
    n_random : int, default 3
        Seeded random starts besides the fixed ones.
    seed : int, default 0

    Returns
    -------
    JointChoice
        ``figures.limits_met`` says whether the part-level limits hold on the
        calibration parts (see :data:`GUARANTEE` for what that does and does not prove).
    """
    s = _Search(problem)
    ranges = [ax.single_range() for ax in s.axes]
    big = int(np.argmax([hi - lo for lo, hi in ranges]))
    combos = math.prod(hi - lo + 1 for i, (lo, hi) in enumerate(ranges) if i != big)
    exact = combos <= max_combinations
    if exact:
        best, start = None, "exhaustive"
        others = [range(lo, hi + 1) if i != big else [0] for i, (lo, hi) in enumerate(ranges)]
        for ks in itertools.product(*others):
            ks = list(ks)
            k, v, c = s.sweep(big, ks)
            ks[big] = k
            if best is None or _better((v, c), best[1:]):
                best = (ks, v, c)
        ks = best[0]
        n_starts = 0
    else:
        results = []
        starts = _starts(s, start_cutoffs, n_random, seed)
        for name, ks0 in starts:
            ks, v, c = s.descend(ks0)
            results.append((name, ks, v, c))
        name, ks, v, c = results[0]
        for r in results[1:]:
            if _better(r[2:], (v, c)):
                name, ks, v, c = r
        start, n_starts = name, len(starts)
    cut = {lab: float(ax.thresholds[k]) for lab, ax, k in zip(problem.labels, s.axes, ks)}
    return JointChoice(problem.labels, cut, None, evaluate_parts(problem, cut), exact,
                       _method(exact, n_starts, combos, max_combinations, "distinct scores"),
                       start, tuple(lab for lab, ax in zip(problem.labels, s.axes)
                                    if ax.free), s.sweeps)


def choose_review_band(problem: PartProblem, *, start_cutoffs=None,
                       max_combinations: int = 20_000, n_random: int = 3,
                       seed: int = 0) -> JointChoice:
    """Choose per-label ``T_low <= T_high`` for accept / review / reject, all labels together.

    A part is scrapped when any label reaches ``T_high``, else reviewed when any reaches
    ``T_low``, else shipped. Cost per line part adds ``review_cost`` per reviewed part;
    ``max_review_fraction`` caps the line-weighted share of reviewed parts; part-level
    and per-label limits apply as in :func:`choose_joint` (a reviewed defect counts as
    caught). The search is the same as :func:`choose_joint`'s over ``(T_low, T_high)``
    pairs; with the others fixed, all pairs of one label are evaluated at once.

    Parameters
    ----------
    problem : PartProblem
        Its policy must set ``review_cost``.
    start_cutoffs : dict of str to float, optional
        Single cutoffs to start from (``T_low = T_high``), e.g. the joint choice's.
    max_combinations, n_random, seed
        As in :func:`choose_joint`; combinations count ``(T_low, T_high)`` pairs.

    Returns
    -------
    JointChoice
        With ``review_cutoffs`` set.

    Raises
    ------
    InputError
        When the policy has no ``review_cost``.
    """
    if not problem.policy.has_review:
        raise InputError("a review band needs [part] review_cost (the cost of one part "
                         "looked at by a person).")
    s = _Search(problem)
    pairs = []
    for ax in s.axes:
        (glo, ghi), (hlo, hhi) = ax.band_ranges()
        pairs.append([(h, g) for h in range(hlo, hhi + 1) for g in range(max(h, glo), ghi + 1)])
    big = int(np.argmax([ax.m for ax in s.axes]))
    combos = math.prod(len(pp) for i, pp in enumerate(pairs) if i != big)
    exact = combos <= max_combinations
    if exact:
        best, start, n_starts = None, "exhaustive", 0
        others = [pp if i != big else [(0, 0)] for i, pp in enumerate(pairs)]
        for combo in itertools.product(*others):
            hs, gs = [c[0] for c in combo], [c[1] for c in combo]
            h, g, v, c = s.band_sweep(big, hs, gs)
            hs[big], gs[big] = h, g
            if best is None or _better((v, c), best[2:]):
                best = (hs, gs, v, c)
        hs, gs = best[0], best[1]
    else:
        results = []
        starts = _starts(s, start_cutoffs, n_random, seed)
        for name, ks0 in starts:
            hs0, gs0 = [], []
            for ax, k in zip(s.axes, ks0):
                (glo, ghi), (hlo, hhi) = ax.band_ranges()
                h = min(max(k, hlo), hhi)
                hs0.append(h)
                gs0.append(min(max(k, glo, h), ghi))
            hs, gs, v, c = s.band_descend(hs0, gs0)
            results.append((name, hs, gs, v, c))
        name, hs, gs, v, c = results[0]
        for r in results[1:]:
            if _better(r[3:], (v, c)):
                name, hs, gs, v, c = r
        start, n_starts = name, len(starts)
    labels = problem.labels
    high = {lab: float(ax.thresholds[h]) for lab, ax, h in zip(labels, s.axes, hs)}
    low = {lab: float(ax.thresholds[g]) for lab, ax, g in zip(labels, s.axes, gs)}
    return JointChoice(labels, high, low, evaluate_parts(problem, high, low), exact,
                       _method(exact, n_starts, combos, max_combinations,
                               "(T_low, T_high) pairs"),
                       start, (), s.sweeps)
