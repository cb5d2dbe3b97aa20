r"""The discrete norm-level model, vectorized over an lr sweep, the layers and seeds.

Every layer :math:`\ell` of every run carries its squared weight norm, advanced by one
SGD step of THEORY §2,

.. math::

    \sigma^2_{t+1} = \sigma^2_t + \frac{\eta_t^2 c_t^2}{\sigma^2_t}
    \qquad\text{(generated ``norm_step``)},

or, with heavy-ball momentum :math:`\beta` and coupled weight decay :math:`\lambda`, by the
first-order model of THEORY §5 (generated ``momentum_norm_step``, which reduces to
``norm_step`` at :math:`\lambda=\beta=0`).  The gradient ELR of step *t* is
:math:`E_t = \eta_t c_t/\sigma^2_t` (generated ``elr``); at constant :math:`\eta, c` it
obeys :math:`E_{t+1} = E_t/(1+E_t^2)`.

The *update* ELR :math:`\lVert\Delta w\rVert/\lVert w\rVert` is ``elr`` for plain SGD. With
momentum or weight decay its tangential part is ``momentum_update_elr(E, beta)`` (the
stationary velocity, :math:`E/\sqrt{1-\beta^2}`), and its radial part follows from the
model's norm ratio :math:`s = \sigma^2_{t+1}/\sigma^2_t` by Pythagoras
(``update_elr_geometric(s, E_tan)``, derived in :mod:`normdyn.theory.beyond_sgd`):

.. math::

    (1 + r)^2 + E_{tan}^2 = s, \qquad E_u = \sqrt{r^2 + E_{tan}^2} .

At :math:`\beta = 0` this is exact (:math:`r = -\eta\lambda`, equilibrium
:math:`\sqrt{2\eta\lambda}`); with momentum at equilibrium :math:`s = 1` and the radial
part is second order, as the drift simulator measures (an earlier version added the
decay part :math:`\eta\lambda/(1-\beta)` orthogonally and overstated the equilibrium
update ELR by 2.4 % at :math:`\beta = 0.9`).  This is an expectation-level
approximation, like the model.

Engines: ``"numba"`` (a fused kernel compiled from the generated ``.scalar`` functions;
rows are kept sorted by ELR, so quantiles are O(1) reads and an insertion sort counts the
flips in O(L) per step; each run advances through a block of steps while its state is in
cache; threads over runs above :data:`PARALLEL_WORK` layer-steps) and ``"numpy"`` (the
reference; the same generated functions through ``.raw``).  ``"auto"`` picks numba when
it is installed.  Both engines give bit-identical results.

A *flip* between steps :math:`t-1` and :math:`t` is a pair with
:math:`(E_{\ell,t-1} - E_{k,t-1})(E_{\ell,t} - E_{k,t}) < 0`, where a pair whose ELRs agree
to a relative :data:`FLIP_RTOL` counts as tied: the critical-lr step makes the extreme
layers exactly equal, and rounding noise must not count as flips afterwards.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from normdyn._checks import (
    NonFiniteError,
    check_in_range,
    check_int,
    check_nonnegative,
    check_positive,
)
from normdyn.simulate.initial import from_elr
from normdyn.simulate.schedules import (
    CriticalWarmup,
    ScheduleLike,
    ScheduleState,
    make_schedule,
)
from normdyn.simulate.summary import (
    FLIP_RTOL,
    QUANTILE_NAMES,
    QUANTILES,
    TrajectorySummary,
    count_flips,
    log10_spread,
    quantile_positions,
    sorted_quantiles,
)
from normdyn.theory.numeric import (
    critical_lr,
    elr,
    momentum_norm_step,
    momentum_step_update_elr,
    momentum_update_elr,
    norm_step,
)

__all__ = [
    "COLUMNS",
    "QUANTILES",
    "QUANTILE_NAMES",
    "TrajectorySummary",
    "simulate_discrete",
    "from_elr",
    "update_elr",
    "count_flips",
    "check_state",
    "log10_spread",
    "FLIP_RTOL",
    "numba_available",
]

#: Columns of the tidy frames of every simulator, in order.
COLUMNS: tuple[str, ...] = (
    "step", "layer", "lr", "lr_t", "seed", "sigma2", "c", "elr", "update_elr", "spread",
    "log10_spread",
)

Record = Literal["all", "summary"] | int


#: Layer-steps above which the numba engine uses its multi-threaded kernel (which takes a
#: few seconds longer to compile than the serial one).
PARALLEL_WORK = 10**9


def _threads() -> int:
    import numba

    return int(numba.get_num_threads())


def numba_available() -> bool:
    """Whether the fused numba kernel can be used (numba, a core dependency of normdyn)."""
    return _numba_kernel() is not None


# ----------------------------------------------------------------------------- inputs


class _Inputs:
    """Validated inputs: ``sigma2_0 (S, L)``, ``c (S, T, L)``, lrs ``(N,)``, seed labels."""

    def __init__(self, sigma2_0: Any, c: Any, lr: Any, steps: int, seeds: Any) -> None:
        self.steps = check_int("steps", steps, minimum=0)
        lr_arr = check_positive("lr", lr)
        if lr_arr.ndim > 1:
            raise ValueError(f"lr must be a scalar or a 1-D sweep of lrs, got shape {lr_arr.shape}")
        self.lr = np.atleast_1d(lr_arr)
        if self.lr.size == 0:
            raise ValueError("lr must contain at least one learning rate, got an empty array")
        c_arr = check_positive("c", c)
        s_arr = check_positive("sigma2_0", sigma2_0)
        if c_arr.ndim > 3:
            raise ValueError(f"c must have shape (L,), (T, L) or (S, T, L), got {c_arr.shape}")
        n_layers = c_arr.shape[-1] if c_arr.ndim else (s_arr.shape[-1] if s_arr.ndim else 1)
        if n_layers == 0:
            raise ValueError("c must contain at least one layer, got an empty array")
        c3 = np.broadcast_to(c_arr, (n_layers,)) if c_arr.ndim == 0 else c_arr
        c3 = c3.reshape((1,) * (3 - c3.ndim) + c3.shape)
        if c_arr.ndim >= 2 and c3.shape[1] < max(self.steps, 1):
            raise ValueError(f"c: a replayed series needs at least steps = {self.steps} rows "
                             f"(axis -2), got {c3.shape[1]}")
        if s_arr.ndim == 0:
            s_arr = np.full(n_layers, float(s_arr))
        if s_arr.ndim > 2 or s_arr.shape[-1] != n_layers:
            raise ValueError(f"sigma2_0 must have shape ({n_layers},) like c, got {s_arr.shape}")
        n_seeds = max(c3.shape[0], s_arr.shape[0] if s_arr.ndim == 2 else 1)
        if c3.shape[0] not in (1, n_seeds) or (s_arr.ndim == 2 and s_arr.shape[0] not in (1, n_seeds)):
            raise ValueError(f"sigma2_0 {s_arr.shape} and c {c_arr.shape} disagree on the seed axis")
        self.c = np.array(np.broadcast_to(c3, (n_seeds,) + c3.shape[1:]))  # writable copies
        self.sigma2_0 = np.array(np.broadcast_to(s_arr.reshape(-1, n_layers), (n_seeds, n_layers)))
        if seeds is None:
            labels = list(range(n_seeds))
        else:
            labels = [seeds] if np.ndim(seeds) == 0 else list(seeds)
            labels = [check_int("seeds", int(s) if isinstance(s, np.integer) else s)
                      for s in labels]
            if len(labels) != n_seeds:
                raise ValueError(f"seeds must label the {n_seeds} seed(s) of c, got {len(labels)}")
        self.seeds = np.asarray(labels, dtype=np.int64)
        self.S, self.N, self.L = n_seeds, self.lr.size, n_layers
        self.R = self.S * self.N

    def c_at(self, t: int) -> np.ndarray:
        """``(S, L)`` base gradients of step ``t`` (the last row for ``t >= T``)."""
        return self.c[:, min(t, self.c.shape[1] - 1), :]


def _schedule(schedule: Any, lr: np.ndarray) -> ScheduleLike:
    if isinstance(schedule, str):
        return make_schedule(schedule, lr)
    if not callable(getattr(schedule, "lr", None)):
        raise ValueError(f"schedule must be a name or an object with lr(step, state), "
                         f"got {schedule!r}")
    return schedule


def _lr_rows(sched: ScheduleLike, t: int, state: ScheduleState | None, shape: tuple) -> np.ndarray:
    out = np.asarray(sched.lr(t, state), dtype=np.float64)
    try:
        out = np.broadcast_to(out, shape)
    except ValueError as exc:
        raise ValueError(f"schedule: lr of shape {out.shape} does not fit {shape} runs") from exc
    if not np.all(out > 0) or not np.all(np.isfinite(out)):
        raise ValueError(f"lr must be positive, got a scheduled lr of {out.min()!r} at step {t}")
    return out


# ----------------------------------------------------------------------------- update ELR


def update_elr(e: Any, lr_t: Any, momentum: float, weight_decay: float) -> np.ndarray:
    r"""Update ELR :math:`\lVert\Delta w\rVert/\lVert w\rVert` from the gradient ELR ``e``.

    The tangential part is ``momentum_update_elr(e, beta)`` (exactly ``e`` at
    :math:`\beta=0`); the radial part follows from the model's norm ratio
    :math:`s = \sigma^2_{t+1}/\sigma^2_t` (``momentum_norm_step``) by Pythagoras,
    ``update_elr_geometric(s, E_tan)``.  Exact for plain SGD with weight decay; with
    momentum it inherits the first-order model (see ``benchmarks/drift_vs_discrete.py``).
    Both are composed in SymPy into one function, ``momentum_step_update_elr(E, eta, lam,
    beta)``, compiled from an overflow-free form (finite for gradient ELRs up to about
    ``1e307 (1-beta)``; ``stable_forms_agree`` proves it equal to the composition).
    Raises ``ValueError`` unless :math:`\eta_t\lambda/(1-\beta) < 1`, and
    :class:`NonFiniteError` naming ``update_elr`` if the result still leaves float64.
    """
    e_arr = np.asarray(e, dtype=np.float64)
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        if weight_decay == 0.0 and momentum == 0.0:
            return np.array(momentum_update_elr.raw(e_arr, momentum), dtype=np.float64)
        lr_arr = np.asarray(lr_t, dtype=np.float64)
        _check_decay(lr_arr, momentum, weight_decay)
        out = np.asarray(momentum_step_update_elr.raw(e_arr, lr_arr, weight_decay, momentum),
                         dtype=np.float64)
    bad = ~np.isfinite(out) & np.isfinite(e_arr)
    if bad.any():
        worst = float(np.broadcast_to(e_arr, out.shape)[bad].ravel()[0])
        raise NonFiniteError(
            f"update_elr overflowed float64 at a gradient ELR of {worst!r} (momentum "
            f"{momentum}, weight_decay {weight_decay})")
    return out


def _check_decay(lr: np.ndarray, momentum: float, weight_decay: float) -> None:
    worst = float(np.max(lr)) * weight_decay / (1.0 - momentum)
    if worst >= 1.0:
        raise ValueError("weight_decay: the update-ELR model needs lr*weight_decay/(1-momentum) "
                         f"< 1, got {worst!r}")


# ----------------------------------------------------------------------------- numpy engine


def _step_fn(momentum: float, weight_decay: float):
    if momentum == 0.0 and weight_decay == 0.0:
        return norm_step.raw
    return lambda s, eta, c: momentum_norm_step.raw(s, eta, c, weight_decay, momentum)


def _run_numpy_summary(inp: _Inputs, sched: ScheduleLike, momentum: float,
                       weight_decay: float, recorded: np.ndarray,
                       progress: bool) -> dict[str, np.ndarray]:
    """Summaries with rows kept sorted by ELR, like the numba kernel.

    The state ``sig, cc`` of every run is stored in the order of its last ELRs (``idx``
    maps positions to layers).  A step is then elementwise work plus one vectorized check
    that every row is still sorted; only rows whose order changed are re-sorted (stable,
    so the result equals the kernel's insertion sort) and only they get a pairwise flip
    count.  Spread and quantiles are reads of sorted columns.
    """
    S, N, L, R, K = inp.S, inp.N, inp.L, inp.R, recorded.size
    step = _step_fn(momentum, weight_decay)
    dep = bool(getattr(sched, "state_dependent", False))
    crit = isinstance(sched, CriticalWarmup)
    T = inp.c.shape[1]
    row_seed = np.repeat(np.arange(S), N)
    sig = np.repeat(inp.sigma2_0, N, axis=0)
    cc = np.repeat(inp.c[:, 0, :], N, axis=0)
    idx = np.tile(np.arange(L, dtype=np.int64), (R, 1))
    rows = np.arange(R)[:, None]
    out = _alloc(inp, K, True)
    # Step-major buffers (a record is one contiguous row), copied into the run-major
    # output arrays once at the end.
    lr_out, spread_out = np.empty((K, R)), np.empty((K, R))
    flips_out = np.zeros((K, R), dtype=np.int64)
    quant_out = np.empty((K, R, len(QUANTILES)))
    slot = np.full(inp.steps + 1, -1, dtype=np.int64)
    slot[recorded] = np.arange(K)
    lo, hi, g = quantile_positions(L)
    prev: np.ndarray | None = None
    down = np.empty((R, max(L - 1, 0)), dtype=bool)  # where a row is no longer sorted

    a: np.ndarray | None = None  # per-unit-lr ELRs c/sigma2 of the current state (dep only)

    def state_of(t: int) -> ScheduleState | None:
        nonlocal a
        if not dep:
            return None
        c_next = inp.c[row_seed, min(t, T - 1)][rows, idx] if T > 1 else cc
        a = elr.raw(1.0, c_next, sig)
        a_max, a_min = a.max(axis=1).reshape(S, N), a.min(axis=1).reshape(S, N)
        if crit:
            return ScheduleState(a_max=a_max, a_min=a_min)
        per_layer = np.empty_like(a)
        per_layer[rows, idx] = a
        return ScheduleState(per_unit_elr=per_layer.reshape(S, N, L), a_max=a_max, a_min=a_min)

    state = state_of(0)
    for t in tqdm(range(inp.steps + 1), disable=not progress, file=sys.stderr, unit="step"):
        if T > 1:
            cc = inp.c[row_seed, min(t, T - 1)][rows, idx]
        lr_t = _lr_rows(sched, t, state, (S, N)).reshape(R)
        # critical: E = lr*a from the a the lr came from (as the kernel does)
        e = elr.raw(lr_t[:, None], a, 1.0) if crit else elr.raw(lr_t[:, None], cc, sig)
        moved: Any = ()
        if L > 1:
            np.less(e[:, 1:], e[:, :-1], out=down)
            if down.any():
                moved = np.flatnonzero(down.any(axis=1))
        k = slot[t]
        if len(moved):
            sub = e[moved]
            if prev is not None and k >= 0 and t > 0:
                flips_out[k, moved] = count_flips(prev[moved], sub)
            perm = np.argsort(sub, axis=1, kind="stable")
            e[moved] = np.take_along_axis(sub, perm, axis=1)
            for arr in (sig, cc, idx):
                arr[moved] = np.take_along_axis(arr[moved], perm, axis=1)
        if k >= 0:
            lr_out[k] = lr_t
            with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
                np.divide(e[:, -1], e[:, 0], out=spread_out[k])
            quant_out[k] = sorted_quantiles(e, lo, hi, g)
        if t == inp.steps:
            final_e, final_s = np.empty_like(e), np.empty_like(sig)
            final_e[rows, idx], final_s[rows, idx] = e, sig
            out["final_elr"], out["final_sigma2"], out["final_lr_t"] = final_e, final_s, lr_t
            out["lr_t"][...], out["spread"][...], out["flips"][...] = lr_out, spread_out, flips_out
            out["quantiles"][...] = np.moveaxis(quant_out, -1, 0)
            break
        sig = step(sig, lr_t[:, None], cc)
        prev = e
        state = state_of(t + 1)
    return out


def _run_numpy(inp: _Inputs, sched: ScheduleLike, momentum: float, weight_decay: float,
               recorded: np.ndarray, summary: bool, progress: bool) -> dict[str, np.ndarray]:
    if summary:
        return _run_numpy_summary(inp, sched, momentum, weight_decay, recorded, progress)
    S, N, L, K = inp.S, inp.N, inp.L, recorded.size
    step = _step_fn(momentum, weight_decay)
    dep = bool(getattr(sched, "state_dependent", False))
    sig = np.broadcast_to(inp.sigma2_0[:, None, :], (S, N, L)).copy()
    out = _alloc(inp, K, False)
    slot = np.full(inp.steps + 1, -1, dtype=np.int64)
    slot[recorded] = np.arange(K)
    state = ScheduleState(per_unit_elr=elr.raw(1.0, inp.c_at(0)[:, None, :], sig)) if dep else None
    for t in tqdm(range(inp.steps + 1), disable=not progress, file=sys.stderr, unit="step"):
        c_t = inp.c_at(t)[:, None, :]
        lr_t = _lr_rows(sched, t, state, (S, N))
        if isinstance(sched, CriticalWarmup):  # E = lr*a, a = c/sigma2 (as the kernel does)
            e = elr.raw(lr_t[..., None], state.per_unit_elr, 1.0)
        else:
            e = elr.raw(lr_t[..., None], c_t, sig)
        k = slot[t]
        if k >= 0:
            out["lr_t"][k] = lr_t.ravel()
            out["elr"][k] = e.reshape(inp.R, L)
            out["sigma2"][k] = sig.reshape(inp.R, L)
            out["c"][k] = np.broadcast_to(c_t, (S, N, L)).reshape(inp.R, L)
        if t == inp.steps:
            out["final_elr"], out["final_sigma2"] = e.reshape(inp.R, L), sig.reshape(inp.R, L)
            out["final_lr_t"] = lr_t.ravel()
            break
        sig = step(sig, lr_t[..., None], c_t)
        if dep:
            state = ScheduleState(per_unit_elr=elr.raw(1.0, inp.c_at(t + 1)[:, None, :], sig))
    return out


def _alloc(inp: _Inputs, K: int, summary: bool) -> dict[str, np.ndarray]:
    """Output arrays; per-step summaries are stored run-major (views in step-major shape)."""
    R, L = inp.R, inp.L
    out = {"lr_t": np.empty((R, K)).T}
    if summary:
        out["spread"] = np.empty((R, K)).T
        out["quantiles"] = np.empty((R, K, len(QUANTILES))).transpose(2, 1, 0)
        out["flips"] = np.zeros((R, K), dtype=np.int64).T
    else:
        for name in ("elr", "sigma2", "c"):
            out[name] = np.empty((K, R, L))
    return out


# ----------------------------------------------------------------------------- numba engine


@functools.cache
def _numba_kernel(parallel: bool = False):  # pragma: no cover - needs numba
    """The fused kernel, or ``None`` without numba; ``parallel`` spreads runs over threads."""
    try:
        import numba
    except ImportError:
        return None
    jit = functools.partial(numba.njit, error_model="numpy", cache=False)
    nb_elr = jit(elr.scalar)  # the generated functions themselves, compiled
    nb_step = jit(norm_step.scalar)
    nb_mstep = jit(momentum_norm_step.scalar)
    nb_crit = jit(critical_lr.scalar)
    flip_rtol = FLIP_RTOL

    @jit(parallel=parallel)
    def kernel(t0, t1, steps, lr_block, crit, base, c, row_seed, sig, cc, idx, e, a_max, a_min,
               need_a, plain, lam, beta, summary, slot, q_lo, q_hi, q_g, lr_out, spread_out,
               quant_out, flips_out, rec, rec_e, rec_s, rec_c):
        R, L = sig.shape
        T = c.shape[1]
        refill = T > 1
        for r in numba.prange(R):  # each run advances through the whole block of steps
            s = row_seed[r]
            sr, cr, ir = sig[r], cc[r], idx[r]
            er = e[r]  # ELRs of the last step, sorted; en receives the next ones (then swap)
            en = np.empty(L)
            swapped = False
            for t in range(t0, t1):
                if refill:
                    for j in range(L):
                        cr[j] = c[s, min(t, T - 1), ir[j]]
                if crit:
                    # The per-unit-lr ELRs a = c/sigma2 (into en), in the order of the last
                    # ELRs: usually still sorted, so their extremes are the row's ends.
                    still = True
                    for j in range(L):
                        en[j] = nb_elr(1.0, cr[j], sr[j])
                    for j in range(1, L):
                        still &= en[j - 1] <= en[j]
                    if still:
                        hi, lo = en[L - 1], en[0]
                    else:
                        hi, lo = -np.inf, np.inf
                        for j in range(L):
                            hi, lo = max(hi, en[j]), min(lo, en[j])
                    lr = min(base[r], nb_crit(hi, lo))
                else:
                    lr = lr_block[t - t0, r]
                k = slot[t]
                if rec and k >= 0:
                    for j in range(L):
                        rec_s[k, r, ir[j]] = sr[j]
                        rec_c[k, r, ir[j]] = cr[j]
                if t == steps:
                    for j in range(L):
                        en[j] = nb_elr(lr, en[j], 1.0) if crit else nb_elr(lr, cr[j], sr[j])
                elif crit and plain:  # en holds a = c/sigma2; E = lr*a: no second division
                    for j in range(L):
                        x, cj = sr[j], cr[j]
                        en[j] = nb_elr(lr, en[j], 1.0)
                        sr[j] = nb_step(x, lr, cj)
                elif crit:
                    for j in range(L):
                        x, cj = sr[j], cr[j]
                        en[j] = nb_elr(lr, en[j], 1.0)
                        sr[j] = nb_mstep(x, lr, cj, lam, beta)
                elif plain:
                    for j in range(L):
                        x, cj = sr[j], cr[j]
                        en[j] = nb_elr(lr, cj, x)
                        sr[j] = nb_step(x, lr, cj)
                else:
                    for j in range(L):
                        x, cj = sr[j], cr[j]
                        en[j] = nb_elr(lr, cj, x)
                        sr[j] = nb_mstep(x, lr, cj, lam, beta)
                if need_a and t < steps:  # per-unit-lr ELRs of the next state
                    hi, lo = -np.inf, np.inf
                    for j in range(L):
                        a = nb_elr(1.0, c[s, min(t + 1, T - 1), ir[j]] if refill else cr[j], sr[j])
                        hi, lo = max(hi, a), min(lo, a)
                    a_max[r], a_min[r] = hi, lo
                unsorted = False
                for j in range(1, L):  # branch-free check: usually still sorted
                    unsorted |= en[j - 1] > en[j]
                nf = 0
                if unsorted:  # insertion sort, moving the previous ELRs er along
                    for j in range(1, L):
                        key = en[j]
                        if en[j - 1] > key:
                            ks, kc, ki, kp = sr[j], cr[j], ir[j], er[j]
                            i = j - 1
                            while i >= 0 and en[i] > key:
                                # a flip unless the pair is tied (within FLIP_RTOL) at either step
                                nf += (kp - er[i] > flip_rtol * kp) and (en[i] - key > flip_rtol * en[i])
                                en[i + 1], sr[i + 1], cr[i + 1] = en[i], sr[i], cr[i]
                                ir[i + 1], er[i + 1] = ir[i], er[i]
                                i -= 1
                            en[i + 1], sr[i + 1], cr[i + 1], ir[i + 1], er[i + 1] = key, ks, kc, ki, kp
                er, en = en, er
                swapped = not swapped
                if k < 0:
                    continue
                lr_out[r, k] = lr
                if rec:
                    for j in range(L):
                        rec_e[k, r, ir[j]] = er[j]
                if summary:
                    spread_out[r, k] = er[L - 1] / er[0]
                    for q in range(q_lo.size):
                        a, b, gq = er[q_lo[q]], er[q_hi[q]], q_g[q]
                        d = b - a
                        quant_out[r, k, q] = b - d * (1.0 - gq) if gq >= 0.5 else a + d * gq
                    flips_out[r, k] = nf if t > 0 else 0
            if swapped:  # the latest ELRs live in the scratch row: copy them home
                for j in range(L):
                    en[j] = er[j]

    return kernel


def _run_numba(kernel, inp: _Inputs, sched: ScheduleLike, momentum: float, weight_decay: float,
               recorded: np.ndarray, summary: bool, progress: bool) -> dict[str, np.ndarray]:
    S, N, L, R, K = inp.S, inp.N, inp.L, inp.R, recorded.size
    dep = bool(getattr(sched, "state_dependent", False))
    crit = isinstance(sched, CriticalWarmup)  # evaluated in the kernel: min(base, critical_lr)
    base = np.ones(R)
    if crit:
        try:
            base = np.array(np.broadcast_to(sched.base, (S, N)), dtype=np.float64).ravel()
        except ValueError as exc:
            raise ValueError(f"schedule: lr of shape {np.shape(sched.base)} does not fit "
                             f"{(S, N)} runs") from exc
    sig = np.ascontiguousarray(np.repeat(inp.sigma2_0, N, axis=0))
    idx = np.tile(np.arange(L, dtype=np.int64), (R, 1))
    cc = np.ascontiguousarray(np.repeat(inp.c[:, 0, :], N, axis=0))
    e = np.zeros((R, L))
    out = _alloc(inp, K, summary)
    spread = out["spread"].T if summary else np.empty((1, 1))  # the run-major arrays
    quant = out["quantiles"].transpose(2, 1, 0) if summary else np.empty((1, 1, 1))
    flips = out["flips"].T if summary else np.empty((1, 1), dtype=np.int64)
    rec_e, rec_s, rec_c = (out.get(n, np.empty((1, 1, 1))) for n in ("elr", "sigma2", "c"))
    slot = np.full(inp.steps + 1, -1, dtype=np.int64)
    slot[recorded] = np.arange(K)
    q_lo, q_hi, q_g = quantile_positions(L)
    a0 = elr.raw(1.0, inp.c_at(0), inp.sigma2_0)  # (S, L)
    a_max, a_min = np.repeat(a0.max(-1), N), np.repeat(a0.min(-1), N)
    block = 1 if dep and not crit else max(1, min(512, (1 << 20) // R))
    bar = tqdm(total=inp.steps + 1, disable=not progress, file=sys.stderr, unit="step")
    for t0 in range(0, inp.steps + 1, block):
        t1 = min(t0 + block, inp.steps + 1)
        if crit:
            lr_block = np.empty((1, 1))
        elif dep:
            state = ScheduleState(a_max=a_max.reshape(S, N), a_min=a_min.reshape(S, N))
            lr_block = _lr_rows(sched, t0, state, (S, N)).reshape(1, R)
        else:
            lr_block = np.stack([_lr_rows(sched, t, None, (S, N)).ravel() for t in range(t0, t1)])
        kernel(t0, t1, inp.steps, lr_block, crit, base, inp.c, np.repeat(np.arange(S), N), sig,
               cc, idx, e, a_max, a_min, dep and not crit, momentum == 0.0 and weight_decay == 0.0,
               float(weight_decay), float(momentum), summary, slot, q_lo, q_hi, q_g,
               out["lr_t"].T, spread, quant, flips, not summary, rec_e, rec_s, rec_c)
        bar.update(t1 - t0)
    bar.close()
    rows = np.arange(R)[:, None]
    for name, arr in (("final_elr", e), ("final_sigma2", sig)):  # sig: not advanced at t=steps
        out[name] = np.empty_like(arr)
        out[name][rows, idx] = arr
    out["final_lr_t"] = out["lr_t"][-1]
    return out


# ----------------------------------------------------------------------------- public API


def simulate_discrete(
    sigma2_0: Any,
    c: Any,
    lr: Any,
    steps: int,
    *,
    schedule: str | ScheduleLike = "constant",
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    record: Record = "all",
    seeds: Sequence[int] | None = None,
    progress: bool = False,
    engine: Literal["auto", "numba", "numpy"] = "auto",
) -> pd.DataFrame | TrajectorySummary:
    r"""Run the discrete norm-level model for every lr of a sweep, every layer and seed.

    Parameters
    ----------
    sigma2_0
        Initial squared weight norms, ``(L,)`` (or ``(S, L)``, or a scalar), positive.
    c
        Base gradients, positive: ``(L,)`` constant; ``(T, L)`` a replayed per-step series
        (e.g. measured in a real run), ``T >= steps``; ``(S, T, L)`` one series per seed.
        Step ``t`` uses row ``t``; the final record (``t = steps``) uses row
        ``min(steps, T-1)``.
    lr
        Base lr, a positive scalar or a 1-D sweep ``(N,)``.
    steps
        Number of updates; the records are steps ``t = 0..steps`` (``t = steps`` is the
        state after the last update).
    schedule
        A name for :func:`~normdyn.simulate.schedules.make_schedule` or a schedule object
        (anything with ``lr(step, state)``); state-dependent schedules see the per-unit-lr
        ELRs of the state before each step.
    momentum, weight_decay
        :math:`\beta \in [0, 1)` and :math:`\lambda \ge 0` of the first-order model.
    record
        ``"all"``: a tidy frame of every step; an integer ``k``: of steps ``0, k, 2k, ..``
        and ``steps``; ``"summary"``: a :class:`TrajectorySummary` with memory
        ``O(runs*layers + steps*runs)``.
    seeds
        Labels of the seed axis of a 3-D ``c`` (default ``0..S-1``).
    progress
        Show a tqdm bar on stderr.
    engine
        ``"auto"`` (numba if installed), ``"numba"`` or ``"numpy"``.

    Returns
    -------
    pandas.DataFrame or TrajectorySummary
        Frame columns :data:`COLUMNS`: ``step, layer, lr`` (base lr of the run), ``lr_t``
        (the scheduled lr used at the step), ``seed, sigma2`` (before the step), ``c, elr``
        (gradient ELR :math:`\eta_t c_t/\sigma^2_t`), ``update_elr, spread`` (the ratio
        :math:`E_{max}/E_{min}` over layers; ``inf`` where it exceeds float64, e.g. ELRs
        ``1e300`` and ``1e-300``), ``log10_spread`` (:math:`\log_{10}E_{max} -
        \log_{10}E_{min}`, finite there: 600 in that example); sorted by seed, lr, step,
        layer.

    Raises
    ------
    NonFiniteError
        (a ``ValueError``) naming the quantity that left float64 first and where: ``sigma2``
        (the squared weight norm overflowed) or ``elr`` (overflowed, or underflowed to 0),
        with the step, the run's lr and the layer.  NumPy's RuntimeWarnings are not shown.
    """
    inp = _Inputs(sigma2_0, c, lr, steps, seeds)
    beta = float(check_in_range("momentum", momentum, 0.0, 1.0))
    lam = float(check_nonnegative("weight_decay", weight_decay))
    if lam > 0:
        _check_decay(inp.lr, beta, lam)
    sched = _schedule(schedule, inp.lr)
    summary, recorded = _recorded_steps(record, inp.steps)
    if engine not in ("auto", "numba", "numpy"):
        raise ValueError(f"engine must be 'auto', 'numba' or 'numpy', got {engine!r}")
    kernel = _numba_kernel() if engine != "numpy" else None
    if kernel is not None and inp.R * inp.L * max(inp.steps, 1) >= PARALLEL_WORK:
        kernel = _numba_kernel(parallel=True) if _threads() > 1 else kernel
    if engine == "numba" and kernel is None:
        raise ValueError("engine: 'numba' is not installed (pip install numba)")
    run = functools.partial(_run_numba, kernel) if kernel is not None else _run_numpy
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        out = run(inp, sched, beta, lam, recorded, summary, progress)
    if summary:
        result = TrajectorySummary(
            step=recorded, lr=np.tile(inp.lr, inp.S), seed=np.repeat(inp.seeds, inp.N),
            lr_t=out["lr_t"], spread=out["spread"], quantiles=out["quantiles"],
            flips=out["flips"], final_sigma2=out["final_sigma2"], final_elr=out["final_elr"],
            final_update_elr=update_elr(out["final_elr"], out["final_lr_t"][:, None], beta, lam),
        )
        _check_summary(result, out["final_sigma2"])
        return result
    return _frame(inp, recorded, out, beta, lam)


def _recorded_steps(record: Any, steps: int) -> tuple[bool, np.ndarray]:
    if isinstance(record, str):
        if record not in ("all", "summary"):
            raise ValueError(f"record must be 'all', 'summary' or an integer k >= 1, got {record!r}")
        return record == "summary", np.arange(steps + 1)
    k = check_int("record", record, minimum=1)
    rec = np.arange(0, steps + 1, k)
    if rec[-1] != steps:
        rec = np.append(rec, steps)
    return False, rec


def _frame(inp: _Inputs, recorded: np.ndarray, out: dict[str, np.ndarray], beta: float,
           lam: float) -> pd.DataFrame:
    K, R, L = recorded.size, inp.R, inp.L

    def tidy(a: np.ndarray) -> np.ndarray:  # (K, R, L) -> flat in (R, K, L) order
        return np.ascontiguousarray(np.swapaxes(a, 0, 1)).reshape(-1)

    e = out["elr"]
    lr_t = np.broadcast_to(out["lr_t"][:, :, None], (K, R, L))
    check_state("simulate_discrete", recorded, e, out["sigma2"], np.tile(inp.lr, inp.S),
                final_sigma2=out["final_sigma2"])
    hi, lo = e.max(-1), e.min(-1)
    with np.errstate(over="ignore"):
        ratio = hi / lo  # inf where the spread exceeds float64; log10_spread stays finite
    spread = np.broadcast_to(ratio[:, :, None], (K, R, L))
    log_spread = np.broadcast_to(log10_spread(hi, lo, ratio)[:, :, None], (K, R, L))
    data = {
        "step": np.tile(np.repeat(recorded.astype(np.int64), L), R),
        "layer": np.tile(np.arange(L, dtype=np.int64), R * K),
        "lr": np.repeat(np.tile(inp.lr, inp.S), K * L),
        "lr_t": tidy(lr_t),
        "seed": np.repeat(inp.seeds, inp.N * K * L),
        "sigma2": tidy(out["sigma2"]),
        "c": tidy(out["c"]),
        "elr": tidy(e),
        "update_elr": tidy(update_elr(e, lr_t, beta, lam)),
        "spread": tidy(spread),
        "log10_spread": tidy(log_spread),
    }
    return pd.DataFrame({name: data[name] for name in COLUMNS})


def check_state(where: str, step: np.ndarray, e: np.ndarray, sigma2: np.ndarray | None,
                lr: np.ndarray, *, final_sigma2: np.ndarray | None = None) -> None:
    r"""Raise :class:`NonFiniteError` naming the quantity that left float64 first, and where.

    ``e`` and ``sigma2`` are ``(K, R, L)`` records of steps ``step (K,)`` for runs of base
    lr ``lr (R,)``.  The earliest bad step is reported: a squared weight norm that
    overflowed (also checked in ``final_sigma2 (R, L)``: :math:`\sigma^2` never comes back
    from ``inf``) is named as such, not as the zero ELR :math:`\eta c/\infty` it causes in
    the same step; an ELR that overflowed or underflowed to 0 is named ``elr``.  A spread
    :math:`E_{max}/E_{min}` beyond float64 is *not* an error (``spread`` is ``inf``,
    ``log10_spread`` finite).
    """
    bad_e = ~(np.isfinite(e) & (e > 0))
    bad_s = ~np.isfinite(sigma2) if sigma2 is not None else np.zeros(e.shape, dtype=bool)
    k_e = int(np.argmax(bad_e.any(axis=(1, 2)))) if bad_e.any() else None
    k_s = int(np.argmax(bad_s.any(axis=(1, 2)))) if bad_s.any() else None
    final_bad = final_sigma2 is not None and not np.all(np.isfinite(final_sigma2))
    if k_e is None and k_s is None and not final_bad:
        return

    def place(mask: np.ndarray, k: int) -> str:
        r, layer = (int(i[0]) for i in np.nonzero(mask[k]))
        return f"step {int(step[k])} (lr {float(lr[r]):.6g}, layer {layer})"

    if k_s is not None and (k_e is None or k_s <= k_e):
        raise NonFiniteError(f"{where}: sigma2 (squared weight norm) overflowed float64 at "
                             f"{place(bad_s, k_s)}")
    if k_e is not None:
        k = k_e
        r, layer = (int(i[0]) for i in np.nonzero(bad_e[k]))
        if final_bad and np.isfinite(e[k, r, layer]):  # a zero ELR from an overflowed norm
            raise NonFiniteError(f"{where}: sigma2 (squared weight norm) overflowed float64 by "
                                 f"{place(bad_e, k)}")
        what = "overflowed float64" if not np.isfinite(e[k, r, layer]) else "underflowed to 0"
        raise NonFiniteError(f"{where}: elr {what} at {place(bad_e, k)}")
    r, layer = (int(i[0]) for i in np.nonzero(~np.isfinite(final_sigma2)))
    raise NonFiniteError(f"{where}: sigma2 (squared weight norm) overflowed float64 after the "
                         f"last recorded step (lr {float(lr[r]):.6g}, layer {layer})")


def _check_summary(result: TrajectorySummary, final_sigma2: np.ndarray) -> None:
    """:func:`check_state` for a summary: its min and max ELR per step stand for every layer."""
    lo, hi = result.quantile("min"), result.quantile("max")  # (K, R)
    bad = ~(np.isfinite(hi) & np.isfinite(lo) & (lo > 0))
    final_bad = not np.all(np.isfinite(final_sigma2))
    if not bad.any() and not final_bad:
        return
    if not bad.any():
        r, layer = (int(i[0]) for i in np.nonzero(~np.isfinite(final_sigma2)))
        raise NonFiniteError(f"simulate_discrete: sigma2 (squared weight norm) overflowed "
                             f"float64 after the last step (lr {float(result.lr[r]):.6g}, "
                             f"layer {layer})")
    k, r = (int(i[0]) for i in np.nonzero(bad))
    at = f"step {int(result.step[k])} (lr {float(result.lr[r]):.6g})"
    if not np.isfinite(hi[k, r]):
        raise NonFiniteError(f"simulate_discrete: elr overflowed float64 at {at}")
    if final_bad:  # a zero ELR eta*c/inf: the norm overflowed in this step
        raise NonFiniteError(f"simulate_discrete: sigma2 (squared weight norm) overflowed "
                             f"float64 by {at}")
    raise NonFiniteError(f"simulate_discrete: elr underflowed to 0 at {at}")
