"""Several ``calibrate score`` processes writing one PostgreSQL store at once, and the
commands that read it, against a real server the test session starts.

The processes run the real command (as tests/test_runner_processes.py does) with a
local detector that appends every call to a shared tally file, so "no image was sent
twice" is counted from the calls themselves, not inferred from the store.
"""

from __future__ import annotations

import json
import signal
import sys

import pytest
from typer.testing import CliRunner

from calibrate.cli import app
from calibrate.store import open_store
from tests.parts_fixture import PARTS_POLICY
from tests.test_runner import _run_cli, _wait_for_calls, make_set

pytestmark = [
    # one throwaway PostgreSQL cluster per worker: keep these tests together
    pytest.mark.xdist_group("postgresql"),
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
    pytest.mark.filterwarnings("ignore::calibrate.store.IncompleteDataWarning"),
]

runner = CliRunner()


def _score_args(manifest, url, tally, version="s1", latency="0.02"):
    return ["score", "--dataset", str(manifest), "--detector", "tests.fake_detectors:slow",
            "--model-version", version, "--store", url, "--concurrency", "4",
            "--option", f"latency={latency}", "--option", f"tally={tally}", "--no-progress"]


def _calls(tally) -> list[str]:
    return tally.read_text().split() if tally.exists() else []


def _stored(url, version="s1"):
    with open_store(url, read_only=True) as st:
        runs = st.runs()
        runs = runs[runs["model_version"] == version]
        scores = st.scores("slow", version, "defect")
        n_marks = st._db().execute(
            "SELECT count(*), count(DISTINCT (run_key, image_key)) FROM run_images "
            "WHERE run_key IN (SELECT run_key FROM runs WHERE model_version = ?)",
            [version]).fetchall()[0]
    return runs, scores, n_marks


def _both(procs, timeout=120):
    outs = [p.communicate(timeout=timeout) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    return outs


def test_two_processes_on_the_same_pair_share_one_run_and_score_each_image_once(
        tmp_path, pg_url):
    n = 160
    manifest, tally = make_set(tmp_path, n), tmp_path / "tally.txt"
    args = _score_args(manifest, pg_url, tally)
    outs = _both([_run_cli(args), _run_cli(args)])
    calls = _calls(tally)
    assert len(calls) == n == len(set(calls))  # no image sent twice, none left out
    runs, scores, (n_rows, n_distinct) = _stored(pg_url)
    assert len(runs) == 1 and runs["status"].tolist() == ["finished"]
    assert n_rows == n_distinct == n and len(set(scores.image_ids)) == n
    assert "***" not in "".join(o for pair in outs for o in pair)  # no password to hide


def test_two_processes_on_different_versions_write_side_by_side(tmp_path, pg_url):
    n = 80
    manifest, tally = make_set(tmp_path, n), tmp_path / "tally.txt"
    _both([_run_cli(_score_args(manifest, pg_url, tally, version=v)) for v in ("s1", "s2")])
    assert len(_calls(tally)) == 2 * n
    for version in ("s1", "s2"):
        runs, scores, (n_rows, n_distinct) = _stored(pg_url, version)
        assert runs["status"].tolist() == ["finished"]
        assert n_rows == n_distinct == n == len(set(scores.image_ids))
    with open_store(pg_url, read_only=True) as st:  # one current row per image
        assert st._db().execute(
            "SELECT count(*) FROM images WHERE current").fetchall() == [(n,)]


def test_killing_one_of_two_processes_then_resuming_finishes_every_image_once(
        tmp_path, pg_url):
    n = 240
    manifest = make_set(tmp_path, n)
    tallies = {who: tmp_path / f"{who}.txt" for who in ("victim", "survivor", "resume")}
    args = {who: _score_args(manifest, pg_url, t, latency="0.03") for who, t in tallies.items()}
    victim, survivor = _run_cli(args["victim"]), _run_cli(args["survivor"])
    _wait_for_calls(tallies["victim"], n // 4, victim)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL
    out, err = survivor.communicate(timeout=120)
    assert survivor.returncode == 0, err
    runs, _, (n_rows, _) = _stored(pg_url)
    assert len(runs) == 1
    if n_rows < n:  # the victim's unfinished claims were left: the run is not finished
        assert runs["status"].tolist() == ["interrupted"]
    resume = _run_cli(args["resume"])
    out, err = resume.communicate(timeout=120)
    assert resume.returncode == 0, err
    runs, scores, (n_rows, n_distinct) = _stored(pg_url)
    assert len(runs) == 1 and runs["status"].tolist() == ["finished"]
    assert n_rows == n_distinct == n == len(set(scores.image_ids))
    # Every image was called; twice only where the killed process had called it and
    # died before committing it (what was in flight or not yet flushed).
    calls = {who: _calls(t) for who, t in tallies.items()}
    living = calls["survivor"] + calls["resume"]
    assert len(living) == len(set(living))
    assert set(living) | set(calls["victim"]) == {f"p{i:04d}" for i in range(n)}
    with open_store(pg_url, read_only=True) as st:
        # ... and each image's results are stored once.
        assert st._db().execute("SELECT count(*) FROM results").fetchall()[0][0] == len(
            [i for i in scores.scores if i > float("-inf")])


@pytest.fixture(scope="module")
def pg_parts(pg_server, parts_store):
    """The bundled parts set scored by v1 and v2 into PostgreSQL (as parts_store's file)."""
    manifest, _ = parts_store
    url = pg_server.new_database()
    for version in ("v1", "v2"):
        res = runner.invoke(app, ["score", "--dataset", str(manifest), "--detector",
                                  "surface-defect", "--model-version", version, "--store",
                                  url, "--no-progress", "--concurrency", "1"])
        assert res.exit_code == 0, res.output
    return url


def _same_output(args, duck, url):
    """Run a command on the file and on PostgreSQL: the same exit code and output."""
    outs = []
    for store in (str(duck), url):
        res = runner.invoke(app, [a.replace("STORE", store) for a in args],
                            env={"COLUMNS": "200"})
        outs.append((res.exit_code, res.stdout.replace(store, "STORE")))
    assert outs[0] == outs[1]
    return outs[0]


def test_thresholds_from_postgresql_equal_those_from_the_duckdb_file(parts_store, pg_parts):
    _, duck = parts_store
    code, out = _same_output(["thresholds", "--store", "STORE", "--policy", str(PARTS_POLICY),
                              "--format", "json"], duck, pg_parts)
    assert code == 0 and json.loads(out)


def test_check_calibration_report_and_runs_work_unchanged(parts_store, pg_parts, tmp_path):
    _, duck = parts_store
    deployed = tmp_path / "thresholds.json"
    # The test server trusts every connection, so a password in the URL is accepted and
    # ignored: what matters here is that it is written and shown nowhere.
    with_password = pg_parts.replace("postgres@", "postgres:s3cret@")
    res = runner.invoke(app, ["thresholds", "--store", with_password, "--policy",
                              str(PARTS_POLICY), "--model-version", "v1", "--split",
                              "calibration", "-o", str(deployed)])
    assert res.exit_code == 0, res.output
    assert "s3cret" not in res.output and "s3cret" not in deployed.read_text()
    assert "postgres:***@" in deployed.read_text()  # the source, redacted
    code, out = _same_output(["check", str(deployed), "--store", "STORE", "--model-version",
                              "v2", "--split", "test"], duck, pg_parts)
    assert code == 1 and "FAILED" in out
    code, out = _same_output(["calibration", "--store", "STORE", "--policy", str(PARTS_POLICY),
                              "--split", "calibration"], duck, pg_parts)
    assert code == 0
    res = runner.invoke(app, ["report", "--store", pg_parts, "--policy", str(PARTS_POLICY),
                              "--out", str(tmp_path / "rep"), "--model-version", "v1"])
    assert res.exit_code == 0, res.output
    assert "crack" in (tmp_path / "rep" / "index.html").read_text()
    res = runner.invoke(app, ["runs", "--store", pg_parts], env={"COLUMNS": "200"})
    assert res.exit_code == 0 and "surface-defect" in res.stdout


def test_a_bad_url_is_one_line_with_exit_2_and_no_password(tmp_path):
    res = runner.invoke(app, ["thresholds", "--store", "postgresql://qa:s3cret@127.0.0.1:1/x",
                              "--cost-false-accept", "1", "--cost-false-reject", "1"])
    assert res.exit_code == 2
    assert "s3cret" not in res.output and "@127.0.0.1:1/x" in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_a_dry_run_against_an_empty_database_plans_and_creates_nothing(tmp_path, pg_url):
    import psycopg

    manifest = make_set(tmp_path, 12)
    res = runner.invoke(app, [*_score_args(manifest, pg_url, tmp_path / "tally"), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "12 image(s) to score, 0 already in" in " ".join(res.output.split())
    assert not _calls(tmp_path / "tally")
    with psycopg.connect(pg_url) as con:  # still empty: no schema was created
        assert con.execute("SELECT count(*) FROM information_schema.tables "
                           "WHERE table_schema = current_schema()").fetchone()[0] == 0


def test_a_study_file_may_name_a_postgresql_store(tmp_path, pg_url):
    from calibrate.store import StoreURL
    from calibrate.study import load_study, run_study
    from tests.test_study import make_dataset, tally, write_study

    make_dataset(tmp_path / "data")
    path = write_study(tmp_path)
    path.write_text(path.read_text().replace('store = "toy.duckdb"', f'store = "{pg_url}"'))
    study = load_study(path)
    assert isinstance(study.store, StoreURL) and study.store == pg_url
    run_study(study, progress=False)
    n = len(tally(tmp_path))
    run_study(load_study(path), progress=False)  # a re-run scores nothing again
    assert len(tally(tmp_path)) == n > 0
    assert (tmp_path / "out" / "thresholds.json").exists()
    assert not (tmp_path / "postgresql:").exists()  # the URL was never taken for a folder
