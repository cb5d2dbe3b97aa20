r"""Live layers and their ELR spread: the one definition of a *dead* layer and of the spreads.

The paper's spread over the layers of a network is

.. math:: S = \max_\ell E_\ell / \min_\ell E_\ell .

A layer whose gradient is exactly zero (or numerically nothing next to the others) has
:math:`E_\ell = 0` or a vanishing :math:`E_\ell`, and then :math:`S` measures that dead
layer, not a disparity the dynamics could tune.  So:

*dead*
    :math:`g_\ell = 0` exactly (when the gradient norm is known), or
    :math:`E_\ell \le` ``DEAD_ELR_RELATIVE`` :math:`\cdot\operatorname{median}_\ell E_\ell`
    (the median over the finite, positive ELRs of the same step).  A non-finite ELR is never
    dead: it is an error the caller must see.
*live*
    every other layer with a finite, positive ELR.

:func:`spread_max_min` is :math:`S` over the live layers; :func:`robust_spread` is the
quantile ratio :math:`Q_{0.95}(E)/Q_{0.05}(E)` over the live layers (linear interpolation,
``numpy.quantile``'s default), which one extreme layer cannot dominate.  Fewer than two live
layers give ``nan`` for both.

:func:`spread_table` applies both per group of a tidy per-layer frame and counts the dead
layers (column ``dead_layers``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = [
    "DEAD_ELR_RELATIVE",
    "ROBUST_QUANTILES",
    "dead_mask",
    "spread_max_min",
    "robust_spread",
    "spread_table",
]

#: A layer whose ELR is at most this fraction of the step's median ELR is dead: 1e-12 is
#: below any disparity the paper discusses (its spreads reach about 1e6) and above float64
#: round-off of a zero gradient that went through a division by a weight norm.
DEAD_ELR_RELATIVE = 1e-12
#: The robust spread's quantiles: Q_hi / Q_lo of the live layers' ELRs.
ROBUST_QUANTILES = (0.05, 0.95)


def dead_mask(elr: np.ndarray, grad_norm: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask of the dead layers of one step (see the module docstring).

    ``elr`` has one entry per layer; ``grad_norm`` (same shape) marks exact zero gradients.
    """
    e = np.asarray(elr, dtype=np.float64)
    dead = np.zeros(e.shape, dtype=bool)
    if grad_norm is not None:
        g = np.asarray(grad_norm, dtype=np.float64)
        if g.shape != e.shape:
            raise ValueError(f"grad_norm: shape {g.shape} differs from elr's {e.shape}")
        dead |= g == 0.0
    positive = np.isfinite(e) & (e > 0)
    dead |= np.isfinite(e) & (e <= 0)
    if positive.any():
        median = float(np.median(e[positive]))
        dead |= positive & (e <= DEAD_ELR_RELATIVE * median)
    return dead


def _live(elr: np.ndarray, grad_norm: np.ndarray | None) -> np.ndarray:
    e = np.asarray(elr, dtype=np.float64)
    return e[~dead_mask(e, grad_norm) & np.isfinite(e) & (e > 0)]


def spread_max_min(elr: np.ndarray, grad_norm: np.ndarray | None = None) -> float:
    """max/min ELR over the live layers of one step; ``nan`` with fewer than two."""
    live = _live(elr, grad_norm)
    if live.size < 2:
        return float("nan")
    return float(live.max() / live.min())


def robust_spread(elr: np.ndarray, grad_norm: np.ndarray | None = None,
                  quantiles: tuple[float, float] = ROBUST_QUANTILES) -> float:
    """Q_hi/Q_lo of the live layers' ELRs of one step; ``nan`` with fewer than two."""
    live = _live(elr, grad_norm)
    if live.size < 2:
        return float("nan")
    lo, hi = np.quantile(live, quantiles)
    return float(hi / lo)


def spread_table(df: pd.DataFrame, keys: Sequence[str], elr: str = "elr",
                 grad_norm: str | None = None) -> pd.DataFrame:
    """Per group of ``keys``: ``spread`` (live max/min), ``robust_spread``, ``dead_layers``, ``layers``.

    ``df`` is tidy, one row per (keys..., layer).  ``grad_norm`` names the gradient-norm
    column when the frame has one (exact zeros are dead).  Groups keep the order of
    ``groupby(sort=True)``.
    """
    missing = [c for c in [*keys, elr, *([grad_norm] if grad_norm else [])] if c not in df.columns]
    if missing:
        raise ValueError(f"spread_table: the frame lacks columns {missing}")
    rows = []
    for key, g in df.groupby(list(keys), sort=True):
        e = g[elr].to_numpy(dtype=np.float64)
        gn = g[grad_norm].to_numpy(dtype=np.float64) if grad_norm else None
        dead = dead_mask(e, gn)
        key = key if isinstance(key, tuple) else (key,)
        rows.append((*key, spread_max_min(e, gn), robust_spread(e, gn), int(dead.sum()), len(e)))
    return pd.DataFrame(rows, columns=[*keys, "spread", "robust_spread", "dead_layers", "layers"])
