r"""Per-step effective-learning-rate monitor for real torch training loops.

Usage::

    monitor = ELRMonitor(model, optimizer)          # tracks the scale-invariant weights
    for x, y in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        with monitor.step(loss):                    # = before_step(loss) ... after_step()
            optimizer.step()
    monitor.close()                                 # flush; raises if a NaN/inf went unreported
    monitor.save("elr.parquet")

Per tracked weight and optimizer step the monitor records (THEORY.md §2, §6), from the
weight :math:`w` and gradient :math:`\nabla w` *before* the step:

========== ==================================================================
column     meaning
========== ==================================================================
step       0-based index of the optimizer step
layer      parameter name (``model.named_parameters()``)
lr         learning rate the step used, read when ``optimizer.step()`` ran
sigma2     :math:`\sigma^2 = \lVert w\rVert^2`
grad_norm  :math:`\lVert\nabla w\rVert`
elr        gradient ELR :math:`\eta\lVert\nabla w\rVert/\lVert w\rVert`
           (:data:`normdyn.theory.numeric.gradient_elr`)
update_elr ELR of the step actually taken, :math:`\lVert\Delta w\rVert/\lVert w\rVert`
           (momentum, weight decay, Adam's preconditioning included; 0 for a
           skipped step); NaN when ``track_update=False``
cos_wg     :math:`\langle w,\nabla w\rangle/(\lVert w\rVert\lVert\nabla w\rVert)`, the
           scale-invariance defect (signed; NaN when the gradient is zero)
loss       the loss passed to :meth:`ELRMonitor.before_step` (NaN if none was given)
skipped    the optimizer did not step (a ``GradScaler`` found inf/NaN gradients)
valid      the step's values are finite and no earlier step had a non-finite value
========== ==================================================================

**Learning rate.**  The lr is read by a step post-hook on the optimizer
(``register_step_post_hook``), moved to the front of the optimizer's post-hooks at every
:meth:`ELRMonitor.before_step`: it sees the lr that ``step()`` used, whatever context
changed it around the call (``with warmup.dampening(): optimizer.step()`` inside or
outside ``monitor.step(loss)``).  If the hook does not run between
:meth:`~ELRMonitor.before_step` and :meth:`~ELRMonitor.after_step`, the optimizer did
not step and the row is ``skipped``.  A wrapper (accelerate's ``AcceleratedOptimizer``,
an optimizer-like object with ``param_groups``) is hooked through its ``.optimizer``
attribute when that is a torch optimizer with the same ``param_groups``; otherwise the
lr is read at ``before_step`` and ``skipped`` is always False.

**Precision.**  Norms are accumulated in float64 (``torch._foreach_norm(...,
dtype=float64)``), and the inner product is :math:`\sum_i w_i g_i` with each product
rounded in the parameters' dtype (float32 at least) and the sum accumulated in float64.
The absolute error of ``cos_wg`` is then at most about
:math:`2^{-24}\sum_i|w_ig_i|/(\lVert w\rVert\lVert\nabla w\rVert) \le 6\cdot10^{-8}`
for float32 parameters, whatever the layer size, so a defect of ``1e-6`` is resolved on
a layer of millions of elements.

**Cost model.**  All statistics are computed on the parameters' device with batched
``torch._foreach_*`` kernels and written into a preallocated float64 device buffer;
nothing is copied to the host until ``sync_every`` steps have accumulated, when one
``.cpu()`` of the buffer moves them all (:meth:`ELRMonitor.sync`).

**Non-finite values.**  At each host sync the rows are checked (see
:mod:`normdyn.validate._monitor_table`).  The first non-finite step raises
:class:`~normdyn._checks.NonFiniteError` once, after its rows are stored; every row from
that step on has ``valid = False``.  A run shorter than ``sync_every`` is checked by
:meth:`~ELRMonitor.close` (also the ``with ELRMonitor(...)`` exit) and
:meth:`~ELRMonitor.save`, which write or flush first and then raise if the non-finite
step was not reported yet.  :meth:`~ELRMonitor.to_dataframe` and
:meth:`~ELRMonitor.state_dict` flush without raising.

**GradScaler** (``torch.amp.GradScaler("cuda")`` or ``("cpu")``).  Gradients are
multiplied by the loss scale until ``scaler.unscale_(optimizer)`` is called, so call it
*before* :meth:`~ELRMonitor.before_step`::

    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)            # required: the monitor reads p.grad
    with monitor.step(loss):
        scaler.step(optimizer)            # may skip the step: recorded as skipped
    scaler.update()

Pass ``scaler=scaler`` to have :meth:`~ELRMonitor.before_step` check that the gradients
were unscaled; with a wrapper such as :class:`~normdyn.optim.ConstrainedELR`,
``scaler.unscale_(wrapper)`` (what ``scaler.step(wrapper)`` expects) and
``scaler.unscale_(wrapper.optimizer)`` both count.  A skipped step is recorded with ``update_elr = 0`` and
``skipped = True``; its non-finite gradients do not raise.

**Frozen parameters** (``requires_grad=False``, or not in any parameter group of the
optimizer) are not tracked: the constructor skips them with a one-line warning.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from normdyn._checks import NonFiniteError, check_int
from normdyn._io import atomic_write_frame
from normdyn.layers._layers import _one_line, _short_names
from normdyn.validate._monitor_params import (
    as_float,
    bools,
    check_loss,
    choose_names,
    drop_frozen,
    hook_target,
)
from normdyn.validate._monitor_table import (
    MONITOR_COLUMNS,
    bad_steps,
    build_frame,
    non_finite_message,
    raw_width,
    step_summaries,
)

__all__ = ["ELRMonitor", "MONITOR_COLUMNS", "LogFn"]

LogFn = Callable[[dict[str, float], int], Any]
"""``log_fn(metrics, step)``: receives :func:`~normdyn.validate._monitor_table.step_summaries`."""

_STATE_FORMAT = "normdyn.ELRMonitor/2"
_STATE_FORMAT_V1 = "normdyn.ELRMonitor/1"


class ELRMonitor:
    """Record per-layer ELR statistics of every optimizer step with few host syncs.

    Parameters
    ----------
    model, optimizer:
        The model being trained (``DataParallel``, ``DistributedDataParallel`` and
        ``torch.compile`` wrappers are fine) and any :class:`torch.optim.Optimizer`,
        or an optimizer-like object with ``param_groups``, that owns the tracked tensors.
    names:
        Parameter names to track.  Default: the weights that
        :func:`~normdyn.layers.detection.find_scale_invariant` detects.
    sync_every:
        Number of steps whose statistics stay on the device before one host copy.
    track_update:
        Also record ``update_elr`` (keeps one copy of the tracked weights to difference
        against after the step).
    example_input:
        Passed to the detector; only needed when :mod:`torch.fx` cannot trace the model.
    scaler:
        A ``torch.amp.GradScaler``; :meth:`before_step` then checks that
        ``scaler.unscale_(optimizer)`` was called.
    log_fn:
        Called at every host sync as ``log_fn(metrics, step)`` for each synced step with
        its summary (ELR spread, quantiles, ...; see
        :func:`~normdyn.validate._monitor_table.step_summaries`).

    Attributes
    ----------
    names: list of tracked parameter names (the ``layer`` column).
    skipped_params: parameter names left out because they are frozen.
    detected: the detector's :class:`~normdyn.layers.detection.ScaleInvariantLayer` list.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Any,
        *,
        names: Sequence[str] | None = None,
        sync_every: int = 50,
        track_update: bool = True,
        example_input: Any = None,
        scaler: Any = None,
        log_fn: LogFn | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        groups = getattr(optimizer, "param_groups", None)
        if not isinstance(optimizer, torch.optim.Optimizer) and not isinstance(groups, list):
            raise TypeError("optimizer must be a torch.optim.Optimizer or have param_groups, "
                            f"got {type(optimizer).__name__}")
        self.sync_every = check_int("sync_every", sync_every, minimum=1)
        self.track_update = bool(track_update)
        self.model = model
        self.optimizer = optimizer
        self.scaler = scaler
        self.log_fn = log_fn
        params = dict(model.named_parameters())
        chosen, self.detected = choose_names(model, params, names, example_input)

        chosen, self.skipped_params, group_of = drop_frozen(chosen, params, optimizer)
        self.names: list[str] = chosen
        self._params: list[Tensor] = [params[n] for n in chosen]
        self._groups = sorted({group_of[id(p)] for p in self._params})
        column = {g: i for i, g in enumerate(self._groups)}
        self._lr_column = np.array([column[group_of[id(p)]] for p in self._params])

        devices = {p.device for p in self._params}
        if len(devices) != 1:
            raise ValueError(_one_line(f"all monitored parameters must be on one device, got "
                             f"{len(devices)}: {_short_names([str(d) for d in devices])}"))
        self.device = devices.pop()
        # float64 accumulation everywhere but on MPS, which has no float64
        self._stat_dtype = torch.float32 if self.device.type == "mps" else torch.float64
        n = self._n = len(self._params)
        self._width = raw_width(n)
        self._buf = torch.full((self.sync_every, self._width), float("nan"),
                               dtype=self._stat_dtype, device=self.device)
        self._snapshot: list[Tensor] = (
            [torch.empty_like(p, memory_format=torch.preserve_format) for p in self._params]
            if self.track_update else [])

        self._hooked = hook_target(optimizer)
        self._handle: Any = None
        if self._hooked is not None:
            ref = weakref.ref(self)

            def post_hook(opt: Any, args: Any, kwargs: Any) -> None:
                monitor = ref()
                if monitor is not None and monitor._in_step:
                    monitor._fired_lr = monitor._read_lr()
            self._handle = self._hooked.register_step_post_hook(post_hook)

        self._in_step = False
        self._closed = False
        self._step = 0               # index of the next optimizer step
        self._cur_lr: list[float] = []
        self._cur_loss_given = False
        self._fired_lr: list[float] | None = None
        self._pending = 0            # rows in the device buffer
        self._pending_meta: list[tuple[list[float], bool, bool]] = []  # lr, skipped, loss?
        self._steps: list[np.ndarray] = []
        self._lr: list[np.ndarray] = []
        self._raw: list[np.ndarray] = []
        self._skipped: list[np.ndarray] = []
        self._loss_given: list[np.ndarray] = []
        self._first_bad: int | None = None
        self._bad_message = ""
        self._reported = False

    # ------------------------------------------------------------------ recording

    @property
    def step_count(self) -> int:
        """Number of optimizer steps recorded (including those still on the device)."""
        return self._step

    @property
    def in_step(self) -> bool:
        """True between :meth:`before_step` and :meth:`after_step`."""
        return self._in_step

    def _read_lr(self) -> list[float]:
        groups = self.optimizer.param_groups
        return [as_float(groups[g]["lr"]) for g in self._groups]

    def _check_unscaled(self) -> None:
        scaler = self.scaler
        if scaler is None or not getattr(scaler, "is_enabled", lambda: True)():
            return
        states = getattr(scaler, "_per_optimizer_states", None)
        if states is None:
            return
        # the user unscales the object they step: the optimizer given (a ConstrainedELR,
        # a wrapper) or the torch optimizer it wraps; either one being unscaled will do
        stages = {getattr(states.get(id(opt), {}).get("stage"), "name", None)
                  for opt in (self.optimizer, self._hooked) if opt is not None}
        if "UNSCALED" not in stages:
            raise RuntimeError("GradScaler: call scaler.unscale_(optimizer) before "
                               "monitor.before_step(loss); the gradients are still multiplied "
                               "by the loss scale")

    def before_step(self, loss: Tensor | float | None = None) -> None:
        """Record weights, gradients and ``loss``; call after ``backward()``, before ``step()``.

        ``loss`` may be ``None`` (recorded as NaN and not checked), or given later to
        :meth:`after_step`.
        """
        if self._closed:
            raise RuntimeError("the monitor is closed; create a new ELRMonitor to record more "
                               "steps")
        if self._in_step:
            raise RuntimeError("before_step(loss) called twice without after_step(): call "
                               "monitor.after_step() after optimizer.step()")
        missing = [n for n, p in zip(self.names, self._params, strict=True) if p.grad is None]
        if missing:
            raise RuntimeError(_one_line(
                f"call before_step(loss) after loss.backward(): {len(missing)} tracked "
                f"parameter(s) have no gradient: {_short_names(missing)}"))
        check_loss(loss)
        self._check_unscaled()

        n, row, dtype = self._n, self._buf[self._pending], self._stat_dtype
        weights = [p.detach() for p in self._params]
        grads = [p.grad.detach() for p in self._params]  # type: ignore[union-attr]
        with torch.no_grad():
            w_norm = torch._foreach_norm(weights, 2, dtype=dtype)
            g_norm = torch._foreach_norm(grads, 2, dtype=dtype)
            if all(w.dtype in (torch.float32, torch.float64) for w in weights):
                product = torch._foreach_mul(weights, grads)
            else:  # half precision: round the products in float32
                product = torch._foreach_mul([w.float() for w in weights],
                                             [g.float() for g in grads])
            dots = [t.sum(dtype=dtype) for t in product]
            del product
            torch.stack([*w_norm, *g_norm, *dots], out=row[: 3 * n])
            self._write_loss(row, loss)
            if self.track_update:
                torch._foreach_copy_(self._snapshot, weights)
        self._cur_loss_given = loss is not None
        self._cur_lr = self._read_lr()
        self._fired_lr = None
        self._in_step = True
        self._post_hook_first()

    def _write_loss(self, row: Tensor, loss: Tensor | float | None) -> None:
        slot = row[3 * self._n]
        if loss is None:
            slot.fill_(float("nan"))
        elif isinstance(loss, Tensor) and loss.device == self.device:
            slot.copy_(loss.detach().reshape(()))
        else:
            slot.fill_(float(loss))

    def _post_hook_first(self) -> None:
        hooks = getattr(self._hooked, "_optimizer_step_post_hooks", None)
        if self._handle is not None and hooks is not None and self._handle.id in hooks:
            hooks.move_to_end(self._handle.id, last=False)

    def after_step(self, loss: Tensor | float | None = None) -> None:
        """Record the update the optimizer made; call right after ``optimizer.step()``.

        ``loss``, if given, replaces the one given to :meth:`before_step`.
        """
        if not self._in_step:
            raise RuntimeError("after_step() called without before_step(loss): call "
                               "monitor.before_step(loss) after loss.backward() and before "
                               "optimizer.step()")
        n, row = self._n, self._buf[self._pending]
        if loss is not None:
            check_loss(loss)
            self._write_loss(row, loss)
            self._cur_loss_given = True
        if self.track_update:
            with torch.no_grad():
                weights = [p.detach() for p in self._params]
                torch._foreach_sub_(self._snapshot, weights)
                update = torch._foreach_norm(self._snapshot, 2, dtype=self._stat_dtype)
                torch.stack(update, out=row[3 * n + 1:])
        skipped = self._hooked is not None and self._fired_lr is None
        lr = self._fired_lr if self._fired_lr is not None else self._cur_lr
        self._pending_meta.append((lr, skipped, self._cur_loss_given))
        self._in_step = False
        self._pending += 1
        self._step += 1
        if self._pending == self.sync_every:
            self.sync()

    @contextlib.contextmanager
    def step(self, loss: Tensor | float | None = None) -> Iterator[ELRMonitor]:
        """``with monitor.step(loss): optimizer.step()`` -- before_step, then after_step.

        If the body raises, the half-recorded step is discarded and the error propagates.
        """
        self.before_step(loss)
        try:
            yield self
        except BaseException:
            self._in_step = False
            raise
        self.after_step()

    # ------------------------------------------------------------------ host side

    def sync(self) -> None:
        """Copy the pending rows to the host (one transfer) and check them for NaN/inf.

        Raises :class:`~normdyn._checks.NonFiniteError` (once) naming the first step and
        the layers with a non-finite value, after storing the rows.
        """
        self._flush()
        self._raise_unreported()

    def _raise_unreported(self) -> None:
        if self._first_bad is not None and not self._reported:
            self._reported = True
            raise NonFiniteError(self._bad_message)

    def _flush(self) -> None:
        k = self._pending
        if k == 0:
            return
        raw = np.array(self._buf[:k].cpu().numpy(), dtype=np.float64, copy=True)  # host sync
        steps = np.arange(self._step - k, self._step, dtype=np.int64)
        meta = self._pending_meta[:k]
        lr = np.asarray([m[0] for m in meta], dtype=np.float64)[:, self._lr_column]
        skipped = np.array([m[1] for m in meta], dtype=bool)
        loss_given = np.array([m[2] for m in meta], dtype=bool)
        if not self.track_update:
            raw[:, 3 * self._n + 1:] = np.nan
        self._pending = 0
        self._pending_meta = self._pending_meta[k:]
        self._append(steps, lr, raw, skipped, loss_given)
        if self.log_fn is not None:
            valid = self._valid(steps, raw, skipped, loss_given)
            for step, metrics in step_summaries(self.names, steps, lr, raw, skipped, valid,
                                                loss_given, self.track_update):
                self.log_fn(metrics, step)

    def _append(self, steps: np.ndarray, lr: np.ndarray, raw: np.ndarray, skipped: np.ndarray,
                loss_given: np.ndarray) -> None:
        self._steps.append(steps)
        self._lr.append(lr)
        self._raw.append(raw)
        self._skipped.append(skipped)
        self._loss_given.append(loss_given)
        bad = bad_steps(raw, self._n, skipped, loss_given, self.track_update)
        if self._first_bad is None and bad.any():
            r = int(np.argmax(bad))
            self._first_bad = int(steps[r])
            self._bad_message = non_finite_message(
                self._first_bad, raw[r], self.names, bool(loss_given[r]), self.track_update,
                sum(len(s) for s in self._steps), int(steps[-1]))

    def _valid(self, steps: np.ndarray, raw: np.ndarray, skipped: np.ndarray,
               loss_given: np.ndarray) -> np.ndarray:
        n = self._n
        checked = raw if self.track_update else raw[:, : 3 * n + 1]
        finite = np.isfinite(np.delete(checked, 3 * n, axis=1)).all(axis=1)
        finite &= ~loss_given | np.isfinite(raw[:, 3 * n])
        if self._first_bad is not None:
            finite &= steps < self._first_bad
        return finite

    def _host(self) -> tuple[np.ndarray, ...]:
        self._flush()
        if not self._raw:
            return (np.zeros(0, dtype=np.int64), np.zeros((0, self._n)),
                    np.zeros((0, self._width)), np.zeros(0, dtype=bool), np.zeros(0, dtype=bool))
        return (np.concatenate(self._steps), np.concatenate(self._lr),
                np.concatenate(self._raw), np.concatenate(self._skipped),
                np.concatenate(self._loss_given))

    def to_dataframe(self) -> pd.DataFrame:
        """Tidy DataFrame, one row per (step, layer); columns :data:`MONITOR_COLUMNS`.

        Flushes pending device rows first (without raising on non-finite values; see the
        ``valid`` column).
        """
        steps, lr, raw, skipped, loss_given = self._host()
        valid = self._valid(steps, raw, skipped, loss_given)
        return build_frame(self.names, steps, lr, raw, skipped, valid)

    def save(self, path: str) -> None:
        """Write :meth:`to_dataframe` to ``path`` (``.csv`` or ``.parquet``) atomically.

        Then raises :class:`~normdyn._checks.NonFiniteError` if the rows hold a non-finite
        step that no :meth:`sync` has reported yet (the file is written, flagged).
        """
        atomic_write_frame(path, self.to_dataframe())
        self._raise_unreported()

    def close(self) -> None:
        """Flush, detach the optimizer hook, and raise if a non-finite step went unreported.

        Idempotent; the recorded rows stay available.  ``with ELRMonitor(...) as m:`` calls
        it on exit (without raising when the block itself raised).
        """
        if self._closed:
            return
        self._closed = True
        try:
            self._flush()
        finally:
            if self._handle is not None:
                self._handle.remove()
                self._handle = None
        self._raise_unreported()

    def __enter__(self) -> ELRMonitor:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            with contextlib.suppress(NonFiniteError):
                self.close()

    # ------------------------------------------------------------------ resume

    def state_dict(self) -> dict[str, Any]:
        """Step counter and recorded rows (tensors and plain Python values only).

        Loadable with ``torch.load(..., weights_only=True)``.  A step begun with
        :meth:`before_step` but not finished is not included.
        """
        steps, lr, raw, skipped, loss_given = self._host()
        return {
            "format": _STATE_FORMAT,
            "names": list(self.names),
            "step": self._step,
            "track_update": self.track_update,
            "steps": torch.from_numpy(steps.copy()),
            "lr": torch.from_numpy(lr.copy()),
            "raw": torch.from_numpy(raw.copy()),
            "skipped": torch.from_numpy(skipped.copy()),
            "loss_given": torch.from_numpy(loss_given.copy()),
            "reported": self._reported,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the step counter and the rows of :meth:`state_dict` (same ``names``).

        Also reads the format of earlier versions (``normdyn.ELRMonitor/1``).
        """
        fmt = state.get("format") if isinstance(state, dict) else None
        if fmt not in (_STATE_FORMAT, _STATE_FORMAT_V1):
            raise ValueError(f"not an ELRMonitor state dict (expected format {_STATE_FORMAT!r})")
        if list(state["names"]) != self.names:
            raise ValueError(_one_line(
                f"state dict tracks {len(state['names'])} tensor(s) "
                f"{_short_names(list(state['names']))}, this monitor tracks "
                f"{len(self.names)}: {_short_names(self.names)}"))
        n = self._n
        raw = state["raw"].detach().cpu().numpy().astype(np.float64)
        if fmt == _STATE_FORMAT_V1 and raw.ndim == 2 and raw.shape[1] == 5 * n + 1:
            # v1: |w|, |g|, sum max(p, 0), sum |p|, loss, |dw|  ->  <w, g> = 2 pos - abs
            raw = np.concatenate([raw[:, : 2 * n], 2 * raw[:, 2 * n: 3 * n] - raw[:, 3 * n: 4 * n],
                                  raw[:, 4 * n:]], axis=1)
        if raw.ndim != 2 or raw.shape[1] != self._width:
            raise ValueError(f"state dict 'raw' must have shape (steps, {self._width}), got "
                             f"{tuple(raw.shape)}")
        t = raw.shape[0]
        self._steps, self._lr, self._raw = [], [], []
        self._skipped, self._loss_given = [], []
        self._first_bad, self._bad_message = None, ""
        self._append(state["steps"].detach().cpu().numpy().astype(np.int64),
                     state["lr"].detach().cpu().numpy().astype(np.float64), raw,
                     bools(state.get("skipped"), t, False),
                     bools(state.get("loss_given"), t, True))
        self._reported = bool(state.get("reported", self._first_bad is not None))
        self._step = int(state["step"])
        self._pending = 0
        self._pending_meta = []
        self._in_step = False

    def __repr__(self) -> str:
        return (f"ELRMonitor({len(self.names)} tensors, step={self._step}, "
                f"sync_every={self.sync_every}, track_update={self.track_update})")
