"""Smoke test of the paper-figure scripts and of ``normdyn figures``.

Every ``paper_figures/figNN_*.py`` runs its ``main()`` with the ``micro`` profile (tiny
settings, seconds each) into a temporary directory; the PNG, PDF and CSV must exist and
the CSV must have exactly the columns the script documents.
"""

from __future__ import annotations

import json
import sys

import pandas as pd
import pytest

from normdyn.figures import runner as FR

SCRIPTS = FR.discover()
TORCH_FIGURES = {"fig01", "fig02", "fig03", "fig06", "fig07", "fig08", "fig09", "fig10",
                 "fig11"}


def test_twelve_scripts_are_discovered():
    assert list(SCRIPTS) == [f"fig{i:02d}" for i in range(1, 13)]


@pytest.mark.parametrize("fig", list(SCRIPTS))
def test_script_micro_profile_writes_png_pdf_csv(fig, tmp_path):
    if fig in TORCH_FIGURES:
        pytest.importorskip("torch")
    module = FR._import_script(SCRIPTS[fig])
    for name in ("FIGURE", "TITLE", "COLUMNS", "CONFIGS", "measure", "plot", "main",
                 "output_stem"):
        assert hasattr(module, name), f"{fig} lacks {name}"
    assert set(module.CONFIGS) == {"micro", "quick", "deep", "full"}
    assert module.FIGURE == fig
    result = module.main(profile="micro", out_dir=tmp_path)
    assert result.ok and result.figure == fig
    stem = module.output_stem("micro")
    assert stem.startswith(f"{fig}_") and stem.endswith("_micro")
    for ext in ("png", "pdf", "csv"):
        path = tmp_path / f"{stem}.{ext}"
        assert path.is_file() and path.stat().st_size > 0, path
    frame = pd.read_csv(tmp_path / f"{stem}.csv")
    assert list(frame.columns) == list(module.COLUMNS)
    assert len(frame) > 0
    meta = json.loads((tmp_path / f"{stem}.json").read_text())
    assert meta["profile"] == "micro" and meta["columns"] == list(module.COLUMNS)
    for suffix, columns in getattr(module, "SIDE_COLUMNS", {}).items():
        side = pd.read_csv(tmp_path / f"{stem}_{suffix}.csv")
        assert list(side.columns) == list(columns) and len(side) > 0
        assert (tmp_path / f"{stem}_{suffix}.json").is_file()
    # the measurement is cached under out/cache and reused
    cached = sorted((tmp_path / "cache").glob(f"{stem}-*.csv"))
    assert cached, "no cached measurement"
    again = module.measure("micro", tmp_path / "cache", False)
    assert list(again.columns) == list(pd.read_csv(cached[0]).columns)


def test_select_parses_names():
    assert list(FR.select("fig01,5")) == ["fig01", "fig05"]
    assert list(FR.select(["12"])) == ["fig12"]
    with pytest.raises(ValueError, match="unknown figure"):
        FR.select("fig99")
    with pytest.raises(ValueError, match="cannot read"):
        FR.select("banana")


def test_missing_paper_figures_dir_is_a_clear_error(monkeypatch, tmp_path):
    fake = tmp_path / "site-packages" / "normdyn" / "__init__.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("")
    monkeypatch.setattr(FR.normdyn, "__file__", str(fake))
    with pytest.raises(FileNotFoundError, match="paper_figures"):
        FR.figures_dir()


def test_broken_figure_is_recorded_and_others_still_run(monkeypatch, tmp_path):
    module = FR._import_script(SCRIPTS["fig05"])

    def broken(*args, **kwargs):
        raise ImportError("simulated missing dependency")

    monkeypatch.setattr(module, "measure", broken)
    entries = FR.run_figures("micro", tmp_path, only="fig05,fig12", progress=False,
                             echo=None)
    status = {e["figure"]: e["status"] for e in entries}
    assert status == {"fig05": "failed", "fig12": "ok"}
    failed = next(e for e in entries if e["figure"] == "fig05")
    assert "simulated missing dependency" in failed["error"]
    manifest = json.loads((tmp_path / FR.MANIFEST).read_text())
    assert manifest["figures"]["fig05"]["status"] == "failed"


def test_cli_figures_exit_code_and_report(monkeypatch, tmp_path, capsys):
    from normdyn.cli import main

    assert main(["figures", "--profile", "micro", "--only", "fig12", "--out", str(tmp_path),
                 "--no-progress", "--no-property-tests"]) == 0
    out = capsys.readouterr().out
    assert "fig12" in out and "lemma_3_5_flip_at_most_once" in out
    assert (tmp_path / "REPORT.md").is_file() and (tmp_path / "REPORT.json").is_file()
    report = json.loads((tmp_path / "REPORT.json").read_text())
    verdicts = {c["claim"]: c["verdict"] for c in report["claims"]}
    assert verdicts["lemma_3_4_flipping_conditions"] == "confirmed"

    module = sys.modules[f"paper_figures.{SCRIPTS['fig12']}"]
    monkeypatch.setattr(module, "plot", lambda *a, **k: (_ for _ in ()).throw(
        RuntimeError("plot broke")))
    assert main(["figures", "--profile", "micro", "--only", "fig12", "--out", str(tmp_path),
                 "--no-progress", "--no-report"]) == 1
    assert "plot broke" in capsys.readouterr().out
