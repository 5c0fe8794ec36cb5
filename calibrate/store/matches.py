"""Stored matches: detections matched to ground-truth objects once per run, reused.

The detection decision unit needs every detection matched to the objects of its image
(:mod:`calibrate.matching`, the COCO protocol). Matching depends only on one run's
results and the objects of the images it scored, so it is computed per (run, IoU
threshold, label), stored in ``matches`` and reused; the detection-level count table
is then one ``GROUP BY score`` over the stored rows of the images the count tables
select (each current image with the latest run that scored it).

A stored match is reused only while what it was computed from is unchanged:
``match_sets`` keeps a fingerprint of the run's results of the label (scores, boxes,
their order), the label's objects of the images it scored and those images' sizes.
When a manifest registered again changes an image's boxes or size, or a resumed run
adds results, the fingerprint differs and the run's matches are computed again. An
image whose content changed has a new identity, and the old identity's matches are
simply no longer selected.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from calibrate.errors import InputError
from calibrate.matching import DEFAULT_IOU_THRESHOLD, DetectionTable, match_detections
from calibrate.store._base import _check_name, _utc_now
from calibrate.store.detections import (
    _PIXEL_BOX_SQL,
    DetectionsMixin,
    _no_boxes_message,
    _refuse_unmatchable,
)
from calibrate.store.selection import latest_and_failed_ctes

__all__ = ["MatchesMixin"]

# The images of one run that matching covers: scored by it, with ground-truth boxes.
_RUN_IMAGES = """run_imgs AS (
    SELECT ri.image_key, i.image_id, i.width, i.height FROM run_images ri
    JOIN images i ON i.image_key = ri.image_key
    WHERE ri.run_key = $run AND ri.status = 'scored' AND coalesce(i.has_objects, false))"""

_FINGERPRINT_SQL = f"""WITH {_RUN_IMAGES}
    SELECT
      (SELECT coalesce(sum(hash(res.image_key, res.score, res.x_min, res.y_min, res.x_max,
                                res.y_max, res.box_unit, res.rowid)), 0)::VARCHAR
              || '/' || count(*)
       FROM results res JOIN run_imgs USING (image_key)
       WHERE res.run_key = $run AND res.label = $label)
      || ':' ||
      (SELECT coalesce(sum(hash(o.image_key, o.x_min, o.y_min, o.x_max, o.y_max, o.ignore,
                                o.rowid)), 0)::VARCHAR || '/' || count(*)
       FROM objects o JOIN run_imgs USING (image_key) WHERE o.label = $label)
      || ':' ||
      (SELECT coalesce(sum(hash(image_key, width, height)), 0)::VARCHAR || '/' || count(*)
       FROM run_imgs)"""


class MatchesMixin(DetectionsMixin):
    """:meth:`detection_count_table`, over matches stored per run."""

    def detection_count_table(
        self,
        detector: str,
        model_version: str,
        label: str,
        *,
        iou_threshold: float = DEFAULT_IOU_THRESHOLD,
        dataset: str | None = None,
        split: str | None = None,
    ) -> DetectionTable:
        """The detection-level count table of one label, counted in DuckDB.

        Detections are matched to ground-truth objects with the COCO protocol
        (:func:`calibrate.matching.match_detections`) once per run and IoU threshold,
        stored and reused; the table is one ``GROUP BY score`` over the images
        :meth:`detection_rows` selects (current images with boxes, each with the latest
        run that scored it; failed images and images without boxes left out). Equal to
        ``match_detections(rows.detections, rows.objects).count_table(label)`` with
        ``n_images = rows.n_images`` for ``rows = store.detection_rows(...)``.

        Parameters
        ----------
        detector, model_version, label : str
        iou_threshold : float, default 0.5
        dataset, split : str, optional
            As in :meth:`count_table`.

        Returns
        -------
        calibrate.matching.DetectionTable
            ``table`` (positives: objects by the score of their matching detection,
            ``-inf`` if missed; negatives: false detections by score), ``n_images`` and
            ``iou_threshold``.

        Raises
        ------
        InputError
            If the version has no runs (on that dataset), none of its images has
            ground-truth boxes, or a result cannot be matched (no box, ratio box of an
            image of unknown size), naming the image.

        Notes
        -----
        A store opened ``read_only`` cannot keep matches: they are computed in memory
        each time (the same numbers).
        """
        _check_name(label, "label")
        tau = float(iou_threshold)
        with self._lock:
            name, keys = self._selected_runs(detector, model_version, dataset)
            n_images, n_without, _ = self._detection_counts(keys, split)
            if n_images == 0:
                raise InputError(_no_boxes_message(detector, model_version, name, split,
                                                   n_without))
            if self.read_only:
                rows = self.detection_rows(detector, model_version, dataset=dataset,
                                           split=split, labels=[label], allow_incomplete=True)
                m = match_detections(rows.detections, rows.objects, iou_threshold=tau,
                                     n_images=rows.n_images)
                return m.detection_table(label)
            for run in keys:
                self._ensure_matches(run, tau, label, detector, model_version)
            table, scores = self._matched_counts(keys, tau, label, split)
            self._note_selection(detector, model_version, dataset)
        return DetectionTable(table, n_images, tau, scores)

    def _matched_counts(self, keys: list[int], tau: float, label: str, split: str | None):
        from calibrate.curves import CountTable

        latest, _ = latest_and_failed_ctes(keys)
        split_cond = "AND i.split = $split" if split is not None else ""
        params = {"tau": tau, "label": label, **({"split": split} if split is not None else {})}
        cols = self._db().execute(
            f"""WITH {latest}
                SELECT m.score,
                       count(*) FILTER (WHERE m.kind = 'object') AS n_positive,
                       count(*) FILTER (WHERE m.kind = 'detection' AND m.outcome = 'false')
                           AS n_negative,
                       count(*) FILTER (WHERE m.kind = 'detection') AS n_detections
                FROM matches m
                JOIN latest l ON l.run_key = m.run_key AND l.image_key = m.image_key
                JOIN images i ON i.image_key = m.image_key AND i.current
                     AND coalesce(i.has_objects, false) {split_cond}
                WHERE m.iou_threshold = $tau AND m.label = $label
                GROUP BY 1 ORDER BY 1""",
            params,
        ).fetchnumpy()
        # One GROUP BY over every row: the scores of all detections (true, false,
        # ignored) come out with the counts, for the export's rounding interval.
        scores = np.asarray(cols["score"], dtype=np.float64)
        table = CountTable.from_counts(scores, np.asarray(cols["n_positive"], dtype=np.int64),
                                       np.asarray(cols["n_negative"], dtype=np.int64))
        return table, scores[np.asarray(cols["n_detections"], dtype=np.int64) > 0]

    def _ensure_matches(self, run: int, tau: float, label: str, detector: str,
                        model_version: str) -> None:
        """Match the run's detections of ``label`` unless stored matches are current."""
        con = self._db()
        params = {"run": run, "label": label}
        fingerprint = con.execute(_FINGERPRINT_SQL, params).fetchall()[0][0]
        stored = con.execute(
            "SELECT fingerprint FROM match_sets WHERE run_key = $run AND iou_threshold = $tau "
            "AND label = $label", {**params, "tau": tau}).fetchall()
        if stored and stored[0][0] == fingerprint:
            return
        # The run's images as detection_rows' ``sel``, so results are refused and ratio
        # boxes converted to pixels by the same SQL.
        selected = f"""WITH {_RUN_IMAGES}, sel AS (
            SELECT image_key, $run AS run_key, image_id, width, height, true AS has_objects
            FROM run_imgs)"""
        join = """FROM results res
                JOIN sel s ON s.run_key = res.run_key AND s.image_key = res.image_key
                WHERE res.label = $label"""
        _refuse_unmatchable(con, selected, join, params, f"{detector} {model_version}")
        det_cols = con.execute(
            f"""{selected}
                SELECT s.image_key AS image_id, res.label, res.score, {_PIXEL_BOX_SQL}
                {join}
                ORDER BY s.image_key, res.score DESC, res.rowid""", params).fetchnumpy()
        detections = pd.DataFrame({
            "image_id": np.asarray(det_cols["image_id"], dtype=np.int64),
            "label": np.asarray(det_cols["label"], dtype=object),
            **{c: np.asarray(det_cols[c], dtype=np.float64)
               for c in ("score", "x_min", "y_min", "x_max", "y_max")},
        })
        obj = con.execute(
            f"""WITH {_RUN_IMAGES}
                SELECT o.image_key AS image_id, o.label, o.x_min, o.y_min, o.x_max, o.y_max,
                       o.ignore
                FROM objects o JOIN run_imgs ri ON ri.image_key = o.image_key
                WHERE o.label = $label
                ORDER BY o.image_key, o.rowid""", params).df()
        m = match_detections(detections, obj, iou_threshold=tau)
        rows = _match_rows(m, run, tau, label)
        with self._transaction(f"storing matches of run key {run}") as tx:
            tx.execute("DELETE FROM matches WHERE run_key = $run AND iou_threshold = $tau "
                       "AND label = $label", {**params, "tau": tau})
            src = f"_calibrate_matches_{run}"
            tx.register(src, rows)
            try:
                tx.execute(f"INSERT INTO matches SELECT * FROM {src}")
            finally:
                tx.unregister(src)
            tx.execute("INSERT OR REPLACE INTO match_sets VALUES ($run, $tau, $label, $fp, $at)",
                       {**params, "tau": tau, "fp": fingerprint, "at": _utc_now()})


def _match_rows(m, run: int, tau: float, label: str) -> pd.DataFrame:
    """The rows ``matches`` stores for one run and label, in its column order."""
    keep = ~m.object_ignore
    n_obj, n_det = int(keep.sum()), m.detection_score.size
    outcome_det = np.where(m.detection_matched, "true",
                           np.where(m.detection_ignored, "ignored", "false"))
    outcome_obj = np.where(m.object_detection[keep] >= 0, "true", "missed")
    return pd.DataFrame({
        "run_key": np.full(n_obj + n_det, run, dtype=np.int32),
        "image_key": np.concatenate([m.object_image[keep].astype(np.int64),
                                     m.detection_image.astype(np.int64)]),
        "iou_threshold": np.full(n_obj + n_det, tau),
        "label": np.full(n_obj + n_det, label, dtype=object),
        "kind": np.array(["object"] * n_obj + ["detection"] * n_det, dtype=object),
        "score": np.concatenate([m.object_score[keep], m.detection_score]),
        "outcome": np.concatenate([outcome_obj, outcome_det]).astype(object),
    })
