"""``normdyn simulate``: acceptance example, outputs, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tolerances import rtol

from normdyn.cli import main
from normdyn.simulate import COLUMNS

F64 = np.float64


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["simulate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_acceptance_two_layers_json_matches_hand_iteration(capsys) -> None:
    code, out, err = _run(capsys, "discrete", "--elr", "21.7,0.011", "--lr", "1", "--steps",
                          "10", "--json")
    assert code == 0, err
    doc = json.loads(out)
    run = doc["runs"][0]
    assert doc["step"] == list(range(11)) and run["elr_step"] == list(range(11))
    e = [21.7, 0.011]
    for t in range(11):
        got = run["elr"][t]
        assert all(type(x) is float for x in got)
        rel = max(abs(g - w) / w for g, w in zip(got, e, strict=True))
        assert rel <= rtol(F64, "iterated", t)
        assert abs(run["spread"][t] / (max(e) / min(e)) - 1) <= rtol(F64, "iterated", t + 1)
        e = [x / (1 + x * x) for x in e]
    assert run["final_elr"] == run["elr"][10] == run["update_elr"][10]
    assert "final_update_elr" not in run  # plain SGD: it equals final_elr, not repeated
    assert run["total_flips"] == 0  # 21.7 * 0.011 < 1: no flip


def test_lr_sweep_summary_and_outputs(capsys, tmp_path: Path) -> None:
    out_csv = tmp_path / "sweep.csv"
    code, out, err = _run(capsys, "discrete", "--layers", "6", "--spread", "100", "--lr",
                          "0.01:10:4", "--steps", "20", "--schedule", "critical_warmup",
                          "--record", "summary", "--out", str(out_csv), "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert len(doc["runs"]) == 4 and doc["lr"] == pytest.approx([0.01, 0.1, 1.0, 10.0])
    first = doc["runs"][0]
    assert first["spread"][0] == pytest.approx(100.0, rel=1e-12)
    assert "elr" not in first and "elr_quantiles" not in first  # summaries only
    assert len(first["lr_t"]) == 21  # the critical warm-up changes the lr
    assert sum(first["flips"]["count"]) == first["total_flips"]
    assert "\n" not in out.rstrip("\n") and ": " not in out  # one compact document
    assert "wrote" in err
    code, out, _ = _run(capsys, "discrete", "--layers", "6", "--spread", "100", "--lr",
                          "0.01:10:4", "--steps", "20", "--record", "summary", "--json",
                          "--quantiles")
    q = json.loads(out)["runs"][1]["elr_quantiles"]
    assert len(q["median"]) == 21 and q["max"][0] / q["min"][0] == pytest.approx(100.0)
    frame = pd.read_csv(out_csv)
    assert len(frame) == 4 * 21 and "elr_median" in frame.columns


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_out_writes_tidy_frame(capsys, tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"run{suffix}"
    code, _, err = _run(capsys, "discrete", "--sigma2", "1,2,3", "--c", "0.5,1,8", "--steps",
                        "5", "--momentum", "0.5", "--weight-decay", "0.01", "--out", str(path))
    assert code == 0, err
    frame = pd.read_csv(path) if suffix == ".csv" else pd.read_parquet(path)
    assert list(frame.columns) == list(COLUMNS) and len(frame) == 3 * 6
    assert not list(tmp_path.glob(".*tmp"))  # atomic write left no temporary file


def test_continuous_and_drift_modes(capsys) -> None:
    code, out, err = _run(capsys, "continuous", "--elr", "21.7,0.011", "--steps", "4", "--json")
    assert code == 0, err
    e0 = 21.7
    want = e0 / np.sqrt(1 + 2 * e0**2 * 4)
    assert json.loads(out)["runs"][0]["elr"][4][0] == pytest.approx(want, rel=1e-14)
    code, out, err = _run(capsys, "continuous", "--elr", "2,0.5", "--steps", "6", "--schedule",
                          "linear_warmup", "--warmup-steps", "3", "--json")
    assert code == 0, err
    code, out, err = _run(capsys, "drift", "--layers", "3", "--spread", "10", "--steps", "5",
                          "--elements", "16", "--lr", "0.1:1:2", "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert [r["lr"] for r in doc["runs"]] == pytest.approx([0.1, 1.0])
    assert len(doc["runs"][0]["elr"]) == 5 and len(doc["runs"][0]["elr"][0]) == 3


def test_human_output_lists_runs(capsys) -> None:
    code, out, _ = _run(capsys, "discrete", "--elr", "3,0.1", "--lr", "0.1:1:30", "--steps", "3")
    assert code == 0
    assert out.splitlines()[0] == "30 runs; showing 10 (use --json or --out for all)"


BAD = [
    (["--elr", "1,2", "--lr", "0"], "lr must be positive, got 0.0"),
    (["--elr", "1,2", "--lr=-1:1:3"], "lr must be positive, got -1.0"),
    (["--elr", "1,2", "--lr", "x"], "lr must be a number or start:stop:num, got 'x'"),
    (["--elr", "1,2", "--steps", "-3"], "steps must be >= 0, got -3"),
    (["--elr", ""], "elr must contain at least one layer, got an empty list"),
    (["--elr", "1,0"], "elr must be positive, got 0.0"),
    (["--elr", "1,-2"], "elr must be positive, got -2.0"),
    (["--sigma2", "1,2,3", "--c", "1,2"], "c must have the same length as sigma2 (3), got 2"),
    (["--sigma2", "1,2"], "c must be given together with sigma2"),
    (["--elr", "1,2", "--momentum", "1"], "momentum must lie in [0.0, 1.0), got 1.0"),
    (["--elr", "1,2", "--momentum", "-0.1"], "momentum must lie in [0.0, 1.0), got -0.1"),
    (["--elr", "1,2", "--weight-decay", "-0.0001"], "weight_decay must be non-negative, got -0.0001"),
    (["--elr", "1,2", "--schedule", "foo"],
     "schedule: unknown name 'foo'; choose from constant, critical_warmup, exponential_warmup, "
     "linear_warmup, step_decay"),
    (["--elr", "1,2", "--schedule", "linear_warmup"], "schedule: 'linear_warmup' needs n_steps"),
    (["--layers", "3", "--spread", "0.5"], "spread must be >= 1 (a max/min ratio), got 0.5"),
    (["--elr", "1,2", "--out", "x.txt"], "out must end in .csv or .parquet, got 'x.txt'"),
]


@pytest.mark.parametrize(("argv", "message"), BAD)
def test_bad_input_exits_2_with_one_line(capsys, argv, message) -> None:
    code, out, err = _run(capsys, "discrete", *argv)
    assert code == 2 and out == ""
    assert err == f"normdyn simulate: error: {message}\n"


def test_mode_specific_errors(capsys) -> None:
    code, _, err = _run(capsys, "continuous", "--elr", "1,2", "--schedule", "critical_warmup")
    assert code == 2 and err == ("normdyn simulate: error: schedule: 'critical_warmup' needs "
                                 "the discrete model (it reads the state at each step)\n")
    code, _, err = _run(capsys, "drift", "--elr", "1,2", "--elements", "4,5,6")
    assert code == 2 and err == ("normdyn simulate: error: elements must have one value or 2 "
                                 "(one per layer), got 3\n")


def test_real_process_exit_code_and_no_traceback() -> None:
    proc = subprocess.run([sys.executable, "-m", "normdyn.cli", "simulate", "discrete", "--elr",
                           "1,-2", "--engine", "numpy"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2
    assert proc.stderr == "normdyn simulate: error: elr must be positive, got -2.0\n"
