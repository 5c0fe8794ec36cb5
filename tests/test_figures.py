"""The figures are computed once and drawn many times.

``from_result`` draws an analysis that is already computed (no threshold chosen, no
curve built again), and draws exactly what ``from_count_table`` draws from the same
data and policy; ``plot`` only draws, so it can be called again with every statistic
of the package disabled.
"""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

import calibrate.curves
import calibrate.stats
import calibrate.thresholds
import calibrate.report.figures as F
from calibrate.curves import ErrorCurve, count_table
from calibrate.errors import InputError
from calibrate.policy import Policy, PolicySet
from calibrate.report.figures import (
    DetCurveDisplay,
    ErrorRatesDisplay,
    ExpectedCostDisplay,
    ScoreHistogramDisplay,
    new_axes,
    overlay_results,
    overlay_versions,
)
from calibrate.thresholds import LabelThreshold, choose_thresholds

DISPLAYS = [ScoreHistogramDisplay, ErrorRatesDisplay, ExpectedCostDisplay, DetCurveDisplay]
KINDS = list(F._KINDS)
POLICY = dict(action="reject", cost_false_accept=20, cost_false_reject=1, prevalence=0.05,
              max_false_accept_rate=0.25)
FLOOR = 0.25


def _scores(seed: int, shift: float = 0.0, n: int = 1500):
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.25
    s = np.round(np.where(y, rng.normal(0.62, 0.14, n), rng.normal(0.4, 0.14, n)) + shift, 3)
    s[rng.random(n) < 0.04] = -np.inf  # no result
    return s, y


@pytest.fixture(scope="module")
def results() -> dict[str, LabelThreshold]:
    """Two versions of one label, analysed the way the report gets them."""
    frames = []
    for ver, shift in (("v1", 0.0), ("v2", 0.1)):
        s, y = _scores(3 if ver == "v1" else 4, shift)
        frames.append(pd.DataFrame(dict(detector="toy", model_version=ver, label="crack",
                                        score=s, positive=y)))
    out = choose_thresholds(pd.concat(frames), PolicySet(dict(POLICY)))
    return {r.model_version: dataclasses.replace(r, detection_floor=FLOOR) for r in out}


def _clean(values) -> tuple:
    a = np.asarray(values, dtype=np.float64).ravel()
    return tuple(np.where(np.isnan(a), -12345.0, a).round(12))


def drawn(ax) -> dict:
    """The data of everything drawn on ``ax`` except the title, comparable with ==."""
    def patch_xy(p):
        return _clean(p.get_patch_transform().transform(p.get_path().vertices))

    leg = ax.get_legend()
    return dict(
        lines=[(ln.get_label(), _clean(ln.get_xdata()), _clean(ln.get_ydata()),
                ln.get_color(), ln.get_linestyle(), ln.get_marker()) for ln in ax.lines],
        collections=[(c.get_label(), tuple(_clean(p.vertices) for p in c.get_paths()))
                     for c in ax.collections],
        patches=[(p.get_label(), patch_xy(p)) for p in ax.patches],
        texts=[(t.get_text(), _clean(t.get_position())) for t in ax.texts],
        legend=[t.get_text() for t in leg.get_texts()] if leg else [],
        limits=(_clean(ax.get_xlim()), _clean(ax.get_ylim())),
        ticks=[t.get_text() for t in ax.get_xticklabels()],
        xlabel=ax.get_xlabel(),
    )


# ---------------------------------------------------------------------------------------
# (a) from_result draws what from_count_table draws
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", DISPLAYS, ids=lambda c: c.__name__)
def test_from_result_draws_what_from_count_table_draws(cls, results):
    r = results["v1"]
    a = cls.from_result(r, show_title=False)
    b = cls.from_count_table(r.table, policy=Policy(**POLICY), label="crack",
                             detection_floor=FLOOR, show_title=False)
    assert a.threshold == b.threshold == r.choice.threshold
    assert drawn(a.ax_) == drawn(b.ax_)
    # the comparison sees a difference: another policy marks another threshold
    c = cls.from_count_table(r.table, policy=Policy(**{**POLICY, "cost_false_accept": 1}),
                             label="crack", detection_floor=FLOOR, show_title=False)
    assert c.threshold != a.threshold and drawn(c.ax_) != drawn(a.ax_)


@pytest.mark.parametrize("cls", DISPLAYS, ids=lambda c: c.__name__)
def test_from_result_with_a_given_threshold_marks_it(cls, results):
    r = results["v2"]
    a = cls.from_result(r, threshold=0.5, show_title=False)
    b = cls.from_count_table(r.table, policy=Policy(**POLICY), threshold=0.5, label="crack",
                             detection_floor=FLOOR, show_title=False)
    assert a.threshold == 0.5 and a.threshold_kind == "given"
    assert drawn(a.ax_) == drawn(b.ax_)


def test_the_marked_points_and_bands_are_the_results(results):
    r = results["v1"]
    d = ErrorRatesDisplay.from_result(r)
    ch = r.choice
    assert d.threshold_line_.get_xdata()[0] == ch.threshold
    assert sorted(d.chosen_points_.get_ydata()) == sorted(
        [ch.false_accept_rate, ch.false_reject_rate])
    # action "reject": false accepts are positives that do not fire
    fa_counts = np.round(d.arrays.false_accept_rate * ch.n_positive)
    lo, hi = calibrate.stats.clopper_pearson_interval(fa_counts, ch.n_positive, 0.95)
    np.testing.assert_allclose(d.arrays.false_accept_bounds[0], lo)
    np.testing.assert_allclose(d.arrays.false_accept_bounds[1], hi)
    band = d.band_false_accept_.get_paths()[0].vertices
    assert np.isclose(band[:, 1].max(), hi.max()) and np.isclose(band[:, 1].min(), lo.min())
    c = ExpectedCostDisplay.from_result(r)
    assert c.chosen_point_.get_ydata()[0] == ch.expected_cost
    thr, cost = c.costs()
    assert cost[0] == c.never_fire_line_.get_ydata()[0]
    assert c.infeasible_ is not None
    det = DetCurveDisplay.from_result(r)
    # action "reject": a false reject is a negative that fires, the DET's x axis
    assert det.chosen_point_.get_xdata()[0] == pytest.approx(norm.ppf(ch.false_reject_rate))
    assert det.chosen_point_.get_ydata()[0] == pytest.approx(norm.ppf(ch.false_accept_rate))
    # one version per axes: the title names it
    assert "toy v1" in det.ax_.get_title()


def test_overlay_results_draws_what_overlay_versions_draws(results):
    for kind in KINDS:
        a = overlay_results(results, kind=kind)
        b = overlay_versions({v: r.table for v, r in results.items()}, kind=kind,
                             policy=Policy(**POLICY), label="crack", detector="toy",
                             detection_floors={v: FLOOR for v in results})
        assert a[0].ax_ is a[1].ax_
        assert drawn(a[0].ax_) == drawn(b[0].ax_)
        title = a[0].ax_.get_title()
        assert title == b[0].ax_.get_title()
        assert title.startswith("crack: ") and title.endswith(", toy v1, v2")


def test_a_result_without_data_cannot_be_drawn(results):
    bad = LabelThreshold("toy", "v3", "dent", None, "the data has no positive items")
    for cls in DISPLAYS:
        with pytest.raises(InputError, match="no positive items"):
            cls.from_result(bad)
    with pytest.raises(InputError, match="kind must be"):
        overlay_results(results, kind="roc")
    with pytest.raises(InputError, match="needs a policy"):
        ExpectedCostDisplay.from_result(dataclasses.replace(
            results["v1"], choice=None, policy=None))


# ---------------------------------------------------------------------------------------
# (b) from_result and overlay_results choose nothing and build no curve
# ---------------------------------------------------------------------------------------


class Counter:
    """Wraps a function and counts its calls, delegating to the real one."""

    def __init__(self, fn):
        self.fn, self.calls = fn, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.fn(*args, **kwargs)


def _figure_modules():
    return [m for name, m in sorted(sys.modules.items())
            if name == "calibrate.report.figures" or name.startswith("calibrate.report.figures.")]


@pytest.fixture
def counted(monkeypatch):
    """Counters on every name by which the figures can choose, evaluate or build a curve."""
    fns = {
        "choose_threshold_from_curve": calibrate.thresholds.choose_threshold_from_curve,
        "evaluate_threshold": calibrate.thresholds.evaluate_threshold,
        "error_curve": calibrate.curves.error_curve,
    }
    counters = {name: Counter(fn) for name, fn in fns.items()}
    patched = []
    for mod in [calibrate.thresholds, calibrate.curves, *_figure_modules()]:
        for name, counter in counters.items():
            if hasattr(mod, name):
                monkeypatch.setattr(mod, name, counter)
                patched.append(f"{mod.__name__}.{name}")
    # the figures call them by these names; the counts below would be 0 otherwise
    assert "calibrate.report.figures.base.choose_threshold_from_curve" in patched
    assert "calibrate.report.figures.base.error_curve" in patched
    return counters


def test_from_result_and_overlay_results_choose_nothing(results, counted):
    for cls in DISPLAYS:
        cls.from_result(results["v1"])
    for kind in KINDS:
        overlay_results(results, kind=kind)
    assert counted["choose_threshold_from_curve"].calls == 0
    assert counted["error_curve"].calls == 0
    assert counted["evaluate_threshold"].calls == 0
    # a given threshold is evaluated, once per figure, never chosen
    for kind in KINDS:
        overlay_results(results, kind=kind, thresholds={"v2": 0.5})
    assert counted["evaluate_threshold"].calls == len(KINDS)
    assert counted["choose_threshold_from_curve"].calls == 0
    assert counted["error_curve"].calls == 0


@pytest.mark.parametrize("cls", DISPLAYS, ids=lambda c: c.__name__)
def test_from_count_table_chooses_once(cls, results, counted):
    table = results["v1"].table
    cls.from_count_table(table, policy=Policy(**POLICY))
    assert counted["choose_threshold_from_curve"].calls == 1
    assert counted["error_curve"].calls == 1
    cls.from_count_table(table, policy=Policy(**POLICY), threshold=0.5)
    assert counted["choose_threshold_from_curve"].calls == 1  # given: evaluated instead
    assert counted["evaluate_threshold"].calls == 1


def test_overlay_versions_chooses_once_per_version(results, counted):
    overlay_versions({v: r.table for v, r in results.items()}, kind="cost",
                     policy=Policy(**POLICY), thresholds={"v2": 0.5})
    assert counted["error_curve"].calls == 2
    assert counted["choose_threshold_from_curve"].calls == 1  # v2 has a given threshold
    assert counted["evaluate_threshold"].calls == 1


# ---------------------------------------------------------------------------------------
# (c) plot() only draws
# ---------------------------------------------------------------------------------------


def _refuse(*args, **kwargs):
    raise AssertionError("plot() computed a statistic")


@pytest.mark.parametrize("cls", DISPLAYS, ids=lambda c: c.__name__)
def test_plot_draws_again_without_computing(cls, results, monkeypatch):
    d = cls.from_result(results["v1"])
    first = drawn(d.ax_)
    for target, name in [
        (calibrate.stats, "clopper_pearson_interval"),
        (calibrate.stats, "clopper_pearson_upper"),
        (calibrate.stats, "max_errors_within"),
        (Policy, "cost_weights"),
        (Policy, "expected_cost"),
        (Policy, "error_allowances"),
        (ErrorCurve, "counts_at"),
        (ErrorCurve, "equal_error_rate"),
        (ErrorCurve, "with_never_fire"),
        (ErrorCurve, "from_count_table"),
        *[(m, n) for m in [calibrate.thresholds, calibrate.curves, *_figure_modules()]
          for n in ("choose_threshold_from_curve", "evaluate_threshold", "error_curve",
                    "count_table") if hasattr(m, n)],
    ]:
        monkeypatch.setattr(target, name, _refuse)
    if cls is not ScoreHistogramDisplay:  # the histogram draws the table itself
        with pytest.raises(AssertionError, match="computed a statistic"):
            cls.from_result(results["v1"])  # the constructor does compute them
    again = [drawn(d.plot(ax=new_axes()).ax_) for _ in range(2)]
    # from_result titled the first axes with the version; plot() uses the label only
    assert again[0] == again[1] == first
    assert d.ax_.get_title().startswith("crack: ")


def test_plot_can_thin_further_but_keeps_the_computed_points(results):
    d = ErrorRatesDisplay.from_result(results["v1"], max_points=300)
    n = d.arrays.thresholds.size
    assert n <= 300 and d.line_false_accept_.get_xdata().size == n
    d.plot(ax=new_axes(), max_points=50)
    assert d.line_false_accept_.get_xdata().size <= 50
    assert d.band_false_accept_ is not None
    d.plot(ax=new_axes(), bands=False)
    assert d.band_false_accept_ is None


# ---------------------------------------------------------------------------------------
# The package keeps every old name
# ---------------------------------------------------------------------------------------


def test_the_package_keeps_the_old_names():
    from calibrate.policy import error_names
    from calibrate.thresholds import recorded_detection_floor

    assert F.error_names is error_names
    assert F.recorded_detection_floor is recorded_detection_floor
    assert F._plain("a$b") == r"a\$b"
    assert set(F._KINDS) == {"histogram", "rates", "cost", "det"}
    for name in ("DetCurveDisplay", "ErrorRatesDisplay", "ExpectedCostDisplay",
                 "ScoreHistogramDisplay", "figure_key", "new_axes", "overlay_versions",
                 "plot_version_comparison", "overlay_results"):
        assert name in F.__all__ and getattr(F, name) is not None
    s, y = _scores(9)
    assert ScoreHistogramDisplay.from_predictions(s, y, policy=Policy(**POLICY)).threshold_line_
    # one class only: the histogram still draws, like before the package existed
    only_neg = ScoreHistogramDisplay.from_predictions(s[~y], y[~y])
    assert only_neg.patches_negative_ and only_neg.threshold_line_ is None
    with pytest.raises(InputError):
        ErrorRatesDisplay.from_predictions(s[~y], y[~y])
    assert count_table(s, y).total_positive == int(y.sum())
