"""Figures of a label decided per detection (``unit = "detection"``).

At the detection unit the two errors are missed objects (a share of ground-truth
objects: binomial, exact Clopper-Pearson bounds) and false detections (counts per
image: not a share of anything, so not drawn as a rate with a binomial band). Two
displays show them, computed once by :func:`detection_arrays`:

* :class:`MissRateDisplay` - miss rate over objects against false detections per
  image, one point per threshold, with the exact two-sided Clopper-Pearson band of the
  miss rate; the chosen cutoff marked.
* :class:`DetectionPrecisionRecallDisplay` - precision (true detections among the kept
  ones) against recall (objects found), both with exact Clopper-Pearson bands: recall
  over objects; precision conditional on the number of detections kept, which treats
  each kept detection as true with one probability (it is exact under that model, not
  across a changing number kept).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from calibrate import stats
from calibrate.curves import ErrorCurve
from calibrate.policy import by_action
from calibrate.thresholds import ThresholdChoice, format_figure, format_rate

from .base import _Inputs, _LabelDisplay
from .common import _MAX_POINTS, _finish_legend, _fmt_threshold, _plain, _prefix, _thin

__all__ = [
    "DetectionArrays",
    "DetectionPrecisionRecallDisplay",
    "MissRateDisplay",
    "detection_arrays",
]

_LINE = "#1f618d"
_BAND = dict(alpha=0.18, linewidth=0)


class DetectionArrays(NamedTuple):
    """What the detection displays draw, per threshold ("keep none" first).

    Attributes
    ----------
    thresholds : ndarray
        ``+inf`` (keep no detection) then every candidate cutoff, descending.
    missed, false_detections, true_detections : ndarray of int
        Objects no kept detection matches; kept detections matching no object; kept
        detections matching an object.
    n_objects, n_images : int
    miss_rate, miss_lower, miss_upper : ndarray
        ``missed / n_objects`` and its exact two-sided Clopper-Pearson interval.
    false_per_image : ndarray
        ``false_detections / n_images``.
    precision, precision_lower, precision_upper : ndarray
        ``true / (true + false)`` and its exact Clopper-Pearson interval conditional on
        the number kept; NaN where nothing is kept.
    confidence : float
        Two-sided coverage of the intervals.
    """

    thresholds: np.ndarray
    missed: np.ndarray
    false_detections: np.ndarray
    true_detections: np.ndarray
    n_objects: int
    n_images: int
    miss_rate: np.ndarray
    miss_lower: np.ndarray
    miss_upper: np.ndarray
    false_per_image: np.ndarray
    precision: np.ndarray
    precision_lower: np.ndarray
    precision_upper: np.ndarray
    confidence: float


def detection_arrays(curve: ErrorCurve, confidence: float = 0.95) -> DetectionArrays:
    """Counts, rates and exact intervals of a detection-unit curve at every cutoff.

    Parameters
    ----------
    curve : ErrorCurve
        From :func:`calibrate.matching.detection_curve` (positives are objects,
        negatives images, false positives false detections).
    confidence : float, default 0.95
        Two-sided coverage of every interval.

    Returns
    -------
    DetectionArrays
    """
    thr, fp, fn = curve.with_never_fire()
    n_obj, n_img = int(curve.n_positive), int(curve.n_negative)
    fp, fn = fp.astype(np.int64), fn.astype(np.int64)
    tp = n_obj - fn
    miss_lo, miss_up = stats.clopper_pearson_interval(fn, n_obj, confidence)
    kept = tp + fp
    some = kept > 0
    prec = np.full(kept.shape, np.nan)
    prec_lo, prec_up = prec.copy(), prec.copy()
    if some.any():
        prec[some] = tp[some] / kept[some]
        lo, up = stats.clopper_pearson_interval(tp[some], kept[some], confidence)
        prec_lo[some], prec_up[some] = lo, up
    return DetectionArrays(thr, fn, fp, tp, n_obj, n_img, fn / n_obj,
                           np.asarray(miss_lo, float), np.asarray(miss_up, float),
                           fp / n_img, prec, prec_lo, prec_up, float(confidence))


def _names(action: str) -> tuple[str, str]:
    """``(missed objects (FA name), false detections (FR name))`` for an action."""
    miss_name, fd_name = by_action(action, "false accepts", "false rejects")
    return f"missed objects ({miss_name})", f"false detections ({fd_name})"


class _DetectionDisplay(_LabelDisplay):
    """Shared constructor and cutoff mark of the two detection displays."""

    def __init__(self, arrays: DetectionArrays, *, action: str = "reject",
                 choice: ThresholdChoice | None = None, threshold_kind: str = "chosen",
                 label: str | None = None, name: str | None = None,
                 curve: ErrorCurve | None = None):
        self.arrays = arrays
        self.action = action
        self.choice = choice
        self.threshold_kind = threshold_kind
        self.label = label
        self.name = name
        self.curve = curve
        self.threshold = None if choice is None else choice.threshold

    @classmethod
    def _from_inputs(cls, inputs: _Inputs, name, plot_kwargs):
        conf = inputs.rules.confidence
        return cls(detection_arrays(inputs.curve, conf), action=inputs.rules.action,
                   choice=inputs.choice, threshold_kind=inputs.kind, label=inputs.label,
                   name=name, curve=inputs.curve)

    def _cutoff_index(self) -> int | None:
        """Row of the arrays at the marked cutoff (the last threshold at or below it:
        the rule ``score >= T`` keeps what that row keeps)."""
        if self.threshold is None:
            return None
        t = self.arrays.thresholds
        at = np.flatnonzero(t >= self.threshold)
        return int(at[-1]) if at.size else 0


class MissRateDisplay(_DetectionDisplay):
    """Miss rate over objects against false detections per image, one point per cutoff.

    The band is the exact two-sided Clopper-Pearson interval of the miss rate (objects
    are the trials). False detections per image carry no band here: they are counts,
    not a binomial rate (their exact Poisson bound at the cutoff is in the table).

    Build it with :meth:`from_result` (or the other ``from_*``); ``plot`` only draws.

    Parameters
    ----------
    arrays : DetectionArrays
    action : {"reject", "accept"}, default "reject"
    choice : ThresholdChoice, optional
    threshold_kind : str, default "chosen"
    label, name : str, optional
    curve : ErrorCurve, optional

    Attributes
    ----------
    ax_, figure_, line_, band_, chosen_point_
    """

    _what = "miss rate vs false detections"

    def plot(self, ax=None, *, name: str | None = None, color: str | None = None,
             max_points: int | None = _MAX_POINTS, show_title: bool = True) -> MissRateDisplay:
        """Draw the curve, its band and the marked cutoff.

        Parameters
        ----------
        ax : matplotlib Axes, optional
        name : str, optional
        color : str, optional
        max_points : int or None, default 800
        show_title : bool, default True

        Returns
        -------
        self
        """
        ax = self._axes(ax)
        a = self.arrays
        prefix = _prefix(name if name is not None else self.name)
        miss_name, fd_name = _names(self.action)
        c = color or _LINE
        idx = _thin(a.thresholds.size, max_points)
        x = a.false_per_image[idx]
        (self.line_,) = ax.step(x, a.miss_rate[idx], where="post", color=c, linewidth=1.6,
                                label=f"{prefix}miss rate".strip())
        self.band_ = ax.fill_between(
            x, a.miss_lower[idx], a.miss_upper[idx], step="post", color=c, **_BAND,
            label=f"{a.confidence:.0%} exact band (Clopper-Pearson over {a.n_objects:,} "
                  "objects)")
        self.chosen_point_ = None
        k = self._cutoff_index()
        if k is not None:
            (self.chosen_point_,) = ax.plot(
                a.false_per_image[k], a.miss_rate[k], "o", color="black", markersize=7,
                label=f"{self.threshold_kind} cutoff T={_fmt_threshold(self.threshold)}: "
                      f"{format_rate(a.miss_rate[k])} missed, "
                      f"{format_figure(a.false_per_image[k], 3)} false/image")
        ax.set_xlabel(f"{fd_name} per image ({a.n_images:,} images)")
        ax.set_ylabel(f"miss rate ({miss_name.split(' (')[1][:-1]})")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlim(left=0)
        ax.grid(True, color="#dddddd", linewidth=0.6)
        if show_title:
            ax.set_title(f"{_plain(self.label) or 'label'}: miss rate vs false detections")
        _finish_legend(ax)
        return self


class DetectionPrecisionRecallDisplay(_DetectionDisplay):
    """Precision against recall of the detections kept at each cutoff, with exact bands.

    Recall is ``true detections / objects`` with the Clopper-Pearson interval over
    objects (drawn as horizontal whiskers at the marked cutoff). Precision is ``true /
    kept`` with the Clopper-Pearson interval conditional on the number kept: exact if
    each kept detection is true with one probability, which is an assumption (the
    number kept is itself random, and detections of one image are not independent).

    Parameters
    ----------
    arrays : DetectionArrays
    action : {"reject", "accept"}, default "reject"
    choice : ThresholdChoice, optional
    threshold_kind : str, default "chosen"
    label, name : str, optional
    curve : ErrorCurve, optional

    Attributes
    ----------
    ax_, figure_, line_, band_, chosen_point_
    """

    _what = "precision-recall"

    def plot(self, ax=None, *, name: str | None = None, color: str | None = None,
             max_points: int | None = _MAX_POINTS,
             show_title: bool = True) -> DetectionPrecisionRecallDisplay:
        """Draw precision against recall, the precision band and the marked cutoff.

        Parameters
        ----------
        ax : matplotlib Axes, optional
        name : str, optional
        color : str, optional
        max_points : int or None, default 800
        show_title : bool, default True

        Returns
        -------
        self
        """
        ax = self._axes(ax)
        a = self.arrays
        prefix = _prefix(name if name is not None else self.name)
        c = color or _LINE
        some = np.flatnonzero(~np.isnan(a.precision))
        idx = some[_thin(some.size, max_points)] if some.size else some
        recall = 1.0 - a.miss_rate
        (self.line_,) = ax.step(recall[idx], a.precision[idx], where="post", color=c,
                                linewidth=1.6, label=f"{prefix}precision".strip())
        self.band_ = ax.fill_between(
            recall[idx], a.precision_lower[idx], a.precision_upper[idx], step="post",
            color=c, **_BAND,
            label=f"{a.confidence:.0%} exact band (Clopper-Pearson given the number kept)")
        self.chosen_point_ = None
        k = self._cutoff_index()
        if k is not None and not np.isnan(a.precision[k]):
            r_lo, r_up = 1.0 - a.miss_upper[k], 1.0 - a.miss_lower[k]
            p = a.precision[k]
            self.chosen_point_ = ax.errorbar(
                recall[k], p, xerr=[[recall[k] - r_lo], [r_up - recall[k]]],
                yerr=[[p - a.precision_lower[k]], [a.precision_upper[k] - p]],
                fmt="o", color="black", markersize=7, capsize=3,
                label=f"{self.threshold_kind} cutoff T={_fmt_threshold(self.threshold)}: "
                      f"recall {format_rate(recall[k])}, precision {format_rate(p)}")
        ax.set_xlabel(f"recall: objects found / {a.n_objects:,} objects")
        ax.set_ylabel("precision (true / kept detections)")
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(True, color="#dddddd", linewidth=0.6)
        if show_title:
            ax.set_title(f"{_plain(self.label) or 'label'}: precision-recall per detection")
        _finish_legend(ax)
        return self
