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

The package's parts: :mod:`~calibrate.manifest.records` (:class:`LabeledImage`,
:class:`Problem`, :class:`LabeledSet`, :func:`dataset_fingerprint`), one module per
format (:mod:`~calibrate.manifest.jsonl`, :mod:`~calibrate.manifest.csvfile`,
:mod:`~calibrate.manifest.coco`, :mod:`~calibrate.manifest.folders`), what they share
while parsing (:mod:`~calibrate.manifest.parsing`), checking image files
(:mod:`~calibrate.manifest.inspection`) and turning records into a set
(:mod:`~calibrate.manifest.assembly`). :func:`read_scores_table` lives in
:mod:`calibrate.scores_table` and is re-exported here for old imports.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from calibrate.errors import InputError
from calibrate.manifest.assembly import _assemble
from calibrate.manifest.coco import CocoGroundTruth, _parse_coco, read_coco_ground_truth
from calibrate.manifest.csvfile import _parse_csv
from calibrate.manifest.folders import CLEAN_FOLDERS, IMAGE_SUFFIXES, _read_directory
from calibrate.manifest.inspection import (
    CORRUPT,
    EMPTY,
    MISSING,
    NOT_A_FILE,
    UNREADABLE,
    _inspect_all,
)
from calibrate.manifest.jsonl import _JSONL_EXAMPLE, _parse_jsonl
from calibrate.manifest.parsing import _check_unique_ids, _Errors, _LabelCheck, _Record
from calibrate.manifest.records import (
    REMOTE_SCHEMES,
    GroundTruthObject,
    LabeledImage,
    LabeledSet,
    Problem,
    dataset_fingerprint,
)
from calibrate.scores_table import SCORES_TABLE_COLUMNS, read_scores_table

__all__ = [
    "CLEAN_FOLDERS",
    "CORRUPT",
    "CocoGroundTruth",
    "EMPTY",
    "GroundTruthObject",
    "IMAGE_SUFFIXES",
    "LabeledImage",
    "LabeledSet",
    "MISSING",
    "NOT_A_FILE",
    "Problem",
    "REMOTE_SCHEMES",
    "SCORES_TABLE_COLUMNS",
    "UNREADABLE",
    "dataset_fingerprint",
    "read_coco_ground_truth",
    "read_manifest",
    "read_scores_table",
]


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
        * Ground-truth boxes: JSONL ``"objects"``, COCO ``bbox`` with ``iscrowd``, CSV
          with one object per row (see :mod:`calibrate.manifest.boxes` and
          docs/ground-truth-boxes.md) become :attr:`LabeledImage.objects`, in pixels.
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
        given, an unsupported URI scheme, a bad box or labels that contradict the
        objects, a set with no images, or a set in which no
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
    manifest = _manifest_path(path)
    allowed = _allowed_labels(labels)
    _check_flags(hash_images, decode_images)
    if manifest.is_dir():
        if base_dir is not None:
            raise InputError(
                f"{manifest} is a folder-per-label directory, which is its own root; "
                "base_dir only applies to manifest files. Drop base_dir."
            )
        return _read_directory(manifest, allowed, hash_images, decode_images)
    return _read_file(manifest, base_dir, allowed, hash_images, decode_images)


def _read_file(
    manifest: Path, base_dir, allowed: frozenset[str] | None, hash_images: bool, decode: bool
) -> LabeledSet:
    """Read a manifest file (JSONL, CSV or COCO): every record is checked before any
    image is inspected, so a structural error costs no image reads."""
    if not manifest.exists():
        raise InputError(
            f"{manifest}: no such file or directory. Give a .jsonl, .csv or COCO .json "
            "manifest, or a folder with one sub-folder per label."
        )
    root = _image_root(manifest, base_dir)
    errors = _Errors(str(manifest))
    check = _LabelCheck(allowed)
    records, vocabulary, example = _parse(manifest, root, errors, check)
    check.report(errors, "Correct the label, or add it to labels= if it is a real label.")
    _check_unique_ids(records, errors)
    errors.raise_if_any()
    if not records:
        raise InputError(f"{manifest}: the manifest lists no images; add {example}.")
    inspections = _inspect_all([r.local_path for r in records], hash_images, decode)
    return _assemble(
        records,
        inspections,
        name=_set_name(manifest),
        source=str(manifest),
        vocabulary=allowed if allowed is not None else vocabulary,
        root=root,
    )


def _manifest_path(path) -> Path:
    if path is None:
        raise InputError("path is required: a .jsonl, .csv or COCO .json file, or a folder.")
    return Path(os.path.abspath(os.fspath(path)))


def _check_flags(hash_images, decode_images) -> None:
    for flag, value in (("hash_images", hash_images), ("decode_images", decode_images)):
        if not isinstance(value, bool):
            raise InputError(f"{flag} must be True or False, got {value!r}.")
    if decode_images and not hash_images:
        raise InputError(
            "decode_images=True reads every image, which hash_images=False asks not to "
            "do; drop one of them."
        )


def _image_root(manifest: Path, base_dir) -> Path:
    """The folder relative image paths start from: ``base_dir``, else the manifest's."""
    if base_dir is None:
        return manifest.parent
    root = Path(os.path.abspath(os.fspath(base_dir)))
    if not root.is_dir():
        raise InputError(
            f"base_dir {root} is not a directory; give the folder that the "
            f"manifest's relative image paths start from."
        )
    return root


def _parse(
    manifest: Path, root: Path, errors: _Errors, check: _LabelCheck
) -> tuple[list[_Record], set[str], str]:
    """``(records, declared vocabulary, an example entry for messages)`` of a manifest
    file, by the format its suffix names."""
    suffix = manifest.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return _parse_jsonl(manifest, root, errors, check), set(), _JSONL_EXAMPLE
    if suffix == ".csv":
        records = _parse_csv(manifest, root, errors, check)
        return records, set(), "a row such as: images/a.png,scratch"
    if suffix == ".json":
        records, vocabulary = _parse_coco(manifest, root, errors, check)
        return records, vocabulary, 'an entry in "images"'
    raise InputError(
        f"{manifest}: cannot tell the manifest format from the suffix {suffix!r}. "
        "Use .jsonl (one JSON object per line), .csv, a COCO annotation .json, or a "
        "folder with one sub-folder per label."
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
