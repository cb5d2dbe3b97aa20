"""Pairs of layers (THEORY.md section 3): attractor, flips, at most one flip, convergence.

Oracles: the ELR map F(E) = E/(1+E^2) typed here and iterated in exact
``fractions.Fraction`` arithmetic (short runs) or 60-digit mpmath (long runs); flips are
counted by comparing the two ELRs, never through the flip condition under test.
"""

from __future__ import annotations

import itertools
from fractions import Fraction

import mpmath as mp
import numpy as np
import pytest
import sympy as sp
from hypothesis import example, find, given, settings, target
from hypothesis import strategies as st
from strategies import elr_pairs, elrs, gain_schedules, moderate_elrs, step_counts
from tolerances import rtol

from normdyn.theory import numeric as N
from normdyn.theory import pairs as P
from normdyn.theory import symbols as S

M = mp.mpf


@pytest.fixture(autouse=True, scope="module")
def _precision():
    """60-digit mpmath for this module only (mp.mp is global state)."""
    with mp.workdps(60):
        yield
# Below this relative gap the 60-digit oracle no longer resolves which ELR is larger.
RESOLUTION = M(10) ** -50
STEP_TOL = rtol(np.float64, "map_step") * 4


def F(x):
    """The ELR map at constant lr and c, for Fraction or mpf arguments."""
    return x / (1 + x * x)


def sign(x) -> int:
    return (x > 0) - (x < 0)


def count_flips(a, b, gains) -> tuple[int, int]:
    """Flips of the pair (a, b) under E -> g*F(E) for each gain g (both layers share the lr).

    Returns (flips, steps resolved).  A flip is a strict change of sign of a - b.  With
    mpf inputs the count stops once |a - b| drops below the oracle's resolution.
    """
    flips = 0
    for step, g in enumerate(gains):
        s0 = sign(a - b)
        a, b = g * F(a), g * F(b)
        if not isinstance(a, Fraction) and abs(a - b) <= RESOLUTION * max(a, b):
            return flips, step
        flips += s0 * sign(a - b) < 0
    return flips, len(gains)


# --------------------------------------------------------------------------- attractor


@given(moderate_elrs, elrs)
@example(1.0, 1.0)
@example(1e3, 1e-8)
def test_ratio_one_is_invariant(e, rho_scale):
    """rho = 1 stays 1: equal ELRs stay equal (ratio_step and the exact map)."""
    # The package's ratio map (derived and stable forms) in exact rationals at E_l = E_k:
    # the oracle is the exact value rho itself, for rho = 1 and for any other rho.
    q, r = sp.Rational(Fraction(e)), sp.Rational(Fraction(rho_scale))
    for form in (P.ratio_map(), N.ratio_step.compiled_expr):
        at = {S.E_l: q, S.E_k: q}
        assert sp.simplify(form.subs({S.rho: 1, **at}).doit()) == 1
        assert sp.simplify(form.subs({S.rho: r, **at}).doit()) == r
    # Float: 1 to rounding (the stable form multiplies by E_k * (1/E_l), not exactly 1).
    assert abs(N.ratio_step(1.0, e, e) - 1.0) <= STEP_TOL
    # Any rho is multiplied by 1 (to rounding) when the two ELRs are equal.
    assert abs(N.ratio_step(rho_scale, e, e) / rho_scale - 1) <= STEP_TOL


@given(elr_pairs)
@example((2.0, 0.5))
@example((1e-3, 1e3))
def test_no_other_ratio_is_invariant(pair):
    """E_l != E_k implies rho_{t+1} != rho_t, moving towards 1 (exact), and ratio_step agrees."""
    el, ek = (Fraction(x) for x in pair)
    rho = el / ek
    rho_next = F(el) / F(ek)  # the ratio after one step, from the next ELRs
    assert rho_next != rho
    # rho moves down when E_l > E_k and up when E_l < E_k.
    assert sign(rho_next - rho) == sign(ek - el)
    got = N.ratio_step(float(rho), float(el), float(ek))
    err = abs(Fraction(got) - rho_next) / rho_next
    target(float(err))
    assert err <= STEP_TOL
    if abs(rho_next - rho) / rho > Fraction(1, 10**12):
        assert got != float(rho)


@given(elr_pairs, st.integers(50, 400))
@example((1e3, 1e-3), 400)
@example((0.999, 1.001), 50)
def test_pair_map_drives_ratio_to_one(pair, steps):
    """Iterating E -> F(E) per layer: |rho_t^2 - 1| decreases (t >= 1) toward 0, |log rho| never grows."""
    el, ek = M(pair[0]), M(pair[1])
    fl, fk = pair  # the same run with the package's elr_map and ratio_step
    rho_pkg = pair[0] / pair[1]
    dev_prev, logr_prev = None, abs(mp.log(el / ek))
    for _ in range(steps):
        rho_pkg = N.ratio_step(rho_pkg, fl, fk)
        el, ek = F(el), F(ek)
        fl, fk = N.elr_map(fl), N.elr_map(fk)
        dev = abs((el / ek) ** 2 - 1)
        logr = abs(mp.log(el / ek))
        assert logr <= logr_prev * (1 + M(10) ** -40)
        if dev_prev is not None:
            assert dev <= dev_prev * (1 + M(10) ** -40)
        dev_prev, logr_prev = dev, logr
    # Toward zero: at least as fast as 1/t (see test_convergence_rate_bound for the constant).
    u_l0, d1 = 1 / M(pair[0]) ** 2, abs(1 / F(M(pair[1])) ** 2 - 1 / F(M(pair[0])) ** 2)
    assert dev_prev <= d1 / (u_l0 + 2 * steps) * (1 + M(10) ** -40)
    # The float package iteration tracks the exact one (F contracts relative errors).
    tol = rtol(np.float64, "iterated", steps)
    assert abs(M(fl) / el - 1) <= tol and abs(M(fk) / ek - 1) <= tol
    assert abs(M(rho_pkg) / (el / ek) - 1) <= tol


# --------------------------------------------------------------------------- flipping


@given(elrs, elrs)
@example(2.0, 0.5)  # product exactly 1: the step ends in a tie
@example(2.0, 0.75)  # product 1.5: flips
@example(0.5, 1.5)  # product 0.75: keeps order
@example(1.0, 1.0)
def test_flip_iff_product_exceeds_one(a, b):
    """Exact arithmetic: the order of E_l, E_k flips in a step iff E_l*E_k > 1; tie iff == 1."""
    fa, fb = Fraction(a), Fraction(b)
    before, after = sign(fa - fb), sign(F(fa) - F(fb))
    product = fa * fb
    flipped = before * after < 0
    assert flipped == (before != 0 and product > 1)
    assert (after == 0) == (fa == fb or product == 1)
    # |log rho| never grows: the next ratio lies between rho and 1/rho.
    rho, rho_next = fa / fb, F(fa) / F(fb)
    assert max(rho_next, 1 / rho_next) <= max(rho, 1 / rho)
    # The package agrees on the orientation wherever float resolves the gap.
    ga, gb = N.elr_map(a), N.elr_map(b)
    gap = abs(F(fa) - F(fb)) / max(F(fa), F(fb))
    if gap > Fraction(1, 10**12):
        assert sign(ga - gb) == after


@given(elrs)
@example(2.0)
@example(1e8)
def test_tie_when_product_is_one(e):
    """F(E) = F(1/E) exactly; the package gives equal ELRs to rounding when E_l*E_k = 1."""
    assert F(Fraction(e)) == F(1 / Fraction(e))
    got_a, got_b = N.elr_map(e), N.elr_map(1 / e)
    err = abs(got_a - got_b) / got_a
    target(err)
    assert err <= STEP_TOL


def test_log_ratio_contraction_bounds_are_proved():
    """b/a < F(a)/F(b) < a/b for a > b > 0: both bounds proved, wrong ones rejected.

    Oracle: the two bounds written out here, (a^2 - b^2)/((1+a^2)(1+b^2)) > 0 and
    ab(a^2 - b^2)/((1+a^2)(1+b^2)) > 0, and exact rationals at sample points.
    """
    a, b = sp.symbols("a b", positive=True)
    lower = a**2 / (1 + a**2) - b**2 / (1 + b**2)  # a F(a) - b F(b)
    upper = a * b / (1 + b**2) - a * b / (1 + a**2)  # a F(b) - b F(a)
    assert P.positive_when_a_exceeds_b(lower) and P.positive_when_a_exceeds_b(upper)
    assert P._check_flip_condition().passed
    # Rejected: the reversed bound, a sign-indefinite F(a) - F(b) (sympy: "unknown"), and a
    # bound that fails only near a = b.
    assert not P.positive_when_a_exceeds_b(-upper)
    assert not P.positive_when_a_exceeds_b(a / (1 + a**2) - b / (1 + b**2))
    assert not P.positive_when_a_exceeds_b(lower - sp.Rational(1, 10**6))
    # Exact spot checks of the bounds themselves (the oracle for the proof).
    for fa, fb in [(Fraction(3), Fraction(1, 2)), (Fraction(101, 100), Fraction(1)),
                   (Fraction(10**6), Fraction(1, 10**6))]:
        assert fb / fa < F(fa) / F(fb) < fa / fb


@given(elrs, elrs)
def test_log_ratio_never_grows_package(a, b):
    """|log rho_{t+1}| <= |log rho_t| for ratio_step, with rho consistent with (E_l, E_k)."""
    rho = a / b
    nxt = N.ratio_step(rho, a, b)
    slack = 4 * STEP_TOL
    target(abs(np.log(nxt)) - abs(np.log(rho)))
    assert abs(np.log(nxt)) <= abs(np.log(rho)) + slack


# --------------------------------------------------------------------------- at most one flip


@given(elrs, elrs, st.integers(1, 300))
@example(1e3, 1e-2, 300)  # product 10: flips at step 1 only
@example(1.5, 1.2, 50)
def test_at_most_one_flip_constant_lr(a, b, steps):
    flips, _ = count_flips(M(a), M(b), [1] * steps)
    target(float(flips))
    assert flips <= 1
    # ... and the only possible flip is the first step.
    assert flips == (count_flips(Fraction(a), Fraction(b), [1])[0])


@given(elrs, elrs, gain_schedules)
@example(1.5, 1.2, [2.0] * 30)
@example(3.0, 0.4, [2.0, 2.0, 0.05, 2.0])
def test_at_most_one_flip_random_schedule(a, b, gains):
    """Any schedule whose lr grows by at most 2 per step (then constant) flips a pair <= once."""
    flips, _ = count_flips(M(a), M(b), [M(g) for g in gains] + [1] * 100)
    target(float(flips))
    assert flips <= 1


@given(moderate_elrs, moderate_elrs, st.lists(st.sampled_from([Fraction(1, 2), 1, 2]),
                                             min_size=1, max_size=7))
def test_at_most_one_flip_exact(a, b, gains):
    """The same with exact Fraction arithmetic on short schedules with gains in {1/2, 1, 2}."""
    flips, _ = count_flips(Fraction(a), Fraction(b), gains)
    assert flips <= 1


def _two_flips(args) -> bool:
    a, b, g = args
    return count_flips(Fraction(a), Fraction(b), [Fraction(g)] * 3)[0] >= 2


def test_gain_above_two_admits_a_second_flip():
    """The threshold 2 is sharp: constant gains just above 2 flip a pair twice (search)."""
    found = find(
        st.tuples(moderate_elrs, moderate_elrs, st.floats(2.0, 2.2, exclude_min=True)),
        _two_flips,
        settings=settings(max_examples=5000, database=None, derandomize=True),
    )
    assert _two_flips(found)
    # Brute-force grid: gains 2.05 .. 3 give double flips, gains <= 2 on the same grid never do.
    grid = [Fraction(k, 8) for k in range(4, 17)]  # 0.5 .. 2
    double = [(a, b, g) for a, b in itertools.combinations(grid, 2)
              for g in (Fraction(41, 20), Fraction(5, 2), Fraction(3))
              if count_flips(a, b, [g] * 3)[0] >= 2]
    assert double
    assert (Fraction(1), Fraction(9, 8), Fraction(41, 20)) in double
    assert not [(a, b, g) for a, b in itertools.combinations(grid, 2)
                for g in (Fraction(1), Fraction(3, 2), Fraction(2))
                if count_flips(a, b, [g] * 4)[0] >= 2]


def test_second_flip_after_a_large_lr_jump():
    """Constant lr (first flip), one lr jump by 10, constant lr again: the pair flips twice."""
    a, b = Fraction(3, 10), Fraction(5)
    assert count_flips(a, b, [1, 10, 1]) == (2, 3)
    assert count_flips(a, b, [1, 2, 1]) == (1, 3)


# --------------------------------------------------------------------------- convergence


@given(elrs, elrs, step_counts)
@example(1e-8, 1e8, 2000)
@example(1.0, 1.0 + 2**-40, 10)
@example(0.5, 2.0, 100)
def test_convergence_rate_bound(a, b, steps):
    """|rho_t^2 - 1| <= |d_1|/(u_l0 + 2t) for t >= 1 and |d_t| non-increasing from t = 1."""
    el, ek = M(a), M(b)
    u_l0 = 1 / el**2
    slack = 1 + M(10) ** -40
    d_prev = None
    ratio_to_bound = 0.0
    for t in range(1, steps + 1):
        el, ek = F(el), F(ek)
        u_l, u_k = 1 / el**2, 1 / ek**2
        d = u_k - u_l
        if d_prev is None:
            d1 = abs(d)
            if t == 1 and d1:
                # The package's d recurrence from the exact state at t = 1.
                got = N.d_step(float(d), float(u_k), float(u_l))
                want = (1 / F(ek) ** 2) - (1 / F(el) ** 2)
                assert abs(M(got) - want) <= 4 * STEP_TOL * abs(want)
        else:
            assert abs(d) <= abs(d_prev) * slack
        dev = abs((el / ek) ** 2 - 1)
        bound = d1 / (u_l0 + 2 * t)
        assert dev <= bound * slack
        if bound:
            ratio_to_bound = max(ratio_to_bound, float(dev / bound))
        d_prev = d
    target(ratio_to_bound)
