r"""The critical learning rate: the lr that minimizes the ELR spread after one step.

With per-unit-lr ELRs :math:`a_\ell = \lVert\nabla L_\ell\rVert/\lVert w_\ell\rVert`, the spread
after one step at lr :math:`\eta` is

.. math::

    S(\eta) = \frac{\max_\ell F(\eta a_\ell)}{\min_\ell F(\eta a_\ell)}
            = \max_\ell \frac{F(\eta a_\ell)}{F(\eta a_{\min})}\ (\eta \le \eta^*),\qquad
    \eta^* = \frac{1}{\sqrt{a_{\max}a_{\min}}} .

Each ratio :math:`F(\eta a_\ell)/F(\eta a_{\min})` is non-increasing in :math:`\eta`, and
each :math:`F(\eta a_\ell)/F(\eta a_{\max})` non-decreasing, so *S* decreases up to
:math:`\eta^*` and increases after it; at :math:`\eta^*` the extreme layers end the step
with equal ELR since :math:`F(x) = F(1/x)`.
"""

from __future__ import annotations

import functools

import sympy as sp

from normdyn.theory.norm_dynamics import elr_map
from normdyn.theory.registry import Evidence, claim
from normdyn.theory.symbols import E, a_max, a_min, eta, tex

__all__ = ["critical_lr", "critical_lr_in_elr", "spread_ratio_slope"]

SECTION = "4. Critical learning rate"

_a_i = sp.Symbol("a_i", positive=True)


def _F(x: sp.Expr) -> sp.Expr:
    return elr_map().subs(E, x)


@functools.cache
def critical_lr() -> sp.Expr:
    r""":math:`\eta^*`: the positive lr at which the extreme layers end the step at equal ELR."""
    roots = sp.solve(sp.Eq(_F(eta * a_max), _F(eta * a_min)), eta)
    positive = [r for r in roots if r.is_positive]
    if len(positive) != 1:
        raise ArithmeticError(f"expected one positive root, got {roots}")
    return sp.simplify(positive[0])


def critical_lr_in_elr() -> sp.Expr:
    r""":math:`\eta^*` written with the current ELRs :math:`E = \eta a` at the current lr :math:`\eta`."""
    e_max, e_min = sp.symbols("E_max E_min", positive=True)
    return sp.simplify(critical_lr().subs({a_max: e_max / eta, a_min: e_min / eta}))


@functools.cache
def spread_ratio_slope(reference: sp.Symbol = a_min) -> sp.Expr:
    r""":math:`\partial_\eta [F(\eta a_i)/F(\eta a_{\mathrm{ref}})]`, factored."""
    return sp.factor(sp.diff(_F(eta * _a_i) / _F(eta * reference), eta))


@claim(
    "critical_lr",
    "eta* = 1/sqrt(a_max a_min) = eta/sqrt(E_max E_min): the one-step spread S(eta) does not "
    "increase for eta <= eta* and does not decrease for eta >= eta*; at eta* the extreme "
    "layers end the step at equal ELR.",
    SECTION,
)
def _check_critical_lr() -> Evidence:
    star = critical_lr()
    equal_at_star = sp.simplify(_F(star * a_max) - _F(star * a_min)) == 0
    product_is_one = sp.simplify(star**2 * a_max * a_min) == 1
    below = spread_ratio_slope(a_min)
    above = spread_ratio_slope(a_max)
    # Sign of the slopes: substitute a_i = a_min + h (h >= 0) and a_i = a_max - h.
    h = sp.Symbol("h", positive=True)
    below_sign = sp.factor(below.subs(_a_i, a_min + h))
    above_sign = sp.factor(above.subs(a_max, _a_i + h))
    passed = (
        equal_at_star
        and product_is_one
        and below_sign.is_negative
        and above_sign.is_positive
    )
    e_form = critical_lr_in_elr()
    return Evidence(
        passed,
        r"\eta^* = " + tex(star) + " = " + tex(e_form)
        + r",\quad \partial_\eta \frac{F(\eta a_i)}{F(\eta a_{\min})} = " + tex(below),
        f"slope below eta* with a_i=a_min+h: {below_sign}; "
        f"slope of F(eta a_i)/F(eta a_max) with a_max=a_i+h: {above_sign}",
    )
