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

Reliability (:func:`evaluate_calibration`)
------------------------------------------
On a held-out count table: Brier score, log-loss and expected calibration error (ECE)
with equal-mass bins, each with a seeded bootstrap percentile interval (multinomial
resampling of the table's counts, the map held fixed), and per bin the observed share of
positives with its exact Clopper-Pearson interval (the reliability diagram). They are
computed at the sample's prevalence, the one the held-out split shares with the
calibration split.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from calibrate import stats
from calibrate.checks import check_confidence, check_prevalence
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
    "CalibrationMetrics",
    "CutoffMeaning",
    "LabelCalibration",
    "ReliabilityBins",
    "ScoreMeaning",
    "brier_score",
    "calibration_map_from_dict",
    "calibration_map_from_store",
    "cutoff_meaning",
    "equal_mass_bins",
    "evaluate_calibration",
    "expected_calibration_error",
    "fit_calibration_map",
    "label_calibrations",
    "log_loss",
    "map_file_name",
    "map_bootstrap",
    "prior_shift",
    "reliability_bins",
    "score_meaning",
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


def _finite_rows(table: CountTable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows ``(score, y, weight)`` of the finite part of a count table, one per
    non-empty (score, class) cell."""
    fin = np.isfinite(table.scores)
    s, pos, neg = table.scores[fin], table.n_positive[fin], table.n_negative[fin]
    x = np.concatenate([s[pos > 0], s[neg > 0]])
    y = np.concatenate([np.ones(int((pos > 0).sum())), np.zeros(int((neg > 0).sum()))])
    w = np.concatenate([pos[pos > 0], neg[neg > 0]]).astype(np.float64)
    return x, y, w


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


def _cv_log_loss(method: str, x, y, w, folds: int, seed: int) -> float:
    """Cross-validated log-loss: every item goes to a random fold (each cell's count
    split multinomially), each fold predicted by the fit on the others."""
    rng = np.random.default_rng(seed)
    parts = rng.multinomial(w.astype(np.int64), np.full(folds, 1.0 / folds))
    total, loss = 0.0, 0.0
    for k in range(folds):
        test = parts[:, k].astype(np.float64)
        train = w - test
        tr = train > 0
        if test.sum() == 0 or len(set(y[tr])) < 2:
            continue
        f = _fit_function(method, x[tr], y[tr], train[tr])
        lo, hi = _clip_bounds(train.sum())
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


def _as_table(table_or_scores, positive) -> CountTable:
    if isinstance(table_or_scores, CountTable):
        if positive is not None:
            raise InputError("pass either a CountTable or (scores, positive), not both.")
        return table_or_scores
    if positive is None:
        raise InputError("pass the ground truth: fit_calibration_map(scores, positive) or a "
                         "CountTable.")
    return count_table(table_or_scores, positive)


def _no_result(table: CountTable, floor: float | None) -> tuple[CountTable, int, int]:
    """The finite part of a table and the positives / negatives with no result (scores
    below the detection floor count as no result)."""
    none = ~np.isfinite(table.scores)
    if floor is not None:
        none |= table.scores < floor
    k, m = int(table.n_positive[none].sum()), int(table.n_negative[none].sum())
    keep = ~none
    return (CountTable(table.scores[keep], table.n_positive[keep], table.n_negative[keep]),
            k, m)


def fit_calibration_map(
    table_or_scores,
    positive=None,
    *,
    method: str = "auto",
    prevalence: float | None = None,
    detection_floor: float | None = None,
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
    table = _as_table(table_or_scores, positive)
    fin, k_none, m_none = _no_result(table, detection_floor)
    x, y, w = _finite_rows(fin)
    if w[y == 1].sum() == 0 or w[y == 0].sum() == 0:
        raise InputError(
            f"{provenance.get('label') or 'the label'}: a calibration map needs positives and "
            "negatives with real scores; the calibration data have "
            f"{int(w[y == 1].sum())} and {int(w[y == 0].sum())}."
        )
    allowed = _candidates(x, y, w)
    if method == "auto":
        cv = {m: _cv_log_loss(m, x, y, w, CV_FOLDS, seed) for m in allowed}
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
    n = float(w.sum())
    xs, ps = _knots(chosen, _fit_function(chosen, x, y, w), x, w, n)
    n_pos, n_neg = table.total_positive, table.total_negative
    sample = n_pos / (n_pos + n_neg)
    nr = None if k_none + m_none == 0 else (k_none + 0.5) / (k_none + m_none + 1.0)
    out = CalibrationMap(
        scores=xs, probabilities=ps, prevalence=sample, sample_prevalence=sample,
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
        The table ``cmap`` was fitted on.
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
    pos, neg = table.n_positive, table.n_negative
    n_pos, n_neg = int(pos.sum()), int(neg.sum())
    b = 0
    while b < n_resamples:
        rp = rng.multinomial(n_pos, pos / n_pos)
        rn = rng.multinomial(n_neg, neg / n_neg)
        t = CountTable.from_counts(table.scores, rp, rn)
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
    n = np.bincount(b, weights=w, minlength=n_bins)
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


# ---------------------------------------------------------------------------------------
# What a score means at the line's prevalence
# ---------------------------------------------------------------------------------------


def _ppv(prevalence, tpr, fpr):
    with np.errstate(divide="ignore", invalid="ignore"):
        num = prevalence * tpr
        den = num + (1.0 - prevalence) * fpr
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


@dataclass(frozen=True)
class CutoffMeaning:
    """What firing and not firing mean at a cutoff, at the line's prevalence.

    ``P(present | fired) = pi TPR / (pi TPR + (1 - pi) FPR)`` and ``P(present |
    passed) = pi FNR / (pi FNR + (1 - pi) TNR)``, from the calibration counts at the
    cutoff. Intervals: the exact Clopper-Pearson intervals of TPR and FPR, each at
    ``1 - alpha/2`` (Bonferroni), pushed through the formula at their worst corners
    (it increases with TPR and decreases with FPR), so each covers at ``>= confidence``.

    Attributes
    ----------
    threshold, prevalence, confidence : float
    true_positives, n_positive, false_positives, n_negative : int
    p_fired, p_passed : float
    p_fired_interval, p_passed_interval : (float, float)
    firing_probability : float
        ``pi TPR + (1 - pi) FPR``: the share of parts expected to fire on the line.
    """

    threshold: float
    prevalence: float
    confidence: float
    true_positives: int
    n_positive: int
    false_positives: int
    n_negative: int
    p_fired: float
    p_fired_interval: tuple[float, float]
    p_passed: float
    p_passed_interval: tuple[float, float]
    firing_probability: float

    def to_dict(self) -> dict[str, Any]:
        return jsonable({k: getattr(self, k) for k in self.__dataclass_fields__})


def cutoff_meaning(table: CountTable, threshold: float, prevalence: float, *,
                   confidence: float = 0.95) -> CutoffMeaning:
    """``P(present | fired)`` and ``P(present | passed)`` at a cutoff and prevalence.

    Parameters
    ----------
    table : CountTable
        Calibration data.
    threshold : float
        Fire when ``score >= threshold``.
    prevalence : float
        The line's prevalence of the label.
    confidence : float, default 0.95

    Returns
    -------
    CutoffMeaning
    """
    c = check_confidence(confidence)
    pi = check_prevalence(prevalence)
    fires = table.scores >= threshold
    tp, fp = int(table.n_positive[fires].sum()), int(table.n_negative[fires].sum())
    n_pos, n_neg = table.total_positive, table.total_negative
    if n_pos == 0 or n_neg == 0:
        raise InputError("the calibration data need positives and negatives to say what a "
                         "cutoff means.")
    each = 1.0 - (1.0 - c) / 2.0
    tpr_lo, tpr_hi = stats.clopper_pearson_interval(tp, n_pos, each)
    fpr_lo, fpr_hi = stats.clopper_pearson_interval(fp, n_neg, each)
    tpr, fpr = tp / n_pos, fp / n_neg

    def f(a, b):
        return float(_ppv(pi, a, b))

    def g(a, b):  # P(present | passed): FNR = 1 - TPR, TNR = 1 - FPR
        return float(_ppv(pi, 1.0 - a, 1.0 - b))

    return CutoffMeaning(
        float(threshold), pi, c, tp, n_pos, fp, n_neg,
        f(tpr, fpr), (f(tpr_lo, fpr_hi), f(tpr_hi, fpr_lo)),
        g(tpr, fpr), (g(tpr_hi, fpr_lo), g(tpr_lo, fpr_hi)),
        pi * tpr + (1.0 - pi) * fpr,
    )


@dataclass(frozen=True)
class ScoreMeaning:
    """Per score band: ``P(present)`` at the line's prevalence, from the map and exactly.

    Attributes
    ----------
    low, high : ndarray
        Band edges: scores in ``[low, high)`` (the top band includes its ``high``); the
        no-result band is ``[-inf, -inf]``.
    score : ndarray
        The band's median calibration score (``-inf`` for no result).
    map_probability : ndarray
        The map at ``score``.
    n, n_positive : ndarray of int
        Calibration images in the band.
    probability, lower, upper : ndarray
        The band's share of positives moved to the line's prevalence (Bayes odds), with
        the exact Clopper-Pearson interval moved the same way (the correction is
        increasing, so it maps interval to interval).
    fires : ndarray of bool
        Whether the band fires at the cutoff.
    cutoff : CutoffMeaning or None
    prevalence, confidence : float
    """

    low: np.ndarray
    high: np.ndarray
    score: np.ndarray
    map_probability: np.ndarray
    n: np.ndarray
    n_positive: np.ndarray
    probability: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    fires: np.ndarray
    cutoff: CutoffMeaning | None
    prevalence: float
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k).tolist() for k in (
            "low", "high", "score", "map_probability", "n", "n_positive", "probability",
            "lower", "upper", "fires")}
        d.update(prevalence=self.prevalence, confidence=self.confidence,
                 cutoff=None if self.cutoff is None else self.cutoff.to_dict())
        return jsonable(d)


def _band_edges(scores: np.ndarray, counts: np.ndarray, n_bands: int, threshold) -> np.ndarray:
    """Equal-mass band edges over finite scores, with the cutoff as an edge."""
    cum = np.cumsum(counts)
    qs = np.searchsorted(cum, cum[-1] * np.arange(1, n_bands) / n_bands, side="left")
    edges = set(scores[np.clip(qs + 1, 0, scores.size - 1)].tolist())
    if threshold is not None and scores[0] < threshold <= scores[-1]:
        edges.add(float(threshold))
    return np.array(sorted({scores[0], *edges}))


def score_meaning(cmap: CalibrationMap, table: CountTable, *, threshold: float | None = None,
                  prevalence: float | None = None, n_bands: int = 5,
                  confidence: float = 0.95) -> ScoreMeaning:
    """What scores mean at the line's prevalence: a small table per score band.

    Parameters
    ----------
    cmap : CalibrationMap
    table : CountTable
        The calibration data the map was fitted on.
    threshold : float, optional
        The cutoff: it becomes a band edge, and :class:`CutoffMeaning` is added.
    prevalence : float, optional
        Default: the map's prevalence.
    n_bands : int, default 5
        Equal-mass bands of the finite scores (the cutoff adds one edge).
    confidence : float, default 0.95

    Returns
    -------
    ScoreMeaning
    """
    c = check_confidence(confidence)
    pi = cmap.prevalence if prevalence is None else check_prevalence(prevalence)
    m = cmap.at_prevalence(pi)
    sample = table.total_positive / (table.total_positive + table.total_negative)
    fin = np.isfinite(table.scores)
    s, pos, neg = table.scores[fin], table.n_positive[fin], table.n_negative[fin]
    rows = []
    if (~fin).any():
        k, n = int(table.n_positive[~fin].sum()), int((table.n_positive + table.n_negative)[~fin].sum())
        rows.append((-math.inf, -math.inf, -math.inf, k, n))
    if s.size:
        edges = _band_edges(s, pos + neg, n_bands, threshold)
        band = np.searchsorted(edges, s, side="right") - 1
        for b in range(edges.size):
            sel = band == b
            if not sel.any():
                continue
            cnt = (pos + neg)[sel]
            med = s[sel][np.searchsorted(np.cumsum(cnt), cnt.sum() / 2.0)]
            hi = edges[b + 1] if b + 1 < edges.size else s[-1]
            rows.append((edges[b], hi, med, int(pos[sel].sum()), int(cnt.sum())))
    low, high, score, k, n = (np.array(v) for v in zip(*rows))
    lo, up = stats.clopper_pearson_interval(k, n, c)
    fires = (low >= threshold) if threshold is not None else np.zeros(low.size, bool)
    cut = None if threshold is None else cutoff_meaning(table, threshold, pi, confidence=c)
    return ScoreMeaning(
        low, high, score, m.predict(score), n.astype(np.int64), k.astype(np.int64),
        prior_shift(k / n, sample, pi), prior_shift(np.atleast_1d(lo), sample, pi),
        prior_shift(np.atleast_1d(up), sample, pi), fires, cut, pi, c,
    )



# ---------------------------------------------------------------------------------------
# One label's calibration, from a threshold result (what the CLI, report and file show)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelCalibration:
    """A label's map, its held-out reliability and what its scores mean on the line.

    Attributes
    ----------
    detector, model_version, label : str
    map : CalibrationMap
        Stated at the line's prevalence (``map.prevalence``).
    table : CountTable
        The calibration data it was fitted on.
    metrics : CalibrationMetrics or None
        On the held-out split (None without one, or when it lacks a class).
    meaning : ScoreMeaning
        Bands at the line's prevalence; the cutoff is the label's threshold.
    threshold : float or None
    deployed : bool
        False when the threshold is only shown (the policy refuses the label).
    """

    detector: str
    model_version: str
    label: str
    map: CalibrationMap
    table: CountTable = field(repr=False)
    metrics: CalibrationMetrics | None
    meaning: ScoreMeaning
    threshold: float | None
    deployed: bool

    def to_dict(self) -> dict[str, Any]:
        """Plain data: the map (knots and provenance), reliability, and score meaning."""
        return jsonable({
            "detector": self.detector, "model_version": self.model_version,
            "label": self.label, "threshold": self.threshold, "deployed": self.deployed,
            "method": self.map.method, "prevalence": self.map.prevalence,
            "sample_prevalence": self.map.sample_prevalence,
            "held_out": None if self.metrics is None else self.metrics.to_dict(),
            "score_meaning": self.meaning.to_dict(),
            "map": self.map.to_dict(),
        })


def label_calibrations(store, results, *, datasets: dict | None = None, n_bands: int = 5,
                       n_bins: int = 10, n_resamples: int = 1000,
                       seed: int = 0) -> list[LabelCalibration]:
    """Fit, evaluate and explain the map of every label of threshold results.

    Parameters
    ----------
    store : calibrate.store.ScoreStore
        Where the held-out split's table is counted.
    results : list of calibrate.thresholds.LabelThreshold
        With their calibration ``table`` (as
        :func:`calibrate.thresholds.choose_thresholds_from_store` returns them); labels
        without a choice are skipped.
    datasets : dict, optional
        ``(detector, model_version) -> (dataset, fingerprint)`` recorded in each map.
    n_bands, n_bins, n_resamples, seed
        As in :func:`score_meaning` and :func:`evaluate_calibration`.

    Returns
    -------
    list of LabelCalibration
        In the order of ``results``. The map's probabilities are at the policy's
        prevalence (the sample's when the policy sets none).
    """
    out = []
    for r in results:
        if r.choice is None or r.table is None:
            continue
        c = r.choice
        ds, fp = (datasets or {}).get((r.detector, r.model_version), (r.dataset, None))
        try:
            cmap = fit_calibration_map(
                r.table, prevalence=c.prevalence, detection_floor=r.detection_floor,
                seed=seed, detector=r.detector, model_version=r.model_version,
                label=r.label, dataset=ds, dataset_fingerprint=fp, split=r.split)
        except InputError:  # e.g. every positive has no result: nothing to map
            continue
        metrics = None
        if r.held_out_split:
            held = store.count_table(r.detector, r.model_version, r.label,
                                     split=r.held_out_split, dataset=r.dataset)
            if held.total_positive and held.total_negative:
                metrics = evaluate_calibration(cmap, held, n_bins=n_bins,
                                               n_resamples=n_resamples, seed=seed,
                                               confidence=c.policy.confidence,
                                               split=r.held_out_split)
        t = c.threshold if math.isfinite(c.threshold) else None
        meaning = score_meaning(cmap, r.table, threshold=t, n_bands=n_bands,
                                confidence=c.policy.confidence)
        out.append(LabelCalibration(r.detector, r.model_version, r.label, cmap, r.table,
                                    metrics, meaning, c.threshold, c.deployable))
    return out


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
