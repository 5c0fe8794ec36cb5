"""Ground-truth boxes while reading a manifest: parsing them, checking them against the
image's labels and size, and converting ratio boxes to pixels.

A box is checked twice. While its line is parsed: four finite numbers, a known unit, a
positive width and height, and labels that agree with the image's (see
:func:`check_labels`). Once the image's size is known (from the manifest, else the file's
header): inside the image, up to :data:`BOUNDS_TOLERANCE_PX` pixels outside it, and ratio
boxes converted to pixels. Boxes are never clipped: the matcher sees them as written, as
pycocotools would.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from calibrate.manifest.records import GroundTruthObject

__all__ = [
    "BOUNDS_TOLERANCE_PX",
    "BOX_UNITS",
    "box_problem",
    "check_labels",
    "parse_json_objects",
    "parse_size",
    "to_pixels",
]

#: How far (in pixels) a box may reach outside its image and still be accepted:
#: annotation tools round to whole pixels and some write ``x_max = width + 1``. Anything
#: further out is a wrong unit, a wrong image or a wrong size, and is refused.
BOUNDS_TOLERANCE_PX = 1.0

#: Units a manifest box may be written in.
BOX_UNITS = ("pixel", "ratio")


@dataclass(frozen=True)
class _RawObject:
    """A box as the manifest wrote it, before the image's size is known."""

    label: str
    box: tuple[float, float, float, float]
    unit: str
    ignore: bool
    where: str  # "line 7, objects[2]", "annotations[5]": for messages


def _number(value: Any) -> float | None:
    """A finite float, or None for anything else (strings, bools, NaN, inf)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def box_problem(box: tuple[float, float, float, float]) -> str | None:
    """Why four numbers are not a usable (x_min, y_min, x_max, y_max) box, or None."""
    x0, y0, x1, y1 = box
    if not x1 > x0:
        return f"has no width (x_max {x1:g} must be greater than x_min {x0:g})"
    if not y1 > y0:
        return f"has no height (y_max {y1:g} must be greater than y_min {y0:g})"
    return None


def parse_json_objects(value: Any, where: str, errors) -> list[_RawObject] | None:
    """The ``"objects"`` list of a JSONL line, or None after adding its errors.

    Each entry: ``{"label": str, "box": [x_min, y_min, x_max, y_max], "unit": "pixel"
    | "ratio" (default "pixel"), "ignore": bool (default false)}``.
    """
    if not isinstance(value, list):
        errors.add(where, f'"objects" must be a list of objects (or [] for an image with none), '
                          f"got {type(value).__name__}.")
        return None
    out: list[_RawObject] = []
    ok = True
    for k, entry in enumerate(value):
        at = f'{where}, "objects"[{k}]'
        parsed = _json_object_entry(entry, at, errors)
        if parsed is None:
            ok = False
        else:
            out.append(parsed)
    return out if ok else None


_OBJECT_KEYS = {"label", "box", "unit", "ignore"}


def _json_object_entry(entry: Any, at: str, errors) -> _RawObject | None:
    if not isinstance(entry, dict):
        errors.add(at, 'each object must be {"label": ..., "box": [x_min, y_min, x_max, '
                       f'y_max]}}, got {type(entry).__name__}.')
        return None
    unknown = sorted(set(entry) - _OBJECT_KEYS)
    if unknown:
        errors.add(at, f"unknown key {unknown[0]!r}; an object has the keys "
                       f"{sorted(_OBJECT_KEYS)}.")
        return None
    label = entry.get("label")
    if not isinstance(label, str) or not label.strip():
        errors.add(at, f'"label" must be a non-empty string, got {label!r}.')
        return None
    unit = entry.get("unit", "pixel")
    if unit not in BOX_UNITS:
        errors.add(at, f'"unit" must be "pixel" or "ratio" (of the image\'s width and '
                       f"height), got {unit!r}.")
        return None
    ignore = entry.get("ignore", False)
    if not isinstance(ignore, bool):
        errors.add(at, f'"ignore" must be true or false, got {ignore!r}.')
        return None
    box = entry.get("box")
    numbers = [_number(v) for v in box] if isinstance(box, list) and len(box) == 4 else None
    if numbers is None or any(v is None for v in numbers):
        errors.add(at, f'"box" must be 4 numbers [x_min, y_min, x_max, y_max], got {box!r}.')
        return None
    coords = (numbers[0], numbers[1], numbers[2], numbers[3])
    problem = box_problem(coords)
    if problem:
        errors.add(at, f'"box" {list(coords)} {problem}.')
        return None
    return _RawObject(label.strip(), coords, unit, ignore, at)


def parse_size(obj: dict, where: str, errors,
               keys=("width", "height")) -> tuple[bool, int | None, int | None]:
    """``(ok, width, height)`` from an entry's size keys: positive integers, both or
    neither (an integral float such as ``640.0`` is accepted)."""
    w_key, h_key = keys
    w, h = obj.get(w_key), obj.get(h_key)
    if w is None and h is None:
        return True, None, None
    sizes = []
    for key, v in ((w_key, w), (h_key, h)):
        n = _number(v)
        if n is None or n <= 0 or n != int(n):
            errors.add(where, f'"{key}" must be a positive whole number of pixels (give '
                              f'"{w_key}" and "{h_key}" together, or neither), got {v!r}.')
            return False, None, None
        sizes.append(int(n))
    return True, sizes[0], sizes[1]


def check_labels(labels: Iterable[str], objects: list[_RawObject], where: str, errors) -> bool:
    """Whether an image's labels agree with its objects (else add the error).

    An image is positive for a label exactly when it has an object of that label: every
    non-ignored object's label must be among the image's labels, and every label needs
    an object (an ignore region is enough, as a COCO crowd annotation labels its image).
    """
    labels = set(labels)
    boxed = {o.label for o in objects if not o.ignore}
    missing = sorted(boxed - labels)
    if missing:
        errors.add(where, f"an object has label {missing[0]!r} but the image's labels "
                          f"{sorted(labels)} do not; add it to the labels (or leave "
                          "the labels out: they are then the objects' labels).")
        return False
    unboxed = sorted(labels - {o.label for o in objects})
    if unboxed:
        errors.add(where, f"the image is labeled {unboxed[0]!r} but none of its objects "
                          "is; add that object's box, or remove the label.")
        return False
    return True


def to_pixels(objects: list[_RawObject], width: int | None, height: int | None,
              errors) -> tuple[GroundTruthObject, ...] | None:
    """The objects in pixels, checked against the image's bounds; None after adding
    errors. ``width``/``height`` None: pixel boxes are kept unchecked, and a ratio box
    is an error (the caller reads the size from the file first where it can)."""
    out = []
    ok = True
    tol = BOUNDS_TOLERANCE_PX
    for o in objects:
        x0, y0, x1, y1 = o.box
        if o.unit == "ratio":
            if width is None or height is None:
                errors.add(o.where, "a box in ratios needs the image's size, which is not "
                                    'known; give the image\'s "width" and "height" in the '
                                    "manifest (or use pixel boxes).")
                ok = False
                continue
            x0, x1, y0, y1 = x0 * width, x1 * width, y0 * height, y1 * height
        if width is not None and height is not None and not (
                x0 >= -tol and y0 >= -tol and x1 <= width + tol and y1 <= height + tol):
            hint = ""
            if o.unit == "ratio" and max(o.box) > 1 + tol / min(width, height):
                hint = ' (ratios run from 0 to 1: are these pixels? then "unit": "pixel")'
            elif o.unit == "pixel" and max(o.box) <= 1:
                hint = ' (are these ratios of the image size? then "unit": "ratio")'
            errors.add(o.where, f"box {list(o.box)} ({o.unit}) lies outside the "
                                f"{width}x{height} image by more than "
                                f"{tol:g} pixel{hint}; fix the box, the unit or the "
                                "image's size.")
            ok = False
            continue
        out.append(GroundTruthObject(o.label, (x0, y0, x1, y1), o.ignore))
    return tuple(out) if ok else None
