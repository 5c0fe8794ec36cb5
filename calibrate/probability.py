"""What a score means: score -> probability maps, prior shift, and reliability.

A detector's score ranks images; it is not a probability. A *calibration map* turns one
(detector, model version, label)'s score into the probability that the label is truly
present, fitted on the calibration split's count table. It never changes an exact
cutoff (those come from :mod:`calibrate.thresholds`); it explains one ("what does 0.82
mean for v2?") and drives label-free monitoring (:mod:`calibrate.monitor`).

Fitting (:func:`fit_calibration_map`)
-------------------------------------
Candidates, all from scikit-learn and all fitted on the count table with counts as
sample weights (exactly the fit on the expanded rows, never a per-row loop):

* ``logistic`` - Platt scaling: :class:`~sklearn.linear_model.LogisticRegression` on the
  score (practically unpenalised, ``C = 1e4`` on the standardised score, so that
  perfectly separated data still give a finite fit);
* ``logistic_logit`` - the same on ``logit(score)``, for scores on a 0-1 scale;
* ``beta`` - beta calibration (Kull et al. 2017): logistic regression on
  ``ln(s)`` and ``-ln(1 - s)`` for 0-1 scores, refitted without a feature whose
  coefficient comes out negative so the map stays increasing. The ``betacal`` package
  does the same but has had no release since 2021, so it is not used;
* ``isotonic`` - :class:`~sklearn.isotonic.IsotonicRegression`, a candidate only when
  the finite scores hold at least :data:`ISOTONIC_MIN_PER_CLASS` positives *and*
  negatives: with fewer, its steps follow single images.

``method="auto"`` picks the candidate with the lowest cross-validated log-loss
(:data:`CV_FOLDS` folds; each item is assigned to a fold at random, seeded, by splitting
every count-table cell multinomially). Every map is stored as piecewise-linear knots
(isotonic: its own; parametric maps: evaluated on a grid of the score range and the
data's quantiles), held constant outside the calibration scores' range, and clipped to
``[0.5 / (n + 1), 1 - 0.5 / (n + 1)]`` for ``n`` items fitted, so no probability learned
from ``n`` images claims more certainty than that (and log-loss stays finite).

"No result" and the detection floor
-----------------------------------
Images with no result for the label (score ``-inf``) are not fitted: they get their own
probability, ``(k + 0.5) / (n + 1)`` from the ``k`` positives among the ``n``
no-result images (the Jeffreys posterior mean), with an exact interval. When the
detector cannot report scores below a floor, a score under the floor is what the
calibration data would have recorded as "no result", and is treated as such.

Prior shift
-----------
Labeled sets are enriched with defects, so a map fitted on them states probabilities at
the *sample's* prevalence. :func:`prior_shift` moves a probability to the line's
prevalence with Bayes' rule on the odds: ``odds' = odds * [pi' / (1 - pi')] / [pi / (1 -
pi)]``. This assumes the label's positives and negatives each look the same in the
sample and on the line (pure label shift). In the bundled parts set, a label's
negatives include other defect types, which are also enriched in the sample; the
correction ignores that.

Reliability on held-out data is in :mod:`calibrate.reliability`; what a score means
on the line (score bands, a cutoff's P(present | fired)) in :mod:`calibrate.score_meaning`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import numpy as np

from calibrate.checks import check_prevalence
from calibrate.curves import CountTable, count_table
from calibrate.errors import InputError
from calibrate.io import jsonable
from calibrate.version import __version__

__all__ = [
    "CV_FOLDS",
    "FORMAT",
    "ISOTONIC_MIN_PER_CLASS",
    "METHODS",
    "CalibrationMap",
    "calibration_map_from_dict",
    "calibration_map_from_store",
    "fit_calibration_map",
    "map_bootstrap",
    "map_file_name",
    "prior_shift",
]

#: Version of the exported map format (:meth:`CalibrationMap.to_dict`).
FORMAT = "calibrate.calibration-map/1"
#: Every fitting method, simplest first (a tie in cross-validated log-loss goes to the
#: earlier one).
METHODS = ("logistic", "logistic_logit", "beta", "isotonic")
#: Isotonic regression is a candidate only with at least this many positives and this
#: many negatives among the finite scores.
ISOTONIC_MIN_PER_CLASS = 50
#: Folds of the cross-validation that chooses the method.
CV_FOLDS = 5
_C = 1e4  # inverse penalty on standardised features: practically unpenalised
_GRID = 201  # knots of a parametric map: a uniform grid ...
_QUANTILES = 101  # ... plus the data's quantiles
_EPS01 = 1e-6  # 0-1 scores are clipped into (eps, 1 - eps) before logit / log


# ---------------------------------------------------------------------------------------
# Prior shift
# ---------------------------------------------------------------------------------------


def prior_shift(probability, sample_prevalence: float, prevalence: float):
    """Move probabilities from the sample's prevalence to another (Bayes odds correction).

    ``odds' = odds * [prevalence / (1 - prevalence)] / [sample_prevalence / (1 -
    sample_prevalence)]``, which is exact when the class-conditional score
    distributions are the same in the sample and at the new prevalence.

    Parameters
    ----------
    probability : float or array-like
        ``P(present | score)`` at ``sample_prevalence``.
    sample_prevalence, prevalence : float
        Strictly between 0 and 1.

    Returns
    -------
    float or ndarray

    Examples
    --------
    >>> round(prior_shift(0.5, 0.2, 0.02), 4)   # a 50/50 image in an enriched set
    0.0755
    """
    s = check_prevalence(sample_prevalence, "sample_prevalence")
    t = check_prevalence(prevalence, "prevalence")
    p = np.asarray(probability, dtype=np.float64)
    a = (t / (1.0 - t)) / (s / (1.0 - s))
    with np.errstate(divide="ignore", invalid="ignore"):
        out = a * p / (a * p + (1.0 - p))
    out = np.where(p >= 1.0, 1.0, np.where(p <= 0.0, 0.0, out))
    return float(out) if out.ndim == 0 else out


# ---------------------------------------------------------------------------------------
# Fitting
# ---------------------------------------------------------------------------------------


class _Weighted(NamedTuple):
    """A count table with a weight per cell: ``n_*`` items, weighing ``w_*`` in all.

    Plain count tables have ``w = n``; composition-weighted data (each image weighted by
    its class's line share over its sample share) have other weights.
    """

    scores: np.ndarray
    n_positive: np.ndarray
    n_negative: np.ndarray
    w_positive: np.ndarray
    w_negative: np.ndarray


def _weighted(table_or_scores, positive=None, weight=None) -> _Weighted:
    if isinstance(table_or_scores, _Weighted):
        return table_or_scores
    if isinstance(table_or_scores, CountTable):
        if positive is not None or weight is not None:
            raise InputError("pass either a CountTable or (scores, positive[, weight]).")
        t = table_or_scores
        return _Weighted(t.scores, t.n_positive, t.n_negative,
                         t.n_positive.astype(np.float64), t.n_negative.astype(np.float64))
    if positive is None:
        raise InputError("pass the ground truth: fit_calibration_map(scores, positive) or a "
                         "CountTable.")
    t = count_table(table_or_scores, positive)
    if weight is None:
        return _weighted(t)
    s = np.asarray(table_or_scores, dtype=np.float64)
    y = np.asarray(positive, dtype=bool)
    w = np.asarray(weight, dtype=np.float64)
    if w.shape != s.shape or np.any(~np.isfinite(w)) or np.any(w < 0):
        raise InputError("weight must hold one finite, non-negative weight per score.")
    idx = np.searchsorted(t.scores, s)
    wp = np.bincount(idx[y], weights=w[y], minlength=t.scores.size)
    wn = np.bincount(idx[~y], weights=w[~y], minlength=t.scores.size)
    return _Weighted(t.scores, t.n_positive, t.n_negative, wp, wn)


def _finite_rows(t: _Weighted):
    """Rows ``(score, y, items, weight)`` of the finite part, one per non-empty cell."""
    fin = np.isfinite(t.scores)
    s = t.scores[fin]
    pos, neg = t.n_positive[fin] > 0, t.n_negative[fin] > 0
    x = np.concatenate([s[pos], s[neg]])
    y = np.concatenate([np.ones(int(pos.sum())), np.zeros(int(neg.sum()))])
    n = np.concatenate([t.n_positive[fin][pos], t.n_negative[fin][neg]])
    w = np.concatenate([t.w_positive[fin][pos], t.w_negative[fin][neg]]).astype(np.float64)
    return x, y, n, w


def _features(method: str, x: np.ndarray) -> np.ndarray:
    if method == "logistic":
        return x[:, None]
    c = np.clip(x, _EPS01, 1.0 - _EPS01)
    if method == "logistic_logit":
        return (np.log(c) - np.log1p(-c))[:, None]
    return np.column_stack([np.log(c), -np.log1p(-c)])  # beta


def _logistic(F: np.ndarray, y: np.ndarray, w: np.ndarray):
    """A weighted logistic fit on standardised features; returns ``F -> p``."""
    from sklearn.linear_model import LogisticRegression

    mean = np.average(F, axis=0, weights=w)
    sd = np.sqrt(np.average((F - mean) ** 2, axis=0, weights=w))
    sd = np.where(sd > 0, sd, 1.0)
    model = LogisticRegression(C=_C, solver="newton-cholesky", max_iter=200).fit((F - mean) / sd, y, sample_weight=w)
    coef = model.coef_[0] / sd
    icpt = float(model.intercept_[0] - np.dot(model.coef_[0], mean / sd))
    return coef, icpt


def _fit_function(method: str, x: np.ndarray, y: np.ndarray, w: np.ndarray):
    """Fit ``method`` on weighted rows; return ``f(scores) -> probabilities``."""
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
        iso.fit(x, y, sample_weight=w)
        return iso.predict
    F = _features(method, x)
    coef, icpt = _logistic(F, y, w)
    if method == "beta" and np.any(coef < 0):
        # Beta calibration keeps both coefficients >= 0 (an increasing map): refit with
        # the feature whose coefficient is positive only, as betacal does.
        keep = int(np.argmax(coef))
        c1, icpt = _logistic(F[:, [keep]], y, w)
        coef = np.zeros(2)
        coef[keep] = c1[0]

    def f(s, coef=coef, icpt=icpt):
        z = _features(method, np.asarray(s, dtype=np.float64)) @ coef + icpt
        return 1.0 / (1.0 + np.exp(-z))

    return f


def _candidates(x: np.ndarray, y: np.ndarray, w: np.ndarray) -> list[str]:
    out = ["logistic"]
    if x.size and x.min() >= 0.0 and x.max() <= 1.0:
        out += ["logistic_logit", "beta"]
    if w[y == 1].sum() >= ISOTONIC_MIN_PER_CLASS and w[y == 0].sum() >= ISOTONIC_MIN_PER_CLASS:
        out.append("isotonic")
    return out


def _clip_bounds(n: float) -> tuple[float, float]:
    e = 0.5 / (n + 1.0)
    return e, 1.0 - e


def _weighted_log_loss(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    p = np.clip(p, 1e-15, 1.0 - 1e-15)
    return float(-(w * (y * np.log(p) + (1.0 - y) * np.log1p(-p))).sum() / w.sum())


def _cv_log_loss(method: str, x, y, n, w, folds: int, seed: int) -> float:
    """Cross-validated log-loss: every item goes to a random fold (each cell's items
    split multinomially, carrying their weight), each fold predicted by the fit on the
    others."""
    rng = np.random.default_rng(seed)
    parts = rng.multinomial(n.astype(np.int64), np.full(folds, 1.0 / folds))
    per_item = w / np.maximum(n, 1)
    total, loss = 0.0, 0.0
    for k in range(folds):
        test = parts[:, k] * per_item
        train = w - test
        tr = train > 1e-12
        if test.sum() == 0 or len(set(y[tr])) < 2:
            continue
        f = _fit_function(method, x[tr], y[tr], train[tr])
        lo, hi = _clip_bounds(n[tr].sum())
        te = test > 0
        p = np.clip(f(x[te]), lo, hi)
        loss += _weighted_log_loss(p, y[te], test[te]) * test[te].sum()
        total += test[te].sum()
    return loss / total if total else math.inf


def _knots(method: str, f, x: np.ndarray, w: np.ndarray, n: float) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = _clip_bounds(n)
    if method == "isotonic":
        grid = np.unique(x)
    else:
        order = np.argsort(x)
        cum = np.cumsum(w[order])
        q = np.searchsorted(cum, np.linspace(0, cum[-1], _QUANTILES), side="left")
        grid = np.unique(np.concatenate([
            np.linspace(x.min(), x.max(), _GRID), x[order][np.clip(q, 0, x.size - 1)]]))
    return grid, np.clip(f(grid), lo, hi)


@dataclass(frozen=True)
class CalibrationMap:
    """Score -> probability that the label is present, for one (detector, version, label).

    Piecewise linear between ``scores`` (ascending) and ``probabilities``, constant
    outside them; ``-inf`` ("no result") and scores below ``detection_floor`` get
    ``no_result_probability``. All probabilities are at ``prevalence``.

    Attributes
    ----------
    scores, probabilities : ndarray
        The knots.
    prevalence : float
        The prevalence the probabilities are stated at.
    sample_prevalence : float
        The calibration data's share of positives (the prevalence it was fitted at).
    no_result_probability : float or None
        None when the calibration data had no image without a result.
    no_result_counts : (int, int)
        Positives and negatives among the calibration images with no result.
    method : str
        One of :data:`METHODS`.
    cv_log_loss : dict
        Cross-validated log-loss of each candidate (empty for a method given).
    n_positive, n_negative : int
        Images fitted (finite scores and no result together).
    detection_floor : float or None
    detector, model_version, label, unit, dataset, dataset_fingerprint, split : str or None
        What the map belongs to; a map is refused for any other model version.
    """

    scores: np.ndarray = field(repr=False)
    probabilities: np.ndarray = field(repr=False)
    prevalence: float
    sample_prevalence: float
    no_result_probability: float | None
    no_result_counts: tuple[int, int]
    method: str
    cv_log_loss: dict[str, float]
    n_positive: int
    n_negative: int
    detection_floor: float | None = None
    detector: str | None = None
    model_version: str | None = None
    label: str | None = None
    unit: str = "image"
    dataset: str | None = None
    dataset_fingerprint: str | None = None
    split: str | None = None

    def predict(self, scores, *, model_version: str | None = None) -> np.ndarray:
        """``P(present | score)`` at :attr:`prevalence` for each score.

        Parameters
        ----------
        scores : array-like of float
            In the detector's scale; ``-inf`` for no result (NaN is refused).
        model_version : str, optional
            The version that produced ``scores``; refused when it is not the map's.

        Returns
        -------
        ndarray of float
        """
        self.require_version(model_version)
        s = np.asarray(scores, dtype=np.float64)
        if np.isnan(s).any():
            raise InputError("scores contain NaN; a failed detector call has no score: "
                             "leave it out, and use -inf for 'no result'.")
        none = ~np.isfinite(s)
        if self.detection_floor is not None:
            none |= s < self.detection_floor
        out = np.interp(np.where(none, self.scores[0], s), self.scores, self.probabilities)
        if none.any():
            if self.no_result_probability is None:
                raise InputError(
                    f"{int(none.sum())} score(s) are 'no result' (-inf"
                    + ("" if self.detection_floor is None else
                       f" or below the detection floor {self.detection_floor:g}")
                    + f"), but {self.label or 'the label'}'s calibration data had no such "
                    "image, so their probability is unknown."
                )
            out = np.where(none, self.no_result_probability, out)
        return out

    def require_version(self, model_version: str | None) -> None:
        """Refuse to apply the map to another model version than its own."""
        if model_version is not None and self.model_version is not None \
                and str(model_version) != self.model_version:
            raise InputError(
                f"this calibration map belongs to {self.detector} {self.model_version} "
                f"({self.label}); scores of {model_version} mean something else. Fit a "
                f"map for {model_version}: calibrate calibration --model-version "
                f"{model_version} ... --export-maps DIR."
            )

    def at_prevalence(self, prevalence: float) -> CalibrationMap:
        """The same map with its probabilities stated at another prevalence."""
        t = check_prevalence(prevalence)

        def shift(p):
            return None if p is None else prior_shift(p, self.prevalence, t)

        return replace(self, probabilities=shift(self.probabilities), prevalence=t,
                       no_result_probability=shift(self.no_result_probability))

    def to_dict(self) -> dict[str, Any]:
        """The map as versioned plain data (what :func:`calibration_map_from_dict` and
        the pure-Python reader in ``docs/calibration.md`` read)."""
        return jsonable({
            "format": FORMAT,
            "rule": "P(present | score) at 'prevalence': linear between knots, constant "
                    "outside them; no result (or a score below detection_floor) -> "
                    "no_result_probability",
            "detector": self.detector, "model_version": self.model_version,
            "label": self.label, "unit": self.unit, "dataset": self.dataset,
            "dataset_fingerprint": self.dataset_fingerprint, "split": self.split,
            "method": self.method, "prevalence": self.prevalence,
            "sample_prevalence": self.sample_prevalence,
            "n_positive": self.n_positive, "n_negative": self.n_negative,
            "detection_floor": self.detection_floor,
            "no_result_probability": self.no_result_probability,
            "no_result_counts": list(self.no_result_counts),
            "cv_log_loss": self.cv_log_loss,
            "knots": {"score": [float(v) for v in self.scores],
                      "probability": [float(v) for v in self.probabilities]},
            "tool_version": __version__,
        })


def calibration_map_from_dict(data: dict[str, Any], *, where: str = "calibration map") -> CalibrationMap:
    """Read a map written by :meth:`CalibrationMap.to_dict` (e.g. ``json.load``-ed).

    Raises
    ------
    InputError
        When the format is not :data:`FORMAT` or a key is missing or malformed.
    """
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(f"{where} is not a calibrate calibration map (expected \"format\": "
                         f"\"{FORMAT}\").")
    try:
        knots = data["knots"]
        xs = np.asarray(knots["score"], dtype=np.float64)
        ps = np.asarray(knots["probability"], dtype=np.float64)
        nr = data.get("no_result_probability")
        floor = data.get("detection_floor")
        out = CalibrationMap(
            scores=xs, probabilities=ps, prevalence=float(data["prevalence"]),
            sample_prevalence=float(data["sample_prevalence"]),
            no_result_probability=None if nr is None else float(nr),
            no_result_counts=tuple(int(v) for v in data.get("no_result_counts", (0, 0))),
            method=str(data["method"]), cv_log_loss=dict(data.get("cv_log_loss", {})),
            n_positive=int(data["n_positive"]), n_negative=int(data["n_negative"]),
            detection_floor=None if floor is None else float(floor),
            detector=data.get("detector"), model_version=data.get("model_version"),
            label=data.get("label"), unit=str(data.get("unit", "image")),
            dataset=data.get("dataset"), dataset_fingerprint=data.get("dataset_fingerprint"),
            split=data.get("split"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"{where}: missing or malformed key ({exc}).") from None
    if xs.ndim != 1 or xs.size == 0 or xs.shape != ps.shape or np.any(np.diff(xs) <= 0) \
            or not np.all(np.isfinite(xs)) or np.any((ps < 0) | (ps > 1)):
        raise InputError(f"{where}: knots must be equally long, with ascending finite scores "
                         "and probabilities in [0, 1].")
    return out


def _no_result(t: _Weighted, floor: float | None):
    """The finite part of a weighted table, and the items and weights with no result
    (scores below the detection floor count as no result): ``(part, k, m, kw, mw)``."""
    none = ~np.isfinite(t.scores)
    if floor is not None:
        none |= t.scores < floor
    keep = ~none
    part = _Weighted(*(a[keep] for a in t))
    return (part, int(t.n_positive[none].sum()), int(t.n_negative[none].sum()),
            float(t.w_positive[none].sum()), float(t.w_negative[none].sum()))


def fit_calibration_map(
    table_or_scores,
    positive=None,
    *,
    method: str = "auto",
    prevalence: float | None = None,
    detection_floor: float | None = None,
    weight=None,
    seed: int = 0,
    **provenance,
) -> CalibrationMap:
    """Fit a score -> probability map on calibration data.

    Parameters
    ----------
    table_or_scores : CountTable or array-like of float
        The calibration split's count table, or raw scores (then pass ``positive``).
        A table is the image unit's; a detection unit's table fits the same way.
    positive : array-like of bool, optional
        Ground truth when raw scores are given.
    method : {"auto", "logistic", "logistic_logit", "beta", "isotonic"}, default "auto"
        ``auto`` chooses by cross-validated log-loss among the candidates the data
        allow (see the module docstring).
    prevalence : float, optional
        State the map's probabilities at this prevalence (the line's; default the
        sample's).
    detection_floor : float, optional
        Scores below it count as no result.
    weight : array-like of float, optional
        With raw scores: a weight per image, e.g. its class's line share over its sample
        share (:meth:`calibrate.score_meaning.Composition.weights`), so the map states
        probabilities for the line's mix of classes. ``sample_prevalence`` is then the
        weighted share of positives.
    seed : int, default 0
        Seeds the cross-validation folds.
    **provenance
        ``detector``, ``model_version``, ``label``, ``unit``, ``dataset``,
        ``dataset_fingerprint``, ``split``.

    Returns
    -------
    CalibrationMap

    Raises
    ------
    InputError
        When a class is missing among the finite scores, or ``method`` is unknown or not
        allowed by the data.
    """
    wt = _weighted(table_or_scores, positive, weight)
    fin, k_none, m_none, kw_none, mw_none = _no_result(wt, detection_floor)
    x, y, n_items, w = _finite_rows(fin)
    if n_items[y == 1].sum() == 0 or n_items[y == 0].sum() == 0:
        raise InputError(
            f"{provenance.get('label') or 'the label'}: a calibration map needs positives and "
            "negatives with real scores; the calibration data have "
            f"{int(n_items[y == 1].sum())} and {int(n_items[y == 0].sum())}."
        )
    allowed = _candidates(x, y, n_items)
    if method == "auto":
        cv = {m: _cv_log_loss(m, x, y, n_items, w, CV_FOLDS, seed) for m in allowed}
        chosen = min(allowed, key=lambda m: (cv[m], allowed.index(m)))
    elif method in METHODS:
        if method not in allowed:
            raise InputError(
                f"method {method!r} does not fit these data (it needs "
                + ("0-1 scores" if method != "isotonic" else
                   f"at least {ISOTONIC_MIN_PER_CLASS} positives and negatives")
                + f"); the data allow {', '.join(allowed)}."
            )
        cv, chosen = {}, method
    else:
        raise InputError(f"unknown method {method!r}; use auto or one of {', '.join(METHODS)}.")
    xs, ps = _knots(chosen, _fit_function(chosen, x, y, w), x, w, float(n_items.sum()))
    n_pos, n_neg = int(wt.n_positive.sum()), int(wt.n_negative.sum())
    fitted = float(wt.w_positive.sum() / (wt.w_positive.sum() + wt.w_negative.sum()))
    nr = None
    if k_none + m_none:
        # Jeffreys posterior mean, in weighted items (weights average 1 per item).
        scale = (k_none + m_none) / (kw_none + mw_none) if kw_none + mw_none else 1.0
        nr = (kw_none * scale + 0.5) / (k_none + m_none + 1.0)
    out = CalibrationMap(
        scores=xs, probabilities=ps, prevalence=fitted, sample_prevalence=fitted,
        no_result_probability=nr, no_result_counts=(k_none, m_none), method=chosen,
        cv_log_loss=cv, n_positive=n_pos, n_negative=n_neg,
        detection_floor=detection_floor, **provenance,
    )
    return out if prevalence is None else out.at_prevalence(prevalence)


def map_bootstrap(cmap: CalibrationMap, table: CountTable, scores, *, n_resamples: int = 200,
                  seed: int = 0) -> np.ndarray:
    """The map refitted on stratified bootstrap resamples of its calibration table.

    Each class's counts are resampled multinomially with the class total fixed (the
    labeled set's composition is chosen by design), the map's own method is refitted
    (not chosen again) and stated at the map's prevalence.

    Parameters
    ----------
    cmap : CalibrationMap
    table : CountTable
        The table ``cmap`` was fitted on (or the ``(scores, positive, weight)`` it was
        fitted on, as a tuple).
    scores : array-like of float
        Where to evaluate the refitted maps.
    n_resamples : int, default 200
    seed : int, default 0

    Returns
    -------
    ndarray, shape (n_resamples, len(scores))
    """
    rng = np.random.default_rng(seed)
    s = np.asarray(scores, dtype=np.float64)
    out = np.empty((n_resamples, s.size))
    wt = _weighted(*table) if isinstance(table, tuple) and not isinstance(table, _Weighted) \
        else _weighted(table)
    pos, neg = wt.n_positive, wt.n_negative
    n_pos, n_neg = int(pos.sum()), int(neg.sum())
    vp = wt.w_positive / np.maximum(pos, 1)
    vn = wt.w_negative / np.maximum(neg, 1)
    b = 0
    while b < n_resamples:
        rp = rng.multinomial(n_pos, pos / n_pos)
        rn = rng.multinomial(n_neg, neg / n_neg)
        t = _Weighted(wt.scores, rp, rn, rp * vp, rn * vn)
        try:
            m = fit_calibration_map(t, method=cmap.method, detection_floor=cmap.detection_floor)
        except InputError:  # a resample without a finite-scored class: draw again
            continue
        if m.no_result_probability is None and cmap.no_result_probability is not None:
            m = replace(m, no_result_probability=cmap.no_result_probability)
        out[b] = m.at_prevalence(cmap.prevalence).predict(s)
        b += 1
    return out


def calibration_map_from_store(store, detector: str, model_version: str, label: str, *,
                               split: str | None = "calibration", dataset: str | None = None,
                               prevalence: float | None = None, method: str = "auto",
                               seed: int = 0) -> tuple[CalibrationMap, CountTable]:
    """Fit the map of one (detector, version, label) from a score store.

    The count table is computed in the store; the detection floor is the one the
    version's runs recorded, and the dataset fingerprint is recorded with the map.

    Returns
    -------
    (CalibrationMap, CountTable)
        The map and the table it was fitted on.
    """
    table = store.count_table(detector, model_version, label, split=split, dataset=dataset)
    runs = store.runs()
    sel = runs[(runs["detector"] == detector) & (runs["model_version"] == model_version)]
    if dataset is not None:
        sel = sel[sel["dataset"] == dataset]
    floors = [float(f) for f in sel["detection_floor"] if f is not None and f == f]
    ds = fp = None
    if len(sel):
        last = sel.iloc[-1]
        ds, fp = str(last["dataset"]), str(last["dataset_fingerprint"])
    cmap = fit_calibration_map(
        table, method=method, prevalence=prevalence, seed=seed,
        detection_floor=max(floors) if floors else None, detector=detector,
        model_version=model_version, label=label, dataset=ds, dataset_fingerprint=fp,
        split=split,
    )
    return cmap, table


def map_file_name(detector: str, model_version: str, label: str) -> str:
    """A file-name-safe name for one map: ``<detector>--<version>--<label>.map.json``.

    Characters other than letters, digits, ``.``, ``_`` and ``-`` become ``-``, with a
    short hash of the original when anything changed, so two labels never collide.
    """
    import hashlib
    import re

    parts = []
    for p in (detector, model_version, label):
        s = re.sub(r"[^A-Za-z0-9._-]+", "-", str(p)).strip("-.") or "x"
        if s != str(p):
            s = f"{s[:40]}-{hashlib.sha1(str(p).encode('utf-8')).hexdigest()[:6]}"
        parts.append(s)
    return "--".join(parts) + ".map.json"
