r"""One in-memory snapshot of everything a diagnosis may touch, and its bit-for-bit restore.

:func:`normdyn.diagnose` steps the user's model and optimizer for real, many times; the
caller must get them back exactly.  :class:`Snapshot` records, before the first probe:

* every parameter's values (``named_parameters``, tied weights once) and its
  ``requires_grad`` flag;
* every buffer's values (``named_buffers``: BatchNorm ``running_mean``, ``running_var``,
  ``num_batches_tracked``, non-persistent buffers too);
* every parameter's ``.grad`` *object* (not a copy: the diagnosis replaces ``p.grad`` by
  its own tensors and never writes into the user's, so putting the objects back restores
  them bit for bit at no memory cost);
* the optimizer's per-parameter state (tensors cloned, other values deep-copied) and the
  hyper-parameters of every param group (``lr`` included);
* every module's ``training`` flag;
* the RNG states of torch (CPU and, when available, every CUDA device), Python's
  ``random`` and NumPy's legacy global generator.

:meth:`Snapshot.restore_weights` puts back parameters, buffers and optimizer state in
place (``copy_``: the same tensor objects, the same bits) -- used between probes;
:meth:`Snapshot.restore_all` also puts back the flags, the ``.grad`` objects, the param
group hyper-parameters and the RNG states -- used once, at the end.

Memory: one copy of the parameters and buffers plus one of the optimizer state.
"""

from __future__ import annotations

import copy
import random
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["Snapshot"]


def _clone_state(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().clone()
    return copy.deepcopy(value)


class Snapshot:
    """The state of ``model`` and ``optimizer`` (may be ``None``) at construction."""

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
        self.model = model
        self.optimizer = optimizer
        self.params = dict(model.named_parameters())
        self.buffers = dict(model.named_buffers())
        with torch.no_grad():
            self.param_values = {n: p.detach().clone() for n, p in self.params.items()}
            self.buffer_values = {n: b.detach().clone() for n, b in self.buffers.items()}
        self.requires_grad = {n: p.requires_grad for n, p in self.params.items()}
        self.grads = {n: p.grad for n, p in self.params.items()}
        self.training = [(m, m.training) for m in model.modules()]
        self.rng: dict[str, Any] = {
            "torch": torch.get_rng_state(),
            "python": random.getstate(),
            "numpy": np.random.get_state(),  # noqa: NPY002 - the legacy global RNG is restored too
        }
        if torch.cuda.is_available():
            self.rng["cuda"] = torch.cuda.get_rng_state_all()
        self.opt_state: dict[Tensor, dict[str, Any]] = {}
        self.opt_groups: list[dict[str, Any]] = []
        if optimizer is not None:
            self.opt_state = {p: {k: _clone_state(v) for k, v in s.items()}
                              for p, s in optimizer.state.items()}
            self.opt_groups = [{k: copy.deepcopy(v) for k, v in g.items() if k != "params"}
                               for g in optimizer.param_groups]

    # ------------------------------------------------------------------ between probes

    def restore_weights(self) -> None:
        """Parameters, buffers and optimizer state back, in place, bit for bit."""
        with torch.no_grad():
            for n, p in self.params.items():
                p.copy_(self.param_values[n])
            for n, b in self.buffers.items():
                b.copy_(self.buffer_values[n])
        if self.optimizer is None:
            return
        state = self.optimizer.state
        for p in [p for p in state if p not in self.opt_state]:
            del state[p]
        for p, saved in self.opt_state.items():
            current = state[p]
            for key in [k for k in current if k not in saved]:
                del current[key]
            for key, value in saved.items():
                old = current.get(key)
                if (isinstance(value, Tensor) and isinstance(old, Tensor)
                        and old.shape == value.shape and old.dtype == value.dtype
                        and old.device == value.device):
                    with torch.no_grad():
                        old.copy_(value)
                else:
                    current[key] = _clone_state(value)

    # ------------------------------------------------------------------ at the end

    def restore_all(self) -> None:
        """Everything recorded at construction back (see the module docstring)."""
        self.restore_weights()
        for n, p in self.params.items():
            p.requires_grad_(self.requires_grad[n])
            p.grad = self.grads[n]
        for module, flag in self.training:
            module.training = flag
        if self.optimizer is not None:
            for group, saved in zip(self.optimizer.param_groups, self.opt_groups, strict=True):
                for key, value in saved.items():
                    if isinstance(value, Tensor) and isinstance(group.get(key), Tensor):
                        group[key].copy_(value)
                    else:
                        group[key] = copy.deepcopy(value)
        torch.set_rng_state(self.rng["torch"])
        random.setstate(self.rng["python"])
        np.random.set_state(self.rng["numpy"])  # noqa: NPY002
        if "cuda" in self.rng:
            torch.cuda.set_rng_state_all(self.rng["cuda"])
