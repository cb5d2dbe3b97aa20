"""Finite, correct values at the edge of float64 (E = 1e-300 .. 1e300).

Oracle: the closed forms in 60-digit mpmath (whose exponent range is unbounded), plus
hand-derived asymptotics (F(E) ~ E for tiny E, ~ 1/E for huge E).  Where the true value
is a normal float, the function must return it; where it overflows, the function must
raise NonFiniteError (a ValueError), never return inf or nan.
"""

from __future__ import annotations

import mpmath as mp
import numpy as np
import pytest
from hypothesis import example, given, target
from hypothesis import strategies as st
from strategies import extreme_elrs
from tolerances import rtol

from normdyn._checks import NonFiniteError
from normdyn.theory import numeric as N

M = mp.mpf
TOL = 8 * rtol(np.float64, "map_step")
TINY, HUGE = np.finfo(np.float64).tiny, np.finfo(np.float64).max
extreme_times = st.one_of(st.just(0.0), extreme_elrs)
moderate = st.floats(-3, 3).map(lambda x: float(10.0**x))


def one_extreme(n: int, times: tuple[int, ...] = ()) -> st.SearchStrategy[tuple[float, ...]]:
    """n arguments: one drawn from 1e-300 .. 1e300 (or 0 for a time), the others 1e-3 .. 1e3.

    A single extreme quantity (a huge norm, a tiny gradient) is the case that matters; when
    several are extreme at once, a product like eta*c can overflow although eta*c/sigma2 is
    representable, which no ordering of a three-factor product avoids in every case.
    """
    def build(i: int) -> st.SearchStrategy[tuple[float, ...]]:
        return st.tuples(*[(extreme_times if j in times else extreme_elrs) if j == i
                           else moderate for j in range(n)])
    return st.integers(0, n - 1).flatmap(build)


@pytest.fixture(autouse=True, scope="module")
def _precision():
    """60-digit mpmath for this module only (mp.mp is global state)."""
    with mp.workdps(60):
        yield


def check_against(fn, args, want, cond=1.0):
    """Correct to TOL where ``want`` is a normal float; NonFiniteError where it overflows.

    ``cond`` is the function's relative condition number at ``args`` (rounding of the
    inputs alone moves the true value by about cond * eps).
    """
    if abs(want) > HUGE:
        with pytest.raises(NonFiniteError):
            fn(*args)
        return 0.0
    got = fn(*args)
    assert np.isfinite(got)
    if abs(want) < TINY * 2**53:  # subnormal range: only require a finite non-negative value
        assert 0.0 <= got <= 4 * TINY * 2**53
        return 0.0
    err = float(abs(M(got) / want - 1))
    assert err <= TOL * cond, f"{fn.name}{args}: got {got!r}, want {mp.nstr(want, 17)}"
    return err


@pytest.mark.parametrize(("e", "want"), [
    (1e-300, 1e-300),  # F(E) = E - E^3 + ... : E to every digit
    (1e300, 1e-300),  # F(E) = 1/E - 1/E^3 + ...
    (1e150, 1e-150),
    (1e-150, 1e-150),
    (1.0, 0.5),
])
def test_elr_map_asymptotics(e, want):
    assert N.elr_map(e) == pytest.approx(want, rel=TOL)
    assert N.elr_step(e, 1.0) == pytest.approx(want, rel=TOL)


@given(extreme_elrs)
@example(1e-300)
@example(1e300)
@example(HUGE)
@example(TINY)
def test_elr_map_extreme(e):
    x = M(e)
    err = check_against(N.elr_map, (e,), x / (1 + x * x))
    target(err)


@given(extreme_elrs, extreme_times)
@example(1e300, 1.0)  # -> 1/sqrt(2)
@example(1e300, 0.0)
@example(1e-300, 1e300)  # -> E0 / sqrt(1 + 2e-300)
@example(1e300, 1e300)  # -> 1/sqrt(2e300)
def test_continuous_elr_extreme(e0, t):
    x, tt = M(e0), M(t)
    err = check_against(N.continuous_elr, (e0, t), x / mp.sqrt(1 + 2 * x * x * tt))
    target(err)


@given(extreme_elrs, extreme_elrs)
@example(1e300, 1e300)  # naive a_max*a_min overflows
@example(1e-300, 1e-300)  # naive a_max*a_min underflows
@example(1e300, 1e-300)
def test_critical_lr_extreme(a_max, a_min):
    want = 1 / mp.sqrt(M(a_max) * M(a_min))
    err = check_against(N.critical_lr, (a_max, a_min), want)
    target(err)
    assert N.critical_lr_of([a_max, a_min]) == N.critical_lr(max(a_max, a_min),
                                                            min(a_max, a_min))


@given(extreme_elrs, extreme_elrs, extreme_elrs)
@example(1e300, 1e300, 1e300)
@example(1.0, 1e-300, 1e-300)
def test_critical_lr_from_elr_extreme(eta, e1, e2):
    want = M(eta) / mp.sqrt(M(e1) * M(e2))
    target(check_against(N.critical_lr_from_elr, (eta, e1, e2), want))


@given(extreme_elrs, extreme_elrs, extreme_elrs)
@example(1e-300, 1.0, 1.0)  # sigma2 -> 1e300
@example(1e300, 1e-300, 1e-300)  # sigma2 unchanged
@example(1e300, 1e200, 1e200)  # true value 1e500: must raise, not return inf
@example(1e-300, 1e-150, 1e-150)  # (eta c)^2 underflows, ratio is 1
def test_norm_step_extreme(s2, eta, c):
    x = M(s2)
    want = x + (M(eta) * M(c)) ** 2 / x
    target(check_against(N.norm_step, (s2, eta, c), want))


@given(one_extreme(4, times=(3,)))
@example((1e300, 1e-3, 1e-3, 1e3))
@example((1e-300, 1.0, 1.0, 1.0))
@example((1.0, 1.0, 1.0, 1e300))
def test_continuous_sigma2_extreme(args):
    s0, eta, c, t = args
    want = mp.sqrt(M(s0) ** 2 + 2 * (M(eta) * M(c)) ** 2 * M(t))
    target(check_against(N.continuous_sigma2, (s0, eta, c, t), want))


@given(extreme_elrs)
@example(1e-300)
@example(1e300)
def test_u_map_extreme(u):
    x = M(u)
    target(check_against(N.u_map, (u,), x + 2 + 1 / x))


@given(one_extreme(3))
@example((1e-3, 1e300, 1e-3))
@example((1.0, 1.0, 1e-300))
@example((1.0, 1.0, 1e300))
def test_elr_extreme(args):
    eta, c, s2 = args
    target(check_against(N.elr, (eta, c, s2), M(eta) * M(c) / M(s2)))


# ratio_step and d_step once compiled rho (1+E_k^2)/(1+E_l^2) and d (u_k u_l - 1)/(u_k u_l),
# whose squares/products overflow to inf/inf = nan for E or u above ~1e154 although the
# result is an ordinary number.


@given(one_extreme(3))
@example((1.0, 1e300, 1e300))
@example((1.0, 1e200, 1e-3))
@example((1e-300, 1e-3, 1e3))
def test_ratio_step_extreme(args):
    rho, el, ek = args
    want = M(rho) * (1 + M(ek) ** 2) / (1 + M(el) ** 2)
    target(check_against(N.ratio_step, (rho, el, ek), want))


@given(st.tuples(st.floats(-1e3, 1e3).filter(lambda x: abs(x) > 1e-3), extreme_elrs,
                 extreme_elrs))
@example((1.0, 1e300, 1e300))
@example((-1.0, 1e-300, 1e300))
@example((1.0, 1e-3, 1e3))  # u_k u_l = 1: d' = 0 (ill-conditioned, checked with cond)
def test_d_step_extreme(args):
    d, uk, ul = args
    p = M(uk) * M(ul)
    want = M(d) * (1 - 1 / p)
    # d(1 - 1/p) has relative condition number ~ 1 + 1/|p - 1| in p = u_k u_l.
    if p == 1:
        assert abs(N.d_step(d, uk, ul)) <= TOL * abs(d)
        return
    cond = float(1 + 2 / abs(p - 1))
    target(check_against(N.d_step, (d, uk, ul), want, cond=cond))
