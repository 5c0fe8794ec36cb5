"""Kept for old imports: the thresholds file now lives in :mod:`calibrate.thresholds_file`
(it sits below the exporters, the store and the gate, which all read it)."""

from calibrate.io import atomic_write_text
from calibrate.thresholds_file import (
    FORMAT,
    ThresholdEntry,
    ThresholdsFile,
    dumps_thresholds,
    read_thresholds_file,
    thresholds_file_from_results,
    write_thresholds_file,
)

__all__ = [
    "FORMAT",
    "ThresholdEntry",
    "ThresholdsFile",
    "atomic_write_text",
    "dumps_thresholds",
    "read_thresholds_file",
    "thresholds_file_from_results",
    "write_thresholds_file",
]
