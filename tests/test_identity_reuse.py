"""Issue 13, part 3: a changed manifest sends only what is new.

Adding one image or fixing one label changes the manifest's fingerprint and so starts a
new run; the stored results of every unchanged image (same id, content, detector,
version and settings) are copied into it in bulk, and only new or changed images reach
the detector. Calls are counted by the plugin's tally file, through the command line.
"""

from __future__ import annotations

import json

from typer.testing import CliRunner

from calibrate.cli import app
from calibrate.manifest import read_manifest
from calibrate.runner import RunOptions, plan_run, score_dataset
from calibrate.store import ScoreStore
from tests import fake_detectors as fd
from tests.test_identity_datasets import calls, counts, make_set, score_cli

runner = CliRunner()
QUIET = dict(progress=False, backoff=0.001, flush_every=0.05)


def test_adding_one_image_scores_only_that_image(tmp_path):
    store, tally = tmp_path / "s.duckdb", tmp_path / "tally.txt"
    manifest = make_set(tmp_path, 40)
    score_cli(manifest, store, tally)
    assert calls(tally) == 40
    make_set(tmp_path, 41)  # one image more: a new fingerprint, a new run
    dry = runner.invoke(app, ["score", "--dataset", str(manifest), "--detector",
                              "tests.fake_detectors:billable", "--store", str(store),
                              "--dry-run"], env={"COLUMNS": "300"})
    assert dry.exit_code == 0, dry.output  # another detector: nothing of it is stored
    res = score_cli(manifest, store, tally)
    assert calls(tally) == 41  # was 81: every image sent again
    assert tally.read_text().split()[-1] == "p0040"
    out = " ".join(res.stdout.split())
    assert "1 scored" in out and "40 already done" in out
    with ScoreStore(store, read_only=True) as st:
        runs = st.runs()
        assert runs["n_scored"].tolist() == [40, 41]  # the new run holds the whole set
        assert st.data_check("slow", "s1").complete
        new = runs["run_id"].iloc[-1]
        # Copied with their raw responses; attempts 0: this run made no call for them.
        assert st.raw_response(new, "p0000") == st.raw_response(runs["run_id"].iloc[0], "p0000")
        attempts = dict(st._db().execute(
            "SELECT image_id, attempts FROM run_image_rows WHERE run_id = ?", [new]).fetchall())
        assert attempts["p0000"] == 0 and attempts["p0040"] == 1
    assert counts(store)["defect"] == (11, 30)


def test_fixing_one_label_sends_nothing_and_the_fix_counts(tmp_path):
    store, tally = tmp_path / "s.duckdb", tmp_path / "tally.txt"
    manifest = make_set(tmp_path, 20)
    score_cli(manifest, store, tally)
    lines = [json.loads(x) for x in manifest.read_text().splitlines()]
    lines[1]["labels"] = ["defect"]
    manifest.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    score_cli(manifest, store, tally)
    assert calls(tally) == 20
    with ScoreStore(store, read_only=True) as st:
        assert len(st.runs()) == 2
    assert counts(store)["defect"] == (6, 14)


def test_changed_content_other_settings_and_force_are_scored_again(tmp_path):
    store, tally = tmp_path / "s.duckdb", tmp_path / "tally.txt"
    manifest = make_set(tmp_path, 10)
    score_cli(manifest, store, tally)
    # One file changed: only it is sent.
    (tmp_path / "img" / "p0003.png").write_bytes((tmp_path / "img" / "p0004.png").read_bytes())
    score_cli(manifest, store, tally)
    assert calls(tally) == 11 and tally.read_text().split()[-1] == "p0003"
    # Other settings are another way of calling the detector: nothing is reused (an
    # image is added, else the same manifest would find its finished run and skip).
    make_set(tmp_path, 11)
    score_cli(manifest, store, tally, "--option", "latency=0.0001")
    assert calls(tally) == 22
    score_cli(manifest, store, tally, "--force")
    assert calls(tally) == 33


def test_plan_and_run_agree_on_what_is_reused(tmp_path):
    manifest = make_set(tmp_path, 12)
    det = fd.Hash()
    with ScoreStore(tmp_path / "s.duckdb") as store:
        score_dataset(read_manifest(manifest), det, store, RunOptions(**QUIET))
        make_set(tmp_path, 15)
        ds = read_manifest(manifest)
        plan = plan_run(ds, det, store)
        assert (plan.run_id, plan.to_score, plan.already_done) == (None, 3, 12)
        assert plan_run(ds, det, store, RunOptions(force=True)).to_score == 15
        s = score_dataset(ds, det, store, RunOptions(**QUIET))
        assert (s.scored, s.already_done, det.calls) == (3, 12, 15)
        # A manifest read without hashing has no known content: nothing is reused.
        unhashed = read_manifest(manifest, hash_images=False)
        assert plan_run(unhashed, det, store).to_score == 15


def test_a_dry_run_against_a_read_only_store_counts_reuse(tmp_path):
    store, tally = tmp_path / "s.duckdb", tmp_path / "tally.txt"
    manifest = make_set(tmp_path, 8)
    score_cli(manifest, store, tally)
    copy = tmp_path / "copy.jsonl"
    copy.write_text(manifest.read_text())
    res = runner.invoke(app, ["score", "--dataset", str(copy), "--detector",
                              "tests.fake_detectors:slow", "--option", "latency=0",
                              "--option", f"tally={tally}", "--store", str(store),
                              "--dry-run"], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    assert "0 image(s) to score, 8 already" in res.stdout
