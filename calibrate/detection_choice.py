"""The detection decision unit in words and in its own statistics.

At ``unit = "detection"`` the two errors are a missed object (a ground-truth object no
kept detection matches) and a false detection (a kept detection that matches no
object); the label's action names them as today (action ``reject``: a missed object is
the false accept, a false detection the false reject). Every sentence says the
detection words first, with the action's name beside them, so a reader never has to
translate "false accepts" back into objects.

The miss rate is a binomial share of objects (exact Clopper-Pearson, as at the image
unit); false detections per image are counts, not a share of anything, so they get an
exact Poisson bound (:func:`calibrate.stats.poisson_rate_upper`, applied by the policy) and, between
two splits, the exact conditional test of two Poisson rates (:func:`poisson_rate_test`).
"""

from __future__ import annotations

import math

from scipy.stats import binomtest

from calibrate.errors import InputError
from calibrate.formatting import format_figure, format_rate
from calibrate.matching import DetectionTable, detection_curve
from calibrate.policy import Policy, by_action

__all__ = [
    "detection_curve_of",
    "detection_error_words",
    "detection_summary",
    "error_words",
    "limit_words",
    "poisson_rate_test",
    "require_image_unit",
]


def require_image_unit(policy: Policy) -> None:
    """Refuse a detection-unit policy where only an image-level count table exists.

    Such a table (from a scores table, a Parquet dataset, Spark or a warehouse) holds one
    score per image and label: choosing on it would silently answer another question.

    Raises
    ------
    InputError
        When ``policy.unit == "detection"``.
    """
    if policy.detection_unit:
        raise InputError(
            'unit = "detection" needs every detection\'s box and the ground-truth '
            "objects, which an image-level count table does not carry: choose this "
            "label from the store (--store).")


def error_words(policy: Policy, error: str) -> str:
    """An error named for a sentence, plural.

    Parameters
    ----------
    policy : Policy
    error : {"false_accept", "false_reject"}

    Returns
    -------
    str
        ``"false accepts"`` at the image unit; at the detection unit the detection word
        with the action's name beside it, e.g. ``"missed objects (false accepts)"``.
    """
    name = error.replace("_", " ") + "s"
    if not policy.detection_unit:
        return name
    fa, fr = by_action(policy.action, "missed objects", "false detections")
    return f"{fa if error == 'false_accept' else fr} ({name})"


def limit_words(policy: Policy, error: str, errors: int, n: int, about: str) -> tuple[str, str]:
    """``(counted, rate name)`` for a limit's sentence: ``"12 of 200 objects are
    missed"`` and ``"false accepts; miss rate"`` at the detection unit, ``"12 of 200
    positives are false accepts"`` and ``"rate"`` at the image unit."""
    if not policy.detection_unit:
        return f"{errors:,} of {n:,} {about}s are {error_words(policy, error)}", "rate"
    name = error.replace("_", " ") + "s"
    if by_action(policy.action, "false_accept", "false_reject")[0] == error:
        return f"{errors:,} of {n:,} objects are missed", f"{name}; miss rate"
    return f"{errors:,} false detections on {n:,} images", f"{name}; rate"


def detection_summary(policy: Policy, threshold: float, errs, bounds) -> str:
    """The ok-case sentence at the detection unit: objects, detections, per image.

    Parameters
    ----------
    policy : Policy
    threshold : float
    errs : calibrate.policy.ErrorKinds
        The named error counts at ``threshold``.
    bounds : (float, float)
        Exact upper bounds of the false-accept and false-reject figures.

    Returns
    -------
    str
    """
    missed, false_det = by_action(policy.action, errs.false_accepts, errs.false_rejects)
    n_obj, n_img = by_action(policy.action, errs.n_false_accept, errs.n_false_reject)
    miss_up, fd_up = by_action(policy.action, *bounds)
    miss_name, fd_name = by_action(policy.action, "false accepts", "false rejects")
    keeps = ("keep no detection" if math.isinf(threshold) and threshold > 0
             else f"keep detections with score >= {threshold:.6g}")
    return (
        f"Cost-minimal rule per detection (IoU >= {policy.matching_iou:g}): {keeps} "
        f"({policy.action} on fire); {n_obj - missed:,} true detections, {missed:,} of "
        f"{n_obj:,} objects missed ({miss_name}; miss rate {format_rate(missed / n_obj)}, "
        f"exact upper {format_rate(miss_up)}), {false_det:,} false detections "
        f"({fd_name}) on {n_img:,} images ({format_figure(false_det / n_img, 3)} per "
        f"image, exact Poisson upper {format_figure(fd_up, 3)}: false detections per image "
        f"are counts, not a binomial rate) at {policy.confidence:.0%} confidence, on the "
        "data that chose the threshold (held-out figures are the honest ones)."
    )


def detection_error_words(choice) -> str:
    """Both errors of a detection-unit choice in words: missed objects (a share of
    objects) and false detections per image, each with the action's name."""
    miss_name, fd_name = by_action(choice.action, "false accepts", "false rejects")
    return (f"missed objects ({miss_name}) "
            f"{format_rate(choice.missed_objects / choice.n_objects)}, false detections "
            f"({fd_name}) {format_figure(choice.false_detections / choice.n_images, 3)} "
            "per image")


def poisson_rate_test(k1: int, n1: int, k2: int, n2: int) -> float:
    """Two-sided p-value that two Poisson rates (``k1`` events in exposure ``n1``, ``k2``
    in ``n2``) are equal: the exact test conditional on the total, under which ``k2`` is
    binomial with ``p = n2 / (n1 + n2)``. 1.0 when there are no events at all."""
    if k1 + k2 == 0:
        return 1.0
    return float(binomtest(int(k2), int(k1 + k2), n2 / (n1 + n2)).pvalue)


def detection_curve_of(data, label: str):
    """The detection-unit :class:`~calibrate.curves.ErrorCurve` of a label's data, which
    must be a :class:`~calibrate.matching.DetectionTable`."""
    if not isinstance(data, DetectionTable):
        raise InputError(f"{label}: unit = \"detection\" needs detections with boxes "
                         "and ground-truth objects; this data has image scores only.")
    return detection_curve(data.table, data.n_images, label)
