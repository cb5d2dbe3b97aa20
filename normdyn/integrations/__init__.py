"""Drop-in integrations of the ELR monitor and the critical-lr warm-up with training frameworks.

Each submodule imports its framework only when it is imported itself, so
``import normdyn.integrations`` costs nothing and needs none of them:

* :mod:`normdyn.integrations.loggers` -- ``log_fn`` adapters for
  :class:`~normdyn.validate.monitor.ELRMonitor` in plain loops (a TensorBoard
  ``SummaryWriter`` or anything with ``add_scalar``; any ``callable(name, value, step)``).
* :mod:`normdyn.integrations.lightning` -- Lightning callbacks ``ELRMonitorCallback`` and
  ``CriticalLRWarmupCallback`` (``pip install 'normdyn[integrations]'``).
* :mod:`normdyn.integrations.huggingface` -- a ``transformers`` ``TrainerCallback``,
  ``ELRTrainerCallback``.

The names below are loaded on first access (``normdyn.integrations.ELRMonitorCallback``
imports Lightning then).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "summary_writer_log_fn",
    "scalar_log_fn",
    "ELRMonitorCallback",
    "CriticalLRWarmupCallback",
    "ELRTrainerCallback",
]

_LOCATIONS = {
    "summary_writer_log_fn": "loggers",
    "scalar_log_fn": "loggers",
    "ELRMonitorCallback": "lightning",
    "CriticalLRWarmupCallback": "lightning",
    "ELRTrainerCallback": "huggingface",
}


def __getattr__(name: str) -> Any:
    if name in _LOCATIONS:
        module = importlib.import_module(f"normdyn.integrations.{_LOCATIONS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'normdyn.integrations' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
