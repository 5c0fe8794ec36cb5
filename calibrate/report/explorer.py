"""The report's interactive cutoff explorer: the data it embeds and the script it runs.

Per (detector, model version, label) the report embeds the calibration count table
(distinct scores with their positive and negative counts) and the label's policy. A
small inline script (``templates/explorer.js``, no network, no library) decodes the
tables and, as a slider moves over the distinct scores, recomputes the counts, both
rates, their exact one-sided Clopper-Pearson upper bounds (a beta quantile computed in
the page), the expected cost and the limits' status, exactly as
:func:`calibrate.thresholds.evaluate_threshold` does.

Encoding, so that a 10^6-image study stays a few MB: per table, the scores as
little-endian float64 (``-inf`` for "no result" is an IEEE value like any other) and the
two count columns as uint32, each array split into byte planes (all first bytes, then
all second bytes, ...: sorted scores share their high bytes and counts are mostly 0 or
1, so the planes compress well), gzip, base64. The page inflates them with the
browser's own ``DecompressionStream``.
"""

from __future__ import annotations

import base64
import gzip
import json
import math
from importlib import resources
from typing import Any

import numpy as np

from calibrate.export.rounding import shortest_safe
from calibrate.thresholds import LabelThreshold

__all__ = ["encode_table", "explorer_data", "explorer_script"]


def _planes(arr: np.ndarray) -> bytes:
    """The array's bytes, byte plane by byte plane (plane j = byte j of every item)."""
    raw = np.ascontiguousarray(arr).view(np.uint8).reshape(arr.size, arr.itemsize)
    return raw.T.tobytes()


def encode_table(scores, n_positive, n_negative) -> str:
    """One count table as base64 of gzip of byte planes (float64 scores, uint32 counts).

    Raises
    ------
    ValueError
        A count too large for uint32 (over 4e9 items with one score).
    """
    s = np.asarray(scores, dtype="<f8")
    counts = []
    for c in (n_positive, n_negative):
        c = np.asarray(c)
        if c.size and int(c.max()) >= 2**32:
            raise ValueError("a count does not fit the explorer's uint32 encoding")
        counts.append(c.astype("<u4"))
    payload = _planes(s) + _planes(counts[0]) + _planes(counts[1])
    return base64.b64encode(gzip.compress(payload, compresslevel=9, mtime=0)).decode("ascii")


def _table_of(r: LabelThreshold):
    """``(scores ascending, n_positive, n_negative)`` of a result: its count table, or
    the same counts recovered from its curve."""
    if r.table is not None:
        return r.table.scores, r.table.n_positive, r.table.n_negative
    c = r.curve
    fp = np.concatenate([[0], c.false_positives])
    fn = np.concatenate([[c.n_positive], c.false_negatives])
    return c.thresholds[::-1], (fn[:-1] - fn[1:])[::-1], np.diff(fp)[::-1]


def _num(x: float | None) -> Any:
    """A float for JSON: infinities as strings (JSON has no infinity)."""
    if x is None:
        return None
    x = float(x)
    if math.isinf(x):
        return "+inf" if x > 0 else "-inf"
    return x


def _deployable(t: float, next_below: float) -> float:
    """The value an exporter writes for threshold ``t``: the shortest decimal (at least 4
    decimals) that keeps every calibration decision (infinite rules stay as they are)."""
    if math.isinf(t):
        return t
    return shortest_safe(t, next_below).value


def _entry(r: LabelThreshold, index: int) -> dict[str, Any]:
    c = r.choice
    p = c.policy
    scores, pos, neg = _table_of(r)
    marks = [dict(name="chosen", threshold=_num(c.threshold), text=c.decision)]
    for o in c.options:
        marks.append(dict(name=o.name, threshold=_num(o.choice.threshold), text=o.meaning))
    exported = None if not c.deployable else _num(_deployable(c.threshold, c.next_score_below))
    return dict(
        id=f"explorer-{index}",
        detector=r.detector,
        label=r.label,
        version=r.model_version,
        n=int(len(scores)),
        n_positive=int(np.sum(pos)),
        n_negative=int(np.sum(neg)),
        table=encode_table(scores, pos, neg),
        policy=dict(
            action=p.action,
            cost_false_accept=float(p.cost_false_accept),
            cost_false_reject=float(p.cost_false_reject),
            prevalence=None if p.prevalence is None else float(p.prevalence),
            confidence=float(p.confidence),
            limit_confidence=float(p.limit_confidence),
            max_false_accept_rate=p.max_false_accept_rate,
            max_false_reject_rate=p.max_false_reject_rate,
        ),
        chosen=_num(c.threshold),
        decision=c.decision,
        exported=exported,
        marks=marks,
    )


def explorer_data(results: list[LabelThreshold]) -> dict[str, Any]:
    """What the explorer template needs: one entry per calibrated result, and the JSON
    the script reads (safe to place inside a ``<script>`` element).

    Returns
    -------
    dict
        ``entries`` (list of dict: ``id``, ``label``, ``detector``, ``version``, ``n``
        distinct scores, ...), ``json`` (markup-safe JSON of the entries), ``script``
        (the inline JavaScript) and ``size`` (characters of embedded data).
    """
    from markupsafe import Markup

    entries = [_entry(r, i) for i, r in enumerate(results) if r.choice is not None]
    text = json.dumps(entries, separators=(",", ":"), allow_nan=False)
    # inside <script> only "</" could end the element; escape every markup character
    text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return dict(entries=entries, json=Markup(text), script=Markup(explorer_script()),
                size=len(text))


def explorer_script() -> str:
    """The explorer's JavaScript (``templates/explorer.js``), to inline in the page."""
    js = resources.files("calibrate.report").joinpath("templates/explorer.js").read_text(
        encoding="utf-8")
    if "</script" in js.lower():  # pragma: no cover - guards edits of the script
        raise ValueError("explorer.js must not contain '</script'")
    return js
