"""``calibrate score`` as a process: what it leaves behind when it is killed, stopped or
meets a call that never returns, and that a dry run writes nothing.

These run the real command in a subprocess and look at its process tree by PID (psutil
when installed, else /proc), because the failures they guard against live outside the
Python objects: pool workers that outlive a ``kill -9`` and keep the store file and the
stdout pipe open, threads that hold the interpreter open at exit.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from calibrate.store import ScoreStore
from tests.test_runner import _run_cli, _wait_for_calls, make_set

pytestmark = pytest.mark.skipif(
    sys.platform == "win32", reason="POSIX signals and process trees"
)

try:
    import psutil
except ImportError:  # pragma: no cover - psutil is in the test extra
    psutil = None

#: Seconds a child may take to notice that its parent is gone.
GRACE = 5.0


# -- process trees, by PID ---------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time) from /proc/PID/stat; None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rfind(")") + 2:].split()  # the command name may hold spaces
    return fields[0], int(fields[1]), int(fields[19])


def _descendants_proc(pid: int) -> list[tuple[int, float]]:
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (st := _proc_stat(int(entry.name))) is not None:
            parents.setdefault(st[1], []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            st = _proc_stat(child)
            if st is not None:
                found.append((child, float(st[2])))
                todo.append(child)
    return found


def _alive_proc(pid: int, started: float) -> bool:
    st = _proc_stat(pid)
    # A zombie has ended; it only waits to be reaped (PID 1 of a container may never).
    return st is not None and float(st[2]) == started and st[0] != "Z"


def _descendants_psutil(pid: int) -> list[tuple[int, float]]:
    return [(c.pid, c.create_time()) for c in psutil.Process(pid).children(recursive=True)]


def _alive_psutil(pid: int, started: float) -> bool:
    try:
        p = psutil.Process(pid)
        return p.create_time() == started and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def descendants(pid: int) -> list[tuple[int, float]]:
    """Every process below ``pid``, as (pid, start time) so a reused PID is not mistaken."""
    return _descendants_psutil(pid) if psutil else _descendants_proc(pid)


def alive(pid: int, started: float) -> bool:
    """Whether that process still runs (a zombie does not)."""
    return _alive_psutil(pid, started) if psutil else _alive_proc(pid, started)


def survivors(procs: list[tuple[int, float]], within: float = GRACE) -> list[int]:
    """PIDs still running ``within`` seconds from now."""
    deadline = time.monotonic() + within
    while True:
        left = [pid for pid, t in procs if alive(pid, t)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def kill_all(procs: list[tuple[int, float]]) -> None:
    """Clean up after a failed test: only the processes it started, by PID."""
    for pid, started in procs:
        if alive(pid, started):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="no /proc")
def test_the_proc_fallback_sees_what_psutil_sees():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (found,) = [p for p in _descendants_proc(os.getpid()) if p[0] == child.pid]
        assert _alive_proc(*found)
        if psutil:
            assert child.pid in [p for p, _ in _descendants_psutil(os.getpid())]
            assert _alive_psutil(child.pid, psutil.Process(child.pid).create_time())
        child.kill()
        child.wait()
        assert not _alive_proc(*found)
    finally:
        child.kill()
        child.wait()


# -- workers end with the command ----------------------------------------------------------


def _cpu_args(tmp_path: Path, n: int = 300) -> tuple[list[str], Path, Path]:
    manifest = make_set(tmp_path, n)
    store, tally = tmp_path / "s.duckdb", tmp_path / "tally.txt"
    args = ["score", "--dataset", str(manifest), "--detector", "tests.fake_detectors:cpu_slow",
            "--store", str(store), "--concurrency", "2", "--option", "latency=0.05",
            "--option", f"tally={tally}", "--no-progress"]
    return args, store, tally


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_process_pool_workers_end_with_the_command(tmp_path, sig):
    """A cpu detector runs in a process pool; no worker may outlive the command."""
    args, store_path, tally = _cpu_args(tmp_path)
    proc = _run_cli(args)
    workers: list[tuple[int, float]] = []
    try:
        _wait_for_calls(tally, 20, proc)
        workers = descendants(proc.pid)
        assert len(workers) >= 2, "the detector should run in a pool of 2 processes"
        proc.send_signal(sig)
        proc.wait(timeout=30)
        assert survivors(workers) == []
        # Only now can the pipes reach EOF: an orphan kept them open (| tee never ended).
        _, err = proc.communicate(timeout=10)
    finally:
        kill_all(workers)
        proc.kill()
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
        return
    assert proc.returncode == 143, err  # 128 + SIGTERM, as documented in `score --help`
    assert "run the same command to resume" in err
    with ScoreStore(store_path) as store:
        (run,) = store.runs().itertuples()
        assert run.status == "interrupted"
        assert 0 < run.n_scored < 300
    done = _run_cli(args)
    _, err = done.communicate(timeout=120)
    assert done.returncode == 0, err
    with ScoreStore(store_path) as store:
        ids = store.scores("cpuslow", "c1", "defect").image_ids
        assert len(ids) == 300 == len(set(ids))


# -- calls that never return -----------------------------------------------------------------


def _hang_args(tmp_path: Path, kind: str, timeout: float, n: int = 20) -> tuple[list[str], Path]:
    manifest = make_set(tmp_path, n)
    marker = tmp_path / "hung"
    args = ["score", "--dataset", str(manifest), "--detector", "tests.fake_detectors:hangs_once",
            "--store", str(tmp_path / "s.duckdb"), "--concurrency", "2",
            "--timeout", str(timeout), "--option", f"marker={marker}", "--option", "seconds=60",
            "--option", f"kind={kind}", "--no-progress"]
    return args, marker


def _timed_lines(stream) -> list[tuple[float, str]]:
    """Read ``stream`` in a thread; (time.monotonic(), line) pairs as they arrive."""
    lines: list[tuple[float, str]] = []

    def read() -> None:
        for line in stream:
            lines.append((time.monotonic(), line))

    threading.Thread(target=read, daemon=True).start()
    return lines


@pytest.mark.parametrize("kind", ["io", "cpu"], ids=["threads", "processes"])
def test_a_hung_call_does_not_keep_the_finished_command_alive(tmp_path, kind):
    """One call hangs 60 s; with --timeout 1 it is abandoned and retried, the run
    finishes, and the process exits right after its summary."""
    args, _ = _hang_args(tmp_path, kind, timeout=1)
    proc = _run_cli(args)
    lines = _timed_lines(proc.stdout)
    children: list[tuple[int, float]] = []
    try:
        while kind == "cpu" and len(children) < 2 and proc.poll() is None:
            children = descendants(proc.pid)  # the pool's 2 workers
            time.sleep(0.02)
        try:
            proc.wait(timeout=45)
        except subprocess.TimeoutExpired:
            summary = [t for t, line in lines if " scored, " in line]
            pytest.fail(f"still running {time.monotonic() - summary[0]:.0f} s after its summary"
                        if summary else "no summary after 45 s")
        exited = time.monotonic()
        err = proc.stderr.read()
    finally:
        kill_all(children)
        proc.kill()
    assert proc.returncode == 0, err
    (summary_at, summary), = [(t, line) for t, line in lines if " scored, " in line]
    assert "(1 retries)" in summary and "finished" in summary
    assert exited - summary_at < GRACE
    assert "Exception ignored" not in err
    assert survivors(children, within=0) == []


@pytest.mark.parametrize(
    "kind, sig, code",
    [("io", signal.SIGINT, 130), ("cpu", signal.SIGINT, 130),
     ("io", signal.SIGTERM, 143), ("cpu", signal.SIGTERM, 143)],
    ids=["threads-ctrl-c", "processes-ctrl-c", "threads-sigterm", "processes-sigterm"],
)
def test_stopping_while_a_call_hangs_exits_promptly(tmp_path, kind, sig, code):
    """The call hangs well within its timeout, so it is still in flight when the run is
    stopped: the command must not wait for it."""
    args, marker = _hang_args(tmp_path, kind, timeout=300)
    proc = _run_cli(args)
    children: list[tuple[int, float]] = []
    try:
        t0 = time.monotonic()
        while not marker.exists() and proc.poll() is None and time.monotonic() - t0 < 60:
            time.sleep(0.02)
        assert marker.exists(), proc.communicate()
        time.sleep(0.5)  # the other images finish; the run waits for the hung call alone
        children = descendants(proc.pid)
        sent = time.monotonic()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=45)
        took = time.monotonic() - sent
    finally:
        kill_all(children)
        proc.kill()
    assert proc.returncode == code, err
    assert took < GRACE, f"exited {took:.1f} s after the signal"
    assert "Exception ignored" not in err
    assert "run the same command to resume" in err
    assert survivors(children, within=0) == []
    with ScoreStore(tmp_path / "s.duckdb") as store:
        (run,) = store.runs().itertuples()
        assert run.status == "interrupted" and run.n_scored == 19


# -- a dry run ---------------------------------------------------------------------------


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file()}


def test_dry_run_writes_nothing(tmp_path):
    from typer.testing import CliRunner

    from calibrate.cli import app

    manifest = make_set(tmp_path, 10)
    store_path = tmp_path / "s.duckdb"
    args = ["score", "--dataset", str(manifest), "--detector", "tests.fake_detectors:billable",
            "--store", str(store_path), "--no-progress"]
    before = _snapshot(tmp_path)
    res = CliRunner().invoke(app, [*args, "--dry-run"], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    assert "10 image(s) to score, 0 already" in res.stdout
    assert _snapshot(tmp_path) == before  # no store file, no WAL, nothing
    res = CliRunner().invoke(app, [*args, "--max-calls", "4"], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    before = _snapshot(tmp_path)
    res = CliRunner().invoke(app, [*args, "--dry-run"], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    assert "6 image(s) to score, 4 already" in res.stdout  # an existing store is read...
    assert _snapshot(tmp_path) == before  # ...and left as it was
