r"""Critical-learning-rate warm-up: a warm-up without hyper-parameters (THEORY.md §4-5).

At every step, from the step the optimizer is about to take and the weight norms of
the scale-invariant layers,

.. math::

    a_\ell = \frac{\lVert d_\ell\rVert}{\lVert w_\ell\rVert}, \qquad
    \eta^*_t = \frac{1}{\sqrt{a_{\max}\, a_{\min}}}, \qquad
    \eta_t = \min(\eta_{\mathrm{target},t},\ \eta^*_t),

where :math:`\Delta w_\ell = -\eta\, d_\ell` is the coming update per unit lr, computed
from the optimizer's state as torch will compute it (:mod:`normdyn.optim._steps`): for
SGD :math:`d = \beta b + (1-\tau)(g + \lambda w)` with momentum (the buffer starts at
:math:`g + \lambda w`), :math:`d = (g+\lambda w) + \beta b^+` with Nesterov; for Adam and
AdamW the bias-corrected :math:`\hat m/(\sqrt{\hat v}+\epsilon)` plus AdamW's decoupled
:math:`\lambda w`.  Other optimizer classes are refused (a wrong :math:`\eta^*` is worse
than none).  Without momentum or weight decay under SGD, :math:`d = g` and this is
:math:`a = \lVert g\rVert/\lVert w\rVert`.

:math:`\eta^*` is the lr at which the one-step ELR spread
:math:`S(\eta) = \max_\ell F(\eta a_\ell)/\min_\ell F(\eta a_\ell)`, :math:`F(E) = E/(1+E^2)`,
stops decreasing; both come from :mod:`normdyn.theory.numeric`
(:func:`~normdyn.theory.numeric.critical_lr_of`, the function the simulator's critical
schedule calls as well, and :func:`~normdyn.theory.numeric.one_step_spread`).

**guard** (default ``True``).  THEORY.md's rule is :math:`\eta_t = \min(T_t, \eta^*_t)` at
*every* step, which is ``guard=True``.  ``guard=False`` ends the warm-up for good at the
first step with :math:`\eta^*_t \ge T_t` (:attr:`CriticalLRWarmup.finished`) and then
costs nothing.  Measured on a 16-layer BN MLP (width 16, SGD momentum 0.9, wd 5e-4,
fresh teacher-labelled batches of 64, 300 steps, lrs 0.3, 1 and 3, two seeds each): the
cap never bound again after the first step with :math:`\eta^* \ge T`, so both settings
gave identical losses.  The default therefore follows the rule: it changes nothing where
the cap is idle, and still caps when :math:`\eta^*` later falls below the target (an lr
raised by a scheduler's restart or a ramp, or a growing momentum step), at the price of
one step-direction computation per step; ``guard=False`` is the cheaper opt-out.

**GradScaler.**  Pass ``scaler=`` when the gradients are scaled.  Call
``scaler.unscale_(optimizer)`` (and any gradient clipping) *before* ``warmup.step()``;
if you have not, ``warmup.step()`` calls ``scaler.unscale_(optimizer)`` itself, so the
gradients it reads, and that ``scaler.step(optimizer)`` then uses, are unscaled.  A step
whose gradients are not finite is one the scaler skips: the warm-up leaves the lrs alone
and records it (:attr:`CriticalLRWarmup.last_skipped`, :attr:`skipped_steps`).

Without ``scaler=`` a step with non-finite gradients is handled the same way, as
:class:`~normdyn.validate.monitor.ELRMonitor` does for a skipped step (its non-finite
gradients do not raise): the lrs are left alone and the step is counted in
:attr:`skipped_steps`, and the first such step of the warm-up warns, in one
:class:`UserWarning` line that names ``scaler=``::

    CriticalLRWarmup.step() at step 0: parameter 'conv1.weight' has a non-finite gradient
    norm; taken for a step a GradScaler skips (lrs left alone, counted in skipped_steps);
    in an AMP loop pass scaler= so that the gradients are read unscaled

(on one line).  An AMP user needs ``scaler=`` anyway: without it the warm-up reads the
*scaled* gradients of the finite steps, and :math:`\eta^*` is too small by the loss
scale.  Where no scaler skips the step, the optimizer writes the non-finite values into
the weights, and the next :meth:`~CriticalLRWarmup.step` raises a one-line
:class:`FloatingPointError` naming the step and the layers (non-finite weight norm);
non-finite weights always raise.

**Not with ConstrainedELR.**  A :class:`~normdyn.optim.ConstrainedELR`, or the
optimizer it wraps, raises a one-line :class:`TypeError` (at construction, or at the
first :meth:`~CriticalLRWarmup.step` if the optimizer is wrapped later): the wrapper
turns each tracked layer by :math:`\arctan E` whatever the lr, so the ELRs are not
:math:`\eta a_\ell` and :math:`\eta^*` would be meaningless.

**Several param groups.**  Group :math:`g` has target :math:`T_g`.  The warm-up keeps the
groups' lr *ratios*: all lrs are multiplied by one common factor,

.. math::

    \eta_{g,t} = T_g \min\Bigl(1, \frac{\eta^*_{\mathrm{ref},t}}{T_{\mathrm{ref}}}\Bigr),
    \qquad \eta^*_{\mathrm{ref},t} = \frac{1}{\sqrt{b_{\max} b_{\min}}},
    \qquad b_\ell = \frac{T_{g(\ell)}}{T_{\mathrm{ref}}}\, a_\ell,

where :math:`T_{\mathrm{ref}}` is the largest target among the groups holding tracked
layers.  The ELR of layer :math:`\ell` is then :math:`\eta_{\mathrm{ref}} b_\ell`, so
:math:`\eta^*_{\mathrm{ref}}` is exactly the critical lr of the reference group when the
others follow in proportion.  With one group, or equal targets, :math:`b = a` and the rule
is :math:`\eta_t = \min(T, \eta^*_t)`.  Groups without tracked layers (biases, a
classifier head) are scaled by the same factor.

**Call order.**  The warm-up never owns the target lr: it reads each group's current lr as
the target at every step, lowers it for one ``optimizer.step()`` and puts it back.
With a torch scheduler (which owns the target schedule) use::

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    warmup = CriticalLRWarmup(optimizer, model)          # before the scheduler
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    for x, y in batches:
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        with warmup.dampening():      # warmup.step(): lr_g <- min-rule above
            optimizer.step()          # uses the dampened lr
        # on exit, warmup.restore(): lr_g is the scheduler's value again
        scheduler.step()              # sees and updates only its own lrs

so the lr of iteration ``t`` is ``min(cosine_t, eta*_t)`` (per the rule above) and the
scheduler's chain of lrs is never altered.  ``with warmup.dampening():`` is exactly
``warmup.step(); optimizer.step(); warmup.restore()``.  Without a scheduler, a bare
``warmup.step(); optimizer.step()`` loop also works: the warm-up recognizes its own
lowered lr in the group and keeps the remembered target (and writes the target back
at the step it finishes).  Never call ``scheduler.step()`` between ``warmup.step()``
and ``warmup.restore()``: chainable schedulers (CosineAnnealingLR, StepLR) would build
on the lowered lr.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from normdyn._checks import check_positive
from normdyn.optim._params import (
    NonFiniteStep,
    name_list,
    norms,
    one_line,
    require_grads,
    resolve_tracked,
)
from normdyn.optim._steps import check_supported, unit_steps
from normdyn.optim.constrained_elr import WRAPPED, ConstrainedELR
from normdyn.theory.numeric import critical_lr_of, gradient_elr, one_step_spread

__all__ = ["CriticalLRWarmup"]

_OWNER = "CriticalLRWarmup"


_NOT_CONSTRAINED = (
    "turns each tracked layer by arctan(target_elr) per step, so the ELRs are equal by "
    "construction and eta* (from lr*|d|/|w|) does not describe the steps; use one of the two")


def refuse_constrained(optimizer: object) -> None:
    r"""One-line :class:`TypeError` for a :class:`ConstrainedELR` or the optimizer it wraps.

    Under ConstrainedELR a tracked layer's step is a rotation by ``arctan(E)``, whatever
    the lr: its ELR is not ``lr * a``, so there is no ELR spread for the warm-up to cap
    (with a fixed target its lr reaches only the untracked parameters).  A wrong
    :math:`\eta^*` is worse than none, so the combination is refused; it also closes the
    GradScaler mismatch of a warm-up keyed on the inner optimizer while
    ``scaler.step(wrapper)`` unscales the wrapper a second time.
    """
    if isinstance(optimizer, ConstrainedELR):
        raise TypeError(f"{_OWNER}: cannot warm up a ConstrainedELR: it {_NOT_CONSTRAINED}")
    if optimizer in WRAPPED:
        raise TypeError(f"{_OWNER}: this {type(optimizer).__name__} is the inner optimizer of "
                        f"a ConstrainedELR, which {_NOT_CONSTRAINED}")


def _get_lr(group: dict) -> float:
    lr = group["lr"]
    return float(lr.item()) if isinstance(lr, Tensor) else float(lr)


def _set_lr(group: dict, value: float) -> None:
    if isinstance(group["lr"], Tensor):
        group["lr"].fill_(value)
    else:
        group["lr"] = value


class CriticalLRWarmup:
    """Cap each step's lr at the critical lr :math:`\\eta^*_t` of the current ELRs.

    Parameters
    ----------
    optimizer:
        A ``torch.optim.SGD``, ``Adam`` or ``AdamW`` (its ``param_groups[g]["lr"]`` are
        read and written); other classes raise :class:`TypeError`.
    model:
        Module whose scale-invariant layers are tracked (found by
        :func:`normdyn.layers.detection.find_scale_invariant`; a ``torch.compile``
        wrapper is unwrapped).  Frozen layers are skipped, see :attr:`skipped`.
    target_lr:
        ``None`` (default): each group's lr is its target, read again at every step, so
        a torch scheduler can own it.  A positive float, or one per group: written into
        the groups' lrs now (construct schedulers afterwards).
    params:
        Explicit tensors to track instead of detection (tensors, ``(name, tensor)``
        pairs or a ``name -> tensor`` mapping).
    guard:
        ``True`` (default, THEORY.md's rule): cap at :math:`\\eta^*_t` at every step.
        ``False``: stop measuring for good once :math:`\\eta^*_t \\ge` target.
    scaler:
        The ``torch.amp.GradScaler`` that scales the gradients, if any (see the module
        docstring).
    example_input:
        Passed to the detection when ``model`` needs a forward pass to be analysed.

    Attributes
    ----------
    finished:
        ``True`` from the first step with :math:`\\eta^*_t \\ge` target.
    last_critical_lr:
        :math:`\\eta^*` of the last measured step (of the reference group, see the
        module docstring); ``inf`` when every tracked step was zero.
    last_critical_lrs:
        Per group, :math:`\\eta^*_{\\mathrm{ref}} T_g/T_{\\mathrm{ref}}`.
    last_spread:
        Current ELR spread :math:`\\max_\\ell E_\\ell/\\min_\\ell E_\\ell` with
        :math:`E_\\ell = \\eta_{g(\\ell)} a_\\ell` at the lrs just set.
    last_predicted_spread:
        Spread after the step in the norm model, :math:`\\max F(E)/\\min F(E)`.
    last_lrs:
        The lrs set for the coming ``optimizer.step()``, one per group.
    last_skipped:
        Whether the last :meth:`step` saw non-finite (scaler-skipped) gradients; it left
        the lrs alone (with or without ``scaler=``, see the module docstring).
    skipped_steps:
        How many steps were skipped that way.
    skipped:
        Names of candidate layers left untracked: frozen or not in the optimizer.

    Diagnostics are those of the last step that measured the norms: after the warm-up
    has finished (and ``guard=False``) :meth:`step` does no work.  Layers whose coming step
    is exactly zero carry no ELR and are left out of :math:`\\eta^*` and the spreads.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        model: nn.Module | None = None,
        target_lr: float | Sequence[float] | None = None,
        *,
        params: Iterable[Tensor] | Mapping[str, Tensor] | None = None,
        guard: bool = True,
        scaler: Any = None,
        example_input: Any = None,
    ) -> None:
        refuse_constrained(optimizer)
        check_supported(optimizer, _OWNER)
        groups = getattr(optimizer, "param_groups", None)
        if target_lr is not None:
            targets = check_positive("target_lr", target_lr).reshape(-1)
            if targets.size == 1:
                targets = np.repeat(targets, len(groups or ()))
            if groups is not None and targets.size != len(groups):
                raise ValueError(
                    f"target_lr must be one float or one per param group "
                    f"({len(groups)}), got {targets.size} values"
                )
        self.optimizer = optimizer
        self._tracked = resolve_tracked(
            optimizer, model, params, owner=_OWNER, example_input=example_input
        )
        if target_lr is not None:
            for group, value in zip(optimizer.param_groups, targets, strict=True):
                _set_lr(group, float(value))
        self.guard = bool(guard)
        self.scaler = scaler
        self.last_skipped = False
        self.skipped_steps = 0
        self._warned_unscaled = False
        n = len(optimizer.param_groups)
        self._targets = [self._check_target(g, _get_lr(group))
                         for g, group in enumerate(optimizer.param_groups)]
        self._written: list[float | None] = [None] * n
        self.finished = False
        self.step_count = 0
        self.last_critical_lr: float | None = None
        self.last_critical_lrs: list[float] | None = None
        self.last_spread: float | None = None
        self.last_predicted_spread: float | None = None
        self.last_lrs: list[float] = list(self._targets)

    # ------------------------------------------------------------------ public

    @property
    def tracked_names(self) -> tuple[str, ...]:
        """Names of the tracked weight tensors."""
        return self._tracked.names

    @property
    def skipped(self) -> tuple[str, ...]:
        """Names of the candidate layers not tracked (frozen or not in the optimizer)."""
        return self._tracked.skipped

    @property
    def targets(self) -> list[float]:
        """The target lr of each group used by the last :meth:`step`."""
        return list(self._targets)

    def step(self) -> list[float]:
        """Set each group's lr for the coming ``optimizer.step()``; returns :attr:`last_lrs`.

        Call after ``loss.backward()`` and before ``optimizer.step()``.
        """
        refuse_constrained(self.optimizer)   # wrapped after this warm-up was built
        targets = self._read_targets()
        self.step_count += 1
        if self.finished and not self.guard:
            self._written = [None] * len(targets)
            self.last_lrs = list(targets)
            return list(self.last_lrs)
        grads = self._unscaled_grads()
        steps = unit_steps(self.optimizer, self._tracked.params, self._tracked.groups, grads)
        try:
            step_norms, weight_norms = norms(self._tracked, steps, _OWNER, "gradient",
                                             f" at step {self.step_count - 1}")
        except NonFiniteStep:
            if not self._scaling():
                self._warn_unscaled()
            # the scaler skips this step (inf/nan gradients): leave every lr alone
            self.last_skipped = True
            self.skipped_steps += 1
            self._written = [None] * len(targets)
            self.last_lrs = list(targets)
            return list(targets)
        self.last_skipped = False
        a = gradient_elr.raw(1.0, step_norms, weight_norms)  # per-unit-lr ELR
        layer_targets = np.array([targets[g] for g in self._tracked.groups])
        moving = a > 0
        if not moving.any():
            lrs, critical = list(targets), float("inf")
            self.last_critical_lrs = [float("inf")] * len(targets)
            self.last_spread = self.last_predicted_spread = float("nan")
        else:
            t_ref = float(layer_targets.max())
            critical = critical_lr_of((layer_targets / t_ref)[moving] * a[moving])
            if critical >= t_ref:
                self.finished = True
            critical_lrs = [critical * (t / t_ref) for t in targets]
            lrs = [min(t, c) for t, c in zip(targets, critical_lrs, strict=True)]
            elr = np.array([lrs[g] for g in self._tracked.groups])[moving] * a[moving]
            self.last_critical_lrs = critical_lrs
            self.last_spread = float(elr.max() / elr.min())
            self.last_predicted_spread = float(one_step_spread(1.0, elr))
        for group, lr in zip(self.optimizer.param_groups, lrs, strict=True):
            _set_lr(group, lr)
        # read back: a tensor lr stores the value rounded to its dtype
        self._written = [_get_lr(group) for group in self.optimizer.param_groups]
        self.last_critical_lr = critical
        self.last_lrs = list(lrs)
        return list(lrs)

    def restore(self) -> None:
        """Put back each group's target lr where the last :meth:`step` lowered it."""
        for g, group in enumerate(self.optimizer.param_groups):
            if self._written[g] is not None and _get_lr(group) == self._written[g]:
                _set_lr(group, self._targets[g])
        self._written = [None] * len(self.optimizer.param_groups)

    @contextmanager
    def dampening(self) -> Iterator[CriticalLRWarmup]:
        """``with warmup.dampening(): optimizer.step()`` = :meth:`step`, body, :meth:`restore`."""
        self.step()
        try:
            yield self
        finally:
            self.restore()

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the warm-up (not the optimizer or the model)."""
        return {
            "tracked": list(self._tracked.names),
            "targets": list(self._targets),
            "written": list(self._written),
            "finished": self.finished,
            "guard": self.guard,
            "step_count": self.step_count,
            "skipped_steps": self.skipped_steps,
            "last_critical_lr": self.last_critical_lr,
            "last_critical_lrs": self.last_critical_lrs,
            "last_spread": self.last_spread,
            "last_predicted_spread": self.last_predicted_spread,
            "last_lrs": list(self.last_lrs),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Load :meth:`state_dict` output; the tracked names and group count must match."""
        if list(state["tracked"]) != list(self._tracked.names):
            theirs, ours = list(state["tracked"]), list(self._tracked.names)
            raise ValueError(one_line(
                f"state_dict tracks different parameters: {len(theirs)} saved "
                f"({name_list(theirs)}), {len(ours)} here ({name_list(ours)})"))
        if len(state["targets"]) != len(self.optimizer.param_groups):
            raise ValueError(
                f"state_dict has {len(state['targets'])} param groups, the optimizer has "
                f"{len(self.optimizer.param_groups)}"
            )
        self._targets = [float(t) for t in state["targets"]]
        self._written = [None if w is None else float(w) for w in state["written"]]
        self.finished = bool(state["finished"])
        self.guard = bool(state["guard"])
        self.step_count = int(state["step_count"])
        self.skipped_steps = int(state.get("skipped_steps", 0))
        self.last_critical_lr = state["last_critical_lr"]
        self.last_critical_lrs = state["last_critical_lrs"]
        self.last_spread = state["last_spread"]
        self.last_predicted_spread = state["last_predicted_spread"]
        self.last_lrs = list(state["last_lrs"])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(tracked={len(self._tracked)} tensors, "
            f"step_count={self.step_count}, finished={self.finished}, guard={self.guard})"
        )

    # ------------------------------------------------------------------ internals

    def _warn_unscaled(self) -> None:
        """One warning line, at the first non-finite step without ``scaler=``."""
        if self._warned_unscaled:
            return
        self._warned_unscaled = True
        steps = unit_steps(self.optimizer, self._tracked.params, self._tracked.groups,
                           [p.grad for p in self._tracked.params])
        bad = [n for n, d in zip(self._tracked.names, steps, strict=True)
               if not bool(torch.isfinite(torch.linalg.vector_norm(d, dtype=torch.float64)))]
        what = (f"parameter {name_list(bad, 1)} has" if len(bad) == 1 else
                f"{len(bad)} of {len(self._tracked)} parameters have")
        tail = "" if len(bad) == 1 else f" ({name_list(bad, 1)})"
        warnings.warn(one_line(
            f"{_OWNER}.step() at step {self.step_count - 1}: {what} a non-finite gradient "
            f"norm{tail}; taken for a step a GradScaler skips (lrs left alone, counted in "
            "skipped_steps); in an AMP loop pass scaler= so that the gradients are read "
            "unscaled"), UserWarning, stacklevel=3)

    def _scaling(self) -> bool:
        return self.scaler is not None and bool(self.scaler.is_enabled())

    def _unscaled_grads(self) -> list[Tensor]:
        """The tracked gradients, after ``scaler.unscale_(optimizer)`` if it is still due."""
        if self._scaling():
            from torch.amp.grad_scaler import OptState  # lazy: only with a scaler

            state = self.scaler._per_optimizer_states[id(self.optimizer)]
            if state["stage"] is OptState.STEPPED:
                raise RuntimeError(one_line(
                    f"{_OWNER}.step(): scaler.step(optimizer) already ran since the last "
                    "scaler.update(); call warmup.step() before scaler.step()"))
            if state["stage"] is OptState.READY:
                self.scaler.unscale_(self.optimizer)
        return require_grads(self._tracked, _OWNER)

    @staticmethod
    def _check_target(g: int, lr: float) -> float:
        if not np.isfinite(lr) or lr <= 0:
            raise ValueError(
                f"target_lr must be positive: param group {g} has lr {lr!r} and no "
                "positive target_lr was given"
            )
        return lr

    def _read_targets(self) -> list[float]:
        if len(self.optimizer.param_groups) != len(self._targets):
            raise RuntimeError(
                f"{_OWNER}: the optimizer now has {len(self.optimizer.param_groups)} param "
                f"groups, it had {len(self._targets)}; build a new warm-up after "
                "add_param_group()"
            )
        targets = []
        for g, group in enumerate(self.optimizer.param_groups):
            lr = _get_lr(group)
            # Our own lowered lr still in place (bare step() loop): keep the target.
            own = self._written[g] is not None and lr == self._written[g]
            targets.append(self._targets[g] if own else self._check_target(g, lr))
        self._targets = targets
        return targets
