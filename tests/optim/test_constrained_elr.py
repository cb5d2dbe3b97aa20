"""ConstrainedELR against oracles written here: measured norms, LARS/LAMB by hand, angles."""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import normdyn
from normdyn.optim import ConstrainedELR
from tests.optim._nets import backward, linear_names, make_setup

pytestmark = pytest.mark.torch

DEPTH = 6
LINEARS = linear_names(DEPTH)
EPS64 = float(torch.finfo(torch.float64).eps)
EPS32 = float(torch.finfo(torch.float32).eps)


def _setup(seed: int = 0, dtype: torch.dtype = torch.float64):
    return make_setup(DEPTH, seed, dtype)


_backward = backward


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _measured_update_elr(before, model, name) -> float:
    after = dict(model.named_parameters())[name].detach()
    return float(torch.linalg.norm((after - before[name]).double())
                 / torch.linalg.norm(before[name].double()))


OPTIMIZERS = {
    "sgd_momentum_wd": lambda p: torch.optim.SGD(p, lr=0.3, momentum=0.9, weight_decay=5e-4),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-4),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=1e-2),
}


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_every_tracked_update_elr_equals_target(kind, dtype):
    target = 0.02
    model, batches = _setup(dtype=dtype)
    opt = ConstrainedELR(OPTIMIZERS[kind](model.parameters()), model, target)
    assert list(opt.tracked_names) == LINEARS
    # float rounding of w + s*dw, measured back as (w' - w): ~ eps * |w| / |dw| = eps/E
    eps = EPS64 if dtype == torch.float64 else EPS32
    rtol = 64 * eps / target
    for t in range(4):
        _backward(model, batches[t])
        before = _snapshot(model)
        opt.step()
        for name in LINEARS:
            assert _measured_update_elr(before, model, name) == pytest.approx(target, rel=rtol)


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_untracked_params_and_inner_state_match_plain_optimizer(kind):
    model, batches = _setup(seed=1)
    inner = OPTIMIZERS[kind](model.parameters())
    opt = ConstrainedELR(inner, model, 0.05)
    names = dict(model.named_parameters())
    untracked = [n for n in names if n not in LINEARS]
    assert untracked  # norm affines and the classifier
    for t in range(3):
        _backward(model, batches[t])
        # the same step by the plain optimizer, from an identical copy of everything
        ref_model, ref_inner = copy.deepcopy((model, inner))
        for n, p in ref_model.named_parameters():
            p.grad = names[n].grad.clone()
        ref_inner.step()
        opt.step()
        ref = dict(ref_model.named_parameters())
        for n in untracked:
            assert torch.equal(names[n], ref[n]), n
        for n in LINEARS:
            assert not torch.equal(names[n], ref[n]), n
        # the inner optimizer's state (momentum buffers, moments) is not rescaled
        ref_state = ref_inner.state_dict()["state"]
        for key, values in inner.state_dict()["state"].items():
            for field, value in values.items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(ref_state[key][field]))


def test_sgd_equals_hand_written_lars_step():
    lr, wd, target = 0.3, 1e-3, 0.05
    trust = target / lr  # LARS trust coefficient: update ELR = lr * trust
    model, batches = _setup(seed=2)
    opt = ConstrainedELR(torch.optim.SGD(model.parameters(), lr=lr, weight_decay=wd),
                         model, target)
    for t in range(3):
        _backward(model, batches[t])
        expected = {}
        for n, p in model.named_parameters():
            w = p.detach()
            u = p.grad + wd * w
            if n in LINEARS:  # LARS: dw = -lr * trust * |w|/|g + wd w| * (g + wd w)
                expected[n] = w - lr * trust * torch.linalg.norm(w) / torch.linalg.norm(u) * u
            else:
                expected[n] = w - lr * u
        opt.step()
        for n, p in model.named_parameters():
            torch.testing.assert_close(p.detach(), expected[n], rtol=1e-13, atol=1e-15)


def test_adamw_equals_hand_written_lamb_first_step():
    wd, target, eps = 1e-2, 0.03, 1e-8
    model, batches = _setup(seed=3)
    opt = ConstrainedELR(torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=wd,
                                           eps=eps), model, target)
    _backward(model, batches[0])
    params = dict(model.named_parameters())
    expected = {}
    for n in LINEARS:
        w, g = params[n].detach(), params[n].grad
        r = g / (g.abs() + eps)  # Adam's bias-corrected first step m^/(sqrt(v^)+eps)
        u = r + wd * w
        expected[n] = w - target * torch.linalg.norm(w) / torch.linalg.norm(u) * u  # LAMB
    opt.step()
    for n in LINEARS:
        torch.testing.assert_close(params[n].detach(), expected[n], rtol=1e-12, atol=1e-15)


def _angle_tan_and_norm_ratio(w0: torch.Tensor, w1: torch.Tensor) -> tuple[float, float]:
    w0, w1 = w0.flatten(), w1.flatten()
    par = torch.dot(w1, w0) / torch.linalg.norm(w0)  # component of w1 along w0
    perp = torch.linalg.norm(w1 - par * w0 / torch.linalg.norm(w0))
    return float(perp / par), float(torch.linalg.norm(w1) / torch.linalg.norm(w0))


@pytest.mark.parametrize("projected", [True, False])
def test_rotation_angle_when_update_is_orthogonal(projected):
    """Delta w orthogonal to w: tan(theta) = E and |w+| = |w| sqrt(1+E^2).

    ``projected`` removes the radial part of each gradient so the premise holds to
    float precision; the real gradient is orthogonal only up to BatchNorm's eps, so
    there the bound is the measured defect: tan(theta) = E(1 - E cos(w, g)) + O(E^2 cos^2).
    """
    target = 0.1
    model, batches = _setup(seed=4)
    opt = ConstrainedELR(torch.optim.SGD(model.parameters(), lr=1.0), model, target)
    params = dict(model.named_parameters())
    for t in range(3):
        _backward(model, batches[t])
        defect = {}
        for n in LINEARS:
            w, g = params[n].detach(), params[n].grad
            if projected:
                g -= torch.sum(g * w) / torch.sum(w * w) * w
            defect[n] = abs(float(torch.sum(g * w) / (torch.linalg.norm(g) * torch.linalg.norm(w))))
        before = _snapshot(model)
        opt.step()
        for n in LINEARS:
            tan, ratio = _angle_tan_and_norm_ratio(before[n], params[n].detach())
            rtol = 1e-12 + 2 * target * defect[n]
            assert tan == pytest.approx(target, rel=rtol)
            assert ratio == pytest.approx(math.sqrt(1 + target**2), rel=rtol)


def test_rotation_angle_differs_with_radial_update():
    # weight decay adds a radial part: |dw|/|w| is still E, tan(theta) is not
    target, wd, lr = 0.1, 0.5, 1.0
    model, batches = _setup(seed=5)
    opt = ConstrainedELR(torch.optim.SGD(model.parameters(), lr=lr, weight_decay=wd),
                         model, target)
    _backward(model, batches[0])
    before = _snapshot(model)
    opt.step()
    assert _measured_update_elr(before, model, LINEARS[0]) == pytest.approx(target, rel=1e-12)
    tan, _ = _angle_tan_and_norm_ratio(before[LINEARS[0]], model.layer0.linear.weight.detach())
    assert abs(tan - target) > 1e-3


def test_derived_target_is_the_rotational_equilibrium_and_follows_the_scheduler():
    lr, wd, beta = 0.2, 5e-4, 0.9
    model, batches = _setup(seed=6)
    inner = torch.optim.SGD(model.parameters(), lr=lr, momentum=beta, weight_decay=wd)
    opt = ConstrainedELR(inner, model)
    sched = torch.optim.lr_scheduler.StepLR(inner, step_size=1, gamma=0.5)

    def by_hand(eta):
        # Tangential part of the equilibrium step, plus the radial part that keeps |w|
        # fixed: (1 + r)^2 + E_tan^2 = 1, E^2 = r^2 + E_tan^2 = 2 - 2 sqrt(1 - E_tan^2).
        tangential_sq = eta * wd * (2 - 2 * beta - eta * wd) / (1 - beta**2)
        return math.sqrt(2 - 2 * math.sqrt(1 - tangential_sq))

    for t in range(3):
        eta = lr * 0.5**t
        targets = opt.layer_targets()
        assert targets.tolist() == pytest.approx([by_hand(eta)] * DEPTH, rel=1e-13)
        assert by_hand(eta) == pytest.approx(math.sqrt(2 * eta * wd / (1 + beta)), rel=1e-3)
        _backward(model, batches[t])
        before = _snapshot(model)
        opt.step()
        for n in LINEARS:
            assert _measured_update_elr(before, model, n) == pytest.approx(by_hand(eta), rel=1e-9)
        sched.step()


def test_closure_and_passthrough():
    model, batches = _setup(seed=7)
    inner = torch.optim.SGD(model.parameters(), lr=0.1)
    opt = ConstrainedELR(inner, model, 0.01)
    assert opt.param_groups is inner.param_groups
    assert opt.state is inner.state

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(model(batches[0][0]), batches[0][1])
        loss.backward()
        return loss

    before = _snapshot(model)
    loss = opt.step(closure)
    assert torch.is_tensor(loss)
    assert _measured_update_elr(before, model, LINEARS[2]) == pytest.approx(0.01, rel=1e-10)
    opt.zero_grad()
    assert model.layer0.linear.weight.grad is None


def test_state_dict_round_trip():
    model, batches = _setup(seed=8)
    inner = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    opt = ConstrainedELR(inner, model)
    for t in range(2):
        _backward(model, batches[t])
        opt.step()
    saved = copy.deepcopy((model.state_dict(), opt.state_dict()))
    for t in range(2, 4):
        _backward(model, batches[t])
        opt.step()
    fresh, _ = _setup(seed=50)
    fresh.load_state_dict(saved[0])
    fresh_opt = ConstrainedELR(torch.optim.SGD(fresh.parameters(), lr=1.0, momentum=0.9,
                                               weight_decay=1e-3), fresh)
    fresh_opt.load_state_dict(saved[1])
    assert fresh_opt.step_count == 2
    for t in range(2, 4):
        _backward(fresh, batches[t])
        fresh_opt.step()
    for (n, a), (_, b) in zip(model.named_parameters(), fresh.named_parameters(), strict=True):
        assert torch.equal(a, b), n


# --------------------------------------------------------------------------- errors


def test_model_without_scale_invariant_layer():
    model = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2))
    msg = ("ConstrainedELR: model Sequential has no scale-invariant layer (no weight "
           "directly followed by a normalization); pass params= to choose the tensors "
           "explicitly")
    with pytest.raises(ValueError, match=re.escape(msg)):
        ConstrainedELR(torch.optim.SGD(model.parameters(), lr=0.1), model, 0.01)


@pytest.mark.parametrize("bad", [0.0, -0.5])
def test_non_positive_target(bad):
    model, _ = _setup()
    with pytest.raises(ValueError, match=re.escape(f"target_elr must be positive, got {bad!r}")):
        ConstrainedELR(torch.optim.SGD(model.parameters(), lr=0.1), model, bad)


def test_step_before_backward():
    model, _ = _setup()
    opt = ConstrainedELR(torch.optim.SGD(model.parameters(), lr=0.1), model, 0.01)
    msg = ("ConstrainedELR.step(): parameter 'layer0.linear.weight' has no gradient "
           "(.grad is None); call loss.backward() first")
    with pytest.raises(RuntimeError, match=re.escape(msg)):
        opt.step()


def test_derived_target_needs_weight_decay_and_sgd():
    model, _ = _setup()
    with pytest.raises(ValueError, match=r"needs weight_decay > 0 \(param group 0 has 0"):
        ConstrainedELR(torch.optim.SGD(model.parameters(), lr=0.1), model)
    with pytest.raises(ValueError, match="for Adam pass target_elr"):
        ConstrainedELR(torch.optim.Adam(model.parameters(), weight_decay=0.1), model)


def test_zero_update_stays_zero():
    w = nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = ConstrainedELR(torch.optim.SGD([w], lr=0.1), params=[w], target_elr=0.5)
    w.grad = torch.zeros_like(w)
    opt.step()
    assert torch.equal(w.detach(), torch.ones(3, dtype=torch.float64))


def test_lazy_top_level_export():
    assert normdyn.ConstrainedELR is ConstrainedELR
