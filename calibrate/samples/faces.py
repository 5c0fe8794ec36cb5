"""The faces / non-faces set, cut from images that ship with scikit-image.

:func:`make_faces` draws 8-bit grayscale images, 96-160 pixels square: faces (the LFW
face patches of :func:`skimage.data.lfw_subset` on a plain card, and crops around the
face in :func:`skimage.data.astronaut`) and non-faces (the LFW background patches, and
crops of other sample photos). Half of each source's images are degraded (blur, low
contrast, a dark bar over the eyes), so a face detector's scores overlap. Nothing is
downloaded; see ``datasets/README.md`` for the sources and their licences.

The layout is that of every generated set (see :mod:`calibrate.samples.common`), and
generation is deterministic: the same ``seed`` gives byte-identical files.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from calibrate.errors import InputError
from calibrate.samples.common import (
    _check_generated_dir,
    _check_seed,
    _fresh_images_dir,
    _stratified_split,
    _write_set,
)

__all__ = [
    "FACES_DEGRADATIONS",
    "FACES_GENERATOR_VERSION",
    "FACES_LABELS",
    "FACES_SOURCES",
    "faces_composition",
    "make_faces",
    "render_face_item",
]

#: Bumped whenever the same seed would draw different face images.
FACES_GENERATOR_VERSION = "1"

#: The one label of the faces set.
FACES_LABELS = ("face",)

#: Where the faces set's images come from: every one ships inside the scikit-image
#: wheel (``skimage/data``), so making the set downloads nothing.
#: source -> (images drawn, kind). ``lfw_faces`` and ``lfw_background`` are the first
#: and last 100 patches of :func:`skimage.data.lfw_subset`.
FACES_SOURCES: dict[str, tuple[int, str]] = {
    "lfw_faces": (100, "face"),
    "astronaut": (12, "face"),
    "lfw_background": (100, "non-face"),
    "chelsea": (10, "non-face"),
    "astronaut_no_face": (8, "non-face"),
    "camera_no_face": (6, "non-face"),
    "coffee": (6, "non-face"),
    "rocket": (6, "non-face"),
    "coins": (4, "non-face"),
    "clock": (4, "non-face"),
    "brick": (4, "non-face"),
    "grass": (4, "non-face"),
    "gravel": (4, "non-face"),
    "hubble_deep_field": (4, "non-face"),
    "text": (4, "non-face"),
}

#: Degradations, one per image: ``"none"`` for half of every source's images, the rest
#: split evenly (see :func:`faces_composition`).
FACES_DEGRADATIONS = ("none", "blur", "low_contrast", "eye_bar")

_FACES_SIZE = (96, 160)  # side of the square images, pixels
_FACE_SHARE = (0.60, 0.85)  # side of the face (LFW) or eye-bar region / image side
_BLUR_SIGMA = (2.0, 11.0)  # pixels, at the output size: from mild to faces lost
_CONTRAST = (0.10, 0.40)  # kept share of the deviation from the mean
_NOISE_SIGMA = (1.0, 2.5)  # sensor noise, 8-bit levels
# The eye line in relative face-box coordinates: measured on the mean of the 100 LFW
# face patches (eyes on rows 7-9 of 25).
_EYE_BAND = (0.06, 0.22, 0.94, 0.44)  # x0, y0, x1, y1
# In astronaut(), 512 x 512 pixels: Eileen Collins's face, and her eyes.
_ASTRONAUT_FACE = (180, 62, 274, 168)
_ASTRONAUT_EYES = (186, 88, 268, 113)
# Regions a "no face" crop must stay clear of (the person's head), in source pixels.
_NO_FACE_EXCLUDE = {"astronaut_no_face": (140, 20, 310, 200), "camera_no_face": (140, 40, 290, 220)}
_PHOTO_LOADER = {"astronaut_no_face": "astronaut", "camera_no_face": "camera"}


def faces_composition() -> dict[str, dict[str, int]]:
    """How many images of each source and degradation :func:`make_faces` draws.

    Returns
    -------
    dict
        ``{source: {degradation: count}}`` for every source of :data:`FACES_SOURCES`.
        Half of each source's images (rounded) are undegraded; the rest are split as
        evenly as possible over blur, low contrast and an eye bar, in that order.
    """
    out = {}
    for source, (n, _) in FACES_SOURCES.items():
        n_none = int(round(n / 2))
        rest = n - n_none
        k, extra = divmod(rest, 3)
        out[source] = {
            "none": n_none,
            "blur": k + (extra > 0),
            "low_contrast": k + (extra > 1),
            "eye_bar": k,
        }
    return out


@functools.lru_cache(maxsize=None)
def _face_source(name: str) -> np.ndarray:
    """A source image of the faces set as 8-bit grayscale (cached: decoded once)."""
    try:
        from skimage import data
    except ImportError:
        raise InputError(
            "the faces set is cut from images that ship with scikit-image; install it "
            "with pip install 'calibrate[faces]'."
        ) from None
    loader = "lfw_subset" if name.startswith("lfw_") else _PHOTO_LOADER.get(name, name)
    try:
        arr = getattr(data, loader)()
    except Exception as exc:  # noqa: BLE001 - e.g. a later release that fetches it online
        raise InputError(
            f"skimage.data.{loader}() failed ({type(exc).__name__}: {exc}); the faces set "
            "needs the sample images shipped inside the scikit-image wheel."
        ) from None
    if name.startswith("lfw_"):
        patches = np.rint(arr * 255.0).astype(np.uint8)
        arr = patches[:100] if name == "lfw_faces" else patches[100:]
    else:
        if arr.dtype == bool:
            arr = arr.astype(np.uint8) * 255
        if arr.ndim == 3:
            # ITU-R BT.601 luma, as OpenCV and Pillow convert to gray
            arr = np.rint(arr[..., :3].astype(np.float64) @ [0.299, 0.587, 0.114])
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    arr.flags.writeable = False
    return arr


def _resize(pixels: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    img = Image.fromarray(pixels, mode="L").resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.float64)


def _square_crop(rng, h: int, w: int, exclude) -> tuple[int, int, int, int]:
    """A random square crop of an (h, w) image that does not overlap ``exclude``."""
    short = min(h, w)
    side = int(rng.uniform(0.3, 1.0) * short)
    side = max(side, min(64, short))
    for _ in range(200):
        x0 = int(rng.integers(0, w - side + 1))
        y0 = int(rng.integers(0, h - side + 1))
        box = (x0, y0, x0 + side, y0 + side)
        if exclude is None or not (
            box[0] < exclude[2]
            and exclude[0] < box[2]
            and box[1] < exclude[3]
            and exclude[1] < box[3]
        ):
            return box
        side = max(64, int(side * 0.95))  # shrink until a clear spot exists
    raise AssertionError("no crop clear of the excluded region")  # pragma: no cover


def _inner_box(rng, size: int) -> tuple[int, int, int, int]:
    """Where a face of the LFW kind sits in an image of side ``size``."""
    f = int(round(size * rng.uniform(*_FACE_SHARE)))
    ox = int(rng.integers(0, size - f + 1))
    oy = int(rng.integers(0, size - f + 1))
    return ox, oy, ox + f, oy + f


def _relative(box, rel) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    return (
        int(round(x0 + rel[0] * w)),
        int(round(y0 + rel[1] * h)),
        int(round(x0 + rel[2] * w)),
        int(round(y0 + rel[3] * h)),
    )


def render_face_item(
    rng: np.random.Generator, source: str, index: int, degradation: str
) -> tuple[np.ndarray, dict[str, Any]]:
    """Draw one image of the faces set.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of all randomness for this image. Every parameter is drawn in the same
        order whatever ``degradation`` is, so it changes only the degradation.
    source : str
        A key of :data:`FACES_SOURCES`.
    index : int
        Which image of the source: the LFW patch number (0-99 in its half of
        :func:`skimage.data.lfw_subset`), or the crop number for photos.
    degradation : str
        One of :data:`FACES_DEGRADATIONS`.

    Returns
    -------
    image : numpy.ndarray of uint8, shape (size, size)
        Grayscale; ``size`` from 96 to 160.
    info : dict
        ``crop`` (source pixels, ``[x0, y0, x1, y1]``, exclusive ends), ``face_box``
        (image pixels, positives only, else None), ``degradation`` and ``strength``
        (blur sigma in pixels; kept contrast share; eye-bar gray level; 0.0 for none).
    """
    size = int(rng.integers(_FACES_SIZE[0], _FACES_SIZE[1] + 1))
    inner = _inner_box(rng, size)
    # Drawn up front whatever the degradation, so that it changes nothing else.
    blur_sigma = float(rng.uniform(*_BLUR_SIGMA))
    contrast = float(rng.uniform(*_CONTRAST))
    bar_level = float(rng.integers(0, 41))
    noise_sigma = float(rng.uniform(*_NOISE_SIGMA))
    src = _face_source(source)
    if source in ("lfw_faces", "lfw_background"):
        img, crop, face_box, eye_box = _patch_on_card(src[index], source, size, inner)
    else:
        img, crop, face_box, eye_box = _photo_crop(rng, src, source, size, inner)
    img, strength = _degrade(
        img,
        degradation,
        eye_box,
        blur_sigma=blur_sigma,
        contrast=contrast,
        bar_level=bar_level,
    )
    img = img + noise_sigma * rng.standard_normal(img.shape)
    pixels = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return pixels, {
        "crop": [int(v) for v in crop],
        "face_box": face_box,
        "degradation": degradation,
        "strength": strength,
    }


def _patch_on_card(patch: np.ndarray, source: str, size: int, inner):
    """An LFW patch set into ``inner`` of a plain card: ``(image, crop, face box, eye box)``."""
    crop = [0, 0, patch.shape[1], patch.shape[0]]
    x0, y0, x1, y1 = inner
    # Flat card behind the patch, at the patch's own edge brightness, so the
    # patch's border is not a strong edge (a face patch and a background patch
    # get the same treatment).
    ring = np.concatenate([patch[0], patch[-1], patch[1:-1, 0], patch[1:-1, -1]])
    img = np.full((size, size), float(ring.mean()))
    img[y0:y1, x0:x1] = _resize(patch, x1 - x0)
    face_box = list(inner) if source == "lfw_faces" else None
    return img, crop, face_box, _relative(inner, _EYE_BAND)


def _photo_crop(rng, src: np.ndarray, source: str, size: int, inner):
    """A square crop of a sample photo at ``size``: ``(image, crop, face box, eye box)``."""
    h, w = src.shape
    if source == "astronaut":
        crop = _astronaut_crop(rng, h, w)
    else:
        crop = list(_square_crop(rng, h, w, _NO_FACE_EXCLUDE.get(source)))
    img = _resize(src[crop[1] : crop[3], crop[0] : crop[2]], size)
    if source != "astronaut":
        # No face: the eye bar goes where a face of the LFW kind would have its eyes.
        return img, crop, None, _relative(inner, _EYE_BAND)
    scale = size / (crop[2] - crop[0])
    face_box = [min(max(v, 0), size) for v in _to_image(_ASTRONAUT_FACE, crop, scale)]
    return img, crop, face_box, tuple(_to_image(_ASTRONAUT_EYES, crop, scale))


def _astronaut_crop(rng, h: int, w: int) -> list[int]:
    """A square crop around the astronaut's face, of varied size and offset."""
    fx0, fy0, fx1, fy1 = _ASTRONAUT_FACE
    side = (fx1 - fx0) * rng.uniform(1.25, 2.2)
    cx = (fx0 + fx1) / 2 + rng.uniform(-0.12, 0.12) * side
    cy = (fy0 + fy1) / 2 + rng.uniform(-0.12, 0.12) * side
    cx0 = int(round(min(max(cx - side / 2, 0), w - side)))
    cy0 = int(round(min(max(cy - side / 2, 0), h - side)))
    return [cx0, cy0, cx0 + int(round(side)), cy0 + int(round(side))]


def _to_image(box, crop, scale: float) -> list[int]:
    """A box in source pixels, in the pixels of the resized ``crop``."""
    return [
        int(round((box[0] - crop[0]) * scale)),
        int(round((box[1] - crop[1]) * scale)),
        int(round((box[2] - crop[0]) * scale)),
        int(round((box[3] - crop[1]) * scale)),
    ]


def _degrade(
    img: np.ndarray,
    degradation: str,
    eye_box,
    *,
    blur_sigma: float,
    contrast: float,
    bar_level: float,
) -> tuple[np.ndarray, float]:
    """The degraded image and the degradation's strength (0.0 for none)."""
    if degradation == "blur":
        return ndimage.gaussian_filter(img, blur_sigma, mode="nearest"), round(blur_sigma, 3)
    if degradation == "low_contrast":
        return img.mean() + contrast * (img - img.mean()), round(contrast, 3)
    if degradation == "eye_bar":
        size = img.shape[0]
        x0, y0, x1, y1 = (min(max(v, 0), size) for v in eye_box)
        img[y0:y1, x0:x1] = bar_level
        return img, bar_level
    if degradation != "none":
        raise InputError(f"unknown degradation {degradation!r}; use one of {FACES_DEGRADATIONS}.")
    return img, 0.0


def make_faces(out_dir, *, seed: int = 0, overwrite: bool = False) -> Path:
    """Generate the faces / non-faces set and return its manifest's path.

    Every image is cut from pictures that ship inside the scikit-image wheel (see
    :data:`FACES_SOURCES` and ``datasets/README.md`` for their sources and licences),
    so nothing is downloaded. 112 faces (the 100 face patches of
    :func:`skimage.data.lfw_subset`, set on a plain card, and 12 crops around the
    face in :func:`skimage.data.astronaut`) and 164 non-faces (the 100 LFW background
    patches, and crops of 12 sample photos, among them a cat's face and the two
    photos of people with their heads left out), all 8-bit grayscale, 96-160 pixels
    square, with sensor noise. Half of each source's images are degraded: Gaussian
    blur, low contrast, or a dark bar over the eyes (on non-faces, over the same place
    a face would have them).

    Parameters
    ----------
    out_dir : str or Path
        Directory to write into; created if missing. Must be empty unless
        ``overwrite`` is set and it holds a faces set generated earlier.
    seed : int, default 0
        Same seed gives byte-identical files (with the same scikit-image data, and
        Pillow and SciPy versions that resample and filter alike).
    overwrite : bool, default False
        Replace a faces set generated in ``out_dir`` before.

    Returns
    -------
    Path
        ``<out_dir>/manifest.jsonl``. Each line is ``{"id": "faces-00001", "image":
        "images/faces-00001.png", "labels": ["face"], "split": "calibration",
        "source": "lfw_faces", "source_index": 17, "crop": [0, 0, 25, 25],
        "face_box": [12, 20, 110, 118], "degradation": "blur", "strength": 2.31}``;
        non-faces have ``"labels": []`` and ``"face_box": null``. ``split`` is
        ``"calibration"`` (70%) or ``"test"``, stratified by source.

    Raises
    ------
    InputError
        On invalid arguments, a non-empty output directory, or no scikit-image.

    Examples
    --------
    >>> from calibrate.samples import make_faces
    >>> manifest = make_faces("faces", seed=0)  # doctest: +SKIP
    """
    seed = _check_seed(seed)
    out = Path(out_dir)
    _check_generated_dir(out, overwrite, "faces")
    items, order = _plan_faces(seed)
    split = _stratified_split(order, lambda k: items[k][0], FACES_SOURCES)
    _fresh_images_dir(out, "faces-*.png", "make_faces", overwrite)
    lines, counts, split_counts = _draw_faces(out, items, order, split, seed)
    info = _faces_info(seed, len(items), counts, split_counts)
    return _write_set(out, info, lines)


def _plan_faces(seed: int) -> tuple[list[tuple[str, int, str]], np.ndarray]:
    """Every image as ``(source, index, degradation)``, and the order they are written in."""
    # One canonical list of (source, index, degradation); each item's pixels depend
    # only on the seed and its place in this list, not on the shuffled output order.
    plan_rng = np.random.default_rng([seed, 0])
    composition = faces_composition()
    items: list[tuple[str, int, str]] = []
    for source, (n, _) in FACES_SOURCES.items():
        degr = [d for d in FACES_DEGRADATIONS for _ in range(composition[source][d])]
        degr = [degr[i] for i in plan_rng.permutation(n)]
        items += [(source, i, degr[i]) for i in range(n)]
    order = plan_rng.permutation(len(items))
    return items, order


def _draw_faces(
    out: Path, items: list[tuple[str, int, str]], order: np.ndarray, split: dict, seed: int
) -> tuple[list[str], dict[str, dict[str, int]], dict[str, dict[str, int]]]:
    """Render and save every image: ``(manifest lines, degradation counts, split counts)``."""
    from PIL import Image

    lines = []
    counts: dict[str, dict[str, int]] = {"face": {}, "non-face": {}}
    split_counts: dict[str, dict[str, int]] = {"calibration": {}, "test": {}}
    for i, k in enumerate(order):
        source, index, degradation = items[k]
        rng = np.random.default_rng([seed, 1, int(k)])
        pixels, info = render_face_item(rng, source, index, degradation)
        fid = f"faces-{i + 1:05d}"
        rel = f"images/{fid}.png"
        Image.fromarray(pixels, mode="L").save(out / rel, format="PNG", optimize=False)
        kind = FACES_SOURCES[source][1]
        lines.append(
            json.dumps(
                {
                    "id": fid,
                    "image": rel,
                    "labels": ["face"] if kind == "face" else [],
                    "split": split[k],
                    "source": source,
                    "source_index": index,
                    **info,
                }
            )
        )
        c = counts[kind]
        c[degradation] = c.get(degradation, 0) + 1
        sc = split_counts[split[k]]
        sc[kind] = sc.get(kind, 0) + 1
    return lines, counts, split_counts


def _faces_info(
    seed: int,
    n_images: int,
    counts: dict[str, dict[str, int]],
    split_counts: dict[str, dict[str, int]],
) -> dict[str, Any]:
    """The content of ``dataset.json``."""
    n_face = sum(n for n, kind in FACES_SOURCES.values() if kind == "face")
    return {
        "name": "faces",
        "description": (
            "Faces and non-faces cut from images shipped with scikit-image (LFW patches "
            "and sample photos), upscaled to 96-160 px grayscale, half of them degraded "
            "(blur, low contrast, eye bar)."
        ),
        "generator": "calibrate.samples.make_faces",
        "generator_version": FACES_GENERATOR_VERSION,
        "seed": seed,
        "n_images": n_images,
        "labels": list(FACES_LABELS),
        "image_size": list(_FACES_SIZE),
        "composition": {"face": n_face, "non-face": n_images - n_face},
        "sources": {s: {"n": n, "kind": kind} for s, (n, kind) in FACES_SOURCES.items()},
        "degradations": {k: dict(sorted(v.items())) for k, v in counts.items()},
        "splits": {s: dict(sorted(c.items())) for s, c in split_counts.items()},
        "strength": (
            "blur: Gaussian sigma in pixels; low_contrast: share of contrast kept; "
            "eye_bar: gray level of the bar; none: 0"
        ),
        "scikit_image_version": _skimage_version(),
    }


def _skimage_version() -> str:
    import skimage

    return skimage.__version__
