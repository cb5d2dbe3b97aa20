"""Issue 12: extreme ELRs, errors that name the quantity, the NumPy engine, numba as a dependency.

Oracles written here: the ELR map in the stable form ``1/(E + 1/E)`` iterated in Python
floats, ``log10(E_max) - log10(E_min)`` from ``math.log10``, a brute-force pair count of
flips, and the numba kernel for the NumPy engine (bit for bit).  Tolerances are in eps
units (tests/tolerances.py).
"""

from __future__ import annotations

import math
import tomllib
import warnings
from pathlib import Path

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from strategies import extreme_elrs, sim_elr_states, sim_lr_sweeps, sim_steps
from tolerances import rtol

from normdyn._checks import NonFiniteError
from normdyn.simulate import (
    FLIP_RTOL,
    continuous_closed_form,
    from_elr,
    numba_available,
    simulate_discrete,
)
from normdyn.simulate.drift import simulate_drift
from normdyn.simulate.summary import count_flips

F64 = np.float64
ENGINES = ["numpy"] + (["numba"] if numba_available() else [])
ROOT = Path(__file__).resolve().parents[2]


def _no_runtime_warnings(fn, *args, **kw):
    """Call ``fn``; any RuntimeWarning (overflow, divide, invalid) fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        return fn(*args, **kw)


def _stable_map(e: float) -> float:
    return 1.0 / (e + 1.0 / e)


def _rel(got: float, want: float) -> float:
    return abs(got - want) / abs(want)


# ----------------------------------------------------------------------------- extremes


@settings(max_examples=30, deadline=None)
@given(e_hi=extreme_elrs, e_lo=extreme_elrs, engine=st.sampled_from(ENGINES),
       summary=st.booleans())
@example(e_hi=1e300, e_lo=1e-300, engine="numpy", summary=False)  # the issue's command
@example(e_hi=1e300, e_lo=1e-300, engine=ENGINES[-1], summary=True)
@example(e_hi=1.7e308, e_lo=5e-324 * 2**60, engine="numpy", summary=True)
def test_discrete_extreme_elrs_are_finite_and_log10_spread_is_exact(e_hi, e_lo, engine,
                                                                    summary):
    st0 = from_elr([e_hi, e_lo], 1.0)
    got = _no_runtime_warnings(simulate_discrete, st0.sigma2_0, st0.c, 1.0, 5, engine=engine,
                               record="summary" if summary else "all")
    frame = got.to_frame() if summary else got
    want = [e_hi, e_lo]
    for t in range(6):
        row = frame[frame.step == t]
        w_log = math.log10(max(want)) - math.log10(min(want))
        # log10 of a ratio: absolute error ~eps * (|log10 E_max| + |log10 E_min|) (+ map error)
        tol = rtol(F64, "iterated", t + 1) * (abs(math.log10(max(want))) +
                                              abs(math.log10(min(want))) + 1)
        assert np.all(np.abs(row.log10_spread.to_numpy() - w_log) <= tol)
        ratio = max(want) / min(want) if w_log < 308 else math.inf
        if math.isinf(ratio):
            assert np.all(np.isinf(row.spread))
        else:
            assert np.all(np.abs(row.spread.to_numpy() / ratio - 1) <= rtol(F64, "iterated", t + 2))
        if not summary:
            e = row.sort_values("layer").elr.to_numpy()
            for g, w in zip(e, want, strict=True):
                assert _rel(g, w) <= rtol(F64, "iterated", t + 1)
        want = [_stable_map(x) for x in want]


def test_issue_command_log10_spread_is_600_at_step_0():
    st0 = from_elr([1e300, 1e-300], 1.0)
    for engine in ENGINES:
        frame = _no_runtime_warnings(simulate_discrete, st0.sigma2_0, st0.c, 1.0, 5,
                                     engine=engine)
        first = frame[frame.step == 0]
        assert np.all(first.log10_spread == 600.0) and np.all(np.isinf(first.spread))
        s = _no_runtime_warnings(simulate_discrete, st0.sigma2_0, st0.c, 1.0, 5,
                                 record="summary", engine=engine)
        assert s.log10_spread[0, 0] == 600.0 and np.isinf(s.spread[0, 0])
        d = s.to_dict()
        assert d["runs"][0]["spread"][0] is None and d["runs"][0]["log10_spread"] == {"step": [0], "value": [600.0]}


def test_continuous_and_drift_extreme_elrs():
    st0 = from_elr([1e300, 1e-300], 1.0)
    c = _no_runtime_warnings(continuous_closed_form, st0.sigma2_0, st0.c, 1.0,
                             np.arange(6.0))
    assert np.all(c[c.step == 0].log10_spread == 600.0)
    # E(t) = 1/hypot(1/E0, sqrt(2t)) for the large layer: 1/sqrt(2t) to rounding
    big = c[(c.layer == 0) & (c.step > 0)]
    assert np.all(np.abs(big.elr * np.sqrt(2 * big.step) - 1) <= 8 * rtol(F64, "single_op"))
    d = _no_runtime_warnings(simulate_drift, st0.sigma2_0, st0.c, [1000, 1000], 1.0, 5)
    first = d[d.step == 0]
    assert np.all(np.abs(first.log10_spread - 600.0) <= 1e-12)
    assert np.all(np.isfinite(d.elr)) and np.all(d.elr > 0)
    # projected drift is exact Pythagoras: E_1 = F(E_0) for both layers
    one = d[d.step == 1].sort_values("layer").elr.to_numpy()
    for g, w in zip(one, [_stable_map(1e300), _stable_map(1e-300)], strict=True):
        assert _rel(g, w) <= 1e-12


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("record", ["all", "summary"])
def test_sigma2_overflow_names_sigma2_and_the_step(engine, record):
    with pytest.raises(NonFiniteError, match=r"sigma2 \(squared weight norm\) overflowed "
                                             r"float64 (at|by) step 1"):
        _no_runtime_warnings(simulate_discrete, [1.0, 1.0], [1e300, 1.0], 1.0, 3,
                             engine=engine, record=record)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("record", ["all", "summary"])
def test_elr_overflow_names_elr(engine, record):
    with pytest.raises(NonFiniteError, match=r"elr overflowed float64 at step 0"):
        _no_runtime_warnings(simulate_discrete, [1e-300, 1.0], [1e300, 1.0], 1.0, 3,
                             engine=engine, record=record)


def test_drift_and_continuous_overflow_name_the_quantity():
    with pytest.raises(NonFiniteError, match=r"simulate_drift: sigma2 \(squared weight norm\) "
                                             r"overflowed float64 at step 1 \(seed 0, layer 0\)"):
        _no_runtime_warnings(simulate_drift, [1.0, 1.0], [1e300, 1.0], [100, 100], 1.0, 3)
    with pytest.raises(NonFiniteError, match=r"continuous: elr overflowed float64"):
        _no_runtime_warnings(continuous_closed_form, [1e-300, 1.0], [1e300, 1.0], 1.0, [0.0])


def test_from_elr_keeps_the_larger_of_sigma2_and_eta_c_at_one():
    e = np.array([1e300, 3.0, 1.0, 0.5, 1e-300])
    st0 = from_elr(e, 0.25)
    np.testing.assert_array_equal(np.maximum(st0.sigma2_0, 0.25 * st0.c), 1.0)
    assert np.all(np.abs(st0.elr(0.25) / e - 1) <= rtol(F64, "single_op"))


# ----------------------------------------------------------------------------- NumPy engine


def _brute_flips(prev: np.ndarray, cur: np.ndarray) -> int:
    n = 0
    for i in range(prev.size):
        for j in range(i + 1, prev.size):
            dp, dc = prev[i] - prev[j], cur[i] - cur[j]
            tied = (abs(dp) <= FLIP_RTOL * max(prev[i], prev[j])
                    or abs(dc) <= FLIP_RTOL * max(cur[i], cur[j]))
            n += (not tied) and dp * dc < 0
    return n


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.floats(1e-3, 1e3), st.floats(1e-3, 1e3)), min_size=1,
                max_size=12))
@example([(1.0, 2.0), (1.0 + 1e-12, 1.0)])  # tied at the first step: no flip
@example([(1.0, 2.0), (3.0, 2.0 * (1 + 1e-12))])  # tied at the second step: no flip
@example([(1.0, 2.0), (3.0, 1.0)])  # one flip
def test_count_flips_matches_brute_force(pairs):
    prev = np.array([[p for p, _ in pairs]])
    cur = np.array([[c for _, c in pairs]])
    assert int(count_flips(prev, cur)[0]) == _brute_flips(prev[0], cur[0])


@pytest.mark.skipif(not numba_available(), reason="needs numba")
@settings(max_examples=25, deadline=None)
@given(sim_elr_states, sim_lr_sweeps, sim_steps,
       st.sampled_from(["constant", "critical_warmup", "linear_warmup"]), st.booleans())
def test_numpy_summary_engine_is_bit_identical_to_numba_with_seeds_and_replay(
        e0, lrs, steps, schedule, replay):
    rng = np.random.default_rng(len(e0) * 1000 + steps)
    L = len(e0)
    s0 = np.stack([from_elr(e0, 1.0).sigma2_0] * 2)
    c = (rng.uniform(0.3, 3.0, size=(2, max(steps, 1), L)) * from_elr(e0, 1.0).c if replay
         else np.broadcast_to(from_elr(e0, 1.0).c, (2, max(steps, 1), L)))
    if schedule == "linear_warmup":
        from normdyn.simulate import linear_warmup

        schedule = linear_warmup(lrs, 5)
    a = simulate_discrete(s0, c, lrs, steps, schedule=schedule, record="summary",
                          engine="numpy")
    b = simulate_discrete(s0, c, lrs, steps, schedule=schedule, record="summary",
                          engine="numba")
    for name in ("lr_t", "spread", "quantiles", "flips", "final_sigma2", "final_elr",
                 "final_update_elr"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


# ----------------------------------------------------------------------------- packaging


def test_numba_is_a_core_dependency_and_the_makefile_needs_no_extra():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert any(d.replace(" ", "").startswith("numba") for d in meta["dependencies"])
    assert "fast" not in (ROOT / "Makefile").read_text().split("pip install -e")[1].split("\n")[0]


# ----------------------------------------------------------------------------- determinism


def test_simulate_drift_same_seed_same_bytes(tmp_path, capsys):
    from normdyn.cli import main

    def run(name: str, seed: str) -> bytes:
        path = tmp_path / name
        assert main(["simulate", "drift", "--layers", "4", "--spread", "100", "--steps", "20",
                     "--momentum", "0.9", "--elements", "50", "--seed", seed, "--out",
                     str(path)]) == 0
        return path.read_bytes()

    first = run("a.csv", "3")
    assert run("b.csv", "3") == first
    assert run("c.csv", "4") != first


def test_zero_gradient_layer_in_a_drift_frame_summarizes_to_an_infinite_spread():
    """A layer with c = 0 has ELR 0: spread and log10_spread are inf, with no warning."""
    from normdyn.simulate import TrajectorySummary

    frame = _no_runtime_warnings(simulate_drift, [1.0, 1.0], [0.0, 1.0], [10, 10], 0.1, 3)
    summary = _no_runtime_warnings(TrajectorySummary.from_frame, frame)
    assert np.all(np.isinf(summary.spread)) and np.all(np.isinf(summary.log10_spread))
    assert np.all(np.isinf(frame.log10_spread))


def _mp_update_elr(e: float, eta: float, lam: float, beta: float):
    """The hand-written first-order update ELR (tests/simulate/_oracles.py) in 60-digit mpmath."""
    import mpmath as mp

    with mp.workdps(60):
        e, eta, lam, beta = (mp.mpf(v) for v in (e, eta, lam, beta))
        tangential_sq = e**2 / (1 - beta**2)
        ratio = (1 - eta * lam / (1 - beta)) ** 2 + (e / (1 - beta)) ** 2
        radial = mp.sqrt(ratio - tangential_sq) - 1
        return mp.sqrt(radial**2 + tangential_sq)


@pytest.mark.parametrize("e", [1e300, 1e200, 1e154, 1e155, 3.0, 1e-3, 1e-150, 1e-300])
@pytest.mark.parametrize(("eta", "lam", "beta"), [(1e-3, 1e-4, 0.9), (0.1, 0.5, 0.0),
                                                  (1.0, 0.0, 0.5), (0.01, 1.0, 0.99)])
def test_update_elr_is_finite_and_accurate_up_to_1e300(e, eta, lam, beta):
    import mpmath as mp

    from normdyn.simulate import update_elr

    got = float(_no_runtime_warnings(update_elr, np.array([e]), eta, beta, lam)[0])
    want = _mp_update_elr(e, eta, lam, beta)
    assert np.isfinite(got)
    # a few roundings of a well-conditioned expression (cond <= 2 here)
    assert float(abs(mp.mpf(got) / want - 1)) <= 64 * np.finfo(F64).eps, (got, want)


def test_momentum_at_elr_1e300_simulates_and_the_ode_route_fails_naming_the_quantity():
    st0 = from_elr([1e300, 1e-300], 1.0)
    out = _no_runtime_warnings(simulate_discrete, st0.sigma2_0, st0.c, 1.0, 3, momentum=0.9)
    assert np.all(np.isfinite(out.update_elr)) and np.all(out.update_elr > 0)
    from normdyn.simulate import continuous_ode, linear_warmup

    with pytest.raises(NonFiniteError, match=r"continuous_ode: integrating sigma2 failed"):
        _no_runtime_warnings(continuous_ode, st0.sigma2_0, st0.c, linear_warmup(1.0, 2),
                             (0.0, 3.0), [0.0, 1.0, 2.0, 3.0])
    # the same ELRs with a moderate spread integrate fine (the oracle: the closed form)
    ok = from_elr([3.0, 0.01], 1.0)
    ode = continuous_ode(ok.sigma2_0, ok.c, 1.0, (0.0, 3.0), [0.0, 1.0, 3.0])
    closed = continuous_closed_form(ok.sigma2_0, ok.c, 1.0, [0.0, 1.0, 3.0])
    assert np.all(np.abs(ode.elr.to_numpy() / closed.elr.to_numpy() - 1) <= rtol(F64, "ode"))


def test_benchmark_baseline_computes_the_same_spreads_as_the_numpy_engine():
    """The bare NumPy loop of the benchmark (E <- 1/(E + 1/E)) is the same map and summary."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "simulator_throughput", ROOT / "benchmarks" / "simulator_throughput.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    from normdyn.simulate import initial_state

    state = initial_state(layers=7, spread=50.0, seed=1)
    lrs = np.logspace(-2, 1, 5)
    steps = 30
    bare = bench.bare_numpy_loop(state.elr(lrs), steps)  # (steps+1, runs)
    got = simulate_discrete(state.sigma2_0, state.c, lrs, steps, record="summary",
                            engine="numpy")
    for t in range(steps + 1):
        assert np.all(np.abs(got.spread[t] / bare[t] - 1) <= rtol(F64, "iterated", 2 * t + 2))
