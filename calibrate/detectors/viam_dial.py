"""Connecting to a Viam machine, and saying in one line why it failed.

viam-sdk dials through a native library (``viam_rust_utils``). When a dial fails, that
library prints its errors, with stack backtraces, straight to the process's standard
output (some hundred lines per attempt), and the SDK raises only ``ViamError: Unable to
establish a connection to ADDRESS``, the same for a refused API key, a wrong address or
a TLS mismatch. So :func:`connect_to_machine`:

* dials with the API key, over TLS unless ``insecure`` (a machine on this computer that
  serves without TLS, see :func:`check_insecure`);
* while dialing, diverts the process's file descriptors 1 and 2 (standard output and
  error) into a pipe, and appends what arrived, with the API key and key id redacted, to
  the dialer log (:func:`default_dial_log`, or the detector's ``dial_log`` option);
* reads the reason from that output (and from the exception), tries again only when the
  failure may pass (a refused connection, an unexplained one), and raises
  :class:`DialFailed`, which :class:`_ConnectErrors` turns into one line naming what
  to check and where the log is.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import ssl
import sys
import tempfile
import threading
import time
import uuid
import warnings
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from calibrate.detectors.base import FatalDetectorError
from calibrate.errors import CalibrateWarning, InputError

__all__ = [
    "ENV_ADDRESS",
    "ENV_API_KEY",
    "ENV_API_KEY_ID",
    "DialFailed",
    "InsecureConnectionWarning",
    "ViamCredentials",
    "check_insecure",
    "connect_to_machine",
    "default_dial_log",
    "diagnose_dial",
    "is_loopback",
]

ENV_API_KEY = "VIAM_API_KEY"
ENV_API_KEY_ID = "VIAM_API_KEY_ID"
ENV_ADDRESS = "VIAM_MACHINE_ADDRESS"

_MAX_MESSAGE = 400
_MAX_DETAIL = 200
#: Dial attempts when a failure may pass (the SDK's own default is 3).
_DIAL_ATTEMPTS = 3
#: Failure kinds worth another attempt: the rest would fail the same way again.
_RETRY_KINDS = frozenset({"refused", "other"})
#: The dialer log starts over once it is this large.
_LOG_MAX_BYTES = 1_000_000


class InsecureConnectionWarning(CalibrateWarning):
    """The API key and images will cross a network unencrypted (``insecure=force``)."""


class DialFailed(Exception):
    """Dialing failed; carries the dialer's (redacted) output and where it was logged.

    Attributes
    ----------
    cause : BaseException
        What the SDK raised.
    output : str
        What the dialer printed, ANSI colours removed and credentials redacted.
    log_path : pathlib.Path or None
        Where that output was appended, or None when it could not be written.
    """

    def __init__(self, cause: BaseException, output: str, log_path: Path | None) -> None:
        super().__init__(_describe(cause))
        self.cause = cause
        self.output = output
        self.log_path = log_path


# ---------------------------------------------------------------------------------------
# Credentials and secrets
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ViamCredentials:
    """Where and as whom to connect; read from the environment at connect time.

    The key and key id are left out of ``repr`` so that they cannot end up in logs or
    error messages by accident.

    Attributes
    ----------
    address : str or None
        The machine's address, e.g. ``my-machine-main.abc123.viam.cloud``.
    api_key_id, api_key : str or None
    """

    address: str | None
    api_key_id: str | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, address: str | None = None) -> ViamCredentials:
        """Credentials from ``VIAM_API_KEY``, ``VIAM_API_KEY_ID`` and, unless given,
        ``VIAM_MACHINE_ADDRESS``."""
        return cls(
            address=address or os.environ.get(ENV_ADDRESS) or None,
            api_key_id=os.environ.get(ENV_API_KEY_ID) or None,
            api_key=os.environ.get(ENV_API_KEY) or None,
        )


def _secret_values() -> list[str]:
    return [v for v in (os.environ.get(ENV_API_KEY), os.environ.get(ENV_API_KEY_ID)) if v]


def _redact(text: str, extra: tuple[str | None, ...] = ()) -> str:
    for secret in [*_secret_values(), *(s for s in extra if s)]:
        text = text.replace(secret, "<redacted>")
    return text


def _scrub(text: str) -> str:
    """The text with the API key and key id replaced, and cut to a readable length."""
    text = _redact(text)
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."


def _describe(exc: BaseException) -> str:
    status = getattr(exc, "status", None)
    if status is not None and hasattr(exc, "message"):
        return _scrub(f"{status.name}: {exc.message or 'no message'}")
    text = str(exc) or "no message"
    return _scrub(f"{type(exc).__name__}: {text}")


def _check_environment(address: str | None) -> None:
    missing = [
        var for var, have in (
            (ENV_ADDRESS, address or os.environ.get(ENV_ADDRESS)),
            (ENV_API_KEY, os.environ.get(ENV_API_KEY)),
            (ENV_API_KEY_ID, os.environ.get(ENV_API_KEY_ID)),
        ) if not have
    ]
    if missing:
        raise InputError(
            f"the viam detector connects with an API key from the environment; set "
            f"{', '.join(missing)} (the machine's CONNECT tab shows the address and its "
            "API keys; the address may also be given as --option address=...)."
        )
    try:
        uuid.UUID(os.environ[ENV_API_KEY_ID])
    except ValueError:
        raise InputError(
            f"{ENV_API_KEY_ID} is not an API key id (a UUID such as "
            f"1b2c3d4e-...); check that {ENV_API_KEY_ID} and {ENV_API_KEY} are not swapped."
        ) from None


# ---------------------------------------------------------------------------------------
# Without TLS
# ---------------------------------------------------------------------------------------


def _host_of(address: str) -> str:
    rest = re.sub(r"^[a-z][a-z0-9+.-]*://", "", address.strip(), flags=re.IGNORECASE)
    rest = rest.split("/", 1)[0]
    if rest.startswith("["):  # [::1]:8080
        return rest[1:].split("]", 1)[0]
    if rest.count(":") == 1:  # host:port (a bare IPv6 address has several colons)
        return rest.split(":", 1)[0]
    return rest


def is_loopback(address: str | None) -> bool:
    """Whether ``address`` (``host``, ``host:port``, ``[::1]:port``) is this computer.

    ``localhost`` (and ``*.localhost``), ``127.0.0.0/8`` and ``::1`` are; every other
    name is not, even when it happens to resolve here.

    Examples
    --------
    >>> is_loopback("127.0.0.1:8080"), is_loopback("[::1]:8080"), is_loopback("localhost")
    (True, True, True)
    >>> is_loopback("192.168.1.20:8080"), is_loopback("line-3.abc.viam.cloud")
    (False, False)
    """
    if not address:
        return False
    host = _host_of(address).lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_insecure(value, address: str | None, *, warn: bool = True) -> bool:
    """The ``insecure`` option, checked against the address it would be used with.

    Parameters
    ----------
    value : bool or {"true", "false", "force"}
        ``True`` connects without TLS, to a machine on this computer only; ``"force"``
        also to any other address, with an :class:`InsecureConnectionWarning`.
    address : str or None
        Where the detector will connect; ``None`` when not known yet.
    warn : bool, default True
        Warn about ``"force"`` with an address that is not this computer.

    Returns
    -------
    bool
        Whether to connect without TLS.

    Raises
    ------
    InputError
        For another value, or ``True`` with an address that is not this computer.
    """
    if isinstance(value, str):
        value = {"true": True, "false": False, "force": "force"}.get(value.strip().lower(), value)
    if value is None or value is False:
        return False
    if value is not True and value != "force":
        raise InputError(
            f"insecure must be true, false or force, got {value!r}."
        )
    if address is None or is_loopback(address):
        return True
    host = _host_of(address)
    if value == "force":
        if not warn:
            return True
        warnings.warn(
            f"connecting to {host} without TLS (insecure=force): the API key and every "
            "image cross the network unencrypted.",
            InsecureConnectionWarning,
            stacklevel=3,
        )
        return True
    raise InputError(
        f"insecure=true sends the API key and the images unencrypted, so it is only for a "
        f"machine on this computer (localhost, 127.0.0.1, ::1), and {host} is not one. "
        "Connect with TLS (leave the option out), or, if every network between here and "
        f"{host} is trusted, say so with --option insecure=force."
    )


# ---------------------------------------------------------------------------------------
# The dialer's output
# ---------------------------------------------------------------------------------------


class _OutputTrap:
    """While at least one dial runs, file descriptors 1 and 2 go to a pipe.

    Process-wide (file descriptors are): the first user diverts them, the last one puts
    them back. A thread drains the pipe, so a chatty dialer never blocks on a full one.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cond = threading.Condition()
        self._users = 0
        self._seq = 0
        self._buf = bytearray()
        self._saved: tuple[int, int] | None = None
        self._write: int | None = None
        self._reader: threading.Thread | None = None

    def enter(self) -> int | None:
        """Start diverting (if not yet); the offset this user's output starts at."""
        with self._lock:
            if self._users == 0 and not self._install():
                return None
            self._users += 1
            with self._cond:
                return len(self._buf)

    def read(self, start: int) -> str:
        """Everything written to the pipe since ``start``, up to now."""
        with self._lock:
            return self._read(start)

    def leave(self, start: int) -> str:
        with self._lock:
            text = self._read(start)
            self._users -= 1
            if self._users == 0:
                self._uninstall()
            return text

    def _read(self, start: int) -> str:
        if self._write is not None:
            # Whatever was written before the marker is read before it: a pipe keeps order.
            self._seq += 1
            marker = b"\0calibrate-sync-%d\0" % self._seq
            try:
                os.write(self._write, marker)
                with self._cond:
                    self._cond.wait_for(lambda: marker in self._buf, timeout=2.0)
            except OSError:
                pass
        with self._cond:
            data = bytes(self._buf[start:])
        return re.sub(rb"\0calibrate-sync-\d+\0", b"", data).decode("utf-8", "replace")

    def _install(self) -> bool:
        _flush_python_streams()
        try:
            saved = (os.dup(1), os.dup(2))
        except OSError:  # no standard output at all (a daemon): nothing to divert
            return False
        r, w = os.pipe()
        try:
            os.dup2(w, 1)
            os.dup2(w, 2)
        except OSError:
            for fd, old in ((1, saved[0]), (2, saved[1])):
                try:
                    os.dup2(old, fd)
                except OSError:
                    pass
            for fd in (*saved, r, w):
                os.close(fd)
            return False
        self._saved, self._write = saved, w
        with self._cond:
            self._buf = bytearray()
        self._reader = threading.Thread(
            target=self._drain, args=(r,), name="calibrate-viam-dial-output", daemon=True
        )
        self._reader.start()
        return True

    def _uninstall(self) -> None:
        _flush_python_streams()
        saved, write, reader = self._saved, self._write, self._reader
        self._saved = self._write = self._reader = None
        if saved is not None:
            for fd, old in ((1, saved[0]), (2, saved[1])):
                os.dup2(old, fd)
                os.close(old)
        if write is not None:
            os.close(write)  # with 1 and 2 back, the reader now sees the end of the pipe
        if reader is not None:
            reader.join(2.0)

    def _drain(self, fd: int) -> None:
        try:
            while True:
                data = os.read(fd, 65536)
                if not data:
                    break
                with self._cond:
                    self._buf += data
                    self._cond.notify_all()
        except OSError:
            pass
        finally:
            os.close(fd)


def _flush_python_streams() -> None:
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except Exception:  # noqa: BLE001 - a closed or odd stream must not stop a dial
            pass


_TRAP = _OutputTrap()
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class _Diverted:
    """One user's view of the diverted output: cleaned and redacted."""

    def __init__(self, start: int | None, secrets: tuple[str | None, ...]) -> None:
        self.start = start
        self.secrets = secrets
        self.final: str | None = None

    def text(self) -> str:
        if self.final is not None:
            return self.final
        return self._clean(_TRAP.read(self.start) if self.start is not None else "")

    def _clean(self, raw: str) -> str:
        return _redact(_ANSI.sub("", raw), self.secrets)


@contextmanager
def _diverted_output(secrets: tuple[str | None, ...] = ()):
    start = _TRAP.enter()
    handle = _Diverted(start, secrets)
    try:
        yield handle
    finally:
        raw = _TRAP.leave(start) if start is not None else ""
        handle.final = handle._clean(raw)


def default_dial_log() -> Path:
    """Where the dialer's output goes by default: ``calibrate-viam-dial-<user>.log`` in
    the system's temporary folder (``/tmp`` on Linux)."""
    try:
        import getpass

        user = re.sub(r"[^A-Za-z0-9_.-]", "_", getpass.getuser()) or "user"
    except Exception:  # noqa: BLE001 - no user name (a container): still log somewhere
        user = "user"
    return Path(tempfile.gettempdir()) / f"calibrate-viam-dial-{user}.log"


def _write_log(path: Path, address: str | None, insecure: bool, text: str,
               failure: BaseException | None) -> Path | None:
    """Append one dial's output to the log (readable by its owner only); None if not."""
    try:
        path = Path(path)
        fresh = not path.exists() or path.stat().st_size > _LOG_MAX_BYTES
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if fresh else os.O_APPEND)
        with os.fdopen(os.open(path, flags, 0o600), "w", encoding="utf-8") as f:
            outcome = f"failed: {_describe(failure)}" if failure is not None else "connected"
            f.write(
                f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} calibrate: connecting to "
                f"{address} ({'without TLS' if insecure else 'TLS'}): {outcome}\n"
            )
            f.write(text if not text or text.endswith("\n") else text + "\n")
        return path
    except OSError:
        return None


# ---------------------------------------------------------------------------------------
# Dialing
# ---------------------------------------------------------------------------------------


@asynccontextmanager
async def connect_to_machine(
    credentials: ViamCredentials,
    service: str,
    *,
    insecure: bool = False,
    connect_timeout: float = 30.0,
    dial_log: str | os.PathLike | None = None,
):
    """Connect to a machine with an API key and yield its vision service's client.

    This is the production ``client_factory`` of
    :class:`~calibrate.detectors.viam.ViamDetector` (which passes its ``insecure``,
    ``connect_timeout`` and ``dial_log`` options).

    Parameters
    ----------
    credentials : ViamCredentials
    service : str
        The vision service's name in the machine's configuration.
    insecure : bool, default False
        Connect without TLS; see :func:`check_insecure`.
    connect_timeout : float, default 30
        Seconds all dial attempts together may take.
    dial_log : path, optional
        Where the dialer's output is appended; default :func:`default_dial_log`.

    Yields
    ------
    viam.services.vision.VisionClient

    Raises
    ------
    DialFailed
        With the SDK's exception and the dialer's output.
    """
    from viam.services.vision import VisionClient

    insecure = check_insecure(insecure, credentials.address, warn=False)
    robot = await _dial(credentials, insecure, connect_timeout,
                        Path(dial_log) if dial_log else default_dial_log())
    try:
        yield VisionClient.from_robot(robot, service)
    finally:
        await robot.close()


async def _dial(credentials: ViamCredentials, insecure: bool, connect_timeout: float,
                log: Path):
    import logging

    from viam.robot.client import RobotClient

    loop = asyncio.get_running_loop()
    deadline = loop.time() + connect_timeout
    robot = failure = None
    with _diverted_output((credentials.api_key, credentials.api_key_id)) as output:
        for _ in range(_DIAL_ATTEMPTS):
            try:
                options = RobotClient.Options.with_api_key(
                    api_key=credentials.api_key,
                    api_key_id=credentials.api_key_id,
                    # The SDK logs every (re)connection at INFO; under a progress bar
                    # that is noise.
                    log_level=logging.WARNING,
                )
                dial = options.dial_options
                dial.insecure = insecure
                # One attempt per call, so that a refused key is not tried three times,
                # and each within what is left of connect_timeout, so that the native
                # dialer is done (and silent) before the output is put back.
                dial.initial_connection_attempts = 1
                dial.timeout = dial.initial_connection_attempt_timeout = max(
                    deadline - loop.time(), 0.5
                )
                robot = await RobotClient.at_address(credentials.address, options)
                failure = None
                break
            except Exception as exc:  # noqa: BLE001 - classified below
                failure = exc
                kind, _ = diagnose_dial(exc, output.text(), insecure=insecure)
                if kind not in _RETRY_KINDS or deadline - loop.time() < 1.0:
                    break
    path = _write_log(log, credentials.address, insecure, output.text(), failure)
    if failure is not None:
        raise DialFailed(failure, output.text(), path)
    return robot


# ---------------------------------------------------------------------------------------
# Why a dial failed
# ---------------------------------------------------------------------------------------

_AUTH = re.compile(r'status: (Unauthenticated|PermissionDenied), message: "([^"]*)"')
_CERT = re.compile(
    r"invalid peer certificate: (\w+)|(certificate verify failed[^\n)]*)", re.IGNORECASE
)
_PLAIN_SERVER = re.compile(
    r"(received corrupt message of type InvalidContentType|InvalidContentType"
    r"|wrong version number|is insecure)",
    re.IGNORECASE,
)
_CLOSED = re.compile(
    r"(connection closed|broken pipe|connection reset|frame with invalid size)", re.IGNORECASE
)
_DNS = re.compile(
    r"dns error: (?:failed to lookup address information: )?([^\n]+)"
    r"|(Name or service not known|nodename nor servname provided[^\n]*"
    r"|Temporary failure in name resolution|No address associated with hostname)",
    re.IGNORECASE,
)
_CONNECTING = re.compile(r"Connecting to (?:[a-z]+://)?(\[[^\]]+\]|[^/\s:]+)", re.IGNORECASE)
_REFUSED = re.compile(r"connection refused", re.IGNORECASE)
# What answered the direct dial, when something did (webrtc errors before it do not count).
_STATUS = re.compile(r'without_mdns err: Some\(status: (\w+), message: "([^"]*)"')
_TIMEOUT = re.compile(r"(deadline has elapsed|timed out)", re.IGNORECASE)


def _chain(exc: BaseException) -> list[BaseException]:
    out, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def _status_of(exc: BaseException) -> str | None:
    status = getattr(exc, "status", None) or getattr(exc, "grpc_code", None)
    return getattr(status, "name", None)


def _phrase(text: str) -> str:
    """One line, no trailing full stop, readable length, no secrets."""
    text = _redact(" ".join(str(text).split())).rstrip(" .")
    return text if len(text) <= _MAX_DETAIL else text[: _MAX_DETAIL - 3] + "..."


def _dialer_reason(text: str) -> str | None:
    """The innermost cause the native dialer gave for its last failure."""
    statuses = _STATUS.findall(text)
    if statuses:
        status, message = statuses[-1]
        return f"{status}: {message or 'no message'}"
    blocks = re.findall(r"Caused by:\n((?:[ \t]+\d+: [^\n]*\n?)+)", text)
    if blocks:
        last = blocks[-1].strip().splitlines()[-1]
        return re.sub(r"^\s*\d+: ", "", last)
    reasons = [r for r in re.findall(r"reason : ([^\n]+)", text)
               if not r.startswith("Unable to connect with or without mdns")]
    return reasons[-1] if reasons else None


def diagnose_dial(exc: BaseException, output: str = "", *, insecure: bool = False
                  ) -> tuple[str, str]:
    """Why a dial failed, from the exception and what the dialer printed.

    Parameters
    ----------
    exc : BaseException
        What connecting raised (a :class:`DialFailed` is looked through).
    output : str
        The dialer's output (ANSI colours removed).
    insecure : bool
        Whether the dial was without TLS.

    Returns
    -------
    (kind, detail)
        ``kind`` is one of ``"auth"`` (the key was refused), ``"no_service"``,
        ``"key_id"``, ``"certificate"`` (an untrusted TLS certificate),
        ``"plain_server"`` (TLS asked, the machine answers without it),
        ``"needs_tls"`` (no TLS asked, the machine closed the connection), ``"dns"``,
        ``"refused"``, ``"timeout"``, ``"not_viam"`` (something else answered),
        ``"input"`` or ``"other"``; ``detail`` is a short
        phrase from the error (for ``"dns"``: ``"host: reason"``).
    """
    if isinstance(exc, DialFailed):
        output = output or exc.output
        exc = exc.cause
    chain = _chain(exc)
    for e in chain:
        if _status_of(e) in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            return "auth", _phrase(_describe(e))
    m = _AUTH.search(output)
    if m:
        return "auth", _phrase(f"{m.group(1)}: {m.group(2) or 'no message'}")
    if any(type(e).__name__ == "ResourceNotFoundError" or _status_of(e) == "NOT_FOUND"
           for e in chain):
        return "no_service", _phrase(_describe(exc))
    if isinstance(exc, InputError):
        return "input", str(exc)
    if isinstance(exc, ValueError) and "uuid" in str(exc).lower():
        return "key_id", ""
    return _transport_kind(chain, output, insecure)


def _transport_kind(chain: list[BaseException], output: str, insecure: bool
                    ) -> tuple[str, str]:
    text = "\n".join([output, *(str(e) for e in chain)])
    names = {type(e).__name__ for e in chain}
    m = _CERT.search(text)
    if m or any(isinstance(e, ssl.SSLCertVerificationError) for e in chain):
        detail = f"invalid peer certificate: {m.group(1)}" if m and m.group(1) else (
            m.group(2) if m else "certificate verify failed")
        return "certificate", _phrase(detail)
    m = _PLAIN_SERVER.search(text)
    if m or "InsecureConnectionError" in names:
        return "plain_server", _phrase(
            f"TLS handshake failed: {m.group(1)}" if m else "the machine answers without TLS"
        )
    m = _DNS.search(text)
    if m or any(type(e).__name__ == "gaierror" for e in chain):
        hosts = _CONNECTING.findall(output)
        host = hosts[-1].strip("[]") if hosts else ""
        reason = (m.group(1) or m.group(2)) if m else _describe(chain[0])
        return "dns", _phrase(f"{host}: {reason}" if host else reason)
    if _REFUSED.search(text) or any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "refused", "connection refused"
    m = _CLOSED.search(text)
    if insecure and m:
        return "needs_tls", _phrase(m.group(1))
    m = _TIMEOUT.search(text)
    if m or any(isinstance(e, (TimeoutError, asyncio.TimeoutError)) for e in chain):
        return "timeout", _phrase(m.group(1) if m else _describe(chain[0]))
    reason = _dialer_reason(output)
    if reason and reason.startswith("Unimplemented:"):
        return "not_viam", _phrase(reason)
    return "other", _phrase(reason or _describe(chain[0]))


class _ConnectErrors:
    """Turns a failed connection into a one-line FatalDetectorError saying what to check."""

    def __init__(self, service: str, address: str | None, *, insecure: bool = False,
                 connect_timeout: float = 30.0) -> None:
        self.service = service
        self.address = address
        self.insecure = insecure
        self.connect_timeout = connect_timeout

    def __call__(self, exc: BaseException) -> FatalDetectorError:
        address = self.address or os.environ.get(ENV_ADDRESS) or "(no address)"
        kind, detail = diagnose_dial(exc, insecure=self.insecure)
        log = getattr(exc, "log_path", None)
        # No closing full stop: the runner adds one when it reports the stop.
        text = self._message(kind, detail, address).rstrip(".")
        if log is not None:
            text += f" (dialer log: {log})"
        return FatalDetectorError(text)

    def _message(self, kind: str, detail: str, address: str) -> str:
        where = f"cannot connect to the machine at {address}"
        fix_address = (
            f"the address ({ENV_ADDRESS} or --option address=...; the machine's CONNECT "
            "tab shows it)"
        )
        if kind == "auth":
            return (
                f"{where}: it refused the API key ({detail}). Check {ENV_API_KEY} and "
                f"{ENV_API_KEY_ID}: they must be an API key with access to this machine, "
                "as listed on its CONNECT tab."
            )
        if kind == "no_service":
            return (
                f"the machine at {address} has no vision service named {self.service!r} "
                f"({detail}). Use the service's name from the machine's configuration: "
                "--option service=NAME."
            )
        if kind == "key_id":
            return (
                f"{ENV_API_KEY_ID} is not an API key id (a UUID); check that "
                f"{ENV_API_KEY_ID} and {ENV_API_KEY} are not swapped."
            )
        if kind == "input":
            return detail
        if kind == "certificate":
            return (
                f"{where}: its TLS certificate is not trusted ({detail}). Check that the "
                "address is the machine's own (its CONNECT tab shows it) and that this "
                "computer's clock is right; for a local machine with a self-signed "
                "certificate, point SSL_CERT_FILE at that certificate."
            )
        if kind == "plain_server":
            return (
                f"{where}: it answers without TLS ({detail}), as a local viam-server with "
                "TLS turned off does. For a machine on this computer, connect with "
                "--option insecure=true; otherwise check the address and port."
            )
        if kind == "needs_tls":
            return (
                f"{where}: it closed the unencrypted connection ({detail}), so it "
                "probably requires TLS. Connect without the insecure option."
            )
        if kind == "dns":
            return (
                f"{where}: looking up the name failed ({detail}). Check {fix_address} "
                "and this computer's network connection."
            )
        if kind == "refused":
            return (
                f"{where}: nothing accepts connections there ({detail}). Check the address "
                f"and port ({ENV_ADDRESS} or --option address=...) and that viam-server "
                "is running."
            )
        if kind == "not_viam":
            return (
                f"{where}: something answers there, but not as a Viam machine ({detail}). "
                f"Check the address and port ({ENV_ADDRESS} or --option address=...; the "
                "machine's CONNECT tab shows them)."
            )
        if kind == "timeout":
            return (
                f"{where}: no answer within connect_timeout={self.connect_timeout:g} s "
                f"({detail}). Check that the machine is online and {fix_address}, or "
                "raise connect_timeout."
            )
        return (
            f"{where} ({detail}). Check {fix_address}, that the machine is online, and "
            f"that {ENV_API_KEY} / {ENV_API_KEY_ID} are an API key with access to it."
        )
