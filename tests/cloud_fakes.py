"""Local stand-ins for the cloud detection APIs, speaking their real wire protocols.

The real SDK clients (boto3, the Alibaba Cloud tea client) are pointed at these servers
on 127.0.0.1, so the tests exercise the SDKs' own serialisation, signing, error parsing
and retries without any network access.

Each fake answers per *image key* from a scripted plan: ``fake.plan(key, "throttle",
"throttle")`` makes the first two calls for that image fail with throttling and later
calls succeed. Behaviours are strings (see ``RekognitionFake.BEHAVIOURS`` and
``ImmFake.BEHAVIOURS``); ``"slow:1.5"`` waits 1.5 s and then succeeds. Every request is
logged in ``fake.requests`` so tests can count calls per image.

Keys: for Rekognition the S3 object name, or :func:`bytes_key` of the image bytes sent;
for IMM the ``SourceURI``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
import uuid
from collections import defaultdict, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlparse

PROXY_VARIABLES = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)


def clear_proxies(monkeypatch) -> None:
    """The tea client sends even 127.0.0.1 through HTTP_PROXY (it ignores NO_PROXY)."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def bytes_key(data: bytes) -> str:
    """The key the Rekognition fake uses for an image sent as bytes."""
    return "sha1:" + hashlib.sha1(data).hexdigest()


def _unit(key: str, salt: str) -> float:
    """A deterministic number in [0, 1) per (image, purpose), so scores differ by image."""
    h = hashlib.sha256(f"{key}|{salt}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


@dataclass
class Logged:
    """One request the fake received."""

    key: str
    target: str
    headers: dict[str, str]
    body: Any
    behaviour: str
    at: float = field(default_factory=time.monotonic)


class _FakeServer:
    """A threaded HTTP server on 127.0.0.1 (port 0) with per-key scripted behaviours."""

    BEHAVIOURS: tuple[str, ...] = ()

    def __init__(self) -> None:
        self._plans: dict[str, deque[str]] = defaultdict(deque)
        self._lock = threading.Lock()
        self.default = "ok"
        self.requests: list[Logged] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                fake._handle(self)

            def log_message(self, *args):  # keep pytest output clean
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        # A short poll interval: shutdown() waits for it, once per test.
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), daemon=True
        )

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    # -- scripting ---------------------------------------------------------------------

    def plan(self, key: str, *behaviours: str) -> None:
        """Answer the next calls for ``key`` with these behaviours, then the default."""
        for b in behaviours:
            if b.split(":")[0] not in self.BEHAVIOURS:
                raise ValueError(f"unknown behaviour {b!r}; known: {self.BEHAVIOURS}")
        with self._lock:
            self._plans[key].extend(behaviours)

    def _next(self, key: str) -> str:
        with self._lock:
            q = self._plans.get(key)
            return q.popleft() if q else self.default

    def calls_for(self, key: str) -> int:
        return sum(1 for r in self.requests if r.key == key)

    # -- HTTP --------------------------------------------------------------------------

    def _send(
        self,
        h: BaseHTTPRequestHandler,
        status: int,
        body: bytes | str,
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ):
        if isinstance(body, str):
            body = body.encode()
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        try:
            h.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            pass

    def _handle(self, h: BaseHTTPRequestHandler) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


# ---------------------------------------------------------------------------------------
# Amazon Rekognition: JSON 1.1 protocol, X-Amz-Target: RekognitionService.<Operation>
# ---------------------------------------------------------------------------------------

_EMOTIONS = (
    "HAPPY",
    "SAD",
    "ANGRY",
    "CONFUSED",
    "DISGUSTED",
    "SURPRISED",
    "CALM",
    "UNKNOWN",
    "FEAR",
)
_BOOLEAN_ATTRIBUTES = (
    "Smile",
    "Eyeglasses",
    "Sunglasses",
    "Beard",
    "Mustache",
    "EyesOpen",
    "MouthOpen",
    "FaceOccluded",
)


def rekognition_face(key: str, i: int) -> dict:
    """One FaceDetail as DetectFaces returns it with Attributes=["ALL"] (seed sample shape)."""
    def u(salt: str) -> float:
        return _unit(key, f"{i}:{salt}")

    face = {
        "BoundingBox": {
            "Width": 0.2 + 0.1 * u("w"),
            "Height": 0.25,
            "Left": 0.1 + 0.3 * i,
            "Top": 0.3,
        },
        "AgeRange": {"Low": 25, "High": 35},
        "Gender": {"Value": "Female" if u("g") < 0.5 else "Male", "Confidence": 50 + 50 * u("gc")},
        "Emotions": [{"Type": t, "Confidence": 100 * u(t)} for t in _EMOTIONS],
        "Landmarks": [
            {"Type": "eyeLeft", "X": 0.64, "Y": 0.41},
            {"Type": "eyeRight", "X": 0.73, "Y": 0.41},
            {"Type": "mouthDown", "X": 0.63, "Y": 0.47},
        ],
        "Pose": {"Roll": 0.99, "Yaw": 13.7, "Pitch": 4.05},
        "Quality": {"Brightness": 37.6, "Sharpness": 80.0},
        "Confidence": 90 + 10 * u("face"),
        "EyeDirection": {"Yaw": 1.0, "Pitch": -2.0, "Confidence": 99.0},
    }
    for name in _BOOLEAN_ATTRIBUTES:
        face[name] = {"Value": u(name + "v") < 0.5, "Confidence": 50 + 50 * u(name)}
    return face


class RekognitionFake(_FakeServer):
    """Rekognition's JSON protocol: DetectFaces, DetectLabels, DetectCustomLabels.

    ``faces[key]`` sets how many faces an image has (default 1).
    """

    BEHAVIOURS = (
        "ok",
        "throttle",
        "provisioned",
        "5xx",
        "malformed",
        "slow",
        "bad_format",
        "too_large",
        "s3_missing",
        "denied",
        "unrecognized",
        "expired",
        "not_ready",
        "invalid_parameter",
        "label_version",
    )
    _ERRORS: ClassVar[dict[str, tuple[int, str, str]]] = {
        "throttle": (400, "ThrottlingException", "Slow down."),
        "provisioned": (
            400,
            "ProvisionedThroughputExceededException",
            "Provisioned rate exceeded.",
        ),
        "5xx": (500, "InternalServerError", "Internal server error."),
        "bad_format": (400, "InvalidImageFormatException", "Request has unsupported image format"),
        "too_large": (400, "ImageTooLargeException", "Image size is too large."),
        "s3_missing": (
            400,
            "InvalidS3ObjectException",
            (
                "Unable to get object metadata from S3. Check object key, region and/or access "
                "permissions."
            ),
        ),
        "denied": (
            400,
            "AccessDeniedException",
            "User is not authorized to perform: rekognition:DetectFaces",
        ),
        "unrecognized": (
            400,
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        ),
        "expired": (
            400,
            "ExpiredTokenException",
            "The security token included in the request is expired",
        ),
        "not_ready": (400, "ResourceNotReadyException", "The requested resource isn't ready."),
        "invalid_parameter": (400, "InvalidParameterException", "Request has invalid parameters"),
    }

    def __init__(self) -> None:
        super().__init__()
        self.faces: dict[str, int] = {}
        self.label_model_version = "3.0"

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        raw = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        target = h.headers.get("X-Amz-Target", "")
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        image = body.get("Image") or {}
        if "S3Object" in image:
            key = image["S3Object"]["Name"]
        else:
            key = bytes_key(base64.b64decode(image.get("Bytes", "")))
        behaviour = self._next(key)
        self.requests.append(Logged(key, target, dict(h.headers), body, behaviour))
        kind, _, arg = behaviour.partition(":")
        request_id = str(uuid.uuid4())
        if kind == "slow":
            time.sleep(float(arg or 2.0))
            kind = "ok"
        if kind in self._ERRORS:
            status, code, message = self._ERRORS[kind]
            self._send(
                h,
                status,
                json.dumps({"__type": code, "message": message}),
                {"x-amzn-RequestId": request_id},
                "application/x-amz-json-1.1",
            )
            return
        if kind == "malformed":
            self._send(
                h,
                200,
                b'{"FaceDetails": [{"Confidence": 9',
                {"x-amzn-RequestId": request_id},
                "application/x-amz-json-1.1",
            )
            return
        op = target.rpartition(".")[2]
        if op == "DetectFaces":
            n = self.faces.get(key, 1)
            payload = {
                "FaceDetails": [rekognition_face(key, i) for i in range(n)],
                "OrientationCorrection": "ROTATE_0",
            }
        elif op == "DetectLabels":
            version = "3.1" if kind == "label_version" else self.label_model_version
            payload = {
                "Labels": [
                    {
                        "Name": "Person",
                        "Confidence": 60 + 40 * _unit(key, "person"),
                        "Parents": [],
                        "Aliases": [],
                        "Categories": [{"Name": "Person Description"}],
                        "Instances": [
                            {
                                "BoundingBox": {
                                    "Width": 0.2,
                                    "Height": 0.5,
                                    "Left": 0.1,
                                    "Top": 0.2,
                                },
                                "Confidence": 55 + 40 * _unit(key, "person"),
                            }
                        ],
                    },
                    {
                        "Name": "Helmet",
                        "Confidence": 100 * _unit(key, "helmet"),
                        "Parents": [],
                        "Instances": [],
                        "Aliases": [],
                        "Categories": [],
                    },
                ],
                "LabelModelVersion": version,
            }
        elif op == "DetectCustomLabels":
            payload = {
                "CustomLabels": [
                    {
                        "Name": "scratch",
                        "Confidence": 100 * _unit(key, "scratch"),
                        "Geometry": {
                            "BoundingBox": {"Width": 0.1, "Height": 0.1, "Left": 0.5, "Top": 0.5}
                        },
                    },
                    {
                        "Name": "scratch",
                        "Confidence": 50 * _unit(key, "scratch2"),
                        "Geometry": {
                            "BoundingBox": {"Width": 0.05, "Height": 0.1, "Left": 0.1, "Top": 0.1}
                        },
                    },
                    {"Name": "good", "Confidence": 100 * _unit(key, "good")},
                ]
            }
        else:
            self._send(
                h,
                400,
                json.dumps({"__type": "UnknownOperationException", "message": op}),
                content_type="application/x-amz-json-1.1",
            )
            return
        self._send(
            h,
            200,
            json.dumps(payload),
            {"x-amzn-RequestId": request_id},
            "application/x-amz-json-1.1",
        )


# ---------------------------------------------------------------------------------------
# Alibaba Cloud IMM: RPC style, POST with every parameter in the query string
# ---------------------------------------------------------------------------------------


def imm_face(key: str, i: int) -> dict:
    """One face as DetectImageFaces returns it (the seed sample's shape)."""
    def u(salt: str) -> float:
        return _unit(key, f"{i}:{salt}")

    return {
        "Beard": "beard" if u("b") < 0.3 else "none",
        "BeardConfidence": round(0.5 + 0.5 * u("bc"), 3),
        "MaskConfidence": round(0.5 + 0.5 * u("mc"), 3),
        "Mask": "mask" if u("m") < 0.4 else "none",
        "Gender": "female" if u("g") < 0.5 else "male",
        "GenderConfidence": round(0.5 + 0.5 * u("gc"), 3),
        "Boundary": {"Left": 40 + 60 * i, "Top": 100, "Height": 19, "Width": 17},
        "FigureId": str(uuid.UUID(int=int(u("id") * 2**64))),
        "Mouth": "open" if u("mo") < 0.5 else "close",
        "MouthConfidence": round(0.5 + 0.5 * u("moc"), 3),
        "Emotion": "happiness" if u("e") < 0.5 else "none",
        "EmotionConfidence": round(0.5 + 0.5 * u("ec"), 3),
        "Age": 36,
        "AgeSD": 8,
        "FigureType": "face",
        "HeadPose": {"Pitch": -9.386, "Roll": -3.478, "Yaw": 14.624},
        "HatConfidence": round(0.5 + 0.5 * u("hc"), 3),
        "Hat": "none",
        "GlassesConfidence": round(0.5 + 0.5 * u("glc"), 3),
        "Glasses": "glasses" if u("gl") < 0.3 else "none",
        "Sharpness": 0.4,
        "FigureClusterId": "figure-cluster-id-unavailable",
        "FaceQuality": 0.3,
        "Attractive": 0.01,
        "FigureConfidence": round(0.9 + 0.1 * u("f"), 3),
    }


class ImmFake(_FakeServer):
    """IMM's RPC protocol for DetectImageFaces (``x-acs-action`` header, query parameters).

    ``faces[key]`` sets how many faces an image has (default 2).
    """

    BEHAVIOURS = (
        "ok",
        "throttle",
        "throttle_retry_after",
        "5xx",
        "malformed",
        "slow",
        "bad_image",
        "auth",
        "forbidden",
        "no_project",
        "not_found",
    )
    _ERRORS: ClassVar[dict[str, tuple[int, str, str]]] = {
        "throttle": (429, "Throttling.User", "Request was denied due to user flow control."),
        "throttle_retry_after": (
            429,
            "Throttling.User",
            "Request was denied due to user flow control.",
        ),
        "5xx": (
            503,
            "ServiceUnavailable",
            "The request has failed due to a temporary failure of the server.",
        ),
        "bad_image": (400, "InvalidParameter", "The image format is not supported: oss://bucket/x"),
        "auth": (404, "InvalidAccessKeyId.NotFound", "Specified access key is not found."),
        "forbidden": (
            403,
            "Forbidden.RAM",
            "User not authorized to operate on the specified resource.",
        ),
        "no_project": (404, "ResourceNotFound", "The specified resource project is not found."),
        "not_found": (404, "ResourceNotFound", "The specified resource oss object is not found."),
    }

    def __init__(self) -> None:
        super().__init__()
        self.faces: dict[str, int] = {}

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        query = {k: v[0] for k, v in parse_qs(urlparse(h.path).query).items()}
        action = h.headers.get("x-acs-action", "")
        key = query.get("SourceURI", "")
        behaviour = self._next(key)
        self.requests.append(
            Logged(key, action, dict(h.headers), {"query": query, "body": body}, behaviour)
        )
        kind, _, arg = behaviour.partition(":")
        request_id = str(uuid.uuid4()).upper()
        if kind == "slow":
            time.sleep(float(arg or 2.0))
            kind = "ok"
        if kind in self._ERRORS:
            status, code, message = self._ERRORS[kind]
            headers = {"x-acs-request-id": request_id}
            if kind == "throttle_retry_after":
                headers["x-acs-retry-after"] = "20"  # milliseconds
            self._send(
                h,
                status,
                json.dumps(
                    {
                        "RequestId": request_id,
                        "Code": code,
                        "Message": message,
                        "HostId": "imm.cn-beijing.aliyuncs.com",
                    }
                ),
                headers,
            )
            return
        if kind == "malformed":
            self._send(h, 200, b'{"RequestId": "x", "Faces": [{"Beard": ')
            return
        if action != "DetectImageFaces" or "ProjectName" not in query:
            self._send(
                h,
                400,
                json.dumps(
                    {
                        "RequestId": request_id,
                        "Code": "MissingParameter",
                        "Message": f"action {action!r}, query {sorted(query)}",
                    }
                ),
            )
            return
        n = self.faces.get(key, 2)
        payload = {"RequestId": request_id, "Faces": [imm_face(key, i) for i in range(n)]}
        self._send(h, 200, json.dumps(payload), {"x-acs-request-id": request_id})


# ---------------------------------------------------------------------------------------
# Test data helpers
# ---------------------------------------------------------------------------------------


def write_png(path, seed: int, size: tuple[int, int] = (16, 16)) -> bytes:
    """A small distinct PNG (noise from ``seed``); returns its bytes."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    with open(path, "rb") as fh:
        return fh.read()


def write_manifest(folder, records: list[dict]) -> Any:
    """A JSONL manifest in ``folder`` with one ``{"id", "image", "labels"}`` per record."""
    from pathlib import Path

    path = Path(folder) / "manifest.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def stored_text(store_path) -> bytes:
    """Everything a store file holds that a leaked secret could hide in.

    The raw bytes of the DuckDB file, plus every raw response decompressed (they are
    stored zlib-compressed, so a secret in them would not show in the file bytes) and
    every run's settings.
    """
    import zlib

    import duckdb

    with open(store_path, "rb") as fh:
        data = fh.read()
    con = duckdb.connect(str(store_path), read_only=True)
    try:
        for (blob,) in con.execute("SELECT response FROM raw_responses").fetchall():
            data += zlib.decompress(bytes(blob))
        for (settings,) in con.execute("SELECT settings FROM runs").fetchall():
            data += (settings or "").encode()
    finally:
        con.close()
    return data
