"""Tolerances in units of machine epsilon, one table per dtype.

``rtol(dtype, kind)`` returns ``ULPS[dtype][kind] * eps(dtype)``.  A kind names the
kind of computation being compared, so each bound states how much rounding it admits.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ULPS", "rtol", "EPS"]

EPS = {np.float64: float(np.finfo(np.float64).eps), np.float32: float(np.finfo(np.float32).eps)}

ULPS: dict[type, dict[str, float]] = {
    np.float64: {
        "single_op": 4,          # one generated closed form against another route
        "map_step": 8,           # one step of a map, two routes
        "iterated": 64,          # per step of an iterated map, accumulated over t steps
        "ode": 1e6,              # solve_ivp at rtol 1e-10 against a closed form
        "finite_difference": 1e8,  # central differences, h ~ eps^(1/3)
    },
    np.float32: {
        "single_op": 4,
        "map_step": 8,
        "iterated": 64,
        "replay": 256,           # measured torch float32 norms replayed in float64
        "finite_difference": 1e3,
    },
}


def rtol(dtype: type, kind: str, steps: int = 1) -> float:
    """Relative tolerance for ``kind`` in ``dtype``; ``iterated`` kinds scale with ``steps``."""
    dtype = np.dtype(dtype).type
    return ULPS[dtype][kind] * EPS[dtype] * max(1, steps)
