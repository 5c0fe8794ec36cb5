"""Several model versions of one label, overlaid on one axes."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from calibrate.curves import CountTable
from calibrate.errors import InputError
from calibrate.policy import Policy
from calibrate.thresholds import LabelThreshold, recorded_detection_floor

from .base import _analyse, _as_policy
from .common import _plain
from .cost import ExpectedCostDisplay
from .det import DetCurveDisplay
from .histogram import ScoreHistogramDisplay
from .rates import ErrorRatesDisplay

__all__ = ["overlay_results", "overlay_versions", "plot_version_comparison"]

_KINDS = {
    "histogram": ScoreHistogramDisplay,
    "rates": ErrorRatesDisplay,
    "cost": ExpectedCostDisplay,
    "det": DetCurveDisplay,
}
_TITLES = {"histogram": "score distributions", "rates": "error rates vs threshold",
           "cost": "expected cost", "det": "DET curves"}


def _check_kind(kind: str) -> None:
    if kind not in _KINDS:
        raise InputError(f"kind must be one of {', '.join(_KINDS)}, got {kind!r}.")


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

    Each version's curve is built once and, when a policy is given and no threshold
    for the version, its threshold is chosen once; :func:`overlay_results` draws them.

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
    _check_kind(kind)
    policy = _as_policy(policy)
    results = {
        ver: _analyse(table, policy, choose=(thresholds or {}).get(ver) is None,
                      needs_curve=_KINDS[kind]._needs_curve, label=label,
                      detection_floor=(detection_floors or {}).get(ver),
                      detector=detector or "", model_version=ver)
        for ver, table in tables.items()
    }
    return overlay_results(results, kind=kind, thresholds=thresholds, label=label,
                           detector=detector, ax=ax, colors=colors)


def overlay_results(
    results: dict[str, LabelThreshold],
    *,
    kind: str,
    thresholds: dict[str, float] | None = None,
    label: str | None = None,
    detector: str | None = None,
    ax=None,
    colors=None,
) -> list:
    """Overlay one kind of figure for several model versions, from ready analyses.

    Nothing is chosen and no curve is built: each version shows its
    ``result.choice``, or its entry of ``thresholds`` evaluated on its curve.

    Parameters
    ----------
    results : dict of str to calibrate.thresholds.LabelThreshold
        Model version (the legend name) to its analysis, in drawing order.
    kind : {"histogram", "rates", "cost", "det"}
    thresholds : dict of str to float, optional
        Per version, a threshold to mark instead of the chosen one.
    label : str, optional
        For the title; default the label of the first result.
    detector : str, optional
        For the title; default the detector of the results, when they share one.
    ax : matplotlib Axes, optional
    colors : list of str, optional
        One per version; default the matplotlib cycle.

    Returns
    -------
    list of displays
        One per version, all drawn on the same axes (``displays[0].ax_``).
    """
    _check_kind(kind)
    if not results:
        raise InputError("no model versions to compare; name at least one version.")
    first = next(iter(results.values()))
    if label is None:
        label = first.label
    if detector is None and len({r.detector for r in results.values()}) == 1:
        detector = first.detector
    colors = list(colors) if colors else [f"C{i}" for i in range(len(results))]
    cls = _KINDS[kind]
    displays: list = []
    for i, (ver, result) in enumerate(results.items()):
        color = colors[i % len(colors)]
        kw: dict[str, Any] = dict(
            name=ver, threshold=(thresholds or {}).get(ver),
            ax=ax if ax is not None else (displays[0].ax_ if displays else None),
        )
        if kind == "histogram":
            kw.update(histtype="step", color_positive=color, color_negative=color,
                      score_range=_union_range(results.values()))
        else:
            kw.update(color=color)
        d = cls.from_result(result, **kw)
        line = getattr(d, "threshold_line_", None)
        if i and line is not None:  # versions differ by line style too, not colour alone
            line.set_linestyle(_THRESHOLD_STYLES[i % len(_THRESHOLD_STYLES)])
        displays.append(d)
    names = ", ".join(_plain(v) for v in results)
    who = f"{_plain(detector)} {names}" if detector else names
    displays[0].ax_.set_title(f"{_plain(label) or 'label'}: {_TITLES[kind]}, {who}",
                              fontsize="medium")
    return displays


#: Line styles of the second, third... version's threshold line in an overlay.
_THRESHOLD_STYLES = ["-", (0, (6, 2, 1, 2)), (0, (2, 2)), (0, (8, 3))]


def _union_range(results) -> tuple[float, float]:
    """Lowest and highest real score (or floor) over several versions' tables."""
    lo, hi = math.inf, -math.inf
    for r in results:
        if r.table is None:  # nothing to draw: from_result says why
            continue
        s = r.table.scores[np.isfinite(r.table.scores)]
        if s.size:
            lo, hi = min(lo, float(s.min())), max(hi, float(s.max()))
        f = r.detection_floor
        if f is not None and math.isfinite(f):
            lo = min(lo, f)
    return (lo, hi) if lo <= hi else (0.0, 1.0)
