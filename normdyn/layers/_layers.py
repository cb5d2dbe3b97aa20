"""Result types of the scale-invariance detector and the layer/norm classification it uses.

:class:`ScaleInvariantLayer` and :class:`LayerVerdict` are the public results of
:mod:`normdyn.layers.detection` (and are re-exported there).  The helpers decide
which modules are conv/linear layers or normalizations, and whether a normalization
removes a layer's bias (the **Bias** rule of :mod:`normdyn.layers._fx_invariance`);
both the :mod:`torch.fx` analysis and the forward-hook fallback use them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from torch import nn

__all__ = [
    "LayerKind",
    "NormKind",
    "ScaleInvariantLayer",
    "LayerVerdict",
    "_NORM_MODULES",
    "_layer_kind",
    "_norm_kind",
    "_has_bias",
    "_removes_bias",
    "_normalizes",
    "_per_channel",
    "_short_names",
    "_one_line",
]

LayerKind = Literal["conv", "linear"]
NormKind = Literal["batch", "layer", "group", "instance", "rms"]


@dataclass(frozen=True)
class ScaleInvariantLayer:
    """A conv/linear weight whose loss is invariant to rescaling it.

    ``name`` is the module name, ``param_name`` the parameter's name in
    ``model.named_parameters()`` (e.g. ``"stage1.block0.conv1.weight"``), ``norm_name``
    the normalization that absorbs the scale (module name, or the fx node name of a
    functional norm) and ``reason`` how the decision was made.
    """

    name: str
    param_name: str
    kind: LayerKind
    norm_name: str
    norm_kind: NormKind
    reason: str


@dataclass(frozen=True)
class LayerVerdict:
    """The detector's decision for one conv/linear weight, invariant or not."""

    name: str
    param_name: str
    kind: LayerKind
    invariant: bool
    norm_name: str | None
    norm_kind: NormKind | None
    method: Literal["fx", "hooks", "skipped"]
    reason: str

    def to_layer(self) -> ScaleInvariantLayer:
        assert self.invariant and self.norm_name is not None and self.norm_kind is not None
        return ScaleInvariantLayer(self.name, self.param_name, self.kind, self.norm_name,
                                   self.norm_kind, self.reason)


_NORM_MODULES: tuple[tuple[type[nn.Module], NormKind], ...] = (
    (nn.modules.batchnorm._BatchNorm, "batch"),
    (nn.LayerNorm, "layer"),
    (nn.GroupNorm, "group"),
    (nn.modules.instancenorm._InstanceNorm, "instance"),
)
if hasattr(nn, "RMSNorm"):
    _NORM_MODULES = (*_NORM_MODULES, (nn.RMSNorm, "rms"))


def _layer_kind(module: nn.Module) -> LayerKind | None:
    if isinstance(module, nn.modules.conv._ConvNd):
        return "conv"
    if isinstance(module, nn.Linear):
        return "linear"
    return None


def _norm_kind(module: nn.Module) -> NormKind | None:
    for cls, kind in _NORM_MODULES:
        if isinstance(module, cls):
            return kind
    return None


def _has_bias(module: nn.Module) -> bool:
    return getattr(module, "bias", None) is not None


def _removes_bias(layer: nn.Module, norm: nn.Module | None, norm_kind: NormKind) -> bool:
    """Whether ``norm`` subtracts a mean over axes along which ``layer``'s bias is constant.

    The bias is added along the channel axis (axis 1) of a convolution and along the
    last axis of a linear layer.
    """
    conv = isinstance(layer, nn.modules.conv._ConvNd)
    if norm_kind == "batch":
        return True
    if not conv or norm_kind == "rms":
        return False
    if norm_kind == "instance":
        return True
    if norm_kind == "group":
        return norm is not None and norm.num_groups == norm.num_channels  # type: ignore[union-attr]
    if norm_kind == "layer" and isinstance(norm, nn.LayerNorm):
        spatial_dims = len(layer.kernel_size)  # type: ignore[attr-defined]
        return len(norm.normalized_shape) <= spatial_dims
    return False


def _normalizes(module: nn.Module) -> bool:
    """Whether a norm module normalizes with the statistics of its input, now.

    ``BatchNorm`` in ``eval()`` mode with running statistics, and ``InstanceNorm`` with
    ``track_running_stats`` in ``eval()`` mode, apply a fixed per-channel affine map
    instead (the same test as torch's own ``forward``).
    """
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return module.training or (module.running_mean is None and module.running_var is None)
    if isinstance(module, nn.modules.instancenorm._InstanceNorm):
        return module.training or not module.track_running_stats
    return True


def _per_channel(norm: nn.Module | None, kind: NormKind) -> bool:
    """Whether the norm normalizes every channel (axis 1) on its own."""
    if kind in ("batch", "instance"):
        return True
    if kind == "group":
        return norm is not None and norm.num_groups == norm.num_channels  # type: ignore[union-attr]
    return False


def _short_names(names: Sequence[str], limit: int = 3) -> str:
    """``'a', 'b', 'c' and 5 more``: the first few of ``names`` for a one-line message.

    Each name is cut to 48 characters, so the result stays short whatever the model.
    """
    names = list(names)
    shown = ", ".join(repr(n if len(n) <= 48 else n[:45] + "...") for n in names[:limit])
    rest = len(names) - limit
    return shown + (f" and {rest} more" if rest > 0 else "")


def _one_line(message: str, limit: int = 300) -> str:
    """``message`` on one line of at most ``limit`` characters (cut with ``...``)."""
    message = " ".join(message.split())
    return message if len(message) <= limit else message[: limit - 3] + "..."
