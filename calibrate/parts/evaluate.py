"""Whole-part evaluation of a set of per-label cutoffs (with an optional review band).

Rule per part, with per-label cutoffs ``T_low[l] <= T_high[l]`` (``score >= T`` fires):

* **reject** (scrap) when any label's score is ``>= T_high[l]``;
* **review** when none rejects and some label's score is ``>= T_low[l]``;
* **accept** (ship) otherwise.

Without a review band ``T_low = T_high``. Part-level errors: a *false accept* is a
part with at least one true defect that ships; a *false reject* a good part that is
scrapped. Reviewed parts are assumed to be judged correctly by the person.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from calibrate import stats
from calibrate.errors import InputError
from calibrate.parts.data import PartData
from calibrate.parts.policy import PartPolicy, line_weights
from calibrate.policy import PolicySet

__all__ = [
    "ACCEPT",
    "OUTCOMES",
    "REJECT",
    "REVIEW",
    "PartFigures",
    "PartLimitCheck",
    "PartProblem",
    "evaluate_parts",
    "part_outcomes",
    "part_problem",
]

ACCEPT, REVIEW, REJECT = 0, 1, 2
#: Names of the outcome codes in :attr:`PartFigures.outcome`.
OUTCOMES = ("accept", "review", "reject")


@dataclass(frozen=True)
class PartProblem:
    """Per-part data with everything the evaluation and the search reuse.

    Attributes
    ----------
    data : PartData
    policy : PartPolicy
    label_policies : dict of str to Policy
        Each label's own policy (its per-label limits bind the joint choice).
    label_prevalence : dict of str to float
        The line's prevalence per label (the policy's, else the sample's share).
    prevalence_from_sample : tuple of str
        Labels whose prevalence is the sample's share (an assumption to show).
    weights : ndarray
        Line weights per part (:func:`~calibrate.parts.policy.line_weights`).
    prevalence : float
        The line's share of defective parts.
    ship_cost, scrap_cost, review_cost : ndarray
        Weighted cost per part of each outcome: ``w_i * c_FA * weight_i`` for a
        defective part shipped, ``w_i * c_FR`` for a good part scrapped, ``w_i * c_R``
        for a review; 0 where the outcome costs nothing.
    """

    data: PartData
    policy: PartPolicy
    label_policies: dict
    label_prevalence: dict
    prevalence_from_sample: tuple
    weights: np.ndarray = field(repr=False)
    prevalence: float = 0.0
    ship_cost: np.ndarray = field(default=None, repr=False)
    scrap_cost: np.ndarray = field(default=None, repr=False)
    review_cost: np.ndarray = field(default=None, repr=False)

    @property
    def labels(self) -> tuple[str, ...]:
        """The labels, in column order."""
        return self.data.labels


def part_problem(data: PartData, policy: PartPolicy, label_policies=None) -> PartProblem:
    """Prepare per-part data for evaluation and search under a part policy.

    Parameters
    ----------
    data : PartData
    policy : PartPolicy
    label_policies : PolicySet or dict of str to Policy, optional
        Per-label policies: their ``prevalence`` sets the line mix and their limits bind
        the joint choice. Every label must act ``"reject"`` (firing scraps the part).

    Raises
    ------
    InputError
        When a label's action is not ``"reject"``.
    """
    if isinstance(label_policies, PolicySet):
        label_policies = {lab: label_policies.for_label(lab) for lab in data.labels}
    label_policies = dict(label_policies or {})
    prev, from_sample = {}, []
    for j, lab in enumerate(data.labels):
        pol = label_policies.get(lab)
        if pol is not None and pol.action != "reject":
            raise InputError(f"label {lab!r} has action {pol.action!r}; whole-part decisions "
                             "need every label to scrap the part when it fires "
                             "(action = 'reject').")
        if pol is not None and pol.prevalence is not None:
            prev[lab] = float(pol.prevalence)
        else:
            prev[lab] = float(data.truth[:, j].mean())
            from_sample.append(lab)
            if prev[lab] >= 1.0:
                raise InputError(f"label {lab!r} is present on every part; give its line "
                                 "prevalence in the policy.")
    w, pi = line_weights(data.truth, data.labels, prev, policy)
    defective = data.defective
    unknown = sorted(set(policy.false_accept_weights) - set(data.labels))
    if unknown:
        raise InputError(f"[part] false_accept_weights name label(s) {', '.join(unknown)} "
                         f"that the data does not have ({', '.join(data.labels)}).")
    # A part with several defects takes the largest weight of its defect types.
    k = np.array([float(policy.false_accept_weights.get(lab, 1.0)) for lab in data.labels])
    fa_w = np.where(defective, np.where(data.truth, k, -np.inf).max(axis=1), 1.0)
    ship = np.where(defective, w * policy.cost_false_accept * fa_w, 0.0)
    scrap = np.where(defective, 0.0, w * policy.cost_false_reject)
    review = w * (policy.review_cost or 0.0)
    return PartProblem(data, policy, label_policies, prev, tuple(from_sample), w, pi,
                       ship, scrap, review)


@dataclass(frozen=True)
class PartLimitCheck:
    """Whether one part-level limit holds.

    Attributes
    ----------
    name : {"false_accept", "false_reject", "review_fraction"}
    limit : float
    value : float
        The observed rate (false accepts per defective part, false rejects per good
        part) or the line-weighted review share.
    bound : float or None
        Exact one-sided upper bound at the limit's confidence (None for the review
        share: capacity is planned on the expected share, a point estimate).
    confidence : float or None
    met : bool
    """

    name: str
    limit: float
    value: float
    bound: float | None
    confidence: float | None
    met: bool


@dataclass(frozen=True)
class PartFigures:
    """What the station does with every part at one set of cutoffs, and what it costs.

    Attributes
    ----------
    labels : tuple of str
    reject_cutoffs : tuple of float
        ``T_high`` per label (``+inf`` never fires).
    review_cutoffs : tuple of float or None
        ``T_low`` per label when there is a review band, else None.
    n_parts, n_defective, n_good : int
    false_accepts : int
        Defective parts shipped (no label reached its cutoff and none went to review).
    false_rejects : int
        Good parts scrapped.
    n_scrapped, n_review : int
    false_accept_rate, false_reject_rate : float
        Per defective part and per good part (the sample's counts, unweighted).
    false_accept_rate_upper, false_reject_rate_upper : float
        Exact one-sided Clopper-Pearson upper bounds at ``confidence``.
    review_fraction, review_fraction_upper : float
        Share of the sample's parts sent to review, and its exact upper bound.
    line_scrap_fraction, line_review_fraction, line_escape_fraction : float
        At the line's mix (:func:`~calibrate.parts.policy.line_weights`): the share of
        all line parts scrapped, reviewed, and shipped although defective.
    line_false_accept_rate : float
        Share of the line's defective parts shipped (``line_escape_fraction / pi``).
    weighted_false_accept_rate : float or None
        With ``false_accept_weights``: shipped defective parts weighted by their type's
        weight over all defective parts so weighted (a point estimate; no exact bound).
    expected_cost : float
        Expected cost per line part.
    prevalence : float
        The line's share of defective parts used.
    confidence : float
    limit_checks : tuple of PartLimitCheck
    limits_met : bool
    outcome : ndarray of int8
        Per part: 0 accept, 1 review, 2 reject (see :data:`OUTCOMES`).
    """

    labels: tuple[str, ...]
    reject_cutoffs: tuple[float, ...]
    review_cutoffs: tuple[float, ...] | None
    n_parts: int
    n_defective: int
    n_good: int
    false_accepts: int
    false_rejects: int
    n_scrapped: int
    n_review: int
    false_accept_rate: float
    false_accept_rate_upper: float
    false_reject_rate: float
    false_reject_rate_upper: float
    review_fraction: float
    review_fraction_upper: float
    line_scrap_fraction: float
    line_review_fraction: float
    line_escape_fraction: float
    line_false_accept_rate: float
    weighted_false_accept_rate: float | None
    expected_cost: float
    prevalence: float
    confidence: float
    limit_checks: tuple[PartLimitCheck, ...] = ()
    limits_met: bool = True
    outcome: np.ndarray = field(default=None, repr=False, compare=False)

    def cutoff(self, label: str) -> float:
        """The reject cutoff of ``label``."""
        return self.reject_cutoffs[self.labels.index(label)]

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON friendly apart from ``inf``), without per-part outcomes."""
        d = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "outcome"}
        d["labels"] = list(self.labels)
        d["reject_cutoffs"] = dict(zip(self.labels, self.reject_cutoffs))
        d["review_cutoffs"] = (None if self.review_cutoffs is None
                               else dict(zip(self.labels, self.review_cutoffs)))
        d["limit_checks"] = [asdict(c) for c in self.limit_checks]
        return d


def _cutoff_vector(problem: PartProblem, cutoffs, what: str) -> np.ndarray:
    labels = problem.labels
    if isinstance(cutoffs, dict):
        unknown = sorted(set(cutoffs) - set(labels))
        if unknown:
            raise InputError(f"{what} name label(s) {', '.join(unknown)} that the part data "
                             f"does not have ({', '.join(labels)}).")
        missing = [lab for lab in labels if lab not in cutoffs]
        if missing:
            raise InputError(f"{what} give no cutoff for {', '.join(missing)}; use inf for "
                             "a label that never fires.")
        vec = np.array([float(cutoffs[lab]) for lab in labels])
    else:
        vec = np.asarray(cutoffs, dtype=np.float64).reshape(-1)
        if vec.shape != (len(labels),):
            raise InputError(f"{what} must give one cutoff per label ({len(labels)}).")
    if np.isnan(vec).any():
        raise InputError(f"{what} contain NaN.")
    return vec


def part_outcomes(scores: np.ndarray, high: np.ndarray, low: np.ndarray) -> np.ndarray:
    """Outcome code per part (0 accept, 1 review, 2 reject) for cutoff vectors."""
    rej = (scores >= high).any(axis=1)
    rev = (scores >= low).any(axis=1) & ~rej
    return np.where(rej, REJECT, np.where(rev, REVIEW, ACCEPT)).astype(np.int8)


def evaluate_parts(problem: PartProblem, reject_cutoffs, review_cutoffs=None) -> PartFigures:
    """Part-level outcome, rates, exact bounds and expected cost of a set of cutoffs.

    Parameters
    ----------
    problem : PartProblem
        From :func:`part_problem`.
    reject_cutoffs : dict of str to float, or array-like
        ``T_high`` per label: a part is scrapped when any label's score is ``>=`` it.
    review_cutoffs : dict or array-like, optional
        ``T_low`` per label (``<= T_high``): a part not scrapped goes to review when any
        label's score is ``>=`` it. None: no review band.

    Returns
    -------
    PartFigures
        Rates are counts over the sample's defective / good parts with exact
        Clopper-Pearson bounds; ``expected_cost`` and the ``line_*`` shares use the
        line weights: ``sum_i w_i * cost_i``.

    Raises
    ------
    InputError
        On a missing label, NaN, or ``T_low > T_high``.
    """
    high = _cutoff_vector(problem, reject_cutoffs, "reject cutoffs")
    low = high if review_cutoffs is None else _cutoff_vector(problem, review_cutoffs,
                                                             "review cutoffs")
    if (low > high).any():
        lab = problem.labels[int(np.argmax(low > high))]
        raise InputError(f"{lab}: the review cutoff must not be above the reject cutoff "
                         "(accept < T_low <= review < T_high <= reject).")
    d, pol = problem.data, problem.policy
    out = part_outcomes(d.scores, high, low)
    defective = d.defective
    fa = int(((out == ACCEPT) & defective).sum())
    fr = int(((out == REJECT) & ~defective).sum())
    n_rev = int((out == REVIEW).sum())
    w = problem.weights
    cost = float(np.sum(np.where(out == ACCEPT, problem.ship_cost,
                                 np.where(out == REJECT, problem.scrap_cost,
                                          problem.review_cost))))
    conf = pol.confidence
    fa_rate = fa / d.n_defective if d.n_defective else 0.0
    fr_rate = fr / d.n_good if d.n_good else 0.0
    escape = float(w[(out == ACCEPT) & defective].sum())
    weighted = None
    if pol.false_accept_weights and d.n_defective:
        v = problem.ship_cost / np.where(w > 0, w, 1.0)
        weighted = float(v[(out == ACCEPT) & defective].sum() / v[defective].sum()) \
            if v[defective].sum() > 0 else 0.0
    line_review = float(w[out == REVIEW].sum())
    checks = _limit_checks(pol, fa, d.n_defective, fr, d.n_good, line_review)
    return PartFigures(
        labels=problem.labels,
        reject_cutoffs=tuple(float(x) for x in high),
        review_cutoffs=None if review_cutoffs is None else tuple(float(x) for x in low),
        n_parts=d.n_parts, n_defective=d.n_defective, n_good=d.n_good,
        false_accepts=fa, false_rejects=fr,
        n_scrapped=int((out == REJECT).sum()), n_review=n_rev,
        false_accept_rate=fa_rate,
        false_accept_rate_upper=_upper(fa, d.n_defective, conf),
        false_reject_rate=fr_rate,
        false_reject_rate_upper=_upper(fr, d.n_good, conf),
        review_fraction=n_rev / d.n_parts,
        review_fraction_upper=_upper(n_rev, d.n_parts, conf),
        line_scrap_fraction=float(w[out == REJECT].sum()),
        line_review_fraction=line_review,
        line_escape_fraction=escape,
        line_false_accept_rate=escape / problem.prevalence if problem.prevalence else 0.0,
        weighted_false_accept_rate=weighted,
        expected_cost=cost, prevalence=problem.prevalence, confidence=conf,
        limit_checks=checks, limits_met=all(c.met for c in checks), outcome=out,
    )


def _upper(k: int, n: int, conf: float) -> float:
    return float(stats.clopper_pearson_upper(k, n, conf)) if n else 1.0


def _limit_checks(pol: PartPolicy, fa: int, n_def: int, fr: int, n_good: int,
                  line_review: float) -> tuple[PartLimitCheck, ...]:
    out = []
    conf = pol.limit_confidence
    for name, limit, k, n in (("false_accept", pol.max_false_accept_rate, fa, n_def),
                              ("false_reject", pol.max_false_reject_rate, fr, n_good)):
        if limit is not None:
            bound = _upper(k, n, conf)
            out.append(PartLimitCheck(name, float(limit), k / n if n else 0.0, bound, conf,
                                      bound <= limit))
    if pol.max_review_fraction is not None:
        out.append(PartLimitCheck("review_fraction", float(pol.max_review_fraction),
                                  line_review, None, None,
                                  line_review <= pol.max_review_fraction + 1e-12))
    return tuple(out)

