"""The files of a run directory: names, atomic checkpoints, resume checks, reading back.

:func:`~normdyn.validate.runs.run_training` writes ``config.json`` (:data:`CONFIG_FILE`),
the per-step table (``steps.csv`` or ``steps.parquet``, found by :func:`steps_path`),
``metrics.csv`` (:data:`METRICS_FILE`), ``checkpoint.pt`` (:data:`CHECKPOINT_FILE`)
and optionally ``lr_sweep.csv`` (:data:`SWEEP_FILE`); :func:`load_run` reads a run back.

The private helpers are the checkpoint/resume machinery of the training loop: an
atomic :func:`torch.save`, the capture and restore of every global RNG state, and
the check that an existing ``out_dir`` holds a run of the *same* config (which is
resumed) and never the files of another one (which would be overwritten).
"""

from __future__ import annotations

import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

__all__ = [
    "CONFIG_FILE",
    "CHECKPOINT_FILE",
    "METRICS_FILE",
    "SWEEP_FILE",
    "load_run",
    "steps_path",
]

CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.pt"
METRICS_FILE = "metrics.csv"
SWEEP_FILE = "lr_sweep.csv"
_OUTPUT_FILES = (CONFIG_FILE, CHECKPOINT_FILE, METRICS_FILE, SWEEP_FILE, "steps.csv",
                 "steps.parquet")


def steps_path(out_dir: str | Path) -> Path:
    """The per-step table written by ``run_training`` (CSV or parquet).

    See :func:`normdyn.validate.runs.run_training`.
    """
    out_dir = Path(out_dir)
    for name in ("steps.parquet", "steps.csv"):
        if (out_dir / name).is_file():
            return out_dir / name
    raise FileNotFoundError(f"no steps.csv or steps.parquet in {out_dir}")


def load_run(out_dir: str | Path) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The per-step table and the ``config.json`` of a run directory."""
    path = steps_path(out_dir)
    table = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path)
    meta = json.loads((Path(out_dir) / CONFIG_FILE).read_text(encoding="utf-8"))
    return table, meta


# --------------------------------------------------------------------------- checkpoints


def _capture_rng() -> dict[str, Any]:
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002 - the legacy global RNG is saved too
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_torch_save(obj: Any, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _json_roundtrip(obj: Any) -> Any:
    return json.loads(json.dumps(obj))


def _check_out_dir(out_dir: Path, resolved: dict[str, Any]) -> dict[str, Any] | None:
    """The existing ``config.json`` of the same config, ``None`` for a fresh directory."""
    config_path = out_dir / CONFIG_FILE
    if config_path.is_file():
        try:
            existing = json.loads(config_path.read_text(encoding="utf-8"))["config"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"out_dir {str(out_dir)!r} has an unreadable {CONFIG_FILE}; "
                             "refusing to overwrite it") from exc
        wanted = _json_roundtrip(resolved)
        if existing != wanted:
            diff = ", ".join(f"{k}: {existing.get(k)!r} -> {wanted.get(k)!r}"
                             for k in sorted(set(existing) | set(wanted))
                             if existing.get(k) != wanted.get(k))
            raise ValueError(f"out_dir {str(out_dir)!r} holds a run with a different config "
                             f"({diff}); choose another out_dir or delete it")
        return existing
    leftovers = [name for name in _OUTPUT_FILES if (out_dir / name).exists()]
    if leftovers:
        raise ValueError(f"out_dir {str(out_dir)!r} holds run files {leftovers} but no "
                         f"{CONFIG_FILE}; refusing to overwrite them")
    return None

