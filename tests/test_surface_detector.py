"""Tests of calibrate.detectors.surface against a small generated parts set."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import calibrate
from calibrate.datasets import PARTS_LABELS, load_parts, make_parts, read_parts_info
from calibrate.detectors import Detection, Detector, ImageError, Result
from calibrate.detectors.surface import SECONDARY_FLOOR, SurfaceDefectDetector
from calibrate.errors import InputError
from calibrate.manifest import LabeledImage
from calibrate.thresholds import Policy, evaluate_threshold

MAIN_LABELS = ("scratch", "dent", "spot")
VERSIONS = ("v1", "v2")
# QC policy of the threshold-shift test: a shipped defect costs as much as 50 scrapped
# good parts; deployment prevalence is the line's, not the enriched sample's.
COST_FA, COST_FR = 50.0, 1.0


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    manifest = make_parts(tmp_path_factory.mktemp("parts"), n_parts=600, seed=0)
    return manifest, load_parts(manifest)


@pytest.fixture(scope="module")
def scores(parts):
    """scores[version][label] -> array over the images, plus truth[label] -> bool array."""
    _, images = parts
    out = {}
    for version in VERSIONS:
        det = SurfaceDefectDetector(version)
        dets = [det.detect(img) for img in images]
        out[version] = {
            label: np.array([[r.score for r in d.results if r.label == label][0] for d in dets])
            for label in PARTS_LABELS
        }
    truth = {label: np.array([label in img.labels for img in images]) for label in PARTS_LABELS}
    split = np.array([img.split for img in images])
    return out, truth, split


# ---------------------------------------------------------------------------------------
# Protocol
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_implements_detector_protocol(version):
    det = SurfaceDefectDetector(version)
    assert isinstance(det, Detector)
    assert det.name == "surface-defect"
    assert det.model_version == version
    assert det.labels == ("scratch", "dent", "spot", "crack")
    assert det.kind == "cpu"
    assert det.detection_floor is None
    settings = det.settings()
    json.dumps(settings)  # recorded with the run: must be plain data
    assert settings["version"] == version


def test_versions_have_different_settings():
    s1, s2 = SurfaceDefectDetector("v1").settings(), SurfaceDefectDetector("v2").settings()
    assert s1 != s2
    assert s1["spot_sigmas"] != s2["spot_sigmas"]
    assert s1["normalise"] != s2["normalise"]


def test_unknown_version_is_an_input_error():
    with pytest.raises(InputError, match="v1, v2"):
        SurfaceDefectDetector("v3")


def test_default_version_is_v1():
    assert SurfaceDefectDetector().model_version == "v1"


@pytest.mark.parametrize("version", VERSIONS)
def test_every_label_has_a_result_each_with_score_and_pixel_box(parts, version):
    _, images = parts
    det = SurfaceDefectDetector(version)
    for img in images[:20]:
        d = det.detect(img)
        assert isinstance(d, Detection)
        # Every label, in order; a label's strongest region first, then weaker regions
        # that score at least the secondary floor.
        labels = [r.label for r in d.results]
        assert list(dict.fromkeys(labels)) == list(det.labels)
        assert labels == sorted(labels, key=det.labels.index)
        for label in det.labels:
            scores = [r.score for r in d.results if r.label == label]
            assert scores[0] == max(scores)
            assert all(s >= SECONDARY_FLOOR for s in scores[1:])
        for r in d.results:
            assert isinstance(r, Result)
            assert isinstance(r.score, float)
            assert 0.0 <= r.score <= 1.0
            b = r.box
            assert b is not None and b.unit == "pixel"
            assert 0 <= b.x_min < b.x_max <= 64
            assert 0 <= b.y_min < b.y_max <= 64
        json.dumps(d.raw)


def test_box_is_around_an_obvious_defect(tmp_path):
    rng = np.random.default_rng(3)
    pixels = np.clip(rng.normal(128, 2, size=(64, 64)), 0, 255)
    yy, xx = np.mgrid[0:64, 0:64]
    pixels[(yy - 40) ** 2 + (xx - 20) ** 2 <= 6] = 40  # a dark pit at row 40, column 20
    d = SurfaceDefectDetector("v1").score_array(pixels.astype(np.uint8))
    spot = next(r for r in d.results if r.label == "spot")
    assert spot.score > 0.9
    assert spot.box.x_min <= 20 <= spot.box.x_max
    assert spot.box.y_min <= 40 <= spot.box.y_max


@pytest.mark.parametrize("version", VERSIONS)
def test_scores_are_deterministic_and_gray_equals_rgb(parts, version):
    _, images = parts
    det = SurfaceDefectDetector(version)
    rgb = images[0].to_array()
    a = det.detect(images[0])
    b = SurfaceDefectDetector(version).score_array(rgb[..., 0])
    assert [r.score for r in a.results] == [r.score for r in det.detect(images[0]).results]
    np.testing.assert_allclose([r.score for r in a.results], [r.score for r in b.results])


def test_pickles_for_worker_processes(parts):
    _, images = parts
    det = SurfaceDefectDetector("v2")
    before = det.detect(images[1])
    clone = pickle.loads(pickle.dumps(det))
    assert clone.model_version == "v2"
    assert [r.score for r in clone.detect(images[1]).results] == [r.score for r in before.results]


# ---------------------------------------------------------------------------------------
# Unreadable images
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [b"", b"this is not a png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40],
    ids=["empty", "text", "truncated-header"],
)
def test_corrupt_file_raises_image_error(tmp_path, content):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    img = LabeledImage(image_id="bad", uri=str(path))
    with pytest.raises(ImageError, match="bad"):
        SurfaceDefectDetector("v1").detect(img)


def test_truncated_real_png_raises_image_error(parts, tmp_path):
    _, images = parts
    data = images[0].read_bytes()
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageError):
        SurfaceDefectDetector("v2").detect(LabeledImage(image_id="cut", uri=str(path)))


def test_missing_file_raises_image_error(tmp_path):
    img = LabeledImage(image_id="gone", uri=str(tmp_path / "nope.png"))
    with pytest.raises(ImageError):
        SurfaceDefectDetector("v1").detect(img)


def test_too_small_or_wrong_shape_raises_image_error():
    det = SurfaceDefectDetector("v1")
    with pytest.raises(ImageError):
        det.score_array(np.zeros((8, 8), dtype=np.uint8))
    with pytest.raises(ImageError):
        det.score_array(np.zeros(64, dtype=np.uint8))


# ---------------------------------------------------------------------------------------
# Separation: better than chance, never perfect
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("label", MAIN_LABELS)
def test_separates_classes_imperfectly(scores, version, label):
    s, truth, _ = scores
    auc = roc_auc_score(truth[label], s[version][label])
    assert 0.7 < auc < 0.99, f"{version} {label}: AUC {auc:.3f}"


@pytest.mark.parametrize("version", VERSIONS)
def test_rare_label_is_scored_too(scores, version):
    s, truth, _ = scores
    assert 1 <= truth["crack"].sum() < 20
    assert roc_auc_score(truth["crack"], s[version]["crack"]) > 0.6


# ---------------------------------------------------------------------------------------
# A retrained model needs a new threshold
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("label", MAIN_LABELS)
def test_v1_threshold_is_wrong_for_v2(parts, scores, label):
    manifest, _ = parts
    s, truth, split = scores
    cal = split == "calibration"
    prevalence = read_parts_info(manifest)["line_prevalence"][label]
    policy = Policy(
        cost_false_accept=COST_FA, cost_false_reject=COST_FR, prevalence=prevalence
    )
    kw = dict(cost_false_accept=COST_FA, cost_false_reject=COST_FR, prevalence=prevalence)
    y = truth[label][cal]
    c1 = calibrate.choose_threshold(s["v1"][label][cal], y, **kw)
    c2 = calibrate.choose_threshold(s["v2"][label][cal], y, **kw)
    stale = evaluate_threshold(calibrate.error_curve(s["v2"][label][cal], y), c1.threshold, policy)

    assert abs(c1.threshold - c2.threshold) > 0.1
    # v1's threshold on v2 scores gives a materially different trade-off ...
    shift = max(
        abs(stale.false_reject_rate - c2.false_reject_rate),
        abs(stale.false_accept_rate - c2.false_accept_rate),
    )
    assert shift > 0.15, (c1.explanation, c2.explanation, stale.explanation)
    # ... that costs clearly more than v2's own optimum
    assert stale.expected_cost > 1.15 * c2.expected_cost


def test_limit_of_one_in_a_thousand_is_out_of_reach(parts, scores):
    manifest, _ = parts
    s, truth, split = scores
    cal = split == "calibration"
    info = read_parts_info(manifest)
    for label in MAIN_LABELS:
        c = calibrate.choose_threshold(
            s["v2"][label][cal],
            truth[label][cal],
            cost_false_accept=COST_FA,
            cost_false_reject=COST_FR,
            prevalence=info["line_prevalence"][label],
            max_false_accept_rate=0.001,
        )
        assert not c.limits_met
        assert c.samples_needed > 1000


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("value", [0, 128, 255])
def test_featureless_image_scores_low_and_finite(version, value):
    d = SurfaceDefectDetector(version).score_array(np.full((64, 64), value, dtype=np.uint8))
    scores = np.array([r.score for r in d.results])
    assert np.isfinite(scores).all()
    assert (scores < 0.2).all()


def test_non_square_images_are_scored():
    rng = np.random.default_rng(0)
    pixels = rng.integers(100, 140, size=(48, 96, 3), dtype=np.uint8)
    d = SurfaceDefectDetector("v2").score_array(pixels)
    assert len(d.results) == 4
    assert all(r.box.x_max <= 96 and r.box.y_max <= 48 for r in d.results)
