"""The ``calibrate`` command line: a thin layer over the Python API.

No statistics happen here: commands parse arguments, call :mod:`calibrate.workflow` (or
one library function), and render what it returns. Each command imports what it needs
when it runs, so ``calibrate --help`` does not load DuckDB, matplotlib or cloud SDKs.
Exit codes: 0 success, 2 bad input or usage (the message says what to fix).
"""

from __future__ import annotations

import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from calibrate.detectors.registry import BUILTIN as _BUILTIN
from calibrate.cli_probability import calibration_cmd as _calibration_cmd
from calibrate.cli_probability import _store_location
from calibrate.cli_probability import monitor_cmd as _monitor_cmd
from calibrate.errors import CalibrateError, InputError
from calibrate.io import dumps_json
from calibrate.policy import PolicySet, by_action
from calibrate.render import Column, KeyTable, print_part_decision
from calibrate.render import short_threshold as _short_threshold
from calibrate.render import count as _count
from calibrate.render import figure as _figure
from calibrate.render import timestamp as _timestamp
from calibrate.secrets import scrub

__all__ = [
    "BUILTIN_DETECTORS",
    "CheckFormat",
    "ExportTarget",
    "OutputFormat",
    "app",
    "check",
    "export_cmd",
    "import_scores_cmd",
    "main",
    "report",
    "run_cmd",
    "runs",
    "score",
    "thresholds",
]

BUILTIN_DETECTORS = sorted(_BUILTIN)

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
    rich_markup_mode=None,
)


def _console(stderr: bool = False) -> Console:
    # Piped output (CI logs, tickets) is not squeezed to 80 columns: tables stay legible.
    stream = sys.stderr if stderr else sys.stdout
    wide = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(stderr=stderr, soft_wrap=True, width=160 if wide else None)


out = _console()
err = _console(stderr=True)


class OutputFormat(str, Enum):
    table = "table"
    json = "json"


def _version(value: bool) -> None:
    if value:
        from calibrate.version import __version__

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
    import warnings

    from calibrate.errors import CalibrateWarning

    default_show = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        # The toolkit's own warnings are advice for the user, not a code location.
        if issubclass(category, CalibrateWarning):
            err.print(f"[yellow]warning:[/] {message}", highlight=False)
        else:
            default_show(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def _fail(exc: Exception) -> None:
    # Messages quote keys like [labels.crack]: data, not rich markup.
    err.print(f"[bold red]error:[/] {escape(scrub(str(exc)))}", highlight=False)
    raise typer.Exit(2)


def _say(line: str) -> None:
    # Label names and paths are data, not rich markup ("[labels.crack]" must survive).
    out.print(line, markup=False, highlight=False)


# Options of 'thresholds --store' that say which data is counted, defined here so that
# the command stays short.
HeldOutOption = Annotated[
    Optional[str],
    typer.Option(
        "--held-out",
        help="With --store or --scores-dataset: also evaluate each chosen threshold on "
        "this split, the honest figures (default: 'test' when --split names another "
        "split and the data has a test split; '' for none).",
        show_default=False,
    ),
]
DatasetOption = Annotated[
    Optional[str],
    typer.Option(
        "--dataset",
        help="With --store: count this dataset (default: the latest each version ran on; "
        "other datasets are never counted with it).",
    ),
]
AllowIncompleteOption = Annotated[
    bool,
    typer.Option(
        "--allow-incomplete",
        help="With --store: choose even where a version's latest run is unfinished "
        "(refused by default, exit 2); every output then says INCOMPLETE DATA.",
    ),
]
# The same option for 'check' and 'report', which read the store's runs as they are.
AllowIncompleteReadOption = Annotated[
    bool,
    typer.Option(
        "--allow-incomplete",
        help="Use the store even where a version's latest run is unfinished (refused by "
        "default, exit 2); a warning then says INCOMPLETE DATA.",
    ),
]

ScoresDatasetOption = Annotated[
    Optional[Path],
    typer.Option(
        "--scores-dataset",
        help="Count the scores where they live: a Parquet dataset partitioned by "
        "detector=/model_version=/label= folders (flat layout: image_id, score, "
        "positive, optional split, failed; see docs/team-setup.md). Only the chosen "
        "labels' folders are read.",
        show_default=False,
    ),
]
RoundToOption = Annotated[
    Optional[int],
    typer.Option(
        "--round-to",
        help="With --scores-dataset: count scores rounded half up to this many "
        "decimals (the detector's real precision); exact for the rounded scores.",
        show_default=False,
    ),
]


def _check_sources(scores_file, store, scores_dataset, round_to, dataset,
                   allow_incomplete) -> None:
    """One source of scores, and only the options that source takes."""
    if sum(x is not None for x in (scores_file, store, scores_dataset)) != 1:
        raise CalibrateError("give one of: a scores file, --store or --scores-dataset.")
    if round_to is not None and scores_dataset is None:
        raise CalibrateError("--round-to works with --scores-dataset.")
    if scores_dataset is not None and (dataset is not None or allow_incomplete):
        raise CalibrateError("--dataset and --allow-incomplete work with --store; a "
                             "scores dataset is counted as it is.")


@app.command()
def thresholds(
    scores_file: Annotated[
        Optional[Path],
        typer.Argument(
            help="CSV or Parquet with columns image_id, label, score, truth "
            "(optional: detector, model_version). An empty score means the detector "
            "returned nothing for that label on that image. Omit it to read --store.",
            show_default=False,
        ),
    ] = None,
    store: Annotated[
        Optional[Path],
        typer.Option("--store", parser=_store_location,
                     help="Read the scores from this store (a file or postgresql:// URL)."),
    ] = None,
    scores_dataset: ScoresDatasetOption = None,
    round_to: RoundToOption = None,
    detector: Annotated[
        Optional[str], typer.Option(help="With a store or dataset: only this detector.")
    ] = None,
    model_version: Annotated[
        Optional[str], typer.Option(help="With a store or dataset: only this model version.")
    ] = None,
    split: Annotated[
        Optional[str], typer.Option(help="With a store or dataset: only images of this split.")
    ] = None,
    held_out: HeldOutOption = None,
    dataset: DatasetOption = None,
    allow_incomplete: AllowIncompleteOption = False,
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
        Optional[float], typer.Option(help="Confidence of the limits' upper bounds (default: the "
                                          "policy's [defaults], else 0.95).")
    ] = None,
    label: Annotated[
        Optional[list[str]], typer.Option("--label", help="Only these labels (repeatable).")
    ] = None,
    output_format: Annotated[
        OutputFormat, typer.Option("--format", help="A table for people or JSON for programs.")
    ] = OutputFormat.table,
    output: Annotated[
        Optional[Path],
        typer.Option(
            "--output", "-o",
            help="Also write a thresholds file (.json, .yaml or .toml): the input of "
            "'calibrate export' and 'calibrate check'.",
        ),
    ] = None,
) -> None:
    """Choose the cost-minimal threshold of every label: scores table, store or dataset.

    Prints per label the threshold, both error rates with their exact upper bounds,
    the expected cost per item, whether the limits hold, and how many more samples an
    unmet limit needs. Labels whose policy says unit = "detection" get their own table:
    true / false detections and missed objects (results matched to ground-truth boxes),
    false detections per image and cost per image.
    """
    from calibrate import workflow

    overrides = dict(action=action, cost_false_accept=cost_false_accept,
                     cost_false_reject=cost_false_reject, prevalence=prevalence,
                     max_false_accept_rate=max_false_accept_rate,
                     max_false_reject_rate=max_false_reject_rate, confidence=confidence)
    try:
        _check_sources(scores_file, store, scores_dataset, round_to, dataset, allow_incomplete)
        policies = workflow.policies_from(
            policy, overrides, default=PolicySet(source="command line"))
        if scores_dataset is not None:
            outcome = workflow.choose_from_scores_dataset(
                scores_dataset, policies, detector=detector, model_version=model_version,
                labels=label, split=split, held_out=held_out, round_to=round_to)
        elif store is not None:
            outcome = workflow.choose_from_store(
                store, policies, detector=detector, model_version=model_version,
                labels=label, split=split, held_out=held_out,
                dataset=dataset, allow_incomplete=allow_incomplete)
        else:
            outcome = workflow.choose_from_file(scores_file, policies, labels=label)
        written = workflow.write_thresholds(outcome, output) if output is not None else None
    except CalibrateError as exc:
        _fail(exc)
    if output_format is OutputFormat.json:
        out.print_json(dumps_json(_thresholds_json(outcome, policies)))
        for note in outcome.notices:  # stdout stays pure JSON
            err.print(escape(f"note: {note}"), highlight=False)
    else:
        _print_thresholds(outcome)
    if written is not None:
        out.print(f"thresholds file written to {written}", markup=False, highlight=False)
    _exit_if_nothing_calibrated(outcome)


def _exit_if_nothing_calibrated(outcome) -> None:
    """Exit 2 naming every label's problem when none could be calibrated."""
    if outcome.calibrated:
        return
    err.print("[bold red]error:[/] no label could be calibrated:", highlight=False)
    for r in outcome.results:
        err.print(escape(f"  {r.label} ({r.detector} {r.model_version}): {r.problem}"),
                  highlight=False)
    raise typer.Exit(2)


def _thresholds_json(outcome, policies):
    """The rows; with a ``[part]`` policy an object of rows and whole-part figures."""
    rows = _rows_for_json(outcome.results)
    if not policies.part:
        return rows
    from calibrate.parts import parts_skipped

    return {"labels": rows, "parts": [d.to_dict() for d in outcome.parts],
            "parts_skipped": (parts_skipped(outcome.results, policies)
                              or outcome.parts_unavailable)}


def _rows_for_json(results) -> list[dict]:
    rows = []
    for r in results:
        d = r.choice.to_dict() if r.choice else {"problem": r.problem}
        if r.choice is not None:
            d["deployable"] = r.choice.deployable
        held = {}
        if r.held_out_split:
            held = {"held_out": {"split": r.held_out_split, "flags": list(r.held_out_flags),
                                 **(r.held_out.to_dict() if r.held_out else {})}}
            held["held_out"].pop("options", None)
        rows.append({"detector": r.detector, "model_version": r.model_version,
                     "label": r.label, "n_failed": r.n_failed, **d, **held,
                     **({"data_warnings": list(r.data_warnings)} if r.data_warnings else {})})
    return rows


_DECISION_TEXT = {
    "deploy": ("", ""),
    "refuse": ("refused", "bold red"),
    "cost_optimal": ("signed off", "yellow"),
    "protective": ("signed off", "yellow"),
    "never_fire": ("signed off", "yellow"),
}


def _limits_text(c) -> Text:
    """The limits column: met, unproven (more data could show it) or shown to fail."""
    if not c.limit_checks:
        return Text("-")
    if c.limits_met:
        return Text("met", "green")
    if c.decision != "deploy":
        return Text(*_DECISION_TEXT[c.decision])
    if any(k.refuted for k in c.limit_checks):
        return Text("FAIL", "bold red")
    return Text("unproven", "red")


def _figures(c) -> list[str]:
    """Counts, rates (upper bounds) in % and cost of one evaluated threshold."""
    return [
        f"{_count(c.n_positive)}/{_count(c.n_negative)}",
        f"{_figure(c.false_accept_rate * 100)} ({_figure(c.false_accept_rate_upper * 100)})",
        f"{_figure(c.false_reject_rate * 100)} ({_figure(c.false_reject_rate_upper * 100)})",
        _figure(c.expected_cost),
    ]


_THRESHOLD_COLUMNS = [("label", True, "left"), ("threshold", True, "right"),
                      ("pos/neg", False, "right"), ("FA % (up)", False, "right"),
                      ("FR % (up)", False, "right"), ("cost", False, "right"),
                      ("limits", True, "left")]


def _detection_figures(c) -> list[str]:
    """Detection-unit figures: true/false/missed counts, false detections per image
    (exact Poisson upper bound), miss rate over objects (exact upper bound), cost per image."""
    miss_up, fd_up = by_action(c.action, c.false_accept_rate_upper, c.false_reject_rate_upper)
    return [
        f"{_count(c.true_detections)}/{_count(c.false_detections)}/{_count(c.missed_objects)}",
        f"{_figure(c.false_detections / c.n_images)} ({_figure(fd_up)})",
        f"{_figure(c.missed_objects / c.n_objects * 100)} ({_figure(miss_up * 100)})",
        _figure(c.expected_cost),
    ]


_DETECTION_COLUMNS = [("label", True, "left"), ("threshold", True, "right"),
                      ("true/false/missed", False, "right"), ("false/img (up)", False, "right"),
                      ("missed % (up)", False, "right"), ("cost/img", False, "right"),
                      ("limits", True, "left")]


def _thresholds_table(outcome, unit: str = "image") -> tuple[KeyTable, list[str]]:
    """The thresholds table of the labels decided at ``unit`` (a row per label, and
    one per held-out split) and notes."""
    results = [r for r in outcome.results if r.unit == unit]
    columns = _DETECTION_COLUMNS if unit == "detection" else _THRESHOLD_COLUMNS
    figures = _detection_figures if unit == "detection" else _figures
    table = KeyTable([Column(n, key=k, justify=j) for n, k, j in columns])
    heads = [n for n, _, _ in columns]
    notes = []
    one_detector = len({x.detector for x in outcome.results}) == 1
    for r in results:
        c = r.choice
        version = r.model_version if one_detector else f"{r.detector} {r.model_version}"
        name = Text.assemble((r.label, "bold"), " ", (version, "dim"))
        label = escape(r.label)
        if c is None:
            table.add_row([name, Text("cannot calibrate", "yellow"), *[""] * 5])
            notes.append(f"[bold]{label}[/] ({escape(version)}): {escape(r.problem or '')}")
            continue
        table.add_row([name, _short_threshold(c.threshold), *figures(c), _limits_text(c)])
        if r.held_out is not None or r.held_out_split:
            h = r.held_out
            lead = Text.assemble(("! " if r.held_out_flags else "", "bold yellow"),
                                 (f"on {r.held_out_split}", "dim"))
            figs = figures(h) if h is not None else ["n/a", "", "", ""]
            met = Text("") if h is None or not h.limit_checks else (
                Text("met", "green") if h.limits_met else Text("not met", "red"))
            cells = [lead, *figs, met]
            table.add_row(["", *cells], lead=lead, sub=True,
                          fields=[(n, v) for n, v in zip(heads[2:], cells[1:]) if str(v)])
        if c.status != "ok" or c.decision != "deploy":
            notes.append(f"[bold]{label}[/] ({escape(version)}): {escape(c.explanation)}")
        for f in r.held_out_flags:
            notes.append(f"[bold]{label}[/] ({escape(version)}): [yellow]{escape(f)}[/]")
    return table, notes


def _print_thresholds(outcome) -> None:
    results = outcome.results
    out.print(escape(f"Thresholds from {outcome.source}"), highlight=False, soft_wrap=False)
    conf = ", ".join(f"{c:.0%}" for c in sorted({r.choice.policy.confidence
                                                 for r in results if r.choice}))
    notes = []
    if any(r.unit == "image" for r in results):
        table, notes = _thresholds_table(outcome)
        table.print(out)
        failed = outcome.n_failed
        out.print(
            "Rule: fire when score >= threshold (figures rounded to 4 significant digits; "
            "exact values: --format json or the thresholds file). FA/FR = "
            "false-accept/false-reject rate; (up) = exact one-sided "
            f"Clopper-Pearson upper bound at {conf}. "
            "The first row of a label is the data that chose the threshold (bounds not "
            "adjusted for that choice); the 'on <split>' row is held out, the honest one; "
            "! = they disagree. Two limits on a label are tested together (each at "
            "1 - alpha/2)"
            + (f"; {failed:,} failed detector call(s) excluded." if failed else "."),
            highlight=False, soft_wrap=False, markup=False,
        )
    if any(r.unit == "detection" for r in results):
        ious = sorted({r.iou_threshold for r in results if r.unit == "detection"})
        out.print(f"Per detection (unit = detection, matched at IoU >= "
                  f"{', '.join(f'{t:g}' for t in ious)}):", highlight=False, soft_wrap=False)
        table, more = _thresholds_table(outcome, "detection")
        table.print(out)
        notes += more
        out.print(
            "Rule: keep a detection when its score >= threshold. true = kept detections "
            "that match a ground-truth object, false = kept detections that match none, "
            "missed = objects no kept detection matches (COCO protocol). false/img = false "
            "detections per image, with the exact Poisson upper bound (a count per image, "
            "not a binomial rate); missed % over objects with the exact Clopper-Pearson "
            f"upper bound; both at {conf}. Cost is per image.",
            highlight=False, soft_wrap=False, markup=False,
        )
    # Prose is wrapped to the terminal (soft_wrap off): these are read, not grepped.
    for n in notes + [escape(f"note: {x}") for x in outcome.notices]:
        out.print(n, highlight=False, soft_wrap=False)
    for r in outcome.refused:
        out.print(escape(f"refused: {r.label} ({r.detector} {r.model_version}) has no "
                         "deployable threshold; exports leave it out until its policy sets "
                         "if_limit_unproven (see the options above)."), highlight=False,
                  soft_wrap=False)
    for d in outcome.parts:
        print_part_decision(d, out)


def _parse_options(pairs: list[str] | None) -> dict[str, object]:
    options: dict[str, object] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CalibrateError(f"--option takes key=value, got {pair!r}.")
        try:
            options[key.replace("-", "_")] = json.loads(value)
        except json.JSONDecodeError:
            options[key.replace("-", "_")] = value
    return options


StoreOption = Annotated[
    Path, typer.Option("--store", parser=_store_location,
                       help="The score store: a DuckDB file (created if missing) or a "
                       "postgresql:// URL.")
]


@app.command()
def score(
    dataset: Annotated[
        Path,
        typer.Option(
            "--dataset",
            help="Labeled image set: a JSONL/CSV manifest, a COCO .json, or a folder per label.",
            show_default=False,
        ),
    ],
    detector: Annotated[
        str,
        typer.Option(
            "--detector",
            help="A built-in detector ("
            + ", ".join(BUILTIN_DETECTORS)
            + ") or a plugin as package.module:callable.",
            show_default=False,
        ),
    ],
    model_version: Annotated[
        Optional[str],
        typer.Option(help="Model version to run or record; scores are only comparable within one."),
    ] = None,
    store: Annotated[
        Path, typer.Option("--store", parser=_store_location,
                     help="The score store (a DuckDB file, or a postgresql:// URL; created if "
                           "missing, but not by --dry-run).")
    ] = Path("calibrate.duckdb"),
    concurrency: Annotated[
        Optional[int], typer.Option(help="Calls in flight (default: 8 for network, CPUs for "
                                    "local); with --engine ray, actors (default: cluster CPUs).")
    ] = None,
    rate_limit: Annotated[
        Optional[float], typer.Option(help="Most calls per second, retries included.")
    ] = None,
    max_attempts: Annotated[int, typer.Option(help="Attempts per image on retryable errors.")] = 4,
    timeout: Annotated[
        Optional[float], typer.Option(help="Seconds before a call is abandoned and retried.")
    ] = None,
    max_calls: Annotated[
        Optional[int], typer.Option(help="Stop after this many calls (resumable): a cost guard.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Score again even if this version already did.")
    ] = False,
    option: Annotated[
        Optional[list[str]],
        typer.Option("--option", help="key=value passed to the detector (repeatable)."),
    ] = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print how many calls the run would make and their price; call nothing."),
    ] = False,
    price_file: Annotated[
        Optional[Path],
        typer.Option(help="Your own price table (TOML) for cloud cost estimates."),
    ] = None,
    engine: Annotated[str, typer.Option(help="local: this machine's pool; ray: Ray Data actors "
                                        "(local detectors; docs/ray.md).")] = "local",
    ray_address: Annotated[Optional[str], typer.Option(
        help="Ray cluster for --engine ray (default: RAY_ADDRESS, else start one here).")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per Ray Data batch and commit.")] = 16,
) -> None:
    """Run a detector over a labeled image set and keep every score in the store.

    Resumable: if the command is interrupted (Ctrl-C, SIGTERM, a crash, kill -9), run it
    again and it scores only the images that are not yet stored. Failed images are
    recorded as failures with their reason, never as scores. Ctrl-C and SIGTERM commit
    what finished and mark the run interrupted; the exit status is then 130 (Ctrl-C) or
    143 (SIGTERM, 128 + 15, as a process killed by it reports). --dry-run writes nothing,
    not even a new store file. --engine ray runs a local detector in Ray Data actors, here
    or on a Ray cluster, with the same store records and resume (docs/ray.md).
    """
    from calibrate import workflow
    from calibrate.manifest import read_manifest
    from calibrate.pricing import estimate_cost
    from calibrate.ray_engine import RayOptions
    from calibrate.runner import RunOptions, Terminated, plan_run, stop_on_sigterm

    def show_plan(o) -> None:
        if o.estimate is not None:
            out.print(
                f"{o.detector} {o.model_version}: {o.plan.to_score:,} image(s) to score, "
                f"{o.plan.already_done:,} already in {store}. {o.estimate.summary()}",
                highlight=False,
            )

    def plan_only(opts: RunOptions) -> None:
        # workflow.score opens the store for writing, which creates a missing file (and
        # migrates an old one): a dry run reads the store, or plans against an empty one.
        labeled = read_manifest(dataset)
        with workflow.open_detector(detector, model_version, _parse_options(option)) as det, \
                _store_to_plan_against(store) as st:
            plan = plan_run(labeled, det, st, opts)
            show_plan(workflow.ScoreOutcome(labeled, det.name, det.model_version, plan,
                                            estimate_cost(det, plan.to_score, price_file)))

    try:
        opts = RunOptions(
            concurrency=concurrency, rate_limit=rate_limit, max_attempts=max_attempts,
            timeout=timeout, force=force, max_calls=max_calls, progress=progress,
        )
        if dry_run:
            return plan_only(opts)
        with stop_on_sigterm():
            outcome = workflow.score(
                dataset, detector, store, model_version=model_version,
                options=_parse_options(option), run_options=opts,
                price_file=price_file, on_plan=show_plan, engine=engine,
                ray_options=RayOptions(address=ray_address, batch_size=batch_size),
            )
    except KeyboardInterrupt as exc:
        err.print("interrupted: everything finished so far is stored; run the same command to resume.")
        raise typer.Exit(143 if isinstance(exc, Terminated) else 130) from None
    except CalibrateError as exc:
        _fail(exc)
    _print_score_summary(outcome, store, max_calls)


def _store_to_plan_against(store):
    """The store opened read-only, or an empty in-memory one where none exists yet (a
    missing file, an empty PostgreSQL database): a dry run never creates a store."""
    from calibrate.store import EmptyStoreError, open_store

    if not store.exists():
        return open_store(":memory:")
    try:
        return open_store(store, read_only=True)
    except EmptyStoreError:
        return open_store(":memory:")


def _print_score_summary(outcome, store: Path, max_calls: int | None) -> None:
    summary, labeled = outcome.summary, outcome.dataset
    name, version = outcome.detector, outcome.model_version
    if summary.status == "skipped":
        out.print(
            f"{name} {version} already scored all {summary.n_images:,} images of "
            f"{labeled.name} in {store} (run {summary.run_id}); use --force to score again.",
            markup=False, highlight=False,
        )
        return
    out.print(
        f"{name} {version} on {labeled.name}: {summary.scored:,} scored, "
        f"{summary.failed:,} failed, {summary.already_done:,} already done, {summary.calls:,} "
        f"calls ({summary.retries:,} retries) in {summary.elapsed:.1f}s -> {store} "
        f"(run {summary.run_id}, {summary.status})",
        markup=False, highlight=False,  # detector names may hold [brackets]
    )
    if summary.failures_by_kind:
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(summary.failures_by_kind.items()))
        out.print(f"failures by kind: {kinds}; list them with: calibrate runs --store {store} --failures",
                  markup=False, highlight=False)
    if summary.status == "call_budget":
        out.print(f"stopped at --max-calls {max_calls}; run the same command to continue.")


@app.command("import-scores")
def import_scores_cmd(
    scores_file: Annotated[
        Path, typer.Argument(help="CSV or Parquet scores table (see 'calibrate thresholds "
                             "--help'), or a COCO results .json with --ground-truth.")
    ],
    store: StoreOption = Path("calibrate.duckdb"),
    dataset: Annotated[Optional[str], typer.Option(
        help="Dataset name (default: the file stem; with --ground-truth, its stem).")] = None,
    detector: Annotated[str, typer.Option(help="Detector name if the table has none.")] = "precomputed",
    model_version: Annotated[
        Optional[str], typer.Option(help="Model version if the table has none.")
    ] = None,
    ground_truth: Annotated[Optional[Path], typer.Option(
        "--ground-truth", help="The COCO annotation file (images, categories, annotations "
        "with bbox) that a COCO results file's ids refer to.")] = None,
) -> None:
    """Import scores produced elsewhere into the store, one run per model version.

    A COCO results file (a JSON array of image_id, category_id, bbox, score, as
    Ultralytics, Detectron2 or pycocotools write it) is imported with its COCO ground
    truth, boxes included, so it can be calibrated per image and per detection.
    """
    from calibrate.detectors.precomputed import import_coco_results, import_scores
    from calibrate.store import open_store

    try:
        is_json = scores_file.suffix.lower() == ".json"
        if is_json != (ground_truth is not None):
            raise InputError(
                f"{scores_file}: a COCO results .json needs --ground-truth (the COCO "
                "annotation file its ids refer to)." if is_json else
                f"--ground-truth goes with a COCO results .json, not {scores_file.name}; "
                "a CSV or Parquet table carries its truth in its 'truth' column."
            )
        with open_store(store) as st:
            if ground_truth is not None:
                runs = [import_coco_results(st, scores_file, ground_truth, dataset=dataset,
                                            detector=detector, model_version=model_version)]
            else:
                runs = import_scores(
                    st, scores_file, dataset=dataset, detector=detector,
                    model_version=model_version,
                )
    except CalibrateError as exc:
        _fail(exc)
    out.print(f"imported {scores_file} into {store}: run(s) {', '.join(runs)}",
              markup=False, highlight=False)


@app.command()
def runs(
    store: Annotated[
        Path, typer.Option("--store", parser=_store_location,
                     help="The score store to list (a DuckDB file or postgresql:// URL; it must "
                           "exist: 'calibrate score' creates it).")
    ] = Path("calibrate.duckdb"),
    failures: Annotated[bool, typer.Option("--failures", help="List failed images too.")] = False,
) -> None:
    """List the runs and model versions in a store."""
    from calibrate.store import open_store

    if not store.exists():
        _fail(CalibrateError(f"no score store at {store}; create one with 'calibrate score'."))
    try:
        with open_store(store, read_only=True) as st:
            frame = st.runs()
            fails = st.failures() if failures else None
    except CalibrateError as exc:
        _fail(exc)
    _runs_table(frame, f"Runs in {store}").print(out)
    if fails is not None and len(fails):
        _failures_table(fails).print(out)


def _text_or_dash(value) -> str:
    """A value as text; '-' when it is missing (no 'None', 'nan' or 'NaT')."""
    import pandas as pd

    return "-" if value is None or (not isinstance(value, str) and pd.isna(value)) else str(value)


#: (column of the runs frame, header, key column?, how a value is shown)
_RUN_COLUMNS = [
    ("run_id", "run", True, _text_or_dash), ("detector", "detector", True, _text_or_dash),
    ("model_version", "version", True, _text_or_dash),
    ("dataset", "dataset", True, _text_or_dash), ("status", "status", True, _text_or_dash),
    ("n_scored", "scored", False, _count), ("n_failed", "failed", False, _count),
    ("started_at", "started", False, _timestamp),
    ("finished_at", "finished", False, _timestamp),
]


def _runs_table(frame, title: str) -> KeyTable:
    """Full run ids, ISO times to the second ('-' when missing), counts with separators."""
    cols = [c for c in _RUN_COLUMNS if c[0] in frame.columns]
    table = KeyTable([Column(head, key=key, justify="left" if key or name.endswith("_at")
                             else "right") for name, head, key, _ in cols], title=title)
    for _, row in frame.iterrows():
        table.add_row([show(row[name]) for name, _, _, show in cols])
    return table


def _failures_table(fails) -> KeyTable:
    fcols = [c for c in ("run_id", "image_id", "kind", "attempts", "recovered", "message")
             if c in fails.columns]
    table = KeyTable([Column(c, key=c in ("run_id", "image_id", "kind"),
                             justify="right" if c == "attempts" else "left") for c in fcols],
                     title="Failures")
    for _, row in fails.iterrows():
        # A failure a later resume recovered is history, not a missing score.
        table.add_row([("yes: scored later" if row[c] else "no") if c == "recovered"
                       else _count(row[c]) if c == "attempts" else _text_or_dash(row[c])
                       for c in fcols])
    return table


class ExportTarget(str, Enum):
    thresholds = "thresholds"
    viam = "viam"
    rekognition = "rekognition"
    alibaba_imm = "alibaba-imm"


@app.command("export")
def export_cmd(
    thresholds_file: Annotated[
        Path, typer.Argument(help="A thresholds file written by 'calibrate thresholds --output'.")
    ],
    to: Annotated[ExportTarget, typer.Option("--to", help="Config target.")],
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="File to write (a JSON fragment/map).")
    ] = None,
    store: Annotated[
        Optional[Path],
        typer.Option("--store", parser=_store_location,
                     help="Viam: read every label the model emits from this store."),
    ] = None,
    detector: Annotated[Optional[str], typer.Option(help="Which detector's entries.")] = None,
    model_version: Annotated[Optional[str], typer.Option(help="Which model version's entries.")] = None,
    machine_config: Annotated[
        Optional[Path],
        typer.Option(help="Viam: merge into this machine config file (JSON) instead of writing a fragment."),
    ] = None,
    service: Annotated[str, typer.Option(help="Viam: the ML-model vision service's name.")] = "vision",
    mlmodel_name: Annotated[
        Optional[str], typer.Option(help="Viam fragment: the ML model service it uses.")
    ] = None,
    drop_uncalibrated: Annotated[
        bool,
        typer.Option(
            "--drop-uncalibrated",
            help="Viam: leave out emitted labels without a threshold (Viam then drops them) "
            "instead of listing them at --default-minimum-confidence.",
        ),
    ] = False,
    default_minimum_confidence: Annotated[
        Optional[float], typer.Option(help="Viam: cutoff for emitted labels without a threshold.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Viam merge: print the diff, change nothing.")
    ] = False,
    allow_missing: Annotated[
        bool,
        typer.Option(
            "--allow-missing",
            help="Rekognition, IMM: leave out labels that cannot be calibrated (listed under "
            "\"uncalibrated\") instead of refusing them. Viam leaves them out anyway, with "
            "a warning that it drops their detections.",
        ),
    ] = False,
) -> None:
    """Write calibrated thresholds as config a deployment reads.

    Rounding to the target's precision never changes a decision on the calibration data
    where a value of that precision can keep it; otherwise the export says so.

    A label whose policy refuses it (limits not shown, if_limit_unproven = "refuse") is
    never exported: every other label is written, the refused one gets one line with its
    options and the policy key to set, and the command exits 1. A label deployed by
    sign-off is written with a warning. Exit codes: 0 written; 1 written, but some
    labels were refused (named on stderr); 2 bad input, nothing written (e.g. a 0-1
    detector's thresholds --to rekognition).
    """
    from calibrate.export import export_to, read_thresholds_file

    options: dict[str, object] = {}
    if to is ExportTarget.viam:
        options.update(
            service=service, mlmodel_name=mlmodel_name, machine_config=machine_config,
            dry_run=dry_run, uncalibrated="drop" if drop_uncalibrated else "default",
            default_minimum_confidence=default_minimum_confidence,
        )
    elif machine_config or dry_run:
        _fail(CalibrateError("--machine-config and --dry-run only apply to --to viam."))
    if allow_missing and to in (ExportTarget.rekognition, ExportTarget.alibaba_imm):
        options["allow_missing"] = True
    try:
        tf = read_thresholds_file(thresholds_file)
        if output is None and not (to is ExportTarget.viam and machine_config):
            raise CalibrateError(f"--to {to.value} needs --output FILE.")
        if store is not None:
            from calibrate.store import open_store

            with open_store(store, read_only=True) as st:
                result = export_to(to.value, tf, output, store=st, detector=detector,
                                   model_version=model_version, **options)
        else:
            result = export_to(to.value, tf, output, detector=detector,
                               model_version=model_version, **options)
    except CalibrateError as exc:
        _fail(exc)
    # Label names and messages are data, not rich markup.
    for w in result.warnings:
        err.print(f"[yellow]warning:[/] {escape(w)}", highlight=False)
    for line in result.refused:
        err.print(f"[bold red]refused:[/] {escape(line)}", highlight=False)
    if result.diff:
        out.print(result.diff, highlight=False, markup=False)
    without = f" without {len(result.refused)} refused label(s)" if result.refused else ""
    out.print(f"dry run: {result.path} not changed{without}" if result.dry_run
              else f"wrote {result.path}{without}", highlight=False, markup=False)
    if result.refused:
        raise typer.Exit(1)


class CheckFormat(str, Enum):
    table = "table"
    markdown = "markdown"
    json = "json"


@app.command()
def check(
    thresholds_file: Annotated[Path, typer.Argument(help="The deployed thresholds file.")],
    store: Annotated[Path, typer.Option("--store", parser=_store_location,
                                             help="Store with the candidate's scores.")],
    model_version: Annotated[
        str, typer.Option(help="The candidate model version to check.", show_default=False)
    ],
    detector: Annotated[Optional[str], typer.Option(help="Detector (default: the file's).")] = None,
    deployed_version: Annotated[
        Optional[str], typer.Option(help="Deployed version, if the file holds several.")
    ] = None,
    split: Annotated[Optional[str], typer.Option(help="Only images of this split.")] = None,
    label: Annotated[
        Optional[list[str]], typer.Option("--label", help="Only these labels (repeatable).")
    ] = None,
    max_regret: Annotated[
        float,
        typer.Option(
            help="Fail a label whose deployed threshold is shown (exact lower bound at the "
            "policy's confidence) to cost more than this fraction above the candidate's "
            "own optimum; when that optimum costs 0, the bound is compared with this "
            "fraction of the deployed cost instead. inf turns it off.",
        ),
    ] = 0.25,
    max_cost_increase: Annotated[
        Optional[float],
        typer.Option(help="Also fail when the expected cost rises by more than this fraction (0.2 = 20%)."),
    ] = None,
    output_format: Annotated[
        CheckFormat, typer.Option("--format", help="table, markdown (merge request comment) or json.")
    ] = CheckFormat.table,
    junit: Annotated[Optional[Path], typer.Option("--junit", help="Also write JUnit XML here.")] = None,
    allow_incomplete: AllowIncompleteReadOption = False,
) -> None:
    """Retraining gate: do the deployed thresholds still hold for a candidate model version?

    Per label it judges the criteria that apply: limits (each policy limit shown, refuted
    or neither at the deployed threshold, from exact bounds), regret (on by default) and
    cost increase (with --max-cost-increase), and says which applied and which failed.

    Exit code 0 when every label passes, 1 when any fails, 3 when none fails but a limit
    can be neither shown nor refuted on these data (insufficient evidence), 2 on a usage
    or data error (e.g. an unknown split, label or model version).
    """
    import textwrap

    from calibrate import workflow
    from calibrate.check import COLUMNS, FAIL, INSUFFICIENT, check_thresholds
    from calibrate.store import open_store
    from calibrate.thresholds_file import read_thresholds_file

    try:
        tf = read_thresholds_file(thresholds_file)
        with open_store(workflow.existing_store(store, hint="score the candidate first"),
                        read_only=True, allow_incomplete=allow_incomplete) as st:
            report = check_thresholds(
                tf, st, model_version=model_version, detector=detector,
                deployed_version=deployed_version, split=split, labels=label,
                max_regret=max_regret, max_cost_increase=max_cost_increase,
            )
        if junit is not None:
            from calibrate.io import atomic_write_text
            atomic_write_text(junit, report.to_junit_xml())
    except CalibrateError as exc:
        _fail(exc)
    if output_format is CheckFormat.json:
        out.print_json(dumps_json(report.to_dict()))
    elif output_format is CheckFormat.markdown:
        out.print(report.to_markdown(), markup=False, highlight=False)
    else:
        style = {FAIL: "bold red", INSUFFICIENT: "yellow"}.get
        # Label and result are never wrapped or cut; paired figures may wrap at a space.
        table = KeyTable([Column(col, key=col in ("label", "result"),
                                 justify="left" if col in ("label", "result") else "right")
                          for col in COLUMNS], title=report.title())
        for r in report.results:
            cells = r.cells()
            result = Text(r.result_text(), style=style(r.outcome, "green"))
            table.add_row([*cells, result], lead=Text.assemble(cells[0], "  ", result),
                          fields=list(zip(COLUMNS[1:], cells[1:])))
        table.print(out)

        def say(line: str, line_style: str = "") -> None:
            # Wrapped here, not by rich, so that continuation lines keep their indent.
            indent = line[: len(line) - len(line.lstrip())]
            text = textwrap.fill(line, width=max(out.width, 40), subsequent_indent=indent,
                                 break_long_words=False, break_on_hyphens=False)
            out.print(Text(text, style=line_style))

        say("Rates: observed (exact upper bound). Cost change: against the deployed cost "
            "on its own calibration data. Regret: against the candidate's own optimum.")
        for r in report.results:
            first, *rest = r.summary_lines()
            say(first, style(r.outcome, ""))
            for line in rest:
                say(line)
        for line in report.parts_lines():
            say(line)
        verdict = f"{report.verdict} (exit {report.exit_code})"
        out.print(Text(verdict, style=style(report.outcome, "green")))
    if report.exit_code:
        raise typer.Exit(report.exit_code)


@app.command()
def report(
    store: Annotated[
        Path, typer.Option("--store", parser=_store_location, help="The score store to report on.")
    ] = Path("calibrate.duckdb"),
    policy: Annotated[
        Optional[Path],
        typer.Option(
            "--policy",
            help="TOML policy file ([defaults], [labels.<name>]). Without it every label "
            "gets equal costs and no limits.",
        ),
    ] = None,
    out_dir: Annotated[
        Optional[Path],
        typer.Option("--out", help="Folder to write into [default: reports/<store name>]."),
    ] = None,
    detector: Annotated[Optional[str], typer.Option(help="Only this detector.")] = None,
    model_version: Annotated[
        Optional[list[str]],
        typer.Option(
            "--model-version",
            help="Only this model version (repeatable, in this order; two or more are also "
            "compared).",
        ),
    ] = None,
    split: Annotated[
        Optional[str], typer.Option(help="Calibrate on images of this split only.")
    ] = None,
    held_out: Annotated[
        Optional[str],
        typer.Option(
            "--held-out",
            help="Also show each chosen threshold on this split (default: 'test' when "
            "--split names another split and the store has a test split; '' for none).",
            show_default=False,
        ),
    ] = None,
    title: Annotated[Optional[str], typer.Option(help="Title of the report.")] = None,
    allow_incomplete: AllowIncompleteReadOption = False,
) -> None:
    """Write the calibration report: one self-contained HTML file, a Markdown summary and
    every figure as PNG and SVG.

    Per label: the threshold, both error rates with exact upper bounds, cost, limits and
    samples needed; score histograms, error rates with confidence bands, expected cost and
    DET curves; model versions compared; and where the data came from.
    """
    from calibrate import workflow
    from calibrate.report import write_report
    from calibrate.store import open_store

    try:
        workflow.existing_store(store)
        policies = workflow.policies_from(policy)
        with open_store(store, read_only=True, allow_incomplete=allow_incomplete) as st:
            result = write_report(
                st, policies, out_dir, detector=detector, model_versions=model_version,
                split=split, held_out=held_out, title=title,
            )
    except CalibrateError as exc:
        _fail(exc)
    _say(f"report: {result.html_path}")
    _say(f"summary: {result.markdown_path}")
    _say(f"figures: {len(result.figure_paths)} files in {result.html_path.parent / 'figures'}")
    if policy is None:
        _say("note: no --policy given, so every label has equal costs and no limits.")


@app.command("run")
def run_cmd(
    study: Annotated[
        Path, typer.Argument(help="The study file (study.toml).", show_default=False)
    ],
    progress: Annotated[bool, typer.Option(help="Show progress bars while scoring.")] = True,
) -> None:
    """Run a study: score every detector version, choose thresholds, export, report.

    The study file names the dataset, detectors and model versions, per-label policies,
    export targets and where the store and report go. Re-run it after every retraining
    or after an interruption: scoring resumes and skips what the store already holds.

    Exit codes: 0 done; 1 done, but an export refused some labels (the 'refused:'
    lines: limits no threshold can show, and no sign-off in the policy); 2 bad input.
    """
    from calibrate.runner import Terminated, stop_on_sigterm
    from calibrate.study import load_study, run_study

    try:
        with stop_on_sigterm():  # SIGTERM anywhere in the study, like Ctrl-C
            result = run_study(load_study(study), progress=progress)
    except Terminated:
        err.print("terminated: everything scored so far is stored; run the same command to "
                  "resume.")
        raise typer.Exit(143) from None
    except KeyboardInterrupt:
        err.print("interrupted: everything scored so far is stored; run the same command to resume.")
        raise typer.Exit(130) from None
    except CalibrateError as exc:
        _fail(exc)
    for line in result.lines():
        _say(line)
    if result.exit_code:  # everything else was written; the refused labels are named
        raise typer.Exit(result.exit_code)


# What a score means, and production monitoring: defined in calibrate.cli_probability.
app.command("calibration")(_calibration_cmd)
app.command("monitor")(_monitor_cmd)


def main() -> None:  # pragma: no cover - console script entry point
    """Entry point of the ``calibrate`` console script."""
    try:
        app()
    except OSError as exc:
        # A last line of defence: every writer raises OutputError with the path, but a
        # file-system failure that slipped through is still the user's to fix (exit 2),
        # never a traceback, and never exit 1 (a failed gate for 'check').
        where = f" {exc.filename}" if exc.filename else ""
        err.print(escape(f"error: cannot access{where}: {exc.strerror or exc}."),
                  highlight=False)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
