"""What every part of the store shares: the connection, its lock and transactions,
run lookups, and small validation helpers.

:class:`StoreBase` holds the DuckDB connection; the mixins in :mod:`.schema`,
:mod:`.images`, :mod:`.writes`, :mod:`.bulk`, :mod:`.reads` and :mod:`.parquet` add
the methods that :class:`calibrate.store.ScoreStore` combines.
"""

from __future__ import annotations

import json
import numbers
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import duckdb

from calibrate.errors import InputError
from calibrate.store.errors import StoreError
from calibrate.version import __version__

__all__ = ["StoreBase"]

_Store = TypeVar("_Store", bound="StoreBase")


def _utc_now() -> datetime:
    # Naive UTC: DuckDB's TIMESTAMP has no zone, and TIMESTAMPTZ would need pytz/zoneinfo
    # conversions on every fetch.
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _tool_version() -> str:
    return __version__


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


def _one(result: duckdb.DuckDBPyConnection) -> tuple | None:
    # DuckDB 2 keeps a result open after fetchone() and then refuses register() on the
    # connection, so single rows are read with fetchall().
    rows = result.fetchall()
    return rows[0] if rows else None


def _json_loads_or_none(text: Any) -> Any:
    # pandas turns a NULL VARCHAR into NaN (or pd.NA), so anything but a string is "none".
    return json.loads(text) if isinstance(text, str) else None


class StoreBase:
    """The connection to one store file, with the lock and transactions every method uses.

    Not used on its own: :class:`calibrate.store.ScoreStore` opens the file and
    prepares its schema. Attributes ``path`` (:class:`pathlib.Path`) and ``read_only``
    (bool) are set by it.
    """

    path: Path
    read_only: bool
    _lock: threading.RLock
    _con: duckdb.DuckDBPyConnection | None
    #: Bumped by every committed transaction, so that what was read about the data can
    #: be cached until the data changes (no other process can write while it is open).
    _generation: int = 0

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

    def __enter__(self: _Store) -> _Store:
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
            self._generation += 1

    def _lock_dataset(self, con, dataset: str) -> None:
        """Serialise registering a dataset's images between writers (inside the
        transaction). One writer per DuckDB file: nothing to do; PostgreSQL locks."""

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
