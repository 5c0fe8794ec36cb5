"""The report draws what was chosen: one choice per (detector, version, label), one
count table and one curve per split it shows, and it shows exactly the thresholds that
were exported."""

from __future__ import annotations

import sys

import pytest

import calibrate.curves
import calibrate.store
import calibrate.thresholds
from calibrate.policy import load_policy_file
from calibrate.report.html import build_report, write_report
from calibrate.store import ScoreStore
from calibrate.thresholds import choose_thresholds_from_store, format_rate
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


def _count_calls(monkeypatch) -> tuple[Counter, Counter, Counter]:
    """Count choices, curve builds and count-table queries, by every name the report's
    code path can reach them by; the real functions still run."""
    choices = Counter(calibrate.thresholds.choose_threshold_from_curve)
    curves = Counter(calibrate.curves.error_curve)
    real_table = ScoreStore.count_table
    tables = Counter(lambda self, *a, **k: real_table(self, *a, **k))
    monkeypatch.setattr(calibrate.thresholds, "choose_threshold_from_curve", choices)
    monkeypatch.setattr(calibrate.thresholds, "error_curve", curves)
    monkeypatch.setattr(ScoreStore, "count_table",
                        lambda self, *a, **k: tables(self, *a, **k))
    for mod in list(sys.modules.values()):
        name = getattr(mod, "__name__", "") or ""
        if name.startswith("calibrate.report"):
            for attr, fake in (("choose_threshold_from_curve", choices), ("error_curve", curves)):
                if hasattr(mod, attr):
                    monkeypatch.setattr(mod, attr, fake)
    return choices, curves, tables


def test_a_report_over_the_parts_study_makes_one_choice_per_combination(
        parts_store, tmp_path, monkeypatch):
    choices, curves, tables = _count_calls(monkeypatch)
    result = write_report(parts_store, load_policy_file(POLICY), tmp_path / "r",
                          split="calibration", workers=1)
    combos = {(r.detector, r.model_version, r.label) for r in result.thresholds}
    assert len(combos) == 8  # 2 versions x 4 defect labels
    # Calibrating on "calibration" holds "test" out by default: each combination's chosen
    # threshold is also evaluated there. That costs one more count table and one more
    # curve per combination (the held-out split's), but no second choice: the held-out
    # figures are the calibration choice's threshold evaluated, never chosen again.
    assert all(r.held_out_split == "test" and r.held_out is not None
               for r in result.thresholds)
    assert choices.calls == 8
    assert tables.calls == 16  # 8 calibration + 8 held-out
    assert curves.calls == 16  # 8 calibration + 8 held-out
    # per label-version 4 figures, per label 4 comparisons and 1 score meaning; PNG + SVG
    assert len(result.figure_paths) == 2 * (8 * 4 + 4 * 4 + 4)


def test_given_results_are_shown_as_they_are_held_out_included(parts_store, tmp_path,
                                                               monkeypatch):
    """A caller that already chose (the study) passes its results: the report queries,
    builds and chooses nothing more, and shows the held-out figures it was given."""
    policies = load_policy_file(POLICY)
    with ScoreStore(parts_store, read_only=True) as st:
        results = choose_thresholds_from_store(st, policies, split="calibration")
        keys = sorted({(r.detector, r.model_version) for r in results})
        choices, curves, tables = _count_calls(monkeypatch)
        report = build_report(st, policies, tmp_path / "r", keys=keys, split="calibration",
                              results=results, workers=1)
    assert (choices.calls, curves.calls, tables.calls) == (0, 0, 0)
    assert [r.held_out for r in report.thresholds] == [
        r.held_out for r in sorted(results, key=lambda r: (r.label, r.model_version))]
    md = report.markdown_path.read_text()
    for r in results:
        h = r.held_out
        assert f"{h.n_positive:,} / {h.n_negative:,}" in md
        assert f"{format_rate(h.false_accept_rate)} ({format_rate(h.false_accept_rate_upper)})" in md


def test_the_report_shows_exactly_what_was_exported(parts_store, tmp_path):
    policies = load_policy_file(POLICY)
    with ScoreStore(parts_store, read_only=True) as st:
        results = choose_thresholds_from_store(st, policies, split="calibration")
    tf = thresholds_file_from_results(results, source=str(parts_store))
    report = write_report(parts_store, policies, tmp_path / "r", split="calibration", workers=1)
    shown = {(r.detector, r.model_version, r.label): r.choice.threshold
             for r in report.thresholds if r.choice}
    exported = {e.key: e.threshold for e in tf.entries}
    # Everything exported is shown with the same threshold; every label the policy lets
    # deploy is exported (a refused one may be left out of the file).
    assert all(shown[k] == t for k, t in exported.items())
    deployable = {(r.detector, r.model_version, r.label) for r in report.thresholds
                  if r.choice and r.choice.deployable}
    assert deployable <= set(exported)
    html = (tmp_path / "r" / "index.html").read_text()
    for t in exported.values():
        assert repr(float(t)) in html or t == float("inf")


def _detection_policy(tmp_path):
    """The parts policy with dent decided per detection."""
    text = open(POLICY, encoding="utf-8").read().replace(
        "[labels.dent]\nprevalence = 0.012\n", "[labels.dent]\nunit = \"detection\"\n")
    path = tmp_path / "policy.toml"
    path.write_text(text)
    return load_policy_file(path)


def test_a_detection_label_is_matched_chosen_and_drawn_once(parts_store, tmp_path,
                                                            monkeypatch):
    policies = _detection_policy(tmp_path)
    choices, curves, tables = _count_calls(monkeypatch)
    real = ScoreStore.detection_count_table
    det_tables = Counter(lambda self, *a, **k: real(self, *a, **k))
    monkeypatch.setattr(ScoreStore, "detection_count_table",
                        lambda self, *a, **k: det_tables(self, *a, **k))
    result = write_report(parts_store, policies, tmp_path / "r", split="calibration",
                          workers=1)
    dent = [r for r in result.thresholds if r.label == "dent"]
    assert len(dent) == 2 and all(r.unit == "detection" for r in dent)
    assert choices.calls == 8
    assert det_tables.calls == 4  # 2 versions x (calibration + held-out)
    assert tables.calls == curves.calls == 12  # the 6 image-unit combinations, twice
    # 6 image-unit combinations x 4 figures + 3 labels' comparisons x 4, and the
    # detection label's 2 figures per version, and a score meaning per image-unit label
    # (score -> probability maps are fitted at the image unit); PNG + SVG each
    assert len(result.figure_paths) == 2 * (6 * 4 + 3 * 4 + 2 * 2 + 3)
    html = result.html_path.read_text()
    md = result.markdown_path.read_text()
    assert 'id="detection-unit"' in html and "Labels decided per detection" in md
    for r in dent:
        c = r.choice
        assert repr(float(c.threshold)) in html
        miss = f"{c.missed_objects:,} of {c.n_objects:,} objects (false accepts)"
        fd = f"{c.false_detections:,} on {c.n_images:,} images (false rejects)"
        assert miss in html and miss in md and fd in html and fd in md
        assert f"{c.true_detections:,} true of {c.true_detections + c.false_detections:,} kept" \
            in html
    assert "does not show detection-level labels yet" not in html


def test_every_label_per_detection_is_a_report_and_limits_say_miss_rate(parts_store, tmp_path):
    text = open(POLICY, encoding="utf-8").read().replace(
        'confidence = 0.95\n', 'confidence = 0.95\nunit = "detection"\n')
    text = "\n".join(line for line in text.splitlines()
                     if not line.startswith(("prevalence", "max_false_reject_rate")))
    path = tmp_path / "policy.toml"
    path.write_text(text + "\n")
    result = write_report(parts_store, load_policy_file(path), tmp_path / "r",
                          split="calibration", workers=1)
    assert {r.unit for r in result.thresholds} == {"detection"}
    html = result.html_path.read_text()
    assert "miss rate (false accept) \u2264\u00a00.1%" in html
    assert len(result.figure_paths) == 2 * 2 * 8
