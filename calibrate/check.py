"""The retraining gate: do the deployed thresholds still hold for a candidate model?

A score distribution moves whenever a model is retrained or re-exported, so a threshold
is only valid for the version it was calibrated on. :func:`check_thresholds` takes the
deployed thresholds file and a store holding the candidate version's scores on labeled
data, and reports per label: the false-accept / false-reject rates the candidate would
get at the deployed threshold (with exact upper bounds), the threshold it should get
under the same policy, the cost change, how far the score distribution moved (two-sample
Kolmogorov-Smirnov statistic against the deployed version's scores when the store has
them, and the shift of each class's median), and whether every limit of the policy
still holds at its confidence. A label present in one version and missing in the other
fails.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from calibrate.curves import error_curve
from calibrate.errors import InputError, NoRankingInformationWarning
from calibrate.thresholds_file import ThresholdEntry, ThresholdsFile
from calibrate.thresholds import (
    ThresholdChoice,
    choose_threshold_from_curve,
    evaluate_threshold,
    format_rate as _pct,
    format_threshold,
)

__all__ = ["COLUMNS", "CheckReport", "LabelGate", "check_thresholds"]


@dataclass
class LabelGate:
    """The gate's verdict on one label.

    Attributes
    ----------
    label : str
    deployed : ThresholdEntry or None
        None for a label the candidate emits that has no deployed threshold.
    at_deployed : ThresholdChoice or None
        The candidate's rates, bounds, cost and limit checks at the deployed threshold.
    recommended : ThresholdChoice or None
        The threshold the candidate should get under the same policy.
    cost_change : float or None
        Expected cost per item at the deployed threshold on the candidate, minus the
        deployed entry's cost on its own calibration data.
    ks_statistic, ks_pvalue : float or None
        Two-sample KS test between the deployed version's and the candidate's scores of
        the label, per class, for the class that moved most ("no result" counted below
        every score). None when the store has no scores of the deployed version.
    median_shift_positive, median_shift_negative : float or None
        Candidate minus deployed median score, per class (finite scores only).
    passed : bool
    reasons : list of str
        Why it failed (empty when it passed).
    """

    label: str
    deployed: ThresholdEntry | None
    at_deployed: ThresholdChoice | None = None
    recommended: ThresholdChoice | None = None
    cost_change: float | None = None
    ks_statistic: float | None = None
    ks_pvalue: float | None = None
    median_shift_positive: float | None = None
    median_shift_negative: float | None = None
    passed: bool = True
    reasons: list[str] = field(default_factory=list)

    def cells(self) -> list[str]:
        """The verdict's table cells (see :data:`COLUMNS`), all but the result."""
        a = self.at_deployed
        return [
            self.label,
            _num(self.deployed.threshold) if self.deployed else "-",
            f"{_pct(a.false_accept_rate)} ({_pct(a.false_accept_rate_upper)})" if a else "-",
            f"{_pct(a.false_reject_rate)} ({_pct(a.false_reject_rate_upper)})" if a else "-",
            _num(self.recommended.threshold) if self.recommended else "-",
            f"{self.cost_change:+.4g}" if self.cost_change is not None else "-",
            f"{self.ks_statistic:.3f}" if self.ks_statistic is not None else "-",
        ]


#: Columns of the gate's table, in the order of :meth:`LabelGate.cells` plus the result.
COLUMNS = (
    "label", "deployed T", "false accept (upper)", "false reject (upper)", "recommended T",
    "cost change", "KS", "result",
)


@dataclass
class CheckReport:
    """All labels' verdicts for one candidate model version.

    Attributes
    ----------
    detector, candidate_version : str
    deployed_version : str
    results : list of LabelGate
    """

    detector: str
    candidate_version: str
    deployed_version: str
    results: list[LabelGate]

    @property
    def passed(self) -> bool:
        """True when every label passed."""
        return all(r.passed for r in self.results)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``--format json``."""
        rows = []
        for r in self.results:
            row: dict[str, Any] = {
                "label": r.label, "passed": r.passed, "reasons": r.reasons,
                "deployed_threshold": r.deployed.threshold if r.deployed else None,
                "cost_change": r.cost_change, "ks_statistic": r.ks_statistic,
                "ks_pvalue": r.ks_pvalue,
                "median_shift_positive": r.median_shift_positive,
                "median_shift_negative": r.median_shift_negative,
            }
            if r.at_deployed is not None:
                a = r.at_deployed
                row["at_deployed"] = {
                    "false_accept_rate": a.false_accept_rate,
                    "false_accept_rate_upper": a.false_accept_rate_upper,
                    "false_reject_rate": a.false_reject_rate,
                    "false_reject_rate_upper": a.false_reject_rate_upper,
                    "expected_cost": a.expected_cost, "limits_met": a.limits_met,
                    "n_positive": a.n_positive, "n_negative": a.n_negative,
                }
            if r.recommended is not None:
                row["recommended_threshold"] = r.recommended.threshold
                row["recommended_expected_cost"] = r.recommended.expected_cost
            rows.append(row)
        return {
            "detector": self.detector, "deployed_version": self.deployed_version,
            "candidate_version": self.candidate_version, "passed": self.passed, "labels": rows,
        }

    def to_markdown(self) -> str:
        """A summary for a merge-request comment."""
        verdict = "PASSED" if self.passed else "FAILED"
        lines = [
            f"### calibrate check: {verdict}",
            "",
            f"Deployed thresholds of `{self.detector} {self.deployed_version}` applied to "
            f"candidate `{self.detector} {self.candidate_version}`.",
            "",
            "| " + " | ".join(COLUMNS) + " |",
            "|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in self.results:
            label, *rest = r.cells()
            cells = [f"`{label}`", *rest, "pass" if r.passed else "**FAIL**"]
            lines.append("| " + " | ".join(cells) + " |")
        failed = [r for r in self.results if not r.passed]
        if failed:
            lines += ["", "Failures:"]
            lines += [f"- `{r.label}`: {' '.join(r.reasons)}" for r in failed]
        return "\n".join(lines) + "\n"

    def to_junit_xml(self) -> str:
        """JUnit XML, one test case per label, for CI systems."""
        import xml.etree.ElementTree as ET

        suite = ET.Element(
            "testsuite", name="calibrate check", tests=str(len(self.results)),
            failures=str(sum(not r.passed for r in self.results)),
        )
        for r in self.results:
            case = ET.SubElement(
                suite, "testcase", classname=f"{self.detector}.{self.candidate_version}", name=r.label
            )
            if not r.passed:
                failure = ET.SubElement(case, "failure", message=" ".join(r.reasons))
                failure.text = " ".join(r.reasons)
        return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


def _num(x: float) -> str:
    return format_threshold(x, never="never", always="always")


def _shift(store, detector, base_version, cand_version, label, split):
    """Per-class KS statistics and median shifts between two versions' scores.

    Per class, so that a candidate set with another mix of positives and negatives does
    not look like a moved score distribution.
    """
    from scipy.stats import ks_2samp

    try:
        base = store.scores(detector, base_version, label, split=split)
    except InputError:
        return {}
    if len(base.scores) == 0:
        return {}
    cand = store.scores(detector, cand_version, label, split=split)
    both = np.concatenate([base.scores, cand.scores])
    finite = both[np.isfinite(both)]
    floor = (finite.min() - 1.0) if finite.size else 0.0
    out = {}
    for cls, name in ((True, "positive"), (False, "negative")):
        # "No result" ranks below every score: one value under the minimum.
        a = base.scores[base.positive == cls]
        b = cand.scores[cand.positive == cls]
        if a.size and b.size:
            ks = ks_2samp(np.where(np.isfinite(a), a, floor), np.where(np.isfinite(b), b, floor))
            out[f"ks_{name}"] = (float(ks.statistic), float(ks.pvalue))
        fa, fb = a[np.isfinite(a)], b[np.isfinite(b)]
        if fa.size and fb.size:
            out[f"median_shift_{name}"] = float(np.median(fb) - np.median(fa))
    return out


def check_thresholds(
    tf: ThresholdsFile,
    store,
    *,
    model_version: str,
    detector: str | None = None,
    deployed_version: str | None = None,
    split: str | None = None,
    max_cost_increase: float | None = None,
) -> CheckReport:
    """Check deployed thresholds against a candidate model version's scores.

    Parameters
    ----------
    tf : ThresholdsFile
        The deployed thresholds.
    store : calibrate.store.ScoreStore
        Holds the candidate's scores on labeled images (the same set or a fresh one).
    model_version : str
        The candidate model version.
    detector : str, optional
        Detector name; default: the one in the thresholds file.
    deployed_version : str, optional
        Which deployed version's entries to use when the file holds several.
    split : str, optional
        Only images of this split.
    max_cost_increase : float, optional
        Also fail a label whose expected cost at the deployed threshold exceeds the
        deployed cost by more than this fraction (0.2 = 20%).

    Returns
    -------
    CheckReport

    Raises
    ------
    InputError
        When the thresholds file is ambiguous or the store has no scores of the
        candidate version.
    """
    entries = tf.one_version(
        detector, deployed_version, why="the gate checks one deployed version, but",
        options="--detector and --deployed-version",
    )
    det, dep_version = entries[0].detector, entries[0].model_version
    known = store.versions()
    row = known[(known["detector"] == det) & (known["model_version"] == model_version)]
    if row.empty:
        have = ", ".join(f"{d} {v}" for d, v in zip(known["detector"], known["model_version"]))
        raise InputError(
            f"the store has no scores of {det} {model_version}; it has {have or 'nothing'}. "
            "Score the candidate first: calibrate score --detector ... --model-version ..."
        )
    cand_labels = set(row.iloc[0]["labels"])
    results = [
        _gate_label(store, e, det, dep_version, model_version, cand_labels, split,
                    max_cost_increase)
        for e in entries
    ]
    for label in sorted(cand_labels - {e.label for e in entries}):
        results.append(
            LabelGate(
                label, None, passed=False,
                reasons=[
                    f"the candidate emits {label!r}, which has no deployed threshold; "
                    "calibrate it before deploying."
                ],
            )
        )
    return CheckReport(det, model_version, dep_version, results)


def _gate_label(store, e: ThresholdEntry, det: str, dep_version: str, model_version: str,
                cand_labels: set, split: str | None,
                max_cost_increase: float | None) -> LabelGate:
    """The gate's verdict on one deployed label."""
    gate = LabelGate(e.label, e)
    if e.label not in cand_labels:
        gate.passed = False
        gate.reasons.append(
            f"the candidate {model_version} has no scores for {e.label!r}, which has a "
            "deployed threshold: was the label renamed or removed?"
        )
        return gate
    try:
        curve = error_curve(store.count_table(det, model_version, e.label, split=split))
    except InputError as exc:
        gate.passed = False
        gate.reasons.append(f"cannot evaluate the candidate: {exc}")
        return gate
    # Costs are compared at the deployed prevalence: the candidate's labeled set may
    # mix classes differently, which says nothing about the production line.
    policy = replace(e.policy, prevalence=e.prevalence)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoRankingInformationWarning)
        gate.at_deployed = evaluate_threshold(curve, e.threshold, policy)
        gate.recommended = choose_threshold_from_curve(curve, policy)
    gate.cost_change = gate.at_deployed.expected_cost - e.expected_cost
    for lc in gate.at_deployed.limit_checks:
        if not lc.met:
            gate.passed = False
            gate.reasons.append(
                f"{lc.error.replace('_', ' ')} rate at the deployed threshold "
                f"{_num(e.threshold)} is {_pct(lc.rate)} ({lc.errors} of {lc.n:,}), upper "
                f"bound {_pct(lc.upper)} at {lc.confidence:.0%}, above the limit {_pct(lc.limit)}."
            )
    _judge_cost(gate, e, max_cost_increase)
    if not gate.at_deployed.has_ranking_information:
        gate.passed = False
        gate.reasons.append("the candidate's scores for this label are all equal.")
    shift = _shift(store, det, dep_version, model_version, e.label, split)
    ks = [shift[k] for k in ("ks_positive", "ks_negative") if k in shift]
    if ks:
        gate.ks_statistic, gate.ks_pvalue = max(ks)  # the class that moved most
    gate.median_shift_positive = shift.get("median_shift_positive")
    gate.median_shift_negative = shift.get("median_shift_negative")
    return gate


def _judge_cost(gate: LabelGate, e: ThresholdEntry, max_cost_increase: float | None) -> None:
    """Fail the label when its expected cost rose by more than the allowed fraction."""
    if max_cost_increase is None:
        return
    # From a cost of 0 any increase is unbounded in relative terms.
    rel = (
        gate.cost_change / e.expected_cost if e.expected_cost > 0
        else (math.inf if gate.cost_change > 0 else 0.0)
    )
    if rel > max_cost_increase:
        gate.passed = False
        gate.reasons.append(
            f"expected cost per item rose {rel:+.0%} ({e.expected_cost:.4g} -> "
            f"{gate.at_deployed.expected_cost:.4g}), more than the allowed "
            f"{max_cost_increase:.0%}; the candidate's own optimum is "
            f"{_num(gate.recommended.threshold)}."
        )
