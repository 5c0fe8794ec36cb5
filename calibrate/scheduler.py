"""The runner's call loop: dispatch under a concurrency cap and a rate limit, retries
with backoff, timeouts, a call budget and batched commits.

The loop only decides *when* to call; the calls themselves run in a :class:`Pool` and
time comes from a :class:`Clock`, both passed in. The runner gives it a thread or
process pool and the system clock; tests give it a simulated pool and a fake clock, so
every timing rule can be checked exactly, without threads or sleeps.

Retries are scheduled here (a heap of ready times), not slept in workers, so the rate
limit covers every call, retries included, and thread and process pools behave the same.

A call's result is an ``(outcome, payload)`` pair:

* ``("ok", detection)``: scored;
* ``("retry", (message, retry_after))``: a transient failure, tried again after a
  backoff while attempts remain;
* ``("image", message)``: this image cannot be scored (a permanent failure);
* ``("error", message)``: an unexpected failure; many in a row stop the run;
* ``("fatal", message)``: the detector cannot work at all; the run stops.

A call whose future raises (a worker process died) counts as ``"error"``.

Nothing here may keep the process alive once the run is over: a call abandoned after
its timeout cannot be stopped, so :class:`DaemonThreadExecutor` runs thread calls in
daemon threads that the interpreter does not wait for at exit, and
:meth:`FuturesPool.shutdown` kills a process pool's workers instead of waiting for them.
"""

from __future__ import annotations

import heapq
import itertools
import queue
import random
import threading
import time
from collections import deque
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Protocol

__all__ = [
    "Clock",
    "DaemonThreadExecutor",
    "FuturesPool",
    "Pool",
    "Scheduler",
    "SchedulerConfig",
    "SystemClock",
    "Tally",
]

#: How often to look again at calls submitted but not yet seen running: their timeout
#: cannot start before they do.
_START_POLL = 0.05
#: How often to look for an abandoned call coming back while every worker is held.
_HUNG_POLL = 0.5
#: The shortest wait, so that a deadline just passed does not spin the loop.
_MIN_WAIT = 0.001


class Clock(Protocol):
    """Where the scheduler reads the time and waits."""

    def monotonic(self) -> float:
        """Seconds from an arbitrary origin; never goes back."""
        ...

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds``."""
        ...


class SystemClock:
    """The real clock: :func:`time.monotonic` and :func:`time.sleep`."""

    monotonic = staticmethod(time.monotonic)
    sleep = staticmethod(time.sleep)


class Pool(Protocol):
    """Where calls run.

    Attributes
    ----------
    workers : int
        Calls that can run at once. A call abandoned after its timeout keeps its worker
        until it returns, so the scheduler keeps ``in flight + abandoned < workers``.
    """

    workers: int

    def submit(self, item: Any, stamp: list[float]) -> Future:
        """Start one call on ``item``; append its real start time to ``stamp`` if known
        (a call may queue first). A pool that cannot tell leaves ``stamp`` empty and the
        scheduler stamps the call when it first sees it running."""
        ...

    def wait(self, timeout: float) -> list[Future]:
        """Calls finished since the last wait, waiting at most ``timeout`` seconds for
        the first one; empty if none finished in time."""
        ...


class FuturesPool:
    """A :class:`Pool` over a :mod:`concurrent.futures` executor.

    Parameters
    ----------
    executor : concurrent.futures.Executor
    workers : int
        The executor's worker count.
    fn : callable
        Called as ``fn(item, stamp)`` when ``stamped``, else ``fn(item)`` (a process
        pool cannot fill a list of the main process).
    stamped : bool, default True
    """

    def __init__(self, executor: Executor, workers: int, fn: Callable[..., Any], *, stamped: bool = True):
        self.executor, self.workers, self.fn, self.stamped = executor, workers, fn, stamped
        # Workers report completion here, so waiting wakes on the first finished call
        # without registering a waiter on every future in flight.
        self._done: queue.Queue = queue.Queue()

    def submit(self, item: Any, stamp: list[float]) -> Future:
        """Hand one call to the executor."""
        if self.stamped:
            fut = self.executor.submit(self.fn, item, stamp)
        else:
            fut = self.executor.submit(self.fn, item)
        fut.add_done_callback(self._done.put)
        return fut

    def wait(self, timeout: float) -> list[Future]:
        """Calls finished since the last wait, waiting up to ``timeout`` for the first."""
        finished: list[Future] = []
        try:
            finished.append(self._done.get(timeout=timeout))
            while True:
                finished.append(self._done.get_nowait())
        except queue.Empty:
            pass
        return finished

    def shutdown(self, wait: bool) -> None:
        """Stop the executor, dropping calls not started.

        Parameters
        ----------
        wait : bool
            Wait for the running calls. Otherwise they are abandoned: a process pool's
            workers are killed (a call in another process cannot be stopped any other
            way, and the interpreter would wait for it at exit); a thread's call runs on
            until it returns or the process exits, which a
            :class:`DaemonThreadExecutor` does not delay.
        """
        workers = [] if wait else _worker_processes(self.executor)
        self.executor.shutdown(wait=wait, cancel_futures=True)
        for process in workers:
            process.kill()  # SIGKILL: workers ignore SIGTERM, which is the parent's to handle


def _worker_processes(executor: Executor) -> list:
    """The live worker processes of a :class:`~concurrent.futures.ProcessPoolExecutor`
    (none for other executors)."""
    # Before Python 3.14 (kill_workers) there is no public way to reach the workers;
    # ``_processes`` (pid -> Process) is what every version since 3.2 keeps, and shutdown
    # drops it, so it is read first.
    processes = getattr(executor, "_processes", None)
    return [p for p in processes.values() if p.is_alive()] if processes else []


class DaemonThreadExecutor(Executor):
    """A thread pool whose threads never keep the process alive.

    :class:`~concurrent.futures.ThreadPoolExecutor` joins every worker thread at
    interpreter exit, so one detector call hanging past its timeout held the finished
    process open until the call returned (and a Ctrl-C in that wait printed ``Exception
    ignored in: <module 'threading'>``). Here workers are daemon threads and nothing
    joins them unless :meth:`shutdown` is asked to wait.

    Parameters
    ----------
    max_workers : int
        Threads at most; they are started as calls arrive and no idle one is free.
    thread_name_prefix : str, default "calibrate-detect"
    """

    def __init__(self, max_workers: int, thread_name_prefix: str = "calibrate-detect"):
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers}")
        self.max_workers, self.prefix = max_workers, thread_name_prefix
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._numbers = itertools.count()
        self._shutdown = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        """Run ``fn(*args, **kwargs)`` in a worker thread; its :class:`Future`."""
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit calls after shutdown")
            future: Future = Future()
            self._work.put((future, fn, args, kwargs))
            # An idle thread takes the call; else start one while there is room.
            if not self._idle.acquire(blocking=False) and len(self._threads) < self.max_workers:
                thread = threading.Thread(
                    target=self._serve, name=f"{self.prefix}_{next(self._numbers)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
        return future

    def _serve(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                self._work.put(None)  # let the next worker see the end too
                return
            future, fn, args, kwargs = item
            if future.set_running_or_notify_cancel():
                try:
                    result = fn(*args, **kwargs)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller
                    future.set_exception(exc)
                else:
                    future.set_result(result)
            del item, future, fn, args, kwargs  # do not hold a result while idle
            self._idle.release()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Accept no more calls; drop those not started (``cancel_futures``); ``wait``
        for the threads to finish what they run."""
        with self._lock:
            self._shutdown = True
            if cancel_futures:
                while True:
                    try:
                        item = self._work.get_nowait()
                    except queue.Empty:
                        break
                    if item is not None:
                        item[0].cancel()
            self._work.put(None)
        if wait:
            for thread in self._threads:
                thread.join()


@dataclass(frozen=True)
class SchedulerConfig:
    """The rules of a :class:`Scheduler` (see :class:`calibrate.runner.RunOptions`).

    Attributes
    ----------
    concurrency : int, default 1
        Calls in flight at once.
    rate_limit : float, optional
        Most calls started per second on average, retries included: a token bucket
        that starts with one token and holds at most ``min(concurrency, rate_limit)``.
    max_attempts : int, default 4
    backoff, backoff_max : float, default 0.5, 30.0
        Attempt ``a`` is retried after a random wait up to
        ``min(backoff_max, backoff * 2**(a-1))``, and at least the ``retry_after`` the
        service asked for.
    timeout : float, optional
        Seconds from a call's real start after which it is abandoned and retried.
    max_calls : int, optional
        Calls after which nothing more is dispatched.
    flush_every : float, default 0.5
        Seconds between hand-overs of finished images to ``record``.
    flush_batch : int, default 128
        Finished images that are handed over at once, however soon.
    give_up_after : int, default 25
        Unexpected errors in a row that stop the run.
    """

    concurrency: int = 1
    rate_limit: float | None = None
    max_attempts: int = 4
    backoff: float = 0.5
    backoff_max: float = 30.0
    timeout: float | None = None
    max_calls: int | None = None
    flush_every: float = 0.5
    flush_batch: int = 128
    give_up_after: int = 25


@dataclass
class Tally:
    """What a :class:`Scheduler` did so far.

    Attributes
    ----------
    calls, retries, scored, failed : int
        Calls submitted (retries included), retries scheduled, images scored, images
        recorded as failures.
    abandoned : int
        Calls abandoned after their timeout (they may still be running).
    failures_by_kind : dict
        Failures by kind: ``"retryable"`` (attempts exhausted), ``"image"``, ``"error"``.
    """

    calls: int = 0
    retries: int = 0
    scored: int = 0
    failed: int = 0
    abandoned: int = 0
    failures_by_kind: dict[str, int] = field(default_factory=dict)


class _TokenBucket:
    """At most ``rate`` starts per second on average, with bursts of at most ``burst``
    (never more than one second's worth), so that calls finishing together can be
    replaced together instead of one interval apart."""

    def __init__(self, rate: float | None, burst: int, clock: Clock):
        self.rate, self.clock = rate, clock
        self.capacity = float(max(1, min(burst, int(rate)))) if rate else 0.0
        # One token, not a full bucket: no burst before the rate is earned.
        self.tokens = min(1.0, self.capacity)
        self.stamp = clock.monotonic()

    def _refill(self) -> None:
        now = self.clock.monotonic()
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


class Scheduler:
    """Calls a pool on every item, as the :class:`SchedulerConfig` allows.

    Parameters
    ----------
    pool : Pool
        Runs the calls; each call's result is an ``(outcome, payload)`` pair (see the
        module docstring).
    record : callable
        ``record(scored, failed)`` takes finished images in batches:
        ``scored`` as ``(image_id, detection, attempts)``, ``failed`` as
        ``(image_id, kind, message, attempts)``. Items need an ``image_id``.
    config : SchedulerConfig
    clock : Clock, optional
        Default :class:`SystemClock`; it must be the clock the pool's stamps use.
    rng : random.Random, optional
        Draws the backoff jitter (``rng.uniform(0, cap)``).
    on_call_end : callable, optional
        Called with no argument as each call ends (answered, or abandoned for good).
    on_tick : callable, optional
        Called with the :class:`Tally` just before each timed or full-batch hand-over.

    Attributes
    ----------
    tally : Tally
    fatal : str or None
        Why the run stopped, when it had to.
    """

    def __init__(
        self,
        pool: Pool,
        record: Callable[[list, list], None],
        config: SchedulerConfig,
        *,
        clock: Clock | None = None,
        rng: random.Random | None = None,
        on_call_end: Callable[[], None] | None = None,
        on_tick: Callable[[Tally], None] | None = None,
    ):
        self.pool, self.record, self.config = pool, record, config
        self.clock = clock or SystemClock()
        self.rng = rng or random.Random()
        self.on_call_end, self.on_tick = on_call_end, on_tick
        self.tally = Tally()
        self.fatal: str | None = None
        self._todo: deque = deque()
        self._items: Iterator = iter(())
        self._retry_heap: list[tuple[float, int, Any, int]] = []  # (ready_at, seq, item, attempts)
        self._seq = 0
        # future -> (item, attempt number, [start time once the call really runs])
        self._in_flight: dict[Future, tuple[Any, int, list[float]]] = {}
        self._hung: set[Future] = set()  # abandoned calls still holding a worker
        self._stuck_since: float | None = None
        self._unexpected_in_a_row = 0
        self._scored: list[tuple[str, Any, int]] = []
        self._failed: list[tuple[str, str, str, int]] = []
        self._limiter = _TokenBucket(config.rate_limit, config.concurrency, self.clock)
        self._last_flush = self.clock.monotonic()

    def run(self, items: Iterable) -> str:
        """Call the pool on every item until each is scored or failed, or the run stops.

        Everything finished is handed to ``record`` before this returns or raises.

        Returns
        -------
        {"finished", "call_budget", "failed"}
            ``"failed"`` when :attr:`fatal` says why; ``"call_budget"`` when
            ``max_calls`` stopped it with items left.
        """
        # Items are taken from the iterable as calls are dispatched, not all up front: a
        # runner sharing a run with other processes claims images as it goes.
        self._items = iter(items)
        try:
            while self._has_todo() or self._retry_heap or self._in_flight:
                self._dispatch()
                if self._in_flight:
                    self._collect(self.pool.wait(max(self._wake(), _MIN_WAIT)))
                    self._expire()
                    self._tick()
                elif not self._idle():
                    break
        finally:
            self._flush()
        if self.fatal is not None:
            return "failed"
        if not self._todo:
            self._todo.extend(itertools.islice(self._items, 1))  # stopped with items left?
        return "call_budget" if self._todo or self._retry_heap else "finished"

    def _has_todo(self) -> bool:
        """Whether an item is left, taking the next one from the iterable if needed."""
        if not self._todo and not self._over_budget():
            self._todo.extend(itertools.islice(self._items, 1))
        return bool(self._todo)

    # -- dispatch -----------------------------------------------------------------------

    def _can_dispatch(self) -> bool:
        return (
            len(self._in_flight) < self.config.concurrency
            and len(self._in_flight) + len(self._hung) < self.pool.workers
            and self.fatal is None
            and not self._over_budget()
        )

    def _over_budget(self) -> bool:
        return self.config.max_calls is not None and self.tally.calls >= self.config.max_calls

    def _dispatch(self) -> None:
        while self._can_dispatch():
            if self._retry_heap and self._retry_heap[0][0] <= self.clock.monotonic():
                _, _, item, attempts = heapq.heappop(self._retry_heap)
            elif self._has_todo():
                item, attempts = self._todo.popleft(), 0
            else:
                return
            pause = self._limiter.delay()
            if pause:
                self.clock.sleep(pause)
            self._limiter.take()
            stamp: list[float] = []
            fut = self.pool.submit(item, stamp)
            self._in_flight[fut] = (item, attempts + 1, stamp)
            self.tally.calls += 1

    def _wake(self) -> float:
        """How long to wait for a call to finish before something else is due."""
        now = self.clock.monotonic()
        wake = self.config.flush_every
        # A due retry with no free slot waits for a call to end, which wakes us anyway.
        if self._retry_heap and self._can_dispatch():
            wake = min(wake, max(0.0, self._retry_heap[0][0] - now))
        if self.config.timeout is not None:
            starts = [st[0] for _, _, st in self._in_flight.values() if st]
            if len(starts) < len(self._in_flight):
                wake = min(wake, _START_POLL)
            if starts:
                wake = min(wake, max(0.0, min(starts) + self.config.timeout - now))
        return wake

    def _idle(self) -> bool:
        """Nothing in flight: wait for a retry or a worker. False when the run stops."""
        if self.fatal is not None or self._over_budget():
            return False
        if len(self._hung) >= self.pool.workers:
            return self._wait_for_a_worker()
        if self._retry_heap:
            due = self._retry_heap[0][0] - self.clock.monotonic()
            self.clock.sleep(max(0.0, min(due, self.config.flush_every)))
            self._flush()
        return True

    def _wait_for_a_worker(self) -> bool:
        """Every worker is held by an abandoned call: wait for one to come back, but not
        for ever. False (and :attr:`fatal` set) when the detector seems stuck."""
        now = self.clock.monotonic()
        if self._stuck_since is None:
            self._stuck_since = now
        timeout = self.config.timeout or 0.0
        if now - self._stuck_since > max(60.0, 3 * timeout):
            self.fatal = (
                f"{len(self._hung)} calls are still running long after the "
                f"{timeout:g} s timeout; the detector or its service is stuck"
            )
            return False
        for fut in self.pool.wait(_HUNG_POLL):
            self._hung.discard(fut)
        self._flush()
        return True

    # -- outcomes -----------------------------------------------------------------------

    def _collect(self, finished: list[Future]) -> None:
        for fut in finished:
            entry = self._in_flight.pop(fut, None)
            if entry is None:
                self._hung.discard(fut)  # an abandoned call that answered after all
                continue
            item, attempts, _ = entry
            try:
                outcome, payload = fut.result()
            except Exception as exc:  # noqa: BLE001 - a worker process died, say
                outcome, payload = "error", f"{type(exc).__name__}: {exc}"
            self._settle(item, attempts, outcome, payload)
            if self.on_call_end is not None:
                self.on_call_end()

    def _settle(self, item, attempts: int, outcome: str, payload: Any) -> None:
        if outcome == "ok":
            self._scored.append((item.image_id, payload, attempts))
            self.tally.scored += 1
            self._unexpected_in_a_row = 0
        elif outcome == "retry":
            self._retry_or_fail(item, attempts, *payload)
        elif outcome == "image":
            self._fail(item, "image", payload, attempts)
            self._unexpected_in_a_row = 0
        elif outcome == "fatal":
            self.fatal = payload
        else:
            self._fail(item, "error", payload, attempts)
            self._unexpected_in_a_row += 1
            if self._unexpected_in_a_row >= self.config.give_up_after:
                self.fatal = (
                    f"{self._unexpected_in_a_row} images in a row failed with unexpected "
                    f"errors, the last: {payload}"
                )

    def _fail(self, item, kind: str, message: str, attempts: int) -> None:
        self._failed.append((item.image_id, kind, message, attempts))
        self.tally.failed += 1
        self.tally.failures_by_kind[kind] = self.tally.failures_by_kind.get(kind, 0) + 1

    def _retry_or_fail(self, item, attempts: int, message: str, retry_after: float | None) -> None:
        cfg = self.config
        if attempts >= cfg.max_attempts:
            self._fail(item, "retryable", f"gave up after {attempts} attempts: {message}", attempts)
            return
        cap = min(cfg.backoff_max, cfg.backoff * 2 ** (attempts - 1))
        delay = max(self.rng.uniform(0, cap), retry_after or 0.0)
        self._seq += 1
        heapq.heappush(self._retry_heap, (self.clock.monotonic() + delay, self._seq, item, attempts))
        self.tally.retries += 1

    def _expire(self) -> None:
        """Abandon calls past their timeout: a call cannot be stopped, so its result is
        ignored and its item goes back to the retry queue."""
        timeout = self.config.timeout
        if timeout is None:
            return
        now = self.clock.monotonic()
        for fut, (item, attempts, stamp) in list(self._in_flight.items()):
            if not stamp and fut.running():
                stamp.append(now)  # process pools: first seen running
            if stamp and now >= stamp[0] + timeout and not fut.done():
                del self._in_flight[fut]
                self._hung.add(fut)
                self.tally.abandoned += 1
                self._retry_or_fail(item, attempts, f"no answer within {timeout:g} s", None)
                if attempts >= self.config.max_attempts and self.on_call_end is not None:
                    self.on_call_end()
        if len(self._hung) < self.pool.workers:
            self._stuck_since = None

    # -- hand-over ----------------------------------------------------------------------

    def _tick(self) -> None:
        # Progress and commits share one cadence: neither is worth the loop's time on
        # every finished call.
        now = self.clock.monotonic()
        if now - self._last_flush >= self.config.flush_every or (
            len(self._scored) + len(self._failed) >= self.config.flush_batch
        ):
            if self.on_tick is not None:
                self.on_tick(self.tally)
            self._flush()

    def _flush(self) -> None:
        if self._scored or self._failed:
            scored, failed = self._scored, self._failed
            self._scored, self._failed = [], []
            self.record(scored, failed)
        self._last_flush = self.clock.monotonic()
