"""Connecting through viam-sdk's real dialer, offline: refused keys, wrong addresses,
TLS mismatches and machines without TLS, each named in one line, with the dialer's
output kept off the terminal.

A grpclib server on 127.0.0.1 plays the machine: viam-sdk's own ``RobotService`` and
``VisionRPCService`` (serving the ``Line`` vision service of ``tests/test_viam.py``)
plus an ``AuthService`` that checks the API key, with or without TLS. The detector
connects with its default client factory, so the request goes through
``RobotClient.at_address`` and the SDK's native dialer, as against a real machine.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import threading
import time
import uuid
import warnings

import pytest

pytest.importorskip("viam")

from grpclib import GRPCError, Status  # noqa: E402
from grpclib.events import RecvRequest, listen  # noqa: E402
from grpclib.server import Server  # noqa: E402
from viam.proto.rpc.auth import AuthenticateResponse, AuthServiceBase  # noqa: E402
from viam.resource.manager import ResourceManager  # noqa: E402
from viam.robot.service import RobotService  # noqa: E402
from viam.services.vision.service import VisionRPCService  # noqa: E402

from calibrate.detectors import viam_dial  # noqa: E402
from calibrate.detectors.base import FatalDetectorError  # noqa: E402
from calibrate.detectors.viam import InsecureConnectionWarning, ViamDetector  # noqa: E402
from calibrate.detectors.viam_dial import (  # noqa: E402
    _diverted_output,
    check_insecure,
    diagnose_dial,
    is_loopback,
)
from calibrate.errors import InputError  # noqa: E402
from calibrate.manifest import read_manifest  # noqa: E402
from calibrate.runner import RunOptions, score_dataset  # noqa: E402
from calibrate.store import ScoreStore  # noqa: E402
from tests.test_viam import Line, make_set  # noqa: E402

API_KEY = "vk-dial-" + "5e1f0c3a9b7d4e28" * 2  # distinctive, so a leak is unmistakable
API_KEY_ID = str(uuid.UUID(int=0x7A6B5C4D3E2F10987A6B5C4D3E2F1098))
TOKEN = "access-token-for-tests"
QUIET = dict(progress=False, backoff=0.001, flush_every=0.05)
DOUBLED_STOP = re.compile(r"(?<!\.)\.\.(?!\.)")  # "..", not the "..." of address=...


@pytest.fixture(autouse=True)
def viam_env(monkeypatch, tmp_path):
    monkeypatch.setenv("VIAM_API_KEY", API_KEY)
    monkeypatch.setenv("VIAM_API_KEY_ID", API_KEY_ID)
    monkeypatch.delenv("VIAM_MACHINE_ADDRESS", raising=False)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)


# ---------------------------------------------------------------------------------------
# A machine on 127.0.0.1
# ---------------------------------------------------------------------------------------


class Auth(AuthServiceBase):
    """viam's AuthService: an access token for the right API key, UNAUTHENTICATED else."""

    def __init__(self) -> None:
        self.attempts = 0

    async def Authenticate(self, stream) -> None:
        request = await stream.recv_message()
        self.attempts += 1
        if (request.entity, request.credentials.type, request.credentials.payload) != (
                API_KEY_ID, "api-key", API_KEY):
            raise GRPCError(Status.UNAUTHENTICATED, "invalid credentials")
        await stream.send_message(AuthenticateResponse(access_token=TOKEN))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Machine:
    """A grpclib server in its own thread; vision and robot calls need the access token."""

    def __init__(self, *, tls=None) -> None:
        self.auth = Auth()
        self.vision = Line("line")
        self.authorized_calls = 0
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(tls), self.loop).result(10)

    async def _start(self, tls) -> None:
        manager = ResourceManager([self.vision])
        self.server = Server([RobotService(manager=manager), VisionRPCService(manager), self.auth])
        listen(self.server, RecvRequest, self._check_token)
        await self.server.start("127.0.0.1", self.port, ssl=tls)

    async def _check_token(self, event: RecvRequest) -> None:
        if event.method_name.startswith(("/viam.service.vision", "/viam.robot")):
            if event.metadata.get("authorization") != f"Bearer {TOKEN}":
                raise GRPCError(Status.UNAUTHENTICATED, "no access token")
            self.authorized_calls += 1

    def close(self) -> None:
        async def stop():
            self.server.close()
            await self.server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture
def plain_machine():
    machine = Machine()
    yield machine
    machine.close()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1 and localhost: (cert path, server context)."""
    pytest.importorskip("cryptography")
    import datetime
    import ipaddress
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        ), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_path, key_path)
    context.set_alpn_protocols(["h2"])
    return cert_path, context


@pytest.fixture
def tls_machine(certificate):
    machine = Machine(tls=certificate[1])
    yield machine
    machine.close()


def connect_error(address, tmp_path, **options) -> tuple[str, str]:
    """The FatalDetectorError message of the first call, and the dialer log's text."""
    images = read_manifest(make_set(tmp_path, 1)).images
    log = tmp_path / "dial.log"
    options.setdefault("connect_timeout", 15)
    with ViamDetector("line", model_version="m1", address=address, dial_log=log,
                      **options) as det:
        with pytest.raises(FatalDetectorError) as info:
            det.detect(images[0])
    return str(info.value), log.read_text() if log.exists() else ""


def assert_one_clean_line(message: str, log_text: str, tmp_path) -> None:
    assert "\n" not in message and not DOUBLED_STOP.search(message), message
    assert message.endswith(f"(dialer log: {tmp_path / 'dial.log'})")
    for text in (message, log_text):
        assert API_KEY not in text and API_KEY_ID not in text


def assert_terminal_quiet(capfd) -> None:
    out, err = capfd.readouterr()
    for noise in ("Stack backtrace", "viam_rust_utils", "Unable to establish"):
        assert noise not in out and noise not in err, (out + err)[:2000]


# ---------------------------------------------------------------------------------------
# Without TLS, on this computer
# ---------------------------------------------------------------------------------------


def test_insecure_loopback_machine_scores_through_the_real_dialer(plain_machine, tmp_path,
                                                                   capfd):
    ds = read_manifest(make_set(tmp_path, 8))
    log = tmp_path / "dial.log"
    with ViamDetector("line", model_version="m1", address=plain_machine.address,
                      insecure=True, dial_log=log) as det, \
            ScoreStore(tmp_path / "s.duckdb") as store:
        s = score_dataset(ds, det, store, RunOptions(concurrency=4, **QUIET))
        assert (s.scored, s.failed) == (8, 0)
        assert det.requests == 8 and plain_machine.vision.calls == 8
    assert plain_machine.auth.attempts == 1  # one connection for the run
    assert plain_machine.authorized_calls >= 8  # every vision call carried the token
    text = log.read_text()
    assert "without TLS): connected" in text
    assert API_KEY not in text and API_KEY_ID not in text
    assert_terminal_quiet(capfd)


def test_refused_key_is_named_in_one_line(plain_machine, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("VIAM_API_KEY", API_KEY + "-revoked")
    message, log = connect_error(plain_machine.address, tmp_path, insecure=True)
    assert message.startswith(
        f"cannot connect to the machine at {plain_machine.address}: it refused the API key "
        "(Unauthenticated: invalid credentials). Check VIAM_API_KEY and VIAM_API_KEY_ID"
    ), message
    assert_one_clean_line(message, log, tmp_path)
    assert "status: Unauthenticated" in log and "<redacted>" not in message
    assert plain_machine.auth.attempts == 1  # a refused key is not tried again
    assert_terminal_quiet(capfd)


def test_refused_key_stops_a_run_with_a_single_full_stop(plain_machine, tmp_path,
                                                         monkeypatch, capfd):
    monkeypatch.setenv("VIAM_API_KEY", "not-the-key")
    ds = read_manifest(make_set(tmp_path, 6))
    with ViamDetector("line", model_version="m1", address=plain_machine.address,
                      insecure=True, dial_log=tmp_path / "dial.log") as det, \
            ScoreStore(tmp_path / "s.duckdb") as store:
        with pytest.raises(FatalDetectorError) as info:
            score_dataset(ds, det, store, RunOptions(concurrency=4, **QUIET))
        assert store.failures().empty and det.requests == 0
    message = str(info.value)
    assert "it refused the API key" in message and not DOUBLED_STOP.search(message)
    assert f"(dialer log: {tmp_path / 'dial.log'}). Everything finished" in message
    assert plain_machine.auth.attempts == 1  # the calls waiting shared one dial
    assert_terminal_quiet(capfd)


def test_wrong_address_is_told_from_a_refused_key(tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(viam_dial, "_DIAL_ATTEMPTS", 2)
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    message, log = connect_error(address, tmp_path)
    assert message.startswith(
        f"cannot connect to the machine at {address}: nothing accepts connections there "
        "(connection refused). Check the address and port"
    ), message
    assert_one_clean_line(message, log, tmp_path)
    assert log.count("Error building GRPC proxy") == 2  # tried again: it may pass
    assert_terminal_quiet(capfd)


def lookup_fails_fast(host: str) -> bool:
    """Whether this computer's resolver says at once that ``host`` does not exist."""
    failed = []

    def look():
        try:
            socket.getaddrinfo(host, 8080)
        except socket.gaierror:
            failed.append(True)

    thread = threading.Thread(target=look, daemon=True)
    thread.start()
    thread.join(3)
    return bool(failed)


def test_unknown_host_is_a_failed_lookup(tmp_path, capfd):
    if not lookup_fails_fast("no-such-machine.invalid"):
        pytest.skip("this computer's resolver does not fail fast for an unknown name")
    message, log = connect_error("no-such-machine.invalid:8080", tmp_path)
    assert message.startswith(
        "cannot connect to the machine at no-such-machine.invalid:8080: looking up the name "
        "failed (no-such-machine.invalid: "
    ), message
    assert_one_clean_line(message, log, tmp_path)
    assert_terminal_quiet(capfd)


def test_tls_asked_of_a_machine_without_it_suggests_insecure(plain_machine, tmp_path, capfd):
    message, log = connect_error(plain_machine.address, tmp_path)
    assert message.startswith(
        f"cannot connect to the machine at {plain_machine.address}: it answers without TLS "
        "(TLS handshake failed: "
    ), message
    assert "--option insecure=true" in message
    assert_one_clean_line(message, log, tmp_path)
    assert plain_machine.auth.attempts == 0  # the key never left this computer
    assert_terminal_quiet(capfd)


def test_no_answer_within_connect_timeout(tmp_path, capfd):
    with socket.socket() as silent:  # accepts connections, never speaks
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        address = f"127.0.0.1:{silent.getsockname()[1]}"
        t0 = time.monotonic()
        message, log = connect_error(address, tmp_path, connect_timeout=2)
    assert time.monotonic() - t0 < 6
    assert message.startswith(
        f"cannot connect to the machine at {address}: no answer within connect_timeout=2 s"
    ), message
    assert_one_clean_line(message, log, tmp_path)
    assert_terminal_quiet(capfd)


# ---------------------------------------------------------------------------------------
# With TLS
# ---------------------------------------------------------------------------------------


def test_tls_machine_with_api_key(tls_machine, certificate, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    ds = read_manifest(make_set(tmp_path, 4))
    with ViamDetector("line", mode="classifications", model_version="m1",
                      address=tls_machine.address, dial_log=tmp_path / "dial.log") as det:
        raws = [det.detect(im).raw for im in ds.images]
    assert all(len(r["classifications"]) == 5 for r in raws)
    assert "(TLS): connected" in (tmp_path / "dial.log").read_text()
    assert_terminal_quiet(capfd)


def test_tls_machine_refusing_the_key(tls_machine, certificate, tmp_path, monkeypatch, capfd):
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate[0]))
    monkeypatch.setenv("VIAM_API_KEY", "not-the-key")
    message, log = connect_error(tls_machine.address, tmp_path)
    assert "it refused the API key (Unauthenticated: invalid credentials)" in message
    assert_one_clean_line(message, log, tmp_path)
    assert_terminal_quiet(capfd)


def test_untrusted_certificate(tls_machine, tmp_path, capfd):
    message, log = connect_error(tls_machine.address, tmp_path)
    assert message.startswith(
        f"cannot connect to the machine at {tls_machine.address}: its TLS certificate is "
        "not trusted (invalid peer certificate: UnknownIssuer)"
    ), message
    assert "SSL_CERT_FILE" in message
    assert_one_clean_line(message, log, tmp_path)
    assert tls_machine.auth.attempts == 0
    assert_terminal_quiet(capfd)


def test_insecure_to_a_tls_machine_says_it_needs_tls(tls_machine, tmp_path, capfd):
    message, log = connect_error(tls_machine.address, tmp_path, insecure=True)
    assert message.startswith(
        f"cannot connect to the machine at {tls_machine.address}: it closed the unencrypted "
        "connection ("
    ), message
    assert "Connect without the insecure option" in message
    assert_one_clean_line(message, log, tmp_path)
    assert_terminal_quiet(capfd)


# ---------------------------------------------------------------------------------------
# The insecure option
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "address, loopback",
    [("127.0.0.1:8080", True), ("127.8.9.10", True), ("localhost:8080", True),
     ("[::1]:8080", True), ("::1", True), ("http://localhost:8080/", True),
     ("192.168.1.20:8080", False), ("my-pi.local:8080", False),
     ("line-3-main.abc123.viam.cloud", False), ("localhost.example.com", False), (None, False)],
)
def test_is_loopback(address, loopback):
    assert is_loopback(address) is loopback


def test_insecure_is_refused_for_another_computer_unless_forced(monkeypatch):
    with pytest.raises(InputError, match="only for a machine on this computer") as info:
        ViamDetector("line", model_version="m1", address="192.168.1.20:8080", insecure=True)
    assert "--option insecure=force" in str(info.value)
    monkeypatch.setenv("VIAM_MACHINE_ADDRESS", "192.168.1.20:8080")  # from the environment
    with pytest.raises(InputError, match="192.168.1.20 is not one"):
        ViamDetector("line", model_version="m1", insecure="true")
    with pytest.warns(InsecureConnectionWarning, match="unencrypted"):
        ViamDetector("line", model_version="m1", insecure="force")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ViamDetector("line", model_version="m1", address="localhost:8080", insecure=True)
        ViamDetector("line", model_version="m1", address="192.168.1.20:8080", insecure=False)
    with pytest.raises(InputError, match="true, false or force"):
        ViamDetector("line", model_version="m1", address="localhost:8080", insecure="yes")


def test_insecure_is_checked_again_against_the_address_dialed(tmp_path, monkeypatch):
    monkeypatch.setenv("VIAM_MACHINE_ADDRESS", "127.0.0.1:8080")
    det = ViamDetector("line", model_version="m1", insecure=True, dial_log=tmp_path / "d.log")
    monkeypatch.setenv("VIAM_MACHINE_ADDRESS", "192.168.1.20:8080")  # changed since
    images = read_manifest(make_set(tmp_path, 1)).images
    with det, pytest.raises(FatalDetectorError, match="192.168.1.20 is not one"):
        det.detect(images[0])
    assert not (tmp_path / "d.log").exists()  # refused before dialing
    assert check_insecure("force", "192.168.1.20", warn=False) is True


# ---------------------------------------------------------------------------------------
# The output trap and the diagnosis
# ---------------------------------------------------------------------------------------


def test_output_is_diverted_redacted_and_put_back(capfd):
    with _diverted_output(("extra-secret",)) as out:
        os.write(1, b"\x1b[31mERROR\x1b[0m native noise with " + API_KEY.encode() + b"\n")
        os.write(2, b"more noise, extra-secret\n")
        assert "native noise" in out.text()  # readable while still diverted
        with _diverted_output() as inner:  # a second dial at the same time
            os.write(1, b"inner noise\n")
        assert "inner noise" in inner.text() and "native noise" not in inner.text()
    assert out.text() == (
        "ERROR native noise with <redacted>\nmore noise, <redacted>\ninner noise\n"
    )
    os.write(1, b"back on the terminal\n")
    captured = capfd.readouterr()
    assert captured.out == "back on the terminal\n" and captured.err == ""


def test_a_chatty_dialer_does_not_block_on_a_full_pipe():
    chunk = b"x" * 1000 + b"\n"
    with _diverted_output() as out:
        for _ in range(300):  # 300 kB: far more than a pipe holds
            os.write(1, chunk)
    assert len(out.text()) == 300 * len(chunk)


@pytest.mark.parametrize(
    "output, kind, detail",
    [
        ('without_mdns err: Some(status: PermissionDenied, message: "key revoked", details',
         "auth", "PermissionDenied: key revoked"),
        ("Caused by:\n    0: transport error\n    1: invalid peer certificate: Expired\n",
         "certificate", "invalid peer certificate: Expired"),
        ("Error building GRPC proxy reason : deadline has elapsed\n", "timeout",
         "deadline has elapsed"),
        ('without_mdns err: Some(Connecting to https://app.viam.com:443/\n\nCaused by:\n'
         "    0: transport error\n    1: dns error: failed to lookup address information: "
         "Temporary failure in name resolution\n", "dns",
         "app.viam.com: Temporary failure in name resolution"),
        ('without_mdns err: Some(status: Unimplemented, message: "grpc-status header missing, '
         'mapped from HTTP status code 404", details', "not_viam",
         "Unimplemented: grpc-status header missing, mapped from HTTP status code 404"),
        ("Caused by:\n    0: transport error\n    1: something new.\n", "other",
         "something new"),
    ],
)
def test_diagnosis_from_the_dialer_output(output, kind, detail):
    from viam.errors import ViamError

    assert diagnose_dial(ViamError("Unable to establish a connection to x."), output) == (
        kind, detail)
