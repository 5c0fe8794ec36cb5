"""Issue 13, part 2: no cutoff from an incomplete run in silence.

After ``kill -9`` of ``calibrate score`` the run stays ``running`` with part of the
images done. Every threshold choice from the store (``thresholds``, ``report``, the
study's) refuses it with exit 2, naming the run, how much is done and the command that
resumes it; ``--allow-incomplete`` proceeds and the output says INCOMPLETE DATA. The
same holds when a version's dataset gained images its latest run never saw. Also:
failures that a resume recovered are marked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from calibrate.cli import app
from calibrate.manifest import read_manifest
from calibrate.policy import PolicySet
from calibrate.runner import RunOptions, score_dataset
from calibrate.store import (
    IncompleteDataError,
    IncompleteDataWarning,
    ScoreStore,
)
from calibrate.thresholds import choose_thresholds_from_store
from tests import fake_detectors as fd
from tests.test_identity_datasets import calls, make_set, score_cli

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
COSTS = ["--cost-false-accept", "50", "--cost-false-reject", "1"]
ENV = {"COLUMNS": "400"}
QUIET = dict(progress=False, backoff=0.001, flush_every=0.05)


def one_line(text: str) -> str:
    return " ".join(text.split())


def kill_mid_run(tmp_path: Path, n: int = 300) -> tuple[Path, Path, list[str]]:
    """Start ``calibrate score`` in a process and SIGKILL it after some commits."""
    manifest = make_set(tmp_path, n)
    store, tally = tmp_path / "s.duckdb", tmp_path / "tally.txt"
    args = ["score", "--dataset", str(manifest), "--detector", "tests.fake_detectors:slow",
            "--store", str(store), "--concurrency", "4", "--option", "latency=0.04",
            "--option", f"tally={tally}", "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "calibrate.cli", *args],
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    # Past one commit batch (128 images), with about 1.5 s of calls still to go.
    while calls(tally) < n // 2 and proc.poll() is None and time.monotonic() - t0 < 60:
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    return manifest, store, args


def test_thresholds_and_report_refuse_a_killed_run_and_say_how_to_resume(tmp_path):
    manifest, store, args = kill_mid_run(tmp_path)
    with ScoreStore(store) as st:
        (run,) = st.runs().itertuples()
        done = len(st.done_image_ids(run.run_id))
    assert run.status == "running" and 0 < done < 300
    res = runner.invoke(app, ["thresholds", "--store", str(store), *COSTS], env=ENV)
    assert res.exit_code == 2
    err = one_line(res.stderr)
    assert (f"slow s1: its latest run {run.run_id} is still marked running (its process was "
            f"killed, or is still scoring) with {done:,} of 300 images of dataset "
            f"'{tmp_path.name}' done") in err
    assert (f"calibrate score --dataset {manifest} --detector slow --model-version s1 "
            f"--store {store}") in err
    assert "--allow-incomplete" in err
    # report shares the check (and so does a study: the same choose function).
    res = runner.invoke(app, ["report", "--store", str(store), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and "still marked running" in res.stderr
    with ScoreStore(store, read_only=True) as st, pytest.raises(IncompleteDataError):
        choose_thresholds_from_store(st, PolicySet.default())
    # Allowed, it proceeds and says so wherever the numbers are.
    res = runner.invoke(app, ["thresholds", "--store", str(store), *COSTS,
                              "--allow-incomplete"], env=ENV)
    assert res.exit_code == 0, res.output
    assert "INCOMPLETE DATA: these thresholds rest on part of the data: slow s1" in one_line(
        res.stdout)
    assert "INCOMPLETE DATA used as asked" in one_line(res.stderr)
    res = runner.invoke(app, ["thresholds", "--store", str(store), *COSTS, "--format", "json",
                              "--allow-incomplete", "-o", str(tmp_path / "t.json")], env=ENV)
    assert res.exit_code == 0 and "INCOMPLETE DATA" in res.stderr
    # calibrate check reads the same data: it is told too.
    res = runner.invoke(app, ["check", str(tmp_path / "t.json"), "--store", str(store),
                              "--model-version", "s1"], env=ENV)
    assert "incomplete" in one_line(res.stderr).lower()
    # Resuming completes the run, and the refusal is gone.
    resumed = subprocess.run([sys.executable, "-m", "calibrate.cli", *args],
                             env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert resumed.returncode == 0, resumed.stderr
    res = runner.invoke(app, ["thresholds", "--store", str(store), *COSTS], env=ENV)
    assert res.exit_code == 0 and "INCOMPLETE" not in res.stdout + res.stderr


def test_a_stopped_run_and_a_grown_dataset_are_incomplete(tmp_path):
    store, tally = tmp_path / "s.duckdb", tmp_path / "tally.txt"
    manifest = make_set(tmp_path, 20)
    score_cli(manifest, store, tally, "--max-calls", "5")  # the cost guard stops the run
    res = runner.invoke(app, ["thresholds", "--store", str(store), *COSTS], env=ENV)
    assert res.exit_code == 2 and "is interrupted with 5 of 20 images" in one_line(res.stderr)
    score_cli(manifest, store, tally)
    # Another version is run on the manifest with one image more: s1 has not seen it.
    make_set(tmp_path, 21)
    score_cli(manifest, store, tally, "--model-version", "s2")
    res = runner.invoke(app, ["thresholds", "--store", str(store), *COSTS], env=ENV)
    assert res.exit_code == 2
    assert ("slow s1: only 20 of 21 images of dataset" in one_line(res.stderr)
            and "the dataset gained images after its latest run" in one_line(res.stderr))
    res = runner.invoke(app, ["thresholds", "--store", str(store), *COSTS,
                              "--model-version", "s2"], env=ENV)
    assert res.exit_code == 0, res.output  # the complete version is not held up
    before = calls(tally)
    score_cli(manifest, store, tally)  # s1 again: only the new image is sent
    assert calls(tally) == before + 1
    res = runner.invoke(app, ["thresholds", "--store", str(store), *COSTS], env=ENV)
    assert res.exit_code == 0, res.output


def test_reads_warn_and_the_store_can_allow_incomplete_data(tmp_path):
    ds = read_manifest(make_set(tmp_path, 12))
    with ScoreStore(tmp_path / "s.duckdb") as store:
        score_dataset(ds, fd.Hash(), store, RunOptions(max_calls=4, **QUIET))
        with pytest.warns(IncompleteDataWarning, match="reading incomplete data: hash h1"):
            assert len(store.scores("hash", "h1", "defect")) == 4
        check = store.data_check("hash", "h1")
        assert (check.status, check.n_done, check.n_images, check.complete) == (
            "interrupted", 4, 12, False)
    with ScoreStore(tmp_path / "s.duckdb", read_only=True, allow_incomplete=True) as store:
        with pytest.warns(IncompleteDataWarning, match="INCOMPLETE DATA used as asked"):
            results = choose_thresholds_from_store(store, PolicySet.default())
        assert {r.label for r in results} == {"defect"}
        assert results[0].table.total_positive + results[0].table.total_negative == 4
        with pytest.raises(IncompleteDataError, match="resume it"):
            store.require_complete("hash", "h1", allow=False)


def test_failures_a_resume_recovered_are_marked(tmp_path):
    ds = read_manifest(make_set(tmp_path, 6))
    det = fd.Flaky(failures=3)
    with ScoreStore(tmp_path / "s.duckdb") as store:
        score_dataset(ds, det, store, RunOptions(max_attempts=2, **QUIET))
        f = store.failures()
        assert len(f) == 6 and not f["recovered"].any()
        score_dataset(ds, det, store, RunOptions(max_attempts=2, **QUIET))  # resumed
        f = store.failures()
        assert len(f) == 6 and f["recovered"].all()  # history kept, marked
        assert store.failures(include_recovered=False).empty
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # complete: nothing to warn about
            assert store.n_failed("flaky", "h1") == 0
