r"""Figure 12: the flip phase diagram of a pair of layers in the :math:`(E_\ell, E_k)` plane.

For every start :math:`(E_\ell, E_k)` on a log grid the constant-lr, constant-``c`` model
(:func:`normdyn.theory.numeric.elr_map`, :math:`E_{t+1} = F(E_t)`) is iterated for
``steps`` steps and the order changes of the pair are counted.  Lemma 3.4 says that the
first step flips the order iff :math:`E_\ell E_k > 1`; Lemma 3.5 that a pair flips at
most once; and :math:`|\log\rho|` never grows in a step.

CSV columns (one row per grid point)
------------------------------------
``E_l``, ``E_k``            initial ELRs of the two layers
``product``                 :math:`E_\ell E_k`
``predicted_flip``          1 if :math:`E_\ell E_k > 1` and :math:`E_\ell \ne E_k` (Lemma 3.4)
``flipped``                 1 if the order of the pair changed in the first step
``n_flips``                 number of order changes over ``steps`` steps (Lemma 3.5: <= 1)
``log_ratio_change``        :math:`|\log\rho_1| - |\log\rho_0|` of the first step (<= 0)
``steps``                   number of simulated steps
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

if __package__ in (None, ""):  # run as a file: python paper_figures/figNN_<slug>.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from paper_figures import _common as C  # noqa: E402

FIGURE = "fig12"
SLUG = "flip_phase"
TITLE = "Flip phase diagram: simulated order flips over the region E_l E_k > 1"
COLUMNS = ("E_l", "E_k", "product", "predicted_flip", "flipped", "n_flips",
           "log_ratio_change", "steps")
CONFIGS = {
    "micro": {"grid": 21, "lo": 1e-2, "hi": 1e2, "steps": 5},
    "quick": {"grid": 201, "lo": 1e-2, "hi": 1e2, "steps": 50},
    "deep": {"grid": 201, "lo": 1e-2, "hi": 1e2, "steps": 50},
    "full": {"grid": 401, "lo": 1e-3, "hi": 1e3, "steps": 500},
}


def output_stem(profile: str) -> str:
    cfg = C.config_for(CONFIGS, profile)
    return C.make_stem(FIGURE, SLUG, f"grid{cfg['grid']}_steps{cfg['steps']}", profile)


def _measure(cfg: dict) -> pd.DataFrame:
    from normdyn.theory.numeric import elr_map

    axis = np.geomspace(cfg["lo"], cfg["hi"], cfg["grid"])
    el, ek = (a.ravel() for a in np.meshgrid(axis, axis, indexing="xy"))
    order0 = np.sign(el - ek)
    el1, ek1 = elr_map(el), elr_map(ek)
    order1 = np.sign(el1 - ek1)
    flipped = (order0 != 0) & (order1 == -order0)
    log_change = np.abs(np.log(el1 / ek1)) - np.abs(np.log(el / ek))
    n_flips = flipped.astype(np.int64)
    a, b, order = el1, ek1, order1
    for _ in range(1, cfg["steps"]):
        a, b = elr_map.raw(a), elr_map.raw(b)
        new = np.sign(a - b)
        n_flips += (order != 0) & (new == -order)
        order = np.where(new != 0, new, order)
    product = el * ek
    return pd.DataFrame({
        "E_l": el, "E_k": ek, "product": product,
        "predicted_flip": ((product > 1) & (el != ek)).astype(np.int64),
        "flipped": flipped.astype(np.int64), "n_flips": n_flips,
        "log_ratio_change": log_change, "steps": cfg["steps"],
    })


def measure(profile: str = "quick", cache_dir: str | Path | None = None,
            refresh: bool = False) -> pd.DataFrame:
    """One row per grid point; see the module docstring for the columns."""
    cfg = C.config_for(CONFIGS, profile)
    return C.cached_frame(cache_dir, output_stem(profile), cfg, lambda: _measure(cfg), refresh)


def plot(df: pd.DataFrame, out_dir: str | Path, profile: str) -> list[Path]:
    axis = np.sort(df["E_l"].unique())
    n = axis.size
    grid = df.sort_values(["E_k", "E_l"])
    flipped = grid["flipped"].to_numpy().reshape(n, n)
    n_flips = grid["n_flips"].to_numpy().reshape(n, n)
    fig, axes = C.subplots(1, 2, width=4.0, height=3.6)
    hyper = np.geomspace(axis[0], axis[-1], 200)
    for ax, values, title, vmax in (
        (axes[0, 0], flipped, "order flipped in the first step", 1),
        (axes[0, 1], n_flips, f"number of flips in {int(df['steps'].iloc[0])} steps", 2),
    ):
        mesh = ax.pcolormesh(axis, axis, values, cmap="Blues", vmin=0, vmax=vmax,
                             shading="nearest", rasterized=True)
        fig.colorbar(mesh, ax=ax, shrink=0.85)
        ax.plot(hyper, 1.0 / hyper, color="crimson", lw=1.2, ls="--",
                label=r"$E_\ell E_k = 1$")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(axis[0], axis[-1])
        ax.set_ylim(axis[0], axis[-1])
        ax.set_xlabel(r"$E_\ell$")
        ax.set_ylabel(r"$E_k$")
        ax.set_title(title)
        ax.legend(loc="lower left")
    off = df[np.abs(np.log(df["product"])) >= 1e-9]  # E_l E_k = 1 exactly: a tie, skipped
    agree = float((off["flipped"] == off["predicted_flip"]).mean())
    C.footnote(fig, profile, f"agreement with Lemma 3.4 off the boundary: {agree:.4f}; max flips "
               f"{int(df['n_flips'].max())}")
    return C.save_figure(fig, out_dir, output_stem(profile))


def main(profile: str = "quick", out_dir: str | Path = C.DEFAULT_OUT,
         refresh: bool = False) -> C.FigureResult:
    return C.run_figure(sys.modules[__name__], profile, out_dir, refresh)


if __name__ == "__main__":
    sys.exit(C.script_main(sys.modules[__name__]))
