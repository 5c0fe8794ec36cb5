import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calibrate import InputError, Policy, count_table, error_curve
from calibrate.bootstrap import bootstrap_threshold
from calibrate.stats import (
    clopper_pearson_interval,
    clopper_pearson_upper,
    max_errors_within,
    samples_needed,
    zero_failure_sample_size,
)
from tests.reference import brute_samples_needed, cp_upper
from tests.test_curves import labeled_scores
from tests.test_thresholds import policies


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 400).flatmap(lambda n: st.tuples(st.integers(0, n), st.just(n))),
       st.sampled_from([0.5, 0.9, 0.95, 0.99]))
def test_upper_bound_matches_binomtest(kn, conf):
    k, n = kn
    assert clopper_pearson_upper(k, n, conf) == pytest.approx(cp_upper(k, n, conf), rel=1e-9, abs=1e-12)
    lo, hi = clopper_pearson_interval(k, n, conf)
    assert 0 <= lo <= k / n <= hi <= 1


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 3000), st.sampled_from([0.001, 0.01, 0.05, 0.2, 0.5]),
       st.sampled_from([0.8, 0.95, 0.99]))
def test_max_errors_within_is_the_monotone_frontier(n, limit, conf):
    k = max_errors_within(n, limit, conf)
    if k >= 0:
        assert clopper_pearson_upper(k, n, conf) <= limit
    if k + 1 <= n:
        assert clopper_pearson_upper(k + 1, n, conf) > limit


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([0.02, 0.05, 0.1, 0.3]), st.sampled_from([0.8, 0.95]),
       st.integers(0, 5), st.integers(0, 80))
def test_samples_needed_brute_force(limit, conf, errors, extra):
    n = errors + extra
    assert samples_needed(limit, conf, errors=errors, n=n) == brute_samples_needed(limit, conf, errors, n)


def test_rule_of_three():
    n = zero_failure_sample_size(0.001, 0.95)
    assert n == math.ceil(math.log(0.05) / math.log(0.999)) == 2995
    assert clopper_pearson_upper(0, n) <= 0.001 < clopper_pearson_upper(0, n - 1)
    assert samples_needed(0.001, errors=0, n=3000) == 0


@pytest.mark.parametrize("bad", [dict(errors=3, n=2), dict(errors=-1, n=2)])
def test_bad_counts(bad):
    with pytest.raises(InputError, match="errors <= n"):
        clopper_pearson_upper(bad["errors"], bad["n"])


@settings(max_examples=60, deadline=None)
@given(labeled_scores(max_size=40), policies, st.integers(1, 6), st.integers(0, 2**31))
def test_lazy_bootstrap_equals_full_expansion(data, policy, block, seed):
    s, y = data
    table = count_table(s, y)
    p = Policy(**policy)
    lazy = bootstrap_threshold(table, p, 25, seed=seed, block_size=block)
    full = bootstrap_threshold(table, p, 25, seed=seed, block_size=block, _exhaustive=True)
    np.testing.assert_array_equal(lazy.thresholds, full.thresholds)
    np.testing.assert_array_equal(lazy.expected_costs, full.expected_costs)


@settings(max_examples=40, deadline=None)
@given(labeled_scores(max_size=30), policies, st.integers(0, 2**31))
def test_each_resample_is_a_valid_choice(data, policy, seed):
    """Rebuild one resample's cell counts and check its choice by brute force."""
    s, y = data
    table = count_table(s, y)
    p = Policy(**policy)
    # block_size=1: the block-level multinomial is the whole resample.
    res = bootstrap_threshold(table, p, 5, seed=seed, block_size=1)
    rng = np.random.default_rng(seed)
    rng.integers(0, 2**63 - 1)
    n_pos, n_neg = table.total_positive, table.total_negative
    P = rng.multinomial(np.full(5, n_pos), table.n_positive[::-1] / n_pos)
    N = rng.multinomial(np.full(5, n_neg), table.n_negative[::-1] / n_neg)
    thr = table.scores[::-1]
    for r in range(5):
        resampled = np.repeat(thr, P[r]), np.repeat(thr, N[r])
        scores = np.r_[resampled[0], resampled[1]]
        truth = np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)]
        from tests.reference import brute_points

        rows = brute_points(scores, truth, **policy)
        feas = [row for row in rows if row["feasible"]]
        if not feas:
            assert np.isnan(res.thresholds[r])
            continue
        best = min(row["cost"] for row in feas)
        assert res.expected_costs[r] == pytest.approx(best, rel=1e-9, abs=1e-15)


def test_bootstrap_is_reproducible_and_sensible():
    rng = np.random.default_rng(0)
    y = rng.random(20_000) < 0.2
    s = np.round(rng.normal(size=y.size) + 2 * y, 2)
    p = Policy(cost_false_accept=10, cost_false_reject=1)
    a = bootstrap_threshold(error_curve(s, y), p, 200, seed=7)
    b = bootstrap_threshold(count_table(s, y), p, 200, seed=7)
    np.testing.assert_array_equal(a.thresholds, b.thresholds)
    assert a.feasible_fraction == 1.0
    lo, hi = a.interval(0.9)
    from calibrate import choose_threshold

    t = choose_threshold(s, y, cost_false_accept=10, cost_false_reject=1).threshold
    assert lo <= t <= hi
    assert hi - lo < 1.0


@settings(max_examples=200, deadline=None)
@given(labeled_scores(max_size=30), policies)
def test_bootstrap_and_choice_share_one_tie_rule(data, policy):
    """A resample that equals the data picks what choose_threshold picks."""
    import warnings

    from calibrate import NoRankingInformationWarning
    from calibrate.bootstrap import _Best
    from calibrate.thresholds import choose_threshold_from_curve

    s, y = data
    curve = error_curve(s, y)
    p = Policy(**policy)
    thr, fp, fn = curve.with_never_fire()
    best = _Best(p, curve.n_positive, curve.n_negative)
    # in pieces, in an awkward order
    idx = np.arange(-1, len(curve))
    for part in np.array_split(np.random.default_rng(0).permutation(idx.size), 3):
        best.add(fn[part], fp[part], idx[part])
    won = best.result()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoRankingInformationWarning)
        choice = choose_threshold_from_curve(curve, p)
    if won is None:
        assert not choice.limits_met
    else:
        assert thr[won[1] + 1] == choice.threshold


def test_bootstrap_distribution_matches_naive_row_resampling():
    """Same distribution of chosen thresholds as resampling rows (chi-square, fixed seeds)."""
    import warnings

    from scipy.stats import chi2_contingency

    from calibrate import NoRankingInformationWarning, choose_threshold

    rng = np.random.default_rng(11)
    y = np.r_[np.ones(25, bool), np.zeros(60, bool)]
    s = np.round(np.r_[rng.normal(1.2, 1, 25), rng.normal(0, 1, 60)], 1)
    s[:3] = -np.inf
    policy = dict(action="accept", cost_false_accept=3, cost_false_reject=1)
    R = 3000
    ours = bootstrap_threshold(count_table(s, y), Policy(**policy), R, seed=5, block_size=4)
    pos, neg = s[y], s[~y]
    naive = np.empty(R)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoRankingInformationWarning)
        for r in range(R):
            ps = rng.choice(pos, pos.size)
            ns = rng.choice(neg, neg.size)
            naive[r] = choose_threshold(np.r_[ps, ns], np.r_[np.ones(ps.size, bool),
                                        np.zeros(ns.size, bool)], **policy).threshold
    values = np.union1d(ours.thresholds, naive)
    table = np.array([[np.sum(ours.thresholds == v) for v in values],
                      [np.sum(naive == v) for v in values]])
    table = table[:, table.sum(axis=0) >= 10]  # chi-square needs populated cells
    assert chi2_contingency(table).pvalue > 1e-3
