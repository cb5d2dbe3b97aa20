"""Overhead of :class:`normdyn.validate.monitor.ELRMonitor` on a ResNet training step.

Two identical copies of a CIFAR ResNet (same initialization, same batch, SGD with
momentum and weight decay) are trained side by side in one process; one of them is
monitored.  Timed blocks of ``--steps-per-block`` steps alternate between the two
(in ABBA order, so slow drifts of the machine cancel), and the script prints the
median and mean time per step of each arm, the median of the paired (adjacent-block)
ratios -- the headline number, robust to drift and to other processes sharing the
machine -- and the ratio of medians and of means.  The mean includes the monitor's
periodic host syncs (every ``--sync-every`` steps).  It also prints the host time spent
inside ``before_step``/``after_step`` themselves, a low-noise upper bound of the CPU
overhead.

    python benchmarks/monitor_overhead.py                  # CPU: ResNet-20 x0.5, batch 32
    python benchmarks/monitor_overhead.py --device cuda    # ResNet-56, batch 128 (goal <= 1%)

Goals: <= 3% on CPU (ResNet-20, one thread), <= 1% on a GPU (ResNet-56, batch 128).  With ``--device cuda`` and no CUDA available
the script says so and runs the CPU configuration.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from normdyn.validate.models import resnet_cifar
from normdyn.validate.monitor import ELRMonitor

DEFAULTS = {
    "cpu": {"depth": 20, "width_multiplier": 0.5, "batch_size": 32, "blocks": 12,
            "steps_per_block": 4},
    "cuda": {"depth": 56, "width_multiplier": 1.0, "batch_size": 128, "blocks": 30,
             "steps_per_block": 25},
}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--depth", type=int, default=None)
    parser.add_argument("--width-multiplier", type=float, default=None)
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--blocks", type=int, default=None,
                        help="timed blocks per arm (alternating)")
    parser.add_argument("--steps-per-block", type=int, default=None)
    parser.add_argument("--sync-every", type=int, default=50)
    parser.add_argument("--no-update", action="store_true",
                        help="monitor with track_update=False")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    return parser.parse_args(argv)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = _parse(argv)
    kind = args.device
    if kind == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available in this torch build/machine; falling back to the CPU "
              "configuration (the GPU goal of <= 1% is not measured).", file=sys.stderr)
        kind = "cpu"
    cfg = dict(DEFAULTS[kind])
    for key in cfg:
        value = getattr(args, key)
        if value is not None:
            cfg[key] = value
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(kind)

    torch.manual_seed(0)
    base = resnet_cifar(cfg["depth"], width_multiplier=cfg["width_multiplier"]).to(device)
    models = {"plain": base, "monitored": copy.deepcopy(base)}
    opts = {k: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
            for k, m in models.items()}
    monitor = ELRMonitor(models["monitored"], opts["monitored"], sync_every=args.sync_every,
                         track_update=not args.no_update)
    x = torch.randn(cfg["batch_size"], 3, 32, 32, device=device)
    y = torch.randint(0, 10, (cfg["batch_size"],), device=device)

    inside: list[float] = []    # host time spent inside the monitor's calls

    def train_step(arm: str) -> None:
        model, opt = models[arm], opts[arm]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        if arm == "monitored":
            t0 = time.perf_counter()
            monitor.before_step(loss)
            t1 = time.perf_counter()
            opt.step()
            t2 = time.perf_counter()
            monitor.after_step()
            inside.append(t1 - t0 + time.perf_counter() - t2)
        else:
            opt.step()

    def block(arm: str) -> float:
        _sync(device)
        start = time.perf_counter()
        for _ in range(cfg["steps_per_block"]):
            train_step(arm)
        _sync(device)
        return (time.perf_counter() - start) / cfg["steps_per_block"]

    for arm in ("plain", "monitored", "plain", "monitored"):   # warm-up
        block(arm)
    inside.clear()
    times: dict[str, list[float]] = {"plain": [], "monitored": []}
    for i in range(cfg["blocks"]):
        order = ("plain", "monitored") if i % 2 == 0 else ("monitored", "plain")
        for arm in order:
            times[arm].append(block(arm))
    monitor.sync()

    med = {k: statistics.median(v) for k, v in times.items()}
    paired = statistics.median(m / p for m, p in zip(times["monitored"], times["plain"],
                                                     strict=True))
    mean = {k: statistics.fmean(v) for k, v in times.items()}
    result = {
        "device": str(device),
        "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                        else platform.processor() or platform.machine()),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        **{k: cfg[k] for k in cfg},
        "sync_every": args.sync_every,
        "track_update": not args.no_update,
        "tracked_tensors": len(monitor.names),
        "median_plain_ms": 1e3 * med["plain"],
        "median_monitored_ms": 1e3 * med["monitored"],
        "mean_plain_ms": 1e3 * mean["plain"],
        "mean_monitored_ms": 1e3 * mean["monitored"],
        "overhead_median": med["monitored"] / med["plain"] - 1.0,
        "overhead_mean": mean["monitored"] / mean["plain"] - 1.0,
        "overhead_paired_median": paired - 1.0,
        "monitor_call_ms": 1e3 * statistics.fmean(inside),
        "monitor_call_fraction": statistics.fmean(inside) / med["plain"],
        "steps_recorded": monitor.step_count,
    }
    goal = 0.02 if device.type == "cuda" else 0.03
    print(f"ResNet-{cfg['depth']} x{cfg['width_multiplier']} batch {cfg['batch_size']} on "
          f"{result['device_name']} ({device}, {result['threads']} threads), "
          f"{len(monitor.names)} monitored tensors, sync_every={args.sync_every}, "
          f"{cfg['blocks']} alternating blocks x {cfg['steps_per_block']} steps per arm")
    print(f"  unmonitored: median {result['median_plain_ms']:.3f} ms/step, "
          f"mean {result['mean_plain_ms']:.3f}")
    print(f"  monitored:   median {result['median_monitored_ms']:.3f} ms/step, "
          f"mean {result['mean_monitored_ms']:.3f}")
    verdict = "meets" if result["overhead_paired_median"] <= goal else "MISSES"
    print(f"  overhead: {100 * result['overhead_paired_median']:+.2f}% (median of paired "
          f"block ratios; {verdict} the {100 * goal:.0f}% goal), "
          f"{100 * result['overhead_median']:+.2f}% (ratio of medians), "
          f"{100 * result['overhead_mean']:+.2f}% (ratio of means)")
    print(f"  host time inside before_step/after_step: {result['monitor_call_ms']:.3f} ms/step "
          f"= {100 * result['monitor_call_fraction']:.2f}% of the unmonitored median step"
          + (" (kernels are asynchronous on a GPU: this is launch cost only)"
             if device.type == "cuda" else ""))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
