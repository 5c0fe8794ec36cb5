"""Figures of one label's calibration, as scikit-learn-style Display objects.

Each display is built from a label's data with ``from_predictions(scores, positive,
...)`` (raw arrays), ``from_count_table(table, ...)`` or ``from_store(store, detector,
model_version, label, ...)`` (a count table computed inside the store, so the figure
costs no more than the threshold does), then drawn with ``plot(ax=None)``, which
returns the display with ``ax_`` and ``figure_`` set. Calling ``plot`` of a second
display on the same ``ax`` overlays it, which is how model versions are compared
(:func:`plot_version_comparison` does it in one call).

* :class:`ScoreHistogramDisplay` - scores of images with and without the label, the
  threshold, and a separate "no result" bar for images where the detector returned
  nothing for the label (score ``-inf``).
* :class:`ErrorRatesDisplay` - false-accept and false-reject rate versus threshold with
  exact Clopper-Pearson bands, the limits and the chosen point.
* :class:`ExpectedCostDisplay` - expected cost per item versus threshold, thresholds
  whose limits fail shaded, the chosen minimum marked.
* :class:`DetCurveDisplay` - detection error trade-off on normal-deviate axes with the
  equal error rate marked.

When the detector cannot report scores below a floor (a service-side cutoff, the
run's ``detection_floor``), the thresholds below it are shaded as censored rather than
hidden: the rates there are not knowable from the data.

Figures are plain :class:`matplotlib.figure.Figure` objects on the Agg canvas, never
pyplot figures, so building them needs no display and leaves pyplot's state alone.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from typing import Any

import numpy as np

from calibrate.curves import CountTable, ErrorCurve, count_table, error_curve
from calibrate.errors import InputError, NoRankingInformationWarning
from calibrate.stats import clopper_pearson_interval
from calibrate.thresholds import (
    Policy,
    ThresholdChoice,
    choose_threshold_from_curve,
    evaluate_threshold,
    format_rate,
)

__all__ = [
    "DetCurveDisplay",
    "ErrorRatesDisplay",
    "ExpectedCostDisplay",
    "ScoreHistogramDisplay",
    "error_names",
    "figure_key",
    "new_axes",
    "overlay_versions",
    "plot_version_comparison",
    "recorded_detection_floor",
]

#: Colours of the two error kinds when one model version is drawn: false accepts are
#: the expensive error in QC, so they get the warning colour.
_FA_COLOR, _FR_COLOR = "#c0392b", "#2471a3"
_POS_COLOR, _NEG_COLOR = "#c0392b", "#7f8c8d"
_CENSORED_STYLE = dict(facecolor="#bbbbbb", alpha=0.35, hatch="///", edgecolor="#888888",
                       linewidth=0)
_FIGSIZE = (6.4, 5.0)


# ---------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------


def error_names(action: str) -> tuple[str, str]:
    """What a QC engineer calls the two errors of a label with this action.

    Parameters
    ----------
    action : {"reject", "accept"}

    Returns
    -------
    false_accept, false_reject : str
        E.g. ``"false accept (defects shipped)"`` for ``action="reject"``.
    """
    if action == "reject":
        return "false accept (defects shipped)", "false reject (good parts scrapped)"
    return "false accept (negatives let through)", "false reject (positives turned away)"


def new_axes(figsize: tuple[float, float] = _FIGSIZE):
    """A fresh axes on its own Agg figure (no pyplot, no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig.add_subplot()


def recorded_detection_floor(store, detector: str, model_version: str) -> float | None:
    """The lowest score a detector version can report, as its runs recorded it.

    Parameters
    ----------
    store : calibrate.store.ScoreStore
    detector, model_version : str

    Returns
    -------
    float or None
        The highest floor of the version's runs (the most censoring one wins, since
        below it some runs could not report), or None when no run stated one.
    """
    runs = store.runs()
    sel = runs[(runs["detector"] == detector) & (runs["model_version"] == model_version)]
    floors = [float(f) for f in sel["detection_floor"] if f is not None and not _isnan(f)]
    return max(floors) if floors else None


def _isnan(x: Any) -> bool:
    try:
        return math.isnan(float(x))
    except (TypeError, ValueError):
        return False


def _plain(text: str | None) -> str:
    # Matplotlib reads text between two "$" as mathtext; label names are not formulas.
    return "" if text is None else str(text).replace("$", r"\$")


def _fmt_threshold(t: float) -> str:
    if math.isinf(t):
        return "never fire" if t > 0 else "always fire"
    return f"{t:.4g}"


def _thin(n: int, max_points: int | None) -> np.ndarray:
    """Indices of at most ``max_points`` of ``n`` points, both ends kept.

    Curves of 10^6 distinct scores are exact in the data but a screen shows a few
    hundred pixels; thinning keeps SVG files small and drawing fast.
    """
    if max_points is None or n <= max_points:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, max_points).round().astype(np.int64))


def _prepare(
    table: CountTable,
    policy: Policy | None,
    threshold: float | None,
) -> tuple[ErrorCurve, ThresholdChoice | None, float | None, str]:
    """The curve, the choice (chosen or evaluated) and which threshold to mark."""
    curve = error_curve(table)
    if threshold is not None:
        t = float(threshold)
        if math.isnan(t):
            raise InputError("threshold must be a number, got NaN.")
        choice = evaluate_threshold(curve, t, policy) if policy is not None else None
        return curve, choice, t, "given"
    if policy is None:
        return curve, None, None, ""
    with warnings.catch_warnings():
        # The flag is part of the choice's status; a figure should not warn again.
        warnings.simplefilter("ignore", NoRankingInformationWarning)
        choice = choose_threshold_from_curve(curve, policy)
    return curve, choice, choice.threshold, "chosen"


def _as_policy(policy) -> Policy | None:
    if policy is None or isinstance(policy, Policy):
        return policy
    if isinstance(policy, dict):
        return Policy.from_mapping(policy, where="policy")
    raise InputError(f"policy must be a calibrate.Policy or a dict, got {type(policy).__name__}.")


def _span_left(floor: float, xmin: float, xmax: float) -> float:
    """Left end of a censored span, wide enough to see when the floor is the minimum."""
    return floor - 0.06 * ((xmax - min(xmin, floor)) or 1.0)


def _censored_span(ax, floor: float | None, left: float, label: str | None):
    """Shade thresholds/scores below the detection floor; returns the patch or None."""
    if floor is None or not math.isfinite(floor) or left >= floor:
        return None
    return ax.axvspan(left, floor, label=label, zorder=0, **_CENSORED_STYLE)


def _set_xlim(ax, left: float, right: float) -> None:
    """Set the x range, widened to what earlier overlays on the same axes needed."""
    prev = getattr(ax, "_calibrate_xlim", None)
    if prev is not None:
        left, right = min(left, prev[0]), max(right, prev[1])
    ax._calibrate_xlim = (left, right)
    ax.set_xlim(left, right)


def _finish_legend(ax, tick_lines: int = 1) -> None:
    """One legend below the axes (under the axis label), so it never hides the curves."""
    from matplotlib.transforms import offset_copy

    handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return
    # Overlays draw the same region once per version; list it once.
    seen, h2, l2 = set(), [], []
    for h, lab in zip(handles, labels, strict=True):
        if lab not in seen and not lab.startswith("_"):
            seen.add(lab)
            h2.append(h)
            l2.append(lab)
    # Below the tick labels and the axis label, whatever the axes' size: an offset in
    # points, not in axes fractions.
    below = offset_copy(ax.transAxes, fig=ax.figure, y=-(24 + 12 * tick_lines), units="points")
    ax.legend(h2, l2, fontsize="x-small", loc="upper center", bbox_to_anchor=(0.5, 0.0),
              bbox_transform=below, ncol=2 if len(l2) > 3 else 1, frameon=False)


class _LabelDisplay:
    """Constructors shared by every per-label display."""

    _what = "figure"

    @classmethod
    def from_count_table(cls, table: CountTable, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def from_predictions(cls, scores, positive, **kwargs):
        """Build the display from raw scores and truth, and plot it.

        Parameters
        ----------
        scores : array-like of float, shape (n,)
            One score per image in the detector's scale, ``-inf`` for no result.
        positive : array-like of bool, shape (n,)
            True where the label is really present.
        **kwargs
            As for :meth:`from_count_table` (``policy``, ``threshold``, ``label``,
            ``name``, ``detection_floor``, ``ax``, ...).
        """
        return cls.from_count_table(count_table(scores, positive), **kwargs)

    @classmethod
    def from_store(
        cls,
        store,
        detector: str,
        model_version: str,
        label: str,
        *,
        split: str | None = None,
        dataset: str | None = None,
        name: str | None = None,
        detection_floor: float | None = None,
        **kwargs,
    ):
        """Build the display from a score store, and plot it.

        The label's count table is aggregated inside the store, so this costs no more
        than choosing the threshold. The detection floor defaults to the one recorded
        with the version's runs.

        Parameters
        ----------
        store : calibrate.store.ScoreStore
        detector, model_version, label : str
        split, dataset : str, optional
            Only images of this split / dataset (e.g. ``split="calibration"``).
        name : str, optional
            Legend prefix (for overlays); default none, and the title names the
            detector and model version.
        detection_floor : float, optional
            Overrides the floor recorded with the runs.
        **kwargs
            As for :meth:`from_count_table`.
        """
        table = store.count_table(detector, model_version, label, split=split, dataset=dataset)
        if detection_floor is None:
            detection_floor = recorded_detection_floor(store, detector, model_version)
        disp = cls.from_count_table(
            table, label=label, name=name, detection_floor=detection_floor, **kwargs
        )
        if name is None and kwargs.get("show_title", True):
            # One version per axes: its name belongs in the title, not in every legend entry.
            disp.ax_.set_title(
                f"{_plain(label)} · {_plain(detector)} {_plain(model_version)}: {cls._what}",
                fontsize="medium",
            )
        return disp

    def _axes(self, ax):
        if ax is None:
            ax = new_axes()
        self.ax_ = ax
        self.figure_ = ax.figure
        return ax


# ---------------------------------------------------------------------------------------
# Score histogram
# ---------------------------------------------------------------------------------------


class ScoreHistogramDisplay(_LabelDisplay):
    """Score distributions of images with and without the label, and the threshold.

    Each class is drawn as its share per bin, so a rare defect (25 cracks among 1,600
    parts) is as visible as the common class. Images with no result for the label
    (score ``-inf``) get a bar of their own at the left, labelled "no result": they do
    not fire at any finite threshold.

    Parameters
    ----------
    table : CountTable
    threshold : float, optional
        Threshold to mark (fire when ``score >= threshold``).
    threshold_kind : str, default "chosen"
        How the threshold came about, for the legend ("chosen", "given", ...).
    label, name : str, optional
        Label name and model name (legend, title).
    detection_floor : float, optional
        Scores below it are never reported (censored); shaded.
    action : {"reject", "accept"}, default "reject"

    Attributes
    ----------
    ax_, figure_ : matplotlib Axes and Figure
        Set by :meth:`plot`.
    patches_positive_, patches_negative_ : list of Patch
        The histogram patches.
    no_result_bars_ : BarContainer or None
        The "no result" bars, when any image had no result.
    threshold_line_ : Line2D or None
    censored_span_ : Patch or None
    """

    _what = "score distribution"

    def __init__(
        self,
        table: CountTable,
        *,
        threshold: float | None = None,
        threshold_kind: str = "chosen",
        label: str | None = None,
        name: str | None = None,
        detection_floor: float | None = None,
        action: str = "reject",
    ):
        self.table = table
        self.threshold = threshold
        self.threshold_kind = threshold_kind
        self.label = label
        self.name = name
        self.detection_floor = detection_floor
        self.action = action

    @classmethod
    def from_count_table(
        cls,
        table: CountTable,
        *,
        policy: Policy | dict | None = None,
        threshold: float | None = None,
        label: str | None = None,
        name: str | None = None,
        detection_floor: float | None = None,
        ax=None,
        **plot_kwargs,
    ) -> ScoreHistogramDisplay:
        """Build from a count table and plot.

        Parameters
        ----------
        table : CountTable
        policy : Policy or dict, optional
            When given and ``threshold`` is not, the cost-minimal threshold is marked.
        threshold : float, optional
            Mark this threshold instead (e.g. a deployed one).
        label, name, detection_floor
            See the class.
        ax : matplotlib Axes, optional
        **plot_kwargs
            Passed to :meth:`plot`.
        """
        policy = _as_policy(policy)
        kind = "given" if threshold is not None else "chosen"
        if threshold is None and policy is not None:
            _, _, threshold, kind = _prepare(table, policy, None)
        disp = cls(
            table, threshold=threshold, threshold_kind=kind, label=label, name=name,
            detection_floor=detection_floor,
            action=policy.action if policy is not None else "reject",
        )
        return disp.plot(ax=ax, **plot_kwargs)

    def plot(
        self,
        ax=None,
        *,
        bins: int = 40,
        name: str | None = None,
        histtype: str = "stepfilled",
        color_positive: str | None = None,
        color_negative: str | None = None,
        show_title: bool = True,
        score_range: tuple[float, float] | None = None,
    ) -> ScoreHistogramDisplay:
        """Draw the histograms.

        Parameters
        ----------
        ax : matplotlib Axes, optional
            Draw here (overlaying what is there); default a new figure.
        bins : int, default 40
        name : str, optional
            Overrides the display's name in the legend.
        histtype : {"stepfilled", "step", "bar"}, default "stepfilled"
            ``"step"`` (outlines) keeps overlays of two versions legible.
        color_positive, color_negative : str, optional
        show_title : bool, default True
        score_range : (float, float), optional
            Lowest and highest score of the bins; overlays pass the union of every
            version's range so that bins and the "no result" slot line up.

        Returns
        -------
        self
        """
        ax = self._axes(ax)
        name = name if name is not None else self.name
        prefix = f"{_plain(name)}: " if name else ""
        t = self.table
        label = _plain(self.label) or "label"
        n_pos, n_neg = t.total_positive, t.total_negative
        finite = np.isfinite(t.scores)
        s = t.scores[finite]
        floor = self.detection_floor
        if s.size:
            lo, hi = float(s.min()), float(s.max())
        else:
            lo, hi = (floor, floor + 1.0) if floor is not None else (0.0, 1.0)
        if floor is not None and math.isfinite(floor):
            lo = min(lo, floor)
        if score_range is not None:
            lo, hi = min(lo, score_range[0]), max(hi, score_range[1])
        if hi <= lo:
            hi = lo + 1.0
        edges = np.linspace(lo, hi, bins + 1)
        width = edges[1] - edges[0]
        cp = color_positive or _POS_COLOR
        cn = color_negative or _NEG_COLOR
        filled = histtype != "step"
        pos_w = t.n_positive[finite] / max(n_pos, 1)
        neg_w = t.n_negative[finite] / max(n_neg, 1)
        _, _, self.patches_negative_ = ax.hist(
            s, bins=edges, weights=neg_w, histtype=histtype, color=cn,
            alpha=0.45 if filled else 1.0, linestyle="--" if not filled else "-",
            label=f"{prefix}without {label} (n={n_neg:,})",
        )
        _, _, self.patches_positive_ = ax.hist(
            s, bins=edges, weights=pos_w, histtype=histtype, color=cp,
            alpha=0.55 if filled else 1.0,
            label=f"{prefix}with {label} (n={n_pos:,})",
        )

        # "No result" is not a score: it gets its own slot left of the score axis.
        nr_pos = int(t.n_positive[~finite].sum())
        nr_neg = int(t.n_negative[~finite].sum())
        left = lo - 0.06 * (hi - lo)
        self.no_result_bars_ = None
        ticks_extra: list[tuple[float, str]] = []
        if nr_pos or nr_neg:
            x_nr = lo - 2.5 * max(width, 0.04 * (hi - lo))
            bw = max(width, 0.04 * (hi - lo))
            self.no_result_bars_ = ax.bar(
                [x_nr - bw / 4, x_nr + bw / 4],
                [nr_pos / max(n_pos, 1), nr_neg / max(n_neg, 1)],
                width=bw / 2, color=[cp, cn], alpha=0.8 if filled else 0.4,
                edgecolor=[cp, cn], linewidth=1,
                label=f"{prefix}no result ({nr_pos:,} with, {nr_neg:,} without {label})",
            )
            sep = x_nr + 0.75 * bw
            ax.axvline(sep, color="#444444", linewidth=0.8, linestyle=(0, (1, 2)))
            ticks_extra.append((x_nr, "no\nresult"))
            left = x_nr - 0.75 * bw
        if floor is not None and math.isfinite(floor):
            # Give the censored span some width even when the floor equals the minimum.
            span_left = min(lo - 0.06 * (hi - lo), floor - 0.06 * (hi - lo))
            if ticks_extra:
                span_left = max(span_left, ticks_extra[0][0] + 0.8 * max(width, 0.04 * (hi - lo)))
            self.censored_span_ = _censored_span(
                ax, floor, span_left,
                f"{prefix}below detection floor {floor:g}: not reported (censored)",
            )
            left = min(left, span_left)
        else:
            self.censored_span_ = None

        self.threshold_line_ = None
        thr = self.threshold
        if thr is not None:
            tlabel = f"{prefix}{self.threshold_kind} threshold {_fmt_threshold(thr)}".strip()
            color = cp if color_positive else "black"
            if math.isfinite(thr):
                self.threshold_line_ = ax.axvline(
                    thr, color=color, linestyle="-", linewidth=1.6, label=tlabel
                )
            elif thr < 0:  # always fire: the rule fires on "no result" too
                self.threshold_line_ = ax.axvline(
                    left, color=color, linewidth=1.6, label=tlabel
                )
            else:
                self.threshold_line_ = ax.axvline(
                    hi + 0.02 * (hi - lo), color=color, linewidth=1.6, linestyle=":",
                    label=tlabel,
                )
        _set_xlim(ax, left, hi + 0.04 * (hi - lo))
        if ticks_extra:
            from matplotlib.ticker import MaxNLocator

            vals = [v for v in MaxNLocator(6).tick_values(lo, hi) if lo <= v <= hi]
            ax.set_xticks(
                [x for x, _ in ticks_extra] + vals,
                [lab for _, lab in ticks_extra] + [f"{v:g}" for v in vals],
            )
        # The two-line "no result" tick label needs room above the axis label.
        ax.set_xlabel("score (detector's own scale)", labelpad=8 if ticks_extra else 4)
        ax.set_ylabel("share of images per bin")
        if show_title:
            ax.set_title(f"{label}: score distribution")
        _finish_legend(ax, tick_lines=2 if ticks_extra else 1)
        return self


# ---------------------------------------------------------------------------------------
# Rates versus threshold
# ---------------------------------------------------------------------------------------


def _rate_arrays(curve: ErrorCurve, action: str):
    """False-accept and false-reject counts per threshold (descending) and class sizes."""
    if action == "reject":
        return (curve.false_negatives, curve.n_positive,
                curve.false_positives, curve.n_negative)
    return (curve.false_positives, curve.n_negative,
            curve.false_negatives, curve.n_positive)


def _n_no_result(curve: ErrorCurve) -> int:
    """Items scored ``-inf`` (no result): they fire only at threshold ``-inf``."""
    thr = curve.thresholds
    if thr.size == 0 or np.isfinite(thr[-1]):
        return 0
    everything = curve.n_positive + curve.n_negative
    if thr.size == 1:
        return int(everything)
    return int(everything - curve.false_positives[-2] - curve.true_positives[-2])


class ErrorRatesDisplay(_LabelDisplay):
    """False-accept and false-reject rate versus threshold, with exact bands.

    The bands are two-sided exact (Clopper-Pearson) intervals at the policy's
    confidence, computed from the error counts at each threshold. Rates are step
    functions: the value at a score holds for every threshold down to the next lower
    score, because those thresholds make the same decisions.

    Parameters
    ----------
    curve : ErrorCurve
    action : {"reject", "accept"}, default "reject"
    confidence : float, default 0.95
    threshold : float, optional
        Point to mark.
    threshold_kind : str, default "chosen"
    max_false_accept_rate, max_false_reject_rate : float, optional
        Limits, drawn as horizontal lines.
    label, name : str, optional
    detection_floor : float, optional

    Attributes
    ----------
    ax_, figure_
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
        curve: ErrorCurve,
        *,
        action: str = "reject",
        confidence: float = 0.95,
        threshold: float | None = None,
        threshold_kind: str = "chosen",
        max_false_accept_rate: float | None = None,
        max_false_reject_rate: float | None = None,
        label: str | None = None,
        name: str | None = None,
        detection_floor: float | None = None,
    ):
        self.curve = curve
        self.action = action
        self.confidence = confidence
        self.threshold = threshold
        self.threshold_kind = threshold_kind
        self.max_false_accept_rate = max_false_accept_rate
        self.max_false_reject_rate = max_false_reject_rate
        self.label = label
        self.name = name
        self.detection_floor = detection_floor

    @classmethod
    def from_count_table(
        cls,
        table: CountTable,
        *,
        policy: Policy | dict | None = None,
        threshold: float | None = None,
        label: str | None = None,
        name: str | None = None,
        detection_floor: float | None = None,
        ax=None,
        **plot_kwargs,
    ) -> ErrorRatesDisplay:
        """Build from a count table and plot.

        Parameters
        ----------
        table : CountTable
        policy : Policy or dict, optional
            Gives the action (which error is which), the confidence of the bands, the
            limits, and, unless ``threshold`` is given, the chosen threshold. Without
            it: ``action="reject"``, 95%, no threshold.
        threshold : float, optional
        label, name, detection_floor, ax, **plot_kwargs
        """
        policy = _as_policy(policy)
        curve, _, thr, kind = _prepare(table, policy, threshold)
        p = policy or Policy(1, 1)
        disp = cls(
            curve, action=p.action, confidence=p.confidence, threshold=thr,
            threshold_kind=kind or "chosen",
            max_false_accept_rate=p.max_false_accept_rate,
            max_false_reject_rate=p.max_false_reject_rate,
            label=label, name=name, detection_floor=detection_floor,
        )
        return disp.plot(ax=ax, **plot_kwargs)

    def plot(
        self,
        ax=None,
        *,
        name: str | None = None,
        color: str | None = None,
        bands: bool = True,
        max_points: int | None = 800,
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
            Draw the exact confidence bands.
        max_points : int or None, default 800
            Thin curves with more thresholds than this for drawing (None: all).
        show_title : bool, default True

        Returns
        -------
        self
        """
        ax = self._axes(ax)
        name = name if name is not None else self.name
        prefix = f"{_plain(name)}: " if name else ""
        fa_name, fr_name = error_names(self.action)
        fa_k, fa_n, fr_k, fr_n = _rate_arrays(self.curve, self.action)
        thr = self.curve.thresholds
        finite = np.isfinite(thr)
        # Ascending order reads left to right; "no result" (-inf) has no x position.
        x = thr[finite][::-1]
        fa_k, fr_k = fa_k[finite][::-1], fr_k[finite][::-1]
        idx = _thin(x.size, max_points)
        x, fa_k, fr_k = x[idx], fa_k[idx], fr_k[idx]
        c_fa = color or _FA_COLOR
        c_fr = color or _FR_COLOR
        conf = self.confidence
        self.band_false_accept_ = self.band_false_reject_ = None
        if bands and x.size:
            lo, hi = clopper_pearson_interval(fa_k, fa_n, conf)
            self.band_false_accept_ = ax.fill_between(
                x, lo, hi, step="pre", color=c_fa, alpha=0.18, linewidth=0,
                label=f"{prefix}{conf:.0%} exact band (Clopper-Pearson)" if color else
                f"{conf:.0%} exact band (Clopper-Pearson)",
            )
            lo, hi = clopper_pearson_interval(fr_k, fr_n, conf)
            self.band_false_reject_ = ax.fill_between(
                x, lo, hi, step="pre", color=c_fr, alpha=0.18, linewidth=0,
                label=f"_{conf:.0%} band (false reject)",
            )
        (self.line_false_accept_,) = ax.step(
            x, fa_k / fa_n, where="pre", color=c_fa, linewidth=1.6,
            label=f"{prefix}{fa_name}",
        )
        (self.line_false_reject_,) = ax.step(
            x, fr_k / fr_n, where="pre", color=c_fr, linewidth=1.6, linestyle="--",
            label=f"{prefix}{fr_name}",
        )
        self.limit_lines_ = []
        for limit, c, what in (
            (self.max_false_accept_rate, c_fa, "false-accept"),
            (self.max_false_reject_rate, c_fr, "false-reject"),
        ):
            if limit is not None:
                self.limit_lines_.append(
                    ax.axhline(limit, color=c, linestyle=":", linewidth=1.2,
                               label=f"{what} limit {format_rate(limit)} (on the upper bound)")
                )
        xmin = float(x.min()) if x.size else 0.0
        xmax = float(x.max()) if x.size else 1.0
        pad = 0.03 * (xmax - xmin or 1.0)
        left = xmin - pad
        if self.detection_floor is not None and math.isfinite(self.detection_floor):
            left = min(left, _span_left(self.detection_floor, xmin, xmax))
        self.censored_span_ = _censored_span(
            ax, self.detection_floor, left,
            None if self.detection_floor is None else
            f"{prefix}below detection floor {self.detection_floor:g}: rates unknowable (censored)",
        )
        self._mark_threshold(ax, prefix, color, xmax + pad)
        n_nr = _n_no_result(self.curve)
        if n_nr and not any(getattr(t, "_calibrate_nr", False) for t in ax.texts):
            note = ax.text(
                0.01, 0.01,
                f"{n_nr:,} image(s) with no result never fire at a finite threshold",
                transform=ax.transAxes, fontsize="x-small", color="#555555", va="bottom",
            )
            note._calibrate_nr = True
        _set_xlim(ax, left, xmax + pad)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("threshold T (fire when score ≥ T)")
        ax.set_ylabel("error rate")
        if show_title:
            ax.set_title(f"{_plain(self.label) or 'label'}: error rates vs threshold")
        _finish_legend(ax)
        return self

    def _mark_threshold(self, ax, prefix: str, color: str | None, right: float) -> None:
        self.threshold_line_ = self.chosen_points_ = None
        t = self.threshold
        if t is None:
            return
        fp, fn = self.curve.counts_at(t)
        if self.action == "reject":
            fa, fr = fn / self.curve.n_positive, fp / self.curve.n_negative
        else:
            fa, fr = fp / self.curve.n_negative, fn / self.curve.n_positive
        x = t if math.isfinite(t) else right
        self.threshold_line_ = ax.axvline(
            x, color=color or "black", linewidth=1.2, linestyle="-" if math.isfinite(t) else ":",
            label=f"{prefix}{self.threshold_kind} threshold {_fmt_threshold(t)}",
        )
        (self.chosen_points_,) = ax.plot(
            [x, x], [fa, fr], linestyle="none", marker="o", markersize=6,
            markerfacecolor="white", markeredgecolor=color or "black",
            label=f"_{prefix}rates at threshold",
        )
        for y, what in ((fa, "FA"), (fr, "FR")):
            ax.annotate(
                f"{what} {format_rate(y)}", (x, y), xytext=(6, 4), textcoords="offset points",
                fontsize="x-small", color=color or "black",
            )


# ---------------------------------------------------------------------------------------
# Expected cost versus threshold
# ---------------------------------------------------------------------------------------


class ExpectedCostDisplay(_LabelDisplay):
    """Expected cost per item versus threshold, with the chosen minimum.

    Cost per item at deployment prevalence ``pi`` (see :class:`~calibrate.Policy`):
    reject ``c_FA*pi*FNR + c_FR*(1-pi)*FPR``; accept ``c_FA*(1-pi)*FPR + c_FR*pi*FNR``.
    Thresholds whose limits fail on the exact upper bound are shaded: the chosen
    threshold is the cheapest outside that region.

    Parameters
    ----------
    curve : ErrorCurve
    policy : Policy
    threshold : float, optional
    threshold_kind : str, default "chosen"
    label, name : str, optional
    detection_floor : float, optional

    Attributes
    ----------
    ax_, figure_
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
        curve: ErrorCurve,
        policy: Policy,
        *,
        threshold: float | None = None,
        threshold_kind: str = "chosen",
        label: str | None = None,
        name: str | None = None,
        detection_floor: float | None = None,
    ):
        self.curve = curve
        self.policy = policy
        self.threshold = threshold
        self.threshold_kind = threshold_kind
        self.label = label
        self.name = name
        self.detection_floor = detection_floor

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
        """
        policy = _as_policy(policy)
        if policy is None:
            raise InputError("ExpectedCostDisplay needs a policy (costs and prevalence).")
        curve, _, thr, kind = _prepare(table, policy, threshold)
        disp = cls(curve, policy, threshold=thr, threshold_kind=kind, label=label, name=name,
                   detection_floor=detection_floor)
        return disp.plot(ax=ax, **plot_kwargs)

    def costs(self) -> tuple[np.ndarray, np.ndarray]:
        """Thresholds (descending, ``+inf`` first) and the expected cost at each."""
        thr, fp, fn = self.curve.with_never_fire()
        w_fn, w_fp, _ = self.policy.cost_weights(self.curve.n_positive, self.curve.n_negative)
        return thr, w_fn * fn + w_fp * fp

    def plot(
        self,
        ax=None,
        *,
        name: str | None = None,
        color: str | None = None,
        max_points: int | None = 800,
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
        name = name if name is not None else self.name
        prefix = f"{_plain(name)}: " if name else ""
        p = self.policy
        thr, cost = self.costs()
        curve = self.curve
        allow_fn, allow_fp = p.error_allowances(curve.n_positive, curve.n_negative)
        feasible = (curve.false_negatives <= allow_fn) & (curve.false_positives <= allow_fp)
        finite = np.isfinite(curve.thresholds)
        x = curve.thresholds[finite][::-1]
        y = cost[1:][finite][::-1]
        ok = feasible[finite][::-1]
        idx = _thin(x.size, max_points)
        if x.size > 1 and idx.size < x.size:
            # Keep the minimum in the thinned curve so the marked point lies on it.
            idx = np.union1d(idx, [int(np.argmin(y))])
        x, y, ok = x[idx], y[idx], ok[idx]
        c = color or "#1e8449"
        (self.line_,) = ax.step(x, y, where="pre", color=c, linewidth=1.6,
                                label=f"{prefix}expected cost per item")
        xmin = float(x.min()) if x.size else 0.0
        xmax = float(x.max()) if x.size else 1.0
        pad = 0.03 * (xmax - xmin or 1.0)
        # Versions of one label share the never-fire cost: draw and name it once.
        drawn = getattr(ax, "_calibrate_never_fire", {})
        key = f"{cost[0]:.6g}"
        if key in drawn:
            self.never_fire_line_ = drawn[key]
        else:
            self.never_fire_line_ = ax.axhline(
                cost[0], color=c if color is None or not drawn else "#777777", linestyle=":",
                linewidth=1, label=f"_never fire: {cost[0]:.4g}",
            )
            ax.annotate(f"never fire: {cost[0]:.3g}", (1.0, cost[0]), xytext=(-4, 3),
                        xycoords=("axes fraction", "data"), textcoords="offset points",
                        ha="right", fontsize="x-small", color="#555555")
            drawn[key] = self.never_fire_line_
            ax._calibrate_never_fire = drawn
        self.infeasible_ = None
        if p.has_limits and x.size and not ok.all():
            self.infeasible_ = ax.fill_between(
                x, 0, 1, where=~ok, step="pre", transform=ax.get_xaxis_transform(),
                color=color or "#e74c3c", alpha=0.10, linewidth=0,
                label=f"{prefix}limits not met at {p.confidence:.0%} (upper bound)",
            )
        left = xmin - pad
        if self.detection_floor is not None and math.isfinite(self.detection_floor):
            left = min(left, _span_left(self.detection_floor, xmin, xmax))
        self.censored_span_ = _censored_span(
            ax, self.detection_floor, left,
            None if self.detection_floor is None else
            f"{prefix}below detection floor {self.detection_floor:g}: censored",
        )
        self.threshold_line_ = self.chosen_point_ = None
        t = self.threshold
        if t is not None:
            fp, fn = curve.counts_at(t)
            w_fn, w_fp, _ = p.cost_weights(curve.n_positive, curve.n_negative)
            ct = w_fn * fn + w_fp * fp
            xt = t if math.isfinite(t) else xmax + pad
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
        _set_xlim(ax, left, xmax + pad)
        ymax = max(float(np.max(y)) if y.size else 0.0, float(cost[0]))
        prev = getattr(ax, "_calibrate_ymax", 0.0)
        ax._calibrate_ymax = max(prev, ymax)
        ax.set_ylim(0, ax._calibrate_ymax * 1.08 or 1.0)
        ax.set_xlabel("threshold T (fire when score ≥ T)")
        prev = f"{p.prevalence:g}" if p.prevalence is not None else "sample's"
        ax.set_ylabel("expected cost per item")
        if show_title:
            ax.set_title(
                f"{_plain(self.label) or 'label'}: expected cost "
                f"(c_FA={p.cost_false_accept:g}, c_FR={p.cost_false_reject:g}, prevalence {prev})",
                fontsize="medium",
            )
        _finish_legend(ax)
        return self


# ---------------------------------------------------------------------------------------
# DET curve
# ---------------------------------------------------------------------------------------

_DET_TICKS = [0.001, 0.01, 0.05, 0.20, 0.5, 0.80, 0.95, 0.99, 0.999]
_DET_LIMIT = 3.3  # about 0.05% .. 99.95%
_DET_CLIP = 3.6   # rates of 0 or 1 run off the frame instead of vanishing
_DET_MARK = 3.22  # marked points at rate 0 or 1 sit on the frame's edge, still visible


class DetCurveDisplay(_LabelDisplay):
    """Detection error trade-off curve on normal-deviate axes, with the EER.

    Both axes are ``scipy.stats.norm.ppf`` of the rates, as in
    :class:`sklearn.metrics.DetCurveDisplay`, so curves of well-separated classes are
    near-straight lines and small rates stay readable. The x axis is the false-positive
    rate in neutral terms, named by the action: false reject for ``reject`` (good parts
    scrapped), false accept for ``accept``.

    Parameters
    ----------
    curve : ErrorCurve
    action : {"reject", "accept"}, default "reject"
    threshold : float, optional
    threshold_kind : str, default "chosen"
    label, name : str, optional
    detection_floor : float, optional
        Operating points of thresholds below it are shaded as censored.

    Attributes
    ----------
    ax_, figure_
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
        curve: ErrorCurve,
        *,
        action: str = "reject",
        threshold: float | None = None,
        threshold_kind: str = "chosen",
        label: str | None = None,
        name: str | None = None,
        detection_floor: float | None = None,
    ):
        self.curve = curve
        self.action = action
        self.threshold = threshold
        self.threshold_kind = threshold_kind
        self.label = label
        self.name = name
        self.detection_floor = detection_floor
        self.equal_error_rate = curve.equal_error_rate()

    @classmethod
    def from_count_table(
        cls,
        table: CountTable,
        *,
        policy: Policy | dict | None = None,
        threshold: float | None = None,
        label: str | None = None,
        name: str | None = None,
        detection_floor: float | None = None,
        ax=None,
        **plot_kwargs,
    ) -> DetCurveDisplay:
        """Build from a count table and plot (see :class:`ErrorRatesDisplay`)."""
        policy = _as_policy(policy)
        curve, _, thr, kind = _prepare(table, policy, threshold)
        disp = cls(curve, action=policy.action if policy else "reject", threshold=thr,
                   threshold_kind=kind or "chosen", label=label, name=name,
                   detection_floor=detection_floor)
        return disp.plot(ax=ax, **plot_kwargs)

    @staticmethod
    def _ppf(rate, clip: float = _DET_CLIP):
        from scipy.stats import norm

        return np.clip(norm.ppf(rate), -clip, clip)

    def plot(
        self,
        ax=None,
        *,
        name: str | None = None,
        color: str | None = None,
        max_points: int | None = 800,
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
        name = name if name is not None else self.name
        prefix = f"{_plain(name)}: " if name else ""
        fa_name, fr_name = error_names(self.action)
        # Neutral: x = false-positive rate, y = false-negative rate.
        x_name, y_name = (fr_name, fa_name) if self.action == "reject" else (fa_name, fr_name)
        c = self.curve
        _, fp, fn = c.with_never_fire()
        fpr, fnr = fp / c.n_negative, fn / c.n_positive
        idx = _thin(fpr.size, max_points)
        c_line = color or "#1f618d"
        eer = self.equal_error_rate
        (self.line_,) = ax.plot(self._ppf(fpr[idx]), self._ppf(fnr[idx]), color=c_line,
                                linewidth=1.6, label=f"{prefix}DET curve".strip())
        lim = _DET_LIMIT
        if not any(getattr(line, "_calibrate_diag", False) for line in ax.lines):
            (self.diagonal_,) = ax.plot([-lim, lim], [-lim, lim], color="#999999",
                                        linestyle=":", linewidth=1,
                                        label="equal rates")
            self.diagonal_._calibrate_diag = True
        else:
            self.diagonal_ = next(
                line for line in ax.lines if getattr(line, "_calibrate_diag", False)
            )
        (self.eer_point_,) = ax.plot(
            self._ppf(eer.false_positive_rate, _DET_MARK),
            self._ppf(eer.false_negative_rate, _DET_MARK),
            linestyle="none", marker="D", markersize=6, color=c_line,
            label=f"{prefix}equal error rate {format_rate(eer.rate)} "
            f"(T={_fmt_threshold(eer.threshold)})",
        )
        self.chosen_point_ = None
        if self.threshold is not None:
            fpt, fnt = c.counts_at(self.threshold)
            fa_t, fr_t = (fnt / c.n_positive, fpt / c.n_negative)
            if self.action != "reject":
                fa_t, fr_t = fr_t, fa_t
            (self.chosen_point_,) = ax.plot(
                self._ppf(fpt / c.n_negative, _DET_MARK), self._ppf(fnt / c.n_positive, _DET_MARK),
                linestyle="none", marker="o", markersize=7, markerfacecolor="white",
                markeredgecolor=color or "black",
                label=f"{prefix}{self.threshold_kind} threshold {_fmt_threshold(self.threshold)} "
                f"(FA {format_rate(fa_t)}, FR {format_rate(fr_t)})",
            )
        self.censored_span_ = None
        if self.detection_floor is not None and math.isfinite(self.detection_floor):
            fp_floor, _ = c.counts_at(self.detection_floor)
            x0 = float(self._ppf(fp_floor / c.n_negative))
            if x0 < lim:
                self.censored_span_ = ax.axvspan(
                    x0, lim, zorder=0,
                    label=f"{prefix}thresholds below detection floor "
                    f"{self.detection_floor:g} (censored)",
                    **_CENSORED_STYLE,
                )
        ticks = self._ppf(_DET_TICKS)
        labels = [f"{s:.0%}" if (100 * s).is_integer() else f"{s:.1%}" for s in _DET_TICKS]
        ax.set_xticks(ticks, labels)
        ax.set_yticks(ticks, labels)
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_xlabel(f"{x_name} rate")
        ax.set_ylabel(f"{y_name} rate")
        ax.grid(True, color="#dddddd", linewidth=0.6)
        if show_title:
            ax.set_title(f"{_plain(self.label) or 'label'}: DET curve")
        _finish_legend(ax)
        return self


# ---------------------------------------------------------------------------------------
# Version comparison
# ---------------------------------------------------------------------------------------

_KINDS = {
    "histogram": ScoreHistogramDisplay,
    "rates": ErrorRatesDisplay,
    "cost": ExpectedCostDisplay,
    "det": DetCurveDisplay,
}


def plot_version_comparison(
    store,
    detector: str,
    label: str,
    model_versions,
    *,
    kind: str = "rates",
    policy: Policy | dict | None = None,
    thresholds: dict[str, float] | None = None,
    split: str | None = None,
    dataset: str | None = None,
    ax=None,
    colors=None,
) -> list:
    """Overlay one kind of figure for several model versions of a detector.

    Parameters
    ----------
    store : calibrate.store.ScoreStore
    detector, label : str
    model_versions : list of str
    kind : {"histogram", "rates", "cost", "det"}, default "rates"
    policy : Policy or dict, optional
        Required for ``kind="cost"``; gives each version its chosen threshold.
    thresholds : dict of str to float, optional
        Per version, a threshold to mark instead of the chosen one (e.g. the old
        version's threshold on the new version's curve).
    split, dataset : str, optional
    ax : matplotlib Axes, optional
    colors : list of str, optional
        One per version; default the matplotlib cycle.

    Returns
    -------
    list of displays
        One per version, all drawn on the same axes (``displays[0].ax_``).
    """
    versions = list(model_versions)
    tables = {
        v: store.count_table(detector, v, label, split=split, dataset=dataset) for v in versions
    }
    floors = {v: recorded_detection_floor(store, detector, v) for v in versions}
    return overlay_versions(
        tables, kind=kind, policy=policy, thresholds=thresholds, label=label,
        detector=detector, detection_floors=floors, ax=ax, colors=colors,
    )


def overlay_versions(
    tables: dict[str, CountTable],
    *,
    kind: str = "rates",
    policy: Policy | dict | None = None,
    thresholds: dict[str, float] | None = None,
    label: str | None = None,
    detector: str | None = None,
    detection_floors: dict[str, float | None] | None = None,
    ax=None,
    colors=None,
) -> list:
    """Overlay one kind of figure for several model versions, from their count tables.

    Parameters
    ----------
    tables : dict of str to CountTable
        Model version to its count table, in drawing order.
    kind, policy, thresholds, ax, colors
        As for :func:`plot_version_comparison`.
    label, detector : str, optional
        For the title.
    detection_floors : dict of str to float, optional

    Returns
    -------
    list of displays
    """
    if kind not in _KINDS:
        raise InputError(f"kind must be one of {', '.join(_KINDS)}, got {kind!r}.")
    if not tables:
        raise InputError("no model versions to compare; name at least one version.")
    colors = list(colors) if colors else [f"C{i}" for i in range(len(tables))]
    cls = _KINDS[kind]
    displays: list = []
    for i, (ver, table) in enumerate(tables.items()):
        color = colors[i % len(colors)]
        kw: dict[str, Any] = dict(
            name=ver, label=label, policy=policy,
            threshold=(thresholds or {}).get(ver),
            detection_floor=(detection_floors or {}).get(ver),
            ax=ax if ax is not None else (displays[0].ax_ if displays else None),
        )
        if kind == "histogram":
            kw.update(histtype="step", color_positive=color, color_negative=color,
                      score_range=_union_range(tables, detection_floors))
        else:
            kw.update(color=color)
        displays.append(cls.from_count_table(table, **kw))
    ax0 = displays[0].ax_
    names = ", ".join(_plain(v) for v in tables)
    titles = {"histogram": "score distributions", "rates": "error rates vs threshold",
              "cost": "expected cost", "det": "DET curves"}
    who = f"{_plain(detector)} {names}" if detector else names
    ax0.set_title(f"{_plain(label) or 'label'}: {titles[kind]}, {who}", fontsize="medium")
    return displays


def _union_range(tables: dict[str, CountTable], floors) -> tuple[float, float]:
    """Lowest and highest real score (or floor) over several versions' tables."""
    lo, hi = math.inf, -math.inf
    for ver, t in tables.items():
        s = t.scores[np.isfinite(t.scores)]
        if s.size:
            lo, hi = min(lo, float(s.min())), max(hi, float(s.max()))
        f = (floors or {}).get(ver)
        if f is not None and math.isfinite(f):
            lo = min(lo, f)
    return (lo, hi) if lo <= hi else (0.0, 1.0)


def figure_key(*parts: str) -> str:
    """A file-name-safe, collision-free name for a figure of ``parts``.

    Label names may contain anything (even markup); the readable part keeps letters,
    digits, ``.``, ``_`` and ``-``, and a short hash of the original keeps two labels
    that differ only in other characters apart.
    """
    import re

    out = []
    for p in parts:
        s = re.sub(r"[^A-Za-z0-9._-]+", "-", str(p)).strip("-.") or "x"
        if s != str(p):
            s = f"{s[:40]}-{hashlib.sha1(str(p).encode('utf-8')).hexdigest()[:6]}"
        out.append(s)
    return "--".join(out)
