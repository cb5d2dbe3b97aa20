"""Training runs that measure the weight dynamics of real networks.

:func:`run_training` trains one model from a :class:`RunConfig` and records, at every
step and for every scale-invariant layer, what the norm-level model is about: the
squared weight norm, the gradient norm, the learning rate and the ELRs (through
:class:`~normdyn.validate.monitor.ELRMonitor`).  It writes into ``out_dir``:

``config.json``
    The resolved config, :func:`normdyn._io.provenance` (package version, git
    revision), torch version, device and the run status.
``steps.csv`` (or ``steps.parquet``)
    The monitor's per-step, per-layer table (step, layer, lr, sigma2, grad_norm, elr,
    update_elr, cos_wg, loss).
``metrics.csv``
    Per step: lr, training-batch loss and accuracy.
``checkpoint.pt``
    Model, optimizer, monitor state, every RNG state and the step, written atomically
    every ``checkpoint_every`` steps and at the end.
``lr_sweep.csv``
    Only with ``sweep_critical_lr``: :func:`one_step_lr_sweep` at step 0.

A run whose ``out_dir`` already holds a checkpoint of the *same* config resumes from
it: the rows after the checkpoint are recomputed, none is lost or duplicated, and on
CPU the final table equals that of an uninterrupted run exactly.  A *different*
config in an existing ``out_dir`` raises :class:`ValueError` (nothing is overwritten).

**Drift mode** (``drift=True``) replaces, after ``backward()`` and before the monitor
and the optimizer see it, the gradient of every tracked layer by a Gaussian random
vector of the same norm (a random walk over the weight vector's elements, the
paper's "random vectors of similar norm").  With ``drift_projected=False`` (default)
the vector is isotropic in all of :math:`\\mathbb{R}^d`, so it has a random radial
component (of relative size about :math:`1/\\sqrt d`); with ``drift_projected=True``
its component along :math:`w` is removed *before* rescaling, so it lies in the tangent
space, exactly as a scale-invariant layer's true gradient does.  Untracked parameters
(classifier, norm affines) keep their real gradients.

The tracked layers are the scale-invariant weights that
:func:`~normdyn.layers.detection.find_scale_invariant` detects.  A model with none
(the Transformers: their linears carry biases or feed residual additions) tracks every
weight matrix except the classifier's instead; ``config.json`` then says
``tracked_layers_scale_invariant: false`` and ``cos_wg`` shows the defect.

Results on CPU depend on the number of torch threads (the order of float reductions);
``config.json`` records it, and a resume must use the same number to be exact.

A NaN or infinity in the loss stops the run at that step, before the monitor or the
metrics record anything of it (the loss is checked every step), with
:class:`~normdyn._checks.NonFiniteError` naming the step; non-finite norms stop it at the
monitor's next sync.  Everything recorded before is written (atomically) to ``out_dir``
first, and no row of a non-finite loss is saved.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from normdyn._checks import NonFiniteError, check_int
from normdyn._io import atomic_write_frame, atomic_write_json, provenance
from normdyn.theory.numeric import gradient_elr
from normdyn.validate.checkpoint import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    METRICS_FILE,
    SWEEP_FILE,
    _atomic_torch_save,
    _capture_rng,
    _check_out_dir,
    _json_roundtrip,
    _restore_rng,
    load_run,
    steps_path,
)
from normdyn.validate.config import (
    ARCHS,
    DATA,
    DEVICES,
    OPTIMIZERS,
    SCHEDULES,
    TABLE_FORMATS,
    RunConfig,
    _choice,
    decay_factor,
    resolve_device,
)
from normdyn.validate.lr_sweep import default_sweep_lrs, one_step_lr_sweep

__all__ = [
    "RunConfig",
    "ARCHS",
    "DATA",
    "SCHEDULES",
    "OPTIMIZERS",
    "DEVICES",
    "CONFIG_FILE",
    "CHECKPOINT_FILE",
    "METRICS_FILE",
    "SWEEP_FILE",
    "resolve_device",
    "run_training",
    "load_run",
    "steps_path",
    "drift_gradient",
    "one_step_lr_sweep",
    "default_sweep_lrs",
]

_NUM_CLASSES = {"digits": 10, "digits32": 10, "synthetic": 10, "cifar10": 10, "cifar100": 100,
                "sequences": 3, "fashion-mnist": 10}
_TRANSFORMER_HEADS = 4
_SEQ_LEN, _SEQ_DIM = 8, 4
_EVAL_MAX = 2048


# --------------------------------------------------------------------------- building


def _seed_stream(seed: int, stream: int) -> int:
    """An independent 63-bit seed for ``stream`` (1: batches, 2: drift) from ``seed``."""
    state = np.random.SeedSequence(seed, spawn_key=(stream,)).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


def _load_data(cfg: dict[str, Any], split: str) -> tuple[Tensor, Tensor]:
    from normdyn.validate.data import get_dataset

    name = cfg["data"]
    if name in ("digits", "digits32"):
        return get_dataset(name, seed=cfg["seed"], split=split)
    if name == "synthetic":
        n = cfg["n_samples"] if split == "train" else max(2, cfg["n_samples"] // 4)
        return get_dataset(name, n=n, seed=cfg["seed"], split=split, image_size=32,
                           channels=3, num_classes=_NUM_CLASSES[name])
    if name == "sequences":
        n = cfg["n_samples"] if split == "train" else max(2, cfg["n_samples"] // 4)
        return get_dataset(name, n=n, seed=cfg["seed"], split=split, seq_len=_SEQ_LEN,
                           input_dim=_SEQ_DIM, num_classes=_NUM_CLASSES[name])
    if name == "fashion-mnist":
        return get_dataset(name, data_root=cfg["data_root"], split=split,
                           image_size=cfg["image_size"])
    return get_dataset(name, root=cfg["data_root"], split=split)


def _build_model(cfg: dict[str, Any], X: Tensor) -> nn.Module:
    from normdyn.validate.models import build_model

    classes = _NUM_CLASSES[cfg["data"]]
    arch = cfg["arch"]
    if arch == "resnet":
        return build_model("resnet", depth=cfg["depth"], shortcuts=cfg["shortcuts"],
                           affine=cfg["affine"], width=cfg["width"],
                           width_multiplier=cfg["width_multiplier"], num_classes=classes,
                           in_channels=int(X.shape[1]))
    if arch == "mlp":
        width = max(1, round(cfg["width"] * cfg["width_multiplier"]))
        return build_model("mlp", depth=cfg["depth"], width=width,
                           in_features=int(np.prod(X.shape[1:])), num_classes=classes,
                           norm=cfg["norm"], affine=cfg["affine"])
    d_model = max(_TRANSFORMER_HEADS,
                  round(cfg["width"] * cfg["width_multiplier"] / _TRANSFORMER_HEADS)
                  * _TRANSFORMER_HEADS)
    return build_model("transformer", input_dim=int(X.shape[2]), d_model=d_model,
                       n_heads=_TRANSFORMER_HEADS, n_layers=cfg["depth"],
                       seq_len=int(X.shape[1]), num_classes=classes,
                       norm_position=cfg["norm_position"], affine=cfg["affine"])


def _build_optimizer(cfg: dict[str, Any], model: nn.Module,
                     invariant: list[str] | None = None) -> torch.optim.Optimizer:
    """SGD or Adam; with ``other_lr``, group 0 holds ``invariant`` and group 1 the rest."""
    params: Any = model.parameters()
    if cfg.get("other_lr") is not None:
        keep = set(invariant or [])
        named = list(model.named_parameters())
        params = [{"params": [p for n, p in named if n in keep]},
                  {"params": [p for n, p in named if n not in keep]}]
    if cfg["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"],
                               weight_decay=cfg["weight_decay"])
    return torch.optim.Adam(params, lr=cfg["lr"], weight_decay=cfg["weight_decay"])


def _set_lrs(optimizer: torch.optim.Optimizer, lr: float, other_lr: float | None,
             factor: float = 1.0) -> None:
    """Group 0 (or every group) at ``lr``; with ``other_lr``, group 1 at
    ``min(lr, other_lr * factor)`` (``lr`` already carries the decay ``factor``)."""
    for i, group in enumerate(optimizer.param_groups):
        group["lr"] = lr if other_lr is None or i == 0 else min(lr, other_lr * factor)


class _Schedule:
    """The lr of step ``t`` from :func:`normdyn.simulate.schedules.make_schedule`.

    ``critical_warmup`` reads the current per-unit-lr ELRs ``a`` of the tracked layers.
    """

    def __init__(self, cfg: dict[str, Any]) -> None:
        from normdyn.simulate.schedules import ScheduleState, make_schedule

        self._state_cls = ScheduleState
        name, n = cfg["schedule"], cfg["schedule_steps"]
        kw: dict[str, Any] = {}
        if name == "linear_warmup":
            kw = {"n_steps": n}
        elif name == "exponential_warmup":
            kw = {"tau": float(n)}
        elif name == "step_decay":
            kw = {"milestones": [n]}
        # The critical warm-up of real runs is the shipped CriticalLRWarmup, applied
        # around optimizer.step(); the schedule itself holds the target constant.
        self.critical = name == "critical_warmup"
        self.schedule = make_schedule("constant" if self.critical else name, cfg["lr"], **kw)
        self.needs_norms = bool(self.schedule.state_dependent)
        self._fixed = None if self.needs_norms else self.schedule.lrs(cfg["steps"])

    def __call__(self, step: int, per_unit_elr: np.ndarray | None = None) -> float:
        if self._fixed is not None:
            return float(self._fixed[step])
        return float(self.schedule.lr(step, self._state_cls(per_unit_elr=per_unit_elr)))


# --------------------------------------------------------------------------- drift


def drift_gradient(
    grad: Tensor, weight: Tensor, generator: torch.Generator, *, projected: bool
) -> Tensor:
    """A Gaussian random vector with the norm of ``grad``, shaped and typed like it.

    The noise is drawn in float64 on the CPU from ``generator`` (so a seed gives the same
    vectors on every device) and then moved to ``grad``'s device.  ``projected=True``
    removes its component along ``weight`` before rescaling, so the result lies in the
    tangent space of the sphere through ``weight``.
    """
    noise = torch.randn(grad.shape, generator=generator, dtype=torch.float64)
    noise = noise.to(grad.device)
    if projected:
        w = weight.detach().to(torch.float64)
        noise -= (noise * w).sum() / (w * w).sum() * w
    scale = grad.detach().to(torch.float64).norm() / noise.norm()
    return (noise * scale).to(grad.dtype)


# --------------------------------------------------------------------------- training


class _Diverged(NonFiniteError):
    """The training loss of ``step`` is NaN or infinite (nothing of that step is recorded)."""

    def __init__(self, step: int) -> None:
        super().__init__(f"loss is not finite at step {step}")
        self.step = step


class _Interrupted(Exception):
    """Internal: ``stop_after`` reached (a clean stop at a step boundary)."""


def _tracked_names(model: nn.Module) -> list[str] | None:
    """The scale-invariant weights of ``model`` (detected), ``None`` if there are none."""
    from normdyn.layers.detection import find_scale_invariant

    layers = find_scale_invariant(model)
    return [layer.param_name for layer in layers] if layers else None


def _fallback_names(model: nn.Module) -> list[str]:
    """Every matrix/kernel ``*.weight`` except the classifier's (for models, like the
    Transformers, in which no weight is scale invariant; ``cos_wg`` then shows the defect)."""
    names = [n for n, p in model.named_parameters()
             if p.ndim >= 2 and n.endswith(".weight") and not n.startswith("classifier.")]
    if not names:
        raise ValueError(f"{type(model).__name__} has neither a scale-invariant layer nor a "
                         "weight matrix to monitor")
    return names


class _Run:
    """The state of one run: model, optimizer, monitor, data stream and records."""

    def __init__(self, config: RunConfig, out_dir: Path, table_format: str) -> None:
        from normdyn.validate.monitor import ELRMonitor

        self.config = config
        self.cfg = config.resolved()
        self.out_dir = out_dir
        self.table_path = out_dir / f"steps.{table_format}"
        self.device = resolve_device(config.device)
        seed = self.cfg["seed"]
        random.seed(seed)
        np.random.seed(seed % 2**32)  # noqa: NPY002 - third-party code may use it
        torch.manual_seed(seed)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = False
            torch.backends.cudnn.deterministic = True
        self.X, self.y = _load_data(self.cfg, "train")
        if self.cfg["batch_size"] > len(self.X):
            raise ValueError(f"batch_size must be <= the number of training samples "
                             f"({len(self.X)}), got {self.cfg['batch_size']}")
        self.model = _build_model(self.cfg, self.X).to(self.device)
        self.model.train()
        names = _tracked_names(self.model)
        self.scale_invariant = names is not None
        if names is None:
            names = _fallback_names(self.model)
        self.optimizer = _build_optimizer(self.cfg, self.model, names)
        self.monitor = ELRMonitor(self.model, self.optimizer, names=names,
                                  sync_every=self.cfg["sync_every"])
        self.stepper: Any = self.optimizer
        self.target_elr = self.cfg.get("constrained_elr")
        if self.target_elr is not None:
            from normdyn.optim import ConstrainedELR

            self.stepper = ConstrainedELR(self.optimizer, self.model,
                                          params=self._named(names),
                                          target_elr=self.cfg["constrained_elr"])
        self.tracked = list(self.monitor.names)
        params = dict(self.model.named_parameters())
        self.tracked_params = [(n, params[n]) for n in self.tracked]
        self.schedule = _Schedule(self.cfg)
        self.warmup = None
        if self.schedule.critical:
            from normdyn.optim import CriticalLRWarmup

            self.warmup = CriticalLRWarmup(self.optimizer, self.model,
                                           params=self._named(names))
        self.drift_gen = torch.Generator().manual_seed(_seed_stream(seed, 2))
        self.batches = self._batch_stream(0)
        self.step = 0
        self.metrics: dict[str, list] = {"step": [], "lr": [], "loss": [], "accuracy": []}
        self._pending: list[tuple[int, float, Tensor, Tensor]] = []

    def _named(self, names: list[str]) -> dict[str, Tensor]:
        params = dict(self.model.named_parameters())
        return {n: params[n] for n in names}

    def _batch_stream(self, skip: int) -> Iterator[tuple[Tensor, Tensor]]:
        from normdyn.validate.data import make_batches

        stream = make_batches(self.X, self.y, self.cfg["batch_size"],
                              seed=_seed_stream(self.cfg["seed"], 1))
        for _ in range(skip):
            next(stream)
        return stream

    # ----------------------------------------------------------------- persistence

    def meta(self, status: str, **extra: Any) -> dict[str, Any]:
        return {
            "config": self.cfg,
            "provenance": provenance(),
            "torch_version": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "device": str(self.device),
            "device_name": (torch.cuda.get_device_name(self.device)
                            if self.device.type == "cuda" else "cpu"),
            "tracked_layers": self.tracked,
            "tracked_layers_scale_invariant": self.scale_invariant,
            "status": status,
            "steps_completed": self.step,
            **extra,
        }

    def save_checkpoint(self) -> None:
        self.flush_metrics()
        _atomic_torch_save({
            "config": _json_roundtrip(self.cfg),
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "monitor": self.monitor.state_dict(),
            "rng": _capture_rng(),
            "drift_rng": self.drift_gen.get_state(),
            "metrics": copy.deepcopy(self.metrics),
        }, self.out_dir / CHECKPOINT_FILE)

    def load_checkpoint(self) -> bool:
        path = self.out_dir / CHECKPOINT_FILE
        if not path.is_file():
            return False
        # CPU first: RNG states must stay CPU tensors; load_state_dict moves the rest.
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state["config"] != _json_roundtrip(self.cfg):
            raise ValueError(f"{path} was written by a different config; refusing to resume")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.monitor.load_state_dict(state["monitor"])
        _restore_rng(state["rng"])
        self.drift_gen.set_state(state["drift_rng"])
        self.metrics = state["metrics"]
        self.step = int(state["step"])
        self.batches = self._batch_stream(self.step)
        return True

    def flush_metrics(self) -> None:
        if not self._pending:
            return
        losses = torch.stack([p[2] for p in self._pending]).double().cpu().numpy()
        accs = torch.stack([p[3] for p in self._pending]).double().cpu().numpy()
        for (step, lr, _, _), loss, acc in zip(self._pending, losses, accs, strict=True):
            self.metrics["step"].append(step)
            self.metrics["lr"].append(lr)
            self.metrics["loss"].append(float(loss))
            self.metrics["accuracy"].append(float(acc))
        self._pending.clear()
        bad = ~np.isfinite(losses)
        if bad.any():
            first = self.metrics["step"][len(self.metrics["step"]) - len(losses)
                                        + int(np.argmax(bad))]
            raise NonFiniteError(f"loss is not finite at step {first}")

    def table(self) -> pd.DataFrame:
        return self.monitor.to_dataframe()

    def write_tables(self) -> pd.DataFrame:
        table = self.table()
        atomic_write_frame(self.table_path, table)
        atomic_write_frame(self.out_dir / METRICS_FILE, pd.DataFrame(self.metrics))
        return table

    # ----------------------------------------------------------------- one step

    def per_unit_elr(self) -> np.ndarray:
        g = torch.stack([p.grad.detach().double().norm() for _, p in self.tracked_params])
        w = torch.stack([p.detach().double().norm() for _, p in self.tracked_params])
        return gradient_elr.raw(1.0, g.cpu().numpy(), w.cpu().numpy())

    def train_step(self) -> None:
        x, y = next(self.batches)
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.model(x)
        loss = F.cross_entropy(logits, y)
        if not bool(torch.isfinite(loss.detach())):
            # Stop before anything of this step is recorded: the monitor and the metrics
            # keep steps 0..step-1 only, so no row of a NaN loss is ever saved.
            raise _Diverged(self.step)
        loss.backward()
        if self.cfg["drift"]:
            with torch.no_grad():
                for _, p in self.tracked_params:
                    p.grad.copy_(drift_gradient(p.grad, p, self.drift_gen,
                                                projected=self.cfg["drift_projected"]))
        a = self.per_unit_elr() if self.schedule.needs_norms else None
        factor = decay_factor(self.cfg["decay"], self.step, self.cfg["steps"])
        lr = self.schedule(self.step, a) * factor
        _set_lrs(self.optimizer, lr, self.cfg.get("other_lr"), factor)
        if self.target_elr is not None:
            self.stepper.target_elr = self.target_elr * factor
        self.monitor.before_step(loss)
        if self.warmup is not None:
            with self.warmup.dampening():
                lr = float(self.optimizer.param_groups[0]["lr"])
                self.stepper.step()
        else:
            self.stepper.step()
        self.monitor.after_step()
        with torch.no_grad():
            acc = (logits.argmax(dim=1) == y).float().mean()
        self._pending.append((self.step, lr, loss.detach(), acc))
        self.step += 1
        if self.step % self.cfg["sync_every"] == 0:
            self.flush_metrics()

    def sweep(self) -> pd.DataFrame:
        x, y = next(self._batch_stream(0))
        batch = (x.to(self.device), y.to(self.device))
        return one_step_lr_sweep(self.model, batch, F.cross_entropy, None, self.tracked)

    def evaluate(self) -> dict[str, Any]:
        """The final record: test accuracies (:func:`~normdyn.validate.evaluation.evaluate_model`
        on at most the first 2048 test samples, BN recalibrated over
        ``bn_recalibration_batches`` training batches of the run's batch size, at most one
        epoch, drawn from their own stream) and the first/last training losses."""
        from normdyn.validate.data import make_batches
        from normdyn.validate.evaluation import evaluate_model

        X, y = _load_data(self.cfg, "test")
        X, y = X[:_EVAL_MAX], y[:_EVAL_MAX]
        batch = self.cfg["batch_size"]
        k = min(self.cfg["bn_recalibration_batches"], len(self.X) // batch)
        stream = make_batches(self.X, self.y, batch, seed=_seed_stream(self.cfg["seed"], 3))
        calibration = (next(stream)[0] for _ in range(k))
        out = evaluate_model(self.model, X, y, calibration, device=self.device)
        return {**out, **self.train_losses(), "diverged": False}

    def train_losses(self) -> dict[str, float]:
        """Mean training loss over the first and the last ``max(1, steps // 10)`` steps
        recorded (NaN when none is)."""
        losses = self.metrics["loss"]
        n = max(1, self.cfg["steps"] // 10)
        if not losses:
            return {"train_loss_first": float("nan"), "train_loss_last": float("nan")}
        return {"train_loss_first": float(np.mean(losses[:n])),
                "train_loss_last": float(np.mean(losses[-n:]))}


def run_training(
    config: RunConfig,
    out_dir: str | Path,
    *,
    progress: bool = True,
    table_format: str = "csv",
    stop_after: int | None = None,
    callback: Callable[[int], None] | None = None,
) -> pd.DataFrame:
    """Train ``config`` into ``out_dir`` (resuming a same-config checkpoint); return the table.

    ``stop_after`` stops cleanly once that many steps in total are done (a checkpoint
    is written there; the run is marked ``interrupted`` and resumes on the next call).
    ``callback(step)`` is called after every completed step (``step`` = steps done);
    an exception it raises (e.g. ``KeyboardInterrupt``, a simulated kill) aborts the
    run after the tables recorded so far are written, *without* a new checkpoint, so
    a resume restarts from the last periodic checkpoint.  Returns the monitor's
    per-step table (see :mod:`normdyn.validate.monitor`).
    """
    if not isinstance(config, RunConfig):
        raise ValueError(f"config must be a RunConfig, got {type(config).__name__}")
    _choice("table_format", table_format, TABLE_FORMATS)
    if stop_after is not None:
        check_int("stop_after", stop_after, minimum=0)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"out_dir {str(out_dir)!r} exists and is not a directory")
    resolved = config.resolved()
    previous = _check_out_dir(out_dir, resolved) if out_dir.is_dir() else None
    out_dir.mkdir(parents=True, exist_ok=True)
    run = _Run(config, out_dir, table_format)
    resumed_from = run.step if previous is not None and run.load_checkpoint() else None
    started = time.perf_counter()
    atomic_write_json(out_dir / CONFIG_FILE, run.meta("running", resumed_from=resumed_from))

    from tqdm.auto import tqdm

    total = run.cfg["steps"]
    bar = tqdm(total=total, initial=run.step, disable=not progress, desc="normdyn validate",
               unit="step", dynamic_ncols=True, leave=False)
    try:
        if run.cfg["sweep_critical_lr"] and run.step == 0:
            atomic_write_frame(out_dir / SWEEP_FILE, run.sweep())
        while run.step < total:
            if stop_after is not None and run.step >= stop_after:
                raise _Interrupted
            run.train_step()
            bar.update(1)
            if run.step % run.cfg["sync_every"] == 0 and run.metrics["loss"]:
                bar.set_postfix(loss=f"{run.metrics['loss'][-1]:.4g}", refresh=False)
            if run.step % run.cfg["checkpoint_every"] == 0 or run.step == total:
                run.save_checkpoint()
            if callback is not None:
                callback(run.step)
        run.flush_metrics()
        run.monitor.sync()  # a non-finite norm in the last partial window: diverged
    except _Interrupted:
        run.save_checkpoint()
        table = run.write_tables()
        atomic_write_json(out_dir / CONFIG_FILE, run.meta(
            "interrupted", resumed_from=resumed_from,
            wall_seconds=time.perf_counter() - started))
        return table
    except _Diverged as exc:
        _write_partial(run, "diverged", resumed_from, error=str(exc))
        kept = f"steps 0..{exc.step - 1} are kept" if exc.step else "no step is kept"
        raise NonFiniteError(f"training stopped: loss is not finite at step {exc.step}; "
                             f"{kept} in {out_dir}") from exc
    except NonFiniteError as exc:
        _write_partial(run, "diverged", resumed_from, error=str(exc))
        raise NonFiniteError(f"training stopped at step {run.step}: {exc}; everything "
                             f"recorded until then is in {out_dir}") from exc
    except BaseException as exc:
        _write_partial(run, "interrupted", resumed_from, error=repr(exc))
        raise
    finally:
        bar.close()
    table = run.write_tables()
    extra = run.evaluate()
    atomic_write_json(out_dir / CONFIG_FILE, run.meta(
        "completed", resumed_from=resumed_from, wall_seconds=time.perf_counter() - started,
        **extra))
    return table


def _write_partial(run: _Run, status: str, resumed_from: int | None, *, error: str) -> None:
    """Write what was recorded before an abort; never mask the original exception."""
    try:
        run.flush_metrics()
    except NonFiniteError:
        pass
    try:
        run.write_tables()
    except Exception as exc:  # noqa: BLE001 - the table itself may hold the bad value
        error = f"{error}; writing the table failed: {exc}"
    atomic_write_json(run.out_dir / CONFIG_FILE,
                      run.meta(status, resumed_from=resumed_from, error=error,
                               diverged=status == "diverged", **run.train_losses()))
