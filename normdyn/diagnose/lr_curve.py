r"""The measured one-step lr curve: one real optimizer step per lr from one snapshot.

For every lr :math:`\eta` of the sweep, :class:`OneStepProbe`

1. restores the weights, every buffer (BatchNorm statistics) and the optimizer state from
   the in-memory :class:`~normdyn.diagnose._state.Snapshot`;
2. puts the gradient :math:`g_0` at the initial weights back into ``.grad``, sets every
   param group's lr to :math:`\eta` and calls ``optimizer.step()`` once (the user's
   optimizer, or plain SGD);
3. re-seeds torch and recomputes the gradients :math:`g_1` at the new weights
   :math:`w_1` on the same batch (one forward-backward; each gradient's norm is taken
   in float64 as soon as it is accumulated and the gradient freed at once), and records

.. math::

    S_{\mathrm{meas}}(\eta) = \frac{\max_\ell E_\ell}{\min_\ell E_\ell},\qquad
    E_\ell = \eta\,\frac{\lVert g_{1,\ell}\rVert}{\lVert w_{1,\ell}\rVert}

over the layers live at :math:`w_0` (:func:`normdyn._spread.spread_max_min`, and
:func:`~normdyn._spread.robust_spread` for the quantile ratio), next to the
constant-:math:`c` model :func:`normdyn.theory.numeric.one_step_spread`
:math:`(\eta, a)` with :math:`a_\ell = \lVert g_{0,\ell}\rVert/\lVert w_{0,\ell}\rVert`.

Cost: one forward-backward per lr plus one restore (a copy of the parameters, buffers
and optimizer state).  A step that makes the loss or a gradient non-finite (an lr far
too large) is recorded as NaN, not raised: that is a measurement.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from normdyn._spread import robust_spread, spread_max_min
from normdyn.diagnose._state import Snapshot
from normdyn.theory.numeric import gradient_elr, one_step_spread

__all__ = ["LR_CURVE_COLUMNS", "OneStepProbe", "compute_loss", "default_lrs"]

LR_CURVE_COLUMNS = ("lr", "spread_measured", "spread_model", "robust_spread_measured",
                    "loss_after")
"""Columns of ``Diagnosis.lr_curve``, one row per lr in increasing order."""

DEFAULT_NUM_LRS = 25
DEFAULT_DECADES = 2.0


def default_lrs(critical_lr: float, num: int = DEFAULT_NUM_LRS,
                decades: float = DEFAULT_DECADES) -> np.ndarray:
    """``num`` log-spaced lrs, ``decades`` either side of ``critical_lr`` (centred on it)."""
    return np.geomspace(critical_lr * 10.0**-decades, critical_lr * 10.0**decades, num)


def _model_output(model: nn.Module, inputs: Any) -> Any:
    if isinstance(inputs, dict):
        out = model(**inputs)
    elif isinstance(inputs, (tuple, list)):
        out = model(*inputs)
    else:
        out = model(inputs)
    logits = getattr(out, "logits", None)  # transformers' ModelOutput
    return logits if isinstance(logits, Tensor) else out


def compute_loss(model: nn.Module, loss_fn: Callable[..., Tensor], batch: Any) -> Tensor:
    """``loss_fn(model(inputs), targets)`` for a pair, ``loss_fn(model(batch))`` otherwise.

    ``inputs`` may be a tensor, a tuple of positional inputs or a dict of keyword inputs;
    an output with a tensor ``.logits`` (transformers) is passed as its logits.
    """
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        inputs, targets = batch
        return loss_fn(_model_output(model, inputs), targets)
    return loss_fn(_model_output(model, batch))


def _norm64(t: Tensor) -> Tensor:
    return torch.linalg.vector_norm(t.detach(), dtype=torch.float64)


class OneStepProbe:
    """Steps ``model`` from ``snapshot`` at one lr after another (see the module docstring).

    ``tracked`` are the parameter names whose ELRs make the spread (the live
    scale-invariant weights); ``grads0`` the gradients at the snapshot's weights (``None``
    for parameters without one); ``optimizer`` the optimizer to step (its param groups'
    lr are overwritten per probe; :meth:`Snapshot.restore_all` puts them back).
    """

    def __init__(self, model: nn.Module, batch: Any, loss_fn: Callable[..., Tensor],
                 optimizer: torch.optim.Optimizer, snapshot: Snapshot,
                 tracked: Sequence[str], grads0: dict[str, Tensor | None], seed: int) -> None:
        self.model, self.batch, self.loss_fn = model, batch, loss_fn
        self.optimizer, self.snapshot, self.seed = optimizer, snapshot, seed
        self.params = dict(model.named_parameters())
        self.tracked = list(tracked)
        self.grads0 = grads0
        self.grad0_norms = {n: _norm64(g) for n, g in grads0.items() if g is not None}

    def step(self, lr: float | None) -> None:
        """Restore, then one optimizer step at ``lr`` (``None``: the groups' own lrs)."""
        self.snapshot.restore_weights()
        for n, p in self.params.items():
            p.grad = self.grads0.get(n)
        if lr is not None:
            for group in self.optimizer.param_groups:
                if isinstance(group["lr"], Tensor):
                    group["lr"].fill_(float(lr))
                else:
                    group["lr"] = float(lr)
        self.optimizer.step()
        for n, p in self.params.items():
            g0 = self.grads0.get(n)
            if p.grad is not g0 or (g0 is not None and not torch.equal(_norm64(g0),
                                                                       self.grad0_norms[n])):
                raise ValueError(f"optimizer: {type(self.optimizer).__name__}.step() changed "
                                 f"the gradient of {n!r} in place or replaced it; diagnose "
                                 "needs an optimizer that only reads .grad")
            p.grad = None

    def update_norms(self) -> np.ndarray:
        """``|w_1 - w_0|`` of the tracked weights after :meth:`step` (float64)."""
        with torch.no_grad():
            norms = [torch.linalg.vector_norm(self.params[n].detach().double()
                                              - self.snapshot.param_values[n].double())
                     for n in self.tracked]
        return torch.stack(norms).cpu().numpy() if norms else np.zeros(0)

    def gradients_here(self) -> tuple[float, np.ndarray, np.ndarray]:
        """(loss, |g| and |w| of the tracked weights) at the current weights; grads freed."""
        norms: dict[str, Tensor] = {}
        tracked = set(self.tracked)

        def hook(name: str) -> Callable[[Tensor], None]:
            def take(p: Tensor) -> None:
                if name in tracked and p.grad is not None:
                    norms[name] = _norm64(p.grad)
                p.grad = None
            return take

        handles = [p.register_post_accumulate_grad_hook(hook(n))
                   for n, p in self.params.items() if p.requires_grad]
        try:
            for p in self.params.values():
                p.grad = None
            torch.manual_seed(self.seed)
            loss = compute_loss(self.model, self.loss_fn, self.batch)
            loss_value = float(loss.detach())
            if math.isfinite(loss_value):
                loss.backward()
            del loss
        finally:
            for h in handles:
                h.remove()
        nan = torch.tensor(float("nan"), dtype=torch.float64)
        with torch.no_grad():
            g = torch.stack([norms.get(n, nan).cpu() for n in self.tracked])
            w = torch.stack([_norm64(self.params[n]).cpu() for n in self.tracked])
        return loss_value, g.numpy(), w.numpy()

    def curve(self, lrs: np.ndarray, a0: np.ndarray,
              progress: Callable[[int], None] | None = None) -> pd.DataFrame:
        """The lr curve, columns :data:`LR_CURVE_COLUMNS`, ``a0`` the live layers' a."""
        rows = []
        for lr in lrs:
            self.step(float(lr))
            loss, g, w = self.gradients_here()
            with np.errstate(all="ignore"):
                e = np.asarray(gradient_elr.raw(float(lr), g, w), dtype=np.float64)
            if np.all(np.isfinite(e)) and math.isfinite(loss):
                spread, robust = spread_max_min(e, g), robust_spread(e, g)
            else:
                spread = robust = math.nan
            rows.append((float(lr), spread, float(one_step_spread(float(lr), a0)), robust,
                         loss))
            if progress is not None:
                progress(1)
        return pd.DataFrame(rows, columns=list(LR_CURVE_COLUMNS))
