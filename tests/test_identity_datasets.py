"""Issue 13, part 1: each image counts once per (detector, version).

A curve counts the current images of one dataset: the one named with --dataset, else
the latest the version ran on. A copy of a scores file or of a manifest under another
name must not double the counts, images removed from a manifest or whose content changed
must stop counting, and the datasets left out are named with what to do.
Tests go through the command line on real DuckDB files where the issue did.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import duckdb
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from calibrate.cli import app
from calibrate.detectors.base import Detection, Result
from calibrate.manifest import LabeledImage
from calibrate.store import SCHEMA_VERSION, DatasetOverlapWarning, ScoreStore

runner = CliRunner()
COSTS = ["--cost-false-accept", "50", "--cost-false-reject", "1"]
ENV = {"COLUMNS": "300"}


def scores_csv(path: Path, n: int = 300, seed: int = 1, shift: float = 0.0) -> Path:
    """A crack-like scores table: few positives, overlapping scores."""
    rng = np.random.default_rng(seed)
    truth = rng.random(n) < 0.1
    score = np.clip(rng.normal(np.where(truth, 0.7, 0.4), 0.15) + shift, 0, 1).round(3)
    lines = ["image_id,label,score,truth"]
    lines += [f"part-{i:04d},crack,{s},{str(t).lower()}"
              for i, (s, t) in enumerate(zip(score, truth))]
    path.write_text("\n".join(lines) + "\n")
    return path


def counts(store: Path, *extra: str) -> dict[str, tuple[int, int]]:
    res = runner.invoke(app, ["thresholds", "--store", str(store), *COSTS, "--format", "json",
                              *extra], env=ENV)
    assert res.exit_code == 0, res.output
    return {r["label"]: (r["n_positive"], r["n_negative"]) for r in json.loads(res.stdout)}


def make_set(folder: Path, n: int, name: str = "manifest.jsonl") -> Path:
    (folder / "img").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        path = folder / "img" / f"p{i:04d}.png"
        if not path.exists():
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(path)
        lines.append({"id": f"p{i:04d}", "image": f"img/p{i:04d}.png",
                      "labels": ["defect"] if i % 4 == 0 else []})
    manifest = folder / name
    manifest.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return manifest


def score_cli(manifest: Path, store: Path, tally: Path, *extra: str):
    res = runner.invoke(app, ["score", "--dataset", str(manifest), "--detector",
                              "tests.fake_detectors:slow", "--option", "latency=0",
                              "--option", f"tally={tally}", "--store", str(store),
                              "--no-progress", *extra], env=ENV)
    assert res.exit_code == 0, res.output
    return res


def calls(tally: Path) -> int:
    return len(tally.read_text().split()) if tally.exists() else 0


def test_a_corrected_copy_of_a_scores_file_is_counted_once(tmp_path):
    store = tmp_path / "s.duckdb"
    first = scores_csv(tmp_path / "scores.csv")
    assert runner.invoke(app, ["import-scores", str(first), "--store", str(store)]).exit_code == 0
    before = counts(store)["crack"]
    assert sum(before) == 300
    # The corrected copy (every score shifted) under another name: another dataset.
    fixed = scores_csv(tmp_path / "scores-fixed.csv", shift=0.01)
    assert runner.invoke(app, ["import-scores", str(fixed), "--store", str(store)]).exit_code == 0
    res = runner.invoke(app, ["thresholds", "--store", str(store), *COSTS], env=ENV)
    assert res.exit_code == 0, res.output
    # Counted once (it was 2x: 60 / 540 instead of 30 / 270), from the latest import,
    # and the left-out dataset named with what to do, in the output and as a warning.
    assert counts(store)["crack"] == before
    out = " ".join((res.stdout + res.stderr).split())
    assert ("precomputed unknown also ran on dataset(s) 'scores' (300 of its 300 images the "
            "same as in 'scores-fixed'); only 'scores-fixed', the latest it ran on, is "
            "counted, so no image counts twice") in out
    assert "name it with --dataset" in out and "remove_dataset('scores')" in out
    with ScoreStore(store, read_only=True) as st:
        with pytest.warns(DatasetOverlapWarning, match="'scores' .300 of its 300"):
            ls = st.scores("precomputed", "unknown", "crack")
        assert len(ls) == 300 == len(set(ls.image_ids))
        assert ls.scores.max() == pytest.approx(st.scores(
            "precomputed", "unknown", "crack", dataset="scores-fixed").scores.max())
    # --dataset counts the other one, and only it.
    assert counts(store, "--dataset", "scores")["crack"] == before
    # Removing the old copy leaves one dataset and nothing to warn about.
    with ScoreStore(store) as st:
        assert st.remove_dataset("scores") == 1
    res = runner.invoke(app, ["thresholds", "--store", str(store), *COSTS], env=ENV)
    assert res.exit_code == 0 and "also ran on" not in res.stdout + res.stderr


def test_a_manifest_scored_again_under_another_name_is_counted_once(tmp_path):
    store, tally = tmp_path / "s.duckdb", tmp_path / "tally.txt"
    manifest = make_set(tmp_path, 40)
    score_cli(manifest, store, tally)
    assert calls(tally) == 40
    before = counts(store)["defect"]
    assert before == (10, 30)
    copy = tmp_path / "parts-copy.jsonl"
    copy.write_text(manifest.read_text())
    res = score_cli(copy, store, tally)
    assert calls(tally) == 40  # same images, same detector: reused, not sent again
    assert "40 already done" in " ".join(res.stdout.split())
    assert counts(store)["defect"] == before  # was (20, 60)
    with ScoreStore(store, read_only=True) as st, pytest.warns(DatasetOverlapWarning):
        v = st.versions().iloc[0]
        assert (v["n_images"], v["dataset"]) == (40, "parts-copy")
        assert len(st.scores("slow", "s1", "defect")) == 40


def test_images_removed_from_a_manifest_stop_counting(tmp_path):
    store, tally = tmp_path / "s.duckdb", tmp_path / "tally.txt"
    manifest = make_set(tmp_path, 40)
    score_cli(manifest, store, tally)
    lines = manifest.read_text().splitlines()
    manifest.write_text("\n".join(lines[:-4]) + "\n")  # p0036..p0039 removed (p0036 positive)
    score_cli(manifest, store, tally)
    assert calls(tally) == 40  # nothing new to score
    assert counts(store)["defect"] == (9, 27)  # was (10, 30): removed images still counted
    with ScoreStore(store, read_only=True) as st:
        ids = set(st.scores("slow", "s1", "defect").image_ids)
        assert len(ids) == 36 and "p0039" not in ids
    # Putting them back makes them count again, from their stored results.
    manifest.write_text("\n".join(lines) + "\n")
    score_cli(manifest, store, tally)
    assert calls(tally) == 40 and counts(store)["defect"] == (10, 30)


def image(i, labels=(), content_hash=None):
    return LabeledImage(f"img{i}", f"/data/img{i}.png", frozenset(labels),
                        content_hash=content_hash or f"sha256:{i}")


def begin(store, dataset="parts", fingerprint="fp"):
    return store.begin_run(detector="viam", model_version="v1", dataset=dataset,
                           dataset_fingerprint=fingerprint, settings={}, labels=None,
                           detection_floor=None)


def test_changed_content_is_another_image_and_its_old_score_stops_counting(tmp_path):
    with ScoreStore(tmp_path / "s.duckdb") as store:
        store.add_images("parts", [image(0, ["scratch"]), image(1)])
        run = begin(store)
        store.record(run, [("img0", Detection([Result("scratch", 0.7)]), 1),
                           ("img1", Detection([]), 1)], [])
        store.finish_run(run)
        # img0's file changed: the 0.7 was a score of other content.
        store.add_images("parts", [image(0, ["scratch"], "sha256:new"), image(1)])
        rows = store._db().execute(
            "SELECT content_hash, current FROM images WHERE image_id = 'img0' "
            "ORDER BY image_key").fetchall()
        assert rows == [("sha256:0", False), ("sha256:new", True)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # incomplete now: img0 is not scored
            ls = store.scores("viam", "v1", "scratch")
        assert ls.image_ids.tolist() == ["img1"]
        assert store.data_check("viam", "v1").n_done == 1
        second = begin(store, fingerprint="fp2")
        store.record(second, [("img0", Detection([Result("scratch", 0.2)]), 1)], [])
        store.finish_run(second)
        assert store.scores("viam", "v1", "scratch").scores.tolist() == [-np.inf, 0.2]
        # Back to the old file: the old identity is current again, with its own score.
        store.add_images("parts", [image(0, ["scratch"]), image(1)])
        assert store.scores("viam", "v1", "scratch").scores.tolist() == [0.7, -np.inf]
        assert store._db().execute("SELECT count(*) FROM images").fetchall()[0][0] == 3


def test_versions_labels_and_truth_count_the_current_dataset(tmp_path):
    with ScoreStore(tmp_path / "s.duckdb") as store:
        store.add_images("old", [image(0, ["dent"]), image(1)])
        run = begin(store, dataset="old")
        store.record(run, [("img0", Detection([Result("dent", 0.5)]), 1),
                           ("img1", Detection([]), 1)], [])
        store.finish_run(run)
        store.add_images("new", [image(2, ["scratch"])])
        run = begin(store, dataset="new")
        store.record(run, [("img2", Detection([Result("scratch", 0.9)]), 1)], [])
        store.finish_run(run)
        v = store.versions()
        assert v[["n_runs", "n_images", "dataset"]].values.tolist() == [[2, 1, "new"]]
        assert v["labels"].tolist() == [["scratch"]]
        assert store.truth_labels("viam", "v1") == ["scratch"]
        assert store.truth_labels("viam", "v1", dataset="old") == ["dent"]
        assert store.version_datasets("viam", "v1") == ["new", "old"]
        check = store.data_check("viam", "v1")
        assert (check.dataset, check.named, check.others) == ("new", False, (("old", 2, 0),))
        with pytest.warns(DatasetOverlapWarning, match=r"a curve counts one dataset"):
            assert len(store.scores("viam", "v1", "scratch")) == 1


def make_v2(path: Path) -> None:
    """A store file as schema version 2 wrote it: images keyed by (dataset, image_id),
    runs without a source."""
    con = duckdb.connect(str(path))
    con.execute("""
        CREATE SEQUENCE run_keys START 2; CREATE SEQUENCE image_keys START 3;
        CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '2');
        CREATE TABLE runs (run_id VARCHAR PRIMARY KEY, run_key INTEGER NOT NULL UNIQUE,
            detector VARCHAR NOT NULL, model_version VARCHAR NOT NULL, dataset VARCHAR NOT NULL,
            dataset_fingerprint VARCHAR NOT NULL, settings VARCHAR NOT NULL, labels VARCHAR,
            detection_floor DOUBLE, status VARCHAR NOT NULL, started_at TIMESTAMP NOT NULL,
            finished_at TIMESTAMP, tool_version VARCHAR NOT NULL);
        CREATE TABLE images (image_key BIGINT NOT NULL DEFAULT nextval('image_keys'),
            dataset VARCHAR NOT NULL, image_id VARCHAR NOT NULL, uri VARCHAR NOT NULL,
            content_hash VARCHAR, labels VARCHAR[] NOT NULL, split VARCHAR,
            PRIMARY KEY (dataset, image_id));
        CREATE TABLE run_images (run_key INTEGER NOT NULL, image_key BIGINT NOT NULL,
            status VARCHAR NOT NULL, attempts INTEGER NOT NULL, scored_at TIMESTAMP NOT NULL);
        CREATE TABLE results (run_key INTEGER NOT NULL, image_key BIGINT NOT NULL,
            label VARCHAR NOT NULL, score DOUBLE NOT NULL, x_min DOUBLE, y_min DOUBLE,
            x_max DOUBLE, y_max DOUBLE, box_unit VARCHAR);
        CREATE TABLE failures (run_key INTEGER NOT NULL, image_key BIGINT NOT NULL,
            kind VARCHAR NOT NULL, message VARCHAR NOT NULL, attempts INTEGER NOT NULL,
            failed_at TIMESTAMP NOT NULL);
        CREATE TABLE raw_responses (run_key INTEGER NOT NULL, image_key BIGINT NOT NULL,
            response BLOB NOT NULL, PRIMARY KEY (run_key, image_key));
        CREATE VIEW result_rows AS SELECT res.*, i.image_id FROM results res
            JOIN images i ON i.image_key = res.image_key;
        INSERT INTO runs VALUES ('r1', 1, 'viam', 'v1', 'parts', 'fp', '{}', NULL, NULL,
            'finished', TIMESTAMP '2024-01-01', TIMESTAMP '2024-01-01', '0.1');
        INSERT INTO images VALUES (1, 'parts', 'a', '/a.png', 'sha256:a', ['scratch'], 'cal'),
                                  (2, 'parts', 'b', '/b.png', 'sha256:b', [], 'cal');
        INSERT INTO run_images VALUES (1, 1, 'scored', 1, TIMESTAMP '2024-01-01'),
                                      (1, 2, 'scored', 1, TIMESTAMP '2024-01-01');
        INSERT INTO results VALUES (1, 1, 'scratch', 0.8, NULL, NULL, NULL, NULL, NULL);
    """)
    con.close()


def test_version_2_file_is_migrated_to_image_identities(tmp_path):
    path = tmp_path / "v2.duckdb"
    make_v2(path)
    with ScoreStore(path) as store:
        meta = dict(store._db().execute("SELECT key, value FROM meta").fetchall())
        assert meta["schema_version"] == str(SCHEMA_VERSION) == "5" and "migrated_from_2" in meta
        assert store._db().execute(
            "SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'images' "
            "AND constraint_type = 'PRIMARY KEY'").fetchall()[0][0] == 0
        assert store._db().execute(
            "SELECT image_key, current FROM images ORDER BY 1").fetchall() == [(1, True), (2, True)]
        assert store.scores("viam", "v1", "scratch").scores.tolist() == [0.8, -np.inf]
        assert store.data_check("viam", "v1").complete
        assert len(store._db().execute("SELECT * FROM result_rows").fetchall()) == 1
        # New identities get keys past the migrated ones; sources are recorded from now on.
        store.add_images("parts", [LabeledImage("a", "/a.png", frozenset({"scratch"}),
                                                content_hash="sha256:a2")])
        assert store._db().execute(
            "SELECT max(image_key) FROM images").fetchall()[0][0] == 3
        run = store.begin_run(detector="viam", model_version="v1", dataset="parts",
                              dataset_fingerprint="fp2", settings={}, labels=None,
                              detection_floor=None, source="/m.jsonl")
        assert store._db().execute(
            "SELECT source FROM runs WHERE run_id = ?", [run]).fetchall() == [("/m.jsonl",)]
