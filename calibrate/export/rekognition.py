"""Amazon Rekognition: per-label ``MinConfidence`` on the API's 0-100 scale.

Rekognition filters results below the call's ``MinConfidence`` and compares with
``Confidence >= MinConfidence``, so per-label cutoffs are applied by application code
after one call. For DetectCustomLabels the call takes a single ``MinConfidence``: it is
set to the lowest per-label cutoff (so no needed result is filtered by the service) and
the per-label filter is applied by the application.

Only thresholds on Rekognition's own 0-100 scale belong here: a detector known to score
0-1 (Viam, IMM, the built-in surface-defect detector) is refused, since its cutoffs
would keep almost every Rekognition result. Labels the policy refuses, and labels that
cannot be calibrated (unless ``allow_missing``), are left out and listed under
``refused`` with one line each; labels deployed by sign-off are written with a note.
"""

from __future__ import annotations

import math
from typing import Any

from calibrate.export.decisions import screened_map
from calibrate.export.rounding import target_values
from calibrate.export.scales import detector_scale
from calibrate.thresholds_file import ThresholdsFile

__all__ = ["min_confidence_map"]


def min_confidence_map(
    tf: ThresholdsFile,
    *,
    detector: str | None = None,
    model_version: str | None = None,
    custom_labels: bool | None = None,
    decimals: int | None = None,
    allow_missing: bool = False,
) -> dict[str, Any]:
    """Per-label ``MinConfidence`` (0-100) that reproduces the calibrated decisions.

    Parameters
    ----------
    tf : ThresholdsFile
        Thresholds in Rekognition's own scale (scores recorded as the API returns them).
    detector, model_version : str, optional
        Which entries to export.
    custom_labels : bool, optional
        Add the single call-level ``MinConfidence`` for DetectCustomLabels. Default: when
        the detector name says custom labels.
    decimals : int, optional
        Force this many decimals; default: the fewest that keep every decision.
    allow_missing : bool, default False
        Leave out labels that cannot be calibrated (listed under ``uncalibrated``)
        instead of refusing them.

    Returns
    -------
    dict
        ``{"MinConfidence": {label: value}, "never_fire": [...], "refused": {label:
        line}, "uncalibrated": [...], "notes": [...]}`` plus ``"CallMinConfidence"`` for
        custom labels. A label whose rule is "never fire" is listed under
        ``never_fire`` (the application drops it). A non-empty ``refused`` means the
        export is incomplete (the CLI exits 1).

    Raises
    ------
    InputError
        A detector known to score on another scale (e.g. 0-1), a threshold off the
        0-100 scale, or a label listed for several versions.
    """
    entries = tf.select(detector, model_version, calibrated_only=False)
    scr, refused, missing = screened_map(entries, target="Rekognition",
                                         allow_missing=allow_missing)
    # 0-100 scale: two decimals move a rule by less than 1e-4 of the scale, as four do on 0-1.
    tv = target_values(
        scr.entries, low=0.0, high=100.0, decimals=decimals, target="Rekognition",
        min_decimals=2,
    )
    thresholds, never, notes = tv.values, tv.never_fire, tv.notes + scr.warnings
    for det in sorted({e.detector for e in entries if detector_scale(e.detector) is None}):
        notes.append(f"{det}: calibrate does not know this detector's scale; these are "
                     "written as Rekognition confidences (0-100), so make sure its scores "
                     "were recorded as Rekognition returns them.")
    out: dict[str, Any] = {
        "target": "amazon-rekognition",
        "scale": "0-100; keep a result when Confidence >= MinConfidence",
        "model_version": sorted({f"{e.detector} {e.model_version}" for e in entries}),
        "MinConfidence": thresholds,
        "never_fire": never,
        "refused": refused,
        "uncalibrated": missing,
        "notes": notes,
    }
    if custom_labels is None:
        custom_labels = any("custom" in e.detector for e in entries)
    if custom_labels:
        # The service filters first; the lowest cutoff, rounded down, loses nothing.
        low = min(thresholds.values(), default=100.0)
        d = 3 if decimals is None else decimals
        out["CallMinConfidence"] = math.floor(low * 10**d) / 10**d
    return out
