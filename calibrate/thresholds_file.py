"""The thresholds file: calibrate's own, provenance-stamped record of chosen cutoffs.

It is what ``calibrate thresholds --output`` writes, the input of every exporter and of
``calibrate check``. One entry per (detector, model version, label) holds the threshold
in the detector's scale, the action and the whole policy, the counts, rates and upper
bounds it was chosen from, and where the data came from. JSON, YAML and TOML carry the
same content (chosen by the file suffix); infinities are written as the strings
``"inf"`` / ``"-inf"`` because JSON has none.
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
from calibrate.policy import Policy
from calibrate.thresholds import LabelThreshold
from calibrate.version import __version__

__all__ = [
    "FORMAT",
    "ThresholdEntry",
    "ThresholdsFile",
    "dumps_thresholds",
    "read_thresholds_file",
    "thresholds_file_from_results",
    "write_thresholds_file",
]

FORMAT = "calibrate.thresholds/1"


@dataclass(frozen=True)
class ThresholdEntry:
    """The deployed cutoff of one label and the evidence behind it.

    Attributes
    ----------
    label, detector, model_version : str
    threshold : float
        Fire when ``score >= threshold``; ``+inf`` never fires, ``-inf`` always does.
    next_score_below : float
        Largest calibration score below ``threshold``: any value in
        ``(next_score_below, threshold]`` makes the same decisions on the calibration data.
    action : str
    policy : Policy
    n_positive, n_negative, false_accepts, false_rejects : int
    false_accept_rate, false_accept_rate_upper, false_reject_rate,
    false_reject_rate_upper, expected_cost, prevalence : float
    limits_met : bool
    status : str
    n_failed : int
        Failed detector calls excluded from the calibration data.
    dataset, dataset_fingerprint : str or None
        The labeled set the threshold was calibrated on.
    """

    label: str
    detector: str
    model_version: str
    threshold: float
    next_score_below: float
    action: str
    policy: Policy
    n_positive: int
    n_negative: int
    false_accepts: int
    false_rejects: int
    false_accept_rate: float
    false_accept_rate_upper: float
    false_reject_rate: float
    false_reject_rate_upper: float
    expected_cost: float
    prevalence: float
    limits_met: bool
    status: str = "ok"
    n_failed: int = 0
    dataset: str | None = None
    dataset_fingerprint: str | None = None

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.detector, self.model_version, self.label)


@dataclass(frozen=True)
class ThresholdsFile:
    """A set of deployed cutoffs with provenance.

    Attributes
    ----------
    entries : tuple of ThresholdEntry
    created_at : str
        ISO 8601 UTC time of creation.
    tool_version : str
        The ``calibrate`` version that chose the thresholds.
    source : str
        Where the scores came from (a store file or a scores table).
    """

    entries: tuple[ThresholdEntry, ...]
    created_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    tool_version: str = ""
    source: str = ""

    def labels(self) -> list[str]:
        """Labels in file order (a label may appear once per detector and version)."""
        return [e.label for e in self.entries]

    def select(self, detector: str | None = None, model_version: str | None = None) -> list[ThresholdEntry]:
        """Entries of one detector and/or model version.

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
        if not hits:
            have = ", ".join(sorted({f"{e.detector} {e.model_version}" for e in self.entries}))
            raise InputError(
                f"the thresholds file has no entries for {detector or 'any detector'} "
                f"{model_version or 'any version'}; it has {have}."
            )
        return hits

    def one_version(
        self,
        detector: str | None = None,
        model_version: str | None = None,
        *,
        why: str = "",
        options: str = "--detector and --model-version",
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

        Raises
        ------
        InputError
            When nothing matches, or several versions do.
        """
        entries = self.select(detector, model_version)
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
        entries = []
        for e in self.entries:
            d = {f.name: getattr(e, f.name) for f in fields(e) if f.name != "policy"}
            d["policy"] = {k: v for k, v in e.policy.to_dict().items() if v is not None}
            entries.append(jsonable({k: v for k, v in d.items() if v is not None}))
        return {
            "format": FORMAT,
            "created_at": self.created_at,
            "tool_version": self.tool_version,
            "source": self.source,
            "rule": "fire when score >= threshold (detector's own scale)",
            "labels": entries,
        }


def thresholds_file_from_results(
    results: list[LabelThreshold],
    *,
    source: str = "",
    datasets: dict[tuple[str, str], tuple[str, str]] | None = None,
) -> ThresholdsFile:
    """Build a thresholds file from :func:`calibrate.thresholds.choose_thresholds` results.

    Labels that could not be calibrated (``choice is None``) are left out; callers
    should report them.

    Parameters
    ----------
    results : list of LabelThreshold
    source : str
        Where the scores came from.
    datasets : dict, optional
        ``(detector, model_version) -> (dataset name, dataset fingerprint)``.
    """
    entries = []
    for r in results:
        c = r.choice
        if c is None:
            continue
        ds, fp = (datasets or {}).get((r.detector, r.model_version), (None, None))
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
                expected_cost=c.expected_cost, prevalence=c.prevalence,
                limits_met=c.limits_met, status=c.status, n_failed=r.n_failed,
                dataset=ds, dataset_fingerprint=fp,
            )
        )
    return ThresholdsFile(tuple(entries), tool_version=__version__, source=source)


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


_ENTRY_TYPES: dict[str, tuple[type, ...]] = {
    "label": (str,), "detector": (str,), "model_version": (str,), "action": (str,),
    "status": (str,), "dataset": (str,), "dataset_fingerprint": (str,),
    "n_positive": (int,), "n_negative": (int,), "false_accepts": (int,),
    "false_rejects": (int,), "n_failed": (int,), "limits_met": (bool,),
}
_FLOAT_KEYS = (
    "threshold", "next_score_below", "false_accept_rate", "false_accept_rate_upper",
    "false_reject_rate", "false_reject_rate_upper", "expected_cost", "prevalence",
)


def _float(value, where: str) -> float:
    if isinstance(value, str) and value in ("inf", "-inf", "+inf"):
        return float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{where} must be a number (or \"inf\"), got {value!r}.")
    x = float(value)
    if math.isnan(x):
        raise InputError(f"{where} is NaN; a threshold file never holds NaN.")
    return x


def read_thresholds_file(path) -> ThresholdsFile:
    """Read and validate a thresholds file.

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
        if not isinstance(raw, dict):
            raise InputError(f"{where} must be a table of keys.")
        kw: dict[str, Any] = {}
        for key, types in _ENTRY_TYPES.items():
            if key in raw:
                v = raw[key]
                if not isinstance(v, types) or (types == (int,) and isinstance(v, bool)):
                    raise InputError(f"{where}.{key} must be {types[0].__name__}, got {v!r}.")
                kw[key] = v
        for key in _FLOAT_KEYS:
            if key in raw:
                kw[key] = _float(raw[key], f"{where}.{key}")
        if "next_score_below" not in kw:
            kw["next_score_below"] = -math.inf
        required = [
            f.name for f in fields(ThresholdEntry)
            if f.name not in kw and f.name != "policy" and f.default is MISSING
        ]
        if required:
            raise InputError(f"{where}: missing key(s) {', '.join(required)}.")
        if not isinstance(raw.get("policy"), dict):
            raise InputError(f"{where}.policy must be a table with the label's policy.")
        kw["policy"] = Policy.from_mapping(raw["policy"], where=f"{where}.policy")
        if kw["action"] != kw["policy"].action:
            raise InputError(f"{where}: action {kw['action']!r} differs from policy.action.")
        unknown = sorted(set(raw) - {f.name for f in fields(ThresholdEntry)})
        if unknown:
            raise InputError(f"{where}: unknown key(s) {', '.join(unknown)}.")
        entry = ThresholdEntry(**kw)
        if entry.key in seen:
            raise InputError(f"{where}: a second entry for {entry.detector} {entry.model_version} {entry.label}.")
        seen.add(entry.key)
        entries.append(entry)
    return ThresholdsFile(
        tuple(entries),
        created_at=str(data.get("created_at", "")),
        tool_version=str(data.get("tool_version", "")),
        source=str(data.get("source", "")),
    )
