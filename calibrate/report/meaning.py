"""The report's "What a score means" section: per label, the versions side by side.

Computes nothing of its own: :func:`calibrate.score_meaning.label_calibrations` fits,
evaluates and explains each map once; this module turns the results into what the
template shows (per label one figure, per version one small table).
"""

from __future__ import annotations

import math
from typing import Any

from calibrate.score_meaning import LabelCalibration, label_calibrations
from calibrate.thresholds import LabelThreshold, format_figure, format_rate

__all__ = ["meaning_sections"]


def _pct(x: float) -> str:
    return "-" if x is None or math.isnan(x) else format_rate(float(x))


def _version_table(lc: LabelCalibration) -> dict[str, Any]:
    sm, m = lc.meaning, lc.map
    rows = []
    for i in range(sm.low.size):
        lo, hi = float(sm.low[i]), float(sm.high[i])
        rows.append(dict(
            band="no result" if math.isinf(lo) else
            f"{format_figure(lo, 4)} \u2013 {format_figure(hi, 4)}",
            map=_pct(float(sm.map_probability[i])),
            counts=f"{int(sm.n_positive[i]):,} / {int(sm.n[i]):,}",
            line=f"{_pct(float(sm.probability[i]))} [{_pct(float(sm.lower[i]))}, "
                 f"{_pct(float(sm.upper[i]))}]",
            fires=bool(sm.fires[i]),
        ))
    cut = ""
    if sm.cutoff is not None:
        c = sm.cutoff
        cut = (f"At the {'deployed' if lc.deployed else 'refused (not deployed)'} cutoff "
               f"{format_figure(c.threshold, 4)}: P({lc.label} | fired) {_pct(c.p_fired)} "
               f"[{_pct(c.p_fired_interval[0])}, {_pct(c.p_fired_interval[1])}], "
               f"P({lc.label} | passed) {_pct(c.p_passed)} [{_pct(c.p_passed_interval[0])}, "
               f"{_pct(c.p_passed_interval[1])}]; {_pct(c.firing_probability)} of parts fire.")
    rel = ""
    if lc.metrics is not None:
        e = lc.metrics
        rel = (f"Held-out {e.split} (sample mix): Brier {e.brier:.4f} "
               f"[{e.brier_interval[0]:.4f}, {e.brier_interval[1]:.4f}], log-loss "
               f"{e.log_loss:.3f} [{e.log_loss_interval[0]:.3f}, {e.log_loss_interval[1]:.3f}],"
               f" ECE {e.ece:.3f} [{e.ece_interval[0]:.3f}, {e.ece_interval[1]:.3f}].")
    cv = m.cv_log_loss.get(m.method)
    return dict(
        who=f"{lc.detector} {lc.model_version}", method=m.method,
        cv="" if cv is None else f"{cv:.3g}", prevalence=_pct(m.prevalence),
        confidence=f"{sm.confidence:.0%}", rows=rows, cutoff=cut, reliability=rel,
        weighing=lc.weighing,
    )


def meaning_sections(store, results: list[LabelThreshold], *, policies=None,
                     datasets: dict | None = None) -> list[dict[str, Any]]:
    """Per (detector, label): its calibrations (one per version) and their tables.

    Returns
    -------
    list of dict
        ``detector, label, calibrations, versions`` (the tables), in label order.
    """
    cals = label_calibrations(store, results, policies=policies, datasets=datasets,
                              n_resamples=500)
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for lc in cals:
        sec = out.setdefault((lc.detector, lc.label), dict(
            detector=lc.detector, label=lc.label, calibrations=[], versions=[]))
        sec["calibrations"].append(lc)
        sec["versions"].append(_version_table(lc))
    return [out[k] for k in sorted(out, key=lambda k: (k[1], k[0]))]
