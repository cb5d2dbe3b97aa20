r"""The step per unit lr that a torch optimizer *will* take, read from its current state.

For the supported optimizers the coming update is exactly :math:`\Delta w = -\eta\,d`
with :math:`d` independent of the lr :math:`\eta`, so the per-unit-lr ELR of a layer is
:math:`a = \lVert d\rVert/\lVert w\rVert` (THEORY.md §5).  Each rule mirrors torch's own
code (``torch/optim/sgd.py``, ``adam.py``) with the state *before* the step:

**SGD** (``momentum`` :math:`\beta`, ``dampening`` :math:`\tau`, ``weight_decay``
:math:`\lambda`; ``maximize`` negates *g*):

.. math::

    u = g + \lambda w,\qquad
    b^{+} = \begin{cases} u & \text{no buffer yet (first step)}\\
                          \beta b + (1-\tau)u & \text{otherwise}\end{cases},\qquad
    d = \begin{cases} u & \beta = 0\\ b^{+} & \text{heavy ball}\\
                      u + \beta b^{+} & \text{Nesterov.}\end{cases}

**Adam / AdamW** (step count :math:`k+1` after this step, ``eps`` :math:`\epsilon`):

.. math::

    u = g\ (+\lambda w \text{ if coupled}),\quad
    m^{+} = \beta_1 m + (1-\beta_1)u,\quad v^{+} = \beta_2 v + (1-\beta_2)u^2,\quad
    \hat v = v^{+}\ (\max(v_{\max}, v^{+})\text{ with amsgrad}),

.. math::

    d = \frac{m^{+}/(1-\beta_1^{k+1})}{\sqrt{\hat v/(1-\beta_2^{k+1})} + \epsilon}
        \ (+\lambda w \text{ if decoupled, since AdamW multiplies } w \text{ by } 1-\eta\lambda).

Any other optimizer class (subclasses included, whose ``step`` may differ) is refused
by :func:`check_supported` with a one-line :class:`TypeError`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["SUPPORTED", "check_supported", "unit_steps"]

SUPPORTED: tuple[type[torch.optim.Optimizer], ...] = (
    torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW)


def _float(value: object) -> float:
    return float(value.item()) if isinstance(value, Tensor) else float(value)


def check_supported(optimizer: object, owner: str) -> None:
    """Raise a one-line :class:`TypeError` unless ``type(optimizer)`` is SGD, Adam or AdamW."""
    if type(optimizer) not in SUPPORTED:
        raise TypeError(
            f"{owner}: cannot predict the step of {type(optimizer).__name__}; the critical lr "
            "needs the step the optimizer will take, derived here for torch.optim.SGD, Adam "
            "and AdamW only"
        )


def _sgd(group: dict, state: dict, w: Tensor, g: Tensor) -> Tensor:
    u = -g if group.get("maximize", False) else g
    wd = _float(group.get("weight_decay", 0.0))
    if wd != 0:
        u = u + wd * w
    beta = _float(group.get("momentum", 0.0))
    if beta == 0:
        return u
    buf = state.get("momentum_buffer")
    new = u if buf is None else beta * buf + (1 - _float(group.get("dampening", 0.0))) * u
    return u + beta * new if group.get("nesterov", False) else new


def _adam(group: dict, state: dict, w: Tensor, g: Tensor, decoupled: bool) -> Tensor:
    u = -g if group.get("maximize", False) else g
    wd = _float(group.get("weight_decay", 0.0))
    if wd != 0 and not decoupled:
        u = u + wd * w
    beta1, beta2 = (_float(b) for b in group["betas"])
    step = _float(state["step"]) + 1 if "step" in state else 1.0
    m = (1 - beta1) * u if "exp_avg" not in state else beta1 * state["exp_avg"] + (1 - beta1) * u
    v = (1 - beta2) * u * u if "exp_avg_sq" not in state else (
        beta2 * state["exp_avg_sq"] + (1 - beta2) * u * u)
    if group.get("amsgrad", False) and "max_exp_avg_sq" in state:
        v = torch.maximum(state["max_exp_avg_sq"], v)
    d = (m / (1 - beta1**step)) / ((v / (1 - beta2**step)).sqrt() + _float(group["eps"]))
    return d + wd * w if wd != 0 and decoupled else d


def _cast_state(state: dict, like: Tensor, dtype: torch.dtype) -> dict:
    """``state`` with its per-element tensors (buffers shaped like the weight) in ``dtype``."""
    return {k: v.to(dtype) if isinstance(v, Tensor) and v.shape == like.shape else v
            for k, v in state.items()}


def unit_steps(optimizer: torch.optim.Optimizer, params: Sequence[Tensor],
               groups: Sequence[int], grads: Sequence[Tensor],
               dtype: torch.dtype | None = None) -> list[Tensor]:
    r"""The per-unit-lr step :math:`d` of each of ``params`` (in group ``groups[i]``).

    ``grads`` are the (unscaled) gradients; nothing is written to the optimizer.  With
    ``dtype`` (e.g. ``torch.float64``) the rule is evaluated in that dtype: weights,
    gradients and state buffers are cast first, so no term of :math:`d` (a gradient far
    below :math:`\lambda w`, a square :math:`g^2` beyond the float32 range) is rounded
    away or overflows in the parameters' dtype.
    """
    kind = type(optimizer)
    out = []
    with torch.no_grad():
        for p, g_index, grad in zip(params, groups, grads, strict=True):
            group, state, w = optimizer.param_groups[g_index], optimizer.state.get(p, {}), p.detach()
            if dtype is not None:
                state = _cast_state(state, w, dtype)
                w, grad = w.to(dtype), grad.to(dtype)
            if kind is torch.optim.SGD:
                out.append(_sgd(group, state, w, grad))
            else:
                decoupled = kind is torch.optim.AdamW or bool(
                    group.get("decoupled_weight_decay", False))
                out.append(_adam(group, state, w, grad, decoupled))
    return out
