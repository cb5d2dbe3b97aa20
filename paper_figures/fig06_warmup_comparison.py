r"""Figure 6: warm-up comparison -- the critical-lr warm-up against tuned warm-ups.

Seven schedules reach the same target lr:

``critical``     :math:`\eta_t = \min(\eta, \eta^*_t)`, the hyper-parameter-free warm-up
``none``         constant :math:`\eta`
``linear5/20/50``  linear warm-up over 5, 20 or 50 steps
``exp5/25``      :math:`\eta(1 - e^{-(t+1)/\tau})` with :math:`\tau` = 5 or 25

The five ``linear*``/``exp*`` schedules are the tuned alternatives: the claim is graded
against the best of them (chosen on the same runs), not against ``none``.

*simulated*: the discrete model (:func:`normdyn.simulate.simulate_discrete` with
:func:`normdyn.simulate.make_schedule`) on the NoShort-like profile of figure 5;
*real*: a ResNet NoShort trained with each schedule
(:func:`normdyn.validate.runs.run_training`); its ``critical`` runs use the shipped
:class:`normdyn.CriticalLRWarmup` around ``optimizer.step()``, so ``lr_t`` is the lr
the step used.  Plotted: the ELR spread and the lr over the first steps.

CSV columns (one row per source, schedule, seed and step)
---------------------------------------------------------
``source``      ``simulated`` or ``real``
``schedule``    one of the five names above
``seed``        seed (0 for the simulation)
``step``        optimizer step
``lr_t``        learning rate used at the step
``target_lr``   the schedule's target lr
``spread``      max/min ELR over the live layers before the step
                (:func:`normdyn._spread.spread_max_min`)
``loss``        training-batch loss (NaN for the simulation)
``robust_spread``  Q0.95/Q0.05 of the live layers' ELRs (:func:`normdyn._spread.robust_spread`)
``dead_layers``    layers with a zero gradient or vanishing ELR at the step
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

if __package__ in (None, ""):  # run as a file: python paper_figures/figNN_<slug>.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from paper_figures import _common as C  # noqa: E402

FIGURE = "fig06"
SLUG = "warmup_comparison"
TITLE = "Warm-up comparison: critical-lr warm-up vs none and tuned linear/exponential"
COLUMNS = ("source", "schedule", "seed", "step", "lr_t", "target_lr", "spread", "loss",
           "robust_spread", "dead_layers")
FLOAT_FORMAT = C.COMPACT_FLOATS
#: name -> (make_schedule / RunConfig name, its length: n_steps or tau)
SCHEDULES = {
    "critical": ("critical_warmup", None),
    "none": ("constant", None),
    "linear5": ("linear_warmup", 5),
    "linear20": ("linear_warmup", 20),
    "linear50": ("linear_warmup", 50),
    "exp5": ("exponential_warmup", 5),
    "exp25": ("exponential_warmup", 25),
}
CONFIGS = {
    "micro": {"sim_depth": 8, "sim_lr": 1.0, "sim_steps": 6, "depth": 8, "width": 4,
              "data": "digits", "batch_size": 32, "lr": 1.0, "steps": 4, "momentum": 0.0,
              "seeds": [0], "decades_per_layer": 0.06},
    "quick": {"sim_depth": 56, "sim_lr": 1.0, "sim_steps": 200, "depth": 56, "width": 4,
              "data": "digits", "batch_size": 64, "lr": 1.0, "steps": 60, "momentum": 0.0,
              "seeds": [0, 1, 2], "decades_per_layer": 0.06},
    "deep": {"sim_depth": 110, "sim_lr": 1.0, "sim_steps": 200, "depth": 110, "width": 8,
             "data": "fashion-mnist", "image_size": 14, "batch_size": 64, "lr": 1.0,
             "steps": 100, "momentum": 0.9, "seeds": [0, 1, 2], "decades_per_layer": 0.06},
    "full": {"sim_depth": 110, "sim_lr": 1.0, "sim_steps": 2000, "depth": 110, "width": 16,
             "data": "cifar10", "batch_size": 128, "lr": 1.0, "steps": 2000, "momentum": 0.9,
             "seeds": [0, 1, 2], "decades_per_layer": 0.06},
}


def output_stem(profile: str) -> str:
    cfg = C.config_for(CONFIGS, profile)
    return C.make_stem(FIGURE, SLUG, f"L{cfg['depth']}_NoShort_lr{cfg['lr']:g}_"
                                     f"steps{cfg['steps']}", profile)


def _simulated(cfg: dict) -> pd.DataFrame:
    from normdyn.simulate import make_schedule, simulate_discrete

    depth = cfg["sim_depth"]
    sigma2_0, c = C.explosion_profile(depth, cfg["decades_per_layer"] * (depth - 1))
    frames = []
    for label, (name, length) in SCHEDULES.items():
        kw = {}
        if name == "linear_warmup":
            kw["n_steps"] = length
        elif name == "exponential_warmup":
            kw["tau"] = float(length)
        sched = make_schedule(name, cfg["sim_lr"], **kw)
        sim = simulate_discrete(sigma2_0, c, cfg["sim_lr"], cfg["sim_steps"], schedule=sched,
                                engine="numpy")
        per_step = sim.groupby("step", as_index=False).agg(lr_t=("lr_t", "first"))
        live = C.live_spreads(sim, grad_norm=None)
        per_step = per_step.join(live[["spread", "robust_spread", "dead_layers"]], on="step")
        frames.append(per_step.assign(source="simulated", schedule=label, seed=0,
                                      target_lr=cfg["sim_lr"], loss=np.nan))
    return pd.concat(frames, ignore_index=True)


def _specs(cfg: dict, profile: str) -> list[tuple[dict, dict]]:
    device = C.run_device(profile)
    return [({"seed": seed, "schedule": label},
             dict(arch="resnet", depth=cfg["depth"], shortcuts=False, width=cfg["width"],
                  data=C.resolve_data(cfg["data"]), steps=cfg["steps"], batch_size=cfg["batch_size"],
                  lr=cfg["lr"], momentum=cfg["momentum"], schedule=name,
                  schedule_steps=length, seed=seed, device=device, checkpoint_every=10**9,
                  sync_every=min(cfg["steps"], 200), **C.image_size_kwargs(cfg)))
            for seed in cfg["seeds"] for label, (name, length) in SCHEDULES.items()]


def plan(profile: str) -> list[dict]:
    """The training runs of ``profile`` (:func:`paper_figures._common.train_run` kwargs)."""
    return [kw for _, kw in _specs(C.config_for(CONFIGS, profile), profile)]


def _real(cfg: dict, cache_dir, refresh: bool, profile: str) -> pd.DataFrame:
    C.torch_setup(profile)
    frames = []
    for labels, kwargs in _specs(cfg, profile):
        table, metrics, _ = C.train_run(cache_dir, refresh, **kwargs)
        spread = C.live_spreads(table)[["spread", "robust_spread", "dead_layers"]]
        per_step = metrics.set_index("step")[["lr", "loss"]].rename(columns={"lr": "lr_t"})
        per_step = per_step.join(spread, how="inner").reset_index()
        frames.append(per_step.assign(source="real", schedule=labels["schedule"],
                                      seed=labels["seed"], target_lr=cfg["lr"]))
    return pd.concat(frames, ignore_index=True)


def measure(profile: str = "quick", cache_dir: str | Path | None = None,
            refresh: bool = False) -> pd.DataFrame:
    """One row per source, schedule, seed and step; see the module docstring."""
    cfg = C.config_for(CONFIGS, profile)

    def compute() -> pd.DataFrame:
        return pd.concat([_simulated(cfg), _real(cfg, cache_dir, refresh, profile)],
                         ignore_index=True)[list(COLUMNS)]

    return C.cached_frame(cache_dir, output_stem(profile), cfg, compute, refresh)


STYLE = {"critical": dict(color="crimson", lw=1.8), "none": dict(color="k", lw=1.0),
         "linear5": dict(color="tab:blue", lw=1.0), "linear20": dict(color="tab:purple", lw=1.0),
         "linear50": dict(color="tab:cyan", lw=1.0),
         "exp5": dict(color="tab:olive", lw=1.0, ls="--"),
         "exp25": dict(color="tab:green", lw=1.0, ls="--")}


def early_ratios(df: pd.DataFrame, early: int) -> pd.DataFrame:
    """Real runs: per tuned schedule, the early-spread ratio critical / schedule.

    Per seed the geometric-mean live spread over steps ``1..early`` of each schedule;
    the paired log ratio across seeds gives ``(schedule, ratio, low, high)`` (mean and
    95% Student-t interval, exponentiated).
    """
    d = df[(df["source"] == "real") & (df["step"] >= 1) & (df["step"] <= early)]
    d = d[np.isfinite(d["spread"]) & (d["spread"] > 0)]
    if d.empty or "critical" not in set(d["schedule"]):
        return pd.DataFrame(columns=["schedule", "ratio", "low", "high"])
    score = (d.assign(ls=np.log(d["spread"])).groupby(["schedule", "seed"])["ls"].mean()
             .unstack("schedule"))
    rows = []
    for name in (s for s in SCHEDULES if s not in ("critical", "none") and s in score):
        mean, low, high = C.seed_interval((score["critical"] - score[name]).dropna())
        rows.append((name, *np.exp([mean, low, high])))
    return pd.DataFrame(rows, columns=["schedule", "ratio", "low", "high"])


def plot(df: pd.DataFrame, out_dir: str | Path, profile: str) -> list[Path]:
    fig, axes = C.subplots(2, 3, width=3.7, height=2.8)
    for col, source in enumerate(("simulated", "real")):
        d = df[df["source"] == source]
        for label in SCHEDULES:
            g = d[d["schedule"] == label].groupby("step")[["spread", "lr_t"]].mean()
            if g.empty:
                continue
            axes[0, col].plot(g.index, g["spread"], label=label, **STYLE[label])
            axes[1, col].plot(g.index, g["lr_t"], label=label, **STYLE[label])
        axes[0, col].set_yscale("log")
        axes[1, col].set_yscale("log")
        axes[0, col].set_title(f"{source}: live ELR spread")
        axes[1, col].set_title(f"{source}: learning rate")
        axes[1, col].set_xlabel("step")
        axes[0, col].set_ylabel(r"$\max E / \min E$")
        axes[1, col].set_ylabel(r"$\eta_t$")
        axes[0, col].sharex(axes[1, col])
    early = int(C.threshold("WARMUP_EARLY_STEPS", 20))
    factor = C.threshold("WARMUP_FACTOR", 1.5)
    ax = axes[0, 2]
    ratios = early_ratios(df, early)
    x = np.arange(len(ratios))
    if len(ratios):
        ax.errorbar(x, ratios["ratio"], yerr=[ratios["ratio"] - ratios["low"],
                                              ratios["high"] - ratios["ratio"]],
                    fmt="o", color="crimson", capsize=3)
    ax.axhspan(0.0, factor, color="tab:green", alpha=0.15, lw=0)
    ax.axhline(factor, color="tab:green", lw=1.0)
    ax.axhline(1.0, color="k", lw=0.6, ls=":")
    ax.set_xticks(x)
    ax.set_xticklabels(list(ratios["schedule"]), rotation=30)
    ax.set_xlim(-0.5, max(len(ratios), 1) - 0.5)
    ax.set_yscale("log")
    C.quiet_log_ticks(ax, "y")
    ax.set_ylabel(f"critical / tuned, spread over steps 1..{early}")
    ax.set_title("real: early-spread ratio (95% seed interval)", fontsize=9)
    legend = axes[1, 2]
    legend.axis("off")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    from matplotlib.patches import Patch

    handles.append(Patch(color="tab:green", alpha=0.3))
    labels.append(f"confirm band: ratio <= {factor:g}")
    legend.legend(handles, labels, loc="center", ncol=2, title="schedule")
    C.footnote(fig, profile, "critical: eta_t = min(target, eta*_t); spreads over live layers")
    return C.save_figure(fig, out_dir, output_stem(profile))


def main(profile: str = "quick", out_dir: str | Path = C.DEFAULT_OUT,
         refresh: bool = False) -> C.FigureResult:
    return C.run_figure(sys.modules[__name__], profile, out_dir, refresh)


if __name__ == "__main__":
    sys.exit(C.script_main(sys.modules[__name__]))
