"""The ``calibrate`` command line: a thin layer over the Python API.

No statistics happen here: commands parse arguments, call the library, and print.
Exit codes: 0 success, 2 bad input or usage (the message says what to fix).
"""

from __future__ import annotations

import json
import math
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from calibrate.errors import CalibrateError

app = typer.Typer(
    name="calibrate",
    help=(
        "Turn raw detector confidence scores into defensible, cost-weighted cutoffs.\n\n"
        "A detector's score ranks results within one model version; it is not a "
        "probability. calibrate measures false accepts and false rejects on labeled data "
        "and picks, per label, the threshold T (fire when score >= T) with the lowest "
        "expected cost, optionally under limits proven at a stated confidence."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


class OutputFormat(str, Enum):
    table = "table"
    json = "json"


def _version(value: bool) -> None:
    if value:
        from calibrate import __version__

        out.print(f"calibrate {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Turn raw detector confidence scores into defensible, cost-weighted cutoffs."""


def _fail(exc: Exception) -> None:
    err.print(f"[bold red]error:[/] {exc}", highlight=False)
    raise typer.Exit(2)


def _jsonable(value):
    """JSON has no infinities: write them as the strings "inf" / "-inf"."""
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _pct(x: float) -> str:
    return f"{100 * x:.3g}%"


def _threshold_text(t: float) -> str:
    if math.isinf(t):
        return "never fire" if t > 0 else "always fire"
    return f"{t:.6g}"


@app.command()
def thresholds(
    scores_file: Annotated[
        Path,
        typer.Argument(
            help="CSV or Parquet with columns image_id, label, score, truth "
            "(optional: detector, model_version). An empty score means the detector "
            "returned nothing for that label on that image.",
            show_default=False,
        ),
    ],
    policy: Annotated[
        Optional[Path],
        typer.Option(
            "--policy",
            help="TOML policy file with [defaults] and [labels.<name>] tables; per-label "
            "tables win over command-line options, which win over [defaults].",
        ),
    ] = None,
    action: Annotated[
        Optional[str],
        typer.Option(help="What firing does: 'reject' (QC: scrap the part) or 'accept'."),
    ] = None,
    cost_false_accept: Annotated[
        Optional[float], typer.Option(help="Cost of one false accept (e.g. a shipped defect).")
    ] = None,
    cost_false_reject: Annotated[
        Optional[float], typer.Option(help="Cost of one false reject (e.g. a scrapped good part).")
    ] = None,
    prevalence: Annotated[
        Optional[float],
        typer.Option(help="Deployment share of positives (default: the sample's)."),
    ] = None,
    max_false_accept_rate: Annotated[
        Optional[float],
        typer.Option(help="Limit on the false-accept rate, proven at --confidence (0.001 = 0.1%)."),
    ] = None,
    max_false_reject_rate: Annotated[
        Optional[float], typer.Option(help="Limit on the false-reject rate.")
    ] = None,
    confidence: Annotated[
        Optional[float], typer.Option(help="Confidence of the limits' upper bounds [default: 0.95].")
    ] = None,
    label: Annotated[
        Optional[list[str]], typer.Option("--label", help="Only these labels (repeatable).")
    ] = None,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", help="Rich table or JSON.")
    ] = OutputFormat.table,
) -> None:
    """Choose the cost-minimal threshold of every label in a table of scores.

    Prints per label the threshold, both error rates with their exact upper bounds,
    the expected cost per item, whether the limits hold, and how many more samples an
    unmet limit needs.
    """
    from calibrate.manifest import read_scores_table
    from calibrate.thresholds import PolicySet, choose_thresholds, load_policy_file

    try:
        policies = load_policy_file(policy) if policy else PolicySet(source="command line")
        policies = policies.with_defaults(
            dict(
                action=action,
                cost_false_accept=cost_false_accept,
                cost_false_reject=cost_false_reject,
                prevalence=prevalence,
                max_false_accept_rate=max_false_accept_rate,
                max_false_reject_rate=max_false_reject_rate,
                confidence=confidence,
            )
        )
        frame = read_scores_table(scores_file)
        if label:
            unknown = sorted(set(label) - set(frame["label"]))
            if unknown:
                raise CalibrateError(
                    f"label(s) {', '.join(unknown)} not in {scores_file}; it has "
                    f"{', '.join(sorted(frame['label'].unique()))}."
                )
            frame = frame[frame["label"].isin(label)]
        results = choose_thresholds(frame, policies)
    except CalibrateError as exc:
        _fail(exc)

    if output_format is OutputFormat.json:
        rows = []
        for r in results:
            d = r.choice.to_dict()
            rows.append(
                {"detector": r.detector, "model_version": r.model_version, "label": r.label, **d}
            )
        out.print_json(json.dumps(_jsonable(rows)))
        return

    table = Table(title=f"Thresholds from {scores_file}", title_justify="left")
    for col, just in [
        ("label", "left"), ("version", "left"), ("pos / neg", "right"), ("threshold", "right"),
        ("false accept (upper)", "right"), ("false reject (upper)", "right"),
        ("cost / item", "right"), ("limits", "center"), ("samples needed", "right"),
    ]:
        table.add_column(col, justify=just)
    notes = []
    for r in results:
        c = r.choice
        if not c.limit_checks:
            limits = "-"
        else:
            limits = "[green]met[/]" if c.limits_met else "[bold red]NOT MET[/]"
        table.add_row(
            r.label,
            f"{r.detector} {r.model_version}",
            f"{c.n_positive:,} / {c.n_negative:,}",
            _threshold_text(c.threshold),
            f"{_pct(c.false_accept_rate)} ({_pct(c.false_accept_rate_upper)})",
            f"{_pct(c.false_reject_rate)} ({_pct(c.false_reject_rate_upper)})",
            f"{c.expected_cost:.4g}",
            limits,
            "-" if c.samples_needed is None else f"{c.samples_needed:,}",
        )
        if c.status != "ok":
            notes.append(f"[bold]{r.label}[/] ({r.detector} {r.model_version}): {c.explanation}")
    out.print(table)
    conf = {r.choice.policy.confidence for r in results}
    out.print(
        f"Rule: fire when score >= threshold. Upper = exact one-sided Clopper-Pearson bound at "
        f"{', '.join(f'{c:.0%}' for c in sorted(conf))} confidence.",
        highlight=False,
    )
    for n in notes:
        out.print(n, highlight=False)


def main() -> None:  # pragma: no cover - console script entry point
    """Entry point of the ``calibrate`` console script."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
