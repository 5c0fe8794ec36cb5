import math
import warnings

import numpy as np
from scipy.stats import beta
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calibrate import (
    InputError,
    NoRankingInformationWarning,
    Policy,
    choose_threshold,
    count_table,
    error_curve,
)
from calibrate.thresholds import evaluate_threshold
from tests.reference import brute_points, cp_upper
from tests.test_curves import labeled_scores

policies = st.fixed_dictionaries(
    {
        "action": st.sampled_from(["reject", "accept"]),
        "cost_false_accept": st.sampled_from([0.0, 0.5, 1.0, 3.0, 100.0, 1e4]),
        "cost_false_reject": st.sampled_from([0.0, 1.0, 2.0, 7.5]),
        "prevalence": st.none() | st.sampled_from([1e-6, 0.004, 0.3, 0.5, 0.999999]),
        "max_false_accept_rate": st.none() | st.sampled_from([0.01, 0.1, 0.3, 0.6]),
        "max_false_reject_rate": st.none() | st.sampled_from([0.05, 0.3, 0.8]),
        "confidence": st.sampled_from([0.5, 0.8, 0.95]),
    }
).filter(lambda p: p["cost_false_accept"] > 0 or p["cost_false_reject"] > 0)


def _close(a, b):
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15)


@settings(max_examples=400, deadline=None)
@given(labeled_scores(max_size=40), policies)
def test_choice_matches_brute_force(data, policy):
    s, y = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoRankingInformationWarning)
        choice = choose_threshold(s, y, **policy)
    rows = brute_points(s, y, **policy)
    feasible = [r for r in rows if r["feasible"]]
    chosen = next(r for r in rows if r["threshold"] == choice.threshold)
    # Everything printed is reproducible row by row.
    assert (choice.false_accepts, choice.false_rejects) == (chosen["fa"], chosen["fr"])
    assert _close(choice.expected_cost, chosen["cost"])
    n_fa = choice.n_positive if policy["action"] == "reject" else choice.n_negative
    n_fr = choice.n_negative if policy["action"] == "reject" else choice.n_positive
    assert choice.false_accept_rate == chosen["fa"] / n_fa
    assert choice.false_reject_rate == chosen["fr"] / n_fr
    assert choice.false_accept_rate_upper == pytest.approx(cp_upper(chosen["fa"], n_fa, policy["confidence"]), rel=1e-9)
    assert choice.false_reject_rate_upper == pytest.approx(cp_upper(chosen["fr"], n_fr, policy["confidence"]), rel=1e-9)
    if feasible:
        best = min(r["cost"] for r in feasible)
        assert choice.limits_met
        assert chosen["feasible"]
        assert _close(choice.expected_cost, best)
        assert choice.samples_needed is None
        # tie rule: among (numerically) cheapest, fewest false accepts
        ties = [r for r in feasible if _close(r["cost"], best)]
        assert chosen["fa"] == min(r["fa"] for r in ties)
        exact = [r for r in feasible if r["cost"] == best]
        if len(exact) == len(ties):  # no float noise among the ties: the rule is exact
            fewest = min(r["fa"] for r in exact)
            assert choice.threshold == max(r["threshold"] for r in exact if r["fa"] == fewest)
    else:
        assert not choice.limits_met
        assert choice.status in ("limits_unproven", "limits_refuted", "no_ranking_information")
        assert "No threshold meets every limit" in choice.explanation
        # Nothing is deployed by default; every option is laid out and reproducible.
        assert choice.decision == "refuse" and not choice.deployable
        names = [o.name for o in choice.options]
        assert names[0] == "cost_optimal" and {"never_fire", "always_fire"} <= set(names)
        free = min(r["cost"] for r in rows)
        assert _close(choice.option("cost_optimal").expected_cost, free)
        for o in choice.options:
            row = next(r for r in rows if r["threshold"] == o.choice.threshold)
            assert (o.choice.false_accepts, o.choice.false_rejects) == (row["fa"], row["fr"])
        # Refuted: at every threshold some limit's exact lower bound is above it.
        level = policy["confidence"]
        if len([k for k in ("max_false_accept_rate", "max_false_reject_rate")
                if policy[k] is not None]) == 2:
            level = 1 - (1 - level) / 2
        n_fa = choice.n_positive if policy["action"] == "reject" else choice.n_negative
        n_fr = choice.n_negative if policy["action"] == "reject" else choice.n_positive
        def shown_to_fail(r):
            lim_fa, lim_fr = policy["max_false_accept_rate"], policy["max_false_reject_rate"]
            return ((lim_fa is not None and r["fa"] and beta.ppf(1 - level, r["fa"], n_fa - r["fa"] + 1) > lim_fa)
                    or (lim_fr is not None and r["fr"] and beta.ppf(1 - level, r["fr"], n_fr - r["fr"] + 1) > lim_fr))
        refuted = all(shown_to_fail(r) for r in rows)
        assert (choice.status == "limits_refuted") == (choice.has_ranking_information and refuted)
        if refuted:  # more error-free data is no plan then
            assert choice.samples_needed is None
        else:
            assert choice.samples_needed is not None and choice.samples_needed > 0


@settings(max_examples=150, deadline=None)
@given(labeled_scores(max_size=40), policies)
def test_count_table_input_gives_the_same_choice(data, policy):
    s, y = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoRankingInformationWarning)
        a = choose_threshold(s, y, **policy)
        b = choose_threshold(count_table(s, y), **policy)
        c = choose_threshold(error_curve(s, y), **policy)
    assert a.threshold == b.threshold == c.threshold
    assert a.expected_cost == b.expected_cost == c.expected_cost


@settings(max_examples=150, deadline=None)
@given(labeled_scores(max_size=40), policies, st.floats(-2, 2))
def test_evaluate_threshold_matches_brute_force(data, policy, t):
    s, y = data
    curve = error_curve(s, y)
    r = evaluate_threshold(curve, t, Policy(**policy))
    fires = s >= t
    fp, fn = int(np.sum(fires & ~y)), int(np.sum(~fires & y))
    fa, fr = (fn, fp) if policy["action"] == "reject" else (fp, fn)
    assert (r.false_accepts, r.false_rejects) == (fa, fr)


def test_qc_example_by_hand():
    # 4 defects, 3 good parts. Shipping a defect costs 10x scrapping a good part.
    s = np.array([0.95, 0.9, 0.7, 0.6, 0.4, 0.2, 0.1])
    y = np.array([True, True, True, False, True, False, False])
    c = choose_threshold(s, y, cost_false_accept=10, cost_false_reject=1)
    assert c.threshold == 0.4
    assert (c.false_accepts, c.false_rejects) == (0, 1)
    # cost = 10 * (4/7) * 0/4 + 1 * (3/7) * 1/3
    assert c.expected_cost == pytest.approx(1 / 7)
    assert c.limits_met and c.status == "ok"
    # With the deployment prevalence at 1% the scrap cost dominates.
    c2 = choose_threshold(s, y, cost_false_accept=10, cost_false_reject=1, prevalence=0.01)
    assert c2.threshold == 0.7
    assert c2.prevalence == 0.01


def test_never_fire_is_chosen_when_cheapest():
    s = np.array([0.9, 0.8, 0.1])
    y = np.array([False, False, True])
    c = choose_threshold(s, y, cost_false_accept=1, cost_false_reject=5)
    assert c.threshold == np.inf
    assert c.false_rejects == 0 and c.false_accepts == 1


def test_accept_action_swaps_the_errors():
    s = np.array([0.9, 0.8, 0.3, 0.2])
    y = np.array([True, False, True, False])  # positives = genuine users
    c = choose_threshold(s, y, action="accept", cost_false_accept=100, cost_false_reject=1)
    # Letting an impostor (negative) through is expensive: fire only at 0.9.
    assert c.threshold == 0.9
    assert c.false_accepts == 0 and c.false_rejects == 1


def test_limit_out_of_reach_says_how_many_samples():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(500, bool), np.zeros(2000, bool)]
    s = np.r_[rng.normal(3, 1, 500), rng.normal(0, 1, 2000)]
    c = choose_threshold(
        s, y, cost_false_accept=50, cost_false_reject=1, max_false_accept_rate=0.001
    )
    assert not c.limits_met
    assert c.status == "limits_unproven" and c.decision == "refuse"
    (check,) = c.limit_checks
    assert check.about == "positive" and check.n == 500
    # Zero escapes seen at the shown threshold: needs 2995 positives in all (rule of three)
    assert check.errors == 0
    assert c.samples_needed == 2495 == check.samples_needed
    assert "2,495 more positives" in c.explanation


def test_limit_met_with_enough_data_and_bound_reported():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(6000, bool), np.zeros(6000, bool)]
    s = np.r_[rng.normal(4, 1, 6000), rng.normal(0, 1, 6000)]
    c = choose_threshold(
        s, y, cost_false_accept=1, cost_false_reject=1, max_false_accept_rate=0.001
    )
    assert c.limits_met
    assert c.false_accept_rate_upper <= 0.001
    # The unconstrained optimum (equal costs) sits near 2 and escapes far more defects.
    free = choose_threshold(s, y, cost_false_accept=1, cost_false_reject=1)
    assert free.threshold > c.threshold
    assert free.false_accept_rate_upper > 0.001


def test_conflicting_limits_are_refuted_not_fallen_back_from():
    s = np.array([0.9, 0.5, 0.5, 0.1])
    y = np.array([True, True, False, False])
    c = choose_threshold(
        s, y, cost_false_accept=1, cost_false_reject=1,
        max_false_accept_rate=0.01, max_false_reject_rate=0.01,
    )
    assert not c.limits_met
    # Each threshold breaks one limit with 1 error in 2: shown to fail, not "more data".
    assert c.status == "limits_refuted" and c.samples_needed is None
    assert "more data cannot help" in c.explanation
    assert c.threshold == c.option("cost_optimal").threshold and c.option("protective") is None
    assert len(c.limit_checks) == 2


def test_constant_scores_are_flagged_not_optimised():
    s = np.ones(10)
    y = np.array([True] * 3 + [False] * 7)
    with pytest.warns(NoRankingInformationWarning, match="same score"):
        c = choose_threshold(s, y, cost_false_accept=1, cost_false_reject=1)
    assert not c.has_ranking_information
    assert c.status == "no_ranking_information"
    assert c.threshold in (1.0, np.inf)
    assert "no ranking information" in c.explanation


def test_detected_or_not_is_ranking_information():
    # color_detector: 1.0 when it finds something, no result otherwise. Two levels.
    s = np.array([1.0, 1.0, -np.inf, -np.inf])
    y = np.array([True, False, False, False])
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoRankingInformationWarning)
        c = choose_threshold(s, y, cost_false_accept=5, cost_false_reject=1)
    assert c.has_ranking_information and c.threshold == 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(cost_false_accept=-1, cost_false_reject=1), "non-negative"),
        (dict(cost_false_accept=1, cost_false_reject=np.nan), "non-negative"),
        (dict(cost_false_accept=0, cost_false_reject=0), "both 0"),
        (dict(cost_false_accept=1, cost_false_reject=1, prevalence=0), "prevalence"),
        (dict(cost_false_accept=1, cost_false_reject=1, prevalence=1.0), "prevalence"),
        (dict(cost_false_accept=1, cost_false_reject=1, prevalence=-0.1), "prevalence"),
        (dict(cost_false_accept=1, cost_false_reject=1, action="scrap"), "action"),
        (dict(cost_false_accept=1, cost_false_reject=1, max_false_accept_rate=0), "max_false_accept_rate"),
        (dict(cost_false_accept=1, cost_false_reject=1, max_false_reject_rate=1.5), "max_false_reject_rate"),
        (dict(cost_false_accept=1, cost_false_reject=1, confidence=1.0), "confidence"),
        (dict(cost_false_accept="1", cost_false_reject=1), "number"),
        (dict(cost_false_accept=1, cost_false_reject=1, max_false_accept_rate="0.5"), "max_false_accept_rate must be a number"),
        (dict(cost_false_accept=1, cost_false_reject=1, confidence="0.9"), "confidence must be a number"),
        (dict(cost_false_accept=1, cost_false_reject=1, prevalence="0.1"), "prevalence"),
    ],
)
def test_bad_policy_is_a_clear_value_error(kwargs, match):
    with pytest.raises(InputError, match=match) as info:
        choose_threshold([0.1, 0.2], [True, False], **kwargs)
    assert isinstance(info.value, ValueError)


def test_one_class_data_is_refused():
    with pytest.raises(ValueError, match="no negative items"):
        choose_threshold([0.1, 0.2], [True, True], cost_false_accept=1, cost_false_reject=1)


def test_policy_from_mapping_names_unknown_keys():
    with pytest.raises(InputError, match=r"policy.toml \[labels.scratch\].*unknown key.*cost_fa"):
        Policy.from_mapping({"cost_fa": 1}, where="policy.toml [labels.scratch]")
    with pytest.raises(InputError, match="missing cost_false_reject"):
        Policy.from_mapping({"cost_false_accept": 1})
    p = Policy.from_mapping({"cost_false_accept": 1, "cost_false_reject": 2, "prevalence": 0.01})
    assert p.to_dict()["prevalence"] == 0.01


def test_huge_data_with_a_tiny_prevalence_is_exact():
    rng = np.random.default_rng(3)
    y = rng.random(300_000) < 0.05
    s = np.round(rng.normal(size=y.size) + 2 * y, 3)
    policy = dict(cost_false_accept=1000, cost_false_reject=1, prevalence=1e-5,
                  max_false_reject_rate=0.2)
    c = choose_threshold(s, y, **policy)
    curve = error_curve(s, y)
    thr, fp, fn = curve.with_never_fire()
    pi = 1e-5
    cost = 1000 * pi * fn / y.sum() + (1 - pi) * fp / (~y).sum()
    n_neg = int((~y).sum())
    upper = np.where(fp < n_neg, beta.ppf(0.95, fp + 1, np.maximum(n_neg - fp, 1)), 1.0)
    ok = upper <= 0.2
    assert ok.any()
    assert c.expected_cost == pytest.approx(cost[ok].min(), rel=1e-9)


def test_samples_needed_says_the_minimum_over_thresholds_too():
    pos = np.r_[np.linspace(0.5, 1, 99), 0.05]
    neg = np.linspace(0, 0.6, 100)
    c = choose_threshold(np.r_[pos, neg], np.r_[np.ones(100, bool), np.zeros(100, bool)],
                         cost_false_accept=1, cost_false_reject=1, max_false_accept_rate=0.02)
    (check,) = c.limit_checks
    assert check.errors == 1 and check.samples_needed == 136
    assert check.samples_needed_minimum == 49  # at a threshold with no false accepts
    assert "fewer than 49 more" in c.explanation
