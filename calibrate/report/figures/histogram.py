"""Score distributions of images with and without the label, and the threshold."""

from __future__ import annotations

import math

import numpy as np

from calibrate.curves import CountTable
from calibrate.thresholds import ThresholdChoice

from .base import _Inputs, _LabelDisplay
from .common import (
    _NEG_COLOR,
    _POS_COLOR,
    _censored_span,
    _finish_legend,
    _fmt_threshold,
    _plain,
    _prefix,
    _set_xlim,
)

__all__ = ["ScoreHistogramDisplay"]


class ScoreHistogramDisplay(_LabelDisplay):
    """Score distributions of images with and without the label, and the threshold.

    Each class is drawn as its share per bin, so a rare defect (25 cracks among 1,600
    parts) is as visible as the common class. Images with no result for the label
    (score ``-inf``) get a bar of their own at the left, labelled "no result": they do
    not fire at any finite threshold.

    Build it with :meth:`from_result`, :meth:`from_count_table`,
    :meth:`from_predictions` or :meth:`from_store`; ``__init__`` only stores.

    Parameters
    ----------
    table : CountTable
        The scores to draw (per distinct score, positives and negatives).
    threshold : float, optional
        Threshold to mark (fire when ``score >= threshold``); default
        ``choice.threshold``.
    choice : ThresholdChoice, optional
        The choice (or evaluation) the threshold comes from.
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
    _needs_curve = False

    def __init__(
        self,
        table: CountTable,
        *,
        threshold: float | None = None,
        choice: ThresholdChoice | None = None,
        threshold_kind: str = "chosen",
        label: str | None = None,
        name: str | None = None,
        detection_floor: float | None = None,
        action: str = "reject",
    ):
        self.table = table
        self.choice = choice
        self.threshold = threshold if threshold is not None or choice is None else choice.threshold
        self.threshold_kind = threshold_kind
        self.label = label
        self.name = name
        self.detection_floor = detection_floor
        self.action = action

    @classmethod
    def _from_inputs(cls, inputs: _Inputs, name, plot_kwargs) -> ScoreHistogramDisplay:
        return cls(inputs.table, threshold=inputs.threshold, choice=inputs.choice,
                   threshold_kind=inputs.kind, label=inputs.label, name=name,
                   detection_floor=inputs.detection_floor, action=inputs.rules.action)

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
        prefix = _prefix(name if name is not None else self.name)
        label = _plain(self.label) or "label"
        lo, hi = self._score_range(score_range)
        edges = np.linspace(lo, hi, bins + 1)
        # Bars off the score axis need a width even when the bins are very narrow.
        slot = max(edges[1] - edges[0], 0.04 * (hi - lo))
        cp = color_positive or _POS_COLOR
        cn = color_negative or _NEG_COLOR
        filled = histtype != "step"
        self._draw_classes(ax, edges, histtype, (cp, cn), filled, prefix, label)
        x_nr = self._draw_no_result(ax, lo - 2.5 * slot, slot, (cp, cn), filled, prefix, label)
        left = lo - 0.06 * (hi - lo) if x_nr is None else x_nr - 0.75 * slot
        left = min(left, self._draw_censored(ax, lo, hi, x_nr, slot, prefix))
        self._draw_threshold(ax, cp if color_positive else "black", left, lo, hi, prefix)
        _set_xlim(ax, left, hi + 0.04 * (hi - lo))
        if x_nr is not None:
            from matplotlib.ticker import MaxNLocator

            vals = [v for v in MaxNLocator(6).tick_values(lo, hi) if lo <= v <= hi]
            ax.set_xticks([x_nr] + vals, ["no\nresult"] + [f"{v:g}" for v in vals])
        # The two-line "no result" tick label needs room above the axis label.
        ax.set_xlabel("score (detector's own scale)", labelpad=8 if x_nr is not None else 4)
        self._set_scale(ax)
        ax.set_ylabel("share of images per bin (log scale)")
        if show_title:
            ax.set_title(f"{label}: score distribution")
        _finish_legend(ax, tick_lines=2 if x_nr is not None else 1)
        return self

    def _score_range(self, score_range) -> tuple[float, float]:
        """Lowest and highest score the bins cover (the floor included)."""
        s = self.table.scores[np.isfinite(self.table.scores)]
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
        return lo, hi

    def _draw_classes(self, ax, edges, histtype, colors, filled, prefix, label) -> None:
        t = self.table
        finite = np.isfinite(t.scores)
        s = t.scores[finite]
        n_pos, n_neg = t.total_positive, t.total_negative
        cp, cn = colors
        _, _, self.patches_negative_ = ax.hist(
            s, bins=edges, weights=t.n_negative[finite] / max(n_neg, 1), histtype=histtype,
            color=cn, alpha=0.45 if filled else 1.0, linestyle="--" if not filled else "-",
            label=f"{prefix}without {label} (n={n_neg:,})",
        )
        _, _, self.patches_positive_ = ax.hist(
            s, bins=edges, weights=t.n_positive[finite] / max(n_pos, 1), histtype=histtype,
            color=cp, alpha=0.55 if filled else 1.0,
            label=f"{prefix}with {label} (n={n_pos:,})",
        )

    def _draw_no_result(self, ax, x_nr, slot, colors, filled, prefix, label) -> float | None:
        """The "no result" bars at ``x_nr``, left of the score axis; returns ``x_nr``, or
        None when every image had a result."""
        t = self.table
        finite = np.isfinite(t.scores)
        nr_pos = int(t.n_positive[~finite].sum())
        nr_neg = int(t.n_negative[~finite].sum())
        self.no_result_bars_ = None
        if not (nr_pos or nr_neg):
            return None
        # "No result" is not a score: it gets its own slot left of the score axis.
        cp, cn = colors
        self.no_result_bars_ = ax.bar(
            [x_nr - slot / 4, x_nr + slot / 4],
            [nr_pos / max(t.total_positive, 1), nr_neg / max(t.total_negative, 1)],
            width=slot / 2, color=[cp, cn], alpha=0.8 if filled else 0.4,
            edgecolor=[cp, cn], linewidth=1,
            label=f"{prefix}no result ({nr_pos:,} with, {nr_neg:,} without {label})",
        )
        ax.axvline(x_nr + 0.75 * slot, color="#444444", linewidth=0.8, linestyle=(0, (1, 2)))
        return x_nr

    def _draw_censored(self, ax, lo, hi, x_nr, slot, prefix) -> float:
        """Shade scores below the detection floor; returns the span's left end."""
        floor = self.detection_floor
        self.censored_span_ = None
        if floor is None or not math.isfinite(floor):
            return math.inf
        # Give the censored span some width even when the floor equals the minimum.
        span_left = min(lo - 0.06 * (hi - lo), floor - 0.06 * (hi - lo))
        if x_nr is not None:
            span_left = max(span_left, x_nr + 0.8 * slot)
        self.censored_span_ = _censored_span(
            ax, floor, span_left,
            f"{prefix}below detection floor {floor:g}: not reported (censored)",
        )
        return span_left

    def _set_scale(self, ax) -> None:
        """Symmetric-log counts: a single image of either class stays visible next to
        the bulk of the other (linear below one image's share, zero at the bottom)."""
        from matplotlib.ticker import FuncFormatter, NullLocator, SymmetricalLogLocator

        n = max(self.table.total_positive, self.table.total_negative, 1)
        linear = 10.0 ** math.floor(math.log10(1.0 / n)) if n > 1 else 0.1
        ax.set_yscale("symlog", linthresh=linear, linscale=0.3)
        ax.set_ylim(bottom=0.0, top=1.1)
        ax.yaxis.set_major_locator(SymmetricalLogLocator(base=10, linthresh=linear))
        ax.yaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{100 * v:g}%"))

    def _draw_threshold(self, ax, color, left, lo, hi, prefix) -> None:
        self.threshold_line_ = self.fire_span_ = None
        thr = self.threshold
        if thr is None:
            return
        tlabel = f"{prefix}{self.threshold_kind} threshold {_fmt_threshold(thr)}".strip()
        if math.isfinite(thr):
            self.threshold_line_ = ax.axvline(thr, color=color, linestyle="-", linewidth=1.6,
                                              label=tlabel)
            if color == "black":  # one version: shade the side that fires
                what = "rejected" if self.action == "reject" else "accepted"
                self.fire_span_ = ax.axvspan(
                    thr, hi + 0.04 * (hi - lo), color="#c0392b" if self.action == "reject"
                    else "#1e8449", alpha=0.07, linewidth=0, zorder=0,
                    label=f"{prefix}fires (score ≥ T): {what}")
        elif thr < 0:  # always fire: the rule fires on "no result" too
            self.threshold_line_ = ax.axvline(left, color=color, linewidth=1.6, label=tlabel)
        else:
            self.threshold_line_ = ax.axvline(hi + 0.02 * (hi - lo), color=color, linewidth=1.6,
                                              linestyle=":", label=tlabel)
