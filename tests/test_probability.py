"""Calibration maps, prior shift and reliability against scikit-learn, simulation and hand
computation."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps
from sklearn.calibration import calibration_curve
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss
from sklearn.metrics import log_loss as sk_log_loss

from calibrate import stats
from calibrate.curves import count_table
from calibrate.errors import InputError
from calibrate.probability import (
    ISOTONIC_MIN_PER_CLASS,
    calibration_map_from_dict,
    fit_calibration_map,
    prior_shift,
)
from calibrate.reliability import (
    brier_score,
    equal_mass_bins,
    evaluate_calibration,
    expected_calibration_error,
    log_loss,
    reliability_bins,
)
from calibrate.score_meaning import cutoff_meaning, score_meaning

DOC = Path(__file__).resolve().parents[1] / "docs" / "calibration.md"


def _data(n=1500, prevalence=0.25, seed=0, sep=1.5):
    """Scores on a 0-1 scale: logistic of a Gaussian per class (overlapping)."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < prevalence
    z = rng.normal(size=n) + sep * y
    return 1.0 / (1.0 + np.exp(-z)), y


def _clip(p, n):
    e = 0.5 / (n + 1)
    return np.clip(p, e, 1 - e)


def test_isotonic_matches_scikit_learn_on_the_same_rows():
    s, y = _data()
    s = np.round(s, 2)  # ties: the count table's weights must equal repeated rows
    cmap = fit_calibration_map(s, y, method="isotonic")
    iso = IsotonicRegression(out_of_bounds="clip", y_min=0, y_max=1).fit(s, y)
    np.testing.assert_allclose(cmap.predict(s), _clip(iso.predict(s), s.size), atol=1e-12)
    # Between scores: sklearn's own knots, their values clipped (the map clips knots).
    probe = np.linspace(-0.5, 1.5, 301)
    want = np.interp(probe, iso.X_thresholds_, _clip(iso.y_thresholds_, s.size))
    np.testing.assert_allclose(cmap.predict(probe), want, atol=1e-12)


@pytest.mark.parametrize("method", ["logistic", "logistic_logit", "beta"])
def test_parametric_maps_match_unpenalised_logistic_regression(method):
    s, y = _data(seed=1)
    cmap = fit_calibration_map(s, y, method=method)
    c = np.clip(s, 1e-6, 1 - 1e-6)
    feats = {"logistic": s[:, None], "logistic_logit": np.log(c / (1 - c))[:, None],
             "beta": np.column_stack([np.log(c), -np.log1p(-c)])}[method]
    lr = LogisticRegression(C=np.inf, max_iter=10_000, tol=1e-10).fit(feats, y)
    if method == "beta":
        assert (lr.coef_ >= 0).all()  # the unconstrained fit is the constrained one here
    order = np.argsort(s)
    np.testing.assert_allclose(cmap.predict(s[order]),
                               _clip(lr.predict_proba(feats[order])[:, 1], s.size), atol=2e-4)


def test_a_count_table_fits_the_same_map_as_its_rows():
    s, y = _data(seed=2)
    s = np.round(s, 3)
    for method in ("logistic", "isotonic"):
        a = fit_calibration_map(s, y, method=method)
        b = fit_calibration_map(count_table(s, y), method=method)
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-9)


def test_auto_picks_the_lowest_cross_validated_log_loss_and_isotonic_needs_data():
    s, y = _data(seed=3)
    cmap = fit_calibration_map(s, y)
    assert cmap.method == min(cmap.cv_log_loss, key=cmap.cv_log_loss.get)
    assert set(cmap.cv_log_loss) == {"logistic", "logistic_logit", "beta", "isotonic"}
    few = np.flatnonzero(y)[: ISOTONIC_MIN_PER_CLASS - 1]
    keep = np.concatenate([few, np.flatnonzero(~y)])
    small = fit_calibration_map(s[keep], y[keep])
    assert "isotonic" not in small.cv_log_loss
    with pytest.raises(InputError, match="isotonic|positives and negatives"):
        fit_calibration_map(s[keep], y[keep], method="isotonic")
    # Rekognition's 0-100 scale: no logit or beta candidates.
    wide = fit_calibration_map(100 * s, y)
    assert set(wide.cv_log_loss) == {"logistic", "isotonic"}


def test_no_result_and_the_detection_floor_get_their_own_probability():
    s, y = _data(seed=4)
    s = s.copy()
    s[:40] = -np.inf  # no result
    k = int(y[:40].sum())
    cmap = fit_calibration_map(s, y, method="logistic")
    assert cmap.no_result_counts == (k, 40 - k)
    assert cmap.predict([-np.inf])[0] == pytest.approx((k + 0.5) / 41)
    floored = fit_calibration_map(s, y, method="logistic", detection_floor=0.2)
    below = np.isfinite(s) & (s < 0.2)
    k2, n2 = int(y[:40].sum() + y[below].sum()), 40 + int(below.sum())
    assert floored.predict([0.1, -np.inf]) == pytest.approx([(k2 + 0.5) / (n2 + 1)] * 2)
    none = fit_calibration_map(*_data(seed=4), method="logistic")
    assert none.no_result_probability is None
    with pytest.raises(InputError, match="no such image"):
        none.predict([-np.inf])
    with pytest.raises(InputError, match="NaN"):
        none.predict([np.nan])


def test_prior_shift_is_bayes_rule_on_the_odds_against_the_true_posterior():
    # Gaussian classes N(0,1) / N(1.5,1): the posterior at any prevalence is known.
    def posterior(x, pi):
        f1, f0 = sps.norm.pdf(x, 1.5), sps.norm.pdf(x)
        return pi * f1 / (pi * f1 + (1 - pi) * f0)

    x = np.linspace(-3, 5, 50)
    for a, b in ((0.3, 0.02), (0.02, 0.6), (0.5, 0.5)):
        np.testing.assert_allclose(prior_shift(posterior(x, a), a, b), posterior(x, b),
                                   rtol=1e-10)
    assert prior_shift(prior_shift(0.3, 0.2, 0.01), 0.01, 0.2) == pytest.approx(0.3)


def test_a_map_fitted_on_an_enriched_sample_and_shifted_matches_the_line_by_simulation():
    rng = np.random.default_rng(5)
    n, sample_pi, line_pi = 6000, 0.3, 0.03
    y = rng.random(n) < sample_pi
    x = rng.normal(size=n) + 1.5 * y
    cmap = fit_calibration_map(x, y, method="logistic", prevalence=line_pi)
    # The line: a large population at its own prevalence; observed share per score bin.
    m = 400_000
    yl = rng.random(m) < line_pi
    xl = rng.normal(size=m) + 1.5 * yl
    edges = np.quantile(xl, np.linspace(0, 1, 11))
    b = np.clip(np.searchsorted(edges, xl, side="right") - 1, 0, 9)
    for k in range(10):
        sel = b == k
        observed = yl[sel].mean()
        predicted = cmap.predict(xl[sel]).mean()
        se = math.sqrt(observed * (1 - observed) / sel.sum()) + 0.15 * observed
        assert abs(predicted - observed) < 4 * se + 1e-3, (k, observed, predicted)


def test_brier_log_loss_and_ece_by_hand_and_against_scikit_learn():
    p = np.array([0.1, 0.2, 0.4, 0.6, 0.8, 0.9])
    y = np.array([0, 0, 1, 0, 1, 1])
    # by hand: squared errors .01 .04 .36 .36 .04 .01 -> 0.82 / 6
    assert brier_score(p, y) == pytest.approx(0.82 / 6)
    assert brier_score(p, y) == pytest.approx(brier_score_loss(y, p))
    assert log_loss(p, y) == pytest.approx(sk_log_loss(y, p))
    # 3 equal-mass bins: {.1,.2} obs 0 pred .15; {.4,.6} obs .5 pred .5; {.8,.9} obs 1 pred .85
    assert list(equal_mass_bins(p, n_bins=3)) == [0, 0, 1, 1, 2, 2]
    assert expected_calibration_error(p, y, n_bins=3) == pytest.approx((0.3 + 0 + 0.3) / 6)
    # weights are repeated rows
    w = np.array([3, 1, 2, 2, 1, 3])
    rows = np.repeat(np.arange(6), w)
    assert brier_score(p, y, w) == pytest.approx(brier_score(p[rows], y[rows]))
    assert log_loss(p, y, w) == pytest.approx(log_loss(p[rows], y[rows]))


def test_ece_bins_match_scikit_learns_quantile_calibration_curve():
    rng = np.random.default_rng(6)
    p = rng.random(200)
    y = rng.random(200) < p
    rb = reliability_bins(p, y, n_bins=10)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=10, strategy="quantile")
    np.testing.assert_allclose(rb.observed, prob_true)
    np.testing.assert_allclose(rb.mean_predicted, prob_pred)
    assert (rb.n == 20).all()
    ece = np.sum(rb.n / 200 * np.abs(prob_true - prob_pred))
    assert expected_calibration_error(p, y, n_bins=10) == pytest.approx(ece)
    lo, hi = stats.clopper_pearson_interval(rb.n_positive, rb.n, 0.95)
    np.testing.assert_allclose(rb.lower, lo)
    np.testing.assert_allclose(rb.upper, hi)


def test_ties_never_straddle_an_equal_mass_bin_edge():
    p = np.array([0.1] * 7 + [0.5] * 2 + [0.9])
    b = equal_mass_bins(p, n_bins=5)
    for v in np.unique(p):
        assert len(set(b[p == v])) == 1


def test_held_out_metrics_carry_seeded_bootstrap_intervals():
    s, y = _data(seed=7)
    fit, held = slice(0, 1000), slice(1000, None)
    cmap = fit_calibration_map(s[fit], y[fit], prevalence=0.02)
    table = count_table(s[held], y[held])
    ev = evaluate_calibration(cmap, table, n_resamples=300, seed=1)
    # evaluated at the sample's prevalence, not the line's
    p = cmap.at_prevalence(cmap.sample_prevalence).predict(s[held])
    assert ev.brier == pytest.approx(brier_score(p, y[held]))
    assert ev.ece == pytest.approx(expected_calibration_error(p, y[held]))
    for v, (lo, hi) in ((ev.brier, ev.brier_interval), (ev.log_loss, ev.log_loss_interval),
                        (ev.ece, ev.ece_interval)):
        assert lo <= v <= hi
    again = evaluate_calibration(cmap, table, n_resamples=300, seed=1)
    assert again.ece_interval == ev.ece_interval
    assert ev.bins.n.sum() == table.total_positive + table.total_negative


def test_cutoff_meaning_is_the_shifted_precision_and_its_interval_covers():
    s, y = _data(seed=8)
    table = count_table(s, y)
    pi = 0.02
    cm = cutoff_meaning(table, 0.7, pi)
    fired = s >= 0.7
    sample = y.mean()
    assert cm.p_fired == pytest.approx(prior_shift(y[fired].mean(), sample, pi))
    assert cm.p_passed == pytest.approx(prior_shift(y[~fired].mean(), sample, pi))
    # Coverage of the stated 95% (seeded): draw counts from known rates.
    rng = np.random.default_rng(9)
    tpr, fpr, n_pos, n_neg = 0.8, 0.05, 60, 600
    truth = pi * tpr / (pi * tpr + (1 - pi) * fpr)
    hits = 0
    for _ in range(400):
        tp, fp = rng.binomial(n_pos, tpr), rng.binomial(n_neg, fpr)
        t = count_table(np.r_[np.ones(tp), np.zeros(n_pos - tp), np.ones(fp),
                              np.zeros(n_neg - fp)],
                        np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)])
        lo, hi = cutoff_meaning(t, 1.0, pi).p_fired_interval
        hits += lo <= truth <= hi
    assert hits / 400 >= 0.95


def test_score_meaning_bands_put_the_cutoff_on_an_edge():
    s, y = _data(seed=10)
    table = count_table(s, y)
    cmap = fit_calibration_map(table, prevalence=0.02)
    sm = score_meaning(cmap, table, threshold=0.77)
    assert 0.77 in sm.low and sm.n.sum() == s.size
    assert (sm.fires == (sm.low >= 0.77)).all()
    sample = y.mean()
    sel = (s >= sm.low[-1])
    assert sm.probability[-1] == pytest.approx(prior_shift(y[sel].mean(), sample, 0.02))
    assert (sm.lower <= sm.probability).all() and (sm.probability <= sm.upper).all()


def _doc_reader():
    text = DOC.read_text(encoding="utf-8")
    block = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S)
                 if "def load_score_map" in b)
    ns: dict = {}
    exec(compile(block, str(DOC), "exec"), ns)  # noqa: S102 - our own documentation
    return ns["load_score_map"]


def test_exported_map_round_trips_and_the_documented_reader_agrees(tmp_path):
    s, y = _data(seed=11)
    s = s.copy()
    s[:30] = -np.inf
    cmap = fit_calibration_map(s, y, prevalence=0.02, detection_floor=0.05,
                               detector="surface-defect", model_version="v2", label="dent",
                               dataset="parts", dataset_fingerprint="abc")
    path = tmp_path / "dent.map.json"
    path.write_text(json.dumps(cmap.to_dict()))
    back = calibration_map_from_dict(json.loads(path.read_text()))
    probe = np.r_[-np.inf, 0.01, 0.05, np.linspace(0, 1, 97), 1.2]
    np.testing.assert_allclose(back.predict(probe), cmap.predict(probe))
    reader = _doc_reader()
    probability = reader(path, "v2")
    np.testing.assert_allclose([probability(None if np.isneginf(v) else float(v))
                                for v in probe], cmap.predict(probe), rtol=1e-12)
    with pytest.raises(ValueError, match="model version v2, not v1"):
        reader(path, "v1")
    with pytest.raises(InputError, match="belongs to surface-defect v2"):
        cmap.predict([0.5], model_version="v1")
    with pytest.raises(InputError, match="not a calibrate calibration map"):
        calibration_map_from_dict({"format": "other"})
    bad = cmap.to_dict()
    bad["knots"]["score"] = bad["knots"]["score"][::-1]
    with pytest.raises(InputError, match="ascending"):
        calibration_map_from_dict(bad)
