"""Both components in real training loops, against brute force from p before/after step()
and p.grad: GradScaler (scaled, unscaled, skipped), gradient accumulation, frozen layers,
torch.compile, ELRMonitor on the wrapper, non-finite gradients, and the rescaling test
L(3w) = L(w) for every tracked layer."""

from __future__ import annotations

import copy
import math
import re
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from normdyn._checks import NonFiniteError
from normdyn.optim import ConstrainedELR, CriticalLRWarmup
from tests.optim._nets import backward, linear_names, make_setup

pytestmark = pytest.mark.torch

DEPTH = 6
LINEARS = linear_names(DEPTH)


def _loss(model: nn.Module, batch) -> torch.Tensor:
    return F.cross_entropy(model(batch[0]), batch[1])


def _step_elrs(model: nn.Module, opt: torch.optim.Optimizer, names, grad_divisor=1.0):
    """|dw|/|w| of opt.step() at lr 1 in a deep copy, with p.grad / grad_divisor."""
    ref_model, ref_opt = copy.deepcopy((model, opt))
    for (_, p), (_, q) in zip(model.named_parameters(), ref_model.named_parameters(),
                              strict=True):
        q.grad = None if p.grad is None else p.grad.clone() / grad_divisor
    for group in ref_opt.param_groups:
        group["lr"] = 1.0
    params = dict(ref_model.named_parameters())
    before = {n: params[n].detach().clone() for n in names}
    ref_opt.step()
    return [float(torch.linalg.norm(params[n].detach() - before[n]) / torch.linalg.norm(before[n]))
            for n in names]


def _critical(a) -> float:
    return 1.0 / math.sqrt(max(a) * min(a))


def _angle(w0: torch.Tensor, w1: torch.Tensor) -> float:
    w0, w1 = w0.detach().flatten().double(), w1.detach().flatten().double()
    unit = w0 / torch.linalg.norm(w0)
    par = torch.dot(w1, unit)
    return math.atan2(float(torch.linalg.norm(w1 - par * unit)), float(par))


# --------------------------------------------------------------------------- GradScaler


def _scaled_setup(scale: float = 2.0**10):
    model, batches = make_setup(DEPTH, seed=3, dtype=torch.float32)
    opt = torch.optim.SGD(model.parameters(), lr=50.0, momentum=0.9, weight_decay=5e-3)
    scaler = torch.amp.GradScaler("cpu", init_scale=scale)
    return model, batches, opt, scaler


@pytest.mark.parametrize("user_unscales", [False, True])
def test_grad_scaler_critical_lr_comes_from_unscaled_gradients(user_unscales):
    scale = 2.0**10
    model, batches, opt, scaler = _scaled_setup(scale)
    warmup = CriticalLRWarmup(opt, model, scaler=scaler)
    for t in range(3):
        opt.zero_grad()
        scaler.scale(_loss(model, batches[t])).backward()
        # oracle from the scaled p.grad divided by the scale by hand
        eta_star = _critical(_step_elrs(model, opt, LINEARS, grad_divisor=scale))
        # reference: a deep copy stepped by hand on the scaled gradients / scale
        ref_model, ref_opt = copy.deepcopy((model, opt))
        for p, q in zip(model.parameters(), ref_model.parameters(), strict=True):
            q.grad = p.grad.clone() / scale
        if user_unscales:
            scaler.unscale_(opt)
        with warmup.dampening():
            lr = opt.param_groups[0]["lr"]
            assert lr == pytest.approx(min(50.0, eta_star), rel=1e-4)
            scaler.step(opt)  # must not unscale a second time
        scaler.update()
        assert not warmup.last_skipped
        for group in ref_opt.param_groups:
            group["lr"] = lr
        ref_opt.step()
        for (n, p), (_, q) in zip(model.named_parameters(), ref_model.named_parameters(),
                                  strict=True):
            # the scale is a power of 2: unscaling is exact, so the steps agree to rounding
            torch.testing.assert_close(p.detach(), q.detach(), rtol=1e-6, atol=1e-7,
                                       msg=f"step {t}, {n}")
    assert scaler.get_scale() == scale  # no inf seen, growth interval not reached


def test_grad_scaler_skipped_step_does_not_crash_and_is_recorded():
    model, batches, opt, scaler = _scaled_setup()
    warmup = CriticalLRWarmup(opt, model, scaler=scaler)
    opt.zero_grad()
    scaler.scale(_loss(model, batches[0])).backward()
    model.layer2.linear.weight.grad[0, 0] = float("inf")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with warmup.dampening():
        assert opt.param_groups[0]["lr"] == 50.0  # left alone
        scaler.step(opt)
    scaler.update()
    assert warmup.last_skipped and warmup.skipped_steps == 1
    assert scaler.get_scale() < 2.0**10  # the scaler saw the inf and backed off
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), before[n]), n  # the step was skipped
    # the next, finite step is measured again
    opt.zero_grad()
    scaler.scale(_loss(model, batches[1])).backward()
    with warmup.dampening():
        scaler.step(opt)
    assert not warmup.last_skipped and warmup.skipped_steps == 1


SKIP_ADVICE = ("; taken for a step a GradScaler skips (lrs left alone, counted in "
               "skipped_steps); in an AMP loop pass scaler= so that the gradients are read "
               "unscaled")


def test_grad_scaler_loop_without_scaler_argument_skips_and_warns_once_naming_scaler():
    """A real torch.amp.GradScaler('cpu') loop where the warm-up was not given scaler=: a
    step with inf gradients is left alone and counted, like ELRMonitor's skipped rows,
    and the first one warns in one line naming scaler= (issue 18, point 6)."""
    model, batches, opt, scaler = _scaled_setup()
    warmup = CriticalLRWarmup(opt, model)  # no scaler=
    params = dict(model.named_parameters())
    msg = ("CriticalLRWarmup.step() at step 0: parameter 'layer2.linear.weight' has a "
           "non-finite gradient norm" + SKIP_ADVICE)
    for t in range(2):  # two skipped steps: one warning
        opt.zero_grad()
        scaler.scale(_loss(model, batches[t])).backward()
        params[LINEARS[2]].grad[0, 0] = float("inf")
        before = {n: p.detach().clone() for n, p in params.items()}
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            with warmup.dampening():
                assert opt.param_groups[0]["lr"] == 50.0  # left alone
                scaler.step(opt)                         # the scaler skips it
        scaler.update()
        assert [str(r.message) for r in record] == ([msg] if t == 0 else [])
        assert warmup.last_skipped and warmup.skipped_steps == t + 1
        assert opt.param_groups[0]["lr"] == 50.0
        for n, p in params.items():
            assert torch.equal(p.detach(), before[n]), n
    assert scaler.get_scale() == 2.0**10 / 4  # the scaler saw both infs
    assert len(msg) <= 300


def test_non_finite_gradient_without_scaler_warns_and_a_real_step_then_raises():
    """No scaler at all: several layers' gradients are NaN, the warning counts them; the
    optimizer then writes NaN weights, and the next step raises one line naming them."""
    model, batches = make_setup(DEPTH, seed=3)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    warmup = CriticalLRWarmup(opt, model)
    backward(model, batches[0])
    for n in LINEARS[1:]:
        dict(model.named_parameters())[n].grad[0, 0] = float("nan")
    msg = ("CriticalLRWarmup.step() at step 0: 5 of 6 parameters have a non-finite gradient "
           "norm ('layer1.linear.weight' and 4 more)" + SKIP_ADVICE)
    with pytest.warns(UserWarning) as record:
        assert warmup.step() == [1.0]
    assert [str(r.message) for r in record] == [msg]
    opt.step()  # nothing skips it: NaN weights
    backward(model, batches[1])
    # the five layers whose gradient had a NaN now have NaN weights; layer0 is finite
    msg = ("CriticalLRWarmup.step() at step 1: 5 of 6 parameters have a non-finite weight "
           "norm: 'layer1.linear.weight', 'layer2.linear.weight', 'layer3.linear.weight' and "
           "2 more")
    with pytest.raises(FloatingPointError, match=f"^{re.escape(msg)}$"):
        warmup.step()


def test_constrained_under_grad_scaler_skips_inf_and_turns_finite_steps():
    model, batches, inner, scaler = _scaled_setup()
    opt = ConstrainedELR(inner, model, target_elr=0.05)
    w = model.layer3.linear.weight
    opt.zero_grad()
    scaler.scale(_loss(model, batches[0])).backward()
    w.grad[1, 1] = float("inf")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    scaler.step(opt)  # unscales, sees inf, never calls opt.step()
    scaler.update()
    assert opt.step_count == 0
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), before[n]), n
    opt.zero_grad()
    scaler.scale(_loss(model, batches[1])).backward()
    w0 = w.detach().clone()
    scaler.step(opt)
    assert opt.step_count == 1
    assert _angle(w0, w) == pytest.approx(math.atan(0.05), rel=1e-5)


CONSTRAINED_REFUSAL = (
    "turns each tracked layer by arctan(target_elr) per step, so the ELRs are equal by "
    "construction and eta* (from lr*|d|/|w|) does not describe the steps; use one of the two")


def test_warmup_with_constrained_elr_under_grad_scaler_is_refused_and_amp_still_unscales_once():
    """CriticalLRWarmup + ConstrainedELR is refused (one line) whichever object it is given
    and whenever the wrapping happens, before any gradient is touched, so the former
    double unscale (warm-up keyed on the inner optimizer, ``scaler.step(wrapper)``) cannot
    happen.  ConstrainedELR alone under the scaler then skips an inf step and unscales
    finite steps exactly once: the head matches a hand-unscaled inner SGD step."""
    from normdyn.validate.config import RunConfig

    scale = 2.0**10
    model, batches, inner, scaler = _scaled_setup(scale)
    early = CriticalLRWarmup(inner, model, scaler=scaler)     # built before the wrapping
    opt = ConstrainedELR(inner, model, target_elr=0.05)
    msg_wrapper = f"CriticalLRWarmup: cannot warm up a ConstrainedELR: it {CONSTRAINED_REFUSAL}"
    msg_inner = ("CriticalLRWarmup: this SGD is the inner optimizer of a ConstrainedELR, "
                 f"which {CONSTRAINED_REFUSAL}")
    assert len(msg_wrapper) <= 300 and len(msg_inner) <= 300
    with pytest.raises(TypeError, match=f"^{re.escape(msg_wrapper)}$"):
        CriticalLRWarmup(opt, model, scaler=scaler)
    with pytest.raises(TypeError, match=f"^{re.escape(msg_inner)}$"):
        CriticalLRWarmup(inner, model, scaler=scaler)
    twin_model, twin = copy.deepcopy((model, opt))
    with pytest.raises(TypeError, match=f"^{re.escape(msg_inner)}$"):
        CriticalLRWarmup(twin.optimizer, twin_model)
    msg_config = ("constrained_elr cannot be combined with schedule='critical_warmup': "
                  "ConstrainedELR fixes each tracked layer's angle per step, so the warm-up "
                  "has no ELR spread to cap")
    with pytest.raises(ValueError, match=f"^{re.escape(msg_config)}$"):
        RunConfig(schedule="critical_warmup", constrained_elr=0.05)

    params = dict(model.named_parameters())
    for t in range(3):
        opt.zero_grad()
        scaler.scale(_loss(model, batches[t])).backward()
        if t == 1:
            model.layer2.linear.weight.grad[0, 0] = float("inf")
        now = scaler.get_scale()
        ref_model, ref_inner = copy.deepcopy((model, inner))   # plain SGD, grads / scale
        for p, q in zip(model.parameters(), ref_model.parameters(), strict=True):
            q.grad = p.grad.clone() / now
        lrs = [g["lr"] for g in inner.param_groups]
        with pytest.raises(TypeError, match=f"^{re.escape(msg_inner)}$"):
            early.step()                                  # refused before unscaling
        assert [g["lr"] for g in inner.param_groups] == lrs
        assert scaler._per_optimizer_states[id(inner)]["stage"].name == "READY"
        before = {n: p.detach().clone() for n, p in params.items()}
        w0 = params[LINEARS[3]].detach().clone()
        scaler.step(opt)
        scaler.update()
        if t == 1:                                        # skipped: nothing written
            for n, p in params.items():
                assert torch.equal(p.detach(), before[n]), n
            continue
        ref_inner.step()
        ref = dict(ref_model.named_parameters())
        for n in ("classifier.weight", "classifier.bias"):  # untracked: the inner step
            torch.testing.assert_close(params[n].detach(), ref[n].detach(), rtol=1e-6,
                                       atol=1e-7, msg=f"step {t}, {n}")
        assert _angle(w0, params[LINEARS[3]]) == pytest.approx(math.atan(0.05), rel=1e-5)
    assert opt.step_count == 2 and scaler.get_scale() == scale / 2


def test_constrained_non_finite_gradient_raises_before_writing_anything():
    model, batches = make_setup(DEPTH, seed=4)
    inner = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt = ConstrainedELR(inner, model, target_elr=0.05)
    backward(model, batches[0])
    opt.step()
    backward(model, batches[1])
    model.layer4.linear.weight.grad[0, 0] = float("nan")
    model.classifier.bias.grad[0] = float("inf")
    state = copy.deepcopy(inner.state_dict())
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    msg = ("ConstrainedELR.step() at step 1: 2 of 20 parameters have a non-finite gradient: "
           "'layer4.linear.weight', 'classifier.bias'")
    with pytest.raises(NonFiniteError, match=re.escape(msg)):  # what fig09 catches
        opt.step()
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), before[n]), n
    buf = inner.state_dict()["state"]
    assert all(torch.equal(buf[k]["momentum_buffer"], state["state"][k]["momentum_buffer"])
               for k in buf)


# --------------------------------------------------------------------------- accumulation


def test_gradient_accumulation_uses_the_summed_gradient():
    model, batches = make_setup(DEPTH, seed=5)
    opt = torch.optim.SGD(model.parameters(), lr=80.0, momentum=0.9, weight_decay=5e-3)
    warmup = CriticalLRWarmup(opt, model)
    for t in range(3):
        opt.zero_grad()
        for micro in (batches[t], batches[t + 1]):  # two micro-batches, no zero_grad between
            (_loss(model, micro) / 2).backward()
        eta_star = _critical(_step_elrs(model, opt, LINEARS))
        with warmup.dampening():
            assert opt.param_groups[0]["lr"] == pytest.approx(min(80.0, eta_star), rel=1e-9)
            opt.step()


def test_gradient_accumulation_constrained_turns_the_accumulated_step():
    model, batches = make_setup(DEPTH, seed=6)
    inner = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=5e-4)
    opt = ConstrainedELR(inner, model, target_elr=0.03)
    for t in range(2):
        opt.zero_grad()
        for micro in (batches[t], batches[t + 2]):
            (_loss(model, micro) / 2).backward()
        ref_model, ref_inner = copy.deepcopy((model, inner))
        for (_, p), (_, q) in zip(model.named_parameters(), ref_model.named_parameters(),
                                  strict=True):
            q.grad = p.grad.clone()
        ref_inner.step()
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        opt.step()
        ref, now = dict(ref_model.named_parameters()), dict(model.named_parameters())
        for n in LINEARS:
            w, d = before[n].flatten(), (ref[n].detach() - before[n]).flatten()
            tau = d - torch.dot(d, w) / torch.dot(w, w) * w
            e = 0.03
            want = (w + e * torch.linalg.norm(w) * tau / torch.linalg.norm(tau)) / math.sqrt(1 + e * e)
            torch.testing.assert_close(now[n].detach().flatten(), want, rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------- frozen layers


def _frozen_first_block(in_optimizer: bool):
    model, batches = make_setup(DEPTH, seed=7)
    for p in model.layer0.parameters():
        p.requires_grad_(False)
    params = model.parameters() if in_optimizer else [p for p in model.parameters()
                                                      if p.requires_grad]
    return model, batches, params


FROZEN_NOTE = ("{owner}: skipping 1 frozen or non-optimized layer(s) (requires_grad=False or "
               "not in the optimizer): 'layer0.linear.weight'")


@pytest.mark.parametrize("in_optimizer", [True, False])
def test_frozen_first_block_warmup(in_optimizer):
    model, batches, params = _frozen_first_block(in_optimizer)
    opt = torch.optim.SGD(params, lr=80.0, momentum=0.9)
    with pytest.warns(UserWarning, match=re.escape(FROZEN_NOTE.format(owner="CriticalLRWarmup"))):
        warmup = CriticalLRWarmup(opt, model)
    assert warmup.skipped == ("layer0.linear.weight",)
    assert warmup.tracked_names == tuple(LINEARS[1:])
    for t in range(2):
        backward(model, batches[t])
        eta_star = _critical(_step_elrs(model, opt, LINEARS[1:]))
        with warmup.dampening():
            assert opt.param_groups[0]["lr"] == pytest.approx(min(80.0, eta_star), rel=1e-9)
            opt.step()


@pytest.mark.parametrize("in_optimizer", [True, False])
def test_frozen_first_block_constrained(in_optimizer):
    model, batches, params = _frozen_first_block(in_optimizer)
    with pytest.warns(UserWarning, match=re.escape(FROZEN_NOTE.format(owner="ConstrainedELR"))):
        opt = ConstrainedELR(torch.optim.SGD(params, lr=0.3, momentum=0.9), model, 0.04)
    assert opt.skipped == ("layer0.linear.weight",)
    frozen = model.layer0.linear.weight.detach().clone()
    backward(model, batches[0])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt.step()
    assert torch.equal(model.layer0.linear.weight, frozen)
    for n in LINEARS[1:]:
        assert _angle(before[n], dict(model.named_parameters())[n]) == pytest.approx(
            math.atan(0.04), rel=1e-12)


def test_everything_frozen_is_one_line_error():
    model, _ = make_setup(2, seed=7)
    for p in model.parameters():
        p.requires_grad_(False)
    model.classifier.weight.requires_grad_(True)
    msg = ("ConstrainedELR: all 2 candidate layer(s) are frozen (requires_grad=False) or not "
           "in the optimizer: 'layer0.linear.weight', 'layer1.linear.weight'; nothing to track")
    with pytest.raises(ValueError, match=re.escape(msg)):
        ConstrainedELR(torch.optim.SGD([model.classifier.weight], lr=0.1), model, 0.1)


def test_messages_stay_under_300_characters_with_many_long_names():
    names = {f"encoder.block{i}.attention.projection.very_long_submodule_name.weight":
             nn.Parameter(torch.ones(3)) for i in range(200)}
    opt = torch.optim.SGD(list(names.values())[:1], lr=0.1)
    with pytest.warns(UserWarning) as record:
        CriticalLRWarmup(opt, params=names)
    text = str(record[0].message)
    assert "\n" not in text and len(text) <= 300
    assert "and 196 more" in text


# --------------------------------------------------------------------------- torch.compile


def test_torch_compile_eager_backend():
    """``torch.compile`` with backend="eager": Dynamo traces and wraps the model in an
    OptimizedModule (the inductor backend takes ~20 s to compile on this CPU)."""
    model, batches = make_setup(DEPTH, seed=8)
    compiled = torch.compile(model, backend="eager")
    opt = torch.optim.SGD(compiled.parameters(), lr=80.0, momentum=0.9)
    warmup = CriticalLRWarmup(opt, compiled)
    constrained = ConstrainedELR(torch.optim.SGD(compiled.parameters(), lr=0.1), compiled, 0.02)
    assert warmup.tracked_names == constrained.tracked_names == tuple(LINEARS)
    for t in range(2):
        opt.zero_grad()
        _loss(compiled, batches[t]).backward()
        eta_star = _critical(_step_elrs(model, opt, LINEARS))
        with warmup.dampening():
            assert opt.param_groups[0]["lr"] == pytest.approx(min(80.0, eta_star), rel=1e-9)
        w0 = model.layer1.linear.weight.detach().clone()
        constrained.step()
        assert _angle(w0, model.layer1.linear.weight) == pytest.approx(math.atan(0.02), rel=1e-12)


# --------------------------------------------------------------------------- monitor


def test_elr_monitor_accepts_the_constrained_wrapper_and_records_the_rotation():
    from normdyn.validate.monitor import ELRMonitor

    model, batches = make_setup(DEPTH, seed=9)
    opt = ConstrainedELR(torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9,
                                         weight_decay=5e-4), model, 0.1)
    assert isinstance(opt, torch.optim.Optimizer)
    monitor = ELRMonitor(model, opt, sync_every=2)
    for t in range(3):
        opt.zero_grad()
        loss = _loss(model, batches[t])
        loss.backward()
        with monitor.step(loss):
            opt.step()
    frame = monitor.to_dataframe()
    rows = frame[frame["layer"].isin(LINEARS)]
    assert len(rows) == 3 * DEPTH
    # turning by theta at fixed norm moves w by the chord 2 sin(theta/2) |w|
    chord = 2 * math.sin(math.atan(0.1) / 2)
    assert rows["update_elr"].to_numpy() == pytest.approx([chord] * len(rows), rel=1e-9)


# --------------------------------------------------------------------------- invariance


@pytest.mark.parametrize("component", ["warmup", "constrained"])
def test_every_tracked_layer_is_scale_invariant(component):
    """L(3w) = L(w) for each tracked weight (train-mode BN, float64); the classifier,
    which neither component tracks, fails the same test.  BatchNorm's eps is set to 1e-30:
    with eps the invariance is only approximate (relative defect about eps/var, measured
    1.1e-6 here), and the test is about which layers are tracked, not about eps."""
    model, batches = make_setup(DEPTH, seed=10)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d):
            module.eps = 1e-30  # torch requires eps > 0; below float64 resolution of var
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    tracked = (CriticalLRWarmup(opt, model) if component == "warmup"
               else ConstrainedELR(opt, model, 0.1)).tracked_names
    assert tracked == tuple(LINEARS)
    params = dict(model.named_parameters())
    with torch.no_grad():
        base = float(_loss(model, batches[0]))
        for name in (*tracked, "classifier.weight"):
            params[name].mul_(3.0)
            scaled = float(_loss(model, batches[0]))
            params[name].div_(3.0)
            if name == "classifier.weight":
                assert abs(scaled - base) > 1e-3
            else:
                assert scaled == pytest.approx(base, rel=1e-12), name


def test_constrained_step_hooks_fire_around_the_rotation_and_deepcopy_keeps_it_working():
    model, batches = make_setup(DEPTH, seed=12)
    opt = ConstrainedELR(torch.optim.SGD(model.parameters(), lr=0.2, momentum=0.9), model, 0.1)
    seen = []
    w = model.layer1.linear.weight
    opt.register_step_pre_hook(lambda o, a, k: seen.append(("pre", w.detach().clone())))
    opt.register_step_post_hook(lambda o, a, k: seen.append(("post", w.detach().clone())))
    backward(model, batches[0])
    w0 = w.detach().clone()
    opt.step()
    assert [kind for kind, _ in seen] == ["pre", "post"]
    assert torch.equal(seen[0][1], w0) and torch.equal(seen[1][1], w.detach())
    twin_model, twin = copy.deepcopy((model, opt))
    assert twin.tracked_names == opt.tracked_names and twin.optimizer is not opt.optimizer
    for m in (model, twin_model):
        backward(m, batches[1])
    opt.step()
    twin.step()
    for (n, a), (_, b) in zip(model.named_parameters(), twin_model.named_parameters(),
                              strict=True):
        assert torch.equal(a, b), n
