"""The shared record types of a labeled image set: images, problems, the set, its fingerprint.

Every manifest format (:mod:`calibrate.manifest.jsonl`, :mod:`~calibrate.manifest.csvfile`,
:mod:`~calibrate.manifest.coco`, :mod:`~calibrate.manifest.folders`) reads into these
types; import them from :mod:`calibrate.manifest`.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calibrate.errors import InputError

__all__ = [
    "GroundTruthObject",
    "LabeledImage",
    "LabeledSet",
    "Problem",
    "REMOTE_SCHEMES",
    "dataset_fingerprint",
]

#: URI schemes kept as remote references: never opened, hashed or verified here (the
#: detector adapters fetch them, and a failed fetch is recorded by the runner).
REMOTE_SCHEMES = ("s3", "oss", "gs", "http", "https")

_FINGERPRINT_VERSION = "calibrate-dataset-fingerprint-v1"


@dataclass(frozen=True)
class GroundTruthObject:
    """One object truly present in an image, where it is: a ground-truth box.

    Attributes
    ----------
    label : str
        The object's label; an image with an object of label L is positive for L.
    box : tuple of 4 floats
        ``(x_min, y_min, x_max, y_max)`` in pixels of the image (ratio boxes of a
        manifest are converted with the image's size when it is read), with
        ``x_min < x_max`` and ``y_min < y_max``.
    ignore : bool, default False
        A crowd or "don't care" region (COCO ``iscrowd = 1``, JSONL ``"ignore": true``):
        detections on it are absorbed (counted neither true nor false) and it is never
        a missed object.
    """

    label: str
    box: tuple[float, float, float, float]
    ignore: bool = False

    def __post_init__(self) -> None:
        # Manifest readers report bad boxes with file and line first; this guards
        # objects built in code, so the store never holds a box no matcher can use.
        if not isinstance(self.label, str) or not self.label.strip():
            raise InputError(f"an object's label must be a non-empty string, got {self.label!r}.")
        try:
            box = tuple(float(v) for v in self.box)
        except (TypeError, ValueError):
            raise InputError(
                f"object {self.label!r}: box must be 4 numbers (x_min, y_min, x_max, "
                f"y_max), got {self.box!r}."
            ) from None
        if len(box) != 4 or not all(math.isfinite(v) for v in box):
            raise InputError(
                f"object {self.label!r}: box must be 4 finite numbers (x_min, y_min, "
                f"x_max, y_max), got {self.box!r}."
            )
        if not (box[0] < box[2] and box[1] < box[3]):
            raise InputError(
                f"object {self.label!r}: box {list(box)} has no area (x_min must be < "
                "x_max and y_min < y_max)."
            )
        object.__setattr__(self, "box", box)
        object.__setattr__(self, "ignore", bool(self.ignore))

    @property
    def width(self) -> float:
        """``x_max - x_min`` in pixels."""
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        """``y_max - y_min`` in pixels."""
        return self.box[3] - self.box[1]


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
    objects : tuple of GroundTruthObject, or None
        The image's ground-truth boxes. None: the manifest gives no boxes for this
        image, so it cannot be used at the detection level; ``()``: boxes are known and
        there are none (a real negative image). Every non-ignored object's label is in
        :attr:`labels`.
    width, height : int or None
        The image's size in pixels (EXIF orientation applied), when known: from the
        manifest, else from the file's header when it was inspected. Converts ratio
        boxes (of the manifest, or of a detector such as Rekognition) to pixels.
    """

    image_id: str
    uri: str
    labels: frozenset[str] = frozenset()
    content_hash: str | None = None
    split: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    source: str = ""
    objects: tuple[GroundTruthObject, ...] | None = None
    width: int | None = None
    height: int | None = None

    def __post_init__(self) -> None:
        if self.objects is None:
            return
        objects = tuple(self.objects)
        if not all(isinstance(o, GroundTruthObject) for o in objects):
            raise InputError(
                f"image {self.image_id!r}: objects must be GroundTruthObject records "
                "(or None when the manifest gives no boxes)."
            )
        object.__setattr__(self, "objects", objects)
        _check_labels_agree(self.image_id, self.source, self.labels, objects)

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


def _check_labels_agree(image_id: str, source: str, labels: Iterable[str],
                        objects: tuple[GroundTruthObject, ...]) -> None:
    """Refuse image labels that contradict the image's boxes.

    An image is positive for a label exactly when it has an object of that label: every
    non-ignored object's label must be among the labels, and every label must have an
    object (an ignore region is enough, as a COCO crowd annotation labels its image).
    """
    where = f"image {image_id!r}" + (f" ({source})" if source else "")
    labels = set(labels)
    boxed = {o.label for o in objects if not o.ignore}
    missing = sorted(boxed - labels)
    if missing:
        raise InputError(
            f"{where}: an object has label {missing[0]!r} but the image's labels "
            f"{sorted(labels)} do not; add the label or fix the object's label."
        )
    unboxed = sorted(labels - {o.label for o in objects})
    if unboxed:
        raise InputError(
            f"{where}: the image is labeled {unboxed[0]!r} but none of its objects is; "
            "add that object's box, or remove the label."
        )


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
    for a remote image), its labels and, when the manifest gives them, its
    ground-truth boxes (an image without boxes hashes as it did before boxes existed,
    so the fingerprints of existing box-less sets are unchanged). Images are sorted first, so the order of the
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
    rows: list[list[Any]] = []
    for img in images:
        if img.content_hash:
            content = img.content_hash
        elif not img.is_local:
            content = img.uri
        else:
            content = "local:unhashed"
        row: list[Any] = [img.image_id, content, sorted(img.labels)]
        if img.objects is not None:
            row.append(sorted([o.label, list(o.box), o.ignore] for o in img.objects))
        rows.append(row)
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
