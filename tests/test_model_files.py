"""The shared parts of the model-file detectors: label maps, pre-processing, decoding and
non-maximum suppression, against direct computations and brute-force oracles."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from calibrate.detectors.model_files import (
    BoxDecoding,
    Classification,
    Geometry,
    Preprocessing,
    ShapeMismatch,
    nms,
    read_label_map,
)
from calibrate.errors import InputError

# -- label maps ---------------------------------------------------------------------------


def test_text_label_map_skips_placeholders_and_trailing_blank_lines(tmp_path):
    p = tmp_path / "labelmap.txt"
    p.write_text("???\nscratch\n dent \n???\nspot\n\n\n")
    # placeholders count as classes (outputs have a place for them) but name none
    assert read_label_map(p) == {0: "???", 1: "scratch", 2: "dent", 3: "???", 4: "spot"}
    (tmp_path / "only.txt").write_text("???\n???\n")
    with pytest.raises(InputError, match="names no class"):
        read_label_map(tmp_path / "only.txt")


@pytest.mark.parametrize("data, expected", [
    (["scratch", "dent"], {0: "scratch", 1: "dent"}),
    ({"0": "scratch", "3": "dent"}, {0: "scratch", 3: "dent"}),
    ({"scratch": 1, "dent": 0}, {0: "dent", 1: "scratch"}),
])
def test_json_label_maps(tmp_path, data, expected):
    p = tmp_path / "labels.json"
    p.write_text(json.dumps(data))
    assert read_label_map(p) == expected


@pytest.mark.parametrize("name, text, message", [
    ("l.txt", "scratch\n\ndent\n", "l.txt:2: empty label"),
    ("l.txt", "scratch\ndent\nscratch\n", "l.txt:3: label 'scratch' again (first at"),
    ("l.json", "[\"a\",", "l.json:1: not valid JSON"),
    ("l.json", '{"x": "a"}', "class indices must be non-negative integers"),
    ("l.json", '{"0": ["a"]}', "a label must be a string"),
    ("l.json", '"abc"', "must be a list or an object"),
    ("l.txt", "\n\n", "lists no labels"),
])
def test_label_map_errors_name_file_and_line(tmp_path, name, text, message):
    p = tmp_path / name
    p.write_text(text)
    with pytest.raises(InputError) as err:
        read_label_map(p)
    assert message in str(err.value)


def test_missing_label_map_says_what_to_do(tmp_path):
    with pytest.raises(InputError, match="does not exist; pass the file listing"):
        read_label_map(tmp_path / "nope.txt")


# -- pre-processing -----------------------------------------------------------------------


def _direct(rgb, size, channels, scale, mean, std, layout):
    """The documented pre-processing, written out step by step with Pillow and numpy."""
    img = Image.fromarray(rgb)
    if channels == "gray":
        img = img.convert("L")
    img = img.resize(size, Image.Resampling.BILINEAR)
    a = np.asarray(img).astype(np.float64)
    a = a[..., None] if a.ndim == 2 else a
    if channels == "BGR":
        a = a[..., ::-1]
    a = (a * scale - np.array(mean)) / np.array(std)
    if layout == "NCHW":
        a = a.transpose(2, 0, 1)
    return a[None]


@pytest.mark.parametrize("layout", ["NHWC", "NCHW"])
@pytest.mark.parametrize("channels, mean, std", [
    ("RGB", (0.0,), (1.0,)),
    ("BGR", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ("gray", (0.5,), (0.25,)),
])
def test_preprocessing_matches_the_documented_steps(layout, channels, mean, std):
    rgb = np.random.default_rng(7).integers(0, 256, (23, 37, 3), dtype=np.uint8)
    pre = Preprocessing("x", (16, 12), layout=layout, channels=channels, mean=mean, std=std)
    x, geo = pre.apply(rgb)
    expected = _direct(rgb, (16, 12), channels, 1 / 255, mean, std, layout)
    assert x.dtype == np.float32 and x.shape == expected.shape
    np.testing.assert_allclose(x, expected, rtol=1e-5, atol=1e-5)
    assert (geo.scale_x, geo.scale_y) == (16 / 37, 12 / 23)


def test_integer_inputs_take_raw_pixels_and_flat_inputs_are_flattened():
    rgb = np.random.default_rng(1).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    x, _ = Preprocessing("x", None, dtype="uint8").apply(rgb)
    assert x.dtype == np.uint8 and np.array_equal(x[0], rgb)
    x, _ = Preprocessing("x", None, dtype="int8").apply(rgb)
    assert np.array_equal(x[0].astype(int), rgb.astype(int) - 128)
    x, _ = Preprocessing("x", None, flat=True, layout="NCHW").apply(rgb)
    assert x.shape == (1, 192) and np.allclose(x[0], (rgb.transpose(2, 0, 1) / 255).ravel())


def test_letterbox_keeps_aspect_and_maps_boxes_back():
    rgb = np.zeros((50, 100, 3), np.uint8)
    x, geo = Preprocessing("x", (64, 64), resize="letterbox", dtype="uint8").apply(rgb)
    # 100x50 -> 64x32, padded by 16 rows above and below with 114
    assert x.shape == (1, 64, 64, 3)
    assert (x[0, :16] == 114).all() and (x[0, 48:] == 114).all() and (x[0, 16:48] == 0).all()
    back = geo.to_image(np.array([[0.0, 16.0, 64.0, 48.0], [-5, 0, 32, 40]]))
    np.testing.assert_allclose(back, [[0, 0, 100, 50], [0, 0, 50, 37.5]])


# -- classification -----------------------------------------------------------------------


def test_classification_activations_and_label_order():
    logits = np.array([[2.0, -1.0, 0.5]])
    labels = {0: "a", 1: "b", 2: "c"}
    soft = Classification("y", "softmax").decode({"y": logits}, labels, "m")
    e = np.exp(logits[0] - 2.0)
    assert [r.label for r in soft.results] == ["a", "b", "c"]
    np.testing.assert_allclose([r.score for r in soft.results], e / e.sum())
    sig = Classification("y", "sigmoid").decode({"y": logits}, labels, "m")
    np.testing.assert_allclose([r.score for r in sig.results], 1 / (1 + np.exp(-logits[0])))
    none = Classification("y").decode({"y": logits.reshape(1, 3, 1, 1)}, labels, "m")
    assert [r.score for r in none.results] == [2.0, -1.0, 0.5]
    assert all(r.box is None for r in none.results)
    # a placeholder class (???, or a gap in a JSON map) is scored but not reported
    for labels in ({0: "a", 2: "c"}, {0: "a", 1: "???", 2: "c"}):
        gap = Classification("y").decode({"y": logits}, labels, "m")
        assert [r.label for r in gap.results] == ["a", "c"]


@pytest.mark.parametrize("shape", [(1, 4), (2, 3), (1, 3, 2)])
def test_classification_shape_mismatch_names_output_and_label_map(shape):
    with pytest.raises(ShapeMismatch) as err:
        Classification("y").decode({"y": np.zeros(shape)}, {0: "a", 1: "b", 2: "c"}, "m.onnx")
    assert "m.onnx" in str(err.value) and "'y'" in str(err.value)


# -- boxes ----------------------------------------------------------------------------------


def _iou(a, b):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _brute_nms(boxes, scores, iou, groups):
    """Greedy suppression as usually described: visit boxes best first; keep a box
    unless a kept box of its group overlaps it by more than ``iou``."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    kept = []
    for i in order:
        if all(groups[j] != groups[i] or _iou(boxes[i], boxes[j]) <= iou for j in kept):
            kept.append(i)
    return kept


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 20), st.integers(0, 20), st.integers(1, 12),
                          st.integers(1, 12), st.integers(0, 5), st.integers(0, 2)),
                max_size=25),
       st.sampled_from([0.0, 0.3, 0.5, 0.9]))
def test_nms_equals_brute_force(rows, iou):
    boxes = np.array([[x, y, x + w, y + h] for x, y, w, h, _, _ in rows], float).reshape(-1, 4)
    scores = np.array([s / 5 for *_, s, _ in rows], float)  # many ties on purpose
    groups = np.array([g for *_, g in rows], int)
    assert nms(boxes, scores, iou, groups).tolist() == _brute_nms(boxes, scores, iou, groups)


def _geo(w=100, h=50, iw=10, ih=10):
    return Geometry(w, h, iw, ih, iw / w, ih / h, 0.0, 0.0)


def test_ssd_decoding_boxes_floor_offset_and_count():
    outputs = {
        "location": np.array([[[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0], [0.2, 0.2, 0.3, 0.3]]]),
        "score": np.array([[0.9, 0.05, 0.7]]),
        "category": np.array([[0.0, 1.0, 2.0]]),
        "n_detections": np.array([2.0]),
    }
    names = {"boxes": "location", "scores": "score", "classes": "category",
             "count": "n_detections"}
    labels = {1: "scratch", 2: "dent", 3: "spot"}
    dec = BoxDecoding("ssd", names, "yxyx", "ratio", score_floor=0.1, class_offset=1)
    det = dec.decode(outputs, labels, "m", _geo())
    # the count keeps the first two; the floor drops the second
    assert [(r.label, r.score) for r in det.results] == [("scratch", 0.9)]
    box = det.results[0].box
    assert (box.x_min, box.y_min, box.x_max, box.y_max, box.unit) == (20, 5, 60, 25, "pixel")


def test_ssd_class_outside_label_map_is_a_shape_mismatch():
    outputs = {"b": np.zeros((1, 1, 4)), "s": np.ones((1, 1)), "c": np.array([[7.0]])}
    dec = BoxDecoding("ssd", {"boxes": "b", "scores": "s", "classes": "c"}, "xyxy", "ratio")
    with pytest.raises(ShapeMismatch, match="reported class 7 but the label map's classes"):
        dec.decode(outputs, {0: "a", 1: "b"}, "m", _geo())


def _yolo_oracle(cand, n_classes, floor, iou, geo, objectness):
    """Decode YOLO candidates [N, K] the long way: per candidate its best class, floor,
    per-class greedy suppression, best first."""
    rows = []
    for c in cand:
        cls = c[5:] * c[4] if objectness else c[4:]
        k = int(np.argmax(cls))
        cx, cy, w, h = c[:4]
        rows.append(([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], float(cls[k]), k))
    rows = [r for r in rows if r[1] >= floor]
    kept = _brute_nms([r[0] for r in rows], [r[1] for r in rows], iou, [r[2] for r in rows])
    out = []
    for i in kept:
        (x0, y0, x1, y1), s, k = rows[i]
        box = [(x0 - geo.pad_x) / geo.scale_x, (y0 - geo.pad_y) / geo.scale_y,
               (x1 - geo.pad_x) / geo.scale_x, (y1 - geo.pad_y) / geo.scale_y]
        box = [min(max(box[0], 0), geo.image_w), min(max(box[1], 0), geo.image_h),
               min(max(box[2], 0), geo.image_w), min(max(box[3], 0), geo.image_h)]
        out.append((k, s, box))
    return out


@pytest.mark.parametrize("objectness", [False, True])
@pytest.mark.parametrize("transposed", [False, True])
def test_yolo_decoding_equals_the_long_way(objectness, transposed):
    rng = np.random.default_rng(3)
    n, n_classes = 60, 3
    xy = rng.uniform(0, 64, (n, 2))
    wh = rng.uniform(4, 30, (n, 2))
    extra = rng.uniform(0, 1, (n, n_classes + int(objectness)))
    cand = np.hstack([xy, wh, extra])
    geo = Geometry(128, 64, 64, 64, 0.5, 0.5, 0.0, 16.0)  # a letterboxed 128x64 image
    labels = {0: "scratch", 1: "dent", 2: "spot"}
    arr = cand.T[None] if transposed else cand[None]
    dec = BoxDecoding("yolo", {"candidates": "out"}, "cxcywh", "pixel", score_floor=0.2,
                      nms_iou=0.45, max_detections=1000)
    det = dec.decode({"out": arr}, labels, "m", geo)
    expected = _yolo_oracle(cand, n_classes, 0.2, 0.45, geo, objectness)
    expected.sort(key=lambda r: -r[1])
    got = [(r.label, r.score, [r.box.x_min, r.box.y_min, r.box.x_max, r.box.y_max])
           for r in det.results]
    assert [g[0] for g in got] == [labels[e[0]] for e in expected]
    np.testing.assert_allclose([g[1] for g in got], [e[1] for e in expected])
    np.testing.assert_allclose([g[2] for g in got], [e[2] for e in expected])


def test_yolo_with_too_few_values_per_candidate_names_the_label_map():
    dec = BoxDecoding("yolo", {"candidates": "out"}, "cxcywh", "pixel")
    with pytest.raises(ShapeMismatch, match=r"with 3 classes in the label map the yolo "
                                            r"decoder reads 7 or 8 values"):
        dec.decode({"out": np.zeros((1, 100, 6))}, {0: "a", 1: "b", 2: "c"}, "m", _geo())


def test_max_detections_and_multi_label():
    scores = np.array([[[0.9, 0.8], [0.3, 0.6], [0.2, 0.1]]])
    boxes = np.array([[[0, 0, 1, 1], [2, 2, 3, 3], [4, 4, 5, 5]]], float)
    outputs = {"b": boxes, "s": scores}
    labels = {0: "a", 1: "b"}
    multi = BoxDecoding("ssd", {"boxes": "b", "scores": "s"}, "xyxy", "pixel",
                        score_floor=0.15, multi_label=True).decode(outputs, labels, "m", _geo())
    assert [(r.label, r.score) for r in multi.results] == [
        ("a", 0.9), ("b", 0.8), ("b", 0.6), ("a", 0.3), ("a", 0.2)]
    best = BoxDecoding("ssd", {"boxes": "b", "scores": "s"}, "xyxy", "pixel",
                       max_detections=2).decode(outputs, labels, "m", _geo())
    assert [(r.label, r.score) for r in best.results] == [("a", 0.9), ("b", 0.6)]
