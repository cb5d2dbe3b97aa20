"""normdyn.plot_run: monitor frames, downsampling, marked steps, errors."""

from __future__ import annotations

import matplotlib
import numpy as np
import pandas as pd
import pytest
import torch

import normdyn
from normdyn.diagnose.run_plot import read_run_table

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _frame(n_layers, n_steps, seed=0):
    rng = np.random.default_rng(seed)
    steps = np.repeat(np.arange(n_steps), n_layers)
    layers = np.tile([f"l{i}" for i in range(n_layers)], n_steps)
    elr = 10 ** rng.normal(-2, 1, n_layers * n_steps)
    return pd.DataFrame({"step": steps, "layer": layers, "elr": elr, "lr": 0.1,
                         "grad_norm": 1.0, "skipped": False, "valid": True})


def test_monitor_dataframe_heatmap_rows_in_depth_order():
    from normdyn.validate.models import resnet_cifar
    from normdyn.validate.monitor import ELRMonitor

    torch.manual_seed(0)
    model = resnet_cifar(8, width=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = ELRMonitor(model, opt)
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))
    for _ in range(3):
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        with monitor.step(loss):
            opt.step()
    frame = monitor.to_dataframe()
    fig = normdyn.plot_run(frame)
    image = fig.axes[0].images[0].get_array()
    names = list(dict.fromkeys(frame["layer"]))
    assert image.shape == (len(names), 3)
    expected = np.log10(frame[frame["step"] == 1]["elr"].to_numpy())
    np.testing.assert_array_equal(np.asarray(image[:, 1]), expected)
    assert "downsampled" not in fig.axes[0].get_title()
    matplotlib.pyplot.close(fig)


def test_downsampling_is_said_in_the_title():
    fig = normdyn.plot_run(_frame(700, 3))
    assert fig.axes[0].images[0].get_array().shape == (234, 3)
    assert "downsampled: 1 in 3 layers" in fig.axes[0].get_title()
    matplotlib.pyplot.close(fig)


def test_skipped_and_non_finite_steps_are_marked(tmp_path):
    frame = _frame(4, 6)
    frame.loc[frame["step"] == 2, "skipped"] = True
    frame.loc[(frame["step"] == 4) & (frame["layer"] == "l1"), "elr"] = np.inf
    frame.loc[frame["step"] >= 4, "valid"] = False
    fig = normdyn.plot_run(frame)
    labels = fig.axes[1].get_legend().get_texts()
    texts = [t.get_text() for t in labels]
    assert "non-finite (2)" in texts and "skipped (1)" in texts
    spread_line = fig.axes[1].get_lines()[0]
    assert list(spread_line.get_xdata()) == [0, 1, 3]
    matplotlib.pyplot.close(fig)
    path = tmp_path / "m.parquet"
    frame.to_parquet(path)
    assert len(read_run_table(path)) == 24


def test_errors():
    with pytest.raises(ValueError, match=r"^RUN: the table lacks columns \['elr'\]"):
        normdyn.plot_run(pd.DataFrame({"step": [0], "layer": ["a"]}))
    with pytest.raises(ValueError, match=r"^every must be a positive integer, got 0$"):
        normdyn.plot_run(_frame(2, 2), every=0)
    with pytest.raises(ValueError, match=r"^center must be 'median' or 'critical'"):
        normdyn.plot_run(_frame(2, 2), center="mean")
