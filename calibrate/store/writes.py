"""Writing runs as they go: beginning and finishing runs, and recording each batch of
finished images (their results, raw responses and failures)."""

from __future__ import annotations

import json
import math
import uuid
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import pyarrow as pa

from calibrate.secrets import scrub
from calibrate.errors import InputError
from calibrate.store._base import (
    _check_attempts,
    _check_name,
    _is_real,
    _tool_version,
    _utc_now,
)
from calibrate.store.images import ImagesMixin
from calibrate.store.model import FAILURE_KINDS, _check_finish_status, settings_json

__all__ = ["WritesMixin"]

_BOX_COLUMNS = ("x_min", "y_min", "x_max", "y_max")


class _DetectionLike(Protocol):
    """What :meth:`WritesMixin.record` reads from a detection.

    The store sits below the detectors, so it names no detector type: anything with
    ``results`` (each with ``label``, ``score`` and ``box``: None or an object with
    ``x_min, y_min, x_max, y_max, unit``) and a JSON-able ``raw`` will do.
    """

    results: Sequence[Any]
    raw: Any


class WritesMixin(ImagesMixin):
    """Starts and ends runs and records finished images into them."""

    # -- runs ---------------------------------------------------------------------------

    def begin_run(
        self,
        *,
        detector: str,
        model_version: str,
        dataset: str,
        dataset_fingerprint: str,
        settings: dict[str, Any] | None,
        labels: list[str] | None,
        detection_floor: float | None,
        source: str | None = None,
    ) -> str:
        """Start a new run and return its id.

        Parameters
        ----------
        detector, model_version : str
            Together they key every score of the run.
        dataset : str
            Name under which the images were registered with :meth:`add_images`.
        dataset_fingerprint : str
            Identifies the dataset's exact content (used by :meth:`find_run`).
        settings : dict
            Detector settings that affect scores, stored as JSON. They must not contain
            credentials; values of secret-looking keys are replaced by ``"<redacted>"``
            anyway (see :func:`redact_secrets`). Values that are not JSON types are
            stored as their ``str()``.
        labels : list of str or None
            Labels the detector can emit, when known.
        detection_floor : float or None
            Lowest score the detector can report at all.
        source : str, optional
            The manifest (or file) the run scores, so that a message about an unfinished
            run can give the command that resumes it.

        Returns
        -------
        str
            The new run's id (32 hex digits). The run's status is ``"running"``.
        """
        for value, what in (
            (detector, "detector"),
            (model_version, "model_version"),
            (dataset, "dataset"),
            (dataset_fingerprint, "dataset_fingerprint"),
        ):
            _check_name(value, what)
        if settings is None:
            settings = {}
        if not isinstance(settings, Mapping):
            raise InputError(f"settings must be a dict, got {type(settings).__name__}.")
        stored_settings = settings_json(settings)
        labels_json = None
        if labels is not None:
            if isinstance(labels, str) or not all(isinstance(x, str) for x in labels):
                raise InputError(f"labels must be a list of strings or None, got {labels!r}.")
            labels_json = json.dumps(list(dict.fromkeys(labels)))
        if detection_floor is not None:
            if not _is_real(detection_floor) or not math.isfinite(detection_floor):
                raise InputError(
                    f"detection_floor must be a finite number or None, got {detection_floor!r}."
                )
            detection_floor = float(detection_floor)
        run_id = uuid.uuid4().hex
        with self._lock:
            self._require_writable("begin a run")
            with self._transaction("beginning a run") as con:
                self._insert_run(
                    con, run_id, detector, model_version, dataset, dataset_fingerprint,
                    stored_settings, labels_json, detection_floor, "running", _utc_now(), None,
                    source=None if source is None else str(source),
                )
        return run_id

    def _insert_run(self, con, run_id, detector, model_version, dataset, fingerprint,
                    settings_text, labels_json, floor, status, started_at, finished_at,
                    *, source: str | None = None) -> int:
        return int(
            con.execute(
                """INSERT INTO runs (run_id, run_key, detector, model_version, dataset,
                       dataset_fingerprint, settings, labels, detection_floor, status,
                       started_at, finished_at, tool_version, source)
                   VALUES (?, nextval('run_keys'), ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   RETURNING run_key""",
                [run_id, detector, model_version, dataset, fingerprint, settings_text,
                 labels_json, floor, status, started_at, finished_at, _tool_version(), source],
            ).fetchall()[0][0]
        )

    def finish_run(self, run_id: str, status: str = "finished") -> None:
        """Mark a run as ended.

        Parameters
        ----------
        run_id : str
        status : {"finished", "interrupted", "failed"}, default "finished"
            ``interrupted`` runs can be resumed: record into them again and finish them
            later.
        """
        _check_finish_status(status)
        with self._lock:
            self._require_writable("finish a run")
            with self._transaction(f"finishing run {run_id}") as con:
                self._run_row(run_id)
                con.execute(
                    "UPDATE runs SET status = ?, finished_at = ? WHERE run_id = ?",
                    [status, _utc_now(), run_id],
                )

    def set_detection_floor(self, run_id: str, floor: float) -> None:
        """Record a detection floor found while the run went on.

        A service that filters results before answering (a Viam vision service with
        ``default_minimum_confidence`` set, say) hides every score below its cutoff;
        when the run sees that symptom, the observed floor is kept here so reports can
        show the censored region. An already recorded floor is only ever raised.

        Parameters
        ----------
        run_id : str
        floor : float
            Finite; scores below it are unknowable for this run.
        """
        if not _is_real(floor) or not math.isfinite(floor):
            raise InputError(f"floor must be a finite number, got {floor!r}.")
        with self._lock:
            self._require_writable("record a detection floor")
            with self._transaction(f"recording the detection floor of run {run_id}") as con:
                self._run_row(run_id)
                con.execute(
                    "UPDATE runs SET detection_floor = greatest(coalesce(detection_floor, ?), ?) "
                    "WHERE run_id = ?",
                    [float(floor), float(floor), run_id],
                )

    def reopen_failed(self, run_id: str, kinds: tuple[str, ...] = ("retryable",)) -> int:
        """Make images whose failure in the run was transient count as not done.

        A run that gave up on an image after its retries (throttling, a timeout) should
        try it again when it is resumed; permanent failures (a bad image) stay done. The
        failure records are kept as history.

        Returns
        -------
        int
            How many images were reopened.
        """
        with self._lock:
            self._require_writable("reopen failed images")
            with self._transaction(f"reopening failed images of run {run_id}") as con:
                run_key, _ = self._run_row(run_id)
                marks = ", ".join("?" for _ in kinds)
                where = f"""run_key = ? AND status = 'failed' AND image_key IN (
                            SELECT image_key FROM failures WHERE run_key = ? AND kind IN ({marks}))"""
                n = con.execute(
                    f"SELECT count(*) FROM run_images WHERE {where}", [run_key, run_key, *kinds]
                ).fetchall()[0][0]
                con.execute(f"DELETE FROM run_images WHERE {where}", [run_key, run_key, *kinds])
        return int(n)

    def remove_dataset(self, dataset: str) -> int:
        """Delete a dataset: its images, and every run on it with all that run recorded.

        The way to drop an old copy of a dataset (a manifest scored again under another
        name, a corrected scores file imported under a new name) once the copy is the
        one to keep. Results that other datasets' runs reused are theirs (copied, not
        shared), so nothing else changes.

        Parameters
        ----------
        dataset : str

        Returns
        -------
        int
            How many runs were deleted.

        Raises
        ------
        InputError
            If the store has no such dataset.
        """
        _check_name(dataset, "dataset")
        with self._lock:
            self._require_writable("remove a dataset")
            with self._transaction(f"removing dataset {dataset!r}") as con:
                known = [d for (d,) in con.execute(
                    "SELECT DISTINCT dataset FROM images UNION SELECT dataset FROM runs "
                    "ORDER BY 1").fetchall()]
                if dataset not in known:
                    raise InputError(
                        f"no dataset {dataset!r} in the score store {self.path}; it has "
                        f"{', '.join(map(repr, known)) or 'none'}."
                    )
                runs = [int(k) for (k,) in con.execute(
                    "SELECT run_key FROM runs WHERE dataset = ?", [dataset]).fetchall()]
                if runs:
                    keys = ", ".join(map(str, runs))  # integers read from the database
                    for table in ("results", "raw_responses", "failures", "run_images"):
                        con.execute(f"DELETE FROM {table} WHERE run_key IN ({keys})")
                    con.execute(f"DELETE FROM runs WHERE run_key IN ({keys})")
                con.execute("DELETE FROM images WHERE dataset = ?", [dataset])
        return len(runs)

    # -- recording finished images ------------------------------------------------------

    def record(
        self,
        run_id: str,
        scored: list[tuple[str, _DetectionLike, int]],
        failed: list[tuple[str, str, str, int]],
    ) -> None:
        """Record a batch of finished images in one transaction.

        For each scored ``(image_id, detection, attempts)`` this writes one results row
        per result, the raw response (``json.dumps(detection.raw, default=str)``,
        zlib-compressed) and a ``run_images`` row with status ``'scored'``. For each
        failed ``(image_id, kind, message, attempts)`` it writes a failures row and a
        ``run_images`` row with status ``'failed'``. Either all of it is written or, on
        an error, none of it.

        Every image recorded here is final for the run: :meth:`done_image_ids` includes
        it and a resumed run skips it. A runner that stops on a fatal error and wants
        that image retried on resume should not pass it here.

        Re-recording is idempotent: an image the run has already finished, or that
        appears a second time in the same batch, is skipped (scored entries are taken
        before failed ones). Nothing is duplicated and no error is raised, so a runner
        may safely re-send a batch whose commit it did not see.

        Parameters
        ----------
        run_id : str
        scored : list of (str, Detection, int)
            Image id, what the detector returned (a
            :class:`calibrate.detectors.base.Detection` or any object with the same
            ``results`` and ``raw`` attributes), and how many calls it took.
        failed : list of (str, str, str, int)
            Image id, failure kind (one of :data:`FAILURE_KINDS`), message, attempts.

        Raises
        ------
        InputError
            On an unknown run, an image not registered in the run's dataset, a result
            with a score that is not a finite number, or a malformed entry. Nothing of
            the batch is written then.
        """
        scored = list(scored)
        failed = list(failed)
        for n, entry in enumerate(scored):
            _check_scored_entry(entry, n)
        for n, entry in enumerate(failed):
            _check_failed_entry(entry, n)
        if not scored and not failed:
            with self._lock:
                self._run_row(run_id)
            return
        with self._lock:
            self._require_writable("record results")
            with self._transaction(f"recording results of run {run_id}") as con:
                run_key, dataset = self._run_row(run_id)
                keys = self._image_keys(
                    dataset, [e[0] for e in scored] + [e[0] for e in failed]
                )
                batch = _RecordBatch(done=self._done_keys(con, run_key, keys.values()))
                for image_id, detection, attempts in scored:
                    batch.add_scored(keys[image_id], image_id, detection, attempts)
                for image_id, kind, message, attempts in failed:
                    batch.add_failed(keys[image_id], kind, message, attempts)
                self._write_batch(con, run_key, batch)

    def _write_batch(self, con, run_key: int, batch: _RecordBatch) -> None:
        """Write one :meth:`record` batch inside its transaction (a single writer: the
        images not yet done were found above). The PostgreSQL store overrides it."""
        batch.insert(con, run_key, _utc_now(), self._insert_arrow)

    # -- sharing a run between processes ------------------------------------------------

    @contextmanager
    def run_lock(self, detector: str, model_version: str, dataset: str) -> Iterator[None]:
        """Hold while finding or beginning the run of a detector version on a dataset,
        so that processes scoring the same pair at once share one run.

        A DuckDB file has one writer, so this holds nothing here; a PostgreSQL store
        takes a lock on the server.
        """
        yield

    def claim_images(self, run_id: str, image_ids: list[str]) -> set[str]:
        """Claim images of a run for this process before calling the detector on them.

        Parameters
        ----------
        run_id : str
        image_ids : list of str

        Returns
        -------
        set of str
            The ids this process may score. A DuckDB file has one writer, so all of
            them; a PostgreSQL store leaves out images another live process claimed.
        """
        return set(image_ids)

    @staticmethod
    def _done_keys(con, run_key: int, image_keys: Iterable[int]) -> set[int]:
        """Which of these images the run has already finished."""
        return {
            int(k)
            for (k,) in con.execute(
                "SELECT image_key FROM run_images WHERE run_key = $run "
                "AND image_key IN (SELECT unnest($keys::BIGINT[]))",
                {"run": run_key, "keys": list(image_keys)},
            ).fetchall()
        }

    @staticmethod
    def _insert_arrow(con, table: str, run_key: int, rows: pa.Table) -> None:
        src = f"_calibrate_rows_{uuid.uuid4().hex}"
        cols = ", ".join(rows.column_names)
        con.register(src, rows)
        try:
            con.execute(
                f"INSERT INTO {table} (run_key, {cols}) SELECT $run, {cols} FROM {src}",
                {"run": run_key},
            )
        finally:
            con.unregister(src)


@dataclass
class _RecordBatch:
    """The rows one :meth:`WritesMixin.record` call writes, gathered column by column.

    ``done`` starts as the images the run already finished and grows as entries are
    taken, so an image is taken once: the first time it appears, scored before failed.
    """

    done: set[int]
    results: dict[str, list] = field(default_factory=lambda: {
        c: [] for c in ("image_key", "label", "score", *_BOX_COLUMNS, "box_unit")})
    raw: dict[str, list] = field(default_factory=lambda: {"image_key": [], "response": []})
    failures: dict[str, list] = field(default_factory=lambda: {
        c: [] for c in ("image_key", "kind", "message", "attempts")})
    marks: dict[str, list] = field(default_factory=lambda: {
        c: [] for c in ("image_key", "status", "attempts")})

    def _take(self, key: int, status: str, attempts: int) -> bool:
        if key in self.done:
            return False
        self.done.add(key)
        self.marks["image_key"].append(key)
        self.marks["status"].append(status)
        self.marks["attempts"].append(int(attempts))
        return True

    def add_scored(self, key: int, image_id: str, detection: _DetectionLike,
                   attempts: int) -> None:
        if not self._take(key, "scored", attempts):
            return
        res = self.results
        for result in detection.results:
            res["image_key"].append(key)
            res["label"].append(result.label)
            res["score"].append(float(result.score))
            box = result.box
            for col in _BOX_COLUMNS:
                res[col].append(None if box is None else float(getattr(box, col)))
            res["box_unit"].append(None if box is None else box.unit)
        self.raw["image_key"].append(key)
        self.raw["response"].append(_compress_raw(detection.raw, image_id))

    def add_failed(self, key: int, kind: str, message: str, attempts: int) -> None:
        if not self._take(key, "failed", attempts):
            return
        self.failures["image_key"].append(key)
        self.failures["kind"].append(kind)
        self.failures["message"].append(scrub(str(message)))  # SDKs echo credentials
        self.failures["attempts"].append(int(attempts))

    def insert(self, con, run_key: int, now: datetime, insert_arrow) -> None:
        """Write the gathered rows with ``insert_arrow(con, table, run_key, rows)``."""
        res, fa, marks = self.results, self.failures, self.marks
        if res["image_key"]:
            insert_arrow(con, "results", run_key, pa.table({
                "image_key": pa.array(res["image_key"], pa.int64()),
                "label": pa.array(res["label"], pa.string()),
                "score": pa.array(res["score"], pa.float64()),
                **{c: pa.array(res[c], pa.float64()) for c in _BOX_COLUMNS},
                "box_unit": pa.array(res["box_unit"], pa.string()),
            }))
        if self.raw["image_key"]:
            insert_arrow(con, "raw_responses", run_key, pa.table({
                "image_key": pa.array(self.raw["image_key"], pa.int64()),
                "response": pa.array(self.raw["response"], pa.binary()),
            }))
        if fa["image_key"]:
            insert_arrow(con, "failures", run_key, pa.table({
                "image_key": pa.array(fa["image_key"], pa.int64()),
                "kind": pa.array(fa["kind"], pa.string()),
                "message": pa.array(fa["message"], pa.string()),
                "attempts": pa.array(fa["attempts"], pa.int32()),
                "failed_at": pa.array([now] * len(fa["image_key"]), pa.timestamp("us")),
            }))
        if marks["image_key"]:
            insert_arrow(con, "run_images", run_key, pa.table({
                "image_key": pa.array(marks["image_key"], pa.int64()),
                "status": pa.array(marks["status"], pa.string()),
                "attempts": pa.array(marks["attempts"], pa.int32()),
                "scored_at": pa.array([now] * len(marks["image_key"]), pa.timestamp("us")),
            }))


def _check_scored_entry(entry: Any, n: int) -> None:
    try:
        image_id, detection, attempts = entry
    except (TypeError, ValueError):
        raise InputError(
            f"scored[{n}] must be a tuple (image_id, detection, attempts), got {entry!r}."
        ) from None
    _check_name(image_id, f"scored[{n}] image_id")
    _check_attempts(attempts, f"scored[{n}] ({image_id!r})")
    results = getattr(detection, "results", None)
    if results is None:
        raise InputError(
            f"scored[{n}] ({image_id!r}): expected a Detection, got {type(detection).__name__}."
        )
    for k, result in enumerate(results):
        label = getattr(result, "label", None)
        score = getattr(result, "score", None)
        if not isinstance(label, str) or not label:
            raise InputError(
                f"image {image_id!r} result {k}: label must be a non-empty string, got "
                f"{label!r}."
            )
        if not _is_real(score) or not math.isfinite(score):
            raise InputError(
                f"image {image_id!r} result {k} ({label!r}): score must be a finite number, "
                f"got {score!r}. The detector adapter must not emit NaN or infinite scores; "
                "leave a label out of the results when there is no result for it."
            )
        box = getattr(result, "box", None)
        if box is not None:
            coords = [getattr(box, c, None) for c in _BOX_COLUMNS]
            if not all(_is_real(c) and math.isfinite(c) for c in coords):
                raise InputError(
                    f"image {image_id!r} result {k} ({label!r}): box coordinates must be "
                    f"finite numbers, got {coords!r}."
                )


def _check_failed_entry(entry: Any, n: int) -> None:
    try:
        image_id, kind, message, attempts = entry
    except (TypeError, ValueError):
        raise InputError(
            f"failed[{n}] must be a tuple (image_id, kind, message, attempts), got {entry!r}."
        ) from None
    _check_name(image_id, f"failed[{n}] image_id")
    if kind not in FAILURE_KINDS:
        raise InputError(
            f"failed[{n}] ({image_id!r}): kind must be one of {', '.join(FAILURE_KINDS)}, "
            f"got {kind!r}."
        )
    _check_attempts(attempts, f"failed[{n}] ({image_id!r})")


def _compress_raw(raw: Any, image_id: str) -> bytes:
    try:
        text = scrub(json.dumps(raw, default=str))
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"image {image_id!r}: the raw detector response cannot be stored as JSON ({exc})."
        ) from None
    return zlib.compress(text.encode("utf-8"))
