"""Tests of normdyn.simulate.drift_comparison: drift vs the norm-level model.

Oracles: the norm recurrences typed here from THEORY.md §2 and §5 (plain SGD,
``sigma2 + eta^2 c^2/sigma2``; momentum/weight decay, "sigma2 grows like SGD at lr
eta/(1-beta)" with the decay acting through the same factor), the numbers of THEORY §5
(u grows by 2(1+beta)/(1-beta) = 38 per step at beta = 0.9; update ELR sqrt(2 eta lam) at
the beta = 0 equilibrium), and the discrete simulator where it is importable.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from normdyn.simulate.drift_comparison import (
    COMPARISON_COLUMNS,
    compare_drift_discrete,
    measure_equilibrium,
    measure_u_growth,
    norm_level_model,
    summarize_comparison,
)
from tests.simulate._oracles import geometric_update_elr

# Plain projected SGD is exact in the model: only rounding separates the two routes,
# a few eps per step over 1000 steps (measured <= 2e-15).
EXACT = 1e-12


def _hand_model(s0, c, eta, steps, beta=0.0, lam=0.0):
    """sigma2 of THEORY §5 typed by hand: SGD at lr eta/(1-beta), decay through the same lr."""
    eff = eta / (1 - beta)
    s = np.empty(steps + 1)
    s[0] = s0
    for t in range(steps):
        s[t + 1] = (1 - eff * lam) ** 2 * s[t] + eff**2 * c**2 / s[t]
    return s


# ----------------------------------------------------------------------------- model


@pytest.mark.parametrize(("beta", "lam"), [(0.0, 0.0), (0.0, 1e-2), (0.5, 0.0), (0.9, 5e-3)])
def test_norm_level_model_matches_hand_recurrence(beta, lam):
    frame = norm_level_model(1.5, 0.7, 0.2, 300, momentum=beta, weight_decay=lam)
    assert frame["step"].tolist() == list(range(301))
    np.testing.assert_allclose(frame["sigma2"], _hand_model(1.5, 0.7, 0.2, 300, beta, lam),
                               rtol=1e-12)
    # Update ELR: stationary-velocity tangential part plus the radial part fixed by the
    # model's norm ratio (hand-written oracle in tests/simulate/_oracles.py).
    e = 0.2 * 0.7 / frame["sigma2"]
    want = [geometric_update_elr(ei, 0.2, lam, beta) for ei in e]
    np.testing.assert_allclose(frame["update_elr"], want, rtol=1e-12)


@pytest.mark.parametrize(("beta", "lam"), [(0.0, 0.0), (0.5, 0.0), (0.9, 5e-3)])
def test_norm_level_model_matches_discrete_simulator(beta, lam):
    discrete = pytest.importorskip("normdyn.simulate.discrete")
    ours = norm_level_model([1.0, 3.0], [1.0, 0.2], 0.1, 200, momentum=beta, weight_decay=lam)
    theirs = discrete.simulate_discrete([1.0, 3.0], [1.0, 0.2], 0.1, 200, momentum=beta,
                                        weight_decay=lam, engine="numpy")
    assert theirs["step"].tolist() == ours["step"].tolist()
    np.testing.assert_allclose(ours["sigma2"], theirs["sigma2"], rtol=1e-13)
    np.testing.assert_allclose(ours["update_elr"], theirs["update_elr"], rtol=1e-13)


# ----------------------------------------------------------------------------- comparison


def test_comparison_frame_layout():
    kw = dict(betas=(0.0, 0.9), elements=(4, 50), projected=(True, False),
              weight_decays=(0.0, 1e-2), steps=30, seeds=(0, 1), record_steps=[0, 10, 30])
    df = compare_drift_discrete(**kw)
    assert tuple(df.columns) == COMPARISON_COLUMNS
    assert len(df) == 2 * 2 * 2 * 2 * 2 * 3
    assert df.attrs["model"] in ("discrete", "norm_step")
    assert sorted(df["step"].unique()) == [0, 10, 30]
    start = df[df.step == 0]
    assert start["rel_err_sigma2"].abs().max() < EXACT  # the same initial state
    np.testing.assert_allclose(df["rel_err_sigma2"], df["sigma2_drift"] / df["sigma2_model"] - 1)
    np.testing.assert_allclose(df["rel_err_update_elr"],
                               df["update_elr_drift"] / df["update_elr_model"] - 1)
    wide = summarize_comparison(df, at_steps=(10, 30))
    assert len(wide) == 2 * 2 * 2 * 2
    assert "sigma2_abs@30" in wide and "update_elr_bias@10" in wide
    with pytest.raises(ValueError, match="at_steps"):
        summarize_comparison(df, at_steps=(10, 20))


def test_projected_sgd_drift_equals_model():
    """Plain SGD with projected gradients: drift == norm-level model to ~1e-12 (float precision)."""
    df = compare_drift_discrete(betas=(0.0,), elements=(2, 10, 1000), projected=(True,),
                                weight_decays=(0.0, 5e-3), steps=1000, seeds=(0, 1))
    assert df["rel_err_sigma2"].abs().max() < EXACT
    no_decay = df[df.weight_decay == 0]
    assert no_decay["rel_err_update_elr"].abs().max() < EXACT
    decay = df[df.weight_decay > 0]["rel_err_update_elr"].abs().max()
    if df.attrs["model"] == "discrete":
        # The discrete model adds the decay part of the step orthogonally: exact too.
        assert decay < EXACT
    else:
        # momentum_update_elr is the gradient part only: off by ~(lr wd)^2/(2 E^2) <= 1e-3.
        assert decay < 1e-3


def test_model_choice_and_fallback():
    df = compare_drift_discrete(betas=(0.0,), elements=(10,), projected=(True,),
                                weight_decays=(0.0,), steps=20, seeds=0, model="norm_step")
    assert df.attrs["model"] == "norm_step"
    assert df["rel_err_sigma2"].abs().max() < EXACT
    with pytest.raises(ValueError, match="^model"):
        compare_drift_discrete(steps=5, model="exact")


def test_unprojected_gradients_break_the_model_at_few_elements():
    """The radial component random-walks sigma2 by ~2E/sqrt(e) per step."""
    df = compare_drift_discrete(betas=(0.0,), elements=(10, 10000), projected=(False,),
                                weight_decays=(0.0,), steps=100, seeds=tuple(range(8)),
                                record_steps=[100])
    err = df.groupby("elements")["rel_err_sigma2"].apply(lambda x: x.abs().mean())
    assert err[10] > 0.01  # the model is off by percents at e = 10 ...
    assert err[10] > 5 * err[10000]  # ... and the error shrinks like 1/sqrt(e) (30x here)
    assert err[10000] < 0.01


def test_momentum_transient_then_agreement():
    """beta = 0.9: the model adds each gradient's whole displacement at once, so early on it
    overshoots sigma2 (by > 20% at step 10); by step 1000 the two agree to a few percent."""
    df = compare_drift_discrete(betas=(0.9,), elements=(10000,), projected=(True,),
                                weight_decays=(0.0,), steps=1000, seeds=(0, 1),
                                record_steps=[10, 1000])
    early = df[df.step == 10]["rel_err_sigma2"]
    late = df[df.step == 1000]["rel_err_sigma2"]
    assert (early < -0.2).all()
    assert late.abs().max() < 0.05


# ----------------------------------------------------------------------------- u growth


def test_u_growth_beta_09_close_to_38():
    """Measured growth of u = E_u^-2 at beta = 0.9 against 2(1+beta)/(1-beta) = 38.

    Tolerance 3%: the slope over a finite window exceeds 38 by a correction that decays
    like 1/t (measured: ~+1% for steps 500..1500 at these settings, +0.4% for 1000..3000
    at e = 10^4), and 2 seeds x 2 layers of 4000 elements give a standard error of ~0.4%.
    """
    row = measure_u_growth(0.9, elements=4000, layers=2, steps=1500, fit_start=500,
                           seeds=(0, 1)).iloc[0]
    assert row["predicted"] == pytest.approx(38.0, rel=1e-12)
    assert abs(row["measured"] / 38.0 - 1) < 0.03, row.to_dict()
    assert row["model_window"] == pytest.approx(38.0, rel=0.01)


def test_u_growth_plain_sgd_is_exactly_the_model():
    """beta = 0, projected: the drift is the model, so its u slope is the model's (2 + 1/u)."""
    row = measure_u_growth(0.0, elements=10, layers=1, steps=400, fit_start=100,
                           seeds=0).iloc[0]
    assert row["measured"] == pytest.approx(row["model_window"], rel=1e-9)
    assert row["measured"] == pytest.approx(2.0, rel=1e-2)


# ----------------------------------------------------------------------------- equilibrium


def test_equilibrium_plain_sgd_is_sqrt_2_eta_lam():
    row = measure_equilibrium(0.1, 5e-3, 0.0, elements=100, seeds=0, burn_in=10,
                              window=200).iloc[0]
    assert row["measured"] == pytest.approx(np.sqrt(2 * 0.1 * 5e-3), rel=1e-9)
    assert row["wd_update_elr"] == pytest.approx(row["measured"], rel=1e-9)
    assert row["sigma2_ratio"] == pytest.approx(1.0, rel=1e-9)
    # Without momentum the model's equilibrium is the weight-decay one, radial part included.
    assert row["model_exact"] == pytest.approx(np.sqrt(2 * 0.1 * 5e-3), rel=1e-12)


def test_equilibrium_momentum_close_to_model():
    """beta = 0.9, eta lam = 5e-4: measured within 1% of both predictions (measured +0.1%).

    The tolerance covers the radial decay part of the velocity, lr*lam/(1-beta) = 5e-3
    against E_u ~ 0.023 (+2.4% in the square, +1.2% if uncorrelated; the gradient part
    shrinks to compensate), and a sampling error of ~0.02%.
    """
    row = measure_equilibrium(0.1, 5e-3, 0.9, elements=2000, seeds=(0, 1)).iloc[0]
    assert abs(row["rel_err_exact"]) < 0.01, row.to_dict()
    assert abs(row["rel_err_leading"]) < 0.01, row.to_dict()
    assert np.isnan(row["wd_update_elr"])


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(betas=(0.0, 1.0)), "betas"),
        (dict(weight_decays=(-1.0,)), "weight_decays"),
        (dict(elements=(0,)), "elements"),
        (dict(steps=-1), "steps"),
        (dict(record_steps=[5, 50]), "record_steps"),
        (dict(lr=0.0), "lr"),
        (dict(projected=("yes",)), "projected"),
        (dict(seeds=()), "seed"),
    ],
)
def test_compare_bad_input(kwargs, name):
    args = dict(steps=10, elements=(4,), betas=(0.0,), weight_decays=(0.0,))
    args.update(kwargs)
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        compare_drift_discrete(**args)


def test_measure_bad_input():
    with pytest.raises(ValueError, match="^beta"):
        measure_u_growth(1.0, steps=10, fit_start=0)
    with pytest.raises(ValueError, match="^fit_start"):
        measure_u_growth(0.5, steps=10, fit_start=9)
    with pytest.raises(ValueError, match="^lam"):
        measure_equilibrium(0.1, 0.0, 0.5)
    with pytest.raises(ValueError, match="^eta"):
        measure_equilibrium(-0.1, 1e-3, 0.5)
    with pytest.raises(ValueError, match="^momentum"):
        norm_level_model(1.0, 1.0, 0.1, 5, momentum=1.5)


def test_frames_are_pandas():
    df = norm_level_model([1.0, 2.0], [1.0, 1.0], 0.1, 3)
    assert isinstance(df, pd.DataFrame) and len(df) == 8
