"""Detection matching (COCO protocol) against pycocotools and a brute-force re-match."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calibrate.errors import InputError
from calibrate.matching import Matches, box_iou, match_detections
from tests.detection_scenes import LABELS, coco_reference, scenes
from tests.detection_scenes import frames as _frames
from tests.reference import brute_detection_counts


def _counts_at(table, threshold):
    keep = table.scores >= threshold
    return int(table.n_positive[keep].sum()), int(table.n_negative[keep].sum())


def _thresholds(detections):
    # Every distinct score, never-keep (+inf) and keep-all (0, below every score). Not
    # -inf: a missed object is keyed -inf and stays missed whatever is kept.
    return [np.inf] + sorted({d[2] for d in detections}, reverse=True) + [0.0]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenes(), st.sampled_from([0.5, 0.5, 0.3, 0.75]))
def test_matches_pycocotools_per_detection_and_at_every_threshold(scene, tau):
    n_images, detections, objects = scene
    det, obj = _frames(detections, objects)
    m = match_detections(det, obj, iou_threshold=tau)
    matched, ignored, target = coco_reference(n_images, detections, objects, tau)
    np.testing.assert_array_equal(m.detection_matched, matched)
    np.testing.assert_array_equal(m.detection_ignored, ignored)
    np.testing.assert_array_equal(m.detection_object, target)
    scores = np.array([d[2] for d in detections])
    for label in LABELS:
        table = m.count_table(label)
        mine = np.array([d[1] == label for d in detections], dtype=bool)
        n_obj = sum(1 for o in objects if o[1] == label and not o[3])
        assert table.total_positive == n_obj
        for t in _thresholds(detections):
            tp_ref = int(np.sum(matched & mine & (scores >= t)))
            fp_ref = int(np.sum(~matched & ~ignored & mine & (scores >= t)))
            tp, fp = _counts_at(table, t)
            assert (tp, fp) == (tp_ref, fp_ref), (label, t)
            # precision and recall as pycocotools' accumulate() forms them
            if tp + fp:
                assert tp / (tp + fp) == tp_ref / (tp_ref + fp_ref)
            if n_obj:
                assert tp / n_obj == tp_ref / n_obj


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenes(), st.sampled_from([0.5, 0.3]))
def test_running_sums_equal_a_rematch_at_every_threshold(scene, tau):
    _, detections, objects = scene
    det, obj = _frames(detections, objects)
    m = match_detections(det, obj, iou_threshold=tau)
    tables = {label: m.count_table(label) for label in LABELS}
    for t in _thresholds(detections):
        brute = brute_detection_counts(detections, objects, t, tau)
        for label in LABELS:
            tp, fp = _counts_at(tables[label], t)
            missed = tables[label].total_positive - tp
            assert (tp, fp, missed) == brute.get(label, (0, 0, 0)), (label, t)


def _one(rows):
    return pd.DataFrame(rows, columns=["image_id", "label", "score", "x_min", "y_min",
                                       "x_max", "y_max"])


def _objs(rows):
    return pd.DataFrame(rows, columns=["image_id", "label", "x_min", "y_min", "x_max",
                                       "y_max", "ignore"])


def test_crowd_absorbs_every_detection_and_is_never_counted():
    det = _one([(1, "a", 0.9, 0, 0, 4, 4), (1, "a", 0.8, 0, 0, 4, 4), (1, "a", 0.7, 50, 50, 54, 54)])
    obj = _objs([(1, "a", 0, 0, 100, 10, True)])  # the crowd box covers the first two
    m = match_detections(det, obj)
    assert m.detection_ignored.tolist() == [True, True, False]
    assert m.detection_false.tolist() == [False, False, True]
    t = m.count_table("a")
    assert (t.total_positive, t.total_negative) == (0, 1)


def test_real_object_wins_over_crowd_and_is_taken_once():
    det = _one([(1, "a", 0.9, 0, 0, 10, 10), (1, "a", 0.9, 0, 0, 10, 10)])
    obj = _objs([(1, "a", 0, 0, 10, 10, True), (1, "a", 0, 0, 10, 10, False)])
    m = match_detections(det, obj)
    # the earlier of the tied detections takes the real object, the other is absorbed
    assert m.detection_matched.tolist() == [True, False]
    assert m.detection_ignored.tolist() == [False, True]
    assert m.detection_object.tolist() == [1, 0]
    assert m.object_score.tolist() == [-np.inf, 0.9]


def test_iou_tie_goes_to_the_later_object_and_labels_never_mix():
    det = _one([(1, "a", 0.5, 0, 0, 10, 10)])
    obj = _objs([(1, "a", -5, 0, 5, 10, False), (1, "a", 5, 0, 15, 10, False),
                 (1, "b", 0, 0, 10, 10, False)])
    m = match_detections(det, obj, iou_threshold=1 / 3)
    assert m.detection_object.tolist() == [1]
    assert m.object_score.tolist() == [-np.inf, 0.5, -np.inf]
    assert m.count_table("b").total_positive == 1
    assert _counts_at(m.count_table("b"), 0.0) == (0, 0)


def test_objects_without_detections_are_missed_at_every_threshold():
    m = match_detections(_one([]), _objs([(3, "a", 0, 0, 5, 5, False)]), n_images=10)
    t = m.count_table("a")
    assert t.scores.tolist() == [-np.inf] and t.n_positive.tolist() == [1]
    assert m.n_images == 10 and m.labels == ["a"]
    assert m.to_frame().empty and m.objects_frame()["detection"].tolist() == [-1]


def test_empty_inputs():
    m = match_detections({}, {})
    assert m.n_images == 0 and m.labels == []
    assert len(m.count_table("a")) == 0


def test_to_frame_names_outcomes():
    det = _one([(1, "a", 0.9, 0, 0, 4, 4), (1, "a", 0.8, 20, 20, 24, 24),
                (2, "a", 0.7, 0, 0, 4, 4)])
    obj = _objs([(1, "a", 0, 0, 4, 4, False), (2, "a", 0, 0, 4, 4, True)])
    f = match_detections(det, obj).to_frame()
    assert f["outcome"].tolist() == ["true", "false", "ignored"]
    assert f["object"].tolist() == [0, -1, 1]


def test_string_image_ids_and_input_order_kept():
    det = _one([("b.png", "a", 0.2, 0, 0, 4, 4), ("a.png", "a", 0.9, 0, 0, 4, 4)])
    obj = _objs([("a.png", "a", 0, 0, 4, 4, False), ("b.png", "a", 0, 0, 4, 4, False)])
    m = match_detections(det, obj)
    assert m.detection_object.tolist() == [1, 0]
    assert m.object_score.tolist() == [0.9, 0.2]


@pytest.mark.parametrize("bad, message", [
    (dict(score=np.nan), "finite score"),
    (dict(score=np.inf), "finite score"),
    (dict(x_max=-1.0), "x_min <= x_max"),
    (dict(y_min=np.nan), "finite"),
])
def test_bad_detections_are_named(bad, message):
    row = {"image_id": "p7.png", "label": "a", "score": 0.5, "x_min": 0.0, "y_min": 0.0,
           "x_max": 4.0, "y_max": 4.0, **bad}
    with pytest.raises(InputError, match=message) as err:
        match_detections(pd.DataFrame([row]), _objs([]))
    assert "p7.png" in str(err.value)


def test_bad_arguments():
    with pytest.raises(InputError, match="lack column"):
        match_detections(pd.DataFrame({"image_id": [1], "label": ["a"]}), _objs([]))
    with pytest.raises(InputError, match="iou_threshold"):
        match_detections(_one([]), _objs([]), iou_threshold=0)
    with pytest.raises(InputError, match="iou_threshold"):
        match_detections(_one([]), _objs([]), iou_threshold="half")


def test_box_iou_matches_the_definition():
    d = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 2, 2]], float)
    g = np.array([[5, 0, 15, 10], [5, 0, 15, 10], [3, 3, 4, 4]], float)
    np.testing.assert_allclose(box_iou(d, g, np.array([False, True, False])),
                               [50 / 150, 50 / 100, 0.0])


def test_matches_is_the_public_result_type():
    assert isinstance(match_detections(_one([]), _objs([])), Matches)
