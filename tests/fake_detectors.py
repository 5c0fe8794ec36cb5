"""Small detectors for runner tests; importable as plugins (tests.fake_detectors:NAME)."""

from __future__ import annotations

import threading
import time
import zlib

from calibrate.detectors.base import (
    Detection,
    FatalDetectorError,
    ImageError,
    Result,
    RetryableError,
)


class Hash:
    """Deterministic score from the image bytes; optional fixed latency."""

    name = "hash"
    labels = ("defect",)
    kind = "io"
    detection_floor = None

    def __init__(self, model_version: str = "h1", latency: float = 0.0, **_):
        self.model_version = model_version
        self.latency = float(latency)
        self.calls = 0
        self._lock = threading.Lock()

    def __getstate__(self):  # picklable for Ray actors (and spawned pool workers)
        return {k: v for k, v in self.__dict__.items() if k != "_lock"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def settings(self):
        return {"latency": self.latency, "api_key": "SECRET-DO-NOT-STORE"}

    def detect(self, image):
        with self._lock:
            self.calls += 1
        if self.latency:
            time.sleep(self.latency)
        data = image.read_bytes()
        score = (zlib.crc32(data) % 1000) / 1000
        results = [Result("defect", score)] if score > 0.1 else []  # some "no result"
        return Detection(results, raw={"crc": zlib.crc32(data)})


class Flaky(Hash):
    """Fails with a retryable error the first ``failures`` calls per image."""

    name = "flaky"

    def __init__(self, failures: int = 2, **kw):
        super().__init__(**kw)
        self.failures = failures
        self.seen: dict[str, int] = {}

    def detect(self, image):
        with self._lock:
            n = self.seen[image.image_id] = self.seen.get(image.image_id, 0) + 1
        if n <= self.failures:
            raise RetryableError("throttled", retry_after=0.001)
        return super().detect(image)


class Picky(Hash):
    """Permanent per-image errors for ids ending in 3, a bug for ids ending in 7."""

    name = "picky"

    def detect(self, image):
        if image.image_id.endswith("3"):
            raise ImageError("image too large")
        if image.image_id.endswith("7"):
            raise KeyError("boom")
        return super().detect(image)


class NaNScore(Hash):
    name = "nan"

    def detect(self, image):
        return Detection([Result("defect", float("nan"))])


class Hangs(Hash):
    """Hangs on ids ending in 5 (first call only)."""

    name = "hangs"

    def __init__(self, **kw):
        super().__init__(**kw)
        self.seen: set[str] = set()

    def detect(self, image):
        with self._lock:
            first = image.image_id not in self.seen
            self.seen.add(image.image_id)
        if image.image_id.endswith("5") and first:
            time.sleep(3)
        return super().detect(image)


class BadCredentials(Hash):
    name = "badcreds"

    def detect(self, image):
        raise FatalDetectorError("The security token included in the request is invalid")


class AlwaysBroken(Hash):
    name = "broken"

    def detect(self, image):
        raise RuntimeError("model file missing")


class Slow(Hash):
    """Fixed latency; appends a line per finished call to ``tally`` so a test can see
    progress while the store file is locked by the running process."""

    name = "slow"

    def __init__(self, tally: str | None = None, **kw):
        super().__init__(**kw)
        self.tally = tally

    def detect(self, image):
        d = super().detect(image)
        if self.tally:
            with self._lock, open(self.tally, "a") as f:
                f.write(image.image_id + "\n")
        return d


def slow(model_version: str = "s1", latency: float = 0.02, tally: str | None = None, **kw):
    """Plugin factory used by the kill-and-resume tests."""
    return Slow(model_version=model_version, latency=float(latency), tally=tally)


def billable(model_version: str = "b1", **kw):
    """A detector priced like Rekognition DetectFaces, for cost-guard tests."""
    d = Hash(model_version=model_version)
    d.name, d.billable, d.operation = "billable", True, "DetectFaces"
    return d


class CpuSlow(Slow):
    """:class:`Slow` as a CPU-bound local detector: the runner gives it a process pool."""

    name = "cpuslow"
    kind = "cpu"


def cpu_slow(model_version: str = "c1", latency: float = 0.05, tally: str | None = None, **kw):
    """Plugin factory for the process-pool tests (kill -9, SIGTERM)."""
    return CpuSlow(model_version=model_version, latency=float(latency), tally=tally)


class HangsOnce(Hash):
    """The first call on image ``image_id`` (in any process) hangs ``seconds``; the marker
    file says it happened, so a retry in another worker process answers."""

    name = "hangsonce"

    def __init__(self, image_id: str, marker: str, seconds: float = 60.0, **kw):
        super().__init__(**kw)
        self.image_id, self.marker, self.seconds = image_id, marker, float(seconds)

    def detect(self, image):
        if image.image_id == self.image_id:
            try:
                with open(self.marker, "x"):
                    pass
            except FileExistsError:
                pass
            else:
                time.sleep(self.seconds)
        return super().detect(image)


def hangs_once(image_id: str = "p0001", marker: str = "", seconds: float = 60.0,
               kind: str = "io", model_version: str = "g1", **kw):
    """Plugin factory: a call that hangs long past ``--timeout`` (thread or process pool)."""
    d = HangsOnce(image_id, marker, float(seconds), model_version=model_version)
    d.kind = kind
    return d


class Leaky(Hash):
    """A plugin that keeps its credentials in odd places: an ``auth`` setting, a URL with
    user-info, and echoes them in raw responses and error messages (as SDKs do)."""

    name = "leaky"

    def __init__(self, auth: str = "", endpoint: str = "", **kw):
        super().__init__(**kw)
        self.auth, self.endpoint = auth, endpoint

    def settings(self):
        return {"auth": self.auth, "endpoint": self.endpoint, "mode": "fast"}

    def detect(self, image):
        from calibrate.detectors import ImageError

        if image.image_id.endswith("1"):
            raise ImageError(f"403 for {self.endpoint} with Authorization: {self.auth}")
        d = super().detect(image)
        return Detection(d.results, raw={"echo": f"token={self.auth}", "url": self.endpoint})


def leaky(model_version: str = "l1", **kw):
    """Plugin factory for the secrets test."""
    return Leaky(model_version=model_version, **kw)


class CountedFlaky(Hash):
    """A local detector that fails with a retryable error the first ``failures`` calls on
    each image, or ``stubborn`` calls on ids ending in 1, counted in files under
    ``folder`` so that calls in any process (pool worker, Ray actor) count."""

    name = "countedflaky"
    kind = "cpu"

    def __init__(self, folder: str, failures: int = 1, stubborn: int = 5, **kw):
        super().__init__(**kw)
        self.folder, self.failures, self.stubborn = folder, int(failures), int(stubborn)

    def detect(self, image):
        with open(f"{self.folder}/{image.image_id}", "a+") as f:
            f.write("x")
            f.seek(0)
            n = len(f.read())
        if n <= (self.stubborn if image.image_id.endswith("1") else self.failures):
            raise RetryableError("busy", retry_after=0.001)
        return super().detect(image)


class Unbuildable(Hash):
    """A local detector whose model cannot be loaded where it is unpickled, as on a Ray
    worker without the model file."""

    name = "unbuildable"
    kind = "cpu"

    def __setstate__(self, state):
        raise FileNotFoundError("no such model file: /models/missing.onnx")
