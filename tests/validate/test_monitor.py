"""Tests of normdyn.validate.monitor.ELRMonitor.

Oracle: a brute-force per-parameter computation in the test itself (one
``torch.linalg.vector_norm(...).item()`` per tensor and step, float64, parameter
snapshots taken by the test), for SGD with momentum and weight decay and for Adam.
The real-loop cases (warm-up nesting, GradScaler, accumulation, frozen layers,
torch.compile, AdamW, precision on a big layer) are in ``test_monitor_loops.py``.
"""

from __future__ import annotations

import io
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pandas as pd  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from normdyn._checks import NonFiniteError  # noqa: E402
from normdyn.layers.detection import find_scale_invariant  # noqa: E402
from normdyn.validate.monitor import MONITOR_COLUMNS, ELRMonitor  # noqa: E402
from tests.validate._nets import tiny_resnet_batch  # noqa: E402

RTOL = 1e-9      # float64-accumulated norms of float32 tensors against float64 in the test
COS_ATOL = 1e-7  # products rounded in float32: |error| <= 2^-24 sum|w_i g_i| / (|w||g|)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


_setup = tiny_resnet_batch


def _backward(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
              opt: torch.optim.Optimizer) -> torch.Tensor:
    opt.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return loss


def _brute_force_run(model, x, y, opt, monitor, steps, sched=None, names=None):
    """Train ``steps`` steps under ``monitor`` and compute every row independently."""
    params = dict(model.named_parameters())
    names = monitor.names if names is None else names
    group_lr = {id(p): g for g in opt.param_groups for p in g["params"]}
    rows = []
    for step in range(steps):
        loss = _backward(model, x, y, opt)
        before = {}
        for name in names:
            p = params[name]
            w, g = p.detach().double(), p.grad.detach().double()
            wn = torch.linalg.vector_norm(w).item()
            gn = torch.linalg.vector_norm(g).item()
            before[name] = dict(
                step=step, layer=name, lr=group_lr[id(p)]["lr"], sigma2=wn * wn, grad_norm=gn,
                elr=group_lr[id(p)]["lr"] * gn / wn, cos_wg=(w * g).sum().item() / (wn * gn),
                loss=loss.item(), snapshot=p.detach().clone(), wn=wn)
        with monitor.step(loss):
            opt.step()
        for name in names:
            row = before[name]
            delta = params[name].detach().double() - row.pop("snapshot").double()
            row["update_elr"] = torch.linalg.vector_norm(delta).item() / row.pop("wn")
            row["skipped"], row["valid"] = False, True
            rows.append(row)
        if sched is not None:
            sched.step()
    return pd.DataFrame(rows)[list(MONITOR_COLUMNS)]


def _compare(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert list(got.columns) == list(MONITOR_COLUMNS)
    assert len(got) == len(want)
    assert (got["step"].to_numpy() == want["step"].to_numpy()).all()
    assert (got["layer"].to_numpy() == want["layer"].to_numpy()).all()
    np.testing.assert_array_equal(got["lr"], want["lr"])
    for col in ("sigma2", "grad_norm", "elr", "loss"):
        np.testing.assert_allclose(got[col], want[col], rtol=RTOL, err_msg=col)
    np.testing.assert_allclose(got["update_elr"], want["update_elr"], rtol=1e-6,
                               err_msg="update_elr")
    assert (got["skipped"].to_numpy() == want["skipped"].to_numpy()).all()
    assert (got["valid"].to_numpy() == want["valid"].to_numpy()).all()
    np.testing.assert_allclose(got["cos_wg"], want["cos_wg"], rtol=1e-6, atol=COS_ATOL,
                               err_msg="cos_wg")


# --------------------------------------------------------------------------- numbers


def test_sgd_momentum_weight_decay_matches_brute_force() -> None:
    model, x, y = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-3)
    monitor = ELRMonitor(model, opt, sync_every=3)
    assert monitor.names == [d.param_name for d in find_scale_invariant(model)]
    want = _brute_force_run(model, x, y, opt, monitor, steps=7)
    got = monitor.to_dataframe()
    _compare(got, want)
    assert monitor.step_count == 7
    # momentum + weight decay: the update is not lr * grad
    assert not np.allclose(got["update_elr"], got["elr"], rtol=1e-3)


def test_adam_two_groups_and_scheduler_matches_brute_force() -> None:
    model, x, y = _setup(seed=1)
    convs = [p for n, p in model.named_parameters() if "stage" in n]
    rest = [p for n, p in model.named_parameters() if "stage" not in n]
    opt = torch.optim.Adam([{"params": convs, "lr": 1e-2}, {"params": rest, "lr": 3e-3}],
                           weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    names = ["stem.conv.weight", "stage1.block0.conv1.weight", "classifier.weight"]
    monitor = ELRMonitor(model, opt, names=names, sync_every=2)
    want = _brute_force_run(model, x, y, opt, monitor, steps=5, sched=sched)
    got = monitor.to_dataframe()
    _compare(got, want)
    lr = got.pivot(index="step", columns="layer", values="lr")
    np.testing.assert_allclose(lr["stage1.block0.conv1.weight"], 1e-2 * 0.5 ** np.arange(5))
    np.testing.assert_allclose(lr["stem.conv.weight"], 3e-3 * 0.5 ** np.arange(5))
    # the classifier is not scale invariant: its cosine is far from zero
    cos = got.groupby("layer")["cos_wg"].apply(lambda c: c.abs().max())
    assert cos["classifier.weight"] > 1e-3 > 1e-4 > cos["stage1.block0.conv1.weight"]


def test_loss_as_float_and_track_update_false() -> None:
    model, x, y = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    monitor = ELRMonitor(model, opt, track_update=False, sync_every=4)
    for _ in range(3):
        loss = _backward(model, x, y, opt)
        monitor.before_step(float(loss.detach()))
        opt.step()
        monitor.after_step()
    frame = monitor.to_dataframe()
    assert frame["update_elr"].isna().all()
    assert np.isfinite(frame[["sigma2", "grad_norm", "elr", "cos_wg", "loss"]]).all().all()
    np.testing.assert_allclose(frame.groupby("step")["loss"].nunique(), 1)


def test_plain_sgd_update_elr_equals_gradient_elr() -> None:
    """Plain SGD: dw = -lr * grad, so update_elr = elr (up to float32 rounding)."""
    model, x, y = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    monitor = ELRMonitor(model, opt)
    for _ in range(3):
        loss = _backward(model, x, y, opt)
        with monitor.step(loss):
            opt.step()
    frame = monitor.to_dataframe()
    np.testing.assert_allclose(frame["update_elr"], frame["elr"], rtol=1e-4)


# --------------------------------------------------------------------------- host syncs


_SYNC_METHODS = ("item", "cpu", "tolist", "numpy", "__float__", "__int__", "__bool__",
                 "__index__")


def test_no_host_sync_between_syncs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Count every Tensor -> host conversion made inside the monitor's calls."""
    model, x, y = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    monitor = ELRMonitor(model, opt, sync_every=4)
    counts = dict.fromkeys(_SYNC_METHODS, 0)
    active = [False]

    def counting(name):
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, **kwargs):
            if active[0]:
                counts[name] += 1
            return original(self, *args, **kwargs)
        return wrapper

    for name in _SYNC_METHODS:
        monkeypatch.setattr(torch.Tensor, name, counting(name))

    per_step = []
    for _ in range(10):
        loss = _backward(model, x, y, opt)
        active[0] = True
        monitor.before_step(loss)
        active[0] = False
        opt.step()
        active[0] = True
        monitor.after_step()
        active[0] = False
        per_step.append(dict(counts))
        counts.update(dict.fromkeys(_SYNC_METHODS, 0))
    monkeypatch.undo()
    for step, c in enumerate(per_step):
        if (step + 1) % 4 == 0:          # the sync step: exactly one .cpu() of the buffer
            assert c["cpu"] == 1 and c["item"] == 0 and c["tolist"] == 0, (step, c)
        else:
            assert sum(c.values()) == 0, (step, c)
    frame = monitor.to_dataframe()       # flushes the 2 pending steps
    assert sorted(frame["step"].unique()) == list(range(10))


# --------------------------------------------------------------------------- non-finite


def test_non_finite_gradient_raises_at_sync_and_keeps_rows() -> None:
    model, x, y = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    names = ["stem.conv.weight", "stage1.block0.conv1.weight"]
    monitor = ELRMonitor(model, opt, names=names, sync_every=3)
    message = ("non-finite values at step 4: 1 layer(s) 'stage1.block0.conv1.weight' "
               "(first: grad_norm, inner product, update_norm). The 6 steps recorded so far "
               "(up to step 5) are kept, valid=False from step 4 on; see "
               "ELRMonitor.to_dataframe()")
    for step in range(6):
        loss = _backward(model, x, y, opt)
        if step == 4:
            model.stage1.block0.conv1.weight.grad[0, 0, 0, 0] = float("inf")
        monitor.before_step(loss)
        opt.step()
        if step < 5:
            monitor.after_step()
        else:
            with pytest.raises(NonFiniteError, match=re.escape(message)):
                monitor.after_step()
    frame = monitor.to_dataframe()
    assert sorted(frame["step"].unique()) == list(range(6))
    assert np.isfinite(frame[frame["step"] < 4]["grad_norm"]).all()
    assert not np.isfinite(frame.set_index(["step", "layer"]).loc[
        (4, "stage1.block0.conv1.weight"), "grad_norm"])
    assert frame.groupby("step")["valid"].all().tolist() == [True] * 4 + [False] * 2
    # the monitor stays usable; the error is raised once, not at every later sync
    assert monitor.step_count == 6
    loss = _backward(model, x, y, opt)
    with monitor.step(loss):
        opt.step()
    monitor.sync()
    monitor.close()
    assert not monitor.to_dataframe()["valid"].iloc[-1]


def test_non_finite_loss_is_named() -> None:
    model, x, y = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    monitor = ELRMonitor(model, opt, names=["stem.conv.weight"], sync_every=50)
    for step in range(3):
        loss = _backward(model, x, y, opt)
        monitor.before_step(loss * float("nan") if step == 1 else loss)
        opt.step()
        monitor.after_step()
    with pytest.raises(NonFiniteError, match=re.escape("non-finite values at step 1: loss=nan")):
        monitor.sync()
    assert len(monitor.to_dataframe()) == 3


# --------------------------------------------------------------------------- resume / save


def test_state_dict_round_trip_and_resume(tmp_path) -> None:
    model, x, y = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    monitor = ELRMonitor(model, opt, sync_every=3)
    for _ in range(4):
        loss = _backward(model, x, y, opt)
        with monitor.step(loss):
            opt.step()
    buffer = io.BytesIO()
    torch.save(monitor.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    resumed = ELRMonitor(model, opt, sync_every=5)
    resumed.load_state_dict(state)
    assert resumed.step_count == 4
    pd.testing.assert_frame_equal(resumed.to_dataframe(), monitor.to_dataframe())
    for _ in range(2):
        loss = _backward(model, x, y, opt)
        with resumed.step(loss):
            opt.step()
    assert sorted(resumed.to_dataframe()["step"].unique()) == list(range(6))

    other = ELRMonitor(model, opt, names=["classifier.weight"])
    with pytest.raises(ValueError, match=re.escape(
            "state dict tracks 9 tensor(s) 'stem.conv.weight', 'stage1.block0.conv1.weight', "
            "'stage1.block0.conv2.weight' and 6 more, this monitor tracks 1: "
            "'classifier.weight'")):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="not an ELRMonitor state dict"):
        other.load_state_dict({"step": 3})

    for suffix in (".csv", ".parquet"):
        path = tmp_path / f"elr{suffix}"
        resumed.save(str(path))
        loaded = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
        assert list(loaded.columns) == list(MONITOR_COLUMNS)
        np.testing.assert_allclose(loaded["elr"], resumed.to_dataframe()["elr"], rtol=1e-12)
    with pytest.raises(ValueError, match=r"must end in \.csv or \.parquet"):
        resumed.save(str(tmp_path / "elr.txt"))


def test_empty_dataframe_has_documented_columns() -> None:
    model, _, _ = _setup()
    monitor = ELRMonitor(model, torch.optim.SGD(model.parameters(), lr=0.1))
    frame = monitor.to_dataframe()
    assert list(frame.columns) == list(MONITOR_COLUMNS) and frame.empty


# --------------------------------------------------------------------------- errors


def test_error_messages() -> None:
    model, x, y = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = ELRMonitor(model, opt)
    with pytest.raises(RuntimeError, match=re.escape(
            "call before_step(loss) after loss.backward(): 9 tracked parameter(s) have no "
            "gradient: 'stem.conv.weight', 'stage1.block0.conv1.weight', "
            "'stage1.block0.conv2.weight' and 6 more")):
        monitor.before_step(torch.tensor(1.0))
    with pytest.raises(RuntimeError, match=re.escape(
            "after_step() called without before_step(loss): call monitor.before_step(loss) "
            "after loss.backward() and before optimizer.step()")):
        monitor.after_step()
    loss = _backward(model, x, y, opt)
    monitor.before_step(loss)
    with pytest.raises(RuntimeError, match=re.escape(
            "before_step(loss) called twice without after_step()")):
        monitor.before_step(loss)
    monitor.after_step()
    with pytest.raises(ValueError, match=re.escape("loss must be a scalar")):
        monitor.before_step(torch.ones(3))

    unnormalized = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    with pytest.raises(ValueError, match=re.escape(
            "no scale-invariant layer found in Sequential (no conv/linear weight feeds a "
            "normalization); pass names=[...] to choose the parameters to monitor")):
        ELRMonitor(unnormalized, torch.optim.SGD(unnormalized.parameters(), lr=0.1))
    ok = ELRMonitor(unnormalized, torch.optim.SGD(unnormalized.parameters(), lr=0.1),
                    names=["0.weight"])
    assert ok.detected == [] and ok.names == ["0.weight"]
    n_params = len(list(model.parameters()))
    with pytest.raises(ValueError, match=re.escape(
            "1 unknown parameter name(s) 'nope'; the model has "
            f"{n_params} parameters, e.g. 'stem.conv.weight', 'stem.bn.weight', "
            f"'stem.bn.bias' and {n_params - 3} more")):
        ELRMonitor(model, opt, names=["nope"])
    with pytest.raises(ValueError, match=re.escape(
            "names contains 1 duplicate(s): 'classifier.weight'")):
        ELRMonitor(model, opt, names=["classifier.weight", "classifier.weight"])
    with pytest.raises(ValueError, match="sync_every must be >= 1, got 0"):
        ELRMonitor(model, opt, sync_every=0)
    with pytest.raises(TypeError, match=re.escape(
            "optimizer must be a torch.optim.Optimizer or have param_groups, got dict")):
        ELRMonitor(model, {"lr": 0.1})
    many = ["nope" * 30 + str(i) for i in range(200)]
    with pytest.raises(ValueError) as info:
        ELRMonitor(model, opt, names=many)
    assert len(str(info.value)) <= 300 and str(info.value).startswith(
        "200 unknown parameter name(s) 'nopenope")


def test_context_manager_discards_failed_step() -> None:
    model, x, y = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = ELRMonitor(model, opt)
    loss = _backward(model, x, y, opt)
    with pytest.raises(KeyError), monitor.step(loss):
        raise KeyError("boom")
    assert monitor.step_count == 0
    with monitor.step(loss):
        opt.step()
    frame = monitor.to_dataframe()
    assert frame["step"].unique().tolist() == [0]
