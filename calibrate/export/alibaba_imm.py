"""Alibaba Cloud IMM: per-label / per-attribute thresholds on IMM's 0-1 scale.

IMM's DetectImageFaces returns every face with ``FigureConfidence`` and attribute
values with their confidences; filtering is the application's job, with the same rule
``score >= threshold``. Attribute labels are named as the detector adapter records them
(e.g. ``mask``, ``emotion:happy``). Labels the policy refuses, and labels that cannot be
calibrated (unless ``allow_missing``), are left out and listed under ``refused``; a
detector known to score on another scale (Rekognition's 0-100) is refused.
"""

from __future__ import annotations

from typing import Any

from calibrate.export.decisions import screened_map
from calibrate.export.rounding import target_values
from calibrate.thresholds_file import ThresholdsFile

__all__ = ["threshold_map"]


def threshold_map(
    tf: ThresholdsFile,
    *,
    detector: str | None = None,
    model_version: str | None = None,
    decimals: int | None = None,
    allow_missing: bool = False,
) -> dict[str, Any]:
    """Per-label thresholds (0-1) that reproduce the calibrated decisions.

    Parameters
    ----------
    tf : ThresholdsFile
    detector, model_version : str, optional
    decimals : int, optional
        Force this many decimals; default: the fewest that keep every decision.
    allow_missing : bool, default False
        Leave out labels that cannot be calibrated (listed under ``uncalibrated``)
        instead of refusing them.

    Returns
    -------
    dict
        ``{"thresholds": {label: value}, "never_fire": [...], "refused": {label: line},
        "uncalibrated": [...], "notes": [...]}``.

    Raises
    ------
    InputError
        A detector known to score on another scale, a threshold off 0-1, or a label
        listed for several versions.
    """
    entries = tf.select(detector, model_version, calibrated_only=False)
    scr, refused, missing = screened_map(entries, target="IMM", allow_missing=allow_missing)
    tv = target_values(scr.entries, low=0.0, high=1.0, decimals=decimals, target="IMM")
    return {
        "target": "alibaba-cloud-imm",
        "scale": "0-1; keep a result when confidence >= threshold",
        "model_version": sorted({f"{e.detector} {e.model_version}" for e in entries}),
        "thresholds": tv.values,
        "never_fire": tv.never_fire,
        "refused": refused,
        "uncalibrated": missing,
        "notes": tv.notes + scr.warnings,
    }
