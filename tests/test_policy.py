"""The policy module: the one action mapping, cost weights against the formula, and
policy files whose errors name the key and its line."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from calibrate.errors import InputError
from calibrate.policy import (
    ACTIONS,
    DEFAULT_POLICY,
    Policy,
    PolicyError,
    PolicySet,
    by_action,
    error_names,
    load_policy_file,
)


@pytest.mark.parametrize("action", list(ACTIONS))
def test_by_action_is_its_own_inverse(action):
    fa, fr = by_action(action, "miss", "alarm")
    assert by_action(action, fa, fr) == ("miss", "alarm")


def test_the_mapping_matches_the_design():
    # reject: a false accept is a defect that did not fire (a false negative)
    assert by_action("reject", "FN", "FP") == ("FN", "FP")
    # accept: a false accept is a negative that fired (a false positive)
    assert by_action("accept", "FN", "FP") == ("FP", "FN")
    assert error_names("reject") == ("false accept (defects shipped)",
                                     "false reject (good parts scrapped)")
    with pytest.raises(InputError, match="action must be"):
        by_action("scrap", 1, 2)


@settings(max_examples=200, deadline=None)
@given(
    action=st.sampled_from(list(ACTIONS)),
    c_fa=st.floats(0, 100), c_fr=st.floats(0.01, 100),
    pi=st.one_of(st.none(), st.floats(0.001, 0.999)),
    n_pos=st.integers(1, 500), n_neg=st.integers(1, 500), data=st.data(),
)
def test_expected_cost_is_the_design_formula(action, c_fa, c_fr, pi, n_pos, n_neg, data):
    p = Policy(c_fa, c_fr, action=action, prevalence=pi)
    fn = data.draw(st.integers(0, n_pos))
    fp = data.draw(st.integers(0, n_neg))
    prev = pi if pi is not None else n_pos / (n_pos + n_neg)
    fnr, fpr = fn / n_pos, fp / n_neg
    if action == "reject":
        want = c_fa * prev * fnr + c_fr * (1 - prev) * fpr
    else:
        want = c_fa * (1 - prev) * fpr + c_fr * prev * fnr
    assert p.expected_cost(fn, fp, n_pos, n_neg) == pytest.approx(want, rel=1e-12, abs=1e-15)
    e = p.errors(fn, fp, n_pos, n_neg)
    assert (e.false_accepts, e.false_rejects) == ((fn, fp) if action == "reject" else (fp, fn))


def test_allowances_follow_the_action():
    p = Policy(1, 1, action="accept", max_false_accept_rate=0.1)
    allow_fn, allow_fp = p.error_allowances(100, 1000)
    assert allow_fn == np.inf  # accept: false accepts are negatives that fire
    assert 0 < allow_fp < 100


def test_policy_errors_name_their_key():
    with pytest.raises(PolicyError) as e:
        Policy(1, 1, prevalence=2)
    assert e.value.key == "prevalence"
    with pytest.raises(PolicyError) as e:
        Policy.from_mapping({"cost_false_accept": 1})
    assert e.value.key == "cost_false_reject"
    with pytest.raises(PolicyError) as e:
        Policy(0, 0)
    assert e.value.key is None


def test_default_policy_is_one_place():
    p = PolicySet.default().for_label("anything")
    assert (p.cost_false_accept, p.cost_false_reject) == (
        DEFAULT_POLICY["cost_false_accept"], DEFAULT_POLICY["cost_false_reject"])
    assert not p.has_limits


def test_a_bad_value_in_a_policy_file_names_its_line(tmp_path):
    f = tmp_path / "policy.toml"
    f.write_text('[defaults]\ncost_false_accept = 50\ncost_false_reject = 1\n\n'
                 '[labels.crack]\nprevalence = 1.5\n')
    policies = load_policy_file(f)
    with pytest.raises(PolicyError, match=r"strictly between 0 and 1.*line 6 of .*policy.toml"):
        policies.for_label("crack")
    # a command-line override is not blamed on the file's line
    overridden = policies.with_defaults({"confidence": 2.0})
    with pytest.raises(PolicyError) as e:
        overridden.for_label("dent")
    assert "line" not in str(e.value) and e.value.key == "confidence"


def test_an_unknown_key_in_a_policy_file_names_its_line(tmp_path):
    f = tmp_path / "policy.toml"
    f.write_text('[defaults]\ncost_false_accept = 50\n\n[labels.scratch]\ncost_fa = 1\n')
    with pytest.raises(InputError, match=r"policy.toml \[labels.scratch\] \(line 5\): unknown"):
        load_policy_file(f)
