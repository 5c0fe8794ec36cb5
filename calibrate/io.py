"""Writing files safely and encoding values JSON cannot hold.

Every file ``calibrate`` writes (thresholds files, exported config, reports, JUnit XML)
goes through :func:`atomic_write_text`, so a crash leaves the old file or the new one,
never half of one. JSON has no infinities, yet ``+inf`` is a real threshold ("never
fire"): :func:`jsonable` and :func:`from_jsonable` are the one place that says how they
are written (the strings ``"inf"`` and ``"-inf"``).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write_text", "dumps_json", "from_jsonable", "jsonable"]


def jsonable(value):
    """``value`` with every infinite float replaced by ``"inf"`` / ``"-inf"`` (and NaN,
    which no file of calibrate's means as a number, by ``None``).

    Dicts, lists and tuples are converted recursively (tuples become lists); everything
    else is returned unchanged.
    """
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, float) and math.isnan(value):
        return None  # "not computed" (e.g. a p-value of nothing): JSON's null
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


def from_jsonable(value):
    """The inverse of :func:`jsonable` for one value: ``"inf"`` -> ``inf``."""
    if value in ("inf", "+inf", "Infinity"):
        return math.inf
    if value in ("-inf", "-Infinity"):
        return -math.inf
    return value


def dumps_json(value, *, indent: int | None = 2) -> str:
    """Strict JSON text of ``value`` (infinities as strings), newline-terminated."""
    return json.dumps(jsonable(value), indent=indent, allow_nan=False) + "\n"


def atomic_write_text(path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a temp file in the same folder, fsync, rename.

    A crash or an error at any point leaves either the old file or the new one, never a
    half-written file.

    Parameters
    ----------
    path : str or Path
    text : str
    """
    p = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        if p.exists():
            os.chmod(tmp, p.stat().st_mode & 0o7777)
        else:  # mkstemp makes 0600; a new config file gets the usual umask mode
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
