"""The store's tables, its schema version, and the migrations from older versions.

See :mod:`calibrate.store` for what each table holds. A file is created with the
current schema; a file with an older ``meta.schema_version`` is migrated, step by
step through ``_MIGRATIONS``, the first time it is opened for writing.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable

import duckdb

from calibrate.store._base import StoreBase, _one, _tool_version, _utc_now
from calibrate.store.errors import MigrationWarning, SchemaVersionError, StoreError
from calibrate.store.model import RUN_STATUSES, redact_secrets

__all__ = ["SCHEMA_VERSION", "SchemaMixin"]

#: Schema version this module writes. Bump it together with a new ``_MIGRATIONS`` step.
SCHEMA_VERSION = 5


#: One row per image identity: ``(dataset, image_id)`` with the content it had. When an
#: image's content changes, its row is kept for the runs that scored the old content and
#: marked ``current = false``, and the new content gets a row (and key) of its own; an
#: image left out of a manifest is marked the same way. ``current`` rows are the
#: dataset as it is now, the only images curves count (schema version 3). ``width`` and
#: ``height`` (pixels, when known) convert ratio boxes; ``has_objects`` says whether the
#: manifest gave the image's ground-truth boxes (rows in ``objects``; true with no rows
#: is a real negative image), NULL for rows written before schema version 4.
_IMAGES_SQL = """CREATE TABLE images (
    image_key BIGINT NOT NULL DEFAULT nextval('image_keys'),
    dataset VARCHAR NOT NULL,
    image_id VARCHAR NOT NULL,
    uri VARCHAR NOT NULL,
    content_hash VARCHAR,
    labels VARCHAR[] NOT NULL,
    split VARCHAR,
    current BOOLEAN NOT NULL DEFAULT true,
    width INTEGER,
    height INTEGER,
    has_objects BOOLEAN
);"""

#: One row per ground-truth object (box) of an image identity, in pixels (schema
#: version 4). ``ignore`` marks crowd / "don't care" regions, which absorb detections.
_OBJECTS_SQL = """CREATE TABLE objects (
    image_key BIGINT NOT NULL,
    label VARCHAR NOT NULL,
    x_min DOUBLE NOT NULL,
    y_min DOUBLE NOT NULL,
    x_max DOUBLE NOT NULL,
    y_max DOUBLE NOT NULL,
    ignore BOOLEAN NOT NULL DEFAULT false
);"""

#: Detections matched to ground-truth objects (schema version 5), computed once per
#: (run, IoU threshold, label) and reused: one row per non-ignored object (``kind =
#: 'object'``, ``score`` of the detection that matched it or ``-inf``, ``outcome`` 'true'
#: or 'missed') and per detection (``kind = 'detection'``, outcome 'true', 'false' or
#: 'ignored'), so the detection-level count table is one ``GROUP BY score``.
#: ``match_sets`` records what each stored match was computed from (a fingerprint of
#: the run's results, the objects and the sizes of its images): when any of them
#: changes, the matches are computed again.
_MATCHES_SQL = """CREATE TABLE matches (
    run_key INTEGER NOT NULL,
    image_key BIGINT NOT NULL,
    iou_threshold DOUBLE NOT NULL,
    label VARCHAR NOT NULL,
    kind VARCHAR NOT NULL CHECK (kind IN ('object', 'detection')),
    score DOUBLE NOT NULL,
    outcome VARCHAR NOT NULL CHECK (outcome IN ('true', 'false', 'ignored', 'missed'))
);
CREATE TABLE match_sets (
    run_key INTEGER NOT NULL,
    iou_threshold DOUBLE NOT NULL,
    label VARCHAR NOT NULL,
    fingerprint VARCHAR NOT NULL,
    matched_at TIMESTAMP NOT NULL,      -- UTC
    PRIMARY KEY (run_key, iou_threshold, label)
);"""

_VIEWS = ("result_rows", "run_image_rows", "failure_rows")

_VIEWS_SQL = """CREATE VIEW result_rows AS
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


def _schema_sql(run_start: int = 1, image_start: int = 1) -> str:
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
    tool_version VARCHAR NOT NULL,
    source VARCHAR                      -- the manifest or file scored, when known
);
{_IMAGES_SQL}
{_OBJECTS_SQL}
{_MATCHES_SQL}
-- One row per (run, image) the run has finished. The pair is unique by construction
-- (writes skip images the run already finished and group a batch by image) and checked
-- by the tests, not by a PRIMARY KEY: DuckDB maintains that index row by row, which
-- made bulk writes twice as slow (schema version 2 dropped it).
CREATE TABLE run_images (
    run_key INTEGER NOT NULL,
    image_key BIGINT NOT NULL,
    status VARCHAR NOT NULL CHECK (status IN ('scored', 'failed')),
    attempts INTEGER NOT NULL,
    scored_at TIMESTAMP NOT NULL        -- UTC; when the run finished the image
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
{_VIEWS_SQL}"""


_V0_TABLES = ("runs", "images", "results", "failures", "raw_responses")

#: The version-0 tables that refer to (run, image) pairs by strings, with the columns
#: each carries into version 1.
_V0_KEYED = (
    ("v0_results", "t.label, t.score, t.box, t.box_unit"),
    ("v0_failures", "t.kind, t.message, t.attempts, t.failed_at"),
    ("v0_raw_responses", "t.response"),
)


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
    for name in _V0_TABLES:
        con.execute(f"ALTER TABLE {name} RENAME TO v0_{name}")
    n_runs = con.execute("SELECT count(*) FROM v0_runs").fetchall()[0][0]
    n_images = con.execute("SELECT count(*) FROM v0_images").fetchall()[0][0]
    con.execute(_schema_sql(run_start=n_runs + 1, image_start=n_images + 1))
    _copy_v0_runs(con)
    _copy_v0_images(con)
    lost = _key_v0_rows(con)
    _copy_v0_results(con)
    _copy_v0_failures_and_marks(con)
    for table, _ in _V0_KEYED:
        con.execute(f"DROP TABLE k_{table}")
    for name in reversed(_V0_TABLES):
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


def _copy_v0_runs(con: duckdb.DuckDBPyConnection) -> None:
    # Runs go through Python (there are few) so that old settings get redacted. Their
    # keys follow the start times, so "latest run" keeps its meaning.
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
            """INSERT INTO runs (run_id, run_key, detector, model_version, dataset,
                   dataset_fingerprint, settings, labels, detection_floor, status,
                   started_at, finished_at, tool_version)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            [run_id, run_key, detector, model_version, dataset, fingerprint or "",
             json.dumps(redact_secrets(settings_obj), sort_keys=True, default=str),
             labels, floor, status, started_at or _utc_now(), finished_at,
             "unknown (migrated from schema 0)"],
        )


def _copy_v0_images(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        r"""INSERT INTO images (image_key, dataset, image_id, uri, content_hash, labels, split)
            SELECT row_number() OVER (ORDER BY rowid), dataset, image_id,
                   coalesce(uri, image_id), content_hash,
                   CASE WHEN labels IS NULL OR trim(labels) = '' THEN []::VARCHAR[]
                        ELSE regexp_split_to_array(trim(labels), '\s*,\s*') END,
                   split
            FROM v0_images"""
    )


def _key_v0_rows(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Give every (run, image) row of the old tables its keys, in ``k_v0_*`` tables.

    Rows whose image was never registered cannot get truth, so they are dropped;
    returns how many each table loses (tables that lose none are left out).
    """
    keyed = """
        SELECT r.run_key, i.image_key, {cols}
        FROM {table} t
        JOIN runs r ON r.run_id = t.run_id
        LEFT JOIN images i ON i.dataset = r.dataset AND i.image_id = t.image_id"""
    lost = {}
    for table, cols in _V0_KEYED:
        con.execute(f"CREATE TEMP TABLE k_{table} AS " + keyed.format(cols=cols, table=table))
        n_lost = con.execute(
            f"SELECT count(*) FROM k_{table} WHERE image_key IS NULL"
        ).fetchall()[0][0]
        n_lost += con.execute(
            f"SELECT count(*) FROM {table} t WHERE t.run_id NOT IN (SELECT run_id FROM runs)"
        ).fetchall()[0][0]
        if n_lost:
            lost[table.removeprefix("v0_")] = n_lost
    return lost


def _copy_v0_results(con: duckdb.DuckDBPyConnection) -> None:
    box = "trim(string_split(trim(box, '[] '), ',')[{}])::DOUBLE"
    con.execute(
        f"""INSERT INTO results
            SELECT run_key, image_key, label, score,
                   {box.format(1)}, {box.format(2)}, {box.format(3)}, {box.format(4)},
                   CASE WHEN box IS NULL THEN NULL ELSE coalesce(box_unit, 'pixel') END
            FROM k_v0_results WHERE image_key IS NOT NULL AND score IS NOT NULL"""
    )
    con.execute(
        """INSERT INTO raw_responses
           SELECT run_key, image_key, any_value(response)
           FROM k_v0_raw_responses
           WHERE image_key IS NOT NULL AND response IS NOT NULL
           GROUP BY run_key, image_key"""
    )


def _copy_v0_failures_and_marks(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        """INSERT INTO failures
           SELECT run_key, image_key,
                  CASE WHEN kind IN ('retryable', 'image', 'fatal', 'error') THEN kind
                       ELSE 'error' END,
                  coalesce(message, ''), coalesce(attempts, 1), coalesce(failed_at, $now)
           FROM k_v0_failures WHERE image_key IS NOT NULL""",
        {"now": _utc_now()},
    )
    # An image is done where it has a result or a failure; a result wins.
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


def _migrate_1_to_2(con: duckdb.DuckDBPyConnection) -> None:
    """Drop ``run_images``' primary key (version 2): uniqueness is kept by the writes.

    DuckDB cannot drop a constraint in place, so the table is rebuilt; the views that
    read it are recreated unchanged. A version-1 file is unique by its key already.
    """
    con.execute("DROP VIEW IF EXISTS run_image_rows")
    con.execute("ALTER TABLE run_images RENAME TO run_images_v1")
    con.execute(
        """CREATE TABLE run_images (
               run_key INTEGER NOT NULL,
               image_key BIGINT NOT NULL,
               status VARCHAR NOT NULL CHECK (status IN ('scored', 'failed')),
               attempts INTEGER NOT NULL,
               scored_at TIMESTAMP NOT NULL
           )"""
    )
    con.execute("INSERT INTO run_images SELECT * FROM run_images_v1 ORDER BY run_key, image_key")
    con.execute("DROP TABLE run_images_v1")
    con.execute(
        """CREATE VIEW run_image_rows AS
               SELECT r.run_id, i.image_id, ri.status, ri.attempts, ri.scored_at
               FROM run_images ri
               JOIN runs r ON r.run_key = ri.run_key
               JOIN images i ON i.image_key = ri.image_key"""
    )


def _has_column(con: duckdb.DuckDBPyConnection, table: str, column: str) -> bool:
    return bool(con.execute(
        "SELECT count(*) FROM duckdb_columns() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND table_name = ? AND column_name = ?", [table, column],
    ).fetchall()[0][0])


def _migrate_2_to_3(con: duckdb.DuckDBPyConnection) -> None:
    """Image identities and run sources (version 3).

    ``images`` gains ``current`` and loses its primary key ``(dataset, image_id)``: an
    image whose content changed keeps its old row (and key) for the runs that scored the
    old content, so a curve never counts a score of other content. Every existing row is
    current. ``runs`` gains ``source`` (the manifest scored), so that a message about an
    unfinished run can give the command that resumes it; it is unknown (NULL) for older
    runs. Files migrated from version 0 already have both (they are built with the
    current tables), so each step only runs where its column is missing.
    """
    for view in _VIEWS:
        con.execute(f"DROP VIEW IF EXISTS {view}")
    if not _has_column(con, "runs", "source"):
        con.execute("ALTER TABLE runs ADD COLUMN source VARCHAR")
    if not _has_column(con, "images", "current"):
        # DuckDB cannot drop a primary key in place, so the table is rebuilt.
        con.execute("ALTER TABLE images RENAME TO images_v2")
        con.execute(_IMAGES_SQL)
        con.execute(
            """INSERT INTO images (image_key, dataset, image_id, uri, content_hash, labels, split)
               SELECT image_key, dataset, image_id, uri, content_hash, labels, split
               FROM images_v2 ORDER BY image_key"""
        )
        con.execute("DROP TABLE images_v2")
    con.execute(_VIEWS_SQL)


def _migrate_3_to_4(con: duckdb.DuckDBPyConnection) -> None:
    """Ground-truth boxes (version 4): ``images`` gains ``width``, ``height`` and
    ``has_objects``, all NULL for existing rows (their manifests gave no boxes, so they
    are not used at the detection level until registered again from a manifest with
    boxes), and the ``objects`` table is created empty. Files migrated from version 0
    or 2 were built with the current ``images`` table already, so each column is only
    added where it is missing.
    """
    for column, sql_type in (("width", "INTEGER"), ("height", "INTEGER"),
                             ("has_objects", "BOOLEAN")):
        if not _has_column(con, "images", column):
            con.execute(f"ALTER TABLE images ADD COLUMN {column} {sql_type}")
    exists = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND table_name = 'objects'").fetchall()[0][0]
    if not exists:
        con.execute(_OBJECTS_SQL)


def _migrate_4_to_5(con: duckdb.DuckDBPyConnection) -> None:
    """Stored matches (version 5): the ``matches`` and ``match_sets`` tables, empty;
    they fill the first time a detection-level count table is asked for. Files migrated
    from older versions through a step that builds the current schema have them already.
    """
    exists = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND table_name = 'matches'").fetchall()[0][0]
    if not exists:
        con.execute(_MATCHES_SQL)


#: ``_MIGRATIONS[v]`` turns a version-``v`` file into version ``v + 1``. Steps run in
#: one transaction, so a failed migration leaves the file as it was.
_MIGRATIONS: dict[int, Callable[[duckdb.DuckDBPyConnection], None]] = {
    0: _migrate_0_to_1,
    1: _migrate_1_to_2,
    2: _migrate_2_to_3,
    3: _migrate_3_to_4,
    4: _migrate_4_to_5,
}


class SchemaMixin(StoreBase):
    """Creates the schema in a new file, checks the version of an existing one, and
    migrates older files."""

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
                tx.execute(_schema_sql())
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
