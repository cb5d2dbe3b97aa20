r"""Initial states of the norm-level simulators: squared weight norms and base gradients.

A layer's state is its squared weight norm :math:`\sigma^2_0` and its base gradient
:math:`c` (the gradient norm at unit weight norm).  At lr :math:`\eta` its gradient ELR is

.. math::

    E_0 = \frac{\eta c}{\sigma^2_0},

evaluated by the generated :data:`normdyn.theory.numeric.elr`.  Because the model is
invariant under :math:`(\sigma^2, c) \to (\alpha\sigma^2, \alpha c)`, an ELR alone fixes the
dynamics; the convention of :func:`from_elr` is :math:`\max(\sigma^2_0, \eta c) = 1`:
:math:`\sigma^2_0 = 1`, :math:`c = E_0/\eta` for :math:`E_0 \le 1` (the per-unit-lr ELR
:math:`a = E_0/\eta`), and :math:`\eta c = 1`, :math:`\sigma^2_0 = 1/E_0` for
:math:`E_0 > 1`.  The first step then gives :math:`\sigma^2_1 = \sigma^2_0(1 + E_0^2)
\le E_0 + 1/E_0`, representable for every representable :math:`E_0` (with
:math:`\sigma^2_0 = 1` it would overflow for :math:`E_0 > 10^{154}`).

:func:`initial_state` implements the CLI's three ways to give a state:

1. ``elr=[...]``: explicit ELRs at the reference lr ``lr`` (``--elr``);
2. ``sigma2=[...], c=[...]``: explicit norms and base gradients (``--sigma2 --c``);
3. ``layers=N, spread=S``: ``N`` per-unit-lr ELRs spread log-uniformly with
   :math:`\max/\min = S` exactly, geometrically centred on :math:`1/\eta` (so that the
   ELRs at the reference lr are centred on 1), in a random layer order fixed by ``seed``
   (``--layers --spread``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from normdyn._checks import check_int, check_positive
from normdyn.theory.numeric import elr as elr_fn

__all__ = ["InitialState", "initial_state", "from_elr", "parse_list"]


@dataclass(frozen=True)
class InitialState:
    """Per-layer initial squared weight norms ``sigma2_0`` and base gradients ``c`` (``(L,)``)."""

    sigma2_0: np.ndarray
    c: np.ndarray

    @property
    def layers(self) -> int:
        return int(self.sigma2_0.shape[-1])

    def elr(self, lr: Any = 1.0) -> np.ndarray:
        r"""Gradient ELRs :math:`\eta c/\sigma^2_0` at ``lr`` (scalar, or ``(N,)`` -> ``(N, L)``)."""
        eta = check_positive("lr", lr)
        return elr_fn.raw(eta[..., None], self.c, self.sigma2_0)

    def per_unit_elr(self) -> np.ndarray:
        r"""Per-unit-lr ELRs :math:`a = c/\sigma^2_0` (the ELRs at lr 1)."""
        return elr_fn.raw(1.0, self.c, self.sigma2_0)


def parse_list(name: str, text: str | None) -> np.ndarray | None:
    """Parse a comma-separated list of numbers (CLI helper); ``None`` stays ``None``."""
    if text is None:
        return None
    parts = [p.strip() for p in str(text).split(",")]
    if not any(parts):
        raise ValueError(f"{name} must contain at least one layer, got an empty list")
    try:
        return np.array([float(p) for p in parts], dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"{name} must be a comma-separated list of numbers, got {text!r}") from exc


def _vector(name: str, value: Any) -> np.ndarray:
    arr = np.atleast_1d(check_positive(name, value)).astype(np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D list of per-layer values, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} must contain at least one layer, got an empty list")
    return arr


def from_elr(elr: Any, lr: Any = 1.0) -> InitialState:
    r"""The state with gradient ELRs ``elr`` at lr ``lr``, scaled so that :math:`\max(\sigma^2_0, \eta c) = 1`.

    :math:`\sigma^2_0 = 1, c = E_0/\eta` where :math:`E_0 \le 1`; :math:`\sigma^2_0 = 1/E_0,
    c = 1/\eta` where :math:`E_0 > 1` (the model is invariant under
    :math:`(\sigma^2, c) \to (\alpha\sigma^2, \alpha c)`, and this choice keeps
    :math:`\sigma^2_1 = \sigma^2_0(1+E_0^2)` finite for ELRs up to ``1e308``).
    ``elr`` is 1-D over layers and positive, ``lr`` a positive scalar.
    """
    e = _vector("elr", elr)
    eta = check_positive("lr", lr)
    if eta.ndim != 0:
        raise ValueError(f"lr must be a single reference lr here, got shape {eta.shape}")
    # max(sigma2_0, eta*c) = 1: for E <= 1, sigma2_0 = 1 and c = E/eta (the per-unit-lr
    # ELR); for E > 1, eta*c = 1 and sigma2_0 = 1/E.  Either way E = eta*c/sigma2_0.
    big = e > 1.0
    sigma2_0 = np.where(big, 1.0 / e, 1.0)
    c = np.where(big, 1.0, e) / float(eta)
    return InitialState(sigma2_0, c)


def initial_state(
    elr: Any = None,
    sigma2: Any = None,
    c: Any = None,
    layers: int | None = None,
    spread: float | None = None,
    lr: float = 1.0,
    seed: int = 0,
) -> InitialState:
    r"""Build an :class:`InitialState` in exactly one of the three ways (see module docs).

    Parameters
    ----------
    elr
        Per-layer ELRs at the reference lr ``lr`` (positive, at least one layer).
    sigma2, c
        Per-layer squared weight norms and base gradients (positive, equal lengths).
    layers, spread
        ``layers >= 1`` ELRs with ``max/min == spread`` (``spread >= 1``; ``spread > 1``
        needs ``layers >= 2``), log-uniform between the extremes, random layer order from
        ``numpy.random.default_rng(seed)``.
    lr
        Reference lr at which ``elr`` (or the centre of the spread) is given.
    seed
        Non-negative integer seed of the ``layers``/``spread`` draw.

    Raises
    ------
    ValueError
        Naming the parameter: no way or more than one way given, an empty or non-positive
        list, mismatched lengths, ``spread < 1``, ``layers < 1``, ``lr <= 0``.
    """
    ways = {
        "elr": elr is not None,
        "sigma2/c": sigma2 is not None or c is not None,
        "layers/spread": layers is not None or spread is not None,
    }
    chosen = [k for k, v in ways.items() if v]
    if len(chosen) != 1:
        raise ValueError(
            "state: give exactly one of elr, sigma2 with c, or layers with spread"
            + (f"; got {', '.join(chosen)}" if chosen else "")
        )
    eta = check_positive("lr", lr)
    if eta.ndim != 0:
        raise ValueError(f"lr must be a single reference lr here, got shape {eta.shape}")
    if elr is not None:
        return from_elr(elr, float(eta))
    if sigma2 is not None or c is not None:
        if sigma2 is None or c is None:
            raise ValueError(f"{'c' if c is None else 'sigma2'} must be given together with "
                             f"{'sigma2' if c is None else 'c'}")
        s = _vector("sigma2", sigma2)
        cc = _vector("c", c)
        if cc.size != s.size:
            raise ValueError(f"c must have the same length as sigma2 ({s.size}), got {cc.size}")
        return InitialState(s, cc)
    if layers is None or spread is None:
        raise ValueError(f"{'layers' if layers is None else 'spread'} must be given together "
                         f"with {'spread' if layers is None else 'layers'}")
    n = check_int("layers", layers, minimum=1)
    s_ratio = float(check_positive("spread", spread))
    if s_ratio < 1.0:
        raise ValueError(f"spread must be >= 1 (a max/min ratio), got {s_ratio}")
    if n == 1 and s_ratio != 1.0:
        raise ValueError(f"layers must be >= 2 for spread {s_ratio} > 1, got 1")
    check_int("seed", seed, minimum=0)
    x = np.random.default_rng(seed).random(n)
    if n >= 2:
        x = (x - x.min()) / (x.max() - x.min())  # extremes exactly 0 and 1
    else:
        x = np.full(1, 0.5)
    log_a = np.log(s_ratio) * (x - 0.5)  # log-uniform, max/min = spread, centred on 1
    # from_elr's scaling: the ELRs at the reference lr are exp(log_a).
    return from_elr(np.exp(log_a), float(eta))
