r"""Figure 1: weight and gradient norm of the first layer at step 10 vs the learning rate.

A ResNet NoShort (BatchNorm, no residual additions; ``quick``: ResNet-20 on the 8x8
digits, ``full``: ResNet-56 on CIFAR-10 when available) is trained for 10 SGD steps at
each lr of a log grid, three ways:

* ``real`` -- :func:`normdyn.validate.runs.run_training` with the real gradients;
* ``drift`` -- the same network, every scale-invariant gradient replaced by a Gaussian
  random vector of the same norm (``drift=True``, the paper's "drift" runs);
* ``simulated`` -- the discrete norm-level model
  (:func:`normdyn.simulate.simulate_discrete`) started from the network's measured
  initial weight norms with the base gradients ``c`` frozen at their initial values;
* ``no_growth`` -- the null the model must beat: the real run's step-0 norms, as if
  nothing changed in 10 steps.

Plotted: the first layer's :math:`\lVert w\rVert` and :math:`\lVert\nabla w\rVert` at
step 10 (before the 11th update) against the lr; the predicted critical lr of the
initial state is marked.

CSV columns (one row per source, lr and seed)
---------------------------------------------
``source``        ``simulated``, ``real``, ``drift`` or ``no_growth``
``lr``            constant learning rate
``seed``          seed of the run (initialization and batches)
``step``          the step the norms belong to (10)
``layer``         name of the first scale-invariant layer
``weight_norm``   :math:`\lVert w\rVert` at that step
``grad_norm``     :math:`\lVert\nabla w\rVert` at that step (simulated: :math:`c_0/\lVert w\rVert`)
``depth``         ResNet depth
``critical_lr``   :math:`\eta^*` of the seed's initial state (all layers)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

if __package__ in (None, ""):  # run as a file: python paper_figures/figNN_<slug>.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from paper_figures import _common as C  # noqa: E402

FIGURE = "fig01"
SLUG = "norms_step10"
TITLE = "Simulated, real and drift weight/gradient norm of the first layer at step 10 vs lr"
COLUMNS = ("source", "lr", "seed", "step", "layer", "weight_norm", "grad_norm", "depth",
           "critical_lr")
CONFIGS = {
    "micro": {"depth": 8, "width": 4, "data": "digits", "batch_size": 32, "step": 3,
              "lrs": [0.1, 10.0], "seeds": [0]},
    "quick": {"depth": 20, "width": 8, "data": "digits", "batch_size": 64, "step": 10,
              "lrs": [0.01, 0.05, 0.2, 1.0, 5.0, 20.0, 100.0], "seeds": [0, 1, 2]},
    "deep": {"depth": 56, "width": 16, "data": "fashion-mnist", "image_size": 28,
             "batch_size": 64, "step": 10,
             "lrs": [0.01, 0.05, 0.2, 1.0, 5.0, 20.0, 100.0], "seeds": [0, 1, 2]},
    "full": {"depth": 56, "width": 16, "data": "cifar10", "batch_size": 128, "step": 10,
             "lrs": np.geomspace(1e-3, 1e3, 19).round(6).tolist(), "seeds": [0, 1, 2]},
}


def output_stem(profile: str) -> str:
    cfg = C.config_for(CONFIGS, profile)
    return C.make_stem(FIGURE, SLUG, f"L{cfg['depth']}_NoShort_{cfg['data']}_step{cfg['step']}",
                       profile)


def _specs(cfg: dict, profile: str) -> list[tuple[dict, dict]]:
    device = C.run_device(profile)
    return [({"seed": seed, "lr": float(lr), "drift": drift},
             dict(arch="resnet", depth=cfg["depth"], shortcuts=False, width=cfg["width"],
                  data=C.resolve_data(cfg["data"]), steps=cfg["step"] + 1, batch_size=cfg["batch_size"],
                  lr=float(lr), drift=drift, seed=seed, device=device,
                  checkpoint_every=10**6, sync_every=cfg["step"] + 1,
                  **C.image_size_kwargs(cfg)))
            for seed in cfg["seeds"] for lr in cfg["lrs"] for drift in (False, True)]


def plan(profile: str) -> list[dict]:
    """The training runs of ``profile`` (:func:`paper_figures._common.train_run` kwargs)."""
    return [kw for _, kw in _specs(C.config_for(CONFIGS, profile), profile)]


def _measure(cfg: dict, cache_dir, refresh: bool, profile: str) -> pd.DataFrame:
    from normdyn.simulate import simulate_discrete
    from normdyn.theory.numeric import base_gradient, critical_lr_of

    C.torch_setup(profile)
    step = cfg["step"]
    lrs = np.asarray(cfg["lrs"], dtype=float)
    rows = []
    init: dict[int, pd.DataFrame] = {}
    for labels, kwargs in _specs(cfg, profile):
        seed, lr = labels["seed"], labels["lr"]
        table, _, meta = C.train_run(cache_dir, refresh, **kwargs)
        layers = list(meta["tracked_layers"])
        first = layers[0]
        if seed not in init:  # every run of a seed starts from the same initialization
            init[seed] = table[table["step"] == 0].set_index("layer").loc[layers]
        row = table[(table["step"] == step) & (table["layer"] == first)].iloc[0]
        rows.append({"source": "drift" if labels["drift"] else "real", "lr": lr,
                     "seed": seed, "step": step, "layer": first,
                     "weight_norm": float(np.sqrt(row["sigma2"])),
                     "grad_norm": float(row["grad_norm"])})
        if not labels["drift"]:
            start = table[(table["step"] == 0) & (table["layer"] == first)].iloc[0]
            rows.append({"source": "no_growth", "lr": lr, "seed": seed, "step": step,
                         "layer": first, "weight_norm": float(np.sqrt(start["sigma2"])),
                         "grad_norm": float(start["grad_norm"])})
    eta_star = {}
    for seed, start in init.items():
        sigma2_0 = start["sigma2"].to_numpy(float)
        c0 = base_gradient(start["grad_norm"].to_numpy(float), np.sqrt(sigma2_0))
        sim = simulate_discrete(sigma2_0, c0, lrs, step, record=step, engine="numpy")
        sim = sim[(sim["step"] == step) & (sim["layer"] == 0)]
        for _, r in sim.iterrows():
            w = float(np.sqrt(r["sigma2"]))
            rows.append({"source": "simulated", "lr": float(r["lr"]), "seed": seed,
                         "step": step, "layer": start.index[0], "weight_norm": w,
                         "grad_norm": float(r["c"]) / w})
        eta_star[seed] = float(critical_lr_of(c0 / sigma2_0))
    frame = pd.DataFrame(rows)
    frame["depth"] = cfg["depth"]
    frame["critical_lr"] = frame["seed"].map(eta_star)
    return frame


def measure(profile: str = "quick", cache_dir: str | Path | None = None,
            refresh: bool = False) -> pd.DataFrame:
    """One row per source, lr and seed; see the module docstring for the columns."""
    cfg = C.config_for(CONFIGS, profile)
    return C.cached_frame(cache_dir, output_stem(profile), cfg,
                          lambda: _measure(cfg, cache_dir, refresh, profile), refresh)


def plot(df: pd.DataFrame, out_dir: str | Path, profile: str) -> list[Path]:
    fig, axes = C.subplots(1, 2, width=4.0, height=3.3)
    styles = {"simulated": dict(color="k", ls="-", marker="", lw=1.6),
              "real": dict(color="tab:blue", ls="-", marker="o", lw=1.0, ms=4),
              "drift": dict(color="tab:orange", ls="--", marker="s", lw=1.0, ms=4),
              "no_growth": dict(color="0.5", ls=":", marker="", lw=1.0)}
    step = int(df["step"].iloc[0])
    for ax, col, label in ((axes[0, 0], "weight_norm", r"weight norm $\|w\|$"),
                           (axes[0, 1], "grad_norm", r"gradient norm $\|\nabla w\|$")):
        for source, style in styles.items():
            d = df[df["source"] == source].groupby("lr")[col].agg(["mean", "min", "max"])
            if d.empty:
                continue
            ax.plot(d.index, d["mean"], label=source, **style)
            if len(df["seed"].unique()) > 1:
                ax.fill_between(d.index, d["min"], d["max"], color=style["color"], alpha=0.15)
        C.mark_critical_lr(ax, float(df.groupby("seed")["critical_lr"].first().median()))
        C.log_lr_axis(ax)
        ax.set_yscale("log")
        ax.set_ylabel(label)
        ax.set_title(f"first layer, step {step}")
    axes[0, 0].legend(loc="upper left")
    C.footnote(fig, profile, f"ResNet-{int(df['depth'].iloc[0])} NoShort; layer "
               f"{df['layer'].iloc[0]}")
    return C.save_figure(fig, out_dir, output_stem(profile))


def main(profile: str = "quick", out_dir: str | Path = C.DEFAULT_OUT,
         refresh: bool = False) -> C.FigureResult:
    return C.run_figure(sys.modules[__name__], profile, out_dir, refresh)


if __name__ == "__main__":
    sys.exit(C.script_main(sys.modules[__name__]))
