"""Drift simulation (weight vectors) against the norm-level model: where does the model hold?

Prints

1. the relative-error table: rows (weight decay, beta, e_l, projected), columns the mean
   over seeds of |sigma2_drift/sigma2_model - 1| and of the same for the update ELR, after
   10, 100 and 1000 steps (plus the signed mean, the bias, in the CSV);
2. the per-step growth of u = E_update^-2 measured in the drift model against
   ``momentum_u_growth`` = 2(1+beta)/(1-beta) (THEORY §5: 37.3 measured vs 38 at 0.9);
3. the equilibrium update ELR with weight decay against
   ``momentum_equilibrium_update_elr`` (exact in the model) and its leading order.

Writes table 1 to ``--out`` (CSV, atomically) and tables 2 and 3 beside it as
``<stem>_u_growth.csv`` and ``<stem>_equilibrium.csv``.

    python benchmarks/drift_vs_discrete.py                # full grid, a few minutes on CPU
    python benchmarks/drift_vs_discrete.py --quick        # smaller grid, seconds
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from normdyn._io import atomic_write_frame, provenance
from normdyn.simulate.drift_comparison import (
    compare_drift_discrete,
    measure_equilibrium,
    measure_u_growth,
    summarize_comparison,
)

DEFAULT_OUT = Path("benchmarks/results/drift_vs_discrete.csv")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=DEFAULT_OUT,
                   help=f"CSV of the relative-error table (default {DEFAULT_OUT})")
    p.add_argument("--seeds", type=int, default=4, help="independent drift copies (default 4)")
    p.add_argument("--lr", type=float, default=0.1, help="constant lr (default 0.1)")
    p.add_argument("--quick", action="store_true",
                   help="small grid (e <= 1000, 100 steps) for a smoke run")
    return p


def _fmt(x: float) -> str:
    return f"{x:.2e}"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.seeds < 2:
        raise SystemExit("--seeds must be >= 2 (standard errors need two copies)")
    seeds = tuple(range(args.seeds))
    steps_at = (10, 100) if args.quick else (10, 100, 1000)
    elements = (10, 100, 1000) if args.quick else (10, 100, 1000, 10000)
    pd.set_option("display.width", 200)
    print(f"normdyn drift vs norm-level model; {provenance()}")

    t0 = time.perf_counter()
    frame = compare_drift_discrete(
        betas=(0.0, 0.5, 0.9), elements=elements, projected=(True, False),
        weight_decays=(0.0, 5e-4, 5e-3), lr=args.lr, sigma2_0=1.0, c=1.0,
        steps=max(steps_at), seeds=seeds, record_steps=(0, *steps_at))
    table = summarize_comparison(frame, at_steps=steps_at)
    print(f"\n[1] mean |relative error| over {args.seeds} seeds, drift vs model "
          f"'{frame.attrs['model']}' (lr={args.lr}, sigma2_0=1, c=1; "
          f"{time.perf_counter() - t0:.1f} s)")
    shown = ["weight_decay", "beta", "elements", "projected"]
    shown += [f"sigma2_abs@{s}" for s in steps_at] + [f"update_elr_abs@{s}" for s in steps_at]
    print(table[shown].to_string(index=False, float_format=_fmt))

    t0 = time.perf_counter()
    u_steps, u_fit = (600, 200) if args.quick else (3000, 1000)
    u_elem = 1000 if args.quick else 10000
    growth = pd.concat([
        measure_u_growth((0.0, 0.5, 0.9), elements=u_elem, lr=args.lr, steps=u_steps,
                         fit_start=u_fit, seeds=seeds),
        *(measure_u_growth(0.9, elements=e, layers=8, lr=args.lr, steps=u_steps,
                           fit_start=u_fit, seeds=seeds) for e in (10, 100, 1000)[:2 if
                                                                                  args.quick
                                                                                  else 3]),
        measure_u_growth(0.9, elements=u_elem, lr=args.lr, steps=u_steps, fit_start=u_fit,
                         projected=False, seeds=seeds),
    ], ignore_index=True)
    print(f"\n[2] growth of u = E_update^-2 per step, least squares over steps "
          f"[{u_fit}, {u_steps}) ({time.perf_counter() - t0:.1f} s)")
    print(growth[["beta", "elements", "projected", "series", "measured", "stderr", "predicted",
                  "model_window", "rel_err"]].to_string(index=False, float_format="%.4g"))

    t0 = time.perf_counter()
    eq_elem = 1000 if args.quick else 10000
    equilibrium = pd.concat([
        measure_equilibrium(args.lr, lam, beta, elements=eq_elem, seeds=seeds,
                            window=300 if args.quick else 1000)
        for lam in (5e-4, 5e-3) for beta in (0.0, 0.5, 0.9)
    ], ignore_index=True)
    print(f"\n[3] equilibrium update ELR (drift starts at the model's sigma2*; "
          f"{time.perf_counter() - t0:.1f} s)")
    print(equilibrium[["eta", "lam", "beta", "burn_in", "measured", "stderr", "model_exact",
                       "model_leading", "rel_err_exact", "rel_err_leading", "wd_update_elr",
                       "sigma2_ratio"]].to_string(index=False, float_format="%.5g"))

    out = atomic_write_frame(args.out, table)
    stem = args.out.with_suffix("")
    atomic_write_frame(f"{stem}_u_growth{args.out.suffix}", growth)
    atomic_write_frame(f"{stem}_equilibrium{args.out.suffix}", equilibrium)
    print(f"\nwrote {out}, {stem}_u_growth{args.out.suffix}, {stem}_equilibrium{args.out.suffix}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
