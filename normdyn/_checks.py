"""Input validation shared by every layer of normdyn.

Every public numeric entry point validates its arguments here, so that a bad
value produces a :class:`ValueError` whose message names the parameter and
says what was wrong with it.  The CLI turns these errors into a one-line
message and exit code 2.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "NonFiniteError",
    "as_float_array",
    "check_finite",
    "check_positive",
    "check_nonnegative",
    "check_in_range",
    "check_int",
]


class NonFiniteError(FloatingPointError, ValueError):
    """A NaN or infinity appeared where the mathematics gives a finite value."""


def as_float_array(name: str, value: Any) -> np.ndarray:
    """Convert ``value`` to a float64 array, naming ``name`` if it cannot be."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric, got {value!r}") from exc
    return arr


def _describe(arr: np.ndarray, mask: np.ndarray) -> str:
    bad = arr[mask]
    shown = ", ".join(repr(float(x)) for x in bad.ravel()[:3])
    more = "" if bad.size <= 3 else f" (and {bad.size - 3} more)"
    return shown + more


def check_finite(name: str, value: Any) -> np.ndarray:
    """Reject NaN and infinities; return ``value`` as a float64 array."""
    arr = as_float_array(name, value)
    mask = ~np.isfinite(arr)
    if mask.any():
        raise ValueError(f"{name} must be finite, got {_describe(arr, mask)}")
    return arr


def check_positive(name: str, value: Any) -> np.ndarray:
    """Reject non-finite and non-positive values (learning rates, norms, ELRs)."""
    arr = check_finite(name, value)
    mask = arr <= 0
    if mask.any():
        raise ValueError(f"{name} must be positive, got {_describe(arr, mask)}")
    return arr


def check_nonnegative(name: str, value: Any) -> np.ndarray:
    """Reject non-finite and negative values (weight decay, step counts)."""
    arr = check_finite(name, value)
    mask = arr < 0
    if mask.any():
        raise ValueError(f"{name} must be non-negative, got {_describe(arr, mask)}")
    return arr


def check_in_range(
    name: str, value: Any, low: float, high: float, *, high_inclusive: bool = False
) -> np.ndarray:
    """Reject values outside ``[low, high)`` (or ``[low, high]``)."""
    arr = check_finite(name, value)
    mask = (arr < low) | ((arr > high) if high_inclusive else (arr >= high))
    if mask.any():
        bracket = "]" if high_inclusive else ")"
        raise ValueError(
            f"{name} must lie in [{low}, {high}{bracket}, got {_describe(arr, mask)}"
        )
    return arr


def check_int(name: str, value: Any, *, minimum: int = 0) -> int:
    """Reject non-integers and integers below ``minimum`` (step counts, layer counts)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)
