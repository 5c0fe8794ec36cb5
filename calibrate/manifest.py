"""Labeled image sets, and tables of precomputed scores.

A labeled image set lists images (a path or URI each) with the labels truly present.
Every image gets a stable id and a content hash so that runs can resume and stores can
tell when the data under a name changed.

:func:`read_manifest` reads the four layouts people already have:

* **JSONL** (``.jsonl``, ``.ndjson``): one object per line, e.g.
  ``{"id": "part-1", "image": "images/part-1.png", "labels": ["scratch"], "split": "test"}``.
* **CSV** (``.csv``): columns ``image``, ``labels`` (``;``- or ``|``-separated), optional
  ``id`` and ``split``.
* **COCO** (``.json``): an annotation file; an image's labels are the categories of its
  annotations, an image without annotations is clean.
* **Folder per label**: ``root/<label>/<name>.png`` (or ``.jpg``/``.jpeg``), with
  ``root/_clean/`` (or ``root/negative/``) for images with no label.

Reading separates two kinds of trouble. A *structural* error (malformed line, missing
column, duplicate id, unknown label, no images at all) makes the set meaningless, so it
raises :class:`~calibrate.errors.InputError` naming the file and line. A *bad image*
(missing, zero-byte, truncated or undecodable file) is a fact about one image, so it is
recorded as a :class:`Problem` and the rest of the set is read: the runner records each
problem as a failure of that image, and nothing is dropped silently.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import io
import json
import os
import posixpath
import re
import stat
import warnings
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from calibrate.errors import CalibrateWarning, InputError

__all__ = [
    "LabeledImage",
    "LabeledSet",
    "Problem",
    "REMOTE_SCHEMES",
    "SCORES_TABLE_COLUMNS",
    "dataset_fingerprint",
    "read_manifest",
    "read_scores_table",
]

#: URI schemes kept as remote references: never opened, hashed or verified here (the
#: detector adapters fetch them, and a failed fetch is recorded by the runner).
REMOTE_SCHEMES = ("s3", "oss", "gs", "http", "https")

#: Image files picked up in a folder-per-label layout (what the cloud detectors accept).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

#: Folder names holding images with no label in a folder-per-label layout.
CLEAN_FOLDERS = ("_clean", "negative")

# Kinds of Problem, i.e. the "error kind" the runner stores for the image's failure.
MISSING = "missing"
NOT_A_FILE = "not_a_file"
EMPTY = "empty"
UNREADABLE = "unreadable"
CORRUPT = "corrupt"

_HASH_CHUNK = 1 << 20  # 1 MiB: large enough that per-call overhead vanishes
_MAX_LISTED_ERRORS = 20  # a message with thousands of lines helps nobody
_FINGERPRINT_VERSION = "calibrate-dataset-fingerprint-v1"


@dataclass(frozen=True)
class LabeledImage:
    """One image of a labeled set.

    Attributes
    ----------
    image_id : str
        Stable id, unique within the set (from the manifest, or the relative path).
    uri : str
        Local path (absolute) or a remote URI such as ``s3://bucket/key`` or
        ``oss://bucket/key``.
    labels : frozenset of str
        Labels truly present in the image (ground truth); empty for a clean image.
    content_hash : str or None
        ``sha256:<hex>`` of the file's bytes, when the file is local.
    split : str or None
        Optional split name ("calibration", "test", ...).
    metadata : dict
        Any further manifest columns: strings from a CSV, JSON values as written from
        JSONL or COCO.
    source : str
        Where the record came from, ``"file:line"``, for error messages.
    """

    image_id: str
    uri: str
    labels: frozenset[str] = frozenset()
    content_hash: str | None = None
    split: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    source: str = ""

    @property
    def is_local(self) -> bool:
        """True when :attr:`uri` is a path on this machine."""
        return "://" not in self.uri or self.uri.startswith("file://")

    @property
    def path(self) -> Path:
        """The local path; raises :class:`InputError` for a remote URI."""
        if not self.is_local:
            raise InputError(f"image {self.image_id!r} is remote ({self.uri}); no local path.")
        return Path(self.uri.removeprefix("file://"))

    def read_bytes(self) -> bytes:
        """The file's bytes as stored (no decoding, no re-encoding)."""
        try:
            return self.path.read_bytes()
        except OSError as exc:
            raise InputError(
                f"image {self.image_id!r} ({self.source or self.uri}): cannot read "
                f"{self.uri}: {exc.strerror or exc}."
            ) from None

    def open(self):
        """Decode the image with Pillow, EXIF orientation applied (as the cloud APIs do).

        Returns
        -------
        PIL.Image.Image
            In RGB mode.
        """
        from PIL import Image, ImageOps, UnidentifiedImageError

        data = self.read_bytes()
        try:
            img = Image.open(io.BytesIO(data))
            img.load()
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise InputError(
                f"image {self.image_id!r} ({self.source or self.uri}) is not a readable "
                f"image ({exc}). Replace or remove the file."
            ) from None
        return ImageOps.exif_transpose(img).convert("RGB")

    def to_array(self):
        """The decoded, EXIF-oriented image as a ``uint8`` array of shape (h, w, 3)."""
        import numpy as np

        return np.asarray(self.open())


@dataclass(frozen=True)
class Problem:
    """An image named by a manifest that could not be used.

    Problems do not stop reading: the image is left out of :attr:`LabeledSet.images`
    and kept here, so a run records it as a failure of that image instead of the set
    silently shrinking.

    Attributes
    ----------
    file : str
        The manifest file; in a folder-per-label layout, the image file itself.
    line : int or None
        1-based line of the record in ``file``; None where lines mean nothing (COCO
        JSON, folder layouts), and then :attr:`message` says where instead.
    image_id : str
        The image's id, as it would have been in the set.
    kind : str
        ``"missing"`` (no such file), ``"not_a_file"`` (a directory or device),
        ``"empty"`` (zero bytes), ``"unreadable"`` (the OS refused to read it) or
        ``"corrupt"`` (not a complete image: truncated, damaged, or not an image).
    message : str
        What is wrong and what to do, naming the file and line.
    image : LabeledImage or None
        The record as read (labels, split, URI), so the image and its failure can be
        stored; ``content_hash`` is set only if the bytes could be read.
    """

    file: str
    line: int | None
    image_id: str
    kind: str
    message: str
    image: LabeledImage | None = field(default=None, compare=False)

    @property
    def location(self) -> str:
        """``"file:line"``, or just the file when there is no line."""
        return f"{self.file}:{self.line}" if self.line is not None else self.file

    def __str__(self) -> str:
        return self.message


def dataset_fingerprint(images: Iterable[LabeledImage]) -> str:
    """A digest that identifies a labeled set's content, wherever and however it is stored.

    The digest covers, for every image, its id, its content (``content_hash``; the URI
    for a remote image) and its labels. Images are sorted first, so the order of the
    manifest does not matter; absolute paths are not included, so the same set copied to
    another machine or folder has the same fingerprint. Splits and metadata are not
    included: they do not change what a detector is asked or what the truth is.

    Parameters
    ----------
    images : iterable of LabeledImage
        Usually :attr:`LabeledSet.images`.

    Returns
    -------
    str
        ``"sha256:<64 hex digits>"``.

    Notes
    -----
    A local image read with ``hash_images=False`` has no content hash; it contributes
    ``"local:unhashed"`` rather than its absolute path, which would differ between
    machines. Such a fingerprint still changes with ids and labels, but not with the
    files' bytes.
    """
    rows = []
    for img in images:
        if img.content_hash:
            content = img.content_hash
        elif not img.is_local:
            content = img.uri
        else:
            content = "local:unhashed"
        rows.append((img.image_id, content, sorted(img.labels)))
    rows.sort()
    digest = hashlib.sha256(_FINGERPRINT_VERSION.encode("ascii"))
    for row in rows:
        # One JSON array per row: quoting makes the encoding unambiguous (no id can
        # imitate a separator), and JSON escapes newlines, so "\n" separates rows.
        digest.update(b"\n")
        digest.update(json.dumps(row, ensure_ascii=False, separators=(",", ":")).encode())
    return "sha256:" + digest.hexdigest()


@dataclass(repr=False, eq=False)
class LabeledSet:
    """A labeled image set as read by :func:`read_manifest`.

    Attributes
    ----------
    name : str
        Short name for reports: the manifest's file stem (its folder's name when the
        file is called ``manifest``), or the folder's name for a folder-per-label set.
    source : str
        Absolute path of the manifest file or folder.
    images : list of LabeledImage
        The usable images, in manifest order.
    labels : tuple of str
        Every label of the set, sorted: the ``labels=`` vocabulary when one was given,
        else the declared vocabulary (COCO categories, label folders, even when they have
        no image) plus every label an image carries.
    problems : list of Problem
        Images that could not be used; not in :attr:`images`.
    """

    name: str
    source: str
    images: list[LabeledImage]
    labels: tuple[str, ...] = ()
    problems: list[Problem] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.source = os.fspath(self.source)
        self.images = list(self.images)
        self.problems = list(self.problems)
        vocabulary = set(self.labels)
        for img in self.images:
            vocabulary.update(img.labels)
        for problem in self.problems:
            if problem.image is not None:
                vocabulary.update(problem.image.labels)
        self.labels = tuple(sorted(vocabulary))

    @property
    def fingerprint(self) -> str:
        """:func:`dataset_fingerprint` of :attr:`images` (problems are not included)."""
        return dataset_fingerprint(self.images)

    @property
    def splits(self) -> tuple[str, ...]:
        """The split names used by the set's images (problems included), sorted."""
        names = {img.split for img in self.images}
        names.update(p.image.split for p in self.problems if p.image is not None)
        return tuple(sorted(s for s in names if s is not None))

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[LabeledImage]:
        return iter(self.images)

    def __repr__(self) -> str:
        return (
            f"LabeledSet(name={self.name!r}, images={len(self.images)}, "
            f"problems={len(self.problems)}, labels={self.labels!r})"
        )

    def filter(self, *, split: str | Iterable[str]) -> LabeledSet:
        """The images (and problems) of one or more splits, as a new set.

        Parameters
        ----------
        split : str or iterable of str
            Split name(s) to keep, e.g. ``"calibration"``.

        Returns
        -------
        LabeledSet
            Same name, source and label vocabulary; its own fingerprint.

        Raises
        ------
        InputError
            If a requested split is used by no image (a typo would otherwise give an
            empty set and a confusing error much later).
        """
        wanted = {split} if isinstance(split, str) else set(split)
        if not wanted or not all(isinstance(s, str) for s in wanted):
            raise InputError(f"split must be a split name or a list of them, got {split!r}.")
        present = self.splits
        unknown = sorted(wanted.difference(present))
        if unknown:
            raise InputError(
                f"{self.source}: no image has split {', '.join(map(repr, unknown))}; the "
                f"splits present are {', '.join(map(repr, present)) or 'none'}."
            )
        return LabeledSet(
            name=self.name,
            source=self.source,
            images=[img for img in self.images if img.split in wanted],
            labels=self.labels,
            problems=[
                p for p in self.problems if p.image is not None and p.image.split in wanted
            ],
        )


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------


def read_manifest(
    path,
    *,
    labels: Iterable[str] | None = None,
    base_dir=None,
    hash_images: bool = True,
    decode_images: bool = False,
) -> LabeledSet:
    """Read a labeled image set from a manifest file or a folder-per-label directory.

    Parameters
    ----------
    path : str or Path
        One of

        * ``*.jsonl`` / ``*.ndjson``: one JSON object per line. Keys: ``image`` (path or
          URI, required), ``labels`` (list of strings, required; ``[]`` for a clean
          image), ``id`` (string or integer, optional), ``split`` (optional). Other keys
          are kept in ``metadata`` as written. Blank lines are skipped.
        * ``*.csv``: UTF-8, comma-separated, with a header row. Columns ``image`` and
          ``labels`` (required; labels separated by ``;`` or ``|``, empty cell = clean),
          ``id`` and ``split`` (optional; empty cell = none). Other columns are kept in
          ``metadata`` as strings.
        * ``*.json``: a COCO annotation file (``images``, ``annotations``,
          ``categories``). An image's labels are the names of the categories of its
          annotations; an image without annotations is clean. The image id is its
          ``file_name`` (see Notes); the COCO id is kept as ``metadata["coco_id"]``.
        * a directory with one sub-folder per label, ``root/<label>/.../<name>.png``
          (``.jpg``, ``.jpeg``), and ``root/_clean/`` or ``root/negative/`` for images
          with no label. See Notes for an image in several folders.
    labels : iterable of str, optional
        The allowed label names. Any other label in the manifest is an error (typos in
        ground truth are otherwise silent), and the set's :attr:`~LabeledSet.labels`
        is this vocabulary, so a label with no positive image still gets reported.
    base_dir : str or Path, optional
        Folder that relative image paths are resolved against, and that ids are made
        relative to. Default: the manifest's folder. Not allowed for a directory.
    hash_images : bool, default True
        Read every local image: compute ``content_hash`` (``"sha256:<hex>"`` of the
        bytes) and check that it is a complete image (see Notes). With False, local
        files are only checked to exist and be non-empty (no bytes read),
        ``content_hash`` is None and the fingerprint no longer covers the files' bytes.
    decode_images : bool, default False
        Also decode every image (JPEG at 1/8 scale), which catches some damage inside
        JPEG scan data that the default check cannot see, at ~15x its cost (about
        30 ms per 12-megapixel JPEG). Needs ``hash_images=True``.

    Returns
    -------
    LabeledSet
        Usable images in :attr:`~LabeledSet.images`; images that could not be used in
        :attr:`~LabeledSet.problems`.

    Raises
    ------
    InputError
        On a structural error, with file, line and the fix: unreadable manifest,
        malformed line, missing ``image``/``labels`` key or column, ``labels`` not a
        list, duplicate ids (naming both lines), an unknown label when ``labels=`` is
        given, an unsupported URI scheme, a set with no images, or a set in which no
        image at all is usable (almost always a wrong ``base_dir``). All structural
        errors of a file are reported together (up to 20).

    Notes
    -----
    **Bad images do not abort reading.** A missing, zero-byte, unreadable or
    undecodable local file becomes a :class:`Problem` (with file, line and kind) and is
    *excluded* from ``images``; the runner records each problem as a failure of that
    image, so it is counted and reported, never silently dropped. The default check
    costs about as much as hashing: Pillow must recognise the file and parse its
    headers; a PNG's chunk checksums must all match (``Image.verify``, so truncation
    and any damaged byte are caught); a JPEG must have its end-of-image marker after
    the scan data (truncation is caught; damage inside the scan data is not, unless
    ``decode_images=True``); other formats are decoded. Files are inspected on a
    thread pool: file reads, hashlib and Pillow's decoders release the GIL.

    **Ids.** The manifest's ``id`` when given; otherwise the image path as written,
    relative to the manifest's folder (or ``base_dir``), normalised, with forward
    slashes (``./a/../b.png`` is ``b.png``). An absolute path inside that folder is made
    relative to it; an absolute path elsewhere is its own id, and a remote URI is its
    own id -- give such images an ``id`` if the set may move or URLs are signed.

    **Remote images** (``s3://``, ``oss://``, ``gs://``, ``http(s)://``) are kept as
    URIs and not fetched, hashed or checked here; the detector fetches them and a
    failed fetch is a per-image failure of the run. ``file://`` URIs are local paths.

    **Folder per label.** An image's id is its path inside its label folder, so
    ``scratch/p1.png`` and ``dent/p1.png`` are the *same* image ``p1.png`` carrying both
    labels. Folder layouts cannot otherwise express several labels per image, and
    copying the file into each folder is how people do it. The copies must be
    identical (compared by content), else reading fails: two different images sharing
    a name would otherwise get each other's labels -- rename one. An image in a clean
    folder and in a label folder is an error. Files that are not PNG/JPEG, or that lie
    directly in the root, are ignored with a :class:`~calibrate.errors.CalibrateWarning`
    naming them; hidden files and folders (``.name``) are ignored silently.

    Examples
    --------
    >>> from calibrate.manifest import read_manifest
    >>> parts = read_manifest("parts/manifest.jsonl")  # doctest: +SKIP
    >>> calibration = parts.filter(split="calibration")  # doctest: +SKIP
    >>> for p in parts.problems:  # doctest: +SKIP
    ...     print(p.kind, p.location)
    """
    if path is None:
        raise InputError("path is required: a .jsonl, .csv or COCO .json file, or a folder.")
    manifest = Path(os.path.abspath(os.fspath(path)))
    allowed = _allowed_labels(labels)
    for flag, value in (("hash_images", hash_images), ("decode_images", decode_images)):
        if not isinstance(value, bool):
            raise InputError(f"{flag} must be True or False, got {value!r}.")
    if decode_images and not hash_images:
        raise InputError(
            "decode_images=True reads every image, which hash_images=False asks not to "
            "do; drop one of them."
        )

    if manifest.is_dir():
        if base_dir is not None:
            raise InputError(
                f"{manifest} is a folder-per-label directory, which is its own root; "
                "base_dir only applies to manifest files. Drop base_dir."
            )
        return _read_directory(manifest, allowed, hash_images, decode_images)
    if not manifest.exists():
        raise InputError(
            f"{manifest}: no such file or directory. Give a .jsonl, .csv or COCO .json "
            "manifest, or a folder with one sub-folder per label."
        )

    if base_dir is None:
        root = manifest.parent
    else:
        root = Path(os.path.abspath(os.fspath(base_dir)))
        if not root.is_dir():
            raise InputError(
                f"base_dir {root} is not a directory; give the folder that the "
                f"manifest's relative image paths start from."
            )

    suffix = manifest.suffix.lower()
    errors = _Errors(str(manifest))
    check = _LabelCheck(allowed)
    if suffix in (".jsonl", ".ndjson"):
        records = _parse_jsonl(manifest, root, errors, check)
        vocabulary: set[str] = set()
        example = '{"image": "images/a.png", "labels": ["scratch"]}'
    elif suffix == ".csv":
        records = _parse_csv(manifest, root, errors, check)
        vocabulary = set()
        example = "a row such as: images/a.png,scratch"
    elif suffix == ".json":
        records, vocabulary = _parse_coco(manifest, root, errors, check)
        example = 'an entry in "images"'
    else:
        raise InputError(
            f"{manifest}: cannot tell the manifest format from the suffix {suffix!r}. "
            "Use .jsonl (one JSON object per line), .csv, a COCO annotation .json, or a "
            "folder with one sub-folder per label."
        )
    check.report(errors, "Correct the label, or add it to labels= if it is a real label.")
    _check_unique_ids(records, errors)
    errors.raise_if_any()
    if not records:
        raise InputError(f"{manifest}: the manifest lists no images; add {example}.")

    inspections = _inspect_all([r.local_path for r in records], hash_images, decode_images)
    return _assemble(
        records,
        inspections,
        name=_set_name(manifest),
        source=str(manifest),
        vocabulary=allowed if allowed is not None else vocabulary,
        root=root,
    )


def _set_name(manifest: Path) -> str:
    # "parts/manifest.jsonl" is better called "parts" than "manifest" in a report.
    if manifest.stem.lower() == "manifest" and manifest.parent.name:
        return manifest.parent.name
    return manifest.stem


def _allowed_labels(labels) -> frozenset[str] | None:
    if labels is None:
        return None
    if isinstance(labels, str):
        raise InputError(
            f"labels must be a list of label names, got the string {labels!r}; "
            f"write labels=[{labels!r}]."
        )
    try:
        allowed = list(labels)
    except TypeError:
        raise InputError(f"labels must be a list of label names, got {labels!r}.") from None
    bad = [lab for lab in allowed if not isinstance(lab, str) or not lab.strip()]
    if bad:
        raise InputError(f"labels must be non-empty strings; got {bad[0]!r} in labels=.")
    if not allowed:
        raise InputError("labels= is empty; give the label names the manifest may use.")
    return frozenset(lab.strip() for lab in allowed)


# ---------------------------------------------------------------------------------------
# Structural errors: collected per file, raised together
# ---------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------
# Records: what every format parses into before the images are inspected
# ---------------------------------------------------------------------------------------


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
    return InputError(
        f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start} of a read block). "
        "Save the manifest as UTF-8."
    )


# ---- JSONL -----------------------------------------------------------------------------

_JSONL_EXAMPLE = '{"image": "images/a.png", "labels": ["scratch"]}'


def _parse_jsonl(path: Path, root: Path, errors: _Errors, check: _LabelCheck) -> list[_Record]:
    records: list[_Record] = []
    file = str(path)
    with _read_text_lines(path) as fh:
        try:
            for lineno, raw in enumerate(fh, 1):
                text = raw.strip()
                if not text:
                    continue
                rec = _jsonl_record(text, lineno, file, root, errors, check)
                if rec is not None:
                    records.append(rec)
        except UnicodeDecodeError as exc:
            raise _not_utf8(path, exc) from None
    return records


def _jsonl_record(
    text: str, lineno: int, file: str, root: Path, errors: _Errors, check: _LabelCheck
) -> _Record | None:
    where = f"line {lineno}"
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        errors.add(
            where,
            f"not valid JSON ({exc.msg} at column {exc.colno}). Each line must be one "
            f"JSON object, such as {_JSONL_EXAMPLE}.",
        )
        return None
    if not isinstance(obj, dict):
        errors.add(
            where,
            f"expected a JSON object, got {type(obj).__name__}. Each line must be one "
            f"JSON object, such as {_JSONL_EXAMPLE}.",
        )
        return None
    ok = True

    image = obj.get("image")
    if "image" not in obj:
        errors.add(
            where,
            f'no "image" key (keys: {sorted(obj)}). Every line needs the image\'s path '
            f"or URI, such as {_JSONL_EXAMPLE}.",
        )
        ok = False
    elif not isinstance(image, str) or not image.strip():
        errors.add(where, f'"image" must be a non-empty path or URI string, got {image!r}.')
        ok = False

    labels: list[str] = []
    if "labels" not in obj:
        # Required, not defaulted to clean: a forgotten key would silently turn defects
        # into good parts in the ground truth.
        errors.add(
            where,
            'no "labels" key. List the labels present in the image, or write '
            '"labels": [] for an image with none.',
        )
        ok = False
    else:
        value = obj["labels"]
        if isinstance(value, str):
            errors.add(
                where,
                f'"labels" must be a list of strings, got the string {value!r}; write '
                f'"labels": [{json.dumps(value)}] (or [] for an image with no label).',
            )
            ok = False
        elif not isinstance(value, list):
            errors.add(
                where,
                f'"labels" must be a list of strings, got {json.dumps(value)}; write '
                '"labels": [] for an image with no label.',
            )
            ok = False
        else:
            bad = [v for v in value if not isinstance(v, str) or not v.strip()]
            if bad:
                errors.add(
                    where,
                    f'"labels" must hold non-empty strings, got {json.dumps(bad[0])}.',
                )
                ok = False
            labels = [v.strip() for v in value if isinstance(v, str) and v.strip()]

    explicit_id = obj.get("id")
    if explicit_id is not None:
        if isinstance(explicit_id, int) and not isinstance(explicit_id, bool):
            explicit_id = str(explicit_id)
        elif not isinstance(explicit_id, str) or not explicit_id.strip():
            errors.add(
                where, f'"id" must be a non-empty string or an integer, got {explicit_id!r}.'
            )
            ok = False

    split = obj.get("split")
    if split is not None and (not isinstance(split, str) or not split.strip()):
        errors.add(where, f'"split" must be a non-empty string or null, got {split!r}.')
        ok = False

    check.check(where, labels)
    if not ok:
        return None
    metadata = {k: v for k, v in obj.items() if k not in ("image", "id", "labels", "split")}
    return _new_record(
        errors,
        file=file,
        line=lineno,
        where=where,
        image=image,
        explicit_id=explicit_id,
        labels=labels,
        split=split,
        metadata=metadata,
        root=root,
    )


# ---- CSV -------------------------------------------------------------------------------

_LABEL_SEPARATORS = re.compile(r"[;|]")
_CSV_RESERVED = ("image", "id", "labels", "split")


def _parse_csv(path: Path, root: Path, errors: _Errors, check: _LabelCheck) -> list[_Record]:
    records: list[_Record] = []
    file = str(path)
    with _read_text_lines(path) as fh:
        try:
            reader = csv.reader(fh)
            header: list[str] | None = None
            end_of_previous = 0
            for row in reader:
                # reader.line_num is the last physical line of the row (a quoted cell
                # may span lines); the row starts right after the previous one ended.
                start, end_of_previous = end_of_previous + 1, reader.line_num
                if not row or all(not cell.strip() for cell in row):
                    continue
                if header is None:
                    header = [cell.strip() for cell in row]
                    columns = _csv_columns(header, start, errors)
                    if columns is None:
                        return records
                    continue
                rec = _csv_record(row, header, columns, start, file, root, errors, check)
                if rec is not None:
                    records.append(rec)
        except UnicodeDecodeError as exc:
            raise _not_utf8(path, exc) from None
        except csv.Error as exc:
            raise InputError(f"{path}, line {reader.line_num}: not valid CSV ({exc}).") from None
    return records


def _csv_columns(header: list[str], line: int, errors: _Errors) -> dict[str, int] | None:
    where = f"line {line} (header)"
    lowered = [h.lower() for h in header]
    duplicated = sorted({h for h in lowered if lowered.count(h) > 1})
    if duplicated:
        errors.add(where, f"column(s) {duplicated} appear more than once; rename them.")
        return None
    missing = [c for c in ("image", "labels") if c not in lowered]
    if missing:
        hint = ""
        if len(header) == 1 and (";" in header[0] or "\t" in header[0]):
            hint = " The file looks semicolon- or tab-separated; save it comma-separated."
        errors.add(
            where,
            f"no {' or '.join(repr(c) for c in missing)} column (columns: {header}). "
            "The header needs 'image' (path or URI) and 'labels' (separated by ';' or "
            f"'|', empty for an image with no label); 'id' and 'split' are optional.{hint}",
        )
        return None
    return {name: lowered.index(name) for name in _CSV_RESERVED if name in lowered}


def _csv_record(
    row: list[str],
    header: list[str],
    columns: dict[str, int],
    line: int,
    file: str,
    root: Path,
    errors: _Errors,
    check: _LabelCheck,
) -> _Record | None:
    where = f"line {line}"
    if len(row) != len(header):
        errors.add(
            where,
            f"{len(row)} cells but the header has {len(header)} columns. Quote cells "
            'that contain commas ("a,b").',
        )
        return None
    image = row[columns["image"]].strip()
    if not image:
        errors.add(where, "the 'image' cell is empty; give the image's path or URI.")
        return None
    labels = [
        lab.strip() for lab in _LABEL_SEPARATORS.split(row[columns["labels"]]) if lab.strip()
    ]
    check.check(where, labels)
    explicit_id = (row[columns["id"]].strip() or None) if "id" in columns else None
    split = (row[columns["split"]].strip() or None) if "split" in columns else None
    reserved = set(columns.values())
    metadata = {name: row[i] for i, name in enumerate(header) if i not in reserved}
    return _new_record(
        errors,
        file=file,
        line=line,
        where=where,
        image=image,
        explicit_id=explicit_id,
        labels=labels,
        split=split,
        metadata=metadata,
        root=root,
    )


# ---- COCO ------------------------------------------------------------------------------


def _parse_coco(
    path: Path, root: Path, errors: _Errors, check: _LabelCheck
) -> tuple[list[_Record], set[str]]:
    file = str(path)
    try:
        with open(path, "rb") as fh:
            data = json.loads(fh.read().decode("utf-8-sig"))
    except OSError as exc:
        raise InputError(f"{path}: cannot read the manifest ({exc.strerror or exc}).") from None
    except UnicodeDecodeError as exc:
        raise _not_utf8(path, exc) from None
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path}, line {exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})."
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise InputError(
            f"{path}: a .json manifest must be a COCO annotation file, an object with "
            '"images", "annotations" and "categories" lists. For one JSON object per '
            "image, name the file .jsonl."
        )
    if "annotations" not in data:
        # A COCO file without annotations (like image_info_test) carries no ground
        # truth; reading every image as clean would be silently wrong.
        raise InputError(
            f'{path}: no "annotations" list, so there is no ground truth. Add '
            '"annotations": [] if every image really has no label.'
        )
    for key in ("annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise InputError(f'{path}: "{key}" must be a list, got {type(data.get(key)).__name__}.')

    category_names: dict[Any, str] = {}
    for i, cat in enumerate(data["categories"]):
        where = f"categories[{i}]"
        if not isinstance(cat, dict) or not _is_coco_id(cat.get("id")):
            errors.add(where, 'each category needs an "id" (integer or string) and a "name".')
            continue
        name = cat.get("name")
        if not isinstance(name, str) or not name.strip():
            errors.add(where, f'"name" must be a non-empty string, got {name!r}.')
            continue
        if cat["id"] in category_names:
            errors.add(where, f"category id {cat['id']!r} is used twice; ids must be unique.")
            continue
        category_names[cat["id"]] = name.strip()

    entries: dict[Any, tuple[int, dict]] = {}
    for i, img in enumerate(data["images"]):
        where = f"images[{i}]"
        if not isinstance(img, dict) or not _is_coco_id(img.get("id")):
            errors.add(where, 'each image needs an "id" (integer or string) and a "file_name".')
            continue
        file_name = img.get("file_name")
        if not isinstance(file_name, str) or not file_name.strip():
            errors.add(where, f'"file_name" must be a non-empty path or URI, got {file_name!r}.')
            continue
        if img["id"] in entries:
            first = entries[img["id"]][0]
            errors.add(
                where,
                f"COCO image id {img['id']!r}: first on images[{first}], again on {where}; "
                "annotations could not tell them apart. Give each image its own id.",
            )
            continue
        entries[img["id"]] = (i, img)

    labels_of: dict[Any, set[str]] = {key: set() for key in entries}
    for j, ann in enumerate(data["annotations"]):
        where = f"annotations[{j}]"
        if not (
            isinstance(ann, dict)
            and _is_coco_id(ann.get("image_id"))
            and _is_coco_id(ann.get("category_id"))
        ):
            errors.add(where, 'each annotation needs an "image_id" and a "category_id".')
            continue
        if ann["category_id"] not in category_names:
            errors.add(
                where,
                f"category_id {ann['category_id']!r} is not in \"categories\"; add the "
                "category or fix the annotation.",
            )
            continue
        if ann["image_id"] not in labels_of:
            errors.add(
                where,
                f"image_id {ann['image_id']!r} is not in \"images\"; add the image or "
                "remove the annotation.",
            )
            continue
        name = category_names[ann["category_id"]]
        check.check(f"{where} (category {name!r})", [name])
        labels_of[ann["image_id"]].add(name)

    records: list[_Record] = []
    for key, (i, img) in entries.items():
        where = f"images[{i}]"
        split = img.get("split")
        if split is not None and (not isinstance(split, str) or not split.strip()):
            errors.add(where, f'"split" must be a non-empty string, got {split!r}.')
            continue
        metadata = {"coco_id": img["id"]}
        metadata.update(
            (k, v) for k, v in img.items() if k not in ("id", "file_name", "split")
        )
        # The id is the file name, not the COCO id: annotation tools renumber COCO ids
        # on every export, and the id must stay stable for resumed runs and stores.
        rec = _new_record(
            errors,
            file=file,
            line=None,
            where=where,
            image=img["file_name"].strip(),
            explicit_id=None,
            labels=labels_of[key],
            split=split,
            metadata=metadata,
            root=root,
        )
        if rec is not None:
            records.append(rec)
    return records, set(category_names.values())


def _is_coco_id(value) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)


# ---- folder per label ------------------------------------------------------------------


def _read_directory(
    root: Path, allowed: frozenset[str] | None, hash_images: bool, decode: bool
) -> LabeledSet:
    errors = _Errors(str(root))
    check = _LabelCheck(allowed)
    ignored: list[Path] = []
    vocabulary: set[str] = set()
    # relative name -> [(label or None for clean, folder name, file)]
    copies: dict[str, list[tuple[str | None, str, Path]]] = {}
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
    check.report(errors, "Rename the folder, or add its name to labels= if it is a real label.")

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
    errors.raise_if_any()

    if ignored:
        shown = ", ".join(str(p.relative_to(root)) for p in ignored[:5])
        more = f" and {len(ignored) - 5} more" if len(ignored) > 5 else ""
        warnings.warn(
            f"{root}: ignored {len(ignored)} file(s) that are not PNG/JPEG images inside a "
            f"label folder: {shown}{more}. Images go in {root.name}/<label>/ or "
            f"{root.name}/{CLEAN_FOLDERS[0]}/.",
            CalibrateWarning,
            stacklevel=3,
        )
    if not copies:
        raise InputError(
            f"{root}: no images found. A folder-per-label set holds "
            f"<label>/<name>{'|'.join(IMAGE_SUFFIXES)} files, and {CLEAN_FOLDERS[0]}/ "
            "(or negative/) for images with no label."
        )

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
    errors.raise_if_any()
    return _assemble(
        records,
        inspections,
        name=root.name,
        source=str(root),
        vocabulary=allowed if allowed is not None else vocabulary,
        root=root,
    )


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
    import filecmp

    # Not hashing: compare the bytes directly (only the rare duplicated names pay this).
    first = group[0][2]
    return all(filecmp.cmp(first, file, shallow=False) for _, _, file in group[1:])


# ---------------------------------------------------------------------------------------
# Inspecting image files
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Inspection:
    content_hash: str | None = None
    kind: str | None = None  # a Problem kind, None when the file is usable
    detail: str = ""


_REMOTE = _Inspection()


def _inspect_all(
    paths: list[str | None], hash_images: bool, decode: bool = False
) -> list[_Inspection]:
    """Inspect local files (None = remote, not inspected), keeping the order."""
    local = [p for p in paths if p is not None]
    if len(local) < 8:
        done = [_inspect(p, hash_images, decode) for p in local]
    else:
        # Threads, not processes: reads, hashlib (on large buffers) and Pillow's
        # decoders all release the GIL, and nothing needs pickling.
        workers = min(32, (os.cpu_count() or 1) + 4, len(local))
        with ThreadPoolExecutor(workers, thread_name_prefix="calibrate-inspect") as pool:
            done = list(
                pool.map(_inspect, local, repeat(hash_images), repeat(decode), chunksize=16)
            )
    it = iter(done)
    return [_REMOTE if p is None else next(it) for p in paths]


def _inspect(path: str, hash_images: bool, decode: bool = False) -> _Inspection:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return _Inspection(kind=MISSING, detail="does not exist")
    except OSError as exc:
        return _Inspection(kind=UNREADABLE, detail=f"cannot be read ({exc.strerror or exc})")
    if not stat.S_ISREG(st.st_mode):
        return _Inspection(kind=NOT_A_FILE, detail="is not a regular file (a folder?)")
    if st.st_size == 0:
        return _Inspection(kind=EMPTY, detail="is a zero-byte file (an interrupted copy?)")
    if not hash_images:
        return _Inspection()
    try:
        digest = _sha256_file(path)
    except OSError as exc:
        return _Inspection(kind=UNREADABLE, detail=f"cannot be read ({exc.strerror or exc})")
    trouble = _image_trouble(path, decode)
    if trouble:
        return _Inspection(
            content_hash=digest,
            kind=CORRUPT,
            detail=f"is not a readable image ({trouble}); it may be truncated or damaged",
        )
    return _Inspection(content_hash=digest)


def _sha256_file(path: str) -> str:
    """``sha256:<hex>`` of a file, read in 1 MiB chunks into one reused buffer."""
    digest = hashlib.sha256()
    buffer = bytearray(_HASH_CHUNK)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as fh:
        while n := fh.readinto(buffer):
            digest.update(view[:n])
    return "sha256:" + digest.hexdigest()


def _image_trouble(path: str, decode: bool) -> str | None:
    """Why the file is not a usable image, or None.

    The quick check (default) reads headers with Pillow, then checks PNG chunk
    checksums (``verify``, no inflating) or walks a JPEG's markers and requires an
    end-of-image marker after the scan data: this catches non-images, damaged headers,
    truncation and damaged PNG bytes at about the cost of hashing. Decoding (1/8 scale
    for JPEG) also catches some damage inside JPEG scan data, but costs ~15x more.
    """
    from PIL import Image

    try:
        with Image.open(path) as img:
            fmt = img.format
            if decode or fmt not in ("PNG", "JPEG", "MPO"):
                if fmt in ("JPEG", "MPO"):
                    # 1/8 scale skips most of the inverse DCT but still entropy-decodes
                    # every byte, so damaged or missing data is still seen.
                    img.draft(None, (max(1, img.width // 8), max(1, img.height // 8)))
                img.load()
                return None
            if fmt == "PNG":
                img.verify()
                return None
    except Exception as exc:  # noqa: BLE001 - any decoder failure means "not usable"
        return f"{type(exc).__name__}: {exc}"
    # JPEG, and MPO (how Pillow names the JPEGs of many phone cameras).
    try:
        return _jpeg_end_trouble(path)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"


def _jpeg_end_trouble(path: str) -> str | None:
    """None if the JPEG has an end-of-image marker after its first scan, else why not.

    A naive "ends with FF D9" test is wrong both ways: phones append data after the
    image (motion photos), and an EXIF thumbnail holds its own FF D9 before the main
    image. So walk the marker segments up to the first start-of-scan (SOS), then look
    for FF D9 after it: in scan data every FF byte is stuffed (FF 00) or a restart
    marker, so the first FF D9 there is the image's real end.
    """
    with open(path, "rb") as fh:
        data = fh.read()
    n, pos = len(data), 2
    if data[:2] != b"\xff\xd8":
        return "no JPEG start-of-image marker"
    while True:
        if pos + 4 > n:
            return "truncated before the image data"
        if data[pos] != 0xFF:
            return f"damaged marker structure at byte {pos}"
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            pos += 2
            continue
        if marker == 0xD9:
            return "the image ends before any image data"
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            break
    # Searching from the end finds the marker at once in a complete file; any FF D9
    # after the scan start proves the scan data is complete, since data appended after
    # the image (and so any FF D9 in it) exists only if the image ended first.
    if data.rfind(b"\xff\xd9", pos) < 0:
        return "truncated: no end-of-image marker after the image data"
    return None


# ---------------------------------------------------------------------------------------
# Assembling the set
# ---------------------------------------------------------------------------------------


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
            continue
        in_folder_layout = rec.where == rec.file  # the record is the image file itself
        location = rec.file if in_folder_layout else f"{rec.file}, {rec.where}"
        fix = _FIXES[found.kind]
        if in_folder_layout:
            fix = fix.replace("remove the record", "delete it")
        elif found.kind == MISSING:
            fix += f" (relative paths start at {root}; base_dir= changes that)"
        problems.append(
            Problem(
                file=rec.file,
                line=rec.line,
                image_id=rec.image_id,
                kind=found.kind,
                message=f"{location}: image {rec.image_id!r}: {rec.uri} {found.detail}. {fix}.",
                image=image,
            )
        )
    if not images:
        kinds = sorted({p.kind for p in problems})
        hint = ""
        if MISSING in kinds:
            hint = (
                f" Relative image paths were resolved against {root}; if the images are "
                "elsewhere, pass base_dir=."
            )
        raise InputError(
            f"{source}: none of the {len(problems)} images can be used ({', '.join(kinds)})."
            f"{hint} First: {problems[0].message}"
        )
    return LabeledSet(
        name=name, source=source, images=images, labels=tuple(vocabulary), problems=problems
    )


# ---------------------------------------------------------------------------------------
# Tables of precomputed scores
# ---------------------------------------------------------------------------------------

_TRUE = {"1", "true", "t", "yes", "y"}
_FALSE = {"0", "false", "f", "no", "n"}
SCORES_TABLE_COLUMNS = ("image_id", "label", "score", "truth")


def read_scores_table(path, *, detector: str = "precomputed", model_version: str | None = None):
    """Read a table of scores produced elsewhere (CSV or Parquet), one row per result.

    Columns: ``image_id``, ``label``, ``score`` (empty for "no result on this image",
    which becomes ``-inf``), ``truth`` (whether the label is really present: true/false,
    1/0, yes/no), and optionally ``detector`` and ``model_version``. Several rows for
    the same image and label (one per box) are reduced to the image-level score, their
    maximum.

    Parameters
    ----------
    path : str or Path
        A ``.csv`` or ``.parquet`` file.
    detector : str, default "precomputed"
        Used where the table has no ``detector`` column.
    model_version : str, optional
        Used where the table has no ``model_version`` column; "unknown" if neither.

    Returns
    -------
    pandas.DataFrame
        Image-level rows with columns ``detector, model_version, label, image_id,
        score, positive``.

    Raises
    ------
    InputError
        Naming the file, the line (CSV: the line number in the file; Parquet: the row)
        and what to fix.
    """
    import numpy as np
    import pandas as pd

    p = Path(path)
    suffix = p.suffix.lower()
    try:
        if suffix == ".csv":
            raw = pd.read_csv(p, dtype=str, keep_default_na=False)
            where = [f"{p}:{i + 2}" for i in range(len(raw))]  # line 1 is the header
        elif suffix in (".parquet", ".pq"):
            raw = pd.read_parquet(p)
            where = [f"{p} row {i + 1}" for i in range(len(raw))]
        else:
            raise InputError(
                f"{p}: unknown scores table format {suffix or '(no suffix)'}; use .csv or .parquet."
            )
    except FileNotFoundError:
        raise InputError(f"scores table {p} does not exist.") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"cannot read scores table {p}: {exc}") from None
    missing = [c for c in SCORES_TABLE_COLUMNS if c not in raw.columns]
    if missing:
        raise InputError(
            f"{p}: missing column(s) {', '.join(missing)}; found {', '.join(map(str, raw.columns))}. "
            f"A scores table needs {', '.join(SCORES_TABLE_COLUMNS)} "
            "(optional: detector, model_version)."
        )
    if len(raw) == 0:
        raise InputError(f"{p}: the scores table has no rows.")

    scores = np.empty(len(raw), dtype=np.float64)
    col = raw["score"]
    numeric = pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)
    text = None if numeric else col.astype(str).str.strip()
    if text is not None:
        empty = (text == "") | col.isna()
        num = pd.to_numeric(text.where(~empty, "nan"), errors="coerce").to_numpy(np.float64)
        bad = ~empty.to_numpy() & np.isnan(num)
        scores[:] = num
        scores[empty.to_numpy()] = -np.inf
    else:
        num = pd.to_numeric(col, errors="coerce").to_numpy(np.float64)
        bad = np.isnan(num) & ~col.isna().to_numpy()
        scores[:] = num
        scores[col.isna().to_numpy()] = -np.inf
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{where[i]}: score {raw['score'].iloc[i]!r} is not a number. Leave the cell "
            "empty when the detector returned nothing for the label on that image."
        )
    if np.isposinf(scores).any():
        i = int(np.flatnonzero(np.isposinf(scores))[0])
        raise InputError(f"{where[i]}: score is +inf; scores must be finite.")

    truth_raw = raw["truth"]
    if pd.api.types.is_bool_dtype(truth_raw):
        positive = truth_raw.to_numpy(bool)
    else:
        t = truth_raw.astype(str).str.strip().str.lower()
        is_true, is_false = t.isin(_TRUE).to_numpy(), t.isin(_FALSE).to_numpy()
        if not (is_true | is_false).all():
            i = int(np.flatnonzero(~(is_true | is_false))[0])
            raise InputError(
                f"{where[i]}: truth {truth_raw.iloc[i]!r} is not true/false (also accepted: "
                "1/0, yes/no). It says whether the label is really present on the image."
            )
        positive = is_true
    for c in ("image_id", "label"):
        blank = raw[c].isna().to_numpy() | (raw[c].astype(str).str.strip() == "").to_numpy()
        if blank.any():
            i = int(np.flatnonzero(blank)[0])
            raise InputError(f"{where[i]}: {c} is empty.")

    def text_col(name, default):
        if name in raw.columns:
            return raw[name].astype(str).replace("", default).to_numpy()
        return np.full(len(raw), default, dtype=object)

    frame = pd.DataFrame(
        {
            "detector": text_col("detector", detector),
            "model_version": text_col("model_version", model_version or "unknown"),
            "label": raw["label"].astype(str).to_numpy(),
            "image_id": raw["image_id"].astype(str).to_numpy(),
            "score": scores,
            "positive": positive,
            "line": np.arange(len(raw)),
        }
    )
    keys = ["detector", "model_version", "label", "image_id"]
    conflict = frame.groupby(keys, sort=False)["positive"].transform("nunique") > 1
    if conflict.any():
        i = int(np.flatnonzero(conflict.to_numpy())[0])
        r = frame.iloc[i]
        others = frame.index[
            (frame[keys] == r[keys]).all(axis=1) & (frame["positive"] != r["positive"])
        ]
        raise InputError(
            f"{where[i]} and {where[int(others[0])]}: image {r['image_id']!r} has contradicting "
            f"truth for label {r['label']!r}. Fix the ground truth so each image and label "
            "has one answer."
        )
    out = frame.groupby(keys, sort=True, as_index=False).agg(
        score=("score", "max"), positive=("positive", "first")
    )
    return out[["detector", "model_version", "label", "image_id", "score", "positive"]]
