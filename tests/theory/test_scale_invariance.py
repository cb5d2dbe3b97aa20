"""Real gradients of a normalized layer (THEORY.md section 2, items 1-4).

A small numpy network -- x -> batchnorm(x @ w) -> tanh -> fixed readout -> logistic loss --
is scale invariant in w.  Its gradient is computed here by central finite differences
(and, for machine-precision checks, by the complex-step derivative), never by normdyn.
"""

from __future__ import annotations

import numpy as np
from hypothesis import example, given, target
from hypothesis import strategies as st
from strategies import learning_rates, scale_factors
from tolerances import rtol

from normdyn.theory import numeric as N

N_SAMPLES, N_IN, N_OUT = 12, 4, 3
FD_TOL = rtol(np.float64, "finite_difference")
seeds = st.integers(0, 2**32 - 1)


def make_problem(seed: int):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N_SAMPLES, N_IN))
    y = np.where(rng.random(N_SAMPLES) < 0.5, -1.0, 1.0)
    readout = rng.standard_normal(N_OUT)
    w = rng.standard_normal((N_IN, N_OUT))
    return x, y, readout, w


def loss(w, x, y, readout):
    """Logistic loss of a batch-normalized linear layer (no eps: exactly scale invariant).

    Written with analytic operations only, so it also accepts complex w (complex step).
    """
    z = x @ w
    centred = z - z.mean(axis=0)
    zhat = centred / np.sqrt((centred * centred).mean(axis=0))
    logits = np.tanh(zhat) @ readout
    return np.mean(np.log(1 + np.exp(-y * logits)))


def fd_gradient(w, *data, rel_h=2e-6):
    """Central differences with a step proportional to |w| (the loss's own length scale).

    rel_h = 2e-6 balances truncation (~h^2 L''', 2.4e-8 at 6e-6 for seed 261) against
    rounding (~eps/h, 1e-10).
    """
    h = rel_h * np.linalg.norm(w)
    g = np.zeros_like(w)
    for idx in np.ndindex(w.shape):
        e = np.zeros_like(w)
        e[idx] = h
        g[idx] = (loss(w + e, *data) - loss(w - e, *data)) / (2 * h)
    return g


def cs_gradient(w, *data):
    """Complex-step derivative: Im L(w + i h e_j)/h, exact to rounding for analytic L."""
    h = 1e-30 * np.linalg.norm(w)
    g = np.zeros_like(w)
    for idx in np.ndindex(w.shape):
        e = np.zeros(w.shape, dtype=complex)
        e[idx] = 1j * h
        g[idx] = loss(w + e, *data).imag / h
    return g


@given(seeds)
@example(0)
@example(261)  # large third derivative: FD truncation error 2.4e-8 with h = 6e-6 |w|
def test_finite_difference_gradient_is_orthogonal_to_weights(seed):
    x, y, readout, w = make_problem(seed)
    g = fd_gradient(w, x, y, readout)
    cos = abs(np.sum(g * w)) / (np.linalg.norm(g) * np.linalg.norm(w))
    target(cos, label="|cos(w, grad)| (finite differences)")
    assert cos <= FD_TOL
    # The complex-step gradient agrees with FD and is orthogonal to machine precision.
    gc = cs_gradient(w, x, y, readout)
    assert np.linalg.norm(gc - g) <= FD_TOL * np.linalg.norm(gc)
    cos_cs = abs(np.sum(gc * w)) / (np.linalg.norm(gc) * np.linalg.norm(w))
    assert cos_cs <= 64 * rtol(np.float64, "single_op")


def test_negative_control_unnormalized_layer_is_not_orthogonal():
    """Without the normalization (or with BatchNorm's eps at small scale) the check fails."""
    x, y, readout, w = make_problem(0)

    def plain(v, *data):
        return np.mean(np.log(1 + np.exp(-data[1] * (np.tanh(data[0] @ v) @ data[2]))))

    def with_eps(v, *data):
        z = data[0] @ v
        centred = z - z.mean(axis=0)
        zhat = centred / np.sqrt((centred * centred).mean(axis=0) + 1e-5)
        return np.mean(np.log(1 + np.exp(-data[1] * (np.tanh(zhat) @ data[2]))))

    for fn, scale in ((plain, 1.0), (with_eps, 1e-3)):
        v = scale * w
        h = 6e-6 * np.linalg.norm(v)
        g = np.array([(fn(v + h * e, x, y, readout) - fn(v - h * e, x, y, readout)) / (2 * h)
                      for e in np.eye(v.size).reshape(v.size, *v.shape)]).reshape(v.shape)
        cos = abs(np.sum(g * v)) / (np.linalg.norm(g) * np.linalg.norm(v))
        assert cos > 1e3 * FD_TOL


@given(seeds, scale_factors)
@example(0, 1e-50)
@example(0, 1e50)
def test_gradient_scales_inversely_with_weights(seed, alpha):
    """grad L(alpha w) = grad L(w)/alpha, so the base gradient c = |grad||w| is invariant."""
    x, y, readout, w = make_problem(seed)
    g = fd_gradient(w, x, y, readout)
    g_scaled = fd_gradient(alpha * w, x, y, readout)
    err = np.linalg.norm(alpha * g_scaled - g) / np.linalg.norm(g)
    target(err, label="relative error of alpha*grad(alpha w) - grad(w)")
    assert err <= FD_TOL
    c = N.base_gradient(np.linalg.norm(g), np.linalg.norm(w))
    c_scaled = N.base_gradient(np.linalg.norm(g_scaled), np.linalg.norm(alpha * w))
    assert abs(c_scaled - c) <= FD_TOL * c


@given(seeds, learning_rates, scale_factors)
@example(0, 1e3, 1e-50)
def test_sgd_step_on_real_layer_follows_norm_recurrence_and_elr_map(seed, eta, alpha):
    """One real SGD step: |w'|^2 = sigma2 + eta^2 c^2/sigma2 and E' = (c'/c) F(E)."""
    x, y, readout, w = make_problem(seed)
    w = alpha * w
    g = cs_gradient(w, x, y, readout)
    sigma2 = float(np.sum(w * w))
    c = N.base_gradient(np.linalg.norm(g), np.linalg.norm(w))
    w_next = w - eta * g
    measured = float(np.sum(w_next * w_next))
    predicted = N.norm_step(sigma2, eta, c)
    err = abs(measured - predicted) / predicted
    target(err, label="norm recurrence")
    assert err <= 64 * rtol(np.float64, "map_step")
    # ELR: measured E = eta |g|/|w| equals eta c/sigma2 and evolves by the ELR map with gain.
    e = N.gradient_elr(eta, np.linalg.norm(g), np.linalg.norm(w))
    assert abs(e / N.elr(eta, c, sigma2) - 1) <= 8 * rtol(np.float64, "map_step")
    g_next = cs_gradient(w_next, x, y, readout)
    c_next = np.linalg.norm(g_next) * np.linalg.norm(w_next)
    e_next = eta * np.linalg.norm(g_next) / np.linalg.norm(w_next)
    e_pred = N.elr_step(e, c_next / c)
    err_e = abs(e_next - e_pred) / e_next
    target(err_e, label="elr map with gain")
    assert err_e <= 64 * rtol(np.float64, "map_step")
