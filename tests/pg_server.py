"""A throwaway PostgreSQL cluster for the tests, started by the test session itself.

``initdb`` a cluster in a temporary folder (trust authentication, no fsync: nothing
here must survive a crash), start it on a free port bound to 127.0.0.1 with its socket
in the same folder, and stop it at the end of the session. Every test gets a database
of its own (``CREATE DATABASE`` takes about 0.15 s), so tests never see each other's
rows and may run in any order.

PostgreSQL refuses to run as root, so when the tests run as root (CI does) the server
binaries run as the ``postgres`` user through ``runuser``. Server binaries are looked
for on ``PATH``, in ``pg_config --bindir`` and in Debian's ``/usr/lib/postgresql/*/bin``.
Where there are none, the PostgreSQL tests fail under ``CI=true`` (CI must install
them: see ``.ci/run``) and are skipped elsewhere, with the reason.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

__all__ = ["PgServer", "find_bindir", "start_server"]


def find_bindir() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``, or None."""
    candidates = []
    on_path = shutil.which("pg_ctl")
    if on_path:
        candidates.append(Path(os.path.realpath(on_path)).parent)
    if shutil.which("pg_config"):
        try:
            out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                                 timeout=10).stdout.strip()
            if out:
                candidates.append(Path(out))
        except (OSError, subprocess.SubprocessError):
            pass
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for d in candidates:
        if (d / "initdb").exists() and (d / "pg_ctl").exists():
            return d
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgServer:
    """A running cluster: ``url(dbname)`` gives a connection URL for user ``postgres``."""

    bindir: Path
    datadir: Path
    port: int
    as_postgres: bool

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)

    def new_database(self) -> str:
        """Create an empty database and return its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as con:
            con.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.datadir.parent, ignore_errors=True)


def start_server() -> PgServer:
    """initdb and start a cluster; raise RuntimeError with the server's output if it fails."""
    bindir = find_bindir()
    if bindir is None:
        raise FileNotFoundError("no PostgreSQL server binaries (initdb, pg_ctl) found")
    as_postgres = os.geteuid() == 0
    base = Path(tempfile.mkdtemp(prefix="calibrate-pg-"))
    datadir = base / "data"
    datadir.mkdir()
    if as_postgres:
        os.chmod(base, 0o755)
        shutil.chown(datadir, "postgres", "postgres")
    server = PgServer(bindir, datadir, _free_port(), as_postgres)
    steps = [
        ("initdb", "-D", str(datadir), "-A", "trust", "-U", "postgres", "--no-sync"),
        ("pg_ctl", "-D", str(datadir), "-l", str(datadir / "server.log"), "-o",
         f"-p {server.port} -k {datadir} -c listen_addresses=127.0.0.1 -c fsync=off "
         "-c synchronous_commit=off -c full_page_writes=off -c max_connections=60",
         "-w", "start"),
    ]
    for step in steps:
        done = server._run(*step)
        if done.returncode != 0:
            log = datadir / "server.log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            shutil.rmtree(base, ignore_errors=True)
            raise RuntimeError(f"{step[0]} failed: {done.stdout}{done.stderr}{tail}")
    return server


def server_or_skip() -> PgServer:
    """Start the session's server; skip (or fail under CI=true) without binaries."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("psycopg is not installed (pip install -e '.[test]')")
        pytest.skip("psycopg is not installed (the postgresql extra)")
    try:
        return start_server()
    except FileNotFoundError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{exc}; CI must install postgresql-15 (see .ci/run)")
        pytest.skip(f"{exc}; install postgresql-15 to run the PostgreSQL store tests")
