"""The score scale of each detector family, so that no threshold lands on a target that
reads another scale.

A threshold is stated in the detector's own scale (Viam and IMM 0-1, Rekognition
0-100). Every 0-1 threshold also lies inside 0-100, so a range check alone would let a
0-1 detector's cutoffs through to Rekognition, where they would keep almost every
result; a 0-100 detector's low cutoffs would likewise pass a 0-1 range check. The
detector's name says which scale its scores are on: the families below are the built-in
ones (their adapters state the scale: ``SCALE`` in :mod:`calibrate.detectors.rekognition`
and :mod:`calibrate.detectors.alibaba_imm`, the logistic of
:mod:`calibrate.detectors.surface`, Viam's 0-1 confidences). Plugins and precomputed
tables have no known scale; their thresholds are only range-checked.
"""

from __future__ import annotations

from calibrate.errors import InputError

__all__ = ["SCALES", "check_scale", "detector_scale"]

#: Name prefix of a detector family -> (low, high) of its scores.
SCALES: dict[str, tuple[float, float]] = {
    "rekognition": (0.0, 100.0),      # rekognition-faces, -labels, -custom-labels
    "alibaba-imm": (0.0, 1.0),        # alibaba-imm-faces
    "viam/": (0.0, 1.0),              # ViamDetector's default name viam/<service>/<mode>
    "surface-defect": (0.0, 1.0),     # a logistic of the filter response
}


def detector_scale(detector: str) -> tuple[float, float] | None:
    """``(low, high)`` of a detector's scores, or None when calibrate does not know it."""
    return next((s for prefix, s in SCALES.items() if detector.startswith(prefix)), None)


def _words(scale: tuple[float, float]) -> str:
    return f"{scale[0]:g}-{scale[1]:g}"


def check_scale(detector: str, model_version: str, *, low: float, high: float,
                target: str) -> bool:
    """Refuse thresholds of a detector whose known scale is not the target's.

    Parameters
    ----------
    detector, model_version : str
    low, high : float
        The target's scale.
    target : str
        Its name, for the message.

    Returns
    -------
    bool
        True when the detector's scale is known (and matches), False when unknown.

    Raises
    ------
    InputError
        When the detector's scale is known and differs from the target's.
    """
    scale = detector_scale(detector)
    if scale is None:
        return False
    if scale != (low, high):
        fits = [name for name, s in (("viam", (0.0, 1.0)), ("alibaba-imm", (0.0, 1.0)),
                                     ("rekognition", (0.0, 100.0))) if s == scale]
        raise InputError(
            f"{detector} {model_version} scores on a {_words(scale)} scale, but {target} "
            f"reads {_words((low, high))}, so its thresholds would be other cutoffs there; "
            f"export them --to {' or '.join(fits)}, or calibrate a {target} detector for "
            "this target."
        )
    return True
