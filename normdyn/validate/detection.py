r"""Which weights of a torch model are scale invariant, and how invariant they really are.

A convolution or linear weight :math:`w` is *scale invariant* when the training loss
satisfies :math:`L(\alpha w) = L(w)` for every :math:`\alpha > 0` (THEORY.md §2, §6):
a normalization follows the layer with nothing in between that depends on the scale
of its output.  :func:`find_scale_invariant` decides this from the model's structure;
:func:`measure_defect` measures how far a real gradient is from the orthogonality
:math:`\langle w, \nabla w\rangle = 0` that invariance implies.

Rules (documented decisions)
----------------------------
The analysis propagates, through a :mod:`torch.fx` graph of the model, how each value
depends on the scale :math:`\alpha` of one weight.  Each value is

* **invariant** -- it does not change with :math:`\alpha` (inputs, constants, other
  parameters, and everything computed from invariant values only);
* **homogeneous** -- it is multiplied by :math:`\alpha` (a bias-free layer's output);
* **affine** -- :math:`\alpha u + b` with the layer's own bias :math:`b` added per
  output channel (a layer with ``bias``);
* **broken** -- anything else.

The weight is scale invariant iff every model output is invariant and at least one
normalization absorbed the scale.  The transfer rules:

* Normalizations -- ``BatchNorm*``/``SyncBatchNorm`` (``"batch"``), ``LayerNorm``
  (``"layer"``), ``GroupNorm`` (``"group"``), ``InstanceNorm*`` (``"instance"``),
  ``RMSNorm`` (``"rms"``), as modules or their ``torch.nn.functional`` forms -- turn a
  homogeneous input into an invariant output.  All of them are invariant to a global
  positive rescaling of their input (up to their ``eps``), whatever axes they normalize.
* **Bias.**  An affine input :math:`\alpha u + b` is invariant after the norm only if
  the norm subtracts a mean over axes along which :math:`b` is constant.  BatchNorm
  does (per-channel mean over batch and space), so a conv/linear *with* bias followed
  by BatchNorm is still invariant.  InstanceNorm, ``GroupNorm`` with one channel per
  group, and a ``LayerNorm`` over the spatial axes only, do so for a convolution.  A
  ``LayerNorm`` over a linear layer's output features does **not** remove a
  per-feature bias (the mean is taken across features, along which :math:`b` varies),
  so ``Linear(bias=True) -> LayerNorm`` is *not* invariant; RMSNorm never removes a
  bias.  Between a biased layer and its norm only no-op modules (``Identity``,
  ``contiguous``, ``clone``) are allowed.  The same holds for a biased layer *between*
  the weight and the norm: ``conv0 -> conv1(bias) -> BN`` keeps ``conv0`` invariant
  (BatchNorm removes ``conv1``'s bias), ``conv0 -> conv1(bias) -> ReLU -> BN`` does not.
* **Positively homogeneous operations keep invariance.**  ``ReLU`` satisfies
  :math:`\mathrm{ReLU}(\alpha x) = \alpha\,\mathrm{ReLU}(x)` for :math:`\alpha > 0`, and
  so do ``LeakyReLU``, ``PReLU``, max/average pooling, dropout (same mask),
  reshapes/views/permutes/transposes/flatten/indexing and means/sums, so a
  homogeneous value stays homogeneous through them (``conv -> ReLU -> BN`` *is*
  invariant).  Multiplying or dividing by an invariant value (a constant or a tensor
  that does not depend on :math:`w`), and a *bias-free* linear/conv layer, keep it
  homogeneous too.  ``a + b`` and ``cat`` are homogeneous only when every operand is.
* **Everything else breaks it**: a residual addition of an invariant value
  (``x + conv(x)``), a bias that the norm does not remove, saturating or smooth
  activations (tanh, GELU, softmax, ...), a product of two values that both depend on
  :math:`w` (attention scores), or the weight reaching an output unnormalized.

BatchNorm is analysed in its *training* behaviour (batch statistics): in ``eval()``
mode it uses running statistics and no layer is scale invariant.  ``eps`` makes all
normalizations only approximately invariant; :func:`measure_defect` shows by how much.

Fallback: when :func:`torch.fx.symbolic_trace` fails (data-dependent control flow),
the module that failed is made opaque and tracing is retried, so the rest of the
model is still analysed exactly.  Layers inside opaque modules (or the whole model,
if its own ``forward`` cannot be traced) are judged by a forward-hook heuristic run
on ``example_input``: a conv/linear whose output tensor is, unmodified (same storage
and version counter) or through pass-through modules (ReLU, dropout, pooling,
``Identity``, ``Flatten``), the input of the next executed normalization module with
a matching channel count.  The heuristic cannot see other uses of the output (e.g. a
residual addition elsewhere), so it can over-report; each result's ``reason`` says
which method decided it.
"""

from __future__ import annotations

import builtins
import math
import operator
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

__all__ = [
    "ScaleInvariantLayer",
    "LayerVerdict",
    "find_scale_invariant",
    "analyze_scale_invariance",
    "measure_defect",
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


# --------------------------------------------------------------------------- op tables

_NORM_MODULES: tuple[tuple[type[nn.Module], NormKind], ...] = (
    (nn.modules.batchnorm._BatchNorm, "batch"),
    (nn.LayerNorm, "layer"),
    (nn.GroupNorm, "group"),
    (nn.modules.instancenorm._InstanceNorm, "instance"),
)
if hasattr(nn, "RMSNorm"):
    _NORM_MODULES = (*_NORM_MODULES, (nn.RMSNorm, "rms"))

_NORM_FUNCTIONS: dict[Callable[..., Any], NormKind] = {
    F.batch_norm: "batch",
    F.layer_norm: "layer",
    F.group_norm: "group",
    F.instance_norm: "instance",
}
if hasattr(F, "rms_norm"):
    _NORM_FUNCTIONS[F.rms_norm] = "rms"

# Positively homogeneous of degree one in their first tensor argument (for alpha > 0).
_HOMOGENEOUS_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.Identity, nn.Flatten, nn.Unflatten,
    nn.modules.dropout._DropoutNd,
    nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
)
_HOMOGENEOUS_FUNCTIONS: set[Callable[..., Any]] = {
    torch.flatten, torch.reshape, torch.permute, torch.transpose, torch.squeeze,
    torch.unsqueeze, torch.relu, F.relu, F.leaky_relu, F.prelu, F.dropout, F.dropout1d,
    F.dropout2d, F.dropout3d, F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d,
    F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
    F.adaptive_avg_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d,
    F.adaptive_max_pool3d, torch.mean, torch.sum, torch.clone, torch.neg, operator.neg,
    operator.pos, operator.getitem, torch.movedim, torch.swapaxes, torch.narrow,
    torch.select, torch.chunk, torch.split, torch.unbind,
}
_HOMOGENEOUS_METHODS = {
    "view", "reshape", "permute", "transpose", "flatten", "contiguous", "unsqueeze",
    "squeeze", "relu", "relu_", "mean", "sum", "clone", "expand", "expand_as", "repeat",
    "view_as", "reshape_as", "to", "float", "double", "half", "bfloat16", "type_as",
    "narrow", "select", "unflatten", "movedim", "swapaxes", "t", "chunk", "split",
    "unbind", "neg", "detach",
}
# Allowed between a layer with bias and its normalization (keep alpha*u + b intact).
_NOOP_MODULES: tuple[type[nn.Module], ...] = (nn.Identity,)
_NOOP_METHODS = {"contiguous", "clone"}
_NOOP_FUNCTIONS: set[Callable[..., Any]] = {torch.clone}

# Products: homogeneous when exactly one operand depends on w (and not as a divisor).
_PRODUCT_FUNCTIONS: set[Callable[..., Any]] = {
    operator.mul, torch.mul, operator.matmul, torch.matmul, torch.bmm, torch.mm,
}
_DIVIDE_FUNCTIONS: set[Callable[..., Any]] = {operator.truediv, torch.div, torch.true_divide}
_PRODUCT_METHODS = {"mul", "matmul", "bmm", "mm"}
_DIVIDE_METHODS = {"div", "true_divide"}
_SUM_FUNCTIONS: set[Callable[..., Any]] = {operator.add, operator.sub, torch.add, torch.sub}
_SUM_METHODS = {"add", "sub"}
_CAT_FUNCTIONS: set[Callable[..., Any]] = {torch.cat, torch.stack, torch.concat}
_LINEAR_FUNCTIONS: dict[Callable[..., Any], int] = {
    F.linear: 2, F.conv1d: 2, F.conv2d: 2, F.conv3d: 2,
}
_META_ATTRS = {"shape", "dtype", "device", "ndim", "is_cuda", "requires_grad", "layout"}
_META_METHODS = {"size", "dim", "numel", "type", "get_device", "is_contiguous"}

_INV, _HOM, _AFF, _BRK = "invariant", "homogeneous", "affine", "broken"


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


# --------------------------------------------------------------------------- fx tracing


class _OpaqueTracer(fx.Tracer):
    """An fx tracer that treats the modules in ``opaque`` as leaves.

    When tracing fails inside a module, ``failed_path`` names the innermost module
    whose ``forward`` was being traced.
    """

    def __init__(self, opaque: set[str]) -> None:
        super().__init__()
        self.opaque = opaque
        self.failed_path: str | None = None
        self._stack: list[str] = []

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return module_qualified_name in self.opaque or super().is_leaf_module(
            m, module_qualified_name)

    def call_module(self, m: nn.Module, forward: Callable[..., Any], args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> Any:
        path = self.path_of_module(m)
        self._stack.append(path)
        try:
            return super().call_module(m, forward, args, kwargs)
        except Exception:
            if self.failed_path is None and not self.is_leaf_module(m, path):
                self.failed_path = path
            raise
        finally:
            self._stack.pop()


def _trace(model: nn.Module, max_retries: int = 32) -> tuple[fx.Graph | None, set[str], str]:
    """Trace ``model``, making failing submodules opaque; ``(graph, opaque, error)``."""
    opaque: set[str] = set()
    error = ""
    for _ in range(max_retries):
        tracer = _OpaqueTracer(set(opaque))
        try:
            graph = tracer.trace(model)
        except Exception as exc:  # fx raises many exception types
            error = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
            failed = tracer.failed_path
            if not failed or failed in opaque:
                return None, opaque, error
            opaque.add(failed)
            continue
        return graph, opaque, error
    return None, opaque, error


def _node_label(node: fx.Node, modules: dict[str, nn.Module]) -> str:
    if node.op == "call_module":
        return f"{type(modules[str(node.target)]).__name__} '{node.target}'"
    if node.op == "call_function":
        return f"{getattr(node.target, '__name__', str(node.target))}()"
    if node.op == "call_method":
        return f".{node.target}()"
    return f"{node.op} '{node.target}'"


def _flat_nodes(args: Any) -> list[fx.Node]:
    out: list[fx.Node] = []
    fx.node.map_arg(args, out.append)
    return out


class _Propagation:
    """Scale-dependence classes of every node for one weight (see the module docstring)."""

    def __init__(self, graph: fx.Graph, modules: dict[str, nn.Module], layer_name: str,
                 param_name: str) -> None:
        self.graph = graph
        self.modules = modules
        self.layer_name = layer_name
        self.layer = modules[layer_name]
        self.param_name = param_name
        self.cls: dict[fx.Node, str] = {}
        self.why: dict[fx.Node, str] = {}
        self.norms: list[tuple[str, NormKind]] = []
        self.path: dict[fx.Node, list[str]] = {}
        self.bias_from: dict[fx.Node, nn.Module] = {}

    def _source(self, node: fx.Node) -> str | None:
        if node.op == "call_module" and node.target == self.layer_name:
            return _AFF if _has_bias(self.layer) else _HOM
        if node.op == "get_attr" and node.target == self.param_name:
            return _HOM
        return None

    def _set(self, node: fx.Node, cls: str, why: str = "", via: Sequence[fx.Node] = ()) -> None:
        self.cls[node] = cls
        if cls == _BRK:
            self.why[node] = why
        elif cls in (_HOM, _AFF):
            prev = next((self.path[n] for n in via if n in self.path), [])
            self.path[node] = [*prev, _node_label(node, self.modules)] if via else []

    def run(self) -> LayerVerdict:
        for node in self.graph.nodes:
            source = self._source(node)
            inputs = _flat_nodes((node.args, node.kwargs))
            dependent = [n for n in inputs if self.cls.get(n, _INV) != _INV]
            if source is not None:
                if dependent:
                    self._set(node, _BRK, "the layer is applied to its own output")
                else:
                    self._set(node, source)
                    if source == _AFF:
                        self.bias_from[node] = self.layer
                continue
            if not dependent:
                if node.op != "output":
                    self.cls[node] = _INV
                continue
            if node.op == "output":
                return self._verdict(dependent)
            broken = [n for n in dependent if self.cls[n] == _BRK]
            if broken and not self._is_norm(node):
                self._set(node, _BRK, self.why[broken[0]])
                continue
            self._transfer(node, inputs, dependent)
        return self._verdict([])

    def _is_norm(self, node: fx.Node) -> bool:
        return self._norm_of(node) is not None

    def _norm_of(self, node: fx.Node) -> tuple[NormKind, nn.Module | None] | None:
        if node.op == "call_module":
            module = self.modules[str(node.target)]
            kind = _norm_kind(module)
            return None if kind is None else (kind, module)
        if node.op == "call_function" and node.target in _NORM_FUNCTIONS:
            return _NORM_FUNCTIONS[node.target], None  # type: ignore[index]
        return None

    def _first_arg(self, node: fx.Node) -> Any:
        if node.args:
            return node.args[0]
        return next(iter(node.kwargs.values()), None)

    def _transfer(self, node: fx.Node, inputs: list[fx.Node], dependent: list[fx.Node]) -> None:
        label = _node_label(node, self.modules)
        first = self._first_arg(node)
        first_cls = self.cls.get(first, _INV) if isinstance(first, fx.Node) else _INV
        only_first = len(dependent) == 1 and dependent[0] is first
        target = node.target

        # normalizations absorb the scale
        norm = self._norm_of(node)
        if norm is not None:
            kind, module = norm
            if not only_first:
                self._set(node, _BRK, f"{label} gets the weight's scale in a non-input argument")
            elif first_cls == _BRK:
                self._set(node, _BRK, self.why[first])
            elif first_cls == _AFF and not _removes_bias(self.bias_from[first], module, kind):
                whose = "the layer's own bias" if self.bias_from[first] is self.layer else \
                    "the bias of an intermediate layer"
                self._set(node, _BRK,
                          f"{whose} is not removed by {label} (a {kind} norm does not "
                          "subtract a mean over the axes the bias is constant on)")
            else:
                self.cls[node] = _INV
                self.norms.append((str(node.target) if node.op == "call_module" else node.name,
                                   kind))
                self.path.setdefault(node, self.path.get(first, []))
            return

        if node.op == "call_function" and target is builtins.getattr and len(node.args) >= 2 \
                and node.args[1] in _META_ATTRS:
            self.cls[node] = _INV
            return
        if node.op == "call_method" and target in _META_METHODS:
            self.cls[node] = _INV
            return

        # the layer's bias is intact only through no-ops
        if first_cls == _AFF:
            noop = (
                (node.op == "call_module"
                 and isinstance(self.modules[str(target)], _NOOP_MODULES))
                or (node.op == "call_method" and target in _NOOP_METHODS)
                or (node.op == "call_function" and target in _NOOP_FUNCTIONS)
            )
            if noop and only_first:
                self._set(node, _AFF, via=[first])
                self.bias_from[node] = self.bias_from[first]
            else:
                whose = "the layer has a bias" if self.bias_from[first] is self.layer else \
                    "a bias was added by an intermediate layer"
                self._set(node, _BRK, f"{whose} and the output passes through {label} "
                                      "before any normalization")
            return
        if any(self.cls[n] == _AFF for n in dependent):
            self._set(node, _BRK, f"the layer has a bias and its output reaches {label}")
            return

        # from here on every dependent input is homogeneous
        if node.op == "call_module":
            module = self.modules[str(target)]
            if isinstance(module, _HOMOGENEOUS_MODULES) and only_first:
                self._set(node, _HOM, via=[first])
            elif _layer_kind(module) is not None and only_first:
                # W(alpha u) + b: homogeneous plus this layer's per-channel bias
                self._set(node, _AFF if _has_bias(module) else _HOM, via=[first])
                if _has_bias(module):
                    self.bias_from[node] = module
            else:
                self._set(node, _BRK, f"{label} is not positively homogeneous")
            return

        if node.op == "call_function":
            fn = target
            if fn in _HOMOGENEOUS_FUNCTIONS and only_first:
                self._set(node, _HOM, via=[first])
            elif fn in _PRODUCT_FUNCTIONS:
                self._product(node, dependent, label)
            elif fn in _DIVIDE_FUNCTIONS:
                self._divide(node, dependent, label)
            elif fn in _SUM_FUNCTIONS:
                self._sum(node, inputs, dependent, label)
            elif fn in _CAT_FUNCTIONS:
                tensors = _flat_nodes(node.args[0] if node.args else node.kwargs.get("tensors"))
                if all(self.cls.get(n, _INV) == _HOM for n in tensors):
                    self._set(node, _HOM, via=tensors)
                else:
                    self._set(node, _BRK, f"{label} joins the weight's output with values that "
                                          "do not scale with it")
            elif fn in _LINEAR_FUNCTIONS:
                bias = node.args[_LINEAR_FUNCTIONS[fn]] if len(node.args) > 2 else \
                    node.kwargs.get("bias")
                if only_first and bias is None:
                    self._set(node, _HOM, via=[first])
                else:
                    self._set(node, _BRK, f"{label} with a bias before any normalization")
            else:
                self._set(node, _BRK, f"{label} is not positively homogeneous")
            return

        if node.op == "call_method":
            if target in _HOMOGENEOUS_METHODS and only_first:
                self._set(node, _HOM, via=[first])
            elif target in _PRODUCT_METHODS:
                self._product(node, dependent, label)
            elif target in _DIVIDE_METHODS:
                self._divide(node, dependent, label)
            elif target in _SUM_METHODS:
                self._sum(node, inputs, dependent, label)
            else:
                self._set(node, _BRK, f"{label} is not positively homogeneous")
            return
        self._set(node, _BRK, f"{label} is not analysed")

    def _product(self, node: fx.Node, dependent: list[fx.Node], label: str) -> None:
        if len(dependent) == 1:
            self._set(node, _HOM, via=dependent)
        else:
            self._set(node, _BRK, f"{label} multiplies two values that both scale with the "
                                  "weight (degree 2)")

    def _divide(self, node: fx.Node, dependent: list[fx.Node], label: str) -> None:
        first = self._first_arg(node)
        if len(dependent) == 1 and dependent[0] is first:
            self._set(node, _HOM, via=dependent)
        else:
            self._set(node, _BRK, f"{label} divides by a value that scales with the weight")

    def _sum(self, node: fx.Node, inputs: list[fx.Node], dependent: list[fx.Node],
             label: str) -> None:
        operands = [a for a in node.args[:2]]
        if all(isinstance(a, fx.Node) and self.cls.get(a, _INV) == _HOM for a in operands) \
                and len(operands) == 2:
            self._set(node, _HOM, via=dependent)
        else:
            self._set(node, _BRK, f"{label} adds a value that does not scale with the weight "
                                  "(e.g. a residual connection) before any normalization")

    def _verdict(self, dependent: list[fx.Node]) -> LayerVerdict:
        kind = _layer_kind(self.layer)
        assert kind is not None
        base = dict(name=self.layer_name, param_name=self.param_name, kind=kind)
        if dependent:
            node = dependent[0]
            if self.cls[node] == _BRK:
                reason = "fx: not scale invariant: " + self.why[node]
            else:
                path = self.path.get(node, [])
                via = f" (via {' -> '.join(path)})" if path else " directly"
                reason = ("fx: not scale invariant: the weight's output reaches the model "
                          f"output without a normalization{via}")
            return LayerVerdict(**base, invariant=False, norm_name=None, norm_kind=None,
                                method="fx", reason=reason)
        if not self.norms:
            return LayerVerdict(**base, invariant=False, norm_name=None, norm_kind=None,
                                method="fx",
                                reason="fx: not scale invariant: the weight does not "
                                       "influence the model output")
        norm_name, norm_kind = self.norms[0]
        extra = "" if len(self.norms) == 1 else \
            f" (and {', '.join(repr(n) for n, _ in self.norms[1:])})"
        bias = ""
        if _has_bias(self.layer):
            bias = "; its bias is removed by the norm's per-channel mean"
        return LayerVerdict(**base, invariant=True, norm_name=norm_name, norm_kind=norm_kind,
                            method="fx",
                            reason=f"fx: output is normalized by {norm_kind} norm "
                                   f"{norm_name!r}{extra} with only positively homogeneous "
                                   f"operations in between{bias}")



# --------------------------------------------------------------------------- hooks fallback

_PASS_THROUGH_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.LeakyReLU, nn.Identity, nn.Flatten, nn.modules.dropout._DropoutNd,
    nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
)


@dataclass
class _Event:
    name: str
    module: nn.Module
    inp: Tensor | None
    inp_version: int
    out: Tensor | None
    out_version: int


def _first_tensor(value: Any) -> Tensor | None:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], Tensor):
        return value[0]
    return None


def _same_data(a: Tensor | None, a_version: int, b: Tensor | None, b_version: int) -> bool:
    return (a is not None and b is not None
            and a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()
            and a_version == b_version)


def _out_channels(module: nn.Module) -> int:
    if isinstance(module, nn.modules.conv._ConvNd):
        return module.out_channels
    return module.out_features  # type: ignore[return-value]


def _norm_channels(module: nn.Module, kind: NormKind) -> int | None:
    if kind in ("batch", "instance"):
        return module.num_features  # type: ignore[return-value]
    if kind == "group":
        return module.num_channels  # type: ignore[return-value]
    shape = getattr(module, "normalized_shape", None)
    return int(shape[-1]) if shape else None


def _record_events(model: nn.Module, example_input: Any) -> list[_Event]:
    """Run ``model`` once (eval, no grad) and record every leaf module call in order.

    Tensors are kept alive until the analysis ends so that a storage address can
    never be reused by a later, unrelated tensor.  Buffers and train/eval modes are
    restored afterwards.
    """
    events: list[_Event] = []
    pending: dict[int, list[tuple[Tensor | None, int]]] = {}
    handles = []

    def pre_hook(module: nn.Module, args: tuple[Any, ...]) -> None:
        inp = _first_tensor(args)
        pending.setdefault(id(module), []).append((inp, inp._version if inp is not None else -1))

    def make_hook(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            inp, version = pending[id(module)].pop()
            out = _first_tensor(output)
            events.append(_Event(name, module, inp, version, out,
                                 out._version if out is not None else -1))
        return hook

    for name, module in model.named_modules():
        if next(module.children(), None) is None:
            handles.append(module.register_forward_pre_hook(pre_hook))
            handles.append(module.register_forward_hook(make_hook(name)))
    modes = {m: m.training for m in model.modules()}
    buffers = {k: b.detach().clone() for k, b in model.named_buffers()}
    try:
        model.eval()
        with torch.no_grad():
            if isinstance(example_input, (tuple, list)):
                model(*example_input)
            elif isinstance(example_input, dict):
                model(**example_input)
            else:
                model(example_input)
    finally:
        for handle in handles:
            handle.remove()
        for module, mode in modes.items():
            module.training = mode
        with torch.no_grad():
            for key, buf in model.named_buffers():
                buf.copy_(buffers[key])
    return events


def _hook_verdicts(model: nn.Module, example_input: Any, restrict: Iterable[str] | None,
                   why: str) -> dict[str, LayerVerdict]:
    events = _record_events(model, example_input)
    prefixes = None if restrict is None else tuple(restrict)
    calls: dict[str, list[LayerVerdict]] = {}
    for i, event in enumerate(events):
        kind = _layer_kind(event.module)
        if kind is None:
            continue
        if prefixes is not None and not any(
                event.name == p or event.name.startswith(p + ".") for p in prefixes):
            continue
        param_name = f"{event.name}.weight" if event.name else "weight"
        calls.setdefault(param_name, []).append(_hook_one(events, i, kind, param_name, why))
    # a module called several times must be invariant at every call
    return {name: next((v for v in vs if not v.invariant), vs[0]) for name, vs in calls.items()}


def _hook_one(events: list[_Event], i: int, kind: LayerKind, param_name: str,
              why: str) -> LayerVerdict:
    layer = events[i]
    base = dict(name=layer.name, param_name=param_name, kind=kind, method="hooks")
    prefix = f"hooks ({why}): "
    out, version = layer.out, layer.out_version
    bias = _has_bias(layer.module)
    passed: list[str] = []
    for event in events[i + 1:]:
        if not _same_data(out, version, event.inp, event.inp_version):
            break
        norm_kind = _norm_kind(event.module)
        if norm_kind is not None:
            channels = _norm_channels(event.module, norm_kind)
            if channels != _out_channels(layer.module):
                return LayerVerdict(**base, invariant=False, norm_name=None, norm_kind=None,
                                    reason=prefix + f"next normalization {event.name!r} has "
                                    f"{channels} channels, the layer {_out_channels(layer.module)}")
            if bias and (passed or not _removes_bias(layer.module, event.module, norm_kind)):
                return LayerVerdict(**base, invariant=False, norm_name=None, norm_kind=None,
                                    reason=prefix + "the layer's own bias is not removed by "
                                    f"{norm_kind} norm {event.name!r}")
            via = f" through {', '.join(passed)}" if passed else " directly"
            return LayerVerdict(**base, invariant=True, norm_name=event.name,
                                norm_kind=norm_kind,
                                reason=prefix + f"output feeds {norm_kind} norm "
                                f"{event.name!r}{via} (execution order heuristic)")
        if not isinstance(event.module, _PASS_THROUGH_MODULES):
            break
        passed.append(repr(event.name))
        out, version = event.out, event.out_version
    return LayerVerdict(**base, invariant=False, norm_name=None, norm_kind=None,
                        reason=prefix + "output is not passed unmodified to a normalization "
                        "module (execution order heuristic)")


# --------------------------------------------------------------------------- public API


def _unwrap(model: nn.Module) -> tuple[nn.Module, str]:
    wrappers: tuple[type[nn.Module], ...] = (nn.DataParallel,)
    try:
        from torch.nn.parallel import DistributedDataParallel

        wrappers = (*wrappers, DistributedDataParallel)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(model, wrappers):
        return model.module, "module."  # type: ignore[return-value]
    return model, ""


def analyze_scale_invariance(model: nn.Module,
                             example_input: Any = None) -> list[LayerVerdict]:
    """The detector's verdict for every conv/linear weight of ``model``, in module order.

    See the module docstring for the rules.  ``example_input`` (a tensor, a tuple of
    positional inputs or a dict of keyword inputs) is only used by the forward-hook
    fallback, when :mod:`torch.fx` cannot trace (part of) the model; the model's
    parameters, buffers and train/eval modes are left unchanged.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    inner, prefix = _unwrap(model)
    modules = dict(inner.named_modules())
    layers = [(name, m) for name, m in modules.items()
              if _layer_kind(m) is not None and isinstance(getattr(m, "weight", None),
                                                           nn.Parameter)]
    graph, opaque, error = _trace(inner)
    verdicts: dict[str, LayerVerdict] = {}
    hooked: set[str] = set()
    if graph is None:
        hooked = {name for name, _ in layers}
        why = f"torch.fx could not trace the model: {error}"
        restrict = None
    else:
        for name, _ in layers:
            if any(name == o or name.startswith(o + ".") for o in opaque):
                hooked.add(name)
            else:
                prop = _Propagation(graph, modules, name, f"{name}.weight")
                verdicts[name] = prop.run()
        why = ("torch.fx could not trace module(s) "
               f"{', '.join(repr(o) for o in sorted(opaque))}: {error}")
        restrict = sorted(opaque)
    if hooked:
        if example_input is None:
            if graph is None:
                raise ValueError(
                    f"torch.fx could not trace {type(inner).__name__} ({error}); pass "
                    "example_input=... to use the forward-hook heuristic, or names=[...] "
                    "to choose the parameters yourself")
            warnings.warn(
                f"{why}; their layers {sorted(hooked)} are not analysed (pass example_input "
                "to use the forward-hook heuristic)", stacklevel=2)
            for name in hooked:
                kind = _layer_kind(modules[name])
                assert kind is not None
                verdicts[name] = LayerVerdict(name, f"{name}.weight", kind, False, None, None,
                                              "skipped", f"not analysed: {why}")
        else:
            by_param = _hook_verdicts(inner, example_input, restrict, why)
            for name in hooked:
                kind = _layer_kind(modules[name])
                assert kind is not None
                verdicts[name] = by_param.get(
                    f"{name}.weight" if name else "weight",
                    LayerVerdict(name, f"{name}.weight", kind, False, None, None, "hooks",
                                 f"hooks ({why}): the layer was not called on example_input"))
    out = []
    for name, _ in layers:
        v = verdicts[name]
        if prefix:
            v = LayerVerdict(prefix + v.name, prefix + v.param_name, v.kind, v.invariant,
                             None if v.norm_name is None else prefix + v.norm_name,
                             v.norm_kind, v.method, v.reason)
        out.append(v)
    return out


def find_scale_invariant(model: nn.Module,
                         example_input: Tensor | None = None) -> list[ScaleInvariantLayer]:
    """The scale-invariant conv/linear weights of ``model``, in module order.

    A layer counts when its output feeds a normalization (BatchNorm, LayerNorm,
    GroupNorm, InstanceNorm, RMSNorm) with nothing scale-dependent in between; the
    rules (ReLU allowed, own bias removed by BatchNorm but not by a LayerNorm over
    features, residual additions break it, ...) are in the module docstring.  Uses
    :mod:`torch.fx`; falls back to a forward-hook heuristic on ``example_input`` where
    tracing fails.  Use :func:`analyze_scale_invariance` for the rejected layers too.
    """
    return [v.to_layer() for v in analyze_scale_invariance(model, example_input) if v.invariant]


def _call_loss(model: nn.Module, loss_fn: Callable[..., Tensor], batch: Any) -> Tensor:
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        inputs, targets = batch
        return loss_fn(model(inputs), targets)
    if isinstance(batch, Tensor):
        return loss_fn(model(batch))
    raise TypeError("batch must be an (inputs, targets) pair or an input tensor, got "
                    f"{type(batch).__name__}")


def measure_defect(model: nn.Module, loss_fn: Callable[..., Tensor], batch: Any,
                   *, names: Sequence[str] | None = None) -> pd.DataFrame:
    r"""The measured scale-invariance defect :math:`|\cos(w, \nabla w)|` of every weight.

    ``batch`` is an ``(inputs, targets)`` pair (loss ``loss_fn(model(inputs), targets)``)
    or an input tensor (loss ``loss_fn(model(batch))``).  ``names`` defaults to every
    parameter with two or more dimensions (conv kernels, linear and embedding
    weights).  One forward/backward pass in the model's current mode (use ``train()``:
    BatchNorm in ``eval()`` mode is not scale invariant); gradients are taken with
    :func:`torch.autograd.grad`, so ``.grad`` fields, parameters and buffers (BatchNorm
    running statistics) are left unchanged.

    Returns one row per weight: ``layer`` (parameter name), ``cos_wg`` (the absolute
    cosine, computed in float64; NaN when the gradient is zero or absent),
    ``grad_norm``, ``weight_norm`` and ``detected`` (whether
    :func:`find_scale_invariant` marks it invariant).  For an exactly invariant weight
    ``cos_wg`` is zero up to rounding and the normalization's ``eps``.
    """
    params = dict(model.named_parameters())
    if names is None:
        chosen = [n for n, p in params.items() if p.ndim >= 2 and p.requires_grad]
    else:
        chosen = list(names)
        missing = [n for n in chosen if n not in params]
        if missing:
            raise ValueError(f"unknown parameter name(s) {missing}; the model has "
                             f"{list(params)[:8]}...")
    if not chosen:
        raise ValueError("the model has no weight with two or more dimensions to measure")
    example = batch[0] if isinstance(batch, (tuple, list)) else batch
    detected = {d.param_name for d in find_scale_invariant(model, example)}
    buffers = {k: b.detach().clone() for k, b in model.named_buffers()}
    try:
        loss = _call_loss(model, loss_fn, batch)
        grads = torch.autograd.grad(loss, [params[n] for n in chosen], allow_unused=True)
    finally:
        with torch.no_grad():
            for key, buf in model.named_buffers():
                buf.copy_(buffers[key])
    rows = []
    for name, grad in zip(chosen, grads, strict=True):
        w = params[name].detach().double()
        w_norm = float(torch.linalg.vector_norm(w))
        if grad is None:
            rows.append((name, math.nan, 0.0, w_norm, name in detected))
            continue
        g = grad.detach().double()
        g_norm = float(torch.linalg.vector_norm(g))
        denom = w_norm * g_norm
        cos = abs(float(torch.dot(w.reshape(-1), g.reshape(-1)))) / denom if denom > 0 \
            else math.nan
        rows.append((name, cos, g_norm, w_norm, name in detected))
    return pd.DataFrame(rows, columns=["layer", "cos_wg", "grad_norm", "weight_norm",
                                       "detected"])
