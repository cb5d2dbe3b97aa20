r"""Figure 7: trainability vs ELR spread -- final accuracy against spread, Short and NoShort.

ResNets with (``Short``) and without (``NoShort``) residual shortcuts are trained over a
grid of depths and constant lrs (:func:`normdyn.validate.runs.run_training`).  For each
run the ELR spread over training (geometric mean over the steps of
:math:`\max_\ell E_\ell/\min_\ell E_\ell`) is set against the final test accuracy.  The
paper links high spread with poor trainability, most of all in deep NoShort nets.

CSV columns (one row per run)
-----------------------------
``shortcuts``       1 for Short, 0 for NoShort
``depth``           ResNet depth (6n+2)
``lr``              constant learning rate
``seed``            seed of the run
``steps``           number of training steps
``spread_init``     ELR spread at step 0
``spread_mean``     geometric-mean ELR spread over all recorded steps
``spread_max``      largest ELR spread over the steps
``final_accuracy``  test accuracy at the end (chance level if the run diverged)
``final_loss``      mean training loss over the last tenth of the steps
``diverged``        1 if the run stopped on a non-finite loss or norm
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

if __package__ in (None, ""):  # run as a file: python paper_figures/figNN_<slug>.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from paper_figures import _common as C  # noqa: E402

FIGURE = "fig07"
SLUG = "trainability_vs_spread"
TITLE = "Trainability vs ELR spread: final accuracy vs spread for Short and NoShort"
COLUMNS = ("shortcuts", "depth", "lr", "seed", "steps", "spread_init", "spread_mean",
           "spread_max", "final_accuracy", "final_loss", "diverged")
CHANCE = {"digits": 0.1, "cifar10": 0.1, "cifar100": 0.01, "synthetic": 0.1}
CONFIGS = {
    "micro": {"depths": [8], "lrs": [0.1, 3.0], "width": 4, "data": "digits",
              "batch_size": 32, "steps": 4, "momentum": 0.0, "seeds": [0]},
    "quick": {"depths": [8, 20, 38], "lrs": [0.03, 0.3, 3.0], "width": 4, "data": "digits",
              "batch_size": 64, "steps": 120, "momentum": 0.0, "seeds": [0, 1, 2]},
    "deep": {"depths": [56, 110], "lrs": [0.05, 0.5], "width": 16, "data": "digits",
             "batch_size": 64, "steps": 1000, "momentum": 0.9, "seeds": [0, 1, 2]},
    "full": {"depths": [20, 56, 110], "lrs": [0.01, 0.03, 0.1, 0.3, 1.0, 3.0], "width": 16,
             "data": "cifar10", "batch_size": 128, "steps": 5000, "momentum": 0.9,
             "seeds": [0, 1, 2]},
}


def output_stem(profile: str) -> str:
    cfg = C.config_for(CONFIGS, profile)
    depths = "-".join(str(d) for d in cfg["depths"])
    return C.make_stem(FIGURE, SLUG, f"L{depths}_{cfg['data']}_steps{cfg['steps']}", profile)


def _specs(cfg: dict, profile: str) -> list[tuple[dict, dict]]:
    device = C.run_device(profile)
    return [({"seed": seed, "shortcuts": shortcuts, "depth": depth, "lr": float(lr)},
             dict(arch="resnet", depth=depth, shortcuts=shortcuts, width=cfg["width"],
                  data=C.resolve_data(cfg["data"]), steps=cfg["steps"], batch_size=cfg["batch_size"],
                  lr=float(lr), momentum=cfg["momentum"], seed=seed, device=device,
                  checkpoint_every=10**9, sync_every=min(cfg["steps"], 200)))
            for seed in cfg["seeds"] for shortcuts in (False, True)
            for depth in cfg["depths"] for lr in cfg["lrs"]]


def plan(profile: str) -> list[dict]:
    """The training runs of ``profile`` (:func:`paper_figures._common.train_run` kwargs)."""
    return [kw for _, kw in _specs(C.config_for(CONFIGS, profile), profile)]


def _row(cfg: dict, labels: dict, table: pd.DataFrame, metrics: pd.DataFrame,
         meta: dict) -> dict:
    g = table[(table["elr"] > 0) & np.isfinite(table["elr"])].groupby("step")["elr"]
    spread = (g.max() / g.min()).to_numpy()
    diverged = meta.get("status") == "diverged"
    tail = max(1, len(metrics) // 10)
    return {
        "shortcuts": int(labels["shortcuts"]), "depth": labels["depth"], "lr": labels["lr"],
        "seed": labels["seed"], "steps": cfg["steps"],
        "spread_init": float(spread[0]) if spread.size else np.nan,
        "spread_mean": float(np.exp(np.log(spread).mean())) if spread.size else np.nan,
        "spread_max": float(spread.max()) if spread.size else np.nan,
        "final_accuracy": (CHANCE.get(cfg["data"], np.nan) if diverged
                           else float(meta.get("test_accuracy", np.nan))),
        "final_loss": float(metrics["loss"].tail(tail).mean()) if len(metrics) else np.nan,
        "diverged": int(diverged),
    }


def _measure(cfg: dict, cache_dir, refresh: bool, profile: str) -> pd.DataFrame:
    C.torch_setup(profile)
    rows = [_row(cfg, labels, *C.train_run(cache_dir, refresh, **kwargs))
            for labels, kwargs in _specs(cfg, profile)]
    return pd.DataFrame(rows)


def measure(profile: str = "quick", cache_dir: str | Path | None = None,
            refresh: bool = False) -> pd.DataFrame:
    """One row per run; see the module docstring for the columns."""
    cfg = C.config_for(CONFIGS, profile)
    return C.cached_frame(cache_dir, output_stem(profile), cfg,
                          lambda: _measure(cfg, cache_dir, refresh, profile), refresh)


def plot(df: pd.DataFrame, out_dir: str | Path, profile: str) -> list[Path]:
    fig, axes = C.subplots(1, 2, width=4.2, height=3.4)
    depths = sorted(df["depth"].unique())
    colors = dict(zip(depths, C.layer_colors(len(depths), "plasma"), strict=True))
    lrs = sorted(df["lr"].unique())
    sizes = dict(zip(lrs, np.linspace(20, 90, len(lrs)), strict=True))
    ax = axes[0, 0]
    for shortcuts, marker in ((0, "o"), (1, "^")):
        d = df[df["shortcuts"] == shortcuts]
        for depth in depths:
            e = d[d["depth"] == depth]
            ax.scatter(e["spread_mean"], e["final_accuracy"], s=[sizes[v] for v in e["lr"]],
                       color=colors[depth], marker=marker, edgecolor="k", lw=0.4,
                       label=f"{'Short' if shortcuts else 'NoShort'}-{depth}")
    ax.set_xscale("log")
    ax.set_xlabel("geometric-mean ELR spread over training")
    ax.set_ylabel("final test accuracy")
    ax.set_title("accuracy vs spread (marker size: lr)")
    ax.legend(ncol=2, loc="lower left")
    ax = axes[0, 1]
    for shortcuts, ls in ((0, "-"), (1, "--")):
        for depth in depths:
            e = df[(df["shortcuts"] == shortcuts) & (df["depth"] == depth)]
            e = e.groupby("lr")["final_accuracy"].mean()
            ax.plot(e.index, e.values, ls=ls, marker="o", ms=3, color=colors[depth],
                    label=f"{'Short' if shortcuts else 'NoShort'}-{depth}")
    C.log_lr_axis(ax)
    ax.set_ylabel("final test accuracy")
    ax.set_title("accuracy vs lr")
    from normdyn.measured import within_cell_spearman

    d = df[np.isfinite(df["spread_mean"]) & (df["spread_mean"] > 0)]
    cells = (d["depth"].astype(str) + "|" + d["lr"].astype(str)).to_numpy()
    rho = within_cell_spearman(np.log(d["spread_mean"].to_numpy()),
                               d["final_accuracy"].to_numpy(), cells)
    C.footnote(fig, profile, f"within-(depth, lr) Spearman(log spread, accuracy) = {rho:.2f}")
    return C.save_figure(fig, out_dir, output_stem(profile))


def main(profile: str = "quick", out_dir: str | Path = C.DEFAULT_OUT,
         refresh: bool = False) -> C.FigureResult:
    return C.run_figure(sys.modules[__name__], profile, out_dir, refresh)


if __name__ == "__main__":
    sys.exit(C.script_main(sys.modules[__name__]))
