r"""Numeric functions generated from the SymPy derivations.

Every function here is produced by :func:`sympy.lambdify` (``cse=True``) from an
expression derived in :mod:`normdyn.theory` (the table is
:func:`normdyn.theory.generation.specs`); no formula is typed twice.  The generated
source is cached on disk (:mod:`~normdyn.theory.function_cache`, keyed by a hash of the
theory sources and the SymPy and Python versions), so importing this module does not
import SymPy when the cache is warm; ``.expr``, ``.compiled_expr`` and ``.latex`` derive
on first use.  Where the
canonical expression overflows at extreme arguments, the generated code comes from a
*stable form* that SymPy has checked to be identical (see ``stable_forms_agree``), e.g.
:math:`F(E) = 1/(E + 1/E)` instead of :math:`E/(1+E^2)`.

Each :class:`TheoryFunction` is called with positional arguments in the fixed order
shown in its docstring.  A call validates its inputs (``ValueError`` naming the
parameter for non-positive learning rates or norms and for NaN/inf) and its output
(:class:`~normdyn._checks.NonFiniteError` instead of a silent ``inf``/``nan``).
Hot loops use the unvalidated ``.raw`` (NumPy) or ``.scalar`` (``math``; compilable
by numba) attributes after validating once at their entry.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from normdyn._checks import (
    NonFiniteError,
    check_finite,
    check_in_range,
    check_nonnegative,
    check_positive,
)
from normdyn.theory.function_cache import build_function, load_sources

__all__ = [
    "TheoryFunction",
    "elr",
    "gradient_elr",
    "base_gradient",
    "norm_step",
    "elr_map",
    "elr_step",
    "u_map",
    "continuous_sigma2",
    "continuous_elr",
    "continuous_u",
    "gap_bound",
    "ratio_step",
    "d_step",
    "critical_lr",
    "critical_lr_from_elr",
    "critical_lr_of",
    "one_step_spread",
    "weight_decay_norm_step",
    "weight_decay_equilibrium_elr",
    "weight_decay_equilibrium_update_elr",
    "momentum_norm_step",
    "momentum_update_elr",
    "momentum_u_growth",
    "update_elr_geometric",
    "momentum_step_update_elr",
    "momentum_equilibrium_update_elr",
    "momentum_equilibrium_update_elr_leading",
    "momentum_equilibrium_rotation",
    "FUNCTIONS",
    "SOURCE_ORIGIN",
]

_VALIDATORS: dict[str, Callable[[str, object], np.ndarray]] = {
    "positive": check_positive,
    "nonnegative": check_nonnegative,
    "finite": check_finite,
    "unit": lambda name, v: check_in_range(name, v, 0.0, 1.0),
    "at_least_one": lambda name, v: check_in_range(name, v, 1.0, np.inf),
}


@dataclass(frozen=True)
class TheoryFunction:
    """A generated numeric function; its SymPy expressions are derived on first use."""

    name: str
    arg_names: tuple[str, ...]
    domains: tuple[str, ...]
    raw: Callable = field(repr=False)
    scalar: Callable = field(repr=False)
    description: str = ""

    def __call__(self, *values: object) -> np.ndarray | float:
        if len(values) != len(self.arg_names):
            raise TypeError(
                f"{self.name}() takes {len(self.arg_names)} arguments "
                f"({', '.join(self.arg_names)}), got {len(values)}"
            )
        arrays = [
            _VALIDATORS[dom](name, v)
            for name, dom, v in zip(self.arg_names, self.domains, values, strict=True)
        ]
        with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
            out = np.asarray(self.raw(*arrays), dtype=np.float64)
        if not np.all(np.isfinite(out)):
            raise NonFiniteError(
                f"{self.name}: result is not finite (overflow) for "
                + ", ".join(f"{n}={v!r}" for n, v in zip(self.arg_names, values, strict=True))
            )
        return float(out) if out.ndim == 0 else out

    def _spec(self) -> Any:
        from normdyn.theory.generation import specs

        return specs()[self.name]

    @property
    def expr(self) -> Any:
        """The derived SymPy expression (imports SymPy and derives on first use)."""
        return self._spec().expr

    @property
    def compiled_expr(self) -> Any:
        """The (stable) form the numeric code was generated from."""
        return self._spec().compiled_expr

    @property
    def args(self) -> tuple:
        """The SymPy symbols of the arguments, in order."""
        return self._spec().args

    @property
    def latex(self) -> str:
        from normdyn.theory.symbols import tex

        return tex(self.expr)


def _build(name: str, entry: dict) -> TheoryFunction:
    raw, scalar = build_function(entry, "raw"), build_function(entry, "scalar")
    raw.__doc__ = scalar.__doc__ = entry["doc"]
    fn = TheoryFunction(name, tuple(entry["arg_names"]), tuple(entry["domains"]), raw, scalar,
                        entry["description"])
    object.__setattr__(fn, "__doc__", entry["doc"])
    return fn


_LOADED = load_sources()
#: Where the generated sources of this process came from: ``"cache"`` or ``"derived"``.
SOURCE_ORIGIN: str = _LOADED.origin
FUNCTIONS: dict[str, TheoryFunction] = {
    name: _build(name, entry) for name, entry in _LOADED.sources.items()
}

elr = FUNCTIONS["elr"]
gradient_elr = FUNCTIONS["gradient_elr"]
base_gradient = FUNCTIONS["base_gradient"]
norm_step = FUNCTIONS["norm_step"]
elr_map = FUNCTIONS["elr_map"]
elr_step = FUNCTIONS["elr_step"]
u_map = FUNCTIONS["u_map"]
continuous_sigma2 = FUNCTIONS["continuous_sigma2"]
continuous_elr = FUNCTIONS["continuous_elr"]
continuous_u = FUNCTIONS["continuous_u"]
gap_bound = FUNCTIONS["gap_bound"]
ratio_step = FUNCTIONS["ratio_step"]
d_step = FUNCTIONS["d_step"]
critical_lr = FUNCTIONS["critical_lr"]
critical_lr_from_elr = FUNCTIONS["critical_lr_from_elr"]
weight_decay_norm_step = FUNCTIONS["weight_decay_norm_step"]
weight_decay_equilibrium_elr = FUNCTIONS["weight_decay_equilibrium_elr"]
weight_decay_equilibrium_update_elr = FUNCTIONS["weight_decay_equilibrium_update_elr"]
momentum_norm_step = FUNCTIONS["momentum_norm_step"]
momentum_update_elr = FUNCTIONS["momentum_update_elr"]
momentum_u_growth = FUNCTIONS["momentum_u_growth"]
update_elr_geometric = FUNCTIONS["update_elr_geometric"]
momentum_step_update_elr = FUNCTIONS["momentum_step_update_elr"]
momentum_equilibrium_update_elr = FUNCTIONS["momentum_equilibrium_update_elr"]
momentum_equilibrium_update_elr_leading = FUNCTIONS["momentum_equilibrium_update_elr_leading"]
momentum_equilibrium_rotation = FUNCTIONS["momentum_equilibrium_rotation"]


def critical_lr_of(per_unit_elr: object) -> float:
    r""":math:`\eta^*` of a set of layers from their per-unit-lr ELRs :math:`a_\ell = \lVert\nabla w_\ell\rVert/\lVert w_\ell\rVert`.

    This is the one function that both the simulator's critical-lr schedule and the
    torch :class:`~normdyn.CriticalLRWarmup` call.
    """
    a = check_positive("per_unit_elr", per_unit_elr)
    if a.size == 0:
        raise ValueError("per_unit_elr must contain at least one layer, got an empty array")
    return float(critical_lr.raw(a.max(), a.min()))


def one_step_spread(lr: object, per_unit_elr: object) -> np.ndarray | float:
    r""":math:`S(\eta) = \max_\ell F(\eta a_\ell)/\min_\ell F(\eta a_\ell)` for one or many lrs.

    ``lr`` may be an array (any shape); ``per_unit_elr`` is 1-D over layers.
    """
    lr_arr = check_positive("lr", lr)
    a = check_positive("per_unit_elr", per_unit_elr).reshape(-1)
    if a.size == 0:
        raise ValueError("per_unit_elr must contain at least one layer, got an empty array")
    nxt = elr_map.raw(lr_arr[..., None] * a)
    out = nxt.max(axis=-1) / nxt.min(axis=-1)
    if not np.all(np.isfinite(out)):
        raise NonFiniteError("one_step_spread: spread is not finite (ELRs under/overflow)")
    return float(out) if out.ndim == 0 else out
