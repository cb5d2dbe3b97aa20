"""normdyn.integrations.lightning on a tiny LightningModule, Trainer on CPU.

Oracle: an independent callback that computes, brute force in float64, the norms from
``p.grad`` in ``on_before_optimizer_step`` and ``||dw||`` from the parameters before and
after the step; with plain SGD the lr the step used is ``||dw|| / ||g||``.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
L = pytest.importorskip("lightning.pytorch")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from normdyn.integrations.lightning import (  # noqa: E402
    CriticalLRWarmupCallback,
    ELRMonitorCallback,
)

BATCHES, ACCUMULATE = 8, 2


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _Net(L.LightningModule):
    def __init__(self, lr: float) -> None:
        super().__init__()
        self.lr = lr
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn2(self.conv2(F.relu(self.bn(self.conv(x))))))
        return self.head(x.mean(dim=(2, 3)))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.lr)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class _Recorder(L.loggers.Logger):
    def __init__(self) -> None:
        super().__init__()
        self.metrics: list[tuple[int, dict]] = []

    @property
    def name(self) -> str:
        return "recorder"

    @property
    def version(self) -> str:
        return "0"

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        self.metrics.append((step, dict(metrics)))


class _BruteForce(L.Callback):
    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.rows: list[dict] = []
        self._before: dict | None = None

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        params = dict(pl_module.named_parameters())
        self._before = {n: (params[n].detach().double().clone(),
                            torch.linalg.vector_norm(params[n].grad.double()).item())
                        for n in self.names}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._before is None:
            return
        params = dict(pl_module.named_parameters())
        for n in self.names:
            w, g_norm = self._before[n]
            dw = torch.linalg.vector_norm(params[n].detach().double() - w).item()
            self.rows.append(dict(layer=n, sigma2=torch.dot(w.flatten(), w.flatten()).item(),
                                  grad_norm=g_norm, lr=dw / g_norm,
                                  update_elr=dw / torch.linalg.vector_norm(w).item()))
        self._before = None


def _fit(callbacks, lr: float = 0.1):
    torch.manual_seed(0)
    dataset = torch.utils.data.TensorDataset(torch.randn(4 * BATCHES, 3, 6, 6),
                                             torch.randint(0, 4, (4 * BATCHES,)))
    data = torch.utils.data.DataLoader(dataset, batch_size=4)
    model = _Net(lr)
    logger = _Recorder()
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=logger,
                        callbacks=callbacks, accumulate_grad_batches=ACCUMULATE,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, log_every_n_steps=1)
    trainer.fit(model, train_dataloaders=data)
    return model, logger, trainer


NAMES = ["conv.weight", "conv2.weight"]


def test_monitor_callback_under_gradient_accumulation_matches_brute_force() -> None:
    callback = ELRMonitorCallback(sync_every=3)
    oracle = _BruteForce(NAMES)
    _, logger, trainer = _fit([callback, oracle])
    frame = callback.monitor.to_dataframe()
    steps = BATCHES // ACCUMULATE
    assert trainer.global_step == steps
    assert callback.monitor.names == NAMES
    assert sorted(frame["step"].unique()) == list(range(steps))
    want = [r for r in oracle.rows]
    assert len(want) == len(frame) == steps * len(NAMES)
    for col in ("sigma2", "grad_norm", "update_elr", "lr"):
        np.testing.assert_allclose(frame[col], [r[col] for r in want], rtol=1e-5, err_msg=col)
    np.testing.assert_allclose(frame.groupby("step")["lr"].first(),
                               0.1 * 0.5 ** np.arange(steps))   # the per-step scheduler
    assert frame["valid"].all() and not frame["skipped"].any()
    assert np.isfinite(frame["loss"]).all()
    # the summaries went through the Lightning logger, one entry per optimizer step
    logged = [(s, m) for s, m in logger.metrics if "elr/elr/spread" in m]
    assert [s for s, _ in logged] == list(range(steps))
    for step, metrics in logged:
        elr = frame[frame["step"] == step]["elr"].to_numpy()
        assert metrics["elr/elr/spread"] == pytest.approx(elr.max() / elr.min(), rel=1e-12)
        assert metrics["elr/elr/q90"] == pytest.approx(np.quantile(elr, 0.9), rel=1e-12)


def test_warmup_callback_records_the_dampened_lr() -> None:
    target = 50.0
    monitor = ELRMonitorCallback(sync_every=50)
    oracle = _BruteForce(NAMES)
    _, _, trainer = _fit([CriticalLRWarmupCallback(), monitor, oracle], lr=target)
    frame = monitor.monitor.to_dataframe()
    assert len(frame) == (BATCHES // ACCUMULATE) * len(NAMES)
    want = np.array([r["lr"] for r in oracle.rows])
    np.testing.assert_allclose(frame["lr"], want, rtol=1e-5)
    assert want[0] < 0.5 * target                     # the warm-up did dampen
    # the scheduler kept its own chain: 4 halvings of the target, not of the dampened lr
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(target * 0.5**4)


# --------------------------------------------------------------------------- AMP scaler


class _InfNet(_Net):
    """Plain SGD, no scheduler; an inf gradient forced on optimizer step ``inf_at``."""

    inf_at = 1

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)

    def on_after_backward(self) -> None:
        if self.trainer.global_step == self.inf_at:
            self.conv2.weight.grad[0, 0, 0, 0] = float("inf")


class _ScaledOracle(L.Callback):
    """Before the warm-up callback: p.grad (Lightning has unscaled it) and w, brute force."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.steps: list[dict] = []
        self._before: dict | None = None

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        params = dict(pl_module.named_parameters())
        self._before = {n: (p.detach().clone(), p.grad.detach().double().clone())
                        for n, p in params.items()}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        params = dict(pl_module.named_parameters())
        self.steps.append({n: (w, g, params[n].detach().clone())
                           for n, (w, g) in self._before.items()})


def test_warmup_callback_takes_lightnings_grad_scaler_and_skips_an_inf_step() -> None:
    """16-mixed on CPU needs an explicit MixedPrecision plugin with a GradScaler (the
    precision string alone becomes bf16-mixed, without a scaler).  The callback passes
    ``trainer.precision_plugin.scaler`` to the warm-up: the inf step is skipped (weights
    unchanged, no raise), the finite steps use min(target, eta*) from the unscaled
    gradients, recovered from the weights as lr = ||dw|| / ||g|| (plain SGD)."""
    from lightning.pytorch.plugins.precision import MixedPrecision

    target, scale = 50.0, 2.0**10
    scaler = torch.amp.GradScaler("cpu", init_scale=scale)
    warmup = CriticalLRWarmupCallback()
    oracle = _ScaledOracle(NAMES)
    torch.manual_seed(0)
    dataset = torch.utils.data.TensorDataset(torch.randn(16, 3, 6, 6),
                                             torch.randint(0, 4, (16,)))
    trainer = L.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False,
                        callbacks=[oracle, warmup],
                        plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)],
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False)
    trainer.fit(_InfNet(target), train_dataloaders=torch.utils.data.DataLoader(dataset,
                                                                               batch_size=4))
    assert warmup.warmup.scaler is scaler
    assert warmup.warmup.tracked_names == tuple(NAMES)
    assert warmup.warmup.skipped_steps == 1 and len(oracle.steps) == 4
    assert scaler.get_scale() == scale / 2                  # the scaler saw the inf
    for t, step in enumerate(oracle.steps):
        if t == _InfNet.inf_at:
            for n, (w, _, after) in step.items():
                assert torch.equal(w, after), n               # skipped: nothing written
            continue
        a = [torch.linalg.vector_norm(step[n][1]).item()
             / torch.linalg.vector_norm(step[n][0].double()).item() for n in NAMES]
        want = min(target, 1.0 / (max(a) * min(a)) ** 0.5)
        assert t != 0 or want < 0.5 * target                  # it binds at the start
        for n, (w, g, after) in step.items():                 # every parameter, same lr
            dw = torch.linalg.vector_norm(after.double() - w.double()).item()
            assert dw / torch.linalg.vector_norm(g).item() == pytest.approx(want, rel=1e-4), n
    assert trainer.optimizers[0].param_groups[0]["lr"] == target   # restored


def test_warmup_callback_scaler_defaults_to_the_precision_plugins() -> None:
    """Unit test of the hook with a stub trainer: the plugin's scaler by default, none
    without one, and an explicit ``scaler=`` wins."""
    from types import SimpleNamespace

    model = _Net(0.1)
    scaler = torch.amp.GradScaler("cpu")

    def start(callback, plugin):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        callback.on_train_start(SimpleNamespace(optimizers=[opt], precision_plugin=plugin),
                                model)
        callback.on_train_end(None, model)
        return callback.warmup.scaler

    assert start(CriticalLRWarmupCallback(), SimpleNamespace(scaler=scaler)) is scaler
    assert start(CriticalLRWarmupCallback(), SimpleNamespace()) is None
    assert start(CriticalLRWarmupCallback(scaler=None), SimpleNamespace(scaler=scaler)) is None
