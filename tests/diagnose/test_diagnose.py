"""normdyn.diagnose against brute force (p.grad, stepping deep copies), restore, errors."""

from __future__ import annotations

import copy
import math
import random

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from normdyn.diagnose.core import LAYER_COLUMNS, diagnose
from normdyn.diagnose.loaders import load_model
from normdyn.diagnose.lr_curve import LR_CURVE_COLUMNS
from normdyn.validate.models import resnet_cifar
from tests.diagnose import _foreign
from tests.diagnose._brute import critical_lr, per_unit_elr, spread_after_sgd_step

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _batch(shape, classes, n=8, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn((n, *shape), generator=g).to(dtype),
            torch.randint(0, classes, (n,), generator=g))


def _check_against_brute_force(model, x, y, rel):
    d = diagnose(model, (x, y), lrs=[1.0])  # first: the tracked layers and eta*
    tracked = d.layers[~d.layers["skipped"]]
    names = list(tracked["name"])
    a = per_unit_elr(model, x, y, names)
    np.testing.assert_allclose(tracked["a"].to_numpy(), a, rtol=rel)
    eta = critical_lr(a)
    assert d.summary["eta_pred"] == pytest.approx(eta, rel=rel)
    lrs = [0.3 * eta, eta, 3.0 * eta]
    curve = diagnose(model, (x, y), lrs=lrs).lr_curve
    brute = [spread_after_sgd_step(model, x, y, names, lr) for lr in lrs]
    np.testing.assert_allclose(curve["spread_measured"].to_numpy(), brute, rtol=rel)
    return d


def test_resnet_matches_brute_force():
    torch.manual_seed(0)
    model = resnet_cifar(8, shortcuts=False, width=4)
    x, y = _batch((3, 8, 8), 10)
    d = _check_against_brute_force(model, x, y, rel=1e-4)
    assert d.layers["name"].iloc[-1] == "classifier.weight" and d.layers["skipped"].iloc[-1]
    assert d.layers["skipped"].sum() == 1


def test_resnet_with_shortcuts_float64_matches_brute_force():
    torch.manual_seed(1)
    model = resnet_cifar(8, shortcuts=True, width=4).double()
    x, y = _batch((3, 8, 8), 10, dtype=torch.float64)
    _check_against_brute_force(model, x, y, rel=1e-9)


def test_timm_style_matches_brute_force():
    model = _foreign.timm_style_net().double()
    x, y = _batch((3, 8, 8), 5, dtype=torch.float64)
    d = _check_against_brute_force(model, x, y, rel=1e-9)
    kinds = dict(zip(d.layers["name"], d.layers["norm_type"], strict=True))
    assert kinds["gn_conv.weight"] == "group" and kinds["pre_logits.weight"] == "layer"


def test_torchvision_stand_in_through_get_model(monkeypatch):
    import types

    fake = types.ModuleType("torchvision")
    calls = []

    def get_model(name, weights=None, **kwargs):
        calls.append((name, weights, kwargs))
        if name != "tinynet":
            raise ValueError(f"Unknown model {name}")
        torch.manual_seed(6)
        return _foreign.TorchvisionStyleNet(**kwargs).double()

    fake.models = types.SimpleNamespace(get_model=get_model)
    monkeypatch.setitem(__import__("sys").modules, "torchvision", fake)
    model = load_model("torchvision:tinynet", num_classes=4)
    assert calls == [("tinynet", None, {"num_classes": 4})]
    model.eval()  # dropout off for the brute force; BN in eval: nothing invariant
    with pytest.raises(ValueError, match="2 eval-mode norm"):
        diagnose(model, _batch((3, 8, 8), 4, dtype=torch.float64))
    model.train()
    model.classifier[0].p = 0.0
    x, y = _batch((3, 8, 8), 4, dtype=torch.float64)
    _check_against_brute_force(model, x, y, rel=1e-9)
    with pytest.raises(ValueError, match=r"^model: torchvision has no model 'nope'"):
        load_model("torchvision:nope")


def test_hf_local_config_matches_brute_force(tmp_path):
    import json

    path = tmp_path / "config.json"
    path.write_text(json.dumps(_foreign.HF_RESNET_CONFIG))
    torch.manual_seed(7)
    model = load_model(f"hf:{path}").double()
    assert type(model).__name__ == "ResNetForImageClassification"
    x, y = _batch((3, 16, 16), 5, dtype=torch.float64)
    _check_against_brute_force(model, x, y, rel=1e-9)


def test_foreign_model_through_factory_float64_restored_bit_for_bit():
    """transformers' ResNet via pkg.module:factory, float64: brute force to 1e-6 and restore."""
    model = load_model("tests.diagnose._foreign:hf_resnet64")
    x, y = _batch((3, 16, 16), 5, dtype=torch.float64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    d = _check_against_brute_force(model, x, y, rel=1e-6)
    assert d.summary["n_tracked"] == 6 and d.layers["name"].iloc[-1] == "classifier.1.weight"
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def _bits_equal(a, b):
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape \
            and torch.equal(a.view(-1).view(torch.uint8) if a.numel() else a,
                            b.view(-1).view(torch.uint8) if b.numel() else b)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_bits_equal(a[k], b[k])
                                                                      for k in a)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(map(_bits_equal, a, b))
    return a == b


@pytest.mark.parametrize("opt_name", ["sgd", "adamw"])
def test_everything_restored_bit_for_bit(opt_name):
    torch.manual_seed(0)
    model = resnet_cifar(8, shortcuts=True, width=4)
    x, y = _batch((3, 8, 8), 10)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4) \
        if opt_name == "sgd" else torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(2):  # momentum buffers / Adam moments populated, BN buffers moved
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    nn.functional.cross_entropy(model(x), y).backward()  # .grad populated
    model.stage1.block0.conv1.weight.requires_grad_(False)
    model.stage2.eval()
    random.seed(11)
    np.random.seed(11)  # noqa: NPY002
    torch.manual_seed(11)
    state = copy.deepcopy(model.state_dict())
    buffers = {k: b.clone() for k, b in model.named_buffers()}
    opt_state = copy.deepcopy(opt.state_dict())
    grads = {n: p.grad for n, p in model.named_parameters()}
    grad_values = {n: None if g is None else g.clone() for n, g in grads.items()}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    modes = {n: m.training for n, m in model.named_modules()}
    rng = (torch.get_rng_state(), random.getstate(), np.random.get_state())  # noqa: NPY002

    d = diagnose(model, (x, y), optimizer=opt, lrs=np.geomspace(1e-3, 10, 5))

    assert _bits_equal(state, model.state_dict())
    assert _bits_equal(buffers, {k: b for k, b in model.named_buffers()})
    assert any(k.endswith("num_batches_tracked") for k in buffers)
    assert _bits_equal(opt_state, opt.state_dict())
    assert opt.param_groups[0]["lr"] == (0.05 if opt_name == "sgd" else 1e-3)
    assert all(p.grad is grads[n] for n, p in model.named_parameters())
    assert _bits_equal(grad_values, {n: p.grad for n, p in model.named_parameters()})
    assert flags == {n: p.requires_grad for n, p in model.named_parameters()}
    assert modes == {n: m.training for n, m in model.named_modules()}
    assert torch.equal(rng[0], torch.get_rng_state())
    assert rng[1] == random.getstate()
    assert _bits_equal(list(rng[2][1:]), list(np.random.get_state()[1:]))  # noqa: NPY002
    reasons = dict(zip(d.layers["name"], d.layers["reason"], strict=True))
    assert reasons["stage1.block0.conv1.weight"] == "frozen (requires_grad=False)"
    assert reasons["stage2.block0.conv1.weight"].startswith("eval-mode norm")
    assert d.summary["lr"] == opt.param_groups[0]["lr"]


def test_two_calls_give_identical_results():
    torch.manual_seed(2)
    model = _foreign.TorchvisionStyleNet(num_classes=3)  # with dropout: seeded per probe
    x, y = _batch((3, 8, 8), 3)
    first, second = diagnose(model, (x, y)), diagnose(model, (x, y))
    pd.testing.assert_frame_equal(first.lr_curve, second.lr_curve, check_exact=True)
    pd.testing.assert_frame_equal(first.layers, second.layers, check_exact=True)
    assert first.summary == second.summary
    assert list(first.lr_curve.columns) == list(LR_CURVE_COLUMNS)
    assert list(first.layers.columns) == list(LAYER_COLUMNS)
    assert len(first.lr_curve) == 25
    lrs = first.lr_curve["lr"].to_numpy()
    assert lrs[12] == pytest.approx(first.summary["eta_pred"], rel=1e-12)
    assert np.allclose(np.diff(np.log10(lrs)), 4 / 24)


def test_no_scale_invariant_layer_is_one_line():
    model = _foreign.no_norm_net()
    with pytest.raises(ValueError) as info:
        diagnose(model, _batch((12,), 3))
    assert str(info.value) == ("model: no trainable scale-invariant layer to diagnose; found 2 "
                               "conv/linear weight(s): 2 not invariant")


def test_all_frozen_is_one_line():
    torch.manual_seed(0)
    model = resnet_cifar(8, width=4)
    for p in model.parameters():
        p.requires_grad_(False)
    model.classifier.weight.requires_grad_(True)
    with pytest.raises(ValueError) as info:
        diagnose(model, _batch((3, 8, 8), 10))
    assert str(info.value) == ("model: no trainable scale-invariant layer to diagnose; found 10 "
                               "conv/linear weight(s): 9 frozen (requires_grad=False), "
                               "1 not invariant")


def test_dead_layer_reported_and_left_out_of_spread():
    torch.manual_seed(8)
    model = _foreign.DeadBranchNet().double()
    x, y = _batch((3, 6, 6), 3, dtype=torch.float64)
    d = diagnose(model, (x, y), lrs=[0.1, 1.0])
    rows = d.layers.set_index("name")
    assert rows.loc["dead.weight", "dead"] and rows.loc["dead.weight", "g_norm"] == 0.0
    assert not rows.loc["conv1.weight", "dead"] and d.summary["n_dead"] == 1
    a = per_unit_elr(model, x, y, ["conv1.weight", "conv2.weight"])
    assert d.summary["spread"] == pytest.approx(max(a) / min(a), rel=1e-12)
    assert d.summary["eta_pred"] == pytest.approx(critical_lr(a), rel=1e-12)
    brute = spread_after_sgd_step(model, x, y, ["conv1.weight", "conv2.weight"], 1.0)
    assert d.lr_curve["spread_measured"].iloc[1] == pytest.approx(brute, rel=1e-9)
    assert "1 dead layer(s) left out of the spread" in d.summary["advice"]


def test_disagreement_is_said_plainly():
    torch.manual_seed(0)
    model = resnet_cifar(20, shortcuts=False, width=4)
    d = diagnose(model, _batch((3, 8, 8), 10))
    apart = d.summary["decades_apart"]
    assert apart == pytest.approx(math.log10(d.summary["eta_measured"] / d.summary["eta_pred"]))
    said = "differ by" in d.summary["advice"]
    assert said == (abs(apart) > 0.3)


def test_outputs_json_markdown_and_plot(tmp_path):
    import json

    import matplotlib

    torch.manual_seed(0)
    d = diagnose(resnet_cifar(8, width=4), _batch((3, 8, 8), 10), lrs=[0.1, 1.0, 10.0])
    data = json.loads(d.to_json())
    assert data["summary"]["eta_pred"] == d.summary["eta_pred"]
    assert len(data["layers"]) == 10 and len(data["lr_curve"]) == 3
    assert "| eta_pred |" in d.to_markdown()
    fig = d.plot(save_to=str(tmp_path / "d.png"))
    assert (tmp_path / "d.png").stat().st_size > 1000
    assert matplotlib.pyplot.fignum_exists(fig.number) is False
    fig = d.plot()
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:  # legends outside every axes' data area
        legend = ax.get_legend()
        if legend is not None:
            box = legend.get_window_extent(renderer)
            for other in fig.axes:
                assert not box.overlaps(other.get_window_extent(renderer))
    matplotlib.pyplot.close(fig)


def test_bad_arguments():
    model = resnet_cifar(8, width=4)
    with pytest.raises(TypeError, match=r"^model must be a torch.nn.Module, got str$"):
        diagnose("resnet", _batch((3, 8, 8), 10))
    with pytest.raises(ValueError, match=r"^lrs must be"):
        diagnose(model, _batch((3, 8, 8), 10), lrs=[0.1, -1.0])
