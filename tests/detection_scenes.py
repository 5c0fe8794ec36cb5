"""Scene generators shared by the detection tests: random ground truth and detections
(hypothesis strategies and seeded numpy scenes), pycocotools' per-detection matches as the
reference, and a helper that stores a run of a scene."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pandas as pd
from hypothesis import strategies as st
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from calibrate.detectors.base import Box, Detection, Result
from calibrate.manifest import GroundTruthObject, LabeledImage

LABELS = ["scratch", "dent", "crack"]

# Integer pixel boxes on a small canvas: IoUs are exact (so pycocotools' xywh arithmetic
# and ours give the same double), boxes overlap often and IoU ties happen.
_coord = st.integers(0, 12)
_size = st.integers(1, 8)
_box = st.tuples(_coord, _coord, _size, _size).map(
    lambda b: (float(b[0]), float(b[1]), float(b[0] + b[2]), float(b[1] + b[3])))
# Few distinct scores: ties between detections of one image and across images.
_score = st.sampled_from([0.1, 0.25, 0.5, 0.5, 0.75, 0.9, 0.95])


@st.composite
def scenes(draw):
    """Random ground truth and detections over a few images (some empty)."""
    n_images = draw(st.integers(1, 5))
    labels = LABELS[: draw(st.integers(1, 3))]
    objects, detections = [], []
    for image in range(n_images):
        for _ in range(draw(st.integers(0, 4))):
            objects.append((image, draw(st.sampled_from(labels)), draw(_box),
                            draw(st.booleans()) and draw(st.booleans())))  # ~1/4 ignore
        for _ in range(draw(st.integers(0, 6))):
            if objects and objects[-1][0] == image and draw(st.booleans()):
                # near an existing object: overlapping, often above the IoU threshold
                ob = draw(st.sampled_from([o for o in objects if o[0] == image]))
                dx, dy = draw(st.integers(-2, 2)), draw(st.integers(-2, 2))
                x0, y0, x1, y1 = ob[2]
                box = (x0 + dx, y0 + dy, max(x0 + dx + 1, x1 + dx), max(y0 + dy + 1, y1 + dy))
                label = ob[1] if draw(st.integers(0, 4)) else draw(st.sampled_from(labels))
            else:
                box, label = draw(_box), draw(st.sampled_from(labels))
            detections.append((image, label, draw(_score), box))
    return n_images, detections, objects


def frames(detections, objects):
    det = pd.DataFrame(
        [(i, lab, s, *b) for i, lab, s, b in detections],
        columns=["image_id", "label", "score", "x_min", "y_min", "x_max", "y_max"])
    obj = pd.DataFrame(
        [(i, lab, *b, ig) for i, lab, b, ig in objects],
        columns=["image_id", "label", "x_min", "y_min", "x_max", "y_max", "ignore"])
    return det, obj


def _xywh(b):
    return [b[0], b[1], b[2] - b[0], b[3] - b[1]]


def coco_reference(n_images, detections, objects, tau, labels=LABELS):
    """pycocotools' per-detection matches: evalImgs with areaRng all, maxDets unlimited,
    one IoU threshold, class-aware. Images are 0..n_images-1. Returns (matched, ignored,
    object) per detection (object = 0-based row of the matched object, -1 if none)."""
    cats = [{"id": k + 1, "name": lab} for k, lab in enumerate(labels)]
    cat_id = {lab: k + 1 for k, lab in enumerate(labels)}
    images = [{"id": i + 1} for i in range(n_images)]

    def dataset(anns):
        coco = COCO()
        coco.dataset = {"images": images, "categories": cats, "annotations": anns}
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        return coco

    gt = dataset([{"id": k + 1, "image_id": i + 1, "category_id": cat_id[lab],
                   "bbox": _xywh(b), "area": _xywh(b)[2] * _xywh(b)[3], "iscrowd": int(ig)}
                  for k, (i, lab, b, ig) in enumerate(objects)])
    dt = dataset([{"id": k + 1, "image_id": i + 1, "category_id": cat_id[lab], "score": s,
                   "bbox": _xywh(b), "area": _xywh(b)[2] * _xywh(b)[3], "iscrowd": 0}
                  for k, (i, lab, s, b) in enumerate(detections)])
    ev = COCOeval(gt, dt, "bbox")
    ev.params.iouThrs = np.array([tau])
    ev.params.maxDets = [10**6]
    ev.params.areaRng = [[0, 1e10]]
    ev.params.areaRngLbl = ["all"]
    ev.params.useCats = 1
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
    n = len(detections)
    matched, ignored, obj = np.zeros(n, bool), np.zeros(n, bool), np.full(n, -1)
    for e in ev.evalImgs:
        if e is None:
            continue
        for j, did in enumerate(e["dtIds"]):
            m = int(e["dtMatches"][0, j])
            ig = bool(e["dtIgnore"][0, j])
            matched[did - 1] = m > 0 and not ig
            ignored[did - 1] = ig
            obj[did - 1] = m - 1 if m > 0 else -1
    return matched, ignored, obj


STORE_LABELS = ("scratch", "dent")


def store_scene(seed, n=30):
    """Images with integer boxes (some crowd), detections near them and anywhere."""
    rng = np.random.default_rng(seed)
    images, results = [], {}
    for k in range(n):
        objects = []
        for _ in range(rng.integers(0, 4)):
            x, y = rng.integers(0, 60, 2)
            w, h = rng.integers(4, 30, 2)
            objects.append(GroundTruthObject(str(rng.choice(STORE_LABELS)),
                                             (float(x), float(y), float(x + w), float(y + h)),
                                             bool(rng.random() < 0.15)))
        labels = {o.label for o in objects if not o.ignore}
        split = "cal" if k % 3 else "test"
        images.append(LabeledImage(f"p{k}.png", f"/d/p{k}.png", frozenset(labels),
                                   content_hash=f"sha256:{k}", split=split,
                                   objects=tuple(objects), width=100, height=100))
        dets = []
        for o in objects:
            if rng.random() < 0.7:
                j = rng.integers(-3, 4, 4)
                b = np.array(o.box) + j
                b[2], b[3] = max(b[2], b[0] + 1), max(b[3], b[1] + 1)
                dets.append(Result(o.label, float(rng.choice([0.3, 0.5, 0.8, 0.9])),
                                   Box(*map(float, b))))
        for _ in range(rng.integers(0, 3)):
            x, y = rng.integers(0, 60, 2)
            # ratio boxes: converted with the image size before matching
            dets.append(Result(str(rng.choice(STORE_LABELS)), float(rng.choice([0.2, 0.5, 0.7])),
                               Box(x / 100, y / 100, (x + 20) / 100, (y + 20) / 100, "ratio")))
        results[f"p{k}.png"] = dets
    return images, results


def store_run(store, results, ids, version="v1", failed=()):
    run = store.begin_run(detector="surface-defect", model_version=version, dataset="parts",
                          dataset_fingerprint="fp", settings={}, labels=None,
                          detection_floor=None)
    store.record(run, [(i, Detection(results[i]), 1) for i in ids],
                 [(i, "image", "unreadable", 1) for i in failed])
    store.finish_run(run)
    return run
