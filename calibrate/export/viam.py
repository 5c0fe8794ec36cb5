"""Viam ML-model vision service: ``label_confidences`` from a thresholds file.

How the service applies them (viamrobotics/rdk ``services/vision/mlvision`` and
``vision/objectdetection/postprocessor.go``): a result is kept when
``score >= threshold``; ``label_confidences`` keys match labels case-insensitively; once
``label_confidences`` is non-empty every label it does not list is dropped and
``default_minimum_confidence`` is ignored. Hence this exporter:

* lists every label the model emits (from the store when given), so that no label is
  dropped by accident; emitted labels the thresholds file does not mention get the
  service's default (and a warning), or are dropped on request;
* leaves out a label the policy refuses (unproven limits, ``if_limit_unproven =
  "refuse"``) and reports it, one line each: Viam then drops its detections; a label
  deployed by sign-off is written with a warning saying so;
* leaves out a label the file says cannot be calibrated, warning that Viam will drop
  every detection of it;
* refuses labels that differ only in case (Viam could not tell them apart);
* writes "never fire" by leaving the label out (that is how Viam drops it), and "fire on
  everything" as 0.0 (images with no result cannot fire in Viam: warned);
* rounds to ``decimals`` only where the rounding keeps every calibration decision.

The service is written in the current shape ``{"name", "api": "rdk:service:vision",
"model": "mlmodel", "attributes": {...}}``; the older ``namespace``/``type`` form is
recognised when merging into an existing machine config.
"""

from __future__ import annotations

import difflib
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calibrate.errors import CalibrateWarning, InputError
from calibrate.export.decisions import screen, uncalibrated_note
from calibrate.export.rounding import target_values
from calibrate.io import atomic_write_text
from calibrate.thresholds_file import ThresholdsFile

__all__ = [
    "ViamExport",
    "label_confidences",
    "merge_into_machine_config",
    "service_fragment",
    "warn_all",
]

VISION_API = "rdk:service:vision"


@dataclass
class ViamExport:
    """``label_confidences`` for one model version, with what was decided on the way.

    Attributes
    ----------
    label_confidences : dict of str to float
    dropped : list of str
        Labels left out: never fire, refused by the policy, not calibratable, or
        emitted without an entry with ``uncalibrated="drop"``.
    warnings : list of str
    refused : list of str
        One line per label the policy refuses to deploy (left out, so Viam drops it).
    """

    label_confidences: dict[str, float]
    dropped: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)


def _one_version(tf: ThresholdsFile, detector: str | None, model_version: str | None):
    return tf.one_version(detector, model_version, why="a Viam vision service runs one model, but",
                          calibrated_only=False)


def label_confidences(
    tf: ThresholdsFile,
    *,
    detector: str | None = None,
    model_version: str | None = None,
    emitted_labels: list[str] | None = None,
    uncalibrated: str = "default",
    default_minimum_confidence: float | None = None,
    decimals: int | None = None,
) -> ViamExport:
    """Per-label cutoffs on Viam's 0-1 scale that reproduce the calibrated decisions.

    Parameters
    ----------
    tf : ThresholdsFile
    detector, model_version : str, optional
        Which entries to use when the file holds several versions.
    emitted_labels : list of str, optional
        Every label the model emits (e.g. ``store.labels(detector, model_version)``).
    uncalibrated : {"default", "drop"}, default "default"
        For emitted labels the file has no entry for: list them at
        ``default_minimum_confidence`` (0.0 when None: keep every result, as an unset
        default does) or leave them out (Viam then drops their results).
    default_minimum_confidence : float, optional
    decimals : int, optional
        Force this many decimals; default: the fewest that keep every decision.

    Returns
    -------
    ViamExport
        Labels the policy refuses are in ``refused`` (one line each) and left out; the
        caller reports them (the CLI exits 1).

    Raises
    ------
    InputError
        Two labels differing only in case, a detector on another scale, a threshold
        outside 0-1, an ambiguous file, or a map that would end up empty.
    """
    if uncalibrated not in ("default", "drop"):
        raise InputError(f"uncalibrated must be 'default' or 'drop', got {uncalibrated!r}.")
    entries = _one_version(tf, detector, model_version)
    # Labels the file mentions, even uncalibrated or refused ones, are never listed at
    # the default: that would deploy a cutoff nobody chose.
    names = [e.label for e in entries] + [
        lab for lab in (emitted_labels or []) if lab not in {e.label for e in entries}
    ]
    by_fold: dict[str, str] = {}
    for name in names:
        other = by_fold.setdefault(name.casefold(), name)
        if other != name:
            raise InputError(
                f"labels {other!r} and {name!r} differ only in case; Viam matches "
                "label_confidences keys case-insensitively, so it cannot give them "
                "different cutoffs. Rename one in the model's label file."
            )
    scr = screen(entries, consequence="left out of label_confidences, so Viam drops its "
                                      "detections")
    tv = target_values(scr.entries, low=0.0, high=1.0, decimals=decimals, target="Viam")
    out = ViamExport(tv.values, list(tv.never_fire), list(tv.notes) + scr.warnings,
                     list(scr.refused.values()))
    if tv.never_fire:
        out.warnings.append(
            f"{', '.join(tv.never_fire)}: left out of label_confidences, so Viam drops "
            "their results (that is how 'never fire' is written)."
        )
    out.dropped += list(scr.refused)
    for e in scr.uncalibrated:
        out.dropped.append(e.label)
        out.warnings.append(uncalibrated_note(
            e, "it is left out of label_confidences, so Viam will DROP every detection of "
               "it (once label_confidences is non-empty, unlisted labels are dropped)"))
    for lab in names[len(entries):]:
        if uncalibrated == "drop":
            out.dropped.append(lab)
            out.warnings.append(
                f"{lab}: the model emits it but it has no calibrated threshold; left out, "
                "so Viam drops its results."
            )
        else:
            d = 0.0 if default_minimum_confidence is None else float(default_minimum_confidence)
            out.label_confidences[lab] = d
            out.warnings.append(
                f"{lab}: the model emits it but it has no calibrated threshold; listed at "
                f"{d} (Viam ignores default_minimum_confidence once label_confidences is set)."
            )
    if not out.label_confidences:
        # Viam reads an empty map as "no per-label cutoffs" and falls back to
        # default_minimum_confidence: the opposite of dropping every label.
        raise InputError(
            "every label would be left out of label_confidences ("
            + ", ".join(out.dropped)
            + "), and Viam treats an empty label_confidences as unset, keeping results at "
            "default_minimum_confidence. Nothing should fire: disable the service instead, "
            "or list labels it may keep."
            + "".join(f" {line}" for line in out.refused)
        )
    return out


def service_fragment(export: ViamExport, *, name: str, mlmodel_name: str | None = None) -> dict[str, Any]:
    """A vision service config in the current shape, ready to paste into a machine config."""
    attributes: dict[str, Any] = {}
    if mlmodel_name:
        attributes["mlmodel_name"] = mlmodel_name
    attributes["label_confidences"] = export.label_confidences
    return {"name": name, "api": VISION_API, "model": "mlmodel", "attributes": attributes}


def _is_mlmodel_vision(service: dict) -> bool:
    if service.get("model") not in ("mlmodel", "rdk:builtin:mlmodel"):
        return False
    if service.get("api") == VISION_API:
        return True
    return service.get("type") == "vision" and service.get("namespace", "rdk") == "rdk"


def merge_into_machine_config(
    config_path,
    service_name: str,
    export: ViamExport,
    *,
    dry_run: bool = False,
) -> str:
    """Write ``label_confidences`` into a named service of a machine config file.

    Every other key and its order are kept; the file is replaced atomically (temp file
    and rename), so a failure leaves the old file intact.

    Parameters
    ----------
    config_path : str or Path
        A Viam machine config (JSON) with a ``services`` list.
    service_name : str
        The ML-model vision service to update.
    export : ViamExport
    dry_run : bool, default False
        Only return the diff.

    Returns
    -------
    str
        A unified diff of the change (empty when nothing changes).

    Raises
    ------
    InputError
        Unreadable config, no such service, or a service that is not an ML-model
        vision service.
    """
    p = Path(config_path)
    try:
        before = p.read_text(encoding="utf-8")
        config = json.loads(before)
    except OSError as exc:
        raise InputError(f"cannot read machine config {p}: {exc.strerror or exc}.") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{p}:{exc.lineno}:{exc.colno}: not valid JSON ({exc.msg}).") from None
    services = config.get("services") if isinstance(config, dict) else None
    if not isinstance(services, list):
        raise InputError(f"{p} has no \"services\" list; is it a Viam machine config?")
    matches = [s for s in services if isinstance(s, dict) and s.get("name") == service_name]
    if not matches:
        names = ", ".join(str(s.get("name")) for s in services if isinstance(s, dict))
        raise InputError(f"{p} has no service named {service_name!r} (services: {names or 'none'}).")
    service = matches[0]
    if not _is_mlmodel_vision(service):
        raise InputError(
            f"service {service_name!r} in {p} is not an ML-model vision service "
            f"(api {service.get('api')!r}, model {service.get('model')!r}); label_confidences "
            "belongs to 'rdk:service:vision' with model 'mlmodel'."
        )
    attrs = service.setdefault("attributes", {})
    attrs["label_confidences"] = export.label_confidences
    after = json.dumps(config, indent=_indent_of(before)) + "\n"
    diff = "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True) if before.endswith("\n") else (before + "\n").splitlines(keepends=True),
            after.splitlines(keepends=True),
            fromfile=str(p),
            tofile=f"{p} (calibrated)",
        )
    )
    if not dry_run and after != before:
        atomic_write_text(p, after)
    return diff


def _indent_of(text: str) -> int | str:
    """The indentation the file already uses, so that the diff shows only the change."""
    for line in text.splitlines()[1:]:
        stripped = line.lstrip(" \t")
        if stripped and len(stripped) < len(line):
            lead = line[: len(line) - len(stripped)]
            return "\t" if lead.startswith("\t") else len(lead)
    return 2


def warn_all(export: ViamExport) -> None:
    """Emit the export's warnings as :class:`CalibrateWarning` (for library users)."""
    for w in export.warnings:
        warnings.warn(w, CalibrateWarning, stacklevel=2)
