"""Detectors: one module per detector family, all behind the :class:`Detector` protocol.

See :mod:`calibrate.detectors.base` for the protocol, the result types and the error
taxonomy the runner relies on.
"""

from calibrate.detectors.base import (
    Box,
    Detection,
    Detector,
    DetectorError,
    FatalDetectorError,
    ImageError,
    Result,
    RetryableError,
)

__all__ = [
    "Box",
    "Detection",
    "Detector",
    "DetectorError",
    "FatalDetectorError",
    "ImageError",
    "Result",
    "RetryableError",
]
