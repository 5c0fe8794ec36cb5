"""Brute-force references: every candidate threshold evaluated directly, row by row.

Deliberately naive and independent of calibrate's code paths (no cumulative sums, no
count table, bounds from scipy's binomtest rather than the beta quantile).
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import beta, binomtest


def brute_curve(scores, positive):
    s = np.asarray(scores, dtype=float)
    y = np.asarray(positive, dtype=bool)
    thresholds = sorted(set(s.tolist()), reverse=True)
    fp = [int(np.sum((s >= t) & ~y)) for t in thresholds]
    fn = [int(np.sum((s < t) & y)) for t in thresholds]
    return np.array(thresholds), np.array(fp), np.array(fn)


def cp_upper(k: int, n: int, confidence: float) -> float:
    if k >= n:
        return 1.0
    # One-sided upper bound at c is the upper end of the two-sided interval at 2c - 1.
    ci = binomtest(k, n).proportion_ci(confidence_level=2 * confidence - 1, method="exact")
    return float(ci.high)


def brute_points(scores, positive, *, action, cost_false_accept, cost_false_reject,
                 prevalence=None, max_false_accept_rate=None, max_false_reject_rate=None,
                 confidence=0.95):
    """Every candidate threshold (+inf included) with its counts, cost and feasibility."""
    s = np.asarray(scores, dtype=float)
    y = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    pi = n_pos / (n_pos + n_neg) if prevalence is None else prevalence
    rows = []
    for t in [math.inf] + sorted(set(s.tolist()), reverse=True):
        fires = s >= t
        fp = int(np.sum(fires & ~y))
        fn = int(np.sum(~fires & y))
        if action == "reject":
            fa, n_fa, fr, n_fr = fn, n_pos, fp, n_neg
            cost = cost_false_accept * pi * fn / n_pos + cost_false_reject * (1 - pi) * fp / n_neg
        else:
            fa, n_fa, fr, n_fr = fp, n_neg, fn, n_pos
            cost = cost_false_accept * (1 - pi) * fp / n_neg + cost_false_reject * pi * fn / n_pos
        ok = True
        # Two limits hold together at `confidence`: each is tested at 1 - alpha/2.
        both = max_false_accept_rate is not None and max_false_reject_rate is not None
        level = 1 - (1 - confidence) / 2 if both else confidence
        if max_false_accept_rate is not None:
            ok &= cp_upper(fa, n_fa, level) <= max_false_accept_rate
        if max_false_reject_rate is not None:
            ok &= cp_upper(fr, n_fr, level) <= max_false_reject_rate
        rows.append({"threshold": t, "fp": fp, "fn": fn, "fa": fa, "fr": fr,
                     "cost": cost, "feasible": bool(ok)})
    return rows


def brute_samples_needed(limit, confidence, errors, n):
    """Linear scan over extra samples, with the bound from the beta quantile directly."""
    m = 0
    while n + m <= errors or beta.ppf(confidence, errors + 1, n + m - errors) > limit:
        m += 1
    return m


def _brute_iou(d, g, crowd):
    """IoU of two (x_min, y_min, x_max, y_max) boxes, with plain Python floats."""
    w = min(d[2], g[2]) - max(d[0], g[0])
    h = min(d[3], g[3]) - max(d[1], g[1])
    if w <= 0 or h <= 0:
        return 0.0
    inter = w * h
    d_area = (d[2] - d[0]) * (d[3] - d[1])
    union = d_area if crowd else d_area + (g[2] - g[0]) * (g[3] - g[1]) - inter
    return inter / union


def brute_detection_counts(detections, objects, threshold, iou_threshold=0.5):
    """Re-match from scratch keeping only detections with ``score >= threshold``.

    ``detections``: list of ``(image, label, score, box)``; ``objects``: list of
    ``(image, label, box, ignore)``. The COCO protocol, one detection at a time: in each
    (image, label), detections by descending score (ties in list order) take the free
    non-ignored object with the highest IoU >= tau (ties: the later object); failing
    that, an ignore object with intersection / detection area >= tau absorbs them.

    Returns ``{label: (true_detections, false_detections, missed_objects)}``.
    """
    tau = min(iou_threshold, 1 - 1e-10)
    kept = [d for d in detections if d[2] >= threshold]
    labels = {d[1] for d in detections} | {o[1] for o in objects}
    out = {}
    for label in labels:
        tp = fp = 0
        n_objects = sum(1 for o in objects if o[1] == label and not o[3])
        for image in {d[0] for d in kept if d[1] == label}:
            mine = [d for d in kept if d[0] == image and d[1] == label]
            mine = sorted(mine, key=lambda d: -d[2])  # sorted() is stable
            gts = [o for o in objects if o[0] == image and o[1] == label]
            free = [not o[3] for o in gts]
            for d in mine:
                best, best_iou = None, -1.0
                for j, o in enumerate(gts):
                    if o[3] or not free[j]:
                        continue
                    iou = _brute_iou(d[3], o[2], False)
                    if iou >= tau and iou >= best_iou:
                        best, best_iou = j, iou
                if best is not None:
                    free[best] = False
                    tp += 1
                elif not any(o[3] and _brute_iou(d[3], o[2], True) >= tau for o in gts):
                    fp += 1
        out[label] = (tp, fp, n_objects - tp)
    return out


def brute_detection_points(detections, objects, label, n_images, *, action,
                           cost_false_accept, cost_false_reject, max_miss_rate=None,
                           confidence=0.95, iou_threshold=0.5):
    """Every candidate threshold of one label at the detection unit, re-matched from
    scratch: counts, cost per image (design formula) and whether a miss-rate limit holds
    on the exact bound over objects."""
    scores = sorted({d[2] for d in detections if d[1] == label}, reverse=True)
    rows = []
    for t in [math.inf] + scores:
        tp, fd, missed = brute_detection_counts(detections, objects, t, iou_threshold).get(
            label, (0, 0, 0))
        n_obj = tp + missed
        c_miss, c_fd = ((cost_false_accept, cost_false_reject) if action == "reject"
                        else (cost_false_reject, cost_false_accept))
        cost = c_miss * missed / n_images + c_fd * fd / n_images
        ok = max_miss_rate is None or cp_upper(missed, n_obj, confidence) <= max_miss_rate
        fa = missed if action == "reject" else fd
        rows.append({"threshold": t, "true": tp, "false": fd, "missed": missed,
                     "fa": fa, "cost": cost, "feasible": bool(ok)})
    return rows
