"""``normdyn plot RUN``: the layer x step log10 ELR heatmap of a logged run.

RUN is a ``normdyn validate`` run directory (``steps.csv``/``steps.parquet``) or a monitor
table (CSV or parquet, :meth:`~normdyn.validate.monitor.ELRMonitor.save`); see
:func:`normdyn.diagnose.run_plot.plot_run`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="layer x step ELR heatmap of a run or monitor table",
                       description="Draw log10 ELR per layer and step, the spread and the lr "
                                   "of a normdyn validate run or a monitor CSV/parquet.")
    p.add_argument("run_path", metavar="RUN", help="run directory, or monitor .csv/.parquet")
    p.add_argument("--layers", metavar="REGEX", help="only layers matching REGEX (re.search)")
    p.add_argument("--every", type=int, default=1, metavar="N", help="every N-th step")
    p.add_argument("--center", choices=("median", "critical"), default="median",
                   help="colour centre: the median log10 ELR or log10 ELR = 0 (at eta*)")
    p.add_argument("--out", metavar="FILE", help="output .png or .pdf (default RUN/elr_heatmap.png "
                                                 "for a directory, else FILE.png beside it)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from normdyn.diagnose.run_plot import plot_run

    source = Path(args.run_path)
    if args.out:
        out = Path(args.out)
        if out.suffix not in (".png", ".pdf"):
            raise ValueError(f"--out: expected a .png or .pdf file, got {args.out!r}")
    else:
        out = source / "elr_heatmap.png" if source.is_dir() else source.with_suffix(".png")
    plot_run(source, layers=args.layers, every=args.every, center=args.center,
             save_to=str(out), dpi=110)
    print(f"wrote {out}", file=sys.stderr)
    return 0
