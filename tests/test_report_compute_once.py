"""The report draws what was chosen: one count-table query and one choice per
(detector, version, label), and it shows exactly the thresholds that were exported."""

from __future__ import annotations


import pytest

import calibrate.curves
import calibrate.store
import calibrate.thresholds
from calibrate.policy import load_policy_file
from calibrate.report.html import write_report
from calibrate.store import ScoreStore
from calibrate.thresholds import choose_thresholds_from_store
from calibrate.thresholds_file import thresholds_file_from_results
from tests.parts_fixture import build_parts_store

POLICY = "datasets/parts-policy.toml"


@pytest.fixture(scope="module")
def parts_store(tmp_path_factory):
    _, store = build_parts_store(tmp_path_factory.mktemp("parts"), n_parts=300)
    return store


class Counter:
    """Wraps a function and counts its calls, delegating to the real one."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


def test_a_report_over_the_parts_study_makes_one_choice_per_combination(
        parts_store, tmp_path, monkeypatch):
    choices = Counter(calibrate.thresholds.choose_threshold_from_curve)
    curves = Counter(calibrate.curves.error_curve)
    real_table = ScoreStore.count_table
    tables = Counter(lambda self, *a, **k: real_table(self, *a, **k))
    # Patch every name the report's code path can reach the functions by.
    monkeypatch.setattr(calibrate.thresholds, "choose_threshold_from_curve", choices)
    monkeypatch.setattr(calibrate.thresholds, "error_curve", curves)
    monkeypatch.setattr(ScoreStore, "count_table",
                        lambda self, *a, **k: tables(self, *a, **k))
    for mod in list(__import__("sys").modules.values()):
        name = getattr(mod, "__name__", "") or ""
        if name.startswith("calibrate.report"):
            for attr, fake in (("choose_threshold_from_curve", choices), ("error_curve", curves)):
                if hasattr(mod, attr):
                    monkeypatch.setattr(mod, attr, fake)
    result = write_report(parts_store, load_policy_file(POLICY), tmp_path / "r",
                          split="calibration", workers=1)
    combos = {(r.detector, r.model_version, r.label) for r in result.thresholds}
    assert len(combos) == 8  # 2 versions x 4 defect labels
    assert tables.calls == 8
    assert choices.calls == 8
    assert curves.calls == 8
    assert len(result.figure_paths) == 2 * (8 * 4 + 4 * 4)  # PNG + SVG


def test_the_report_shows_exactly_what_was_exported(parts_store, tmp_path):
    policies = load_policy_file(POLICY)
    with ScoreStore(parts_store, read_only=True) as st:
        results = choose_thresholds_from_store(st, policies, split="calibration")
    tf = thresholds_file_from_results(results, source=str(parts_store))
    report = write_report(parts_store, policies, tmp_path / "r", split="calibration", workers=1)
    shown = {(r.detector, r.model_version, r.label): r.choice.threshold
             for r in report.thresholds if r.choice}
    exported = {e.key: e.threshold for e in tf.entries}
    assert shown == exported
    html = (tmp_path / "r" / "index.html").read_text()
    for t in exported.values():
        assert repr(float(t)) in html or t == float("inf")
