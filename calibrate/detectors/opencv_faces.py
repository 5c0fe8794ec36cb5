"""OpenCV's Haar-cascade frontal face detector (Viola-Jones), as a local detector.

:class:`OpenCVFaceDetector` runs ``haarcascade_frontalface_default.xml``, the cascade
shipped inside the ``opencv-python(-headless)`` wheel (``cv2.data.haarcascades``), with
:meth:`cv2.CascadeClassifier.detectMultiScale3` and ``outputRejectLevels=True``. Nothing
is downloaded.

What the score is
-----------------
The cascade has 25 boosted stages; a window is a face candidate only if it passes all
of them. With ``outputRejectLevels=True`` OpenCV reports, per candidate, its reject
level (always 25, the number of stages, for this cascade: windows rejected earlier are
not reported) and its *level weight*: the sum of the last stage's weak classifiers on
that window. A window passes the last stage when that sum is at least the stage's
threshold, so every level weight is ``>=`` that threshold (-2.9928 for this cascade,
less OpenCV's 1e-5 slack); this is the detector's :attr:`~OpenCVFaceDetector.detection_floor`.
The level weight is the score: the higher, the more face-like the window. An image's
score is its highest level weight; an image where no window passes all stages has no
result.

``min_neighbors`` and calibration
---------------------------------
OpenCV merges overlapping candidates into groups and, with ``min_neighbors = k``,
drops every group of ``k`` or fewer windows (and small groups inside bigger ones). A
group's level weight is the highest of its windows. So ``k`` is a *second*, hidden
decision rule besides the threshold on the score: a face whose group is small scores
"no result" however high its level weight. Measured on the bundled faces set
(``datasets/README.md``), ``k = 0`` (every candidate) ranks faces above non-faces
better than ``k = 3`` (ROC AUC 0.90 against 0.87) and leaves fewer faces with no
result (19 of 112 against 30), so:

* to calibrate a threshold on the level weight alone (the rule ``score >= T``), use
  ``min_neighbors=0`` (the default here): every window that passes the cascade is
  a candidate, overlapping windows are merged into one result per group (the same
  overlap rule as OpenCV's, but no group is dropped);
* to calibrate a deployment that calls ``detectMultiScale`` with ``minNeighbors=k``,
  use the same ``k``: the curves then describe exactly that deployment, and images
  whose groups were dropped are "no result" for it too.

``min_neighbors``, ``scale_factor`` and ``min_size`` change the scores, so a detector
built with values other than the defaults carries them in its :attr:`name`
(``"opencv-haar-faces[min_neighbors=3]"``): the store never mixes them in one curve,
and the runner never mistakes one setting's run for another's.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import re
from typing import Any

import numpy as np

from calibrate.detectors.base import Box, Detection, FatalDetectorError, ImageError, Result
from calibrate.errors import InputError

__all__ = ["CASCADE_FILE", "OpenCVFaceDetector"]

#: The cascade file, from ``cv2.data.haarcascades``.
CASCADE_FILE = "haarcascade_frontalface_default.xml"

_NAME = "opencv-haar-faces"
_DEFAULTS = {"min_neighbors": 0, "scale_factor": 1.1, "min_size": 24}
# OpenCV's group-merging tolerance in detectMultiScale (GROUP_EPS in cascadedetect.cpp).
_GROUP_EPS = 0.2
# OpenCV loads each stage threshold as float32 minus this slack (THRESHOLD_EPS).
_THRESHOLD_EPS = 1e-5

# Per process: the runner sends the detector to worker processes by pickling it, and
# a cv2.CascadeClassifier cannot be pickled, so the detector holds only plain values
# and each process loads the cascade once, on first use.
_CASCADES: dict[str, Any] = {}


def _cv2(error: type[Exception] = InputError):
    """Import OpenCV, or say how to install it (``error`` is raised if it is missing)."""
    try:
        import cv2
    except ImportError:
        raise error(
            "the opencv-haar-faces detector needs OpenCV; install it with "
            "pip install 'calibrate[faces]'."
        ) from None
    return cv2


def _cascade_path() -> str:
    cv2 = _cv2()
    path = os.path.join(cv2.data.haarcascades, CASCADE_FILE)
    if not os.path.isfile(path):  # pragma: no cover - a broken OpenCV install
        raise InputError(
            f"{path} is missing: this OpenCV build does not ship its Haar cascades. "
            "Reinstall with pip install --force-reinstall opencv-python-headless."
        )
    return path


def _load_cascade(path: str):
    """The loaded cascade of this process. Failing here stops the run: no image can be
    scored without it (a worker without OpenCV, a cascade file gone since start)."""
    cascade = _CASCADES.get(path)
    if cascade is None:
        cv2 = _cv2(FatalDetectorError)
        cascade = cv2.CascadeClassifier(path)
        if cascade.empty():
            raise FatalDetectorError(f"OpenCV could not load the cascade {path}.")
        if multiprocessing.parent_process() is not None:
            # A runner worker: the runner already runs one process per CPU, and
            # OpenCV's own threads on top of that only contend for the same cores.
            cv2.setNumThreads(1)
        _CASCADES[path] = cascade
    return cascade


def _last_stage_threshold(path: str) -> float:
    """The last stage's threshold as OpenCV uses it: float32, less its 1e-5 slack."""
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    found = re.findall(r"<stageThreshold>\s*([-+0-9.eE]+)\s*</stageThreshold>", text)
    if not found:  # pragma: no cover - not a stage-based cascade
        raise InputError(f"{path} has no stage thresholds; is it a Haar cascade?")
    return float(np.float32(found[-1])) - _THRESHOLD_EPS


def _group(rects: np.ndarray, eps: float = _GROUP_EPS) -> np.ndarray:
    """Group labels of overlapping windows, by OpenCV's ``SimilarRects`` rule.

    Two windows are similar when each of their four edges differs by at most
    ``eps * (smaller width + smaller height) / 2``; groups are the connected
    components of that relation (as ``cv::partition`` finds them).
    """
    n = len(rects)
    x0, y0 = rects[:, 0].astype(np.float64), rects[:, 1].astype(np.float64)
    w, h = rects[:, 2].astype(np.float64), rects[:, 3].astype(np.float64)
    delta = eps * (np.minimum(w[:, None], w[None]) + np.minimum(h[:, None], h[None])) * 0.5
    similar = (
        (np.abs(x0[:, None] - x0[None]) <= delta)
        & (np.abs(y0[:, None] - y0[None]) <= delta)
        & (np.abs((x0 + w)[:, None] - (x0 + w)[None]) <= delta)
        & (np.abs((y0 + h)[:, None] - (y0 + h)[None]) <= delta)
    )
    labels = np.arange(n)
    while True:  # min-label propagation until stable: a few rounds for small groups
        new = np.where(similar, labels[None, :], n).min(axis=1)
        new = np.minimum(new, labels)
        new = new[new]
        if np.array_equal(new, labels):
            return labels
        labels = new


class OpenCVFaceDetector:
    """OpenCV Haar-cascade frontal face detector; score = cascade level weight.

    Parameters
    ----------
    model_version : str, optional
        Recorded with every score. Default:
        ``"haarcascade_frontalface_default@opencv-<cv2.__version__>"``, since the
        cascade file and the detection code both come with the OpenCV release.
    scale_factor : float, default 1.1
        Image pyramid step of ``detectMultiScale3`` (> 1; smaller finds more, slower).
    min_neighbors : int, default 0
        OpenCV's ``minNeighbors``: drop groups of this many windows or fewer. 0 keeps
        every candidate (merged per group), which is what calibrating a threshold on
        the score needs; use the value your deployment uses to calibrate that
        deployment. See the module notes.
    min_size : int, default 24
        Smallest face searched for, in pixels (the cascade's window is 24).

    Attributes
    ----------
    name : str
        ``"opencv-haar-faces"``, with the settings that differ from the defaults in
        brackets (``"opencv-haar-faces[min_neighbors=3]"``).
    model_version : str
    labels : tuple of str
        ``("face",)``.
    kind : str
        ``"cpu"``: runs in worker processes.
    detection_floor : float
        Lowest level weight a candidate can have: the cascade's last stage threshold
        (about -2.99283). Set when the detector is built (which needs OpenCV).

    Raises
    ------
    InputError
        Invalid settings, or OpenCV is not installed.

    Examples
    --------
    >>> from calibrate.detectors.opencv_faces import OpenCVFaceDetector
    >>> det = OpenCVFaceDetector()  # doctest: +SKIP
    >>> det.name, det.labels  # doctest: +SKIP
    ('opencv-haar-faces', ('face',))
    """

    labels = ("face",)
    kind = "cpu"

    def __init__(
        self,
        model_version: str | None = None,
        scale_factor: float = 1.1,
        min_neighbors: int = 0,
        min_size: int = 24,
    ):
        if isinstance(scale_factor, bool) or not isinstance(scale_factor, (int, float)):
            raise InputError(f"scale_factor must be a number above 1, got {scale_factor!r}.")
        if not (math.isfinite(scale_factor) and 1.0 < scale_factor <= 2.0):
            raise InputError(
                f"scale_factor must be above 1 and at most 2 (OpenCV's usual is 1.1), "
                f"got {scale_factor!r}."
            )
        for what, value, low in (("min_neighbors", min_neighbors, 0), ("min_size", min_size, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise InputError(f"{what} must be an integer >= {low}, got {value!r}.")
        if model_version is not None and (
            not isinstance(model_version, str) or not model_version.strip()
        ):
            raise InputError(f"model_version must be a non-empty string, got {model_version!r}.")
        cv2 = _cv2()
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self.min_size = int(min_size)
        self.model_version = model_version or (
            f"{CASCADE_FILE.removesuffix('.xml')}@opencv-{cv2.__version__}"
        )
        self._cascade_file = _cascade_path()
        self.detection_floor = _last_stage_threshold(self._cascade_file)
        changed = [
            f"{k}={getattr(self, k):g}"
            for k in ("min_neighbors", "scale_factor", "min_size")
            if getattr(self, k) != _DEFAULTS[k]
        ]
        self.name = f"{_NAME}[{','.join(changed)}]" if changed else _NAME

    def __repr__(self) -> str:
        return (
            f"OpenCVFaceDetector(model_version={self.model_version!r}, "
            f"scale_factor={self.scale_factor!r}, min_neighbors={self.min_neighbors!r}, "
            f"min_size={self.min_size!r})"
        )

    def settings(self) -> dict[str, Any]:
        """The cascade and the ``detectMultiScale3`` parameters (they change scores)."""
        cv2 = _cv2()
        return {
            "cascade": CASCADE_FILE,
            "opencv": cv2.__version__,
            "scale_factor": self.scale_factor,
            "min_neighbors": self.min_neighbors,
            "min_size": self.min_size,
            "grouping": "opencv" if self.min_neighbors else "merge-only (eps 0.2)",
            "score": "level weight of the last cascade stage (outputRejectLevels=True)",
        }

    # -- scoring --------------------------------------------------------------------

    def score_array(self, pixels: np.ndarray) -> Detection:
        """Score decoded pixels: ``uint8`` of shape (h, w) or (h, w, 3) in RGB order."""
        cv2 = _cv2(FatalDetectorError)
        arr = np.asarray(pixels)
        channels_ok = arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (3, 4))
        if arr.dtype != np.uint8 or not channels_ok or arr.size == 0:
            raise ImageError(
                f"opencv-haar-faces needs a non-empty uint8 gray or RGB image, got "
                f"{arr.dtype} of shape {arr.shape}."
            )
        if arr.ndim == 3:
            arr = cv2.cvtColor(np.ascontiguousarray(arr[..., :3]), cv2.COLOR_RGB2GRAY)
        gray = np.ascontiguousarray(arr)
        h, w = gray.shape
        cascade = _load_cascade(self._cascade_file)
        rects, levels, weights = cascade.detectMultiScale3(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(self.min_size, self.min_size),
            outputRejectLevels=True,
        )
        rects = np.asarray(rects, dtype=np.int64).reshape(-1, 4)
        weights = np.asarray(weights, dtype=np.float64).reshape(-1)
        levels = np.asarray(levels, dtype=np.int64).reshape(-1)
        if len(rects) and self.min_neighbors == 0:
            rects, weights, levels, sizes = self._merge(rects, weights, levels)
        else:
            sizes = np.zeros(len(rects), dtype=np.int64)  # OpenCV does not say
        order = np.lexsort((rects[:, 1], rects[:, 0], -weights))  # best first, stable
        results, raw = [], []
        for i in order:
            x, y, bw, bh = (int(v) for v in rects[i])
            # Windows lie inside the image; a merged box is their mean, so it does too,
            # but clip anyway so no rounding can put a box edge outside.
            box = Box(
                float(max(x, 0)), float(max(y, 0)), float(min(x + bw, w)), float(min(y + bh, h))
            )
            score = float(weights[i])
            results.append(Result("face", score, box))
            raw.append(
                {
                    "box": [x, y, bw, bh],
                    "level_weight": score,
                    "reject_level": int(levels[i]),
                    **({"windows": int(sizes[i])} if self.min_neighbors == 0 else {}),
                }
            )
        return Detection(results=results, raw={"image_size": [w, h], "candidates": raw})

    @staticmethod
    def _merge(rects, weights, levels):
        """One result per group of overlapping windows: mean box, highest weight."""
        labels = _group(rects)
        groups = np.unique(labels)
        out_r = np.empty((len(groups), 4), dtype=np.int64)
        out_w = np.empty(len(groups))
        out_l = np.empty(len(groups), dtype=np.int64)
        sizes = np.empty(len(groups), dtype=np.int64)
        for j, g in enumerate(groups):
            members = labels == g
            # OpenCV's average: integer sums times a float32 reciprocal, rounded to
            # nearest (cvRound), so merged boxes equal OpenCV's for the same group.
            inv = np.float32(1.0) / np.float32(members.sum())
            sums = rects[members].sum(axis=0).astype(np.float32)
            out_r[j] = np.rint(sums * inv).astype(np.int64)
            out_w[j] = weights[members].max()
            out_l[j] = levels[members].max()
            sizes[j] = int(members.sum())
        return out_r, out_w, out_l, sizes

    def detect(self, image) -> Detection:
        """Score one labeled image; an unreadable file raises :class:`ImageError`."""
        try:
            pixels = image.to_array()
        except Exception as exc:  # any decoding failure: this image cannot be scored
            raise ImageError(
                f"opencv-haar-faces cannot read image {image.image_id!r}: {exc}"
            ) from None
        return self.score_array(pixels)
