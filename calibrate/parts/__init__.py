"""Whole-part decisions: the station scraps a part when any label fires.

* :mod:`~calibrate.parts.data` - the per-part table (one row per image, a score and a
  truth per label), from arrays or from the store;
* :mod:`~calibrate.parts.policy` - the ``[part]`` policy (costs, limits, review band,
  line prevalence) and the line weights;
* :mod:`~calibrate.parts.evaluate` - part-level outcome, false-accept / false-reject
  rates with exact bounds, expected cost per line part, for any cutoff set;
* :mod:`~calibrate.parts.search` - the joint choice of all labels' cutoffs and the
  accept / review / reject band;
* :mod:`~calibrate.parts.decide` - per detector version, the part-level figures of the
  per-label, joint and review-band cutoffs, calibration and held-out, computed once.
"""

from calibrate.parts.data import PartData, part_data, part_data_from_store
from calibrate.parts.evaluate import (
    OUTCOMES,
    PartFigures,
    PartLimitCheck,
    PartProblem,
    evaluate_parts,
    part_problem,
)
from calibrate.parts.policy import DEPLOY, PartPolicy, line_weights, part_policy
from calibrate.parts.search import GUARANTEE, JointChoice, choose_joint, choose_review_band
from calibrate.parts.decide import (
    PartDecision,
    PartRow,
    part_decision,
    part_decisions_from_store,
    parts_skipped,
)

__all__ = [
    "GUARANTEE",
    "OUTCOMES",
    "JointChoice",
    "PartData",
    "PartDecision",
    "PartFigures",
    "PartLimitCheck",
    "DEPLOY",
    "PartPolicy",
    "PartProblem",
    "PartRow",
    "choose_joint",
    "choose_review_band",
    "evaluate_parts",
    "line_weights",
    "part_data",
    "part_data_from_store",
    "part_decision",
    "part_decisions_from_store",
    "parts_skipped",
    "part_policy",
    "part_problem",
]
