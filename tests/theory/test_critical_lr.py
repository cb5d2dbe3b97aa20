"""The critical learning rate (THEORY.md section 4) against a brute-force lr scan.

Oracle: the one-step spread S(eta) = max F(eta a)/min F(eta a) computed in this file with
its own F, on a dense log grid of learning rates around the claimed eta*.
"""

from __future__ import annotations

import mpmath as mp
import numpy as np
import pytest
from hypothesis import example, given, target
from hypothesis import strategies as st
from strategies import elr_vectors, elrs, learning_rates
from tolerances import rtol

from normdyn.theory import numeric as N

# Grid: eta* * 10^x for x in [-4, 4], 8001 points: resolution 1e-3 decades.
GRID_EXP = np.linspace(-4.0, 4.0, 8001)
STEP = GRID_EXP[1] - GRID_EXP[0]
# S is a ratio of two F values, each a few roundings: compare with this slack.
S_TOL = 4 * rtol(np.float64, "map_step")


def spread(lrs: np.ndarray, a: np.ndarray) -> np.ndarray:
    """S(eta) for each eta in lrs (the test's own F, x/(1 + x^2))."""
    x = lrs[:, None] * a[None, :]
    f = x / (1.0 + x * x)
    return f.max(axis=1) / f.min(axis=1)


def spread_mp(lr: mp.mpf, a: list[mp.mpf]) -> mp.mpf:
    """S(lr) in mpmath at the working precision (the test's own F)."""
    f = [lr * x / (1 + (lr * x) ** 2) for x in a]
    return max(f) / min(f)


def strict_rise_at_critical_lr(a: np.ndarray) -> float:
    """min over both sides of S(eta* 10^(+-STEP))/S(eta*) - 1, in 40 digits; asserts > 0.

    eta* = 1/sqrt(a_max a_min) is typed here; for equal layers S == 1 and the rise is 0.
    """
    with mp.workdps(40):
        am = [mp.mpf(float(x)) for x in a]
        eta = 1 / mp.sqrt(max(am) * min(am))
        at, step = spread_mp(eta, am), mp.mpf(10) ** mp.mpf(STEP)
        left, right = spread_mp(eta / step, am), spread_mp(eta * step, am)
        if max(am) == min(am):
            assert left == at == right == 1
            return 0.0
        assert left > at and right > at
        return float(min(left, right) / at - 1)


@given(elr_vectors)
@example([1e-8, 1e8])
@example([1.0, 1.0, 1.0])
@example([0.3, 0.3000001])
@example([1e-8, 1e-8, 5e-3, 1e8, 1e8])
def test_critical_lr_minimizes_spread_on_grid(a):
    a = np.asarray(a)
    star = N.critical_lr_of(a)
    assert star == pytest.approx(1 / np.sqrt(a.max()) / np.sqrt(a.min()), rel=S_TOL)
    lrs = star * 10.0**GRID_EXP
    s = spread(lrs, a)
    s_star = spread(np.array([star]), a)[0]
    # eta* is at least as good as every lr on the grid.
    excess = float((s_star - s.min()) / s.min())
    target(excess, label="excess spread at eta*")
    assert s_star <= s.min() * (1 + S_TOL)
    # eta* is the *unique* minimizer: in 40-digit arithmetic S rises strictly one grid step
    # either side of the closed-form eta* (S == 1 everywhere when all layers are equal) ...
    rise = strict_rise_at_critical_lr(a)
    # ... and wherever float64 resolves that rise, the float grid's argmin is the package's
    # eta* or a neighbour of it (a grid centred on a wrong eta* has its argmin elsewhere).
    if rise > 16 * S_TOL:
        best = GRID_EXP[np.argmin(s)]
        assert abs(best) <= STEP + 1e-12, (best, rise)
    # Non-increasing left of eta*, non-decreasing right of it.
    left, right = s[GRID_EXP <= 0], s[GRID_EXP >= 0]
    assert np.all(np.diff(left) <= S_TOL * left[1:])
    assert np.all(np.diff(right) >= -S_TOL * right[1:])
    # The package's spread is the same function.
    pkg = N.one_step_spread(lrs, a)
    assert np.allclose(pkg, s, rtol=S_TOL, atol=0)
    assert N.one_step_spread(star, a) == pytest.approx(s_star, rel=S_TOL)


@given(st.lists(elrs, min_size=2, max_size=10))
def test_extreme_layers_end_step_equal_at_critical_lr(a):
    a = np.asarray(a)
    star = N.critical_lr_of(a)
    x_max, x_min = star * a.max(), star * a.min()
    f_max, f_min = x_max / (1 + x_max**2), x_min / (1 + x_min**2)
    err = abs(f_max - f_min) / f_min
    target(err)
    assert err <= S_TOL
    # ... and every other layer ends the step at a larger ELR (they are nearer to 1).
    x = star * a
    assert np.all(x / (1 + x * x) >= f_min * (1 - S_TOL))


@given(learning_rates, elrs, elrs)
@example(1.0, 1e8, 1e-8)
def test_critical_lr_depends_only_on_current_elrs(eta, e1, e2):
    """eta* = eta/sqrt(E_max E_min) = 1/sqrt(a_max a_min) with a = E/eta (mpmath oracle)."""
    e_max, e_min = max(e1, e2), min(e1, e2)
    with mp.workdps(40):
        want = mp.mpf(eta) / mp.sqrt(mp.mpf(e_max) * mp.mpf(e_min))
        got = N.critical_lr_from_elr(eta, e_max, e_min)
        assert abs(got / want - 1) <= S_TOL
        # Same value from per-unit-lr ELRs a = E/eta.
        got_a = N.critical_lr(e_max / eta, e_min / eta)
        assert abs(got_a / want - 1) <= S_TOL
        # Rescaling every ELR by k (as the next step's lr change does) rescales eta* by 1/k.
        assert N.critical_lr_of([e_max * 4, e_min * 4]) == pytest.approx(
            N.critical_lr_of([e_max, e_min]) / 4, rel=S_TOL)


@given(elr_vectors)
def test_step_at_critical_lr_never_widens_spread(a):
    """The spread after one step at eta* is at most the spread a_max/a_min before it."""
    a = np.asarray(a)
    star = N.critical_lr_of(a)
    before = a.max() / a.min()
    after = N.one_step_spread(star, a)
    assert after <= before * (1 + S_TOL)
