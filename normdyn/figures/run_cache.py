"""The run cache of the paper figures: one folder per training run, keyed by its config.

``run_key(config)`` is ``<arch>-<hash of the resolved RunConfig>``; ``run_dir`` is
``cache_dir/runs/<run_key>``; ``run_complete`` says whether the run there finished
(``completed`` or ``diverged``); ``train_run`` trains a run into it unless it is complete
and returns its tables.  The figure scripts (``paper_figures/``, in the checkout) and the
launchers (:mod:`normdyn.figures.launch`) both use these, so the package never imports
the scripts.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["run_key", "run_dir", "run_complete", "train_run"]


def run_key(config: dict[str, Any]) -> str:
    """``<arch>-<hash of the resolved RunConfig>``: the run's folder in the run cache."""
    from normdyn._io import config_hash
    from normdyn.validate.runs import RunConfig

    cfg = RunConfig(**config)
    return f"{cfg.arch}-{config_hash(cfg.resolved())}"


def run_complete(run_dir: str | Path) -> bool:
    """Whether the run in ``run_dir`` finished (``completed`` or ``diverged``)."""
    meta = Path(run_dir) / "config.json"
    if not meta.is_file():
        return False
    try:
        return json.loads(meta.read_text(encoding="utf-8")).get("status") in ("completed",
                                                                            "diverged")
    except (OSError, json.JSONDecodeError):
        return False


def run_dir(cache_dir: str | Path, config: dict[str, Any]) -> Path:
    """Where :func:`train_run` keeps the run of ``config`` under ``cache_dir``."""
    return Path(cache_dir) / "runs" / run_key(config)


def train_run(
    cache_dir: str | Path | None, refresh: bool = False, **config: Any,
) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """One :func:`normdyn.validate.runs.run_training` run, kept under ``cache_dir/runs``.

    Returns ``(steps, metrics, meta)``: the monitor's per-step, per-layer table, the
    per-step lr/loss/accuracy and the run's ``config.json`` (with ``test_accuracy``).
    A completed (or diverged) run of the same config is reused unless ``refresh``.  A run
    that diverges (non-finite loss or norms) is *not* an error here: ``meta["status"]``
    is ``"diverged"`` and the tables hold the steps recorded before it.
    """
    from normdyn._checks import NonFiniteError
    from normdyn.validate.runs import RunConfig, load_run, run_training

    cfg = RunConfig(**config)
    if cache_dir is None:
        tmp = tempfile.mkdtemp(prefix="normdyn-run-")
        out = Path(tmp)
    else:
        tmp = None
        out = run_dir(cache_dir, config)
        if refresh and out.exists():
            shutil.rmtree(out)
    try:
        if not run_complete(out):
            try:
                run_training(cfg, out, progress=False)
            except NonFiniteError:
                pass  # recorded as status "diverged" in config.json with the partial tables
        steps, meta = load_run(out)
        metrics_path = out / "metrics.csv"
        metrics = (pd.read_csv(metrics_path) if metrics_path.is_file()
                   else pd.DataFrame(columns=["step", "lr", "loss", "accuracy"]))
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return steps, metrics, meta
