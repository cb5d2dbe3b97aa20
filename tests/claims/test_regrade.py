"""Every committed verdict and estimate comes back from the committed tables.

``normdyn report`` on a copy of a committed gallery (``paper_figures/quick/``, and
``paper_figures/deep/`` where its tables are committed) must give back the committed
REPORT.json: the verdict of every claim and every real (measured) estimate, timestamps and
revision aside.  The property tests only add model evidence, never a network verdict, so
they are left out here (``property_tests=False``) and the comparison covers the network
claims' verdicts and the real items of every claim.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "paper_figures"


def _committed(gallery: str) -> tuple[Path, dict]:
    src = ROOT / gallery
    report = src / "REPORT.json"
    if not report.exists() or not any(src.glob("fig*.csv")):
        pytest.skip(f"paper_figures/{gallery} holds no committed tables yet")
    return src, json.loads(report.read_text())


def _real(claim: dict) -> list:
    return [{k: v for k, v in item.items() if k != "command"} for item in claim.get("real", [])]


@pytest.mark.slow
@pytest.mark.parametrize("gallery", [
    "quick",
    pytest.param("deep", marks=pytest.mark.xfail(
        strict=True, reason="the deep tables of fig03/fig08/fig10 are not committed and the "
        "deep REPORT.json predates the grading of issue 16: the deep profile must be rerun")),
])
def test_report_regrades_from_the_committed_tables(gallery: str, tmp_path: Path) -> None:
    from normdyn.report import build_report

    src, committed = _committed(gallery)
    copy = tmp_path / gallery
    shutil.copytree(src, copy, ignore=shutil.ignore_patterns("cache", "*.png", "*.pdf"))
    rows = build_report(copy, profile=committed["profile"], property_tests=False)
    got = {r["claim"]: r for r in (row.as_dict() for row in rows)}
    want = {c["claim"]: c for c in committed["claims"]}
    assert set(got) == set(want)
    untested = [c for c, r in got.items()
                if r["subject"] == "networks" and r["verdict"] == "not tested"
                and "no measurement" in r["evidence"]]
    assert not untested, f"network claims not tested for want of a committed table: {untested}"
    for claim, w in want.items():
        if w["subject"] == "networks":
            assert got[claim]["verdict"] == w["verdict"], claim
        assert _real(got[claim]) == _real(w), claim
