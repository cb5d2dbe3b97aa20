r"""Figure 7: trainability vs ELR spread -- final accuracy against spread, Short and NoShort.

ResNets with (``Short``) and without (``NoShort``) residual shortcuts are trained over a
grid of depths and constant lrs (:func:`normdyn.validate.runs.run_training`).  For each
run the ELR spread over training (geometric mean over the steps of
:math:`\max_\ell E_\ell/\min_\ell E_\ell` over the live layers,
:func:`normdyn._spread.spread_max_min`) is set against the final test accuracy (after
recalibrating the BatchNorm statistics).  The paper links high spread with poor
trainability, most of all in deep NoShort nets.  The right panel shows the graded
statistic (the within-(depth, lr) rank correlation of log spread with accuracy) with its
bootstrap interval and the report's threshold.

CSV columns (one row per run)
-----------------------------
``shortcuts``       1 for Short, 0 for NoShort
``depth``           ResNet depth (6n+2)
``lr``              constant learning rate
``seed``            seed of the run
``steps``           number of training steps
``spread_init``     live ELR spread at step 0
``spread_mean``     geometric-mean live ELR spread over all recorded steps
``spread_max``      largest live ELR spread over the steps
``final_accuracy``  ``test_accuracy`` (chance level if the run diverged)
``final_loss``      mean training loss over the last tenth of the steps
``diverged``        1 if the run stopped on a non-finite loss or norm
``test_accuracy``   eval-mode test accuracy after recalibrating the BatchNorm statistics
                    (NaN where the run records none; chance if the run diverged)
``test_accuracy_batch_stats``   the same weights with batch statistics (train-mode BN)
``test_accuracy_uncalibrated``  eval mode with the running statistics as trained
``train_loss_first``  mean training loss over the first ``max(1, steps // 10)`` steps
``train_loss_last``   mean training loss over the last ``max(1, steps // 10)`` steps
``dead_layers_init``  layers with a zero gradient or vanishing ELR at step 0
``robust_spread_init``  Q0.95/Q0.05 of the live layers' ELRs at step 0
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
           "spread_max", "final_accuracy", "final_loss", "diverged", "test_accuracy",
           "test_accuracy_batch_stats", "test_accuracy_uncalibrated", "train_loss_first",
           "train_loss_last", "dead_layers_init", "robust_spread_init")
ACCURACIES = ("test_accuracy", "test_accuracy_batch_stats", "test_accuracy_uncalibrated")
CHANCE = {"digits": 0.1, "fashion-mnist": 0.1, "cifar10": 0.1, "cifar100": 0.01,
          "synthetic": 0.1}
CONFIGS = {
    "micro": {"depths": [8], "lrs": [0.1, 1.0, 3.0], "width": 4, "data": "digits",
              "batch_size": 32, "steps": 4, "momentum": 0.0, "seeds": [0]},
    "quick": {"depths": [8, 20, 38], "lrs": [0.03, 0.3, 3.0], "width": 4, "data": "digits",
              "batch_size": 64, "steps": 120, "momentum": 0.0, "seeds": [0, 1, 2]},
    "deep": {"depths": [56, 110], "lrs": [0.02, 0.2, 2.0], "width": 8,
             "data": "fashion-mnist", "image_size": 14, "batch_size": 64, "steps": 1000,
             "momentum": 0.9, "seeds": [0, 1, 2, 3, 4]},
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
                  checkpoint_every=10**9, sync_every=min(cfg["steps"], 200),
                  **C.image_size_kwargs(cfg)))
            for seed in cfg["seeds"] for shortcuts in (False, True)
            for depth in cfg["depths"] for lr in cfg["lrs"]]


def plan(profile: str) -> list[dict]:
    """The training runs of ``profile`` (:func:`paper_figures._common.train_run` kwargs)."""
    return [kw for _, kw in _specs(C.config_for(CONFIGS, profile), profile)]


def _loss_window(metrics: pd.DataFrame, steps: int, last: bool) -> float:
    """Mean training loss over the first/last ``max(1, steps // 10)`` recorded steps."""
    if not len(metrics):
        return float("nan")
    k = max(1, steps // 10)
    loss = metrics.sort_values("step")["loss"]
    return float((loss.tail(k) if last else loss.head(k)).mean())


def _row(cfg: dict, labels: dict, table: pd.DataFrame, metrics: pd.DataFrame,
         meta: dict) -> dict:
    per_step = C.live_spreads(table)
    spread = per_step["spread"].to_numpy(dtype=np.float64)
    spread = spread[np.isfinite(spread)]
    diverged = meta.get("status") == "diverged"
    chance = CHANCE.get(cfg["data"], np.nan)
    acc = {k: (chance if diverged else float(meta.get(k, np.nan))) for k in ACCURACIES}
    tail = max(1, len(metrics) // 10)
    first = per_step.iloc[0] if len(per_step) else None
    return {
        "shortcuts": int(labels["shortcuts"]), "depth": labels["depth"], "lr": labels["lr"],
        "seed": labels["seed"], "steps": cfg["steps"],
        "spread_init": float(first["spread"]) if first is not None else np.nan,
        "spread_mean": float(np.exp(np.log(spread).mean())) if spread.size else np.nan,
        "spread_max": float(spread.max()) if spread.size else np.nan,
        "final_accuracy": acc["test_accuracy"],
        "final_loss": float(metrics["loss"].tail(tail).mean()) if len(metrics) else np.nan,
        "diverged": int(diverged),
        **acc,
        "train_loss_first": float(meta.get("train_loss_first",
                                           _loss_window(metrics, cfg["steps"], False))),
        "train_loss_last": float(meta.get("train_loss_last",
                                          _loss_window(metrics, cfg["steps"], True))),
        "dead_layers_init": int(first["dead_layers"]) if first is not None else 0,
        "robust_spread_init": float(first["robust_spread"]) if first is not None else np.nan,
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


def _cell_rank_rho(x: np.ndarray, y: np.ndarray, cells: np.ndarray) -> float:
    """Pearson correlation of the within-cell centred ranks of ``x`` and ``y``, pooled."""
    from scipy.stats import rankdata

    rx, ry = np.empty(len(x)), np.empty(len(y))
    for c in np.unique(cells):
        i = np.flatnonzero(cells == c)
        rx[i] = rankdata(x[i]) - rankdata(x[i]).mean()
        ry[i] = rankdata(y[i]) - rankdata(y[i]).mean()
    den = np.sqrt((rx**2).sum() * (ry**2).sum())
    return float((rx * ry).sum() / den) if den > 0 else float("nan")


def trainability_rho(df: pd.DataFrame, n_boot: int = 1000,
                     seed: int = 0) -> tuple[float, float, float]:
    """Within-(depth, lr) rank correlation of log ``spread_mean`` with ``final_accuracy``.

    ``(estimate, low, high)`` with a 95% percentile bootstrap over the runs, resampled
    within each cell (the statistic the report grades; drawn here, graded there).
    """
    d = df[np.isfinite(df["spread_mean"]) & (df["spread_mean"] > 0)]
    if len(d) < 3:
        return (float("nan"),) * 3
    x = np.log(d["spread_mean"].to_numpy(dtype=np.float64))
    y = d["final_accuracy"].to_numpy(dtype=np.float64)
    cells = (d["depth"].astype(str) + "|" + d["lr"].astype(str)).to_numpy()
    est = _cell_rank_rho(x, y, cells)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(cells == c) for c in np.unique(cells)]
    boots = []
    for _ in range(n_boot):
        i = np.concatenate([rng.choice(g, g.size) for g in groups])
        boots.append(_cell_rank_rho(x[i], y[i], cells[i]))
    boots = np.asarray(boots)
    boots = boots[np.isfinite(boots)]
    if boots.size == 0:
        return est, float("nan"), float("nan")
    low, high = np.quantile(boots, [0.025, 0.975])
    return est, float(low), float(high)


def plot(df: pd.DataFrame, out_dir: str | Path, profile: str) -> list[Path]:
    fig, axes = C.subplots(1, 3, width=3.9, height=3.6)
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
    C.quiet_log_ticks(ax, "x")
    ax.set_xlabel("geometric-mean live ELR spread over training")
    ax.set_ylabel("final test accuracy (recalibrated BN)")
    ax.set_title("accuracy vs spread (marker size: lr)")
    C.legend_outside(ax, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
    ax = axes[0, 1]
    for shortcuts, ls in ((0, "-"), (1, "--")):
        for depth in depths:
            e = df[(df["shortcuts"] == shortcuts) & (df["depth"] == depth)]
            stats = [C.seed_interval(g["final_accuracy"]) for _, g in e.groupby("lr")]
            x = sorted(e["lr"].unique())
            mean = np.array([s[0] for s in stats])
            err = np.array([[s[0] - s[1] for s in stats], [s[2] - s[0] for s in stats]])
            ax.errorbar(x, mean, yerr=err, ls=ls, marker="o", ms=3, capsize=2,
                        color=colors[depth],
                        label=f"{'Short' if shortcuts else 'NoShort'}-{depth}")
    C.log_lr_axis(ax)
    C.quiet_log_ticks(ax, "x")
    ax.set_xticks(lrs)
    ax.set_xticklabels([f"{v:g}" for v in lrs])
    ax.set_ylabel("final test accuracy")
    ax.set_title("accuracy vs lr (mean, 95% seed interval)\nsolid: NoShort, dashed: Short",
                 fontsize=9)
    C.legend_outside(ax, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3)
    ax = axes[0, 2]
    confirm = C.threshold("TRAIN_CONFIRM", -0.3)
    null = C.threshold("TRAIN_NULL", 0.0)
    ax.axhspan(-1.0, confirm, color="tab:green", alpha=0.15, lw=0,
               label=f"confirm: interval <= {confirm:g}")
    ax.axhline(null, color="crimson", ls="--", lw=0.8, label=f"null {null:g}")
    groups = (("all", df), ("NoShort", df[df["shortcuts"] == 0]),
              ("Short", df[df["shortcuts"] == 1]))
    for i, (_, d) in enumerate(groups):
        est, low, high = trainability_rho(d)
        if np.isfinite(est):
            ax.errorbar([i], [est], yerr=[[est - low], [high - est]] if np.isfinite(low)
                        else None, fmt="o", color="k", capsize=3)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([g[0] for g in groups])
    ax.set_xlim(-0.5, len(groups) - 0.5)
    ax.set_ylim(-1.05, 1.05)
    ax.set_ylabel("within-(depth, lr) rank corr.")
    ax.set_title("log spread vs accuracy (95% bootstrap)")
    C.legend_outside(ax, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1)
    C.footnote(fig, profile, "spreads over live layers; accuracy after BN recalibration "
               "where the run records it")
    return C.save_figure(fig, out_dir, output_stem(profile))


def main(profile: str = "quick", out_dir: str | Path = C.DEFAULT_OUT,
         refresh: bool = False) -> C.FigureResult:
    return C.run_figure(sys.modules[__name__], profile, out_dir, refresh)


if __name__ == "__main__":
    sys.exit(C.script_main(sys.modules[__name__]))
