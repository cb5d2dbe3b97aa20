"""Tests of normdyn.validate.runs: training loop, drift, resume, divergence, sweep."""

from __future__ import annotations

import copy
import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

import pandas as pd  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from normdyn._checks import NonFiniteError  # noqa: E402
from normdyn.validate import runs  # noqa: E402
from normdyn.validate.compare import compare_run  # noqa: E402
from normdyn.validate.runs import (  # noqa: E402
    CHECKPOINT_FILE,
    CONFIG_FILE,
    METRICS_FILE,
    RunConfig,
    drift_gradient,
    load_run,
    one_step_lr_sweep,
    run_training,
)

pytestmark = pytest.mark.torch

# A NoShort ResNet-8 of width 4 on 8x8 digits: one step takes a few milliseconds.
TINY = RunConfig(arch="resnet", depth=8, width=4, shortcuts=False, data="digits", steps=12,
                 batch_size=16, lr=0.1, device="cpu", sync_every=4, checkpoint_every=5)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny models gain nothing from threads, and a busy machine makes them very slow."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(**changes) -> RunConfig:
    return dataclasses.replace(TINY, **changes)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> tuple[pd.DataFrame, pd.DataFrame]:
    out = tmp_path_factory.mktemp("baseline")
    table = run_training(TINY, out, progress=False)
    return table, pd.read_csv(out / METRICS_FILE)


# --------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"arch": "vgg"}, "arch"),
        ({"depth": 21}, "depth"),
        ({"depth": 0}, "depth"),
        ({"lr": -1.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"steps": 0}, "steps"),
        ({"batch_size": 1}, "batch_size"),
        ({"schedule": "cosine"}, "schedule"),
        ({"optimizer": "lbfgs"}, "optimizer"),
        ({"momentum": 1.0}, "momentum"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"device": "tpu"}, "device"),
        ({"norm": "layer"}, "norm"),
        ({"data": "sequences"}, "data"),
        ({"width_multiplier": 0.0}, "width_multiplier"),
        ({"checkpoint_every": 0}, "checkpoint_every"),
        ({"optimizer": "adam", "momentum": 0.9}, "momentum"),
    ],
)
def test_config_rejects_bad_fields_by_name(changes, field):
    with pytest.raises(ValueError, match=field):
        tiny(**changes)


def test_resolved_fills_architecture_defaults():
    cfg = RunConfig(arch="mlp", depth=3, data="digits").resolved()
    assert cfg["norm"] == "batch" and cfg["width"] == 128
    assert RunConfig(arch="transformer", depth=2, data="sequences").resolved()["norm"] == "layer"
    assert json.loads(json.dumps(cfg)) == cfg


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_cuda_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="cuda"):
        run_training(tiny(device="cuda"), tmp_path / "run", progress=False)
    assert runs.resolve_device("auto").type == "cpu"


# --------------------------------------------------------------------------- outputs


def test_outputs_and_provenance(tmp_path, baseline):
    table, metrics = baseline
    out = tmp_path / "run"
    run_training(tiny(steps=3), out, progress=False)
    meta = json.loads((out / CONFIG_FILE).read_text())
    assert meta["provenance"]["normdyn_version"]
    assert meta["provenance"]["git_revision"]
    assert meta["torch_version"] == torch.__version__
    assert meta["device"] == "cpu" and meta["status"] == "completed"
    assert meta["config"] == tiny(steps=3).resolved()
    assert (out / CHECKPOINT_FILE).is_file()
    loaded, _ = load_run(out)
    assert sorted(loaded["step"].unique()) == [0, 1, 2]
    parquet = run_training(tiny(steps=3), tmp_path / "pq", progress=False,
                           table_format="parquet")
    pq_loaded, _ = load_run(tmp_path / "pq")
    assert (tmp_path / "pq" / "steps.parquet").is_file()
    numeric = ["step", "lr", "sigma2", "grad_norm", "elr", "update_elr", "cos_wg", "loss"]
    np.testing.assert_array_equal(loaded[numeric].to_numpy(), parquet[numeric].to_numpy())
    np.testing.assert_array_equal(pq_loaded[numeric].to_numpy(), parquet[numeric].to_numpy())
    for col in ("step", "layer", "lr", "sigma2", "grad_norm", "elr", "update_elr", "cos_wg"):
        assert col in table.columns
    assert table["layer"].nunique() == len(meta["tracked_layers"]) > 0
    assert list(metrics.columns) == ["step", "lr", "loss", "accuracy"]
    assert metrics["step"].tolist() == list(range(TINY.steps))


def test_replay_is_float32_level_for_plain_sgd(baseline):
    table, _ = baseline
    report = compare_run(table, TINY)
    replay = report["replay"]
    assert replay["applicable"] and replay["steps_replayed"] == TINY.steps - 1
    assert replay["max_rel_error"] <= replay["float32_threshold"], replay
    assert replay["float32_level"] is True


def test_different_config_in_existing_out_dir_is_refused(tmp_path):
    out = tmp_path / "run"
    run_training(tiny(steps=2), out, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ValueError, match="different config.*lr"):
        run_training(tiny(steps=2, lr=0.2), out, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_foreign_run_files_without_config_are_refused(tmp_path):
    (tmp_path / "steps.csv").write_text("x\n1\n")
    with pytest.raises(ValueError, match="config.json"):
        run_training(tiny(steps=2), tmp_path, progress=False)


def test_critical_warmup_uses_the_critical_lr_of_the_current_norms(tmp_path):
    table = run_training(tiny(steps=6, lr=100.0, schedule="critical_warmup"), tmp_path / "cw",
                         progress=False)
    for _, rows in table.groupby("step"):
        a = rows["grad_norm"].to_numpy() / np.sqrt(rows["sigma2"].to_numpy())
        eta_star = 1.0 / np.sqrt(a.max() * a.min())  # THEORY.md section 4, typed here
        assert rows["lr"].iloc[0] == pytest.approx(min(100.0, eta_star), rel=1e-5)
    assert table["lr"].max() < 100.0


# --------------------------------------------------------------------------- resume


def test_resume_after_kill_equals_uninterrupted_run(tmp_path, baseline):
    table, metrics = baseline
    out = tmp_path / "run"

    def kill_at_8(step: int) -> None:
        if step == 8:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_training(TINY, out, progress=False, callback=kill_at_8)
    partial, meta = load_run(out)
    assert meta["status"] == "interrupted"
    assert sorted(partial["step"].unique()) == list(range(8))  # kept, up to the kill
    assert torch.load(out / CHECKPOINT_FILE, weights_only=False)["step"] == 5

    resumed = run_training(TINY, out, progress=False)
    pd.testing.assert_frame_equal(resumed, table, check_exact=True)
    pd.testing.assert_frame_equal(pd.read_csv(out / METRICS_FILE), metrics, check_exact=True)
    on_disk, meta = load_run(out)
    assert meta["status"] == "completed" and meta["resumed_from"] == 5
    assert not on_disk.duplicated(["step", "layer"]).any()
    assert len(on_disk) == len(table)


def test_stop_after_then_resume_equals_uninterrupted_run(tmp_path, baseline):
    table, _ = baseline
    out = tmp_path / "run"
    first = run_training(TINY, out, progress=False, stop_after=7)
    assert first["step"].max() == 6
    assert json.loads((out / CONFIG_FILE).read_text())["status"] == "interrupted"
    pd.testing.assert_frame_equal(run_training(TINY, out, progress=False), table,
                                  check_exact=True)
    # a completed run in the same directory is not trained again
    pd.testing.assert_frame_equal(run_training(TINY, out, progress=False), table,
                                  check_exact=True)


# --------------------------------------------------------------------------- divergence


def test_non_finite_stops_the_run_and_keeps_earlier_rows(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(NonFiniteError, match="step"):
        run_training(tiny(lr=1e30), out, progress=False)
    table, meta = load_run(out)
    assert meta["status"] == "diverged" and "error" in meta
    first = table[table["step"] == 0]
    assert len(first) and np.isfinite(first[["sigma2", "grad_norm"]].to_numpy()).all()
    metrics = pd.read_csv(out / METRICS_FILE)
    assert metrics["step"].iloc[0] == 0 and np.isfinite(metrics["loss"].iloc[0])


# --------------------------------------------------------------------------- drift


def test_drift_gradient_keeps_the_norm_and_projects_when_asked():
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(64, 3, 3, 3)
    g = torch.randn(64, 3, 3, 3)
    g = g - (g * w).sum() / (w * w).sum() * w
    for projected in (False, True):
        r = drift_gradient(g, w, gen, projected=projected)
        assert r.shape == g.shape and r.dtype == g.dtype
        torch.testing.assert_close(r.double().norm(), g.double().norm(), rtol=1e-6, atol=0)
        cos = float((r.double() * w.double()).sum() / (r.double().norm() * w.double().norm()))
        if projected:
            assert abs(cos) < 1e-6
        else:
            assert 1e-6 < abs(cos) < 0.2  # a random radial part of size ~ 1/sqrt(d)
        assert float((r * g).sum() / (r.norm() * g.norm())) < 0.2  # not the gradient


@pytest.mark.parametrize("projected", [False, True])
def test_drift_replaces_tracked_gradients_with_same_norm(tmp_path, monkeypatch, projected):
    pairs = []
    real = runs.drift_gradient

    def spy(grad, weight, generator, *, projected):
        out = real(grad, weight, generator, projected=projected)
        pairs.append((float(grad.double().norm()), float(out.double().norm()),
                      float((out.double() * grad.double()).sum())))
        return out

    monkeypatch.setattr(runs, "drift_gradient", spy)
    cfg = tiny(steps=4, drift=True, drift_projected=projected)
    table = run_training(cfg, tmp_path / "drift", progress=False)
    layers = table["layer"].nunique()
    assert len(pairs) == cfg.steps * layers
    before, after, _ = np.array(pairs).T
    np.testing.assert_allclose(after, before, rtol=1e-6)
    # the monitor sees the drift vector; at step 0 the weights equal those of the
    # no-drift run, so its gradient norms are the true ones
    plain = run_training(tiny(steps=1), tmp_path / "plain", progress=False)
    np.testing.assert_allclose(table[table["step"] == 0]["grad_norm"].to_numpy(),
                               plain["grad_norm"].to_numpy(), rtol=1e-6)
    if projected:
        assert table["cos_wg"].abs().max() < 1e-5
    else:
        assert table["cos_wg"].abs().max() > 1e-4


# --------------------------------------------------------------------------- sweep


def test_one_step_lr_sweep_matches_theory_at_small_lr():
    torch.manual_seed(0)
    from normdyn.layers.detection import find_scale_invariant
    from normdyn.validate.models import plain_mlp

    model = plain_mlp(6, 16, 10, 3)
    x = torch.randn(32, 10)
    y = torch.arange(32) % 3
    layers = find_scale_invariant(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    lrs = np.geomspace(1e-6, 10, 15)
    sweep = one_step_lr_sweep(model, (x, y), F.cross_entropy, lrs, layers)
    assert list(sweep.columns[:3]) == ["lr", "spread_measured", "spread_predicted"]
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    params = dict(model.named_parameters())
    a0 = np.array([float(params[la.param_name].grad.norm() / params[la.param_name].detach().norm())
                   for la in layers])
    # Oracles typed here: eta* = 1/sqrt(a_max a_min) and S(lr) = max F(lr a)/min F(lr a),
    # F(x) = x/(1 + x^2), from the brute-force a0 = |p.grad|/|p| above.
    assert sweep.attrs["critical_lr_predicted"] == pytest.approx(
        1.0 / np.sqrt(a0.max() * a0.min()), rel=1e-5)
    xa = lrs[:, None] * a0[None, :]
    f = xa / (1.0 + xa * xa)
    np.testing.assert_allclose(sweep["spread_predicted"], f.max(axis=1) / f.min(axis=1),
                               rtol=1e-5)
    # The measured spread, from stepping a copy in plain torch: w <- w - lr g on every
    # parameter, gradients recomputed on the same batch, spread of lr |g|/|w|.
    grads0 = {n: p.grad.detach().clone() for n, p in params.items()}
    for i in (0, 5, 9):
        work = copy.deepcopy(model)
        with torch.no_grad():
            for n, p in work.named_parameters():
                p.sub_(float(lrs[i]) * grads0[n])
        work.zero_grad()
        F.cross_entropy(work(x), y).backward()
        wp = dict(work.named_parameters())
        e = np.array([float(lrs[i]) * float(wp[la.param_name].grad.double().norm())
                      / float(wp[la.param_name].detach().double().norm()) for la in layers])
        assert sweep["spread_measured"].iloc[i] == pytest.approx(e.max() / e.min(), rel=1e-5)
    # a tiny step barely changes c, so measurement and the model agree there
    assert sweep["spread_measured"].iloc[0] == pytest.approx(sweep["spread_predicted"].iloc[0],
                                                             rel=1e-3)


def test_sweep_critical_lr_in_a_run(tmp_path):
    out = tmp_path / "run"
    run_training(tiny(steps=2, sweep_critical_lr=True), out, progress=False)
    sweep = pd.read_csv(out / runs.SWEEP_FILE)
    assert len(sweep) == 41 and (sweep["lr"] > 0).all()
    table, _ = load_run(out)
    report = compare_run(table, tiny(steps=2), sweep=sweep)
    crit = report["critical_lr"]
    assert crit["sweep"]["critical_lr_predicted"] == pytest.approx(crit["critical_lr_step0"],
                                                                   rel=1e-5)


def test_divergence_stops_at_the_first_non_finite_loss_and_saves_no_nan_row(tmp_path):
    """Issue 12: stop at the step whose loss is NaN, not at the next sync or the end.

    Oracle: an uninterrupted, non-raising replay of the same config with torch's own loss
    tells the first non-finite step k; the run must keep exactly steps 0..k-1.
    """
    cfg = tiny(arch="mlp", depth=8, width=16, lr=1e12, steps=30, sync_every=50,
               checkpoint_every=100)
    # the oracle: the same seeded model, data and lr in a plain loop reading every loss
    oracle = runs._Run(cfg, tmp_path / "oracle", "csv")
    first_bad = None
    for step in range(cfg.steps):
        x, y = next(oracle.batches)
        oracle.optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(oracle.model(x), y)
        if not torch.isfinite(loss):
            first_bad = step
            break
        loss.backward()
        for group in oracle.optimizer.param_groups:
            group["lr"] = cfg.lr
        oracle.optimizer.step()
    assert first_bad is not None and first_bad < cfg.steps - 1

    out = tmp_path / "run"
    with pytest.raises(NonFiniteError, match=f"loss is not finite at step {first_bad};"):
        run_training(cfg, out, progress=False)
    table, meta = load_run(out)
    assert meta["status"] == "diverged" and meta["steps_completed"] == first_bad
    assert sorted(table["step"].unique()) == list(range(first_bad))
    metrics = pd.read_csv(out / METRICS_FILE)
    assert metrics["step"].tolist() == list(range(first_bad))
    assert np.isfinite(metrics["loss"]).all() and np.isfinite(table["loss"]).all()
    assert not list(out.glob(".*.tmp")) and not list(out.glob(".*.csv"))  # atomic writes
