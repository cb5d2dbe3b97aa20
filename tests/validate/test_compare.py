"""Tests of normdyn.validate.compare on tables whose answers are known by construction."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from normdyn.validate.compare import (
    FLOAT32_EPS,
    REPORT_JSON,
    REPORT_MD,
    compare_run,
    replay_threshold,
    to_markdown,
    write_report,
)

SGD = {"optimizer": "sgd", "momentum": 0.0, "weight_decay": 0.0, "steps": 150}


def _table(sigma2: np.ndarray, grad_norm: np.ndarray, lr: np.ndarray,
           cos: np.ndarray | None = None) -> pd.DataFrame:
    T, L = sigma2.shape
    w = np.sqrt(sigma2)
    frame = pd.DataFrame({
        "step": np.repeat(np.arange(T), L),
        "layer": np.tile([f"layer{i}" for i in range(L)], T),
        "lr": np.repeat(lr, L),
        "sigma2": sigma2.ravel(),
        "grad_norm": grad_norm.ravel(),
        "elr": np.repeat(lr, L) * grad_norm.ravel() / w.ravel(),  # E = lr |g|/|w|
        "update_elr": np.repeat(lr, L) * grad_norm.ravel() / w.ravel(),
        "cos_wg": np.zeros(T * L) if cos is None else cos.ravel(),
        "loss": 1.0,
    })
    return frame


def _model_table(T: int = 150, L: int = 4, *, constant_c: bool = False, momentum: float = 0.0,
                 seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """sigma2 from random c_t and lr_t by the model written out here (not the package's map).

    Plain SGD: sigma2_{t+1} = sigma2_t + lr_t^2 c_t^2 / sigma2_t (THEORY.md section 2.3);
    heavy-ball momentum beta (no weight decay): the same at lr_t/(1 - beta) (section 5).
    """
    rng = np.random.default_rng(seed)
    c = np.broadcast_to(rng.uniform(0.5, 2.0, L), (T, L)).copy() if constant_c \
        else rng.uniform(0.5, 2.0, (T, L))
    lr = np.full(T, 0.1) if constant_c else rng.uniform(0.05, 0.2, T)
    sigma2 = np.empty((T, L))
    sigma2[0] = rng.uniform(0.5, 4.0, L)
    for t in range(T - 1):
        step_lr = lr[t] / (1.0 - momentum)
        sigma2[t + 1] = sigma2[t] + step_lr**2 * c[t] ** 2 / sigma2[t]
    grad_norm = c / np.sqrt(sigma2)
    return _table(sigma2, grad_norm, lr), sigma2


def test_replay_of_an_exact_model_table_is_at_rounding_level():
    table, _ = _model_table()
    replay = compare_run(table, SGD)["replay"]
    assert replay["applicable"] and replay["steps_replayed"] == 149
    assert replay["max_rel_error"] < 1e-12
    assert replay["float32_level"] is True
    assert replay["float32_threshold"] == pytest.approx(replay_threshold(149))
    assert replay_threshold(149) > 149 * FLOAT32_EPS


def test_replay_detects_a_perturbation():
    table, sigma2 = _model_table()
    bad = table.copy()
    row = (bad["step"] == 70) & (bad["layer"] == "layer2")
    bad.loc[row, "sigma2"] *= 1 + 1e-3
    replay = compare_run(bad, SGD)["replay"]
    assert replay["max_rel_error"] == pytest.approx(1e-3 / (1 + 1e-3), rel=1e-6)
    assert replay["worst_layer"] == "layer2"
    assert replay["float32_level"] is False


def test_momentum_run_uses_the_momentum_model():
    table, _ = _model_table(momentum=0.9)
    cfg = {**SGD, "momentum": 0.9}
    replay = compare_run(table, cfg)["replay"]
    assert "momentum" in replay["model"] and replay["max_rel_error"] < 1e-12
    plain = compare_run(table, cfg)["replay_plain_sgd_model"]
    assert plain["model"] == "sgd" and plain["max_rel_error"] > 1e-3
    assert plain == compare_run(table, SGD)["replay"]
    assert compare_run(table, SGD)["replay_plain_sgd_model"] is None


def test_adam_replay_is_marked_not_applicable():
    table, _ = _model_table(T=20)
    replay = compare_run(table, {"optimizer": "adam"})["replay"]
    assert replay["applicable"] is False and "adam" in replay["model"]


def test_constant_c_prediction_at_recorded_steps():
    table, _ = _model_table(constant_c=True)
    pred = compare_run(table, SGD)["constant_c_prediction"]
    assert list(pred["at_steps"]) == ["10", "100", "149"]
    for v in pred["at_steps"].values():
        assert v["max_rel_error"] < 1e-12
    varying, _ = _model_table()
    errors = compare_run(varying, SGD)["constant_c_prediction"]["at_steps"]
    assert errors["100"]["max_rel_error"] > 1e-3
    short, _ = _model_table(T=8)
    assert list(compare_run(short, SGD)["constant_c_prediction"]["at_steps"]) == ["7"]


def test_spread_statistics():
    T = 30
    elr = np.stack([np.full(T, 0.1), 0.1 * (1 + 9 * np.exp(-np.arange(T) / 5.0))], axis=1)
    sigma2 = np.ones((T, 2))
    table = _table(sigma2, elr / 0.1, np.full(T, 0.1))
    spread = compare_run(table, SGD)["elr_spread"]
    expected = elr[:, 1] / elr[:, 0]
    assert spread["first"] == pytest.approx(expected[0])
    assert spread["last"] == pytest.approx(expected[-1])
    assert spread["min"] == pytest.approx(expected.min())
    assert spread["log_spread_slope_per_step"] < 0
    assert spread["fraction_of_steps_decreasing"] == 1.0
    assert spread["approaching_one"] is True


def test_defect_summary_is_per_layer_max_abs_cos():
    table, sigma2 = _model_table(T=10, L=3)
    cos = np.zeros((10, 3))
    cos[4, 1] = -3e-4
    cos[7, 2] = 2e-6
    table["cos_wg"] = cos.ravel()
    d = compare_run(table, SGD)["scale_invariance_defect"]
    assert d["max_abs_cos"] == pytest.approx(3e-4) and d["worst_layer"] == "layer1"
    assert d["per_layer_max_abs_cos"] == pytest.approx({"layer0": 0.0, "layer1": 3e-4,
                                                        "layer2": 2e-6})


def test_non_finite_steps_are_cut_off():
    table, _ = _model_table(T=40)
    table.loc[table["step"] >= 25, "sigma2"] = np.inf
    report = compare_run(table, SGD)
    assert report["run"]["non_finite_from_step"] == 25
    assert report["run"]["steps_compared"] == 25
    assert report["replay"]["max_rel_error"] < 1e-12
    json.dumps(report, allow_nan=False)


def test_critical_lr_and_sweep_block():
    table, sigma2 = _model_table(T=5)
    first = table[table["step"] == 0]
    a0 = first["grad_norm"].to_numpy() / np.sqrt(first["sigma2"].to_numpy())
    # Oracles typed here: eta* = 1/sqrt(a_max a_min), S(lr) = max F(lr a)/min F(lr a).
    eta_star = 1.0 / np.sqrt(a0.max() * a0.min())
    lrs = np.geomspace(0.01, 100, 9)
    xa = lrs[:, None] * a0[None, :]
    predicted = (xa / (1 + xa * xa)).max(axis=1) / (xa / (1 + xa * xa)).min(axis=1)
    measured = predicted * (1 + np.abs(np.log(lrs / 3.0)))
    # The sweep's own prediction is deliberately off eta*: the report must pass it through.
    sweep = pd.DataFrame({"lr": lrs, "spread_measured": measured,
                          "spread_predicted": predicted,
                          "critical_lr_predicted": 1.25 * eta_star})
    crit = compare_run(table, SGD, sweep=sweep)["critical_lr"]
    assert crit["critical_lr_step0"] == pytest.approx(eta_star, rel=1e-12)
    best = lrs[int(np.argmin(measured))]
    assert crit["sweep"]["critical_lr_bruteforce"] == best
    assert crit["sweep"]["critical_lr_predicted"] == pytest.approx(1.25 * eta_star, rel=1e-12)
    assert crit["sweep"]["bruteforce_over_predicted"] == pytest.approx(best / (1.25 * eta_star))
    assert crit["sweep"]["min_spread_predicted"] == pytest.approx(predicted.min(), rel=1e-12)
    # Without the column the prediction is eta* of the table's step-0 norms.
    fallback = compare_run(table, SGD, sweep=sweep.drop(columns="critical_lr_predicted"))
    assert fallback["critical_lr"]["sweep"]["critical_lr_predicted"] == pytest.approx(
        eta_star, rel=1e-12)
    assert "sweep" not in compare_run(table, SGD)["critical_lr"]


def test_config_forms_and_report_files(tmp_path):
    table, _ = _model_table(T=12)
    a = compare_run(table, SGD)
    b = compare_run(table, {"config": SGD, "provenance": {}})
    assert a == b
    json_path, md_path = write_report(a, tmp_path)
    assert json_path == tmp_path / REPORT_JSON and md_path == tmp_path / REPORT_MD
    assert json.loads(json_path.read_text())["replay"] == a["replay"]
    text = md_path.read_text()
    assert "Replay" in text and "float32 level" in text
    assert to_markdown(a) == text


def test_bad_tables_raise_value_error():
    with pytest.raises(ValueError, match="columns"):
        compare_run(pd.DataFrame({"step": [0]}), SGD)
    table, _ = _model_table(T=3)
    with pytest.raises(ValueError, match="empty"):
        compare_run(table.iloc[:0], SGD)
