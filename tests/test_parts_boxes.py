"""Boxes on the bundled parts set: the generator writes each defect's box, the
surface-defect detector reports one box per responding region, and both reach
``detection_rows`` in pixels."""

from __future__ import annotations

import math

import numpy as np
import pytest

from calibrate.detectors.surface import SECONDARY_FLOOR, SurfaceDefectDetector
from calibrate.manifest import read_manifest
from calibrate.runner import RunOptions, score_dataset
from calibrate.samples import PARTS_LABELS, make_parts, render_part, render_part_with_box
from calibrate.samples.parts import _DEFECTS, _grid, _visible_box
from calibrate.store import ScoreStore


def iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize("defect", PARTS_LABELS)
def test_box_is_where_the_defect_is_visible(defect):
    yy, xx = _grid(64)
    for seed in range(30):
        drawn = _DEFECTS[defect](np.random.default_rng(seed), 1.0, yy, xx, 64)
        x0, y0, x1, y1 = _visible_box(drawn)
        strong = np.abs(drawn) >= 0.5 * np.abs(drawn).max()
        faint = np.abs(drawn) < 0.15 * np.abs(drawn).max()
        inside = np.zeros_like(strong)
        inside[int(y0):int(y1), int(x0):int(x1)] = True
        # pixel (r, c) spans [c, c + 1) x [r, r + 1): every strong pixel is inside, and
        # every row and column of the box holds a visible pixel (it is tight)
        assert inside[strong].all()
        assert (~faint[int(y0):int(y1), int(x0):int(x1)]).any(axis=0).all()
        assert (~faint[int(y0):int(y1), int(x0):int(x1)]).any(axis=1).all()
        assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64


def test_box_does_not_change_the_image():
    for seed, defect in enumerate((None, *PARTS_LABELS)):
        a, na = render_part(np.random.default_rng(seed), defect, 0.5)
        b, nb, box = render_part_with_box(np.random.default_rng(seed), defect, 0.5)
        assert np.array_equal(a, b) and na == nb
        assert (box is None) == (defect is None)
        if box:
            assert 0 <= box[0] < box[2] <= 64 and 0 <= box[1] < box[3] <= 64


def test_two_pits_give_two_spot_boxes_and_the_image_score_is_the_strongest():
    rng = np.random.default_rng(3)
    pixels = np.clip(rng.normal(128, 2, size=(64, 64)), 0, 255)
    yy, xx = np.mgrid[0:64, 0:64]
    pixels[(yy - 40) ** 2 + (xx - 20) ** 2 <= 6] = 40  # a dark pit at row 40, column 20
    pixels[(yy - 15) ** 2 + (xx - 45) ** 2 <= 6] = 60  # a fainter one at row 15, column 45
    det = SurfaceDefectDetector("v1")
    got = det.score_array(pixels.astype(np.uint8))
    spots = [r for r in got.results if r.label == "spot"]
    assert len(spots) == 2 and spots[0].score >= spots[1].score >= SECONDARY_FLOOR
    for r, (row, col) in zip(spots, ((40, 20), (15, 45))):
        assert r.box.x_min <= col + 0.5 <= r.box.x_max and r.box.y_min <= row + 0.5 <= r.box.y_max
        assert r.box.x_max - r.box.x_min < 12 and r.box.y_max - r.box.y_min < 12
    assert len(got.raw["spot"]["more"]) == 1


@pytest.fixture(scope="module")
def parts_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("parts")
    manifest = make_parts(folder / "parts", n_parts=150, seed=5)
    labeled = read_manifest(manifest)
    store_path = folder / "s.duckdb"
    with ScoreStore(store_path) as store:
        score_dataset(labeled, SurfaceDefectDetector("v2"), store,
                      RunOptions(progress=False, concurrency=1))
    return labeled, store_path


def test_image_scores_are_the_strongest_response_as_before(parts_run):
    labeled, _ = parts_run
    det = SurfaceDefectDetector("v2")
    spec = det._spec
    for img in labeled.images[:40]:
        gray = img.to_array()[..., 0].astype(np.float64) / 255.0
        got = det.score_array(img.to_array())
        for label, (response, row, col) in det.responses(gray).items():
            z = (response - spec.centre[label]) / spec.width[label]
            first = next(r for r in got.results if r.label == label)
            assert first.score == 1.0 / (1.0 + math.exp(-z))
            assert max(r.score for r in got.results if r.label == label) == first.score
            assert first.box.x_min <= col + 0.5 <= first.box.x_max
            assert first.box.y_min <= row + 0.5 <= first.box.y_max


def test_parts_boxes_reach_detection_rows(parts_run):
    labeled, store_path = parts_run
    det = SurfaceDefectDetector("v2")
    with ScoreStore(store_path, read_only=True) as store:
        rows = store.detection_rows("surface-defect", "v2")
    assert rows.n_images == len(labeled.images) == 150 and rows.n_without_boxes == 0
    # Ground truth: the manifest's boxes, one per defective part, none on good parts.
    want_objects = sorted((img.image_id, o.label, *o.box) for img in labeled.images
                          for o in img.objects)
    got_objects = sorted(tuple(r[:6]) for r in rows.objects.itertuples(index=False))
    assert got_objects == want_objects
    assert len(want_objects) == sum(1 for img in labeled.images if img.labels)
    # Detections: exactly what the detector reports, in pixels.
    sample = labeled.images[:25]
    for img in sample:
        want = sorted((r.label, r.score, r.box.x_min, r.box.y_min, r.box.x_max, r.box.y_max)
                      for r in det.detect(img).results)
        got = rows.detections[rows.detections["image_id"] == img.image_id]
        assert sorted(map(tuple, got.iloc[:, 1:].values.tolist())) == want
    # The strongest box of a clearly visible defect mostly lands on it.
    hits = []
    by_image = dict(list(rows.detections.groupby("image_id")))
    for img in labeled.images:
        for o in img.objects:
            if img.metadata["severity"] < 0.5:
                continue
            d = by_image[img.image_id]
            top = d[d["label"] == o.label].iloc[0]
            hits.append(iou(o.box, (top.x_min, top.y_min, top.x_max, top.y_max)) >= 0.5)
    assert len(hits) >= 20 and np.mean(hits) >= 0.6
