"""Torch components built on the theory: :class:`CriticalLRWarmup` and :class:`ConstrainedELR`.

Both track the scale-invariant layers of a model (detected by
:mod:`normdyn.layers.detection`, or given with ``params=``) and take every formula
from :mod:`normdyn.theory.numeric`.
"""

from __future__ import annotations

from normdyn.optim.constrained_elr import ConstrainedELR
from normdyn.optim.warmup import CriticalLRWarmup

__all__ = ["CriticalLRWarmup", "ConstrainedELR"]
