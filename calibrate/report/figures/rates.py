"""False-accept and false-reject rate versus threshold, with exact bands."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from calibrate import stats
from calibrate.curves import ErrorCurve
from calibrate.policy import Policy, error_names
from calibrate.thresholds import ThresholdChoice, format_rate

from .base import _Inputs, _LabelDisplay
from .common import (
    _FA_COLOR,
    _FR_COLOR,
    _MAX_POINTS,
    _finish_legend,
    _fmt_threshold,
    _plain,
    _prefix,
    _set_xlim,
    _thin,
    _threshold_span,
    _x_range,
)

__all__ = ["ErrorRatesDisplay", "RateArrays", "rate_arrays"]


class RateArrays(NamedTuple):
    """What :class:`ErrorRatesDisplay` draws, computed from a curve and a policy.

    Attributes
    ----------
    thresholds : ndarray
        Finite thresholds, ascending (left to right), thinned for drawing.
    false_accept_rate, false_reject_rate : ndarray
        The rates at those thresholds.
    false_accept_bounds, false_reject_bounds : (ndarray, ndarray) or None
        Lower and upper two-sided exact bounds at the policy's confidence, or None
        when bands were not asked for.
    n_no_result : int
        Items with no result (score ``-inf``): they fire at no finite threshold.
    """

    thresholds: np.ndarray
    false_accept_rate: np.ndarray
    false_reject_rate: np.ndarray
    false_accept_bounds: tuple[np.ndarray, np.ndarray] | None
    false_reject_bounds: tuple[np.ndarray, np.ndarray] | None
    n_no_result: int


def _n_no_result(curve: ErrorCurve) -> int:
    """Items scored ``-inf`` (no result): they fire only at threshold ``-inf``."""
    thr = curve.thresholds
    if thr.size == 0 or np.isfinite(thr[-1]):
        return 0
    everything = curve.n_positive + curve.n_negative
    if thr.size == 1:
        return int(everything)
    return int(everything - curve.false_positives[-2] - curve.true_positives[-2])


def rate_arrays(curve: ErrorCurve, policy: Policy, *, bands: bool = True,
                max_points: int | None = _MAX_POINTS) -> RateArrays:
    """Both error rates per threshold and their exact bands, ready to draw.

    The bands are computed at the thinned thresholds only: they are the costly part
    (two beta quantiles per point) and a screen shows a few hundred points.

    Parameters
    ----------
    curve : ErrorCurve
    policy : Policy
        Names the errors (its action) and gives the confidence of the bands.
    bands : bool, default True
        Compute the Clopper-Pearson bands.
    max_points : int or None, default 800
        Keep at most this many thresholds (None: all).

    Returns
    -------
    RateArrays
    """
    errs = policy.errors(curve.false_negatives, curve.false_positives,
                         curve.n_positive, curve.n_negative)
    finite = np.isfinite(curve.thresholds)
    # Ascending order reads left to right; "no result" (-inf) has no x position.
    x = curve.thresholds[finite][::-1]
    fa_k = errs.false_accepts[finite][::-1]
    fr_k = errs.false_rejects[finite][::-1]
    idx = _thin(x.size, max_points)
    x, fa_k, fr_k = x[idx], fa_k[idx], fr_k[idx]
    fa_bounds = fr_bounds = None
    if bands and x.size:
        fa_bounds = stats.clopper_pearson_interval(fa_k, errs.n_false_accept, policy.confidence)
        fr_bounds = stats.clopper_pearson_interval(fr_k, errs.n_false_reject, policy.confidence)
    return RateArrays(x, fa_k / errs.n_false_accept, fr_k / errs.n_false_reject,
                      fa_bounds, fr_bounds, _n_no_result(curve))


class ErrorRatesDisplay(_LabelDisplay):
    """False-accept and false-reject rate versus threshold, with exact bands.

    The bands are two-sided exact (Clopper-Pearson) intervals at the policy's
    confidence, computed from the error counts at each threshold. Rates are step
    functions: the value at a score holds for every threshold down to the next lower
    score, because those thresholds make the same decisions.

    Build it with :meth:`from_result`, :meth:`from_count_table`,
    :meth:`from_predictions` or :meth:`from_store`; ``__init__`` only stores what
    :func:`rate_arrays` computed, and :meth:`plot` only draws it.

    Parameters
    ----------
    arrays : RateArrays
        Thresholds, both rates and their bands.
    action : {"reject", "accept"}, default "reject"
    confidence : float, default 0.95
        Of the bands (for the legend).
    choice : ThresholdChoice, optional
        The threshold to mark, with its rates.
    threshold_kind : str, default "chosen"
    max_false_accept_rate, max_false_reject_rate : float, optional
        Limits, drawn as horizontal lines.
    label, name : str, optional
    detection_floor : float, optional
    curve : ErrorCurve, optional
        The curve the rates come from, kept for reference only.

    Attributes
    ----------
    ax_, figure_
    threshold : float or None
        ``choice.threshold``.
    line_false_accept_, line_false_reject_ : Line2D
    band_false_accept_, band_false_reject_ : PolyCollection or None
    threshold_line_ : Line2D or None
    chosen_points_ : Line2D or None
        Markers at both rates of the marked threshold.
    limit_lines_ : list of Line2D
    censored_span_ : Patch or None
    """

    _what = "error rates vs threshold"

    def __init__(
        self,
        arrays: RateArrays,
        *,
        action: str = "reject",
        confidence: float = 0.95,
        choice: ThresholdChoice | None = None,
        threshold_kind: str = "chosen",
        max_false_accept_rate: float | None = None,
        max_false_reject_rate: float | None = None,
        label: str | None = None,
        name: str | None = None,
        detection_floor: float | None = None,
        curve: ErrorCurve | None = None,
    ):
        self.arrays = arrays
        self.action = action
        self.confidence = confidence
        self.choice = choice
        self.threshold = None if choice is None else choice.threshold
        self.threshold_kind = threshold_kind
        self.max_false_accept_rate = max_false_accept_rate
        self.max_false_reject_rate = max_false_reject_rate
        self.label = label
        self.name = name
        self.detection_floor = detection_floor
        self.curve = curve

    @classmethod
    def _from_inputs(cls, inputs: _Inputs, name, plot_kwargs) -> ErrorRatesDisplay:
        p = inputs.rules
        rates = rate_arrays(inputs.curve, p, bands=plot_kwargs.get("bands", True),
                            max_points=plot_kwargs.get("max_points", _MAX_POINTS))
        return cls(rates, action=p.action, confidence=p.confidence, choice=inputs.choice,
                   threshold_kind=inputs.kind, max_false_accept_rate=p.max_false_accept_rate,
                   max_false_reject_rate=p.max_false_reject_rate, label=inputs.label,
                   name=name, detection_floor=inputs.detection_floor, curve=inputs.curve)

    def plot(
        self,
        ax=None,
        *,
        name: str | None = None,
        color: str | None = None,
        bands: bool = True,
        max_points: int | None = _MAX_POINTS,
        show_title: bool = True,
    ) -> ErrorRatesDisplay:
        """Draw both rates.

        Parameters
        ----------
        ax : matplotlib Axes, optional
        name : str, optional
            Legend prefix (e.g. the model version when overlaying).
        color : str, optional
            One colour for both rates (false accept solid, false reject dashed), for
            overlays; default: a colour per error kind.
        bands : bool, default True
            Draw the exact confidence bands (when they were computed).
        max_points : int or None, default 800
            Draw at most this many of the computed thresholds (None: all of them). The
            from_* constructors compute at this resolution already.
        show_title : bool, default True

        Returns
        -------
        self
        """
        ax = self._axes(ax)
        prefix = _prefix(name if name is not None else self.name)
        fa_name, fr_name = error_names(self.action)
        r = self.arrays
        idx = _thin(r.thresholds.size, max_points)
        x = r.thresholds[idx]
        c_fa, c_fr = color or _FA_COLOR, color or _FR_COLOR
        self._draw_bands(ax, idx if bands else None, (c_fa, c_fr), color, prefix)
        (self.line_false_accept_,) = ax.step(
            x, r.false_accept_rate[idx], where="pre", color=c_fa, linewidth=1.6,
            label=f"{prefix}{fa_name}",
        )
        (self.line_false_reject_,) = ax.step(
            x, r.false_reject_rate[idx], where="pre", color=c_fr, linewidth=1.6,
            linestyle="--", label=f"{prefix}{fr_name}",
        )
        self.limit_lines_ = []
        for limit, c, what in ((self.max_false_accept_rate, c_fa, "false-accept"),
                               (self.max_false_reject_rate, c_fr, "false-reject")):
            if limit is not None:
                self.limit_lines_.append(
                    ax.axhline(limit, color=c, linestyle=":", linewidth=1.2,
                               label=f"{what} limit {format_rate(limit)} (on the upper bound)")
                )
        xmin, xmax, pad = _x_range(x)
        self.censored_span_, left = _threshold_span(
            ax, self.detection_floor, xmin, xmax, pad, prefix, "rates unknowable (censored)")
        self._mark_threshold(ax, prefix, color, xmax + pad)
        self._note_no_result(ax)
        _set_xlim(ax, left, xmax + pad)
        linear = _set_rate_scale(ax, (self.max_false_accept_rate, self.max_false_reject_rate))
        ax.set_xlabel("threshold T (fire when score ≥ T)")
        ax.set_ylabel(f"error rate (log scale above {format_rate(linear)}; 0 at the bottom)",
                      fontsize="small")
        if show_title:
            ax.set_title(f"{_plain(self.label) or 'label'}: error rates vs threshold")
        _finish_legend(ax)
        return self

    def _draw_bands(self, ax, idx, colors, color, prefix) -> None:
        self.band_false_accept_ = self.band_false_reject_ = None
        r = self.arrays
        if idx is None or r.false_accept_bounds is None or not idx.size:
            return
        x, conf = r.thresholds[idx], self.confidence
        lo, hi = r.false_accept_bounds
        self.band_false_accept_ = ax.fill_between(
            x, lo[idx], hi[idx], step="pre", color=colors[0], alpha=0.18, linewidth=0,
            label=f"{prefix}{conf:.0%} exact band (Clopper-Pearson)" if color else
            f"{conf:.0%} exact band (Clopper-Pearson)",
        )
        lo, hi = r.false_reject_bounds
        self.band_false_reject_ = ax.fill_between(
            x, lo[idx], hi[idx], step="pre", color=colors[1], alpha=0.18, linewidth=0,
            label=f"_{conf:.0%} band (false reject)",
        )

    def _mark_threshold(self, ax, prefix: str, color: str | None, right: float) -> None:
        self.threshold_line_ = self.chosen_points_ = None
        if self.choice is None:
            return
        t = self.choice.threshold
        fa, fr = self.choice.false_accept_rate, self.choice.false_reject_rate
        x = t if math.isfinite(t) else right
        # The rates go into the legend, not beside the points: overlaid versions'
        # labels would print over each other.
        self.threshold_line_ = ax.axvline(
            x, color=color or "black", linewidth=1.2, linestyle="-" if math.isfinite(t) else ":",
            label=f"{prefix}{self.threshold_kind} threshold {_fmt_threshold(t)}\n"
                  f"at it: FA {format_rate(fa)}, FR {format_rate(fr)}",
        )
        (self.chosen_points_,) = ax.plot(
            [x, x], [fa, fr], linestyle="none", marker="o", markersize=6,
            markerfacecolor="white", markeredgecolor=color or "black",
            label=f"_{prefix}rates at threshold",
        )

    def _note_no_result(self, ax) -> None:
        n_nr = self.arrays.n_no_result
        # Overlays of versions share one note.
        if n_nr and not any(getattr(t, "_calibrate_nr", False) for t in ax.texts):
            note = ax.text(
                0.01, 0.01,
                f"{n_nr:,} image(s) with no result never fire at a finite threshold",
                transform=ax.transAxes, fontsize="x-small", color="#555555", va="bottom",
            )
            note._calibrate_nr = True


def _set_rate_scale(ax, limits) -> float:
    """Symmetric-log rate axis: small rates and limits (0.1%) readable, zero drawn at the
    bottom (linear below the returned rate, logarithmic above), ticks as percentages."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    small = [float(v) for v in limits if v is not None and v > 0]
    linear = 10.0 ** math.floor(math.log10(min(small + [0.01])))
    linear = min(max(linear, 1e-5), 0.01)
    ax.set_yscale("symlog", linthresh=linear, linscale=0.35)
    ax.set_ylim(-0.12 * linear, 1.08)  # zero sits just above the axis, visibly
    ticks = [0.0] + [10.0 ** k for k in range(int(round(math.log10(linear))), 1)]
    ax.yaxis.set_major_locator(FixedLocator(ticks))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:g}%"))
    ax.grid(True, axis="y", color="#e5e5e5", linewidth=0.6)
    return linear
