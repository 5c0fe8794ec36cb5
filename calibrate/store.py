"""The score store: every run, image, score and failure in one embedded DuckDB file.

A project keeps one store file (``calibrate.duckdb`` by default). The runner writes
into it as images are scored, so an interrupted run resumes where it stopped; the
curves read from it one ``(detector, model version, label)`` at a time, either as
image-level score arrays (:meth:`ScoreStore.scores`) or as a count table aggregated
inside DuckDB (:meth:`ScoreStore.count_table`), which is all the statistics need.

Semantics (see ``DESIGN.md``)
-----------------------------
* A run is one pass of one detector at one model version over one dataset. Runs are
  ordered by creation; "latest" below means created last.
* An image is ``(dataset, image_id)``. Ground truth for a label is "the label is in
  the image's labels" (exact string match).
* The image-level score of a label is the highest score among the image's results
  for that label in a run. An image the run scored with no result for the label
  scores ``-inf`` ("no result", ranks below every real score).
* A failed image has no score at all: it is never turned into ``-inf`` or any other
  score, only counted (:attr:`LabelScores.n_failed`) and listed
  (:meth:`ScoreStore.failures`).
* When several runs of the same ``(detector, model_version)`` scored the same image,
  the latest run that *scored* it supplies its scores, so no image is counted twice.
  A later failure does not hide an earlier valid score of the same model version.

Schema (version 1)
------------------
Big tables refer to runs and images by integer surrogate keys (``run_key``,
``image_key``): joining and grouping 10^6 rows on integers is several times faster
than on 32-character run ids and image paths, and the strings are stored once. The
views ``result_rows``, ``run_image_rows`` and ``failure_rows`` show the same data with
``run_id`` / ``image_id`` for ad-hoc SQL (``duckdb calibrate.duckdb``).

``meta(key, value)``
    ``schema_version`` and bookkeeping.
``runs(run_id, run_key, detector, model_version, dataset, dataset_fingerprint,
settings, labels, detection_floor, status, started_at, finished_at, tool_version)``
    ``settings`` and ``labels`` are JSON text; times are UTC.
``images(image_key, dataset, image_id, uri, content_hash, labels, split)``
    ``labels`` is a list of the labels truly present.
``run_images(run_key, image_key, status, attempts, scored_at)``
    One row per image a run has finished (``'scored'`` or ``'failed'``); its primary
    key makes recording an image twice in a run impossible.
``results(run_key, image_key, label, score, x_min, y_min, x_max, y_max, box_unit)``
    One row per result (box) the detector returned.
``failures(run_key, image_key, kind, message, attempts, failed_at)``
    ``kind`` is one of :data:`FAILURE_KINDS`. (The time column is not called ``at``:
    that is a reserved word in DuckDB 2.)
``raw_responses(run_key, image_key, response)``
    The detector's response as zlib-compressed JSON, kept for audit.

Older files are migrated when opened for writing (see :data:`SCHEMA_VERSION` and
``_MIGRATIONS``); files written by a newer ``calibrate`` are refused.

Credentials never belong in the store: it stores only what callers pass, and run
settings pass through :func:`redact_secrets` first.
"""

from __future__ import annotations

import gc
import json
import math
import numbers
import operator
import re
import threading
import uuid
import warnings
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from calibrate.curves import CountTable
from calibrate.errors import CalibrateError, CalibrateWarning, InputError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

    from calibrate.detectors.base import Detection
    from calibrate.manifest import LabeledImage

__all__ = [
    "DEFAULT_PATH",
    "FAILURE_KINDS",
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "LabelScores",
    "MigrationWarning",
    "RunInfo",
    "SchemaVersionError",
    "ScoreStore",
    "StoreError",
    "redact_secrets",
]

#: Schema version this module writes. Bump it together with a new ``_MIGRATIONS`` step.
SCHEMA_VERSION = 1

#: File name used when no path is given.
DEFAULT_PATH = "calibrate.duckdb"

#: Values of ``runs.status``. ``running`` is set by :meth:`ScoreStore.begin_run`; the
#: others by :meth:`ScoreStore.finish_run`.
RUN_STATUSES = ("running", "finished", "interrupted", "failed")

#: Values of ``failures.kind``: retries exhausted, the image itself is bad, the
#: detector cannot work at all, or any other exception.
FAILURE_KINDS = ("retryable", "image", "fatal", "error")

_FINISH_STATUSES = ("finished", "interrupted", "failed")
_BOX_COLUMNS = ("x_min", "y_min", "x_max", "y_max")
_FRAME_COLUMNS = ("image_id", "label", "score", *_BOX_COLUMNS, "box_unit")

# A settings key containing any of these (case-insensitive) has its value replaced.
# Over-matching ("keypoint_threshold") only loses a setting from the record, while
# under-matching would write a credential into a file that gets shared and exported.
_SECRET_KEY = re.compile(r"key|secret|token|password|passwd|credential", re.IGNORECASE)
_REDACTED = "<redacted>"


# ---------------------------------------------------------------------------------------
# Errors and small public types
# ---------------------------------------------------------------------------------------


class StoreError(CalibrateError):
    """The score store file cannot be used as asked.

    Raised when the file is locked by another process, is not a score store, is
    closed, is open read-only for a write, or when a database operation failed (the
    message then says that the transaction was rolled back).
    """


class SchemaVersionError(StoreError):
    """The file's schema version is not the one this ``calibrate`` can use.

    Either the file was written by a newer ``calibrate`` (upgrade this one), or it is
    older and needs migrating, which cannot happen while it is opened read-only.

    Attributes
    ----------
    path : pathlib.Path
        The store file.
    found : int
        Schema version of the file.
    supported : int
        Schema version this ``calibrate`` reads and writes (:data:`SCHEMA_VERSION`).
    """

    def __init__(self, message: str, *, path: Path, found: int, supported: int):
        super().__init__(message)
        self.path = path
        self.found = found
        self.supported = supported


class MigrationWarning(CalibrateWarning):
    """Some rows of an old store file could not be carried into the current schema."""


@dataclass(frozen=True)
class RunInfo:
    """One run as recorded in the store.

    Attributes
    ----------
    run_id : str
        32 hex digits (uuid4).
    detector, model_version : str
        Scores are comparable only within one ``(detector, model_version)``.
    dataset : str
        Name of the labeled image set the run scored.
    dataset_fingerprint : str
        Identifies the exact content of the dataset when the run started.
    settings : dict
        Detector settings that affect scores, with secrets redacted.
    labels : list of str or None
        Labels the detector declared it can emit, when known.
    detection_floor : float or None
        Lowest score the detector can report at all.
    status : {"running", "finished", "interrupted", "failed"}
    started_at : datetime.datetime
        UTC, naive.
    finished_at : datetime.datetime or None
        UTC, naive; None while running.
    """

    run_id: str
    detector: str
    model_version: str
    dataset: str
    dataset_fingerprint: str
    settings: dict[str, Any]
    labels: list[str] | None
    detection_floor: float | None
    status: str
    started_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True, eq=False)
class LabelScores:
    """Image-level scores of one label for one ``(detector, model_version)``.

    The three arrays are aligned: entry ``i`` of each describes the same image. Images
    come in the order they were first registered with :meth:`ScoreStore.add_images`,
    so repeated calls return identical arrays (bootstrap seeds stay reproducible).

    Attributes
    ----------
    image_ids : ndarray of object (str), shape (n,)
        With ``dataset=None`` the same id may appear once per dataset.
    scores : ndarray of float64, shape (n,)
        Highest score of the label in the image; ``-inf`` where the detector returned
        no result for the label.
    positive : ndarray of bool, shape (n,)
        True where the label is truly present in the image.
    n_failed : int
        Images the detector failed on and no run of this version ever scored; they
        are not in the arrays.
    """

    image_ids: np.ndarray
    scores: np.ndarray
    positive: np.ndarray
    n_failed: int

    def __len__(self) -> int:
        return int(self.scores.size)


def redact_secrets(settings: Any) -> Any:
    """Replace the values of secret-looking keys with ``"<redacted>"``, recursively.

    A key looks secret when its name contains ``key``, ``secret``, ``token``,
    ``password``, ``passwd`` or ``credential`` (case-insensitive). Nested mappings and
    lists are walked; the input is not modified.

    Parameters
    ----------
    settings : object
        Usually a dict of detector settings.

    Returns
    -------
    object
        A copy with secret values replaced.

    Examples
    --------
    >>> redact_secrets({"region": "eu-west-1", "ApiKey": "abc", "nested": {"token": 1}})
    {'region': 'eu-west-1', 'ApiKey': '<redacted>', 'nested': {'token': '<redacted>'}}
    """
    if isinstance(settings, Mapping):
        return {
            k: (_REDACTED if _SECRET_KEY.search(str(k)) else redact_secrets(v))
            for k, v in settings.items()
        }
    if isinstance(settings, (list, tuple)):
        return [redact_secrets(v) for v in settings]
    return settings


# ---------------------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------------------


def _schema_v1_sql(run_start: int = 1, image_start: int = 1) -> str:
    # Sequences start past any keys a migration copied in, so new rows never collide.
    return f"""
CREATE SEQUENCE run_keys START {int(run_start)};
CREATE SEQUENCE image_keys START {int(image_start)};
CREATE TABLE meta (
    key VARCHAR PRIMARY KEY,
    value VARCHAR NOT NULL
);
CREATE TABLE runs (
    run_id VARCHAR PRIMARY KEY,
    run_key INTEGER NOT NULL UNIQUE,
    detector VARCHAR NOT NULL,
    model_version VARCHAR NOT NULL,
    dataset VARCHAR NOT NULL,
    dataset_fingerprint VARCHAR NOT NULL,
    settings VARCHAR NOT NULL,          -- JSON object, secrets redacted
    labels VARCHAR,                     -- JSON list, or NULL when not declared
    detection_floor DOUBLE,
    status VARCHAR NOT NULL
        CHECK (status IN ('running', 'finished', 'interrupted', 'failed')),
    started_at TIMESTAMP NOT NULL,      -- UTC
    finished_at TIMESTAMP,              -- UTC
    tool_version VARCHAR NOT NULL
);
CREATE TABLE images (
    image_key BIGINT NOT NULL DEFAULT nextval('image_keys'),
    dataset VARCHAR NOT NULL,
    image_id VARCHAR NOT NULL,
    uri VARCHAR NOT NULL,
    content_hash VARCHAR,
    labels VARCHAR[] NOT NULL,
    split VARCHAR,
    PRIMARY KEY (dataset, image_id)
);
CREATE TABLE run_images (
    run_key INTEGER NOT NULL,
    image_key BIGINT NOT NULL,
    status VARCHAR NOT NULL CHECK (status IN ('scored', 'failed')),
    attempts INTEGER NOT NULL,
    scored_at TIMESTAMP NOT NULL,       -- UTC; when the run finished the image
    PRIMARY KEY (run_key, image_key)
);
CREATE TABLE results (
    run_key INTEGER NOT NULL,
    image_key BIGINT NOT NULL,
    label VARCHAR NOT NULL,
    score DOUBLE NOT NULL,
    x_min DOUBLE,
    y_min DOUBLE,
    x_max DOUBLE,
    y_max DOUBLE,
    box_unit VARCHAR
);
CREATE TABLE failures (
    run_key INTEGER NOT NULL,
    image_key BIGINT NOT NULL,
    kind VARCHAR NOT NULL CHECK (kind IN ('retryable', 'image', 'fatal', 'error')),
    message VARCHAR NOT NULL,
    attempts INTEGER NOT NULL,
    failed_at TIMESTAMP NOT NULL        -- UTC
);
CREATE TABLE raw_responses (
    run_key INTEGER NOT NULL,
    image_key BIGINT NOT NULL,
    response BLOB NOT NULL,             -- zlib(JSON)
    PRIMARY KEY (run_key, image_key)
);
CREATE VIEW result_rows AS
    SELECT r.run_id, r.detector, r.model_version, r.dataset, i.image_id,
           res.label, res.score, res.x_min, res.y_min, res.x_max, res.y_max, res.box_unit
    FROM results res
    JOIN runs r ON r.run_key = res.run_key
    JOIN images i ON i.image_key = res.image_key;
CREATE VIEW run_image_rows AS
    SELECT r.run_id, i.image_id, ri.status, ri.attempts, ri.scored_at
    FROM run_images ri
    JOIN runs r ON r.run_key = ri.run_key
    JOIN images i ON i.image_key = ri.image_key;
CREATE VIEW failure_rows AS
    SELECT r.run_id, r.detector, r.model_version, r.dataset, i.image_id,
           f.kind, f.message, f.attempts, f.failed_at
    FROM failures f
    JOIN runs r ON r.run_key = f.run_key
    JOIN images i ON i.image_key = f.image_key;
"""


def _migrate_0_to_1(con: duckdb.DuckDBPyConnection) -> None:
    """Migrate the pre-release "version 0" layout to version 1.

    Version 0 files have no ``meta`` table and refer to everything by strings::

        runs(run_id VARCHAR PRIMARY KEY, detector, model_version, dataset,
             dataset_fingerprint, settings VARCHAR, labels VARCHAR, detection_floor DOUBLE,
             status VARCHAR, started_at TIMESTAMP, finished_at TIMESTAMP)
        images(dataset, image_id, uri, content_hash,
               labels VARCHAR,          -- comma-separated, '' for none
               split, PRIMARY KEY (dataset, image_id))
        results(run_id, image_id, label, score DOUBLE,
                box VARCHAR,            -- JSON '[x_min, y_min, x_max, y_max]' or NULL
                box_unit VARCHAR)
        failures(run_id, image_id, kind, message, attempts INTEGER, failed_at TIMESTAMP)
        raw_responses(run_id, image_id, response BLOB)

    Version 0 had no ``run_images``: an image counted as done in a run when it had a
    result or a failure there. The migration derives ``run_images`` from exactly that
    (a result wins over a failure), so an image that a version-0 run scored with no
    result at all is not marked done and a resumed run scores it again. Settings are
    passed through :func:`redact_secrets`, which version 0 did not do.
    """
    for name in ("runs", "images", "results", "failures", "raw_responses"):
        con.execute(f"ALTER TABLE {name} RENAME TO v0_{name}")
    n_runs = con.execute("SELECT count(*) FROM v0_runs").fetchall()[0][0]
    n_images = con.execute("SELECT count(*) FROM v0_images").fetchall()[0][0]
    con.execute(_schema_v1_sql(run_start=n_runs + 1, image_start=n_images + 1))

    # Runs go through Python (there are few) so that old settings get redacted.
    rows = con.execute(
        """SELECT run_id, detector, model_version, dataset, dataset_fingerprint, settings,
                  labels, detection_floor, status, started_at, finished_at
           FROM v0_runs ORDER BY started_at NULLS FIRST, run_id"""
    ).fetchall()
    for run_key, row in enumerate(rows, start=1):
        (run_id, detector, model_version, dataset, fingerprint, settings, labels,
         floor, status, started_at, finished_at) = row
        try:
            settings_obj = json.loads(settings) if settings else {}
        except ValueError:
            settings_obj = {"unparsed_settings": settings}
        if status not in RUN_STATUSES:
            status = "interrupted"
        con.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [run_id, run_key, detector, model_version, dataset, fingerprint or "",
             json.dumps(redact_secrets(settings_obj), sort_keys=True, default=str),
             labels, floor, status, started_at or _utc_now(), finished_at,
             "unknown (migrated from schema 0)"],
        )
    con.execute(
        r"""INSERT INTO images
            SELECT row_number() OVER (ORDER BY rowid), dataset, image_id,
                   coalesce(uri, image_id), content_hash,
                   CASE WHEN labels IS NULL OR trim(labels) = '' THEN []::VARCHAR[]
                        ELSE regexp_split_to_array(trim(labels), '\s*,\s*') END,
                   split
            FROM v0_images"""
    )
    # Keys for every (run, image) pair the old tables mention; rows whose image was
    # never registered cannot get truth, so they are dropped (and reported).
    keyed = """
        SELECT r.run_key, i.image_key, {cols}
        FROM {table} t
        JOIN runs r ON r.run_id = t.run_id
        LEFT JOIN images i ON i.dataset = r.dataset AND i.image_id = t.image_id"""
    lost = {}
    for table, cols in (
        ("v0_results", "t.label, t.score, t.box, t.box_unit"),
        ("v0_failures", "t.kind, t.message, t.attempts, t.failed_at"),
        ("v0_raw_responses", "t.response"),
    ):
        con.execute(f"CREATE TEMP TABLE k_{table} AS " + keyed.format(cols=cols, table=table))
        n_lost = con.execute(
            f"SELECT count(*) FROM k_{table} WHERE image_key IS NULL"
        ).fetchall()[0][0]
        n_lost += con.execute(
            f"SELECT count(*) FROM {table} t WHERE t.run_id NOT IN (SELECT run_id FROM runs)"
        ).fetchall()[0][0]
        if n_lost:
            lost[table.removeprefix("v0_")] = n_lost
    box = "trim(string_split(trim(box, '[] '), ',')[{}])::DOUBLE"
    con.execute(
        f"""INSERT INTO results
            SELECT run_key, image_key, label, score,
                   {box.format(1)}, {box.format(2)}, {box.format(3)}, {box.format(4)},
                   CASE WHEN box IS NULL THEN NULL ELSE coalesce(box_unit, 'pixel') END
            FROM k_v0_results WHERE image_key IS NOT NULL AND score IS NOT NULL"""
    )
    con.execute(
        """INSERT INTO failures
           SELECT run_key, image_key,
                  CASE WHEN kind IN ('retryable', 'image', 'fatal', 'error') THEN kind
                       ELSE 'error' END,
                  coalesce(message, ''), coalesce(attempts, 1), coalesce(failed_at, $now)
           FROM k_v0_failures WHERE image_key IS NOT NULL""",
        {"now": _utc_now()},
    )
    con.execute(
        """INSERT INTO run_images
           SELECT run_key, image_key,
                  CASE WHEN bool_or(scored) THEN 'scored' ELSE 'failed' END,
                  max(attempts), max(done_at)
           FROM (
               SELECT k.run_key, k.image_key, true AS scored, 1 AS attempts,
                      coalesce(r.finished_at, r.started_at) AS done_at
               FROM k_v0_results k JOIN runs r ON r.run_key = k.run_key
               WHERE k.image_key IS NOT NULL AND k.score IS NOT NULL
               UNION ALL
               SELECT run_key, image_key, false, attempts, failed_at
               FROM failures
           )
           GROUP BY run_key, image_key"""
    )
    con.execute(
        """INSERT INTO raw_responses
           SELECT run_key, image_key, any_value(response)
           FROM k_v0_raw_responses
           WHERE image_key IS NOT NULL AND response IS NOT NULL
           GROUP BY run_key, image_key"""
    )
    for table in ("v0_results", "v0_failures", "v0_raw_responses"):
        con.execute(f"DROP TABLE k_{table}")
    for name in ("raw_responses", "failures", "results", "images", "runs"):
        con.execute(f"DROP TABLE v0_{name}")
    if lost:
        warnings.warn(
            "migrating the score store from schema 0 dropped rows that name an image "
            "not registered in their run's dataset, or an unknown run: "
            + ", ".join(f"{n} {t}" for t, n in lost.items())
            + ". Their ground truth is unknown, so they could not be used in curves.",
            MigrationWarning,
            stacklevel=4,
        )


#: ``_MIGRATIONS[v]`` turns a version-``v`` file into version ``v + 1``. Steps run in
#: one transaction, so a failed migration leaves the file as it was.
_MIGRATIONS: dict[int, Callable[[duckdb.DuckDBPyConnection], None]] = {0: _migrate_0_to_1}


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def _utc_now() -> datetime:
    # Naive UTC: DuckDB's TIMESTAMP has no zone, and TIMESTAMPTZ would need pytz/zoneinfo
    # conversions on every fetch.
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _tool_version() -> str:
    try:
        import calibrate

        return str(getattr(calibrate, "__version__", "unknown"))
    except Exception:  # pragma: no cover - only if the package is half-imported
        return "unknown"


def _is_real(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{what} must be a non-empty string, got {value!r}.")
    return value


def _check_attempts(value: Any, where: str) -> int:
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
        raise InputError(f"{where}: attempts must be a non-negative integer, got {value!r}.")
    return int(value)


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


def _one(result: duckdb.DuckDBPyConnection) -> tuple | None:
    # DuckDB 2 keeps a result open after fetchone() and then refuses register() on the
    # connection, so single rows are read with fetchall().
    rows = result.fetchall()
    return rows[0] if rows else None


_IMAGE_FIELD_NAMES = ("image_id", "uri", "content_hash", "labels", "split")


def _has_image_fields(obj: Any) -> bool:
    return all(hasattr(obj, f) for f in _IMAGE_FIELD_NAMES)


@contextmanager
def _gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _json_loads_or_none(text: Any) -> Any:
    # pandas turns a NULL VARCHAR into NaN (or pd.NA), so anything but a string is "none".
    return json.loads(text) if isinstance(text, str) else None


# ---------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------


class ScoreStore:
    """The score store: one DuckDB file with runs, images, results and failures.

    Parameters
    ----------
    path : str or path-like, default "calibrate.duckdb"
        The store file. Created with the current schema if missing; migrated if it was
        written by an older ``calibrate``.
    read_only : bool, default False
        Open without write access: several processes may then read the file at once,
        but every writing method raises :class:`StoreError`. The file must exist.

    Attributes
    ----------
    path : pathlib.Path
    read_only : bool

    Raises
    ------
    StoreError
        If the file is locked by another process, is not a DuckDB file, or is a DuckDB
        file that is not a score store.
    SchemaVersionError
        If the file was written by a newer ``calibrate``, or needs migrating and
        ``read_only`` is set.

    Notes
    -----
    DuckDB lets one process write a file at a time (readers must wait too), so open the
    store in the process that runs detectors and close it when done. Within a process
    a store object can be shared between threads: every method holds a lock.

    Examples
    --------
    >>> with ScoreStore("calibrate.duckdb") as store:                # doctest: +SKIP
    ...     table = store.count_table("surface-defect", "v3", "scratch")
    """

    def __init__(self, path: str | Path = DEFAULT_PATH, *, read_only: bool = False):
        self.path = Path(path)
        self.read_only = bool(read_only)
        self._lock = threading.RLock()
        self._con: duckdb.DuckDBPyConnection | None = None
        if self.read_only and not self.path.exists():
            raise StoreError(
                f"no score store at {self.path}: read_only=True cannot create one. Check "
                "the path, or open it without read_only to create a new store."
            )
        self._con = self._connect()
        try:
            self._prepare_schema()
        except BaseException:
            self._con.close()
            self._con = None
            raise

    # -- lifecycle ----------------------------------------------------------------------

    def _connect(self) -> duckdb.DuckDBPyConnection:
        try:
            return duckdb.connect(str(self.path), read_only=self.read_only)
        except duckdb.IOException as exc:
            text = str(exc)
            if "lock" in text.lower():
                raise StoreError(
                    f"cannot open the score store {self.path}: another process has it "
                    f"open ({text}). DuckDB lets one process write a file at a time; wait "
                    "for the other calibrate command to finish (or stop it) and retry."
                ) from None
            if "not a valid DuckDB database file" in text:
                raise StoreError(
                    f"{self.path} is not a DuckDB file, so it cannot be a score store. Pass "
                    "the path of an existing store, or a new file name to create one."
                ) from None
            raise StoreError(f"cannot open the score store {self.path}: {text}") from None
        except duckdb.ConnectionException as exc:
            raise StoreError(
                f"cannot open the score store {self.path}: it is already open in this "
                f"process with a different read_only setting ({exc}). Close the other "
                "ScoreStore first, or open this one with the same read_only setting."
            ) from None

    def close(self) -> None:
        """Close the file. Safe to call twice; the store cannot be used afterwards."""
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._con is None

    def __enter__(self) -> ScoreStore:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self.closed else ("read-only" if self.read_only else "open")
        return f"ScoreStore({str(self.path)!r}, {state})"

    def _db(self) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            raise StoreError(
                f"the score store {self.path} is closed; open a new ScoreStore to use it."
            )
        return self._con

    def _require_writable(self, action: str) -> duckdb.DuckDBPyConnection:
        con = self._db()
        if self.read_only:
            raise StoreError(
                f"cannot {action}: the score store {self.path} was opened with "
                "read_only=True. Open it without read_only to write."
            )
        return con

    @contextmanager
    def _transaction(self, what: str) -> Iterator[duckdb.DuckDBPyConnection]:
        con = self._db()
        con.begin()
        try:
            yield con
        except BaseException as exc:
            con.rollback()
            if isinstance(exc, duckdb.Error):
                raise StoreError(
                    f"{what} failed in the score store {self.path}: {exc}. The transaction "
                    "was rolled back, so nothing from this call was written."
                ) from exc
            raise
        else:
            con.commit()

    # -- schema -------------------------------------------------------------------------

    def _prepare_schema(self) -> None:
        con = self._db()
        tables = {
            name
            for (name,) in con.execute(
                "SELECT table_name FROM duckdb_tables() "
                "WHERE database_name = current_database() AND schema_name = 'main'"
            ).fetchall()
        }
        if "meta" in tables:
            version = self._stored_version()
        elif {"runs", "results"} <= tables:
            version = 0
        elif not tables:
            if self.read_only:
                raise StoreError(
                    f"{self.path} is an empty DuckDB file, not yet a score store; open it "
                    "once without read_only to create the schema."
                )
            with self._transaction("creating the store schema") as tx:
                tx.execute(_schema_v1_sql())
                tx.executemany(
                    "INSERT INTO meta VALUES (?, ?)",
                    [
                        ["schema_version", str(SCHEMA_VERSION)],
                        ["created_by", f"calibrate {_tool_version()}"],
                        ["created_at", _utc_now().isoformat()],
                    ],
                )
            return
        else:
            raise StoreError(
                f"{self.path} is a DuckDB file but not a calibrate score store (it has "
                f"tables {', '.join(sorted(tables))} and no 'meta' table). Use a different "
                "file name for the score store."
            )
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"the score store {self.path} has schema version {version}, written by a "
                f"newer calibrate; this calibrate ({_tool_version()}) reads schema version "
                f"{SCHEMA_VERSION} and older. Upgrade calibrate (pip install -U calibrate) "
                "to open it.",
                path=self.path,
                found=version,
                supported=SCHEMA_VERSION,
            )
        if version < SCHEMA_VERSION:
            if self.read_only:
                raise SchemaVersionError(
                    f"the score store {self.path} has schema version {version} and must be "
                    f"migrated to version {SCHEMA_VERSION} before use, which needs write "
                    "access. Open it once without read_only (this migrates it in place).",
                    path=self.path,
                    found=version,
                    supported=SCHEMA_VERSION,
                )
            self._migrate(version)

    def _stored_version(self) -> int:
        row = _one(self._db().execute("SELECT value FROM meta WHERE key = 'schema_version'"))
        try:
            return int(row[0])
        except (TypeError, ValueError):
            raise StoreError(
                f"the score store {self.path} has a 'meta' table without a valid "
                f"schema_version (found {row and row[0]!r}); the file is damaged or was not "
                "written by calibrate."
            ) from None

    def _migrate(self, found: int) -> None:
        with self._transaction(f"migrating from schema version {found}") as con:
            version = found
            while version < SCHEMA_VERSION:
                _MIGRATIONS[version](con)
                version += 1
            con.execute(
                "INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", [str(version)]
            )
            con.execute(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                [f"migrated_from_{found}", _utc_now().isoformat()],
            )

    # -- lookups ------------------------------------------------------------------------

    def _run_row(self, run_id: str) -> tuple[int, str]:
        row = _one(self._db().execute(
            "SELECT run_key, dataset FROM runs WHERE run_id = ?", [run_id]
        ))
        if row is None:
            raise InputError(
                f"no run {run_id!r} in the score store {self.path}. Use the run_id returned "
                "by begin_run() or find_run(); store.runs() lists the runs."
            )
        return int(row[0]), row[1]

    def _version_run_keys(
        self, detector: str, model_version: str, dataset: str | None
    ) -> list[int]:
        con = self._db()
        sql = "SELECT run_key FROM runs WHERE detector = ? AND model_version = ?"
        params: list[Any] = [detector, model_version]
        if dataset is not None:
            sql += " AND dataset = ?"
            params.append(dataset)
        keys = [int(k) for (k,) in con.execute(sql + " ORDER BY run_key", params).fetchall()]
        if keys:
            return keys
        known = con.execute(
            "SELECT DISTINCT detector, model_version FROM runs ORDER BY ALL"
        ).fetchall()
        if dataset is not None and (detector, model_version) in known:
            sets = [d for (d,) in con.execute(
                "SELECT DISTINCT dataset FROM runs WHERE detector = ? AND model_version = ? "
                "ORDER BY 1", [detector, model_version]).fetchall()]
            raise InputError(
                f"detector {detector!r} version {model_version!r} has no runs on dataset "
                f"{dataset!r}; it was run on: {', '.join(map(repr, sets))}."
            )
        listing = ", ".join(f"{d!r} {v!r}" for d, v in known[:20]) or "none yet"
        raise InputError(
            f"no runs of detector {detector!r} version {model_version!r} in the score store "
            f"{self.path}. Known (detector, model_version): {listing}."
        )

    def _image_keys(self, dataset: str, image_ids: list[str]) -> dict[str, int]:
        if not image_ids:
            return {}
        wanted = list(dict.fromkeys(image_ids))
        rows = self._db().execute(
            "SELECT image_id, image_key FROM images "
            "WHERE dataset = $dataset AND image_id IN (SELECT unnest($ids::VARCHAR[]))",
            {"dataset": dataset, "ids": wanted},
        ).fetchall()
        keys = {image_id: int(key) for image_id, key in rows}
        missing = [i for i in wanted if i not in keys]
        if missing:
            raise InputError(_missing_images_message(dataset, len(missing), missing[:5]))
        return keys

    # -- images -------------------------------------------------------------------------

    def add_images(self, dataset: str, images: Iterable[LabeledImage]) -> None:
        """Register labeled images of a dataset (insert, or update when they changed).

        Images are identified by ``(dataset, image_id)``. An image already registered
        gets the new ``uri``, ``content_hash``, ``labels`` and ``split`` (a changed
        content hash means the file changed; changed labels are a correction of the
        ground truth, which every later curve uses). Scores already recorded stay
        attached to the runs that produced them; the run's ``dataset_fingerprint``
        tells which data they saw. Re-adding unchanged images writes nothing.

        Parameters
        ----------
        dataset : str
            Name of the labeled set, as later passed to :meth:`begin_run`.
        images : iterable of LabeledImage
            Each needs ``image_id``, ``uri``, ``labels``, ``content_hash``, ``split``.

        Raises
        ------
        InputError
            If an image id appears twice, or an image lacks an id, URI or valid labels.
        StoreError
            If the store is read-only.
        """
        _check_name(dataset, "dataset")
        images = images if isinstance(images, (list, tuple)) else list(images)
        if not images:
            return
        # The per-image work runs with the garbage collector paused: building millions of
        # small lists otherwise triggers repeated full-heap collections that cost several
        # times the work itself (10^6 images: about 7 s instead of 1.5 s). The helper's
        # lists are freed by reference counting before collection resumes.
        with _gc_paused():
            table = _images_table(dataset, images)
        with self._lock:
            self._require_writable("add images")
            with self._transaction(f"adding images to dataset {dataset!r}") as con:
                src = f"_calibrate_images_{uuid.uuid4().hex}"
                con.register(src, table)
                try:
                    self._upsert_images(con, dataset, src)
                finally:
                    con.unregister(src)

    @staticmethod
    def _upsert_images(con, dataset: str, src: str) -> None:
        """Upsert rows (image_id, uri, content_hash, labels, split) of relation ``src``.

        An UPDATE of the changed rows followed by an INSERT of the new ones is about
        twice as fast in DuckDB as ``INSERT ... ON CONFLICT DO UPDATE``, and touches
        nothing when a manifest is re-added unchanged.
        """
        con.execute(
            f"""UPDATE images SET uri = s.uri, content_hash = s.content_hash,
                                  labels = s.labels, split = s.split
                FROM {src} s
                WHERE images.dataset = $dataset AND images.image_id = s.image_id
                  AND (images.uri IS DISTINCT FROM s.uri
                       OR images.content_hash IS DISTINCT FROM s.content_hash
                       OR images.labels IS DISTINCT FROM s.labels
                       OR images.split IS DISTINCT FROM s.split)""",
            {"dataset": dataset},
        )
        con.execute(
            f"""INSERT INTO images (dataset, image_id, uri, content_hash, labels, split)
                SELECT $dataset, s.image_id, s.uri, s.content_hash, s.labels, s.split
                FROM {src} s
                WHERE NOT EXISTS (SELECT 1 FROM images i
                                  WHERE i.dataset = $dataset AND i.image_id = s.image_id)""",
            {"dataset": dataset},
        )

    # -- runs ---------------------------------------------------------------------------

    def begin_run(
        self,
        *,
        detector: str,
        model_version: str,
        dataset: str,
        dataset_fingerprint: str,
        settings: dict[str, Any] | None,
        labels: list[str] | None,
        detection_floor: float | None,
    ) -> str:
        """Start a new run and return its id.

        Parameters
        ----------
        detector, model_version : str
            Together they key every score of the run.
        dataset : str
            Name under which the images were registered with :meth:`add_images`.
        dataset_fingerprint : str
            Identifies the dataset's exact content (used by :meth:`find_run`).
        settings : dict
            Detector settings that affect scores, stored as JSON. They must not contain
            credentials; values of secret-looking keys are replaced by ``"<redacted>"``
            anyway (see :func:`redact_secrets`). Values that are not JSON types are
            stored as their ``str()``.
        labels : list of str or None
            Labels the detector can emit, when known.
        detection_floor : float or None
            Lowest score the detector can report at all.

        Returns
        -------
        str
            The new run's id (32 hex digits). The run's status is ``"running"``.
        """
        for value, what in (
            (detector, "detector"),
            (model_version, "model_version"),
            (dataset, "dataset"),
            (dataset_fingerprint, "dataset_fingerprint"),
        ):
            _check_name(value, what)
        if settings is None:
            settings = {}
        if not isinstance(settings, Mapping):
            raise InputError(f"settings must be a dict, got {type(settings).__name__}.")
        settings_json = json.dumps(redact_secrets(settings), sort_keys=True, default=str)
        labels_json = None
        if labels is not None:
            if isinstance(labels, str) or not all(isinstance(x, str) for x in labels):
                raise InputError(f"labels must be a list of strings or None, got {labels!r}.")
            labels_json = json.dumps(list(dict.fromkeys(labels)))
        if detection_floor is not None:
            if not _is_real(detection_floor) or not math.isfinite(detection_floor):
                raise InputError(
                    f"detection_floor must be a finite number or None, got {detection_floor!r}."
                )
            detection_floor = float(detection_floor)
        run_id = uuid.uuid4().hex
        with self._lock:
            self._require_writable("begin a run")
            with self._transaction("beginning a run") as con:
                self._insert_run(
                    con, run_id, detector, model_version, dataset, dataset_fingerprint,
                    settings_json, labels_json, detection_floor, "running", _utc_now(), None,
                )
        return run_id

    def _insert_run(self, con, run_id, detector, model_version, dataset, fingerprint,
                    settings_json, labels_json, floor, status, started_at, finished_at) -> int:
        return int(
            con.execute(
                """INSERT INTO runs VALUES (?, nextval('run_keys'), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   RETURNING run_key""",
                [run_id, detector, model_version, dataset, fingerprint, settings_json,
                 labels_json, floor, status, started_at, finished_at, _tool_version()],
            ).fetchall()[0][0]
        )

    def finish_run(self, run_id: str, status: str = "finished") -> None:
        """Mark a run as ended.

        Parameters
        ----------
        run_id : str
        status : {"finished", "interrupted", "failed"}, default "finished"
            ``interrupted`` runs can be resumed: record into them again and finish them
            later.
        """
        if status not in _FINISH_STATUSES:
            raise InputError(
                f"status must be one of {', '.join(_FINISH_STATUSES)}, got {status!r}."
            )
        with self._lock:
            self._require_writable("finish a run")
            with self._transaction(f"finishing run {run_id}") as con:
                self._run_row(run_id)
                con.execute(
                    "UPDATE runs SET status = ?, finished_at = ? WHERE run_id = ?",
                    [status, _utc_now(), run_id],
                )

    def set_detection_floor(self, run_id: str, floor: float) -> None:
        """Record a detection floor found while the run went on.

        A service that filters results before answering (a Viam vision service with
        ``default_minimum_confidence`` set, say) hides every score below its cutoff;
        when the run sees that symptom, the observed floor is kept here so reports can
        show the censored region. An already recorded floor is only ever raised.

        Parameters
        ----------
        run_id : str
        floor : float
            Finite; scores below it are unknowable for this run.
        """
        if not _is_real(floor) or not math.isfinite(floor):
            raise InputError(f"floor must be a finite number, got {floor!r}.")
        with self._lock:
            self._require_writable("record a detection floor")
            with self._transaction(f"recording the detection floor of run {run_id}") as con:
                self._run_row(run_id)
                con.execute(
                    "UPDATE runs SET detection_floor = greatest(coalesce(detection_floor, ?), ?) "
                    "WHERE run_id = ?",
                    [float(floor), float(floor), run_id],
                )

    def find_run(
        self,
        detector: str,
        model_version: str,
        dataset_fingerprint: str,
        dataset: str | None = None,
    ) -> RunInfo | None:
        """The most recent run of a detector version on exactly this dataset content.

        The runner uses it to resume: if the latest matching run is ``interrupted`` (or
        still ``running`` after a crash), it continues that run, skipping
        :meth:`done_image_ids`.

        Returns
        -------
        RunInfo or None
            None when no run matches.
        """
        # The dataset name is part of the match: the same content under another name is
        # another dataset in this store (its images are registered under that name).
        with self._lock:
            row = self._db().execute(
                f"""SELECT {_RUN_INFO_COLUMNS} FROM runs
                    WHERE detector = ? AND model_version = ? AND dataset_fingerprint = ?
                      AND (? IS NULL OR dataset = ?)
                    ORDER BY run_key DESC LIMIT 1""",
                [detector, model_version, dataset_fingerprint, dataset, dataset],
            ).fetchall()
            row = row[0] if row else None
        return None if row is None else _run_info(row)

    def failed_image_ids(self, run_id: str, kinds: tuple[str, ...] = ("retryable",)) -> set[str]:
        """Images the run counts as failed (not scored) with a failure of these kinds."""
        with self._lock:
            run_key, _ = self._run_row(run_id)
            marks = ", ".join("?" for _ in kinds)
            rows = self._db().execute(
                f"""SELECT i.image_id FROM run_images ri
                    JOIN images i ON i.image_key = ri.image_key
                    WHERE ri.run_key = ? AND ri.status = 'failed' AND ri.image_key IN (
                        SELECT image_key FROM failures WHERE run_key = ? AND kind IN ({marks}))""",
                [run_key, run_key, *kinds],
            ).fetchall()
        return {r[0] for r in rows}

    def reopen_failed(self, run_id: str, kinds: tuple[str, ...] = ("retryable",)) -> int:
        """Make images whose failure in the run was transient count as not done.

        A run that gave up on an image after its retries (throttling, a timeout) should
        try it again when it is resumed; permanent failures (a bad image) stay done. The
        failure records are kept as history.

        Returns
        -------
        int
            How many images were reopened.
        """
        with self._lock:
            self._require_writable("reopen failed images")
            with self._transaction(f"reopening failed images of run {run_id}") as con:
                run_key, _ = self._run_row(run_id)
                marks = ", ".join("?" for _ in kinds)
                where = f"""run_key = ? AND status = 'failed' AND image_key IN (
                            SELECT image_key FROM failures WHERE run_key = ? AND kind IN ({marks}))"""
                n = con.execute(
                    f"SELECT count(*) FROM run_images WHERE {where}", [run_key, run_key, *kinds]
                ).fetchall()[0][0]
                con.execute(f"DELETE FROM run_images WHERE {where}", [run_key, run_key, *kinds])
        return int(n)

    def n_failed(
        self, detector: str, model_version: str, *, dataset: str | None = None,
        split: str | None = None,
    ) -> int:
        """Images a version failed on and never scored (as :attr:`LabelScores.n_failed`),
        without loading any scores."""
        with self._lock:
            _, failed = self._selection_sql(detector, model_version, dataset)
            return self._n_failed(failed, split)

    def splits(self, dataset: str | None = None) -> list[str]:
        """The split names of the registered images (of one dataset, if given)."""
        with self._lock:
            rows = self._db().execute(
                "SELECT DISTINCT split FROM images WHERE split IS NOT NULL "
                "AND (? IS NULL OR dataset = ?) ORDER BY 1",
                [dataset, dataset],
            ).fetchall()
        return [r[0] for r in rows]

    def truth_labels(self, detector: str, model_version: str) -> list[str]:
        """Labels truly present on images a version scored, whether or not it ever
        reported them: a label the detector never returns is still a label to calibrate."""
        with self._lock:
            rows = self._db().execute(
                """SELECT DISTINCT unnest(i.labels) FROM images i
                   JOIN run_images ri ON ri.image_key = i.image_key
                   JOIN runs r ON r.run_key = ri.run_key
                   WHERE r.detector = ? AND r.model_version = ? ORDER BY 1""",
                [detector, model_version],
            ).fetchall()
        return [r[0] for r in rows]

    def run_info(self, run_id: str) -> RunInfo:
        """One run's record.

        Raises
        ------
        InputError
            If there is no such run.
        """
        with self._lock:
            row = self._db().execute(
                f"SELECT {_RUN_INFO_COLUMNS} FROM runs WHERE run_id = ?", [run_id]
            ).fetchall()
            row = row[0] if row else None
            if row is None:
                self._run_row(run_id)  # raises the explanatory error
        return _run_info(row)

    def done_image_ids(self, run_id: str) -> set[str]:
        """Images the run has finished: scored, or failed for good.

        Returns
        -------
        set of str
            Image ids the runner must not send to the detector again in this run.
        """
        with self._lock:
            run_key, _ = self._run_row(run_id)
            ids = self._db().execute(
                """SELECT i.image_id FROM run_images ri
                   JOIN images i ON i.image_key = ri.image_key
                   WHERE ri.run_key = ?""",
                [run_key],
            ).fetchnumpy()["image_id"]
        return set(ids.tolist())

    # -- writing scores -----------------------------------------------------------------

    def record(
        self,
        run_id: str,
        scored: list[tuple[str, Detection, int]],
        failed: list[tuple[str, str, str, int]],
    ) -> None:
        """Record a batch of finished images in one transaction.

        For each scored ``(image_id, detection, attempts)`` this writes one results row
        per result, the raw response (``json.dumps(detection.raw, default=str)``,
        zlib-compressed) and a ``run_images`` row with status ``'scored'``. For each
        failed ``(image_id, kind, message, attempts)`` it writes a failures row and a
        ``run_images`` row with status ``'failed'``. Either all of it is written or, on
        an error, none of it.

        Every image recorded here is final for the run: :meth:`done_image_ids` includes
        it and a resumed run skips it. A runner that stops on a fatal error and wants
        that image retried on resume should not pass it here.

        Re-recording is idempotent: an image the run has already finished, or that
        appears a second time in the same batch, is skipped (scored entries are taken
        before failed ones). Nothing is duplicated and no error is raised, so a runner
        may safely re-send a batch whose commit it did not see.

        Parameters
        ----------
        run_id : str
        scored : list of (str, Detection, int)
            Image id, what the detector returned, and how many calls it took.
        failed : list of (str, str, str, int)
            Image id, failure kind (one of :data:`FAILURE_KINDS`), message, attempts.

        Raises
        ------
        InputError
            On an unknown run, an image not registered in the run's dataset, a result
            with a score that is not a finite number, or a malformed entry. Nothing of
            the batch is written then.
        """
        scored = list(scored)
        failed = list(failed)
        for n, entry in enumerate(scored):
            _check_scored_entry(entry, n)
        for n, entry in enumerate(failed):
            _check_failed_entry(entry, n)
        if not scored and not failed:
            with self._lock:
                self._run_row(run_id)
            return
        with self._lock:
            self._require_writable("record results")
            with self._transaction(f"recording results of run {run_id}") as con:
                run_key, dataset = self._run_row(run_id)
                keys = self._image_keys(
                    dataset, [e[0] for e in scored] + [e[0] for e in failed]
                )
                done = {
                    int(k)
                    for (k,) in con.execute(
                        "SELECT image_key FROM run_images WHERE run_key = $run "
                        "AND image_key IN (SELECT unnest($keys::BIGINT[]))",
                        {"run": run_key, "keys": list(keys.values())},
                    ).fetchall()
                }
                now = _utc_now()
                res = {c: [] for c in ("image_key", "label", "score", *_BOX_COLUMNS, "box_unit")}
                raw_keys, raw_blobs = [], []
                ri_keys, ri_status, ri_attempts = [], [], []
                fa_keys, fa_kind, fa_msg, fa_attempts = [], [], [], []
                for image_id, detection, attempts in scored:
                    key = keys[image_id]
                    if key in done:
                        continue
                    done.add(key)
                    for result in detection.results:
                        res["image_key"].append(key)
                        res["label"].append(result.label)
                        res["score"].append(float(result.score))
                        box = result.box
                        for col in _BOX_COLUMNS:
                            res[col].append(None if box is None else float(getattr(box, col)))
                        res["box_unit"].append(None if box is None else box.unit)
                    raw_keys.append(key)
                    raw_blobs.append(_compress_raw(detection.raw, image_id))
                    ri_keys.append(key)
                    ri_status.append("scored")
                    ri_attempts.append(int(attempts))
                for image_id, kind, message, attempts in failed:
                    key = keys[image_id]
                    if key in done:
                        continue
                    done.add(key)
                    fa_keys.append(key)
                    fa_kind.append(kind)
                    fa_msg.append(str(message))
                    fa_attempts.append(int(attempts))
                    ri_keys.append(key)
                    ri_status.append("failed")
                    ri_attempts.append(int(attempts))
                if res["image_key"]:
                    self._insert_arrow(con, "results", run_key, pa.table({
                        "image_key": pa.array(res["image_key"], pa.int64()),
                        "label": pa.array(res["label"], pa.string()),
                        "score": pa.array(res["score"], pa.float64()),
                        **{c: pa.array(res[c], pa.float64()) for c in _BOX_COLUMNS},
                        "box_unit": pa.array(res["box_unit"], pa.string()),
                    }))
                if raw_keys:
                    self._insert_arrow(con, "raw_responses", run_key, pa.table({
                        "image_key": pa.array(raw_keys, pa.int64()),
                        "response": pa.array(raw_blobs, pa.binary()),
                    }))
                if fa_keys:
                    self._insert_arrow(con, "failures", run_key, pa.table({
                        "image_key": pa.array(fa_keys, pa.int64()),
                        "kind": pa.array(fa_kind, pa.string()),
                        "message": pa.array(fa_msg, pa.string()),
                        "attempts": pa.array(fa_attempts, pa.int32()),
                        "failed_at": pa.array([now] * len(fa_keys), pa.timestamp("us")),
                    }))
                if ri_keys:
                    self._insert_arrow(con, "run_images", run_key, pa.table({
                        "image_key": pa.array(ri_keys, pa.int64()),
                        "status": pa.array(ri_status, pa.string()),
                        "attempts": pa.array(ri_attempts, pa.int32()),
                        "scored_at": pa.array([now] * len(ri_keys), pa.timestamp("us")),
                    }))

    @staticmethod
    def _insert_arrow(con, table: str, run_key: int, rows: pa.Table) -> None:
        src = f"_calibrate_rows_{uuid.uuid4().hex}"
        cols = ", ".join(rows.column_names)
        con.register(src, rows)
        try:
            con.execute(
                f"INSERT INTO {table} (run_key, {cols}) SELECT $run, {cols} FROM {src}",
                {"run": run_key},
            )
        finally:
            con.unregister(src)

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
                LEFT JOIN (SELECT image_key, image_id FROM images WHERE dataset = $dataset) i
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
                                  WHERE i.dataset = $dataset AND i.image_id = s.image_id)""",
            params,
        ).fetchall()[0]
        n_null, n_missing, examples = rows
        if n_null:
            raise InputError(f"{n_null} result row(s) have no image_id; every row needs one.")
        raise InputError(_missing_images_message(dataset, n_missing, examples or []))

    # -- reading scores -----------------------------------------------------------------

    def _selection_sql(self, detector: str, model_version: str, dataset: str | None):
        """CTEs ``latest(image_key, run_key)`` and ``best(image_key, score)`` plus failed.

        ``latest`` holds each image once, with the latest run that scored it; ``best``
        its highest score for ``$label`` in that run. The single-run form skips one
        aggregation over all images, which is most of the cost at 10^6 images.
        """
        keys = self._version_run_keys(detector, model_version, dataset)
        # Keys are integers read from the database, so inlining them is safe; literal
        # values let DuckDB prune row groups of results/run_images by zone maps.
        if len(keys) == 1:
            run = str(keys[0])
            ctes = f"""
                latest AS (SELECT image_key, run_key FROM run_images
                           WHERE run_key = {run} AND status = 'scored'),
                best AS (SELECT image_key, max(score) AS score FROM results
                         WHERE run_key = {run} AND label = $label GROUP BY image_key)"""
            failed = f"""
                failed AS (SELECT image_key FROM run_images
                           WHERE run_key = {run} AND status = 'failed')"""
        else:
            runs = ", ".join(map(str, keys))
            ctes = f"""
                latest AS (SELECT image_key, max(run_key) AS run_key FROM run_images
                           WHERE run_key IN ({runs}) AND status = 'scored'
                           GROUP BY image_key),
                best AS (SELECT res.image_key, max(res.score) AS score
                         FROM results res
                         JOIN latest l ON l.run_key = res.run_key AND l.image_key = res.image_key
                         WHERE res.run_key IN ({runs}) AND res.label = $label
                         GROUP BY res.image_key)"""
            failed = f"""
                failed AS (SELECT image_key FROM run_images WHERE run_key IN ({runs})
                           GROUP BY image_key HAVING NOT bool_or(status = 'scored'))"""
        return ctes, failed

    def _n_failed(self, failed_cte: str, split: str | None) -> int:
        split_join = (
            "JOIN images i ON i.image_key = f.image_key AND i.split = $split"
            if split is not None else ""
        )
        return int(
            self._db().execute(
                f"WITH {failed_cte} SELECT count(*) FROM failed f {split_join}",
                {"split": split} if split is not None else {},
            ).fetchall()[0][0]
        )

    def scores(
        self,
        detector: str,
        model_version: str,
        label: str,
        *,
        dataset: str | None = None,
        split: str | None = None,
    ) -> LabelScores:
        """Image-level scores and ground truth of one label, as numpy arrays.

        Every image scored by some run of ``(detector, model_version)`` is included
        once: with its highest score for ``label`` in the latest run that scored it, or
        ``-inf`` if that run returned no result for the label. Failed images are left
        out and counted in ``n_failed``.

        Parameters
        ----------
        detector, model_version, label : str
        dataset : str, optional
            Only runs on this dataset (default: all datasets).
        split : str, optional
            Only images of this split.

        Returns
        -------
        LabelScores

        Raises
        ------
        InputError
            If the store has no run of that detector version (on that dataset).

        See Also
        --------
        count_table : the same data aggregated in the database.
        """
        _check_name(label, "label")
        with self._lock:
            ctes, failed = self._selection_sql(detector, model_version, dataset)
            split_cond = "AND i.split = $split" if split is not None else ""
            params = {"label": label, **({"split": split} if split is not None else {})}
            cols = self._db().execute(
                f"""WITH {ctes}
                    SELECT i.image_id,
                           coalesce(b.score, '-inf'::DOUBLE) AS score,
                           list_contains(i.labels, $label) AS positive
                    FROM latest l
                    JOIN images i ON i.image_key = l.image_key {split_cond}
                    LEFT JOIN best b ON b.image_key = l.image_key
                    ORDER BY l.image_key""",
                params,
            ).fetchnumpy()
            n_failed = self._n_failed(failed, split)
        return LabelScores(
            image_ids=np.asarray(cols["image_id"], dtype=object),
            scores=np.asarray(cols["score"], dtype=np.float64),
            positive=np.asarray(cols["positive"], dtype=bool),
            n_failed=n_failed,
        )

    def count_table(
        self,
        detector: str,
        model_version: str,
        label: str,
        *,
        dataset: str | None = None,
        split: str | None = None,
    ) -> CountTable:
        """Positives and negatives per distinct score of one label, counted in DuckDB.

        Selects exactly the images :meth:`scores` returns and aggregates them with one
        ``GROUP BY score`` (``-inf`` for no result), so only the table leaves the
        database. Equal to ``calibrate.count_table(s.scores, s.positive)`` for
        ``s = store.scores(...)``.

        Parameters
        ----------
        detector, model_version, label : str
        dataset, split : str, optional
            As in :meth:`scores`.

        Returns
        -------
        CountTable
        """
        _check_name(label, "label")
        with self._lock:
            ctes, _ = self._selection_sql(detector, model_version, dataset)
            split_cond = "AND i.split = $split" if split is not None else ""
            params = {"label": label, **({"split": split} if split is not None else {})}
            cols = self._db().execute(
                f"""WITH {ctes}
                    SELECT coalesce(b.score, '-inf'::DOUBLE) AS score,
                           count(*) FILTER (WHERE list_contains(i.labels, $label)) AS n_positive,
                           count(*) FILTER (WHERE NOT list_contains(i.labels, $label))
                               AS n_negative
                    FROM latest l
                    JOIN images i ON i.image_key = l.image_key {split_cond}
                    LEFT JOIN best b ON b.image_key = l.image_key
                    GROUP BY 1
                    ORDER BY 1""",
                params,
            ).fetchnumpy()
        # Sorted in DuckDB (parallel) because from_counts re-sorts, and numpy's sort of
        # already sorted input is nearly free: 10^6 distinct scores, 0.5 s instead of 0.8 s.
        return CountTable.from_counts(
            np.asarray(cols["score"], dtype=np.float64),
            np.asarray(cols["n_positive"], dtype=np.int64),
            np.asarray(cols["n_negative"], dtype=np.int64),
        )

    # -- overviews ----------------------------------------------------------------------

    def runs(self) -> pd.DataFrame:
        """One row per run, oldest first, with counts of scored and failed images.

        Returns
        -------
        pandas.DataFrame
            Columns ``run_id, detector, model_version, dataset, dataset_fingerprint,
            status, started_at, finished_at, n_scored, n_failed, detection_floor,
            labels, settings, tool_version``; ``labels`` and ``settings`` are parsed.
        """
        with self._lock:
            df = self._db().execute(
                """SELECT r.run_id, r.detector, r.model_version, r.dataset,
                          r.dataset_fingerprint, r.status, r.started_at, r.finished_at,
                          coalesce(c.n_scored, 0) AS n_scored,
                          coalesce(c.n_failed, 0) AS n_failed,
                          r.detection_floor, r.labels, r.settings, r.tool_version
                   FROM runs r
                   LEFT JOIN (SELECT run_key,
                                     count(*) FILTER (WHERE status = 'scored') AS n_scored,
                                     count(*) FILTER (WHERE status = 'failed') AS n_failed
                              FROM run_images GROUP BY run_key) c
                          ON c.run_key = r.run_key
                   ORDER BY r.run_key"""
            ).df()
        df["labels"] = _pd_object([_json_loads_or_none(x) for x in df["labels"]])
        df["settings"] = _pd_object([_json_loads_or_none(x) for x in df["settings"]])
        return df

    def versions(self) -> pd.DataFrame:
        """One row per ``(detector, model_version)`` with its labels and image counts.

        Returns
        -------
        pandas.DataFrame
            Columns ``detector, model_version, labels`` (sorted list: labels seen in
            results plus labels the runs declared), ``n_runs``, ``n_images`` (distinct
            images scored) and ``n_failures`` (images that failed and were never
            scored, as :attr:`LabelScores.n_failed`).
        """
        with self._lock:
            con = self._db()
            df = con.execute(
                """WITH per_image AS (
                       SELECT r.detector, r.model_version, ri.image_key,
                              bool_or(ri.status = 'scored') AS scored
                       FROM run_images ri JOIN runs r ON r.run_key = ri.run_key
                       GROUP BY ALL),
                   counts AS (
                       SELECT detector, model_version,
                              count(*) FILTER (WHERE scored) AS n_images,
                              count(*) FILTER (WHERE NOT scored) AS n_failures
                       FROM per_image GROUP BY ALL)
                   SELECT v.detector, v.model_version, v.n_runs,
                          coalesce(c.n_images, 0) AS n_images,
                          coalesce(c.n_failures, 0) AS n_failures
                   FROM (SELECT detector, model_version, count(*) AS n_runs,
                                min(run_key) AS first_run
                         FROM runs GROUP BY ALL) v
                   LEFT JOIN counts c USING (detector, model_version)
                   ORDER BY v.first_run"""
            ).df()
            seen = con.execute(
                """SELECT DISTINCT r.detector, r.model_version, res.label
                   FROM (SELECT DISTINCT run_key, label FROM results) res
                   JOIN runs r ON r.run_key = res.run_key"""
            ).fetchall()
            declared = con.execute(
                "SELECT detector, model_version, labels FROM runs WHERE labels IS NOT NULL"
            ).fetchall()
        labels: dict[tuple[str, str], set[str]] = {}
        for det, ver, lab in seen:
            labels.setdefault((det, ver), set()).add(lab)
        for det, ver, text in declared:
            labels.setdefault((det, ver), set()).update(json.loads(text))
        df.insert(
            2,
            "labels",
            _pd_object([sorted(labels.get((d, v), ())) for d, v in
                       zip(df["detector"], df["model_version"])]),
        )
        return df

    def labels(self, detector: str, model_version: str) -> list[str]:
        """Labels of a detector version: seen in its results, plus declared by its runs.

        Returns
        -------
        list of str
            Sorted.

        Raises
        ------
        InputError
            If the store has no run of that detector version.
        """
        with self._lock:
            keys = self._version_run_keys(detector, model_version, None)
            runs = ", ".join(map(str, keys))
            con = self._db()
            seen = {
                lab for (lab,) in con.execute(
                    f"SELECT DISTINCT label FROM results WHERE run_key IN ({runs})"
                ).fetchall()
            }
            for (text,) in con.execute(
                f"SELECT labels FROM runs WHERE run_key IN ({runs}) AND labels IS NOT NULL"
            ).fetchall():
                seen.update(json.loads(text))
        return sorted(seen)

    def failures(self, run_id: str | None = None) -> pd.DataFrame:
        """Recorded failures, oldest first.

        Parameters
        ----------
        run_id : str, optional
            Only this run's failures (default: all runs).

        Returns
        -------
        pandas.DataFrame
            Columns ``run_id, detector, model_version, dataset, image_id, kind,
            message, attempts, failed_at`` (UTC).
        """
        with self._lock:
            where, params = "", []
            if run_id is not None:
                self._run_row(run_id)
                where, params = "WHERE r.run_id = ?", [run_id]
            return self._db().execute(
                f"""SELECT r.run_id, r.detector, r.model_version, r.dataset, i.image_id,
                           f.kind, f.message, f.attempts, f.failed_at
                    FROM failures f
                    JOIN runs r ON r.run_key = f.run_key
                    JOIN images i ON i.image_key = f.image_key
                    {where}
                    ORDER BY f.run_key, f.failed_at, i.image_id""",
                params,
            ).df()

    def raw_response(self, run_id: str, image_id: str) -> Any:
        """The detector's response for one image of a run, as it was recorded.

        Returns
        -------
        object
            The decoded JSON (``None`` if the detector kept no raw response).

        Raises
        ------
        InputError
            If the run is unknown or stored no raw response for that image (it failed,
            was not scored in that run, or came from :meth:`write_results_frame`).
        """
        with self._lock:
            run_key, dataset = self._run_row(run_id)
            row = self._db().execute(
                """SELECT rr.response FROM raw_responses rr
                   JOIN images i ON i.image_key = rr.image_key
                   WHERE rr.run_key = ? AND i.dataset = ? AND i.image_id = ?""",
                [run_key, dataset, image_id],
            ).fetchall()
            row = row[0] if row else None
        if row is None:
            raise InputError(
                f"no raw response stored for image {image_id!r} in run {run_id}: the image "
                "failed, was not scored in that run, or its scores were imported in bulk."
            )
        return json.loads(zlib.decompress(bytes(row[0])).decode("utf-8"))

    # -- Parquet ------------------------------------------------------------------------

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
            try:
                self._db().sql(query, params=params).write_parquet(str(path))
            except duckdb.Error as exc:
                raise StoreError(f"exporting to {path} failed: {exc}") from exc
        import pyarrow.parquet as pq

        return int(pq.read_metadata(path).num_rows)

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


# ---------------------------------------------------------------------------------------
# Module helpers used by the store
# ---------------------------------------------------------------------------------------

_RUN_INFO_COLUMNS = (
    "run_id, detector, model_version, dataset, dataset_fingerprint, settings, labels, "
    "detection_floor, status, started_at, finished_at"
)


def _run_info(row: tuple) -> RunInfo:
    (run_id, detector, model_version, dataset, fingerprint, settings, labels, floor,
     status, started_at, finished_at) = row
    return RunInfo(
        run_id=run_id,
        detector=detector,
        model_version=model_version,
        dataset=dataset,
        dataset_fingerprint=fingerprint,
        settings=json.loads(settings),
        labels=_json_loads_or_none(labels),
        detection_floor=floor,
        status=status,
        started_at=started_at,
        finished_at=finished_at,
    )


def _pd_object(values: list) -> Any:
    """A pandas object Series from a list of Python objects (lists, dicts)."""
    import pandas as pd

    s = pd.Series([None] * len(values), dtype=object)
    for i, v in enumerate(values):
        s.iat[i] = v
    return s


def _images_table(dataset: str, images: list) -> pa.Table:
    """Columns of ``images`` (LabeledImage-like) as an Arrow table, validated."""
    # One C-level pass per field instead of a Python loop over images.
    try:
        ids, uris, hashes, label_sets, splits = (
            list(map(operator.attrgetter(f), images)) for f in _IMAGE_FIELD_NAMES
        )
    except AttributeError as exc:
        bad = next(i for i, img in enumerate(images) if not _has_image_fields(img))
        raise InputError(
            f"images[{bad}] is not a LabeledImage ({type(images[bad]).__name__}: {exc}). "
            "Read images with calibrate.manifest."
        ) from None
    if any(isinstance(s, str) for s in label_sets):
        bad = next(i for i, s in enumerate(label_sets) if isinstance(s, str))
        raise InputError(
            f"image {ids[bad]!r}: labels must be a set of label names, got the string "
            f"{label_sets[bad]!r}. Use frozenset({{...}})."
        )
    try:
        table = pa.table(
            {
                "image_id": pa.array(ids, pa.string()),
                "uri": pa.array(uris, pa.string()),
                "content_hash": pa.array(hashes, pa.string()),
                "labels": pa.array(list(map(sorted, label_sets)), pa.list_(pa.string())),
                "split": pa.array(splits, pa.string()),
            }
        )
    except (pa.ArrowException, TypeError) as exc:
        raise InputError(
            f"images for dataset {dataset!r} have a field of the wrong type ({exc}): "
            "image_id, uri, content_hash and split must be strings (hash and split may "
            "be None) and labels a set of strings."
        ) from None
    for col, what in (("image_id", "an image_id"), ("uri", "a uri")):
        arr = table[col]
        empty = arr.null_count + (
            pc.sum(pc.equal(pc.utf8_length(arr), 0)).as_py() or 0
        )
        if empty:
            raise InputError(
                f"{empty} image(s) for dataset {dataset!r} lack {what}; every image "
                "needs a non-empty image_id and uri."
            )
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))
        raise InputError(
            f"image id {dup!r} appears twice in the images for dataset {dataset!r}; "
            "ids must be unique within a dataset. Fix the manifest."
        )
    return table


def _missing_images_message(dataset: str, n: int, examples: list[str]) -> str:
    return (
        f"{n} image(s) are not registered in dataset {dataset!r} (e.g. "
        f"{', '.join(map(repr, examples))}), so their ground truth is unknown. Call "
        f"store.add_images({dataset!r}, images) with the labeled set before recording "
        "scores for it."
    )


def _check_scored_entry(entry: Any, n: int) -> None:
    try:
        image_id, detection, attempts = entry
    except (TypeError, ValueError):
        raise InputError(
            f"scored[{n}] must be a tuple (image_id, detection, attempts), got {entry!r}."
        ) from None
    _check_name(image_id, f"scored[{n}] image_id")
    _check_attempts(attempts, f"scored[{n}] ({image_id!r})")
    results = getattr(detection, "results", None)
    if results is None:
        raise InputError(
            f"scored[{n}] ({image_id!r}): expected a Detection, got {type(detection).__name__}."
        )
    for k, result in enumerate(results):
        label = getattr(result, "label", None)
        score = getattr(result, "score", None)
        if not isinstance(label, str) or not label:
            raise InputError(
                f"image {image_id!r} result {k}: label must be a non-empty string, got "
                f"{label!r}."
            )
        if not _is_real(score) or not math.isfinite(score):
            raise InputError(
                f"image {image_id!r} result {k} ({label!r}): score must be a finite number, "
                f"got {score!r}. The detector adapter must not emit NaN or infinite scores; "
                "leave a label out of the results when there is no result for it."
            )
        box = getattr(result, "box", None)
        if box is not None:
            coords = [getattr(box, c, None) for c in _BOX_COLUMNS]
            if not all(_is_real(c) and math.isfinite(c) for c in coords):
                raise InputError(
                    f"image {image_id!r} result {k} ({label!r}): box coordinates must be "
                    f"finite numbers, got {coords!r}."
                )


def _check_failed_entry(entry: Any, n: int) -> None:
    try:
        image_id, kind, message, attempts = entry
    except (TypeError, ValueError):
        raise InputError(
            f"failed[{n}] must be a tuple (image_id, kind, message, attempts), got {entry!r}."
        ) from None
    _check_name(image_id, f"failed[{n}] image_id")
    if kind not in FAILURE_KINDS:
        raise InputError(
            f"failed[{n}] ({image_id!r}): kind must be one of {', '.join(FAILURE_KINDS)}, "
            f"got {kind!r}."
        )
    _check_attempts(attempts, f"failed[{n}] ({image_id!r})")


def _compress_raw(raw: Any, image_id: str) -> bytes:
    try:
        text = json.dumps(raw, default=str)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"image {image_id!r}: the raw detector response cannot be stored as JSON ({exc})."
        ) from None
    return zlib.compress(text.encode("utf-8"))
