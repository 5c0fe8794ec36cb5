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
import time
from pathlib import Path

from calibrate.errors import OutputError

__all__ = [
    "atomic_write_bytes",
    "first_undecodable",
    "atomic_write_text",
    "dumps_json",
    "ensure_folder",
    "from_jsonable",
    "jsonable",
]


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


#: A temp file of an interrupted write older than this is left over, not in use.
_STALE_SECONDS = 600


def atomic_write_text(path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically: a temp file in the same folder, fsync, rename.

    A crash or an error at any point leaves either the old file or the new one, never a
    half-written file. A symlink is written *through*: its target is replaced (keeping
    the target's mode and, where allowed, owner) and the link stays a link. Temp files
    that an interrupted earlier write left beside the target are removed.

    Parameters
    ----------
    path : str or Path
    text : str

    Returns
    -------
    Path
        ``path`` as given.

    Raises
    ------
    OutputError
        When the file cannot be written (a read-only or missing folder, a path under a
        file, no permission), naming the path and the reason.
    """
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_bytes(path, data: bytes) -> Path:
    """:func:`atomic_write_text` for bytes (e.g. a PNG)."""
    given = Path(path)
    target = Path(os.path.realpath(given)) if given.is_symlink() else given
    try:
        _remove_stale_temps(target)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                   dir=target.parent or ".")
    except OSError as exc:
        raise OutputError.from_os_error(given, exc) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        _copy_mode_and_owner(target, tmp)
        os.replace(tmp, target)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, OSError):
            raise OutputError.from_os_error(given, exc) from None
        raise
    return given


def ensure_folder(path) -> Path:
    """Create folder ``path`` (and its parents), or say in one line why it cannot be.

    Raises
    ------
    OutputError
    """
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError.from_os_error(p, exc) from None
    return p


def _copy_mode_and_owner(target: Path, tmp: str) -> None:
    if target.exists():
        st = target.stat()
        os.chmod(tmp, st.st_mode & 0o7777)
        try:  # only root (or the owner, to its own groups) may; otherwise keep ours
            os.chown(tmp, st.st_uid, st.st_gid)
        except PermissionError:
            pass
    else:  # mkstemp makes 0600; a new config file gets the usual umask mode
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)


def _remove_stale_temps(target: Path) -> None:
    """Remove temp files a killed earlier write of ``target`` left behind.

    Only files older than :data:`_STALE_SECONDS` go, so a concurrent writer's temp file
    is never pulled from under it.
    """
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        return
    now = time.time()
    for tmp in folder.glob(f".{target.name}.*.tmp"):
        try:
            if now - tmp.stat().st_mtime > _STALE_SECONDS:
                tmp.unlink()
        except OSError:
            pass  # gone already, or not ours to remove: the write itself decides


def first_undecodable(path) -> tuple[int, int, int] | None:
    """Where the first byte that is not UTF-8 sits in a file: ``(line, column, byte)``.

    Readers decode text block by block, so a ``UnicodeDecodeError``'s offset is into
    some block, useless to a person with an editor; this decodes the whole file again
    (only on the error path) to name the line and the character column.

    Returns
    -------
    tuple of int, or None
        1-based line and column and the byte's value; None when the file now decodes
        (it changed since it was read) or cannot be read.
    """
    try:
        data = Path(path).read_bytes()
        data.decode("utf-8")  # a BOM is valid UTF-8, so offsets are the file's own
    except UnicodeDecodeError as exc:
        start = exc.start
    except OSError:
        return None
    else:
        return None
    line_start = data.rfind(b"\n", 0, start) + 1
    line = data.count(b"\n", 0, start) + 1
    column = len(data[line_start:start].decode("utf-8")) + 1  # valid up to the bad byte
    return line, column, data[start]
