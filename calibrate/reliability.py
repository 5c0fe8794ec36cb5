"""Reliability of a calibration map on held-out data: Brier score, log-loss, ECE, bins.

On a held-out count table: Brier score, log-loss and expected calibration error (ECE)
with equal-mass bins, each with a seeded bootstrap percentile interval (multinomial
resampling of the table's counts, the map held fixed), and per bin the observed share of
positives with its exact Clopper-Pearson interval (the reliability diagram). They are
computed at the sample's prevalence, the one the held-out split shares with the
calibration split. Every function also takes plain ``(probability, positive, weight)``
arrays, weights being counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from calibrate import stats
from calibrate.checks import check_confidence
from calibrate.curves import CountTable
from calibrate.errors import InputError
from calibrate.io import jsonable
from calibrate.probability import CalibrationMap, _weighted_log_loss

__all__ = [
    "CalibrationMetrics",
    "ReliabilityBins",
    "brier_score",
    "equal_mass_bins",
    "evaluate_calibration",
    "expected_calibration_error",
    "log_loss",
    "reliability_bins",
]

# ---------------------------------------------------------------------------------------
# Reliability: Brier, log-loss, ECE, bins
# ---------------------------------------------------------------------------------------


def _pyw(probability, positive, weight):
    p = np.asarray(probability, dtype=np.float64)
    y = np.asarray(positive, dtype=np.float64)
    w = np.ones_like(p) if weight is None else np.asarray(weight, dtype=np.float64)
    if p.shape != y.shape or p.shape != w.shape or p.ndim != 1:
        raise InputError("probability, positive and weight must be 1-D and equally long.")
    if p.size == 0 or w.sum() <= 0:
        raise InputError("no items to evaluate.")
    if np.any((p < 0) | (p > 1)) or np.isnan(p).any():
        raise InputError("probabilities must lie in [0, 1].")
    return p, y, w


def brier_score(probability, positive, weight=None) -> float:
    """Mean squared difference between probability and outcome (weighted by counts)."""
    p, y, w = _pyw(probability, positive, weight)
    return float((w * (p - y) ** 2).sum() / w.sum())


def log_loss(probability, positive, weight=None) -> float:
    """Mean negative log-likelihood (natural log), probabilities clipped to
    ``[1e-15, 1 - 1e-15]``."""
    p, y, w = _pyw(probability, positive, weight)
    return _weighted_log_loss(p, y, w)


def equal_mass_bins(probability, weight=None, n_bins: int = 10) -> np.ndarray:
    """Bin index of each item, bins holding (as nearly as ties allow) equal mass.

    Items are ordered by probability; an item (or a group of tied items, which always
    share a bin) goes to bin ``floor(n_bins * m / N)``, where ``m`` is the mass below
    the middle of the group, so ties never straddle a bin edge.
    """
    p = np.asarray(probability, dtype=np.float64)
    w = np.ones_like(p) if weight is None else np.asarray(weight, dtype=np.float64)
    if int(n_bins) < 1:
        raise InputError(f"n_bins must be at least 1, got {n_bins!r}.")
    uniq, inv = np.unique(p, return_inverse=True)
    mass = np.bincount(inv, weights=w, minlength=uniq.size)
    mid = np.cumsum(mass) - mass / 2.0
    b = np.minimum((n_bins * mid / mass.sum()).astype(np.int64), n_bins - 1)
    return b[inv]


def expected_calibration_error(probability, positive, weight=None, n_bins: int = 10) -> float:
    """ECE with equal-mass bins: ``sum_b (n_b / N) |observed_b - mean predicted_b|``."""
    p, y, w = _pyw(probability, positive, weight)
    b = equal_mass_bins(p, w, n_bins)
    # (n_b / N) |obs_b / n_b - pred_b / n_b| = |obs_b - pred_b| / N: no bin count needed
    obs = np.bincount(b, weights=w * y, minlength=n_bins)
    pred = np.bincount(b, weights=w * p, minlength=n_bins)
    return float(np.abs(obs - pred).sum() / w.sum())


@dataclass(frozen=True)
class ReliabilityBins:
    """The reliability diagram's numbers: per equal-mass bin of predicted probability.

    Attributes
    ----------
    n, n_positive : ndarray of int
    mean_predicted, observed : ndarray of float
        Mean predicted probability and observed share of positives per bin.
    lower, upper : ndarray of float
        Exact two-sided Clopper-Pearson interval of the observed share.
    confidence : float
    """

    n: np.ndarray
    n_positive: np.ndarray
    mean_predicted: np.ndarray
    observed: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    confidence: float

    def to_frame(self):
        """The bins as a DataFrame."""
        import pandas as pd

        return pd.DataFrame({"n": self.n, "n_positive": self.n_positive,
                             "mean_predicted": self.mean_predicted, "observed": self.observed,
                             "lower": self.lower, "upper": self.upper})


def reliability_bins(probability, positive, weight=None, *, n_bins: int = 10,
                     confidence: float = 0.95) -> ReliabilityBins:
    """Observed share of positives per equal-mass bin, with exact intervals.

    Parameters
    ----------
    probability, positive : array-like
    weight : array-like of int, optional
        Counts (e.g. of a count table's cells).
    n_bins : int, default 10
    confidence : float, default 0.95
        Two-sided coverage of each bin's Clopper-Pearson interval.

    Returns
    -------
    ReliabilityBins
        Empty bins (possible with heavy ties) are left out.
    """
    c = check_confidence(confidence)
    p, y, w = _pyw(probability, positive, weight)
    b = equal_mass_bins(p, w, n_bins)
    n = np.bincount(b, weights=w, minlength=n_bins)
    k = np.bincount(b, weights=w * y, minlength=n_bins)
    pred = np.bincount(b, weights=w * p, minlength=n_bins)
    keep = n > 0
    n, k, pred = np.rint(n[keep]).astype(np.int64), np.rint(k[keep]).astype(np.int64), pred[keep]
    lo, hi = stats.clopper_pearson_interval(k, n, c)
    return ReliabilityBins(n, k, pred / n, k / n, np.atleast_1d(lo), np.atleast_1d(hi), c)


def _table_rows(table: CountTable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows ``(score, y, count)`` of every non-empty cell of a count table."""
    pos, neg = table.n_positive > 0, table.n_negative > 0
    s = np.concatenate([table.scores[pos], table.scores[neg]])
    y = np.concatenate([np.ones(int(pos.sum())), np.zeros(int(neg.sum()))])
    w = np.concatenate([table.n_positive[pos], table.n_negative[neg]]).astype(np.float64)
    return s, y, w


@dataclass(frozen=True)
class CalibrationMetrics:
    """How well a map's probabilities match outcomes on held-out data.

    Attributes
    ----------
    brier, log_loss, ece : float
    brier_interval, log_loss_interval, ece_interval : (float, float)
        Bootstrap percentile intervals at ``confidence``.
    bins : ReliabilityBins
    n_positive, n_negative : int
    n_bins, n_resamples, seed : int
    confidence : float
    split : str or None
        The held-out split's name.
    """

    brier: float
    log_loss: float
    ece: float
    brier_interval: tuple[float, float]
    log_loss_interval: tuple[float, float]
    ece_interval: tuple[float, float]
    bins: ReliabilityBins
    n_positive: int
    n_negative: int
    n_bins: int
    n_resamples: int
    seed: int
    confidence: float
    split: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The metrics as plain data (bins as lists)."""
        d = {k: getattr(self, k) for k in (
            "split", "n_positive", "n_negative", "brier", "brier_interval", "log_loss",
            "log_loss_interval", "ece", "ece_interval", "n_bins", "n_resamples", "seed",
            "confidence")}
        d["bins"] = {k: getattr(self.bins, k).tolist() for k in (
            "n", "n_positive", "mean_predicted", "observed", "lower", "upper")}
        return jsonable(d)


def evaluate_calibration(cmap: CalibrationMap, table: CountTable, *, n_bins: int = 10,
                         n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0,
                         split: str | None = None) -> CalibrationMetrics:
    """Brier score, log-loss and ECE of a map on held-out data, with bootstrap intervals.

    The map is applied at its sample prevalence (the prevalence the held-out split
    shares with the calibration split), never refitted. Intervals are percentile
    intervals of ``n_resamples`` multinomial resamples of the table's counts (seeded).

    Parameters
    ----------
    cmap : CalibrationMap
    table : CountTable
        Held-out split of the same (detector, version, label).
    n_bins : int, default 10
        Equal-mass bins of the ECE and the reliability diagram.
    n_resamples : int, default 1000
    confidence : float, default 0.95
    seed : int, default 0
    split : str, optional
        Name of the held-out split, recorded.

    Returns
    -------
    CalibrationMetrics
    """
    c = check_confidence(confidence)
    m = cmap.at_prevalence(cmap.sample_prevalence)
    s, y, w = _table_rows(table)
    p = m.predict(s)
    point = (brier_score(p, y, w), log_loss(p, y, w), expected_calibration_error(p, y, w, n_bins))
    rng = np.random.default_rng(seed)
    draws = rng.multinomial(int(w.sum()), w / w.sum(), size=n_resamples).astype(np.float64)
    pc = np.clip(p, 1e-15, 1 - 1e-15)
    sq = (p - y) ** 2
    nll = -(y * np.log(pc) + (1 - y) * np.log1p(-pc))
    tot = draws.sum(axis=1)
    brier_b = draws @ sq / tot
    ll_b = draws @ nll / tot
    ece_b = np.array([expected_calibration_error(p, y, d, n_bins) if d.any() else np.nan
                      for d in draws])
    a = (1.0 - c) / 2.0

    def ci(v):
        lo, hi = np.nanquantile(v, [a, 1.0 - a])
        return float(lo), float(hi)

    return CalibrationMetrics(
        *point, ci(brier_b), ci(ll_b), ci(ece_b),
        reliability_bins(p, y, w, n_bins=n_bins, confidence=c),
        table.total_positive, table.total_negative, int(n_bins), int(n_resamples), int(seed),
        c, split,
    )
