"""Which cutoffs an export writes when a ``[part]`` policy deploys whole-part cutoffs.

The thresholds file records each label's own cutoff (its entry) and, per detector
version, the part-level figures with the cutoff set the policy deploys
(``parts[].deployed``: ``deploy = "per_label" | "joint" | "review_band"``). With
``per_label`` nothing changes. Otherwise every exporter that holds one cutoff per label
(Viam, Rekognition, IMM) writes the deployed reject cutoff instead of the entry's and
says so in a note:

* ``joint``: the joint cutoffs, which make the part-level decisions of the joint row.
* ``review_band``: the band's *reject* cutoff ``T_high`` per label. One cutoff cannot
  send a part to review, so parts in ``[T_low, T_high)`` ship instead of going to a
  person; the note names the labels whose band is lost. The thresholds export (the
  generic JSON) keeps both cutoffs per label under ``parts[].deployed``.

Refused labels stay refused: a label whose own limits are not shown and whose policy
does not sign it off (``if_limit_unproven = "refuse"``) is never written, whatever
cutoff the joint search gave it (it may ignore that label's limits when none can be
met); the note says the line then differs from the deployed part-level figures. A label
deployed by sign-off gets the deployed cutoff, and the sign-off warning still names it.
"""

from __future__ import annotations

import dataclasses
import math

from calibrate.export.decisions import sign_off_warning
from calibrate.thresholds_file import ThresholdEntry, ThresholdsFile

__all__ = ["deployed_file"]


def _float(x) -> float:
    """A cutoff as recorded (JSON/TOML hold infinities as the strings "inf"/"-inf")."""
    return float(x)


def _cut(t: float) -> str:
    return "never fire" if math.isinf(t) and t > 0 else f"{t:.6g}"


def deployed_file(tf: ThresholdsFile, *, target: str, detector: str | None = None,
                  model_version: str | None = None) -> tuple[ThresholdsFile, list[str]]:
    """``tf`` with each entry's threshold set to the cutoff its ``[part]`` policy deploys.

    Parameters
    ----------
    tf : ThresholdsFile
    target : str
        The export target's name, for the notes.
    detector, model_version : str, optional
        The versions being exported (default all): only theirs are changed and noted.

    Returns
    -------
    (ThresholdsFile, list of str)
        The file whose entries carry the deployed reject cutoffs (unchanged for versions
        that deploy the per-label cutoffs, or without part-level figures), and one note
        per version that deploys another set, plus one per refused label and per signed-off
        label concerned.
    """
    by_version = {(p.get("detector"), p.get("model_version")): p for p in tf.parts
                  if p.get("deploy", "per_label") != "per_label" and p.get("deployed")
                  and detector in (None, p.get("detector"))
                  and model_version in (None, p.get("model_version"))}
    if not by_version:
        return tf, []
    notes: list[str] = []
    entries: list[ThresholdEntry] = []
    for e in tf.entries:
        part = by_version.get((e.detector, e.model_version))
        dep = None if part is None else part["deployed"]
        if dep is None or e.label not in dep["reject_cutoffs"]:
            entries.append(e)
            continue
        high = _float(dep["reject_cutoffs"][e.label])
        if not e.deployable:
            if e.calibrated and not math.isinf(high):
                notes.append(
                    f"{e.label} ({e.detector} {e.model_version}): the {dep['row']} cutoffs "
                    f"give it {_cut(high)}, but its own policy refuses it, so {target} gets "
                    "no cutoff for it and the line's parts differ from the "
                    f"{dep['row']} figures (sign it off with if_limit_unproven to deploy it).")
            entries.append(e)
            continue
        if e.needs_sign_off:
            notes.append(sign_off_warning(e) + f" The {dep['row']} cutoff {_cut(high)} is "
                         "written instead of that one.")
        below = dep.get("next_score_below", {}).get(e.label)
        entries.append(dataclasses.replace(
            e, threshold=high, decision="deploy",
            next_score_below=None if below is None else _float(below)))
    for (det, ver), part in by_version.items():
        dep = part["deployed"]
        notes.append(f"{det} {ver}: exported the {dep['row']} cutoffs of the [part] policy "
                     f"(deploy = \"{part['deploy']}\"), not each label's own cutoff; the "
                     "part-level figures are in the thresholds file.")
        review = dep.get("review_cutoffs")
        if review and target != "thresholds":
            lost = [lab for lab, lo in review.items()
                    if _float(lo) < _float(dep["reject_cutoffs"][lab])]
            if lost:
                notes.append(
                    f"{det} {ver}: the review band is lost: {target} holds one cutoff per "
                    "label, so the REJECT cutoff T_high is exported and parts scoring in "
                    "[T_low, T_high) ship instead of going to review, for "
                    + ", ".join(f"{lab} ({_cut(_float(review[lab]))}-"
                                f"{_cut(_float(dep['reject_cutoffs'][lab]))})" for lab in lost)
                    + "; the thresholds export keeps both cutoffs.")
    return dataclasses.replace(tf, entries=tuple(entries)), notes
