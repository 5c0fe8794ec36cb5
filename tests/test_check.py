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
