"""Detection-level labels end to end: choice from a store, the CLI table at 80 columns,
the thresholds file, and the Viam export reproducing every stored detection's keep/drop
decision and so the true/false detection counts."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from calibrate.export.viam import label_confidences
from calibrate.matching import match_detections
from calibrate.policy import load_policy_file
from calibrate.store import ScoreStore
from calibrate.thresholds import choose_thresholds_from_store
from calibrate.thresholds_file import read_thresholds_file, thresholds_file_from_results
from tests.detection_scenes import store_run as _run
from tests.detection_scenes import store_scene as _scene

pytestmark = pytest.mark.filterwarnings("ignore::calibrate.store.DatasetOverlapWarning")

ROOT = Path(__file__).resolve().parents[1]
POLICY = """[defaults]
cost_false_accept = 5
cost_false_reject = 1

[labels.scratch]
unit = "detection"
iou_threshold = 0.5
max_false_accept_rate = 0.6
"""


@pytest.fixture(scope="module")
def boxed(tmp_path_factory):
    d = tmp_path_factory.mktemp("boxed")
    images, results = _scene(11, n=90)
    with ScoreStore(d / "calibrate.duckdb") as store:
        store.add_images("parts", images, complete=True)
        _run(store, results, [im.image_id for im in images])
    (d / "policy.toml").write_text(POLICY)
    return d / "calibrate.duckdb", d / "policy.toml"


def _matches(store, label, split=None):
    rows = store.detection_rows("surface-defect", "v1", split=split, labels=[label])
    return rows, match_detections(rows.detections, rows.objects, n_images=rows.n_images)


def _counts(m, label, threshold):
    """True / false detections kept and objects missed, counted per detection."""
    mine = m.detection_label == label
    kept = mine & (m.detection_score >= threshold)
    true = int(np.sum(kept & m.detection_matched))
    false = int(np.sum(kept & m.detection_false))
    n_obj = int(np.sum((m.object_label == label) & ~m.object_ignore))
    return true, false, n_obj - true


def test_choice_from_the_store_honours_each_labels_unit(boxed):
    path, policy = boxed
    with ScoreStore(path) as store:
        results = {r.label: r for r in choose_thresholds_from_store(
            store, load_policy_file(policy), held_out="")}
        scratch, dent = results["scratch"], results["dent"]
        assert scratch.unit == "detection" and scratch.iou_threshold == 0.5
        assert dent.unit == "image" and dent.iou_threshold is None
        c = scratch.choice
        rows, m = _matches(store, "scratch")
        assert (c.true_detections, c.false_detections, c.missed_objects) == _counts(
            m, "scratch", c.threshold)
        assert c.n_images == rows.n_images == 90 and c.n_objects == int(
            ((m.object_label == "scratch") & ~m.object_ignore).sum())
        # the miss-rate limit is over objects, with the exact bound
        check = c.limit_checks[0]
        assert check.about == "object" and check.n == c.n_objects
        assert check.errors == c.missed_objects
        # the image-level label is what it always was
        assert dent.choice.n_positive + dent.choice.n_negative == 90


def test_held_out_figures_at_the_detection_unit(boxed):
    path, policy = boxed
    with ScoreStore(path) as store:
        results = {r.label: r for r in choose_thresholds_from_store(
            store, load_policy_file(policy), split="cal")}
        r = results["scratch"]
        assert r.held_out_split == "test" and r.held_out.unit == "detection"
        _, m = _matches(store, "scratch", split="test")
        h = r.held_out
        assert (h.true_detections, h.false_detections, h.missed_objects) == _counts(
            m, "scratch", r.choice.threshold)


def _cli(width, *args):
    env = {**os.environ, "COLUMNS": str(width), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "calibrate.cli", *map(str, args)],
                          capture_output=True, text=True, env=env, cwd=ROOT, check=False)


def test_cli_table_file_and_json_say_the_unit(boxed, tmp_path):
    path, policy = boxed
    out = tmp_path / "thresholds.json"
    proc = _cli(80, "thresholds", "--store", path, "--policy", policy, "--split", "cal",
                "-o", out)
    assert proc.returncode == 0, proc.stderr
    lines = [x for x in proc.stdout.splitlines() if not x.startswith("thresholds file written")]
    assert all(len(line) <= 80 for line in lines), proc.stdout
    assert "nan" not in proc.stdout  # no prevalence notice at the detection unit
    assert "…" not in proc.stdout
    assert "Per detection (unit = detection, matched at IoU >= 0.5)" in proc.stdout
    assert "true/false/missed" in proc.stdout and "false/img" in proc.stdout
    prose = " ".join(proc.stdout.split())  # wrapped to the terminal
    assert "not a binomial rate" in prose and "Cost is per image" in prose
    assert "scratch v1" in proc.stdout and "dent v1" in proc.stdout
    tf = read_thresholds_file(out)
    e = {x.label: x for x in tf.entries}
    assert (e["scratch"].unit, e["scratch"].iou_threshold) == ("detection", 0.5)
    assert (e["dent"].unit, e["dent"].iou_threshold) == ("image", None)
    with ScoreStore(path, read_only=True) as store:
        _, m = _matches(store, "scratch", split="cal")
    s = e["scratch"]
    assert (s.true_detections, s.false_detections, s.missed_objects) == _counts(
        m, "scratch", s.threshold)
    assert s.prevalence is None
    raw = json.loads(out.read_text())
    entry = next(x for x in raw["labels"] if x["label"] == "scratch")
    assert entry["unit"] == "detection" and entry["policy"]["unit"] == "detection"
    js = _cli(120, "thresholds", "--store", path, "--policy", policy, "--split", "cal",
              "--format", "json")
    assert js.returncode == 0, js.stderr
    row = next(x for x in json.loads(js.stdout) if x["label"] == "scratch")
    assert row["unit"] == "detection" and row["held_out"]["unit"] == "detection"
    assert row["true_detections"] == s.true_detections


def _viam_keeps(confidences: dict, label: str, score: float) -> bool:
    """Viam's mlmodel filter: keys match labels case-insensitively; a label not listed is
    dropped once the map is non-empty; kept when score >= threshold."""
    folded = {k.casefold(): v for k, v in confidences.items()}
    t = folded.get(label.casefold())
    return t is not None and score >= t


@pytest.mark.parametrize("decimals", [None, 2])
def test_viam_round_trip_reproduces_every_detection(boxed, decimals):
    path, _ = boxed
    policy_text = POLICY.replace("max_false_accept_rate = 0.6\n",
                                 "max_false_accept_rate = 0.6\nif_limit_unproven = "
                                 "\"cost_optimal\"\n")
    pfile = path.parent / "policy_signed.toml"
    pfile.write_text(policy_text)
    with ScoreStore(path) as store:
        results = choose_thresholds_from_store(store, load_policy_file(pfile), held_out="")
        tf = thresholds_file_from_results(results, source=str(path))
        export = label_confidences(tf, decimals=decimals)
        rows, m = _matches(store, "scratch")
    c = next(r for r in results if r.label == "scratch").choice
    lc = export.label_confidences
    assert "scratch" in lc
    if decimals == 2:
        assert lc["scratch"] == round(lc["scratch"], 2)
    # every stored detection of the label: Viam keeps exactly those the cutoff keeps
    mine = np.flatnonzero(m.detection_label == "scratch")
    assert mine.size > 20
    viam = np.array([_viam_keeps(lc, "SCRATCH", m.detection_score[i]) for i in mine])
    ours = m.detection_score[mine] >= c.threshold
    np.testing.assert_array_equal(viam, ours)
    true = int(np.sum(viam & m.detection_matched[mine]))
    false = int(np.sum(viam & m.detection_false[mine]))
    n_obj = int(np.sum((m.object_label == "scratch") & ~m.object_ignore))
    assert (true, false, n_obj - true) == (c.true_detections, c.false_detections,
                                           c.missed_objects)
    # the rounding stayed inside the interval where no detection changes side
    assert c.next_score_below < lc["scratch"] <= c.threshold
    assert not math.isinf(c.threshold)


def test_gate_evaluates_a_detection_label_per_detection(tmp_path):
    from calibrate.check import check_thresholds

    images, results = _scene(11, n=90)
    _, other = _scene(12, n=90)
    with ScoreStore(tmp_path / "s.duckdb") as store:
        store.add_images("parts", images, complete=True)
        ids = [im.image_id for im in images]
        _run(store, results, ids, version="v1")
        _run(store, other, ids, version="v2")
        (tmp_path / "p.toml").write_text(POLICY + 'if_limit_unproven = "cost_optimal"\n')
        chosen = choose_thresholds_from_store(store, load_policy_file(tmp_path / "p.toml"),
                                              model_version="v1", held_out="")
        tf = thresholds_file_from_results(chosen, source="s")
        report = check_thresholds(tf, store, model_version="v2", deployed_version="v1")
        gate = next(g for g in report.results if g.label == "scratch")
        rows = store.detection_rows("surface-defect", "v2", labels=["scratch"])
    m = match_detections(rows.detections, rows.objects, n_images=rows.n_images)
    at = gate.at_deployed
    assert at.unit == "detection"
    assert (at.true_detections, at.false_detections, at.missed_objects) == _counts(
        m, "scratch", next(e for e in tf.entries if e.label == "scratch").threshold)
    assert math.isfinite(gate.regret_lower)
