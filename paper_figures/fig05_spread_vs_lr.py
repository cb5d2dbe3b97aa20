r"""Figure 5: simulated relative ELR spread after 10 steps vs the learning rate.

A NoShort-like network of ``depth`` scale-invariant layers starts with equal weight
norms and base gradients that explode towards the input
(:func:`paper_figures._common.explosion_profile`, ``decades_per_layer`` calibrated on a
Kaiming-initialized ResNet NoShort: about 3.3 decades of ``c`` over ResNet-56).  For
every constant lr of a log grid the discrete model
(:func:`normdyn.simulate.simulate_discrete`) runs ``steps`` steps; the spread
:math:`\max_\ell E_\ell/\min_\ell E_\ell` after them is plotted against the lr, with the
predicted critical lr :math:`\eta^* = 1/\sqrt{a_{\max}a_{\min}}`
(:func:`normdyn.theory.numeric.critical_lr_of`) marked.  The exact one-step spread
:func:`normdyn.theory.numeric.one_step_spread` is drawn for reference.

Where torch is installed, a second panel checks the same one-step prediction on a real
network: from a Kaiming-initialized ResNet NoShort,
:func:`normdyn.validate.runs.one_step_lr_sweep` takes one SGD step at each lr of a
sweep around the predicted :math:`\eta^*` (from the measured per-unit-lr ELRs) and
measures the spread at the new weights (rows with ``source == "real_one_step"``).

The real sweep is repeated for every seed of ``real["seeds"]`` (a fresh initialization
and batch each): its argmin lr against each seed's own :math:`\eta^*` is graded.

CSV columns (one row per source, depth, seed and lr)
----------------------------------------------------
``source``            ``simulated`` (discrete model) or ``real_one_step`` (torch sweep)
``seed``              seed of the real sweep (0 for the simulation)
``depth``             number of layers of the profile / depth of the ResNet
``lr``                constant learning rate
``steps``             number of simulated steps
``spread``            ELR spread after ``steps`` steps (discrete model; measured for the
                      real sweep)
``spread_one_step``   ELR spread after one step predicted by the closed form
                      ``one_step_spread`` (constant ``c``)
``initial_spread``    ELR spread before the first step (independent of the lr)
``critical_lr``       predicted :math:`\eta^*` of the initial state (per seed)
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd

if __package__ in (None, ""):  # run as a file: python paper_figures/figNN_<slug>.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from paper_figures import _common as C  # noqa: E402

FIGURE = "fig05"
SLUG = "spread_vs_lr"
TITLE = "Simulated relative ELR spread after 10 steps vs learning rate (discrete model)"
COLUMNS = ("source", "depth", "seed", "lr", "steps", "spread", "spread_one_step", "initial_spread",
           "critical_lr")
DECADES_PER_LAYER = 0.06
CONFIGS = {
    "micro": {"depths": [20], "steps": 10, "lr_min": 1e-4, "lr_max": 1e3, "n_lrs": 29,
              "decades_per_layer": DECADES_PER_LAYER,
              "real": {"depth": 8, "width": 4, "data": "digits", "batch_size": 32,
                       "n_lrs": 5, "seeds": [0]}},
    "quick": {"depths": [56], "steps": 10, "lr_min": 1e-4, "lr_max": 1e3, "n_lrs": 281,
              "decades_per_layer": DECADES_PER_LAYER,
              "real": {"depth": 56, "width": 8, "data": "digits", "batch_size": 128,
                       "n_lrs": 41, "seeds": [0, 1, 2]}},
    "deep": {"depths": [56, 110], "steps": 10, "lr_min": 1e-4, "lr_max": 1e3, "n_lrs": 281,
             "decades_per_layer": DECADES_PER_LAYER,
             "real": {"depth": 110, "width": 16, "data": "digits", "batch_size": 128,
                      "n_lrs": 41, "seeds": [0, 1, 2]}},
    "full": {"depths": [20, 56, 110], "steps": 10, "lr_min": 1e-6, "lr_max": 1e4,
             "n_lrs": 1001, "decades_per_layer": DECADES_PER_LAYER,
             "real": {"depth": 56, "width": 16, "data": "digits32", "batch_size": 128,
                      "n_lrs": 81, "seeds": [0, 1, 2]}},
}


def output_stem(profile: str) -> str:
    cfg = C.config_for(CONFIGS, profile)
    depths = "-".join(str(d) for d in cfg["depths"])
    return C.make_stem(FIGURE, SLUG, f"L{depths}_steps{cfg['steps']}", profile)


def _measure(cfg: dict) -> pd.DataFrame:
    from normdyn.simulate import simulate_discrete
    from normdyn.theory.numeric import critical_lr_of, one_step_spread

    lrs = np.geomspace(cfg["lr_min"], cfg["lr_max"], cfg["n_lrs"])
    frames = []
    for depth in cfg["depths"]:
        sigma2_0, c = C.explosion_profile(depth, cfg["decades_per_layer"] * (depth - 1))
        a = c / sigma2_0
        sim = simulate_discrete(sigma2_0, c, lrs, cfg["steps"], record=cfg["steps"],
                                engine="numpy")
        final = sim[sim["step"] == cfg["steps"]].groupby("lr", as_index=False)["spread"].first()
        frames.append(pd.DataFrame({
            "source": "simulated", "depth": depth, "seed": 0, "lr": final["lr"],
            "steps": cfg["steps"],
            "spread": final["spread"],
            "spread_one_step": one_step_spread(final["lr"].to_numpy(), a),
            "initial_spread": C.spread_of(a), "critical_lr": critical_lr_of(a),
        }))
    if importlib.util.find_spec("torch") is not None:
        frames += [_real_one_step(cfg["real"], seed) for seed in cfg["real"]["seeds"]]
    return pd.concat(frames, ignore_index=True)


def _real_one_step(real: dict, seed: int) -> pd.DataFrame:
    """One SGD step from a ResNet NoShort at init, for lrs around the predicted eta*."""
    import torch
    import torch.nn.functional as F

    from normdyn.theory.numeric import critical_lr_of
    from normdyn.validate.detection import find_scale_invariant
    from normdyn.validate.models import resnet_cifar
    from normdyn.validate.runs import default_sweep_lrs, one_step_lr_sweep

    torch.set_num_threads(1)
    X, y = C.load_dataset(real["data"], "train", seed)
    torch.manual_seed(seed)
    model = resnet_cifar(real["depth"], shortcuts=False, width=real["width"],
                         in_channels=int(X.shape[1]))
    batch = (X[: real["batch_size"]], y[: real["batch_size"]])
    layers = find_scale_invariant(model)
    probe = one_step_lr_sweep(model, batch, F.cross_entropy, [1.0], layers)
    a0 = np.asarray(probe.attrs["a0"])
    lrs = default_sweep_lrs(critical_lr_of(a0), n=real["n_lrs"])
    sweep = one_step_lr_sweep(model, batch, F.cross_entropy, lrs, layers)
    return pd.DataFrame({
        "source": "real_one_step", "depth": real["depth"], "seed": seed, "lr": sweep["lr"],
        "steps": 1,
        "spread": sweep["spread_measured"], "spread_one_step": sweep["spread_predicted"],
        "initial_spread": C.spread_of(a0), "critical_lr": sweep["critical_lr_predicted"],
    })


def measure(profile: str = "quick", cache_dir: str | Path | None = None,
            refresh: bool = False) -> pd.DataFrame:
    """One row per depth and lr; see the module docstring for the columns."""
    cfg = C.config_for(CONFIGS, profile)
    return C.cached_frame(cache_dir, output_stem(profile), cfg, lambda: _measure(cfg), refresh)


def plot(df: pd.DataFrame, out_dir: str | Path, profile: str) -> list[Path]:
    sources = [s for s in ("simulated", "real_one_step") if s in set(df["source"])]
    fig, axes = C.subplots(1, len(sources), width=5.0, height=3.8)
    titles = {"simulated": "discrete model, NoShort-like profile",
              "real_one_step": "real ResNet NoShort, one SGD step from init"}
    for ax, source in zip(axes[0], sources, strict=True):
        d_src = df[df["source"] == source]
        depths = sorted(d_src["depth"].unique())
        colors = C.layer_colors(len(depths), "plasma")
        for color, depth in zip(colors, depths, strict=True):
            d = d_src[(d_src["depth"] == depth) & (d_src["seed"] == d_src["seed"].min())]
            d = d.sort_values("lr")
            steps = int(d["steps"].iloc[0])
            eta = float(d["critical_lr"].iloc[0])
            what = "measured" if source == "real_one_step" else "simulated"
            ax.plot(d["lr"], d["spread"], color=color, lw=1.6,
                    label=f"L={depth}: {what}, after {steps} step{'s' * (steps > 1)}")
            ax.plot(d["lr"], d["spread_one_step"], color=color, lw=0.9, ls=":",
                    label=f"L={depth}: model, after 1 step (closed form)")
            ax.axhline(float(d["initial_spread"].iloc[0]), color=color, lw=0.6, ls="-.",
                       alpha=0.6)
            i = int(np.nanargmin(d["spread"].to_numpy()))
            C.mark_critical_lr(ax, eta, label=rf"L={depth}: predicted $\eta^*$={eta:.3g}",
                               color=color)
            ax.plot(d["lr"].iloc[i], d["spread"].iloc[i], "o", color=color, ms=4,
                    label=f"L={depth}: argmin {d['lr'].iloc[i]:.3g}")
        C.log_lr_axis(ax)
        ax.set_yscale("log")
        ax.set_ylabel(r"ELR spread $\max_\ell E_\ell / \min_\ell E_\ell$")
        ax.set_title(titles[source])
        ax.legend(loc="upper left")
    C.footnote(fig, profile, "dash-dot: initial spread; real panel: first seed")
    return C.save_figure(fig, out_dir, output_stem(profile))


def main(profile: str = "quick", out_dir: str | Path = C.DEFAULT_OUT,
         refresh: bool = False) -> C.FigureResult:
    return C.run_figure(sys.modules[__name__], profile, out_dir, refresh)


if __name__ == "__main__":
    sys.exit(C.script_main(sys.modules[__name__]))
