"""CSV manifests (``.csv``): UTF-8, comma-separated, with a header row.

Columns ``image`` and ``labels`` are required (labels separated by ``;`` or ``|``, an
empty cell for an image with no label), ``id`` and ``split`` optional (an empty cell is
none); any other column is kept in the image's ``metadata`` as a string.

**Boxes, one object per row.** A header with ``x_min, y_min, x_max, y_max`` holds one
ground-truth object per row: ``image``, ``label`` (the object's label) and the box are
required; ``unit`` (``pixel``, the default, or ``ratio``), ``ignore`` (``true``/``1``
for a crowd or don't-care region; empty or ``false``/``0`` otherwise), ``width`` and
``height`` (the image's size in pixels), ``id`` and ``split`` are optional. An image
takes as many rows as it has objects (rows need not be adjacent; its ``id``, ``split``,
``width`` and ``height`` must agree across them); a row with the label and box cells
empty lists an image with no object (a real negative). The image's labels are its
non-ignored objects' labels.
"""

from __future__ import annotations

import csv
import math
import re
from pathlib import Path

from calibrate.errors import InputError
from calibrate.manifest.boxes import BOX_UNITS, _RawObject, box_problem, parse_size
from calibrate.manifest.parsing import (
    _Errors,
    _LabelCheck,
    _new_record,
    _not_utf8,
    _read_text_lines,
    _Record,
)

__all__: list[str] = []

_LABEL_SEPARATORS = re.compile(r"[;|]")
_CSV_RESERVED = ("image", "id", "labels", "split")
_BOX_COLUMNS = ("x_min", "y_min", "x_max", "y_max")
_BOX_RESERVED = ("image", "id", "label", "split", *_BOX_COLUMNS, "unit", "ignore", "width",
                 "height")
_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no", "")


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
                    boxed = any(h.lower() in _BOX_COLUMNS for h in header)
                    columns = (_box_columns if boxed else _csv_columns)(header, start, errors)
                    if columns is None:
                        return records
                    if boxed:
                        rows: list[tuple[int, list[str]]] = []
                    continue
                if boxed:
                    rows.append((start, row))
                    continue
                rec = _csv_record(row, header, columns, start, file, root, errors, check)
                if rec is not None:
                    records.append(rec)
        except UnicodeDecodeError as exc:
            raise _not_utf8(path, exc) from None
        except csv.Error as exc:
            raise InputError(f"{path}, line {reader.line_num}: not valid CSV ({exc}).") from None
    if header is not None and boxed:
        records = _box_records(rows, header, columns, file, root, errors, check)
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


def _box_columns(header: list[str], line: int, errors: _Errors) -> dict[str, int] | None:
    """Column positions of a CSV with one object per row, or None after the error."""
    where = f"line {line} (header)"
    lowered = [h.lower() for h in header]
    duplicated = sorted({h for h in lowered if lowered.count(h) > 1})
    if duplicated:
        errors.add(where, f"column(s) {duplicated} appear more than once; rename them.")
        return None
    missing = [c for c in ("image", "label", *_BOX_COLUMNS) if c not in lowered]
    if missing:
        hint = (" With box columns each row is one object: name its label column "
                "'label' (one label), not 'labels'." if "labels" in lowered else "")
        errors.add(where, f"box columns need the columns image, label, x_min, y_min, x_max "
                          f"and y_max; {', '.join(map(repr, missing))} missing (columns: "
                          f"{header}).{hint}")
        return None
    return {name: lowered.index(name) for name in _BOX_RESERVED if name in lowered}


def _box_records(rows: list[tuple[int, list[str]]], header: list[str], columns: dict[str, int],
                 file: str, root: Path, errors: _Errors, check: _LabelCheck) -> list[_Record]:
    """One record per image of a CSV with one object per row."""
    groups: dict[str, list[tuple[int, dict[str, str], _RawObject | None, list[str]]]] = {}
    for line, row in rows:
        where = f"line {line}"
        if len(row) != len(header):
            errors.add(where, f"{len(row)} cells but the header has {len(header)} columns. "
                              'Quote cells that contain commas ("a,b").')
            continue
        cells = {name: row[i].strip() for name, i in columns.items()}
        if not cells["image"]:
            errors.add(where, "the 'image' cell is empty; give the image's path or URI.")
            continue
        parsed = _box_row(cells, where, errors)
        if parsed is False:
            continue
        if parsed is not None:
            check.check(where, [parsed.label])
        key = cells.get("id") or cells["image"]
        groups.setdefault(key, []).append((line, cells, parsed, row))
    reserved = set(columns.values())
    records = []
    for group in groups.values():
        rec = _box_group_record(group, header, reserved, file, root, errors)
        if rec is not None:
            records.append(rec)
    return records


def _box_row(cells: dict[str, str], where: str, errors: _Errors):
    """The row's object; None for an image-without-objects row; False after an error."""
    box_cells = [cells[c] for c in _BOX_COLUMNS]
    if not cells["label"] and not any(box_cells):
        return None
    if not cells["label"] or not all(box_cells):
        errors.add(where, "a row gives an object's 'label' and all four box cells, or none "
                          "of them (an image with no object).")
        return False
    numbers = []
    for name, text in zip(_BOX_COLUMNS, box_cells):
        try:
            value = float(text)
        except ValueError:
            value = float("nan")
        if not math.isfinite(value):
            errors.add(f"{where}, column {name!r}", f"{text!r} is not a number.")
            return False
        numbers.append(value)
    coords = (numbers[0], numbers[1], numbers[2], numbers[3])
    problem = box_problem(coords)
    if problem:
        errors.add(where, f"the box {list(coords)} {problem}.")
        return False
    unit = cells.get("unit") or "pixel"
    if unit not in BOX_UNITS:
        errors.add(f"{where}, column 'unit'", f"{unit!r} is neither 'pixel' nor 'ratio' "
                                              "(of the image's width and height).")
        return False
    ignore = cells.get("ignore", "").lower()
    if ignore not in _TRUE + _FALSE:
        errors.add(f"{where}, column 'ignore'", f"{cells['ignore']!r} is not true/false "
                                                "(or 1/0, or empty for false).")
        return False
    return _RawObject(cells["label"], coords, unit, ignore in _TRUE, where)


def _box_group_record(group, header, reserved, file, root, errors) -> _Record | None:
    """The record of one image's rows: its image-level cells must agree."""
    first_line, first, _, row = group[0]
    where = f"line {first_line}"
    for line, cells, _, _ in group[1:]:
        for name in ("image", "split", "width", "height"):
            if cells.get(name, "") != first.get(name, ""):
                errors.add(f"line {line}", f"the {name!r} cell {cells.get(name)!r} differs from "
                                           f"{first.get(name)!r} on {where}, a row of the same "
                                           "image; an image's cells must agree on every row.")
                return None
    objects = [obj for _, _, obj, _ in group if obj is not None]
    if len(objects) < len(group) and objects:
        line = next(line for line, _, obj, _ in group if obj is None)
        errors.add(f"line {line}", "this row says the image has no object, but other rows "
                                   f"give it {len(objects)}; remove the empty row.")
        return None
    size_cells = {k: first[k] for k in ("width", "height") if first.get(k)}
    size: dict = {}
    for k, text in size_cells.items():
        try:
            size[k] = float(text)
        except ValueError:
            size[k] = text
    ok, width, height = parse_size(size, where, errors)
    if not ok:
        return None
    metadata = {name: row[i] for i, name in enumerate(header) if i not in reserved}
    return _new_record(
        errors, file=file, line=first_line, where=where, image=first["image"],
        explicit_id=first.get("id") or None,
        labels=sorted({o.label for o in objects if not o.ignore}),
        split=first.get("split") or None, metadata=metadata, root=root,
        objects=objects, width=width, height=height,
    )
