"""Whole-part figures through the real command line on the parts fixture."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from calibrate.store import ScoreStore
from tests.parts_fixture import PARTS_POLICY

ROOT = Path(__file__).resolve().parents[1]
REVIEW_POLICY = ROOT / "datasets" / "parts-review-policy.toml"


def cli(*args, width: int = 80) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": str(width), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "calibrate.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=ROOT, check=False)


@pytest.fixture(scope="module")
def review_run(parts_store, tmp_path_factory):
    _, store = parts_store
    path = tmp_path_factory.mktemp("parts-cli") / "thresholds.json"
    proc = cli("thresholds", "--store", store, "--policy", REVIEW_POLICY, "--split",
               "calibration", "-o", path)
    assert proc.returncode == 0, proc.stderr
    return proc, json.loads(path.read_text())


def _inf(x):
    return math.inf if x == "inf" else (-math.inf if x == "-inf" else float(x))


def test_thresholds_show_what_the_line_scraps_and_ships(review_run):
    proc, _ = review_run
    out = proc.stdout
    assert not [line for line in out.splitlines() if len(line) > 80
                and not line.startswith("thresholds file written")]
    for version in ("v1", "v2"):
        block = out.split(f"Whole parts, surface-defect {version}")[1]
        for row in ("per-label", "joint", "review band", "on test", "good parts scrapped",
                    "defective parts shipped",
                    "not provably optimal", "held-out bound"):
            assert row in " ".join(block.split()), row
        # The row the policy deploys (per_label by default) is marked, once per table.
        assert "per-label *" in block and "joint *" not in block
        assert 'deployed (the policy\'s deploy = "per_label")' in " ".join(block.split())


def test_recorded_part_figures_are_reproduced_from_the_store(review_run, parts_store):
    """Every recorded count is recomputed here from the store's scores by brute force."""
    _, data = review_run
    _, store = parts_store
    assert {(p["detector"], p["model_version"]) for p in data["parts"]} == {
        ("surface-defect", "v1"), ("surface-defect", "v2")}
    with ScoreStore(store, read_only=True) as st:
        for p in data["parts"]:
            labels = p["labels"]
            for split, key in (("calibration", "calibration"), ("test", "held_out")):
                cols = [st.scores(p["detector"], p["model_version"], lab, split=split)
                        for lab in labels]
                s = np.column_stack([c.scores for c in cols])
                y = np.column_stack([c.positive for c in cols])
                defective = y.any(axis=1)
                for row in p["rows"]:
                    f = row[key]
                    high = np.array([_inf(f["reject_cutoffs"][lab]) for lab in labels])
                    low = high if "review_cutoffs" not in f else np.array(
                        [_inf(f["review_cutoffs"][lab]) for lab in labels])
                    scrap = (s >= high).any(axis=1)
                    review = ~scrap & (s >= low).any(axis=1)
                    ship = ~scrap & ~review
                    assert f["false_accepts"] == int((ship & defective).sum())
                    assert f["false_rejects"] == int((scrap & ~defective).sum())
                    assert f["n_review"] == int(review.sum())
                    assert f["n_good"] == int((~defective).sum())


def test_joint_is_at_least_as_cheap_and_the_review_band_keeps_its_capacity(review_run):
    _, data = review_run
    for p in data["parts"]:
        rows = {r["name"]: r for r in p["rows"]}
        per_label = rows["per-label"]["calibration"]
        joint = rows["joint"]["calibration"]
        band = rows["review band"]["calibration"]
        # The joint search starts from the per-label cutoffs: never worse than them, and
        # it meets the part-level limit even where they do not (600 parts here).
        assert joint["limits_met"]
        if per_label["limits_met"]:
            assert joint["expected_cost"] <= per_label["expected_cost"] + 1e-12
        assert band["expected_cost"] <= joint["expected_cost"] + 1e-12
        assert band["line_review_fraction"] <= p["policy"]["max_review_fraction"] + 1e-12
        assert band["limits_met"]
        for lab in p["labels"]:  # accept < T_low <= review < T_high <= reject
            assert _inf(band["review_cutoffs"][lab]) <= _inf(band["reject_cutoffs"][lab])
        assert rows["joint"]["exact"] is False
        assert "not provably optimal" in rows["joint"]["method"]


def test_a_bad_part_key_exits_2_naming_the_line(tmp_path, parts_store):
    _, store = parts_store
    bad = tmp_path / "policy.toml"
    bad.write_text(PARTS_POLICY.read_text() + "max_review_fraction = 0.1\n")
    proc = cli("thresholds", "--store", store, "--policy", bad)
    assert proc.returncode == 2
    n = len(bad.read_text().splitlines())
    assert f"policy.toml:{n}" in proc.stderr and "review_cost" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_check_shows_part_level_figures_beside_the_per_label_ones(review_run, parts_store,
                                                                  tmp_path):
    _, data = review_run
    _, store = parts_store
    path = tmp_path / "thresholds.json"
    path.write_text(json.dumps(data))
    args = ("check", path, "--store", store, "--model-version", "v2",
            "--deployed-version", "v1", "--split", "test")
    proc = cli(*args, "--format", "json")
    assert proc.returncode in (0, 1, 3), proc.stderr
    parts = json.loads(proc.stdout)["parts"]
    deployed = {e["label"]: _inf(e["threshold"]) for e in data["labels"]
                if e["model_version"] == "v1"}
    with ScoreStore(store, read_only=True) as st:
        cols = {lab: st.scores("surface-defect", "v2", lab, split="test") for lab in deployed}
    fired = np.column_stack([cols[lab].scores >= t for lab, t in deployed.items()]).any(axis=1)
    defective = np.column_stack([c.positive for c in cols.values()]).any(axis=1)
    assert parts["candidate"]["false_rejects"] == int((fired & ~defective).sum())
    assert parts["candidate"]["false_accepts"] == int((~fired & defective).sum())
    v1 = next(p for p in data["parts"] if p["model_version"] == "v1")
    assert parts["deployed"] == v1["rows"][0]["calibration"]
    text = cli(*args).stdout
    assert "Whole parts at the deployed cutoffs on v2" in " ".join(text.split())


def test_joint_cutoffs_are_never_dearer_than_the_per_label_ones(parts_store):
    """Done-when of issue 16 on the parts fixture, both versions, through the Python API
    the CLI uses: without part-level limits the joint choice starts from the per-label
    cutoffs (which meet their own limits), so it can only be cheaper per part."""
    from calibrate import load_policy_file
    from calibrate.parts import part_decisions_from_store
    from calibrate.thresholds import choose_thresholds_from_store

    policies = load_policy_file(PARTS_POLICY)
    policies = type(policies)(policies.defaults, policies.labels, policies.source,
                              part={"cost_false_accept": 50, "cost_false_reject": 1})
    _, store = parts_store
    with ScoreStore(store, read_only=True) as st:
        results = choose_thresholds_from_store(st, policies, split="calibration")
        decisions = part_decisions_from_store(st, results, policies, split="calibration")
    assert [d.model_version for d in decisions] == ["v1", "v2"]
    for d in decisions:
        per_label, joint = d.row("per-label"), d.row("joint")
        assert joint.calibration.expected_cost <= per_label.calibration.expected_cost
        assert joint.held_out is not None and d.held_out_split == "test"
