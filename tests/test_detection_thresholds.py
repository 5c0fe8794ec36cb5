"""Threshold choice at unit = "detection": policy keys, the choice against a brute-force
re-match at every threshold, bounds said plainly, held-out figures."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calibrate import stats
from calibrate.errors import InputError
from calibrate.matching import DetectionTable, detection_curve, match_detections
from calibrate.policy import Policy, PolicyError, PolicySet, load_policy_file
from calibrate.thresholds import (
    TIE,
    choose_threshold_from_curve,
    evaluate_threshold,
    held_out_flags,
)
from tests.reference import brute_detection_points, cp_upper
from tests.detection_scenes import frames as _frames
from tests.detection_scenes import scenes


def _pick(rows):
    """The design's tie rule on brute-force rows: cheapest, then fewest false accepts,
    then the higher threshold (rows run from +inf down)."""
    ok = [(i, r) for i, r in enumerate(rows) if r["feasible"]]
    low = min(r["cost"] for _, r in ok)
    near = [(i, r) for i, r in ok if r["cost"] <= low + TIE * abs(low)]
    return min(near, key=lambda x: (x[1]["fa"], x[0]))[1]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenes(), st.sampled_from(["reject", "accept"]), st.sampled_from([1, 3, 10]),
       st.sampled_from([None, 0.3, 0.6]), st.integers(0, 3))
def test_choice_equals_a_brute_force_rematch(scene, action, c_fa, max_miss, extra_images):
    n_images, detections, objects = scene
    n_images += extra_images  # images with neither objects nor detections count too
    det, obj = _frames(detections, objects)
    m = match_detections(det, obj, n_images=n_images)
    limit = {}
    if max_miss is not None:
        limit = {"max_false_accept_rate" if action == "reject" else "max_false_reject_rate":
                 max_miss}
    policy = Policy(cost_false_accept=c_fa, cost_false_reject=1, action=action,
                    unit="detection", if_limit_unproven="cost_optimal", **limit)
    for label in m.labels:
        try:
            curve = detection_curve(m.count_table(label), m.n_images, label)
        except InputError:
            n_obj = sum(1 for o in objects if o[1] == label and not o[3])
            counted = (m.detection_label == label) & ~m.detection_ignored
            assert n_obj == 0 or not counted.any()
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            choice = choose_threshold_from_curve(curve, policy)
        rows = brute_detection_points(detections, objects, label, n_images, action=action,
                                      cost_false_accept=c_fa, cost_false_reject=1,
                                      max_miss_rate=max_miss)
        if any(r["feasible"] for r in rows):
            want = _pick(rows)
            assert choice.decision == "deploy"
        else:
            want = _pick([{**r, "feasible": True} for r in rows])  # the cost-optimal option
            assert choice.decision == "cost_optimal"
        assert choice.threshold == want["threshold"]
        assert (choice.true_detections, choice.false_detections, choice.missed_objects) == (
            want["true"], want["false"], want["missed"])
        assert math.isclose(choice.expected_cost, want["cost"], rel_tol=1e-12, abs_tol=1e-15)
        assert choice.unit == "detection" and choice.n_images == n_images
        n_obj = want["true"] + want["missed"]
        miss_up = choice.false_accept_rate_upper if action == "reject" else \
            choice.false_reject_rate_upper
        assert math.isclose(miss_up, cp_upper(want["missed"], n_obj, 0.95), rel_tol=1e-9)
        # every candidate, evaluated directly, has the brute-force counts
        for r in rows:
            e = evaluate_threshold(curve, r["threshold"], policy)
            assert (e.true_detections, e.false_detections, e.missed_objects) == (
                r["true"], r["false"], r["missed"])


def _table(obj_scores, fd_scores, n_images):
    from calibrate.curves import CountTable
    pos, neg = np.asarray(obj_scores, float), np.asarray(fd_scores, float)
    return DetectionTable(CountTable.from_counts(
        np.r_[pos, neg], np.r_[np.ones(pos.size), np.zeros(neg.size)].astype(int),
        np.r_[np.zeros(pos.size), np.ones(neg.size)].astype(int)), n_images, 0.5)


def test_false_detections_per_image_get_a_poisson_bound_said_plainly():
    t = _table([0.9, 0.8, 0.7, -np.inf], [0.95, 0.6, 0.6, 0.5, 0.4], n_images=3)
    curve = detection_curve(t.table, t.n_images)
    # more false detections than images: no binomial model fits
    policy = Policy(cost_false_accept=10, cost_false_reject=1, unit="detection")
    e = evaluate_threshold(curve, 0.4, policy)
    assert e.false_detections == 5 and e.false_reject_rate == pytest.approx(5 / 3)
    assert e.false_reject_rate_upper == pytest.approx(stats.poisson_rate_upper(5, 3, 0.95))
    assert e.missed_objects == 1 and e.true_detections == 3 and e.n_objects == 4
    assert "not a binomial rate" in e.explanation and "per image" in e.explanation
    assert math.isnan(e.prevalence)
    d = e.to_dict()
    assert d["unit"] == "detection" and d["iou_threshold"] == 0.5
    assert (d["false_detections"], d["missed_objects"], d["n_images"]) == (5, 1, 3)
    # the lowest candidate is the lowest detection score, never -inf
    assert curve.thresholds[-1] == 0.4 and curve.false_negatives[-1] == 1


def test_poisson_bound_is_exact():
    from scipy.stats import poisson
    for k, n in [(0, 10), (3, 7), (12, 4)]:
        u = stats.poisson_rate_upper(k, n, 0.9)
        assert poisson.cdf(k, u * n) == pytest.approx(0.1)


def test_a_miss_rate_limit_says_how_many_more_objects():
    t = _table([0.9] * 20 + [0.1] * 2 + [-np.inf], [0.5, 0.3], n_images=10)
    policy = Policy(cost_false_accept=1, cost_false_reject=1, unit="detection",
                    max_false_accept_rate=0.01)
    c = choose_threshold_from_curve(detection_curve(t.table, t.n_images), policy)
    assert c.status == "limits_unproven" and c.decision == "refuse"
    check = c.limit_checks[0]
    assert check.about == "object" and check.n == 23
    assert check.samples_needed == stats.samples_needed(0.01, 0.95, errors=check.errors, n=23)
    # one object no detection matches is missed at every cutoff: the least is from there
    assert check.least_errors == 1
    assert check.samples_needed_minimum == stats.samples_needed(0.01, 0.95, errors=1, n=23)
    assert "more objects" in c.explanation
    looser = Policy(cost_false_accept=1, cost_false_reject=1, unit="detection",
                    max_false_accept_rate=0.2)
    higher = evaluate_threshold(detection_curve(t.table, t.n_images), 0.9, looser)
    assert ("still has 1 missed objects (false accepts): objects no detection matches"
            in higher.explanation)
    assert "3 of 23 objects are missed (false accepts; miss rate 13%" in higher.explanation
    assert "per image" in c.explanation  # the options say false detections per image


def test_detection_curve_refuses_what_it_cannot_count():
    with pytest.raises(InputError, match="no .*object of this label"):
        detection_curve(_table([], [0.5], 2).table, 2, "dent")
    with pytest.raises(InputError, match="no detection of this label"):
        detection_curve(_table([-np.inf], [], 2).table, 2, "dent")
    with pytest.raises(InputError, match="no images"):
        detection_curve(_table([0.5], [], 0).table, 0, "dent")


@pytest.mark.parametrize("mapping, key, words", [
    ({"unit": "box"}, "unit", "unit must be one of"),
    ({"iou_threshold": 0.5}, "iou_threshold", "only with unit"),
    ({"unit": "detection", "iou_threshold": 0}, "iou_threshold", r"\(0, 1\]"),
    ({"unit": "detection", "iou_threshold": True}, "iou_threshold", r"\(0, 1\]"),
    ({"unit": "detection", "prevalence": 0.01}, "prevalence", "unit = \"image\" only"),
    ({"unit": "detection", "max_false_reject_rate": 0.1}, "max_false_reject_rate",
     "not a share"),
    ({"unit": "detection", "action": "accept", "max_false_accept_rate": 0.1},
     "max_false_accept_rate", "not a share"),
])
def test_unit_keys_are_checked(mapping, key, words):
    with pytest.raises(PolicyError, match=words) as e:
        Policy(cost_false_accept=1, cost_false_reject=1, **mapping)
    assert e.value.key == key


def test_unit_errors_name_their_line(tmp_path):
    f = tmp_path / "policy.toml"
    f.write_text('[defaults]\ncost_false_accept = 5\ncost_false_reject = 1\n'
                 'prevalence = 0.02\n\n[labels.scratch]\nunit = "detection"\n')
    with pytest.raises(InputError, match=r"policy.toml:4: .*prevalence.*\[defaults\]"):
        load_policy_file(f).validate(load_policy_file(f).locator)
    f.write_text('[defaults]\ncost_false_accept = 5\ncost_false_reject = 1\n\n'
                 '[labels.scratch]\nunit = "detection"\niou_threshold = 1.5\n')
    with pytest.raises(InputError, match=r"line 7"):
        load_policy_file(f).for_label("scratch")
    ok = PolicySet({"cost_false_accept": 1, "cost_false_reject": 1},
                   {"scratch": {"unit": "detection", "iou_threshold": 0.75}})
    assert ok.for_label("scratch").matching_iou == 0.75
    assert ok.for_label("dent").matching_iou is None and ok.for_label("dent").unit == "image"


def test_held_out_false_detections_are_compared_as_poisson_rates():
    policy = Policy(cost_false_accept=5, cost_false_reject=1, unit="detection")
    cal = _table([0.9] * 50, [0.95] * 10, n_images=100)
    held = _table([0.9] * 50, [0.95] * 60, n_images=20)  # 3 per image against 0.1
    c = choose_threshold_from_curve(detection_curve(cal.table, cal.n_images), policy)
    h = evaluate_threshold(detection_curve(held.table, held.n_images), c.threshold, policy)
    flags = held_out_flags(c, h)
    assert any("false detections per image" in f and "Poisson" in f for f in flags)
    same = evaluate_threshold(detection_curve(cal.table, cal.n_images), c.threshold, policy)
    assert held_out_flags(c, same) == ()
