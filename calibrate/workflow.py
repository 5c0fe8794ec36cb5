"""The steps that the command line and study files share: score, choose, export, report.

Each function does one step of the calibration job end to end (open what it needs, run
the library, close it) and returns a result object; :mod:`calibrate.cli` only parses
arguments and renders those objects, and :func:`calibrate.study.run_study` strings the
same steps together. Nothing here computes statistics: that is the job of
:mod:`calibrate.thresholds` and below.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calibrate.detectors.registry import make_detector
from calibrate.errors import CalibrateError, InputError
from calibrate.manifest import read_manifest, read_scores_table
from calibrate.policy import PolicySet, load_policy_file
from calibrate.pricing import estimate_cost
from calibrate.runner import RunOptions, plan_run, score_dataset
from calibrate.store import ScoreStore
from calibrate.thresholds import LabelThreshold, choose_thresholds, choose_thresholds_from_store
from calibrate.thresholds_file import thresholds_file_from_results, write_thresholds_file

__all__ = [
    "ScoreOutcome",
    "ThresholdsOutcome",
    "choose_from_file",
    "choose_from_store",
    "existing_store",
    "open_detector",
    "policies_from",
    "score",
    "store_provenance",
    "write_thresholds",
]


@contextmanager
def open_detector(name: str, model_version: str | None = None,
                  options: dict[str, Any] | None = None) -> Iterator[Any]:
    """A detector by registry name or plugin path, closed again however the block ends.

    Parameters
    ----------
    name : str
        A built-in name or ``package.module:callable``.
    model_version : str, optional
    options : dict, optional
        Passed to the detector's constructor.
    """
    det = make_detector(name, model_version=model_version, **(options or {}))
    try:
        yield det
    finally:
        close = getattr(det, "close", None)
        if callable(close):
            close()


def existing_store(path, *, hint: str = "fill one with 'calibrate score'") -> Path:
    """``path`` when a store file is there, else a one-line error saying what to do."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"no score store at {p}; {hint}.")
    return p


def policies_from(path=None, overrides: dict[str, Any] | None = None, *,
                  default: PolicySet | None = None) -> PolicySet:
    """The policies of a command: a policy file (or ``default``), then overrides.

    Parameters
    ----------
    path : str or Path, optional
        A TOML policy file.
    overrides : dict, optional
        Keys of :class:`~calibrate.policy.Policy` from the command line; they win over
        the file's ``[defaults]`` (``None`` values are ignored) but not over its
        per-label tables.
    default : PolicySet, optional
        Used without a file; default :meth:`PolicySet.default` when there are no
        overrides either, else an empty set (the overrides must then name the costs).
    """
    if path is not None:
        policies = load_policy_file(path)
    elif default is not None:
        policies = default
    elif not any(v is not None for v in (overrides or {}).values()):
        policies = PolicySet.default()
    else:
        policies = PolicySet(source="command line")
    return policies.with_defaults(overrides or {}) if overrides else policies


# ---------------------------------------------------------------------------------------
# Scoring
# ---------------------------------------------------------------------------------------


@dataclass
class ScoreOutcome:
    """What :func:`score` did.

    Attributes
    ----------
    dataset : calibrate.manifest.LabeledSet
    detector, model_version : str
    plan : calibrate.runner.RunPlan
        How many images were to be scored and how many were already stored.
    estimate : calibrate.pricing.CostEstimate or None
        The price of the planned calls, for billable detectors and dry runs.
    summary : calibrate.runner.RunSummary or None
        None for a dry run.
    """

    dataset: Any
    detector: str
    model_version: str
    plan: Any
    estimate: Any = None
    summary: Any = None


def score(dataset, detector: str, store, *, model_version: str | None = None,
          options: dict[str, Any] | None = None, run_options: RunOptions | None = None,
          dry_run: bool = False, price_file=None, on_plan=None) -> ScoreOutcome:
    """Run a detector over a labeled image set into a store (resumably).

    Parameters
    ----------
    dataset : str or Path
        A manifest :func:`calibrate.manifest.read_manifest` reads.
    detector : str
        Registry name or plugin path.
    store : str or Path
        The store file (created if missing).
    model_version : str, optional
    options : dict, optional
        Detector options.
    run_options : RunOptions, optional
    dry_run : bool, default False
        Plan and price the run; call nothing.
    price_file : str or Path, optional
        Own price table for cloud detectors.
    on_plan : callable, optional
        Called with the :class:`ScoreOutcome` once the plan and price are known and
        before any call is made (so a CLI can show the price of what follows).

    Returns
    -------
    ScoreOutcome
    """
    labeled = read_manifest(dataset)
    opts = run_options or RunOptions()
    with open_detector(detector, model_version, options) as det, ScoreStore(store) as st:
        plan = plan_run(labeled, det, st, opts)
        out = ScoreOutcome(labeled, det.name, det.model_version, plan)
        if getattr(det, "billable", False) or dry_run:
            out.estimate = estimate_cost(det, plan.to_score, price_file)
        if on_plan is not None:
            on_plan(out)
        if not dry_run:
            out.summary = score_dataset(labeled, det, st, opts)
    return out


# ---------------------------------------------------------------------------------------
# Choosing
# ---------------------------------------------------------------------------------------


@dataclass
class ThresholdsOutcome:
    """Threshold choices and where their data came from.

    Attributes
    ----------
    results : list of LabelThreshold
    source : str
        The store or scores file (and split), as shown to the user.
    datasets : dict
        ``(detector, model_version) -> (dataset name, fingerprint)``, for provenance.
    """

    results: list[LabelThreshold]
    source: str
    datasets: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)

    @property
    def calibrated(self) -> list[LabelThreshold]:
        """The results that have a choice."""
        return [r for r in self.results if r.choice is not None]

    @property
    def n_failed(self) -> int:
        """Failed detector calls excluded, over all detector versions."""
        return sum({(r.detector, r.model_version): r.n_failed for r in self.results}.values())


def store_provenance(store) -> dict[tuple[str, str], tuple[str, str]]:
    """``(detector, version) -> (dataset, fingerprint)`` of each version's latest run."""
    return {
        (r.detector, r.model_version): (r.dataset, r.dataset_fingerprint)
        for r in store.runs().itertuples()
    }


def choose_from_store(path, policies: PolicySet, *, detector: str | None = None,
                      model_version: str | None = None, labels: list[str] | None = None,
                      dataset: str | None = None, split: str | None = None) -> ThresholdsOutcome:
    """Choose every label's threshold from a store file (opened read-only).

    Raises
    ------
    InputError
        When the store is missing or nothing matches the filters.
    """
    with ScoreStore(existing_store(path), read_only=True) as st:
        results = choose_thresholds_from_store(
            st, policies, detector=detector, model_version=model_version, labels=labels,
            dataset=dataset, split=split,
        )
        datasets = store_provenance(st)
    source = str(path) + (f" (split {split})" if split else "")
    return _non_empty(ThresholdsOutcome(results, source, datasets))


def choose_from_file(path, policies: PolicySet, *,
                     labels: list[str] | None = None) -> ThresholdsOutcome:
    """Choose every label's threshold from a CSV/Parquet scores table.

    Raises
    ------
    InputError
        When the table is invalid, a requested label is not in it, or it is empty.
    """
    p = Path(path)
    frame = read_scores_table(p)
    if labels:
        unknown = sorted(set(labels) - set(frame["label"]))
        if unknown:
            raise InputError(
                f"label(s) {', '.join(unknown)} not in {p}; it has "
                f"{', '.join(sorted(frame['label'].unique()))}."
            )
        frame = frame[frame["label"].isin(labels)]
    results = choose_thresholds(frame, policies)
    digest = "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest()
    datasets = {(r.detector, r.model_version): (p.name, digest) for r in results}
    return _non_empty(ThresholdsOutcome(results, str(p), datasets))


def _non_empty(outcome: ThresholdsOutcome) -> ThresholdsOutcome:
    if not outcome.results:
        raise CalibrateError(f"{outcome.source} has no scores matching the filters.")
    return outcome


def write_thresholds(outcome: ThresholdsOutcome, path) -> Path | None:
    """Write the thresholds file of ``outcome`` (None when no label has a choice)."""
    if not outcome.calibrated:
        return None
    tf = thresholds_file_from_results(outcome.results, source=outcome.source,
                                      datasets=outcome.datasets)
    return write_thresholds_file(tf, path)
