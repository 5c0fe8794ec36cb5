"""Policies: what firing does, what each error costs, and which limits must hold.

This module is the one home of the *action arithmetic*. Curves are neutral (false
positives are negatives that fire, false negatives are positives that do not); a
label's ``action`` decides which of them is a false accept and which a false reject:

========  =================================  ==================================
action    false accept                       false reject
========  =================================  ==================================
reject    a positive that did not fire (FN)  a negative that fired (FP)
accept    a negative that fired (FP)         a positive that did not fire (FN)
========  =================================  ==================================

:func:`by_action` is that table; every other module (threshold choice, bootstrap,
figures, report, gate) asks :class:`Policy` or :func:`by_action` instead of deriving
the mapping again, so adding an action means editing :data:`ACTIONS` only.

Policy files (TOML, ``[defaults]`` plus ``[labels.<name>]``) are read by
:func:`load_policy_file` into a :class:`PolicySet`; errors name the file, the line and
the key.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, NamedTuple

import numpy as np

from calibrate import stats
from calibrate.checks import (
    check_confidence,
    check_cost,
    check_prevalence,
    check_rate,
)
from calibrate.errors import InputError
from calibrate.tomlfile import TomlKeyError, load_toml

__all__ = [
    "ACTIONS",
    "IF_LIMIT_UNPROVEN",
    "DEFAULT_POLICY",
    "UNITS",
    "CostWeights",
    "ErrorKinds",
    "Policy",
    "PolicyError",
    "PolicySet",
    "by_action",
    "error_names",
    "load_policy_file",
]


@dataclass(frozen=True)
class _Action:
    """How one action names the neutral errors, and what a QC engineer calls them."""

    false_accept_is_miss: bool  # is a false accept a positive that did not fire?
    false_accept_words: str
    false_reject_words: str


#: The actions a label can have. ``reject``: firing scraps the item (QC), so a missed
#: positive is a false accept. ``accept``: firing lets it through (access control), so a
#: negative that fires is a false accept.
ACTIONS: dict[str, _Action] = {
    "reject": _Action(True, "defects shipped", "good parts scrapped"),
    "accept": _Action(False, "negatives let through", "positives turned away"),
}


def _action(action: str) -> _Action:
    try:
        return ACTIONS[action]
    except (KeyError, TypeError):
        raise InputError(
            f"action must be 'reject' (firing scraps the item, QC) or 'accept' (firing "
            f"lets it through, access control), got {action!r}."
        ) from None


def by_action(action: str, misses, false_alarms):
    """``(false accept, false reject)`` versions of two neutral quantities.

    ``misses`` is about positives that did not fire (false negatives, or anything
    indexed like them: their count, their class size ``n_positive``, the word
    "positive"); ``false_alarms`` about negatives that fired. The mapping is its own
    inverse, so ``by_action(action, false_accepts, false_rejects)`` gives
    ``(misses, false_alarms)`` back.

    Parameters
    ----------
    action : {"reject", "accept"}
    misses, false_alarms : object
        Numbers, arrays, or anything else that comes in such a pair.

    Returns
    -------
    tuple
        ``(false_accept_thing, false_reject_thing)``.

    Examples
    --------
    >>> by_action("reject", "FN", "FP")
    ('FN', 'FP')
    >>> by_action("accept", "FN", "FP")
    ('FP', 'FN')
    """
    if _action(action).false_accept_is_miss:
        return misses, false_alarms
    return false_alarms, misses


def error_names(action: str) -> tuple[str, str]:
    """What a QC engineer calls the two errors of a label with this action.

    Returns
    -------
    false_accept, false_reject : str
        E.g. ``"false accept (defects shipped)"`` for ``action="reject"``.
    """
    a = _action(action)
    return f"false accept ({a.false_accept_words})", f"false reject ({a.false_reject_words})"


#: What a label deploys when no threshold can be shown to meet its limits (the policy
#: key ``if_limit_unproven``). Nothing is deployed silently: ``refuse`` (the default)
#: leaves the label out of every export until someone signs off on one of the others.
IF_LIMIT_UNPROVEN: dict[str, str] = {
    "refuse": "deploy nothing for this label until someone chooses",
    "cost_optimal": "the cost-minimal threshold, ignoring the limits",
    "protective": "the cost-minimal threshold whose observed rates meet the limits",
    "never_fire": "never fire (+inf)",
}


#: What one error is (the policy key ``unit``). ``image``: one score per image and label
#: (its highest result); ``detection``: every result matched to ground-truth objects
#: (COCO protocol, :mod:`calibrate.matching`), so a miss is one object and a false alarm
#: one detection, and cost is per image.
UNITS: dict[str, str] = {
    "image": "one decision per image and label (its highest result)",
    "detection": "one decision per detection, matched to ground-truth objects",
}


class CostWeights(NamedTuple):
    """Expected cost per item is ``miss * false_negatives + false_alarm * false_positives``.

    Attributes
    ----------
    miss : float
        Cost of one more positive that does not fire, per item, at the prevalence.
    false_alarm : float
        Cost of one more negative that fires, per item.
    prevalence : float
        The deployment prevalence used.
    """

    miss: float
    false_alarm: float
    prevalence: float


class ErrorKinds(NamedTuple):
    """Both error kinds of a label at one threshold, named by its action.

    Attributes
    ----------
    false_accepts, false_rejects : int or ndarray
        Error counts.
    n_false_accept, n_false_reject : int
        Sizes of the class each rate is about.
    false_accept_class, false_reject_class : {"positive", "negative"}
        Which class that is.
    """

    false_accepts: Any
    n_false_accept: int
    false_accept_class: str
    false_rejects: Any
    n_false_reject: int
    false_reject_class: str


class PolicyError(InputError):
    """A policy value is invalid.

    Attributes
    ----------
    key : str or None
        The :class:`Policy` field the problem is about (None when it is about the
        policy as a whole, e.g. both costs 0), so callers can point at the key's line.
    """

    def __init__(self, message: str, key: str | None = None):
        super().__init__(message)
        self.key = key


def _checked(key: str, check, *args):
    try:
        return check(*args)
    except InputError as exc:
        raise PolicyError(str(exc), key) from None


@dataclass(frozen=True)
class Policy:
    """What a label's rule does and what its errors cost.

    Parameters
    ----------
    cost_false_accept : float
        Cost of one false accept (a shipped defect for ``action="reject"``; an impostor
        let through for ``action="accept"``). Non-negative.
    cost_false_reject : float
        Cost of one false reject (a scrapped good part; a genuine user turned away).
    action : {"reject", "accept"}, default "reject"
        What firing (``score >= T``) does. ``"reject"``: the item is rejected (QC), so a
        positive that does not fire is a false accept. ``"accept"``: the item is let
        through, so a negative that fires is a false accept.
    prevalence : float, optional
        Share of positives in deployment, strictly between 0 and 1. ``None`` uses the
        calibration sample's share, which is usually wrong for defect-enriched sets.
    max_false_accept_rate, max_false_reject_rate : float, optional
        Hard limits on the rates, judged on the exact upper bound at ``confidence``.
    confidence : float, default 0.95
        One-sided confidence level of the limits' upper bounds. With both limits set,
        the level holds for the two *together*: each is tested at ``1 - (1 - c) / 2``
        (Bonferroni; see :attr:`limit_confidence`).
    if_limit_unproven : {"refuse", "cost_optimal", "protective", "never_fire"}, default "refuse"
        What to deploy when no threshold can be shown to meet the limits (see
        :data:`IF_LIMIT_UNPROVEN`). ``refuse`` exports nothing for the label.
    unit : {"image", "detection"}, default "image"
        What one error is (see :data:`UNITS`). At ``"detection"`` the positives are
        ground-truth objects (a miss is an object no kept detection matched) and the
        false alarms are kept detections that match no object; expected cost is per
        image: ``c_miss * missed objects / images + c_alarm * false detections /
        images``, with ``c_miss, c_alarm`` named by the action as at the image unit.
        ``prevalence`` is refused there (the cost is per image of the calibration set
        as sampled), and so is a limit on false detections: they are counts per image,
        not a share of a fixed number of trials, so no binomial bound applies (the
        figures show an exact Poisson bound of false detections per image instead).
    iou_threshold : float, optional
        Only with ``unit = "detection"``: the IoU at which a detection matches an
        object (default 0.5, the COCO protocol's AP50).

    Raises
    ------
    PolicyError
        Naming the field that is wrong (``.key``).
    """

    cost_false_accept: float
    cost_false_reject: float
    action: str = "reject"
    prevalence: float | None = None
    max_false_accept_rate: float | None = None
    max_false_reject_rate: float | None = None
    confidence: float = 0.95
    if_limit_unproven: str = "refuse"
    unit: str = "image"
    iou_threshold: float | None = None

    def __post_init__(self) -> None:
        _checked("action", _action, self.action)
        for name in ("cost_false_accept", "cost_false_reject"):
            _checked(name, check_cost, getattr(self, name), name)
        if self.cost_false_accept == 0 and self.cost_false_reject == 0:
            raise PolicyError(
                "cost_false_accept and cost_false_reject are both 0, so every threshold "
                "costs the same. Give at least one a positive cost (only their ratio matters)."
            )
        if self.prevalence is not None:
            _checked("prevalence", check_prevalence, self.prevalence)
        for name in ("max_false_accept_rate", "max_false_reject_rate"):
            if getattr(self, name) is not None:
                _checked(name, check_rate, getattr(self, name), name)
        _checked("confidence", check_confidence, self.confidence)
        if not isinstance(self.if_limit_unproven, str) or (
                self.if_limit_unproven not in IF_LIMIT_UNPROVEN):
            raise PolicyError(
                f"if_limit_unproven must be one of {', '.join(map(repr, IF_LIMIT_UNPROVEN))}, "
                f"got {self.if_limit_unproven!r}.",
                "if_limit_unproven",
            )
        self._check_unit()

    def _check_unit(self) -> None:
        if not isinstance(self.unit, str) or self.unit not in UNITS:
            raise PolicyError(f"unit must be one of {', '.join(map(repr, UNITS))}, got "
                              f"{self.unit!r}.", "unit")
        if self.unit == "image":
            if self.iou_threshold is not None:
                raise PolicyError(
                    "iou_threshold applies only with unit = \"detection\" (matching results "
                    "to ground-truth boxes); remove it or set unit = \"detection\".",
                    "iou_threshold")
            return
        tau = self.iou_threshold
        if tau is not None and (isinstance(tau, bool) or not isinstance(tau, (int, float))
                                or not 0 < tau <= 1):
            raise PolicyError(f"iou_threshold must be a number in (0, 1], got {tau!r}; 0.5 "
                              "is the COCO protocol's usual value.", "iou_threshold")
        if self.prevalence is not None:
            raise PolicyError(
                "prevalence applies to unit = \"image\" only: at unit = \"detection\" the "
                "cost is per image of the calibration set as sampled (objects and false "
                "detections per image), so a deployment share of positive images cannot "
                "reweight it exactly. Remove prevalence from this label's policy (one set in "
                "[defaults]: move it to the tables of the image-level labels).", "prevalence")
        alarm_limit = by_action(self.action, "max_false_accept_rate",
                                "max_false_reject_rate")[1]
        if getattr(self, alarm_limit) is not None:
            raise PolicyError(
                f"{alarm_limit} limits false detections here (unit = \"detection\", action "
                f"= {self.action!r}); false detections per image are counts, not a share of "
                "a fixed number of trials, so no binomial limit applies. Limit the missed "
                "objects instead, or use unit = \"image\".", alarm_limit)

    @property
    def detection_unit(self) -> bool:
        """True when one error is one detection or object (``unit = "detection"``)."""
        return self.unit == "detection"

    @property
    def matching_iou(self) -> float | None:
        """The IoU threshold of matching at the detection unit (default 0.5), else None."""
        if not self.detection_unit:
            return None
        return 0.5 if self.iou_threshold is None else float(self.iou_threshold)

    # -- the action arithmetic ----------------------------------------------------------

    @property
    def has_limits(self) -> bool:
        """True when the policy sets at least one rate limit."""
        return self.max_false_accept_rate is not None or self.max_false_reject_rate is not None

    @property
    def limit_confidence(self) -> float:
        """The level each limit is tested at so that all hold together at ``confidence``.

        A false-accept limit is scanned from one end of the thresholds and a
        false-reject limit from the other, so the chances that either test errs add up:
        with both set, each is tested at ``1 - (1 - confidence) / 2`` (Bonferroni),
        which keeps the joint error within ``1 - confidence``.
        """
        if len(self.limits()) > 1:
            return 1.0 - (1.0 - self.confidence) / 2.0
        return float(self.confidence)

    def prevalence_for(self, n_positive: int, n_negative: int) -> float:
        """The deployment prevalence: the policy's, or the sample's share of positives.

        At the detection unit there is none (NaN): cost is per image as sampled.
        """
        if self.detection_unit:
            return float("nan")
        if self.prevalence is not None:
            return float(self.prevalence)
        return n_positive / (n_positive + n_negative)

    def cost_weights(self, n_positive: int, n_negative: int) -> CostWeights:
        """Weights so that expected cost per item = ``miss * FN + false_alarm * FP``.

        reject: ``c_FA * pi * FNR + c_FR * (1 - pi) * FPR``;
        accept: ``c_FA * (1 - pi) * FPR + c_FR * pi * FNR``.

        At ``unit = "detection"``, ``n_positive`` is the number of ground-truth objects
        and ``n_negative`` the number of images (false detections are counted per
        image), and the cost per image is ``c_miss * FN / images + c_alarm * FP /
        images``.
        """
        pi = self.prevalence_for(n_positive, n_negative)
        c_miss, c_alarm = by_action(self.action, self.cost_false_accept, self.cost_false_reject)
        if self.detection_unit:
            return CostWeights(c_miss / n_negative, c_alarm / n_negative, pi)
        return CostWeights(c_miss * pi / n_positive, c_alarm * (1.0 - pi) / n_negative, pi)

    def expected_cost(self, false_negatives, false_positives, n_positive: int, n_negative: int):
        """Expected cost per item at the deployment prevalence (scalar or array)."""
        w = self.cost_weights(n_positive, n_negative)
        return w.miss * false_negatives + w.false_alarm * false_positives

    def errors(self, false_negatives, false_positives, n_positive: int,
               n_negative: int) -> ErrorKinds:
        """Neutral counts at a threshold named as false accepts and false rejects."""
        fa, fr = by_action(self.action, false_negatives, false_positives)
        n_fa, n_fr = by_action(self.action, n_positive, n_negative)
        about_fa, about_fr = by_action(self.action, *(
            ("object", "image") if self.detection_unit else ("positive", "negative")))
        return ErrorKinds(fa, n_fa, about_fa, fr, n_fr, about_fr)

    def upper_bounds(self, errs: ErrorKinds) -> tuple[float, float]:
        """Exact one-sided upper bounds (at ``confidence``) of the two named rates.

        Clopper-Pearson for a share of a class. At the detection unit false detections
        are counted per image, which is not binomial (an image can hold several), so
        their bound is the exact Poisson one (:func:`stats.poisson_rate_upper`).

        Returns
        -------
        false_accept_upper, false_reject_upper : float
        """
        miss, alarm = stats.clopper_pearson_upper, stats.clopper_pearson_upper
        if self.detection_unit:
            alarm = stats.poisson_rate_upper
        fa, fr = by_action(self.action, miss, alarm)
        return (float(fa(errs.false_accepts, errs.n_false_accept, self.confidence)),
                float(fr(errs.false_rejects, errs.n_false_reject, self.confidence)))

    def error_allowances(self, n_positive: int, n_negative: int) -> tuple[float, float]:
        """Largest false-negative and false-positive counts that still meet the limits.

        Because the exact upper bound increases with the error count, a threshold meets
        a limit exactly when its error count is at most the allowance.

        Returns
        -------
        allow_false_negatives, allow_false_positives : float
            ``inf`` where the policy sets no limit; ``-1`` where no count can meet it.
        """
        n_fa, n_fr = by_action(self.action, n_positive, n_negative)
        allow_fa = allow_fr = np.inf
        conf = self.limit_confidence
        if self.max_false_accept_rate is not None:
            allow_fa = stats.max_errors_within(n_fa, self.max_false_accept_rate, conf)
        if self.max_false_reject_rate is not None:
            allow_fr = stats.max_errors_within(n_fr, self.max_false_reject_rate, conf)
        return by_action(self.action, allow_fa, allow_fr)

    def limits(self) -> list[tuple[str, float]]:
        """The policy's limits as ``(error, limit)``, false accept first."""
        out = []
        if self.max_false_accept_rate is not None:
            out.append(("false_accept", float(self.max_false_accept_rate)))
        if self.max_false_reject_rate is not None:
            out.append(("false_reject", float(self.max_false_reject_rate)))
        return out

    # -- construction -------------------------------------------------------------------

    @classmethod
    def from_mapping(cls, mapping: dict[str, Any], *, where: str = "policy") -> Policy:
        """Build a policy from a mapping such as a TOML table, naming unknown keys.

        Parameters
        ----------
        mapping : dict
            Keys are the field names of :class:`Policy`.
        where : str
            Where the mapping came from (``"policy.toml [labels.scratch]"``), used in
            error messages.

        Raises
        ------
        PolicyError
            With ``.key`` set to the offending key.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(mapping) - known)
        if unknown:
            raise PolicyError(
                f"{where}: unknown key(s) {', '.join(unknown)}; allowed keys are "
                f"{', '.join(sorted(known))}.",
                unknown[0],
            )
        missing = [k for k in ("cost_false_accept", "cost_false_reject") if k not in mapping]
        if missing:
            raise PolicyError(f"{where}: missing {' and '.join(missing)}.", missing[0])
        try:
            return cls(**mapping)
        except PolicyError as exc:
            raise PolicyError(f"{where}: {exc}", exc.key) from None

    def to_dict(self) -> dict[str, Any]:
        """The policy as a plain dict (JSON/TOML friendly)."""
        return asdict(self)


#: The policy used when none is given: equal costs, no limits, the sample's prevalence.
DEFAULT_POLICY = {"cost_false_accept": 1, "cost_false_reject": 1}


@dataclass(frozen=True)
class PolicySet:
    """Per-label policies: shared defaults plus per-label overrides.

    Attributes
    ----------
    defaults : dict
        Keys of :class:`Policy` that apply to every label.
    labels : dict of str to dict
        Per-label keys; they win over ``defaults``.
    source : str
        Where the set came from, for error messages.
    locator : calibrate.tomlfile.KeyLocator, optional
        When the set was read from a TOML file: finds the line of a key, so a bad value
        found only when a label's policy is built still names the file and line.
    """

    defaults: dict[str, Any] = field(default_factory=dict)
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = "policy"
    locator: Any = field(default=None, repr=False, compare=False)
    overridden: frozenset = field(default=frozenset(), repr=False, compare=False)
    #: The ``[part]`` table as written (whole-part costs, limits and review band); it is
    #: checked by :func:`calibrate.parts.part_policy`, which names its lines.
    part: dict = field(default_factory=dict)

    @classmethod
    def default(cls) -> PolicySet:
        """The set used when no policy is given: :data:`DEFAULT_POLICY` for every label."""
        return cls(dict(DEFAULT_POLICY), source="equal costs, no limits (no policy given)")

    def with_defaults(self, overrides: dict[str, Any]) -> PolicySet:
        """A copy whose defaults are updated with ``overrides`` (None values ignored)."""
        given = {k: v for k, v in overrides.items() if v is not None}
        return PolicySet({**self.defaults, **given}, self.labels, self.source, self.locator,
                         self.overridden | set(given), self.part)

    def for_label(self, label: str) -> Policy:
        """The policy of ``label``: defaults, then the label's own table.

        Raises
        ------
        PolicyError
            Naming the source, the table and (read from a file) the line of the key.
        """
        where = self.source if label not in self.labels else f"{self.source} [labels.{label}]"
        try:
            return Policy.from_mapping({**self.defaults, **self.labels.get(label, {})},
                                       where=where)
        except PolicyError as exc:
            line = None
            from_file = exc.key is not None and (
                exc.key in self.labels.get(label, {}) or exc.key not in self.overridden)
            if self.locator is not None and from_file:
                line = self.locator.line(self.origin(label, exc.key) + (exc.key,))
            if line is None:
                raise
            raise PolicyError(f"{exc} (line {line} of {self.source})", exc.key) from None

    def origin(self, label: str | None, key: str) -> tuple[str, ...]:
        """The table a label's value of ``key`` comes from: ``("labels", label)`` when the
        label's own table sets it, else ``("defaults",)``."""
        if label is not None and key in self.labels.get(label, {}):
            return ("labels", label)
        return ("defaults",)

    def validate(self, locator=None) -> PolicySet:
        """Check every key, every label's policy and the defaults; returns ``self``.

        Parameters
        ----------
        locator : calibrate.tomlfile.KeyLocator, optional
            When the set came from a TOML file: errors then name its line and key.

        Raises
        ------
        PolicyError or TomlKeyError
        """
        return self.check_keys(locator).check_values(locator)

    def check_keys(self, locator=None) -> PolicySet:
        """Refuse keys that are not :class:`Policy` fields (typos); returns ``self``."""
        known = {f.name for f in fields(Policy)}
        tables = [(("defaults",), self.defaults)] + [
            (("labels", k), v) for k, v in self.labels.items()
        ]
        for path, table in tables:
            for key in table:
                if key not in known:
                    self._raise(locator, path + (key,), PolicyError(
                        f"unknown policy key; allowed keys are {', '.join(sorted(known))}.", key))
        return self

    def check_values(self, locator=None) -> PolicySet:
        """Build every label's policy (and the defaults', when complete), so a bad or
        missing value is reported at the key it comes from; returns ``self``."""
        checks = [(label, {**self.defaults, **tbl}) for label, tbl in self.labels.items()]
        if "cost_false_accept" in self.defaults and "cost_false_reject" in self.defaults:
            checks.append((None, dict(self.defaults)))
        for label, mapping in checks:
            try:
                Policy.from_mapping(mapping, where="")
            except PolicyError as exc:
                text = str(exc).removeprefix(": ")
                if exc.key is None:
                    path = ("labels", label) if label is not None else ("defaults",)
                elif exc.key not in mapping:  # a missing cost: say where to set it
                    path = (("labels", label) if label is not None else ("defaults",)) + (exc.key,)
                    text = f"{text.rstrip('.')}: set it in [defaults] or in this table."
                else:
                    path = self.origin(label, exc.key) + (exc.key,)
                self._raise(locator, path, PolicyError(text, exc.key))
        return self

    def _raise(self, locator, path: tuple, exc: PolicyError):
        if locator is None:
            raise PolicyError(f"{self.source}: {exc}", exc.key)
        raise locator.error(path, str(exc))


def load_policy_file(path) -> PolicySet:
    """Read a TOML policy file.

    The file has an optional ``[defaults]`` table and one ``[labels.<name>]`` table per
    label that needs its own settings; keys are those of :class:`Policy`::

        [defaults]
        action = "reject"
        cost_false_accept = 50     # a shipped defect
        cost_false_reject = 1      # a scrapped good part
        confidence = 0.95

        [labels.crack]
        prevalence = 0.0008
        max_false_accept_rate = 0.001

    Parameters
    ----------
    path : str or Path

    Returns
    -------
    PolicySet

    Raises
    ------
    InputError
        Naming the file (and the line, for TOML syntax errors) and what is wrong.
    """
    data, loc = load_toml(path, "policy file")
    p = loc.path
    unknown = sorted(set(data) - {"defaults", "labels", "part"})
    if unknown:
        raise loc.error(
            (unknown[0],),
            f"policy file {p}: unknown table(s) {', '.join(unknown)}; use [defaults], "
            "[labels.<label name>] and [part].",
        )
    part = data.get("part", {})
    if not isinstance(part, dict):
        raise loc.error(("part",), f"policy file {p}: [part] must be a table of keys.")
    defaults = data.get("defaults", {})
    labels = data.get("labels", {})
    if not isinstance(defaults, dict) or not isinstance(labels, dict) or not all(
        isinstance(v, dict) for v in labels.values()
    ):
        raise InputError(
            f"policy file {p}: [defaults] and each [labels.<name>] must be tables of keys."
        )
    known = {f.name for f in fields(Policy)}
    for where, path, table in [("[defaults]", ("defaults",), defaults)] + [
        (f"[labels.{k}]", ("labels", k), v) for k, v in labels.items()
    ]:
        bad = sorted(set(table) - known)
        if bad:
            line = loc.line(path + (bad[0],))
            raise TomlKeyError(
                f"policy file {p} {where}" + (f" (line {line})" if line else "")
                + f": unknown key(s) {', '.join(bad)}; allowed keys are "
                f"{', '.join(sorted(known))}.",
                path=p, line=line, key=".".join(map(str, path + (bad[0],))),
            )
    return PolicySet(dict(defaults), {k: dict(v) for k, v in labels.items()}, str(p), loc,
                     part=dict(part))
