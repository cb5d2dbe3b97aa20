"""ConstrainedELR turns by exactly arctan(target) at any finite scale (issue 18, point 3).

Oracle: the angle between p before and after ``step()``, measured here in float64 as
atan2(|w1 orthogonal to w0|, <w1, w0>/|w0|), and |w_t|/|w_0|, independent of the code's
route.  Float32 weights: storing w+ rounds each entry by eps/2, which moves the turned
part (E |w|) by about eps/(E sqrt(n)) relative: ~3e-7 at E = 0.1, n = 192..256, hence the
1e-6 tolerance on 200 steps x 6 layers.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

from normdyn.optim import ConstrainedELR
from tests.optim._nets import linear_names, make_setup

pytestmark = pytest.mark.torch

DEPTH = 6
LINEARS = linear_names(DEPTH)
STEPS = 200
TARGET = 0.1


def _run(model, batches, inner, steps: int = STEPS):
    """Train ``steps`` steps cycling ``batches``; per step the worst |angle/atan(E) - 1| and
    |norm ratio - 1| (against step 0) over the tracked layers, and the largest tracked
    gradient norm and classifier weight norm seen."""
    opt = ConstrainedELR(inner, model, TARGET)
    params = dict(model.named_parameters())
    start = {n: torch.linalg.vector_norm(params[n].detach().double()) for n in LINEARS}
    worst_angle = worst_norm = grad_max = classifier_max = 0.0
    for t in range(steps):
        x, y = batches[t % len(batches)]
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        grad_max = max(grad_max, *(float(torch.linalg.vector_norm(params[n].grad.double()))
                                   for n in LINEARS))
        w0 = {n: params[n].detach().double().flatten().clone() for n in LINEARS}
        opt.step()
        for n in LINEARS:
            a, b = w0[n], params[n].detach().double().flatten()
            unit = a / torch.linalg.vector_norm(a)
            along = torch.dot(b, unit)
            angle = math.atan2(float(torch.linalg.vector_norm(b - along * unit)), float(along))
            worst_angle = max(worst_angle, abs(angle / math.atan(TARGET) - 1))
            ratio = float(torch.linalg.vector_norm(b) / start[n])
            worst_norm = max(worst_norm, abs(ratio - 1))
        classifier_max = max(classifier_max,
                             float(torch.linalg.vector_norm(params["classifier.weight"].detach().double())))
    return worst_angle, worst_norm, grad_max, classifier_max


def test_exploding_classifier_keeps_exact_rotations():
    """SGD lr 10, momentum 0.9, wd 5e-4, float32: the untracked classifier (started 1e5x
    too large) grows past 1e10 and the tracked gradients past 1e19, still finite.  The old
    w_inner - w route overflowed float32 in its norms: angle 0, norm -20 %."""
    model, batches = make_setup(DEPTH, seed=0, dtype=torch.float32)
    with torch.no_grad():
        model.classifier.weight.mul_(1e5)
    inner = torch.optim.SGD(model.parameters(), lr=10.0, momentum=0.9, weight_decay=5e-4)
    worst_angle, worst_norm, grad_max, classifier_max = _run(model, batches, inner)
    assert classifier_max > 1e10 and math.isfinite(grad_max) and grad_max > 1e19
    assert worst_angle < 1e-6
    assert worst_norm < 1e-6


@pytest.mark.parametrize("kind", ["sgd", "adamw"])
def test_inner_elr_of_1e_minus_12_still_turns_by_the_target(kind):
    """Inner lr 1e-12: the inner update is ~1e-12 |w|, far below float32 resolution, so
    w_inner == w (exactly, for SGD); the direction comes from the step rule and the layer turns."""
    model, batches = make_setup(DEPTH, seed=2, dtype=torch.float32)
    lr = 1e-12
    inner = (torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
             if kind == "sgd" else torch.optim.AdamW(model.parameters(), lr=lr))
    # the inner ELR by hand at step 0: SGD lr |g + wd w|/|w|; Adam's first step is
    # lr sign(g) elementwise, |d| = sqrt(n) (plus wd) -- below 1e-10 in both cases
    F.cross_entropy(model(batches[0][0]), batches[0][1]).backward()
    for n, p in model.named_parameters():
        if n in LINEARS:
            w, g = p.detach().double(), p.grad.double()
            d = g + 5e-4 * w if kind == "sgd" else torch.sign(g) + 1e-2 * w
            assert 1e-14 < lr * float(torch.linalg.vector_norm(d) / torch.linalg.vector_norm(w)) < 1e-10
            if kind == "sgd":  # w_inner == w in float32 (Adam's tiny entries may move)
                assert torch.equal((w - lr * d).float(), p.detach())
    model.zero_grad()
    worst_angle, worst_norm, _, _ = _run(model, batches, inner)
    assert worst_angle < 1e-6
    assert worst_norm < 1e-6


def test_non_finite_update_raises_naming_step_and_layer_before_writing():
    """Finite gradients, but a momentum buffer that overflowed: the proposed update is
    non-finite, so step() raises one line and writes neither weights nor state."""
    model, batches = make_setup(DEPTH, seed=4, dtype=torch.float32)
    inner = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt = ConstrainedELR(inner, model, TARGET)
    for t in range(2):
        opt.zero_grad()
        F.cross_entropy(model(batches[t][0]), batches[t][1]).backward()
        if t == 1:
            w = model.layer3.linear.weight
            inner.state[w]["momentum_buffer"][0, 0] = float("inf")
            before = {n: p.detach().clone() for n, p in model.named_parameters()}
            buffers = {n: inner.state[p]["momentum_buffer"].clone()
                       for n, p in model.named_parameters()}
            msg = ("ConstrainedELR.step() at step 1: parameter 'layer3.linear.weight' has a "
                   "non-finite update")
            with pytest.raises(FloatingPointError, match=f"^{re.escape(msg)}$"):
                opt.step()
            for n, p in model.named_parameters():
                assert torch.equal(p.detach(), before[n]), n
                assert torch.equal(inner.state[p]["momentum_buffer"], buffers[n]), n
        else:
            opt.step()


def test_black_box_inner_optimizer_still_turns_by_the_target():
    """An optimizer without a rebuilt rule (RMSprop): direction from w_inner - w, now
    scale-safe; float64 weights, 20 steps."""
    model, batches = make_setup(DEPTH, seed=5, dtype=torch.float64)
    inner = torch.optim.RMSprop(model.parameters(), lr=1e-3, momentum=0.5)
    worst_angle, worst_norm, _, _ = _run(model, batches, inner, steps=20)
    assert worst_angle < 1e-12
    assert worst_norm < 1e-12
