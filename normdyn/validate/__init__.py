"""Measured torch runs of deep normalized networks, compared with the simulators.

Public API (submodules are imported on first use, so ``import normdyn.validate`` is cheap):

* :class:`ELRMonitor` -- per-layer, per-step ELR recording for any training loop.
* :func:`find_scale_invariant`, :func:`measure_defect` -- which weights are scale invariant,
  by graph analysis and by the measured defect :math:`|\\cos(w, \\nabla w)|`.
* :func:`resnet_cifar`, :func:`plain_mlp`, :func:`transformer_encoder`, :func:`build_model`.
* :func:`get_dataset`, :func:`digits`, :func:`synthetic_images`, :func:`load_cifar`.
* :class:`RunConfig`, :func:`run_training`, :func:`one_step_lr_sweep` -- resumable runs.
* :func:`compare_run`, :func:`write_report` -- theory-vs-measurement reports.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "ELRMonitor",
    "find_scale_invariant",
    "measure_defect",
    "ScaleInvariantLayer",
    "resnet_cifar",
    "plain_mlp",
    "transformer_encoder",
    "build_model",
    "TINY_CONFIGS",
    "get_dataset",
    "digits",
    "synthetic_images",
    "synthetic_sequences",
    "load_cifar",
    "make_batches",
    "RunConfig",
    "run_training",
    "one_step_lr_sweep",
    "compare_run",
    "write_report",
]

_LOCATIONS = {
    "ELRMonitor": "monitor",
    "find_scale_invariant": "normdyn.layers.detection",
    "measure_defect": "normdyn.layers.detection",
    "ScaleInvariantLayer": "normdyn.layers.detection",
    "resnet_cifar": "models",
    "plain_mlp": "models",
    "transformer_encoder": "models",
    "build_model": "models",
    "TINY_CONFIGS": "models",
    "get_dataset": "data",
    "digits": "data",
    "synthetic_images": "data",
    "synthetic_sequences": "data",
    "load_cifar": "data",
    "make_batches": "data",
    "RunConfig": "runs",
    "run_training": "runs",
    "one_step_lr_sweep": "runs",
    "compare_run": "compare",
    "write_report": "compare",
}


def __getattr__(name: str) -> Any:
    if name in _LOCATIONS:
        where = _LOCATIONS[name]
        module = importlib.import_module(where if "." in where else f"normdyn.validate.{where}")
        return getattr(module, name)
    raise AttributeError(f"module 'normdyn.validate' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
