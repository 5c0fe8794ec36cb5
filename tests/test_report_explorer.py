"""The report's cutoff explorer, run in a real headless Chromium (Debian's ``chromium``,
driven by Playwright; nothing is downloaded). Without Chromium the browser tests skip,
except under CI (``CI=true``), where they fail: CI installs it (``.ci/run``)."""

from __future__ import annotations

import math
import os
import shutil

import numpy as np
import pytest

from calibrate.export.rounding import shortest_safe
from calibrate.report import write_report
from calibrate.report.explorer import encode_table, explorer_data
from calibrate.thresholds import evaluate_threshold, load_policy_file
from tests.parts_fixture import PARTS_POLICY

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def _missing_browser() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[test]')"
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        return (f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium; "
                ".ci/run installs it)")
    return None


def _require_browser() -> None:
    """Skip without Chromium or Playwright, but fail under CI, which must have them."""
    why = _missing_browser()
    if why:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"CI must run the explorer in Chromium: {why}")
        pytest.skip(why)


def test_no_chromium_skips_on_a_developer_machine_but_fails_under_ci(monkeypatch):
    monkeypatch.setattr(f"{__name__}.CHROMIUM", "/nonexistent/chromium")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match="Chromium is not installed"):
        _require_browser()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI must run the explorer"):
        _require_browser()


@pytest.fixture(scope="module")
def browser():
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        exe = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
        b = p.chromium.launch(executable_path=exe, args=ARGS)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture(scope="module")
def report(parts_store, tmp_path_factory):
    _, store_path = parts_store
    out = tmp_path_factory.mktemp("explorer-report")
    return write_report(store_path, load_policy_file(PARTS_POLICY), out, split="calibration")


@pytest.fixture(scope="module")
def page(browser, report):
    pg = browser.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    # the report is self-contained: any request other than the file itself is a bug
    requests: list[str] = []
    pg.on("request", lambda r: requests.append(r.url))
    pg.goto(report.html_path.resolve().as_uri())
    assert pg.evaluate("() => window.calibrateExplorer.ready") is True
    yield pg
    assert not errors, errors
    assert all(u.startswith(("file:", "data:", "blob:")) for u in requests), requests
    pg.close()


def _js_threshold(t: float):
    return ("+inf" if t > 0 else "-inf") if math.isinf(t) else float(t)


def _thresholds(r) -> list[float]:
    """Every other distinct score, the top ones, points between and beyond them, the
    infinities and the choice."""
    s = np.unique(r.curve.thresholds)
    finite = s[np.isfinite(s)]
    mids = (finite[1:] + finite[:-1]) / 2
    return sorted({*s[::2].tolist(), *s[-3:].tolist(), *mids[::7].tolist(), -math.inf, math.inf,
                   float(finite.min()) - 1, float(finite.max()) + 1, r.choice.threshold})


def test_evaluate_matches_python_on_every_label_and_version(page, report):
    results = [r for r in report.thresholds if r.choice is not None]
    assert {r.model_version for r in results} == {"v1", "v2"}
    assert len({r.label for r in results}) >= 4
    n_checked = 0
    for r in results:
        ts = _thresholds(r)
        got = page.evaluate(
            "([label, version, ts]) => ts.map(t => "
            "window.calibrateExplorer.evaluate(label, version, t))",
            [r.label, r.model_version, [_js_threshold(t) for t in ts]],
        )
        for t, js in zip(ts, got, strict=True):
            py = evaluate_threshold(r.curve, t, r.choice.policy)
            where = f"{r.label} {r.model_version} T={t!r}"
            assert js["false_accepts"] == py.false_accepts, where
            assert js["false_rejects"] == py.false_rejects, where
            assert (js["n_positive"], js["n_negative"]) == (py.n_positive, py.n_negative)
            assert js["false_accept_rate"] == py.false_accept_rate, where
            assert js["false_reject_rate"] == py.false_reject_rate, where
            for name in ("false_accept", "false_reject"):
                want = getattr(py, f"{name}_rate_upper")
                assert js[f"{name}_upper"] == pytest.approx(want, rel=1e-9, abs=0), where
            assert js["expected_cost"] == pytest.approx(py.expected_cost, rel=1e-12), where
            n_checked += 1
    assert n_checked > 1000


def test_beta_quantile_matches_scipy_far_from_the_parts_counts(page):
    from scipy.stats import beta

    cases = [(0.95, 1, 3000), (0.975, 1, 10**6), (0.95, 31, 10**6 - 30), (0.5, 2.5, 7.25),
             (0.999, 400, 600), (0.05, 10, 1)]
    got = page.evaluate("(cs) => cs.map(c => window.calibrateExplorer.betaQuantile(...c))", cases)
    for (p, a, b), js in zip(cases, got, strict=True):
        assert js == pytest.approx(beta.ppf(p, a, b), rel=1e-9), (p, a, b)


def _field(panel, name: str) -> str:
    return panel.locator(f'[data-field="{name}"]').inner_text()


def test_slider_updates_the_counts_and_marks_the_cutoffs(page, report):
    panels = page.locator("[data-explorer]")
    results = [r for r in report.thresholds if r.choice is not None]
    assert panels.count() == len(results)
    for i, r in enumerate(results):
        panel = panels.nth(i)
        assert r.label in panel.locator("h3").inner_text()
        c = r.choice
        # it opens at the chosen cutoff, with its figures
        assert _field(panel, "threshold") == ("never fire" if math.isinf(c.threshold)
                                              else repr(c.threshold))
        assert "chosen" in _field(panel, "here")
        assert int(_field(panel, "false_accepts").replace(",", "")) == c.false_accepts
        assert int(_field(panel, "false_rejects").replace(",", "")) == c.false_rejects
        assert panel.locator(".explorer-jumps button", has_text="chosen").count() == 1
        exported = panel.locator(".explorer-jumps button", has_text="exported")
        if c.deployable and math.isfinite(c.threshold):
            assert exported.count() == 1
            assert "exported" in _field(panel, "here")
            assert float(_field(panel, "deployable")) == shortest_safe(
                c.threshold, c.next_score_below).value
        else:
            assert exported.count() == 0
    # move one slider with the keyboard, as a person would
    panel = panels.nth(0)
    r = results[0]
    slider = panel.locator("input[type=range]")
    before = (_field(panel, "false_accepts"), _field(panel, "false_rejects"))
    slider.focus()
    slider.press("Home")  # lowest score: fire on everything
    fa_fr = (_field(panel, "false_accepts"), _field(panel, "false_rejects"))
    assert fa_fr != before
    n_neg = r.choice.n_negative
    assert int(fa_fr[0].replace(",", "")) == 0
    assert int(fa_fr[1].replace(",", "")) == n_neg
    slider.press("End")  # never fire
    assert _field(panel, "threshold") == "never fire"
    assert int(_field(panel, "false_accepts").replace(",", "")) == r.choice.n_positive
    assert _field(panel, "false_rejects") == "0"
    slider.press("ArrowLeft")  # the highest score
    top = float(r.curve.thresholds[0])
    assert _field(panel, "threshold") == repr(top)
    py = evaluate_threshold(r.curve, top, r.choice.policy)
    assert int(_field(panel, "false_accepts").replace(",", "")) == py.false_accepts
    assert _field(panel, "limits")


def test_embedded_data_is_compact_and_escaped(report):
    data = explorer_data(report.thresholds)
    html = report.html_path.read_text()
    assert str(data["json"]).split('"table":')[0] in html
    assert data["size"] < 200_000
    # a label name cannot end the script element
    assert "</script" not in str(data["json"]).lower()
    assert "<" not in str(data["json"])


def test_a_million_image_table_stays_a_few_mb():
    rng = np.random.default_rng(0)
    n = 10**6
    scores = np.unique(np.round(rng.random(n), 6))  # a detector reporting 6 decimals
    pos = rng.integers(0, 3, scores.size)
    neg = rng.integers(0, 3, scores.size)
    size = len(encode_table(scores, pos, neg))
    assert size < 4_000_000, size


def test_accept_action_no_result_scores_and_markup_in_labels(browser, tmp_path):
    """The toy store of test_report: an "accept" label named with markup, joint limits,
    images with no result (-inf) and a label that cannot be calibrated."""
    from jinja2 import Environment, PackageLoader

    from calibrate.store import ScoreStore
    from calibrate.thresholds import PolicySet, choose_thresholds_from_store
    from tests.test_report import XSS, build_store

    policies = PolicySet(
        defaults=dict(action="reject", cost_false_accept=20, cost_false_reject=1),
        labels={XSS: dict(action="accept", prevalence=0.4, max_false_accept_rate=0.3,
                          max_false_reject_rate=0.5)},
        source="explorer test policies",
    )
    with ScoreStore(build_store(tmp_path / "toy.duckdb"), read_only=True) as store:
        results = choose_thresholds_from_store(store, policies, detector="toy",
                                               split="calibration", held_out="")
    results = [r for r in results if r.choice is not None]
    assert any(r.choice.action == "accept" for r in results)
    assert any(np.isneginf(r.table.scores[0]) for r in results)
    env = Environment(loader=PackageLoader("calibrate.report", "templates"), autoescape=True)
    env.filters["num"] = lambda x: f"{int(x):,}"
    body = env.get_template("explorer.html.j2").render(explorer=explorer_data(results))
    assert XSS not in body
    page_path = tmp_path / "explorer.html"
    page_path.write_text(f"<!doctype html><html><body>{body}</body></html>", encoding="utf-8")
    pg = browser.new_page()
    try:
        errors: list[str] = []
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        pg.goto(page_path.as_uri())
        assert pg.evaluate("() => window.calibrateExplorer.ready") is True
        # the label with markup shows as text, and the page has no script of its own
        assert any(XSS in h for h in pg.locator("[data-explorer] h3").all_inner_texts())
        assert pg.locator("script").count() == 2
        for r in results:
            ts = _thresholds(r)
            got = pg.evaluate(
                "([l, v, ts]) => ts.map(t => window.calibrateExplorer.evaluate(l, v, t))",
                [r.label, r.model_version, [_js_threshold(t) for t in ts]])
            for t, js in zip(ts, got, strict=True):
                py = evaluate_threshold(r.curve, t, r.choice.policy)
                assert (js["false_accepts"], js["false_rejects"]) == (
                    py.false_accepts, py.false_rejects), (r.label, t)
                assert js["false_accept_upper"] == pytest.approx(py.false_accept_rate_upper,
                                                                 rel=1e-9, abs=0)
                assert js["false_reject_upper"] == pytest.approx(py.false_reject_rate_upper,
                                                                 rel=1e-9, abs=0)
                assert js["expected_cost"] == pytest.approx(py.expected_cost, rel=1e-12)
        with pytest.raises(Exception, match="no calibrated label"):
            pg.evaluate("() => window.calibrateExplorer.evaluate('nope', 'v1', 0.5)")
        assert not errors, errors
    finally:
        pg.close()
