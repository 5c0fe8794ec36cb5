"""The detector protocol, its result types and its error taxonomy.

A detector turns one labeled image into zero or more results ``(label, score, box)``
in its own score scale. The runner (:mod:`calibrate.runner`) calls
:meth:`Detector.detect` concurrently, retries :class:`RetryableError`, records an
:class:`ImageError` as a failure of that image and moves on, and stops the whole run on
:class:`FatalDetectorError` (bad credentials, a missing model): retrying those would
only burn quota. Any other exception is treated as a per-image failure and recorded
with its type and message; it is never turned into a score. A detector that calls
``sys.exit()`` stops the run with a :class:`FatalDetectorError` saying so
(:func:`calibrate.detectors.validation.call_detector`).

What a detector returns is checked before anything is stored
(:func:`calibrate.detectors.validation.check_detection`): a result with a label that is
not a non-empty string or not among the detector's stated ``labels``, or a score that is
not a finite number or outside its stated ``score_range``, fails that image with the
reason recorded; the other images are scored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from calibrate.errors import CalibrateError

if TYPE_CHECKING:  # pragma: no cover
    from calibrate.manifest import LabeledImage

__all__ = [
    "Box",
    "Detection",
    "Detector",
    "DetectorError",
    "FatalDetectorError",
    "ImageError",
    "Result",
    "RetryableError",
    "StartGuardMixin",
]


class DetectorError(CalibrateError):
    """Base class of errors a detector raises on purpose."""

    kind = "error"


class RetryableError(DetectorError):
    """A transient failure (throttling, timeout, 5xx): the same call may succeed later.

    Parameters
    ----------
    message : str
    retry_after : float, optional
        Seconds the service asked the client to wait, when it said so.
    """

    kind = "retryable"

    def __init__(self, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class ImageError(DetectorError):
    """This image cannot be scored (unreadable, too large, wrong format): skip it."""

    kind = "image"


class FatalDetectorError(DetectorError):
    """The detector cannot work at all (bad credentials, no such model): stop the run."""

    kind = "fatal"


@dataclass(frozen=True)
class Box:
    """A result's bounding box.

    Attributes
    ----------
    x_min, y_min, x_max, y_max : float
    unit : {"pixel", "ratio"}
        Pixels of the (EXIF-oriented) image, or ratios of its width and height as
        Rekognition reports them.
    """

    x_min: float
    y_min: float
    x_max: float
    y_max: float
    unit: str = "pixel"


@dataclass(frozen=True)
class Result:
    """One thing a detector reported: a label, its score, and optionally where.

    Attributes
    ----------
    label : str
        As the detector names it; label matching is the caller's business.
    score : float
        In the detector's own scale (Viam 0-1, Rekognition 0-100).
    box : Box, optional
    """

    label: str
    score: float
    box: Box | None = None


@dataclass
class Detection:
    """Everything one detector call returned for one image.

    Attributes
    ----------
    results : list of Result
        Possibly empty: a label with no result on an image scores ``-inf`` there.
    raw : object, optional
        The response as the service sent it (JSON-serialisable), kept for audit.
    """

    results: list[Result] = field(default_factory=list)
    raw: Any = None


@runtime_checkable
class Detector(Protocol):
    """What the runner needs from a detector.

    Attributes
    ----------
    name : str
        Detector family and configuration, e.g. ``"surface-defect"``.
    model_version : str
        Scores are comparable only within one version; part of every score's key.
    labels : tuple of str or None
        Every label the detector can emit, when known (used to record "no result").
    kind : {"io", "cpu"}
        ``"io"`` detectors (network calls) run in threads; ``"cpu"`` detectors in
        worker processes.
    detection_floor : float or None
        Lowest score the detector can report at all (a service-side cutoff); scores
        below it are censored and reports say so.
    score_range : tuple of (float, float), optional
        The detector's scale: the lowest and highest score it can report, ends
        included, e.g. ``(0.0, 1.0)`` (Viam, IMM) or ``(0.0, 100.0)`` (Rekognition).
        Optional, so not a member of the protocol (detectors written before it lack
        it; read it with ``getattr(detector, "score_range", None)``). When stated, a
        score outside it fails its image instead of being stored; when absent, scores
        are only checked to be finite.

    Notes
    -----
    ``labels``, when stated, is enforced the same way: a result with another label
    fails its image. State None rather than an incomplete list. Attribute-value labels
    (``attribute:value``, e.g. ``emotion:calm``) are the exception: services add values
    without notice, so stating the attribute (``emotion``) or any of its values admits
    every value of it.
    """

    name: str
    model_version: str
    labels: tuple[str, ...] | None
    kind: str
    detection_floor: float | None

    def detect(self, image: LabeledImage) -> Detection:
        """Score one image. Raise a :class:`DetectorError` subclass on failure, never
        ``sys.exit()``; return ``Detection([])`` when nothing was found."""
        ...

    def settings(self) -> dict[str, Any]:
        """Settings that affect scores (recorded with the run; never credentials)."""
        ...


class StartGuardMixin:
    """Shared by cloud detectors whose start-of-run guard stops a run when its first
    images all fail with an ambiguous code (a sign of misconfiguration). Needs
    ``self._lock`` and ``self._succeeded`` (successes seen by this run)."""

    def note_stored_successes(self, n: int) -> None:
        """Count ``n`` images the resumed run already scored (the runner reads them from
        the store) as successes of this run.

        Successes of earlier processes of the same run disprove misconfiguration as well
        as this process's own: without them a resumed run that met refused images first
        stopped on every re-run, having paid for the same images again.
        """
        with self._lock:
            self._succeeded = max(self._succeeded, int(n))
