"""Detections matched to ground-truth objects: the COCO protocol, exact and vectorised.

At ``unit = "detection"`` one error is one detection or one object, not one image.
Every detection (a result with a box) is matched to the ground-truth objects of its
image and label exactly as pycocotools' ``COCOeval.evaluateImg`` does with
``areaRng = all``, unlimited ``maxDets`` and one IoU threshold ``tau``:

* matching is class-aware: a detection only meets objects of its own label;
* within an (image, label), detections are taken in descending score order, ties kept
  in input order (pycocotools sorts ``-score`` with a stable mergesort);
* each detection goes to the not yet matched, non-ignored object with the highest IoU
  ``>= tau``; among equal IoUs the object that comes *last* in input order wins (the
  ``>=`` in pycocotools' scan replaces the running best);
* only when no such object is left, an *ignore* object (COCO ``iscrowd = 1``) with
  ``intersection / detection area >= tau`` absorbs it: the detection then counts as
  neither true nor false, and one ignore object can absorb any number of detections.

Because detections are taken in score order, removing every detection below a
threshold ``T`` never changes how the ones above it were matched. So one pass gives
exact counts for every threshold as running sums, and a detection-level
:class:`~calibrate.curves.CountTable` says it all:

* **positives** are the non-ignored objects, each keyed by the score of the detection
  that matched it (``-inf`` when none did: missed at every threshold, the "no result"
  convention);
* **negatives** are the false detections (matched to nothing), keyed by their score.

At ``T``: true detections = positives ``>= T``; missed objects = positives ``< T``;
false detections = negatives ``>= T``.

Boxes are ``(x_min, y_min, x_max, y_max)`` in pixels (pycocotools uses
``(x, y, width, height)``; IoU is the same number).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from calibrate.curves import CountTable, ErrorCurve
from calibrate.errors import InputError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "BOX_COLUMNS",
    "DEFAULT_IOU_THRESHOLD",
    "DetectionTable",
    "Matches",
    "box_iou",
    "detection_curve",
    "match_detections",
]

#: The IoU threshold of the COCO protocol's headline figure (AP50) and the default here.
DEFAULT_IOU_THRESHOLD = 0.5

#: Box columns of the detection and object frames, in pixels.
BOX_COLUMNS = ("x_min", "y_min", "x_max", "y_max")

# pycocotools caps the threshold just below 1 so that IoU 1.0 boxes still match at tau=1.
_IOU_CAP = 1 - 1e-10


def box_iou(det, obj, crowd) -> np.ndarray:
    """IoU of box pairs, as pycocotools' ``maskUtils.iou`` computes it for boxes.

    Parameters
    ----------
    det, obj : ndarray, shape (n, 4)
        Paired boxes ``(x_min, y_min, x_max, y_max)``.
    crowd : ndarray of bool, shape (n,)
        Where the object is a crowd/ignore object: the IoU is then
        ``intersection / detection area`` (how much of the detection lies in the crowd).

    Returns
    -------
    ndarray of float64, shape (n,)
        0 where the boxes do not overlap.
    """
    det = np.asarray(det, dtype=np.float64)
    obj = np.asarray(obj, dtype=np.float64)
    w = np.minimum(det[:, 2], obj[:, 2]) - np.maximum(det[:, 0], obj[:, 0])
    h = np.minimum(det[:, 3], obj[:, 3]) - np.maximum(det[:, 1], obj[:, 1])
    overlap = (w > 0) & (h > 0)
    inter = np.where(overlap, w * h, 0.0)
    d_area = (det[:, 2] - det[:, 0]) * (det[:, 3] - det[:, 1])
    o_area = (obj[:, 2] - obj[:, 0]) * (obj[:, 3] - obj[:, 1])
    union = np.where(crowd, d_area, d_area + o_area - inter)
    out = np.zeros(inter.shape, dtype=np.float64)
    np.divide(inter, union, out=out, where=overlap)
    return out


# ---------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------


def _frame(data, name: str, columns: tuple[str, ...]) -> pd.DataFrame:
    import pandas as pd

    frame = data if isinstance(data, pd.DataFrame) else pd.DataFrame(data)
    missing = [c for c in columns if c not in frame.columns]
    if missing and len(frame.columns):
        raise InputError(
            f"{name} lack column(s) {', '.join(missing)}; they need "
            f"{', '.join(columns)} (boxes x_min, y_min, x_max, y_max in pixels)."
        )
    if missing:  # an empty mapping: no rows at all
        frame = pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    return frame


def _boxes(frame: pd.DataFrame, name: str) -> np.ndarray:
    try:
        boxes = frame[list(BOX_COLUMNS)].to_numpy(np.float64).reshape(-1, 4)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name}: box coordinates must be numbers ({exc}).") from None
    bad = ~np.isfinite(boxes).all(axis=1)
    bad |= (boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1])
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"{name}: row {i} (image {frame['image_id'].iloc[i]!r}, label "
            f"{frame['label'].iloc[i]!r}) has the box {boxes[i].tolist()}; a box must be "
            "finite with x_min <= x_max and y_min <= y_max, in pixels."
        )
    return boxes


def _scores(frame: pd.DataFrame) -> np.ndarray:
    try:
        scores = frame["score"].to_numpy(np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"detections: scores must be numbers ({exc}).") from None
    bad = ~np.isfinite(scores)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(
            f"detections: row {i} (image {frame['image_id'].iloc[i]!r}) has the score "
            f"{scores[i]}; every detection needs a finite score (an image without "
            "results simply has no detection rows)."
        )
    return scores


def _check_tau(iou_threshold) -> float:
    try:
        tau = float(iou_threshold)
    except (TypeError, ValueError):
        tau = np.nan
    if not 0 < tau <= 1:
        raise InputError(
            f"iou_threshold must be a number in (0, 1], got {iou_threshold!r}; 0.5 is the "
            "COCO protocol's usual value."
        )
    return tau


# ---------------------------------------------------------------------------------------
# Pairs within (image, label) groups
# ---------------------------------------------------------------------------------------


def _group_pairs(det_group: np.ndarray, obj_group: np.ndarray):
    """Every (detection, object) pair that share a group; both arrays sorted by group.

    Returns positions into the two sorted arrays.
    """
    n_det = det_group.size
    if n_det == 0 or obj_group.size == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty.copy()
    lo = np.searchsorted(obj_group, det_group, side="left")
    hi = np.searchsorted(obj_group, det_group, side="right")
    per_det = hi - lo
    total = int(per_det.sum())
    d = np.repeat(np.arange(n_det, dtype=np.int64), per_det)
    starts = np.cumsum(per_det) - per_det
    o = np.arange(total, dtype=np.int64) - np.repeat(starts - lo, per_det)
    return d, o


def _greedy(pair_det, pair_obj, pair_iou, det_group, n_obj):
    """Match each detection (sorted by group, then score order) to its best free object.

    ``pair_*`` are the candidate pairs (non-ignored object, IoU >= tau). The scan is
    sequential only within a group, so detections are processed in rounds: round ``k``
    takes, in every group at once, the ``k``-th detection that has any candidate.
    """
    n_det = det_group.size
    det_obj = np.full(n_det, -1, dtype=np.int64)
    if pair_det.size == 0:
        return det_obj
    cand = np.unique(pair_det)  # detections with candidates, in processing order
    g = det_group[cand]
    first = np.empty(cand.size, dtype=bool)
    first[0] = True
    np.not_equal(g[1:], g[:-1], out=first[1:])
    run_start = np.maximum.accumulate(np.where(first, np.arange(cand.size), 0))
    rank_of_cand = np.arange(cand.size) - run_start
    rank = np.zeros(n_det, dtype=np.int64)
    rank[cand] = rank_of_cand
    # Preference within a detection: highest IoU, ties to the object that comes last.
    order = np.lexsort((-pair_obj, -pair_iou, pair_det, rank[pair_det]))
    p_det, p_obj = pair_det[order], pair_obj[order]
    p_rank = rank[p_det]
    bounds = np.searchsorted(p_rank, np.arange(int(p_rank[-1]) + 2), side="left")
    taken = np.zeros(n_obj, dtype=bool)
    for k in range(bounds.size - 1):
        a, b = bounds[k], bounds[k + 1]
        dets, objs = p_det[a:b], p_obj[a:b]
        free = ~taken[objs]
        dets, objs = dets[free], objs[free]
        if dets.size == 0:
            continue
        head = np.empty(dets.size, dtype=bool)
        head[0] = True
        np.not_equal(dets[1:], dets[:-1], out=head[1:])
        det_obj[dets[head]] = objs[head]
        taken[objs[head]] = True
    return det_obj


def _crowd_absorbers(pair_det, pair_obj, pair_iou, n_det):
    """For each detection, the ignore object that absorbs it (-1 if none): the highest
    crowd IoU, ties to the last object, as pycocotools' scan picks it."""
    out = np.full(n_det, -1, dtype=np.int64)
    if pair_det.size == 0:
        return out
    order = np.lexsort((-pair_obj, -pair_iou, pair_det))
    d, o = pair_det[order], pair_obj[order]
    head = np.empty(d.size, dtype=bool)
    head[0] = True
    np.not_equal(d[1:], d[:-1], out=head[1:])
    out[d[head]] = o[head]
    return out


# ---------------------------------------------------------------------------------------
# Result
# ---------------------------------------------------------------------------------------


class DetectionTable(NamedTuple):
    """A label's detection-level count table and what its per-image rates divide by.

    Attributes
    ----------
    table : CountTable
        Positives: objects keyed by their matching detection's score (``-inf`` if
        missed); negatives: false detections keyed by their score.
    n_images : int
        Images counted (with and without objects of the label).
    iou_threshold : float
        The IoU at which detections were matched.
    detection_scores : ndarray of float64, optional
        Every distinct score of the label's detections, ascending, including those
        absorbed by ignore regions (which the table does not count): a cutoff written
        to a target may move only between neighbouring values of these without
        changing the keep/drop decision of any detection.
    """

    table: CountTable
    n_images: int
    iou_threshold: float
    detection_scores: np.ndarray | None = None


@dataclass(frozen=True, eq=False)
class Matches:
    """The outcome of matching: per detection and per ground-truth object.

    Arrays are in the order of the input frames (row ``i`` of ``detections`` is
    element ``i`` of every ``detection_*`` array).

    Attributes
    ----------
    iou_threshold : float
    n_images : int
        Images the matching covers (for per-image rates).
    detection_image, detection_label : ndarray of object
    detection_score : ndarray of float64
    detection_matched : ndarray of bool
        A true detection: matched to a non-ignored object.
    detection_ignored : ndarray of bool
        Absorbed by an ignore (crowd) object: neither true nor false.
    detection_object : ndarray of int64
        Row of the object it was matched to or absorbed by, -1 if none.
    object_image, object_label : ndarray of object
    object_ignore : ndarray of bool
    object_score : ndarray of float64
        Score of the detection that matched a non-ignored object; ``-inf`` when none
        did (missed at every threshold) and for ignore objects.
    object_detection : ndarray of int64
        Row of that detection, -1 if none (always -1 for ignore objects).
    """

    iou_threshold: float
    n_images: int
    detection_image: np.ndarray
    detection_label: np.ndarray
    detection_score: np.ndarray
    detection_matched: np.ndarray
    detection_ignored: np.ndarray
    detection_object: np.ndarray
    object_image: np.ndarray
    object_label: np.ndarray
    object_ignore: np.ndarray
    object_score: np.ndarray
    object_detection: np.ndarray

    @property
    def detection_false(self) -> np.ndarray:
        """Detections matched to nothing: false detections at any threshold that keeps them."""
        return ~(self.detection_matched | self.detection_ignored)

    @property
    def labels(self) -> list[str]:
        """Every label with a detection or an object, sorted."""
        return sorted(set(self.detection_label.tolist()) | set(self.object_label.tolist()))

    def count_table(self, label) -> CountTable:
        """The detection-level count table of one label.

        Positives: non-ignored objects keyed by their matching detection's score
        (``-inf`` if missed). Negatives: false detections keyed by their score.
        Absorbed detections and ignore objects are not counted.
        """
        obj = (self.object_label == label) & ~self.object_ignore
        det = (self.detection_label == label) & self.detection_false
        pos, neg = self.object_score[obj], self.detection_score[det]
        return CountTable.from_counts(
            np.concatenate([pos, neg]),
            np.concatenate([np.ones(pos.size, np.int64), np.zeros(neg.size, np.int64)]),
            np.concatenate([np.zeros(pos.size, np.int64), np.ones(neg.size, np.int64)]),
        )

    def detection_table(self, label) -> DetectionTable:
        """:meth:`count_table` of ``label`` with ``n_images``, the IoU threshold and
        the distinct scores of all its detections."""
        scores = np.unique(self.detection_score[self.detection_label == label])
        return DetectionTable(self.count_table(label), self.n_images, self.iou_threshold,
                              scores)

    def to_frame(self) -> pd.DataFrame:
        """One row per detection: image_id, label, score, outcome, object.

        ``outcome`` is ``"true"`` (matched an object), ``"false"`` (matched nothing) or
        ``"ignored"`` (absorbed by an ignore object); ``object`` is the object's row, -1
        for none.
        """
        import pandas as pd

        outcome = np.where(self.detection_matched, "true",
                           np.where(self.detection_ignored, "ignored", "false"))
        return pd.DataFrame({
            "image_id": self.detection_image, "label": self.detection_label,
            "score": self.detection_score, "outcome": outcome,
            "object": self.detection_object,
        })

    def objects_frame(self) -> pd.DataFrame:
        """One row per object: image_id, label, ignore, score (of its matching
        detection, ``-inf`` if missed), detection (its row, -1 for none)."""
        import pandas as pd

        return pd.DataFrame({
            "image_id": self.object_image, "label": self.object_label,
            "ignore": self.object_ignore, "score": self.object_score,
            "detection": self.object_detection,
        })


# ---------------------------------------------------------------------------------------
# Matching
# ---------------------------------------------------------------------------------------


def match_detections(detections, objects, *, iou_threshold: float = DEFAULT_IOU_THRESHOLD,
                     n_images: int | None = None) -> Matches:
    """Match detections to ground-truth objects with the COCO protocol.

    Parameters
    ----------
    detections : pandas.DataFrame or mapping of columns
        ``image_id, label, score, x_min, y_min, x_max, y_max`` (pixels), one row per
        detection. Row order breaks score ties (earlier first), as in pycocotools.
    objects : pandas.DataFrame or mapping of columns
        ``image_id, label, x_min, y_min, x_max, y_max`` and optionally ``ignore``
        (bool, COCO ``iscrowd``). Row order breaks IoU ties (the later object wins).
    iou_threshold : float, default 0.5
        A detection matches an object when their IoU is at least this.
    n_images : int, optional
        Images the data covers, including images with neither objects nor detections
        (for per-image rates). Default: the images named in either frame.

    Returns
    -------
    Matches

    Raises
    ------
    InputError
        On a missing column, a non-finite score or an invalid box (naming the row).

    Examples
    --------
    >>> m = match_detections(
    ...     {"image_id": [1, 1], "label": ["scratch"] * 2, "score": [0.9, 0.8],
    ...      "x_min": [0, 0], "y_min": [0, 0], "x_max": [10, 10], "y_max": [10, 10]},
    ...     {"image_id": [1], "label": ["scratch"], "x_min": [0], "y_min": [0],
    ...      "x_max": [10], "y_max": [10]})
    >>> m.detection_matched.tolist(), m.object_score.tolist()
    ([True, False], [0.9])
    """
    import pandas as pd

    tau = _check_tau(iou_threshold)
    dets = _frame(detections, "detections", ("image_id", "label", "score") + BOX_COLUMNS)
    objs = _frame(objects, "objects", ("image_id", "label") + BOX_COLUMNS)
    d_box, o_box, scores = _boxes(dets, "detections"), _boxes(objs, "objects"), _scores(dets)
    o_ignore = (objs["ignore"].fillna(False).to_numpy(bool) if "ignore" in objs.columns
                else np.zeros(len(objs), dtype=bool))
    n_d = len(dets)
    image_code, images = pd.factorize(
        pd.concat([dets["image_id"], objs["image_id"]], ignore_index=True), sort=False)
    label_code, label_values = pd.factorize(
        pd.concat([dets["label"], objs["label"]], ignore_index=True).astype(str), sort=False)
    group = image_code.astype(np.int64) * max(label_values.size, 1) + label_code
    d_group, o_group = group[:n_d], group[n_d:]

    # Detections by group, then score (descending, stable); objects by group, then
    # non-ignored before ignored (stable), as pycocotools orders them.
    d_order = np.lexsort((-scores, d_group))
    o_order = np.lexsort((o_ignore, o_group))
    dg, og = d_group[d_order], o_group[o_order]
    ds_box, os_box, os_ign = d_box[d_order], o_box[o_order], o_ignore[o_order]

    pd_, po = _group_pairs(dg, og)
    crowd = os_ign[po]
    iou = box_iou(ds_box[pd_], os_box[po], crowd)
    ok = iou >= min(tau, _IOU_CAP)
    real = ok & ~crowd
    det_obj = _greedy(pd_[real], po[real], iou[real], dg, og.size)
    absorbed = ok & crowd
    absorber = _crowd_absorbers(pd_[absorbed], po[absorbed], iou[absorbed], dg.size)

    # Back to input order.
    matched_sorted = det_obj >= 0
    ignored_sorted = ~matched_sorted & (absorber >= 0)
    target_sorted = np.where(matched_sorted, det_obj, absorber)
    detection_object = np.full(n_d, -1, dtype=np.int64)
    detection_matched = np.zeros(n_d, dtype=bool)
    detection_ignored = np.zeros(n_d, dtype=bool)
    has_target = target_sorted >= 0
    detection_object[d_order[has_target]] = o_order[target_sorted[has_target]]
    detection_matched[d_order] = matched_sorted
    detection_ignored[d_order] = ignored_sorted

    object_detection = np.full(len(objs), -1, dtype=np.int64)
    true_rows = np.flatnonzero(detection_matched)
    object_detection[detection_object[true_rows]] = true_rows
    object_score = np.full(len(objs), -np.inf)
    hit = object_detection >= 0
    object_score[hit] = scores[object_detection[hit]]

    return Matches(
        iou_threshold=tau,
        n_images=int(images.size if n_images is None else n_images),
        detection_image=dets["image_id"].to_numpy(),
        detection_label=dets["label"].to_numpy().astype(str).astype(object),
        detection_score=scores,
        detection_matched=detection_matched,
        detection_ignored=detection_ignored,
        detection_object=detection_object,
        object_image=objs["image_id"].to_numpy(),
        object_label=objs["label"].to_numpy().astype(str).astype(object),
        object_ignore=o_ignore,
        object_score=object_score,
        object_detection=object_detection,
    )


def detection_curve(table: CountTable, n_images: int, label: str = "the label") -> ErrorCurve:
    """The exact curve of a detection-level count table, for threshold choice.

    At threshold ``thresholds[i]`` (keep detections with ``score >= T``):
    ``false_negatives`` are missed objects and ``false_positives`` false detections;
    ``n_positive`` is the number of ground-truth objects and ``n_negative`` the number
    of images, so ``false_positive_rate`` is false detections per image. Unlike the
    image unit, ``-inf`` is not a candidate: a missed object is missed whatever is
    kept, so "keep every detection" is the lowest detection score.

    Parameters
    ----------
    table : CountTable
        From :meth:`Matches.count_table` or the store.
    n_images : int
        Images the table covers (with and without objects).
    label : str
        For error messages.

    Raises
    ------
    InputError
        When there are no images, no objects (the miss rate is undefined) or no
        detections of the label (nothing to choose: only "keep none").
    """
    n_obj = table.total_positive
    if n_images <= 0:
        raise InputError(f"{label}: no images with ground-truth boxes to count detections on.")
    if n_obj == 0:
        raise InputError(
            f"{label}: the ground truth has no (non-ignored) object of this label, so its "
            "miss rate is undefined; add images with boxes of it, or use unit = \"image\".")
    real = np.isfinite(table.scores)
    if not real.any():
        raise InputError(
            f"{label}: the detector returned no detection of this label on the "
            f"{n_images:,} images (none outside ignore regions), so every one of the "
            f"{n_obj:,} objects is missed at any cutoff.")
    scores = table.scores[real][::-1]
    fp = np.cumsum(table.n_negative[real][::-1])
    fn = n_obj - np.cumsum(table.n_positive[real][::-1])
    return ErrorCurve(scores, fp, fn, int(n_obj), int(n_images))
