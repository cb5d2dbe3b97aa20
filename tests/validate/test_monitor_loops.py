"""ELRMonitor in real training loops (issue 10, section 3).

Oracle everywhere: brute force in the test from ``p`` before and after ``step()`` and
from ``p.grad`` (float64 ``torch.linalg.vector_norm`` and dot products), independent of
the monitor's batched kernels.  For plain SGD the lr the step used is recovered as
``||dw|| / ||g||`` (``dw = -lr g`` exactly), which does not read ``param_groups``.
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pandas as pd  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from normdyn._checks import NonFiniteError  # noqa: E402
from normdyn.validate.monitor import ELRMonitor  # noqa: E402
from tests.validate._nets import tiny_resnet_batch  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


_setup = tiny_resnet_batch



def _train_watched(model, opt, monitor, oracle, x, y, steps: int) -> None:
    """Plain steps, the oracle's snapshots around each monitored ``opt.step()``."""
    for step in range(steps):
        model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        oracle.before(step)
        with monitor.step(loss):
            opt.step()
        oracle.after()

class _Oracle:
    """Brute-force rows: call ``before()`` after backward, ``after()`` after the step."""

    def __init__(self, model: nn.Module, names: list[str]) -> None:
        self.params = dict(model.named_parameters())
        self.names = names
        self.rows: list[dict] = []
        self._before: dict[str, dict] = {}

    def before(self, step: int) -> None:
        self._before = {}
        for name in self.names:
            p = self.params[name]
            w, g = p.detach().double(), p.grad.detach().double()
            wn, gn = torch.linalg.vector_norm(w).item(), torch.linalg.vector_norm(g).item()
            self._before[name] = dict(step=step, layer=name, sigma2=wn * wn, grad_norm=gn,
                                      cos_wg=torch.dot(w.flatten(), g.flatten()).item()
                                      / (wn * gn), w=p.detach().clone(), wn=wn)

    def after(self) -> None:
        for name in self.names:
            row = self._before[name]
            delta = self.params[name].detach().double() - row.pop("w").double()
            dn = torch.linalg.vector_norm(delta).item()
            row["update_elr"] = dn / row.pop("wn")
            row["sgd_lr"] = dn / row["grad_norm"]       # plain SGD only: |dw| = lr |g|
            self.rows.append(row)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows)


HEAD = "classifier.weight"   # not scale-invariant: cos_wg is O(0.01-1) there


def _with_head(model: nn.Module) -> list[str]:
    """The detected (scale-invariant) weights plus the classifier, tracked via ``names=``."""
    detected = ELRMonitor(model, torch.optim.SGD(model.parameters(), lr=0.1)).names
    return [*detected, HEAD]


def _check(got: pd.DataFrame, want: pd.DataFrame, cols=("sigma2", "grad_norm", "update_elr",
                                                        "cos_wg"), strict_cos=True) -> None:
    """Every column to rtol 1e-6.  On a scale-invariant layer the true ``cos_wg`` is at the
    rounding level (~1e-8), so it needs ``atol``, which a monitor returning 0 would pass;
    the rows of :data:`HEAD` (non-invariant) are therefore checked with ``rtol`` only and
    must exist (``strict_cos``), so a wrong ``cos_wg`` fails."""
    assert len(got) == len(want)
    assert (got["step"].to_numpy() == want["step"].to_numpy()).all()
    assert (got["layer"].to_numpy() == want["layer"].to_numpy()).all()
    for col in cols:
        np.testing.assert_allclose(got[col], want[col], rtol=1e-6, atol=1e-7, err_msg=col)
    head = (want["layer"] == HEAD).to_numpy()
    if strict_cos:
        assert head.any(), f"{HEAD} is not tracked: pass names=_with_head(model)"
        cos = want["cos_wg"].to_numpy()[head]
        assert (np.abs(cos) > 1e-3).all(), cos        # far from 0: rtol alone is binding
        np.testing.assert_allclose(got["cos_wg"].to_numpy()[head], cos, rtol=1e-6, atol=0,
                                   err_msg=f"cos_wg of {HEAD}")


# --------------------------------------------------------------------------- lr nesting


@pytest.mark.parametrize("nesting", ["monitor_outside", "warmup_outside"])
def test_lr_is_the_dampened_lr_the_step_used(nesting: str) -> None:
    from normdyn.optim import CriticalLRWarmup

    model, x, y = _setup()
    target = 50.0                      # far above the critical lr: the warm-up binds
    opt = torch.optim.SGD(model.parameters(), lr=target)
    warmup = CriticalLRWarmup(opt, model)
    monitor = ELRMonitor(model, opt, sync_every=2, names=_with_head(model))
    oracle = _Oracle(model, monitor.names)
    for step in range(3):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        oracle.before(step)
        if nesting == "monitor_outside":
            with monitor.step(loss), warmup.dampening():
                opt.step()
        else:
            with warmup.dampening(), monitor.step(loss):
                opt.step()
        oracle.after()
        assert opt.param_groups[0]["lr"] == target      # restored after the step
    got, want = monitor.to_dataframe(), oracle.frame()
    _check(got, want)
    np.testing.assert_allclose(got["lr"], want["sgd_lr"], rtol=1e-5)
    assert (want["sgd_lr"] < 0.5 * target).all()        # the recorded lr was dampened
    assert not got["skipped"].any() and got["valid"].all()


def test_lr_of_a_wrapper_optimizer_is_read_from_its_inner_optimizer() -> None:
    class Wrapper:
        def __init__(self, inner: torch.optim.Optimizer) -> None:
            self.optimizer = inner

        @property
        def param_groups(self):
            return self.optimizer.param_groups

        def step(self) -> None:
            saved = self.param_groups[0]["lr"]
            self.param_groups[0]["lr"] = saved / 4       # changes the lr inside step()
            self.optimizer.step()
            self.param_groups[0]["lr"] = saved

    model, x, y = _setup()
    opt = Wrapper(torch.optim.SGD(model.parameters(), lr=0.2))
    monitor = ELRMonitor(model, opt)
    oracle = _Oracle(model, monitor.names)
    _train_watched(model, opt, monitor, oracle, x, y, 2)
    got = monitor.to_dataframe()
    np.testing.assert_allclose(got["lr"], oracle.frame()["sgd_lr"], rtol=1e-5)
    np.testing.assert_allclose(got["lr"], 0.05)


# --------------------------------------------------------------------------- GradScaler


def test_grad_scaler_skipped_step_is_recorded_and_does_not_raise() -> None:
    model, x, y = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    monitor = ELRMonitor(model, opt, sync_every=2, scaler=scaler, names=_with_head(model))
    oracle = _Oracle(model, monitor.names)
    skip_at = 1
    for step in range(4):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        if step == 0:
            with pytest.raises(RuntimeError, match=re.escape(
                    "GradScaler: call scaler.unscale_(optimizer) before "
                    "monitor.before_step(loss); the gradients are still multiplied by the loss "
                    "scale")):
                monitor.before_step(loss)
        if step == skip_at:
            model.stem.conv.weight.grad[0, 0, 0, 0] = float("inf")
        scaler.unscale_(opt)
        oracle.before(step)
        with monitor.step(loss):
            scaler.step(opt)
        scaler.update()
        oracle.after()
    monitor.close()                                     # nothing to report: no raise
    got, want = monitor.to_dataframe(), oracle.frame()
    by_step = got.groupby("step")
    assert by_step["skipped"].all().tolist() == [False, True, False, False]
    assert by_step["valid"].all().tolist() == [True, False, True, True]
    skipped = got[got["step"] == skip_at]
    assert (skipped["update_elr"] == 0).all() and (want[want["step"] == skip_at]
                                                    ["update_elr"] == 0).all()
    ok = got["step"] != skip_at
    _check(got[ok].reset_index(drop=True), want[ok.to_numpy()].reset_index(drop=True))
    assert scaler.get_scale() == 2.0**9                 # the scaler did skip one step


# --------------------------------------------------------------------------- NaN / close


def test_short_run_non_finite_is_surfaced_at_close_and_save(tmp_path) -> None:
    model, x, y = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    names = ["stem.conv.weight", "stage1.block0.conv1.weight"]
    message = ("non-finite values at step 1: 1 layer(s) 'stage1.block0.conv1.weight' (first: "
               "grad_norm, inner product, update_norm). The 3 steps recorded so far (up to step "
               "2) are kept, valid=False from step 1 on; see ELRMonitor.to_dataframe()")

    def run(monitor: ELRMonitor) -> None:
        for step in range(3):                           # shorter than sync_every
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            if step == 1:
                model.stage1.block0.conv1.weight.grad[0, 0, 0, 0] = float("nan")
            with monitor.step(loss):
                opt.step()

    saved = {k: v.clone() for k, v in model.state_dict().items()}
    monitor = ELRMonitor(model, opt, names=names, sync_every=50)
    run(monitor)
    frame = monitor.to_dataframe()                      # flushes, does not raise
    assert frame.groupby("step")["valid"].all().tolist() == [True, False, False]
    with pytest.raises(NonFiniteError, match=re.escape(message)):
        monitor.close()
    monitor.close()                                     # idempotent, reported once

    model.load_state_dict(saved)
    again = ELRMonitor(model, opt, names=names, sync_every=50)
    run(again)
    path = tmp_path / "elr.csv"
    with pytest.raises(NonFiniteError, match=re.escape(message)):
        again.save(str(path))
    loaded = pd.read_csv(path)
    assert loaded.groupby("step")["valid"].all().tolist() == [True, False, False]

    model.load_state_dict(saved)
    with pytest.raises(NonFiniteError, match=re.escape(message)), \
            ELRMonitor(model, opt, names=names, sync_every=50) as ctx:
        run(ctx)
    with pytest.raises(RuntimeError, match=re.escape("the monitor is closed")):
        ctx.before_step(None)


# --------------------------------------------------------------------------- precision


def test_cos_wg_resolves_1e_6_on_a_2_4m_element_layer() -> None:
    d_in = d_out = 1550                                 # 2 402 500 weights
    model = nn.Sequential(nn.Linear(d_in, d_out, bias=False), nn.BatchNorm1d(d_out))
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(d_out, d_in, generator=gen, dtype=torch.float64)
    g = torch.randn(d_out, d_in, generator=gen, dtype=torch.float64)
    g -= (g * w).sum() / (w * w).sum() * w              # orthogonal to w
    true_cos = 1.1e-6
    g = g / g.norm() * (1 - true_cos**2) ** 0.5 + true_cos * w / w.norm()
    weight = model[0].weight
    with torch.no_grad():
        weight.copy_(w.float())
    weight.grad = (0.01 * g).float()
    # oracle: float64 arithmetic on the float32 values the monitor sees
    w32, g32 = weight.detach().double(), weight.grad.double()
    oracle = float((w32 * g32).sum() / (w32.norm() * g32.norm()))
    assert abs(oracle - true_cos) < 1e-9
    opt = torch.optim.SGD([weight], lr=0.1)
    monitor = ELRMonitor(model, opt)
    assert monitor.names == ["0.weight"]
    with monitor.step(torch.tensor(1.0)):
        opt.step()
    row = monitor.to_dataframe().iloc[0]
    assert abs(row["cos_wg"] - oracle) < 1e-8           # 1.4e-4 before issue 10
    np.testing.assert_allclose(row["sigma2"], float((w32 * w32).sum()), rtol=1e-12)
    np.testing.assert_allclose(row["grad_norm"], float(g32.norm()), rtol=1e-12)


# --------------------------------------------------------------------------- optimizers


def test_adamw_and_gradient_accumulation_match_brute_force() -> None:
    model, x, y = _setup(seed=2, batch=8)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.1)
    monitor = ELRMonitor(model, opt, sync_every=3, names=_with_head(model))
    oracle = _Oracle(model, monitor.names)
    micro = 2
    for step in range(4):
        opt.zero_grad(set_to_none=True)
        for k in range(micro):                          # accumulate two micro-batches
            part = slice(4 * k, 4 * k + 4)
            (F.cross_entropy(model(x[part]), y[part]) / micro).backward()
        oracle.before(step)
        with monitor.step(None):
            opt.step()
        oracle.after()
    got, want = monitor.to_dataframe(), oracle.frame()
    assert monitor.step_count == 4 and got["loss"].isna().all() and got["valid"].all()
    _check(got, want)
    np.testing.assert_allclose(got["lr"], 3e-3)
    np.testing.assert_allclose(got["elr"], 3e-3 * want["grad_norm"] / want["sigma2"] ** 0.5,
                               rtol=1e-6)


# --------------------------------------------------------------------------- frozen layers


def test_frozen_and_unoptimized_parameters_are_skipped_with_a_note() -> None:
    model, x, y = _setup()
    names = _with_head(model)
    model.stem.conv.weight.requires_grad_(False)
    rest = [p for n, p in model.named_parameters()
            if p.requires_grad and n != "stage1.block0.conv1.weight"]
    opt = torch.optim.SGD(rest, lr=0.1, momentum=0.9, weight_decay=1e-3)
    with pytest.warns(UserWarning, match=re.escape(
            "ELRMonitor: not tracking 2 frozen parameter(s): 1 with requires_grad=False "
            "('stem.conv.weight'); 1 not optimized by SGD ('stage1.block0.conv1.weight')")):
        monitor = ELRMonitor(model, opt, sync_every=2, names=names)
    assert monitor.skipped_params == ["stem.conv.weight", "stage1.block0.conv1.weight"]
    assert "stem.conv.weight" not in monitor.names and len(monitor.names) == 8
    oracle = _Oracle(model, monitor.names)
    _train_watched(model, opt, monitor, oracle, x, y, 3)
    _check(monitor.to_dataframe(), oracle.frame())

    frozen = nn.Sequential(nn.Linear(3, 4, bias=False), nn.BatchNorm1d(4))
    frozen[0].weight.requires_grad_(False)
    with pytest.raises(ValueError, match=re.escape(
            "ELRMonitor: no parameter left to track, all 1 frozen parameter(s): 1 with "
            "requires_grad=False ('0.weight')")):
        ELRMonitor(frozen, torch.optim.SGD(frozen.parameters(), lr=0.1))


# --------------------------------------------------------------------------- torch.compile


def test_torch_compile_model_matches_brute_force() -> None:
    """backend="eager": dynamo traces the model (the part that used to fail), without the
    minutes inductor takes to compile kernels on this CPU."""
    model, x, y = _setup(seed=3)
    compiled = torch.compile(model, backend="eager")
    opt = torch.optim.SGD(compiled.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    monitor = ELRMonitor(compiled, opt, sync_every=2)
    assert monitor.names and all(n.startswith("_orig_mod.") for n in monitor.names)
    assert monitor.names == ["_orig_mod." + n for n in ELRMonitor(model, opt).names]
    oracle = _Oracle(compiled, monitor.names)
    _train_watched(compiled, opt, monitor, oracle, x, y, 3)
    got = monitor.to_dataframe()
    _check(got, oracle.frame(), strict_cos=False)       # names are prefixed _orig_mod.
    np.testing.assert_allclose(got["lr"], 0.1)


def test_log_fn_receives_per_step_summaries_at_each_sync() -> None:
    model, x, y = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    calls: list[tuple[int, dict]] = []
    monitor = ELRMonitor(model, opt, sync_every=2, log_fn=lambda m, s: calls.append((s, m)))
    for step in range(3):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        with monitor.step(loss):
            opt.step()
        assert len(calls) == (2 if step >= 1 else 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        monitor.close()
    assert [s for s, _ in calls] == [0, 1, 2]
    frame = monitor.to_dataframe()
    for step, metrics in calls:
        elr = frame[frame["step"] == step]["elr"].to_numpy()
        assert metrics["elr/spread"] == pytest.approx(elr.max() / elr.min(), rel=1e-12)
        assert metrics["elr/q50"] == pytest.approx(float(np.median(elr)), rel=1e-12)
        assert metrics["skipped"] == 0.0 and metrics["valid"] == 1.0
        assert metrics["loss"] == pytest.approx(frame[frame["step"] == step]["loss"].iloc[0])


def test_constrained_elr_wrapper_is_accepted_and_matches_brute_force() -> None:
    from normdyn.optim import ConstrainedELR

    model, x, y = _setup(seed=4)
    inner = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=5e-4)
    constrained = ConstrainedELR(inner, model, target_elr=0.02)
    monitor = ELRMonitor(model, constrained, sync_every=2, names=_with_head(model))
    oracle = _Oracle(model, monitor.names)
    _train_watched(model, constrained, monitor, oracle, x, y, 3)
    got = monitor.to_dataframe()
    _check(got, oracle.frame())
    np.testing.assert_allclose(got["lr"], 0.5)
    assert not got["skipped"].any() and got["valid"].all()


UNSCALE_MESSAGE = ("GradScaler: call scaler.unscale_(optimizer) before monitor.before_step(loss); "
                   "the gradients are still multiplied by the loss scale")


@pytest.mark.parametrize("unscale", ["wrapper", "inner"])
def test_constrained_elr_under_grad_scaler_unscaled_through_either_object(unscale) -> None:
    """``scaler.unscale_(constrained)`` -- what ``scaler.step(constrained)`` pairs with --
    satisfies the monitor's check as well as ``scaler.unscale_(inner)``; the recorded
    gradients are the scaled ones divided by the scale by hand, a skipped step is flagged."""
    import math

    from normdyn.optim import ConstrainedELR

    scale = 2.0**12
    model, x, y = _setup(seed=7)
    inner = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=5e-4)
    constrained = ConstrainedELR(inner, model, target_elr=0.02)
    scaler = torch.amp.GradScaler("cpu", init_scale=scale)
    monitor = ELRMonitor(model, constrained, sync_every=2, scaler=scaler,
                         names=_with_head(model))
    params = dict(model.named_parameters())
    skip_at = 2
    hand: list[dict[str, torch.Tensor]] = []
    oracle = _Oracle(model, monitor.names)
    for step in range(4):
        constrained.zero_grad()
        loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        if step == 0:                                   # not unscaled yet: refused
            with pytest.raises(RuntimeError, match=re.escape(UNSCALE_MESSAGE)):
                monitor.before_step(loss)
        if step == skip_at:
            model.stage1.block0.conv1.weight.grad[0, 0, 0, 0] = float("inf")
        now = scaler.get_scale()                        # halved after the skipped step
        hand.append({n: params[n].grad.detach().clone() / now for n in monitor.names})
        scaler.unscale_(constrained if unscale == "wrapper" else inner)
        oracle.before(step)
        with monitor.step(loss):                        # no raise: unscaled is unscaled
            scaler.step(constrained)
        scaler.update()
        oracle.after()
    monitor.close()
    got, want = monitor.to_dataframe(), oracle.frame()
    assert got.groupby("step")["skipped"].all().tolist() == [False, False, True, False]
    assert constrained.step_count == 3
    ok = (got["step"] != skip_at).to_numpy()
    _check(got[ok].reset_index(drop=True), want[ok].reset_index(drop=True))
    # p.grad the monitor read is the scaled gradient divided by the scale by hand
    for step in (0, 1, 3):
        rows = got[got["step"] == step]
        for name, norm in zip(rows["layer"], rows["grad_norm"], strict=True):
            ref = torch.linalg.vector_norm(hand[step][name].double()).item()
            assert norm == pytest.approx(ref, rel=1e-12), (step, name)
    chord = 2 * math.sin(math.atan(0.02) / 2)          # a fixed-norm turn by arctan(0.02)
    turned = ok & (got["layer"] != HEAD).to_numpy()    # the head takes the inner step
    np.testing.assert_allclose(got[turned]["update_elr"], chord, rtol=1e-5)
    assert (got[~ok]["update_elr"] == 0).all()
    assert scaler.get_scale() == scale / 2              # the scaler did skip one step


def test_version_1_state_dict_is_converted() -> None:
    """v1 stored sum max(p, 0) and sum |p| of p = w * g instead of <w, g>."""
    model, x, y = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    monitor = ELRMonitor(model, opt)
    for _ in range(2):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        with monitor.step(loss):
            opt.step()
    state = monitor.state_dict()
    n, raw = len(monitor.names), state["raw"].numpy()
    dot = raw[:, 2 * n: 3 * n]
    abs_sum = np.abs(dot) + 5.0                 # any sum |p| >= |<w, g>|
    pos_sum = (abs_sum + dot) / 2               # then 2 pos - abs = <w, g>
    v1 = np.concatenate([raw[:, : 2 * n], pos_sum, abs_sum, raw[:, 3 * n:]], axis=1)
    old = {"format": "normdyn.ELRMonitor/1", "names": state["names"], "step": 2,
           "track_update": True, "steps": state["steps"], "lr": state["lr"],
           "raw": torch.from_numpy(v1)}
    resumed = ELRMonitor(model, opt)
    resumed.load_state_dict(old)
    pd.testing.assert_frame_equal(resumed.to_dataframe(), monitor.to_dataframe())


def test_eval_mode_batchnorm_layers_are_not_monitored() -> None:
    """A frozen (eval-mode) BatchNorm does not normalize: the conv before it is left out
    by detection (rescaling oracle in test_detection.py), the others match brute force."""
    model, x, y = _setup(seed=5)
    all_names = ELRMonitor(model, torch.optim.SGD(model.parameters(), lr=0.1)).names
    model.stem.bn.eval()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    monitor = ELRMonitor(model, opt, sync_every=2)
    assert monitor.names == [n for n in all_names if n != "stem.conv.weight"]
    oracle = _Oracle(model, monitor.names)
    _train_watched(model, opt, monitor, oracle, x, y, 2)
    _check(monitor.to_dataframe(), oracle.frame(), strict_cos=False)  # names asserted above


def test_hookless_optimizer_like_object_reads_lr_at_before_step() -> None:
    """Duck-typed optimizer without step hooks: lr read at before_step, never 'skipped'."""
    class ManualSGD:
        def __init__(self, params, lr: float) -> None:
            self.param_groups = [{"params": list(params), "lr": lr}]

        def step(self) -> None:
            with torch.no_grad():
                for p in self.param_groups[0]["params"]:
                    if p.grad is not None:
                        p.add_(p.grad, alpha=-self.param_groups[0]["lr"])

    model, x, y = _setup(seed=6)
    opt = ManualSGD(model.parameters(), lr=0.07)
    monitor = ELRMonitor(model, opt, names=_with_head(model))
    oracle = _Oracle(model, monitor.names)
    _train_watched(model, opt, monitor, oracle, x, y, 2)
    got = monitor.to_dataframe()
    _check(got, oracle.frame())
    np.testing.assert_allclose(got["lr"], oracle.frame()["sgd_lr"], rtol=1e-5)
    assert not got["skipped"].any()
