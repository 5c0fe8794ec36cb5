import json
import math
import os
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from calibrate import InputError, Policy
from calibrate.cli import app
from calibrate.export import (
    ThresholdsFile,
    export_to,
    read_thresholds_file,
    thresholds_file_from_results,
    write_thresholds_file,
)
from calibrate.export import viam as viam_export
from calibrate.export.rounding import decision_safe, shortest_safe
from calibrate.export.thresholds_file import ThresholdEntry
from calibrate.store import ScoreStore
from calibrate.thresholds import PolicySet, choose_thresholds_from_store

runner = CliRunner()
POLICY = PolicySet(
    {"action": "reject", "cost_false_accept": 30, "cost_false_reject": 1},
    {"scratch": {"prevalence": 0.02, "max_false_reject_rate": 0.2}},
)


@pytest.fixture(scope="module")
def tf_v1(parts_store):
    _, store_path = parts_store
    with ScoreStore(store_path, read_only=True) as st:
        results = choose_thresholds_from_store(st, POLICY, model_version="v1")
        datasets = {(r.detector, r.model_version): (r.dataset, r.dataset_fingerprint)
                    for r in st.runs().itertuples()}
    return thresholds_file_from_results(results, source=str(store_path), datasets=datasets)


def entry(label="defect", threshold=0.5, below=0.4, detector="det", version="v1", **kw):
    base = dict(
        label=label, detector=detector, model_version=version, threshold=threshold,
        next_score_below=below, action="reject",
        policy=Policy(cost_false_accept=10, cost_false_reject=1), n_positive=10,
        n_negative=90, false_accepts=1, false_rejects=5, false_accept_rate=0.1,
        false_accept_rate_upper=0.39, false_reject_rate=5 / 90,
        false_reject_rate_upper=0.11, expected_cost=0.15, prevalence=0.1, limits_met=True,
    )
    base.update(kw)
    return ThresholdEntry(**base)


# -- thresholds file -------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".toml"])
def test_thresholds_file_round_trip(tmp_path, tf_v1, suffix):
    path = write_thresholds_file(tf_v1, tmp_path / f"t{suffix}")
    back = read_thresholds_file(path)
    assert back.entries == tf_v1.entries
    assert back.tool_version == tf_v1.tool_version and back.created_at == tf_v1.created_at
    e = back.get("scratch")
    assert e.policy.max_false_reject_rate == 0.2 and e.dataset == "parts"
    assert e.dataset_fingerprint.startswith("sha256:")


def test_infinite_thresholds_survive_json(tmp_path):
    tf = ThresholdsFile((entry(threshold=math.inf, below=0.99), entry("b", -math.inf, -math.inf)))
    back = read_thresholds_file(write_thresholds_file(tf, tmp_path / "t.json"))
    assert back.get("defect").threshold == math.inf and back.get("b").threshold == -math.inf
    assert '"inf"' in (tmp_path / "t.json").read_text()


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d.update(format="other"), "not a calibrate thresholds file"),
        (lambda d: d["labels"][0].pop("threshold"), r"labels\[0\] \(defect\): missing key\(s\) threshold"),
        (lambda d: d["labels"][0].update(threshold="high"), r"labels\[0\] \(defect\).threshold must be a number"),
        (lambda d: d["labels"][0].update(n_positive="ten"), r"n_positive must be int"),
        (lambda d: d["labels"][0]["policy"].update(cost_false_accept=-1), r"policy: cost_false_accept"),
        (lambda d: d["labels"][0].update(colour="red"), r"unknown key\(s\) colour"),
        (lambda d: d["labels"].append(dict(d["labels"][0])), "a second entry"),
    ],
)
def test_thresholds_file_validation_names_entry_and_key(tmp_path, mutate, match):
    path = write_thresholds_file(ThresholdsFile((entry(),)), tmp_path / "t.json")
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))
    with pytest.raises(InputError, match=match) as info:
        read_thresholds_file(path)
    assert str(path) in str(info.value)


# -- decision-safe rounding ------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=30, unique=True),
       st.integers(0, 29), st.integers(0, 6))
def test_rounding_never_changes_a_decision_when_it_says_exact(values, i, decimals):
    scores = np.array(sorted(values))
    i = i % scores.size
    t = float(scores[i])
    below = float(scores[i - 1]) if i > 0 else -math.inf
    v = decision_safe(t, below, decimals)
    assert v.value == round(v.value, decimals)
    if v.exact:
        assert np.array_equal(scores >= t, scores >= v.value)
    else:
        assert "changes decisions" in v.note
    s = shortest_safe(t, below)
    assert s.exact and np.array_equal(scores >= t, scores >= s.value)
    assert len(repr(s.value)) <= len(repr(t))


def test_rounding_picks_a_representable_value_inside_the_gap():
    v = decision_safe(0.12346, 0.12331, 4)  # plain rounding 0.1235 > T would drop T
    assert v.exact and v.value == 0.1234 and "keeps them" in v.note
    w = decision_safe(0.123456, 0.123455, 4)  # no 4-decimal value in the gap
    assert not w.exact and "changes decisions" in w.note
    # the safe value closest to T, not the one closest to the score below it
    assert decision_safe(0.876, 0.5, 2).value == 0.87
    assert shortest_safe(0.87, 0.12).value == 0.87
    assert shortest_safe(0.18702547321377405, 0.18).value == 0.187
    assert shortest_safe(0.18702547321377405, 0.18702).value == 0.187025


# -- round trips: exported config reproduces the decisions on the stored scores --------


def _decisions(store, e, threshold):
    ls = store.scores(e.detector, e.model_version, e.label)
    return ls.scores >= threshold


def test_every_exporter_reproduces_the_decisions(parts_store, tf_v1, tmp_path):
    _, store_path = parts_store
    # surface-defect scores 0-1, so Rekognition (0-100) refuses it; a detector of unknown
    # scale is written as it is, with a note, and must keep every decision too.
    unknown = ThresholdsFile(tuple(replace(e, detector="my-plugin") for e in tf_v1.entries))
    with ScoreStore(store_path, read_only=True) as st:
        frag = export_to("viam", tf_v1, tmp_path / "viam.json", store=st, service="det")
        viam_lc = json.loads((tmp_path / "viam.json").read_text())["attributes"]["label_confidences"]
        res = export_to("rekognition", unknown, tmp_path / "rek.json")
        assert any("does not know this detector's scale" in w for w in res.warnings)
        rek = json.loads((tmp_path / "rek.json").read_text())["MinConfidence"]
        export_to("alibaba-imm", tf_v1, tmp_path / "imm.json")
        imm = json.loads((tmp_path / "imm.json").read_text())["thresholds"]
        assert frag.warnings == [] or all("never fire" not in w for w in frag.warnings)
        for e in tf_v1.entries:
            want = _decisions(st, e, e.threshold)
            for exported in (viam_lc, rek, imm):
                got = _decisions(st, e, exported[e.label])
                assert np.array_equal(want, got), (e.label, exported[e.label], e.threshold)
                # short where that keeps the decisions, never longer than the float
                assert len(repr(exported[e.label])) <= len(repr(e.threshold))


def test_viam_never_fire_is_written_by_leaving_the_label_out():
    tf = ThresholdsFile((entry("scratch", math.inf, 0.97), entry("dent", 0.4, 0.3)))
    exp = viam_export.label_confidences(tf, emitted_labels=["scratch", "dent", "spot"])
    assert exp.label_confidences == {"dent": 0.4, "spot": 0.0}
    assert "scratch" in exp.dropped
    assert any("spot" in w and "no calibrated threshold" in w for w in exp.warnings)
    exp2 = viam_export.label_confidences(tf, emitted_labels=["spot"], uncalibrated="drop",)
    assert "spot" in exp2.dropped and "spot" not in exp2.label_confidences


def test_viam_refuses_an_all_never_fire_map():
    # An empty label_confidences means "unset" to Viam: it would keep everything.
    tf = ThresholdsFile((entry("scratch", math.inf, 0.97),))
    with pytest.raises(InputError, match="treats an empty label_confidences as unset"):
        viam_export.label_confidences(tf)


def test_viam_refuses_labels_differing_only_in_case():
    tf = ThresholdsFile((entry("Scratch", 0.5, 0.4),))
    with pytest.raises(InputError, match="differ only in case"):
        viam_export.label_confidences(tf, emitted_labels=["scratch"])


def test_viam_refuses_several_versions():
    tf = ThresholdsFile((entry(version="v1"), entry(version="v2")))
    with pytest.raises(InputError, match="one model"):
        viam_export.label_confidences(tf)


MACHINE = {
    "components": [
        {"name": "cam", "api": "rdk:component:camera", "model": "webcam",
         "attributes": {"video_path": "video0"}},
        {"name": "arm", "api": "rdk:component:arm", "model": "fake", "attributes": {}},
    ],
    "services": [
        {"name": "tflite", "api": "rdk:service:mlmodel", "model": "tflite_cpu",
         "attributes": {"model_path": "/models/defects.tflite", "label_path": "/models/labels.txt"}},
        {"name": "defects", "namespace": "rdk", "type": "vision", "model": "mlmodel",
         "attributes": {"mlmodel_name": "tflite", "default_minimum_confidence": 0.5,
                        "remap_output_names": {"a": "b"}}},
        {"name": "colors", "api": "rdk:service:vision", "model": "color_detector",
         "attributes": {"detect_color": "#a3b2c1", "hue_tolerance_pct": 0.06}},
    ],
    "modules": [],
    "network": {"bind_address": ":8080"},
}


def test_viam_merge_keeps_everything_else_and_its_order(tmp_path, tf_v1):
    path = tmp_path / "machine.json"
    path.write_text(json.dumps(MACHINE, indent=4) + "\n")
    res = export_to("viam", tf_v1, None, machine_config=path, service="defects")
    after = json.loads(path.read_text())
    svc = after["services"][1]
    assert list(svc) == ["name", "namespace", "type", "model", "attributes"]
    assert list(svc["attributes"]) == ["mlmodel_name", "default_minimum_confidence",
                                       "remap_output_names", "label_confidences"]
    assert set(svc["attributes"]["label_confidences"]) == {e.label for e in tf_v1.entries}
    del svc["attributes"]["label_confidences"]
    assert after == MACHINE  # nothing else changed
    assert path.read_text().startswith("{\n    \"components\"")  # indentation kept
    assert "+" in res.diff and "label_confidences" in res.diff


def test_viam_merge_dry_run_and_errors(tmp_path, tf_v1):
    path = tmp_path / "machine.json"
    text = json.dumps(MACHINE, indent=2) + "\n"
    path.write_text(text)
    res = export_to("viam", tf_v1, None, machine_config=path, service="defects", dry_run=True)
    assert res.diff and path.read_text() == text
    with pytest.raises(InputError, match="not an ML-model vision service"):
        export_to("viam", tf_v1, None, machine_config=path, service="colors")
    with pytest.raises(InputError, match="no service named 'nope'.*tflite, defects, colors"):
        export_to("viam", tf_v1, None, machine_config=path, service="nope")
    path.write_text("{\n  \"services\": [,]\n}")
    with pytest.raises(InputError, match=r"machine.json:2:\d+: not valid JSON"):
        export_to("viam", tf_v1, None, machine_config=path, service="defects")


def test_a_failure_mid_write_leaves_the_old_config_intact(tmp_path, tf_v1, monkeypatch):
    path = tmp_path / "machine.json"
    text = json.dumps(MACHINE, indent=2) + "\n"
    path.write_text(text)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        export_to("viam", tf_v1, None, machine_config=path, service="defects")
    assert path.read_text() == text
    assert [p.name for p in tmp_path.iterdir()] == ["machine.json"]  # no temp file left


def test_rekognition_custom_labels_call_level_floor():
    tf = ThresholdsFile((
        entry("bolt", 87.1234567, 80.0, detector="rekognition-custom-labels", version="arn:1"),
        entry("nut", 55.5, 54.0, detector="rekognition-custom-labels", version="arn:1"),
    ))
    from calibrate.export.rekognition import min_confidence_map

    m = min_confidence_map(tf)
    assert m["MinConfidence"] == {"bolt": 87.12, "nut": 55.5}  # 2 decimals on the 0-100 scale
    assert m["CallMinConfidence"] <= min(m["MinConfidence"].values())
    m3 = min_confidence_map(tf, decimals=3)
    assert m3["MinConfidence"] == {"bolt": 87.123, "nut": 55.5}


def test_cli_export_and_thresholds_output(parts_store, tmp_path):
    _, store_path = parts_store
    policy = tmp_path / "p.toml"
    policy.write_text("[defaults]\ncost_false_accept = 20\ncost_false_reject = 1\n")
    tfile = tmp_path / "thresholds.yaml"
    res = runner.invoke(app, ["thresholds", "--store", str(store_path), "--policy", str(policy),
                              "--model-version", "v2", "-o", str(tfile)])
    assert res.exit_code == 0, res.output
    tf = read_thresholds_file(tfile)
    assert {e.model_version for e in tf.entries} == {"v2"}
    frag = tmp_path / "frag.json"
    res = runner.invoke(app, ["export", str(tfile), "--to", "viam", "-o", str(frag),
                              "--store", str(store_path), "--service", "defects",
                              "--mlmodel-name", "tflite"])
    assert res.exit_code == 0, res.output
    svc = json.loads(frag.read_text())
    assert svc["api"] == "rdk:service:vision" and svc["model"] == "mlmodel"
    assert svc["attributes"]["mlmodel_name"] == "tflite"
    res = runner.invoke(app, ["export", str(tfile), "--to", "rekognition"])
    assert res.exit_code == 2 and "needs --output" in res.stderr
    res = runner.invoke(app, ["export", str(tmp_path / "missing.json"), "--to", "viam", "-o", "x"])
    assert res.exit_code == 2 and "cannot read thresholds file" in res.stderr
