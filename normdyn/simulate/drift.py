r"""Drift simulation: weight *vectors* driven by random gradients of the modeled norm.

This is the paper's "drift" experiment and the ground truth that the norm-level model
(:mod:`normdyn.simulate.discrete`) is checked against.  Every layer :math:`\ell` holds an
actual weight vector :math:`w_\ell \in \mathbb{R}^{e_\ell}` (a random initial direction,
norm :math:`\sqrt{\sigma^2_{0,\ell}}`).  At every step its gradient is a random Gaussian
vector rescaled to the modeled norm

.. math::

    \lVert g_\ell\rVert = c_\ell / \lVert w_\ell\rVert

(the base-gradient scaling of a scale-invariant layer), either

* ``projected=True``: first projected onto the tangent space of the sphere, i.e. made
  orthogonal to :math:`w_\ell` (what scale invariance guarantees for real gradients), or
* ``projected=False``: with i.i.d. entries, so that :math:`\cos(w, g)\sim N(0, 1/e_\ell)`
  and each step has a random radial component that the norm-level model ignores.

The weights are then updated by exactly the rule of ``torch.optim.SGD`` (dampening 0,
nesterov off), implemented on flat arrays in :class:`HeavyBallSGD`::

    d_p = g + weight_decay * w
    buf = d_p                         (first step)
    buf = momentum * buf + d_p        (later steps)
    w  -= lr * buf

No norm-level formula enters the dynamics; the only formulas used are for *reporting*
(the gradient ELR via :data:`normdyn.theory.numeric.gradient_elr`).  Layers are stored in
one flat concatenated array per seed (shape ``(seeds, sum(elements))``), and per-layer
norms and inner products are segment sums (:func:`numpy.add.reduceat`), so all layers
and all seeds advance together.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from normdyn._checks import (
    NonFiniteError,
    check_in_range,
    check_int,
    check_nonnegative,
    check_positive,
)
from normdyn.simulate.summary import log10_spread
from normdyn.theory.numeric import gradient_elr

__all__ = [
    "COLUMNS",
    "DriftState",
    "DriftTrajectory",
    "HeavyBallSGD",
    "simulate_drift",
    "drift_trajectory",
]

#: Columns of the frame returned by :func:`simulate_drift`, in order.
COLUMNS: tuple[str, ...] = (
    "step", "layer", "lr", "seed", "elements", "sigma2", "c", "grad_norm", "elr",
    "update_elr", "cos_wg", "spread", "log10_spread",
)

_DTYPES = (np.float32, np.float64)


@dataclass(frozen=True)
class DriftState:
    """What an adaptive lr schedule sees before step ``step`` of one seed (all ``(L,)``).

    ``sigma2`` is :math:`\\lVert w\\rVert^2` before the step, ``c`` the base gradient of
    the step, ``grad_norm`` the modeled gradient norm :math:`c/\\lVert w\\rVert` (the norm
    the random gradient is rescaled to) and ``per_unit_elr`` :math:`a = \\lVert g\\rVert/
    \\lVert w\\rVert`, the gradient ELR per unit lr.
    """

    step: int
    seed: int
    sigma2: np.ndarray
    c: np.ndarray
    grad_norm: np.ndarray
    per_unit_elr: np.ndarray


class HeavyBallSGD:
    """``torch.optim.SGD(momentum=m, dampening=0, weight_decay=wd, nesterov=False)`` on arrays.

    ``step(w, g, lr)`` updates ``w`` in place with the same operations, in the same order,
    as torch's single-tensor implementation and returns the applied direction ``buf``
    (the update is ``-lr * buf``; with momentum this is the live buffer, updated in place
    by the next step, so copy it to keep it).  ``lr`` may be a scalar or an array that broadcasts
    against ``w`` (one lr per row/seed).
    """

    def __init__(self, momentum: float = 0.0, weight_decay: float = 0.0) -> None:
        self.momentum = float(check_in_range("momentum", momentum, 0.0, 1.0))
        self.weight_decay = float(check_nonnegative("weight_decay", weight_decay))
        self.buf: np.ndarray | None = None

    def step(self, w: np.ndarray, g: np.ndarray, lr: float | np.ndarray) -> np.ndarray:
        d_p = g + self.weight_decay * w if self.weight_decay != 0 else g
        if self.momentum != 0:
            if self.buf is None:
                self.buf = np.array(d_p, copy=True)
            else:
                self.buf *= self.momentum
                self.buf += d_p
            d_p = self.buf
        w -= lr * d_p
        return d_p


# ----------------------------------------------------------------------------- inputs


def _elements(elements: Any) -> np.ndarray:
    arr = np.atleast_1d(np.asarray(elements))
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"elements must be an integer or a non-empty 1-D sequence, got {elements!r}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"elements must be integers, got {elements!r}")
    if np.any(arr < 1):
        raise ValueError(f"elements must be >= 1 per layer, got {arr[arr < 1].tolist()}")
    return arr.astype(np.int64)


def _seeds(seed: Any) -> list[int]:
    seeds = [seed] if np.ndim(seed) == 0 else list(seed)
    if not seeds:
        raise ValueError("seed must be an integer or a non-empty sequence of integers")
    out = [check_int("seed", s, minimum=0) for s in seeds]
    if len(set(out)) != len(out):
        raise ValueError(f"seed must not repeat a value, got {out}")
    return out


def _per_layer(name: str, value: Any, n_layers: int, check: Callable) -> np.ndarray:
    arr = check(name, value)
    if arr.ndim == 0:
        return np.full(n_layers, float(arr))
    if arr.shape != (n_layers,):
        raise ValueError(f"{name} must be a scalar or have shape ({n_layers},), got {arr.shape}")
    return arr.copy()


def _base_gradients(c: Any, n_layers: int, steps: int) -> Callable[[int], np.ndarray]:
    arr = check_nonnegative("c", c)
    if arr.ndim <= 1:
        const = _per_layer("c", arr, n_layers, check_nonnegative)
        return lambda t: const
    if arr.ndim != 2 or arr.shape[1] != n_layers or arr.shape[0] < steps:
        raise ValueError(
            f"c must have shape ({n_layers},) or (steps, {n_layers}) with steps >= {steps}, "
            f"got {arr.shape}"
        )
    return lambda t: arr[t]


def _lr_function(lr_schedule: Any, steps: int) -> Callable[[int, DriftState], float]:
    """A float, a 1-D array of per-step lrs, an object with ``lr(step, state)``, or a callable."""
    if hasattr(lr_schedule, "lr") and callable(lr_schedule.lr):
        return lr_schedule.lr
    if callable(lr_schedule):
        return lr_schedule
    arr = check_positive("lr_schedule", lr_schedule)
    if arr.ndim == 0:
        value = float(arr)
        return lambda t, state: value
    if arr.ndim != 1 or arr.shape[0] < steps:
        raise ValueError(
            f"lr_schedule must be a float, an object with lr(step, state), or a 1-D array of "
            f">= {steps} per-step lrs; got shape {arr.shape}"
        )
    return lambda t, state: float(arr[t])


# ----------------------------------------------------------------------------- engine


class _Engine:
    """Weights of ``len(seeds)`` independent copies of the network, one flat row per seed."""

    def __init__(self, sigma2_0: np.ndarray, elements: np.ndarray, seeds: list[int],
                 momentum: float, weight_decay: float, projected: bool, dtype: type) -> None:
        self.elements = elements
        self.offsets = np.concatenate([[0], np.cumsum(elements)[:-1]])
        self.projected = projected
        self.dtype = dtype
        n = int(elements.sum())
        self.rngs = [np.random.default_rng(s) for s in seeds]
        z = np.stack([rng.standard_normal(n, dtype=dtype) for rng in self.rngs])
        scale = np.sqrt(sigma2_0)[None, :] / np.sqrt(self.segsum(z * z))
        self.w = z * self.expand(scale.astype(dtype))
        self.opt = HeavyBallSGD(momentum, weight_decay)

    def segsum(self, x: np.ndarray) -> np.ndarray:
        return np.add.reduceat(x, self.offsets, axis=-1)

    def expand(self, per_layer: np.ndarray) -> np.ndarray:
        return np.repeat(per_layer, self.elements, axis=-1)

    def norm(self, x: np.ndarray) -> np.ndarray:
        r"""Per-layer Euclidean norms of ``x`` (float64), finite wherever the norm is.

        The plain :math:`\sqrt{\sum x_i^2}` is kept where it is safe (bit for bit the
        earlier result); where a square over- or underflowed (the sum is not finite, or
        below ``elements * tiny / eps``) the layer is recomputed as
        :math:`m\sqrt{\sum (x_i/m)^2}` with :math:`m = \max_i |x_i|`.
        """
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            plain = np.sqrt(self.segsum(x * x).astype(np.float64))
            info = np.finfo(x.dtype)
            floor = np.sqrt(self.elements * float(info.tiny) / float(info.eps))
            bad = ~np.isfinite(plain) | (plain < floor)
            if not bad.any():
                return plain
            m = np.maximum.reduceat(np.abs(x), self.offsets, axis=-1).astype(np.float64)
            safe = np.where(m > 0, m, 1.0)
            scaled = x.astype(np.float64) / self.expand(safe)
            robust = m * np.sqrt(np.add.reduceat(scaled * scaled, self.offsets, axis=-1))
        return np.where(bad, robust, plain)

    def sigma2(self) -> np.ndarray:
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            plain = self.segsum(self.w * self.w).astype(np.float64)
            if np.all(np.isfinite(plain)) and np.all(plain >= self.elements * 1e-290):
                return plain
            norm = self.norm(self.w)
            return np.where(np.isfinite(plain) & (plain >= self.elements * 1e-290), plain,
                            norm * norm)

    def gradient(self, sigma2: np.ndarray, c_t: np.ndarray) -> np.ndarray:
        """Random gradients of norm ``c_t/||w||`` (projected onto the tangent space if asked)."""
        n = self.w.shape[1]
        z = np.stack([rng.standard_normal(n, dtype=self.dtype) for rng in self.rngs])
        if self.projected:
            # Classical Gram-Schmidt twice ("twice is enough"): one pass leaves a radial
            # residual ~eps*|z|, which is large relative to |Pz| when z is nearly radial
            # (likely for few elements); the second pass brings it to ~eps*|Pz|.
            inv = (1.0 / sigma2).astype(self.dtype)
            for _ in range(2):
                z -= self.expand(self.segsum(z * self.w) * inv) * self.w
        target = c_t[None, :] / np.sqrt(sigma2)
        scale = target / np.sqrt(self.segsum(z * z).astype(np.float64))
        with np.errstate(over="ignore", under="ignore"):
            return z * self.expand(scale.astype(self.dtype))


def _run(sigma2_0: Any, c: Any, elements: Any, lr_schedule: Any, steps: int, *, momentum: float,
         weight_decay: float, projected: bool, seed: Any, dtype: Any,
         on_step: Callable[..., None], keep_vectors: bool = False) -> None:
    steps = check_int("steps", steps, minimum=0)
    elements = _elements(elements)
    n_layers = elements.size
    momentum = float(check_in_range("momentum", momentum, 0.0, 1.0))
    weight_decay = float(check_nonnegative("weight_decay", weight_decay))
    sigma2_0 = _per_layer("sigma2_0", sigma2_0, n_layers, check_positive)
    c_of = _base_gradients(c, n_layers, steps)
    lr_of = _lr_function(lr_schedule, steps)
    seeds = _seeds(seed)
    if not isinstance(projected, (bool, np.bool_)):
        raise ValueError(f"projected must be True or False, got {projected!r}")
    if projected and np.any(elements < 2):
        raise ValueError(
            "elements must be >= 2 per layer when projected=True (the tangent space of a "
            f"1-element layer is empty), got {elements.tolist()}"
        )
    try:
        dtype = np.dtype(dtype).type
    except TypeError as exc:
        raise ValueError(f"dtype must be numpy.float32 or numpy.float64, got {dtype!r}") from exc
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be numpy.float32 or numpy.float64, got {dtype!r}")

    eng = _Engine(sigma2_0, elements, seeds, momentum, weight_decay, bool(projected), dtype)
    for t in range(steps):
        c_t = np.asarray(c_of(t), dtype=np.float64)
        sigma2 = eng.sigma2()
        _check_sigma2(sigma2, t, seeds, np.dtype(dtype).name)
        grad_norm = c_t[None, :] / np.sqrt(sigma2)
        lrs = np.empty(len(seeds))
        for i, s in enumerate(seeds):
            state = DriftState(t, s, sigma2[i], c_t, grad_norm[i], grad_norm[i] / np.sqrt(sigma2[i]))
            lr_t = np.asarray(lr_of(t, state), dtype=np.float64)
            if lr_t.size != 1:
                raise ValueError(f"lr_schedule must give one lr per step (a scalar base lr), "
                                 f"got shape {lr_t.shape} at step {t}")
            lrs[i] = lr_t.reshape(())
        check_positive("lr", lrs)
        w_before = eng.w.copy() if keep_vectors else eng.w  # mutated in place by the step
        g = eng.gradient(sigma2, c_t)
        # Inner products that need the weights *before* the update.
        with np.errstate(over="ignore", under="ignore"):
            w_dot_g = eng.segsum(w_before * g).astype(np.float64)
            g_norm = eng.norm(g)
            direction = eng.opt.step(eng.w, g, lrs[:, None].astype(dtype))
            dir_norm = eng.norm(direction)
        on_step(t=t, sigma2=sigma2, c=c_t, lrs=lrs, w_dot_g=w_dot_g, g_norm=g_norm,
                dir_norm=dir_norm, w_before=w_before, g=g, engine=eng)


def _check_sigma2(sigma2: np.ndarray, t: int, seeds: list[int], dtype: str) -> None:
    """Raise :class:`NonFiniteError` naming ``sigma2``, the step, seed and layer if it left ``dtype``."""
    bad = ~(np.isfinite(sigma2) & (sigma2 > 0))
    if bad.any():
        i, layer = (int(x[0]) for x in np.nonzero(bad))
        what = "underflowed to 0" if sigma2[i, layer] == 0 else "overflowed"
        raise NonFiniteError(f"simulate_drift: sigma2 (squared weight norm) {what} {dtype} at "
                             f"step {t} (seed {seeds[i]}, layer {layer})")


# ----------------------------------------------------------------------------- public API


def simulate_drift(
    sigma2_0: Any,
    c: Any,
    elements: Any,
    lr_schedule: Any,
    steps: int,
    *,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    projected: bool = True,
    seed: int | Sequence[int] = 0,
    record_every: int = 1,
    dtype: Any = np.float64,
) -> pd.DataFrame:
    r"""Simulate weight vectors under random gradients of the modeled norm; return a tidy frame.

    Parameters
    ----------
    sigma2_0
        Initial squared weight norm per layer, scalar or ``(L,)``, positive.
    c
        Base gradient :math:`c_\ell = \lVert g_\ell\rVert\,\lVert w_\ell\rVert`: scalar,
        ``(L,)`` constant, or ``(T, L)`` per step (``T >= steps``), non-negative.
    elements
        Element count :math:`e_\ell` of every layer, integer or ``(L,)``; >= 1, and >= 2
        when ``projected`` (a 1-element layer has no tangent space).  ``L`` is its length.
    lr_schedule
        A float (constant lr), a 1-D array of per-step lrs, or an object with an
        ``lr(step, state)`` method (e.g. a :mod:`normdyn.simulate.schedules` schedule) or a
        callable ``(step, state) -> lr``.  ``state`` is a :class:`DriftState`; the schedule
        is called once per seed per step, in seed order.
    steps
        Number of optimizer steps, >= 0.
    momentum, weight_decay
        ``torch.optim.SGD`` heavy-ball momentum in ``[0, 1)`` (dampening 0, nesterov off)
        and coupled weight decay >= 0.
    projected
        ``True``: gradients orthogonal to ``w`` (scale invariance); ``False``: i.i.d.
        Gaussian entries, rescaled to the same norm.
    seed
        An integer or a sequence of distinct integers; each seed is an independent copy
        with its own ``numpy.random.default_rng(seed)`` stream, so a seed's trajectory does
        not depend on which other seeds run beside it.
    record_every
        Record steps ``0, k, 2k, ...`` (``k = record_every >= 1``).
    dtype
        ``numpy.float64`` (default) or ``numpy.float32`` for the weight vectors.

    Returns
    -------
    pandas.DataFrame
        One row per recorded (seed, step, layer), sorted in that order, columns

        ========== ================================================================
        step       optimizer step ``t`` (0-based); every quantity is of this step
        layer      layer index ``0..L-1``
        lr         the lr :math:`\eta_t` actually used at this step
        seed       the seed of this copy
        elements   :math:`e_\ell`
        sigma2     :math:`\lVert w_t\rVert^2`, *before* the step
        c          base gradient :math:`c_t` of the step
        grad_norm  measured :math:`\lVert g_t\rVert` (equals :math:`c_t/\lVert w_t\rVert`)
        elr        gradient ELR :math:`\eta_t\lVert g_t\rVert/\lVert w_t\rVert`
                   (``gradient_elr``)
        update_elr :math:`\lVert\Delta w_t\rVert/\lVert w_t\rVert` of the step actually
                   taken (momentum buffer and weight decay included)
        cos_wg     :math:`\cos(w_t, g_t)` (~1e-16 projected, ~N(0, 1/e) unprojected)
        spread     :math:`\max_\ell E/\min_\ell E` of ``elr`` over layers, this seed and
                   step (``inf`` if a layer has zero gradient, or if the ratio
                   exceeds float64)
        log10_spread :math:`\log_{10}` of the spread, finite for positive ELRs
                   (``inf`` only for a zero gradient)
        ========== ================================================================

    Raises
    ------
    ValueError
        Naming the parameter: ``momentum`` outside ``[0, 1)``, negative ``weight_decay``,
        ``elements < 1`` (``< 2`` when projected), ``steps < 0``, non-positive ``sigma2_0``
        or lr, negative ``c``, shape mismatches.
    """
    record_every = check_int("record_every", record_every, minimum=1)
    rows: list[dict[str, np.ndarray]] = []

    def _record(*, t: int, sigma2: np.ndarray, c: np.ndarray, lrs: np.ndarray,
                w_dot_g: np.ndarray, g_norm: np.ndarray, dir_norm: np.ndarray,
                **_: Any) -> None:
        if t % record_every:
            return
        weight_norm = np.sqrt(sigma2)
        grad_norm = g_norm
        lr = np.broadcast_to(lrs[:, None], sigma2.shape)
        with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
            elr = gradient_elr.raw(lr, grad_norm, weight_norm)
            cos = np.where(grad_norm > 0, w_dot_g / (weight_norm * grad_norm), 0.0)
            lo, hi = elr.min(axis=1, keepdims=True), elr.max(axis=1, keepdims=True)
            spread = np.where(lo > 0, hi / lo, np.inf)
            upd = lr * dir_norm / weight_norm
        bad = ~(np.isfinite(elr) & ((elr > 0) | (c[None, :] == 0)))
        if bad.any():
            i, layer = (int(x[0]) for x in np.nonzero(bad))
            what = "overflowed" if not np.isfinite(elr[i, layer]) else "underflowed to 0"
            raise NonFiniteError(f"simulate_drift: elr {what} float64 at step {t} "
                                 f"(seed {seeds[i]}, layer {layer})")
        rows.append({
            "step": np.full(sigma2.shape, t), "sigma2": sigma2,
            "c": np.broadcast_to(c[None, :], sigma2.shape), "lr": lr, "grad_norm": grad_norm,
            "elr": elr, "update_elr": upd, "cos_wg": cos,
            "spread": np.broadcast_to(spread, sigma2.shape),
            "log10_spread": np.broadcast_to(
                np.where(lo > 0, log10_spread(hi, np.where(lo > 0, lo, 1.0), spread), np.inf),
                sigma2.shape),
        })

    seeds = _seeds(seed)
    elem = _elements(elements)
    _run(sigma2_0, c, elements, lr_schedule, steps, momentum=momentum, weight_decay=weight_decay,
         projected=projected, seed=seeds, dtype=dtype, on_step=_record)

    n_seeds, n_layers = len(seeds), elem.size
    if not rows:
        return pd.DataFrame({
            name: pd.Series(dtype=np.int64 if name in ("step", "layer", "seed", "elements")
                            else np.float64)
            for name in COLUMNS
        })
    # Stack to (seed, recorded step, layer) and flatten in that order.
    data = {k: np.stack([r[k] for r in rows], axis=1).reshape(-1) for k in rows[0]}
    n_rec = len(rows)
    data["layer"] = np.tile(np.arange(n_layers), n_seeds * n_rec)
    data["seed"] = np.repeat(np.asarray(seeds, dtype=np.int64), n_rec * n_layers)
    data["elements"] = np.tile(elem, n_seeds * n_rec)
    frame = pd.DataFrame({name: data[name] for name in COLUMNS})
    frame["step"] = frame["step"].astype(np.int64)
    return frame


@dataclass(frozen=True)
class DriftTrajectory:
    """Raw vectors of a single-seed drift run (for tests and inspection; memory ``O(T·N)``).

    ``weights[t]`` is the flat weight vector before step ``t`` (``weights[steps]`` the
    final one), ``grads[t]`` the gradient of step ``t``, ``lrs[t]`` its lr, and
    ``offsets``/``elements`` locate each layer in the flat vector.
    """

    weights: np.ndarray
    grads: np.ndarray
    lrs: np.ndarray
    offsets: np.ndarray
    elements: np.ndarray

    def layer(self, array: np.ndarray, index: int) -> np.ndarray:
        """The slice of ``array`` (last axis flat) that belongs to layer ``index``."""
        start = int(self.offsets[index])
        return array[..., start:start + int(self.elements[index])]


def drift_trajectory(
    sigma2_0: Any,
    c: Any,
    elements: Any,
    lr_schedule: Any,
    steps: int,
    *,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    projected: bool = True,
    seed: int = 0,
    dtype: Any = np.float64,
) -> DriftTrajectory:
    """Same run as :func:`simulate_drift` for one seed, returning every weight and gradient vector.

    The gradients and weights are bit-for-bit those of ``simulate_drift(..., seed=seed)``,
    so an independent optimizer (e.g. ``torch.optim.SGD``) fed ``grads`` must reproduce
    ``weights``.
    """
    seeds = _seeds(seed)
    if len(seeds) != 1:
        raise ValueError(f"seed must be a single integer for drift_trajectory, got {seed!r}")
    weights: list[np.ndarray] = []
    grads: list[np.ndarray] = []
    used_lrs: list[float] = []
    holder: dict[str, _Engine] = {}

    def _keep_vectors(*, w_before: np.ndarray, g: np.ndarray, lrs: np.ndarray,
                      engine: _Engine, **_: Any) -> None:
        weights.append(w_before[0].copy())
        grads.append(g[0].copy())
        used_lrs.append(float(lrs[0]))
        holder["engine"] = engine

    _run(sigma2_0, c, elements, lr_schedule, steps, momentum=momentum, weight_decay=weight_decay,
         projected=projected, seed=seeds, dtype=dtype, on_step=_keep_vectors, keep_vectors=True)
    elem = _elements(elements)
    if "engine" in holder:
        weights.append(holder["engine"].w[0].copy())
    else:  # steps == 0: the initial weights only
        dt = np.dtype(dtype).type
        eng = _Engine(_per_layer("sigma2_0", sigma2_0, elem.size, check_positive), elem, seeds,
                      momentum, weight_decay, bool(projected), dt)
        weights.append(eng.w[0].copy())
    n = int(elem.sum())
    return DriftTrajectory(
        weights=np.stack(weights),
        grads=np.stack(grads) if grads else np.empty((0, n), dtype=np.dtype(dtype)),
        lrs=np.asarray(used_lrs, dtype=np.float64),
        offsets=np.concatenate([[0], np.cumsum(elem)[:-1]]),
        elements=elem,
    )
