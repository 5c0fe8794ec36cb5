"""Detection matching (COCO protocol) against pycocotools' ``COCOeval.evaluate()``.

Builds seeded synthetic data (default 10^5 images, 10^6 detections, three labels, about
three objects per image, 2% of them crowd/ignore; half of the detections jittered copies
of objects, half anywhere), then times, in the same run:

* ``calibrate.matching.match_detections`` (the whole call, from frames to matches) plus
  the count table of every label;
* pycocotools ``COCOeval.evaluate()`` on the same data (areaRng all, maxDets unlimited,
  one IoU threshold 0.5, class-aware); building the COCO indexes is not timed.

and prints the ratio (target, DESIGN.md: matching at least as fast as pycocotools). The
per-label true and false detection totals of both are compared as a sanity check (the
exact per-detection agreement is tested in tests/test_matching.py on exact boxes).

Usage: python benchmarks/bench_matching.py [--images 100000] [--detections 1000000]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import time

import numpy as np
import pandas as pd
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from calibrate.matching import match_detections

LABELS = ["scratch", "dent", "crack"]


def make_data(n_images: int, n_detections: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    n_obj = 3 * n_images
    o_img = rng.integers(0, n_images, n_obj)
    o_lab = rng.integers(0, len(LABELS), n_obj)
    o_xy = rng.uniform(0, 600, (n_obj, 2))
    o_wh = rng.uniform(8, 120, (n_obj, 2))
    o_ign = rng.random(n_obj) < 0.02
    near = n_detections // 2
    src = rng.integers(0, n_obj, near)
    d_img = np.concatenate([o_img[src], rng.integers(0, n_images, n_detections - near)])
    d_lab = np.concatenate([o_lab[src], rng.integers(0, len(LABELS), n_detections - near)])
    d_xy = np.concatenate([o_xy[src] + rng.normal(0, 6, (near, 2)),
                           rng.uniform(0, 600, (n_detections - near, 2))])
    d_wh = np.concatenate([o_wh[src] * rng.uniform(0.8, 1.2, (near, 2)),
                           rng.uniform(8, 120, (n_detections - near, 2))])
    d_score = np.round(rng.beta(2, 2, n_detections), 3)  # 3 decimals: many ties
    labels = np.array(LABELS, dtype=object)
    det = pd.DataFrame({"image_id": d_img, "label": labels[d_lab], "score": d_score,
                        "x_min": d_xy[:, 0], "y_min": d_xy[:, 1],
                        "x_max": d_xy[:, 0] + d_wh[:, 0], "y_max": d_xy[:, 1] + d_wh[:, 1]})
    obj = pd.DataFrame({"image_id": o_img, "label": labels[o_lab],
                        "x_min": o_xy[:, 0], "y_min": o_xy[:, 1],
                        "x_max": o_xy[:, 0] + o_wh[:, 0], "y_max": o_xy[:, 1] + o_wh[:, 1],
                        "ignore": o_ign})
    return det, obj


def coco_eval(det: pd.DataFrame, obj: pd.DataFrame, n_images: int) -> COCOeval:
    cats = [{"id": k + 1, "name": lab} for k, lab in enumerate(LABELS)]
    cat = {lab: k + 1 for k, lab in enumerate(LABELS)}
    images = [{"id": int(i) + 1} for i in range(n_images)]

    def anns(frame, scored):
        w = (frame["x_max"] - frame["x_min"]).to_numpy()
        h = (frame["y_max"] - frame["y_min"]).to_numpy()
        out = []
        for k, row in enumerate(frame.itertuples(index=False)):
            a = {"id": k + 1, "image_id": int(row.image_id) + 1,
                 "category_id": cat[row.label],
                 "bbox": [row.x_min, row.y_min, float(w[k]), float(h[k])],
                 "area": float(w[k] * h[k]),
                 "iscrowd": 0 if scored else int(row.ignore)}
            if scored:
                a["score"] = row.score
            out.append(a)
        return out

    def coco(a):
        c = COCO()
        c.dataset = {"images": images, "categories": cats, "annotations": a}
        c.createIndex()
        return c

    ev = COCOeval(coco(anns(obj, False)), coco(anns(det, True)), "bbox")
    ev.params.iouThrs = np.array([0.5])
    ev.params.maxDets = [10**9]
    ev.params.areaRng = [[0, 1e10]]
    ev.params.areaRngLbl = ["all"]
    ev.params.useCats = 1
    return ev


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=100_000)
    ap.add_argument("--detections", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=3, help="best of, for calibrate")
    args = ap.parse_args()
    det, obj = make_data(args.images, args.detections)
    print(f"{len(det):,} detections, {len(obj):,} objects "
          f"({int(obj['ignore'].sum()):,} ignore), {args.images:,} images, "
          f"{len(LABELS)} labels")

    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        m = match_detections(det, obj, iou_threshold=0.5, n_images=args.images)
        tables = {lab: m.count_table(lab) for lab in LABELS}
        times.append(time.perf_counter() - t0)
    ours = min(times)

    with contextlib.redirect_stdout(io.StringIO()):
        ev = coco_eval(det, obj, args.images)
        t0 = time.perf_counter()
        ev.evaluate()
        theirs = time.perf_counter() - t0

    for k, lab in enumerate(LABELS):
        tp = fp = 0
        for e in ev.evalImgs:
            if e is None or e["category_id"] != k + 1:
                continue
            ig = e["dtIgnore"][0].astype(bool)
            hit = e["dtMatches"][0] > 0
            tp += int(np.sum(hit & ~ig))
            fp += int(np.sum(~hit & ~ig))
        t = tables[lab]
        mine = (int(t.total_positive - t.n_positive[np.isneginf(t.scores)].sum()),
                t.total_negative)
        print(f"  {lab:8s} true/false detections: calibrate {mine[0]:,}/{mine[1]:,}, "
              f"pycocotools {tp:,}/{fp:,}" + ("" if mine == (tp, fp) else "  MISMATCH"))
    print(f"calibrate match_detections + count tables: {ours:.2f} s (best of {args.repeat})")
    print(f"pycocotools COCOeval.evaluate():           {theirs:.2f} s")
    print(f"ratio calibrate / pycocotools: {ours / theirs:.4f} "
          f"(pycocotools is {theirs / ours:.0f}x slower; target: ratio <= 1)")


if __name__ == "__main__":
    main()
