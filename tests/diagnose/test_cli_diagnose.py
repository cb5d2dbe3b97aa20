"""``normdyn diagnose`` and ``normdyn plot`` on the command line: output files, exact errors."""

from __future__ import annotations

import json
import sys
import types

import pandas as pd
import pytest
import torch

from normdyn.cli import main

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _error(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_diagnose_prints_and_writes_four_files(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["diagnose", "normdyn:resnet8-noshort", "--input-shape", "3x8x8",
                 "--batch-size", "8", "--lrs", "0.01:10:4", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for key in ("eta*_pred", "eta*_measured", "advice", "random batch: 8 inputs of shape 3x8x8",
                "worst 10 layers"):
        assert key in text
    assert sorted(p.name for p in out.iterdir()) == ["diagnose.png", "layers.csv",
                                                     "lr_curve.csv", "summary.json"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eta_pred"] > 0 and "random batch" in summary["notes"][0]
    assert len(pd.read_csv(out / "lr_curve.csv")) == 4
    assert len(pd.read_csv(out / "layers.csv")) == 8


def test_diagnose_json_with_optimizer_and_batch_file(tmp_path, capsys):
    g = torch.Generator().manual_seed(0)
    path = tmp_path / "b.pt"
    torch.save({"inputs": torch.randn(6, 3, 8, 8, generator=g),
                "targets": torch.randint(0, 10, (6,), generator=g)}, path)
    assert main(["diagnose", "normdyn:resnet8", "--batch", str(path), "--optimizer", "sgd",
                 "--lr", "0.05", "--momentum", "0.9", "--lrs", "0.01:1:3", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["summary"]["lr"] == 0.05
    assert data["summary"]["optimizer"].startswith("SGD(lr=0.05, momentum=0.9")
    assert data["notes"] == [f"batch from {path}"]


def test_factory_spec_without_invariant_layer(capsys):
    err = _error(capsys, ["diagnose", "tests.diagnose._foreign:no_norm_net", "--input-shape",
                          "12", "--lrs", "0.1:1:2"])
    assert err == ("normdyn diagnose: error: model: no trainable scale-invariant layer to "
                   "diagnose; found 2 conv/linear weight(s): 2 not invariant")


@pytest.mark.parametrize(("argv", "message"), [
    (["normdyn:resnet7"], "model: normdyn:resnet7: depth must be 6n+2 with n >= 1, got 7"),
    (["normdyn:vgg"], "model: unknown normdyn architecture 'vgg'; use resnetN, "
                          "resnetN-noshort (N = 6n+2, e.g. resnet56-noshort), mlp, mlpN or "
                          "transformer"),
    (["normdyn:resnet8", "--input-shape", "3x0x8"],
     "--input-shape: expected positive sizes like 3x32x32, got '3x0x8'"),
    (["normdyn:resnet8", "--input-shape", "3xax8"],
     "--input-shape: expected positive sizes like 3x32x32, got '3xax8'"),
    (["resnet8"], "model: expected torchvision:NAME, timm:NAME, hf:PATH, normdyn:ARCH or "
                  "pkg.module:factory, got 'resnet8'"),
    (["no_such_pkg_xyz:make"], "model: cannot import 'no_such_pkg_xyz' (No module named "
                               "'no_such_pkg_xyz')"),
    (["hf:/nonexistent/config.json"], "model: hf:/nonexistent/config.json is not a local "
                                      "config.json file or directory (nothing is downloaded)"),
    (["normdyn:resnet8", "--lrs", "1:0.1:5"], "--lrs: need 0 < START < STOP and NUM >= 2, "
                                              "got '1:0.1:5'"),
    (["normdyn:resnet8", "--lr", "0.1"], "--lr, --momentum and --weight-decay need "
                                         "--optimizer sgd|adam|adamw"),
])
def test_bad_input_is_one_line_exit_2(capsys, argv, message):
    assert _error(capsys, ["diagnose", *argv]) == f"normdyn diagnose: error: {message}"


@pytest.mark.parametrize(("spec", "package", "extra"), [
    ("torchvision:resnet18", "torchvision", "vision"),
    ("timm:vit_tiny_patch16_224", "timm", "vision"),
])
def test_missing_optional_package_names_the_extra(capsys, monkeypatch, spec, package, extra):
    monkeypatch.setitem(sys.modules, package, None)  # import raises ModuleNotFoundError
    err = _error(capsys, ["diagnose", spec])
    assert err.startswith(f"normdyn diagnose: error: model: {package} ")
    assert err.endswith(f"; pip install 'normdyn[{extra}]'")


def test_torchvision_spec_through_a_stand_in(capsys, monkeypatch):
    from tests.diagnose._foreign import TorchvisionStyleNet

    fake = types.ModuleType("torchvision")
    fake.models = types.SimpleNamespace(
        get_model=lambda name, weights=None, **kw: TorchvisionStyleNet(**kw))
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    assert main(["diagnose", "torchvision:anything", "--input-shape", "3x8x8", "--classes", "4",
                 "--batch-size", "4", "--lrs", "0.1:1:2"]) == 0
    assert "random labels of 4 classes" in capsys.readouterr().out


def test_plot_validate_run_and_monitor_csv(tmp_path, capsys):
    from normdyn.validate.runs import RunConfig, run_training

    run_dir = tmp_path / "run"
    run_training(RunConfig(arch="resnet", depth=8, width=4, data="synthetic", steps=6,
                           batch_size=8, seed=0), out_dir=run_dir, progress=False)
    assert main(["plot", str(run_dir)]) == 0
    assert (run_dir / "elr_heatmap.png").stat().st_size > 1000
    csv = tmp_path / "monitor.csv"
    pd.read_csv(run_dir / "steps.csv").to_csv(csv, index=False)
    assert main(["plot", str(csv), "--layers", "stage1", "--every", "2",
                 "--out", str(tmp_path / "h.pdf")]) == 0
    assert (tmp_path / "h.pdf").stat().st_size > 1000
    capsys.readouterr()
    err = _error(capsys, ["plot", str(csv), "--layers", "nomatch"])
    assert err == "normdyn plot: error: layers: 'nomatch' matches none of the run's layers"
    err = _error(capsys, ["plot", str(tmp_path / "none")])
    assert err.startswith("normdyn plot: error: no steps.csv") or "no such run" in err
