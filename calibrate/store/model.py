"""The store's vocabulary: run and failure states, the records it returns, and the
redaction every run's settings pass through before they are written."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_PATH",
    "FAILURE_KINDS",
    "RUN_STATUSES",
    "LabelScores",
    "RunInfo",
    "redact_secrets",
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


# A settings key containing any of these (case-insensitive) has its value replaced.
# Over-matching ("keypoint_threshold") only loses a setting from the record, while
# under-matching would write a credential into a file that gets shared and exported.
_SECRET_KEY = re.compile(r"key|secret|token|password|passwd|credential", re.IGNORECASE)
_REDACTED = "<redacted>"


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
        With ``dataset=None`` the same id may appear once per dataset.
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


def redact_secrets(settings: Any) -> Any:
    """Replace the values of secret-looking keys with ``"<redacted>"``, recursively.

    A key looks secret when its name contains ``key``, ``secret``, ``token``,
    ``password``, ``passwd`` or ``credential`` (case-insensitive). Nested mappings and
    lists are walked; the input is not modified.

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
    if isinstance(settings, Mapping):
        return {
            k: (_REDACTED if _SECRET_KEY.search(str(k)) else redact_secrets(v))
            for k, v in settings.items()
        }
    if isinstance(settings, (list, tuple)):
        return [redact_secrets(v) for v in settings]
    return settings
