"""Tests of normdyn.layers.detection.

The independent oracle for the detector is numerical: rescale one weight by
``ALPHA`` in a float64 copy of the model (training mode, batch statistics) and see
whether the output changes.  Every decision of the detector must agree with it.
"""

from __future__ import annotations

import copy
import math
import re
import warnings

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from normdyn.layers.detection import (  # noqa: E402
    ScaleInvariantLayer,
    analyze_scale_invariance,
    find_scale_invariant,
    measure_defect,
)
from normdyn.validate.models import (  # noqa: E402
    TINY_CONFIGS,
    build_model,
    example_input,
    plain_mlp,
    resnet_cifar,
    transformer_encoder,
)

ALPHA = 3.7
INVARIANT_RTOL = 1e-3   # BN/LN eps makes invariance approximate
BROKEN_RTOL = 1e-2      # a non-invariant weight must change the output by more than this


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _output_change(model: nn.Module, x: torch.Tensor, param_name: str) -> float:
    """max|f(alpha w) - f(w)| / max|f(w)| in training mode; restores the weight."""
    model.train()
    param = dict(model.named_parameters())[param_name]
    with torch.no_grad():
        before = model(x)
        saved = param.clone()
        param.mul_(ALPHA)
        after = model(x)
        param.copy_(saved)
    return float((after - before).abs().max() / before.abs().max().clamp_min(1e-12))


def _oracle(model: nn.Module, x: torch.Tensor) -> set[str]:
    """Parameter names of the conv/linear weights whose rescaling leaves the output fixed
    (computed in float64 on a copy)."""
    model = copy.deepcopy(model).double()
    x = x.double()
    invariant = set()
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
            change = _output_change(model, x, f"{name}.weight")
            assert change < INVARIANT_RTOL or change > BROKEN_RTOL, (
                f"oracle undecided for {name}: relative output change {change}")
            if change < INVARIANT_RTOL:
                invariant.add(f"{name}.weight")
    return invariant


def _detected(model: nn.Module, x: torch.Tensor | None = None) -> set[str]:
    return {layer.param_name for layer in find_scale_invariant(model, x)}


# --------------------------------------------------------------------------- hand-built nets


class ConvAddBN(nn.Module):
    """bn(conv(x) + x): the residual addition breaks invariance."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x) + x).mean(dim=(2, 3))


class Attention(nn.Module):
    """Bias-free q/k/v/out projections into softmax attention, then a LayerNorm."""

    def __init__(self, d: int = 8) -> None:
        super().__init__()
        self.q = nn.Linear(d, d, bias=False)
        self.k = nn.Linear(d, d, bias=False)
        self.v = nn.Linear(d, d, bias=False)
        self.out = nn.Linear(d, d, bias=False)
        self.norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = self.q(x) @ self.k(x).transpose(-2, -1) / math.sqrt(x.shape[-1])
        heads = torch.softmax(scores, dim=-1) @ self.v(x)
        return self.norm(x + self.out(heads)).mean(dim=1)


class FunctionalLN(nn.Module):
    """A bias-free linear through ReLU and a reshape into functional layer_norm."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 8, bias=False)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.fc(x)).reshape(x.shape[0], 2, 4).flatten(1)
        return self.head(F.layer_norm(h, (8,)))


class SharedOutput(nn.Module):
    """conv output normalized by BN *and* added to the output unnormalized."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1, bias=False)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        return (self.bn(h) + h).mean(dim=(2, 3))


class Dynamic(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace this forward."""

    def __init__(self, ch: int = 4) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(ch)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.abs().sum() > 0:   # data-dependent branch (always taken here)
            x = F.relu(x)
        h = self.bn(self.conv(x))
        return self.bn2(self.conv2(h) + h)


class Outer(nn.Module):
    """A traceable stem around an untraceable block."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.stem_bn = nn.BatchNorm2d(4)
        self.block = Dynamic(4)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.block(F.relu(self.stem_bn(self.stem(x))))
        return self.head(h.mean(dim=(2, 3)))


IMG = (6, 3, 5, 5)
HAND_NETS = {
    # name: (builder, input shape, expected invariant parameter names)
    "conv-bn": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4)),
                IMG, {"0.weight"}),
    "conv-relu-bn": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.ReLU(),
                                           nn.BatchNorm2d(4)), IMG, {"0.weight"}),
    "conv-bias-bn": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4)),
                     IMG, {"0.weight"}),
    "conv-bias-relu-bn": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3, bias=True), nn.ReLU(),
                                                nn.BatchNorm2d(4)), IMG, set()),
    "conv-tanh-bn": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.Tanh(),
                                           nn.BatchNorm2d(4)), IMG, set()),
    "conv-add-bn": (ConvAddBN, (6, 4, 5, 5), set()),
    "conv-conv-bn": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3, bias=False),
                                           nn.Conv2d(4, 4, 1, bias=False), nn.BatchNorm2d(4)),
                     IMG, {"0.weight", "1.weight"}),
    "conv-biasconv-bn": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3, bias=False),
                                               nn.Conv2d(4, 4, 1, bias=True),
                                               nn.BatchNorm2d(4)), IMG,
                         {"0.weight", "1.weight"}),
    "conv-biasconv-relu-bn": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3, bias=False),
                                                    nn.Conv2d(4, 4, 1, bias=True), nn.ReLU(),
                                                    nn.BatchNorm2d(4)), IMG, set()),
    "conv-maxpool-gn": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.MaxPool2d(2),
                                              nn.GroupNorm(2, 4)), (6, 3, 9, 9),
                        {"0.weight"}),
    "conv-bias-gn": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3, bias=True), nn.GroupNorm(2, 4)),
                     IMG, set()),
    "conv-bias-instancenorm": (lambda: nn.Sequential(nn.Conv2d(3, 4, 3, bias=True),
                                                     nn.InstanceNorm2d(4)), IMG, {"0.weight"}),
    "linear-ln": (lambda: nn.Sequential(nn.Linear(5, 6, bias=False), nn.LayerNorm(6)),
                  (6, 5), {"0.weight"}),
    "linear-bias-ln": (lambda: nn.Sequential(nn.Linear(5, 6, bias=True), nn.LayerNorm(6)),
                       (6, 5), set()),
    "linear-bias-bn": (lambda: nn.Sequential(nn.Linear(5, 6, bias=True), nn.BatchNorm1d(6)),
                       (6, 5), {"0.weight"}),
    "linear-dropout-bn-head": (lambda: nn.Sequential(nn.Linear(5, 6, bias=False),
                                                     nn.Dropout(0.0), nn.BatchNorm1d(6),
                                                     nn.ReLU(), nn.Linear(6, 2)),
                               (6, 5), {"0.weight"}),
    "attention": (Attention, (3, 4, 8), set()),
    "functional-layer-norm": (FunctionalLN, (6, 6), {"fc.weight"}),
    "shared-output": (SharedOutput, IMG, set()),
}


@pytest.mark.parametrize("net", sorted(HAND_NETS))
def test_hand_built_nets_match_expectation_and_rescaling_oracle(net: str) -> None:
    builder, shape, expected = HAND_NETS[net]
    torch.manual_seed(0)
    model = builder()
    x = torch.randn(*shape)
    assert _oracle(model, x) == expected, "the test's expectation disagrees with the oracle"
    assert _detected(model) == expected


def test_layer_record_fields() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.ReLU(), nn.BatchNorm2d(4))
    (layer,) = find_scale_invariant(model)
    assert isinstance(layer, ScaleInvariantLayer)
    assert (layer.name, layer.param_name, layer.kind, layer.norm_name, layer.norm_kind) == (
        "0", "0.weight", "conv", "2", "batch")
    assert layer.reason.startswith("fx:")
    with pytest.raises(AttributeError):
        layer.name = "x"  # type: ignore[misc]  # frozen


def test_rejections_explain_themselves() -> None:
    verdicts = {v.param_name: v for v in analyze_scale_invariance(
        nn.Sequential(nn.Linear(5, 6, bias=True), nn.LayerNorm(6)))}
    assert not verdicts["0.weight"].invariant
    assert "bias" in verdicts["0.weight"].reason
    residual = analyze_scale_invariance(ConvAddBN())[0]
    assert "residual" in residual.reason and "add" in residual.reason
    attention = {v.param_name: v for v in analyze_scale_invariance(Attention())}
    assert "softmax" in attention["q.weight"].reason and "softmax" in attention["k.weight"].reason
    assert "residual" in attention["v.weight"].reason   # v -> attention -> out -> x + out


# --------------------------------------------------------------------------- fallback


def test_untraceable_model_uses_hook_heuristic() -> None:
    torch.manual_seed(0)
    model = Dynamic()
    x = torch.randn(4, 4, 5, 5)
    with pytest.raises(ValueError, match=r"torch\.fx could not trace Dynamic .*example_input"):
        find_scale_invariant(model)
    verdicts = {v.param_name: v for v in analyze_scale_invariance(model, x)}
    assert verdicts["conv.weight"].invariant and verdicts["conv.weight"].method == "hooks"
    assert verdicts["conv.weight"].reason.startswith("hooks (torch.fx could not trace")
    # the residual addition before bn2 is seen: new storage between conv2 and bn2
    assert not verdicts["conv2.weight"].invariant
    assert _oracle(model, x) == {"conv.weight"}


def test_hook_fallback_leaves_model_state_unchanged() -> None:
    model = Dynamic()
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    find_scale_invariant(model, torch.randn(4, 4, 5, 5))
    assert model.training and all(m.training for m in model.modules())
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_untraceable_submodule_is_made_opaque() -> None:
    torch.manual_seed(0)
    model = Outer()
    x = torch.randn(4, 3, 5, 5)
    verdicts = {v.param_name: v for v in analyze_scale_invariance(model, x)}
    assert verdicts["stem.weight"].method == "fx" and verdicts["stem.weight"].invariant
    assert verdicts["block.conv.weight"].method == "hooks"
    assert verdicts["block.conv.weight"].invariant
    assert "'block'" in verdicts["block.conv.weight"].reason
    assert not verdicts["block.conv2.weight"].invariant
    assert verdicts["head.weight"].method == "fx" and not verdicts["head.weight"].invariant
    assert _detected(model, x) == _oracle(model, x)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        no_input = {v.param_name: v for v in analyze_scale_invariance(model)}
    assert any("not analysed" in str(w.message) for w in caught)
    assert no_input["block.conv.weight"].method == "skipped"
    assert no_input["stem.weight"].invariant


def test_data_parallel_wrapper_keeps_parameter_names() -> None:
    model = nn.DataParallel(nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4)))
    names = {n for n, _ in model.named_parameters()}
    (layer,) = find_scale_invariant(model)
    assert layer.param_name == "module.0.weight" and layer.param_name in names
    assert layer.norm_name == "module.1"


# --------------------------------------------------------------------------- architectures


@pytest.mark.parametrize("shortcuts", [True, False])
def test_every_resnet_conv_is_detected(shortcuts: bool) -> None:
    torch.manual_seed(0)
    model = resnet_cifar(8, shortcuts=shortcuts, width=4)
    convs = {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    detected = _detected(model)
    assert detected == convs
    assert "classifier.weight" not in detected
    x = torch.randn(4, 3, 8, 8)
    assert _oracle(model, x) == detected
    by_name = {layer.param_name: layer for layer in find_scale_invariant(model)}
    assert by_name["stage1.block0.conv2.weight"].norm_name == "stage1.block0.bn2"


def test_resnet20_detection_counts() -> None:
    model = resnet_cifar(20, shortcuts=True)
    assert len(find_scale_invariant(model)) == 1 + 18 + 2  # stem, 9 blocks x 2, 2 projections
    model = resnet_cifar(20, shortcuts=False)
    assert len(find_scale_invariant(model)) == 1 + 18


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_mlp_linears_except_classifier(norm: str) -> None:
    torch.manual_seed(0)
    model = plain_mlp(4, 16, 12, 3, norm=norm)
    hidden = {f"layer{i}.linear.weight" for i in range(4)}
    assert _detected(model) == hidden
    assert _oracle(model, torch.randn(8, 12)) == hidden


@pytest.mark.parametrize("norm_position", ["post", "pre"])
def test_transformer_detection_agrees_with_oracle(norm_position: str) -> None:
    """No weight of this Transformer is scale invariant: every linear has a bias, the
    attention projections feed a softmax or a residual addition, and the embedding
    is added to the position table."""
    torch.manual_seed(0)
    cfg = TINY_CONFIGS["transformer"]
    model = transformer_encoder(**cfg, norm_position=norm_position)
    x = example_input("transformer", cfg, batch_size=4)
    assert _detected(model) == _oracle(model, x) == set()
    reasons = {v.param_name: v.reason for v in analyze_scale_invariance(model)}
    assert "bias" in reasons["layer0.mlp.fc1.weight"]


@pytest.mark.parametrize("arch", sorted(TINY_CONFIGS))
def test_build_model_architectures_agree_with_oracle(arch: str) -> None:
    torch.manual_seed(1)
    cfg = TINY_CONFIGS[arch]
    model = build_model(arch, **cfg)
    x = example_input(arch, cfg, batch_size=6)
    assert _detected(model) == _oracle(model, x)


# --------------------------------------------------------------------------- defect


def test_measure_defect_matches_direct_cosine_and_leaves_model_untouched() -> None:
    torch.manual_seed(0)
    cfg = TINY_CONFIGS["resnet"]
    model = build_model("resnet", **cfg)
    x = example_input("resnet", cfg, batch_size=8)
    y = torch.randint(0, cfg["num_classes"], (8,))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    frame = measure_defect(model, F.cross_entropy, (x, y))
    assert list(frame.columns) == ["layer", "cos_wg", "grad_norm", "weight_norm", "detected"]
    weights = [n for n, p in model.named_parameters() if p.ndim >= 2]
    assert list(frame["layer"]) == weights
    assert all(p.grad is None for p in model.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key

    # oracle: gradients by backward() on a copy, cosine in float64
    twin = copy.deepcopy(model)
    F.cross_entropy(twin(x), y).backward()
    params = dict(twin.named_parameters())
    for row in frame.itertuples():
        w, g = params[row.layer].detach().double(), params[row.layer].grad.double()
        cos = abs(float((w * g).sum())) / (float(w.norm()) * float(g.norm()))
        assert row.cos_wg == pytest.approx(cos, rel=1e-6, abs=1e-12)
        assert row.grad_norm == pytest.approx(float(g.norm()), rel=1e-12)
        assert row.weight_norm == pytest.approx(float(w.norm()), rel=1e-12)
    invariant = frame[frame["detected"]]
    assert set(invariant["layer"]) == _detected(model)
    assert (invariant["cos_wg"] < 1e-4).all()
    assert frame.set_index("layer").loc["classifier.weight", "cos_wg"] > 1e-3


def test_measure_defect_transformer_weights_are_not_invariant() -> None:
    torch.manual_seed(0)
    cfg = TINY_CONFIGS["transformer"]
    model = build_model("transformer", **cfg)
    x = example_input("transformer", cfg, batch_size=8)
    y = torch.randint(0, cfg["num_classes"], (8,))
    frame = measure_defect(model, F.cross_entropy, (x, y))
    assert not frame["detected"].any()
    linears = frame[frame["layer"].str.endswith(".weight")]
    assert (linears["cos_wg"] > 1e-5).all()   # far above the ~1e-7 floor of invariant weights


def test_measure_defect_errors() -> None:
    model = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(ValueError, match=re.escape(
            "1 unknown parameter name(s) 'nope'; the model has 2, e.g. '0.weight', '0.bias'")):
        measure_defect(model, F.cross_entropy, (torch.randn(4, 3), torch.zeros(4).long()),
                       names=["nope"])
    with pytest.raises(TypeError, match="batch must be"):
        measure_defect(model, F.cross_entropy, "batch")

