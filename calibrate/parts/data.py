"""Per-part data: one row per image (= part), its image-level score and truth per label.

Everything at the part level (what the station scraps, ships and sends to review) is
computed from this table, never from per-label count tables: whether a part is
scrapped depends on *all* its labels' scores at once, and one part can carry several
defects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from calibrate.errors import InputError

__all__ = ["PartData", "part_data", "part_data_from_store"]


@dataclass(frozen=True)
class PartData:
    """Image-level scores and truth of every part, for every label.

    Attributes
    ----------
    labels : tuple of str
        The labels, in column order.
    scores : ndarray of float, shape (n_parts, n_labels)
        Image-level score per label in the detector's scale; ``-inf`` means the detector
        returned no result for the label (ranks below every real score).
    truth : ndarray of bool, shape (n_parts, n_labels)
        Whether the label is truly present on the part.
    image_ids : ndarray of object, shape (n_parts,), optional
    n_failed : int
        Parts whose detector call failed; they are not in the table.
    """

    labels: tuple[str, ...]
    scores: np.ndarray
    truth: np.ndarray
    image_ids: np.ndarray | None = field(default=None, repr=False)
    n_failed: int = 0

    @property
    def n_parts(self) -> int:
        """Number of parts (rows)."""
        return int(self.scores.shape[0])

    @property
    def defective(self) -> np.ndarray:
        """Per part: True when at least one label is truly present."""
        return self.truth.any(axis=1)

    @property
    def n_defective(self) -> int:
        """Parts with at least one true defect."""
        return int(self.defective.sum())

    @property
    def n_good(self) -> int:
        """Parts with no true defect."""
        return self.n_parts - self.n_defective

    def column(self, label: str) -> int:
        """The column of ``label``.

        Raises
        ------
        InputError
            When the data has no such label.
        """
        try:
            return self.labels.index(label)
        except ValueError:
            raise InputError(f"the part data has no label {label!r}; its labels are "
                             f"{', '.join(self.labels)}.") from None


def part_data(scores, truth, labels, *, image_ids=None, n_failed: int = 0) -> PartData:
    """Build and check a :class:`PartData` from arrays.

    Parameters
    ----------
    scores : array-like of float, shape (n_parts, n_labels)
        ``-inf`` for "no result"; NaN is refused.
    truth : array-like of bool, shape (n_parts, n_labels)
    labels : sequence of str, length n_labels
    image_ids : array-like, optional
    n_failed : int, default 0

    Returns
    -------
    PartData

    Raises
    ------
    InputError
        On mismatched shapes, NaN or ``+inf`` scores, repeated labels, or no parts.
    """
    labels = tuple(str(x) for x in labels)
    s = np.asarray(scores, dtype=np.float64)
    t = np.asarray(truth)
    if s.ndim != 2 or s.shape[1] != len(labels):
        raise InputError(f"scores must have shape (n_parts, {len(labels)}) for labels "
                         f"{', '.join(labels)}, got shape {s.shape}.")
    if t.shape != s.shape:
        raise InputError(f"truth must have the shape of scores {s.shape}, got {t.shape}.")
    if t.dtype != bool:
        if not np.isin(t, (0, 1)).all():
            raise InputError("truth must be booleans (or 0/1).")
        t = t.astype(bool)
    if len(set(labels)) != len(labels):
        raise InputError(f"labels repeat: {', '.join(labels)}.")
    if s.shape[0] == 0:
        raise InputError("the part data has no parts.")
    if np.isnan(s).any():
        row = int(np.argwhere(np.isnan(s))[0][0])
        raise InputError(f"part {row if image_ids is None else image_ids[row]!r} has a NaN "
                         "score; use -inf for 'no result'.")
    if (s == np.inf).any():
        raise InputError("a score is +inf; scores must be finite (or -inf for no result).")
    ids = None if image_ids is None else np.asarray(image_ids, dtype=object)
    if ids is not None and ids.shape != (s.shape[0],):
        raise InputError(f"image_ids must have one id per part ({s.shape[0]}).")
    return PartData(labels, s, t, ids, int(n_failed))


def part_data_from_store(store, detector: str, model_version: str, *, labels=None,
                         dataset: str | None = None, split: str | None = None) -> PartData:
    """The per-part table of one (detector, version), with the store's selection rules.

    Each label's column is :meth:`ScoreStore.scores` of that label (the current images
    of one dataset that the version scored, each once, from the latest run that scored
    it; failed images left out), so the part table counts exactly the images the
    per-label curves count.

    Parameters
    ----------
    store : calibrate.store.ScoreStore
    detector, model_version : str
    labels : list of str, optional
        Default: every label the version reported or that is truly present.
    dataset, split : str, optional
        As in :meth:`ScoreStore.scores`.

    Returns
    -------
    PartData
        A part is defective when one of ``labels`` is truly present on it.

    Raises
    ------
    InputError
        When the store has no such version, or the labels' image sets disagree.
    """
    if labels is None:
        labels = sorted(set(store.labels(detector, model_version, dataset=dataset))
                        | set(store.truth_labels(detector, model_version, dataset=dataset)))
    if not labels:
        raise InputError(f"{detector} {model_version} has no labels in {store.path}.")
    cols = [store.scores(detector, model_version, lab, dataset=dataset, split=split)
            for lab in labels]
    ids = cols[0].image_ids
    for lab, c in zip(labels, cols):
        if not np.array_equal(c.image_ids, ids):  # one selection for every label
            raise InputError(f"{detector} {model_version}: the images counted for {lab!r} "
                             f"differ from those of {labels[0]!r}; re-score the dataset.")
    if len(ids) == 0:
        where = f" in split {split!r}" if split else ""
        raise InputError(f"{detector} {model_version} has no scored images{where}.")
    return part_data(np.column_stack([c.scores for c in cols]),
                     np.column_stack([c.positive for c in cols]), labels,
                     image_ids=ids, n_failed=cols[0].n_failed)
