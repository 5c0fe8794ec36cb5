import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from calibrate.detectors.base import FatalDetectorError
from calibrate.manifest import read_manifest
from calibrate.runner import RunOptions, score_dataset
from calibrate.store import ScoreStore
from tests import fake_detectors as fd

ROOT = Path(__file__).resolve().parents[1]


def make_set(folder: Path, n: int, *, bad: int = 0) -> Path:
    """n small PNGs (every 4th positive for 'defect') plus ``bad`` zero-byte files."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        path = folder / "img" / f"p{i:04d}.png"
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(path)
        lines.append({"id": f"p{i:04d}", "image": f"img/p{i:04d}.png",
                      "labels": ["defect"] if i % 4 == 0 else []})
    for j in range(bad):
        (folder / "img" / f"bad{j}.png").write_bytes(b"")
        lines.append({"id": f"bad{j}", "image": f"img/bad{j}.png", "labels": []})
    manifest = folder / "manifest.jsonl"
    manifest.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return manifest


QUIET = dict(progress=False, backoff=0.001, flush_every=0.05)


def test_scores_everything_once_and_resume_skips(tmp_path):
    ds = read_manifest(make_set(tmp_path, 40, bad=2))
    det = fd.Hash()
    with ScoreStore(tmp_path / "s.duckdb") as store:
        s1 = score_dataset(ds, det, store, RunOptions(concurrency=4, **QUIET))
        assert (s1.scored, s1.failed, s1.status) == (40, 2, "finished")
        assert det.calls == 40
        s2 = score_dataset(ds, det, store, RunOptions(**QUIET))
        assert s2.status == "skipped" and det.calls == 40  # nothing paid for twice
        ls = store.scores("hash", "h1", "defect")
        assert len(ls.scores) == 40 and len(set(ls.image_ids)) == 40
        assert ls.n_failed == 2
        assert ls.positive.sum() == 10
        # images where the detector returned nothing rank below every score
        assert np.isneginf(ls.scores).sum() == sum(
            1 for im in ds.images if (__import__("zlib").crc32(im.read_bytes()) % 1000) / 1000 <= 0.1
        )
        f = store.failures()
        assert set(f["image_id"]) == {"bad0", "bad1"} and set(f["kind"]) == {"image"}
        s3 = score_dataset(ds, det, store, RunOptions(force=True, **QUIET))
        assert s3.scored == 40 and s3.run_id != s1.run_id


def test_retryable_errors_are_retried_then_succeed(tmp_path):
    ds = read_manifest(make_set(tmp_path, 20))
    det = fd.Flaky(failures=2)
    with ScoreStore(tmp_path / "s.duckdb") as store:
        s = score_dataset(ds, det, store, RunOptions(max_attempts=3, concurrency=4, **QUIET))
        assert (s.scored, s.failed, s.retries, s.calls) == (20, 0, 40, 60)
        assert len(store.scores("flaky", "h1", "defect").scores) == 20


def test_retries_exhausted_are_failures_not_scores(tmp_path):
    ds = read_manifest(make_set(tmp_path, 10))
    with ScoreStore(tmp_path / "s.duckdb") as store:
        s = score_dataset(ds, fd.Flaky(failures=5), store, RunOptions(max_attempts=2, **QUIET))
        assert (s.scored, s.failed) == (0, 10)
        f = store.failures()
        assert (f["kind"] == "retryable").all() and (f["attempts"] == 2).all()
        assert "gave up after 2 attempts" in f["message"].iloc[0]
        assert len(store.scores("flaky", "h1", "defect").scores) == 0


def test_per_image_errors_and_bugs_are_recorded(tmp_path):
    ds = read_manifest(make_set(tmp_path, 30))
    with ScoreStore(tmp_path / "s.duckdb") as store:
        s = score_dataset(ds, fd.Picky(), store, RunOptions(**QUIET))
        assert s.failures_by_kind == {"image": 3, "error": 3}
        f = store.failures().set_index("image_id")
        assert f.loc["p0003", "message"] == "image too large"
        assert f.loc["p0007", "message"].startswith("KeyError")
        assert s.scored == 24


def test_nan_score_is_a_failure(tmp_path):
    ds = read_manifest(make_set(tmp_path, 3))
    with ScoreStore(tmp_path / "s.duckdb") as store:
        s = score_dataset(ds, fd.NaNScore(), store, RunOptions(**QUIET))
        assert s.failed == 3 and "must be finite" in store.failures()["message"].iloc[0]


def test_fatal_error_stops_the_run_and_resume_works(tmp_path):
    ds = read_manifest(make_set(tmp_path, 12))
    with ScoreStore(tmp_path / "s.duckdb") as store:
        det = fd.BadCredentials()
        with pytest.raises(FatalDetectorError, match="security token"):
            score_dataset(ds, det, store, RunOptions(concurrency=2, **QUIET))
        assert det.calls <= 3  # stopped at once, not once per image
        assert store.failures().empty  # the credentials, not the images, were at fault
        good = fd.Hash()
        good.name = "badcreds"
        s = score_dataset(ds, good, store, RunOptions(**QUIET))
        assert s.scored == 12 and s.already_done == 0


def test_many_unexpected_errors_in_a_row_stop_the_run(tmp_path):
    ds = read_manifest(make_set(tmp_path, 40))
    with ScoreStore(tmp_path / "s.duckdb") as store:
        with pytest.raises(FatalDetectorError, match="10 images in a row"):
            score_dataset(ds, fd.AlwaysBroken(), store,
                          RunOptions(give_up_after=10, concurrency=1, **QUIET))


def test_hanging_calls_time_out_and_are_retried(tmp_path):
    ds = read_manifest(make_set(tmp_path, 12))
    with ScoreStore(tmp_path / "s.duckdb") as store:
        t0 = time.monotonic()
        s = score_dataset(ds, fd.Hangs(), store, RunOptions(timeout=0.3, concurrency=4, **QUIET))
        assert s.scored == 12 and s.failed == 0 and s.retries == 1
        assert time.monotonic() - t0 < 2.5  # did not wait for the 3 s hang


def test_rate_limit_spaces_calls(tmp_path):
    ds = read_manifest(make_set(tmp_path, 11))
    with ScoreStore(tmp_path / "s.duckdb") as store:
        t0 = time.monotonic()
        # 5 calls/s: a burst of one second's worth (5), then one call every 0.2 s.
        score_dataset(ds, fd.Hash(), store, RunOptions(rate_limit=5, concurrency=8, **QUIET))
        assert time.monotonic() - t0 >= (11 - 5) / 5 * 0.9


def test_max_calls_stops_and_resumes(tmp_path):
    ds = read_manifest(make_set(tmp_path, 20))
    with ScoreStore(tmp_path / "s.duckdb") as store:
        s1 = score_dataset(ds, fd.Hash(), store, RunOptions(max_calls=7, concurrency=2, **QUIET))
        assert s1.status == "call_budget" and s1.scored == 7
        s2 = score_dataset(ds, fd.Hash(), store, RunOptions(**QUIET))
        assert s2.scored == 13 and s2.already_done == 7 and s2.run_id == s1.run_id


def test_secrets_in_settings_are_not_stored(tmp_path):
    ds = read_manifest(make_set(tmp_path, 2))
    path = tmp_path / "s.duckdb"
    with ScoreStore(path) as store:
        score_dataset(ds, fd.Hash(), store, RunOptions(**QUIET))
    assert b"SECRET-DO-NOT-STORE" not in path.read_bytes()


def _run_cli(args, env=None, **kw):
    env = {**(os.environ if env is None else env), "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "calibrate.cli", *args], env=env, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw,
    )


def _wait_for_calls(tally: Path, at_least: int, proc, limit: float = 60.0) -> None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit and proc.poll() is None:
        if tally.exists() and len(tally.read_text().split()) >= at_least:
            return
        time.sleep(0.02)
    raise AssertionError(f"the run made no progress: {proc.communicate()}")


def test_kill_9_mid_run_then_resume(tmp_path):
    n = 300
    manifest = make_set(tmp_path, n)
    store_path = tmp_path / "s.duckdb"
    tally = tmp_path / "tally.txt"
    args = ["score", "--dataset", str(manifest), "--detector", "tests.fake_detectors:slow",
            "--store", str(store_path), "--concurrency", "4", "--option", "latency=0.04",
            "--option", f"tally={tally}", "--no-progress"]
    proc = _run_cli(args)
    # The tally counts finished calls, not commits: wait past one commit batch (128
    # images) and give the writer thread a moment, with about 1.5 s of calls still to go,
    # so the kill lands after some commits and before the end even on a loaded machine.
    _wait_for_calls(tally, n // 2, proc)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with ScoreStore(store_path) as store:
        (run,) = store.runs().itertuples()
        first = len(store.done_image_ids(run.run_id))
    assert 0 < first < n  # some committed, some not: a real mid-run kill
    done = subprocess.run(
        [sys.executable, "-m", "calibrate.cli", *args], env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"{first:,} already done" in done.stdout.replace("\n", " ")
    with ScoreStore(store_path) as store:
        ls = store.scores("slow", "s1", "defect")
        assert len(ls.image_ids) == n == len(set(ls.image_ids))
        assert len(store.runs()) == 1


def test_ctrl_c_stops_cleanly_and_resumes(tmp_path):
    manifest = make_set(tmp_path, 300)
    store_path = tmp_path / "s.duckdb"
    tally = tmp_path / "tally.txt"
    args = ["score", "--dataset", str(manifest), "--detector", "tests.fake_detectors:slow",
            "--store", str(store_path), "--concurrency", "2", "--option", "latency=0.03",
            "--option", f"tally={tally}", "--no-progress"]
    proc = _run_cli(args)
    _wait_for_calls(tally, 30, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    if proc.returncode == 0:
        pytest.skip("the run finished before the interrupt")
    assert proc.returncode == 130, err
    assert "run the same command to resume" in err
    with ScoreStore(store_path) as store:
        (run,) = store.runs().itertuples()
        assert run.status == "interrupted"
    done = _run_cli(args)
    out, err = done.communicate(timeout=120)
    assert done.returncode == 0, err
    with ScoreStore(store_path) as store:
        assert len(store.scores("slow", "s1", "defect").image_ids) == 300


def test_dry_run_prices_the_calls_and_calls_nothing(tmp_path):
    manifest = make_set(tmp_path, 10)
    store_path = tmp_path / "s.duckdb"
    args = ["score", "--dataset", str(manifest), "--detector", "tests.fake_detectors:billable",
            "--store", str(store_path), "--no-progress"]
    from typer.testing import CliRunner

    from calibrate.cli import app

    res = CliRunner().invoke(app, [*args, "--dry-run"], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    assert "10 image(s) to score, 0 already" in res.stdout and "USD" in res.stdout
    with ScoreStore(store_path) as store:
        assert store.runs().empty
    res = CliRunner().invoke(app, [*args, "--max-calls", "4"], env={"COLUMNS": "300"})
    assert res.exit_code == 0 and "4 image(s) to score" in res.stdout
    res = CliRunner().invoke(app, [*args, "--dry-run"], env={"COLUMNS": "300"})
    assert "6 image(s) to score, 4 already" in res.stdout  # never paid for twice


def test_timeouts_count_from_the_real_start_and_hung_calls_do_not_starve(tmp_path):
    """Two images hang once; with one slot, the others must still be called, once each."""
    ds = read_manifest(make_set(tmp_path, 6))

    class HangsTwice(fd.Hash):
        name = "hangs2"

        def __init__(self):
            super().__init__()
            self.seen = set()

        def detect(self, image):
            with self._lock:
                first = image.image_id not in self.seen
                self.seen.add(image.image_id)
            if first and image.image_id in ("p0000", "p0001"):
                time.sleep(1.5)
            return super().detect(image)

    det = HangsTwice()
    with ScoreStore(tmp_path / "s.duckdb") as store:
        s = score_dataset(ds, det, store, RunOptions(timeout=0.3, concurrency=1, max_attempts=3, **QUIET))
        assert (s.scored, s.failed) == (6, 0)
        assert s.calls == 8  # 6 images + one retry for each of the two that hung
        assert len(store.scores("hangs2", "h1", "defect").scores) == 6


def test_transient_failures_are_retried_when_the_run_is_resumed(tmp_path):
    ds = read_manifest(make_set(tmp_path, 6))
    det = fd.Flaky(failures=3)
    with ScoreStore(tmp_path / "s.duckdb") as store:
        s1 = score_dataset(ds, det, store, RunOptions(max_attempts=2, **QUIET))
        assert (s1.scored, s1.failed) == (0, 6)
        s2 = score_dataset(ds, det, store, RunOptions(max_attempts=2, **QUIET))
        assert s2.status == "finished" and (s2.scored, s2.failed) == (6, 0)
        assert s2.run_id == s1.run_id  # resumed, not re-paid
        ls = store.scores("flaky", "h1", "defect")
        assert len(ls.scores) == 6 and ls.n_failed == 0
        assert len(store.failures()) == 6  # the history of the first attempts is kept


def test_the_same_content_under_another_dataset_name_is_its_own_run(tmp_path):
    manifest = make_set(tmp_path, 4)
    copy = tmp_path / "other.jsonl"
    copy.write_text(manifest.read_text())
    with ScoreStore(tmp_path / "s.duckdb") as store:
        a = score_dataset(read_manifest(manifest), fd.Hash(), store, RunOptions(**QUIET))
        b = score_dataset(read_manifest(copy), fd.Hash(), store, RunOptions(**QUIET))
        # Its own run, but the same images' stored results are reused: nothing re-sent.
        assert a.run_id != b.run_id and (b.scored, b.already_done) == (0, 4)
        assert len(store.scores("hash", "h1", "defect", dataset="other").scores) == 4


def test_sigterm_is_handled_like_ctrl_c_once_and_the_handler_is_restored():
    """In a child process, since SIGTERM with its default action would end pytest."""
    script = """
import os, signal, threading, time
from calibrate.runner import Terminated, stop_on_sigterm

def term():
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.2)  # the handler runs in the main thread at its next instruction

seen = []
with stop_on_sigterm():
    try:
        term()
    except KeyboardInterrupt as exc:  # every Ctrl-C clean-up serves it too
        seen.append(type(exc).__name__)
    term()  # a second SIGTERM during the clean-up is ignored
    seen.append("survived")
assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
own = lambda *a: seen.append("own")
signal.signal(signal.SIGTERM, own)
with stop_on_sigterm():  # an application's own handler is left alone
    term()
def elsewhere():  # signals reach the main thread only: nothing to install here
    with stop_on_sigterm():
        seen.append("thread")
t = threading.Thread(target=elsewhere)
t.start(); t.join()
assert signal.getsignal(signal.SIGTERM) is own
print(seen)
"""
    done = subprocess.run(
        [sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["['Terminated',", "'survived',", "'own',", "'thread']"]
