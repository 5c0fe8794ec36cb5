"""Policies and threshold choice: the cost-minimal cutoff, optionally under hard limits.

A :class:`Policy` says what firing does (``action``), what each error costs, the
deployment prevalence of positives, and optional limits such as "false-accept rate at
most 0.1% at 95% confidence". :func:`choose_threshold` returns the threshold with the
lowest expected cost per item among those whose limits hold on the exact one-sided
Clopper-Pearson upper bound.

Why no multiplicity correction is needed: every error count is monotone in the
threshold, so the thresholds that meet a limit form one contiguous run starting at the
safe end. Testing thresholds from the safe end and stopping at the first failure is a
fixed-sequence test (as in Learn-then-Test risk control), so the stated confidence holds
for the threshold that is finally chosen.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from calibrate import stats
from calibrate.curves import CountTable, ErrorCurve, error_curve
from calibrate.errors import InputError, NoRankingInformationWarning

__all__ = [
    "ACTIONS",
    "LabelThreshold",
    "LimitCheck",
    "Policy",
    "PolicySet",
    "ThresholdChoice",
    "choose_threshold",
    "choose_threshold_from_curve",
    "choose_thresholds",
    "choose_thresholds_from_store",
    "evaluate_threshold",
    "format_rate",
    "format_threshold",
    "load_policy_file",
]

ACTIONS = ("reject", "accept")


@dataclass(frozen=True)
class Policy:
    """What a label's rule does and what its errors cost.

    Parameters
    ----------
    cost_false_accept : float
        Cost of one false accept (a shipped defect for ``action="reject"``; an impostor
        let through for ``action="accept"``). Non-negative.
    cost_false_reject : float
        Cost of one false reject (a scrapped good part; a genuine user turned away).
    action : {"reject", "accept"}, default "reject"
        What firing (``score >= T``) does. ``"reject"``: the item is rejected (QC), so a
        positive that does not fire is a false accept. ``"accept"``: the item is let
        through, so a negative that fires is a false accept.
    prevalence : float, optional
        Share of positives in deployment, strictly between 0 and 1. ``None`` uses the
        calibration sample's share, which is usually wrong for defect-enriched sets.
    max_false_accept_rate, max_false_reject_rate : float, optional
        Hard limits on the rates, judged on the exact upper bound at ``confidence``.
    confidence : float, default 0.95
        One-sided confidence level of the limits' upper bounds.
    """

    cost_false_accept: float
    cost_false_reject: float
    action: str = "reject"
    prevalence: float | None = None
    max_false_accept_rate: float | None = None
    max_false_reject_rate: float | None = None
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise InputError(
                f"action must be 'reject' (firing scraps the item, QC) or 'accept' (firing "
                f"lets it through, access control), got {self.action!r}."
            )
        for name in ("cost_false_accept", "cost_false_reject"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.number)):
                raise InputError(f"{name} must be a number, got {v!r}.")
            if not math.isfinite(v) or v < 0:
                raise InputError(
                    f"{name} must be a finite, non-negative cost per error, got {v!r}."
                )
        if self.cost_false_accept == 0 and self.cost_false_reject == 0:
            raise InputError(
                "cost_false_accept and cost_false_reject are both 0, so every threshold "
                "costs the same. Give at least one a positive cost (only their ratio matters)."
            )
        if self.prevalence is not None:
            p = self.prevalence
            if isinstance(p, bool) or not isinstance(p, (int, float, np.number)) or not (
                0.0 < p < 1.0
            ):
                raise InputError(
                    f"prevalence must be the deployment share of positives, strictly between "
                    f"0 and 1 (0.004 means 0.4%), got {p!r}."
                )
        for name in ("max_false_accept_rate", "max_false_reject_rate", "confidence"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float, np.number))):
                raise InputError(f"{name} must be a number, got {v!r} ({type(v).__name__}).")
            if v is not None and name != "confidence":
                stats._check_limit(v, name)
        stats._check_confidence(self.confidence)

    @property
    def has_limits(self) -> bool:
        """True when the policy sets at least one rate limit."""
        return self.max_false_accept_rate is not None or self.max_false_reject_rate is not None

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any], *, where: str = "policy") -> Policy:
        """Build a policy from a mapping such as a TOML table, naming unknown keys.

        Parameters
        ----------
        mapping : dict
            Keys are the field names of :class:`Policy`.
        where : str
            Where the mapping came from (``"policy.toml [labels.scratch]"``), used in
            error messages.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise InputError(
                f"{where}: unknown key(s) {', '.join(unknown)}; allowed keys are "
                f"{', '.join(sorted(known))}."
            )
        missing = [k for k in ("cost_false_accept", "cost_false_reject") if k not in mapping]
        if missing:
            raise InputError(f"{where}: missing {' and '.join(missing)}.")
        try:
            return cls(**mapping)
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """The policy as a plain dict (JSON/TOML friendly)."""
        return asdict(self)


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
    status : {"ok", "limits_not_met", "no_ranking_information"}
    explanation : str
        One or two sentences a QC engineer can paste into a ticket.
    next_score_below : float
        The largest calibration score below ``threshold`` (``-inf`` if none): every
        threshold in ``(next_score_below, threshold]`` makes exactly the same decisions
        on the calibration data, which is what exporters need when they must round.
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

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form, JSON-serialisable except that ``+inf`` stays a float."""
        d = asdict(self)
        d["limit_checks"] = [asdict(c) for c in self.limit_checks]
        return d


# ---------------------------------------------------------------------------------------
# Shared arithmetic (also used by the bootstrap in calibrate.stats)
# ---------------------------------------------------------------------------------------


def _prevalence(policy: Policy, n_pos: int, n_neg: int) -> float:
    return policy.prevalence if policy.prevalence is not None else n_pos / (n_pos + n_neg)


def _cost_weights(policy: Policy, n_pos: int, n_neg: int) -> tuple[float, float, float]:
    """Weights ``(w_fn, w_fp, prevalence)`` so that cost = w_fn * FN + w_fp * FP.

    reject: ``c_FA * pi * FNR + c_FR * (1 - pi) * FPR``;
    accept: ``c_FA * (1 - pi) * FPR + c_FR * pi * FNR``.
    """
    pi = _prevalence(policy, n_pos, n_neg)
    if policy.action == "reject":
        c_fn, c_fp = policy.cost_false_accept, policy.cost_false_reject
    else:
        c_fn, c_fp = policy.cost_false_reject, policy.cost_false_accept
    return c_fn * pi / n_pos, c_fp * (1.0 - pi) / n_neg, pi


def _error_allowances(policy: Policy, n_pos: int, n_neg: int) -> tuple[float, float]:
    """Largest false-negative and false-positive counts that still meet the limits.

    ``inf`` where the policy sets no limit; ``-1`` where no count can meet it.
    """
    allow_fa = allow_fr = np.inf
    n_fa, n_fr = (n_pos, n_neg) if policy.action == "reject" else (n_neg, n_pos)
    if policy.max_false_accept_rate is not None:
        allow_fa = stats.max_errors_within(n_fa, policy.max_false_accept_rate, policy.confidence)
    if policy.max_false_reject_rate is not None:
        allow_fr = stats.max_errors_within(n_fr, policy.max_false_reject_rate, policy.confidence)
    return (allow_fa, allow_fr) if policy.action == "reject" else (allow_fr, allow_fa)


def format_rate(x: float) -> str:
    """A rate as a percentage with three significant digits (``0.00123`` -> ``0.123%``)."""
    return f"{100 * x:.3g}%"


def format_threshold(t: float, *, never: str = "never fire", always: str = "always fire") -> str:
    """A threshold exactly as chosen (a rounded value could change decisions), or the
    words for the two infinite rules."""
    if math.isinf(t):
        return never if t > 0 else always
    return repr(float(t))


# ---------------------------------------------------------------------------------------
# Choice
# ---------------------------------------------------------------------------------------


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
    w_fn, w_fp, pi = _cost_weights(policy, n_pos, n_neg)
    if policy.action == "reject":
        fa, n_fa, about_fa, fr, n_fr, about_fr = fn, n_pos, "positive", fp, n_neg, "negative"
    else:
        fa, n_fa, about_fa, fr, n_fr, about_fr = fp, n_neg, "negative", fn, n_pos, "positive"
    conf = policy.confidence
    fa_up = stats.clopper_pearson_upper(fa, n_fa, conf)
    fr_up = stats.clopper_pearson_upper(fr, n_fr, conf)
    checks = []
    for error, limit, k, n, about, up in (
        ("false_accept", policy.max_false_accept_rate, fa, n_fa, about_fa, fa_up),
        ("false_reject", policy.max_false_reject_rate, fr, n_fr, about_fr, fr_up),
    ):
        if limit is None:
            continue
        met = bool(up <= limit)
        need = 0 if met else stats.samples_needed(limit, conf, errors=k, n=n)
        least = 0 if met else stats.samples_needed(limit, conf, errors=0, n=n)
        checks.append(LimitCheck(error, limit, conf, k, n, about, k / n, up, met, need, least))
    limits_met = all(c.met for c in checks)
    unmet = [c for c in checks if not c.met]
    samples_needed = max(c.samples_needed for c in unmet) if unmet else None
    if status == "ok" and not limits_met:
        status = "limits_not_met"
    parts = [preamble] if preamble else []
    for c in unmet:
        word = c.error.replace("_", " ")
        parts.append(
            f"At this threshold {c.errors} of {c.n:,} {c.about}s are {word}s "
            f"(rate {format_rate(c.rate)}, {conf:.0%} upper bound {format_rate(c.upper)}), "
            f"above the limit {format_rate(c.limit)}; showing the limit needs "
            f"{c.samples_needed:,} more {c.about}s with no further {word}s."
            + (
                f" No threshold can show it with fewer than {c.samples_needed_minimum:,} more "
                f"(at a threshold with no {word}s)."
                if c.samples_needed_minimum < c.samples_needed
                else ""
            )
        )
    if not parts:
        fires = "never fire" if math.isinf(threshold) and threshold > 0 else f"fire at score >= {threshold:.6g}"
        parts.append(
            f"Cost-minimal rule: {fires} ({policy.action} on fire); false-accept rate "
            f"{format_rate(fa / n_fa)} (upper {format_rate(fa_up)}), false-reject rate "
            f"{format_rate(fr / n_fr)} (upper {format_rate(fr_up)}) at {conf:.0%} confidence."
        )
    return ThresholdChoice(
        threshold=float(threshold),
        action=policy.action,
        policy=policy,
        false_accepts=int(fa),
        false_rejects=int(fr),
        n_positive=int(n_pos),
        n_negative=int(n_neg),
        false_accept_rate=fa / n_fa,
        false_reject_rate=fr / n_fr,
        false_accept_rate_upper=float(fa_up),
        false_reject_rate_upper=float(fr_up),
        expected_cost=float(w_fn * fn + w_fp * fp),
        prevalence=float(pi),
        limits_met=limits_met,
        limit_checks=tuple(checks),
        samples_needed=samples_needed,
        has_ranking_information=curve.has_ranking_information,
        status=status,
        explanation=" ".join(parts),
        next_score_below=_next_score_below(curve, threshold),
    )


def _next_score_below(curve: ErrorCurve, threshold: float) -> float:
    # thresholds descend: the first one strictly below the threshold
    k = int(np.searchsorted(-curve.thresholds, -threshold, side="right"))
    return float(curve.thresholds[k]) if k < len(curve) else -np.inf


#: Costs within this relative distance of the minimum are ties: they differ only by
#: floating-point rounding (e.g. c*pi*4/4 against c*(1-pi)*2/2), and the tie rule, not
#: the last bit, should decide between them.
_TIE = 1e-12


def _near_min(cost: np.ndarray) -> np.ndarray:
    m = cost.min()
    return cost <= m + _TIE * abs(m)


def _lowest_cost(cost: np.ndarray, fa: np.ndarray, allowed: np.ndarray) -> int | None:
    """Index of the cheapest allowed candidate; ties go to fewer false accepts, then
    to the higher threshold (smaller index)."""
    idx = np.flatnonzero(allowed)
    if idx.size == 0:
        return None
    sel = idx[_near_min(cost[idx])]
    return int(sel[np.argmin(fa[sel])])


def _feasible_range(curve: ErrorCurve, policy: Policy) -> tuple[int, int]:
    """Candidate indices ``lo..hi-1`` (0 = never fire, i + 1 = ``thresholds[i]``) that
    meet every limit.

    False negatives only fall and false positives only rise as the threshold goes down,
    so the candidates within both allowances form one contiguous run, found by
    bisection instead of a pass over every threshold.
    """
    allow_fn, allow_fp = _error_allowances(policy, curve.n_positive, curve.n_negative)
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
    """Index of the cost-minimal candidate in ``lo..hi-1`` under the tie rule: costs
    within ``_TIE`` of the minimum tie; then fewer false accepts; then the smaller
    index (the higher threshold). ``calibrate.stats`` applies the same rule."""
    w_fn, w_fp, _ = _cost_weights(policy, curve.n_positive, curve.n_negative)
    a, b = max(lo, 1) - 1, hi - 1  # slice of the curve arrays covered by the range
    cost = curve.false_negatives[a:b] * w_fn  # one float array, updated in place
    cost += curve.false_positives[a:b] * w_fp
    never = w_fn * curve.n_positive if lo == 0 else np.inf  # no FP, every positive missed
    m = min(float(cost.min()) if cost.size else np.inf, never)
    bound = m + _TIE * abs(m)
    where, fewest = -1, np.inf
    if never <= bound:
        where, fewest = 0, (curve.n_positive if policy.action == "reject" else 0)
    ties = np.flatnonzero(cost <= bound)
    if ties.size:
        fa = (curve.false_negatives if policy.action == "reject" else curve.false_positives)[
            a + ties
        ]
        j = int(np.argmin(fa))  # the first of the fewest: the smallest index
        if fa[j] < fewest:
            where = a + int(ties[j]) + 1
    return where


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
    if hi > lo:
        i = _cheapest_in(curve, policy, lo, hi)
        thr, fp, fn = _candidate(curve, i)
        return _describe(curve, policy, thr, fp, fn, status, preamble)

    # No threshold can be shown to meet the limits. Report the cheapest threshold whose
    # observed rates meet them (so samples_needed says how much more data would prove
    # it), or failing that the unconstrained optimum, and say so. Rare path: full arrays.
    thr, fp, fn = curve.with_never_fire()
    n_pos, n_neg = curve.n_positive, curve.n_negative
    w_fn, w_fp, _ = _cost_weights(policy, n_pos, n_neg)
    cost = w_fn * fn + w_fp * fp
    reject = policy.action == "reject"
    fa, fr = (fn, fp) if reject else (fp, fn)
    fa_n, fr_n = (n_pos, n_neg) if reject else (n_neg, n_pos)
    point_ok = np.ones(thr.size, dtype=bool)
    if policy.max_false_accept_rate is not None:
        point_ok &= fa <= policy.max_false_accept_rate * fa_n
    if policy.max_false_reject_rate is not None:
        point_ok &= fr <= policy.max_false_reject_rate * fr_n
    i = _lowest_cost(cost, fa, point_ok)
    how = "whose observed rates are within the limits"
    if i is None:
        i = _lowest_cost(cost, fa, np.ones(thr.size, dtype=bool))
        how = "without the limits (even the observed rates cannot meet them together)"
    msg = (
        f"No threshold meets every limit at {policy.confidence:.0%} confidence; shown is "
        f"the cost-minimal threshold {how}."
    )
    preamble = f"{preamble} {msg}".strip()
    if status == "ok":
        status = "limits_not_met"
    return _describe(curve, policy, thr[i], int(fp[i]), int(fn[i]), status, preamble)


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
# Policy files and many labels at once
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicySet:
    """Per-label policies: shared defaults plus per-label overrides.

    Attributes
    ----------
    defaults : dict
        Keys of :class:`Policy` that apply to every label.
    labels : dict of str to dict
        Per-label keys; they win over ``defaults``.
    source : str
        Where the set came from, for error messages.
    """

    defaults: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = "policy"

    def with_defaults(self, overrides: dict[str, Any]) -> PolicySet:
        """A copy whose defaults are updated with ``overrides`` (None values ignored)."""
        merged = {**self.defaults, **{k: v for k, v in overrides.items() if v is not None}}
        return PolicySet(merged, self.labels, self.source)

    def for_label(self, label: str) -> Policy:
        """The policy of ``label``: defaults, then the label's own table."""
        where = self.source if label not in self.labels else f"{self.source} [labels.{label}]"
        return Policy.from_mapping({**self.defaults, **self.labels.get(label, {})}, where=where)


def load_policy_file(path) -> PolicySet:
    """Read a TOML policy file.

    The file has an optional ``[defaults]`` table and one ``[labels.<name>]`` table per
    label that needs its own settings; keys are those of :class:`Policy`::

        [defaults]
        action = "reject"
        cost_false_accept = 50     # a shipped defect
        cost_false_reject = 1      # a scrapped good part
        confidence = 0.95

        [labels.crack]
        prevalence = 0.0008
        max_false_accept_rate = 0.001

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    PolicySet

    Raises
    ------
    InputError
        Naming the file (and the line, for TOML syntax errors) and what is wrong.
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    from pathlib import Path

    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"cannot read policy file {p}: {exc.strerror or exc}.") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"policy file {p} is not valid TOML: {exc}.") from None
    unknown = sorted(set(data) - {"defaults", "labels"})
    if unknown:
        raise InputError(
            f"policy file {p}: unknown table(s) {', '.join(unknown)}; use [defaults] and "
            "[labels.<label name>]."
        )
    defaults = data.get("defaults", {})
    labels = data.get("labels", {})
    if not isinstance(defaults, dict) or not isinstance(labels, dict) or not all(
        isinstance(v, dict) for v in labels.values()
    ):
        raise InputError(
            f"policy file {p}: [defaults] and each [labels.<name>] must be tables of keys."
        )
    known = {f.name for f in fields(Policy)}
    for where, table in [("[defaults]", defaults)] + [
        (f"[labels.{k}]", v) for k, v in labels.items()
    ]:
        bad = sorted(set(table) - known)
        if bad:
            raise InputError(
                f"policy file {p} {where}: unknown key(s) {', '.join(bad)}; allowed keys "
                f"are {', '.join(sorted(known))}."
            )
    return PolicySet(dict(defaults), {k: dict(v) for k, v in labels.items()}, str(p))


@dataclass(frozen=True)
class LabelThreshold:
    """The threshold choice of one (detector, model version, label).

    Attributes
    ----------
    detector, model_version, label : str
    choice : ThresholdChoice or None
        None when the label cannot be calibrated (see ``problem``).
    problem : str or None
        Why not, e.g. the data has no positive images for the label.
    n_failed : int
        Images whose detector call failed; they are excluded from the curve.
    """

    detector: str
    model_version: str
    label: str
    choice: ThresholdChoice | None
    problem: str | None = None
    n_failed: int = 0


def _choose_one(det, ver, label, curve_source, policies: PolicySet, n_failed=0) -> LabelThreshold:
    policy = policies.for_label(label)  # a bad policy is the user's error: raise it
    try:
        curve = curve_source()
    except InputError as exc:
        return LabelThreshold(str(det), str(ver), str(label), None, str(exc), n_failed)
    with warnings.catch_warnings():
        # The flag travels in the choice's status; one warning per label is noise here.
        warnings.simplefilter("ignore", NoRankingInformationWarning)
        choice = choose_threshold_from_curve(curve, policy)
    return LabelThreshold(str(det), str(ver), str(label), choice, None, n_failed)


def choose_thresholds(frame, policies: PolicySet) -> list[LabelThreshold]:
    """Choose a threshold for every (detector, model version, label) in a scores table.

    Parameters
    ----------
    frame : pandas.DataFrame
        Image-level scores with columns ``detector, model_version, label, score,
        positive`` (see :func:`calibrate.manifest.read_scores_table`).
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
    for (det, ver, label), g in frame.groupby(
        ["detector", "model_version", "label"], sort=True, dropna=False
    ):
        out.append(
            _choose_one(
                det, ver, label,
                lambda g=g: error_curve(g["score"].to_numpy(np.float64), g["positive"].to_numpy(bool)),
                policies,
            )
        )
    return out


def choose_thresholds_from_store(
    store,
    policies: PolicySet,
    *,
    detector: str | None = None,
    model_version: str | None = None,
    labels: list[str] | None = None,
    dataset: str | None = None,
    split: str | None = None,
) -> list[LabelThreshold]:
    """Choose a threshold for every (detector, model version, label) in a score store.

    Each label's count table is computed inside the database (one ``GROUP BY``), so
    only the table leaves it.

    Parameters
    ----------
    store : calibrate.store.ScoreStore
    policies : PolicySet
    detector, model_version : str, optional
        Restrict to one detector / model version.
    labels : list of str, optional
        Restrict to these labels.
    dataset, split : str, optional
        Restrict to images of one dataset / split.

    Returns
    -------
    list of LabelThreshold
    """
    versions = store.versions()
    if split is not None:
        known = store.splits(dataset)
        if split not in known:
            raise InputError(
                f"no image of {store.path} is in split {split!r}; the splits are "
                f"{', '.join(known) or 'none (the manifest gave no split)'}."
            )
    out = []
    for row in versions.itertuples():
        if detector is not None and row.detector != detector:
            continue
        if model_version is not None and row.model_version != model_version:
            continue
        kw = dict(dataset=dataset, split=split)
        n_failed = store.n_failed(row.detector, row.model_version, **kw)
        # A label that is truly present but never reported is still calibrated (its
        # curve says every positive is missed), not silently left out.
        every = set(row.labels) | set(store.truth_labels(row.detector, row.model_version))
        for label in sorted(every):
            if labels is not None and label not in labels:
                continue
            out.append(
                _choose_one(
                    row.detector, row.model_version, label,
                    lambda d=row.detector, v=row.model_version, lab=label, kw=kw: error_curve(
                        store.count_table(d, v, lab, **kw)
                    ),
                    policies,
                    n_failed,
                )
            )
    return out
