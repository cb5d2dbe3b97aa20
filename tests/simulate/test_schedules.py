"""Schedules against formulas typed in this file and a brute-force critical lr."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import moderate_elrs, sim_elr_states, sim_schedule_specs
from tolerances import rtol

from normdyn.simulate.schedules import (
    SCHEDULES,
    ScheduleState,
    constant,
    critical_warmup,
    exponential_warmup,
    linear_warmup,
    make_schedule,
    step_decay,
)
from normdyn.theory.numeric import critical_lr_of

TOL = rtol(np.float64, "single_op")


def _rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


def _oracle(name: str, kw: dict, base: float, t: int, a: list[float] | None) -> float:
    """The lr at step t, written out by hand from the module documentation."""
    if name == "constant":
        return base
    if name == "linear_warmup":
        return base * min(1.0, (t + 1) / kw["n_steps"])
    if name == "exponential_warmup":
        return base * (1.0 - math.exp(-(t + 1) / kw["tau"]))
    if name == "step_decay":
        return base * kw.get("gamma", 0.1) ** sum(m <= t for m in kw["milestones"])
    if name == "critical_warmup":
        return min(base, 1.0 / math.sqrt(max(a) * min(a)))
    raise AssertionError(name)


@pytest.mark.parametrize("t", [0, 1, 4, 9, 10, 57])
def test_each_schedule_matches_hand_formula(t: int) -> None:
    base = np.array([0.01, 0.3, 2.0])
    a = [3.0, 0.2, 40.0]
    specs = {"constant": {}, "linear_warmup": {"n_steps": 10},
             "exponential_warmup": {"tau": 7.0},
             "step_decay": {"milestones": [4, 10], "gamma": 0.5}, "critical_warmup": {}}
    for name, kw in specs.items():
        sched = make_schedule(name, base, **kw)
        got = sched.lr(t, ScheduleState(per_unit_elr=np.array(a)))
        assert got.shape == (3,)
        for i, b in enumerate(base):
            assert _rel(float(got[i]), _oracle(name, kw, float(b), t, a)) <= 4 * TOL, name


def test_factories_and_names() -> None:
    assert set(SCHEDULES) == {"constant", "critical_warmup", "exponential_warmup",
                              "linear_warmup", "step_decay"}
    assert float(constant(0.5).lr(3)) == 0.5
    assert float(linear_warmup(1.0, 4).lr(0)) == 0.25
    assert float(exponential_warmup(1.0).lr(999)) == pytest.approx(1 - math.exp(-1), rel=1e-15)
    assert float(step_decay(1.0, [2], 0.5).lr(2)) == 0.5
    assert make_schedule("linear-warmup", 1.0, n_steps=2).name == "linear_warmup"
    assert "critical_warmup(lr=0.5)" == repr(critical_warmup(0.5))


def test_critical_lr_equals_brute_force_minimizer_of_one_step_spread() -> None:
    """The schedule's lr is where the one-step spread (hand-written F) is smallest."""
    a = [0.05, 0.7, 3.0, 12.0, 250.0]

    def spread_after(eta: float) -> float:
        f = [eta * x / (1 + (eta * x) ** 2) for x in a]
        return max(f) / min(f)

    grid = np.logspace(-4, 2, 60001)
    best = min(grid, key=spread_after)
    sched_lr = float(critical_warmup(1e6).lr(0, ScheduleState(per_unit_elr=np.array(a))))
    assert abs(math.log(best / sched_lr)) <= 2 * math.log(grid[1] / grid[0])
    assert _rel(sched_lr, 1 / math.sqrt(250.0 * 0.05)) <= TOL
    assert sched_lr == critical_lr_of(a)  # the shared function for one network


def test_critical_broadcasts_over_sweep_and_batch() -> None:
    base = np.array([0.01, 0.1, 1.0, 10.0])
    a = np.array([[[1.0, 4.0, 0.25]], [[2.0, 8.0, 0.5]]])  # (seeds=2, 1, L)
    got = critical_warmup(base).lr(5, ScheduleState(per_unit_elr=a))
    assert got.shape == (2, 4)
    for s in range(2):
        eta_star = 1 / math.sqrt(a[s, 0].max() * a[s, 0].min())
        for i, b in enumerate(base):
            assert _rel(float(got[s, i]), min(b, eta_star)) <= TOL
    extremes = ScheduleState(a_max=a.max(-1), a_min=a.min(-1))
    np.testing.assert_array_equal(critical_warmup(base).lr(5, extremes), got)


def test_drift_state_like_objects_are_accepted() -> None:
    class DriftLike:
        per_unit_elr = np.array([2.0, 0.5, 8.0])

    got = critical_warmup(10.0).lr(0, DriftLike())
    assert got.shape == () and float(got) == critical_lr_of([2.0, 0.5, 8.0])


@pytest.mark.parametrize(("call", "message"), [
    (lambda: make_schedule("foo", 1.0),
     "schedule: unknown name 'foo'; choose from constant, critical_warmup, "
     "exponential_warmup, linear_warmup, step_decay"),
    (lambda: make_schedule("constant", 1.0, n_steps=3),
     "schedule: 'constant' takes no parameters; got unexpected n_steps"),
    (lambda: make_schedule("linear_warmup", 1.0), "schedule: 'linear_warmup' needs n_steps"),
    (lambda: make_schedule("constant", 0.0), "lr must be positive, got 0.0"),
    (lambda: linear_warmup(1.0, 0), "warmup_steps must be >= 1, got 0"),
    (lambda: exponential_warmup(1.0, -1.0), "tau must be positive, got -1.0"),
    (lambda: step_decay(1.0, [5, 2]), "milestones must be strictly increasing, got [5, 2]"),
    (lambda: critical_warmup(1.0).lr(0), "state: schedule 'critical_warmup' needs the network state"),
    (lambda: critical_warmup(1.0).lr(0, ScheduleState(per_unit_elr=np.array([1.0, -1.0]))),
     "per_unit_elr must be positive, got -1.0"),
    (lambda: constant(1.0).lr(-1), "step must be >= 0, got -1"),
])
def test_errors_name_the_parameter(call, message: str) -> None:
    with pytest.raises(ValueError) as info:
        call()
    assert str(info.value) == message


@given(sim_schedule_specs, st.lists(moderate_elrs, min_size=1, max_size=3), sim_elr_states,
       st.integers(0, 60))
def test_random_schedules_match_oracle(spec, bases, a, t) -> None:
    name, kw = spec
    sched = make_schedule(name, np.array(bases), **kw)
    got = sched.lr(t, ScheduleState(per_unit_elr=np.array(a)))
    for i, b in enumerate(bases):
        want = _oracle(name, kw, b, t, a)
        assert _rel(float(got[i]), want) <= 8 * TOL
        assert 0 < float(got[i]) <= b * (1 + TOL)
    if not sched.state_dependent:
        table = sched.lrs(t + 1)
        assert table.shape == (t + 1, len(bases))
        np.testing.assert_array_equal(table[t], got)
