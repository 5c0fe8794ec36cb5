"""Terminal tables that never lose their keys, for the command line.

A :class:`KeyTable` has *key* columns (label, version, verdict, run id: what a reader
looks a row up by) and *figure* columns. Key cells are never wrapped, cut or shortened;
figure cells may wrap at spaces, never inside a word. When the terminal is narrower than
the table needs, every row becomes one stacked block instead (``crack v2  threshold
0.9690  pos/neg 9/591 ...``), wrapped between fields. Nothing is ever cut or replaced
by an ellipsis.

Numbers are shown with 4 significant digits (:func:`figure`); exact values stay in the
files and in ``--format json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Union

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from calibrate.thresholds import format_figure as figure
from calibrate.thresholds import format_threshold

__all__ = ["Column", "KeyTable", "count", "figure", "percent", "print_part_decision",
           "short_threshold", "timestamp"]

Cell = Union[str, Text]


def percent(rate: float | None, digits: int = 4, *, sign: bool = False) -> str:
    """A rate as a percentage: ``0.05561`` -> ``5.561%``."""
    return "-" if rate is None else f"{figure(100 * rate, digits, sign=sign)}%"


def count(n) -> str:
    """A count with thousands separators (``2,400``); ``-`` when missing."""
    try:
        if n is None or (isinstance(n, float) and math.isnan(n)):
            return "-"
        return f"{int(n):,}"
    except (TypeError, ValueError):
        return str(n)


def timestamp(t) -> str:
    """An ISO 8601 time to the second (``2026-12-07T03:48:26``); ``-`` when missing."""
    if t is None:
        return "-"
    try:
        import pandas as pd

        if pd.isna(t):
            return "-"
        return pd.Timestamp(t).isoformat(timespec="seconds")
    except (TypeError, ValueError):
        return str(t)


@dataclass
class Column:
    """One column: its header, whether it is a key column, and its justification."""

    name: str
    key: bool = False
    justify: str = "right"


def _text(cell: Cell) -> Text:
    return cell.copy() if isinstance(cell, Text) else Text(str(cell))


def _width(text: Text) -> int:
    return max((Text(line).cell_len for line in text.plain.split("\n")), default=0)


def _longest_word(text: Text) -> int:
    return max((len(w) for w in text.plain.split()), default=0)


@dataclass
class _Row:
    cells: list[Text]
    lead: Text | None = None
    fields: list[tuple[str, Text]] | None = None
    sub: bool = False


@dataclass
class KeyTable:
    """A table that is shown whole or, when it does not fit, as one block per row.

    ``add_row(cells)`` takes one cell (str, plain text, or a styled :class:`Text`) per
    column. In stacked form a row's line starts with its ``lead`` (default: its first
    cell) followed by ``header value`` for every other non-empty cell; pass ``lead``
    and ``fields`` to say it differently, and ``sub=True`` to indent it under the row
    before (e.g. a held-out row).
    """

    columns: list[Column]
    title: str | None = None
    rows: list[_Row] = field(default_factory=list)

    def add_row(self, cells: list[Cell], *, lead: Cell | None = None,
                fields: list[tuple[str, Cell]] | None = None, sub: bool = False) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(_Row(
            [_text(c) for c in cells], None if lead is None else _text(lead),
            None if fields is None else [(n, _text(v)) for n, v in fields], sub))

    # -- layout -------------------------------------------------------------------------

    def _table(self, widths: list[int]) -> Table:
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                      title=self.title, title_justify="left")
        for col, w in zip(self.columns, widths):
            table.add_column(col.name, justify=col.justify, width=w, no_wrap=col.key,
                             overflow="fold")
        for row in self.rows:
            table.add_row(*row.cells)
        return table

    def widths(self, available: int) -> list[int] | None:
        """Column widths for a table within ``available`` cells, or None: stack it."""
        natural, minimum = [], []
        for i, col in enumerate(self.columns):
            cells = [r.cells[i] for r in self.rows]
            head = Text(col.name)
            nat = max([_width(head)] + [_width(c) for c in cells])
            if col.key:
                low = max([_longest_word(head)] + [_width(c) for c in cells])
            else:
                low = max([_longest_word(head)] + [_longest_word(c) for c in cells])
            natural.append(max(nat, 1))
            minimum.append(max(low, 1))
        overhead = 3 * (len(self.columns) - 1)
        if sum(natural) + overhead <= available:
            return natural
        if sum(minimum) + overhead > available:
            return None
        widths = list(minimum)
        spare = available - sum(minimum) - overhead
        # Unwrap whole columns, the cheapest first: a half-widened column shows nothing more.
        for i in sorted(range(len(widths)), key=lambda j: natural[j] - minimum[j]):
            need = natural[i] - widths[i]
            if 0 < need <= spare:
                widths[i] += need
                spare -= need
        return widths

    def stacked_lines(self, width: int) -> list[Text]:
        """Every row as a block of lines no longer than ``width`` (but for one word
        longer than the line itself), fields never split between lines."""
        lines: list[Text] = []
        for row in self.rows:
            lead = row.cells[0] if row.lead is None else row.lead
            fields = row.fields
            if fields is None:
                fields = [(col.name, c) for c, col in zip(row.cells[1:], self.columns[1:])
                          if c.plain.strip()]
            indent = "  " if row.sub else ""
            # (text, spaces before it): a lead too long for the line breaks between its
            # words (label / version), never inside one.
            atoms = [(lead, 2)] if lead.plain.strip() else []
            if lead.cell_len + len(indent) > width:
                atoms = [(word, 1) for word in lead.split(" ") if word.plain]
            atoms += [(Text.assemble((name, "dim"), " ", value), 2) for name, value in fields]
            line = Text(indent)
            for atom, gap in atoms:
                gap = gap if line.plain.strip() else 0
                if line.plain.strip() and line.cell_len + gap + atom.cell_len > width:
                    lines.append(line)
                    line = Text(indent + "    ")
                    gap = 0
                line.append(" " * gap)
                line.append_text(atom)
            lines.append(line)
        return lines

    def print(self, console: Console) -> None:
        """Print the table, or the stacked blocks when the table does not fit."""
        widths = self.widths(console.width)
        if widths is not None:
            console.print(self._table(widths), soft_wrap=False)
            return
        if self.title:
            console.print(Text(self.title), soft_wrap=False, overflow="fold")
        for line in self.stacked_lines(console.width):
            console.print(line, soft_wrap=False, overflow="fold", highlight=False)


def short_threshold(t: float) -> str:
    """A cutoff in four significant digits, or ``never`` / ``always`` for +-inf."""
    return format_threshold(t, never="never", always="always") if math.isinf(t) else figure(t)


# -- whole parts -------------------------------------------------------------------------

_PART_COLUMNS = [("cutoffs", True, "left"), ("scraps good % (up)", False, "right"),
                 ("ships defective % (up)", False, "right"), ("review %", False, "right"),
                 ("line scrap %", False, "right"), ("cost", False, "right"),
                 ("limits", True, "left")]


def _part_cells(f) -> list:
    met = Text("-") if not f.limit_checks else (
        Text("met", "green") if f.limits_met else Text("not met", "red"))
    return [f"{figure(f.false_reject_rate * 100)} ({figure(f.false_reject_rate_upper * 100)})",
            f"{figure(f.false_accept_rate * 100)} ({figure(f.false_accept_rate_upper * 100)})",
            figure(f.line_review_fraction * 100) if f.review_cutoffs else "-",
            figure(f.line_scrap_fraction * 100), figure(f.expected_cost), met]


def print_part_decision(d, out: Console) -> None:
    """Print what the station does with whole parts: per-label, joint and review-band
    cutoffs, their part-level figures and the cutoffs per label.

    Parameters
    ----------
    d : calibrate.parts.PartDecision
    out : rich.console.Console
    """
    out.print(escape(f"\nWhole parts, {d.detector} {d.model_version}: the station scraps a "
                     "part when any label fires"), highlight=False, soft_wrap=False,
              style="bold")
    table = KeyTable([Column(n, key=k, justify=j) for n, k, j in _PART_COLUMNS])
    heads = [n for n, _, _ in _PART_COLUMNS]
    deployed = d.deployed.name
    for row in d.rows:
        # The row the policy deploys (what exports write) carries a star.
        name = f"{row.name} *" if row.name == deployed else row.name
        table.add_row([Text(name, "bold"), *_part_cells(row.calibration)])
        if row.held_out is not None:
            lead = Text(f"on {d.held_out_split}", "dim")
            cells = [lead, *_part_cells(row.held_out)]
            table.add_row(cells, lead=lead, sub=True,
                          fields=[(n, v) for n, v in zip(heads[1:], cells[1:]) if str(v)])
    table.print(out)
    cut = KeyTable([Column("label", key=True), *[
        Column(f"{r.name} *" if r.name == deployed else r.name, justify="right")
        for r in d.rows]])
    for j, lab in enumerate(d.labels):
        cells = []
        for r in d.rows:
            f = r.calibration
            hi = short_threshold(f.reject_cutoffs[j])
            lo = None if f.review_cutoffs is None else f.review_cutoffs[j]
            cells.append(hi if lo is None or lo == f.reject_cutoffs[j]
                         else f"{short_threshold(lo)}-{hi}")
        cut.add_row([Text(lab, "bold"), *cells])
    cut.print(out)
    n_good = d.rows[0].calibration.n_good
    n_def = d.rows[0].calibration.n_defective
    lines = [
        f"Scraps good % = good parts scrapped of {n_good:,}, ships defective % = defective "
        f"parts shipped of {n_def:,} (exact upper bounds); review % and line scrap % are "
        f"shares of the line's parts, cost per line part, at the line's defect share "
        f"{d.rows[0].calibration.prevalence:.4g}. Cutoffs: fire when score >= cutoff; "
        "a review band shows T_low-T_high (review from T_low, scrap from T_high). "
        f"* = deployed (the policy's deploy = \"{d.policy.deploy}\"): exports write it."]
    for r in d.rows:
        if r.choice is not None:
            lines.append(f"{r.name}: {r.choice.method}.")
    lines += [f"note: {n}" for n in d.notes]
    for line in lines:
        out.print(escape(line), highlight=False, soft_wrap=False)
