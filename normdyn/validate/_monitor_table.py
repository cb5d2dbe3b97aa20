r"""Host-side tables of :class:`~normdyn.validate.monitor.ELRMonitor`: rows, validity, summaries.

The monitor keeps, per optimizer step, one row of raw float64 measurements (the
*raw layout* below) plus host-side metadata (step index, learning rates, whether the
optimizer really stepped, whether a loss was given).  This module turns those
arrays into the tidy table, decides which rows are *valid*, names the first
non-finite value in a one-line message, and computes the per-step summaries that the
logging integrations send to TensorBoard, Lightning or any ``log_fn``.

Raw layout (``n`` tracked tensors, width ``4n + 1``)::

    |w| (n) | |grad w| (n) | <w, grad w> (n) | loss (1) | |dw| (n)

all accumulated in float64 on the device (:mod:`normdyn.validate.monitor`).  From
them, for layer :math:`\ell` at step :math:`t` with learning rate :math:`\eta`:

.. math::

    \sigma^2 = \lVert w\rVert^2,\qquad
    E = \eta\frac{\lVert\nabla w\rVert}{\lVert w\rVert},\qquad
    E_{\mathrm{upd}} = \frac{\lVert\Delta w\rVert}{\lVert w\rVert},\qquad
    \cos_{wg} = \frac{\langle w,\nabla w\rangle}{\lVert w\rVert\,\lVert\nabla w\rVert}.

**Validity.**  A step is *non-finite* when any measured value of it (weight,
gradient, inner-product or update norm, or the loss when one was given) is NaN or
infinite -- except that a step the optimizer *skipped* (a ``GradScaler`` found
inf/NaN gradients and did not call ``optimizer.step()``) may have non-finite
gradient columns and loss without counting as one.  Rows are ``valid`` when their
step is finite and comes before the first non-finite step: every row from the first
non-finite step on is ``valid = False``, whatever its own values.

**Summaries** (THEORY.md §6).  Per step, over the tracked layers: the ELR spread
:math:`\max_\ell E_\ell/\min_\ell E_\ell`, the minimum, maximum and quantiles of
:math:`E` and of :math:`E_{\mathrm{upd}}`, and :math:`\max_\ell|\cos_{wg}|`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from normdyn.layers._layers import _short_names
from normdyn.theory.numeric import gradient_elr

__all__ = [
    "MONITOR_COLUMNS",
    "SUMMARY_QUANTILES",
    "raw_width",
    "bad_steps",
    "non_finite_message",
    "build_frame",
    "empty_frame",
    "step_summaries",
]

MONITOR_COLUMNS = ("step", "layer", "lr", "sigma2", "grad_norm", "elr", "update_elr",
                   "cos_wg", "loss", "skipped", "valid")
"""Columns of :meth:`ELRMonitor.to_dataframe`, in order."""

SUMMARY_QUANTILES = (0.1, 0.5, 0.9)
"""Quantiles of the per-layer ELRs reported by :func:`step_summaries`."""


def raw_width(n: int) -> int:
    """Width of one raw row for ``n`` tracked tensors."""
    return 4 * n + 1


def _split(raw: np.ndarray, n: int) -> tuple[np.ndarray, ...]:
    return (raw[:, :n], raw[:, n: 2 * n], raw[:, 2 * n: 3 * n], raw[:, 3 * n],
            raw[:, 3 * n + 1:])


def bad_steps(raw: np.ndarray, n: int, skipped: np.ndarray, loss_given: np.ndarray,
              track_update: bool) -> np.ndarray:
    """Boolean mask of the non-finite steps of ``raw`` (see the module docstring)."""
    w_norm, g_norm, dot, loss, u_norm = _split(raw, n)
    weight_bad = ~np.isfinite(w_norm).all(axis=1)
    if track_update:
        weight_bad |= ~np.isfinite(u_norm).all(axis=1)
    grad_bad = ~(np.isfinite(g_norm).all(axis=1) & np.isfinite(dot).all(axis=1))
    grad_bad |= loss_given & ~np.isfinite(loss)
    return weight_bad | (grad_bad & ~skipped)


def non_finite_message(step: int, row: np.ndarray, names: Sequence[str], loss_given: bool,
                       track_update: bool, total_steps: int, last_step: int) -> str:
    """One line (at most 300 characters) naming the first non-finite step and its layers."""
    n = len(names)
    parts = []
    if loss_given and not np.isfinite(row[3 * n]):
        parts.append(f"loss={float(row[3 * n])}")
    layers = []
    for i, name in enumerate(names):
        columns = {"weight_norm": [i], "grad_norm": [n + i], "inner product": [2 * n + i],
                   "update_norm": [3 * n + 1 + i] if track_update else []}
        which = [label for label, cols in columns.items()
                 if any(not np.isfinite(row[c]) for c in cols)]
        if which:
            layers.append((name, which))
    if layers:
        first = ", ".join(layers[0][1])
        parts.append(f"{len(layers)} layer(s) {_short_names([m for m, _ in layers], 2)} "
                     f"(first: {first})")
    message = (f"non-finite values at step {step}: {'; '.join(parts)}. The {total_steps} steps "
               f"recorded so far (up to step {last_step}) are kept, valid=False from step "
               f"{step} on; see ELRMonitor.to_dataframe()")
    return message if len(message) <= 300 else message[:297] + "..."


def empty_frame() -> pd.DataFrame:
    """The monitor's table with no rows (documented columns and dtypes)."""
    frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in MONITOR_COLUMNS})
    frame["step"] = frame["step"].astype("int64")
    frame["layer"] = frame["layer"].astype("object")
    frame["skipped"] = frame["skipped"].astype("bool")
    frame["valid"] = frame["valid"].astype("bool")
    return frame


def _derived(raw: np.ndarray, lr: np.ndarray, n: int) -> dict[str, np.ndarray]:
    w_norm, g_norm, dot, loss, u_norm = _split(raw, n)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        elr = np.asarray(gradient_elr.raw(lr, g_norm, w_norm), dtype=np.float64)
        # the ELR of the step actually taken: |dw|/|w| (the same formula at lr = 1)
        update_elr = np.asarray(gradient_elr.raw(1.0, u_norm, w_norm), dtype=np.float64)
        cos_wg = dot / (w_norm * g_norm)
    return {"sigma2": w_norm**2, "grad_norm": g_norm, "elr": elr, "update_elr": update_elr,
            "cos_wg": cos_wg, "loss": loss}


def build_frame(names: Sequence[str], steps: np.ndarray, lr: np.ndarray, raw: np.ndarray,
                skipped: np.ndarray, valid: np.ndarray) -> pd.DataFrame:
    """Tidy table, one row per (step, layer), columns :data:`MONITOR_COLUMNS`."""
    n, t = len(names), len(steps)
    if t == 0:
        return empty_frame()
    d = _derived(raw, lr, n)
    return pd.DataFrame({
        "step": np.repeat(steps, n),
        "layer": np.tile(np.asarray(names, dtype=object), t),
        "lr": lr.reshape(-1),
        **{k: d[k].reshape(-1) for k in ("sigma2", "grad_norm", "elr", "update_elr",
                                         "cos_wg")},
        "loss": np.repeat(d["loss"], n),
        "skipped": np.repeat(skipped.astype(bool), n),
        "valid": np.repeat(valid.astype(bool), n),
    }, columns=list(MONITOR_COLUMNS))


def _stats(prefix: str, values: np.ndarray, quantiles: Sequence[float]) -> dict[str, float]:
    lo, hi = float(values.min()), float(values.max())
    with np.errstate(divide="ignore", invalid="ignore"):
        spread = hi / lo if lo > 0 else float("inf")
    out = {f"{prefix}/spread": spread, f"{prefix}/min": lo, f"{prefix}/max": hi}
    for q, v in zip(quantiles, np.quantile(values, quantiles), strict=True):
        out[f"{prefix}/q{round(100 * q):02d}"] = float(v)
    return out


def step_summaries(names: Sequence[str], steps: np.ndarray, lr: np.ndarray, raw: np.ndarray,
                   skipped: np.ndarray, valid: np.ndarray, loss_given: np.ndarray,
                   track_update: bool, *, quantiles: Sequence[float] = SUMMARY_QUANTILES,
                   per_layer: bool = False) -> list[tuple[int, dict[str, float]]]:
    """Per-step summary metrics ``[(step, {name: value}), ...]`` for loggers.

    Every step gets ``skipped`` and ``valid`` (0 or 1).  Valid, not skipped steps also
    get ``elr/spread``, ``elr/min``, ``elr/max``, ``elr/q10``, ``elr/q50``, ``elr/q90``
    (the quantiles of ``quantiles``), the same for ``update_elr`` when the update is
    tracked, ``cos_wg/max_abs``, ``lr`` (of the first tracked tensor) and ``loss`` when
    one was given; with ``per_layer=True`` also ``elr/<layer>`` for every layer.
    """
    n = len(names)
    d = _derived(raw, lr, n)
    out = []
    for r, step in enumerate(steps):
        metrics = {"skipped": float(bool(skipped[r])), "valid": float(bool(valid[r]))}
        if valid[r] and not skipped[r]:
            metrics.update(_stats("elr", d["elr"][r], quantiles))
            if track_update:
                metrics.update(_stats("update_elr", d["update_elr"][r], quantiles))
            metrics["cos_wg/max_abs"] = float(np.abs(d["cos_wg"][r]).max())
            metrics["lr"] = float(lr[r, 0])
            if loss_given[r]:
                metrics["loss"] = float(d["loss"][r])
            if per_layer:
                metrics.update({f"elr/{name}": float(v)
                                for name, v in zip(names, d["elr"][r], strict=True)})
        out.append((int(step), metrics))
    return out
