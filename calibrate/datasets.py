"""Bundled sample data: a synthetic, seeded parts-inspection set.

:func:`make_parts` draws small grayscale PNG images of machined metal surfaces (brushed
texture, a lighting gradient, sensor noise), good parts and parts with one defect each:

* ``scratch`` - a thin, bright, straight groove at a random angle and length;
* ``dent`` - a soft, shaded depression (dark centre, a lit rim on one side);
* ``spot`` - a small dark pit or bright deposit;
* ``crack`` - a thin, dark, jagged line; rare (under 1% of parts on the line).

Every defect has a severity in ``(0, 1]`` that sets its contrast, from obvious to nearly
invisible, so no detector separates good from defective parts perfectly. Good and
defective parts also carry the nuisances that cause false rejects on a real line: dust
specks, machining marks along the brushing direction and smudges.

The labeled set is *enriched*: about half of its parts are defective, while on the line
only a few percent are. Both the sample's composition and the line prevalence of each
defect type are written to ``dataset.json`` beside the manifest; use the line prevalence
as the policy's ``prevalence``, not the sample's share.

Layout written by :func:`make_parts`::

    <out>/manifest.jsonl        one JSON object per image (see make_parts)
    <out>/dataset.json          composition, line prevalence, generator settings
    <out>/images/part-00001.png ...
    <out>/.gitignore            "*": generated data is never committed

Generation is deterministic: the same ``seed`` and ``n_parts`` give byte-identical files.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from calibrate.errors import InputError

__all__ = [
    "PARTS_GENERATOR_VERSION",
    "PARTS_LABELS",
    "PARTS_LINE_PREVALENCE",
    "PARTS_SAMPLE_SHARE",
    "load_parts",
    "make_parts",
    "parts_composition",
    "read_parts_info",
    "render_part",
]

#: Bumped whenever the same seed would draw different images.
PARTS_GENERATOR_VERSION = "1"

#: Defect types, in the order detectors report them.
PARTS_LABELS = ("scratch", "dent", "spot", "crack")

#: Share of all parts on the production line that have each defect (the QC engineer's
#: prevalence setting). ``crack`` is the rare type, under 1% of parts.
PARTS_LINE_PREVALENCE = {"scratch": 0.020, "dent": 0.012, "spot": 0.025, "crack": 0.002}

#: Share of the labeled sample given to each defect type (the rest are good parts):
#: enriched about 7-fold compared with the line.
PARTS_SAMPLE_SHARE = {"scratch": 0.18, "dent": 0.14, "spot": 0.16, "crack": 0.015}

_CALIBRATION_SHARE = 0.7
_SEVERITY_BETA = (1.1, 1.5)  # many subtle defects, fewer obvious ones
_NUISANCE_PROB = {"dust": 0.35, "machining_mark": 0.25, "smudge": 0.2}


# ---------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    yy.flags.writeable = False
    xx.flags.writeable = False
    return yy, xx


def _segment_distance(xx, yy, x0, y0, x1, y1) -> np.ndarray:
    """Distance of every pixel centre to the segment (x0, y0)-(x1, y1)."""
    dx, dy = x1 - x0, y1 - y0
    L2 = dx * dx + dy * dy
    if L2 == 0:
        return np.hypot(xx - x0, yy - y0)
    t = np.clip(((xx - x0) * dx + (yy - y0) * dy) / L2, 0.0, 1.0)
    return np.hypot(xx - (x0 + t * dx), yy - (y0 + t * dy))


def _line(xx, yy, x0, y0, x1, y1, width: float) -> np.ndarray:
    """A soft line of unit peak height and Gaussian cross-section ``width`` (sigma)."""
    d = _segment_distance(xx, yy, x0, y0, x1, y1)
    return np.exp(-0.5 * (d / width) ** 2)


def _surface(rng: np.random.Generator, size: int, yy, xx) -> np.ndarray:
    """A clean brushed-metal surface under a ring light, in [0, 1] intensity units."""
    base = rng.uniform(0.42, 0.62)
    pad = 24
    noise = rng.standard_normal((size, size + 2 * pad))
    tex = ndimage.gaussian_filter1d(noise, rng.uniform(5.0, 10.0), axis=1, mode="wrap")
    tex = ndimage.gaussian_filter1d(tex, 0.6, axis=0, mode="wrap")[:, pad:-pad]
    tex *= rng.uniform(0.008, 0.018) / tex.std()
    ang = rng.uniform(0.0, 2.0 * math.pi)
    c = (size - 1) / 2.0
    grad = rng.uniform(0.04, 0.16) * ((xx - c) * math.cos(ang) + (yy - c) * math.sin(ang)) / size
    hx, hy = rng.uniform(0.1, 0.9, size=2) * size
    r2 = ((xx - hx) ** 2 + (yy - hy) ** 2) / (2 * (0.45 * size) ** 2)
    hot = rng.uniform(0.0, 0.08) * np.exp(-r2)
    return base + tex + grad + hot


def _scratch(rng, s, yy, xx, size):
    length = rng.uniform(10.0, 36.0)
    ang = rng.uniform(0.0, math.pi)
    cx, cy = rng.uniform(10.0, size - 10.0, size=2)
    dx, dy = 0.5 * length * math.cos(ang), 0.5 * length * math.sin(ang)
    width = rng.uniform(0.45, 0.85)
    amp = 0.010 + 0.15 * s**1.3
    prof = _line(xx, yy, cx - dx, cy - dy, cx + dx, cy + dy, width)
    # contrast varies along the groove
    t = ((xx - cx) * math.cos(ang) + (yy - cy) * math.sin(ang)) / max(length, 1.0)
    mod = 0.75 + 0.25 * np.cos(2 * math.pi * (t * rng.uniform(0.5, 2.0) + rng.uniform(0, 1)))
    return amp * prof * mod


def _dent(rng, s, yy, xx, size):
    cx, cy = rng.uniform(10.0, size - 10.0, size=2)
    r = rng.uniform(3.5, 7.5)
    depth = 0.008 + 0.13 * s**1.3
    phi = rng.uniform(0.0, 2.0 * math.pi)
    u, v = (xx - cx) / r, (yy - cy) / r
    g = np.exp(-0.5 * (u * u + v * v))
    shade = (u * math.cos(phi) + v * math.sin(phi)) * g
    return -depth * g + 0.9 * depth * shade


def _spot(rng, s, yy, xx, size):
    cx, cy = rng.uniform(6.0, size - 6.0, size=2)
    r = rng.uniform(1.2, 2.8)
    amp = 0.012 + 0.22 * s**1.3
    sign = -1.0 if rng.random() < 0.65 else 1.0
    rho = np.hypot(xx - cx, yy - cy)
    disk = 1.0 / (1.0 + np.exp((rho - r) / 0.45))
    return sign * amp * disk


def _crack(rng, s, yy, xx, size):
    x, y = rng.uniform(14.0, size - 14.0, size=2)
    theta = rng.uniform(0.0, 2.0 * math.pi)
    steps = int(rng.integers(10, 22))
    width = rng.uniform(0.4, 0.6)
    amp = 0.015 + 0.16 * s**1.2
    d = np.full(xx.shape, np.inf)
    for _ in range(steps):
        theta += rng.normal(0.0, 0.35)
        nx, ny = x + 1.8 * math.cos(theta), y + 1.8 * math.sin(theta)
        if not (2.0 <= nx <= size - 3.0 and 2.0 <= ny <= size - 3.0):
            break  # the crack runs off the inspected area
        d = np.minimum(d, _segment_distance(xx, yy, x, y, nx, ny))
        x, y = nx, ny
    return -amp * np.exp(-0.5 * (d / width) ** 2)


_DEFECTS = {"scratch": _scratch, "dent": _dent, "spot": _spot, "crack": _crack}


def _nuisances(rng, yy, xx, size) -> tuple[np.ndarray, list[str]]:
    out = np.zeros_like(xx)
    names = []
    if rng.random() < _NUISANCE_PROB["dust"]:
        names.append("dust")
        for _ in range(int(rng.integers(1, 4))):
            cx, cy = rng.uniform(2.0, size - 3.0, size=2)
            sig = rng.uniform(0.4, 0.8)
            amp = rng.uniform(0.03, 0.10) * (1.0 if rng.random() < 0.7 else -1.0)
            out += amp * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sig * sig))
    if rng.random() < _NUISANCE_PROB["machining_mark"]:
        names.append("machining_mark")
        y0 = rng.uniform(4.0, size - 5.0)
        tilt = math.tan(math.radians(rng.uniform(-4.0, 4.0)))
        amp = rng.uniform(0.008, 0.04) * (1.0 if rng.random() < 0.6 else -1.0)
        x0, x1 = -5.0, size + 5.0
        out += amp * _line(xx, yy, x0, y0 + tilt * x0, x1, y0 + tilt * x1, rng.uniform(0.5, 1.0))
    if rng.random() < _NUISANCE_PROB["smudge"]:
        names.append("smudge")
        cx, cy = rng.uniform(8.0, size - 8.0, size=2)
        r = rng.uniform(5.0, 12.0)
        out -= rng.uniform(0.008, 0.04) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
    return out, names


def render_part(
    rng: np.random.Generator, defect: str | None, severity: float, *, size: int = 64
) -> tuple[np.ndarray, list[str]]:
    """Draw one part's image.

    Parameters
    ----------
    rng : numpy.random.Generator
        Source of all randomness for this part.
    defect : str or None
        One of :data:`PARTS_LABELS`, or None for a good part.
    severity : float
        In ``(0, 1]``; sets the defect's contrast (ignored for good parts).
    size : int, default 64
        Width and height in pixels.

    Returns
    -------
    image : numpy.ndarray of uint8, shape (size, size)
    nuisances : list of str
        Which nuisances were drawn (``"dust"``, ``"machining_mark"``, ``"smudge"``).
    """
    yy, xx = _grid(size)
    img = _surface(rng, size, yy, xx)
    if defect is not None:
        img = img + _DEFECTS[defect](rng, severity, yy, xx, size)
    nuis, names = _nuisances(rng, yy, xx, size)
    img = img + nuis
    # sensor: shot noise (grows with brightness) + read noise, then 8-bit quantisation
    sigma = np.sqrt(rng.uniform(0.005, 0.010) ** 2 + 0.00012 * np.clip(img, 0.0, None))
    img = img + sigma * rng.standard_normal(img.shape)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8), names


# ---------------------------------------------------------------------------------------
# The data set
# ---------------------------------------------------------------------------------------


def parts_composition(n_parts: int = 2400) -> dict[str, int]:
    """How many images of each kind :func:`make_parts` draws for ``n_parts``.

    Returns
    -------
    dict
        ``{"good": ..., "scratch": ..., "dent": ..., "spot": ..., "crack": ...}``;
        defect counts are :data:`PARTS_SAMPLE_SHARE` of ``n_parts`` (at least 2 cracks
        from 100 parts up), the rest are good.
    """
    counts = {k: int(round(n_parts * v)) for k, v in PARTS_SAMPLE_SHARE.items()}
    if n_parts >= 100:
        # the rare type must exist even in small sets, but stay rare
        counts["crack"] = max(counts["crack"], 2)
    counts["good"] = n_parts - sum(counts.values())
    if counts["good"] < 0:  # pragma: no cover - shares sum to < 1
        raise InputError("defect shares exceed the set size.")
    return {"good": counts["good"], **{k: counts[k] for k in PARTS_LABELS}}


def _stratified_split(keys, group_of, groups) -> dict:
    """``key -> "calibration" | "test"``: the first 70% of each group, in ``keys`` order."""
    split = {}
    for group in groups:
        members = [k for k in keys if group_of(k) == group]
        n_cal = int(round(_CALIBRATION_SHARE * len(members)))
        for j, k in enumerate(members):
            split[k] = "calibration" if j < n_cal else "test"
    return split


def _fresh_images_dir(out: Path, pattern: str, generator: str, overwrite: bool) -> Path:
    """``out/images``, emptied of an earlier generation's files; generated data is never
    committed, so the set's folder gets a ``.gitignore`` of ``*``."""
    images = out / "images"
    images.mkdir(parents=True, exist_ok=True)
    if overwrite:
        for old in images.glob(pattern):
            old.unlink()
    (out / ".gitignore").write_text(f"# generated by calibrate.datasets.{generator}\n*\n")
    return images


def _check_generated_dir(out: Path, overwrite: bool, what: str) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a directory; choose another output path.")
    if out.is_dir() and any(out.iterdir()):
        ours = (out / "manifest.jsonl").exists() and (out / "dataset.json").exists()
        if not overwrite:
            raise InputError(
                f"{out} is not empty. Pass overwrite=True (--overwrite) to replace a {what} "
                "set generated there before, or choose an empty directory."
            )
        if not ours:
            raise InputError(
                f"{out} is not empty and does not hold a generated {what} set "
                "(no manifest.jsonl and dataset.json); refusing to overwrite it."
            )


def make_parts(
    out_dir,
    *,
    n_parts: int = 2400,
    seed: int = 0,
    image_size: int = 64,
    overwrite: bool = False,
) -> Path:
    """Generate the synthetic parts-inspection set and return its manifest's path.

    Parameters
    ----------
    out_dir : str or Path
        Directory to write into; created if missing. Must be empty unless
        ``overwrite`` is set and it holds a parts set generated earlier.
    n_parts : int, default 2400
        Number of images. Defect counts are fixed shares of it
        (:data:`PARTS_SAMPLE_SHARE`); the rest are good parts. With the default,
        no defect type has the ~3,000 examples a 0.1% false-accept limit at 95%
        confidence would need, and ``crack`` has only a few dozen.
    seed : int, default 0
        Same seed and ``n_parts`` give byte-identical files.
    image_size : int, default 64
        Width and height of the square images, in pixels (at least 48).
    overwrite : bool, default False
        Replace a parts set generated in ``out_dir`` before.

    Returns
    -------
    Path
        ``<out_dir>/manifest.jsonl``. Each line is
        ``{"id": "part-00001", "image": "images/part-00001.png", "labels": ["scratch"],
        "split": "calibration", "severity": 0.37, "nuisances": ["dust"]}``; good parts
        have ``"labels": []`` and ``"severity": 0.0``. ``split`` is ``"calibration"``
        (70%) or ``"test"``, stratified by defect type.

    Raises
    ------
    InputError
        On invalid arguments or a non-empty output directory.

    Examples
    --------
    >>> from calibrate.datasets import make_parts
    >>> manifest = make_parts("parts", n_parts=2400, seed=0)  # doctest: +SKIP
    """
    if isinstance(n_parts, bool) or not isinstance(n_parts, (int, np.integer)) or n_parts < 1:
        raise InputError(f"n_parts must be a positive integer, got {n_parts!r}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}.")
    if (
        isinstance(image_size, bool)
        or not isinstance(image_size, (int, np.integer))
        or not 48 <= image_size <= 512
    ):
        raise InputError(f"image_size must be an integer from 48 to 512, got {image_size!r}.")
    n_parts, seed, image_size = int(n_parts), int(seed), int(image_size)
    out = Path(out_dir)
    _check_generated_dir(out, overwrite, "parts")

    from PIL import Image

    counts = parts_composition(n_parts)
    plan_rng = np.random.default_rng([seed, 0])
    kinds: list[str | None] = []
    for k in ("good", *PARTS_LABELS):
        kinds += [None if k == "good" else k] * counts[k]
    order = plan_rng.permutation(n_parts)
    kinds = [kinds[i] for i in order]
    # stratified split: the first 70% of each type (in shuffled order) calibrate
    split = _stratified_split(
        range(n_parts), lambda i: kinds[i] or "good", ("good", *PARTS_LABELS)
    )
    _fresh_images_dir(out, "part-*.png", "make_parts", overwrite)

    lines = []
    split_counts: dict[str, dict[str, int]] = {"calibration": {}, "test": {}}
    nuisance_counts: dict[str, int] = {k: 0 for k in _NUISANCE_PROB}
    for i, kind in enumerate(kinds):
        rng = np.random.default_rng([seed, 1, i])
        severity = 0.0
        if kind is not None:
            severity = round(max(float(rng.beta(*_SEVERITY_BETA)), 0.001), 3)
        pixels, nuis = render_part(rng, kind, severity, size=image_size)
        pid = f"part-{i + 1:05d}"
        rel = f"images/{pid}.png"
        Image.fromarray(pixels, mode="L").save(out / rel, format="PNG", optimize=False)
        labels = [kind] if kind else []
        lines.append(
            json.dumps(
                {
                    "id": pid,
                    "image": rel,
                    "labels": labels,
                    "split": split[i],
                    "severity": severity,
                    "nuisances": nuis,
                }
            )
        )
        sc = split_counts[split[i]]
        sc[kind or "good"] = sc.get(kind or "good", 0) + 1
        for n in nuis:
            nuisance_counts[n] += 1

    n_def = n_parts - counts["good"]
    info: dict[str, Any] = {
        "name": "parts",
        "description": (
            "Synthetic machined-metal surfaces for QC threshold calibration. The sample is "
            "enriched with defects; use line_prevalence as the deployment prevalence."
        ),
        "generator": "calibrate.datasets.make_parts",
        "generator_version": PARTS_GENERATOR_VERSION,
        "seed": seed,
        "n_parts": n_parts,
        "image_size": [image_size, image_size],
        "labels": list(PARTS_LABELS),
        "composition": counts,
        "sample_share": {k: counts[k] / n_parts for k in PARTS_LABELS},
        "sample_defective_share": n_def / n_parts,
        "line_prevalence": dict(PARTS_LINE_PREVALENCE),
        "line_defective_share": round(sum(PARTS_LINE_PREVALENCE.values()), 6),
        "enrichment": {
            k: round(counts[k] / n_parts / PARTS_LINE_PREVALENCE[k], 3) for k in PARTS_LABELS
        },
        "splits": {s: dict(sorted(c.items())) for s, c in split_counts.items()},
        "nuisances": nuisance_counts,
        "severity": "0 (good part) or (0, 1]: contrast of the defect, 1 = obvious",
    }
    (out / "dataset.json").write_text(json.dumps(info, indent=2) + "\n")
    manifest = out / "manifest.jsonl"
    tmp = out / "manifest.jsonl.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(manifest)
    return manifest


def read_parts_info(path) -> dict[str, Any]:
    """Read ``dataset.json`` of a parts set (give the directory, manifest or the file)."""
    p = Path(path)
    if p.is_dir():
        p = p / "dataset.json"
    elif p.name != "dataset.json":
        p = p.parent / "dataset.json"
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise InputError(f"{p} not found; generate the set with make_parts first.") from None


def load_parts(manifest, *, split: str | None = None) -> list:
    """The images of a generated parts set as :class:`~calibrate.manifest.LabeledImage`.

    A small reader for this set's own manifest (no content hashes computed), for tests,
    notebooks and examples.

    Parameters
    ----------
    manifest : str or Path
        ``manifest.jsonl`` or the directory holding it.
    split : {"calibration", "test"}, optional
        Keep only this split.

    Returns
    -------
    list of LabeledImage
        With ``metadata`` holding ``severity`` and ``nuisances``.
    """
    from calibrate.manifest import LabeledImage

    p = Path(manifest)
    if p.is_dir():
        p = p / "manifest.jsonl"
    root = p.parent.resolve()
    out = []
    with open(p, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            rec = json.loads(line)
            if split is not None and rec["split"] != split:
                continue
            out.append(
                LabeledImage(
                    image_id=rec["id"],
                    uri=str(root / rec["image"]),
                    labels=frozenset(rec["labels"]),
                    split=rec["split"],
                    metadata={"severity": rec["severity"], "nuisances": rec["nuisances"]},
                    source=f"{p}:{lineno}",
                )
            )
    return out


# ---------------------------------------------------------------------------------------
# Faces / non-faces
# ---------------------------------------------------------------------------------------

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
    blur_sigma = float(rng.uniform(*_BLUR_SIGMA))
    contrast = float(rng.uniform(*_CONTRAST))
    bar_level = float(rng.integers(0, 41))
    noise_sigma = float(rng.uniform(*_NOISE_SIGMA))
    src = _face_source(source)
    face_box = None
    if source in ("lfw_faces", "lfw_background"):
        patch = src[index]
        crop = [0, 0, patch.shape[1], patch.shape[0]]
        x0, y0, x1, y1 = inner
        # Flat card behind the patch, at the patch's own edge brightness, so the
        # patch's border is not a strong edge (a face patch and a background patch
        # get the same treatment).
        ring = np.concatenate([patch[0], patch[-1], patch[1:-1, 0], patch[1:-1, -1]])
        img = np.full((size, size), float(ring.mean()))
        img[y0:y1, x0:x1] = _resize(patch, x1 - x0)
        if source == "lfw_faces":
            face_box = list(inner)
        eye_box = _relative(inner, _EYE_BAND)
    else:
        h, w = src.shape
        if source == "astronaut":
            fx0, fy0, fx1, fy1 = _ASTRONAUT_FACE
            side = (fx1 - fx0) * rng.uniform(1.25, 2.2)
            cx = (fx0 + fx1) / 2 + rng.uniform(-0.12, 0.12) * side
            cy = (fy0 + fy1) / 2 + rng.uniform(-0.12, 0.12) * side
            cx0 = int(round(min(max(cx - side / 2, 0), w - side)))
            cy0 = int(round(min(max(cy - side / 2, 0), h - side)))
            crop = [cx0, cy0, cx0 + int(round(side)), cy0 + int(round(side))]
        else:
            crop = list(_square_crop(rng, h, w, _NO_FACE_EXCLUDE.get(source)))
        img = _resize(src[crop[1] : crop[3], crop[0] : crop[2]], size)
        scale = size / (crop[2] - crop[0])

        def to_image(b):
            return [
                int(round((b[0] - crop[0]) * scale)),
                int(round((b[1] - crop[1]) * scale)),
                int(round((b[2] - crop[0]) * scale)),
                int(round((b[3] - crop[1]) * scale)),
            ]

        if source == "astronaut":
            face_box = [min(max(v, 0), size) for v in to_image(_ASTRONAUT_FACE)]
            eye_box = tuple(to_image(_ASTRONAUT_EYES))
        else:
            eye_box = _relative(inner, _EYE_BAND)

    strength = 0.0
    if degradation == "blur":
        img = ndimage.gaussian_filter(img, blur_sigma, mode="nearest")
        strength = round(blur_sigma, 3)
    elif degradation == "low_contrast":
        img = img.mean() + contrast * (img - img.mean())
        strength = round(contrast, 3)
    elif degradation == "eye_bar":
        x0, y0, x1, y1 = (min(max(v, 0), size) for v in eye_box)
        img[y0:y1, x0:x1] = bar_level
        strength = bar_level
    elif degradation != "none":
        raise InputError(f"unknown degradation {degradation!r}; use one of {FACES_DEGRADATIONS}.")
    img = img + noise_sigma * rng.standard_normal(img.shape)
    pixels = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return pixels, {
        "crop": [int(v) for v in crop],
        "face_box": face_box,
        "degradation": degradation,
        "strength": strength,
    }


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
    >>> from calibrate.datasets import make_faces
    >>> manifest = make_faces("faces", seed=0)  # doctest: +SKIP
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}.")
    seed = int(seed)
    out = Path(out_dir)
    _check_generated_dir(out, overwrite, "faces")

    from PIL import Image

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
    split = _stratified_split(order, lambda k: items[k][0], FACES_SOURCES)
    _fresh_images_dir(out, "faces-*.png", "make_faces", overwrite)

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

    n_face = sum(n for n, kind in FACES_SOURCES.values() if kind == "face")
    info_json: dict[str, Any] = {
        "name": "faces",
        "description": (
            "Faces and non-faces cut from images shipped with scikit-image (LFW patches "
            "and sample photos), upscaled to 96-160 px grayscale, half of them degraded "
            "(blur, low contrast, eye bar)."
        ),
        "generator": "calibrate.datasets.make_faces",
        "generator_version": FACES_GENERATOR_VERSION,
        "seed": seed,
        "n_images": len(items),
        "labels": list(FACES_LABELS),
        "image_size": list(_FACES_SIZE),
        "composition": {"face": n_face, "non-face": len(items) - n_face},
        "sources": {s: {"n": n, "kind": kind} for s, (n, kind) in FACES_SOURCES.items()},
        "degradations": {k: dict(sorted(v.items())) for k, v in counts.items()},
        "splits": {s: dict(sorted(c.items())) for s, c in split_counts.items()},
        "strength": (
            "blur: Gaussian sigma in pixels; low_contrast: share of contrast kept; "
            "eye_bar: gray level of the bar; none: 0"
        ),
        "scikit_image_version": _skimage_version(),
    }
    (out / "dataset.json").write_text(json.dumps(info_json, indent=2) + "\n")
    manifest = out / "manifest.jsonl"
    tmp = out / "manifest.jsonl.tmp"
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(manifest)
    return manifest


def _skimage_version() -> str:
    import skimage

    return skimage.__version__


__all__ += [
    "FACES_DEGRADATIONS",
    "FACES_GENERATOR_VERSION",
    "FACES_LABELS",
    "FACES_SOURCES",
    "faces_composition",
    "make_faces",
    "render_face_item",
]
