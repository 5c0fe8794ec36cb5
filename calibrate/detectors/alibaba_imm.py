"""Alibaba Cloud Intelligent Media Management (IMM) face detection: DetectImageFaces.

Install with ``pip install 'calibrate[alibaba]'``. :class:`AlibabaImmFaces`
(``alibaba-imm-faces``) calls DetectImageFaces for images stored in OSS
(``oss://bucket/key`` URIs in the manifest; IMM reads them itself, so the bucket must
be in the project's region) and turns each face into results on IMM's 0-1 scale, with
its ``Boundary`` as a pixel box.

Label names
-----------
IMM reports attributes as a value plus the confidence in that value (``"Mask": "none",
"MaskConfidence": 0.72``). Following DESIGN.md ("attribute scores"), a label is scored
for something being *present*: ``c`` when IMM says it is, ``1 - c`` when IMM says it is
not.

* ``face``: ``FigureConfidence``.
* ``mouth_open``: ``c`` if ``Mouth`` is ``"open"``, else ``1 - c``.
* Presence labels ``beard``, ``hat``, ``mask``, ``glasses``, ``emotion``: ``c`` if the
  value is anything but ``"none"``, else ``1 - c`` (``emotion`` = "shows some
  emotion").
* Per-value labels for multi-valued attributes (Gender, Emotion, Mask, Glasses):
  ``gender:female``, ``gender:male``, ``emotion:happiness``, ``mask:<value>``,
  ``glasses:<value>``. The value IMM chose scores ``c``; every other *known* value of
  the attribute scores ``1 - c`` (the most probability left for it: an upper bound,
  since IMM reports only its top choice). Known values are the documented ones
  (gender: female, male) plus any the user adds with ``attribute_values``; a value
  never chosen for a face and not known gets no result on that face. ``"none"`` and a
  value equal to the attribute's name (``Mask: "mask"``) get no per-value label: the
  presence label already says it.

Values are lower-cased, spaces become ``_``. Each result carries its face's box, so the
image-level score of a label (the store's maximum over results) is the maximum over
faces; an image without faces has no result for any label.

Model version
-------------
IMM reports no model version; the version is what the user states, by default
``"DetectImageFaces-<UTC date of the run>"`` with a warning that the service can change
underneath.

Errors
------
Classified by ``code`` and ``status_code``, never by exception class: a 429
``Throttling.User`` usually arrives as ``ClientException`` (only an
``x-acs-retry-after`` header makes the SDK raise ``ThrottlingException``). Throttling,
5xx, timeouts, connection errors and unparseable responses raise
:class:`~calibrate.detectors.base.RetryableError` (the SDK itself retries nothing here:
only ``Config.retry_options`` would, and ``RuntimeOptions(autoretry=...)`` is ignored,
so the runner does all retrying). ``InvalidParameter``/``InvalidArgument`` and a missing
OSS object are per-image :class:`~calibrate.detectors.base.ImageError` (retried instead
while no image has succeeded yet, and a third such image stops the run: that pattern
means a wrong project, bucket or region). Credential, signature and permission errors
and a missing project stop the run (:class:`~calibrate.detectors.base.FatalDetectorError`).

Credentials come from the Alibaba Cloud credentials chain only
(``ALIBABA_CLOUD_ACCESS_KEY_ID`` / ``ALIBABA_CLOUD_ACCESS_KEY_SECRET`` /
``ALIBABA_CLOUD_SECURITY_TOKEN``, OIDC, ``~/.aliyun/config.json`` or
``~/.alibabacloud/credentials.ini`` profiles, the ECS RAM role); they are never options
and never recorded. The credentials package reads these environment variables once, when
it is imported: set them before starting Python.
"""

from __future__ import annotations

import re
import threading
import warnings
from collections.abc import Mapping
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

__all__ = ["KNOWN_VALUES", "AlibabaImmFaces", "imm_face_results"]

#: IMM's scale: attribute scores are ``c`` or ``SCALE - c``.
SCALE = 1.0

#: Documented values of multi-valued attributes, whose unchosen values score ``1 - c``.
KNOWN_VALUES: dict[str, tuple[str, ...]] = {"gender": ("female", "male")}

# (response field, label stem); presence = value is not "none".
_PRESENCE = (("Beard", "beard"), ("Hat", "hat"), ("Mask", "mask"), ("Glasses", "glasses"),
             ("Emotion", "emotion"))
_MULTI_VALUED = (("Gender", "gender"), ("Emotion", "emotion"), ("Mask", "mask"),
                 ("Glasses", "glasses"))

_THROTTLING_CODES = frozenset({
    "Throttling", "Throttling.User", "Throttling.Api", "Throttling.Resource",
    "QpsLimitExceeded", "RequestThrottled", "Busy",
})
_TRANSIENT_CODES = frozenset({"ServiceUnavailable", "InternalError", "InternalServerError"})
_AUTH_PREFIXES = (
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidSecurityToken", "Forbidden",
    "NoPermission", "InvalidCredentials", "IncompleteSignature", "InvalidTimeStamp",
    "AccessDenied", "InvalidAuthorization", "MissingSecurityToken", "Unauthorized",
    "InvalidApi.NotPurchase", "NotActivated",
)
_CONFIG_CODES = frozenset({
    "InvalidProject", "ProjectNotFound",
    "InvalidParameter.ProjectName", "InvalidAction", "InvalidVersion", "UnsupportedOperation",
    "ParameterMissing",
})
_IMAGE_PREFIXES = (
    "InvalidParameter", "InvalidArgument", "InvalidFile", "InvalidImage", "ImageTooLarge",
    "InvalidSourceURI", "ResourceNotFound", "NoSuchKey", "FileNotFound", "InvalidObject",
)
_CREDENTIAL_OPTION = re.compile(
    r"access_?key|secret|security_?token|credential|password", re.IGNORECASE
)
_AMBIGUOUS_LIMIT = 3
_AMBIGUOUS_RETRY_AFTER = 1.0  # seconds


def _norm(value: Any) -> str:
    return re.sub(r"\s+", "_", str(value).strip().lower())


def imm_face_results(faces: list[Mapping[str, Any]],
                     known_values: Mapping[str, tuple[str, ...]] | None = None) -> list[Result]:
    """Results for DetectImageFaces' ``Faces``, following the label convention above.

    Parameters
    ----------
    faces : list of dict
        ``response.body.to_map()["Faces"]`` (IMM's field names).
    known_values : dict, optional
        Attribute stem -> known values; default :data:`KNOWN_VALUES`.

    Returns
    -------
    list of Result
        Scores on IMM's 0-1 scale, each with its face's pixel box.

    Examples
    --------
    >>> rs = imm_face_results([{"FigureConfidence": 0.998, "Mask": "none", "MaskConfidence": 0.72,
    ...                         "Gender": "male", "GenderConfidence": 0.9}])
    >>> [(r.label, round(r.score, 3)) for r in rs]
    [('face', 0.998), ('mask', 0.28), ('gender:male', 0.9), ('gender:female', 0.1)]
    """
    known = KNOWN_VALUES if known_values is None else known_values
    out: list[Result] = []
    for face in faces:
        box = _pixel_box(face.get("Boundary"))
        scores: list[tuple[str, float]] = []
        if face.get("FigureConfidence") is not None:
            scores.append(("face", float(face["FigureConfidence"])))
        got = _value_and_confidence(face, "Mouth")
        if got:
            scores.append(("mouth_open", got[1] if got[0] == "open" else SCALE - got[1]))
        for field, stem in _PRESENCE:
            got = _value_and_confidence(face, field)
            if got:
                scores.append((stem, got[1] if got[0] != "none" else SCALE - got[1]))
        for field, stem in _MULTI_VALUED:
            got = _value_and_confidence(face, field)
            if not got:
                continue
            chosen, c = got
            for v in dict.fromkeys([chosen, *known.get(stem, ())]):
                if v not in ("none", stem):
                    scores.append((f"{stem}:{v}", c if v == chosen else SCALE - c))
        out.extend(Result(label, score, box) for label, score in scores)
    return out


def _value_and_confidence(face: Mapping[str, Any], field: str) -> tuple[str, float] | None:
    """``(normalised value, confidence)`` of an attribute, or None when either is missing."""
    value, conf = face.get(field), face.get(field + "Confidence")
    if value is None or conf is None or str(value).strip() == "":
        return None
    return _norm(value), float(conf)


def _pixel_box(b: Mapping[str, Any] | None) -> Box | None:
    if not b:
        return None
    try:
        left, top = float(b["Left"]), float(b["Top"])
        return Box(left, top, left + float(b["Width"]), top + float(b["Height"]), unit="pixel")
    except (KeyError, TypeError, ValueError):
        return None


class AlibabaImmFaces(StartGuardMixin):
    """Alibaba Cloud IMM DetectImageFaces for images in OSS.

    Parameters
    ----------
    project : str
        The IMM project (created in the IMM console or with CreateProject); its region
        must hold the OSS bucket.
    region : str, optional
        e.g. ``"cn-beijing"``, ``"ap-southeast-1"``. Required unless ``endpoint`` is given.
    endpoint : str, optional
        Host (and port) only, e.g. ``"imm-vpc.cn-beijing.aliyuncs.com"``; default
        ``imm.<region>.aliyuncs.com``. A full URL would be sent verbatim as the Host
        header, so it is refused.
    protocol : {"https", "http"}, default "https"
    model_version : str, optional
        IMM reports none; default ``"DetectImageFaces-<UTC date>"`` (with a warning).
    read_timeout, connect_timeout : float, default 60, 10
        Seconds (the SDK wants milliseconds; converted here).
    attribute_values : dict, optional
        Extra known values per attribute stem, e.g. ``{"emotion": ["happiness",
        "sadness"]}``: each known value gets a result on every face (``1 - c`` when
        IMM chose another). Recorded with the run.
    client : alibabacloud_imm20200930.client.Client, optional
        A ready client; then region, endpoint, protocol and timeouts are not used.

    Examples
    --------
    >>> det = AlibabaImmFaces(project="qc-faces", region="cn-beijing")  # doctest: +SKIP
    """

    name = "alibaba-imm-faces"
    operation = "DetectImageFaces"
    billable = True
    kind = "io"
    detection_floor = None

    _OPTIONS = ("project", "region", "endpoint", "protocol", "read_timeout", "connect_timeout",
                "attribute_values", "client")

    def __init__(
        self,
        *,
        project: str | None = None,
        region: str | None = None,
        endpoint: str | None = None,
        protocol: str = "https",
        model_version: str | None = None,
        read_timeout: float = 60.0,
        connect_timeout: float = 10.0,
        attribute_values: Mapping[str, Any] | None = None,
        client: Any = None,
        **unknown: Any,
    ):
        if unknown:
            secret = sorted(k for k in unknown if _CREDENTIAL_OPTION.search(k))
            if secret:
                raise InputError(
                    f"{self.name}: credentials are not accepted as options "
                    f"({', '.join(secret)}): they would end up in shell history and run "
                    "records. Set ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET "
                    "(and ALIBABA_CLOUD_SECURITY_TOKEN for STS) in the environment, or use a "
                    "profile in ~/.aliyun/config.json or an ECS RAM role."
                )
            raise InputError(
                f"{self.name}: unknown option(s) {', '.join(sorted(unknown))}. Known options: "
                f"{', '.join(self._OPTIONS)}."
            )
        if project is not None and not isinstance(project, str):
            raise InputError(
                f"{self.name}: project must be a name, got {project!r}; quote it: "
                f"--option 'project=\"{project}\"'."
            )
        if not project:
            raise InputError(
                f"{self.name} needs the IMM project: --option project=NAME (create one in the "
                "IMM console in the region of your OSS bucket)."
            )
        if protocol not in ("https", "http"):
            raise InputError(f"{self.name}: protocol must be https or http, got {protocol!r}.")
        if endpoint is not None and "://" in str(endpoint):
            raise InputError(
                f"{self.name}: endpoint must be a host[:port] such as "
                f"imm.cn-beijing.aliyuncs.com, not a URL ({endpoint!r}); use --option "
                "protocol=http|https for the scheme."
            )
        if client is None and not region and not endpoint:
            raise InputError(
                f"{self.name} needs a region: --option region=cn-beijing (the region of the "
                "IMM project and its OSS bucket), or --option endpoint=HOST."
            )
        for what, value in (("read_timeout", read_timeout), ("connect_timeout", connect_timeout)):
            if not isinstance(value, (int, float)) or not value > 0:
                raise InputError(f"{self.name}: {what} must be positive seconds, got {value!r}.")
        known = {k: tuple(v) for k, v in KNOWN_VALUES.items()}
        if attribute_values is not None:
            if not isinstance(attribute_values, Mapping):
                raise InputError(
                    f"{self.name}: attribute_values must be a JSON object such as "
                    f'{{"emotion": ["happiness", "sadness"]}}, got {attribute_values!r}.'
                )
            for stem, values in attribute_values.items():
                if isinstance(values, str) or not all(isinstance(v, str) for v in values):
                    raise InputError(
                        f"{self.name}: attribute_values[{stem!r}] must be a list of strings."
                    )
                merged = [*known.get(_norm(stem), ()), *map(_norm, values)]
                known[_norm(stem)] = tuple(dict.fromkeys(merged))
        self.project = project
        self.region = region
        self.endpoint = endpoint
        self.protocol = protocol
        self.read_timeout = float(read_timeout)
        self.connect_timeout = float(connect_timeout)
        self.known_values = known
        self._version_stated = model_version is not None
        if model_version is None:
            model_version = f"{self.operation}-{datetime.now(timezone.utc).date().isoformat()}"
            warnings.warn(
                f"{self.name}: IMM reports no model version, so this run records "
                f"{model_version!r} (the API and today's UTC date). Alibaba Cloud can change "
                "the model behind the API without notice; dated versions keep runs of "
                "different days apart. To resume this run on a later day, pass "
                f"--model-version {model_version}.",
                CalibrateWarning,
                stacklevel=2,
            )
        self.model_version = model_version
        self.labels = (
            "face", "mouth_open", *(stem for _, stem in _PRESENCE),
            *(f"{stem}:{v}" for stem, values in known.items() for v in values
              if v not in ("none", stem)),
        )
        self._lock = threading.Lock()
        self._succeeded = 0
        self._ambiguous: dict[str, str] = {}
        self.client = client if client is not None else self._make_client()

    def _make_client(self):
        try:
            from alibabacloud_credentials.client import Client as CredentialClient
            from alibabacloud_imm20200930.client import Client

            try:  # alibabacloud-tea-openapi >= 0.4 (the darabonba generation)
                from alibabacloud_tea_openapi import utils_models as open_api_models
            except ImportError:  # older SDKs
                from alibabacloud_tea_openapi import models as open_api_models
        except ImportError:
            raise InputError(
                f"{self.name} needs the IMM SDK: pip install 'calibrate[alibaba]'."
            ) from None
        config = open_api_models.Config(
            # The default chain: environment variables, OIDC, CLI/profile files, ECS RAM
            # role. Nothing of it is kept on this object or in settings().
            credential=CredentialClient(),
            region_id=self.region,
            endpoint=self.endpoint,
            protocol=self.protocol,
            read_timeout=int(self.read_timeout * 1000),  # the SDK counts milliseconds
            connect_timeout=int(self.connect_timeout * 1000),
            user_agent="calibrate",
        )
        try:
            return Client(config)
        except Exception as exc:  # noqa: BLE001 - the SDK raises plain exceptions here
            raise FatalDetectorError(f"{self.name}: cannot create the IMM client: {exc}") from None

    # -- protocol ----------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        """Settings that affect scores or cost (recorded with the run; no credentials)."""
        out: dict[str, Any] = {
            "operation": self.operation,
            "project": self.project,
            "region": self.region,
            "protocol": self.protocol,
            "read_timeout": self.read_timeout,
            "connect_timeout": self.connect_timeout,
            "attribute_values": {k: list(v) for k, v in self.known_values.items()},
            "model_version_stated": self._version_stated,
        }
        if self.endpoint:
            out["endpoint"] = self.endpoint
        return out

    def detect(self, image) -> Detection:
        """Call DetectImageFaces for one ``oss://`` image; see the module docstring."""
        uri = image.uri
        if not uri.startswith("oss://"):
            raise FatalDetectorError(
                f"{self.name}: image {image.image_id!r} is {uri}; IMM reads images only from "
                "OSS. Upload the images to a bucket in the project's region and list them "
                "as oss://bucket/key in the manifest."
            )
        from alibabacloud_imm20200930 import models as imm_models

        try:  # alibabacloud-imm20200930 >= 5
            from darabonba.runtime import RuntimeOptions
        except ImportError:  # older SDKs
            from alibabacloud_tea_util.models import RuntimeOptions

        request = imm_models.DetectImageFacesRequest(project_name=self.project, source_uri=uri)
        try:
            response = self.client.detect_image_faces_with_options(request, RuntimeOptions())
        except Exception as exc:  # noqa: BLE001 - classified below, by code, not class
            raise self._classify(image, exc) from None
        body = getattr(response, "body", None)
        raw = body.to_map() if body is not None else None
        if not isinstance(raw, dict) or "Faces" not in raw:
            raise RetryableError(
                f"DetectImageFaces answered without Faces for image {image.image_id!r} "
                "(truncated or malformed response); retrying."
            )
        with self._lock:
            self._succeeded += 1
        return Detection(imm_face_results(raw["Faces"], self.known_values), raw)

    # -- errors ------------------------------------------------------------------------

    def _classify(self, image, exc: Exception) -> DetectorError:
        inner = getattr(exc, "inner_exception", None)
        if inner is not None:  # the SDK wraps non-HTTP failures in UnretryableException
            exc = inner
        try:
            from alibabacloud_credentials.exceptions import CredentialException
        except ImportError:  # pragma: no cover - installed with the SDK
            CredentialException = ()
        if isinstance(exc, CredentialException):
            return FatalDetectorError(
                f"{self.name}: no usable Alibaba Cloud credentials ({exc.message}). Set "
                "ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET (a RAM user's "
                "key with imm:DetectImageFaces), or configure a profile or RAM role; then run "
                "the same command again to resume."
            )
        code = str(getattr(exc, "code", None) or "")
        status = getattr(exc, "status_code", None) or getattr(exc, "statusCode", None)
        if status is None:
            data = getattr(exc, "data", None)
            status = data.get("statusCode") if isinstance(data, dict) else None
        try:
            status = int(status) if status is not None else None
        except (TypeError, ValueError):
            status = None
        message = str(getattr(exc, "message", None) or exc)
        what = (f"DetectImageFaces for image {image.image_id!r}: "
                f"{code or type(exc).__name__}: {message}")
        if status is None and code in ("", "None"):
            # No HTTP answer at all: timeouts, resets, refused connections, bad JSON.
            return RetryableError(f"{what}; retrying later.")
        if status == 429 or code in _THROTTLING_CODES or code.startswith("Throttling"):
            retry_after = getattr(exc, "retry_after", None)
            return RetryableError(
                f"{what}. calibrate retries it later; if this is frequent, lower --concurrency "
                "or set --rate-limit to the project's QPS quota.",
                retry_after=retry_after / 1000 if retry_after else None,  # SDK: milliseconds
            )
        if (status is not None and status >= 500) or code in _TRANSIENT_CODES:
            return RetryableError(f"{what} (HTTP {status}); retrying later.")
        if code == "InvalidCredentials" or code.startswith(_AUTH_PREFIXES) or status in (401, 403):
            return FatalDetectorError(
                f"{self.name}: Alibaba Cloud refused the call ({code}: {message}). Check the "
                "AccessKey in ALIBABA_CLOUD_ACCESS_KEY_ID/ALIBABA_CLOUD_ACCESS_KEY_SECRET (or "
                "your profile), that the RAM identity may call imm:DetectImageFaces on project "
                f"{self.project!r}, that the project's role may read the OSS bucket, and the "
                "system clock. Then run the same command again to resume."
            )
        no_project = code.startswith("ResourceNotFound") and "project" in message.lower()
        # IMM names missing parameters Missing{ParameterName}: a configuration error.
        if code in _CONFIG_CODES or code.startswith("Missing") or no_project:
            return FatalDetectorError(
                f"{self.name}: {code}: {message}. Check --option project={self.project} and "
                f"that it exists in region {self.region or self.endpoint}."
            )
        if code.startswith(_IMAGE_PREFIXES) or status == 404:
            return self._ambiguous_error(image, code, what)
        return DetectorError(f"{what} (HTTP {status})")

    def _ambiguous_error(self, image, code: str, what: str) -> DetectorError:
        hint = (f" Check that the object exists and is a supported image, and that the OSS "
                f"bucket is in the project's region ({self.region or self.endpoint}).")
        with self._lock:
            if self._succeeded:
                return ImageError(what + hint)
            self._ambiguous[image.image_id] = what
            n = len(self._ambiguous)
        if n >= _AMBIGUOUS_LIMIT:
            return FatalDetectorError(
                f"{self.name}: the first {n} images all failed with {code} and none has "
                f"succeeded, so the project, bucket or region, not the images, is most likely "
                f"at fault.{hint} Last: {what}"
            )
        # The wait lets the runner try other images first, so that either one succeeds
        # (and this retry is classified for good) or distinct images reach the limit.
        return RetryableError(what + " (retried: no image has succeeded yet in this run)",
                              retry_after=_AMBIGUOUS_RETRY_AFTER)
