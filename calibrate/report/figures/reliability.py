"""What a score means: reliability diagrams and score -> probability curves per version.

* :class:`ReliabilityDisplay` - a calibration map's probabilities against the observed
  share of positives per equal-mass bin of held-out images, each with its exact
  Clopper-Pearson interval (as scikit-learn's ``CalibrationDisplay``, with intervals).
* :class:`ScoreMeaningDisplay` - score -> probability that the label is present *on the
  line*, per model version overlaid, with the calibration bands' exact intervals and
  each version's cutoff: the same score means different things for different versions.
* :func:`plot_label_calibrations` - both for one label: a reliability diagram per
  version side by side, then the versions' score meanings overlaid.

Displays store what is computed (``__init__``) and only draw in ``plot``; the ``from_*``
class methods compute.
"""

from __future__ import annotations

import math

import numpy as np

from calibrate.reliability import ReliabilityBins, evaluate_calibration, reliability_bins

from .common import _plain, new_axes

__all__ = ["ReliabilityDisplay", "ScoreMeaningDisplay", "plot_label_calibrations"]

_COLORS = ("#2471a3", "#c0392b", "#27ae60", "#8e44ad", "#d35400")


class ReliabilityDisplay:
    """Reliability diagram: mean predicted probability against observed share per bin.

    Parameters
    ----------
    bins : calibrate.reliability.ReliabilityBins
    name : str, optional
        Legend / title text (e.g. the model version).
    ece : float, optional
        Shown in the title when given.

    Attributes
    ----------
    ax_, figure_ : matplotlib Axes and Figure
        Set by :meth:`plot`.
    errorbar_ : ErrorbarContainer
    """

    def __init__(self, bins: ReliabilityBins, *, name: str | None = None,
                 ece: float | None = None):
        self.bins = bins
        self.name = name
        self.ece = ece

    @classmethod
    def from_predictions(cls, positive, probability, *, n_bins: int = 10,
                         confidence: float = 0.95, name: str | None = None, ax=None):
        """Bin predictions by equal mass and plot (scikit-learn's argument order)."""
        from calibrate.reliability import expected_calibration_error

        bins = reliability_bins(probability, positive, n_bins=n_bins, confidence=confidence)
        ece = expected_calibration_error(probability, positive, n_bins=n_bins)
        return cls(bins, name=name, ece=ece).plot(ax=ax)

    @classmethod
    def from_calibration(cls, calibration, *, ax=None, name: str | None = None):
        """From a :class:`calibrate.score_meaning.LabelCalibration` (its held-out bins)."""
        m = calibration.metrics
        if m is None:
            raise ValueError(f"{calibration.label} {calibration.model_version} has no "
                             "held-out reliability to draw.")
        return cls(m.bins, name=name or f"{calibration.model_version} ({m.split})",
                   ece=m.ece).plot(ax=ax)

    @classmethod
    def from_store(cls, store, detector: str, model_version: str, label: str, *,
                   split: str = "calibration", held_out: str = "test", n_bins: int = 10,
                   ax=None, name: str | None = None):
        """Fit the map on ``split``, evaluate it on ``held_out``, and plot."""
        from calibrate.probability import calibration_map_from_store

        cmap, _ = calibration_map_from_store(store, detector, model_version, label,
                                             split=split)
        table = store.count_table(detector, model_version, label, split=held_out)
        m = evaluate_calibration(cmap, table, n_bins=n_bins, n_resamples=200, split=held_out)
        return cls(m.bins, name=name or f"{model_version} ({held_out})", ece=m.ece).plot(ax=ax)

    def plot(self, ax=None, *, name: str | None = None, color: str = _COLORS[0]):
        """Draw the diagonal, the bins with their exact intervals, and each bin's size."""
        ax = ax if ax is not None else new_axes((4.2, 4.0))
        b = self.bins
        ax.plot([0, 1], [0, 1], ls=":", color="#888888", lw=1, label="perfectly calibrated")
        yerr = np.vstack([b.observed - b.lower, b.upper - b.observed])
        self.errorbar_ = ax.errorbar(
            b.mean_predicted, b.observed, yerr=yerr, fmt="o", color=color, ms=4, capsize=2,
            lw=1, label=f"observed, {b.confidence:.0%} exact interval")
        for x, y, n in zip(b.mean_predicted, b.observed, b.n):
            ax.annotate(f"{n}", (x, y), textcoords="offset points", xytext=(4, -9),
                        fontsize=6, color="#666666")
        # Rare labels crowd near 0 at any mix: zoom to the data, keeping the axes square.
        top = min(1.0, max(0.05, 1.1 * float(max(b.upper.max(), b.mean_predicted.max()))))
        ax.set_xlim(-0.02 * top, top)
        ax.set_ylim(-0.02 * top, top)
        ax.set_xlabel("predicted P(present), sample mix")
        ax.set_ylabel("observed share present")
        title = _plain(name or self.name or "")
        if self.ece is not None:
            title = f"{title}  ECE {self.ece:.3f}".strip()
        ax.set_title(title, fontsize="small")
        ax.legend(loc="upper left", fontsize=6, frameon=False)
        self.ax_, self.figure_ = ax, ax.figure
        return self


class ScoreMeaningDisplay:
    """Score -> P(present) on the line for one label, one curve per model version.

    Parameters
    ----------
    calibrations : list of calibrate.score_meaning.LabelCalibration
        One per model version, of the same label.
    """

    def __init__(self, calibrations):
        self.calibrations = list(calibrations)

    @classmethod
    def from_calibrations(cls, calibrations, *, ax=None):
        return cls(calibrations).plot(ax=ax)

    def plot(self, ax=None):
        """Draw each version's map at the line's mix, its bands' exact intervals and its
        cutoff (dashed)."""
        ax = ax if ax is not None else new_axes((4.6, 4.0))
        lo_all, hi_all = math.inf, -math.inf
        for i, lc in enumerate(self.calibrations):
            color = _COLORS[i % len(_COLORS)]
            m, sm = lc.map, lc.meaning
            lo_all, hi_all = min(lo_all, m.scores[0]), max(hi_all, m.scores[-1])
            ax.plot(m.scores, m.probabilities, color=color, lw=1.5,
                    label=f"{lc.model_version}: map ({m.method})")
            fin = np.isfinite(sm.score)
            x = sm.score[fin]
            y, lo, hi = sm.probability[fin], sm.lower[fin], sm.upper[fin]
            ax.errorbar(x, y, yerr=np.vstack([y - lo, hi - y]), fmt="s", ms=3, capsize=2,
                        lw=0.8, color=color, alpha=0.8,
                        label=f"{lc.model_version}: score bands, exact interval")
            if lc.threshold is not None and math.isfinite(lc.threshold):
                ax.axvline(lc.threshold, color=color, ls="--", lw=1,
                           label=f"{lc.model_version} cutoff {lc.threshold:.4g}"
                                 + ("" if lc.deployed else " (not deployed)"))
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_ylim(0, 1.05)
        ax.set_xlim(lo_all, hi_all)
        ax.set_xlabel("score")
        ax.set_ylabel("P(present) on the line")
        label = self.calibrations[0].label if self.calibrations else ""
        pi = self.calibrations[0].map.prevalence if self.calibrations else float("nan")
        ax.set_title(f"{_plain(label)}: what a score means at line prevalence {pi:.3g}",
                     fontsize="small")
        ax.legend(loc="upper left", fontsize=6, frameon=False)
        self.ax_, self.figure_ = ax, ax.figure
        return self


def plot_label_calibrations(calibrations):
    """One figure for one label: a reliability diagram per version, then the versions'
    score meanings overlaid.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    cals = list(calibrations)
    with_rel = [lc for lc in cals if lc.metrics is not None]
    n = len(with_rel) + 1
    fig = Figure(figsize=(3.6 * n, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, n, squeeze=False)[0]
    for i, (ax, lc) in enumerate(zip(axes, with_rel)):
        ReliabilityDisplay(lc.metrics.bins, ece=lc.metrics.ece,
                           name=f"{lc.model_version}, held-out {lc.metrics.split}").plot(
            ax=ax, color=_COLORS[i % len(_COLORS)])
    ScoreMeaningDisplay(cals).plot(ax=axes[-1])
    return fig
