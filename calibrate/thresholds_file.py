"""The thresholds file: calibrate's own, provenance-stamped record of chosen cutoffs.

It is what ``calibrate thresholds --output`` writes, the input of every exporter and of
``calibrate check``. One entry per (detector, model version, label) holds the threshold
in the detector's scale, the action and the whole policy, the counts, rates and upper
bounds it was chosen from, and where the data came from. JSON, YAML and TOML carry the
same content (chosen by the file suffix); infinities are written as the strings
``"inf"`` / ``"-inf"`` because JSON has none.

Unproven limits are a decision, not a fallback, and the file records it: each entry has
its ``decision`` (``deploy``; ``refuse``: exporters leave the label out; or the option
deployed by sign-off), and when the limits are not met, the ``options`` a person could
deploy, each with its threshold, cost, rates and upper bounds. The held-out split's
figures at the threshold (the honest ones) sit beside the calibration figures. A label
that cannot be calibrated stays in the file with ``status = "cannot_calibrate"``, its
``problem`` and no threshold, so that no export can mistake "not calibrated" for "not
there". Files written before these keys existed read as before.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from calibrate.errors import InputError
from calibrate.io import atomic_write_text, jsonable
from calibrate.policy import IF_LIMIT_UNPROVEN, Policy, by_action
from calibrate.thresholds import LabelThreshold, ThresholdChoice
from calibrate.version import __version__

__all__ = [
    "CANNOT_CALIBRATE",
    "DECISIONS",
    "FORMAT",
    "HeldOutFigures",
    "OptionFigures",
    "ThresholdEntry",
    "ThresholdsFile",
    "dumps_thresholds",
    "read_thresholds_file",
    "thresholds_file_from_results",
    "write_thresholds_file",
]

#: Old files (without decisions, options, held-out figures or uncalibrated entries) read
#: unchanged, so the format keeps its number.
FORMAT = "calibrate.thresholds/1"

#: ``status`` of an entry whose label could not be calibrated (it has no threshold).
CANNOT_CALIBRATE = "cannot_calibrate"

#: Every ``decision`` an entry may record: ``deploy`` (the limits hold, or there are
#: none) and the policy's ``if_limit_unproven`` values.
DECISIONS = ("deploy", *IF_LIMIT_UNPROVEN)

#: Names of the options laid out when a label's limits are not met.
OPTION_NAMES = ("cost_optimal", "protective", "never_fire", "always_fire")


@dataclass(frozen=True)
class OptionFigures:
    """One option a person could deploy when a label's limits are not met (compact).

    Attributes
    ----------
    name : {"cost_optimal", "protective", "never_fire", "always_fire"}
    threshold : float
        Fire when ``score >= threshold``; ``+inf`` never fires.
    expected_cost : float
        Per item, at the entry's prevalence.
    false_accept_rate, false_accept_rate_upper, false_reject_rate,
    false_reject_rate_upper : float
        On the calibration data; bounds at the policy's confidence.
    """

    name: str
    threshold: float
    expected_cost: float
    false_accept_rate: float
    false_accept_rate_upper: float
    false_reject_rate: float
    false_reject_rate_upper: float

    @classmethod
    def from_choice(cls, name: str, c: ThresholdChoice) -> OptionFigures:
        """The figures of an evaluated option."""
        return cls(name, c.threshold, c.expected_cost, c.false_accept_rate,
                   c.false_accept_rate_upper, c.false_reject_rate, c.false_reject_rate_upper)


@dataclass(frozen=True)
class HeldOutFigures:
    """The entry's threshold evaluated on the held-out split: the honest figures.

    The calibration split's bounds at a threshold chosen on it are optimistic; these
    are not. Counts and rates are None when the split cannot evaluate the label (one
    class has no images there); ``flags`` then says so.

    Attributes
    ----------
    split : str
    n_positive, n_negative, false_accepts, false_rejects : int or None
    false_accept_rate, false_accept_rate_upper, false_reject_rate,
    false_reject_rate_upper, expected_cost : float or None
    limits_met : bool or None
        Whether the policy's limits hold on the held-out split.
    flags : tuple of str
        Where the held-out figures disagree with the calibration ones.
    """

    split: str
    n_positive: int | None = None
    n_negative: int | None = None
    false_accepts: int | None = None
    false_rejects: int | None = None
    false_accept_rate: float | None = None
    false_accept_rate_upper: float | None = None
    false_reject_rate: float | None = None
    false_reject_rate_upper: float | None = None
    expected_cost: float | None = None
    limits_met: bool | None = None
    flags: tuple[str, ...] = ()

    @classmethod
    def from_result(cls, r: LabelThreshold) -> HeldOutFigures | None:
        """The held-out figures of a result, or None when it has no held-out split."""
        if r.held_out_split is None:
            return None
        h = r.held_out
        if h is None:
            return cls(r.held_out_split, flags=tuple(r.held_out_flags))
        return cls(r.held_out_split, h.n_positive, h.n_negative, h.false_accepts,
                   h.false_rejects, h.false_accept_rate, h.false_accept_rate_upper,
                   h.false_reject_rate, h.false_reject_rate_upper, h.expected_cost,
                   h.limits_met, tuple(r.held_out_flags))


@dataclass(frozen=True)
class ThresholdEntry:
    """The cutoff of one label, the decision about it and the evidence behind it.

    Attributes
    ----------
    label, detector, model_version : str
    threshold : float or None
        Fire when ``score >= threshold``; ``+inf`` never fires, ``-inf`` always does.
        None when the label cannot be calibrated. When ``decision == "refuse"`` it is
        the option shown for information (the protective one, else the cost-optimal
        one) and must not be deployed: see :attr:`deployable`.
    next_score_below : float or None
        Largest calibration score below ``threshold``: any value in
        ``(next_score_below, threshold]`` makes the same decisions on the calibration data.
    action : str or None
    policy : Policy or None
        None only for a label that cannot be calibrated and had no policy.
    n_positive, n_negative, false_accepts, false_rejects : int or None
    false_accept_rate, false_accept_rate_upper, false_reject_rate,
    false_reject_rate_upper, expected_cost, prevalence : float or None
        The figures at ``threshold`` on the calibration data (None when uncalibrated).
    limits_met : bool or None
    status : str
        ``ok``, ``limits_unproven``, ``limits_refuted``, ``no_ranking_information`` or
        ``cannot_calibrate``.
    n_failed : int
        Failed detector calls excluded from the calibration data.
    dataset, dataset_fingerprint : str or None
        The labeled set the threshold was calibrated on.
    decision : str or None
        One of :data:`DECISIONS`; None in files written before decisions were recorded
        (and for labels that cannot be calibrated).
    options : tuple of OptionFigures
        When the limits are not met: what could be deployed instead.
    samples_needed : int or None
        More samples of the limited class that would show the limits with no further
        errors (None when met, or when more data cannot help).
    problem : str or None
        Why the label cannot be calibrated.
    held_out : HeldOutFigures or None
    unit : {"image", "detection"} or None
        What one error is (the policy's ``unit``; None, read as ``"image"``, for an
        entry without a policy and in files written before units were recorded). At ``"detection"`` ``n_positive`` is
        the number of ground-truth objects, ``n_negative`` the number of images, the
        miss-side counts are missed objects and the other side false detections (rate:
        per image, bound: exact Poisson), ``expected_cost`` is per image and
        ``prevalence`` is None.
    iou_threshold : float or None
        At ``"detection"``: the IoU at which detections were matched to objects.
    """

    label: str
    detector: str
    model_version: str
    threshold: float | None
    next_score_below: float | None
    action: str | None
    policy: Policy | None
    n_positive: int | None
    n_negative: int | None
    false_accepts: int | None
    false_rejects: int | None
    false_accept_rate: float | None
    false_accept_rate_upper: float | None
    false_reject_rate: float | None
    false_reject_rate_upper: float | None
    expected_cost: float | None
    prevalence: float | None
    limits_met: bool | None
    status: str = "ok"
    n_failed: int = 0
    dataset: str | None = None
    dataset_fingerprint: str | None = None
    decision: str | None = None
    options: tuple[OptionFigures, ...] = ()
    samples_needed: int | None = None
    problem: str | None = None
    held_out: HeldOutFigures | None = None
    data_warnings: tuple[str, ...] = ()
    unit: str | None = None
    iou_threshold: float | None = None

    @classmethod
    def uncalibrated(cls, label: str, detector: str, model_version: str, problem: str, *,
                     policy: Policy | None = None, **kw) -> ThresholdEntry:
        """The entry of a label that cannot be calibrated: no threshold, no figures."""
        values: dict[str, Any] = {f.name: None for f in fields(cls) if f.default is MISSING}
        values.update({"action": policy.action if policy else None, **kw})
        values.update(label=label, detector=detector, model_version=model_version,
                      policy=policy, status=CANNOT_CALIBRATE, problem=problem)
        return cls(**values)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.detector, self.model_version, self.label)

    @property
    def calibrated(self) -> bool:
        """True when the entry has a threshold (even one the policy refuses)."""
        return self.threshold is not None

    @property
    def effective_decision(self) -> str | None:
        """The recorded decision; for files written before decisions were recorded,
        ``deploy`` when the limits were met and ``refuse`` when not (what the policy's
        default ``if_limit_unproven`` says). None without a threshold."""
        if self.decision is not None or not self.calibrated:
            return self.decision
        return "refuse" if self.limits_met is False else "deploy"

    @property
    def deployable(self) -> bool:
        """True when an exporter may write this entry's threshold."""
        return self.calibrated and self.effective_decision != "refuse"

    @property
    def needs_sign_off(self) -> bool:
        """True when the limits are not met and an option is deployed by the policy."""
        return self.decision not in (None, "deploy", "refuse")

    def option(self, name: str) -> OptionFigures | None:
        """The laid-out option ``name``, or None."""
        return next((o for o in self.options if o.name == name), None)

    @property
    def missed_objects(self) -> int | None:
        """At the detection unit: objects no kept detection matched; else None."""
        if self.unit != "detection" or self.false_accepts is None:
            return None
        return int(by_action(self.action, self.false_accepts, self.false_rejects)[0])

    @property
    def false_detections(self) -> int | None:
        """At the detection unit: kept detections that match no object; else None."""
        if self.unit != "detection" or self.false_accepts is None:
            return None
        return int(by_action(self.action, self.false_accepts, self.false_rejects)[1])

    @property
    def true_detections(self) -> int | None:
        """At the detection unit: kept detections that match an object; else None."""
        missed = self.missed_objects
        return None if missed is None else int(self.n_positive) - missed

    def to_dict(self) -> dict[str, Any]:
        """The entry as plain data: status and decision first, None and empties left out."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        policy, options, held = d.pop("policy"), d.pop("options"), d.pop("held_out")
        head = ("label", "detector", "model_version", "status", "decision", "problem",
                "threshold")
        out = {k: d.pop(k) for k in head}
        out.update(d)
        if policy is not None:
            out["policy"] = {k: v for k, v in policy.to_dict().items() if v is not None}
        if held is not None:
            out["held_out"] = {f.name: getattr(held, f.name) for f in fields(held)}
        if options:
            out["options"] = [{f.name: getattr(o, f.name) for f in fields(o)} for o in options]
        return jsonable(_compact(out))


def _compact(value):
    """``value`` without None values and empty tuples (TOML has no null)."""
    if isinstance(value, dict):
        return {k: _compact(v) for k, v in value.items() if v is not None and v != ()}
    if isinstance(value, list):
        return [_compact(v) for v in value]
    return value


@dataclass(frozen=True)
class ThresholdsFile:
    """A set of chosen cutoffs with provenance.

    Attributes
    ----------
    entries : tuple of ThresholdEntry
        Every label, including those that cannot be calibrated (no threshold) and
        those whose policy refuses to deploy them.
    created_at : str
        ISO 8601 UTC time of creation.
    tool_version : str
        The ``calibrate`` version that chose the thresholds.
    source : str
        Where the scores came from (a store file or a scores table).
    score_meaning : tuple of dict
        Optional: per (detector, version, label), what its scores mean on the line
        (``calibrate calibration --add-to``; see
        :meth:`calibrate.score_meaning.LabelCalibration.to_dict`). Informational: no
        exporter reads it.
    parts : tuple of dict
        Whole-part figures per detector version (:meth:`calibrate.parts.PartDecision.to_dict`):
        what the line scraps, ships and reviews with the per-label cutoffs, the joint
        cutoffs and the review band (both cutoffs per label), calibration and held-out.
        Recorded for the record; exporters read ``entries``.
    """

    entries: tuple[ThresholdEntry, ...]
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    tool_version: str = ""
    source: str = ""
    score_meaning: tuple[dict, ...] = ()
    parts: tuple = ()

    def labels(self) -> list[str]:
        """Labels in file order (a label may appear once per detector and version)."""
        return [e.label for e in self.entries]

    def select(self, detector: str | None = None, model_version: str | None = None, *,
               calibrated_only: bool = True) -> list[ThresholdEntry]:
        """Entries of one detector and/or model version.

        Parameters
        ----------
        detector, model_version : str, optional
        calibrated_only : bool, default True
            Leave out labels that cannot be calibrated: most callers need a threshold
            (the gate, for one, treats such a label as having none deployed).
            Exporters pass False, because they must say what happens to those labels.

        Raises
        ------
        InputError
            When nothing matches.
        """
        hits = [
            e for e in self.entries
            if (detector is None or e.detector == detector)
            and (model_version is None or e.model_version == model_version)
        ]
        kept = [e for e in hits if e.calibrated or not calibrated_only]
        if not kept:
            what = f"{detector or 'any detector'} {model_version or 'any version'}"
            if hits:
                raise InputError(
                    f"the thresholds file has no calibrated label for {what}: "
                    + "; ".join(f"{e.label} cannot be calibrated ({e.problem})" for e in hits)
                    + "."
                )
            have = ", ".join(sorted({f"{e.detector} {e.model_version}" for e in self.entries}))
            raise InputError(f"the thresholds file has no entries for {what}; it has {have}.")
        return kept

    def one_version(
        self,
        detector: str | None = None,
        model_version: str | None = None,
        *,
        why: str = "",
        options: str = "--detector and --model-version",
        calibrated_only: bool = True,
    ) -> list[ThresholdEntry]:
        """Entries of exactly one (detector, model version).

        Parameters
        ----------
        detector, model_version : str, optional
            Narrow the choice when the file holds several versions.
        why : str
            Why one version is needed, for the error message.
        options : str
            The command-line options that choose, for the error message.
        calibrated_only : bool, default True
            See :meth:`select`.

        Raises
        ------
        InputError
            When nothing matches, or several versions do.
        """
        entries = self.select(detector, model_version, calibrated_only=calibrated_only)
        versions = sorted({(e.detector, e.model_version) for e in entries})
        if len(versions) > 1:
            raise InputError(
                f"{why or 'this needs one model version, but'} the thresholds file holds "
                f"{', '.join(f'{d} {v}' for d, v in versions)}; choose one with {options}."
            )
        return entries

    def get(self, label: str, *, detector: str | None = None, model_version: str | None = None) -> ThresholdEntry:
        """The entry of ``label`` (optionally of one detector / version).

        Raises
        ------
        InputError
            When there is no such entry, or several match.
        """
        hits = [
            e for e in self.entries
            if e.label == label
            and (detector is None or e.detector == detector)
            and (model_version is None or e.model_version == model_version)
        ]
        if len(hits) != 1:
            what = "no entry" if not hits else f"{len(hits)} entries"
            raise InputError(
                f"the thresholds file has {what} for label {label!r}"
                + (f" of {detector}" if detector else "")
                + (f" {model_version}" if model_version else "")
                + "; pass the detector and model version to pick one."
            )
        return hits[0]

    def to_dict(self) -> dict[str, Any]:
        """The file's content as plain data (infinities as strings, None omitted)."""
        return {
            "format": FORMAT,
            "created_at": self.created_at,
            "tool_version": self.tool_version,
            "source": self.source,
            "rule": "fire when score >= threshold (detector's own scale); export nothing "
                    "for an entry whose decision is \"refuse\" or that has no threshold",
            "labels": [e.to_dict() for e in self.entries],
            **({"score_meaning": [_compact(jsonable(m)) for m in self.score_meaning]}
               if self.score_meaning else {}),
            **({"parts": [jsonable(_compact(p)) for p in self.parts]} if self.parts else {}),
        }


def thresholds_file_from_results(
    results: list[LabelThreshold],
    *,
    source: str = "",
    datasets: dict[tuple[str, str], tuple[str, str]] | None = None,
    parts=(),
) -> ThresholdsFile:
    """Build a thresholds file from :func:`calibrate.thresholds.choose_thresholds` results.

    Labels that could not be calibrated (``choice is None``) stay in the file with
    ``status = "cannot_calibrate"``, their ``problem`` and no threshold.

    Parameters
    ----------
    results : list of LabelThreshold
    source : str
        Where the scores came from.
    datasets : dict, optional
        ``(detector, model_version) -> (dataset name, dataset fingerprint)``.
    parts : sequence of PartDecision, optional
        Whole-part figures to record (see :mod:`calibrate.parts`).
    """
    entries = []
    for r in results:
        c = r.choice
        ds, fp = (datasets or {}).get((r.detector, r.model_version), (None, None))
        if c is None:
            entries.append(ThresholdEntry.uncalibrated(
                r.label, r.detector, r.model_version, r.problem or "no threshold was chosen",
                policy=r.policy, n_failed=r.n_failed, dataset=ds, dataset_fingerprint=fp,
                unit=r.policy.unit if r.policy else None, iou_threshold=r.iou_threshold))
            continue
        entries.append(
            ThresholdEntry(
                label=r.label, detector=r.detector, model_version=r.model_version,
                threshold=c.threshold, next_score_below=c.next_score_below,
                action=c.action, policy=c.policy, n_positive=c.n_positive,
                n_negative=c.n_negative, false_accepts=c.false_accepts,
                false_rejects=c.false_rejects, false_accept_rate=c.false_accept_rate,
                false_accept_rate_upper=c.false_accept_rate_upper,
                false_reject_rate=c.false_reject_rate,
                false_reject_rate_upper=c.false_reject_rate_upper,
                expected_cost=c.expected_cost,
                prevalence=None if c.policy.detection_unit else c.prevalence,
                limits_met=c.limits_met, status=c.status, n_failed=r.n_failed,
                unit=c.unit, iou_threshold=c.iou_threshold,
                dataset=ds, dataset_fingerprint=fp, decision=c.decision,
                options=tuple(OptionFigures.from_choice(o.name, o.choice) for o in c.options),
                samples_needed=c.samples_needed, held_out=HeldOutFigures.from_result(r),
                data_warnings=tuple(r.data_warnings),
            )
        )
    return ThresholdsFile(tuple(entries), tool_version=__version__, source=source,
                          parts=tuple(p.to_dict() for p in parts))


def _format_of(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "json"
    if suffix in (".yaml", ".yml"):
        return "yaml"
    if suffix == ".toml":
        return "toml"
    raise InputError(f"{path}: unknown thresholds file format {suffix or '(none)'}; use .json, .yaml or .toml.")


def dumps_thresholds(tf: ThresholdsFile, fmt: str) -> str:
    """The file's text in ``fmt`` ("json", "yaml" or "toml")."""
    data = tf.to_dict()
    if fmt == "json":
        return json.dumps(data, indent=2) + "\n"
    if fmt == "yaml":
        import yaml

        return yaml.safe_dump(data, sort_keys=False)
    import tomli_w

    return tomli_w.dumps(data)


def write_thresholds_file(tf: ThresholdsFile, path) -> Path:
    """Write a thresholds file (format from the suffix), atomically.

    Returns
    -------
    Path
    """
    p = Path(path)
    atomic_write_text(p, dumps_thresholds(tf, _format_of(p)))
    return p


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------

_STR, _INT, _BOOL, _FLOAT = "str", "int", "bool", "float"
_ENTRY_KEYS: dict[str, str] = {
    "label": _STR, "detector": _STR, "model_version": _STR, "action": _STR,
    "status": _STR, "dataset": _STR, "dataset_fingerprint": _STR, "decision": _STR,
    "problem": _STR, "n_positive": _INT, "n_negative": _INT, "false_accepts": _INT,
    "false_rejects": _INT, "n_failed": _INT, "samples_needed": _INT, "limits_met": _BOOL,
    "threshold": _FLOAT, "next_score_below": _FLOAT, "false_accept_rate": _FLOAT,
    "false_accept_rate_upper": _FLOAT, "false_reject_rate": _FLOAT,
    "false_reject_rate_upper": _FLOAT, "expected_cost": _FLOAT, "prevalence": _FLOAT,
    "unit": _STR, "iou_threshold": _FLOAT,
}
_OPTION_KEYS = {f.name: (_STR if f.name == "name" else _FLOAT) for f in fields(OptionFigures)}
_HELD_OUT_KEYS = {
    "split": _STR, "n_positive": _INT, "n_negative": _INT, "false_accepts": _INT,
    "false_rejects": _INT, "false_accept_rate": _FLOAT, "false_accept_rate_upper": _FLOAT,
    "false_reject_rate": _FLOAT, "false_reject_rate_upper": _FLOAT, "expected_cost": _FLOAT,
    "limits_met": _BOOL,
}


def _float(value, where: str) -> float:
    if isinstance(value, str) and value in ("inf", "-inf", "+inf"):
        return float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{where} must be a number (or \"inf\"), got {value!r}.")
    x = float(value)
    if math.isnan(x):
        raise InputError(f"{where} is NaN; a threshold file never holds NaN.")
    return x


def _typed(raw: dict, spec: dict[str, str], where: str, extra=()) -> dict[str, Any]:
    """The keys of ``raw`` named in ``spec``, each checked for its type; other keys
    (besides ``extra``) are an error naming them."""
    unknown = sorted(set(raw) - set(spec) - set(extra))
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(unknown)}.")
    kw: dict[str, Any] = {}
    for key, kind in spec.items():
        if key not in raw:
            continue
        v = raw[key]
        if kind == _FLOAT:
            kw[key] = _float(v, f"{where}.{key}")
            continue
        want = {_STR: str, _INT: int, _BOOL: bool}[kind]
        if not isinstance(v, want) or (want is int and isinstance(v, bool)):
            raise InputError(f"{where}.{key} must be {want.__name__}, got {v!r}.")
        kw[key] = v
    return kw


def _table(value, where: str, what: str) -> dict:
    if not isinstance(value, dict):
        raise InputError(f"{where} must be a table of keys ({what}).")
    return value


def _options(raw, where: str) -> tuple[OptionFigures, ...]:
    if not isinstance(raw, list):
        raise InputError(f"{where}.options must be a list of options.")
    out = []
    for j, o in enumerate(raw):
        w = f"{where}.options[{j}]"
        kw = _typed(_table(o, w, "name, threshold, cost, rates"), _OPTION_KEYS, w)
        missing = [k for k in _OPTION_KEYS if k not in kw]
        if missing:
            raise InputError(f"{w}: missing key(s) {', '.join(missing)}.")
        if kw["name"] not in OPTION_NAMES:
            raise InputError(f"{w}.name must be one of {', '.join(OPTION_NAMES)}, got "
                             f"{kw['name']!r}.")
        out.append(OptionFigures(**kw))
    return tuple(out)


def _held_out(raw, where: str) -> HeldOutFigures:
    w = f"{where}.held_out"
    kw = _typed(_table(raw, w, "the held-out split's figures"), _HELD_OUT_KEYS, w, ("flags",))
    if "split" not in kw:
        raise InputError(f"{w}: missing key split.")
    flags = raw.get("flags", [])
    if not isinstance(flags, list) or not all(isinstance(f, str) for f in flags):
        raise InputError(f"{w}.flags must be a list of strings.")
    return HeldOutFigures(**kw, flags=tuple(flags))


def _entry(raw, where: str) -> ThresholdEntry:
    """One entry of the ``labels`` list, validated key by key."""
    raw = _table(raw, where, "one label's entry")
    kw = _typed(raw, _ENTRY_KEYS, where, ("policy", "options", "held_out", "data_warnings"))
    if "data_warnings" in raw:
        warned = raw["data_warnings"]
        if not isinstance(warned, list) or not all(isinstance(w, str) for w in warned):
            raise InputError(f"{where}.data_warnings must be a list of strings.")
        kw["data_warnings"] = tuple(warned)
    uncalibrated = kw.get("status") == CANNOT_CALIBRATE
    if "decision" in kw and kw["decision"] not in DECISIONS:
        raise InputError(f"{where}.decision must be one of {', '.join(DECISIONS)}, got "
                         f"{kw['decision']!r}.")
    if uncalibrated and "threshold" in kw:
        raise InputError(f"{where}: an entry with status {CANNOT_CALIBRATE!r} has no "
                         "threshold; remove one or the other.")
    if not uncalibrated and "next_score_below" not in kw:
        kw["next_score_below"] = -math.inf  # older files: any lower value is as safe
    if kw.get("unit") == "detection":
        kw.setdefault("prevalence", None)  # cost is per image as sampled: none applies
    required = [
        f.name for f in fields(ThresholdEntry)
        if f.name not in kw and f.name != "policy" and f.default is MISSING
        and (not uncalibrated or f.name in ("label", "detector", "model_version"))
    ]
    if required:
        raise InputError(f"{where}: missing key(s) {', '.join(required)}.")
    if "policy" in raw or not uncalibrated:
        if not isinstance(raw.get("policy"), dict):
            raise InputError(f"{where}.policy must be a table with the label's policy.")
        kw["policy"] = Policy.from_mapping(raw["policy"], where=f"{where}.policy")
        if kw.get("action", kw["policy"].action) != kw["policy"].action:
            raise InputError(f"{where}: action {kw['action']!r} differs from policy.action.")
        pol = kw["policy"]
        if (kw.get("unit") or "image", kw.get("iou_threshold")) != (pol.unit,
                                                                    pol.matching_iou):
            raise InputError(f"{where}: unit {kw.get('unit') or 'image'!r} / iou_threshold "
                             f"{kw.get('iou_threshold')!r} differ from the policy's "
                             f"{pol.unit!r} / {pol.matching_iou!r}.")
    if "options" in raw:
        kw["options"] = _options(raw["options"], where)
    if "held_out" in raw:
        kw["held_out"] = _held_out(raw["held_out"], where)
    if uncalibrated:
        return ThresholdEntry.uncalibrated(**{"problem": "", **kw})
    return ThresholdEntry(**kw)


def read_thresholds_file(path) -> ThresholdsFile:
    """Read and validate a thresholds file.

    Files written before decisions, options, held-out figures and uncalibrated entries
    were recorded read unchanged (their entries have ``decision = None``).

    Raises
    ------
    InputError
        Naming the file, the entry (index and label) and the key that is wrong.
    """
    p = Path(path)
    fmt = _format_of(p)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"cannot read thresholds file {p}: {exc.strerror or exc}.") from None
    try:
        if fmt == "json":
            data = json.loads(text)
        elif fmt == "yaml":
            import yaml

            data = yaml.safe_load(text)
        else:
            import tomllib

            data = tomllib.loads(text)
    except Exception as exc:  # noqa: BLE001 - each parser has its own error type
        raise InputError(f"{p} is not valid {fmt.upper()}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise InputError(
            f"{p} is not a calibrate thresholds file (expected \"format\": \"{FORMAT}\"); "
            "write one with 'calibrate thresholds ... --output FILE'."
        )
    raw_entries = data.get("labels")
    if not isinstance(raw_entries, list) or not raw_entries:
        raise InputError(f"{p}: \"labels\" must be a non-empty list of entries.")
    entries = []
    seen = set()
    for i, raw in enumerate(raw_entries):
        name = raw.get("label", "?") if isinstance(raw, dict) else "?"
        where = f"{p}: labels[{i}] ({name})"
        entry = _entry(raw, where)
        if entry.key in seen:
            raise InputError(f"{where}: a second entry for {entry.detector} {entry.model_version} {entry.label}.")
        seen.add(entry.key)
        entries.append(entry)
    parts = data.get("parts", [])
    if not isinstance(parts, list) or not all(isinstance(x, dict) for x in parts):
        raise InputError(f"{p}: \"parts\" must be a list of tables (whole-part figures).")
    return ThresholdsFile(
        tuple(entries),
        created_at=str(data.get("created_at", "")),
        tool_version=str(data.get("tool_version", "")),
        source=str(data.get("source", "")),
        score_meaning=_score_meaning(data.get("score_meaning", []), f"{p}: score_meaning"),
        parts=tuple(parts),
    )


def _score_meaning(raw, where: str) -> tuple[dict, ...]:
    """The optional score-meaning section: a list of tables naming their label."""
    if not isinstance(raw, list):
        raise InputError(f"{where} must be a list of tables.")
    for i, m in enumerate(raw):
        if not isinstance(m, dict) or not all(
                isinstance(m.get(k), str) for k in ("detector", "model_version", "label")):
            raise InputError(f"{where}[{i}] must be a table with detector, model_version "
                             "and label.")
    return tuple(raw)
