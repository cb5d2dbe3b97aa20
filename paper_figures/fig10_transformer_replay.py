r"""Figure 10: a Transformer with LayerNorm -- measured ELRs vs the norm-level model.

A small Transformer encoder (post-LN and pre-LN) is trained with plain SGD on the
synthetic sequence task (:func:`normdyn.validate.runs.run_training`), recording every
weight matrix's :math:`\sigma^2`, :math:`\|\nabla w\|` and ELR.  Two simulations of the
discrete model (:func:`normdyn.simulate.simulate_discrete`) start from the measured
:math:`\sigma^2_0`:

``replay``      the measured base gradients :math:`c_t = \|\nabla w_t\|\,\|w_t\|` of every
                step are fed in (tests the norm recursion itself: exact for an
                orthogonal gradient, off by the scale-invariance defect otherwise);
``constant_c``  :math:`c` frozen at its step-0 value (tests the model's prediction).

Transformer weight matrices are not exactly scale invariant (biases, residual additions
between them and the LayerNorm); ``cos_wg`` records the defect
:math:`\cos(w, \nabla w)`.

CSV columns (one row per norm position, source, seed, recorded step and layer)
------------------------------------------------------------------------------
``norm_position``  ``post`` or ``pre`` (LayerNorm placement)
``source``         ``measured``, ``replay`` or ``constant_c``
``seed``           seed
``step``           optimizer step
``layer``          parameter name
``lr``             learning rate
``sigma2``         :math:`\|w\|^2`
``elr``            gradient ELR :math:`\eta c/\sigma^2`
``cos_wg``         measured :math:`\cos(w,\nabla w)` (NaN for the simulations)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

if __package__ in (None, ""):  # run as a file: python paper_figures/figNN_<slug>.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from paper_figures import _common as C  # noqa: E402

FIGURE = "fig10"
SLUG = "transformer_replay"
TITLE = "Transformer with LayerNorm: measured ELRs vs simulated (replay / constant c)"
FLOAT_FORMAT = C.COMPACT_FLOATS  # per-step tables: small enough to commit
COLUMNS = ("norm_position", "source", "seed", "step", "layer", "lr", "sigma2", "elr",
           "cos_wg")
CONFIGS = {
    "micro": {"positions": ["post"], "depth": 1, "width": 16, "batch_size": 32,
              "n_samples": 256, "steps": 5, "lr": 0.1, "seeds": [0]},
    "quick": {"positions": ["post", "pre"], "depth": 2, "width": 32, "batch_size": 64,
              "n_samples": 2048, "steps": 400, "lr": 0.1, "seeds": [0, 1, 2]},
    "deep": {"positions": ["post", "pre"], "depth": 6, "width": 64, "batch_size": 64,
             "n_samples": 4096, "steps": 1000, "lr": 0.1, "seeds": [0, 1, 2]},
    "full": {"positions": ["post", "pre"], "depth": 6, "width": 128, "batch_size": 128,
             "n_samples": 20000, "steps": 5000, "lr": 0.1, "seeds": [0, 1, 2]},
}


def output_stem(profile: str) -> str:
    cfg = C.config_for(CONFIGS, profile)
    return C.make_stem(FIGURE, SLUG, f"layers{cfg['depth']}_d{cfg['width']}_lr{cfg['lr']:g}_"
                                     f"steps{cfg['steps']}", profile)


def _specs(cfg: dict, profile: str) -> list[tuple[dict, dict]]:
    device = C.run_device(profile)
    return [({"seed": seed, "position": pos},
             dict(arch="transformer", data="sequences", depth=cfg["depth"], width=cfg["width"],
                  norm_position=pos, n_samples=cfg["n_samples"], steps=cfg["steps"],
                  batch_size=cfg["batch_size"], lr=cfg["lr"], seed=seed, device=device,
                  checkpoint_every=10**9, sync_every=min(cfg["steps"], 200)))
            for pos in cfg["positions"] for seed in cfg["seeds"]]


def plan(profile: str) -> list[dict]:
    """The training runs of ``profile`` (:func:`paper_figures._common.train_run` kwargs)."""
    return [kw for _, kw in _specs(C.config_for(CONFIGS, profile), profile)]


def _one(labels: dict, table: pd.DataFrame, meta: dict) -> pd.DataFrame:
    from normdyn.simulate import simulate_discrete
    from normdyn.theory.numeric import base_gradient

    position, seed = labels["position"], labels["seed"]
    layers = list(meta["tracked_layers"])
    sigma2 = table.pivot(index="step", columns="layer", values="sigma2")[layers]
    grad = table.pivot(index="step", columns="layer", values="grad_norm")[layers]
    lr_t = table.groupby("step")["lr"].first().to_numpy()
    steps = len(sigma2)
    c = base_gradient(grad.to_numpy(float), np.sqrt(sigma2.to_numpy(float)))
    c = np.maximum(c, np.finfo(float).tiny)
    s0 = sigma2.iloc[0].to_numpy(float)
    measured = table.assign(source="measured")
    frames = [measured]
    if not np.allclose(lr_t, lr_t[0]):
        raise ValueError("fig10 assumes a constant lr")
    for source, c_in in (("replay", c), ("constant_c", c[0])):
        sim = simulate_discrete(s0, c_in, float(lr_t[0]), steps - 1, engine="numpy")
        sim["layer"] = sim["layer"].map(dict(enumerate(layers)))
        frames.append(sim.assign(source=source, cos_wg=np.nan))
    out = pd.concat([f[["source", "step", "layer", "lr", "sigma2", "elr", "cos_wg"]]
                     for f in frames], ignore_index=True)
    return out.assign(norm_position=position, seed=seed)


def _measure(cfg: dict, cache_dir, refresh: bool, profile: str) -> pd.DataFrame:
    C.torch_setup(profile)
    frames = []
    for labels, kwargs in _specs(cfg, profile):
        table, _, meta = C.train_run(cache_dir, refresh, **kwargs)
        frames.append(_one(labels, table, meta))
    return pd.concat(frames, ignore_index=True)[list(COLUMNS)]


def measure(profile: str = "quick", cache_dir: str | Path | None = None,
            refresh: bool = False) -> pd.DataFrame:
    """One row per norm position, source, seed, step and layer; see the module docstring."""
    cfg = C.config_for(CONFIGS, profile)
    return C.cached_frame(cache_dir, output_stem(profile), cfg,
                          lambda: _measure(cfg, cache_dir, refresh, profile), refresh)


def plot(df: pd.DataFrame, out_dir: str | Path, profile: str) -> list[Path]:
    positions = list(dict.fromkeys(df["norm_position"]))
    fig, axes = C.subplots(len(positions), 2, width=4.2, height=3.1)
    seed = sorted(df["seed"].unique())[0]
    styles = {"measured": dict(ls="-", lw=1.2), "replay": dict(ls="--", lw=1.0),
              "constant_c": dict(ls=":", lw=1.2)}
    for row, pos in enumerate(positions):
        d = df[(df["norm_position"] == pos) & (df["seed"] == seed)]
        layers = list(dict.fromkeys(d["layer"]))
        colors = dict(zip(layers, C.layer_colors(len(layers)), strict=True))
        ax = axes[row, 0]
        for source, style in styles.items():
            for layer in layers:
                g = d[(d["source"] == source) & (d["layer"] == layer)]
                ax.plot(g["step"] + 1, g["elr"], color=colors[layer], **style)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("step + 1")
        ax.set_ylabel("ELR")
        ax.set_title(f"{pos}-LN: measured (solid), replay (--), constant c (:)")
        ax = axes[row, 1]
        wide = d.pivot_table(index=["step", "layer"], columns="source", values="elr")
        for source in ("replay", "constant_c"):
            if source not in wide:
                continue
            err = (wide[source] / wide["measured"] - 1).abs().groupby(level=0).median()
            ax.plot(err.index + 1, err.values, label=source, **styles[source], color="k")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("step + 1")
        ax.set_ylabel("median |sim/measured - 1| over layers")
        ax.set_title(f"{pos}-LN: relative ELR error")
        ax.legend()
    C.footnote(fig, profile, "all weight matrices of the encoder; colour: depth")
    return C.save_figure(fig, out_dir, output_stem(profile))


def main(profile: str = "quick", out_dir: str | Path = C.DEFAULT_OUT,
         refresh: bool = False) -> C.FigureResult:
    return C.run_figure(sys.modules[__name__], profile, out_dir, refresh)


if __name__ == "__main__":
    sys.exit(C.script_main(sys.modules[__name__]))
