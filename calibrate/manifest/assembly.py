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
from calibrate.manifest.boxes import to_pixels
from calibrate.manifest.inspection import (
    CORRUPT,
    EMPTY,
    MISSING,
    NOT_A_FILE,
    UNREADABLE,
    _Inspection,
    header_size,
)
from calibrate.manifest.parsing import _Errors, _Record
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
    errors = _Errors(source)
    for rec, found in zip(records, inspections):
        usable = found.kind is None
        # A bad image's boxes are kept when they can be (it is stored with its
        # failure); its size may be unknowable, which is not the manifest's fault.
        width, height, objects = _size_and_objects(rec, found, errors if usable else _Errors(source))
        image = LabeledImage(
            image_id=rec.image_id,
            uri=rec.uri,
            labels=rec.labels,
            content_hash=found.content_hash,
            split=rec.split,
            metadata=rec.metadata,
            source=rec.source,
            objects=objects,
            width=width,
            height=height,
        )
        if usable:
            images.append(image)
        else:
            problems.append(_problem(rec, found, image, root))
    errors.raise_if_any()
    if not images:
        raise _nothing_usable(problems, source, root)
    _warn_lone_splits(records)
    return LabeledSet(
        name=name, source=source, images=images, labels=tuple(vocabulary), problems=problems
    )


def _size_and_objects(rec: _Record, found: _Inspection, errors: _Errors):
    """``(width, height, objects in pixels)`` of a record: the manifest's size, else the
    file's (read while inspecting it, or from its header when a ratio box needs it)."""
    width, height = rec.width, rec.height
    if found.size is not None:
        if width is None:
            width, height = found.size
        elif (width, height) != found.size:
            errors.add(rec.where, f"the manifest gives the image's size as {width}x{height} "
                                  f"but {rec.uri} is {found.size[0]}x{found.size[1]} (EXIF "
                                  "orientation applied); boxes would be misplaced. Correct "
                                  "width and height, or the file.")
            return width, height, None
    if rec.objects is None:
        return width, height, None
    needs_size = any(o.unit == "ratio" for o in rec.objects)
    if width is None and needs_size and rec.local_path is not None:
        size = header_size(rec.local_path)
        if size is not None:
            width, height = size
    return width, height, to_pixels(rec.objects, width, height, errors)


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
