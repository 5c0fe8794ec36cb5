"""Figures of one label's calibration, as scikit-learn-style Display objects.

Each display is computed once and drawn many times, as scikit-learn's
``RocCurveDisplay(fpr=..., tpr=...)``: its ``from_*`` class methods compute what it
draws (curve, exact bands, cost curve, feasibility, the rates at the marked threshold)
and ``plot(ax=None)`` only draws that, returning the display with ``ax_`` and
``figure_`` set. The constructors:

* ``from_result(result)`` - from a :class:`~calibrate.thresholds.LabelThreshold` that
  already carries the table, curve, choice, policy and detection floor (what
  :func:`calibrate.thresholds.choose_thresholds_from_store` returns, and what the
  report draws): nothing is chosen again and no curve is built again.
* ``from_count_table(table, ...)``, ``from_predictions(scores, positive, ...)`` (raw
  arrays) and ``from_store(store, detector, model_version, label, ...)`` (a count
  table computed inside the store, so the figure costs no more than the threshold
  does): the curve is built once, and the threshold chosen once when a policy is
  given and no threshold.

Calling ``plot`` of a second display on the same ``ax`` overlays it, which is how
model versions are compared (:func:`overlay_results` from ready analyses,
:func:`plot_version_comparison` from a store).

* :class:`ScoreHistogramDisplay` - scores of images with and without the label, the
  threshold, and a separate "no result" bar for images where the detector returned
  nothing for the label (score ``-inf``).
* :class:`ErrorRatesDisplay` - false-accept and false-reject rate versus threshold with
  exact Clopper-Pearson bands, the limits and the chosen point.
* :class:`ExpectedCostDisplay` - expected cost per item versus threshold, thresholds
  whose limits fail shaded, the chosen minimum marked.
* :class:`DetCurveDisplay` - detection error trade-off on normal-deviate axes with the
  equal error rate marked.
* :class:`ReliabilityDisplay`, :class:`ScoreMeaningDisplay` - what a score means: a
  calibration map's reliability on held-out data (exact intervals per bin), and score ->
  probability on the line per model version (:mod:`.reliability`).

Labels decided per detection (``unit = "detection"``) have their own two displays
(:mod:`.detections`): :class:`MissRateDisplay` (miss rate over objects against false
detections per image) and :class:`DetectionPrecisionRecallDisplay` (precision-recall
with exact bands), computed once by :func:`detection_arrays`.

When the detector cannot report scores below a floor (a service-side cutoff, the
run's ``detection_floor``), the thresholds below it are shaded as censored rather than
hidden: the rates there are not knowable from the data.

Figures are plain :class:`matplotlib.figure.Figure` objects on the Agg canvas, never
pyplot figures, so building them needs no display and leaves pyplot's state alone.
"""

from calibrate.policy import error_names
from calibrate.thresholds import recorded_detection_floor

# html.py reads two private names through the package: F._KINDS and F._plain.
from .common import _plain, figure_key, new_axes  # noqa: F401
from .compare import _KINDS, overlay_results, overlay_versions, plot_version_comparison  # noqa
from .cost import CostArrays, ExpectedCostDisplay, cost_arrays
from .det import DetArrays, DetCurveDisplay, det_arrays
from .detections import (
    DetectionArrays,
    DetectionPrecisionRecallDisplay,
    MissRateDisplay,
    detection_arrays,
)
from .histogram import ScoreHistogramDisplay
from .rates import ErrorRatesDisplay, RateArrays, rate_arrays
from .reliability import ReliabilityDisplay, ScoreMeaningDisplay, plot_label_calibrations

__all__ = [
    "CostArrays",
    "DetArrays",
    "DetCurveDisplay",
    "DetectionArrays",
    "DetectionPrecisionRecallDisplay",
    "ErrorRatesDisplay",
    "ExpectedCostDisplay",
    "MissRateDisplay",
    "RateArrays",
    "ReliabilityDisplay",
    "ScoreHistogramDisplay",
    "ScoreMeaningDisplay",
    "cost_arrays",
    "det_arrays",
    "detection_arrays",
    "error_names",
    "figure_key",
    "new_axes",
    "overlay_results",
    "overlay_versions",
    "plot_label_calibrations",
    "plot_version_comparison",
    "rate_arrays",
    "recorded_detection_floor",
]
