r"""The continuous (gradient-flow) norm-level model: closed form and ODE route.

Time *t* is measured in steps.  Replacing the per-step increment of THEORY §2 by a
derivative gives

.. math::

    \frac{d\sigma^2}{dt} = \frac{\eta^2c^2}{\sigma^2}
    \quad\Longrightarrow\quad
    \sigma^2(t) = \sqrt{\sigma_0^4 + 2\eta^2c^2t},\qquad
    E(t) = \frac{E_0}{\sqrt{1 + 2E_0^2t}},

evaluated in O(1) per query by the generated ``continuous_sigma2`` and
``continuous_elr`` (:func:`continuous_closed_form`).

For time-varying :math:`c(t)` and :math:`\eta(t)` (or with momentum and weight decay)
:func:`continuous_ode` integrates

.. math::

    \frac{d\sigma^2}{dt} = \mathrm{norm\_step}(\sigma^2, \eta(t), c(t)) - \sigma^2

with :func:`scipy.integrate.solve_ivp` (DOP853, ``rtol=1e-10``): the right-hand side is
the per-step increment of the generated discrete map, never a re-typed formula.  (The
subtraction loses relative accuracy :math:`\sim\epsilon/E^2` when :math:`E^2 \ll \epsilon`,
i.e. for ELRs below about 1e-7.)  Both functions return the tidy columns of
:data:`normdyn.simulate.discrete.COLUMNS`, with ``step`` holding the (float) time;
``spread`` is ``inf`` where :math:`E_{max}/E_{min}` exceeds float64 and ``log10_spread``
is finite there.  A squared norm or an ELR that leaves float64 raises
:class:`~normdyn._checks.NonFiniteError` naming it (``sigma2``, ``elr``) and the time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from normdyn._checks import (
    NonFiniteError,
    check_finite,
    check_in_range,
    check_nonnegative,
    check_positive,
)
from normdyn.simulate.discrete import COLUMNS, check_state, log10_spread, update_elr
from normdyn.simulate.initial import from_elr
from normdyn.theory.numeric import (
    continuous_elr,
    continuous_sigma2,
    elr,
    momentum_norm_step,
    norm_step,
)

__all__ = ["continuous_closed_form", "continuous_ode"]


def _layers(name: str, value: Any) -> np.ndarray:
    arr = np.atleast_1d(check_positive(name, value))
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D list of per-layer values, "
                         f"got shape {arr.shape}")
    return arr


def _lrs(lr: Any) -> np.ndarray:
    arr = np.atleast_1d(check_positive("lr", lr))
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"lr must be a scalar or a non-empty 1-D sweep, got shape {arr.shape}")
    return arr


def _times(t: Any) -> np.ndarray:
    arr = np.atleast_1d(check_nonnegative("t", t))
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"t must be a non-empty 1-D array of times, got shape {arr.shape}")
    return arr


def _frame(t: np.ndarray, lr: np.ndarray, lr_t: np.ndarray, sigma2: np.ndarray, c: np.ndarray,
           e: np.ndarray, upd: np.ndarray, seed: int = 0) -> pd.DataFrame:
    """Tidy frame from ``(M, N, L)`` arrays (``lr_t``, ``c`` broadcastable), order lr, t, layer."""
    M, N, L = e.shape
    check_state("continuous", t, e, np.broadcast_to(sigma2, e.shape), lr)
    hi, lo = e.max(axis=-1, keepdims=True), e.min(axis=-1, keepdims=True)
    with np.errstate(over="ignore"):
        spread = hi / lo  # inf where the ratio exceeds float64; log10_spread stays finite
    log_spread = log10_spread(hi, lo, spread)

    def tidy(a: np.ndarray) -> np.ndarray:  # (M, N, L) -> flat in (N, M, L) order
        return np.ascontiguousarray(np.swapaxes(np.broadcast_to(a, (M, N, L)), 0, 1)).reshape(-1)

    data = {
        "step": np.tile(np.repeat(t, L), N),
        "layer": np.tile(np.arange(L, dtype=np.int64), N * M),
        "lr": np.repeat(lr, M * L),
        "lr_t": tidy(lr_t),
        "seed": np.full(N * M * L, seed, dtype=np.int64),
        "sigma2": tidy(sigma2),
        "c": tidy(c),
        "elr": tidy(e),
        "update_elr": tidy(upd),
        "spread": tidy(spread),
        "log10_spread": tidy(log_spread),
    }
    return pd.DataFrame({name: data[name] for name in COLUMNS})


def continuous_closed_form(
    sigma2_0: Any = None,
    c: Any = None,
    lr: Any = 1.0,
    t: Any = 0.0,
    *,
    elr0: Any = None,
) -> pd.DataFrame:
    r"""Gradient flow at constant :math:`\eta, c`, O(1) per (time, lr, layer).

    Give either ``sigma2_0`` and ``c`` (``(L,)``, positive) or ``elr0``, the ELRs at the
    scalar lr ``lr`` (then :math:`\sigma^2_0 = 1`, :math:`c = E_0/\eta`).  ``lr`` is a
    positive scalar or a 1-D sweep, ``t`` a 1-D array of non-negative times (steps).

    ``sigma2`` is ``continuous_sigma2(sigma2_0, lr, c, t)`` and ``elr`` is
    ``continuous_elr(E0, t)`` with ``E0 = elr(lr, c, sigma2_0)``.
    """
    if elr0 is not None:
        if sigma2_0 is not None or c is not None:
            raise ValueError("state: give either elr0 or sigma2_0 with c, not both")
        state = from_elr(elr0, lr)
        s0, cc = state.sigma2_0, state.c
    else:
        if sigma2_0 is None or c is None:
            raise ValueError("state: give sigma2_0 with c, or elr0")
        s0, cc = _layers("sigma2_0", sigma2_0), _layers("c", c)
        if s0.size == 1 and cc.size > 1:
            s0 = np.full(cc.size, float(s0[0]))
        if cc.size != s0.size:
            raise ValueError(f"c must have the same length as sigma2_0 ({s0.size}), got {cc.size}")
    eta, times = _lrs(lr), _times(t)
    T, E = times[:, None, None], eta[None, :, None]
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        sigma2 = continuous_sigma2.raw(s0, E, cc, T)
        e0 = elr.raw(eta[:, None], cc, s0)
        e = np.broadcast_to(continuous_elr.raw(e0, T), sigma2.shape)
    return _frame(times, eta, E, sigma2, cc, e, e)


def _as_function(name: str, value: Any, check: Callable[[str, Any], np.ndarray]
                 ) -> Callable[[float], np.ndarray]:
    if callable(getattr(value, "lr", None)):
        if getattr(value, "state_dependent", False):
            raise ValueError(f"{name}: a state-dependent schedule needs the discrete model")
        return lambda t: np.asarray(value.lr(t), dtype=np.float64)
    if callable(value):
        return lambda t: np.asarray(value(t), dtype=np.float64)
    const = check(name, value)
    return lambda t: const


def continuous_ode(
    sigma2_0: Any,
    c_of_t: Any,
    lr_of_t: Any,
    t_span: tuple[float, float],
    t_eval: Any,
    *,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    rtol: float = 1e-10,
    atol: float = 0.0,
    method: str = "DOP853",
) -> pd.DataFrame:
    r"""Integrate :math:`d\sigma^2/dt = \mathrm{step}(\sigma^2, \eta(t), c(t)) - \sigma^2`.

    Parameters
    ----------
    sigma2_0
        ``(L,)`` initial squared weight norms, positive.
    c_of_t
        ``(L,)`` constant base gradients, or a callable ``t -> (L,)``.
    lr_of_t
        A positive scalar or ``(N,)`` sweep, a state-independent schedule (its ``lr(t)``),
        or a callable ``t -> scalar | (N,)``.  The ``lr`` column is a schedule's base lr,
        otherwise the lr at ``t_span[0]``.
    t_span, t_eval
        Integration interval and the times to report (inside ``t_span``).
    momentum, weight_decay
        Use ``momentum_norm_step`` (first-order model) instead of ``norm_step``.
    rtol, atol, method
        Passed to :func:`scipy.integrate.solve_ivp`.
    """
    s0 = _layers("sigma2_0", sigma2_0)
    beta = float(check_in_range("momentum", momentum, 0.0, 1.0))
    lam = float(check_nonnegative("weight_decay", weight_decay))
    c_fn = _as_function("c_of_t", c_of_t, check_positive)
    lr_fn = _as_function("lr_of_t", lr_of_t, check_positive)
    span = check_finite("t_span", t_span)
    if span.shape != (2,) or not span[1] >= span[0]:
        raise ValueError(f"t_span must be (t0, t1) with t1 >= t0, got {t_span!r}")
    times = _times(t_eval)
    if np.any(times < span[0]) or np.any(times > span[1]):
        raise ValueError(f"t_eval must lie inside t_span {tuple(span.tolist())}")
    lr0 = np.atleast_1d(lr_fn(float(span[0])))
    if getattr(lr_of_t, "base", None) is not None:  # a schedule: report its base lrs
        lr0 = np.broadcast_to(np.atleast_1d(lr_of_t.base), lr0.shape)
    N, L = lr0.size, s0.size
    if np.atleast_1d(c_fn(float(span[0]))).shape != (L,):
        raise ValueError(f"c_of_t must give ({L},) base gradients like sigma2_0")

    def step(s: np.ndarray, eta: np.ndarray, c: np.ndarray) -> np.ndarray:
        if beta == 0.0 and lam == 0.0:
            return norm_step.raw(s, eta, c)
        return momentum_norm_step.raw(s, eta, c, lam, beta)

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        s = y.reshape(N, L)
        eta = np.broadcast_to(np.atleast_1d(lr_fn(t)), (N,))[:, None]
        return (step(s, eta, c_fn(t)) - s).ravel()  # the per-step increment of the map

    y0 = np.broadcast_to(s0, (N, L)).ravel().copy()
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        from scipy.integrate import solve_ivp  # lazy: 0.4 s of import for one function

        sol = solve_ivp(rhs, (float(span[0]), float(span[1])), y0, method=method,
                        t_eval=times, rtol=rtol, atol=atol)
    if not sol.success or not np.all(np.isfinite(sol.y)):
        e0 = elr.raw(np.broadcast_to(lr0[:, None], (N, L)), c_fn(float(span[0])), s0)
        raise NonFiniteError(
            f"continuous_ode: integrating sigma2 failed ({sol.message}); the largest initial "
            f"ELR is {float(np.max(e0)):.3g}, and ELRs far above 1 make the flow too stiff "
            "here (the closed form, constant lr without momentum, has no such limit)")
    sigma2 = sol.y.T.reshape(times.size, N, L)
    lr_t = np.stack([np.broadcast_to(np.atleast_1d(lr_fn(t)), (N,)) for t in times])[..., None]
    c_t = np.stack([np.broadcast_to(c_fn(t), (L,)) for t in times])[:, None, :]
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        e = elr.raw(lr_t, c_t, sigma2)
        upd = update_elr(e, lr_t, beta, lam)
    return _frame(times, lr0, lr_t, sigma2, c_t, e, upd)
