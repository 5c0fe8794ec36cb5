"""A classical surface-defect detector for the bundled parts set, in two model versions.

:class:`SurfaceDefectDetector` scores grayscale images of machined surfaces for four
defect labels with linear filters applied in one FFT pass:

* ``scratch`` - a bank of oriented line filters (negative second derivative of a
  Gaussian across the line, a long Gaussian along it), bright polarity;
* ``crack`` - the same kind of bank, shorter, dark polarity;
* ``dent`` - a difference of Gaussians, dark polarity;
* ``spot`` - a scale-normalised Laplacian of Gaussian (v1) or determinant of the
  Hessian (v2), either polarity.

The strongest response of each label anywhere in the image (away from a thin border) is
mapped to 0-1 with a logistic and reported with a pixel box around the region that
responds (where the response stays above :data:`REGION_SHARE` of its peak). Every label
gets that result on every image, so there is never "no result" and image-level scores
are the strongest response. Further separate regions of the same label (other local
maxima, outside the boxes already reported) are reported as further detections when
they score at least :data:`SECONDARY_FLOOR`: several defects, or a defect and a
nuisance, give several boxes.

The two versions stand for an old and a retrained model:

* ``"v1"`` reads responses in fixed intensity units (as if trained at one exposure),
  damps line responses along the brushing direction by a fixed factor, and finds
  spots with a Laplacian of Gaussian.
* ``"v2"`` normalises each image by its own robust noise level (median absolute
  deviation of a fine Laplacian) and each line orientation by its own spread over the
  image (which learns the grain), uses other filter scales, finds spots with the
  determinant of the Hessian (less fooled by lines), and maps responses to 0-1 with a
  different logistic: good parts score around 0.5 instead of 0.2.

v2 ranks parts better than v1 for most labels, but its score distributions differ so
much that v1's cost-optimal threshold is badly wrong for it: recalibrate after every
retraining. :meth:`SurfaceDefectDetector.settings` records every parameter.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import scipy.fft
from scipy import ndimage

from calibrate.detectors.base import Box, Detection, ImageError, Result
from calibrate.errors import InputError

__all__ = ["REGION_SHARE", "SECONDARY_FLOOR", "SurfaceDefectDetector", "VERSIONS"]

_LABELS = ("scratch", "dent", "spot", "crack")

#: A detection's box covers the connected region around its peak where the response is
#: at least this share of the peak's.
REGION_SHARE = 0.35

#: Pixels added on every side of a region's box: the filters respond inside a defect's
#: visible falloff, which its ground-truth box includes (measured on the parts set).
_BOX_MARGIN = {"scratch": 1, "dent": 3, "spot": 1, "crack": 2}

#: Lowest score of a detection other than a label's strongest one in an image: weaker
#: local maxima are mostly texture (below 0.5, v2 finds a dozen spot maxima on a good
#: part). The strongest always is reported, so image-level scores are complete; at the
#: detection level, counts at thresholds below this floor miss the unreported regions.
SECONDARY_FLOOR = 0.5


@dataclass(frozen=True)
class _Version:
    """Filter parameters and response-to-score mapping of one model version."""

    normalise: str  # "fixed": divide by `intensity_scale`; "robust": by the image's MAD noise
    intensity_scale: float
    line_normalise: str  # "fixed": as `normalise`; "per_orientation": each line filter's own MAD
    line_angles: int
    scratch_width: float  # sigma across the line, pixels
    scratch_length: float  # sigma along the line, pixels
    crack_width: float
    crack_length: float
    brush_discount: float  # multiplier for line responses within 12 deg of horizontal
    dent_sigmas: tuple[float, float]
    spot_filter: str  # "log": |Laplacian of Gaussian|; "doh": sqrt(determinant of Hessian)
    spot_sigmas: tuple[float, ...]
    border: int
    # logistic per label: score = 1 / (1 + exp(-(response - centre) / width))
    centre: dict[str, float]
    width: dict[str, float]


VERSIONS: dict[str, _Version] = {
    "v1": _Version(
        normalise="fixed",
        intensity_scale=0.02,
        line_normalise="fixed",
        line_angles=12,
        scratch_width=0.8,
        scratch_length=4.0,
        crack_width=0.7,
        crack_length=2.5,
        brush_discount=0.4,
        dent_sigmas=(2.5, 6.0),
        spot_filter="log",
        spot_sigmas=(1.5,),
        border=4,
        centre={"scratch": 5.0, "dent": 11.0, "spot": 7.5, "crack": 5.0},
        width={"scratch": 1.3, "dent": 3.5, "spot": 2.0, "crack": 1.3},
    ),
    "v2": _Version(
        normalise="robust",
        intensity_scale=1.0,
        line_normalise="per_orientation",
        line_angles=16,
        scratch_width=0.7,
        scratch_length=6.0,
        crack_width=0.6,
        crack_length=2.0,
        brush_discount=1.0,
        dent_sigmas=(3.0, 8.0),
        spot_filter="doh",
        spot_sigmas=(1.6,),
        border=4,
        centre={"scratch": 4.0, "dent": 8.0, "spot": 0.55, "crack": 4.0},
        width={"scratch": 0.8, "dent": 2.5, "spot": 0.2, "crack": 1.2},
    ),
}


# ---------------------------------------------------------------------------------------
# Filter bank
# ---------------------------------------------------------------------------------------


def _line_kernel(theta: float, width: float, length: float, half: int) -> np.ndarray:
    """Oriented ridge filter: -d2/dc2 Gaussian across, Gaussian along; zero mean, unit L2."""
    y, x = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    along = x * math.cos(theta) + y * math.sin(theta)
    across = -x * math.sin(theta) + y * math.cos(theta)
    q = (across / width) ** 2
    k = (1.0 - q) * np.exp(-0.5 * q) * np.exp(-0.5 * (along / length) ** 2)
    k -= k.mean()
    return k / np.sqrt((k * k).sum())


def _gauss(sigma: float, half: int) -> np.ndarray:
    y, x = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    g = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    return g / g.sum()


def _dog_kernel(s1: float, s2: float, half: int) -> np.ndarray:
    k = _gauss(s1, half) - _gauss(s2, half)
    k -= k.mean()
    return k / np.sqrt((k * k).sum())


def _log_kernel(sigma: float, half: int) -> np.ndarray:
    """Laplacian of Gaussian (positive on a dark blob, negative on a bright one); zero
    mean, unit L2. The detector takes its absolute value, so both polarities count."""
    y, x = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    r2 = (x * x + y * y) / (sigma * sigma)
    k = (r2 - 2.0) * np.exp(-0.5 * r2)
    k -= k.mean()
    return k / np.sqrt((k * k).sum())


def _hessian_kernels(sigma: float, half: int) -> list[np.ndarray]:
    """Scale-normalised second derivatives of a Gaussian: sigma^2 * (Gxx, Gyy, Gxy)."""
    y, x = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    s2 = sigma * sigma
    g = np.exp(-(x * x + y * y) / (2 * s2)) / (2 * math.pi * s2)
    return [g * (x * x / s2 - 1.0), g * (y * y / s2 - 1.0), g * (x * y / s2)]


class _Bank:
    """All kernels of one version, embedded in one FFT grid for a given image shape."""

    def __init__(self, spec: _Version, shape: tuple[int, int]):
        self.pad = 12
        half = self.pad
        kernels: list[np.ndarray] = []
        slices: dict[str, slice] = {}
        angles = [math.pi * i / spec.line_angles for i in range(spec.line_angles)]
        self.line_angles = np.array(angles)

        def add(name, ks):
            start = len(kernels)
            kernels.extend(ks)
            slices[name] = slice(start, len(kernels))

        for name, width, length in (
            ("scratch", spec.scratch_width, spec.scratch_length),
            ("crack", spec.crack_width, spec.crack_length),
        ):
            add(name, [_line_kernel(a, width, length, half) for a in angles])
        add("dent", [_dog_kernel(*spec.dent_sigmas, half)])
        if spec.spot_filter == "doh":
            add("spot", [k for s in spec.spot_sigmas for k in _hessian_kernels(s, half)])
        else:
            add("spot", [_log_kernel(s, half) for s in spec.spot_sigmas])
        add("noise", [_log_kernel(0.8, half)])
        self.slices = slices
        h, w = shape
        H = scipy.fft.next_fast_len(h + 2 * half, real=True)
        W = scipy.fft.next_fast_len(w + 2 * half, real=True)
        stack = np.zeros((len(kernels), H, W))
        for i, k in enumerate(kernels):
            # place the kernel centred at the origin (circular), so output aligns with input
            kk = k[::-1, ::-1]  # convolution = correlation with the flipped kernel
            n = kk.shape[0]
            stack[i, :n, :n] = kk
            stack[i] = np.roll(stack[i], (-half, -half), axis=(0, 1))
        self.fft = scipy.fft.rfft2(stack).astype(np.complex64)
        self.shape = (H, W)
        # brushing direction is horizontal (theta 0 or pi): discount those line filters
        near = np.minimum(self.line_angles, math.pi - self.line_angles) < math.radians(12)
        self.line_weight = np.where(near, spec.brush_discount, 1.0)[:, None, None]

    def apply(self, gray: np.ndarray) -> np.ndarray:
        p = self.pad
        h, w = gray.shape
        H, W = self.shape
        padded = np.pad(gray.astype(np.float32), ((p, H - h - p), (p, W - w - p)), mode="reflect")
        f = scipy.fft.rfft2(padded)
        out = scipy.fft.irfft2(f[None] * self.fft, s=self.shape, overwrite_x=True)
        return out[:, p : p + h, p : p + w]


def _robust_z(stack: np.ndarray) -> np.ndarray:
    """(x - median) / (1.4826 MAD) of every map of a (k, h, w) stack, map by map."""
    flat = stack[:, ::2, ::2].reshape(stack.shape[0], -1)  # a quarter of the pixels suffices
    med = np.median(flat, axis=1)
    mad = np.median(np.abs(flat - med[:, None]), axis=1)
    mad = np.maximum(1.4826 * mad, 1e-6)
    return (stack - med[:, None, None]) / mad[:, None, None]


# ---------------------------------------------------------------------------------------
# Detector
# ---------------------------------------------------------------------------------------


class SurfaceDefectDetector:
    """Classical filter-bank detector of scratches, dents, spots and cracks.

    Parameters
    ----------
    version : {"v1", "v2"}, default "v1"
        Model version; scores of different versions are not comparable.

    Attributes
    ----------
    name : str
        ``"surface-defect"``.
    model_version : str
    labels : tuple of str
        ``("scratch", "dent", "spot", "crack")``; every image gets one result per label.
    kind : str
        ``"cpu"``.
    detection_floor : None
        Every response is reported; nothing is censored.

    Examples
    --------
    >>> from calibrate.detectors.surface import SurfaceDefectDetector
    >>> det = SurfaceDefectDetector("v2")
    >>> det.name, det.model_version, det.labels
    ('surface-defect', 'v2', ('scratch', 'dent', 'spot', 'crack'))
    """

    name = "surface-defect"
    labels = _LABELS
    kind = "cpu"
    detection_floor = None

    def __init__(self, version: str = "v1"):
        if version not in VERSIONS:
            raise InputError(
                f"unknown surface-defect model version {version!r}; choose one of "
                f"{', '.join(sorted(VERSIONS))}."
            )
        self.model_version = version
        self._spec = VERSIONS[version]
        self._banks: dict[tuple[int, int], _Bank] = {}

    def __repr__(self) -> str:
        return f"SurfaceDefectDetector(version={self.model_version!r})"

    def __getstate__(self):  # send to worker processes without the cached FFTs
        return {"model_version": self.model_version}

    def __setstate__(self, state):
        self.__init__(state["model_version"])

    def settings(self) -> dict[str, Any]:
        """The filter parameters and score mapping of this version."""
        d = asdict(self._spec)
        d["dent_sigmas"] = list(d["dent_sigmas"])
        d["spot_sigmas"] = list(d["spot_sigmas"])
        d["version"] = self.model_version
        d["region_share"] = REGION_SHARE
        d["secondary_floor"] = SECONDARY_FLOOR
        d["box_margin"] = dict(_BOX_MARGIN)
        return d

    # -- scoring --------------------------------------------------------------------

    def _bank(self, shape: tuple[int, int]) -> _Bank:
        bank = self._banks.get(shape)
        if bank is None:
            bank = self._banks[shape] = _Bank(self._spec, shape)
        return bank

    def responses(self, gray: np.ndarray) -> dict[str, tuple[float, int, int]]:
        """Strongest raw response per label and where, before the logistic.

        Parameters
        ----------
        gray : numpy.ndarray, shape (h, w)
            Intensities in 0-1.

        Returns
        -------
        dict
            label -> ``(response, row, col)``.
        """
        b = self._spec.border
        out = {}
        for label, m in self.response_maps(gray).items():
            i = int(np.argmax(m))
            row, col = divmod(i, m.shape[1])
            out[label] = (float(m.flat[i]), row + b, col + b)
        return out

    def response_maps(self, gray: np.ndarray) -> dict[str, np.ndarray]:
        """Raw response map of every label, before the logistic, without the border
        (entry ``[r, c]`` is pixel ``(r + border, c + border)``)."""
        spec = self._spec
        bank = self._bank(gray.shape)
        r = bank.apply(gray)
        b = spec.border
        r = r[:, b:-b, b:-b]
        if spec.normalise == "robust":
            fine = r[bank.slices["noise"]][0, ::2, ::2]
            scale = 1.4826 * float(np.median(np.abs(fine - np.median(fine))))
            scale = max(scale, 1e-4)
        else:
            scale = spec.intensity_scale
        scratch = r[bank.slices["scratch"]]
        crack = -r[bank.slices["crack"]]
        if spec.line_normalise == "per_orientation":
            # each orientation in units of its own spread over the image: the brushed
            # texture inflates the spread of the filters along it, so they count less
            scratch, crack = _robust_z(scratch), _robust_z(crack)
        else:
            scratch, crack = scratch / scale, crack / scale
        return {
            "scratch": (scratch * bank.line_weight).max(axis=0),
            "crack": (crack * bank.line_weight).max(axis=0),
            "dent": -r[bank.slices["dent"]][0] / scale,
            "spot": self._spot_map(r[bank.slices["spot"]]) / scale,
        }

    def _spot_map(self, r: np.ndarray) -> np.ndarray:
        if self._spec.spot_filter == "doh":
            # blobs have two strong curvatures of one sign; lines and edges have one
            lxx, lyy, lxy = r[0::3], r[1::3], r[2::3]
            return np.sqrt(np.maximum(lxx * lyy - lxy * lxy, 0.0)).max(axis=0)
        return np.abs(r).max(axis=0)

    def _half(self, label: str) -> float:
        """Half the side of a label's default box: about the reach of its filter."""
        spec = self._spec
        return {
            "scratch": 2.0 * spec.scratch_length,
            "crack": 2.5 * spec.crack_length,
            "dent": 1.5 * spec.dent_sigmas[0],
            "spot": 2.0 * max(spec.spot_sigmas),
        }[label]

    def _box(self, label: str, m: np.ndarray, row: int, col: int) -> Box:
        """The box of the region around map pixel ``(row, col)`` that responds with at
        least :data:`REGION_SHARE` of the peak, in image pixels (pixel ``i`` spans
        ``[i, i + 1)``); the label's default square where the peak is not positive."""
        b = self._spec.border
        peak = float(m[row, col])
        half = self._half(label)
        reach = int(math.ceil(2 * half))
        r0, c0 = max(row - reach, 0), max(col - reach, 0)
        window = m[r0:row + reach + 1, c0:col + reach + 1]
        if peak > 0:
            regions, _ = ndimage.label(window >= REGION_SHARE * peak)
            rows, cols = np.nonzero(regions == regions[row - r0, col - c0])
            pad = _BOX_MARGIN[label]
            top, bottom = rows.min() + r0 - pad, rows.max() + r0 + 1 + pad
            left, right = cols.min() + c0 - pad, cols.max() + c0 + 1 + pad
        else:
            top, bottom = row - half, row + half + 1
            left, right = col - half, col + half + 1
        h, w = m.shape[0] + 2 * b, m.shape[1] + 2 * b
        return Box(
            x_min=float(max(left + b, 0.0)),
            y_min=float(max(top + b, 0.0)),
            x_max=float(min(right + b, w)),
            y_max=float(min(bottom + b, h)),
            unit="pixel",
        )

    def _score(self, label: str, response: float) -> float:
        z = (response - self._spec.centre[label]) / self._spec.width[label]
        return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0

    def _detections(self, label: str, m: np.ndarray) -> list[tuple[float, float, Box, int, int]]:
        """``(score, response, box, row, col)`` of a label's regions, strongest first.

        The strongest response is always first (the image-level score); other local
        maxima follow while they score at least :data:`SECONDARY_FLOOR`, skipping any
        that lies inside a box already reported.
        """
        b = self._spec.border
        first = int(np.argmax(m))
        # Only responses that can score at least the floor can be secondary detections
        # (the logistic is increasing; a little slack, and the exact test is below): on
        # most parts there are none, and the peak search is skipped.
        spec = self._spec
        logit = math.log(SECONDARY_FLOOR / (1.0 - SECONDARY_FLOOR))
        floor = spec.centre[label] + spec.width[label] * logit
        candidates = np.flatnonzero(m.ravel() >= floor - 1e-9 * (1.0 + abs(floor)))
        flat = np.array([first])
        if candidates.size > 1:
            size = 2 * int(round(self._half(label))) + 1
            peaks = ndimage.maximum_filter(m, size=size, mode="nearest").ravel()
            candidates = candidates[m.ravel()[candidates] == peaks[candidates]]
            # Stable, so the first of equal maxima is np.argmax's, as the image score uses.
            candidates = candidates[np.argsort(-m.ravel()[candidates], kind="stable")]
            flat = np.concatenate([flat, candidates[candidates != first]])
        out: list[tuple[float, float, Box, int, int]] = []
        for i in flat:
            row, col = divmod(int(i), m.shape[1])
            response = float(m[row, col])
            score = self._score(label, response)
            if out and score < SECONDARY_FLOOR:
                break
            y, x = row + b + 0.5, col + b + 0.5
            if any(bx.x_min <= x <= bx.x_max and bx.y_min <= y <= bx.y_max
                   for _, _, bx, _, _ in out):
                continue
            out.append((score, response, self._box(label, m, row, col), row + b, col + b))
        return out

    def score_array(self, pixels: np.ndarray) -> Detection:
        """Score decoded pixels: ``uint8`` of shape (h, w) or (h, w, 3)."""
        arr = np.asarray(pixels)
        if arr.ndim == 3:
            arr = arr[..., :3].mean(axis=2)
        if arr.ndim != 2 or min(arr.shape) < 2 * self._spec.border + 8:
            raise ImageError(
                f"surface-defect needs a 2-D or RGB image at least "
                f"{2 * self._spec.border + 8} pixels on a side, got shape {np.shape(pixels)}."
            )
        gray = arr.astype(np.float64) / 255.0
        results = []
        raw = {}
        for label, m in self.response_maps(gray).items():
            found = self._detections(label, m)
            for score, _, box, _, _ in found:
                results.append(Result(label, score, box))
            _, resp, _, row, col = found[0]
            raw[label] = {"response": round(resp, 6), "row": row, "col": col}
            if len(found) > 1:
                raw[label]["more"] = [{"response": round(r, 6), "row": rr, "col": cc}
                                      for _, r, _, rr, cc in found[1:]]
        order = {k: i for i, k in enumerate(_LABELS)}
        results.sort(key=lambda res: order[res.label])  # stable: strongest first per label
        return Detection(results=results, raw=raw)

    def detect(self, image) -> Detection:
        """Score one labeled image; an unreadable file raises :class:`ImageError`."""
        try:
            pixels = image.to_array()
        except ImageError:
            raise
        except Exception as exc:  # any decoding failure: this image cannot be scored
            raise ImageError(
                f"surface-defect cannot read image {image.image_id!r}: {exc}"
            ) from None
        return self.score_array(pixels)
