"""The store's vocabulary: run and failure states, the records it returns, and the
redaction every run's settings pass through before they are written."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from calibrate.errors import InputError
from calibrate.secrets import redact

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "DEFAULT_PATH",
    "DetectionRows",
    "FAILURE_KINDS",
    "RUN_STATUSES",
    "LabelScores",
    "RunInfo",
    "VersionData",
    "redact_secrets",
    "settings_json",
]

#: File name used when no path is given.
DEFAULT_PATH = "calibrate.duckdb"

#: Values of ``runs.status``. ``running`` is set by :meth:`ScoreStore.begin_run`; the
#: others by :meth:`ScoreStore.finish_run`.
RUN_STATUSES = ("running", "finished", "interrupted", "failed")

#: Values of ``failures.kind``: retries exhausted, the image itself is bad, the
#: detector cannot work at all, or any other exception.
FAILURE_KINDS = ("retryable", "image", "fatal", "error")

_FINISH_STATUSES = ("finished", "interrupted", "failed")


def _check_finish_status(status: str) -> None:
    """Refuse a status that a run cannot end with."""
    if status not in _FINISH_STATUSES:
        raise InputError(
            f"status must be one of {', '.join(_FINISH_STATUSES)}, got {status!r}."
        )


# A settings key containing any of these (case-insensitive) has its value replaced.
# Over-matching ("keypoint_threshold") only loses a setting from the record, while
# under-matching would write a credential into a file that gets shared and exported.


@dataclass(frozen=True)
class RunInfo:
    """One run as recorded in the store.

    Attributes
    ----------
    run_id : str
        32 hex digits (uuid4).
    detector, model_version : str
        Scores are comparable only within one ``(detector, model_version)``.
    dataset : str
        Name of the labeled image set the run scored.
    dataset_fingerprint : str
        Identifies the exact content of the dataset when the run started.
    settings : dict
        Detector settings that affect scores, with secrets redacted.
    labels : list of str or None
        Labels the detector declared it can emit, when known.
    detection_floor : float or None
        Lowest score the detector can report at all.
    status : {"running", "finished", "interrupted", "failed"}
    started_at : datetime.datetime
        UTC, naive.
    finished_at : datetime.datetime or None
        UTC, naive; None while running.
    """

    run_id: str
    detector: str
    model_version: str
    dataset: str
    dataset_fingerprint: str
    settings: dict[str, Any]
    labels: list[str] | None
    detection_floor: float | None
    status: str
    started_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True, eq=False)
class LabelScores:
    """Image-level scores of one label for one ``(detector, model_version)``.

    The three arrays are aligned: entry ``i`` of each describes the same image. Images
    come in the order they were first registered with :meth:`ScoreStore.add_images`,
    so repeated calls return identical arrays (bootstrap seeds stay reproducible).

    Attributes
    ----------
    image_ids : ndarray of object (str), shape (n,)
        Each image once: one dataset is counted per version.
    scores : ndarray of float64, shape (n,)
        Highest score of the label in the image; ``-inf`` where the detector returned
        no result for the label.
    positive : ndarray of bool, shape (n,)
        True where the label is truly present in the image.
    n_failed : int
        Images the detector failed on and no run of this version ever scored; they
        are not in the arrays.
    """

    image_ids: np.ndarray
    scores: np.ndarray
    positive: np.ndarray
    n_failed: int

    def __len__(self) -> int:
        return int(self.scores.size)


class DetectionRows(NamedTuple):
    """Detections and ground-truth objects of one ``(detector, model_version)``, in pixels,
    as :meth:`ScoreStore.detection_rows` reads them for matching.

    Attributes
    ----------
    detections : pandas.DataFrame
        One row per result: ``image_id, label, score, x_min, y_min, x_max, y_max``
        (pixels; ratio boxes multiplied by the image's width and height), ordered by
        image, label, descending score, then the order the detector returned them.
    objects : pandas.DataFrame
        One row per ground-truth object: ``image_id, label, x_min, y_min, x_max,
        y_max`` (pixels) and ``ignore`` (crowd / don't-care region), ordered by image.
    n_images : int
        Images in the selection: current images with ground-truth boxes that the
        selected run(s) scored (an image with no object and no detection counts).
        The denominator of per-image rates.
    image_ids : ndarray of object (str)
        Those images, in the order they were registered.
    n_failed : int
        Images with boxes that the version failed on and never scored; not included.
    n_without_boxes : int
        Images the version scored whose manifest gave no boxes; not included.
    dataset : str
        The dataset read.
    run_ids : tuple of str
        The runs of the version on that dataset, oldest first; each image's detections
        come from the latest of them that scored it.
    incomplete : str or None
        The warning when incomplete data was used as allowed, else None.
    """

    detections: pd.DataFrame
    objects: pd.DataFrame
    n_images: int
    image_ids: np.ndarray
    n_failed: int
    n_without_boxes: int
    dataset: str
    run_ids: tuple[str, ...]
    incomplete: str | None = None


@dataclass(frozen=True)
class VersionData:
    """Which images the curves of one ``(detector, model_version)`` count, and whether
    its latest run finished them all.

    Attributes
    ----------
    detector, model_version : str
    dataset : str
        The dataset counted: the one named by the caller, else the latest the version
        ran on (its *current* dataset).
    named : bool
        True when the caller named ``dataset``.
    run_id : str
        The latest run of the version on ``dataset``.
    status : {"running", "finished", "interrupted", "failed"}
        That run's status.
    source : str or None
        The manifest that run scored, when recorded (for the command that resumes it).
    n_images : int
        Images of the dataset as it is now (its latest manifest).
    n_done : int
        Of them, how many some run of the version on the dataset finished (scored or
        failed for good). Fewer than ``n_images`` makes a version whose latest run
        scored a manifest incomplete (see :attr:`complete`).
    others : tuple of (str, int, int)
        Other datasets the version ran on: name, images the version finished there
        that are still in it, and how many of those are the same images (id and
        content) as images of ``dataset``. Never counted together with ``dataset``.
    """

    detector: str
    model_version: str
    dataset: str
    named: bool
    run_id: str
    status: str
    source: str | None
    n_images: int
    n_done: int
    others: tuple[tuple[str, int, int], ...] = ()

    @property
    def complete(self) -> bool:
        """The latest run finished, and, when it scored a manifest (``source`` known),
        every image of the dataset is done.

        A run without a source (imported scores) covers what its file held: a scores
        table may give each model version other images of the same dataset.
        """
        if self.status != "finished":
            return False
        return self.source is None or self.n_done >= self.n_images


def settings_json(settings: Mapping[str, Any]) -> str:
    """Run settings as stored: secrets redacted, JSON with sorted keys.

    Two runs whose stored settings are equal called the detector the same way, which is
    what reusing a stored result needs (see :meth:`ScoreStore.reuse_results`).
    """
    return json.dumps(redact_secrets(settings), sort_keys=True, default=str)


def redact_secrets(settings: Any) -> Any:
    """Replace secret values with ``"<redacted>"``, recursively (see
    :func:`calibrate.secrets.redact`): values of secret-looking keys (``key``,
    ``secret``, ``token``, ``password``, ``credential``, ``auth``, ...), every value
    registered as a secret or held by a credential variable, and URL user-info. The
    input is not modified.

    Parameters
    ----------
    settings : object
        Usually a dict of detector settings.

    Returns
    -------
    object
        A copy with secret values replaced.

    Examples
    --------
    >>> redact_secrets({"region": "eu-west-1", "ApiKey": "abc", "nested": {"token": 1}})
    {'region': 'eu-west-1', 'ApiKey': '<redacted>', 'nested': {'token': '<redacted>'}}
    """
    return redact(settings)
