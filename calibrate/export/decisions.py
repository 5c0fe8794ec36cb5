"""Which entries of a thresholds file an exporter may write, and one line for each it
may not.

Unproven limits are a decision, not a fallback: an entry whose decision is ``refuse``
is never written to a deployment's config. The export goes on with every other label,
and the refused one gets a single line that names it, lays out its options (threshold,
cost, rates) and says which policy key deploys one (``if_limit_unproven``), so the
person who must sign off has everything in front of them. A label deployed by sign-off
is written, with a warning saying so. A label that cannot be calibrated has no
threshold at all; each target says what that means for it (Viam drops its detections;
the other targets refuse it unless told to leave it out).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from calibrate import stats
from calibrate.policy import IF_LIMIT_UNPROVEN, by_action
from calibrate.thresholds import format_rate
from calibrate.thresholds_file import ThresholdEntry

__all__ = [
    "Screened",
    "options_text",
    "refusal_line",
    "screen",
    "screened_map",
    "sign_off_warning",
    "uncalibrated_note",
    "uncalibrated_refusal",
]


@dataclass
class Screened:
    """Entries sorted by what an exporter may do with them.

    Attributes
    ----------
    entries : list of ThresholdEntry
        Entries to write (their decision deploys a threshold).
    refused : dict of str to str
        Label -> one-line message, for entries the policy refuses.
    uncalibrated : list of ThresholdEntry
        Entries without a threshold; the target decides what that means.
    warnings : list of str
        Entries written by sign-off.
    """

    entries: list[ThresholdEntry] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)
    uncalibrated: list[ThresholdEntry] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def screen(entries, *, consequence: str = "") -> Screened:
    """Sort ``entries`` into written, refused, uncalibrated.

    Parameters
    ----------
    entries : iterable of ThresholdEntry
    consequence : str, optional
        What leaving a label out means for the target, appended to each refusal
        (e.g. "Viam drops its detections").

    Returns
    -------
    Screened
    """
    out = Screened()
    for e in entries:
        if not e.calibrated:
            out.uncalibrated.append(e)
        elif not e.deployable:
            out.refused[e.label] = refusal_line(e, consequence)
        else:
            out.entries.append(e)
            if e.needs_sign_off:
                out.warnings.append(sign_off_warning(e))
    return out


def _name(e: ThresholdEntry) -> str:
    return f"{e.label} ({e.detector} {e.model_version})"


def _one_line(text: str | None) -> str:
    """A problem's text inside a sentence: one line, no closing full stop."""
    return " ".join(str(text or "no threshold was chosen").split()).rstrip(".")


def _t(threshold: float) -> str:
    """A threshold for a sentence; infinite ones are named by the option already."""
    return "" if math.isinf(threshold) else f" T={threshold:.4g}"


def _limits(e: ThresholdEntry) -> str:
    """The policy's limits in words, e.g. "false-accept rate <= 0.1%"."""
    if e.policy is None or not e.policy.limits():
        return "its limits"
    words = " and ".join(f"{err.replace('_', '-')} rate <= {format_rate(limit)}"
                         for err, limit in e.policy.limits())
    plural = "limits" if len(e.policy.limits()) > 1 else "limit"
    return f"its {plural} ({words} at {e.policy.confidence:.0%} confidence)"


def _about(e: ThresholdEntry) -> str:
    """The class a single limit is about: the one whose errors it counts."""
    limits = e.policy.limits() if e.policy is not None else []
    if len(limits) != 1:
        return "samples"
    fa_on_positives = e.action == "reject"  # reject: a false accept is a missed positive
    positives = (limits[0][0] == "false_accept") == fa_on_positives
    return "positives" if positives else "negatives"


def _why(e: ThresholdEntry) -> str:
    if e.status == "limits_refuted":
        return f"{_limits(e)} is shown to fail at every threshold (more data cannot help)"
    least = _fewest_samples(e)
    need = (f"; at least {least:,} more {_about(e)} would show it (at a threshold with no "
            "errors of that kind; the rule of three)") if least else ""
    return f"{_limits(e)} cannot be shown at any threshold{need}"


def _fewest_samples(e: ThresholdEntry) -> int | None:
    """The fewest more samples that could show the entry's single limit at any threshold:
    at one with no errors of the limited kind (not at the deployed threshold, whose own
    errors may already break the limit)."""
    limits = e.policy.limits() if e.policy is not None else []
    if len(limits) != 1 or e.n_positive is None or e.n_negative is None:
        return None
    error, limit = limits[0]
    n_fa, n_fr = by_action(e.action, e.n_positive, e.n_negative)
    n = n_fa if error == "false_accept" else n_fr
    return stats.samples_needed(limit, e.policy.limit_confidence, errors=0, n=n)


def options_text(e: ThresholdEntry) -> str:
    """The entry's options, short: name, threshold, cost, both rates."""
    return ", ".join(
        f"{o.name.replace('_', '-')}{_t(o.threshold)} cost {o.expected_cost:.4g} "
        f"FA {format_rate(o.false_accept_rate)} FR {format_rate(o.false_reject_rate)}"
        for o in e.options
    )


def refusal_line(e: ThresholdEntry, consequence: str = "") -> str:
    """One line on why an entry is not exported and what would deploy it.

    Parameters
    ----------
    e : ThresholdEntry
        An entry whose (effective) decision is ``refuse``.
    consequence : str, optional
        What leaving it out means for the target.
    """
    choices = " | ".join(f'"{k}"' for k in IF_LIMIT_UNPROVEN if k != "refuse")
    where = f"[labels.{e.label}] of the policy"
    if e.decision is None:  # a file written before decisions were recorded
        act = (f"choose thresholds again to record a decision (set if_limit_unproven = "
               f"{choices} in {where} to deploy an option by sign-off)")
    else:
        act = (f"to deploy one, set if_limit_unproven = {choices} in {where} (a decision "
               "that needs sign-off) and choose thresholds again")
    opts = f"; options: {options_text(e)}" if e.options else ""
    tail = f"; {consequence}" if consequence else ""
    return f"{_name(e)} refused: {_why(e)}{opts}; {act}{tail}."


def sign_off_warning(e: ThresholdEntry) -> str:
    """One line for an entry written although its limits are not met."""
    return (
        f"{_name(e)} exported by sign-off: {_why(e)}; the policy deploys the "
        f"{e.decision.replace('_', '-')} option (if_limit_unproven = \"{e.decision}\"):"
        f"{_t(e.threshold) or ' never fire'}, cost {e.expected_cost:.4g} per item, false "
        f"accepts {format_rate(e.false_accept_rate)} (upper "
        f"{format_rate(e.false_accept_rate_upper)}), false rejects "
        f"{format_rate(e.false_reject_rate)} (upper {format_rate(e.false_reject_rate_upper)})"
        f"{_held_out_text(e)}."
    )


def _held_out_text(e: ThresholdEntry) -> str:
    """The honest figures at the deployed threshold, for whoever signs off."""
    h = e.held_out
    if h is None or h.false_accept_rate is None:
        return ""
    return (f"; on the held-out {h.split} split: false accepts "
            f"{format_rate(h.false_accept_rate)} (upper {format_rate(h.false_accept_rate_upper)}),"
            f" false rejects {format_rate(h.false_reject_rate)} (upper "
            f"{format_rate(h.false_reject_rate_upper)})")


def uncalibrated_refusal(e: ThresholdEntry, consequence: str = "") -> str:
    """One line for a label without a threshold on a target that refuses it by default."""
    tail = f"; {consequence}" if consequence else ""
    return (f"{_name(e)} refused: it cannot be calibrated: {_one_line(e.problem)}{tail}; "
            "pass --allow-missing (allow_missing = true) to export without it.")


def uncalibrated_note(e: ThresholdEntry, what: str) -> str:
    """One line for a label without a threshold that the export leaves out."""
    return f"{_name(e)} cannot be calibrated: {_one_line(e.problem)}; {what}."


def screened_map(entries, *, target: str, allow_missing: bool) -> tuple[Screened, dict, list]:
    """Sort entries for a per-label map target (Rekognition, IMM), which the application
    applies itself: a label without a threshold is refused unless ``allow_missing``.

    Parameters
    ----------
    entries : iterable of ThresholdEntry
    target : str
        The target's name, for the messages.
    allow_missing : bool

    Returns
    -------
    (Screened, dict, list)
        The screened entries, label -> refusal line (policy refusals, and labels that
        cannot be calibrated unless ``allow_missing``), and the labels left out as
        uncalibrated with ``allow_missing``.
    """
    scr = screen(entries, consequence=f"left out of the {target} map (listed under \"refused\")")
    refused = dict(scr.refused)
    missing = []
    for e in scr.uncalibrated:
        if allow_missing:
            missing.append(e.label)
            scr.warnings.append(uncalibrated_note(
                e, "left out (listed under \"uncalibrated\"): the application decides what "
                   "to do with its results"))
        else:
            refused[e.label] = uncalibrated_refusal(e, f"left out of the {target} map")
    return scr, refused, missing
