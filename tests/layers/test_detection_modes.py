"""Detection in the set-ups of issue 10: channel concatenation (DenseNet), eval-mode
norms, torch.compile and other wrappers, one-line errors.

Oracle: the rescaling test, brute force per conv/linear weight in float64: rescale the
weight by 3 and compare the model output (hence the loss, L(3w) = L(w)), with every
module left in the mode the test put it in (so frozen, eval-mode BatchNorm is tested as
such).
"""

from __future__ import annotations

import copy
import warnings

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from normdyn.layers.detection import analyze_scale_invariance, find_scale_invariant  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _detected(model: nn.Module, x: torch.Tensor | None = None) -> set[str]:
    return {layer.param_name for layer in find_scale_invariant(model, x)}


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
