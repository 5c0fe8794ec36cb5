"""Production monitoring without labels: the statistics against scipy and simulation, and
the Done-when run on the parts study (a real store, the production simulator and the CLI
as subprocesses)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp

from calibrate.curves import count_table
from calibrate.errors import InputError
from calibrate.monitor import (
    PSI_ALARM,
    firing_interval,
    population_stability_index,
    read_production_scores,
    weighted_ks,
)
from calibrate.policy import load_policy_file
from calibrate.score_meaning import Composition
from calibrate.store import ScoreStore
from calibrate.thresholds import choose_thresholds_from_store
from calibrate.thresholds_file import thresholds_file_from_results, write_thresholds_file

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "calibrate.cli"]


def test_weighted_ks_with_equal_weights_is_scipys_two_sample_test():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=700), rng.normal(0.1, 1, size=400)
    d, p = weighted_ks(a, b, np.ones(b.size))
    ref = ks_2samp(a, b, method="asymp")
    assert d == pytest.approx(ref.statistic)
    # scipy rounds the effective size the same way for the asymptotic p-value
    assert p == pytest.approx(ref.pvalue, rel=0.05)
    # ties and no result rank as they should
    d2, _ = weighted_ks([-np.inf, 0.5, 0.5], [-np.inf, 0.5, 0.7], [1, 1, 1])
    assert d2 == pytest.approx(1 / 3)


def _line(rng, n, share, shift=0.0):
    """Images of three classes (none, a, b): class and per-label scores."""
    member = rng.choice(3, size=n, p=share)
    sa = rng.normal(size=n) + 2.0 * (member == 1) + 0.8 * (member == 2) + shift * (member == 0)
    sb = rng.normal(size=n) + 2.0 * (member == 2) + shift * (member == 0)
    return member, {"a": sa, "b": sb}


def _any_alarm(comp: Composition, prod: dict, cutoffs: dict, alpha: float) -> bool:
    """The monitor's rule for one window: firing count outside its interval, KS below
    the Bonferroni level, or PSI above 0.2 (as monitor._judge applies them)."""
    a_test = alpha / (len(cutoffs) * 2)
    w = comp.weights()
    for label, t in cutoffs.items():
        s = prod[label]
        _, lo, hi = firing_interval(None, t, None, s.size, a_test, composition=comp,
                                    label=label)
        k = int((s >= t).sum())
        _, p = weighted_ks(s, comp.scores[label], w)
        if not lo <= k <= hi or p < a_test or population_stability_index(
                s, comp.scores[label], w) > PSI_ALARM:
            return True
    return False


def test_false_alarm_rate_is_at_its_level_and_a_shift_is_caught():
    # An enriched labeled set (40% of images carry a label) and a line at 3% / 2%.
    alpha, runs = 0.05, 300
    sample_share, line_share = [0.6, 0.2, 0.2], [0.95, 0.03, 0.02]
    cutoffs = {"a": 1.5, "b": 1.8}
    rng = np.random.default_rng(11)
    alarms = caught = 0
    for _ in range(runs):
        member, scores = _line(rng, 800, sample_share)
        comp = Composition(("(none)", "a", "b"), member, np.array(line_share),
                           np.arange(member.size), scores)
        _, prod = _line(rng, 1000, line_share)
        alarms += _any_alarm(comp, prod, cutoffs, alpha)
        _, moved = _line(rng, 1000, line_share, shift=0.4)  # good parts score higher
        caught += _any_alarm(comp, moved, cutoffs, alpha)
    # Bonferroni is conservative: the rate must not exceed alpha beyond chance.
    assert alarms / runs <= alpha + 2 * np.sqrt(alpha * (1 - alpha) / runs), alarms
    assert caught / runs >= 0.9, caught


def test_the_two_class_firing_interval_is_pi_tpr_plus_one_minus_pi_fpr():
    s = np.r_[np.linspace(0, 1, 50), np.linspace(0, 1, 200)]
    y = np.r_[np.ones(50, bool), np.zeros(200, bool)]
    table = count_table(s, y)
    q, lo, hi = firing_interval(table, 0.7, 0.05, 1000, 0.05)
    tpr, fpr = (s[y] >= 0.7).mean(), (s[~y] >= 0.7).mean()
    assert q == pytest.approx(0.05 * tpr + 0.95 * fpr)
    assert lo < 1000 * q < hi


def test_bad_production_files_are_refused_with_file_and_line(tmp_path):
    p = tmp_path / "prod.csv"
    p.write_text("image_id,label,score,model_version,time\n"
                 "a,dent,0.5,v2,2026-11-02T08:00:00Z\nb,dent,0.5,v2,yesterday\n")
    with pytest.raises(InputError, match=r"prod.csv:3: time 'yesterday'"):
        read_production_scores(p)
    p.write_text("image_id,label,score\na,dent,0.5\n")
    with pytest.raises(InputError, match="missing column.*model_version"):
        read_production_scores(p)
    p.write_text("image_id,label,score,model_version\na,,0.5,v2\n")
    with pytest.raises(InputError, match="prod.csv:2: a score without a label"):
        read_production_scores(p)
    p.write_text("image_id,label,score,model_version\na,,,v2\nb,dent,0.4,v2\n")
    frame = read_production_scores(p)
    assert len(frame) == 2 and np.isneginf(frame["score"].iloc[0])


def _run(args, **kw):
    env = {**os.environ, "COLUMNS": "80"}
    return subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=300, **kw)


@pytest.fixture(scope="module")
def production(parts_store, tmp_path_factory):
    """The parts study's deployed v2 thresholds and two simulated production files."""
    _, store_path = parts_store
    folder = tmp_path_factory.mktemp("production")
    with ScoreStore(store_path, read_only=True) as st:
        results = choose_thresholds_from_store(
            st, load_policy_file(ROOT / "datasets" / "parts-policy.toml"),
            model_version="v2", split="calibration", held_out="test")
    tf_path = write_thresholds_file(thresholds_file_from_results(results),
                                    folder / "thresholds.json")
    procs = {
        shift: subprocess.Popen(
            [sys.executable, str(ROOT / "datasets" / "make_production.py"), "--out",
             str(folder / shift), "--n", "1000", "--seed", str(seed), "--shift", shift,
             "--days", "2"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for shift, seed in (("none", 1), ("dust", 2))
    }
    for p in procs.values():
        assert p.wait(timeout=300) == 0, p.stderr.read()
    return store_path, tf_path, folder


def test_monitor_alarms_on_the_shifted_line_only_and_its_estimates_cover_the_truth(production):
    store_path, tf_path, folder = production
    out = {}
    todo = folder / "todo.jsonl"
    for shift, extra in (("none", ["--label-next", str(todo), "--n-label", "5"]),
                         ("dust", ["--window", "1D"])):
        r = _run([*CLI, "monitor", str(folder / shift / "production.csv"), "--thresholds",
                  str(tf_path), "--store", str(store_path), "--format", "json",
                  "--resamples", "40", *extra])
        assert r.returncode in (0, 1), r.stderr
        out[shift] = (r.returncode, json.loads(r.stdout))
    assert {row["window"] for row in out["dust"][1]["labels"]} == {
        "2026-11-02T00:00:00+00:00", "2026-11-03T00:00:00+00:00"}
    lines = [json.loads(x) for x in todo.read_text().splitlines()]
    assert lines and {x["ask"] for x in lines} == {"crack"}  # the only unproven limit
    assert all(x["labels"] is None for x in lines)
    p = [x["p_present"] for x in lines]
    assert p == sorted(p, reverse=True)
    assert out["none"][0] == 0 and out["none"][1]["outcome"] == "ok"
    assert out["dust"][0] == 1
    alarmed = {row["label"] for row in out["dust"][1]["labels"] if row["alarms"]}
    assert "spot" in alarmed  # dust looks like spots
    # The unshifted line: estimated rates against the truth the monitor never saw.
    prod = pd.read_csv(folder / "none" / "production.csv")
    truth = pd.read_csv(folder / "none" / "truth.csv", keep_default_na=False)
    truth = truth.set_index("image_id")["labels"]
    inside = total = 0
    for row in out["none"][1]["labels"]:
        # one row per detection (several per image for some labels): the image-level
        # score is the highest, as the monitor takes it
        sub = prod[prod["label"] == row["label"]].groupby("image_id")["score"].max()
        y = (truth.reindex(sub.index) == row["label"]).to_numpy()
        fired = sub.to_numpy() >= row["threshold"]
        true = {"defect_rate": y.mean(),
                "false_accept_rate": (y & ~fired).sum() / max(y.sum(), 1),
                "false_reject_rate": (~y & fired).sum() / (~y).sum()}
        assert row["firing_low"] <= fired.sum() <= row["firing_high"]
        for name, value in true.items():
            if name == "false_accept_rate" and y.sum() == 0:
                continue  # no defect of this kind drawn: the rate does not exist
            lo, hi = row[f"{name}_interval"]
            total += 1
            inside += lo <= value <= hi
            if name == "defect_rate":  # the headline estimate must always cover
                assert lo <= value <= hi, (row["label"], name, value, lo, hi)
    # 95% prediction intervals: at most one of the error rates may miss by chance.
    assert inside >= total - 1, (inside, total)


def test_monitor_refuses_another_version_and_fits_80_columns(production, tmp_path):
    store_path, tf_path, folder = production
    src = folder / "none" / "production.csv"
    other = tmp_path / "v1.csv"
    other.write_text(src.read_text().replace(",v2,", ",v1,"))
    r = _run([*CLI, "monitor", str(other), "--thresholds", str(tf_path), "--store",
              str(store_path)])
    assert r.returncode == 2 and "model version v1" in r.stderr
    assert "Traceback" not in r.stderr
    head = tmp_path / "head.csv"  # a small window of the same line: the table at 80 columns
    rows = pd.read_csv(src)
    first = rows["image_id"].drop_duplicates().iloc[:100]  # whole images: every detection
    rows[rows["image_id"].isin(first)].to_csv(head, index=False)
    r = _run([*CLI, "monitor", str(head), "--thresholds", str(tf_path), "--store",
              str(store_path), "--resamples", "20"])
    assert r.returncode in (0, 1), r.stderr
    assert "surface-defect v2" in r.stdout and "PSI not judged: 100 images" in r.stdout
    assert all(len(line) <= 80 for line in r.stdout.splitlines())
