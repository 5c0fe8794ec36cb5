import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import det_curve, roc_curve

import calibrate
from calibrate import CountTable, InputError, count_table, error_curve
from tests.reference import brute_curve

# Scores drawn from a small pool force ties; -inf is "no result".
POOL = [-np.inf, 0.0, 0.1, 0.25, 0.5, 0.5000000000000001, 0.75, 0.9, 1.0, 37.0]


@st.composite
def labeled_scores(draw, min_size=2, max_size=60, allow_no_result=True):
    n = draw(st.integers(min_size, max_size))
    pool = POOL if allow_no_result else POOL[1:]
    kind = draw(st.sampled_from(["pool", "floats", "constant"]))
    if kind == "pool":
        s = draw(st.lists(st.sampled_from(pool), min_size=n, max_size=n))
    elif kind == "floats":
        s = draw(st.lists(st.floats(-1e6, 1e6, allow_nan=False), min_size=n, max_size=n))
    else:
        s = [draw(st.sampled_from(pool))] * n
    y = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    # both classes present
    i, j = draw(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)).filter(lambda t: t[0] != t[1]))
    y[i], y[j] = True, False
    return np.array(s, dtype=float), np.array(y, dtype=bool)


@settings(max_examples=300, deadline=None)
@given(labeled_scores())
def test_curve_matches_brute_force(data):
    s, y = data
    curve = error_curve(s, y)
    thr, fp, fn = brute_curve(s, y)
    np.testing.assert_array_equal(curve.thresholds, thr)
    np.testing.assert_array_equal(curve.false_positives, fp)
    np.testing.assert_array_equal(curve.false_negatives, fn)
    assert curve.n_positive == y.sum() and curve.n_negative == (~y).sum()
    np.testing.assert_allclose(curve.false_positive_rate, fp / (~y).sum())
    np.testing.assert_allclose(curve.false_negative_rate, fn / y.sum())
    assert curve.has_ranking_information == (len(thr) > 1)


@settings(max_examples=200, deadline=None)
@given(labeled_scores(allow_no_result=False))
def test_curve_matches_sklearn(data):
    s, y = data
    curve = error_curve(s, y)
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=False)
    # sklearn prepends a "never fire" point; the rest are the distinct scores, descending.
    np.testing.assert_array_equal(curve.thresholds, thr[1:])
    np.testing.assert_allclose(curve.false_positive_rate, fpr[1:])
    np.testing.assert_allclose(curve.false_negative_rate, 1 - tpr[1:])
    if len(np.unique(s)) > 1:
        d_fpr, d_fnr, d_thr = det_curve(y, s, drop_intermediate=False)
        # det_curve drops redundant points (and may add "never fire"); compare each one.
        for t, a, b in zip(d_thr, d_fpr, d_fnr):
            fp, fn = curve.counts_at(t)
            assert fp / curve.n_negative == pytest.approx(a)
            assert fn / curve.n_positive == pytest.approx(b)


@settings(max_examples=200, deadline=None)
@given(labeled_scores(), st.randoms(use_true_random=False))
def test_count_table_from_counts_is_order_free(data, rnd):
    s, y = data
    t = count_table(s, y)
    rows = list(zip(s.tolist(), y.astype(int).tolist(), (~y).astype(int).tolist()))
    rnd.shuffle(rows)
    s2, p2, n2 = map(np.array, zip(*rows))
    t2 = CountTable.from_counts(s2, p2, n2)
    np.testing.assert_array_equal(t.scores, t2.scores)
    np.testing.assert_array_equal(t.n_positive, t2.n_positive)
    np.testing.assert_array_equal(t.n_negative, t2.n_negative)
    assert t.total_positive == y.sum()
    c1, c2 = error_curve(t), error_curve(t2)
    np.testing.assert_array_equal(c1.false_positives, c2.false_positives)


@settings(max_examples=200, deadline=None)
@given(labeled_scores())
def test_equal_error_rate_brute_force(data):
    s, y = data
    curve = error_curve(s, y)
    eer = curve.equal_error_rate()
    n_pos, n_neg = y.sum(), (~y).sum()
    cands = [np.inf] + sorted(set(s.tolist()), reverse=True)
    gaps = []
    for t in cands:
        fpr = np.sum((s >= t) & ~y) / n_neg
        fnr = np.sum((s < t) & y) / n_pos
        gaps.append((abs(fpr - fnr), t, fpr, fnr))
    best = min(g[0] for g in gaps)
    first = next(g for g in gaps if g[0] == best)
    assert eer.threshold == first[1]
    assert eer.rate == pytest.approx((first[2] + first[3]) / 2)


@settings(max_examples=200, deadline=None)
@given(labeled_scores(), st.floats(-2e6, 2e6, allow_nan=False) | st.sampled_from(POOL + [np.inf]))
def test_counts_at_any_threshold(data, t):
    s, y = data
    curve = error_curve(s, y)
    fp, fn = curve.counts_at(t)
    assert fp == np.sum((s >= t) & ~y)
    assert fn == np.sum((s < t) & y)


def test_no_result_ranks_below_every_score():
    s = np.array([-np.inf, -1e300, 0.0, -np.inf])
    y = np.array([True, False, True, False])
    curve = error_curve(s, y)
    assert curve.thresholds.tolist() == [0.0, -1e300, -np.inf]
    assert curve.false_positives.tolist() == [0, 1, 2]
    assert curve.false_negatives.tolist() == [1, 1, 0]


def test_to_frame_and_docs_example():
    curve = error_curve([0.9, 0.8, 0.8, 0.1], [True, True, False, False])
    df = curve.to_frame()
    assert isinstance(df, pd.DataFrame)
    assert list(df.columns) == [
        "threshold", "false_positives", "false_negatives",
        "false_positive_rate", "false_negative_rate",
    ]
    assert df["false_positives"].tolist() == [0, 1, 2]
    assert count_table([0.9, 0.8, 0.8, 0.1], [True, True, False, False]).to_frame().shape == (3, 3)


@pytest.mark.parametrize(
    "scores, positive, match",
    [
        ([0.1, np.nan], [True, False], "NaN"),
        ([0.1, np.inf], [True, False], r"\+inf"),
        ([0.1, 0.2, 0.3], [True, False], "same length"),
        ([0.1, 0.2], [0.5, 1.0], "boolean"),
        ([0.1, 0.2], [2, 0], "0/1"),
        ([0.1, 0.2], ["yes", "no"], "boolean"),
        ([[0.1, 0.2]], [[True, False]], "1-D"),
        (["a", "b"], [True, False], "numbers"),
        ([0.1, 0.2], [True, True], "no negative"),
        ([0.1, 0.2], [False, False], "no positive"),
        ([], [], "no positive"),
    ],
)
def test_bad_input_is_a_clear_value_error(scores, positive, match):
    with pytest.raises(InputError, match=match) as info:
        error_curve(scores, positive)
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, calibrate.CalibrateError)


def test_integer_truth_is_accepted():
    a = error_curve([0.3, 0.2, 0.1], [1, 0, 1])
    b = error_curve([0.3, 0.2, 0.1], [True, False, True])
    np.testing.assert_array_equal(a.false_negatives, b.false_negatives)


def test_from_counts_validates():
    with pytest.raises(InputError, match="non-negative"):
        CountTable.from_counts([0.1], [-1], [2])
    with pytest.raises(InputError, match="one count per score"):
        CountTable.from_counts([0.1, 0.2], [1], [2, 3])
    with pytest.raises(InputError, match="whole numbers"):
        CountTable.from_counts([0.1], [0.5], [2])


def test_large_continuous_and_tied_data_agree_with_sklearn():
    rng = np.random.default_rng(1)
    y = rng.random(200_000) < 0.1
    s = rng.normal(size=y.size) + 1.5 * y
    for scores in (s, np.round(s, 2)):
        curve = error_curve(scores, y)
        fpr, tpr, thr = roc_curve(y, scores, drop_intermediate=False)
        np.testing.assert_array_equal(curve.thresholds, thr[1:])
        np.testing.assert_allclose(curve.false_positive_rate, fpr[1:])
        np.testing.assert_allclose(curve.false_negative_rate, 1 - tpr[1:], atol=1e-12)
