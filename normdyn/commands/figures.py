"""``normdyn figures``: regenerate the paper figures, then write the claims report.

Runs every ``paper_figures/figNN_*.py`` (or those named by ``--only``) with the chosen
profile, shows progress and each figure's runtime, writes PNG + PDF + CSV per figure into
``--out`` (default ``paper_figures/out``), then runs ``normdyn report`` on that directory.
A figure whose dependency is missing or broken is recorded as failed and the others
still run; the exit code is 1 if any figure failed.
"""

from __future__ import annotations

import argparse
import time

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "figures", help="regenerate the paper figures (PNG/PDF/CSV) and the claims report",
        description="Run the paper-figure scripts (measure, cache, plot) and then write "
                    "REPORT.md / REPORT.json; exit 1 if any figure failed.")
    p.add_argument("--profile", default="quick", choices=("quick", "deep", "full", "micro"),
                   help="quick: CPU, minutes (default); deep: ResNet-56/110 on CPU, about "
                        "90 min, resumable; full: paper settings, GPU; micro: seconds, "
                        "smoke test only")
    p.add_argument("--launcher", default="inprocess", choices=("inprocess", "local",
                                                               "submitit"),
                   help="train the planned runs first in --jobs local processes or as "
                        "submitit jobs (Slurm, or local without Slurm); the tables are "
                        "identical to the in-process run (default: inprocess)")
    p.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="runs trained at a time by the launcher (default: 1)")
    p.add_argument("--dry-run", action="store_true",
                   help="list the planned runs with their steps and estimated GPU time; "
                        "train nothing")
    p.add_argument("--only", metavar="FIGS", default=None,
                   help="comma-separated figures to run, e.g. fig01,fig05 (default: all)")
    p.add_argument("--refresh", action="store_true",
                   help="re-measure instead of reusing the cache under OUT/cache")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="output directory (default: paper_figures/out)")
    p.add_argument("--no-report", action="store_true", help="do not write the report")
    p.add_argument("--property-tests", action=argparse.BooleanOptionalAction, default=True,
                   help="run the Hypothesis property tests behind the theorem claims as "
                        "extra evidence (about 15 s; default: on)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _dry_run(args: argparse.Namespace, out: str) -> int:
    from normdyn.figures.runner import plan_figures

    frame, inprocess = plan_figures(args.profile, out, only=args.only)
    if frame.empty:
        print(f"profile {args.profile}: no planned training runs")
    else:
        import pandas as pd

        with pd.option_context("display.max_rows", None, "display.width", 160):
            print(frame.drop(columns=["key"]).to_string(index=False))
        todo = frame[~frame["cached"]]
        print(f"profile {args.profile}: {len(frame)} runs ({len(todo)} not cached), "
              f"{int(frame['steps'].sum())} steps; estimated {todo['gpu_seconds'].sum() / 60:.1f}"
              f" GPU minutes or {todo['cpu_seconds'].sum() / 3600:.1f} CPU hours for the runs "
              "not cached (rough cost model, see normdyn.figures.launch)")
    if inprocess:
        print("measured in process only (simulations, one-step sweeps): "
              + ", ".join(inprocess))
    return 0


def run(args: argparse.Namespace) -> int:
    from normdyn.figures.runner import default_out_dir, run_figures

    if args.jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {args.jobs}")
    out = args.out or str(default_out_dir())
    if args.dry_run:
        return _dry_run(args, out)
    start = time.perf_counter()
    entries = run_figures(args.profile, out, only=args.only, refresh=args.refresh,
                          progress=not args.no_progress, launcher=args.launcher,
                          jobs=args.jobs)
    total = time.perf_counter() - start
    failed = [e for e in entries if e["status"] != "ok"]
    print(f"{len(entries) - len(failed)}/{len(entries)} figures ok in {total:.1f}s "
          f"(profile {args.profile}) -> {out}")
    for entry in failed:
        print(f"FAILED {entry['figure']}: {entry['error']}")
    if not args.no_report:
        from normdyn.report import build_report, format_table, write_report

        rows = build_report(out, profile=args.profile, property_tests=args.property_tests)
        md, js = write_report(rows, out, profile=args.profile)
        print(format_table(rows))
        print(f"wrote {md} and {js}")
    return 1 if failed else 0
