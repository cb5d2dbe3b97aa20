"""The forward-hook fallback of the scale-invariance detector.

Fallback: when :func:`torch.fx.symbolic_trace` fails (data-dependent control flow),
the module that failed is made opaque and tracing is retried, so the rest of the
model is still analysed exactly.  Layers inside opaque modules (or the whole model,
if its own ``forward`` cannot be traced) are judged by a forward-hook heuristic run
on ``example_input``: a conv/linear whose output tensor is, unmodified (same storage
and version counter) or through pass-through modules (ReLU, dropout, pooling,
``Identity``, ``Flatten``), the input of the next executed normalization module with
a matching channel count, and in the mode it is trained in (a BatchNorm in
``eval()`` mode does not normalize).  The heuristic cannot see other uses of the output (e.g. a
residual addition elsewhere), so it can over-report; each result's ``reason`` says
which method decided it.

:func:`_hook_verdicts` is called by
:func:`normdyn.layers.detection.analyze_scale_invariance` for the layers that the
:mod:`torch.fx` analysis (:mod:`normdyn.layers._fx_invariance`) could not reach.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from normdyn.layers._layers import (
    LayerKind,
    LayerVerdict,
    NormKind,
    _has_bias,
    _layer_kind,
    _norm_kind,
    _normalizes,
    _removes_bias,
)

__all__ = ["_hook_verdicts"]

_PASS_THROUGH_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Flatten, nn.modules.dropout._DropoutNd,
    nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
)


@dataclass
class _Event:
    name: str
    module: nn.Module
    inp: Tensor | None
    inp_version: int
    out: Tensor | None
    out_version: int


def _first_tensor(value: Any) -> Tensor | None:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], Tensor):
        return value[0]
    return None


def _same_data(a: Tensor | None, a_version: int, b: Tensor | None, b_version: int) -> bool:
    return (a is not None and b is not None
            and a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
            and a_version == b_version)


def _out_channels(module: nn.Module) -> int:
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.out_channels
    return module.out_features  # type: ignore[return-value]


def _norm_channels(module: nn.Module, kind: NormKind) -> int | None:
    if kind in ("batch", "instance"):
        return module.num_features  # type: ignore[return-value]
    if kind == "group":
        return module.num_channels  # type: ignore[return-value]
    shape = getattr(module, "normalized_shape", None)
    return int(shape[-1]) if shape else None


def _record_events(model: nn.Module, example_input: Any) -> list[_Event]:
    """Run ``model`` once (eval, no grad) and record every leaf module call in order.

    Tensors are kept alive until the analysis ends so that a storage address can
    never be reused by a later, unrelated tensor.  Buffers and train/eval modes are
    restored afterwards.
    """
    events: list[_Event] = []
    pending: dict[int, list[tuple[Tensor | None, int]]] = {}
    handles = []

    def pre_hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        inp = _first_tensor(args)
        pending.setdefault(id(module), []).append((inp, inp._version if inp is not None else -1))

    def make_hook(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            inp, version = pending[id(module)].pop()
            out = _first_tensor(output)
            events.append(_Event(name, module, inp, version, out,
                                 out._version if out is not None else -1))
        return hook

    for name, module in model.named_modules():
        if next(module.children(), None) is None:
            handles.append(module.register_forward_pre_hook(pre_hook))
            handles.append(module.register_forward_hook(make_hook(name)))
    modes = {m: m.training for m in model.modules()}
    buffers = {k: b.detach().clone() for k, b in model.named_buffers()}
    try:
        model.eval()
        with torch.no_grad():
            if isinstance(example_input, (tuple, list)):
                model(*example_input)
            elif isinstance(example_input, dict):
                model(**example_input)
            else:
                model(example_input)
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes.items():
            module.training = mode
        with torch.no_grad():
            for key, buf in model.named_buffers():
                buf.copy_(buffers[key])
    return events


def _hook_verdicts(model: nn.Module, example_input: Any, restrict: Iterable[str] | None,
                   why: str) -> dict[str, LayerVerdict]:
    events = _record_events(model, example_input)
    prefixes = None if restrict is None else tuple(restrict)
    calls: dict[str, list[LayerVerdict]] = {}
    for i, event in enumerate(events):
        kind = _layer_kind(event.module)
        if kind is None:
            continue
        if prefixes is not None and not any(
                event.name == p or event.name.startswith(p + ".") for p in prefixes):
            continue
        param_name = f"{event.name}.weight" if event.name else "weight"
        calls.setdefault(param_name, []).append(_hook_one(events, i, kind, param_name, why))
    # a module called several times must be invariant at every call
    return {name: next((v for v in vs if not v.invariant), vs[0]) for name, vs in calls.items()}


def _hook_one(events: list[_Event], i: int, kind: LayerKind, param_name: str,
              why: str) -> LayerVerdict:
    layer = events[i]
    base = dict(name=layer.name, param_name=param_name, kind=kind, method="hooks")
    prefix = f"hooks ({why}): "
    out, version = layer.out, layer.out_version
    bias = _has_bias(layer.module)
    passed: list[str] = []
    for event in events[i + 1:]:
        if not _same_data(out, version, event.inp, event.inp_version):
            break
        norm_kind = _norm_kind(event.module)
        if norm_kind is not None and not _normalizes(event.module):
            return LayerVerdict(**base, invariant=False, norm_name=None, norm_kind=None,
                                reason=prefix + f"next normalization {event.name!r} is in eval "
                                "mode (running statistics): it does not normalize")
        if norm_kind is not None:
            channels = _norm_channels(event.module, norm_kind)
            if channels != _out_channels(layer.module):
                return LayerVerdict(**base, invariant=False, norm_name=None, norm_kind=None,
                                    reason=prefix + f"next normalization {event.name!r} has "
                                    f"{channels} channels, the layer {_out_channels(layer.module)}")
            if bias and (passed or not _removes_bias(layer.module, event.module, norm_kind)):
                return LayerVerdict(**base, invariant=False, norm_name=None, norm_kind=None,
                                    reason=prefix + "the layer's own bias is not removed by "
                                    f"{norm_kind} norm {event.name!r}")
            via = f" through {', '.join(passed)}" if passed else " directly"
            return LayerVerdict(**base, invariant=True, norm_name=event.name,
                                norm_kind=norm_kind,
                                reason=prefix + f"output feeds {norm_kind} norm "
                                f"{event.name!r}{via} (execution order heuristic)")
        if not isinstance(event.module, _PASS_THROUGH_MODULES):
            break
        passed.append(repr(event.name))
        out, version = event.out, event.out_version
    return LayerVerdict(**base, invariant=False, norm_name=None, norm_kind=None,
                        reason=prefix + "output is not passed unmodified to a normalization "
                        "module (execution order heuristic)")
