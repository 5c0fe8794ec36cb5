"""Which images a curve counts, and whether they are all there.

A curve counts each image once per ``(detector, model_version)``: the current images
of one dataset (the one the caller names, else the latest the version ran on), each
with its latest run's scores. Two checks guard that choice:

* **Other datasets.** A version that also ran on other datasets (a copy of the manifest
  under another name, a corrected scores file imported under a new name) has those left
  out; the store says so once per version (:class:`DatasetOverlapWarning`), with how
  many of their images are the same (id and content) and how to choose.
* **Completeness.** Cutoffs from part of the data must not pass for cutoffs from all of
  it: :meth:`SelectionMixin.require_complete` refuses a version whose latest run on the
  dataset did not finish, or whose dataset holds images no run finished, naming the
  command that resumes it, unless incomplete data is allowed (then it warns).
"""

from __future__ import annotations

import shlex
import warnings
from typing import Any

from calibrate.errors import InputError
from calibrate.store._base import StoreBase, _one
from calibrate.store.errors import (
    DatasetOverlapWarning,
    IncompleteDataError,
    IncompleteDataWarning,
)
from calibrate.store.images import content_key_sql
from calibrate.store.model import VersionData

__all__ = [
    "SelectionMixin",
    "incomplete_message",
    "latest_and_failed_ctes",
    "overlap_message",
]

_STATUS_WORDS = {
    "running": "still marked running (its process was killed, or is still scoring)",
    "interrupted": "interrupted",
    "failed": "stopped by an error",
}


class SelectionMixin(StoreBase):
    """Resolves the dataset a version's curves count and checks that it is complete."""

    #: Set by :class:`calibrate.store.ScoreStore`: whether :meth:`require_complete`
    #: lets incomplete data through (with a warning) when its caller does not say.
    allow_incomplete: bool = False

    def _selected_runs(
        self, detector: str, model_version: str, dataset: str | None
    ) -> tuple[str, list[int]]:
        """The dataset counted and the version's runs on it, oldest first.

        Raises
        ------
        InputError
            If the version has no runs (on that dataset), listing what there is.
        """
        con = self._db()
        name = dataset
        if name is None:
            # The latest dataset the version ran on is its current one: a manifest scored
            # again under another name replaces, not adds to, what the curves count.
            name = _one(con.execute(
                "SELECT arg_max(dataset, run_key) FROM runs WHERE detector = ? "
                "AND model_version = ?", [detector, model_version]))[0]
        if name is not None:
            keys = [int(k) for (k,) in con.execute(
                "SELECT run_key FROM runs WHERE detector = ? AND model_version = ? "
                "AND dataset = ? ORDER BY run_key", [detector, model_version, name]).fetchall()]
            if keys:
                return name, keys
        known = con.execute(
            "SELECT DISTINCT detector, model_version FROM runs ORDER BY ALL"
        ).fetchall()
        if dataset is not None and (detector, model_version) in known:
            sets = self.version_datasets(detector, model_version)
            raise InputError(
                f"detector {detector!r} version {model_version!r} has no runs on dataset "
                f"{dataset!r}; it was run on: {', '.join(map(repr, sets))}."
            )
        listing = ", ".join(f"{d!r} {v!r}" for d, v in known[:20]) or "none yet"
        raise InputError(
            f"no runs of detector {detector!r} version {model_version!r} in the score store "
            f"{self.path}. Known (detector, model_version): {listing}."
        )

    def _version_run_keys(
        self, detector: str, model_version: str, dataset: str | None
    ) -> list[int]:
        return self._selected_runs(detector, model_version, dataset)[1]

    def version_datasets(self, detector: str, model_version: str) -> list[str]:
        """The datasets a detector version ran on, latest first (the first is current)."""
        with self._lock:
            rows = self._db().execute(
                "SELECT dataset FROM runs WHERE detector = ? AND model_version = ? "
                "GROUP BY dataset ORDER BY max(run_key) DESC", [detector, model_version],
            ).fetchall()
        return [r[0] for r in rows]

    def data_check(
        self, detector: str, model_version: str, dataset: str | None = None
    ) -> VersionData:
        """What the curves of a detector version count, and whether it is complete.

        Parameters
        ----------
        detector, model_version : str
        dataset : str, optional
            The dataset to count; default the latest the version ran on.

        Returns
        -------
        VersionData

        Raises
        ------
        InputError
            If the version has no runs (on that dataset).
        """
        with self._lock:
            cache = self.__dict__.setdefault("_data_checks", {})
            if cache.get("generation") != self._generation:
                cache.clear()  # it describes data that changed since
                cache["generation"] = self._generation
            key = (detector, model_version, dataset)
            if key not in cache:
                cache[key] = self._check(detector, model_version, dataset)
            return cache[key]

    def _check(self, detector: str, model_version: str, dataset: str | None) -> VersionData:
        name, keys = self._selected_runs(detector, model_version, dataset)
        con = self._db()
        run_id, status, source = _one(con.execute(
            "SELECT run_id, status, source FROM runs WHERE run_key = ?", [keys[-1]]))
        n_images, n_retired = _one(con.execute(
            "SELECT count(*) FILTER (WHERE current), count(*) FILTER (WHERE NOT current) "
            "FROM images WHERE dataset = ?", [name]))
        # A run records images of its own dataset, each once: with no retired image, the
        # latest run's rows count its done images without a join (0.6 ms, not 40 ms, at
        # 10^6 images: this runs before the first read of every version).
        n_done = _one(con.execute(
            "SELECT count(*) FROM run_images WHERE run_key = ?", [keys[-1]]))[0]
        if n_retired or (len(keys) > 1 and n_done < n_images):
            runs = ", ".join(map(str, keys))  # integers read from the database
            n_done = _one(con.execute(
                f"""SELECT count(*) FROM images
                    WHERE dataset = ? AND current AND image_key IN (
                        SELECT image_key FROM run_images WHERE run_key IN ({runs}))""",
                [name]))[0]
        others: tuple[tuple[str, int, int], ...] = ()
        if dataset is None:
            others = self._other_datasets(detector, model_version, name)
        return VersionData(detector, model_version, name, dataset is not None, run_id,
                           status, source, int(n_images), int(n_done), others)

    def _other_datasets(self, detector: str, model_version: str,
                        current: str) -> tuple[tuple[str, int, int], ...]:
        """(dataset, images the version finished there, of them the same as in
        ``current``) for every other dataset the version ran on."""
        names = [d for d in self.version_datasets(detector, model_version) if d != current]
        if not names:
            return ()
        rows = self._db().execute(
            f"""WITH cur AS (SELECT DISTINCT image_id, {content_key_sql('i')} AS ck
                             FROM images i WHERE dataset = $current AND current),
                theirs AS (SELECT DISTINCT r.dataset, i.image_id, {content_key_sql('i')} AS ck
                           FROM run_images ri
                           JOIN runs r ON r.run_key = ri.run_key
                           JOIN images i ON i.image_key = ri.image_key AND i.current
                           WHERE r.detector = $det AND r.model_version = $ver
                             AND r.dataset <> $current)
                SELECT t.dataset, count(*), count(c.image_id)
                FROM theirs t
                LEFT JOIN cur c ON c.image_id = t.image_id AND c.ck IS NOT DISTINCT FROM t.ck
                GROUP BY t.dataset""",
            {"current": current, "det": detector, "ver": model_version},
        ).fetchall()
        counts = {d: (int(n), int(shared)) for d, n, shared in rows}
        return tuple((d, *counts.get(d, (0, 0))) for d in names)

    def require_complete(
        self, detector: str, model_version: str, dataset: str | None = None, *,
        allow: bool | None = None,
    ) -> str | None:
        """Refuse data whose latest run is incomplete, or say that it is used anyway.

        Every threshold choice from a store calls this first, so that no command
        computes cutoffs from part of a dataset in silence.

        Parameters
        ----------
        detector, model_version : str
        dataset : str, optional
            As in :meth:`data_check`.
        allow : bool, optional
            Use incomplete data (with an :class:`IncompleteDataWarning`) instead of
            refusing it; default the store's ``allow_incomplete``.

        Returns
        -------
        str or None
            None when the data is complete; else (when allowed) the warning's text, for
            the caller to carry into its results.

        Raises
        ------
        IncompleteDataError
            When the data is incomplete and not allowed: the message names the run, how
            much is done and the command that resumes it.
        """
        check = self.data_check(detector, model_version, dataset)
        if check.complete:
            return None
        if not (self.allow_incomplete if allow is None else allow):
            raise IncompleteDataError(
                incomplete_message(check, self.path)
                + "; or pass --allow-incomplete to use the partial data, marked as such."
            )
        message = "INCOMPLETE DATA used as asked: " + incomplete_message(check, self.path) + "."
        self._warn_once(IncompleteDataWarning, message, ("incomplete", *_key(check)))
        return message

    def _note_selection(self, detector: str, model_version: str, dataset: str | None) -> None:
        """Warn (once per store) when a read leaves other datasets out or reads a
        version whose latest run is incomplete."""
        check = self.data_check(detector, model_version, dataset)
        overlap = overlap_message(check)
        if overlap:
            self._warn_once(DatasetOverlapWarning, overlap, ("overlap", *_key(check)))
        if not check.complete:
            self._warn_once(IncompleteDataWarning,
                            "reading incomplete data: " + incomplete_message(check, self.path)
                            + ".", ("incomplete", *_key(check)))

    def _warn_once(self, category: type[Warning], message: str, key: tuple) -> None:
        # Once per store and subject: a report reads each version many times.
        warned = self.__dict__.setdefault("_warned", set())
        if key not in warned:
            warned.add(key)
            warnings.warn(category(message), stacklevel=4)


def latest_and_failed_ctes(keys: list[int]) -> tuple[str, str]:
    """SQL CTEs ``latest(image_key, run_key)`` and ``failed(image_key)`` over runs ``keys``.

    ``latest`` holds each image the runs scored once, with the latest run that scored
    it (a later failure does not hide an earlier valid score); ``failed`` the images
    they failed on and never scored. The single-run form skips one aggregation over all
    images, which is most of the cost at 10^6 images.

    Parameters
    ----------
    keys : list of int
        Run keys as read from the database (inlined: literal values let DuckDB prune
        row groups of ``run_images`` by zone maps).
    """
    if len(keys) == 1:
        run = str(int(keys[0]))
        latest = f"""
            latest AS (SELECT image_key, run_key FROM run_images
                       WHERE run_key = {run} AND status = 'scored')"""
        failed = f"""
            failed AS (SELECT image_key FROM run_images
                       WHERE run_key = {run} AND status = 'failed')"""
    else:
        runs = ", ".join(str(int(k)) for k in keys)
        latest = f"""
            latest AS (SELECT image_key, max(run_key) AS run_key FROM run_images
                       WHERE run_key IN ({runs}) AND status = 'scored'
                       GROUP BY image_key)"""
        failed = f"""
            failed AS (SELECT image_key FROM run_images WHERE run_key IN ({runs})
                       GROUP BY image_key HAVING NOT bool_or(status = 'scored'))"""
    return latest, failed


def _key(check: VersionData) -> tuple:
    return check.detector, check.model_version, check.dataset, check.named


def _resume_command(check: VersionData, path: Any) -> str:
    if not check.source:
        return (f"run again what wrote run {check.run_id} (its 'calibrate score' or "
                "'calibrate import-scores' command)")
    # The store knows the detector's name, not how it was named on the command line.
    return ("run its 'calibrate score' again: calibrate score --dataset "
            + shlex.quote(check.source) + f" --detector {shlex.quote(check.detector)} "
            + f"--model-version {shlex.quote(check.model_version)} --store "
            + f"{shlex.quote(str(path))} (with the same --option values; a plugin "
            + "detector by its module:callable)")


def incomplete_message(check: VersionData, path: Any) -> str:
    """One line: what is incomplete about a version's data and how to complete it.

    Parameters
    ----------
    check : VersionData
        An incomplete version (``not check.complete``).
    path : str or Path
        The store file, for the command.
    """
    who = f"{check.detector} {check.model_version}"
    done = f"{check.n_done:,} of {check.n_images:,} images of dataset {check.dataset!r}"
    if check.status != "finished":
        state = _STATUS_WORDS.get(check.status, check.status)
        return (f"{who}: its latest run {check.run_id} is {state} with {done} done, so "
                f"cutoffs from it would rest on part of the data; to resume it, "
                f"{_resume_command(check, path)}")
    return (f"{who}: only {done} are done (the dataset gained images after its latest "
            f"run {check.run_id} finished), so cutoffs from it would rest on part of the "
            f"data; to score the rest (stored results are reused, only new images are "
            f"sent), {_resume_command(check, path)}")


def overlap_message(check: VersionData) -> str | None:
    """One line naming the datasets a version's curves leave out, or None."""
    if not check.others:
        return None
    parts = ", ".join(f"{d!r} ({s:,} of its {n:,} images the same as in {check.dataset!r})"
                      for d, n, s in check.others)
    head = (f"{check.detector} {check.model_version} also ran on dataset(s) {parts}; only "
            f"{check.dataset!r}, the latest it ran on, is counted")
    copies = [d for d, _, s in check.others if s]
    if not copies:
        return head + " (a curve counts one dataset). To count another, name it with --dataset."
    return (head + ", so no image counts twice. To count another, name it with --dataset; "
            f"to drop the old copy, remove it (ScoreStore.remove_dataset({copies[0]!r})).")
