"""The store's error and warning types."""

from __future__ import annotations

from pathlib import Path

from calibrate.errors import CalibrateError, CalibrateWarning

__all__ = ["MigrationWarning", "SchemaVersionError", "StoreError"]


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
