"""Figures (Display objects) and the HTML report, against a real store file."""

from __future__ import annotations

import base64
import math
import socket
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import PolyCollection
from matplotlib.figure import Figure
from scipy.stats import norm

from calibrate import Policy, count_table, error_curve
from calibrate.errors import InputError
from calibrate.manifest import LabeledImage
from calibrate.report import (
    DetCurveDisplay,
    ErrorRatesDisplay,
    ExpectedCostDisplay,
    ScoreHistogramDisplay,
    plot_version_comparison,
    write_report,
)
from calibrate.report.figures import error_names, figure_key, recorded_detection_floor
from calibrate.store import ScoreStore
from calibrate.thresholds import PolicySet, choose_threshold_from_curve

XSS = "<script>alert(1)</script>"
LABELS = ("scratch", XSS)
FLOOR = 0.3
N = 240


def build_store(path: Path) -> Path:
    """Two versions of a toy detector; v2 cannot report below FLOOR (censored), some
    images have no result, some calls failed (with markup in the message), and the
    declared label "dent" has no positive image (it cannot be calibrated)."""
    rng = np.random.default_rng(7)
    images = []
    for i in range(N):
        labels = {lab for lab, p in zip(LABELS, (0.3, 0.25), strict=True) if rng.random() < p}
        images.append(LabeledImage(image_id=f"img-{i:04d}", uri=f"img-{i:04d}.png",
                                   labels=frozenset(labels),
                                   split="calibration" if i % 4 else "test"))
    with ScoreStore(path) as st:
        st.add_images("toy", images)
        for version, floor, shift in (("v1", None, 0.0), ("v2", FLOOR, 0.15)):
            run = st.begin_run(detector="toy", model_version=version, dataset="toy",
                               dataset_fingerprint="fp-toy", settings={"shift": shift},
                               labels=[*LABELS, "dent"], detection_floor=floor)
            rows, failed = [], []
            for k, img in enumerate(images):
                if k % 40 == 7:
                    failed.append((img.image_id, "image", "cannot decode <b>PNG</b>", 1))
                    continue
                for lab in LABELS:
                    s = rng.normal(0.62 if lab in img.labels else 0.38, 0.14) + shift
                    if rng.random() < 0.05 or (floor is not None and s < floor):
                        s = -math.inf  # no result (v2: censored below the floor)
                    rows.append((img.image_id, lab, float(s)))
            st.write_results_frame(run, pd.DataFrame(rows, columns=["image_id", "label", "score"]))
            st.record(run, [], failed)
            st.finish_run(run)
    return path


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    return build_store(tmp_path_factory.mktemp("store") / "toy.duckdb")


@pytest.fixture
def store(store_path):
    with ScoreStore(store_path, read_only=True) as st:
        yield st


POLICIES = PolicySet(
    defaults=dict(action="reject", cost_false_accept=20, cost_false_reject=1, prevalence=0.05),
    labels={XSS: dict(max_false_accept_rate=0.3)},
    source="test policies",
)


@pytest.fixture(scope="module")
def report(store_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "toy"
    return write_report(store_path, POLICIES, out, split="calibration", title="Toy <report>")


# ---------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------


def legend_texts(ax) -> list[str]:
    leg = ax.get_legend()
    return [t.get_text() for t in leg.get_texts()] if leg else []


def test_histogram_shows_no_result_bar_threshold_and_censoring(store):
    policy = POLICIES.for_label("scratch")
    d = ScoreHistogramDisplay.from_store(store, "toy", "v2", "scratch", policy=policy,
                                         split="calibration")
    assert isinstance(d.figure_, Figure) and isinstance(d.figure_.canvas, FigureCanvasAgg)
    assert d.ax_ in d.figure_.axes
    assert d.patches_positive_ and d.patches_negative_
    assert all(p in d.ax_.patches for p in d.patches_positive_)
    # a separate "no result" bar per class, labelled on the axis
    assert len(d.no_result_bars_.patches) == 2
    assert any(t.get_text() == "no\nresult" for t in d.ax_.get_xticklabels())
    table = store.count_table("toy", "v2", "scratch", split="calibration")
    n_nr_pos = int(table.n_positive[np.isneginf(table.scores)].sum())
    share = n_nr_pos / table.total_positive
    assert d.no_result_bars_.patches[0].get_height() == pytest.approx(share)
    # threshold line where the policy's choice is
    choice = choose_threshold_from_curve(error_curve(table), policy)
    assert d.threshold_line_ in d.ax_.lines
    assert d.threshold_line_.get_xdata()[0] == pytest.approx(choice.threshold)
    # censoring is shaded up to the recorded floor, not hidden
    assert recorded_detection_floor(store, "toy", "v2") == FLOOR
    assert d.censored_span_ in d.ax_.patches
    assert d.censored_span_.get_x() + d.censored_span_.get_width() == pytest.approx(FLOOR)
    assert any("detection floor 0.3" in t for t in legend_texts(d.ax_))
    v1 = ScoreHistogramDisplay.from_store(store, "toy", "v1", "scratch", policy=policy)
    assert v1.censored_span_ is None


def test_error_rates_have_exact_bands_names_and_the_chosen_point(store):
    policy = POLICIES.for_label(XSS)
    d = ErrorRatesDisplay.from_store(store, "toy", "v1", XSS, policy=policy)
    ax = d.ax_
    assert d.line_false_accept_ in ax.lines and d.line_false_reject_ in ax.lines
    for band in (d.band_false_accept_, d.band_false_reject_):
        assert isinstance(band, PolyCollection) and band in ax.collections
    texts = legend_texts(ax)
    assert "false accept (defects shipped)" in texts
    assert "false reject (good parts scrapped)" in texts
    assert any("limit 30%" in t for t in texts)
    assert d.threshold_line_ in ax.lines
    # markers at both rates of the chosen threshold
    curve = error_curve(store.count_table("toy", "v1", XSS))
    choice = choose_threshold_from_curve(curve, policy)
    ys = sorted(d.chosen_points_.get_ydata())
    assert ys == pytest.approx(sorted([choice.false_accept_rate, choice.false_reject_rate]))
    x = d.line_false_accept_.get_xdata()
    assert np.all(np.diff(x) > 0)  # thresholds ascend left to right
    assert XSS in ax.get_title()


def test_rates_without_policy_and_accept_action_names():
    rng = np.random.default_rng(1)
    y = rng.random(300) < 0.4
    s = np.where(y, rng.normal(0.7, 0.2, 300), rng.normal(0.4, 0.2, 300))
    d = ErrorRatesDisplay.from_predictions(s, y)
    assert d.threshold_line_ is None and d.chosen_points_ is None
    acc = ErrorRatesDisplay.from_predictions(
        s, y, policy=Policy(1, 5, action="accept"), label="genuine")
    texts = legend_texts(acc.ax_)
    assert error_names("accept")[0] in texts and error_names("accept")[1] in texts


def test_expected_cost_marks_the_minimum_and_shades_failing_limits(store):
    policy = POLICIES.for_label(XSS)
    d = ExpectedCostDisplay.from_store(store, "toy", "v1", XSS, policy=policy)
    thr, cost = d.costs()
    curve = d.curve
    choice = choose_threshold_from_curve(curve, policy)
    assert d.chosen_point_.get_ydata()[0] == pytest.approx(choice.expected_cost)
    assert d.chosen_point_.get_xdata()[0] == pytest.approx(choice.threshold)
    assert d.line_ in d.ax_.lines
    assert isinstance(d.infeasible_, PolyCollection)
    assert d.never_fire_line_.get_ydata()[0] == pytest.approx(cost[0])
    with pytest.raises(InputError, match="needs a policy"):
        ExpectedCostDisplay.from_predictions([0.1, 0.9], [False, True], policy=None)


def test_det_curve_uses_normal_deviates_and_marks_the_eer(store):
    d = DetCurveDisplay.from_store(store, "toy", "v1", "scratch",
                                   policy=POLICIES.for_label("scratch"))
    eer = d.equal_error_rate
    x, y = d.eer_point_.get_data()
    assert x[0] == pytest.approx(norm.ppf(eer.false_positive_rate))
    assert y[0] == pytest.approx(norm.ppf(eer.false_negative_rate))
    labels = [t.get_text() for t in d.ax_.get_xticklabels()]
    assert "50%" in labels and "0.1%" in labels
    assert d.ax_.get_xlabel() == "false reject (good parts scrapped) rate"
    assert any("equal error rate" in t for t in legend_texts(d.ax_))
    assert d.chosen_point_ in d.ax_.lines
    v2 = DetCurveDisplay.from_store(store, "toy", "v2", "scratch")
    assert v2.censored_span_ in v2.ax_.patches


def test_from_predictions_matches_from_count_table():
    rng = np.random.default_rng(2)
    y = rng.random(500) < 0.3
    s = np.round(np.where(y, rng.normal(0.6, 0.2, 500), rng.normal(0.4, 0.2, 500)), 2)
    s[:20] = -np.inf
    a = ErrorRatesDisplay.from_predictions(s, y, policy=Policy(10, 1))
    b = ErrorRatesDisplay.from_count_table(count_table(s, y), policy=Policy(10, 1))
    np.testing.assert_array_equal(a.line_false_accept_.get_ydata(),
                                  b.line_false_accept_.get_ydata())
    assert a.threshold == b.threshold
    # "no result" images are called out, not plotted at -inf
    assert any("no result" in t.get_text() for t in a.ax_.texts)
    assert np.all(np.isfinite(a.line_false_accept_.get_xdata()))


def test_plot_on_given_axes_and_overlay_versions(store):
    fig = Figure()
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    d = ErrorRatesDisplay.from_store(store, "toy", "v1", "scratch", ax=ax)
    assert d.ax_ is ax and d.figure_ is fig
    policy = POLICIES.for_label("scratch")
    for kind in ("histogram", "rates", "cost", "det"):
        ds = plot_version_comparison(store, "toy", "scratch", ["v1", "v2"], kind=kind,
                                     policy=policy)
        assert len(ds) == 2 and ds[0].ax_ is ds[1].ax_
        assert "v1, v2" in ds[0].ax_.get_title()
    rates = plot_version_comparison(store, "toy", "scratch", ["v1", "v2"], policy=policy)
    texts = legend_texts(rates[0].ax_)
    for v in ("v1", "v2"):
        assert f"{v}: false accept (defects shipped)" in texts
    # the x range covers both versions' scores
    lo, hi = rates[0].ax_.get_xlim()
    for r in rates:
        x = r.line_false_accept_.get_xdata()
        assert lo <= x.min() and x.max() <= hi
    with pytest.raises(InputError, match="kind must be"):
        plot_version_comparison(store, "toy", "scratch", ["v1"], kind="roc")


def test_figure_keys_are_safe_and_distinct():
    a, b = figure_key(XSS, "v1"), figure_key("<script>alert(2)</script>", "v1")
    assert a != b and all(c.isalnum() or c in "-._" for c in a)
    assert figure_key("scratch", "v2", "rates") == "scratch--v2--rates"


# ---------------------------------------------------------------------------------------
# HTML report
# ---------------------------------------------------------------------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
        "track", "wbr"}


class Checker(HTMLParser):
    """Records structure problems, tags, attributes and text of an HTML document."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.problems: list[str] = []
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str, str]] = []
        self.text: list[str] = []
        self.ids: list[str] = []
        self.doctype = False

    def handle_decl(self, decl):
        self.doctype = decl.lower() == "doctype html"

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for k, v in attrs:
            self.attrs.append((tag, k, v or ""))
            if k == "id":
                self.ids.append(v)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in VOID:
            self.stack.pop()

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            if tag in self.stack:
                while self.stack.pop() != tag:
                    pass
            return
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def parse(html: str) -> Checker:
    c = Checker()
    c.feed(html)
    c.close()
    return c


def test_report_is_valid_html_with_every_label_escaped(report):
    html = report.html_path.read_text(encoding="utf-8")
    c = parse(html)
    assert c.doctype
    assert c.problems == [] and c.stack == []
    assert c.tags[0] == "html" and c.tags.count("body") == 1 and c.tags.count("title") == 1
    assert len(c.ids) == len(set(c.ids)), "ids must be unique"
    # the label with markup is text, never markup: the only scripts are the explorer's
    # two inline ones (its JSON data and its code), never one from the data
    assert c.tags.count("script") <= 2
    assert not [v for tag, k, v in c.attrs if tag == "script" and k == "src"]
    assert XSS not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    text = "".join(c.text)
    for label in LABELS:
        assert label in text
    assert "Toy <report>" in text
    # every internal link points at an existing id
    for _tag, k, v in c.attrs:
        if k == "href" and v.startswith("#"):
            assert v[1:] in c.ids


def test_report_is_self_contained(report):
    html = report.html_path.read_text(encoding="utf-8")
    c = parse(html)
    srcs = [v for tag, k, v in c.attrs if k in ("src", "href", "data", "action", "srcset")]
    assert srcs
    for v in srcs:
        assert not v.lower().startswith(("http:", "https:", "//", "ftp:")), v
    imgs = [v for tag, k, v in c.attrs if tag == "img" and k == "src"]
    thumbs = [v for tag, k, v in c.attrs if tag == "img" and k == "class" and v == "thumb"]
    assert len(imgs) == len(report.figure_paths) // 2 + len(thumbs)
    for v in imgs:
        if v.startswith("data:image/jpeg;base64,"):  # an example thumbnail
            assert base64.b64decode(v.split(",", 1)[1])[:3] == b"\xff\xd8\xff"
            continue
        assert v.startswith("data:image/png;base64,")
        assert base64.b64decode(v.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "link" not in c.tags
    assert not [v for tag, k, v in c.attrs if tag == "script" and k == "src"]
    assert "@import" not in html and "url(" not in html


def test_report_content(report):
    html = report.html_path.read_text(encoding="utf-8")
    text = " ".join("".join(parse(html).text).split())
    assert "only valid for the model version it was calibrated on" in text
    assert "fixed sequence" in text and "without a multiplicity correction" in text
    assert "rule of 30" in text
    assert "/ 30" in text  # errors observed beside each rate in the summary
    assert "false accept (defects shipped)" in text
    # provenance: dataset, fingerprint, runs, failures with kind, count and reason
    assert "fp-toy" in text and "toy" in text
    for t in report.thresholds:
        assert t.n_failed == N // 40
    assert "cannot decode <b>PNG</b>" in text  # escaped, shown as text
    assert "image" in text and "Failures excluded" in text
    from calibrate import __version__

    assert f"calibrate {__version__}" in text
    # the comparison section applies one version's threshold to the other
    assert "Model versions compared" in text and "applied to" in text
    assert len(report.thresholds) == 6
    # a label that cannot be calibrated is listed with the reason, without figures
    dent = [t for t in report.thresholds if t.label == "dent"]
    assert len(dent) == 2 and all(t.choice is None for t in dent)
    assert "cannot calibrate: the data has no positive items" in text


def test_markdown_summary_and_figure_files(report):
    md = report.markdown_path.read_text(encoding="utf-8")
    assert XSS not in md and "&lt;script&gt;alert(1)&lt;/script&gt;" in md
    assert "| scratch | toy v1 |" in md
    assert "only valid for the model version" in md
    assert "multiplicity correction" in md
    # 2 labels x (2 versions x 4 figures + 4 comparisons + 1 score meaning) x (PNG + SVG)
    assert len(report.figure_paths) == 2 * (2 * 4 + 4 + 1) * 2
    for p in report.figure_paths:
        assert p.exists() and p.parent.name == "figures"
        data = p.read_bytes()
        assert data.startswith(b"\x89PNG") if p.suffix == ".png" else b"<svg" in data[:2000]
        assert f"figures/{p.name}" in md or p.suffix == ".svg"


def test_report_needs_no_network_and_replaces_stale_figures(store_path, tmp_path, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("the report tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    stale = tmp_path / "r" / "figures" / "old-label--toy--v0--rates.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    r = write_report(store_path, POLICIES, tmp_path / "r", model_versions=["v2"], workers=1)
    assert r.html_path.exists()
    text = r.html_path.read_text()
    assert "Model versions compared" not in text  # one version: nothing to compare
    assert len(r.figure_paths) == 2 * (4 + 1) * 2  # 4 figures + the score meaning per label
    assert not stale.exists()
    assert sorted((tmp_path / "r" / "figures").iterdir()) == sorted(r.figure_paths)


def test_default_out_dir_and_bad_selection(store_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = write_report(store_path, POLICIES, detector="toy", model_versions="v1", workers=1)
    assert r.html_path == Path("reports") / "toy" / "index.html"
    with pytest.raises(InputError, match="no model version"):
        write_report(store_path, POLICIES, tmp_path / "x", model_versions=["v1", "v9"])
    with pytest.raises(InputError, match="no score store"):
        write_report(tmp_path / "missing.duckdb", POLICIES, tmp_path / "x")
