r"""Beyond plain SGD: coupled weight decay and heavy-ball momentum.

**Weight decay** (``torch.optim.SGD`` form, :math:`w \leftarrow (1-\eta\lambda)w - \eta\nabla L`):

.. math::

    \sigma^2_{t+1} = (1-\eta\lambda)^2\sigma^2_t + \frac{\eta^2c^2}{\sigma^2_t},\qquad
    E^* = \sqrt{\eta\lambda(2-\eta\lambda)},\qquad
    \frac{\lVert\Delta w\rVert}{\lVert w\rVert}\Big|_* = \sqrt{2\eta\lambda},

the same for every layer.

**Momentum** :math:`\beta` with gradients uncorrelated across steps (the random-walk
regime): the velocity :math:`v_t = \sum_s \beta^s g_{t-s}` has
:math:`\mathbb{E}\lVert v\rVert^2 = \lVert g\rVert^2/(1-\beta^2)`, and each gradient
eventually displaces the weights by :math:`\eta g/(1-\beta)`, so :math:`\sigma^2` grows
like SGD at lr :math:`\eta/(1-\beta)`.  The update ELR :math:`E_u = \eta\lVert v\rVert/\lVert w\rVert`
then has :math:`u = E_u^{-2}` growing by :math:`2(1+\beta)/(1-\beta)` per step, and with
weight decay the equilibrium update ELR is :math:`\sqrt{2\eta\lambda/(1+\beta)}` to
leading order in :math:`\eta\lambda`.  These are first-order, expectation-level results:
the drift simulator (:mod:`normdyn.simulate.drift`) measures how far they hold.
"""

from __future__ import annotations

import functools

import sympy as sp

from normdyn.theory.norm_dynamics import elr_definition, pythagoras_expansion
from normdyn.theory.registry import Evidence, claim
from normdyn.theory.symbols import beta, c, eta, lam, sigma2, tex
from normdyn.theory.symbols import t as t_sym

__all__ = [
    "weight_decay_norm_recurrence",
    "weight_decay_equilibrium_sigma2",
    "weight_decay_equilibrium_elr",
    "weight_decay_equilibrium_update_elr",
    "momentum_velocity_factor",
    "momentum_displacement_factor",
    "momentum_norm_recurrence",
    "momentum_update_elr",
    "momentum_u_growth",
    "momentum_equilibrium_update_elr",
    "momentum_equilibrium_update_elr_leading",
    "geometric_update_elr",
    "geometric_rotation_tan",
    "momentum_equilibrium_rotation",
    "adam_sigma2",
    "adam_update_elr_ratio_sq",
]

SECTION = "5. Beyond plain SGD"

_wg = sp.Symbol("w_dot_g", real=True)
_gg = sp.Symbol("g_dot_g", positive=True)
_s = sp.Symbol("s", integer=True, nonnegative=True)


@functools.cache
def weight_decay_norm_recurrence() -> sp.Expr:
    r""":math:`\sigma^2_{t+1}` for :math:`w \leftarrow (1-\eta\lambda)w - \eta g`."""
    w_scaled = (1 - eta * lam) ** 2 * sigma2  # |(1-eta lam) w|^2
    inner = (1 - eta * lam) * _wg
    expansion = w_scaled - 2 * eta * inner + eta**2 * _gg
    return sp.expand(expansion.subs({_wg: 0, _gg: c**2 / sigma2}))


@functools.cache
def weight_decay_equilibrium_sigma2() -> sp.Expr:
    r"""The positive fixed point of :func:`weight_decay_norm_recurrence` (valid for :math:`\eta\lambda<2`)."""
    roots = sp.solve(sp.Eq(weight_decay_norm_recurrence(), sigma2), sigma2)
    return _unique_positive(roots, {eta: sp.Rational(1, 10), lam: sp.Rational(1, 10), c: 1})


@functools.cache
def weight_decay_equilibrium_elr() -> sp.Expr:
    r"""Gradient ELR :math:`\eta c/\sigma^2` at the weight-decay equilibrium."""
    return sp.simplify(elr_definition().subs(sigma2, weight_decay_equilibrium_sigma2()))


@functools.cache
def weight_decay_equilibrium_update_elr() -> sp.Expr:
    r""":math:`\lVert\Delta w\rVert/\lVert w\rVert` at equilibrium, :math:`\Delta w = -\eta(\lambda w + g)`."""
    update_sq = eta**2 * lam**2 * sigma2 + eta**2 * c**2 / sigma2  # lambda w is orthogonal to g
    ratio = sp.sqrt(update_sq / sigma2).subs(sigma2, weight_decay_equilibrium_sigma2())
    return sp.simplify(ratio)


@functools.cache
def momentum_velocity_factor() -> sp.Expr:
    r""":math:`\mathbb{E}\lVert v\rVert^2/\lVert g\rVert^2` for uncorrelated gradients of fixed norm."""
    return sp.simplify(sp.summation(beta ** (2 * _s), (_s, 0, sp.oo)).args[0][0])


@functools.cache
def momentum_displacement_factor() -> sp.Expr:
    r"""Total displacement caused by one gradient, in units of :math:`\eta g`."""
    return sp.simplify(sp.summation(beta**_s, (_s, 0, sp.oo)).args[0][0])


@functools.cache
def momentum_norm_recurrence() -> sp.Expr:
    r""":math:`\sigma^2_{t+1}` with momentum and weight decay (uncorrelated gradients, first order).

    Each gradient's whole displacement :math:`\eta g/(1-\beta)` is orthogonal to the
    weights it was computed at, and the weight decay acts through the same factor.
    """
    eff = eta * momentum_displacement_factor()
    return weight_decay_norm_recurrence().subs(eta, eff)


@functools.cache
def momentum_update_elr() -> sp.Expr:
    r"""Update ELR :math:`\eta\lVert v\rVert/\lVert w\rVert` from the gradient ELR *E* (stationary velocity)."""
    e_grad = sp.Symbol("E", positive=True)
    return e_grad * sp.sqrt(momentum_velocity_factor())


@functools.cache
def momentum_u_growth() -> sp.Expr:
    r"""Growth per step of :math:`u = E_u^{-2}` under momentum (no weight decay, gradient flow)."""
    sig = sp.Function("sigma2")(t_sym)
    growth = sp.simplify(momentum_norm_recurrence().subs(lam, 0) - sigma2)  # d sigma2/dt
    e_u = momentum_update_elr().subs(sp.Symbol("E", positive=True), elr_definition())
    u_of_sigma = (1 / e_u**2).subs(sigma2, sig)
    du_dt = sp.diff(u_of_sigma, t_sym).subs(sp.Derivative(sig, t_sym), growth.subs(sigma2, sig))
    return sp.simplify(du_dt)


norm_ratio = sp.Symbol("norm_ratio", positive=True)  # s = sigma2_{t+1} / sigma2_t
E_tan = sp.Symbol("E_tan", nonnegative=True)  # tangential part of the update, over |w|


@functools.cache
def geometric_update_elr() -> sp.Expr:
    r"""Update ELR from the norm ratio :math:`s` and the tangential update ELR.

    Write :math:`\Delta w = r\,w + \tau` with :math:`\tau \perp w`, :math:`\lVert\tau\rVert =
    E_{tan}\lVert w\rVert`.  Pythagoras gives :math:`(1+r)^2 + E_{tan}^2 = s`; the root with
    :math:`1 + r > 0` (the weights do not flip sign) fixes the radial part, and
    :math:`\lVert\Delta w\rVert/\lVert w\rVert = \sqrt{r^2 + E_{tan}^2}`.  Any model that
    predicts :math:`s` and :math:`E_{tan}` thereby predicts the whole update, radial part included.
    """
    return sp.sqrt(_radial_part() ** 2 + E_tan**2)


@functools.cache
def _radial_part() -> sp.Expr:
    r"""The radial part *r* of :math:`\Delta w = r\,w + \tau`: the root of
    :math:`(1 + r)^2 + E_{tan}^2 = s` with :math:`1 + r > 0`."""
    r = sp.Symbol("r", real=True)
    roots = sp.solve(sp.Eq((1 + r) ** 2 + E_tan**2, norm_ratio), r)
    radial = [x for x in roots if sp.simplify((1 + x).subs({norm_ratio: 2, E_tan: 0})) > 0]
    if len(radial) != 1:
        raise ArithmeticError(f"expected one root with 1 + r > 0, got {roots}")
    return radial[0]


@functools.cache
def geometric_rotation_tan() -> sp.Expr:
    r"""Tangent of the angle the weights turn in one step, from *s* and :math:`E_{tan}`.

    With :math:`\Delta w = r\,w + \tau` as in :func:`geometric_update_elr`, the new
    weights :math:`(1+r)w + \tau` make the angle :math:`\theta` with *w* where
    :math:`\tan\theta = \lVert\tau\rVert/((1+r)\lVert w\rVert) = E_{tan}/(1+r)`.
    """
    return E_tan / (1 + _radial_part())


@functools.cache
def _equilibrium_tangential_elr() -> sp.Expr:
    """Tangential update ELR at the equilibrium of the momentum + weight-decay model."""
    roots = sp.solve(sp.Eq(momentum_norm_recurrence(), sigma2), sigma2)
    sig_star = _unique_positive(
        roots, {eta: sp.Rational(1, 10), lam: sp.Rational(1, 10), c: 1, beta: sp.Rational(1, 2)}
    )
    e_tan = momentum_update_elr().subs(sp.Symbol("E", positive=True), elr_definition())
    return sp.simplify(e_tan.subs(sigma2, sig_star))


@functools.cache
def momentum_equilibrium_update_elr() -> sp.Expr:
    r"""Equilibrium update ELR of the momentum model with weight decay (exact in the model).

    At equilibrium :math:`s = 1`; the tangential part is the stationary velocity's
    :func:`momentum_update_elr` of the equilibrium gradient ELR.
    """
    return geometric_update_elr().subs({norm_ratio: 1, E_tan: _equilibrium_tangential_elr()})


@functools.cache
def momentum_equilibrium_rotation() -> sp.Expr:
    r"""Tangent of the angle turned per step at the momentum + weight-decay equilibrium.

    At equilibrium :math:`s = 1`, so :func:`geometric_rotation_tan` gives
    :math:`\tan\theta^* = E_{tan}/\sqrt{1 - E_{tan}^2}` with the equilibrium tangential
    ELR; to leading order in :math:`\eta\lambda` it is :math:`\sqrt{2\eta\lambda/(1+\beta)}`,
    like the update ELR.  This is the angle a rotational optimizer (Kosson et al.) imposes.
    """
    return geometric_rotation_tan().subs({norm_ratio: 1, E_tan: _equilibrium_tangential_elr()})


@functools.cache
def momentum_equilibrium_update_elr_leading() -> sp.Expr:
    r"""Leading order in :math:`\eta\lambda` of :func:`momentum_equilibrium_update_elr`."""
    x = sp.Symbol("x", positive=True)  # x = eta*lam
    exact = momentum_equilibrium_update_elr().subs(lam, x / eta)
    lead = sp.series(exact**2, x, 0, 2).removeO()
    return sp.sqrt(sp.factor(lead)).subs(x, eta * lam)


def _unique_positive(roots: list[sp.Expr], probe: dict) -> sp.Expr:
    positive = [r for r in roots if sp.N(r.subs(probe)) > 0]
    if len(positive) != 1:
        raise ArithmeticError(f"expected one positive root, got {roots}")
    return sp.simplify(positive[0])


@claim(
    "weight_decay_equilibrium",
    "Coupled weight decay: sigma2_{t+1} = (1-eta lam)^2 sigma2_t + eta^2 c^2/sigma2_t has an "
    "attracting equilibrium with gradient ELR sqrt(eta lam (2 - eta lam)) ~ sqrt(2 eta lam) "
    "and update ELR exactly sqrt(2 eta lam), independent of c (equal for all layers).",
    SECTION,
)
def _check_weight_decay() -> Evidence:
    rec = weight_decay_norm_recurrence()
    plain = sp.simplify(rec.subs(lam, 0) - pythagoras_expansion().subs({_wg: 0, _gg: c**2 / sigma2}))
    e_star = weight_decay_equilibrium_elr()
    e_upd = weight_decay_equilibrium_update_elr()
    no_c = c not in e_star.free_symbols and c not in e_upd.free_symbols
    slope = sp.simplify(sp.diff(rec, sigma2).subs(sigma2, weight_decay_equilibrium_sigma2()))
    x = sp.Symbol("x", positive=True)
    slope_small = sp.series(slope.subs(lam, x / eta), x, 0, 2).removeO()
    attracting = sp.simplify(slope_small - (1 - 4 * x)) == 0
    lead = sp.series((e_star**2).subs(lam, x / eta), x, 0, 2).removeO()
    passed = plain == 0 and no_c and attracting and sp.simplify(lead - 2 * x) == 0
    passed = passed and sp.simplify(e_upd**2 - 2 * eta * lam) == 0
    return Evidence(
        passed,
        r"E^* = " + tex(e_star) + r",\quad \frac{\lVert\Delta w\rVert}{\lVert w\rVert}"
        r"\Big|_* = " + tex(e_upd),
        f"map slope at equilibrium {slope} ~ 1 - 4 eta lam; E*^2 = {lead} + O((eta lam)^2)",
    )


@claim(
    "momentum_equilibrium",
    "Heavy-ball momentum beta, uncorrelated gradients: |v|^2 = |g|^2/(1-beta^2), sigma2 grows "
    "like SGD at lr eta/(1-beta), u = E_update^-2 grows by 2(1+beta)/(1-beta) per step, and "
    "with weight decay the update ELR equilibrates at sqrt(2 eta lam/(1+beta)) to leading order "
    "(and at exactly sqrt(2 eta lam) without momentum).",
    SECTION,
)
def _check_momentum() -> Evidence:
    vel = momentum_velocity_factor()
    disp = momentum_displacement_factor()
    growth = momentum_u_growth()
    lead = momentum_equilibrium_update_elr_leading()
    reduces = sp.simplify(growth.subs(beta, 0) - 2) == 0  # SGD: u grows by 2 per step
    growth_ok = sp.simplify(growth - 2 * (1 + beta) / (1 - beta)) == 0
    lead_ok = sp.simplify(lead**2 - 2 * eta * lam / (1 + beta)) == 0
    vel_ok = sp.simplify(vel * (1 - beta**2)) == 1 and sp.simplify(disp * (1 - beta)) == 1
    # Consistency: without momentum the model's equilibrium is the weight-decay one exactly.
    x = sp.Symbol("x", positive=True)
    no_momentum = (momentum_equilibrium_update_elr().subs(beta, 0) ** 2
                   - weight_decay_equilibrium_update_elr() ** 2)
    # The model needs eta*lam < 1 (1 + r > 0): write eta*lam = x/(1+x), x > 0.
    consistent = sp.simplify(no_momentum.subs(lam, x / ((1 + x) * eta))) == 0
    passed = reduces and growth_ok and lead_ok and vel_ok and consistent
    return Evidence(
        passed,
        r"\Delta u = " + tex(growth) + r",\quad E_u^* \approx " + tex(lead),
        f"E|v|^2/|g|^2 = {vel}; displacement factor {disp}; du/dt = {growth} "
        f"(beta=0.9: {sp.N(growth.subs(beta, sp.Rational(9, 10)))})",
    )


_d_l, _d_k = sp.symbols("d_l d_k", positive=True)  # element counts of two layers
_kappa = sp.Symbol("kappa", positive=True)  # E[m^2/v] per element of Adam's update


@functools.cache
def adam_sigma2(elements: sp.Symbol = _d_l) -> sp.Expr:
    r""":math:`\sigma^2_t` under Adam in the random-walk regime.

    Adam's update has :math:`\lVert\Delta w\rVert^2 = \eta^2\kappa d` for a layer of *d*
    elements (:math:`\kappa = \mathbb{E}[\hat m^2/\hat v]`, 1 without first-moment
    averaging), independent of *c*.  Assuming the update is orthogonal to *w* (true in
    expectation for random directions in high dimension), Pythagoras sums the increments.
    """
    s = sp.Symbol("s", integer=True, nonnegative=True)
    increment = eta**2 * _kappa * elements
    return sigma2 + sp.summation(increment, (s, 0, t_sym - 1))


@functools.cache
def adam_update_elr_ratio_sq() -> sp.Expr:
    r""":math:`(E_\ell/E_k)^2` of Adam's update ELRs :math:`\eta\sqrt{\kappa d}/\sigma` for two layers."""
    s_l0, s_k0 = sp.symbols("sigma2_l0 sigma2_k0", positive=True)
    e_l_sq = eta**2 * _kappa * _d_l / adam_sigma2(_d_l).subs(sigma2, s_l0)
    e_k_sq = eta**2 * _kappa * _d_k / adam_sigma2(_d_k).subs(sigma2, s_k0)
    return sp.simplify(e_l_sq / e_k_sq)


@claim(
    "adam_ratio_limit",
    "Adam, random-walk regime (update norm eta*sqrt(kappa*d), orthogonal to w): sigma2 grows "
    "linearly, sigma2_t = sigma2_0 + eta^2 kappa d t, and the update-ELR ratio of two layers "
    "tends to 1 once sigma2_0/d (the per-element scale) is accounted for.",
    SECTION,
)
def _check_adam() -> Evidence:
    sig = adam_sigma2()
    linear = sp.diff(sig, t_sym, 2) == 0 and c not in sig.free_symbols
    ratio_sq = adam_update_elr_ratio_sq()
    limit = sp.limit(ratio_sq, t_sym, sp.oo)
    passed = linear and limit == 1
    return Evidence(
        passed,
        r"\sigma^2_t = " + tex(sig) + r",\quad \left(\frac{E_\ell}{E_k}\right)^2 = "
        + tex(ratio_sq) + r" \to " + tex(limit),
        f"sigma2_t = {sig}; ratio^2 = {ratio_sq}; limit {limit}. Assumes orthogonal, "
        "uncorrelated updates; not verified by the drift simulator (SGD only).",
    )
