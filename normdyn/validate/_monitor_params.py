"""Which tensors :class:`~normdyn.validate.monitor.ELRMonitor` tracks, and which optimizer it hooks.

* :func:`choose_names` -- the detected scale-invariant weights, or validated explicit names.
* :func:`drop_frozen` -- frozen tensors (``requires_grad=False``, or in no parameter group
  of the optimizer) are left out with a one-line warning, not an error.
* :func:`hook_target` -- the :class:`torch.optim.Optimizer` whose ``step()`` the monitor
  hooks to read the lr the step used (unwrapping accelerate's ``AcceleratedOptimizer``
  and similar wrappers that keep the real optimizer in ``.optimizer``).
* :func:`check_loss`, :func:`as_float`, :func:`bools` -- small argument conversions.

Every message is one line of at most 300 characters: counts and the first few names.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from normdyn.layers._layers import _one_line, _short_names
from normdyn.layers.detection import ScaleInvariantLayer, find_scale_invariant

__all__ = ["choose_names", "drop_frozen", "hook_target", "check_loss", "as_float", "bools"]


def choose_names(model: nn.Module, params: dict[str, Tensor], names: Sequence[str] | None,
                 example_input: Any) -> tuple[list[str], list[ScaleInvariantLayer]]:
    """The names to track and the detector's layers (``names=None``: the detected ones)."""
    if names is None:
        detected = find_scale_invariant(model, example_input)
        if not detected:
            raise ValueError(
                f"no scale-invariant layer found in {type(model).__name__} (no conv/linear "
                "weight feeds a normalization); pass names=[...] to choose the parameters "
                "to monitor")
        return [d.param_name for d in detected], detected
    if isinstance(names, str):
        raise TypeError("names must be a sequence of parameter names, not a string")
    chosen = list(names)
    if not chosen:
        raise ValueError("names must name at least one parameter, got an empty list")
    unknown = [n for n in chosen if n not in params]
    if unknown:
        raise ValueError(_one_line(f"{len(unknown)} unknown parameter name(s) "
                                   f"{_short_names(unknown)}; the model has {len(params)} "
                                   f"parameters, e.g. {_short_names(list(params))}"))
    duplicates = sorted({n for n in chosen if chosen.count(n) > 1})
    if duplicates:
        raise ValueError(_one_line(f"names contains {len(duplicates)} duplicate(s): "
                                   f"{_short_names(duplicates)}"))
    try:
        detected = find_scale_invariant(model, example_input)
    except ValueError as exc:
        warnings.warn(f"scale-invariance detection failed ({str(exc)[:150]}); monitoring "
                      "the given names anyway", stacklevel=3)
        detected = []
    return chosen, detected


def drop_frozen(chosen: list[str], params: dict[str, Tensor],
                optimizer: Any) -> tuple[list[str], list[str], dict[int, int]]:
    """Leave out frozen tensors (``requires_grad=False`` or in no parameter group).

    Returns ``(kept names, skipped names, {id(tensor): group index})``; warns once, in
    one line, when something was skipped, and raises when nothing is left.
    """
    group_of: dict[int, int] = {}
    for index, group in enumerate(optimizer.param_groups):
        for p in group["params"]:
            group_of[id(p)] = index
    frozen = [n for n in chosen if not params[n].requires_grad]
    left_out = [n for n in chosen if params[n].requires_grad and id(params[n]) not in group_of]
    skipped = frozen + left_out
    if skipped:
        parts = [f"{len(frozen)} with requires_grad=False ({_short_names(frozen, 2)})"
                 if frozen else "",
                 f"{len(left_out)} not optimized by {type(optimizer).__name__} "
                 f"({_short_names(left_out, 2)})" if left_out else ""]
        note = f"ELRMonitor: not tracking {len(skipped)} frozen parameter(s): " \
            + "; ".join(p for p in parts if p)
        chosen = [n for n in chosen if n not in set(skipped)]
        if not chosen:
            raise ValueError(_one_line(note.replace(
                "ELRMonitor: not tracking", "ELRMonitor: no parameter left to track, all")))
        warnings.warn(_one_line(note), stacklevel=3)
    return chosen, skipped, group_of


def hook_target(optimizer: Any) -> torch.optim.Optimizer | None:
    """The torch optimizer whose ``step()`` to hook: ``optimizer`` itself, or the one a
    wrapper (accelerate's ``AcceleratedOptimizer``, Lightning's ``LightningOptimizer``,
    ...) keeps in ``.optimizer`` with the same ``param_groups``; None if there is none."""
    for _ in range(4):
        inner = getattr(optimizer, "optimizer", None)
        if not (isinstance(inner, torch.optim.Optimizer)
                and inner.param_groups is optimizer.param_groups):
            break
        optimizer = inner
    if isinstance(optimizer, torch.optim.Optimizer) and hasattr(
            optimizer, "_optimizer_step_post_hooks"):
        return optimizer
    return None


def bools(value: Any, length: int, default: bool) -> np.ndarray:
    """A stored boolean tensor as an array, or ``length`` times ``default`` if absent."""
    if value is None:
        return np.full(length, default, dtype=bool)
    return value.detach().cpu().numpy().astype(bool)


def check_loss(loss: Any) -> None:
    """Accept ``None``, a number or a one-element tensor."""
    if loss is None:
        return
    if isinstance(loss, Tensor):
        if loss.numel() != 1:
            raise ValueError(f"loss must be a scalar, got a tensor of shape {tuple(loss.shape)}")
    elif not isinstance(loss, (int, float)):
        raise TypeError(f"loss must be a tensor or a number, got {type(loss).__name__}")


def as_float(lr: Any) -> float:
    """A learning rate as a float (a CPU tensor lr is read without a device sync)."""
    if isinstance(lr, Tensor):
        if lr.device.type != "cpu":
            raise TypeError("learning rates stored as device tensors are not supported; "
                            "use a float or a CPU tensor lr")
        return float(lr)
    return float(lr)
