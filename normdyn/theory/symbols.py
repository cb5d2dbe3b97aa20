"""Canonical symbols of the norm-level model, defined once.

Every derivation in :mod:`normdyn.theory` uses these objects, so that expressions
produced by different modules combine and simplify against each other.

=============  ==============================================================
symbol         meaning
=============  ==============================================================
``eta``        learning rate :math:`\\eta` at step *t*
``eta_next``   learning rate :math:`\\eta_{t+1}`
``c``          base gradient :math:`c = \\lVert\\nabla L(w)\\rVert\\,\\lVert w\\rVert`
``c_next``     base gradient at step *t+1*
``sigma2``     squared weight norm :math:`\\sigma^2 = \\lVert w\\rVert^2`
``sigma2_0``   squared weight norm at time 0
``E``          effective learning rate :math:`E = \\eta c/\\sigma^2`
``E0``         ELR at time 0
``E_l, E_k``   ELRs of two layers :math:`\\ell` and *k*
``a_l, a_k``   per-unit-lr ELRs :math:`a = \\lVert\\nabla L\\rVert/\\lVert w\\rVert`
``a_max``      largest per-unit-lr ELR of the network
``a_min``      smallest per-unit-lr ELR of the network
``u``          :math:`u = E^{-2}`
``u0``         *u* at time 0
``u_l, u_k``   *u* of two layers
``d``          :math:`d = u_k - u_\\ell`
``rho``        ELR ratio :math:`\\rho = E_\\ell/E_k`
``t``          time, in steps
``lam``        coupled weight decay :math:`\\lambda`
``beta``       heavy-ball momentum :math:`\\beta`
``alpha``      a positive rescaling of the weights
``gain``       :math:`\\eta_{t+1}c_{t+1}/(\\eta_t c_t)`, the schedule gain of one step
=============  ==============================================================
"""

from __future__ import annotations

import sympy as sp

__all__ = [
    "eta", "eta_next", "c", "c_next", "sigma2", "sigma2_0", "E", "E0", "E_l", "E_k",
    "a_l", "a_k", "a_max", "a_min", "u", "u0", "u_l", "u_k", "d", "rho", "t", "lam",
    "beta", "alpha", "gain", "grad_norm", "weight_norm", "Hypot", "LATEX_NAMES", "tex",
]

eta, eta_next = sp.symbols("eta eta_next", positive=True)
c, c_next = sp.symbols("c c_next", positive=True)
sigma2, sigma2_0 = sp.symbols("sigma2 sigma2_0", positive=True)
E, E0 = sp.symbols("E E0", positive=True)
E_l, E_k = sp.symbols("E_l E_k", positive=True)
a_l, a_k = sp.symbols("a_l a_k", positive=True)
a_max, a_min = sp.symbols("a_max a_min", positive=True)
u, u0 = sp.symbols("u u0", positive=True)
u_l, u_k = sp.symbols("u_l u_k", positive=True)
d = sp.Symbol("d", real=True)
rho = sp.Symbol("rho", positive=True)
t = sp.Symbol("t", nonnegative=True)
lam = sp.Symbol("lam", positive=True)
beta = sp.Symbol("beta", nonnegative=True)
alpha = sp.Symbol("alpha", positive=True)
gain = sp.Symbol("gain", positive=True)
grad_norm, weight_norm = sp.symbols("grad_norm weight_norm", positive=True)


class Hypot(sp.Function):
    """:math:`\\operatorname{hypot}(x, y) = \\sqrt{x^2 + y^2}`, printed as ``numpy.hypot``.

    Used to write numerically stable forms: ``hypot`` never overflows or
    underflows in its intermediate square, so ``1/hypot(1/E, ...)`` stays finite
    and correct for ``E = 1e300`` and ``E = 1e-300``.
    """

    nargs = 2
    is_positive = True

    def _eval_rewrite_as_sqrt(self, x, y, **kwargs):
        return sp.sqrt(x**2 + y**2)

    def _numpycode(self, printer):
        x, y = (printer._print(arg) for arg in self.args)
        return f"{printer._module_format('numpy.hypot')}({x}, {y})"

    def _pythoncode(self, printer):
        x, y = (printer._print(arg) for arg in self.args)
        return f"{printer._module_format('math.hypot')}({x}, {y})"

    def _latex(self, printer):
        x, y = (printer._print(arg) for arg in self.args)
        return rf"\sqrt{{{x}^{{2}} + {y}^{{2}}}}"


LATEX_NAMES: dict[sp.Symbol, str] = {
    sigma2: r"\sigma^{2}",
    sigma2_0: r"\sigma_{0}^{2}",
    eta_next: r"\eta_{t+1}",
    c_next: r"c_{t+1}",
    lam: r"\lambda",
    E_l: r"E_{\ell}",
    a_l: r"a_{\ell}",
    u_l: r"u_{\ell}",
    a_max: r"a_{\max}",
    a_min: r"a_{\min}",
    gain: r"g",
}


def tex(expr: sp.Basic) -> str:
    """LaTeX of ``expr`` with the canonical symbols' conventional names."""
    return sp.latex(expr, symbol_names=LATEX_NAMES)
