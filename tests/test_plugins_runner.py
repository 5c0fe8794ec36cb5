"""Misbehaving plugins through the whole runner: one bad image fails alone, with its
reason stored; a plugin that exits stops the run with a message, not a bare exit code.

The runner calls calibrate.detectors.validation (``call_detector`` and
``check_detection`` in ``calibrate.runner._attempt``) for every image.
"""

from __future__ import annotations

import pytest

from calibrate.detectors.base import Detection, FatalDetectorError, Result
from calibrate.manifest import read_manifest
from calibrate.runner import RunOptions, score_dataset
from calibrate.store import ScoreStore
from tests import fake_detectors as fd
from tests.test_runner import QUIET, make_set

class Misbehaves(fd.Hash):
    """Scores like Hash, except on images whose id ends in 3, where it returns ``bad``."""

    name = "misbehaves"

    def __init__(self, bad, *, score_range=None, **kw):
        super().__init__(**kw)
        self.bad = bad
        if score_range is not None:
            self.score_range = score_range

    def detect(self, image):
        if image.image_id.endswith("3"):
            return Detection(self.bad() if callable(self.bad) else list(self.bad))
        return super().detect(image)


def _run(tmp_path, detector, n=20):
    ds = read_manifest(make_set(tmp_path, n))
    store = ScoreStore(tmp_path / "s.duckdb")
    summary = score_dataset(ds, detector, store, RunOptions(concurrency=2, **QUIET))
    return store, summary


@pytest.mark.parametrize(
    ("bad", "scale", "reason"),
    [
        ([Result("defect", "0.5")], None, "has score '0.5' of type str"),
        ([Result(None, 0.5)], None, "has label None"),
        ([Result("defect", float("nan"))], None, "must be finite"),
        ([Result("defect", 1.5)], (0.0, 1.0), "outside the detector's stated score_range 0 to 1"),
        ([Result("dent", 0.5)], None, "not among the detector's stated labels ('defect')"),
    ],
    ids=["string-score", "none-label", "nan-score", "off-scale", "unknown-label"],
)
def test_a_bad_result_fails_its_image_and_the_run_goes_on(tmp_path, bad, scale, reason):
    store, s = _run(tmp_path, Misbehaves(bad, score_range=scale))
    with store:
        # p0003 and p0013 misbehave; the other 18 are scored and the run finishes.
        assert (s.status, s.scored, s.failed) == ("finished", 18, 2)
        assert s.failures_by_kind == {"error": 2}
        failures = store.failures().set_index("image_id")
        assert sorted(failures.index) == ["p0003", "p0013"]
        assert reason in failures.loc["p0003", "message"]
        # Nothing of a failed image is stored as a score.
        assert len(store.scores("misbehaves", "h1", "defect").scores) == 18


def test_a_plugin_that_exits_stops_the_run_with_a_message(tmp_path):
    class Exits(fd.Hash):
        name = "exits"

        def detect(self, image):
            raise SystemExit(3)

    ds = read_manifest(make_set(tmp_path, 6))
    with ScoreStore(tmp_path / "s.duckdb") as store:
        det = Exits()
        with pytest.raises(FatalDetectorError, match=r"called sys\.exit\(3\) while scoring"):
            score_dataset(ds, det, store, RunOptions(concurrency=1, **QUIET))
        # The plugin, not the images, was at fault: nothing is recorded against them,
        # so a fixed plugin resumes the run and scores every image.
        assert store.failures().empty
        assert list(store.runs()["status"]) == ["failed"]


def test_a_plugin_broken_on_every_image_stops_early_with_the_reason(tmp_path):
    ds = read_manifest(make_set(tmp_path, 40))
    det = fd.Hash()
    det.detect = lambda image: Detection([Result("defect", "0.5")])
    with ScoreStore(tmp_path / "s.duckdb") as store:
        with pytest.raises(FatalDetectorError, match=r"10 images in a row.*of type str"):
            score_dataset(ds, det, store, RunOptions(give_up_after=10, concurrency=1, **QUIET))
