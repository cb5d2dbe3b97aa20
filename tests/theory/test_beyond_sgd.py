"""Weight decay and momentum (THEORY.md section 5).

Oracles: the norm recurrences iterated in plain Python floats in this file; a numpy
drift simulation (random gradients orthogonal to w, heavy-ball momentum) for the
momentum growth rate; closed forms derived by hand in the docstrings.
"""

from __future__ import annotations

import math

import mpmath as mp
import numpy as np
import pytest
from hypothesis import example, given, target
from hypothesis import strategies as st
from strategies import base_gradients, decay_products, learning_rates, momenta, squared_norms
from tolerances import rtol

from normdyn.theory import numeric as N

EQ_TOL = 1e-9  # convergence of the iterated map, far above rounding


def iterate_to_equilibrium(s2, eta, c, lam, max_steps=200_000):
    """sigma2 <- (1 - eta lam)^2 sigma2 + (eta c)^2/sigma2 until it stops moving."""
    shrink, push = (1 - eta * lam) ** 2, (eta * c) ** 2
    for step in range(max_steps):
        nxt = shrink * s2 + push / s2
        if abs(nxt - s2) <= 1e-15 * s2:
            return nxt, step
        s2 = nxt
    raise AssertionError("no convergence")


@given(decay_products, learning_rates, base_gradients, squared_norms)
@example(1e-3, 1e-6, 1e-6, 1e6)
@example(0.5, 1e3, 1e6, 1e-6)
def test_weight_decay_converges_to_equilibrium_elr(x, eta, c, s0):
    """Gradient ELR -> sqrt(eta lam (2 - eta lam)); update ELR |dw|/|w| -> sqrt(2 eta lam)."""
    lam = x / eta
    s_star, _ = iterate_to_equilibrium(s0, eta, c, lam)
    e = eta * c / s_star
    # |dw|^2 = eta^2 (lam^2 |w|^2 + |g|^2), lam w orthogonal to g, |g| = c/|w|.
    e_update = math.sqrt((eta * lam) ** 2 + (eta * c / s_star) ** 2)
    e_pkg = N.weight_decay_equilibrium_elr(eta, lam)
    err = abs(e / e_pkg - 1)
    target(err, label="gradient ELR")
    assert err <= EQ_TOL
    assert abs(e / math.sqrt(x * (2 - x)) - 1) <= EQ_TOL
    err_u = abs(e_update / N.weight_decay_equilibrium_update_elr(eta, lam) - 1)
    target(err_u, label="update ELR")
    assert err_u <= EQ_TOL
    assert abs(e_update / math.sqrt(2 * x) - 1) <= EQ_TOL
    # The package's step function follows the same trajectory (vectorized over 50 steps).
    traj = [s0]
    for _ in range(50):
        traj.append((1 - x) ** 2 * traj[-1] + (eta * c) ** 2 / traj[-1])
    traj = np.array(traj)
    pkg = N.weight_decay_norm_step(traj[:-1], eta, c, lam)
    assert np.allclose(pkg, traj[1:], rtol=8 * rtol(np.float64, "map_step"), atol=0)


@given(decay_products, st.lists(base_gradients, min_size=2, max_size=5), squared_norms)
def test_weight_decay_equilibrium_equal_for_all_layers(x, cs, s0):
    """Layers with different base gradients reach the same ELR: the spread goes to 1."""
    eta = 0.1
    elrs_ = [eta * c / iterate_to_equilibrium(s0, eta, c, x / eta)[0] for c in cs]
    assert max(elrs_) / min(elrs_) - 1 <= 2 * EQ_TOL


@given(st.floats(1e-6, 1.999), learning_rates, base_gradients, squared_norms)
@example(1.0, 0.3, 1e-6, 1.0)  # (1 - eta lam)^2 ~ 1e-33: only the gradient term survives
@example(1.00390625, 0.1, 1e-4, 1.0)  # eta*lam rounds: error 2.9e-14 is the conditioning
def test_weight_decay_step_accurate_for_all_decays(x, eta, c, s2):
    """One step against 50-digit arithmetic over the whole range 0 < eta lam < 2.

    Pins the cancellation of the expanded form sigma2 - 2 eta lam sigma2 + ... (rel. error
    8e-4 at the example below), fixed by compiling the factored (1 - eta lam)^2 sigma2.
    The momentum step (same recurrence at eta/(1-beta)) is checked at beta = 0.
    """
    lam = x / eta
    with mp.workdps(50):
        m = mp.mpf
        want = (1 - m(eta) * m(lam)) ** 2 * m(s2) + (m(eta) * m(c)) ** 2 / m(s2)
        got = N.weight_decay_norm_step(s2, eta, c, lam)
        err = float(abs(m(got) / want - 1))
        got_m = N.momentum_norm_step(s2, eta, c, lam, 0.0)
        err = max(err, float(abs(m(got_m) / want - 1)))
        # Relative condition number of f = (1 - eta lam)^2 s2 + (eta c)^2/s2 in eta and lam:
        # each enters through eta*lam with weight 2 eta lam |1 - eta lam| s2 / f.  The
        # expanded form failed by a factor 1/|1 - eta lam| beyond this (8e-4 vs 2e-3 eps).
        xm = m(eta) * m(lam)
        cond = float(1 + 4 * xm * abs(1 - xm) * m(s2) / want)
    target(err / cond)
    assert err <= 16 * rtol(np.float64, "map_step") * cond


@given(momenta, learning_rates, base_gradients)
def test_momentum_u_growth_from_norm_recurrence(beta, eta, c):
    """Iterating the momentum norm recurrence (lam = 0): u = E_update^-2 grows by
    2(1+beta)/(1-beta) per step once sigma2 has grown (here after 10^4 gradient-flow units)."""
    eta_eff = eta / (1 - beta)
    s2 = 1e4 * eta_eff * c  # E' = eta_eff c/s2 = 1e-4: the slope is reached to 1e-8
    steps = []
    for _ in range(3):
        u = (1 - beta**2) * s2**2 / (eta * c) ** 2  # E_u^2 = E^2/(1-beta^2), E = eta c/s2
        s2 = s2 + (eta_eff * c) ** 2 / s2
        steps.append((1 - beta**2) * s2**2 / (eta * c) ** 2 - u)
    want = N.momentum_u_growth(beta)
    assert want == pytest.approx(2 * (1 + beta) / (1 - beta), rel=8 * rtol(np.float64, "map_step"))
    for du in steps:
        assert du == pytest.approx(want, rel=1e-6)
    # momentum_norm_step with lam = 0 is SGD at eta/(1 - beta).
    assert N.momentum_norm_step(s2, eta, c, 0.0, beta) == pytest.approx(
        N.norm_step(s2, eta_eff, c), rel=8 * rtol(np.float64, "map_step"))


@given(st.floats(1e-3, 0.5), momenta)
@example(0.01, 0.9)
def test_momentum_weight_decay_equilibrium(x, beta):
    """Iterating the momentum recurrence with decay reaches the update ELR of the closed form,
    which tends to sqrt(2 eta lam/(1+beta)) as eta lam -> 0."""
    eta, c = 0.1, 1.0
    lam = x * (1 - beta) / eta  # eta' lam = x with eta' = eta/(1-beta)
    s_star, _ = iterate_to_equilibrium(1.0, eta / (1 - beta), c, lam)
    e_grad = eta * c / s_star
    e_tangential = e_grad / math.sqrt(1 - beta**2)
    # At equilibrium |w| is unchanged: (1 + r)^2 + E_tan^2 = 1 fixes the radial part r.
    radial = math.sqrt(1 - e_tangential**2) - 1
    e_update = math.hypot(e_tangential, radial)
    got = N.momentum_equilibrium_update_elr(eta, lam, beta)
    assert abs(e_update / got - 1) <= EQ_TOL
    assert abs(N.momentum_update_elr(e_grad, beta) / e_tangential - 1) <= 8 * rtol(
        np.float64, "map_step")
    lead = N.momentum_equilibrium_update_elr_leading(eta, lam, beta)
    # The tangential part over the leading order is sqrt(1 - x/2) (x = eta' lam); the radial
    # part adds O(x) relative, so the leading order is the eta lam -> 0 limit.
    assert e_tangential / lead == pytest.approx(math.sqrt(1 - x / 2), rel=EQ_TOL)
    assert abs(got / lead - 1) <= x
    # The angle turned per step: w+ = (1 + r) w + tau, tan(theta) = E_tan/(1 + r).
    rotation = N.momentum_equilibrium_rotation(eta, lam, beta)
    assert abs(rotation / (e_tangential / (1 + radial)) - 1) <= EQ_TOL
    # tan^2 = E_tan^2/(1 - E_tan^2) = 2x + O(x^2) relative to lead^2: about 1 + 3x/4 at beta=0
    if x <= 0.1:
        assert abs(rotation / lead - 1) <= x


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9])
def test_momentum_drift_simulation_u_growth(beta):
    """Heavy-ball drift: random gradients of norm c/|w|, orthogonal to w, uncorrelated in time.

    Measures the per-step growth of u = (|w|/(eta|v|))^2 averaged over a window after a
    burn-in, against 2(1+beta)/(1-beta) (38 at beta = 0.9).  First-order theory: 5%.
    Starting at |w| = 1 keeps u small enough (400 -> ~1e5) that the step-to-step noise of
    |v|^2 (relative ~ 1/sqrt(dim)) does not swamp the slope.
    """
    rng = np.random.default_rng(1234)
    dim, eta, c, steps = 4000, 0.05, 1.0, 3000
    w = rng.standard_normal(dim)
    w /= np.linalg.norm(w)
    v = np.zeros(dim)
    us = []
    for _ in range(steps):
        r = rng.standard_normal(dim)
        r -= (r @ w) / (w @ w) * w
        g = r * (c / np.linalg.norm(w)) / np.linalg.norm(r)
        v = beta * v + g
        w = w - eta * v
        us.append((w @ w) / (eta**2 * (v @ v)))
    us = np.array(us)
    # Least-squares slope over the second half (velocity stationary, sigma2 grown).
    t = np.arange(steps // 2, steps)
    slope = np.polyfit(t, us[steps // 2:], 1)[0]
    want = N.momentum_u_growth(beta)
    assert slope == pytest.approx(want, rel=0.05)
