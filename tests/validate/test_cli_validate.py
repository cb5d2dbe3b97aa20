"""Tests of ``normdyn validate`` (argument handling, outputs, exit codes)."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sklearn")

from normdyn.cli import main  # noqa: E402

pytestmark = pytest.mark.torch

TINY_ARGS = ["validate", "--arch", "resnet", "--depth", "8", "--width", "4", "--no-shortcuts",
             "--data", "digits", "--steps", "6", "--batch-size", "16", "--device", "cpu",
             "--no-progress"]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny models gain nothing from threads, and a busy machine makes them very slow."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _one_line_error(capsys, argv: list[str], *needles: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("normdyn validate: error:") and "\n" not in err, err
    for needle in needles:
        assert needle in err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize(
    ("change", "needles"),
    [
        (["--depth", "21"], ("depth", "21")),
        (["--lr", "-1"], ("lr", "-1")),
        (["--arch", "vgg"], ("arch", "vgg")),
        (["--optimizer", "lbfgs"], ("optimizer",)),
        (["--momentum", "1.5"], ("momentum",)),
        (["--norm", "layer"], ("norm",)),
        (["--table-format", "xlsx"], ("table_format",)),
    ],
)
def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys, change, needles):
    _one_line_error(capsys, [*TINY_ARGS, "--out", str(tmp_path / "run"), *change], *needles)
    assert not (tmp_path / "run").exists()


def test_missing_out_exits_2_with_one_line(capsys):
    _one_line_error(capsys, TINY_ARGS, "--out")


def test_cuda_requested_without_cuda_exits_2(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    _one_line_error(capsys, [*TINY_ARGS, "--device", "cuda", "--out", str(tmp_path / "run")],
                    "cuda")


def test_validate_writes_table_config_report_and_summary(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TINY_ARGS, "--out", str(out), "--sweep-critical-lr"]) == 0
    stdout = capsys.readouterr().out
    assert "replay" in stdout and "float32 level: yes" in stdout
    for name in ("steps.csv", "metrics.csv", "config.json", "checkpoint.pt", "lr_sweep.csv",
                 "report.json", "report.md"):
        assert (out / name).is_file(), name
    meta = json.loads((out / "config.json").read_text())
    assert meta["provenance"]["normdyn_version"] and meta["provenance"]["git_revision"]
    assert meta["config"]["shortcuts"] is False and meta["config"]["depth"] == 8
    report = json.loads((out / "report.json").read_text())
    assert report["replay"]["float32_level"] is True
    assert "critical_lr_bruteforce" in report["critical_lr"]["sweep"]
    # a different config in the same directory is refused, one line, exit 2
    _one_line_error(capsys, [*TINY_ARGS, "--out", str(out), "--lr", "0.3"],
                    "different config")
    # the same config again resumes the completed run and succeeds
    assert main([*TINY_ARGS, "--out", str(out), "--sweep-critical-lr"]) == 0


def test_divergence_exits_1_and_keeps_what_was_recorded(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TINY_ARGS, "--out", str(out), "--lr", "1e30"]) == 1
    err = capsys.readouterr().err
    assert "non-finite" in err or "not finite" in err
    assert (out / "steps.csv").is_file()
    assert json.loads((out / "config.json").read_text())["status"] == "diverged"


# --------------------------------------------------------------------------- issue 12


def test_issue_command_stops_at_the_first_non_finite_loss(tmp_path, capsys):
    """The issue's command: exit 1 with one stderr line naming the step; no NaN row saved."""
    import numpy as np
    import pandas as pd

    out = tmp_path / "x"
    code = main(["validate", "--arch", "mlp", "--depth", "8", "--data", "digits", "--steps",
                 "40", "--lr", "1e12", "--device", "cpu", "--out", str(out), "--no-progress"])
    err = capsys.readouterr().err.strip()
    assert code == 1
    lines = err.splitlines()
    assert len(lines) == 1 and "loss is not finite at step " in lines[0], err
    step = int(lines[0].split("loss is not finite at step ")[1].split(";")[0])
    assert 0 < step < 40
    metrics = pd.read_csv(out / "metrics.csv")
    table = pd.read_csv(out / "steps.csv")
    assert metrics["step"].tolist() == list(range(step))
    assert np.isfinite(metrics["loss"]).all() and np.isfinite(table["loss"]).all()
    assert table["step"].max() == step - 1


def _validate_args(out, steps: int) -> list[str]:
    return [*TINY_ARGS[:TINY_ARGS.index("--steps")], "--steps", str(steps),
            *TINY_ARGS[TINY_ARGS.index("--steps") + 2:], "--threads", "1",
            "--checkpoint-every", "20", "--sync-every", "4", "--out", str(out)]


def _tables(out) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in ("steps.csv", "metrics.csv")}


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_equals_uninterrupted_run_byte_for_byte(tmp_path):
    """kill -9 a `normdyn validate` process once a checkpoint exists; re-running resumes."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    steps = 400
    killed = tmp_path / "killed"
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.Popen([sys.executable, "-m", "normdyn.cli",
                             *_validate_args(killed, steps)], cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not (killed / "checkpoint.pt").is_file():
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.01)
        assert proc.poll() is None, "the run finished before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    meta = json.loads((killed / "config.json").read_text())
    assert meta["status"] == "running"  # really killed mid-run, nothing written after
    assert main(_validate_args(killed, steps)) == 0  # resumes from the checkpoint
    meta = json.loads((killed / "config.json").read_text())
    assert meta["status"] == "completed" and meta["resumed_from"] >= 20

    fresh = tmp_path / "fresh"
    assert main(_validate_args(fresh, steps)) == 0
    assert _tables(killed) == _tables(fresh)


def test_same_seed_same_bytes_and_another_seed_differs(tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    for out in (a, b):
        assert main(_validate_args(out, 12)) == 0
    assert main([*_validate_args(c, 12), "--seed", "1"]) == 0
    assert _tables(a) == _tables(b)
    assert _tables(a)["steps.csv"] != _tables(c)["steps.csv"]


def test_every_run_config_field_is_a_validate_flag():
    import argparse
    import dataclasses

    from normdyn.commands import validate as V
    from normdyn.validate.runs import RunConfig

    parser = argparse.ArgumentParser()
    V.add_parser(parser.add_subparsers())
    args = parser.parse_args(["validate", "--constrained-elr", "0.02", "--other-lr", "0.1",
                              "--data", "fashion-mnist", "--image-size", "16",
                              "--decay", "cosine", "--bn-recalibration-batches", "7"])
    missing = [f.name for f in dataclasses.fields(RunConfig) if not hasattr(args, f.name)]
    assert not missing, f"RunConfig fields without a normdyn validate flag: {missing}"
    cfg = V._config(args)
    assert (cfg.constrained_elr, cfg.other_lr, cfg.data, cfg.image_size, cfg.decay,
            cfg.bn_recalibration_batches) == (0.02, 0.1, "fashion-mnist", 16, "cosine", 7)
