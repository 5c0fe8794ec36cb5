"""A resumed cloud run that meets refused images first must finish.

Rekognition and IMM stop a run whose first images all fail with a code that usually
means misconfiguration (a missing S3/OSS object, a bucket in another region). A resumed
run has already shown the configuration works: its stored successes count, whichever
process made them. Through the real SDK clients and the wire-protocol fakes of
tests/cloud_fakes.py, counting the requests the fake receives.
"""

from __future__ import annotations

import pytest

from calibrate.runner import RunOptions, score_dataset
from calibrate.store import ScoreStore
from tests import cloud_fakes as cf
from tests.test_alibaba_imm import imm, imm_env, oss_set, uri  # noqa: F401 - imm_env: autouse
from tests.test_rekognition import aws_env, faces, s3_set  # noqa: F401 - aws_env: autouse

QUIET = {"progress": False, "backoff": 0.001, "flush_every": 0.05}
N, REFUSED = 16, (10, 11, 12)  # the first run stops at 10 calls; the resume meets 3 refusals


@pytest.fixture
def rekognition_fake():
    with cf.RekognitionFake() as f:
        yield f


@pytest.fixture
def imm_fake():
    with cf.ImmFake() as f:
        yield f


def _stop_resume_and_rerun(tmp_path, dataset, detector) -> None:
    """A run stopped by its call budget, resumed, then run again; a new detector each
    time, as each is a new ``calibrate score`` process. One call at a time, so that the
    refused images really are the first the resumed run sends."""
    opts = {"concurrency": 1, **QUIET}
    with ScoreStore(tmp_path / "s.duckdb") as store:
        first = score_dataset(dataset, detector(), store, RunOptions(max_calls=10, **opts))
        assert (first.scored, first.failed, first.status) == (10, 0, "call_budget")
        resumed = score_dataset(dataset, detector(), store, RunOptions(**opts))
        assert resumed.run_id == first.run_id and resumed.status == "finished"
        assert (resumed.scored, resumed.failed) == (N - 10 - len(REFUSED), len(REFUSED))
        assert resumed.failures_by_kind == {"image": len(REFUSED)}  # for good: not retried
        again = score_dataset(dataset, detector(), store, RunOptions(**opts))
        assert again.status == "skipped" and again.calls == 0
        (run,) = store.runs().itertuples()
        assert (run.status, run.n_scored, run.n_failed) == ("finished", N - 3, 3)
        failures = store.failures()
        assert sorted(failures["image_id"]) == sorted(dataset.images[i].image_id for i in REFUSED)
        assert set(failures["kind"]) == {"image"} and set(failures["attempts"]) == {1}


def test_a_resumed_rekognition_run_counts_its_stored_successes(tmp_path, rekognition_fake):
    dataset = s3_set(tmp_path, N)
    keys = [f"imgs/s{i}.jpg" for i in REFUSED]
    for key in keys:
        rekognition_fake.plan(key, *["s3_missing"] * 10)  # every call is refused
    _stop_resume_and_rerun(tmp_path, dataset, lambda: faces(rekognition_fake))
    assert [rekognition_fake.calls_for(k) for k in keys] == [1, 1, 1]  # none sent twice
    assert len(rekognition_fake.requests) == N  # nothing else was sent twice either


def test_a_resumed_imm_run_counts_its_stored_successes(tmp_path, imm_fake):
    dataset = oss_set(tmp_path, N)
    keys = [uri(i) for i in REFUSED]
    for key in keys:
        imm_fake.plan(key, *["not_found"] * 10)
    _stop_resume_and_rerun(tmp_path, dataset, lambda: imm(imm_fake))
    assert [imm_fake.calls_for(k) for k in keys] == [1, 1, 1]
    assert len(imm_fake.requests) == N


def test_a_new_run_still_stops_when_its_first_images_are_all_refused(tmp_path, rekognition_fake):
    """The guard itself stays: with no stored success, three refusals stop the run."""
    from calibrate.detectors.base import FatalDetectorError

    dataset = s3_set(tmp_path, N)
    rekognition_fake.default = "s3_missing"
    with ScoreStore(tmp_path / "s.duckdb") as store:
        with pytest.raises(FatalDetectorError, match="first 3 images"):
            score_dataset(dataset, faces(rekognition_fake), store,
                          RunOptions(concurrency=1, **QUIET))
        assert store.failures().empty
