r"""Constrained-ELR training: every scale-invariant layer moves by a fixed relative step.

:meth:`ConstrainedELR.step` replaces ``optimizer.step()``.  For each tracked
(scale-invariant) weight :math:`w_\ell` it lets the inner optimizer propose its update
:math:`\Delta w_\ell = w_\ell^{\mathrm{inner}} - w_\ell` and rescales it:

.. math::

    w_\ell \leftarrow w_\ell + \Delta w_\ell\,
        \frac{E_\ell\,\lVert w_\ell\rVert}{\lVert\Delta w_\ell\rVert}
    \qquad\Longrightarrow\qquad
    \frac{\lVert w_\ell^{+} - w_\ell\rVert}{\lVert w_\ell\rVert} = E_\ell,

so the update ELR of every tracked layer equals the target :math:`E_\ell` exactly and
the ELR spread is 1 from the first step.  Untracked parameters (biases, norm affines,
the classifier) take the inner optimizer's update unchanged; the inner optimizer's
state (momentum buffers, Adam moments) is never touched.  An update with
:math:`\lVert\Delta w_\ell\rVert = 0` is left at zero.

**Precision.**  The inner update is recovered as :math:`w^{\mathrm{inner}} - w`, so in
float32 its direction is resolved only to about
:math:`\varepsilon\lVert w\rVert/\lVert\Delta w\rVert` per step; the rescale then
amplifies that rounding by :math:`E\lVert w\rVert/\lVert\Delta w\rVert`.  Keep the inner
update's own ELR well above :math:`10^{-5}` (do not pair a tiny inner lr with the
constraint).  Trajectories are chaotic in float32 anyway: two runs that differ only by
rounding drift apart within tens of steps.

**Target.**  ``target_elr`` is a positive float.  With ``target_elr=None`` it is derived
per group from the group's *current* lr :math:`\eta`, weight decay :math:`\lambda` and
momentum :math:`\beta` (plain :class:`torch.optim.SGD` only) as the update ELR at the
rotational equilibrium of the momentum + weight-decay model (THEORY.md §5,
:func:`normdyn.theory.numeric.momentum_equilibrium_update_elr`):

.. math::

    E_{tan}^2 = \frac{\eta\lambda\,(2 - 2\beta - \eta\lambda)}{1 - \beta^2},\qquad
    E = \sqrt{2 - 2\sqrt{1 - E_{tan}^2}} \approx \sqrt{\frac{2\eta\lambda}{1+\beta}},

(the tangential part of the step plus the radial part that keeps :math:`\lVert w\rVert`
fixed at equilibrium; exactly :math:`\sqrt{2\eta\lambda}` at :math:`\beta = 0`).

That is the ELR towards which plain SGD with the same hyper-parameters drives every
layer anyway; the constraint imposes it from step 0 instead of after the transient
(this is the choice of Kosson et al.'s rotational optimizers).  It needs
:math:`\lambda > 0` (without weight decay there is no equilibrium and the ELR decays
like :math:`t^{-1/2}`); otherwise pass ``target_elr``.  Because it is re-evaluated
each step, a torch scheduler attached to the *inner* optimizer keeps working
(:math:`E \propto \sqrt{\eta}`).

**Relation to LARS/LAMB.**  LARS (You et al., 2017) takes per layer
:math:`\Delta w = -\eta\,\tau\,\frac{\lVert w\rVert}{\lVert u\rVert}\,u` with
:math:`u = g + \lambda w`, so its update ELR is :math:`\eta\tau` -- the trust ratio
:math:`\tau\lVert w\rVert/\lVert u\rVert` fixes the relative step.  Over
``SGD(momentum=0)`` the inner update is :math:`-\eta' u`, and the rescale gives exactly
the LARS step with :math:`\eta\tau = E` (any :math:`\eta'`).  Over
``AdamW(lr, weight_decay=λ)`` the inner update is :math:`-\eta'(r + \lambda w)` with
:math:`r` Adam's step, and the rescale is exactly LAMB (You et al., 2020, identity
:math:`\phi`) with learning rate :math:`E`.  With momentum the two differ: LARS applies
the trust ratio to the gradient *before* the momentum buffer, ConstrainedELR to the
final update.

**Relation to rotational optimizers.**  Kosson et al. (2024, "Rotational equilibrium")
fix the *angle* :math:`\theta` by which each weight vector turns per step, at the
equilibrium value above, and keep :math:`\lVert w\rVert` fixed.  ConstrainedELR fixes
:math:`\lVert\Delta w\rVert/\lVert w\rVert` instead.  The two coincide exactly when
:math:`\Delta w \perp w` (SGD without momentum or weight decay on a scale-invariant
layer, where :math:`\langle\nabla L, w\rangle = 0`): then :math:`\tan\theta = E` and
:math:`\lVert w^+\rVert = \lVert w\rVert\sqrt{1+E^2}`.  In general
:math:`\tan\theta = \lVert\Delta w_\perp\rVert/(\lVert w\rVert + \Delta w_\parallel)`
depends on the radial part :math:`\Delta w_\parallel` (weight decay, stale momentum).

**Usage**::

    inner = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    optimizer = ConstrainedELR(inner, model)            # E from (lr, wd, momentum)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(inner, T_max=steps)
    for x, y in batches:
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()                                # inner step + rescale
        scheduler.step()
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from normdyn._checks import check_positive
from normdyn.optim._params import require_grads, resolve_tracked
from normdyn.theory.numeric import momentum_equilibrium_update_elr

__all__ = ["ConstrainedELR"]

_OWNER = "ConstrainedELR"


def _lr(group: dict) -> float:
    lr = group["lr"]
    return float(lr.item()) if isinstance(lr, Tensor) else float(lr)


class ConstrainedELR:
    """Wrap ``optimizer`` so that each tracked layer's update ELR equals the target.

    Parameters
    ----------
    optimizer:
        The inner torch optimizer (SGD, Adam, ...); it computes the update direction.
    model:
        Module whose scale-invariant layers are tracked (found by
        :func:`normdyn.validate.detection.find_scale_invariant`).
    target_elr:
        Positive float :math:`E`, or ``None`` for the rotational-equilibrium value of
        each SGD param group (see the module docstring).
    params:
        Explicit tensors to track instead of detection.
    example_input:
        Passed to the detection when ``model`` needs a forward pass to be analysed.

    Attach lr schedulers to the inner optimizer (:attr:`param_groups` is the same list).
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
        self.optimizer = optimizer
        self.target_elr = target_elr
        self._tracked = resolve_tracked(
            optimizer, model, params, owner=_OWNER, example_input=example_input
        )
        if target_elr is None:
            self.layer_targets()  # validate the derivation's preconditions now
        self.step_count = 0
        self.last_scales: list[Tensor] | None = None

    # ------------------------------------------------------------------ passthrough

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.optimizer.param_groups

    @property
    def state(self) -> Any:
        return self.optimizer.state

    @property
    def defaults(self) -> dict[str, Any]:
        return self.optimizer.defaults

    @property
    def tracked_names(self) -> tuple[str, ...]:
        """Names of the tracked weight tensors."""
        return self._tracked.names

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    # ------------------------------------------------------------------ target

    def group_target(self, g: int) -> float:
        """The target ELR of param group ``g`` at its current hyper-parameters."""
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
        return float(momentum_equilibrium_update_elr(_lr(group), weight_decay, momentum))

    def layer_targets(self) -> np.ndarray:
        """Target ELR of each tracked tensor, in :attr:`tracked_names` order."""
        per_group = {g: self.group_target(g) for g in set(self._tracked.groups)}
        return np.array([per_group[g] for g in self._tracked.groups])

    # ------------------------------------------------------------------ step

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Inner ``optimizer.step(closure)``, then rescale every tracked update to the target."""
        if closure is None:
            require_grads(self._tracked, _OWNER)
        targets = self.layer_targets()
        params = list(self._tracked.params)
        before = [p.detach().clone() for p in params]
        if closure is None:
            loss = self.optimizer.step()
        else:
            with torch.enable_grad():
                loss = self.optimizer.step(closure)
        delta = torch._foreach_sub([p.detach() for p in params], before)
        delta_norms = torch._foreach_norm(delta)
        weight_norms = torch._foreach_norm(before)
        scales = [
            torch.where(dn > 0, float(t) * wn / torch.where(dn > 0, dn, 1), 0)
            for t, dn, wn in zip(targets, delta_norms, weight_norms, strict=True)
        ]
        torch._foreach_mul_(delta, scales)
        torch._foreach_add_(before, delta)
        torch._foreach_copy_([p.detach() for p in params], before)
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
            raise ValueError(
                "state_dict tracks different parameters: "
                f"{list(state['tracked'])} != {list(self._tracked.names)}"
            )
        self.optimizer.load_state_dict(state["optimizer"])
        self.target_elr = state["target_elr"]
        self.step_count = int(state["step_count"])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({type(self.optimizer).__name__}, "
            f"tracked={len(self._tracked)} tensors, target_elr={self.target_elr})"
        )
