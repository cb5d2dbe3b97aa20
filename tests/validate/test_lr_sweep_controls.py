"""The positive controls and the probes of the one-step lr sweep (normdyn.validate.lr_sweep).

Oracles are independent of the code under test: the gradients and norms are recomputed
here with autograd on a copy of the model, and the constant-c one-step ELR is the closed
form ``E1 = eta*a/(1 + eta^2 a^2)`` (``|w1|^2 = |w0|^2 + eta^2 |g0|^2`` for a tangent
``g0``) typed in the test.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from normdyn.layers.detection import find_scale_invariant
from normdyn.validate.lr_sweep import (
    one_step_layer_table,
    one_step_lr_sweep,
    refined_sweep_lrs,
)
from normdyn.validate.models import plain_mlp

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _setup():
    torch.manual_seed(0)
    model = plain_mlp(5, 16, 10, 3).double()
    x = torch.randn(64, 10, dtype=torch.float64)
    y = torch.arange(64) % 3
    return model, (x[:32], y[:32]), (x[32:], y[32:]), find_scale_invariant(model)


def _norms_at_init(model, batch, names):
    m = copy.deepcopy(model)
    m.zero_grad()
    F.cross_entropy(m(batch[0]), batch[1]).backward()
    p = dict(m.named_parameters())
    g = np.array([float(p[n].grad.norm()) for n in names])
    w = np.array([float(p[n].detach().norm()) for n in names])
    dot = np.array([float((p[n].grad * p[n].detach()).sum()) for n in names])
    return g, w, dot


def test_controls_keep_c_constant_and_follow_the_closed_form():
    model, batch, _, layers = _setup()
    names = [la.param_name for la in layers]
    lrs = np.geomspace(1e-3, 1e2, 9)
    table = one_step_layer_table(model, batch, F.cross_entropy, lrs, layers,
                                 gradients=("constant_c", "random_tangent"), seed=3)
    g0, w0, dot = _norms_at_init(model, batch, names)
    eta = lrs[:, None]
    # |w1|^2 = |w0|^2 - 2 eta w0.g0 + eta^2 |g0|^2 and E1 = eta c0 / |w1|^2 with c0 = |g0||w0|
    w1_sq = w0**2 - 2 * eta * dot + eta**2 * g0**2
    expected = eta * g0 * w0 / w1_sq
    for kind in ("constant_c", "random_tangent"):
        t = table[table["gradient"] == kind]
        np.testing.assert_allclose(t["c_ratio"], 1.0, rtol=1e-12)
        elr = t.pivot(index="lr", columns="layer", values="elr")[names].to_numpy()
        np.testing.assert_allclose(elr, expected, rtol=1e-9)
    # with a tangent g0 (w0.g0 ~ 0) this is the model's E1 = eta a / (1 + eta^2 a^2)
    a = g0 / w0
    np.testing.assert_allclose(expected, eta * a / (1 + (eta * a) ** 2), rtol=1e-4)


def test_constant_c_argmin_is_eta_star_on_a_grid_through_it():
    model, batch, _, layers = _setup()
    names = [la.param_name for la in layers]
    g0, w0, _ = _norms_at_init(model, batch, names)
    a = g0 / w0
    eta = 1 / np.sqrt(a.max() * a.min())
    lrs = refined_sweep_lrs(eta)
    sweep = one_step_lr_sweep(model, batch, F.cross_entropy, lrs, layers,
                              gradients=("constant_c",))
    best = sweep.loc[sweep["spread_measured"].idxmin(), "lr"]
    assert abs(np.log10(best / eta)) < 1e-9
    assert sweep["critical_lr_predicted"].iloc[0] == pytest.approx(eta, rel=1e-9)
    steps = np.diff(np.log10(lrs))
    assert steps.max() <= 0.1 + 1e-9  # the grid resolves 0.1 decade everywhere


def test_real_gradient_uses_the_probe_batch():
    model, batch, fresh, layers = _setup()
    names = [la.param_name for la in layers]
    lr = 0.5
    same = one_step_layer_table(model, batch, F.cross_entropy, [lr], layers)
    other = one_step_layer_table(model, batch, F.cross_entropy, [lr], layers,
                                 probe_batch=fresh)
    # oracle: step on `batch`, gradient on `fresh`, by hand
    m = copy.deepcopy(model)
    m.zero_grad()
    F.cross_entropy(m(batch[0]), batch[1]).backward()
    with torch.no_grad():
        for p in m.parameters():
            p -= lr * p.grad
    m.zero_grad()
    F.cross_entropy(m(fresh[0]), fresh[1]).backward()
    p = dict(m.named_parameters())
    expected = np.array([float(p[n].grad.norm()) for n in names])
    np.testing.assert_allclose(other.set_index("layer").loc[names, "grad_norm"], expected,
                               rtol=1e-9)
    assert not np.allclose(same["grad_norm"], other["grad_norm"])


def test_bad_gradient_kind_is_named():
    model, batch, _, layers = _setup()
    with pytest.raises(ValueError, match=r"^gradients must be a non-empty subset of "
                                         r"'real', 'constant_c', 'random_tangent', got "):
        one_step_layer_table(model, batch, F.cross_entropy, [1.0], layers,
                             gradients=("fake",))
