"""Diagnose any torch model: per-layer ELRs, predicted and measured critical lr, lr curve.

* :func:`diagnose` (:mod:`normdyn.diagnose.core`) -- one batch, one call, the model back
  exactly as it was.
* :func:`plot_run` (:mod:`normdyn.diagnose.run_plot`) -- the layer x step ELR heatmap of a
  logged run (``normdyn validate`` directory, monitor CSV/parquet or DataFrame).
* :func:`load_model` (:mod:`normdyn.diagnose.loaders`) -- ``torchvision:``, ``timm:``,
  ``hf:``, ``normdyn:`` and ``pkg.module:factory`` model specs.
"""

from __future__ import annotations

from typing import Any

__all__ = ["diagnose", "Diagnosis", "plot_run", "load_model"]

_LAZY = {
    "diagnose": "normdyn.diagnose.core",
    "Diagnosis": "normdyn.diagnose.core",
    "plot_run": "normdyn.diagnose.run_plot",
    "load_model": "normdyn.diagnose.loaders",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'normdyn.diagnose' has no attribute {name!r}")
