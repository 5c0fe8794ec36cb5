"""The ``tflite`` detector on tiny .tflite files written in the test (the TFLite schema's
object API and ``flatbuffer_utils``, both in the ai-edge-litert wheel; no TensorFlow):
scores against a direct LiteRT interpreter call on the same pre-processed input and
against the graph's math, quantized models, SSD outputs named as Viam names them, and
errors."""

from __future__ import annotations

import hashlib
import pickle

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert")  # a guard only: CI installs calibrate[tflite]

from ai_edge_litert.interpreter import Interpreter  # noqa: E402
from PIL import Image  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from calibrate.cli import app  # noqa: E402
from calibrate.detectors.registry import make_detector  # noqa: E402
from calibrate.detectors.tflite_model import TFLiteDetector  # noqa: E402
from calibrate.errors import InputError  # noqa: E402
from calibrate.manifest import read_manifest  # noqa: E402
from calibrate.runner import RunOptions, score_dataset  # noqa: E402
from calibrate.store import ScoreStore  # noqa: E402
from tests.model_builders import tflite_classifier, tflite_ssd  # noqa: E402

LABELS = ("scratch", "dent", "spot", "crack")
RNG = np.random.default_rng(23)
W = RNG.normal(size=(4, 3)) * 3
B = RNG.normal(size=4)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tflite")
    (d / "labels.txt").write_text("\n".join(LABELS) + "\n")
    return d


def _images(n=4):
    rng = np.random.default_rng(9)
    return [rng.integers(0, 256, (int(rng.integers(10, 50)), int(rng.integers(10, 50)), 3),
                        dtype=np.uint8) for _ in range(n)]


def _interpret(path, tensor):
    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], tensor)
    it.invoke()
    return {d["name"]: (it.get_tensor(d["index"]), d["quantization"])
            for d in it.get_output_details()}


def _softmax_of_mean(rgb, size=(8, 8)):
    small = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR), np.float64)
    z = W @ (small / 255).reshape(-1, 3).mean(axis=0) + B
    e = np.exp(z - z.max())
    return e / e.sum()


def test_float_classifier_equals_the_interpreter_and_the_math(files):
    path = tflite_classifier(files / "float.tflite", W, B)
    det = make_detector("tflite", model=str(path), labels=str(files / "labels.txt"))
    assert det.preprocessing.layout == "NHWC" and det.preprocessing.dtype == "float32"
    assert det.labels == LABELS and det.name.startswith("tflite/float/")
    assert det.model_version == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert det.settings()["runtime_version"].startswith("ai-edge-litert ")
    for rgb in _images():
        got = np.array([r.score for r in det.score_array(rgb).results])
        tensor, _ = det.preprocessing.apply(rgb)
        np.testing.assert_allclose(got, _interpret(path, tensor)["probs"][0][0], rtol=1e-6)
        np.testing.assert_allclose(got, _softmax_of_mean(rgb), rtol=1e-4)


def test_quantized_model_takes_raw_pixels_and_outputs_are_dequantized(files):
    path = tflite_classifier(files / "quant.tflite", W, B, quantized=True)
    det = TFLiteDetector(model=path, labels=files / "labels.txt")
    assert det.preprocessing.dtype == "uint8"
    for rgb in _images():
        tensor, _ = det.preprocessing.apply(rgb)
        assert tensor.dtype == np.uint8
        q, (scale, zero) = _interpret(path, tensor)["probs"]
        assert q.dtype == np.uint8 and scale == 1 / 256 and zero == 0
        got = np.array([r.score for r in det.score_array(rgb).results])
        np.testing.assert_allclose(got, (q[0].astype(np.float64) - zero) * scale)
        # within the output's quantization step of the float math
        assert np.abs(got - _softmax_of_mean(rgb)).max() <= 1 / 256 + 1e-3
    with pytest.raises(InputError, match=r"is uint8: it takes pixels as they are .* mean, std "
                                         r"apply to float inputs only"):
        TFLiteDetector(model=path, labels=files / "labels.txt", mean=0.5, std=0.2)


def test_ssd_outputs_named_as_viam_names_them(files):
    rng = np.random.default_rng(4)
    n = 3
    box_w, box_b = rng.normal(size=(4 * n, 3)) * 0.05, rng.uniform(0.1, 0.4, 4 * n)
    box_b[2::4] += 0.4  # y_max > y_min
    box_b[3::4] += 0.4  # x_max > x_min
    score_w, score_b = rng.normal(size=(n, 3)), np.array([2.0, -1.0, 0.5])
    classes = np.array([0.0, 2.0, 3.0])
    path = tflite_ssd(files / "ssd.tflite", box_w, box_b, score_w, score_b, classes)
    det = TFLiteDetector(model=path, labels=files / "labels.txt", decoder="ssd",
                         score_floor=0.3, nms_iou=0.6)
    assert det.decoding.outputs == {"boxes": "location", "scores": "score",
                                    "classes": "category"}
    assert det.decoding.box_format == "yxyx" and det.decoding.box_units == "ratio"
    seen = set()
    for rgb in _images(3):
        h, w = rgb.shape[:2]
        tensor, _ = det.preprocessing.apply(rgb)
        raw = _interpret(path, tensor)
        loc, score, cat = raw["location"][0][0], raw["score"][0][0], raw["category"][0][0]
        want = []
        for k in range(n):  # floor, then NMS (boxes of different classes never suppress)
            if score[k] >= 0.3:
                y0, x0, y1, x1 = loc[k]
                want.append((LABELS[int(round(cat[k]))], float(score[k]),
                             [x0 * w, y0 * h, x1 * w, y1 * h]))
        want.sort(key=lambda r: -r[1])
        got = det.score_array(rgb).results
        assert [r.label for r in got] == [x[0] for x in want]
        np.testing.assert_allclose([r.score for r in got], [x[1] for x in want], rtol=1e-6)
        np.testing.assert_allclose([[r.box.x_min, r.box.y_min, r.box.x_max, r.box.y_max]
                                    for r in got],
                                   [np.clip(x[2], 0, [w, h, w, h]) for x in want], rtol=1e-5)
        seen.update(r.label for r in got)
    assert len(seen) >= 2  # boxes of several classes passed the floor

def test_scores_a_labeled_set_in_worker_processes(files, tmp_path):
    path = tflite_classifier(files / "runner.tflite", W, B)
    rows = []
    for k, rgb in enumerate(_images(6)):
        Image.fromarray(rgb).save(tmp_path / f"im{k}.png")
        rows.append(f'{{"image": "im{k}.png", "labels": {["scratch"] if k % 2 else []}}}'
                    .replace("'", '"'))
    (tmp_path / "m.jsonl").write_text("\n".join(rows) + "\n")
    ds = read_manifest(tmp_path / "m.jsonl")
    det = TFLiteDetector(model=path, labels=files / "labels.txt")
    assert pickle.loads(pickle.dumps(det)).score_array(_images(1)[0]).results == \
        det.score_array(_images(1)[0]).results
    with ScoreStore(tmp_path / "s.duckdb") as st:
        summary = score_dataset(ds, det, st, RunOptions(progress=False, concurrency=2))
        assert (summary.scored, summary.failed) == (6, 0)
        dent = st.scores(det.name, det.model_version, "dent")
    want = {im.image_id: det.detect(im).results[1].score for im in ds.images}
    assert dict(zip(dent.image_ids, dent.scores)) == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("content, message", [
    (b"", "LiteRT cannot load model file"),
    (b"TFL3 but not really a flatbuffer at all" * 3, "LiteRT cannot load model file"),
])
def test_corrupt_model_file_exits_2_with_the_file_named(tmp_path, files, content, message):
    m = tmp_path / "broken.tflite"
    m.write_bytes(content)
    (tmp_path / "d.jsonl").write_text('{"image": "a.png", "labels": []}\n')
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    res = CliRunner().invoke(app, [
        "score", "--dataset", str(tmp_path / "d.jsonl"), "--detector", "tflite",
        "--store", str(tmp_path / "s.duckdb"), "--option", f"model={m}",
        "--option", f"labels={files / 'labels.txt'}"], env={"COLUMNS": "400"})
    assert res.exit_code == 2, res.output
    text = " ".join(res.stderr.split())
    assert message in text and str(m) in text and "Convert it again" in text


def test_label_map_too_short_for_the_model(files, tmp_path):
    path = tflite_classifier(files / "float2.tflite", W, B)
    (tmp_path / "two.txt").write_text("scratch\ndent\n")
    with pytest.raises(InputError) as err:
        TFLiteDetector(model=path, labels=tmp_path / "two.txt")
    assert str(err.value).startswith(
        f"{path} (label map {tmp_path / 'two.txt'}): output 'probs' has 4 class scores (shape "
        "[1, 4]) but the label map names classes 0 to 1 (2 labels); use the label map that "
        "came with this model")
