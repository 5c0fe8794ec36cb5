"""CSV manifests (``.csv``): UTF-8, comma-separated, with a header row.

Columns ``image`` and ``labels`` are required (labels separated by ``;`` or ``|``, an
empty cell for an image with no label), ``id`` and ``split`` optional (an empty cell is
none); any other column is kept in the image's ``metadata`` as a string.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from calibrate.errors import InputError
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
