r"""The one-step lr sweep: measured against predicted ELR spread after one SGD step.

:func:`one_step_lr_sweep` takes one plain SGD step at each lr of a sweep from a
common initial state and compares the measured spread of the layers' ELRs with the
constant-``c`` prediction of :func:`~normdyn.theory.numeric.one_step_spread`;
:func:`default_sweep_lrs` is its default grid around the predicted critical lr and
:func:`refined_sweep_lrs` adds a fine grid near it.
:func:`one_step_layer_table` is the per-layer measurement behind the sweep.
:func:`~normdyn.validate.runs.run_training` runs the sweep at step 0 with
``sweep_critical_lr=True``.

Gradients after the probe step (``gradients``)
----------------------------------------------
With :math:`w_1 = w_0 - \eta g_0` the spread after the step is that of
:math:`E_1 = \eta \lVert g_1\rVert/\lVert w_1\rVert`; :math:`g_1` is

``real``
    the gradient at :math:`w_1` (on the probe batch, see ``probe_batch``);
``constant_c``
    the model's constant-``c`` gradient (positive control): :math:`g_0` projected on
    the tangent space of :math:`w_1` and rescaled to the norm
    :math:`\lVert g_0\rVert\lVert w_0\rVert/\lVert w_1\rVert`, so
    :math:`c_1 = \lVert g_1\rVert\lVert w_1\rVert = c_0` exactly;
``random_tangent``
    a Gaussian vector projected on the tangent space of :math:`w_1`, rescaled to that
    same norm (positive control with a random direction).

Both controls obey the model by construction, so the argmin of their spread over the
lrs is where the model puts it, :math:`\eta^* = 1/\sqrt{a_{\max} a_{\min}}`; the
one-step ELR depends on :math:`\lVert g_1\rVert` only, so the two controls give the same
spread (their directions differ; :math:`c_1/c_0 = 1` for both).

The spreads are over the live layers (:mod:`normdyn._spread`): max/min
(``spread_measured``) and Q0.95/Q0.05 (``robust_spread_measured``); ``dead_layers``
counts the layers with a zero gradient or a vanishing ELR.  :math:`\eta^*` and the
predicted spread use the layers live at the initial state.
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
from normdyn._spread import dead_mask, robust_spread, spread_max_min
from normdyn.theory.numeric import critical_lr_of, gradient_elr, one_step_spread

__all__ = [
    "GRADIENTS",
    "one_step_layer_table",
    "one_step_lr_sweep",
    "default_sweep_lrs",
    "refined_sweep_lrs",
    "sweep_of_layer_table",
]

GRADIENTS = ("real", "constant_c", "random_tangent")
_LAYER_COLUMNS = ("lr", "gradient", "layer", "weight_norm", "grad_norm", "elr", "c_ratio")


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


def _norm(t: Tensor) -> float:
    return float(t.detach().double().norm())


def _elrs(model: nn.Module, grads: dict, names: Sequence[str], lr: float) -> np.ndarray:
    params = dict(model.named_parameters())
    g = np.array([_norm(grads[n]) for n in names])
    w = np.array([_norm(params[n]) for n in names])
    return gradient_elr.raw(lr, g, w)


def _tangent(v: Tensor, w: Tensor, norm: float) -> Tensor:
    """``v`` without its component along ``w``, rescaled to ``norm`` (in float64)."""
    v64, w64 = v.double(), w.double()
    t = v64 - (v64 * w64).sum() / (w64 * w64).sum() * w64
    size = float(t.norm())
    return t * (norm / size) if size > 0 else t


def default_sweep_lrs(critical_lr: float, *, decades: float = 2.0, n: int = 41) -> np.ndarray:
    """``n`` log-spaced lrs ``decades`` either side of ``critical_lr`` (and it itself)."""
    return np.geomspace(critical_lr * 10**-decades, critical_lr * 10**decades, n)


def refined_sweep_lrs(critical_lr: float, *, decades: float = 2.0, n: int = 41,
                      fine_decades: float = 0.3, fine_n: int = 25) -> np.ndarray:
    """:func:`default_sweep_lrs` plus ``fine_n`` log-spaced lrs ``fine_decades`` either side.

    The union, sorted, without duplicates: with the defaults, 0.1-decade spacing over
    +-2 decades and 0.025-decade spacing over +-0.3 decade around ``critical_lr``.
    """
    coarse = default_sweep_lrs(critical_lr, decades=decades, n=n)
    fine = np.geomspace(critical_lr * 10**-fine_decades, critical_lr * 10**fine_decades,
                        fine_n)
    merged = np.sort(np.concatenate([coarse, fine]))
    keep = np.concatenate([[True], np.diff(np.log10(merged)) > 1e-9])
    return merged[keep]


def _check_gradients(gradients: Sequence[str]) -> tuple[str, ...]:
    out = tuple(gradients)
    bad = [g for g in out if g not in GRADIENTS]
    if bad or not out:
        raise ValueError(f"gradients must be a non-empty subset of "
                         f"{', '.join(map(repr, GRADIENTS))}, got {list(out)!r}")
    return out


def one_step_layer_table(
    model: nn.Module,
    batch: tuple[Tensor, Tensor],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    lrs: Sequence[float] | np.ndarray | None,
    layers: Sequence[Any],
    *,
    gradients: Sequence[str] = ("real",),
    probe_batch: tuple[Tensor, Tensor] | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    r"""Per lr, gradient kind and layer: norms and ELR one plain SGD step after init.

    From a deep copy of ``model`` (its training/eval mode kept; ``model`` is not
    changed), ``g0`` is the gradient at the initial weights on ``batch``.  For every
    ``lr`` the copy takes the step ``w1 = w0 - lr*g0`` on *all* parameters (buffers
    restored), and ``g1`` is taken as described in the module docstring; the real
    ``g1`` is measured on ``probe_batch`` (default: ``batch`` itself).  Columns:
    ``lr, gradient, layer, weight_norm`` (:math:`\lVert w_1\rVert`), ``grad_norm``
    (:math:`\lVert g_1\rVert`), ``elr`` (:math:`\eta\lVert g_1\rVert/\lVert w_1\rVert`),
    ``c_ratio`` (:math:`c_1/c_0 = \lVert g_1\rVert\lVert w_1\rVert /
    (\lVert g_0\rVert\lVert w_0\rVert)`).  ``attrs``: ``a0`` (per-unit-lr ELRs at init),
    ``g0_norm``, ``layers``, ``critical_lr_predicted`` (:math:`\eta^*` of the live layers).
    ``random_tangent`` draws from a ``torch.Generator`` seeded with ``seed``.
    ``lrs=None`` sweeps :func:`default_sweep_lrs` around :math:`\eta^*`.
    """
    kinds = _check_gradients(gradients)
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
    g0_norm = np.array([_norm(g0[n]) for n in names])
    w0_norm = np.array([_norm(w0[n]) for n in names])
    a0 = gradient_elr.raw(1.0, g0_norm, w0_norm)
    live0 = ~dead_mask(a0, g0_norm)
    if live0.sum() < 1:
        raise ValueError("every layer is dead at the initial state (zero gradients)")
    predicted_critical = critical_lr_of(a0[live0])
    lr_arr = (default_sweep_lrs(predicted_critical) if lrs is None
              else check_positive("lrs", lrs).reshape(-1))
    generator = torch.Generator().manual_seed(int(seed))
    c0 = g0_norm * w0_norm
    rows: list[tuple] = []
    for lr in lr_arr:
        lr = float(lr)
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(w0[n] if g0[n] is None else w0[n] - lr * g0[n])
            for n, b in work.named_buffers():
                b.copy_(buffers0[n])
        w1 = {n: params[n].detach() for n in names}
        w1_norm = np.array([_norm(w1[n]) for n in names])
        model_norm = c0 / w1_norm  # |g1| of the constant-c model
        for kind in kinds:
            if kind == "real":
                with np.errstate(all="ignore"):
                    g1 = _gradients(work, probe_batch if probe_batch is not None else batch,
                                    loss_fn)
                    g_norm = np.array([_norm(g1[n]) for n in names])
            elif kind == "constant_c":
                g_norm = np.array([_norm(_tangent(g0[n], w1[n], float(s)))
                                   for n, s in zip(names, model_norm, strict=True)])
            else:
                g_norm = np.array([
                    _norm(_tangent(torch.randn(w1[n].shape, generator=generator,
                                               dtype=torch.float64), w1[n], float(s)))
                    for n, s in zip(names, model_norm, strict=True)])
            with np.errstate(all="ignore"):
                elr = gradient_elr.raw(lr, g_norm, w1_norm)
                c_ratio = g_norm * w1_norm / c0
            rows += [(lr, kind, name, float(w), float(g), float(e), float(r))
                     for name, w, g, e, r in zip(names, w1_norm, g_norm, elr, c_ratio,
                                                 strict=True)]
    frame = pd.DataFrame(rows, columns=list(_LAYER_COLUMNS))
    frame.attrs.update(critical_lr_predicted=predicted_critical, a0=a0.tolist(),
                       g0_norm=g0_norm.tolist(), layers=names)
    return frame


def one_step_lr_sweep(
    model: nn.Module,
    batch: tuple[Tensor, Tensor],
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    lrs: Sequence[float] | np.ndarray | None,
    layers: Sequence[Any],
    *,
    gradients: Sequence[str] = ("real",),
    probe_batch: tuple[Tensor, Tensor] | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Measured against predicted ELR spread one SGD step after a common initial state.

    The spreads of :func:`one_step_layer_table` per ``(lr, gradient)``, in that order:
    ``lr, spread_measured`` (max/min of the live layers' ``lr*|g1|/|w1|``),
    ``spread_predicted`` (:func:`~normdyn.theory.numeric.one_step_spread` of the live
    initial ``a0``: the constant-``c`` model), ``critical_lr_predicted``
    (:func:`~normdyn.theory.numeric.critical_lr_of` of the live ``a0``, also in
    ``.attrs``), ``gradient``, ``robust_spread_measured`` (Q0.95/Q0.05 of the live
    layers), ``dead_layers``.  A non-finite ELR (a step too large) makes both measured
    spreads NaN.  ``lrs=None`` sweeps :func:`default_sweep_lrs` around the prediction.
    ``.attrs`` also holds ``a0``.
    """
    return sweep_of_layer_table(one_step_layer_table(
        model, batch, loss_fn, lrs, layers, gradients=gradients, probe_batch=probe_batch,
        seed=seed))


def sweep_of_layer_table(table: pd.DataFrame) -> pd.DataFrame:
    """The per-``(lr, gradient)`` spreads of a :func:`one_step_layer_table` (see
    :func:`one_step_lr_sweep` for the columns); needs the table's ``attrs``."""
    a0 = np.asarray(table.attrs["a0"])
    live0 = ~dead_mask(a0, np.asarray(table.attrs["g0_norm"]))
    critical = float(table.attrs["critical_lr_predicted"])
    rows = []
    for (kind, lr), g in table.groupby(["gradient", "lr"], sort=False):
        e = g["elr"].to_numpy()
        gn = g["grad_norm"].to_numpy()
        finite = bool(np.all(np.isfinite(e)))
        rows.append({
            "lr": lr,
            "spread_measured": spread_max_min(e, gn) if finite else np.nan,
            "spread_predicted": float(one_step_spread(lr, a0[live0])),
            "critical_lr_predicted": critical,
            "gradient": kind,
            "robust_spread_measured": robust_spread(e, gn) if finite else np.nan,
            "dead_layers": int(dead_mask(e, gn).sum()) if finite else 0,
        })
    frame = pd.DataFrame(rows)
    frame.attrs["critical_lr_predicted"] = critical
    frame.attrs["a0"] = a0.tolist()
    return frame
