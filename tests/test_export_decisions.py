"""What exporters may not write, on real files: labels the policy refuses, labels that
cannot be calibrated, thresholds on another scale; and the thresholds file that records
decisions, options and held-out figures, old files still reading."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from calibrate.cli import app
from calibrate.errors import InputError
from calibrate.export import export_to
from calibrate.export import viam as viam_export
from calibrate.export.rekognition import min_confidence_map
from calibrate.store import ScoreStore
from calibrate.study import load_study, run_study
from tests.parts_fixture import refusing_parts_policy
from calibrate.thresholds_file import (
    CANNOT_CALIBRATE,
    ThresholdEntry,
    ThresholdsFile,
    read_thresholds_file,
    write_thresholds_file,
)

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[1]
PARTS_POLICY = ROOT / "datasets" / "parts-policy.toml"


def _cli(*args):
    res = runner.invoke(app, [str(a) for a in args], env={"COLUMNS": "300"})
    assert "Traceback" not in res.output
    return res


def _thresholds(store, policy, out, version="v2"):
    res = _cli("thresholds", "--store", store, "--policy", policy, "--model-version", version,
               "--split", "calibration", "-o", out)
    assert res.exit_code == 0, res.output
    return read_thresholds_file(out)


@pytest.fixture(scope="module")
def parts_files(parts_store, tmp_path_factory):
    """The parts study's v2 thresholds under the bundled policy (crack refused) and under a
    copy that deploys crack's cost-optimal option by sign-off."""
    _, store = parts_store
    d = tmp_path_factory.mktemp("decisions")
    signed = PARTS_POLICY  # the bundled policy signs off crack's cost-optimal option
    refusing = refusing_parts_policy(d)
    return dict(store=store, refused=_thresholds(store, refusing, d / "refused.json"),
                refused_path=d / "refused.json",
                signed_path=d / "signed.yaml", signed=_thresholds(store, signed, d / "signed.yaml"))


def _stored_decisions(store, e, threshold):
    with ScoreStore(store, read_only=True) as st:
        return st.scores(e.detector, e.model_version, e.label).scores >= threshold


# -- the thresholds file records decisions, options and held-out figures ----------------


def test_the_file_records_the_refusal_its_options_and_held_out_figures(parts_files):
    crack = parts_files["refused"].get("crack")
    assert crack.decision == "refuse" and not crack.deployable and crack.status == "limits_unproven"
    assert {o.name for o in crack.options} >= {"cost_optimal", "never_fire", "always_fire"}
    assert crack.option("never_fire").threshold == math.inf
    assert crack.samples_needed > 0
    assert crack.held_out.split == "test" and crack.held_out.n_positive > 0
    for e in parts_files["refused"].entries:
        assert e.held_out is not None and e.held_out.expected_cost is not None
        if e.label != "crack":
            assert e.decision == "deploy" and e.deployable and e.options == ()
    signed = parts_files["signed"].get("crack")
    assert signed.decision == "cost_optimal" and signed.deployable and signed.needs_sign_off
    assert signed.threshold == signed.option("cost_optimal").threshold


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".toml"])
def test_round_trip_keeps_decisions_options_held_out_and_uncalibrated(parts_files, tmp_path,
                                                                      suffix):
    tf = parts_files["refused"]
    lost = ThresholdEntry.uncalibrated("hole", "surface-defect", "v2",
                                       "the data has no positive items.",
                                       policy=tf.get("dent").policy, n_failed=2)
    full = ThresholdsFile(tf.entries + (lost,), tf.created_at, tf.tool_version, tf.source)
    back = read_thresholds_file(write_thresholds_file(full, tmp_path / f"t{suffix}"))
    assert back.entries == full.entries
    hole = back.get("hole")
    assert hole.status == CANNOT_CALIBRATE and hole.threshold is None and not hole.deployable
    assert hole.problem == "the data has no positive items." and hole.n_failed == 2
    # a label without a threshold is in the file, but not where a threshold is needed
    assert "hole" not in {e.label for e in back.select(model_version="v2")}
    assert "hole" in {e.label for e in back.select(model_version="v2", calibrated_only=False)}


def test_uncalibrated_entry_shape_and_its_validation(tmp_path):
    e = ThresholdEntry.uncalibrated("hole", "det", "v1", "no positives")
    path = write_thresholds_file(ThresholdsFile((e,)), tmp_path / "t.json")
    raw = json.loads(path.read_text())["labels"][0]
    assert raw == {"label": "hole", "detector": "det", "model_version": "v1",
                   "status": "cannot_calibrate", "problem": "no positives", "n_failed": 0}
    raw["threshold"] = 0.5
    path.write_text(json.dumps({**json.loads(path.read_text()), "labels": [raw]}))
    with pytest.raises(InputError, match="has no threshold"):
        read_thresholds_file(path)


OLD_FILE = {  # format 1 as written before decisions, options and held-out figures existed
    "format": "calibrate.thresholds/1", "created_at": "2024-05-01T10:00:00+00:00",
    "tool_version": "0.0.9", "source": "old.duckdb",
    "rule": "fire when score >= threshold (detector's own scale)",
    "labels": [
        {"label": "scratch", "detector": "surface-defect", "model_version": "v1",
         "threshold": 0.61, "next_score_below": 0.6, "action": "reject", "n_positive": 40,
         "n_negative": 400, "false_accepts": 2, "false_rejects": 30,
         "false_accept_rate": 0.05, "false_accept_rate_upper": 0.15,
         "false_reject_rate": 0.075, "false_reject_rate_upper": 0.1, "expected_cost": 0.1,
         "prevalence": 0.02, "limits_met": True, "status": "ok", "n_failed": 0,
         "policy": {"cost_false_accept": 50, "cost_false_reject": 1, "action": "reject",
                    "prevalence": 0.02, "confidence": 0.95}},
        {"label": "crack", "detector": "surface-defect", "model_version": "v1",
         "threshold": 0.7, "action": "reject", "n_positive": 25, "n_negative": 400,
         "false_accepts": 0, "false_rejects": 12, "false_accept_rate": 0.0,
         "false_accept_rate_upper": 0.11, "false_reject_rate": 0.03,
         "false_reject_rate_upper": 0.05, "expected_cost": 0.03, "prevalence": 0.002,
         "limits_met": False, "status": "limits_unproven",
         "policy": {"cost_false_accept": 50, "cost_false_reject": 1, "action": "reject",
                    "max_false_accept_rate": 0.001, "confidence": 0.95}},
    ],
}


def test_an_old_file_still_reads_and_its_unmet_limit_is_not_deployed_silently(tmp_path):
    path = tmp_path / "old.json"
    path.write_text(json.dumps(OLD_FILE))
    tf = read_thresholds_file(path)
    scratch, crack = tf.get("scratch"), tf.get("crack")
    assert scratch.decision is None and scratch.options == () and scratch.held_out is None
    assert scratch.deployable and crack.next_score_below == -math.inf
    assert crack.policy.if_limit_unproven == "refuse" and not crack.deployable
    res = _cli("export", path, "--to", "viam", "-o", tmp_path / "v.json")
    assert res.exit_code == 1
    assert "crack (surface-defect v1) refused" in res.stderr
    assert "choose thresholds again to record a decision" in res.stderr
    lc = json.loads((tmp_path / "v.json").read_text())["attributes"]["label_confidences"]
    assert lc == {"scratch": 0.61}


# -- exports: refused labels, sign-off, uncalibrated labels, scales ---------------------


def test_viam_export_refuses_crack_by_name_and_writes_the_others(parts_files, tmp_path):
    frag = tmp_path / "viam.json"
    res = _cli("export", parts_files["refused_path"], "--to", "viam", "-o", frag,
               "--store", parts_files["store"])
    assert res.exit_code == 1, res.output
    refused = [line for line in res.stderr.splitlines() if line.startswith("refused:")]
    assert len(refused) == 1
    line = refused[0]
    assert line.startswith("refused: crack (surface-defect v2) refused: its limit "
                           "(false-accept rate <= 0.1% at 95% confidence) cannot be shown")
    for option in ("cost-optimal T=", "protective T=", "never-fire cost", "always-fire T="):
        assert option in line
    assert 'set if_limit_unproven = "cost_optimal" | "protective" | "never_fire"' in line
    assert "[labels.crack]" in line and "Viam drops its detections" in line
    assert "without 1 refused label(s)" in res.stdout
    lc = json.loads(frag.read_text())["attributes"]["label_confidences"]
    assert set(lc) == {"scratch", "dent", "spot"}  # crack is not listed at a default either
    for label, value in lc.items():
        e = parts_files["refused"].get(label)
        assert np.array_equal(_stored_decisions(parts_files["store"], e, e.threshold),
                              _stored_decisions(parts_files["store"], e, value))


def test_signed_off_crack_is_exported_with_a_warning_saying_so(parts_files, tmp_path):
    frag = tmp_path / "viam.json"
    res = _cli("export", parts_files["signed_path"], "--to", "viam", "-o", frag,
               "--store", parts_files["store"])
    assert res.exit_code == 0, res.output
    assert "crack (surface-defect v2) exported by sign-off" in res.stderr
    assert 'if_limit_unproven = "cost_optimal"' in res.stderr
    assert "on the held-out test split" in res.stderr
    e = parts_files["signed"].get("crack")
    lc = json.loads(frag.read_text())["attributes"]["label_confidences"]
    assert set(lc) == {"scratch", "dent", "spot", "crack"}
    assert np.array_equal(_stored_decisions(parts_files["store"], e, e.threshold),
                          _stored_decisions(parts_files["store"], e, lc["crack"]))
    imm = export_to("alibaba-imm", parts_files["signed"], tmp_path / "imm.json")
    assert imm.refused == [] and any("exported by sign-off" in n for n in imm.warnings)


def test_a_0_1_detector_to_rekognition_is_refused_with_the_reason(parts_files, tmp_path):
    out = tmp_path / "rek.json"
    res = _cli("export", parts_files["refused_path"], "--to", "rekognition", "-o", out)
    assert res.exit_code == 2
    assert res.stderr.strip().splitlines() == [
        "error: surface-defect v2 scores on a 0-1 scale, but Rekognition reads 0-100, so its "
        "thresholds would be other cutoffs there; export them --to viam or alibaba-imm, or "
        "calibrate a Rekognition detector for this target."]
    assert not out.exists()
    # and the other way round: Rekognition confidences are not Viam's 0-1 scores
    rek = ThresholdsFile((ThresholdEntry(**{**_FIELDS, "detector": "rekognition-labels"}),))
    with pytest.raises(InputError, match="0-100 scale, but Viam reads 0-1"):
        viam_export.label_confidences(rek)


_FIELDS = dict(
    label="Car", detector="rekognition-labels", model_version="2024", threshold=0.5,
    next_score_below=0.4, action="reject", policy=None, n_positive=10, n_negative=90,
    false_accepts=1, false_rejects=5, false_accept_rate=0.1, false_accept_rate_upper=0.39,
    false_reject_rate=5 / 90, false_reject_rate_upper=0.11, expected_cost=0.15,
    prevalence=0.1, limits_met=True, decision="deploy",
)


@pytest.fixture
def with_uncalibrated(tmp_path):
    """A real scores table where 'hole' has no positive image: it cannot be calibrated."""
    csv = tmp_path / "scores.csv"
    csv.write_text("image_id,label,score,truth\na,crack,0.9,true\nb,crack,0.2,false\n"
                   "c,crack,0.4,false\na,hole,0.3,false\nb,hole,0.1,false\n")
    out = tmp_path / "t.toml"
    res = _cli("thresholds", csv, "--cost-false-accept", 5, "--cost-false-reject", 1, "-o", out)
    assert res.exit_code == 0, res.output
    return out


def test_an_uncalibrated_label_stays_in_the_file_and_viam_warns_it_drops_it(with_uncalibrated,
                                                                          tmp_path):
    hole = read_thresholds_file(with_uncalibrated).get("hole")
    assert hole.status == CANNOT_CALIBRATE and hole.threshold is None
    assert "no positive" in hole.problem
    res = _cli("export", with_uncalibrated, "--to", "viam", "-o", tmp_path / "v.json")
    assert res.exit_code == 0, res.output
    assert "hole (precomputed unknown) cannot be calibrated" in res.stderr
    assert "Viam will DROP every detection of it" in res.stderr
    lc = json.loads((tmp_path / "v.json").read_text())["attributes"]["label_confidences"]
    assert lc == {"crack": 0.9}


@pytest.mark.parametrize("target, key", [("rekognition", "MinConfidence"),
                                         ("alibaba-imm", "thresholds")])
def test_map_targets_refuse_an_uncalibrated_label_unless_allowed(with_uncalibrated, tmp_path,
                                                                 target, key):
    out = tmp_path / "m.json"
    res = _cli("export", with_uncalibrated, "--to", target, "-o", out)
    assert res.exit_code == 1, res.output
    assert "refused: hole (precomputed unknown) refused: it cannot be calibrated" in res.stderr
    assert "--allow-missing" in res.stderr
    data = json.loads(out.read_text())
    assert data[key] == {"crack": 0.9} and list(data["refused"]) == ["hole"]
    res = _cli("export", with_uncalibrated, "--to", target, "-o", out, "--allow-missing")
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["refused"] == {} and data["uncalibrated"] == ["hole"]


def test_every_label_refused_is_bad_input_and_nothing_is_written(parts_files, tmp_path):
    crack_only = ThresholdsFile((parts_files["refused"].get("crack"),))
    out = tmp_path / "imm.json"
    with pytest.raises(InputError, match="every label would be left out.*crack"):
        export_to("viam", crack_only, tmp_path / "v.json")
    with pytest.raises(InputError, match="nothing to export --to alibaba-imm: every label is "
                                        "refused. crack"):
        export_to("alibaba-imm", crack_only, out)
    assert not out.exists()


def test_unknown_export_options_are_named(parts_files, tmp_path):
    with pytest.raises(InputError, match="unknown option.*colour.*takes decimals, allow_missing"):
        export_to("alibaba-imm", parts_files["signed"], tmp_path / "x.json", colour="red")


def test_rekognition_library_call_lists_refusals(parts_files):
    tf = ThresholdsFile(tuple(
        ThresholdEntry(**{**_FIELDS, "label": e.label, "detector": "rekognition-faces",
                          "decision": e.decision, "threshold": 60.0, "next_score_below": 50.0,
                          "policy": e.policy, "limits_met": e.limits_met, "status": e.status,
                          "options": e.options})
        for e in parts_files["refused"].entries))
    m = min_confidence_map(tf)
    assert set(m["MinConfidence"]) == {"scratch", "dent", "spot"}
    assert list(m["refused"]) == ["crack"] and "if_limit_unproven" in m["refused"]["crack"]


# -- calibrate run: writes every other label, records refused ones, fails naming them ----


def test_run_writes_the_others_and_fails_naming_crack(parts_store, tmp_path):
    manifest, store = parts_store
    shutil.copy(store, tmp_path / "s.duckdb")  # the shared store stays untouched
    study = tmp_path / "study.toml"
    study.write_text(
        f'name = "mini"\ndataset = "{manifest}"\nstore = "s.duckdb"\nreport = "rep"\n'
        f'split = "calibration"\npolicy = "{refusing_parts_policy(tmp_path)}"\n'
        '[[detectors]]\ndetector = "surface-defect"\nmodel_version = "v2"\n'
        '[[export]]\nto = "thresholds"\npath = "rep/thresholds.json"\n'
        '[[export]]\nto = "viam"\npath = "rep/viam.json"\n'
    )
    result = run_study(load_study(study), progress=False, workers=1)
    assert [r.status for r in result.runs] == ["skipped"]
    assert result.exit_code == 1
    assert len(result.refused) == 1
    assert result.refused[0].startswith("export viam: crack (surface-defect v2) refused:")
    assert any(line.startswith("refused: export viam: crack") for line in result.lines())
    lc = json.loads((tmp_path / "rep" / "viam.json").read_text())["attributes"]["label_confidences"]
    assert set(lc) == {"scratch", "dent", "spot"}
    tf = read_thresholds_file(tmp_path / "rep" / "thresholds.json")
    assert tf.get("crack").decision == "refuse"  # the record keeps every label
    assert result.report.html_path.exists()
