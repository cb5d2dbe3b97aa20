"""Shared parameter resolution, one-line messages and batched norms for the optimizer components.

:func:`resolve_tracked` decides which weight tensors a component tracks: the
scale-invariant layers that :func:`normdyn.layers.detection.find_scale_invariant`
detects in ``model`` (a ``torch.compile`` wrapper is unwrapped), or an explicit
``params=`` override.  Frozen tensors (``requires_grad=False``) and tensors the
optimizer does not hold are *skipped with a note*: they are listed in
:attr:`Tracked.skipped` and announced by one :class:`UserWarning` line.

Every message these helpers build is one line of at most 300 characters: counts and
the first few names (:func:`name_list`), never every layer.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from normdyn._checks import NonFiniteError

__all__ = [
    "Tracked",
    "NonFiniteStep",
    "MAX_MESSAGE",
    "name_list",
    "one_line",
    "unwrap_compiled",
    "resolve_tracked",
    "nonfinite_message",
    "norms",
    "require_grads",
    "stack_to_host",
]

MAX_MESSAGE = 300
_SHOWN = 3


class NonFiniteStep(NonFiniteError):
    """A gradient (or the step computed from it) is NaN or infinite.

    A :class:`~normdyn._checks.NonFiniteError`, hence a :class:`FloatingPointError`."""


@dataclass(frozen=True)
class Tracked:
    """The tracked weight tensors, their names, the optimizer group of each, and the skipped."""

    names: tuple[str, ...]
    params: tuple[Tensor, ...]
    groups: tuple[int, ...]
    skipped: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.params)


def name_list(names: Sequence[str], shown: int = _SHOWN) -> str:
    """``'a', 'b', 'c' and 4 more``: the first ``shown`` names (middle of names over 40
    characters elided), then a count."""
    head = ", ".join(repr(n if len(n) <= 40 else n[:18] + "..." + n[-19:]) for n in names[:shown])
    rest = len(names) - shown
    return head + (f" and {rest} more" if rest > 0 else "")


def one_line(message: str) -> str:
    """``message`` on one line, cut to :data:`MAX_MESSAGE` characters."""
    flat = " ".join(message.split())
    return flat if len(flat) <= MAX_MESSAGE else flat[: MAX_MESSAGE - 3] + "..."


def unwrap_compiled(model: nn.Module) -> nn.Module:
    """The module inside a ``torch.compile`` wrapper (``OptimizedModule._orig_mod``)."""
    inner = getattr(model, "_orig_mod", None)
    return inner if isinstance(inner, nn.Module) else model


def _named_from_override(params: Any, model: nn.Module | None) -> list[tuple[str, Tensor]]:
    if isinstance(params, Tensor):
        params = [params]
    items = list(params.items()) if isinstance(params, Mapping) else list(params)
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
    from normdyn.layers.detection import find_scale_invariant  # lazy: heavy and optional

    layers = find_scale_invariant(model, example_input)
    parameters = dict(model.named_parameters())
    missing = [layer.param_name for layer in layers if layer.param_name not in parameters]
    if missing:
        raise ValueError(one_line(
            f"{owner}: {len(missing)} detected layer(s) name parameters the model does not "
            f"have: {name_list(missing)}"))
    if not layers:
        raise ValueError(
            f"{owner}: model {type(model).__name__} has no scale-invariant layer "
            "(no weight directly followed by a normalization); pass params= to choose "
            "the tensors explicitly"
        )
    return [(layer.param_name, parameters[layer.param_name]) for layer in layers]


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
    or a mapping ``name -> tensor``.  Tensors with ``requires_grad=False`` or outside
    every param group of ``optimizer`` are skipped (one warning line; names in
    :attr:`Tracked.skipped`).  Raises :class:`ValueError` when nothing is left to track.
    """
    if not hasattr(optimizer, "param_groups"):
        raise TypeError(
            f"{owner}: optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    if model is not None:
        model = unwrap_compiled(model)
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
    names, tensors, groups, skipped, seen = [], [], [], [], set()
    for name, tensor in named:
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        if not tensor.requires_grad or id(tensor) not in group_of:
            skipped.append(name)
            continue
        names.append(name)
        tensors.append(tensor)
        groups.append(group_of[id(tensor)])
    if not names:
        raise ValueError(one_line(
            f"{owner}: all {len(skipped)} candidate layer(s) are frozen (requires_grad=False) "
            f"or not in the optimizer: {name_list(skipped)}; nothing to track"))
    if skipped:
        warnings.warn(one_line(
            f"{owner}: skipping {len(skipped)} frozen or non-optimized layer(s) "
            f"(requires_grad=False or not in the optimizer): {name_list(skipped)}"),
            UserWarning, stacklevel=3)
    return Tracked(tuple(names), tuple(tensors), tuple(groups), tuple(skipped))


def require_grads(tracked: Tracked, owner: str) -> list[Tensor]:
    """The gradients of the tracked tensors; one-line :class:`RuntimeError` counting those without."""
    missing = [n for n, p in zip(tracked.names, tracked.params, strict=True) if p.grad is None]
    if missing:
        what = (f"parameter {missing[0]!r} has" if len(missing) == 1 else
                f"{len(missing)} of {len(tracked)} tracked parameters have")
        raise RuntimeError(one_line(
            f"{owner}.step(): {what} no gradient (.grad is None); call loss.backward() first"
            + ("" if len(missing) == 1 else f": {name_list(missing)}")))
    return [p.grad for p in tracked.params]


def stack_to_host(tensors: Sequence[Tensor]) -> np.ndarray:
    """Stack 0-dim tensors (any device/dtype) into one float64 host array: one sync."""
    device = tensors[0].device
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    stacked = torch.stack([t.to(device=device, dtype=dtype) for t in tensors])
    return stacked.detach().to("cpu", torch.float64).numpy()


def nonfinite_message(owner: str, where: str, kind: str, names: Sequence[str],
                      total: int) -> str:
    """One line naming how many of ``total`` tensors have a non-finite ``kind``, and which."""
    what = (f"parameter {names[0]!r} has" if len(names) == 1 else
            f"{len(names)} of {total} parameters have")
    tail = "" if len(names) == 1 else f": {name_list(names)}"
    return one_line(f"{owner}.step(){where}: {what} a non-finite {kind}{tail}")


def norms(tracked: Tracked, vectors: Sequence[Tensor], owner: str, kind: str,
          where: str = "") -> tuple[np.ndarray, np.ndarray]:
    """``(vector_norms, weight_norms)`` of the tracked tensors as float64 host arrays.

    Norms accumulate in float64.  Raises (one line) :class:`FloatingPointError` for
    non-finite weights (checked first) or a zero weight norm (its ELR is undefined), and
    :class:`NonFiniteStep` for non-finite ``vectors`` (called ``kind`` in the message).
    """
    with torch.no_grad():
        vector_norms = torch._foreach_norm(list(vectors), 2, dtype=torch.float64)
        weight_norms = torch._foreach_norm([p.detach() for p in tracked.params], 2,
                                           dtype=torch.float64)
    host = stack_to_host([*vector_norms, *weight_norms])
    v, w = host[: len(tracked)], host[len(tracked):]
    # weights first: non-finite weights always raise, even where a non-finite step is
    # taken for one a GradScaler skips
    for what, values, error in (("weight norm", w, FloatingPointError),
                                (f"{kind} norm", v, NonFiniteStep)):
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise error(nonfinite_message(
                owner, where, what, [tracked.names[i] for i in bad], len(tracked)))
    zero = np.flatnonzero(w <= 0)
    if zero.size:
        names = [tracked.names[i] for i in zero]
        raise FloatingPointError(one_line(
            f"{owner}.step(){where}: {len(names)} parameter(s) have zero weight norm, their "
            f"ELR is undefined: {name_list(names)}"))
    return v, w
