r"""Start-up cost of ``import normdyn.simulate`` against the import of its own dependencies.

Each timing is a fresh ``python -c`` subprocess (wall time, ``OMP_NUM_THREADS=1``); the
cases are interleaved and repeated, and the median counts.  ``cold`` means a fresh
process with a warm cache file of the generated numeric functions
(:mod:`normdyn.theory.function_cache`); the cache is filled once before timing, in the
cache directory of the environment (``$NORMDYN_CACHE``).

Cases:

* ``deps`` -- the third-party packages ``import normdyn.simulate`` loads (found by
  importing it once and listing ``sys.modules``) plus numba, the engine's compiler;
* ``deps_named`` -- ``import numpy, numba, scipy`` (the issue's list);
* ``simulate`` -- ``import normdyn.simulate``;
* ``simulate_no_cache`` -- the same with ``NORMDYN_NO_CACHE=1`` (re-derives in SymPy:
  the cost before the cache).

Goal: ``simulate / deps <= 1.5``.

Usage::

    python benchmarks/import_time.py [--repeats 7] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

__all__ = ["main"]

_LIST_DEPS = (
    "import sys, normdyn.simulate\n"
    "top = {m.split('.')[0] for m in sys.modules}\n"
    "std = set(sys.stdlib_module_names)\n"
    "print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in top - std\n"
    "      and not m.startswith(('normdyn', '_')) and '.' not in m)))\n"
)


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.update(extra)
    return env


def _time(code: str, env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], env=env, check=True)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    env = _env()
    subprocess.run([sys.executable, "-c", "import normdyn.theory.numeric"], env=env, check=True)
    modules = subprocess.run([sys.executable, "-c", _LIST_DEPS], env=env, check=True,
                             capture_output=True, text=True).stdout.split()
    modules = sorted(set(modules) | {"numba"})
    cases = {
        "deps": ("import " + ", ".join(modules), env),
        "deps_named": ("import numpy, numba, scipy", env),
        "simulate": ("import normdyn.simulate", env),
        "simulate_no_cache": ("import normdyn.simulate", _env(NORMDYN_NO_CACHE="1")),
    }
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(args.repeats):
        for name, (code, case_env) in cases.items():
            if name == "simulate_no_cache" and len(times[name]) >= 3:
                continue  # slow; three runs are enough
            times[name].append(_time(code, case_env))
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "dependency_modules": modules,
        "median_s": {k: round(v, 4) for k, v in med.items()},
        "runs": {k: len(v) for k, v in times.items()},
        "ratio_simulate_over_deps": round(med["simulate"] / med["deps"], 3),
        "ratio_simulate_over_deps_named": round(med["simulate"] / med["deps_named"], 3),
        "ratio_no_cache_over_deps": round(med["simulate_no_cache"] / med["deps"], 3),
        "goal_ratio": 1.5,
    }
    result["goal_met"] = result["ratio_simulate_over_deps"] <= 1.5
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    return result


if __name__ == "__main__":
    main()
