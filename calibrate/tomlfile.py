"""Where a key of a TOML file is: lines for error messages, and errors that carry them.

TOML parsers report syntax errors with a line but semantic errors (a bad value, an
unknown key) without one. :func:`key_lines` finds the line of every table and key
itself, and :class:`KeyLocator` turns "this key is wrong" into a one-line
:class:`TomlKeyError` naming the file, the line and the key, for study files and policy
files alike.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from calibrate.errors import InputError

__all__ = [
    "KeyLocator",
    "TomlKeyError",
    "key_description",
    "key_lines",
    "key_name",
    "load_toml",
]


class TomlKeyError(InputError):
    """A TOML file is invalid; the message names the file, the line and the key.

    Attributes
    ----------
    path : pathlib.Path
        The file.
    line : int or None
        1-based line of the offending key (or of its table when the key is missing).
    key : str
        Dotted path of the key, e.g. ``"detectors[1].model_version"``.
    """

    def __init__(self, message: str, *, path: Path, line: int | None, key: str):
        super().__init__(message)
        self.path = path
        self.line = line
        self.key = key


def load_toml(path, what: str = "file", error_class: type | None = None):
    """Read and parse a TOML file.

    Parameters
    ----------
    path : str or Path
    what : str
        What the file is ("study file", "policy file"), for messages.
    error_class : type, optional
        The :class:`TomlKeyError` subclass to raise.

    Returns
    -------
    data : dict
        The parsed document.
    locator : KeyLocator
        Finds lines of its keys for later errors.

    Raises
    ------
    TomlKeyError
        When the file cannot be read, or is not valid TOML (with the parser's line).
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # pragma: no cover - Python 3.10
        import tomli as tomllib

    cls = error_class or TomlKeyError
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise cls(f"cannot read {what} {p}: {exc.strerror or exc}.", path=p, line=None,
                  key="") from None
    except UnicodeDecodeError as exc:
        raise cls(f"{what} {p} is not UTF-8 text ({exc.reason}).", path=p, line=None,
                  key="") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = re.search(r"line (\d+)", str(exc))
        line = int(m.group(1)) if m else None
        raise cls(f"{p}:{line or '?'}: not valid TOML: {exc}.", path=p, line=line,
                  key="") from None
    return data, KeyLocator(p, text, cls)


_HEADER = re.compile(r"^\s*(\[\[?)\s*(.+?)\s*(\]\]?)\s*(?:#.*)?$")
_KEY_PART = r"(?:\"(?:[^\"\\]|\\.)*\"|'[^']*'|[A-Za-z0-9_-]+)"
_KEY_LINE = re.compile(rf"^\s*({_KEY_PART}(?:\s*\.\s*{_KEY_PART})*)\s*=")
_KEY_TOKEN = re.compile(r"\"((?:[^\"\\]|\\.)*)\"|'([^']*)'|([A-Za-z0-9_-]+)")


def _split_key(text: str) -> list[str]:
    out = []
    for m in _KEY_TOKEN.finditer(text):
        if m.group(1) is not None:
            # Basic strings may hold escapes; json decodes the same escapes TOML has.
            try:
                out.append(json.loads(f'"{m.group(1)}"'))
            except ValueError:
                out.append(m.group(1))
        else:
            out.append(m.group(2) if m.group(2) is not None else m.group(3))
    return out


def key_lines(text: str) -> dict[tuple, int]:
    """Map every table and key of a TOML text to the line it is defined on.

    Paths use the parsed document's shape: an array of tables contributes its index,
    so the second ``[[detectors]]`` table's ``model_version`` is
    ``("detectors", 1, "model_version")``. Keys of inline tables are not listed (their
    table's line stands for them), nor are lines inside multi-line strings.

    Parameters
    ----------
    text : str
        The TOML document.

    Returns
    -------
    dict of tuple to int
        1-based line numbers; the first definition wins.
    """
    lines: dict[tuple, int] = {}
    arrays: dict[tuple, int] = {}  # array-of-tables path (names only) -> tables so far
    current: tuple = ()
    in_string: str | None = None
    depth = 0  # open brackets of a multi-line array value

    def resolve(names: list[str]) -> tuple:
        out: list = []
        for i, name in enumerate(names):
            out.append(name)
            n = arrays.get(tuple(names[: i + 1]))
            if n:
                out.append(n - 1)
        return tuple(out)

    for lineno, line in enumerate(text.splitlines(), 1):
        if in_string is not None:
            if line.count(in_string) % 2 == 1:
                in_string = None
            continue
        if depth > 0:
            # "[1, 2]," inside a multi-line array is not a table header.
            depth = max(0, depth + _bracket_balance(line))
            continue
        m = _HEADER.match(line)
        if m and not _KEY_LINE.match(line):
            names = _split_key(m.group(2))
            if m.group(1) == "[[":
                arrays[tuple(names)] = arrays.get(tuple(names), 0) + 1
            current = resolve(names)
            lines.setdefault(current, lineno)
            continue
        m = _KEY_LINE.match(line)
        if m:
            lines.setdefault(current + tuple(_split_key(m.group(1))), lineno)
            rest = line[m.end():]
            for quote in ('"""', "'''"):
                if rest.count(quote) % 2 == 1:
                    in_string = quote
                    break
            else:
                depth = max(0, _bracket_balance(rest))
    return lines


_STRINGS = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'[^']*'|#.*$")


def _bracket_balance(text: str) -> int:
    """Opened minus closed brackets outside strings and comments."""
    bare = _STRINGS.sub("", text)
    return bare.count("[") + bare.count("{") - bare.count("]") - bare.count("}")


def key_name(path: tuple) -> str:
    """Dotted name of a key path: ``("detectors", 1, "model_version")`` ->
    ``detectors[1].model_version``."""
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def key_description(path: tuple) -> str:
    """How a TOML author would name the key: table header and key name."""
    if not path:
        return "the file"
    *table, key = path
    if isinstance(key, int):
        return f"[[{'.'.join(str(p) for p in table if not isinstance(p, int))}]] #{key + 1}"
    if not table:
        return f'key "{key}"'
    head, parts = [], []
    for p in table:
        if isinstance(p, int):
            head.append(f"[[{'.'.join(parts)}]] #{p + 1}")
            parts = []
        else:
            parts.append(p)
    if parts:
        head.append(f"[{'.'.join(parts)}]" if not head else ".".join(parts))
    return f'{" ".join(head)}, key "{key}"'


class KeyLocator:
    """Turns a problem at a key path of one TOML file into an error with file and line.

    Parameters
    ----------
    path : Path
        The file, for messages.
    text : str
        Its text (lines are found with :func:`key_lines`).
    error_class : type, default TomlKeyError
        The :class:`TomlKeyError` subclass to raise (e.g. ``StudyError``).
    """

    def __init__(self, path: Path, text: str, error_class: type | None = None):
        self.path = path
        self.lines = key_lines(text)
        self.error_class = error_class or TomlKeyError

    def line(self, key_path: tuple) -> int | None:
        for n in range(len(key_path), 0, -1):
            prefix = tuple(key_path[:n])
            line = self.lines.get(prefix)
            if line is not None:
                return line
            # A table only declared through its sub-tables ("[label.crack]" for "label").
            inner = [v for k, v in self.lines.items() if k[:n] == prefix]
            if inner:
                return min(inner)
        # A missing key is reported at its table's header, the closest thing there is.
        return None

    def error(self, key_path: tuple, message: str) -> TomlKeyError:
        """The error for ``message`` about ``key_path``, with the file and line."""
        line = self.line(key_path)
        where = f"{self.path}:{line}" if line else str(self.path)
        return self.error_class(
            f"{where}: {key_description(key_path)}: {message}",
            path=self.path, line=line, key=key_name(key_path),
        )
