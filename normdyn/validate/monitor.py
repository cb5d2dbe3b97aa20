r"""Per-step effective-learning-rate monitor for real torch training loops.

Usage::

    monitor = ELRMonitor(model, optimizer)          # tracks the scale-invariant weights
    for x, y in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        with monitor.step(loss):                    # = before_step(loss) ... after_step()
            optimizer.step()
    monitor.save("elr.parquet")

Per tracked weight and optimizer step the monitor records (THEORY.md §2, §6), from the
weight :math:`w` and gradient :math:`\nabla w` *before* the step:

========== ==================================================================
column     meaning
========== ==================================================================
step       0-based index of the optimizer step
layer      parameter name (``model.named_parameters()``)
lr         learning rate of the parameter group that owns the tensor
sigma2     :math:`\sigma^2 = \lVert w\rVert^2`
grad_norm  :math:`\lVert\nabla w\rVert`
elr        gradient ELR :math:`\eta\lVert\nabla w\rVert/\lVert w\rVert`
           (:data:`normdyn.theory.numeric.gradient_elr`)
update_elr ELR of the step actually taken, :math:`\lVert\Delta w\rVert/\lVert w\rVert`
           (momentum, weight decay, Adam's preconditioning included); NaN when
           ``track_update=False``
cos_wg     :math:`\langle w,\nabla w\rangle/(\lVert w\rVert\lVert\nabla w\rVert)`, the
           scale-invariance defect (signed; NaN when the gradient is zero)
loss       the loss passed to :meth:`ELRMonitor.before_step`
========== ==================================================================

Cost model: all norms are computed on the parameters' device with batched
``torch._foreach_*`` kernels and written into a preallocated device buffer; nothing is
copied to the host until ``sync_every`` steps have accumulated, when one ``.cpu()`` of
the buffer moves them all.  The inner product :math:`\langle w,\nabla w\rangle` is
obtained from two batched 1-norms of the elementwise product :math:`p = w\odot\nabla w`
as :math:`2\sum_i\max(p_i,0) - \sum_i|p_i|`, which is exact in exact arithmetic and
has an absolute rounding error of order :math:`\epsilon\sum_i|p_i| \le
\epsilon\lVert w\rVert\lVert\nabla w\rVert`, the same order as a direct dot product;
``cos_wg`` is therefore resolved down to about ``1e-7`` in float32.  Norms are
accumulated in float32 (float64 for float64 parameters).

Non-finite values: at each host sync the raw measurements (loss and all norms) are
checked.  If any is NaN or infinite, the rows of that sync are first stored (so
:meth:`ELRMonitor.to_dataframe` still returns every row recorded so far, the
non-finite ones included) and then :class:`~normdyn._checks.NonFiniteError` is raised,
naming the first offending step and its layers.  The monitor stays usable afterwards.
:meth:`ELRMonitor.to_dataframe` and :meth:`ELRMonitor.state_dict` flush pending rows
without raising.

With :class:`torch.cuda.amp.GradScaler`, call ``scaler.unscale_(optimizer)`` before
:meth:`ELRMonitor.before_step` so that the gradients are unscaled; a step the scaler
skips is recorded with ``update_elr = 0``.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from normdyn._checks import NonFiniteError, check_int
from normdyn._io import atomic_write_frame
from normdyn.theory.numeric import gradient_elr
from normdyn.validate.detection import ScaleInvariantLayer, find_scale_invariant

__all__ = ["ELRMonitor", "MONITOR_COLUMNS"]

MONITOR_COLUMNS = ("step", "layer", "lr", "sigma2", "grad_norm", "elr", "update_elr",
                   "cos_wg", "loss")
"""Columns of :meth:`ELRMonitor.to_dataframe`, in order."""

_STATE_FORMAT = "normdyn.ELRMonitor/1"


class ELRMonitor:
    """Record per-layer ELR statistics of every optimizer step with few host syncs.

    Parameters
    ----------
    model, optimizer:
        The model being trained and any :class:`torch.optim.Optimizer` (SGD, Adam, ...)
        whose parameter groups own the tracked tensors.
    names:
        Parameter names to track.  Default: the weights that
        :func:`~normdyn.validate.detection.find_scale_invariant` detects.
    sync_every:
        Number of steps whose statistics stay on the device before one host copy.
    track_update:
        Also record ``update_elr`` (keeps one copy of the tracked weights to difference
        against after the step).
    example_input:
        Passed to the detector; only needed when :mod:`torch.fx` cannot trace the model.

    Attributes
    ----------
    names: list of tracked parameter names (the ``layer`` column).
    detected: the detector's :class:`~normdyn.validate.detection.ScaleInvariantLayer` list.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        names: Sequence[str] | None = None,
        sync_every: int = 50,
        track_update: bool = True,
        example_input: Any = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError("optimizer must be a torch.optim.Optimizer, got "
                            f"{type(optimizer).__name__}")
        self.sync_every = check_int("sync_every", sync_every, minimum=1)
        self.track_update = bool(track_update)
        self.model = model
        self.optimizer = optimizer
        params = dict(model.named_parameters())

        self.detected: list[ScaleInvariantLayer]
        if names is None:
            self.detected = find_scale_invariant(model, example_input)
            if not self.detected:
                raise ValueError(
                    f"no scale-invariant layer found in {type(model).__name__} (no conv/linear "
                    "weight feeds a normalization); pass names=[...] to choose the parameters "
                    "to monitor")
            chosen = [d.param_name for d in self.detected]
        else:
            if isinstance(names, str):
                raise TypeError("names must be a sequence of parameter names, not a string")
            chosen = list(names)
            if not chosen:
                raise ValueError("names must name at least one parameter, got an empty list")
            unknown = [n for n in chosen if n not in params]
            if unknown:
                raise ValueError(f"unknown parameter name(s) {unknown}; the model's parameters "
                                 f"are {list(params)}")
            duplicates = sorted({n for n in chosen if chosen.count(n) > 1})
            if duplicates:
                raise ValueError(f"names contains duplicates: {duplicates}")
            try:
                self.detected = find_scale_invariant(model, example_input)
            except ValueError as exc:
                warnings.warn(f"scale-invariance detection failed ({exc}); monitoring the "
                              "given names anyway", stacklevel=2)
                self.detected = []
        self.names: list[str] = chosen
        self._params: list[Tensor] = [params[n] for n in chosen]

        group_of: dict[int, int] = {}
        for index, group in enumerate(optimizer.param_groups):
            for p in group["params"]:
                group_of[id(p)] = index
        missing = [n for n, p in zip(chosen, self._params, strict=True) if id(p) not in group_of]
        if missing:
            raise ValueError(f"parameter(s) {missing} are not optimized by the optimizer "
                             f"({type(optimizer).__name__})")
        self._groups = sorted({group_of[id(p)] for p in self._params})
        column = {g: i for i, g in enumerate(self._groups)}
        self._lr_column = np.array([column[group_of[id(p)]] for p in self._params])

        devices = {p.device for p in self._params}
        if len(devices) != 1:
            raise ValueError(f"all monitored parameters must be on one device, got {devices}")
        self.device = devices.pop()
        dtypes = {p.dtype for p in self._params}
        self._stat_dtype = torch.float64 if torch.float64 in dtypes else torch.float32

        n = len(self._params)
        self._n = n
        # device row layout: |w| (n), |g| (n), sum max(p,0) (n), sum |p| (n), loss, |dw| (n)
        self._width = 5 * n + 1
        self._buf = torch.full((self.sync_every, self._width), float("nan"),
                               dtype=self._stat_dtype, device=self.device)
        self._snapshot: list[Tensor] = (
            [torch.empty_like(p, memory_format=torch.preserve_format) for p in self._params]
            if self.track_update else [])
        self._pending = 0            # rows in the device buffer
        self._pending_lr: list[list[float]] = []
        self._in_step = False
        self._step = 0               # index of the next optimizer step
        self._steps: list[np.ndarray] = []
        self._lr: list[np.ndarray] = []
        self._raw: list[np.ndarray] = []

    # ------------------------------------------------------------------ recording

    @property
    def step_count(self) -> int:
        """Number of optimizer steps recorded (including those still on the device)."""
        return self._step

    def before_step(self, loss: Tensor | float) -> None:
        """Record weights, gradients and ``loss``; call after ``backward()``, before ``step()``."""
        if self._in_step:
            raise RuntimeError("before_step(loss) called twice without after_step(): call "
                               "monitor.after_step() after optimizer.step()")
        grads = []
        for name, p in zip(self.names, self._params, strict=True):
            if p.grad is None:
                raise RuntimeError(f"call before_step(loss) after loss.backward(): parameter "
                                   f"{name!r} has no gradient")
            grads.append(p.grad)
        if isinstance(loss, Tensor):
            if loss.numel() != 1:
                raise ValueError(f"loss must be a scalar, got a tensor of shape "
                                 f"{tuple(loss.shape)}")
        elif not isinstance(loss, (int, float)):
            raise TypeError(f"loss must be a tensor or a number, got {type(loss).__name__}")

        n, row, dtype = self._n, self._buf[self._pending], self._stat_dtype
        weights = [p.detach() for p in self._params]
        grads = [g.detach() for g in grads]
        with torch.no_grad():
            w_norm = torch._foreach_norm(weights, 2, dtype=dtype)
            g_norm = torch._foreach_norm(grads, 2, dtype=dtype)
            product = torch._foreach_mul(weights, grads)
            abs_sum = torch._foreach_norm(product, 1, dtype=dtype)
            torch._foreach_clamp_min_(product, 0.0)
            pos_sum = torch._foreach_norm(product, 1, dtype=dtype)
            del product
            if isinstance(loss, Tensor) and loss.device == self.device:
                torch.stack([*w_norm, *g_norm, *pos_sum, *abs_sum,
                             loss.detach().reshape(()).to(dtype)], out=row[: 4 * n + 1])
            else:
                torch.stack([*w_norm, *g_norm, *pos_sum, *abs_sum], out=row[: 4 * n])
                row[4 * n].fill_(float(loss))
            if self.track_update:
                torch._foreach_copy_(self._snapshot, weights)
        groups = self.optimizer.param_groups
        self._pending_lr.append([_as_float(groups[g]["lr"]) for g in self._groups])
        self._in_step = True

    def after_step(self) -> None:
        """Record the update the optimizer made; call right after ``optimizer.step()``."""
        if not self._in_step:
            raise RuntimeError("after_step() called without before_step(loss): call "
                               "monitor.before_step(loss) after loss.backward() and before "
                               "optimizer.step()")
        n = self._n
        if self.track_update:
            with torch.no_grad():
                weights = [p.detach() for p in self._params]
                torch._foreach_sub_(self._snapshot, weights)
                update = torch._foreach_norm(self._snapshot, 2, dtype=self._stat_dtype)
                torch.stack(update, out=self._buf[self._pending, 4 * n + 1:])
        self._in_step = False
        self._pending += 1
        self._step += 1
        if self._pending == self.sync_every:
            self.sync()

    @contextlib.contextmanager
    def step(self, loss: Tensor | float) -> Iterator[ELRMonitor]:
        """``with monitor.step(loss): optimizer.step()`` -- before_step, then after_step.

        If the body raises, the half-recorded step is discarded and the error propagates.
        """
        self.before_step(loss)
        try:
            yield self
        except BaseException:
            self._discard_current()
            raise
        self.after_step()

    def _discard_current(self) -> None:
        if self._in_step:
            self._pending_lr.pop()
            self._in_step = False

    # ------------------------------------------------------------------ host side

    def sync(self) -> None:
        """Copy the pending rows to the host (one transfer) and check them for NaN/inf.

        Raises :class:`~normdyn._checks.NonFiniteError` naming the first step and the
        layers with a non-finite loss or norm, after storing the rows.
        """
        chunk = self._flush()
        if chunk is not None:
            self._check_finite(*chunk)

    def _flush(self) -> tuple[np.ndarray, np.ndarray] | None:
        k = self._pending
        if k == 0:
            return None
        raw = self._buf[:k].cpu().numpy().astype(np.float64)   # the one host sync
        steps = np.arange(self._step - k, self._step, dtype=np.int64)
        lr = np.asarray(self._pending_lr[:k], dtype=np.float64)[:, self._lr_column]
        if not self.track_update:
            raw[:, 4 * self._n + 1:] = np.nan
        self._steps.append(steps)
        self._lr.append(lr)
        self._raw.append(raw)
        self._pending = 0
        self._pending_lr = self._pending_lr[k:]
        return steps, raw

    def _check_finite(self, steps: np.ndarray, raw: np.ndarray) -> None:
        n = self._n
        checked = raw if self.track_update else raw[:, : 4 * n + 1]
        bad_rows = np.flatnonzero(~np.isfinite(checked).all(axis=1))
        if bad_rows.size == 0:
            return
        r = int(bad_rows[0])
        row = raw[r]
        parts = []
        if not np.isfinite(row[4 * n]):
            parts.append(f"loss={float(row[4 * n])}")
        layers = []
        for i, name in enumerate(self.names):
            columns = {"weight_norm": [i], "grad_norm": [n + i],
                       "inner product": [2 * n + i, 3 * n + i],
                       "update_norm": [4 * n + 1 + i] if self.track_update else []}
            which = [label for label, cols in columns.items()
                     if any(not np.isfinite(row[c]) for c in cols)]
            if which:
                layers.append(f"{name!r} ({', '.join(which)})")
        if layers:
            parts.append(f"layer(s) {', '.join(layers)}")
        total = sum(len(s) for s in self._steps)
        raise NonFiniteError(
            f"non-finite values at step {int(steps[r])}: {'; '.join(parts)}. The "
            f"{total} rows recorded so far (up to step {int(steps[-1])}) are kept; see "
            "ELRMonitor.to_dataframe()")

    def to_dataframe(self) -> pd.DataFrame:
        """Tidy DataFrame, one row per (step, layer); columns :data:`MONITOR_COLUMNS`.

        Flushes pending device rows first (without raising on non-finite values).
        """
        self._flush()
        n = self._n
        if not self._raw:
            frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in MONITOR_COLUMNS})
            frame["step"] = frame["step"].astype("int64")
            frame["layer"] = frame["layer"].astype("object")
            return frame
        raw = np.concatenate(self._raw)
        steps = np.concatenate(self._steps)
        lr = np.concatenate(self._lr)
        w_norm, g_norm = raw[:, :n], raw[:, n: 2 * n]
        pos_sum, abs_sum = raw[:, 2 * n: 3 * n], raw[:, 3 * n: 4 * n]
        loss, u_norm = raw[:, 4 * n], raw[:, 4 * n + 1:]
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            elr = gradient_elr.raw(lr, g_norm, w_norm)
            # the ELR of the step actually taken: |dw|/|w| (the same formula at lr = 1)
            update_elr = gradient_elr.raw(1.0, u_norm, w_norm)
            cos_wg = (2.0 * pos_sum - abs_sum) / (w_norm * g_norm)
        t = len(steps)
        return pd.DataFrame({
            "step": np.repeat(steps, n),
            "layer": np.tile(np.asarray(self.names, dtype=object), t),
            "lr": lr.reshape(-1),
            "sigma2": (w_norm**2).reshape(-1),
            "grad_norm": g_norm.reshape(-1),
            "elr": np.asarray(elr, dtype=np.float64).reshape(-1),
            "update_elr": np.asarray(update_elr, dtype=np.float64).reshape(-1),
            "cos_wg": cos_wg.reshape(-1),
            "loss": np.repeat(loss, n),
        }, columns=list(MONITOR_COLUMNS))

    def save(self, path: str) -> None:
        """Write :meth:`to_dataframe` to ``path`` (``.csv`` or ``.parquet``) atomically."""
        atomic_write_frame(path, self.to_dataframe())

    # ------------------------------------------------------------------ resume

    def state_dict(self) -> dict[str, Any]:
        """Step counter and recorded rows (tensors and plain Python values only).

        Loadable with ``torch.load(..., weights_only=True)``.  A step begun with
        :meth:`before_step` but not finished is not included.
        """
        self._flush()
        n = self._n
        raw = np.concatenate(self._raw) if self._raw else np.zeros((0, self._width))
        steps = np.concatenate(self._steps) if self._steps else np.zeros(0, dtype=np.int64)
        lr = np.concatenate(self._lr) if self._lr else np.zeros((0, n))
        return {
            "format": _STATE_FORMAT,
            "names": list(self.names),
            "step": self._step,
            "track_update": self.track_update,
            "steps": torch.from_numpy(steps.copy()),
            "lr": torch.from_numpy(lr.copy()),
            "raw": torch.from_numpy(raw.copy()),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the step counter and the rows of :meth:`state_dict` (same ``names``)."""
        if not isinstance(state, dict) or state.get("format") != _STATE_FORMAT:
            raise ValueError(f"not an ELRMonitor state dict (expected format {_STATE_FORMAT!r})")
        if list(state["names"]) != self.names:
            raise ValueError(f"state dict tracks {list(state['names'])}, this monitor tracks "
                             f"{self.names}")
        raw = state["raw"].detach().cpu().numpy().astype(np.float64)
        if raw.ndim != 2 or raw.shape[1] != self._width:
            raise ValueError(f"state dict 'raw' must have shape (steps, {self._width}), got "
                             f"{tuple(raw.shape)}")
        self._steps = [state["steps"].detach().cpu().numpy().astype(np.int64)]
        self._lr = [state["lr"].detach().cpu().numpy().astype(np.float64)]
        self._raw = [raw]
        self._step = int(state["step"])
        self._pending = 0
        self._pending_lr = []
        self._in_step = False

    def __repr__(self) -> str:
        return (f"ELRMonitor({len(self.names)} tensors, step={self._step}, "
                f"sync_every={self.sync_every}, track_update={self.track_update})")


def _as_float(lr: Any) -> float:
    """A learning rate as a float (a CPU tensor lr is read without a device sync)."""
    if isinstance(lr, Tensor):
        if lr.device.type != "cpu":
            raise TypeError("learning rates stored as device tensors are not supported; "
                            "use a float or a CPU tensor lr")
        return float(lr)
    return float(lr)
