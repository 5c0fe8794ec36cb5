"""Bulk writes: many results at once, from a DataFrame or an Arrow table, without a
Python loop (:meth:`BulkWritesMixin.write_results_frame`, also used by the Parquet
import)."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import pyarrow as pa

from calibrate.errors import InputError
from calibrate.store._base import StoreBase, _utc_now
from calibrate.store.images import _missing_images_message

__all__ = ["BulkWritesMixin"]

_BOX_COLUMNS = ("x_min", "y_min", "x_max", "y_max")
_FRAME_COLUMNS = ("image_id", "label", "score", *_BOX_COLUMNS, "box_unit")


class BulkWritesMixin(StoreBase):
    """Writes whole tables of results into a run in one statement per table."""

    def write_results_frame(self, run_id: str, frame: Any) -> None:
        """Bulk-write many results at once and mark their images scored.

        This is the fast path for precomputed scores and benchmarks: the rows go
        through Arrow into DuckDB without a Python loop.

        Parameters
        ----------
        run_id : str
        frame : pandas.DataFrame, pyarrow.Table or dict of columns
            Columns ``image_id``, ``label``, ``score`` and optionally ``x_min``,
            ``y_min``, ``x_max``, ``y_max`` (all four or none) and ``box_unit``
            (default ``"pixel"`` where a box is given). One row per result; an image
            may have many rows. A row with a null ``label`` (and null score) only marks
            its image as scored with no results; a row with score ``-inf`` means "no
            result" for its label and is not stored as a result.

        Notes
        -----
        Every image in the frame is marked scored with ``attempts = 0`` (no detector
        call was made by calibrate). Rows of images the run has already finished are
        skipped, as in :meth:`record`. Raw responses are not stored.

        Raises
        ------
        InputError
            On missing or unknown columns, non-string ids or labels, a null id, a score
            that is NaN, null or ``+inf`` on a labeled row, or an image not registered
            in the run's dataset. Nothing is written then.
        """
        table = _as_arrow(frame)
        names = table.column_names
        missing = [c for c in ("image_id", "label", "score") if c not in names]
        if missing:
            raise InputError(
                f"the results frame lacks column(s) {', '.join(missing)}; it needs "
                f"image_id, label, score (and optionally {', '.join(_FRAME_COLUMNS[3:])})."
            )
        unknown = [c for c in names if c not in _FRAME_COLUMNS]
        if unknown:
            raise InputError(
                f"the results frame has unknown column(s) {', '.join(unknown)}; allowed: "
                f"{', '.join(_FRAME_COLUMNS)}. Select or rename the columns first."
            )
        box_present = [c for c in _BOX_COLUMNS if c in names]
        if box_present and len(box_present) != 4:
            raise InputError(
                f"box columns must come all four together ({', '.join(_BOX_COLUMNS)}); "
                f"the frame has only {', '.join(box_present)}."
            )
        for col in ("image_id", "label", "box_unit"):
            if col in names:
                t = table.schema.field(col).type
                if not (_is_stringish(t) or (col != "image_id" and pa.types.is_null(t))):
                    raise InputError(f"column {col!r} must hold strings, got Arrow type {t}.")
        for col in ("score", *box_present):
            t = table.schema.field(col).type
            if not (pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_null(t)):
                raise InputError(f"column {col!r} must hold numbers, got Arrow type {t}.")
        box_sql = (
            ", ".join(f"CAST(f.{c} AS DOUBLE) AS {c}" for c in _BOX_COLUMNS)
            if box_present
            else ", ".join(f"NULL::DOUBLE AS {c}" for c in _BOX_COLUMNS)
        )
        if "box_unit" in names:
            unit_sql = "f.box_unit"
        elif box_present:
            unit_sql = "CASE WHEN f.x_min IS NULL THEN NULL ELSE 'pixel' END"
        else:
            unit_sql = "NULL::VARCHAR"
        src = f"_calibrate_frame_{uuid.uuid4().hex}"
        select = (
            "SELECT CAST(f.image_id AS VARCHAR) AS image_id, "
            "CAST(f.label AS VARCHAR) AS label, CAST(f.score AS DOUBLE) AS score, "
            f"{box_sql}, CAST({unit_sql} AS VARCHAR) AS box_unit, 0 AS attempts FROM {src} f"
        )
        with self._lock:
            self._require_writable("write results")
            with self._transaction(f"writing results of run {run_id}") as con:
                run_key, dataset = self._run_row(run_id)
                con.register(src, table)
                try:
                    self._write_rows(con, run_key, dataset, select, has_box=bool(box_present))
                finally:
                    con.unregister(src)

    def _write_rows(self, con, run_key: int, dataset: str, select: str, *,
                    has_box: bool, params: dict | None = None) -> None:
        """Insert the rows of ``select`` (image_id, label, score, attempts[, box...]).

        Runs inside the caller's transaction. Image ids become keys with one hash join
        into a temporary table; every row is validated before the first one is written.
        """
        params = {"dataset": dataset, **(params or {})}
        # Always-NULL box columns would cost a third of the write time for box-less
        # results if carried through the temporary table, so only present ones are.
        box_cols = ", s.x_min, s.y_min, s.x_max, s.y_max, s.box_unit" if has_box else ""
        bad_score = (
            "(s.label IS NOT NULL AND (s.score IS NULL OR isnan(s.score) "
            "OR s.score = 'inf'::DOUBLE)) "
            "OR (s.label IS NULL AND s.score IS NOT NULL AND s.score <> '-inf'::DOUBLE)"
        )
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE _calibrate_rows AS
                SELECT i.image_key, s.label, s.score, s.attempts, ({bad_score}) AS bad{box_cols}
                FROM ({select}) s
                LEFT JOIN (SELECT image_key, image_id FROM images
                           WHERE dataset = $dataset AND current) i
                       ON i.image_id = s.image_id""",
            params,
        )
        try:
            n_unkeyed, n_bad, n_rows = con.execute(
                """SELECT count(*) FILTER (WHERE image_key IS NULL),
                          count(*) FILTER (WHERE bad), count(*)
                   FROM _calibrate_rows"""
            ).fetchall()[0]
            if n_bad:
                image_id, label, score = con.execute(
                    f"SELECT s.image_id, s.label, s.score FROM ({select}) s "
                    f"WHERE {bad_score} LIMIT 1",
                    {k: v for k, v in params.items() if k != "dataset"},
                ).fetchall()[0]
                raise InputError(
                    f"{n_bad} result row(s) have an invalid score, e.g. image {image_id!r} "
                    f"label {label!r} score {score!r}. A labeled row needs a finite score "
                    "(or -inf for 'no result'); NaN, null and +inf are not scores. Use a "
                    "null label and score to mark an image scored with no results."
                )
            if n_unkeyed:
                self._raise_unkeyed(con, dataset, select, params)
            if not n_rows:
                return
            # Rows of images the run already finished are skipped: that is what makes
            # re-recording idempotent. A run with no finished images yet (every bulk
            # import) needs no anti-join, which saves a scan and a hash table.
            resumed = con.execute(
                "SELECT count(*) FROM run_images WHERE run_key = ?", [run_key]
            ).fetchall()[0][0]
            not_done = (
                "AND NOT EXISTS (SELECT 1 FROM run_images ri "
                "WHERE ri.run_key = $run AND ri.image_key = r.image_key)"
                if resumed else ""
            )
            box_select = (
                "r.x_min, r.y_min, r.x_max, r.y_max, r.box_unit" if has_box
                else "NULL, NULL, NULL, NULL, NULL"
            )
            con.execute(
                f"""INSERT INTO results
                    SELECT $run, r.image_key, r.label, r.score, {box_select}
                    FROM _calibrate_rows r
                    WHERE r.label IS NOT NULL AND r.score > '-inf'::DOUBLE {not_done}""",
                {"run": run_key},
            )
            con.execute(
                f"""INSERT INTO run_images
                    SELECT $run, r.image_key, 'scored', max(r.attempts), $now
                    FROM _calibrate_rows r WHERE true {not_done}
                    GROUP BY r.image_key""",
                {"run": run_key, "now": _utc_now()},
            )
        finally:
            con.execute("DROP TABLE IF EXISTS _calibrate_rows")

    @staticmethod
    def _raise_unkeyed(con, dataset: str, select: str, params: dict) -> None:
        rows = con.execute(
            f"""SELECT count(*) FILTER (WHERE s.image_id IS NULL),
                       count(DISTINCT s.image_id) FILTER (WHERE s.image_id IS NOT NULL),
                       list(DISTINCT s.image_id ORDER BY s.image_id)
                           FILTER (WHERE s.image_id IS NOT NULL)[1:5]
                FROM ({select}) s
                WHERE NOT EXISTS (SELECT 1 FROM images i
                                  WHERE i.dataset = $dataset AND i.image_id = s.image_id
                                    AND i.current)""",
            params,
        ).fetchall()[0]
        n_null, n_missing, examples = rows
        if n_null:
            raise InputError(f"{n_null} result row(s) have no image_id; every row needs one.")
        raise InputError(_missing_images_message(dataset, n_missing, examples or []))


def _as_arrow(frame: Any) -> pa.Table:
    """Turn a DataFrame-like object into a pyarrow Table without copying when possible."""
    if isinstance(frame, pa.Table):
        return frame
    if isinstance(frame, pa.RecordBatch):
        return pa.Table.from_batches([frame])
    try:
        import pandas as pd

        if isinstance(frame, pd.DataFrame):
            return pa.Table.from_pandas(frame, preserve_index=False)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(frame, Mapping) or hasattr(frame, "__arrow_c_stream__"):
        try:
            return pa.table(frame)
        except (pa.ArrowException, TypeError, ValueError) as exc:
            raise InputError(f"could not read the results frame as a table: {exc}") from None
    raise InputError(
        f"frame must be a pandas DataFrame, a pyarrow Table or a dict of columns, got "
        f"{type(frame).__name__}."
    )


def _is_stringish(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or getattr(pa.types, "is_string_view", lambda _: False)(t)
    )
