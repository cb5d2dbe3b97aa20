r"""Pairs of layers: the ELR ratio map, its unique attractor, flips and convergence.

For two layers :math:`\ell, k` at a common learning rate with constant base gradients,
:math:`\rho = E_\ell/E_k` evolves as

.. math::

    \rho_{t+1} = \rho_t\,\frac{1+E_k^2}{1+E_\ell^2}, \qquad
    F(a) - F(b) = \frac{(a-b)(1-ab)}{(1+a^2)(1+b^2)} ,

so the order of the two ELRs flips in a step iff :math:`E_\ell E_k > 1`.  Since
:math:`\max F = 1/2`, a second flip needs a learning-rate gain above 2.  With
:math:`d = u_k - u_\ell`, :math:`d_{t+1} = d_t(1 - E_\ell^2E_k^2)` and
:math:`\rho^2 - 1 = d/u_\ell = O(1/t)`.
"""

from __future__ import annotations

import functools

import sympy as sp

from normdyn.theory.norm_dynamics import continuous_u, elr_map, elr_map_general, u_map
from normdyn.theory.registry import Evidence, claim
from normdyn.theory.symbols import E, E_k, E_l, d, gain, rho, tex, u, u0, u_k, u_l
from normdyn.theory.symbols import t as t_sym

__all__ = [
    "ratio_map",
    "flip_factorization",
    "elr_map_maximum",
    "second_flip_gain_threshold",
    "d_recurrence",
    "ratio_deviation",
    "second_flip_counterexample",
    "positive_when_a_exceeds_b",
]

SECTION = "3. Pairs of layers"

_a, _b = sp.symbols("a b", positive=True)


def _F(x: sp.Expr) -> sp.Expr:
    return elr_map().subs(E, x)


def positive_when_a_exceeds_b(expr: sp.Expr) -> bool:
    r"""A proof that ``expr(a, b) > 0`` for all :math:`a > b > 0` (``False`` when none is found).

    Substitutes :math:`a = b + h` with :math:`b, h > 0` and asks SymPy's assumption system;
    only a definite ``True`` counts (``None``, "unknown", is no proof).
    """
    h = sp.Symbol("h", positive=True)
    shifted = sp.factor(sp.sympify(expr).subs(_a, _b + h))
    return shifted.is_positive is True


@functools.cache
def ratio_map() -> sp.Expr:
    r""":math:`\rho_{t+1}` in terms of :math:`\rho_t, E_\ell, E_k` (constant lr and *c*)."""
    return sp.simplify(rho * (_F(E_l) / E_l) / (_F(E_k) / E_k))


@functools.cache
def flip_factorization() -> sp.Expr:
    r"""The factorization of :math:`F(a) - F(b)`."""
    return sp.factor(_F(_a) - _F(_b))


@functools.cache
def elr_map_maximum() -> tuple[sp.Expr, sp.Expr]:
    r"""The maximizer and maximum of *F* on :math:`(0, \infty)`."""
    critical = sp.solve(sp.diff(_F(E), E), E)
    if len(critical) != 1:
        raise ArithmeticError(f"expected one critical point of F, got {critical}")
    return critical[0], sp.simplify(_F(critical[0]))


@functools.cache
def second_flip_gain_threshold() -> sp.Expr:
    r"""The smallest gain :math:`g` at which a pair can flip again after its first step.

    After any step both ELRs are at most :math:`g\max F`; a flip needs their
    product to exceed 1.
    """
    _, fmax = elr_map_maximum()
    return sp.solve(sp.Eq((gain * fmax) ** 2, 1), gain)[0]


def second_flip_counterexample(
    a0: sp.Expr | None = None, b0: sp.Expr | None = None, g: sp.Expr | None = None
) -> dict[str, sp.Expr]:
    """Exact steps in which a pair flips twice because the lr rises by ``g`` > 2 once.

    Step 0 -> 1 at constant lr (first flip), the lr is multiplied by ``g`` for step 2,
    and step 2 -> 3 at constant lr flips the pair again.  Defaults: 3/10, 5 and gain 10.
    """
    a0 = sp.Rational(3, 10) if a0 is None else sp.sympify(a0)
    b0 = sp.Integer(5) if b0 is None else sp.sympify(b0)
    g = sp.Integer(10) if g is None else sp.sympify(g)
    step = elr_map_general()
    a1, b1 = step.subs({E: a0, gain: 1}), step.subs({E: b0, gain: 1})
    a2, b2 = step.subs({E: a1, gain: g}), step.subs({E: b1, gain: g})
    a3, b3 = step.subs({E: a2, gain: 1}), step.subs({E: b2, gain: 1})
    return {"a0": a0, "b0": b0, "a1": a1, "b1": b1, "a2": a2, "b2": b2, "a3": a3, "b3": b3,
            "gain": g}


@functools.cache
def d_recurrence() -> sp.Expr:
    r""":math:`d_{t+1}` in terms of :math:`d_t = u_k - u_\ell` and :math:`u_\ell, u_k`."""
    nxt = u_map().subs(u, u_k) - u_map().subs(u, u_l)
    return d * sp.factor(sp.simplify(nxt / (u_k - u_l)))

def ratio_deviation() -> sp.Expr:
    r""":math:`\rho^2 - 1` in *u* variables (:math:`\rho^2 = E_\ell^2/E_k^2 = u_k/u_\ell`)."""
    return sp.simplify((E_l**2 / E_k**2).subs({E_l: 1 / sp.sqrt(u_l), E_k: 1 / sp.sqrt(u_k)}) - 1)


@claim(
    "ratio_map",
    "rho_{t+1} = rho_t (1 + E_k^2)/(1 + E_l^2) for rho = E_l/E_k at constant lr and c.",
    SECTION,
)
def _check_ratio_map() -> Evidence:
    rm = ratio_map()
    direct = _F(E_l) / _F(E_k)  # the next ratio computed from the next ELRs
    passed = sp.simplify(rm.subs(rho, E_l / E_k) - direct) == 0
    return Evidence(passed, r"\rho_{t+1} = " + tex(rm), f"rho_(t+1) = {rm}")


@claim(
    "unique_attractor",
    "Lemma 3.2: rho = 1 is invariant and the only invariant ratio; in the continuous model "
    "rho(t)^2 = (u_k0 + 2t)/(u_l0 + 2t) tends to 1 monotonically without crossing it.",
    SECTION,
)
def _check_unique_attractor() -> Evidence:
    rm = ratio_map().subs(E_l, rho * E_k)
    fixed = sp.solve(sp.Eq(rm, rho), rho)
    u_l0, u_k0 = sp.symbols("u_l0 u_k0", positive=True)
    rho2 = continuous_u().subs(u0, u_k0) / continuous_u().subs(u0, u_l0)
    limit = sp.limit(rho2, t_sym, sp.oo)
    deviation = sp.simplify(rho2 - 1)  # = (u_k0 - u_l0)/(u_l0 + 2t): sign fixed by u_k0 - u_l0
    numerator, denominator = sp.fraction(sp.together(deviation))
    never_crosses = sp.simplify(numerator - (u_k0 - u_l0)) == 0 and denominator.is_positive
    slope = sp.factor(sp.diff(rho2, t_sym))
    monotone = sp.simplify(slope * (u_k0 - u_l0)).is_nonpositive
    passed = fixed == [1] and limit == 1 and never_crosses and monotone
    return Evidence(
        passed,
        r"\rho_{t+1} = \rho_t \iff \rho = " + tex(fixed[0] if fixed else sp.nan)
        + r",\quad \rho(t)^2 - 1 = " + tex(deviation),
        f"fixed points {fixed}; lim rho(t)^2 = {limit}; d rho^2/dt = {slope}",
    )


@claim(
    "flip_condition",
    "Lemma 3.4: F(a) - F(b) = (a-b)(1-ab)/((1+a^2)(1+b^2)): the order of two ELRs flips in a "
    "step iff E_l E_k > 1, they become equal iff E_l E_k = 1, and |log rho| never grows.",
    SECTION,
)
def _check_flip_condition() -> Evidence:
    fact = flip_factorization()
    target = (_a - _b) * (1 - _a * _b) / ((1 + _a**2) * (1 + _b**2))
    identity = sp.simplify(fact - target) == 0
    # sign(F(a)-F(b)) / sign(a-b) = sign(1 - ab): flip iff ab > 1, tie iff ab = 1.
    flip_factor = sp.simplify(fact / (_a - _b) * (1 + _a**2) * (1 + _b**2))
    ties = sp.solve(sp.Eq(flip_factor, 0), _b)
    # |log rho| non-increasing for a > b: b/a <= F(a)/F(b) <= a/b.
    lower = sp.factor(_a * _F(_a) - _b * _F(_b))  # > 0 iff F(a)/F(b) > b/a
    upper = sp.factor(_a * _F(_b) - _b * _F(_a))  # > 0 iff F(a)/F(b) < a/b
    contraction = positive_when_a_exceeds_b(lower) and positive_when_a_exceeds_b(upper)
    passed = identity and ties == [1 / _a] and contraction
    return Evidence(
        passed,
        r"F(a) - F(b) = " + tex(fact),
        f"flip factor {flip_factor}; tie at b = {ties}; aF(a)-bF(b) = {lower}; "
        f"aF(b)-bF(a) = {upper}",
    )


@claim(
    "flip_at_most_once",
    "Lemma 3.5: max F = F(1) = 1/2, so after a step all ELRs are <= gain/2; with a step-to-step "
    "lr gain <= 2 (in particular constant lr) a pair flips at most once, at its first step; "
    "a gain above 2 admits a second flip (explicit counterexample).",
    SECTION,
)
def _check_flip_at_most_once() -> Evidence:
    arg, fmax = elr_map_maximum()
    gap = sp.factor(fmax - _F(E))  # = (E-1)^2 / (2(E^2+1)) >= 0
    nonneg = sp.simplify(gap * 2 * (E**2 + 1) - (E - 1) ** 2) == 0
    threshold = second_flip_gain_threshold()
    ce = second_flip_counterexample()
    first_flip = (ce["a0"] - ce["b0"]) * (ce["a1"] - ce["b1"]) < 0
    second_flip = (ce["a2"] - ce["b2"]) * (ce["a3"] - ce["b3"]) < 0
    passed = arg == 1 and fmax == sp.Rational(1, 2) and nonneg and threshold == 2
    passed = passed and bool(first_flip) and bool(second_flip)
    return Evidence(
        passed,
        r"\max F = F(" + tex(arg) + ") = " + tex(fmax)
        + r",\quad 1/2 - F(E) = " + tex(gap) + r",\quad g^* = " + tex(threshold),
        f"second flip possible only for gain > {threshold}; counterexample: "
        + ", ".join(f"{k}={sp.nsimplify(v)}" for k, v in ce.items()),
    )


@claim(
    "convergence_rate",
    "Thm 3.6: d = u_k - u_l obeys d_{t+1} = d_t (1 - E_l^2 E_k^2), so |d| never grows after "
    "the first step, and |rho_t^2 - 1| = |d_t|/u_l,t <= |d_1|/(u_l0 + 2t) = O(1/t).",
    SECTION,
)
def _check_convergence_rate() -> Evidence:
    rec = d_recurrence()
    factor = sp.simplify(rec / d)
    in_elr = sp.simplify(factor.subs({u_l: 1 / E_l**2, u_k: 1 / E_k**2}))
    target_ok = sp.simplify(in_elr - (1 - E_l**2 * E_k**2)) == 0
    _, fmax = elr_map_maximum()
    contraction_after_step = in_elr.subs({E_l: fmax, E_k: fmax})  # smallest factor after a step
    dev = ratio_deviation()
    dev_ok = sp.simplify(dev - d / u_l).subs(d, u_k - u_l) == 0
    passed = target_ok and 0 <= contraction_after_step < 1 and dev_ok
    return Evidence(
        passed,
        r"d_{t+1} = " + tex(rec) + r",\quad \rho^2 - 1 = " + tex(dev),
        f"factor in ELR terms {in_elr}; after one step it lies in "
        f"[{contraction_after_step}, 1]",
    )
