"""What a score means on the line: score bands and a cutoff, at the line's prevalence.

:func:`score_meaning` gives, per band of calibration scores, the probability that the
label is present *on the line* (the band's share of positives moved from the sample's
prevalence to the line's by Bayes' rule on the odds, with the exact interval moved the
same way) beside the calibration map's value; :func:`cutoff_meaning` gives ``P(present |
fired)`` and ``P(present | passed)`` at a cutoff from the counts there.
:func:`label_calibrations` does all of it (map, held-out reliability, meaning) for every
label of threshold results: what ``calibrate calibration``, the report and the
thresholds file show.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from calibrate import stats
from calibrate.checks import check_confidence, check_prevalence
from calibrate.curves import CountTable
from calibrate.errors import InputError
from calibrate.io import jsonable
from calibrate.probability import CalibrationMap, fit_calibration_map, prior_shift
from calibrate.reliability import CalibrationMetrics, evaluate_calibration

__all__ = [
    "NO_LABEL",
    "Composition",
    "CutoffMeaning",
    "LabelCalibration",
    "ScoreMeaning",
    "cutoff_meaning",
    "composition_from_store",
    "version_composition",
    "label_calibrations",
    "mixture_probability",
    "score_meaning",
]

# ---------------------------------------------------------------------------------------
# The line's mix of classes
# ---------------------------------------------------------------------------------------

#: Name of the class of images that carry none of the labels (good parts).
NO_LABEL = "(none)"


def mixture_probability(k, n, share, target: int | None, confidence: float = 0.95):
    """The line's probability of an event, or of a class given the event, from per-class
    counts.

    With ``a_c = k_c / n_c`` the share of class ``c``'s calibration images showing the
    event and ``pi_c`` the line's share of class ``c``: the event's line probability is
    ``q = sum_c pi_c a_c``, and ``P(target | event) = pi_t a_t / q``. Intervals: each
    ``a_c`` gets its exact Clopper-Pearson interval at ``1 - (1 - confidence) / K``
    (Bonferroni over the ``K`` classes), and the formula is taken at its worst corners
    (``q`` increases with every ``a_c``; the class probability increases with ``a_t`` and
    decreases with the others), so each interval covers at ``>= confidence``. Two
    classes (positives, negatives) give the usual ``pi TPR / (pi TPR + (1 - pi) FPR)``.

    Parameters
    ----------
    k, n : array-like of int, shape (K,)
        Calibration images of each class showing the event, and in all.
    share : array-like of float, shape (K,)
        The line's share of each class (sums to 1).
    target : int or None
        The class asked about; None for the event's own probability ``q``.
    confidence : float, default 0.95

    Returns
    -------
    (p, low, high) : float
    """
    c = check_confidence(confidence)
    k, n = np.asarray(k, dtype=np.int64), np.asarray(n, dtype=np.int64)
    pi = np.asarray(share, dtype=np.float64)
    if np.any(n <= 0):
        raise InputError("every class needs calibration images to weigh it on the line.")
    lo, hi = stats.clopper_pearson_interval(k, n, 1.0 - (1.0 - c) / k.size)
    lo, hi, a = np.atleast_1d(lo), np.atleast_1d(hi), k / n
    if target is None:
        return float(pi @ a), float(pi @ lo), float(min(pi @ hi, 1.0))
    others = np.arange(k.size) != target

    def prob(at, rest):
        num = pi[target] * at
        den = num + float(pi[others] @ rest)
        return float(num / den) if den > 0 else math.nan

    return (prob(a[target], a[others]), prob(lo[target], hi[others]),
            prob(hi[target], lo[others]))


@dataclass(frozen=True)
class Composition:
    """Each calibration image's class and the line's share of every class.

    A label's negatives are all the other classes: good parts *and* other defects. A
    labeled set enriched with every defect type holds far more other defects among a
    label's negatives than the line does, and they score differently (on the bundled
    parts set, v2's spot cutoff fires on 11% of good parts but 58% of scratches), so the
    line's figures weigh each class by its own line share. This needs each image to
    carry at most one of the labels (a class per image) and a line prevalence per label;
    the rest of the line is the no-label class.

    Attributes
    ----------
    classes : tuple of str
        ``(NO_LABEL, *labels)``.
    member : ndarray of int
        Each image's class index.
    line_share : ndarray of float
        Per class; sums to 1.
    image_ids : ndarray
    scores : dict of str to ndarray
        Each label's image-level scores, aligned with ``image_ids``.
    """

    classes: tuple[str, ...]
    member: np.ndarray = field(repr=False)
    line_share: np.ndarray
    image_ids: np.ndarray = field(repr=False)
    scores: dict = field(repr=False)

    @property
    def sample_count(self) -> np.ndarray:
        """Calibration images per class."""
        return np.bincount(self.member, minlength=len(self.classes))

    def weights(self) -> np.ndarray:
        """Per image: its class's line share over its sample share (they sum to N)."""
        n = self.sample_count
        return (self.line_share / (n / n.sum()))[self.member]

    def positive(self, label: str) -> np.ndarray:
        return self.member == self.classes.index(label)

    def probability(self, label: str | None, event, confidence: float = 0.95):
        """:func:`mixture_probability` of ``event`` (bool per image), for ``label``'s
        class (None: the event itself)."""
        k = np.bincount(self.member[np.asarray(event, bool)], minlength=len(self.classes))
        t = None if label is None else self.classes.index(label)
        return mixture_probability(k, self.sample_count, self.line_share, t, confidence)


def composition_from_store(store, detector: str, model_version: str,
                           prevalences: dict[str, float], *, split: str | None = None,
                           dataset: str | None = None) -> Composition:
    """The calibration images' classes and the line's shares, from a store.

    Parameters
    ----------
    prevalences : dict
        The line's prevalence of every label (e.g. each policy's ``prevalence``).

    Raises
    ------
    InputError
        When an image carries two of the labels, a label has no calibration image, or
        the prevalences leave no room for images without a label: then only the
        two-class (pure label shift) figures can be given.
    """
    labels = sorted(prevalences)
    scores, ids, member = {}, None, None
    for j, label in enumerate(labels, start=1):
        s = store.scores(detector, model_version, label, split=split, dataset=dataset)
        if ids is None:
            ids, member = s.image_ids, np.zeros(s.image_ids.size, dtype=np.int64)
        elif not np.array_equal(ids, s.image_ids):  # pragma: no cover - one selection
            raise InputError("the labels' scores cover different images.")
        if np.any(member[s.positive] > 0):
            raise InputError(f"some images carry {label} and another label, so an image has "
                             "no single class to weigh by the line's shares.")
        member[s.positive] = j
        scores[label] = s.scores
    rest = 1.0 - sum(prevalences[x] for x in labels)
    share = np.array([rest] + [prevalences[x] for x in labels])
    count = np.bincount(member, minlength=len(labels) + 1)
    if rest <= 0 or np.any(count == 0):
        missing = [c for c, m in zip((NO_LABEL, *labels), count) if m == 0]
        raise InputError("the line's mix cannot be weighed: "
                         + (f"no calibration image of {', '.join(missing)}" if missing else
                            "the prevalences add up to 1 or more") + ".")
    return Composition((NO_LABEL, *labels), member, share, ids, scores)


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
                   confidence: float = 0.95, composition: Composition | None = None,
                   label: str | None = None) -> CutoffMeaning:
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
    composition : Composition, optional
        Weigh every class by its line share (:func:`mixture_probability`) instead of
        the label's positives and negatives only; ``label`` names the label.

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

    if composition is not None:
        fired = composition.scores[label] >= threshold
        p1, lo1, hi1 = composition.probability(label, fired, c)
        p0, lo0, hi0 = composition.probability(label, ~fired, c)
        return CutoffMeaning(float(threshold), pi, c, tp, n_pos, fp, n_neg, p1, (lo1, hi1),
                             p0, (lo0, hi0), composition.probability(None, fired, c)[0])
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
                  confidence: float = 0.95, composition: Composition | None = None,
                  label: str | None = None) -> ScoreMeaning:
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
    composition : Composition, optional
        Give each band's line probability from every class's line share
        (:func:`mixture_probability`), ``label`` naming the label, instead of the odds
        correction of the band's share of positives.

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
    cut = None if threshold is None else cutoff_meaning(
        table, threshold, pi, confidence=c, composition=composition, label=label)
    fires = (low >= threshold) if threshold is not None else np.zeros(low.size, bool)
    if composition is None:
        lo, up = stats.clopper_pearson_interval(k, n, c)
        line = (prior_shift(k / n, sample, pi), prior_shift(np.atleast_1d(lo), sample, pi),
                prior_shift(np.atleast_1d(up), sample, pi))
    else:
        s_all = composition.scores[label]
        line = np.array([composition.probability(
            label, (s_all == -np.inf) if np.isneginf(a) else (s_all >= a) & (
                (s_all < b) if j + 1 < low.size else (s_all <= b)), c)
            for j, (a, b) in enumerate(zip(low, high))]).T
    return ScoreMeaning(low, high, score, m.predict(score), n.astype(np.int64),
                        k.astype(np.int64), *line, fires, cut, pi, c)



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
        For the line (``map.prevalence`` is the label's line prevalence).
    table : CountTable
        The calibration data it was fitted on.
    metrics : CalibrationMetrics or None
        On the held-out split (None without one, or when it lacks a class).
    meaning : ScoreMeaning
        Bands at the line's prevalence; the cutoff is the label's threshold.
    threshold : float or None
    deployed : bool
        False when the threshold is only shown (the policy refuses the label).
    sample_map : CalibrationMap
        Fitted on the calibration split's own mix (what ``metrics`` evaluates).
    weighing : str
        How the line's figures weigh the classes.
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
    sample_map: CalibrationMap | None = field(default=None, repr=False)
    weighing: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain data: the map (knots and provenance), reliability, and score meaning."""
        return jsonable({
            "detector": self.detector, "model_version": self.model_version,
            "label": self.label, "threshold": self.threshold, "deployed": self.deployed,
            "method": self.map.method, "prevalence": self.map.prevalence,
            "sample_prevalence": self.table.total_positive / (
                self.table.total_positive + self.table.total_negative),
            "weighing": self.weighing,
            "held_out": None if self.metrics is None else self.metrics.to_dict(),
            "score_meaning": self.meaning.to_dict(),
            "map": self.map.to_dict(),
        })


def version_composition(store, detector: str, model_version: str, known: dict[str, float],
                        prevalence_of=None, *, split: str | None = None,
                        dataset: str | None = None) -> Composition | str:
    """The composition of every label the version's images carry, or why not.

    ``known`` gives the line prevalence of labels at hand; ``prevalence_of(label)`` (e.g.
    ``lambda x: policies.for_label(x).prevalence``) the others. Every label the images
    carry takes part, even one not asked about, or its images would count as the
    no-label class.
    """
    prev = dict(known)
    for label in store.truth_labels(detector, model_version, dataset=dataset):
        if label not in prev:
            value = prevalence_of(label) if prevalence_of is not None else None
            if value is None:
                return (f"no line prevalence for {label}, which the images carry; set it in "
                        "the policy")
            prev[label] = float(value)
    try:
        return composition_from_store(store, detector, model_version, prev, split=split,
                                      dataset=dataset)
    except InputError as exc:
        return str(exc)


def _compositions(store, results, policies) -> dict[tuple[str, str], Composition | str]:
    """Per (detector, version): the calibration images' composition, or why not."""
    groups: dict[tuple[str, str], list] = {}
    for r in results:
        if r.choice is not None:
            groups.setdefault((r.detector, r.model_version), []).append(r)

    def prevalence_of(label):
        return None if policies is None else policies.for_label(label).prevalence

    return {key: version_composition(
        store, *key, {r.label: r.choice.prevalence for r in rs}, prevalence_of,
        split=rs[0].split, dataset=rs[0].dataset) for key, rs in groups.items()}


def label_calibrations(store, results, *, policies=None, datasets: dict | None = None,
                       n_bands: int = 5, n_bins: int = 10, n_resamples: int = 1000,
                       seed: int = 0) -> list[LabelCalibration]:
    """Fit, evaluate and explain the map of every label of threshold results.

    The map is fitted twice: on the calibration split as it is (its reliability is
    measured on the held-out split, which has the same mix), and for the line: weighing
    every class by its line share (:class:`Composition`) when each image carries at most
    one label, else by the odds correction to the label's line prevalence (pure label
    shift; the reason is recorded in ``LabelCalibration.weighing``).

    Parameters
    ----------
    store : calibrate.store.ScoreStore
        Where the held-out split's table and the images' classes are read.
    results : list of calibrate.thresholds.LabelThreshold
        With their calibration ``table`` (as
        :func:`calibrate.thresholds.choose_thresholds_from_store` returns them); labels
        without a choice are skipped.
    policies : calibrate.policy.PolicySet, optional
        The line prevalence of labels the images carry but ``results`` leave out.
    datasets : dict, optional
        ``(detector, model_version) -> (dataset, fingerprint)`` recorded in each map.
    n_bands, n_bins, n_resamples, seed
        As in :func:`score_meaning` and :func:`calibrate.reliability.evaluate_calibration`.

    Returns
    -------
    list of LabelCalibration
        In the order of ``results``.
    """
    comps = _compositions(store, results, policies)
    out = []
    for r in results:
        if r.choice is None or r.table is None:
            continue
        c = r.choice
        ds, fp = (datasets or {}).get((r.detector, r.model_version), (r.dataset, None))
        prov = dict(detector=r.detector, model_version=r.model_version, label=r.label,
                    dataset=ds, dataset_fingerprint=fp, split=r.split)
        comp = comps.get((r.detector, r.model_version))
        try:
            sample_map = fit_calibration_map(r.table, detection_floor=r.detection_floor,
                                             seed=seed, **prov)
            if isinstance(comp, Composition):
                line_map = fit_calibration_map(
                    comp.scores[r.label], comp.positive(r.label), weight=comp.weights(),
                    detection_floor=r.detection_floor, seed=seed, **prov)
                weighing = "every class by its line share"
            else:
                line_map = sample_map.at_prevalence(c.prevalence)
                weighing = f"odds correction to the label's prevalence ({comp})"
        except InputError:  # e.g. every positive has no result: nothing to map
            continue
        metrics = None
        if r.held_out_split:
            held = r.held_out_table if r.held_out_table is not None else store.count_table(
                r.detector, r.model_version, r.label, split=r.held_out_split,
                dataset=r.dataset)
            if held.total_positive and held.total_negative:
                metrics = evaluate_calibration(sample_map, held, n_bins=n_bins,
                                               n_resamples=n_resamples, seed=seed,
                                               confidence=c.policy.confidence,
                                               split=r.held_out_split)
        t = c.threshold if math.isfinite(c.threshold) else None
        meaning = score_meaning(
            line_map, r.table, threshold=t, n_bands=n_bands, confidence=c.policy.confidence,
            composition=comp if isinstance(comp, Composition) else None, label=r.label)
        out.append(LabelCalibration(r.detector, r.model_version, r.label, line_map, r.table,
                                    metrics, meaning, c.threshold, c.deployable, sample_map,
                                    weighing))
    return out
