r"""Vectorized simulators of the norm-level model, all built from :mod:`normdyn.theory.numeric`.

* :func:`simulate_discrete` -- the discrete map :math:`\sigma^2_{t+1} = \sigma^2_t +
  \eta_t^2c_t^2/\sigma^2_t` (and its momentum/weight-decay extension) over an lr sweep ×
  layers × seeds, as a tidy frame or a compact :class:`TrajectorySummary`
  (:mod:`~normdyn.simulate.summary`, with :func:`count_flips` and the quantile levels);
* :func:`continuous_closed_form` and :func:`continuous_ode` -- gradient flow
  :math:`d\sigma^2/dt = \eta^2c^2/\sigma^2`, closed form and ODE route;
* :mod:`~normdyn.simulate.schedules` -- lr schedules, including the critical-lr warm-up;
* :func:`initial_state` / :func:`from_elr` -- initial states;
* :func:`normdyn.simulate.drift.simulate_drift` -- weight vectors under random gradients
  (imported lazily: ``from normdyn.simulate.drift import simulate_drift``).
"""

from __future__ import annotations

from normdyn.simulate.continuous import continuous_closed_form, continuous_ode
from normdyn.simulate.discrete import (
    COLUMNS,
    numba_available,
    simulate_discrete,
    update_elr,
)
from normdyn.simulate.initial import InitialState, from_elr, initial_state
from normdyn.simulate.schedules import (
    Schedule,
    ScheduleLike,
    ScheduleState,
    constant,
    critical_warmup,
    exponential_warmup,
    linear_warmup,
    make_schedule,
    step_decay,
)
from normdyn.simulate.summary import (
    FLIP_RTOL,
    QUANTILE_NAMES,
    QUANTILES,
    TrajectorySummary,
    count_flips,
)

__all__ = [
    "COLUMNS",
    "FLIP_RTOL",
    "QUANTILES",
    "QUANTILE_NAMES",
    "TrajectorySummary",
    "simulate_discrete",
    "continuous_closed_form",
    "continuous_ode",
    "count_flips",
    "update_elr",
    "numba_available",
    "InitialState",
    "initial_state",
    "from_elr",
    "Schedule",
    "ScheduleLike",
    "ScheduleState",
    "constant",
    "linear_warmup",
    "exponential_warmup",
    "critical_warmup",
    "step_decay",
    "make_schedule",
]
