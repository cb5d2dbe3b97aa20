r"""The :mod:`torch.fx` analysis of scale invariance: graph tracing and transfer rules.

:func:`_trace` traces a model (making submodules that fail to trace opaque) and
:class:`_Propagation` walks the graph for one weight, classifying every node by how
it depends on the weight's scale.  :func:`normdyn.layers.detection.analyze_scale_invariance`
runs it for every conv/linear weight.

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
* **Concatenation into a per-channel norm.**  ``torch.cat(..., dim=1)`` of the weight's
  (homogeneous) output with values that do not scale with it (DenseNet's feature
  concatenation) is **channel-partial**: some channels are multiplied by
  :math:`\alpha`, the others are invariant.  A norm that normalizes every channel on
  its own -- BatchNorm, InstanceNorm, ``GroupNorm`` with one channel per group -- turns
  it into an invariant value, since each channel's mean and variance scale with that
  channel.  Elementwise positively homogeneous operations (ReLU, LeakyReLU, PReLU,
  dropout, pooling, no-ops) and further channel concatenations keep it
  channel-partial; anything else (LayerNorm over channels, a conv or linear layer that
  mixes channels, reshapes, sums) breaks it.  Only ``dim=1`` (a literal, positive) is
  recognised: the graph has no shapes to resolve a negative ``dim``.
* **Norms in eval mode do not normalize.**  A ``BatchNorm`` in ``eval()`` mode (with
  running statistics), an ``InstanceNorm`` with ``track_running_stats`` in ``eval()``
  mode, and ``F.batch_norm(..., training=False)`` with running statistics apply a fixed
  per-channel affine map :math:`x \mapsto kx + c`: a homogeneous input becomes affine
  (its shift :math:`c` plays the role of a bias, removed only by a following norm as in
  the **Bias** rule), so frozen-statistics BatchNorm makes the layers before it *not*
  scale invariant.
* **Everything else breaks it**: a residual addition of an invariant value
  (``x + conv(x)``), a bias that the norm does not remove, saturating or smooth
  activations (tanh, GELU, softmax, ...), a product of two values that both depend on
  :math:`w` (attention scores), or the weight reaching an output unnormalized.

Each norm is analysed in the mode it is in when the detector runs (``module.training``):
call the detector on the model as it will be trained.  ``eps`` makes all
normalizations only approximately invariant;
:func:`~normdyn.layers.detection.measure_defect` shows by how much.

Modules that :func:`_trace` makes opaque are judged by the forward-hook fallback of
:mod:`normdyn.layers._hook_invariance` instead.
"""

from __future__ import annotations

import builtins
import operator
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from normdyn.layers._layers import (
    LayerVerdict,
    NormKind,
    _has_bias,
    _layer_kind,
    _norm_kind,
    _normalizes,
    _per_channel,
    _removes_bias,
)

__all__ = ["_trace", "_Propagation"]


# --------------------------------------------------------------------------- op tables

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
_PART = "channel-partial"   # some channels (dim 1) homogeneous, the others invariant

# Elementwise (per channel) positively homogeneous: keep a channel-partial value so.
_CHANNELWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.Identity, nn.modules.dropout._DropoutNd,
    nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
    nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd,
)
_CHANNELWISE_FUNCTIONS: set[Callable[..., Any]] = {
    torch.relu, F.relu, F.leaky_relu, F.dropout, F.dropout1d, F.dropout2d, F.dropout3d,
    F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d,
    F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d, torch.clone,
}
_CHANNELWISE_METHODS = {"relu", "relu_", "contiguous", "clone", "to", "float", "double",
                        "half", "bfloat16", "type_as", "detach"}


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


def _functional_normalizes(node: fx.Node, kind: NormKind) -> bool | None:
    """Whether a functional norm call uses the statistics of its input (None: unknown)."""
    def arg(index: int, name: str, default: Any) -> Any:
        return node.args[index] if len(node.args) > index else node.kwargs.get(name, default)

    if kind == "batch":
        training, running_mean = arg(5, "training", False), arg(1, "running_mean", None)
        if running_mean is None or training is True:
            return True
        return False if training is False else None
    if kind == "instance":
        use_input_stats = arg(5, "use_input_stats", True)
        return use_input_stats if isinstance(use_input_stats, bool) else None
    return True


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
        self.frozen: dict[nn.Module, str] = {}   # eval-mode norm -> its label

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
        elif cls in (_HOM, _AFF, _PART):
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

    def _norm_of(self, node: fx.Node) -> tuple[NormKind, nn.Module | None, bool | None] | None:
        """``(kind, module, normalizes)`` of a norm node; ``normalizes`` is None if unknown."""
        if node.op == "call_module":
            module = self.modules[str(node.target)]
            kind = _norm_kind(module)
            return None if kind is None else (kind, module, _normalizes(module))
        if node.op == "call_function" and node.target in _NORM_FUNCTIONS:
            kind = _NORM_FUNCTIONS[node.target]  # type: ignore[index]
            return kind, None, _functional_normalizes(node, kind)
        return None

    def _whose(self, node: fx.Node) -> str:
        owner = self.bias_from[node]
        if owner is self.layer:
            return "the layer's own bias"
        if owner in self.frozen:
            return (f"the per-channel shift of {self.frozen[owner]} (eval mode, running "
                    "statistics: it does not normalize)")
        return "the bias of an intermediate layer"

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
            kind, module, normalizes = norm
            if not only_first:
                self._set(node, _BRK, f"{label} gets the weight's scale in a non-input argument")
            elif first_cls == _BRK:
                self._set(node, _BRK, self.why[first])
            elif not normalizes:
                self._frozen_norm(node, first, first_cls, module, label, normalizes)
            elif first_cls == _PART and not _per_channel(module, kind):
                self._set(node, _BRK, f"{label} normalizes across channels that scale "
                                      "differently (the weight's output was concatenated with "
                                      "channels that do not scale with it)")
            elif first_cls == _AFF and not _removes_bias(self.bias_from[first], module, kind):
                self._set(node, _BRK,
                          f"{self._whose(first)} is not removed by {label} (a {kind} norm does "
                          "not subtract a mean over the axes the bias is constant on)")
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
                whose = self._whose(first)
                whose = {"the layer's own bias": "the layer has a bias",
                         "the bias of an intermediate layer":
                             "a bias was added by an intermediate layer"}.get(whose, whose)
                self._set(node, _BRK, f"{whose} and the output passes through {label} "
                                      "before any normalization")
            return
        if any(self.cls[n] == _AFF for n in dependent):
            self._set(node, _BRK, f"the layer has a bias and its output reaches {label}")
            return
        if any(self.cls[n] == _PART for n in dependent):
            self._partial(node, first, only_first, label)
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
                self._cat(node, label)
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

    def _frozen_norm(self, node: fx.Node, first: Any, first_cls: str, module: nn.Module | None,
                     label: str, normalizes: bool | None) -> None:
        """An eval-mode norm: the fixed per-channel affine map ``k x + c``."""
        if module is None or first_cls == _PART:
            how = "uses running statistics" if normalizes is False else \
                "may use running statistics (its training flag is not a constant)"
            self._set(node, _BRK, f"{label} {how}: it does not normalize")
            return
        # homogeneous or affine in, affine out: c acts as a per-channel bias
        self.frozen[module] = label
        self._set(node, _AFF, via=[first])
        self.bias_from[node] = module

    def _cat(self, node: fx.Node, label: str) -> None:
        tensors = _flat_nodes(node.args[0] if node.args else node.kwargs.get("tensors"))
        classes = [self.cls.get(n, _INV) for n in tensors]
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get(
            "dim", node.kwargs.get("axis", 0))
        if all(c == _HOM for c in classes):
            self._set(node, _HOM, via=tensors)
        elif node.target in (torch.cat, torch.concat) and dim == 1 and \
                all(c in (_INV, _HOM, _PART) for c in classes):
            self._set(node, _PART, via=[n for n, c in zip(tensors, classes, strict=True)
                                        if c != _INV])
        else:
            self._set(node, _BRK, f"{label} joins the weight's output with values that "
                                  "do not scale with it")

    def _partial(self, node: fx.Node, first: Any, only_first: bool, label: str) -> None:
        """Transfer of a channel-partial value (some channels scale, the others do not)."""
        target = node.target
        if node.op == "call_function" and target in _CAT_FUNCTIONS:
            self._cat(node, label)
            return
        channelwise = (
            (node.op == "call_module"
             and isinstance(self.modules[str(target)], _CHANNELWISE_MODULES))
            or (node.op == "call_function" and target in _CHANNELWISE_FUNCTIONS)
            or (node.op == "call_method" and target in _CHANNELWISE_METHODS)
        )
        if channelwise and only_first:
            self._set(node, _PART, via=[first])
        else:
            self._set(node, _BRK, f"{label} mixes the channels of a concatenation that only "
                                  "partly scales with the weight, before a per-channel norm")

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
