"""Every generated numeric function against a closed form typed by hand in this file.

The oracles are written from THEORY.md sections 2-5 (not from the SymPy derivations)
and evaluated in 50-digit mpmath, so a wrong derivation, a wrong stable form or a
wrong argument order in :mod:`normdyn.theory.numeric` shows up as a mismatch.
"""

from __future__ import annotations

import inspect

import mpmath as mp
import numpy as np
import pytest
from hypothesis import example, given, target
from hypothesis import strategies as st
from strategies import (
    base_gradients,
    elrs,
    learning_rates,
    momenta,
    squared_norms,
    step_counts,
    u_values,
)
from tolerances import rtol

from normdyn.theory import numeric as N

M = mp.mpf


@pytest.fixture(autouse=True, scope="module")
def _precision():
    """50-digit mpmath for this module only (mp.mp is global state)."""
    with mp.workdps(50):
        yield

# Generous relative bound for one generated closed form against 50-digit arithmetic:
# a handful of roundings, each within a few ulps.
TOL = rtol(np.float64, "map_step") * 4


def _rel(got: float, want: mp.mpf) -> float:
    return float(abs(M(got) - want) / abs(want)) if want != 0 else abs(float(got))


def _condition(oracle, margs: list, want: mp.mpf) -> float:
    """max(1, sum_i |a_i df/da_i / f|): the relative error that rounding the computation's
    intermediates to float64 may cause even in a stable formula, in units of that rounding.

    For the well-conditioned maps this is 1 to 3; it matters where a function is
    intrinsically sensitive, e.g. update_elr_geometric at s ~ 1 (sqrt(s - E^2) - 1).
    """
    if want == 0:
        return 1.0
    total = mp.mpf(0)
    for i, a in enumerate(margs):
        if a == 0:
            continue
        def partial(x, i=i):
            return oracle(*(margs[:i] + [x] + margs[i + 1:]))
        total += abs(a * mp.diff(partial, a) / want)
    return max(1.0, float(total))


# name -> (hand-written oracle on mpf arguments, strategy of argument tuples)
ORACLES = {
    "elr": (lambda eta, c, s2: eta * c / s2, st.tuples(learning_rates, base_gradients, squared_norms)),
    "gradient_elr": (lambda eta, g, w: eta * g / w,
                     st.tuples(learning_rates, base_gradients, squared_norms)),
    "base_gradient": (lambda g, w: g * w, st.tuples(base_gradients, squared_norms)),
    "norm_step": (lambda s2, eta, c: s2 + eta**2 * c**2 / s2,
                  st.tuples(squared_norms, learning_rates, base_gradients)),
    "elr_map": (lambda e: e / (1 + e**2), st.tuples(elrs)),
    "elr_step": (lambda e, g: g * e / (1 + e**2), st.tuples(elrs, learning_rates)),
    "u_map": (lambda u: u + 2 + 1 / u, st.tuples(u_values)),
    "continuous_sigma2": (lambda s0, eta, c, t: mp.sqrt(s0**2 + 2 * eta**2 * c**2 * t),
                          st.tuples(squared_norms, learning_rates, base_gradients, step_counts)),
    "continuous_elr": (lambda e0, t: e0 / mp.sqrt(1 + 2 * e0**2 * t), st.tuples(elrs, step_counts)),
    "continuous_u": (lambda u0, t: u0 + 2 * t, st.tuples(u_values, step_counts)),
    # 1/u0 (first term of sum_s 1/(u0+2s)) + int_0^{t-1} ds/(u0+2s), for t >= 1.
    "gap_bound": (lambda u0, t: 1 / u0 + mp.log((u0 + 2 * (t - 1)) / u0) / 2,
                  st.tuples(u_values, step_counts)),
    "ratio_step": (lambda r, el, ek: r * (1 + ek**2) / (1 + el**2),
                   st.tuples(elrs, elrs, elrs)),
    # d' = (u_k + 2 + 1/u_k) - (u_l + 2 + 1/u_l) = d - d/(u_k u_l); u >= 4 after one step.
    "d_step": (lambda d, uk, ul: d - d / (uk * ul),
               st.tuples(st.floats(-1e12, 1e12).filter(lambda x: abs(x) > 1e-300),
                         st.floats(4, 1e12),
                         st.floats(4, 1e12))),
    "critical_lr": (lambda amax, amin: 1 / mp.sqrt(amax * amin), st.tuples(elrs, elrs)),
    "critical_lr_from_elr": (lambda eta, emax, emin: eta / mp.sqrt(emax * emin),
                             st.tuples(learning_rates, elrs, elrs)),
    "weight_decay_norm_step": (
        lambda s2, eta, c, lam: (1 - eta * lam) ** 2 * s2 + eta**2 * c**2 / s2,
        st.tuples(squared_norms, learning_rates, base_gradients, st.floats(0, 1e-3)),
    ),
    "weight_decay_equilibrium_elr": (lambda eta, lam: mp.sqrt(eta * lam * (2 - eta * lam)),
                                     st.tuples(learning_rates, st.floats(1e-8, 1e-3))),
    "weight_decay_equilibrium_update_elr": (lambda eta, lam: mp.sqrt(2 * eta * lam),
                                            st.tuples(learning_rates, st.floats(1e-8, 1e-3))),
    # Heavy ball: sigma2 behaves as SGD at eta' = eta/(1-beta) with decay eta' lam.
    "momentum_norm_step": (
        lambda s2, eta, c, lam, b: (1 - eta * lam / (1 - b)) ** 2 * s2
        + (eta / (1 - b)) ** 2 * c**2 / s2,
        st.tuples(squared_norms, learning_rates, base_gradients, st.floats(0, 1e-5), momenta),
    ),
    # |v|^2 = |g|^2 (1 + beta^2 + beta^4 + ...) = |g|^2/(1 - beta^2).
    "momentum_update_elr": (lambda e, b: e / mp.sqrt(1 - b**2), st.tuples(elrs, momenta)),
    "momentum_u_growth": (lambda b: 2 * (1 + b) / (1 - b), st.tuples(momenta)),
    # Tangential E_t^2 = E^2/(1-b^2) with E^2 = (1-b)^2 x(2-x), x = eta lam/(1-b) (SGD
    # equilibrium at eta'); |w| is unchanged, so (1+r)^2 + E_t^2 = 1 and E_u^2 = r^2 + E_t^2
    # = 2 - 2 sqrt(1 - E_t^2).
    "momentum_equilibrium_update_elr": (
        lambda eta, lam, b: mp.sqrt(2 - 2 * mp.sqrt(
            1 - (1 - b) ** 2 * (eta * lam / (1 - b)) * (2 - eta * lam / (1 - b)) / (1 - b**2))),
        st.tuples(learning_rates, st.floats(1e-8, 1e-5), momenta),
    ),
    # Same equilibrium, |w| unchanged: w+ = (1+r) w + tau with (1+r)^2 = 1 - E_t^2, so the
    # angle turned has tan = E_t/(1+r) = E_t/sqrt(1 - E_t^2).
    "momentum_equilibrium_rotation": (
        lambda eta, lam, b: (lambda et2: mp.sqrt(et2 / (1 - et2)))(
            (1 - b) ** 2 * (eta * lam / (1 - b)) * (2 - eta * lam / (1 - b)) / (1 - b**2)),
        st.tuples(learning_rates, st.floats(1e-8, 1e-5), momenta),
    ),
    # Delta w = r w + tau, tau ⟂ w, |tau| = E_t |w|, |w + Delta w|^2 = s |w|^2 with 1 + r > 0.
    "update_elr_geometric": (
        lambda s, et: mp.sqrt((mp.sqrt(s - et**2) - 1) ** 2 + et**2),
        st.tuples(st.floats(0.5, 4.0), st.floats(0.0, 0.7)),
    ),
    # One step of the first-order model: tangential E/sqrt(1-b^2); s = (1 - x)^2 + (E/(1-b))^2
    # with x = eta lam/(1-b); Pythagoras fixes the radial part (THEORY §5).
    "momentum_step_update_elr": (
        lambda e, eta, lam, b: (lambda et2, s: mp.sqrt((mp.sqrt(s - et2) - 1) ** 2 + et2))(
            e**2 / (1 - b**2), (1 - eta * lam / (1 - b)) ** 2 + (e / (1 - b)) ** 2),
        st.tuples(elrs, learning_rates, st.floats(0.0, 1e-2), momenta),
    ),
    "momentum_equilibrium_update_elr_leading": (
        lambda eta, lam, b: mp.sqrt(2 * eta * lam / (1 + b)),
        st.tuples(learning_rates, st.floats(1e-8, 1e-3), momenta),
    ),
}


def test_every_generated_function_has_an_oracle():
    assert set(N.FUNCTIONS) == set(ORACLES)


@pytest.mark.parametrize("name", sorted(ORACLES))
def test_generated_function_matches_hand_closed_form(name):
    oracle, args_strategy = ORACLES[name]
    fn = N.FUNCTIONS[name]

    @given(args_strategy)
    def check(args):
        margs = [M(a) for a in args]
        want = oracle(*margs)
        got = fn(*args)
        err = _rel(got, want)
        cond = _condition(oracle, margs, want)
        target(err / cond, label=name)
        assert err <= TOL * cond, (
            f"{name}{args}: got {got!r}, want {mp.nstr(want, 20)}, rel err {err:.3g}, "
            f"condition number {cond:.3g}")

    check()


@given(st.tuples(elrs, st.floats(1e-9, 1e3)))
@example((3.0, 0.25))
def test_d_step_matches_difference_of_u_steps(args):
    """d_step(d, u_k, u_l) = u_map(u_k) - u_map(u_l), with d = u_k - u_l (u >= 4 after a step)."""
    u_l, gap = 4 + args[0], args[1]
    u_k = u_l + gap
    want = (M(u_k) + 2 + 1 / M(u_k)) - (M(u_l) + 2 + 1 / M(u_l))
    d = float(M(u_k) - M(u_l))
    got = N.d_step(d, u_k, u_l)
    err = _rel(got, want) if want != 0 else abs(got)
    target(err)
    assert err <= TOL * 4


@pytest.mark.parametrize("name", sorted(ORACLES))
def test_docstring_states_argument_order(name):
    fn = N.FUNCTIONS[name]
    order = ", ".join(fn.arg_names)
    assert fn.__doc__.startswith(f"{name}({order})")
    assert f"Argument order is fixed: ({order})" in fn.__doc__
    assert f"Argument order is fixed: ({order})" in fn.raw.__doc__
    # The compiled function really takes its arguments in that order.
    assert tuple(inspect.signature(fn.raw).parameters) == fn.arg_names
    assert tuple(inspect.signature(fn.scalar).parameters) == fn.arg_names


@pytest.mark.parametrize("name", sorted(ORACLES))
def test_raw_and_scalar_agree_with_validated_call(name):
    oracle, _ = ORACLES[name]
    fn = N.FUNCTIONS[name]
    args = _midpoint(fn)
    got = fn(*args)
    assert float(fn.raw(*args)) == pytest.approx(got, rel=TOL)
    assert fn.scalar(*args) == pytest.approx(got, rel=TOL)
    assert _rel(got, oracle(*(M(a) for a in args))) <= TOL


def _midpoint(fn) -> tuple[float, ...]:
    """A valid argument tuple for every function: 0.3 everywhere, t = 3 steps."""
    return tuple(3.0 if n == "t" else 0.3 for n in fn.arg_names)
