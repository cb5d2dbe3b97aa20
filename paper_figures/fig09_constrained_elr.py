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

Both methods get the same schedule, the one a user would run: with ``decay = "cosine"``
(where :class:`normdyn.validate.runs.RunConfig` has the ``decay`` field) the SGD lr and
the ConstrainedELR target both follow a cosine decay over the run; the title says which
schedule the table holds (column ``decay``).  The test accuracy is graded after
recalibrating the BatchNorm statistics; the right panel shows the graded gain
(constrained - SGD, paired over seeds) with its 95% interval and the threshold.

CSV columns (one row per method, lr, seed and step)
---------------------------------------------------
``method``         ``sgd`` or ``constrained``
``lr``             learning rate
``seed``           seed
``step``           optimizer step
``loss``           training-batch loss
``accuracy``       training-batch accuracy
``spread``         max/min update ELR over the live layers at the step
``test_accuracy``  test accuracy at the end of the run after recalibrating the BatchNorm
                   statistics (0 if it diverged)
``diverged``       1 if the run stopped on a non-finite loss or norm
``target_elr``     constrained target ELR (NaN for SGD); the same at every lr
``test_accuracy_batch_stats``   the same weights with batch statistics (0 if diverged;
                   NaN where the run records none)
``test_accuracy_uncalibrated``  eval mode with the running statistics as trained
``decay``          ``cosine`` or ``none``: the lr / target schedule of both methods
``robust_spread``  Q0.95/Q0.05 of the live layers' update ELRs at the step
``dead_layers``    layers with a zero gradient or vanishing update ELR at the step
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
           "diverged", "target_elr", "test_accuracy_batch_stats", "test_accuracy_uncalibrated",
           "decay", "robust_spread", "dead_layers")
FLOAT_FORMAT = C.COMPACT_FLOATS
CONFIGS = {
    "micro": {"depth": 8, "width": 4, "data": "digits", "batch_size": 32, "steps": 4,
              "lrs": [0.1, 10.0], "momentum": 0.9, "weight_decay": 5e-4, "lr_other": 0.1,
              "target_elr": 0.02, "seeds": [0], "decay": "cosine"},
    "quick": {"depth": 20, "width": 8, "data": "digits", "batch_size": 64, "steps": 160,
              "lrs": [0.1, 1.0, 10.0, 100.0], "momentum": 0.9, "weight_decay": 5e-4,
              "lr_other": 0.1, "target_elr": 0.02, "seeds": [0, 1, 2], "decay": "cosine"},
    "deep": {"depth": 56, "width": 8, "data": "fashion-mnist", "image_size": 14,
             "batch_size": 64, "steps": 1000, "lrs": [0.1, 1.0, 10.0], "momentum": 0.9,
             "weight_decay": 5e-4, "lr_other": 0.1, "target_elr": 0.02,
             "seeds": [0, 1, 2, 3, 4], "decay": "cosine"},
    "full": {"depth": 56, "width": 16, "data": "cifar10", "batch_size": 128, "steps": 10000,
             "lrs": [0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0], "momentum": 0.9,
             "weight_decay": 5e-4, "lr_other": 0.1, "target_elr": 0.02, "seeds": [0, 1, 2],
             "decay": "cosine"},
}


def decay_of(cfg: dict) -> str:
    """The schedule the runs get: the config's ``decay`` where RunConfig has the field."""
    return cfg.get("decay", "none") if C.has_run_field("decay") else "none"


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
                  sync_every=min(cfg["steps"], 200), **C.image_size_kwargs(cfg),
                  **({"decay": decay_of(cfg)} if C.has_run_field("decay") else {})))
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
        live = C.live_spreads(table, elr="update_elr").reindex(metrics["step"].to_numpy())
        acc = {key: 0.0 if diverged else float(meta.get(key, np.nan))
               for key in ("test_accuracy", "test_accuracy_batch_stats",
                           "test_accuracy_uncalibrated")}

        frames.append(pd.DataFrame({
            "method": labels["method"], "lr": labels["lr"], "seed": labels["seed"],
            "step": metrics["step"].to_numpy(), "loss": metrics["loss"].to_numpy(),
            "accuracy": metrics["accuracy"].to_numpy(),
            "spread": live["spread"].to_numpy(),
            "test_accuracy": acc["test_accuracy"],
            "diverged": int(diverged),
            "target_elr": (cfg["target_elr"] if labels["method"] == "constrained"
                           else np.nan),
            "test_accuracy_batch_stats": acc["test_accuracy_batch_stats"],
            "test_accuracy_uncalibrated": acc["test_accuracy_uncalibrated"],
            "decay": kwargs.get("decay", "none"),
            "robust_spread": live["robust_spread"].to_numpy(),
            "dead_layers": live["dead_layers"].fillna(0).astype(int).to_numpy(),
        }))
    return pd.concat(frames, ignore_index=True)


def measure(profile: str = "quick", cache_dir: str | Path | None = None,
            refresh: bool = False) -> pd.DataFrame:
    """One row per method, lr, seed and step; see the module docstring."""
    cfg = C.config_for(CONFIGS, profile)
    return C.cached_frame(cache_dir, output_stem(profile), cfg,
                          lambda: _measure(cfg, cache_dir, refresh, profile), refresh)


def accuracy_gain(df: pd.DataFrame) -> pd.DataFrame:
    """Per lr: test-accuracy gain constrained - SGD, paired over seeds, mean and 95% interval."""
    acc = df.groupby(["lr", "seed", "method"])["test_accuracy"].first().unstack("method")
    rows = []
    for lr, g in acc.groupby(level="lr"):
        if {"sgd", "constrained"} <= set(g.columns):
            rows.append((lr, *C.seed_interval((g["constrained"] - g["sgd"]).dropna())))
    return pd.DataFrame(rows, columns=["lr", "gain", "low", "high"])


def plot(df: pd.DataFrame, out_dir: str | Path, profile: str) -> list[Path]:
    fig, axes = C.subplots(1, 4, width=3.5, height=3.4)
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
    axes[0, 0].set_title("loss (dashed: SGD, solid: constrained)", fontsize=9)
    C.legend_outside(axes[0, 0], loc="upper center", bbox_to_anchor=(0.5, -0.26), ncol=2,
                     fontsize=6)
    axes[0, 1].set_yscale("log")
    axes[0, 1].set_xlabel("step")
    axes[0, 1].set_ylabel("update-ELR spread (live layers)")
    axes[0, 1].set_title("ELR spread (first seed)")
    ax = axes[0, 2]
    for method, marker in (("sgd", "s"), ("constrained", "o")):
        m = df[df["method"] == method]
        if m.empty:
            continue
        stats = [C.seed_interval(g.groupby("seed")["test_accuracy"].first())
                 for _, g in m.groupby("lr")]
        x = sorted(m["lr"].unique())
        mean = np.array([s[0] for s in stats])
        ax.errorbar(x, mean, yerr=[mean - [s[1] for s in stats], [s[2] for s in stats] - mean],
                    marker=marker, capsize=2, label=method)
    C.log_lr_axis(ax)
    C.quiet_log_ticks(ax, "x")
    ax.set_ylabel("final test accuracy (recalibrated BN)")
    ax.set_ylim(0, 1)
    ax.set_title("test accuracy vs lr (95% seed interval)", fontsize=9)
    C.legend_outside(ax, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=2)
    ax = axes[0, 3]
    confirm = C.threshold("CONSTRAINED_CONFIRM", 0.05)
    null = C.threshold("CONSTRAINED_NULL", 0.0)
    gain = accuracy_gain(df)
    ax.axhspan(confirm, 1.0, color="tab:green", alpha=0.15, lw=0,
               label=f"confirm: interval >= {confirm:g}")
    ax.axhline(null, color="crimson", ls="--", lw=0.8, label=f"null {null:g}")
    if len(gain):
        ax.errorbar(gain["lr"], gain["gain"], yerr=[gain["gain"] - gain["low"],
                                                    gain["high"] - gain["gain"]],
                    fmt="o", color="k", capsize=3)
    C.log_lr_axis(ax)
    C.quiet_log_ticks(ax, "x")
    ax.set_ylim(-1.0, 1.0)
    ax.set_ylabel("accuracy gain, constrained - SGD")
    ax.set_title("paired gain (95% seed interval)", fontsize=9)
    C.legend_outside(ax, loc="upper center", bbox_to_anchor=(0.5, -0.3), ncol=1)
    decay = str(df["decay"].iloc[0]) if len(df) else "none"
    schedule = ("cosine decay of the SGD lr and of the constrained target over the run"
                if decay == "cosine" else "constant lr and constant target (no decay)")
    fig.suptitle(f"Constrained ELR vs SGD, both with {schedule}", fontsize=10)
    C.footnote(fig, profile, f"schedule (column decay): {decay}; SGD momentum/weight decay "
               "as configured")
    return C.save_figure(fig, out_dir, output_stem(profile))


def main(profile: str = "quick", out_dir: str | Path = C.DEFAULT_OUT,
         refresh: bool = False) -> C.FigureResult:
    return C.run_figure(sys.modules[__name__], profile, out_dir, refresh)


if __name__ == "__main__":
    sys.exit(C.script_main(sys.modules[__name__]))
