r"""``normdyn simulate {discrete,continuous,drift}``: run a norm-level simulation.

* ``discrete`` -- :func:`normdyn.simulate.simulate_discrete`, the map
  :math:`\sigma^2_{t+1} = \sigma^2_t + \eta_t^2c^2/\sigma^2_t` (momentum/weight decay: the
  first-order model), vectorized over an lr sweep;
* ``continuous`` -- gradient flow: the closed form :math:`E(t) = E_0/\sqrt{1+2E_0^2t}` at
  constant lr, the ODE route with a schedule, momentum or weight decay;
* ``drift`` -- :func:`normdyn.simulate.drift.simulate_drift`, weight vectors under random
  gradients of the modeled norm (one run per lr of the sweep).

The initial state comes from ``--elr`` (ELRs at the lr; with an lr sweep, at lr 1),
``--sigma2`` with ``--c``, or ``--layers`` with ``--spread``.  ``--lr`` is one value or a
log-spaced sweep ``start:stop:num``.  ``--json`` prints one compact JSON document (fields
in ``--help`` and :meth:`TrajectorySummary.to_dict`): per run the spread and flips per
recorded step and the final per-layer ELRs and update ELRs; the per-step ELR quantiles
with ``--quantiles`` (or a recorded frame), and for recorded runs the per-step per-layer
ELRs; plain floats (a spread beyond float64 is ``null``, with a finite ``log10_spread``); ``--out`` writes the tidy frame (``.csv``/``.parquet``,
atomically).  Bad input exits with code 2 and one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

__all__ = ["add_parser", "run", "parse_lr"]

#: Above this many recorded (step, run, layer) values the discrete mode keeps summaries only.
FRAME_LIMIT = 2_000_000
#: Above this many layer-steps a progress bar is shown (unless --no-progress).
PROGRESS_LIMIT = 10**8


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate", help="simulate the norm-level model (discrete, continuous, drift)",
        description="Simulate per-layer weight norms and ELRs under SGD; see THEORY.md §2-5.")
    p.add_argument("mode", choices=("discrete", "continuous", "drift"), help="which simulator")
    g = p.add_argument_group("initial state (exactly one way)")
    g.add_argument("--elr", metavar="LIST",
                   help="comma list of initial ELRs (at --lr; at lr 1 for an lr sweep)")
    g.add_argument("--sigma2", metavar="LIST", help="comma list of squared weight norms")
    g.add_argument("--c", metavar="LIST", help="comma list of base gradients |grad w|*|w|")
    g.add_argument("--layers", type=int, metavar="N", help="number of layers (with --spread)")
    g.add_argument("--spread", type=float, metavar="S",
                   help="initial ELR spread max/min, log-uniform (with --layers)")
    p.add_argument("--lr", default="1", metavar="LR|START:STOP:NUM",
                   help="learning rate, or a log-spaced sweep start:stop:num (default 1)")
    p.add_argument("--steps", type=int, default=100, help="number of steps (default 100)")
    p.add_argument("--momentum", type=float, default=0.0, help="heavy-ball momentum in [0, 1)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="coupled weight decay >= 0")
    p.add_argument("--schedule", default="constant",
                   help="constant | linear_warmup | exponential_warmup | critical_warmup | "
                        "step_decay (default constant)")
    p.add_argument("--warmup-steps", type=int, metavar="N", help="linear_warmup length")
    p.add_argument("--tau", type=float, help="exponential_warmup time constant (default 1000)")
    p.add_argument("--milestones", metavar="LIST", help="step_decay milestone steps")
    p.add_argument("--gamma", type=float, help="step_decay factor (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of --layers/--spread and of drift")
    p.add_argument("--elements", metavar="LIST", default="1000",
                   help="drift: elements per layer, one value or a comma list (default 1000)")
    p.add_argument("--projected", action=argparse.BooleanOptionalAction, default=True,
                   help="drift: project gradients orthogonal to w (default on)")
    p.add_argument("--record", default=None, metavar="all|summary|K",
                   help="discrete: record every step, summaries only, or every K-th step "
                        f"(default: all up to {FRAME_LIMIT} values, else summary)")
    p.add_argument("--engine", default="auto", choices=("auto", "numba", "numpy"),
                   help="discrete engine (default auto: numba if installed)")
    p.add_argument("--out", metavar="FILE", help="write the tidy frame (.csv or .parquet)")
    p.add_argument("--json", action="store_true",
                   help="print one compact JSON document on stdout: mode, steps, layers, lr, "
                        "schedule, momentum, weight_decay, step (recorded steps) and per run: "
                        "lr, seed, spread per recorded step, flips {step, count} where "
                        "non-zero, total_flips, final_elr per layer; final_update_elr where "
                        "it differs, log10_spread where spread is null, lr_t where the "
                        "schedule changes the lr; with --quantiles elr_quantiles and "
                        "final_sigma2; with a recorded frame (--record all|K) "
                        "elr_step, elr, update_elr per recorded step and layer")
    p.add_argument("--quantiles", action="store_true",
                   help="--json: add the per-step ELR quantiles over layers of every run")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help=f"progress bar on stderr (default: above {PROGRESS_LIMIT:.0e} layer-steps)")
    p.set_defaults(func=run)


def parse_lr(text: str) -> np.ndarray:
    """``"0.1"`` -> ``[0.1]``; ``"1e-3:1:7"`` -> 7 log-spaced lrs from 1e-3 to 1."""
    from normdyn._checks import check_int, check_positive

    parts = str(text).split(":")
    try:
        nums = [float(p) for p in parts]
    except ValueError as exc:
        raise ValueError(f"lr must be a number or start:stop:num, got {text!r}") from exc
    if len(parts) == 1:
        return np.atleast_1d(check_positive("lr", nums[0]))
    if len(parts) != 3 or not nums[2].is_integer():
        raise ValueError(f"lr must be a number or start:stop:num with an integer num, got {text!r}")
    start, stop = check_positive("lr", nums[:2])
    if not np.isfinite(nums[2]):
        raise ValueError(f"lr sweep num must be a finite integer, got {text!r}")
    num = check_int("lr sweep num", int(nums[2]), minimum=1)
    _fits("lr sweep num", num, 8 * num)
    if num > 1 and start == stop:
        raise ValueError(f"lr: a sweep of {num} lrs needs start != stop, got {text!r}")
    return np.logspace(np.log10(start), np.log10(stop), num)


def _memory() -> int:
    """Physical memory of this machine in bytes (``2**40`` where it cannot be read)."""
    import os

    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return 1 << 40


def _fits(name: str, value: int, n_bytes: int) -> None:
    """Refuse, naming ``name``, a size whose arrays (about ``n_bytes``) exceed physical memory."""
    limit = _memory()
    if n_bytes > limit:
        raise ValueError(f"{name}: {value} needs about {n_bytes / 2**30:.3g} GiB of arrays, more "
                         f"than this machine's {limit / 2**30:.3g} GiB")


def _schedule_kw(args: argparse.Namespace) -> dict[str, Any]:
    from normdyn.simulate.initial import parse_list

    kw: dict[str, Any] = {}
    if args.warmup_steps is not None:
        kw["n_steps"] = args.warmup_steps
    if args.tau is not None:
        kw["tau"] = args.tau
    if args.milestones is not None:
        kw["milestones"] = [int(m) if float(m).is_integer() else m
                            for m in parse_list("milestones", args.milestones)]
    if args.gamma is not None:
        kw["gamma"] = args.gamma
    return kw


def _record(text: str | None) -> str | int | None:
    if text is None or text in ("all", "summary"):
        return text
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"record must be 'all', 'summary' or an integer k >= 1, got {text!r}") from None


def run(args: argparse.Namespace) -> int:
    from normdyn._checks import check_in_range, check_int, check_nonnegative
    from normdyn._io import atomic_write_frame
    from normdyn.simulate import TrajectorySummary, make_schedule
    from normdyn.simulate.initial import initial_state, parse_list

    lrs = parse_lr(args.lr)
    steps = check_int("steps", args.steps, minimum=0)
    if args.layers is not None:
        layers = check_int("layers", args.layers, minimum=1)
        _fits("layers", layers, 64 * layers * lrs.size)
    momentum = float(check_in_range("momentum", args.momentum, 0.0, 1.0))
    weight_decay = float(check_nonnegative("weight_decay", args.weight_decay))
    state = initial_state(
        elr=parse_list("elr", args.elr), sigma2=parse_list("sigma2", args.sigma2),
        c=parse_list("c", args.c), layers=args.layers, spread=args.spread,
        lr=float(lrs[0]) if lrs.size == 1 else 1.0, seed=args.seed)
    kw = _schedule_kw(args)
    schedule = make_schedule(args.schedule, lrs, **kw)
    record = _record(args.record)
    # State of every run and layer (about 8 arrays) and the per-step summaries (about 10).
    _fits("layers", state.layers, 64 * state.layers * lrs.size)
    _fits("steps", steps, 80 * (steps + 1) * lrs.size)
    layer_steps = lrs.size * state.layers * max(steps, 1)
    progress = args.progress if args.progress is not None else layer_steps >= PROGRESS_LIMIT

    frame = None
    if args.mode == "discrete":
        from normdyn.simulate import simulate_discrete

        if record is None:
            small = (steps + 1) * lrs.size * state.layers <= FRAME_LIMIT
            record = "all" if small else "summary"
        result = simulate_discrete(state.sigma2_0, state.c, lrs, steps, schedule=schedule,
                                   momentum=momentum, weight_decay=weight_decay, record=record,
                                   progress=progress, engine=args.engine)
        if isinstance(result, TrajectorySummary):
            summary = result
        else:
            frame = result
            summary = simulate_discrete(state.sigma2_0, state.c, lrs, steps, schedule=schedule,
                                        momentum=momentum, weight_decay=weight_decay,
                                        record="summary", engine=args.engine)
    elif args.mode == "continuous":
        frame = _continuous(state, lrs, steps, schedule, momentum, weight_decay)
        summary = TrajectorySummary.from_frame(frame)
    else:
        frame = _drift(args, state, lrs, steps, kw, momentum, weight_decay, record)
        summary = TrajectorySummary.from_frame(frame)

    if args.out:
        out = frame if frame is not None else summary.to_frame()
        path = atomic_write_frame(args.out, out)
        print(f"wrote {path} ({len(out)} rows)", file=sys.stderr)
    if args.json:
        payload = {
            "mode": args.mode, "steps": steps, "layers": state.layers, "lr": lrs.tolist(),
            "schedule": repr(schedule), "momentum": momentum, "weight_decay": weight_decay,
            **summary.to_dict(quantiles=args.quantiles or frame is not None),
        }
        if frame is not None:
            _add_elr(payload, frame)
        sys.stdout.write(json.dumps(payload, separators=(",", ":"), allow_nan=False))
        sys.stdout.write("\n")
    else:
        shown = np.unique(np.linspace(0, summary.runs - 1, min(summary.runs, 10)).round())
        if shown.size < summary.runs:
            print(f"{summary.runs} runs; showing {shown.size} (use --json or --out for all)")
        log_spread = summary.log10_spread
        for r in shown.astype(int):
            first = _spread_text(summary.spread[0, r], log_spread[0, r])
            last = _spread_text(summary.spread[-1, r], log_spread[-1, r])
            print(f"lr {summary.lr[r]:.6g} seed {summary.seed[r]}: spread {first} -> {last} over "
                  f"{summary.step[-1]} steps, {int(summary.total_flips[r])} flips")
    return 0


def _spread_text(spread: float, log10_spread: float) -> str:
    """``1.5`` or, where the ratio exceeds float64, ``10^600`` (from ``log10_spread``)."""
    return f"{spread:.6g}" if np.isfinite(spread) else f"10^{log10_spread:.6g}"


def _continuous(state: Any, lrs: np.ndarray, steps: int, schedule: Any, momentum: float,
                weight_decay: float):
    from normdyn.simulate import continuous_closed_form, continuous_ode

    if schedule.state_dependent:
        raise ValueError(f"schedule: {schedule.name!r} needs the discrete model "
                         "(it reads the state at each step)")
    t = np.arange(steps + 1, dtype=np.float64)
    if schedule.name == "constant" and momentum == 0.0 and weight_decay == 0.0:
        return continuous_closed_form(state.sigma2_0, state.c, lrs, t)
    return continuous_ode(state.sigma2_0, state.c, schedule, (0.0, float(steps)), t,
                          momentum=momentum, weight_decay=weight_decay)


def _drift(args: argparse.Namespace, state: Any, lrs: np.ndarray, steps: int,
           kw: dict[str, Any], momentum: float, weight_decay: float, record: Any):
    import pandas as pd

    from normdyn.simulate import make_schedule
    from normdyn.simulate.drift import simulate_drift  # lazy: its own engine and module
    from normdyn.simulate.initial import parse_list

    if steps < 1:
        raise ValueError(f"steps must be >= 1 for drift, got {steps}")
    if record == "summary":
        raise ValueError("record: drift records a frame; use 'all' or an integer k")
    raw = parse_list("elements", args.elements)
    if not np.all(raw == np.round(raw)):
        raise ValueError(f"elements must be integers, got {args.elements!r}")
    if not np.all(np.isfinite(raw)) or np.any(np.abs(raw) > 2**62):
        raise ValueError(f"elements must be integers, got {args.elements!r}")
    elements = raw.astype(np.int64)
    if elements.size == 1:
        elements = np.full(state.layers, int(elements[0]))
    if elements.size != state.layers:
        raise ValueError(f"elements must have one value or {state.layers} (one per layer), "
                         f"got {elements.size}")
    if np.any(elements >= 1):  # weights, gradients, buffers and temporaries: about 8 copies
        total = int(elements[elements >= 1].sum())
        _fits("elements", total, 64 * total)
    frames = []
    for lr in lrs:
        frame = simulate_drift(state.sigma2_0, state.c, elements,
                               make_schedule(args.schedule, float(lr), **kw), steps,
                               momentum=momentum, weight_decay=weight_decay,
                               projected=args.projected, seed=args.seed,
                               record_every=1 if record in (None, "all") else int(record))
        frame.insert(frame.columns.get_loc("lr") + 1, "lr_t", frame["lr"].to_numpy())
        frame["lr"] = float(lr)  # the run's base lr; lr_t is the lr used at the step
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _add_elr(payload: dict[str, Any], frame: Any) -> None:
    """Per run, the recorded steps and per-layer ELRs ``elr[i][layer]`` at ``elr_step[i]``."""
    runs = payload["runs"]
    groups = frame.groupby(["seed", "lr"], sort=False)
    for entry, (_, g) in zip(runs, groups, strict=True):
        g = g.sort_values(["step", "layer"], kind="stable")
        n_layers = g["layer"].nunique()
        entry["elr_step"] = g["step"].to_numpy()[::n_layers].tolist()
        entry["elr"] = g["elr"].to_numpy(np.float64).reshape(-1, n_layers).tolist()
        entry["update_elr"] = g["update_elr"].to_numpy(np.float64).reshape(-1, n_layers).tolist()
