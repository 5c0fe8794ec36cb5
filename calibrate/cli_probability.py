"""The ``calibrate calibration`` and ``calibrate monitor`` commands.

Kept beside :mod:`calibrate.cli` (which registers them) so that the command-line module
stays one screenful per concept: these two render :mod:`calibrate.probability` and
:mod:`calibrate.monitor`, and compute nothing themselves.
"""

from __future__ import annotations

import json
import math
import os
import sys
import textwrap
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from calibrate.errors import CalibrateError
from calibrate.io import atomic_write_text, dumps_json, ensure_folder
from calibrate.render import Column, KeyTable, percent
from calibrate.secrets import scrub
from calibrate.thresholds import format_figure

__all__ = ["ReportFormat", "calibration_cmd", "meaning_lines", "monitor_cmd"]


class ReportFormat(str, Enum):
    table = "table"
    markdown = "markdown"
    json = "json"


def _store_location(value):
    """A ``--store`` value: a DuckDB file path, or a PostgreSQL URL (printed without its
    password). Imported when parsed, so that commands without a store never load it."""
    from calibrate.store.location import store_location

    return store_location(value)


def _console(stderr: bool = False) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    wide = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(stderr=stderr, soft_wrap=True, width=160 if wide else None)


def _fail(exc: Exception) -> None:
    _console(stderr=True).print(f"[bold red]error:[/] {escape(scrub(str(exc)))}",
                                highlight=False)
    raise typer.Exit(2)


def _say(console: Console, line: str, style: str = "") -> None:
    indent = line[: len(line) - len(line.lstrip())]
    text = textwrap.fill(line, width=max(console.width, 40), subsequent_indent=indent + "  ",
                         break_long_words=False, break_on_hyphens=False)
    console.print(Text(text, style=style), highlight=False)


def _pct(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else percent(x, 2)


def _band(lo: float, hi: float) -> str:
    if math.isinf(lo) and lo < 0:
        return "no result"
    return f"{format_figure(lo, 4)}-{format_figure(hi, 4)}"


def meaning_lines(lc) -> tuple[list[str], KeyTable, list[str]]:
    """What one label's scores mean, as lines before, a table, and lines after."""
    m, sm = lc.map, lc.meaning
    cv = m.cv_log_loss.get(m.method)
    head = [
        f"{lc.label} - {lc.detector} {lc.model_version}: map {m.method}"
        + (f" (CV log-loss {cv:.3g})" if cv is not None else "")
        + f", {m.n_positive:,} positives / {m.n_negative:,} negatives; line "
        f"prevalence {_pct(m.prevalence)} (sample "
        f"{_pct(m.n_positive / (m.n_positive + m.n_negative))})",
    ]
    if lc.metrics is not None:
        e = lc.metrics
        head.append(
            f"  held-out ({e.split}): Brier {e.brier:.4f} [{e.brier_interval[0]:.4f}, "
            f"{e.brier_interval[1]:.4f}], log-loss {e.log_loss:.3f} "
            f"[{e.log_loss_interval[0]:.3f}, {e.log_loss_interval[1]:.3f}], ECE "
            f"{e.ece:.3f} [{e.ece_interval[0]:.3f}, {e.ece_interval[1]:.3f}] (at the "
            "sample's prevalence)")
    else:
        head.append("  no held-out split: the map's reliability is not shown")
    conf = f"{sm.confidence:.0%}"
    table = KeyTable([Column("scores", key=True, justify="left"), Column("map P"),
                      Column("in band"), Column(f"P on the line [{conf}]"),
                      Column("fires", justify="left")])
    for i in range(sm.low.size):
        table.add_row([
            _band(sm.low[i], sm.high[i]), _pct(float(sm.map_probability[i])),
            f"{int(sm.n_positive[i]):,}/{int(sm.n[i]):,}",
            f"{_pct(float(sm.probability[i]))} [{_pct(float(sm.lower[i]))}, "
            f"{_pct(float(sm.upper[i]))}]",
            "yes" if sm.fires[i] else "no",
        ])
    tail = []
    if sm.cutoff is not None:
        c = sm.cutoff
        tail.append(
            f"  at the {'deployed' if lc.deployed else 'refused (not deployed)'} cutoff "
            f"{format_figure(c.threshold, 4)}: P({lc.label} | fired) {_pct(c.p_fired)} "
            f"[{_pct(c.p_fired_interval[0])}, {_pct(c.p_fired_interval[1])}], "
            f"P({lc.label} | passed) {_pct(c.p_passed)} [{_pct(c.p_passed_interval[0])}, "
            f"{_pct(c.p_passed_interval[1])}]; {_pct(c.firing_probability)} of parts fire")
    return head, table, tail


def _markdown(cals) -> str:
    lines = ["### What a score means", ""]
    for lc in cals:
        head, table, tail = meaning_lines(lc)
        lines += [f"**{head[0]}**", ""] + [h.strip() for h in head[1:]] + [""]
        cols = [c.name for c in table.columns]
        lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(c.plain.replace("|", "\\|") for c in r.cells) + " |"
                  for r in table.rows]
        lines += [""] + [t.strip() for t in tail] + [""]
    return "\n".join(lines)


def _check_add_to(path: Path, results):
    """The thresholds file to annotate, refused unless its cutoffs are these results'."""
    from calibrate.thresholds_file import read_thresholds_file

    tf = read_thresholds_file(path)
    mine = {r.key: r.choice.threshold for r in results}
    for e in tf.entries:
        t = mine.get(e.key)
        if t is not None and e.threshold is not None and e.threshold != t:
            raise CalibrateError(
                f"{path}: {e.label} ({e.detector} {e.model_version}) has threshold "
                f"{e.threshold!r} but this policy and data choose {t!r}; add the score "
                "meaning with the policy, --split and store the file was made with.")
    return tf


def _add_to(path: Path, tf, cals) -> None:
    """Write the score-meaning section into the (checked) thresholds file."""
    import dataclasses

    from calibrate.thresholds_file import write_thresholds_file

    mine = {(lc.detector, lc.model_version, lc.label): lc for lc in cals}
    keys = {e.key for e in tf.entries}
    kept = [m for m in tf.score_meaning
            if (m["detector"], m["model_version"], m["label"]) not in mine]
    new = [{k: v for k, v in lc.to_dict().items() if k != "map"}
           for k, lc in mine.items() if k in keys]
    write_thresholds_file(dataclasses.replace(tf, score_meaning=tuple(kept + new)), path)


def calibration_cmd(
    store: Annotated[Path, typer.Option("--store", parser=_store_location, help="The score store.")],
    policy: Annotated[Optional[Path], typer.Option(
        help="Policy file (costs, line prevalence per label, limits).")] = None,
    detector: Annotated[Optional[str], typer.Option(help="Only this detector.")] = None,
    model_version: Annotated[Optional[str], typer.Option(help="Only this model version.")] = None,
    label: Annotated[Optional[list[str]], typer.Option(
        "--label", help="Only these labels (repeatable).")] = None,
    split: Annotated[Optional[str], typer.Option(
        help="Fit on this split (e.g. calibration); the held-out split evaluates.")] = None,
    held_out: Annotated[Optional[str], typer.Option(
        "--held-out", help="Evaluate on this split (default: test when --split names "
        "another split).", show_default=False)] = None,
    bands: Annotated[int, typer.Option(help="Score bands per label.")] = 5,
    add_to: Annotated[Optional[Path], typer.Option(
        "--add-to", help="Add (or replace) the score_meaning section of this thresholds "
        "file; its thresholds must be the ones chosen here.")] = None,
    export_maps: Annotated[Optional[Path], typer.Option(
        "--export-maps", help="Write each map as versioned JSON into this folder.")] = None,
    output_format: Annotated[ReportFormat, typer.Option(
        "--format", help="table, markdown or json.")] = ReportFormat.table,
) -> None:
    """What a score means: score -> probability maps per label and version.

    Fits a map on the calibration split (logistic, logistic on logit, beta or isotonic,
    chosen by cross-validated log-loss), states it at the line's prevalence from the
    policy (Bayes odds correction), shows its held-out Brier score, log-loss and ECE with
    bootstrap intervals, and per score band the probability that the label is present
    on the line with an exact interval, and P(label | fired) / P(label | passed) at the
    label's cutoff. A map never changes a cutoff; it explains it.
    """
    from calibrate import workflow
    from calibrate.probability import map_file_name
    from calibrate.score_meaning import label_calibrations
    from calibrate.store import open_store

    out = _console()
    try:
        policies = workflow.policies_from(policy)
        outcome = workflow.choose_from_store(
            store, policies, detector=detector, model_version=model_version, labels=label,
            split=split, held_out=held_out)
        tf = None if add_to is None else _check_add_to(add_to, outcome.calibrated)
        with open_store(workflow.existing_store(store), read_only=True) as st:
            cals = label_calibrations(st, outcome.calibrated, policies=policies,
                                      datasets=outcome.datasets, n_bands=bands)
        if add_to is not None:
            _add_to(add_to, tf, cals)
        if export_maps is not None:
            folder = ensure_folder(export_maps)
            for lc in cals:
                path = folder / map_file_name(lc.detector, lc.model_version, lc.label)
                atomic_write_text(path, json.dumps(lc.map.to_dict(), indent=2) + "\n")
    except CalibrateError as exc:
        _fail(exc)
    if output_format is ReportFormat.json:
        out.print_json(dumps_json({"source": outcome.source, "notices": outcome.notices,
                                   "labels": [lc.to_dict() for lc in cals]}))
        return
    if output_format is ReportFormat.markdown:
        out.print(_markdown(cals), markup=False, highlight=False)
        return
    for lc in cals:
        head, table, tail = meaning_lines(lc)
        _say(out, head[0], "bold")
        for line in head[1:]:
            _say(out, line)
        table.print(out)
        for line in tail:
            _say(out, line)
        out.print()
    weighing = sorted({lc.weighing for lc in cals})
    for note in ("Map P: the map's probability on the line at the band's median score. P on "
                 "the line: from the band's counts per class, each class weighed by its "
                 "line share (or, where classes cannot be told apart, the odds correction "
                 "to the label's prevalence), with exact Clopper-Pearson intervals "
                 "(Bonferroni over classes). P(label | fired) / P(label | passed): the same "
                 "at the cutoff.", *(f"Line figures weigh {w}." for w in weighing),
                 *outcome.notices):
        _say(out, note, "dim")
    if export_maps is not None:
        _say(out, f"wrote {len(cals)} map(s) into {export_maps}")
    if add_to is not None:
        _say(out, f"added the score meaning to {add_to}")


def monitor_cmd(
    production: Annotated[Path, typer.Argument(
        help="Production scores (CSV or Parquet): image_id, label, score, model_version "
        "[, time, detector, image]; no truth.")],
    thresholds_file: Annotated[Path, typer.Option(
        "--thresholds", help="The deployed thresholds file.")],
    store: Annotated[Path, typer.Option(
        "--store", parser=_store_location, help="Store with the deployed version's calibration data.")],
    detector: Annotated[Optional[str], typer.Option(help="Detector (default: the file's).")] = None,
    model_version: Annotated[Optional[str], typer.Option(
        help="Deployed version, if the file holds several.")] = None,
    split: Annotated[str, typer.Option(
        help="The split the thresholds were chosen on ('' for all images).")] = "calibration",
    window: Annotated[Optional[str], typer.Option(
        help="Judge each time window (pandas span: 1D, 12h) separately.")] = None,
    alpha: Annotated[float, typer.Option(
        help="False-alarm level of the whole run (Bonferroni over labels, windows, "
        "tests).")] = 0.05,
    resamples: Annotated[int, typer.Option(
        help="Bootstrap refits of each map for the estimated rates' intervals.")] = 100,
    label_next_path: Annotated[Optional[Path], typer.Option(
        "--label-next", help="Write a JSONL manifest of images to label next for labels "
        "whose limit is unproven.")] = None,
    n_label: Annotated[int, typer.Option(
        "--n-label", help="Images per label in --label-next.")] = 50,
    output_format: Annotated[ReportFormat, typer.Option(
        "--format", help="table, markdown or json.")] = ReportFormat.table,
) -> None:
    """Monitor production scores without labels against the deployed version's calibration.

    Per label (and time window): the firing rate at the deployed cutoff against its
    expected interval, score-distribution shift (KS against the calibration scores
    reweighted to the line's prevalence; PSI, alarm above 0.2), and, from the calibration
    map, the estimated defect rate and false-accept / false-reject rates (assuming the
    score -> probability relation did not change).

    Exit code 0 no alarm, 1 alarm, 2 bad input.
    """
    from calibrate import workflow
    from calibrate.monitor import COLUMNS, label_next, monitor_scores, read_production_scores
    from calibrate.store import open_store
    from calibrate.thresholds_file import read_thresholds_file

    out = _console()
    try:
        if not 0 < alpha < 1:
            raise CalibrateError(f"--alpha must be between 0 and 1, got {alpha}.")
        if resamples < 20:
            raise CalibrateError(f"--resamples must be at least 20, got {resamples}.")
        prod = read_production_scores(production)
        tf = read_thresholds_file(thresholds_file)
        with open_store(workflow.existing_store(store), read_only=True) as st:
            report = monitor_scores(prod, tf, st, detector=detector,
                                    model_version=model_version, split=split or None,
                                    window=window, alpha=alpha, n_resamples=resamples,
                                    source=str(production))
            todo = None
            if label_next_path is not None:
                todo = label_next(prod, tf, st, n=n_label, detector=detector,
                                  model_version=model_version, split=split or None)
                atomic_write_text(label_next_path,
                                  "".join(json.dumps(t) + "\n" for t in todo))
    except CalibrateError as exc:
        _fail(exc)
    if output_format is ReportFormat.json:
        out.print_json(dumps_json(report.to_dict()))
    elif output_format is ReportFormat.markdown:
        out.print(report.to_markdown(), markup=False, highlight=False)
    else:
        table = KeyTable([Column(c, key=c in ("label", "window", "status"),
                                 justify="left" if c in ("label", "window", "status") else "right")
                          for c in COLUMNS], title=report.title())
        for r in report.rows:
            cells = report.cells(r)
            status = Text(cells[-1], style="bold red" if r.alarms else "green")
            table.add_row([*cells[:-1], status],
                          lead=Text.assemble(f"{r.label} {r.window or 'all'}  ", status),
                          fields=list(zip(COLUMNS[2:-1], cells[2:-1])))
        table.print(out)
        _say(out, "fired (expected): parts that fired at the deployed cutoff, and the "
             "interval expected from the calibration data at the line's prevalence. Est. "
             "rates: from the calibration map, 95% prediction intervals.", "dim")
        _say(out, report.rules_text(), "dim")
        if todo is not None:
            _say(out, f"wrote {len(todo)} image(s) to label into {label_next_path}: chosen "
                 "by score, not at random; label them into a fresh labeled set.")
        _say(out, f"{report.title()} (exit {report.exit_code})",
             "bold red" if report.exit_code else "green")
    if report.exit_code:
        raise typer.Exit(report.exit_code)
