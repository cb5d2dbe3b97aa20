r"""Lightning callbacks: the ELR monitor and the critical-lr warm-up (optional extra).

Needs ``lightning`` (or the older ``pytorch_lightning``): ``pip install
'normdyn[integrations]'``.

::

    import lightning as L
    from normdyn.integrations.lightning import CriticalLRWarmupCallback, ELRMonitorCallback

    monitor = ELRMonitorCallback(sync_every=50)
    trainer = L.Trainer(callbacks=[CriticalLRWarmupCallback(), monitor],
                        accumulate_grad_batches=4)
    trainer.fit(module, loader)
    frame = monitor.monitor.to_dataframe()          # one row per optimizer step and layer

**When the callbacks act.**  Lightning calls ``on_before_optimizer_step`` once per
*optimizer* step, after the last micro-batch's ``backward()`` (and after AMP's
``scaler.unscale_``), so gradient accumulation needs no special care: with
``accumulate_grad_batches = k`` there is one recorded step per :math:`k` batches.
:class:`ELRMonitorCallback` calls :meth:`ELRMonitor.before_step` there and
:meth:`ELRMonitor.after_step` in the following ``on_train_batch_end`` (with the loss that
Lightning reports for that batch), which is still before Lightning's lr schedulers step.
The lr of each row is the one the optimizer step used (read by the monitor's step hook),
so a :class:`CriticalLRWarmupCallback` in the same trainer is recorded at its dampened lr.
Lightning clips gradients (``gradient_clip_val``) *after* ``on_before_optimizer_step``:
``grad_norm``, ``elr`` and the warm-up's :math:`\eta^*` use the unclipped gradient,
``update_elr`` the step actually taken.  AMP steps that the scaler skips are recorded
with ``skipped = True``.

**Logging.**  At every host sync of the monitor (``sync_every`` optimizer steps, and at
the end of training) each synced step's summary -- ELR spread
:math:`\max_\ell E_\ell/\min_\ell E_\ell`, min/max and 10/50/90 % quantiles of the
gradient and update ELRs, :math:`\max|\cos_{wg}|`, lr, loss, ``skipped``/``valid`` --
goes to every logger of the trainer via ``logger.log_metrics(metrics, step)``, with
``step`` the trainer's optimizer-step count, under ``prefix``.
"""

from __future__ import annotations

import contextlib
from typing import Any

try:
    import lightning.pytorch as pl
except ImportError:  # pragma: no cover - depends on the environment
    try:
        import pytorch_lightning as pl  # type: ignore[no-redef]
    except ImportError as exc:
        raise ImportError("normdyn.integrations.lightning needs lightning: pip install "
                          "'normdyn[integrations]' (or pip install lightning)") from exc

from torch import Tensor

from normdyn._io import atomic_write_frame
from normdyn.validate.monitor import ELRMonitor

__all__ = ["ELRMonitorCallback", "CriticalLRWarmupCallback"]


def _optimizer(trainer: Any, index: int, owner: str) -> Any:
    optimizers = list(trainer.optimizers)
    if not 0 <= index < len(optimizers):
        raise ValueError(f"{owner}: optimizer_index={index} but the trainer has "
                         f"{len(optimizers)} optimizer(s)")
    return optimizers[index]


def _batch_loss(outputs: Any) -> Tensor | float | None:
    if isinstance(outputs, Tensor) and outputs.numel() == 1:
        return outputs.detach()
    if isinstance(outputs, dict) and isinstance(outputs.get("loss"), Tensor):
        return outputs["loss"].detach()
    return None


class ELRMonitorCallback(pl.Callback):
    """Record per-layer ELRs of every optimizer step and log their summary.

    Parameters
    ----------
    names, sync_every, track_update, example_input:
        As for :class:`~normdyn.validate.monitor.ELRMonitor` (default: the detected
        scale-invariant weights of the LightningModule).
    optimizer_index:
        Which of ``trainer.optimizers`` to monitor.
    prefix:
        Metric-name prefix for the loggers (``"elr"`` gives ``elr/elr/spread``, ...).
    log:
        Send the summaries to the trainer's loggers.
    save_path:
        If given, write the monitor's table there (``.csv`` or ``.parquet``) at the end
        of training, before :meth:`ELRMonitor.close` reports any unreported NaN/inf.

    Attributes
    ----------
    monitor: the :class:`~normdyn.validate.monitor.ELRMonitor` (``None`` before training).
    """

    def __init__(self, *, names: list[str] | None = None, sync_every: int = 50,
                 track_update: bool = True, example_input: Any = None,
                 optimizer_index: int = 0, prefix: str = "elr", log: bool = True,
                 save_path: str | None = None) -> None:
        super().__init__()
        self.names = names
        self.sync_every = sync_every
        self.track_update = track_update
        self.example_input = example_input
        self.optimizer_index = optimizer_index
        self.prefix = prefix
        self.log = log
        self.save_path = save_path
        self.monitor: ELRMonitor | None = None
        self._trainer: Any = None
        self._step_offset = 0
        self._restored: dict[str, Any] | None = None

    def _log_fn(self, metrics: dict[str, float], step: int) -> None:
        trainer = self._trainer
        if trainer is None or not self.log:
            return
        named = {f"{self.prefix}/{k}": v for k, v in metrics.items()}
        for logger in trainer.loggers:
            logger.log_metrics(named, step=step + self._step_offset)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._trainer = trainer
        optimizer = _optimizer(trainer, self.optimizer_index, type(self).__name__)
        self.monitor = ELRMonitor(pl_module, optimizer, names=self.names,
                                  sync_every=self.sync_every, track_update=self.track_update,
                                  example_input=self.example_input, log_fn=self._log_fn)
        if self._restored is not None:
            self.monitor.load_state_dict(self._restored)
            self._restored = None
        self._step_offset = int(trainer.global_step) - self.monitor.step_count

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        monitor = self.monitor
        if monitor is None:
            return
        if monitor.in_step:                 # a step without on_train_batch_end (manual opt.)
            monitor.after_step()
        monitor.before_step(None)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self.monitor is not None and self.monitor.in_step:
            self.monitor.after_step(_batch_loss(outputs))

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        monitor = self.monitor
        if monitor is None:
            return
        if monitor.in_step:
            monitor.after_step()
        if self.save_path is not None:      # written (flagged) before close() may raise
            atomic_write_frame(self.save_path, monitor.to_dataframe())
        monitor.close()

    def state_dict(self) -> dict[str, Any]:
        return {} if self.monitor is None else {"monitor": self.monitor.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored = state_dict.get("monitor")


class CriticalLRWarmupCallback(pl.Callback):
    r"""The hyper-parameter-free critical-lr warm-up (THEORY.md §4) as a Lightning callback.

    At every optimizer step, once the gradients are complete, each group's lr is lowered
    to :math:`\min(\eta_{\mathrm{target}}, \eta^*_t)` for that one ``optimizer.step()``
    and put back right after it (a step post-hook, or the next ``on_train_batch_end``
    for a step the AMP scaler skipped), before Lightning's schedulers step.  This is
    ``with warmup.dampening(): optimizer.step()`` of
    :class:`~normdyn.optim.CriticalLRWarmup`; keyword arguments are passed to it.

    Under AMP with a loss scaler (``precision="16-mixed"``, or a ``MixedPrecision``
    plugin with a ``GradScaler``) the warm-up gets ``trainer.precision_plugin.scaler``
    unless ``scaler=`` is given: Lightning unscales before ``on_before_optimizer_step``,
    and a step with inf/NaN gradients, which the scaler skips, leaves the lrs alone
    (counted in ``warmup.skipped_steps``) instead of raising.  On CPU Lightning turns
    ``precision="16-mixed"`` into ``"bf16-mixed"``, which has no scaler.

    Attributes
    ----------
    warmup: the :class:`~normdyn.optim.CriticalLRWarmup` (``None`` before training).
    """

    def __init__(self, *, optimizer_index: int = 0, **warmup_kwargs: Any) -> None:
        super().__init__()
        self.optimizer_index = optimizer_index
        self.warmup_kwargs = warmup_kwargs
        self.warmup: Any = None
        self._stack: contextlib.ExitStack | None = None
        self._handle: Any = None

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        from normdyn.optim import CriticalLRWarmup

        optimizer = _optimizer(trainer, self.optimizer_index, type(self).__name__)
        kwargs = dict(self.warmup_kwargs)
        # AMP ("16-mixed"): Lightning's GradScaler, so a step it skips (inf gradients) is
        # left alone instead of raising; an explicit scaler= in the kwargs wins
        kwargs.setdefault("scaler", getattr(getattr(trainer, "precision_plugin", None),
                                            "scaler", None))
        self.warmup = CriticalLRWarmup(optimizer, pl_module, **kwargs)
        self._handle = optimizer.register_step_post_hook(lambda *_: self._restore())

    def _restore(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        if self.warmup is None:
            return
        self._restore()
        stack = contextlib.ExitStack()
        stack.enter_context(self.warmup.dampening())
        self._stack = stack

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self._restore()

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._restore()
        if self._handle is not None:
            self._handle.remove()
            self._handle = None
