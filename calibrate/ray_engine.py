"""Score a labeled image set on Ray Data: the runner's resume, record and finish around
a Ray Data pipeline instead of a local process pool.

One machine's process pool (:mod:`calibrate.runner`) is the default engine. When a local
model has millions of images to score, :func:`score_dataset` runs the same detector in
Ray actors, on this machine or on a Ray cluster: the images left to score become a Ray
Dataset (``ray.data.from_items``), ``map_batches`` hands batches of them to a pool of
actors that each build the detector once (it travels pickled, as it does to a process
pool's workers), and the driver iterates the output batches (``iter_batches``) and
commits each one through the store as it arrives.

Everything around the calls is the runner's own, so the guarantees are the runner's:
the run is opened, resumed, reused and closed by the same functions
(:func:`calibrate.runner.score_dataset` documents them), every answer is recorded
through the same writer in the same transaction that marks its image done, and a
failed call is recorded as a failure with its kind, message and attempts, never as a
score. Kill the driver at any moment and run the same call again: it skips everything
committed and scores the rest, and the store's record is per (run, image), so no image
is ever recorded twice.

Retries follow the local scheduler's rules: a retryable failure is tried again after a
full-jitter backoff (at least what the detector asked for), up to ``max_attempts``
calls per image, and ``max_calls`` caps the calls of the whole run, retries included.
Because a Ray Dataset is fixed once it runs, the images to retry are scored in a
further pass once the current one is through. An unexpected error counts towards
``give_up_after`` in the order answers arrive; a fatal one stops the run at once, the
images answered before it kept.

Only local detectors (``kind = "cpu"``) run here: a network detector's rate limit and
timeout are enforced by the local scheduler, which sees every call, and Ray actors
spread over a cluster would not share them. ``rate_limit`` and ``timeout`` are refused
for the same reason.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import random
import signal
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from calibrate.detectors.base import Detector
from calibrate.errors import InputError
from calibrate.runner import (
    RunOptions,
    RunSummary,
    _attempt,
    _close_without_calls,
    _cpu_count,
    _closing,
    _note_stored_successes,
    _open_run,
    _raise_if_stopped,
    _ProgressBar,
    _Start,
    _Writer,
    stop_on_sigterm,
)
from calibrate.scheduler import Tally

__all__ = ["INSTALL_HINT", "RayOptions", "connect", "require_ray", "score_dataset"]

#: What to tell someone who asked for the Ray engine without Ray installed.
INSTALL_HINT = "--engine ray needs Ray Data: pip install 'calibrate[ray]'"


@dataclass(frozen=True)
class RayOptions:
    """Where and how a run uses Ray.

    Parameters
    ----------
    address : str, optional
        A Ray cluster to connect to (``HEAD:6379``, or ``auto`` on a node of it; see
        docs/ray.md). Default: the
        ``RAY_ADDRESS`` environment variable, else a Ray instance this call starts on
        this machine and shuts down again when it returns. When Ray is already
        initialised in this process, that instance is used and left running.
    batch_size : int, default 16
        Images per Ray Data batch: one actor call, and one commit in the store once
        it is back. Smaller batches lose less when the driver is killed; larger ones
        cost less overhead per image.
    actors : int, optional
        Actors, each holding one detector. Default: the run's ``concurrency``, else
        one per CPU of the cluster.
    cpus_per_actor : float, default 1.0
        CPUs Ray reserves for each actor.
    runtime_env : dict, optional
        Passed to ``ray.init`` (e.g. ``{"pip": ["calibrate[onnx]"]}``) when this call
        starts or connects to Ray.
    window : int, default 50000
        Most images in one Ray Dataset: a larger set is scored in several in turn, so
        the driver never holds every image pickled at once (each Dataset starts its
        actors again: seconds, against minutes of scoring).
    """

    address: str | None = None
    batch_size: int = 16
    actors: int | None = None
    cpus_per_actor: float = 1.0
    runtime_env: dict[str, Any] | None = None
    window: int = 50_000

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {self.batch_size}.")
        if self.actors is not None and self.actors < 1:
            raise InputError(f"actors must be at least 1, got {self.actors}.")
        if self.window < 1:
            raise InputError(f"window must be at least 1, got {self.window}.")
        if not self.cpus_per_actor > 0:
            raise InputError(f"cpus_per_actor must be positive, got {self.cpus_per_actor}.")


def require_ray():
    """The ``ray`` module, with Ray Data importable.

    Raises
    ------
    InputError
        Saying how to install it (``pip install 'calibrate[ray]'``).
    """
    try:
        import ray
        import ray.data  # noqa: F401 - the extra that matters; `ray` alone lacks it
    except ImportError:
        raise InputError(f"{INSTALL_HINT} (Ray is not installed here).") from None
    return ray


@contextlib.contextmanager
def connect(options: RayOptions | None = None, *, num_cpus: int | None = None) -> Iterator[Any]:
    """Use the Ray instance of this process, a cluster, or a local instance started here.

    Parameters
    ----------
    options : RayOptions, optional
    num_cpus : int, optional
        CPUs of a local instance started here. Default: this machine's.

    Yields
    ------
    module
        The ``ray`` module, initialised.

    Raises
    ------
    InputError
        Ray is not installed, or cannot be started or reached.
    """
    opts = options or RayOptions()
    ray = require_ray()
    if ray.is_initialized():
        yield ray
        return
    address = opts.address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = dict(
        log_to_driver=False, logging_level=logging.ERROR, runtime_env=opts.runtime_env
    )
    if address is not None:
        _probe(address)
    else:
        # A private instance: loopback only, no dashboard, a bounded object store.
        kwargs.update(
            num_cpus=num_cpus or _cpu_count(), include_dashboard=False,
            _node_ip_address="127.0.0.1", object_store_memory=1 << 30,
        )
    # ray.init replaces the SIGTERM handler with sys.exit; the runner's handler (which
    # commits what finished and marks the run interrupted) must stay in charge.
    previous = signal.getsignal(signal.SIGTERM)
    try:
        ray.init(address=address, **kwargs)
    except Exception as exc:  # noqa: BLE001 - Ray raises many kinds; one line for the user
        where = f"the Ray cluster at {address}" if address else "a local Ray instance"
        raise InputError(f"cannot start or reach {where}: {_first_line(exc)}") from None
    finally:
        if previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)
    _quiet(ray)
    try:
        yield ray
    finally:
        ray.shutdown()


def _probe(address: str, timeout: float = 5.0) -> None:
    """Fail at once when a ``HOST:PORT`` address does not answer: ``ray.init`` would
    retry for minutes, printing a warning every few seconds."""
    host, sep, port = address.rpartition(":")
    if "://" in address or not sep or not port.isdigit():
        return  # "auto", or a ray:// client address: Ray's own checks are quick there
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise InputError(
            f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); is its head "
            "node running (ray start --head) and is the address HEAD:6379?"
        ) from None


def _quiet(ray) -> None:
    """The runner draws its own progress; Ray Data's bars and banners would interleave.
    Its error reports (a stack trace per failure) stay in Ray's log files: the run
    stops with the reason in one line."""
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.CRITICAL)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


# -- the actor ------------------------------------------------------------------------


class _ScoreActor:
    """A Ray Data actor: builds the detector once, then scores batches of images.

    Each output row is one call's outcome, as the local pool's workers report it
    (:func:`calibrate.runner._attempt`): ``outcome`` and the pickled ``payload``. A
    detector that cannot be built on the worker (a model file missing there) answers
    every image with ``"fatal"``, so the run stops with the reason in one line rather
    than with Ray's report of a failed actor constructor.
    """

    def __init__(self, detector_blob: bytes):
        # Ctrl-C is the driver's business, as in the process pool: a terminal sends it to
        # the whole process group, and an actor dying of it would fail its batch.
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        self.detector: Detector | None = None
        self.broken: str | None = None
        try:
            self.detector = pickle.loads(detector_blob)
        except Exception as exc:  # noqa: BLE001 - reported per image, as fatal
            self.broken = f"cannot build the detector on a Ray worker: {_first_line(exc)}"

    def __call__(self, batch):
        import pyarrow as pa

        outcomes, payloads = [], []
        for blob in batch.column("image").to_pylist():
            if self.detector is None:
                outcome, payload = "fatal", self.broken
            else:
                outcome, payload = _attempt(self.detector, pickle.loads(blob))
            outcomes.append(outcome)
            payloads.append(pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))
        return pa.table({
            "i": batch.column("i"),
            "outcome": pa.array(outcomes, pa.string()),
            "payload": pa.array(payloads, pa.binary()),
        })


# -- the driver -----------------------------------------------------------------------


def score_dataset(dataset, detector: Detector, store, options: RunOptions | None = None,
                  ray_options: RayOptions | None = None) -> RunSummary:
    """Score every image of a labeled set with a local detector on Ray Data, into the store.

    A drop-in for :func:`calibrate.runner.score_dataset` (same run, same store records,
    same resume) whose calls run in Ray actors.

    Parameters
    ----------
    dataset : calibrate.manifest.LabeledSet
        On a cluster, every worker must be able to read the images' paths (a shared
        file system or object-store URIs the detector reads).
    detector : Detector
        A local detector (``kind = "cpu"``), picklable as for a process pool.
    store : calibrate.store.ScoreStore
        Written by this process only: actors return answers, the driver records them.
    options : RunOptions, optional
        ``concurrency`` is the number of actors (unless ``ray_options.actors`` says);
        ``max_attempts``, ``backoff``, ``backoff_max``, ``max_calls``, ``force``,
        ``progress`` and ``give_up_after`` mean what they mean locally.
    ray_options : RayOptions, optional

    Returns
    -------
    RunSummary

    Raises
    ------
    InputError
        Ray is not installed or cannot be reached; the detector is not a local one, or
        cannot be pickled; ``rate_limit`` or ``timeout`` was set.
    FatalDetectorError
        The detector cannot work (also on a worker), too many images in a row failed
        unexpectedly, or Ray Data stopped. Everything finished is stored; re-running
        resumes.
    KeyboardInterrupt
        After recording everything finished so far and marking the run interrupted
        (:class:`calibrate.runner.Terminated` for SIGTERM).
    """
    opts, ropts = options or RunOptions(), ray_options or RayOptions()
    _check_runnable(detector, opts)
    _pickled(detector)  # an unpicklable detector is refused before the run is opened
    # Before the run is opened: a missing extra or an unreachable cluster changes
    # nothing in the store.
    ray = require_ray()
    address = ropts.address or os.environ.get("RAY_ADDRESS")
    if address and not ray.is_initialized():
        _probe(address)
    t0 = time.monotonic()
    with _without_rays_sigterm_handler(), stop_on_sigterm():
        start = _open_run(dataset, detector, store, opts)
        if not start.todo:
            return _close_without_calls(start, store, t0)
        _note_stored_successes(detector, store, start)  # before the detector is pickled
        fatal = _run(start, detector, store, opts, ropts, t0)
    _raise_if_stopped(detector, start, fatal)
    return start.summary


@contextlib.contextmanager
def _without_rays_sigterm_handler() -> Iterator[None]:
    """Let :func:`~calibrate.runner.stop_on_sigterm` handle SIGTERM during the run even
    when Ray was initialised before it.

    ``ray.init`` installs a handler that calls ``sys.exit``: a run stopped by SIGTERM
    would be marked failed instead of interrupted. Ray's handler is set aside for the
    run and put back after it; a handler of the application's own is left alone.
    """
    on_main = threading.current_thread() is threading.main_thread()
    handler = signal.getsignal(signal.SIGTERM) if on_main else None
    rays = callable(handler) and getattr(handler, "__module__", "").startswith("ray.")
    if rays:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        if rays:
            signal.signal(signal.SIGTERM, handler)


def _check_runnable(detector: Detector, opts: RunOptions) -> None:
    kind = getattr(detector, "kind", "io")
    if kind != "cpu":
        raise InputError(
            f"--engine ray runs local detectors (kind 'cpu'); {detector.name} calls a "
            "service (kind 'io'): use --engine local, whose rate limit and timeouts "
            "cover every call."
        )
    for name in ("rate_limit", "timeout"):
        if getattr(opts, name) is not None:
            flag = name.replace("_", "-")
            raise InputError(f"--{flag} is not supported with --engine ray; use --engine local.")


def _pickled(detector: Detector) -> bytes:
    try:
        return pickle.dumps(detector, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - any pickling failure means the same
        raise InputError(
            f"{detector.name} cannot be sent to Ray workers: it cannot be pickled "
            f"({_first_line(exc)})."
        ) from None


def _run(start: _Start, detector: Detector, store, opts: RunOptions, ropts: RayOptions,
         t0: float) -> str | None:
    """Start Ray, score every image left in passes, then close the run.

    Returns why the run had to stop, or None.
    """
    blob = _pickled(detector)
    writer = _Writer(store, start.run_id)
    passes = _Passes(opts, ropts, blob,
                     claim=lambda ids: store.claim_images(start.run_id, ids))
    bar = _ProgressBar(opts.progress, f"{detector.name} {detector.model_version}", start, t0)
    with _closing(start, detector, store, passes, writer, passes.tally, t0) as run, \
            connect(ropts, num_cpus=_local_cpus(opts, ropts)) as ray, bar:
        run.status = passes.run(ray, start.todo, writer, bar)
    return passes.fatal


def _local_cpus(opts: RunOptions, ropts: RayOptions) -> int:
    """CPUs of a local instance: the machine's, or more if more actors were asked for
    (Ray places only as many actors as it has CPUs for; the local pool, too, starts
    every worker asked for)."""
    actors = ropts.actors or opts.concurrency or 0
    return max(_cpu_count(), int(actors * ropts.cpus_per_actor + 0.999))


@dataclass
class _Pending:
    """An image still to score, with the calls already made on it."""

    image: Any
    attempts: int = 0
    ready_at: float = 0.0


class _Passes:
    """Scores images in Ray Data passes, settling each answer by the local scheduler's
    rules (:class:`calibrate.scheduler.Scheduler`): one pass over the images left (at
    most ``window`` of them), then one over the images to retry and the next ones, until
    none is left, the budget is spent or the run has to stop.

    It stands in for the runner's pool, so the runner's ``_closing`` closes it.
    """

    def __init__(self, opts: RunOptions, ropts: RayOptions, blob: bytes,
                 claim: Callable[[list[str]], set[str]] | None = None):
        self.opts, self.ropts, self.blob = opts, ropts, blob
        # Claims images before a pass sends them: another process sharing the run (a
        # PostgreSQL store) keeps the images it claimed (``store.claim_images``).
        self.claim = claim or set
        self.tally = Tally()
        self.fatal: str | None = None
        self.rng = random.Random()
        self._retry: list[_Pending] = []
        self._unexpected_in_a_row = 0
        self._iterator = None

    def run(self, ray, todo: list, writer: _Writer, bar: _ProgressBar) -> str:
        """Score ``todo``; everything answered is handed to ``writer`` as it arrives.

        Returns
        -------
        {"finished", "call_budget", "failed"}
        """
        actors = self.ropts.actors or self.opts.concurrency or _cluster_actors(ray, self.ropts)
        pending = [_Pending(image) for image in todo]
        while pending and self.fatal is None:
            room = min(len(pending), self.ropts.window)
            if self.opts.max_calls is not None:
                room = min(room, self.opts.max_calls - self.tally.calls)
            if room <= 0:
                break
            pending, room = self._claimed(pending, room)
            if room == 0:
                continue  # another process holds this whole window: claim the next
            now, ready = time.monotonic(), max(p.ready_at for p in pending[:room])
            if ready > now:
                time.sleep(ready - now)  # every image of the pass waits its backoff out
            self._pass(ray, pending[:room], actors, writer, bar)
            pending, self._retry = self._retry + pending[room:], []
        if self.fatal is not None:
            return "failed"
        return "call_budget" if pending else "finished"

    def _claimed(self, pending: list[_Pending], room: int) -> tuple[list[_Pending], int]:
        """``pending`` without the images of the next pass (its first ``room``) that
        another process claimed, and how many of the next pass are left.

        Images sent before (retries) are this process's already; the others are
        claimed now, a pass at a time, so a killed process's images are taken over.
        """
        fresh = [p.image.image_id for p in pending[:room] if p.attempts == 0]
        mine = self.claim(fresh) if fresh else set()
        kept = [p for p in pending[:room] if p.attempts or p.image.image_id in mine]
        return kept + pending[room:], len(kept)

    def _pass(self, ray, items: list[_Pending], actors: int, writer: _Writer,
              bar: _ProgressBar) -> None:
        rows = [{"i": k, "image": pickle.dumps(p.image, protocol=pickle.HIGHEST_PROTOCOL)}
                for k, p in enumerate(items)]
        answers = _map_batches(ray, ray.data.from_items(rows), dict(
            fn_constructor_args=(self.blob,), batch_size=self.ropts.batch_size,
            batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=self.ropts.cpus_per_actor,
        ))
        self._iterator = iter(answers.iter_batches(batch_size=None, batch_format="pyarrow"))
        try:
            while self.fatal is None:
                try:
                    batch = next(self._iterator)
                except StopIteration:
                    break
                except Exception as exc:  # noqa: BLE001 - Ray's errors vary; the run stops
                    self.fatal = f"Ray Data stopped: {_first_line(exc)}"
                    break
                self._settle_batch(batch, items, writer, bar)
        finally:
            self.shutdown(wait=False)

    def _settle_batch(self, batch, items: list[_Pending], writer: _Writer,
                      bar: _ProgressBar) -> None:
        scored: list = []
        failed: list = []
        columns = (batch.column(c).to_pylist() for c in ("i", "outcome", "payload"))
        for k, outcome, payload in zip(*columns):
            if self.fatal is not None:
                break  # answers after a fatal one are not recorded: a resume retries them
            item = items[k]
            item.attempts += 1
            self.tally.calls += 1
            if self._settle(item, outcome, pickle.loads(payload), scored, failed):
                bar.advance()
        if scored or failed:
            writer.put(scored, failed)  # committed as it arrives
        bar.update(self.tally)

    def _settle(self, item: _Pending, outcome: str, payload: Any, scored: list,
                failed: list) -> bool:
        """Sort one answer; True when its image is done (scored or failed)."""
        image_id = item.image.image_id
        if outcome == "ok":
            scored.append((image_id, payload, item.attempts))
            self.tally.scored += 1
            self._unexpected_in_a_row = 0
        elif outcome == "retry":
            return self._retry_or_fail(item, *payload, failed)
        elif outcome == "fatal":
            self.fatal = payload
            return False
        elif outcome == "image":
            self._fail(failed, image_id, "image", payload, item.attempts)
            self._unexpected_in_a_row = 0
        else:
            self._fail(failed, image_id, "error", payload, item.attempts)
            self._unexpected_in_a_row += 1
            if self._unexpected_in_a_row >= self.opts.give_up_after:
                self.fatal = (f"{self._unexpected_in_a_row} images in a row failed with "
                              f"unexpected errors, the last: {payload}")
        return True

    def _fail(self, failed: list, image_id: str, kind: str, message: str, attempts: int) -> None:
        failed.append((image_id, kind, message, attempts))
        self.tally.failed += 1
        self.tally.failures_by_kind[kind] = self.tally.failures_by_kind.get(kind, 0) + 1

    def _retry_or_fail(self, item: _Pending, message: str, retry_after: float | None,
                       failed: list) -> bool:
        """The scheduler's rule: try again after a full-jitter backoff while attempts
        remain, else record the image as a ``retryable`` failure (a resume retries it)."""
        opts = self.opts
        if item.attempts >= opts.max_attempts:
            self._fail(failed, item.image.image_id, "retryable",
                       f"gave up after {item.attempts} attempts: {message}", item.attempts)
            return True
        cap = min(opts.backoff_max, opts.backoff * 2 ** (item.attempts - 1))
        item.ready_at = time.monotonic() + max(self.rng.uniform(0, cap), retry_after or 0.0)
        self._retry.append(item)
        self.tally.retries += 1
        return False

    def shutdown(self, wait: bool) -> None:
        """Stop the pass in progress (its actors end with it)."""
        iterator, self._iterator = self._iterator, None
        close = getattr(iterator, "close", None)
        if callable(close):
            close()


def _map_batches(ray, dataset, kwargs: dict[str, Any]):
    """``dataset.map_batches(_ScoreActor, **kwargs)`` with actors that are not restarted.

    Ray Data restarts a dead actor and retries its batch without end by default, so a
    model runtime that crashes on one image would loop for ever; with no restart the run
    stops with the reason. ``max_restarts=0`` is the switch Ray Data's own source names;
    Ray 2.60 warns that such extra arguments go in 2.64, so without them the defaults
    are taken rather than refusing to run.
    """
    from ray.util.annotations import RayDeprecationWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RayDeprecationWarning)
            return dataset.map_batches(_ScoreActor, max_restarts=0, **kwargs)
    except TypeError:  # a Ray that no longer takes extra actor options
        return dataset.map_batches(_ScoreActor, **kwargs)


def _cluster_actors(ray, ropts: RayOptions) -> int:
    """One actor per CPU of the cluster (at least one)."""
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    return max(1, int(cpus // ropts.cpus_per_actor))
