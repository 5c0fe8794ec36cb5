"""What a plugin detector may return: calibrate.detectors.validation, called directly.

Every misbehaviour here used to abort the whole run (a string score, a None label: the
store refuses the batch), end the program silently (sys.exit) or be stored as if valid
(scores off the detector's scale, labels it never said it emits). Each must now be a
reason for one image's failure, or a fatal error that says what happened.
"""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

import numpy as np
import pytest

from calibrate.detectors.base import Box, Detection, FatalDetectorError, Result
from calibrate.detectors.validation import (
    call_detector,
    check_detection,
    stated_labels,
    stated_score_range,
)


class Plugin:
    """A minimal plugin detector; ``detect`` returns whatever it was given."""

    name = "plugin"
    model_version = "p1"
    kind = "io"
    detection_floor = None

    def __init__(self, returns=None, *, labels=("defect", "scratch"), score_range=None,
                 raises: BaseException | None = None):
        self.returns, self.labels, self.raises = returns, labels, raises
        if score_range is not None:
            self.score_range = score_range

    def detect(self, image):
        if self.raises is not None:
            raise self.raises
        return self.returns

    def settings(self):
        return {}


IMAGE = SimpleNamespace(image_id="p0007")


def check(results, **plugin):
    return check_detection(Detection(results), Plugin(**plugin))


# -- valid detections pass ---------------------------------------------------------------


@pytest.mark.parametrize("score", [0.0, 1.0, 0.5, 1, np.float32(0.25), np.float64(0.75)])
def test_valid_results_pass(score):
    assert check([Result("defect", score), Result("scratch", 0.1, Box(1, 2, 3, 4))],
                 score_range=(0.0, 1.0)) is None
    assert check([]) is None
    assert check((Result("defect", score),)) is None


def test_without_stated_labels_or_scale_anything_finite_passes():
    assert check([Result("whatever", 1e6), Result("other", -3.0)], labels=None) is None


# -- per-image failures, each with its reason -----------------------------------------------


@pytest.mark.parametrize(
    ("result", "reason"),
    [
        (Result("defect", "0.5"), r"\('defect'\) has score '0.5' of type str.*float\(\)"),
        (Result("defect", None), r"score None of type NoneType"),
        (Result("defect", True), r"score True of type bool"),
        (Result(None, 0.5), r"has label None; a label must be a non-empty string"),
        (Result("", 0.5), r"label ''; a label must be a non-empty string"),
        (Result(3, 0.5), r"label 3; a label must be a non-empty string"),
        (Result("defect", float("nan")), r"score nan; a score must be finite"),
        (Result("defect", float("inf")), r"score inf; a score must be finite"),
        (Result("defect", 0.5, Box(0, 0, float("nan"), 1)), r"box coordinates"),
        (Result("defect", 0.5, Box(0, 0, 1, 1, unit="percent")), r"box unit 'percent'"),
        (("defect", 0.5), r"is tuple, not a Result"),
    ],
)
def test_misbehaving_results_are_reasons_not_crashes(result, reason):
    # The bad result comes second: the reason must name it, not the valid first one.
    problem = check([Result("scratch", 0.2), result])
    assert problem is not None and "\n" not in problem
    assert problem.startswith("result 1 "), problem
    assert re.search(reason, problem), problem


def test_label_outside_the_stated_labels_fails_the_image():
    problem = check([Result("defect", 0.4), Result("dent", 0.9)])
    assert problem == (
        "result 1 has label 'dent', which is not among the detector's stated labels "
        "('defect', 'scratch'); add it to the detector's labels or map it to one."
    )


def test_long_label_lists_are_cut_short_in_the_reason():
    many = tuple(f"label{i:03d}" for i in range(300))
    problem = check([Result("nope", 0.4)], labels=many)
    assert "and 290 more" in problem and len(problem) < 400


@pytest.mark.parametrize(("scale", "score"), [((0.0, 1.0), 1.0000001), ((0.0, 1.0), -0.01),
                                              ((0.0, 100.0), 250.0)])
def test_score_outside_the_stated_scale_fails_the_image(scale, score):
    problem = check([Result("defect", score)], score_range=scale)
    assert problem is not None and "outside the detector's stated score_range" in problem
    assert f"{scale[0]:g} to {scale[1]:g}" in problem


def test_scale_ends_are_inside():
    assert check([Result("defect", 0.0), Result("defect", 100.0)], score_range=(0, 100)) is None


@pytest.mark.parametrize("returned", [None, [Result("defect", 0.5)], {"defect": 0.5}])
def test_not_a_detection(returned):
    problem = check_detection(returned, Plugin())
    assert f"returned {type(returned).__name__}, not a Detection" in problem


def test_results_not_a_list():
    problem = check_detection(Detection(results={"defect": 0.5}), Plugin())
    assert problem == "Detection.results is dict, not a list of Result."


def test_raw_that_json_cannot_hold_fails_the_image_not_the_batch():
    cyclic: dict = {}
    cyclic["self"] = cyclic
    for raw in ({(1, 2): "tuple key"}, cyclic):
        problem = check_detection(Detection([Result("defect", 0.5)], raw=raw), Plugin())
        assert problem.startswith("Detection.raw cannot be stored as JSON")
    # Unknown types are stored as their str(), as the store does: not a problem.
    assert check_detection(Detection([], raw={"t": object()}), Plugin()) is None


# -- what the detector states ---------------------------------------------------------------


def test_stated_labels_and_scale_are_read_when_present():
    assert stated_labels(Plugin(labels=None)) is None
    assert stated_labels(Plugin(labels=["a", "b"])) == {"a", "b"}
    assert stated_score_range(Plugin()) is None
    assert stated_score_range(Plugin(score_range=(0, 100))) == (0.0, 100.0)


@pytest.mark.parametrize("labels", ["defect", ("defect", None), 3])
def test_malformed_stated_labels_are_fatal(labels):
    # A single string would be read as its characters: "def" would be a label.
    with pytest.raises(FatalDetectorError, match=r"detector plugin p1 states labels=.*Fix"):
        check([Result("defect", 0.5)], labels=labels)


@pytest.mark.parametrize("scale", [(1.0, 0.0), (0, math.inf), (0,), "0-1", (0, "1")])
def test_malformed_stated_scale_is_fatal(scale):
    with pytest.raises(FatalDetectorError, match=r"states score_range=.*\(low, high\)"):
        check([Result("defect", 0.5)], score_range=scale)


# -- sys.exit in a plugin ------------------------------------------------------------------


def test_sys_exit_becomes_a_fatal_error_with_a_message():
    with pytest.raises(FatalDetectorError) as info:
        call_detector(Plugin(raises=SystemExit(3)), IMAGE)
    message = str(info.value)
    assert "detector plugin p1 called sys.exit(3) while scoring image 'p0007'" in message
    assert "FatalDetectorError" in message and "\n" not in message
    assert isinstance(info.value.__cause__, SystemExit)


def test_call_detector_passes_results_and_other_errors_through():
    detection = Detection([Result("defect", 0.5)])
    assert call_detector(Plugin(detection), IMAGE) is detection
    with pytest.raises(KeyError):
        call_detector(Plugin(raises=KeyError("boom")), IMAGE)


def test_attribute_values_of_a_stated_attribute_are_accepted():
    # Rekognition and IMM add attribute values without notice: "emotion:surprise" is a
    # value of the stated attribute, whether "emotion" or another value of it is stated.
    assert check([Result("emotion:surprise", 0.4)], labels=("face", "emotion")) is None
    assert check([Result("emotion:surprise", 0.4)], labels=("emotion:happy",)) is None
    problem = check([Result("gender:other", 0.4)], labels=("face", "emotion"))
    assert problem is not None and "'gender:other', which is not among" in problem
