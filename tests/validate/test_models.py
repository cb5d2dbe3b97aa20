"""Tests of normdyn.validate.models against independent oracles."""

from __future__ import annotations

import math
import operator
import re

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402
from torch.fx import symbolic_trace  # noqa: E402

from normdyn.validate.models import (  # noqa: E402
    TINY_CONFIGS,
    PlainMLP,
    ResNetCIFAR,
    TransformerEncoderClassifier,
    build_model,
    example_input,
    plain_mlp,
    resnet_cifar,
    transformer_encoder,
)

SCALE = 3.7


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _resnet_param_count(
    n: int,
    widths: tuple[int, int, int],
    *,
    affine: bool = True,
    num_classes: int = 10,
    in_ch: int = 3,
) -> dict[str, int]:
    """Hand count: 3x3 convs, BN (2 per channel), 1x1 projections + BN, linear head."""
    bn = 2 if affine else 0
    convs = 9 * in_ch * widths[0]
    bns = bn * widths[0]
    projections = 0
    prev = widths[0]
    for width in widths:
        convs += 9 * prev * width + 9 * width * width  # first block
        convs += (n - 1) * 2 * 9 * width * width  # remaining blocks
        bns += n * 2 * bn * width
        if prev != width:
            projections += prev * width + bn * width
        prev = width
    head = widths[2] * num_classes + num_classes
    return {"body": convs + bns + head, "projections": projections}


def _fresh_double(model: nn.Module) -> nn.Module:
    """Float64, train mode (batch statistics), and a negligible normalization eps."""
    model = model.double().train()
    for module in model.modules():
        if isinstance(module, (nn.modules.batchnorm._BatchNorm, nn.LayerNorm)):
            module.eps = 1e-30
    return model


# --------------------------------------------------------------------------- ResNet


@pytest.mark.parametrize(
    ("depth", "option_a_count"),
    [(20, 269_722), (56, 853_018), (110, 1_727_962)],
)
def test_resnet_param_count_matches_he_et_al_plus_projections(depth, option_a_count):
    # option_a_count: the published parameter-free-shortcut CIFAR ResNets (0.27M, 0.85M, 1.7M)
    n = (depth - 2) // 6
    expected = _resnet_param_count(n, (16, 32, 64))
    assert expected["body"] == option_a_count
    assert expected["projections"] == 16 * 32 + 2 * 32 + 32 * 64 + 2 * 64
    assert _n_params(resnet_cifar(depth)) == option_a_count + expected["projections"]


def test_resnet_param_count_without_affine_and_with_width_multiplier():
    expected = _resnet_param_count(3, (16, 32, 64), affine=False)
    assert _n_params(resnet_cifar(20, affine=False)) == sum(expected.values())
    wide = _resnet_param_count(1, (32, 64, 128), num_classes=5, in_ch=1)
    model = resnet_cifar(8, width_multiplier=2.0, num_classes=5, in_channels=1)
    assert _n_params(model) == sum(wide.values())
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 5)


def test_resnet_noshort_drops_projection_parameters():
    expected = _resnet_param_count(3, (16, 32, 64))
    assert _n_params(resnet_cifar(20, shortcuts=False)) == expected["body"]


@pytest.mark.parametrize(
    ("depth", "message"),
    [
        (21, "depth must be 6n+2, got 21"),
        (9, "depth must be 6n+2, got 9"),
        (2, "depth must be 6n+2 with n >= 1, got 2"),
        (20.0, "depth must be an integer, got 20.0"),
    ],
)
def test_resnet_depth_validation(depth, message):
    with pytest.raises(ValueError) as info:
        resnet_cifar(depth)
    assert str(info.value) == message


def test_resnet_rejects_bad_width_arguments():
    with pytest.raises(ValueError, match="width must be >= 1"):
        resnet_cifar(8, width=0)
    with pytest.raises(ValueError, match="width_multiplier must be positive"):
        resnet_cifar(8, width_multiplier=-1.0)


def test_resnet_module_names_are_stable():
    names = dict(resnet_cifar(8).named_modules())
    for name, kind in [
        ("stem.conv", nn.Conv2d),
        ("stem.bn", nn.BatchNorm2d),
        ("stage1.block0.conv1", nn.Conv2d),
        ("stage1.block0.bn2", nn.BatchNorm2d),
        ("stage2.block0.shortcut.conv", nn.Conv2d),
        ("stage3.block0.shortcut.bn", nn.BatchNorm2d),
        ("classifier", nn.Linear),
    ]:
        assert isinstance(names[name], kind), name
    assert isinstance(names["stage1.block0.shortcut"], nn.Identity)


@pytest.mark.parametrize("shortcuts", [True, False])
def test_every_conv_is_bias_free_and_feeds_only_a_batchnorm(shortcuts):
    model = resnet_cifar(20, shortcuts=shortcuts)
    modules = dict(model.named_modules())
    graph = symbolic_trace(model).graph
    convs = [
        n for n in graph.nodes if n.op == "call_module" and isinstance(modules[n.target], nn.Conv2d)
    ]
    assert len(convs) == 1 + 2 * 9 + (2 if shortcuts else 0)
    for node in convs:
        assert modules[node.target].bias is None
        users = list(node.users)
        assert len(users) == 1, node.target
        assert users[0].op == "call_module"
        assert isinstance(modules[users[0].target], nn.BatchNorm2d), node.target


def _count_additions(model: nn.Module) -> int:
    graph = symbolic_trace(model).graph
    adds = {operator.add, operator.iadd, torch.add}
    return sum(1 for n in graph.nodes if n.op == "call_function" and n.target in adds)


def test_noshort_has_no_additions_and_differs_from_short():
    short, noshort = resnet_cifar(8), resnet_cifar(8, shortcuts=False)
    assert _count_additions(short) == 3
    assert _count_additions(noshort) == 0
    missing, unexpected = short.load_state_dict(noshort.state_dict(), strict=False)
    assert not unexpected and all(".shortcut." in key for key in missing)
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        assert not torch.allclose(short(x), noshort(x), atol=1e-3)


def _scale_and_grad(model: nn.Module, param: nn.Parameter, x, factor: float):
    with torch.no_grad():
        param.mul_(factor)
    model.zero_grad()
    out = model(x)
    out.pow(2).sum().backward()
    grad = param.grad.detach().clone()
    with torch.no_grad():
        param.div_(factor)
    return out.detach(), grad


def _assert_scale_invariant(model: nn.Module, name: str, x) -> None:
    param = dict(model.named_parameters())[name]
    out, grad = _scale_and_grad(model, param, x, 1.0)
    out_s, grad_s = _scale_and_grad(model, param, x, SCALE)
    torch.testing.assert_close(out_s, out, rtol=1e-9, atol=1e-9)
    cosine = (grad * param).sum() / (grad.norm() * param.norm())
    assert abs(cosine.item()) < 1e-10, name
    torch.testing.assert_close(grad_s, grad / SCALE, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("shortcuts", [True, False])
def test_every_resnet_conv_is_scale_invariant(shortcuts):
    torch.manual_seed(0)
    model = _fresh_double(resnet_cifar(8, width=4, shortcuts=shortcuts))
    x = torch.randn(8, 3, 8, 8, dtype=torch.float64)
    conv_names = [n + ".weight" for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert len(conv_names) == 7 + (2 if shortcuts else 0)
    for name in conv_names:
        _assert_scale_invariant(model, name, x)


def test_resnet_classifier_is_not_scale_invariant():
    model = _fresh_double(resnet_cifar(8, width=4))
    x = torch.randn(8, 3, 8, 8, dtype=torch.float64)
    param = model.classifier.weight
    out, _ = _scale_and_grad(model, param, x, 1.0)
    out_s, _ = _scale_and_grad(model, param, x, SCALE)
    assert not torch.allclose(out, out_s)


def test_kaiming_normal_init_of_convs():
    model = resnet_cifar(20)
    weight = dict(model.named_parameters())["stage3.block1.conv2.weight"]
    expected_std = math.sqrt(2 / (64 * 9))  # He et al.: fan-in 3*3*64, ReLU gain
    assert weight.std().item() == pytest.approx(expected_std, rel=0.03)
    assert abs(weight.mean().item()) < 0.05 * expected_std
    assert torch.count_nonzero(model.classifier.bias) == 0


# --------------------------------------------------------------------------- MLP


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_mlp_structure(norm):
    model = plain_mlp(3, 16, 64, 10, norm=norm)
    assert isinstance(model, PlainMLP)
    names = dict(model.named_modules())
    norm_type = nn.BatchNorm1d if norm == "batch" else nn.LayerNorm
    for i in range(3):
        assert names[f"layer{i}.linear"].bias is None
        assert isinstance(names[f"layer{i}.norm"], norm_type)
    assert "layer3.linear" not in names
    assert model.classifier.bias is not None
    expected = 64 * 16 + 2 * 16 * 16 + 3 * 2 * 16 + 16 * 10 + 10
    assert _n_params(model) == expected
    assert model(torch.randn(5, 1, 8, 8)).shape == (5, 10)


@pytest.mark.parametrize("norm", ["batch", "layer"])
def test_mlp_hidden_linears_are_scale_invariant(norm):
    torch.manual_seed(1)
    model = _fresh_double(plain_mlp(3, 16, 12, 4, norm=norm, affine=False))
    x = torch.randn(32, 12, dtype=torch.float64)
    for i in range(3):
        _assert_scale_invariant(model, f"layer{i}.linear.weight", x)


def test_mlp_validation():
    with pytest.raises(ValueError, match="norm must be one of"):
        plain_mlp(2, 8, 4, 3, norm="group")
    with pytest.raises(ValueError, match="depth must be >= 1, got 0"):
        plain_mlp(0, 8, 4, 3)


# --------------------------------------------------------------------------- Transformer


def _tiny_transformer(norm_position: str) -> TransformerEncoderClassifier:
    return transformer_encoder(**TINY_CONFIGS["transformer"], norm_position=norm_position)


def test_transformer_attention_matches_torch_reference():
    model = _tiny_transformer("post")
    attn = model.layer0.attn
    x = torch.randn(3, 8, 16)
    q, k, v = (proj(x).view(3, 8, 2, 8).transpose(1, 2) for proj in (attn.q, attn.k, attn.v))
    reference = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    expected = attn.out(reference.transpose(1, 2).reshape(3, 8, 16))
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("norm_position", ["post", "pre"])
def test_transformer_is_permutation_invariant_without_positions(norm_position):
    model = _tiny_transformer(norm_position).eval()
    with torch.no_grad():
        model.pos_embed.zero_()
    x = torch.randn(4, 8, 4)
    perm = torch.randperm(8)
    with torch.no_grad():
        torch.testing.assert_close(model(x[:, perm]), model(x), rtol=1e-5, atol=1e-5)
        model.pos_embed.normal_()
        assert not torch.allclose(model(x[:, perm]), model(x), atol=1e-4)


def test_transformer_post_and_pre_ln_differ():
    post, pre = _tiny_transformer("post"), _tiny_transformer("pre")
    assert post.final_norm is None and isinstance(pre.final_norm, nn.LayerNorm)
    missing, unexpected = post.load_state_dict(pre.state_dict(), strict=False)
    assert not missing and all(k.startswith("final_norm") for k in unexpected)
    x = torch.randn(4, 8, 4)
    with torch.no_grad():
        assert not torch.allclose(post(x), pre(x), atol=1e-4)
    names = dict(pre.named_modules())
    for name in ["embed", "layer1.attn.q", "layer1.attn.out", "layer1.mlp.fc2", "layer1.norm2"]:
        assert name in names


def test_transformer_validation():
    config = dict(TINY_CONFIGS["transformer"])
    with pytest.raises(ValueError, match="d_model must be divisible by n_heads=3, got 16"):
        transformer_encoder(**{**config, "n_heads": 3})
    with pytest.raises(ValueError, match="norm_position must be one of"):
        transformer_encoder(**config, norm_position="sandwich")


# --------------------------------------------------------------------------- dispatch


def test_build_model_dispatch_and_error():
    assert isinstance(build_model("resnet", depth=8), ResNetCIFAR)
    assert isinstance(build_model("mlp", **TINY_CONFIGS["mlp"]), PlainMLP)
    with pytest.raises(ValueError) as info:
        build_model("vgg")
    assert str(info.value) == "arch must be one of 'mlp', 'resnet', 'transformer', got 'vgg'"
    with pytest.raises(ValueError, match=re.escape("'mlp', 'resnet', 'transformer'")):
        example_input("vgg", {})


def _train_one_step(arch: str) -> tuple[nn.Module, list, torch.Tensor]:
    model = build_model(arch, **TINY_CONFIGS[arch])
    x = example_input(arch, TINY_CONFIGS[arch], batch_size=8)
    y = torch.randint(0, TINY_CONFIGS[arch]["num_classes"], (8,))
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return model, before, loss


@pytest.mark.parametrize("arch", sorted(TINY_CONFIGS))
def test_tiny_configs_train_one_step(arch):
    """Each tiny config trains a step (its speed is measured in benchmarks, not asserted)."""
    torch.manual_seed(0)
    model, before, loss = _train_one_step(arch)
    assert torch.isfinite(loss)
    changed = [not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True)]
    assert all(changed)
