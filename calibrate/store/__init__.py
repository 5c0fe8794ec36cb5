"""The score store: every run, image, score and failure in one embedded DuckDB file, or
in a PostgreSQL database shared by a team.

A project keeps one store file (``calibrate.duckdb`` by default); a team that scores
from several processes at once opens a PostgreSQL database instead
(``open_store("postgresql://user@host/db")``: the same methods and results). The runner writes
into it as images are scored, so an interrupted run resumes where it stopped; the
curves read from it one ``(detector, model version, label)`` at a time, either as
image-level score arrays (:meth:`ScoreStore.scores`) or as a count table aggregated
inside DuckDB (:meth:`ScoreStore.count_table`), which is all the statistics need.

Semantics (see ``DESIGN.md``)
-----------------------------
* A run is one pass of one detector at one model version over one dataset. Runs are
  ordered by creation; "latest" below means created last.
* An image is identified by ``(dataset, image_id)`` and its content (``content_hash``;
  the URI of a remote image). When its content changes, the old identity is kept for
  the runs that scored it but is no longer *current*; an image left out of a manifest
  (``add_images(..., complete=True)``) stops being current too. Curves count current
  images only. Ground truth for a label is "the label is in the image's labels" (exact
  string match).
* A curve of ``(detector, model_version)`` counts one dataset: the one named, else the
  latest the version ran on. Other datasets are never added to it (a copy of a
  manifest under another name would count every image twice); reads say which were
  left out (:class:`DatasetOverlapWarning`).
* The image-level score of a label is the highest score among the image's results
  for that label in a run. An image the run scored with no result for the label
  scores ``-inf`` ("no result", ranks below every real score).
* A failed image has no score at all: it is never turned into ``-inf`` or any other
  score, only counted (:attr:`LabelScores.n_failed`) and listed
  (:meth:`ScoreStore.failures`).
* When several runs of the same ``(detector, model_version)`` on the dataset scored the
  same image, the latest run that *scored* it supplies its scores, so no image is
  counted twice. A later failure does not hide an earlier valid score of the same model
  version and content.
* A version whose latest run on the dataset has not finished every current image is
  incomplete: :meth:`ScoreStore.require_complete` (called by every threshold choice)
  refuses it unless incomplete data is allowed, and reads warn
  (:class:`IncompleteDataWarning`).
* A new run reuses the results of unchanged images (same id, content, detector,
  version and settings) by copying them in (:meth:`ScoreStore.reuse_results`): they are
  never sent again.

Schema (version 5)
------------------
Big tables refer to runs and images by integer surrogate keys (``run_key``,
``image_key``): joining and grouping 10^6 rows on integers is several times faster
than on 32-character run ids and image paths, and the strings are stored once. The
views ``result_rows``, ``run_image_rows`` and ``failure_rows`` show the same data with
``run_id`` / ``image_id`` for ad-hoc SQL (``duckdb calibrate.duckdb``).

``meta(key, value)``
    ``schema_version`` and bookkeeping.
``runs(run_id, run_key, detector, model_version, dataset, dataset_fingerprint,
settings, labels, detection_floor, status, started_at, finished_at, tool_version,
source)``
    ``settings`` and ``labels`` are JSON text; times are UTC; ``source`` is the
    manifest scored, when known.
``images(image_key, dataset, image_id, uri, content_hash, labels, split, current,
width, height, has_objects)``
    One row per image identity; ``labels`` is a list of the labels truly present;
    ``current`` marks the dataset as it is now (at most one current row per id);
    ``width``/``height`` the size in pixels when known; ``has_objects`` whether its
    manifest gave ground-truth boxes (NULL for rows from before version 4).
``objects(image_key, label, x_min, y_min, x_max, y_max, ignore)``
    One row per ground-truth box of an image identity, in pixels; ``ignore`` marks a
    crowd / don't-care region. An image with ``has_objects`` and no rows is a real
    negative.
``run_images(run_key, image_key, status, attempts, scored_at)``
    One row per image a run has finished (``'scored'`` or ``'failed'``); the writes
    never record an image twice in a run (``attempts = 0``: no call by this run).
``results(run_key, image_key, label, score, x_min, y_min, x_max, y_max, box_unit)``
    One row per result (box) the detector returned.
``failures(run_key, image_key, kind, message, attempts, failed_at)``
    ``kind`` is one of :data:`FAILURE_KINDS`. (The time column is not called ``at``:
    that is a reserved word in DuckDB 2.)
``raw_responses(run_key, image_key, response)``
    The detector's response as zlib-compressed JSON, kept for audit.
``matches(run_key, image_key, iou_threshold, label, kind, score, outcome)``
    Detections matched to ground-truth objects (COCO protocol), computed once per (run,
    IoU threshold, label) and reused: a row per non-ignored object (``score`` of its
    matching detection, ``-inf`` if missed) and per detection (``outcome`` true, false
    or ignored). ``match_sets(run_key, iou_threshold, label, fingerprint, matched_at)``
    says what they were computed from; a changed result, box or image size recomputes
    them (version 5).

Older files are migrated when opened for writing (see :data:`SCHEMA_VERSION` and
``_MIGRATIONS``); files written by a newer ``calibrate`` are refused.

Credentials never belong in the store: it stores only what callers pass, and run
settings pass through :func:`redact_secrets` first.

The package's parts
-------------------
:func:`open_store`
    Opens a DuckDB file or a PostgreSQL URL (:mod:`.location` parses and redacts it).
:mod:`.schema`
    Table definitions, :data:`SCHEMA_VERSION` and the migrations of older files.
:mod:`.images`
    Registering labeled images (the ground truth).
:mod:`.writes`
    Beginning and finishing runs; recording batches of finished images.
:mod:`.bulk`
    Writing whole tables of results at once (``write_results_frame``).
:mod:`.selection`
    Which dataset and images a version's curves count; completeness checks.
:mod:`.reads`
    Runs and resume queries, scores and count tables, overviews.
:mod:`.detections`
    Detections and ground-truth boxes in pixels, for the detection unit
    (``detection_rows``).
:mod:`.matches`
    Matches stored per run and the detection-level count table
    (``detection_count_table``).
:mod:`.reuse`
    Reusing stored results of unchanged images in a new run.
:mod:`.parquet`
    Parquet export and import.
:mod:`.sources`
    Count tables where the scores already live (a hive-partitioned Parquet dataset
    through DuckDB, Spark SQL, any SQL engine) and the export of a store's scores in
    that flat layout; not part of :class:`ScoreStore`.
:mod:`.model`, :mod:`.errors`
    The constants, records and errors the parts share; :mod:`._base` holds the
    connection and its transactions.
:mod:`.postgres`
    :class:`~calibrate.store.postgres.PostgresScoreStore`: the store on PostgreSQL, for
    several writers at once (runs shared under a lock, images claimed before they are
    scored, a flat per-run, per-label score table for the count table).
:mod:`.pg_sql`, :mod:`.pg_connection`, :mod:`.pg_schema`
    The mixins' DuckDB SQL translated to PostgreSQL (sqlglot, cached), a psycopg 3
    connection that answers as a DuckDB one does, and the PostgreSQL tables (schema
    version 5, created natively; no migrations).

:class:`ScoreStore` is composed of one mixin class per part.
"""

from __future__ import annotations

import threading
from pathlib import Path

import duckdb

from calibrate.store.errors import (
    DatasetOverlapWarning,
    EmptyStoreError,
    IncompleteDataError,
    IncompleteDataWarning,
    MigrationWarning,
    SchemaVersionError,
    StoreError,
)
from calibrate.store.model import (
    DEFAULT_PATH,
    FAILURE_KINDS,
    RUN_STATUSES,
    DetectionRows,
    LabelScores,
    RunInfo,
    VersionData,
    redact_secrets,
)
from calibrate.store.matches import MatchesMixin
from calibrate.store.parquet import ParquetMixin
from calibrate.store.reads import ReadsMixin
from calibrate.store.reuse import ReuseMixin
from calibrate.store.schema import SCHEMA_VERSION, SchemaMixin
from calibrate.store.location import StoreURL, is_store_url, redact_url, store_location

__all__ = [
    "DEFAULT_PATH",
    "FAILURE_KINDS",
    "RUN_STATUSES",
    "SCHEMA_VERSION",
    "DatasetOverlapWarning",
    "EmptyStoreError",
    "DetectionRows",
    "IncompleteDataError",
    "IncompleteDataWarning",
    "LabelScores",
    "MigrationWarning",
    "RunInfo",
    "SchemaVersionError",
    "ScoreStore",
    "StoreError",
    "StoreURL",
    "VersionData",
    "is_store_url",
    "open_store",
    "redact_secrets",
    "redact_url",
    "store_location",
]


class ScoreStore(SchemaMixin, ReadsMixin, MatchesMixin, ReuseMixin, ParquetMixin):
    """The score store: one DuckDB file with runs, images, results and failures.

    Parameters
    ----------
    path : str or path-like, default "calibrate.duckdb"
        The store file. Created with the current schema if missing; migrated if it was
        written by an older ``calibrate``.
    read_only : bool, default False
        Open without write access: several processes may then read the file at once,
        but every writing method raises :class:`StoreError`. The file must exist.
    allow_incomplete : bool, default False
        Let :meth:`require_complete` (which every threshold choice from a store calls)
        use a version whose latest run is incomplete, with an
        :class:`IncompleteDataWarning`, instead of refusing it.

    Attributes
    ----------
    path : pathlib.Path
    read_only : bool
    allow_incomplete : bool

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

    def __init__(self, path: str | Path = DEFAULT_PATH, *, read_only: bool = False,
                 allow_incomplete: bool = False):
        self.path = Path(path)
        self.read_only = bool(read_only)
        self.allow_incomplete = bool(allow_incomplete)
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


def open_store(location: str | Path = DEFAULT_PATH, *, read_only: bool = False,
               allow_incomplete: bool = False) -> ScoreStore:
    """Open the score store at a file path or a PostgreSQL URL.

    Parameters
    ----------
    location : str or path-like, default "calibrate.duckdb"
        A DuckDB file, or ``postgresql://[user[:password]@]host[:port]/database`` (also
        ``postgres://``) for a store shared by a team. Credentials come from the URL,
        the ``PG*`` environment variables or ``~/.pgpass``; they are never stored, and
        messages show the URL with its password redacted.
    read_only, allow_incomplete : bool, default False
        As in :class:`ScoreStore`.

    Returns
    -------
    ScoreStore
        A :class:`ScoreStore`, or its PostgreSQL form
        (:class:`calibrate.store.postgres.PostgresScoreStore`): the same methods.

    Raises
    ------
    StoreError
        If the store cannot be opened; for a URL also when the ``postgresql`` extra
        (psycopg) is not installed.
    """
    if not is_store_url(location):
        return ScoreStore(location, read_only=read_only, allow_incomplete=allow_incomplete)
    try:
        from calibrate.store.postgres import PostgresScoreStore
    except ImportError as exc:
        raise StoreError(
            f"a PostgreSQL store needs the postgresql extra ({exc.name} is missing): "
            "pip install 'calibrate[postgresql]'."
        ) from None
    return PostgresScoreStore(location, read_only=read_only,
                              allow_incomplete=allow_incomplete)
