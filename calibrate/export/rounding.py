"""Writing a threshold at a target's precision without changing a single decision.

A threshold ``T`` chosen on calibration data is a data score; the next lower distinct
score is ``b``. Every value in ``(b, T]`` makes the same decisions on that data, so an
exporter that must round picks a value of the target's precision inside that interval,
and says so when none exists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from calibrate.errors import InputError
from calibrate.export.scales import check_scale

__all__ = ["ExportedValue", "TargetValues", "decision_safe", "shortest_safe", "target_values"]


@dataclass(frozen=True)
class ExportedValue:
    """A threshold as written to a target.

    Attributes
    ----------
    value : float
        What the target gets.
    exact : bool
        True when ``value`` makes the same decisions as the calibrated threshold on the
        calibration data.
    note : str
        Why the value differs from a plain rounding, or why decisions change.
    """

    value: float
    exact: bool
    note: str = ""


def _floor_to(x: float, decimals: int) -> float:
    """The largest value with ``decimals`` decimals that is at most ``x`` (float-safe)."""
    step = 10.0 ** -decimals
    k = math.floor(x / step)
    for j in (k + 1, k, k - 1, k - 2):  # x / step can be off by one either way
        cand = round(j * step, decimals)
        if cand <= x:
            return cand
    return round((k - 2) * step, decimals)  # pragma: no cover - unreachable


def decision_safe(threshold: float, next_below: float, decimals: int) -> ExportedValue:
    """The value with ``decimals`` decimals closest to the threshold that keeps every
    calibration decision.

    Parameters
    ----------
    threshold : float
        Calibrated threshold (a finite data score; fire when ``score >= threshold``).
    next_below : float
        Largest calibration score below it (``-inf`` if none).
    decimals : int
        Precision of the target.

    Returns
    -------
    ExportedValue
        The largest value of that precision that is at most ``threshold``, when it is
        still above ``next_below`` (so it is also the closest safe value: anything above
        the threshold would stop firing on the threshold's own score). Otherwise the
        plain rounding, flagged inexact, with a note naming the changed decisions.
    """
    if not math.isfinite(threshold):
        raise ValueError("decision_safe needs a finite threshold")
    cand = _floor_to(threshold, decimals)
    if next_below < cand:
        plain = round(threshold, decimals)
        note = "" if cand == plain else (
            f"{threshold!r} rounds to {plain!r}, which would change decisions; {cand!r} keeps them."
        )
        return ExportedValue(cand, True, note)
    plain = round(threshold, decimals)
    return ExportedValue(
        plain, False,
        f"no value with {decimals} decimals lies in ({next_below!r}, {threshold!r}], so "
        f"{plain!r} changes decisions for calibration scores between them.",
    )


@dataclass
class TargetValues:
    """Thresholds of one model version as a target will hold them.

    Attributes
    ----------
    values : dict of str to float
        Per label, the decision-safe value.
    never_fire : list of str
        Labels whose rule is "never fire" (the target must drop them).
    notes : list of str
        Roundings that needed care, decisions that could not be kept, labels that fire
        on every image.
    """

    values: dict
    never_fire: list
    notes: list


def shortest_safe(
    threshold: float, next_below: float, min_decimals: int = 4, max_decimals: int = 15
) -> ExportedValue:
    """The threshold with the fewest decimals (at least ``min_decimals``) that keeps
    every calibration decision, taken at or just below the threshold.

    Targets that read a JSON number hold a double, so nothing forces rounding; a short
    value is kinder to the people who read configs, and with ``min_decimals`` it moves
    the rule by less than ``10**-min_decimals`` on scores the calibration data did not
    have. Falls back to the threshold itself.
    """
    for d in range(min_decimals, max_decimals + 1):
        v = decision_safe(threshold, next_below, d)
        if v.exact:
            return ExportedValue(v.value, True)
    return ExportedValue(float(threshold), True)


def target_values(
    entries, *, low: float, high: float, decimals: int | None, target: str, min_decimals: int = 4
) -> TargetValues:
    """Decision-safe values for ``entries`` on a target whose scale is ``[low, high]``.

    ``decimals=None`` writes each threshold with the fewest decimals (at least
    ``min_decimals``) that keep its decisions; an integer forces that precision and
    notes any decision it changes.

    Raises
    ------
    InputError
        A label listed twice (several versions mixed), a detector whose known scale is
        not the target's (:func:`calibrate.export.scales.check_scale`), or a threshold
        off the scale.
    """
    out = TargetValues({}, [], [])
    for e in entries:
        check_scale(e.detector, e.model_version, low=low, high=high, target=target)
        if e.label in out.values or e.label in out.never_fire:
            raise InputError(
                f"label {e.label!r} appears for several detectors or versions; export one "
                "model version at a time (--detector, --model-version)."
            )
        t = e.threshold
        if math.isinf(t) and t > 0:
            out.never_fire.append(e.label)
            out.notes.append(f"{e.label}: the calibrated rule is 'never fire'.")
        elif math.isinf(t):
            out.values[e.label] = float(low)
            out.notes.append(
                f"{e.label}: the calibrated rule fires on every image, including images with "
                f"no result; {target} can only act on returned results (written as {low})."
            )
        elif not low <= t <= high:
            raise InputError(
                f"{e.label}: threshold {t!r} is outside {target}'s {low}-{high} scale; was it "
                f"calibrated on another detector ({e.detector})?"
            )
        else:
            if decimals is None:
                v = shortest_safe(t, e.next_score_below, min_decimals)
            else:
                v = decision_safe(t, e.next_score_below, decimals)
            out.values[e.label] = v.value
            if v.note:
                out.notes.append(f"{e.label}: {v.note}")
    return out
