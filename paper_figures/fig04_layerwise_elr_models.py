r"""Figure 4: layerwise simulated ELRs for several lrs, discrete vs continuous model.

The NoShort-like profile of :mod:`paper_figures.fig05_spread_vs_lr` (equal initial
weight norms, base gradients exploding towards the input) is run at several constant
lrs, below and above the critical lr, in the discrete model
(:func:`normdyn.simulate.simulate_discrete`) and in gradient flow
(:func:`normdyn.simulate.continuous_closed_form`).  Each panel shows every layer's ELR
over the steps (log-log).  The discrete ELRs never exceed the continuous ones; the
ratios tend to 1 at every lr (Lemma 3.2, Thm. 3.6), after at most one flip.

CSV columns (one row per model, lr, recorded step and layer)
------------------------------------------------------------
``model``     ``discrete`` or ``continuous``
``lr``        constant learning rate
``step``      step ``t`` (state after ``t`` updates); steps 0..10 and then log-spaced
``layer``     layer index (0 = input side)
``elr``       gradient ELR :math:`E = \eta c/\sigma^2`
``sigma2``    squared weight norm
``spread``    max/min ELR over layers at that step
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

if __package__ in (None, ""):  # run as a file: python paper_figures/figNN_<slug>.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from paper_figures import _common as C  # noqa: E402

FIGURE = "fig04"
SLUG = "layerwise_elr_models"
TITLE = "Layerwise simulated ELR for several learning rates: discrete vs continuous model"
COLUMNS = ("model", "lr", "step", "layer", "elr", "sigma2", "spread")
CONFIGS = {
    "micro": {"depth": 8, "steps": 50, "lrs": [0.01, 1.0], "decades_per_layer": 0.06,
              "n_log_steps": 10},
    "quick": {"depth": 56, "steps": 5000, "lrs": [0.001, 0.02, 0.3, 3.0],
              "decades_per_layer": 0.06, "n_log_steps": 60},
    "deep": {"depth": 110, "steps": 5000, "lrs": [0.001, 0.02, 0.3, 3.0],
             "decades_per_layer": 0.06, "n_log_steps": 60},
    "full": {"depth": 110, "steps": 100000, "lrs": [0.001, 0.01, 0.1, 1.0, 10.0],
             "decades_per_layer": 0.06, "n_log_steps": 120},
}


def output_stem(profile: str) -> str:
    cfg = C.config_for(CONFIGS, profile)
    return C.make_stem(FIGURE, SLUG, f"L{cfg['depth']}_steps{cfg['steps']}", profile)


def recorded_steps(steps: int, n_log: int) -> np.ndarray:
    """Steps 0..10 and ``n_log`` log-spaced steps up to ``steps`` (unique, sorted)."""
    head = np.arange(0, min(steps, 10) + 1)
    tail = np.geomspace(1, steps, n_log).round().astype(np.int64)
    return np.unique(np.concatenate([head, tail, [steps]]))


def _measure(cfg: dict) -> pd.DataFrame:
    from normdyn.simulate import continuous_closed_form, simulate_discrete

    depth, steps = cfg["depth"], cfg["steps"]
    sigma2_0, c = C.explosion_profile(depth, cfg["decades_per_layer"] * (depth - 1))
    lrs = np.asarray(cfg["lrs"], dtype=float)
    keep = recorded_steps(steps, cfg["n_log_steps"])
    disc = simulate_discrete(sigma2_0, c, lrs, steps, record="all", engine="numpy")
    disc = disc[disc["step"].isin(keep)].assign(model="discrete")
    cont = continuous_closed_form(sigma2_0, c, lr=lrs, t=keep.astype(float))
    cont = cont.assign(model="continuous", step=cont["step"].round().astype(np.int64))
    out = pd.concat([disc, cont], ignore_index=True)
    return out[list(COLUMNS)].sort_values(["model", "lr", "step", "layer"],
                                          ignore_index=True)


def measure(profile: str = "quick", cache_dir: str | Path | None = None,
            refresh: bool = False) -> pd.DataFrame:
    """One row per model, lr, step and layer; see the module docstring for the columns."""
    cfg = C.config_for(CONFIGS, profile)
    return C.cached_frame(cache_dir, output_stem(profile), cfg, lambda: _measure(cfg), refresh)


def plot(df: pd.DataFrame, out_dir: str | Path, profile: str) -> list[Path]:
    lrs = sorted(df["lr"].unique())
    all_layers = np.sort(df["layer"].unique())
    shown = np.unique(np.linspace(0, all_layers.size - 1, min(8, all_layers.size)).round())
    layers = all_layers[shown.astype(int)].tolist()
    colors = C.layer_colors(len(layers))
    ncols = min(len(lrs), 4)
    nrows = int(np.ceil(len(lrs) / ncols))
    fig, axes = C.subplots(nrows, ncols, width=3.4, height=3.0, sharey=True)
    for i, lr in enumerate(lrs):
        ax = axes[i // ncols, i % ncols]
        d = df[df["lr"] == lr]
        for model, style in (("discrete", "-"), ("continuous", "--")):
            m = d[d["model"] == model]
            for color, layer in zip(colors, layers, strict=True):
                g = m[m["layer"] == layer]
                ax.plot(g["step"] + 1, g["elr"], ls=style, color=color,
                        lw=1.0 if model == "discrete" else 1.4,
                        alpha=0.9 if model == "discrete" else 0.55)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(rf"$\eta$ = {lr:g}")
        ax.set_xlabel("step + 1")
        if i % ncols == 0:
            ax.set_ylabel(r"ELR $E_\ell$")
    for j in range(len(lrs), nrows * ncols):
        axes[j // ncols, j % ncols].axis("off")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color="k", ls="-", label="discrete"),
               Line2D([], [], color="k", ls="--", label="continuous"),
               Line2D([], [], color=colors[0], label="first layer"),
               Line2D([], [], color=colors[-1], label="last layer")]
    axes[0, 0].legend(handles=handles, loc="lower left")
    C.footnote(fig, profile, f"{len(layers)} of {all_layers.size} layers shown")
    return C.save_figure(fig, out_dir, output_stem(profile))


def main(profile: str = "quick", out_dir: str | Path = C.DEFAULT_OUT,
         refresh: bool = False) -> C.FigureResult:
    return C.run_figure(sys.modules[__name__], profile, out_dir, refresh)


if __name__ == "__main__":
    sys.exit(C.script_main(sys.modules[__name__]))
