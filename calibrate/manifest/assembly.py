"""Assembling a labeled set: records and what inspecting their images found, as a
:class:`~calibrate.manifest.LabeledSet` of usable images and :class:`~calibrate.manifest.Problem` s.
"""

from __future__ import annotations

import difflib
import warnings
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from calibrate.errors import CalibrateWarning, InputError
from calibrate.manifest.inspection import (
    CORRUPT,
    EMPTY,
    MISSING,
    NOT_A_FILE,
    UNREADABLE,
    _Inspection,
)
from calibrate.manifest.parsing import _Record
from calibrate.manifest.records import LabeledImage, LabeledSet, Problem

__all__: list[str] = []

_FIXES = {
    MISSING: "Fix the path or remove the record",
    NOT_A_FILE: "Point it at an image file",
    EMPTY: "Copy the image again or remove the record",
    UNREADABLE: "Check the file's permissions",
    CORRUPT: "Replace the file or remove the record",
}


def _assemble(
    records: list[_Record],
    inspections: list[_Inspection],
    *,
    name: str,
    source: str,
    vocabulary: Iterable[str],
    root: Path,
) -> LabeledSet:
    """The set of ``records``, each image usable or a Problem after its ``inspections``."""
    images: list[LabeledImage] = []
    problems: list[Problem] = []
    for rec, found in zip(records, inspections):
        image = LabeledImage(
            image_id=rec.image_id,
            uri=rec.uri,
            labels=rec.labels,
            content_hash=found.content_hash,
            split=rec.split,
            metadata=rec.metadata,
            source=rec.source,
        )
        if found.kind is None:
            images.append(image)
        else:
            problems.append(_problem(rec, found, image, root))
    if not images:
        raise _nothing_usable(problems, source, root)
    _warn_lone_splits(records)
    return LabeledSet(
        name=name, source=source, images=images, labels=tuple(vocabulary), problems=problems
    )


def _problem(rec: _Record, found: _Inspection, image: LabeledImage, root: Path) -> Problem:
    in_folder_layout = rec.where == rec.file  # the record is the image file itself
    location = rec.file if in_folder_layout else f"{rec.file}, {rec.where}"
    fix = _FIXES[found.kind]
    if in_folder_layout:
        fix = fix.replace("remove the record", "delete it")
    elif found.kind == MISSING:
        fix += f" (relative paths start at {root}; base_dir= changes that)"
    return Problem(
        file=rec.file,
        line=rec.line,
        image_id=rec.image_id,
        kind=found.kind,
        message=f"{location}: image {rec.image_id!r}: {rec.uri} {found.detail}. {fix}.",
        image=image,
    )


def _nothing_usable(problems: list[Problem], source: str, root: Path) -> InputError:
    # A set in which no image at all is usable is almost always a wrong base_dir, not
    # a set of damaged files: say so rather than return an empty set.
    kinds = sorted({p.kind for p in problems})
    hint = ""
    if MISSING in kinds:
        hint = (
            f" Relative image paths were resolved against {root}; if the images are "
            "elsewhere, pass base_dir=."
        )
    return InputError(
        f"{source}: none of the {len(problems)} images can be used ({', '.join(kinds)})."
        f"{hint} First: {problems[0].message}"
    )


def _warn_lone_splits(records: list[_Record]) -> None:
    """Warn about a split used by one image only that looks like a typo of another.

    ``"calbration"`` on one image is almost surely ``"calibration"``; accepted as
    written, that image silently drops out of both splits' curves. A lone split is
    flagged only when it resembles a split that more images use (case aside), so a
    deliberate small split, or a tiny set, is left alone.
    """
    counts = Counter(rec.split for rec in records if rec.split is not None)
    common = {name.lower(): name for name, n in counts.items() if n > 1}
    for rec in records:
        if rec.split is None or counts[rec.split] != 1:
            continue
        close = difflib.get_close_matches(rec.split.lower(), list(common), n=1)
        if not close:
            continue
        meant = common[close[0]]
        warnings.warn(
            f"{rec.source}: image {rec.image_id!r} is the only one with split "
            f"{rec.split!r}; did you mean {meant!r}, which {counts[meant]} images use? "
            "Correct the split, or ignore this if the image really is alone in it.",
            CalibrateWarning,
            stacklevel=5,
        )
