"""Reading the store: runs and their progress (what a resumed run skips), image-level
scores and count tables of one label, and overviews of versions, labels and failures."""

from __future__ import annotations

import json
import zlib
from typing import TYPE_CHECKING, Any

import numpy as np

from calibrate.curves import CountTable
from calibrate.errors import InputError
from calibrate.store._base import _check_name, _json_loads_or_none
from calibrate.store.model import LabelScores, RunInfo
from calibrate.store.selection import SelectionMixin, latest_and_failed_ctes

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = ["ReadsMixin"]

_RUN_INFO_COLUMNS = (
    "run_id, detector, model_version, dataset, dataset_fingerprint, settings, labels, "
    "detection_floor, status, started_at, finished_at"
)


class ReadsMixin(SelectionMixin):
    """Queries over runs, scores and failures; none of them writes.

    Scores and count tables count the current images of one dataset per version (see
    :mod:`calibrate.store.selection`): the named one, else the latest the version ran on.
    """

    # -- runs and resuming --------------------------------------------------------------

    def find_run(
        self,
        detector: str,
        model_version: str,
        dataset_fingerprint: str,
        dataset: str | None = None,
    ) -> RunInfo | None:
        """The most recent run of a detector version on exactly this dataset content.

        The runner uses it to resume: if the latest matching run is ``interrupted`` (or
        still ``running`` after a crash), it continues that run, skipping
        :meth:`done_image_ids`.

        Returns
        -------
        RunInfo or None
            None when no run matches.
        """
        # The dataset name is part of the match: the same content under another name is
        # another dataset in this store (its images are registered under that name).
        with self._lock:
            row = self._db().execute(
                f"""SELECT {_RUN_INFO_COLUMNS} FROM runs
                    WHERE detector = ? AND model_version = ? AND dataset_fingerprint = ?
                      AND (? IS NULL OR dataset = ?)
                    ORDER BY run_key DESC LIMIT 1""",
                [detector, model_version, dataset_fingerprint, dataset, dataset],
            ).fetchall()
            row = row[0] if row else None
        return None if row is None else _run_info(row)

    def failed_image_ids(self, run_id: str, kinds: tuple[str, ...] = ("retryable",)) -> set[str]:
        """Images the run counts as failed (not scored) with a failure of these kinds."""
        with self._lock:
            run_key, _ = self._run_row(run_id)
            marks = ", ".join("?" for _ in kinds)
            rows = self._db().execute(
                f"""SELECT i.image_id FROM run_images ri
                    JOIN images i ON i.image_key = ri.image_key
                    WHERE ri.run_key = ? AND ri.status = 'failed' AND ri.image_key IN (
                        SELECT image_key FROM failures WHERE run_key = ? AND kind IN ({marks}))""",
                [run_key, run_key, *kinds],
            ).fetchall()
        return {r[0] for r in rows}

    def n_failed(
        self, detector: str, model_version: str, *, dataset: str | None = None,
        split: str | None = None,
    ) -> int:
        """Images a version failed on and never scored (as :attr:`LabelScores.n_failed`),
        without loading any scores."""
        with self._lock:
            _, failed = self._selection_sql(detector, model_version, dataset)
            self._note_selection(detector, model_version, dataset)
            return self._n_failed(failed, split)

    def splits(self, dataset: str | None = None) -> list[str]:
        """The split names of the current images (of one dataset, if given)."""
        with self._lock:
            rows = self._db().execute(
                "SELECT DISTINCT split FROM images WHERE split IS NOT NULL AND current "
                "AND (? IS NULL OR dataset = ?) ORDER BY 1",
                [dataset, dataset],
            ).fetchall()
        return [r[0] for r in rows]

    def truth_labels(self, detector: str, model_version: str, *,
                     dataset: str | None = None) -> list[str]:
        """Labels truly present on images a version scored, whether or not it ever
        reported them: a label the detector never returns is still a label to calibrate.

        Only the images its curves count: the current images of ``dataset`` (default:
        the latest dataset the version ran on).
        """
        with self._lock:
            name, keys = self._selected_runs(detector, model_version, dataset)
            runs = ", ".join(map(str, keys))  # integers read from the database
            rows = self._db().execute(
                f"""SELECT DISTINCT unnest(i.labels) FROM images i
                    WHERE i.dataset = ? AND i.current AND i.image_key IN (
                        SELECT image_key FROM run_images WHERE run_key IN ({runs}))
                    ORDER BY 1""",
                [name],
            ).fetchall()
        return [r[0] for r in rows]

    def run_info(self, run_id: str) -> RunInfo:
        """One run's record.

        Raises
        ------
        InputError
            If there is no such run.
        """
        with self._lock:
            row = self._db().execute(
                f"SELECT {_RUN_INFO_COLUMNS} FROM runs WHERE run_id = ?", [run_id]
            ).fetchall()
            row = row[0] if row else None
            if row is None:
                self._run_row(run_id)  # raises the explanatory error
        return _run_info(row)

    def done_image_ids(self, run_id: str) -> set[str]:
        """Images the run has finished: scored, or failed for good.

        Returns
        -------
        set of str
            Image ids the runner must not send to the detector again in this run.
        """
        with self._lock:
            run_key, _ = self._run_row(run_id)
            ids = self._db().execute(
                """SELECT i.image_id FROM run_images ri
                   JOIN images i ON i.image_key = ri.image_key
                   WHERE ri.run_key = ?""",
                [run_key],
            ).fetchnumpy()["image_id"]
        return set(ids.tolist())

    # -- reading scores -----------------------------------------------------------------

    def _selection_sql(self, detector: str, model_version: str, dataset: str | None):
        """CTEs ``latest(image_key, run_key)`` and ``best(image_key, score)`` plus failed.

        ``latest`` holds each image once, with the latest run that scored it; ``best``
        its highest score for ``$label`` in that run. The single-run form skips one
        aggregation over all images, which is most of the cost at 10^6 images.
        """
        keys = self._version_run_keys(detector, model_version, dataset)
        latest, failed = latest_and_failed_ctes(keys)
        # Keys are integers read from the database, so inlining them is safe; literal
        # values let DuckDB prune row groups of results by zone maps.
        if len(keys) == 1:
            best = f"""
                best AS (SELECT image_key, max(score) AS score FROM results
                         WHERE run_key = {keys[0]} AND label = $label GROUP BY image_key)"""
        else:
            runs = ", ".join(map(str, keys))
            best = f"""
                best AS (SELECT res.image_key, max(res.score) AS score
                         FROM results res
                         JOIN latest l ON l.run_key = res.run_key AND l.image_key = res.image_key
                         WHERE res.run_key IN ({runs}) AND res.label = $label
                         GROUP BY res.image_key)"""
        ctes = latest + "," + best
        return ctes, failed

    def _n_failed(self, failed_cte: str, split: str | None) -> int:
        split_cond = "AND i.split = $split" if split is not None else ""
        return int(
            self._db().execute(
                f"""WITH {failed_cte} SELECT count(*) FROM failed f
                    JOIN images i ON i.image_key = f.image_key AND i.current {split_cond}""",
                {"split": split} if split is not None else {},
            ).fetchall()[0][0]
        )

    def scores(
        self,
        detector: str,
        model_version: str,
        label: str,
        *,
        dataset: str | None = None,
        split: str | None = None,
    ) -> LabelScores:
        """Image-level scores and ground truth of one label, as numpy arrays.

        Every current image of one dataset that some run of ``(detector,
        model_version)`` on it scored is included once: with its highest score for
        ``label`` in the latest run that scored it, or ``-inf`` if that run returned no
        result for the label. Failed images are left out and counted in ``n_failed``.
        Images no longer in the dataset, or whose content changed since they were
        scored, are not included (their identity is not current).

        Parameters
        ----------
        detector, model_version, label : str
        dataset : str, optional
            The dataset to count (default: the latest the version ran on; other
            datasets are never counted with it, and a :class:`DatasetOverlapWarning`
            names them).
        split : str, optional
            Only images of this split.

        Returns
        -------
        LabelScores

        Raises
        ------
        InputError
            If the store has no run of that detector version (on that dataset).

        See Also
        --------
        count_table : the same data aggregated in the database.
        """
        _check_name(label, "label")
        with self._lock:
            ctes, failed = self._selection_sql(detector, model_version, dataset)
            split_cond = "AND i.split = $split" if split is not None else ""
            params = {"label": label, **({"split": split} if split is not None else {})}
            cols = self._db().execute(
                f"""WITH {ctes}
                    SELECT i.image_id,
                           coalesce(b.score, '-inf'::DOUBLE) AS score,
                           list_contains(i.labels, $label) AS positive
                    FROM latest l
                    JOIN images i ON i.image_key = l.image_key AND i.current {split_cond}
                    LEFT JOIN best b ON b.image_key = l.image_key
                    ORDER BY l.image_key""",
                params,
            ).fetchnumpy()
            n_failed = self._n_failed(failed, split)
            self._note_selection(detector, model_version, dataset)
        return LabelScores(
            image_ids=np.asarray(cols["image_id"], dtype=object),
            scores=np.asarray(cols["score"], dtype=np.float64),
            positive=np.asarray(cols["positive"], dtype=bool),
            n_failed=n_failed,
        )

    def count_table(
        self,
        detector: str,
        model_version: str,
        label: str,
        *,
        dataset: str | None = None,
        split: str | None = None,
    ) -> CountTable:
        """Positives and negatives per distinct score of one label, counted in DuckDB.

        Selects exactly the images :meth:`scores` returns and aggregates them with one
        ``GROUP BY score`` (``-inf`` for no result), so only the table leaves the
        database. Equal to ``calibrate.count_table(s.scores, s.positive)`` for
        ``s = store.scores(...)``.

        Parameters
        ----------
        detector, model_version, label : str
        dataset, split : str, optional
            As in :meth:`scores`.

        Returns
        -------
        CountTable
        """
        _check_name(label, "label")
        with self._lock:
            ctes, _ = self._selection_sql(detector, model_version, dataset)
            split_cond = "AND i.split = $split" if split is not None else ""
            params = {"label": label, **({"split": split} if split is not None else {})}
            cols = self._db().execute(
                f"""WITH {ctes}
                    SELECT coalesce(b.score, '-inf'::DOUBLE) AS score,
                           count(*) FILTER (WHERE list_contains(i.labels, $label)) AS n_positive,
                           count(*) FILTER (WHERE NOT list_contains(i.labels, $label))
                               AS n_negative
                    FROM latest l
                    JOIN images i ON i.image_key = l.image_key AND i.current {split_cond}
                    LEFT JOIN best b ON b.image_key = l.image_key
                    GROUP BY 1
                    ORDER BY 1""",
                params,
            ).fetchnumpy()
            self._note_selection(detector, model_version, dataset)
        # Sorted in DuckDB (parallel) because from_counts re-sorts, and numpy's sort of
        # already sorted input is nearly free: 10^6 distinct scores, 0.5 s instead of 0.8 s.
        return CountTable.from_counts(
            np.asarray(cols["score"], dtype=np.float64),
            np.asarray(cols["n_positive"], dtype=np.int64),
            np.asarray(cols["n_negative"], dtype=np.int64),
        )

    # -- overviews ----------------------------------------------------------------------

    def runs(self) -> pd.DataFrame:
        """One row per run, oldest first, with counts of scored and failed images.

        Returns
        -------
        pandas.DataFrame
            Columns ``run_id, detector, model_version, dataset, dataset_fingerprint,
            status, started_at, finished_at, n_scored, n_failed, detection_floor,
            labels, settings, tool_version``; ``labels`` and ``settings`` are parsed.
        """
        with self._lock:
            df = self._db().execute(
                """SELECT r.run_id, r.detector, r.model_version, r.dataset,
                          r.dataset_fingerprint, r.status, r.started_at, r.finished_at,
                          coalesce(c.n_scored, 0) AS n_scored,
                          coalesce(c.n_failed, 0) AS n_failed,
                          r.detection_floor, r.labels, r.settings, r.tool_version
                   FROM runs r
                   LEFT JOIN (SELECT run_key,
                                     count(*) FILTER (WHERE status = 'scored') AS n_scored,
                                     count(*) FILTER (WHERE status = 'failed') AS n_failed
                              FROM run_images GROUP BY run_key) c
                          ON c.run_key = r.run_key
                   ORDER BY r.run_key"""
            ).df()
        df["labels"] = _pd_object([_json_loads_or_none(x) for x in df["labels"]])
        df["settings"] = _pd_object([_json_loads_or_none(x) for x in df["settings"]])
        return df

    def versions(self) -> pd.DataFrame:
        """One row per ``(detector, model_version)`` with its labels and image counts.

        Counts and labels are those of the dataset its curves count: the latest it ran
        on (its current images).

        Returns
        -------
        pandas.DataFrame
            Columns ``detector, model_version, labels`` (sorted list: labels seen in
            results plus labels the runs declared), ``n_runs`` (on every dataset),
            ``n_images`` (distinct images scored) and ``n_failures`` (images that
            failed and were never scored, as :attr:`LabelScores.n_failed`), ``dataset``.
        """
        with self._lock:
            df, seen, declared = self._version_rows(self._db())
        labels: dict[tuple[str, str], set[str]] = {}
        for det, ver, lab in seen:
            labels.setdefault((det, ver), set()).add(lab)
        for det, ver, text in declared:
            labels.setdefault((det, ver), set()).update(json.loads(text))
        df.insert(
            2,
            "labels",
            _pd_object([sorted(labels.get((d, v), ())) for d, v in
                       zip(df["detector"], df["model_version"])]),
        )
        return df

    @staticmethod
    def _version_rows(con) -> tuple[Any, list, list]:
        """The counts frame, seen labels and declared labels of :meth:`versions`, each
        from ``_calibrate_current``: the runs on each version's current dataset."""
        df = con.execute(
            f"""WITH {_CURRENT_RUNS}, per_image AS (
                   SELECT c.detector, c.model_version, ri.image_key,
                          bool_or(ri.status = 'scored') AS scored
                   FROM run_images ri
                   JOIN _calibrate_current c ON c.run_key = ri.run_key
                   JOIN images i ON i.image_key = ri.image_key AND i.current
                   GROUP BY ALL),
               counts AS (
                   SELECT detector, model_version,
                          count(*) FILTER (WHERE scored) AS n_images,
                          count(*) FILTER (WHERE NOT scored) AS n_failures
                   FROM per_image GROUP BY ALL)
               SELECT v.detector, v.model_version, v.n_runs,
                      coalesce(c.n_images, 0) AS n_images,
                      coalesce(c.n_failures, 0) AS n_failures, v.dataset
               FROM (SELECT detector, model_version, count(*) AS n_runs,
                            min(run_key) AS first_run, arg_max(dataset, run_key) AS dataset
                     FROM runs GROUP BY ALL) v
               LEFT JOIN counts c USING (detector, model_version)
               ORDER BY v.first_run"""
        ).df()
        seen = con.execute(
            f"""WITH {_CURRENT_RUNS}
                SELECT DISTINCT c.detector, c.model_version, res.label
                FROM (SELECT DISTINCT run_key, label FROM results) res
                JOIN _calibrate_current c ON c.run_key = res.run_key"""
        ).fetchall()
        declared = con.execute(
            f"""WITH {_CURRENT_RUNS}
                SELECT c.detector, c.model_version, r.labels FROM runs r
                JOIN _calibrate_current c ON c.run_key = r.run_key
                WHERE r.labels IS NOT NULL"""
        ).fetchall()
        return df, seen, declared

    def labels(self, detector: str, model_version: str, *,
               dataset: str | None = None) -> list[str]:
        """Labels of a detector version: seen in its results, plus declared by its runs
        (on ``dataset``, default the latest it ran on).

        Returns
        -------
        list of str
            Sorted.

        Raises
        ------
        InputError
            If the store has no run of that detector version.
        """
        with self._lock:
            keys = self._version_run_keys(detector, model_version, dataset)
            runs = ", ".join(map(str, keys))
            con = self._db()
            seen = {
                lab for (lab,) in con.execute(
                    f"SELECT DISTINCT label FROM results WHERE run_key IN ({runs})"
                ).fetchall()
            }
            for (text,) in con.execute(
                f"SELECT labels FROM runs WHERE run_key IN ({runs}) AND labels IS NOT NULL"
            ).fetchall():
                seen.update(json.loads(text))
        return sorted(seen)

    def failures(self, run_id: str | None = None, *,
                 include_recovered: bool = True) -> pd.DataFrame:
        """Recorded failures, oldest first, each marked when it was recovered later.

        A failure is *recovered* when the same image was scored afterwards by the same
        detector version: by the same run (a resume retried it) or a later one. The
        record is kept as history, but the image is no longer a failure.

        Parameters
        ----------
        run_id : str, optional
            Only this run's failures (default: all runs).
        include_recovered : bool, default True
            False leaves recovered failures out: what still needs attention.

        Returns
        -------
        pandas.DataFrame
            Columns ``run_id, detector, model_version, dataset, image_id, kind,
            message, attempts, failed_at`` (UTC), ``recovered`` (bool).
        """
        with self._lock:
            conds, params = [], []
            if run_id is not None:
                self._run_row(run_id)
                conds, params = ["r.run_id = ?"], [run_id]
            where = f"WHERE {' AND '.join(conds)}" if conds else ""
            df = self._db().execute(
                f"""SELECT r.run_id, r.detector, r.model_version, r.dataset, i.image_id,
                           f.kind, f.message, f.attempts, f.failed_at,
                           EXISTS (SELECT 1 FROM run_images ri
                                   JOIN runs later ON later.run_key = ri.run_key
                                   WHERE ri.image_key = f.image_key
                                     AND ri.status = 'scored' AND ri.run_key >= f.run_key
                                     AND later.detector = r.detector
                                     AND later.model_version = r.model_version) AS recovered
                    FROM failures f
                    JOIN runs r ON r.run_key = f.run_key
                    JOIN images i ON i.image_key = f.image_key
                    {where}
                    ORDER BY f.run_key, f.failed_at, i.image_id""",
                params,
            ).df()
        if not include_recovered:
            df = df[~df["recovered"].astype(bool)].reset_index(drop=True)
        return df

    def raw_response(self, run_id: str, image_id: str) -> Any:
        """The detector's response for one image of a run, as it was recorded.

        Returns
        -------
        object
            The decoded JSON (``None`` if the detector kept no raw response).

        Raises
        ------
        InputError
            If the run is unknown or stored no raw response for that image (it failed,
            was not scored in that run, or came from :meth:`write_results_frame`).
        """
        with self._lock:
            run_key, dataset = self._run_row(run_id)
            row = self._db().execute(
                """SELECT rr.response FROM raw_responses rr
                   JOIN images i ON i.image_key = rr.image_key
                   WHERE rr.run_key = ? AND i.dataset = ? AND i.image_id = ?""",
                [run_key, dataset, image_id],
            ).fetchall()
            row = row[0] if row else None
        if row is None:
            raise InputError(
                f"no raw response stored for image {image_id!r} in run {run_id}: the image "
                "failed, was not scored in that run, or its scores were imported in bulk."
            )
        return json.loads(zlib.decompress(bytes(row[0])).decode("utf-8"))


#: CTE ``_calibrate_current(run_key, detector, model_version)``: the runs on each
#: version's current dataset (the latest it ran on).
_CURRENT_RUNS = """_calibrate_current AS (
    SELECT r.run_key, c.detector, c.model_version
    FROM runs r
    JOIN (SELECT detector, model_version, arg_max(dataset, run_key) AS dataset
          FROM runs GROUP BY ALL) c
      ON c.detector = r.detector AND c.model_version = r.model_version
     AND c.dataset = r.dataset)"""


def _run_info(row: tuple) -> RunInfo:
    (run_id, detector, model_version, dataset, fingerprint, settings, labels, floor,
     status, started_at, finished_at) = row
    return RunInfo(
        run_id=run_id,
        detector=detector,
        model_version=model_version,
        dataset=dataset,
        dataset_fingerprint=fingerprint,
        settings=json.loads(settings),
        labels=_json_loads_or_none(labels),
        detection_floor=floor,
        status=status,
        started_at=started_at,
        finished_at=finished_at,
    )


def _pd_object(values: list) -> Any:
    """A pandas object Series from a list of Python objects (lists, dicts)."""
    import pandas as pd

    s = pd.Series([None] * len(values), dtype=object)
    for i, v in enumerate(values):
        s.iat[i] = v
    return s
