"""Exporters: thresholds as config a deployment reads, one module per target.

* :mod:`calibrate.thresholds_file` - calibrate's own provenance-stamped file, the input
  of every other exporter and of ``calibrate check``.
* :mod:`calibrate.export.viam` - ``label_confidences`` for a Viam ML-model vision service.
* :mod:`calibrate.export.rekognition` - per-label ``MinConfidence`` maps (0-100).
* :mod:`calibrate.export.alibaba_imm` - per-label/attribute threshold maps (0-1).

Which cutoff is written (:mod:`calibrate.export.deployed`): each label's own, unless a
``[part]`` policy deploys the joint cutoffs or a review band; then the per-label targets
write those (a review band's reject cutoff, with a note naming the labels whose review
band is lost) and the thresholds file keeps both cutoffs under ``parts[].deployed``.

What no exporter writes (:mod:`calibrate.export.decisions`): a label whose policy
refuses it (unproven limits, ``if_limit_unproven = "refuse"``) is left out and reported
in :attr:`ExportResult.refused`, one line each, while every other label is written; a
label that cannot be calibrated is left out too (Viam: with a warning that Viam drops
its detections; the other targets refuse it unless ``allow_missing``). A detector known
to score on another scale than the target's is refused outright
(:mod:`calibrate.export.scales`).
"""

from __future__ import annotations

import json
from pathlib import Path

from calibrate.errors import InputError
from calibrate.export import viam
from calibrate.export.alibaba_imm import threshold_map
from calibrate.export.deployed import deployed_file
from calibrate.export.rekognition import min_confidence_map
from calibrate.io import atomic_write_text
from calibrate.thresholds_file import (
    ThresholdEntry,
    ThresholdsFile,
    read_thresholds_file,
    thresholds_file_from_results,
    write_thresholds_file,
)

__all__ = [
    "EXPORTERS",
    "OPTIONS",
    "TARGETS",
    "ExportResult",
    "ThresholdEntry",
    "export_to",
    "ThresholdsFile",
    "read_thresholds_file",
    "thresholds_file_from_results",
    "write_thresholds_file",
]

def _thresholds(tf: ThresholdsFile, path, *, store, detector, model_version, **options):
    if options:
        raise InputError(f"the thresholds export takes no options, got {', '.join(options)}.")
    if detector or model_version:
        tf = ThresholdsFile(tuple(tf.select(detector, model_version, calibrated_only=False)),
                            tf.created_at, tf.tool_version, tf.source)
    # calibrate's own record keeps every entry, refused and uncalibrated ones included,
    # and the deployed part-level cutoffs (both of a review band) under parts[].deployed.
    notes = [f"{p['detector']} {p['model_version']}: entries keep each label's own cutoff; "
             f"the deployed {p['deployed']['row']} cutoffs (deploy = \"{p['deploy']}\""
             + (", T_low and T_high per label" if p["deployed"].get("review_cutoffs") else "")
             + ") are under parts[].deployed." for p in tf.parts
             if p.get("deploy", "per_label") != "per_label" and p.get("deployed")]
    return ExportResult(write_thresholds_file(tf, path), notes)


def _viam(tf: ThresholdsFile, path, *, store, detector, model_version, **options):
    tf, deploy_notes = deployed_file(tf, target="Viam", detector=detector,
                                     model_version=model_version)
    entries = viam._one_version(tf, detector, model_version)
    emitted = None
    if store is not None:
        emitted = store.labels(entries[0].detector, entries[0].model_version)
    machine_config = options.pop("machine_config", None)
    service = options.pop("service", "vision")
    mlmodel_name = options.pop("mlmodel_name", None)
    dry_run = bool(options.pop("dry_run", False))
    # Viam never refuses a label that cannot be calibrated (it warns that Viam drops it),
    # so the flag other targets need changes nothing here.
    options.pop("allow_missing", None)
    exp = viam.label_confidences(
        tf, detector=entries[0].detector, model_version=entries[0].model_version,
        emitted_labels=emitted, **options,
    )
    if machine_config is not None:
        diff = viam.merge_into_machine_config(machine_config, service, exp, dry_run=dry_run)
        return ExportResult(Path(machine_config), deploy_notes + exp.warnings, diff, dry_run,
                            exp.refused)
    fragment = viam.service_fragment(exp, name=service, mlmodel_name=mlmodel_name)
    return _write_json(path, "viam", fragment, deploy_notes + exp.warnings, exp.refused)


def _rekognition(tf: ThresholdsFile, path, *, store, detector, model_version, **options):
    tf, deploy_notes = deployed_file(tf, target="Rekognition", detector=detector,
                                     model_version=model_version)
    data = min_confidence_map(tf, detector=detector, model_version=model_version, **options)
    data["notes"] = deploy_notes + data["notes"]
    return _write_json(path, "rekognition", data, data["notes"], data["refused"].values())


def _alibaba_imm(tf: ThresholdsFile, path, *, store, detector, model_version, **options):
    tf, deploy_notes = deployed_file(tf, target="IMM", detector=detector,
                                     model_version=model_version)
    data = threshold_map(tf, detector=detector, model_version=model_version, **options)
    data["notes"] = deploy_notes + data["notes"]
    return _write_json(path, "alibaba-imm", data, data["notes"], data["refused"].values())


def _nothing_left(target: str, data, refused) -> bool:
    """True when a per-label map would hold no label at all, only refusals."""
    key = {"rekognition": "MinConfidence", "alibaba-imm": "thresholds"}.get(target)
    return bool(refused) and key is not None and not data[key] and not data["never_fire"]


def _write_json(path, target: str, data, notes, refused=()) -> ExportResult:
    refused = list(refused)
    if path is None:
        raise InputError(f"export --to {target} needs an output file.")
    if _nothing_left(target, data, refused):
        # A config that deploys nothing is no export: say why instead of writing it.
        raise InputError(f"nothing to export --to {target}: every label is refused. "
                         + " ".join(refused))
    atomic_write_text(Path(path), json.dumps(data, indent=2) + "\n")
    return ExportResult(Path(path), notes, refused=refused)


#: Every export target and the function that writes it: the one place to add a target.
EXPORTERS = {
    "thresholds": _thresholds,
    "viam": _viam,
    "rekognition": _rekognition,
    "alibaba-imm": _alibaba_imm,
}

TARGETS = tuple(EXPORTERS)

#: Options each target takes (besides the output path, store, detector and version), so a
#: misspelt option is a message, not a TypeError.
OPTIONS = {
    "thresholds": (),
    "viam": ("service", "mlmodel_name", "machine_config", "dry_run", "uncalibrated",
             "default_minimum_confidence", "decimals", "allow_missing"),
    "rekognition": ("custom_labels", "decimals", "allow_missing"),
    "alibaba-imm": ("decimals", "allow_missing"),
}


def export_to(target: str, tf: ThresholdsFile, path, *, store=None, detector=None,
              model_version=None, **options):
    """Write ``tf`` as config for ``target``.

    Parameters
    ----------
    target : {"thresholds", "viam", "rekognition", "alibaba-imm"}
    tf : ThresholdsFile
    path : str or Path
        Output file. For ``viam`` with ``machine_config=...`` the machine config is
        updated in place instead and ``path`` may be None.
    store : calibrate.store.ScoreStore, optional
        For ``viam``: the labels the model emits are read from it, so none is dropped.
    detector, model_version : str, optional
        Which entries, when the file holds several model versions.
    **options
        ``viam``: ``service`` (name, default "vision"), ``mlmodel_name``,
        ``machine_config`` (a config file to merge into), ``dry_run``, ``uncalibrated``,
        ``default_minimum_confidence``, ``decimals``. ``rekognition``:
        ``custom_labels``, ``decimals``, ``allow_missing``. ``alibaba-imm``:
        ``decimals``, ``allow_missing`` (leave out labels that cannot be calibrated
        instead of refusing them).

    Returns
    -------
    ExportResult
        The written path, warnings, labels refused (one line each: the file holds every
        other label), and for a Viam merge the diff.

    Raises
    ------
    InputError
        Bad input; nothing is written: an unknown target or option, a detector on
        another scale than the target's, an ambiguous file, or nothing left to export.
    """
    if target not in EXPORTERS:
        raise InputError(f"unknown export target {target!r}; choose one of {', '.join(TARGETS)}.")
    unknown = sorted(set(options) - set(OPTIONS.get(target, options)))
    if unknown:
        raise InputError(f"export to {target}: unknown option(s) {', '.join(unknown)}; it "
                         f"takes {', '.join(OPTIONS[target]) or 'none'}.")
    return EXPORTERS[target](tf, path, store=store, detector=detector,
                             model_version=model_version, **options)


class ExportResult:
    """Where an export went and what it warned about.

    Attributes
    ----------
    path : Path
    warnings : list of str
    diff : str
        For a Viam machine-config merge: the unified diff.
    dry_run : bool
    refused : list of str
        One line per label left out because it may not be deployed (the policy refuses
        it, or it cannot be calibrated and the target needs ``allow_missing``). Every
        other label was written; the CLI exits 1 when this is non-empty.
    """

    def __init__(self, path, warnings, diff: str = "", dry_run: bool = False, refused=()):
        self.path, self.warnings, self.diff, self.dry_run = path, list(warnings), diff, dry_run
        self.refused = list(refused)

    def __repr__(self) -> str:
        return (f"ExportResult(path={str(self.path)!r}, warnings={len(self.warnings)}, "
                f"refused={len(self.refused)})")
