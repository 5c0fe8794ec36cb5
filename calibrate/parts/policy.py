"""The ``[part]`` policy: what a whole part's outcomes cost and which limits they must meet.

A QC station scraps a part when *any* defect label fires. The ``[part]`` table of a
policy or study file states the costs per part, part-level limits, an optional review
band (``review_cost``, ``max_review_fraction``) and the line's share of defective parts::

    [part]
    cost_false_accept = 50          # a defective part shipped (nothing flagged it)
    cost_false_reject = 1           # a good part scrapped (something flagged it)
    max_false_reject_rate = 0.10    # scrap at most 10% of good parts ...
    max_false_accept_rate = 0.05    # ... and ship at most 5% of defective parts
    review_cost = 0.3               # a person looks at the part (optional)
    max_review_fraction = 0.05      # at most 5% of the line's parts go to review
    # prevalence = 0.06             # share of defective parts; default: from the labels'
    deploy = "joint"                # which cutoffs exports write: per_label | joint | review_band
    [part.false_accept_weights]
    crack = 5                       # shipping a crack costs 5x cost_false_accept

Costs and ``confidence`` default to the policy's ``[defaults]``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from calibrate import stats
from calibrate.checks import check_confidence, check_cost, check_prevalence, check_rate
from calibrate.errors import InputError
# One wrapper turns a value check's InputError into a PolicyError naming the key.
from calibrate.policy import PolicyError, PolicySet, _checked

__all__ = ["DEPLOY", "PartPolicy", "line_weights", "part_policy"]

#: The cutoff sets a ``[part]`` policy can deploy (``deploy = ...``), and the name of the
#: :class:`calibrate.parts.PartRow` each one is.
DEPLOY = {"per_label": "per-label", "joint": "joint", "review_band": "review band"}


@dataclass(frozen=True)
class PartPolicy:
    """Costs and limits of whole-part decisions (the station scraps on any label).

    Parameters
    ----------
    cost_false_accept : float
        Cost of shipping a defective part (no label fired although one is present).
    cost_false_reject : float
        Cost of scrapping a good part (some label fired on a part with no defect).
    review_cost : float, optional
        Cost of sending one part to a person. Given: a review band is chosen too. A
        reviewed part is assumed to be judged correctly (a defect is caught, a good
        part ships), so it costs ``review_cost`` and nothing else.
    max_review_fraction : float, optional
        Review capacity: at most this share of the line's parts may go to review
        (judged on the line-weighted share, see :func:`line_weights`).
    max_false_accept_rate, max_false_reject_rate : float, optional
        Part-level limits, judged on the exact one-sided Clopper-Pearson upper bound
        at ``confidence`` (each at ``1 - (1 - confidence) / 2`` when both are set).
    confidence : float, default 0.95
    prevalence : float, optional
        The line's share of defective parts. Default: combined from the labels'
        prevalences as if defects occur independently (see :func:`line_weights`).
    false_accept_weights : dict of str to float
        Per defect type, a multiplier of ``cost_false_accept`` (default 1); a part with
        several defects takes the largest.
    deploy : {"per_label", "joint", "review_band"}, default "per_label"
        Which cutoffs the exports write: each label's own choice, the joint choice, or
        the review band (``review_band`` needs ``review_cost``). Exporters that hold one
        cutoff per label write the band's reject cutoff and say that the review band is
        lost.
    """

    cost_false_accept: float
    cost_false_reject: float
    review_cost: float | None = None
    max_review_fraction: float | None = None
    max_false_accept_rate: float | None = None
    max_false_reject_rate: float | None = None
    confidence: float = 0.95
    prevalence: float | None = None
    false_accept_weights: dict = field(default_factory=dict)
    deploy: str = "per_label"

    def __post_init__(self) -> None:
        if self.deploy not in DEPLOY:
            raise PolicyError(f"deploy must be one of {', '.join(map(repr, DEPLOY))}, got "
                              f"{self.deploy!r}.", "deploy")
        if self.deploy == "review_band" and self.review_cost is None:
            raise PolicyError('deploy = "review_band" needs review_cost (the cost of one '
                              "reviewed part); set it or deploy \"joint\".", "deploy")
        for name in ("cost_false_accept", "cost_false_reject"):
            _checked(name, check_cost, getattr(self, name), name)
        if self.cost_false_accept == 0 and self.cost_false_reject == 0:
            raise PolicyError("cost_false_accept and cost_false_reject are both 0; give at "
                              "least one a positive cost.", "cost_false_accept")
        if self.review_cost is not None:
            _checked("review_cost", check_cost, self.review_cost, "review_cost")
        if self.max_review_fraction is not None:
            _checked("max_review_fraction", check_rate, self.max_review_fraction,
                     "max_review_fraction")
            if self.review_cost is None:
                raise PolicyError("max_review_fraction needs review_cost (the cost of one "
                                  "reviewed part); set both or neither.", "max_review_fraction")
        for name in ("max_false_accept_rate", "max_false_reject_rate"):
            if getattr(self, name) is not None:
                _checked(name, check_rate, getattr(self, name), name)
        _checked("confidence", check_confidence, self.confidence)
        if self.prevalence is not None:
            _checked("prevalence", check_prevalence, self.prevalence)
        if not isinstance(self.false_accept_weights, dict):
            raise PolicyError("false_accept_weights must be a table of label = weight.",
                              "false_accept_weights")
        for label, w in self.false_accept_weights.items():
            _checked("false_accept_weights", check_cost, w, f"false_accept_weights.{label}")

    @property
    def has_review(self) -> bool:
        """True when the policy prices a review (so a review band is chosen)."""
        return self.review_cost is not None

    @property
    def limit_confidence(self) -> float:
        """Level each part-level rate limit is tested at (Bonferroni over the two)."""
        n = (self.max_false_accept_rate is not None) + (self.max_false_reject_rate is not None)
        return 1.0 - (1.0 - self.confidence) / 2.0 if n > 1 else float(self.confidence)

    def allowances(self, n_defective: int, n_good: int) -> tuple[float, float]:
        """Largest false-accept and false-reject counts whose exact bounds meet the limits.

        Returns
        -------
        allow_false_accepts, allow_false_rejects : float
            ``inf`` without a limit; ``-1`` when no count can show it.
        """
        conf = self.limit_confidence
        fa = fr = math.inf
        if self.max_false_accept_rate is not None:
            fa = stats.max_errors_within(n_defective, self.max_false_accept_rate, conf)
        if self.max_false_reject_rate is not None:
            fr = stats.max_errors_within(n_good, self.max_false_reject_rate, conf)
        return fa, fr

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form."""
        return asdict(self)


_KEYS = {f.name for f in fields(PartPolicy)}


def part_policy(policies: PolicySet, *, locator=None) -> PartPolicy:
    """The whole-part policy of a policy set: its ``[part]`` table over ``[defaults]``.

    Costs and ``confidence`` default to the set's ``[defaults]`` (and to equal costs
    when those give none), so every policy has a part-level reading.

    Parameters
    ----------
    policies : PolicySet
    locator : calibrate.tomlfile.KeyLocator, optional
        Where the ``[part]`` table was read; default the set's own. Errors then name the
        file, the line and the key.

    Raises
    ------
    PolicyError or TomlKeyError
        Naming the key (and its line) that is wrong.
    """
    loc = locator if locator is not None else policies.locator
    raw = dict(policies.part)
    for key in raw:
        if key not in _KEYS:
            _raise(policies, loc, key, f"unknown [part] key {key!r}; allowed keys are "
                   f"{', '.join(sorted(_KEYS))}.")
    base = {k: policies.defaults[k] for k in ("cost_false_accept", "cost_false_reject",
                                              "confidence") if k in policies.defaults}
    if "cost_false_accept" not in base or "cost_false_reject" not in base:
        base.update(cost_false_accept=1, cost_false_reject=1)
    try:
        return PartPolicy(**{**base, **raw})
    except PolicyError as exc:
        key = exc.key if exc.key in raw else None
        _raise(policies, loc, key, str(exc))
    except TypeError as exc:  # pragma: no cover - all keys are checked above
        raise InputError(f"{policies.source} [part]: {exc}") from None


def _raise(policies: PolicySet, loc, key: str | None, message: str):
    if loc is not None and key is not None and loc.line(("part", key)) is not None:
        raise loc.error(("part", key), message)
    where = f" key {key}" if key else ""
    raise PolicyError(f"{policies.source} [part]{where}: {message}", key)


def line_weights(truth: np.ndarray, labels, label_prevalence: dict,
                 policy: PartPolicy) -> tuple[np.ndarray, float]:
    """Per-part weights that turn the labeled set into the line's mix of parts.

    Labeled sets are enriched with defects, so each part is weighted by how common its
    kind is on the line divided by how common it is in the sample. A part's *type* is
    its set ``S`` of true labels (``{}`` for a good part). With ``pi_l`` the line's
    prevalence of label ``l``:

    * part-level prevalence ``pi = policy.prevalence`` if given, else
      ``pi = 1 - prod_l (1 - pi_l)`` (defects occur independently);
    * the mix of defect types among defective parts, under the same independence, is
      ``r_S = prod_{l in S} pi_l / (1 - pi_l)``, normalised over the types seen in
      the sample: ``q_S = r_S / sum_{S' seen} r_S'`` (types never seen carry no weight:
      there is no evidence about how the detector treats them);
    * weight of a good part ``(1 - pi) / n_good``; of a defective part of type ``S``
      ``pi * q_S / n_S`` (``n_S`` parts of that type in the sample).

    The weights sum to 1, so ``sum_i w_i * cost_i`` is the expected cost per line part
    and ``sum_i w_i * scrapped_i`` the share of the line's parts that is scrapped.

    Parameters
    ----------
    truth : ndarray of bool, shape (n_parts, n_labels)
    labels : sequence of str
    label_prevalence : dict of str to float
        ``pi_l`` per label, strictly between 0 and 1.
    policy : PartPolicy

    Returns
    -------
    weights : ndarray of float, shape (n_parts,)
    prevalence : float
        The part-level prevalence ``pi`` used.
    """
    labels = list(labels)
    pis = np.array([float(label_prevalence[lab]) for lab in labels])
    pi = (float(policy.prevalence) if policy.prevalence is not None
          else float(1.0 - np.prod(1.0 - pis)))
    defective = truth.any(axis=1)
    n_good = int((~defective).sum())
    n_def = int(defective.sum())
    w = np.zeros(truth.shape[0])
    if n_good:
        w[~defective] = (1.0 - pi) / n_good
    if n_def:
        odds = pis / (1.0 - pis)
        # One code per type (the row's labels as bits) so types are counted with unique().
        codes = truth[defective].astype(np.int64) @ (1 << np.arange(len(labels), dtype=np.int64))
        types, inverse, counts = np.unique(codes, return_inverse=True, return_counts=True)
        r = np.array([np.prod(odds[(t >> np.arange(len(labels))) & 1 == 1]) for t in types])
        q = r / r.sum()
        w[defective] = pi * q[inverse] / counts[inverse]
    if not n_good:  # no good parts: the defective ones stand for the whole line
        w = w / w.sum()
    elif not n_def:
        w = w / w.sum()
    return w, pi
