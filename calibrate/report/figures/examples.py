"""Example images at a chosen cutoff: the good parts that score highest (closest to being
scrapped, or scrapped) and the defects that score lowest (closest to being shipped, or
shipped), as small inline thumbnails.

Only images whose URI is a readable local file (a path or ``file://``) are shown; remote
URIs (``s3://``, ``https://``, ...) are never fetched: the report says so instead.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np

__all__ = ["example_images"]

#: Longest side of a thumbnail, in pixels.
THUMB_PX = 128


def _local_path(uri: str) -> Path | None:
    """The local file a URI names, or None when it is remote."""
    if uri.startswith("file://"):
        return Path(unquote(urlparse(uri).path))
    if "://" in uri:
        return None
    return Path(uri)


def _thumbnail(path: Path) -> str | None:
    """A base64 PNG/JPEG data URI of the image, or None when it cannot be read."""
    try:
        from PIL import Image

        with Image.open(path) as im:
            im.thumbnail((THUMB_PX, THUMB_PX))
            small = im.size[0] * im.size[1] <= 96 * 96
            if im.mode not in ("L", "RGB"):
                im = im.convert("RGB")
            buf = io.BytesIO()
            if small:  # tiny images stay lossless
                im.save(buf, format="PNG", optimize=True)
                kind = "png"
            else:
                im.save(buf, format="JPEG", quality=82)
                kind = "jpeg"
    except Exception:  # noqa: BLE001 - any unreadable image is skipped, with a note
        return None
    return f"data:image/{kind};base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _uris(store, image_ids: list[str], dataset: str | None) -> dict[str, str]:
    """URI of each current image id (read-only query of the store's image table)."""
    if not image_ids:
        return {}
    cond = "AND dataset = $dataset" if dataset else ""
    params: dict[str, Any] = {"ids": list(image_ids)}
    if dataset:
        params["dataset"] = dataset
    with store._lock:
        rows = store._db().execute(
            f"SELECT image_id, uri FROM images WHERE current AND list_contains($ids, image_id) "
            f"{cond} ORDER BY image_key", params).fetchall()
    out: dict[str, str] = {}
    for image_id, uri in rows:
        out.setdefault(image_id, uri)
    return out


def example_images(store, result, *, split=None, dataset=None, k: int = 4) -> dict[str, Any]:
    """Thumbnails of the ``k`` highest-scoring negatives and lowest-scoring positives.

    Parameters
    ----------
    store : calibrate.store.ScoreStore
    result : calibrate.thresholds.LabelThreshold
        A result with a choice: its threshold decides which examples fire.
    split, dataset : str, optional
        The images the choice was made on.
    k : int

    Returns
    -------
    dict
        ``negatives`` and ``positives``: lists of ``dict(image_id, score, fires,
        data_uri)``; ``note``: why some or all images are not shown ("" when all are).
    """
    t = result.choice.threshold
    s = store.scores(result.detector, result.model_version, result.label,
                     dataset=dataset, split=split)
    neg = np.flatnonzero(~s.positive)
    pos = np.flatnonzero(s.positive)
    # Stable orders, so the same data always shows the same examples.
    top_neg = neg[np.argsort(-s.scores[neg], kind="stable")[:k]]
    low_pos = pos[np.argsort(s.scores[pos], kind="stable")[:k]]
    ids = [str(s.image_ids[i]) for i in np.concatenate([top_neg, low_pos])]
    uris = _uris(store, ids, dataset)
    skipped: list[str] = []

    def items(idx):
        out = []
        for i in idx:
            image_id, score = str(s.image_ids[i]), float(s.scores[i])
            uri = uris.get(image_id, "")
            path = _local_path(uri) if uri else None
            data = _thumbnail(path) if path is not None and path.is_file() else None
            if data is None:
                skipped.append(uri or image_id)
                continue
            out.append(dict(image_id=image_id, score=score, fires=bool(score >= t),
                            data_uri=data))
        return out

    negatives, positives = items(top_neg), items(low_pos)
    note = ""
    if skipped:
        remote = [u for u in skipped if "://" in u and not u.startswith("file://")]
        note = (f"{len(skipped)} example image(s) not shown: "
                + ("remote URIs (e.g. " + remote[0] + ") are not fetched by the report"
                   if remote else "not readable here (e.g. " + skipped[0] + ")") + ".")
    return dict(negatives=negatives, positives=positives, note=note)
