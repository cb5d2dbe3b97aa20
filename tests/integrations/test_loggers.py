"""normdyn.integrations.loggers: the monitor's summaries reach a SummaryWriter-like object.

Oracle: the summary statistics recomputed here with numpy from the monitor's own
per-layer table (spread = max/min, quantiles), at the step the writer was given.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import normdyn.integrations as integrations  # noqa: E402
from normdyn.integrations.loggers import scalar_log_fn, summary_writer_log_fn  # noqa: E402
from normdyn.validate.monitor import ELRMonitor  # noqa: E402


class _FakeWriter:
    def __init__(self) -> None:
        self.scalars: list[tuple[str, float, int]] = []

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars.append((tag, value, step))


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU(),
                         nn.Linear(16, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU(),
                         nn.Linear(16, 3))


def test_summary_writer_receives_spread_and_quantiles_per_step() -> None:
    torch.set_num_threads(1)
    model = _net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    writer = _FakeWriter()
    monitor = ELRMonitor(model, opt, sync_every=4, log_fn=summary_writer_log_fn(writer))
    x, y = torch.randn(32, 6), torch.randint(0, 3, (32,))
    for _ in range(6):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        with monitor.step(loss):
            opt.step()
        if monitor.step_count == 4:
            assert {s for _, _, s in writer.scalars} == {0, 1, 2, 3}
    monitor.close()
    frame = monitor.to_dataframe()
    by_tag: dict[str, dict[int, float]] = {}
    for tag, value, step in writer.scalars:
        by_tag.setdefault(tag, {})[step] = value
    assert sorted(by_tag["normdyn/elr/spread"]) == list(range(6))
    for step in range(6):
        rows = frame[frame["step"] == step]
        elr, upd = rows["elr"].to_numpy(), rows["update_elr"].to_numpy()
        assert by_tag["normdyn/elr/spread"][step] == pytest.approx(elr.max() / elr.min())
        assert by_tag["normdyn/elr/q10"][step] == pytest.approx(np.quantile(elr, 0.1))
        assert by_tag["normdyn/update_elr/q50"][step] == pytest.approx(np.median(upd))
        assert by_tag["normdyn/cos_wg/max_abs"][step] == pytest.approx(
            rows["cos_wg"].abs().max())
        assert by_tag["normdyn/loss"][step] == pytest.approx(rows["loss"].iloc[0])
        assert by_tag["normdyn/skipped"][step] == 0.0


def test_adapters_reject_objects_without_the_method_and_load_lazily() -> None:
    with pytest.raises(TypeError, match=re.escape(
            "writer must have an add_scalar(tag, value, step) method, got object")):
        summary_writer_log_fn(object())
    with pytest.raises(TypeError, match=re.escape("log_scalar must be callable, got int")):
        scalar_log_fn(3)
    seen = []
    scalar_log_fn(lambda *a: seen.append(a), prefix="p/")({"a": 1.0}, 7)
    assert seen == [("p/a", 1.0, 7)]
    assert integrations.summary_writer_log_fn is summary_writer_log_fn
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        integrations.nope  # noqa: B018
