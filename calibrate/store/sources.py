"""Count tables where the scores already live: Parquet through DuckDB, Spark, any SQL engine.

Everything calibrate computes about a label needs only its count table (per distinct
score, how many positives and negatives have it; see :mod:`calibrate.curves`). When the
scores already sit in Parquet files, a Spark table or a warehouse, that table is
computed there with one ``GROUP BY`` and only the table travels: a few thousand rows
for 10^9 scores when the scores have a few decimals.

The flat score layout
---------------------
One row per image and label, at the image unit (the highest score of the label's
results in the image, as everywhere in calibrate):

=================  =========  ========================================================
column             type       meaning
=================  =========  ========================================================
``detector``       text       the detector's name, e.g. ``surface-defect``
``model_version``  text       its model version: scores of two versions never mix
``label``          text       the label the score is about
``image_id``       any        the image (one row per image and label)
``score``          number     the image-level score in the detector's own scale;
                              NULL (or ``-inf``) = *no result*: the detector returned
                              nothing for the label on the image
``positive``       boolean    ground truth: the label is really present on the image
``split``          text       optional: ``calibration``, ``test``, ...
``failed``         boolean    optional: true = the detector call failed; such a row is
                              counted as failed (``n_failed``), never as a score
=================  =========  ========================================================

From raw per-result rows (one per box) the layout is one ``GROUP BY``; an image with
no result for a label still needs its row (score NULL), or it would be missing from
the negatives and positives alike::

    SELECT detector, model_version, label, image_id, MAX(score) AS score,
           BOOL_OR(label_present) AS positive, ANY_VALUE(split) AS split
    FROM raw_results GROUP BY detector, model_version, label, image_id

As a Parquet dataset it is hive-partitioned by ``detector=/model_version=/label=``
folders (partition values URL-encoded, as DuckDB and Spark write them), so one label's
table reads one folder. :func:`export_scores_dataset` writes a store's scores in this
layout.

The one query
-------------
:func:`count_table_sql` builds the canonical query (``SUM(CASE WHEN ...)``, ``?``
parameters for detector, model version, label and split), and that very string runs in
DuckDB over the Parquet dataset (:class:`ScoresDataset`) and in ``spark.sql``
(:func:`count_table_from_spark`). For any other engine, :func:`count_table_query`
transpiles it with sqlglot to the engine's dialect with the values inlined as that
dialect's literals (:func:`count_table_from_sql` runs it on a DB-API connection).

Rounding
--------
``round_to=k`` groups ``FLOOR(score * 10^k + 0.5) / 10^k`` instead of the score: half up
to k decimals, computed in IEEE double arithmetic, so every engine (and numpy) gives the
same rounded values, and scores that already have k decimals are unchanged. Rounding
turns nearby scores into ties: the table stays exact *for the rounded scores* (it is
what a deployment that compares the rounded score with ``>=`` decides), and it is much
smaller. A deployment that compares the raw score with a threshold ``T`` on the grid
decides the same as the table for every score outside ``[T - 0.5·10^-k, T)``; the raw
scores in that half step fire in the table but not on the line. Round to the
precision the detector really has (the digits it reports, or fewer that carry its
ranking) and say so; without ``round_to`` the table is exact for the raw scores.
"""

from __future__ import annotations

import hashlib
import math
import numbers
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from calibrate.curves import CountTable
from calibrate.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    from calibrate.store import ScoreStore

__all__ = [
    "DEFAULT_RELATION",
    "LAYOUT_COLUMNS",
    "OPTIONAL_COLUMNS",
    "PARTITION_COLUMNS",
    "ScoresDataset",
    "SourceCountTable",
    "choose_thresholds_from_dataset",
    "count_table_from_spark",
    "count_table_from_sql",
    "count_table_query",
    "count_table_sql",
    "export_scores_dataset",
    "round_scores",
]

#: Columns every flat score table has (see the module docstring).
LAYOUT_COLUMNS = ("detector", "model_version", "label", "image_id", "score", "positive")
#: Columns a flat score table may have.
OPTIONAL_COLUMNS = ("split", "failed")
#: The hive partition folders of a Parquet scores dataset, outermost first.
PARTITION_COLUMNS = ("detector", "model_version", "label")
#: The relation name the canonical query reads (a DuckDB view, a Spark temp view).
DEFAULT_RELATION = "calibrate_scores"
#: The most decimals ``round_to`` accepts: 10^k must be exact in a double.
_MAX_DECIMALS = 15


@dataclass(frozen=True, eq=False)
class SourceCountTable(CountTable):
    """A :class:`~calibrate.curves.CountTable` computed where the scores live.

    It is a ``CountTable`` (``calibrate.choose_threshold(table, ...)`` takes it as is)
    that also says how many rows were failed detector calls (left out of the curve, as
    the store's :attr:`~calibrate.store.LabelScores.n_failed`) and which query made it.

    Attributes
    ----------
    n_failed : int
        Rows marked ``failed``: no score, not counted as positive or negative.
    query : str
        The SQL that computed the table (with ``?`` parameters where it ran with them).
    round_to : int or None
        Decimals the scores were rounded to in the query, or None (exact raw scores).
    """

    n_failed: int = 0
    query: str = field(default="", repr=False)
    round_to: int | None = None


# ---------------------------------------------------------------------------------------
# The one query
# ---------------------------------------------------------------------------------------


def _check_round_to(round_to) -> int | None:
    if round_to is None:
        return None
    if isinstance(round_to, bool) or not isinstance(round_to, numbers.Integral) or not (
            0 <= round_to <= _MAX_DECIMALS):
        raise InputError(f"round_to must be a whole number of decimals from 0 to "
                         f"{_MAX_DECIMALS}, got {round_to!r}.")
    return int(round_to)


def _check_relation(relation: str) -> str:
    # A table name is part of the SQL text, so only plain (optionally dotted) names pass.
    parts = str(relation).split(".")
    if not relation or not all(p and (p.replace("_", "a").isalnum()) and not p[0].isdigit()
                               for p in parts):
        raise InputError(f"table {relation!r} is not a plain table name (letters, digits, "
                         "underscores, dotted as catalog.schema.table); create a view "
                         "with such a name over your scores.")
    return str(relation)


def _score_expression(round_to: int | None) -> str:
    if round_to is None:
        return "score"
    scale = 10 ** round_to
    # FLOOR(x + 0.5) is rounding half up in plain IEEE arithmetic: the same result in
    # every engine, unlike ROUND (Spark rounds the decimal text, DuckDB the binary value).
    return f"CAST(FLOOR(CAST(score AS DOUBLE) * {scale} + 0.5) AS DOUBLE) / {scale}"


def count_table_sql(*, relation: str = DEFAULT_RELATION, split: bool = False,
                    failed: bool = False, round_to: int | None = None) -> str:
    """The canonical count-table query over a flat score table.

    Portable SQL (``SUM(CASE WHEN ...)``, no engine-specific functions) that DuckDB and
    Spark SQL run unchanged; other dialects get it through :func:`count_table_query`.
    Parameters are positional ``?`` markers: detector, model version, label, and the
    split when ``split`` is true. It returns one row per distinct (rounded) score, the
    score NULL for "no result", with ``n_positive, n_negative, n_failed, n_rows``;
    ``n_rows`` minus the other three counts rows whose truth is neither true nor false.

    Parameters
    ----------
    relation : str, default "calibrate_scores"
        The table or view with the flat layout.
    split : bool, default False
        Filter on the ``split`` column too.
    failed : bool, default False
        The relation has a ``failed`` column (else no row counts as failed).
    round_to : int, optional
        Group scores rounded half up to this many decimals (see the module docstring).

    Returns
    -------
    str
    """
    relation = _check_relation(relation)
    score = _score_expression(_check_round_to(round_to))
    skip = "WHEN failed = TRUE THEN 0 " if failed else ""
    n_failed = "SUM(CASE WHEN failed = TRUE THEN 1 ELSE 0 END)" if failed else "0"
    where = "detector = ? AND model_version = ? AND label = ?" + (
        " AND split = ?" if split else "")
    return (
        f"SELECT {score} AS score,\n"
        f"       SUM(CASE {skip}WHEN positive = TRUE THEN 1 ELSE 0 END) AS n_positive,\n"
        f"       SUM(CASE {skip}WHEN positive = FALSE THEN 1 ELSE 0 END) AS n_negative,\n"
        f"       {n_failed} AS n_failed,\n"
        f"       COUNT(*) AS n_rows\n"
        f"FROM {relation}\n"
        f"WHERE {where}\n"
        f"GROUP BY {score}"
    )


def count_table_query(dialect: str, detector: str, model_version: str, label: str, *,
                      relation: str = DEFAULT_RELATION, split: str | None = None,
                      failed: bool = False, round_to: int | None = None) -> str:
    """The count-table query for one label in an engine's own dialect, values inlined.

    The canonical :func:`count_table_sql` is parsed by sqlglot, its ``?`` markers are
    replaced by string literals (quoted and escaped the dialect's way), and the result
    is written in ``dialect``: paste it into the warehouse's console, or run it with
    :func:`count_table_from_sql`.

    Parameters
    ----------
    dialect : str
        A sqlglot dialect: ``"sqlite"``, ``"duckdb"``, ``"postgres"``, ``"spark"``,
        ``"bigquery"``, ``"snowflake"``, ``"trino"``, ...
    detector, model_version, label : str
    relation : str, default "calibrate_scores"
        The table (``dataset.table`` or ``db.schema.table`` where the engine has them).
    split : str, optional
        Only rows of this split.
    failed, round_to
        As in :func:`count_table_sql`.

    Returns
    -------
    str

    Raises
    ------
    InputError
        On a dialect sqlglot does not know, or a relation that is not a plain name.

    Examples
    --------
    >>> print(count_table_query("bigquery", "surface-defect", "v2", "crack",
    ...                         relation="qc.scores"))  # doctest: +NORMALIZE_WHITESPACE
    SELECT score AS score, SUM(CASE WHEN positive = TRUE THEN 1 ELSE 0 END) AS n_positive,
    SUM(CASE WHEN positive = FALSE THEN 1 ELSE 0 END) AS n_negative, 0 AS n_failed,
    COUNT(*) AS n_rows FROM qc.scores WHERE detector = 'surface-defect' AND
    model_version = 'v2' AND label = 'crack' GROUP BY score
    """
    import sqlglot
    from sqlglot import exp
    from sqlglot.dialects.dialect import Dialect

    try:
        Dialect.get_or_raise(dialect)
    except ValueError as exc:
        raise InputError(f"unknown SQL dialect {dialect!r} ({exc}); use a sqlglot dialect "
                         "name such as sqlite, postgres, duckdb, spark, bigquery or "
                         "snowflake.") from None
    values = [detector, model_version, label] + ([split] if split is not None else [])
    for name, v in zip(("detector", "model_version", "label", "split"), values):
        if not isinstance(v, str):
            raise InputError(f"{name} must be text, got {v!r}.")
    tree = sqlglot.parse_one(count_table_sql(relation=relation, split=split is not None,
                                             failed=failed, round_to=round_to))
    marks = list(tree.find_all(exp.Placeholder, bfs=False))  # depth-first = text order
    for mark, value in zip(marks, values, strict=True):
        mark.replace(exp.Literal.string(value))
    return tree.sql(dialect=dialect)


def round_scores(scores, round_to: int | None) -> np.ndarray:
    """Scores rounded exactly as the count-table query rounds them (half up, IEEE).

    ``floor(score * 10^k + 0.5) / 10^k`` in float64: what :func:`count_table_sql`
    computes in the engine, for comparing with a table built from raw arrays.
    ``-inf`` (no result) stays ``-inf``.
    """
    s = np.asarray(scores, dtype=np.float64)
    k = _check_round_to(round_to)
    if k is None:
        return s
    scale = float(10 ** k)
    with np.errstate(invalid="ignore"):
        return np.floor(s * scale + 0.5) / scale


def _as_score(value, where: str) -> float:
    """One score of a result row: NULL and -inf are "no result"; NaN, +inf, text fail."""
    if value is None:
        return -math.inf
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        try:  # decimal.Decimal is not numbers.Real, yet is a number
            import decimal

            if isinstance(value, decimal.Decimal) and value.is_finite():
                return float(value)
        except ImportError:  # pragma: no cover
            pass
        raise InputError(f"{where}: column 'score' holds {value!r} "
                         f"({type(value).__name__}), not a number; store scores as numbers "
                         "(NULL for no result).")
    x = float(value)
    if math.isnan(x):
        raise InputError(f"{where}: column 'score' holds NaN: a NaN is a failed detector "
                         "call, not a score; set 'failed' true on those rows (or remove "
                         "them) and use NULL for no result.")
    if x == math.inf:
        raise InputError(f"{where}: column 'score' holds +inf; scores must be finite "
                         "(NULL or -inf for no result).")
    return x


def _table_from_rows(rows, where: str, query: str, round_to: int | None) -> SourceCountTable:
    """The count table of the query's result rows, checked.

    Rows are ``(score, n_positive, n_negative, n_failed, n_rows)``; a row count that the
    three counts do not add up to means truth values that are neither true nor false.
    """
    scores, pos, neg = [], [], []
    n_failed = n_bad = 0
    for score, n_pos, n_neg, n_fail, n_rows in rows:
        n_pos, n_neg, n_fail, n_rows = int(n_pos or 0), int(n_neg or 0), int(n_fail or 0), int(
            n_rows)
        n_bad += n_rows - n_pos - n_neg - n_fail
        n_failed += n_fail
        if n_pos or n_neg:
            scores.append(_as_score(score, where))
            pos.append(n_pos)
            neg.append(n_neg)
    if n_bad:
        raise InputError(f"{where}: column 'positive' is neither true nor false on {n_bad:,} "
                         "row(s) (NULL or another value); it must be boolean ground truth "
                         "(true = the label is really present).")
    table = CountTable.from_counts(np.asarray(scores, dtype=np.float64),
                                   np.asarray(pos, dtype=np.int64),
                                   np.asarray(neg, dtype=np.int64))
    return SourceCountTable(table.scores, table.n_positive, table.n_negative,
                            n_failed=n_failed, query=query, round_to=round_to)


def _require_rows(table: SourceCountTable, where: str, key: tuple[str, ...]) -> None:
    if len(table) == 0 and table.n_failed == 0:
        what = " / ".join(key)
        raise InputError(f"{where}: no rows for {what}; check the detector, model version, "
                         "label and split names (they are matched exactly).")


# ---------------------------------------------------------------------------------------
# Parquet datasets through DuckDB
# ---------------------------------------------------------------------------------------


def _partition_name(column: str, value: str) -> str:
    """The hive folder of a partition value, URL-encoded as DuckDB and Spark write it."""
    return f"{column}={urllib.parse.quote(str(value), safe='')}"


def _partition_values(folder: Path, column: str) -> dict[str, Path]:
    """``value -> subfolder`` of the ``column=value`` folders in ``folder``."""
    out = {}
    prefix = column + "="
    for p in sorted(folder.iterdir()):
        if p.is_dir() and p.name.startswith(prefix):
            out[urllib.parse.unquote(p.name[len(prefix):])] = p
    return out


class ScoresDataset:
    """A hive-partitioned Parquet dataset of flat scores, read through DuckDB.

    The folder holds ``detector=<d>/model_version=<v>/label=<l>/*.parquet`` files (more
    partition levels below are allowed) whose rows have the flat layout's other
    columns: ``image_id, score, positive`` and optionally ``split``, ``failed`` (see
    :mod:`calibrate.store.sources`). A label's table reads only that label's folder:
    the file list is built from the folder names, so the other partitions are never
    opened, whatever their number or size.

    Parameters
    ----------
    path : str or Path
        The dataset's root folder.

    Raises
    ------
    InputError
        When the folder is missing or holds no ``detector=`` partition.

    Examples
    --------
    >>> ds = ScoresDataset("scores/")                       # doctest: +SKIP
    >>> table = ds.count_table("surface-defect", "v2", "crack", round_to=3)  # doctest: +SKIP
    >>> calibrate.choose_threshold(table, cost_false_accept=50, cost_false_reject=1)  # doctest: +SKIP
    """

    def __init__(self, path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise InputError(f"no scores dataset at {self.path}: give the root folder of a "
                             "Parquet dataset partitioned by detector=/model_version=/label=.")
        if not _partition_values(self.path, "detector"):
            raise InputError(f"{self.path} has no detector=... folder; a scores dataset is "
                             "partitioned by detector=/model_version=/label= folders "
                             "(see docs/team-setup.md).")

    def __repr__(self) -> str:
        return f"ScoresDataset({str(self.path)!r})"

    # -- partitions -----------------------------------------------------------------

    def versions(self) -> dict[tuple[str, str], list[str]]:
        """``(detector, model_version) -> labels`` from the partition folders."""
        out = {}
        for det, dfolder in _partition_values(self.path, "detector").items():
            for ver, vfolder in _partition_values(dfolder, "model_version").items():
                out[(det, ver)] = sorted(_partition_values(vfolder, "label"))
        return out

    def _folder(self, detector: str, model_version: str, label: str) -> Path:
        """The label's partition folder, or an error listing the values there are."""
        folder = self.path
        for column, value in zip(PARTITION_COLUMNS, (detector, model_version, label)):
            values = _partition_values(folder, column)
            if value not in values:
                raise InputError(
                    f"{folder}: no partition {_partition_name(column, value)} (unknown "
                    f"{column} {value!r}); there are {', '.join(map(repr, values)) or 'none'}.")
            folder = values[value]
        return folder

    def files(self, detector: str, model_version: str, label: str) -> list[Path]:
        """The Parquet files of one label's partition (and only those), sorted."""
        folder = self._folder(detector, model_version, label)
        found = sorted(p for p in folder.rglob("*.parquet") if p.is_file())
        if not found:
            raise InputError(f"{folder}: the partition holds no .parquet file.")
        return found

    def _columns(self, files: list[Path]) -> set[str]:
        """The columns of the files, checked: required ones in every file, types right.

        An optional column missing from some files reads as NULL there (the files are
        read by name): not failed, in no split.
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        kinds = {"image_id": None, "score": "number", "positive": "boolean",
                 "split": "text", "failed": "boolean"}
        checks = {"number": lambda t: pa.types.is_floating(t) or pa.types.is_integer(t)
                  or pa.types.is_decimal(t),
                  "boolean": pa.types.is_boolean,
                  "text": lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)}
        found: set[str] = set()
        for f in files:
            try:
                schema = pq.read_schema(f)
            except (OSError, pa.ArrowException) as exc:
                raise InputError(f"{f}: not a readable Parquet file ({exc}).") from None
            names = set(schema.names)
            missing = [c for c in ("image_id", "score", "positive") if c not in names]
            if missing:
                raise InputError(f"{f}: missing column(s) {', '.join(missing)}; a scores "
                                 "dataset file has image_id, score, positive (optional: "
                                 "split, failed).")
            for name, kind in kinds.items():
                if kind and name in names and not checks[kind](schema.field(name).type):
                    raise InputError(
                        f"{f}: column {name!r} is {schema.field(name).type}, must be {kind}"
                        + (" (true = the label is really present; convert it, e.g. "
                           "positive = truth = 'defect')" if name == "positive" else "")
                        + ".")
            found |= names
        return found

    # -- counting -------------------------------------------------------------------

    def count_table(self, detector: str, model_version: str, label: str, *,
                    split: str | None = None, round_to: int | None = None,
                    connection=None) -> SourceCountTable:
        """One label's count table, computed by DuckDB over that label's files only.

        Runs :func:`count_table_sql` unchanged on a view over the partition's files.

        Parameters
        ----------
        detector, model_version, label : str
            Partition values (matched exactly).
        split : str, optional
            Only rows of this split (the files must have a ``split`` column).
        round_to : int, optional
            Group scores rounded to this many decimals (see :func:`count_table_sql`).
        connection : duckdb.DuckDBPyConnection, optional
            The connection to run on (default: a new in-memory one).

        Returns
        -------
        SourceCountTable

        Raises
        ------
        InputError
            On an unknown partition value, a file without the layout's columns or with
            a wrong type, a non-boolean truth, a NaN or +inf score, or no rows.
        """
        import duckdb

        files = self.files(detector, model_version, label)
        cols = self._columns(files)
        where = str(self._folder(detector, model_version, label))
        if split is not None and "split" not in cols:
            raise InputError(f"{where}: no 'split' column, so split {split!r} cannot be "
                             "selected; add a split column or leave out --split.")
        sql = count_table_sql(split=split is not None, failed="failed" in cols,
                              round_to=round_to)
        con = connection if connection is not None else duckdb.connect()
        try:
            con.execute(f"CREATE OR REPLACE TEMP VIEW {DEFAULT_RELATION} AS "
                        f"SELECT * FROM read_parquet({_sql_list(files)}, hive_partitioning = "
                        "true, hive_types = {'detector': VARCHAR, 'model_version': VARCHAR, "
                        "'label': VARCHAR}, union_by_name = true)")
            params = [detector, model_version, label] + ([split] if split is not None else [])
            rows = con.execute(sql, params).fetchall()
        except duckdb.Error as exc:
            raise InputError(f"{where}: DuckDB could not count the scores: "
                             f"{str(exc).splitlines()[0]}") from None
        finally:
            if connection is None:
                con.close()
        table = _table_from_rows(rows, where, sql, _check_round_to(round_to))
        _require_rows(table, where, (detector, model_version, label)
                      + ((split,) if split else ()))
        return table

    def splits(self, detector: str | None = None, model_version: str | None = None) -> list[str]:
        """The split names in the selected versions' files (none without a split column)."""
        import duckdb

        files = []
        for (det, ver), labels in self.versions().items():
            if detector not in (None, det) or model_version not in (None, ver):
                continue
            for lab in labels:
                fs = self.files(det, ver, lab)
                if "split" in self._columns(fs):
                    files += fs
        if not files:
            return []
        with duckdb.connect() as con:
            rows = con.execute(f"SELECT DISTINCT split FROM read_parquet({_sql_list(files)}, "
                               "union_by_name = true) WHERE split IS NOT NULL ORDER BY 1"
                               ).fetchall()
        return [r[0] for r in rows]

    def fingerprint(self, detector: str, model_version: str) -> str:
        """Identifies the version's files: their paths, sizes and row counts (footers
        only; hashing every byte of 10^9 rows would cost more than the count)."""
        import pyarrow.parquet as pq

        h = hashlib.sha256()
        for lab in self.versions().get((detector, model_version), []):
            for f in self.files(detector, model_version, lab):
                rel = f.relative_to(self.path).as_posix()
                h.update(f"{rel}\0{f.stat().st_size}\0{pq.read_metadata(f).num_rows}\n"
                         .encode())
        return "files-sha256:" + h.hexdigest()


def choose_thresholds_from_dataset(
    dataset: ScoresDataset,
    policies,
    *,
    detector: str | None = None,
    model_version: str | None = None,
    labels: list[str] | None = None,
    split: str | None = None,
    held_out: str | None = None,
    round_to: int | None = None,
) -> list:
    """Choose a threshold for every (detector, model version, label) of a Parquet dataset.

    The dataset's counterpart of
    :func:`~calibrate.thresholds.choose_thresholds_from_store`: each label's table is
    counted by DuckDB over that label's partition, and the same choice, held-out
    evaluation and result objects follow.

    Parameters
    ----------
    dataset : ScoresDataset
    policies : calibrate.policy.PolicySet
    detector, model_version : str, optional
        Only this detector / model version.
    labels : list of str, optional
        Only these labels.
    split : str, optional
        Choose on the rows of this split.
    held_out : str, optional
        Evaluate each choice on this split; default ``"test"`` when ``split`` names
        another split and the data has a ``test`` split; ``""`` for none.
    round_to : int, optional
        Group scores rounded to this many decimals (see :func:`count_table_sql`).

    Returns
    -------
    list of calibrate.thresholds.LabelThreshold
        Sorted by detector, model version and label.

    Raises
    ------
    InputError
        On an unknown split or partition value, or a file that breaks the layout.
    """
    from calibrate.thresholds import choose_label_threshold, default_held_out

    known = dataset.splits(detector, model_version)
    for name, what in ((split, "split"), (held_out or None, "held-out split")):
        if name is not None and name not in known:
            raise InputError(f"unknown {what} {name!r}: no row of {dataset.path} is in it; "
                             f"the splits are {', '.join(known) or 'none (no split column)'}.")
    held_out = default_held_out(split, known) if held_out is None else (held_out or None)
    if held_out is not None and held_out == split:
        raise InputError(f"the held-out split {held_out!r} is the split the thresholds are "
                         "chosen on; a held-out split must be another one.")
    out = []
    for (det, ver), labs in sorted(dataset.versions().items()):
        if detector not in (None, det) or model_version not in (None, ver):
            continue
        for lab in labs:
            if labels is not None and lab not in labels:
                continue
            # Bad files raise here (exit 2); a table the statistics refuse (one class
            # missing) becomes the label's problem, as in the store.
            table = dataset.count_table(det, ver, lab, split=split, round_to=round_to)
            held = None
            if held_out is not None:
                held = (lambda d=det, v=ver, lb=lab: dataset.count_table(
                    d, v, lb, split=held_out, round_to=round_to))
            out.append(choose_label_threshold(
                (det, ver, lab), lambda t=table: t, policies, held_out_source=held,
                held_out=held_out, n_failed=table.n_failed, dataset=dataset.path.name,
                split=split))
    return out


def _sql_list(files: list[Path]) -> str:
    """A DuckDB list literal of file paths (quotes doubled)."""
    return "[" + ", ".join("'" + str(f).replace("'", "''") + "'" for f in files) + "]"


# ---------------------------------------------------------------------------------------
# Spark and any DB-API connection
# ---------------------------------------------------------------------------------------


def count_table_from_spark(spark_or_df, detector: str, model_version: str, label: str, *,
                           table: str | None = None, split: str | None = None,
                           round_to: int | None = None) -> SourceCountTable:
    """One label's count table computed by Spark SQL: only the table leaves the cluster.

    Runs :func:`count_table_sql` unchanged through ``spark.sql`` with positional
    parameters (Spark 3.5 or later).

    Parameters
    ----------
    spark_or_df : pyspark.sql.SparkSession or pyspark.sql.DataFrame
        A DataFrame with the flat layout (registered as the temporary view
        ``calibrate_scores`` for the query, and dropped again), or a session together
        with ``table``.
    detector, model_version, label : str
    table : str, optional
        With a session: the table or view with the flat layout (``db.scores``).
    split : str, optional
        Only rows of this split.
    round_to : int, optional
        Group scores rounded to this many decimals.

    Returns
    -------
    SourceCountTable

    Raises
    ------
    InputError
        On a missing column, a truth column that is not boolean, a score that is not a
        number, NaN or +inf, or no rows for the label.
    """
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.utils import AnalysisException

    if isinstance(spark_or_df, DataFrame):
        if table is not None:
            raise InputError("give either a DataFrame or a session with table=, not both.")
        spark, df, relation, where = spark_or_df.sparkSession, spark_or_df, DEFAULT_RELATION, (
            "the Spark DataFrame")
    elif isinstance(spark_or_df, SparkSession):
        if table is None:
            raise InputError("with a SparkSession, name the scores table: table='db.scores'.")
        spark, relation, where = spark_or_df, _check_relation(table), f"Spark table {table}"
        try:
            df = spark.table(relation)
        except AnalysisException as exc:
            raise InputError(f"{where}: {str(exc).splitlines()[0]}") from None
    else:
        raise InputError(f"expected a SparkSession or DataFrame, got "
                         f"{type(spark_or_df).__name__}.")
    cols = _spark_columns(df, where)
    if split is not None and "split" not in cols:
        raise InputError(f"{where}: no 'split' column, so split {split!r} cannot be selected.")
    sql = count_table_sql(relation=relation, split=split is not None, failed="failed" in cols,
                          round_to=round_to)
    params = [detector, model_version, label] + ([split] if split is not None else [])
    if relation == DEFAULT_RELATION:
        df.createOrReplaceTempView(DEFAULT_RELATION)
    try:
        rows = [tuple(r) for r in spark.sql(sql, args=params).collect()]
    except AnalysisException as exc:
        raise InputError(f"{where}: Spark could not count the scores: "
                         f"{str(exc).splitlines()[0]}") from None
    finally:
        if relation == DEFAULT_RELATION:
            spark.catalog.dropTempView(DEFAULT_RELATION)
    out = _table_from_rows(rows, where, sql, _check_round_to(round_to))
    _require_rows(out, where, (detector, model_version, label) + ((split,) if split else ()))
    return out


def _spark_columns(df, where: str) -> set[str]:
    """The DataFrame's columns, checked against the layout's names and types."""
    types = {f.name: f.dataType.typeName() for f in df.schema.fields}
    missing = [c for c in LAYOUT_COLUMNS if c not in types]
    if missing:
        raise InputError(f"{where}: missing column(s) {', '.join(missing)}; the flat layout "
                         f"has {', '.join(LAYOUT_COLUMNS)} (optional: split, failed).")
    numeric = {"double", "float", "decimal", "integer", "long", "short", "byte"}
    wrong = [(c, t, want) for c, want, ok in (
        ("score", "number", lambda t: t in numeric),
        ("positive", "boolean", lambda t: t == "boolean"),
        ("failed", "boolean", lambda t: t == "boolean"),
    ) if c in types and not ok(t := types[c])]
    for c, t, want in wrong:
        raise InputError(f"{where}: column {c!r} is {t}, must be {want}.")
    return set(types)


#: SQLAlchemy dialect names whose sqlglot dialect has another name.
_SQLALCHEMY_DIALECTS = {"postgresql": "postgres", "mssql": "tsql", "oracle": "oracle",
                        "mysql": "mysql", "mariadb": "mysql", "sqlite": "sqlite",
                        "duckdb": "duckdb", "snowflake": "snowflake", "bigquery": "bigquery"}


def _dbapi(connection, dialect: str | None) -> tuple[Any, str, bool]:
    """A DB-API connection, its sqlglot dialect and whether it was opened here (to be
    closed after), from a DB-API connection or a SQLAlchemy ``Engine`` / ``Connection``
    (whose dialect names the engine).

    SQLAlchemy is not imported: an object is taken for one by the attributes it has.
    """
    sa_dialect = getattr(getattr(connection, "dialect", None), "name", None)
    if sa_dialect is None:
        return connection, dialect or "sqlite", False
    if dialect is None:
        dialect = _SQLALCHEMY_DIALECTS.get(sa_dialect)
        if dialect is None:
            raise InputError(f"SQLAlchemy dialect {sa_dialect!r} has no known sqlglot "
                             "dialect; pass dialect= (e.g. 'postgres', 'tsql').")
    if hasattr(connection, "raw_connection"):  # an Engine: borrow a pooled connection
        return connection.raw_connection(), dialect, True
    if hasattr(connection, "exec_driver_sql"):  # a Connection, inside its transaction
        return connection.connection, dialect, False
    raise InputError(f"{type(connection).__name__} is neither a DB-API connection nor a "
                     "SQLAlchemy Engine or Connection.")


def count_table_from_sql(connection, detector: str, model_version: str, label: str, *,
                         table: str = DEFAULT_RELATION, dialect: str | None = None,
                         split: str | None = None, failed: bool | None = None,
                         round_to: int | None = None) -> SourceCountTable:
    """One label's count table computed by any SQL engine through a DB-API connection
    or a SQLAlchemy engine or connection.

    The query is :func:`count_table_query` for ``dialect`` (values inlined as the
    dialect's literals, so the driver's parameter style does not matter).

    Parameters
    ----------
    connection : DB-API 2.0 connection, or SQLAlchemy Engine or Connection
        e.g. ``sqlite3.connect(...)``, ``duckdb.connect(...)``, ``psycopg.connect(...)``,
        ``sqlalchemy.create_engine(url)``.
    detector, model_version, label : str
    table : str, default "calibrate_scores"
        The table or view with the flat layout.
    dialect : str, optional
        The engine's sqlglot dialect. Default: a SQLAlchemy object's own dialect, else
        ``"sqlite"``.
    split : str, optional
        Only rows of this split.
    failed : bool, optional
        Whether the table has a ``failed`` column (default: look at its columns).
    round_to : int, optional
        Group scores rounded to this many decimals.

    Returns
    -------
    SourceCountTable

    Raises
    ------
    InputError
        On a missing column, truth values that are not boolean, scores that are not
        numbers, NaN or +inf, a query the engine refuses, or no rows for the label.
    """
    connection, dialect, borrowed = _dbapi(connection, dialect)
    try:
        return _count_from_dbapi(connection, detector, model_version, label, table=table,
                                 dialect=dialect, split=split, failed=failed,
                                 round_to=round_to)
    finally:
        if borrowed:
            connection.close()  # back to the engine's pool


def _count_from_dbapi(connection, detector: str, model_version: str, label: str, *,
                      table: str, dialect: str, split: str | None, failed: bool | None,
                      round_to: int | None) -> SourceCountTable:
    """:func:`count_table_from_sql` on a DB-API connection."""
    where = f"table {table}"
    if failed is None or split is not None:
        cols = _sql_columns(connection, table, where)
        failed = "failed" in cols if failed is None else failed
        if split is not None and "split" not in cols:
            raise InputError(f"{where}: no 'split' column, so split {split!r} cannot be "
                             "selected.")
    sql = count_table_query(dialect, detector, model_version, label, relation=table,
                            split=split, failed=failed, round_to=round_to)
    cur = connection.cursor()
    try:
        cur.execute(sql)
        rows = cur.fetchall()
    except Exception as exc:  # DB-API drivers each have their own Error classes
        if not _is_db_error(exc):
            raise
        raise InputError(f"{where}: the {dialect} query failed: "
                         f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                         ) from None
    finally:
        cur.close()
    out = _table_from_rows(rows, where, sql, _check_round_to(round_to))
    _require_rows(out, where, (detector, model_version, label) + ((split,) if split else ()))
    return out


def _is_db_error(exc: Exception) -> bool:
    """A DB-API driver's error (each module defines its own ``Error`` hierarchy)."""
    return any(k.__name__ in ("Error", "DatabaseError", "DataError", "ProgrammingError",
                              "OperationalError", "IntegrityError", "NotSupportedError")
               or k.__module__.split(".")[0] in ("duckdb", "sqlite3", "_duckdb")
               for k in type(exc).__mro__[:-2])


def _sql_columns(connection, table: str, where: str) -> set[str]:
    """The table's column names (from a query that returns no row), checked."""
    table = _check_relation(table)
    cur = connection.cursor()
    try:
        cur.execute(f"SELECT * FROM {table} WHERE 1 = 0")
        names = {d[0].lower() for d in cur.description}
    except Exception as exc:
        if not _is_db_error(exc):
            raise
        raise InputError(f"{where}: cannot read it: {str(exc).splitlines()[0]}") from None
    finally:
        cur.close()
    missing = [c for c in LAYOUT_COLUMNS if c not in names]
    if missing:
        raise InputError(f"{where}: missing column(s) {', '.join(missing)}; the flat layout "
                         f"has {', '.join(LAYOUT_COLUMNS)} (optional: split, failed).")
    return names


# ---------------------------------------------------------------------------------------
# A store's scores in the flat layout
# ---------------------------------------------------------------------------------------


def export_scores_dataset(store: ScoreStore, folder, *, detector: str | None = None,
                          model_version: str | None = None,
                          dataset: str | None = None) -> dict[str, Any]:
    """Write a store's image-level scores as a hive-partitioned flat Parquet dataset.

    Exactly the rows the store's own count tables count: per (detector, model version,
    label), every current image of the version's dataset that it scored, with its
    highest score for the label in the latest run that scored it (NULL for no result),
    its truth and split; and one row with ``failed`` true and no score per image the
    version failed on and never scored. Labels truly present but never reported get
    their partition too. So ``ScoresDataset(folder).count_table(d, v, l)`` equals
    ``store.count_table(d, v, l)``, and its ``n_failed`` equals ``store.n_failed(d, v)``.

    Parameters
    ----------
    store : ScoreStore
    folder : str or Path
        Created if missing; a label's existing partition files are replaced.
    detector, model_version : str, optional
        Only these versions.
    dataset : str, optional
        The dataset each version counts (default: the latest it ran on).

    Returns
    -------
    dict
        ``files`` (number written), ``rows`` and ``folder``.
    """
    import duckdb

    from calibrate.store.errors import StoreError

    root = Path(folder)
    n_files = n_rows = 0
    for row in store.versions().itertuples():
        det, ver = row.detector, row.model_version
        if detector not in (None, det) or model_version not in (None, ver):
            continue
        labels = sorted(set(store.labels(det, ver, dataset=dataset))
                        | set(store.truth_labels(det, ver, dataset=dataset)))
        for label in labels:
            target = root.joinpath(*(_partition_name(c, v) for c, v in
                                     zip(PARTITION_COLUMNS, (det, ver, label))))
            target.mkdir(parents=True, exist_ok=True)
            for old in target.glob("*.parquet"):
                old.unlink()
            out = target / "part-0.parquet"
            with store._lock:
                ctes, failed = store._selection_sql(det, ver, dataset)
                query = f"""WITH {ctes}, {failed}
                    SELECT i.image_id, b.score, list_contains(i.labels, $label) AS positive,
                           i.split, FALSE AS failed, l.image_key AS k
                    FROM latest l
                    JOIN images i ON i.image_key = l.image_key AND i.current
                    LEFT JOIN best b ON b.image_key = l.image_key
                    UNION ALL
                    SELECT i.image_id, NULL::DOUBLE, list_contains(i.labels, $label),
                           i.split, TRUE, f.image_key
                    FROM failed f JOIN images i ON i.image_key = f.image_key AND i.current"""
                try:
                    rel = store._db().sql(
                        f"SELECT image_id, score, positive, split, failed FROM ({query}) "
                        "ORDER BY k", params={"label": label})
                    rel.write_parquet(str(out))
                except duckdb.Error as exc:
                    raise StoreError(f"exporting {det} {ver} {label} to {out} failed: "
                                     f"{exc}") from exc
            import pyarrow.parquet as pq

            n_files += 1
            n_rows += pq.read_metadata(out).num_rows
    return {"files": n_files, "rows": n_rows, "folder": str(root)}
