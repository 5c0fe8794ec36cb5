"""Reusing stored results: an image already scored by the same detector, model version
and settings, with the same content, is never sent to the detector again.

A changed manifest (one image added, one label fixed) gets a new run, because its
fingerprint changed; the results of its unchanged images are copied into that run in
bulk when it opens (:meth:`ReuseMixin.reuse_results`), so only what is new is scored and
the new run holds the whole dataset on its own. "Unchanged" is decided by image identity:
the same id and the same content (its hash; the URI of a remote image), so the copy
also serves the same images under another dataset name. Local images read without
hashing have no known content and are never reused.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

from calibrate.store._base import StoreBase, _utc_now
from calibrate.store.images import content_key, content_key_sql
from calibrate.store.model import settings_json

__all__ = ["ReuseMixin"]


class ReuseMixin(StoreBase):
    """Finds reusable results (:meth:`reusable_image_ids`) and copies them into a run
    (:meth:`reuse_results`)."""

    def _source_runs(self, detector: str, model_version: str, settings_text: str,
                     exclude: int | None = None) -> str:
        """Keys of the runs whose results may be reused, as an SQL list ("" if none)."""
        keys = [int(k) for (k,) in self._db().execute(
            "SELECT run_key FROM runs WHERE detector = ? AND model_version = ? "
            "AND settings = ? AND run_key IS DISTINCT FROM ?",
            [detector, model_version, settings_text, exclude]).fetchall()]
        return ", ".join(map(str, keys))  # integers read from the database

    def reusable_image_ids(self, detector: str, model_version: str,
                           settings: Mapping[str, Any], images: Iterable[Any]) -> set[str]:
        """Which of these images some run of the same detector, version and settings has
        scored with the same content. Reads only: for plans and cost estimates.

        Parameters
        ----------
        detector, model_version : str
        settings : dict
            The detector's settings, as :meth:`begin_run` would store them.
        images : iterable of LabeledImage
            Need not be registered.

        Returns
        -------
        set of str
            Their ids.
        """
        pairs = [(img.image_id, key) for img in images
                 if (key := content_key(img)) is not None]
        if not pairs:
            return set()
        with self._lock:
            runs = self._source_runs(detector, model_version, settings_json(settings))
            if not runs:
                return set()
            con = self._db()
            src = f"_calibrate_wanted_{uuid.uuid4().hex}"
            con.register(src, pa.table({"image_id": pa.array([p[0] for p in pairs], pa.string()),
                                        "ck": pa.array([p[1] for p in pairs], pa.string())}))
            try:
                rows = con.execute(
                    f"""SELECT DISTINCT t.image_id FROM {src} t
                        JOIN images si ON si.image_id = t.image_id
                                      AND {content_key_sql('si')} = t.ck
                        JOIN run_images ri ON ri.image_key = si.image_key
                        WHERE ri.status = 'scored' AND ri.run_key IN ({runs})"""
                ).fetchall()
            finally:
                con.unregister(src)
        return {r[0] for r in rows}

    def reuse_results(self, run_id: str, image_ids: Iterable[str]) -> set[str]:
        """Copy stored results of unchanged images into a run, in bulk, instead of
        calling the detector again.

        For each of ``image_ids`` (current images of the run's dataset that the run has
        not finished), the latest run of the same detector, model version and settings
        that scored an image with the same id and content, on any dataset, supplies its
        results and raw response. The image is then marked scored in this run with
        ``attempts = 0`` (this run made no call), exactly as if it had been scored here.

        Parameters
        ----------
        run_id : str
        image_ids : iterable of str

        Returns
        -------
        set of str
            The ids copied; the others still need the detector.
        """
        ids = list(dict.fromkeys(image_ids))
        if not ids:
            return set()
        with self._lock:
            self._require_writable("reuse results")
            with self._transaction(f"reusing stored results in run {run_id}") as con:
                run_key, dataset = self._run_row(run_id)
                detector, model_version, settings_text = con.execute(
                    "SELECT detector, model_version, settings FROM runs WHERE run_key = ?",
                    [run_key]).fetchall()[0]
                runs = self._source_runs(detector, model_version, settings_text, run_key)
                if not runs:
                    return set()
                src = f"_calibrate_ids_{uuid.uuid4().hex}"
                # Arrow, not a list parameter: 10^6 ids bind in milliseconds, not seconds.
                con.register(src, pa.table({"image_id": pa.array(ids, pa.string())}))
                try:
                    # On an error the rollback discards the temporary table with the rest.
                    return self._copy_results(con, run_key, dataset, runs, src)
                finally:
                    con.unregister(src)

    @staticmethod
    def _copy_results(con, run_key: int, dataset: str, runs: str, ids: str) -> set[str]:
        """The copy itself, inside the caller's transaction: one statement per table.

        ``ids`` names a relation with the wanted ``image_id`` column.
        """
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE _calibrate_reuse AS
                WITH target AS (
                    SELECT i.image_key AS tkey, i.image_id, {content_key_sql('i')} AS ck
                    FROM images i
                    WHERE i.dataset = $dataset AND i.current
                      AND i.image_id IN (SELECT image_id FROM {ids})
                      AND NOT EXISTS (SELECT 1 FROM run_images d
                                      WHERE d.run_key = $run AND d.image_key = i.image_key)),
                cand AS (
                    SELECT t.tkey, t.image_id, ri.run_key, ri.image_key AS skey
                    FROM target t
                    JOIN images si ON si.image_id = t.image_id
                                  AND {content_key_sql('si')} = t.ck
                    JOIN run_images ri ON ri.image_key = si.image_key
                    WHERE ri.status = 'scored' AND ri.run_key IN ({runs}))
                SELECT tkey, any_value(image_id) AS image_id, max(run_key) AS run_key,
                       arg_max(skey, run_key) AS skey
                FROM cand GROUP BY tkey""",
            {"dataset": dataset, "run": run_key},
        )
        con.execute(
            f"""INSERT INTO results
                SELECT $run, p.tkey, res.label, res.score,
                       res.x_min, res.y_min, res.x_max, res.y_max, res.box_unit
                FROM _calibrate_reuse p
                JOIN results res ON res.run_key = p.run_key AND res.image_key = p.skey
                WHERE res.run_key IN ({runs})""",
            {"run": run_key},
        )
        con.execute(
            """INSERT INTO raw_responses
               SELECT $run, p.tkey, rr.response
               FROM _calibrate_reuse p
               JOIN raw_responses rr ON rr.run_key = p.run_key AND rr.image_key = p.skey""",
            {"run": run_key},
        )
        con.execute(
            "INSERT INTO run_images SELECT $run, tkey, 'scored', 0, $now FROM _calibrate_reuse",
            {"run": run_key, "now": _utc_now()},
        )
        copied = {r[0] for r in con.execute("SELECT image_id FROM _calibrate_reuse").fetchall()}
        con.execute("DROP TABLE _calibrate_reuse")
        return copied
