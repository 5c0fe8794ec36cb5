"""Threshold choice: the cost-minimal cutoff, optionally under hard limits.

A :class:`~calibrate.policy.Policy` says what firing does, what each error costs, the
deployment prevalence and optional limits. :func:`choose_threshold` returns the
threshold with the lowest expected cost per item among those whose limits hold on the
exact one-sided Clopper-Pearson upper bound.

Why no multiplicity correction is needed: every error count is monotone in the
threshold, so the thresholds that meet a limit form one contiguous run starting at the
safe end. Testing thresholds from the safe end and stopping at the first failure is a
fixed-sequence test (as in Learn-then-Test risk control), so the stated confidence holds
for the threshold that is finally chosen.

The tie rule lives here once (:func:`tie_break`); the bootstrap
(:mod:`calibrate.bootstrap`) applies the same function to its resamples.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, NamedTuple

import numpy as np
from scipy.stats import fisher_exact

from calibrate import stats
from calibrate.curves import CountTable, ErrorCurve, count_table, error_curve
from calibrate.errors import InputError, NoRankingInformationWarning
from calibrate.matching import DetectionTable
from calibrate.detection_choice import (
    detection_curve_of,
    detection_error_words,
    detection_summary,
    error_words,
    limit_words,
    poisson_rate_test,
    require_image_unit,
)
from calibrate.formatting import format_figure, format_rate, format_threshold
from calibrate.policy import (
    ACTIONS,
    IF_LIMIT_UNPROVEN,
    Policy,
    PolicySet,
    by_action,
    load_policy_file,
)

__all__ = [
    "ACTIONS",
    "TIE",
    "LabelThreshold",
    "LimitCheck",
    "Policy",
    "PolicySet",
    "ThresholdChoice",
    "ThresholdOption",
    "choose_threshold",
    "choose_label_threshold",
    "choose_threshold_from_curve",
    "choose_thresholds",
    "choose_thresholds_from_store",
    "default_held_out",
    "evaluate_threshold",
    "format_figure",
    "format_rate",
    "format_threshold",
    "held_out_flags",
    "load_policy_file",
    "recorded_detection_floor",
    "tie_bound",
    "tie_break",
]


@dataclass(frozen=True)
class LimitCheck:
    """Whether one rate limit holds at a threshold.

    Attributes
    ----------
    error : {"false_accept", "false_reject"}
    limit : float
        The largest acceptable rate.
    confidence : float
    errors : int
        Errors of this kind at the threshold.
    n : int
        Items of the class the limit is about.
    about : {"positive", "negative"}
        Which class that is.
    rate : float
        ``errors / n``.
    upper : float
        Exact one-sided upper bound of the rate at ``confidence``.
    met : bool
        ``upper <= limit``.
    samples_needed : int
        More items of class ``about`` needed to show the limit at this threshold if
        none of them were errors; 0 when the limit is met.
    samples_needed_minimum : int
        The fewest more items that could show the limit at any threshold: at a
        threshold with no errors of this kind (the exact rule of three); 0 when met.
    lower : float
        Exact one-sided lower bound of the rate at ``confidence``.
    refuted : bool
        ``lower > limit``: the limit is shown to fail at this threshold.
    least_errors : int
        The fewest errors of this kind at any threshold: 0 at the image unit; at the
        detection unit, for missed objects, the objects no detection matches at all
        (``samples_needed_minimum`` is counted from there).

    Notes
    -----
    ``confidence`` is the level this limit is tested at: the policy's confidence with
    one limit, ``1 - (1 - c) / 2`` for each of two (so that both hold together).
    """

    error: str
    limit: float
    confidence: float
    errors: int
    n: int
    about: str
    rate: float
    upper: float
    met: bool
    samples_needed: int
    samples_needed_minimum: int = 0
    lower: float = 0.0
    refuted: bool = False
    least_errors: int = 0


@dataclass(frozen=True)
class ThresholdChoice:
    """A threshold and everything needed to defend it.

    The rule is "fire when ``score >= threshold``"; ``threshold = +inf`` means never
    fire. Rates are named by the policy's action (see :class:`Policy`).

    Attributes
    ----------
    threshold : float
    action : str
    policy : Policy
    false_accepts, false_rejects : int
        Error counts at the threshold on the calibration data.
    n_positive, n_negative : int
        Class sizes.
    false_accept_rate, false_reject_rate : float
    false_accept_rate_upper, false_reject_rate_upper : float
        Exact one-sided upper bounds at ``policy.confidence``.
    expected_cost : float
        Expected cost per item at the deployment ``prevalence``.
    prevalence : float
        The prevalence used (the policy's, or the sample's when it gave none).
    limits_met : bool
        True when every limit of the policy holds (trivially true with no limits).
    limit_checks : tuple of LimitCheck
        One per limit in the policy.
    samples_needed : int or None
        When a limit is not met: more samples of the class it is about that would be
        needed, with no further errors, to show it (the largest over unmet limits;
        per-limit numbers are in ``limit_checks``). None when all limits are met.
    has_ranking_information : bool
        False when all scores are equal: then no threshold separates the classes and
        the choice is only "fire on everything" versus "never fire".
    status : {"ok", "limits_unproven", "limits_refuted", "no_ranking_information"}
        ``limits_unproven``: no threshold can be shown to meet the limits with this much
        data (``samples_needed`` more could); ``limits_refuted``: at every threshold
        some limit is shown to fail (its exact lower bound exceeds it), so no amount of
        data helps: the detector cannot meet these limits together.
    explanation : str
        One or two sentences a QC engineer can paste into a ticket.
    next_score_below : float
        The largest calibration score below ``threshold`` (``-inf`` if none): every
        threshold in ``(next_score_below, threshold]`` makes exactly the same decisions
        on the calibration data, which is what exporters need when they must round.
    options : tuple of ThresholdOption
        When the limits are not met: what could be deployed instead, each fully
        evaluated (cost-optimal ignoring the limits, protective, never fire, always
        fire). Empty when the limits are met.
    decision : {"deploy", "refuse", "cost_optimal", "protective", "never_fire"}
        ``deploy`` when the limits hold (or there are none). Otherwise the policy's
        ``if_limit_unproven``: ``refuse`` means nothing may be exported for the label
        (the fields above then describe the protective option, for information);
        any other value names the option these fields describe, deployed by sign-off.
    """

    threshold: float
    action: str
    policy: Policy
    false_accepts: int
    false_rejects: int
    n_positive: int
    n_negative: int
    false_accept_rate: float
    false_reject_rate: float
    false_accept_rate_upper: float
    false_reject_rate_upper: float
    expected_cost: float
    prevalence: float
    limits_met: bool
    limit_checks: tuple[LimitCheck, ...] = field(default_factory=tuple)
    samples_needed: int | None = None
    has_ranking_information: bool = True
    status: str = "ok"
    explanation: str = ""
    next_score_below: float = -np.inf
    options: tuple[ThresholdOption, ...] = field(default_factory=tuple)
    decision: str = "deploy"

    @property
    def deployable(self) -> bool:
        """False when the policy refuses to deploy this label (unproven limits)."""
        return self.decision != "refuse"

    @property
    def needs_sign_off(self) -> bool:
        """True when the limits are not met and something is deployed anyway."""
        return self.decision not in ("deploy", "refuse")

    def option(self, name: str) -> ThresholdChoice | None:
        """The evaluated option ``name`` (see ``options``), or None."""
        return next((o.choice for o in self.options if o.name == name), None)

    # -- the decision unit ---------------------------------------------------------------

    @property
    def unit(self) -> str:
        """What one error is: ``"image"`` or ``"detection"`` (the policy's ``unit``)."""
        return self.policy.unit

    @property
    def iou_threshold(self) -> float | None:
        """IoU of matching at the detection unit; None at the image unit."""
        return self.policy.matching_iou

    @property
    def n_objects(self) -> int | None:
        """Detection unit: ground-truth objects (non-ignored); else None."""
        return self.n_positive if self.policy.detection_unit else None

    @property
    def n_images(self) -> int:
        """Images counted (at the image unit, positives plus negatives)."""
        return self.n_negative if self.policy.detection_unit else self.n_positive + self.n_negative

    @property
    def missed_objects(self) -> int | None:
        """Detection unit: objects no kept detection matched; else None."""
        if not self.policy.detection_unit:
            return None
        return int(by_action(self.action, self.false_accepts, self.false_rejects)[0])

    @property
    def false_detections(self) -> int | None:
        """Detection unit: kept detections that match no object; else None."""
        if not self.policy.detection_unit:
            return None
        return int(by_action(self.action, self.false_accepts, self.false_rejects)[1])

    @property
    def true_detections(self) -> int | None:
        """Detection unit: kept detections that match an object; else None."""
        return None if self.missed_objects is None else self.n_positive - self.missed_objects

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form, JSON-serialisable except that ``+inf`` stays a float."""
        d = {f.name: getattr(self, f.name) for f in fields(self)
             if f.name not in ("options", "limit_checks", "policy")}
        d["unit"] = self.unit
        if self.policy.detection_unit:
            d.update(iou_threshold=self.iou_threshold, n_objects=self.n_objects,
                     n_images=self.n_images, true_detections=self.true_detections,
                     false_detections=self.false_detections,
                     missed_objects=self.missed_objects)
        d["policy"] = self.policy.to_dict()
        d["limit_checks"] = [asdict(c) for c in self.limit_checks]
        d["options"] = [{"name": o.name, "meaning": o.meaning, **o.choice.to_dict()}
                        for o in self.options]
        return d


class ThresholdOption(NamedTuple):
    """One thing that could be deployed when a label's limits are not met.

    Attributes
    ----------
    name : {"cost_optimal", "protective", "never_fire", "always_fire"}
    meaning : str
        What the option is, in words.
    choice : ThresholdChoice
        The option fully evaluated: counts, rates, bounds, cost, limit checks.
    """

    name: str
    meaning: str
    choice: ThresholdChoice


# ---------------------------------------------------------------------------------------
# The tie rule
# ---------------------------------------------------------------------------------------

#: Costs within this relative distance of the minimum are ties: they differ only by
#: floating-point rounding (e.g. c*pi*4/4 against c*(1-pi)*2/2), and the tie rule, not
#: the last bit, should decide between them.
TIE = 1e-12


def tie_bound(minimum: float) -> float:
    """The largest cost that still ties with ``minimum`` (``inf`` when it is infinite)."""
    return minimum + TIE * abs(minimum) if np.isfinite(minimum) else np.inf


def tie_break(cost, false_accepts, index) -> int:
    """Position of the winning candidate under the tie rule.

    The cheapest candidate wins, costs within :data:`TIE` (relative) of the minimum
    being ties; among ties, the fewest false accepts, then the smallest ``index`` (the
    higher threshold: index 0 or -1 is "never fire"). The order of the candidates does
    not matter, so a search that meets them in pieces (the bootstrap) and one that sees
    them all at once (:func:`choose_threshold`) agree.

    Parameters
    ----------
    cost, false_accepts, index : array-like, shape (k,), k >= 1

    Returns
    -------
    int
        Position into the given arrays.
    """
    cost = np.asarray(cost, dtype=np.float64)
    near = np.flatnonzero(cost <= tie_bound(float(cost.min())))
    fa = np.asarray(false_accepts)[near]
    idx = np.asarray(index)[near]
    return int(near[np.lexsort((idx, fa))[0]])


# ---------------------------------------------------------------------------------------
# Evaluating one threshold
# ---------------------------------------------------------------------------------------


def _limit_checks(policy: Policy, errs, least=(0, 0)) -> list[LimitCheck]:
    """One :class:`LimitCheck` per limit of the policy, from the named error counts,
    each at the level that makes all of them hold together; ``least`` is the fewest
    false accepts and false rejects any threshold has."""
    conf = policy.limit_confidence
    fewest = {"false_accept": int(least[0]), "false_reject": int(least[1])}
    counts = {
        "false_accept": (errs.false_accepts, errs.n_false_accept, errs.false_accept_class),
        "false_reject": (errs.false_rejects, errs.n_false_reject, errs.false_reject_class),
    }
    checks = []
    for error, limit in policy.limits():
        k, n, about = counts[error]
        up = stats.clopper_pearson_upper(k, n, conf)
        met = bool(up <= limit)
        need = 0 if met else stats.samples_needed(limit, conf, errors=k, n=n)
        least = 0 if met else stats.samples_needed(limit, conf, errors=fewest[error], n=n)
        low = stats.clopper_pearson_lower(k, n, conf)
        checks.append(LimitCheck(error, limit, conf, int(k), int(n), about, k / n, up, met,
                                 need, least, float(low), bool(low > limit), fewest[error]))
    return checks


def _explain(checks, policy: Policy, threshold: float, errs, bounds, preamble: str) -> str:
    """One or two sentences a QC engineer can paste into a ticket."""
    conf = policy.confidence
    parts = [preamble] if preamble else []
    for c in (c for c in checks if not c.met):
        # At the detection unit the errors are missed objects, the action's name beside.
        word = error_words(policy, c.error)
        counted, rate = limit_words(policy, c.error, c.errors, c.n, c.about)
        head = (f"At this threshold {counted} ({rate} {format_rate(c.rate)}, "
                f"{c.confidence:.3g} upper bound {format_rate(c.upper)}), above the limit "
                f"{format_rate(c.limit)}")
        if c.refuted:
            # More error-free samples is no plan when the errors seen already break it.
            parts.append(f"{head}; the limit is shown to fail here (lower bound "
                         f"{format_rate(c.lower)}).")
            continue
        parts.append(
            f"{head}; showing the limit needs {c.samples_needed:,} more {c.about}s with no "
            f"further {word}."
            + (
                f" No threshold can show it with fewer than {c.samples_needed_minimum:,} more "
                + (f"(at the lowest threshold, which still has {c.least_errors:,} {word}: "
                   f"{c.about}s no detection matches)." if c.least_errors else
                   f"(at a threshold with no {word}).")
                if c.samples_needed_minimum < c.samples_needed
                else ""
            )
        )
    if not parts and policy.detection_unit:
        parts.append(detection_summary(policy, threshold, errs, bounds))
    if not parts:
        fires = ("never fire" if math.isinf(threshold) and threshold > 0
                 else f"fire at score >= {threshold:.6g}")
        parts.append(
            f"Cost-minimal rule: {fires} ({policy.action} on fire); false-accept rate "
            f"{format_rate(errs.false_accepts / errs.n_false_accept)} (upper "
            f"{format_rate(bounds[0])}), false-reject rate "
            f"{format_rate(errs.false_rejects / errs.n_false_reject)} (upper "
            f"{format_rate(bounds[1])}) at {conf:.0%} confidence, on the data that chose "
            "the threshold (not adjusted for that choice: held-out figures are the honest "
            "ones)."
        )
    if len(checks) > 1:
        parts.append(
            f"The two limits are tested together at {conf:.0%}: each at "
            f"{checks[0].confidence:.1%} (Bonferroni), since their errors add."
        )
    return " ".join(parts)


def _describe(
    curve: ErrorCurve,
    policy: Policy,
    threshold: float,
    fp: int,
    fn: int,
    status: str,
    preamble: str = "",
) -> ThresholdChoice:
    """Evaluate one candidate threshold: rates, bounds, cost, limit checks, explanation."""
    n_pos, n_neg = curve.n_positive, curve.n_negative
    errs = policy.errors(fn, fp, n_pos, n_neg)
    fa_up, fr_up = policy.upper_bounds(errs)
    # At the detection unit objects that no detection matches are missed at any cutoff.
    floor = int(curve.false_negatives[-1]) if policy.detection_unit and len(curve) else 0
    checks = _limit_checks(policy, errs, by_action(policy.action, floor, 0))
    limits_met = all(c.met for c in checks)
    unmet = [c for c in checks if not c.met]
    if status == "ok" and not limits_met:
        status = "limits_unproven"
    return ThresholdChoice(
        threshold=float(threshold),
        action=policy.action,
        policy=policy,
        false_accepts=int(errs.false_accepts),
        false_rejects=int(errs.false_rejects),
        n_positive=int(n_pos),
        n_negative=int(n_neg),
        false_accept_rate=errs.false_accepts / errs.n_false_accept,
        false_reject_rate=errs.false_rejects / errs.n_false_reject,
        false_accept_rate_upper=float(fa_up),
        false_reject_rate_upper=float(fr_up),
        expected_cost=float(policy.expected_cost(fn, fp, n_pos, n_neg)),
        prevalence=float(policy.prevalence_for(n_pos, n_neg)),
        limits_met=limits_met,
        limit_checks=tuple(checks),
        samples_needed=max(c.samples_needed for c in unmet) if unmet else None,
        has_ranking_information=curve.has_ranking_information,
        status=status,
        explanation=_explain(checks, policy, threshold, errs, (fa_up, fr_up), preamble),
        next_score_below=_next_score_below(curve, threshold),
    )


def _next_score_below(curve: ErrorCurve, threshold: float) -> float:
    # thresholds descend: the first one strictly below the threshold
    k = int(np.searchsorted(-curve.thresholds, -threshold, side="right"))
    return float(curve.thresholds[k]) if k < len(curve) else -np.inf


# ---------------------------------------------------------------------------------------
# Choice
# ---------------------------------------------------------------------------------------


def _feasible_range(curve: ErrorCurve, policy: Policy) -> tuple[int, int]:
    """Candidate indices ``lo..hi-1`` (0 = never fire, i + 1 = ``thresholds[i]``) that
    meet every limit.

    False negatives only fall and false positives only rise as the threshold goes down,
    so the candidates within both allowances form one contiguous run, found by
    bisection instead of a pass over every threshold.
    """
    allow_fn, allow_fp = policy.error_allowances(curve.n_positive, curve.n_negative)
    lo, hi = 0, len(curve) + 1
    if np.isfinite(allow_fn) and curve.n_positive > allow_fn:
        # first curve index with fn <= allow_fn (fn is non-increasing)
        lo = 1 + int(np.searchsorted(-curve.false_negatives, -allow_fn, side="left"))
    if np.isfinite(allow_fp):
        if allow_fp < 0:
            return 0, 0
        # candidates with fp <= allow_fp: never fire, plus a prefix of the curve
        hi = 1 + int(np.searchsorted(curve.false_positives, allow_fp, side="right"))
    return lo, max(lo, hi)


def _cheapest_in(curve: ErrorCurve, policy: Policy, lo: int, hi: int) -> int:
    """Index of the cost-minimal candidate in ``lo..hi-1`` under :func:`tie_break`.

    The cost of every candidate is one float array (updated in place: this is the hot
    path on 10^7 scores); only the few candidates that tie with the minimum are handed
    to the tie rule.
    """
    w = policy.cost_weights(curve.n_positive, curve.n_negative)
    a, b = max(lo, 1) - 1, hi - 1  # slice of the curve arrays covered by the range
    cost = curve.false_negatives[a:b] * w.miss
    cost += curve.false_positives[a:b] * w.false_alarm
    never = w.miss * curve.n_positive if lo == 0 else np.inf  # no FP, every positive missed
    bound = tie_bound(min(float(cost.min()) if cost.size else np.inf, never))
    ties = np.flatnonzero(cost <= bound)
    index, cand_cost = a + ties + 1, cost[ties]
    fn, fp = curve.false_negatives[a + ties], curve.false_positives[a + ties]
    if never <= bound:  # "never fire" ties too: candidate 0
        index, cand_cost = np.r_[0, index], np.r_[never, cand_cost]
        fn, fp = np.r_[curve.n_positive, fn], np.r_[0, fp]
    fa = policy.errors(fn, fp, curve.n_positive, curve.n_negative).false_accepts
    return int(index[tie_break(cand_cost, fa, index)])


def _refuted_everywhere(curve: ErrorCurve, policy: Policy) -> bool:
    """True when at every candidate some limit's exact lower bound exceeds it.

    One limit alone is never refuted everywhere (never firing has no false rejects,
    firing on everything no false accepts); two together can be.
    """
    thr, fp, fn = curve.with_never_fire()
    errs = policy.errors(fn, fp, curve.n_positive, curve.n_negative)
    conf = policy.limit_confidence
    refuted = np.zeros(thr.size, dtype=bool)
    for error, limit in policy.limits():
        k, n = ((errs.false_accepts, errs.n_false_accept) if error == "false_accept"
                else (errs.false_rejects, errs.n_false_reject))
        refuted |= np.asarray(stats.clopper_pearson_lower(k, np.full(k.shape, n), conf)) > limit
    return bool(refuted.all())


def _protective_index(curve: ErrorCurve, policy: Policy) -> int | None:
    """The cost-minimal candidate whose *observed* rates meet every limit, or None.

    For a false-accept limit that the data cannot show, this is typically "catch every
    observed positive": it protects as far as the data can tell, at a price.
    """
    thr, fp, fn = curve.with_never_fire()
    n_pos, n_neg = curve.n_positive, curve.n_negative
    errs = policy.errors(fn, fp, n_pos, n_neg)
    ok = np.ones(thr.size, dtype=bool)
    if policy.max_false_accept_rate is not None:
        ok &= errs.false_accepts <= policy.max_false_accept_rate * errs.n_false_accept
    if policy.max_false_reject_rate is not None:
        ok &= errs.false_rejects <= policy.max_false_reject_rate * errs.n_false_reject
    allowed = np.flatnonzero(ok)
    if allowed.size == 0:
        return None
    cost = policy.expected_cost(fn, fp, n_pos, n_neg)
    # with_never_fire puts "never fire" first, so positions are candidate indices.
    return int(allowed[tie_break(cost[allowed], errs.false_accepts[allowed], allowed)])


_OPTION_MEANINGS = {
    "cost_optimal": "cost-minimal threshold, ignoring the limits",
    "protective": "cost-minimal threshold whose observed rates meet the limits",
    "never_fire": "never fire",
    "always_fire": "fire on every item",
}


def _options(curve: ErrorCurve, policy: Policy, status: str) -> list[ThresholdOption]:
    """Every option a person could deploy instead, each fully evaluated."""
    picks = {"cost_optimal": _cheapest_in(curve, policy, 0, len(curve) + 1),
             "protective": _protective_index(curve, policy),
             "never_fire": 0, "always_fire": len(curve)}
    out = []
    for name, i in picks.items():
        if i is None:
            continue
        thr, fp, fn = _candidate(curve, i)
        out.append(ThresholdOption(name, _OPTION_MEANINGS[name],
                                   _describe(curve, policy, thr, fp, fn, status)))
    return out


def _unmet(curve: ErrorCurve, policy: Policy, status: str, preamble: str) -> ThresholdChoice:
    """No threshold can be shown to meet the limits: lay out the options and deploy
    only what the policy's ``if_limit_unproven`` says (by default nothing)."""
    refuted = _refuted_everywhere(curve, policy)
    new_status = "limits_refuted" if refuted else "limits_unproven"
    if status == "ok":
        status = new_status
    options = _options(curve, policy, status)
    by_name = {o.name: o.choice for o in options}
    decision = policy.if_limit_unproven
    if decision not in by_name:  # "refuse", or "protective" when there is none
        decision = "refuse"
    shown_name = decision if decision != "refuse" else (
        "protective" if "protective" in by_name else "cost_optimal")
    shown = by_name[shown_name]
    why = (
        f"No threshold meets every limit at {policy.confidence:.0%} confidence: "
        + ("at every threshold some limit is shown to fail (its exact lower bound is "
           "above it), so more data cannot help: the detector cannot meet these limits "
           "together." if refuted else
           f"the data cannot show {'them together' if len(policy.limits()) > 1 else 'it'} "
           "at any threshold (see the samples needed).")
    )
    chosen = _describe(curve, policy, shown.threshold, *_neutral_counts(shown, curve),
                       status, f"{preamble} {why}".strip())
    listed = "; ".join(
        f"{o.name.replace('_', '-')} ({_short(o.choice.threshold)}) costs "
        f"{o.choice.expected_cost:.4g} per {'image' if policy.detection_unit else 'item'}, "
        f"{_error_words(o.choice)}" for o in options)
    if decision == "refuse":
        others = ", ".join(repr(k) for k in IF_LIMIT_UNPROVEN if k != "refuse")
        act = (f"Nothing is deployed for this label (if_limit_unproven = \"refuse\"; "
               f"shown: the {shown_name.replace('_', '-')} option). To deploy one, set "
               f"if_limit_unproven to one of {others} in the label's policy: a decision "
               "that needs sign-off.")
    else:
        act = (f"The policy deploys the {decision.replace('_', '-')} option "
               f"(if_limit_unproven = \"{decision}\"): a decision that needs sign-off.")
    return replace(chosen, options=tuple(options), decision=decision,
                   samples_needed=None if refuted else chosen.samples_needed,
                   explanation=f"{chosen.explanation} Options: {listed}. {act}")


def _error_words(choice: ThresholdChoice) -> str:
    """Both errors of a choice in words: rates at the image unit; missed objects and
    false detections per image at the detection unit."""
    if choice.policy.detection_unit:
        return detection_error_words(choice)
    return (f"false accepts {format_rate(choice.false_accept_rate)}, false rejects "
            f"{format_rate(choice.false_reject_rate)}")


def _short(t: float) -> str:
    """A threshold for a sentence (the exact value is in the fields)."""
    return format_threshold(t) if math.isinf(t) else f"T = {t:.4g}"


def _neutral_counts(choice: ThresholdChoice, curve: ErrorCurve) -> tuple[int, int]:
    """``(false positives, false negatives)`` of an evaluated choice."""
    fn, fp = by_action(choice.action, choice.false_accepts, choice.false_rejects)
    return int(fp), int(fn)


def choose_threshold_from_curve(curve: ErrorCurve, policy: Policy) -> ThresholdChoice:
    """Cost-minimal threshold of a ready curve under a policy.

    See :func:`choose_threshold` for the rules; this entry point skips rebuilding the
    curve (e.g. when it came from the store's count table).
    """
    status, preamble = "ok", ""
    if not curve.has_ranking_information:
        status = "no_ranking_information"
        preamble = (
            f"Every item has the same score ({curve.thresholds[0]:.6g}), so the scores carry "
            "no ranking information: the only choices are firing on everything or on "
            "nothing. Do not treat this as a tuned threshold."
        )
        warnings.warn(preamble, NoRankingInformationWarning, stacklevel=3)
    lo, hi = _feasible_range(curve, policy)
    if hi <= lo:
        return _unmet(curve, policy, status, preamble)
    i = _cheapest_in(curve, policy, lo, hi)
    thr, fp, fn = _candidate(curve, i)
    if policy.has_limits and lo == len(curve) and len(curve):
        preamble = (f"{preamble} Only firing on every item meets the limits: every item "
                    f"is {'rejected' if policy.action == 'reject' else 'let through'}.").strip()
    return _describe(curve, policy, thr, fp, fn, status, preamble)


def _candidate(curve: ErrorCurve, i: int) -> tuple[float, int, int]:
    """Threshold and counts of candidate ``i`` (0 = never fire)."""
    if i == 0:
        return np.inf, 0, curve.n_positive
    return (
        float(curve.thresholds[i - 1]),
        int(curve.false_positives[i - 1]),
        int(curve.false_negatives[i - 1]),
    )


def evaluate_threshold(curve: ErrorCurve, threshold: float, policy: Policy) -> ThresholdChoice:
    """Rates, bounds, cost and limit checks of a given threshold (e.g. a deployed one).

    Parameters
    ----------
    curve : ErrorCurve
    threshold : float
        Any value; "fire when ``score >= threshold``"; ``+inf`` never fires.
    policy : Policy

    Returns
    -------
    ThresholdChoice
        With ``threshold`` as given; ``status`` reports unmet limits.
    """
    fp, fn = curve.counts_at(threshold)
    status = "ok" if curve.has_ranking_information else "no_ranking_information"
    return _describe(curve, policy, float(threshold), fp, fn, status)


def choose_threshold(
    scores,
    positive=None,
    *,
    action: str = "reject",
    cost_false_accept: float,
    cost_false_reject: float,
    prevalence: float | None = None,
    max_false_accept_rate: float | None = None,
    max_false_reject_rate: float | None = None,
    confidence: float = 0.95,
) -> ThresholdChoice:
    """Choose the threshold that minimises expected cost, under optional hard limits.

    Every distinct score is a candidate ("fire when ``score >= t``"), and so is
    ``+inf`` ("never fire"). Expected cost per item with deployment prevalence ``pi``:

    * ``action="reject"``: ``c_FA * pi * FNR(t) + c_FR * (1 - pi) * FPR(t)``
    * ``action="accept"``: ``c_FA * (1 - pi) * FPR(t) + c_FR * pi * FNR(t)``

    A limit such as ``max_false_accept_rate=0.001`` holds at ``t`` when the exact
    one-sided Clopper-Pearson upper bound of that rate at ``confidence`` is at most the
    limit. The result is the cost-minimal threshold among those meeting every limit
    (ties: fewer false accepts, then the higher threshold). When none does, the result
    has ``limits_met=False``, says why in ``explanation``, and gives
    ``samples_needed``.

    Parameters
    ----------
    scores : array-like of float, shape (n,), or CountTable or ErrorCurve
        One score per item in the detector's scale, ``-inf`` for "no result".
    positive : array-like of bool, shape (n,)
        Ground truth; omit when ``scores`` is a CountTable or ErrorCurve.
    action : {"reject", "accept"}, default "reject"
    cost_false_accept, cost_false_reject : float
        Non-negative costs per error (only their ratio matters for the choice).
    prevalence : float, optional
        Deployment share of positives in (0, 1); the sample's share when None.
    max_false_accept_rate, max_false_reject_rate : float, optional
        Hard limits, judged on the upper bound.
    confidence : float, default 0.95

    Returns
    -------
    ThresholdChoice

    Raises
    ------
    InputError
        On invalid data or policy (see :func:`error_curve` and :class:`Policy`).

    Warns
    -----
    NoRankingInformationWarning
        When every score is equal.

    Examples
    --------
    >>> import numpy as np, calibrate
    >>> s = np.array([0.95, 0.9, 0.7, 0.6, 0.4, 0.2, 0.1])
    >>> y = np.array([True, True, True, False, True, False, False])
    >>> c = calibrate.choose_threshold(s, y, cost_false_accept=10, cost_false_reject=1)
    >>> c.threshold, c.false_accepts, c.false_rejects
    (0.4, 0, 1)
    """
    policy = Policy(
        cost_false_accept=cost_false_accept,
        cost_false_reject=cost_false_reject,
        action=action,
        prevalence=prevalence,
        max_false_accept_rate=max_false_accept_rate,
        max_false_reject_rate=max_false_reject_rate,
        confidence=confidence,
    )
    if isinstance(scores, ErrorCurve):
        curve = scores
    elif isinstance(scores, CountTable):
        curve = error_curve(scores)
    else:
        curve = error_curve(scores, positive)
    return choose_threshold_from_curve(curve, policy)


# ---------------------------------------------------------------------------------------
# Many labels at once: one result object per (detector, model version, label)
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelThreshold:
    """Everything computed about one (detector, model version, label), computed once.

    The CLI table, the thresholds file, the exporters, ``calibrate check`` and the
    report all render this object; none of them queries or chooses again.

    Attributes
    ----------
    detector, model_version, label : str
    choice : ThresholdChoice or None
        None when the label cannot be calibrated (see ``problem``).
    problem : str or None
        Why not, e.g. the data has no positive images for the label.
    n_failed : int
        Images whose detector call failed; they are excluded from the curve.
    policy : Policy or None
        The label's policy (also ``choice.policy`` when there is a choice).
    table : CountTable or None
        The calibration data: per distinct score, positives and negatives.
    curve : ErrorCurve or None
        The exact error curve of ``table``.
    detection_floor : float or None
        The lowest score the version can report, as its runs recorded it.
    dataset, split : str or None
        The images the table counts.
    held_out : ThresholdChoice or None
        The chosen threshold evaluated on the held-out split (counts, rates, exact
        bounds, cost, limit checks): the honest figures, since the calibration split's
        bounds at a cost-chosen threshold are optimistic. None without a held-out split.
    held_out_split : str or None
        Its name.
    held_out_flags : tuple of str
        Where the held-out figures disagree with the calibration ones: a rate that
        differs beyond chance, or a limit broken there.
    held_out_table : CountTable or None
        The held-out split's count table (kept so that nothing counts it again, e.g. the
        calibration map's reliability in :mod:`calibrate.score_meaning`).
    data_warnings : tuple of str
        What the numbers rest on that the user must see beside them, e.g. incomplete
        data used as asked (``--allow-incomplete``).
    """

    detector: str
    model_version: str
    label: str
    choice: ThresholdChoice | None
    problem: str | None = None
    n_failed: int = 0
    policy: Policy | None = field(default=None, compare=False)
    table: CountTable | None = field(default=None, repr=False, compare=False)
    curve: ErrorCurve | None = field(default=None, repr=False, compare=False)
    detection_floor: float | None = None
    dataset: str | None = None
    split: str | None = None
    held_out: ThresholdChoice | None = field(default=None, compare=False)
    held_out_split: str | None = None
    held_out_flags: tuple[str, ...] = ()
    data_warnings: tuple[str, ...] = ()
    held_out_table: CountTable | None = field(default=None, repr=False, compare=False)

    @property
    def key(self) -> tuple[str, str, str]:
        """``(detector, model_version, label)``."""
        return self.detector, self.model_version, self.label

    @property
    def unit(self) -> str:
        """What one error is for this label: ``"image"`` or ``"detection"``."""
        return self.policy.unit if self.policy is not None else "image"

    @property
    def iou_threshold(self) -> float | None:
        """IoU of matching at the detection unit; None at the image unit."""
        return self.policy.matching_iou if self.policy is not None else None

    def with_choice(self, choice: ThresholdChoice) -> LabelThreshold:
        """A copy with another choice (e.g. a deployed threshold evaluated here)."""
        return replace(self, choice=choice)


def held_out_flags(calibration: ThresholdChoice, held_out: ThresholdChoice) -> tuple[str, ...]:
    """Where a threshold's held-out figures disagree with its calibration figures.

    A rate is flagged when the held-out and calibration counts differ beyond chance:
    Fisher's exact test (two-sided, :func:`scipy.stats.fisher_exact`) at
    ``1 - confidence``. Comparing the held-out *point* rate with the calibration
    interval instead would ignore the held-out split's own noise (11 cracks on test) and
    flag nearly every label. A limit whose held-out observed rate is above it is flagged
    too.

    Parameters
    ----------
    calibration, held_out : ThresholdChoice
        The same threshold evaluated on the calibration and the held-out split.

    Returns
    -------
    tuple of str
        One sentence per disagreement; empty when they agree.
    """
    alpha = 1.0 - calibration.policy.confidence
    flags = []
    alarm_side = (by_action(calibration.action, "miss", "alarm")
                  if calibration.policy.detection_unit else (None, None))
    for word, side, k1, n1, k2, n2 in (
        ("false-accept", alarm_side[0], calibration.false_accepts, _n_of(calibration, "fa"),
         held_out.false_accepts, _n_of(held_out, "fa")),
        ("false-reject", alarm_side[1], calibration.false_rejects, _n_of(calibration, "fr"),
         held_out.false_rejects, _n_of(held_out, "fr")),
    ):
        if not (n1 and n2):
            continue
        if side == "alarm":
            # False detections per image are Poisson counts, not shares of n: compare
            # the two rates exactly, conditional on their total (binomial split by
            # exposure), the classical exact test for two Poisson rates.
            p = poisson_rate_test(k1, n1, k2, n2)
            if p < alpha:
                flags.append(f"held-out false detections per image {format_figure(k2 / n2, 3)} "
                             f"differ from the calibration {format_figure(k1 / n1, 3)} beyond "
                             f"chance (exact Poisson rate test p = {p:.3g})")
            continue
        # At the detection unit this is the miss rate over objects, named as such.
        name = f"miss rate ({word} rate)" if side == "miss" else f"{word} rate"
        p = fisher_exact([[k1, n1 - k1], [k2, n2 - k2]]).pvalue
        if p < alpha:
            flags.append(f"held-out {name} {format_rate(k2 / n2)} differs from the "
                         f"calibration {format_rate(k1 / n1)} beyond chance (Fisher's exact "
                         f"test p = {p:.3g})")
    for c in held_out.limit_checks:
        if c.rate > c.limit:
            name = f"{c.error.replace('_', '-')} rate"
            if calibration.policy.detection_unit:
                name = f"miss rate ({name})"  # the only binomial limit at this unit
            flags.append(f"held-out {name} {format_rate(c.rate)} "
                         f"breaks the limit {format_rate(c.limit)}")
    return tuple(flags)


def _n_of(choice: ThresholdChoice, which: str) -> int:
    n_fa, n_fr = by_action(choice.action, choice.n_positive, choice.n_negative)
    return int(n_fa if which == "fa" else n_fr)


def _curve_of(data, policy: Policy, label: str) -> ErrorCurve:
    """The curve of a label's data: a CountTable at the image unit, a
    :class:`~calibrate.matching.DetectionTable` at the detection unit."""
    if policy.detection_unit:
        return detection_curve_of(data, label)
    return error_curve(data)


def _with_held_out(result: LabelThreshold, table_source, split: str) -> LabelThreshold:
    """``result`` with its chosen threshold evaluated on the held-out split."""
    if result.choice is None:
        return replace(result, held_out_split=split)
    try:
        data = table_source()
        curve = _curve_of(data, result.choice.policy, result.label)
        table = data.table if isinstance(data, DetectionTable) else data
    except InputError:  # e.g. no positives on the held-out split: nothing honest to show
        return replace(result, held_out_split=split,
                       held_out_flags=(f"the {split} split cannot evaluate this label "
                                       "(one class has no images there)",))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoRankingInformationWarning)
        held = evaluate_threshold(curve, result.choice.threshold, result.choice.policy)
    return replace(result, held_out=held, held_out_split=split, held_out_table=table,
                   held_out_flags=held_out_flags(result.choice, held))


def _choose_one(key, table_source, policies: PolicySet, **provenance) -> LabelThreshold:
    det, ver, label = (str(k) for k in key)
    policy = policies.for_label(label)  # a bad policy is the user's error: raise it
    try:
        data = table_source(policy)
        curve = _curve_of(data, policy, label)
    except InputError as exc:
        return LabelThreshold(det, ver, label, None, str(exc), policy=policy, **provenance)
    table = data.table if isinstance(data, DetectionTable) else data
    with warnings.catch_warnings():
        # The flag travels in the choice's status; one warning per label is noise here.
        warnings.simplefilter("ignore", NoRankingInformationWarning)
        choice = choose_threshold_from_curve(curve, policy)
    if isinstance(data, DetectionTable) and data.detection_scores is not None:
        # Every detection's keep/drop decision must survive an exporter's rounding,
        # also those absorbed by ignore regions, which the curve does not list.
        ds = data.detection_scores
        k = int(np.searchsorted(ds, choice.threshold, side="left"))
        below = float(ds[k - 1]) if k else -np.inf
        choice = replace(choice, next_score_below=max(choice.next_score_below, below))
    return LabelThreshold(det, ver, label, choice, None, policy=policy, table=table,
                          curve=curve, **provenance)


def choose_label_threshold(key, table_source, policies: PolicySet, *, held_out_source=None,
                           held_out: str | None = None, **provenance) -> LabelThreshold:
    """Choose one label's threshold from a count table that comes from anywhere.

    The per-label step of :func:`choose_thresholds_from_store`, for count tables computed
    elsewhere (a Parquet dataset, Spark, a warehouse: :mod:`calibrate.store.sources`).

    Parameters
    ----------
    key : tuple of str
        ``(detector, model_version, label)``.
    table_source : callable
        Returns the label's :class:`CountTable`; an :class:`InputError` it raises (e.g.
        one class has no images) becomes the result's ``problem``.
    policies : PolicySet
    held_out_source : callable, optional
        Returns the held-out split's table; the chosen threshold is evaluated on it.
    held_out : str, optional
        The held-out split's name (required with ``held_out_source``).
    **provenance
        ``LabelThreshold`` fields: ``n_failed``, ``dataset``, ``split``,
        ``detection_floor``, ``data_warnings``.

    Returns
    -------
    LabelThreshold
    """
    def image_table(policy: Policy):
        require_image_unit(policy)
        return table_source()

    result = _choose_one(key, image_table, policies, **provenance)
    if held_out_source is not None:
        result = _with_held_out(result, held_out_source, held_out)
    return result


def choose_thresholds(frame, policies: PolicySet) -> list[LabelThreshold]:
    """Choose a threshold for every (detector, model version, label) in a scores table.

    Parameters
    ----------
    frame : pandas.DataFrame
        Image-level scores with columns ``detector, model_version, label, score,
        positive`` (see :func:`calibrate.scores_table.read_scores_table`).
    policies : PolicySet

    Returns
    -------
    list of LabelThreshold
        Sorted by detector, model version and label. A label that cannot be calibrated
        (one class missing) has ``choice=None`` and says why in ``problem``.

    Raises
    ------
    InputError
        When a label's policy is invalid or incomplete.
    """
    out = []
    for key, g in frame.groupby(["detector", "model_version", "label"], sort=True,
                                dropna=False):
        out.append(_choose_one(
            key,
            lambda _policy, g=g: count_table(g["score"].to_numpy(np.float64),
                                             g["positive"].to_numpy(bool)),
            policies,
        ))
    return out


def recorded_detection_floor(store, detector: str, model_version: str) -> float | None:
    """The lowest score a detector version can report, as its runs recorded it.

    Parameters
    ----------
    store : calibrate.store.ScoreStore
    detector, model_version : str

    Returns
    -------
    float or None
        The highest floor of the version's runs (the most censoring one wins, since
        below it some runs could not report), or None when no run stated one.
    """
    runs = store.runs()
    sel = runs[(runs["detector"] == detector) & (runs["model_version"] == model_version)]
    floors = []
    for f in sel["detection_floor"]:
        try:
            x = float(f)
        except (TypeError, ValueError):
            continue
        if not math.isnan(x):
            floors.append(x)
    return max(floors) if floors else None


def choose_thresholds_from_store(
    store,
    policies: PolicySet,
    *,
    detector: str | None = None,
    model_version: str | None = None,
    labels: list[str] | None = None,
    dataset: str | None = None,
    split: str | None = None,
    held_out: str | None = None,
    allow_incomplete: bool | None = None,
) -> list[LabelThreshold]:
    """Choose a threshold for every (detector, model version, label) in a score store.

    Each label's count table is computed inside the database (one ``GROUP BY``), so
    only the table leaves it; the result carries the table, the curve, the choice and
    where the data came from, so nothing downstream needs to query again. Each version
    counts one dataset (``dataset``, else the latest it ran on), and a version whose
    latest run there is incomplete is refused (see ``allow_incomplete``).

    Parameters
    ----------
    store : calibrate.store.ScoreStore
    policies : PolicySet
    detector, model_version : str, optional
        Restrict to one detector / model version.
    labels : list of str, optional
        Restrict to these labels.
    dataset, split : str, optional
        Restrict to images of one dataset / split. With a dataset, versions that never
        ran on it are left out.
    held_out : str or None, optional
        The split to evaluate each chosen threshold on (the honest figures). Default:
        ``"test"`` when calibrating on another split and the store has a ``test``
        split; ``""`` turns it off.
    allow_incomplete : bool, optional
        Choose from a version whose latest run is incomplete (running, interrupted,
        failed, or fewer images done than its dataset has) with an
        ``IncompleteDataWarning`` instead of refusing it. Default: the store's
        ``allow_incomplete`` (False unless it was opened with it).

    Returns
    -------
    list of LabelThreshold

    Raises
    ------
    InputError
        On an unknown split, or (``IncompleteDataError``) incomplete data not allowed:
        the message names the run and the command that resumes it.
    """
    known = store.splits(dataset)
    for name, what in ((split, "split"), (held_out or None, "held-out split")):
        if name is not None and name not in known:
            raise InputError(
                f"unknown {what} {name!r}: no image of {store.path} is in it; the splits "
                f"are {', '.join(known) or 'none (the manifest gave no split)'}."
            )
    held_out = default_held_out(split, known) if held_out is None else (held_out or None)
    if held_out is not None and held_out == split:
        raise InputError(f"the held-out split {held_out!r} is the split the thresholds are "
                         "chosen on; a held-out split must be another one.")
    out = []
    for row in store.versions().itertuples():
        if detector is not None and row.detector != detector:
            continue
        if model_version is not None and row.model_version != model_version:
            continue
        if dataset is not None and dataset not in store.version_datasets(
                row.detector, row.model_version):
            continue
        # Before any count: cutoffs from part of a dataset must not pass in silence.
        incomplete = store.require_complete(row.detector, row.model_version, dataset,
                                            allow=allow_incomplete)
        kw = dict(dataset=dataset, split=split)
        provenance = dict(
            data_warnings=(incomplete,) if incomplete else (),
            n_failed=store.n_failed(row.detector, row.model_version, **kw),
            detection_floor=recorded_detection_floor(store, row.detector, row.model_version),
            **kw,
        )
        # A label that is truly present but never reported is still calibrated (its
        # curve says every positive is missed), not silently left out.
        every = set(store.labels(row.detector, row.model_version, dataset=dataset)) | set(
            store.truth_labels(row.detector, row.model_version, dataset=dataset))
        for label in sorted(every):
            if labels is not None and label not in labels:
                continue
            def source(policy, d=row.detector, v=row.model_version, lab=label, sp=split):
                return _store_table(store, policy, d, v, lab, dataset=dataset, split=sp)

            result = _choose_one((row.detector, row.model_version, label), source, policies,
                                 **provenance)
            if held_out is not None:
                result = _with_held_out(
                    result, lambda source=source: source(result.policy, sp=held_out), held_out)
            out.append(result)
    return out


def _store_table(store, policy: Policy, detector: str, model_version: str, label: str, *,
                 dataset: str | None, split: str | None):
    """A label's data from the store at its policy's unit (image or detection)."""
    if policy.detection_unit:
        return store.detection_count_table(detector, model_version, label,
                                           iou_threshold=policy.matching_iou,
                                           dataset=dataset, split=split)
    return store.count_table(detector, model_version, label, dataset=dataset, split=split)


def default_held_out(split: str | None, splits) -> str | None:
    """The held-out split used when none is named: ``"test"`` when the thresholds are
    chosen on another split and the data has a ``test`` split, else None."""
    return "test" if split is not None and split != "test" and "test" in splits else None
