"""Parquet export and import: per-result rows with their run details and ground truth,
to share a store's scores or to move them into another store."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import duckdb

from calibrate.errors import InputError
from calibrate.store._base import _check_name, _utc_now
from calibrate.store.bulk import _BOX_COLUMNS, BulkWritesMixin
from calibrate.store.errors import StoreError
from calibrate.store.model import _FINISH_STATUSES, redact_secrets
from calibrate.store.writes import WritesMixin

__all__ = ["ParquetMixin"]


class ParquetMixin(WritesMixin, BulkWritesMixin):
    """Writes results to Parquet files and reads such files back as new runs."""

    def export_parquet(
        self,
        path: str | Path,
        *,
        detector: str | None = None,
        model_version: str | None = None,
    ) -> int:
        """Write per-result rows, with run details and ground truth, to a Parquet file.

        One row per result of every scored image; an image a run scored with no result
        at all gets one row with null ``label`` and ``score``, so that
        :meth:`import_parquet` restores it as "no result" (``-inf``) rather than losing
        it. Failures and raw responses are not exported.

        Columns: ``run_id, detector, model_version, dataset, dataset_fingerprint,
        run_settings`` (JSON), ``run_labels`` (JSON), ``detection_floor, run_status,
        run_started_at, run_finished_at, image_id, uri, content_hash, split,
        image_labels`` (list), ``attempts, label, score, x_min, y_min, x_max, y_max,
        box_unit, positive`` (label in image_labels).

        Parameters
        ----------
        path : str or path-like
            Output file; overwritten if it exists.
        detector, model_version : str, optional
            Export only these runs.

        Returns
        -------
        int
            Number of rows written.
        """
        path = Path(path)
        if not path.parent.exists():
            raise InputError(f"cannot write {path}: folder {path.parent} does not exist.")
        conds, params = ["ri.status = 'scored'"], {}
        if detector is not None:
            conds.append("r.detector = $detector")
            params["detector"] = detector
        if model_version is not None:
            conds.append("r.model_version = $model_version")
            params["model_version"] = model_version
        query = f"""
            SELECT r.run_id, r.detector, r.model_version, r.dataset, r.dataset_fingerprint,
                   r.settings AS run_settings, r.labels AS run_labels, r.detection_floor,
                   r.status AS run_status, r.started_at AS run_started_at,
                   r.finished_at AS run_finished_at,
                   i.image_id, i.uri, i.content_hash, i.split, i.labels AS image_labels,
                   ri.attempts, res.label, res.score,
                   res.x_min, res.y_min, res.x_max, res.y_max, res.box_unit,
                   list_contains(i.labels, res.label) AS positive
            FROM run_images ri
            JOIN runs r ON r.run_key = ri.run_key
            JOIN images i ON i.image_key = ri.image_key
            LEFT JOIN results res ON res.run_key = ri.run_key AND res.image_key = ri.image_key
            WHERE {' AND '.join(conds)}
            ORDER BY r.run_key, ri.image_key, res.label, res.score DESC"""
        with self._lock:
            self._write_parquet(query, params, path)
        import pyarrow.parquet as pq

        return int(pq.read_metadata(path).num_rows)

    def _write_parquet(self, query: str, params: dict, path: Path) -> None:
        """Write the rows of ``query`` to a Parquet file (the PostgreSQL store overrides)."""
        try:
            self._db().sql(query, params=params).write_parquet(str(path))
        except duckdb.Error as exc:
            raise StoreError(f"exporting to {path} failed: {exc}") from exc

    def import_parquet(self, path: str | Path, *, dataset: str) -> str:
        """Load a file written by :meth:`export_parquet` into new runs of this store.

        Each run in the file becomes a new run (new run id) on ``dataset``, created in
        the order the original runs started, so the latest-run rule picks the same
        scores as in the original store. Its settings gain an ``imported_from`` entry
        (file and original run id). The file's images are registered in ``dataset``
        (updating existing ones, as :meth:`add_images` does).

        Parameters
        ----------
        path : str or path-like
        dataset : str
            Dataset to register the images in and attach the runs to.

        Returns
        -------
        str
            The new run id; when the file holds several runs, the id of the last one
            created (all are listed by :meth:`runs`).

        Raises
        ------
        InputError
            If the file is missing, lacks required columns, holds no runs, or has
            invalid scores. Nothing is imported then.
        """
        _check_name(dataset, "dataset")
        path = Path(path)
        if not path.is_file():
            raise InputError(f"no Parquet file at {path}.")
        required = ("run_id", "detector", "model_version", "image_id", "label", "score",
                    "image_labels")
        with self._lock:
            self._require_writable("import results")
            with self._transaction(f"importing {path}") as con:
                try:
                    con.execute(
                        "CREATE OR REPLACE TEMP TABLE _calibrate_import AS "
                        "SELECT * FROM read_parquet(?)",
                        [str(path)],
                    )
                except duckdb.Error as exc:
                    raise InputError(f"cannot read {path} as Parquet: {exc}") from None
                try:
                    return self._import(con, path, dataset, required)
                finally:
                    con.execute("DROP TABLE IF EXISTS _calibrate_import")

    def _import(self, con, path: Path, dataset: str, required: tuple[str, ...]) -> str:
        cols = {name for (name,) in con.execute(
            "SELECT column_name FROM (DESCRIBE _calibrate_import)").fetchall()}
        missing = [c for c in required if c not in cols]
        if missing:
            raise InputError(
                f"{path} lacks column(s) {', '.join(missing)}; import_parquet reads files "
                "written by ScoreStore.export_parquet. For other score tables use "
                "write_results_frame."
            )

        def col(name: str, default: str) -> str:
            return name if name in cols else default

        order = col("run_started_at", "NULL::TIMESTAMP")
        runs = con.execute(
            f"""SELECT run_id, count(DISTINCT detector), count(DISTINCT model_version),
                       any_value(detector), any_value(model_version),
                       any_value({col('dataset_fingerprint', 'NULL')}),
                       any_value({col('run_settings', 'NULL')}),
                       any_value({col('run_labels', 'NULL')}),
                       any_value({col('detection_floor', 'NULL')}),
                       any_value({col('run_status', 'NULL')}),
                       min({order}), any_value({col('run_finished_at', 'NULL::TIMESTAMP')})
                FROM _calibrate_import GROUP BY run_id
                ORDER BY min({order}) NULLS FIRST, run_id"""
        ).fetchall()
        if not runs:
            raise InputError(f"{path} holds no rows to import.")
        # Images: one row per id; if runs disagree about an image, the latest run wins.
        # arg_max_null, unlike arg_max, keeps a NULL hash or split instead of skipping it.
        by = f"coalesce({order}, TIMESTAMP '1970-01-01')"
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE _calibrate_import_images AS
                SELECT CAST(image_id AS VARCHAR) AS image_id,
                       arg_max_null({col('uri', 'image_id')}, {by}) AS uri,
                       arg_max_null({col('content_hash', 'NULL::VARCHAR')}, {by}) AS content_hash,
                       arg_max_null(coalesce(image_labels, []::VARCHAR[]), {by}) AS labels,
                       arg_max_null({col('split', 'NULL::VARCHAR')}, {by}) AS split
                FROM _calibrate_import WHERE image_id IS NOT NULL GROUP BY image_id
                ORDER BY min(rowid)"""
        )
        self._upsert_images(con, dataset, "_calibrate_import_images")
        con.execute("DROP TABLE _calibrate_import_images")
        has_box = all(c in cols for c in _BOX_COLUMNS)
        box = (
            f"x_min, y_min, x_max, y_max, {col('box_unit', 'NULL::VARCHAR')} AS box_unit"
            if has_box else ""
        )
        new_id = ""
        for (old_id, n_det, n_ver, detector, model_version, fingerprint, settings_json,
             labels_json, floor, status, started_at, finished_at) in runs:
            if old_id is None or n_det != 1 or n_ver != 1:
                raise InputError(
                    f"{path}: run {old_id!r} has {n_det} detectors and {n_ver} model "
                    "versions; each run must have exactly one of each."
                )
            try:
                settings = json.loads(settings_json) if settings_json else {}
            except ValueError:
                settings = {"unparsed_settings": settings_json}
            settings = redact_secrets(settings)
            settings["imported_from"] = {"file": str(path), "run_id": old_id}
            new_id = uuid.uuid4().hex
            run_key = self._insert_run(
                con, new_id, detector, model_version, dataset,
                fingerprint or f"imported:{path.name}",
                json.dumps(settings, sort_keys=True, default=str), labels_json,
                None if floor is None else float(floor),
                status if status in _FINISH_STATUSES else
                ("interrupted" if status == "running" else "finished"),
                started_at or _utc_now(), finished_at or _utc_now(),
            )
            select = (
                f"""SELECT image_id, label, CAST(score AS DOUBLE) AS score,
                           {col('attempts', '0')} AS attempts{', ' + box if box else ''}
                    FROM _calibrate_import WHERE run_id = $old_run"""
            )
            self._write_rows(con, run_key, dataset, select, has_box=has_box,
                             params={"old_run": old_id})
        return new_id
