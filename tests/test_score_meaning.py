"""What a score means on the line: the mix of classes, the calibration command, the
thresholds-file section, the reliability display and the report's section."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from calibrate.curves import count_table
from calibrate.policy import load_policy_file
from calibrate.report.figures import ReliabilityDisplay
from calibrate.reliability import reliability_bins
from calibrate.score_meaning import (
    Composition,
    cutoff_meaning,
    label_calibrations,
    mixture_probability,
)
from calibrate.store import ScoreStore
from calibrate.thresholds import choose_thresholds_from_store
from calibrate.thresholds_file import (
    read_thresholds_file,
    thresholds_file_from_results,
    write_thresholds_file,
)

ROOT = Path(__file__).resolve().parents[1]
POLICY = ROOT / "datasets" / "parts-policy.toml"
CLI = [sys.executable, "-m", "calibrate.cli"]


def test_two_classes_are_the_usual_bayes_formula_and_composition_weighs_each_class():
    rng = np.random.default_rng(0)
    s = rng.random(400)
    y = rng.random(400) < 0.3 + 0.4 * s
    table = count_table(s, y)
    cm = cutoff_meaning(table, 0.6, 0.02)
    fired = s >= 0.6
    p, lo, hi = mixture_probability([int((y & fired).sum()), int((~y & fired).sum())],
                                    [int(y.sum()), int((~y).sum())], [0.02, 0.98], 0, 0.95)
    assert (p, lo, hi) == pytest.approx((cm.p_fired, *cm.p_fired_interval))
    # Three classes: a label's negatives are good parts and another defect that fires a
    # lot; the line has few of the other defect, so the line fires less than the sample.
    member = np.r_[np.zeros(300, int), np.ones(50, int), np.full(50, 2)]
    scores = {"a": np.r_[np.full(300, 0.1), np.full(50, 0.9), np.full(50, 0.8)],
              "b": np.zeros(400)}
    comp = Composition(("(none)", "a", "b"), member, np.array([0.97, 0.02, 0.01]),
                       np.arange(400), scores)
    assert comp.weights().sum() == pytest.approx(400)
    q, _, _ = comp.probability(None, scores["a"] >= 0.5)
    assert q == pytest.approx(0.03)  # 2% a + 1% b fire; good parts never do
    p_a, lo_a, hi_a = comp.probability("a", scores["a"] >= 0.5)
    assert p_a == pytest.approx(2 / 3) and lo_a < p_a < hi_a


def test_reliability_display_draws_the_bins_with_exact_intervals():
    rng = np.random.default_rng(1)
    p = rng.random(300)
    y = rng.random(300) < p
    d = ReliabilityDisplay.from_predictions(y, p, n_bins=6)
    bins = reliability_bins(p, y, n_bins=6)
    np.testing.assert_allclose(d.bins.observed, bins.observed)
    line = d.errorbar_.lines[0]
    np.testing.assert_allclose(line.get_ydata(), bins.observed)
    assert "ECE" in d.ax_.get_title()


def _run(args):
    return subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=300,
                          env={**os.environ, "COLUMNS": "80"})


def test_calibration_command_at_80_columns_adds_to_the_thresholds_file_and_exports_maps(
        parts_store, tmp_path):
    _, store_path = parts_store
    with ScoreStore(store_path, read_only=True) as st:
        results = choose_thresholds_from_store(st, load_policy_file(POLICY), model_version="v2",
                                               split="calibration", held_out="test")
    tf_path = write_thresholds_file(thresholds_file_from_results(results),
                                    tmp_path / "thresholds.json")
    maps = tmp_path / "maps"
    r = _run([*CLI, "calibration", "--store", str(store_path), "--policy", str(POLICY),
              "--split", "calibration", "--model-version", "v2", "--label", "spot",
              "--label", "dent", "--add-to", str(tf_path), "--export-maps", str(maps)])
    assert r.returncode == 0, r.stderr
    # A path longer than the terminal stands alone on its line; nothing else may overflow.
    assert all(len(x) <= 80 or len(x.split()) == 1 for x in r.stdout.splitlines()), r.stdout
    assert "P(spot | fired)" in r.stdout and "weigh every class by its line share" in r.stdout
    tf = read_thresholds_file(tf_path)
    assert {m["label"] for m in tf.score_meaning} == {"spot", "dent"}
    for m in tf.score_meaning:
        entry = tf.get(m["label"], model_version="v2")
        assert m["threshold"] == entry.threshold
        assert m["score_meaning"]["cutoff"]["threshold"] == entry.threshold
    written = {json.loads(p.read_text())["label"]: json.loads(p.read_text())
               for p in maps.glob("*.map.json")}
    assert set(written) == {"spot", "dent"}
    assert written["spot"]["model_version"] == "v2" and written["spot"]["dataset_fingerprint"]
    # A file chosen under another policy is refused, not silently annotated.
    other = tmp_path / "other.toml"
    other.write_text(POLICY.read_text().replace("cost_false_accept = 50",
                                                "cost_false_accept = 5"))
    r = _run([*CLI, "calibration", "--store", str(store_path), "--policy", str(other),
              "--split", "calibration", "--model-version", "v2", "--label", "spot",
              "--add-to", str(tf_path)])
    assert r.returncode == 2 and "has threshold" in r.stderr and "Traceback" not in r.stderr


def test_line_figures_use_every_label_the_images_carry(parts_store):
    _, store_path = parts_store
    with ScoreStore(store_path, read_only=True) as st:
        pol = load_policy_file(POLICY)
        results = choose_thresholds_from_store(st, pol, model_version="v2",
                                               split="calibration", held_out="test")
        spot = [r for r in results if r.label == "spot"]
        alone = label_calibrations(st, spot, policies=pol, n_resamples=50)[0]
        together = [x for x in label_calibrations(st, results, policies=pol, n_resamples=50)
                    if x.label == "spot"][0]
    assert alone.weighing == together.weighing == "every class by its line share"
    assert alone.meaning.cutoff.firing_probability == pytest.approx(
        together.meaning.cutoff.firing_probability)
    # The line fires on far fewer parts than the enriched sample does.
    t = alone.table
    sample_rate = (t.n_positive[t.scores >= alone.threshold].sum()
                   + t.n_negative[t.scores >= alone.threshold].sum()) / (
        t.total_positive + t.total_negative)
    assert alone.meaning.cutoff.firing_probability < sample_rate
