"""Where a store is: a DuckDB file path, or a PostgreSQL URL whose password is never shown.

Kept free of any database driver, so that the command line can parse ``--store`` and
print where it wrote without importing psycopg.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

__all__ = ["StoreURL", "is_store_url", "redact_url", "store_location"]

_USERINFO = re.compile(r"^(postgres(?:ql)?://)([^@/]*@)?", re.IGNORECASE)


def is_store_url(location: Any) -> bool:
    """Whether a store location names a PostgreSQL database (``postgresql://`` or
    ``postgres://``) rather than a DuckDB file."""
    return isinstance(location, str) and bool(
        re.match(r"^postgres(ql)?://", location, re.IGNORECASE))


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (``postgresql://user:***@host/db``)."""
    def hide(m: re.Match) -> str:
        userinfo = m.group(2) or ""
        if ":" in userinfo:
            userinfo = userinfo.split(":", 1)[0] + ":***@"
        return m.group(1) + userinfo

    return re.sub(r"(?i)(password=)[^&\s]*", r"\1***", _USERINFO.sub(hide, url))


class StoreURL(str):
    """A PostgreSQL store's URL that prints without its password.

    The string's value is the redacted URL (what messages, logs and run summaries
    show); :func:`calibrate.store.open_store` connects with the URL as given. It has
    the few path-like attributes messages and report names read from a store location
    (``name`` and ``stem`` are the database name; ``exists()`` is true: the server
    says when it is not).
    """

    _url: str

    def __new__(cls, url: str) -> StoreURL:
        obj = super().__new__(cls, redact_url(str(url)))
        obj._url = getattr(url, "_url", str(url))
        return obj

    @property
    def name(self) -> str:
        return self.rsplit("/", 1)[-1].split("?", 1)[0] or "postgres"

    @property
    def stem(self) -> str:
        return self.name

    def exists(self) -> bool:
        return True


def store_location(value: Any) -> Path | StoreURL:
    """A ``--store`` value: :class:`StoreURL` for a PostgreSQL URL, else a path."""
    if isinstance(value, (Path, StoreURL)):
        return value
    return StoreURL(value) if is_store_url(value) else Path(value)
