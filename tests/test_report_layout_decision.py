"""The report leads with the decision: what to deploy per label, what it costs (in units
of one scrapped good part), the limits written out, what needs sign-off and a verdict
computed from the versions' costs; then the versions compared, then the detail (each
label collapsible), and the jargon explained after the answer."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser

import pytest

from calibrate.policy import load_policy_file
from calibrate.report.figures import examples as EX
from calibrate.report.html import _unit_cost, write_report
from calibrate.store import ScoreStore
from calibrate.thresholds import format_threshold
from tests.parts_fixture import build_parts_store

POLICY = "datasets/parts-policy.toml"


class _Text(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    folder = tmp_path_factory.mktemp("parts")
    _, store = build_parts_store(folder, n_parts=300)
    report = write_report(store, load_policy_file(POLICY), folder / "r", split="calibration",
                          workers=1)
    html = report.html_path.read_text(encoding="utf-8")
    p = _Text()
    p.feed(html)
    return dict(store=store, report=report, html=html, text=" ".join(p.text), tags=p.tags)


def _by_version(report):
    out: dict[str, dict] = {}
    for r in report.thresholds:
        if r.choice is not None:
            out.setdefault(r.model_version, {})[r.label] = r
    return out


def test_the_verdict_is_computed_from_the_versions_costs(parts):
    versions = _by_version(parts["report"])
    totals = {v: sum(_unit_cost(r.choice) for r in labels.values())
              for v, labels in versions.items()}
    best = min(totals, key=totals.get)
    other = next(v for v in versions if v != best)
    wins = [k for k in versions[best]
            if _unit_cost(versions[best][k].choice) < _unit_cost(versions[other][k].choice)]
    text = parts["text"]
    m = re.search(r"Deploy (v\d): cheaper than (v\d) on ([^.]*)\.", text)
    assert m, "the report states the verdict"
    assert (m.group(1), m.group(2)) == (best, other)
    n = len(versions[best])
    if len(wins) == n:
        assert "all four labels" in m.group(3)
    else:
        losers = sorted(set(versions[best]) - set(wins))
        assert m.group(3).endswith(f"labels (not on {', '.join(losers)})")


def test_the_decision_comes_first_with_cutoffs_costs_limits_and_sign_off(parts):
    text, html = parts["text"], parts["html"]
    versions = _by_version(parts["report"])
    best = re.search(r"Deploy (v\d)", text).group(1)
    first = text.index("Deploy " + best)
    # the answer comes before the detail and before the jargon explained
    for later in ("Every version and split in detail", "Clopper", "Doddington",
                  "fixed sequence", "How to read this report"):
        assert text.index(later) > first, later
    assert "expected cost per part, in units of one scrapped good part" in text
    block = html[:html.index('id="version-validity"')]
    for label, r in versions[best].items():
        assert format_threshold(r.choice.threshold) in block
        assert f"{_unit_cost(r.choice):.3g}" in block
    # limits written out with their verdicts
    assert "FR \u2264 10% <span class=\"mark met\"" in block
    assert "FA \u2264 0.1% <span class=\"mark warn\"" in block
    # which labels need sign-off, and why
    signoff = block[block.index("Needs sign-off</strong>"):]
    assert "crack" in signoff and "more positives, images with crack, needed" in signoff
    assert "cost-optimal option" in signoff
    # label navigation near the top
    nav = block[block.index('id="labels-nav"'):]
    for label in versions[best]:
        assert f'>{label}</a>' in nav


def test_detail_is_collapsible_and_rule_of_30_is_not_coloured_as_good(parts):
    html = parts["html"]
    details = [a for tag, a in parts["tags"] if tag == "details"
               and "label-detail" in a.get("class", "")]
    assert len(details) == 4  # one per label
    # the error counts against 30 are neutral: not the "good" colour
    assert re.search(r'class="small (met|warn)">\d+ / 30', html) is None
    assert 'class="small rule30"' in html


def test_example_thumbnails_from_readable_images(parts):
    thumbs = [a for tag, a in parts["tags"] if tag == "img" and a.get("class") == "thumb"]
    assert thumbs  # the parts images are local files: shown
    for a in thumbs:
        head, data = a["src"].split(",", 1)
        assert head in ("data:image/png;base64", "data:image/jpeg;base64")
        assert len(base64.b64decode(data)) > 50
    assert "The good parts that score highest" in parts["text"]
    assert "The defects that score lowest" in parts["text"]


def test_remote_images_are_skipped_with_a_note(parts, monkeypatch):
    r = next(r for r in parts["report"].thresholds if r.choice is not None)
    monkeypatch.setattr(EX, "_uris", lambda store, ids, dataset: {
        i: f"s3://bucket/{i}.png" for i in ids})
    with ScoreStore(parts["store"], read_only=True) as st:
        ex = EX.example_images(st, r, split="calibration")
    assert ex["negatives"] == [] and ex["positives"] == []
    assert "remote URIs (e.g. s3://bucket/" in ex["note"]


def test_figures_are_crisp_and_rates_use_a_log_scale(parts):
    from PIL import Image

    pngs = [p for p in parts["report"].figure_paths if p.suffix == ".png"]
    for p in pngs[:4]:
        with Image.open(p) as im:
            assert im.size[0] >= 900  # 6.4 in at >= 150 dpi
    from calibrate.report.figures import ErrorRatesDisplay, ScoreHistogramDisplay

    r = next(r for r in parts["report"].thresholds
             if r.choice is not None and r.choice.policy.max_false_accept_rate)
    d = ErrorRatesDisplay.from_result(r)
    assert d.ax_.get_yscale() == "symlog"
    lo, hi = d.ax_.get_ylim()
    assert lo < 0 < r.choice.policy.max_false_accept_rate < hi  # zero and limit visible
    assert not d.ax_.texts or all("FA" not in t.get_text() for t in d.ax_.texts)
    h = ScoreHistogramDisplay.from_result(r)
    assert h.ax_.get_yscale() == "symlog" and h.fire_span_ is not None
