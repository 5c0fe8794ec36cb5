"""calibrate: turn raw detector confidence scores into defensible, cost-weighted cutoffs.

The public names most users need are re-exported here:

* :func:`error_curve` / :class:`ErrorCurve` - exact false-positive / false-negative
  counts and rates at every distinct score.
* :func:`choose_threshold` / :class:`ThresholdChoice` / :class:`Policy` - the cost-minimal
  threshold, optionally under limits judged on exact confidence bounds.
* :mod:`calibrate.stats` - Clopper-Pearson bounds, samples needed, bootstrap.
"""

from calibrate.curves import CountTable, EqualErrorRate, ErrorCurve, count_table, error_curve
from calibrate.errors import (
    CalibrateError,
    CalibrateWarning,
    InputError,
    NoRankingInformationWarning,
)
from calibrate.thresholds import LimitCheck, Policy, ThresholdChoice, choose_threshold

__version__ = "0.1.0"

__all__ = [
    "CalibrateError",
    "CalibrateWarning",
    "CountTable",
    "EqualErrorRate",
    "ErrorCurve",
    "InputError",
    "LimitCheck",
    "NoRankingInformationWarning",
    "Policy",
    "ThresholdChoice",
    "choose_threshold",
    "count_table",
    "error_curve",
    "__version__",
]
