r"""A ``transformers`` ``TrainerCallback`` for the ELR monitor (optional extra).

Needs ``transformers`` and ``accelerate`` (``pip install 'normdyn[integrations]'``)::

    from normdyn.integrations.huggingface import ELRTrainerCallback

    elr = ELRTrainerCallback(sync_every=50, example_input={"pixel_values": images[:2]})
    trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[elr])
    trainer.train()
    frame = elr.monitor.to_dataframe()     # one row per optimizer step and layer

**When it acts.**  The Trainer calls ``on_pre_optimizer_step`` once per optimizer step,
after the last micro-batch of a gradient-accumulation cycle and *after* gradient
clipping (``max_grad_norm``), then ``optimizer.step()``, then ``on_optimizer_step``.  The
callback wraps exactly that step with :meth:`ELRMonitor.before_step` and
:meth:`ELRMonitor.after_step`, so with ``gradient_accumulation_steps = k`` there is one
row per :math:`k` batches, ``grad_norm`` and ``elr`` use the clipped gradient, and
``lr`` is the lr the step used (read by the monitor's hook on the wrapped torch
optimizer, before the Trainer's scheduler steps).  The loss is not available at that
point and is recorded as NaN.  With ``fp16`` the gradients are unscaled by the clipping
(``max_grad_norm > 0``, the default); a step the scaler skips is recorded as skipped.

**Detection.**  Most HF models cannot be traced by :mod:`torch.fx`; pass
``example_input`` (a dict of model inputs) for the forward-hook heuristic, or
``names=[...]``.  Transformers whose linear layers feed residual additions before a
LayerNorm have no scale-invariant layer; choose ``names`` to monitor them anyway.

**Logging.**  The Trainer's own loggers are callbacks fed by ``Trainer.log``, which a
callback cannot call; pass ``log_fn`` (for instance
:func:`normdyn.integrations.loggers.summary_writer_log_fn`) to receive the per-step
summaries at every host sync.
"""

from __future__ import annotations

from typing import Any

try:
    from transformers import TrainerCallback
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError("normdyn.integrations.huggingface needs transformers: pip install "
                      "'normdyn[integrations]' (or pip install transformers accelerate)") from exc

from normdyn.validate.monitor import ELRMonitor, LogFn

__all__ = ["ELRTrainerCallback"]


class ELRTrainerCallback(TrainerCallback):
    """Record per-layer ELRs of every optimizer step of a ``transformers.Trainer``.

    Parameters are those of :class:`~normdyn.validate.monitor.ELRMonitor`; the model
    and optimizer are the Trainer's, taken at ``on_train_begin``.

    Attributes
    ----------
    monitor: the :class:`~normdyn.validate.monitor.ELRMonitor` (``None`` before training).
    """

    def __init__(self, *, names: list[str] | None = None, sync_every: int = 50,
                 track_update: bool = True, example_input: Any = None,
                 log_fn: LogFn | None = None) -> None:
        self.names = names
        self.sync_every = sync_every
        self.track_update = track_update
        self.example_input = example_input
        self.log_fn = log_fn
        self.monitor: ELRMonitor | None = None
        self._offset = 0

    def _log(self, metrics: dict[str, float], step: int) -> None:
        if self.log_fn is not None:
            self.log_fn(metrics, step + self._offset)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        model, optimizer = kwargs.get("model"), kwargs.get("optimizer")
        if model is None or optimizer is None:
            raise RuntimeError("ELRTrainerCallback: the Trainer passed no model or optimizer "
                               "to on_train_begin")
        self.monitor = ELRMonitor(model, optimizer, names=self.names,
                                  sync_every=self.sync_every, track_update=self.track_update,
                                  example_input=self.example_input, log_fn=self._log)
        self._offset = int(state.global_step)

    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.monitor is not None:
            self.monitor.before_step(None)

    def on_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.monitor is not None and self.monitor.in_step:
            self.monitor.after_step()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.monitor is not None:
            self.monitor.close()
