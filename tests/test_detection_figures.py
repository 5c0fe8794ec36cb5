"""The detection-unit displays: what they draw equals a brute-force re-match and the
exact intervals computed from their definition."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import beta

from calibrate.errors import InputError
from calibrate.matching import detection_curve, match_detections
from calibrate.policy import Policy
from calibrate.report.figures import (
    DetectionPrecisionRecallDisplay,
    MissRateDisplay,
    detection_arrays,
)
from calibrate.thresholds import LabelThreshold, choose_threshold_from_curve
from tests.detection_scenes import store_scene
from tests.reference import brute_detection_counts


def _cp(k, n, conf):
    a = 1 - conf
    lo = 0.0 if k == 0 else beta.ppf(a / 2, k, n - k + 1)
    up = 1.0 if k == n else beta.ppf(1 - a / 2, k + 1, n - k)
    return lo, up


def _scene_rows(seed):
    images, results = store_scene(seed, n=40)
    ids = {im.image_id: k for k, im in enumerate(images)}
    dets, objs = [], []
    for im in images:
        for o in im.objects:
            objs.append((ids[im.image_id], o.label, o.box, o.ignore))
        for r in results[im.image_id]:
            b = r.box
            scale = (100.0, 100.0) if b.unit == "ratio" else (1.0, 1.0)
            dets.append((ids[im.image_id], r.label, r.score,
                         (b.x_min * scale[0], b.y_min * scale[1], b.x_max * scale[0],
                          b.y_max * scale[1])))
    return len(images), dets, objs


@pytest.mark.parametrize("seed", [3, 7])
def test_arrays_equal_a_rematch_and_exact_intervals(seed):
    import pandas as pd

    n_images, dets, objs = _scene_rows(seed)
    det = pd.DataFrame([(i, lab, s, *b) for i, lab, s, b in dets],
                       columns=["image_id", "label", "score", "x_min", "y_min", "x_max", "y_max"])
    obj = pd.DataFrame([(i, lab, *b, ig) for i, lab, b, ig in objs],
                       columns=["image_id", "label", "x_min", "y_min", "x_max", "y_max", "ignore"])
    m = match_detections(det, obj, n_images=n_images)
    curve = detection_curve(m.count_table("scratch"), n_images, "scratch")
    a = detection_arrays(curve, 0.9)
    assert math.isinf(a.thresholds[0]) and a.false_detections[0] == 0
    for k, t in enumerate(a.thresholds):
        tp, fd, missed = brute_detection_counts(dets, objs, t).get("scratch", (0, 0, 0))
        assert (a.true_detections[k], a.false_detections[k], a.missed[k]) == (tp, fd, missed)
        assert a.miss_rate[k] == missed / a.n_objects
        assert a.false_per_image[k] == fd / n_images
        assert (a.miss_lower[k], a.miss_upper[k]) == pytest.approx(_cp(missed, a.n_objects, 0.9))
        if tp + fd:
            assert a.precision[k] == tp / (tp + fd)
            assert (a.precision_lower[k], a.precision_upper[k]) == pytest.approx(
                _cp(tp, tp + fd, 0.9))
        else:
            assert np.isnan(a.precision[k]) and np.isnan(a.precision_lower[k])


@pytest.mark.parametrize("action", ["reject", "accept"])
def test_displays_mark_the_chosen_cutoff_and_name_errors_by_action(action):
    import pandas as pd

    n_images, dets, objs = _scene_rows(5)
    det = pd.DataFrame([(i, lab, s, *b) for i, lab, s, b in dets],
                       columns=["image_id", "label", "score", "x_min", "y_min", "x_max", "y_max"])
    obj = pd.DataFrame([(i, lab, *b, ig) for i, lab, b, ig in objs],
                       columns=["image_id", "label", "x_min", "y_min", "x_max", "y_max", "ignore"])
    table = match_detections(det, obj, n_images=n_images).count_table("dent")
    curve = detection_curve(table, n_images, "dent")
    policy = Policy(cost_false_accept=3, cost_false_reject=1, action=action, unit="detection")
    choice = choose_threshold_from_curve(curve, policy)
    result = LabelThreshold("surface-defect", "v1", "dent", choice, policy=policy,
                            table=table, curve=curve)
    miss = MissRateDisplay.from_result(result)
    x, y = miss.chosen_point_.get_data()
    assert (x[0], y[0]) == (choice.false_detections / n_images,
                            choice.missed_objects / choice.n_objects)
    missed_name = "false accepts" if action == "reject" else "false rejects"
    assert f"({missed_name})" in miss.ax_.get_ylabel()
    pr = DetectionPrecisionRecallDisplay.from_result(result)
    if choice.true_detections + choice.false_detections:
        point = pr.chosen_point_.lines[0].get_data()
        assert point[0][0] == pytest.approx(choice.true_detections / choice.n_objects)
        assert point[1][0] == pytest.approx(
            choice.true_detections / (choice.true_detections + choice.false_detections))
    bare = LabelThreshold("surface-defect", "v1", "dent", None, problem="no objects")
    with pytest.raises(InputError, match="no objects"):
        MissRateDisplay.from_result(bare)
