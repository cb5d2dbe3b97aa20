r"""The figure of a :class:`~normdyn.diagnose.core.Diagnosis` (plotting only; nothing measured).

Top: :math:`\log_{10}` ELR of every tracked layer in depth order (bars; dead layers marked
with a cross at the axis floor), with the median over live layers and :math:`E = 1`
(the maximum of the ELR map :math:`F(E) = E/(1+E^2)`; at :math:`\eta^*` the geometric mean
of the extreme ELRs is 1) as reference lines.  Bottom: the one-step lr curve, measured
(max/min and Q95/Q05) against the constant-:math:`c` model, with :math:`\eta^*_{\rm pred}`
and :math:`\eta^*_{\rm meas}` marked.  Legends sit outside the axes, so they never cover
data.  Uses the Agg backend when no display is set (headless safe); the figure is closed
after saving.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["plot_diagnosis", "pyplot"]


def pyplot() -> Any:
    """``matplotlib.pyplot``, with the Agg backend when nothing else was chosen and no display."""
    import os

    import matplotlib

    if not os.environ.get("DISPLAY") and "matplotlib.pyplot" not in __import__("sys").modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_diagnosis(diagnosis: Any, save_to: str | None = None, **savefig_kwargs: Any) -> Any:
    """Draw ``diagnosis``; save to ``save_to`` (then close the figure) and return the Figure."""
    plt = pyplot()
    layers = diagnosis.layers
    tracked = layers[~layers["skipped"]]
    s = diagnosis.summary
    fig, (ax_l, ax_c) = plt.subplots(2, 1, figsize=(8.0, 7.5),
                                     gridspec_kw={"height_ratios": [1, 1.1], "hspace": 0.55})
    live = tracked[~tracked["dead"]]
    log_e = np.log10(live["elr"].to_numpy(dtype=float))
    ax_l.bar(live["layer_id"], log_e, width=0.85, color="tab:blue", label="log10 ELR (live)")
    floor = float(np.nanmin(log_e)) - 0.5 if log_e.size else -1.0
    dead = tracked[tracked["dead"]]
    if len(dead):
        ax_l.plot(dead["layer_id"], np.full(len(dead), floor), "x", color="tab:red",
                  label=f"dead ({len(dead)})")
    median = float(np.median(log_e)) if log_e.size else math.nan
    ax_l.axhline(median, color="k", ls="--", lw=1, label=f"median {10**median:.3g}")
    ax_l.axhline(0.0, color="tab:green", ls=":", lw=1.2, label="E = 1")
    lr_text = f"lr {s['lr']:.3g}" if s["lr"] is not None else f"lr = eta*_pred {s['eta_pred']:.3g}"
    ax_l.set_title(f"per-layer ELR at {lr_text}; spread {s['spread']:.3g} "
                   f"({s['n_tracked']} tracked, {s['n_dead']} dead)", fontsize=10)
    ax_l.set_xlabel("layer (depth order)")
    ax_l.set_ylabel("log10 ELR")
    ax_l.legend(loc="lower left", bbox_to_anchor=(0.0, 1.12), ncol=4, fontsize=8,
                frameon=False, borderaxespad=0.0)

    curve = diagnosis.lr_curve
    ax_c.loglog(curve["lr"], curve["spread_measured"], "o-", ms=4, color="tab:blue",
                label="measured max/min")
    ax_c.loglog(curve["lr"], curve["robust_spread_measured"], ".:", color="tab:cyan",
                label="measured Q95/Q05")
    ax_c.loglog(curve["lr"], curve["spread_model"], "-", color="tab:orange",
                label="model (constant c)")
    ax_c.axvline(s["eta_pred"], color="tab:orange", ls="--", lw=1,
                 label=f"eta*_pred {s['eta_pred']:.3g}")
    if math.isfinite(s["eta_measured"]):
        ax_c.axvline(s["eta_measured"], color="tab:blue", ls="--", lw=1,
                     label=f"eta*_measured {s['eta_measured']:.3g}")
    ax_c.set_xlabel("lr of the one probe step")
    ax_c.set_ylabel("ELR spread after one step")
    ax_c.set_title(f"one-step lr curve ({s['optimizer']})", fontsize=10)
    ax_c.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False,
                borderaxespad=0.0)
    fig.subplots_adjust(right=0.72, top=0.86)
    if save_to is not None:
        fig.savefig(save_to, bbox_inches="tight", **savefig_kwargs)
        plt.close(fig)
    return fig
