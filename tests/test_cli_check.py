"""``normdyn check``: JSON output, LaTeX documents, bad --only names, the console script."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from normdyn.cli import main

SCRIPT = Path(sys.executable).with_name("normdyn")


def test_json_output_parses_and_all_claims_pass(capsys):
    assert main(["check", "--json"]) == 0
    claims = json.loads(capsys.readouterr().out)
    assert isinstance(claims, list) and claims
    for item in claims:
        assert {"name", "statement", "passed", "latex"} <= set(item)
        assert item["passed"] is True, item["name"]
        assert isinstance(item["latex"], str) and item["latex"]
    assert len({item["name"] for item in claims}) == len(claims)


def test_only_runs_the_named_claims(capsys):
    assert main(["check", "--json", "--only", "elr_map, critical_lr"]) == 0
    claims = json.loads(capsys.readouterr().out)
    assert sorted(c["name"] for c in claims) == ["critical_lr", "elr_map"]


def test_plain_output_one_line_per_claim(capsys):
    assert main(["check", "--only", "elr_map,ratio_map"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[:2] for line in lines[:2]] == [["PASS", "elr_map"], ["PASS", "ratio_map"]]
    assert lines[-1] == "2/2 claims passed"


def test_latex_writes_documents(tmp_path, capsys):
    out = tmp_path / "docs"
    assert main(["check", "--only", "elr_map,critical_lr", "--latex", str(out)]) == 0
    md, tex = out / "derivations.md", out / "derivations.tex"
    assert md.is_file() and tex.is_file()
    assert "elr_map" in md.read_text() and "critical_lr" in md.read_text()
    assert tex.read_text().strip()
    assert f"wrote {md}" in capsys.readouterr().err


def test_unknown_only_name_exits_2_with_one_line(capsys):
    code = main(["check", "--only", "elr_map,no_such_claim"])
    assert code == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("normdyn check: error: names: unknown claim(s) ['no_such_claim']")
    assert "Traceback" not in captured.err + captured.out


@pytest.mark.skipif(not SCRIPT.exists(), reason="console script not installed in this venv")
def test_console_script_exits_zero():
    proc = subprocess.run([str(SCRIPT), "check"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().splitlines()[-1].endswith("claims passed")
    assert "FAIL" not in proc.stdout
