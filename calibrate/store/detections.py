"""Reading detections with their ground-truth boxes: what matching results to objects
(the detection decision unit) needs, for one ``(detector, model_version)``.

The images are chosen as the count tables choose them (:mod:`calibrate.store.selection`):
the current images of one dataset, each with its latest run that scored it; failed
images are left out and counted. Of those, only images whose manifest gave boxes
(``images.has_objects``) can be matched; the others are left out and counted too.
Every box comes back in pixels: ratio boxes (Rekognition's ``BoundingBox``) are
multiplied by the image's width and height.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

from calibrate.errors import InputError
from calibrate.store._base import _check_name
from calibrate.store.model import DetectionRows
from calibrate.store.selection import SelectionMixin, latest_and_failed_ctes

if TYPE_CHECKING:  # pragma: no cover
    pass

__all__ = ["DetectionsMixin"]

_BOX = ("x_min", "y_min", "x_max", "y_max")


class DetectionsMixin(SelectionMixin):
    """:meth:`detection_rows`: every detection and ground-truth object of a version."""

    def detection_rows(
        self,
        detector: str,
        model_version: str,
        *,
        dataset: str | None = None,
        split: str | None = None,
        labels: Iterable[str] | None = None,
        allow_incomplete: bool | None = None,
    ) -> DetectionRows:
        """Every detection and every ground-truth object of the images a version scored,
        in pixels, for matching detections to objects.

        Selects the images :meth:`count_table` counts (current images of one dataset,
        each with the latest run that scored it; failed images left out), keeping those
        whose manifest gave ground-truth boxes. Detections come from that run, in the
        order a matcher takes them: by image, label, descending score, then the order
        the detector returned them (so ties are broken as the detector listed them, as
        pycocotools' stable sort does).

        Parameters
        ----------
        detector, model_version : str
        dataset : str, optional
            The dataset to read (default: the latest the version ran on).
        split : str, optional
            Only images of this split.
        labels : iterable of str, optional
            Only detections and objects of these labels (default: all). Results of other
            labels are then not read at all, so an image-level attribute without a box
            (say a face's ``Sunglasses``) does not stop a box label from being matched.
        allow_incomplete : bool, optional
            Use a version whose latest run is incomplete (with a warning) instead of
            refusing it; default the store's ``allow_incomplete``. See
            :meth:`require_complete`.

        Returns
        -------
        DetectionRows

        Raises
        ------
        InputError
            If the version has no runs (on that dataset); if none of the selected images
            has ground-truth boxes; if a selected result has no box (it cannot be
            matched), a box in ratios for an image of unknown size, or a box unit other
            than ``"pixel"`` or ``"ratio"``. Each message names an image and the fix.
        IncompleteDataError
            If the version's latest run is incomplete and that is not allowed.
        """
        import pandas as pd

        wanted = _label_list(labels)
        if split is not None:
            _check_name(split, "split")
        with self._lock:
            incomplete = self.require_complete(detector, model_version, dataset,
                                               allow=allow_incomplete)
            name, keys = self._selected_runs(detector, model_version, dataset)
            n_images, n_without, n_failed = self._detection_counts(keys, split)
            if n_images == 0:
                raise InputError(_no_boxes_message(detector, model_version, name, split,
                                                   n_without))
            image_ids, det, obj = self._detection_frames(keys, split, wanted,
                                                         f"{detector} {model_version}")
            run_ids = tuple(r for (r,) in self._db().execute(
                "SELECT run_id FROM runs WHERE run_key IN (SELECT unnest($keys::INTEGER[])) "
                "ORDER BY run_key", {"keys": keys}).fetchall())
            self._note_selection(detector, model_version, dataset)
        return DetectionRows(
            detections=pd.DataFrame({
                "image_id": np.asarray(det["image_id"], dtype=object),
                "label": np.asarray(det["label"], dtype=object),
                "score": np.asarray(det["score"], dtype=np.float64),
                **{c: np.asarray(det[c], dtype=np.float64) for c in _BOX},
            }),
            objects=pd.DataFrame({
                "image_id": np.asarray(obj["image_id"], dtype=object),
                "label": np.asarray(obj["label"], dtype=object),
                **{c: np.asarray(obj[c], dtype=np.float64) for c in _BOX},
                "ignore": np.asarray(obj["ignore"], dtype=bool),
            }),
            n_images=n_images,
            image_ids=np.asarray(image_ids, dtype=object),
            n_failed=n_failed,
            n_without_boxes=n_without,
            dataset=name,
            run_ids=run_ids,
            incomplete=incomplete,
        )

    @staticmethod
    def _selected_images_sql(keys: list[int], split: str | None) -> str:
        """CTEs ending in ``sel(image_key, run_key, image_id, width, height, has_objects)``:
        the current images the runs scored (each with its latest run that scored it), and
        ``failed``, as the count tables select them."""
        latest, failed = latest_and_failed_ctes(keys)
        split_cond = "AND i.split = $split" if split is not None else ""
        return f"""WITH {latest}, {failed},
            sel AS (SELECT l.image_key, l.run_key, i.image_id, i.width, i.height,
                           coalesce(i.has_objects, false) AS has_objects
                    FROM latest l
                    JOIN images i ON i.image_key = l.image_key AND i.current {split_cond})"""

    def _detection_counts(self, keys: list[int], split: str | None) -> tuple[int, int, int]:
        """(scored images with boxes, scored images without, failed images with boxes)."""
        split_cond = "AND i.split = $split" if split is not None else ""
        counts = self._db().execute(
            f"""{self._selected_images_sql(keys, split)}
                SELECT count(*) FILTER (WHERE has_objects),
                       count(*) FILTER (WHERE NOT has_objects),
                       (SELECT count(*) FROM failed f JOIN images i
                          ON i.image_key = f.image_key AND i.current
                          AND coalesce(i.has_objects, false) {split_cond})
                FROM sel""",
            {"split": split} if split is not None else {},
        ).fetchall()[0]
        n_images, n_without, n_failed = (int(c) for c in counts)
        return n_images, n_without, n_failed

    def _detection_frames(self, keys: list[int], split: str | None,
                          labels: list[str] | None, who: str) -> tuple[np.ndarray, dict, dict]:
        """The selected images' ids, detections (pixels) and objects, as fetched columns,
        after refusing any detection that cannot be matched."""
        con = self._db()
        selected = self._selected_images_sql(keys, split)
        params: dict = {"split": split} if split is not None else {}
        image_ids = con.execute(
            f"{selected} SELECT image_id FROM sel WHERE has_objects ORDER BY image_key", params,
        ).fetchnumpy()["image_id"]
        label_cond = ""
        if labels is not None:
            label_cond = "AND {}.label IN (SELECT unnest($labels::VARCHAR[]))"
            params["labels"] = labels
        join = f"""FROM results res
                JOIN sel s ON s.run_key = res.run_key AND s.image_key = res.image_key
                WHERE s.has_objects {label_cond.format('res')}"""
        _refuse_unmatchable(con, selected, join, params, who)
        # Ratio boxes become pixels in the database; rowid keeps the order the detector
        # returned results in, for ties in score.
        det = con.execute(
            f"""{selected}
                SELECT s.image_id, res.label, res.score, {_PIXEL_BOX_SQL}
                {join}
                ORDER BY s.image_key, res.label, res.score DESC, res.rowid""",
            params,
        ).fetchnumpy()
        obj = con.execute(
            f"""{selected}
                SELECT s.image_id, o.label, o.x_min, o.y_min, o.x_max, o.y_max, o.ignore
                FROM objects o
                JOIN sel s ON s.image_key = o.image_key
                WHERE s.has_objects {label_cond.format('o')}
                ORDER BY s.image_key, o.rowid""",
            params,
        ).fetchnumpy()
        return image_ids, det, obj


#: A result's box in pixels (SQL over ``res``, a result, and ``s``, its image with
#: ``width`` and ``height``): ratio boxes are scaled by the image size. Shared with the
#: stored matches (:mod:`calibrate.store.matches`) so both convert boxes one way.
_PIXEL_BOX_SQL = ", ".join(
    f"CASE WHEN res.box_unit = 'ratio' THEN res.{c} * s.{size} ELSE res.{c} END AS {c}"
    for c, size in (("x_min", "width"), ("y_min", "height"), ("x_max", "width"),
                    ("y_max", "height")))


def _label_list(labels: Iterable[str] | None) -> list[str] | None:
    if labels is None:
        return None
    if isinstance(labels, str):
        raise InputError(f"labels must be a list of label names, got the string {labels!r}; "
                         f"write labels=[{labels!r}].")
    out = [_check_name(lab, "a label") for lab in labels]
    if not out:
        raise InputError("labels= is empty; give the labels to read, or None for all.")
    return out


#: Why a result cannot be matched, in the order they are reported (SQL over ``res``, ``s``).
_UNMATCHABLE = (
    ("res.x_min IS NULL",
     "has no box, so it cannot be matched to ground-truth objects; the detection unit "
     "needs a detector that returns boxes (or use unit = \"image\" for it)"),
    ("coalesce(res.box_unit, 'pixel') NOT IN ('pixel', 'ratio')",
     "has a box in an unknown unit {unit!r}; box_unit must be 'pixel' or 'ratio'"),
    ("res.box_unit = 'ratio' AND (s.width IS NULL OR s.height IS NULL)",
     "has a box in ratios of the image size, and the store does not know that image's "
     "size; register the manifest again with each image's width and height (they are "
     "read from local image files automatically)"),
)


def _refuse_unmatchable(con, selected: str, join: str, params: dict, who: str) -> None:
    """Raise for the first result that cannot be matched (no box, unknown unit, ratio box
    of an image of unknown size), naming its image and how many are like it: one bad
    box usually means the whole run (or detector) is so. A NULL unit with coordinates is
    a pixel box (bulk writes without box_unit)."""
    cases = " ".join(f"WHEN {cond} THEN {k}" for k, (cond, _) in enumerate(_UNMATCHABLE))
    row = con.execute(
        f"""{selected}, bad AS (
                SELECT s.image_key, s.image_id, res.label, res.score, res.box_unit,
                       res.run_key, res.rowid AS result_row, CASE {cases} END AS problem
                {join})
            SELECT problem, image_id, label, score, box_unit, r.run_id,
                   count(*) OVER (PARTITION BY problem) AS n
            FROM bad JOIN runs r ON r.run_key = bad.run_key
            WHERE problem IS NOT NULL
            ORDER BY problem, image_key, label, score DESC, result_row
            LIMIT 1""",
        params,
    ).fetchall()
    if not row:
        return
    problem, image_id, label, score, unit, run_id, n = row[0]
    others = f" ({n - 1} more result(s) like it)" if n > 1 else ""
    raise InputError(
        f"{who}, image {image_id!r}: the {label!r} result (score {score:g}, run {run_id}) "
        + _UNMATCHABLE[problem][1].format(unit=unit) + f"{others}."
    )


def _no_boxes_message(detector: str, model_version: str, dataset: str, split: str | None,
                      n_without: int) -> str:
    where = f"dataset {dataset!r}" + (f", split {split!r}," if split is not None else "")
    if n_without:
        return (f"none of the {n_without:,} images {detector} {model_version} scored in "
                f"{where} has ground-truth boxes, so detections cannot be matched. "
                "Register a manifest with boxes (COCO annotations[].bbox, or JSONL "
                "\"objects\"), score again (stored results are reused), or use "
                "unit = \"image\".")
    return (f"{detector} {model_version} scored no image with ground-truth boxes in "
            f"{where}; there is nothing to match.")
