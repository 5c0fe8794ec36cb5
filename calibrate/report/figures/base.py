"""What every per-label display shares: its constructors, and the one place they compute.

A display is computed once and drawn many times, as scikit-learn's
``RocCurveDisplay(fpr=..., tpr=...)``: ``__init__`` stores arrays that are already
computed, ``plot`` only draws them, and the ``from_*`` class methods compute them.
All of those meet in :meth:`_LabelDisplay.from_result`, which takes a
:class:`~calibrate.thresholds.LabelThreshold` (table, curve, choice, policy, floor) and
never chooses a threshold or builds a curve again. ``from_count_table`` and
``from_store`` first make such a result with :func:`_analyse`: the only function of the
figures that builds a curve or chooses a threshold.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

from calibrate.curves import CountTable, ErrorCurve, count_table, error_curve
from calibrate.errors import InputError, NoRankingInformationWarning
from calibrate.policy import Policy
from calibrate.thresholds import (
    LabelThreshold,
    ThresholdChoice,
    choose_threshold_from_curve,
    evaluate_threshold,
    recorded_detection_floor,
)

from .common import _plain, new_axes

__all__ = ["OPTION_TITLES", "shown_option", "threshold_kind"]

#: The rules a figure assumes when it is given no policy: "reject" on fire, 95%
#: bands, no limits. Used to name the errors and to read the rates at a given
#: threshold, never to choose one.
_NO_POLICY = Policy(1, 1)


def _as_policy(policy) -> Policy | None:
    if policy is None or isinstance(policy, Policy):
        return policy
    if isinstance(policy, dict):
        return Policy.from_mapping(policy, where="policy")
    raise InputError(f"policy must be a calibrate.Policy or a dict, got {type(policy).__name__}.")


def _analyse(
    table: CountTable,
    policy,
    *,
    choose: bool,
    needs_curve: bool = True,
    label: str | None = None,
    detection_floor: float | None = None,
    detector: str = "",
    model_version: str = "",
    dataset: str | None = None,
    split: str | None = None,
) -> LabelThreshold:
    """The curve of ``table`` and, when ``choose`` and a policy is given, its choice.

    ``needs_curve=False`` (the histogram) tolerates a table with one class only: it
    can still be drawn, it just has no error curve.
    """
    policy = _as_policy(policy)
    try:
        curve = error_curve(table)
    except InputError:
        if needs_curve or (choose and policy is not None):
            raise
        curve = None
    choice = None
    if choose and policy is not None:
        with warnings.catch_warnings():
            # The flag is part of the choice's status; a figure should not warn again.
            warnings.simplefilter("ignore", NoRankingInformationWarning)
            choice = choose_threshold_from_curve(curve, policy)
    return LabelThreshold(detector, model_version, label or "", choice, policy=policy,
                          table=table, curve=curve, detection_floor=detection_floor,
                          dataset=dataset, split=split)


@dataclass(frozen=True)
class _Inputs:
    """A result made ready to draw: the threshold to mark and how it came about."""

    table: CountTable
    curve: ErrorCurve | None
    policy: Policy | None
    choice: ThresholdChoice | None
    threshold: float | None
    kind: str
    label: str | None
    detection_floor: float | None

    @property
    def rules(self) -> Policy:
        """The policy, or what a figure assumes without one."""
        return self.policy if self.policy is not None else _NO_POLICY


def _inputs(result: LabelThreshold, threshold: float | None) -> _Inputs:
    """Which threshold of ``result`` to mark: its choice, or ``threshold`` evaluated."""
    policy = result.policy
    if policy is None and result.choice is not None:
        policy = result.choice.policy
    choice, kind = result.choice, "chosen"
    if threshold is not None:
        t = float(threshold)
        if math.isnan(t):
            raise InputError("threshold must be a number, got NaN.")
        kind = "given"
        choice = None
        if result.curve is not None:
            choice = evaluate_threshold(result.curve, t, policy or _NO_POLICY)
    else:
        t = None if choice is None else choice.threshold
        kind = threshold_kind(choice)
    return _Inputs(result.table, result.curve, policy, choice, t, kind,
                   result.label or None, result.detection_floor)


#: How an option is named in figures and tables.
OPTION_TITLES = {
    "cost_optimal": "cost-optimal",
    "protective": "protective",
    "never_fire": "never fire",
    "always_fire": "always fire",
}


def shown_option(choice: ThresholdChoice | None) -> str | None:
    """Name of the option a choice's own fields describe when its limits are not met.

    The deployed one under sign-off; under ``refuse`` the protective option (else the
    cost-optimal one), shown for information only. None when the limits hold.
    """
    if choice is None or not choice.options:
        return None
    if choice.needs_sign_off:
        return choice.decision
    names = [o.name for o in choice.options]
    return next((n for n in ("protective", "cost_optimal") if n in names), None)


def threshold_kind(choice: ThresholdChoice | None) -> str:
    """How the marked threshold came about, for legends: "chosen" when the limits hold
    (or there are none); otherwise the option, and whether it is deployed at all."""
    name = shown_option(choice)
    if name is None:
        return "chosen"
    title = OPTION_TITLES.get(name, name.replace("_", " "))
    return f"{title} (needs sign-off)" if choice.needs_sign_off else f"{title} (not deployed)"


class _LabelDisplay:
    """Constructors shared by every per-label display.

    Subclasses implement ``_from_inputs(inputs, name, plot_kwargs)``: compute what the
    display draws from an :class:`_Inputs`, and return the unplotted display.
    """

    _what = "figure"
    _needs_curve = True

    @classmethod
    def _from_inputs(cls, inputs: _Inputs, name, plot_kwargs):  # pragma: no cover
        raise NotImplementedError

    @classmethod
    def from_result(
        cls,
        result: LabelThreshold,
        *,
        ax=None,
        name: str | None = None,
        threshold: float | None = None,
        **plot_kwargs,
    ):
        """Build the display from an analysis that is already computed, and plot it.

        Nothing is chosen and no curve is built: the display marks
        ``result.choice.threshold``, or ``threshold`` evaluated on ``result.curve``
        (rates, bounds and cost of a given threshold, e.g. a deployed one).

        Parameters
        ----------
        result : calibrate.thresholds.LabelThreshold
            With ``table``, ``curve``, ``choice``, ``policy`` and ``detection_floor``,
            as :func:`calibrate.thresholds.choose_thresholds_from_store` returns them.
        ax : matplotlib Axes, optional
            Draw here (overlaying what is there); default a new figure.
        name : str, optional
            Legend prefix (for overlays); without it the title names the detector and
            model version of the result.
        threshold : float, optional
            Mark this threshold instead of the chosen one.
        **plot_kwargs
            Passed to :meth:`plot`.

        Returns
        -------
        display
            Plotted (``ax_`` and ``figure_`` set).

        Raises
        ------
        InputError
            When the result has nothing to draw (a label that could not be calibrated).
        """
        if result.table is None or (cls._needs_curve and result.curve is None):
            why = result.problem or "the result carries no count table and curve"
            raise InputError(
                f"cannot draw {cls._what} of {result.label!r} ({result.detector} "
                f"{result.model_version}): {why}."
            )
        disp = cls._from_inputs(_inputs(result, threshold), name, plot_kwargs)
        disp.plot(ax=ax, **plot_kwargs)
        if name is None and plot_kwargs.get("show_title", True) and (
                result.detector or result.model_version):
            # One version per axes: its name belongs in the title, not in every legend entry.
            disp.ax_.set_title(
                f"{_plain(result.label)} · {_plain(result.detector)} "
                f"{_plain(result.model_version)}: {cls._what}",
                fontsize="medium",
            )
        return disp

    @classmethod
    def from_count_table(
        cls,
        table: CountTable,
        *,
        policy: Policy | dict | None = None,
        threshold: float | None = None,
        label: str | None = None,
        name: str | None = None,
        detection_floor: float | None = None,
        ax=None,
        **plot_kwargs,
    ):
        """Build from a count table and plot.

        Parameters
        ----------
        table : CountTable
        policy : Policy or dict, optional
            Gives the action (which error is which), the confidence of the bands, the
            limits, and, unless ``threshold`` is given, the chosen threshold. Without
            it: ``action="reject"``, 95%, no threshold.
        threshold : float, optional
            Mark this threshold instead (e.g. a deployed one); nothing is chosen.
        label, name : str, optional
            Label name and model name (legend, title).
        detection_floor : float, optional
            Scores below it are never reported (censored); shaded.
        ax : matplotlib Axes, optional
        **plot_kwargs
            Passed to :meth:`plot`.

        Returns
        -------
        display
        """
        result = _analyse(table, policy, choose=threshold is None, needs_curve=cls._needs_curve,
                          label=label, detection_floor=detection_floor)
        return cls.from_result(result, ax=ax, name=name, threshold=threshold, **plot_kwargs)

    @classmethod
    def from_predictions(cls, scores, positive, **kwargs):
        """Build the display from raw scores and truth, and plot it.

        Parameters
        ----------
        scores : array-like of float, shape (n,)
            One score per image in the detector's scale, ``-inf`` for no result.
        positive : array-like of bool, shape (n,)
            True where the label is really present.
        **kwargs
            As for :meth:`from_count_table` (``policy``, ``threshold``, ``label``,
            ``name``, ``detection_floor``, ``ax``, ...).

        Returns
        -------
        display
        """
        return cls.from_count_table(count_table(scores, positive), **kwargs)

    @classmethod
    def from_store(
        cls,
        store,
        detector: str,
        model_version: str,
        label: str,
        *,
        split: str | None = None,
        dataset: str | None = None,
        name: str | None = None,
        detection_floor: float | None = None,
        policy: Policy | dict | None = None,
        threshold: float | None = None,
        ax=None,
        **plot_kwargs,
    ):
        """Build the display from a score store, and plot it.

        The label's count table is aggregated inside the store, so this costs no more
        than choosing the threshold. The detection floor defaults to the one recorded
        with the version's runs.

        Parameters
        ----------
        store : calibrate.store.ScoreStore
        detector, model_version, label : str
        split, dataset : str, optional
            Only images of this split / dataset (e.g. ``split="calibration"``).
        name : str, optional
            Legend prefix (for overlays); default none, and the title names the
            detector and model version.
        detection_floor : float, optional
            Overrides the floor recorded with the runs.
        policy, threshold, ax, **plot_kwargs
            As for :meth:`from_count_table`.

        Returns
        -------
        display
        """
        table = store.count_table(detector, model_version, label, split=split, dataset=dataset)
        if detection_floor is None:
            detection_floor = recorded_detection_floor(store, detector, model_version)
        result = _analyse(table, policy, choose=threshold is None, needs_curve=cls._needs_curve,
                          label=label, detection_floor=detection_floor, detector=detector,
                          model_version=model_version, dataset=dataset, split=split)
        return cls.from_result(result, ax=ax, name=name, threshold=threshold, **plot_kwargs)

    def _axes(self, ax):
        if ax is None:
            ax = new_axes()
        self.ax_ = ax
        self.figure_ = ax.figure
        return ax
