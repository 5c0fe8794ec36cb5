"""calibrate: turn raw detector confidence scores into defensible, cost-weighted cutoffs.

The public names most users need are re-exported here:

* :func:`error_curve` / :class:`ErrorCurve` - exact false-positive / false-negative
  counts and rates at every distinct score.
* :func:`choose_threshold` / :class:`ThresholdChoice` / :class:`Policy` - the cost-minimal
  threshold, optionally under limits judged on exact confidence bounds.
* :mod:`calibrate.stats` - Clopper-Pearson bounds and samples needed;
  :func:`bootstrap_threshold` - how stable a choice is under resampling.
"""

from calibrate.curves import CountTable, EqualErrorRate, ErrorCurve, count_table, error_curve
from calibrate.errors import (
    CalibrateError,
    CalibrateWarning,
    InputError,
    NoRankingInformationWarning,
)
from calibrate.policy import Policy, PolicySet, load_policy_file
from calibrate.thresholds import LimitCheck, ThresholdChoice, choose_threshold
from calibrate.bootstrap import BootstrapResult, bootstrap_threshold
from calibrate.version import __version__

__all__ = [
    "BootstrapResult",
    "CalibrateError",
    "CalibrateWarning",
    "CountTable",
    "EqualErrorRate",
    "ErrorCurve",
    "InputError",
    "LimitCheck",
    "NoRankingInformationWarning",
    "Policy",
    "PolicySet",
    "ThresholdChoice",
    "bootstrap_threshold",
    "choose_threshold",
    "count_table",
    "error_curve",
    "load_policy_file",
    "__version__",
]
