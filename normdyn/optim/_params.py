"""Shared parameter resolution and batched norms for the torch optimizer components.

:func:`resolve_tracked` decides which weight tensors a component tracks: the
scale-invariant layers that :func:`normdyn.validate.detection.find_scale_invariant`
detects in ``model``, or an explicit ``params=`` override.  :func:`norms` measures
all gradient and weight norms with two ``torch._foreach_norm`` calls and a single
host synchronization.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["Tracked", "resolve_tracked", "norms", "require_grads", "stack_to_host"]


@dataclass(frozen=True)
class Tracked:
    """The tracked weight tensors, their names and the optimizer group of each."""

    names: tuple[str, ...]
    params: tuple[Tensor, ...]
    groups: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.params)


def _named_from_override(params: Any, model: nn.Module | None) -> list[tuple[str, Tensor]]:
    if isinstance(params, Tensor):
        params = [params]
    if isinstance(params, Mapping):
        items = list(params.items())
    else:
        items = list(params)
    by_id = {id(p): n for n, p in model.named_parameters()} if model is not None else {}
    named: list[tuple[str, Tensor]] = []
    for i, item in enumerate(items):
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
            name, tensor = item
        else:
            name, tensor = by_id.get(id(item), f"params[{i}]"), item
        if not isinstance(tensor, Tensor):
            raise TypeError(f"params[{i}] must be a torch.Tensor, got {type(tensor).__name__}")
        named.append((name, tensor))
    return named


def _named_from_detection(
    model: nn.Module, example_input: Any, owner: str
) -> list[tuple[str, Tensor]]:
    from normdyn.validate.detection import find_scale_invariant  # lazy: heavy and optional

    layers = find_scale_invariant(model, example_input)
    parameters = dict(model.named_parameters())
    named = []
    for layer in layers:
        if layer.param_name not in parameters:
            raise ValueError(
                f"{owner}: detected layer {layer.name!r} names parameter "
                f"{layer.param_name!r}, which the model does not have"
            )
        named.append((layer.param_name, parameters[layer.param_name]))
    if not named:
        raise ValueError(
            f"{owner}: model {type(model).__name__} has no scale-invariant layer "
            "(no weight directly followed by a normalization); pass params= to choose "
            "the tensors explicitly"
        )
    return named


def resolve_tracked(
    optimizer: torch.optim.Optimizer,
    model: nn.Module | None,
    params: Iterable[Tensor] | Mapping[str, Tensor] | None,
    *,
    owner: str,
    example_input: Any = None,
) -> Tracked:
    """The tensors ``owner`` tracks: ``params`` if given, else the detected layers of ``model``.

    ``params`` may be a tensor, an iterable of tensors or of ``(name, tensor)`` pairs,
    or a mapping ``name -> tensor``.  Every tracked tensor must belong to one of the
    optimizer's param groups.  Raises :class:`ValueError` when nothing is tracked.
    """
    if not hasattr(optimizer, "param_groups"):
        raise TypeError(
            f"{owner}: optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    if params is not None:
        named = _named_from_override(params, model)
        if not named:
            raise ValueError(f"{owner}: params= is empty; pass at least one weight tensor")
    elif model is not None:
        named = _named_from_detection(model, example_input, owner)
    else:
        raise ValueError(
            f"{owner} needs model= (to detect its scale-invariant layers) or params="
        )
    group_of = {
        id(p): g for g, group in enumerate(optimizer.param_groups) for p in group["params"]
    }
    names, tensors, groups, seen = [], [], [], set()
    for name, tensor in named:
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        if id(tensor) not in group_of:
            raise ValueError(
                f"{owner}: parameter {name!r} is not in any param group of the optimizer"
            )
        names.append(name)
        tensors.append(tensor)
        groups.append(group_of[id(tensor)])
    return Tracked(tuple(names), tuple(tensors), tuple(groups))


def require_grads(tracked: Tracked, owner: str) -> list[Tensor]:
    """The gradients of the tracked tensors; :class:`RuntimeError` naming one without."""
    grads = []
    for name, p in zip(tracked.names, tracked.params, strict=True):
        if p.grad is None:
            raise RuntimeError(
                f"{owner}.step(): parameter {name!r} has no gradient (.grad is None); "
                "call loss.backward() first"
            )
        grads.append(p.grad)
    return grads


def stack_to_host(tensors: Sequence[Tensor]) -> np.ndarray:
    """Stack 0-dim tensors (any device/dtype) into one float64 host array: one sync."""
    device = tensors[0].device
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    stacked = torch.stack([t.to(device=device, dtype=dtype) for t in tensors])
    return stacked.detach().to("cpu", torch.float64).numpy()


def norms(tracked: Tracked, owner: str) -> tuple[np.ndarray, np.ndarray]:
    """``(grad_norms, weight_norms)`` of the tracked tensors as float64 host arrays.

    Raises :class:`RuntimeError` naming a tensor without gradient, and
    :class:`FloatingPointError` naming one with a non-finite gradient or weight
    norm or a zero weight norm (its ELR is undefined).
    """
    grads = require_grads(tracked, owner)
    with torch.no_grad():
        grad_norms = torch._foreach_norm(grads)
        weight_norms = torch._foreach_norm([p.detach() for p in tracked.params])
    host = stack_to_host([*grad_norms, *weight_norms])
    g, w = host[: len(tracked)], host[len(tracked):]
    for kind, values in (("gradient", g), ("weight", w)):
        bad = ~np.isfinite(values)
        if bad.any():
            name = tracked.names[int(np.flatnonzero(bad)[0])]
            raise FloatingPointError(
                f"{owner}.step(): parameter {name!r} has a non-finite {kind} norm"
            )
    if (w <= 0).any():
        name = tracked.names[int(np.flatnonzero(w <= 0)[0])]
        raise FloatingPointError(
            f"{owner}.step(): parameter {name!r} has zero weight norm; its ELR is undefined"
        )
    return g, w
