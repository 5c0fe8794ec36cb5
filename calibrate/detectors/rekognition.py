"""Amazon Rekognition detectors: DetectFaces, DetectLabels and DetectCustomLabels (boto3).

Install with ``pip install 'calibrate[aws]'``. Three detectors share one adapter:

``rekognition-faces`` (:class:`RekognitionFaces`)
    DetectFaces with ``Attributes=["ALL"]``. Label ``face`` is scored by the face's
    ``Confidence``; every face attribute becomes a label of its own, scored for the
    attribute being *present* on Rekognition's 0-100 scale (see "Label names" below).
    Boxes are ratios of the image size (``Box.unit == "ratio"``); landmarks, pose,
    quality, age range and eye direction stay in the raw response.
``rekognition-labels`` (:class:`RekognitionLabels`)
    DetectLabels with ``MinConfidence=0`` (the lowest the API allows, so nothing above
    the service's own cutoff is censored by us); one result per label, scored by the
    label's ``Confidence``, named exactly as Rekognition names it (``"Person"``).
    Instance boxes are kept in the raw response only: the label's image-level
    ``Confidence`` is what ``MinConfidence`` filters on in a deployment, so it alone is
    the score.
``rekognition-custom-labels`` (:class:`RekognitionCustomLabels`)
    DetectCustomLabels on a running Custom Labels model, ``MinConfidence=0``; the
    project version ARN *is* the model version. One result per returned label (per
    object for detection models, with its box).

Label names (faces)
-------------------
* ``face``: the face's ``Confidence``.
* Yes/no attributes (``Smile``, ``Eyeglasses``, ``Sunglasses``, ``Beard``, ``Mustache``,
  ``EyesOpen``, ``MouthOpen``, ``FaceOccluded``, and any later ``{Value: bool,
  Confidence}`` attribute) become snake_case labels (``smile``, ``eyes_open``,
  ``face_occluded``) scored ``c`` when ``Value`` is true and ``100 - c`` when false,
  as DESIGN.md prescribes for attribute scores.
* ``Gender`` gives ``gender:female`` and ``gender:male``: ``c`` for the value
  Rekognition chose, ``100 - c`` for the other.
* Each ``Emotions`` entry gives ``emotion:<type>`` (``emotion:happy``,
  ``emotion:calm``...) scored by its own ``Confidence``, which is already a presence
  score.

Every attribute result carries its face's box, so the image-level score of a label
(the store takes the maximum over results) is the maximum over faces. An image with no
face has no result for any label.

Model version
-------------
DetectFaces reports no model version, so the version is what the user states; by
default ``"DetectFaces-<UTC date of the run>"``, with a warning, because AWS can update
the model behind the API at any time. DetectLabels reports ``LabelModelVersion``: it is
kept in each raw response, and the detector stops the run if it changes mid-run (or if
it differs from a stated version written as digits and dots, e.g. ``"3.0"``), since
scores of different versions must never share a curve.

Errors
------
Throttling (``ThrottlingException``, ``ProvisionedThroughputExceededException``...),
5xx, timeouts, connection failures and unparseable responses raise
:class:`~calibrate.detectors.base.RetryableError` after botocore's own (few) retries;
the runner retries them later with backoff. ``InvalidImageFormatException`` and
``ImageTooLargeException`` are per-image :class:`~calibrate.detectors.base.ImageError`.
``InvalidS3ObjectException`` and ``InvalidParameterException`` are per-image too,
except that before any call of the run has succeeded they are retried, and a third
image failing that way stops the run: then the bucket, region, permissions or model,
not the images, are at fault, and recording every image as failed would hide it.
Credential and permission errors stop the run with
:class:`~calibrate.detectors.base.FatalDetectorError`.

Credentials come only from boto3's standard chain (environment, ``AWS_PROFILE``, SSO,
instance or container role). They are never accepted as options and never recorded.
"""

from __future__ import annotations

import io
import math
import re
import threading
import warnings
from datetime import datetime, timezone
from typing import Any

from calibrate.detectors.base import (
    Box,
    Detection,
    DetectorError,
    FatalDetectorError,
    ImageError,
    Result,
    RetryableError,
    StartGuardMixin,
)
from calibrate.errors import CalibrateWarning, InputError

__all__ = [
    "FACE_LABELS",
    "RekognitionCustomLabels",
    "RekognitionFaces",
    "RekognitionLabels",
    "face_results",
]

#: Largest image DetectFaces/DetectLabels accept as bytes (the API's ImageBlob limit).
MAX_IMAGE_BYTES = 5 * 1024 * 1024
#: DetectCustomLabels accepts at most 4 MB as bytes.
MAX_CUSTOM_LABELS_BYTES = 4 * 1024 * 1024
#: Rekognition's scale: attribute scores are ``c`` or ``SCALE - c``.
SCALE = 100.0

_BOOLEAN_FACE_ATTRIBUTES = (
    "Smile", "Eyeglasses", "Sunglasses", "Beard", "Mustache", "EyesOpen", "MouthOpen",
    "FaceOccluded",
)
_EMOTIONS = (
    "HAPPY", "SAD", "ANGRY", "CONFUSED", "DISGUSTED", "SURPRISED", "CALM", "UNKNOWN", "FEAR",
)
_GENDERS = ("female", "male")


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


#: Every label :class:`RekognitionFaces` emits for the attributes documented today.
FACE_LABELS: tuple[str, ...] = (
    "face",
    *(_snake(a) for a in _BOOLEAN_FACE_ATTRIBUTES),
    *(f"gender:{g}" for g in _GENDERS),
    *(f"emotion:{e.lower()}" for e in _EMOTIONS),
)

# Codes, by what the runner should do about them. Rekognition's own codes come first;
# the rest are the generic AWS codes any endpoint (or a proxy in front of it) can send.
_THROTTLING = frozenset({
    "ThrottlingException", "ProvisionedThroughputExceededException", "LimitExceededException",
    "Throttling", "ThrottledException", "RequestThrottled", "RequestThrottledException",
    "TooManyRequestsException", "RequestLimitExceeded", "SlowDown",
})
_TRANSIENT = frozenset({
    "InternalServerError", "InternalFailure", "InternalError", "ServiceUnavailable",
    "ServiceUnavailableException", "RequestTimeout", "RequestTimeoutException",
})
_BAD_IMAGE = frozenset({"InvalidImageFormatException", "ImageTooLargeException"})
# Per-image in principle, but also what a whole misconfigured run looks like (no access
# to the bucket, a bucket in another region, an ARN of the wrong project type).
_AMBIGUOUS = frozenset({"InvalidS3ObjectException", "InvalidParameterException"})
_AUTH = frozenset({
    "AccessDeniedException", "AccessDenied", "UnrecognizedClientException",
    "InvalidSignatureException", "SignatureDoesNotMatch", "ExpiredToken",
    "ExpiredTokenException", "InvalidClientTokenId", "MissingAuthenticationToken",
    "IncompleteSignature", "AuthFailure", "RequestExpired", "NotAuthorized",
    "InvalidAccessKeyId", "OptInRequired", "SubscriptionRequiredException",
})
_MODEL = frozenset({
    "ResourceNotFoundException", "ResourceNotReadyException", "ValidationException",
    "UnknownOperationException",
})
# Options that look like credentials are refused by name, so that the message can say
# where credentials belong instead of "unexpected keyword argument".
_CREDENTIAL_OPTION = re.compile(
    r"access_?key|secret|session_?token|credential|password", re.IGNORECASE
)
# Distinct images failing with an _AMBIGUOUS code, before any success, that stop the run.
_AMBIGUOUS_LIMIT = 3
_AMBIGUOUS_RETRY_AFTER = 1.0  # seconds


_LOADER: Any = None
_LOADER_LOCK = threading.Lock()


def _botocore_session():
    """A fresh botocore session (fresh credential lookup) sharing one data loader.

    Loading Rekognition's service model takes a few hundred milliseconds; sharing the
    loader makes every detector after the first cheap to build, without sharing any
    credentials or configuration between them.
    """
    global _LOADER
    import botocore.loaders
    import botocore.session

    with _LOADER_LOCK:
        if _LOADER is None:
            _LOADER = botocore.loaders.create_loader()
    session = botocore.session.Session()
    session.register_component("data_loader", _LOADER)
    return session


def _today() -> str:
    return datetime.now(timezone.utc).date().isoformat()


def _refuse_unknown(cls_name: str, unknown: dict[str, Any], known) -> None:
    if not unknown:
        return
    secret = sorted(k for k in unknown if _CREDENTIAL_OPTION.search(k))
    if secret:
        raise InputError(
            f"{cls_name}: credentials are not accepted as options ({', '.join(secret)}): "
            "they would end up in shell history and run records. Use boto3's standard "
            "chain instead: AWS_PROFILE (with `aws sso login` or ~/.aws/credentials), the "
            "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY environment variables, or an "
            "instance/container role."
        )
    raise InputError(
        f"{cls_name}: unknown option(s) {', '.join(sorted(unknown))}. Known options: "
        f"{', '.join(known)}."
    )


def _check_limits(name: str, min_confidence: Any, what: str, most: Any) -> None:
    ok = isinstance(min_confidence, (int, float)) and not isinstance(min_confidence, bool)
    if not ok or not 0 <= min_confidence <= 100:
        raise InputError(f"{name}: min_confidence must be within 0-100, got {min_confidence!r}.")
    if most is not None and (isinstance(most, bool) or not isinstance(most, int) or most < 1):
        raise InputError(f"{name}: {what} must be a positive whole number, got {most!r}.")


def _sniff_format(data: bytes) -> str | None:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    return None


def _mb(n: int) -> str:
    return f"{n / (1024 * 1024):.2f} MB"


def _reencode(image, limit: int, original_format: str | None, original_bytes: int):
    """Re-encode an image the API would refuse so that it fits ``limit`` bytes.

    PNG first when only the format was wrong (lossless), else JPEG at quality 92,
    downscaled in steps until it fits. Box ratios are unchanged by scaling, and
    :meth:`LabeledImage.open` applies the EXIF orientation as Rekognition does.
    """
    from PIL import Image

    img = image.open()
    original_size = list(img.size)
    attempts = []
    if original_format is None:
        attempts.append(("png", img))
    attempts.append(("jpeg", img))
    for fmt, candidate in attempts:
        buf = io.BytesIO()
        if fmt == "png":
            candidate.save(buf, format="PNG", optimize=True)
        else:
            candidate.save(buf, format="JPEG", quality=92)
        if buf.tell() <= limit:
            break
    current = img
    for _ in range(12):
        if buf.tell() <= limit:
            break
        # Bytes scale roughly with the pixel count, hence the square root; 0.9 leaves
        # room for the estimate being off.
        factor = math.sqrt(limit / buf.tell()) * 0.9
        size = (max(1, int(current.width * factor)), max(1, int(current.height * factor)))
        current = img.resize(size, Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        current.save(buf, format="JPEG", quality=92)
        fmt = "jpeg"
    else:  # pragma: no cover - 12 halvings always fit
        raise ImageError(f"image {image.image_id!r} could not be re-encoded below {_mb(limit)}.")
    data = buf.getvalue()
    info = {
        "reencoded": True,
        "format": fmt,
        "original_format": original_format or "other",
        "original_bytes": original_bytes,
        "original_size": original_size,
        "sent_size": [current.width, current.height],
        "bytes": len(data),
    }
    return data, info


def _ratio_box(bb: dict | None) -> Box | None:
    if not bb:
        return None
    try:
        left, top = float(bb["Left"]), float(bb["Top"])
        return Box(left, top, left + float(bb["Width"]), top + float(bb["Height"]), unit="ratio")
    except (KeyError, TypeError, ValueError):
        return None


def face_results(face_details: list[dict]) -> list[Result]:
    """Results for DetectFaces' ``FaceDetails``, following the label convention above.

    Parameters
    ----------
    face_details : list of dict
        ``response["FaceDetails"]``.

    Returns
    -------
    list of Result
        Scores on Rekognition's 0-100 scale; each result has its face's ratio box.

    Examples
    --------
    >>> rs = face_results([{"Confidence": 99.5, "Sunglasses": {"Value": False, "Confidence": 97.0},
    ...                     "Gender": {"Value": "Female", "Confidence": 90.0}}])
    >>> [(r.label, round(r.score, 1)) for r in rs]
    [('face', 99.5), ('sunglasses', 3.0), ('gender:female', 90.0), ('gender:male', 10.0)]
    """
    out: list[Result] = []
    for face in face_details:
        box = _ratio_box(face.get("BoundingBox"))
        if face.get("Confidence") is not None:
            out.append(Result("face", float(face["Confidence"]), box))
        for key, value in face.items():
            if not isinstance(value, dict) or value.get("Confidence") is None:
                continue
            c = float(value["Confidence"])
            v = value.get("Value")
            if isinstance(v, bool):
                out.append(Result(_snake(key), c if v else SCALE - c, box))
            elif key == "Gender" and isinstance(v, str):
                chosen = v.lower()
                values = _GENDERS if chosen in _GENDERS else (chosen,)
                for g in values:
                    out.append(Result(f"gender:{g}", c if g == chosen else SCALE - c, box))
        for emotion in face.get("Emotions") or ():
            if emotion.get("Type") and emotion.get("Confidence") is not None:
                out.append(Result(f"emotion:{str(emotion['Type']).lower()}",
                                  float(emotion["Confidence"]), box))
    return out


class _Rekognition(StartGuardMixin):
    """What the three Rekognition detectors share: client, image input, errors."""

    kind = "io"
    billable = True
    name = "rekognition"
    operation = ""
    response_key = ""
    max_image_bytes = MAX_IMAGE_BYTES
    detection_floor: float | None = None
    labels: tuple[str, ...] | None = None

    _version_note = "Rekognition reports no model version"
    _COMMON_OPTIONS = (
        "region", "profile", "endpoint_url", "reencode", "sdk_attempts", "retry_mode",
        "connect_timeout", "read_timeout", "client",
    )

    def __init__(
        self,
        *,
        model_version: str | None = None,
        region: str | None = None,
        profile: str | None = None,
        endpoint_url: str | None = None,
        reencode: bool = False,
        sdk_attempts: int = 2,
        retry_mode: str = "standard",
        connect_timeout: float = 10.0,
        read_timeout: float = 60.0,
        client: Any = None,
    ):
        if not isinstance(reencode, bool):
            raise InputError(f"{self.name}: reencode must be true or false, got {reencode!r}.")
        if not isinstance(sdk_attempts, int) or sdk_attempts < 1:
            raise InputError(
                f"{self.name}: sdk_attempts must be a whole number >= 1 (calls per detect, "
                f"botocore's retries included), got {sdk_attempts!r}."
            )
        if retry_mode not in ("standard", "adaptive", "legacy"):
            raise InputError(
                f"{self.name}: retry_mode must be standard, adaptive or legacy, got {retry_mode!r}."
            )
        for what, value in (("connect_timeout", connect_timeout), ("read_timeout", read_timeout)):
            if not isinstance(value, (int, float)) or not value > 0:
                raise InputError(f"{self.name}: {what} must be positive seconds, got {value!r}.")
        self.reencode = reencode
        self.sdk_attempts = sdk_attempts
        self.retry_mode = retry_mode
        self.connect_timeout = float(connect_timeout)
        self.read_timeout = float(read_timeout)
        self.endpoint_url = endpoint_url
        self.profile = profile
        self._version_stated = model_version is not None
        self.model_version = model_version or self._default_version()
        self._lock = threading.Lock()
        self._succeeded = 0
        self._ambiguous: dict[str, str] = {}
        self.client = client if client is not None else self._make_client(region, profile)
        self.region = getattr(getattr(self.client, "meta", None), "region_name", None) or region

    # -- construction ------------------------------------------------------------------

    def _default_version(self) -> str:
        version = f"{self.operation}-{_today()}"
        warnings.warn(
            f"{self.name}: {self._version_note}, so this "
            f"run records {version!r} (the API and today's UTC date). AWS can change the "
            "model behind the API without notice; dated versions keep runs of different "
            "days apart. To resume this run on a later day, pass "
            f"--model-version {version}.",
            CalibrateWarning,
            stacklevel=4,
        )
        return version

    def _make_client(self, region: str | None, profile: str | None):
        try:
            import boto3
            import botocore.exceptions as bex
            from botocore.config import Config
        except ImportError:
            raise InputError(
                f"{self.name} needs boto3: pip install 'calibrate[aws]'."
            ) from None
        config = Config(
            # total_max_attempts counts the first call too (botocore's max_attempts
            # counts only retries). Few: calibrate's runner does the patient retries,
            # after scheduling other images, and under the run's rate limit.
            retries={"total_max_attempts": self.sdk_attempts, "mode": self.retry_mode},
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            user_agent_extra="calibrate",
        )
        try:
            session = boto3.session.Session(
                botocore_session=_botocore_session(), profile_name=profile, region_name=region
            )
            return session.client("rekognition", endpoint_url=self.endpoint_url, config=config)
        except bex.ProfileNotFound as exc:
            raise FatalDetectorError(
                f"{self.name}: {exc}. List profiles with `aws configure list-profiles`."
            ) from None
        except bex.NoRegionError:
            raise FatalDetectorError(
                f"{self.name}: no AWS region is configured. Pass --option region=us-east-1 "
                "(the region of your bucket and model) or set AWS_DEFAULT_REGION."
            ) from None

    # -- protocol ----------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        """Settings that affect scores or cost (recorded with the run; no credentials)."""
        out: dict[str, Any] = {
            "operation": self.operation,
            "region": self.region,
            "reencode": self.reencode,
            "max_image_bytes": self.max_image_bytes,
            "sdk_attempts": self.sdk_attempts,
            "retry_mode": self.retry_mode,
            "connect_timeout": self.connect_timeout,
            "read_timeout": self.read_timeout,
            "model_version_stated": self._version_stated,
        }
        if self.endpoint_url:
            out["endpoint_url"] = self.endpoint_url
        if self.profile:
            out["profile"] = self.profile
        out.update(self._request_settings())
        return out

    def detect(self, image) -> Detection:
        """Call the API for one image; see the module docstring for labels and errors."""
        image_param, sent = self._image_param(image)
        response = self._call(image, {**self._request_settings_api(), "Image": image_param})
        if not isinstance(response, dict) or self.response_key not in response:
            # botocore turns a 200 with an unparseable body into an empty dict; taken
            # at face value that would score the image as "nothing found".
            raise RetryableError(
                f"{self.operation} answered without {self.response_key} for image "
                f"{image.image_id!r} (truncated or malformed response); retrying."
            )
        with self._lock:
            self._succeeded += 1
        results = self._results(response)
        meta = response.get("ResponseMetadata") or {}
        raw = {k: v for k, v in response.items() if k != "ResponseMetadata"}
        raw["ResponseMetadata"] = {
            "RequestId": meta.get("RequestId"),
            "RetryAttempts": meta.get("RetryAttempts"),
        }
        raw["CalibrateInput"] = sent
        return Detection(results, raw)

    # -- per-operation hooks -----------------------------------------------------------

    def _request_settings(self) -> dict[str, Any]:
        return {}

    def _request_settings_api(self) -> dict[str, Any]:
        return {}

    def _results(self, response: dict) -> list[Result]:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- input -------------------------------------------------------------------------

    def _image_param(self, image) -> tuple[dict, dict]:
        uri = image.uri
        if uri.startswith("s3://"):
            bucket, _, key = uri[5:].partition("/")
            if not bucket or not key:
                raise ImageError(
                    f"image {image.image_id!r}: {uri} is not an s3://bucket/key URI."
                )
            # Keys are taken literally (no URL decoding), as the AWS CLI does.
            return {"S3Object": {"Bucket": bucket, "Name": key}}, {"source": "s3", "uri": uri}
        if not image.is_local:
            scheme = uri.split("://", 1)[0]
            raise FatalDetectorError(
                f"{self.name}: image {image.image_id!r} is {uri}; Rekognition reads local "
                f"files (sent as bytes) or s3:// objects, not {scheme}://. Copy the images "
                "to an S3 bucket in the detector's region and list them as s3://bucket/key."
            )
        data = image.read_bytes()
        fmt = _sniff_format(data)
        limit = self.max_image_bytes
        problem = None
        if fmt is None:
            problem = "is neither PNG nor JPEG, the only formats Rekognition accepts"
        elif len(data) > limit:
            problem = f"is {_mb(len(data))}; {self.operation} accepts at most {_mb(limit)} as bytes"
        if problem is None:
            return {"Bytes": data}, {"source": "bytes", "bytes": len(data), "format": fmt}
        if not self.reencode:
            raise ImageError(
                f"image {image.image_id!r} ({uri}) {problem}. Upload it to S3 and use an "
                "s3:// URI (up to 15 MB), convert it yourself, or pass --option "
                "reencode=true to let calibrate re-encode/downscale it (recorded per image "
                "in the raw response)."
            )
        data, info = _reencode(image, limit, fmt, len(data))
        return {"Bytes": data}, {"source": "bytes", **info}

    # -- calling and errors ------------------------------------------------------------

    def _call(self, image, params: dict) -> dict:
        import botocore.exceptions as bex

        method = getattr(self.client, _snake(self.operation))
        try:
            return method(**params)
        except bex.ClientError as exc:
            raise self._client_error(image, exc) from None
        except (
            bex.NoCredentialsError, bex.PartialCredentialsError, bex.CredentialRetrievalError,
            bex.TokenRetrievalError, bex.SSOError, bex.NoAuthTokenError, bex.ProfileNotFound,
        ) as exc:
            raise FatalDetectorError(
                f"{self.name}: AWS credentials problem: {exc}. calibrate uses boto3's standard "
                "credential chain only: set AWS_PROFILE (run `aws sso login` for SSO "
                "profiles), or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or run on a host "
                "with a role; then run the same command again to resume."
            ) from None
        except (bex.HTTPClientError, bex.ConnectionError, bex.IncompleteReadError) as exc:
            # Timeouts, resets, DNS hiccups: the same call may well work later.
            raise RetryableError(
                f"{self.operation} for image {image.image_id!r}: {type(exc).__name__}: {exc}"
            ) from None

    def _client_error(self, image, exc) -> DetectorError:
        err = exc.response.get("Error") or {}
        meta = exc.response.get("ResponseMetadata") or {}
        code = str(err.get("Code") or "")
        message = str(err.get("Message") or "")
        status = int(meta.get("HTTPStatusCode") or 0)
        what = f"{self.operation} for image {image.image_id!r}: {code}: {message}"
        if code in _THROTTLING:
            retry_after = None
            header = (meta.get("HTTPHeaders") or {}).get("retry-after")
            try:
                retry_after = float(header) if header is not None else None
            except ValueError:
                retry_after = None
            tries = (meta.get("RetryAttempts") or 0) + 1
            return RetryableError(
                f"{what} (after {tries} call(s) by botocore). calibrate retries it later; if "
                "this is frequent, lower --concurrency or set --rate-limit to your TPS quota"
                + (" (for Custom Labels, or start the model with more inference units)"
                   if self.operation == "DetectCustomLabels" else "") + ".",
                retry_after=retry_after,
            )
        if code in _TRANSIENT or status >= 500:
            return RetryableError(f"{what} (HTTP {status}); retrying later.")
        if code in _BAD_IMAGE:
            return ImageError(f"{what}. Rekognition needs a PNG or JPEG within its size limits.")
        if code in _AMBIGUOUS:
            return self._ambiguous_error(image, code, what)
        if code in _AUTH or status in (401, 403):
            s3 = " and s3:GetObject on the bucket" if image.uri.startswith("s3://") else ""
            return FatalDetectorError(
                f"{self.name}: AWS refused the call ({code}: {message}). Check that the "
                f"credentials are current and that the identity may call rekognition:"
                f"{self.operation}{s3} in region {self.region}. Then run the same command "
                "again to resume."
            )
        if code in _MODEL:
            hint = ""
            if code == "ResourceNotReadyException":
                hint = (" The Custom Labels model is not running: start it with "
                        "`aws rekognition start-project-version` (billed per inference hour "
                        "while it runs) and wait until it is RUNNING.")
            elif code == "ResourceNotFoundException":
                hint = " Check the project version ARN and the region."
            return FatalDetectorError(f"{self.name}: {code}: {message}.{hint}")
        return DetectorError(f"{what} (HTTP {status})")

    def _ambiguous_error(self, image, code: str, what: str) -> DetectorError:
        with self._lock:
            if self._succeeded:
                return ImageError(what + self._ambiguous_hint(code))
            self._ambiguous[image.image_id] = what
            n = len(self._ambiguous)
        if n >= _AMBIGUOUS_LIMIT:
            return FatalDetectorError(
                f"{self.name}: the first {n} images all failed with {code} and none has "
                f"succeeded, so the configuration, not the images, is most likely at fault."
                f"{self._ambiguous_hint(code)} Last: {what}"
            )
        # Not recorded yet: once another image succeeds, a retry classifies it for good.
        # The wait lets the runner try other images first, so that either one succeeds
        # (and this retry is classified for good) or distinct images reach the limit.
        return RetryableError(what + " (retried: no image has succeeded yet in this run)",
                              retry_after=_AMBIGUOUS_RETRY_AFTER)

    def _ambiguous_hint(self, code: str) -> str:
        if code == "InvalidS3ObjectException":
            return (f" Check the object key, that the bucket is in region {self.region} "
                    "(Rekognition reads S3 only in its own region) and that the caller may "
                    "s3:GetObject it.")
        if self.operation == "DetectCustomLabels":
            return (" Check that the ARN is a Custom Labels project version (not another "
                    "feature type) and that the image is a valid PNG/JPEG of at least 64 px.")
        return " Rekognition rejects images smaller than 80 px on a side, among others."


class RekognitionFaces(_Rekognition):
    """Amazon Rekognition DetectFaces with every attribute (``Attributes=["ALL"]``).

    Parameters
    ----------
    model_version : str, optional
        DetectFaces reports none; default ``"DetectFaces-<UTC date>"`` (with a warning).
    region : str, optional
        AWS region; default from the standard chain (``AWS_DEFAULT_REGION``, the profile).
    profile : str, optional
        A named profile from ``~/.aws/config``.
    endpoint_url : str, optional
        Another endpoint (a VPC endpoint, or a local fake in tests).
    reencode : bool, default False
        Re-encode images that are not PNG/JPEG or larger than 5 MB (downscaling them
        until they fit). Off by default because it can change scores; when on, each
        re-encoded image's sizes are recorded in its raw response.
    sdk_attempts : int, default 2
        Calls botocore makes per image before handing a retryable error to the
        runner (which retries with its own backoff and rate limit).
    retry_mode : {"standard", "adaptive", "legacy"}, default "standard"
        botocore's retry mode.
    connect_timeout, read_timeout : float, default 10, 60
        Seconds.
    client : botocore client, optional
        A ready ``boto3.client("rekognition", ...)``; then ``region``, ``profile``,
        ``endpoint_url`` and the retry and timeout options are not used.

    Examples
    --------
    >>> det = RekognitionFaces(model_version="2026-11", region="eu-west-1")  # doctest: +SKIP
    >>> det.detect(image).results  # doctest: +SKIP
    """

    name = "rekognition-faces"
    operation = "DetectFaces"
    _version_note = "Rekognition DetectFaces reports no model version"
    response_key = "FaceDetails"
    labels = FACE_LABELS

    def __init__(self, *, model_version: str | None = None, **options: Any):
        common = {k: options.pop(k) for k in list(options) if k in self._COMMON_OPTIONS}
        _refuse_unknown(type(self).__name__, options, self._COMMON_OPTIONS)
        super().__init__(model_version=model_version, **common)

    def _request_settings(self) -> dict[str, Any]:
        return {"attributes": ["ALL"]}

    def _request_settings_api(self) -> dict[str, Any]:
        return {"Attributes": ["ALL"]}

    def _results(self, response: dict) -> list[Result]:
        return face_results(response.get("FaceDetails") or [])


_LABEL_VERSION = re.compile(r"^\d+(\.\d+)*$")


class RekognitionLabels(_Rekognition):
    """Amazon Rekognition DetectLabels, asking for every label (``MinConfidence=0``).

    Parameters
    ----------
    model_version : str, optional
        Default ``"DetectLabels-<UTC date>"`` (with a warning). Pass the
        ``LabelModelVersion`` (e.g. ``"3.0"``) to key runs by the service's own version;
        the run then stops if the service answers with another one.
    min_confidence : float, default 0
        The lowest the API allows; recorded as :attr:`detection_floor`.
    max_labels : int, optional
        Keep only this many labels per image (default: all the service returns).
    **options
        As for :class:`RekognitionFaces` (region, profile, reencode, ...).
    """

    name = "rekognition-labels"
    operation = "DetectLabels"
    _version_note = (
        "no --model-version was given (DetectLabels reports its LabelModelVersion only in "
        "responses; pass it, e.g. --model-version 3.0, to key runs by it)"
    )
    response_key = "Labels"
    labels = None  # thousands, and AWS adds more

    def __init__(
        self,
        *,
        model_version: str | None = None,
        min_confidence: float = 0.0,
        max_labels: int | None = None,
        **options: Any,
    ):
        common = {k: options.pop(k) for k in list(options) if k in self._COMMON_OPTIONS}
        _refuse_unknown(type(self).__name__, options,
                        ["min_confidence", "max_labels", *self._COMMON_OPTIONS])
        _check_limits(self.name, min_confidence, "max_labels", max_labels)
        self.min_confidence = float(min_confidence)
        self.max_labels = max_labels
        self.detection_floor = self.min_confidence
        super().__init__(model_version=model_version, **common)
        self._label_model_version: str | None = (
            self.model_version if _LABEL_VERSION.match(self.model_version) else None
        )

    def _request_settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {"min_confidence": self.min_confidence}
        if self.max_labels is not None:
            out["max_labels"] = self.max_labels
        return out

    def _request_settings_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {"MinConfidence": self.min_confidence}
        if self.max_labels is not None:
            out["MaxLabels"] = self.max_labels
        return out

    def _results(self, response: dict) -> list[Result]:
        version = response.get("LabelModelVersion")
        if version:
            with self._lock:
                expected = self._label_model_version
                if expected is None:
                    self._label_model_version = expected = str(version)
            if str(version) != expected:
                raise FatalDetectorError(
                    f"{self.name}: Rekognition answered with LabelModelVersion {version} but "
                    f"this run's scores are from {expected}. Scores of different versions "
                    f"must not share a curve: run again with --model-version {version} to "
                    "score the images with the new version as a separate run."
                )
        out = []
        for label in response.get("Labels") or []:
            if label.get("Name") and label.get("Confidence") is not None:
                out.append(Result(str(label["Name"]), float(label["Confidence"])))
        return out


class RekognitionCustomLabels(_Rekognition):
    """Amazon Rekognition Custom Labels (DetectCustomLabels) on a running model version.

    Parameters
    ----------
    project_version_arn : str
        The model version's ARN; it is also this detector's model version. May instead
        be given as ``model_version``.
    min_confidence : float, default 0
        0 returns every label regardless of the model's own thresholds; recorded as
        :attr:`detection_floor`.
    max_results : int, optional
        Keep only this many results per image (default: all).
    **options
        As for :class:`RekognitionFaces`. Images sent as bytes may be at most 4 MB.

    Notes
    -----
    The model must be started (``aws rekognition start-project-version``) and is billed
    per inference hour while it runs, whether or not it is called: stop it afterwards.
    """

    name = "rekognition-custom-labels"
    operation = "DetectCustomLabels"
    response_key = "CustomLabels"
    max_image_bytes = MAX_CUSTOM_LABELS_BYTES
    labels = None

    _ARN = re.compile(
        r"^arn:[a-z\d-]+:rekognition:[a-z\d-]+:\d{12}:"
        r"project/[\w.\-]{1,255}/version/[\w.\-]{1,255}/\d+$"
    )

    def __init__(
        self,
        *,
        project_version_arn: str | None = None,
        model_version: str | None = None,
        min_confidence: float = 0.0,
        max_results: int | None = None,
        **options: Any,
    ):
        common = {k: options.pop(k) for k in list(options) if k in self._COMMON_OPTIONS}
        _refuse_unknown(
            type(self).__name__, options,
            ["project_version_arn", "min_confidence", "max_results", *self._COMMON_OPTIONS],
        )
        if project_version_arn is None:
            project_version_arn = model_version
        elif model_version is not None and model_version != project_version_arn:
            raise InputError(
                f"{self.name}: the model version is the project version ARN; omit "
                f"--model-version (got {model_version!r} and ARN {project_version_arn!r})."
            )
        if not project_version_arn:
            raise InputError(
                f"{self.name} needs the model: --option project_version_arn=arn:aws:"
                "rekognition:REGION:ACCOUNT:project/NAME/version/VERSION/123 (see `aws "
                "rekognition describe-project-versions`)."
            )
        if not self._ARN.match(str(project_version_arn)):
            raise InputError(
                f"{self.name}: {project_version_arn!r} is not a project version ARN "
                "(arn:aws:rekognition:REGION:ACCOUNT:project/NAME/version/VERSION/123)."
            )
        _check_limits(self.name, min_confidence, "max_results", max_results)
        self.project_version_arn = str(project_version_arn)
        self.min_confidence = float(min_confidence)
        self.max_results = max_results
        self.detection_floor = self.min_confidence
        # The model lives in the ARN's region; calling another region finds nothing.
        arn_region = self.project_version_arn.split(":")[3]
        if common.get("region") not in (None, arn_region):
            raise InputError(
                f"{self.name}: the model is in region {arn_region} (from its ARN), not "
                f"{common['region']}; drop --option region or make them agree."
            )
        if "client" not in common:
            common["region"] = arn_region
        super().__init__(model_version=self.project_version_arn, **common)

    def _request_settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "project_version_arn": self.project_version_arn,
            "min_confidence": self.min_confidence,
        }
        if self.max_results is not None:
            out["max_results"] = self.max_results
        return out

    def _request_settings_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ProjectVersionArn": self.project_version_arn,
            "MinConfidence": self.min_confidence,
        }
        if self.max_results is not None:
            out["MaxResults"] = self.max_results
        return out

    def _results(self, response: dict) -> list[Result]:
        out = []
        for label in response.get("CustomLabels") or []:
            if label.get("Name") and label.get("Confidence") is not None:
                box = _ratio_box((label.get("Geometry") or {}).get("BoundingBox"))
                out.append(Result(str(label["Name"]), float(label["Confidence"]), box))
        return out
