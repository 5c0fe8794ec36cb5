"""The report's whole-part section: what the line scraps, ships and reviews as a whole.

Takes computed :class:`~calibrate.parts.PartDecision` objects and turns them into
template rows; nothing is chosen or queried here.
"""

from __future__ import annotations

import math

__all__ = ["part_blocks"]


def _pct(x: float) -> str:
    return f"{100 * x:.3g}%"


def _cut(t: float) -> str:
    return "never" if math.isinf(t) and t > 0 else ("always" if math.isinf(t) else f"{t:.4g}")


def _figs(f) -> dict:
    return dict(
        scrapped=_pct(f.false_reject_rate), scrapped_up=_pct(f.false_reject_rate_upper),
        scrapped_n=f"{f.false_rejects:,} of {f.n_good:,}",
        shipped=_pct(f.false_accept_rate), shipped_up=_pct(f.false_accept_rate_upper),
        shipped_n=f"{f.false_accepts:,} of {f.n_defective:,}",
        review=_pct(f.line_review_fraction) if f.review_cutoffs is not None else "-",
        line_scrap=_pct(f.line_scrap_fraction), line_escape=_pct(f.line_false_accept_rate),
        cost=f"{f.expected_cost:.3g}",
        limits=("-" if not f.limit_checks else ("met" if f.limits_met else "not met")),
        css="" if not f.limit_checks else ("met" if f.limits_met else "notmet"))


def part_blocks(decisions) -> list[dict]:
    """Template blocks, one per detector version with part-level figures.

    Parameters
    ----------
    decisions : list of PartDecision

    Returns
    -------
    list of dict
        ``title``, ``rows`` (name, calibration and held-out figures, method),
        ``cutoffs`` (per label, one cell per row), ``notes``, ``held_split``,
        ``deployed`` (the row the policy's ``deploy`` names) and ``deploy``.
    """
    blocks = []
    for d in decisions:
        rows = []
        for r in d.rows:
            rows.append(dict(name=r.name, cal=_figs(r.calibration),
                             held=None if r.held_out is None else _figs(r.held_out),
                             method=None if r.choice is None else r.choice.method))
        cutoffs = []
        for j, lab in enumerate(d.labels):
            cells = []
            for r in d.rows:
                f = r.calibration
                hi = f.reject_cutoffs[j]
                lo = None if f.review_cutoffs is None else f.review_cutoffs[j]
                cells.append(_cut(hi) if lo is None or lo == hi else
                             f"review from {_cut(lo)}, scrap from {_cut(hi)}")
            cutoffs.append(dict(label=lab, cells=cells))
        cheapest = min(d.rows, key=lambda r: r.calibration.expected_cost)
        first = d.rows[0].calibration
        blocks.append(dict(
            title=f"{d.detector} {d.model_version}", rows=rows, cutoffs=cutoffs,
            names=[r.name for r in d.rows], held_split=d.held_out_split,
            deployed=d.deployed.name, deploy=d.policy.deploy,
            notes=list(d.notes), cheapest=cheapest.name, n_good=f"{first.n_good:,}",
            n_defective=f"{first.n_defective:,}", prevalence=f"{first.prevalence:.3g}"))
    return blocks
