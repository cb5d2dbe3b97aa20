r"""Scale invariance: the gradient is orthogonal to the weights and scales as :math:`1/\lVert w\rVert`.

For a layer whose loss satisfies :math:`L(\alpha w) = L(w)` for all :math:`\alpha>0`,

.. math::

    \langle \nabla L(w), w\rangle = 0, \qquad \nabla L(\alpha w) = \nabla L(w)/\alpha .

Two routes establish this here:

1. a concrete scale-invariant function in :math:`\mathbb{R}^3`, differentiated by SymPy;
2. general :math:`d`: any :math:`L(w) = G(w/\lVert w\rVert)` with *G* arbitrary.  With
   :math:`r = \lVert w\rVert` the chain rule gives
   :math:`\partial_j L = \sum_i G_i\,(\delta_{ij}/r - w_i w_j/r^3)`, and the sums over the
   symbolic dimension *d* are evaluated by SymPy using :math:`\sum_j w_j^2 = r^2`.
   The same chain-rule expression is homogeneous of degree -1 in *w*.
"""

from __future__ import annotations

import functools

import sympy as sp
from sympy.simplify.simplify import factor_sum

from normdyn.theory.registry import Evidence, claim
from normdyn.theory.symbols import tex

__all__ = [
    "concrete_scale_invariant_loss",
    "concrete_gradient",
    "general_inner_product",
    "general_gradient_scaling",
]

SECTION = "1. Scale invariance"

_w = sp.symbols("w1:4", real=True)
_p = sp.symbols("p1:4", real=True)
_q = sp.symbols("q1:4", real=True)


def concrete_scale_invariant_loss() -> sp.Expr:
    r"""A concrete :math:`L:\mathbb{R}^3\to\mathbb{R}` with :math:`L(\alpha w)=L(w)`.

    .. math:: L(w) = \frac{(p\cdot w)^2}{w\cdot w} + \frac{q\cdot w}{\lVert w\rVert}

    (the loss of a normalized linear unit with a quadratic and a linear readout).
    """
    wdotw = sum(wi**2 for wi in _w)
    pw = sum(pi * wi for pi, wi in zip(_p, _w, strict=True))
    qw = sum(qi * wi for qi, wi in zip(_q, _w, strict=True))
    return pw**2 / wdotw + qw / sp.sqrt(wdotw)


@functools.cache
def concrete_gradient() -> tuple[sp.Expr, ...]:
    """The SymPy gradient of :func:`concrete_scale_invariant_loss`."""
    loss = concrete_scale_invariant_loss()
    return tuple(sp.diff(loss, wi) for wi in _w)


def _general_symbols():
    i, j, dim = sp.symbols("i j d", integer=True, positive=True)
    w = sp.IndexedBase("w", real=True)
    big_g = sp.IndexedBase("G")  # the partial derivatives of the arbitrary G at w/r
    r = sp.Symbol("r", positive=True)
    return i, j, dim, w, big_g, r


def _general_partial(alpha_scale: sp.Expr = sp.S.One):
    """:math:`\\partial_j L` at :math:`\\alpha w` for :math:`L = G(w/r)`, by the chain rule."""
    i, j, dim, w, big_g, r = _general_symbols()
    # G's partials are evaluated at (alpha w)/(alpha r) = w/r: identical for every alpha.
    term = big_g[i] * (
        sp.KroneckerDelta(i, j) / (alpha_scale * r)
        - (alpha_scale * w[i]) * (alpha_scale * w[j]) / (alpha_scale * r) ** 3
    )
    return sp.Sum(term, (i, 1, dim))


@functools.cache
def general_inner_product() -> sp.Expr:
    r""":math:`\langle \nabla L(w), w\rangle` for arbitrary *G* and symbolic dimension *d*."""
    i, j, dim, w, big_g, r = _general_symbols()
    # Swap the sums: sum_i G_i sum_j w_j (delta_ij/r - w_i w_j/r^3), and evaluate over j.
    over_j = sp.Sum(w[j] * (sp.KroneckerDelta(i, j) / r - w[i] * w[j] / r**3), (j, 1, dim))
    over_j = over_j.doit().replace(
        lambda e: isinstance(e, sp.Piecewise), lambda e: e.args[0][0]
    )  # i lies in 1..d, so the delta's sum picks w_i
    norm_sq = sp.Sum(w[j] ** 2, (j, 1, dim))
    over_j = sp.expand(over_j).replace(lambda e: isinstance(e, sp.Sum), factor_sum)
    over_j = sp.simplify(over_j.subs(norm_sq, r**2))
    return sp.simplify(sp.Sum(big_g[i] * over_j, (i, 1, dim)).doit())


@functools.cache
def general_gradient_scaling() -> sp.Expr:
    r""":math:`\alpha\,\partial_j L(\alpha w) - \partial_j L(w)` for arbitrary *G* and *d*."""
    alpha = sp.Symbol("alpha", positive=True)
    return sp.simplify(alpha * _general_partial(alpha).doit() - _general_partial().doit())


@claim(
    "orthogonal_gradient",
    "Scale invariance L(aw)=L(w) implies <grad L(w), w> = 0 (concrete d=3 function and "
    "arbitrary G(w/|w|) in symbolic dimension d).",
    SECTION,
)
def _check_orthogonal_gradient() -> Evidence:
    loss = concrete_scale_invariant_loss()
    alpha = sp.Symbol("alpha", positive=True)
    invariant = sp.simplify(loss.subs({wi: alpha * wi for wi in _w}, simultaneous=True) - loss)
    grad = concrete_gradient()
    concrete = sp.simplify(sum(g * wi for g, wi in zip(grad, _w, strict=True)))
    general = general_inner_product()
    passed = invariant == 0 and concrete == 0 and general == 0
    return Evidence(
        passed,
        r"\langle \nabla L(w), w \rangle = \sum_j w_j \sum_i G_i\left(\frac{\delta_{ij}}{r}"
        r" - \frac{w_i w_j}{r^3}\right) = " + tex(general),
        f"L(aw)-L(w)={invariant}; concrete <g,w>={concrete}; general d: {general}",
    )


@claim(
    "gradient_scaling",
    "grad L(a w) = grad L(w) / a, so |grad L| = c/|w| with c = |grad L(w)|*|w| "
    "the base gradient (concrete d=3 function and arbitrary G in dimension d).",
    SECTION,
)
def _check_gradient_scaling() -> Evidence:
    alpha = sp.Symbol("alpha", positive=True)
    grad = concrete_gradient()
    scaled = [g.subs({wi: alpha * wi for wi in _w}, simultaneous=True) for g in grad]
    concrete = [sp.simplify(alpha * s - g) for s, g in zip(scaled, grad, strict=True)]
    general = general_gradient_scaling()
    passed = all(x == 0 for x in concrete) and general == 0
    return Evidence(
        passed,
        r"\nabla L(\alpha w) = \alpha^{-1} \nabla L(w) \;\Rightarrow\; "
        r"\lVert\nabla L(w)\rVert = \frac{c}{\lVert w\rVert}",
        f"concrete alpha*g(alpha w)-g(w) = {concrete}; general d: {general}",
    )
