r"""Per-step summaries of simulated ELR trajectories, never a full trajectory.

:class:`TrajectorySummary` holds, per step and run (lr × seed), the scheduled lr, the
spread :math:`\max_\ell E_\ell/\min_\ell E_\ell` (``inf`` where the ratio exceeds float64,
e.g. ELRs ``1e300`` and ``1e-300``; :func:`log10_spread`, always finite for finite positive
ELRs, is :math:`\log_{10}\max_\ell E_\ell - \log_{10}\min_\ell E_\ell`), the :data:`QUANTILES` of the gradient
ELR over layers (named :data:`QUANTILE_NAMES`) and the number of flips, plus the final
per-layer state.  :func:`~normdyn.simulate.discrete.simulate_discrete` fills one with
``record="summary"``; :meth:`TrajectorySummary.from_frame` summarizes a tidy frame.

A *flip* between steps :math:`t-1` and :math:`t` is a pair with
:math:`(E_{\ell,t-1} - E_{k,t-1})(E_{\ell,t} - E_{k,t}) < 0`, where a pair whose ELRs agree
to a relative :data:`FLIP_RTOL` counts as tied (:func:`count_flips`).  The quantile
helpers :func:`quantile_positions` and :func:`sorted_quantiles` read the quantiles of
rows that are already sorted (numpy's 'linear' method); the numba kernel of
:mod:`normdyn.simulate.discrete` inlines the same formula.

Everything here is re-exported by :mod:`normdyn.simulate.discrete` and
:mod:`normdyn.simulate`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from normdyn._checks import NonFiniteError

__all__ = [
    "QUANTILES",
    "QUANTILE_NAMES",
    "FLIP_RTOL",
    "TrajectorySummary",
    "count_flips",
    "log10_spread",
    "quantile_positions",
    "sorted_quantiles",
]

#: Quantile levels of the per-step ELR summaries and their names.
QUANTILES: tuple[float, ...] = (0.0, 0.1, 0.5, 0.9, 1.0)
QUANTILE_NAMES: tuple[str, ...] = ("min", "q10", "median", "q90", "max")
#: Relative ELR difference below which a pair counts as tied when counting flips; far above
#: the rounding noise of 1e6 steps (~1e-10), far below any difference that matters.
FLIP_RTOL = 1e-9


def log10_spread(e_max: Any, e_min: Any, spread: Any = None) -> np.ndarray:
    r"""Spread in log space, :math:`\log_{10}(E_{max}/E_{min})`, finite for finite positive ELRs.

    Where ``spread = e_max/e_min`` (computed when not given) is a finite positive float,
    this is ``log10(spread)`` (full relative accuracy near spread 1); where the ratio
    over- or underflows float64 it is :math:`\log_{10}E_{max} - \log_{10}E_{min}`.
    """
    hi, lo = np.asarray(e_max, dtype=np.float64), np.asarray(e_min, dtype=np.float64)
    with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
        ratio = hi / lo if spread is None else np.asarray(spread, dtype=np.float64)
        ok = np.isfinite(ratio) & (ratio > 0)
        direct = np.log10(np.where(ok, ratio, 1.0))
        return np.where(ok, direct, np.log10(hi) - np.log10(lo))


def quantile_positions(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices and weights of :data:`QUANTILES` in a sorted row of ``n`` (numpy 'linear')."""
    virtual = (n - 1) * np.asarray(QUANTILES)
    lo = np.floor(virtual).astype(np.int64)
    return lo, np.minimum(lo + 1, n - 1), virtual - lo


def sorted_quantiles(srt: np.ndarray, lo: np.ndarray, hi: np.ndarray, g: np.ndarray) -> np.ndarray:
    """``(..., len(QUANTILES))`` quantiles of rows already sorted along the last axis."""
    a, b = srt[..., lo], srt[..., hi]
    d = b - a
    return np.where(g >= 0.5, b - d * (1.0 - g), a + d * g)


def count_flips(prev: np.ndarray, cur: np.ndarray, *, chunk: int = 1 << 17,
                prev_order: np.ndarray | None = None) -> np.ndarray:
    r"""Per row, the pairs :math:`(\ell, k)` with :math:`(p_\ell-p_k)(q_\ell-q_k) < 0`.

    ``prev`` and ``cur`` are ``(R, L)`` positive ELRs; a pair within :data:`FLIP_RTOL`
    (relative) at either step counts as tied, not flipped.  Memory is bounded by ``chunk``
    pair entries; ``prev_order`` (``argsort`` of ``prev`` along rows) saves a sort.

    Both rows are taken in the order that sorts ``prev``; then a pair at positions
    :math:`i < j` flipped iff :math:`p_j - p_i > r\,p_j` and :math:`q_i - q_j > r\,q_i`
    (:math:`r` = :data:`FLIP_RTOL`; the larger value of each pair is the scale of its tie
    test, exactly as in the numba kernel's insertion sort).  For :math:`i > j` the first
    test fails by itself, so no triangle mask is needed.
    """
    R, L = prev.shape
    rows = max(1, chunk // max(L * L, 1))
    perm = np.argsort(prev, axis=1, kind="stable") if prev_order is None else prev_order
    p = np.take_along_axis(prev, perm, axis=1)
    q = np.take_along_axis(cur, perm, axis=1)
    out = np.zeros(R, dtype=np.int64)
    # Rows still non-decreasing in the previous order have no strict reversal, no flip.
    todo = np.flatnonzero(np.any(q[:, 1:] < q[:, :-1], axis=1))
    for i in range(0, todo.size, rows):
        sel = todo[i:i + rows]
        ps, qs = p[sel], q[sel]
        separated = (ps[:, None, :] - ps[:, :, None]) > FLIP_RTOL * ps[:, None, :]  # [r, i, j]
        reversed_ = (qs[:, :, None] - qs[:, None, :]) > FLIP_RTOL * qs[:, :, None]
        out[sel] = np.count_nonzero(separated & reversed_, axis=(1, 2))
    return out


@dataclass(frozen=True)
class TrajectorySummary:
    r"""Per-step summaries of ``R`` runs (lr × seed), never a full trajectory.

    Arrays: ``step (K,)``; per run ``lr, seed (R,)``; per step and run ``lr_t, spread,
    flips (K, R)`` and ``quantiles (5, K, R)`` (:data:`QUANTILE_NAMES` of the gradient ELR
    over layers); final per-layer ``final_sigma2, final_elr, final_update_elr (R, L)``.
    ``flips[k]`` counts the pairs whose order reversed between steps ``k-1`` and ``k``.
    ``spread`` is ``inf`` where :math:`E_{max}/E_{min}` exceeds float64; the property
    :attr:`log10_spread` is finite there (``to_frame`` and ``to_dict`` carry both; JSON
    has ``null`` for an infinite spread).
    """

    step: np.ndarray
    lr: np.ndarray
    seed: np.ndarray
    lr_t: np.ndarray
    spread: np.ndarray
    quantiles: np.ndarray
    flips: np.ndarray
    final_sigma2: np.ndarray
    final_elr: np.ndarray
    final_update_elr: np.ndarray

    @property
    def runs(self) -> int:
        return int(self.lr.size)

    @property
    def layers(self) -> int:
        return int(self.final_elr.shape[-1])

    @property
    def log10_spread(self) -> np.ndarray:
        r"""``(K, R)`` :math:`\log_{10}(E_{max}/E_{min})` per step and run, finite (:func:`log10_spread`)."""
        return log10_spread(self.quantiles[-1], self.quantiles[0], self.spread)

    @property
    def total_flips(self) -> np.ndarray:
        return self.flips.sum(axis=0)

    def quantile(self, name: str) -> np.ndarray:
        """``(K, R)`` per-step quantile ``name`` (one of :data:`QUANTILE_NAMES`)."""
        if name not in QUANTILE_NAMES:
            raise ValueError(f"quantile: unknown name {name!r}; choose from "
                             f"{', '.join(QUANTILE_NAMES)}")
        return self.quantiles[QUANTILE_NAMES.index(name)]

    def to_frame(self) -> pd.DataFrame:
        """One row per (run, step): step, lr, seed, lr_t, spread, log10_spread, elr_<quantile>, flips."""
        K, R = self.spread.shape
        data: dict[str, np.ndarray] = {
            "step": np.tile(self.step, R), "lr": np.repeat(self.lr, K),
            "seed": np.repeat(self.seed, K), "lr_t": self.lr_t.T.ravel(),
            "spread": self.spread.T.ravel(), "log10_spread": self.log10_spread.T.ravel(),
        }
        for i, name in enumerate(QUANTILE_NAMES):
            data[f"elr_{name}"] = self.quantiles[i].T.ravel()
        data["flips"] = self.flips.T.ravel()
        return pd.DataFrame(data)

    def final_frame(self) -> pd.DataFrame:
        """One row per (run, layer) of the final state."""
        R, L = self.final_elr.shape
        return pd.DataFrame({
            "lr": np.repeat(self.lr, L), "seed": np.repeat(self.seed, L),
            "layer": np.tile(np.arange(L, dtype=np.int64), R),
            "sigma2": self.final_sigma2.ravel(), "elr": self.final_elr.ravel(),
            "update_elr": self.final_update_elr.ravel(),
        })

    def to_dict(self, *, quantiles: bool = False) -> dict[str, Any]:
        """JSON-ready nested dict (plain floats and ints), one entry per run.

        Top level: ``step`` (the recorded steps), ``layers``, ``runs``.  Per run: ``lr``
        (base lr), ``seed``; ``spread`` per recorded step (:math:`E_{max}/E_{min}`;
        ``None`` where the ratio exceeds float64); ``flips`` as ``{"step": [...],
        "count": [...]}``, the recorded steps with a non-zero number of pairs that swapped
        order since the previous recorded step; ``total_flips``; ``final_elr`` per layer.
        Only where they carry information: ``log10_spread`` at the steps where ``spread``
        is ``None`` (``{"step": [...], "value": [...]}``, finite), ``final_update_elr``
        per layer where it differs from ``final_elr`` (momentum or weight decay), ``lr_t``
        (the scheduled lr per recorded step) where it differs from ``lr``.  With
        ``quantiles=True`` also ``elr_quantiles`` (per name in :data:`QUANTILE_NAMES`, the
        ELR quantile over layers per recorded step) and ``final_sigma2`` per layer.
        """
        runs = []
        log_spread = self.log10_spread
        finite = np.isfinite(self.spread)
        flipped = self.flips != 0
        # lr_t goes into every run or none, so that consumers see one shape
        scheduled = bool(np.any(self.lr_t != self.lr[None, :]))
        for r in range(self.runs):
            entry: dict[str, Any] = {
                "lr": float(self.lr[r]), "seed": int(self.seed[r]),
                "spread": np.where(finite[:, r], self.spread[:, r], np.nan).tolist(),
                "flips": {"step": self.step[flipped[:, r]].tolist(),
                          "count": self.flips[flipped[:, r], r].tolist()},
                "total_flips": int(self.total_flips[r]),
                "final_elr": self.final_elr[r].tolist(),
            }
            if not np.array_equal(self.final_update_elr[r], self.final_elr[r]):
                entry["final_update_elr"] = self.final_update_elr[r].tolist()
            if not finite[:, r].all():
                entry["spread"] = [x if x == x else None for x in entry["spread"]]
                bad = ~finite[:, r]
                entry["log10_spread"] = {"step": self.step[bad].tolist(),
                                         "value": log_spread[bad, r].tolist()}
            if scheduled:
                entry["lr_t"] = self.lr_t[:, r].tolist()
            if quantiles:
                entry["final_sigma2"] = self.final_sigma2[r].tolist()
                entry["elr_quantiles"] = {n: self.quantiles[i, :, r].tolist()
                                          for i, n in enumerate(QUANTILE_NAMES)}
            runs.append(entry)
        return {"step": self.step.tolist(), "layers": self.layers, "runs": runs}

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> TrajectorySummary:
        """Summarize a tidy frame (columns as :data:`~normdyn.simulate.discrete.COLUMNS`;
        ``lr_t`` optional).

        Runs are the ``(seed, lr)`` groups in order of appearance, so ``lr`` must be the
        run's base lr; flips are counted between consecutive *recorded* steps.
        """
        missing = {"step", "layer", "lr", "seed", "elr"} - set(frame.columns)
        if missing:
            raise ValueError(f"frame: missing columns {sorted(missing)}")
        run = frame.groupby(["seed", "lr"], sort=False).ngroup().to_numpy()
        f = frame.assign(_run=run).sort_values(["_run", "step", "layer"], kind="stable")
        steps = np.unique(f["step"].to_numpy())
        R, K = int(run.max()) + 1 if run.size else 0, steps.size
        L = np.unique(f["layer"].to_numpy()).size
        if R * K * L != len(f) or R == 0:
            raise ValueError("frame: expected one row per (run, step, layer) on a full grid")

        def grid(col: str) -> np.ndarray:  # -> (K, R, L)
            return np.swapaxes(f[col].to_numpy(np.float64).reshape(R, K, L), 0, 1)

        e = grid("elr")
        if not (np.all(np.isfinite(e)) and np.all(e >= 0)):
            raise NonFiniteError("frame: elr must be finite and non-negative to summarize, got "
                                 f"{e[~(np.isfinite(e) & (e >= 0))].ravel()[0]!r}")
        srt = np.sort(e, axis=-1)  # a zero ELR (zero gradient): spread and log10_spread inf
        lo, hi, g = quantile_positions(L)
        flips = np.zeros((K, R), dtype=np.int64)
        for k in range(1, K):
            flips[k] = count_flips(e[k - 1], e[k])
        first = f.groupby("_run", sort=True).first()
        upd = grid("update_elr") if "update_elr" in f else e
        return cls(
            step=steps, lr=first["lr"].to_numpy(np.float64),
            seed=first["seed"].to_numpy(np.int64),
            lr_t=grid("lr_t" if "lr_t" in f else "lr")[:, :, 0],
            spread=_ratio(srt[..., -1], srt[..., 0]),
            quantiles=np.moveaxis(sorted_quantiles(srt, lo, hi, g), -1, 0),
            flips=flips,
            final_sigma2=grid("sigma2")[-1] if "sigma2" in f else np.full((R, L), np.nan),
            final_elr=e[-1], final_update_elr=upd[-1],
        )


def _ratio(hi: np.ndarray, lo: np.ndarray) -> np.ndarray:
    """``hi/lo`` without a RuntimeWarning: ``inf`` where the ratio exceeds float64 or ``lo == 0``."""
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        return hi / lo
