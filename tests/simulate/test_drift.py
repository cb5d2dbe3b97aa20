"""Tests of normdyn.simulate.drift: the weight-vector (random-walk) simulator.

Oracles, all independent of the code under test:

* Pythagoras typed here from THEORY.md §2 (``sigma2 + lr^2 |g|^2``, and
  ``(1 - lr wd)^2 sigma2 + lr^2 |g|^2`` with weight decay), evaluated on the recorded
  columns or on a hand-written loop;
* ``torch.optim.SGD`` itself, fed the identical gradient sequence via ``param.grad``;
* the heavy-ball recursion of the torch documentation, typed here in NumPy;
* the exact distribution of cos(w, z) for an i.i.d. Gaussian z: mean 0, variance 1/e.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats
from strategies import (
    base_gradients,
    drift_elements,
    drift_steps,
    drift_weight_decays,
    learning_rates,
    momenta,
    squared_norms,
)
from tolerances import rtol

from normdyn.simulate.drift import (
    COLUMNS,
    DriftState,
    HeavyBallSGD,
    drift_trajectory,
    simulate_drift,
)

EPS = float(np.finfo(np.float64).eps)
# One recorded step: |w|^2 summed over <= 1e4 elements plus the projection residual
# <w, g> ~ eps |w||g|; both are a few eps relative (measured <= 2 eps).
STEP_TOL = rtol(np.float64, "map_step") * 4


def _layer_series(df: pd.DataFrame, column: str) -> np.ndarray:
    """``column`` as an array (seed, step, layer)."""
    n_seed = df["seed"].nunique()
    n_layer = df["layer"].nunique()
    return df[column].to_numpy().reshape(n_seed, -1, n_layer)


# ----------------------------------------------------------------------------- frame


def test_columns_shape_and_order():
    df = simulate_drift(1.0, [1.0, 2.0], [10, 20], 0.1, 7, seed=[3, 5], record_every=3)
    assert tuple(df.columns) == COLUMNS
    assert len(df) == 2 * 3 * 2  # seeds x recorded steps (0, 3, 6) x layers
    assert df["step"].unique().tolist() == [0, 3, 6]
    assert df["seed"].unique().tolist() == [3, 5]
    assert df[["seed", "step", "layer"]].equals(
        df[["seed", "step", "layer"]].sort_values(["seed", "step", "layer"]))
    assert df.groupby(["seed", "step"]).size().eq(2).all()
    assert (df.loc[df.layer == 1, "elements"] == 20).all()
    assert np.isfinite(df.select_dtypes("number").to_numpy()).all()


def test_zero_steps_gives_empty_frame_with_columns():
    df = simulate_drift(1.0, 1.0, 5, 0.1, 0)
    assert df.empty and tuple(df.columns) == COLUMNS


def test_initial_norm_and_derived_columns():
    lr, s0, c = 0.3, np.array([0.5, 2.0, 7.0]), np.array([1.0, 0.1, 3.0])
    df = simulate_drift(s0, c, [4, 40, 400], lr, 5, seed=[0, 1])
    sig = _layer_series(df, "sigma2")
    np.testing.assert_allclose(sig[:, 0, :], np.broadcast_to(s0, (2, 3)), rtol=STEP_TOL)
    elr = lr * df["grad_norm"] / np.sqrt(df["sigma2"])
    np.testing.assert_allclose(df["elr"], elr, rtol=STEP_TOL)
    spread = df.groupby(["seed", "step"])["elr"].agg(lambda e: e.max() / e.min())
    np.testing.assert_allclose(
        df.set_index(["seed", "step"])["spread"].groupby(level=[0, 1]).first(), spread,
        rtol=STEP_TOL)
    # Plain SGD: the update is the gradient step, so update ELR == gradient ELR.
    np.testing.assert_allclose(df["update_elr"], df["elr"], rtol=STEP_TOL)
    assert (df["lr"] == lr).all()


def test_zero_gradient_layer():
    df = simulate_drift(1.0, [0.0, 1.0], [5, 5], 0.1, 3)
    assert (df.loc[df.layer == 0, "grad_norm"] == 0).all()
    assert (df.loc[df.layer == 0, "sigma2"] == df.loc[df.layer == 0, "sigma2"].iloc[0]).all()
    assert np.isinf(df["spread"]).all()


# ----------------------------------------------------------------------------- Pythagoras


def test_projected_sgd_pythagoras_per_step():
    """sigma2_{t+1} = sigma2_t + lr_t^2 |g_t|^2 at every step, to a few eps."""
    rng = np.random.default_rng(11)
    steps, elements = 300, [2, 10, 100, 10000]
    c = rng.uniform(0.1, 3.0, size=(steps, 4))
    lrs = rng.uniform(0.01, 2.0, size=steps)
    df = simulate_drift(rng.uniform(0.2, 5.0, 4), c, elements, lrs, steps, seed=[0, 1])
    sig, lr, g = (_layer_series(df, k) for k in ("sigma2", "lr", "grad_norm"))
    pred = sig[:, :-1] + lr[:, :-1] ** 2 * g[:, :-1] ** 2
    np.testing.assert_allclose(sig[:, 1:], pred, rtol=STEP_TOL, atol=0)
    np.testing.assert_allclose(_layer_series(df, "c"), np.broadcast_to(c, (2, steps, 4)))
    np.testing.assert_allclose(lr[0, :, 0], lrs)


def test_projected_sgd_matches_hand_written_norm_loop():
    """The whole trajectory against sigma2 <- sigma2 + lr^2 c^2 / sigma2, to ~1e-12 relative."""
    steps, lr = 1000, 0.2
    s0, c = np.array([1.0, 0.01, 30.0]), np.array([1.0, 2.0, 0.5])
    df = simulate_drift(s0, c, [10, 1000, 10000], lr, steps, seed=4)
    sig = _layer_series(df, "sigma2")[0]
    ref = np.empty_like(sig)
    ref[0] = s0
    for t in range(steps - 1):
        ref[t + 1] = ref[t] + lr**2 * c**2 / ref[t]
    rel = np.abs(sig / ref - 1)
    assert rel.max() < 1e-12, rel.max()
    # The same for the ELR: E = lr c / sigma2.
    np.testing.assert_allclose(_layer_series(df, "elr")[0], lr * c / ref, rtol=1e-12)


def test_projected_sgd_weight_decay_pythagoras():
    """With coupled weight decay: sigma2_{t+1} = (1 - lr wd)^2 sigma2_t + lr^2 |g_t|^2."""
    lr, wd = 0.5, 0.05
    df = simulate_drift([1.0, 3.0], [1.0, 0.2], [50, 500], lr, 200, weight_decay=wd,
                        seed=[0, 9])
    sig, g = _layer_series(df, "sigma2"), _layer_series(df, "grad_norm")
    pred = (1 - lr * wd) ** 2 * sig[:, :-1] + lr**2 * g[:, :-1] ** 2
    np.testing.assert_allclose(sig[:, 1:], pred, rtol=STEP_TOL)
    # |dw|/|w| = lr |wd w + g| / |w| = sqrt((lr wd)^2 + E^2) since g is orthogonal to w.
    e = _layer_series(df, "elr")
    np.testing.assert_allclose(_layer_series(df, "update_elr"),
                               np.sqrt((lr * wd) ** 2 + e**2), rtol=STEP_TOL)


# ----------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("projected", [True, False])
def test_gradient_norms_equal_modeled_norms(projected):
    rng = np.random.default_rng(2)
    c = rng.uniform(0.0, 5.0, size=(40, 3))
    df = simulate_drift([0.1, 1.0, 10.0], c, [3, 30, 300], 0.7, 40, projected=projected,
                        seed=[1, 2, 3])
    modeled = _layer_series(df, "c") / np.sqrt(_layer_series(df, "sigma2"))
    np.testing.assert_allclose(_layer_series(df, "grad_norm"), modeled, rtol=STEP_TOL)


def test_projected_gradients_are_orthogonal():
    df = simulate_drift(1.0, 1.0, [2, 10, 1000], 0.5, 100, seed=[0, 1], momentum=0.9,
                        weight_decay=1e-3)
    assert df["cos_wg"].abs().max() < 64 * EPS


def test_unprojected_cos_is_normal_with_variance_one_over_e():
    """cos(w, z) for i.i.d. Gaussian z: mean 0, variance exactly 1/e; ~N(0, 1/e) for large e."""
    e = 2000
    df = simulate_drift(1.0, 1.0, [e] * 4, 0.1, 250, projected=False, seed=[0, 1, 2, 3])
    x = df["cos_wg"].to_numpy() * np.sqrt(e)
    n = x.size  # 4000 independent draws (fresh z every step)
    assert abs(x.mean()) < 4 / np.sqrt(n)  # 4 standard errors
    assert abs(x.var() - 1) < 4 * np.sqrt(2 / n)  # 4 standard errors of a sample variance
    assert stats.kstest(x, "norm").pvalue > 1e-3
    # Projection is what removes the radial part: a projected run of the same seed has none.
    proj = simulate_drift(1.0, 1.0, [e] * 4, 0.1, 5, projected=True, seed=0)
    assert proj["cos_wg"].abs().max() < 64 * EPS


def test_unprojected_norm_is_a_random_walk_around_pythagoras():
    """|w - lr g|^2 = sigma2 - 2 lr <w,g> + lr^2 |g|^2: the cross term is there, and only it."""
    lr = 0.3
    df = simulate_drift(1.0, 1.0, [10, 100], lr, 100, projected=False, seed=[0, 1])
    sig, g, cos = (_layer_series(df, k) for k in ("sigma2", "grad_norm", "cos_wg"))
    cross = 2 * lr * cos[:, :-1] * np.sqrt(sig[:, :-1]) * g[:, :-1]
    pred = sig[:, :-1] - cross + lr**2 * g[:, :-1] ** 2
    np.testing.assert_allclose(sig[:, 1:], pred, rtol=STEP_TOL)
    assert np.abs(cross).max() > 1e-3 * sig.min()


# ----------------------------------------------------------------------------- optimizer


def test_matches_torch_sgd_step_for_step():
    """Same gradients via param.grad: torch.optim.SGD(momentum=0.9, dampening=0, wd=1e-3)."""
    torch = pytest.importorskip("torch")
    steps = 200
    lrs = np.linspace(0.05, 0.5, steps)
    tr = drift_trajectory([1.0, 2.0, 0.5], [1.0, 3.0, 0.2], [5, 50, 500], lrs, steps,
                          momentum=0.9, weight_decay=1e-3, seed=7)
    assert tr.grads.shape == (steps, 555) and tr.weights.shape == (steps + 1, 555)
    params = [torch.nn.Parameter(torch.from_numpy(tr.layer(tr.weights[0], i).copy()))
              for i in range(3)]
    opt = torch.optim.SGD(params, lr=0.1, momentum=0.9, dampening=0, weight_decay=1e-3,
                          nesterov=False)
    for t in range(steps):
        for group in opt.param_groups:
            group["lr"] = float(tr.lrs[t])
        for i, p in enumerate(params):
            p.grad = torch.from_numpy(tr.layer(tr.grads[t], i).copy())
        opt.step()
        for i, p in enumerate(params):
            ref = tr.layer(tr.weights[t + 1], i)
            # Rounding only (torch may fuse multiply-adds): a few eps per step taken.
            tol = rtol(np.float64, "map_step", steps=t + 1) * np.abs(ref).max()
            np.testing.assert_allclose(p.detach().numpy(), ref, rtol=0, atol=tol)
    np.testing.assert_allclose(tr.lrs, lrs)


def test_trajectory_is_the_simulate_drift_run():
    kw = dict(momentum=0.5, weight_decay=1e-2, projected=False, seed=3)
    tr = drift_trajectory([1.0, 4.0], [2.0, 1.0], [6, 60], 0.2, 30, **kw)
    df = simulate_drift([1.0, 4.0], [2.0, 1.0], [6, 60], 0.2, 30, **kw)
    for i in range(2):
        w = tr.layer(tr.weights, i)
        sub = df[df.layer == i]
        np.testing.assert_allclose(sub["sigma2"], (w[:-1] ** 2).sum(axis=1), rtol=STEP_TOL)
        dw = np.linalg.norm(w[1:] - w[:-1], axis=1)
        np.testing.assert_allclose(sub["update_elr"], dw / np.linalg.norm(w[:-1], axis=1),
                                   rtol=1e-12)
        np.testing.assert_allclose(sub["grad_norm"],
                                   np.linalg.norm(tr.layer(tr.grads, i), axis=1), rtol=STEP_TOL)


def test_heavy_ball_first_step_and_buffer():
    opt = HeavyBallSGD(momentum=0.9, weight_decay=0.1)
    w = np.array([1.0, -2.0])
    g = np.array([0.5, 0.25])
    d = opt.step(w, g, 0.1).copy()  # step returns the live buffer
    np.testing.assert_array_equal(d, g + 0.1 * np.array([1.0, -2.0]))  # buf = d_p at step 1
    w_after = w.copy()
    d2 = opt.step(w, g, 0.1)
    np.testing.assert_allclose(d2, 0.9 * d + (g + 0.1 * w_after), rtol=EPS)


@given(
    elements=drift_elements,
    steps=drift_steps,
    sigma2_0=squared_norms,
    c=base_gradients,
    lr=learning_rates,
    momentum=momenta,
    weight_decay=drift_weight_decays,
    projected=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_random_states(elements, steps, sigma2_0, c, lr, momentum, weight_decay,
                                projected, seed):
    """Random small states: modeled gradient norms, orthogonality, and the heavy-ball recursion."""
    tr = drift_trajectory(sigma2_0, c, elements, lr, steps, momentum=momentum,
                          weight_decay=weight_decay, projected=projected, seed=seed)
    buf = None
    w = tr.weights[0].copy()
    for i in range(len(elements)):
        np.testing.assert_allclose((tr.layer(w, i) ** 2).sum(), sigma2_0, rtol=STEP_TOL)
    for t in range(steps):
        np.testing.assert_allclose(w, tr.weights[t], rtol=0,
                                   atol=STEP_TOL * (t + 1) * np.abs(tr.weights[t]).max())
        w = tr.weights[t]
        g = tr.grads[t]
        for i in range(len(elements)):
            wn, gn = np.linalg.norm(tr.layer(w, i)), np.linalg.norm(tr.layer(g, i))
            np.testing.assert_allclose(gn, c / wn, rtol=STEP_TOL)
            if projected:
                assert abs(tr.layer(w, i) @ tr.layer(g, i)) <= 64 * EPS * wn * gn
        # torch.optim.SGD's definition (dampening 0, nesterov off), typed here.
        d_p = g + weight_decay * w
        buf = d_p if buf is None or momentum == 0 else momentum * buf + d_p
        w = w - lr * buf
    np.testing.assert_allclose(w, tr.weights[-1], rtol=0,
                               atol=STEP_TOL * (steps + 1) * np.abs(tr.weights[-1]).max())
    df = simulate_drift(sigma2_0, c, elements, lr, steps, momentum=momentum,
                        weight_decay=weight_decay, projected=projected, seed=seed)
    assert np.isfinite(df.select_dtypes("number").to_numpy()).all()
    if momentum == 0 and projected:
        sig, g = _layer_series(df, "sigma2")[0], _layer_series(df, "grad_norm")[0]
        pred = (1 - lr * weight_decay) ** 2 * sig[:-1] + lr**2 * g[:-1] ** 2
        np.testing.assert_allclose(sig[1:], pred, rtol=STEP_TOL)


# ----------------------------------------------------------------------------- seeds


def test_determinism_by_seed():
    kw = dict(momentum=0.9, weight_decay=1e-3, projected=False)
    a = simulate_drift(1.0, 1.0, [5, 50], 0.1, 20, seed=[4, 8], **kw)
    b = simulate_drift(1.0, 1.0, [5, 50], 0.1, 20, seed=[4, 8], **kw)
    pd.testing.assert_frame_equal(a, b)
    alone = simulate_drift(1.0, 1.0, [5, 50], 0.1, 20, seed=8, **kw)
    pd.testing.assert_frame_equal(a[a.seed == 8].reset_index(drop=True), alone)
    other = simulate_drift(1.0, 1.0, [5, 50], 0.1, 20, seed=5, **kw)
    assert not np.allclose(other["cos_wg"], alone["cos_wg"])


def test_float32_runs_close_to_float64():
    a = simulate_drift(1.0, 1.0, [10, 1000], 0.1, 50, seed=0, dtype=np.float32)
    b = simulate_drift(1.0, 1.0, [10, 1000], 0.1, 50, seed=0)
    np.testing.assert_allclose(a["sigma2"], b["sigma2"], rtol=1e-5)


# ----------------------------------------------------------------------------- schedules


class _Recorder:
    """A schedule object: lr(step, state) = 0.1 * (step + 1); keeps the states it saw."""

    def __init__(self):
        self.states: list[DriftState] = []

    def lr(self, step, state):
        self.states.append(state)
        return 0.1 * (step + 1)


def test_schedule_object_receives_state():
    sched = _Recorder()
    df = simulate_drift([1.0, 4.0], [2.0, 1.0], [5, 6], sched, 4, seed=[0, 1])
    assert len(sched.states) == 8
    np.testing.assert_allclose(df.groupby("step")["lr"].first(), [0.1, 0.2, 0.3, 0.4])
    s0 = sched.states[0]
    assert s0.step == 0 and s0.seed == 0
    np.testing.assert_allclose(s0.per_unit_elr, [2.0 / 1.0, 1.0 / 4.0], rtol=STEP_TOL)
    np.testing.assert_allclose(s0.grad_norm, [2.0, 0.5], rtol=STEP_TOL)


def test_critical_warmup_schedule_if_available():
    schedules = pytest.importorskip("normdyn.simulate.schedules")
    sched = schedules.make_schedule("critical_warmup", 10.0)
    df = simulate_drift([1.0, 1.0], [100.0, 0.01], [20, 20], sched, 3)
    first = df[df.step == 0]
    a = (first["grad_norm"] / np.sqrt(first["sigma2"])).to_numpy()
    assert first["lr"].iloc[0] == pytest.approx(min(10.0, 1 / np.sqrt(a.max() * a.min())),
                                                rel=1e-12)


def test_linear_warmup_schedule_if_available():
    schedules = pytest.importorskip("normdyn.simulate.schedules")
    sched = schedules.make_schedule("linear_warmup", 0.4, n_steps=4)
    df = simulate_drift(1.0, 1.0, [8, 8], sched, 6, seed=[0, 1])
    np.testing.assert_allclose(df.groupby("step")["lr"].first(),
                               [0.1, 0.2, 0.3, 0.4, 0.4, 0.4], rtol=1e-15)


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(momentum=-0.1), "momentum"),
        (dict(momentum=1.0), "momentum"),
        (dict(momentum=float("nan")), "momentum"),
        (dict(weight_decay=-1e-4), "weight_decay"),
        (dict(elements=0), "elements"),
        (dict(elements=[3, 0]), "elements"),
        (dict(elements=1), "elements"),  # projected: no tangent space
        (dict(elements=2.5), "elements"),
        (dict(steps=-1), "steps"),
        (dict(steps=2.0), "steps"),
        (dict(sigma2_0=0.0), "sigma2_0"),
        (dict(c=-1.0), "c"),
        (dict(c=np.ones((2, 3))), "c"),
        (dict(lr_schedule=0.0), "lr_schedule"),
        (dict(lr_schedule=np.ones(2)), "lr_schedule"),
        (dict(lr_schedule=lambda t, s: -1.0), "lr"),
        (dict(lr_schedule=lambda t, s: np.ones(2)), "lr_schedule"),
        (dict(seed=-1), "seed"),
        (dict(seed=[1, 1]), "seed"),
        (dict(record_every=0), "record_every"),
        (dict(projected="yes"), "projected"),
        (dict(dtype=np.int32), "dtype"),
    ],
)
def test_bad_input_names_the_parameter(kwargs, name):
    args = dict(sigma2_0=1.0, c=1.0, elements=[4, 4], lr_schedule=0.1, steps=3)
    args.update(kwargs)
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        simulate_drift(**args)


def test_unprojected_single_element_layer_is_allowed():
    df = simulate_drift(1.0, 1.0, 1, 0.1, 5, projected=False)
    np.testing.assert_allclose(df["cos_wg"].abs(), 1.0)
