"""Planned runs and launchers: the plan is what ``measure`` trains, and every launcher
writes the same tables as the in-process run, byte for byte (micro profile)."""

from __future__ import annotations

import filecmp
import json

import pytest

from normdyn.figures import launch as L
from normdyn.figures import runner as FR

pytest.importorskip("torch")

SCRIPTS = FR.discover()
PLANNED = ["fig01", "fig02", "fig03", "fig06", "fig07", "fig08", "fig09", "fig10", "fig11"]


def test_planned_scripts():
    have = [f for f, m in SCRIPTS.items() if hasattr(FR._import_script(m), "plan")]
    assert have == PLANNED


@pytest.mark.parametrize("fig", PLANNED)
def test_plan_is_exactly_what_measure_trains(fig, monkeypatch, tmp_path):
    """Oracle: record every train_run call of measure(); it must equal plan()."""
    from paper_figures import _common as C

    module = FR._import_script(SCRIPTS[fig])
    calls = []
    real = C.train_run

    def recording(cache_dir, refresh=False, **config):
        calls.append(config)
        return real(cache_dir, refresh, **config)

    monkeypatch.setattr(C, "train_run", recording)
    module.measure("micro", tmp_path / "cache", False)
    assert calls == module.plan("micro")
    for profile in ("quick", "deep", "full"):
        deep_needs_size = profile == "deep" and "image_size" in json.dumps(
            module.CONFIGS["deep"]) and not C.has_run_field("image_size")
        if deep_needs_size:  # the deep profile's Fashion-MNIST sizes need RunConfig.image_size
            with pytest.raises(ValueError, match=r"^image_size: this RunConfig has no field"):
                module.plan(profile)
            continue
        assert module.plan(profile), f"{fig}: empty plan for {profile}"


def _csvs(out):
    return {p.name: p for p in out.glob("fig*_micro.csv")}


@pytest.fixture(scope="module")
def inprocess_micro(tmp_path_factory):
    """The whole micro profile, in process: the reference tables."""
    from normdyn.cli import main

    out = tmp_path_factory.mktemp("inprocess")
    assert main(["figures", "--profile", "micro", "--out", str(out), "--no-progress",
                 "--no-report"]) == 0
    return out


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["local", "submitit"])
def test_launcher_tables_equal_the_in_process_run(launcher, inprocess_micro, tmp_path):
    """``normdyn figures --profile micro --launcher L`` writes the same CSVs, byte for byte."""
    from normdyn.cli import main

    if launcher == "submitit":
        pytest.importorskip("submitit")
    out = tmp_path / launcher
    assert main(["figures", "--profile", "micro", "--out", str(out), "--no-progress",
                 "--no-report", "--launcher", launcher, "--jobs", "2"]) == 0
    a, b = _csvs(inprocess_micro), _csvs(out)
    assert sorted(a) == sorted(b) and len(a) == 12
    for name in a:
        assert filecmp.cmp(a[name], b[name], shallow=False), name
    statuses = {json.loads(p.read_text())["status"]
                for p in (out / "cache" / "runs").glob("*/config.json")}
    assert statuses == {"completed"}
    if launcher == "submitit":
        assert list((out / "cache" / "submitit").iterdir()), "no submitit job folders"


def test_launch_skips_cached_runs_and_rejects_bad_input(tmp_path):
    runs = L.collect_plan({"fig11": SCRIPTS["fig11"]}, "micro", FR._import_script)
    assert L.launch(runs, tmp_path, FR.figures_dir().parent, launcher="inprocess") == {}
    done = L.launch(runs, tmp_path, FR.figures_dir().parent, launcher="local", jobs=1,
                    progress=False)
    assert set(done) == {r.key for r in runs} and set(done.values()) == {"completed"}
    assert L.launch(runs, tmp_path, FR.figures_dir().parent, launcher="local", jobs=1) == {}
    with pytest.raises(ValueError, match=r"^launcher must be one of 'inprocess', 'local', "
                                         r"'submitit', got 'slurm'$"):
        L.launch(runs, tmp_path, FR.figures_dir().parent, launcher="slurm")
    with pytest.raises(ValueError, match=r"^jobs must be an integer >= 1, got 0$"):
        L.launch(runs, tmp_path, FR.figures_dir().parent, jobs=0)


def test_shared_runs_are_merged_and_keys_match_the_cache_layout():
    from paper_figures import _common as C

    runs = L.collect_plan({f: SCRIPTS[f] for f in ("fig02", "fig03")}, "micro",
                          FR._import_script)
    # fig02 (drift) and fig03 (real) share nothing; each run appears once
    assert len({r.key for r in runs}) == len(runs)
    for r in runs:
        assert C.run_dir("/c", r.config).name == r.key


def test_estimate_seconds_scales_with_steps_and_depth():
    base = {"arch": "resnet", "depth": 56, "width": 16, "data": "cifar10", "batch_size": 128,
            "steps": 1000}
    one = L.estimate_seconds(base)
    assert L.estimate_seconds({**base, "steps": 2000}) == pytest.approx(2 * one)
    assert L.estimate_seconds({**base, "depth": 110}) > one
    with pytest.raises(ValueError, match=r"^device must be 'gpu' or 'cpu', got 'tpu'$"):
        L.estimate_seconds(base, "tpu")


def test_cli_dry_run_full_profile_on_cpu(tmp_path, capsys):
    from normdyn.cli import main

    assert main(["figures", "--profile", "full", "--dry-run", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "profile full:" in out and "GPU minutes" in out
    assert "measured in process only" in out
    assert not (tmp_path / "cache").exists()  # nothing was trained
