"""The score store on a shared PostgreSQL database, for several writers at once.

:class:`PostgresScoreStore` is a :class:`calibrate.store.ScoreStore`: the same methods,
semantics and return types, from the same (DuckDB) SQL, translated by
:mod:`calibrate.store.pg_connection`. What differs is what sharing needs:

* **Several processes write at once.** Registering a dataset's images is serialised per
  dataset (a transaction advisory lock) and ``images`` keeps at most one current row per
  id (a unique partial index). A runner on the same (detector, version, dataset) as
  another one opens the run under a session advisory lock (:meth:`run_lock`), so both
  find and share one run, and claims each image before calling the detector
  (:meth:`claim_images`): an image claimed by a live connection is left to it, one
  claimed by a connection that is gone (a killed process) is taken over. Recording is
  idempotent per (run, image) (``run_images``' primary key, ``ON CONFLICT DO
  NOTHING``), and :meth:`finish_run` decides "finished" from what is stored.
* **The count table where the data lives.** ``label_scores`` (kept by a trigger as
  results are written) holds each image's highest score per run and label, so the
  count table is one ``GROUP BY`` over it joined to the selected images.
* **Nothing is cached across reads**: another process may have written since.

Credentials come from the URL, the ``PG*`` environment variables or ``~/.pgpass``; the
URL is not kept, only its redacted form (``path``), which is what messages show.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa

from calibrate.curves import CountTable
from calibrate.store import ScoreStore
from calibrate.store._base import _check_name, _utc_now
from calibrate.store.errors import StoreError
from calibrate.store.model import VersionData, _check_finish_status
from calibrate.store.location import StoreURL, redact_url
from calibrate.store.pg_connection import PgConnection
from calibrate.store.pg_schema import prepare_pg_schema
from calibrate.store.selection import latest_and_failed_ctes

__all__ = ["PostgresScoreStore"]

#: The connection that holds a claim, identified beyond its pid (pids are reused).
_ME = "(SELECT pid, backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid())"

_CLAIM_SQL = f"""
INSERT INTO claims AS c (run_key, image_key, owner_pid, owner_started, claimed_at)
SELECT %(run)s, k, me.pid, me.backend_start, now()
FROM unnest(%(keys)s::BIGINT[]) AS k, {_ME} AS me
WHERE NOT EXISTS (SELECT 1 FROM run_images ri WHERE ri.run_key = %(run)s AND ri.image_key = k)
ON CONFLICT (run_key, image_key) DO UPDATE
SET owner_pid = EXCLUDED.owner_pid, owner_started = EXCLUDED.owner_started,
    claimed_at = EXCLUDED.claimed_at
WHERE (c.owner_pid = EXCLUDED.owner_pid AND c.owner_started = EXCLUDED.owner_started)
   OR NOT EXISTS (SELECT 1 FROM pg_stat_activity a
                  WHERE a.pid = c.owner_pid AND a.backend_start = c.owner_started)
RETURNING image_key"""

#: (images of the run's dataset not finished by it, claims on it held by other live
#: connections, claims on it at all).
_RUN_STATE_SQL = """
SELECT (SELECT count(*) FROM images i
        WHERE i.dataset = %(dataset)s AND i.current AND NOT EXISTS (
            SELECT 1 FROM run_images ri WHERE ri.run_key = %(run)s AND ri.image_key = i.image_key)),
       (SELECT count(*) FROM claims c JOIN pg_stat_activity a
            ON a.pid = c.owner_pid AND a.backend_start = c.owner_started
        WHERE c.run_key = %(run)s AND c.owner_pid <> pg_backend_pid()
          AND NOT EXISTS (SELECT 1 FROM run_images ri
                          WHERE ri.run_key = c.run_key AND ri.image_key = c.image_key)),
       (SELECT count(*) FROM claims WHERE run_key = %(run)s)"""


#: A run's count table of one label: the images with a result, grouped by score, then
#: the images it scored with no result for the label (-inf) as the rest of the totals.
_FLAT_COUNT_SQL = """
WITH part AS (
    SELECT score, count(*) FILTER (WHERE positive) AS n_pos,
           count(*) FILTER (WHERE NOT positive) AS n_neg
    FROM label_scores
    WHERE run_key = %(run)s AND label = %(label)s AND current {split}
    GROUP BY score),
total AS (
    SELECT count(*) FILTER (WHERE %(label)s = ANY(labels)) AS n_pos, count(*) AS n
    FROM run_images
    WHERE run_key = %(run)s AND status = 'scored' AND current {split})
SELECT score, n_pos, n_neg FROM part
UNION ALL
SELECT '-Infinity'::float8, t.n_pos - coalesce(sum(p.n_pos), 0),
       t.n - t.n_pos - coalesce(sum(p.n_neg), 0)
FROM total t LEFT JOIN part p ON true GROUP BY t.n_pos, t.n"""


_TEXT, _FLOAT = pa.string(), pa.float64()
#: The columns of :meth:`ScoreStore.export_parquet`, with the types DuckDB writes.
_EXPORT_TYPES = {
    "run_id": _TEXT, "detector": _TEXT, "model_version": _TEXT, "dataset": _TEXT,
    "dataset_fingerprint": _TEXT, "run_settings": _TEXT, "run_labels": _TEXT,
    "detection_floor": _FLOAT, "run_status": _TEXT, "run_started_at": pa.timestamp("us"),
    "run_finished_at": pa.timestamp("us"), "image_id": _TEXT, "uri": _TEXT,
    "content_hash": _TEXT, "split": _TEXT, "image_labels": pa.list_(_TEXT),
    "attempts": pa.int32(), "label": _TEXT, "score": _FLOAT, "x_min": _FLOAT,
    "y_min": _FLOAT, "x_max": _FLOAT, "y_max": _FLOAT, "box_unit": _TEXT,
    "positive": pa.bool_(),
}


#: A staged run's rows as ``_write_rows`` takes them (no result: a NULL label).
_STAGED_ROWS_SQL = """
SELECT i.image_id, res.label, res.score, ri.attempts, res.x_min, res.y_min, res.x_max,
       res.y_max, res.box_unit
FROM run_images ri JOIN images i ON i.image_key = ri.image_key
LEFT JOIN results res ON res.run_key = ri.run_key AND res.image_key = ri.image_key
WHERE ri.run_key = {run} AND ri.status = 'scored'
ORDER BY ri.image_key, res.rowid"""


class PostgresScoreStore(ScoreStore):
    """The score store in a PostgreSQL database (see the module docstring).

    Parameters
    ----------
    url : str
        ``postgresql://[user[:password]@]host[:port]/database`` (or ``postgres://``).
        An empty database gets the schema; a password is better given by
        ``PGPASSWORD`` or ``~/.pgpass`` than in the URL, and is never stored or shown.
    read_only : bool, default False
        Refuse every writing method (other processes may write meanwhile).
    allow_incomplete : bool, default False
        As in :class:`calibrate.store.ScoreStore`.

    Raises
    ------
    StoreError
        If the server cannot be reached, or the database holds other tables.
    SchemaVersionError
        If the store was written by a newer ``calibrate``.
    """

    def __init__(self, url: str, *, read_only: bool = False, allow_incomplete: bool = False):
        self.path = StoreURL(redact_url(str(url)))  # the password is not kept
        self.read_only = bool(read_only)
        self.allow_incomplete = bool(allow_incomplete)
        self._lock = threading.RLock()
        self._con = PgConnection(getattr(url, "_url", str(url)))
        try:
            prepare_pg_schema(self._con, self.path, self.read_only)
        except BaseException:
            self._con.close()
            self._con = None
            raise

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("read-only" if self.read_only else "open")
        return f"PostgresScoreStore({str(self.path)!r}, {state})"

    # -- what differs with several writers ----------------------------------------------

    def data_check(self, detector: str, model_version: str,
                   dataset: str | None = None) -> VersionData:
        # Not cached: another process may have written since the last read.
        with self._lock:
            return self._check(detector, model_version, dataset)

    def _lock_dataset(self, con, dataset: str) -> None:
        con.run_native("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                       [f"calibrate-dataset:{dataset}"])

    @contextmanager
    def run_lock(self, detector: str, model_version: str, dataset: str) -> Iterator[None]:
        """Hold a session advisory lock on (detector, version, dataset) while a runner
        finds or begins its run, so that two processes share one run."""
        key = ["calibrate-run:" + "\x1f".join((detector, model_version, dataset))]
        with self._lock:
            self._db().run_native("SELECT pg_advisory_lock(hashtextextended(%s, 0))", key)
        try:
            yield
        finally:
            with self._lock:
                if self._con is not None:
                    self._con.run_native(
                        "SELECT pg_advisory_unlock(hashtextextended(%s, 0))", key)

    def claim_images(self, run_id: str, image_ids: list[str]) -> set[str]:
        """Claim images of a run for this process before calling the detector on them.

        Parameters
        ----------
        run_id : str
        image_ids : list of str
            Current images of the run's dataset.

        Returns
        -------
        set of str
            The ids this process may score: not finished by the run, and not claimed by
            another connection that is still alive (a claim of a killed process is
            taken over).
        """
        ids = list(dict.fromkeys(image_ids))
        if not ids:
            return set()
        with self._lock:
            self._require_writable("claim images")
            run_key, dataset = self._run_row(run_id)
            keys = self._image_keys(dataset, ids)
            got = {int(k) for (k,) in self._db().run_native(
                _CLAIM_SQL, {"run": run_key, "keys": list(keys.values())}).fetchall()}
        return {i for i, k in keys.items() if k in got}

    def _write_batch(self, con, run_key: int, batch) -> None:
        """Mark the images first (``ON CONFLICT DO NOTHING``): only those this
        transaction marked get results, so an image recorded by two processes at once
        is stored once."""
        marks = batch.marks
        if not marks["image_key"]:
            return
        now = _utc_now()
        kept = {int(k) for (k,) in con.run_native(
            """INSERT INTO run_images (run_key, image_key, status, attempts, scored_at,
                                      labels, split, current)
               SELECT %(run)s, t.k, t.s, t.a, %(now)s, i.labels, i.split, i.current
               FROM unnest(%(keys)s::BIGINT[], %(status)s::TEXT[], %(attempts)s::INTEGER[])
                    AS t(k, s, a)
               JOIN images i ON i.image_key = t.k
               ON CONFLICT (run_key, image_key) DO NOTHING RETURNING image_key""",
            {"run": run_key, "keys": marks["image_key"], "status": marks["status"],
             "attempts": marks["attempts"], "now": now}).fetchall()}
        for rows in (batch.results, batch.raw, batch.failures):
            keep = [k in kept for k in rows["image_key"]]
            for col in rows:
                rows[col] = [v for v, ok in zip(rows[col], keep) if ok]
        for col in marks:
            marks[col] = []
        batch.insert(con, run_key, now, self._insert_arrow)
        con.run_native("DELETE FROM claims WHERE run_key = %s AND image_key = ANY(%s)",
                       [run_key, sorted(kept)])

    @staticmethod
    def _insert_arrow(con, table: str, run_key: int, rows) -> None:
        # Straight into the table with COPY: no temporary table for each small batch.
        rows = rows.add_column(0, "run_key", pa.array([run_key] * rows.num_rows, pa.int32()))
        con.copy_into(table, rows)

    def finish_run(self, run_id: str, status: str = "finished") -> None:
        """As :meth:`ScoreStore.finish_run`; "finished" is decided from what is stored.

        A runner that ends its part of a shared run asks for "finished" while another
        process may still be scoring: the run then stays ``running`` (the last process
        to end finishes it). When images are unfinished and their claims belong to
        processes that are gone, the run is ``interrupted`` (the same command resumes
        it). A run nobody claimed images of (written through the API) is finished as
        asked.
        """
        _check_finish_status(status)
        with self._lock:
            self._require_writable("finish a run")
            with self._transaction(f"finishing run {run_id}") as con:
                run_key, dataset = self._run_row(run_id)
                con.run_native("SELECT 1 FROM runs WHERE run_key = %s FOR UPDATE", [run_key])
                if status == "finished":
                    missing, live, claimed = con.run_native(
                        _RUN_STATE_SQL, {"run": run_key, "dataset": dataset}).fetchall()[0]
                    if missing and live:
                        status = "running"
                    elif missing and claimed:
                        status = "interrupted"
                con.run_native(
                    "UPDATE runs SET status = %s, finished_at = %s WHERE run_key = %s",
                    [status, None if status == "running" else _utc_now(), run_key])

    # -- the count table from label_scores ----------------------------------------------

    def count_table(self, detector: str, model_version: str, label: str, *,
                    dataset: str | None = None, split: str | None = None) -> CountTable:
        """As :meth:`ScoreStore.count_table`; for a dataset scored by one run, counted
        from ``label_scores`` and ``run_images`` without a join (see
        :mod:`calibrate.store.pg_schema`)."""
        _check_name(label, "label")
        with self._lock:
            keys = self._version_run_keys(detector, model_version, dataset)
            if len(keys) > 1:  # each image's latest run: the general query
                return super().count_table(detector, model_version, label,
                                           dataset=dataset, split=split)
            cond = "AND split = %(split)s" if split is not None else ""
            rows = self._db().run_native(
                _FLAT_COUNT_SQL.format(split=cond),
                {"run": int(keys[0]), "label": label, "split": split}).fetchall()
            self._note_selection(detector, model_version, dataset)
        rows = [r for r in rows if r[1] or r[2]]
        return CountTable.from_counts(
            np.array([r[0] for r in rows], dtype=np.float64),
            np.array([r[1] for r in rows], dtype=np.int64),
            np.array([r[2] for r in rows], dtype=np.int64),
        )

    def _selection_sql(self, detector: str, model_version: str, dataset: str | None):
        keys = self._version_run_keys(detector, model_version, dataset)
        latest, failed = latest_and_failed_ctes(keys)
        if len(keys) == 1:
            best = f"""
                best AS (SELECT image_key, score FROM label_scores
                         WHERE run_key = {int(keys[0])} AND label = $label)"""
        else:
            runs = ", ".join(str(int(k)) for k in keys)
            best = f"""
                best AS (SELECT ls.image_key, ls.score FROM label_scores ls
                         JOIN latest l ON l.run_key = ls.run_key AND l.image_key = ls.image_key
                         WHERE ls.run_key IN ({runs}) AND ls.label = $label)"""
        return latest + "," + best, failed

    # -- Parquet ------------------------------------------------------------------------

    def _write_parquet(self, query: str, params: dict, path: Path) -> None:
        # The rows come through the connection; the file has the DuckDB export's types.
        import pyarrow.parquet as pq

        result = self._db().execute(query, params)
        cols = dict(zip(result.names, zip(*result.rows))) if result.rows else {}
        table = pa.table({name: pa.array(list(cols.get(name, ())), kind)
                          for name, kind in _EXPORT_TYPES.items()})
        try:
            pq.write_table(table, str(path))
        except (OSError, pa.ArrowException) as exc:
            raise StoreError(f"exporting to {path} failed: {exc}") from exc

    def import_parquet(self, path: str | Path, *, dataset: str) -> str:
        """As :meth:`ScoreStore.import_parquet`: the file is read and checked by an
        in-memory DuckDB store (the same rules, the same errors), whose runs are then
        copied in, in one transaction."""
        with ScoreStore(":memory:") as staged:
            last = staged.import_parquet(path, dataset=dataset)
            runs = staged._db().execute(
                "SELECT run_key, run_id, detector, model_version, dataset_fingerprint, "
                "settings, labels, detection_floor, status, started_at, finished_at "
                "FROM runs ORDER BY run_key").fetchall()
            images = staged._db().sql(
                "SELECT image_id, uri, content_hash, labels, split FROM images "
                "WHERE current ORDER BY image_key").to_arrow_table()
            rows = {run[0]: staged._db().sql(_STAGED_ROWS_SQL.format(run=int(run[0])))
                    .to_arrow_table() for run in runs}
        with self._lock:
            self._require_writable("import results")
            with self._transaction(f"importing {path}") as con:
                self._lock_dataset(con, dataset)
                con.register("_calibrate_import_images", images)
                self._upsert_images(con, dataset, "_calibrate_import_images")
                con.unregister("_calibrate_import_images")
                for (key, run_id, det, ver, fp, settings, labels, floor, status, started,
                     finished) in runs:
                    run_key = self._insert_run(con, run_id, det, ver, dataset, fp, settings,
                                               labels, floor, status, started, finished)
                    con.register("_calibrate_import_rows", rows[key])
                    self._write_rows(con, run_key, dataset,
                                     "SELECT * FROM _calibrate_import_rows", has_box=True)
                    con.unregister("_calibrate_import_rows")
        return last
