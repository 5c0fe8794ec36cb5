"""The retraining gate: do the deployed thresholds still hold for a candidate model?

A score distribution moves whenever a model is retrained or re-exported, so a threshold
is only valid for the version it was calibrated on. :func:`check_thresholds` takes the
deployed thresholds file and a store holding the candidate version's scores on labeled
data, and reports per label: the false-accept / false-reject rates the candidate would
get at the deployed threshold (with exact upper bounds), the threshold it should get
under the same policy (its *optimum*), the cost change, the regret, how far the score
distribution moved (two-sample Kolmogorov-Smirnov statistic against the deployed
version's scores when the store has them, and the shift of each class's median), and
the verdict of every pass criterion that applied.

Costs are expected cost per item at the deployed entry's prevalence, so a candidate set
that mixes the classes differently does not look like a cost change.

Criteria (each label says which applied and which failed)
---------------------------------------------------------
``limits``
    Applies when the label's policy sets a rate limit. Each limit is judged on the
    errors ``k`` out of ``n`` items of its class at the deployed threshold, at the
    policy's confidence ``c``, with exact (Clopper-Pearson) one-sided bounds:

    * *shown* (pass) when the upper bound ``U(k, n, c)`` is within the limit (the rule
      :func:`calibrate.thresholds.choose_threshold` uses);
    * *refuted* (fail) when the lower bound ``L(k, n, c)``, the smallest rate under
      which ``k`` or more errors still have probability at least ``1 - c``, exceeds the
      limit;
    * otherwise *insufficient evidence*: ``L <= limit < U``, the data are consistent
      both with the limit holding and with it broken.

    Several limits: refuted if any is refuted, else insufficient if any is, else shown.
``regret``
    On by default (``max_regret=0.25``). The regret is the expected cost at the deployed
    threshold on the candidate data minus the cost of the candidate's optimum (chosen by
    :func:`calibrate.thresholds.choose_threshold_from_curve` on the same data and
    policy). The label fails when the regret is *shown* to exceed ``max_regret`` times
    the optimum's cost: when its exact lower bound (:func:`regret_lower_bound`) does.
    Only the items scored between the two thresholds are decided differently, so the
    bound comes from those items' counts. Requiring the bound, not the observed regret,
    matters: the optimum is chosen on the very data it is scored on, which flatters it
    (on a 180-image held-out split the same model shows 35-60% "regret" against itself).
    When the optimum costs 0 the relative regret is undefined and the comparison is
    absolute: the bound must exceed ``max_regret`` times the deployed entry's cost on
    its own calibration data (any shown regret fails when that is 0 too).
``cost increase``
    Opt-in (``max_cost_increase``): fails when the expected cost at the deployed
    threshold on the candidate exceeds the deployed entry's own cost by more than that
    fraction (observed values; from a cost of 0 any rise fails).
``data``
    Listed only when it fails: a deployed label the candidate lacks, a candidate label
    with no deployed threshold, candidate data that cannot be evaluated, or candidate
    scores that are all equal.

A label with no criterion applied (no limits, regret off, no cost tolerance) passes and
says that nothing was checked.

Outcomes and exit codes
-----------------------
A label *fails* when any criterion fails; otherwise it has *insufficient evidence* when
a limit is neither shown nor refuted; otherwise it *passes*. The report takes the worst
label outcome (fail wins over insufficient evidence). ``calibrate check`` exits with
0 pass, 1 fail, 3 insufficient evidence, and 2 on a usage or data error (unknown split,
label or model version, unreadable files).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from calibrate import stats
from calibrate.checks import check_number
from calibrate.curves import ErrorCurve, error_curve
from calibrate.matching import detection_curve
from calibrate.errors import InputError, NoRankingInformationWarning
from calibrate.parts import PartFigures, PartPolicy, evaluate_parts, part_data_from_store
from calibrate.parts import part_problem
from calibrate.policy import Policy
from calibrate.thresholds_file import ThresholdEntry, ThresholdsFile
from calibrate.thresholds import (
    LimitCheck,
    ThresholdChoice,
    choose_threshold_from_curve,
    evaluate_threshold,
    format_figure,
    format_rate as _pct,
    format_threshold,
)

__all__ = [
    "COLUMNS",
    "DEFAULT_MAX_REGRET",
    "EXIT_CODES",
    "FAIL",
    "INSUFFICIENT",
    "MARKDOWN_COLUMNS",
    "PASS",
    "PASS_CRITERIA",
    "CheckReport",
    "Criterion",
    "LabelGate",
    "LimitEvidence",
    "check_thresholds",
    "limit_evidence",
    "regret_lower_bound",
]

PASS, FAIL, INSUFFICIENT = "pass", "fail", "insufficient evidence"
#: Exit code of ``calibrate check`` per report outcome (2 is a usage or data error).
EXIT_CODES = {PASS: 0, FAIL: 1, INSUFFICIENT: 3}
#: Default regret tolerance: fail when the deployed threshold is shown to cost more than
#: 25% above the candidate's own optimum.
DEFAULT_MAX_REGRET = 0.25
#: The pass criteria proper; "data" only reports why a label could not be judged.
PASS_CRITERIA = ("limits", "regret", "cost increase")
_RANK = {PASS: 0, INSUFFICIENT: 1, FAIL: 2}


def _worst(outcomes) -> str:
    """Fail wins over insufficient evidence, which wins over pass."""
    return max(outcomes, key=_RANK.__getitem__, default=PASS)


@dataclass(frozen=True)
class Criterion:
    """One pass criterion applied to one label.

    Attributes
    ----------
    name : {"limits", "regret", "cost increase", "data"}
    outcome : {"pass", "fail", "insufficient evidence"}
    detail : str
        One or two sentences with the figures behind the outcome.
    """

    name: str
    outcome: str
    detail: str


@dataclass(frozen=True)
class LimitEvidence:
    """What the candidate data say about one limit at one threshold.

    Attributes
    ----------
    outcome : {"pass", "fail", "insufficient evidence"}
        Shown, refuted, or neither (see the module docstring).
    lower, upper : float
        Exact one-sided Clopper-Pearson bounds of the rate at the confidence asked.
    """

    outcome: str
    lower: float
    upper: float


def _lower_bound(errors: int, n: int, confidence: float) -> float:
    """Exact one-sided lower (Clopper-Pearson) bound of a rate: 0 with no errors."""
    if errors <= 0 or n <= 0:
        return 0.0
    return float(stats.clopper_pearson_lower(errors, n, confidence))


def limit_evidence(errors: int, n: int, limit: float, confidence: float) -> LimitEvidence:
    """Whether ``errors`` out of ``n`` show a rate limit, refute it, or neither.

    Parameters
    ----------
    errors, n : int
        Errors of the limited kind and items of the class the limit is about.
    limit : float
        Largest acceptable rate.
    confidence : float
        One-sided confidence of both bounds (the policy's).

    Returns
    -------
    LimitEvidence
        ``pass`` when the upper bound is ``<= limit`` (shown), ``fail`` when the lower
        bound is ``> limit`` (refuted), ``insufficient evidence`` otherwise. The three
        cases are disjoint because ``lower <= errors / n <= upper``.

    Examples
    --------
    >>> limit_evidence(0, 11, 0.001, 0.95).outcome  # 0 of 11: consistent with both
    'insufficient evidence'
    >>> limit_evidence(430, 591, 0.10, 0.95).outcome
    'fail'
    """
    upper = float(stats.clopper_pearson_upper(errors, n, confidence))
    lower = _lower_bound(int(errors), int(n), confidence)
    if upper <= limit:
        return LimitEvidence(PASS, lower, upper)
    return LimitEvidence(FAIL if lower > limit else INSUFFICIENT, lower, upper)


def regret_lower_bound(curve: ErrorCurve, policy: Policy, threshold: float,
                       optimum: float) -> float:
    """Exact lower confidence bound of ``cost(threshold) - cost(optimum)``.

    Only items scored in ``[min(T), max(T))`` of the two thresholds are decided
    differently, so the cost difference per item is ``a * q_neg - b * q_pos`` (or its
    negative), where ``q_neg`` and ``q_pos`` are the shares of negatives and positives in
    that band and ``a``, ``b`` the cost of a false alarm and of a miss weighted by the
    deployment prevalence. The bound takes the exact Clopper-Pearson lower bound of the
    share on the harmful side and the upper bound on the helpful side, each one-sided at
    ``(1 + c) / 2`` so that both hold together at the policy's confidence ``c``
    (Bonferroni). The optimum is taken as given; it was chosen on the same data, so the
    bound is somewhat less conservative than a fixed comparison would be.

    Parameters
    ----------
    curve : ErrorCurve
        The candidate's curve.
    policy : Policy
        With the deployment prevalence set.
    threshold, optimum : float
        The deployed threshold and the candidate's own optimum.

    Returns
    -------
    float
        Cost per item; negative when the data cannot rule out the deployed threshold
        being the cheaper one.
    """
    if threshold == optimum:
        return 0.0
    n_pos, n_neg = curve.n_positive, curve.n_negative
    w = policy.cost_weights(n_pos, n_neg)
    alarm, miss = w.false_alarm * n_neg, w.miss * n_pos  # cost per unit share
    fp_d, fn_d = curve.counts_at(threshold)
    fp_o, fn_o = curve.counts_at(optimum)
    side = (1.0 + policy.confidence) / 2.0
    if threshold < optimum:  # the deployed rule fires on the band: extra false alarms
        harm, n_harm, help_, n_help = fp_d - fp_o, n_neg, fn_o - fn_d, n_pos
        w_harm, w_help = alarm, miss
    else:  # the deployed rule misses the band: extra misses
        harm, n_harm, help_, n_help = fn_d - fn_o, n_pos, fp_o - fp_d, n_neg
        w_harm, w_help = miss, alarm
    if policy.detection_unit:
        # False detections are counted per image (Poisson), misses per object (binomial).
        alarm_first = threshold < optimum
        low = (float(stats.poisson_rate_lower(harm, n_harm, side)) if alarm_first
               else _lower_bound(harm, n_harm, side))
        up = (float(stats.clopper_pearson_upper(help_, n_help, side)) if alarm_first
              else float(stats.poisson_rate_upper(help_, n_help, side)))
        return float(w_harm * low - w_help * up)
    low = _lower_bound(harm, n_harm, side)
    up = float(stats.clopper_pearson_upper(help_, n_help, side))
    return float(w_harm * low - w_help * up)


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
        The candidate's optimum: the threshold it should get under the same policy.
    cost_change, cost_change_relative : float or None
        Expected cost per item at the deployed threshold on the candidate minus the
        deployed entry's cost on its own calibration data; relative to the latter (None
        when that was 0).
    regret, regret_relative : float or None
        Expected cost at the deployed threshold minus the optimum's, on the candidate
        data; relative to the optimum's cost (None when that is 0).
    regret_lower : float or None
        Exact lower confidence bound of the regret (:func:`regret_lower_bound`).
    regret_allowance : float or None
        The largest regret the criterion allows (None when it is off).
    ks_statistic, ks_pvalue : float or None
        Two-sample KS test between the deployed version's and the candidate's scores of
        the label, per class, for the class that moved most ("no result" counted below
        every score). None when the store has no scores of the deployed version.
    median_shift_positive, median_shift_negative : float or None
        Candidate minus deployed median score, per class (finite scores only).
    criteria : list of Criterion
        Every criterion applied, in the order data, limits, cost increase, regret.
    """

    label: str
    deployed: ThresholdEntry | None
    at_deployed: ThresholdChoice | None = None
    recommended: ThresholdChoice | None = None
    cost_change: float | None = None
    cost_change_relative: float | None = None
    regret: float | None = None
    regret_relative: float | None = None
    regret_lower: float | None = None
    regret_allowance: float | None = None
    ks_statistic: float | None = None
    ks_pvalue: float | None = None
    median_shift_positive: float | None = None
    median_shift_negative: float | None = None
    criteria: list[Criterion] = field(default_factory=list)

    @property
    def outcome(self) -> str:
        """``"pass"``, ``"fail"`` or ``"insufficient evidence"`` (the worst criterion)."""
        return _worst(c.outcome for c in self.criteria)

    @property
    def passed(self) -> bool:
        """True when the label passed (insufficient evidence is not a pass)."""
        return self.outcome == PASS

    @property
    def reasons(self) -> list[str]:
        """Why the label did not pass: the details of every criterion that did not."""
        return [c.detail for c in self.criteria if c.outcome != PASS]

    def reasons_text(self) -> str:
        """The reasons as one line, each named by its criterion."""
        return " ".join(f"{c.name}: {c.detail}" for c in self.criteria if c.outcome != PASS)

    @property
    def applied(self) -> list[str]:
        """Names of the pass criteria that applied (empty: nothing was checked)."""
        return [c.name for c in self.criteria if c.name in PASS_CRITERIA]

    @property
    def failed(self) -> list[str]:
        """Names of the criteria that failed."""
        return [c.name for c in self.criteria if c.outcome == FAIL]

    def criteria_text(self) -> str:
        """``"limits: insufficient evidence, regret: fail"``, or says none applied."""
        if not self.criteria:
            return "no criterion applied"
        return ", ".join(f"{c.name}: {c.outcome}" for c in self.criteria)

    def result_text(self) -> str:
        """The outcome in words, saying so when nothing was checked."""
        if self.outcome == PASS and not self.applied:
            return "pass (nothing checked)"
        return {PASS: "pass", FAIL: "FAIL", INSUFFICIENT: "insufficient evidence"}[self.outcome]

    def cells(self) -> list[str]:
        """Compact table cells (see :data:`COLUMNS`), all but the result.

        Figures have 4 significant digits (exact values: ``--format json``). Figures
        that come in pairs (a rate and its upper bound, a change and its relative size)
        are separated by a space, where a narrow table may wrap them.
        """
        a = self.at_deployed

        def rate(x: float) -> str:
            return f"{format_figure(100 * x)}%"

        def pair(absolute: float | None, relative: float | None) -> str:
            if absolute is None:
                return "-"
            rel = f"{format_figure(100 * relative, sign=True)}%" if relative is not None else "(of 0)"
            return f"{format_figure(absolute, sign=True)} {rel}"

        return [
            self.label,
            f"{rate(a.false_accept_rate)} ({rate(a.false_accept_rate_upper)})" if a else "-",
            f"{rate(a.false_reject_rate)} ({rate(a.false_reject_rate_upper)})" if a else "-",
            pair(self.cost_change, self.cost_change_relative),
            pair(self.regret, self.regret_relative),
            format_figure(self.ks_statistic) if self.ks_statistic is not None else "-",
        ]

    def markdown_cells(self) -> list[str]:
        """Cells of :data:`MARKDOWN_COLUMNS`: the terminal's plus thresholds and criteria."""
        a = self.at_deployed
        result = self.result_text()
        return [
            f"`{self.label}`",
            _num(self.deployed.threshold) if self.deployed else "-",
            f"{_pct(a.false_accept_rate)} ({_pct(a.false_accept_rate_upper)})" if a else "-",
            f"{_pct(a.false_reject_rate)} ({_pct(a.false_reject_rate_upper)})" if a else "-",
            _num(self.recommended.threshold) if self.recommended else "-",
            _pair(self.cost_change, self.cost_change_relative, " "),
            _pair(self.regret, self.regret_relative, " "),
            f"{self.ks_statistic:.3f}" if self.ks_statistic is not None else "-",
            self.criteria_text(),
            result if self.outcome == PASS else f"**{result}**",
        ]

    def summary_lines(self) -> list[str]:
        """Plain-text lines for the terminal: verdict and criteria, thresholds, reasons."""
        lines = [f"{self.label}: {self.result_text()}; {self.criteria_text()}."]
        if self.deployed is not None and self.recommended is not None:
            lines.append(
                f"  threshold: deployed {_num(self.deployed.threshold)}, candidate's "
                f"optimum {_num(self.recommended.threshold)}."
            )
        if not self.applied and self.at_deployed is not None:
            lines.append("  No pass criterion applied: no limits in the policy, regret off, "
                         "no cost tolerance; nothing was checked.")
        for c in self.criteria:
            # A passing criterion is shown only when its figures need a word of caution.
            if c.outcome != PASS or (c.name == "regret" and _above(self)):
                lines.append(f"  {c.name}: {c.detail}")
        return lines

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``--format json``."""
        row: dict[str, Any] = {
            "label": self.label, "outcome": self.outcome, "passed": self.passed,
            "criteria_applied": self.applied, "criteria_failed": self.failed,
            "criteria": [{"name": c.name, "outcome": c.outcome, "detail": c.detail}
                         for c in self.criteria],
            "reasons": self.reasons,
            "deployed_threshold": self.deployed.threshold if self.deployed else None,
            "deployed_expected_cost": self.deployed.expected_cost if self.deployed else None,
            "cost_change": self.cost_change, "cost_change_relative": self.cost_change_relative,
            "regret": self.regret, "regret_relative": self.regret_relative,
            "regret_lower": self.regret_lower, "regret_allowance": self.regret_allowance,
            "ks_statistic": self.ks_statistic, "ks_pvalue": self.ks_pvalue,
            "median_shift_positive": self.median_shift_positive,
            "median_shift_negative": self.median_shift_negative,
        }
        if self.at_deployed is not None:
            a = self.at_deployed
            row["at_deployed"] = {
                "false_accept_rate": a.false_accept_rate,
                "false_accept_rate_upper": a.false_accept_rate_upper,
                "false_reject_rate": a.false_reject_rate,
                "false_reject_rate_upper": a.false_reject_rate_upper,
                "expected_cost": a.expected_cost, "limits_met": a.limits_met,
                "n_positive": a.n_positive, "n_negative": a.n_negative,
            }
        if self.recommended is not None:
            row["recommended_threshold"] = self.recommended.threshold
            row["recommended_expected_cost"] = self.recommended.expected_cost
        return row


#: Columns of the terminal table, in the order of :meth:`LabelGate.cells` plus the result.
COLUMNS = (
    "label", "false accept", "false reject", "cost change", "regret", "KS", "result",
)
#: Columns of the Markdown table, in the order of :meth:`LabelGate.markdown_cells`.
MARKDOWN_COLUMNS = (
    "label", "deployed T", "false accept (upper)", "false reject (upper)", "optimum T",
    "cost change", "regret", "KS", "criteria", "result",
)
_VERDICT = {PASS: "PASSED", FAIL: "FAILED", INSUFFICIENT: "INSUFFICIENT EVIDENCE"}


def _above(gate: LabelGate) -> bool:
    """True when the observed regret exceeds the allowance (shown or not)."""
    return (gate.regret is not None and gate.regret_allowance is not None
            and gate.regret > gate.regret_allowance)


def _num(x: float) -> str:
    return format_threshold(x, never="never", always="always")


def _pair(absolute: float | None, relative: float | None, sep: str) -> str:
    """``+0.629`` and ``+204%`` joined by ``sep``; the relative part says why it is missing."""
    if absolute is None:
        return "-"
    rel = f"{relative:+.0%}" if relative is not None else "(of 0)"
    return f"{absolute:+.3g}{sep}{rel}"


@dataclass
class CheckReport:
    """All labels' verdicts for one candidate model version.

    Attributes
    ----------
    detector, candidate_version : str
    deployed_version : str
    results : list of LabelGate
    split : str or None
        The split of the candidate data (None: all images).
    max_regret, max_cost_increase : float or None
        The tolerances that applied (None: off).
    parts : PartFigures or None
        Whole parts at the deployed per-label cutoffs on the candidate's data, when the
        thresholds file recorded part-level figures (its policy had a ``[part]`` table).
        Shown beside the per-label verdicts; not a pass criterion.
    parts_deployed : dict or None
        The file's recorded part-level figures of the same cutoffs (calibration data).
    """

    detector: str
    candidate_version: str
    deployed_version: str
    results: list[LabelGate]
    split: str | None = None
    max_regret: float | None = DEFAULT_MAX_REGRET
    max_cost_increase: float | None = None
    parts: PartFigures | None = None
    parts_deployed: dict | None = None

    def parts_lines(self) -> list[str]:
        """Whole-part figures at the deployed cutoffs, candidate beside deployed."""
        if self.parts is None:
            return []
        f, d = self.parts, self.parts_deployed or {}

        def pct(x):
            return f"{100 * float(x):.3g}%"

        line = (f"Whole parts at the deployed cutoffs on {self.candidate_version}: scraps "
                f"{pct(f.false_reject_rate)} (up {pct(f.false_reject_rate_upper)}) of good "
                f"parts, ships {pct(f.false_accept_rate)} (up "
                f"{pct(f.false_accept_rate_upper)}) of defective parts, cost "
                f"{f.expected_cost:.3g} per part")
        if d:
            line += (f"; recorded for {self.deployed_version}: scraps "
                     f"{pct(d['false_reject_rate'])}, ships {pct(d['false_accept_rate'])}, "
                     f"cost {float(d['expected_cost']):.3g}")
        return [line + " (for information; not a pass criterion)."]

    @property
    def outcome(self) -> str:
        """The worst label outcome: fail, else insufficient evidence, else pass."""
        return _worst(r.outcome for r in self.results)

    @property
    def passed(self) -> bool:
        """True when every label passed."""
        return self.outcome == PASS

    @property
    def exit_code(self) -> int:
        """0 pass, 1 fail, 3 insufficient evidence (see :data:`EXIT_CODES`)."""
        return EXIT_CODES[self.outcome]

    @property
    def verdict(self) -> str:
        """``PASSED``, ``FAILED`` or ``INSUFFICIENT EVIDENCE``."""
        return _VERDICT[self.outcome]

    def title(self) -> str:
        """One line naming what was checked against what."""
        where = f" (split {self.split})" if self.split is not None else ""
        return (f"calibrate check: {self.detector} {self.deployed_version} thresholds on "
                f"candidate {self.candidate_version}{where}")

    def to_dict(self) -> dict[str, Any]:
        """Plain data for ``--format json``."""
        return {
            "detector": self.detector, "deployed_version": self.deployed_version,
            "candidate_version": self.candidate_version, "split": self.split,
            "outcome": self.outcome, "passed": self.passed, "exit_code": self.exit_code,
            "max_regret": self.max_regret, "max_cost_increase": self.max_cost_increase,
            "labels": [r.to_dict() for r in self.results],
            **({"parts": {"candidate": self.parts.to_dict(), "deployed": self.parts_deployed}}
               if self.parts is not None else {}),
        }

    def to_markdown(self) -> str:
        """A summary for a merge-request comment."""
        where = f", split `{self.split}`" if self.split is not None else ""
        lines = [
            f"### calibrate check: {self.verdict}",
            "",
            f"Deployed thresholds of `{self.detector} {self.deployed_version}` applied to "
            f"candidate `{self.detector} {self.candidate_version}`{where}. Cost change: "
            "against the deployed cost on its own calibration data; regret: against the "
            "candidate's own optimum.",
            "",
            "| " + " | ".join(MARKDOWN_COLUMNS) + " |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
        ]
        for r in self.results:
            lines.append("| " + " | ".join(r.markdown_cells()) + " |")
        unchecked = [r for r in self.results if r.passed and not r.applied]
        if unchecked:
            lines += ["", "No pass criterion applied (nothing was checked): "
                      + ", ".join(f"`{r.label}`" for r in unchecked) + "."]
        for outcome, heading in ((FAIL, "Failures"), (INSUFFICIENT, "Insufficient evidence")):
            rows = [r for r in self.results if r.outcome == outcome]
            if rows:
                lines += ["", f"{heading}:"]
                lines += [f"- `{r.label}`: {r.reasons_text()}" for r in rows]
        lines += ["", *self.parts_lines()] if self.parts is not None else []
        return "\n".join(lines) + "\n"

    def to_junit_xml(self) -> str:
        """JUnit XML, one test case per label, for CI systems.

        A failed label is a ``<failure>``, insufficient evidence an ``<error>`` of type
        ``insufficient evidence`` (the test could not decide). Each case carries its
        figures as ``<properties>`` and its summary as ``<system-out>``.
        """
        import xml.etree.ElementTree as ET

        suite = ET.Element(
            "testsuite", name="calibrate check", tests=str(len(self.results)),
            failures=str(sum(r.outcome == FAIL for r in self.results)),
            errors=str(sum(r.outcome == INSUFFICIENT for r in self.results)),
        )
        for r in self.results:
            case = ET.SubElement(
                suite, "testcase", classname=f"{self.detector}.{self.candidate_version}", name=r.label
            )
            props = ET.SubElement(case, "properties")
            for key in ("outcome", "cost_change", "cost_change_relative", "regret",
                        "regret_relative", "regret_lower"):
                value = getattr(r, key)
                ET.SubElement(props, "property", name=key,
                              value="" if value is None else str(value))
            ET.SubElement(props, "property", name="criteria_applied", value=", ".join(r.applied))
            ET.SubElement(props, "property", name="criteria_failed", value=", ".join(r.failed))
            if r.outcome != PASS:
                tag = "failure" if r.outcome == FAIL else "error"
                el = ET.SubElement(case, tag, message=r.reasons_text(), type=r.outcome)
                el.text = r.reasons_text()
            ET.SubElement(case, "system-out").text = "\n".join(r.summary_lines())
        return ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n"


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


def _check_tolerance(value: float | None, name: str) -> float | None:
    """A tolerance as given, or None when it is off (None or +inf)."""
    if value is None:
        return None
    x = check_number(value, name)
    if math.isnan(x) or x < 0:
        raise InputError(f"{name} must be a fraction >= 0 (0.25 = 25%; inf turns it off), "
                         f"got {value!r}.")
    return None if math.isinf(x) else x


def _candidate_labels(store, det: str, model_version: str, split: str | None) -> set[str]:
    """Labels of the candidate version, after refusing an unknown version or split."""
    known = store.versions()
    row = known[(known["detector"] == det) & (known["model_version"] == model_version)]
    if row.empty:
        have = ", ".join(f"{d} {v}" for d, v in zip(known["detector"], known["model_version"]))
        raise InputError(
            f"the store has no scores of {det} {model_version}; it has {have or 'nothing'}. "
            "Score the candidate first: calibrate score --detector ... --model-version ..."
        )
    # A gate on part of the candidate's data would pass or fail on a sample nobody chose.
    store.require_complete(det, model_version)
    labels = set(row.iloc[0]["labels"])
    if split is not None:
        splits = store.splits()
        if split not in splits:
            raise InputError(
                f"unknown split {split!r}: the store's images have the splits "
                f"{', '.join(splits) or '(none)'}."
            )
        # Any label will do: the count table covers every image the version scored.
        probe = min(labels) if labels else "-"
        table = store.count_table(det, model_version, probe, split=split)
        if int(table.n_positive.sum() + table.n_negative.sum()) == 0:
            raise InputError(
                f"{det} {model_version} scored no image of split {split!r}; the store's "
                f"splits are {', '.join(splits)}."
            )
    return labels


def check_thresholds(
    tf: ThresholdsFile,
    store,
    *,
    model_version: str,
    detector: str | None = None,
    deployed_version: str | None = None,
    split: str | None = None,
    labels: list[str] | None = None,
    max_regret: float | None = DEFAULT_MAX_REGRET,
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
    labels : list of str, optional
        Only these labels (default: every deployed label and every candidate label).
    max_regret : float or None, default 0.25
        Fail a label whose deployed threshold is shown to cost more than this fraction
        above the candidate's own optimum (see the module docstring); None or ``inf``
        turns the criterion off.
    max_cost_increase : float, optional
        Also fail a label whose expected cost at the deployed threshold exceeds the
        deployed cost by more than this fraction (0.2 = 20%).

    Returns
    -------
    CheckReport
        ``report.exit_code`` is 0 pass, 1 fail, 3 insufficient evidence.

    Raises
    ------
    InputError
        When the thresholds file is ambiguous, the store has no scores of the candidate
        version, the split or a label is unknown, or a tolerance is not a fraction >= 0.
    """
    tol_regret = _check_tolerance(max_regret, "max_regret")
    tol_cost = _check_tolerance(max_cost_increase, "max_cost_increase")
    entries = tf.one_version(
        detector, deployed_version, why="the gate checks one deployed version, but",
        options="--detector and --deployed-version",
    )
    det, dep_version = entries[0].detector, entries[0].model_version
    cand_labels = _candidate_labels(store, det, model_version, split)
    if labels:
        known = sorted(cand_labels | {e.label for e in entries})
        unknown = [lab for lab in labels if lab not in known]
        if unknown:
            raise InputError(
                f"unknown label {', '.join(map(repr, unknown))}: the deployed file and "
                f"{det} {model_version} have {', '.join(known)}."
            )
        entries = [e for e in entries if e.label in labels]
        cand_labels &= set(labels)
    results = [
        _gate_label(store, e, det, dep_version, model_version, cand_labels, split,
                    tol_regret, tol_cost)
        for e in entries
    ]
    for label in sorted(cand_labels - {e.label for e in entries}):
        results.append(LabelGate(label, None, criteria=[Criterion(
            "data", FAIL,
            f"the candidate emits {label!r}, which has no deployed threshold; "
            "calibrate it before deploying.",
        )]))
    parts, parts_deployed = _part_figures(tf, store, entries, det, dep_version,
                                          model_version, split)
    return CheckReport(det, model_version, dep_version, results, split=split,
                       max_regret=tol_regret, max_cost_increase=tol_cost, parts=parts,
                       parts_deployed=parts_deployed)


def _part_figures(tf: ThresholdsFile, store, entries, det: str, dep_version: str,
                  model_version: str, split: str | None):
    """The deployed per-label cutoffs evaluated on the candidate's parts as a whole,
    when the file recorded part-level figures (else ``(None, None)``)."""
    rec = next((p for p in tf.parts if p.get("detector") == det
                and p.get("model_version") == dep_version), None)
    labels = [e.label for e in entries]
    if rec is None or any(e.policy is not None and e.policy.action != "reject"
                          for e in entries):
        return None, None
    known = PartPolicy.__dataclass_fields__
    pol = PartPolicy(**{k: v for k, v in rec.get("policy", {}).items() if k in known})
    data = part_data_from_store(store, det, model_version, labels=labels, split=split)
    prob = part_problem(data, pol, {e.label: e.policy for e in entries if e.policy})
    cut = {e.label: (e.threshold if e.deployable and e.threshold is not None else math.inf)
           for e in entries}
    row = next((r for r in rec.get("rows", []) if r.get("name") == "per-label"), {})
    return evaluate_parts(prob, cut), row.get("calibration")


def _gate_refused(gate: LabelGate, curve, policy: Policy, model_version: str) -> LabelGate:
    """A label the thresholds file refused: nothing was deployed, so there is no cutoff
    to gate; say so, and what the candidate's own data says about the limits now."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoRankingInformationWarning)
        choice = choose_threshold_from_curve(curve, policy)
    gate.recommended = choice
    now = ("its limits can be shown on these data at the candidate's own cutoff "
           f"{_num(choice.threshold)}" if choice.limits_met else
           f"its limits are still not shown on these data ({choice.status.replace('_', ' ')})")
    gate.criteria.append(Criterion(
        "deployment", PASS,
        "nothing was deployed for this label: its limits could not be shown when the "
        "thresholds were chosen and the policy refused it (if_limit_unproven = \"refuse\"); "
        f"the file's figures are for information only. For {model_version}, {now}."))
    return gate


def _gate_label(store, e: ThresholdEntry, det: str, dep_version: str, model_version: str,
                cand_labels: set, split: str | None, max_regret: float | None,
                max_cost_increase: float | None) -> LabelGate:
    """The gate's verdict on one deployed label."""
    gate = LabelGate(e.label, e)
    if e.label not in cand_labels:
        gate.criteria.append(Criterion(
            "data", FAIL,
            f"the candidate {model_version} has no scores for {e.label!r}, which has a "
            "deployed threshold: was the label renamed or removed?",
        ))
        return gate
    try:
        if e.policy is not None and e.policy.detection_unit:
            data = store.detection_count_table(det, model_version, e.label, split=split,
                                               iou_threshold=e.policy.matching_iou)
            curve = detection_curve(data.table, data.n_images, e.label)
        else:
            curve = error_curve(store.count_table(det, model_version, e.label, split=split))
    except InputError as exc:
        gate.criteria.append(Criterion("data", FAIL, f"cannot evaluate the candidate: {exc}"))
        return gate
    # Costs are compared at the deployed prevalence: the candidate's labeled set may
    # mix classes differently, which says nothing about the production line.
    policy = replace(e.policy, prevalence=e.prevalence)
    if not e.deployable:
        return _gate_refused(gate, curve, policy, model_version)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoRankingInformationWarning)
        gate.at_deployed = evaluate_threshold(curve, e.threshold, policy)
        choice = choose_threshold_from_curve(curve, policy)
    # When the candidate cannot meet its limits either, nothing is "its optimum" to
    # deploy; regret is then measured against its cheapest rule (limits ignored), and
    # the limits are judged on their own.
    gate.recommended = choice if choice.deployable else (choice.option("cost_optimal") or choice)
    at, opt = gate.at_deployed.expected_cost, gate.recommended.expected_cost
    gate.cost_change = at - e.expected_cost
    gate.cost_change_relative = gate.cost_change / e.expected_cost if e.expected_cost > 0 else None
    gate.regret = at - opt
    gate.regret_relative = gate.regret / opt if opt > 0 else None
    gate.regret_lower = regret_lower_bound(curve, policy, e.threshold, gate.recommended.threshold)
    if not gate.at_deployed.has_ranking_information:
        gate.criteria.append(Criterion("data", FAIL, "the candidate's scores for this label "
                                                     "are all equal."))
    if gate.at_deployed.limit_checks:
        gate.criteria.append(_judge_limits(gate.at_deployed.limit_checks, e.threshold))
    if max_cost_increase is not None:
        gate.criteria.append(_judge_cost(gate, e, max_cost_increase))
    if max_regret is not None:
        gate.criteria.append(_judge_regret(gate, e, model_version, max_regret))
    shift = _shift(store, det, dep_version, model_version, e.label, split)
    ks = [shift[k] for k in ("ks_positive", "ks_negative") if k in shift]
    if ks:
        gate.ks_statistic, gate.ks_pvalue = max(ks)  # the class that moved most
    gate.median_shift_positive = shift.get("median_shift_positive")
    gate.median_shift_negative = shift.get("median_shift_negative")
    return gate


def _judge_limits(checks: tuple[LimitCheck, ...], threshold: float) -> Criterion:
    """Every limit shown, one refuted, or neither (see :func:`limit_evidence`)."""
    outcomes, parts = [], []
    for lc in checks:
        ev = limit_evidence(lc.errors, lc.n, lc.limit, lc.confidence)
        outcomes.append(ev.outcome)
        word = lc.error.replace("_", " ")
        seen = (f"{word} rate at the deployed threshold {_num(threshold)} is "
                f"{_pct(lc.rate)} ({lc.errors} of {lc.n:,} {lc.about}s)")
        conf = f"{lc.confidence:.0%}"
        if ev.outcome == FAIL:
            parts.append(
                f"{seen}, at least {_pct(ev.lower)} at {conf} confidence (exact lower "
                f"bound; upper {_pct(ev.upper)}), above the limit {_pct(lc.limit)}: broken."
            )
        elif ev.outcome == INSUFFICIENT:
            parts.append(
                f"{seen}; its exact {conf} bounds {_pct(ev.lower)} to {_pct(ev.upper)} "
                f"straddle the limit {_pct(lc.limit)}, so these data neither show nor refute "
                f"it; showing it needs {lc.samples_needed:,} more {lc.about}s with no "
                f"further {word}s."
            )
        else:
            parts.append(f"{seen}, upper bound {_pct(ev.upper)} at {conf}, within the limit "
                         f"{_pct(lc.limit)}.")
    return Criterion("limits", _worst(outcomes), " ".join(parts))


def _judge_cost(gate: LabelGate, e: ThresholdEntry, max_cost_increase: float) -> Criterion:
    """Fail when the expected cost rose by more than the allowed fraction."""
    # From a cost of 0 any increase is unbounded in relative terms.
    rel = (
        gate.cost_change / e.expected_cost if e.expected_cost > 0
        else (math.inf if gate.cost_change > 0 else 0.0)
    )
    at = gate.at_deployed.expected_cost
    if rel > max_cost_increase:
        return Criterion("cost increase", FAIL, (
            f"expected cost per item rose {rel:+.0%} ({e.expected_cost:.4g} -> {at:.4g}), "
            f"more than the allowed {max_cost_increase:.0%}; the candidate's own optimum "
            f"is {_num(gate.recommended.threshold)}."
        ))
    return Criterion("cost increase", PASS, (
        f"expected cost per item {e.expected_cost:.4g} -> {at:.4g} ({rel:+.0%}), within "
        f"the allowed {max_cost_increase:.0%}."
    ))


def _judge_regret(gate: LabelGate, e: ThresholdEntry, model_version: str,
                  max_regret: float) -> Criterion:
    """Fail when the deployed threshold is shown to cost too much more than the optimum."""
    at, opt = gate.at_deployed.expected_cost, gate.recommended.expected_cost
    conf = f"{e.policy.confidence:.0%}"
    low, regret = gate.regret_lower, gate.regret
    head = (f"expected cost per item {at:.4g} at the deployed threshold on {model_version}, "
            f"{opt:.4g} at its own optimum {_num(gate.recommended.threshold)}: regret "
            f"{regret:+.4g}")
    if opt > 0:
        allowance = max_regret * opt
        head += f" ({gate.regret_relative:+.0%}), at least {low:+.4g} ({low / opt:+.0%})"
        allowed = f"the allowed {max_regret:.0%} of the optimum"
    else:
        # No relative scale: compare absolutely, against the share of the cost the
        # deployment was accepted at.
        allowance = max_regret * e.expected_cost
        head += (f", at least {low:+.4g}; the optimum costs 0, so the comparison is "
                 "absolute")
        allowed = (f"the allowed {allowance:.4g} ({max_regret:.0%} of the deployed cost "
                   f"{e.expected_cost:.4g} on its own calibration data)")
    gate.regret_allowance = allowance
    if low > allowance:
        return Criterion("regret", FAIL, f"{head} at {conf} confidence, above {allowed}.")
    note = ""
    if regret > allowance:
        note = (" The observed regret is above it, but not shown: the optimum was chosen "
                "on these same data, which flatters it.")
    return Criterion("regret", PASS,
                     f"{head} at {conf} confidence, within {allowed}.{note}")
