"""What every manifest format shares while parsing: structural errors collected per file,
the label check, and the record a line becomes before its image is inspected.

A *record* is what a format parser (JSONL, CSV, COCO, folder per label) makes of one
image entry: its id, where its image is, its labels and split, and where in the file it
came from, for messages. Records are checked together (unique ids, known labels) before
any image file is opened.
"""

from __future__ import annotations

import difflib
import os
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from calibrate.errors import InputError
from calibrate.io import first_undecodable
from calibrate.manifest.records import REMOTE_SCHEMES

__all__: list[str] = []

_MAX_LISTED_ERRORS = 20  # a message with thousands of lines helps nobody


class _Errors:
    """Structural errors of one manifest, raised as one InputError.

    Fixing a manifest one error per run is slow; listing all of them (up to a limit)
    lets the user fix the file in one pass.
    """

    def __init__(self, file: str) -> None:
        self.file = file
        self.items: list[tuple[str | None, str]] = []

    def add(self, where: str | None, message: str) -> None:
        self.items.append((where, message))

    def raise_if_any(self) -> None:
        if not self.items:
            return
        if len(self.items) == 1:
            where, message = self.items[0]
            raise InputError(f"{self.file}{', ' + where if where else ''}: {message}")
        shown = [
            f"  {where}: {message}" if where else f"  {message}"
            for where, message in self.items[:_MAX_LISTED_ERRORS]
        ]
        more = len(self.items) - _MAX_LISTED_ERRORS
        if more > 0:
            shown.append(f"  ... and {more} more")
        raise InputError(
            f"{self.file}: {len(self.items)} errors; fix them and read the manifest "
            "again:\n" + "\n".join(shown)
        )


class _LabelCheck:
    """Collects labels outside the allowed vocabulary, with where each first appears."""

    def __init__(self, allowed: frozenset[str] | None) -> None:
        self.allowed = allowed
        self.unknown: dict[str, list[str]] = {}

    def check(self, where: str, labels: Iterable[str]) -> None:
        if self.allowed is None:
            return
        for label in labels:
            if label not in self.allowed:
                self.unknown.setdefault(label, []).append(where)

    def report(self, errors: _Errors, fix: str) -> None:
        # One error per unknown name, not per occurrence: a typo repeated on 500 lines
        # is one mistake.
        if self.allowed is None:
            return
        for label, wheres in self.unknown.items():
            also = ""
            if len(wheres) > 1:
                listed = ", ".join(wheres[1:4])
                extra = len(wheres) - 4
                also = f" (also {listed}{f' and {extra} more' if extra > 0 else ''})"
            close = difflib.get_close_matches(label, sorted(self.allowed), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            errors.add(
                wheres[0],
                f"unknown label {label!r}{also}; the allowed labels are "
                f"{sorted(self.allowed)}.{hint} {fix}",
            )


@dataclass
class _Record:
    file: str
    line: int | None
    where: str  # "line 7", "images[3]", a path: for messages
    image_id: str
    uri: str
    local_path: str | None  # absolute path of a local file, None for a remote URI
    labels: frozenset[str]
    split: str | None
    metadata: dict[str, Any]
    source: str  # LabeledImage.source
    objects: list | None = None  # boxes.RawObject list; None: the manifest gives no boxes
    width: int | None = None
    height: int | None = None


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def _locate(image: str, root: Path) -> tuple[str, str, str | None]:
    """``(uri, default id, absolute local path or None)`` of an image reference.

    Raises InputError (without location; the caller adds it) for an unsupported scheme.
    """
    m = _SCHEME.match(image)
    if m:
        scheme = m.group(1).lower()
        if scheme in REMOTE_SCHEMES:
            return image, image, None
        if scheme != "file":
            raise InputError(
                f"image {image!r} has the unsupported URI scheme {scheme!r}; use a local "
                f"path, file://, or one of {', '.join(s + '://' for s in REMOTE_SCHEMES)}."
            )
        parsed = urlparse(image)
        if parsed.netloc not in ("", "localhost"):
            raise InputError(
                f"image {image!r}: a file:// URI must hold an absolute path "
                "(file:///data/a.png); or write the path itself."
            )
        p = Path(unquote(parsed.path))
    else:
        p = Path(image)
    if p.is_absolute():
        absolute = Path(os.path.normpath(p))
        try:
            default_id = absolute.relative_to(root).as_posix()
        except ValueError:
            default_id = absolute.as_posix()
    else:
        absolute = Path(os.path.normpath(root / p))
        default_id = posixpath.normpath(p.as_posix())
    return str(absolute), default_id, str(absolute)


def _new_record(
    errors: _Errors,
    *,
    file: str,
    line: int | None,
    where: str,
    image: str,
    explicit_id: str | None,
    labels: Iterable[str],
    split: str | None,
    metadata: dict[str, Any],
    root: Path,
    objects: list | None = None,
    width: int | None = None,
    height: int | None = None,
) -> _Record | None:
    try:
        uri, default_id, local = _locate(image, root)
    except InputError as exc:
        errors.add(where, str(exc))
        return None
    return _Record(
        file=file,
        line=line,
        where=where,
        image_id=explicit_id if explicit_id is not None else default_id,
        uri=uri,
        local_path=local,
        labels=frozenset(labels),
        split=split,
        metadata=metadata,
        source=f"{file}:{line if line is not None else where}",
        objects=objects,
        width=width,
        height=height,
    )


def _check_unique_ids(records: list[_Record], errors: _Errors) -> None:
    # Ids key resumable runs and stored results, so a repeated id would silently merge
    # two images' scores (or one image counted twice).
    first: dict[str, _Record] = {}
    for rec in records:
        seen = first.setdefault(rec.image_id, rec)
        if seen is not rec:
            errors.add(
                rec.where,
                f"duplicate image id {rec.image_id!r}: first on {seen.where}, again on "
                f"{rec.where}. Ids must be unique; give one of the two its own id, or "
                "remove the repeated record.",
            )


def _read_text_lines(path: Path):
    """Open a UTF-8 text manifest (a BOM, as Excel writes, is accepted)."""
    try:
        return open(path, encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise InputError(f"{path}: cannot read the manifest ({exc.strerror or exc}).") from None


def _not_utf8(path: Path, exc: UnicodeDecodeError) -> InputError:
    """The error for a manifest that is not UTF-8, naming the line of the first bad byte
    (see :func:`calibrate.io.first_undecodable`)."""
    where = first_undecodable(path)
    if where is None:  # unreadable now, or changed since it was read: no position
        return InputError(f"{path}: not UTF-8 text ({exc.reason}). Save the manifest as UTF-8.")
    line, column, byte = where
    return InputError(
        f"{path}, line {line}: byte 0x{byte:02x} at column {column} is not UTF-8 "
        "text. Save the manifest as UTF-8 (in Excel: CSV UTF-8), or fix that character."
    )
