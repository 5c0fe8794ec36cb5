"""Detection error trade-off (DET) curve on normal-deviate axes, with the EER."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from calibrate.curves import EqualErrorRate, ErrorCurve
from calibrate.policy import by_action, error_names
from calibrate.thresholds import ThresholdChoice, format_rate

from .base import _Inputs, _LabelDisplay
from .common import (
    _CENSORED_STYLE,
    _MAX_POINTS,
    _finish_legend,
    _fmt_threshold,
    _plain,
    _prefix,
    _thin,
)

__all__ = ["DetArrays", "DetCurveDisplay", "det_arrays"]

_DET_TICKS = [0.001, 0.01, 0.05, 0.20, 0.5, 0.80, 0.95, 0.99, 0.999]
_DET_LIMIT = 3.3  # about 0.05% .. 99.95%
_DET_CLIP = 3.6   # rates of 0 or 1 run off the frame instead of vanishing
_DET_MARK = 3.22  # marked points at rate 0 or 1 sit on the frame's edge, still visible


class DetArrays(NamedTuple):
    """What :class:`DetCurveDisplay` draws, computed from a curve.

    Attributes
    ----------
    fpr, fnr : ndarray
        False-positive and false-negative rate at every threshold, "never fire" first.
    equal_error_rate : EqualErrorRate
    floor_fpr : float or None
        False-positive rate of the threshold at the detection floor: operating points
        right of it need thresholds below the floor (censored). None without a floor.
    """

    fpr: np.ndarray
    fnr: np.ndarray
    equal_error_rate: EqualErrorRate
    floor_fpr: float | None


def det_arrays(curve: ErrorCurve, detection_floor: float | None = None) -> DetArrays:
    """Both neutral rates at every threshold, the EER, and where censoring starts.

    Parameters
    ----------
    curve : ErrorCurve
    detection_floor : float, optional

    Returns
    -------
    DetArrays
    """
    _, fp, fn = curve.with_never_fire()
    floor_fpr = None
    if detection_floor is not None and math.isfinite(detection_floor):
        floor_fpr = curve.counts_at(detection_floor)[0] / curve.n_negative
    return DetArrays(fp / curve.n_negative, fn / curve.n_positive, curve.equal_error_rate(),
                     floor_fpr)


def _ppf(rate, clip: float = _DET_CLIP):
    from scipy.stats import norm

    return np.clip(norm.ppf(rate), -clip, clip)


class DetCurveDisplay(_LabelDisplay):
    """Detection error trade-off curve on normal-deviate axes, with the EER.

    Both axes are ``scipy.stats.norm.ppf`` of the rates, as in
    :class:`sklearn.metrics.DetCurveDisplay`, so curves of well-separated classes are
    near-straight lines and small rates stay readable. The x axis is the false-positive
    rate in neutral terms, named by the action: false reject for ``reject`` (good parts
    scrapped), false accept for ``accept``.

    Build it with :meth:`from_result`, :meth:`from_count_table`,
    :meth:`from_predictions` or :meth:`from_store`; ``__init__`` only stores what
    :func:`det_arrays` computed, and :meth:`plot` only draws it.

    Parameters
    ----------
    arrays : DetArrays
    action : {"reject", "accept"}, default "reject"
    choice : ThresholdChoice, optional
        The threshold to mark, with its rates.
    threshold_kind : str, default "chosen"
    label, name : str, optional
    detection_floor : float, optional
        Operating points of thresholds below it are shaded as censored.
    curve : ErrorCurve, optional
        The curve the rates come from, kept for reference only.

    Attributes
    ----------
    ax_, figure_
    threshold : float or None
        ``choice.threshold``.
    line_ : Line2D
    eer_point_ : Line2D
    diagonal_ : Line2D
    chosen_point_ : Line2D or None
    censored_span_ : Patch or None
    equal_error_rate : EqualErrorRate
    """

    _what = "DET curve"

    def __init__(
        self,
        arrays: DetArrays,
        *,
        action: str = "reject",
        choice: ThresholdChoice | None = None,
        threshold_kind: str = "chosen",
        label: str | None = None,
        name: str | None = None,
        detection_floor: float | None = None,
        curve: ErrorCurve | None = None,
    ):
        self.arrays = arrays
        self.equal_error_rate = arrays.equal_error_rate
        self.action = action
        self.choice = choice
        self.threshold = None if choice is None else choice.threshold
        self.threshold_kind = threshold_kind
        self.label = label
        self.name = name
        self.detection_floor = detection_floor
        self.curve = curve

    @classmethod
    def _from_inputs(cls, inputs: _Inputs, name, plot_kwargs) -> DetCurveDisplay:
        return cls(det_arrays(inputs.curve, inputs.detection_floor), action=inputs.rules.action,
                   choice=inputs.choice, threshold_kind=inputs.kind, label=inputs.label,
                   name=name, detection_floor=inputs.detection_floor, curve=inputs.curve)

    def plot(
        self,
        ax=None,
        *,
        name: str | None = None,
        color: str | None = None,
        max_points: int | None = _MAX_POINTS,
        show_title: bool = True,
    ) -> DetCurveDisplay:
        """Draw the DET curve.

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
        prefix = _prefix(name if name is not None else self.name)
        fa_name, fr_name = error_names(self.action)
        # Neutral axes: y = misses (false-negative rate), x = false alarms (FPR).
        y_name, x_name = by_action(self.action, fa_name, fr_name)
        a = self.arrays
        idx = _thin(a.fpr.size, max_points)
        c_line = color or "#1f618d"
        eer = a.equal_error_rate
        (self.line_,) = ax.plot(_ppf(a.fpr[idx]), _ppf(a.fnr[idx]), color=c_line,
                                linewidth=1.6, label=f"{prefix}DET curve".strip())
        self._draw_diagonal(ax)
        (self.eer_point_,) = ax.plot(
            _ppf(eer.false_positive_rate, _DET_MARK), _ppf(eer.false_negative_rate, _DET_MARK),
            linestyle="none", marker="D", markersize=6, color=c_line,
            label=f"{prefix}equal error rate {format_rate(eer.rate)} "
            f"(T={_fmt_threshold(eer.threshold)})",
        )
        self._mark_threshold(ax, prefix, color)
        self._draw_censored(ax, prefix)
        ticks = _ppf(_DET_TICKS)
        labels = [f"{s:.0%}" if (100 * s).is_integer() else f"{s:.1%}" for s in _DET_TICKS]
        ax.set_xticks(ticks, labels)
        ax.set_yticks(ticks, labels)
        # Normal-deviate ticks crowd at the middle: tilt them so none print over another.
        ax.tick_params(axis="x", labelrotation=45, labelsize="small")
        ax.tick_params(axis="y", labelsize="small")
        ax.set_xlim(-_DET_LIMIT, _DET_LIMIT)
        ax.set_ylim(-_DET_LIMIT, _DET_LIMIT)
        ax.set_xlabel(f"{x_name} rate")
        ax.set_ylabel(f"{y_name} rate")
        ax.grid(True, color="#dddddd", linewidth=0.6)
        if show_title:
            ax.set_title(f"{_plain(self.label) or 'label'}: DET curve")
        _finish_legend(ax, tick_lines=2)
        return self

    def _draw_diagonal(self, ax) -> None:
        # Overlays of versions share one diagonal.
        for line in ax.lines:
            if getattr(line, "_calibrate_diag", False):
                self.diagonal_ = line
                return
        lim = _DET_LIMIT
        (self.diagonal_,) = ax.plot([-lim, lim], [-lim, lim], color="#999999", linestyle=":",
                                    linewidth=1, label="equal rates")
        self.diagonal_._calibrate_diag = True

    def _mark_threshold(self, ax, prefix: str, color: str | None) -> None:
        self.chosen_point_ = None
        ch = self.choice
        if ch is None:
            return
        fnr, fpr = by_action(self.action, ch.false_accept_rate, ch.false_reject_rate)
        (self.chosen_point_,) = ax.plot(
            _ppf(fpr, _DET_MARK), _ppf(fnr, _DET_MARK),
            linestyle="none", marker="o", markersize=7, markerfacecolor="white",
            markeredgecolor=color or "black",
            label=f"{prefix}{self.threshold_kind} threshold {_fmt_threshold(ch.threshold)}\n"
            f"at it: FA {format_rate(ch.false_accept_rate)}, FR {format_rate(ch.false_reject_rate)}",
        )

    def _draw_censored(self, ax, prefix: str) -> None:
        self.censored_span_ = None
        if self.arrays.floor_fpr is None:
            return
        x0 = float(_ppf(self.arrays.floor_fpr))
        if x0 < _DET_LIMIT:
            self.censored_span_ = ax.axvspan(
                x0, _DET_LIMIT, zorder=0,
                label=f"{prefix}thresholds below detection floor "
                f"{self.detection_floor:g} (censored)",
                **_CENSORED_STYLE,
            )
