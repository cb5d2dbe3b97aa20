"""Which weights are scale invariant: layer detection, below both :mod:`normdyn.optim` and
:mod:`normdyn.validate`.

* :func:`find_scale_invariant` -- the scale-invariant weights of a model (graph analysis
  through ``torch.fx``, with a hook-based fallback), one :class:`ScaleInvariantLayer` each.
* :func:`analyze_scale_invariance` -- every candidate layer with its verdict and reason.
* :func:`measure_defect` -- the measured defect :math:`|\\cos(w, \\nabla w)|`.
"""

from normdyn.layers.detection import (
    ScaleInvariantLayer,
    analyze_scale_invariance,
    find_scale_invariant,
    measure_defect,
)

__all__ = ["ScaleInvariantLayer", "analyze_scale_invariance", "find_scale_invariant",
           "measure_defect"]
