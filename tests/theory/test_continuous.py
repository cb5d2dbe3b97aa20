"""Discrete map vs gradient flow (THEORY.md section 2, items 5-6).

Oracles: the discrete ELR map iterated in 60-digit mpmath (u_t read off as E_t^-2),
and scipy's ``solve_ivp`` on d sigma2/dt = eta^2 c^2/sigma2.
"""

from __future__ import annotations

import mpmath as mp
import numpy as np
import pytest
from hypothesis import example, given, target
from scipy.integrate import solve_ivp
from strategies import base_gradients, learning_rates, squared_norms, step_counts, u_values
from tolerances import rtol

from normdyn.theory import numeric as N

M = mp.mpf
ODE_RTOL = rtol(np.float64, "ode")


@pytest.fixture(autouse=True, scope="module")
def _precision():
    """60-digit mpmath for this module only (mp.mp is global state)."""
    with mp.workdps(60):
        yield


@given(u_values, step_counts)
@example(1e-6, 2000)
@example(1e16, 2000)
@example(1.0, 1)
@example(0.25, 1)
def test_discrete_u_stays_above_flow_within_gap_bound(u0, steps):
    """u0 + 2t <= u_t <= u0 + 2t + gap_bound(u0, t) for every t = 1..steps."""
    e = 1 / mp.sqrt(M(u0))  # E_0 with E_0^-2 = u0 to 60 digits
    worst = -1.0
    for t in range(1, steps + 1):
        e = e / (1 + e * e)
        gap = 1 / e**2 - (M(u0) + 2 * t)
        assert gap >= 0
        if t in (1, 2, 3, steps) or t % 97 == 0:
            bound = N.gap_bound(u0, float(t))
            # The bound is attained at t = 1 (gap = 1/u0): allow its own rounding.
            assert gap <= M(bound) * (1 + 8 * rtol(np.float64, "single_op")), (t, gap, bound)
            worst = max(worst, float(gap / M(bound)))
    target(worst)


@given(u_values, step_counts)
def test_continuous_u_is_linear(u0, t):
    assert N.continuous_u(u0, float(t)) == pytest.approx(u0 + 2 * t, rel=rtol(np.float64,
                                                                               "single_op"))


def test_gap_grows_logarithmically():
    """u_t - (u0 + 2t) keeps growing like log(t)/2 (u0 = 1, exact loop to t = 20000)."""
    e, u0 = M(1), M(1)
    gaps = {}
    for t in range(1, 20001):
        e = e / (1 + e * e)
        if t in (100, 20000):
            gaps[t] = 1 / e**2 - (u0 + 2 * t)
    growth = gaps[20000] - gaps[100]
    assert abs(growth - mp.log(200) / 2) < 0.01  # sum of 1/(2s) from 100 to 20000
    assert gaps[20000] <= N.gap_bound(1.0, 20000.0)


def _solve(s0: float, eta: float, c: float, t: float):
    k = (eta * c) ** 2
    return solve_ivp(lambda _, y: k / y, (0.0, t), [s0], method="DOP853", rtol=1e-13,
                     atol=1e-300, dense_output=False)


@given(squared_norms, learning_rates, base_gradients, step_counts)
@example(1e-6, 1e3, 1e6, 2000)  # E0 = 1e15: sigma2 jumps by 21 decades
@example(1e6, 1e-6, 1e-6, 1)  # E0 = 1e-18: sigma2 barely moves
def test_continuous_solution_matches_solve_ivp(s0, eta, c, t):
    sol = _solve(s0, eta, c, float(t))
    assert sol.success
    ode = sol.y[0, -1]
    closed = N.continuous_sigma2(s0, eta, c, float(t))
    err = abs(closed - ode) / ode
    target(err, label="sigma2")
    assert err <= ODE_RTOL
    e_ode = eta * c / ode
    e_closed = N.continuous_elr(eta * c / s0, float(t))
    err_e = abs(e_closed - e_ode) / e_ode
    target(err_e, label="elr")
    assert err_e <= ODE_RTOL + rtol(np.float64, "map_step")


@given(squared_norms, learning_rates, base_gradients)
def test_continuous_at_time_zero_is_initial_state(s0, eta, c):
    assert N.continuous_sigma2(s0, eta, c, 0.0) == pytest.approx(s0, rel=rtol(np.float64,
                                                                              "single_op"))
    e0 = eta * c / s0
    assert N.continuous_elr(e0, 0.0) == pytest.approx(e0, rel=rtol(np.float64, "single_op"))


@given(squared_norms, learning_rates, base_gradients, step_counts)
def test_discrete_sigma2_never_below_flow(s0, eta, c, steps):
    """The discrete norm (plain-float loop of sigma2 += (eta c)^2/sigma2) stays above sigma2(t)."""
    s = M(s0)
    k = (M(eta) * M(c)) ** 2
    for _ in range(steps):
        s = s + k / s
    flow = N.continuous_sigma2(s0, eta, c, float(steps))
    assert s >= M(flow) * (1 - 4 * rtol(np.float64, "single_op"))
