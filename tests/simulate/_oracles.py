"""Hand-written oracles shared by the simulator tests (independent of normdyn.theory)."""

from __future__ import annotations

import math


def geometric_update_elr(e: float, eta: float, lam: float, beta: float) -> float:
    """Update ELR of the first-order momentum model, written out by hand.

    ``Delta w = r w + tau`` with ``|tau|/|w| = e/sqrt(1-beta^2)`` (stationary velocity) and
    ``|w + Delta w|^2/|w|^2 = (1 - x)^2 + (e/(1-beta))^2``, ``x = eta lam/(1-beta)``;
    Pythagoras fixes the radial part ``r``.
    """
    tangential_sq = e**2 / (1 - beta**2)
    ratio = (1 - eta * lam / (1 - beta)) ** 2 + (e / (1 - beta)) ** 2
    radial = math.sqrt(ratio - tangential_sq) - 1
    return math.sqrt(radial**2 + tangential_sq)
