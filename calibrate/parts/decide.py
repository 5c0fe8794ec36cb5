"""Part-level decisions of one detector version, computed once for every surface.

For each (detector, model version): what the line scraps and ships as a whole with
the per-label cutoffs, with the joint cutoffs, and (when the policy prices a review)
with the accept / review / reject band, each on the calibration parts and on the
held-out parts (the honest figures).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from calibrate.errors import InputError
from calibrate.parts.data import PartData, part_data_from_store
from calibrate.parts.evaluate import PartFigures, evaluate_parts, part_problem
from calibrate.parts.policy import DEPLOY, PartPolicy, part_policy
from calibrate.parts.search import GUARANTEE, JointChoice, choose_joint, choose_review_band
from calibrate.policy import PolicySet

__all__ = ["PartDecision", "PartRow", "part_decision", "part_decisions_from_store",
           "parts_skipped"]


@dataclass(frozen=True)
class PartRow:
    """One way of setting the cutoffs, evaluated at the part level.

    Attributes
    ----------
    name : {"per-label", "joint", "review band"}
    calibration : PartFigures
    held_out : PartFigures or None
    choice : JointChoice or None
        How the cutoffs were searched (None for the per-label cutoffs).
    """

    name: str
    calibration: PartFigures
    held_out: PartFigures | None = None
    choice: JointChoice | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form."""
        d = {"name": self.name, "calibration": self.calibration.to_dict(),
             "held_out": None if self.held_out is None else self.held_out.to_dict()}
        if self.choice is not None:
            d.update(exact=self.choice.exact, method=self.choice.method,
                     start=self.choice.start, freed_labels=list(self.choice.freed_labels))
        return d


@dataclass(frozen=True)
class PartDecision:
    """Whole-part figures of one detector version.

    Attributes
    ----------
    detector, model_version : str
    labels : tuple of str
    policy : PartPolicy
    rows : tuple of PartRow
        ``per-label``, ``joint`` and, with a review cost, ``review band``.
    held_out_split : str or None
    notes : tuple of str
        Assumptions the figures rest on (prevalence, refused labels, the guarantee).
    next_score_below : dict of str to float or None
        Per label, the largest calibration score below the deployed reject cutoff (any
        value in between makes the same decisions: what exporters may round to).
    """

    detector: str
    model_version: str
    labels: tuple[str, ...]
    policy: PartPolicy
    rows: tuple[PartRow, ...]
    held_out_split: str | None = None
    notes: tuple[str, ...] = field(default_factory=tuple)
    next_score_below: dict = field(default_factory=dict)

    @property
    def deployed(self) -> PartRow:
        """The row the policy's ``deploy`` names (the cutoffs exports write)."""
        row = self.row(DEPLOY[self.policy.deploy])
        if row is None:  # pragma: no cover - the policy check makes review_band have a row
            raise InputError(f"{self.detector} {self.model_version}: no {self.policy.deploy} "
                             "cutoffs were chosen.")
        return row

    def row(self, name: str) -> PartRow | None:
        """The row called ``name``, or None."""
        return next((r for r in self.rows if r.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form, as recorded in the thresholds file."""
        return {"detector": self.detector, "model_version": self.model_version,
                "labels": list(self.labels), "policy": self.policy.to_dict(),
                "held_out_split": self.held_out_split, "guarantee": GUARANTEE,
                "rows": [r.to_dict() for r in self.rows], "notes": list(self.notes),
                "deploy": self.policy.deploy, "deployed": self._deployed_dict()}

    def _deployed_dict(self) -> dict[str, Any]:
        f = self.deployed.calibration
        return {"row": self.deployed.name,
                "reject_cutoffs": dict(zip(self.labels, f.reject_cutoffs)),
                "review_cutoffs": (None if f.review_cutoffs is None
                                   else dict(zip(self.labels, f.review_cutoffs))),
                "next_score_below": dict(self.next_score_below)}


def _deployed(result) -> float:
    """The cutoff a per-label result deploys: its threshold, or never fire when refused
    or uncalibrated (nothing is exported for it, so nothing fires on the line)."""
    c = result.choice
    return math.inf if c is None or not c.deployable else float(c.threshold)


def _next_below(data: PartData, cutoffs) -> dict:
    """Per label: the largest calibration score strictly below its cutoff (None: none)."""
    out = {}
    for j, lab in enumerate(data.labels):
        col = data.scores[:, j]
        below = col[(col < cutoffs[j]) & np.isfinite(col)]
        out[lab] = float(below.max()) if below.size else None
    return out


def part_decision(calibration: PartData, held_out: PartData | None, policies: PolicySet,
                  per_label: dict, *, detector: str = "", model_version: str = "",
                  held_out_split: str | None = None, policy: PartPolicy | None = None,
                  max_combinations: int = 20_000) -> PartDecision:
    """Evaluate the per-label cutoffs and choose the joint ones (and a review band).

    Parameters
    ----------
    calibration, held_out : PartData
        The parts that choose, and the parts that only check (or None).
    policies : PolicySet
        Per-label policies (line prevalence, per-label limits) and the ``[part]`` table.
    per_label : dict of str to float
        The deployed per-label cutoffs (``inf`` for a label that deploys nothing).
    policy : PartPolicy, optional
        Default :func:`part_policy` of ``policies``.

    Returns
    -------
    PartDecision
    """
    pol = policy if policy is not None else part_policy(policies)
    label_pols = {lab: policies.for_label(lab) for lab in calibration.labels}
    prob = part_problem(calibration, pol, label_pols)
    held = None if held_out is None else part_problem(held_out, pol, label_pols)

    def row(name, high, low=None, choice=None):
        h = None if held is None else evaluate_parts(held, high, low)
        return PartRow(name, evaluate_parts(prob, high, low), h, choice)

    rows = [row("per-label", per_label)]
    joint = choose_joint(prob, start_cutoffs=per_label, max_combinations=max_combinations)
    rows.append(row("joint", joint.reject_cutoffs, None, joint))
    if pol.has_review:
        band = choose_review_band(prob, start_cutoffs=joint.reject_cutoffs,
                                  max_combinations=max_combinations)
        rows.append(row("review band", band.reject_cutoffs, band.review_cutoffs, band))
    notes = []
    if pol.prevalence is None:
        notes.append(f"line share of defective parts {prob.prevalence:.4g} = 1 - prod(1 - "
                     "prevalence per label), as if defects occur independently")
    if prob.prevalence_from_sample:
        notes.append("prevalence taken from the sample (enriched sets overstate it) for "
                      + ", ".join(prob.prevalence_from_sample))
    never = [lab for lab, t in per_label.items() if math.isinf(t)]
    if never:
        notes.append("per-label row: " + ", ".join(never) + " deploy(s) nothing (never fire)")
    if joint.freed_labels:
        notes.append("no cutoff meets the own limits of " + ", ".join(joint.freed_labels)
                     + "; the joint choice ignores those limits for them")
    notes.append(GUARANTEE)
    if pol.has_review:
        notes.append("a reviewed part is assumed judged correctly by the person; review "
                     "capacity is judged on the expected share of line parts")
    deployed = next(r for r in rows if r.name == DEPLOY[pol.deploy])
    return PartDecision(detector, model_version, calibration.labels, pol, tuple(rows),
                        held_out_split, tuple(notes),
                        _next_below(calibration, deployed.calibration.reject_cutoffs))


def part_decisions_from_store(store, results, policies: PolicySet, *,
                              dataset: str | None = None, split: str | None = None
                              ) -> list[PartDecision]:
    """:func:`part_decision` for every (detector, version) in per-label ``results``.

    Parameters
    ----------
    store : calibrate.store.ScoreStore
    results : list of LabelThreshold
        Per-label choices from the same store and split; their ``held_out_split`` is
        the held-out split used here too.
    policies : PolicySet
    dataset, split : str, optional
        As for the per-label choice.

    Returns
    -------
    list of PartDecision
        Empty unless the policy has a ``[part]`` table and every calibrated label acts
        ``reject`` (the station scraps a part when any label fires). A version that
        cannot be read is left out (an ``InputError`` naming why becomes a warning).
    """
    calibrated = [r for r in results if r.choice is not None]
    if not policies.part or not calibrated or parts_skipped(results, policies):
        return []
    pol = part_policy(policies)
    by_version: dict[tuple[str, str], list] = {}
    for r in results:
        by_version.setdefault((r.detector, r.model_version), []).append(r)
    out = []
    for (det, ver), rs in by_version.items():
        labels = sorted(r.label for r in rs)
        held_split = next((r.held_out_split for r in rs if r.held_out_split), None)
        try:
            cal = part_data_from_store(store, det, ver, labels=labels, dataset=dataset,
                                       split=split)
            held = None if held_split is None else part_data_from_store(
                store, det, ver, labels=labels, dataset=dataset, split=held_split)
            per_label = {r.label: _deployed(r) for r in rs}
            out.append(part_decision(cal, held, policies, per_label, detector=det,
                                     model_version=ver, held_out_split=held_split,
                                     policy=pol))
        except InputError as exc:
            warnings.warn(f"no part-level figures for {det} {ver}: {exc}", stacklevel=2)
    return out


def parts_skipped(results, policies: PolicySet) -> str | None:
    """Why a policy with a ``[part]`` table gets no part-level figures, or None.

    The station model (scrap a part when any label fires) holds only when every label
    acts ``reject``; a label that acts ``accept`` (fire = the part is good) does not fit
    it, so the figures are left out, and this says so instead of leaving them out silently.

    Parameters
    ----------
    results : list of LabelThreshold
    policies : PolicySet

    Returns
    -------
    str or None
    """
    if not policies.part:
        return None
    accept = sorted({r.label for r in results
                     if r.choice is not None and r.choice.action != "reject"})
    if not accept:
        return None
    return ("no whole-part figures: the policy has a [part] table, but "
            + ", ".join(accept) + " act(s) \"accept\" (a firing label passes the part), "
            "while the part-level figures assume the station scraps a part when any label "
            "fires; set action = \"reject\" for every label to get them.")
