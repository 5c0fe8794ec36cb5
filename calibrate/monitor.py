"""Production monitoring without labels: are the deployed cutoffs still seeing what they
were calibrated on?

After deployment there are scores and no truth. :func:`monitor_scores` compares a table
of production scores (:func:`read_production_scores`) of the deployed model version
with that version's calibration data (the store's count table the thresholds file was
chosen from) and reports per label, and per time window when times are given:

* **Firing rate** at the deployed cutoff ``T``, against its *expected interval*. On the
  line a part fires with probability ``q = pi TPR + (1 - pi) FPR`` (``pi`` the policy's
  line prevalence, TPR / FPR the calibration rates at ``T``). The interval for the number
  of parts that fire among ``n`` is a binomial prediction interval that also carries the
  calibration sample's uncertainty: exact Clopper-Pearson intervals of TPR and FPR, each
  at ``1 - a/4``, give ``[q_lo, q_hi]``; the interval is ``[binom.ppf(a/4; n, q_lo),
  binom.isf(a/4; n, q_hi)]``. So a firing count outside it has probability at most
  ``a`` when nothing changed.
* **Score-distribution shift**: the two-sample Kolmogorov-Smirnov statistic between the
  production scores and the calibration scores *reweighted to the line's prevalence*
  (positives by ``pi / pi_sample``, negatives by ``(1 - pi) / (1 - pi_sample)``: the
  labeled set is enriched, production is not), with the p-value of
  :data:`scipy.stats.kstwo` at the effective sizes (``(sum w)^2 / sum w^2`` for the
  reference; as scikit-learn / scipy's asymptotic two-sample test); "no result" ranks
  below every score. And the population stability index over the reference's ten
  weighted deciles (plus a "no result" bin), counts smoothed by half an image:
  :data:`PSI_WATCH` (0.1) "watch", :data:`PSI_ALARM` (0.2) alarm, judged only for
  windows of at least :data:`PSI_MIN_IMAGES` images (below, PSI's own noise reaches 0.2).
* **Estimated defect rate and error rates** at ``T``, from the calibration map at the
  line's prevalence (confidence-based performance estimation): with ``p_i = P(present |
  s_i)``, the defect rate is ``mean p_i``, missed positives ``sum_{not fired} p_i / sum
  p_i``, negatives fired ``sum_{fired} (1 - p_i) / sum (1 - p_i)``, named false accept /
  false reject by the label's action. **Assumption: the score -> probability relation
  did not change** (only how often each score occurs may have); a shift alarm says it
  may have. Intervals are 95% prediction intervals of the *realised* rates: the map is
  refitted on stratified bootstrap resamples of its calibration table, and the
  production images' truths drawn from each refitted map.

False alarms
------------
The firing-rate and KS tests are run for every label and window; each is tested at
``alpha / (labels x windows x 2)`` (Bonferroni), so with nothing changed the chance of
any such alarm in a run is at most ``alpha`` (0.05 by default). PSI alarms are a
convention, not a test; with at least 200 images per window their chance under no
change is negligible (PSI is then about ``chi2_9 x (1/n + 1/m)``).

Exit codes of ``calibrate monitor``: 0 no alarm, 1 alarm, 2 bad input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from calibrate.curves import CountTable
from calibrate.errors import InputError
from calibrate.io import jsonable
from calibrate.policy import by_action
from calibrate.probability import CalibrationMap, fit_calibration_map, map_bootstrap
from calibrate.score_meaning import Composition, mixture_probability, version_composition
from calibrate.thresholds import format_figure, format_rate
from calibrate.thresholds_file import ThresholdEntry, ThresholdsFile

__all__ = [
    "ALARM",
    "OK",
    "PRODUCTION_COLUMNS",
    "PSI_ALARM",
    "PSI_MIN_IMAGES",
    "PSI_WATCH",
    "LabelWindow",
    "MonitorReport",
    "firing_interval",
    "label_next",
    "monitor_scores",
    "population_stability_index",
    "read_production_scores",
    "weighted_ks",
]

OK, ALARM = "ok", "alarm"
PRODUCTION_COLUMNS = ("image_id", "label", "score", "model_version")
PSI_WATCH, PSI_ALARM = 0.1, 0.2
PSI_MIN_IMAGES = 200
_TESTS_PER_LABEL = 2  # firing rate and KS: the Bonferroni family per label and window
_DRAWS_PER_MAP = 5


# ---------------------------------------------------------------------------------------
# Reading production scores
# ---------------------------------------------------------------------------------------


def read_production_scores(path):
    """Read production scores without truth (CSV or Parquet), one row per result.

    Columns ``image_id, label, score, model_version``; optional ``time`` (ISO 8601 or
    anything pandas parses; naive times are taken as UTC), ``detector`` and ``image``
    (a path or URI, copied into label-next manifests). An empty score (empty CSV cell,
    Parquet null) is "no result"; a NaN score is an error (a failed call). An image
    where the detector returned nothing at all must still appear once, with an empty
    label and score, or the firing rate's denominator misses it.

    Returns
    -------
    pandas.DataFrame
        Columns ``image_id, label, score, model_version, detector, time, image`` (label
        ``""`` for an image without results; time NaT when not given).

    Raises
    ------
    InputError
        Naming the file and line.
    """
    import pandas as pd

    from calibrate.scores_table import _read_raw, _scores

    p = Path(path)
    raw, where, nan = _read_raw(p)
    missing = [c for c in PRODUCTION_COLUMNS if c not in raw.columns]
    if missing:
        raise InputError(
            f"{p}: missing column(s) {', '.join(missing)}; found "
            f"{', '.join(map(str, raw.columns))}. Production scores need "
            f"{', '.join(PRODUCTION_COLUMNS)} (optional: time, detector, image)."
        )
    if len(raw) == 0:
        raise InputError(f"{p}: the production table has no rows.")
    scores = _scores(raw, where, nan)
    text = {c: raw[c].fillna("").astype(str).str.strip() for c in
            ("image_id", "label", "model_version")}
    for c in ("image_id", "model_version"):
        blank = (text[c] == "").to_numpy()
        if blank.any():
            raise InputError(f"{where[int(np.flatnonzero(blank)[0])]}: {c} is empty.")
    nolabel = (text["label"] == "").to_numpy() & np.isfinite(scores)
    if nolabel.any():
        raise InputError(f"{where[int(np.flatnonzero(nolabel)[0])]}: a score without a label; "
                         "only an image with no result at all has an empty label (and score).")
    time = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns, UTC]")
    if "time" in raw.columns:
        col = raw["time"]
        given = col.notna() & (col.astype(str).str.strip() != "")
        parsed = pd.to_datetime(col.where(given), utc=True, errors="coerce", format="mixed")
        bad = (given & parsed.isna()).to_numpy()
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(f"{where[i]}: time {col.iloc[i]!r} is not a date and time "
                             "(use ISO 8601, e.g. 2026-12-01T08:00:00Z).")
        time = parsed
    det = (raw["detector"].fillna("").astype(str) if "detector" in raw.columns
           else pd.Series("", index=raw.index))
    img = (raw["image"].fillna("").astype(str) if "image" in raw.columns
           else pd.Series("", index=raw.index))
    return pd.DataFrame({
        "image_id": text["image_id"].to_numpy(), "label": text["label"].to_numpy(),
        "score": scores, "model_version": text["model_version"].to_numpy(),
        "detector": det.to_numpy(), "time": time.to_numpy(), "image": img.to_numpy(),
    })


# ---------------------------------------------------------------------------------------
# The statistics
# ---------------------------------------------------------------------------------------


def firing_interval(table: CountTable, threshold: float, prevalence: float, n: int,
                    alpha: float, *, composition: Composition | None = None,
                    label: str | None = None) -> tuple[float, int, int]:
    """Expected firing probability on the line and the prediction interval of the count.

    Parameters
    ----------
    table : CountTable
        Calibration data.
    threshold : float
    prevalence : float
        The line's prevalence of the label.
    n : int
        Production images.
    alpha : float
        Chance of a count outside the interval when nothing changed (at most).
    composition : Composition, optional
        Weigh every class by its line share (``label`` names the label): ``q = sum_c
        pi_c a_c`` over all classes instead of ``pi TPR + (1 - pi) FPR``.

    Returns
    -------
    (q, low, high)
        The line's firing probability from the calibration counts; ``low <= fired <=
        high`` is the interval: ``[q_lo, q_hi]`` from exact per-class intervals (together
        at ``1 - alpha/2``), then binomial tails of ``alpha/4`` each at those ends.
    """
    from scipy.stats import binom

    if composition is not None:
        fired = composition.scores[label] >= threshold
        q, q_lo, q_hi = composition.probability(None, fired, 1.0 - alpha / 2.0)
    else:
        fires = table.scores >= threshold
        k = [int(table.n_positive[fires].sum()), int(table.n_negative[fires].sum())]
        q, q_lo, q_hi = mixture_probability(
            k, [table.total_positive, table.total_negative], [prevalence, 1 - prevalence],
            None, 1.0 - alpha / 2.0)
    low = int(binom.ppf(alpha / 4.0, n, q_lo)) if n else 0
    high = int(binom.isf(alpha / 4.0, n, q_hi)) if n else 0
    return q, low, min(high, n)


def _reference_weights(table: CountTable, prevalence: float) -> tuple[np.ndarray, np.ndarray]:
    """Scores of the calibration table and their weights at the line's prevalence."""
    n_pos, n_neg = table.total_positive, table.total_negative
    sample = n_pos / (n_pos + n_neg)
    w = table.n_positive * (prevalence / sample) + table.n_negative * ((1 - prevalence) / (1 - sample))
    return table.scores, w.astype(np.float64)


def weighted_ks(production, ref_scores, ref_weights) -> tuple[float, float]:
    """Two-sample KS statistic between production scores and a weighted reference.

    Returns
    -------
    (statistic, p_value)
        The p-value is :data:`scipy.stats.kstwo`'s survival function at the effective
        size ``n m / (n + m)``, ``m = (sum w)^2 / sum w^2`` (with equal weights this is
        ``scipy.stats.ks_2samp(..., method="asymp")``). Ties and ``-inf`` are allowed.
    """
    from scipy.stats import kstwo

    x = np.sort(np.asarray(production, dtype=np.float64))
    s = np.asarray(ref_scores, dtype=np.float64)
    w = np.asarray(ref_weights, dtype=np.float64)
    keep = w > 0
    s, w = s[keep], w[keep]
    order = np.argsort(s, kind="stable")
    s, w = s[order], w[order]
    grid = np.unique(np.concatenate([x, s]))
    f_prod = np.searchsorted(x, grid, side="right") / x.size
    cw = np.concatenate([[0.0], np.cumsum(w)])
    f_ref = cw[np.searchsorted(s, grid, side="right")] / cw[-1]
    d = float(np.max(np.abs(f_prod - f_ref)))
    m = w.sum() ** 2 / (w ** 2).sum()
    en = x.size * m / (x.size + m)
    return d, float(kstwo.sf(d, max(int(round(en)), 1)))


def population_stability_index(production, ref_scores, ref_weights, n_bins: int = 10) -> float:
    """PSI of production scores against a weighted reference.

    Bins: the reference's weighted ``n_bins``-quantiles of its finite scores, plus one
    bin for "no result" (``-inf``) when either side has any. Counts get half an image
    added per bin on both sides, so an empty bin stays finite.
    """
    x = np.asarray(production, dtype=np.float64)
    s = np.asarray(ref_scores, dtype=np.float64)
    w = np.asarray(ref_weights, dtype=np.float64)
    fin = np.isfinite(s)
    order = np.argsort(s[fin])
    sf, wf = s[fin][order], w[fin][order]
    cum = np.cumsum(wf) / wf.sum()
    inner = sf[np.minimum(np.searchsorted(cum, np.arange(1, n_bins) / n_bins), sf.size - 1)]
    edges = np.unique(inner)

    def shares(v, wt):
        b = np.where(np.isfinite(v), np.searchsorted(edges, v, side="right") + 1, 0)
        return np.bincount(b, weights=wt, minlength=edges.size + 2)

    e = shares(s, w)
    a = shares(x, np.ones_like(x))
    has = (e > 0) | (a > 0)
    has[1:] = True  # every score bin counts, empty or not
    e_n = e[has] / e.sum() * (w.sum() ** 2 / (w ** 2).sum())  # effective counts
    a_n = a[has]
    pe = (e_n + 0.5) / (e_n.sum() + 0.5 * e_n.size)
    pa = (a_n + 0.5) / (a_n.sum() + 0.5 * a_n.size)
    return float(np.sum((pa - pe) * np.log(pa / pe)))


# ---------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelWindow:
    """The monitor's findings for one label in one time window.

    Attributes
    ----------
    label : str
    window : str or None
        Start of the window (ISO 8601), None for the whole file.
    n_images, n_fired : int
    threshold : float or None
        The deployed cutoff (None when the label is not deployed).
    firing_rate, expected_firing_rate : float or None
    firing_low, firing_high : int or None
        The prediction interval of ``n_fired``.
    ks_statistic, ks_pvalue, psi : float
    defect_rate, false_accept_rate, false_reject_rate : float or None
        Estimated from the calibration map (see the module docstring).
    defect_rate_interval, false_accept_rate_interval, false_reject_rate_interval : tuple
    alarms : tuple of str
        Why the window alarms (empty: ok).
    notes : tuple of str
    """

    label: str
    window: str | None
    n_images: int
    n_fired: int | None
    threshold: float | None
    firing_rate: float | None
    expected_firing_rate: float | None
    firing_low: int | None
    firing_high: int | None
    ks_statistic: float
    ks_pvalue: float
    psi: float
    defect_rate: float | None = None
    defect_rate_interval: tuple[float, float] | None = None
    false_accept_rate: float | None = None
    false_accept_rate_interval: tuple[float, float] | None = None
    false_reject_rate: float | None = None
    false_reject_rate_interval: tuple[float, float] | None = None
    alarms: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def status(self) -> str:
        return ALARM if self.alarms else OK

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in self.__dataclass_fields__}
        d["status"] = self.status
        return jsonable(d)


#: Columns of the terminal table and the Markdown table.
COLUMNS = ("label", "window", "images", "fired (expected)", "KS p / PSI",
           "est. defect rate", "est. FA / FR", "status")


def _interval(v, iv) -> str:
    if v is None:
        return "-"
    return f"{format_rate(v)} [{format_rate(iv[0])}, {format_rate(iv[1])}]"


@dataclass(frozen=True)
class MonitorReport:
    """Everything :func:`monitor_scores` found, with the rules it used.

    Attributes
    ----------
    detector, model_version : str
    rows : list of LabelWindow
    alpha, alpha_per_test : float
        The run's false-alarm level and each test's Bonferroni share of it.
    n_tests : int
    window : str or None
    source : str
    """

    detector: str
    model_version: str
    rows: list[LabelWindow]
    alpha: float
    alpha_per_test: float
    n_tests: int
    window: str | None = None
    source: str = ""
    assumptions: tuple[str, ...] = field(default_factory=tuple)

    @property
    def outcome(self) -> str:
        return ALARM if any(r.alarms for r in self.rows) else OK

    @property
    def exit_code(self) -> int:
        return 1 if self.outcome == ALARM else 0

    def cells(self, r: LabelWindow) -> list[str]:
        """One table row of a label and window."""
        fired = "-" if r.n_fired is None else (
            f"{r.n_fired:,} ({r.firing_low:,}-{r.firing_high:,})")
        return [
            r.label, r.window or "all", f"{r.n_images:,}", fired,
            f"{format_figure(r.ks_pvalue, 2)} / {r.psi:.3f}",
            _interval(r.defect_rate, r.defect_rate_interval),
            "-" if r.false_accept_rate is None else
            f"{format_rate(r.false_accept_rate)} / {format_rate(r.false_reject_rate)}",
            ("ALARM: " + "; ".join(r.alarms) if r.alarms else "ok")
            + "".join(f"; {x}" for x in r.notes),
        ]

    def title(self) -> str:
        return (f"Production monitor: {self.detector} {self.model_version}: "
                f"{'ALARM' if self.outcome == ALARM else 'no alarm'}")

    def rules_text(self) -> str:
        return (f"Firing-rate and KS tests each at {format_figure(self.alpha_per_test, 2)} "
                f"(Bonferroni: {self.alpha:g} over {self.n_tests} tests), PSI alarm above "
                f"{PSI_ALARM} (windows of >= {PSI_MIN_IMAGES} images). Estimated rates assume "
                "the score -> probability relation did not change.")

    def to_dict(self) -> dict[str, Any]:
        return jsonable({
            "outcome": self.outcome, "detector": self.detector,
            "model_version": self.model_version, "source": self.source,
            "window": self.window, "alpha": self.alpha,
            "alpha_per_test": self.alpha_per_test, "n_tests": self.n_tests,
            "psi_watch": PSI_WATCH, "psi_alarm": PSI_ALARM,
            "psi_min_images": PSI_MIN_IMAGES, "assumptions": list(self.assumptions),
            "labels": [r.to_dict() for r in self.rows],
        })

    def to_markdown(self) -> str:
        def esc(s: str) -> str:
            return s.replace("|", "\\|")

        lines = [f"### {esc(self.title())}", "", "| " + " | ".join(COLUMNS) + " |",
                 "|" + "---|" * len(COLUMNS)]
        lines += ["| " + " | ".join(esc(c) for c in self.cells(r)) + " |" for r in self.rows]
        lines += ["", self.rules_text(), ""]
        lines += [f"- {esc(a)}" for a in self.assumptions]
        return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------
# Monitoring
# ---------------------------------------------------------------------------------------


def _deployed(tf: ThresholdsFile, detector, model_version) -> list[ThresholdEntry]:
    return tf.one_version(detector, model_version,
                          why="the monitor compares production with one deployed version, but",
                          options="--detector and --model-version")


def _check_versions(production, det: str, ver: str, source: str) -> None:
    versions = sorted(set(production["model_version"]))
    other = [v for v in versions if v != ver]
    if other:
        raise InputError(
            f"{source}: production scores of model version {', '.join(other)}, but the "
            f"thresholds file deploys {det} {ver}; a cutoff and a calibration map hold for "
            "their own version only. Monitor each version against its own thresholds file "
            "(filter the rows), or calibrate the new version first."
        )
    dets = sorted(set(production["detector"]) - {""})
    if dets and dets != [det]:
        raise InputError(f"{source}: production scores of detector {', '.join(dets)}, but the "
                         f"thresholds file is for {det}.")


def _calibration_table(store, e: ThresholdEntry, split: str | None) -> CountTable:
    """The count table the entry was chosen from, checked against its recorded counts."""
    table = store.count_table(e.detector, e.model_version, e.label, split=split,
                              dataset=e.dataset)
    if e.n_positive is not None and (table.total_positive, table.total_negative) != (
            e.n_positive, e.n_negative):
        raise InputError(
            f"{e.label} ({e.detector} {e.model_version}): the store's "
            + (f"split {split!r}" if split else "data")
            + f" has {table.total_positive:,} positives and {table.total_negative:,} "
            f"negatives, but the thresholds file was chosen from {e.n_positive:,} and "
            f"{e.n_negative:,}: pass the --split the thresholds were chosen on."
        )
    return table


def _image_scores(production, label: str) -> tuple[np.ndarray, np.ndarray]:
    """Image ids (all images) and each one's image-level score for ``label``."""
    ids = np.unique(production["image_id"].to_numpy())
    mine = production[production["label"] == label]
    best = mine.groupby("image_id")["score"].max()
    s = best.reindex(ids).to_numpy(np.float64)
    return ids, np.where(np.isnan(s), -np.inf, s)


def _estimates(p_boot: np.ndarray, p_hat: np.ndarray, fired: np.ndarray, action: str,
               rng: np.random.Generator, confidence: float = 0.95) -> dict[str, Any]:
    """Estimated defect, false-accept and false-reject rates with prediction intervals."""
    def rates(p, y=None):
        pos = p if y is None else y
        n_pos = pos.sum(axis=-1)
        miss = (pos * ~fired).sum(axis=-1)
        fa_neg = ((1 - pos) * fired).sum(axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            fnr = miss / n_pos
            fpr = fa_neg / (p.shape[-1] - n_pos)
        fa, fr = by_action(action, fnr, fpr)
        return n_pos / p.shape[-1], fa, fr

    point = rates(p_hat)
    # Each refitted map draws several realisations of the truth: the map's uncertainty
    # needs fewer refits than the truth's needs draws.
    p_rep = np.repeat(p_boot, _DRAWS_PER_MAP, axis=0)
    y = (rng.random(p_rep.shape) < p_rep).astype(np.float64)
    draws = rates(p_rep, y)
    a = (1 - confidence) / 2
    out = {}
    for name, v, d in zip(("defect_rate", "false_accept_rate", "false_reject_rate"), point, draws):
        lo, hi = np.nanquantile(d, [a, 1 - a])
        out[name] = float(v)
        out[f"{name}_interval"] = (float(lo), float(hi))
    return out


def _windows(production, window: str | None) -> list[tuple[str | None, np.ndarray]]:
    """``(window start, image ids)`` per window; an image belongs to the window of its
    earliest row."""
    import pandas as pd

    if window is None:
        return [(None, np.unique(production["image_id"].to_numpy()))]
    if production["time"].isna().any():
        raise InputError("--window needs a time on every row; the production file has rows "
                         "without one.")
    first = production.groupby("image_id")["time"].min()
    try:
        start = first.dt.floor(window)
    except (ValueError, TypeError):
        raise InputError(f"--window {window!r} is not a time span pandas understands "
                         "(e.g. 1D, 12h, 30min).") from None
    return [(pd.Timestamp(k).isoformat(), np.sort(g.index.to_numpy()))
            for k, g in first.groupby(start, sort=True)]


@dataclass(frozen=True)
class _LineModel:
    """One label's calibration data and map for the line (computed once per run)."""

    table: CountTable
    prevalence: float
    cmap: CalibrationMap
    data: Any  # what the map was fitted on: a CountTable or (scores, positive, weight)
    ref_scores: np.ndarray
    ref_weights: np.ndarray


def _line_models(store, entries: list[ThresholdEntry], split, seed: int,
                 only=None) -> tuple[dict[str, _LineModel], Composition | None, str]:
    """Per deployed label (or those in ``only``): its calibration table, line prevalence
    and map for the line, weighing every class by its line share when the images allow
    (:func:`calibrate.score_meaning.version_composition`), else the odds correction."""
    det, ver = entries[0].detector, entries[0].model_version
    tables = {e.label: _calibration_table(store, e, split) for e in entries}
    prev = {e.label: e.prevalence if e.prevalence is not None else
            tables[e.label].total_positive / (tables[e.label].total_positive
                                              + tables[e.label].total_negative)
            for e in entries}
    comp = version_composition(store, det, ver, prev, split=split, dataset=entries[0].dataset)
    if isinstance(comp, Composition):
        weighing = ("Each class (no label, each label) is weighed by its line share from "
                    "the policy: a label's negatives on the line are mostly parts without "
                    "any label, unlike the enriched labeled set.")
    else:
        weighing = (f"Pure label shift assumed (the classes cannot be weighed: {comp}): a "
                    "label's positives and negatives look the same in the labeled set and "
                    "on the line.")
        comp = None
    models = {}
    for e in entries:
        if only is not None and e.label not in only:
            continue
        table, pi = tables[e.label], prev[e.label]
        if comp is not None:
            data = (comp.scores[e.label], comp.positive(e.label), comp.weights())
            cmap = fit_calibration_map(data[0], data[1], weight=data[2], label=e.label,
                                       detector=det, model_version=ver, seed=seed)
            ref_s, ref_w = data[0], data[2]
        else:
            data = table
            cmap = fit_calibration_map(table, prevalence=pi, label=e.label, detector=det,
                                       model_version=ver, seed=seed)
            ref_s, ref_w = _reference_weights(table, pi)
        models[e.label] = _LineModel(table, pi, cmap, data, ref_s, ref_w)
    return models, comp, weighing


def monitor_scores(
    production,
    tf: ThresholdsFile,
    store,
    *,
    detector: str | None = None,
    model_version: str | None = None,
    split: str | None = "calibration",
    window: str | None = None,
    alpha: float = 0.05,
    n_resamples: int = 100,
    seed: int = 0,
    source: str = "",
) -> MonitorReport:
    """Compare production scores of the deployed version with its calibration data.

    Parameters
    ----------
    production : pandas.DataFrame
        From :func:`read_production_scores`.
    tf : ThresholdsFile
        The deployed thresholds (one detector and version).
    store : calibrate.store.ScoreStore
        Holds the deployed version's calibration data.
    detector, model_version : str, optional
        Choose the deployed version when the file holds several.
    split : str or None, default "calibration"
        The split the thresholds were chosen on (checked against the file's counts).
    window : str, optional
        A pandas time span (``1D``, ``12h``): one set of findings per window.
    alpha : float, default 0.05
        The run's false-alarm level (Bonferroni-split over labels, windows and tests).
    n_resamples : int, default 100
        Bootstrap refits of each calibration map for the estimated rates' intervals
        (each draws five realisations of the production images' truth).
    seed : int, default 0
    source : str
        The production file's name, for messages.

    Returns
    -------
    MonitorReport
        ``exit_code`` 0 no alarm, 1 alarm.

    Raises
    ------
    InputError
        On production scores of another version, a store that does not hold the data
        the thresholds were chosen from, or a bad window.
    """
    entries = [e for e in _deployed(tf, detector, model_version) if e.calibrated]
    det, ver = entries[0].detector, entries[0].model_version
    _check_versions(production, det, ver, source or "production scores")
    windows = _windows(production, window)
    n_tests = max(len(entries) * len(windows) * _TESTS_PER_LABEL, 1)
    a_test = alpha / n_tests
    rng = np.random.default_rng(seed)
    models, comp, weighing = _line_models(store, entries, split, seed)
    rows = []
    for e in entries:
        lm = models[e.label]
        ids, scores = _image_scores(production, e.label)
        uniq, inv = np.unique(scores, return_inverse=True)
        boot = map_bootstrap(lm.cmap, lm.data, uniq, n_resamples=n_resamples, seed=seed)
        for name, members in windows:
            pos = np.searchsorted(ids, members)
            rows.append(_judge(e, name, scores[pos], lm.table, lm.prevalence, lm.cmap,
                               boot[:, inv[pos]], lm.ref_scores, lm.ref_weights, a_test, rng,
                               comp))
    unwatched = sorted(set(production["label"]) - {e.label for e in entries} - {""})
    assumptions = (
        weighing,
        "Estimated rates assume the score -> probability relation did not change.",
        *([f"Not monitored (no deployed cutoff): {', '.join(unwatched)}."] if unwatched else []),
    )
    return MonitorReport(det, ver, rows, alpha, a_test, n_tests, window, source, assumptions)


def _judge(e: ThresholdEntry, window, s, table, pi, cmap: CalibrationMap, boot, ref_s, ref_w,
           a_test, rng, comp: Composition | None) -> LabelWindow:
    n = int(s.size)
    alarms, notes = [], []
    ks, ks_p = weighted_ks(s, ref_s, ref_w)
    psi = population_stability_index(s, ref_s, ref_w)
    if ks_p < a_test:
        alarms.append(f"score distribution moved (KS {ks:.3f}, p {format_figure(ks_p, 2)})")
    if psi > PSI_ALARM and n >= PSI_MIN_IMAGES:
        alarms.append(f"PSI {psi:.2f} > {PSI_ALARM}")
    elif psi > PSI_WATCH and n >= PSI_MIN_IMAGES:
        notes.append(f"PSI {psi:.2f}: watch")
    elif n < PSI_MIN_IMAGES:
        notes.append(f"PSI not judged: {n} images (< {PSI_MIN_IMAGES})")
    kw: dict[str, Any] = {}
    if e.deployable:
        t = float(e.threshold)
        fired = s >= t
        q, lo, hi = firing_interval(table, t, pi, n, a_test, composition=comp, label=e.label)
        k = int(fired.sum())
        if not lo <= k <= hi:
            alarms.append(f"{k} fired, expected {lo}-{hi} at {format_figure(t, 4)}")
        p_hat = cmap.predict(s)
        kw = dict(n_fired=k, threshold=t, firing_rate=k / n if n else None,
                  expected_firing_rate=q, firing_low=lo, firing_high=hi,
                  **_estimates(boot, p_hat, fired, e.action, rng))
    else:
        notes.append(f"no cutoff deployed (decision {e.effective_decision!r}): firing rate "
                     "and error rates not checked")
        kw = dict(n_fired=None, threshold=None, firing_rate=None, expected_firing_rate=None,
                  firing_low=None, firing_high=None)
    return LabelWindow(e.label, window, n, ks_statistic=ks, ks_pvalue=ks_p, psi=psi,
                       alarms=tuple(alarms), notes=tuple(notes), **kw)


# ---------------------------------------------------------------------------------------
# Which images to label next
# ---------------------------------------------------------------------------------------


def label_next(production, tf: ThresholdsFile, store, *, n: int = 50,
               detector: str | None = None, model_version: str | None = None,
               split: str | None = "calibration", labels: list[str] | None = None,
               seed: int = 0) -> list[dict[str, Any]]:
    """Production images whose labels would most tighten an unproven limit's bound.

    For every deployed label whose limits are unproven, the bound at the deployed cutoff
    needs more images of the limited class (positives for a false-accept limit under
    ``reject``, ...). Images are ranked by the calibration map's probability of being
    of that class at the line's prevalence, so each labeled image adds as many of them
    as possible; images closest to the cutoff come first among equals.

    Caveat, stated with the manifest: images chosen by score are not a random sample of
    the class, so once labeled they belong in a *fresh* labeled set scored and
    calibrated as usual (together with a random sample), not appended to the calibration
    split as if drawn at random.

    Returns
    -------
    list of dict
        Manifest lines ``{"id", "image", "labels": null, "split": "to-label",
        "ask": label, "score", "p_present", "why"}``: a person fills ``labels``.
    """
    deployed = [e for e in _deployed(tf, detector, model_version) if e.calibrated]
    entries = [e for e in deployed if e.status == "limits_unproven"
               and (labels is None or e.label in labels)]
    if not entries:
        return []
    models, _, _ = _line_models(store, deployed, split, seed, only={e.label for e in entries})
    out = []
    for e in entries:
        cmap = models[e.label].cmap
        ids, s = _image_scores(production, e.label)
        p = cmap.predict(s)
        need_pos = any(c[0] == "false_accept" for c in e.policy.limits()) == (e.action == "reject")
        want = p if need_pos else 1 - p
        t = e.threshold if math.isfinite(e.threshold) else 0.0
        order = np.lexsort((np.abs(s - t), -want))[:n]
        paths = production.drop_duplicates("image_id").set_index("image_id")["image"]
        cls = "positive" if need_pos else "negative"
        for i in order:
            out.append(dict(id=str(ids[i]), image=str(paths.get(ids[i], "")) or str(ids[i]),
                            labels=None, split="to-label", ask=e.label,
                            score=float(s[i]), p_present=float(p[i]),
                            why=f"likely {cls} for {e.label}'s unproven limit "
                                f"(P = {p[i]:.3g}); selected by score, not at random"))
    return out

