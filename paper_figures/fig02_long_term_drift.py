r"""Figure 2: long-term per-layer ELR evolution with random ("drift") gradients.

A ResNet NoShort is trained at a constant lr with every scale-invariant gradient
replaced by a Gaussian random vector of the same norm (``drift=True`` of
:func:`normdyn.validate.runs.run_training`), once without and once with the BatchNorm
affine parameters (which keep their real gradients).  The norm-level model predicts
that the layerwise ELRs approach each other (ratios -> 1).

CSV columns (one row per affine setting, seed, recorded step and layer)
-----------------------------------------------------------------------
``affine``       1 with BatchNorm affine parameters, 0 without
``step``         optimizer step (quantities before the step)
``layer``        parameter name
``layer_index``  position of the layer, 0 = first (input side)
``lr``           learning rate
``seed``         seed of the run
``sigma2``       :math:`\|w\|^2`
``grad_norm``    :math:`\|\nabla w\|` (of the drift vector)
``elr``          gradient ELR :math:`\eta\|\nabla w\|/\|w\|`
``update_elr``   :math:`\|\Delta w\|/\|w\|` of the step taken
``spread``       max/min ELR over the live layers at that step
``loss``         training-batch loss
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

if __package__ in (None, ""):  # run as a file: python paper_figures/figNN_<slug>.py
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from paper_figures import _common as C  # noqa: E402

FIGURE = "fig02"
SLUG = "long_term_drift"
TITLE = "Long-term per-layer ELR evolution with drift gradients, without/with affine BN"
FLOAT_FORMAT = C.COMPACT_FLOATS  # per-step tables: small enough to commit
COLUMNS = C.LONG_TERM_COLUMNS
DRIFT = True
CONFIGS = {
    "micro": {"depth": 8, "width": 4, "shortcuts": False, "data": "digits", "batch_size": 32,
              "steps": 6, "lr": 0.1, "seeds": [0]},
    "quick": {"depth": 20, "width": 8, "shortcuts": False, "data": "digits",
              "batch_size": 64, "steps": 600, "lr": 0.1, "seeds": [0]},
    "deep": {"depth": 56, "width": 16, "shortcuts": False, "data": "fashion-mnist",
             "image_size": 14, "batch_size": 64, "steps": 1000, "lr": 0.1, "seeds": [0]},
    "full": {"depth": 56, "width": 16, "shortcuts": False, "data": "cifar10",
             "batch_size": 128, "steps": 20000, "lr": 0.1, "seeds": [0], "max_points": 3000},
}


def output_stem(profile: str) -> str:
    return C.long_term_stem(FIGURE, SLUG, CONFIGS, profile)


def plan(profile: str) -> list[dict]:
    """The training runs of ``profile`` (:func:`paper_figures._common.train_run` kwargs)."""
    cfg = C.config_for(CONFIGS, profile)
    return [kw for _, kw in C.long_term_specs(cfg, drift=DRIFT, profile=profile)]


def measure(profile: str = "quick", cache_dir: str | Path | None = None,
            refresh: bool = False) -> pd.DataFrame:
    """One row per affine setting, seed, step and layer; see the module docstring."""
    cfg = C.config_for(CONFIGS, profile)
    return C.cached_frame(
        cache_dir, output_stem(profile), cfg,
        lambda: C.long_term_measure(cfg, drift=DRIFT, cache_dir=cache_dir, refresh=refresh,
                                    profile=profile), refresh)


def plot(df: pd.DataFrame, out_dir: str | Path, profile: str) -> list[Path]:
    return C.long_term_plot(df, out_dir, profile, output_stem(profile), "drift gradients")


def main(profile: str = "quick", out_dir: str | Path = C.DEFAULT_OUT,
         refresh: bool = False) -> C.FigureResult:
    return C.run_figure(sys.modules[__name__], profile, out_dir, refresh)


if __name__ == "__main__":
    sys.exit(C.script_main(sys.modules[__name__]))
