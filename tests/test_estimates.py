"""Estimates: intervals against closed forms, grading at the boundaries, the thresholds."""

from __future__ import annotations

import math

import numpy as np
import pytest

from normdyn import estimates as E
from normdyn import thresholds as T

#: t_{0.975, df} for df = 2 and 4 (tables; independent of scipy).
T975 = {2: 4.302652729749464, 4: 2.7764451051977987}


@pytest.mark.parametrize("values", [[0.2, 0.3, 0.4], [1.0, 3.0, 2.0, 8.0, -1.0]])
def test_across_seeds_is_the_student_t_interval(values):
    est = E.across_seeds(values, "x", reference=0.5)
    x = np.asarray(values)
    n = x.size
    half = T975[n - 1] * x.std(ddof=1) / math.sqrt(n)
    assert est.value == pytest.approx(x.mean(), rel=1e-15)
    assert est.low == pytest.approx(x.mean() - half, rel=1e-12)
    assert est.high == pytest.approx(x.mean() + half, rel=1e-12)
    assert est.effect_size == pytest.approx((x.mean() - 0.5) / x.std(ddof=1), rel=1e-12)
    assert est.n_seeds == n and est.method == "t interval"


def test_paired_difference_and_effect_size():
    treated, control = [1.0, 2.0, 4.0], [0.5, 1.0, 3.0]
    est = E.paired_across_seeds(treated, control, "gain")
    d = np.subtract(treated, control)
    assert est.value == pytest.approx(d.mean())
    assert est.effect_size == pytest.approx(d.mean() / d.std(ddof=1))
    assert est.effect_name == "d_z (paired)"
    with pytest.raises(ValueError, match=r"^treatment and control must pair up, got \(3,\) "
                                         r"and \(2,\)$"):
        E.paired_across_seeds(treated, control[:2], "gain")


def test_degenerate_and_single_seed_estimates():
    same = E.across_seeds([0.3, 0.3, 0.3], "x")
    assert (same.low, same.high) == (0.3, 0.3)
    assert same.method == "exact (zero variance across seeds)"
    # the same grid point reached by three seeds: equal up to the last bit of a log
    rounded = E.across_seeds([0.6, 0.6 + 1.1e-16, 0.6 - 1.1e-16], "x")
    assert rounded.method == "exact (zero variance across seeds)"
    one = E.across_seeds([0.3], "x")
    assert one.method == "one seed: no interval"
    assert E.grade(one, 1.0, 2.0, better="lower") == E.NOT_TESTED
    empty = E.across_seeds([math.nan], "x")
    assert empty.n_seeds == 0 and E.grade(empty, 1.0, 2.0, better="lower") == E.NOT_TESTED


def _est(low: float, value: float, high: float, n: int = 3) -> E.Estimate:
    return E.Estimate("x", value, low, high, "t interval", n, n, 0.0, "d")


@pytest.mark.parametrize(("interval", "verdict"), [
    ((0.1, 0.2, 0.3), E.CONFIRMED),   # whole interval below the confirm threshold
    ((0.1, 0.3, 0.5), E.CONFIRMED),   # touching it counts
    ((0.1, 0.4, 0.6), E.PARTLY),
    ((0.4, 0.9, 1.2), E.PARTLY),      # straddles the null
    ((1.01, 1.1, 1.2), E.REFUTED),    # wholly on the wrong side of the null
])
def test_grade_lower_is_better(interval, verdict):
    assert E.grade(_est(*interval), 0.5, 1.0, better="lower") == verdict


@pytest.mark.parametrize(("interval", "strict", "verdict"), [
    ((0.06, 0.1, 0.2), False, E.CONFIRMED),
    ((-0.1, 0.02, 0.2), False, E.PARTLY),
    ((-0.2, -0.02, 0.1), False, E.PARTLY),
    ((-0.2, -0.02, 0.1), True, E.PARTLY),   # a point estimate alone never refutes
    ((-0.2, -0.1, 0.04), True, E.REFUTED),  # surely short of the claimed gain
    ((-0.3, -0.2, -0.1), False, E.REFUTED),
])
def test_grade_higher_is_better(interval, strict, verdict):
    assert E.grade(_est(*interval), 0.05, 0.0, better="higher", null_strict=strict) == verdict


def test_grade_needs_min_seeds_and_a_direction():
    assert E.grade(_est(0.1, 0.2, 0.3, n=T.MIN_SEEDS - 1), 0.5, 1.0,
                   better="lower") == E.NOT_TESTED
    with pytest.raises(ValueError, match=r"^better must be 'lower' or 'higher', got 'up'$"):
        E.grade(_est(0.1, 0.2, 0.3), 0.5, 1.0, better="up")


def test_stratified_bootstrap_of_a_perfect_and_a_null_association():
    rng = np.random.default_rng(3)
    x = np.arange(12.0)
    strata = [np.arange(0, 6), np.arange(6, 12)]

    def corr(y):
        def fn(idx):  # Pearson r over the pooled resample, vectorized over leading axes
            i = np.concatenate(idx, axis=-1)
            xc = x[i] - x[i].mean(-1, keepdims=True)
            yc = y[i] - y[i].mean(-1, keepdims=True)
            with np.errstate(invalid="ignore", divide="ignore"):
                return (xc * yc).sum(-1) / np.sqrt((xc**2).sum(-1) * (yc**2).sum(-1))
        return fn

    def null(y):
        def draw(idx, g, n):
            i = np.concatenate(idx)
            j = np.stack([np.concatenate([g.permutation(s) for s in idx]) for _ in range(n)])
            return np.array([np.corrcoef(x[i], y[jj])[0, 1] for jj in j])
        return draw

    perfect = E.stratified_bootstrap(strata, corr(-x), "r", n_seeds=3, null_fn=null(-x))
    assert perfect.value == pytest.approx(-1.0)
    assert perfect.high == pytest.approx(-1.0)
    assert perfect.p_value < 0.01
    noise = rng.normal(size=12)
    est = E.stratified_bootstrap(strata, corr(noise), "r", n_seeds=3, null_fn=null(noise))
    assert est.low < est.value < est.high
    assert est.p_value > 0.05
    few = E.stratified_bootstrap(strata, corr(-x), "r", n_seeds=2)
    assert math.isnan(few.low) and E.grade(few, -0.3, 0.0, better="lower") == E.NOT_TESTED


def test_every_threshold_has_a_reason_and_is_in_the_table():
    names = [t.name for t in T.THRESHOLDS]
    assert len(names) == len(set(names))
    table = T.threshold_table()
    for t in T.THRESHOLDS:
        assert t.reason and t.grades
        assert getattr(T, t.name) == pytest.approx(t.value)
        assert f"| `{t.name}` |" in table
    assert T.MIN_SEEDS == 3 and T.CONFIDENCE == 0.95


def test_log_scale_interval_is_the_t_interval_of_the_logs():
    errors = [1371.0, 311.0, 515.0]
    est = E.log_scale_across_seeds(errors, "e", reference=0.5, floor=1e-12)
    y = np.log(errors)
    half = T975[2] * y.std(ddof=1) / math.sqrt(3)
    assert est.value == pytest.approx(math.exp(y.mean()), rel=1e-12)
    assert est.low == pytest.approx(math.exp(y.mean() - half), rel=1e-12)
    assert est.high == pytest.approx(math.exp(y.mean() + half), rel=1e-12)
    assert est.scale == "log" and est.low > 0
    assert E.grade(est, 0.2, 0.5, better="lower") == E.REFUTED
    with pytest.raises(ValueError, match=r"^errors must be non-negative, got -1$"):
        E.log_scale_across_seeds([-1.0, 1.0, 2.0], "e", reference=0.5, floor=1e-12)


def test_monotone_envelope_contains_the_t_interval_and_never_has_zero_width():
    x = [0.3, 0.5, 0.9]
    plain = E.across_seeds(x, "x")
    env = E.monotone_across_seeds(x, "x", resolution=0.0)
    assert env.high >= plain.high - 1e-12
    same = E.monotone_across_seeds([0.6, 0.6, 0.6], "x", resolution=0.05)
    # low: equal seeds, so only the floor: 0.6 - t * 0.05 / sqrt(3); high: the worst of the
    # 8 corners of [0, 0.6]^3, brute force here
    assert same.low == pytest.approx(0.6 - T975[2] * 0.05 / math.sqrt(3), rel=1e-12)
    import itertools

    corners = [np.array(c) for c in itertools.product((0.0, 0.6), repeat=3)]
    high = max(c.mean() + T975[2] * math.sqrt(c.var(ddof=1) + 0.05**2) / math.sqrt(3)
               for c in corners)
    assert same.high == pytest.approx(high, rel=1e-12)
    assert same.low < same.value < same.high


def test_bootstrap_drops_degenerate_resamples_instead_of_a_nan_interval():
    x = np.array([0.0, 1.0, 2.0])

    def spread_of(idx):  # NaN when a resample draws one run three times
        v = x[idx[0]]
        with np.errstate(invalid="ignore", divide="ignore"):
            return v.std(axis=-1) / v.std(axis=-1) * v.mean(axis=-1)

    est = E.stratified_bootstrap([np.arange(3)], spread_of, "m", n_seeds=3)
    assert math.isfinite(est.low) and math.isfinite(est.high)
    assert "degenerate resamples dropped" in est.method
    # 3 of the 27 equally likely resamples are degenerate: about 11% of 2000
    n = int(est.method.split(", ")[1].split()[0])
    assert 150 < n < 300


def test_seeds_to_decide_and_the_undecidable_band():
    est = E.Estimate("x", 0.1, -0.33, 0.53, "t interval", 3, 3, 0.0, "d")
    # s = 0.86 * sqrt(3) / (2 * 4.303) = 0.1731; need t_{m-1} 0.1731/sqrt(m) < 0.1
    text = E.seeds_to_decide(est, 0.2, 0.5, better="lower")
    from scipy import stats

    s = 0.86 * math.sqrt(3) / (2 * T975[2])
    m = next(k for k in range(3, 100)
             if stats.t.ppf(0.975, k - 1) * s / math.sqrt(k) < 0.1)
    assert text == f"about {m} seeds would decide it (confirm)"
    inside = E.Estimate("x", 0.3, 0.1, 0.5, "t interval", 3, 3, 0.0, "d")
    assert E.seeds_to_decide(inside, 0.2, 0.5, better="lower") == \
        "undecidable: the effect lies inside the threshold band"


def test_infinite_effect_size_prints_inf():
    est = E.across_seeds([0.3, 0.3, 0.3], "x", reference=0.0)
    assert est.effect_size == math.inf and "Cohen's d = inf" in est.describe()
