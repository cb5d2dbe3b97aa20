"""``normdyn validate``: train a network, record its weight dynamics, compare with theory.

Writes into ``--out``: the per-step table, ``metrics.csv``, ``config.json``,
``checkpoint.pt`` and ``report.json`` / ``report.md`` (see
:mod:`normdyn.validate.runs` and :mod:`normdyn.validate.compare`), then prints a short
summary.  Re-running with the same arguments resumes from the checkpoint; other
arguments in an existing ``--out`` are refused.

A run whose loss turns NaN or infinite stops at that step: the steps before it are kept
(written atomically), one line on stderr names the step, and the exit code is 1.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "validate", help="train a network and compare its weight dynamics with the theory",
        description="Train a normalized network with the ELR monitor, replay the measured "
                    "base gradients through the norm-level model and write a report.")
    a = p.add_argument
    a("--arch", default="resnet", help="resnet | mlp | transformer (default: resnet)")
    a("--depth", type=int, default=20,
      help="ResNet depth 6n+2, MLP layers or Transformer layers (default: 20)")
    a("--shortcuts", action=argparse.BooleanOptionalAction, default=True,
      help="residual shortcuts of the ResNet (--no-shortcuts: NoShort)")
    a("--norm", default=None, help="batch | layer (default: the architecture's)")
    a("--norm-position", default="post", help="transformer: post | pre (default: post)")
    a("--affine", action=argparse.BooleanOptionalAction, default=True,
      help="affine parameters of the normalization layers")
    a("--width", type=int, default=None, help="base width (default: the architecture's)")
    a("--width-multiplier", type=float, default=1.0)
    a("--data", default="digits",
      help="digits | digits32 | synthetic | fashion-mnist | cifar10 | cifar100 | sequences "
           "(default: digits)")
    a("--data-root", default=None,
      help="directory holding CIFAR or fashion-mnist/ (never downloaded; fashion-mnist "
           "falls back to $NORMDYN_DATA/fashion-mnist, then /usr/share/datasets/fashion-mnist)")
    a("--image-size", type=int, default=None,
      help="fashion-mnist: 14 | 16 | 28 | 32 (area downsampling or zero padding; default 28)")
    a("--n-samples", type=int, default=2048, help="size of the synthetic data sets")
    a("--steps", type=int, default=100)
    a("--batch-size", type=int, default=64)
    a("--lr", type=float, default=0.1)
    a("--schedule", default="constant",
      help="constant | linear_warmup | exponential_warmup | critical_warmup | step_decay")
    a("--schedule-steps", type=int, default=None,
      help="linear warm-up length, exponential warm-up time constant or step-decay "
           "milestone (default: steps/10; steps/2 for step_decay)")
    a("--optimizer", default="sgd", help="sgd | adam")
    a("--momentum", type=float, default=0.0)
    a("--weight-decay", type=float, default=0.0)
    a("--other-lr", type=float, default=None,
      help="cap the lr of the parameters that are not scale invariant at min(lr_t, OTHER_LR)")
    a("--constrained-elr", type=float, default=None, metavar="TARGET",
      help="wrap the optimizer in ConstrainedELR with this lr-independent target ELR")
    a("--decay", default="none",
      help="none | cosine: decay of the lr (and of the ConstrainedELR target) over the run")
    a("--bn-recalibration-batches", type=int, default=None,
      help="training batches of the BatchNorm recalibration before evaluation "
           "(default: RunConfig's)")
    a("--drift", action="store_true",
      help="replace tracked gradients by random Gaussian vectors of the same norm")
    a("--drift-projected", action="store_true",
      help="with --drift: project the random vectors onto the tangent space")
    a("--device", default="auto", help="auto | cpu | cuda (default: auto)")
    a("--seed", type=int, default=0)
    a("--sync-every", type=int, default=50)
    a("--checkpoint-every", type=int, default=100)
    a("--sweep-critical-lr", action="store_true",
      help="at step 0, sweep one SGD step over lrs and compare the spread with theory")
    a("--threads", type=int, default=None,
      help="torch CPU threads (default: torch's own choice); 1 is fastest for tiny models "
           "on a busy machine")
    a("--table-format", default="csv", help="csv | parquet (default: csv)")
    a("--no-progress", action="store_true", help="no progress bar")
    a("--out", default=None, metavar="DIR", help="output directory (required)")
    p.set_defaults(func=run)


def _config(args: argparse.Namespace):
    """The RunConfig of the flags: every field is a flag of the same name (tested)."""
    import dataclasses

    from normdyn.validate.runs import RunConfig

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(RunConfig)}
    if given["bn_recalibration_batches"] is None:
        del given["bn_recalibration_batches"]
    return RunConfig(**given)


def _summary(report: dict, out: Path, seconds: float) -> str:
    from normdyn.validate.compare import _fmt

    rp, cc, sp = report["replay"], report["constant_c_prediction"], report["elr_spread"]
    kind = ("scale-invariant" if report["run"].get("tracked_layers_scale_invariant", True)
            else "tracked (none is scale invariant: every weight matrix)")
    lines = [
        f"{report['run']['steps_recorded']} steps, {report['run']['layers']} {kind} layers, "
        f"{seconds:.1f} s -> {out}",
        f"replay ({rp['model']}): max rel. error {_fmt(rp.get('max_rel_error'))}, median "
        f"{_fmt(rp.get('median_rel_error'))}; float32 level: {_fmt(rp.get('float32_level'))} "
        f"(threshold {_fmt(rp.get('float32_threshold'))})",
    ]
    plain = report.get("replay_plain_sgd_model")
    if plain:
        lines.append(f"  for contrast, plain SGD map: max rel. error "
                     f"{_fmt(plain.get('max_rel_error'))}")
    if cc.get("at_steps"):
        lines.append("constant-c prediction, max rel. error: " + ", ".join(
            f"step {k}: {_fmt(v['max_rel_error'])}" for k, v in cc["at_steps"].items()))
    if sp:
        lines.append(f"ELR spread: first {_fmt(sp['first'])}, last {_fmt(sp['last'])}, "
                     f"min {_fmt(sp['min'])} (step {sp['argmin_step']})")
    d = report.get("scale_invariance_defect") or {}
    if d.get("max_abs_cos") is not None:
        lines.append(f"scale-invariance defect: max |cos(w, grad)| {_fmt(d['max_abs_cos'])}")
    cr = report["critical_lr"]
    line = f"critical lr at step 0: {_fmt(cr['critical_lr_step0'])}"
    if "critical_lr_bruteforce" in cr.get("sweep", {}):
        line += (f"; one-step sweep minimiser {_fmt(cr['sweep']['critical_lr_bruteforce'])} "
                 f"(predicted {_fmt(cr['sweep']['critical_lr_predicted'])})")
    lines.append(line)
    return "\n".join(lines)


def _check_size(cfg: dict) -> None:
    r"""Refuse, naming depth and width, a model whose parameters cannot fit in memory.

    Parameter count, roughly: MLP :math:`d\,w^2`, ResNet :math:`9d(4w)^2` (3×3 convs,
    last stage :math:`4w` wide), Transformer :math:`12d\,w^2`, with :math:`w` the width
    times the multiplier; four float32 copies (weights, gradients, optimizer state,
    the monitor's products) must fit in physical memory.
    """
    import os

    w = float(cfg["width"]) * float(cfg["width_multiplier"])
    factor = {"mlp": 1.0, "resnet": 144.0, "transformer": 12.0}.get(cfg["arch"], 12.0)
    n_bytes = 16.0 * float(cfg["depth"]) * factor * w * w  # float products: inf, never raise
    try:
        limit = float(os.sysconf("SC_PAGE_SIZE")) * float(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        limit = float(1 << 40)
    if not n_bytes <= limit:
        raise ValueError(f"depth/width: depth {cfg['depth']} x width {w:.6g} needs about "
                         f"{n_bytes / 2**30:.3g} GiB of parameters, more than this machine's "
                         f"{limit / 2**30:.3g} GiB")


#: Largest float32: torch applies lr and weight decay as float32 factors to the parameters.
FLOAT32_MAX = 3.4028234663852886e38
#: Seeds are stored by torch and numpy as 64-bit integers.
SEED_LIMIT = 2**63
#: More torch threads than this is a typo, not a machine.
THREAD_LIMIT = 4096


def _check_torch_ranges(args: argparse.Namespace) -> None:
    """Values the config accepts but torch cannot represent: one line naming the parameter."""
    for name in ("lr", "weight_decay"):
        value = float(getattr(args, name))
        if value > FLOAT32_MAX:
            raise ValueError(f"{name} must be <= {FLOAT32_MAX:.8g} (torch applies it as a float32 "
                             f"factor), got {value!r}")
    if args.seed >= SEED_LIMIT:
        raise ValueError(f"seed must be < 2**63, got {args.seed}")
    if args.threads is not None and args.threads > THREAD_LIMIT:
        raise ValueError(f"threads must be <= {THREAD_LIMIT}, got {args.threads}")


def run(args: argparse.Namespace) -> int:
    import sys

    import pandas as pd

    from normdyn._checks import NonFiniteError
    from normdyn.validate.compare import compare_run, write_report
    from normdyn.validate.runs import SWEEP_FILE, load_run, run_training

    if not args.out:
        raise ValueError("--out DIR is required (the output directory of the run)")
    config = _config(args)
    _check_size(config.resolved())
    _check_torch_ranges(args)
    if args.table_format not in ("csv", "parquet"):
        raise ValueError(f"table_format must be one of 'csv', 'parquet', "
                         f"got {args.table_format!r}")
    if args.threads is not None:
        import torch

        from normdyn._checks import check_int

        torch.set_num_threads(check_int("threads", args.threads, minimum=1))
    out = Path(args.out)
    start = time.perf_counter()
    status = 0
    try:
        run_training(config, out, progress=not args.no_progress,
                     table_format=args.table_format)
    except NonFiniteError as exc:
        print(f"normdyn validate: {exc}", file=sys.stderr)
        status = 1
    seconds = time.perf_counter() - start
    table, meta = load_run(out)
    sweep = pd.read_csv(out / SWEEP_FILE) if (out / SWEEP_FILE).is_file() else None
    try:
        report = compare_run(table, meta["config"], sweep=sweep)
    except ValueError:
        if status:  # a run that diverged early may be too short for a report
            return status
        raise
    report["run"]["wall_seconds"] = seconds
    for key in ("device", "status", "test_accuracy", "test_loss",
                "tracked_layers_scale_invariant"):
        if key in meta:
            report["run"][key] = meta[key]
    json_path, md_path = write_report(report, out)
    print(_summary(report, out, seconds))
    print(f"wrote {json_path} and {md_path}")
    return status
