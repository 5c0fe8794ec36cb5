"""COCO detection results: the ``[{"image_id", "category_id", "bbox", "score"}]`` array
that pycocotools' ``loadRes``, Ultralytics (``save_json``), Detectron2
(``coco_instances_results.json``) and MMDetection write, read against the COCO
ground-truth file the ids refer to.

Every entry is one detection: ``image_id`` and ``category_id`` are the ground truth's
COCO ids, ``bbox`` is ``[x, y, width, height]`` in pixels and ``score`` the detector's
confidence in its own scale. Other keys (``id``, ``area``, ``segmentation``) are
ignored.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from calibrate.errors import InputError
from calibrate.manifest import CocoGroundTruth

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["COCO_RESULTS_EXAMPLE", "read_coco_results"]

#: One entry of a COCO results file, for messages.
COCO_RESULTS_EXAMPLE = (
    '{"image_id": 42, "category_id": 3, "bbox": [12.5, 40, 83, 18], "score": 0.91}'
)

_MAX_PROBLEMS = 20


def read_coco_results(path, ground_truth: CocoGroundTruth) -> pd.DataFrame:
    """Read a COCO results file as detections in pixel boxes.

    Parameters
    ----------
    path : str or Path
        A JSON array of ``{"image_id", "category_id", "bbox": [x, y, width, height],
        "score"}``.
    ground_truth : CocoGroundTruth
        The annotation file the ids refer to (:func:`calibrate.manifest.read_coco_ground_truth`).

    Returns
    -------
    pandas.DataFrame
        Columns ``image_id`` (the ground truth's image id, its ``file_name``),
        ``label`` (the category's name), ``score``, ``x_min, y_min, x_max, y_max``
        (pixels: ``x_max = x + width``) and ``box_unit`` (``"pixel"``), in file order.

    Raises
    ------
    InputError
        When the file is not a JSON array of such objects, or an entry has an unknown
        ``image_id`` or ``category_id``, a ``bbox`` that is not 4 finite numbers with a
        non-negative width and height, or a ``score`` that is not a finite number. The
        message names the file and the array index of the first problem, and how many
        more there are; nothing is read then.
    """
    import pandas as pd

    path = Path(path)
    entries = _load_array(path)
    cols: dict[str, list] = {c: [] for c in ("image_id", "label", "score", "x_min", "y_min",
                                             "x_max", "y_max")}
    problems: list[str] = []
    for k, entry in enumerate(entries):
        row = _entry(entry, k, ground_truth, problems)
        if row is None:
            if len(problems) > _MAX_PROBLEMS:
                break
            continue
        for col, value in zip(cols, row):
            cols[col].append(value)
    if problems:
        more = f" ({len(problems) - 1} more problem(s) after it)" if len(problems) > 1 else ""
        raise InputError(f"{path}{problems[0]}{more}.")
    frame = pd.DataFrame(cols)
    frame["box_unit"] = "pixel"
    return frame


def _load_array(path: Path) -> list:
    try:
        with open(path, "rb") as fh:
            data = json.loads(fh.read().decode("utf-8-sig"))
    except OSError as exc:
        raise InputError(f"{path}: cannot read the results ({exc.strerror or exc}).") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason}).") from None
    except json.JSONDecodeError as exc:
        raise InputError(
            f"{path}, line {exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})."
        ) from None
    if not isinstance(data, list):
        kind = "a COCO annotation file" if isinstance(data, dict) and "images" in data else (
            f"a JSON {type(data).__name__}")
        raise InputError(
            f"{path} is {kind}, not COCO detection results: those are a JSON array of "
            f"entries such as {COCO_RESULTS_EXAMPLE}. Give the annotation file as the "
            "ground truth and the detections as the results."
        )
    return data


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _entry(entry: Any, k: int, gt: CocoGroundTruth, problems: list[str]) -> tuple | None:
    """``(image_id, label, score, x_min, y_min, x_max, y_max)`` of entry ``k``, or None
    after noting its problem (``"[k].key: what"``)."""
    if not isinstance(entry, dict):
        problems.append(f"[{k}]: expected an object such as {COCO_RESULTS_EXAMPLE}, got "
                        f"{type(entry).__name__}")
        return None
    for key in ("image_id", "category_id", "bbox", "score"):
        if key not in entry:
            problems.append(f"[{k}]: no {key!r} (keys: {sorted(entry)}); each detection "
                            f"needs image_id, category_id, bbox and score")
            return None
    image = _lookup(gt.image_ids, entry["image_id"])
    if image is None:
        problems.append(f"[{k}].image_id: {entry['image_id']!r} is not an image of the ground "
                        f"truth {gt.dataset.source}; results and ground truth must come "
                        "from the same annotation file")
        return None
    label = _lookup(gt.categories, entry["category_id"])
    if label is None:
        problems.append(f"[{k}].category_id: {entry['category_id']!r} is not a category of "
                        f"the ground truth (ids: {sorted(gt.categories, key=str)[:10]})")
        return None
    bbox = entry["bbox"]
    box = [_number(v) for v in bbox] if isinstance(bbox, list) and len(bbox) == 4 else None
    if box is None or any(v is None for v in box) or box[2] < 0 or box[3] < 0:
        problems.append(f"[{k}].bbox: must be 4 finite numbers [x, y, width, height] with "
                        f"width and height >= 0 (pixels), got {bbox!r}")
        return None
    score = _number(entry["score"])
    if score is None:
        problems.append(f"[{k}].score: must be a finite number, got {entry['score']!r}")
        return None
    x, y, w, h = box
    return image, label, score, x, y, x + w, y + h


def _lookup(table: dict, key: Any) -> Any:
    """``table[key]`` for an integer or string COCO id (spelled as in the ground truth:
    7 and "7" are different ids there too), else None."""
    if isinstance(key, bool) or not isinstance(key, (int, str)):
        return None
    return table.get(key)
