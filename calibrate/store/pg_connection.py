"""A psycopg 3 connection that answers the store's mixins as a DuckDB connection does.

The mixins call ``execute(sql, params)`` with DuckDB SQL and read the result with
``fetchall()``, ``fetchnumpy()`` or ``.df()``; they hand tables to SQL with
``register(name, arrow_or_pandas)`` and run transactions with ``begin``/``commit``/
``rollback``. :class:`PgConnection` does the same over PostgreSQL: each statement is
translated once (:func:`calibrate.store.pg_sql.to_postgres`), a registered table becomes
a temporary table filled with ``COPY`` (Arrow writes the CSV, in C), and every driver
error becomes a one-line :class:`StoreError` with the password taken out.

Credentials come only from the URL, the ``PG*`` environment variables or ``~/.pgpass``
(libpq reads them); :func:`redact_url` is what any message shows of a URL.
"""

from __future__ import annotations

import io
from decimal import Decimal
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg.adapt import Loader
from psycopg.pq import TransactionStatus
from psycopg.types.string import StrDumper

from calibrate.store.errors import StoreError
from calibrate.store.location import redact_url
from calibrate.store.pg_sql import to_postgres

__all__ = ["PgConnection", "PgResult"]

class _NumericLoader(Loader):
    """``numeric`` as int when integral (``sum`` of integers), else float, as DuckDB."""

    def load(self, data: Any) -> int | float:
        value = Decimal(bytes(data).decode())
        return int(value) if value == value.to_integral_value() else float(value)


#: float4, float8 and numeric: NULLs of these read as NaN in a DataFrame.
_FLOAT_OIDS = frozenset({700, 701, 1700})


class PgResult:
    """The rows of one statement, read the ways the mixins read a DuckDB result."""

    def __init__(self, names: list[str], rows: list[tuple], types: list[int] | None = None):
        self.names, self.rows = names, rows
        self.types = types or [0] * len(names)

    def fetchall(self) -> list[tuple]:
        return self.rows

    def fetchone(self) -> tuple | None:
        return self.rows[0] if self.rows else None

    def fetchnumpy(self) -> dict[str, np.ndarray]:
        cols = list(zip(*self.rows)) if self.rows else [()] * len(self.names)
        out = {}
        for name, values in zip(self.names, cols):
            kinds = {type(v) for v in values if v is not None}
            simple = kinds <= {int, float, bool} and None not in values and len(kinds) <= 1
            arr = np.empty(len(values), dtype=object)
            arr[:] = list(values)
            out[name] = np.array(values) if simple and values else arr
        return out

    def df(self) -> Any:
        import pandas as pd

        df = pd.DataFrame.from_records(self.rows, columns=self.names)
        for name, oid in zip(self.names, self.types):
            if oid in _FLOAT_OIDS and df[name].dtype == object:
                df[name] = df[name].astype("float64")  # NULL as NaN, as DuckDB gives it
        return df


def _pg_type(t: pa.DataType) -> str:
    if pa.types.is_dictionary(t):
        t = t.value_type
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_integer(t):
        return "BIGINT" if t.bit_width > 32 else "INTEGER"
    if pa.types.is_floating(t):
        return "DOUBLE PRECISION"
    if pa.types.is_timestamp(t):
        return "TIMESTAMP"
    if pa.types.is_binary(t) or pa.types.is_large_binary(t):
        return "BYTEA"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _pg_type(t.value_type) + "[]"
    return "TEXT"


def _array_literals(col: pa.ChunkedArray) -> pa.Array:
    """A list-of-strings column as PostgreSQL array literals (``{"a","b"}``), in Arrow."""
    import pyarrow.compute as pc

    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    values = pc.cast(arr.flatten(), pa.string())
    values = pc.replace_substring(pc.replace_substring(values, "\\", "\\\\"), '"', '\\"')
    offsets = pc.subtract(arr.offsets, arr.offsets[0])  # a slice's offsets start past 0
    rebuilt = pa.ListArray.from_arrays(offsets, values, mask=arr.is_null())
    joined = pc.binary_join_element_wise("{\"", pc.binary_join(rebuilt, '","'), '"}', "")
    return pc.if_else(pc.equal(pc.list_value_length(arr), 0), "{}", joined)


def _csv_ready(table: pa.Table) -> pa.Table:
    """Columns Arrow's CSV writer cannot write, as PostgreSQL's text input forms."""
    cols = {}
    for name in table.column_names:
        col, t = table[name], table.schema.field(name).type
        if pa.types.is_dictionary(t):
            col = col.cast(t.value_type)
            t = t.value_type
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            col = _array_literals(col)
        elif pa.types.is_binary(t) or pa.types.is_large_binary(t):
            col = pa.array([None if v is None else "\\x" + v.hex() for v in col.to_pylist()],
                           pa.string())
        elif pa.types.is_null(t):
            col = col.cast(pa.string())
        cols[name] = col
    return pa.table(cols)


def _as_arrow(data: Any) -> pa.Table:
    if isinstance(data, pa.Table):
        return data
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return pa.Table.from_pandas(data, preserve_index=False)
    return pa.table(data)


class PgConnection:
    """The store's connection to PostgreSQL (see the module docstring).

    Parameters
    ----------
    url : str
        A ``postgresql://`` URL. Never kept: only its redacted form is, for messages.
    """

    def __init__(self, url: str):
        self.where = redact_url(url)
        try:
            self.raw = psycopg.connect(url, autocommit=True)
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot connect to the PostgreSQL score store {self.where}: "
                f"{_one_line(exc)}. Check the host, port, database and user; passwords "
                "come from the URL, PGPASSWORD or ~/.pgpass."
            ) from None
        # Strings as text (not "unknown"), so that `? IS NULL` and friends have a type.
        self.raw.adapters.register_dumper(str, StrDumper)
        self.raw.adapters.register_loader("numeric", _NumericLoader)

    # -- statements ---------------------------------------------------------------------

    def execute(self, sql: str, params: Any = None) -> PgResult:
        """Run one DuckDB statement (translated) and return its rows."""
        statements = to_postgres(sql)
        if self._failed() and statements[-1].lstrip().upper().startswith("DROP"):
            # Cleanup in a failed transaction: the rollback that follows drops it anyway.
            return PgResult([], [])
        for extra in statements[:-1]:
            self._run(extra, None)
        return self._run(statements[-1], _params(params))

    def executemany(self, sql: str, seq: list) -> None:
        (text,) = to_postgres(sql)
        try:
            with self.raw.cursor() as cur:
                cur.executemany(text, [_params(p) for p in seq])
        except psycopg.Error as exc:
            raise self._error(exc) from None

    def run_native(self, sql: str, params: Any = None) -> PgResult:
        """Run PostgreSQL SQL as it is (no translation)."""
        return self._run(sql, params)

    def _run(self, text: str, params: Any) -> PgResult:
        try:
            with self.raw.cursor() as cur:
                cur.execute(text, params)
                if cur.description is None:
                    return PgResult([], [])
                return PgResult([d.name for d in cur.description], cur.fetchall(),
                                [d.type_code for d in cur.description])
        except psycopg.Error as exc:
            raise self._error(exc) from None

    def _error(self, exc: psycopg.Error) -> StoreError:
        return StoreError(f"the PostgreSQL score store {self.where} refused a query: "
                          f"{_one_line(exc)}")

    def _failed(self) -> bool:
        return self.raw.info.transaction_status == TransactionStatus.INERROR

    # -- registered tables --------------------------------------------------------------

    def register(self, name: str, data: Any) -> None:
        """Make an Arrow table or DataFrame queryable as ``name`` (a temporary table)."""
        table = _as_arrow(data)
        cols = ", ".join(f'"{f.name}" {_pg_type(f.type)}' for f in table.schema)
        self._run(f'CREATE TEMP TABLE "{name}" ({cols})', None)
        if table.num_rows:
            self._copy(f'COPY "{name}" FROM STDIN (FORMAT csv)', table)

    def copy_into(self, table: str, data: Any) -> None:
        """Append an Arrow table's rows to ``table`` (its columns by name) with COPY."""
        data = _as_arrow(data)
        cols = ", ".join(f'"{c}"' for c in data.column_names)
        self._copy(f"COPY {table} ({cols}) FROM STDIN (FORMAT csv)", data)

    def _copy(self, statement: str, table: pa.Table) -> None:
        buf = io.BytesIO()
        pacsv.write_csv(_csv_ready(table), buf,
                        pacsv.WriteOptions(include_header=False, quoting_style="needed"))
        try:
            with self.raw.cursor() as cur:
                with cur.copy(statement) as copy:
                    view = buf.getbuffer()
                    for start in range(0, len(view), 1 << 20):
                        copy.write(view[start:start + (1 << 20)])
                    del view
        except psycopg.Error as exc:
            raise self._error(exc) from None

    def unregister(self, name: str) -> None:
        if not self._failed():
            self._run(f'DROP TABLE IF EXISTS "{name}"', None)

    # -- transactions -------------------------------------------------------------------

    def begin(self) -> None:
        self._run("BEGIN", None)

    def commit(self) -> None:
        self._run("COMMIT", None)

    def rollback(self) -> None:
        if self.raw.info.transaction_status != TransactionStatus.IDLE:
            self._run("ROLLBACK", None)

    def close(self) -> None:
        self.raw.close()


def _params(params: Any) -> Any:
    if params is None:
        return None
    if isinstance(params, dict):
        return {k: _param(v) for k, v in params.items()}
    return [_param(v) for v in params]


def _param(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (list, tuple)):
        return [_param(x) for x in v]
    return v


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
