"""CriticalLRWarmup against brute-force oracles written here, not taken from the package."""

from __future__ import annotations

import copy
import math
import re

import pytest
import torch
from torch import nn

import normdyn
from normdyn.optim import CriticalLRWarmup
from tests.optim._nets import backward, linear_names, make_setup

pytestmark = pytest.mark.torch

DEPTH = 16
LINEARS = linear_names(DEPTH)


def _setup(seed: int = 0, dtype: torch.dtype = torch.float64):
    return make_setup(DEPTH, seed, dtype)


_backward = backward


def _brute_a(model: nn.Module, names=LINEARS) -> list[float]:
    """Per-unit-lr ELRs |grad|/|w| by a plain loop over the parameters."""
    params = dict(model.named_parameters())
    out = []
    for name in names:
        p = params[name]
        out.append(float(torch.linalg.norm(p.grad.double()) / torch.linalg.norm(p.detach().double())))
    return out


def _brute_a_by_step(model: nn.Module, opt: torch.optim.Optimizer, names=LINEARS) -> list[float]:
    """Per-unit-lr ELRs of the step the optimizer will take, by brute force: a deep copy of
    model and optimizer takes opt.step() at lr 1; a = |w_after - w_before| / |w_before|."""
    ref_model, ref_opt = copy.deepcopy((model, opt))
    for (_, p), (_, q) in zip(model.named_parameters(), ref_model.named_parameters(),
                              strict=True):
        q.grad = None if p.grad is None else p.grad.clone()
    for group in ref_opt.param_groups:
        group["lr"] = 1.0
    params = dict(ref_model.named_parameters())
    before = {n: params[n].detach().double().clone() for n in names}
    ref_opt.step()
    return [float(torch.linalg.norm(params[n].detach().double() - before[n])
                  / torch.linalg.norm(before[n])) for n in names]


def _brute_critical(a: list[float]) -> float:
    return 1.0 / math.sqrt(max(a) * min(a))


def _F(e: float) -> float:
    return e / (1.0 + e * e)


# --------------------------------------------------------------------------- step 0


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_step0_lr_is_bruteforce_critical_lr(dtype, rtol):
    model, batches = _setup(dtype=dtype)
    opt = torch.optim.SGD(model.parameters(), lr=100.0)
    warmup = CriticalLRWarmup(opt, model)
    assert list(warmup.tracked_names) == LINEARS
    _backward(model, batches[0])
    a = _brute_a(model)
    eta_star = _brute_critical(a)
    assert eta_star < 100.0  # the cap is active
    lrs = warmup.step()
    assert lrs[0] == pytest.approx(eta_star, rel=rtol)
    assert opt.param_groups[0]["lr"] == pytest.approx(eta_star, rel=rtol)
    assert warmup.last_critical_lr == pytest.approx(eta_star, rel=rtol)
    # current spread of lr*a is a_max/a_min; predicted one is max F / min F
    assert warmup.last_spread == pytest.approx(max(a) / min(a), rel=rtol)
    nxt = [_F(eta_star * x) for x in a]
    assert warmup.last_predicted_spread == pytest.approx(max(nxt) / min(nxt), rel=rtol)
    assert not warmup.finished


def test_lr_below_critical_is_left_alone_and_finishes():
    model, batches = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=1e-4)
    warmup = CriticalLRWarmup(opt, model)
    _backward(model, batches[0])
    assert _brute_critical(_brute_a(model)) > 1e-4
    assert warmup.step() == [1e-4]
    assert warmup.finished


# --------------------------------------------------------------------------- rule by hand


def _two_tensor_warmup(target=1.0, guard=False):
    w1 = nn.Parameter(torch.full((4,), 0.5, dtype=torch.float64))  # |w1| = 1
    w2 = nn.Parameter(torch.full((9,), 1 / 3, dtype=torch.float64))  # |w2| = 1
    opt = torch.optim.SGD([w1, w2], lr=target)
    warmup = CriticalLRWarmup(opt, params={"w1": w1, "w2": w2}, guard=guard)
    return w1, w2, opt, warmup


def _set_grads(w1, w2, a1, a2):
    # |grad| = a * |w| = a; directions arbitrary
    w1.grad = torch.full_like(w1, a1 / 2)
    w2.grad = torch.full_like(w2, a2 / 3)


@pytest.mark.parametrize("guard", [False, True])
def test_ends_once_critical_reaches_target(guard):
    w1, w2, opt, warmup = _two_tensor_warmup(guard=guard)
    _set_grads(w1, w2, 1.0, 100.0)  # eta* = 0.1
    assert warmup.step() == [pytest.approx(0.1, rel=1e-14)]
    assert not warmup.finished
    _set_grads(w1, w2, 1.0, 0.25)  # eta* = 2 >= 1
    assert warmup.step() == [1.0]
    assert warmup.finished
    _set_grads(w1, w2, 1.0, 100.0)  # eta* = 0.1 again
    expected = 0.1 if guard else 1.0
    assert warmup.step() == [pytest.approx(expected, rel=1e-14)]
    assert warmup.finished
    if not guard:  # finished for good: no norms are read any more
        w1.grad = None
        assert warmup.step() == [1.0]


def test_tensor_lr_is_dampened_and_restored():
    w1 = nn.Parameter(torch.full((4,), 0.5, dtype=torch.float64))
    w2 = nn.Parameter(torch.full((9,), 1 / 3, dtype=torch.float64))
    opt = torch.optim.SGD([w1, w2], lr=torch.tensor(1.0))
    warmup = CriticalLRWarmup(opt, params=[w1, w2])
    _set_grads(w1, w2, 1.0, 100.0)
    with warmup.dampening():
        assert float(opt.param_groups[0]["lr"]) == pytest.approx(0.1, rel=1e-6)
    assert torch.is_tensor(opt.param_groups[0]["lr"])
    assert float(opt.param_groups[0]["lr"]) == 1.0


def test_zero_gradient_layer_is_left_out():
    w1, w2, opt, warmup = _two_tensor_warmup()
    w3 = nn.Parameter(torch.ones(2, dtype=torch.float64))
    opt.add_param_group({"params": [w3]})
    warmup = CriticalLRWarmup(opt, params={"w1": w1, "w2": w2, "w3": w3})
    _set_grads(w1, w2, 4.0, 25.0)
    w3.grad = torch.zeros_like(w3)
    assert warmup.step() == [pytest.approx(0.1, rel=1e-14)] * 2
    assert warmup.last_spread == pytest.approx(25.0 / 4.0, rel=1e-14)


def test_all_zero_gradients_do_not_cap_or_finish():
    w1, w2, opt, warmup = _two_tensor_warmup(target=3.0)
    _set_grads(w1, w2, 0.0, 0.0)
    assert warmup.step() == [3.0]
    assert warmup.last_critical_lr == math.inf
    assert not warmup.finished


# --------------------------------------------------------------------------- groups


def test_several_groups_keep_their_lr_ratios():
    model, batches = _setup(seed=3)
    params = dict(model.named_parameters())
    first = [params[n] for n in LINEARS[: DEPTH // 2]]
    second = [params[n] for n in LINEARS[DEPTH // 2:]]
    rest = [p for n, p in params.items() if n not in LINEARS]
    targets = [80.0, 40.0, 120.0]
    opt = torch.optim.SGD(
        [{"params": first, "lr": targets[0]}, {"params": second, "lr": targets[1]},
         {"params": rest, "lr": targets[2]}], lr=1.0,
    )
    warmup = CriticalLRWarmup(opt, model)
    _backward(model, batches[0])
    a = _brute_a(model)
    # brute force: T_ref = 80 (largest target holding tracked layers), b = (T_g/T_ref) a
    b = [x * (1.0 if i < DEPTH // 2 else 0.5) for i, x in enumerate(a)]
    eta_ref = _brute_critical(b)
    assert eta_ref < 80.0
    factor = eta_ref / 80.0
    lrs = warmup.step()
    for got, t in zip(lrs, targets, strict=True):
        assert got == pytest.approx(t * factor, rel=1e-12)
    assert [g["lr"] for g in opt.param_groups] == lrs
    elr = [x * lrs[0 if i < DEPTH // 2 else 1] for i, x in enumerate(a)]
    assert warmup.last_spread == pytest.approx(max(elr) / min(elr), rel=1e-12)
    warmup.restore()
    assert [g["lr"] for g in opt.param_groups] == targets


def test_equal_group_targets_reduce_to_single_group_rule():
    model, batches = _setup(seed=4)
    params = dict(model.named_parameters())
    tracked = [params[n] for n in LINEARS]
    rest = [p for n, p in params.items() if n not in LINEARS]
    opt = torch.optim.SGD([{"params": tracked}, {"params": rest, "weight_decay": 0.0}],
                          lr=50.0, weight_decay=1e-4)
    warmup = CriticalLRWarmup(opt, model)
    _backward(model, batches[0])
    eta_star = _brute_critical(_brute_a_by_step(model, opt))  # weight decay: d = g + wd w
    assert warmup.step() == [pytest.approx(min(50.0, eta_star), rel=1e-12)] * 2


def test_target_lr_argument_is_written_per_group():
    model, _ = _setup()
    opt = torch.optim.SGD([{"params": [model.layer0.linear.weight]},
                           {"params": [model.layer1.linear.weight]}], lr=1.0)
    warmup = CriticalLRWarmup(opt, model, target_lr=[0.5, 0.25],
                              params=[model.layer0.linear.weight, model.layer1.linear.weight])
    assert warmup.tracked_names == ("layer0.linear.weight", "layer1.linear.weight")
    assert [g["lr"] for g in opt.param_groups] == [0.5, 0.25]
    assert warmup.targets == [0.5, 0.25]


# --------------------------------------------------------------------------- schedulers


def test_composition_with_cosine_annealing_gives_documented_lrs():
    model, batches = _setup(seed=1)
    base, t_max, eta_min, steps = 30.0, 12, 0.5, 14
    opt = torch.optim.SGD(model.parameters(), lr=base, momentum=0.9)
    warmup = CriticalLRWarmup(opt, model, guard=False)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=t_max, eta_min=eta_min)
    capped = 0
    for t in range(steps):
        cosine = eta_min + (base - eta_min) * (1 + math.cos(math.pi * t / t_max)) / 2
        _backward(model, batches[t % len(batches)])
        eta_star = _brute_critical(_brute_a_by_step(model, opt))
        was_finished = warmup.finished
        with warmup.dampening():
            used = opt.param_groups[0]["lr"]
            opt.step()
        expected = cosine if was_finished or eta_star >= cosine else eta_star
        capped += expected < cosine
        assert used == pytest.approx(expected, rel=1e-9), t
        # after the context the scheduler's own lr is back, untouched
        assert opt.param_groups[0]["lr"] == pytest.approx(cosine, rel=1e-12)
        sched.step()
        nxt = eta_min + (base - eta_min) * (1 + math.cos(math.pi * (t + 1) / t_max)) / 2
        assert sched.get_last_lr()[0] == pytest.approx(nxt, rel=1e-12, abs=1e-12)
    assert capped >= 1  # the warm-up did lower the lr
    assert warmup.finished


def test_composition_with_step_lr():
    model, batches = _setup(seed=2)
    opt = torch.optim.SGD(model.parameters(), lr=40.0)
    warmup = CriticalLRWarmup(opt, model, guard=True)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    for t in range(6):
        target = 40.0 * 0.5 ** (t // 2)
        _backward(model, batches[t % len(batches)])
        eta_star = _brute_critical(_brute_a(model))
        with warmup.dampening():
            assert opt.param_groups[0]["lr"] == pytest.approx(min(target, eta_star), rel=1e-9)
            opt.step()
        assert opt.param_groups[0]["lr"] == target
        sched.step()


def test_bare_loop_without_scheduler_keeps_target():
    model, batches = _setup(seed=5)
    opt = torch.optim.SGD(model.parameters(), lr=60.0)
    warmup = CriticalLRWarmup(opt, model, guard=True)
    for t in range(4):
        _backward(model, batches[t])
        eta_star = _brute_critical(_brute_a(model))
        warmup.step()  # no restore(): the warm-up recognizes its own lowered lr
        assert opt.param_groups[0]["lr"] == pytest.approx(min(60.0, eta_star), rel=1e-9)
        assert warmup.targets == [60.0]
        opt.step()


def test_dampening_restores_on_error():
    model, batches = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=100.0)
    warmup = CriticalLRWarmup(opt, model)
    _backward(model, batches[0])
    with pytest.raises(KeyError), warmup.dampening():
        assert opt.param_groups[0]["lr"] < 100.0
        raise KeyError("boom")
    assert opt.param_groups[0]["lr"] == 100.0


# --------------------------------------------------------------------------- state


def _run(model, opt, warmup, batches, steps, start):
    lrs = []
    for t in range(start, start + steps):
        _backward(model, batches[t % len(batches)])
        lrs.append(warmup.step()[0])
        opt.step()
    return lrs


def test_state_dict_round_trip_gives_identical_lrs():
    model, batches = _setup(seed=6)
    opt = torch.optim.SGD(model.parameters(), lr=200.0, momentum=0.9)
    warmup = CriticalLRWarmup(opt, model)
    _run(model, opt, warmup, batches, 3, 0)  # bare loop: the lowered lr is in the group
    assert not warmup.finished
    saved = (copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict()),
             copy.deepcopy(warmup.state_dict()))
    expected = _run(model, opt, warmup, batches, 5, 3)

    fresh, _ = _setup(seed=99)
    fresh.load_state_dict(saved[0])
    fresh_opt = torch.optim.SGD(fresh.parameters(), lr=1.0, momentum=0.9)
    fresh_opt.load_state_dict(saved[1])
    fresh_warmup = CriticalLRWarmup(fresh_opt, fresh)
    fresh_warmup.load_state_dict(saved[2])
    assert fresh_warmup.targets == [200.0]
    assert _run(fresh, fresh_opt, fresh_warmup, batches, 5, 3) == expected
    assert fresh_warmup.state_dict() == warmup.state_dict()


def test_load_state_dict_rejects_other_parameters():
    model, _ = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    state = CriticalLRWarmup(opt, model).state_dict()
    other = CriticalLRWarmup(opt, params=[model.layer0.linear.weight])
    msg = ("state_dict tracks different parameters: 16 saved ('layer0.linear.weight', "
           "'layer1.linear.weight', 'layer2.linear.weight' and 13 more), 1 here "
           "('params[0]')")
    with pytest.raises(ValueError, match=re.escape(msg)):
        other.load_state_dict(state)


# --------------------------------------------------------------------------- errors


def test_model_without_scale_invariant_layer():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    msg = ("CriticalLRWarmup: model Sequential has no scale-invariant layer (no weight "
           "directly followed by a normalization); pass params= to choose the tensors "
           "explicitly")
    with pytest.raises(ValueError, match=re.escape(msg)):
        CriticalLRWarmup(opt, model)


def test_neither_model_nor_params():
    opt = torch.optim.SGD([nn.Parameter(torch.ones(2))], lr=0.1)
    with pytest.raises(ValueError, match=re.escape(
            "CriticalLRWarmup needs model= (to detect its scale-invariant layers) or params=")):
        CriticalLRWarmup(opt)


def test_step_before_backward_names_the_parameter():
    model, _ = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    warmup = CriticalLRWarmup(opt, model)
    msg = ("CriticalLRWarmup.step(): 16 of 16 tracked parameters have no gradient (.grad "
           "is None); call loss.backward() first: 'layer0.linear.weight', "
           "'layer1.linear.weight', 'layer2.linear.weight' and 13 more")
    with pytest.raises(RuntimeError, match=re.escape(msg)):
        warmup.step()


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_non_positive_target(bad):
    model, _ = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match=re.escape(f"target_lr must be positive, got {bad!r}")):
        CriticalLRWarmup(opt, model, target_lr=bad)
    opt.param_groups[0]["lr"] = bad
    with pytest.raises(ValueError, match=re.escape(
            f"target_lr must be positive: param group 0 has lr {bad!r}")):
        CriticalLRWarmup(opt, model)


def test_target_count_must_match_groups():
    model, _ = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="one float or one per param group"):
        CriticalLRWarmup(opt, model, target_lr=[0.1, 0.2])


def test_params_outside_optimizer_are_skipped_with_one_warning_line():
    model, _ = _setup()
    opt = torch.optim.SGD([model.layer0.linear.weight], lr=0.1)
    msg = ("CriticalLRWarmup: skipping 15 frozen or non-optimized layer(s) (requires_grad=False "
           "or not in the optimizer): 'layer1.linear.weight', 'layer2.linear.weight', "
           "'layer3.linear.weight' and 12 more")
    with pytest.warns(UserWarning, match=re.escape(msg)) as record:
        warmup = CriticalLRWarmup(opt, model)
    assert len(record) == 1 and len(str(record[0].message)) <= 300
    assert warmup.tracked_names == ("layer0.linear.weight",)
    assert warmup.skipped == tuple(LINEARS[1:])


def test_non_finite_gradient_names_the_parameter():
    w1, w2, opt, warmup = _two_tensor_warmup()
    _set_grads(w1, w2, 1.0, 1.0)
    w2.grad[0] = float("nan")
    with pytest.warns(UserWarning, match="parameter 'w2' has a non-finite gradient norm; "
                      "taken for a step a GradScaler skips") as record:
        assert warmup.step() == [1.0]
    assert len(record) == 1 and warmup.skipped_steps == 1


def test_lazy_top_level_export():
    assert normdyn.CriticalLRWarmup is CriticalLRWarmup
    assert "CriticalLRWarmup" in normdyn.optim.warmup.__all__


# --------------------------------------------------------------------------- the coming step

STEP_OPTIMIZERS = {
    "sgd_momentum_wd": (lambda p: torch.optim.SGD(p, lr=100.0, momentum=0.9, weight_decay=5e-3),
                        100.0),
    "sgd_dampening": (lambda p: torch.optim.SGD(p, lr=100.0, momentum=0.9, dampening=0.5,
                                                weight_decay=5e-3), 100.0),
    "sgd_nesterov": (lambda p: torch.optim.SGD(p, lr=100.0, momentum=0.9, nesterov=True,
                                               weight_decay=5e-3), 100.0),
    "sgd_maximize": (lambda p: torch.optim.SGD(p, lr=100.0, momentum=0.5, maximize=True,
                                               weight_decay=5e-3), 100.0),
    "adam": (lambda p: torch.optim.Adam(p, lr=10.0, weight_decay=1e-2), 10.0),
    "adam_amsgrad": (lambda p: torch.optim.Adam(p, lr=10.0, amsgrad=True), 10.0),
    "adamw": (lambda p: torch.optim.AdamW(p, lr=10.0, weight_decay=0.1), 10.0),
}


@pytest.mark.parametrize("kind", sorted(STEP_OPTIMIZERS))
def test_lr_is_the_critical_lr_of_the_step_the_optimizer_takes(kind):
    """Oracle: a deep copy of model and optimizer steps at lr 1; a = |dw|/|w| per layer;
    eta* = 1/sqrt(a_max a_min).  The warm-up's lr must be min(target, eta*) (issue: 1e-3)."""
    make, target = STEP_OPTIMIZERS[kind]
    model, batches = _setup(seed=21)
    opt = make(model.parameters())
    warmup = CriticalLRWarmup(opt, model)
    gradient_only_differs = False
    for t in range(5):
        _backward(model, batches[t % len(batches)])
        a = _brute_a_by_step(model, opt)
        eta_star = _brute_critical(a)
        gradient_only_differs |= abs(_brute_critical(_brute_a(model)) / eta_star - 1) > 1e-2
        with warmup.dampening():
            assert opt.param_groups[0]["lr"] == pytest.approx(min(target, eta_star), rel=1e-9)
            opt.step()
        assert warmup.last_critical_lr == pytest.approx(eta_star, rel=1e-9)
    assert gradient_only_differs  # the oracle tells |g|/|w| from the real step here
    assert warmup.step_count == 5


class _MySGD(torch.optim.SGD):
    pass


@pytest.mark.parametrize("cls", [torch.optim.RMSprop, _MySGD])
def test_unknown_optimizer_is_refused_in_one_line(cls):
    model, _ = _setup()
    msg = (f"CriticalLRWarmup: cannot predict the step of {cls.__name__}; the critical lr "
           "needs the step the optimizer will take, derived here for torch.optim.SGD, Adam "
           "and AdamW only")
    with pytest.raises(TypeError, match=re.escape(msg)):
        CriticalLRWarmup(cls(model.parameters(), lr=0.1), model)
    assert len(msg) <= 300


def test_guard_default_keeps_capping_after_the_finish():
    w1, w2, opt, _ = _two_tensor_warmup()
    warmup = CriticalLRWarmup(opt, params={"w1": w1, "w2": w2})  # default guard
    _set_grads(w1, w2, 1.0, 0.25)  # eta* = 2 >= 1: finished
    assert warmup.step() == [1.0] and warmup.finished
    _set_grads(w1, w2, 1.0, 100.0)  # eta* = 0.1: THEORY's min(target, eta*) still applies
    assert warmup.step() == [pytest.approx(0.1, rel=1e-14)]
