"""The ``normdyn`` command line: ``check | simulate | validate | figures | report | diagnose | plot``.

Bad input (a ``ValueError`` naming the parameter, a missing file, an allocation beyond
memory) is printed as one line on stderr with exit code 2 and no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

__all__ = ["main", "build_parser"]

COMMANDS = ("check", "simulate", "validate", "figures", "report", "diagnose", "plot")


def build_parser() -> argparse.ArgumentParser:
    from normdyn import __version__

    parser = argparse.ArgumentParser(
        prog="normdyn",
        description="Weight dynamics of deep normalized networks: derive, simulate, measure.",
    )
    parser.add_argument("--version", action="version", version=f"normdyn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"normdyn.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"normdyn.commands.{name}":
                raise
            continue
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"normdyn {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except MemoryError as exc:  # a size that passed validation but not the allocator
        print(f"normdyn {args.command}: error: out of memory: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # stdout closed early, e.g. `normdyn ... --json | head`
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print(f"normdyn {args.command}: interrupted; results written so far are kept",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
