"""Evaluate CriticalLRWarmup and ConstrainedELR on small CPU problems (digits, no download).

Three experiments, each written as a tidy CSV under ``--out-dir`` (atomically):

(a) ``warmup_spread.csv`` (+ ``warmup_spread_steps.csv``, per step): ELR spread of a deep
    plain BN MLP (``plain_mlp(30, 32)`` on digits, plain SGD, batch 64, target lr 1.0)
    over the first ``--warmup-steps`` steps under

    * ``none`` -- constant lr;
    * ``linear5`` / ``linear50`` -- ``lr_t = target*min(1, (t+1)/n)``;
    * ``exp20`` -- the exponential warm-up ``lr_t = target*(1 - exp(-(t+1)/tau))`` with
      ``tau = 20`` steps.  The "untuned" rule ``tau = 1/(1-beta2)`` of Ma & Yarats needs
      Adam's beta2; for SGD there is none, so tau is a documented choice (the lr is within
      ``e^-10`` of the target after 200 steps);
    * ``critical`` -- :class:`normdyn.CriticalLRWarmup` (ends for good once eta* >= target);
    * ``critical_guard`` -- the same with ``guard=True`` (caps whenever eta* < target).

    The spread at a step is ``max/min`` over the scale-invariant layers of the gradient ELR
    ``lr_t*|g|/|w|`` at the lr used (for one param group this is ``a_max/a_min``).  Step 0
    is the shared initial state (the same for every schedule) and is reported separately;
    median and max are over steps ``1..steps``.  Real runs also give the final training
    loss (mean of the last 20 batches) and the test accuracy.  The same schedules are run
    in the norm-level simulator :func:`normdyn.simulate.discrete.simulate_discrete`
    (constant-c model) from the real run's measured initial ``sigma2 = |w|^2`` and
    ``c = |g||w|`` (seed 0).  In the constant-c model eta* only grows, so ``critical`` and
    ``critical_guard`` coincide there (the simulator's schedule never latches).

(b) ``high_lr.csv``: ResNet-20 NoShort (width 4, no BN affine, 1-channel 8x8 digits),
    SGD momentum 0.9, weight decay 5e-4, at lrs where plain SGD stalls.  The classifier
    (the one untracked layer) has its own group at lr 0.1 in every run, so the comparison
    is about the scale-invariant layers; a ``head_same_lr`` row set puts it at the high lr
    too.  Methods: ``sgd`` (plain), ``celr_derived`` (:class:`normdyn.ConstrainedELR`, which
    turns every tracked layer by ``arctan(target)`` per step at fixed norm, with the
    equilibrium angle ``tan(theta) ~ sqrt(2 lr wd/(1+beta))``, i.e. ``target_elr=None``) and
    ``celr_0.02`` (fixed target).  Outcome: ``diverged`` (non-finite loss or mean loss of
    the last 20 batches > 10 ln 10), ``stalled`` (test accuracy < 0.5; chance is 0.1, a
    well-trained run exceeds 0.8), else
    ``trained``.  Test accuracy uses "precise BN": running statistics recomputed from one
    pass over the training set.

(c) ``critical_sweep.csv`` (+ ``critical_sweep_summary.csv``): from one initial state
    (``copy.deepcopy`` of the model) and one batch, one plain SGD step at each of 41 lrs
    log-spaced over eta*/100 .. 100 eta*, then the gradient on the same batch; the measured
    one-step spread is ``max/min`` of ``|g|/|w|`` over the scale-invariant layers.  The
    lr that minimizes it is compared with the predicted ``eta* = critical_lr_of(a0)`` and
    the predicted curve ``one_step_spread(lr, a0)``.

Prints a summary.  About 70 s on an idle 2-core CPU (``--quick``: about 10 s)::

    python benchmarks/evaluate_components.py
    python benchmarks/evaluate_components.py --quick
"""

from __future__ import annotations

import argparse
import copy
import math
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from normdyn._io import atomic_write_frame
from normdyn.layers.detection import find_scale_invariant
from normdyn.optim import ConstrainedELR, CriticalLRWarmup
from normdyn.theory.numeric import critical_lr_of, one_step_spread
from normdyn.validate.data import digits, make_batches
from normdyn.validate.models import plain_mlp, resnet_cifar

DEFAULT_OUT = Path("benchmarks/results")
CHANCE_LOSS = math.log(10.0)
STALLED_BELOW = 0.5  # test accuracy; a trained run reaches > 0.8 on digits (chance 0.1)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT,
                   help=f"directory of the CSVs (default {DEFAULT_OUT})")
    p.add_argument("--quick", action="store_true", help="fewer steps, seeds and lrs")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1: fastest for these tiny models)")
    return p


# --------------------------------------------------------------------------- helpers


def _data() -> dict[str, torch.Tensor]:
    X, y = digits(split="train")
    Xt, yt = digits(split="test")
    return {"X": X, "y": y, "Xt": Xt, "yt": yt}


def _tracked(model: nn.Module) -> list[str]:
    return [layer.param_name for layer in find_scale_invariant(model)]


def _per_unit_elr(model: nn.Module, names: list[str]) -> np.ndarray:
    """``|g|/|w|`` of the named tensors (NaN when a gradient is not finite)."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        g = torch.stack(torch._foreach_norm([params[n].grad for n in names]))
        w = torch.stack(torch._foreach_norm([params[n].detach() for n in names]))
    return (g / w).double().numpy()


def _spread(a: np.ndarray) -> float:
    if not np.all(np.isfinite(a)) or a.min() <= 0:
        return float("nan")
    return float(a.max() / a.min())


def _precise_bn_accuracy(model: nn.Module, data: dict[str, torch.Tensor]) -> float:
    """Test accuracy after recomputing BN running statistics from the training set."""
    model = copy.deepcopy(model)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        model(data["X"])
        model.eval()
        logits = model(data["Xt"])
    if not torch.isfinite(logits).all():
        return float("nan")
    return float((logits.argmax(1) == data["yt"]).float().mean())


def _batches(data: dict[str, torch.Tensor], seed: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    return make_batches(data["X"], data["y"], 64, seed=seed)


# --------------------------------------------------------------------------- (a) warm-up


WARMUP_TARGET = 1.0
EXP_TAU = 20.0


def _schedule_fns(target: float) -> dict[str, Callable[[int], float] | str]:
    return {
        "none": lambda t: target,
        "linear5": lambda t: target * min(1.0, (t + 1) / 5),
        "linear50": lambda t: target * min(1.0, (t + 1) / 50),
        "exp20": lambda t: target * -math.expm1(-(t + 1) / EXP_TAU),
        "critical": "critical",
        "critical_guard": "critical_guard",
    }


def _mlp(seed: int, depth: int) -> nn.Module:
    torch.manual_seed(seed)
    return plain_mlp(depth, 32, 64, 10)


def _warmup_run(name: str, fn: Any, seed: int, steps: int, depth: int,
                data: dict[str, torch.Tensor]) -> tuple[list[dict], dict, tuple]:
    model = _mlp(seed, depth)
    names = _tracked(model)
    opt = torch.optim.SGD(model.parameters(), lr=WARMUP_TARGET)
    warmup = None
    if name.startswith("critical"):
        warmup = CriticalLRWarmup(opt, model, guard=name == "critical_guard")
    batches = _batches(data, seed)
    rows, losses, init = [], [], None
    for t in range(steps + 1):
        x, y = next(batches)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        if init is None:
            params = dict(model.named_parameters())
            w = np.array([float(params[n].detach().norm()) for n in names])
            g = np.array([float(params[n].grad.norm()) for n in names])
            init = (w**2, g * w)
        if warmup is None:
            lr = fn(t)
            opt.param_groups[0]["lr"] = lr
        else:
            try:
                lr = warmup.step()[0]
            except FloatingPointError:  # non-finite gradients: the run diverged
                lr = float("nan")
        a = _per_unit_elr(model, names)
        rows.append({"source": "real", "schedule": name, "seed": seed, "step": t, "lr": lr,
                     "spread": _spread(a), "loss": loss.item()})
        if t == steps or not (math.isfinite(loss.item()) and math.isfinite(lr)):
            break
        losses.append(loss.item())
        opt.step()
    final = {
        "final_loss": float(np.mean(losses[-20:])) if losses else float("nan"),
        "test_acc": _precise_bn_accuracy(model, data),
        "warmup_steps": (None if warmup is None else
                         int(sum(r["lr"] < WARMUP_TARGET for r in rows))),
    }
    return rows, final, init


def _simulated_spreads(init: tuple, steps: int) -> list[dict]:
    try:
        from normdyn.simulate.discrete import simulate_discrete
        from normdyn.simulate.schedules import (
            constant,
            critical_warmup,
            exponential_warmup,
            linear_warmup,
        )
    except ImportError as exc:  # pragma: no cover - the simulator is part of the package
        print(f"  simulator unavailable ({exc}); skipping the simulated column")
        return []
    sigma2_0, c = init
    schedules = {
        "none": constant(WARMUP_TARGET),
        "linear5": linear_warmup(WARMUP_TARGET, 5),
        "linear50": linear_warmup(WARMUP_TARGET, 50),
        "exp20": exponential_warmup(WARMUP_TARGET, tau=EXP_TAU),
        "critical": critical_warmup(WARMUP_TARGET),
        "critical_guard": critical_warmup(WARMUP_TARGET),
    }
    rows = []
    for name, sched in schedules.items():
        frame = simulate_discrete(sigma2_0, c, WARMUP_TARGET, steps, schedule=sched,
                                  engine="numpy")
        per_step = frame.groupby("step", sort=True).agg(lr=("lr_t", "first"),
                                                        spread=("spread", "first"))
        for step, row in per_step.iterrows():
            rows.append({"source": "simulator", "schedule": name, "seed": 0, "step": int(step),
                         "lr": float(row["lr"]), "spread": float(row["spread"]),
                         "loss": float("nan")})
    return rows


def experiment_warmup(data: dict[str, torch.Tensor], quick: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    steps = 60 if quick else 200
    depth = 30
    seeds = (0,) if quick else (0, 1, 2)
    step_rows, finals, init0 = [], [], None
    for name, fn in _schedule_fns(WARMUP_TARGET).items():
        for seed in seeds:
            rows, final, init = _warmup_run(name, fn, seed, steps, depth, data)
            init0 = init if seed == 0 else init0
            step_rows += rows
            finals.append({"source": "real", "schedule": name, "seed": seed, **final})
    step_rows += _simulated_spreads(init0, steps)
    steps_df = pd.DataFrame(step_rows)
    steps_df.insert(0, "depth", depth)
    steps_df.insert(1, "target_lr", WARMUP_TARGET)

    later = steps_df[steps_df["step"] >= 1]
    summary = (later.groupby(["source", "schedule", "seed"], sort=False)["spread"]
               .agg(spread_median="median", spread_max="max",
                    diverged=lambda s: bool(s.isna().any()))
               .reset_index())
    initial = steps_df[steps_df["step"] == 0].set_index(["source", "schedule", "seed"])["spread"]
    summary["spread_step0"] = [initial.loc[tuple(k)] for k in
                               summary[["source", "schedule", "seed"]].to_numpy()]
    at1 = steps_df[steps_df["step"] == 1].set_index(["source", "schedule", "seed"])["spread"]
    summary["spread_step1"] = [at1.loc[tuple(k)] for k in
                               summary[["source", "schedule", "seed"]].to_numpy()]
    fin = pd.DataFrame(finals)
    summary = summary.merge(fin, on=["source", "schedule", "seed"], how="left")
    summary.insert(0, "depth", depth)
    summary.insert(1, "target_lr", WARMUP_TARGET)
    summary.insert(2, "steps", steps)
    return summary, steps_df


# --------------------------------------------------------------------------- (b) high lr


def _resnet(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return resnet_cifar(20, shortcuts=False, width=4, in_channels=1, affine=False)


def _outcome(final_loss: float, acc: float) -> str:
    if not math.isfinite(final_loss) or final_loss > 10 * CHANCE_LOSS:
        return "diverged"
    if not math.isfinite(acc) or acc < STALLED_BELOW:
        return "stalled"
    return "trained"


def _high_lr_run(method: str, lr: float, head_lr: float | None, seed: int, steps: int,
                 data: dict[str, torch.Tensor]) -> dict:
    model = _resnet(seed)
    head = [p for n, p in model.named_parameters() if n.startswith("classifier")]
    body = [p for n, p in model.named_parameters() if not n.startswith("classifier")]
    inner = torch.optim.SGD(
        [{"params": body}, {"params": head, "lr": lr if head_lr is None else head_lr}],
        lr=lr, momentum=0.9, weight_decay=5e-4,
    )
    opt: Any = inner
    if method == "celr_derived":
        opt = ConstrainedELR(inner, model)
    elif method.startswith("celr_"):
        opt = ConstrainedELR(inner, model, float(method.split("_", 1)[1]))
    target = (float(opt.layer_targets()[0]) if isinstance(opt, ConstrainedELR) else None)
    batches = _batches(data, seed)
    losses: list[float] = []
    for _ in range(steps):
        x, y = next(batches)
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            break
        loss.backward()
        opt.step()
    final_loss = float(np.mean(losses[-20:]))
    acc = _precise_bn_accuracy(model, data) if math.isfinite(final_loss) else float("nan")
    return {"method": method, "lr": lr, "head_lr": "same" if head_lr is None else head_lr,
            "seed": seed, "target_elr": target, "steps_run": len(losses),
            "final_loss": final_loss, "test_acc": acc, "outcome": _outcome(final_loss, acc)}


def experiment_high_lr(data: dict[str, torch.Tensor], quick: bool) -> pd.DataFrame:
    steps = 40 if quick else 120
    seeds = (0,) if quick else (0, 1, 2)
    lrs = (1.0, 100.0) if quick else (0.1, 1.0, 10.0, 100.0)
    methods = ("sgd", "celr_derived", "celr_0.02")
    rows = []
    for lr in lrs:
        for method in methods:
            for seed in seeds:
                rows.append(_high_lr_run(method, lr, 0.1, seed, steps, data))
    for lr in (lrs[-1],):
        for method in ("sgd", "celr_0.02"):
            rows.append(_high_lr_run(method, lr, None, 0, steps, data))
    out = pd.DataFrame(rows)
    out.insert(0, "steps", steps)
    return out


# --------------------------------------------------------------------------- (c) eta*


def _sweep(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], n: int) -> pd.DataFrame:
    names = _tracked(model)
    work = copy.deepcopy(model)
    params = dict(work.named_parameters())
    state0 = copy.deepcopy(work.state_dict())
    x, y = batch
    work.zero_grad(set_to_none=True)
    F.cross_entropy(work(x), y).backward()
    g0 = {k: p.grad.detach().clone() for k, p in params.items()}
    a0 = _per_unit_elr(work, names)
    eta_star = critical_lr_of(a0)
    lrs = eta_star * np.logspace(-2, 2, n)
    measured = []
    for lr in lrs:
        work.load_state_dict(state0)
        with torch.no_grad():
            for k, p in params.items():
                p.sub_(float(lr) * g0[k])
        work.zero_grad(set_to_none=True)
        F.cross_entropy(work(x), y).backward()
        measured.append(_spread(_per_unit_elr(work, names)))
    return pd.DataFrame({"lr": lrs, "lr_over_eta_star": lrs / eta_star,
                         "spread_measured": measured,
                         "spread_predicted": one_step_spread(lrs, a0),
                         "eta_star": eta_star, "spread_before": _spread(a0),
                         "layers": len(names)})


def experiment_critical(data: dict[str, torch.Tensor], quick: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    n = 21 if quick else 41
    seeds = (0,) if quick else (0, 1)
    models: dict[str, Callable[[int], nn.Module]] = {
        "mlp30": lambda s: _mlp(s, 30),
        "resnet20_noshort": _resnet,
    }
    if not quick:
        models["resnet20_short"] = lambda s: (torch.manual_seed(s), resnet_cifar(
            20, shortcuts=True, width=4, in_channels=1, affine=False))[1]
    frames = []
    for arch, build in models.items():
        for seed in seeds:
            batch = next(_batches(data, 1000 + seed))
            frame = _sweep(build(seed), batch, n)
            frame.insert(0, "arch", arch)
            frame.insert(1, "seed", seed)
            frames.append(frame)
    sweep = pd.concat(frames, ignore_index=True)
    rows = []
    for (arch, seed), g in sweep.groupby(["arch", "seed"], sort=False):
        finite = g.dropna(subset=["spread_measured"])
        best = finite.loc[finite["spread_measured"].idxmin()]
        at_star = g.iloc[(g["lr_over_eta_star"] - 1).abs().argmin()]
        rows.append({
            "arch": arch, "seed": seed, "layers": int(g["layers"].iloc[0]),
            "eta_star": float(g["eta_star"].iloc[0]),
            "spread_before": float(g["spread_before"].iloc[0]),
            "argmin_lr_measured": float(best["lr"]),
            "argmin_over_eta_star": float(best["lr_over_eta_star"]),
            "min_spread_measured": float(best["spread_measured"]),
            "spread_measured_at_eta_star": float(at_star["spread_measured"]),
            "spread_predicted_at_eta_star": float(at_star["spread_predicted"]),
            "grid_factor": float(g["lr_over_eta_star"].iloc[1] / g["lr_over_eta_star"].iloc[0]),
        })
    return sweep, pd.DataFrame(rows)


# --------------------------------------------------------------------------- main


def _print_table(title: str, frame: pd.DataFrame) -> None:
    print(f"\n{title}")
    with pd.option_context("display.width", 160, "display.max_columns", 30,
                           "display.float_format", lambda v: f"{v:.4g}"):
        print(frame.to_string(index=False))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    out = args.out_dir
    start = time.perf_counter()
    data = _data()

    t0 = time.perf_counter()
    summary, steps_df = experiment_warmup(data, args.quick)
    atomic_write_frame(out / "warmup_spread.csv", summary)
    atomic_write_frame(out / "warmup_spread_steps.csv", steps_df)
    agg = (summary.groupby(["source", "schedule"], sort=False)
           .agg(spread_step1=("spread_step1", "mean"), spread_median=("spread_median", "mean"),
                spread_max=("spread_max", "mean"), final_loss=("final_loss", "mean"),
                test_acc=("test_acc", "mean"), warmup_steps=("warmup_steps", "mean"))
           .reset_index())
    _print_table(f"(a) ELR spread, steps 1..{int(summary['steps'].iloc[0])} (mean over seeds; "
                 f"step-0 spread, seed 0: {summary['spread_step0'].iloc[0]:.4g}) "
                 f"[{time.perf_counter() - t0:.0f}s]", agg)

    t0 = time.perf_counter()
    high = experiment_high_lr(data, args.quick)
    atomic_write_frame(out / "high_lr.csv", high)
    agg = (high.groupby(["head_lr", "lr", "method"], sort=False)
           .agg(target_elr=("target_elr", "first"), final_loss=("final_loss", "mean"),
                test_acc=("test_acc", "mean"),
                outcomes=("outcome", lambda s: ",".join(sorted(set(s)))))
           .reset_index())
    _print_table(f"(b) high lrs, ResNet-20 NoShort [{time.perf_counter() - t0:.0f}s]", agg)

    t0 = time.perf_counter()
    sweep, crit = experiment_critical(data, args.quick)
    atomic_write_frame(out / "critical_sweep.csv", sweep)
    atomic_write_frame(out / "critical_sweep_summary.csv", crit)
    _print_table(f"(c) predicted eta* vs measured one-step spread minimizer "
                 f"[{time.perf_counter() - t0:.0f}s]", crit)

    print(f"\nwrote {out}/{{warmup_spread,warmup_spread_steps,high_lr,critical_sweep,"
          f"critical_sweep_summary}}.csv in {time.perf_counter() - start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
