"""Amazon Rekognition detectors, offline, through the real boto3 client.

Two kinds of tests: botocore's Stubber checks request and response shapes against the
service model; a local HTTP server (tests.cloud_fakes.RekognitionFake) speaks the JSON
protocol, so retries, timeouts, malformed bodies and the runner's end-to-end behaviour
are exercised through botocore's real HTTP stack. Nothing here touches the internet.
"""

from __future__ import annotations

import json
import math
import re
import warnings

import boto3
import numpy as np
import pytest
from botocore.config import Config
from botocore.stub import Stubber
from PIL import Image

from calibrate.detectors.base import (
    Detector,
    FatalDetectorError,
    ImageError,
    RetryableError,
)
from calibrate.detectors.rekognition import (
    FACE_LABELS,
    MAX_CUSTOM_LABELS_BYTES,
    MAX_IMAGE_BYTES,
    RekognitionCustomLabels,
    RekognitionFaces,
    RekognitionLabels,
    face_results,
)
from calibrate.errors import CalibrateWarning, InputError
from calibrate.manifest import LabeledImage, read_manifest
from calibrate.pricing import estimate_cost, load_prices
from calibrate.runner import RunOptions, score_dataset
from calibrate.store import ScoreStore
from tests import cloud_fakes as cf

ACCESS_KEY_ID = "AKIACALIBRATETEST7Q2X"
SECRET_KEY = "calibrate+Secret/NeverStore0xDEADBEEF"
SESSION_TOKEN = "FwoGZXIvYXdzECALIBRATESESSIONTOKEN"
ARN = (
    "arn:aws:rekognition:eu-west-1:123456789012:project/parts/version/parts.2026-11-01/"
    "1700000000000"
)
QUIET = {"progress": False, "backoff": 0.001, "flush_every": 0.05}


@pytest.fixture(autouse=True)
def aws_env(monkeypatch, tmp_path):
    """Credentials only through the environment, and nothing from this machine's config."""
    cf.clear_proxies(monkeypatch)
    for name in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_MAX_ATTEMPTS",
        "AWS_RETRY_MODE",
        "AWS_ENDPOINT_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.setenv("AWS_SESSION_TOKEN", SESSION_TOKEN)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture
def fake():
    with cf.RekognitionFake() as f:
        yield f


def faces(fake, **kw) -> RekognitionFaces:
    """The detector building its own client (credentials from the environment chain)."""
    kw.setdefault("model_version", "t1")
    kw.setdefault("sdk_attempts", 1)
    return RekognitionFaces(endpoint_url=f"http://127.0.0.1:{fake.port}", **kw)


def make_set(tmp_path, n: int, *, size=(16, 16)):
    """n PNGs with a manifest; returns (manifest path, {image_id: fake key})."""
    (tmp_path / "img").mkdir(exist_ok=True)
    records, keys = [], {}
    for i in range(n):
        data = cf.write_png(tmp_path / "img" / f"f{i:03d}.png", seed=i, size=size)
        records.append(
            {
                "id": f"f{i:03d}",
                "image": f"img/f{i:03d}.png",
                "labels": ["face", "sunglasses"] if i % 3 == 0 else ["face"],
            }
        )
        keys[f"f{i:03d}"] = cf.bytes_key(data)
    return cf.write_manifest(tmp_path, records), keys


def ok_calls(fake, key: str) -> int:
    return sum(1 for r in fake.requests if r.key == key and r.behaviour == "ok")


# ---------------------------------------------------------------------------------------
# Shapes, through botocore's Stubber (validated against the service model)
# ---------------------------------------------------------------------------------------


def stubbed_client():
    return boto3.client(
        "rekognition",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def test_detect_faces_request_and_response_shapes(tmp_path):
    data = cf.write_png(tmp_path / "a.png", 1)
    image = LabeledImage("a", str(tmp_path / "a.png"))
    client = stubbed_client()
    face = cf.rekognition_face("a", 0)
    face["Sunglasses"] = {"Value": False, "Confidence": 97.0}
    face["Smile"] = {"Value": True, "Confidence": 80.0}
    face["Gender"] = {"Value": "Female", "Confidence": 90.0}
    with Stubber(client) as stub:
        stub.add_response(
            "detect_faces",
            {"FaceDetails": [face], "OrientationCorrection": "ROTATE_0"},
            {"Image": {"Bytes": data}, "Attributes": ["ALL"]},
        )
        det = RekognitionFaces(client=client, model_version="t1")
        got = det.detect(image)
        stub.assert_no_pending_responses()
    assert isinstance(det, Detector) and det.billable and det.operation == "DetectFaces"
    scores = {r.label: r.score for r in got.results}
    assert scores["sunglasses"] == pytest.approx(3.0)  # Value false, 97 -> 100 - 97
    assert scores["smile"] == pytest.approx(80.0)
    assert scores["gender:female"] == pytest.approx(90.0)
    assert scores["gender:male"] == pytest.approx(10.0)
    assert scores["face"] == pytest.approx(face["Confidence"])
    assert scores["emotion:happy"] == pytest.approx(face["Emotions"][0]["Confidence"])
    assert set(scores) == set(FACE_LABELS)
    box = got.results[0].box
    bb = face["BoundingBox"]
    assert box.unit == "ratio"
    assert (box.x_min, box.y_min) == pytest.approx((bb["Left"], bb["Top"]))
    assert (box.x_max, box.y_max) == pytest.approx(
        (bb["Left"] + bb["Width"], bb["Top"] + bb["Height"])
    )
    # Quality and Pose stay in the raw response, with what was sent
    assert got.raw["FaceDetails"][0]["Quality"] == face["Quality"]
    assert got.raw["FaceDetails"][0]["Pose"] == face["Pose"]
    assert got.raw["CalibrateInput"] == {"source": "bytes", "bytes": len(data), "format": "png"}


def test_seed_sample_default_attributes_give_face_only():
    # The DetectFaces example response from the API reference: default attributes only.
    sample = {
        "BoundingBox": {
            "Height": 0.18000000715255737,
            "Left": 0.5555555820465088,
            "Top": 0.33666667342185974,
            "Width": 0.23999999463558197,
        },
        "Confidence": 100,
        "Pose": {"Pitch": 4.05, "Roll": 0.99, "Yaw": 13.69},
        "Quality": {"Brightness": 37.6, "Sharpness": 80},
        "Landmarks": [{"Type": "eyeLeft", "X": 0.639, "Y": 0.408}],
    }
    (r,) = face_results([sample])
    assert (r.label, r.score, r.box.unit) == ("face", 100.0, "ratio")


def test_s3_uri_is_sent_as_s3object_and_labels_requests_floor():
    client = stubbed_client()
    image = LabeledImage("k", "s3://my-bucket/photos/a b/k.jpg")
    with Stubber(client) as stub:
        stub.add_response(
            "detect_labels",
            {
                "Labels": [
                    {
                        "Name": "Person",
                        "Confidence": 97.5,
                        "Instances": [
                            {
                                "BoundingBox": {
                                    "Width": 0.2,
                                    "Height": 0.5,
                                    "Left": 0.1,
                                    "Top": 0.2,
                                },
                                "Confidence": 97.0,
                            }
                        ],
                    },
                    {"Name": "Helmet", "Confidence": 51.0, "Instances": []},
                ],
                "LabelModelVersion": "3.0",
            },
            {
                "Image": {"S3Object": {"Bucket": "my-bucket", "Name": "photos/a b/k.jpg"}},
                "MinConfidence": 0.0,
            },
        )
        det = RekognitionLabels(client=client, model_version="3.0")
        got = det.detect(image)
    assert det.detection_floor == 0.0
    assert [(r.label, r.score, r.box) for r in got.results] == [
        ("Person", 97.5, None),
        ("Helmet", 51.0, None),
    ]
    assert got.raw["LabelModelVersion"] == "3.0"
    assert got.raw["Labels"][0]["Instances"]  # boxes kept for audit
    assert got.raw["CalibrateInput"] == {"source": "s3", "uri": "s3://my-bucket/photos/a b/k.jpg"}


def test_custom_labels_request_shape_boxes_and_version(tmp_path):
    data = cf.write_png(tmp_path / "a.png", 2)
    client = stubbed_client()
    with Stubber(client) as stub:
        stub.add_response(
            "detect_custom_labels",
            {
                "CustomLabels": [
                    {
                        "Name": "scratch",
                        "Confidence": 88.0,
                        "Geometry": {
                            "BoundingBox": {"Width": 0.1, "Height": 0.2, "Left": 0.5, "Top": 0.4}
                        },
                    },
                    {"Name": "good", "Confidence": 12.0},
                ]
            },
            {"ProjectVersionArn": ARN, "Image": {"Bytes": data}, "MinConfidence": 0.0},
        )
        det = RekognitionCustomLabels(client=client, project_version_arn=ARN)
        got = det.detect(LabeledImage("a", str(tmp_path / "a.png")))
    assert det.model_version == ARN and det.detection_floor == 0.0
    assert det.max_image_bytes == MAX_CUSTOM_LABELS_BYTES == 4 * 1024 * 1024
    s, g = got.results
    assert (s.label, s.score, g.label, g.box) == ("scratch", 88.0, "good", None)
    assert (
        s.box.unit == "ratio"
        and s.box.x_max == pytest.approx(0.6)
        and s.box.y_max == pytest.approx(0.6)
    )


@pytest.mark.parametrize(
    "code, kind",
    [
        ("ThrottlingException", RetryableError),
        ("ProvisionedThroughputExceededException", RetryableError),
        ("InternalServerError", RetryableError),
        ("InvalidImageFormatException", ImageError),
        ("ImageTooLargeException", ImageError),
        ("AccessDeniedException", FatalDetectorError),
        ("UnrecognizedClientException", FatalDetectorError),
        ("InvalidSignatureException", FatalDetectorError),
        ("ExpiredTokenException", FatalDetectorError),
        ("ExpiredToken", FatalDetectorError),
        ("ResourceNotFoundException", FatalDetectorError),
    ],
)
def test_error_codes_map_to_the_runner_taxonomy(tmp_path, code, kind):
    cf.write_png(tmp_path / "a.png", 3)
    client = stubbed_client()
    status = 500 if code == "InternalServerError" else 400
    with Stubber(client) as stub:
        stub.add_client_error(
            "detect_faces", service_error_code=code, service_message="nope", http_status_code=status
        )
        with pytest.raises(kind) as info:
            RekognitionFaces(client=client, model_version="t").detect(
                LabeledImage("a", str(tmp_path / "a.png"))
            )
    assert code in str(info.value) or kind is FatalDetectorError
    if kind is FatalDetectorError and code != "ResourceNotFoundException":
        assert "rekognition:DetectFaces" in str(info.value) and "resume" in str(info.value)


def test_face_attribute_scores_follow_the_presence_rule():
    faces_ = [cf.rekognition_face(f"img{i}", j) for i in range(20) for j in range(2)]
    for face, r in zip(faces_, [face_results([f]) for f in faces_]):
        scores = {x.label: x.score for x in r}
        for attr in (
            "Smile",
            "Eyeglasses",
            "Sunglasses",
            "Beard",
            "Mustache",
            "EyesOpen",
            "MouthOpen",
            "FaceOccluded",
        ):
            label = re.sub(r"(?<!^)(?=[A-Z])", "_", attr).lower()
            v, c = face[attr]["Value"], face[attr]["Confidence"]
            assert scores[label] == pytest.approx(c if v else 100 - c)
        assert scores["gender:female"] + scores["gender:male"] == pytest.approx(100.0)
        assert all(0 <= s <= 100 for s in scores.values())


# ---------------------------------------------------------------------------------------
# Through the local HTTP fake: the real protocol, retries and the runner end to end
# ---------------------------------------------------------------------------------------


def test_throttling_is_retried_by_the_runner_without_losing_or_duplicating(tmp_path, fake):
    manifest, keys = make_set(tmp_path, 12)
    for i, key in enumerate(keys.values()):
        fake.plan(key, *(["throttle", "provisioned", "5xx"][: i % 4]))  # 0 to 3 failures
    ds = read_manifest(manifest)
    det = faces(fake)
    with ScoreStore(tmp_path / "s.duckdb") as store:
        s = score_dataset(ds, det, store, RunOptions(max_attempts=4, concurrency=4, **QUIET))
        assert (s.scored, s.failed, s.status) == (12, 0, "finished")
        expected_retries = sum(i % 4 for i in range(12))
        assert s.retries == expected_retries and s.calls == 12 + expected_retries
        ls = store.scores("rekognition-faces", "t1", "face")
        assert sorted(ls.image_ids) == sorted(keys) and len(set(ls.image_ids)) == 12
        assert np.isfinite(ls.scores).all() and (ls.scores >= 90).all()
    for key in keys.values():  # each image answered (and billed) exactly once
        assert ok_calls(fake, key) == 1
    assert {r.target for r in fake.requests} == {"RekognitionService.DetectFaces"}


def test_botocore_retries_within_one_detect_call(tmp_path, fake):
    data = cf.write_png(tmp_path / "a.png", 5)
    fake.plan(cf.bytes_key(data), "throttle")
    det = faces(fake, sdk_attempts=2)
    got = det.detect(LabeledImage("a", str(tmp_path / "a.png")))
    assert got.results and got.raw["ResponseMetadata"]["RetryAttempts"] == 1
    first, second = fake.requests
    assert (
        "attempt=1" in first.headers["amz-sdk-request"]
        and "attempt=2" in second.headers["amz-sdk-request"]
    )
    assert first.headers["amz-sdk-invocation-id"] == second.headers["amz-sdk-invocation-id"]


def test_client_built_as_in_the_brief_works_with_the_detector(tmp_path, fake):
    client = boto3.client(
        "rekognition",
        endpoint_url=f"http://127.0.0.1:{fake.port}",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"max_attempts": 2, "mode": "standard"}),
    )
    data = cf.write_png(tmp_path / "a.png", 6)
    fake.faces[cf.bytes_key(data)] = 3
    got = RekognitionFaces(client=client, model_version="t").detect(
        LabeledImage("a", str(tmp_path / "a.png"))
    )
    assert sum(r.label == "face" for r in got.results) == 3
    assert len(got.raw["FaceDetails"]) == 3


def test_image_level_score_is_the_max_over_faces(tmp_path, fake):
    manifest, keys = make_set(tmp_path, 4)
    for key in keys.values():
        fake.faces[key] = 3
    with ScoreStore(tmp_path / "s.duckdb") as store:
        score_dataset(read_manifest(manifest), faces(fake), store, RunOptions(**QUIET))
        for label in ("face", "sunglasses", "emotion:calm", "gender:male"):
            ls = store.scores("rekognition-faces", "t1", label)
            for image_id, score in zip(ls.image_ids, ls.scores):
                per_face = [
                    r.score
                    for r in face_results(
                        [cf.rekognition_face(keys[image_id], j) for j in range(3)]
                    )
                    if r.label == label
                ]
                assert score == pytest.approx(max(per_face))


def test_image_without_faces_has_no_result_for_any_label(tmp_path, fake):
    manifest, keys = make_set(tmp_path, 3)
    fake.faces[keys["f001"]] = 0
    with ScoreStore(tmp_path / "s.duckdb") as store:
        run = score_dataset(read_manifest(manifest), faces(fake), store, RunOptions(**QUIET))
        ls = store.scores("rekognition-faces", "t1", "sunglasses")
        by_id = dict(zip(ls.image_ids, ls.scores))
        assert math.isinf(by_id["f001"]) and by_id["f001"] < 0
        assert store.raw_response(run.run_id, "f001")["FaceDetails"] == []
        assert store.runs()["labels"].iloc[0] == list(FACE_LABELS)


def test_per_image_errors_are_recorded_and_the_run_goes_on(tmp_path, fake):
    manifest, keys = make_set(tmp_path, 6)
    fake.plan(keys["f002"], "bad_format")
    fake.plan(keys["f004"], "too_large")
    with ScoreStore(tmp_path / "s.duckdb") as store:
        s = score_dataset(
            read_manifest(manifest), faces(fake), store, RunOptions(concurrency=1, **QUIET)
        )
        assert (s.scored, s.failed, s.failures_by_kind) == (4, 2, {"image": 2})
        f = store.failures().set_index("image_id")
        assert "InvalidImageFormatException" in f.loc["f002", "message"]
        assert "ImageTooLargeException" in f.loc["f004", "message"]
        assert (f["attempts"] == 1).all()  # never retried: it would fail the same way


@pytest.mark.parametrize(
    "behaviour, code",
    [
        ("denied", "AccessDeniedException"),
        ("unrecognized", "UnrecognizedClientException"),
        ("expired", "ExpiredTokenException"),
    ],
)
def test_auth_errors_stop_the_run_and_record_no_failures(tmp_path, fake, behaviour, code):
    manifest, _ = make_set(tmp_path, 8)
    fake.default = behaviour
    with ScoreStore(tmp_path / "s.duckdb") as store:
        with pytest.raises(FatalDetectorError, match=code):
            score_dataset(
                read_manifest(manifest), faces(fake), store, RunOptions(concurrency=2, **QUIET)
            )
        assert store.failures().empty  # the credentials, not the images, were at fault
        assert store.runs()["status"].iloc[0] == "failed"
    assert len(fake.requests) <= 3  # stopped at once, not once per image
    # fixed credentials: the same command resumes and scores everything
    fake.default = "ok"
    with ScoreStore(tmp_path / "s.duckdb") as store:
        s = score_dataset(read_manifest(manifest), faces(fake), store, RunOptions(**QUIET))
        assert s.scored == 8 and s.run_id == store.runs()["run_id"].iloc[0]


def test_missing_credentials_stop_the_run_with_a_clear_message(tmp_path, fake, monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name)
    cf.write_png(tmp_path / "a.png", 7)
    det = faces(fake)
    with pytest.raises(FatalDetectorError, match="credential chain") as info:
        det.detect(LabeledImage("a", str(tmp_path / "a.png")))
    assert "AWS_PROFILE" in str(info.value)
    assert fake.requests == []  # nothing was sent


def test_malformed_json_is_retried_not_scored_as_nothing_found(tmp_path, fake):
    data = cf.write_png(tmp_path / "a.png", 8)
    fake.plan(cf.bytes_key(data), "malformed")
    det = faces(fake)
    image = LabeledImage("a", str(tmp_path / "a.png"))
    with pytest.raises(RetryableError, match="malformed"):
        det.detect(image)
    assert det.detect(image).results  # the next call is answered properly


def test_slow_response_times_out_as_retryable(tmp_path, fake):
    data = cf.write_png(tmp_path / "a.png", 9)
    fake.plan(cf.bytes_key(data), "slow:1.0")
    det = faces(fake, read_timeout=0.2)
    with pytest.raises(RetryableError, match="ReadTimeout"):
        det.detect(LabeledImage("a", str(tmp_path / "a.png")))


def test_slow_and_5xx_end_to_end(tmp_path, fake):
    manifest, keys = make_set(tmp_path, 5)
    # The read timeout leaves ordinary requests ample room (a loaded CI machine once made
    # one take over 0.2 s, an extra retry); only the planned slow answer times out.
    fake.plan(keys["f000"], "slow:2.0")
    fake.plan(keys["f003"], "5xx", "malformed")
    with ScoreStore(tmp_path / "s.duckdb") as store:
        s = score_dataset(
            read_manifest(manifest),
            faces(fake, read_timeout=0.6),
            store,
            RunOptions(max_attempts=3, concurrency=3, **QUIET),
        )
        assert (s.scored, s.failed, s.retries) == (5, 0, 3)
        assert len(store.scores("rekognition-faces", "t1", "face")) == 5


# ---------------------------------------------------------------------------------------
# Image size and format limits
# ---------------------------------------------------------------------------------------


def big_png(path, side: int = 1400) -> int:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)).save(
        path, compress_level=1
    )
    return path.stat().st_size


def test_oversized_image_is_refused_before_any_call_unless_reencoding_is_allowed(tmp_path, fake):
    size = big_png(tmp_path / "big.png")
    assert size > MAX_IMAGE_BYTES
    image = LabeledImage("big", str(tmp_path / "big.png"))
    with pytest.raises(ImageError, match=r"5\.00 MB.*reencode=true"):
        faces(fake).detect(image)
    assert fake.requests == []
    got = faces(fake, reencode=True).detect(image)
    sent = got.raw["CalibrateInput"]
    assert sent["reencoded"] and sent["bytes"] <= MAX_IMAGE_BYTES and sent["original_bytes"] == size
    (req,) = fake.requests
    import base64

    assert len(base64.b64decode(req.body["Image"]["Bytes"])) == sent["bytes"]
    assert faces(fake, reencode=True).settings()["reencode"] is True


def test_custom_labels_limit_is_4mb(tmp_path, fake):
    side = 1200
    size = big_png(tmp_path / "mid.png", side)
    assert MAX_CUSTOM_LABELS_BYTES < size <= MAX_IMAGE_BYTES
    image = LabeledImage("mid", str(tmp_path / "mid.png"))
    faces(fake).detect(image)  # fine for DetectFaces
    det = RekognitionCustomLabels(
        project_version_arn=ARN, endpoint_url=f"http://127.0.0.1:{fake.port}", sdk_attempts=1
    )
    with pytest.raises(ImageError, match=r"4\.00 MB"):
        det.detect(image)
    got = RekognitionCustomLabels(
        project_version_arn=ARN,
        endpoint_url=f"http://127.0.0.1:{fake.port}",
        sdk_attempts=1,
        reencode=True,
    ).detect(image)
    assert got.raw["CalibrateInput"]["bytes"] <= MAX_CUSTOM_LABELS_BYTES
    assert fake.requests[-1].body["ProjectVersionArn"] == ARN
    assert {r.label for r in got.results} == {"scratch", "good"}


def test_non_png_jpeg_is_refused_or_converted_losslessly(tmp_path, fake):
    Image.new("RGB", (20, 10), (10, 200, 30)).save(tmp_path / "a.bmp")
    image = LabeledImage("a", str(tmp_path / "a.bmp"))
    with pytest.raises(ImageError, match="neither PNG nor JPEG"):
        faces(fake).detect(image)
    got = faces(fake, reencode=True).detect(image)
    assert got.raw["CalibrateInput"]["format"] == "png"
    assert got.raw["CalibrateInput"]["sent_size"] == [20, 10]


# ---------------------------------------------------------------------------------------
# S3 sources
# ---------------------------------------------------------------------------------------


def s3_set(tmp_path, n: int):
    records = [
        {"id": f"s{i}", "image": f"s3://bucket/imgs/s{i}.jpg", "labels": []} for i in range(n)
    ]
    return read_manifest(cf.write_manifest(tmp_path, records))


def test_s3_images_and_a_missing_object_after_success_is_a_per_image_failure(tmp_path, fake):
    ds = s3_set(tmp_path, 5)
    fake.plan("imgs/s3.jpg", "s3_missing")
    with ScoreStore(tmp_path / "s.duckdb") as store:
        s = score_dataset(ds, faces(fake), store, RunOptions(concurrency=1, **QUIET))
        assert (s.scored, s.failed) == (4, 1)
        f = store.failures()
        assert f["image_id"].tolist() == ["s3"] and f["kind"].tolist() == ["image"]
        assert "InvalidS3ObjectException" in f["message"].iloc[0]
    assert all(r.body["Image"]["S3Object"]["Bucket"] == "bucket" for r in fake.requests)


def test_missing_object_before_any_success_is_retried_then_classified(tmp_path, fake):
    ds = s3_set(tmp_path, 4)
    fake.plan("imgs/s0.jpg", "s3_missing", "s3_missing")  # first image, twice
    with ScoreStore(tmp_path / "s.duckdb") as store:
        s = score_dataset(
            ds, faces(fake), store, RunOptions(concurrency=1, max_attempts=4, **QUIET)
        )
        assert (s.scored, s.failed) == (3, 1)
        f = store.failures()
        assert f["kind"].tolist() == ["image"] and f["attempts"].tolist() == [2]


def test_unreadable_bucket_stops_the_run_instead_of_failing_every_image(tmp_path, fake):
    ds = s3_set(tmp_path, 10)
    fake.default = "s3_missing"
    with ScoreStore(tmp_path / "s.duckdb") as store:
        with pytest.raises(FatalDetectorError, match=r"first 3 images.*region us-east-1"):
            score_dataset(ds, faces(fake), store, RunOptions(concurrency=1, **QUIET))
        assert store.failures().empty  # nothing recorded: a fixed bucket policy resumes all


def test_other_remote_schemes_stop_the_run(tmp_path, fake):
    with pytest.raises(FatalDetectorError, match="s3://"):
        faces(fake).detect(LabeledImage("x", "oss://bucket/x.jpg"))


# ---------------------------------------------------------------------------------------
# Model versions, settings, credentials
# ---------------------------------------------------------------------------------------


def test_default_version_is_api_and_date_with_a_warning(fake):
    with pytest.warns(CalibrateWarning, match="can change the model"):
        det = RekognitionFaces(endpoint_url=f"http://127.0.0.1:{fake.port}")
    assert re.fullmatch(r"DetectFaces-\d{4}-\d{2}-\d{2}", det.model_version)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert faces(fake).model_version == "t1"  # stated: no warning


def test_label_model_version_is_checked(tmp_path, fake):
    manifest, keys = make_set(tmp_path, 4)
    labels = RekognitionLabels(
        model_version="3.0", endpoint_url=f"http://127.0.0.1:{fake.port}", sdk_attempts=1
    )
    with ScoreStore(tmp_path / "s.duckdb") as store:
        s = score_dataset(read_manifest(manifest), labels, store, RunOptions(**QUIET))
        assert s.scored == 4
        run = store.runs().iloc[0]
        assert run["detection_floor"] == 0.0 and run["settings"]["min_confidence"] == 0.0
        assert store.raw_response(run["run_id"], "f000")["LabelModelVersion"] == "3.0"
        assert len(store.scores("rekognition-labels", "3.0", "Person")) == 4
    # the service moved on mid-run: stop, never mix versions in one run
    fake.plan(keys["f002"], "label_version")
    with pytest.warns(CalibrateWarning):
        dated = RekognitionLabels(endpoint_url=f"http://127.0.0.1:{fake.port}", sdk_attempts=1)
    with (
        ScoreStore(tmp_path / "s2.duckdb") as store,
        pytest.raises(FatalDetectorError, match="--model-version 3.1"),
    ):
        score_dataset(read_manifest(manifest), dated, store, RunOptions(concurrency=1, **QUIET))
    with pytest.raises(FatalDetectorError, match="LabelModelVersion 3.0"):
        fake.plan(keys["f001"], "ok")
        RekognitionLabels(
            model_version="2.0", endpoint_url=f"http://127.0.0.1:{fake.port}", sdk_attempts=1
        ).detect(read_manifest(manifest).images[1])


def test_custom_labels_needs_a_valid_arn_and_uses_its_region():
    with pytest.raises(InputError, match="project_version_arn="):
        RekognitionCustomLabels()
    with pytest.raises(InputError, match="not a project version ARN"):
        RekognitionCustomLabels(project_version_arn="my-model")
    det = RekognitionCustomLabels(project_version_arn=ARN)
    assert det.region == "eu-west-1" and det.settings()["project_version_arn"] == ARN
    assert RekognitionCustomLabels(model_version=ARN).model_version == ARN
    with pytest.raises(InputError, match="region eu-west-1"):
        RekognitionCustomLabels(project_version_arn=ARN, region="us-east-1")


def test_not_running_custom_model_is_fatal_with_instructions(tmp_path, fake):
    cf.write_png(tmp_path / "a.png", 11)
    fake.default = "not_ready"
    det = RekognitionCustomLabels(
        project_version_arn=ARN, endpoint_url=f"http://127.0.0.1:{fake.port}", sdk_attempts=1
    )
    with pytest.raises(FatalDetectorError, match="start-project-version"):
        det.detect(LabeledImage("a", str(tmp_path / "a.png")))


def test_credentials_are_refused_as_options_and_never_in_settings(fake):
    with pytest.raises(InputError, match="standard chain"):
        RekognitionFaces(model_version="t", aws_secret_access_key=SECRET_KEY)
    with pytest.raises(InputError, match="unknown option.*Known options"):
        RekognitionFaces(model_version="t", colour="red")
    text = repr(faces(fake).settings()) + repr(RekognitionLabels(model_version="3.0").settings())
    for secret in (ACCESS_KEY_ID, SECRET_KEY, SESSION_TOKEN):
        assert secret not in text


def test_no_credential_string_reaches_the_store_file(tmp_path, fake):
    manifest, keys = make_set(tmp_path, 6)
    fake.plan(keys["f001"], "throttle")
    fake.plan(keys["f002"], "bad_format")
    path = tmp_path / "s.duckdb"
    with ScoreStore(path) as store:
        score_dataset(read_manifest(manifest), faces(fake), store, RunOptions(**QUIET))
    data = cf.stored_text(path)
    assert b"FaceDetails" in data  # the raw responses were searched, decompressed
    for secret in (ACCESS_KEY_ID, SECRET_KEY, SESSION_TOKEN):
        assert secret.encode() not in data
    # ...while the client really did sign with them
    assert ACCESS_KEY_ID in fake.requests[0].headers["Authorization"]


def test_no_region_is_fatal_with_the_fix(monkeypatch):
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.delenv("AWS_REGION", raising=False)
    with pytest.raises(FatalDetectorError, match="region=us-east-1"):
        RekognitionFaces(model_version="t")


def test_registry_style_construction_from_cli_options(fake):
    # Options arrive as JSON-parsed keyword arguments (--option reencode=true -> True).
    det = RekognitionLabels(
        model_version="3.0", min_confidence=0, max_labels=50, reencode=True, region="eu-central-1"
    )
    assert det.settings()["max_labels"] == 50 and det.region == "eu-central-1"
    with pytest.raises(InputError, match="min_confidence"):
        RekognitionLabels(model_version="3.0", min_confidence=150)


# ---------------------------------------------------------------------------------------
# Cost estimates
# ---------------------------------------------------------------------------------------


def test_cost_estimates_for_rekognition(tmp_path, fake):
    est = estimate_cost(faces(fake), 2500)
    assert (est.operation, est.calls, est.currency) == ("DetectFaces", 2500, "USD")
    assert est.total == pytest.approx(2.5) and est.price_per_call == pytest.approx(0.001)
    assert est.checked_on == load_prices()["checked_on"] and "rekognition/pricing" in est.source
    assert "2,500 calls" in est.summary() and "prices change" in est.summary()
    custom = estimate_cost(RekognitionCustomLabels(project_version_arn=ARN), 18000)
    assert custom.rough and custom.total == pytest.approx(4.0) and "roughly" in custom.summary()

    class Local:
        name = "surface-defect"

    assert estimate_cost(Local(), 100).total == 0.0
    mine = tmp_path / "prices.toml"
    mine.write_text(
        'checked_on = "2030-01-01"\ncurrency = "EUR"\n'
        "[operations.DetectFaces]\nprice_per_1000 = 0.5\n"
    )
    est = estimate_cost("DetectFaces", 1000, price_file=mine)
    assert (est.total, est.currency, est.checked_on) == (0.5, "EUR", "2030-01-01")
    with pytest.raises(InputError, match=r"\[operations.DetectLabels\]"):
        estimate_cost("DetectLabels", 10, price_file=mine)
    with pytest.raises(InputError, match="does not exist"):
        estimate_cost("DetectFaces", 10, price_file=tmp_path / "nope.toml")


def test_ratio_boxes_reach_detection_rows_in_pixels(tmp_path, fake):
    # DetectFaces reports BoundingBox Left/Top/Width/Height as ratios of the image; the
    # store keeps them so, and detection_rows multiplies by the image's size (read from
    # the PNG header when the manifest is read).
    manifest, keys = make_set(tmp_path, 3, size=(40, 20))
    lines = [json.loads(x) for x in manifest.read_text().splitlines()]
    for rec in lines:
        rec["objects"] = [{"label": "face", "box": [4, 6, 12, 11]}]
        rec["labels"] = ["face"]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in lines))
    for key in keys.values():
        fake.faces[key] = 2
    with ScoreStore(tmp_path / "s.duckdb") as store:
        score_dataset(read_manifest(manifest), faces(fake), store, RunOptions(**QUIET))
        assert store._db().execute(
            "SELECT DISTINCT box_unit FROM results").fetchall() == [("ratio",)]
        rows = store.detection_rows("rekognition-faces", "t1", labels=["face"])
        assert rows.n_images == 3 and len(rows.detections) == 6
        for image_id, key in keys.items():
            got = rows.detections[rows.detections["image_id"] == image_id]
            want = []
            for j in range(2):
                bb = cf.rekognition_face(key, j)["BoundingBox"]
                want.append((bb["Left"] * 40, bb["Top"] * 20, (bb["Left"] + bb["Width"]) * 40,
                             (bb["Top"] + bb["Height"]) * 20))
            np.testing.assert_allclose(
                sorted(map(tuple, got[["x_min", "y_min", "x_max", "y_max"]].values)),
                sorted(want), rtol=1e-12)
        assert rows.objects[["x_min", "y_min", "x_max", "y_max"]].values.tolist() == [
            [4, 6, 12, 11]] * 3
