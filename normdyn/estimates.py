r"""Measured statistics with their 95% interval and effect size, and how they are graded.

An :class:`Estimate` carries what :mod:`scipy.stats` result objects carry: the
statistic, its confidence interval and the method, plus the number of seeds and an
effect size.  Three routes build one, all from :mod:`scipy.stats`:

:func:`across_seeds`
    One value per seed; Student-t interval of the mean (``scipy.stats.ttest_1samp``,
    exact under normality).  Effect size: Cohen's :math:`d = (\bar x - x_0)/s` against
    the reference :math:`x_0` (the null or the threshold).
:func:`paired_across_seeds`
    One pair per seed (treatment, control); t interval of the mean difference
    (``ttest_rel``).  Effect size: :math:`d_z = \bar\Delta/s_\Delta`.
:func:`stratified_bootstrap`
    A statistic of whole runs (a correlation): percentile bootstrap that resamples the
    runs of every stratum independently (``scipy.stats.bootstrap`` with one index
    sample per stratum, ``paired=False``), and optionally a permutation p-value.

With 3 seeds a t interval is wide (:math:`t_{0.975,2} = 4.30`); that is the honest
price of 3 seeds, not a defect.  Zero variance across seeds (a deterministic
statistic) gives the degenerate interval ``[x, x]`` and says so in ``method``.

:func:`grade` turns an estimate into a verdict against a confirm threshold and a
null (see :mod:`normdyn.thresholds`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from normdyn.thresholds import CONFIDENCE, MIN_SEEDS, N_RESAMPLES

__all__ = [
    "Estimate",
    "Item",
    "REAL",
    "MODEL",
    "DIAGNOSTIC",
    "across_seeds",
    "paired_across_seeds",
    "stratified_bootstrap",
    "log_scale_across_seeds",
    "log_ratio_across_seeds",
    "monotone_across_seeds",
    "grade",
    "seeds_to_decide",
    "POSITIVE",
    "FINDING",
    "CONFIRMED",
    "REFUTED",
    "PARTLY",
    "NOT_TESTED",
    "VERDICTS",
]

CONFIRMED, REFUTED, PARTLY, NOT_TESTED = "confirmed", "refuted", "partly", "not tested"
VERDICTS = (CONFIRMED, REFUTED, PARTLY, NOT_TESTED)


@dataclass(frozen=True)
class Estimate:
    """A statistic, its interval at ``confidence``, the method and an effect size."""

    statistic: str
    value: float
    low: float
    high: float
    method: str
    n_seeds: int
    n_units: int
    effect_size: float
    effect_name: str
    confidence: float = CONFIDENCE
    p_value: float = math.nan
    unit_name: str = "runs"
    #: ``"linear"`` or ``"log"``: the scale the interval was built on (``value``, ``low``
    #: and ``high`` are always shown on the natural scale).
    scale: str = "linear"

    def as_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in asdict(self).items()}

    def describe(self) -> str:
        """``"<statistic> = v [low, high] (method, n seeds; effect)"``."""
        p = f", p = {self.p_value:.3g}" if math.isfinite(self.p_value) else ""
        return (f"{self.statistic} = {_g(self.value)} [{_g(self.low)}, {_g(self.high)}] "
                f"({self.confidence:.0%} {self.method}, {self.n_seeds} seeds, "
                f"{self.n_units} {self.unit_name}; {self.effect_name} = {_g(self.effect_size)}{p})")


#: Kinds of evidence: measured torch runs with real gradients; the model (SymPy, property
#: tests, simulations, drift runs); a diagnostic shown beside the verdict, never graded;
#: a positive control of the measuring pipeline (a case whose answer is known: if it fails,
#: the real items of that claim cannot stand); a finding reported with its interval.
REAL, MODEL, DIAGNOSTIC = "real", "model", "diagnostic"
POSITIVE, FINDING = "positive control", "finding"


@dataclass(frozen=True)
class Item:
    """One graded piece of evidence for a claim.

    ``kind`` is :data:`REAL`, :data:`MODEL` or :data:`DIAGNOSTIC`.  A real item carries
    its :class:`Estimate`, the ``threshold`` it was graded against and the ``control``
    (or null) it is compared with.  ``primary`` real items carry the claim; a secondary
    one (``primary=False``) can only lower a confirmation to ``partly``.  ``required``
    model items must be tested for the model side to count as consistent.
    """

    kind: str
    source: str
    verdict: str
    evidence: str
    estimate: Estimate | None = None
    threshold: str = ""
    control: str = ""
    primary: bool = True
    required: bool = True
    command: str = ""
    #: why a verdict is what it is beyond the interval, e.g. ``"uninformative: ..."``
    #: for a ``not tested`` whose control did not learn; shown as ``verdict (qualifier)``.
    qualifier: str = ""

    def verdict_text(self) -> str:
        return f"{self.verdict} ({self.qualifier})" if self.qualifier else self.verdict

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["estimate"] = None if self.estimate is None else self.estimate.as_dict()
        return out


def _g(x: float) -> str:
    if math.isnan(x):
        return "nan"
    return f"{x:.3g}" if math.isfinite(x) else ("inf" if x > 0 else "-inf")


def _finite(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    return arr[np.isfinite(arr)]


def across_seeds(values: Sequence[float], statistic: str, *, reference: float = 0.0,
                 n_units: int | None = None) -> Estimate:
    """Mean of one value per seed with its t interval; Cohen's d against ``reference``."""
    from scipy import stats

    x = _finite(values)
    n = int(x.size)
    if n == 0:
        return Estimate(statistic, math.nan, math.nan, math.nan, "no finite value", 0,
                        n_units or 0, math.nan, "Cohen's d")
    mean = float(x.mean())
    sd = float(x.std(ddof=1)) if n > 1 else math.nan
    # Seeds that agree to rounding (an argmin on the same grid point) have no variance.
    if n > 1 and sd <= 1e-12 * max(abs(mean), np.finfo(float).tiny):
        sd = 0.0
    if n > 1 and sd > 0:
        with warnings.catch_warnings():
            # nearly identical seeds: scipy warns of cancellation in the variance, which
            # x.std above already computed stably; the interval is then simply narrow.
            warnings.simplefilter("ignore", RuntimeWarning)
            ci = stats.ttest_1samp(x, reference).confidence_interval(CONFIDENCE)
        low, high, method = float(ci.low), float(ci.high), "t interval"
        d = (mean - reference) / sd
    elif n > 1:
        low = high = mean
        method = "exact (zero variance across seeds)"
        d = math.copysign(math.inf, mean - reference) if mean != reference else 0.0
    else:
        low, high, method, d = -math.inf, math.inf, "one seed: no interval", math.nan
    return Estimate(statistic, mean, low, high, method, n, n_units or n, float(d),
                    "Cohen's d")


def paired_across_seeds(treatment: Sequence[float], control: Sequence[float],
                        statistic: str, *, n_units: int | None = None) -> Estimate:
    """Mean paired difference ``treatment - control`` over seeds; effect size d_z."""
    t = np.asarray(treatment, dtype=np.float64)
    c = np.asarray(control, dtype=np.float64)
    if t.shape != c.shape:
        raise ValueError(f"treatment and control must pair up, got {t.shape} and {c.shape}")
    est = across_seeds(t - c, statistic, reference=0.0, n_units=n_units)
    return replace(est, effect_name="d_z (paired)")


def log_scale_across_seeds(errors: Sequence[float], statistic: str, *,
                           reference: float, floor: float,
                           n_units: int | None = None) -> Estimate:
    r"""Geometric mean of one non-negative error per seed, t interval on the log scale.

    With :math:`y_s = \ln\max(e_s, \text{floor})` the interval is
    :math:`\exp(\bar y \pm t_{0.975,n-1} s_y/\sqrt n)`: always positive, so an error can
    lie wholly above a refute line (a t interval of the raw errors runs below zero and never
    can).  Cohen's d is :math:`(\bar y - \ln \text{reference})/s_y`.
    """
    e = _finite(errors)
    if np.any(e < 0):
        raise ValueError(f"errors must be non-negative, got {e.min():g}")
    y = np.log(np.maximum(e, floor))
    est = across_seeds(y, statistic, reference=math.log(reference), n_units=n_units)
    return replace(est, value=math.exp(est.value), low=_exp_or(est.low),
                   high=_exp_or(est.high), method=f"{est.method} on the log scale",
                   scale="log")


def _exp_or(x: float) -> float:
    if math.isnan(x):
        return x
    return math.exp(x) if math.isfinite(x) else (math.inf if x > 0 else 0.0)


def log_ratio_across_seeds(treatment: Sequence[float], control: Sequence[float],
                           statistic: str, *, floor: float,
                           n_units: int | None = None) -> Estimate:
    """Geometric-mean ratio ``treatment/control`` over paired seeds (t on the log scale)."""
    t = np.maximum(np.asarray(treatment, dtype=np.float64), floor)
    c = np.maximum(np.asarray(control, dtype=np.float64), floor)
    est = paired_across_seeds(np.log(t), np.log(c), statistic, n_units=n_units)
    return replace(est, value=math.exp(est.value), low=_exp_or(est.low),
                   high=_exp_or(est.high), method=f"{est.method} of log ratios",
                   scale="log")


def _t_bounds(x: np.ndarray, floor_sd: float) -> tuple[float, float]:
    from scipy import stats

    n = x.size
    sd = math.sqrt(float(x.var(ddof=1)) + floor_sd**2)
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * sd / math.sqrt(n)
    return float(x.mean()) - half, float(x.mean()) + half


def monotone_across_seeds(values: Sequence[float], statistic: str, *, resolution: float,
                          reference: float = 0.0) -> Estimate:
    r"""Mean of non-negative per-seed distances with a t interval made monotone in every seed.

    A t interval of the mean is not monotone in the seeds (moving one seed further can
    shrink the variance and pull the upper end down), and seeds that agree give a zero-width
    interval.  Here the standard deviation has a floor, the measurement resolution
    :math:`\sigma_r` (``resolution``): :math:`s = \sqrt{s_x^2 + \sigma_r^2}`; and the ends are
    the monotone envelopes over the box :math:`B(x) = [0, x_1]\times\dots\times[0, x_n]` of
    every way of moving seeds towards 0,

    .. math:: \text{high}(x) = \max_{x'\in B(x)} (\bar x' + t\,s(x')/\sqrt n),\qquad
              \text{low}(x) = \max_{x'\in B(x)} (\bar x' - t\,s(x')/\sqrt n).

    Both grow when any seed moves further from 0 (the box grows), so no verdict can get
    milder.  ``high`` is a convex maximum over a box, attained at a vertex (all
    :math:`2^n` are tried, ``n <= 12``); ``low`` is a concave maximum, attained at a clipped
    vector :math:`\min(x, L)` (the most equal vector of a given sum below :math:`x`), found
    over ``L`` on the seeds and a fine grid between them.  ``high`` contains the plain t
    upper end, ``low`` can exceed the plain t lower end: the interval leans towards the
    refutation.
    """
    x = _finite(values)
    if np.any(x < 0):
        raise ValueError(f"values must be non-negative, got {x.min():g}")
    n = int(x.size)
    if n < 2:
        return replace(across_seeds(x, statistic, reference=reference), scale="linear")
    if n > 12:
        raise ValueError(f"values: at most 12 seeds for the monotone envelope, got {n}")
    import itertools

    high = max(_t_bounds(np.where(mask, x, 0.0), resolution)[1]
               for mask in itertools.product((False, True), repeat=n)
               for mask in [np.array(mask)])
    levels = np.unique(np.concatenate([x, np.linspace(x.min(), x.max(), 257)]))
    low = max(_t_bounds(np.minimum(x, level), resolution)[0] for level in levels)
    sd = math.sqrt(float(x.var(ddof=1)) + resolution**2)
    return Estimate(statistic, float(x.mean()), max(low, 0.0), high,
                    f"t interval, monotone envelope, sd floor {resolution:.2g}", n, n,
                    (float(x.mean()) - reference) / sd, "Cohen's d")


def stratified_bootstrap(
    strata: Sequence[np.ndarray],
    statistic_fn: Callable[[Sequence[np.ndarray]], Any],
    statistic: str,
    *,
    n_seeds: int,
    null_fn: Callable[[Sequence[np.ndarray], np.random.Generator, int], np.ndarray]
    | None = None,
    seed: int = 0,
) -> Estimate:
    """Percentile bootstrap of ``statistic_fn(strata)``, resampling within each stratum.

    ``strata`` holds one array of run indices per stratum.  ``statistic_fn`` takes the
    list of (resampled) index arrays, each of shape ``(..., n_stratum)``, and returns
    the statistic over the leading axes (it is called vectorized).  ``N_RESAMPLES``
    resamples draw every stratum's runs with replacement, independently.  A resample in
    which nothing varies gives a NaN statistic: such resamples are dropped and counted
    (NaN-robust); with more than half of them NaN there is no interval.  ``null_fn(strata,
    rng, n)`` returns ``n`` draws of the statistic under the null (e.g. accuracy shuffled
    within strata); with it, a two-sided permutation p-value is attached.  The effect size
    is the statistic itself (a correlation is its own effect size).
    """
    data = [np.asarray(s) for s in strata if len(s) > 0]
    n_units = int(sum(len(s) for s in data))
    value = float(statistic_fn(data)) if data else math.nan
    if not data or not math.isfinite(value) or any(len(s) < 2 for s in data):
        return Estimate(statistic, value, math.nan, math.nan, "too few runs per stratum",
                        n_seeds, n_units, value, "statistic")
    if n_seeds < MIN_SEEDS:
        return Estimate(statistic, value, math.nan, math.nan,
                        f"fewer than {MIN_SEEDS} seeds: no interval", n_seeds, n_units, value,
                        "statistic")
    rng = np.random.default_rng(seed)
    resampled = [s[rng.integers(0, len(s), size=(N_RESAMPLES, len(s)))] for s in data]
    boot = np.asarray(statistic_fn(resampled), dtype=np.float64).ravel()
    finite = boot[np.isfinite(boot)]
    n_nan = int(boot.size - finite.size)
    note = f", {n_nan} degenerate resamples dropped" if n_nan else ""
    if finite.size < boot.size / 2:
        return Estimate(statistic, value, math.nan, math.nan,
                        f"bootstrap degenerate ({n_nan}/{boot.size} resamples NaN)", n_seeds,
                        n_units, value, "statistic")
    alpha = (1 - CONFIDENCE) / 2
    low, high = (float(q) for q in np.quantile(finite, [alpha, 1 - alpha]))
    p = math.nan
    if null_fn is not None:
        null = np.asarray(null_fn(data, np.random.default_rng(seed + 1), N_RESAMPLES))
        null = null[np.isfinite(null)]
        if null.size:
            p = float((1 + np.sum(np.abs(null) >= abs(value))) / (1 + null.size))
    return Estimate(statistic, value, low, high,
                    f"percentile bootstrap over runs within {len(data)} strata{note}",
                    n_seeds, n_units, value, "statistic", p_value=p)


def grade(est: Estimate | None, confirm: float, null: float, *, better: str,
          null_strict: bool = False) -> str:
    """The verdict of ``est``: the interval against ``confirm`` and ``null``.

    ``better="lower"``: confirmed if ``high <= confirm``, refuted if ``low > null``.
    ``better="higher"``: confirmed if ``low >= confirm``, refuted if ``high < null``.
    ``null_strict=True`` also refutes when the whole interval misses the confirm side
    (``high < confirm``, resp. ``low > confirm``): "a method that surely does not reach
    the claimed gain is refuted, never partly"; a point estimate alone never refutes.
    Fewer than ``MIN_SEEDS`` seeds, or no finite interval: ``not tested``.
    """
    if better not in ("lower", "higher"):
        raise ValueError(f"better must be 'lower' or 'higher', got {better!r}")
    if est is None or est.n_seeds < MIN_SEEDS:
        return NOT_TESTED
    if not (math.isfinite(est.value) and not math.isnan(est.low) and not math.isnan(est.high)):
        return NOT_TESTED
    if better == "lower":
        if est.high <= confirm:
            return CONFIRMED
        if est.low > null or (null_strict and est.low > confirm):
            return REFUTED
        return PARTLY
    if est.low >= confirm:
        return CONFIRMED
    if est.high < null or (null_strict and est.high < confirm):
        return REFUTED
    return PARTLY


def seeds_to_decide(est: Estimate | None, confirm: float, null: float, *, better: str,
                    max_seeds: int = 1000) -> str:
    r"""How many seeds would decide a *partly* verdict at the observed effect and variance.

    The per-seed standard deviation is recovered from the interval,
    :math:`s = (\text{high}-\text{low})\sqrt n/(2 t_{0.975,n-1})` (on the estimate's own
    scale: log for log-scale estimates), and the smallest ``m`` is sought for which
    :math:`\bar x \pm t_{0.975,m-1}s/\sqrt m` clears the confirm threshold or the null.
    A mean inside the band between them can never be decided: ``"undecidable: the effect
    lies inside the threshold band"``.
    """
    from scipy import stats

    if est is None or not (math.isfinite(est.low) and math.isfinite(est.high)) \
            or est.n_seeds < 2 or not math.isfinite(est.value):
        return "no interval to extrapolate"
    f = math.log if est.scale == "log" else float
    try:
        m, lo, hi, c, z = (f(v) for v in (est.value, est.low, est.high, confirm, null))
    except ValueError:
        return "no interval to extrapolate"
    n = est.n_seeds
    s = (hi - lo) * math.sqrt(n) / (2 * float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)))
    good = m < c if better == "lower" else m > c
    bad = m > z if better == "lower" else m < z
    if not (good or bad):
        return "undecidable: the effect lies inside the threshold band"
    target = c if good else z
    if s == 0:
        return f"{max(n, MIN_SEEDS)} seeds would decide it ({'confirm' if good else 'refute'})"
    for k in range(max(n, MIN_SEEDS), max_seeds + 1):
        half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, k - 1)) * s / math.sqrt(k)
        if abs(m - target) > half:
            return f"about {k} seeds would decide it ({'confirm' if good else 'refute'})"
    return f"more than {max_seeds} seeds would be needed"
