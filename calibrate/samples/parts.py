"""The synthetic, seeded parts-inspection set.

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
from calibrate.manifest import GroundTruthObject, LabeledImage
from calibrate.samples.common import (
    _check_generated_dir,
    _check_seed,
    _fresh_images_dir,
    _stratified_split,
    _write_set,
)

__all__ = [
    "PARTS_GENERATOR_VERSION",
    "PARTS_LABELS",
    "PARTS_LINE_PREVALENCE",
    "PARTS_SAMPLE_SHARE",
    "VISIBLE_SHARE",
    "load_parts",
    "make_parts",
    "parts_composition",
    "read_parts_info",
    "render_part",
    "render_part_with_box",
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


#: A defect's box covers every pixel where it reaches this share of its peak contrast.
VISIBLE_SHARE = 0.15


def _visible_box(drawn: np.ndarray) -> tuple[float, float, float, float]:
    """The box of the pixels where a drawn defect reaches :data:`VISIBLE_SHARE` of its
    peak contrast, in the COCO convention (pixel ``i`` spans ``[i, i + 1)``)."""
    rows, cols = np.nonzero(np.abs(drawn) >= VISIBLE_SHARE * np.abs(drawn).max())
    return (float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1))


_DEFECTS = {"scratch": _scratch, "dent": _dent, "spot": _spot, "crack": _crack}


def _nuisances(rng, yy, xx, size, prob=None) -> tuple[np.ndarray, list[str]]:
    prob = _NUISANCE_PROB if prob is None else {**_NUISANCE_PROB, **prob}
    out = np.zeros_like(xx)
    names = []
    if rng.random() < prob["dust"]:
        names.append("dust")
        for _ in range(int(rng.integers(1, 4))):
            cx, cy = rng.uniform(2.0, size - 3.0, size=2)
            sig = rng.uniform(0.4, 0.8)
            amp = rng.uniform(0.03, 0.10) * (1.0 if rng.random() < 0.7 else -1.0)
            out += amp * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sig * sig))
    if rng.random() < prob["machining_mark"]:
        names.append("machining_mark")
        y0 = rng.uniform(4.0, size - 5.0)
        tilt = math.tan(math.radians(rng.uniform(-4.0, 4.0)))
        amp = rng.uniform(0.008, 0.04) * (1.0 if rng.random() < 0.6 else -1.0)
        x0, x1 = -5.0, size + 5.0
        out += amp * _line(xx, yy, x0, y0 + tilt * x0, x1, y0 + tilt * x1, rng.uniform(0.5, 1.0))
    if rng.random() < prob["smudge"]:
        names.append("smudge")
        cx, cy = rng.uniform(8.0, size - 8.0, size=2)
        r = rng.uniform(5.0, 12.0)
        out -= rng.uniform(0.008, 0.04) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
    return out, names


def render_part(
    rng: np.random.Generator, defect: str | None, severity: float, *, size: int = 64,
    nuisance_prob: dict[str, float] | None = None,
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
    nuisance_prob : dict, optional
        Chance of each nuisance (``dust``, ``machining_mark``, ``smudge``) per part,
        overriding the bundled set's (0.35, 0.25, 0.2), e.g. to simulate a dustier line.

    Returns
    -------
    image : numpy.ndarray of uint8, shape (size, size)
    nuisances : list of str
        Which nuisances were drawn (``"dust"``, ``"machining_mark"``, ``"smudge"``).

    See Also
    --------
    render_part_with_box : the same image, and where its defect is.
    """
    pixels, names, _ = render_part_with_box(rng, defect, severity, size=size,
                                            nuisance_prob=nuisance_prob)
    return pixels, names


def render_part_with_box(
    rng: np.random.Generator, defect: str | None, severity: float, *, size: int = 64,
    nuisance_prob: dict[str, float] | None = None,
) -> tuple[np.ndarray, list[str], tuple[float, float, float, float] | None]:
    """Draw one part's image, as :func:`render_part`, and return its defect's box.

    Returns
    -------
    image : numpy.ndarray of uint8, shape (size, size)
    nuisances : list of str
    box : tuple of 4 floats, or None
        ``(x_min, y_min, x_max, y_max)`` in pixels (pixel ``i`` spans ``[i, i + 1)``,
        as in COCO): the box of every pixel where the defect reaches
        :data:`VISIBLE_SHARE` of its peak contrast (whatever its severity, so a faint
        defect has the box an obvious one would have); None for a good part. Drawn from the
        same random numbers, so the image is byte-identical to :func:`render_part`'s.
    """
    yy, xx = _grid(size)
    img = _surface(rng, size, yy, xx)
    box = None
    if defect is not None:
        drawn = _DEFECTS[defect](rng, severity, yy, xx, size)
        img = img + drawn
        box = _visible_box(drawn)
    nuis, names = _nuisances(rng, yy, xx, size, nuisance_prob)
    img = img + nuis
    # sensor: shot noise (grows with brightness) + read noise, then 8-bit quantisation
    sigma = np.sqrt(rng.uniform(0.005, 0.010) ** 2 + 0.00012 * np.clip(img, 0.0, None))
    img = img + sigma * rng.standard_normal(img.shape)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8), names, box


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
        "objects": [{"label": "scratch", "box": [12.3, 20.1, 40.6, 31.9]}], "width": 64,
        "height": 64, "split": "calibration", "severity": 0.37, "nuisances": ["dust"]}``;
        good parts have ``"labels": []``, ``"objects": []`` (real negatives at the
        detection level too) and ``"severity": 0.0``. Boxes are pixels (see
        :func:`render_part_with_box`). ``split`` is ``"calibration"``
        (70%) or ``"test"``, stratified by defect type.

    Raises
    ------
    InputError
        On invalid arguments or a non-empty output directory.

    Examples
    --------
    >>> from calibrate.samples import make_parts
    >>> manifest = make_parts("parts", n_parts=2400, seed=0)  # doctest: +SKIP
    """
    n_parts, seed, image_size = _check_parts_arguments(n_parts, seed, image_size)
    out = Path(out_dir)
    _check_generated_dir(out, overwrite, "parts")
    counts = parts_composition(n_parts)
    kinds = _shuffled_kinds(counts, n_parts, seed)
    # stratified split: the first 70% of each type (in shuffled order) calibrate
    split = _stratified_split(
        range(n_parts), lambda i: kinds[i] or "good", ("good", *PARTS_LABELS)
    )
    _fresh_images_dir(out, "part-*.png", "make_parts", overwrite)
    lines, split_counts, nuisance_counts = _draw_parts(out, kinds, split, seed, image_size)
    info = _parts_info(counts, split_counts, nuisance_counts, seed, n_parts, image_size)
    return _write_set(out, info, lines)


def _check_parts_arguments(n_parts, seed, image_size) -> tuple[int, int, int]:
    if isinstance(n_parts, bool) or not isinstance(n_parts, (int, np.integer)) or n_parts < 1:
        raise InputError(f"n_parts must be a positive integer, got {n_parts!r}.")
    seed = _check_seed(seed)
    if (
        isinstance(image_size, bool)
        or not isinstance(image_size, (int, np.integer))
        or not 48 <= image_size <= 512
    ):
        raise InputError(f"image_size must be an integer from 48 to 512, got {image_size!r}.")
    return int(n_parts), seed, int(image_size)


def _shuffled_kinds(counts: dict[str, int], n_parts: int, seed: int) -> list[str | None]:
    """Each part's defect (None: good), in the order the parts are numbered."""
    plan_rng = np.random.default_rng([seed, 0])
    kinds: list[str | None] = []
    for k in ("good", *PARTS_LABELS):
        kinds += [None if k == "good" else k] * counts[k]
    order = plan_rng.permutation(n_parts)
    return [kinds[i] for i in order]


def _draw_parts(
    out: Path, kinds: list[str | None], split: dict, seed: int, image_size: int
) -> tuple[list[str], dict[str, dict[str, int]], dict[str, int]]:
    """Render and save every part: ``(manifest lines, split counts, nuisance counts)``."""
    from PIL import Image

    lines = []
    split_counts: dict[str, dict[str, int]] = {"calibration": {}, "test": {}}
    nuisance_counts: dict[str, int] = {k: 0 for k in _NUISANCE_PROB}
    for i, kind in enumerate(kinds):
        rng = np.random.default_rng([seed, 1, i])
        severity = 0.0
        if kind is not None:
            severity = round(max(float(rng.beta(*_SEVERITY_BETA)), 0.001), 3)
        pixels, nuis, box = render_part_with_box(rng, kind, severity, size=image_size)
        pid = f"part-{i + 1:05d}"
        rel = f"images/{pid}.png"
        Image.fromarray(pixels, mode="L").save(out / rel, format="PNG", optimize=False)
        labels = [kind] if kind else []
        objects = [{"label": kind, "box": list(box)}] if kind else []
        lines.append(
            json.dumps(
                {
                    "id": pid,
                    "image": rel,
                    "labels": labels,
                    "objects": objects,
                    "width": image_size,
                    "height": image_size,
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
    return lines, split_counts, nuisance_counts


def _parts_info(
    counts: dict[str, int],
    split_counts: dict[str, dict[str, int]],
    nuisance_counts: dict[str, int],
    seed: int,
    n_parts: int,
    image_size: int,
) -> dict[str, Any]:
    """The content of ``dataset.json``."""
    n_def = n_parts - counts["good"]
    return {
        "name": "parts",
        "description": (
            "Synthetic machined-metal surfaces for QC threshold calibration. The sample is "
            "enriched with defects; use line_prevalence as the deployment prevalence."
        ),
        "generator": "calibrate.samples.make_parts",
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
        With ``metadata`` holding ``severity`` and ``nuisances``, and the defect's box
        in ``objects`` (sets generated before boxes were written have ``None``).
    """
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
                    objects=None if "objects" not in rec else tuple(
                        GroundTruthObject(o["label"], tuple(o["box"])) for o in rec["objects"]),
                    width=rec.get("width"),
                    height=rec.get("height"),
                    split=rec["split"],
                    metadata={"severity": rec["severity"], "nuisances": rec["nuisances"]},
                    source=f"{p}:{lineno}",
                )
            )
    return out
