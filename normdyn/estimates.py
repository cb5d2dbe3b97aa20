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
    "grade",
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

    def as_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in asdict(self).items()}

    def describe(self) -> str:
        """``"<statistic> = v [low, high] (method, n seeds; effect)"``."""
        p = f", p = {self.p_value:.3g}" if math.isfinite(self.p_value) else ""
        return (f"{self.statistic} = {_g(self.value)} [{_g(self.low)}, {_g(self.high)}] "
                f"({self.confidence:.0%} {self.method}, {self.n_seeds} seeds, "
                f"{self.n_units} runs; {self.effect_name} = {_g(self.effect_size)}{p})")


#: Kinds of evidence: measured torch runs with real gradients; the model (SymPy, property
#: tests, simulations, drift runs); a diagnostic shown beside the verdict, never graded.
REAL, MODEL, DIAGNOSTIC = "real", "model", "diagnostic"


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

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["estimate"] = None if self.estimate is None else self.estimate.as_dict()
        return out


def _g(x: float) -> str:
    return f"{x:.3g}" if math.isfinite(x) else "nan"


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
    the statistic over the leading axes (it is called vectorized).  ``null_fn(strata,
    rng, n)`` returns ``n`` draws of the statistic under the null (e.g. accuracy
    shuffled within strata); with it, a two-sided permutation p-value over
    ``N_RESAMPLES`` draws is attached.  The effect size is the statistic itself (a
    correlation is its own effect size).
    """
    from scipy import stats

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

    def fn(*idx: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.asarray(statistic_fn([np.moveaxis(i, axis, -1) for i in idx]))

    with warnings.catch_warnings():
        # A resample in which nothing varies gives a NaN statistic; scipy warns that the
        # distribution is degenerate and the interval then says so by being NaN.
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        warnings.simplefilter("ignore", RuntimeWarning)
        res = stats.bootstrap(tuple(data), fn, n_resamples=N_RESAMPLES, paired=False,
                              vectorized=True, method="percentile",
                              confidence_level=CONFIDENCE, rng=np.random.default_rng(seed))
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    p = math.nan
    if null_fn is not None:
        null = np.asarray(null_fn(data, np.random.default_rng(seed + 1), N_RESAMPLES))
        null = null[np.isfinite(null)]
        if null.size:
            p = float((1 + np.sum(np.abs(null) >= abs(value))) / (1 + null.size))
    return Estimate(statistic, value, low, high,
                    f"percentile bootstrap over runs within {len(data)} strata",
                    n_seeds, n_units, value, "statistic", p_value=p)


def grade(est: Estimate | None, confirm: float, null: float, *, better: str,
          null_strict: bool = False) -> str:
    """The verdict of ``est``: the interval against ``confirm`` and ``null``.

    ``better="lower"``: confirmed if ``high < confirm`` (or ``<=``), refuted if
    ``low > null``.  ``better="higher"``: confirmed if ``low > confirm``, refuted if
    ``high < null``.  ``null_strict=True`` also refutes when the point estimate is on
    the wrong side of the null ("a method that does worse is never partly").  Fewer
    than ``MIN_SEEDS`` seeds, or no finite interval: ``not tested``.
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
        if est.low > null or (null_strict and est.value > null):
            return REFUTED
        return PARTLY
    if est.low >= confirm:
        return CONFIRMED
    if est.high < null or (null_strict and est.value < null):
        return REFUTED
    return PARTLY
