r"""Figure 3: long-term per-layer ELR evolution with the real gradients.

The same ResNet NoShort as in figure 2 is trained at a constant lr with its real
gradients (:func:`normdyn.validate.runs.run_training`), once without and once with the
BatchNorm affine parameters.  Compare with the drift runs of figure 2: the norm-level
model predicts that the layerwise ELRs approach each other (ratios -> 1) either way.

CSV columns (one row per affine setting, seed, recorded step and layer)
-----------------------------------------------------------------------
``affine``       1 with BatchNorm affine parameters, 0 without
``step``         optimizer step (quantities before the step)
``layer``        parameter name
``layer_index``  position of the layer, 0 = first (input side)
``lr``           learning rate
``seed``         seed of the run
``sigma2``       :math:`\|w\|^2`
``grad_norm``    :math:`\|\nabla w\|` (the real gradient)
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
from paper_figures.fig02_long_term_drift import CONFIGS as LONG_TERM_CONFIGS  # noqa: E402

FIGURE = "fig03"
SLUG = "long_term_real"
TITLE = "Long-term per-layer ELR evolution with real gradients, without/with affine BN"
FLOAT_FORMAT = C.COMPACT_FLOATS  # per-step tables: small enough to commit
COLUMNS = C.LONG_TERM_COLUMNS
DRIFT = False
#: The same networks and settings as figure 2, with >= 3 seeds: these runs are graded.
CONFIGS = {profile: {**cfg, "seeds": [0] if profile == "micro" else [0, 1, 2]}
           for profile, cfg in LONG_TERM_CONFIGS.items()}


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
    return C.long_term_plot(df, out_dir, profile, output_stem(profile), "real gradients")


def main(profile: str = "quick", out_dir: str | Path = C.DEFAULT_OUT,
         refresh: bool = False) -> C.FigureResult:
    return C.run_figure(sys.modules[__name__], profile, out_dir, refresh)


if __name__ == "__main__":
    sys.exit(C.script_main(sys.modules[__name__]))
