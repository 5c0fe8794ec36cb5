import json
import xml.etree.ElementTree as ET

import pytest
from typer.testing import CliRunner

from calibrate.check import check_thresholds
from calibrate.cli import app
from calibrate.export import read_thresholds_file
from calibrate.store import ScoreStore

runner = CliRunner()

# A reasonable QC policy: a shipped defect costs 30 scrapped parts, and scrapping more
# than 20% of good parts on scratches is not acceptable.
POLICY = (
    "[defaults]\naction = \"reject\"\ncost_false_accept = 30\ncost_false_reject = 1\n"
    "[labels.scratch]\nprevalence = 0.02\nmax_false_reject_rate = 0.2\n"
)


@pytest.fixture(scope="module")
def deployed(parts_store, tmp_path_factory):
    """v1 thresholds calibrated on the calibration split."""
    _, store_path = parts_store
    folder = tmp_path_factory.mktemp("deployed")
    policy = folder / "policy.toml"
    policy.write_text(POLICY)
    path = folder / "thresholds.json"
    res = runner.invoke(app, ["thresholds", "--store", str(store_path), "--policy", str(policy),
                              "--model-version", "v1", "--split", "calibration", "-o", str(path)])
    assert res.exit_code == 0, res.output
    return path


def gate(args):
    return runner.invoke(app, ["check", *args], env={"COLUMNS": "200"})


def test_same_version_passes_and_retrained_version_fails(parts_store, deployed, tmp_path):
    _, store_path = parts_store
    ok = gate([str(deployed), "--store", str(store_path), "--model-version", "v1",
               "--split", "test"])
    assert ok.exit_code == 0, ok.output
    assert "PASSED" in ok.stdout
    junit = tmp_path / "junit.xml"
    bad = gate([str(deployed), "--store", str(store_path), "--model-version", "v2",
                "--split", "test", "--junit", str(junit)])
    assert bad.exit_code == 1, bad.output
    assert "FAILED" in bad.stdout and "false reject rate at the deployed threshold" in bad.stdout
    suite = ET.parse(junit).getroot()
    assert suite.get("tests") == "4" and int(suite.get("failures")) >= 1
    failed = {c.get("name") for c in suite.iter("testcase") if c.find("failure") is not None}
    assert "scratch" in failed


def test_report_content_is_reproducible(parts_store, deployed):
    _, store_path = parts_store
    tf = read_thresholds_file(deployed)
    with ScoreStore(store_path, read_only=True) as st:
        report = check_thresholds(tf, st, model_version="v2", split="test")
        for r in report.results:
            ls = st.scores("surface-defect", "v2", r.label, split="test")
            fires = ls.scores >= r.deployed.threshold
            # reject: a false reject is a good part that fired
            assert r.at_deployed.false_rejects == int((fires & ~ls.positive).sum())
            assert r.at_deployed.false_accepts == int((~fires & ls.positive).sum())
            assert r.ks_statistic is not None and r.ks_statistic > 0.3  # v2 moved
            assert r.median_shift_negative > 0  # good parts score higher in v2
            if r.label != "crack":  # 600 parts hold a handful of cracks
                assert r.recommended.threshold > r.deployed.threshold
    d = report.to_dict()
    assert d["passed"] is False and {x["label"] for x in d["labels"]} == {"crack", "dent", "scratch", "spot"}


def test_markdown_and_json_formats(parts_store, deployed):
    _, store_path = parts_store
    md = gate([str(deployed), "--store", str(store_path), "--model-version", "v2",
               "--format", "markdown"])
    assert md.exit_code == 1
    assert md.stdout.startswith("### calibrate check: FAILED")
    assert "| `scratch` |" in md.stdout and "**FAIL**" in md.stdout
    js = gate([str(deployed), "--store", str(store_path), "--model-version", "v1",
               "--split", "test", "--format", "json"])
    assert js.exit_code == 0
    assert json.loads(js.stdout)["passed"] is True


def test_cost_tolerance_can_fail_a_label_without_limits(parts_store, deployed):
    _, store_path = parts_store
    res = gate([str(deployed), "--store", str(store_path), "--model-version", "v2",
                "--max-cost-increase", "0.05", "--format", "json"])
    labels = {r["label"]: r for r in json.loads(res.stdout)["labels"]}
    assert not labels["dent"]["passed"]
    assert "expected cost per item rose" in " ".join(labels["dent"]["reasons"])


def test_missing_and_new_labels_fail(parts_store, deployed, tmp_path):
    _, store_path = parts_store
    data = json.loads(deployed.read_text())
    renamed = json.loads(json.dumps(data))
    renamed["labels"][0]["label"] = "fracture"  # deployed label the candidate lacks
    path = tmp_path / "renamed.json"
    path.write_text(json.dumps(renamed))
    res = gate([str(path), "--store", str(store_path), "--model-version", "v1", "--format", "json"])
    assert res.exit_code == 1
    rows = {r["label"]: r for r in json.loads(res.stdout)["labels"]}
    assert "has no scores for 'fracture'" in rows["fracture"]["reasons"][0]
    assert "has no deployed threshold" in rows[data["labels"][0]["label"]]["reasons"][0]


def test_usage_and_data_errors_exit_2(parts_store, deployed, tmp_path):
    _, store_path = parts_store
    res = gate([str(deployed), "--store", str(store_path), "--model-version", "v9"])
    assert res.exit_code == 2 and "no scores of surface-defect v9" in res.stderr
    res = gate([str(deployed), "--store", str(tmp_path / "nope.duckdb"), "--model-version", "v1"])
    assert res.exit_code == 2 and "no score store" in res.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    res = gate([str(bad), "--store", str(store_path), "--model-version", "v1"])
    assert res.exit_code == 2 and "not a calibrate thresholds file" in res.stderr
    res = gate([str(deployed), "--store", str(store_path)])
    assert res.exit_code == 2  # missing --model-version: a usage error


def _two_versions(tmp_path, v1_rows, v2_rows):
    """A store with two versions from (image_id, score, truth) rows, via import-scores."""
    import pandas as pd

    from calibrate.detectors.precomputed import import_scores

    rows = [dict(image_id=i, label="crack", score=s, truth=t, model_version="v1", detector="d")
            for i, s, t in v1_rows]
    rows += [dict(image_id=i, label="crack", score=s, truth=t, model_version="v2", detector="d")
             for i, s, t in v2_rows]
    csv = tmp_path / "scores.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    store_path = tmp_path / "s.duckdb"
    with ScoreStore(store_path) as st:
        import_scores(st, csv)
    return store_path


def _deploy(store_path, tmp_path, *extra):
    out = tmp_path / "dep.json"
    res = runner.invoke(app, ["thresholds", "--store", str(store_path), "--model-version", "v1",
                              "--cost-false-accept", "10", "--cost-false-reject", "1",
                              "-o", str(out), *extra])
    assert res.exit_code == 0, res.output
    return out


def test_cost_limit_bites_when_the_deployed_cost_was_zero(tmp_path):
    # v1 separates perfectly (cost 0); v2 misses every defect at v1's threshold.
    v1 = [(f"p{i}", 0.9, True) for i in range(10)] + [(f"n{i}", 0.1, False) for i in range(40)]
    v2 = [(f"p{i}", 0.5, True) for i in range(10)] + [(f"n{i}", 0.1, False) for i in range(40)]
    store_path = _two_versions(tmp_path, v1, v2)
    dep = _deploy(store_path, tmp_path)
    res = gate([str(dep), "--store", str(store_path), "--model-version", "v2",
                "--max-cost-increase", "0.2", "--format", "json"])
    assert res.exit_code == 1, res.output
    (row,) = json.loads(res.stdout)["labels"]
    assert "expected cost per item rose" in row["reasons"][0]


def test_another_class_mix_is_not_a_shift(tmp_path):
    # v2 has v1's scores exactly, plus copies of every negative: same rates, same
    # per-class distributions; only the labeled set's mix differs.
    pos = [(f"p{i}", 0.5 + i / 40, True) for i in range(20)]
    neg = [(f"n{i}", i / 40, False) for i in range(25)]
    extra = [(f"x{k}-{i}", s, False) for k in range(3) for i, (_, s, _) in enumerate(neg)]
    store_path = _two_versions(tmp_path, pos + neg, pos + neg + extra)
    dep = _deploy(store_path, tmp_path)
    res = gate([str(dep), "--store", str(store_path), "--model-version", "v2",
                "--max-cost-increase", "0.01", "--format", "json"])
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.stdout)["labels"]
    assert row["cost_change"] == pytest.approx(0.0, abs=1e-12)
    assert row["ks_statistic"] == pytest.approx(0.0, abs=1e-12)
