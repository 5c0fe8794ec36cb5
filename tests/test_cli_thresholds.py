import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from calibrate import choose_threshold
from calibrate.cli import app
from calibrate.manifest import read_scores_table

runner = CliRunner()


@pytest.fixture
def scores_csv(tmp_path):
    rng = np.random.default_rng(5)
    rows = []
    for label, shift in (("scratch", 2.0), ("dent", 1.0)):
        for i in range(300):
            pos = i < 60
            s = rng.normal(shift if pos else 0.0)
            rows.append(
                {"image_id": f"img{i:04d}", "label": label, "score": f"{s:.4f}",
                 "truth": "true" if pos else "false", "model_version": "v1"}
            )
    # a second box on one image: the image-level score is the max
    rows.append({"image_id": "img0000", "label": "scratch", "score": "9.5", "truth": "true",
                 "model_version": "v1"})
    # no result for this image
    rows.append({"image_id": "img9999", "label": "dent", "score": "", "truth": "false",
                 "model_version": "v1"})
    path = tmp_path / "scores.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_json_output_matches_the_api(scores_csv):
    res = runner.invoke(
        app,
        ["thresholds", str(scores_csv), "--cost-false-accept", "20", "--cost-false-reject", "1",
         "--prevalence", "0.05", "--format", "json"],
    )
    assert res.exit_code == 0, res.output
    rows = {r["label"]: r for r in json.loads(res.stdout)}
    assert set(rows) == {"scratch", "dent"}
    frame = read_scores_table(scores_csv)
    for label, r in rows.items():
        g = frame[frame.label == label]
        c = choose_threshold(g.score.to_numpy(), g.positive.to_numpy(), cost_false_accept=20,
                             cost_false_reject=1, prevalence=0.05)
        assert r["threshold"] == c.threshold
        assert r["false_accepts"] == c.false_accepts
        assert r["expected_cost"] == pytest.approx(c.expected_cost)
        assert r["model_version"] == "v1"
    assert rows["dent"]["n_negative"] == 241  # 240 + the image with no result
    assert rows["scratch"]["n_positive"] == 60  # two boxes on img0000 count once


def test_table_output_and_unmet_limit(scores_csv, tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text(
        '[defaults]\ncost_false_accept = 50\ncost_false_reject = 1\n'
        '[labels.scratch]\nmax_false_accept_rate = 0.001\n'
    )
    res = runner.invoke(app, ["thresholds", str(scores_csv), "--policy", str(policy)],
                        env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "scratch" in res.stdout and "dent" in res.stdout
    # An unproven limit is a decision, not a fallback: refused by default, options shown.
    assert "refused" in res.stdout and "if_limit_unproven" in res.stdout
    assert "Options: cost-optimal" in res.stdout
    # Words may wrap wherever the temporary path pushed them.
    assert "more positives with no further false accepts" in " ".join(res.stdout.split())


def test_label_policy_wins_over_options(scores_csv, tmp_path):
    policy = tmp_path / "policy.toml"
    policy.write_text('[labels.dent]\ncost_false_accept = 1\ncost_false_reject = 1000\n')
    res = runner.invoke(
        app,
        ["thresholds", str(scores_csv), "--policy", str(policy), "--cost-false-accept", "5",
         "--cost-false-reject", "1", "--format", "json", "--label", "dent"],
    )
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.stdout)
    assert row["policy"]["cost_false_reject"] == 1000
    assert row["threshold"] == "inf" or row["false_rejects"] == 0


@pytest.mark.parametrize(
    "content, match",
    [
        ("image_id,label,score,truth\na,x,0.5,maybe\n", r"scores.csv:2: truth 'maybe'"),
        ("image_id,label,score,truth\na,x,0.5,1\nb,x,abc,0\n", r"scores.csv:3: score 'abc'"),
        ("image_id,label,score\na,x,0.5\n", "missing column"),
        ("image_id,label,score,truth\na,x,0.5,1\na,x,0.7,0\n", "contradicting truth"),
        ("image_id,label,score,truth\na,x,0.5,1\nb,x,0.1,1\n", "no negative items"),
    ],
)
def test_bad_files_exit_2_with_file_and_line(tmp_path, content, match):
    path = tmp_path / "scores.csv"
    path.write_text(content)
    res = runner.invoke(
        app, ["thresholds", str(path), "--cost-false-accept", "1", "--cost-false-reject", "1"],
        env={"COLUMNS": "300"},
    )
    assert res.exit_code == 2


    assert re.search(match, " ".join(res.stderr.split())), res.stderr


def test_missing_costs_are_explained(scores_csv):
    res = runner.invoke(app, ["thresholds", str(scores_csv)], env={"COLUMNS": "300"})
    assert res.exit_code == 2
    assert "missing cost_false_accept and cost_false_reject" in " ".join(res.stderr.split())


def test_bad_policy_file(tmp_path, scores_csv):
    bad = tmp_path / "p.toml"
    bad.write_text("[defaults]\ncost_false_accept = \n")
    res = runner.invoke(app, ["thresholds", str(scores_csv), "--policy", str(bad)],
                        env={"COLUMNS": "300"})
    assert res.exit_code == 2 and "not valid TOML" in res.stderr and "line 2" in res.stderr


def test_parquet_and_console_script(tmp_path, scores_csv):
    pq = tmp_path / "scores.parquet"
    df = pd.read_csv(scores_csv, dtype=str, keep_default_na=False)
    df["score"] = pd.to_numeric(df["score"].replace("", np.nan))
    df["truth"] = df["truth"] == "true"
    df.to_parquet(pq)
    a = read_scores_table(scores_csv)
    b = read_scores_table(pq)
    pd.testing.assert_frame_equal(a, b)
    proc = subprocess.run(
        [sys.executable, "-m", "calibrate.cli", "thresholds", str(pq), "--cost-false-accept",
         "3", "--cost-false-reject", "1", "--format", "json"],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert {r["label"] for r in json.loads(proc.stdout)} == {"scratch", "dent"}


def test_help_is_understandable():
    res = runner.invoke(app, ["thresholds", "--help"], env={"COLUMNS": "120"})
    assert res.exit_code == 0
    assert "cost-minimal threshold" in res.stdout


def test_label_names_are_text_not_markup(tmp_path):
    path = tmp_path / "scores.csv"
    path.write_text("image_id,label,score,truth\na,[bold]crack[/bold],0.9,1\nb,[bold]crack[/bold],0.1,0\n")
    res = runner.invoke(app, ["thresholds", str(path), "--cost-false-accept", "1",
                              "--cost-false-reject", "1"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "[bold]crack[/bold]" in res.stdout


def test_reimporting_corrected_scores_replaces_them(tmp_path):
    from calibrate.store import ScoreStore

    path = tmp_path / "sc.csv"
    store = tmp_path / "s.duckdb"
    path.write_text("image_id,label,score,truth\na,crack,0.9,true\nb,crack,0.2,false\n")
    assert runner.invoke(app, ["import-scores", str(path), "--store", str(store)]).exit_code == 0
    again = runner.invoke(app, ["import-scores", str(path), "--store", str(store)])
    assert again.exit_code == 0
    with ScoreStore(store) as st:
        assert len(st.runs()) == 1  # the same file again adds nothing
    path.write_text("image_id,label,score,truth\na,crack,0.1,true\nb,crack,0.95,false\n"
                    "a,dent,0.5,false\nb,dent,0.6,true\n")
    assert runner.invoke(app, ["import-scores", str(path), "--store", str(store)]).exit_code == 0
    with ScoreStore(store) as st:
        ls = st.scores("precomputed", "unknown", "crack")
        assert sorted(ls.scores.tolist()) == [0.1, 0.95]
        assert "dent" in st.labels("precomputed", "unknown")


def test_unknown_split_and_never_reported_labels(tmp_path):
    from calibrate.store import ScoreStore

    path = tmp_path / "sc.csv"
    store = tmp_path / "s.duckdb"
    # "hole" is truly present on b but the detector never reported it
    path.write_text("image_id,label,score,truth\na,crack,0.9,true\nb,crack,0.2,false\n"
                    "c,crack,0.4,false\n")
    assert runner.invoke(app, ["import-scores", str(path), "--store", str(store)]).exit_code == 0
    with ScoreStore(store) as st:
        st.add_images("sc", [__import__("calibrate").manifest.LabeledImage(
            "b", "b", frozenset({"hole"}))])
    res = runner.invoke(app, ["thresholds", "--store", str(store), "--cost-false-accept", "1",
                              "--cost-false-reject", "1", "--format", "json"])
    assert res.exit_code == 0, res.output
    rows = {r["label"]: r for r in json.loads(res.stdout)}
    assert rows["hole"]["false_accepts"] == 1 or rows["hole"]["threshold"] == "-inf"
    res = runner.invoke(app, ["thresholds", "--store", str(store), "--cost-false-accept", "1",
                              "--cost-false-reject", "1", "--split", "tset"],
                        env={"COLUMNS": "300"})
    assert res.exit_code == 2 and "no image" in res.stderr and "split 'tset'" in res.stderr
