r"""Figure 8: the effect of heavy-ball momentum on the ELR spread, simulated and real.

*drift*: weight vectors of the NoShort-like profile of figure 5 (``elements`` entries per
layer) under random gradients of the modeled norm, orthogonal to :math:`w`
(:func:`normdyn.simulate.drift.simulate_drift`), with momentum
:math:`\beta \in` ``momenta`` at one constant lr.  The theory (THEORY §5) says that
:math:`u = E_{\mathrm{update}}^{-2}` grows by :math:`2(1+\beta)/(1-\beta)` per step
(:func:`normdyn.theory.numeric.momentum_u_growth`), so the ratios converge faster.
*real*: a ResNet NoShort trained with ``torch.optim.SGD(momentum=beta)`` at the same lr
for each :math:`\beta` of ``real_momenta``, and the control that separates momentum from
its larger step: plain SGD (:math:`\beta = 0`) at the same *effective* lr
:math:`\eta/(1-\beta)` (rows with ``momentum == 0`` and ``lr == eta/(1-beta)``).

Plotted: the spread of the update ELR :math:`\|\Delta w\|/\|w\|` over the steps for each
:math:`\beta` (drift, real) and the drift :math:`u` against the predicted growth.

CSV columns (one row per source, momentum, seed, recorded step and layer)
-------------------------------------------------------------------------
``source``       ``drift`` or ``real``
``momentum``     :math:`\beta`
``seed``         seed
``step``         optimizer step
``layer``        layer name (``real``) or index (``drift``)
``layer_index``  position of the layer, 0 = input side
``lr``           learning rate
``elr``          gradient ELR
``update_elr``   :math:`\|\Delta w\|/\|w\|` of the step taken
``spread``       max/min ``update_elr`` over the live layers at that step
                 (:func:`normdyn._spread.spread_max_min`)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

if __package__ in (None, ""):  # run as a file: python paper_figures/figNN_<slug>.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from paper_figures import _common as C  # noqa: E402

FIGURE = "fig08"
SLUG = "momentum_spread"
TITLE = "Momentum effect on the ELR spread: drift simulation and real network"
FLOAT_FORMAT = C.COMPACT_FLOATS  # per-step tables: small enough to commit
COLUMNS = ("source", "momentum", "seed", "step", "layer", "layer_index", "lr", "elr",
           "update_elr", "spread")
CONFIGS = {
    "micro": {"momenta": [0.0, 0.9], "real_momenta": [0.0, 0.9], "lr": 0.1, "sim_layers": 4,
              "elements": 64, "sim_steps": 20, "decades_per_layer": 0.06, "depth": 8,
              "width": 4, "data": "digits", "batch_size": 32, "steps": 4, "seeds": [0]},
    "quick": {"momenta": [0.0, 0.5, 0.9], "real_momenta": [0.0, 0.9], "lr": 0.1,
              "sim_layers": 20, "elements": 2000, "sim_steps": 2000, "decades_per_layer": 0.06,
              "depth": 20, "width": 8, "data": "digits", "batch_size": 64, "steps": 300,
              "seeds": [0, 1, 2]},
    "deep": {"momenta": [0.0, 0.5, 0.9], "real_momenta": [0.0, 0.9], "lr": 0.1,
             "sim_layers": 56, "elements": 2000, "sim_steps": 2000, "decades_per_layer": 0.06,
             "depth": 56, "width": 16, "data": "digits", "batch_size": 64, "steps": 500,
             "seeds": [0, 1, 2]},
    "full": {"momenta": [0.0, 0.5, 0.9, 0.99], "real_momenta": [0.0, 0.9], "lr": 0.1,
             "sim_layers": 56, "elements": 20000, "sim_steps": 20000, "decades_per_layer": 0.06,
             "depth": 56, "width": 16, "data": "cifar10", "batch_size": 128, "steps": 5000,
             "seeds": [0, 1, 2]},
}


def output_stem(profile: str) -> str:
    cfg = C.config_for(CONFIGS, profile)
    return C.make_stem(FIGURE, SLUG, f"L{cfg['depth']}_lr{cfg['lr']:g}_steps{cfg['steps']}",
                       profile)


def _update_spread(frame: pd.DataFrame, keys: list[str]) -> pd.Series:
    """Per row: max/min ``update_elr`` over the live layers of its (keys, step) group."""
    from normdyn._spread import spread_table

    ok = frame[np.isfinite(frame["update_elr"].to_numpy(dtype=np.float64))]
    grad = "grad_norm" if "grad_norm" in frame.columns else None
    spread = spread_table(ok, [*keys, "step"], elr="update_elr", grad_norm=grad)
    spread = spread.set_index([*keys, "step"])["spread"]
    return frame.drop(columns="spread", errors="ignore").join(spread, on=[*keys, "step"])["spread"]


def _drift(cfg: dict) -> pd.DataFrame:
    from normdyn.simulate.drift import simulate_drift

    layers = cfg["sim_layers"]
    sigma2_0, c = C.explosion_profile(layers, cfg["decades_per_layer"] * (layers - 1))
    elements = np.full(layers, cfg["elements"])
    keep = C.thin_steps(cfg["sim_steps"], 1500)
    frames = []
    for beta in cfg["momenta"]:
        sim = simulate_drift(sigma2_0, c, elements, cfg["lr"], cfg["sim_steps"],
                             momentum=beta, projected=True, seed=cfg["seeds"])
        sim = sim[sim["step"].isin(keep)]
        frames.append(sim.assign(source="drift", momentum=beta, layer_index=sim["layer"]))
    out = pd.concat(frames, ignore_index=True)
    out["spread"] = _update_spread(out, ["momentum", "seed"])
    out["layer"] = out["layer"].astype(str)
    return out


def _specs(cfg: dict, profile: str) -> list[tuple[dict, dict]]:
    """Each real momentum at ``lr``, and SGD at ``lr/(1-beta)`` for each beta > 0."""
    device = C.run_device(profile)
    settings = [(beta, cfg["lr"]) for beta in cfg["real_momenta"]]
    settings += [(0.0, cfg["lr"] / (1 - beta)) for beta in cfg["real_momenta"] if beta > 0]
    return [({"seed": seed, "momentum": beta, "lr": lr},
             dict(arch="resnet", depth=cfg["depth"], shortcuts=False, width=cfg["width"],
                  data=C.resolve_data(cfg["data"]), steps=cfg["steps"], batch_size=cfg["batch_size"], lr=lr,
                  momentum=beta, seed=seed, device=device, checkpoint_every=10**9,
                  sync_every=min(cfg["steps"], 200)))
            for seed in cfg["seeds"] for beta, lr in settings]


def plan(profile: str) -> list[dict]:
    """The training runs of ``profile`` (:func:`paper_figures._common.train_run` kwargs)."""
    return [kw for _, kw in _specs(C.config_for(CONFIGS, profile), profile)]


def _real(cfg: dict, cache_dir, refresh: bool, profile: str) -> pd.DataFrame:
    C.torch_setup(profile)
    frames = []
    for labels, kwargs in _specs(cfg, profile):
        table, _, meta = C.train_run(cache_dir, refresh, **kwargs)
        index = {name: i for i, name in enumerate(meta["tracked_layers"])}
        frames.append(table.assign(source="real", momentum=labels["momentum"],
                                   seed=labels["seed"], layer_index=table["layer"].map(index)))
    out = pd.concat(frames, ignore_index=True)
    out["spread"] = _update_spread(out, ["momentum", "lr", "seed"])
    return out


def measure(profile: str = "quick", cache_dir: str | Path | None = None,
            refresh: bool = False) -> pd.DataFrame:
    """One row per source, momentum, seed, step and layer; see the module docstring."""
    cfg = C.config_for(CONFIGS, profile)

    def compute() -> pd.DataFrame:
        return pd.concat([_drift(cfg)[list(COLUMNS)],
                          _real(cfg, cache_dir, refresh, profile)[list(COLUMNS)]],
                         ignore_index=True)

    return C.cached_frame(cache_dir, output_stem(profile), cfg, compute, refresh)


def plot(df: pd.DataFrame, out_dir: str | Path, profile: str) -> list[Path]:
    from normdyn.theory.numeric import momentum_u_growth

    fig, axes = C.subplots(1, 3, width=3.8, height=3.2)
    momenta = sorted(df["momentum"].unique())
    colors = dict(zip(momenta, C.layer_colors(len(momenta), "cool"), strict=True))
    seed = sorted(df["seed"].unique())[0]
    for ax, source in ((axes[0, 0], "drift"), (axes[0, 1], "real")):
        d = df[(df["source"] == source) & (df["seed"] == seed)]
        base_lr = float(d["lr"].min()) if len(d) else 0.0
        for (beta, lr), g in d.groupby(["momentum", "lr"]):
            s = g.groupby("step")["spread"].first()
            control = beta == 0 and lr > base_lr * (1 + 1e-9)
            width = max(1, len(s) // 50)
            style = dict(color="0.3" if control else colors[beta], ls="--" if control else "-")
            ax.plot(s.index + 1, s.values, lw=0.4, alpha=0.35, **style)
            ax.plot(s.index + 1, np.exp(np.log(s).rolling(width, min_periods=1).mean()),
                    lw=1.4, **style, label=(rf"SGD at $\eta/(1-\beta)$ = {lr:g} (control)"
                                            if control else rf"$\beta$ = {beta:g}"))
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("step + 1")
        ax.set_ylabel(r"update-ELR spread $\max / \min$")
        ax.set_title(f"{source}: spread (line: running geometric mean)")
        ax.legend()
    ax = axes[0, 2]
    d = df[(df["source"] == "drift") & (df["seed"] == seed)]
    for beta in momenta:
        e = d[d["momentum"] == beta]
        u = (e["update_elr"] ** -2.0).groupby(e["step"]).median()
        if u.empty:
            continue
        ax.plot(u.index, u.values, color=colors[beta], lw=1.4, label=rf"$\beta$ = {beta:g}")
        t = u.index.to_numpy(float)
        start = u.iloc[len(u) // 2]
        pred = start + float(momentum_u_growth(beta)) * (t - t[len(t) // 2])
        ax.plot(t, pred, color=colors[beta], ls=":", lw=1.0)
    ax.set_xlabel("step")
    ax.set_ylabel(r"median $u = E_{\rm update}^{-2}$")
    ax.set_title(r"drift: $u$ vs slope $2(1+\beta)/(1-\beta)$ (dotted)")
    ax.legend()
    C.footnote(fig, profile, f"lr {df['lr'].min():g}")
    return C.save_figure(fig, out_dir, output_stem(profile))


def main(profile: str = "quick", out_dir: str | Path = C.DEFAULT_OUT,
         refresh: bool = False) -> C.FigureResult:
    return C.run_figure(sys.modules[__name__], profile, out_dir, refresh)


if __name__ == "__main__":
    sys.exit(C.script_main(sys.modules[__name__]))
