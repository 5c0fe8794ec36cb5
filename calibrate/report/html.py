"""The calibration report: one self-contained HTML file, a Markdown summary, figures.

:func:`write_report` chooses every label's threshold from a score store (exactly as
``calibrate thresholds`` does), draws the figures of :mod:`calibrate.report.figures`,
and writes into ``out_dir``:

* ``index.html`` - first the decision: per detector, the version to deploy (the
  cheapest summed over labels) with a verdict computed from the versions' costs, and per
  label the cutoff, its expected cost per part (in units of one false reject), the
  errors on calibration and held-out data, the limits written out and what needs
  sign-off and why; labels decided per detection (``unit = "detection"``) in their own
  section (missed objects, false detections per image, precision, each with exact
  bounds, and two figures); then the versions' costs side by side; then the detail: the
  summary table (per label: the decision, deployed, needs sign-off or
  refused, the calibration split's figures and, beside them, the held-out split's at
  the same threshold, flagged where they disagree), the options of every label whose
  limits are not met, one section per label with its figures and the choice's
  explanation, a comparison of model versions, and the data's provenance (datasets
  and fingerprints, runs, failures excluded and why). Each label's section is a
  collapsible ``<details>`` with thumbnails of the deployed version's borderline
  images when the manifest's images are local files. Figures are embedded
  as base64 PNG and the style sheet is inline, so the file opens offline and can be
  mailed or attached as it is. Templates are jinja2 with autoescaping on, so label
  names and messages from the data can never inject markup.
* ``summary.md`` - the summary table and notes, for tickets and pull requests.
* ``figures/*.png`` and ``figures/*.svg`` - every figure, for pasting elsewhere.
"""

from __future__ import annotations

import base64
import io
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from calibrate.errors import InputError
from calibrate.io import atomic_write_bytes, atomic_write_text, ensure_folder
from calibrate.parts import part_decisions_from_store, parts_skipped
from calibrate.policy import PolicySet, by_action, error_names
from calibrate.report import figures as F
from calibrate.report.explorer import explorer_data
from calibrate.report.parts import part_blocks
from calibrate.report.figures.base import OPTION_TITLES, shown_option, threshold_kind
from calibrate.report.meaning import meaning_sections
from calibrate.store import ScoreStore, open_store, store_location
from calibrate.thresholds import (
    LabelThreshold,
    choose_thresholds_from_store,
    evaluate_threshold,
    format_rate,
    format_threshold,
)
from calibrate.version import __version__

__all__ = ["ReportResult", "build_report", "write_report"]

#: Resolution of the PNG figures (embedded and written); 6.4 x 5 in -> 960 x 750 px.
DPI = 150

_KIND_TITLES = {
    "histogram": ("score distribution", "Score distribution of images with and without the "
                  "label; the vertical line is the {kind} threshold"),
    "rates": ("error rates", "False-accept and false-reject rate versus threshold, with exact "
              "confidence bands and the {kind} threshold's rates"),
    "cost": ("expected cost", "Expected cost per item versus threshold; the circle is the "
             "{kind} threshold"),
    "det": ("DET curve", "Detection error trade-off on normal-deviate axes; the diamond is "
            "the equal error rate"),
}

#: The figures of a label decided per detection, and what they are.
_DETECTION_KINDS = {
    "miss_rate": (F.MissRateDisplay, "miss rate vs false detections",
                  "Miss rate over objects against false detections per image at every "
                  "cutoff, with the exact Clopper-Pearson band of the miss rate; the circle "
                  "is the {kind} cutoff"),
    "precision_recall": (F.DetectionPrecisionRecallDisplay, "precision-recall",
                         "Precision of the kept detections against recall of the objects, "
                         "with the exact Clopper-Pearson band of precision given the number "
                         "kept; whiskers at the {kind} cutoff are both exact intervals"),
}


@dataclass(frozen=True)
class ReportResult:
    """Where a report was written.

    Attributes
    ----------
    html_path : Path
        The self-contained HTML report (``index.html``).
    markdown_path : Path
        The Markdown summary (``summary.md``).
    figure_paths : list of Path
        Every PNG and SVG figure written.
    thresholds : list of LabelThreshold
        The choices the report shows.
    """

    html_path: Path
    markdown_path: Path
    figure_paths: list[Path] = field(default_factory=list)
    thresholds: list[LabelThreshold] = field(default_factory=list)


# ---------------------------------------------------------------------------------------
# Templates
# ---------------------------------------------------------------------------------------


def _pct(x) -> str:
    return "-" if x is None else format_rate(float(x))


def _num(x) -> str:
    return f"{int(x):,}"


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")


def _md(text) -> str:
    """Escape text for a Markdown table cell: no markup, no HTML, no broken columns."""
    s = str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = _MD_SPECIAL.sub(r"\\\1", s)
    return s.replace("\r", " ").replace("\n", " ")


def _code(text) -> str:
    # Inside a code span nothing is interpreted except the closing backtick.
    return str(text).replace("`", "'").replace("\n", " ")


def _environments():
    from jinja2 import Environment, PackageLoader, StrictUndefined

    loader = PackageLoader("calibrate.report", "templates")
    html = Environment(loader=loader, autoescape=True, undefined=StrictUndefined,
                       trim_blocks=True, lstrip_blocks=True)
    # Markdown is not HTML: its own escaping filter does the work there.
    md = Environment(loader=loader, autoescape=False, undefined=StrictUndefined,
                     keep_trailing_newline=True)
    for env in (html, md):
        env.filters.update(pct=_pct, num=_num, md=_md, code=_code)
    return html, md


# ---------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _FigureTask:
    """One figure to draw: everything needed, picklable, so workers can draw it."""

    kind: str
    key: str
    title: str | None
    caption: str
    short: str
    results: dict[str, LabelThreshold]  # model version -> the analysis to draw
    label: str
    detector: str
    overlay: bool
    calibrations: tuple = ()  # kind "meaning": LabelCalibration per version


def _draw(task: _FigureTask):
    """Draw what was computed: no query, no curve, no choice happens here."""
    if task.kind == "meaning":
        return F.plot_label_calibrations(task.calibrations)
    ax = F.new_axes()
    if task.overlay:
        F.overlay_results(task.results, kind=task.kind, label=task.label,
                          detector=task.detector, ax=ax)
    else:
        (result,) = task.results.values()
        display = (_DETECTION_KINDS[task.kind][0] if task.kind in _DETECTION_KINDS
                   else F._KINDS[task.kind])
        display.from_result(result, ax=ax)
    if task.title:
        ax.set_title(task.title, fontsize="medium")
    return ax.figure


def _render(task: _FigureTask, directory: Path) -> dict[str, Any]:
    """Draw one figure and write it as PNG and SVG; return what the templates need."""
    fig = _draw(task)
    # Lay out once, then freeze: each savefig would otherwise redo the layout.
    fig.draw_without_rendering()
    fig.set_layout_engine("none")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    png = buf.getvalue()
    png_path = directory / f"{task.key}.png"
    svg_path = directory / f"{task.key}.svg"
    atomic_write_bytes(png_path, png)
    # No date in the SVG, so an unchanged report is byte-identical.
    svg = io.BytesIO()
    fig.savefig(svg, format="svg", metadata={"Date": None})
    atomic_write_bytes(svg_path, svg.getvalue())
    w, h = fig.get_size_inches() * DPI
    return {
        "data_uri": "data:image/png;base64," + base64.b64encode(png).decode("ascii"),
        "png_name": png_path.name,
        "svg_name": svg_path.name,
        "paths": [png_path, svg_path],
        "caption": task.caption,
        "alt": task.caption,
        "short": task.short,
        "width": int(round(w)),
        "height": int(round(h)),
    }


def _render_all(tasks: list[_FigureTask], directory: Path, workers: int | None) -> list[dict]:
    """Render figures, in forked worker processes on Linux when there are several CPUs.

    Text layout makes a figure cost about half a second, so a report of dozens of
    figures is worth spreading over processes. Only fork is used: spawn and forkserver
    re-import the caller's ``__main__``, which runs a script without a main guard
    again (and fails outright for code piped to ``python -``). Forking after the
    store's queries is safe on Linux: the children only draw, never touch DuckDB, and
    glibc's malloc is fork-safe. Elsewhere figures are drawn in this process.
    """
    import multiprocessing as mp
    import os
    import sys
    from concurrent.futures import ProcessPoolExecutor

    if workers is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        workers = min(4, cpus or 1)
    if workers <= 1 or len(tasks) < 8 or not sys.platform.startswith("linux"):
        return [_render(t, directory) for t in tasks]
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
        return list(pool.map(_render, tasks, [directory] * len(tasks), chunksize=2))


def _remove_stale(directory: Path, written: list[Path]) -> None:
    """Delete figures of an earlier report that this one did not write."""
    keep = set(written)
    for p in directory.glob("*"):
        if p.suffix in (".png", ".svg") and p not in keep:
            p.unlink()


def _label_tasks(lt: LabelThreshold) -> list[_FigureTask]:
    """The four figures of one (detector, version, label)."""
    who = f"{lt.detector} {lt.model_version}"
    tasks = []
    for kind in F._KINDS:
        short, caption = _KIND_TITLES[kind]
        tasks.append(_FigureTask(
            kind=kind, key=F.figure_key(lt.label, lt.detector, lt.model_version, kind),
            title=f"{F._plain(lt.label)} · {F._plain(who)}: {short}",
            caption=f"{caption.format(kind=threshold_kind(lt.choice))} ({lt.label}, {who}).",
            short=short,
            results={lt.model_version: lt}, label=lt.label, detector=lt.detector,
            overlay=False,
        ))
    return tasks


def _detection_tasks(lt: LabelThreshold) -> list[_FigureTask]:
    """The two figures of a label decided per detection."""
    who = f"{lt.detector} {lt.model_version}"
    return [_FigureTask(
        kind=kind, key=F.figure_key(lt.label, lt.detector, lt.model_version, kind),
        title=f"{F._plain(lt.label)} · {F._plain(who)}: {short}",
        caption=f"{caption.format(kind=threshold_kind(lt.choice))} ({lt.label}, {who}).",
        short=short, results={lt.model_version: lt}, label=lt.label, detector=lt.detector,
        overlay=False) for kind, (_, short, caption) in _DETECTION_KINDS.items()]


def _comparison_tasks(detector, label, results: dict[str, LabelThreshold]) -> list[_FigureTask]:
    versions = ", ".join(results)
    tasks = []
    for kind in F._KINDS:
        short, caption = _KIND_TITLES[kind]
        tasks.append(_FigureTask(
            kind=kind, key=F.figure_key(label, detector, "versions", kind), title=None,
            caption=f"{caption.format(kind='marked')}: {versions} overlaid ({label}, "
                    f"{detector}).", short=short,
            results=dict(results), label=label, detector=detector, overlay=True,
        ))
    return tasks


# ---------------------------------------------------------------------------------------
# Report data
# ---------------------------------------------------------------------------------------


def _check_words(c) -> dict[str, str]:
    """A calibration limit check in words: met, unproven (and how many more samples
    would show it) or shown to fail."""
    head = f"{c.error.replace('_', ' ')} \u2264\u00a0{format_rate(c.limit)}"
    if c.met:
        return dict(head=head, css="met", text="met")
    if c.refuted:
        return dict(head=head, css="notmet",
                    text=f"shown to fail (refuted; lower bound {format_rate(c.lower)})")
    return dict(head=head, css="warn",
                text=f"unproven: {c.samples_needed:,} more {c.about}s needed")


def _held_check_words(c) -> dict[str, str]:
    """A limit check on the held-out split in words."""
    head = f"{c.error.replace('_', ' ')} \u2264\u00a0{format_rate(c.limit)}"
    if c.refuted:
        return dict(head=head, css="notmet",
                    text=f"shown to fail (lower bound {format_rate(c.lower)})")
    if c.rate > c.limit:
        return dict(head=head, css="notmet", text=f"broken: rate {format_rate(c.rate)}")
    if c.met:
        return dict(head=head, css="met", text="met")
    return dict(head=head, css="warn", text=f"not shown (upper {format_rate(c.upper)})")


def _joint_text(choice) -> str:
    """The joint-limits rule, for a label with two limits (else empty)."""
    if len(choice.limit_checks) < 2:
        return ""
    each = choice.limit_checks[0].confidence
    return (f"Both limits must hold together at {choice.policy.confidence:.0%}: each is "
            f"tested at {each:.1%} (1 \u2212 \u03b1/2, Bonferroni), since a false-accept "
            "limit scanned from one end and a false-reject limit scanned from the other "
            "add their error chances.")


def _decision(choice) -> dict[str, str]:
    """What happens to the label, in words (the summary's decision cell)."""
    shown = shown_option(choice)
    title = OPTION_TITLES.get(shown or "", shown or "")
    if choice.decision == "deploy":
        return dict(kind="deploy", css="met", text="deployed", detail="")
    if choice.decision == "refuse":
        return dict(kind="refuse", css="notmet", text="refused: not exported", detail="",
                    option=title)
    return dict(kind="sign_off", css="warn", text="needs sign-off",
                detail=f"the policy deploys the {title} option (if_limit_unproven = "
                       f"\"{choice.decision}\") although its limits are not shown",
                option=title)


def _status_words(choice) -> list[dict[str, str]]:
    """The calibration row's limits cell: one entry per limit, after a headline when
    no threshold can meet them."""
    if not choice.limit_checks:
        return [dict(head="", css="none", text="none set")]
    out = []
    if choice.status == "limits_refuted":
        out.append(dict(head="", css="notmet",
                        text="shown to fail at every threshold (refuted): more data cannot "
                             "help"))
    elif choice.status == "limits_unproven" and any(c.refuted for c in choice.limit_checks):
        # The label could be shown at another threshold with more data, though the one
        # shown here (deployed by sign-off, say) is shown to fail: say both.
        least = max((c for c in choice.limit_checks if not c.met),
                    key=lambda c: c.samples_needed_minimum)
        out.append(dict(head="", css="warn", text=(
            f"unproven: at best {least.samples_needed_minimum:,} more {least.about}s "
            "needed (at another threshold)")))
        return out + [dict(w, head=f"at this threshold, {w['head']}")
                      for w in map(_check_words, choice.limit_checks)]
    return out + [_check_words(c) for c in choice.limit_checks]


def _error_rows(choice, held=None) -> list[dict[str, Any]]:
    """Per error kind: calibration counts, rate and bound, the same on the held-out
    split when there is one, and the limit with its check on each."""
    fa_name, fr_name = error_names(choice.action)
    rows = []
    for key, name, which in (("false_accept", fa_name, "accept"),
                             ("false_reject", fr_name, "reject")):
        cal = _figures(choice, which)
        check = next((c for c in choice.limit_checks if c.error == key), None)
        row = dict(name=name, **cal, held=None, limit=None, check=None, held_check=None,
                   confidence=None)
        if held is not None:
            row["held"] = _figures(held, which)
        if check is not None:
            row.update(limit=check.limit, confidence=check.confidence,
                       check=_check_words(check))
            hc = None if held is None else next(
                (c for c in held.limit_checks if c.error == key), None)
            row["held_check"] = None if hc is None else _held_check_words(hc)
        rows.append(row)
    return rows


def _figures(choice, which: str) -> dict[str, Any]:
    """Errors, class size, rate and upper bound of one error kind of a choice."""
    n_fa, n_fr = by_action(choice.action, choice.n_positive, choice.n_negative)
    if which == "accept":
        return dict(errors=choice.false_accepts, n=n_fa, rate=choice.false_accept_rate,
                    upper=choice.false_accept_rate_upper)
    return dict(errors=choice.false_rejects, n=n_fr, rate=choice.false_reject_rate,
                upper=choice.false_reject_rate_upper)


def _option_rows(choice) -> list[dict[str, Any]]:
    """The options side by side, when the limits are not met: each fully evaluated."""
    shown = shown_option(choice)
    rows = []
    for o in choice.options:
        c = o.choice
        if o.name == shown:
            role = ("deployed: needs sign-off" if choice.needs_sign_off
                    else "shown for information; not deployed")
        else:
            role = ""
        rows.append(dict(
            name=o.name, title=OPTION_TITLES.get(o.name, o.name), meaning=o.meaning,
            threshold_text=format_threshold(c.threshold), choice=c, role=role,
            checks=[_check_words(k) for k in c.limit_checks],
        ))
    return rows


def _when(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    try:
        if x != x:  # NaT
            return "-"
    except Exception:  # noqa: BLE001 - exotic timestamp types compare oddly
        pass
    return str(x)[:19]


def _floor_text(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "none"
    return f"{float(x):g}"


def _hints(results) -> dict[str, str]:
    """Column hints of the summary: what each error means, when all labels agree."""
    actions = {r.choice.action for r in results if r.choice is not None}
    if actions == {"reject"}:
        return dict(fa_hint="defects shipped", fr_hint="good parts scrapped")
    if actions == {"accept"}:
        return dict(fa_hint="negatives let through", fr_hint="positives turned away")
    return dict(fa_hint="by each label's action", fr_hint="by each label's action")


def _held_out_context(results, split: str | None) -> dict[str, Any]:
    """Which held-out split the report shows beside the calibration figures, or the one
    sentence saying there is none."""
    names = sorted({r.held_out_split for r in results if r.held_out_split})
    flagged = [r for r in results if r.held_out_flags]
    note = ""
    if not names:
        note = (
            "No held-out split: every figure here comes from the "
            + (f"split {split!r}" if split else "data")
            + " that chose the threshold, so its bounds are not adjusted for that choice "
            "and run optimistic. Calibrate on one split and keep another (e.g. \"test\") "
            "held out to see honest figures beside them."
        )
    return dict(held_out_names=names, held_out_note=note, n_flagged=len(flagged))


def _provenance(store, keys, dataset: str | None, results) -> dict[str, Any]:
    runs = store.runs()
    if len(runs):
        runs = runs[[k in keys for k in zip(runs["detector"], runs["model_version"], strict=True)]]
    if dataset is not None and len(runs):
        runs = runs[runs["dataset"] == dataset]
    run_rows = [
        dict(
            run_id=r.run_id, detector=r.detector, model_version=r.model_version,
            dataset=r.dataset, status=r.status, started_at=_when(r.started_at),
            finished_at=_when(r.finished_at), n_scored=int(r.n_scored), n_failed=int(r.n_failed),
            detection_floor=_floor_text(r.detection_floor), tool_version=r.tool_version,
            settings=json.dumps(r.settings, indent=2, sort_keys=True, default=str),
        )
        for r in runs.itertuples()
    ]
    datasets: dict[tuple[str, str], list[str]] = {}
    for r in runs.itertuples():
        datasets.setdefault((r.dataset, r.dataset_fingerprint), []).append(
            f"{r.detector} {r.model_version}"
        )
    dataset_rows = [
        dict(dataset=d, fingerprint=fp, versions=", ".join(dict.fromkeys(v)))
        for (d, fp), v in datasets.items()
    ]
    fails = store.failures()
    failure_rows = []
    if len(fails):
        sel = fails[fails["run_id"].isin(set(runs["run_id"]))] if len(runs) else fails.iloc[0:0]
        for (det, ver, kind), g in sel.groupby(["detector", "model_version", "kind"], sort=True):
            examples = []
            for m in g["message"]:
                m = str(m)
                m = m if len(m) <= 160 else m[:157] + "..."
                if m not in examples:
                    examples.append(m)
                if len(examples) == 3:
                    break
            failure_rows.append(dict(detector=det, model_version=ver, kind=kind, n=len(g),
                                     n_images=int(g["image_id"].nunique()), examples=examples))
    excluded = {}
    for r in results:
        excluded[(r.detector, r.model_version)] = r.n_failed
    return dict(
        runs=run_rows,
        datasets=dataset_rows,
        failures=failure_rows,
        excluded=[dict(detector=d, model_version=v, n=n) for (d, v), n in excluded.items()],
        n_excluded=sum(excluded.values()),
    )


def _select_keys(store, detector, model_versions) -> list[tuple[str, str]]:
    versions = store.versions()
    if isinstance(model_versions, str):
        model_versions = [model_versions]
    keys = [
        (r.detector, r.model_version) for r in versions.itertuples()
        if (detector is None or r.detector == detector)
        and (model_versions is None or r.model_version in model_versions)
    ]
    if not keys:
        have = ", ".join(f"{r.detector} {r.model_version}" for r in versions.itertuples()) or "none"
        want = " ".join(x for x in (detector or "", ", ".join(model_versions or [])) if x) or "any"
        raise InputError(
            f"the store {store.path} has no runs of {want}; it has: {have}. Score the "
            "dataset first ('calibrate score') or fix the detector / model version."
        )
    if model_versions is not None:
        missing = [v for v in model_versions if v not in {ver for _, ver in keys}]
        if missing:
            raise InputError(
                f"the store {store.path} has no model version(s) {', '.join(missing)}"
                + (f" of {detector}" if detector else "") + "."
            )
    return keys


def build_report(
    store,
    policies: PolicySet,
    out_dir,
    *,
    keys: list[tuple[str, str]],
    split: str | None = None,
    dataset: str | None = None,
    title: str | None = None,
    results: list[LabelThreshold] | None = None,
    held_out: str | None = None,
    outputs: list[tuple[str, str]] = (),
    extra_provenance: list[tuple[str, str]] = (),
    workers: int | None = None,
    parts=None,
) -> ReportResult:
    """Write the report for exact ``(detector, model_version)`` keys of an open store.

    The engine behind :func:`write_report`, for callers (such as
    :func:`calibrate.study.run_study`) that already hold the store open and the
    threshold choices, so the report shows exactly what was exported.

    Parameters
    ----------
    store : calibrate.store.ScoreStore
    policies : PolicySet
    out_dir : str or Path
    keys : list of (detector, model_version)
    split, dataset : str, optional
    title : str, optional
    results : list of LabelThreshold, optional
        Choices already made on the same data, held-out figures included; computed
        when omitted (then nothing is queried or chosen twice).
    held_out : str, optional
        When ``results`` is omitted: the split to evaluate each chosen threshold on
        (see :func:`calibrate.thresholds.choose_thresholds_from_store`: by default
        ``"test"`` when calibrating on another split; ``""`` for none).
    outputs : list of (what, path)
        Other files written alongside (listed under provenance).
    extra_provenance : list of (name, value)
        More provenance rows (e.g. the study file and manifest).
    workers : int, optional
        Processes that draw figures (default: up to 4, one per CPU, on Linux; 1 draws
        in this process, as on other systems).
    parts : list of PartDecision, optional
        Whole-part figures already computed; computed here when omitted and the policy
        has a ``[part]`` table.

    Returns
    -------
    ReportResult
    """
    out = Path(out_dir)
    fig_dir = ensure_folder(out / "figures")
    every = _results_for(store, policies, keys, split, dataset, results, held_out)
    # Detection-unit labels have their own figures and tables (missed objects, false
    # detections per image): the image-unit decision block, summary and explorer show
    # the others.
    results = [r for r in every if r.unit != "detection"]
    detection_labels = [r for r in every if r.unit == "detection"]
    sections, summary_rows, notes, tasks, slots = _label_sections(results, keys)
    detection_entries = _detection_entries(detection_labels, tasks, slots)
    for (det, label), sec in sections.items():
        versions = sec.pop("results")
        if len(versions) < 2:
            continue
        sec["comparison"] = dict(crossover=_crossover(det, versions), figures=[])
        new = _comparison_tasks(det, label, versions)
        slots.append((sec["comparison"]["figures"], len(tasks), len(new)))
        tasks += new

    meanings = meaning_sections(store, results, policies=policies)
    _add_meaning_tasks(meanings, tasks, slots)
    rendered = _render_all(tasks, fig_dir, workers)
    for target, first, count in slots:
        target.extend(rendered[first:first + count])
    written = [p for f in rendered for p in f["paths"]]
    _remove_stale(fig_dir, written)

    decisions = _decision_blocks(results, keys) if results else []
    if parts is None:
        parts = part_decisions_from_store(store, results, policies, dataset=dataset,
                                          split=split)
    _attach_examples(store, sections, results, decisions, split, dataset)
    context = dict(
        title=title or f"Calibration report: {store.path.stem}",
        store_path=str(store.path),
        split=split,
        dataset=dataset,
        policy_source=policies.source,
        calibrate_version=__version__,
        generated_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        summary_rows=summary_rows,
        decisions=decisions,
        has_compare=any(b["compare_many"] for b in decisions),
        cost_unit=_cost_unit(results),
        **_hints(results),
        **_held_out_context(results, split),
        sections=list(sections.values()),
        meanings=meanings,
        notes=notes,
        detection_entries=detection_entries,
        outputs=[(w, str(p)) for w, p in outputs],
        part_blocks=part_blocks(parts),
        parts_skipped=parts_skipped(results, policies),
        extra_provenance=[(k, str(val)) for k, val in extra_provenance],
        **_provenance(store, set(keys), dataset, results),
    )
    context["explorer"] = explorer_data(results) if results else {"entries": []}
    html_env, md_env = _environments()
    html_path = out / "index.html"
    md_path = out / "summary.md"
    atomic_write_text(html_path, html_env.get_template("report.html.j2").render(**context))
    atomic_write_text(md_path, md_env.get_template("summary.md.j2").render(**context))
    return ReportResult(html_path, md_path, written, every)



def _detection_entries(detection_labels, tasks: list, slots: list) -> list[dict]:
    """Table entries of detection-unit labels; their figures join ``tasks``."""
    entries = []
    for r in detection_labels:
        entry = _detection_entry(r, "label-" + F.figure_key(r.label, r.detector,
                                                             r.model_version))
        if r.choice is not None:
            new = _detection_tasks(r)
            slots.append((entry["figures"], len(tasks), len(new)))
            tasks += new
        entries.append(entry)
    return entries


def _add_meaning_tasks(meanings: list[dict], tasks: list, slots: list) -> None:
    """One "what a score means" figure per label section, drawn with the others."""
    for m in meanings:
        m["figures"] = []
        slots.append((m["figures"], len(tasks), 1))
        tasks.append(_FigureTask(
            kind="meaning", key=F.figure_key(m["label"], m["detector"], "meaning"),
            title=None, short="what a score means",
            caption=(f"{m['label']}: reliability of each version's map on held-out data "
                     "(exact intervals per bin), and what a score means on the line per "
                     "version (map, score bands with exact intervals, cutoffs dashed)."),
            results={}, label=m["label"], detector=m["detector"], overlay=False,
            calibrations=tuple(m.pop("calibrations"))))

def _results_for(store, policies, keys, split, dataset, results,
                 held_out=None) -> list[LabelThreshold]:
    """The analyses to show, in report order: the given ones (already computed on the
    same data, held-out figures included, so the report shows exactly what was
    exported), else computed now, once.
    """
    if results is None:
        results = []
        for det, ver in keys:
            results += choose_thresholds_from_store(
                store, policies, detector=det, model_version=ver, split=split,
                dataset=dataset, held_out=held_out,
            )
    keyset = set(keys)
    results = [r for r in results if (r.detector, r.model_version) in keyset]
    if not results:
        raise InputError(
            f"the store {store.path} has no labels to report for "
            f"{', '.join(f'{d} {v}' for d, v in keys)}"
            + (f" in split {split!r}" if split else "") + "."
        )
    missing = [r for r in results if r.choice is not None and r.curve is None]
    if missing:
        raise InputError(
            f"{missing[0].label} ({missing[0].detector} {missing[0].model_version}): the "
            "result carries no curve; pass results of choose_thresholds_from_store."
        )
    order = {k: i for i, k in enumerate(keys)}
    return sorted(results,
                  key=lambda r: (r.label, r.detector, order[(r.detector, r.model_version)]))


def _label_sections(results: list[LabelThreshold], keys):
    """Per (detector, label) section, summary rows, notes, and the figures to draw."""
    many_detectors = len({d for d, _ in keys}) > 1
    tasks: list[_FigureTask] = []
    slots: list[tuple[list, int, int]] = []  # (list to fill, first task, count)
    sections: dict[tuple[str, str], dict[str, Any]] = {}
    summary_rows, notes = [], []
    for r in results:
        anchor = "label-" + F.figure_key(r.label, r.detector)
        sec = sections.setdefault((r.detector, r.label), dict(
            label=r.label + (f" ({r.detector})" if many_detectors else ""),
            anchor=anchor, versions=[], results={}, comparison=None,
        ))
        v = _version_entry(r, anchor + "--" + F.figure_key(r.model_version))
        who = f"{r.detector} {r.model_version}"
        if r.choice is not None:
            sec["results"][r.model_version] = r
            new = _label_tasks(r)
            slots.append((v["figures"], len(tasks), len(new)))
            tasks += new
            if r.choice.status != "ok":
                notes.append(dict(label=r.label, version=who, text=r.choice.explanation))
        else:
            notes.append(dict(label=r.label, version=who, text=f"cannot calibrate: {r.problem}"))
        sec["versions"].append(v)
        summary_rows.append(v)
    return sections, summary_rows, notes, tasks, slots


def _version_entry(r: LabelThreshold, anchor: str) -> dict[str, Any]:
    """Everything the summary row and the label section show about one result."""
    v: dict[str, Any] = dict(
        label=r.label, detector=r.detector, model_version=r.model_version, choice=r.choice,
        problem=r.problem, n_failed=r.n_failed, figures=[], anchor=anchor,
        detection_floor=r.detection_floor, held=r.held_out, held_split=r.held_out_split,
        flags=list(r.held_out_flags),
    )
    c = r.choice
    if c is None:
        return v
    v.update(
        threshold_exact=format_threshold(c.threshold),
        decision=_decision(c),
        limits=_status_words(c),
        held_limits=[] if r.held_out is None else [
            _held_check_words(k) for k in r.held_out.limit_checks],
        joint=_joint_text(c),
        errors=_error_rows(c, r.held_out),
        options=_option_rows(c),
        policy_items=[(k, val) for k, val in c.policy.to_dict().items() if val is not None],
    )
    v["n_rows"] = 1 + (r.held_out is not None) + bool(r.held_out_flags)
    return v


def _crossover(det: str, versions: dict[str, LabelThreshold]) -> list[dict[str, Any]]:
    """Each version's chosen threshold evaluated on every other version's curve: what
    deploying the old cutoff on the new model would do (evaluated, not chosen again)."""
    rows = []
    for a, ra in versions.items():
        for b, rb in versions.items():
            if a == b:
                continue
            ch = evaluate_threshold(rb.curve, ra.choice.threshold, rb.choice.policy)
            rows.append(dict(
                source=f"{det} {a}", target=f"{det} {b}", choice=ch,
                threshold_text=format_threshold(ra.choice.threshold),
                source_kind=threshold_kind(ra.choice),
                own_cost=rb.choice.expected_cost,
                own_kind=threshold_kind(rb.choice),
                limits=_status_words(ch),
            ))
    return rows


def write_report(
    store_path_or_store,
    policies: PolicySet,
    out_dir=None,
    *,
    detector: str | None = None,
    model_versions: list[str] | str | None = None,
    split: str | None = None,
    title: str | None = None,
    dataset: str | None = None,
    held_out: str | None = None,
    workers: int | None = None,
) -> ReportResult:
    """Write the calibration report of a score store.

    Parameters
    ----------
    store_path_or_store : str, Path or calibrate.store.ScoreStore
        A store file (opened read-only) or an open store.
    policies : PolicySet
        Per-label policies, e.g. from :func:`calibrate.thresholds.load_policy_file`.
    out_dir : str or Path, optional
        Folder to write into (created if missing). Default
        ``reports/<store file stem>``.
    detector : str, optional
        Only this detector (default: every detector in the store).
    model_versions : list of str, optional
        Only these model versions, in this order (default: all, oldest first). With
        two or more, each label also gets a comparison of the versions.
    split : str, optional
        Calibrate on images of this split only (e.g. ``"calibration"``).
    title : str, optional
    dataset : str, optional
        Only runs on this dataset.
    held_out : str, optional
        The split each chosen threshold is also evaluated on, shown beside the
        calibration figures (default ``"test"`` when ``split`` is another split and the
        store has a ``test`` split; ``""`` for none).
    workers : int, optional
        Processes that draw the figures (default: up to 4, one per CPU, on Linux; 1
        draws in this process, as on other systems).

    Returns
    -------
    ReportResult
        Paths of ``index.html``, ``summary.md`` and every figure, and the thresholds.

    Raises
    ------
    InputError
        When the store has no matching runs, or a label's policy is invalid.
    StoreError
        When the store cannot be opened.

    Examples
    --------
    >>> from calibrate.thresholds import load_policy_file
    >>> result = write_report("calibrate.duckdb",                     # doctest: +SKIP
    ...                       load_policy_file("datasets/parts-policy.toml"),
    ...                       "reports/parts", split="calibration")
    >>> result.html_path                                               # doctest: +SKIP
    PosixPath('reports/parts/index.html')
    """
    if isinstance(store_path_or_store, ScoreStore):
        store, owned = store_path_or_store, False
    else:
        path = store_location(store_path_or_store)
        if not path.exists():
            raise InputError(f"no score store at {path}; fill one with 'calibrate score'.")
        store, owned = open_store(path, read_only=True), True
    try:
        if out_dir is None:
            out_dir = Path("reports") / store.path.stem
        keys = _select_keys(store, detector, model_versions)
        if model_versions is not None and not isinstance(model_versions, str):
            rank = {v: i for i, v in enumerate(model_versions)}
            keys.sort(key=lambda k: rank[k[1]])
        return build_report(store, policies, out_dir, keys=keys, split=split, dataset=dataset,
                            title=title, held_out=held_out, workers=workers)
    finally:
        if owned:
            store.close()


# ---------------------------------------------------------------------------------------
# The decision: what to deploy, what it costs, what needs sign-off (the report's top)
# ---------------------------------------------------------------------------------------

_COUNT_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven",
                8: "eight", 9: "nine", 10: "ten"}
_SHORT_ERROR = {"false_accept": "FA", "false_reject": "FR"}


def _unit_cost(choice) -> float:
    """Expected cost per item in units of one false reject (a scrapped good part)."""
    c_fr = choice.policy.cost_false_reject
    return choice.expected_cost / c_fr if c_fr > 0 else choice.expected_cost


def _cost_unit(results) -> str:
    """The unit the decision block states its costs in."""
    policies = [r.choice.policy for r in results if r.choice is not None]
    if policies and all(p.cost_false_reject == 0 for p in policies):
        return "expected cost per item, in the policy's cost units"
    if {p.action for p in policies} == {"reject"}:
        return ("expected cost per part, in units of one scrapped good part "
                "(cost_false_reject; a shipped defect costs cost_false_accept of them)")
    return "expected cost per item, in units of one false reject (cost_false_reject)"


def _errors_text(choice, which: str) -> dict[str, str]:
    f = _figures(choice, which)
    return dict(rate=format_rate(f["rate"]), count=f"{f['errors']:,} of {f['n']:,}")


def _limit_marks(r: LabelThreshold) -> list[dict[str, str]]:
    """Each limit written out with its verdict: "FR ≤ 10% ✔" (held-out beside it)."""
    held = {} if r.held_out is None else {c.error: c for c in r.held_out.limit_checks}
    out = []
    for c in r.choice.limit_checks:
        mark, css, why = ("\u2714", "met", "shown") if c.met else (
            ("\u2718", "notmet", "shown to fail") if c.refuted
            else ("?", "warn", f"unproven: {c.samples_needed:,} more {c.about}s needed"))
        item = dict(text=f"{_SHORT_ERROR[c.error]} \u2264 {format_rate(c.limit)}",
                    mark=mark, css=css, why=why, held="", held_css="")
        h = held.get(c.error)
        if h is not None:
            w = _held_check_words(h)
            item.update(held={"met": "\u2714", "notmet": "\u2718"}.get(w["css"], "?"),
                        held_css=w["css"], held_why=w["text"])
        out.append(item)
    return out


def _decision_row(r: LabelThreshold, anchor: str) -> dict[str, Any]:
    """One label's line of the decision block."""
    c, h = r.choice, r.held_out
    d = _decision(c)
    row = dict(label=r.label, anchor=anchor, decision=d, threshold=format_threshold(c.threshold),
               cost=_unit_cost(c), held_cost=None if h is None else _unit_cost(h),
               shipped=_errors_text(c, "accept"), scrapped=_errors_text(c, "reject"),
               held_shipped=None if h is None else _errors_text(h, "accept"),
               held_scrapped=None if h is None else _errors_text(h, "reject"),
               limits=_limit_marks(r), sign_off="", flagged=bool(r.held_out_flags))
    if d["kind"] != "deploy":
        broken = [x for x in c.limit_checks if not x.met]
        why = "; ".join(
            f"{_SHORT_ERROR[x.error]} \u2264 {format_rate(x.limit)} "
            + ("is shown to fail at this cutoff" if x.refuted else
               f"cannot be shown yet ({x.samples_needed_minimum:,} more {x.about}s, images "
               f"{'with' if x.about == 'positive' else 'without'} {r.label}, needed at best)")
            for x in broken) or "its limits are not shown"
        act = (f"the policy deploys the {d['option']} option (T = "
               f"{format_threshold(c.threshold)})" if d["kind"] == "sign_off"
               else "refused: nothing exported until someone signs off on an option")
        row["sign_off"] = f"{why}; {act}."
    if h is not None and any(k.rate > k.limit or k.refuted for k in h.limit_checks):
        row["sign_off"] = (row["sign_off"] + " " if row["sign_off"] else "") + \
            "A limit is broken on held-out data."
    return row


def _count_words(k: int, n: int) -> str:
    if k == n:
        return {1: "the one label", 2: "both labels"}.get(n, f"all {_COUNT_WORDS.get(n, n)} labels")
    return f"{_COUNT_WORDS.get(k, k)} of {_COUNT_WORDS.get(n, n)} labels"


def _compare_versions(best: dict[str, LabelThreshold], other: dict[str, LabelThreshold],
                      held: bool) -> tuple[int, int, list[str]]:
    """Labels where ``best`` is cheaper than ``other`` (on calibration or held-out)."""
    common = [k for k in best if k in other]
    wins, losses = 0, []
    for k in common:
        a, b = (best[k].held_out, other[k].held_out) if held else (best[k].choice, other[k].choice)
        if a is None or b is None:
            return 0, 0, []
        if _unit_cost(a) < _unit_cost(b) - 1e-12:
            wins += 1
        else:
            losses.append(k)
    return wins, len(common), losses


def _verdict(det: str, ver: str, versions: dict[str, dict[str, LabelThreshold]],
             rows: list[dict]) -> dict[str, str]:
    """The one-line answer, computed from the per-label costs of each version."""
    head = f"Deploy {ver}"
    parts, held_parts = [], []
    for other, labels in versions.items():
        if other == ver:
            continue
        wins, n, losses = _compare_versions(versions[ver], labels, held=False)
        if n:
            text = f"cheaper than {other} on {_count_words(wins, n)}"
            if losses:
                text += f" (not on {', '.join(losses)})"
            parts.append(text)
        hw, hn, _ = _compare_versions(versions[ver], labels, held=True)
        if hn:
            held_parts.append(f"{_count_words(hw, hn)} vs {other}")
    if not parts:
        ready = sum(r["decision"]["kind"] == "deploy" for r in rows)
        parts.append(f"{_count_words(ready, len(rows))} ready to deploy")
    line = f"{head}: " + "; ".join(parts) + "."
    held = ("On held-out data it is cheaper on " + "; ".join(held_parts) + "."
            if held_parts else "")
    refused = [r["label"] for r in rows if r["decision"]["kind"] == "refuse"]
    signs = [r["label"] for r in rows if r["decision"]["kind"] == "sign_off"]
    tail = []
    if signs:
        tail.append(f"{', '.join(signs)} need{'s' if len(signs) == 1 else ''} sign-off")
    if refused:
        tail.append(f"{', '.join(refused)} refused (not exported)")
    tail_text = "; ".join(tail) + "." if tail else ""
    return dict(line=line, held=held, tail=tail_text[:1].upper() + tail_text[1:])


def _decision_blocks(results: list[LabelThreshold], keys) -> list[dict[str, Any]]:
    """Per detector: the version to deploy (cheapest summed over labels, latest on a
    tie), its per-label decision, the verdict, and the version comparison table."""
    blocks = []
    for det in dict.fromkeys(d for d, _ in keys):
        versions: dict[str, dict[str, LabelThreshold]] = {}
        for d, ver in keys:
            if d == det:
                versions[ver] = {r.label: r for r in results if r.detector == d
                                 and r.model_version == ver and r.choice is not None}
        common = set.intersection(*(set(v) for v in versions.values())) if versions else set()
        order = list(versions)

        def total(ver, common=common, versions=versions, order=order):
            return (sum(_unit_cost(versions[ver][k].choice) for k in common),
                    -order.index(ver))
        best = min(order, key=total)
        many = len({d for d, _ in keys}) > 1
        rows = [_decision_row(r, "label-" + F.figure_key(r.label, det))
                for r in versions[best].values()]
        labels = sorted({k for v in versions.values() for k in v})
        compare = [dict(label=k, anchor="label-" + F.figure_key(k, det), cells=[
            None if k not in versions[v] else dict(
                cost=_unit_cost(versions[v][k].choice),
                held=None if versions[v][k].held_out is None
                else _unit_cost(versions[v][k].held_out),
                cheapest=_unit_cost(versions[v][k].choice) <= min(
                    _unit_cost(versions[w][k].choice) for w in versions if k in versions[w]))
            for v in versions]) for k in labels]
        blocks.append(dict(detector=det, version=best, show_detector=many,
                           compare_many=len(versions) > 1,
                           verdict=_verdict(det, best, versions, rows), rows=rows,
                           versions=list(versions), compare=compare,
                           held_split=next((r.held_out_split for r in results
                                            if r.held_out_split), None)))
    return blocks


# ---------------------------------------------------------------------------------------
# Labels decided per detection (unit = "detection")
# ---------------------------------------------------------------------------------------


def _detection_entry(r: LabelThreshold, anchor: str) -> dict[str, Any]:
    """A label decided per detection: its decision, calibration and held-out figures in
    detection words (missed objects, false detections per image, precision), and the
    slot its figures are rendered into."""
    e: dict[str, Any] = dict(label=r.label, detector=r.detector, model_version=r.model_version,
                             anchor=anchor, problem=r.problem, figures=[], rows=[],
                             flags=list(r.held_out_flags), choice=r.choice)
    c = r.choice
    if c is None:
        return e
    miss_name, fd_name = by_action(c.action, "false accept", "false reject")
    d = _decision(c)
    e.update(
        decision=d, threshold=format_threshold(c.threshold, never="keep none",
                                               always="keep all"),
        iou=c.iou_threshold, action=c.action, miss_name=miss_name, fd_name=fd_name,
        confidence=c.policy.confidence, explanation=c.explanation,
        # A limit at this unit is on the miss rate over objects: say so.
        limits=[dict(w, head=w["head"].replace(miss_name, f"miss rate ({miss_name})", 1))
                for w in _status_words(c)],
        cost_unit=_detection_cost_unit(c),
        rows=[_detection_figures("calibration", c)]
        + ([] if r.held_out is None else [_detection_figures(r.held_out_split, r.held_out)]),
    )
    return e


def _detection_figures(split: str, c) -> dict[str, Any]:
    """One split's figures of a detection-unit choice: counts, the miss rate with its
    exact one-sided upper bound (Clopper-Pearson over objects), false detections per
    image with the exact Poisson upper bound, and precision with its exact two-sided
    interval conditional on the number of kept detections (each kept detection taken as
    true with one probability)."""
    from calibrate import stats

    miss_up, fd_up = by_action(c.action, c.false_accept_rate_upper, c.false_reject_rate_upper)
    kept = c.true_detections + c.false_detections
    precision = lower = upper = None
    if kept:
        precision = c.true_detections / kept
        lower, upper = (float(x) for x in stats.clopper_pearson_interval(
            c.true_detections, kept, c.policy.confidence))
    return dict(
        split=split, true=c.true_detections, false=c.false_detections,
        missed=c.missed_objects, n_objects=c.n_objects, n_images=c.n_images,
        miss_rate=format_rate(c.missed_objects / c.n_objects), miss_upper=format_rate(miss_up),
        fd_per_image=f"{c.false_detections / c.n_images:.3g}", fd_upper=f"{fd_up:.3g}",
        precision="-" if precision is None else format_rate(precision),
        precision_interval="" if precision is None else
        f"{format_rate(lower)} \u2013 {format_rate(upper)}",
        cost=c.expected_cost,
    )


def _detection_cost_unit(c) -> str:
    miss_name, fd_name = by_action(c.action, "false accept", "false reject")
    return (f"expected cost per image: cost of a {miss_name} \u00d7 missed objects per image "
            f"+ cost of a {fd_name} \u00d7 false detections per image, in the policy's cost "
            "units")


def _attach_examples(store, sections, results, decisions, split, dataset) -> None:
    """Thumbnails of the deployed version's borderline images, per label section."""
    from calibrate.report.figures.examples import example_images

    for sec in sections.values():
        sec["examples"] = sec["headline"] = None
    for b in decisions:
        for r in results:
            if (r.detector, r.model_version) != (b["detector"], b["version"]) or r.choice is None:
                continue
            sec = sections.get((r.detector, r.label))
            if sec is None:
                continue
            d = _decision(r.choice)
            sec["headline"] = dict(css=d["css"], text=(
                f"{r.model_version}: {d['text']}" + ("" if d["kind"] == "refuse" else
                                                      f", cutoff {format_threshold(r.choice.threshold)}")))
            try:
                ex = example_images(store, r, split=split, dataset=dataset)
            except Exception as exc:  # noqa: BLE001 - examples are optional
                ex = dict(negatives=[], positives=[],
                          note=f"example images unavailable: {type(exc).__name__}")
            fire, hold = (("scrapped", "shipped") if r.choice.action == "reject"
                          else ("let through", "turned away"))
            neg, pos = ("good parts", "defects") if r.choice.action == "reject" else (
                "negatives", "positives")
            for item in ex["negatives"] + ex["positives"]:
                item["verdict"] = fire if item["fires"] else hold
                # an error either way: a negative that fires, a positive that does not
                item["error"] = item["fires"] == (item in ex["negatives"])
                item["score_text"] = format_threshold(item["score"])
            ex.update(version=f"{r.detector} {r.model_version}",
                      threshold=format_threshold(r.choice.threshold),
                      neg_title=f"The {neg} that score highest",
                      pos_title=f"The {pos} that score lowest")
            sec["examples"] = ex
