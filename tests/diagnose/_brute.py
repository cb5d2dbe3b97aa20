"""Brute-force oracles for the diagnose tests: plain torch on deep copies, no normdyn code."""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F

__all__ = ["grads_at", "per_unit_elr", "critical_lr", "spread_after_sgd_step"]


def _logits(out):
    return out.logits if hasattr(out, "logits") else out


def grads_at(model, x, y, seed=0):
    """{name: grad} of cross-entropy at the model's weights, on a deep copy."""
    work = copy.deepcopy(model)
    torch.manual_seed(seed)
    F.cross_entropy(_logits(work(x)), y).backward()
    return work, {n: p.grad for n, p in work.named_parameters()}


def per_unit_elr(model, x, y, names, seed=0):
    """a_l = |grad w_l| / |w_l| from p.grad of a deep copy."""
    work, grads = grads_at(model, x, y, seed)
    params = dict(work.named_parameters())
    return [float(grads[n].double().norm() / params[n].detach().double().norm()) for n in names]


def critical_lr(a):
    """eta* = 1 / sqrt(a_max * a_min), typed here."""
    return 1.0 / math.sqrt(max(a) * min(a))


def spread_after_sgd_step(model, x, y, names, lr, seed=0):
    """max/min over names of lr*|g1|/|w1| after w1 = w0 - lr*g0 on every parameter."""
    work, grads = grads_at(model, x, y, seed)
    fresh = copy.deepcopy(model)  # BN buffers as before the gradient pass
    with torch.no_grad():
        for n, p in fresh.named_parameters():
            if grads[n] is not None:
                p.sub_(lr * grads[n])
    torch.manual_seed(seed)
    F.cross_entropy(_logits(fresh(x)), y).backward()
    params = dict(fresh.named_parameters())
    e = [lr * float(params[n].grad.double().norm() / params[n].detach().double().norm())
         for n in names]
    return max(e) / min(e)
