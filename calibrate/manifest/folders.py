"""Folder-per-label sets: ``root/<label>/.../<name>.png`` (or ``.jpg``/``.jpeg``), with
``root/_clean/`` (or ``root/negative/``) for images with no label.

An image's id is its path inside its label folder, so ``scratch/p1.png`` and
``dent/p1.png`` are the *same* image ``p1.png`` carrying both labels: folder layouts
cannot otherwise express several labels per image, and copying the file into each
folder is how people do it. The copies must be identical.
"""

from __future__ import annotations

import filecmp
import os
import warnings
from pathlib import Path
from typing import Any

from calibrate.errors import CalibrateWarning, InputError
from calibrate.manifest.assembly import _assemble
from calibrate.manifest.inspection import _inspect_all, _Inspection
from calibrate.manifest.parsing import _Errors, _LabelCheck, _Record
from calibrate.manifest.records import LabeledSet

__all__ = ["CLEAN_FOLDERS", "IMAGE_SUFFIXES"]

#: Image files picked up in a folder-per-label layout (what the cloud detectors accept).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

#: Folder names holding images with no label in a folder-per-label layout.
CLEAN_FOLDERS = ("_clean", "negative")

# One image name -> its copies: (label, or None in a clean folder; folder name; file).
_Copies = dict[str, list[tuple[str | None, str, Path]]]


def _read_directory(
    root: Path, allowed: frozenset[str] | None, hash_images: bool, decode: bool
) -> LabeledSet:
    """Read a folder-per-label set (``read_manifest`` on a directory)."""
    errors = _Errors(str(root))
    check = _LabelCheck(allowed)
    copies, vocabulary, ignored = _collect_copies(root, check)
    check.report(errors, "Rename the folder, or add its name to labels= if it is a real label.")
    _check_clean_or_labeled(copies, errors)
    errors.raise_if_any()
    if ignored:
        _warn_ignored(root, ignored)
    if not copies:
        raise InputError(
            f"{root}: no images found. A folder-per-label set holds "
            f"<label>/<name>{'|'.join(IMAGE_SUFFIXES)} files, and {CLEAN_FOLDERS[0]}/ "
            "(or negative/) for images with no label."
        )
    records, inspections = _directory_records(root, copies, hash_images, decode, errors)
    errors.raise_if_any()
    return _assemble(
        records,
        inspections,
        name=root.name,
        source=str(root),
        vocabulary=allowed if allowed is not None else vocabulary,
        root=root,
    )


def _collect_copies(root: Path, check: _LabelCheck) -> tuple[_Copies, set[str], list[Path]]:
    """``(copies, label folder names, ignored files)`` of the folders under ``root``."""
    ignored: list[Path] = []
    vocabulary: set[str] = set()
    copies: _Copies = {}
    try:
        entries = sorted(root.iterdir(), key=lambda p: p.name)
    except OSError as exc:
        raise InputError(f"{root}: cannot list the folder ({exc.strerror or exc}).") from None
    for entry in entries:
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            ignored.append(entry)
            continue
        clean = entry.name.lower() in CLEAN_FOLDERS
        label = None if clean else entry.name
        if label is not None:
            vocabulary.add(label)
            check.check(f"folder {entry.name}/", [label])
        for file in _walk_files(entry):
            if file.suffix.lower() not in IMAGE_SUFFIXES:
                ignored.append(file)
                continue
            rel = file.relative_to(entry).as_posix()
            copies.setdefault(rel, []).append((label, entry.name, file))
    return copies, vocabulary, ignored


def _check_clean_or_labeled(copies: _Copies, errors: _Errors) -> None:
    for rel, group in copies.items():
        clean_folders = [folder for label, folder, _ in group if label is None]
        label_folders = [folder for label, folder, _ in group if label is not None]
        if clean_folders and label_folders:
            errors.add(
                None,
                f"{rel} is in the clean folder {clean_folders[0]}/ and in the label "
                f"folder(s) {', '.join(f + '/' for f in label_folders)}; an image is "
                "either clean or labeled. Delete the wrong copy.",
            )


def _warn_ignored(root: Path, ignored: list[Path]) -> None:
    shown = ", ".join(str(p.relative_to(root)) for p in ignored[:5])
    more = f" and {len(ignored) - 5} more" if len(ignored) > 5 else ""
    warnings.warn(
        f"{root}: ignored {len(ignored)} file(s) that are not PNG/JPEG images inside a "
        f"label folder: {shown}{more}. Images go in {root.name}/<label>/ or "
        f"{root.name}/{CLEAN_FOLDERS[0]}/.",
        CalibrateWarning,
        # Past this function, _read_directory and read_manifest: the user's call.
        stacklevel=4,
    )


def _directory_records(
    root: Path, copies: _Copies, hash_images: bool, decode: bool, errors: _Errors
) -> tuple[list[_Record], list[_Inspection]]:
    """One record per image name, and what inspecting its copies found."""
    # Every copy is inspected: a copy may be the damaged one, and copies must match.
    flat = [file for group in copies.values() for _, _, file in group]
    results = dict(zip(flat, _inspect_all([str(f) for f in flat], hash_images, decode)))

    records: list[_Record] = []
    inspections: list[_Inspection] = []
    for rel, group in copies.items():
        first = group[0][2]
        checked = [results[file] for _, _, file in group]
        bad = next(((file, res) for (_, _, file), res in zip(group, checked) if res.kind), None)
        if bad is None and len(group) > 1 and not _copies_identical(group, checked):
            errors.add(
                None,
                f"{rel} is in several label folders "
                f"({', '.join(folder + '/' for _, folder, _ in group)}) but the files "
                "differ. Copies of one image must be identical (that is how an image gets "
                "several labels); if these are different images, rename one.",
            )
            continue
        metadata: dict[str, Any] = {}
        if len(group) > 1:
            metadata["copies"] = [file.relative_to(root).as_posix() for _, _, file in group]
        where_file = bad[0] if bad is not None else first
        records.append(
            _Record(
                file=str(where_file),
                line=None,
                where=str(where_file),
                image_id=rel,
                uri=str(first),
                local_path=str(first),
                labels=frozenset(label for label, _, _ in group if label is not None),
                split=None,
                metadata=metadata,
                source=str(first),
            )
        )
        inspections.append(bad[1] if bad is not None else checked[0])
    return records, inspections


def _walk_files(folder: Path) -> list[Path]:
    """Files under ``folder``, sorted, skipping hidden files and folders."""
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(Path(dirpath, f) for f in sorted(filenames) if not f.startswith("."))
    return found


def _copies_identical(group, checked) -> bool:
    hashes = {res.content_hash for res in checked}
    if None not in hashes:
        return len(hashes) == 1
    # Not hashing: compare the bytes directly (only the rare duplicated names pay this).
    first = group[0][2]
    return all(filecmp.cmp(first, file, shallow=False) for _, _, file in group[1:])
