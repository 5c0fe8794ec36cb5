"""COCO manifests (``.json``): an annotation file with ``images``, ``annotations`` and
``categories``.

An image's labels are the names of the categories of its annotations; an image without
annotations is clean. The image id is its ``file_name`` and the COCO id is kept as
``metadata["coco_id"]``: annotation tools renumber COCO ids on every export.

Boxes: when the annotations carry ``bbox`` (``[x, y, width, height]`` in pixels, as COCO
writes it), every image gets its ground-truth objects (converted to ``x_min, y_min,
x_max, y_max``), ``iscrowd = 1`` marks an ignore region, and an image without
annotations is a real negative. A crowd annotation labels its image, as any
annotation does. The image's ``width`` and ``height`` are read from ``images[]``.
A file whose annotations have no ``bbox`` at all is read as labels only, as before.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from calibrate.errors import InputError
from calibrate.manifest.assembly import _assemble
from calibrate.manifest.inspection import _Inspection
from calibrate.manifest.boxes import _number, _RawObject, box_problem, parse_size
from calibrate.manifest.parsing import (
    _check_unique_ids,
    _Errors,
    _LabelCheck,
    _new_record,
    _not_utf8,
    _Record,
)
from calibrate.manifest.records import LabeledSet

__all__ = ["CocoGroundTruth", "read_coco_ground_truth"]


@dataclass(frozen=True)
class CocoGroundTruth:
    """A COCO annotation file read as ground truth for imported detections.

    Attributes
    ----------
    dataset : LabeledSet
        The images (id = ``file_name``), labels and boxes, as :func:`read_manifest`
        reads the file, but with no image opened (see :func:`read_coco_ground_truth`).
    categories : dict
        COCO category id -> label name.
    image_ids : dict
        COCO image id -> the image's id in the set (its ``file_name``).
    """

    dataset: LabeledSet
    categories: dict[Any, str]
    image_ids: dict[Any, str]


def read_coco_ground_truth(path) -> CocoGroundTruth:
    """Read a COCO annotation file as the ground truth of detections made elsewhere.

    Exactly as :func:`calibrate.manifest.read_manifest` reads a COCO file (labels,
    boxes with ``iscrowd``, sizes from ``images[]``, the same errors), except that no
    image file is opened or even looked for: detections imported from another framework
    were made on images that need not be on this machine. The images get no content
    hash, so the set's fingerprint covers ids, labels and boxes only.

    Parameters
    ----------
    path : str or Path
        The annotation file (``images``, ``annotations``, ``categories``).

    Returns
    -------
    CocoGroundTruth

    Raises
    ------
    InputError
        As :func:`read_manifest` for a COCO file, naming the file and entry.
    """
    manifest = Path(os.path.abspath(os.fspath(path)))
    errors = _Errors(str(manifest))
    data = _load_coco(manifest)
    category_names = _coco_categories(data["categories"], errors)
    entries = _coco_images(data["images"], errors)
    labels_of, objects_of = _coco_labels(data["annotations"], entries, category_names,
                                         errors, _LabelCheck(None))
    records = _coco_records(entries, labels_of, objects_of, str(manifest), manifest.parent,
                            errors)
    _check_unique_ids(records, errors)
    errors.raise_if_any()
    if not records:
        raise InputError(f'{manifest}: "images" is empty; the ground truth lists no image.')
    labeled = _assemble(records, [_Inspection() for _ in records], name=manifest.stem,
                        source=str(manifest), vocabulary=set(category_names.values()),
                        root=manifest.parent)
    image_ids = {rec.metadata["coco_id"]: rec.image_id for rec in records}
    return CocoGroundTruth(labeled, category_names, image_ids)


def _parse_coco(
    path: Path, root: Path, errors: _Errors, check: _LabelCheck
) -> tuple[list[_Record], set[str]]:
    """The records of a COCO file, and its declared label vocabulary (every category)."""
    data = _load_coco(path)
    category_names = _coco_categories(data["categories"], errors)
    entries = _coco_images(data["images"], errors)
    labels_of, objects_of = _coco_labels(data["annotations"], entries, category_names,
                                         errors, check)
    records = _coco_records(entries, labels_of, objects_of, str(path), root, errors)
    return records, set(category_names.values())


def _load_coco(path: Path) -> dict[str, Any]:
    """The parsed file, checked to be a COCO annotation file with ground truth.

    A file that is not one cannot be read record by record, so these errors raise at
    once instead of being collected.
    """
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
    return data


def _coco_categories(categories: list, errors: _Errors) -> dict[Any, str]:
    """COCO category id -> label name."""
    category_names: dict[Any, str] = {}
    for i, cat in enumerate(categories):
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
    return category_names


def _coco_images(images: list, errors: _Errors) -> dict[Any, tuple[int, dict]]:
    """COCO image id -> (position in ``images``, the entry), for the usable entries."""
    entries: dict[Any, tuple[int, dict]] = {}
    for i, img in enumerate(images):
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
    return entries


def _coco_labels(
    annotations: list,
    entries: dict[Any, tuple[int, dict]],
    category_names: dict[Any, str],
    errors: _Errors,
    check: _LabelCheck,
) -> tuple[dict[Any, set[str]], dict[Any, list[_RawObject]] | None]:
    """COCO image id -> the names of its annotations' categories (empty: clean), and
    COCO image id -> its boxes (None when no annotation has a ``bbox``)."""
    labels_of: dict[Any, set[str]] = {key: set() for key in entries}
    with_boxes = any(isinstance(a, dict) and "bbox" in a for a in annotations)
    objects_of = {key: [] for key in entries} if with_boxes else None
    for j, ann in enumerate(annotations):
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
        if objects_of is not None:
            box = _coco_box(ann, name, where, errors)
            if box is not None:
                objects_of[ann["image_id"]].append(box)
    return labels_of, objects_of


def _coco_box(ann: dict, name: str, where: str, errors: _Errors) -> _RawObject | None:
    """The annotation's ``bbox`` (``[x, y, width, height]``, pixels) as a raw object."""
    if "bbox" not in ann:
        errors.add(where, 'no "bbox", while other annotations have one; give every '
                          "annotation its box [x, y, width, height] in pixels.")
        return None
    bbox = ann["bbox"]
    numbers = [_number(v) for v in bbox] if isinstance(bbox, list) and len(bbox) == 4 else None
    if numbers is None or any(v is None for v in numbers):
        errors.add(f"{where}.bbox", f"must be 4 numbers [x, y, width, height] in pixels, "
                                    f"got {bbox!r}.")
        return None
    x, y, w, h = numbers
    crowd = ann.get("iscrowd", 0)
    if crowd not in (0, 1) or isinstance(crowd, float):
        errors.add(f"{where}.iscrowd", f"must be 0 or 1, got {crowd!r}.")
        return None
    coords = (x, y, x + w, y + h)
    if box_problem(coords):  # also catches a size lost to rounding (x + w == x)
        errors.add(f"{where}.bbox", f"{bbox!r} has no area: width and height must be "
                                    "positive ([x, y, width, height] in pixels).")
        return None
    return _RawObject(name, coords, "pixel", bool(crowd), f"{where}.bbox")


def _coco_records(
    entries: dict[Any, tuple[int, dict]],
    labels_of: dict[Any, set[str]],
    objects_of: dict[Any, list[_RawObject]] | None,
    file: str,
    root: Path,
    errors: _Errors,
) -> list[_Record]:
    records: list[_Record] = []
    for key, (i, img) in entries.items():
        where = f"images[{i}]"
        split = img.get("split")
        if split is not None and (not isinstance(split, str) or not split.strip()):
            errors.add(where, f'"split" must be a non-empty string, got {split!r}.')
            continue
        size_ok, width, height = parse_size(img, where, errors)
        if not size_ok:
            continue
        metadata = {"coco_id": img["id"]}
        metadata.update(
            (k, v) for k, v in img.items()
            if k not in ("id", "file_name", "split")
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
            objects=None if objects_of is None else objects_of[key],
            width=width,
            height=height,
        )
        if rec is not None:
            records.append(rec)
    return records


def _is_coco_id(value) -> bool:
    return isinstance(value, (int, str)) and not isinstance(value, bool)
