"""Models that nobody here wrote (or written in other libraries' style), for diagnose tests.

Module-level factories so that ``normdyn diagnose tests.diagnose._foreign:NAME`` can build
them the way users' ``pkg.module:factory`` specs do.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["HF_RESNET_CONFIG", "hf_resnet64", "TimmStyleNet", "timm_style_net",
           "TorchvisionStyleNet", "no_norm_net", "DeadBranchNet"]

HF_RESNET_CONFIG = {"model_type": "resnet", "num_channels": 3, "embedding_size": 8,
                    "hidden_sizes": [8, 16], "depths": [1, 1], "layer_type": "basic",
                    "num_labels": 5}


def hf_resnet64() -> nn.Module:
    """transformers' ResNetForImageClassification from a tiny local config, in float64."""
    from transformers import AutoConfig, ResNetForImageClassification

    values = dict(HF_RESNET_CONFIG)
    config = AutoConfig.for_model(values.pop("model_type"), **values)
    torch.manual_seed(3)
    return ResNetForImageClassification(config).double()


class _ConvNormAct(nn.Module):
    """timm's ConvNormAct: ``conv -> bn -> act`` (conv without bias)."""

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class TimmStyleNet(nn.Module):
    """timm-style layout: ``stem``, ``stages``, ``forward_features`` / ``forward_head``,
    a GroupNorm stage and a LayerNorm'd bias-free head projection."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.stem = _ConvNormAct(3, 8, 2)
        self.stages = nn.Sequential(_ConvNormAct(8, 8), _ConvNormAct(8, 16, 2))
        self.gn_conv = nn.Conv2d(16, 16, 1)
        self.gn = nn.GroupNorm(16, 16)
        self.pre_logits = nn.Linear(16, 16, bias=False)
        self.norm = nn.LayerNorm(16)
        self.head = nn.Linear(16, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return torch.relu(self.gn(self.gn_conv(x)))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean((2, 3))
        return self.head(torch.relu(self.norm(self.pre_logits(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def timm_style_net() -> nn.Module:
    torch.manual_seed(4)
    return TimmStyleNet()


class TorchvisionStyleNet(nn.Module):
    """torchvision-style ``features`` (Conv-BN-ReLU) / ``avgpool`` / ``classifier``."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
            nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16),
            nn.ReLU(inplace=True))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(16, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def no_norm_net() -> nn.Module:
    """Linear-ReLU-Linear: no normalization, so no scale-invariant layer."""
    torch.manual_seed(5)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))


class DeadBranchNet(nn.Module):
    """Two normalized convs feed the output; a third (``dead``) is multiplied by zero."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.dead = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn_dead = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))
        unused = self.bn_dead(self.dead(x)).mean((2, 3)) * 0.0
        return self.fc(h.mean((2, 3)) + unused)
