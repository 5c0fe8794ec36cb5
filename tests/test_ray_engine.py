"""Scoring on Ray Data (``--engine ray``) against a real local Ray instance: the same
store records as the local engine, failures recorded as failures, the local retry
rules, and a real ``calibrate score --engine ray`` killed mid-run and resumed.

One Ray instance serves the module (starting one takes 2-10 s); the kill test's
command starts its own instance first (the default), then connects to the module's
through ``RAY_ADDRESS`` as it would to a cluster. Without Ray these tests skip on a
developer machine but fail under CI (``CI=true``), which installs it (``.ci/run``).
Select them with ``-m ray``; leave them out with ``-m "not ray"``.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
from pathlib import Path

import duckdb
import pytest

from calibrate.datasets import make_parts
from calibrate.detectors.base import FatalDetectorError
from calibrate.detectors.surface import SurfaceDefectDetector
from calibrate.errors import InputError
from calibrate.manifest import read_manifest
from calibrate.ray_engine import INSTALL_HINT, RayOptions, connect, require_ray
from calibrate.ray_engine import score_dataset as score_on_ray
from calibrate.runner import RunOptions, score_dataset
from calibrate.store import ScoreStore
from tests import fake_detectors as fd
from tests.test_runner import _run_cli, _wait_for_calls, make_set
from tests.test_runner_processes import descendants, kill_all, survivors

pytestmark = [pytest.mark.ray,
              # one Ray instance per worker: keep these tests together
              pytest.mark.xdist_group("ray"),
              pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
              # Ray Data reads its own deprecated settings when it copies its context
              pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")]

QUIET = dict(progress=False, backoff=0.001)
#: Where one actor will do: each actor is a process to start (about a second each).
ONE_ACTOR = RayOptions(batch_size=4, actors=1)


def _require_ray() -> None:
    """Skip without Ray, but fail under CI, which must have it."""
    try:
        require_ray()
    except InputError as exc:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"CI must run the Ray engine tests: {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def ray_address():
    """A local Ray instance for the module; its address, for commands that connect."""
    _require_ray()
    with connect(RayOptions(), num_cpus=2) as ray:  # a failure to start fails the tests
        yield ray.get_runtime_context().gcs_address


def _cpu(detector):
    detector.kind = "cpu"  # the fakes are network-like; Ray runs local detectors
    return detector


def _rows(store_path: Path) -> dict[str, list]:
    """What a store holds for its runs, without run ids or times: comparable across
    stores and engines."""
    con = duckdb.connect(str(store_path), read_only=True)
    try:
        return {
            "results": con.execute(
                "SELECT detector, model_version, image_id, label, score, x_min, y_min, x_max, "
                "y_max FROM result_rows ORDER BY ALL").fetchall(),
            "images": con.execute(
                "SELECT image_id, status, attempts FROM run_image_rows ORDER BY ALL").fetchall(),
            "failures": con.execute(
                "SELECT image_id, kind, message, attempts FROM failure_rows ORDER BY ALL"
            ).fetchall(),
        }
    finally:
        con.close()


def _both_engines(tmp_path: Path, ds, make_detector, opts: RunOptions,
                  ray_opts: RayOptions = RayOptions(batch_size=4)):
    """Score ``ds`` with the local engine and on Ray into two stores; both summaries."""
    with ScoreStore(tmp_path / "local.duckdb") as store:
        local = score_dataset(ds, make_detector(), store, opts)
    with ScoreStore(tmp_path / "ray.duckdb") as store:
        on_ray = score_on_ray(ds, make_detector(), store, opts, ray_opts)
    return local, on_ray


def test_ray_stores_exactly_what_the_local_engine_stores(tmp_path, ray_address):
    """In two Datasets of 24 images, the run holds what one local run holds."""
    ds = read_manifest(make_parts(tmp_path / "parts", n_parts=48, seed=3))
    local, on_ray = _both_engines(tmp_path, ds, lambda: SurfaceDefectDetector("v2"),
                                  RunOptions(concurrency=2, **QUIET),
                                  RayOptions(batch_size=4, window=24))
    assert on_ray.status == local.status == "finished"
    assert on_ray.scored == local.scored == 48 and on_ray.calls == 48
    expected = _rows(tmp_path / "local.duckdb")
    assert len(expected["results"]) >= 4 * 48  # every label on every image, boxes too
    assert _rows(tmp_path / "ray.duckdb") == expected
    with ScoreStore(tmp_path / "ray.duckdb") as store:  # nothing left: no Ray call at all
        again = score_on_ray(ds, SurfaceDefectDetector("v2"), store, RunOptions(**QUIET))
    assert again.status == "skipped" and again.calls == 0


def test_an_onnx_model_file_scores_on_ray_as_it_does_locally(tmp_path, ray_address):
    """The model travels as its options and hash; each actor loads the file itself."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    import numpy as np

    from calibrate.detectors.onnx_model import OnnxDetector
    from tests.model_builders import onnx_pooled_classifier

    rng = np.random.default_rng(11)
    model = onnx_pooled_classifier(tmp_path / "m.onnx", rng.normal(size=(3, 4)),
                                   rng.normal(size=4), activation="Softmax")
    (tmp_path / "labels.txt").write_text("scratch\ndent\nspot\ncrack\n")
    ds = read_manifest(make_parts(tmp_path / "parts", n_parts=24, seed=5))
    local, on_ray = _both_engines(
        tmp_path, ds, lambda: OnnxDetector(model=model, labels=tmp_path / "labels.txt"),
        RunOptions(concurrency=2, **QUIET))
    assert on_ray.scored == local.scored == 24
    assert _rows(tmp_path / "ray.duckdb") == _rows(tmp_path / "local.duckdb")


def test_failed_calls_are_recorded_as_failures_never_as_scores(tmp_path, ray_address):
    """Ids ending in 3 are unreadable (kind 'image'), in 7 a bug (kind 'error')."""
    ds = read_manifest(make_set(tmp_path, 30, bad=1))
    local, on_ray = _both_engines(tmp_path, ds, lambda: _cpu(fd.Picky()),
                                  RunOptions(concurrency=2, **QUIET))
    assert on_ray.failures_by_kind == local.failures_by_kind == {"image": 4, "error": 3}
    rows = _rows(tmp_path / "ray.duckdb")
    assert rows == _rows(tmp_path / "local.duckdb")
    failed = {r[0] for r in rows["failures"]}
    assert failed == {"p0003", "p0013", "p0023", "bad0", "p0007", "p0017", "p0027"}
    assert not failed & {r[2] for r in rows["results"]}
    assert ("p0007", "error", "KeyError: 'boom'", 1) in rows["failures"]


def test_retries_and_the_call_budget_follow_the_local_rules(tmp_path, ray_address):
    """Every image fails once, ids ending in 1 five times. With 2 attempts per image and
    35 calls in all, 15 images get their second call: scored, or recorded as given up
    (a resume retries those); the other 5 are left for a resume."""
    ds = read_manifest(make_set(tmp_path, 20))
    (tmp_path / "calls").mkdir()
    det = fd.CountedFlaky(str(tmp_path / "calls"), failures=1, stubborn=5)
    with ScoreStore(tmp_path / "s.duckdb") as store:
        summary = score_on_ray(ds, det, store, RunOptions(max_attempts=2, max_calls=35, **QUIET),
                               RayOptions(batch_size=4, actors=2))
    assert (summary.status, summary.calls, summary.retries) == ("call_budget", 35, 20)
    assert summary.scored + summary.failed == 15
    rows = _rows(tmp_path / "s.duckdb")
    assert len(rows["images"]) == 15 and {r[2] for r in rows["images"]} == {2}
    assert summary.failed == len(rows["failures"]) <= 2
    assert all(r[0] in ("p0001", "p0011") and r[1:] == ("retryable", "gave up after 2 "
               "attempts: busy", 2) for r in rows["failures"])
    assert not {r[0] for r in rows["failures"]} & {r[2] for r in rows["results"]}


@pytest.mark.parametrize("detector, reason", [
    (fd.BadCredentials(), "The security token included in the request is invalid"),
    (fd.Unbuildable(), "cannot build the detector on a Ray worker: FileNotFoundError: "
                       "no such model file"),
], ids=["fatal-error", "cannot-build-on-worker"])
def test_a_fatal_error_stops_the_run_and_records_no_score(tmp_path, ray_address, detector, reason):
    ds = read_manifest(make_set(tmp_path, 12))
    with ScoreStore(tmp_path / "s.duckdb") as store:
        with pytest.raises(FatalDetectorError, match=reason) as info:
            score_on_ray(ds, _cpu(detector), store, RunOptions(**QUIET), ONE_ACTOR)
        assert "run the same command again to resume" in str(info.value)
        (run,) = store.runs().itertuples()
        assert run.status == "failed" and run.n_scored == 0
    assert _rows(tmp_path / "s.duckdb")["results"] == []


def test_network_detectors_and_service_options_are_refused(tmp_path):
    """No Ray needed: refused before anything is written."""
    ds = read_manifest(make_set(tmp_path, 3))
    with ScoreStore(tmp_path / "s.duckdb") as store:
        with pytest.raises(InputError, match=r"runs local detectors \(kind 'cpu'\); hash calls"):
            score_on_ray(ds, fd.Hash(), store, RunOptions(**QUIET))
        with pytest.raises(InputError, match="--rate-limit is not supported with --engine ray"):
            score_on_ray(ds, _cpu(fd.Hash()), store, RunOptions(rate_limit=5, **QUIET))
        unpicklable = _cpu(fd.Hash())
        unpicklable.hook = lambda image: image  # a lambda cannot travel to a worker
        with pytest.raises(InputError, match="hash cannot be sent to Ray workers: it cannot "
                                             "be pickled"):
            score_on_ray(ds, unpicklable, store, RunOptions(**QUIET))
        assert store.runs().empty


def test_an_unreachable_cluster_is_one_line_and_changes_nothing(tmp_path):
    """Ray itself retries for minutes; the address is tried first."""
    _require_ray()
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = _cli(["score", "--dataset", str(make_set(tmp_path, 3)), "--detector", "surface-defect",
                 "--store", str(tmp_path / "s.duckdb"), "--engine", "ray", "--no-progress"],
                f"127.0.0.1:{port}")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert err.startswith(f"error: cannot reach the Ray cluster at 127.0.0.1:{port} (")
    assert len(err.strip().splitlines()) == 1
    with ScoreStore(tmp_path / "s.duckdb") as store:
        assert store.runs().empty


def test_no_ray_skips_on_a_developer_machine_but_fails_under_ci(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"pip install 'calibrate\[ray\]'"):
        _require_ray()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run the Ray engine tests"):
        _require_ray()


def test_without_ray_the_command_says_how_to_install_it(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from calibrate.cli import app

    manifest = make_set(tmp_path, 3)
    monkeypatch.setitem(sys.modules, "ray", None)  # what an environment without it sees
    monkeypatch.setitem(sys.modules, "ray.data", None)
    res = CliRunner().invoke(app, [
        "score", "--dataset", str(manifest), "--detector", "surface-defect",
        "--store", str(tmp_path / "s.duckdb"), "--engine", "ray", "--no-progress"])
    assert res.exit_code == 2, res.output
    assert res.stderr.strip() == f"error: {INSTALL_HINT} (Ray is not installed here)."
    assert not (tmp_path / "s.duckdb").exists()
    res = CliRunner().invoke(app, [
        "score", "--dataset", str(manifest), "--detector", "surface-defect",
        "--store", str(tmp_path / "s.duckdb"), "--engine", "spark", "--no-progress"])
    assert res.exit_code == 2 and "unknown engine 'spark'; choose one of local, ray" in res.stderr


# -- a real command, killed and resumed ----------------------------------------------------

#: Ray's per-node agents: once their raylet is killed they report it to the (killed) GCS
#: and give up after about a minute, on their own.
_AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")


def _cli(args: list[str], ray_address: str | None):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    if ray_address:
        env["RAY_ADDRESS"] = ray_address
    return _run_cli(args, env=env)


def _cmdline(pid: int) -> str:
    """A process's command line ("ray::DashboardAgent" for Ray's agents)."""
    try:
        import psutil

        return " ".join(psutil.Process(pid).cmdline())
    except ImportError:
        pass
    except Exception:  # noqa: BLE001 - gone, or not ours to read
        return ""
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ").strip()
    except OSError:
        return ""


def _calls(tally: Path) -> list[str]:
    return tally.read_text().split() if tally.exists() else []


def _stored(store_path: Path) -> list[str]:
    con = duckdb.connect(str(store_path), read_only=True)
    try:
        return [r[0] for r in con.execute("SELECT image_id FROM run_image_rows").fetchall()]
    finally:
        con.close()


def test_a_killed_command_resumes_and_records_no_image_twice(tmp_path, ray_address):
    """kill -9 of a command running its own Ray instance, then a resumed command on a
    Ray "cluster" (RAY_ADDRESS) stopped with SIGTERM, then a call that finishes: every
    image stored once, none called again once stored, the store as an uninterrupted
    run leaves it."""
    n = 160
    manifest = make_set(tmp_path, n)
    store_path, tally = tmp_path / "s.duckdb", tmp_path / "tally.txt"
    args = ["score", "--dataset", str(manifest), "--detector", "tests.fake_detectors:cpu_slow",
            "--store", str(store_path), "--option", "latency=0.05", "--option", f"tally={tally}",
            "--engine", "ray", "--batch-size", "4", "--concurrency", "2", "--no-progress"]
    proc = _cli(args, None)
    ray_processes: list[tuple[int, float]] = []
    try:
        _wait_for_calls(tally, 40, proc, limit=120)
        ray_processes = descendants(proc.pid)
        agents = {pid for pid, _ in ray_processes if _cmdline(pid).startswith(_AGENTS)}
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert survivors([p for p in ray_processes if p[0] not in agents]) == []
    finally:
        kill_all(ray_processes)
        proc.kill()
    first = _stored(store_path)
    assert 0 < len(first) < n and len(set(first)) == len(first)
    called = len(_calls(tally))

    proc = _cli(args, ray_address)  # resumes, on the module's instance as on a cluster
    _wait_for_calls(tally, called + 40, proc, limit=120)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "run the same command to resume" in err
    second = _stored(store_path)
    assert len(first) < len(second) < n and set(first) <= set(second)
    assert not set(_calls(tally)[called:]) & set(first)  # nothing stored was called again
    called = len(_calls(tally))
    with ScoreStore(store_path) as store:
        (run,) = store.runs().itertuples()
        assert run.status == "interrupted"

    # The rest through the API on the same instance: the same code path, one Ray start
    # fewer than a third command.
    with ScoreStore(store_path) as store:
        summary = score_on_ray(read_manifest(manifest), fd.cpu_slow(tally=str(tally)), store,
                               RunOptions(concurrency=2, progress=False), RayOptions(batch_size=4))
    assert summary.status == "finished" and summary.already_done == len(second)
    assert not set(_calls(tally)[called:]) & set(second)
    final = _stored(store_path)
    assert sorted(final) == sorted(set(final)) and len(final) == n
    with ScoreStore(tmp_path / "whole.duckdb") as store:
        score_dataset(read_manifest(manifest), fd.cpu_slow(latency=0), store,
                      RunOptions(concurrency=1, progress=False))
    assert _rows(store_path) == _rows(tmp_path / "whole.duckdb")


# -- study files -----------------------------------------------------------------------------


def test_a_study_file_chooses_the_engine_in_its_run_table(tmp_path):
    """No Ray needed: the keys are read and checked when the study is loaded."""
    from calibrate.study import StudyError, load_study
    from tests.test_study import make_dataset, write_study

    make_dataset(tmp_path / "data")
    study = load_study(write_study(tmp_path, run_extra='engine = "ray"\nbatch_size = 8\n'
                                                      'ray_address = "10.0.0.5:6379"'))
    assert (study.engine, study.ray) == ("ray", RayOptions(address="10.0.0.5:6379",
                                                           batch_size=8))
    assert study.run == {"concurrency": 2}  # the RunOptions fields only
    assert load_study(write_study(tmp_path)).engine == "local"
    with pytest.raises(StudyError, match=r"study\.toml:14: \[run\], key \"engine\": must be one of "
                                         r"local, ray, got 'spark'"):
        load_study(write_study(tmp_path, run_extra='engine = "spark"'))
    with pytest.raises(StudyError, match='batch_size need engine = "ray"'):
        load_study(write_study(tmp_path, run_extra="batch_size = 8"))


def test_on_a_shared_postgresql_store_images_another_process_claimed_are_left_to_it(
        tmp_path, ray_address, pg_url):
    """A run shared through PostgreSQL: the images a live process claimed are not sent
    on Ray; once that process has scored them, the run holds every image once."""
    from calibrate.store import open_store

    ds = read_manifest(make_parts(tmp_path / "parts", n_parts=24, seed=5))
    ids = [img.image_id for img in ds.images]
    with open_store(pg_url) as other:  # stands for another calibrate process, still alive
        other.add_images(ds.name, ds.images, complete=True)
        with open_store(pg_url) as mine:
            detector = SurfaceDefectDetector("v2")
            # The other process opened the run and claimed the first 8 images.
            run_id = other.begin_run(detector=detector.name, model_version="v2",
                                     dataset=ds.name, dataset_fingerprint=ds.fingerprint,
                                     settings=dict(detector.settings()), labels=None,
                                     detection_floor=detector.detection_floor)
            assert other.claim_images(run_id, ids[:8]) == set(ids[:8])
            summary = score_on_ray(ds, SurfaceDefectDetector("v2"), mine, RunOptions(**QUIET),
                                   ONE_ACTOR)
            assert summary.run_id == run_id  # the run is shared, not begun again
            assert summary.calls == 16 and summary.scored == 16
            assert mine.done_image_ids(run_id) == set(ids[8:])
            # The other process finishes its own images; every image is then done once.
            local = score_dataset(ds, SurfaceDefectDetector("v2"), other, RunOptions(**QUIET))
            assert local.calls == 8
            assert mine.done_image_ids(run_id) == set(ids)
