"""Detection-unit words and the exact Poisson rate test (calibrate.detection_choice)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from calibrate.curves import CountTable
from calibrate.detection_choice import error_words, poisson_rate_test
from calibrate.matching import DetectionTable, detection_curve
from calibrate.policy import Policy
from calibrate.thresholds import evaluate_threshold, held_out_flags


def _curve(obj_scores, fd_scores, n_images):
    pos, neg = np.asarray(obj_scores, float), np.asarray(fd_scores, float)
    t = DetectionTable(CountTable.from_counts(
        np.r_[pos, neg], np.r_[np.ones(pos.size), np.zeros(neg.size)].astype(int),
        np.r_[np.zeros(pos.size), np.ones(neg.size)].astype(int)), n_images, 0.5)
    return detection_curve(t.table, t.n_images)


@pytest.mark.parametrize("action, missed, false_det", [
    ("reject", "missed objects (false accepts)", "false detections (false rejects)"),
    ("accept", "missed objects (false rejects)", "false detections (false accepts)"),
])
def test_errors_are_named_as_detections_with_the_action_beside(action, missed, false_det):
    policy = Policy(cost_false_accept=2, cost_false_reject=1, action=action, unit="detection")
    fa, fr = ("false_accept", "false_reject") if action == "reject" else ("false_reject",
                                                                           "false_accept")
    assert error_words(policy, fa) == missed and error_words(policy, fr) == false_det
    image = Policy(cost_false_accept=2, cost_false_reject=1, action=action)
    assert error_words(image, "false_accept") == "false accepts"
    e = evaluate_threshold(_curve([0.9, 0.8, -np.inf], [0.95, 0.5], 4), 0.7, policy)
    missed_name, fd_name = missed.split(" (")[1][:-1], false_det.split(" (")[1][:-1]
    assert f"1 of 3 objects missed ({missed_name}; miss rate" in e.explanation
    assert f"1 false detections ({fd_name}) on 4 images" in e.explanation


def test_held_out_miss_rate_is_named_a_miss_rate():
    policy = Policy(cost_false_accept=5, cost_false_reject=1, unit="detection",
                    max_false_accept_rate=0.5, if_limit_unproven="cost_optimal")
    cal = _curve([0.9] * 100, [0.95] * 10, 100)
    held = _curve([0.9] * 10 + [-np.inf] * 90, [0.95] * 10, 100)
    c = evaluate_threshold(cal, 0.9, policy)
    flags = held_out_flags(c, evaluate_threshold(held, 0.9, policy))
    assert any(f.startswith("held-out miss rate (false-accept rate) 90%") for f in flags)
    assert any("miss rate (false-accept rate) 90% breaks the limit" in f for f in flags)


def test_poisson_rate_test_is_the_exact_conditional_binomial():
    for k1, n1, k2, n2 in [(3, 10, 9, 10), (0, 5, 4, 20), (7, 100, 1, 3)]:
        p = n2 / (n1 + n2)
        n, k = k1 + k2, k2
        # two-sided by likelihood ordering (as scipy's binomtest): sum of outcomes no
        # likelier than the one seen, brute force over every outcome
        pk = binom.pmf(k, n, p)
        brute = sum(binom.pmf(j, n, p) for j in range(n + 1)
                    if binom.pmf(j, n, p) <= pk * (1 + 1e-7))
        assert poisson_rate_test(k1, n1, k2, n2) == pytest.approx(min(1.0, brute))
    assert poisson_rate_test(0, 5, 0, 9) == 1.0
