"""The one-step lr sweep: measured against predicted ELR spread after one SGD step.

:func:`one_step_lr_sweep` takes one plain SGD step at each lr of a sweep from a
common initial state and compares the measured spread of the layers' ELRs with the
constant-``c`` prediction of :func:`~normdyn.theory.numeric.one_step_spread`;
:func:`default_sweep_lrs` is its default grid around the predicted critical lr.
:func:`~normdyn.validate.runs.run_training` runs it at step 0 with
``sweep_critical_lr=True``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from normdyn._checks import check_positive
from normdyn.theory.numeric import critical_lr_of, gradient_elr, one_step_spread

__all__ = ["one_step_lr_sweep", "default_sweep_lrs"]


def _layer_param_names(layers: Sequence[Any]) -> list[str]:
    names = []
    for layer in layers:
        if isinstance(layer, str):
            names.append(layer)
        elif hasattr(layer, "param_name"):
            names.append(str(layer.param_name))
        else:
            raise ValueError(f"layers must hold parameter names or ScaleInvariantLayer "
                             f"objects, got {layer!r}")
    if not names:
        raise ValueError("layers must name at least one parameter, got none")
    return names


def _gradients(model: nn.Module, batch: tuple[Tensor, Tensor], loss_fn: Callable) -> dict:
    model.zero_grad(set_to_none=True)
    x, y = batch
    loss_fn(model(x), y).backward()
    return {n: (None if p.grad is None else p.grad.detach().clone())
            for n, p in model.named_parameters()}


def _elrs(model: nn.Module, grads: dict, names: Sequence[str], lr: float) -> np.ndarray:
    params = dict(model.named_parameters())
    g = np.array([float(grads[n].double().norm()) for n in names])
    w = np.array([float(params[n].detach().double().norm()) for n in names])
    return gradient_elr.raw(lr, g, w)


def default_sweep_lrs(critical_lr: float, *, decades: float = 2.0, n: int = 41) -> np.ndarray:
    """``n`` log-spaced lrs ``decades`` either side of ``critical_lr`` (and it itself)."""
    return np.geomspace(critical_lr * 10**-decades, critical_lr * 10**decades, n)


def one_step_lr_sweep(
    model: nn.Module,
    batch: tuple[Tensor, Tensor],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    lrs: Sequence[float] | np.ndarray | None,
    layers: Sequence[Any],
) -> pd.DataFrame:
    """Measured against predicted ELR spread one SGD step after a common initial state.

    From a deep copy of ``model`` (its training/eval mode kept), the gradient ``g0``
    at the initial weights on ``batch`` gives the per-unit-lr ELRs ``a0 = |g0|/|w0|``
    of ``layers`` (parameter names or
    :class:`~normdyn.validate.detection.ScaleInvariantLayer` objects).  For
    every ``lr`` the copy takes one plain SGD step ``w = w0 - lr*g0`` on *all*
    parameters, recomputes the gradients at the new weights on the same batch, and
    ``spread_measured`` is max/min over ``layers`` of ``lr*|g|/|w|``;
    ``spread_predicted`` is :func:`~normdyn.theory.numeric.one_step_spread` ``(lr, a0)``
    (the constant-``c`` model).  ``critical_lr_predicted`` (a column, also in
    ``.attrs``) is :func:`~normdyn.theory.numeric.critical_lr_of` ``(a0)``.
    ``lrs=None`` sweeps :func:`default_sweep_lrs` around that prediction.
    Non-finite measured spreads (a step too large) are recorded as NaN.
    """
    names = _layer_param_names(layers)
    work = copy.deepcopy(model)
    params = dict(work.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise ValueError(f"layers name parameters the model does not have: {missing}")
    w0 = {n: p.detach().clone() for n, p in params.items()}
    buffers0 = {n: b.detach().clone() for n, b in work.named_buffers()}
    g0 = _gradients(work, batch, loss_fn)
    if any(g0[n] is None for n in names):
        raise ValueError("some layers received no gradient from loss_fn")
    a0 = _elrs(work, g0, names, 1.0)
    predicted_critical = critical_lr_of(a0)
    lr_arr = (default_sweep_lrs(predicted_critical) if lrs is None
              else check_positive("lrs", lrs).reshape(-1))
    measured = []
    for lr in lr_arr:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(w0[n] if g0[n] is None else w0[n] - float(lr) * g0[n])
            for n, b in work.named_buffers():
                b.copy_(buffers0[n])
        with np.errstate(all="ignore"):
            e = _elrs(work, _gradients(work, batch, loss_fn), names, float(lr))
            spread = e.max() / e.min() if np.all(np.isfinite(e)) and e.min() > 0 else np.nan
        measured.append(float(spread))
    frame = pd.DataFrame({
        "lr": lr_arr,
        "spread_measured": measured,
        "spread_predicted": np.asarray(one_step_spread(lr_arr, a0)).reshape(-1),
        "critical_lr_predicted": predicted_critical,
    })
    frame.attrs["critical_lr_predicted"] = predicted_critical
    frame.attrs["a0"] = a0.tolist()
    return frame

