"""Discover and run the paper-figure scripts (``paper_figures/figNN_*.py``).

``paper_figures/`` is a top-level directory of the source checkout, beside the
``normdyn`` package: :func:`figures_dir` finds it relative to the package and raises a
clear :class:`FileNotFoundError` when it is absent (e.g. an installed wheel).

Each script runs in this process through its ``main(profile, out_dir, refresh)``.
With ``launcher="local"`` or ``"submitit"`` the scripts' planned training runs
(``plan(profile)``, see :mod:`normdyn.figures.launch`) are trained first, ``jobs`` at a time,
into the shared run cache ``out_dir/cache``; the scripts then read them from there, so
their tables are byte-identical to an in-process run.  :func:`plan_figures` lists the
planned runs without running anything (``normdyn figures --dry-run``).  A
script that cannot be imported or that raises is recorded as *failed* with the error,
and the others still run.  :func:`run_figures` writes the manifest
``out_dir/figures.json`` (one entry per figure: status, seconds, files, CSV, error),
which :mod:`normdyn.report` reads.
"""

from __future__ import annotations

import importlib
import re
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import normdyn
from normdyn._io import atomic_write_json, provenance

__all__ = [
    "PROFILES",
    "MANIFEST",
    "figures_dir",
    "default_out_dir",
    "discover",
    "select",
    "run_one",
    "run_figures",
    "read_manifest",
    "plan_figures",
]

PROFILES = ("micro", "quick", "deep", "full")
MANIFEST = "figures.json"
_SCRIPT = re.compile(r"^(fig\d\d)_[A-Za-z0-9_]+\.py$")


def figures_dir() -> Path:
    """The ``paper_figures`` directory beside the ``normdyn`` package."""
    path = Path(normdyn.__file__).resolve().parent.parent / "paper_figures"
    if not (path / "__init__.py").is_file():
        raise FileNotFoundError(
            f"paper_figures/ not found at {path}: the figure scripts live in the source "
            "checkout beside the normdyn package (install it with `pip install -e .` from "
            "the repository and run `normdyn figures` there)"
        )
    return path


def default_out_dir() -> Path:
    """``paper_figures/out`` of the checkout (the scripts' default output directory)."""
    return Path(normdyn.__file__).resolve().parent.parent / "paper_figures" / "out"


def discover() -> dict[str, str]:
    """``{figure id: module name}`` of every ``figNN_<slug>.py``, sorted by id."""
    found: dict[str, str] = {}
    for path in sorted(figures_dir().glob("fig*.py")):
        match = _SCRIPT.match(path.name)
        if match is None:
            continue
        fig = match.group(1)
        if fig in found:
            raise ValueError(f"two scripts for {fig}: {found[fig]}.py and {path.name}")
        found[fig] = path.stem
    return found


def _normalize_id(name: str) -> str:
    name = name.strip().lower()
    match = re.fullmatch(r"(?:fig)?0*(\d{1,2})", name) or re.fullmatch(r"(fig\d\d)_.*", name)
    if match is None:
        raise ValueError(f"only: cannot read figure name {name!r} (use e.g. fig05 or 5)")
    value = match.group(1)
    return value if value.startswith("fig") else f"fig{int(value):02d}"


def select(only: str | Sequence[str] | None) -> dict[str, str]:
    """The scripts named by ``only`` (``"fig01,fig05"``, ``["1", "5"]``; ``None``: all)."""
    scripts = discover()
    if not only:
        return scripts
    names = only.split(",") if isinstance(only, str) else list(only)
    wanted = [_normalize_id(n) for n in names if n.strip()]
    unknown = [w for w in wanted if w not in scripts]
    if unknown:
        raise ValueError(f"only: unknown figure(s) {unknown}; available: {sorted(scripts)}")
    return {fig: scripts[fig] for fig in scripts if fig in wanted}


def _import_script(module_name: str) -> Any:
    root = str(figures_dir().parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module(f"paper_figures.{module_name}")


def run_one(fig: str, module_name: str, profile: str, out_dir: Path,
            refresh: bool = False) -> dict[str, Any]:
    """Run one script; never raises for the script's own errors (they are recorded)."""
    start = time.perf_counter()
    try:
        module = _import_script(module_name)
        result = module.main(profile=profile, out_dir=out_dir, refresh=refresh)
        entry = result.as_dict()
        entry["seconds"] = round(time.perf_counter() - start, 3)
        entry["module"] = module_name
        return entry
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken figure must not stop the others
        return {
            "figure": fig, "module": module_name, "title": "", "profile": profile,
            "status": "failed", "seconds": round(time.perf_counter() - start, 3),
            "files": [], "csv": None, "stem": "", "rows": 0, "config": {},
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(limit=8),
        }


def read_manifest(out_dir: str | Path) -> dict[str, Any] | None:
    """The manifest written by :func:`run_figures` in ``out_dir``, or ``None``."""
    import json

    path = Path(out_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


def _check_profile(profile: str) -> None:
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(map(repr, PROFILES))}, "
                         f"got {profile!r}")


def plan_figures(profile: str = "quick", out_dir: str | Path | None = None, *,
                 only: str | Sequence[str] | None = None):
    """``(runs frame, in-process figures)``: the planned runs of the selected scripts.

    The frame is :func:`normdyn.figures.launch.plan_frame` (one row per distinct run, with its
    step count, whether it is already in the cache, and estimated GPU/CPU seconds);
    the list names the figures that measure only in process (simulations, one-step
    sweeps).  Nothing is trained.
    """
    from normdyn.figures.launch import collect_plan, plan_frame

    _check_profile(profile)
    out = Path(out_dir) if out_dir is not None else default_out_dir()
    scripts = select(only)
    runs = collect_plan(scripts, profile, _import_script)
    planned = {f for r in runs for f in r.figures}
    return plan_frame(runs, out / "cache"), [f for f in scripts if f not in planned]


def run_figures(
    profile: str = "quick",
    out_dir: str | Path | None = None,
    *,
    only: str | Sequence[str] | None = None,
    refresh: bool = False,
    progress: bool = True,
    echo: Callable[[str], None] | None = print,
    launcher: str = "inprocess",
    jobs: int = 1,
) -> list[dict[str, Any]]:
    """Run the selected figure scripts; return one manifest entry per figure.

    Progress is shown with tqdm; ``echo`` gets one line per figure with its runtime
    (and the error of a failed one).  The manifest ``out_dir/figures.json`` keeps the
    entries of figures not selected this time from an earlier run of the same profile.
    ``launcher``/``jobs``: train the planned runs first (see :mod:`normdyn.figures.launch`).
    """
    from normdyn.figures.launch import LAUNCHERS, collect_plan, launch

    _check_profile(profile)
    if launcher not in LAUNCHERS:
        raise ValueError(f"launcher must be one of {', '.join(map(repr, LAUNCHERS))}, "
                         f"got {launcher!r}")
    out = Path(out_dir) if out_dir is not None else default_out_dir()
    scripts = select(only)
    out.mkdir(parents=True, exist_ok=True)
    if launcher != "inprocess":
        if refresh:
            import shutil

            shutil.rmtree(out / "cache", ignore_errors=True)
            refresh = False  # the runs below are the fresh measurements
        runs = collect_plan(scripts, profile, _import_script)
        launch(runs, out / "cache", figures_dir().parent, launcher=launcher, jobs=jobs,
               progress=progress)

    from tqdm.auto import tqdm

    entries: list[dict[str, Any]] = []
    bar = tqdm(scripts.items(), total=len(scripts), disable=not progress, unit="fig",
               desc=f"normdyn figures ({profile})", dynamic_ncols=True)
    for fig, module_name in bar:
        bar.set_postfix_str(fig)
        entry = run_one(fig, module_name, profile, out, refresh)
        entries.append(entry)
        if echo is not None:
            line = f"{fig:6s} {entry['status']:6s} {entry['seconds']:7.1f}s  {module_name}"
            if entry["status"] != "ok":
                line += f"\n       error: {entry['error']}"
            (bar.write if progress else echo)(line)
    bar.close()
    _write_manifest(out, profile, entries)
    return entries


def _write_manifest(out: Path, profile: str, entries: list[dict[str, Any]]) -> Path:
    previous = read_manifest(out)
    figures: dict[str, Any] = {}
    if previous is not None and previous.get("profile") == profile:
        figures.update(previous.get("figures", {}))
    for entry in entries:
        figures[entry["figure"]] = entry
    return atomic_write_json(out / MANIFEST, {
        "profile": profile,
        "figures": dict(sorted(figures.items())),
        "total_seconds": round(sum(e["seconds"] for e in entries), 3),
        "provenance": provenance(),
    })
