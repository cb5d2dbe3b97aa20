r"""Planned training runs of the figure scripts: list them, estimate them, launch them.

A figure script whose measurements are training runs exposes ``plan(profile)``: the
:func:`paper_figures._common.train_run` keyword arguments of each run.  The runs are
independent, so they can be trained anywhere before the figures are measured:

``inprocess``  nothing is launched ahead; ``measure`` trains each run when it needs it.
``local``      ``jobs`` worker processes (``concurrent.futures`` with ``spawn``).
``submitit``   ``submitit.AutoExecutor``: on a Slurm cluster one job per run (a job array,
               at most ``jobs`` running); where there is no Slurm, its local executor
               with ``jobs`` jobs, each training its share of the runs.

Every launcher writes the same per-run cache (``<out>/cache/runs/<arch>-<hash>``) with
one torch thread per run on the CPU, so the figure tables measured afterwards are
byte-identical to those of the in-process run.  Runs already complete in the cache are
skipped, so an interrupted profile resumes where it stopped.

:func:`estimate_seconds` is a rough a-priori cost model for ``--dry-run`` (floating-point
work of the ResNet / MLP / Transformer at an assumed throughput, plus a per-layer
kernel-launch floor); it is an estimate to plan a GPU lease, not a measurement.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from normdyn.figures.run_cache import run_complete, run_key, train_run

__all__ = [
    "LAUNCHERS",
    "PlannedRun",
    "run_key",
    "run_complete",
    "collect_plan",
    "estimate_seconds",
    "plan_frame",
    "launch",
]

LAUNCHERS = ("inprocess", "local", "submitit")

#: Assumed sustained throughput (FLOP/s) and per-kernel launch cost (s) of the cost model.
#: CPU: calibrated on ResNet-56 (width 16, 8x8 digits, batch 64), 70 ms per step on one
#: core of the 2-core development machine; GPU: a guess until the GPU check measures it.
_THROUGHPUT = {"gpu": 30e12, "cpu": 40e9}
_LAUNCH = {"gpu": 12e-6, "cpu": 40e-6}
_KERNELS_PER_LAYER = 10  # conv/linear + norm + activation, forward and backward, monitor
_IMAGE_SIDE = {"digits": 8, "digits32": 32, "synthetic": 32, "cifar10": 32, "cifar100": 32,
               "fashion-mnist": 28}


@dataclass(frozen=True)
class PlannedRun:
    """One planned training run: the figures that use it, its kwargs and its cache key."""

    figures: tuple[str, ...]
    config: dict[str, Any]
    key: str


def collect_plan(scripts: dict[str, str], profile: str,
                 importer: Callable[[str], Any]) -> list[PlannedRun]:
    """The planned runs of ``scripts`` (``{figure: module}``), shared runs merged."""
    merged: dict[str, tuple[list[str], dict[str, Any]]] = {}
    for fig, module_name in scripts.items():
        module = importer(module_name)
        plan = getattr(module, "plan", None)
        if plan is None:
            continue
        for config in plan(profile):
            key = run_key(config)
            figs, _ = merged.setdefault(key, ([], config))
            if fig not in figs:
                figs.append(fig)
    return [PlannedRun(tuple(figs), cfg, key) for key, (figs, cfg) in merged.items()]


def estimate_seconds(config: dict[str, Any], device: str = "gpu") -> float:
    """A rough wall time of one run on ``device`` (``gpu`` or ``cpu``); see the module doc."""
    if device not in _THROUGHPUT:
        raise ValueError(f"device must be 'gpu' or 'cpu', got {device!r}")
    arch = config.get("arch", "resnet")
    depth = int(config.get("depth", 20))
    batch = int(config.get("batch_size", 64))
    steps = int(config.get("steps", 100))
    if arch == "resnet":
        side = int(config.get("image_size") or _IMAGE_SIDE.get(config.get("data", "digits"), 32))
        width = int(config.get("width") or 16)
        # 3 stages of (depth-2)/3 convs at widths w, 2w, 4w on side^2, side^2/4, side^2/16
        # pixels: each stage costs about 9 * side^2 * w^2 * (depth-2)/3 multiply-adds.
        macs = 9 * side**2 * width**2 * (depth - 2)
        layers = depth
    elif arch == "mlp":
        width = int(config.get("width") or 128)
        macs = depth * width**2 + 64 * width
        layers = depth
    else:
        width = int(config.get("width") or 32)
        seq = 8
        macs = depth * seq * 12 * width**2
        layers = 6 * depth
    flops = 3 * 2 * macs * batch  # forward + backward
    per_step = max(flops / _THROUGHPUT[device], layers * _KERNELS_PER_LAYER * _LAUNCH[device])
    return float(steps * per_step)


def plan_frame(runs: Sequence[PlannedRun], cache_dir: str | Path | None = None):
    """A tidy frame of the planned runs.

    Columns: ``figures``, ``arch``, ``depth``, ``width``, ``shortcuts``, ``data``,
    ``steps``, ``batch_size``, ``lr``, ``seed``, ``key``, ``cached`` (complete in
    ``cache_dir``), ``gpu_seconds`` and ``cpu_seconds`` (:func:`estimate_seconds`).
    """
    import pandas as pd

    rows = []
    for run in runs:
        c = run.config
        rows.append({
            "figures": ",".join(run.figures), "arch": c.get("arch", "resnet"),
            "depth": c.get("depth"), "width": c.get("width"), "shortcuts": c.get("shortcuts"),
            "data": c.get("data"), "steps": c.get("steps"), "batch_size": c.get("batch_size"),
            "lr": c.get("lr"), "seed": c.get("seed"), "key": run.key,
            "cached": cache_dir is not None and run_complete(Path(cache_dir) / "runs" / run.key),
            "gpu_seconds": estimate_seconds(c, "gpu"), "cpu_seconds": estimate_seconds(c, "cpu"),
        })
    return pd.DataFrame(rows)


def _train_one(root: str, cache_dir: str, config: dict[str, Any]) -> str:
    """Worker: train one planned run into the cache; returns its status."""
    import torch

    if config.get("device", "cpu") == "cpu":
        torch.set_num_threads(1)
    _, _, meta = train_run(cache_dir, False, **config)
    return str(meta.get("status"))


def launch(runs: Sequence[PlannedRun], cache_dir: str | Path, root: str | Path, *,
           launcher: str = "local", jobs: int = 1, progress: bool = True) -> dict[str, str]:
    """Train the runs not yet complete in ``cache_dir``; ``{key: status}`` of those trained.

    ``root`` is the checkout holding ``paper_figures/``.  ``launcher="inprocess"`` does
    nothing (the figures train their runs themselves).
    """
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {', '.join(map(repr, LAUNCHERS))}, "
                         f"got {launcher!r}")
    if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
        raise ValueError(f"jobs must be an integer >= 1, got {jobs!r}")
    cache_dir = Path(cache_dir)
    # Longest first, so that the workers stay busy until the end.
    todo = sorted((r for r in runs if not run_complete(cache_dir / "runs" / r.key)),
                  key=lambda r: -estimate_seconds(r.config, "cpu"))
    if launcher == "inprocess" or not todo:
        return {}
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), disable=not progress, unit="run",
               desc=f"training planned runs ({launcher}, {jobs} at a time)", dynamic_ncols=True)
    out: dict[str, str] = {}
    try:
        if launcher == "local":
            out = _launch_local(todo, str(cache_dir), str(root), jobs, bar.update)
        else:
            out = _launch_submitit(todo, cache_dir, str(root), jobs, bar.update)
    finally:
        bar.close()
    return out


def _launch_local(todo: Sequence[PlannedRun], cache_dir: str, root: str, jobs: int,
                  tick: Callable[[int], Any]) -> dict[str, str]:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    out: dict[str, str] = {}
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        futures = {pool.submit(_train_one, root, cache_dir, r.config): r.key for r in todo}
        for future in as_completed(futures):
            out[futures[future]] = future.result()
            tick(1)
    return out


def _launch_submitit(todo: Sequence[PlannedRun], cache_dir: Path, root: str, jobs: int,
                     tick: Callable[[int], Any]) -> dict[str, str]:
    try:
        import submitit
    except ImportError as exc:
        raise ValueError("launcher 'submitit' needs the optional extra: "
                         "pip install 'normdyn[launch]'") from exc
    executor = submitit.AutoExecutor(folder=str(cache_dir / "submitit" / "%j"))
    costs = [estimate_seconds(r.config, "cpu") for r in todo]
    hours = max(max(costs), sum(costs) / jobs) / 3600  # a local job trains its share
    executor.update_parameters(timeout_min=int(min(72 * 60, max(60, math.ceil(hours * 120)))),
                               cpus_per_task=1, slurm_array_parallelism=jobs)
    out: dict[str, str] = {}
    if executor.cluster == "slurm":  # one Slurm job per run, at most ``jobs`` at a time
        submitted = executor.map_array(_train_one, [root] * len(todo),
                                       [str(cache_dir)] * len(todo), [r.config for r in todo])
        for run, job in zip(todo, submitted, strict=True):
            out[run.key] = job.result()
            tick(1)
        return out
    # The local executor starts every job at once, each a fresh process: ``jobs`` jobs,
    # each training its share of the runs (dealt longest first, round robin).
    chunks = [list(todo[i::jobs]) for i in range(min(jobs, len(todo)))]
    submitted = executor.map_array(_train_many, [root] * len(chunks),
                                   [str(cache_dir)] * len(chunks),
                                   [[r.config for r in c] for c in chunks])
    for chunk, job in zip(chunks, submitted, strict=True):
        for run, status in zip(chunk, job.result(), strict=True):
            out[run.key] = status
        tick(len(chunk))
    return out


def _train_many(root: str, cache_dir: str, configs: Sequence[dict[str, Any]]) -> list[str]:
    """Worker: train several planned runs one after the other; their statuses."""
    return [_train_one(root, cache_dir, c) for c in configs]
