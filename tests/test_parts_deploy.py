"""Which whole-part cutoffs are deployed (``[part] deploy``) and what the exports write."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from calibrate.store import ScoreStore
from tests.parts_fixture import PARTS_POLICY, refusing_parts_policy
from tests.test_parts_cli import REVIEW_POLICY, cli

VERSIONS = ("v1", "v2")


def _inf(x) -> float:
    return float(x)


def _policy(tmp_path, base, deploy: str, name: str = "policy.toml"):
    """``base`` with ``deploy`` appended to its [part] table (the file's last table)."""
    text = base.read_text()
    assert text.rstrip().splitlines()[-1].split("#")[0].strip() and "[part]" in text
    path = tmp_path / name
    path.write_text(text + f'deploy = "{deploy}"\n')
    return path


def _thresholds(tmp_path, store, policy):
    out = tmp_path / "thresholds.json"
    proc = cli("thresholds", "--store", store, "--policy", policy, "--split", "calibration",
               "-o", out)
    assert proc.returncode == 0, proc.stderr
    return out, json.loads(out.read_text())


def _columns(store, version, labels, split="calibration"):
    with ScoreStore(store, read_only=True) as st:
        cols = [st.scores("surface-defect", version, lab, split=split) for lab in labels]
    return (np.column_stack([c.scores for c in cols]),
            np.column_stack([c.positive for c in cols]).any(axis=1))


def _export(tmp_path, target, path, version, *extra):
    out = tmp_path / f"{target}-{version}.json"
    proc = cli("export", "--to", target, path, "-o", out, "--model-version", version, *extra)
    assert proc.returncode == 0, proc.stderr
    return json.loads(out.read_text()), " ".join(proc.stderr.split())


def _exported(target, data, labels) -> dict:
    """label -> exported cutoff (never-firing labels as inf: Viam leaves them out)."""
    if target == "viam":
        values = dict(data["attributes"]["label_confidences"])
        values.update({lab: math.inf for lab in labels if lab not in values})
    else:
        values = dict(data["thresholds"])
    values.update({lab: math.inf for lab in data.get("never_fire", [])})
    return {lab: float(v) for lab, v in values.items()}


@pytest.fixture(scope="module")
def joint_run(parts_store, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("deploy-joint")
    policy = _policy(tmp, PARTS_POLICY, "joint")
    return tmp, *_thresholds(tmp, parts_store[1], policy)


@pytest.mark.parametrize("target", ["alibaba-imm", "viam"])
def test_exported_joint_cutoffs_make_the_joint_part_decisions(joint_run, parts_store, target):
    """Round trip: the exported (rounded) cutoffs, applied to the store's calibration
    scores part by part, scrap and ship exactly the parts the recorded joint row counts."""
    tmp, path, data = joint_run
    changed = 0
    for version in VERSIONS:
        part = next(p for p in data["parts"] if p["model_version"] == version)
        assert part["deploy"] == "joint" and part["deployed"]["row"] == "joint"
        joint = next(r for r in part["rows"] if r["name"] == "joint")["calibration"]
        exported, notes = _export(tmp, target, path, version)
        labels = part["labels"]
        exported = _exported(target, exported, labels)
        assert set(exported) == set(labels)
        own = {e["label"]: _inf(e["threshold"]) for e in data["labels"]
               if e["model_version"] == version}
        changed += sum(_inf(joint["reject_cutoffs"][lab]) != own[lab] for lab in labels)
        s, defective = _columns(parts_store[1], version, labels)
        scrap = (s >= np.array([exported[lab] for lab in labels])).any(axis=1)
        assert int((scrap & ~defective).sum()) == joint["false_rejects"]
        assert int((~scrap & defective).sum()) == joint["false_accepts"]
        # ... and part by part, not only in count: the recorded joint cutoffs' outcomes.
        recorded = (s >= np.array([_inf(joint["reject_cutoffs"][lab]) for lab in labels]))
        assert np.array_equal(scrap, recorded.any(axis=1))
        assert "exported the joint cutoffs" in notes and 'deploy = "joint"' in notes
    assert changed, "the joint cutoffs equal the per-label ones: the test shows nothing"


def test_per_label_default_exports_each_labels_own_cutoff(parts_store, tmp_path):
    path, data = _thresholds(tmp_path, parts_store[1], PARTS_POLICY)
    assert {p["deploy"] for p in data["parts"]} == {"per_label"}
    exported, notes = _export(tmp_path, "alibaba-imm", path, "v2")
    own = {e["label"]: _inf(e["threshold"]) for e in data["labels"] if e["model_version"] == "v2"}
    s, _ = _columns(parts_store[1], "v2", sorted(own))
    got = _exported("alibaba-imm", exported, sorted(own))
    for j, lab in enumerate(sorted(own)):  # same decisions as the label's own cutoff
        assert np.array_equal(s[:, j] >= got[lab], s[:, j] >= own[lab])
    assert "exported the" not in notes


def test_a_review_band_exports_its_reject_cutoff_and_says_the_band_is_lost(parts_store,
                                                                          tmp_path):
    policy = _policy(tmp_path, REVIEW_POLICY, "review_band")
    path, data = _thresholds(tmp_path, parts_store[1], policy)
    part = next(p for p in data["parts"] if p["model_version"] == "v2")
    dep = part["deployed"]
    assert dep["row"] == "review band" and dep["review_cutoffs"] is not None
    band = next(r for r in part["rows"] if r["name"] == "review band")["calibration"]
    assert dep["reject_cutoffs"] == band["reject_cutoffs"]
    assert dep["review_cutoffs"] == band["review_cutoffs"]
    lost = [lab for lab in part["labels"]
            if _inf(dep["review_cutoffs"][lab]) < _inf(dep["reject_cutoffs"][lab])]
    assert lost, "the fixture's band reviews no label: the note cannot be tested"
    exported, notes = _export(tmp_path, "alibaba-imm", path, "v2")
    assert "review band is lost" in notes and "REJECT cutoff T_high" in notes
    for lab in lost:
        assert f"{lab} (" in notes.split("review band is lost")[1]
    assert "review band is lost" in " ".join(exported["notes"])
    labels = part["labels"]
    got = _exported("alibaba-imm", exported, labels)
    s, defective = _columns(parts_store[1], "v2", labels)
    scrap = (s >= np.array([got[lab] for lab in labels])).any(axis=1)
    high = np.array([_inf(dep["reject_cutoffs"][lab]) for lab in labels])
    assert np.array_equal(scrap, (s >= high).any(axis=1))  # the band's reject decisions
    assert int((scrap & ~defective).sum()) == band["false_rejects"]
    # The generic export keeps both cutoffs per label, and says where.
    out = tmp_path / "generic.json"
    proc = cli("export", "--to", "thresholds", path, "-o", out)
    assert proc.returncode == 0, proc.stderr
    generic = json.loads(out.read_text())
    gpart = next(p for p in generic["parts"] if p["model_version"] == "v2")
    assert gpart["deployed"]["review_cutoffs"] == dep["review_cutoffs"]
    assert gpart["deployed"]["reject_cutoffs"] == dep["reject_cutoffs"]
    assert "T_low and T_high" in " ".join(proc.stderr.split())


def test_a_refused_label_is_not_exported_at_its_joint_cutoff(parts_store, tmp_path):
    """Decision: the joint cutoffs never override a per-label refusal; the refused label
    stays out of the map (exit 1, as for any refusal) and a note says the line then
    differs from the joint figures."""
    policy = _policy(tmp_path, refusing_parts_policy(tmp_path), "joint")
    path, data = _thresholds(tmp_path, parts_store[1], policy)
    refused = {e["label"] for e in data["labels"]
               if e["model_version"] == "v2" and e.get("decision") == "refuse"}
    assert refused == {"crack"}
    out = tmp_path / "imm.json"
    proc = cli("export", "--to", "alibaba-imm", path, "-o", out, "--model-version", "v2")
    assert proc.returncode == 1, proc.stderr
    exported = json.loads(out.read_text())
    assert "crack" not in exported["thresholds"] and "crack" in exported["refused"]
    part = next(p for p in data["parts"] if p["model_version"] == "v2")
    if not math.isinf(_inf(part["deployed"]["reject_cutoffs"]["crack"])):
        assert "its own policy refuses it" in " ".join(proc.stderr.split())
    for lab in set(part["labels"]) - refused:
        assert math.isclose(float(exported["thresholds"][lab]),
                            _inf(part["deployed"]["reject_cutoffs"][lab]), rel_tol=1e-3)


@pytest.mark.parametrize("value, needle", [("sideways", "deploy must be one of"),
                                           ("review_band", "needs review_cost")])
def test_a_bad_deploy_value_exits_2_naming_the_line(parts_store, tmp_path, value, needle):
    policy = _policy(tmp_path, PARTS_POLICY, value)
    proc = cli("thresholds", "--store", parts_store[1], "--policy", policy)
    assert proc.returncode == 2
    n = len(policy.read_text().splitlines())
    assert f"policy.toml:{n}" in proc.stderr and needle in " ".join(proc.stderr.split())
    assert "Traceback" not in proc.stderr


def test_json_output_and_summary_carry_the_part_figures(joint_run, parts_store, tmp_path):
    tmp, _, data = joint_run
    policy = tmp / "policy.toml"
    proc = cli("thresholds", "--store", parts_store[1], "--policy", policy, "--split",
               "calibration", "--format", "json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["parts_skipped"] is None and len(out["labels"]) == len(data["labels"])
    assert len(out["parts"]) == len(data["parts"])
    for got, recorded in zip(out["parts"], data["parts"]):
        assert got["deployed"]["reject_cutoffs"] == recorded["deployed"]["reject_cutoffs"]
        for r, rr in zip(got["rows"], recorded["rows"]):
            assert r["calibration"]["false_rejects"] == rr["calibration"]["false_rejects"]
            assert r["held_out"]["false_accepts"] == rr["held_out"]["false_accepts"]
    for p in out["parts"]:
        assert [r["name"] for r in p["rows"]] == ["per-label", "joint"]
        for r in p["rows"]:
            for figs in (r["calibration"], r["held_out"]):
                for key in ("false_rejects", "false_accepts", "expected_cost",
                            "line_scrap_fraction"):
                    assert key in figs
    rep = tmp_path / "report"
    proc = cli("report", "--store", parts_store[1], "--policy", policy, "--split",
               "calibration", "--out", rep)
    assert proc.returncode == 0, proc.stderr
    md = (rep / "summary.md").read_text()
    for version in VERSIONS:
        block = md.split(f"Whole parts, surface-defect {version}")[1]
        for word in ("**per-label**", "**joint** (deployed)", "held-out: test",
                     'deploy = "joint"', "good parts scrapped", "cost / part"):
            assert word in block, word
        joint = next(p for p in data["parts"] if p["model_version"] == version)["rows"][1]
        f = joint["calibration"]
        assert f"{f['false_rejects']:,} of {f['n_good']:,}" in block


def test_an_accept_label_skips_the_part_figures_with_a_notice(parts_store, tmp_path):
    text = PARTS_POLICY.read_text().replace("[labels.dent]\n",
                                            '[labels.dent]\naction = "accept"\n')
    policy = tmp_path / "policy.toml"
    policy.write_text(text)
    proc = cli("thresholds", "--store", parts_store[1], "--policy", policy, "--split",
               "calibration", width=200)
    assert proc.returncode == 0, proc.stderr
    flat = " ".join(proc.stdout.split())
    assert "no whole-part figures" in flat and "dent act(s)" in flat
    assert "Whole parts," not in flat
    proc = cli("thresholds", "--store", parts_store[1], "--policy", policy, "--split",
               "calibration", "--format", "json")
    out = json.loads(proc.stdout)
    assert out["parts"] == [] and "dent" in out["parts_skipped"]
    rep = tmp_path / "report"
    proc = cli("report", "--store", parts_store[1], "--policy", policy, "--split",
               "calibration", "--out", rep)
    assert proc.returncode == 0, proc.stderr
    assert "no whole-part figures" in (rep / "summary.md").read_text()
    assert "no whole-part figures" in (rep / "index.html").read_text()
