"""The configuration of a training run: :class:`RunConfig` and its allowed values.

A :class:`RunConfig` holds everything that determines a run of
:func:`~normdyn.validate.runs.run_training` (and nothing that does not); it validates
its fields on construction, and :meth:`RunConfig.resolved` fills in the
architecture defaults.  :func:`resolve_device` turns the ``device`` field into a
:class:`torch.device`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from normdyn._checks import check_in_range, check_int, check_nonnegative, check_positive

__all__ = [
    "RunConfig",
    "ARCHS",
    "DATA",
    "SCHEDULES",
    "OPTIMIZERS",
    "DEVICES",
    "TABLE_FORMATS",
    "DECAYS",
    "IMAGE_SIZES",
    "DEFAULT_BN_RECALIBRATION_BATCHES",
    "decay_factor",
    "resolve_device",
]

ARCHS = ("resnet", "mlp", "transformer")
DATA = ("digits", "digits32", "synthetic", "cifar10", "cifar100", "sequences", "fashion-mnist")
SCHEDULES = ("constant", "linear_warmup", "exponential_warmup", "critical_warmup", "step_decay")
OPTIMIZERS = ("sgd", "adam")
DEVICES = ("auto", "cpu", "cuda")
TABLE_FORMATS = ("csv", "parquet")
DECAYS = ("none", "cosine")
IMAGE_SIZES = (14, 16, 28, 32)
"""Fashion-MNIST image sizes: 28 native, 14 and 16 area-downsampled, 32 zero-padded."""
DEFAULT_BN_RECALIBRATION_BATCHES = 32
"""Training batches averaged (cumulatively) into the BatchNorm statistics before evaluation."""

_NORMS = {"resnet": ("batch",), "mlp": ("batch", "layer"), "transformer": ("layer",)}
_DEFAULT_NORM = {"resnet": "batch", "mlp": "batch", "transformer": "layer"}
_DEFAULT_WIDTH = {"resnet": 16, "mlp": 128, "transformer": 32}
_IMAGE_DATA = ("digits", "digits32", "synthetic", "cifar10", "cifar100", "fashion-mnist")
_NATIVE_IMAGE_SIZE = {"fashion-mnist": 28}


@dataclass(frozen=True)
class RunConfig:
    r"""Everything that determines a run (and nothing that does not).

    ``norm`` and ``width`` default to the architecture's (``None``); ``resolved()``
    fills them in.  ``norm`` is ``batch`` for the ResNet, ``batch|layer`` for the MLP,
    ``layer`` for the Transformer (whose ``norm_position`` is ``post|pre``).  ``width``
    is the ResNet's first-stage width, the MLP's hidden width or the Transformer's
    ``d_model``; ``depth`` is the ResNet depth (``6n+2``), the MLP's number of
    normalized layers or the Transformer's number of encoder layers.
    ``schedule_steps`` is the length ``n_steps`` of ``linear_warmup``, the time constant
    ``tau`` of ``exponential_warmup`` or the single milestone of ``step_decay`` (decay
    by 0.1); ``None`` gives ``steps // 10`` for the warm-ups and ``steps // 2`` for the
    decay.  ``schedule="critical_warmup"`` runs the shipped
    :class:`normdyn.CriticalLRWarmup` (``lr_t = min(lr, eta*_t)`` from the step the
    optimizer will take).  ``other_lr`` caps the lr of the parameters that are not
    scale invariant (biases, affines, classifier) at ``min(lr_t, other_lr)``;
    ``constrained_elr`` wraps the optimizer in :class:`normdyn.ConstrainedELR` with that
    lr-independent target.  ``n_samples`` sizes the
    synthetic data sets; ``data_root`` is where CIFAR is read from (never downloaded); for
    ``fashion-mnist`` it overrides the search of ``$NORMDYN_DATA/fashion-mnist/`` and
    ``/usr/share/datasets/fashion-mnist/`` (see :mod:`normdyn.validate.fashion_mnist`).
    ``image_size`` (``fashion-mnist`` only; ``None``: the native 28) is one of
    :data:`IMAGE_SIZES`.

    ``decay="cosine"`` multiplies the lr of step ``t`` (every param group, after
    ``schedule`` and the ``other_lr`` cap) *and*, with ``constrained_elr``, the target ELR
    by the same factor :func:`decay_factor` :math:`\tfrac12(1 + \cos(\pi t / T))`,
    ``T = steps``; ``"none"`` (default) leaves both constant.
    ``bn_recalibration_batches`` is the number K of training batches (capped at one
    epoch) over which the BatchNorm statistics are re-estimated, as a cumulative average,
    before the final evaluation (see :mod:`normdyn.validate.evaluation`).
    """

    arch: str = "resnet"
    depth: int = 20
    shortcuts: bool = True
    norm: str | None = None
    norm_position: str = "post"
    affine: bool = True
    width: int | None = None
    width_multiplier: float = 1.0
    data: str = "digits"
    data_root: str | None = None
    image_size: int | None = None
    n_samples: int = 2048
    steps: int = 100
    batch_size: int = 64
    lr: float = 0.1
    schedule: str = "constant"
    schedule_steps: int | None = None
    optimizer: str = "sgd"
    momentum: float = 0.0
    weight_decay: float = 0.0
    other_lr: float | None = None
    constrained_elr: float | None = None
    decay: str = "none"
    bn_recalibration_batches: int = DEFAULT_BN_RECALIBRATION_BATCHES
    drift: bool = False
    drift_projected: bool = False
    device: str = "auto"
    seed: int = 0
    sync_every: int = 50
    checkpoint_every: int = 100
    sweep_critical_lr: bool = False

    def __post_init__(self) -> None:
        _choice("arch", self.arch, ARCHS)
        check_int("depth", self.depth, minimum=1)
        if self.arch == "resnet" and (self.depth < 8 or (self.depth - 2) % 6):
            raise ValueError(f"depth must be 6n+2 (8, 14, 20, 56, 110, ...) for arch "
                             f"'resnet', got {self.depth}")
        for name in ("shortcuts", "affine", "drift", "drift_projected", "sweep_critical_lr"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.norm is not None:
            _choice("norm", self.norm, _NORMS[self.arch], f" for arch {self.arch!r}")
        _choice("norm_position", self.norm_position, ("post", "pre"))
        if self.width is not None:
            check_int("width", self.width, minimum=1)
        check_positive("width_multiplier", self.width_multiplier)
        _choice("data", self.data, DATA)
        if (self.arch == "transformer") != (self.data == "sequences"):
            raise ValueError(f"data {self.data!r} does not fit arch {self.arch!r}: the "
                             "transformer takes 'sequences', the others take images")
        if self.image_size is not None:
            if self.data not in _NATIVE_IMAGE_SIZE:
                raise ValueError(f"image_size applies to data 'fashion-mnist' only, got "
                                 f"image_size={self.image_size!r} with data {self.data!r}")
            if isinstance(self.image_size, bool) or self.image_size not in IMAGE_SIZES:
                raise ValueError(f"image_size must be one of "
                                 f"{', '.join(map(str, IMAGE_SIZES))}, got {self.image_size!r}")
        check_int("n_samples", self.n_samples, minimum=2)
        check_int("steps", self.steps, minimum=1)
        check_int("batch_size", self.batch_size, minimum=2)
        check_positive("lr", self.lr)
        _choice("schedule", self.schedule, SCHEDULES)
        if self.schedule_steps is not None:
            check_int("schedule_steps", self.schedule_steps, minimum=1)
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        check_in_range("momentum", self.momentum, 0.0, 1.0)
        if self.optimizer == "adam" and self.momentum:
            raise ValueError("momentum applies to optimizer 'sgd' only (adam uses its "
                             f"default betas), got {self.momentum}")
        check_nonnegative("weight_decay", self.weight_decay)
        if self.other_lr is not None:
            check_positive("other_lr", self.other_lr)
        if self.constrained_elr is not None:
            check_positive("constrained_elr", self.constrained_elr)
            if self.schedule == "critical_warmup":
                raise ValueError("constrained_elr cannot be combined with schedule="
                                 "'critical_warmup': ConstrainedELR fixes each tracked layer's "
                                 "angle per step, so the warm-up has no ELR spread to cap")
        _choice("decay", self.decay, DECAYS)
        check_int("bn_recalibration_batches", self.bn_recalibration_batches, minimum=1)
        _choice("device", self.device, DEVICES)
        check_int("seed", self.seed)
        check_int("sync_every", self.sync_every, minimum=1)
        check_int("checkpoint_every", self.checkpoint_every, minimum=1)
        if self.data in ("cifar10", "cifar100") and self.data_root is None \
                and not os.environ.get("NORMDYN_DATA"):
            raise ValueError(f"data_root is required for data {self.data!r} (or set "
                             "NORMDYN_DATA); datasets are never downloaded")

    def resolved(self) -> dict[str, Any]:
        """All fields with the architecture defaults filled in (JSON-serializable)."""
        out = dataclasses.asdict(self)
        out["norm"] = self.norm or _DEFAULT_NORM[self.arch]
        out["width"] = self.width or _DEFAULT_WIDTH[self.arch]
        if self.schedule in ("constant", "critical_warmup"):
            out["schedule_steps"] = None  # these schedules take no length
        elif out["schedule_steps"] is None:
            out["schedule_steps"] = max(1, self.steps // (2 if self.schedule == "step_decay"
                                                          else 10))
        if self.data in ("cifar10", "cifar100") and out["data_root"] is None:
            out["data_root"] = os.environ["NORMDYN_DATA"]
        if self.data in _NATIVE_IMAGE_SIZE and out["image_size"] is None:
            out["image_size"] = _NATIVE_IMAGE_SIZE[self.data]
        for key in ("lr", "momentum", "weight_decay", "width_multiplier", "other_lr",
                    "constrained_elr"):
            if out[key] is not None:
                out[key] = float(out[key])
        return out

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        """A config from a (resolved) dict; unknown keys raise ``ValueError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"config has unknown fields {unknown}")
        return cls(**values)


def decay_factor(decay: str, step: int, steps: int) -> float:
    r"""The factor on the lr (and target ELR) of step ``step`` of ``steps``.

    ``"none"``: 1.  ``"cosine"``: :math:`\tfrac12\,(1 + \cos(\pi\,t/T))`, from 1 at
    :math:`t = 0` down to :math:`\tfrac12(1 + \cos(\pi (T-1)/T)) > 0` at the last step.
    """
    _choice("decay", decay, DECAYS)
    check_int("steps", steps, minimum=1)
    check_int("step", step)
    if decay == "none":
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * step / steps))


def _choice(name: str, value: Any, options: Sequence[str], where: str = "") -> None:
    if value not in options:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, options))}{where}, "
                         f"got {value!r}")


def resolve_device(requested: str) -> torch.device:
    """``auto``: CUDA when available, else CPU.  ``cuda`` without CUDA: ``ValueError``."""
    _choice("device", requested, DEVICES)
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but CUDA is not available "
                         "(use --device auto or cpu)")
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)
