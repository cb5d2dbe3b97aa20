"""Tests of normdyn.validate.detection.

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

from normdyn.validate.detection import (  # noqa: E402
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


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one intra-op thread avoids OpenMP spin contention on busy machines."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


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


# --------------------------------------------------------------------------- issue 10, §3-4
#
# Oracle: the rescaling test, brute force per conv/linear weight in float64: rescale the
# weight by 3 and compare the model output (hence the loss, L(3w) = L(w)), with every
# module left in the mode the test put it in (so frozen, eval-mode BatchNorm is tested
# as such, unlike ``_oracle`` above, which switches to training mode).


def _loss_oracle(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> set[str]:
    """Weights whose rescaling by 3 leaves the output and the loss unchanged (float64)."""
    model = copy.deepcopy(model).double()
    x = x.double()
    params = dict(model.named_parameters())
    invariant = set()
    with torch.no_grad():
        out = model(x)
        base = float(F.cross_entropy(out, y))
        for name, module in model.named_modules():
            if not isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
                continue
            p = params[f"{name}.weight"]
            saved = p.clone()
            p.mul_(3.0)
            rescaled = model(x)
            change = float((rescaled - out).abs().max() / out.abs().max())
            loss_change = abs(float(F.cross_entropy(rescaled, y)) - base) / base
            p.copy_(saved)
            assert change < 1e-4 or change > 1e-2, f"oracle undecided for {name}: {change}"
            if change < 1e-4:
                assert loss_change < 1e-5
                invariant.add(f"{name}.weight")
    return invariant


class _DenseLayer(nn.Module):
    """DenseNet-BC layer: cat(inputs) -> BN-ReLU-conv1x1 -> BN-ReLU-conv3x3."""

    def __init__(self, c_in: int, growth: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, 2 * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(2 * growth)
        self.conv2 = nn.Conv2d(2 * growth, growth, 3, padding=1, bias=False)

    def forward(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        x = torch.cat(inputs, 1)
        return self.conv2(F.relu(self.norm2(self.conv1(F.relu(self.norm1(x))))))


class _DenseNet(nn.Module):
    """Stem, two dense blocks with a transition, final norm (as torchvision's densenet)."""

    def __init__(self, growth: int = 4, layers: int = 3, classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        c = 8
        self.block1 = nn.ModuleList()
        for _ in range(layers):
            self.block1.append(_DenseLayer(c, growth))
            c += growth
        self.trans_norm = nn.BatchNorm2d(c)
        self.trans_conv = nn.Conv2d(c, c // 2, 1, bias=False)
        c //= 2
        self.block2 = nn.ModuleList()
        for _ in range(layers):
            self.block2.append(_DenseLayer(c, growth))
            c += growth
        self.norm5 = nn.BatchNorm2d(c)
        self.head = nn.Linear(c, classes)

    @staticmethod
    def _block(layers: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for layer in layers:
            features.append(layer(features))
        return torch.cat(features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._block(self.block1, self.stem(x))
        x = F.avg_pool2d(self.trans_conv(F.relu(self.trans_norm(x))), 2)
        x = F.relu(self.norm5(self._block(self.block2, x)))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def test_densenet_concatenation_into_batchnorm_keeps_producers_invariant() -> None:
    torch.manual_seed(0)
    model = _DenseNet()
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 5, (6,))
    oracle = _loss_oracle(model, x, y)
    detected = _detected(model)
    assert detected == oracle
    # every conv (including the stem and each conv2 that only reaches BN through cat)
    convs = {n for n, p in model.named_parameters() if p.ndim == 4}
    assert detected == convs and len(convs) == 14


class _CatIntoLayerNorm(nn.Module):
    """cat([x, conv(x)], 1) into a GroupNorm with one group: the norm mixes scaled and
    unscaled channels, so conv is not invariant; a conv that mixes channels breaks it too."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1, bias=False)
        self.gn = nn.GroupNorm(1, 8)
        self.mix = nn.Conv2d(4, 4, 1, bias=False)
        self.mixed = nn.Conv2d(8, 4, 1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.gn(torch.cat([x, self.conv(x)], 1))
        b = self.bn(self.mixed(torch.cat([x, self.mix(x)], 1)))
        return self.head(torch.cat([a, b], 1).mean(dim=(2, 3)))


def test_concatenation_mixed_by_a_layer_or_layernorm_is_not_invariant() -> None:
    torch.manual_seed(0)
    model = _CatIntoLayerNorm()
    x, y = torch.randn(6, 4, 5, 5), torch.randint(0, 3, (6,))
    assert _loss_oracle(model, x, y) == {"mixed.weight"}
    assert _detected(model) == {"mixed.weight"}
    verdicts = {v.param_name: v for v in analyze_scale_invariance(model)}
    assert verdicts["mix.weight"].reason == (
        "fx: not scale invariant: Conv2d 'mixed' mixes the channels of a concatenation that "
        "only partly scales with the weight, before a per-channel norm")
    assert verdicts["conv.weight"].reason == (
        "fx: not scale invariant: GroupNorm 'gn' normalizes across channels that scale "
        "differently (the weight's output was concatenated with channels that do not scale "
        "with it)")


class _TinyResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.c1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.b1 = nn.BatchNorm2d(8)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.b2 = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv(x)))
        x = F.relu(x + self.b2(self.c2(F.relu(self.b1(self.c1(x))))))
        return self.fc(x.mean(dim=(2, 3)))


def test_eval_mode_batchnorm_does_not_normalize() -> None:
    torch.manual_seed(0)
    model = _TinyResNet()
    x, y = torch.randn(6, 3, 8, 8), torch.randint(0, 5, (6,))
    with torch.no_grad():                      # non-trivial running statistics
        for bn in (model.bn, model.b1, model.b2):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
    assert _detected(model) == _loss_oracle(model, x, y) == {"conv.weight", "c1.weight",
                                                              "c2.weight"}
    model.b1.eval()                            # one frozen BatchNorm
    assert _detected(model) == _loss_oracle(model, x, y) == {"conv.weight", "c2.weight"}
    reason = {v.param_name: v.reason for v in analyze_scale_invariance(model)}["c1.weight"]
    assert reason == ("fx: not scale invariant: the per-channel shift of BatchNorm2d 'b1' "
                      "(eval mode, running statistics: it does not normalize) and the output "
                      "passes through relu() before any normalization")
    model.eval()                               # a resnet with frozen BN: nothing invariant
    assert _detected(model) == _loss_oracle(model, x, y) == set()
    # functional batch_norm with running statistics and training=False
    frozen = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False))
    rm, rv = torch.zeros(4), torch.ones(4)

    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 1, bias=False)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.batch_norm(self.conv(x), rm, rv, training=False).mean(dim=(2, 3))

    assert frozen is not None and _detected(Functional()) == set()


def test_eval_mode_norm_in_hook_fallback() -> None:
    class Untraceable(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, bias=False)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > -1e9:                 # data-dependent: fx cannot trace it
                x = self.bn(self.conv(x))
            return x.mean(dim=(2, 3))

    model = Untraceable()
    x = torch.randn(2, 3, 6, 6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert _detected(model, x) == {"conv.weight"}
        model.bn.eval()
        (verdict,) = analyze_scale_invariance(model, x)
    assert not verdict.invariant
    assert verdict.reason.endswith("next normalization 'bn' is in eval mode (running "
                                   "statistics): it does not normalize")
    assert model.bn.training is False


def test_torch_compile_is_unwrapped() -> None:
    torch.manual_seed(0)
    inner = _TinyResNet()
    compiled = torch.compile(inner, backend="eager")
    names = {n for n, _ in compiled.named_parameters()}
    detected = _detected(compiled)
    assert detected == {f"_orig_mod.{n}" for n in ("conv.weight", "c1.weight", "c2.weight")}
    assert detected <= names
    wrapped = nn.DataParallel(torch.compile(inner, backend="eager"))
    assert _detected(wrapped) == {f"module._orig_mod.{n}"
                                  for n in ("conv.weight", "c1.weight", "c2.weight")}


def test_untraceable_errors_stay_one_short_line() -> None:
    class Deep(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList(
                nn.Sequential(nn.Conv2d(2, 2, 1, bias=False), nn.BatchNorm2d(2))
                for _ in range(40))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.sum() > -1e9:
                for block in self.blocks:
                    x = block(x)
            return x.mean()

    with pytest.raises(ValueError) as info:
        analyze_scale_invariance(Deep())
    message = str(info.value)
    assert len(message) <= 300 and "\n" not in message
    assert message.startswith("torch.fx could not trace Deep (TraceError: ")
