"""``normdyn check``: run every symbolic derivation and print one line per claim."""

from __future__ import annotations

import argparse
import json
import sys

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="re-derive every claim in SymPy and report PASS/FAIL",
                       description="Run every symbolic derivation; exit 1 if any claim fails.")
    p.add_argument("--json", action="store_true",
                   help="print a JSON list of claims (name, statement, passed, latex, ...)")
    p.add_argument("--latex", metavar="DIR",
                   help="write derivations.md and derivations.tex into DIR")
    p.add_argument("--only", metavar="NAMES", help="comma-separated claim names to run")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from normdyn.theory import run_claims
    from normdyn.theory.document import write_documents

    names = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    results = run_claims(names)
    if args.json:
        json.dump([r.as_dict() for r in results], sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        width = max(len(r.name) for r in results)
        for r in results:
            verdict = "PASS" if r.passed else "FAIL"
            print(f"{verdict}  {r.name:<{width}}  {r.seconds:6.2f}s  {r.statement}")
            if r.error:
                print(f"      error: {r.error}")
        failed = sum(not r.passed for r in results)
        print(f"{len(results) - failed}/{len(results)} claims passed")
    if args.latex:
        for path in write_documents(results, args.latex):
            print(f"wrote {path}", file=sys.stderr)
    return 0 if all(r.passed for r in results) else 1
