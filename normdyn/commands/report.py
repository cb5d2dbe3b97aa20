"""``normdyn report``: the claims-and-verdicts report.

One row per claim of the paper and per derived claim: the verdict (confirmed, refuted,
partly, not tested), computed in this run from the symbolic checks
(:func:`normdyn.theory.run_claims`) and from the figure CSVs found in ``--out``, the
evidence with its numbers and the command that reproduces it.  Writes
``REPORT.md`` and ``REPORT.json`` into ``--out`` (default ``paper_figures/out``).
"""

from __future__ import annotations

import argparse

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="write REPORT.md/REPORT.json: every claim with its computed verdict",
        description="Compute a verdict for every claim from the symbolic checks and the "
                    "figure CSVs in --out; write REPORT.md and REPORT.json there.")
    p.add_argument("--out", metavar="DIR", default=None,
                   help="directory with the figure CSVs; the report is written there "
                        "(default: paper_figures/out)")
    p.add_argument("--profile", default=None, choices=("quick", "deep", "full", "micro"),
                   help="use the CSVs of this profile (default: the last `normdyn figures` "
                        "run in --out, else the newest CSV per figure)")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--property-tests", action=argparse.BooleanOptionalAction, default=True,
                   help="run the Hypothesis property tests behind the theorem claims as "
                        "extra evidence (about 15 s; default: on)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    from normdyn.figures.runner import default_out_dir
    from normdyn.report import build_report, format_table, write_report

    out = args.out or str(default_out_dir())
    rows = build_report(out, profile=args.profile, property_tests=args.property_tests)
    md, js = write_report(rows, out, profile=args.profile)
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
    else:
        print(format_table(rows))
    print(f"wrote {md} and {js}")
    return 0
