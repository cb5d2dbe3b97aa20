"""The discrete simulator against plain-Python iterations written in this file.

Oracles: E_{t+1} = E_t/(1+E_t^2), u_{t+1} = u_t + 2 + 1/u_t, the norm recurrence
sigma2 <- sigma2 + (eta c)^2/sigma2 in a Python loop, the flip condition E_l E_k > 1, and a
brute-force pair count of order reversals.  Tolerances are in eps units (tests/tolerances).
"""

from __future__ import annotations

import itertools
import math
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import momenta, sim_elr_states, sim_lr_sweeps, sim_schedule_specs, sim_steps
from tolerances import rtol

from normdyn.simulate import (
    COLUMNS,
    FLIP_RTOL,
    TrajectorySummary,
    from_elr,
    make_schedule,
    numba_available,
    simulate_discrete,
)
from tests.simulate._oracles import geometric_update_elr

F64 = np.float64
ENGINES = ["numpy"] + (["numba"] if numba_available() else [])
SUMMARY_FIELDS = ("step", "lr", "seed", "lr_t", "spread", "quantiles", "flips", "final_sigma2",
                  "final_elr", "final_update_elr")


def _max_rel(got, want) -> float:
    got, want = np.asarray(got, dtype=F64), np.asarray(want, dtype=F64)
    return float(np.max(np.abs(got - want) / np.abs(want)))


def _python_loop(sigma2, c_rows, lrs):
    """sigma2 <- sigma2 + (eta c)^2/sigma2 and E = eta c/sigma2, in plain Python."""
    s = list(sigma2)
    out = []
    for t, eta in enumerate(lrs):
        c = c_rows[min(t, len(c_rows) - 1)]
        out.append([eta * ci / si for ci, si in zip(c, s, strict=True)])
        if t < len(lrs) - 1:
            s = [si + (eta * ci) ** 2 / si for ci, si in zip(c, s, strict=True)]
    return np.array(out), s


@pytest.mark.parametrize("engine", ENGINES)
def test_two_layer_example_matches_elr_map(engine: str) -> None:
    st0 = from_elr([21.7, 0.011], 1.0)
    df = simulate_discrete(st0.sigma2_0, st0.c, 1.0, 10, engine=engine)
    assert list(df.columns) == list(COLUMNS)
    e = [21.7, 0.011]
    for t in range(11):
        got = df[df.step == t].sort_values("layer")
        assert _max_rel(got.elr, e) <= rtol(F64, "iterated", t)
        assert _max_rel(got.spread, [max(e) / min(e)] * 2) <= rtol(F64, "iterated", t + 1)
        e = [x / (1 + x * x) for x in e]


@pytest.mark.parametrize("engine", ENGINES)
def test_u_form_and_continuous_lower_bound(engine: str) -> None:
    e0 = [30.0, 2.0, 0.3, 0.004]
    st0 = from_elr(e0, 0.5)
    s = simulate_discrete(st0.sigma2_0, st0.c, 0.5, 200, record=1, engine=engine)
    u = [1 / x**2 for x in e0]
    for t in range(201):
        got = 1 / s[s.step == t].sort_values("layer").elr.to_numpy() ** 2
        assert _max_rel(got, u) <= rtol(F64, "iterated", 2 * t + 2)
        assert np.all(got >= np.array([1 / x**2 + 2 * t for x in e0]) * (1 - 1e-12))
        u = [x + 2 + 1 / x for x in u]


@settings(max_examples=25, deadline=None)
@given(sim_elr_states, sim_lr_sweeps, sim_steps, st.sampled_from(ENGINES))
def test_random_states_match_python_loop(e0, lrs, steps, engine) -> None:
    st0 = from_elr(e0, 1.0)
    df = simulate_discrete(st0.sigma2_0, st0.c, lrs, steps, engine=engine)
    for i, lr in enumerate(lrs):
        want, _ = _python_loop(st0.sigma2_0, [st0.c], [lr] * (steps + 1))
        run = df.iloc[i * (steps + 1) * len(e0):(i + 1) * (steps + 1) * len(e0)]
        assert np.all(run.lr == lr)
        got = run.elr.to_numpy().reshape(steps + 1, len(e0))
        for t in range(steps + 1):
            assert _max_rel(got[t], want[t]) <= rtol(F64, "iterated", t + 1)


@pytest.mark.parametrize("engine", ENGINES)
def test_replayed_series_matches_loop_and_gain_map(engine: str) -> None:
    rng = np.random.default_rng(3)
    T, L = 25, 5
    c = np.exp(rng.normal(0, 1, (T, L)))
    s0 = rng.uniform(0.5, 2.0, L)
    df = simulate_discrete(s0, c, 0.7, T - 1, engine=engine)
    got = df.elr.to_numpy().reshape(T, L)
    want, _ = _python_loop(s0, c.tolist(), [0.7] * T)
    for t in range(T):
        assert _max_rel(got[t], want[t]) <= rtol(F64, "iterated", t + 1)
        np.testing.assert_array_equal(df[df.step == t].c.to_numpy(), c[t])
    for t in range(T - 1):  # E_{t+1} = (c_{t+1}/c_t) E_t/(1+E_t^2)
        gain = c[t + 1] / c[t]
        assert _max_rel(got[t + 1], gain * got[t] / (1 + got[t] ** 2)) <= rtol(F64, "iterated", 4)


@pytest.mark.parametrize("engine", ENGINES)
def test_seed_axis_equals_separate_runs(engine: str) -> None:
    rng = np.random.default_rng(4)
    c = np.exp(rng.normal(0, 1, (3, 12, 4)))
    s0 = np.ones(4)
    df = simulate_discrete(s0, c, [0.1, 1.0], 11, seeds=[7, 8, 9], engine=engine)
    assert sorted(df.seed.unique()) == [7, 8, 9]
    for i, seed in enumerate([7, 8, 9]):
        one = simulate_discrete(s0, c[i], [0.1, 1.0], 11, engine=engine)
        part = df[df.seed == seed].reset_index(drop=True)
        pd.testing.assert_frame_equal(part.drop(columns="seed"), one.drop(columns="seed"))
    summ = simulate_discrete(s0, c, [0.1, 1.0], 11, seeds=[7, 8, 9], record="summary",
                             engine=engine)
    assert summ.seed.tolist() == [7, 7, 8, 8, 9, 9] and summ.lr.tolist() == [0.1, 1.0] * 3


def _order(a: float, b: float) -> int:
    """Sign of a - b, with pairs closer than FLIP_RTOL (relative) counted as tied."""
    return 0 if abs(a - b) <= FLIP_RTOL * max(a, b) else (1 if a > b else -1)


def _brute_flips(e_prev, e_cur) -> int:
    return sum(_order(e_prev[i], e_prev[j]) * _order(e_cur[i], e_cur[j]) < 0
               for i, j in itertools.combinations(range(len(e_prev)), 2))


@settings(max_examples=20, deadline=None)
@given(sim_elr_states, sim_lr_sweeps, sim_steps, sim_schedule_specs, st.sampled_from(ENGINES))
def test_summary_equals_record_all(e0, lrs, steps, spec, engine) -> None:
    st0 = from_elr(e0, 1.0)
    sched = make_schedule(spec[0], np.array(lrs), **spec[1])
    kw = dict(schedule=sched, engine=engine)
    summ = simulate_discrete(st0.sigma2_0, st0.c, lrs, steps, record="summary", **kw)
    frame = simulate_discrete(st0.sigma2_0, st0.c, lrs, steps, record="all", **kw)
    e = frame.elr.to_numpy().reshape(len(lrs), steps + 1, len(e0))
    for r in range(len(lrs)):
        np.testing.assert_array_equal(summ.spread[:, r], e[r].max(1) / e[r].min(1))
        np.testing.assert_allclose(summ.quantiles[:, :, r].T,
                                   np.quantile(e[r], [0, 0.1, 0.5, 0.9, 1], axis=1).T,
                                   rtol=4 * rtol(F64, "single_op"), atol=0)
        flips = [0] + [_brute_flips(e[r][t - 1], e[r][t]) for t in range(1, steps + 1)]
        assert summ.flips[:, r].tolist() == flips
        np.testing.assert_array_equal(summ.final_elr[r], e[r][-1])
    if len(set(lrs)) == len(lrs):
        again = TrajectorySummary.from_frame(frame)
        for name in SUMMARY_FIELDS:
            np.testing.assert_array_equal(getattr(again, name), getattr(summ, name), err_msg=name)
    every = simulate_discrete(st0.sigma2_0, st0.c, lrs, steps, record=3, **kw)
    keep = frame.step.isin(set(range(0, steps + 1, 3)) | {steps})
    pd.testing.assert_frame_equal(every, frame[keep].reset_index(drop=True))


@given(sim_elr_states, st.floats(0.01, 10.0))
def test_constant_lr_flips_once_at_the_first_step(e0, lr) -> None:
    st0 = from_elr(e0, lr)
    s = simulate_discrete(st0.sigma2_0, st0.c, lr, 30, record="summary", engine="numpy")
    pairs = sum(a * b > 1 and _order(a, b) * _order(a / (1 + a * a), b / (1 + b * b)) != 0
                for a, b in itertools.combinations(e0, 2))
    assert int(s.flips[1, 0]) == pairs  # Lemma 3.4: a pair flips iff E_l E_k > 1
    assert not s.flips[2:].any()  # Lemma 3.5: never again (all ELRs <= 1/2 after step 1)
    assert np.all(s.quantile("max")[1:] <= 0.5 * (1 + 1e-15))
    assert np.all(np.diff(s.spread[:, 0]) <= s.spread[1:, 0] * 1e-13)  # |log rho| never grows


@pytest.mark.parametrize("engine", ENGINES)
def test_momentum_weight_decay_recurrence_and_update_elr(engine: str) -> None:
    eta, lam, beta, c, s0 = 0.1, 0.05, 0.9, [0.3, 3.0], [1.0, 2.0]
    df = simulate_discrete(s0, c, eta, 3000, momentum=beta, weight_decay=lam, engine=engine,
                           record=1000)
    s = list(s0)
    x = eta * lam / (1 - beta)
    for t in range(3001):
        if t % 1000 == 0 or t == 3000:
            got = df[df.step == t].sort_values("layer")
            assert _max_rel(got.sigma2, s) <= rtol(F64, "iterated", t + 1)
            e = [eta * ci / si for ci, si in zip(c, s, strict=True)]
            upd = [geometric_update_elr(ei, eta, lam, beta) for ei in e]
            assert _max_rel(got.update_elr, upd) <= 1e-12
        s = [(1 - x) ** 2 * si + (eta / (1 - beta)) ** 2 * ci**2 / si
             for ci, si in zip(c, s, strict=True)]


def test_weight_decay_equilibrium_update_elr_is_sqrt_2_eta_lam() -> None:
    eta, lam = 0.5, 0.02
    s = simulate_discrete([1.0, 50.0, 1e-3], [1.0, 0.1, 10.0], eta, 20000, weight_decay=lam,
                          record="summary")
    assert _max_rel(s.final_update_elr, [math.sqrt(2 * eta * lam)] * 3) <= 1e-9
    eq = math.sqrt(eta * lam * (2 - eta * lam))
    assert _max_rel(s.final_elr, [eq] * 3) <= 1e-9


def test_momentum_only_update_elr() -> None:
    s = simulate_discrete([1.0, 2.0], [1.0, 5.0], 0.1, 5, momentum=0.5, record="summary")
    want = [geometric_update_elr(e, 0.1, 0.0, 0.5) for e in s.final_elr.ravel()]
    assert _max_rel(s.final_update_elr.ravel(), want) <= 1e-14
    # The tangential part alone is the stationary velocity; the radial part is 2nd order.
    assert np.all(s.final_update_elr >= s.final_elr / math.sqrt(1 - 0.25))


@pytest.mark.skipif(len(ENGINES) < 2, reason="numba is not installed")
@settings(max_examples=15, deadline=None)
@given(sim_elr_states, sim_lr_sweeps, sim_steps, sim_schedule_specs, momenta,
       st.sampled_from([0.0, 1e-3]), st.sampled_from(["all", "summary", 4]))
def test_engines_are_bit_identical(e0, lrs, steps, spec, beta, lam, record) -> None:
    st0 = from_elr(e0, 1.0)
    c = np.exp(np.random.default_rng(len(e0)).normal(0, 0.5, (2, max(steps, 1), len(e0))))
    c[:, 0] = st0.c
    out = [simulate_discrete(st0.sigma2_0, c, lrs, steps, momentum=beta, weight_decay=lam,
                             schedule=make_schedule(spec[0], np.array(lrs), **spec[1]),
                             record=record, engine=eng) for eng in ("numpy", "numba")]
    if isinstance(out[0], pd.DataFrame):
        pd.testing.assert_frame_equal(out[0], out[1], check_exact=True)
    else:
        for name in SUMMARY_FIELDS:
            np.testing.assert_array_equal(getattr(out[0], name), getattr(out[1], name), name)


def test_summary_frames_and_dict() -> None:
    s = simulate_discrete([1.0, 1.0, 1.0], [0.1, 1.0, 10.0], [0.5, 2.0], 4, record="summary")
    f = s.to_frame()
    assert len(f) == 2 * 5 and {"elr_min", "elr_median", "flips", "spread"} <= set(f.columns)
    assert len(s.final_frame()) == 2 * 3
    d = s.to_dict()
    assert d["layers"] == 3 and len(d["runs"]) == 2
    assert all(type(v) is float for v in d["runs"][0]["spread"])
    assert d["runs"][1]["total_flips"] == int(s.total_flips[1])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"steps": -1}, "steps must be >= 0, got -1"),
    ({"lr": 0.0}, "lr must be positive, got 0.0"),
    ({"lr": [[1.0]]}, "lr must be a scalar or a 1-D sweep of lrs, got shape (1, 1)"),
    ({"c": [1.0, -1.0]}, "c must be positive, got -1.0"),
    ({"sigma2_0": [1.0, 1.0, 1.0]}, "sigma2_0 must have shape (2,) like c, got (3,)"),
    ({"c": np.ones((3, 2)), "steps": 5},
     "c: a replayed series needs at least steps = 5 rows (axis -2), got 3"),
    ({"momentum": 1.0}, "momentum must lie in [0.0, 1.0), got 1.0"),
    ({"weight_decay": -0.1}, "weight_decay must be non-negative, got -0.1"),
    ({"weight_decay": 2.0},
     "weight_decay: the update-ELR model needs lr*weight_decay/(1-momentum) < 1, got 2.0"),
    ({"record": "some"}, "record must be 'all', 'summary' or an integer k >= 1, got 'some'"),
    ({"record": 0}, "record must be >= 1, got 0"),
    ({"schedule": "foo"}, "schedule: unknown name 'foo'; choose from constant, "
                          "critical_warmup, exponential_warmup, linear_warmup, step_decay"),
    ({"seeds": [1, 2]}, "seeds must label the 1 seed(s) of c, got 2"),
    ({"engine": "gpu"}, "engine must be 'auto', 'numba' or 'numpy', got 'gpu'"),
])
def test_bad_input_names_the_parameter(kwargs, message) -> None:
    args = {"sigma2_0": [1.0, 1.0], "c": [1.0, 2.0], "lr": 1.0, "steps": 3} | kwargs
    with pytest.raises(ValueError) as info:
        simulate_discrete(args.pop("sigma2_0"), args.pop("c"), args.pop("lr"),
                          args.pop("steps"), **args)
    assert str(info.value) == message


def test_progress_bar_goes_to_stderr(capsys) -> None:
    simulate_discrete([1.0, 1.0], [1.0, 2.0], [0.1, 1.0], 50, record="summary", progress=True)
    out, err = capsys.readouterr()
    assert out == "" and "51/51" in err


def test_numpy_fallback_without_numba() -> None:
    """With numba unimportable, 'auto' runs the NumPy engine and 'numba' is refused."""
    code = (
        "import sys; sys.modules['numba'] = None\n"
        "from normdyn.simulate import numba_available, simulate_discrete\n"
        "assert not numba_available()\n"
        "df = simulate_discrete([1.0, 1.0], [21.7, 0.011], 1.0, 3)\n"
        "assert abs(df.elr.iloc[2] - 21.7 / (1 + 21.7**2)) <= 1e-15 * df.elr.iloc[2]\n"
        "try:\n"
        "    simulate_discrete([1.0], [1.0], 1.0, 3, engine='numba')\n"
        "except ValueError as exc:\n"
        "    print(exc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "engine: 'numba' is not installed (pip install numba)\n"
