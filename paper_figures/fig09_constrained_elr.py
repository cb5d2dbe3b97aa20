r"""Figure 9: constrained-ELR training vs plain SGD at high learning rates.

A ResNet NoShort is trained with ``torch.optim.SGD(lr, momentum, weight_decay)`` and with
the same optimizer wrapped in :class:`normdyn.optim.ConstrainedELR` (every
scale-invariant layer turns by the fixed angle ``arctan(target_elr)`` per step, a target
that does not depend on the lr), over a grid of lrs reaching far above the usual range
(:func:`normdyn.validate.runs.run_training` with ``constrained_elr``).  The lr is that
of the scale-invariant weights; the other parameters (BatchNorm affine, classifier) use
``min(lr, lr_other)`` in both methods (``other_lr``), so that the comparison isolates the layers the ELR theory is about
(with one lr for everything, the unconstrained classifier and affine parameters break
both methods alike at lr >= 10).  The ELRs are recorded with
:class:`normdyn.validate.monitor.ELRMonitor`.  The paper says the constraint stabilizes
otherwise unstable (high-lr) regimes.

CSV columns (one row per method, lr, seed and step)
---------------------------------------------------
``method``         ``sgd`` or ``constrained``
``lr``             learning rate
``seed``           seed
``step``           optimizer step
``loss``           training-batch loss
``accuracy``       training-batch accuracy
``spread``         max/min update ELR over the layers at the step
``test_accuracy``  test accuracy at the end of the run (0 if it diverged)
``diverged``       1 if the run stopped on a non-finite loss or norm
``target_elr``     constrained target ELR (NaN for SGD); the same at every lr
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

if __package__ in (None, ""):  # run as a file: python paper_figures/figNN_<slug>.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from paper_figures import _common as C  # noqa: E402

FIGURE = "fig09"
SLUG = "constrained_elr"
TITLE = "Constrained ELR vs plain SGD at high learning rates"
COLUMNS = ("method", "lr", "seed", "step", "loss", "accuracy", "spread", "test_accuracy",
           "diverged", "target_elr")
CONFIGS = {
    "micro": {"depth": 8, "width": 4, "data": "digits", "batch_size": 32, "steps": 4,
              "lrs": [0.1, 10.0], "momentum": 0.9, "weight_decay": 5e-4, "lr_other": 0.1,
              "target_elr": 0.02, "seeds": [0]},
    "quick": {"depth": 20, "width": 8, "data": "digits", "batch_size": 64, "steps": 160,
              "lrs": [0.1, 1.0, 10.0, 100.0], "momentum": 0.9, "weight_decay": 5e-4,
              "lr_other": 0.1, "target_elr": 0.02, "seeds": [0, 1, 2]},
    "deep": {"depth": 56, "width": 16, "data": "digits", "batch_size": 64, "steps": 1000,
             "lrs": [0.1, 1.0, 10.0], "momentum": 0.9, "weight_decay": 5e-4,
             "lr_other": 0.1, "target_elr": 0.02, "seeds": [0, 1, 2]},
    "full": {"depth": 56, "width": 16, "data": "cifar10", "batch_size": 128, "steps": 10000,
             "lrs": [0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0], "momentum": 0.9,
             "weight_decay": 5e-4, "lr_other": 0.1, "target_elr": 0.02, "seeds": [0, 1, 2]},
}


def output_stem(profile: str) -> str:
    cfg = C.config_for(CONFIGS, profile)
    return C.make_stem(FIGURE, SLUG, f"L{cfg['depth']}_NoShort_steps{cfg['steps']}", profile)


def _specs(cfg: dict, profile: str) -> list[tuple[dict, dict]]:
    device = C.run_device(profile)
    return [({"seed": seed, "lr": float(lr), "method": method},
             dict(arch="resnet", depth=cfg["depth"], shortcuts=False, width=cfg["width"],
                  data=C.resolve_data(cfg["data"]), steps=cfg["steps"], batch_size=cfg["batch_size"],
                  lr=float(lr), momentum=cfg["momentum"], weight_decay=cfg["weight_decay"],
                  other_lr=cfg["lr_other"],
                  constrained_elr=cfg["target_elr"] if method == "constrained" else None,
                  seed=seed, device=device, checkpoint_every=10**9,
                  sync_every=min(cfg["steps"], 200)))
            for seed in cfg["seeds"] for lr in cfg["lrs"] for method in ("sgd", "constrained")]


def plan(profile: str) -> list[dict]:
    """The training runs of ``profile`` (:func:`paper_figures._common.train_run` kwargs)."""
    return [kw for _, kw in _specs(C.config_for(CONFIGS, profile), profile)]


def _measure(cfg: dict, cache_dir, refresh: bool, profile: str) -> pd.DataFrame:
    C.torch_setup(profile)
    frames = []
    for labels, kwargs in _specs(cfg, profile):
        table, metrics, meta = C.train_run(cache_dir, refresh, **kwargs)
        diverged = meta.get("status") == "diverged"
        ok = table[(table["update_elr"] > 0) & np.isfinite(table["update_elr"])]
        g = ok.groupby("step")["update_elr"]
        spread = (g.max() / g.min()).reindex(metrics["step"].to_numpy())
        frames.append(pd.DataFrame({
            "method": labels["method"], "lr": labels["lr"], "seed": labels["seed"],
            "step": metrics["step"].to_numpy(), "loss": metrics["loss"].to_numpy(),
            "accuracy": metrics["accuracy"].to_numpy(), "spread": spread.to_numpy(),
            "test_accuracy": 0.0 if diverged else float(meta.get("test_accuracy", np.nan)),
            "diverged": int(diverged),
            "target_elr": (cfg["target_elr"] if labels["method"] == "constrained"
                           else np.nan),
        }))
    return pd.concat(frames, ignore_index=True)


def measure(profile: str = "quick", cache_dir: str | Path | None = None,
            refresh: bool = False) -> pd.DataFrame:
    """One row per method, lr, seed and step; see the module docstring."""
    cfg = C.config_for(CONFIGS, profile)
    return C.cached_frame(cache_dir, output_stem(profile), cfg,
                          lambda: _measure(cfg, cache_dir, refresh, profile), refresh)


def plot(df: pd.DataFrame, out_dir: str | Path, profile: str) -> list[Path]:
    fig, axes = C.subplots(1, 3, width=3.7, height=3.1)
    lrs = sorted(df["lr"].unique())
    colors = dict(zip(lrs, C.layer_colors(len(lrs), "plasma"), strict=True))
    seed = sorted(df["seed"].unique())[0]
    d = df[df["seed"] == seed]
    for lr in lrs:
        for method, ls in (("sgd", "--"), ("constrained", "-")):
            e = d[(d["lr"] == lr) & (d["method"] == method)]
            if e.empty:
                continue
            width = max(1, len(e) // 20)
            axes[0, 0].plot(e["step"], e["loss"].rolling(width, min_periods=1).mean(),
                            ls=ls, color=colors[lr], lw=1.1, label=f"{method}, lr {lr:g}")
            axes[0, 1].plot(e["step"], e["spread"], ls=ls, color=colors[lr], lw=0.9)
    axes[0, 0].set_xlabel("step")
    axes[0, 0].set_ylabel("training loss (running mean)")
    axes[0, 0].set_title("loss (dashed: SGD, solid: constrained)")
    axes[0, 0].legend(fontsize=6, ncol=2)
    axes[0, 1].set_yscale("log")
    axes[0, 1].set_xlabel("step")
    axes[0, 1].set_ylabel("update-ELR spread")
    axes[0, 1].set_title("ELR spread")
    acc = df.groupby(["method", "lr"])["test_accuracy"].mean().unstack(0)
    ax = axes[0, 2]
    for method, marker in (("sgd", "s"), ("constrained", "o")):
        if method in acc:
            ax.plot(acc.index, acc[method], marker=marker, label=method)
    C.log_lr_axis(ax)
    ax.set_ylabel("final test accuracy")
    ax.set_ylim(0, 1)
    ax.set_title("test accuracy vs lr")
    ax.legend()
    C.footnote(fig, profile, "SGD momentum/weight decay as configured")
    return C.save_figure(fig, out_dir, output_stem(profile))


def main(profile: str = "quick", out_dir: str | Path = C.DEFAULT_OUT,
         refresh: bool = False) -> C.FigureResult:
    return C.run_figure(sys.modules[__name__], profile, out_dir, refresh)


if __name__ == "__main__":
    sys.exit(C.script_main(sys.modules[__name__]))
