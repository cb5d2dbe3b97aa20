"""A small BN MLP with fixed batches, shared by the warm-up and constrained-ELR tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from normdyn.validate.models import plain_mlp

WIDTH, IN, CLASSES, BATCH = 16, 12, 4, 32


def linear_names(depth: int) -> list[str]:
    """Names of the hidden (scale-invariant) linear weights of ``plain_mlp(depth, ...)``."""
    return [f"layer{i}.linear.weight" for i in range(depth)]


def make_setup(depth: int, seed: int = 0, dtype: torch.dtype = torch.float64):
    """A seeded ``plain_mlp(depth, 16, 12, 4)`` in ``dtype`` and four seeded batches of 32."""
    torch.manual_seed(seed)
    model = plain_mlp(depth, WIDTH, IN, CLASSES).to(dtype)
    g = torch.Generator().manual_seed(seed + 100)
    batches = [
        (torch.randn(BATCH, IN, generator=g, dtype=dtype),
         torch.randint(0, CLASSES, (BATCH,), generator=g))
        for _ in range(4)
    ]
    return model, batches


def backward(model: nn.Module, batch) -> None:
    """Fresh gradients of the cross-entropy on ``batch``."""
    model.zero_grad(set_to_none=True)
    x, y = batch
    F.cross_entropy(model(x), y).backward()
