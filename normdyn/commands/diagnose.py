"""``normdyn diagnose MODEL``: per-layer ELRs, eta* predicted and measured, one batch.

Prints the summary and the 10 layers furthest from the median ELR; ``--out DIR`` writes
``layers.csv``, ``lr_curve.csv``, ``summary.json`` and ``diagnose.png``; ``--json`` prints
:meth:`~normdyn.diagnose.core.Diagnosis.to_json` instead.  Without ``--batch`` the batch is
random (seeded) inputs of ``--input-shape`` with random labels, and the output says so.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["add_parser", "run", "parse_lrs"]

_DEFAULT_LR = {"sgd": 0.1, "adam": 1e-3, "adamw": 1e-3}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "diagnose", help="per-layer ELRs, predicted and measured critical lr of any model",
        description="Diagnose a model on one batch: per-layer ELRs, eta* predicted and "
                    "measured (one real optimizer step per lr), the model left unchanged.")
    p.add_argument("model", metavar="MODEL",
                   help="torchvision:NAME, timm:NAME, hf:LOCAL_CONFIG, normdyn:resnet56-noshort "
                        "(resnetN[-noshort], mlp[N], transformer) or pkg.module:factory")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--input-shape", metavar="CxHxW",
                     help="shape of one random input (default 3x32x32 for normdyn: models, "
                          "else the config's or 3x224x224)")
    src.add_argument("--batch", metavar="FILE.pt",
                     help="torch.save'd (inputs, targets) pair or {'inputs', 'targets'} dict")
    p.add_argument("--batch-size", type=int, default=32, metavar="N",
                   help="random batch size (default 32)")
    p.add_argument("--classes", type=int, metavar="K",
                   help="number of classes (default: the model's output size)")
    p.add_argument("--optimizer", choices=sorted(_DEFAULT_LR),
                   help="optimizer to step (default: plain SGD at each swept lr)")
    p.add_argument("--lr", type=float, help="the optimizer's lr (default 0.1 sgd, 1e-3 adam)")
    p.add_argument("--momentum", type=float, default=0.0, metavar="B",
                   help="SGD momentum (default 0)")
    p.add_argument("--weight-decay", type=float, default=0.0, metavar="W",
                   help="weight decay (default 0)")
    p.add_argument("--lrs", metavar="START:STOP:NUM",
                   help="log-spaced lr sweep (default 25 lrs, 2 decades either side of eta*)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random batch and probes")
    p.add_argument("--out", metavar="DIR",
                   help="write layers.csv, lr_curve.csv, summary.json, diagnose.png")
    p.add_argument("--json", action="store_true", help="print the diagnosis as JSON")
    p.set_defaults(func=run)


def parse_lrs(text: str) -> Any:
    """``"1e-3:10:25"`` -> 25 log-spaced lrs from 1e-3 to 10."""
    import numpy as np

    parts = text.split(":")
    try:
        start, stop, num = float(parts[0]), float(parts[1]), int(parts[2])
        if len(parts) != 3:
            raise IndexError
    except (IndexError, ValueError):
        raise ValueError(f"--lrs: expected START:STOP:NUM like 1e-3:10:25, got {text!r}") \
            from None
    if not (0 < start < stop and np.isfinite(stop)) or num < 2:
        raise ValueError(f"--lrs: need 0 < START < STOP and NUM >= 2, got {text!r}")
    return np.geomspace(start, stop, num)


def _check_numbers(args: argparse.Namespace) -> None:
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.classes is not None and args.classes < 1:
        raise ValueError(f"--classes must be at least 1, got {args.classes}")
    if args.lr is not None and not args.lr > 0:
        raise ValueError(f"--lr must be positive, got {args.lr}")
    if not 0 <= args.momentum < 1:
        raise ValueError(f"--momentum must be in [0, 1), got {args.momentum}")
    if not args.weight_decay >= 0:
        raise ValueError(f"--weight-decay must be non-negative, got {args.weight_decay}")
    if args.optimizer is None and (args.lr is not None or args.momentum or args.weight_decay):
        raise ValueError("--lr, --momentum and --weight-decay need --optimizer sgd|adam|adamw")


def _output_size(model: Any, inputs: Any) -> int:
    import torch

    from normdyn.diagnose._state import Snapshot
    from normdyn.diagnose.lr_curve import _model_output

    snapshot = Snapshot(model, None)
    try:
        with torch.no_grad():
            out = _model_output(model, inputs)
    finally:
        snapshot.restore_all()
    if not hasattr(out, "shape") or out.ndim < 2:
        raise ValueError("--classes: the model's output is not (batch, classes); pass --classes")
    return int(out.shape[-1])


def _load_batch(path: str) -> tuple[Any, Any]:
    import torch

    if not Path(path).is_file():
        raise FileNotFoundError(f"--batch: no such file {path!r}")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(obj, dict) and {"inputs", "targets"} <= set(obj):
        return obj["inputs"], obj["targets"]
    if isinstance(obj, (tuple, list)) and len(obj) == 2:
        return obj[0], obj[1]
    raise ValueError(f"--batch: {path} must hold an (inputs, targets) pair or a dict with "
                     f"'inputs' and 'targets', got {type(obj).__name__}")


def _optimizer(args: argparse.Namespace, model: Any) -> Any:
    import torch

    if args.optimizer is None:
        return None
    lr = args.lr if args.lr is not None else _DEFAULT_LR[args.optimizer]
    params = [p for p in model.parameters() if p.requires_grad]
    if args.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=args.momentum,
                               weight_decay=args.weight_decay)
    cls = torch.optim.Adam if args.optimizer == "adam" else torch.optim.AdamW
    return cls(params, lr=lr, weight_decay=args.weight_decay)


def _print_text(diagnosis: Any, notes: list[str]) -> None:
    s = diagnosis.summary
    for note in notes:
        print(f"note: {note}")
    print(f"optimizer       {s['optimizer']}")
    print(f"layers          {s['n_tracked']} tracked of {s['n_layers']} conv/linear "
          f"({s['n_dead']} dead)")
    print(f"spread          {s['spread']:.4g} (max/min), {s['robust_spread']:.4g} (Q95/Q05)")
    print(f"a_max, a_min    {s['a_max']:.4g}, {s['a_min']:.4g}")
    print(f"eta*_pred       {s['eta_pred']:.4g}")
    print(f"eta*_measured   {s['eta_measured']:.4g}  ({s['decades_apart']:+.2f} decades)")
    print(f"lr_stable_max   {s['lr_stable_max']:.4g}")
    print(f"advice          {s['advice']}")
    worst = diagnosis.worst_layers(10)
    print("\nworst 10 layers (log10 ELR vs the median):")
    width = max(len(n) for n in worst["name"]) if len(worst) else 4
    print(f"  {'id':>4}  {'name':<{width}}  {'norm':<6}  {'a':>10}  {'elr':>10}  {'vs median':>9}")
    for row in worst.itertuples(index=False):
        flag = "  dead" if row.dead else ""
        print(f"  {row.layer_id:>4}  {row.name:<{width}}  {row.norm_type:<6}  {row.a:>10.4g}  "
              f"{row.elr:>10.4g}  {row.log10_elr_vs_median:>+9.2f}{flag}")


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from normdyn.diagnose.core import diagnose
    from normdyn.diagnose.loaders import default_input_shape, load_model, parse_shape
    from normdyn.diagnose.lr_curve import DEFAULT_NUM_LRS

    _check_numbers(args)
    lrs = parse_lrs(args.lrs) if args.lrs else None
    shape = parse_shape(args.input_shape) if args.input_shape else None
    model = load_model(args.model, num_classes=args.classes, input_shape=shape)
    model.train()
    notes = []
    if args.batch:
        inputs, targets = _load_batch(args.batch)
        notes.append(f"batch from {args.batch}")
    else:
        shape = shape or default_input_shape(args.model, model)
        generator = torch.Generator().manual_seed(args.seed)
        inputs = torch.randn((args.batch_size, *shape), generator=generator)
        classes = args.classes or _output_size(model, inputs)
        targets = torch.randint(0, classes, (args.batch_size,), generator=generator)
        notes.append(f"random batch: {args.batch_size} inputs of shape "
                     f"{'x'.join(map(str, shape))}, N(0,1), random labels of {classes} classes "
                     f"(seed {args.seed}); pass --batch FILE.pt for real data")
    optimizer = _optimizer(args, model)
    with tqdm(total=DEFAULT_NUM_LRS if lrs is None else len(lrs), desc="lr sweep",
              file=sys.stderr, leave=False, disable=None) as bar:
        result = diagnose(model, (inputs, targets), optimizer=optimizer, lrs=lrs,
                          seed=args.seed, progress=bar.update)
    result.notes.extend(notes)
    if args.json:
        print(result.to_json())
    else:
        _print_text(result, notes)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        result.layers.to_csv(out / "layers.csv", index=False)
        result.lr_curve.to_csv(out / "lr_curve.csv", index=False)
        (out / "summary.json").write_text(
            json.dumps(json.loads(result.to_json())["summary"] | {"notes": result.notes},
                       indent=2) + "\n", encoding="utf-8")
        result.plot(save_to=str(out / "diagnose.png"), dpi=110)
        print(f"wrote {out}/layers.csv, lr_curve.csv, summary.json, diagnose.png",
              file=sys.stderr)
    return 0
