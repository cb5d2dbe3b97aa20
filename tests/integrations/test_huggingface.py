"""normdyn.integrations.huggingface with a tiny transformers ResNet built from a config.

No download: the model comes from ``ResNetConfig``; ``report_to=[]``.  Oracle: an
independent ``TrainerCallback`` computing float64 norms from ``p.grad`` in
``on_pre_optimizer_step`` and ``||dw||`` in ``on_optimizer_step``; with plain SGD the lr
of the step is ``||dw|| / ||g||``.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from normdyn.integrations.huggingface import ELRTrainerCallback  # noqa: E402

BATCHES, ACCUMULATE = 8, 2


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class _Data(torch.utils.data.Dataset):
    def __init__(self, n: int) -> None:
        gen = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, 3, 16, 16, generator=gen)
        self.y = torch.randint(0, 3, (n,), generator=gen)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"pixel_values": self.x[i], "labels": self.y[i]}


class _BruteForce(transformers.TrainerCallback):
    def __init__(self) -> None:
        self.names: list[str] = []
        self.rows: list[dict] = []
        self._before: dict = {}

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        params = dict(model.named_parameters())
        self._before = {n: (params[n].detach().double().clone(),
                            torch.linalg.vector_norm(params[n].grad.double()).item())
                        for n in self.names}

    def on_optimizer_step(self, args, state, control, model=None, **kwargs):
        params = dict(model.named_parameters())
        for n in self.names:
            w, g_norm = self._before[n]
            dw = torch.linalg.vector_norm(params[n].detach().double() - w).item()
            self.rows.append(dict(layer=n, grad_norm=g_norm, lr=dw / g_norm,
                                  sigma2=float((w * w).sum())))


def test_trainer_callback_under_gradient_accumulation(tmp_path) -> None:
    torch.manual_seed(0)
    config = transformers.ResNetConfig(num_channels=3, embedding_size=8, hidden_sizes=[8, 16],
                                       depths=[1, 1], layer_type="basic", num_labels=3)
    model = transformers.ResNetForImageClassification(config)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    logged: list[tuple[int, dict]] = []
    elr = ELRTrainerCallback(sync_every=3, example_input={"pixel_values": torch.randn(2, 3, 16,
                                                                                        16)},
                             log_fn=lambda m, s: logged.append((s, m)))
    oracle = _BruteForce()
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path), report_to=[], per_device_train_batch_size=4,
        gradient_accumulation_steps=ACCUMULATE, num_train_epochs=1, max_grad_norm=0.0,
        use_cpu=True, save_strategy="no", logging_strategy="no", disable_tqdm=True,
        dataloader_num_workers=0, lr_scheduler_type="linear", seed=0)
    trainer = transformers.Trainer(model=model, args=args, train_dataset=_Data(4 * BATCHES),
                                   optimizers=(optimizer, None), callbacks=[elr, oracle])

    class _Names(transformers.TrainerCallback):
        def on_train_begin(self, *a, **k):
            oracle.names = list(elr.monitor.names)

    trainer.add_callback(_Names())
    trainer.train()
    frame = elr.monitor.to_dataframe()
    steps = BATCHES // ACCUMULATE
    assert trainer.state.global_step == steps
    assert sorted(frame["step"].unique()) == list(range(steps))
    assert len(oracle.names) == 6 and all("convolution.weight" in n for n in oracle.names)
    for col in ("sigma2", "grad_norm", "lr"):
        np.testing.assert_allclose(frame[col], [r[col] for r in oracle.rows], rtol=1e-5,
                                   err_msg=col)
    lrs = frame.groupby("step")["lr"].first().to_numpy()
    np.testing.assert_allclose(lrs, 0.05 * (1 - np.arange(steps) / steps), rtol=1e-6)
    assert frame["loss"].isna().all() and frame["valid"].all()
    assert [s for s, _ in logged] == list(range(steps))
    assert all(np.isfinite(m["elr/spread"]) for _, m in logged)
