"""Score a labeled image set with a detector into the store: concurrent, rate-limited,
retrying and resumable.

Resumability comes from the store, not from a checkpoint file: an image counts as done
only once its results (or its permanent failure) are committed, in the same transaction
that marks it done. Killing the process at any moment loses at most the images in
flight and the last unflushed batch; re-running the same command finds the unfinished
run of the same (detector, model version, dataset fingerprint), skips what is done and
scores the rest, so no image is ever recorded twice.

A run is three steps: resume (:func:`resume_point`, shared with :func:`plan_run`: which
images the matching run already finished), schedule (:class:`calibrate.scheduler.Scheduler`
calls the detector in a thread or process pool, with the rate limit, retries, timeouts
and the call budget) and finish (commit the rest, close the run with its status).

Several processes may score the same (detector, model version, dataset) into one
shared PostgreSQL store at once: the run is found or begun under the store's
:meth:`~calibrate.store.ScoreStore.run_lock`, so they share it, and each image is claimed
(:meth:`~calibrate.store.ScoreStore.claim_images`) a chunk at a time as the scheduler takes
it, so no image is sent twice; a killed process's claims are taken over. On a DuckDB file
(one writer) both are no-ops.

A run never outlives its process, nor leaves anything behind it: SIGTERM is handled
like Ctrl-C (:func:`stop_on_sigterm`: what finished is committed and the run is marked
interrupted); process-pool workers end with their parent even when it is killed with
SIGKILL (:func:`_die_with_parent`); and a call abandoned after its timeout keeps
neither a thread nor a process that the interpreter would wait for at exit.
"""

from __future__ import annotations

import contextlib
import functools
import multiprocessing
import multiprocessing.connection
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from calibrate.detectors.base import (
    Detector,
    DetectorError,
    FatalDetectorError,
    ImageError,
    RetryableError,
)
from calibrate.detectors.validation import call_detector, check_detection
from calibrate.errors import CalibrateError, InputError
from calibrate.scheduler import DaemonThreadExecutor, FuturesPool, Scheduler, SchedulerConfig, Tally

if TYPE_CHECKING:
    from calibrate.store import RunInfo

__all__ = [
    "ResumePoint",
    "RunOptions",
    "RunPlan",
    "RunSummary",
    "Terminated",
    "plan_run",
    "resume_point",
    "score_dataset",
    "stop_on_sigterm",
]

#: Failure kinds a resumed run tries again (the store's default, named here so that the
#: lookup and the reopening cannot disagree).
_RETRIED_ON_RESUME = ("retryable",)


@dataclass(frozen=True)
class RunOptions:
    """How a run calls the detector.

    Parameters
    ----------
    concurrency : int, optional
        Calls in flight at once. Default: 8 for network detectors, the number of CPUs
        for local ones.
    rate_limit : float, optional
        Most calls started per second on average, retries included (a service quota).
        It is a token bucket that starts with one token and holds at most
        ``min(concurrency, rate_limit)``, so calls finishing together are replaced
        together; after an idle spell one second can hold up to ``rate + burst - 1``
        starts. For a quota that counts every one-second window strictly, set
        ``concurrency`` to 1 or the limit below the quota.
    max_attempts : int, default 4
        Attempts per image for retryable errors (1 = no retry).
    backoff : float, default 0.5
        Base of the exponential backoff in seconds; attempt ``a`` waits a random time
        up to ``backoff * 2**(a-1)`` (full jitter), at most ``backoff_max``, and at least
        what the service asked for (``retry_after``).
    backoff_max : float, default 30.0
    timeout : float, optional
        Seconds one call may take before it is abandoned and counted as a retryable
        failure. Default: none for local detectors, 120 s for network ones.
    force : bool, default False
        Score again even if this model version already scored these images.
    max_calls : int, optional
        Stop (cleanly, resumable) after this many detector calls: a cost guard.
    progress : bool, default True
        Show a progress bar with rate and ETA.
    flush_every : float, default 0.5
        Seconds between commits of finished images (they are also committed every
        ``flush_batch`` images).
    flush_batch : int, default 128
    give_up_after : int, default 25
        Stop when this many images in a row fail with unexpected errors: that is a bug
        or a misconfiguration, not bad images.
    """

    concurrency: int | None = None
    rate_limit: float | None = None
    max_attempts: int = 4
    backoff: float = 0.5
    backoff_max: float = 30.0
    timeout: float | None = None
    force: bool = False
    max_calls: int | None = None
    progress: bool = True
    flush_every: float = 0.5
    flush_batch: int = 128
    give_up_after: int = 25

    def __post_init__(self) -> None:
        if self.concurrency is not None and self.concurrency < 1:
            raise InputError(f"concurrency must be at least 1, got {self.concurrency}.")
        if self.rate_limit is not None and not self.rate_limit > 0:
            raise InputError(f"rate_limit must be a positive number of calls per second, got {self.rate_limit}.")
        if self.max_attempts < 1:
            raise InputError(f"max_attempts must be at least 1, got {self.max_attempts}.")
        if self.timeout is not None and not self.timeout > 0:
            raise InputError(f"timeout must be positive seconds, got {self.timeout}.")


@dataclass
class RunSummary:
    """What a call of :func:`score_dataset` did.

    Attributes
    ----------
    run_id : str
    detector, model_version : str
    n_images : int
        Images in the labeled set (bad ones included).
    already_done : int
        Images this run had finished before this call (resumed), or that were skipped
        because the version already scored them.
    scored, failed : int
        Images scored / recorded as failures by this call.
    calls : int
        Detector calls made by this call (retries included).
    retries : int
    status : {"finished", "interrupted", "failed", "skipped", "call_budget"}
    elapsed : float
        Seconds.
    failures_by_kind : dict
    """

    run_id: str
    detector: str
    model_version: str
    n_images: int
    already_done: int = 0
    scored: int = 0
    failed: int = 0
    calls: int = 0
    retries: int = 0
    status: str = "finished"
    elapsed: float = 0.0
    failures_by_kind: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RunPlan:
    """What :func:`score_dataset` would do, without calling the detector.

    Attributes
    ----------
    run_id : str or None
        The run it would resume, or None for a new run.
    to_score : int
        Images not yet scored by this model version on this data: the calls it would
        make, retries aside (and at most ``max_calls``).
    already_done : int
    """

    run_id: str | None
    to_score: int
    already_done: int


class _Writer:
    """Commits finished images from a thread of its own, so that a slow commit never
    stops the main thread from handing out work."""

    def __init__(self, store, run_id: str):
        self.store, self.run_id = store, run_id
        self.queue: queue.Queue = queue.Queue()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._loop, name="calibrate-store-writer", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            item = self.queue.get()
            if item is None:
                return
            if self.error is None:
                try:
                    self.store.record(self.run_id, *item)
                except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
                    self.error = exc

    def put(self, scored: list, failed: list) -> None:
        if self.error is not None:
            raise self.error
        self.queue.put((scored, failed))

    def close(self) -> None:
        """Wait until everything handed over is committed; re-raise a failed commit."""
        self.queue.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error


# -- stopping -------------------------------------------------------------------------


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived during a run (see :func:`stop_on_sigterm`).

    A :class:`KeyboardInterrupt`, so that every clean-up that serves Ctrl-C serves it
    too; callers that want the conventional exit status 143 (128 + SIGTERM) catch it
    first.
    """


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Handle SIGTERM like Ctrl-C while the block runs: raise :class:`Terminated`.

    Only in the main thread (the only one Python delivers signals to) and only while
    SIGTERM has its default action: a handler the application installed is left alone.
    A second SIGTERM while the first is being handled is ignored, so that it cannot
    break off the clean-up that commits the finished images and marks the run
    interrupted (SIGKILL still ends the process at once). The previous handler is
    restored on exit.
    """
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
        yield
        return
    received: list[int] = []

    def handler(signum, frame) -> None:
        if not received:
            received.append(signum)
            raise Terminated(f"received signal {signum} (SIGTERM)")

    signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


# Worker side. A process pool gets the detector once, through the initializer.
_WORKER_DETECTOR: Detector | None = None
#: Seconds between a worker's checks that its parent is still there (where the kernel
#: cannot tell it at once: everywhere but Linux).
_PARENT_POLL = 0.25
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _init_worker(detector: Detector, parent_pid: int) -> None:
    global _WORKER_DETECTOR
    _WORKER_DETECTOR = detector
    # Ctrl-C and SIGTERM are the main process's business: it stops dispatching, commits
    # and kills the workers itself. A worker dying of a signal sent to the whole process
    # group would instead fail its call as an error before the parent saw the signal.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_parent(parent_pid)


def _die_with_parent(parent_pid: int) -> None:
    """End this worker process as soon as its parent is gone, however it went.

    A worker waits for work on a pipe that it holds open itself, so it never notices
    its parent's death: after a ``kill -9`` of ``calibrate score`` the workers lived on,
    holding the store file and the parent's stdout (``calibrate score | tee log`` never
    returned). On Linux the kernel sends SIGKILL when the parent dies (prctl
    PR_SET_PDEATHSIG), even to a worker stuck in C code; everywhere, a daemon thread
    watches the parent too.
    """
    _set_parent_death_signal()
    # The parent as this process sees it: the fork server, not the main process, under
    # the forkserver start method (it exits with the main process). Read before the
    # liveness check, so that a parent dying in between is still seen as a change.
    watched = os.getppid()
    if not _pid_alive(parent_pid):
        os._exit(1)  # orphaned before the watch began
    threading.Thread(
        target=_watch_parent, args=(watched,), name="calibrate-parent-watch", daemon=True
    ).start()


def _set_parent_death_signal() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        # The signal comes when the *thread* that started the worker ends: that is the
        # thread running the scheduler, which shuts the pool before it returns.
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):  # no usable libc: the watch thread still works
        pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:  # Windows: signal 0 is not supported; the watch thread decides
        return True
    return True


def _watch_parent(parent: int) -> None:
    """Exit the process once the parent is gone (runs in a daemon thread)."""
    # On POSIX an orphan is re-parented at once, so its parent id changes. Windows
    # keeps the old id; there multiprocessing's handle on the parent is waited on.
    sentinel = None
    if os.name != "posix":
        sentinel = getattr(multiprocessing.parent_process(), "sentinel", None)
    while True:
        if sentinel is not None:
            if multiprocessing.connection.wait([sentinel], _PARENT_POLL):
                break
        else:
            time.sleep(_PARENT_POLL)
            if os.getppid() != parent:
                break
    # os._exit, not sys.exit: the main thread may be inside a detector call for minutes,
    # and nothing here needs flushing: results only ever go to the parent, now gone.
    os._exit(1)


def _attempt_in_worker(image) -> tuple[str, Any]:
    assert _WORKER_DETECTOR is not None
    return _attempt(_WORKER_DETECTOR, image)


def _attempt(detector: Detector, image, stamp: list | None = None) -> tuple[str, Any]:
    """One detector call, its outcome classified for the main thread.

    ``stamp`` receives the time the call really started (a call may wait in the pool's
    queue first), which is what a timeout is measured from.
    """
    if stamp is not None:
        stamp.append(time.monotonic())
    try:
        # Both inside the try: a malformed stated contract (labels, score_range) is a
        # FatalDetectorError, and sys.exit() in a plugin becomes one too.
        detection = call_detector(detector, image)
        problem = check_detection(detection, detector)
    except RetryableError as exc:
        return "retry", (str(exc), exc.retry_after)
    except ImageError as exc:
        return "image", str(exc)
    except FatalDetectorError as exc:
        return "fatal", str(exc)
    except DetectorError as exc:
        return "error", f"{type(exc).__name__}: {exc}"
    except CalibrateError as exc:  # e.g. InputError from reading the image file
        return "image", str(exc)
    except Exception as exc:  # noqa: BLE001 - recorded with its type, never a score
        return "error", f"{type(exc).__name__}: {exc}"
    if problem:
        return "error", problem
    return "ok", detection


# -- resume ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ResumePoint:
    """Where the matching run of a detector version on a dataset stands in the store.

    Attributes
    ----------
    fingerprint : str
        The dataset's content fingerprint the lookup matched on (it reads every image
        record, so it is computed once).
    run : calibrate.store.RunInfo or None
        The run a new call continues: the latest of this detector and model version on
        this dataset name and content. None when there is none (or when forced).
    done : frozenset of str
        Ids of the dataset's images (manifest problems included) that run finished for
        good: scored, or failed permanently. They are never called again.
    retryable : frozenset of str
        Ids the run gave up on for transient reasons (throttling, timeouts): not done;
        a resumed run calls them again.
    reusable : frozenset of str
        Ids not done that some run of the same detector, model version and settings
        already scored with the same content (id and content hash), on any dataset:
        their results are copied into the run when it opens, never sent again. Empty
        when forced.
    """

    fingerprint: str
    run: RunInfo | None
    done: frozenset[str]
    retryable: frozenset[str]
    reusable: frozenset[str] = frozenset()


def resume_point(dataset, detector: Detector, store, *, force: bool = False) -> ResumePoint:
    """Find the run a call of :func:`score_dataset` would continue, and what it finished.

    Reads the store only.

    Parameters
    ----------
    dataset : calibrate.manifest.LabeledSet
    detector : Detector
    store : calibrate.store.ScoreStore
    force : bool, default False
        Ignore earlier runs: everything is to be scored again.

    Returns
    -------
    ResumePoint
    """
    fingerprint = dataset.fingerprint
    if force:
        return ResumePoint(fingerprint, None, frozenset(), frozenset())
    run = store.find_run(detector.name, detector.model_version, fingerprint, dataset.name)
    retryable = done = frozenset()
    if run is not None:
        known = {img.image_id for img in dataset.images} | {p.image_id for p in dataset.problems}
        retryable = frozenset(store.failed_image_ids(run.run_id, kinds=_RETRIED_ON_RESUME) & known)
        done = frozenset(store.done_image_ids(run.run_id) & known) - retryable
    # Only usable images: a file the manifest reader now rejects is recorded as a
    # failure, whatever an earlier run made of it.
    reusable = frozenset(store.reusable_image_ids(
        detector.name, detector.model_version, dict(detector.settings()), dataset.images
    )) - done
    return ResumePoint(fingerprint, run, done, retryable, reusable)


def plan_run(dataset, detector: Detector, store, options: RunOptions | None = None) -> RunPlan:
    """How many detector calls a run would make: for cost estimates and ``--dry-run``.

    Reads the store only; images already scored (or permanently failed) by the same
    detector and model version on the same data are never paid for twice, and neither
    are images whose stored results a new run reuses (same id, content and settings).

    Parameters
    ----------
    dataset : calibrate.manifest.LabeledSet
    detector : Detector
    store : calibrate.store.ScoreStore
    options : RunOptions, optional

    Returns
    -------
    RunPlan
    """
    opts = options or RunOptions()
    point = resume_point(dataset, detector, store, force=opts.force)
    settled = point.done | point.reusable
    todo = sum(1 for img in dataset.images if img.image_id not in settled)
    already = len(dataset.images) - todo
    if opts.max_calls is not None:
        todo = min(todo, opts.max_calls)
    return RunPlan(point.run.run_id if point.run else None, todo, already)


@dataclass
class _Start:
    """A run opened for scoring: what is left and what was recorded on the way in."""

    run_id: str
    resumed: RunInfo | None
    todo: list
    recorded_problems: int
    summary: RunSummary


def _open_run(dataset, detector: Detector, store, opts: RunOptions) -> _Start:
    """Register the images, continue the matching run (or begin one), copy in the
    stored results of unchanged images and record the images the manifest could not
    load.

    Processes scoring the same pair at once (a shared PostgreSQL store) do this one at
    a time under the store's run lock, so they find and share one run.
    """
    with store.run_lock(detector.name, detector.model_version, dataset.name):
        return _open_run_locked(dataset, detector, store, opts)


def _open_run_locked(dataset, detector: Detector, store, opts: RunOptions) -> _Start:
    """:func:`_open_run`, with the run lock held."""
    # Images the manifest reader could not load are registered too, so their failures
    # are kept with their ground truth instead of vanishing. The manifest is the whole
    # dataset now: images it no longer lists stop counting in curves.
    store.add_images(
        dataset.name, [*dataset.images, *(p.image for p in dataset.problems if p.image)],
        complete=True,
    )
    point = resume_point(dataset, detector, store, force=opts.force)
    if point.run is None:
        run_id = store.begin_run(
            detector=detector.name,
            model_version=detector.model_version,
            dataset=dataset.name,
            dataset_fingerprint=point.fingerprint,
            settings=dict(detector.settings()),
            labels=list(detector.labels) if detector.labels else None,
            detection_floor=detector.detection_floor,
            source=dataset.source,
        )
    else:
        run_id = point.run.run_id
        # Images the run gave up on for transient reasons get another chance on resume.
        store.reopen_failed(run_id, kinds=_RETRIED_ON_RESUME)
    # A changed manifest is a new run; its unchanged images are copied in, not re-sent
    # (a full re-bill on a cloud detector), so the run holds the whole dataset.
    reused = frozenset(store.reuse_results(run_id, sorted(point.reusable)))
    done = point.done | reused
    summary = RunSummary(
        run_id, detector.name, detector.model_version,
        len(dataset.images) + len(dataset.problems), already_done=len(done),
    )
    recorded = _record_problems(dataset, store, run_id, done, summary)
    done |= recorded
    todo = [img for img in dataset.images if img.image_id not in done]
    return _Start(run_id, point.run, todo, len(recorded), summary)


def _record_problems(dataset, store, run_id: str, done: frozenset[str], summary: RunSummary) -> set[str]:
    """Record the images the manifest could not load as failures of the run, once.

    Returns the ids recorded now.
    """
    bad = [
        (p.image_id, "image", p.message, 0)
        for p in dataset.problems
        if p.image_id and p.image_id not in done
    ]
    if bad:
        store.record(run_id, [], bad)
        summary.failed += len(bad)
        summary.failures_by_kind["image"] = len(bad)
    # A problem the reader could not even give an id cannot be stored; count it failed.
    nameless = sum(1 for p in dataset.problems if not p.image_id)
    if nameless:
        summary.failed += nameless
        summary.failures_by_kind["unrecorded"] = nameless
    return {b[0] for b in bad}


# -- schedule and finish --------------------------------------------------------------


def score_dataset(dataset, detector: Detector, store, options: RunOptions | None = None) -> RunSummary:
    """Score every image of a labeled set with a detector, into the store.

    Parameters
    ----------
    dataset : calibrate.manifest.LabeledSet
        Images with ground truth. Images the manifest reader could not load (its
        ``problems``) are recorded as failures of kind ``"image"``, never dropped.
    detector : Detector
    store : calibrate.store.ScoreStore
    options : RunOptions, optional

    Returns
    -------
    RunSummary

    Raises
    ------
    FatalDetectorError
        When the detector reports it cannot work (bad credentials, missing model), or
        too many images in a row fail unexpectedly. The run is marked failed; re-running
        after the fix resumes it.
    KeyboardInterrupt
        After recording everything finished so far and marking the run interrupted.
    Terminated
        The same, for SIGTERM (a :class:`KeyboardInterrupt`; see :func:`stop_on_sigterm`).
    """
    opts = options or RunOptions()
    t0 = time.monotonic()
    with stop_on_sigterm():
        start = _open_run(dataset, detector, store, opts)
        if not start.todo:
            return _close_without_calls(start, store, t0)
        fatal = _schedule(start, detector, store, opts, t0)
    _raise_if_stopped(detector, start, fatal)
    return start.summary


def _raise_if_stopped(detector: Detector, start: _Start, fatal: str | None) -> None:
    """Raise :class:`FatalDetectorError` when the run had to stop (``fatal`` says why)."""
    if fatal is not None:
        raise FatalDetectorError(
            f"{detector.name} {detector.model_version}: the run stopped: {str(fatal).rstrip('.')}. "
            f"Everything finished so far is stored (run {start.run_id}); fix the cause "
            "and run the same command again to resume."
        )


def _close_without_calls(start: _Start, store, t0: float) -> RunSummary:
    """Nothing left to call: a finished run stays as it was, anything else is closed."""
    summary = start.summary
    if start.resumed is not None and start.resumed.status == "finished" and not start.recorded_problems:
        summary.status = "skipped"
    else:
        store.finish_run(start.run_id, "finished")
    summary.elapsed = time.monotonic() - t0
    return summary


def _schedule(start: _Start, detector: Detector, store, opts: RunOptions, t0: float) -> str | None:
    """Call the detector on every image left, then close the run.

    Returns why the run had to stop, or None.
    """
    kind = getattr(detector, "kind", "io")
    config = _scheduler_config(opts, kind)
    _note_stored_successes(detector, store, start)  # before a process pool copies it
    pool = _open_pool(detector, kind, config.concurrency)
    writer = _Writer(store, start.run_id)
    bar = _ProgressBar(opts.progress, f"{detector.name} {detector.model_version}", start, t0)
    scheduler = Scheduler(pool, writer.put, config, on_call_end=bar.advance, on_tick=bar.update)
    with _closing(start, detector, store, pool, writer, scheduler.tally, t0) as run, bar:
        run.status = scheduler.run(_claimed(store, start.run_id, start.todo,
                                            max(2 * config.concurrency, 16)))
    return scheduler.fatal


@dataclass
class _Ending:
    """How a run's scoring ended: the status its engine returned, or set by an exception."""

    status: str = "finished"


@contextlib.contextmanager
def _closing(start: _Start, detector, store, pool, writer: _Writer, tally: Tally,
             t0: float) -> Iterator[_Ending]:
    """Score in the ``with`` block (set ``.status``); then, whatever happened, close the
    pool, commit what was handed over and close the run: interrupted on Ctrl-C or
    SIGTERM, failed on any other exception. Shared by the local and the Ray engine."""
    ending = _Ending()
    try:
        yield ending
    except KeyboardInterrupt:
        ending.status = "interrupted"
        raise
    except BaseException:
        ending.status = "failed"
        raise
    finally:
        _finish(start, detector, store, pool, writer, tally, ending.status, t0)


def _claimed(store, run_id: str, todo: list, chunk: int) -> Iterator:
    """The images of ``todo`` this process may score, claimed a chunk at a time as the
    scheduler takes them: another process sharing the run (PostgreSQL) keeps the images
    it claimed, and takes over the rest of this one's if it is killed."""
    for begin in range(0, len(todo), chunk):
        part = todo[begin:begin + chunk]
        mine = store.claim_images(run_id, [img.image_id for img in part])
        yield from (img for img in part if img.image_id in mine)


def _finish(start: _Start, detector, store, pool: FuturesPool, writer: _Writer,
            tally: Tally, status: str, t0: float) -> None:
    """Stop the pool, commit everything handed over and close the run with its status."""
    # Abandoned calls cannot be interrupted; do not wait for them here.
    pool.shutdown(wait=status == "finished" and not tally.abandoned)
    summary = start.summary
    try:
        writer.close()  # everything finished so far is committed before we return
    except BaseException:
        status = "failed"
        raise
    finally:
        _record_censoring(detector, store, start.run_id)
        store.finish_run(
            start.run_id, {"finished": "finished", "failed": "failed"}.get(status, "interrupted")
        )
        summary.calls += tally.calls
        summary.retries += tally.retries
        summary.scored += tally.scored
        summary.failed += tally.failed
        for kind, n in tally.failures_by_kind.items():
            summary.failures_by_kind[kind] = summary.failures_by_kind.get(kind, 0) + n
        summary.status = status
        summary.elapsed = time.monotonic() - t0


def _note_stored_successes(detector, store, start: _Start) -> None:
    """Tell a detector how many images the run already holds scored in the store.

    Rekognition and IMM stop a run whose first few images all fail in a way that
    usually means a misconfiguration (no access to the bucket, a wrong region). Counted
    per process, a resumed run meeting refused images first was stopped although its
    stored images had succeeded, and every re-run paid for the same refused images again.
    The run's successes come from the store, so they count whichever process made them
    (or whichever run, for results copied in when the run opened). A detector takes
    them through an optional ``note_stored_successes(n)`` method.
    """
    note = getattr(detector, "note_stored_successes", None)
    if not callable(note):
        return
    runs = store.runs()
    note(int(runs.loc[runs["run_id"] == start.run_id, "n_scored"].sum()))


def _scheduler_config(opts: RunOptions, kind: str) -> SchedulerConfig:
    """The run options, with the defaults that depend on the detector's kind."""
    return SchedulerConfig(
        concurrency=opts.concurrency or (8 if kind == "io" else _cpu_count()),
        rate_limit=opts.rate_limit,
        max_attempts=opts.max_attempts,
        backoff=opts.backoff,
        backoff_max=opts.backoff_max,
        timeout=opts.timeout if opts.timeout is not None else (120.0 if kind == "io" else None),
        max_calls=opts.max_calls,
        flush_every=opts.flush_every,
        flush_batch=opts.flush_batch,
        give_up_after=opts.give_up_after,
    )


def _open_pool(detector: Detector, kind: str, concurrency: int) -> FuturesPool:
    """Processes for CPU-bound local detectors, threads for everything else.

    Neither keeps the process alive after the run: workers end with their parent
    (:func:`_die_with_parent`) and threads are daemon threads.
    """
    if kind == "cpu" and concurrency > 1:
        executor = ProcessPoolExecutor(
            concurrency, initializer=_init_worker, initargs=(detector, os.getpid())
        )
        return FuturesPool(executor, concurrency, _attempt_in_worker, stamped=False)
    # Abandoned (timed-out) calls keep their thread, so allow spare threads.
    workers = concurrency * 2
    executor = DaemonThreadExecutor(workers, thread_name_prefix="calibrate-detect")
    return FuturesPool(executor, workers, functools.partial(_attempt, detector))


class _ProgressBar:
    """The progress display, fed by the scheduler's hooks."""

    def __init__(self, enabled: bool, title: str, start: _Start, t0: float):
        self.bar = _progress(enabled)
        self.title, self.t0 = title, t0
        self.summary = start.summary
        self.completed = start.summary.already_done + start.recorded_problems
        self.task = None

    def __enter__(self) -> _ProgressBar:
        self.bar.__enter__()
        self.task = self.bar.add_task(
            self.title, total=self.summary.n_images, completed=self.completed, rate="", failed=""
        )
        return self

    def __exit__(self, *exc_info) -> None:
        self.bar.__exit__(*exc_info)

    def advance(self) -> None:
        self.bar.advance(self.task)

    def update(self, tally: Tally) -> None:
        rate = tally.calls / max(time.monotonic() - self.t0, 1e-9)
        failed = self.summary.failed + tally.failed
        self.bar.update(
            self.task,
            rate=f"{rate:.1f} calls/s",
            failed=f"[red]{failed} failed[/]" if failed else "",
        )


def _progress(enabled: bool):
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[progress.percentage]{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[failed]}"),
        disable=not enabled,
        transient=False,
    )


def _record_censoring(detector, store, run_id: str) -> None:
    """Keep a floor the detector observed (a service that filters before answering)."""
    check = getattr(detector, "warn_if_censored", None)
    floor = check() if callable(check) else None  # warns the user itself
    if floor is not None:
        store.set_detection_floor(run_id, floor)


def _cpu_count() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
