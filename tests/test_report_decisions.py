"""The report tells decisions apart (deployed, needs sign-off, refused), lays out the
options of a label whose limits are not met, states the joint-limits rule, and shows the
held-out split's figures beside every choice (or says once that there is none)."""

from __future__ import annotations

import re

import pytest

from calibrate.report import write_report
from calibrate.report.figures.base import threshold_kind
from calibrate.thresholds import PolicySet, format_rate, format_threshold
from tests.test_report import XSS, build_store, parse

#: scratch: two limits the data cannot show, deployed anyway by the policy (sign-off);
#: XSS: two limits shown to fail at every threshold, refused (the default).
POLICIES = PolicySet(
    defaults=dict(action="reject", cost_false_accept=20, cost_false_reject=1, prevalence=0.05),
    labels={
        "scratch": dict(max_false_accept_rate=0.02, max_false_reject_rate=0.5,
                        if_limit_unproven="cost_optimal"),
        XSS: dict(max_false_accept_rate=0.05, max_false_reject_rate=0.05),
    },
    source="decision policies",
)


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    return build_store(tmp_path_factory.mktemp("store") / "toy.duckdb")


@pytest.fixture(scope="module")
def report(store_path, tmp_path_factory):
    return write_report(store_path, POLICIES, tmp_path_factory.mktemp("r") / "toy",
                        split="calibration", workers=1)


@pytest.fixture(scope="module")
def no_held_out(store_path, tmp_path_factory):
    # calibrating on every image leaves nothing held out
    return write_report(store_path, POLICIES, tmp_path_factory.mktemp("n") / "toy",
                        model_versions=["v2"], workers=1)


def text_of(path) -> str:
    return " ".join("".join(parse(path.read_text(encoding="utf-8")).text).split())


def by_label(report, label):
    return [r for r in report.thresholds if r.label == label and r.choice is not None]


def test_the_decisions_are_named_and_nothing_reads_as_chosen(report):
    scratch, xss = by_label(report, "scratch"), by_label(report, XSS)
    assert scratch and all(r.choice.needs_sign_off for r in scratch)
    assert xss and all(r.choice.decision == "refuse" for r in xss)
    html = report.html_path.read_text(encoding="utf-8")
    text = text_of(report.html_path)
    assert "NOT met" not in html
    assert text.count("needs sign-off") >= len(scratch)
    assert text.count("refused: not exported") >= len(xss)
    assert "none exported" in text
    # the method section no longer says a fallback is "chosen"
    assert "cheapest one whose limits hold." not in text
    assert "cheapest one whose limits can be shown to hold" in text
    assert "Unproven limits are a decision, not a fallback" in text
    # unproven (samples needed) and shown to fail (refuted) are told apart
    assert "shown to fail at every threshold (refuted)" in text
    assert re.search(r"unproven: [\d,]+ more positives needed", text)
    # the figures do not call an option that is not deployed "chosen"
    for r in xss:
        assert threshold_kind(r.choice).endswith("(not deployed)")
        assert f"{threshold_kind(r.choice)} threshold" in text  # figure captions
    for r in scratch:
        assert threshold_kind(r.choice) == "cost-optimal (needs sign-off)"


def test_options_are_laid_out_side_by_side(report):
    text = text_of(report.html_path)
    md = report.markdown_path.read_text(encoding="utf-8")
    assert "Limits not met: the options" in text and "## Limits not met: the options" in md
    for r in by_label(report, "scratch") + by_label(report, XSS):
        names = [o.name for o in r.choice.options]
        assert {"cost_optimal", "never_fire", "always_fire"} <= set(names)
        for o in r.choice.options:
            c = o.choice
            cells = (f"{format_rate(c.false_accept_rate)} ({format_rate(c.false_accept_rate_upper)})",
                     f"{format_rate(c.false_reject_rate)} ({format_rate(c.false_reject_rate_upper)})",
                     f"{c.expected_cost:.4g}")
            for cell in cells:
                assert cell in text and cell in md
            if not math_inf(c.threshold):
                assert format_threshold(c.threshold) in md
    assert "deployed: needs sign-off" in md and "shown for information; not deployed" in md
    # samples needed per option, where more data could show the limit
    assert re.search(r"unproven: [\d,]+ more positives needed", md)


def math_inf(x: float) -> bool:
    return x in (float("inf"), float("-inf"))


def test_joint_limits_rule_is_stated_in_the_method_and_on_each_label(report):
    text = text_of(report.html_path)
    md = report.markdown_path.read_text(encoding="utf-8")
    assert "Joint limits." in text and "1 − α/2 (Bonferroni)" in text
    two = [r for r in report.thresholds if r.choice and len(r.choice.limit_checks) == 2]
    assert len(two) == 4
    for r in two:
        assert [c.confidence for c in r.choice.limit_checks] == pytest.approx([0.975, 0.975])
    # summary row and label section of every label with two limits
    assert text.count("joint: each tested at 97.5% (Bonferroni)") == len(two)
    assert text.count("Both limits must hold together at 95%: each is tested at 97.5%") == len(two)
    assert md.count("joint: each tested at 97.5% (Bonferroni)") == len(two)
    assert "1 − α/2 (Bonferroni)" in md


def test_held_out_figures_stand_beside_every_choice(report):
    text = text_of(report.html_path)
    md = report.markdown_path.read_text(encoding="utf-8")
    chosen = [r for r in report.thresholds if r.choice is not None]
    assert chosen and all(r.held_out is not None and r.held_out_split == "test" for r in chosen)
    assert "No held-out split" not in text
    for r in chosen:
        h = r.held_out
        assert h.threshold == r.choice.threshold  # evaluated, not chosen again
        for cell in (f"{h.n_positive:,} / {h.n_negative:,}",
                     f"{format_rate(h.false_accept_rate)} ({format_rate(h.false_accept_rate_upper)})",
                     f"{format_rate(h.false_reject_rate)} ({format_rate(h.false_reject_rate_upper)})",
                     f"{h.expected_cost:.4g}"):
            assert cell in text and cell in md
        for flag in r.held_out_flags:
            assert flag in text and flag in md
    assert md.count("| held-out test") == len(chosen)
    # calibration-split bounds at a cost-chosen threshold are labelled as such
    assert text.count("bounds not adjusted for choosing T") == 2 * len(chosen)  # row, section
    assert md.count("calibration (not adjusted for choosing T)") == len(chosen)
    assert "held-out split test (honest)" in text
    flagged = [r for r in chosen if r.held_out_flags]
    assert flagged and "## Held-out flags" in md
    assert md.count("held-out test ⚑") == len(flagged)
    assert text.count("held-out disagrees:") == len(flagged)


def test_without_a_held_out_split_the_report_says_so_once(no_held_out):
    text = text_of(no_held_out.html_path)
    md = no_held_out.markdown_path.read_text(encoding="utf-8")
    assert all(r.held_out is None and r.held_out_split is None for r in no_held_out.thresholds)
    assert text.count("No held-out split") == 1
    assert md.count("No held-out split") == 1
    assert "held-out test" not in md and "honest)" not in text
    assert "## Held-out flags" not in md
    c = parse(no_held_out.html_path.read_text(encoding="utf-8"))
    assert c.problems == [] and c.stack == []


def test_held_out_can_be_turned_off(store_path, tmp_path):
    r = write_report(store_path, POLICIES, tmp_path / "r", split="calibration", held_out="",
                     model_versions=["v1"], workers=1)
    assert all(t.held_out_split is None for t in r.thresholds)
    text = text_of(r.html_path)
    assert text.count("No held-out split") == 1 and "the split 'calibration'" in text
