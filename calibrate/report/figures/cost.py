"""Expected cost per item versus threshold, with the chosen minimum."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from calibrate.curves import CountTable, ErrorCurve
from calibrate.errors import InputError
from calibrate.policy import Policy
from calibrate.thresholds import ThresholdChoice

from .base import _Inputs, _LabelDisplay
from .common import (
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

__all__ = ["CostArrays", "ExpectedCostDisplay", "cost_arrays"]


class CostArrays(NamedTuple):
    """What :class:`ExpectedCostDisplay` draws, computed from a curve and a policy.

    Attributes
    ----------
    thresholds : ndarray
        Descending, ``+inf`` (never fire) first, then every threshold of the curve.
    cost : ndarray
        Expected cost per item at each threshold, at the deployment prevalence.
    feasible : ndarray of bool
        True where every limit of the policy holds on the exact upper bound.
    """

    thresholds: np.ndarray
    cost: np.ndarray
    feasible: np.ndarray


def cost_arrays(curve: ErrorCurve, policy: Policy) -> CostArrays:
    """Expected cost and feasibility at every threshold, "never fire" first.

    Parameters
    ----------
    curve : ErrorCurve
    policy : Policy

    Returns
    -------
    CostArrays
    """
    thr, fp, fn = curve.with_never_fire()
    w_fn, w_fp, _ = policy.cost_weights(curve.n_positive, curve.n_negative)
    # An error count within its allowance is exactly a limit met on the upper bound.
    allow_fn, allow_fp = policy.error_allowances(curve.n_positive, curve.n_negative)
    return CostArrays(thr, w_fn * fn + w_fp * fp, (fn <= allow_fn) & (fp <= allow_fp))


class ExpectedCostDisplay(_LabelDisplay):
    """Expected cost per item versus threshold, with the chosen minimum.

    Cost per item at deployment prevalence ``pi`` (see :class:`~calibrate.Policy`):
    reject ``c_FA*pi*FNR + c_FR*(1-pi)*FPR``; accept ``c_FA*(1-pi)*FPR + c_FR*pi*FNR``.
    Thresholds whose limits fail on the exact upper bound are shaded: the chosen
    threshold is the cheapest outside that region.

    Build it with :meth:`from_result`, :meth:`from_count_table`,
    :meth:`from_predictions` or :meth:`from_store`; ``__init__`` only stores what
    :func:`cost_arrays` computed, and :meth:`plot` only draws it.

    Parameters
    ----------
    arrays : CostArrays
        Thresholds, cost and feasibility.
    policy : Policy
        For the title and the legend (costs, prevalence, confidence).
    choice : ThresholdChoice, optional
        The threshold to mark, with its cost.
    threshold_kind : str, default "chosen"
    label, name : str, optional
    detection_floor : float, optional
    curve : ErrorCurve, optional
        The curve the costs come from, kept for reference only.

    Attributes
    ----------
    ax_, figure_
    threshold : float or None
        ``choice.threshold``.
    line_ : Line2D
        The cost curve.
    never_fire_line_ : Line2D
        Cost of never firing (threshold ``+inf``).
    infeasible_ : PolyCollection or None
        Shading of thresholds whose limits fail.
    threshold_line_, chosen_point_ : Line2D or None
    censored_span_ : Patch or None
    """

    _what = "expected cost"

    def __init__(
        self,
        arrays: CostArrays,
        policy: Policy,
        *,
        choice: ThresholdChoice | None = None,
        threshold_kind: str = "chosen",
        label: str | None = None,
        name: str | None = None,
        detection_floor: float | None = None,
        curve: ErrorCurve | None = None,
    ):
        self.arrays = arrays
        self.policy = policy
        self.choice = choice
        self.threshold = None if choice is None else choice.threshold
        self.threshold_kind = threshold_kind
        self.label = label
        self.name = name
        self.detection_floor = detection_floor
        self.curve = curve

    @classmethod
    def _from_inputs(cls, inputs: _Inputs, name, plot_kwargs) -> ExpectedCostDisplay:
        if inputs.policy is None:
            raise InputError("ExpectedCostDisplay needs a policy (costs and prevalence).")
        return cls(cost_arrays(inputs.curve, inputs.policy), inputs.policy, choice=inputs.choice,
                   threshold_kind=inputs.kind, label=inputs.label, name=name,
                   detection_floor=inputs.detection_floor, curve=inputs.curve)

    @classmethod
    def from_count_table(
        cls,
        table: CountTable,
        *,
        policy: Policy | dict,
        threshold: float | None = None,
        label: str | None = None,
        name: str | None = None,
        detection_floor: float | None = None,
        ax=None,
        **plot_kwargs,
    ) -> ExpectedCostDisplay:
        """Build from a count table and plot.

        Parameters
        ----------
        table : CountTable
        policy : Policy or dict
            Required: costs and prevalence define the curve.
        threshold : float, optional
            Mark this threshold instead of the cost-minimal one.
        label, name, detection_floor, ax, **plot_kwargs
            As for :meth:`ErrorRatesDisplay.from_count_table`.

        Returns
        -------
        ExpectedCostDisplay
        """
        if policy is None:
            raise InputError("ExpectedCostDisplay needs a policy (costs and prevalence).")
        return super().from_count_table(table, policy=policy, threshold=threshold, label=label,
                                        name=name, detection_floor=detection_floor, ax=ax,
                                        **plot_kwargs)

    def costs(self) -> tuple[np.ndarray, np.ndarray]:
        """Thresholds (descending, ``+inf`` first) and the expected cost at each."""
        return self.arrays.thresholds, self.arrays.cost

    def plot(
        self,
        ax=None,
        *,
        name: str | None = None,
        color: str | None = None,
        max_points: int | None = _MAX_POINTS,
        show_title: bool = True,
    ) -> ExpectedCostDisplay:
        """Draw the cost curve.

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
        p = self.policy
        thr, cost, feasible = self.arrays
        finite = np.isfinite(thr[1:])
        x = thr[1:][finite][::-1]
        y = cost[1:][finite][::-1]
        ok = feasible[1:][finite][::-1]
        idx = _thin(x.size, max_points)
        if x.size > 1 and idx.size < x.size:
            # Keep the minimum in the thinned curve so the marked point lies on it.
            idx = np.union1d(idx, [int(np.argmin(y))])
        x, y, ok = x[idx], y[idx], ok[idx]
        c = color or "#1e8449"
        (self.line_,) = ax.step(x, y, where="pre", color=c, linewidth=1.6,
                                label=f"{prefix}expected cost per item")
        xmin, xmax, pad = _x_range(x)
        self._draw_never_fire(ax, float(cost[0]), c, color)
        self.infeasible_ = None
        if p.has_limits and x.size and not ok.all():
            self.infeasible_ = ax.fill_between(
                x, 0, 1, where=~ok, step="pre", transform=ax.get_xaxis_transform(),
                color=color or "#e74c3c", alpha=0.10, linewidth=0,
                label=f"{prefix}limits not met at {p.confidence:.0%} (upper bound)",
            )
        self.censored_span_, left = _threshold_span(ax, self.detection_floor, xmin, xmax, pad,
                                                    prefix, "censored")
        self._mark_threshold(ax, prefix, color, xmax + pad)
        _set_xlim(ax, left, xmax + pad)
        ymax = max(float(np.max(y)) if y.size else 0.0, float(cost[0]))
        # Overlays share the axes: the y range covers every version drawn on it.
        ax._calibrate_ymax = max(getattr(ax, "_calibrate_ymax", 0.0), ymax)
        ax.set_ylim(0, ax._calibrate_ymax * 1.08 or 1.0)
        ax.set_xlabel("threshold T (fire when score ≥ T)")
        ax.set_ylabel("expected cost per item" + (
            " (a false reject costs 1)" if p.cost_false_reject == 1
            else f" (policy cost units; a false reject costs {p.cost_false_reject:g})"))
        if show_title:
            prev = f"{p.prevalence:g}" if p.prevalence is not None else "sample's"
            ax.set_title(
                f"{_plain(self.label) or 'label'}: expected cost "
                f"(c_FA={p.cost_false_accept:g}, c_FR={p.cost_false_reject:g}, prevalence {prev})",
                fontsize="medium",
            )
        _finish_legend(ax)
        return self

    def _draw_never_fire(self, ax, never: float, c: str, color: str | None) -> None:
        # Versions of one label share the never-fire cost: draw and name it once.
        drawn = getattr(ax, "_calibrate_never_fire", {})
        key = f"{never:.6g}"
        if key in drawn:
            self.never_fire_line_ = drawn[key]
            return
        self.never_fire_line_ = ax.axhline(
            never, color=c if color is None or not drawn else "#777777", linestyle=":",
            linewidth=1, label=f"_never fire: {never:.4g}",
        )
        ax.annotate(f"never fire: {never:.3g}", (1.0, never), xytext=(-4, 3),
                    xycoords=("axes fraction", "data"), textcoords="offset points",
                    ha="right", fontsize="x-small", color="#555555")
        drawn[key] = self.never_fire_line_
        ax._calibrate_never_fire = drawn

    def _mark_threshold(self, ax, prefix: str, color: str | None, right: float) -> None:
        self.threshold_line_ = self.chosen_point_ = None
        if self.choice is None:
            return
        t, ct = self.choice.threshold, self.choice.expected_cost
        xt = t if math.isfinite(t) else right
        self.threshold_line_ = ax.axvline(
            xt, color=color or "black", linewidth=1.0,
            linestyle="-" if math.isfinite(t) else ":",
            label=f"_{prefix}{self.threshold_kind} threshold",
        )
        (self.chosen_point_,) = ax.plot(
            [xt], [ct], linestyle="none", marker="o", markersize=7,
            markerfacecolor="white", markeredgecolor=color or "black",
            label=f"{prefix}{self.threshold_kind} {_fmt_threshold(t)}: cost {ct:.4g}",
        )
