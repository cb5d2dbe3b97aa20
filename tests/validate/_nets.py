"""Shared set-up of the monitor tests: the tiny ResNet of ``TINY_CONFIGS`` and a batch."""

from __future__ import annotations

import torch

from normdyn.validate.models import TINY_CONFIGS, build_model, example_input


def tiny_resnet_batch(seed: int = 0, batch: int = 8):
    """``(model, x, y)``: a seeded tiny ResNet with one input batch and random labels."""
    torch.manual_seed(seed)
    cfg = TINY_CONFIGS["resnet"]
    model = build_model("resnet", **cfg)
    x = example_input("resnet", cfg, batch_size=batch, seed=seed)
    y = torch.randint(0, cfg["num_classes"], (batch,))
    return model, x, y
