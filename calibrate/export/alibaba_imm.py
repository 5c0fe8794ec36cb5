"""Alibaba Cloud IMM: per-label / per-attribute thresholds on IMM's 0-1 scale.

IMM's DetectImageFaces returns every face with ``FigureConfidence`` and attribute
values with their confidences; filtering is the application's job, with the same rule
``score >= threshold``. Attribute labels are named as the detector adapter records them
(e.g. ``mask``, ``emotion:happy``).
"""

from __future__ import annotations

from typing import Any

from calibrate.export.rounding import target_values
from calibrate.thresholds_file import ThresholdsFile

__all__ = ["threshold_map"]


def threshold_map(
    tf: ThresholdsFile,
    *,
    detector: str | None = None,
    model_version: str | None = None,
    decimals: int | None = None,
) -> dict[str, Any]:
    """Per-label thresholds (0-1) that reproduce the calibrated decisions.

    Returns
    -------
    dict
        ``{"thresholds": {label: value}, "never_fire": [...], "notes": [...]}``.
    """
    entries = tf.select(detector, model_version)
    tv = target_values(entries, low=0.0, high=1.0, decimals=decimals, target="IMM")
    thresholds, never, notes = tv.values, tv.never_fire, tv.notes
    return {
        "target": "alibaba-cloud-imm",
        "scale": "0-1; keep a result when confidence >= threshold",
        "model_version": sorted({f"{e.detector} {e.model_version}" for e in entries}),
        "thresholds": thresholds,
        "never_fire": never,
        "notes": notes,
    }
