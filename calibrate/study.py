"""Study files: the whole calibration flow in one re-runnable ``study.toml``.

A study names the labeled dataset, the detectors and model versions to score it
with, the per-label policies, where thresholds are exported, and where the store and
the report live. :func:`run_study` then runs score -> thresholds -> thresholds file ->
export -> report, and can simply be run again after every retraining: scoring is
resumable and skips what the store already holds.

Example (paths are relative to the study file's folder)::

    name = "parts"
    dataset = "parts/manifest.jsonl"     # any manifest calibrate.manifest reads
    store = "../calibrate.duckdb"        # default: calibrate.duckdb next to this file
    split = "calibration"                # optional: calibrate on this split only
    report = "../reports/parts"          # default: reports/<name> next to this file
    policy = "parts-policy.toml"         # optional: a policy file; tables below win

    [[detectors]]
    detector = "surface-defect"          # built-in name or package.module:callable
    model_version = "v1"
    options = { }                        # passed to the detector

    [run]                                # optional: how to call detectors
    concurrency = 4                      # (fields of calibrate.runner.RunOptions)
    engine = "local"                     # or "ray" (with ray_address, batch_size:
                                         # docs/ray.md)

    [defaults]                           # same keys as a policy file
    action = "reject"
    cost_false_accept = 50
    cost_false_reject = 1

    [labels.crack]
    prevalence = 0.002
    max_false_accept_rate = 0.001

    [[export]]
    to = "thresholds"                    # thresholds | viam | rekognition | alibaba-imm
    path = "../reports/parts/thresholds.json"

The thresholds file goes to the first ``to = "thresholds"`` export's path, or to
``<report>/thresholds.json`` when there is none.

TOML parsers report syntax errors with a line but semantic errors without one, so
:func:`load_study` finds the line of each key itself (:mod:`calibrate.tomlfile`) and
every :class:`StudyError` names the file, line and key.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calibrate.detectors.registry import BUILTIN
from calibrate.errors import InputError
from calibrate import export
from calibrate.io import ensure_folder
from calibrate.manifest import read_manifest
from calibrate.parts import part_decisions_from_store, part_policy
from calibrate.policy import PolicySet, load_policy_file
from calibrate.report.html import build_report
from calibrate.ray_engine import RayOptions
from calibrate.runner import RunOptions
from calibrate.store import open_store, store_location
from calibrate.thresholds import LabelThreshold, choose_thresholds_from_store
from calibrate.thresholds_file import thresholds_file_from_results, write_thresholds_file
from calibrate.tomlfile import (  # noqa: F401 - key_lines: kept importable from here
    KeyLocator,
    TomlKeyError,
    key_description,
    key_lines,
    key_name,
    load_toml,
)
from calibrate.workflow import ENGINES, open_detector, score_on

__all__ = [
    "EXPORT_TARGETS",
    "DetectorSpec",
    "ExportSpec",
    "Study",
    "StudyError",
    "StudyResult",
    "load_study",
    "run_study",
]

#: Export targets a study may name (those of :func:`calibrate.export.export_to`).
EXPORT_TARGETS = export.TARGETS

_TOP_KEYS = ("name", "dataset", "store", "split", "held_out", "report", "policy",
             "detectors", "run", "defaults", "labels", "part", "export")
_DETECTOR_KEYS = ("detector", "model_version", "options")
# force would re-score everything on every run, defeating resumability; progress is a
# property of the terminal, not of the study.
_RUN_KEYS = ("concurrency", "rate_limit", "max_attempts", "backoff", "backoff_max", "timeout",
             "max_calls", "flush_every", "flush_batch", "give_up_after")
# Where the calls run (calibrate.workflow.score's engine and ray_options).
_ENGINE_KEYS = ("engine", "ray_address", "batch_size")
_THRESHOLD_SUFFIXES = (".json", ".yaml", ".yml", ".toml")


class StudyError(TomlKeyError):
    """A study file is invalid; the message names the file, the line and the key.

    Attributes
    ----------
    path : pathlib.Path
        The study file.
    line : int or None
        1-based line of the offending key (or of its table when the key is missing).
    key : str
        Dotted path of the key, e.g. ``"detectors[1].model_version"``.
    """


# ---------------------------------------------------------------------------------------
# The study
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DetectorSpec:
    """One detector and model version a study scores the dataset with.

    Attributes
    ----------
    detector : str
        Built-in name or ``package.module:callable`` plugin.
    model_version : str or None
        None: the detector's default.
    options : dict
        Constructor options.
    line : int or None
        Line of its ``[[detectors]]`` table in the study file.
    """

    detector: str
    model_version: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    line: int | None = None


@dataclass(frozen=True)
class ExportSpec:
    """One export target of a study.

    Attributes
    ----------
    to : str
        One of :data:`EXPORT_TARGETS`.
    path : Path
        Output file (resolved against the study file's folder).
    options : dict
        Target options (every other key of the ``[[export]]`` table).
    line : int or None
    """

    to: str
    path: Path
    options: dict[str, Any] = field(default_factory=dict)
    line: int | None = None


@dataclass(frozen=True)
class Study:
    """A validated study file.

    Attributes
    ----------
    path : Path
        The study file.
    name : str
        Default: the file's stem.
    dataset : Path
        The labeled set's manifest (or folder).
    detectors : tuple of DetectorSpec
    policies : PolicySet
    exports : tuple of ExportSpec
    split : str or None
        Calibrate on images of this split only.
    held_out : str or None
        The split each chosen threshold is also evaluated on (the honest figures);
        None: ``"test"`` when calibrating on another split and the dataset has one;
        ``""``: none.
    store : Path
    report_dir : Path
    run : dict
        :class:`calibrate.runner.RunOptions` fields from the ``[run]`` table.
    engine : str
        ``"local"`` (default) or ``"ray"``: the ``[run]`` table's ``engine``.
    ray : calibrate.ray_engine.RayOptions or None
        From ``ray_address`` and ``batch_size``, for ``engine = "ray"``.
    """

    path: Path
    name: str
    dataset: Path
    detectors: tuple[DetectorSpec, ...]
    policies: PolicySet
    exports: tuple[ExportSpec, ...] = ()
    split: str | None = None
    held_out: str | None = None
    store: Path = Path("calibrate.duckdb")
    report_dir: Path = Path("reports")
    run: dict[str, Any] = field(default_factory=dict)
    engine: str = "local"
    ray: RayOptions | None = None
    _locator: KeyLocator | None = field(default=None, repr=False, compare=False)

    def error(self, key_path: tuple, message: str) -> StudyError:
        """A :class:`StudyError` about a key of this study, with its line."""
        if self._locator is None:
            return StudyError(f"{self.path}: {key_description(key_path)}: {message}",
                              path=self.path, line=None, key=key_name(key_path))
        return self._locator.error(key_path, message)


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "a table"}.get(type(value), type(value).__name__)


class _Reader:
    """Typed access to the keys of one study file, every problem an error with its line."""

    def __init__(self, locator: KeyLocator):
        self.loc = locator
        self.path = locator.path
        self.base = locator.path.parent

    def err(self, key_path: tuple, message: str) -> StudyError:
        return self.loc.error(key_path, message)

    def rel(self, value: str) -> Path:
        # normpath, not resolve: keep paths relative as written, minus the "x/../".
        return Path(os.path.normpath(self.base / value))

    def string(self, key_path: tuple, value: Any, *, empty: bool = False) -> str:
        if not isinstance(value, str):
            hint = f' (write it in quotes: "{value}")' if isinstance(value, (int, float)) else ""
            raise self.err(key_path,
                           f"must be a string, got {_type_name(value)} {value!r}{hint}.")
        if not empty and not value.strip():
            raise self.err(key_path, "must not be empty.")
        return value

    def table(self, key_path: tuple, value: Any) -> dict:
        if not isinstance(value, dict):
            raise self.err(key_path, f"must be a table, got {_type_name(value)} {value!r}.")
        return value

    def unknown(self, key_path: tuple, tbl: dict, allowed, what: str) -> None:
        for k in tbl:
            if k not in allowed:
                raise self.err(key_path + (k,), f"unknown key in {what}; allowed keys are "
                               f"{', '.join(allowed)}.")


def load_study(path) -> Study:
    """Read and validate a study file.

    Parameters
    ----------
    path : str or Path
        The ``study.toml``. Relative paths inside it resolve against its folder.

    Returns
    -------
    Study

    Raises
    ------
    StudyError
        Naming the file, the line and the key that is wrong (unknown keys, wrong
        types, invalid policies, unknown detectors or export targets, a dataset that
        does not exist). TOML syntax errors carry the parser's line and column.
    """
    data, loc = load_toml(path, "study file", StudyError)
    r = _Reader(loc)
    p = r.path
    r.unknown((), data, _TOP_KEYS, "a study file")
    name = r.string(("name",), data["name"]) if "name" in data else p.stem
    if "dataset" not in data:
        raise StudyError(f"{p}: missing key \"dataset\": name the labeled image set "
                         "(a manifest or folder), relative to the study file.",
                         path=p, line=None, key="dataset")
    dataset = r.rel(r.string(("dataset",), data["dataset"]))
    if not dataset.exists():
        raise r.err(("dataset",), f"{dataset} does not exist. Give the manifest path "
                    f"relative to the study file's folder ({r.base}).")
    return Study(
        path=p, name=name, dataset=dataset, detectors=_read_detectors(r, data),
        policies=_read_policies(r, data), exports=_read_exports(r, data),
        split=r.string(("split",), data["split"]) if "split" in data else None,
        held_out=r.string(("held_out",), data["held_out"]) if "held_out" in data else None,
        store=_store(r, data.get("store", "calibrate.duckdb")),
        report_dir=r.rel(r.string(("report",), data.get("report", f"reports/{name}"))),
        run=_read_run(r, data), _locator=loc, **_read_engine(r, data),
    )


def _store(r, value: Any):
    """The study's store: a path relative to the study file, or a PostgreSQL URL as is
    (give its password in PGPASSWORD or ~/.pgpass, never in the study file)."""
    text = r.string(("store",), value)
    location = store_location(text)
    return location if not isinstance(location, Path) else r.rel(text)


def _read_detectors(r: _Reader, data: dict) -> tuple[DetectorSpec, ...]:
    raw = data.get("detectors")
    if raw is None:
        raise StudyError(f"{r.path}: no [[detectors]] table: name at least one detector and "
                         "model version to score the dataset with.", path=r.path, line=None,
                         key="detectors")
    if not isinstance(raw, list) or not raw:
        raise r.err(("detectors",), "must be one or more [[detectors]] tables.")
    builtin = ", ".join(sorted(BUILTIN))
    detectors = []
    seen: dict[tuple, int] = {}
    for i, d in enumerate(raw):
        kp = ("detectors", i)
        r.table(kp, d)
        r.unknown(kp, d, _DETECTOR_KEYS, "[[detectors]]")
        if "detector" not in d:
            raise r.err(kp + ("detector",), f"missing: name a built-in detector ({builtin}) "
                        "or a plugin as package.module:callable.")
        det = r.string(kp + ("detector",), d["detector"])
        if ":" not in det and det not in BUILTIN:
            raise r.err(kp + ("detector",), f"unknown detector {det!r}. Built-in detectors: "
                        f"{builtin}; or name a plugin as package.module:callable.")
        ver = (r.string(kp + ("model_version",), d["model_version"])
               if "model_version" in d else None)
        options = dict(r.table(kp + ("options",), d.get("options", {})))
        if (det, ver) in seen:
            raise r.err(kp + ("model_version",) if ver else kp,
                        f"{det} {ver or '(default version)'} is already listed as "
                        f"[[detectors]] #{seen[(det, ver)] + 1}.")
        seen[(det, ver)] = i
        detectors.append(DetectorSpec(det, ver, options, r.loc.line(kp)))
    return tuple(detectors)


def _read_run(r: _Reader, data: dict) -> dict[str, Any]:
    run = dict(r.table(("run",), data.get("run", {})))
    r.unknown(("run",), run, _RUN_KEYS + _ENGINE_KEYS, "[run]")
    for k in _ENGINE_KEYS:
        run.pop(k, None)  # read by _read_engine
    for k, v in run.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise r.err(("run", k), f"must be a number, got {_type_name(v)} {v!r}.")
    if run:
        try:
            RunOptions(**run)
        except InputError as exc:
            bad = next((k for k in run if str(exc).startswith(k)), None)
            raise r.err(("run", bad) if bad else ("run",), str(exc)) from None
    return run


def _read_engine(r: _Reader, data: dict) -> dict[str, Any]:
    """``engine`` and ``ray`` of :class:`Study` from the ``[run]`` table."""
    run = data.get("run", {})
    engine = r.string(("run", "engine"), run["engine"]) if "engine" in run else "local"
    if engine not in ENGINES:
        raise r.err(("run", "engine"), f"must be one of {', '.join(ENGINES)}, got {engine!r}.")
    address = run.get("ray_address")
    if address is not None:
        address = r.string(("run", "ray_address"), address)
    batch = run.get("batch_size", 16)
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise r.err(("run", "batch_size"), f"must be a whole number of images, at least 1, "
                    f"got {batch!r}.")
    if engine == "local" and ({"ray_address", "batch_size"} & set(run)):
        raise r.err(("run",), 'ray_address and batch_size need engine = "ray".')
    ray = RayOptions(address=address, batch_size=batch) if engine == "ray" else None
    return {"engine": engine, "ray": ray}


def _read_exports(r: _Reader, data: dict) -> tuple[ExportSpec, ...]:
    raw = data.get("export", [])
    if not isinstance(raw, list):
        raise r.err(("export",), "must be one or more [[export]] tables.")
    exports = []
    for i, e in enumerate(raw):
        kp = ("export", i)
        r.table(kp, e)
        if "to" not in e:
            raise r.err(kp + ("to",), f"missing: say which target ({', '.join(EXPORT_TARGETS)}).")
        to = r.string(kp + ("to",), e["to"])
        if to not in EXPORT_TARGETS:
            raise r.err(kp + ("to",), f"unknown export target {to!r}; use one of "
                        f"{', '.join(EXPORT_TARGETS)}.")
        if "path" not in e:
            raise r.err(kp + ("path",), "missing: the file to write.")
        out = r.rel(r.string(kp + ("path",), e["path"]))
        options = {k: v for k, v in e.items() if k not in ("to", "path")}
        if to == "thresholds":
            r.unknown(kp, options, (), 'a "thresholds" export (it takes only to and path)')
            if out.suffix.lower() not in _THRESHOLD_SUFFIXES:
                raise r.err(kp + ("path",), f"a thresholds file must end in "
                            f"{', '.join(_THRESHOLD_SUFFIXES)}, got {out.name!r}.")
        exports.append(ExportSpec(to, out, options, r.loc.line(kp)))
    return tuple(exports)


def _read_policies(r: _Reader, data: dict) -> PolicySet:
    """[defaults] and [labels.X] (plus an optional policy file), checked key by key.

    The policy's own checks say which key is wrong (:class:`PolicyError.key`), and the
    study file's locator turns that into the key's line.
    """
    defaults = dict(r.table(("defaults",), data.get("defaults", {})))
    labels = {label: dict(r.table(("labels", label), tbl))
              for label, tbl in r.table(("labels",), data.get("labels", {})).items()}
    part = dict(r.table(("part",), data.get("part", {})))
    own = PolicySet(defaults, labels, str(r.path), part=part).check_keys(r.loc)
    if "policy" not in data:
        if part:
            part_policy(own, locator=r.loc)  # a bad [part] key names its line
        return own.check_values(r.loc)
    if not isinstance(data["policy"], str):
        raise r.err(("policy",), "must be the path of a policy file (a string).")
    try:
        base = load_policy_file(r.base / data["policy"])
    except InputError as exc:
        raise r.err(("policy",), str(exc)) from None
    merged = {k: dict(v) for k, v in base.labels.items()}
    for label, tbl in labels.items():
        merged[label] = {**merged.get(label, {}), **tbl}
    combined = PolicySet({**base.defaults, **defaults}, merged,
                         f"{r.path} with {base.source}", part={**base.part, **part})
    if combined.part:
        try:
            part_policy(combined, locator=r.loc)
        except InputError as exc:  # a key of the policy file's [part]: name that file
            if part:
                raise
            raise r.err(("policy",), str(exc)) from None
    # Values from the policy file have no line in the study file: their table's line,
    # or the "policy" key's, stands for them.
    return combined.check_values(r.loc)


# ---------------------------------------------------------------------------------------
# Running a study
# ---------------------------------------------------------------------------------------


@dataclass
class StudyResult:
    """What :func:`run_study` did and where everything went.

    Attributes
    ----------
    study : Study
    status : {"complete", "incomplete"}
        ``incomplete`` when scoring stopped early (the ``max_calls`` budget): run the
        study again to continue; nothing after scoring was done.
    runs : list of calibrate.runner.RunSummary
        One per detector version, in study order.
    thresholds : list of LabelThreshold
    parts : list of calibrate.parts.PartDecision
        Whole-part figures per version (when the policy has a ``[part]`` table).
    thresholds_file : Path or None
    exports : list of (target, Path)
    report : calibrate.report.html.ReportResult or None
    warnings : list of str
        What exporters warned about (labels left out, rounding, sign-off).
    refused : list of str
        One line per label an export refused to write (its policy refuses it, or it
        cannot be calibrated and the target needs ``allow_missing``); every other label
        was written. Non-empty makes :attr:`exit_code` 1.
    elapsed : float
        Seconds.
    """

    study: Study
    status: str = "complete"
    runs: list = field(default_factory=list)
    thresholds: list[LabelThreshold] = field(default_factory=list)
    parts: list = field(default_factory=list)
    thresholds_file: Path | None = None
    exports: list[tuple[str, Path]] = field(default_factory=list)
    report: Any = None
    warnings: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def exit_code(self) -> int:
        """0 when everything was written, 1 when an export refused some labels (the same
        code as ``calibrate export``); bad input raises instead (exit 2)."""
        return 1 if self.refused else 0

    def lines(self) -> list[str]:
        """Human-readable lines: what was scored and where every file went."""
        out = []
        for r in self.runs:
            if r.status == "skipped":
                out.append(f"scored: {r.detector} {r.model_version}: already done "
                           f"({r.n_images:,} images, run {r.run_id})")
            else:
                out.append(
                    f"scored: {r.detector} {r.model_version}: {r.scored:,} scored, "
                    f"{r.failed:,} failed, {r.already_done:,} already done "
                    f"(run {r.run_id}, {r.status})"
                )
        if self.status != "complete":
            out.append("stopped before the end of scoring (call budget): run the study "
                       "again to continue; no thresholds, exports or report were written.")
            return out
        out.append(f"store: {self.study.store}")
        if self.thresholds_file is not None:
            out.append(f"thresholds file: {self.thresholds_file}")
        for to, path in self.exports:
            if path != self.thresholds_file:
                out.append(f"export {to}: {path}")
        if self.report is not None:
            out.append(f"report: {self.report.html_path}")
            out.append(f"summary: {self.report.markdown_path}")
            out.append(f"figures: {len(self.report.figure_paths)} files in "
                       f"{self.report.html_path.parent / 'figures'}")
        for d in self.parts:
            for row in d.rows:
                f = row.calibration
                out.append(f"whole parts {d.detector} {d.model_version}, {row.name} cutoffs: "
                           f"scraps {f.false_reject_rate:.1%} of good parts, ships "
                           f"{f.false_accept_rate:.1%} of defective parts"
                           + (f", reviews {f.line_review_fraction:.1%} of the line"
                              if f.review_cutoffs is not None else "")
                           + f", cost {f.expected_cost:.3g} per part")
        not_met = [t for t in self.thresholds if t.choice is not None and not t.choice.limits_met]
        problems = [t for t in self.thresholds if t.choice is None]
        out += [_unmet_line(t) for t in not_met]
        out += [f"held-out {t.held_out_split}: {t.label} ({t.detector} {t.model_version}): {f}"
                for t in self.thresholds for f in t.held_out_flags]
        for t in problems:
            out.append(f"cannot calibrate: {t.label} ({t.detector} {t.model_version}): {t.problem}")
        out += [f"warning: {w}" for w in self.warnings]
        out += [f"refused: {line}" for line in self.refused]
        out.append(f"done in {self.elapsed:.1f} s")
        return out


def _unmet_line(t) -> str:
    """One line for a label whose limits no threshold can show: what is deployed."""
    c = t.choice
    name = f"{t.label} ({t.detector} {t.model_version})"
    if c.status == "limits_refuted":
        what = "limits shown to fail at every threshold (more data cannot help)"
    else:
        least = min((k.samples_needed_minimum for k in c.limit_checks if not k.met), default=0)
        what = (f"limits unproven (at least {least:,} more samples needed)" if least
                else "limits unproven")
    if c.decision == "refuse":
        return f"{what}: {name} refused, not exported (policy if_limit_unproven = \"refuse\")"
    return (f"{what}: {name} needs sign-off, deployed the {c.decision.replace('_', '-')} "
            f"option (policy if_limit_unproven = \"{c.decision}\")")


def _export(spec: ExportSpec, index: int, tf, store,
            study: Study) -> tuple[Path, list[str], list[str]]:
    """Write one export target; returns its path, the exporter's warnings and the labels
    it refused (one line each; every other label is written)."""
    ensure_folder(spec.path.parent)
    try:
        # Looked up at call time, so a test or a plugin can stand in for the exporters.
        res = export.export_to(spec.to, tf, spec.path, store=store, **spec.options)
    except InputError as exc:
        raise study.error(("export", index), f"export to {spec.to} failed: {exc}") from None
    # An ExportResult (path, warnings, refused); a bare path from a stand-in is accepted too.
    return (Path(getattr(res, "path", res)), list(getattr(res, "warnings", [])),
            list(getattr(res, "refused", [])))


def _check_against_dataset(study: Study, labeled) -> None:
    """Problems only the dataset shows: a split or a policy label it does not have."""
    if study.split is not None and study.split not in labeled.splits:
        raise study.error(("split",), f"no image of {study.dataset} has split {study.split!r}; "
                          f"its splits are {', '.join(map(repr, labeled.splits)) or 'none'}.")
    if study.held_out and study.held_out not in labeled.splits:
        raise study.error(("held_out",), f"no image of {study.dataset} has split "
                          f"{study.held_out!r}; its splits are "
                          f"{', '.join(map(repr, labeled.splits)) or 'none'}.")
    # A typo in a label's table would silently give that label the default policy.
    for label in study.policies.labels:
        if label not in labeled.labels:
            raise study.error(("labels", label), f"label {label!r} is not in the dataset "
                              f"{study.dataset} (its labels: {', '.join(labeled.labels)}).")


def _score_all(study: Study, labeled, store, opts: RunOptions, result: StudyResult) -> list:
    """Score the dataset with every detector version; the (detector, version) keys, or
    None when the call budget stopped scoring."""
    keys: list[tuple[str, str]] = []
    for spec in study.detectors:
        with open_detector(spec.detector, spec.model_version, spec.options) as det:
            summary = score_on(study.engine, labeled, det, store, opts, study.ray)
        result.runs.append(summary)
        keys.append((det.name, det.model_version))
        if summary.status == "call_budget":
            result.status = "incomplete"
            return None
    return keys


def _write_outputs(study: Study, labeled, store, keys, result: StudyResult) -> list:
    """The thresholds file and every export; returns ``(what, path)`` for the report.

    The thresholds file keeps every label (refused and uncalibrated ones included); an
    export leaves out what may not be deployed and the run records it in
    ``result.refused``, so the run can fail naming them after writing everything else.
    """
    tf = thresholds_file_from_results(
        result.thresholds, source=str(study.store),
        datasets={k: (labeled.name, labeled.fingerprint) for k in keys},
        parts=result.parts,
    )
    own = next((e.path for e in study.exports if e.to == "thresholds"), None)
    tf_path = own or study.report_dir / "thresholds.json"
    ensure_folder(tf_path.parent)
    result.thresholds_file = write_thresholds_file(tf, tf_path)
    outputs: list[tuple[str, Path]] = [("thresholds file", tf_path)]
    for i, spec in enumerate(study.exports):
        if spec.to == "thresholds" and spec.path == tf_path:
            result.exports.append((spec.to, tf_path))
            continue
        path, warned, refused = _export(spec, i, tf, store, study)
        result.exports.append((spec.to, path))
        result.warnings += [f"export {spec.to}: {w}" for w in warned]
        result.refused += [f"export {spec.to}: {line}" for line in refused]
        outputs.append((f"export: {spec.to}", path))
    return outputs


def run_study(study, *, progress: bool = True, run_options=None,
              workers: int | None = None) -> StudyResult:
    """Run a study: score, choose thresholds, write the thresholds file, export, report.

    Re-running is cheap and safe: each detector version's run resumes or is skipped
    when the store already holds every image's score (same dataset content), so an
    interrupted study (Ctrl-C, a crash, a call budget) is finished by running it again,
    and no image is ever scored twice.

    Parameters
    ----------
    study : Study, str or Path
        A loaded study or the path of a study file.
    progress : bool, default True
        Show progress bars while scoring.
    run_options : calibrate.runner.RunOptions, optional
        Override the study's ``[run]`` table.
    workers : int, optional
        Processes drawing the report's figures (see
        :func:`calibrate.report.write_report`).

    Returns
    -------
    StudyResult

    Raises
    ------
    StudyError
        Problems found only now (a split or a policy label the dataset does not have,
        a failing export), with the study file's line.
    KeyboardInterrupt
        After the scores so far are stored; run the study again to resume.
    calibrate.CalibrateError
        From the pieces: unreadable manifests, detectors that cannot work, a locked
        store.
    """
    if not isinstance(study, Study):
        study = load_study(study)
    t0 = time.monotonic()
    labeled = read_manifest(study.dataset)
    _check_against_dataset(study, labeled)
    opts = run_options or RunOptions(progress=progress, **study.run)
    result = StudyResult(study)
    if isinstance(study.store, Path):
        ensure_folder(study.store.parent)
    with open_store(study.store) as store:
        keys = _score_all(study, labeled, store, opts, result)
        if keys is None:
            result.elapsed = time.monotonic() - t0
            return result
        for det_name, ver in keys:
            result.thresholds += choose_thresholds_from_store(
                store, study.policies, detector=det_name, model_version=ver,
                dataset=labeled.name, split=study.split, held_out=study.held_out,
            )
        result.parts = part_decisions_from_store(
            store, result.thresholds, study.policies, dataset=labeled.name, split=study.split)
        outputs = _write_outputs(study, labeled, store, keys, result)
        result.report = build_report(
            store, study.policies, study.report_dir, keys=keys, split=study.split,
            dataset=labeled.name, title=f"Calibration report: {study.name}",
            results=result.thresholds, outputs=outputs,
            extra_provenance=[("study file", study.path), ("manifest", labeled.source)],
            workers=workers, parts=result.parts,
        )
    result.elapsed = time.monotonic() - t0
    return result
