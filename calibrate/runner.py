"""Score a labeled image set with a detector into the store: concurrent, rate-limited,
retrying and resumable.

Resumability comes from the store, not from a checkpoint file: an image counts as done
only once its results (or its permanent failure) are committed, in the same transaction
that marks it done. Killing the process at any moment loses at most the images in
flight and the last unflushed batch; re-running the same command finds the unfinished
run of the same (detector, model version, dataset fingerprint), skips what is done and
scores the rest, so no image is ever recorded twice.

Retries are scheduled by the main thread (a heap of ready times), not slept in workers,
so the rate limit covers every call, retries included, and thread and process pools
behave the same.
"""

from __future__ import annotations

import heapq
import math
import random
import signal
import time
from collections import deque
import queue
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from calibrate.detectors.base import (
    Detection,
    Detector,
    DetectorError,
    FatalDetectorError,
    ImageError,
    RetryableError,
)
from calibrate.errors import CalibrateError, InputError

__all__ = ["RunOptions", "RunPlan", "RunSummary", "plan_run", "score_dataset"]


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


class _RateLimiter:
    """Token bucket: at most ``rate`` starts per second on average, with bursts of at
    most ``burst`` (never more than one second's worth), so that calls finishing
    together can be replaced together instead of one interval apart."""

    def __init__(self, rate: float | None, burst: int = 1):
        self.rate = rate
        self.capacity = float(max(1, min(burst, int(rate)))) if rate else 0.0
        # Start with one token, not a full bucket: no burst before the rate is earned.
        self.tokens = min(1.0, self.capacity)
        self.stamp = time.monotonic()

    def _refill(self) -> None:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now

    def delay(self) -> float:
        if not self.rate:
            return 0.0
        self._refill()
        return 0.0 if self.tokens >= 1.0 else (1.0 - self.tokens) / self.rate

    def take(self) -> None:
        if self.rate:
            self._refill()
            self.tokens -= 1.0


class _Writer:
    """Commits finished images from a thread of its own, so that a slow commit never
    stops the main thread from handing out work."""

    def __init__(self, store, run_id: str):
        import threading

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


# Worker side. A process pool gets the detector once, through the initializer.
_WORKER_DETECTOR: Detector | None = None


def _init_worker(detector: Detector) -> None:
    global _WORKER_DETECTOR
    _WORKER_DETECTOR = detector
    # Ctrl-C is the main process's business: it stops dispatching and shuts the pool.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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
        detection = detector.detect(image)
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
    problem = _check_detection(detection)
    if problem:
        return "error", problem
    return "ok", detection


def _check_detection(detection) -> str | None:
    if not isinstance(detection, Detection):
        return f"detector returned {type(detection).__name__}, not a Detection"
    for r in detection.results:
        try:
            s = float(r.score)
        except (TypeError, ValueError):
            return f"detector returned a non-numeric score {r.score!r} for label {r.label!r}"
        if not math.isfinite(s):
            return f"detector returned score {s} for label {r.label!r}; a score must be finite"
    return None


def _progress(enabled: bool, total: int, description: str):
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
        TextColumn("{task.speed:>6.1f} img/s" if False else "[progress.percentage]{task.percentage:>3.0f}%"),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[failed]}"),
        disable=not enabled,
        transient=False,
    )


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


def plan_run(dataset, detector: Detector, store, options: RunOptions | None = None) -> RunPlan:
    """How many detector calls a run would make: for cost estimates and ``--dry-run``.

    Reads the store only; images already scored (or permanently failed) by the same
    detector and model version on the same data are never paid for twice.
    """
    opts = options or RunOptions()
    run = None if opts.force else store.find_run(
        detector.name, detector.model_version, dataset.fingerprint, dataset.name
    )
    done = store.done_image_ids(run.run_id) if run is not None else set()
    if run is not None:
        done -= store.failed_image_ids(run.run_id)  # retried on resume
    todo = sum(1 for img in dataset.images if img.image_id not in done)
    already = len(dataset.images) - todo
    if opts.max_calls is not None:
        todo = min(todo, opts.max_calls)
    return RunPlan(run.run_id if run else None, todo, already)


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
    """
    opts = options or RunOptions()
    t0 = time.monotonic()
    # Images the manifest reader could not load are registered too, so their failures
    # are kept with their ground truth instead of vanishing.
    store.add_images(
        dataset.name, [*dataset.images, *(p.image for p in dataset.problems if p.image)]
    )
    fingerprint = dataset.fingerprint
    run = None if opts.force else store.find_run(
        detector.name, detector.model_version, fingerprint, dataset.name
    )
    if run is None:
        run_id = store.begin_run(
            detector=detector.name,
            model_version=detector.model_version,
            dataset=dataset.name,
            dataset_fingerprint=fingerprint,
            settings=dict(detector.settings()),
            labels=list(detector.labels) if detector.labels else None,
            detection_floor=detector.detection_floor,
        )
    else:
        run_id = run.run_id
        # Images the run gave up on for transient reasons get another chance on resume.
        store.reopen_failed(run_id)
    done = store.done_image_ids(run_id)
    summary = RunSummary(
        run_id, detector.name, detector.model_version, len(dataset.images) + len(dataset.problems)
    )
    known = {img.image_id for img in dataset.images} | {p.image_id for p in dataset.problems}
    summary.already_done = len(done & known)

    # Images the manifest could not load are failures of this run, recorded once.
    bad = [
        (p.image_id, "image", p.message, 0)
        for p in dataset.problems
        if p.image_id and p.image_id not in done
    ]
    if bad:
        store.record(run_id, [], bad)
        summary.failed += len(bad)
        summary.failures_by_kind["image"] = len(bad)
        done |= {b[0] for b in bad}
    todo = deque(img for img in dataset.images if img.image_id not in done)
    # A problem the reader could not even give an id cannot be stored; count it failed.
    nameless = sum(1 for p in dataset.problems if not p.image_id)
    if nameless:
        summary.failed += nameless
        summary.failures_by_kind["unrecorded"] = nameless
    if not todo:
        if run is not None and run.status == "finished" and not bad:
            summary.status = "skipped"
        else:
            store.finish_run(run_id, "finished")
        summary.elapsed = time.monotonic() - t0
        return summary

    kind = getattr(detector, "kind", "io")
    concurrency = opts.concurrency or (8 if kind == "io" else _cpu_count())
    timeout = opts.timeout if opts.timeout is not None else (120.0 if kind == "io" else None)
    if kind == "cpu" and concurrency > 1:
        workers = concurrency
        pool = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(detector,))
        submit = lambda img, stamp: pool.submit(_attempt_in_worker, img)  # noqa: E731
    else:
        # Abandoned (timed-out) calls keep their thread, so allow spare threads.
        workers = concurrency * 2
        pool = ThreadPoolExecutor(workers, thread_name_prefix="calibrate-detect")
        submit = lambda img, stamp: pool.submit(_attempt, detector, img, stamp)  # noqa: E731

    limiter = _RateLimiter(opts.rate_limit, burst=concurrency)
    rng = random.Random()
    retry_heap: list[tuple[float, int, Any, int]] = []  # (ready_at, seq, image, attempts)
    # future -> (image, attempt number, [start time once the call really runs])
    in_flight: dict[Future, tuple[Any, int, list]] = {}
    hung: set[Future] = set()  # abandoned calls still occupying a worker
    stuck_since: float | None = None
    abandoned = 0
    scored_batch: list[tuple[str, Detection, int]] = []
    failed_batch: list[tuple[str, str, str, int]] = []
    last_flush = time.monotonic()
    unexpected_in_a_row = 0
    seq = 0
    fatal: str | None = None

    writer = _Writer(store, run_id)
    # Workers report completion here, so the main thread wakes on the first finished
    # call without re-registering a waiter on every future in flight.
    completed: queue.Queue = queue.Queue()

    def flush() -> None:
        nonlocal last_flush
        if scored_batch or failed_batch:
            writer.put(list(scored_batch), list(failed_batch))
            scored_batch.clear()
            failed_batch.clear()
        last_flush = time.monotonic()

    def fail(image, kind_: str, message: str, attempts: int) -> None:
        failed_batch.append((image.image_id, kind_, message, attempts))
        summary.failed += 1
        summary.failures_by_kind[kind_] = summary.failures_by_kind.get(kind_, 0) + 1

    def retry_or_fail(image, attempts: int, message: str, retry_after: float | None) -> None:
        nonlocal seq
        if attempts >= opts.max_attempts:
            fail(image, "retryable", f"gave up after {attempts} attempts: {message}", attempts)
            return
        cap = min(opts.backoff_max, opts.backoff * 2 ** (attempts - 1))
        delay = max(rng.uniform(0, cap), retry_after or 0.0)
        seq += 1
        heapq.heappush(retry_heap, (time.monotonic() + delay, seq, image, attempts))
        summary.retries += 1

    progress = _progress(opts.progress, len(todo), f"{detector.name} {detector.model_version}")
    status = "finished"
    try:
        with progress:
            task = progress.add_task(
                f"{detector.name} {detector.model_version}",
                total=summary.n_images,
                completed=summary.already_done + len(bad),
                rate="",
                failed="",
            )
            while todo or retry_heap or in_flight:
                # Dispatch while there is room, respecting the rate limit and the budget.
                while (
                    len(in_flight) < concurrency
                    and len(in_flight) + len(hung) < workers
                    and fatal is None
                ):
                    if opts.max_calls is not None and summary.calls >= opts.max_calls:
                        break
                    now = time.monotonic()
                    if retry_heap and retry_heap[0][0] <= now:
                        _, _, image, attempts = heapq.heappop(retry_heap)
                    elif todo:
                        image, attempts = todo.popleft(), 0
                    else:
                        break
                    pause = limiter.delay()
                    if pause:
                        time.sleep(pause)
                    limiter.take()
                    stamp: list = []
                    fut = submit(image, stamp)
                    in_flight[fut] = (image, attempts + 1, stamp)
                    fut.add_done_callback(completed.put)
                    summary.calls += 1
                if not in_flight:
                    if fatal is not None or (
                        opts.max_calls is not None and summary.calls >= opts.max_calls
                    ):
                        break
                    if len(hung) >= workers:
                        # Every worker is held by an abandoned call: wait for one to
                        # come back, but not for ever.
                        stuck_since = stuck_since or time.monotonic()
                        if time.monotonic() - stuck_since > max(60.0, 3 * (timeout or 0)):
                            fatal = (
                                f"{len(hung)} calls are still running long after the "
                                f"{timeout:g} s timeout; the detector or its service is stuck"
                            )
                            break
                        try:
                            hung.discard(completed.get(timeout=0.5))
                        except queue.Empty:
                            pass
                        flush()
                        continue
                    if retry_heap:
                        time.sleep(max(0.0, min(retry_heap[0][0] - time.monotonic(), opts.flush_every)))
                        flush()
                        continue
                    continue
                wake = opts.flush_every
                if retry_heap:
                    wake = min(wake, max(0.0, retry_heap[0][0] - time.monotonic()))
                if timeout is not None:
                    starts = [st[0] for _, _, st in in_flight.values() if st]
                    if len(starts) < len(in_flight):
                        wake = min(wake, 0.05)  # a call may start any moment: look again soon
                    if starts:
                        wake = min(wake, max(0.0, min(starts) + timeout - time.monotonic()))
                finished = []
                try:
                    finished.append(completed.get(timeout=max(wake, 0.001)))
                    while True:
                        finished.append(completed.get_nowait())
                except queue.Empty:
                    pass
                for fut in finished:
                    if fut not in in_flight:
                        hung.discard(fut)  # an abandoned call that answered after all
                        continue
                    image, attempts, _ = in_flight.pop(fut)
                    try:
                        outcome, payload = fut.result()
                    except Exception as exc:  # noqa: BLE001 - a worker process died, say
                        outcome, payload = "error", f"{type(exc).__name__}: {exc}"
                    if outcome == "ok":
                        scored_batch.append((image.image_id, payload, attempts))
                        summary.scored += 1
                        unexpected_in_a_row = 0
                    elif outcome == "retry":
                        retry_or_fail(image, attempts, *payload)
                    elif outcome == "image":
                        fail(image, "image", payload, attempts)
                        unexpected_in_a_row = 0
                    elif outcome == "fatal":
                        fatal = payload
                    else:
                        fail(image, "error", payload, attempts)
                        unexpected_in_a_row += 1
                        if unexpected_in_a_row >= opts.give_up_after:
                            fatal = (
                                f"{unexpected_in_a_row} images in a row failed with unexpected "
                                f"errors, the last: {payload}"
                            )
                    progress.advance(task)
                if timeout is not None:
                    now = time.monotonic()
                    for fut, (image, attempts, stamp) in list(in_flight.items()):
                        if not stamp and fut.running():
                            stamp.append(now)  # process pools: first seen running
                        if stamp and now - stamp[0] > timeout and not fut.done():
                            # The call cannot be stopped; it is abandoned and its result
                            # ignored, and the image goes back to the retry queue.
                            del in_flight[fut]
                            hung.add(fut)
                            abandoned += 1
                            retry_or_fail(image, attempts, f"no answer within {timeout:g} s", None)
                            if attempts >= opts.max_attempts:
                                progress.advance(task)
                    if len(hung) < workers:
                        stuck_since = None
                now = time.monotonic()
                if now - last_flush >= opts.flush_every or (
                    len(scored_batch) + len(failed_batch) >= opts.flush_batch
                ):
                    # The display and the commits share one cadence: neither is worth
                    # the main thread's time on every finished call.
                    rate = summary.calls / max(now - t0, 1e-9)
                    progress.update(
                        task,
                        rate=f"{rate:.1f} calls/s",
                        failed=f"[red]{summary.failed} failed[/]" if summary.failed else "",
                    )
                    flush()
        flush()
        if fatal is not None:
            status = "failed"
        elif todo or retry_heap:
            status = "call_budget"
    except KeyboardInterrupt:
        status = "interrupted"
        flush()
        raise
    except BaseException:
        status = "failed"
        flush()
        raise
    finally:
        # Abandoned calls cannot be interrupted; do not wait for them here.
        pool.shutdown(wait=status == "finished" and not abandoned, cancel_futures=True)
        try:
            writer.close()  # everything finished so far is committed before we return
        except BaseException:
            status = "failed"
            raise
        finally:
            _record_censoring(detector, store, run_id)
            store.finish_run(run_id, {"finished": "finished", "failed": "failed"}.get(status, "interrupted"))
            summary.status = status
            summary.elapsed = time.monotonic() - t0
    if fatal is not None:
        raise FatalDetectorError(
            f"{detector.name} {detector.model_version}: the run stopped: {fatal}. "
            f"Everything finished so far is stored (run {run_id}); fix the cause and run "
            "the same command again to resume."
        )
    return summary


def _record_censoring(detector, store, run_id: str) -> None:
    """Keep a floor the detector observed (a service that filters before answering)."""
    check = getattr(detector, "warn_if_censored", None)
    floor = check() if callable(check) else None  # warns the user itself
    if floor is not None:
        store.set_detection_floor(run_id, floor)


def _cpu_count() -> int:
    import os

    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
