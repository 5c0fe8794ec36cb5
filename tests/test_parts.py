"""Whole-part evaluation, joint cutoffs and the review band against brute force."""

from __future__ import annotations

import functools
import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest

from calibrate import Policy, PolicySet, choose_threshold, load_policy_file
from calibrate.errors import InputError
from calibrate.parts import (
    PartPolicy,
    choose_joint,
    choose_review_band,
    evaluate_parts,
    part_data,
    part_policy,
    part_problem,
)


def _data(seed: int, n: int = 36, n_labels: int = 3, decimals: int = 1):
    rng = np.random.default_rng(seed)
    truth = rng.random((n, n_labels)) < 0.2
    scores = np.round(rng.random((n, n_labels)) * 0.6 + truth * 0.3, decimals)
    scores[rng.random((n, n_labels)) < 0.1] = -np.inf  # some "no result"
    return part_data(scores, truth, [f"l{j}" for j in range(n_labels)])


def _candidates(d):
    return [np.concatenate([[np.inf], np.unique(d.scores[:, j])[::-1]])
            for j in range(len(d.labels))]


def _naive(d, high, low, pol: PartPolicy, prev: dict):
    """Cost per line part by a loop over parts, with the weights written out again."""
    pis = np.array([prev[lab] for lab in d.labels])
    pi = pol.prevalence if pol.prevalence is not None else 1 - np.prod(1 - pis)
    types = [tuple(row) for row in d.truth]
    good = [t for t in types if not any(t)]
    seen = {t for t in types if any(t)}
    r = {t: np.prod([pis[j] / (1 - pis[j]) for j in range(len(t)) if t[j]]) for t in seen}
    total_r = sum(r.values())
    cost = review_w = 0.0
    for i, t in enumerate(types):
        w = (1 - pi) / len(good) if not any(t) else pi * r[t] / total_r / types.count(t)
        s = d.scores[i]
        if any(s[j] >= high[j] for j in range(len(t))):
            cost += 0 if any(t) else w * pol.cost_false_reject
        elif any(s[j] >= low[j] for j in range(len(t))):
            cost += w * (pol.review_cost or 0)
            review_w += w
        elif any(t):
            k = max(pol.false_accept_weights.get(d.labels[j], 1.0) for j in range(len(t)) if t[j])
            cost += w * pol.cost_false_accept * k
    return cost, review_w


@functools.lru_cache(maxsize=None)
def _cp_upper(k: int, n: int, conf: float) -> float:
    """Exact one-sided upper bound, from scipy (the oracle; cached, it is slow)."""
    return binomtest(k, n).proportion_ci(2 * conf - 1, "exact").high


def _label_ok(d, j, pol: Policy | None, low: float, high: float) -> bool:
    """Own limits of label j: positives below T_low ship, negatives at/above T_high scrap."""
    if pol is None or not pol.has_limits:
        return True
    pos, s = d.truth[:, j], d.scores[:, j]
    conf = pol.limit_confidence
    for limit, k, n in ((pol.max_false_accept_rate, int((pos & (s < low)).sum()), int(pos.sum())),
                        (pol.max_false_reject_rate, int((~pos & (s >= high)).sum()),
                         int((~pos).sum()))):
        if limit is not None and _cp_upper(k, n, conf) > limit:
            return False
    return True


def _part_ok(fig, pol: PartPolicy) -> bool:
    conf = pol.limit_confidence
    for limit, k, n in ((pol.max_false_accept_rate, fig.false_accepts, fig.n_defective),
                        (pol.max_false_reject_rate, fig.false_rejects, fig.n_good)):
        if limit is not None and _cp_upper(k, n, conf) > limit:
            return False
    return pol.max_review_fraction is None or fig.line_review_fraction <= pol.max_review_fraction + 1e-12


POLICIES = [
    PartPolicy(20, 1),
    PartPolicy(20, 1, max_false_reject_rate=0.5),
    PartPolicy(5, 1, max_false_accept_rate=0.6, prevalence=0.1),
    PartPolicy(20, 1, false_accept_weights={"l1": 4}),
    PartPolicy(1, 1, max_false_accept_rate=0.05),  # usually unprovable on 36 parts
]


def _label_policies(seed: int):
    rng = np.random.default_rng(seed + 100)
    return {"l0": Policy(10, 1, prevalence=float(rng.uniform(0.01, 0.1))),
            "l1": Policy(10, 1, prevalence=0.05, max_false_reject_rate=0.6),
            "l2": Policy(10, 1)}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("pi", range(len(POLICIES)))
def test_joint_choice_equals_brute_force_where_exact(seed, pi):
    d, pol, lp = _data(seed), POLICIES[pi], _label_policies(seed)
    prob = part_problem(d, pol, lp)
    joint = choose_joint(prob, max_combinations=10**6)
    assert joint.exact and "exact" in joint.method
    freed = set(joint.freed_labels)
    cands = _candidates(d)
    for j, lab in enumerate(d.labels):  # a label is freed only when no cutoff meets its limits
        assert (lab in freed) == (not any(_label_ok(d, j, lp[lab], t, t) for t in cands[j]))
    best = math.inf
    for combo in itertools.product(*cands):
        if not all(lab in freed or _label_ok(d, j, lp[lab], t, t)
                   for j, (lab, t) in enumerate(zip(d.labels, combo))):
            continue
        fig = evaluate_parts(prob, np.array(combo))
        if len(combo) and hash(combo) % 4 == 0:  # a quarter of the sets: the loop oracle
            cost, _ = _naive(d, combo, combo, pol, prob.label_prevalence)
            assert fig.expected_cost == pytest.approx(cost, rel=1e-9, abs=1e-12)
        if _part_ok(fig, pol):
            best = min(best, fig.expected_cost)
    if math.isinf(best):
        assert not joint.figures.limits_met
    else:
        assert joint.figures.limits_met
        assert joint.figures.expected_cost == pytest.approx(best, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("seed", range(8))
def test_joint_choice_never_worse_than_per_label_choices(seed):
    d = _data(seed, n=60, decimals=2)
    lp = _label_policies(seed)
    pol = PartPolicy(20, 1, max_false_reject_rate=0.6)
    prob = part_problem(d, pol, lp)
    per_label = {}
    for j, lab in enumerate(d.labels):
        p = lp[lab]
        per_label[lab] = choose_threshold(
            d.scores[:, j], d.truth[:, j], cost_false_accept=p.cost_false_accept,
            cost_false_reject=p.cost_false_reject, prevalence=p.prevalence,
            max_false_reject_rate=p.max_false_reject_rate).threshold
    base = evaluate_parts(prob, per_label)
    joint = choose_joint(prob, start_cutoffs=per_label, max_combinations=0)
    assert not joint.exact and "not provably optimal" in joint.method
    if base.limits_met:
        assert joint.figures.limits_met
        assert joint.figures.expected_cost <= base.expected_cost + 1e-12
    exact = choose_joint(prob, start_cutoffs=per_label, max_combinations=10**7)
    assert exact.exact
    if joint.figures.limits_met:
        assert exact.figures.expected_cost <= joint.figures.expected_cost + 1e-12


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("cap", [None, 0.05, 0.2])
def test_review_band_equals_brute_force_over_all_pairs(seed, cap):
    d = _data(seed, n=24, n_labels=2)
    lp = {"l0": Policy(10, 1, prevalence=0.03), "l1": Policy(10, 1, max_false_accept_rate=0.7)}
    pol = PartPolicy(10, 1, review_cost=0.4, max_review_fraction=cap,
                     max_false_reject_rate=0.7)
    prob = part_problem(d, pol, lp)
    band = choose_review_band(prob, max_combinations=10**6)
    assert band.exact
    pairs = [[(lo, hi) for hi in c for lo in c if lo <= hi] for c in _candidates(d)]
    best = math.inf
    for i, combo in enumerate(itertools.product(*pairs)):
        low = np.array([p[0] for p in combo])
        high = np.array([p[1] for p in combo])
        if not all(_label_ok(d, j, lp[lab], low[j], high[j]) for j, lab in enumerate(d.labels)):
            continue
        fig = evaluate_parts(prob, high, low)
        if i % 5 == 0:  # the loop oracle is slow; every fifth pair checks the arithmetic
            cost, review_w = _naive(d, high, low, pol, prob.label_prevalence)
            assert fig.expected_cost == pytest.approx(cost, rel=1e-9, abs=1e-12)
            assert fig.line_review_fraction == pytest.approx(review_w, abs=1e-12)
        if _part_ok(fig, pol):
            best = min(best, fig.expected_cost)
    if math.isinf(best):  # nothing meets the limits: the band says so
        assert not band.figures.limits_met
        return
    assert band.figures.limits_met
    assert band.figures.expected_cost == pytest.approx(best, rel=1e-9, abs=1e-12)
    if cap is not None:  # the capacity holds
        assert band.figures.line_review_fraction <= cap + 1e-12
    for lab in d.labels:
        assert band.review_cutoffs[lab] <= band.reject_cutoffs[lab]
    # A review band can only help: the best single cutoffs are among its candidates.
    single = choose_joint(part_problem(d, PartPolicy(10, 1, max_false_reject_rate=0.7), lp),
                          max_combinations=10**6)
    if single.figures.limits_met:
        assert band.figures.expected_cost <= single.figures.expected_cost + 1e-12


def test_review_band_descent_respects_capacity_on_larger_data():
    d = _data(3, n=400, n_labels=4, decimals=2)
    pol = PartPolicy(30, 1, review_cost=0.5, max_review_fraction=0.04)
    prob = part_problem(d, pol)
    band = choose_review_band(prob, max_combinations=0)
    assert not band.exact
    assert band.figures.line_review_fraction <= 0.04 + 1e-12
    assert band.figures.limits_met
    joint = choose_joint(prob, max_combinations=0)
    band2 = choose_review_band(prob, start_cutoffs=joint.reject_cutoffs, max_combinations=0)
    assert band2.figures.expected_cost <= evaluate_parts(prob, joint.reject_cutoffs).expected_cost + 1e-12


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10**6), st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_part_bounds_are_exact_clopper_pearson(seed, conf):
    d = _data(seed % 1000, n=25)
    prob = part_problem(d, PartPolicy(3, 1, confidence=conf))
    rng = np.random.default_rng(seed)
    cut = {lab: float(rng.choice(c)) for lab, c in zip(d.labels, _candidates(d))}
    f = evaluate_parts(prob, cut)
    for k, n, upper in ((f.false_accepts, f.n_defective, f.false_accept_rate_upper),
                        (f.false_rejects, f.n_good, f.false_reject_rate_upper),
                        (f.n_review, f.n_parts, f.review_fraction_upper)):
        if n:
            ref = binomtest(k, n).proportion_ci(2 * conf - 1, "exact").high
            assert upper == pytest.approx(ref, rel=1e-9, abs=1e-12)
    fired = (d.scores >= np.array([cut[lab] for lab in d.labels])).any(axis=1)
    assert f.false_accepts == int((d.defective & ~fired).sum())
    assert f.false_rejects == int((~d.defective & fired).sum())


def test_line_weights_match_the_documented_formula():
    truth = np.array([[0, 0], [0, 0], [0, 0], [1, 0], [1, 0], [0, 1], [1, 1]], bool)
    d = part_data(np.zeros(truth.shape), truth, ["a", "b"])
    prob = part_problem(d, PartPolicy(1, 1), {"a": Policy(1, 1, prevalence=0.1),
                                              "b": Policy(1, 1, prevalence=0.02)})
    pi = 1 - 0.9 * 0.98
    assert prob.prevalence == pytest.approx(pi)
    ra, rb = 0.1 / 0.9, 0.02 / 0.98
    tot = ra + rb + ra * rb
    expect = [(1 - pi) / 3] * 3 + [pi * ra / tot / 2] * 2 + [pi * rb / tot, pi * ra * rb / tot]
    assert prob.weights == pytest.approx(expect)
    assert prob.weights.sum() == pytest.approx(1.0)
    # everything fires: every good part is scrapped, so the line scraps 1 - pi of its parts
    f = evaluate_parts(prob, {"a": -np.inf, "b": -np.inf})
    assert f.line_scrap_fraction == pytest.approx(1.0)
    assert f.expected_cost == pytest.approx(1 - pi)


def test_bad_input_is_refused_with_a_clear_message():
    d = _data(0)
    prob = part_problem(d, PartPolicy(1, 1))
    with pytest.raises(InputError, match="no cutoff for l2"):
        evaluate_parts(prob, {"l0": 0.5, "l1": 0.5})
    with pytest.raises(InputError, match="review cutoff must not be above"):
        evaluate_parts(prob, [0.5] * 3, [0.6] * 3)
    with pytest.raises(InputError, match="NaN"):
        part_data([[np.nan]], [[True]], ["a"])
    with pytest.raises(InputError, match="needs review_cost"):
        PartPolicy(1, 1, max_review_fraction=0.1)
    with pytest.raises(InputError, match="review_cost"):
        choose_review_band(prob)
    with pytest.raises(InputError, match="action 'accept'"):
        part_problem(d, PartPolicy(1, 1), {"l0": Policy(1, 1, action="accept")})


def test_part_section_of_a_policy_file_is_checked_with_its_line(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text('[defaults]\ncost_false_accept = 40\ncost_false_reject = 1\n\n'
                 '[part]\nreview_cost = 0.2\nmax_review_fraction = 1.5\n')
    with pytest.raises(InputError, match=r"p.toml:7.*max_review_fraction"):
        part_policy(load_policy_file(f))
    f.write_text('[part]\nreview_cots = 0.2\n')
    with pytest.raises(InputError, match=r"p.toml:2.*review_cots"):
        part_policy(load_policy_file(f))
    f.write_text('[defaults]\ncost_false_accept = 40\ncost_false_reject = 1\nconfidence = 0.9\n'
                 '[part]\nreview_cost = 0.2\n[part.false_accept_weights]\ncrack = 3\n')
    p = part_policy(load_policy_file(f))
    assert (p.cost_false_accept, p.cost_false_reject, p.confidence) == (40, 1, 0.9)
    assert p.review_cost == 0.2 and p.false_accept_weights == {"crack": 3}
    assert part_policy(PolicySet.default()).cost_false_accept == 1
