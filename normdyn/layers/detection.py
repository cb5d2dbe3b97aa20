r"""Which weights of a torch model are scale invariant, and how invariant they really are.

A convolution or linear weight :math:`w` is *scale invariant* when the training loss
satisfies :math:`L(\alpha w) = L(w)` for every :math:`\alpha > 0` (THEORY.md §2, §6):
a normalization follows the layer with nothing in between that depends on the scale
of its output.  :func:`find_scale_invariant` decides this from the model's structure;
:func:`measure_defect` measures how far a real gradient is from the orthogonality
:math:`\langle w, \nabla w\rangle = 0` that invariance implies.

Rules (documented decisions)
----------------------------
The analysis propagates, through a :mod:`torch.fx` graph of the model, how each value
depends on the scale :math:`\alpha` of one weight; the weight is scale invariant iff
every model output is invariant and at least one normalization absorbed the scale.
A normalization removes the layer's own bias only when it subtracts a mean along
which the bias is constant (BatchNorm always does, a ``LayerNorm`` over a linear
layer's features does not); ReLU, pooling, reshapes and other positively homogeneous
operations keep invariance; residual additions, smooth activations and products of
two weight-dependent values break it.  The full transfer rules are documented in
:mod:`normdyn.layers._fx_invariance`, next to the code that implements them.

Each norm is analysed in its current mode: a BatchNorm in ``eval()`` mode (frozen,
running statistics) does not normalize, so the layers before it are *not* scale
invariant; call the detector on the model in the mode it is trained in.
``torch.cat`` along the channel dimension into a per-channel norm (DenseNet) keeps
each operand's producer invariant.  ``eps`` makes all normalizations only
approximately invariant; :func:`measure_defect` shows by how much.

Wrappers -- ``DataParallel``, ``DistributedDataParallel`` (``.module``) and
``torch.compile``'s ``OptimizedModule`` (``._orig_mod``), nested in any order -- are
unwrapped; parameter names keep the wrappers' prefixes (``module.``, ``_orig_mod.``)
so that they match ``model.named_parameters()``.

Fallback: when :func:`torch.fx.symbolic_trace` fails (data-dependent control flow),
the module that failed is made opaque and tracing is retried, so the rest of the
model is still analysed exactly.  Layers inside opaque modules (or the whole model,
if its own ``forward`` cannot be traced) are judged by a forward-hook heuristic run
on ``example_input`` (:mod:`normdyn.layers._hook_invariance`), which can
over-report; each result's ``reason`` says which method decided it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import pandas as pd
import torch
from torch import Tensor, nn

from normdyn.layers._fx_invariance import _Propagation, _trace
from normdyn.layers._hook_invariance import _hook_verdicts
from normdyn.layers._layers import (  # LayerKind, NormKind: re-exported type aliases
    LayerKind,  # noqa: F401
    LayerVerdict,
    NormKind,  # noqa: F401
    ScaleInvariantLayer,
    _layer_kind,
    _one_line,
    _short_names,
)

__all__ = [
    "ScaleInvariantLayer",
    "LayerVerdict",
    "find_scale_invariant",
    "analyze_scale_invariance",
    "measure_defect",
]


# --------------------------------------------------------------------------- public API


def _unwrap(model: nn.Module) -> tuple[nn.Module, str]:
    """Strip DataParallel/DDP (``module.``) and ``torch.compile`` (``_orig_mod.``) wrappers."""
    wrappers: tuple[type[nn.Module], ...] = (nn.DataParallel,)
    try:
        from torch.nn.parallel import DistributedDataParallel

        wrappers = (*wrappers, DistributedDataParallel)
    except ImportError:  # pragma: no cover
        pass
    prefix = ""
    while True:
        if isinstance(model, wrappers):
            model, prefix = model.module, prefix + "module."  # type: ignore[assignment]
        elif type(model).__name__ == "OptimizedModule" and isinstance(
                getattr(model, "_orig_mod", None), nn.Module):
            model, prefix = model._orig_mod, prefix + "_orig_mod."  # type: ignore[assignment]
        else:
            return model, prefix


def analyze_scale_invariance(model: nn.Module,
                             example_input: Any = None) -> list[LayerVerdict]:
    """The detector's verdict for every conv/linear weight of ``model``, in module order.

    See the module docstring for the rules.  ``example_input`` (a tensor, a tuple of
    positional inputs or a dict of keyword inputs) is only used by the forward-hook
    fallback, when :mod:`torch.fx` cannot trace (part of) the model; the model's
    parameters, buffers and train/eval modes are left unchanged.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    inner, prefix = _unwrap(model)
    modules = dict(inner.named_modules())
    layers = [(name, m) for name, m in modules.items()
              if _layer_kind(m) is not None and isinstance(getattr(m, "weight", None),
                                                           nn.Parameter)]
    graph, opaque, error = _trace(inner)
    verdicts: dict[str, LayerVerdict] = {}
    hooked: set[str] = set()
    if graph is None:
        hooked = {name for name, _ in layers}
        why = f"torch.fx could not trace the model: {error[:120]}"
        restrict = None
    else:
        for name, _ in layers:
            if any(name == o or name.startswith(o + ".") for o in opaque):
                hooked.add(name)
            else:
                prop = _Propagation(graph, modules, name, f"{name}.weight")
                verdicts[name] = prop.run()
        why = (f"torch.fx could not trace {len(opaque)} module(s) "
               f"{_short_names(sorted(opaque), 2)}: {error[:120]}")
        restrict = sorted(opaque)
    if hooked:
        if example_input is None:
            if graph is None:
                raise ValueError(_one_line(
                    f"torch.fx could not trace {type(inner).__name__} ({error[:120]}); pass "
                    "example_input=... to use the forward-hook heuristic, or names=[...] "
                    "to choose the parameters yourself"))
            warnings.warn(_one_line(
                f"{why}; their {len(hooked)} layer(s) {_short_names(sorted(hooked), 2)} are "
                "not analysed (pass example_input to use the forward-hook heuristic)"),
                stacklevel=2)
            for name in hooked:
                kind = _layer_kind(modules[name])
                assert kind is not None
                verdicts[name] = LayerVerdict(name, f"{name}.weight", kind, False, None, None,
                                              "skipped", f"not analysed: {why}")
        else:
            by_param = _hook_verdicts(inner, example_input, restrict, why)
            for name in hooked:
                kind = _layer_kind(modules[name])
                assert kind is not None
                verdicts[name] = by_param.get(
                    f"{name}.weight" if name else "weight",
                    LayerVerdict(name, f"{name}.weight", kind, False, None, None, "hooks",
                                 f"hooks ({why}): the layer was not called on example_input"))
    out = []
    for name, _ in layers:
        v = verdicts[name]
        if prefix:
            v = LayerVerdict(prefix + v.name, prefix + v.param_name, v.kind, v.invariant,
                             None if v.norm_name is None else prefix + v.norm_name,
                             v.norm_kind, v.method, v.reason)
        out.append(v)
    return out


def find_scale_invariant(model: nn.Module,
                         example_input: Tensor | None = None) -> list[ScaleInvariantLayer]:
    """The scale-invariant conv/linear weights of ``model``, in module order.

    A layer counts when its output feeds a normalization (BatchNorm, LayerNorm,
    GroupNorm, InstanceNorm, RMSNorm) with nothing scale-dependent in between; the
    rules (ReLU allowed, own bias removed by BatchNorm but not by a LayerNorm over
    features, residual additions break it, ...) are in the module docstring.  Uses
    :mod:`torch.fx`; falls back to a forward-hook heuristic on ``example_input`` where
    tracing fails.  Use :func:`analyze_scale_invariance` for the rejected layers too.
    """
    return [v.to_layer() for v in analyze_scale_invariance(model, example_input) if v.invariant]


def _call_loss(model: nn.Module, loss_fn: Callable[..., Tensor], batch: Any) -> Tensor:
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        inputs, targets = batch
        return loss_fn(model(inputs), targets)
    if isinstance(batch, Tensor):
        return loss_fn(model(batch))
    raise TypeError("batch must be an (inputs, targets) pair or an input tensor, got "
                    f"{type(batch).__name__}")


def measure_defect(model: nn.Module, loss_fn: Callable[..., Tensor], batch: Any,
                   *, names: Sequence[str] | None = None) -> pd.DataFrame:
    r"""The measured scale-invariance defect :math:`|\cos(w, \nabla w)|` of every weight.

    ``batch`` is an ``(inputs, targets)`` pair (loss ``loss_fn(model(inputs), targets)``)
    or an input tensor (loss ``loss_fn(model(batch))``).  ``names`` defaults to every
    parameter with two or more dimensions (conv kernels, linear and embedding
    weights).  One forward/backward pass in the model's current mode (use ``train()``:
    BatchNorm in ``eval()`` mode is not scale invariant); gradients are taken with
    :func:`torch.autograd.grad`, so ``.grad`` fields, parameters and buffers (BatchNorm
    running statistics) are left unchanged.

    Returns one row per weight: ``layer`` (parameter name), ``cos_wg`` (the absolute
    cosine, computed in float64; NaN when the gradient is zero or absent),
    ``grad_norm``, ``weight_norm`` and ``detected`` (whether
    :func:`find_scale_invariant` marks it invariant).  For an exactly invariant weight
    ``cos_wg`` is zero up to rounding and the normalization's ``eps``.
    """
    params = dict(model.named_parameters())
    if names is None:
        chosen = [n for n, p in params.items() if p.ndim >= 2 and p.requires_grad]
    else:
        chosen = list(names)
        missing = [n for n in chosen if n not in params]
        if missing:
            raise ValueError(_one_line(
                f"{len(missing)} unknown parameter name(s) {_short_names(missing)}; "
                f"the model has {len(params)}, e.g. {_short_names(list(params))}"))
    if not chosen:
        raise ValueError("the model has no weight with two or more dimensions to measure")
    example = batch[0] if isinstance(batch, (tuple, list)) else batch
    detected = {d.param_name for d in find_scale_invariant(model, example)}
    buffers = {k: b.detach().clone() for k, b in model.named_buffers()}
    try:
        loss = _call_loss(model, loss_fn, batch)
        grads = torch.autograd.grad(loss, [params[n] for n in chosen], allow_unused=True)
    finally:
        with torch.no_grad():
            for key, buf in model.named_buffers():
                buf.copy_(buffers[key])
    rows = []
    for name, grad in zip(chosen, grads, strict=True):
        w = params[name].detach().double()
        w_norm = float(torch.linalg.vector_norm(w))
        if grad is None:
            rows.append((name, math.nan, 0.0, w_norm, name in detected))
            continue
        g = grad.detach().double()
        g_norm = float(torch.linalg.vector_norm(g))
        denom = w_norm * g_norm
        cos = abs(float(torch.dot(w.reshape(-1), g.reshape(-1)))) / denom if denom > 0 \
            else math.nan
        rows.append((name, cos, g_norm, w_norm, name in detected))
    return pd.DataFrame(rows, columns=["layer", "cos_wg", "grad_norm", "weight_norm",
                                       "detected"])
