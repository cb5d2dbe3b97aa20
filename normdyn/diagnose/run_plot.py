r"""``normdyn.plot_run``: the layer x step picture of any logged run, from its per-layer rows.

Input: a ``normdyn validate`` run directory (its ``steps.csv`` / ``steps.parquet``), a
monitor table saved as CSV or parquet, or the DataFrame of
:meth:`~normdyn.validate.monitor.ELRMonitor.to_dataframe`.  Required columns: ``step``,
``layer``, ``elr``; used when present: ``lr``, ``grad_norm`` (exact zeros are dead),
``skipped``, ``valid``.

Top: a heatmap of :math:`\log_{10} E` with one row per layer in depth order (the order
the layers first appear in the table, which is the monitor's module order) and one
column per step; the colour scale is centred on the median :math:`\log_{10} E`
(``center="median"``) or on :math:`\log_{10} E = 0` (``center="critical"``: at
:math:`\eta^*` the geometric mean of the extreme ELRs is 1).  Below: the spread over the
live layers per step (max/min and Q95/Q05, :func:`normdyn._spread.spread_table`) and the
lr.  Skipped steps are marked in grey, non-finite ones (``valid`` false or a non-finite
ELR) in red.  More than :data:`MAX_LAYERS` layers or :data:`MAX_STEPS` steps are
downsampled (every k-th), and the title says so.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from normdyn._spread import spread_table
from normdyn.diagnose.plot import pyplot

__all__ = ["plot_run", "read_run_table", "MAX_LAYERS", "MAX_STEPS"]

MAX_LAYERS = 300
MAX_STEPS = 10_000
_REQUIRED = ("step", "layer", "elr")


def read_run_table(source: Any) -> pd.DataFrame:
    """The per-layer table of ``source`` (run directory, CSV/parquet file or DataFrame)."""
    if isinstance(source, pd.DataFrame):
        frame = source
    else:
        path = Path(source)
        if path.is_dir():
            from normdyn.validate.checkpoint import steps_path

            path = steps_path(path)
        if not path.is_file():
            raise FileNotFoundError(f"RUN: no such run directory or file {str(source)!r}")
        if path.suffix == ".parquet":
            frame = pd.read_parquet(path)
        elif path.suffix == ".csv":
            frame = pd.read_csv(path)
        else:
            raise ValueError(f"RUN: expected a run directory, .csv or .parquet, got {path.name!r}")
    missing = [c for c in _REQUIRED if c not in frame.columns]
    if missing:
        raise ValueError(f"RUN: the table lacks columns {missing} (needs step, layer, elr per "
                         "row, as ELRMonitor.to_dataframe() and normdyn validate write)")
    if frame.empty:
        raise ValueError("RUN: the table has no rows")
    return frame


def _every(n: int, limit: int) -> int:
    return max(1, math.ceil(n / limit))


def plot_run(source: Any, *, layers: str | None = None, every: int = 1,
             center: str = "median", save_to: str | None = None,
             **savefig_kwargs: Any) -> Any:
    """Heatmap of log10 ELR (layer x step), spread and lr below; returns the Figure.

    ``layers`` is a regular expression selecting layers (``re.search``); ``every`` keeps
    every N-th step; ``center`` is ``"median"`` or ``"critical"`` (see the module
    docstring).  With ``save_to`` the figure is saved and closed.
    """
    if center not in ("median", "critical"):
        raise ValueError(f"center must be 'median' or 'critical', got {center!r}")
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise ValueError(f"every must be a positive integer, got {every!r}")
    frame = read_run_table(source)
    names = list(dict.fromkeys(frame["layer"].astype(str)))
    if layers is not None:
        try:
            pattern = re.compile(layers)
        except re.error as exc:
            raise ValueError(f"layers: not a regular expression {layers!r} ({exc})") from None
        names = [n for n in names if pattern.search(n)]
        if not names:
            raise ValueError(f"layers: {layers!r} matches none of the run's layers")
    frame = frame[frame["layer"].astype(str).isin(names)]
    steps = np.sort(frame["step"].unique())[::every]
    notes = []
    step_k, layer_k = _every(len(steps), MAX_STEPS), _every(len(names), MAX_LAYERS)
    if step_k > 1:
        steps = steps[::step_k]
        notes.append(f"1 in {step_k * every} steps")
    elif every > 1:
        notes.append(f"1 in {every} steps")
    if layer_k > 1:
        names = names[::layer_k]
        notes.append(f"1 in {layer_k} layers")
    frame = frame[frame["step"].isin(steps) & frame["layer"].astype(str).isin(names)]
    frame = frame.assign(layer=frame["layer"].astype(str))

    grid = frame.pivot_table(index="layer", columns="step", values="elr", aggfunc="first",
                             dropna=False).reindex(index=names, columns=steps)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_e = np.log10(grid.to_numpy(dtype=float))
    log_e[~np.isfinite(log_e)] = np.nan
    per_step = frame.groupby("step", sort=True)
    bad = per_step["elr"].apply(lambda e: not np.all(np.isfinite(e.to_numpy(dtype=float))))
    if "valid" in frame.columns:
        bad = bad | ~per_step["valid"].all().astype(bool)
    skipped = per_step["skipped"].any().astype(bool) if "skipped" in frame.columns else \
        pd.Series(False, index=bad.index)
    good = frame[frame["step"].isin(bad.index[~bad & ~skipped])]
    spreads = spread_table(good, ["step"], grad_norm="grad_norm" if "grad_norm" in frame
                           else None) if len(good) else None

    plt = pyplot()
    from matplotlib.colors import TwoSlopeNorm

    fig, (ax_h, ax_s) = plt.subplots(2, 1, figsize=(9.0, 7.5), sharex=False,
                                     gridspec_kw={"height_ratios": [2.2, 1], "hspace": 0.35})
    finite = log_e[np.isfinite(log_e)]
    mid = float(np.median(finite)) if center == "median" and finite.size else 0.0
    lo = float(finite.min()) if finite.size else mid - 1
    hi = float(finite.max()) if finite.size else mid + 1
    lo, hi = min(lo, mid - 1e-6), max(hi, mid + 1e-6)
    image = ax_h.imshow(log_e, aspect="auto", interpolation="nearest", cmap="RdBu_r",
                        norm=TwoSlopeNorm(vcenter=mid, vmin=lo, vmax=hi),
                        extent=(float(steps[0]) - 0.5, float(steps[-1]) + 0.5,
                                len(names) - 0.5, -0.5))
    cbar = fig.colorbar(image, ax=ax_h, pad=0.02)
    cbar.set_label(f"log10 ELR (centre {'median ' if center == 'median' else 'E = 1 '}"
                   f"{mid:.2f})")
    ax_h.set_ylabel(f"layer (depth order, {len(names)})")
    ax_h.set_xlabel("step")
    title = "log10 ELR per layer and step"
    if notes:
        title += " (downsampled: " + ", ".join(notes) + ")"
    ax_h.set_title(title, fontsize=10)

    if spreads is not None:
        ax_s.semilogy(spreads["step"], spreads["spread"], "-", color="tab:blue",
                      label="spread max/min")
        ax_s.semilogy(spreads["step"], spreads["robust_spread"], "--", color="tab:cyan",
                      label="spread Q95/Q05")
    for step in bad.index[bad]:
        ax_s.axvline(step, color="tab:red", lw=0.8, alpha=0.6)
    for step in skipped.index[skipped & ~bad]:
        ax_s.axvline(step, color="0.6", lw=0.8, alpha=0.6)
    if bad.any():
        ax_s.plot([], [], color="tab:red", label=f"non-finite ({int(bad.sum())})")
    if skipped.any():
        ax_s.plot([], [], color="0.6", label=f"skipped ({int(skipped.sum())})")
    ax_s.set_xlabel("step")
    ax_s.set_ylabel("ELR spread")
    ax_s.set_xlim(float(steps[0]) - 0.5, float(steps[-1]) + 0.5)
    handles, labels = ax_s.get_legend_handles_labels()
    if "lr" in frame.columns:
        ax_lr = ax_s.twinx()
        lr = per_step["lr"].first()
        ax_lr.plot(lr.index, lr.to_numpy(dtype=float), ":", color="tab:orange", label="lr")
        ax_lr.set_ylabel("lr")
        more_h, more_l = ax_lr.get_legend_handles_labels()
        handles, labels = handles + more_h, labels + more_l
    ax_s.legend(handles, labels, loc="upper left", bbox_to_anchor=(0.0, -0.32), ncol=5,
                fontsize=8, frameon=False, borderaxespad=0.0)
    if save_to is not None:
        fig.savefig(save_to, bbox_inches="tight", **savefig_kwargs)
        plt.close(fig)
    return fig
