r"""Figure 11: the equilibrium ELR under weight decay, measured vs :math:`\sqrt{2\eta\lambda/(1+\beta)}`.

With coupled weight decay :math:`\lambda` (and heavy-ball momentum :math:`\beta`) the
norm model has an equilibrium at which every scale-invariant layer's update ELR
:math:`\|\Delta w\|/\|w\|` is :math:`\sqrt{2\eta\lambda/(1+\beta)}` to leading order,
independent of its gradient (:func:`normdyn.theory.numeric.momentum_equilibrium_update_elr_leading`).
For several :math:`(\eta, \lambda, \beta)`:

* ``real`` -- a plain BatchNorm MLP trained with ``torch.optim.SGD(lr, momentum,
  weight_decay)`` (:func:`normdyn.validate.runs.run_training`);
* ``drift`` -- weight vectors with random tangent gradients of very different base
  gradients ``c`` (:func:`normdyn.simulate.drift.simulate_drift`): model evidence;
* ``drift_identity`` -- the drift rows at :math:`\beta = 0`: with projected gradients
  Pythagoras makes the recurrence exact, so they check the simulator, not the theory.

The measured update ELR is the root mean square over the last ``window`` fraction of the
steps (the equilibrium balances the expected *squared* step against the decay).

CSV columns (one row per source, configuration, seed and layer)
---------------------------------------------------------------
``source``                ``real``, ``drift`` or ``drift_identity``
``lr``                    :math:`\eta`
``weight_decay``          :math:`\lambda`
``momentum``              :math:`\beta`
``seed``                  seed
``layer``                 layer name / index
``measured_update_elr``   RMS update ELR over the final window
``predicted_update_elr``  :math:`\sqrt{2\eta\lambda/(1+\beta)}`
``rel_error``             ``measured/predicted - 1``
``steps``                 number of steps of the run
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

if __package__ in (None, ""):  # run as a file: python paper_figures/figNN_<slug>.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from paper_figures import _common as C  # noqa: E402

FIGURE = "fig11"
SLUG = "weight_decay_equilibrium"
TITLE = "Equilibrium ELR under weight decay: measured vs sqrt(2 eta lam/(1+beta))"
COLUMNS = ("source", "lr", "weight_decay", "momentum", "seed", "layer",
           "measured_update_elr", "predicted_update_elr", "rel_error", "steps")
CONFIGS = {
    "micro": {"settings": [[0.1, 0.05, 0.0], [0.1, 0.05, 0.9]], "steps": 6, "window": 0.5,
              "depth": 2, "width": 16, "batch_size": 32, "seeds": [0],
              "drift_c": [0.1, 10.0], "drift_elements": 64, "drift_steps": 50},
    "quick": {"settings": [[0.1, 0.1, 0.0], [0.2, 0.05, 0.0], [0.1, 0.05, 0.0],
                           [0.1, 0.05, 0.5], [0.05, 0.05, 0.9]],
              "steps": 2000, "window": 0.25, "depth": 4, "width": 64, "batch_size": 64,
              "seeds": [0, 1, 2], "drift_c": [0.1, 1.0, 10.0, 100.0], "drift_elements": 1000,
              "drift_steps": 3000},
    "deep": {"settings": [[0.1, 0.1, 0.0], [0.2, 0.05, 0.0], [0.1, 0.05, 0.0],
                          [0.1, 0.05, 0.5], [0.05, 0.05, 0.9]],
             "steps": 3000, "window": 0.25, "depth": 8, "width": 128, "batch_size": 64,
             "seeds": [0, 1, 2], "drift_c": [0.1, 1.0, 10.0, 100.0], "drift_elements": 1000,
             "drift_steps": 3000},
    "full": {"settings": [[0.1, 5e-4, 0.9], [0.1, 5e-3, 0.9], [0.1, 0.05, 0.0],
                          [0.05, 0.05, 0.0], [0.1, 0.02, 0.0], [0.1, 0.05, 0.5],
                          [0.05, 0.05, 0.9]],
             "steps": 20000, "window": 0.25, "depth": 8, "width": 256, "batch_size": 128,
             "seeds": [0, 1, 2], "drift_c": [0.1, 1.0, 10.0, 100.0],
             "drift_elements": 10000, "drift_steps": 20000},
}


def output_stem(profile: str) -> str:
    cfg = C.config_for(CONFIGS, profile)
    return C.make_stem(FIGURE, SLUG, f"mlp{cfg['depth']}x{cfg['width']}_steps{cfg['steps']}",
                       profile)


def _window_rms(table: pd.DataFrame, window: float) -> pd.Series:
    r"""Root mean square of the update ELR per layer over the final ``window`` of the steps.

    The equilibrium is a balance of the *expected squared* step against the weight decay
    (:math:`E[\|\Delta w\|^2]/\sigma^2 = 2\eta\lambda/(1+\beta)`), so the RMS is the
    statistic the prediction is about; with fluctuating gradient norms the median or the
    mean of the ELR sit below it.
    """
    last = table["step"].max()
    tail = table[table["step"] >= (1 - window) * (last + 1)]
    return np.sqrt((tail["update_elr"] ** 2).groupby(tail["layer"]).mean())


def _specs(cfg: dict, profile: str) -> list[tuple[dict, dict]]:
    device = C.run_device(profile)
    return [({"seed": seed, "lr": lr, "weight_decay": wd, "momentum": beta},
             dict(arch="mlp", data="digits", depth=cfg["depth"], width=cfg["width"],
                  steps=cfg["steps"], batch_size=cfg["batch_size"], lr=lr, momentum=beta,
                  weight_decay=wd, seed=seed, device=device, checkpoint_every=10**9,
                  sync_every=min(cfg["steps"], 200)))
            for lr, wd, beta in cfg["settings"] for seed in cfg["seeds"]]


def plan(profile: str) -> list[dict]:
    """The training runs of ``profile`` (:func:`paper_figures._common.train_run` kwargs)."""
    return [kw for _, kw in _specs(C.config_for(CONFIGS, profile), profile)]


def _measure(cfg: dict, cache_dir, refresh: bool, profile: str) -> pd.DataFrame:
    from normdyn.simulate.drift import simulate_drift
    from normdyn.theory.numeric import momentum_equilibrium_update_elr_leading as predict

    C.torch_setup(profile)
    rows = []
    for labels, kwargs in _specs(cfg, profile):
        lr, wd, beta, seed = (labels["lr"], labels["weight_decay"], labels["momentum"],
                              labels["seed"])
        pred = float(predict(lr, wd, beta))
        table, _, _ = C.train_run(cache_dir, refresh, **kwargs)
        for layer, value in _window_rms(table, cfg["window"]).items():
            rows.append({"source": "real", "lr": lr, "weight_decay": wd, "momentum": beta,
                         "seed": seed, "layer": str(layer), "measured_update_elr": value,
                         "predicted_update_elr": pred, "steps": cfg["steps"]})
        c = np.asarray(cfg["drift_c"], dtype=float)
        sim = simulate_drift(1.0, c, np.full(c.size, cfg["drift_elements"]), lr,
                             cfg["drift_steps"], momentum=beta, weight_decay=wd,
                             projected=True, seed=seed)
        for layer, value in _window_rms(sim, cfg["window"]).items():
            rows.append({"source": "drift" if beta > 0 else "drift_identity", "lr": lr,
                         "weight_decay": wd, "momentum": beta, "seed": seed,
                         "layer": f"c={c[int(layer)]:g}", "measured_update_elr": value,
                         "predicted_update_elr": pred, "steps": cfg["drift_steps"]})
    frame = pd.DataFrame(rows)
    frame["rel_error"] = frame["measured_update_elr"] / frame["predicted_update_elr"] - 1
    return frame


def measure(profile: str = "quick", cache_dir: str | Path | None = None,
            refresh: bool = False) -> pd.DataFrame:
    """One row per source, configuration, seed and layer; see the module docstring."""
    cfg = C.config_for(CONFIGS, profile)
    return C.cached_frame(cache_dir, output_stem(profile), cfg,
                          lambda: _measure(cfg, cache_dir, refresh, profile), refresh)


def plot(df: pd.DataFrame, out_dir: str | Path, profile: str) -> list[Path]:
    fig, axes = C.subplots(1, 2, width=4.2, height=3.5)
    ax = axes[0, 0]
    markers = {"real": "o", "drift": "x", "drift_identity": "+"}
    settings = df[["lr", "weight_decay", "momentum"]].drop_duplicates()
    colors = C.layer_colors(len(settings), "tab10")
    for color, (_, s) in zip(colors, settings.iterrows(), strict=True):
        d = df[(df["lr"] == s["lr"]) & (df["weight_decay"] == s["weight_decay"])
               & (df["momentum"] == s["momentum"])]
        for source, marker in markers.items():
            e = d[d["source"] == source]
            ax.scatter(e["predicted_update_elr"], e["measured_update_elr"], marker=marker,
                       color=color, s=22,
                       label=(rf"$\eta$={s['lr']:g}, $\lambda$={s['weight_decay']:g}, "
                              rf"$\beta$={s['momentum']:g}") if source == "real" else None)
    lo = float(min(df["predicted_update_elr"].min(), df["measured_update_elr"].min())) * 0.8
    hi = float(max(df["predicted_update_elr"].max(), df["measured_update_elr"].max())) * 1.25
    ax.plot([lo, hi], [lo, hi], color="k", lw=0.8, ls="--", label="measured = predicted")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(r"predicted $\sqrt{2\eta\lambda/(1+\beta)}$")
    ax.set_ylabel("measured update ELR (o real, x drift)")
    ax.set_title("equilibrium update ELR")
    ax.legend(fontsize=6)
    ax = axes[0, 1]
    labels = [f"{r.lr:g}/{r.weight_decay:g}/{r.momentum:g}" for r in settings.itertuples()]
    for k, source in enumerate(("real", "drift", "drift_identity")):
        vals = [df[(df["source"] == source) & (df["lr"] == r.lr)
                   & (df["weight_decay"] == r.weight_decay)
                   & (df["momentum"] == r.momentum)]["rel_error"].to_numpy()
                for r in settings.itertuples()]
        vals = [v if v.size else np.array([np.nan]) for v in vals]
        pos = np.arange(len(vals)) + (k - 1) * 0.28
        ax.boxplot(vals, positions=pos, widths=0.22, showfliers=False,
                   patch_artist=True, boxprops={"facecolor": f"C{k}", "alpha": 0.5})
        ax.plot([], [], color=f"C{k}", lw=6, alpha=0.5, label=source)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(np.arange(len(labels)))
    ax.set_xticklabels(labels, rotation=30, fontsize=7)
    ax.set_xlabel(r"$\eta/\lambda/\beta$")
    ax.set_ylabel("measured/predicted - 1 (over layers)")
    ax.set_title("relative error")
    ax.legend()
    C.footnote(fig, profile)
    return C.save_figure(fig, out_dir, output_stem(profile))


def main(profile: str = "quick", out_dir: str | Path = C.DEFAULT_OUT,
         refresh: bool = False) -> C.FigureResult:
    return C.run_figure(sys.modules[__name__], profile, out_dir, refresh)


if __name__ == "__main__":
    sys.exit(C.script_main(sys.modules[__name__]))
