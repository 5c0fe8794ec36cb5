"""Exact binomial bounds and samples needed.

Bounds are Clopper-Pearson (exact, from the beta distribution in :mod:`scipy.stats`):
the one-sided upper bound ``U(k, n)`` at confidence ``c`` is the largest error rate
under which seeing ``k`` or fewer errors in ``n`` trials still has probability at least
``1 - c``. ``U`` increases with ``k`` and decreases with ``n``; both facts are used
below to answer limit questions with a handful of bound evaluations.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats as _sps

from calibrate.checks import check_confidence as _check_confidence
from calibrate.checks import check_rate as _check_limit
from calibrate.errors import InputError

__all__ = [
    "clopper_pearson_interval",
    "clopper_pearson_lower",
    "clopper_pearson_upper",
    "max_errors_within",
    "poisson_rate_lower",
    "poisson_rate_upper",
    "samples_needed",
    "zero_failure_sample_size",
]


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


def poisson_rate_upper(count, exposure, confidence: float = 0.95):
    """Exact one-sided upper bound of a Poisson rate (events per unit of exposure).

    For counts that are not a share of a fixed number of trials, such as false
    detections per image (an image can hold several): the Garwood bound
    ``chi2.ppf(c, 2 (k + 1)) / (2 n)``, the largest rate under which seeing ``k`` or
    fewer events in ``n`` units still has probability at least ``1 - c``. It assumes
    the events arrive independently at one rate per image; clustered false
    detections (several on one bad image) make it optimistic.

    Parameters
    ----------
    count : int or array-like of int
        Events observed (``>= 0``).
    exposure : int or array-like of int
        Units observed (images, ``> 0``).
    confidence : float, default 0.95

    Returns
    -------
    float or ndarray

    Examples
    --------
    >>> round(float(poisson_rate_upper(0, 1000)), 6)  # about 3/n, as the rule of three
    0.002996
    """
    c = _check_confidence(confidence)
    k = np.asarray(count, dtype=np.float64)
    m = np.asarray(exposure, dtype=np.float64)
    if np.any(k < 0) or np.any(m <= 0):
        raise InputError(f"a Poisson rate needs count >= 0 and exposure > 0; got "
                         f"count={count!r}, exposure={exposure!r}.")
    u = _sps.chi2.ppf(c, 2.0 * (k + 1.0)) / (2.0 * m)
    return float(u) if u.ndim == 0 else u


def poisson_rate_lower(count, exposure, confidence: float = 0.95):
    """Exact one-sided lower bound of a Poisson rate: ``chi2.ppf(1 - c, 2 k) / (2 n)``,
    0 when nothing was counted (see :func:`poisson_rate_upper`).

    Examples
    --------
    >>> round(float(poisson_rate_lower(10, 100)), 5)
    0.05425
    """
    c = _check_confidence(confidence)
    k = np.asarray(count, dtype=np.float64)
    m = np.asarray(exposure, dtype=np.float64)
    if np.any(k < 0) or np.any(m <= 0):
        raise InputError(f"a Poisson rate needs count >= 0 and exposure > 0; got "
                         f"count={count!r}, exposure={exposure!r}.")
    with np.errstate(invalid="ignore"):
        low = np.where(k > 0, _sps.chi2.ppf(1.0 - c, 2.0 * np.maximum(k, 1.0)) / (2.0 * m), 0.0)
    return float(low) if low.ndim == 0 else low


def clopper_pearson_lower(errors, n, confidence: float = 0.95):
    """Exact one-sided lower confidence bound of an error rate.

    A rate limit is *shown to fail* where this bound exceeds it: the errors seen are
    then too many for the limit to hold, whatever more data would show.

    Parameters
    ----------
    errors : int or array-like of int
    n : int or array-like of int
    confidence : float, default 0.95
        One-sided confidence level.

    Returns
    -------
    float or ndarray
        The bound; 0.0 where no error was seen.

    Examples
    --------
    >>> round(float(clopper_pearson_lower(3, 3)), 4)  # (1 - c) ** (1 / n)
    0.3684
    """
    c = _check_confidence(confidence)
    k, m = _check_counts(errors, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        lo = _sps.beta.ppf(1.0 - c, np.maximum(k, 1.0), np.maximum(m - k + 1.0, 1.0))
    lo = np.where(k == 0, 0.0, lo)
    return float(lo) if lo.ndim == 0 else lo


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
