"""normdyn: weight dynamics of deep normalized networks, derived, simulated and measured.

Layers:

* :mod:`normdyn.theory` -- SymPy derivations, the single source of every formula,
  and the numeric functions generated from them.
* :mod:`normdyn.simulate` -- vectorized simulators built from those functions.
* :mod:`normdyn.validate` -- torch: the ELR monitor, architectures, data and runs.
* :class:`CriticalLRWarmup` and :class:`ConstrainedELR` -- drop-in torch components
  (imported lazily, so ``import normdyn`` does not need torch).
* :func:`diagnose` and :func:`plot_run` (:mod:`normdyn.diagnose`) -- the ELR picture of
  any torch model from one batch, and the heatmap of a logged run (also lazy).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "CriticalLRWarmup", "ConstrainedELR", "diagnose", "plot_run"]

_LAZY = {
    "CriticalLRWarmup": "normdyn.optim.warmup",
    "ConstrainedELR": "normdyn.optim.constrained_elr",
    "diagnose": "normdyn.diagnose.core",
    "plot_run": "normdyn.diagnose.run_plot",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'normdyn' has no attribute {name!r}")
