"""False-positive / false-negative curves: the exact core every other module reuses.

Everything ``calibrate`` computes about a label (curves, thresholds, confidence bounds,
bootstrap) needs only one thing from the data: for every distinct score, how many
positives and how many negatives have it. That is a :class:`CountTable`. It is built
here from raw arrays by sorting each class once and merging the two sorted runs, or it
arrives ready-made from the score store's ``GROUP BY``.

Conventions (see ``DESIGN.md``):

* A rule *fires* when ``score >= threshold``.
* A missing result (the detector returned nothing for the label on that image) is a
  score of ``-inf``: it ranks below every real score, and only a threshold of ``-inf``
  (fire on everything) fires on it.
* Curves are neutral: false positives are negatives that fire, false negatives are
  positives that do not fire. :mod:`calibrate.thresholds` names them false accepts or
  false rejects according to the label's action.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from calibrate.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "CountTable",
    "EqualErrorRate",
    "ErrorCurve",
    "count_table",
    "error_curve",
    "require_both_classes",
]


# ---------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------


def _as_scores(scores, name: str = "scores") -> np.ndarray:
    """Return ``scores`` as a 1-D float64 array, or raise :class:`InputError`."""
    try:
        arr = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"{name} must be numbers; could not convert them to float ({exc}). "
            "Pass a 1-D array of scores in the detector's own scale."
        ) from None
    if arr.ndim != 1:
        raise InputError(
            f"{name} must be a 1-D array, got shape {arr.shape}. "
            "Pass one score per image (the highest score of the label in that image)."
        )
    if arr.size and np.isnan(arr.sum()):
        # The sum is NaN only if an element is NaN or +inf and -inf meet; check properly.
        bad = np.flatnonzero(np.isnan(arr))
        if bad.size:
            raise InputError(
                f"{name} contains {bad.size} NaN value(s), first at index {bad[0]}. "
                "A NaN is not a score: record an image with no result for the label as "
                "-inf, and keep failed detector calls out of the scores altogether."
            )
    if arr.size and np.isposinf(arr.max()):
        bad = np.flatnonzero(np.isposinf(arr))
        raise InputError(
            f"{name} contains +inf, first at index {bad[0]}. +inf is reserved for the "
            "threshold 'never fire'; scores must be finite, or -inf for 'no result'."
        )
    return arr


def _as_truth(positive, n: int, name: str = "positive") -> np.ndarray:
    """Return ``positive`` as a 1-D bool array of length ``n``, or raise InputError."""
    arr = np.asarray(positive)
    if arr.ndim != 1:
        raise InputError(f"{name} must be a 1-D array, got shape {arr.shape}.")
    if arr.shape[0] != n:
        raise InputError(
            f"scores and {name} must have the same length, got {n} scores and "
            f"{arr.shape[0]} truth values. Pass exactly one truth value per score."
        )
    if arr.dtype == np.bool_:
        return arr
    if arr.size == 0:
        return arr.astype(bool)
    if np.issubdtype(arr.dtype, np.integer):
        if arr.size and (arr.min() < 0 or arr.max() > 1):
            raise InputError(
                f"{name} must be boolean (True = the label is really present); got "
                f"integers outside 0/1 (min {arr.min()}, max {arr.max()})."
            )
        return arr.astype(bool)
    raise InputError(
        f"{name} must be boolean (True = the label is really present), got dtype "
        f"{arr.dtype}. Convert it explicitly, e.g. positive = (truth == 'defect')."
    )


# ---------------------------------------------------------------------------------------
# Count table: the exact core
# ---------------------------------------------------------------------------------------


def _run_lengths(sorted_values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distinct values of an ascending array and how often each occurs."""
    if sorted_values.size == 0:
        return sorted_values, np.zeros(0, dtype=np.int64)
    new = np.empty(sorted_values.size, dtype=bool)
    new[0] = True
    np.not_equal(sorted_values[1:], sorted_values[:-1], out=new[1:])
    if new.all():  # continuous scores: no ties, skip the gather
        return sorted_values, np.ones(sorted_values.size, dtype=np.int64)
    starts = np.flatnonzero(new)
    counts = np.diff(np.append(starts, sorted_values.size))
    return sorted_values[starts], counts.astype(np.int64, copy=False)


def _merge_runs(
    neg_values: np.ndarray,
    neg_counts: np.ndarray,
    pos_values: np.ndarray,
    pos_counts: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge two ascending distinct-value runs into one table of (value, n_pos, n_neg).

    A stable argsort of two concatenated sorted runs is a single linear merge (timsort
    finds the two runs), which is why each class is sorted on its own first.
    """
    values = np.concatenate([neg_values, pos_values])
    if values.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return values, empty, empty.copy()
    order = np.argsort(values, kind="stable")
    merged = values[order]
    from_pos = order >= neg_values.size
    # The merge keeps each run's own order, so the positives' counts land in the merged
    # array in sequence: a masked store instead of a gather.
    if (pos_counts.size == 0 or pos_counts.max() == 1) and (
        neg_counts.size == 0 or neg_counts.max() == 1
    ):
        # No ties within a class (continuous scores): the counts are the flags themselves.
        pos = from_pos.astype(np.int64)
        neg = 1 - pos
    else:
        pos = np.zeros(merged.size, dtype=np.int64)
        neg = np.zeros(merged.size, dtype=np.int64)
        pos[from_pos] = pos_counts
        neg[~from_pos] = neg_counts
    new = np.empty(merged.size, dtype=bool)
    new[0] = True
    np.not_equal(merged[1:], merged[:-1], out=new[1:])
    if new.all():
        return merged, pos, neg
    starts = np.flatnonzero(new)
    return merged[starts], np.add.reduceat(pos, starts), np.add.reduceat(neg, starts)


@dataclass(frozen=True, eq=False)
class CountTable:
    """How many positives and negatives have each distinct score.

    This is all that curves, thresholds, bounds and the bootstrap need, so it is what
    travels between the score store and the statistics: the store computes it with one
    SQL ``GROUP BY`` and only the table leaves the database.

    Attributes
    ----------
    scores : ndarray of float64, shape (k,)
        Distinct scores, ascending. May start with ``-inf`` (images with no result).
    n_positive : ndarray of int64, shape (k,)
        Number of positive items (label truly present) with each score.
    n_negative : ndarray of int64, shape (k,)
        Number of negative items with each score.
    """

    scores: np.ndarray
    n_positive: np.ndarray
    n_negative: np.ndarray

    @classmethod
    def from_counts(cls, scores, n_positive, n_negative) -> CountTable:
        """Build a table from per-score counts, e.g. the rows of a SQL ``GROUP BY``.

        Rows need not be sorted, and a score may appear on several rows (its counts are
        added), so partial aggregates from several sources can be combined directly.

        Parameters
        ----------
        scores : array-like of float, shape (k,)
            Scores; ``-inf`` for "no result", never NaN or ``+inf``.
        n_positive, n_negative : array-like of int, shape (k,)
            Non-negative counts of positives and negatives with each score.

        Returns
        -------
        CountTable
        """
        s = _as_scores(scores)
        counts = []
        for name, c in (("n_positive", n_positive), ("n_negative", n_negative)):
            arr = np.asarray(c)
            if arr.shape != s.shape:
                raise InputError(
                    f"{name} must have one count per score: got shape {arr.shape} for "
                    f"{s.shape[0]} scores."
                )
            if arr.size and not np.issubdtype(arr.dtype, np.integer):
                if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
                    raise InputError(f"{name} must hold whole numbers (counts of items).")
            arr = arr.astype(np.int64)
            if arr.size and arr.min() < 0:
                raise InputError(f"{name} must be non-negative counts; found {arr.min()}.")
            counts.append(arr)
        order = np.argsort(s, kind="stable")
        s, pos, neg = s[order], counts[0][order], counts[1][order]
        keep = (pos + neg) > 0
        s, pos, neg = s[keep], pos[keep], neg[keep]
        if s.size:
            new = np.empty(s.size, dtype=bool)
            new[0] = True
            np.not_equal(s[1:], s[:-1], out=new[1:])
            if not new.all():
                starts = np.flatnonzero(new)
                s, pos, neg = (
                    s[starts],
                    np.add.reduceat(pos, starts),
                    np.add.reduceat(neg, starts),
                )
        return cls(s, pos, neg)

    @property
    def total_positive(self) -> int:
        """Number of positive items in the table."""
        return int(self.n_positive.sum())

    @property
    def total_negative(self) -> int:
        """Number of negative items in the table."""
        return int(self.n_negative.sum())

    def __len__(self) -> int:
        return int(self.scores.size)

    def to_frame(self) -> pd.DataFrame:
        """The table as a DataFrame with columns ``score, n_positive, n_negative``."""
        import pandas as pd

        return pd.DataFrame(
            {"score": self.scores, "n_positive": self.n_positive, "n_negative": self.n_negative}
        )


def count_table(scores, positive) -> CountTable:
    """Count positives and negatives per distinct score, exactly.

    Each class is sorted once and the two sorted runs are merged, which costs about one
    sort of the whole array.

    Parameters
    ----------
    scores : array-like of float, shape (n,)
        One score per item in the detector's own scale; ``-inf`` for "no result".
    positive : array-like of bool, shape (n,)
        True where the label is really present (ground truth).

    Returns
    -------
    CountTable

    Raises
    ------
    InputError
        On NaN or ``+inf`` scores, mismatched lengths or non-boolean truth.
    """
    s = _as_scores(scores)
    y = _as_truth(positive, s.shape[0])
    pos = np.compress(y, s)
    neg = np.compress(~y, s)
    pos.sort()
    neg.sort()
    pv, pc = _run_lengths(pos)
    nv, nc = _run_lengths(neg)
    return CountTable(*_merge_runs(nv, nc, pv, pc))


# ---------------------------------------------------------------------------------------
# Error curve
# ---------------------------------------------------------------------------------------


class EqualErrorRate(NamedTuple):
    """Where the false-positive and false-negative rates are closest.

    Attributes
    ----------
    rate : float
        Mean of the two rates at that threshold (the equal error rate).
    threshold : float
        The threshold (fire when ``score >= threshold``); ``+inf`` means never fire.
    false_positive_rate, false_negative_rate : float
        The two rates at that threshold; they differ when no threshold makes them equal.
    """

    rate: float
    threshold: float
    false_positive_rate: float
    false_negative_rate: float


@dataclass(frozen=True, eq=False)
class ErrorCurve:
    """Exact false-positive and false-negative counts at every distinct score.

    Threshold ``thresholds[i]`` means "fire when ``score >= thresholds[i]``". The
    thresholds are the distinct scores in descending order, so the last one fires on
    every item. "Never fire" (threshold ``+inf``: no false positives, every positive
    missed) is not listed but is considered by :func:`calibrate.choose_threshold` and
    :meth:`equal_error_rate`.

    Attributes
    ----------
    thresholds : ndarray of float64, shape (k,)
        Distinct scores, descending.
    false_positives : ndarray of int64, shape (k,)
        Negatives with ``score >= threshold``.
    false_negatives : ndarray of int64, shape (k,)
        Positives with ``score < threshold``.
    n_positive, n_negative : int
        Class sizes.

    See Also
    --------
    error_curve : build the curve from scores and truth.
    """

    thresholds: np.ndarray
    false_positives: np.ndarray
    false_negatives: np.ndarray
    n_positive: int
    n_negative: int

    @classmethod
    def from_count_table(cls, table: CountTable) -> ErrorCurve:
        """Build the curve from a :class:`CountTable`.

        Raises
        ------
        InputError
            If either class has no items: its error rate would be undefined.
        """
        n_pos, n_neg = table.total_positive, table.total_negative
        require_both_classes(n_pos, n_neg)
        fp = np.cumsum(table.n_negative[::-1])
        fn = np.cumsum(table.n_positive[::-1])
        np.subtract(n_pos, fn, out=fn)
        return cls(table.scores[::-1], fp, fn, n_pos, n_neg)

    @property
    def true_positives(self) -> np.ndarray:
        """Positives with ``score >= threshold``."""
        return self.n_positive - self.false_negatives

    @property
    def true_negatives(self) -> np.ndarray:
        """Negatives with ``score < threshold``."""
        return self.n_negative - self.false_positives

    @property
    def false_positive_rate(self) -> np.ndarray:
        """Share of negatives that fire: ``false_positives / n_negative``."""
        return self.false_positives / self.n_negative

    @property
    def false_negative_rate(self) -> np.ndarray:
        """Share of positives that do not fire: ``false_negatives / n_positive``."""
        return self.false_negatives / self.n_positive

    @property
    def has_ranking_information(self) -> bool:
        """False when every item has the same score, so no threshold separates classes."""
        return self.thresholds.size > 1

    def __len__(self) -> int:
        return int(self.thresholds.size)

    def with_never_fire(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Thresholds and counts with the "never fire" point (``+inf``) prepended.

        Returns
        -------
        thresholds, false_positives, false_negatives : ndarray
            Arrays of length ``len(self) + 1``; this is the full candidate set for a
            threshold choice.
        """
        thr = np.concatenate([[np.inf], self.thresholds])
        fp = np.concatenate([[0], self.false_positives])
        fn = np.concatenate([[self.n_positive], self.false_negatives])
        return thr, fp, fn

    def equal_error_rate(self) -> EqualErrorRate:
        """The threshold where false-positive and false-negative rates are closest.

        Candidates are every distinct score plus "never fire". With discrete data the
        two rates rarely meet exactly; the threshold minimising ``|FPR - FNR|`` is taken
        (the highest such threshold on ties) and the equal error rate is the mean of the
        two rates there, so the value is reproducible by brute force.

        Returns
        -------
        EqualErrorRate
        """
        thr, fp, fn = self.with_never_fire()
        fpr = fp / self.n_negative
        fnr = fn / self.n_positive
        i = int(np.argmin(np.abs(fpr - fnr)))
        return EqualErrorRate(
            float((fpr[i] + fnr[i]) / 2), float(thr[i]), float(fpr[i]), float(fnr[i])
        )

    def counts_at(self, threshold: float) -> tuple[int, int]:
        """False positives and false negatives when firing on ``score >= threshold``.

        Works for any threshold, not only the listed ones (a deployed threshold from an
        older model version, say).

        Returns
        -------
        false_positives, false_negatives : int
        """
        t = float(threshold)
        if np.isnan(t):
            raise InputError("threshold must be a number, got NaN.")
        # thresholds are descending: items firing are those at indices with thr >= t.
        k = int(np.searchsorted(-self.thresholds, -t, side="right"))
        if k == 0:
            return 0, int(self.n_positive)
        return int(self.false_positives[k - 1]), int(self.false_negatives[k - 1])

    def to_frame(self) -> pd.DataFrame:
        """The curve as a DataFrame, one row per threshold (descending)."""
        import pandas as pd

        return pd.DataFrame(
            {
                "threshold": self.thresholds,
                "false_positives": self.false_positives,
                "false_negatives": self.false_negatives,
                "false_positive_rate": self.false_positive_rate,
                "false_negative_rate": self.false_negative_rate,
            }
        )


def require_both_classes(n_pos: int, n_neg: int) -> None:
    if n_pos == 0 or n_neg == 0:
        missing = "positive" if n_pos == 0 else "negative"
        raise InputError(
            f"the data has no {missing} items ({n_pos} positive, {n_neg} negative), so the "
            f"{'false-negative' if n_pos == 0 else 'false-positive'} rate is undefined. "
            f"Add labeled {missing} examples for this label before choosing a threshold."
        )


def error_curve(scores, positive=None) -> ErrorCurve:
    """Exact false-positive / false-negative curve of one label.

    Parameters
    ----------
    scores : array-like of float, shape (n,), or CountTable
        One score per item in the detector's own scale (the image's highest score for
        the label); ``-inf`` where the detector returned no result. A ready
        :class:`CountTable` may be passed instead, with ``positive`` omitted.
    positive : array-like of bool, shape (n,)
        True where the label is really present.

    Returns
    -------
    ErrorCurve
        Counts and rates at every distinct score, thresholds descending.

    Raises
    ------
    InputError
        On NaN or ``+inf`` scores, mismatched lengths, non-boolean truth, or a class
        with no items.

    Examples
    --------
    >>> import numpy as np, calibrate
    >>> curve = calibrate.error_curve(np.array([0.9, 0.8, 0.8, 0.1]),
    ...                               np.array([True, True, False, False]))
    >>> curve.thresholds
    array([0.9, 0.8, 0.1])
    >>> curve.false_positives, curve.false_negatives
    (array([0, 1, 2]), array([1, 0, 0]))
    """
    if isinstance(scores, CountTable):
        if positive is not None:
            raise InputError("pass either a CountTable or scores and positive, not both.")
        return ErrorCurve.from_count_table(scores)
    if positive is None:
        raise InputError("positive (the ground truth per score) is required with raw scores.")
    return ErrorCurve.from_count_table(count_table(scores, positive))
