"""The viam detector, offline, through the real SDK client.

A ``viam.services.vision.Vision`` implementation is served by the SDK's own
``VisionRPCService`` over ``grpclib.testing.ChannelFor`` and called by the SDK's real
``VisionClient``, so requests and errors cross a real gRPC stack (HTTP/2, protobuf,
status codes) without a network or a machine.
"""

from __future__ import annotations

import asyncio
import io
import json
import math
import subprocess
import sys
import textwrap
import threading
import uuid
import warnings
import zlib
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

pytest.importorskip("viam")

from grpclib import GRPCError, Status  # noqa: E402
from grpclib.testing import ChannelFor  # noqa: E402
from viam.proto.service.vision import Classification, Detection  # noqa: E402
from viam.resource.manager import ResourceManager  # noqa: E402
from viam.services.vision import Vision, VisionClient  # noqa: E402
from viam.services.vision.service import VisionRPCService  # noqa: E402

from calibrate.detectors.base import FatalDetectorError, ImageError, RetryableError  # noqa: E402
from calibrate.detectors.viam import (  # noqa: E402
    CensoredScoresWarning,
    UnstatedModelVersionWarning,
    ViamDetector,
    censoring_floor,
)
from calibrate.errors import InputError  # noqa: E402
from calibrate.manifest import LabeledImage, read_manifest  # noqa: E402
from calibrate.runner import RunOptions, score_dataset  # noqa: E402
from calibrate.store import ScoreStore  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "vk-test-" + "9f3c1e77d2a84b6c" * 2  # distinctive, so a leak is unmistakable
API_KEY_ID = str(uuid.UUID(int=0x1B2C3D4E5F60718293A4B5C6D7E8F901))
ADDRESS = "line-3-main.test123.viam.cloud"
QUIET = dict(progress=False, backoff=0.001, flush_every=0.05)
CLASSES = ("scratch", "dent", "spot", "crack", "ok")


@pytest.fixture(autouse=True)
def viam_env(monkeypatch):
    monkeypatch.setenv("VIAM_API_KEY", API_KEY)
    monkeypatch.setenv("VIAM_API_KEY_ID", API_KEY_ID)
    monkeypatch.setenv("VIAM_MACHINE_ADDRESS", ADDRESS)


# ---------------------------------------------------------------------------------------
# A vision service on a test "machine"
# ---------------------------------------------------------------------------------------


def unit(data: bytes, salt: int) -> float:
    """A deterministic score in [0, 1) from the image bytes."""
    return (zlib.crc32(data + bytes([salt])) % 10_000) / 10_000


class Line(Vision):
    """A vision service whose answers depend only on the image bytes.

    Detections: two ``scratch`` and one ``dent`` per image, with boxes. Classifications:
    a score for each of CLASSES, answered as rdk's TopN does (asking for more classes
    than there are is an error that says how many there are). ``cutoff`` drops results
    below it, as ``default_minimum_confidence`` does.
    """

    def __init__(self, name="line", *, cutoff=0.0, transient=0, always=None, max_width=None,
                 latency=0.0, unknown=None, normalized_only=False):
        super().__init__(name)
        self.cutoff = cutoff
        self.transient = transient
        self.always = always
        self.max_width = max_width
        self.latency = latency
        self.unknown = unknown
        self.normalized_only = normalized_only
        self.calls = 0
        self.requests: list[tuple[str, int, int, int | None]] = []
        self.seen: dict[int, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.lock = threading.Lock()

    async def _enter(self, image, n=None):
        with self.lock:
            self.calls += 1
            self.requests.append((str(image.mime_type), image.width, image.height, n))
            key = zlib.crc32(image.data)
            self.seen[key] = attempt = self.seen.get(key, 0) + 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
        finally:
            with self.lock:
                self.in_flight -= 1
        if self.always is not None:
            raise GRPCError(self.always, "request refused")
        if self.unknown is not None:
            raise GRPCError(Status.UNKNOWN, self.unknown)
        if attempt <= self.transient:
            status = (Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED,
                      Status.RESOURCE_EXHAUSTED)[(attempt - 1) % 3]
            raise GRPCError(status, f"transient trouble #{attempt}")
        # The bytes must be a real image of the declared type and size.
        decoded = Image.open(io.BytesIO(image.data))
        expected = {"image/jpeg": "JPEG", "image/png": "PNG"}.get(str(image.mime_type))
        if decoded.format != expected or decoded.size != (image.width, image.height):
            raise GRPCError(
                Status.INVALID_ARGUMENT,
                f"{decoded.format} {decoded.size} bytes sent as {image.mime_type} "
                f"{image.width}x{image.height}",
            )
        if self.max_width is not None and image.width > self.max_width:
            raise GRPCError(Status.INVALID_ARGUMENT, f"image wider than {self.max_width} px")

    async def get_detections(self, image, *, extra=None, timeout=None, **kwargs):
        await self._enter(image)
        out = []
        for i, label in enumerate(("scratch", "scratch", "dent")):
            score = unit(image.data, i)
            if score < self.cutoff:
                continue
            if self.normalized_only:
                out.append(Detection(confidence=score, class_name=label, x_min_normalized=0.25,
                                     y_min_normalized=0.5, x_max_normalized=0.75,
                                     y_max_normalized=1.0))
            else:
                out.append(Detection(x_min=i, y_min=1, x_max=i + 5, y_max=6, confidence=score,
                                     class_name=label))
        return out

    async def get_classifications(self, image, count, *, extra=None, timeout=None, **kwargs):
        await self._enter(image, count)
        kept = [(c, unit(image.data, 10 + i)) for i, c in enumerate(CLASSES)]
        kept = [(c, s) for c, s in kept if s >= self.cutoff]
        if count > len(kept):
            raise GRPCError(Status.UNKNOWN,
                            f"cannot produce top {count} results from list of length {len(kept)}")
        kept.sort(key=lambda cs: -cs[1])
        return [Classification(class_name=c, confidence=s) for c, s in kept[:count]]

    async def get_detections_from_camera(self, *a, **k):
        raise NotImplementedError

    async def get_classifications_from_camera(self, *a, **k):
        raise NotImplementedError

    async def get_object_point_clouds(self, *a, **k):
        raise NotImplementedError

    async def get_detections_3d(self, *a, **k):
        raise NotImplementedError

    async def capture_all_from_camera(self, *a, **k):
        raise NotImplementedError

    async def get_properties(self, *a, **k):
        raise NotImplementedError

    async def do_command(self, *a, **k):
        return {}


class Machine:
    """A client factory serving ``vision`` over ChannelFor; records what it was given."""

    def __init__(self, vision: Vision, *, client_name: str | None = None, refuse=None):
        self.vision = vision
        self.client_name = client_name
        self.refuse = refuse
        self.credentials = []
        self.opened = 0
        self.closed = 0

    @asynccontextmanager
    async def __call__(self, credentials, service):
        self.credentials.append(credentials)
        if self.refuse is not None:
            raise self.refuse
        self.opened += 1
        async with ChannelFor([VisionRPCService(ResourceManager([self.vision]))]) as channel:
            try:
                yield VisionClient(self.client_name or service, channel)
            finally:
                self.closed += 1


def make_set(folder: Path, n: int, *, wide: tuple[int, ...] = ()) -> Path:
    """n noisy images, alternately JPEG and PNG; ids in ``wide`` are 64 px wide."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    lines = []
    for i in range(n):
        ext = "jpg" if i % 2 else "png"
        path = folder / "img" / f"p{i:03d}.{ext}"
        width = 64 if i in wide else 24
        pixels = rng.integers(0, 255, (16, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path, "JPEG" if ext == "jpg" else "PNG")
        labels = [lab for lab, every in (("scratch", 3), ("dent", 4)) if i % every == 0]
        lines.append({"id": f"p{i:03d}", "image": f"img/p{i:03d}.{ext}", "labels": labels})
    manifest = folder / "manifest.jsonl"
    manifest.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return manifest


def detector(machine: Machine, **options) -> ViamDetector:
    options.setdefault("model_version", "my-org:defects@3")
    return ViamDetector("line", client_factory=machine, **options)


# ---------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------


def test_detections_end_to_end(tmp_path):
    ds = read_manifest(make_set(tmp_path, 24))
    line = Line(latency=0.02)
    machine = Machine(line)
    with detector(machine) as det, ScoreStore(tmp_path / "s.duckdb") as store:
        s = score_dataset(ds, det, store, RunOptions(concurrency=8, **QUIET))
        assert (s.scored, s.failed, s.status) == (24, 0, "finished")
        assert det.name == "viam/line/detections" and det.kind == "io"
        # one connection for all calls, used concurrently
        assert machine.opened == 1 and line.calls == 24
        assert line.max_in_flight >= 4
        # real bytes, each with its own type: PNGs are not sent as image/jpeg
        assert {r[0] for r in line.requests} == {"image/jpeg", "image/png"}
        assert all((w, h) == (24, 16) for _, w, h, _ in line.requests)
        # image-level score = highest detection of the label
        scratch = store.scores(det.name, "my-org:defects@3", "scratch")
        expected = {im.image_id: max(unit(im.read_bytes(), 0), unit(im.read_bytes(), 1))
                    for im in ds.images}
        assert dict(zip(scratch.image_ids, scratch.scores)) == pytest.approx(expected)
        assert scratch.positive.sum() == 8
        # every box kept, in pixels
        raw = store.raw_response(s.run_id, "p001")
        assert raw["mime_type"] == "image/jpeg" and len(raw["detections"]) == 3
        run = store.runs().iloc[0]
        assert run["settings"]["service"] == "line" and run["settings"]["mode"] == "detections"
        assert math.isnan(run["detection_floor"]) or run["detection_floor"] is None
    assert machine.closed == 1


def test_boxes_are_pixels_even_when_the_service_sends_ratios(tmp_path):
    ds = read_manifest(make_set(tmp_path, 2))
    with detector(Machine(Line(normalized_only=True))) as det:
        result = det.detect(ds.images[0]).results[0]
    assert result.box is not None and result.box.unit == "pixel"
    assert (result.box.x_min, result.box.y_min, result.box.x_max, result.box.y_max) == (6, 8, 18, 16)
    with detector(Machine(Line())) as det:
        boxes = [r.box for r in det.detect(ds.images[1]).results]
    assert [(b.x_min, b.x_max) for b in boxes] == [(0, 5), (1, 6), (2, 7)]


def test_classifications_top_n(tmp_path):
    ds = read_manifest(make_set(tmp_path, 12))
    line = Line()
    with detector(Machine(line), mode="classifications", top_n=2) as det, \
            ScoreStore(tmp_path / "s.duckdb") as store:
        s = score_dataset(ds, det, store, RunOptions(**QUIET))
        assert s.scored == 12 and {r[3] for r in line.requests} == {2}
        assert det.settings()["top_n"] == 2
        per_image = {}
        for label in CLASSES:
            ls = store.scores(det.name, det.model_version, label)
            for image_id, score in zip(ls.image_ids, ls.scores):
                per_image.setdefault(image_id, []).append(score)
        for image in ds.images:
            got = per_image[image.image_id]
            # two labels returned; the other three have no result there
            assert sum(np.isfinite(got)) == 2 and sum(np.isneginf(got)) == 3
            truth = sorted((unit(image.read_bytes(), 10 + i) for i in range(5)), reverse=True)
            assert sorted([g for g in got if np.isfinite(g)], reverse=True) == pytest.approx(truth[:2])


@pytest.mark.parametrize("concurrency", [1, 4, 8])
def test_classifications_default_asks_for_every_class(tmp_path, concurrency):
    ds = read_manifest(make_set(tmp_path, 10))
    line = Line(latency=0.02)
    with detector(Machine(line), mode="classifications") as det, \
            ScoreStore(tmp_path / "s.duckdb") as store:
        s = score_dataset(ds, det, store, RunOptions(concurrency=concurrency, **QUIET))
        assert s.scored == 10 and s.failed == 0 and s.calls == 10
        asked = [r[3] for r in line.requests]
        # rdk refuses too large a top-N and names the class count; one call asks while
        # the others wait, so one request is spent on it, not one per worker
        assert asked[0] == 1000 and asked[1:] == [5] * 10
        assert det.requests == line.calls == 11
        sent = [store.raw_response(s.run_id, im.image_id)["requests"] for im in ds.images]
        assert sorted(sent) == [1] * 9 + [2]
        assert store.labels(det.name, det.model_version) == sorted(CLASSES)
        assert det.settings()["top_n"] == "all"
        # the count is kept: a later run of the same detector spends nothing on it
        more = read_manifest(make_set(tmp_path / "more", 3))
        with ScoreStore(tmp_path / "s2.duckdb") as store2:
            score_dataset(more, det, store2, RunOptions(concurrency=concurrency, **QUIET))
        assert det.requests == line.calls == 14


def test_stated_top_n_sends_one_request_per_call(tmp_path):
    ds = read_manifest(make_set(tmp_path, 12))
    line = Line()
    with detector(Machine(line), mode="classifications", top_n=5) as det, \
            ScoreStore(tmp_path / "s.duckdb") as store:
        s = score_dataset(ds, det, store, RunOptions(concurrency=4, max_calls=6, **QUIET))
    assert s.calls == det.requests == line.calls == 6


def test_a_call_budget_is_overspent_by_the_class_count_request_only(tmp_path):
    ds = read_manifest(make_set(tmp_path, 15))
    line = Line(latency=0.02)
    with detector(Machine(line), mode="classifications") as det, \
            ScoreStore(tmp_path / "s.duckdb") as store:
        s = score_dataset(ds, det, store, RunOptions(concurrency=8, max_calls=6, **QUIET))
    # the runner counts calls; the one request that learned the class count is extra
    assert (s.calls, det.requests, line.calls) == (6, 7, 7)


def test_resume_after_a_call_budget(tmp_path):
    ds = read_manifest(make_set(tmp_path, 15))
    with ScoreStore(tmp_path / "s.duckdb") as store:
        with detector(Machine(Line())) as det:
            s1 = score_dataset(ds, det, store, RunOptions(max_calls=6, concurrency=2, **QUIET))
        assert s1.status == "call_budget" and s1.scored == 6
        line = Line()
        with detector(Machine(line)) as det:
            s2 = score_dataset(ds, det, store, RunOptions(**QUIET))
        assert (s2.scored, s2.already_done, s2.run_id) == (9, 6, s1.run_id)
        assert line.calls == 9
        assert len(store.scores(det.name, det.model_version, "dent").scores) == 15


# ---------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------


def test_transient_grpc_errors_are_retried_by_the_runner(tmp_path):
    ds = read_manifest(make_set(tmp_path, 12))
    line = Line(transient=3)  # UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, then ok
    store_path = tmp_path / "s.duckdb"
    with detector(Machine(line)) as det, ScoreStore(store_path) as store:
        s = score_dataset(ds, det, store, RunOptions(concurrency=4, max_attempts=4, **QUIET))
        assert (s.scored, s.failed, s.retries, s.calls) == (12, 0, 36, 48)
        ls = store.scores(det.name, det.model_version, "scratch")
        assert sorted(ls.image_ids) == sorted(im.image_id for im in ds.images)
        assert store.failures().empty


@pytest.mark.parametrize("status", [Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED,
                                    Status.RESOURCE_EXHAUSTED])
def test_transient_statuses_are_retryable(tmp_path, status):
    ds = read_manifest(make_set(tmp_path, 1))
    with detector(Machine(Line(always=status))) as det:
        with pytest.raises(RetryableError, match=status.name):
            det.detect(ds.images[0])


@pytest.mark.parametrize("status", [Status.UNAUTHENTICATED, Status.PERMISSION_DENIED])
def test_refused_key_stops_the_run(tmp_path, status):
    ds = read_manifest(make_set(tmp_path, 20))
    line = Line(always=status)
    with detector(Machine(line)) as det, ScoreStore(tmp_path / "s.duckdb") as store:
        with pytest.raises(FatalDetectorError, match="refused the API key") as info:
            score_dataset(ds, det, store, RunOptions(concurrency=2, **QUIET))
        assert "VIAM_API_KEY" in str(info.value) and status.name in str(info.value)
        # one full stop where the runner adds its own
        assert "access to this machine. Everything finished" in str(info.value)
        assert line.calls <= 3  # stopped at once, not once per image
        assert store.failures().empty  # the key, not the images, was at fault
        assert store.runs().iloc[0]["status"] == "failed"


def test_connection_refused_at_connect_time_stops_the_run(tmp_path):
    ds = read_manifest(make_set(tmp_path, 10))
    machine = Machine(Line(), refuse=ConnectionRefusedError(111, "Connection refused"))
    with detector(machine) as det, ScoreStore(tmp_path / "s.duckdb") as store:
        with pytest.raises(FatalDetectorError, match=f"cannot connect to the machine at "
                           f"{ADDRESS}: nothing accepts connections there") as info:
            score_dataset(ds, det, store, RunOptions(concurrency=4, **QUIET))
        assert "machine.." not in str(info.value) and "running." in str(info.value)
        # Calls waiting together share one attempt; a call that starts after it failed
        # may try once more before the runner stops dispatching: at most one per slot.
        assert 1 <= len(machine.credentials) <= 4
        assert store.failures().empty


@pytest.mark.parametrize("status", [Status.UNAUTHENTICATED, Status.PERMISSION_DENIED])
def test_refused_key_at_connect_time_is_named(tmp_path, status):
    ds = read_manifest(make_set(tmp_path, 1))
    machine = Machine(Line(), refuse=GRPCError(status, "bad key"))
    with detector(machine) as det:
        with pytest.raises(FatalDetectorError) as info:
            det.detect(ds.images[0])
    assert str(info.value).startswith(
        f"cannot connect to the machine at {ADDRESS}: it refused the API key "
        f"({status.name}: bad key). Check VIAM_API_KEY and VIAM_API_KEY_ID"
    )
    assert not str(info.value).endswith(".")  # the runner adds the full stop


def test_unknown_service_name_is_fatal(tmp_path):
    ds = read_manifest(make_set(tmp_path, 1))
    with ViamDetector("no-such-service", model_version="m1",
                      client_factory=Machine(Line("line"))) as det:
        with pytest.raises(FatalDetectorError, match="no vision service named 'no-such-service'"):
            det.detect(ds.images[0])


def test_service_without_the_mode_is_fatal_with_the_fix(tmp_path):
    ds = read_manifest(make_set(tmp_path, 1))
    line = Line(unknown='vision model "line" does not implement a Detector')
    with detector(Machine(line)) as det:
        with pytest.raises(FatalDetectorError, match="try --option mode=classifications"):
            det.detect(ds.images[0])


def test_rejected_images_are_image_failures(tmp_path):
    ds = read_manifest(make_set(tmp_path, 12, wide=(3, 8)))
    with detector(Machine(Line(max_width=40))) as det, ScoreStore(tmp_path / "s.duckdb") as store:
        s = score_dataset(ds, det, store, RunOptions(**QUIET))
        assert s.scored == 10 and s.failures_by_kind == {"image": 2}
        f = store.failures().set_index("image_id")
        assert set(f.index) == {"p003", "p008"}
        assert "INVALID_ARGUMENT" in f.loc["p003", "message"]
        assert "rejected the image" in f.loc["p003", "message"]


def test_decode_errors_are_image_errors_other_unknowns_are_errors(tmp_path):
    ds = read_manifest(make_set(tmp_path, 1))
    with detector(Machine(Line(unknown="Not a JPEG file: starts with 0x89 0x50"))) as det:
        with pytest.raises(ImageError, match="could not decode"):
            det.detect(ds.images[0])
    with detector(Machine(Line(unknown="tensor shape mismatch"))) as det:
        with pytest.raises(Exception, match="tensor shape mismatch") as info:
            det.detect(ds.images[0])
        assert type(info.value).__name__ == "DetectorError"


def test_files_the_service_cannot_take_are_image_errors(tmp_path):
    bmp = tmp_path / "a.bmp"
    Image.new("RGB", (8, 8), "red").save(bmp)
    machine = Machine(Line())
    with detector(machine) as det:
        with pytest.raises(ImageError, match="neither JPEG nor PNG"):
            det.detect(LabeledImage("a", str(bmp)))
        with pytest.raises(ImageError, match="remote"):
            det.detect(LabeledImage("b", "s3://bucket/b.jpg"))
    assert machine.opened == 0  # nothing was sent


# ---------------------------------------------------------------------------------------
# Censoring
# ---------------------------------------------------------------------------------------


def test_a_filtering_service_is_detected_and_its_floor_recorded(tmp_path):
    ds = read_manifest(make_set(tmp_path, 60))
    with detector(Machine(Line(cutoff=0.5))) as det, ScoreStore(tmp_path / "s.duckdb") as store:
        with pytest.warns(CensoredScoresWarning, match="filters results below 0.5"):
            score_dataset(ds, det, store, RunOptions(**QUIET))
        # the runner keeps the observed floor with the run, for reports
        assert store.runs().iloc[0]["detection_floor"] == 0.5
        assert det.observed_floor() == 0.5
        assert det.observed_floors()["scratch"] == 0.5
        with pytest.warns(CensoredScoresWarning, match="filters results below 0.5"):
            assert det.warn_if_censored() == 0.5
        # the same rule on every result the store holds, as the run recorded them
        store.export_parquet(tmp_path / "r.parquet", detector=det.name)
        scores = pq.read_table(tmp_path / "r.parquet", columns=["score"])["score"].to_numpy(
            zero_copy_only=False)
        assert len(scores) >= 50 and censoring_floor(scores) == 0.5


def test_an_unfiltered_service_is_not_flagged(tmp_path):
    ds = read_manifest(make_set(tmp_path, 60))
    with detector(Machine(Line())) as det, ScoreStore(tmp_path / "s.duckdb") as store:
        score_dataset(ds, det, store, RunOptions(**QUIET))
        assert det.observed_floor() is None
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert det.warn_if_censored() is None


def test_stated_cutoff_becomes_the_detection_floor(tmp_path):
    ds = read_manifest(make_set(tmp_path, 6))
    with pytest.warns(CensoredScoresWarning, match="filters results below 0.5"):
        det = detector(Machine(Line(cutoff=0.5)), service_min_confidence=0.5)
    with det, ScoreStore(tmp_path / "s.duckdb") as store:
        score_dataset(ds, det, store, RunOptions(**QUIET))
        run = store.runs().iloc[0]
        assert run["detection_floor"] == 0.5
        assert run["settings"]["service_min_confidence"] == 0.5
    # label_confidences win over the default, as in Viam
    with pytest.warns(CensoredScoresWarning):
        det = detector(Machine(Line()), service_min_confidence=0.7,
                       service_label_confidences={"scratch": 0.4, "dent": 0.6})
    assert det.detection_floor == 0.4
    # 0 filters nothing
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert detector(Machine(Line()), service_min_confidence=0).detection_floor is None


def test_a_wrong_stated_cutoff_is_reported(tmp_path):
    ds = read_manifest(make_set(tmp_path, 10))
    with pytest.warns(CensoredScoresWarning):
        det = detector(Machine(Line()), service_min_confidence=0.5)
    with det:
        for image in ds.images:
            det.detect(image)
        with pytest.warns(CensoredScoresWarning, match="do not match the service"):
            det.warn_if_censored()


@pytest.mark.parametrize(
    "scores, floor",
    [
        ([0.5 + i / 200 for i in range(60)], 0.5),  # cut at 0.5
        ([0.304 + i / 100 for i in range(60)], 0.3),  # just above a round number
        ([0.25 + i / 100 for i in range(60)], 0.25),
        ([0.5 + i / 200 for i in range(49)], None),  # too few results to tell
        ([i / 60 for i in range(60)], None),  # reaches down to 0
        ([0.53 + i / 200 for i in range(60)], None),  # not near a round cutoff
        ([0.03 + i / 200 for i in range(60)], None),  # below 0.05: nothing hidden worth noting
        ([1.0] * 80, None),  # constant (color_detector): no ranking, not censoring
        ([-math.inf] * 30 + [0.5 + i / 200 for i in range(60)], 0.5),  # no-result ignored
    ],
)
def test_censoring_rule(scores, floor):
    assert censoring_floor(scores) == floor


# ---------------------------------------------------------------------------------------
# Credentials, versions, options, lifetime
# ---------------------------------------------------------------------------------------


def test_the_api_key_never_reaches_the_store(tmp_path):
    ds = read_manifest(make_set(tmp_path, 8, wide=(2,)))
    machine = Machine(Line(max_width=40, transient=1))
    store_path = tmp_path / "s.duckdb"
    with detector(machine) as det:
        with ScoreStore(store_path) as store:
            score_dataset(ds, det, store, RunOptions(**QUIET))
            assert store.failures()["image_id"].tolist() == ["p002"]
        # the key did reach the connection...
        (creds,) = machine.credentials
        assert (creds.api_key, creds.api_key_id, creds.address) == (API_KEY, API_KEY_ID, ADDRESS)
        # ...and nothing else
        assert API_KEY not in repr(creds) and API_KEY_ID not in repr(creds)
        for text in (repr(det), json.dumps(det.settings())):
            assert API_KEY not in text and API_KEY_ID not in text and ADDRESS not in text
    files = [p for p in tmp_path.iterdir() if p.name.startswith("s.duckdb")]
    assert files
    for path in files:
        data = path.read_bytes()
        assert API_KEY.encode() not in data and API_KEY_ID.encode() not in data


def test_missing_or_swapped_credentials_are_input_errors(monkeypatch):
    monkeypatch.delenv("VIAM_API_KEY")
    monkeypatch.delenv("VIAM_MACHINE_ADDRESS")
    with pytest.raises(InputError, match="VIAM_MACHINE_ADDRESS, VIAM_API_KEY") as info:
        ViamDetector("line", model_version="m1")
    assert API_KEY_ID not in str(info.value)
    monkeypatch.setenv("VIAM_API_KEY", API_KEY_ID)
    monkeypatch.setenv("VIAM_API_KEY_ID", API_KEY)
    with pytest.raises(InputError, match="not swapped") as info:
        ViamDetector("line", model_version="m1", address=ADDRESS)
    assert API_KEY not in str(info.value) and API_KEY_ID not in str(info.value)


def test_unstated_model_version_warns():
    with pytest.warns(UnstatedModelVersionWarning, match="--model-version"):
        det = ViamDetector("line", client_factory=Machine(Line()))
    assert det.model_version == "unstated"


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(service=None), "service's name"),
        (dict(service="line", mode="segmentation"), "mode must be one of"),
        (dict(service="line", top_n=3), "mode=classifications only"),
        (dict(service="line", mode="classifications", top_n=0), "positive whole number"),
        (dict(service="line", service_min_confidence=50), "between 0 and 1"),
        (dict(service="line", call_timeout=0), "call_timeout"),
    ],
)
def test_bad_options_say_what_to_do(options, message):
    with pytest.raises(InputError, match=message):
        ViamDetector(model_version="m1", client_factory=Machine(Line()), **options)


def test_close_is_clean_idempotent_and_reconnects(tmp_path):
    ds = read_manifest(make_set(tmp_path, 2))
    machine = Machine(Line())
    det = detector(machine)
    det.detect(ds.images[0])
    thread = det._session.thread
    det.close()
    det.close()
    assert not thread.is_alive() and machine.closed == 1
    det.detect(ds.images[1])  # a closed detector connects again when used
    assert machine.opened == 2
    det.close()
    assert machine.closed == 2


def test_interpreter_exit_closes_the_connection(tmp_path):
    manifest = make_set(tmp_path, 3)
    script = textwrap.dedent(
        f"""
        import sys
        from contextlib import asynccontextmanager
        sys.path.insert(0, {str(ROOT)!r})
        from tests.test_viam import Line, Machine
        from calibrate.detectors.viam import ViamDetector
        from calibrate.manifest import read_manifest

        machine = Machine(Line())

        @asynccontextmanager
        async def factory(credentials, service):
            async with machine(credentials, service) as client:
                try:
                    yield client
                finally:
                    print("connection closed", flush=True)

        det = ViamDetector("line", model_version="m1", client_factory=factory)
        images = read_manifest({str(manifest)!r}).images
        print("scored", sum(bool(det.detect(im).results) for im in images), flush=True)
        # no det.close(): exit must still close the connection and stop the loop
        """
    )
    env = {"VIAM_API_KEY": API_KEY, "VIAM_API_KEY_ID": API_KEY_ID, "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["scored 3", "connection closed"]
    assert "Traceback" not in proc.stderr and "destroyed" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("normalized_only", [False, True])
def test_boxes_reach_detection_rows_in_pixels(tmp_path, normalized_only):
    # Viam's x_min.. are pixels; a service that sends only *_normalized ratios has them
    # turned into pixels of the image sent (24x16 here), so the store holds pixels either
    # way and detection_rows returns them unchanged.
    manifest = make_set(tmp_path, 4)
    lines = [json.loads(x) for x in manifest.read_text().splitlines()]
    for rec in lines:
        rec.pop("labels")
        rec["objects"] = [{"label": "scratch", "box": [0, 1, 5, 6]}]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in lines))
    ds = read_manifest(manifest)
    with detector(Machine(Line(normalized_only=normalized_only))) as det, \
            ScoreStore(tmp_path / "s.duckdb") as store:
        score_dataset(ds, det, store, RunOptions(**QUIET))
        assert store._db().execute("SELECT DISTINCT box_unit FROM results").fetchall() == [
            ("pixel",)]
        rows = store.detection_rows(det.name, "my-org:defects@3", labels=["scratch", "dent"])
        assert rows.n_images == 4 and len(rows.detections) == 12
        boxes = rows.detections[["x_min", "y_min", "x_max", "y_max"]].values.tolist()
        if normalized_only:
            assert boxes == [[6, 8, 18, 16]] * 12  # 0.25..0.75 of 24, 0.5..1 of 16
        else:
            for image_id in rows.image_ids:
                got = rows.detections[rows.detections["image_id"] == image_id]
                by_label = {lab: sorted(g[["x_min", "x_max"]].values.tolist())
                            for lab, g in got.groupby("label")}
                assert by_label == {"dent": [[2, 7]], "scratch": [[0, 5], [1, 6]]}
        assert rows.objects["x_max"].tolist() == [5.0] * 4
