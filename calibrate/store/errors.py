"""The store's error and warning types."""

from __future__ import annotations

from pathlib import Path

from calibrate.errors import CalibrateError, CalibrateWarning, InputError

__all__ = [
    "DatasetOverlapWarning",
    "EmptyStoreError",
    "IncompleteDataError",
    "IncompleteDataWarning",
    "MigrationWarning",
    "SchemaVersionError",
    "StoreError",
]


class StoreError(CalibrateError):
    """The score store file cannot be used as asked.

    Raised when the file is locked by another process, is not a score store, is
    closed, is open read-only for a write, or when a database operation failed (the
    message then says that the transaction was rolled back).
    """


class EmptyStoreError(StoreError):
    """A store opened read-only holds no score store yet (an empty PostgreSQL database):
    there is nothing to read, and a reader must not create the schema."""


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


class IncompleteDataError(InputError):
    """The latest run of a detector version has not finished every image of its dataset.

    Raised by :meth:`calibrate.store.ScoreStore.require_complete` (and so by every
    threshold choice from a store) when that run is ``running``, ``interrupted`` or
    ``failed``, or when the dataset holds images no run of the version has finished:
    cutoffs from part of the data must not pass for cutoffs from all of it. The
    message names the run and the command that resumes it.
    """


class IncompleteDataWarning(CalibrateWarning):
    """Scores were read although the latest run of their version is incomplete.

    Emitted when such data is read anyway: by the store's low-level reads, or when the
    caller allowed incomplete data (``allow_incomplete=True``, ``--allow-incomplete``).
    """


class DatasetOverlapWarning(CalibrateWarning):
    """A detector version ran on several datasets; only the current one is counted.

    Curves count each image once per version: the images of one dataset, the latest
    the version ran on unless the caller names one. The warning names the datasets that
    are left out and how many of their images are the same (id and content) as the
    counted ones: a copy of a manifest or a corrected scores file under another name.
    """
