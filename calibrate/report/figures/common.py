"""Drawing helpers shared by every figure: axes, legend, censored spans, thinning, text.

Nothing here computes statistics; these functions only place what the displays were
given on a matplotlib axes.
"""

from __future__ import annotations

import hashlib
import math
import re

import numpy as np

__all__ = ["figure_key", "new_axes"]

#: Colours of the two error kinds when one model version is drawn: false accepts are
#: the expensive error in QC, so they get the warning colour.
_FA_COLOR, _FR_COLOR = "#c0392b", "#2471a3"
_POS_COLOR, _NEG_COLOR = "#c0392b", "#7f8c8d"
_CENSORED_STYLE = dict(facecolor="#bbbbbb", alpha=0.35, hatch="///", edgecolor="#888888",
                       linewidth=0)
_FIGSIZE = (6.4, 5.0)
#: Curves are drawn with at most this many points unless told otherwise.
_MAX_POINTS = 800


def new_axes(figsize: tuple[float, float] = _FIGSIZE):
    """A fresh axes on its own Agg figure (no pyplot, no display needed).

    Parameters
    ----------
    figsize : (float, float), default (6.4, 5.0)
        Figure size in inches.

    Returns
    -------
    matplotlib.axes.Axes
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig.add_subplot()


def figure_key(*parts: str) -> str:
    """A file-name-safe, collision-free name for a figure of ``parts``.

    Label names may contain anything (even markup); the readable part keeps letters,
    digits, ``.``, ``_`` and ``-``, and a short hash of the original keeps two labels
    that differ only in other characters apart.

    Parameters
    ----------
    *parts : str
        E.g. label, detector, model version and figure kind.

    Returns
    -------
    str
        The parts joined by ``--``.

    Examples
    --------
    >>> figure_key("scratch", "v2", "rates")
    'scratch--v2--rates'
    """
    out = []
    for p in parts:
        s = re.sub(r"[^A-Za-z0-9._-]+", "-", str(p)).strip("-.") or "x"
        if s != str(p):
            s = f"{s[:40]}-{hashlib.sha1(str(p).encode('utf-8')).hexdigest()[:6]}"
        out.append(s)
    return "--".join(out)


def _plain(text: str | None) -> str:
    # Matplotlib reads text between two "$" as mathtext; label names are not formulas.
    return "" if text is None else str(text).replace("$", r"\$")


def _prefix(name: str | None) -> str:
    """Legend prefix naming the model version of an overlay (empty when alone)."""
    return f"{_plain(name)}: " if name else ""


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


def _x_range(x: np.ndarray) -> tuple[float, float, float]:
    """Lowest and highest threshold drawn, and the padding either side."""
    xmin = float(x.min()) if x.size else 0.0
    xmax = float(x.max()) if x.size else 1.0
    return xmin, xmax, 0.03 * (xmax - xmin or 1.0)


def _span_left(floor: float, xmin: float, xmax: float) -> float:
    """Left end of a censored span, wide enough to see when the floor is the minimum."""
    return floor - 0.06 * ((xmax - min(xmin, floor)) or 1.0)


def _censored_span(ax, floor: float | None, left: float, label: str | None):
    """Shade thresholds/scores below the detection floor; returns the patch or None."""
    if floor is None or not math.isfinite(floor) or left >= floor:
        return None
    return ax.axvspan(left, floor, label=label, zorder=0, **_CENSORED_STYLE)


def _threshold_span(ax, floor: float | None, xmin: float, xmax: float, pad: float,
                    prefix: str, what: str):
    """Censored span of a figure whose x axis is the threshold; returns (patch, left).

    ``what`` ends the legend entry ("... below detection floor 0.3: <what>").
    """
    left = xmin - pad
    if floor is not None and math.isfinite(floor):
        left = min(left, _span_left(floor, xmin, xmax))
    label = None if floor is None else f"{prefix}below detection floor {floor:g}: {what}"
    return _censored_span(ax, floor, left, label), left


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
