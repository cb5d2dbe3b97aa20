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
