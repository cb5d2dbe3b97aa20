"""Shared machinery of the paper-figure scripts: profiles, naming, cache, plotting.

Structure of every script (measure, then plot)::

    measure(profile, cache_dir, refresh) -> DataFrame   # the tidy table of COLUMNS
    plot(df, out_dir, profile) -> list[Path]            # PNG + PDF, drawn from df only
    main(profile, out_dir, refresh) -> FigureResult     # = run_figure(module, ...)

:func:`run_figure` calls ``measure`` (through the CSV cache under ``out_dir/cache``),
checks that the frame has exactly the documented ``COLUMNS``, writes it as
``out_dir/<stem>.csv`` beside ``<stem>.png``/``<stem>.pdf`` and a ``<stem>.json`` with the
configuration and provenance, and returns a :class:`FigureResult`.

Profiles
--------
``micro``  seconds per figure; only for the smoke test (numbers are not meaningful).
``quick``  CPU, all twelve in under 10 minutes on two cores; >= 3 seeds per real statistic.
``deep``   CPU, ResNet-56/110 on Fashion-MNIST (28x28 for runs of <= 10 steps, 14x14 for
           the long ones), Short and NoShort where the claim is about depth, >= 3 seeds
           (>= 5 where an accuracy is graded), 1000 steps where final accuracy is graded;
           about 2 hours on two cores (``--launcher local --jobs 2``), resumable per run.
           Needs a RunConfig with ``image_size`` and ``data="fashion-mnist"``; without them
           the plan stops with a ValueError naming ``image_size``.
``full``   the paper's settings (ResNet-56/110, thousands of steps); needs a GPU.

Planned runs
------------
A script whose measurements are training runs lists them in ``plan(profile)``: the
:func:`train_run` keyword arguments of every run, in the order ``measure`` uses them.
``normdyn figures --launcher local|submitit`` trains the planned runs first, in
parallel processes or as submitit jobs, into the shared run cache; ``measure`` then
finds each run there, so the tables are byte-identical to an in-process run.

File names encode the configuration: ``<fig>_<slug>_<tag>_<profile>``, e.g.
``fig05_spread_vs_lr_L56_steps10_quick``.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd

from normdyn._io import (
    atomic_write_frame,
    atomic_write_json,
    atomic_write_text,
    config_hash,
    provenance,
)
from normdyn.figures.run_cache import run_dir, train_run  # noqa: F401 - the scripts' API

__all__ = [
    "PROFILES",
    "DEFAULT_OUT",
    "FigureResult",
    "check_profile",
    "config_for",
    "make_stem",
    "config_hash",
    "cached_frame",
    "run_figure",
    "script_main",
    "explosion_profile",
    "spread_of",
    "train_run",
    "run_dir",
    "resolve_data",
    "run_device",
    "load_dataset",
    "torch_setup",
    "subplots",
    "save_figure",
    "layer_colors",
    "log_lr_axis",
    "mark_critical_lr",
    "footnote",
    "threshold",
    "seed_interval",
    "live_spreads",
    "legend_outside",
    "cached_frames",
    "write_table",
    "COMPACT_FLOATS",
    "has_run_field",
    "quiet_log_ticks",
    "image_size_kwargs",
    "long_term_specs",
    "long_term_measure",
]

PROFILES = ("micro", "quick", "deep", "full")
#: ``float_format`` of a figure table whose script sets ``FLOAT_FORMAT = COMPACT_FLOATS``:
#: 6 significant digits, so that a long per-step table stays small enough to commit.
#: Only for tables whose statistics are far coarser than 1e-6 (never fig04/fig12, whose
#: model checks work at rounding level).
COMPACT_FLOATS = "%.6g"
DEFAULT_OUT = Path(__file__).resolve().parent / "out"
CACHE_DIRNAME = "cache"


# --------------------------------------------------------------------------- results


@dataclass
class FigureResult:
    """What running one figure script produced (or why it failed)."""

    figure: str
    title: str
    profile: str
    status: str  # "ok" | "failed"
    seconds: float
    files: list[Path] = field(default_factory=list)
    csv: Path | None = None
    stem: str = ""
    rows: int = 0
    config: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def as_dict(self) -> dict[str, Any]:
        return {
            "figure": self.figure,
            "title": self.title,
            "profile": self.profile,
            "status": self.status,
            "seconds": round(self.seconds, 3),
            "files": [str(p) for p in self.files],
            "csv": None if self.csv is None else str(self.csv),
            "stem": self.stem,
            "rows": self.rows,
            "config": self.config,
            "error": self.error,
        }


# --------------------------------------------------------------------------- profiles


def check_profile(profile: str) -> str:
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {', '.join(map(repr, PROFILES))}, "
                         f"got {profile!r}")
    return profile


def config_for(configs: dict[str, dict[str, Any]], profile: str) -> dict[str, Any]:
    """A copy of the settings of ``profile`` from a script's ``CONFIGS``."""
    check_profile(profile)
    return json.loads(json.dumps(configs[profile]))


def make_stem(figure: str, slug: str, tag: str, profile: str) -> str:
    """``<figure>_<slug>_<tag>_<profile>`` (``tag`` may be empty)."""
    parts = [figure, slug, tag, check_profile(profile)]
    return "_".join(p for p in parts if p)


def cached_frame(
    cache_dir: str | Path | None,
    name: str,
    config: dict[str, Any],
    compute: Callable[[], pd.DataFrame],
    refresh: bool = False,
) -> pd.DataFrame:
    """``compute()``, cached as ``cache_dir/<name>-<hash(config)>.csv``.

    The cache is reused unless ``refresh``; ``cache_dir=None`` disables it.  A JSON file
    beside the CSV keeps the configuration and provenance of the measurement.
    """
    if cache_dir is None:
        return compute()
    path = Path(cache_dir) / f"{name}-{config_hash(config)}.csv"
    if path.is_file() and not refresh:
        return pd.read_csv(path)
    frame = compute()
    atomic_write_frame(path, frame)
    atomic_write_json(path.with_suffix(".json"), {"config": config, "provenance": provenance()})
    return frame


def cached_frames(
    cache_dir: str | Path | None,
    names: Sequence[str],
    config: dict[str, Any],
    compute: Callable[[], dict[str, pd.DataFrame]],
    refresh: bool = False,
) -> dict[str, pd.DataFrame]:
    """:func:`cached_frame` for a measurement that yields several tables at once.

    ``compute()`` returns ``{name: frame}`` for every name of ``names``; each is cached
    as ``cache_dir/<name>-<hash(config)>.csv``, and all are reused only when all exist.
    """
    if cache_dir is None:
        return compute()
    paths = {n: Path(cache_dir) / f"{n}-{config_hash(config)}.csv" for n in names}
    if not refresh and all(p.is_file() for p in paths.values()):
        return {n: pd.read_csv(p) for n, p in paths.items()}
    frames = compute()
    for name, path in paths.items():
        atomic_write_frame(path, frames[name])
        atomic_write_json(path.with_suffix(".json"),
                          {"config": config, "provenance": provenance()})
    return frames


# --------------------------------------------------------------------------- running


def write_table(path: str | Path, frame: pd.DataFrame, float_format: str | None = None) -> Path:
    """``frame`` as CSV at ``path`` (atomically), floats as ``float_format`` when given."""
    if float_format is None:
        return atomic_write_frame(path, frame)
    return atomic_write_text(path, frame.to_csv(index=False, float_format=float_format))


def run_figure(
    module: ModuleType, profile: str = "quick", out_dir: str | Path = DEFAULT_OUT,
    refresh: bool = False,
) -> FigureResult:
    """Measure (cached), check the columns, write CSV/JSON, plot; raise on any failure."""
    check_profile(profile)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    stem = module.output_stem(profile)
    frame = module.measure(profile, out_dir / CACHE_DIRNAME, refresh)
    columns = list(module.COLUMNS)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{module.FIGURE}: measure() lacks documented columns {missing}")
    frame = frame[columns]
    float_format = getattr(module, "FLOAT_FORMAT", None)
    csv = write_table(out_dir / f"{stem}.csv", frame, float_format)
    config = config_for(module.CONFIGS, profile)
    side_files = []
    side_columns = getattr(module, "SIDE_COLUMNS", {})
    side = module.side_tables(profile, out_dir / CACHE_DIRNAME) if side_columns else {}
    for suffix, cols in side_columns.items():
        table = side[suffix]
        lacking = [c for c in cols if c not in table.columns]
        if lacking:
            raise ValueError(f"{module.FIGURE}: side table {suffix!r} lacks columns {lacking}")
        path = write_table(out_dir / f"{stem}_{suffix}.csv", table[list(cols)], float_format)
        atomic_write_json(path.with_suffix(".json"), {
            "figure": module.FIGURE, "table": suffix, "profile": profile, "config": config,
            "columns": list(cols), "provenance": provenance()})
        side_files += [path, path.with_suffix(".json")]
    files = [Path(p) for p in module.plot(frame, out_dir, profile)]
    atomic_write_json(out_dir / f"{stem}.json", {
        "figure": module.FIGURE, "title": module.TITLE, "profile": profile,
        "config": config, "columns": columns, "provenance": provenance(),
    })
    return FigureResult(
        figure=module.FIGURE, title=module.TITLE, profile=profile, status="ok",
        seconds=time.perf_counter() - start, files=[*files, csv, *side_files], csv=csv,
        stem=stem,
        rows=len(frame), config=config,
    )


def script_main(module: ModuleType, argv: Sequence[str] | None = None) -> int:
    """The ``__main__`` block of a figure script: ``--profile``, ``--out``, ``--refresh``."""
    parser = argparse.ArgumentParser(prog=f"python -m paper_figures.{module.__name__.split('.')[-1]}",
                                     description=module.TITLE)
    parser.add_argument("--profile", choices=PROFILES, default="quick")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output directory")
    parser.add_argument("--refresh", action="store_true", help="ignore cached measurements")
    args = parser.parse_args(argv)
    result = module.main(profile=args.profile, out_dir=args.out, refresh=args.refresh)
    for path in result.files:
        print(f"wrote {path}")
    print(f"{result.figure}: {result.seconds:.1f}s")
    return 0


# --------------------------------------------------------------------------- models


def explosion_profile(
    layers: int, decades: float, *, sigma2_0: float = 1.0, c_min: float = 1.0,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Initial ``(sigma2_0, c)`` per layer of a network with gradient explosion.

    Every layer starts at the same squared weight norm ``sigma2_0``; the base gradient
    grows geometrically towards the input, from ``c_min`` at the last layer to
    ``c_min * 10**decades`` at the first (a deep net without shortcuts, whose gradient
    explodes backwards).  Layer 0 is the first (input) layer.
    """
    if layers < 2:
        raise ValueError(f"layers must be >= 2, got {layers}")
    exponent = decades * (1.0 - np.arange(layers) / (layers - 1))
    return np.full(layers, float(sigma2_0)), c_min * 10.0**exponent


def spread_of(values: Iterable[float]) -> float:
    """max/min of positive values (the ELR spread); NaN when empty or not positive."""
    arr = np.asarray(list(values), dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0 or arr.min() <= 0:
        return float("nan")
    return float(arr.max() / arr.min())


# --------------------------------------------------------------------------- torch runs


def torch_setup(profile: str) -> str:
    """Seed-independent torch settings of a profile; returns the device name."""
    import torch

    if profile == "full" and torch.cuda.is_available():
        return "cuda"
    if profile != "full" or not torch.cuda.is_available():
        # The models of the CPU profiles are tiny: one thread is about as fast as two and
        # does not collapse when the cores are shared (measured: 10x slower with two
        # threads on a loaded 2-core machine).
        torch.set_num_threads(1)
    return "cpu"


def resolve_data(name: str) -> str:
    """``name``, except CIFAR without a local copy (``$NORMDYN_DATA`` unset): ``synthetic``.

    The full profile names CIFAR-10; where no local copy exists (never downloaded) its
    runs use the synthetic 32x32x3 images of the same shape and class count instead, and
    the run's ``config.json`` records which data it used.
    """
    import os

    if name in ("cifar10", "cifar100") and not os.environ.get("NORMDYN_DATA"):
        return "synthetic"
    return name


def load_dataset(name: str, split: str, seed: int = 0) -> tuple[Any, Any]:
    """``(X, y)`` of data set ``name``; CIFAR is read from ``$NORMDYN_DATA`` (never downloaded)."""
    import os

    from normdyn.validate.data import get_dataset

    if name in ("cifar10", "cifar100"):
        root = os.environ.get("NORMDYN_DATA")
        if not root:
            raise ValueError(f"data {name!r} needs NORMDYN_DATA=<directory holding the "
                             "python-pickle release>; datasets are never downloaded")
        return get_dataset(name, root=root, split=split)
    return get_dataset(name, seed=seed, split=split)


def run_device(profile: str) -> str:
    """The device of a profile's training runs, without touching torch's settings."""
    if profile != "full":
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


# --------------------------------------------------------------------------- plotting


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({
        "figure.dpi": 110, "savefig.dpi": 150, "font.size": 9, "axes.titlesize": 10,
        "axes.grid": True, "grid.alpha": 0.3, "legend.fontsize": 7, "legend.frameon": False,
    })
    return plt


def subplots(nrows: int = 1, ncols: int = 1, *, width: float = 4.2, height: float = 3.3,
             **kw: Any):
    """``plt.subplots`` with panel size ``width x height`` inches; axes always an array."""
    plt = _pyplot()
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows),
                             squeeze=False, **kw)
    return fig, axes


def footnote(fig: Any, profile: str, text: str = "") -> None:
    """A small note on the profile (and anything else) in the figure's corner."""
    note = f"profile: {profile}" + (f"; {text}" if text else "")
    fig.text(0.995, 0.005, note, ha="right", va="bottom", fontsize=6, color="0.4")


def save_figure(fig: Any, out_dir: str | Path, stem: str) -> list[Path]:
    """Save ``fig`` as ``<stem>.png`` and ``<stem>.pdf`` in ``out_dir``; close it."""
    plt = _pyplot()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    paths = []
    for ext in ("png", "pdf"):
        path = out_dir / f"{stem}.{ext}"
        fig.savefig(path)
        paths.append(path)
    plt.close(fig)
    return paths


def layer_colors(n: int, cmap: str = "viridis") -> list[Any]:
    """``n`` colours from input (dark) to output (light) layers."""
    plt = _pyplot()
    return [plt.get_cmap(cmap)(x) for x in np.linspace(0.0, 0.95, max(n, 1))]


def log_lr_axis(ax: Any, label: str = r"learning rate $\eta$") -> None:
    ax.set_xscale("log")
    ax.set_xlabel(label)


def mark_critical_lr(ax: Any, value: float, label: str | None = None, **kw: Any) -> None:
    """A dashed vertical line at the predicted critical lr."""
    style = {"color": "crimson", "ls": "--", "lw": 1.0} | kw
    ax.axvline(value, label=label or rf"$\eta^*$ = {value:.3g}", **style)



# --------------------------------------------------------------------------- long runs


LONG_TERM_COLUMNS = ("affine", "step", "layer", "layer_index", "lr", "seed", "sigma2",
                     "grad_norm", "elr", "update_elr", "spread", "loss")


def thin_steps(steps: int, max_points: int) -> np.ndarray:
    """Every step up to ``max_points`` steps; otherwise log-spaced plus a regular grid."""
    if steps <= max_points:
        return np.arange(steps)
    log = np.geomspace(1, steps - 1, max_points // 2).round().astype(np.int64)
    lin = np.linspace(0, steps - 1, max_points // 2).round().astype(np.int64)
    return np.unique(np.concatenate([[0], log, lin]))


def long_term_stem(figure: str, slug: str, configs: dict, profile: str) -> str:
    """Output stem of the long-term figures (2 and 3): depth, shortcuts, lr and steps."""
    cfg = config_for(configs, profile)
    arch = f"L{cfg['depth']}_{'Short' if cfg['shortcuts'] else 'NoShort'}"
    return make_stem(figure, slug, f"{arch}_lr{cfg['lr']:g}_steps{cfg['steps']}", profile)


def long_term_specs(cfg: dict[str, Any], *, drift: bool,
                    profile: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """``(labels, train_run kwargs)`` of figures 2 and 3: per seed, without/with affine."""
    device = run_device(profile)
    return [({"seed": seed, "affine": affine},
             dict(arch="resnet", depth=cfg["depth"], shortcuts=cfg["shortcuts"], affine=affine,
                  width=cfg["width"], data=resolve_data(cfg["data"]), steps=cfg["steps"],
                  batch_size=cfg["batch_size"], lr=cfg["lr"], momentum=cfg.get("momentum", 0.0),
                  drift=drift, seed=seed, device=device, checkpoint_every=10**9,
                  sync_every=min(cfg["steps"], 200), **image_size_kwargs(cfg)))
            for seed in cfg["seeds"] for affine in (False, True)]


def long_term_measure(cfg: dict[str, Any], *, drift: bool, cache_dir: str | Path | None,
                      refresh: bool, profile: str) -> pd.DataFrame:
    """Runs without and with BN affine parameters (figures 2 and 3); tidy per-layer table."""
    torch_setup(profile)
    frames = []
    for labels, kwargs in long_term_specs(cfg, drift=drift, profile=profile):
        table, _, meta = train_run(cache_dir, refresh, **kwargs)
        layers = list(meta["tracked_layers"])
        index = {name: i for i, name in enumerate(layers)}
        keep = thin_steps(cfg["steps"], cfg.get("max_points", 2000))
        t = table[table["step"].isin(keep)].copy()
        t["spread"] = t["step"].map(live_spreads(t)["spread"])
        t["affine"] = int(labels["affine"])
        t["seed"] = labels["seed"]
        t["layer_index"] = t["layer"].map(index)
        frames.append(t)
    return pd.concat(frames, ignore_index=True)[list(LONG_TERM_COLUMNS)]


def long_term_plot(df: pd.DataFrame, out_dir: str | Path, profile: str, stem: str,
                   what: str) -> list[Path]:
    """Per-layer ELR over the steps without/with affine BN, and the spread of both."""
    fig, axes = subplots(1, 3, width=3.7, height=3.1)
    seed = sorted(df["seed"].unique())[0]
    d = df[df["seed"] == seed]
    n_layers = int(d["layer_index"].max()) + 1
    colors = layer_colors(n_layers)
    for ax, affine in ((axes[0, 0], 0), (axes[0, 1], 1)):
        a = d[d["affine"] == affine]
        for idx, g in a.groupby("layer_index"):
            ax.plot(g["step"] + 1, g["elr"], color=colors[int(idx)], lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("step + 1")
        ax.set_ylabel(r"ELR $E_\ell$")
        ax.set_title(f"{what}, {'with' if affine else 'without'} affine BN")
    ax = axes[0, 2]
    for affine, style in ((0, "-"), (1, "--")):
        s = d[d["affine"] == affine].groupby("step")["spread"].first()
        ax.plot(s.index + 1, s.values, ls=style, color="k",
                label=f"{'with' if affine else 'without'} affine")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("step + 1")
    ax.set_ylabel(r"spread $\max E / \min E$")
    ax.set_title("ELR spread")
    ax.legend()
    footnote(fig, profile, f"lr {d['lr'].iloc[0]:g}; colour: layer depth (dark = input)")
    return save_figure(fig, out_dir, stem)


# --------------------------------------------------------------------------- graded panels


def threshold(name: str, default: float) -> float:
    """The report's threshold ``name`` (:mod:`normdyn.thresholds`), for drawing it.

    ``default`` is used only where the grading package is absent or has moved the name;
    the figure then still draws a line, and the caption names the value it drew.
    """
    try:
        from normdyn import thresholds
    except ImportError:
        return float(default)
    return float(getattr(thresholds, name, default))


def seed_interval(values: Iterable[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean over seeds and its Student-t ``confidence`` interval.

    NaNs are dropped; one value gives ``low = high = mean``; none gives NaNs.
    """
    arr = np.asarray(list(values), dtype=np.float64)
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        return (float("nan"),) * 3
    mean = float(arr.mean())
    if arr.size == 1:
        return mean, mean, mean
    from scipy import stats

    half = float(stats.t.ppf(0.5 + confidence / 2, arr.size - 1)
                 * arr.std(ddof=1) / np.sqrt(arr.size))
    return mean, mean - half, mean + half


def legend_outside(ax: Any, **kw: Any) -> Any:
    """A legend to the right of ``ax``, outside the axes, so it covers no data."""
    style = {"loc": "upper left", "bbox_to_anchor": (1.02, 1.0), "borderaxespad": 0.0} | kw
    return ax.legend(**style)


def live_spreads(table: pd.DataFrame, elr: str = "elr",
                 grad_norm: str | None = "grad_norm") -> pd.DataFrame:
    """Per step of a run's per-layer table: live ``spread``, ``robust_spread``, ``dead_layers``.

    :func:`normdyn._spread.spread_table` over ``step`` (indexed by step); non-finite ELRs
    are left out first (a diverged run's last rows), as the old per-step max/min did.
    """
    from normdyn._spread import spread_table

    if grad_norm is not None and grad_norm not in table.columns:
        grad_norm = None
    ok = table[np.isfinite(table[elr].to_numpy(dtype=np.float64))]
    out = spread_table(ok, ["step"], elr=elr, grad_norm=grad_norm)
    return out.set_index("step")


def has_run_field(name: str) -> bool:
    """Whether :class:`normdyn.validate.runs.RunConfig` has the field ``name``."""
    import dataclasses

    from normdyn.validate.config import RunConfig

    return any(f.name == name for f in dataclasses.fields(RunConfig))


def quiet_log_ticks(ax: Any, axis: str = "x") -> None:
    """No labels on the minor ticks of a log ``axis`` (they collide on a short decade)."""
    from matplotlib.ticker import NullFormatter

    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_minor_formatter(NullFormatter())


def image_size_kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
    """``{"image_size": ...}`` when a figure config sets it and RunConfig knows the field.

    Before RunConfig has ``image_size`` a config that sets it cannot be built as asked:
    a ``ValueError`` then names the field instead of running at another size silently.
    """
    if "image_size" not in cfg:
        return {}
    if not has_run_field("image_size"):
        raise ValueError(f"image_size: this RunConfig has no field 'image_size' (asked for "
                         f"{cfg['image_size']} on data {cfg.get('data')!r})")
    return {"image_size": cfg["image_size"]}
