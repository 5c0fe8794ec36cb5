"""A Viam vision service as a detector: ``get_detections`` or ``get_classifications``.

:class:`ViamDetector` sends each labeled image's bytes (JPEG or PNG, as stored) to a
vision service on a Viam machine and reports what the service returns, in its own 0-1
scale:

* ``mode="detections"``: one :class:`~calibrate.detectors.base.Result` per detection,
  with its pixel box; the store takes the highest score per label and image as the
  image-level score.
* ``mode="classifications"``: the top ``top_n`` classifications; a label the service
  did not return for an image has no result there (it ranks below every score).

Connecting
----------
The detector connects lazily, once, on the first image, with the API key in the
environment (``VIAM_API_KEY``, ``VIAM_API_KEY_ID``) and the machine address from the
``address`` option or ``VIAM_MACHINE_ADDRESS``, over TLS unless ``insecure`` (a machine
on this computer only). The key is read from the environment when connecting and is
never kept on the detector, returned by :meth:`ViamDetector.settings` or written to the
store or the dialer log. Dialing, its log and the one-line reason a dial failed are in
:mod:`calibrate.detectors.viam_dial`. The SDK is asyncio while the runner calls
:meth:`ViamDetector.detect` from worker threads, so the detector owns one event loop in
a background thread, and every call is a coroutine submitted to it; all calls share one
connection. :meth:`ViamDetector.close` (also run when the detector is garbage-collected
or at interpreter exit) closes the connection and stops the thread.

Requests
--------
A call of :meth:`ViamDetector.detect` is one request, except in classifications mode
without ``top_n``: the service cannot say how many classes it has except by refusing a
larger top-N, so the first call asks for 1000, learns the count from the refusal and
asks again, while the other calls wait for that count (one extra request per detector,
not one per worker). :attr:`ViamDetector.requests` counts requests, and each image's
``raw["requests"]`` says how many it took.

Censored scores
---------------
A service configured with a non-zero ``default_minimum_confidence`` or with
``label_confidences`` drops every result below its cutoff before answering, so the
scores below the cutoff, and with them every error rate for thresholds below it, are
unknowable. Calibrate against the same model behind a service with both unset (or 0).
The detector watches for the symptom (:func:`censoring_floor`: no score below a round
number across many results), exposes it as :meth:`ViamDetector.observed_floor` and
warns through :meth:`ViamDetector.warn_if_censored`; a cutoff the user states with
``service_min_confidence`` / ``service_label_confidences`` becomes the run's
``detection_floor``.

See ``docs/viam.md`` for the whole flow, including writing the chosen thresholds back
into the service's ``label_confidences``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import importlib.util
import math
import os
import re
import threading
import warnings
import weakref
from collections.abc import Callable, Iterable, Mapping
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

from calibrate.detectors.base import (
    Box,
    Detection,
    DetectorError,
    FatalDetectorError,
    ImageError,
    Result,
    RetryableError,
)
from calibrate.detectors.viam_dial import (
    ENV_ADDRESS,
    ENV_API_KEY,
    ENV_API_KEY_ID,
    DialFailed,
    InsecureConnectionWarning,
    ViamCredentials,
    _check_environment,
    _ConnectErrors,
    _describe,
    check_insecure,
    connect_to_machine,
)
from calibrate.errors import CalibrateWarning, InputError

if TYPE_CHECKING:  # pragma: no cover
    from calibrate.manifest import LabeledImage

__all__ = [
    "CENSORING_MIN_FLOOR",
    "CENSORING_MIN_RESULTS",
    "CENSORING_STEP",
    "CENSORING_TOLERANCE",
    "CensoredScoresWarning",
    "DialFailed",
    "ENV_ADDRESS",
    "ENV_API_KEY",
    "ENV_API_KEY_ID",
    "InsecureConnectionWarning",
    "MODES",
    "UNSTATED_VERSION",
    "UnstatedModelVersionWarning",
    "ViamCredentials",
    "ViamDetector",
    "censoring_floor",
    "connect_to_machine",
]

#: What the detector asks the service for.
MODES = ("detections", "classifications")

#: The model version recorded when the user states none.
UNSTATED_VERSION = "unstated"

#: Censoring rule (see :func:`censoring_floor`): results needed before judging.
CENSORING_MIN_RESULTS = 50
#: Lowest minimum score that counts as a sign of a cutoff.
CENSORING_MIN_FLOOR = 0.05
#: Cutoffs people configure are multiples of this.
CENSORING_STEP = 0.05
#: How far above such a multiple the lowest score may lie.
CENSORING_TOLERANCE = 0.01

# rdk answers a request for more classes than the model has with this (status UNKNOWN).
_TOP_N_TOO_LARGE = re.compile(r"cannot produce top (\d+) results from list of length (\d+)")
# rdk reports undecodable uploads as plain errors (status UNKNOWN), not INVALID_ARGUMENT.
_DECODE_TROUBLE = re.compile(
    r"decod|unknown format|not a jpeg|invalid jpeg|png: |image: ", re.IGNORECASE
)
_NOT_IMPLEMENTED = re.compile(r"does not implement a (detector|classifier)", re.IGNORECASE)
# Asking for "every class" when top_n is not given; rdk's error then tells the real count.
_ALL_CLASSES = 1000
_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: Seconds the connect guard waits beyond connect_timeout, for the dialer to give up
#: by itself first.
_CONNECT_SLACK = 5.0


class CensoredScoresWarning(CalibrateWarning):
    """The service hides scores below a cutoff, so curves below it are unknowable."""


class UnstatedModelVersionWarning(CalibrateWarning):
    """No model version was stated, so scores of different versions could be mixed."""


# ---------------------------------------------------------------------------------------
# Censoring
# ---------------------------------------------------------------------------------------


def censoring_floor(
    scores: Iterable[float],
    *,
    min_results: int = CENSORING_MIN_RESULTS,
    min_floor: float = CENSORING_MIN_FLOOR,
    step: float = CENSORING_STEP,
    tolerance: float = CENSORING_TOLERANCE,
) -> float | None:
    """The service-side cutoff that these scores look censored at, if any.

    An unfiltered detector reports weak candidates too, so across many results some
    scores come close to 0. A service with ``default_minimum_confidence`` or
    ``label_confidences`` set drops everything below its cutoff, and since cutoffs are
    chosen by people, they are round numbers: the lowest reported score then sits at,
    or just above, a round number. The rule is:

    1. at least ``min_results`` finite scores (``-inf``, "no result", is ignored);
    2. not all equal (a constant score, like Viam's ``color_detector`` 1.0, carries no
       ranking information and is reported as such elsewhere, not as censoring);
    3. the lowest score ``m`` is at least ``min_floor``;
    4. ``m`` lies within ``tolerance`` above ``r``, the largest multiple of ``step``
       not above ``m``.

    Then ``r`` is returned as the probable cutoff: scores below it were hidden.

    Parameters
    ----------
    scores : iterable of float
        Scores as reported, e.g. every result of a run, or one label's image-level
        scores from :meth:`calibrate.store.ScoreStore.scores`.
    min_results : int, default 50
    min_floor : float, default 0.05
    step : float, default 0.05
    tolerance : float, default 0.01

    Returns
    -------
    float or None
        The probable cutoff, or None when the scores show no sign of one.

    Notes
    -----
    The rule is a heuristic with known blind spots. A cutoff that is not a round number
    (0.53) is missed, and so is one in a sparse part of the distribution, where the
    lowest surviving score lies more than ``tolerance`` above it. Conversely, a model
    whose scores never go low (top-1 classifications over few classes are always at
    least 1/classes) may be flagged by chance when its minimum happens to fall just
    above a multiple of 0.05. So a flag means "check the service's configuration",
    and the reliable guard is calibrating against a service with both filters unset.

    Examples
    --------
    >>> censoring_floor([0.5 + i / 200 for i in range(60)])
    0.5
    >>> censoring_floor([i / 60 for i in range(60)]) is None
    True
    """
    n = 0
    lo = math.inf
    hi = -math.inf
    for s in scores:
        s = float(s)
        if not math.isfinite(s):
            continue
        n += 1
        lo = min(lo, s)
        hi = max(hi, s)
    return _floor_rule(n, lo, hi, min_results=min_results, min_floor=min_floor, step=step,
                       tolerance=tolerance)


def _floor_rule(
    n: int,
    lo: float,
    hi: float,
    *,
    min_results: int = CENSORING_MIN_RESULTS,
    min_floor: float = CENSORING_MIN_FLOOR,
    step: float = CENSORING_STEP,
    tolerance: float = CENSORING_TOLERANCE,
) -> float | None:
    # The rule needs only the count, minimum and maximum, so a run can apply it to
    # millions of results without keeping them.
    if n < min_results or not hi > lo or lo < min_floor:
        return None
    # The small epsilon keeps 0.3 (stored as 0.29999...) on its own grid point.
    k = math.floor(lo / step + 1e-9)
    cutoff = round(k * step, 10)
    if k >= 1 and lo - cutoff <= tolerance + 1e-12:
        return cutoff
    return None


class _Tally:
    """Count, minimum and maximum of every reported score, overall and per label."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.total = [0, math.inf, -math.inf]
        self.by_label: dict[str, list] = {}

    def add(self, results: Iterable[Result]) -> None:
        with self._lock:
            for r in results:
                for acc in (self.total, self.by_label.setdefault(r.label, [0, math.inf, -math.inf])):
                    acc[0] += 1
                    acc[1] = min(acc[1], r.score)
                    acc[2] = max(acc[2], r.score)

    def snapshot(self) -> tuple[tuple, dict[str, tuple]]:
        with self._lock:
            return tuple(self.total), {k: tuple(v) for k, v in self.by_label.items()}


# ---------------------------------------------------------------------------------------
# Connecting
# ---------------------------------------------------------------------------------------


class _Session:
    """One event loop in a daemon thread, and the one connection it owns.

    It holds no reference to its detector, so that ``weakref.finalize`` can close it
    when the detector is collected or the interpreter exits.
    """

    def __init__(
        self,
        factory: Callable[..., Any],
        credentials: Callable[[], ViamCredentials],
        service: str,
        connect_timeout: float,
        connect_error: Callable[[BaseException], FatalDetectorError],
    ) -> None:
        self.factory = factory
        self.credentials = credentials
        self.service = service
        self.connect_timeout = connect_timeout
        self.connect_error = connect_error
        self.client: Any = None
        self.closed = False
        # Held by the one call that learns how many classes the service has.
        self.class_count_lock = asyncio.Lock()
        self._stack: AsyncExitStack | None = None
        self._connecting: asyncio.Future | None = None
        self._calls: set[asyncio.Task] = set()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self._run, name=f"calibrate-viam-{service}", daemon=True
        )
        self.thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def submit(self, coro) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(self._tracked(coro), self.loop)

    async def _tracked(self, coro):
        task = asyncio.current_task()
        self._calls.add(task)
        try:
            return await coro
        finally:
            self._calls.discard(task)

    async def get_client(self) -> Any:
        if self.client is not None:
            return self.client
        # Single flight: every call waiting for the first connection shares one attempt.
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._connect())
        attempt = self._connecting
        try:
            return await asyncio.shield(attempt)
        except FatalDetectorError as exc:
            if self._connecting is attempt:
                self._connecting = None
            raise FatalDetectorError(str(exc)) from None

    async def _connect(self) -> Any:
        stack = AsyncExitStack()
        try:
            made = self.factory(self.credentials(), self.service)
            if hasattr(made, "__aenter__"):
                client = await asyncio.wait_for(
                    stack.enter_async_context(made), self.connect_timeout
                )
            else:
                client = await asyncio.wait_for(made, self.connect_timeout)
        except BaseException as exc:  # noqa: BLE001 - every connect failure stops the run
            try:
                await stack.aclose()
            except Exception:  # noqa: BLE001 - the connect error is the one to report
                pass
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise self.connect_error(exc) from None
        self._stack, self.client = stack, client
        return client

    async def _aclose(self) -> None:
        current = asyncio.current_task()
        calls = [t for t in self._calls if t is not current]
        for task in calls:
            task.cancel()
        if calls:
            await asyncio.gather(*calls, return_exceptions=True)
        stack, self._stack, self.client = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    def close(self, timeout: float = 10.0) -> None:
        if self.closed:
            return
        self.closed = True
        if not self.thread.is_alive():
            return
        if threading.current_thread() is self.thread:
            # Collected on the loop's own thread: waiting here would deadlock.
            async def close_then_stop() -> None:
                try:
                    await self._aclose()
                finally:
                    self.loop.stop()

            self.loop.create_task(close_then_stop())
            return
        try:
            asyncio.run_coroutine_threadsafe(self._aclose(), self.loop).result(timeout)
        except Exception:  # noqa: BLE001 - closing must not fail; the process may be exiting
            pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout)
        if not self.thread.is_alive():
            self.loop.close()


# ---------------------------------------------------------------------------------------
# The detector
# ---------------------------------------------------------------------------------------


class ViamDetector:
    """A vision service on a Viam machine, driven image by image.

    Parameters
    ----------
    service : str
        The vision service's name in the machine's configuration.
    mode : {"detections", "classifications"}, default "detections"
        Call ``get_detections`` (each detection is a result with its pixel box) or
        ``get_classifications`` (the top ``top_n`` labels).
    model_version : str, optional
        What model the service runs, e.g. the ML model package and version
        ``"my-org:defects@2024-06-01"``. Viam does not report it, so it is recorded as
        stated; omitted, it is ``"unstated"`` and a warning says why that is risky.
    top_n : int, optional
        Classifications per image (``mode="classifications"`` only). Default: every
        class the model has. A label outside the top ``top_n`` of an image has no
        result there, which ranks below every score, so a small ``top_n`` censors
        low scores much as a confidence cutoff does.
    labels : list of str or str, optional
        Every label the model can emit (a list, or a comma-separated string), when
        known; recorded with the run.
    address : str, optional
        The machine's address. Default: ``VIAM_MACHINE_ADDRESS``.
    insecure : bool or "force", default False
        Connect without TLS, to a machine that serves without it (a local viam-server
        with TLS turned off). ``True`` is refused unless the address is this computer
        (``localhost``, ``127.0.0.1``, ``::1``), since the API key and the images would
        cross the network unencrypted; ``"force"`` allows any address, with an
        :class:`InsecureConnectionWarning`.
    dial_log : path, optional
        Where the dialer's output (which viam-sdk prints while connecting) is
        appended, with the API key redacted. Default: ``calibrate-viam-dial-<user>.log``
        in the temporary folder (:func:`calibrate.detectors.viam_dial.default_dial_log`).
    service_min_confidence : float, optional
        The service's ``default_minimum_confidence``, if it has one. A value above 0
        is recorded as the run's ``detection_floor``: scores below it are censored.
    service_label_confidences : dict, optional
        The service's ``label_confidences``, if it has them. When non-empty, Viam
        ignores ``default_minimum_confidence`` and drops unlisted labels; the lowest
        value becomes the ``detection_floor``.
    call_timeout : float, default 60
        Seconds one call may take; a call that takes longer is retried by the runner.
    connect_timeout : float, default 30
        Seconds connecting to the machine may take.
    name : str, optional
        The detector's name in the store. Default ``"viam/<service>/<mode>"``, so that
        two services (or the two modes of one) are never taken for one detector.
    client_factory : callable, optional
        ``client_factory(credentials, service)`` returning an async context manager
        that yields a vision client, or an awaitable of one. Default
        :func:`connect_to_machine` (with ``insecure``, ``connect_timeout`` and
        ``dial_log``). Called once, in the detector's event loop; tests use it to serve
        a local ``Vision`` implementation.

    Raises
    ------
    InputError
        On an invalid option, when viam-sdk is not installed, when connecting to a
        machine (the default ``client_factory``) without the address, key or key id,
        or with ``insecure=True`` to an address that is not this computer.

    Notes
    -----
    Boxes are in pixels of the image as stored: the service decodes the bytes as they
    are and, unlike the cloud APIs, does not apply EXIF orientation.

    Examples
    --------
    >>> det = ViamDetector("my-detector", model_version="my-org:defects@3")  # doctest: +SKIP
    >>> score_dataset(read_manifest("manifest.jsonl"), det, ScoreStore())  # doctest: +SKIP
    >>> det.warn_if_censored()  # doctest: +SKIP
    >>> det.close()  # doctest: +SKIP
    """

    kind = "io"

    def __init__(
        self,
        service: str | None = None,
        *,
        mode: str = "detections",
        model_version: str | None = None,
        top_n: int | None = None,
        labels: Iterable[str] | str | None = None,
        address: str | None = None,
        insecure: bool | str = False,
        dial_log: str | os.PathLike | None = None,
        service_min_confidence: float | None = None,
        service_label_confidences: Mapping[str, float] | None = None,
        call_timeout: float = 60.0,
        connect_timeout: float = 30.0,
        name: str | None = None,
        client_factory: Callable[..., Any] | None = None,
    ) -> None:
        if not isinstance(service, str) or not service.strip():
            raise InputError(
                "the viam detector needs the vision service's name as configured on the "
                "machine: --option service=NAME (Python: ViamDetector(service=NAME))."
            )
        self.service = service.strip()
        if mode not in MODES:
            raise InputError(f"mode must be one of {', '.join(MODES)}, got {mode!r}.")
        self.mode = mode
        if top_n is not None:
            if mode != "classifications":
                raise InputError(
                    "top_n applies to mode=classifications only; get_detections returns "
                    "every detection the service keeps."
                )
            if isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1:
                raise InputError(f"top_n must be a positive whole number, got {top_n!r}.")
        self.top_n = top_n
        self.labels = _labels(labels)
        self.call_timeout = _positive(call_timeout, "call_timeout")
        self.connect_timeout = _positive(connect_timeout, "connect_timeout")
        self.service_min_confidence = _confidence(service_min_confidence, "service_min_confidence")
        self.service_label_confidences = _label_confidences(service_label_confidences)
        self.detection_floor = _stated_floor(
            self.service_min_confidence, self.service_label_confidences
        )
        if model_version is not None and not isinstance(model_version, str):
            model_version = str(model_version)
        if not model_version or not model_version.strip():
            warnings.warn(
                f"no model version stated for Viam service {self.service!r}; recording "
                f"{UNSTATED_VERSION!r}. Scores are comparable only within one model "
                "version, and a later run that also states none would be taken for this "
                "one (and skipped as already done). Pass --model-version, e.g. the ML "
                "model package and version: my-org:defects@2024-06-01.",
                UnstatedModelVersionWarning,
                stacklevel=2,
            )
            model_version = UNSTATED_VERSION
        self.model_version = model_version.strip()
        if name is not None and (not isinstance(name, str) or not name.strip()):
            raise InputError(f"name must be a non-empty string, got {name!r}.")
        self.name = name.strip() if name else f"viam/{self.service}/{self.mode}"
        if address is not None and (not isinstance(address, str) or not address.strip()):
            raise InputError(f"address must be the machine's address, got {address!r}.")
        # The address is where to connect, not a secret, but it is kept out of
        # settings() too: it names a machine, not anything that changes scores.
        self._address = address.strip() if address else None
        # Checked against the address known now; connect_to_machine checks it again
        # against the one it connects to.
        self._insecure = check_insecure(insecure, self._address or os.environ.get(ENV_ADDRESS))
        forced = isinstance(insecure, str) and insecure.strip().lower() == "force"
        insecure = "force" if forced else self._insecure
        if client_factory is None:
            client_factory = _default_factory(
                self._address, insecure, self.connect_timeout, dial_log
            )
        self._client_factory = client_factory
        if self.detection_floor is not None:
            warnings.warn(
                f"Viam service {self.service!r} filters results below "
                f"{self.detection_floor:g} (as stated), so scores below it are hidden and "
                "error rates for thresholds below it cannot be known. To calibrate, score "
                "against the same model behind a service with default_minimum_confidence "
                "0 and no label_confidences (see docs/viam.md).",
                CensoredScoresWarning,
                stacklevel=2,
            )
        self._tally = _Tally()
        self._class_cap: int | None = None  # classes the model has, once rdk says so
        self._requests = 0  # requests sent to the service, counted in its event loop
        self._lock = threading.Lock()
        self._session: _Session | None = None
        self._finalizer: weakref.finalize | None = None

    # -- protocol -------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        """What determines the scores: service, mode, ``top_n`` and any stated filters.

        Never the address, the API key or the key id.
        """
        out: dict[str, Any] = {
            "service": self.service,
            "mode": self.mode,
            "service_min_confidence": self.service_min_confidence,
            "service_label_confidences": (
                dict(self.service_label_confidences) if self.service_label_confidences else None
            ),
        }
        if self.mode == "classifications":
            out["top_n"] = self.top_n if self.top_n is not None else "all"
        try:
            from importlib.metadata import version

            out["viam_sdk"] = version("viam-sdk")
        except Exception:  # noqa: BLE001 - only informative
            pass
        return out

    @property
    def requests(self) -> int:
        """Requests this detector has sent to the service, over all its runs.

        One per call of :meth:`detect`, except that in classifications mode without
        ``top_n`` the first call also sends the request that learns the class count (and
        a filtering service may refuse it again for an image with fewer classes left).
        The runner counts calls, so compare this with a run's ``calls``.
        """
        return self._requests

    def detect(self, image: LabeledImage) -> Detection:
        """Send one image to the service and return what it reported.

        Parameters
        ----------
        image : calibrate.manifest.LabeledImage
            A local JPEG or PNG file.

        Returns
        -------
        Detection
            One result per detection (with its pixel box) or per classification;
            ``raw`` holds the response as JSON-able dicts.

        Raises
        ------
        RetryableError
            The machine was unavailable, busy or slow (UNAVAILABLE, DEADLINE_EXCEEDED,
            RESOURCE_EXHAUSTED, ABORTED, a dropped connection, a timeout).
        ImageError
            The file is not a JPEG or PNG, is remote, or the service rejected it
            (INVALID_ARGUMENT, OUT_OF_RANGE, a decode error).
        FatalDetectorError
            Connecting failed, the key was refused (UNAUTHENTICATED,
            PERMISSION_DENIED), there is no such service (NOT_FOUND), or it does not
            support the mode (UNIMPLEMENTED).
        DetectorError
            Any other error the service reported.
        """
        from viam.media.video import ViamImage

        data, mime = _read_image(image)
        picture = ViamImage(data, mime)
        if not picture.width or not picture.height:
            raise ImageError(
                f"image {image.image_id!r}: cannot read the size from the {mime} header of "
                f"{image.uri}; the file is damaged. Replace or remove it."
            )
        session = self._open_session()
        future = session.submit(self._score(session, picture))
        # The coroutine bounds itself (connect, then at most two requests, after at most
        # two of the call that learns the class count); this only guards against a
        # wedged loop.
        limit = self.connect_timeout + _CONNECT_SLACK + 4 * self.call_timeout + 5.0
        try:
            results, raw = future.result(timeout=limit)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise RetryableError(
                f"no answer from Viam service {self.service!r} within {limit:g} s"
            ) from None
        except concurrent.futures.CancelledError:
            raise RetryableError(
                f"the call to Viam service {self.service!r} was cancelled (detector closed)"
            ) from None
        self._tally.add(results)
        return Detection(results, raw=raw)

    # -- censoring ------------------------------------------------------------------

    def observed_floor(self) -> float | None:
        """The cutoff the scores reported so far look censored at, if any.

        Applies :func:`censoring_floor`'s rule to every score this detector has
        returned (all labels together, since ``default_minimum_confidence`` applies to
        all of them).

        Returns
        -------
        float or None
        """
        (n, lo, hi), _ = self._tally.snapshot()
        return _floor_rule(n, lo, hi)

    def observed_floors(self) -> dict[str, float | None]:
        """:meth:`observed_floor` per label (``label_confidences`` cut per label)."""
        _, by_label = self._tally.snapshot()
        return {label: _floor_rule(*acc) for label, acc in sorted(by_label.items())}

    def warn_if_censored(self) -> float | None:
        """Warn when the scores so far look censored; call it at the end of a run.

        Emits a :class:`CensoredScoresWarning` when :meth:`observed_floor` finds a
        cutoff, or when scores below the stated ``service_min_confidence`` /
        ``service_label_confidences`` were reported (so the statement is wrong).

        Returns
        -------
        float or None
            :meth:`observed_floor`, for the run's record.
        """
        (n, lo, _), _ = self._tally.snapshot()
        floor = self.observed_floor()
        if floor is not None:
            stated = (
                f" (you stated {self.detection_floor:g})" if self.detection_floor is not None else ""
            )
            warnings.warn(
                f"{self.name} {self.model_version}: no score below {lo:.4g} among {n:,} "
                f"results, so Viam service {self.service!r} looks like it filters results "
                f"below {floor:g}{stated} (default_minimum_confidence or "
                "label_confidences). Scores below the cutoff were hidden, so error rates "
                f"for thresholds below {floor:g} cannot be known. Score again against a "
                "service with default_minimum_confidence 0 and no label_confidences, "
                "then export the thresholds back to this one (see docs/viam.md). If the "
                "service is unfiltered, the model simply never scores lower; ignore this.",
                CensoredScoresWarning,
                stacklevel=2,
            )
        elif self.detection_floor is not None and n and lo < self.detection_floor:
            warnings.warn(
                f"{self.name} {self.model_version}: scores as low as {lo:.4g} were "
                f"reported, below the stated service cutoff {self.detection_floor:g}; the "
                "stated service_min_confidence / service_label_confidences do not match "
                "the service. Correct them so the run records the right detection floor.",
                CensoredScoresWarning,
                stacklevel=2,
            )
        return floor

    # -- lifetime -------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection and stop the detector's event loop thread.

        Safe to call more than once, and not required: it also runs when the detector
        is garbage-collected and at interpreter exit. A later :meth:`detect` connects
        again.
        """
        with self._lock:
            finalizer, self._finalizer, self._session = self._finalizer, None, None
        if finalizer is not None:
            finalizer()

    def __enter__(self) -> ViamDetector:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"ViamDetector(service={self.service!r}, mode={self.mode!r}, "
            f"model_version={self.model_version!r})"
        )

    # -- internals ------------------------------------------------------------------

    def _open_session(self) -> _Session:
        with self._lock:
            if self._session is None or self._session.closed:
                address = self._address
                session = _Session(
                    self._client_factory,
                    lambda: ViamCredentials.from_env(address),
                    self.service,
                    self.connect_timeout + _CONNECT_SLACK,
                    _ConnectErrors(self.service, address, insecure=self._insecure,
                                   connect_timeout=self.connect_timeout),
                )
                self._session = session
                self._finalizer = weakref.finalize(self, session.close)
            return self._session

    async def _score(self, session: _Session, picture) -> tuple[list[Result], dict[str, Any]]:
        client = await session.get_client()
        sent = [0]  # requests this call made
        try:
            if self.mode == "detections":
                items = await self._get_detections(client, picture, sent)
                results, rows = _from_detections(items, picture.width, picture.height)
                raw = {"mode": self.mode, "detections": rows}
            else:
                items, asked = await self._get_classifications(session, client, picture, sent)
                results, rows = _from_classifications(items)
                raw = {"mode": self.mode, "top_n": asked, "classifications": rows}
        except (DetectorError, asyncio.CancelledError):
            raise
        except Exception as exc:  # noqa: BLE001 - classified, never turned into a score
            raise self._call_error(exc) from None
        raw.update(mime_type=str(picture.mime_type), width=picture.width, height=picture.height,
                   requests=sent[0])
        return results, raw

    def _sending(self, sent: list[int]) -> None:
        # Runs in the detector's event loop only, so the counts need no lock.
        sent[0] += 1
        self._requests += 1

    async def _get_detections(self, client, picture, sent: list[int]) -> list:
        from viam.media.video import CameraMimeType

        stub = getattr(client, "client", None)
        self._sending(sent)
        if picture.mime_type != CameraMimeType.JPEG and hasattr(stub, "GetDetections"):
            # viam-sdk labels every upload image/jpeg, and rdk decodes that label with
            # libjpeg, so PNG bytes would be refused: send them with their own type.
            from viam.proto.service.vision import GetDetectionsRequest

            request = GetDetectionsRequest(
                name=client.name, image=picture.data, width=picture.width,
                height=picture.height, mime_type=picture.mime_type,
            )
            response = await stub.GetDetections(
                request, timeout=self.call_timeout, metadata=_metadata(client)
            )
            return list(response.detections)
        return list(await client.get_detections(picture, timeout=self.call_timeout))

    async def _get_classifications(self, session: _Session, client, picture,
                                   sent: list[int]) -> tuple[list, int]:
        if self.top_n is None and self._class_cap is None:
            # Only the service knows how many classes it has, and it says so only by
            # refusing a larger top-N: one call asks, the others wait for the answer
            # instead of each sending a request bound to be refused.
            async with session.class_count_lock:
                if self._class_cap is None:
                    return await self._top_classes(client, picture, sent, learning=True)
        return await self._top_classes(client, picture, sent)

    async def _top_classes(self, client, picture, sent: list[int], *,
                           learning: bool = False) -> tuple[list, int]:
        wanted = self.top_n or _ALL_CLASSES
        asked = min(wanted, self._class_cap) if self._class_cap else wanted
        try:
            items = await self._classify(client, picture, asked, sent)
        except Exception as exc:
            # rdk refuses a top-N larger than the classes it has (after its own
            # filtering) and says how many there are: ask again for that many.
            match = _TOP_N_TOO_LARGE.search(str(getattr(exc, "message", "") or exc))
            if not match:
                raise
            available = int(match.group(2))
            # Unfiltered, that is the model's class count; remember the largest seen.
            self._class_cap = max(available, self._class_cap or 0) or None
            asked = min(wanted, available)
            items = [] if asked == 0 else await self._classify(client, picture, asked, sent)
        else:
            if learning:  # it has at least that many: keep asking for them
                self._class_cap = asked
        # A service that ignores n must not widen what was asked for.
        items = sorted(items, key=lambda c: -c.confidence)[:asked]
        return items, asked

    async def _classify(self, client, picture, count: int, sent: list[int]) -> list:
        from viam.media.video import CameraMimeType

        stub = getattr(client, "client", None)
        self._sending(sent)
        if picture.mime_type != CameraMimeType.JPEG and hasattr(stub, "GetClassifications"):
            # See _get_detections: the SDK would label PNG bytes image/jpeg.
            from viam.proto.service.vision import GetClassificationsRequest

            request = GetClassificationsRequest(
                name=client.name, image=picture.data, width=picture.width,
                height=picture.height, mime_type=picture.mime_type, n=count,
            )
            response = await stub.GetClassifications(
                request, timeout=self.call_timeout, metadata=_metadata(client)
            )
            return list(response.classifications)
        return list(await client.get_classifications(picture, count, timeout=self.call_timeout))

    def _call_error(self, exc: BaseException) -> DetectorError:
        """Sort a failed call into the runner's error kinds.

        Fatal messages end without a full stop: the runner adds one when it reports
        the stop.
        """
        what = _describe(exc)
        where = f"Viam service {self.service!r}"
        status = getattr(exc, "status", None)
        name = getattr(status, "name", None) if status is not None else None
        if name in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED"):
            return RetryableError(f"{where}: {what}")
        if name in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            return FatalDetectorError(
                f"{where} refused the API key ({what}). Check {ENV_API_KEY} and "
                f"{ENV_API_KEY_ID}: they must be a machine (or organisation) API key with "
                "access to this machine"
            )
        if name == "NOT_FOUND":
            return FatalDetectorError(
                f"the machine has no vision service named {self.service!r} ({what}). Use "
                "the service's name from the machine's configuration: --option service=NAME"
            )
        if name == "UNIMPLEMENTED" or _NOT_IMPLEMENTED.search(what):
            other = "classifications" if self.mode == "detections" else "detections"
            return FatalDetectorError(
                f"{where} does not support get_{self.mode} ({what}). Its model may be "
                f"made for the other call: try --option mode={other}"
            )
        if name in ("INVALID_ARGUMENT", "OUT_OF_RANGE"):
            return ImageError(f"{where} rejected the image: {what}")
        if name == "UNKNOWN" and _DECODE_TROUBLE.search(what):
            return ImageError(f"{where} could not decode the image: {what}")
        if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
            return RetryableError(
                f"{where}: no answer within call_timeout={self.call_timeout:g} s ({what})"
            )
        if _is_connection_trouble(exc):
            return RetryableError(f"{where}: the connection to the machine failed ({what})")
        if name is None and _is_viam_error(exc):
            return ImageError(f"{where}: the SDK refused the image: {what}")
        return DetectorError(f"{where}: {what}")


# ---------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------


def _default_factory(address: str | None, insecure: bool | str, connect_timeout: float,
                     dial_log) -> Callable[..., Any]:
    if importlib.util.find_spec("viam") is None:
        raise InputError("the viam detector needs viam-sdk: pip install 'calibrate[viam]'.")
    _check_environment(address)
    if dial_log is not None:
        if not isinstance(dial_log, (str, os.PathLike)) or not str(dial_log).strip():
            raise InputError(f"dial_log must be a file path, got {dial_log!r}.")
        dial_log = os.path.expanduser(dial_log)
    return functools.partial(
        connect_to_machine, insecure=insecure, connect_timeout=connect_timeout,
        dial_log=dial_log,
    )


def _read_image(image: LabeledImage) -> tuple[bytes, Any]:
    from viam.media.video import CameraMimeType

    if not image.is_local:
        raise ImageError(
            f"image {image.image_id!r} is remote ({image.uri}); the viam detector sends "
            "local files. Download the images and point the manifest at the copies."
        )
    try:
        data = image.read_bytes()
    except InputError as exc:
        raise ImageError(str(exc)) from None
    if data.startswith(_JPEG_MAGIC):
        return data, CameraMimeType.JPEG
    if data.startswith(_PNG_MAGIC):
        return data, CameraMimeType.PNG
    raise ImageError(
        f"image {image.image_id!r} ({image.uri}) is neither JPEG nor PNG; a Viam vision "
        "service takes those two. Convert it (losslessly: to PNG) and score again."
    )


def _from_detections(items: list, width: int, height: int) -> tuple[list[Result], list[dict]]:
    results, rows = [], []
    for d in items:
        label = _label_of(d)
        box = None
        row: dict[str, Any] = {"class_name": d.class_name, "confidence": d.confidence}
        if all(d.HasField(f) for f in ("x_min", "y_min", "x_max", "y_max")):
            box = Box(float(d.x_min), float(d.y_min), float(d.x_max), float(d.y_max), "pixel")
            row.update(x_min=d.x_min, y_min=d.y_min, x_max=d.x_max, y_max=d.y_max)
        elif all(d.HasField(f"{f}_normalized") for f in ("x_min", "y_min", "x_max", "y_max")):
            # Only ratios came back: turn them into pixels of the image that was sent.
            box = Box(
                d.x_min_normalized * width, d.y_min_normalized * height,
                d.x_max_normalized * width, d.y_max_normalized * height, "pixel",
            )
        for f in ("x_min", "y_min", "x_max", "y_max"):
            if d.HasField(f"{f}_normalized"):
                row[f"{f}_normalized"] = getattr(d, f"{f}_normalized")
        results.append(Result(label, float(d.confidence), box))
        rows.append(row)
    return results, rows


def _from_classifications(items: list) -> tuple[list[Result], list[dict]]:
    results = [Result(_label_of(c), float(c.confidence)) for c in items]
    rows = [{"class_name": c.class_name, "confidence": c.confidence} for c in items]
    return results, rows


def _label_of(item) -> str:
    if not item.class_name:
        raise DetectorError(
            "the service returned a result without a label (empty class_name); check the "
            "model's label file (label_path) in the service's configuration."
        )
    return item.class_name


def _metadata(client) -> Any:
    meta = getattr(client, "Metadata", None)
    return meta().proto if meta is not None else None


def _is_connection_trouble(exc: BaseException) -> bool:
    if isinstance(exc, (ConnectionError, OSError, EOFError)):
        return True
    try:
        from grpclib.exceptions import ProtocolError, StreamTerminatedError
    except ImportError:  # pragma: no cover - grpclib comes with viam-sdk
        return False
    return isinstance(exc, (StreamTerminatedError, ProtocolError))


def _is_viam_error(exc: BaseException) -> bool:
    try:
        from viam.errors import ViamError
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, ViamError)


def _labels(labels) -> tuple[str, ...] | None:
    if labels is None:
        return None
    if isinstance(labels, str):
        labels = [p.strip() for p in labels.split(",")]
    try:
        out = tuple(labels)
    except TypeError:
        raise InputError(f"labels must be a list of names, got {labels!r}.") from None
    if not out or not all(isinstance(x, str) and x.strip() for x in out):
        raise InputError(f"labels must be non-empty names, got {labels!r}.")
    return tuple(x.strip() for x in out)


def _positive(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
            or not math.isfinite(value):
        raise InputError(f"{what} must be a positive number of seconds, got {value!r}.")
    return float(value)


def _confidence(value, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not 0 <= value <= 1:
        raise InputError(
            f"{what} must be the service's cutoff between 0 and 1 (as in its config), "
            f"got {value!r}."
        )
    return float(value)


def _label_confidences(value) -> dict[str, float] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise InputError(
            "service_label_confidences must be the service's label_confidences mapping, "
            f'e.g. {{"scratch": 0.4}}, got {value!r}.'
        )
    out = {}
    for label, conf in value.items():
        if not isinstance(label, str) or not label:
            raise InputError(f"service_label_confidences: bad label {label!r}.")
        out[label] = _confidence(conf, f"service_label_confidences[{label!r}]")
    return out or None


def _stated_floor(default: float | None, per_label: dict[str, float] | None) -> float | None:
    # Viam ignores default_minimum_confidence once label_confidences is non-empty.
    floor = min(per_label.values()) if per_label else default
    return floor if floor else None
