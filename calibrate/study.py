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
:func:`load_study` finds the line of each key itself (scanning for ``key =`` inside
its table's section) and every :class:`StudyError` names the file, line and key.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from calibrate.errors import InputError
from calibrate.thresholds import LabelThreshold, Policy, PolicySet

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

#: Export targets a study may name; all but "thresholds" go through
#: :func:`calibrate.export.export_to`.
EXPORT_TARGETS = ("thresholds", "viam", "rekognition", "alibaba-imm")

_TOP_KEYS = ("name", "dataset", "store", "split", "report", "policy", "detectors", "run",
             "defaults", "labels", "export")
_DETECTOR_KEYS = ("detector", "model_version", "options")
# force would re-score everything on every run, defeating resumability; progress is a
# property of the terminal, not of the study.
_RUN_KEYS = ("concurrency", "rate_limit", "max_attempts", "backoff", "backoff_max", "timeout",
             "max_calls", "flush_every", "flush_batch", "give_up_after")
_THRESHOLD_SUFFIXES = (".json", ".yaml", ".yml", ".toml")


class StudyError(InputError):
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

    def __init__(self, message: str, *, path: Path, line: int | None, key: str):
        super().__init__(message)
        self.path = path
        self.line = line
        self.key = key


# ---------------------------------------------------------------------------------------
# Finding the line of a key
# ---------------------------------------------------------------------------------------

_HEADER = re.compile(r"^\s*(\[\[?)\s*(.+?)\s*(\]\]?)\s*(?:#.*)?$")
_KEY_PART = r"(?:\"(?:[^\"\\]|\\.)*\"|'[^']*'|[A-Za-z0-9_-]+)"
_KEY_LINE = re.compile(rf"^\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*=")
_KEY_TOKEN = re.compile(r"\"((?:[^\"\\]|\\.)*)\"|'([^']*)'|([A-Za-z0-9_-]+)")


def _split_key(text: str) -> list[str]:
    out = []
    for m in _KEY_TOKEN.finditer(text):
        if m.group(1) is not None:
            # Basic strings may hold escapes; json decodes the same escapes TOML has.
            import json

            try:
                out.append(json.loads(f'"{m.group(1)}"'))
            except ValueError:
                out.append(m.group(1))
        else:
            out.append(m.group(2) if m.group(2) is not None else m.group(3))
    return out


def key_lines(text: str) -> dict[tuple, int]:
    """Map every table and key of a TOML text to the line it is defined on.

    Paths use the parsed document's shape: an array of tables contributes its index,
    so the second ``[[detectors]]`` table's ``model_version`` is
    ``("detectors", 1, "model_version")``. Keys of inline tables are not listed (their
    table's line stands for them), nor are lines inside multi-line strings.

    Parameters
    ----------
    text : str
        The TOML document.

    Returns
    -------
    dict of tuple to int
        1-based line numbers; the first definition wins.
    """
    lines: dict[tuple, int] = {}
    arrays: dict[tuple, int] = {}  # array-of-tables path (names only) -> tables so far
    current: tuple = ()
    in_string: str | None = None
    depth = 0  # open brackets of a multi-line array value

    def resolve(names: list[str]) -> tuple:
        out: list = []
        for i, name in enumerate(names):
            out.append(name)
            n = arrays.get(tuple(names[: i + 1]))
            if n:
                out.append(n - 1)
        return tuple(out)

    for lineno, line in enumerate(text.splitlines(), 1):
        if in_string is not None:
            if line.count(in_string) % 2 == 1:
                in_string = None
            continue
        if depth > 0:
            # "[1, 2]," inside a multi-line array is not a table header.
            depth = max(0, depth + _bracket_balance(line))
            continue
        m = _HEADER.match(line)
        if m and not _KEY_LINE.match(line):
            names = _split_key(m.group(2))
            if m.group(1) == "[[":
                arrays[tuple(names)] = arrays.get(tuple(names), 0) + 1
            current = resolve(names)
            lines.setdefault(current, lineno)
            continue
        m = _KEY_LINE.match(line)
        if m:
            lines.setdefault(current + tuple(_split_key(m.group(1))), lineno)
            rest = line[m.end():]
            for quote in ('"""', "'''"):
                if rest.count(quote) % 2 == 1:
                    in_string = quote
                    break
            else:
                depth = max(0, _bracket_balance(rest))
    return lines


_STRINGS = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'[^']*'|#.*$")


def _bracket_balance(text: str) -> int:
    """Opened minus closed brackets outside strings and comments."""
    bare = _STRINGS.sub("", text)
    return bare.count("[") + bare.count("{") - bare.count("]") - bare.count("}")


def _key_name(path: tuple) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _where(path: tuple) -> str:
    """How a TOML author would name the key: table header and key name."""
    if not path:
        return "the file"
    *table, key = path
    if isinstance(key, int):
        return f"[[{'.'.join(str(p) for p in table if not isinstance(p, int))}]] #{key + 1}"
    if not table:
        return f'key "{key}"'
    head, parts = [], []
    for p in table:
        if isinstance(p, int):
            head.append(f"[[{'.'.join(parts)}]] #{p + 1}")
            parts = []
        else:
            parts.append(p)
    if parts:
        head.append(f"[{'.'.join(parts)}]" if not head else ".".join(parts))
    return f'{" ".join(head)}, key "{key}"'


class _Locator:
    """Turns a problem at a key path into a :class:`StudyError` with file and line."""

    def __init__(self, path: Path, text: str):
        self.path = path
        self.lines = key_lines(text)

    def line(self, key_path: tuple) -> int | None:
        for n in range(len(key_path), 0, -1):
            prefix = tuple(key_path[:n])
            line = self.lines.get(prefix)
            if line is not None:
                return line
            # A table only declared through its sub-tables ("[label.crack]" for "label").
            inner = [v for k, v in self.lines.items() if k[:n] == prefix]
            if inner:
                return min(inner)
        # A missing key is reported at its table's header, the closest thing there is.
        return None

    def error(self, key_path: tuple, message: str) -> StudyError:
        line = self.line(key_path)
        where = f"{self.path}:{line}" if line else str(self.path)
        return StudyError(
            f"{where}: {_where(key_path)}: {message}",
            path=self.path, line=line, key=_key_name(key_path),
        )


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
    store : Path
    report_dir : Path
    run : dict
        :class:`calibrate.runner.RunOptions` fields from the ``[run]`` table.
    """

    path: Path
    name: str
    dataset: Path
    detectors: tuple[DetectorSpec, ...]
    policies: PolicySet
    exports: tuple[ExportSpec, ...] = ()
    split: str | None = None
    store: Path = Path("calibrate.duckdb")
    report_dir: Path = Path("reports")
    run: dict[str, Any] = field(default_factory=dict)
    _locator: _Locator | None = field(default=None, repr=False, compare=False)

    def error(self, key_path: tuple, message: str) -> StudyError:
        """A :class:`StudyError` about a key of this study, with its line."""
        if self._locator is None:
            return StudyError(f"{self.path}: {_where(key_path)}: {message}", path=self.path,
                              line=None, key=_key_name(key_path))
        return self._locator.error(key_path, message)


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "a table"}.get(type(value), type(value).__name__)


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
    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise StudyError(f"cannot read study file {p}: {exc.strerror or exc}.",
                         path=p, line=None, key="") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        line = int(m.group(1)) if m else None
        raise StudyError(f"{p}:{line or '?'}: not valid TOML: {exc}.", path=p, line=line,
                         key="") from None
    loc = _Locator(p, text)
    base = p.parent

    def rel(value: str) -> Path:
        # normpath, not resolve: keep paths relative as written, minus the "x/../".
        return Path(os.path.normpath(base / value))

    def err(key_path: tuple, message: str) -> StudyError:
        return loc.error(key_path, message)

    def string(key_path: tuple, value: Any, *, empty: bool = False) -> str:
        if not isinstance(value, str):
            hint = f' (write it in quotes: "{value}")' if isinstance(value, (int, float)) else ""
            raise err(key_path, f"must be a string, got {_type_name(value)} {value!r}{hint}.")
        if not empty and not value.strip():
            raise err(key_path, "must not be empty.")
        return value

    def table(key_path: tuple, value: Any) -> dict:
        if not isinstance(value, dict):
            raise err(key_path, f"must be a table, got {_type_name(value)} {value!r}.")
        return value

    def unknown(key_path: tuple, tbl: dict, allowed, what: str) -> None:
        for k in tbl:
            if k not in allowed:
                raise err(key_path + (k,), f"unknown key in {what}; allowed keys are "
                          f"{', '.join(allowed)}.")

    unknown((), data, _TOP_KEYS, "a study file")
    name = string(("name",), data["name"]) if "name" in data else p.stem

    if "dataset" not in data:
        raise StudyError(f"{p}: missing key \"dataset\": name the labeled image set "
                         "(a manifest or folder), relative to the study file.",
                         path=p, line=None, key="dataset")
    dataset = rel(string(("dataset",), data["dataset"]))
    if not dataset.exists():
        raise err(("dataset",), f"{dataset} does not exist. Give the manifest path relative "
                  f"to the study file's folder ({base}).")
    store = rel(string(("store",), data.get("store", "calibrate.duckdb")))
    split = string(("split",), data["split"]) if "split" in data else None
    report_dir = rel(string(("report",), data.get("report", f"reports/{name}")))

    # Detectors
    raw_dets = data.get("detectors")
    if raw_dets is None:
        raise StudyError(f"{p}: no [[detectors]] table: name at least one detector and "
                         "model version to score the dataset with.", path=p, line=None,
                         key="detectors")
    if not isinstance(raw_dets, list) or not raw_dets:
        raise err(("detectors",), "must be one or more [[detectors]] tables.")
    from calibrate.detectors.registry import BUILTIN

    detectors = []
    seen: dict[tuple, int] = {}
    for i, d in enumerate(raw_dets):
        kp = ("detectors", i)
        table(kp, d)
        unknown(kp, d, _DETECTOR_KEYS, "[[detectors]]")
        if "detector" not in d:
            raise err(kp + ("detector",), "missing: name a built-in detector "
                      f"({', '.join(sorted(BUILTIN))}) or a plugin as package.module:callable.")
        det = string(kp + ("detector",), d["detector"])
        if ":" not in det and det not in BUILTIN:
            raise err(kp + ("detector",), f"unknown detector {det!r}. Built-in detectors: "
                      f"{', '.join(sorted(BUILTIN))}; or name a plugin as package.module:callable.")
        ver = string(kp + ("model_version",), d["model_version"]) if "model_version" in d else None
        options = dict(table(kp + ("options",), d.get("options", {})))
        if (det, ver) in seen:
            raise err(kp + ("model_version",) if ver else kp,
                      f"{det} {ver or '(default version)'} is already listed as "
                      f"[[detectors]] #{seen[(det, ver)] + 1}.")
        seen[(det, ver)] = i
        detectors.append(DetectorSpec(det, ver, options, loc.line(kp)))

    # Run options
    run = dict(table(("run",), data.get("run", {})))
    unknown(("run",), run, _RUN_KEYS, "[run]")
    if run:
        from calibrate.runner import RunOptions

        for k, v in run.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise err(("run", k), f"must be a number, got {_type_name(v)} {v!r}.")
        try:
            RunOptions(**run)
        except InputError as exc:
            bad = next((k for k in run if str(exc).startswith(k)), None)
            raise err(("run", bad) if bad else ("run",), str(exc)) from None

    policies = _load_policies(data, p, base, err, table)

    # Exports
    raw_exp = data.get("export", [])
    if not isinstance(raw_exp, list):
        raise err(("export",), "must be one or more [[export]] tables.")
    exports = []
    for i, e in enumerate(raw_exp):
        kp = ("export", i)
        table(kp, e)
        if "to" not in e:
            raise err(kp + ("to",), f"missing: say which target ({', '.join(EXPORT_TARGETS)}).")
        to = string(kp + ("to",), e["to"])
        if to not in EXPORT_TARGETS:
            raise err(kp + ("to",), f"unknown export target {to!r}; use one of "
                      f"{', '.join(EXPORT_TARGETS)}.")
        if "path" not in e:
            raise err(kp + ("path",), "missing: the file to write.")
        out = rel(string(kp + ("path",), e["path"]))
        options = {k: v for k, v in e.items() if k not in ("to", "path")}
        if to == "thresholds":
            unknown(kp, options, (), 'a "thresholds" export (it takes only to and path)')
            if out.suffix.lower() not in _THRESHOLD_SUFFIXES:
                raise err(kp + ("path",), f"a thresholds file must end in "
                          f"{', '.join(_THRESHOLD_SUFFIXES)}, got {out.name!r}.")
        exports.append(ExportSpec(to, out, options, loc.line(kp)))

    return Study(
        path=p, name=name, dataset=dataset, detectors=tuple(detectors), policies=policies,
        exports=tuple(exports), split=split, store=store, report_dir=report_dir, run=run,
        _locator=loc,
    )


def _load_policies(data: dict, p: Path, base: Path, err, table) -> PolicySet:
    """[defaults] and [labels.X] (plus an optional policy file), checked key by key."""
    from calibrate.thresholds import load_policy_file

    known = [f.name for f in fields(Policy)]
    defaults = dict(table(("defaults",), data.get("defaults", {})))
    labels_raw = table(("labels",), data.get("labels", {}))
    for k in defaults:
        if k not in known:
            raise err(("defaults", k), f"unknown policy key; allowed keys are {', '.join(known)}.")
    labels: dict[str, dict] = {}
    for label, tbl in labels_raw.items():
        table(("labels", label), tbl)
        for k in tbl:
            if k not in known:
                raise err(("labels", label, k),
                          f"unknown policy key; allowed keys are {', '.join(known)}.")
        labels[label] = dict(tbl)
    source = str(p)
    if "policy" in data:
        if not isinstance(data["policy"], str):
            raise err(("policy",), "must be the path of a policy file (a string).")
        try:
            base_set = load_policy_file(base / data["policy"])
        except InputError as exc:
            raise err(("policy",), str(exc)) from None
        merged = {k: {**v} for k, v in base_set.labels.items()}
        for label, tbl in labels.items():
            merged[label] = {**merged.get(label, {}), **tbl}
        defaults = {**base_set.defaults, **defaults}
        labels = merged
        source = f"{p} with {base_set.source}"

    numeric = ("cost_false_accept", "cost_false_reject", "prevalence", "max_false_accept_rate",
               "max_false_reject_rate", "confidence")
    for path, tbl in [(("defaults",), defaults)] + [(("labels", k), v) for k, v in labels.items()]:
        for k, v in tbl.items():
            if k in numeric and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise err(path + (k,), f"must be a number, got {_type_name(v)} {v!r}.")
            if k == "action" and not isinstance(v, str):
                raise err(path + (k,), f"must be \"reject\" or \"accept\", got {v!r}.")

    def check(label: str | None, mapping: dict) -> None:
        missing = [k for k in ("cost_false_accept", "cost_false_reject") if k not in mapping]
        table_path = ("labels", label) if label is not None else ("defaults",)
        if missing:
            raise err(table_path + (missing[0],),
                      f"missing {' and '.join(missing)}: set it in [defaults] or in this table.")
        try:
            Policy(**mapping)
        except InputError as exc:
            text = str(exc)
            # Policy's messages start with the field they are about.
            bad = next((k for k in sorted(mapping, key=len, reverse=True)
                        if text.startswith(k) or f" {k} " in f" {text}"), None)
            if bad is not None and label is not None and bad not in labels_raw.get(label, {}):
                table_path = ("defaults",)  # the value came from [defaults]
            raise err(table_path + ((bad,) if bad else ()), text) from None

    for label, tbl in labels.items():
        check(label, {**defaults, **tbl})
    if "cost_false_accept" in defaults and "cost_false_reject" in defaults:
        check(None, defaults)
    return PolicySet(defaults, labels, source)


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
    thresholds_file : Path or None
    exports : list of (target, Path)
    report : calibrate.report.html.ReportResult or None
    warnings : list of str
        What exporters warned about (labels left out, rounding).
    elapsed : float
        Seconds.
    """

    study: Study
    status: str = "complete"
    runs: list = field(default_factory=list)
    thresholds: list[LabelThreshold] = field(default_factory=list)
    thresholds_file: Path | None = None
    exports: list[tuple[str, Path]] = field(default_factory=list)
    report: Any = None
    warnings: list[str] = field(default_factory=list)
    elapsed: float = 0.0

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
        not_met = [t for t in self.thresholds if t.choice is not None and not t.choice.limits_met]
        problems = [t for t in self.thresholds if t.choice is None]
        for t in not_met:
            out.append(f"limits NOT met: {t.label} ({t.detector} {t.model_version}); "
                       f"samples needed: {t.choice.samples_needed:,}" if t.choice.samples_needed
                       else f"limits NOT met: {t.label} ({t.detector} {t.model_version})")
        for t in problems:
            out.append(f"cannot calibrate: {t.label} ({t.detector} {t.model_version}): {t.problem}")
        out += [f"warning: {w}" for w in self.warnings]
        out.append(f"done in {self.elapsed:.1f} s")
        return out


def _export(spec: ExportSpec, index: int, tf, store, study: Study) -> tuple[Path, list[str]]:
    """Write one export target; returns its path and the exporter's warnings."""
    spec.path.parent.mkdir(parents=True, exist_ok=True)
    if spec.to == "thresholds":
        from calibrate.thresholds_file import write_thresholds_file

        return write_thresholds_file(tf, spec.path), []
    try:
        from calibrate.export import export_to
    except ImportError:
        raise study.error(("export", index, "to"),
                          f"export target {spec.to!r} needs calibrate.export.export_to, which "
                          "this calibrate does not have yet.") from None
    try:
        res = export_to(spec.to, tf, spec.path, store=store, **spec.options)
    except InputError as exc:
        raise study.error(("export", index), f"export to {spec.to} failed: {exc}") from None
    # export_to returns an ExportResult (path, warnings); a bare path is accepted too.
    return Path(getattr(res, "path", res)), list(getattr(res, "warnings", []))


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
    from calibrate.detectors.registry import make_detector
    from calibrate.thresholds_file import thresholds_file_from_results, write_thresholds_file
    from calibrate.manifest import read_manifest
    from calibrate.report.html import build_report
    from calibrate.runner import RunOptions, score_dataset
    from calibrate.store import ScoreStore
    from calibrate.thresholds import choose_thresholds_from_store

    if not isinstance(study, Study):
        study = load_study(study)
    t0 = time.monotonic()
    labeled = read_manifest(study.dataset)
    if study.split is not None and study.split not in labeled.splits:
        raise study.error(("split",), f"no image of {study.dataset} has split {study.split!r}; "
                          f"its splits are {', '.join(map(repr, labeled.splits)) or 'none'}.")
    # A typo in a label's table would silently give that label the default policy.
    for label in study.policies.labels:
        if label not in labeled.labels:
            raise study.error(("labels", label), f"label {label!r} is not in the dataset "
                              f"{study.dataset} (its labels: {', '.join(labeled.labels)}).")
    opts = run_options or RunOptions(progress=progress, **study.run)
    result = StudyResult(study)
    study.store.parent.mkdir(parents=True, exist_ok=True)
    with ScoreStore(study.store) as store:
        keys: list[tuple[str, str]] = []
        for spec in study.detectors:
            det = make_detector(spec.detector, model_version=spec.model_version, **spec.options)
            try:
                summary = score_dataset(labeled, det, store, opts)
            finally:
                close = getattr(det, "close", None)
                if callable(close):
                    close()
            result.runs.append(summary)
            keys.append((det.name, det.model_version))
            if summary.status == "call_budget":
                result.status = "incomplete"
                result.elapsed = time.monotonic() - t0
                return result

        for det_name, ver in keys:
            result.thresholds += choose_thresholds_from_store(
                store, study.policies, detector=det_name, model_version=ver,
                dataset=labeled.name, split=study.split,
            )
        tf = thresholds_file_from_results(
            result.thresholds, source=str(study.store),
            datasets={k: (labeled.name, labeled.fingerprint) for k in keys},
        )
        own = next((e.path for e in study.exports if e.to == "thresholds"), None)
        tf_path = own or study.report_dir / "thresholds.json"
        tf_path.parent.mkdir(parents=True, exist_ok=True)
        result.thresholds_file = write_thresholds_file(tf, tf_path)
        outputs: list[tuple[str, Path]] = [("thresholds file", tf_path)]
        for i, spec in enumerate(study.exports):
            if spec.to == "thresholds" and spec.path == tf_path:
                result.exports.append((spec.to, tf_path))
                continue
            path, warned = _export(spec, i, tf, store, study)
            result.exports.append((spec.to, path))
            result.warnings += [f"export {spec.to}: {w}" for w in warned]
            outputs.append((f"export: {spec.to}", path))
        result.report = build_report(
            store, study.policies, study.report_dir, keys=keys, split=study.split,
            dataset=labeled.name, title=f"Calibration report: {study.name}",
            results=result.thresholds, outputs=outputs,
            extra_provenance=[("study file", study.path), ("manifest", labeled.source)],
            workers=workers,
        )
    result.elapsed = time.monotonic() - t0
    return result
