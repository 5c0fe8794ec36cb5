"""Decisions a QC engineer can trust, on real files: unmet limits are decisions, held-out
figures stand beside calibration figures, and nothing is assumed in silence."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from calibrate import choose_threshold
from calibrate.cli import app
from calibrate.errors import InputError
from calibrate.policy import Policy, PolicyError, load_policy_file
from calibrate.store import ScoreStore
from calibrate.thresholds import choose_thresholds_from_store
from calibrate.curves import error_curve
from calibrate.workflow import choose_from_store
from tests.parts_fixture import build_parts_store, refusing_parts_policy
from tests.reference import cp_upper

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
POLICY = "datasets/parts-policy.toml"


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    _, store = build_parts_store(tmp_path_factory.mktemp("parts"), n_parts=400)
    return store


def _unprovable():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(40, bool), np.zeros(400, bool)]
    s = np.r_[rng.normal(2, 1, 40), rng.normal(0, 1, 400)]
    return s, y


@pytest.mark.parametrize("decision", ["cost_optimal", "protective", "never_fire"])
def test_the_policy_chooses_what_an_unproven_label_deploys(decision):
    s, y = _unprovable()
    c = choose_threshold(s, y, cost_false_accept=20, cost_false_reject=1,
                         max_false_accept_rate=0.001)
    assert c.decision == "refuse" and not c.deployable and not c.needs_sign_off
    p = Policy(20, 1, max_false_accept_rate=0.001, if_limit_unproven=decision)
    from calibrate.thresholds import choose_threshold_from_curve
    signed = choose_threshold_from_curve(error_curve(s, y), p)
    assert signed.decision == decision and signed.deployable and signed.needs_sign_off
    assert signed.threshold == signed.option(decision).threshold
    assert signed.expected_cost == pytest.approx(signed.option(decision).expected_cost)
    assert "needs sign-off" in signed.explanation
    # The options are the real alternatives: cost-optimal is the cheapest of all.
    costs = {o.name: o.choice.expected_cost for o in signed.options}
    assert costs["cost_optimal"] == min(costs.values())
    assert signed.option("never_fire").threshold == np.inf
    assert signed.option("protective").false_accepts == 0  # catches every positive seen


def test_if_limit_unproven_is_checked():
    with pytest.raises(PolicyError, match="if_limit_unproven must be one of") as info:
        Policy(1, 1, if_limit_unproven="fallback")
    assert info.value.key == "if_limit_unproven"


def test_held_out_figures_are_exact_at_the_chosen_threshold(parts):
    with ScoreStore(parts, read_only=True) as st:
        results = choose_thresholds_from_store(st, load_policy_file(POLICY), split="calibration")
        for r in results:
            assert r.held_out_split == "test" and r.held_out is not None
            table = st.count_table(r.detector, r.model_version, r.label, split="test")
            t = r.choice.threshold
            fires = table.scores >= t
            fn = int(table.n_positive[~fires].sum())
            fp = int(table.n_negative[fires].sum())
            h = r.held_out
            assert h.threshold == t
            assert (h.false_accepts, h.false_rejects) == (fn, fp)  # reject: FA = missed
            assert h.false_accept_rate_upper == pytest.approx(
                cp_upper(fn, h.n_positive, 0.95), rel=1e-9)
            assert h.n_positive == int(table.n_positive.sum())
        none = choose_thresholds_from_store(st, load_policy_file(POLICY), split="calibration",
                                            held_out="")
        assert all(r.held_out is None and r.held_out_split is None for r in none)
        with pytest.raises(InputError, match="unknown held-out split 'tst'.*calibration, test"):
            choose_thresholds_from_store(st, load_policy_file(POLICY), split="calibration",
                                         held_out="tst")
        with pytest.raises(InputError, match="must be another one"):
            choose_thresholds_from_store(st, load_policy_file(POLICY), split="test",
                                         held_out="test")


def test_held_out_flags_name_disagreements(parts):
    with ScoreStore(parts, read_only=True) as st:
        results = choose_thresholds_from_store(st, load_policy_file(POLICY), split="calibration")
    crack = [r for r in results if r.label == "crack"]
    for r in crack:
        if r.held_out.false_accepts:  # a crack shipped on test: the 0.1% limit is broken
            assert any("breaks the limit 0.1%" in f for f in r.held_out_flags)


def test_cli_table_and_json_show_held_out_beside_calibration(parts, tmp_path):
    refusing = str(refusing_parts_policy(tmp_path))
    res = runner.invoke(app, ["thresholds", "--store", str(parts), "--policy", refusing,
                              "--split", "calibration"], env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    assert "on test" in res.stdout and "not adjusted" in res.stdout
    assert "refused: crack" in res.stdout
    # At 80 columns in a real terminal-sized process, nothing runs past the edge.
    env = {**os.environ, "COLUMNS": "80", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "calibrate.cli", "thresholds", "--store",
                           str(parts), "--policy", POLICY, "--split", "calibration"],
                          capture_output=True, text=True, env=env, cwd=ROOT, check=True)
    assert max(len(line) for line in proc.stdout.splitlines()) <= 80
    assert "crack" in proc.stdout and "on test" in proc.stdout
    res = runner.invoke(app, ["thresholds", "--store", str(parts), "--policy", refusing,
                              "--split", "calibration", "--format", "json"])
    out = json.loads(res.stdout)  # a [part] policy: label rows beside the part figures
    assert {p["model_version"] for p in out["parts"]} == {"v1", "v2"}
    rows = out["labels"]
    for row in rows:
        assert row["held_out"]["split"] == "test"
        assert row["held_out"]["threshold"] == row["threshold"]
    crack = [r for r in rows if r["label"] == "crack"]
    assert all(r["decision"] == "refuse" and r["deployable"] is False for r in crack)
    assert {o["name"] for o in crack[0]["options"]} >= {"cost_optimal", "never_fire"}


def test_no_held_out_split_is_said_once(parts):
    res = runner.invoke(app, ["thresholds", "--store", str(parts), "--policy", POLICY])
    assert res.exit_code == 0, res.output
    assert res.stdout.count("No held-out split") == 1


@pytest.mark.parametrize("args, message", [
    (["--model-version", "v9"], "unknown model version 'v9'"),
    (["--detector", "nope"], "unknown detector 'nope'"),
    (["--label", "crak"], "unknown label(s) 'crak'"),
    (["--split", "tst"], "unknown split 'tst'"),
])
def test_unknown_filters_name_themselves(parts, args, message):
    res = runner.invoke(app, ["thresholds", "--store", str(parts), "--policy", POLICY, *args])
    assert res.exit_code == 2
    assert message in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) <= 3


def test_a_policy_table_matching_no_label_is_an_error(parts, tmp_path):
    policy = tmp_path / "typo.toml"
    policy.write_text('[defaults]\ncost_false_accept = 50\ncost_false_reject = 1\n\n'
                      '[labels.crak]\nmax_false_accept_rate = 0.001\n')
    res = runner.invoke(app, ["thresholds", "--store", str(parts), "--policy", str(policy)])
    assert res.exit_code == 2
    assert f"{policy}:5" in res.output and "matches no label" in res.output
    assert "crack, dent, scratch, spot" in res.output


def test_a_missing_prevalence_is_stated(parts, tmp_path):
    policy = tmp_path / "p.toml"
    policy.write_text('[defaults]\ncost_false_accept = 50\ncost_false_reject = 1\n'
                      '[labels.dent]\nprevalence = 0.01\n')
    outcome = choose_from_store(parts, load_policy_file(policy), model_version="v2",
                                split="calibration")
    said = " ".join(outcome.notices)
    assert "dent" not in said
    for label in ("crack", "scratch", "spot"):
        assert f"{label} (surface-defect v2): no prevalence in the policy" in said
    res = runner.invoke(app, ["thresholds", "--store", str(parts), "--policy", str(policy),
                              "--model-version", "v2", "--split", "calibration"],
                        env={"COLUMNS": "200"})
    # Words may wrap wherever the temporary path pushed them.
    assert "cost uses the sample's" in " ".join(res.stdout.split())


def test_only_fire_on_everything_is_said_plainly():
    s = np.array([0.9, 0.8, 0.1])
    y = np.array([False, False, True])
    c = choose_threshold(s, y, cost_false_accept=1, cost_false_reject=100,
                         max_false_accept_rate=0.5, confidence=0.5)
    assert c.limits_met and c.threshold == 0.1 and c.false_rejects == 2
    assert "Only firing on every item meets the limits: every item is rejected" in c.explanation


def test_the_bundled_policy_signs_off_crack_explicitly(parts):
    policies = load_policy_file(POLICY)
    assert policies.labels["crack"]["if_limit_unproven"] == "cost_optimal"
    with ScoreStore(parts, read_only=True) as st:
        results = choose_thresholds_from_store(st, policies, split="calibration")
    for r in (r for r in results if r.label == "crack"):
        c = r.choice
        assert not c.limits_met and c.decision == "cost_optimal" and c.needs_sign_off
        assert c.threshold == c.option("cost_optimal").threshold
