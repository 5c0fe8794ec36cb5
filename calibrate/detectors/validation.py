"""Checking what a detector returned before any of it is stored.

Detectors are plugins: anything with ``detect(image)`` can be passed as
``--detector package.module:callable``, so the runner cannot trust what comes back.
One malformed result must cost one image, never the run: the store refuses a whole
batch that holds a string score or a ``None`` label, so letting either through would
abort the run, while a score outside the detector's scale or a label it never said it
emits would be stored and silently skew every curve. :func:`check_detection` is the
one place that says what a valid detection is; the runner records its answer as a
failure of that image (kind ``"error"``, which also counts towards the run's
"too many unexpected errors in a row" stop, so a plugin broken on every image still
stops the run early with the reason).

A detector states what it may return with two attributes (see
:class:`~calibrate.detectors.base.Detector`): ``labels`` (every label it can emit, or
None when it cannot say) and the optional ``score_range`` (lowest and highest score it
can report, e.g. ``(0.0, 1.0)``). Whatever it states is enforced; nothing is assumed
when it states nothing. One allowance: attribute-value labels (``emotion:calm``, as
the Rekognition and IMM adapters name them) are open families, because the services
add values without notice; a stated attribute (``emotion``) or any stated value of it
(``emotion:happy``) admits every ``emotion:<value>``.

:func:`call_detector` covers what no returned value can: a plugin that calls
``sys.exit()``. :class:`SystemExit` is not an :class:`Exception`, so it would pass
every ``except Exception`` on its way up and end the whole program with the plugin's
exit code and no message; it becomes a :class:`~calibrate.detectors.base.FatalDetectorError`
that says what happened.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from calibrate.detectors.base import Detection, FatalDetectorError

if TYPE_CHECKING:  # pragma: no cover
    from calibrate.detectors.base import Detector
    from calibrate.manifest import LabeledImage

__all__ = ["call_detector", "check_detection", "stated_labels", "stated_score_range"]

_BOX_COORDINATES = ("x_min", "y_min", "x_max", "y_max")
_BOX_UNITS = ("pixel", "ratio")
#: Stated labels shown in a message before "and N more": Rekognition-sized label sets
#: would otherwise make a failure message longer than the store row it lives in.
_LABELS_SHOWN = 10


def call_detector(detector: Detector, image: LabeledImage) -> Detection:
    """Call ``detector.detect(image)``, turning a ``sys.exit()`` into a fatal error.

    Parameters
    ----------
    detector : Detector
    image : calibrate.manifest.LabeledImage

    Returns
    -------
    Detection
        Whatever the detector returned, unchecked: pass it to :func:`check_detection`.

    Raises
    ------
    FatalDetectorError
        When the detector raised :class:`SystemExit`: a detector that exits means it
        cannot go on, and continuing with the next image would only exit again.
    Exception
        Anything else the detector raised, unchanged (the runner classifies it).
    """
    try:
        return detector.detect(image)
    except SystemExit as exc:
        raise FatalDetectorError(
            f"{_who(detector)} called sys.exit({exc.code!r}) while scoring image "
            f"{getattr(image, 'image_id', image)!r}; a detector must raise ImageError "
            "(skip this image), RetryableError (try again later) or FatalDetectorError "
            "(stop the run), from calibrate.detectors, instead of exiting."
        ) from exc


def check_detection(detection: Any, detector: Detector) -> str | None:
    """Why a detection cannot be stored, or None when it can.

    Parameters
    ----------
    detection : object
        What ``detector.detect(image)`` returned.
    detector : Detector
        The detector that returned it: its ``labels`` and ``score_range``, when stated,
        are enforced.

    Returns
    -------
    str or None
        A one-line reason naming the result (its index and label) and the fix, to be
        recorded as the image's failure; None when every result is valid. Checked: a
        :class:`~calibrate.detectors.base.Detection` whose ``results`` is a list or
        tuple; each result has a non-empty string ``label`` among the stated labels,
        a ``score`` that is a real number (not a string, not a bool), finite and within
        the stated ``score_range`` (ends included), and a ``box`` that is None or has
        finite coordinates and unit ``"pixel"`` or ``"ratio"``; ``raw`` can be stored as
        JSON.

    Raises
    ------
    FatalDetectorError
        When the detector's stated ``labels`` or ``score_range`` is malformed: no
        detection of it can be checked, so the run must stop until it is fixed.
    """
    if not isinstance(detection, Detection):
        return (
            f"detector returned {type(detection).__name__}, not a Detection; return "
            "Detection([]) when it found nothing."
        )
    results = detection.results
    if not isinstance(results, (list, tuple)):
        return f"Detection.results is {type(results).__name__}, not a list of Result."
    labels = stated_labels(detector)
    families = None if labels is None else {lab.partition(":")[0] for lab in labels}
    score_range = stated_score_range(detector)
    for k, result in enumerate(results):
        problem = _result_problem(k, result, labels, families, score_range)
        if problem:
            return problem
    return _raw_problem(detection.raw)


def stated_labels(detector: Detector) -> frozenset[str] | None:
    """The labels a detector says it can emit, or None when it does not say.

    Raises
    ------
    FatalDetectorError
        When ``labels`` is neither None nor a collection of non-empty strings (a
        single string would otherwise be read as its characters).
    """
    labels = getattr(detector, "labels", None)
    if labels is None:
        return None
    if isinstance(labels, str) or not isinstance(labels, Collection) or not all(
        isinstance(x, str) and x for x in labels
    ):
        raise FatalDetectorError(
            f"{_who(detector)} states labels={labels!r}; labels must be a tuple of "
            "label names (or None when the detector cannot list them). Fix the detector."
        )
    return frozenset(labels)


def stated_score_range(detector: Detector) -> tuple[float, float] | None:
    """``(low, high)`` of a detector's scores, or None when it does not say.

    Raises
    ------
    FatalDetectorError
        When ``score_range`` is neither None nor two finite numbers with low < high.
    """
    stated = getattr(detector, "score_range", None)
    if stated is None:
        return None
    try:
        low, high = stated
        valid = _is_real(low) and _is_real(high) and math.isfinite(low) \
            and math.isfinite(high) and low < high
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise FatalDetectorError(
            f"{_who(detector)} states score_range={stated!r}; it must be (low, high), "
            "two finite numbers with low < high, e.g. (0.0, 1.0), or None when the "
            "scale is unknown. Fix the detector."
        )
    return float(low), float(high)


def _result_problem(
    k: int,
    result: Any,
    labels: frozenset[str] | None,
    families: set[str] | None,
    score_range: tuple[float, float] | None,
) -> str | None:
    """Why result number ``k`` cannot be stored, or None.

    ``families`` are the attributes of the stated labels (``"emotion"`` of
    ``"emotion:calm"``, and every plain label itself): an ``attribute:value`` label of a
    stated attribute is accepted, since services add attribute values without notice.
    """
    if not (hasattr(result, "label") and hasattr(result, "score")):
        return (
            f"result {k} is {type(result).__name__}, not a Result; build results as "
            "Result(label, score, box)."
        )
    label, score = result.label, result.score
    if not isinstance(label, str) or not label.strip():
        return f"result {k} has label {label!r}; a label must be a non-empty string."
    if labels is not None and label not in labels and not (
        ":" in label and label.partition(":")[0] in families
    ):
        return (
            f"result {k} has label {label!r}, which is not among the detector's stated "
            f"labels ({_listed(labels)}); add it to the detector's labels or map it to one."
        )
    if not _is_real(score):
        return (
            f"result {k} ({label!r}) has score {score!r} of type {type(score).__name__}; "
            "a score must be a number (convert it with float() in the detector)."
        )
    if not math.isfinite(score):
        return (
            f"result {k} ({label!r}) has score {score!r}; a score must be finite (leave "
            "a label out of the results when there is no result for it)."
        )
    if score_range is not None and not score_range[0] <= score <= score_range[1]:
        return (
            f"result {k} ({label!r}) has score {score!r}, outside the detector's stated "
            f"score_range {score_range[0]:g} to {score_range[1]:g}; fix the detector's "
            "scaling or its score_range."
        )
    return _box_problem(k, label, getattr(result, "box", None))


def _box_problem(k: int, label: str, box: Any) -> str | None:
    if box is None:
        return None
    coords = [getattr(box, c, None) for c in _BOX_COORDINATES]
    if not all(_is_real(c) and math.isfinite(c) for c in coords):
        return (
            f"result {k} ({label!r}) has box coordinates {coords!r}; a box needs finite "
            "numbers x_min, y_min, x_max, y_max (or box=None)."
        )
    unit = getattr(box, "unit", None)
    if unit not in _BOX_UNITS:
        return f"result {k} ({label!r}) has box unit {unit!r}; use 'pixel' or 'ratio'."
    return None


def _raw_problem(raw: Any) -> str | None:
    # The store keeps ``raw`` as JSON (unknown types as their str()); what even that
    # cannot encode (a dict with tuple keys, a cycle) would fail the whole batch.
    try:
        json.dumps(raw, default=str)
    except (TypeError, ValueError, RecursionError) as exc:
        return (
            f"Detection.raw cannot be stored as JSON ({exc}); keep the response as "
            "dicts with string keys, lists, strings and numbers."
        )
    return None


def _is_real(x: Any) -> bool:
    # bool is an int to Python, but True is no score; numpy floats are numbers.Real.
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _listed(labels: frozenset[str]) -> str:
    names = sorted(labels)
    shown = ", ".join(repr(n) for n in names[:_LABELS_SHOWN])
    more = len(names) - _LABELS_SHOWN
    return f"{shown} and {more} more" if more > 0 else shown


def _who(detector: Any) -> str:
    name = getattr(detector, "name", type(detector).__name__)
    version = getattr(detector, "model_version", None)
    return f"detector {name} {version}" if version else f"detector {name}"
