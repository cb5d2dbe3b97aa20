r"""Learning-rate schedules for the norm-level simulators, broadcast over an lr sweep.

A schedule maps a step :math:`t` (and, for adaptive schedules, the current state of the
network) to the learning rate :math:`\eta_t` used *at* that step.  Every schedule is built
from a base learning rate that may be a scalar or a vector (the lr-sweep axis); ``lr``
returns an array of the broadcast shape of the base lrs and the state's batch shape, so
one schedule object drives ``10^4`` runs at once.

Schedules (``target`` or ``lr`` is the base lr :math:`\eta`):

* :func:`constant`: :math:`\eta_t = \eta`.
* :func:`linear_warmup`: :math:`\eta_t = \eta\,\min\bigl(1, (t+1)/n\bigr)`, so the first
  step already has a positive lr and the target is reached at :math:`t = n-1`.
* :func:`exponential_warmup`, the "untuned" exponential warm-up of Ma & Yarats (2021):

  .. math::

      \eta_t = \eta\,\bigl(1 - e^{-(t+1)/\tau}\bigr),

  with the single parameter :math:`\tau`, the warm-up time constant.  Its "untuned" value
  is :math:`\tau = 1/(1-\beta_2)`; the default ``tau=1000`` is Adam's
  :math:`\beta_2 = 0.999`.
* :func:`critical_warmup`, the hyper-parameter-free warm-up of THEORY §4:

  .. math::

      \eta_t = \min\bigl(\eta,\ \eta^*_t\bigr),\qquad
      \eta^*_t = \frac{1}{\sqrt{a_{\max,t}\,a_{\min,t}}},

  where :math:`a_\ell = \lVert\nabla w_\ell\rVert/\lVert w_\ell\rVert` are the current
  per-unit-lr ELRs.  :math:`\eta^*` is never typed here: a single network calls
  :func:`normdyn.theory.numeric.critical_lr_of` (the function the torch
  ``CriticalLRWarmup`` calls), and a batch of networks calls the same generated
  ``critical_lr.raw(a_max, a_min)``.
* :func:`step_decay`: :math:`\eta_t = \eta\,\gamma^{\#\{m \in M:\ m \le t\}}` for milestones
  :math:`M`.

:func:`make_schedule` builds any of them by name (the CLI's ``--schedule``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from normdyn._checks import check_finite, check_int, check_positive
from normdyn.theory.numeric import critical_lr, critical_lr_of

__all__ = [
    "Schedule",
    "ScheduleLike",
    "ScheduleState",
    "Constant",
    "LinearWarmup",
    "ExponentialWarmup",
    "CriticalWarmup",
    "StepDecay",
    "constant",
    "linear_warmup",
    "exponential_warmup",
    "critical_warmup",
    "step_decay",
    "make_schedule",
    "SCHEDULES",
]


@dataclass(frozen=True)
class ScheduleState:
    r"""What an adaptive schedule sees before a step: the per-unit-lr ELRs of every layer.

    ``per_unit_elr`` has shape ``(..., L)`` (layers last, any batch shape in front), with
    :math:`a_\ell = c_\ell/\sigma^2_\ell = \lVert\nabla w_\ell\rVert/\lVert w_\ell\rVert`.
    Simulators that already know the extremes (the fused kernel does) pass ``a_max`` and
    ``a_min`` (shape ``(...)``) and may leave ``per_unit_elr`` as ``None``.  The drift
    simulator's ``DriftState`` (attribute ``per_unit_elr``) is accepted as well.
    """

    per_unit_elr: np.ndarray | None = None
    a_max: np.ndarray | None = None
    a_min: np.ndarray | None = None

    def extremes(self) -> tuple[np.ndarray, np.ndarray]:
        """``(a_max, a_min)`` over the layer axis."""
        return _extremes(self)


def _extremes(state: Any) -> tuple[np.ndarray, np.ndarray]:
    a_max = getattr(state, "a_max", None)
    a_min = getattr(state, "a_min", None)
    if a_max is not None and a_min is not None:
        return np.asarray(a_max, dtype=np.float64), np.asarray(a_min, dtype=np.float64)
    a = getattr(state, "per_unit_elr", None)
    if a is None:
        raise ValueError("state: an adaptive schedule needs per_unit_elr (or a_max and a_min)")
    a = check_positive("per_unit_elr", a)
    if a.ndim == 0 or a.shape[-1] == 0:
        raise ValueError("per_unit_elr must contain at least one layer, got an empty array")
    return a.max(axis=-1), a.min(axis=-1)


@runtime_checkable
class ScheduleLike(Protocol):
    """Anything with ``lr(step, state) -> array`` (what the simulators accept)."""

    def lr(self, step: int | np.ndarray, state: Any = None) -> np.ndarray: ...


class Schedule(ABC):
    """Base class: ``lr(step, state)`` broadcast over the base lrs ``self.base``.

    ``state_dependent`` is ``True`` for schedules that read the network state (they
    need a :class:`ScheduleState`); the others ignore ``state`` and also accept an array
    of steps (:meth:`lrs`).
    """

    name: str = "schedule"
    state_dependent: bool = False

    def __init__(self, lr: Any) -> None:
        self.base = check_positive("lr", lr)

    def lr(self, step: int | np.ndarray, state: Any = None) -> np.ndarray:
        """The lr used at ``step`` (shape: ``base`` broadcast with the state's batch)."""
        steps = _steps(step)
        if self.state_dependent:
            if state is None:
                raise ValueError(f"state: schedule {self.name!r} needs the network state")
            return self._lr(steps, state)
        return self._lr(steps, None)

    def lrs(self, steps: int) -> np.ndarray:
        """``(steps, *base.shape)`` lrs of a state-independent schedule for ``t = 0..steps-1``."""
        if self.state_dependent:
            raise ValueError(f"schedule: {self.name!r} depends on the state; call lr(step, state)")
        n = check_int("steps", steps, minimum=0)
        t = np.arange(n, dtype=np.float64).reshape((n,) + (1,) * self.base.ndim)
        return np.broadcast_to(self._lr(t, None), (n,) + self.base.shape).copy()

    @abstractmethod
    def _lr(self, t: np.ndarray, state: Any) -> np.ndarray: ...

    def _params(self) -> dict[str, Any]:
        return {}

    def __repr__(self) -> str:
        base = float(self.base) if self.base.ndim == 0 else f"<{self.base.size} lrs>"
        params = "".join(f", {k}={v!r}" for k, v in self._params().items())
        return f"{self.name}(lr={base}{params})"


def _steps(step: Any) -> np.ndarray:
    arr = check_finite("step", step)
    if np.any(arr < 0):
        raise ValueError(f"step must be >= 0, got {step!r}")
    return arr


class Constant(Schedule):
    r""":math:`\eta_t = \eta`."""

    name = "constant"

    def _lr(self, t: np.ndarray, state: Any) -> np.ndarray:
        return np.broadcast_to(self.base, np.broadcast_shapes(t.shape, self.base.shape)).copy()


class LinearWarmup(Schedule):
    r""":math:`\eta_t = \eta\min(1, (t+1)/n)`."""

    name = "linear_warmup"

    def __init__(self, lr: Any, n_steps: int) -> None:
        super().__init__(lr)
        self.n_steps = check_int("warmup_steps", n_steps, minimum=1)

    def _lr(self, t: np.ndarray, state: Any) -> np.ndarray:
        return self.base * np.minimum(1.0, (t + 1.0) / self.n_steps)

    def _params(self) -> dict[str, Any]:
        return {"n_steps": self.n_steps}


class ExponentialWarmup(Schedule):
    r""":math:`\eta_t = \eta(1 - e^{-(t+1)/\tau})` (untuned: :math:`\tau = 1/(1-\beta_2)`)."""

    name = "exponential_warmup"

    def __init__(self, lr: Any, tau: float = 1000.0) -> None:
        super().__init__(lr)
        self.tau = float(check_positive("tau", tau))

    def _lr(self, t: np.ndarray, state: Any) -> np.ndarray:
        return self.base * -np.expm1(-(t + 1.0) / self.tau)

    def _params(self) -> dict[str, Any]:
        return {"tau": self.tau}


class CriticalWarmup(Schedule):
    r""":math:`\eta_t = \min(\eta, \eta^*_t)`, :math:`\eta^*` from the current per-unit-lr ELRs."""

    name = "critical_warmup"
    state_dependent = True

    def _lr(self, t: np.ndarray, state: Any) -> np.ndarray:
        a_max = getattr(state, "a_max", None)
        a = getattr(state, "per_unit_elr", None)
        if a_max is None and a is not None and np.ndim(a) == 1:
            # One network: exactly the call the torch CriticalLRWarmup makes.
            eta_star: np.ndarray | float = critical_lr_of(a)
        else:
            hi, lo = _extremes(state)
            if np.any(~(lo > 0)) or np.any(~np.isfinite(hi)):
                raise ValueError("per_unit_elr must be positive and finite in every layer")
            eta_star = critical_lr.raw(hi, lo)
        shape = np.broadcast_shapes(np.shape(eta_star), self.base.shape, t.shape)
        return np.broadcast_to(np.minimum(self.base, eta_star), shape).copy()


class StepDecay(Schedule):
    r""":math:`\eta_t = \eta\gamma^{k(t)}`, :math:`k(t)` = number of milestones :math:`\le t`."""

    name = "step_decay"

    def __init__(self, lr: Any, milestones: Sequence[int], gamma: float = 0.1) -> None:
        super().__init__(lr)
        if np.ndim(milestones) == 0:
            milestones = [milestones]  # type: ignore[list-item]
        ms = [check_int("milestones", int(m) if isinstance(m, np.integer) else m, minimum=0)
              for m in milestones]
        if any(b <= a for a, b in zip(ms, ms[1:], strict=False)):
            raise ValueError(f"milestones must be strictly increasing, got {ms}")
        self.milestones = tuple(ms)
        self.gamma = float(check_positive("gamma", gamma))

    def _lr(self, t: np.ndarray, state: Any) -> np.ndarray:
        k = np.searchsorted(np.asarray(self.milestones, dtype=np.float64), t, side="right")
        return self.base * self.gamma ** np.asarray(k, dtype=np.float64)

    def _params(self) -> dict[str, Any]:
        return {"milestones": list(self.milestones), "gamma": self.gamma}


def constant(lr: Any) -> Constant:
    r"""Constant lr :math:`\eta_t = \eta` (``lr`` scalar or a vector of base lrs)."""
    return Constant(lr)


def linear_warmup(target: Any, n_steps: int) -> LinearWarmup:
    r"""Linear warm-up :math:`\eta_t = \eta\min(1, (t+1)/n)` over ``n_steps >= 1`` steps."""
    return LinearWarmup(target, n_steps)


def exponential_warmup(target: Any, tau: float = 1000.0) -> ExponentialWarmup:
    r"""The untuned exponential warm-up :math:`\eta_t = \eta(1-e^{-(t+1)/\tau})`.

    ``tau`` is its one parameter, the time constant in steps; the "untuned" rule of Ma &
    Yarats (2021) sets :math:`\tau = 1/(1-\beta_2)`, i.e. 1000 for :math:`\beta_2=0.999`.
    """
    return ExponentialWarmup(target, tau)


def critical_warmup(target: Any) -> CriticalWarmup:
    r"""The hyper-parameter-free warm-up :math:`\eta_t = \min(\eta, \eta^*_t)` (THEORY §4)."""
    return CriticalWarmup(target)


def step_decay(lr: Any, milestones: Sequence[int], gamma: float = 0.1) -> StepDecay:
    r"""Step decay :math:`\eta_t = \eta\gamma^{k(t)}` at the given milestone steps."""
    return StepDecay(lr, milestones, gamma)


#: Name -> (factory, names of its keyword parameters, required ones).
SCHEDULES: dict[str, tuple[Any, tuple[str, ...], tuple[str, ...]]] = {
    "constant": (constant, (), ()),
    "critical_warmup": (critical_warmup, (), ()),
    "exponential_warmup": (exponential_warmup, ("tau",), ()),
    "linear_warmup": (linear_warmup, ("n_steps",), ("n_steps",)),
    "step_decay": (step_decay, ("milestones", "gamma"), ("milestones",)),
}


def make_schedule(name: str, lr: Any, **kw: Any) -> Schedule:
    """Build the schedule ``name`` (``-`` and ``_`` are interchangeable) at base lr ``lr``.

    Raises ``ValueError`` for an unknown name (listing the known ones), for a parameter
    the schedule does not take, and for a missing required parameter.
    """
    key = str(name).strip().lower().replace("-", "_")
    if key not in SCHEDULES:
        raise ValueError(
            f"schedule: unknown name {name!r}; choose from {', '.join(sorted(SCHEDULES))}"
        )
    factory, allowed, required = SCHEDULES[key]
    extra = sorted(set(kw) - set(allowed))
    if extra:
        takes = ", ".join(allowed) if allowed else "no parameters"
        raise ValueError(f"schedule: {key!r} takes {takes}; got unexpected {', '.join(extra)}")
    missing = [k for k in required if kw.get(k) is None]
    if missing:
        raise ValueError(f"schedule: {key!r} needs {', '.join(missing)}")
    return factory(lr, **{k: v for k, v in kw.items() if v is not None})
