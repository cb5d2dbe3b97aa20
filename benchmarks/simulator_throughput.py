r"""Throughput of the discrete norm-level simulator (summaries and schedules included).

Measures, in one run:

1. single-core layer-steps/s of :func:`normdyn.simulate.simulate_discrete` with
   ``record="summary"`` (per-step spread, ELR quantiles and flips) under a constant lr, a
   linear warm-up and the critical-lr warm-up (numba pinned to one thread; CPU time and
   wall time, since the machine may be shared);
2. the same work in a plain-Python loop over the generated ``.scalar`` functions (a small
   case, extrapolated per layer-step) and the speed-up over it;
3. the NumPy fallback engine against a bare NumPy loop of the same map with the same
   per-step summary (``E = 1/(E + 1/E); spread = E.max(1)/E.min(1)``), both on 2000 lrs ×
   110 layers × 200 steps (goal: within 3×);
4. the wall time of the full sweep, :math:`10^4` lrs × 110 layers × :math:`10^4` steps
   (``--quick``: :math:`10^3` × 110 × :math:`10^3`), on all threads.

Every engine and schedule is called once on a small case before anything is timed, so no
timing pays numba's compilation or first-call specialization; each single-core case then
runs twice, interleaved, and the faster run counts (the first full-size call also pays the
first touch of its output memory).  All ratios are taken within
one run (the machine may be shared).

Goals: >= 5e8 layer-steps/s on one core, >= 50x the Python loop, the critical schedule
within 1.5x of the constant one, the NumPy fallback within 3x of the bare loop, the big
sweep < 60 s.

Usage::

    python benchmarks/simulator_throughput.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from typing import Any

import numpy as np

import normdyn.simulate.discrete as D
from normdyn.simulate import initial_state, linear_warmup, numba_available, simulate_discrete
from normdyn.simulate.discrete import quantile_positions
from normdyn.theory.numeric import elr, norm_step

GOAL_PER_CORE = 5e8
GOAL_RATIO = 50.0
GOAL_SWEEP_S = 60.0
GOAL_CRITICAL = 1.5
GOAL_FALLBACK = 3.0


def bare_numpy_loop(e0: np.ndarray, steps: int) -> np.ndarray:
    """The baseline: the constant-lr ELR map and the per-step spread, nothing else.

    ``E <- 1/(E + 1/E)`` (the stable form of E/(1+E^2), written out here as the oracle)
    over ``(runs, layers)``, recording ``E.max(1)/E.min(1)`` at every step.
    """
    e = e0.copy()
    out = np.empty((steps + 1, e.shape[0]))
    for t in range(steps + 1):
        out[t] = e.max(1) / e.min(1)
        e = 1 / (e + 1 / e)
    return out


def _timed(fn, *args, **kw) -> tuple[Any, float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args, **kw)
    return out, time.perf_counter() - w0, time.process_time() - c0


def python_loop(sigma2_0: np.ndarray, c: np.ndarray, lrs: np.ndarray, steps: int) -> list:
    """The summary computation in plain Python: same functions, same sorted-row algorithm."""
    e_scalar, step_scalar = elr.scalar, norm_step.scalar
    lo, hi, g = (x.tolist() for x in quantile_positions(len(c)))
    out = []
    for lr in lrs.tolist():
        s, cc = sigma2_0.tolist(), c.tolist()
        order = list(range(len(cc)))
        prev: list[float] | None = None
        for t in range(steps + 1):
            e = [e_scalar(lr, cc[j], s[j]) for j in range(len(cc))]
            if t < steps:
                s = [step_scalar(s[j], lr, cc[j]) for j in range(len(cc))]
            row = [e[j] for j in order]
            flips = 0
            for j in range(1, len(row)):  # insertion sort in the previous order
                key, kj, i = row[j], order[j], j - 1
                while i >= 0 and row[i] > key:
                    flips += prev is not None
                    row[i + 1], order[i + 1] = row[i], order[i]
                    i -= 1
                row[i + 1], order[i + 1] = key, kj
            quant = [row[a] + (row[b] - row[a]) * w for a, b, w in zip(lo, hi, g, strict=True)]
            out.append((row[-1] / row[0], quant, flips))
            prev = row
    return out


def _set_threads(n: int | None) -> int:
    import numba

    if n is not None:
        numba.set_num_threads(n)
    return int(numba.get_num_threads())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    p.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    args = p.parse_args(argv)
    if not numba_available():
        print("numba is not installed: only the NumPy engine can be measured "
              "(pip install numba)", file=sys.stderr)
    L = 110
    state = initial_state(layers=L, spread=1e3, seed=0)
    s0, c = state.sigma2_0, state.c
    single = (1000, 2000) if args.quick else (2000, 5000)  # (lrs, steps) for one core
    sweep = (1000, 1000) if args.quick else (10_000, 10_000)
    res: dict[str, Any] = {"cpus": os.cpu_count(), "load_before": os.getloadavg()}
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")

    engine = "numba" if numba_available() else "numpy"
    n_lr, n_steps = single
    lrs = np.logspace(-3, 1, n_lr)
    schedules = [("constant", "constant"), ("linear_warmup", linear_warmup(lrs, 500)),
                 ("critical_warmup", "critical_warmup")]
    if engine == "numba":
        _set_threads(1)
    # Warm every engine and schedule (compilation, first-call specialization) untimed.
    w0 = time.perf_counter()
    warm_lrs = lrs[:4]
    for eng in (("numba", "numpy") if engine == "numba" else ("numpy",)):
        for name, _ in schedules:
            sched = linear_warmup(warm_lrs, 500) if name == "linear_warmup" else name
            simulate_discrete(s0, c, warm_lrs, 3, schedule=sched, record="summary", engine=eng)
    print(f"warm-up (compile + first call of every engine and schedule): "
          f"{time.perf_counter() - w0:.1f} s")

    # 1. single core, summaries, three schedules.  The first full-size call also pays the
    # first touch of its output memory (page faults, seconds here), so every schedule runs
    # twice, interleaved, and the faster run counts.
    work = n_lr * L * (n_steps + 1)
    timings: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in schedules}
    for _ in range(2):
        for name, sched in schedules:
            _, wall, cpu = _timed(simulate_discrete, s0, c, lrs, n_steps, schedule=sched,
                                  record="summary", engine=engine)
            timings[name].append((cpu, wall))
    for name, _ in schedules:
        cpu, wall = min(timings[name])
        res[f"single_{name}"] = {"wall_s": wall, "cpu_s": cpu, "per_s_wall": work / wall,
                                 "per_s_cpu": work / cpu,
                                 "cpu_s_runs": [t[0] for t in timings[name]]}
        print(f"1 core, {name:16s} {n_lr} lrs x {L} layers x {n_steps} steps: wall {wall:6.2f} s "
              f"({work / wall:.3g} layer-steps/s), CPU {cpu:6.2f} s ({work / cpu:.3g}/s); "
              f"CPU of the two runs {', '.join(f'{t[0]:.2f}' for t in timings[name])} s")
    best = max(res[k]["per_s_cpu"] for k in res if k.startswith("single_"))
    crit_ratio = res["single_constant"]["per_s_cpu"] / res["single_critical_warmup"]["per_s_cpu"]
    res["critical_over_constant"] = crit_ratio
    print(f"critical_warmup takes {crit_ratio:.2f}x the CPU time of constant "
          f"(goal <= {GOAL_CRITICAL}x)")

    # 2. plain-Python loop, small case, same algorithm
    py_lrs, py_steps = np.logspace(-3, 1, 4), 100
    _, wall, cpu = _timed(python_loop, s0, c, py_lrs, py_steps)
    py_rate = py_lrs.size * L * (py_steps + 1) / cpu
    const = res["single_constant"]["per_s_cpu"]
    res["python_loop"] = {"per_s_cpu": py_rate, "ratio_constant": const / py_rate}
    print(f"plain-Python loop: {py_rate:.3g} layer-steps/s (CPU) -> numba constant-lr is "
          f"{const / py_rate:.0f}x faster")

    # 3. NumPy fallback engine against the bare NumPy loop (best of 3 each, interleaved)
    np_lrs, np_steps = np.logspace(-3, 1, 2000), 200
    e0 = state.elr(np_lrs)
    bare_cpu, eng_cpu = [], []
    for _ in range(3):
        bare_cpu.append(_timed(bare_numpy_loop, e0, np_steps)[2])
        eng_cpu.append(_timed(simulate_discrete, s0, c, np_lrs, np_steps, record="summary",
                              engine="numpy")[2])
    np_rate = np_lrs.size * L * (np_steps + 1) / min(eng_cpu)
    fallback = min(eng_cpu) / min(bare_cpu)
    res["numpy_engine"] = {"per_s_cpu": np_rate, "bare_loop_cpu_s": min(bare_cpu),
                           "engine_cpu_s": min(eng_cpu), "ratio_to_bare_loop": fallback}
    print(f"NumPy engine: {np_rate:.3g} layer-steps/s (CPU), {min(eng_cpu):.3f} s vs the bare "
          f"NumPy loop {min(bare_cpu):.3f} s on {np_lrs.size} lrs x {L} layers x {np_steps} "
          f"steps: {fallback:.2f}x (goal <= {GOAL_FALLBACK}x)")

    # 4. the big sweep, all threads
    threads = _set_threads(os.cpu_count()) if engine == "numba" else 1
    n_lr, n_steps = sweep
    lrs = np.logspace(-3, 1, n_lr)
    if engine == "numba" and threads > 1:  # compile the threaded kernel outside the timing
        saved, D.PARALLEL_WORK = D.PARALLEL_WORK, 0
        _, comp, _ = _timed(simulate_discrete, s0, c, np.ones(2), 2, record="summary")
        D.PARALLEL_WORK = saved
        res["parallel_compile_s"] = comp
        print(f"numba threaded kernel compile + first call: {comp:.1f} s")
    summary, wall, cpu = _timed(simulate_discrete, s0, c, lrs, n_steps, record="summary",
                                engine=engine)
    work = n_lr * L * (n_steps + 1)
    rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    res["sweep"] = {"lrs": n_lr, "layers": L, "steps": n_steps, "threads": threads,
                    "wall_s": wall, "cpu_s": cpu, "peak_rss_gb": rss_gb,
                    "final_spread_median": float(np.median(summary.spread[-1]))}
    print(f"sweep {n_lr} lrs x {L} layers x {n_steps} steps on {threads} thread(s): wall "
          f"{wall:.1f} s, CPU {cpu:.1f} s ({work / wall:.3g} layer-steps/s wall), peak RSS "
          f"{rss_gb:.1f} GiB")
    res["load_after"] = os.getloadavg()
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    print(f"goals: per core {best:.3g} / {GOAL_PER_CORE:.0e} "
          f"[{'met' if best >= GOAL_PER_CORE else 'NOT met'}]; "
          f"vs Python {const / py_rate:.0f}x / {GOAL_RATIO:.0f}x "
          f"[{'met' if const / py_rate >= GOAL_RATIO else 'NOT met'}]; sweep {wall:.1f} s / "
          f"{GOAL_SWEEP_S:.0f} s [{'met' if wall < GOAL_SWEEP_S else 'NOT met'}]; critical/"
          f"constant {crit_ratio:.2f}x / {GOAL_CRITICAL}x "
          f"[{'met' if crit_ratio <= GOAL_CRITICAL else 'NOT met'}]; NumPy fallback "
          f"{fallback:.2f}x / {GOAL_FALLBACK:.0f}x "
          f"[{'met' if fallback <= GOAL_FALLBACK else 'NOT met'}]"
          + (" (quick sizes)" if args.quick else ""))
    if args.json:
        from normdyn._io import atomic_write_json

        atomic_write_json(args.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
