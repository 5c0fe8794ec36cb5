"""The scheduler driven by a fake clock and a simulated pool: no threads, no sleeps.

The simulated pool runs each call for a scripted duration on one of its workers (a call
waits when every worker is busy, as in a real pool), and a call holds its worker until
its duration is over even if the scheduler abandoned it. All times in these tests are
binary fractions, so the arithmetic is exact and every assertion is on exact times.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import pytest

from calibrate.scheduler import FuturesPool, Scheduler, SchedulerConfig, SystemClock

LATENCY = 0.5


@dataclass(frozen=True)
class Img:
    image_id: str


class FakeClock:
    """Time moves only when someone sleeps or waits; the pool sees every move."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []
        self.pool: FakePool | None = None

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.advance_to(self.now + seconds)

    def advance_to(self, t: float) -> None:
        assert t >= self.now
        if self.pool is not None:
            self.pool.run_until(t)
        self.now = t


class FakePool:
    """A pool of ``workers`` that runs calls as ``script(image_id, attempt)`` says:
    ``(duration, result)``, the result an ``(outcome, payload)`` pair or an exception
    (the future raises it). Unscripted calls answer "ok" after LATENCY. No call starts
    before ``ready_at`` (workers still starting, say)."""

    def __init__(self, clock: FakeClock, script=None, *, workers: int = 2, ready_at: float = 0.0):
        self.clock, self.workers, self.ready_at = clock, workers, ready_at
        self.script = script or {}
        clock.pool = self
        self.now = clock.now
        self.free = workers
        self.queued: deque = deque()
        self.running: list[tuple[float, int, Future, object]] = []
        self.finished: list[Future] = []
        self.attempts: Counter = Counter()
        self.submitted: list[tuple[float, str]] = []  # (time, image id)
        self.started: list[tuple[float, str]] = []
        self.interrupt_at_submit: int | None = None
        self._seq = 0

    def submit(self, item, stamp):
        if self.interrupt_at_submit == len(self.submitted) + 1:
            raise KeyboardInterrupt
        self.attempts[item.image_id] += 1
        fut = Future()
        self.submitted.append((self.clock.now, item.image_id))
        self.queued.append((fut, item.image_id, self.attempts[item.image_id], stamp))
        self._start_queued()
        return fut

    def wait(self, timeout):
        assert timeout > 0
        deadline = self.clock.now + timeout
        while not self.finished:
            nxt = self._next_event()
            if nxt is None or nxt > deadline:
                self.clock.advance_to(deadline)
                break
            self.clock.advance_to(nxt)
        out, self.finished = self.finished, []
        return out

    def run_until(self, t: float) -> None:
        while (nxt := self._next_event()) is not None and nxt <= t:
            self.now = nxt
            self.running.sort(key=lambda r: (r[0], r[1]))
            while self.running and self.running[0][0] <= self.now:
                _, _, fut, result = self.running.pop(0)
                self.free += 1
                if isinstance(result, BaseException):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)
                self.finished.append(fut)
            self._start_queued()
        self.now = t
        self._start_queued()

    def _next_event(self) -> float | None:
        times = [r[0] for r in self.running]
        if self.queued and self.free and self.now < self.ready_at:
            times.append(self.ready_at)
        return min(times) if times else None

    def _start_queued(self) -> None:
        while self.queued and self.free and self.now >= self.ready_at:
            fut, image_id, attempt, stamp = self.queued.popleft()
            self.free -= 1
            fut.set_running_or_notify_cancel()
            stamp.append(self.now)
            self.started.append((self.now, image_id))
            steps = self.script.get(image_id, [])
            duration, result = steps[attempt - 1] if attempt <= len(steps) else (LATENCY, ok())
            self._seq += 1
            self.running.append((self.now + duration, self._seq, fut, result))

    def starts(self, image_id: str | None = None) -> list:
        return [t if image_id else (t, i) for t, i in self.started if image_id in (None, i)]


class TopOfRange(random.Random):
    """Backoff jitter that always draws the top of its range, noting when and what."""

    def __init__(self, clock: FakeClock):
        super().__init__(0)
        self.clock = clock
        self.draws: list[tuple[float, float]] = []  # (time, cap)

    def uniform(self, a, b):
        assert a == 0
        self.draws.append((self.clock.now, b))
        return b


def ok(score: float = 0.5):
    return ("ok", f"detection {score}")


def retry(after=None):
    return ("retry", ("throttled", after))


class Harness:
    """A scheduler with a fake clock, a simulated pool and a recording sink."""

    def __init__(self, script=None, *, workers=None, ready_at=0.0, **config):
        config.setdefault("backoff", 1.0)
        self.config = SchedulerConfig(**config)
        self.clock = FakeClock()
        self.pool = FakePool(self.clock, script, workers=workers or 2 * self.config.concurrency,
                             ready_at=ready_at)
        self.rng = TopOfRange(self.clock)
        self.flushes: list[tuple[float, list, list]] = []
        self.ticks: list[float] = []
        self.call_ends: list[float] = []
        self.scheduler = Scheduler(
            self.pool, self.record, self.config, clock=self.clock, rng=self.rng,
            on_call_end=lambda: self.call_ends.append(self.clock.now),
            on_tick=lambda tally: self.ticks.append(self.clock.now),
        )

    def record(self, scored, failed):
        self.flushes.append((self.clock.now, list(scored), list(failed)))

    def run(self, ids) -> str:
        return self.scheduler.run([Img(i) for i in ids])

    @property
    def scored(self):
        return [s for _, batch, _ in self.flushes for s in batch]

    @property
    def failed(self):
        return [f for _, _, batch in self.flushes for f in batch]

    @property
    def tally(self):
        return self.scheduler.tally


# -- retries and backoff ------------------------------------------------------------------


def test_retryable_errors_are_retried_with_exponential_backoff_until_they_succeed():
    h = Harness({"a": [(LATENCY, retry()), (LATENCY, retry()), (LATENCY, ok())]},
                max_attempts=3, backoff=1.0)
    assert h.run(["a"]) == "finished"
    # ends at 0.5, waits 1 (backoff * 2**0); ends at 2.0, waits 2 (backoff * 2**1)
    assert h.pool.starts("a") == [0.0, 1.5, 4.0]
    assert h.rng.draws == [(0.5, 1.0), (2.0, 2.0)]
    assert h.scored == [("a", "detection 0.5", 3)] and h.failed == []
    t = h.tally
    assert (t.calls, t.retries, t.scored, t.failed) == (3, 2, 1, 0)


def test_retries_stop_at_max_attempts_and_the_image_is_a_failure():
    h = Harness({"a": [(LATENCY, retry())] * 5}, max_attempts=3, backoff=1.0)
    assert h.run(["a"]) == "finished"
    assert h.pool.starts("a") == [0.0, 1.5, 4.0]
    assert h.failed == [("a", "retryable", "gave up after 3 attempts: throttled", 3)]
    assert h.scored == []
    t = h.tally
    assert (t.calls, t.retries, t.failed, t.failures_by_kind) == (3, 2, 1, {"retryable": 1})


def test_backoff_is_capped_and_never_shorter_than_retry_after():
    h = Harness({"a": [(LATENCY, retry()), (LATENCY, retry(after=5.0)), (LATENCY, retry()),
                       (LATENCY, ok())]},
                max_attempts=4, backoff=1.0, backoff_max=1.5)
    h.run(["a"])
    # caps: min(1.5, 1), min(1.5, 2), min(1.5, 4); the second wait is the service's 5 s
    assert h.rng.draws == [(0.5, 1.0), (2.0, 1.5), (7.5, 1.5)]
    assert h.pool.starts("a") == [0.0, 1.5, 7.0, 9.0]
    assert h.scored == [("a", "detection 0.5", 4)]


# -- timeouts -----------------------------------------------------------------------------


def test_a_hung_call_times_out_exactly_timeout_after_it_starts_and_is_retried():
    h = Harness({"a": [(100.0, ok(0.9))]}, concurrency=1, timeout=2.0, backoff=1.0)
    assert h.run(["a", "b", "c"]) == "finished"
    # abandoned at 2.0 sharp: b takes its slot then; a's retry waits 1 s, then c's turn ends
    assert h.rng.draws == [(2.0, 1.0)]
    assert h.pool.starts() == [(0.0, "a"), (2.0, "b"), (2.5, "c"), (3.0, "a")]
    assert sorted(h.scored) == [("a", "detection 0.5", 2), ("b", "detection 0.5", 1),
                                ("c", "detection 0.5", 1)]
    t = h.tally
    assert (t.calls, t.retries, t.abandoned, t.failed) == (4, 1, 1, 0)


def test_a_call_that_answers_just_before_its_timeout_is_kept():
    h = Harness({"a": [(2.0 - 1 / 64, ok(0.9))]}, concurrency=1, timeout=2.0)
    h.run(["a"])
    assert h.scored == [("a", "detection 0.9", 1)]
    assert (h.tally.calls, h.tally.abandoned) == (1, 0)


@pytest.mark.parametrize("duration, abandoned", [(1.5, 0), (3.0, 1)])
def test_the_timeout_counts_from_the_real_start_not_the_submission(duration, abandoned):
    # Submitted at 0, the call cannot start before the pool is up at 5: a timeout counted
    # from the submission would abandon even the 1.5 s call at 2.
    h = Harness({"a": [(duration, ok(0.9))]}, concurrency=1, timeout=2.0, backoff=1.0,
                ready_at=5.0)
    h.run(["a"])
    assert h.pool.submitted[0] == (0.0, "a")
    assert h.tally.abandoned == abandoned
    if abandoned:
        assert h.rng.draws == [(7.0, 1.0)]  # 5 + 2, exactly
        assert h.pool.starts("a") == [5.0, 8.0]
    else:
        assert h.pool.starts("a") == [5.0]
        assert h.scored == [("a", "detection 0.9", 1)]


def test_hung_calls_hold_their_worker_and_never_starve_the_pool():
    # One slot, two workers: two abandoned calls hold both workers until 10 and 12, so
    # nothing may be submitted before one comes back (it would wait in the pool and time
    # out without ever running).
    h = Harness({"a": [(10.0, ok(0.9))], "b": [(10.0, ok(0.9))]},
                concurrency=1, workers=2, timeout=2.0, backoff=1.0)
    assert h.run(["a", "b", "c"]) == "finished"
    assert h.pool.starts() == [(0.0, "a"), (2.0, "b"), (10.0, "a"), (10.5, "b"), (11.0, "c")]
    assert h.pool.submitted == h.pool.started  # every call ran the moment it was sent
    t = h.tally
    assert (t.calls, t.retries, t.abandoned, t.scored, t.failed) == (5, 2, 2, 3, 0)


def test_a_pool_held_by_hung_calls_for_a_minute_stops_the_run():
    h = Harness({"a": [(1e4, ok())], "b": [(1e4, ok())]},
                concurrency=1, workers=2, timeout=2.0, backoff=1.0)
    assert h.run(["a", "b", "c"]) == "failed"
    # both workers held from 4.0; looked at every 0.5 s; more than 60 s later: 64.5
    assert h.clock.now == 64.5
    assert h.scheduler.fatal == (
        "2 calls are still running long after the 2 s timeout; the detector or its "
        "service is stuck"
    )
    assert [i for _, i in h.pool.started] == ["a", "b"]  # c was never called
    assert h.failed == [] and h.scored == []  # a and b are left for the resume


# -- rate limit ---------------------------------------------------------------------------


def test_the_rate_limit_starts_with_one_token_and_spaces_calls():
    h = Harness(concurrency=8, rate_limit=4.0)
    h.run([f"i{k}" for k in range(8)])
    # no burst before the rate is earned: one call every 1/4 s from the first
    assert [t for t, _ in h.pool.started] == [k / 4 for k in range(8)]
    assert h.clock.sleeps[:7] == [0.25] * 7


@pytest.mark.parametrize("rate, concurrency, expected", [
    # the bucket holds one second's worth (2), though 4 slots are free at 10
    (2.0, 4, [0.0, 0.5, 1.0, 1.5, 10.0, 10.0, 10.5, 11.0]),
    # the bucket holds one token per slot (2), though a second's worth is 4
    (4.0, 2, [0.0, 0.25, 10.0, 10.0, 10.25, 10.5]),
])
def test_the_rate_limit_bursts_at_most_min_of_rate_and_concurrency(rate, concurrency, expected):
    # The first `concurrency` calls all end at 10, after the bucket had long to fill;
    # the calls after them take 1/16 s.
    script = {f"i{k}": [(10.0 - k / rate, ok())] for k in range(concurrency)}
    h = Harness(script, concurrency=concurrency, rate_limit=rate, flush_every=1.0)
    for k in range(concurrency, len(expected)):
        script[f"i{k}"] = [(1 / 16, ok())]
    h.run([f"i{k}" for k in range(len(expected))])
    starts = [t for t, _ in h.pool.started]
    assert starts == expected
    burst = min(rate, concurrency)
    busiest = max(sum(1 for s in starts if w <= s < w + 1) for w in starts)
    assert busiest <= rate + burst - 1  # as RunOptions documents


def test_retries_go_through_the_rate_limit():
    h = Harness({"a": [(1 / 8, retry())]}, concurrency=2, rate_limit=2.0, backoff=1 / 8)
    h.run(["a", "b"])
    # b waits its token (0.5); a's retry is due at 0.25 but waits for the next one (1.0)
    assert h.pool.starts() == [(0.0, "a"), (0.5, "b"), (1.0, "a")]


# -- budget, flushing, stopping -----------------------------------------------------------


def test_the_call_budget_stops_dispatch():
    h = Harness(concurrency=2, max_calls=3)
    assert h.run(["a", "b", "c", "d", "e"]) == "call_budget"
    assert [i for _, i in h.pool.started] == ["a", "b", "c"]
    assert h.tally.calls == 3 and len(h.scored) == 3


def test_the_call_budget_counts_retries_and_leaves_the_retried_image_unrecorded():
    h = Harness({"a": [(LATENCY, retry())]}, concurrency=1, max_calls=2)
    assert h.run(["a", "b"]) == "call_budget"
    assert h.pool.starts() == [(0.0, "a"), (0.5, "b")]
    assert [s[0] for s in h.scored] == ["b"]
    assert h.failed == []  # not a failure: the next run calls it again


def test_finished_images_are_handed_over_every_flush_every_seconds():
    h = Harness({}, concurrency=1, flush_every=1.0, flush_batch=100)
    h.run([f"i{k}" for k in range(10)])
    # calls of 0.5 s end at 0.5, 1.0, ... 5.0
    assert [(t, len(s)) for t, s, _ in h.flushes] == [(1.0, 2), (2.0, 2), (3.0, 2), (4.0, 2),
                                                      (5.0, 2)]
    assert h.ticks == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_a_full_batch_is_handed_over_at_once():
    h = Harness({}, concurrency=1, flush_every=100.0, flush_batch=3)
    h.run([f"i{k}" for k in range(10)])
    assert [(t, len(s)) for t, s, _ in h.flushes] == [(1.5, 3), (3.0, 3), (4.5, 3), (5.0, 1)]
    assert h.ticks == [1.5, 3.0, 4.5]  # the last hand-over is the final one, not a tick
    assert [s[0] for s in h.scored] == [f"i{k}" for k in range(10)]


def test_a_fatal_error_stops_dispatch_and_keeps_what_finished():
    h = Harness({"a": [(1.0, ok(0.7))], "b": [(LATENCY, ("fatal", "bad token"))]},
                concurrency=2)
    assert h.run(["a", "b", "c", "d"]) == "failed"
    assert h.scheduler.fatal == "bad token"
    assert h.pool.starts() == [(0.0, "a"), (0.0, "b")]  # c and d never called
    assert h.scored == [("a", "detection 0.7", 1)]  # a, in flight, still counted
    assert h.failed == []  # the detector, not the image, was at fault
    assert h.clock.now == 1.0


def test_unexpected_errors_in_a_row_stop_the_run_and_image_errors_break_the_row():
    err = (LATENCY, ("error", "KeyError: 'x'"))
    script = {"e1": [err], "e2": [err], "e3": [(LATENCY, ("image", "too large"))],
              "e4": [err], "e5": [err], "e6": [err]}
    h = Harness(script, concurrency=1, give_up_after=3)
    assert h.run(["e1", "e2", "e3", "e4", "e5", "e6", "e7"]) == "failed"
    assert h.scheduler.fatal == (
        "3 images in a row failed with unexpected errors, the last: KeyError: 'x'"
    )
    assert h.tally.calls == 6 and h.tally.failures_by_kind == {"error": 5, "image": 1}
    assert [f[0] for f in h.failed] == ["e1", "e2", "e3", "e4", "e5", "e6"]


def test_failures_are_recorded_as_failures_never_as_scores():
    script = {
        "bug": [(LATENCY, ("error", "ValueError: no"))],
        "bad": [(LATENCY, ("image", "not an image"))],
        "died": [(LATENCY, BrokenProcessPool("a worker died"))],
        "slow": [(LATENCY, retry())] * 2,
    }
    h = Harness(script, concurrency=1, max_attempts=2)
    assert h.run(["bug", "bad", "died", "slow", "fine"]) == "finished"
    assert h.scored == [("fine", "detection 0.5", 1)]
    assert sorted(h.failed) == [
        ("bad", "image", "not an image", 1),
        ("bug", "error", "ValueError: no", 1),
        ("died", "error", "BrokenProcessPool: a worker died", 1),
        ("slow", "retryable", "gave up after 2 attempts: throttled", 2),
    ]
    assert h.tally.failed == 4 and h.tally.scored == 1


def test_an_interrupt_hands_over_what_finished_before_it_propagates():
    h = Harness(concurrency=1)
    h.pool.interrupt_at_submit = 3
    with pytest.raises(KeyboardInterrupt):
        h.run(["a", "b", "c"])
    assert [s[0] for s in h.scored] == ["a", "b"]


def test_every_ended_call_is_reported_once():
    h = Harness({"a": [(100.0, ok())] * 2, "b": [(LATENCY, retry())]},
                concurrency=1, workers=4, timeout=2.0, max_attempts=2, backoff=1.0)
    h.run(["a", "b"])
    # a: abandoned at 2.0 and retried (not an end), abandoned for good at 5.0;
    # b: answered at 2.5 (a retry) and 5.5
    assert h.pool.starts() == [(0.0, "a"), (2.0, "b"), (3.0, "a"), (5.0, "b")]
    assert h.call_ends == [2.5, 5.0, 5.5]


# -- the real adapters --------------------------------------------------------------------


class InlineExecutor:
    """Runs each call at once, in the caller's thread."""

    def __init__(self):
        self.shut = None

    def submit(self, fn, *args):
        fut = Future()
        fut.set_running_or_notify_cancel()
        fut.set_result(fn(*args))
        return fut

    def shutdown(self, wait, cancel_futures):
        self.shut = (wait, cancel_futures)


def test_futures_pool_passes_the_stamp_only_when_the_worker_can_fill_it():
    seen = []
    pool = FuturesPool(InlineExecutor(), 3, lambda *args: seen.append(args) or len(seen))
    stamp: list = []
    a, b = pool.submit("x", stamp), pool.submit("y", stamp)
    assert seen == [("x", stamp), ("y", stamp)]
    assert pool.wait(0.01) == [a, b] and pool.wait(0.001) == []
    unstamped = FuturesPool(InlineExecutor(), 3, lambda *args: seen.append(args), stamped=False)
    unstamped.submit("z", [])
    assert seen[-1] == ("z",)
    unstamped.shutdown(wait=False)
    assert unstamped.executor.shut == (False, True)


def test_the_system_clock_is_the_monotonic_clock():
    import time

    assert SystemClock.monotonic is time.monotonic and SystemClock.sleep is time.sleep


# -- the real pools: nothing may outlive the run -----------------------------------------


def test_the_daemon_thread_executor_runs_calls_in_daemon_threads():
    import threading

    from calibrate.scheduler import DaemonThreadExecutor

    ex = DaemonThreadExecutor(2, thread_name_prefix="t")
    where = [ex.submit(lambda: threading.current_thread()) for _ in range(5)]
    threads = {f.result(timeout=5) for f in where}
    assert 1 <= len(threads) <= 2 and all(t.daemon and t.name.startswith("t_") for t in threads)
    failed = ex.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failed.result(timeout=5)
    assert ex.submit(lambda a, b=0: a + b, 1, b=2).result(timeout=5) == 3
    ex.shutdown(wait=True)
    assert not any(t.is_alive() for t in threads)
    with pytest.raises(RuntimeError):
        ex.submit(print)


def test_the_daemon_thread_executor_abandons_a_hung_call_without_waiting():
    import threading
    import time

    from calibrate.scheduler import DaemonThreadExecutor

    ex = DaemonThreadExecutor(1)
    release = threading.Event()
    hung = ex.submit(release.wait, 60)
    queued = ex.submit(lambda: "never")
    t0 = time.monotonic()
    ex.shutdown(wait=False, cancel_futures=True)
    assert time.monotonic() - t0 < 1  # nothing joined the hung thread
    assert queued.cancelled() and hung.running()
    release.set()
    assert hung.result(timeout=5) is True


def _sleep_in_worker(seconds: float) -> int:
    import os
    import time

    time.sleep(seconds)
    return os.getpid()


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not)."""
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:  # no /proc: it answered signal 0, so count it as running
        return True


def test_abandoning_a_process_pool_kills_its_workers():
    """A call in another process cannot be stopped, and the interpreter would wait for
    it at exit: shutting down without waiting kills the workers."""
    import time
    from concurrent.futures import ProcessPoolExecutor

    ex = ProcessPoolExecutor(2)
    pool = FuturesPool(ex, 2, _sleep_in_worker, stamped=False)
    hung = [pool.submit(60, []) for _ in range(2)]
    deadline = time.monotonic() + 30
    while not all(f.running() for f in hung) and time.monotonic() < deadline:
        time.sleep(0.01)
    pids = list(ex._processes)
    assert len(pids) == 2
    t0 = time.monotonic()
    pool.shutdown(wait=False)
    # By PID: the pool's own thread reaps the workers, so their Process objects can
    # briefly disagree when asked from this thread.
    while any(_running(pid) for pid in pids) and time.monotonic() - t0 < 5:
        time.sleep(0.01)
    assert not any(_running(pid) for pid in pids)
    for f in hung:  # the abandoned calls end as a broken pool, never as results
        with pytest.raises(BrokenProcessPool):
            f.result(timeout=10)
