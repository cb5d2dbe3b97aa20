"""Gradient flow: closed form vs ODE route vs integrals written out in this file."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import moderate_elrs, sim_lr_sweeps
from tolerances import rtol

from normdyn.simulate import (
    COLUMNS,
    continuous_closed_form,
    continuous_ode,
    from_elr,
    linear_warmup,
    simulate_discrete,
)
from tests.simulate._oracles import geometric_update_elr

F64 = np.float64
ODE = rtol(F64, "ode")


def _max_rel(got, want) -> float:
    got, want = np.asarray(got, dtype=F64), np.asarray(want, dtype=F64)
    return float(np.max(np.abs(got - want) / np.abs(want)))


@given(st.lists(moderate_elrs, min_size=1, max_size=6), sim_lr_sweeps,
       st.lists(st.floats(0, 1e4), min_size=1, max_size=5))
def test_closed_form_matches_hand_formula(e0, lrs, times) -> None:
    state = from_elr(e0, 1.0)
    df = continuous_closed_form(state.sigma2_0, state.c, lrs, times)
    assert list(df.columns) == list(COLUMNS) and len(df) == len(e0) * len(lrs) * len(times)
    got = df.elr.to_numpy().reshape(len(lrs), len(times), len(e0))
    sig = df.sigma2.to_numpy().reshape(got.shape)
    for i, lr in enumerate(lrs):
        for j, t in enumerate(times):
            e_start = [lr * c / s for c, s in zip(state.c, state.sigma2_0, strict=True)]
            want = [e / math.sqrt(1 + 2 * e * e * t) for e in e_start]
            want_s = [math.sqrt(s**2 + 2 * lr**2 * c**2 * t)
                      for c, s in zip(state.c, state.sigma2_0, strict=True)]
            assert _max_rel(got[i, j], want) <= 8 * rtol(F64, "single_op")
            assert _max_rel(sig[i, j], want_s) <= 8 * rtol(F64, "single_op")
            assert _max_rel(df.spread.to_numpy().reshape(got.shape)[i, j],
                            [max(want) / min(want)] * len(e0)) <= 16 * rtol(F64, "single_op")


def test_elr0_path_equals_norm_path() -> None:
    a = continuous_closed_form(elr0=[3.0, 0.01], lr=0.5, t=[0, 1, 10])
    st0 = from_elr([3.0, 0.01], 0.5)
    b = continuous_closed_form(st0.sigma2_0, st0.c, 0.5, [0, 1, 10])
    np.testing.assert_array_equal(a.to_numpy(), b.to_numpy())


@pytest.mark.parametrize("lr", [0.1, 1.0, 3.0])
def test_ode_matches_closed_form(lr: float) -> None:
    s0, c = np.array([1.0, 0.5, 4.0]), np.array([2.0, 0.01, 30.0])
    t = np.linspace(0, 200, 21)
    closed = continuous_closed_form(s0, c, lr, t)
    ode = continuous_ode(s0, c, lr, (0.0, 200.0), t)
    assert _max_rel(ode.sigma2, closed.sigma2) <= ODE
    assert _max_rel(ode.elr, closed.elr) <= ODE
    np.testing.assert_array_equal(ode.step, closed.step)


def test_ode_time_varying_base_gradient() -> None:
    """c(t) = c0 (1+t): sigma2^2 = s0^2 + 2 eta^2 c0^2 ((1+t)^3 - 1)/3."""
    s0, c0, eta = np.array([1.0, 3.0]), np.array([0.5, 2.0]), 0.3
    t = np.linspace(0, 50, 11)
    df = continuous_ode(s0, lambda x: c0 * (1 + x), eta, (0.0, 50.0), t)
    want = [[math.sqrt(s**2 + 2 * eta**2 * c**2 * ((1 + x) ** 3 - 1) / 3)
             for s, c in zip(s0, c0, strict=True)] for x in t]
    assert _max_rel(df.sigma2.to_numpy().reshape(11, 2), want) <= ODE
    np.testing.assert_allclose(df.c.to_numpy().reshape(11, 2), [c0 * (1 + x) for x in t])


def test_ode_time_varying_lr() -> None:
    """eta(t) = eta0 exp(-t/tau): int eta^2 = eta0^2 tau (1 - exp(-2t/tau))/2."""
    s0, c, eta0, tau = np.array([2.0]), np.array([1.5]), 0.8, 20.0
    t = np.linspace(0, 60, 7)
    df = continuous_ode(s0, c, lambda x: eta0 * math.exp(-x / tau), (0.0, 60.0), t)
    want = [math.sqrt(4.0 + 2 * 1.5**2 * eta0**2 * tau * (1 - math.exp(-2 * x / tau)) / 2)
            for x in t]
    assert _max_rel(df.sigma2, want) <= ODE
    np.testing.assert_allclose(df.lr_t, [eta0 * math.exp(-x / tau) for x in t], rtol=1e-15)


def test_ode_accepts_a_schedule_over_a_sweep() -> None:
    base = np.array([0.1, 1.0])
    df = continuous_ode([1.0, 2.0], [1.0, 0.1], linear_warmup(base, 10), (0.0, 30.0),
                        np.arange(31.0))
    assert sorted(df.lr.unique()) == [0.1, 1.0]
    late = df[df.step >= 9]
    np.testing.assert_allclose(late.lr_t, late.lr, rtol=1e-15)


def test_ode_momentum_grows_like_sgd_at_eta_over_one_minus_beta() -> None:
    s0, c, eta, beta = np.array([1.0, 0.2]), np.array([1.0, 5.0]), 0.05, 0.9
    t = np.linspace(0, 100, 11)
    df = continuous_ode(s0, c, eta, (0.0, 100.0), t, momentum=beta)
    want = [[math.sqrt(s**2 + 2 * (eta / (1 - beta)) ** 2 * ci**2 * x)
             for s, ci in zip(s0, c, strict=True)] for x in t]
    assert _max_rel(df.sigma2.to_numpy().reshape(11, 2), want) <= ODE
    want_upd = [geometric_update_elr(e, eta, 0.0, beta) for e in df.elr]
    np.testing.assert_allclose(df.update_elr, want_upd, rtol=1e-13)


@settings(max_examples=20)
@given(st.lists(moderate_elrs, min_size=1, max_size=5), st.integers(1, 300))
def test_discrete_u_never_below_continuous(e0, steps) -> None:
    st0 = from_elr(e0, 1.0)
    disc = simulate_discrete(st0.sigma2_0, st0.c, 1.0, steps, record="summary", engine="numpy")
    cont = continuous_closed_form(st0.sigma2_0, st0.c, 1.0, [float(steps)])
    u_disc = 1 / disc.final_elr[0] ** 2
    u_cont = 1 / cont.elr.to_numpy() ** 2
    assert np.all(u_disc >= u_cont * (1 - rtol(F64, "iterated", steps)))


@pytest.mark.parametrize(("call", "message"), [
    (lambda: continuous_closed_form([1.0, 1.0], [1.0, 2.0, 3.0], 1.0, [0.0]),
     "c must have the same length as sigma2_0 (2), got 3"),
    (lambda: continuous_closed_form([1.0], [1.0], 0.0, [0.0]), "lr must be positive, got 0.0"),
    (lambda: continuous_closed_form([1.0], [1.0], 1.0, [-1.0]), "t must be non-negative, got -1.0"),
    (lambda: continuous_closed_form([1.0], [1.0], 1.0, [0.0], elr0=[1.0]),
     "state: give either elr0 or sigma2_0 with c, not both"),
    (lambda: continuous_closed_form(elr0=[], t=[0.0]),
     "elr must contain at least one layer, got an empty list"),
    (lambda: continuous_ode([1.0], [1.0], 1.0, (0.0, 1.0), [2.0]),
     "t_eval must lie inside t_span (0.0, 1.0)"),
    (lambda: continuous_ode([1.0], [1.0], 1.0, (0.0, 1.0), [0.5], momentum=1.5),
     "momentum must lie in [0.0, 1.0), got 1.5"),
    (lambda: continuous_ode([1.0, 1.0], [1.0], 1.0, (0.0, 1.0), [0.5]),
     "c_of_t must give (2,) base gradients like sigma2_0"),
])
def test_bad_input_names_the_parameter(call, message: str) -> None:
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value) == message
