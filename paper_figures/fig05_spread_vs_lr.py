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

Where torch is installed, the real panels check the same one-step prediction on real
networks: from a Kaiming-initialized ResNet (``real["depths"]`` x Short/NoShort x
``real["seeds"]``), :func:`normdyn.validate.lr_sweep.one_step_layer_table` takes one SGD
step at each lr of a sweep around the predicted :math:`\eta^*` (from the measured
per-unit-lr ELRs; 0.1-decade grid over +-2 decades plus a 0.025-decade grid over +-0.3
decade, :func:`normdyn.validate.lr_sweep.refined_sweep_lrs`) and measures the spread at
the new weights (rows with ``source == "real_one_step"``), with three gradients after the
step (column ``gradient``):

``real``            the measured gradient at the new weights;
``constant_c``      positive control: the model's gradient, ``g0`` projected on the tangent
                    space of ``w1`` with norm ``|g0||w0|/|w1|`` (so ``c`` is constant);
``random_tangent``  positive control: a random tangent vector of that same norm.

and two probes (column ``probe``): the gradient after the step on the ``same_batch`` as
``g0`` or on a ``fresh_batch`` (the next ``batch_size`` training samples).  The controls
do not use the probe batch (their rows are the same for both probes).  The controls obey
the model, so their argmin must sit at :math:`\eta^*` to within the grid: that checks
the pipeline that grades the real rows.  The side table ``<stem>_c_ratio.csv`` logs
:math:`c_1/c_0` per layer and lr.  The grading threshold is drawn in the shift panel.

CSV columns (one row per source, depth, shortcuts, seed, lr, gradient and probe)
-------------------------------------------------------------------------------
``source``            ``simulated`` (discrete model) or ``real_one_step`` (torch sweep)
``depth``             number of layers of the profile / depth of the ResNet
``shortcuts``         ResNet with shortcuts (``True``) or NoShort (``False``; the simulation)
``seed``              seed of the real sweep (0 for the simulation)
``lr``                constant learning rate
``steps``             number of steps (simulated: ``steps``; real: 1)
``spread``            ELR spread after ``steps`` steps, max/min over the live layers
                      (:func:`normdyn._spread.spread_max_min`)
``spread_one_step``   ELR spread after one step predicted by the closed form
                      ``one_step_spread`` (constant ``c``)
``initial_spread``    live ELR spread before the first step (independent of the lr)
``critical_lr``       predicted :math:`\eta^*` of the initial state (per seed)
``gradient``          ``real``, ``constant_c`` or ``random_tangent`` (simulated:
                      ``constant_c``, the model)
``probe``             ``same_batch`` or ``fresh_batch`` (simulated: ``same_batch``)
``robust_spread_one_step``  Q0.95/Q0.05 of the live layers' ELRs after the step
                      (:func:`normdyn._spread.robust_spread`; NaN for the simulation)
``dead_layers``       layers with a zero gradient or vanishing ELR after the step

Side table ``c_ratio`` (one row per depth, shortcuts, seed, lr, gradient, probe, layer)
-------------------------------------------------------------------------------------
``depth, shortcuts, seed, lr, gradient, probe`` as above (real sweeps only: the real
gradient at every lr of the 0.1-decade grid for both probes; the controls, exactly 1 by
construction and the same for both probes, at the grid's whole decades from
:math:`\eta^*` with ``probe = same_batch`` only, which keeps the table small enough to
commit), ``layer`` (index of the scale-invariant layer, 0 = input side), ``c_ratio``
(:math:`c_1/c_0 = \lVert g_1\rVert\lVert w_1\rVert / (\lVert g_0\rVert\lVert w_0\rVert)`).
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
COLUMNS = ("source", "depth", "shortcuts", "seed", "lr", "steps", "spread", "spread_one_step",
           "initial_spread", "critical_lr", "gradient", "probe", "robust_spread_one_step",
           "dead_layers")
SIDE_COLUMNS = {"c_ratio": ("depth", "shortcuts", "seed", "lr", "gradient", "probe", "layer",
                            "c_ratio")}
FLOAT_FORMAT = C.COMPACT_FLOATS
GRADIENTS = ("real", "constant_c", "random_tangent")
PROBES = ("same_batch", "fresh_batch")
DECADES_PER_LAYER = 0.06
_SWEEP = {"decades": 2.0, "n_lrs": 41, "fine_decades": 0.3, "fine_n": 25}
CONFIGS = {
    "micro": {"depths": [20], "steps": 10, "lr_min": 1e-4, "lr_max": 1e3, "n_lrs": 29,
              "decades_per_layer": DECADES_PER_LAYER,
              "real": {"depths": [8], "shortcuts": [False, True], "width": 4, "data": "digits",
                       "batch_size": 32, "decades": 1.0, "n_lrs": 5, "fine_decades": 0.1,
                       "fine_n": 3, "seeds": [0]}},
    "quick": {"depths": [56], "steps": 10, "lr_min": 1e-4, "lr_max": 1e3, "n_lrs": 281,
              "decades_per_layer": DECADES_PER_LAYER,
              "real": {"depths": [20, 56], "shortcuts": [False, True], "width": 8,
                       "data": "digits", "batch_size": 128, **_SWEEP, "seeds": [0, 1, 2]}},
    "deep": {"depths": [56, 110], "steps": 10, "lr_min": 1e-4, "lr_max": 1e3, "n_lrs": 281,
             "decades_per_layer": DECADES_PER_LAYER,
             "real": {"depths": [56, 110], "shortcuts": [False, True], "width": 16,
                      "data": "fashion-mnist", "image_size": 28, "batch_size": 64,
                      **_SWEEP, "seeds": [0, 1, 2]}},
    "full": {"depths": [20, 56, 110], "steps": 10, "lr_min": 1e-6, "lr_max": 1e4,
             "n_lrs": 1001, "decades_per_layer": DECADES_PER_LAYER,
             "real": {"depths": [56, 110], "shortcuts": [False, True], "width": 16,
                      "data": "digits32", "batch_size": 128, "decades": 2.0, "n_lrs": 81,
                      "fine_decades": 0.3, "fine_n": 25, "seeds": [0, 1, 2]}},
}


def output_stem(profile: str) -> str:
    cfg = C.config_for(CONFIGS, profile)
    depths = "-".join(str(d) for d in cfg["depths"])
    return C.make_stem(FIGURE, SLUG, f"L{depths}_steps{cfg['steps']}", profile)


def _simulated(cfg: dict) -> pd.DataFrame:
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
            "source": "simulated", "depth": depth, "shortcuts": False, "seed": 0,
            "lr": final["lr"], "steps": cfg["steps"], "spread": final["spread"],
            "spread_one_step": one_step_spread(final["lr"].to_numpy(), a),
            "initial_spread": C.spread_of(a), "critical_lr": critical_lr_of(a),
            "gradient": "constant_c", "probe": "same_batch",
            "robust_spread_one_step": np.nan, "dead_layers": 0,
        }))
    return pd.concat(frames, ignore_index=True)


def _measure(cfg: dict) -> dict[str, pd.DataFrame]:
    frames, ratios = [_simulated(cfg)], []
    if importlib.util.find_spec("torch") is not None:
        real = cfg["real"]
        for depth in real["depths"]:
            for shortcuts in real["shortcuts"]:
                for seed in real["seeds"]:
                    rows, ratio = _real_one_step(real, depth, bool(shortcuts), seed)
                    frames.append(rows)
                    ratios.append(ratio)
    ratio = (pd.concat(ratios, ignore_index=True) if ratios
             else pd.DataFrame(columns=list(SIDE_COLUMNS["c_ratio"])))
    return {"main": pd.concat(frames, ignore_index=True)[list(COLUMNS)], "c_ratio": ratio}


def _training_data(real: dict, seed: int):
    """``(X, y)``: the training split a run of this data set and seed would see."""
    from normdyn.validate.runs import RunConfig, _load_data

    extra = {"image_size": real["image_size"]} if (
        "image_size" in real and C.has_run_field("image_size")) else {}
    cfg = RunConfig(arch="resnet", data=C.resolve_data(real["data"]), seed=seed,
                    **extra).resolved()
    return _load_data(cfg, "train")


def _real_one_step(real: dict, depth: int, shortcuts: bool,
                   seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One SGD step from a ResNet at init, for lrs around its predicted eta*."""
    import torch
    import torch.nn.functional as F

    from normdyn._spread import dead_mask, spread_max_min
    from normdyn.layers.detection import find_scale_invariant
    from normdyn.theory.numeric import critical_lr_of
    from normdyn.validate.lr_sweep import (
        one_step_layer_table,
        refined_sweep_lrs,
        sweep_of_layer_table,
    )
    from normdyn.validate.models import resnet_cifar

    torch.set_num_threads(1)
    X, y = _training_data(real, seed)
    n = real["batch_size"]
    if len(X) < 2 * n:
        raise ValueError(f"real.batch_size: {n} needs {2 * n} training samples for the "
                         f"fresh-batch probe, the data set has {len(X)}")
    torch.manual_seed(seed)
    model = resnet_cifar(depth, shortcuts=shortcuts, width=real["width"],
                         in_channels=int(X.shape[1]))
    batch, fresh = (X[:n], y[:n]), (X[n:2 * n], y[n:2 * n])
    layers = find_scale_invariant(model)
    probe = one_step_layer_table(model, batch, F.cross_entropy, [1.0], layers)
    a0, g0 = np.asarray(probe.attrs["a0"]), np.asarray(probe.attrs["g0_norm"])
    eta = critical_lr_of(a0[~dead_mask(a0, g0)])
    coarse = refined_sweep_lrs(eta, decades=real["decades"], n=real["n_lrs"], fine_n=0)
    lrs = refined_sweep_lrs(eta, decades=real["decades"], n=real["n_lrs"],
                            fine_decades=real["fine_decades"], fine_n=real["fine_n"])
    tables = {
        "same_batch": one_step_layer_table(model, batch, F.cross_entropy, lrs, layers,
                                           gradients=GRADIENTS, seed=seed),
        "fresh_batch": one_step_layer_table(model, batch, F.cross_entropy, lrs, layers,
                                            gradients=GRADIENTS, probe_batch=fresh, seed=seed),
    }
    frames, ratios = [], []
    index = {name: i for i, name in enumerate(probe.attrs["layers"])}
    on_coarse = lambda v: np.isin(v, coarse)  # noqa: E731
    step = max(1, round((len(coarse) - 1) / (2 * real["decades"])))
    decade_lrs = coarse[::step]
    for name, table in tables.items():
        sweep = sweep_of_layer_table(table)
        frames.append(pd.DataFrame({
            "source": "real_one_step", "depth": depth, "shortcuts": shortcuts, "seed": seed,
            "lr": sweep["lr"], "steps": 1, "spread": sweep["spread_measured"],
            "spread_one_step": sweep["spread_predicted"],
            "initial_spread": spread_max_min(a0, g0),
            "critical_lr": sweep["critical_lr_predicted"], "gradient": sweep["gradient"],
            "probe": name, "robust_spread_one_step": sweep["robust_spread_measured"],
            "dead_layers": sweep["dead_layers"],
        }))
        # c1/c0 of the real gradients on the 0.1-decade grid; the controls' (1 by
        # construction, the same for both probes) on the same batch at whole decades only,
        # so that the table stays small enough to commit
        lr_col, kind = table["lr"].to_numpy(), table["gradient"].to_numpy()
        keep = on_coarse(lr_col) & ((kind == "real") | (
            (name == "same_batch") & np.isin(lr_col, decade_lrs)))
        t = table[keep]
        ratios.append(pd.DataFrame({
            "depth": depth, "shortcuts": shortcuts, "seed": seed, "lr": t["lr"].to_numpy(),
            "gradient": t["gradient"].to_numpy(), "probe": name,
            "layer": t["layer"].map(index).to_numpy(), "c_ratio": t["c_ratio"].to_numpy()}))
    return pd.concat(frames, ignore_index=True), pd.concat(ratios, ignore_index=True)


def _tables(profile: str, cache_dir: str | Path | None, refresh: bool) -> dict[str, pd.DataFrame]:
    cfg = C.config_for(CONFIGS, profile)
    stem = output_stem(profile)
    frames = C.cached_frames(cache_dir, [stem, f"{stem}_c_ratio"], cfg,
                             lambda: dict(zip([stem, f"{stem}_c_ratio"],
                                              _measure(cfg).values(), strict=True)), refresh)
    return {"main": frames[stem], "c_ratio": frames[f"{stem}_c_ratio"]}


def measure(profile: str = "quick", cache_dir: str | Path | None = None,
            refresh: bool = False) -> pd.DataFrame:
    """One row per source, depth, shortcuts, seed, lr, gradient and probe (module docstring)."""
    return _tables(profile, cache_dir, refresh)["main"]


def side_tables(profile: str = "quick",
                cache_dir: str | Path | None = None) -> dict[str, pd.DataFrame]:
    """``{"c_ratio": ...}``: c1/c0 per layer and lr of the real sweeps (from the cache)."""
    return {"c_ratio": _tables(profile, cache_dir, False)["c_ratio"]}


def argmin_shift(df: pd.DataFrame) -> pd.DataFrame:
    """Per real sweep: ``log10(argmin lr / eta*)`` with its initial spread.

    Columns ``depth, shortcuts, seed, gradient, probe, initial_spread, shift``; the
    argmin is over the lrs with a finite spread.
    """
    rows = []
    d = df[df["source"] == "real_one_step"]
    for key, g in d.groupby(["depth", "shortcuts", "seed", "gradient", "probe"]):
        s = g["spread"].to_numpy(dtype=np.float64)
        if not np.isfinite(s).any():
            continue
        i = int(np.nanargmin(s))
        rows.append((*key, float(g["initial_spread"].iloc[0]),
                     float(np.log10(g["lr"].iloc[i] / g["critical_lr"].iloc[0]))))
    return pd.DataFrame(rows, columns=["depth", "shortcuts", "seed", "gradient", "probe",
                                       "initial_spread", "shift"])


_SHIFT_STYLE = {("real", "same_batch"): dict(color="k", marker="o", label="real, same batch"),
                ("real", "fresh_batch"): dict(color="tab:blue", marker="s",
                                              label="real, fresh batch"),
                ("constant_c", "same_batch"): dict(color="crimson", marker="x",
                                                   label="control: constant c"),
                ("random_tangent", "same_batch"): dict(color="tab:orange", marker="+",
                                                       label="control: random tangent")}


def _sweep_panel(ax, d_src: pd.DataFrame, source: str) -> None:
    groups = sorted({(int(a), bool(b)) for a, b in zip(d_src["depth"], d_src["shortcuts"],
                                                      strict=True)})
    colors = C.layer_colors(len(groups), "plasma")
    for color, (depth, shortcuts) in zip(colors, groups, strict=True):
        d = d_src[(d_src["depth"] == depth) & (d_src["shortcuts"] == shortcuts)
                  & (d_src["seed"] == d_src["seed"].min()) & (d_src["gradient"] == "real"
                                                              if source != "simulated"
                                                              else True)
                  & (d_src["probe"] == "same_batch")].sort_values("lr")
        name = f"{'Short' if shortcuts else 'NoShort'}-{depth}"
        steps = int(d["steps"].iloc[0])
        eta = float(d["critical_lr"].iloc[0])
        what = "measured" if source == "real_one_step" else "simulated"
        ax.plot(d["lr"], d["spread"], color=color, lw=1.5,
                label=f"{name}: {what}, {steps} step{'s' * (steps > 1)}")
        ax.plot(d["lr"], d["spread_one_step"], color=color, lw=0.9, ls=":")
        C.mark_critical_lr(ax, eta, label="_nolegend_", color=color, lw=0.8)
        i = int(np.nanargmin(d["spread"].to_numpy()))
        ax.plot(d["lr"].iloc[i], d["spread"].iloc[i], "o", color=color, ms=4)
    C.log_lr_axis(ax)
    ax.set_yscale("log")
    ax.set_ylabel(r"ELR spread $\max_\ell E_\ell / \min_\ell E_\ell$ (live layers)")


def plot(df: pd.DataFrame, out_dir: str | Path, profile: str) -> list[Path]:
    has_real = bool((df["source"] == "real_one_step").any())
    ncols = 3 if has_real else 1
    fig, axes = C.subplots(1, ncols, width=4.6, height=3.8)
    _sweep_panel(axes[0, 0], df[df["source"] == "simulated"], "simulated")
    axes[0, 0].set_title("discrete model, NoShort-like profile")
    C.legend_outside(axes[0, 0], loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=1)
    note = "dotted: closed-form one-step model; dashed: predicted eta*; dot: argmin"
    if has_real:
        real = df[df["source"] == "real_one_step"]
        _sweep_panel(axes[0, 1], real, "real_one_step")
        axes[0, 1].set_title("real ResNets, one SGD step (first seed)")
        C.legend_outside(axes[0, 1], loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)
        _shift_panel(axes[0, 2], argmin_shift(df))
    C.footnote(fig, profile, note)
    return C.save_figure(fig, out_dir, output_stem(profile))


def _shift_panel(ax, shift: pd.DataFrame) -> None:
    """log10(argmin/eta*) against the initial spread, with the grading band and intervals."""
    confirm = C.threshold("CRITICAL_CONFIRM_DECADES", 0.15)
    refute = C.threshold("CRITICAL_REFUTE_DECADES", 0.5)
    ax.axhspan(-confirm, confirm, color="tab:green", alpha=0.15, lw=0,
               label=f"confirm band |shift| <= {confirm:g} dec")
    for v in (-refute, refute):
        ax.axhline(v, color="crimson", ls="--", lw=0.8)
    ax.plot([], [], color="crimson", ls="--", lw=0.8, label=f"refute beyond {refute:g} dec")
    for (gradient, probe), style in _SHIFT_STYLE.items():
        d = shift[(shift["gradient"] == gradient) & (shift["probe"] == probe)]
        if d.empty:
            continue
        style = dict(style)
        label = style.pop("label")
        for i, (key, g) in enumerate(d.groupby(["depth", "shortcuts"])):
            x = float(np.exp(np.log(g["initial_spread"]).mean()))
            mean, low, high = C.seed_interval(g["shift"])
            ax.errorbar([x], [mean], yerr=[[mean - low], [high - mean]], ls="none",
                        capsize=2, ms=5, mfc="none" if key[1] else style["color"],
                        label=label if i == 0 else None, **style)
    ax.set_xscale("log")
    C.quiet_log_ticks(ax, "x")
    ax.set_xlabel("initial ELR spread (open: Short, filled: NoShort)")
    ax.set_ylabel(r"$\log_{10}(\mathrm{argmin}\,\eta / \eta^*)$ (decades)")
    ax.set_title("argmin shift: mean over seeds, 95% interval")
    C.legend_outside(ax, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2)


def main(profile: str = "quick", out_dir: str | Path = C.DEFAULT_OUT,
         refresh: bool = False) -> C.FigureResult:
    return C.run_figure(sys.modules[__name__], profile, out_dir, refresh)


if __name__ == "__main__":
    sys.exit(C.script_main(sys.modules[__name__]))
