"""Tests of the bundled faces set and the OpenCV Haar-cascade face detector, on real
files in tmp_path and a real score store."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import pickle
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")  # a guard only: CI installs calibrate[faces]
pytest.importorskip("skimage")

from sklearn.metrics import roc_auc_score  # noqa: E402

from calibrate.datasets import (  # noqa: E402
    FACES_DEGRADATIONS,
    FACES_SOURCES,
    faces_composition,
    make_faces,
)
from calibrate.detectors import Detection, Detector, ImageError  # noqa: E402
from calibrate.detectors.opencv_faces import OpenCVFaceDetector  # noqa: E402
from calibrate.errors import InputError  # noqa: E402
from calibrate.manifest import LabeledImage, read_manifest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
N_FACES = sum(n for n, kind in FACES_SOURCES.values() if kind == "face")
N_IMAGES = sum(n for n, _ in FACES_SOURCES.values())


def read_lines(manifest: Path) -> list[dict]:
    return [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]


def digest_tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    manifest = make_faces(tmp_path_factory.mktemp("faces"), seed=0)
    return manifest, read_lines(manifest)


@pytest.fixture(scope="module")
def labeled(faces):
    manifest, _ = faces
    return read_manifest(manifest)


@pytest.fixture(scope="module")
def scored(labeled):
    """Image-level scores (``-inf`` for no result), truth, and every detection."""
    det = OpenCVFaceDetector()
    detections = [det.detect(img) for img in labeled.images]
    scores = np.array([max((r.score for r in d.results), default=-math.inf) for d in detections])
    truth = np.array(["face" in img.labels for img in labeled.images])
    return det, detections, scores, truth


def ranked(scores: np.ndarray, floor: float) -> np.ndarray:
    """No result ranks below every real score (roc_auc_score needs finite numbers)."""
    return np.where(np.isfinite(scores), scores, floor - 1.0)


# ---------------------------------------------------------------------------------------
# The data set
# ---------------------------------------------------------------------------------------


def test_layout(faces):
    manifest, lines = faces
    out = manifest.parent
    assert manifest.name == "manifest.jsonl"
    assert (out / ".gitignore").read_text().strip().endswith("*")
    assert len(lines) == N_IMAGES == len(list((out / "images").glob("faces-*.png")))
    assert not list(out.glob("*.tmp"))
    for i, rec in enumerate(lines, 1):
        assert rec["id"] == f"faces-{i:05d}"
        assert rec["image"] == f"images/faces-{i:05d}.png"


def test_composition_is_as_documented(faces):
    manifest, lines = faces
    by_source = Counter(rec["source"] for rec in lines)
    assert by_source == {s: n for s, (n, _) in FACES_SOURCES.items()}
    comp = faces_composition()
    for source, degr in comp.items():
        got = Counter(rec["degradation"] for rec in lines if rec["source"] == source)
        assert got == {k: v for k, v in degr.items() if v}, source
        assert degr["none"] == round(FACES_SOURCES[source][0] / 2)
    assert sum(rec["labels"] == ["face"] for rec in lines) == N_FACES == 112
    assert sum(rec["labels"] == [] for rec in lines) == N_IMAGES - N_FACES == 164
    info = json.loads((manifest.parent / "dataset.json").read_text())
    assert info["composition"] == {"face": 112, "non-face": 164}
    assert info["labels"] == ["face"]
    for kind in ("face", "non-face"):
        total = Counter()
        for source, (_, k) in FACES_SOURCES.items():
            if k == kind:
                total.update(comp[source])
        assert info["degradations"][kind] == {k: v for k, v in sorted(total.items()) if v}
    # stratified split, 70% calibration within every source
    for source, (n, _) in FACES_SOURCES.items():
        n_cal = sum(r["split"] == "calibration" for r in lines if r["source"] == source)
        assert n_cal == round(0.7 * n), source


def test_records_and_pixels(faces):
    from PIL import Image

    manifest, lines = faces
    for rec in lines:
        kind = FACES_SOURCES[rec["source"]][1]
        assert rec["labels"] == (["face"] if kind == "face" else [])
        assert rec["degradation"] in FACES_DEGRADATIONS
        assert (rec["strength"] == 0.0) == (rec["degradation"] == "none")
        with Image.open(manifest.parent / rec["image"]) as img:
            assert img.mode == "L" and img.format == "PNG"
            w, h = img.size
        assert w == h and 96 <= w <= 160
        if kind == "face":
            x0, y0, x1, y1 = rec["face_box"]
            assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        else:
            assert rec["face_box"] is None
        if rec["source"].startswith("lfw"):
            assert 0 <= rec["source_index"] < 100 and rec["crop"] == [0, 0, 25, 25]
    # no-face crops of photos with people keep clear of the person's head
    for rec in lines:
        if rec["source"] in ("astronaut_no_face", "camera_no_face"):
            x0, y0, x1, y1 = rec["crop"]
            hx0, hy0, hx1, hy1 = {
                "astronaut_no_face": (140, 20, 310, 200),
                "camera_no_face": (140, 40, 290, 220),
            }[rec["source"]]
            assert x1 <= hx0 or x0 >= hx1 or y1 <= hy0 or y0 >= hy1


def test_manifest_reads_cleanly(labeled):
    assert labeled.problems == []
    assert labeled.labels == ("face",)
    assert len(labeled.images) == N_IMAGES
    img = labeled.images[0]
    assert {"source", "degradation", "strength", "face_box"} <= set(img.metadata)


def test_script_is_deterministic_and_overwrites(faces, tmp_path, capsys):
    """datasets/make_faces.py with the same seed writes byte-identical files."""
    manifest, _ = faces
    spec = importlib.util.spec_from_file_location("make_faces", ROOT / "datasets" / "make_faces.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "again"
    assert script.main(["--out", str(out), "--seed", "0"]) == 0
    assert "face 112, non-face 164" in capsys.readouterr().out
    first = digest_tree(manifest.parent)
    assert digest_tree(out) == first
    assert script.main(["--out", str(out)]) == 2  # not empty, no --overwrite
    assert "not empty" in capsys.readouterr().err
    with pytest.raises(InputError, match="not empty"):
        make_faces(out, seed=0)
    make_faces(out, seed=1, overwrite=True)
    assert digest_tree(out) != first
    assert len(list((out / "images").iterdir())) == N_IMAGES
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="refusing"):
        make_faces(foreign, overwrite=True)
    with pytest.raises(InputError, match="seed"):
        make_faces(tmp_path / "x", seed=-1)


# ---------------------------------------------------------------------------------------
# The detector
# ---------------------------------------------------------------------------------------


def test_implements_detector_protocol():
    det = OpenCVFaceDetector()
    assert isinstance(det, Detector)
    assert det.name == "opencv-haar-faces"
    assert det.model_version == f"haarcascade_frontalface_default@opencv-{cv2.__version__}"
    assert det.labels == ("face",) and det.kind == "cpu"
    # the last stage threshold of the cascade, less OpenCV's 1e-5 slack
    assert det.detection_floor == pytest.approx(-2.9928279, abs=1e-4)
    settings = det.settings()
    json.dumps(settings)
    assert settings["min_neighbors"] == 0 and settings["scale_factor"] == 1.1
    assert OpenCVFaceDetector(model_version="pinned").model_version == "pinned"


def test_settings_other_than_defaults_are_in_the_name():
    assert OpenCVFaceDetector(min_neighbors=3).name == "opencv-haar-faces[min_neighbors=3]"
    det = OpenCVFaceDetector(scale_factor=1.05, min_size=30)
    assert det.name == "opencv-haar-faces[scale_factor=1.05,min_size=30]"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scale_factor": 1.0},
        {"scale_factor": float("nan")},
        {"scale_factor": "1.1"},
        {"min_neighbors": -1},
        {"min_neighbors": 1.5},
        {"min_size": 0},
        {"model_version": ""},
    ],
)
def test_invalid_settings(kwargs):
    with pytest.raises(InputError):
        OpenCVFaceDetector(**kwargs)


def test_missing_opencv_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # makes "import cv2" fail
    with pytest.raises(InputError, match=r"pip install 'calibrate\[faces\]'"):
        OpenCVFaceDetector()


def test_scores_are_finite_and_above_the_floor(scored):
    det, detections, scores, _ = scored
    for d in detections:
        assert isinstance(d, Detection)
        json.dumps(d.raw)
        for r in d.results:
            assert r.label == "face"
            assert math.isfinite(r.score)
            assert r.score >= det.detection_floor
        # best first, so the image-level score is the first result's
        assert [r.score for r in d.results] == sorted((r.score for r in d.results), reverse=True)
        assert all(c["reject_level"] == 25 for c in d.raw["candidates"])


def test_boxes_inside_the_image(scored, labeled):
    _, detections, _, _ = scored
    for img, d in zip(labeled.images, detections):
        w, h = d.raw["image_size"]
        assert [w, h] == list(img.to_array().shape[1::-1])
        for r in d.results:
            b = r.box
            assert b.unit == "pixel"
            assert 0 <= b.x_min < b.x_max <= w and 0 <= b.y_min < b.y_max <= h


def test_faces_score_higher_than_non_faces(scored):
    det, _, scores, truth = scored
    s = ranked(scores, det.detection_floor)
    auc = roc_auc_score(truth, s)
    assert auc > 0.7, auc
    assert s[truth].mean() > s[~truth].mean()
    # no perfect separation: some faces have no result, some non-faces score
    assert np.isinf(scores[truth]).any() and np.isfinite(scores[~truth]).any()


def test_degradations_cost_detections(scored, labeled):
    _, _, scores, truth = scored
    degr = np.array([img.metadata["degradation"] for img in labeled.images])
    found = np.isfinite(scores)
    clean = found[truth & (degr == "none")].mean()
    eye_bar = found[truth & (degr == "eye_bar")].mean()
    assert clean >= 0.9
    assert eye_bar < clean - 0.2


def test_merge_matches_opencv_grouping(labeled):
    """min_neighbors=0 merges windows exactly as OpenCV groups them (no group dropped)."""
    everything = OpenCVFaceDetector(min_neighbors=0)
    opencv = OpenCVFaceDetector(min_neighbors=1)
    compared = 0
    for img in labeled.images[:40]:
        pixels = img.to_array()
        ours = {
            (tuple(c["box"]), round(c["level_weight"], 9))
            for c in everything.score_array(pixels).raw["candidates"]
            if c["windows"] >= 2
        }
        theirs = {
            (tuple(c["box"]), round(c["level_weight"], 9))
            for c in opencv.score_array(pixels).raw["candidates"]
        }
        # OpenCV also drops small groups inside bigger ones; everything else is equal
        assert theirs <= ours
        compared += bool(theirs)
    assert compared > 5


def test_pickle_round_trip(labeled):
    det = OpenCVFaceDetector(min_neighbors=2)
    img = labeled.images[0]
    before = det.detect(img)  # the cascade is loaded now, and still pickles
    clone = pickle.loads(pickle.dumps(det))
    assert (clone.name, clone.model_version, clone.detection_floor) == (
        det.name,
        det.model_version,
        det.detection_floor,
    )
    assert clone.settings() == det.settings()
    assert clone.detect(img).results == before.results


def test_unreadable_images_raise_image_error(tmp_path):
    det = OpenCVFaceDetector()
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"this is not a PNG")
    with pytest.raises(ImageError, match="junk"):
        det.detect(LabeledImage("junk", str(junk)))
    with pytest.raises(ImageError):
        det.detect(LabeledImage("gone", str(tmp_path / "missing.png")))
    with pytest.raises(ImageError):
        det.score_array(np.zeros((40, 40), dtype=np.float32))
    with pytest.raises(ImageError):
        det.score_array(np.zeros((0, 0), dtype=np.uint8))


def test_rgb_and_gray_agree(labeled):
    det = OpenCVFaceDetector()
    img = next(i for i in labeled.images if "face" in i.labels)
    gray = np.asarray(img.open().convert("L"))
    rgb = img.to_array()
    assert det.score_array(gray).results == det.score_array(rgb).results


# ---------------------------------------------------------------------------------------
# Through the real runner into a real store
# ---------------------------------------------------------------------------------------


def test_run_into_store(faces, scored, tmp_path):
    from calibrate.runner import RunOptions, score_dataset
    from calibrate.store import ScoreStore

    manifest, _ = faces
    det = OpenCVFaceDetector()
    dataset = read_manifest(manifest)
    store = ScoreStore(tmp_path / "s.duckdb")
    try:
        summary = score_dataset(dataset, det, store, RunOptions(progress=False))
        assert summary.status == "finished"
        assert (summary.scored, summary.failed) == (N_IMAGES, 0)
        got = store.scores(det.name, det.model_version, "face")
        assert len(got) == N_IMAGES and got.n_failed == 0
        assert set(got.image_ids) == {img.image_id for img in dataset.images}
        # the same scores as in this process (the run used worker processes)
        _, _, scores, truth = scored
        order = {img.image_id: i for i, img in enumerate(dataset.images)}
        idx = np.array([order[i] for i in got.image_ids])
        np.testing.assert_array_equal(got.scores, scores[idx])
        np.testing.assert_array_equal(got.positive, truth[idx])
        again = score_dataset(dataset, det, store, RunOptions(progress=False))
        assert again.status == "skipped"
    finally:
        store.close()
