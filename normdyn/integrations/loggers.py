r"""``log_fn`` adapters: send the monitor's per-step ELR summaries to any scalar logger.

:class:`~normdyn.validate.monitor.ELRMonitor` calls ``log_fn(metrics, step)`` at every
host sync, once per synced optimizer step, with the summary of
:func:`~normdyn.validate._monitor_table.step_summaries`: the ELR spread
:math:`\max_\ell E_\ell/\min_\ell E_\ell` over the tracked layers (THEORY.md §6), the
minimum, maximum and 10/50/90 % quantiles of :math:`E_\ell` and of the update ELR
:math:`\lVert\Delta w_\ell\rVert/\lVert w_\ell\rVert`, :math:`\max_\ell|\cos(w_\ell,
\nabla w_\ell)|`, the lr, the loss, and ``skipped``/``valid`` flags.  Logging therefore
adds no device synchronization of its own.

Plain loop with TensorBoard::

    from torch.utils.tensorboard import SummaryWriter
    from normdyn.integrations.loggers import summary_writer_log_fn

    writer = SummaryWriter("runs/elr")
    monitor = ELRMonitor(model, optimizer, log_fn=summary_writer_log_fn(writer))
    ...                                   # with monitor.step(loss): optimizer.step()
    monitor.close()                       # flushes (and logs) the last steps

Any other logger: ``scalar_log_fn(lambda name, value, step: ...)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["summary_writer_log_fn", "scalar_log_fn"]


def scalar_log_fn(log_scalar: Callable[[str, float, int], Any],
                  prefix: str = "normdyn/") -> Callable[[dict[str, float], int], None]:
    """A monitor ``log_fn`` that calls ``log_scalar(prefix + name, value, step)`` per metric."""
    if not callable(log_scalar):
        raise TypeError(f"log_scalar must be callable, got {type(log_scalar).__name__}")

    def log_fn(metrics: dict[str, float], step: int) -> None:
        for name, value in metrics.items():
            log_scalar(prefix + name, value, step)
    return log_fn


def summary_writer_log_fn(writer: Any,
                          prefix: str = "normdyn/") -> Callable[[dict[str, float], int], None]:
    """A monitor ``log_fn`` for a TensorBoard ``SummaryWriter`` (anything with ``add_scalar``)."""
    add_scalar = getattr(writer, "add_scalar", None)
    if not callable(add_scalar):
        raise TypeError("writer must have an add_scalar(tag, value, step) method, got "
                        f"{type(writer).__name__}")
    return scalar_log_fn(lambda name, value, step: add_scalar(name, value, step), prefix)
