"""Named Hypothesis strategies shared by the test suite.

Each strategy documents the range it covers and why.  Extreme values are
included on purpose: the numeric functions must stay finite where the
mathematics allows.  Append new strategies at the end of this file, each with
a docstring-style comment.
"""

from __future__ import annotations

from hypothesis import strategies as st

__all__ = [
    "elrs",
    "moderate_elrs",
    "extreme_elrs",
    "learning_rates",
    "step_counts",
    "elr_pairs",
    "elr_vectors",
    "lr_growth_factors",
    "momenta",
    "weight_decays",
]


def _log_uniform(lo_exp: float, hi_exp: float) -> st.SearchStrategy[float]:
    return st.floats(lo_exp, hi_exp, allow_nan=False, allow_infinity=False).map(
        lambda x: float(10.0**x)
    )


#: ELRs over the whole useful range, 1e-8 .. 1e8, log-uniform.
elrs = _log_uniform(-8, 8)

#: ELRs where products and squares are comfortably representable, 1e-3 .. 1e3.
moderate_elrs = _log_uniform(-3, 3)

#: ELRs at the edge of float64, 1e-300 .. 1e300 (finite-result checks only).
extreme_elrs = _log_uniform(-300, 300)

#: Learning rates, 1e-6 .. 1e3, log-uniform.
learning_rates = _log_uniform(-6, 3)

#: Step counts for iterated maps: 1 .. 2000.
step_counts = st.integers(min_value=1, max_value=2000)

#: Two distinct ELRs (E_l, E_k) of a pair of layers.
elr_pairs = st.tuples(moderate_elrs, moderate_elrs).filter(lambda p: p[0] != p[1])

#: Per-layer ELR vectors of 2 .. 50 layers.
elr_vectors = st.lists(elrs, min_size=2, max_size=50)

#: Step-to-step learning-rate growth factors in (0, 2]: the at-most-one-flip regime.
lr_growth_factors = st.floats(0.05, 2.0, allow_nan=False, exclude_min=False)

#: Heavy-ball momentum in [0, 0.99].
momenta = st.floats(0.0, 0.99, allow_nan=False)

#: Coupled weight decay, 1e-6 .. 1e-1, log-uniform.
weight_decays = _log_uniform(-6, -1)
