"""Alibaba Cloud IMM face detection, offline, through the real tea/darabonba client.

The client is pointed at tests.cloud_fakes.ImmFake on 127.0.0.1 with
``endpoint="127.0.0.1:PORT", protocol="http"`` and signs with credentials from the
environment-variable provider of the default chain. Proxy variables are cleared: the
client would send even 127.0.0.1 through HTTP_PROXY (it ignores NO_PROXY).
"""

from __future__ import annotations

import math
import re
import warnings

import pytest

from calibrate.detectors.alibaba_imm import KNOWN_VALUES, AlibabaImmFaces, imm_face_results
from calibrate.detectors.base import (
    Detector,
    DetectorError,
    FatalDetectorError,
    ImageError,
    RetryableError,
)
from calibrate.errors import CalibrateWarning, InputError
from calibrate.manifest import LabeledImage, read_manifest
from calibrate.pricing import estimate_cost
from calibrate.runner import RunOptions, score_dataset
from calibrate.store import ScoreStore
from tests import cloud_fakes as cf

ACCESS_KEY_ID = "LTAI5tCalibrateTestKeyId"
ACCESS_KEY_SECRET = "calibrateImmSecretNeverStoreXyZ123"
QUIET = {"progress": False, "backoff": 0.001, "flush_every": 0.05}

# Two faces of the seed sample (IMM documentation, face detection), verbatim.
SEED_FACES = [
    {
        "Beard": "none",
        "MaskConfidence": 0.724,
        "Gender": "male",
        "Boundary": {"Left": 138, "Top": 102, "Height": 19, "Width": 17},
        "BeardConfidence": 0.801,
        "FigureId": "b6525b63-cb12-4fab-a9f4-9c7de08b80c3",
        "Mouth": "close",
        "Emotion": "none",
        "Age": 36,
        "MouthConfidence": 0.984,
        "FigureType": "face",
        "GenderConfidence": 0.999,
        "HeadPose": {"Pitch": -9.386, "Roll": -3.478, "Yaw": 14.624},
        "Mask": "none",
        "EmotionConfidence": 0.998,
        "HatConfidence": 0.794,
        "GlassesConfidence": 0.999,
        "Sharpness": 0.025,
        "FigureClusterId": "figure-cluster-id-unavailable",
        "FaceQuality": 0.3,
        "Attractive": 0.002,
        "AgeSD": 8,
        "Glasses": "none",
        "FigureConfidence": 0.998,
        "Hat": "none",
    },
    {
        "Beard": "none",
        "MaskConfidence": 0.649,
        "Gender": "male",
        "Boundary": {"Left": 85, "Top": 108, "Height": 18, "Width": 14},
        "BeardConfidence": 0.975,
        "FigureId": "798ab164-ae05-4a9f-b8c9-4b69ca183c3f",
        "Mouth": "close",
        "Emotion": "none",
        "Age": 34,
        "MouthConfidence": 0.97,
        "FigureType": "face",
        "GenderConfidence": 0.917,
        "HeadPose": {"Pitch": -0.946, "Roll": -1.785, "Yaw": -39.264},
        "Mask": "mask",
        "EmotionConfidence": 0.966,
        "HatConfidence": 0.983,
        "GlassesConfidence": 1,
        "Sharpness": 0.095,
        "FigureClusterId": "figure-cluster-id-unavailable",
        "FaceQuality": 0.3,
        "Attractive": 0.022,
        "AgeSD": 9,
        "Glasses": "none",
        "FigureConfidence": 0.998,
        "Hat": "none",
    },
]


@pytest.fixture(autouse=True)
def imm_env(monkeypatch, tmp_path):
    """Credentials from the environment variables only; nothing from this machine."""
    from alibabacloud_credentials.utils import auth_util

    cf.clear_proxies(monkeypatch)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", ACCESS_KEY_ID)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", ACCESS_KEY_SECRET)
    monkeypatch.delenv("ALIBABA_CLOUD_SECURITY_TOKEN", raising=False)
    # The credentials package reads its environment once, at import: mirror the values.
    monkeypatch.setattr(auth_util, "environment_access_key_id", ACCESS_KEY_ID)
    monkeypatch.setattr(auth_util, "environment_access_key_secret", ACCESS_KEY_SECRET)
    monkeypatch.setattr(auth_util, "environment_security_token", None)
    monkeypatch.setattr(auth_util, "environment_cli_profile_disabled", "true")
    monkeypatch.setattr(auth_util, "environment_ecs_metadata_disabled", "true")
    monkeypatch.setattr(
        auth_util, "environment_credentials_file", str(tmp_path / "no-credentials.ini")
    )
    monkeypatch.setattr(auth_util, "environment_credentials_uri", None)


@pytest.fixture
def fake():
    with cf.ImmFake() as f:
        yield f


def imm(fake, **kw) -> AlibabaImmFaces:
    kw.setdefault("model_version", "t1")
    return AlibabaImmFaces(
        project="qc-faces", endpoint=f"127.0.0.1:{fake.port}", protocol="http", **kw
    )


def oss_set(tmp_path, n: int, *, extra: list[dict] | None = None):
    records = [
        {
            "id": f"o{i:02d}",
            "image": f"oss://qc-bucket/faces/o{i:02d}.jpg",
            "labels": ["face", "mask"] if i % 2 else ["face"],
        }
        for i in range(n)
    ]
    return read_manifest(cf.write_manifest(tmp_path, records + (extra or [])))


def uri(i: int) -> str:
    return f"oss://qc-bucket/faces/o{i:02d}.jpg"


def ok_calls(fake, key: str) -> int:
    return sum(1 for r in fake.requests if r.key == key and r.behaviour == "ok")


# ---------------------------------------------------------------------------------------
# Label convention
# ---------------------------------------------------------------------------------------


def test_seed_sample_faces_become_presence_scores():
    rs = imm_face_results(SEED_FACES)
    first = {r.label: r.score for r in rs[: len(rs) // 2]}
    assert first["face"] == 0.998
    assert first["mask"] == pytest.approx(1 - 0.724)  # "none" with 0.724 -> 0.276 present
    assert first["beard"] == pytest.approx(1 - 0.801)
    assert first["mouth_open"] == pytest.approx(1 - 0.984)  # "close"
    assert first["glasses"] == pytest.approx(1 - 0.999)
    assert first["emotion"] == pytest.approx(1 - 0.998)
    assert first["gender:male"] == pytest.approx(0.999)
    assert first["gender:female"] == pytest.approx(1 - 0.999)
    second = {r.label: r.score for r in rs[len(rs) // 2 :]}
    assert second["mask"] == pytest.approx(0.649)  # "mask" -> present
    assert "mask:mask" not in second and "mask:none" not in first  # said by `mask` already
    # image level: the max over faces, in IMM's 0-1 scale, with pixel boxes
    assert max(r.score for r in rs if r.label == "mask") == pytest.approx(0.649)
    box = rs[0].box
    assert (box.x_min, box.y_min, box.x_max, box.y_max, box.unit) == (138, 102, 155, 121, "pixel")
    assert all(0 <= r.score <= 1 for r in rs)


def test_multi_valued_attributes_get_one_label_per_value():
    face = {
        "FigureConfidence": 0.9,
        "Emotion": "happiness",
        "EmotionConfidence": 0.7,
        "Glasses": "sunglasses",
        "GlassesConfidence": 0.8,
        "Gender": "female",
        "GenderConfidence": 0.6,
    }
    s = {r.label: r.score for r in imm_face_results([face])}
    assert s["emotion:happiness"] == 0.7 and s["emotion"] == 0.7
    assert s["glasses:sunglasses"] == 0.8 and s["glasses"] == 0.8
    assert s["gender:female"] == 0.6 and s["gender:male"] == pytest.approx(0.4)
    assert "emotion:sadness" not in s  # unknown value set: only the chosen value
    known = {**KNOWN_VALUES, "emotion": ("happiness", "sadness", "surprise")}
    s = {r.label: r.score for r in imm_face_results([face], known)}
    assert s["emotion:sadness"] == pytest.approx(0.3) and s["emotion:surprise"] == pytest.approx(
        0.3
    )
    # missing confidence: no result rather than a made-up score
    assert [r.label for r in imm_face_results([{"Hat": "wear"}])] == []


def test_attribute_values_option_is_recorded_and_declares_labels(fake):
    det = imm(
        fake, attribute_values={"Emotion": ["Happiness", "sadness"], "glasses": ["sunglasses"]}
    )
    assert det.settings()["attribute_values"]["emotion"] == ["happiness", "sadness"]
    assert {"emotion:happiness", "emotion:sadness", "glasses:sunglasses", "gender:male"} <= set(
        det.labels
    )
    with pytest.raises(InputError, match="list of strings"):
        imm(fake, attribute_values={"emotion": "happiness"})


# ---------------------------------------------------------------------------------------
# Wire protocol through the real client
# ---------------------------------------------------------------------------------------


def test_request_is_a_signed_rpc_post_with_query_parameters(fake):
    det = imm(fake)
    assert isinstance(det, Detector) and det.billable and det.operation == "DetectImageFaces"
    got = det.detect(LabeledImage("o00", uri(0)))
    (req,) = fake.requests
    assert req.target == "DetectImageFaces" and req.headers["x-acs-version"] == "2020-09-30"
    assert req.body["query"] == {"ProjectName": "qc-faces", "SourceURI": uri(0)}
    assert req.body["body"] == b""
    assert f"Credential={ACCESS_KEY_ID}" in req.headers["Authorization"]
    assert req.headers["x-acs-credentials-provider"] == "default/env"
    assert len([r for r in got.results if r.label == "face"]) == 2
    assert got.raw["Faces"][0]["FigureId"] and got.raw["Faces"][0]["HeadPose"]
    assert got.raw["RequestId"]


def test_throttling_429_is_retried_end_to_end_without_losing_or_duplicating(tmp_path, fake):
    ds = oss_set(tmp_path, 10)
    for i in range(10):
        fake.plan(uri(i), *(["throttle", "throttle_retry_after", "5xx"][: i % 4]))
    with ScoreStore(tmp_path / "s.duckdb") as store:
        s = score_dataset(ds, imm(fake), store, RunOptions(max_attempts=4, concurrency=4, **QUIET))
        retries = sum(i % 4 for i in range(10))
        assert (s.scored, s.failed, s.retries, s.calls) == (10, 0, retries, 10 + retries)
        ls = store.scores("alibaba-imm-faces", "t1", "face")
        assert sorted(ls.image_ids) == [f"o{i:02d}" for i in range(10)]
        mask = store.scores("alibaba-imm-faces", "t1", "mask")
        assert mask.positive.sum() == 5 and all(0 <= x <= 1 for x in mask.scores)
    for i in range(10):
        assert ok_calls(fake, uri(i)) == 1


def test_throttling_classified_by_code_not_exception_class(fake):
    from alibabacloud_tea_openapi.exceptions import ClientException, ThrottlingException

    det = imm(fake)
    image = LabeledImage("o01", uri(1))
    plain = ClientException(status_code=429, code="Throttling.User", message="flow control")
    err = det._classify(image, plain)
    assert isinstance(err, RetryableError) and err.retry_after is None
    with_header = ThrottlingException(
        status_code=429, code="Throttling.User", message="x", retry_after=20
    )
    assert det._classify(image, with_header).retry_after == pytest.approx(0.02)  # ms -> s
    # and through the wire: the 429 without x-acs-retry-after is a ClientException in the SDK
    fake.plan(uri(1), "throttle", "throttle_retry_after")
    with pytest.raises(RetryableError, match="Throttling.User") as a:
        det.detect(image)
    with pytest.raises(RetryableError) as b:
        det.detect(image)
    assert a.value.retry_after is None and b.value.retry_after == pytest.approx(0.02)


def test_bad_image_is_a_per_image_failure(tmp_path, fake):
    ds = oss_set(tmp_path, 6)
    fake.plan(uri(3), "bad_image")
    fake.plan(uri(0), "bad_image", "bad_image")  # first, before any success: retried once
    with ScoreStore(tmp_path / "s.duckdb") as store:
        s = score_dataset(ds, imm(fake), store, RunOptions(concurrency=1, **QUIET))
        assert (s.scored, s.failed, s.failures_by_kind) == (4, 2, {"image": 2})
        f = store.failures().set_index("image_id")
        assert "InvalidParameter" in f.loc["o03", "message"] and f.loc["o03", "attempts"] == 1
        assert f.loc["o00", "attempts"] == 2


def test_wrong_bucket_or_project_stops_the_run_instead_of_failing_every_image(tmp_path, fake):
    ds = oss_set(tmp_path, 8)
    fake.default = "not_found"
    with ScoreStore(tmp_path / "s.duckdb") as store:
        with pytest.raises(FatalDetectorError, match="first 3 images"):
            score_dataset(ds, imm(fake), store, RunOptions(concurrency=1, **QUIET))
        assert store.failures().empty
    fake.default = "no_project"
    with pytest.raises(FatalDetectorError, match="project=qc-faces"):
        imm(fake).detect(LabeledImage("o00", uri(0)))


@pytest.mark.parametrize(
    "behaviour, code", [("auth", "InvalidAccessKeyId.NotFound"), ("forbidden", "Forbidden.RAM")]
)
def test_auth_errors_stop_the_run(tmp_path, fake, behaviour, code):
    ds = oss_set(tmp_path, 6)
    fake.default = behaviour
    with ScoreStore(tmp_path / "s.duckdb") as store:
        with pytest.raises(FatalDetectorError, match=re.escape(code)) as info:
            score_dataset(ds, imm(fake), store, RunOptions(concurrency=2, **QUIET))
        assert "ALIBABA_CLOUD_ACCESS_KEY_ID" in str(info.value) and "resume" in str(info.value)
        assert store.failures().empty
    assert len(fake.requests) <= 3


def test_missing_credentials_are_fatal_before_anything_is_sent(fake, monkeypatch):
    from alibabacloud_credentials.utils import auth_util

    monkeypatch.setattr(auth_util, "environment_access_key_id", None)
    monkeypatch.setattr(auth_util, "environment_access_key_secret", None)
    with pytest.raises(FatalDetectorError, match="no usable Alibaba Cloud credentials"):
        imm(fake).detect(LabeledImage("o00", uri(0)))
    assert fake.requests == []


@pytest.mark.parametrize("behaviour", ["5xx", "malformed", "slow:0.6"])
def test_transient_failures_are_retryable(fake, behaviour):
    fake.plan(uri(2), behaviour)
    det = imm(fake, read_timeout=0.2)
    image = LabeledImage("o02", uri(2))
    with pytest.raises(RetryableError):
        det.detect(image)
    assert det.detect(image).results


def test_timeouts_are_given_to_the_sdk_in_milliseconds(fake):
    det = imm(fake, read_timeout=2.5, connect_timeout=0.75)
    assert (det.client._read_timeout, det.client._connect_timeout) == (2500, 750)


def test_the_sdk_ignores_no_proxy_which_is_why_tests_clear_proxies(fake, monkeypatch):
    # A dead proxy: the SDK sends 127.0.0.1 through it despite NO_PROXY.
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with pytest.raises(RetryableError):
        imm(fake, connect_timeout=0.5).detect(LabeledImage("o00", uri(0)))
    assert fake.requests == []


def test_non_oss_images_stop_the_run(tmp_path, fake):
    cf.write_png(tmp_path / "a.png", 1)
    with pytest.raises(FatalDetectorError, match="oss://bucket/key"):
        imm(fake).detect(LabeledImage("a", str(tmp_path / "a.png")))


def test_image_without_faces_has_no_result(tmp_path, fake):
    ds = oss_set(tmp_path, 3)
    fake.faces[uri(1)] = 0
    with ScoreStore(tmp_path / "s.duckdb") as store:
        run = score_dataset(ds, imm(fake), store, RunOptions(**QUIET))
        ls = store.scores("alibaba-imm-faces", "t1", "face")
        by_id = dict(zip(ls.image_ids, ls.scores))
        assert math.isinf(by_id["o01"]) and by_id["o01"] < 0
        assert store.raw_response(run.run_id, "o01")["Faces"] == []


# ---------------------------------------------------------------------------------------
# Options, versions, credentials
# ---------------------------------------------------------------------------------------


def test_options_are_checked_with_messages_that_say_what_to_do(fake):
    with pytest.raises(InputError, match="project=NAME"):
        AlibabaImmFaces(region="cn-beijing", model_version="t")
    with pytest.raises(InputError, match="region=cn-beijing"):
        AlibabaImmFaces(project="p", model_version="t")
    with pytest.raises(InputError, match="not a URL"):
        AlibabaImmFaces(project="p", endpoint=f"http://127.0.0.1:{fake.port}", model_version="t")
    with pytest.raises(InputError, match="ALIBABA_CLOUD_ACCESS_KEY_ID"):
        AlibabaImmFaces(project="p", region="cn-beijing", access_key_secret=ACCESS_KEY_SECRET)
    with pytest.raises(InputError, match="unknown option"):
        AlibabaImmFaces(project="p", region="cn-beijing", colour="red")
    det = AlibabaImmFaces(project="p", region="cn-beijing", model_version="t")
    assert det.client._endpoint == "imm.cn-beijing.aliyuncs.com"


def test_default_version_is_api_and_date_with_a_warning(fake):
    with pytest.warns(CalibrateWarning, match="can change"):
        det = AlibabaImmFaces(project="p", endpoint=f"127.0.0.1:{fake.port}", protocol="http")
    assert re.fullmatch(r"DetectImageFaces-\d{4}-\d{2}-\d{2}", det.model_version)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        imm(fake)


def test_no_credential_string_reaches_settings_or_the_store_file(tmp_path, fake):
    ds = oss_set(tmp_path, 5)
    fake.plan(uri(1), "throttle")
    fake.plan(uri(4), "bad_image")
    det = imm(fake)
    assert ACCESS_KEY_ID not in repr(det.settings()) and ACCESS_KEY_SECRET not in repr(
        det.settings()
    )
    path = tmp_path / "s.duckdb"
    with ScoreStore(path) as store:
        score_dataset(ds, det, store, RunOptions(**QUIET))
    data = cf.stored_text(path)
    assert b"FigureConfidence" in data and b"qc-faces" in data  # searched what was stored
    assert ACCESS_KEY_ID.encode() not in data and ACCESS_KEY_SECRET.encode() not in data


def test_cost_estimate_for_imm(fake):
    est = estimate_cost(imm(fake), 10_000)
    assert (est.operation, est.currency) == ("DetectImageFaces", "USD")
    assert est.total == pytest.approx(0.28) and not est.rough
    assert "imm/product-overview/billable-items" in est.source


@pytest.mark.parametrize(
    "status, code, kind",
    [
        (429, "Throttling.User", RetryableError),
        (503, "ServiceUnavailable", RetryableError),
        (500, "InternalError", RetryableError),
        (400, "MissingProjectName", FatalDetectorError),
        (404, "InvalidAccessKeyId.NotFound", FatalDetectorError),
        (400, "SignatureDoesNotMatch", FatalDetectorError),
        (400, "InvalidSecurityToken.Expired", FatalDetectorError),
        (403, "Forbidden.RAM", FatalDetectorError),
        (400, "InvalidArgument", ImageError),
        (404, "ResourceNotFound", ImageError),
        (418, "Teapot", DetectorError),
    ],
)
def test_codes_map_to_the_runner_taxonomy(fake, status, code, kind):
    from alibabacloud_tea_openapi.exceptions import ClientException, ServerException

    det = imm(fake)
    det._succeeded = 1  # past the start-of-run guard: per-image errors are final
    cls = ServerException if status >= 500 else ClientException
    exc = cls(status_code=status, code=code, message="m")
    err = det._classify(LabeledImage("o00", uri(0)), exc)
    assert type(err) is kind


def test_pixel_boundaries_reach_detection_rows_unchanged(tmp_path, fake):
    # IMM's Boundary is Left/Top/Width/Height in pixels: stored as pixel boxes, read back
    # as x_min, y_min, x_max = Left + Width, y_max = Top + Height. These OSS images have
    # no size in the manifest, and pixel boxes need none.
    records = [{"id": f"o{i:02d}", "image": uri(i),
                "objects": [{"label": "face", "box": [40, 100, 57, 119]}]} for i in range(3)]
    ds = read_manifest(cf.write_manifest(tmp_path, records))
    with ScoreStore(tmp_path / "s.duckdb") as store:
        score_dataset(ds, imm(fake), store, RunOptions(**QUIET))
        rows = store.detection_rows("alibaba-imm-faces", "t1", labels=["face"])
        assert rows.n_images == 3 and len(rows.detections) == 6
        for i in range(3):
            want = []
            for j in range(2):  # the fake's two faces per image
                b = cf.imm_face(uri(i), j)["Boundary"]
                want.append((b["Left"], b["Top"], b["Left"] + b["Width"], b["Top"] + b["Height"]))
            got = rows.detections[rows.detections["image_id"] == f"o{i:02d}"]
            assert sorted(map(tuple, got[["x_min", "y_min", "x_max", "y_max"]].values)) == (
                sorted(want))
