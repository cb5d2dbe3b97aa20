r"""Constrained-ELR training: every scale-invariant layer turns by a fixed angle per step.

:meth:`ConstrainedELR.step` replaces ``optimizer.step()``.  The inner optimizer proposes
its update :math:`\Delta_\ell` for each tracked (scale-invariant) weight; only its part
tangential to :math:`w_\ell` is kept, as a direction, and the weight is turned by
:math:`\theta_\ell = \arctan E_\ell` in that direction with its norm held (THEORY.md §4,
"Constrained ELR"):

.. math::

    \tau_\ell = \Delta_\ell - \frac{\langle\Delta_\ell, w_\ell\rangle}{\lVert w_\ell\rVert^2}w_\ell,
    \qquad
    w_\ell^{+} = \lVert w_\ell\rVert\,\bigl(\cos\theta_\ell\,\hat w_\ell
                 + \sin\theta_\ell\,\hat\tau_\ell\bigr)
               = \frac{w_\ell + E_\ell\lVert w_\ell\rVert\,\hat\tau_\ell}{\sqrt{1+E_\ell^2}},

so :math:`\tan\angle(w_\ell, w_\ell^+) = E_\ell` and :math:`\lVert w_\ell^+\rVert =
\lVert w_\ell\rVert` exactly (up to rounding, which random-walks: about
:math:`\varepsilon\sqrt{t}` after *t* steps).  :math:`E_\ell` is the tangential ELR:
the per-step gradient ELR of plain SGD on a scale-invariant layer, where
:math:`\tan\theta = \eta\lVert g\rVert/\lVert w\rVert`.  The radial part of the inner
update (weight decay, stale momentum) is dropped, so it can neither shrink the norm to 0
nor, without weight decay, let it grow until the step rounds away (the two failures of
rescaling the whole update).  For a scale-invariant layer the norm carries no
information, so holding it loses nothing; weight decay still acts on the *direction*
through the momentum buffer.  The update ELR of a tracked layer is
:math:`\lVert w^+ - w\rVert/\lVert w\rVert = 2\sin(\theta/2)`.

**Where the direction comes from.**  For :class:`torch.optim.SGD`, ``Adam`` and ``AdamW``
(exactly these classes) :math:`\Delta_\ell = -\eta\,d_\ell` is rebuilt from the inner
optimizer's own step rule and its state before the step (:mod:`normdyn.optim._steps`, the
rule the warm-up uses), evaluated in float64; the turned weights are computed before the
inner step runs, which then updates its state and the untracked parameters.  So the
direction does not depend on the size of :math:`\eta d` against :math:`w`: a layer
whose inner update is :math:`10^{-12}\lVert w\rVert` (far below float32 resolution, where
:math:`w^{\mathrm{inner}} = w`) still turns by :math:`\arctan E`.  (The rule reads the
gradients as they are when :meth:`~ConstrainedELR.step` is called: a step pre-hook on
the *inner* optimizer that edits them runs after the direction was taken.)  Any other
inner optimizer is used as a black box: :math:`\Delta_\ell = w^{\mathrm{inner}}_\ell -
w_\ell`, resolved only to about :math:`\varepsilon\lVert w\rVert/\lVert\Delta\rVert`
in the weights' dtype; keep its inner ELR well above :math:`10^{-5}` in float32.

**Scale.**  Each weight and each proposed update is divided by a power of two (exact) to
a largest entry in :math:`[1/2, 1)`, and the projection, the norms and the rotation are
float64 work, so any finite sizes (a classifier that has exploded to :math:`10^{10}`
sends tracked gradients to :math:`10^{20}` and beyond) turn by :math:`\arctan E` with the
norm held.  The projection is applied twice, so :math:`\tau` is orthogonal to :math:`w`
to rounding of :math:`\lVert\tau\rVert`, not of :math:`\lVert\Delta\rVert`.

*Zero tangential part* (:math:`\tau_\ell = 0`: no gradient signal, or an update along
:math:`w` only, e.g. weight decay on a zero gradient; or a zero lr): there is no
direction to turn in, and the weight is left unchanged.  A tangential part at the
rounding level of the proposal, :math:`\lVert\tau\rVert \le 16\varepsilon_{64}\lVert
\Delta\rVert`, counts as zero: its direction is rounding noise.
Untracked parameters (biases, norm affines, the classifier) take the inner optimizer's
update unchanged; its state (momentum buffers, Adam moments) is never touched.
Non-finite gradients raise a one-line :class:`~normdyn._checks.NonFiniteError` (a
:class:`FloatingPointError`) naming the 0-based step and the layers *before* the inner
optimizer runs, so neither weights nor state are written; so does a non-finite tracked
weight or proposed update (``... has a non-finite update``: e.g. a momentum buffer that
overflowed float32 at the previous step).  With a black-box inner optimizer that check
comes after its step: the tracked weights are put back, its state is already written.

**Target.**  ``target_elr`` is a positive float :math:`E` (the same for every layer,
independent of the lr: the inner lr only matters for the untracked parameters and
through the update direction).  With ``target_elr=None`` it is derived per group from
the group's *current* lr :math:`\eta`, weight decay :math:`\lambda` and momentum
:math:`\beta` (plain :class:`torch.optim.SGD` with heavy-ball momentum only:
``dampening=0`` and ``nesterov=False``, else :class:`ValueError`) as the angle turned
per step at the rotational equilibrium of the momentum + weight-decay model (THEORY.md §5,
:func:`normdyn.theory.numeric.momentum_equilibrium_rotation`):

.. math::

    E_{tan}^2 = \frac{\eta\lambda\,(2 - 2\beta - \eta\lambda)}{1 - \beta^2},\qquad
    E = \frac{E_{tan}}{\sqrt{1 - E_{tan}^2}} \approx \sqrt{\frac{2\eta\lambda}{1+\beta}},

the angle towards which plain SGD with the same hyper-parameters drives every layer;
the constraint imposes it from step 0 (Kosson et al.'s rotational optimizers).  It needs
:math:`\lambda > 0`; otherwise pass ``target_elr``.  It is re-evaluated at each step, so
a torch scheduler on the inner optimizer (or on this wrapper: the param groups are the
same objects) keeps working.

**Optimizer protocol.**  :class:`ConstrainedELR` is a :class:`torch.optim.Optimizer`
whose ``param_groups`` and ``state`` *are* the inner optimizer's, so lr schedulers,
:class:`normdyn.validate.monitor.ELRMonitor`, ``GradScaler.step`` (which unscales and
skips non-finite steps before calling :meth:`step`) and step hooks
(``register_step_pre_hook``/``register_step_post_hook``) work on it.  The inner
optimizer's own hooks also fire, inside :meth:`step`.

**Precision.**  The rotation is float64 work; storing it rounds each entry to the
weights' dtype, which moves the turned part :math:`E\lVert w\rVert` by about
:math:`\varepsilon/(E\sqrt n)` relative (under :math:`10^{-6}` per step for float32 at
:math:`E = 0.1` on :math:`n \approx 200` entries; random, so the norm random-walks
instead of drifting).  Half-precision weights hold the angle only to about
:math:`\varepsilon/E` (0.3 % measured for bfloat16 at :math:`E = 0.05`).

**Usage**::

    inner = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    optimizer = ConstrainedELR(inner, model, target_elr=0.02)
    for x, y in batches:
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()                                # inner step, then the rotation
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from normdyn._checks import check_positive
from normdyn.optim._params import (
    NonFiniteStep,
    name_list,
    nonfinite_message,
    one_line,
    require_grads,
    resolve_tracked,
    stack_to_host,
    unwrap_compiled,
)
from normdyn.optim._steps import SUPPORTED, unit_steps
from normdyn.theory.numeric import momentum_equilibrium_rotation

__all__ = ["ConstrainedELR"]

_OWNER = "ConstrainedELR"

# The inner optimizers of live ConstrainedELR wrappers (weak: they go with the wrapper).
# CriticalLRWarmup refuses them: see normdyn.optim.warmup.refuse_constrained.
WRAPPED: weakref.WeakSet[torch.optim.Optimizer] = weakref.WeakSet()
_RESOLVED = 16.0  # |tau| <= 16 eps |u| is rounding noise of the projection: tau = 0


def _lr(group: dict) -> float:
    lr = group["lr"]
    return float(lr.item()) if isinstance(lr, Tensor) else float(lr)


class ConstrainedELR(torch.optim.Optimizer):
    """Wrap ``optimizer`` so that each tracked layer turns by ``arctan(target_elr)`` per step.

    Parameters
    ----------
    optimizer:
        The inner torch optimizer (SGD, Adam, ...); it proposes the update direction.
    model:
        Module whose scale-invariant layers are tracked (found by
        :func:`normdyn.layers.detection.find_scale_invariant`; a ``torch.compile``
        wrapper is unwrapped).  Frozen layers are skipped, see :attr:`skipped`.
    target_elr:
        Positive float :math:`E = \\tan\\theta`, or ``None`` for the rotational-equilibrium
        angle of each SGD param group (see the module docstring).
    params:
        Explicit tensors to track instead of detection.
    example_input:
        Passed to the detection when ``model`` needs a forward pass to be analysed.

    Attributes
    ----------
    last_scales:
        Per tracked tensor (0-dim float64 tensors), the factor by which the tangential
        part of the proposed update :math:`\\Delta` was multiplied,
        :math:`E\\lVert w\\rVert/(\\sqrt{1+E^2}\\lVert\\tau\\rVert)`; 0 where :math:`\\tau = 0`.
    skipped:
        Names of candidate layers left untracked: frozen or not in the optimizer.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        model: nn.Module | None = None,
        target_elr: float | None = None,
        *,
        params: Iterable[Tensor] | Mapping[str, Tensor] | None = None,
        example_input: Any = None,
    ) -> None:
        if target_elr is not None:
            target_elr = float(check_positive("target_elr", target_elr))
        tracked = resolve_tracked(
            optimizer, model, params, owner=_OWNER, example_input=example_input
        )
        # Optimizer.__init__ re-registers the inner groups' dicts (the same objects) and
        # sets up the hook dictionaries; then group list and state are made the inner ones.
        super().__init__(optimizer.param_groups, optimizer.defaults)
        self.param_groups = optimizer.param_groups
        self.state = optimizer.state
        self.optimizer = optimizer
        WRAPPED.add(optimizer)
        self.target_elr = target_elr
        self._tracked = tracked
        names = ({} if model is None else
                 {id(p): n for n, p in unwrap_compiled(model).named_parameters()})
        names.update({id(p): n for n, p in zip(tracked.names, tracked.params, strict=True)})
        self._names = names
        if target_elr is None:
            self.layer_targets()  # validate the derivation's preconditions now
        self.step_count = 0
        self.last_scales: list[Tensor] | None = None

    # ------------------------------------------------------------------ protocol

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__.copy()  # Optimizer's keeps only defaults, state, groups

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        if "optimizer" in state:      # a deep copy's (or unpickled) inner optimizer
            WRAPPED.add(state["optimizer"])

    @property
    def tracked_names(self) -> tuple[str, ...]:
        """Names of the tracked weight tensors."""
        return self._tracked.names

    @property
    def skipped(self) -> tuple[str, ...]:
        """Names of the candidate layers not tracked (frozen or not in the optimizer)."""
        return self._tracked.skipped

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        # Optimizer.__init__ calls this before self.optimizer exists: register only.
        if "optimizer" not in self.__dict__:
            super().add_param_group(param_group)
        else:
            self.optimizer.add_param_group(param_group)

    # ------------------------------------------------------------------ target

    def group_target(self, g: int) -> float:
        """The target :math:`\\tan\\theta` of param group ``g`` at its current hyper-parameters."""
        if self.target_elr is not None:
            return self.target_elr
        group = self.optimizer.param_groups[g]
        if not isinstance(self.optimizer, torch.optim.SGD):
            raise ValueError(
                "target_elr=None derives the target from the SGD momentum/weight-decay "
                f"equilibrium; for {type(self.optimizer).__name__} pass target_elr"
            )
        weight_decay = float(group.get("weight_decay", 0.0))
        momentum = float(group.get("momentum", 0.0))
        if weight_decay <= 0:
            raise ValueError(
                "target_elr=None derives the target from the rotational equilibrium "
                "(about sqrt(2*lr*wd/(1+momentum))), which needs "
                f"weight_decay > 0 (param group {g} has {weight_decay!r}); pass target_elr"
            )
        if float(group.get("dampening", 0.0)) != 0.0:
            raise ValueError(
                f"target_elr=None assumes heavy-ball momentum (dampening=0); param group "
                f"{g} has dampening={group['dampening']!r}; pass target_elr"
            )
        if bool(group.get("nesterov", False)):
            raise ValueError(
                f"target_elr=None assumes heavy-ball momentum (nesterov=False); param group "
                f"{g} has nesterov=True; pass target_elr"
            )
        return float(momentum_equilibrium_rotation(_lr(group), weight_decay, momentum))

    def layer_targets(self) -> np.ndarray:
        """Target :math:`\\tan\\theta` of each tracked tensor, in :attr:`tracked_names` order."""
        per_group = {g: self.group_target(g) for g in set(self._tracked.groups)}
        return np.array([per_group[g] for g in self._tracked.groups])

    # ------------------------------------------------------------------ step

    def _check_finite_grads(self) -> None:
        """One sync: raise naming the step and the parameters whose gradient is non-finite."""
        params = [p for group in self.param_groups for p in group["params"]
                  if p.grad is not None]
        if not params:
            return
        grad_norms = torch._foreach_norm([p.grad for p in params], 2, dtype=torch.float64)
        bad = np.flatnonzero(~np.isfinite(stack_to_host(grad_norms)))
        if bad.size:
            names = [self._names.get(id(params[i]), f"param[{i}]") for i in bad]
            raise NonFiniteStep(nonfinite_message(
                _OWNER, f" at step {self.step_count}", "gradient", names, len(params)))

    def _proposals(self, grads: list[Tensor]) -> tuple[list[Tensor], list[float]]:
        r"""The inner optimizer's coming update direction of each tracked tensor, in float64,
        and the factor by which the update is that direction (``lr``, 0 for a zero lr).

        The step rule of :mod:`normdyn.optim._steps`: :math:`\Delta = -\eta d`, so the
        direction is :math:`-d` (:math:`+d` for a negative lr)."""
        steps = unit_steps(self.optimizer, self._tracked.params, self._tracked.groups, grads,
                           dtype=torch.float64)
        lrs = [_lr(self.optimizer.param_groups[g]) for g in self._tracked.groups]
        return ([-d if lr > 0 else d for d, lr in zip(steps, lrs, strict=True)],
                [abs(lr) for lr in lrs])

    def _rotate(self, weights: list[Tensor], proposals: list[Tensor], factors: list[float],
                targets: np.ndarray) -> tuple[list[Tensor], list[Tensor]]:
        r"""The turned weights (in each weight's dtype) and :attr:`last_scales`.

        Raises :class:`NonFiniteStep` (one line, naming the step and the layers) for a
        non-finite weight or proposal, having written nothing.  Each tensor is scaled by a
        power of two (exact) to a largest entry in [1/2, 1) and the rest is float64 work, so
        finite values of any size turn by :math:`\arctan E` with the norm held.
        """
        peaks = stack_to_host([t.abs().amax().to(torch.float64) if t.numel() else
                               t.new_zeros((), dtype=torch.float64)
                               for t in (*weights, *proposals)])
        n = len(weights)
        where = f" at step {self.step_count}"
        for kind, values in (("weight", peaks[:n]), ("update", peaks[n:])):
            bad = np.flatnonzero(~np.isfinite(values))
            if bad.size:
                raise NonFiniteStep(nonfinite_message(
                    _OWNER, where, kind, [self._tracked.names[i] for i in bad], n))
        eps = torch.finfo(torch.float64).eps
        out, scales = [], []
        for w, u, factor, target, w_peak, u_peak in zip(
                weights, proposals, factors, targets, peaks[:n], peaks[n:], strict=True):
            w_exp, u_exp = math.frexp(float(w_peak))[1], math.frexp(float(u_peak))[1]
            w_hat = torch.ldexp(w.to(torch.float64), torch.tensor(-w_exp, dtype=torch.float64))
            u_hat = torch.ldexp(u.to(torch.float64), torch.tensor(-u_exp, dtype=torch.float64))
            ww = torch.sum(w_hat * w_hat)
            safe_ww = torch.where(ww > 0, ww, 1.0)
            # tau = u - (<u, w>/|w|^2) w, projected twice so that it is orthogonal to w to
            # rounding of |tau| (once leaves a radial residue of about eps |u|)
            tau = u_hat - (torch.sum(u_hat * w_hat) / safe_ww) * w_hat
            first = torch.linalg.vector_norm(tau)
            tau -= (torch.sum(tau * w_hat) / safe_ww) * w_hat
            tau_norm = torch.linalg.vector_norm(tau)
            # a tangential part at the rounding level of u is noise: count it as zero
            moving = ((first > _RESOLVED * eps * torch.linalg.vector_norm(u_hat))
                      & (ww > 0) & (factor > 0))
            w_norm = ww.sqrt()
            safe_tau = torch.where(moving, tau_norm, 1.0)
            # w+ = (w + E |w| tau/|tau|) / sqrt(1 + E^2); no direction leaves w unchanged
            cos = 1.0 / math.sqrt(1.0 + float(target) ** 2)
            turned = (w_hat + (float(target) * w_norm / safe_tau) * tau) * cos
            turned = torch.ldexp(turned, torch.tensor(w_exp, dtype=torch.float64))
            out.append(torch.where(moving, turned.to(w.dtype), w))
            # the factor applied to the tangential part of the proposed update lr * u
            scale = (float(target) * cos * math.ldexp(1.0, w_exp - u_exp)) * w_norm / (
                max(factor, np.finfo(np.float64).tiny) * safe_tau)
            scales.append(torch.where(moving, scale, 0.0))
        return out, scales

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """``closure()`` if given, the inner ``optimizer.step()``, then turn every tracked
        weight by its target angle; returns the closure's loss (or ``None``)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        grads = require_grads(self._tracked, _OWNER)
        self._check_finite_grads()
        targets = self.layer_targets()
        params = [p.detach() for p in self._tracked.params]
        if type(self.optimizer) in SUPPORTED:
            # direction from the step rule, turned before the inner step writes anything
            proposals, factors = self._proposals(grads)
            out, scales = self._rotate(params, proposals, factors, targets)
            del proposals
            self.optimizer.step()
        else:
            before = [p.clone() for p in params]
            self.optimizer.step()
            proposals = [a.to(torch.float64) - b.to(torch.float64)
                         for a, b in zip(params, before, strict=True)]
            try:
                out, scales = self._rotate(before, proposals, [1.0] * len(params), targets)
            except NonFiniteStep:
                torch._foreach_copy_(params, before)  # the tracked weights as they were
                raise
        torch._foreach_copy_(params, out)
        self.last_scales = scales
        self.step_count += 1
        return loss

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """The inner optimizer's state dict plus this wrapper's own fields."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "target_elr": self.target_elr,
            "tracked": list(self._tracked.names),
            "step_count": self.step_count,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if list(state["tracked"]) != list(self._tracked.names):
            theirs, ours = list(state["tracked"]), list(self._tracked.names)
            raise ValueError(one_line(
                f"state_dict tracks different parameters: {len(theirs)} saved "
                f"({name_list(theirs)}), {len(ours)} here ({name_list(ours)})"))
        self.optimizer.load_state_dict(state["optimizer"])
        self.target_elr = state["target_elr"]
        self.step_count = int(state["step_count"])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({type(self.optimizer).__name__}, "
            f"tracked={len(self._tracked)} tensors, target_elr={self.target_elr})"
        )
