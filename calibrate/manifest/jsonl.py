"""JSONL manifests (``.jsonl``, ``.ndjson``): one JSON object per line.

``{"id": "part-1", "image": "images/part-1.png", "labels": ["scratch"], "split": "test"}``:
``image`` and ``labels`` are required, ``id`` and ``split`` optional, and any other key
is kept in the image's ``metadata`` as written. Blank lines are skipped.

Ground-truth boxes: ``"objects": [{"label": "scratch", "box": [x_min, y_min, x_max,
y_max], "unit": "pixel", "ignore": false}]`` (``unit`` "pixel" or "ratio", default
"pixel"; ``ignore`` default false), with optional ``"width"`` and ``"height"`` of the
image in pixels. ``"objects": []`` is an image known to have no object. With
``objects``, ``labels`` may be left out: the image's labels are then its non-ignored
objects' labels; when given, they must agree (see :func:`calibrate.manifest.boxes.check_labels`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from calibrate.manifest.boxes import check_labels, parse_json_objects, parse_size
from calibrate.manifest.parsing import (
    _Errors,
    _LabelCheck,
    _new_record,
    _not_utf8,
    _read_text_lines,
    _Record,
)

__all__: list[str] = []

_JSONL_EXAMPLE = '{"image": "images/a.png", "labels": ["scratch"]}'
_RESERVED = ("image", "id", "labels", "split", "objects")


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
    """The record of one non-blank line, or None after adding its errors to ``errors``."""
    where = f"line {lineno}"
    obj = _json_object(text, where, errors)
    if obj is None:
        return None
    # Every key is checked even after one is wrong, so that all of a line's mistakes
    # are reported in one pass.
    image_ok = _check_image(obj, where, errors)
    objects = None
    boxes_ok = True
    if "objects" in obj:
        objects = parse_json_objects(obj["objects"], where, errors)
        boxes_ok = objects is not None
    size_ok, width, height = parse_size(obj, where, errors)
    if "objects" in obj and "labels" not in obj:
        # The labels are the objects' (already reported if the objects are wrong).
        labels_ok = objects is not None
        labels = sorted({o.label for o in objects or () if not o.ignore})
    else:
        labels_ok, labels = _labels(obj, where, errors)
    if labels_ok and objects is not None:
        labels_ok = check_labels(labels, objects, where, errors)
    id_ok, explicit_id = _explicit_id(obj, where, errors)
    split_ok = _check_split(obj, where, errors)
    check.check(where, labels)
    for o in objects or ():
        if o.label not in labels:  # an ignore region's label, not among the image's
            check.check(o.where, [o.label])
    if not (image_ok and labels_ok and id_ok and split_ok and boxes_ok and size_ok):
        return None
    return _new_record(
        errors,
        file=file,
        line=lineno,
        where=where,
        image=obj["image"],
        explicit_id=explicit_id,
        labels=labels,
        split=obj.get("split"),
        metadata={k: v for k, v in obj.items() if k not in _RESERVED},
        root=root,
        objects=objects,
        width=width,
        height=height,
    )


def _json_object(text: str, where: str, errors: _Errors) -> dict[str, Any] | None:
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
    return obj


def _check_image(obj: dict[str, Any], where: str, errors: _Errors) -> bool:
    image = obj.get("image")
    if "image" not in obj:
        errors.add(
            where,
            f'no "image" key (keys: {sorted(obj)}). Every line needs the image\'s path '
            f"or URI, such as {_JSONL_EXAMPLE}.",
        )
        return False
    if not isinstance(image, str) or not image.strip():
        errors.add(where, f'"image" must be a non-empty path or URI string, got {image!r}.')
        return False
    return True


def _labels(obj: dict[str, Any], where: str, errors: _Errors) -> tuple[bool, list[str]]:
    """``(ok, labels)``: the usable labels are returned even when some are bad, so that
    unknown labels on a line with other errors are still reported."""
    if "labels" not in obj:
        # Required, not defaulted to clean: a forgotten key would silently turn defects
        # into good parts in the ground truth.
        errors.add(
            where,
            'no "labels" key. List the labels present in the image, or write '
            '"labels": [] for an image with none (or give its "objects").',
        )
        return False, []
    value = obj["labels"]
    if isinstance(value, str):
        errors.add(
            where,
            f'"labels" must be a list of strings, got the string {value!r}; write '
            f'"labels": [{json.dumps(value)}] (or [] for an image with no label).',
        )
        return False, []
    if not isinstance(value, list):
        errors.add(
            where,
            f'"labels" must be a list of strings, got {json.dumps(value)}; write '
            '"labels": [] for an image with no label.',
        )
        return False, []
    ok = True
    bad = [v for v in value if not isinstance(v, str) or not v.strip()]
    if bad:
        errors.add(where, f'"labels" must hold non-empty strings, got {json.dumps(bad[0])}.')
        ok = False
    return ok, [v.strip() for v in value if isinstance(v, str) and v.strip()]


def _explicit_id(obj: dict[str, Any], where: str, errors: _Errors) -> tuple[bool, str | None]:
    explicit_id = obj.get("id")
    if explicit_id is None:
        return True, None
    if isinstance(explicit_id, int) and not isinstance(explicit_id, bool):
        return True, str(explicit_id)
    if not isinstance(explicit_id, str) or not explicit_id.strip():
        errors.add(where, f'"id" must be a non-empty string or an integer, got {explicit_id!r}.')
        return False, None
    return True, explicit_id


def _check_split(obj: dict[str, Any], where: str, errors: _Errors) -> bool:
    split = obj.get("split")
    if split is not None and (not isinstance(split, str) or not split.strip()):
        errors.add(where, f'"split" must be a non-empty string or null, got {split!r}.')
        return False
    return True
