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
from calibrate.parts import PartDecision, part_decisions_from_store, part_policy, parts_skipped
from calibrate.policy import PolicySet, load_policy_file
from calibrate.pricing import estimate_cost
from calibrate import ray_engine
from calibrate.ray_engine import RayOptions
from calibrate.runner import RunOptions, plan_run, score_dataset
from calibrate.store import open_store, store_location
from calibrate.store.selection import incomplete_message, overlap_message
from calibrate.store.sources import ScoresDataset, choose_thresholds_from_dataset
from calibrate.thresholds import LabelThreshold, choose_thresholds, choose_thresholds_from_store
from calibrate.thresholds_file import thresholds_file_from_results, write_thresholds_file

__all__ = [
    "ENGINES",
    "ScoreOutcome",
    "ThresholdsOutcome",
    "check_filters",
    "check_policy_labels",
    "choose_from_file",
    "choose_from_scores_dataset",
    "choose_from_store",
    "data_notices",
    "existing_store",
    "named_dataset_provenance",
    "part_decisions",
    "open_detector",
    "score_on",
    "policies_from",
    "prevalence_notices",
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
    """``path`` when a store file is there (or a PostgreSQL URL: the server says whether
    it is there), else a one-line error saying what to do."""
    p = store_location(path)
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
        if policies.part:
            part_policy(policies)  # a bad [part] key fails now, naming its line
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


#: Where :func:`score` runs the detector calls.
ENGINES = ("local", "ray")


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
          dry_run: bool = False, price_file=None, on_plan=None, engine: str = "local",
          ray_options: RayOptions | None = None) -> ScoreOutcome:
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
    engine : {"local", "ray"}, default "local"
        ``"local"``: this machine's thread or process pool
        (:func:`calibrate.runner.score_dataset`); ``"ray"``: Ray Data actors, here or
        on a cluster (:func:`calibrate.ray_engine.score_dataset`, local detectors only).
    ray_options : calibrate.ray_engine.RayOptions, optional
        Where and how to use Ray, for ``engine="ray"``.

    Returns
    -------
    ScoreOutcome
    """
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}.")
    if engine == "ray" and not dry_run:
        ray_engine.require_ray()  # before a store file is created for nothing
    labeled = read_manifest(dataset)
    opts = run_options or RunOptions()
    with open_detector(detector, model_version, options) as det, open_store(store) as st:
        plan = plan_run(labeled, det, st, opts)
        out = ScoreOutcome(labeled, det.name, det.model_version, plan)
        if getattr(det, "billable", False) or dry_run:
            out.estimate = estimate_cost(det, plan.to_score, price_file)
        if on_plan is not None:
            on_plan(out)
        if not dry_run:
            out.summary = score_on(engine, labeled, det, st, opts, ray_options)
    return out


def score_on(engine: str, labeled, detector, store, options: RunOptions,
             ray_options: RayOptions | None = None):
    """Score a labeled set with an open detector into an open store on ``engine``.

    Parameters
    ----------
    engine : {"local", "ray"}
        :func:`calibrate.runner.score_dataset` or :func:`calibrate.ray_engine.score_dataset`.
    labeled, detector, store, options, ray_options
        As those functions take them (``ray_options`` only for ``"ray"``).

    Returns
    -------
    calibrate.runner.RunSummary
    """
    if engine == "ray":
        return ray_engine.score_dataset(labeled, detector, store, options, ray_options)
    return score_dataset(labeled, detector, store, options)


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
    notices : list of str
        Assumptions the numbers rest on that the user did not state (a prevalence taken
        from the sample, no held-out split), to be shown wherever the numbers are.
    parts : list of PartDecision
        Whole-part figures per detector version (per-label, joint, review band), when
        the policy has a ``[part]`` table and every label scraps the part when it fires.
    """

    results: list[LabelThreshold]
    source: str
    datasets: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    parts: list[PartDecision] = field(default_factory=list)
    #: Why a ``[part]`` policy got no whole-part figures from this source, or None.
    parts_unavailable: str | None = None

    @property
    def refused(self) -> list[LabelThreshold]:
        """Results whose limits are not met and whose policy deploys nothing."""
        return [r for r in self.calibrated if not r.choice.deployable]

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
                      dataset: str | None = None, split: str | None = None,
                      held_out: str | None = None,
                      allow_incomplete: bool = False) -> ThresholdsOutcome:
    """Choose every label's threshold from a store file (opened read-only).

    Parameters
    ----------
    dataset : str, optional
        The dataset each version counts; default the latest it ran on.
    held_out : str, optional
        The split each chosen threshold is also evaluated on; default ``"test"`` when
        calibrating on another split and the store has one; ``""`` for none.
    allow_incomplete : bool, default False
        Choose from versions whose latest run is incomplete instead of refusing them;
        the outcome's notices then say so first.

    Raises
    ------
    InputError
        When the store is missing, a filter names a detector, version, label or split
        the store does not have, a policy table names no label of the store, or a
        version's latest run is incomplete and that is not allowed (the message says
        the command that resumes it).
    """
    with open_store(existing_store(path), read_only=True) as st:
        versions = st.versions()
        known = {(r.detector, r.model_version): set(r.labels) | set(
            st.truth_labels(r.detector, r.model_version)) for r in versions.itertuples()}
        check_filters(known, detector, model_version, labels, where=str(path))
        check_policy_labels(policies, set().union(*known.values()) if known else set())
        results = choose_thresholds_from_store(
            st, policies, detector=detector, model_version=model_version, labels=labels,
            dataset=dataset, split=split, held_out=held_out,
            allow_incomplete=allow_incomplete,
        )
        datasets = named_dataset_provenance(st, store_provenance(st), dataset)
        splits = st.splits(dataset)
        data_notes = data_notices(st, results, dataset)
        parts = part_decisions(st, results, policies, dataset=dataset, split=split)
    source = str(path) + (f" (split {split})" if split else "")
    outcome = _non_empty(ThresholdsOutcome(results, source, datasets, parts=parts))
    outcome.notices += data_notes
    skipped = parts_skipped(results, policies)
    if skipped:
        outcome.notices.append(skipped)
    if not any(r.held_out_split for r in results):
        outcome.notices.append(
            "No held-out split: the bounds shown are from the data that chose each "
            "threshold and are optimistic"
            + (f" (the store's splits: {', '.join(splits)}; calibrate on one with "
               "--split and the 'test' split is used as held-out)." if splits else
               " (give the manifest a 'split' column to hold images out)."))
    outcome.notices += prevalence_notices(results)
    return outcome


def part_decisions(store, results: list[LabelThreshold], policies: PolicySet, *,
                   dataset: str | None = None, split: str | None = None) -> list[PartDecision]:
    """Whole-part figures of every version in ``results`` when the policy asks for them.

    Computed when the policy has a ``[part]`` table and every calibrated label acts
    ``reject`` (the station scraps a part when any label fires); otherwise none.
    """
    return part_decisions_from_store(store, results, policies, dataset=dataset, split=split)


def named_dataset_provenance(store, datasets: dict[tuple[str, str], tuple[str, str]],
                             dataset: str | None) -> dict[tuple[str, str], tuple[str, str]]:
    """``datasets`` (as :func:`store_provenance` gives it) with each version that ran on
    a named ``dataset`` pointing at its latest run there: the data its curves counted."""
    if dataset is None:
        return datasets
    out = dict(datasets)
    for r in store.runs().itertuples():
        if r.dataset == dataset:  # runs come oldest first, so the latest wins
            out[(r.detector, r.model_version)] = (r.dataset, r.dataset_fingerprint)
    return out


def data_notices(store, results: list[LabelThreshold], dataset: str | None) -> list[str]:
    """What the numbers of each version rest on that the user must see: incomplete
    data used as allowed (first), and other datasets left out of its curves.

    Parameters
    ----------
    store : calibrate.store.ScoreStore
    results : list of LabelThreshold
    dataset : str or None
        The dataset named by the user, if any.
    """
    incomplete, overlap = [], []
    for det, ver in dict.fromkeys((r.detector, r.model_version) for r in results):
        check = store.data_check(det, ver, dataset)
        if not check.complete:
            incomplete.append("INCOMPLETE DATA: these thresholds rest on part of the data: "
                              + incomplete_message(check, store.path) + ".")
        note = overlap_message(check)
        if note:
            overlap.append(note)
    return incomplete + overlap


def check_filters(known: dict[tuple[str, str], set[str]], detector: str | None,
                  model_version: str | None, labels: list[str] | None, *, where: str) -> None:
    """Refuse a detector, model version or label that the data does not have.

    Parameters
    ----------
    known : dict
        ``(detector, model_version) -> labels`` of the data.
    where : str
        The store or file, for the message.

    Raises
    ------
    InputError
        Naming what was asked for and listing what there is.
    """
    def listing(items) -> str:
        return ", ".join(sorted(items)) or "none"

    if detector is not None and detector not in {d for d, _ in known}:
        raise InputError(f"unknown detector {detector!r}: {where} has "
                         f"{listing({d for d, _ in known})}.")
    if model_version is not None:
        have = {v for d, v in known if detector is None or d == detector}
        if model_version not in have:
            raise InputError(f"unknown model version {model_version!r}"
                             + (f" of {detector}" if detector else "")
                             + f": {where} has {listing(f'{d} {v}' for d, v in known)}.")
    if labels:
        have = set().union(*(ls for (d, v), ls in known.items()
                             if (detector is None or d == detector)
                             and (model_version is None or v == model_version)))
        unknown = sorted(set(labels) - have)
        if unknown:
            raise InputError(f"unknown label(s) {', '.join(map(repr, unknown))}: "
                             f"{where} has {listing(have)}.")


def check_policy_labels(policies: PolicySet, labels: set[str]) -> None:
    """Refuse a policy table ``[labels.X]`` that names no label of the data: a typo there
    would silently give that label the default policy (and drop its limits).

    Raises
    ------
    InputError
        With the policy file's line when known, listing the labels there are.
    """
    for name in policies.labels:
        if name in labels:
            continue
        msg = (f"policy table [labels.{name}] matches no label of the data; the labels are "
               f"{', '.join(sorted(labels)) or 'none'}. Fix the name or remove the table.")
        if policies.locator is not None:
            raise policies.locator.error(("labels", name), msg)
        raise InputError(f"{policies.source}: {msg}")


def prevalence_notices(results: list[LabelThreshold]) -> list[str]:
    """One notice per label whose cost used the sample's prevalence, none given."""
    out = []
    for r in results:
        c = r.choice
        if c is not None and c.policy.prevalence is None and not c.policy.detection_unit:
            out.append(
                f"{r.label} ({r.detector} {r.model_version}): no prevalence in the policy, so "
                f"cost uses the sample's {c.prevalence:.3g} ({c.n_positive:,} of "
                f"{c.n_positive + c.n_negative:,}); labeled sets are often enriched, so set "
                "the line's real rate with 'prevalence'.")
    return out


def choose_from_file(path, policies: PolicySet, *,
                     labels: list[str] | None = None) -> ThresholdsOutcome:
    """Choose every label's threshold from a CSV/Parquet scores table.

    Raises
    ------
    InputError
        When the table is invalid, a requested label is not in it, a policy table
        names no label of it, or it is empty.
    """
    p = Path(path)
    frame = read_scores_table(p)
    known = {k: set(g["label"]) for k, g in frame.groupby(["detector", "model_version"])}
    check_filters(known, None, None, labels, where=str(p))
    check_policy_labels(policies, set(frame["label"]))
    if labels:
        frame = frame[frame["label"].isin(labels)]
    results = choose_thresholds(frame, policies)
    digest = "sha256:" + hashlib.sha256(p.read_bytes()).hexdigest()
    datasets = {(r.detector, r.model_version): (p.name, digest) for r in results}
    outcome = _non_empty(ThresholdsOutcome(results, str(p), datasets))
    outcome.notices.append("No held-out split: a scores table has none, so the bounds "
                           "shown are from the data that chose each threshold and are "
                           "optimistic.")
    outcome.notices += prevalence_notices(results)
    return outcome


def choose_from_scores_dataset(path, policies: PolicySet, *, detector: str | None = None,
                               model_version: str | None = None,
                               labels: list[str] | None = None, split: str | None = None,
                               held_out: str | None = None,
                               round_to: int | None = None) -> ThresholdsOutcome:
    """Choose every label's threshold from a hive-partitioned Parquet scores dataset.

    Each label's count table is computed by DuckDB over that label's partition only
    (:class:`calibrate.store.sources.ScoresDataset`); the choice is the store's.

    Raises
    ------
    InputError
        When the folder is not a scores dataset, a filter or policy table names
        something it does not have, or a file breaks the flat layout.
    """
    ds = ScoresDataset(path)
    known = {k: set(v) for k, v in ds.versions().items()}
    check_filters(known, detector, model_version, labels, where=str(path))
    check_policy_labels(policies, set().union(*known.values()) if known else set())
    results = choose_thresholds_from_dataset(
        ds, policies, detector=detector, model_version=model_version, labels=labels,
        split=split, held_out=held_out, round_to=round_to)
    datasets = {(r.detector, r.model_version): (ds.path.name,
                                                ds.fingerprint(r.detector, r.model_version))
                for r in results}
    source = str(path) + (f" (split {split})" if split else "") + (
        f" (scores rounded to {round_to} decimals)" if round_to is not None else "")
    outcome = _non_empty(ThresholdsOutcome(results, source, datasets))
    if round_to is not None:
        outcome.notices.append(
            f"Scores were rounded half up to {round_to} decimals before counting: the "
            "figures are exact for the rounded scores; on raw scores, the ones within half "
            f"a step (0.5e-{round_to}) below a threshold fire here but not on the line.")
    if not any(r.held_out_split for r in results):
        outcome.notices.append(
            "No held-out split: the bounds shown are from the data that chose each "
            "threshold and are optimistic (give the dataset a 'split' column, calibrate "
            "on one split with --split and the 'test' split is used as held-out).")
    outcome.notices += prevalence_notices(results)
    if policies.part:
        # A count table per label cannot say which labels fired on the same part.
        outcome.parts_unavailable = (
            "no whole-part figures: they need every label's score per part, which a "
            "scores dataset's per-label count tables do not carry; run the same "
            "command with --store to get them.")
        outcome.notices.append(outcome.parts_unavailable)
    return outcome


def _non_empty(outcome: ThresholdsOutcome) -> ThresholdsOutcome:
    if not outcome.results:
        raise CalibrateError(f"{outcome.source} has no scores matching the filters.")
    return outcome


def write_thresholds(outcome: ThresholdsOutcome, path) -> Path | None:
    """Write the thresholds file of ``outcome`` (None when no label has a choice)."""
    if not outcome.calibrated:
        return None
    tf = thresholds_file_from_results(outcome.results, source=outcome.source,
                                      datasets=outcome.datasets, parts=outcome.parts)
    return write_thresholds_file(tf, path)
