"""Architectures used to validate the theory on real networks.

Three families, all written with explicit, readably named modules so that the
monitor can address single weight tensors by name:

* :func:`resnet_cifar` -- the CIFAR ResNet v1 of He et al. (2016), depth ``6n+2``.
  Every convolution has ``bias=False`` and feeds a :class:`~torch.nn.BatchNorm2d`
  directly (the downsampling shortcut is the option-B 1x1 projection + BN), so
  every convolution weight is scale invariant.  ``shortcuts=False`` gives the
  "NoShort" variant without any residual addition.
* :func:`plain_mlp` -- a deep plain MLP, ``Linear(bias=False) -> Norm -> ReLU``.
* :func:`transformer_encoder` -- a small post-LN or pre-LN Transformer encoder
  classifier for float sequences.

Convolutions and linear layers get Kaiming-normal initialization (fan-in, ReLU
gain; He et al. 2015) and zero biases.  :func:`build_model` dispatches by name and
:data:`TINY_CONFIGS` holds configurations that train one step in milliseconds.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from normdyn._checks import check_int, check_positive

__all__ = [
    "ARCHITECTURES",
    "TINY_CONFIGS",
    "BasicBlock",
    "ConvBN",
    "ResNetCIFAR",
    "PlainMLP",
    "SelfAttention",
    "EncoderLayer",
    "TransformerEncoderClassifier",
    "resnet_cifar",
    "plain_mlp",
    "transformer_encoder",
    "build_model",
    "example_input",
    "kaiming_init",
]

_NORMS = ("batch", "layer")
_NORM_POSITIONS = ("post", "pre")


def kaiming_init(model: nn.Module) -> nn.Module:
    """Kaiming-normal (fan-in, ReLU gain) weights and zero biases for convs and linears."""
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


# --------------------------------------------------------------------------- ResNet


class ConvBN(nn.Module):
    """A bias-free convolution followed directly by batch normalization."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel_size: int, stride: int, affine: bool
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_ch, out_ch, kernel_size, stride=stride, padding=kernel_size // 2, bias=False
        )
        self.bn = nn.BatchNorm2d(out_ch, affine=affine)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn(self.conv(x))


class BasicBlock(nn.Module):
    """``conv1-bn1-ReLU-conv2-bn2 (+ shortcut) -> ReLU``.

    ``shortcut`` is an :class:`~torch.nn.Identity`, a :class:`ConvBN` projection
    when the shape changes, or ``None`` for the NoShort variant (no addition).
    """

    def __init__(
        self, in_ch: int, out_ch: int, stride: int, *, shortcut: bool, affine: bool
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch, affine=affine)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch, affine=affine)
        self.shortcut = _make_shortcut(in_ch, out_ch, stride, shortcut, affine)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return F.relu(out)


def _make_shortcut(
    in_ch: int, out_ch: int, stride: int, enabled: bool, affine: bool
) -> nn.Module | None:
    if not enabled:
        return None
    if stride == 1 and in_ch == out_ch:
        return nn.Identity()
    return ConvBN(in_ch, out_ch, 1, stride, affine)


class ResNetCIFAR(nn.Module):
    """CIFAR ResNet v1: stem, three stages of ``n`` basic blocks, pool, classifier.

    Module names: ``stem.conv``, ``stem.bn``, ``stage{1,2,3}.block{i}.{conv1,bn1,
    conv2,bn2}``, ``stage{s}.block0.shortcut.{conv,bn}`` (projections) and
    ``classifier``.
    """

    def __init__(
        self,
        n: int,
        widths: tuple[int, int, int],
        *,
        shortcuts: bool,
        affine: bool,
        num_classes: int,
        in_channels: int,
    ) -> None:
        super().__init__()
        self.stem = ConvBN(in_channels, widths[0], 3, 1, affine)
        in_ch = widths[0]
        for index, out_ch in enumerate(widths):
            stride = 1 if index == 0 else 2
            stage = _make_stage(n, in_ch, out_ch, stride, shortcuts, affine)
            self.add_module(f"stage{index + 1}", stage)
            in_ch = out_ch
        self.classifier = nn.Linear(widths[-1], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.stem(x))
        x = self.stage3(self.stage2(self.stage1(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.classifier(x)


def _make_stage(
    n: int, in_ch: int, out_ch: int, stride: int, shortcuts: bool, affine: bool
) -> nn.Sequential:
    blocks: OrderedDict[str, nn.Module] = OrderedDict()
    for i in range(n):
        blocks[f"block{i}"] = BasicBlock(
            in_ch if i == 0 else out_ch,
            out_ch,
            stride if i == 0 else 1,
            shortcut=shortcuts,
            affine=affine,
        )
    return nn.Sequential(blocks)


def _resnet_blocks_per_stage(depth: Any) -> int:
    depth = check_int("depth", depth)
    if depth < 8:
        raise ValueError(f"depth must be 6n+2 with n >= 1, got {depth}")
    if (depth - 2) % 6:
        raise ValueError(f"depth must be 6n+2, got {depth}")
    return (depth - 2) // 6


def _stage_widths(width: int, width_multiplier: float) -> tuple[int, int, int]:
    check_int("width", width, minimum=1)
    check_positive("width_multiplier", width_multiplier)
    base = width * width_multiplier
    return tuple(max(1, round(base * factor)) for factor in (1, 2, 4))  # type: ignore[return-value]


def resnet_cifar(
    depth: int,
    *,
    shortcuts: bool = True,
    affine: bool = True,
    width: int = 16,
    width_multiplier: float = 1.0,
    num_classes: int = 10,
    in_channels: int = 3,
) -> ResNetCIFAR:
    """The CIFAR ResNet v1 of He et al. (2016) with ``depth = 6n+2`` (20, 56, 110, ...).

    Stage widths are ``width * width_multiplier * (1, 2, 4)`` (16/32/64 by default).
    ``shortcuts=False`` is the NoShort variant; ``affine`` toggles the BN affine
    parameters.  Every convolution is bias-free and followed directly by a
    :class:`~torch.nn.BatchNorm2d`, so every convolution weight is scale invariant.
    """
    n = _resnet_blocks_per_stage(depth)
    widths = _stage_widths(width, width_multiplier)
    check_int("num_classes", num_classes, minimum=1)
    check_int("in_channels", in_channels, minimum=1)
    model = ResNetCIFAR(
        n,
        widths,
        shortcuts=shortcuts,
        affine=affine,
        num_classes=num_classes,
        in_channels=in_channels,
    )
    return kaiming_init(model)  # type: ignore[return-value]


# --------------------------------------------------------------------------- MLP


def _make_norm(norm: str, width: int, affine: bool) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm1d(width, affine=affine)
    if norm == "layer":
        return nn.LayerNorm(width, elementwise_affine=affine)
    raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")


class PlainMLP(nn.Module):
    """``depth`` blocks ``Linear(bias=False) -> Norm -> ReLU`` and a linear classifier.

    Inputs are flattened, so images work directly.  Module names:
    ``layer{i}.linear``, ``layer{i}.norm`` and ``classifier``.
    """

    def __init__(
        self, depth: int, width: int, in_features: int, num_classes: int, norm: str, affine: bool
    ) -> None:
        super().__init__()
        self.layer_names = [f"layer{i}" for i in range(depth)]
        for i, name in enumerate(self.layer_names):
            block = nn.Module()
            block.linear = nn.Linear(in_features if i == 0 else width, width, bias=False)
            block.norm = _make_norm(norm, width, affine)
            self.add_module(name, block)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        for name in self.layer_names:
            block = getattr(self, name)
            x = F.relu(block.norm(block.linear(x)))
        return self.classifier(x)


def plain_mlp(
    depth: int,
    width: int,
    in_features: int,
    num_classes: int,
    *,
    norm: str = "batch",
    affine: bool = True,
) -> PlainMLP:
    """A deep plain MLP with ``depth`` normalized hidden layers of ``width`` units.

    ``norm`` is ``"batch"`` (:class:`~torch.nn.BatchNorm1d`) or ``"layer"``
    (:class:`~torch.nn.LayerNorm`).  The hidden linears are bias-free; the final
    classifier has a bias and is not normalized.
    """
    depth = check_int("depth", depth, minimum=1)
    width = check_int("width", width, minimum=1)
    in_features = check_int("in_features", in_features, minimum=1)
    num_classes = check_int("num_classes", num_classes, minimum=1)
    if norm not in _NORMS:
        raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")
    return kaiming_init(  # type: ignore[return-value]
        PlainMLP(depth, width, in_features, num_classes, norm, affine)
    )


# --------------------------------------------------------------------------- Transformer


class SelfAttention(nn.Module):
    """Multi-head self-attention with explicit ``q``, ``k``, ``v`` and ``out`` linears."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.q = nn.Linear(d_model, d_model)
        self.k = nn.Linear(d_model, d_model)
        self.v = nn.Linear(d_model, d_model)
        self.out = nn.Linear(d_model, d_model)

    def _split(self, x: Tensor) -> Tensor:
        batch, seq, d_model = x.shape
        return x.view(batch, seq, self.n_heads, d_model // self.n_heads).transpose(1, 2)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        heads = torch.softmax(scores, dim=-1) @ v
        return self.out(heads.transpose(1, 2).flatten(2))


class EncoderLayer(nn.Module):
    """Attention and a two-layer ReLU MLP, each a residual branch, post- or pre-LN.

    Post-LN: ``x = norm(x + f(x))``.  Pre-LN: ``x = x + f(norm(x))``.
    """

    def __init__(
        self, d_model: int, n_heads: int, mlp_ratio: int, norm_position: str, affine: bool
    ) -> None:
        super().__init__()
        self.pre = norm_position == "pre"
        self.attn = SelfAttention(d_model, n_heads)
        self.norm1 = nn.LayerNorm(d_model, elementwise_affine=affine)
        self.mlp = nn.Sequential(
            OrderedDict(
                fc1=nn.Linear(d_model, mlp_ratio * d_model),
                act=nn.ReLU(),
                fc2=nn.Linear(mlp_ratio * d_model, d_model),
            )
        )
        self.norm2 = nn.LayerNorm(d_model, elementwise_affine=affine)

    def forward(self, x: Tensor) -> Tensor:
        if self.pre:
            x = x + self.attn(self.norm1(x))
            return x + self.mlp(self.norm2(x))
        x = self.norm1(x + self.attn(x))
        return self.norm2(x + self.mlp(x))


class TransformerEncoderClassifier(nn.Module):
    """Linear embedding + learned positions, encoder layers, mean pool, classifier.

    Module names: ``embed``, ``pos_embed`` (a parameter), ``layer{i}.attn.{q,k,v,out}``,
    ``layer{i}.norm{1,2}``, ``layer{i}.mlp.{fc1,fc2}``, ``final_norm`` (pre-LN only)
    and ``classifier``.  Input shape: ``(batch, seq, input_dim)`` with
    ``seq <= seq_len``.
    """

    def __init__(
        self,
        *,
        input_dim: int,
        d_model: int,
        n_heads: int,
        n_layers: int,
        seq_len: int,
        num_classes: int,
        norm_position: str,
        mlp_ratio: int,
        affine: bool,
    ) -> None:
        super().__init__()
        self.embed = nn.Linear(input_dim, d_model)
        self.pos_embed = nn.Parameter(torch.zeros(1, seq_len, d_model))
        self.layer_names = [f"layer{i}" for i in range(n_layers)]
        for name in self.layer_names:
            layer = EncoderLayer(d_model, n_heads, mlp_ratio, norm_position, affine)
            self.add_module(name, layer)
        self.final_norm: nn.Module | None = None
        if norm_position == "pre":
            self.final_norm = nn.LayerNorm(d_model, elementwise_affine=affine)
        self.classifier = nn.Linear(d_model, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.embed(x) + self.pos_embed[:, : x.shape[1]]
        for name in self.layer_names:
            x = getattr(self, name)(x)
        if self.final_norm is not None:
            x = self.final_norm(x)
        return self.classifier(x.mean(dim=1))


def transformer_encoder(
    *,
    input_dim: int,
    d_model: int,
    n_heads: int,
    n_layers: int,
    seq_len: int,
    num_classes: int,
    norm_position: str = "post",
    mlp_ratio: int = 4,
    affine: bool = True,
) -> TransformerEncoderClassifier:
    """A small Transformer encoder classifier for float sequences.

    ``norm_position`` is ``"post"`` (the original Transformer) or ``"pre"``
    (LayerNorm inside each residual branch, plus a final LayerNorm).
    """
    for name, value in (
        ("input_dim", input_dim),
        ("d_model", d_model),
        ("n_heads", n_heads),
        ("n_layers", n_layers),
        ("seq_len", seq_len),
        ("num_classes", num_classes),
        ("mlp_ratio", mlp_ratio),
    ):
        check_int(name, value, minimum=1)
    if d_model % n_heads:
        raise ValueError(f"d_model must be divisible by n_heads={n_heads}, got {d_model}")
    if norm_position not in _NORM_POSITIONS:
        raise ValueError(f"norm_position must be one of {_NORM_POSITIONS}, got {norm_position!r}")
    model = TransformerEncoderClassifier(
        input_dim=input_dim,
        d_model=d_model,
        n_heads=n_heads,
        n_layers=n_layers,
        seq_len=seq_len,
        num_classes=num_classes,
        norm_position=norm_position,
        mlp_ratio=mlp_ratio,
        affine=affine,
    )
    kaiming_init(model)
    nn.init.normal_(model.pos_embed, std=0.02)
    return model


# --------------------------------------------------------------------------- dispatch

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "resnet": resnet_cifar,
    "mlp": plain_mlp,
    "transformer": transformer_encoder,
}

TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "resnet": {"depth": 8, "width": 4, "num_classes": 10, "in_channels": 3},
    "mlp": {"depth": 4, "width": 16, "in_features": 64, "num_classes": 10},
    "transformer": {
        "input_dim": 4,
        "d_model": 16,
        "n_heads": 2,
        "n_layers": 2,
        "seq_len": 8,
        "num_classes": 3,
    },
}
"""Keyword arguments of :func:`build_model` for tiny models (one step in milliseconds)."""


def build_model(arch: str, **kwargs: Any) -> nn.Module:
    """Build ``arch`` (``"resnet"``, ``"mlp"`` or ``"transformer"``) from ``kwargs``."""
    if arch not in ARCHITECTURES:
        valid = ", ".join(repr(name) for name in sorted(ARCHITECTURES))
        raise ValueError(f"arch must be one of {valid}, got {arch!r}")
    return ARCHITECTURES[arch](**kwargs)


def example_input(
    arch: str, config: dict[str, Any], *, batch_size: int = 4, image_size: int = 8, seed: int = 0
) -> Tensor:
    """A random float32 input batch that a model built from ``config`` accepts."""
    if arch not in ARCHITECTURES:
        valid = ", ".join(repr(name) for name in sorted(ARCHITECTURES))
        raise ValueError(f"arch must be one of {valid}, got {arch!r}")
    shapes = {
        "resnet": lambda: (config.get("in_channels", 3), image_size, image_size),
        "mlp": lambda: (config["in_features"],),
        "transformer": lambda: (config["seq_len"], config["input_dim"]),
    }
    generator = torch.Generator().manual_seed(seed)
    return torch.randn((batch_size, *shapes[arch]()), generator=generator)
