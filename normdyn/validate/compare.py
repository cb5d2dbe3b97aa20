"""Theory against measurement for one training run.

:func:`compare_run` takes the per-step, per-layer table of
:func:`~normdyn.validate.runs.run_training` (the monitor's columns ``step, layer, lr,
sigma2, grad_norm, elr, update_elr, cos_wg``) and reports, with numbers only:

1. **Replay error.**  The measured base gradients ``c_t = base_gradient(grad_norm,
   sqrt(sigma2))`` of every layer and step (a ``T x L`` series) and the actual
   learning rates ``lr_t`` are fed into the discrete norm-level model
   (:func:`~normdyn.simulate.discrete.simulate_discrete`, with the run's momentum and
   weight decay), starting from the measured ``sigma2_0``; the predicted
   ``sigma2_t`` is compared with the measured one (max and median relative error).
   For plain SGD the model is exact up to the scale-invariance defect and float32
   rounding, so ``float32_level`` is computed against a stated threshold
   (:data:`FLOAT32_ULPS_PER_STEP` float32 ulps per replayed step).  For momentum the
   norm model is a first-order (uncorrelated-gradient) model, so the error measures
   the model, not the rounding; for Adam there is no norm model and the SGD replay is
   reported only for reference (``applicable: false``).  For momentum, weight-decay
   and Adam runs ``replay_plain_sgd_model`` repeats the replay with the plain SGD map
   (momentum and decay ignored), for contrast.
2. **Constant-c prediction.**  The same model with ``c`` frozen at its step-0 value
   (and the actual ``lr_t``), compared with the measurement at steps 10, 100 and 1000
   (those that were recorded) and at the last recorded step.
3. **ELR spread** ``max_l E_l / min_l E_l`` over time: first, last, minimum, the
   90%/10% quantile ratio, and the least-squares trend of ``log spread`` per step.
4. **Critical learning rate** (optional): ``critical_lr_of(a_0)`` from the measured
   step-0 norms against the brute-force minimiser of a one-step sweep
   (:func:`~normdyn.validate.runs.one_step_lr_sweep`).

Plus the **scale-invariance defect** ``max |cos(w, grad w)|`` per layer.  Nothing is
compared with hard-coded expected values: the reader judges the numbers.
:func:`write_report` writes ``report.json`` and ``report.md``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from normdyn._io import atomic_write_json, atomic_write_text
from normdyn.theory.numeric import base_gradient, critical_lr_of, gradient_elr

__all__ = [
    "FLOAT32_EPS",
    "FLOAT32_ULPS_PER_STEP",
    "PREDICTION_STEPS",
    "compare_run",
    "replay_threshold",
    "measured_arrays",
    "replay_sigma2",
    "write_report",
    "REPORT_JSON",
    "REPORT_MD",
]

FLOAT32_EPS = float(np.finfo(np.float32).eps)
#: float32 ulps of relative error admitted per replayed step for ``float32_level``.
FLOAT32_ULPS_PER_STEP = 4.0
PREDICTION_STEPS = (10, 100, 1000)
REPORT_JSON = "report.json"
REPORT_MD = "report.md"


def replay_threshold(steps: int) -> float:
    """The ``float32_level`` threshold: ``FLOAT32_ULPS_PER_STEP * eps32 * max(1, steps)``."""
    return FLOAT32_ULPS_PER_STEP * FLOAT32_EPS * max(1, int(steps))


def _config_dict(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if hasattr(config, "resolved"):
        return config.resolved()
    if dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)
    if isinstance(config, Mapping):
        return dict(config.get("config", config)) if "config" in config else dict(config)
    raise ValueError(f"config must be a RunConfig or a dict, got {type(config).__name__}")


def measured_arrays(steps_df: pd.DataFrame) -> dict[str, Any]:
    """``T x L`` arrays of the table (layers in order of appearance), finite prefix only.

    Returns ``steps`` (T,), ``layers`` (L,), ``lr`` (T,), ``sigma2``, ``grad_norm``,
    ``elr``, ``update_elr``, ``cos_wg`` (T, L) and ``truncated_at`` (the first step with
    a non-finite or non-positive norm, or ``None``).
    """
    required = {"step", "layer", "lr", "sigma2", "grad_norm"}
    missing = sorted(required - set(steps_df.columns))
    if missing:
        raise ValueError(f"steps_df lacks columns {missing}")
    if steps_df.empty:
        raise ValueError("steps_df is empty: no steps were recorded")
    layers = list(dict.fromkeys(steps_df["layer"]))
    out: dict[str, Any] = {"layers": layers}
    for col in ("sigma2", "grad_norm", "lr", "elr", "update_elr", "cos_wg"):
        if col not in steps_df.columns:
            continue
        wide = steps_df.pivot(index="step", columns="layer", values=col)[layers]
        out[col] = wide.to_numpy(dtype=np.float64)
        out["steps"] = wide.index.to_numpy()
    out["lr"] = out["lr"][:, 0]
    good = (np.isfinite(out["sigma2"]).all(axis=1) & (out["sigma2"] > 0).all(axis=1)
            & np.isfinite(out["grad_norm"]).all(axis=1) & np.isfinite(out["lr"])
            & (out["lr"] > 0))
    n = len(good) if good.all() else int(np.argmin(good))
    out["truncated_at"] = None if n == len(good) else int(out["steps"][n])
    for key in ("sigma2", "grad_norm", "lr", "elr", "update_elr", "cos_wg", "steps"):
        if key in out:
            out[key] = out[key][:n]
    if n == 0:
        raise ValueError("steps_df has no step with finite, positive norms")
    return out


def _norm_model(cfg: Mapping[str, Any]) -> tuple[str, bool, float, float]:
    """(name, applicable, momentum, weight_decay) of the norm model for the run's optimizer."""
    momentum = float(cfg.get("momentum", 0.0) or 0.0)
    wd = float(cfg.get("weight_decay", 0.0) or 0.0)
    if cfg.get("optimizer", "sgd") == "adam":
        return "sgd norm map (no norm model for adam; for reference only)", False, 0.0, 0.0
    parts = ["sgd"] + (["momentum (first-order)"] if momentum else []) + \
        (["weight decay"] if wd else [])
    return " + ".join(parts), True, momentum, wd


class _ReplayedLR:
    """A schedule object for :func:`simulate_discrete`: the measured ``lr_t`` of every step.

    Steps past the series (the final record) reuse its last value.
    """

    name = "replayed"
    state_dependent = False

    def __init__(self, lrs: np.ndarray) -> None:
        self.lrs = lrs

    def lr(self, step: Any, state: Any = None) -> np.ndarray:
        return np.asarray(self.lrs[min(int(step), len(self.lrs) - 1)], dtype=np.float64)


def replay_sigma2(
    sigma2_0: np.ndarray, c: np.ndarray, lr: np.ndarray, *, momentum: float = 0.0,
    weight_decay: float = 0.0,
) -> np.ndarray:
    """Predicted ``sigma2_t`` (``T x L``, row 0 = ``sigma2_0``) of the discrete model.

    ``c`` is ``(T-1, L)`` (the base gradient of every replayed step) or ``(L,)``
    (constant), ``lr`` the ``T-1`` learning rates of those steps.  Runs
    :func:`~normdyn.simulate.discrete.simulate_discrete` (numpy engine: no JIT start-up)
    with the measured ``lr_t`` as its schedule.  A base gradient of exactly 0 (a layer
    that got no gradient) is replaced by the smallest positive float64, whose
    contribution ``(lr*c)**2/sigma2`` underflows to 0.
    """
    from normdyn.simulate.discrete import simulate_discrete

    lr = np.asarray(lr, dtype=np.float64).reshape(-1)
    c = np.maximum(np.asarray(c, dtype=np.float64), np.finfo(np.float64).tiny)
    sigma2_0 = np.asarray(sigma2_0, dtype=np.float64).reshape(-1)
    steps = len(lr)
    if steps == 0:
        return sigma2_0[None, :]
    frame = simulate_discrete(sigma2_0, c, float(lr[0]), steps, schedule=_ReplayedLR(lr),
                              momentum=momentum, weight_decay=weight_decay, record="all",
                              engine="numpy")
    L = len(sigma2_0)
    frame = frame.sort_values(["step", "layer"], kind="stable")
    pred = frame["sigma2"].to_numpy(dtype=np.float64).reshape(-1, L)
    if pred.shape != (steps + 1, L):
        raise RuntimeError(f"simulate_discrete returned sigma2 of shape {pred.shape}, "
                           f"expected {(steps + 1, L)}")
    return pred


def _rel_errors(pred: np.ndarray, meas: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.abs(pred - meas) / np.abs(meas)


def _stats(err: np.ndarray) -> dict[str, float | None]:
    err = err[np.isfinite(err)]
    if err.size == 0:
        return {"max": None, "median": None}
    return {"max": float(err.max()), "median": float(np.median(err))}


def _replay(arr: dict[str, Any], cfg: Mapping[str, Any]) -> dict[str, Any]:
    sigma2, T = arr["sigma2"], len(arr["steps"])
    name, applicable, momentum, wd = _norm_model(cfg)
    result: dict[str, Any] = {"model": name, "applicable": applicable,
                              "steps_replayed": T - 1}
    if T < 2:
        result.update({"max_rel_error": None, "median_rel_error": None,
                       "float32_level": None, "note": "fewer than two recorded steps"})
        return result
    c = base_gradient.raw(arr["grad_norm"], np.sqrt(sigma2))
    pred = replay_sigma2(sigma2[0], c[:-1], arr["lr"][:-1], momentum=momentum,
                         weight_decay=wd)
    err = _rel_errors(pred[1:], sigma2[1:])
    stats = _stats(err)
    threshold = replay_threshold(T - 1)
    per_layer = np.nanmax(err, axis=0)
    result.update({
        "max_rel_error": stats["max"],
        "median_rel_error": stats["median"],
        "max_rel_error_per_step": None if stats["max"] is None else stats["max"] / (T - 1),
        "final_step_max_rel_error": float(np.nanmax(err[-1])),
        "worst_layer": str(arr["layers"][int(np.nanargmax(per_layer))]),
        "float32_threshold": threshold,
        "float32_threshold_rule": (f"{FLOAT32_ULPS_PER_STEP:g} float32 ulps (eps32="
                                   f"{FLOAT32_EPS:.3g}) per replayed step x {T - 1} steps"),
        "float32_level": bool(stats["max"] is not None and stats["max"] <= threshold),
    })
    return result


def _constant_c(arr: dict[str, Any], cfg: Mapping[str, Any]) -> dict[str, Any]:
    sigma2, T = arr["sigma2"], len(arr["steps"])
    name, applicable, momentum, wd = _norm_model(cfg)
    targets = sorted({t for t in PREDICTION_STEPS if t < T} | ({T - 1} if T > 1 else set()))
    result: dict[str, Any] = {"model": name, "applicable": applicable,
                              "c_from_step": int(arr["steps"][0]), "at_steps": {}}
    if not targets:
        result["note"] = "fewer than two recorded steps"
        return result
    c0 = base_gradient.raw(arr["grad_norm"][0], np.sqrt(sigma2[0]))
    pred = replay_sigma2(sigma2[0], c0, arr["lr"][: max(targets)], momentum=momentum,
                         weight_decay=wd)
    for t in targets:
        err = _rel_errors(pred[t], sigma2[t])
        stats = _stats(err)
        result["at_steps"][str(int(arr["steps"][t]))] = {
            "max_rel_error": stats["max"], "median_rel_error": stats["median"]}
    return result


def _spread_series(values: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return values.max(axis=1) / values.min(axis=1)


def _spread(arr: dict[str, Any], key: str) -> dict[str, Any] | None:
    if key not in arr:
        return None
    values = arr[key]
    ok = np.isfinite(values).all(axis=1) & (values > 0).all(axis=1)
    if not ok.any():
        return None
    steps = arr["steps"][ok]
    s = _spread_series(values[ok])
    q = np.quantile(values[ok], [0.9, 0.1], axis=1)
    log_s = np.log(s)
    result: dict[str, Any] = {
        "first": float(s[0]), "last": float(s[-1]), "min": float(s.min()),
        "argmin_step": int(steps[int(np.argmin(s))]), "max": float(s.max()),
        "q90_q10_first": float(q[0, 0] / q[1, 0]), "q90_q10_last": float(q[0, -1] / q[1, -1]),
        "steps": int(len(s)),
    }
    if len(s) >= 2:
        slope = float(np.polyfit(steps.astype(np.float64), log_s, 1)[0])
        half = len(s) // 2
        late = (float(np.polyfit(steps[half:].astype(np.float64), log_s[half:], 1)[0])
                if len(s) - half >= 2 else slope)
        result.update({
            "log_spread_slope_per_step": slope,
            "log_spread_slope_per_step_second_half": late,
            "fraction_of_steps_decreasing": float(np.mean(np.diff(log_s) < 0)),
            "approaching_one": bool(s[-1] < s[0] and late <= 0),
            "approaching_one_rule": "last < first and the second-half slope of "
                                    "log spread <= 0",
        })
    return result


def _defect(arr: dict[str, Any]) -> dict[str, Any] | None:
    if "cos_wg" not in arr:
        return None
    cos = np.abs(arr["cos_wg"])
    with np.errstate(all="ignore"):
        per_layer = np.nanmax(np.where(np.isfinite(cos), cos, np.nan), axis=0)
    per = {str(layer): (None if not np.isfinite(v) else float(v))
           for layer, v in zip(arr["layers"], per_layer, strict=True)}
    finite = per_layer[np.isfinite(per_layer)]
    if finite.size == 0:
        return {"per_layer_max_abs_cos": per, "max_abs_cos": None}
    return {
        "max_abs_cos": float(finite.max()),
        "median_of_layer_max_abs_cos": float(np.median(finite)),
        "worst_layer": str(arr["layers"][int(np.nanargmax(per_layer))]),
        "per_layer_max_abs_cos": per,
    }


def _critical(arr: dict[str, Any], sweep: pd.DataFrame | None) -> dict[str, Any]:
    a0 = gradient_elr.raw(1.0, arr["grad_norm"][0], np.sqrt(arr["sigma2"][0]))
    result: dict[str, Any] = {"critical_lr_step0": critical_lr_of(a0),
                              "lr_step0": float(arr["lr"][0])}
    if sweep is None:
        return result
    ok = sweep[np.isfinite(sweep["spread_measured"])]
    if ok.empty:
        result["sweep"] = {"note": "every measured spread of the sweep was non-finite"}
        return result
    best = ok.loc[ok["spread_measured"].idxmin()]
    best_pred = sweep.loc[sweep["spread_predicted"].idxmin()]
    predicted = float(sweep["critical_lr_predicted"].iloc[0]) \
        if "critical_lr_predicted" in sweep else result["critical_lr_step0"]
    result["sweep"] = {
        "lrs": int(len(sweep)),
        "lr_range": [float(sweep["lr"].min()), float(sweep["lr"].max())],
        "critical_lr_predicted": predicted,
        "critical_lr_bruteforce": float(best["lr"]),
        "bruteforce_over_predicted": float(best["lr"]) / predicted,
        "min_spread_measured": float(best["spread_measured"]),
        "min_spread_predicted": float(best_pred["spread_predicted"]),
        "lr_grid_ratio": float((sweep["lr"].max() / sweep["lr"].min())
                               ** (1 / max(1, len(sweep) - 1))),
    }
    return result


def compare_run(
    steps_df: pd.DataFrame, config: Any = None, *, sweep: pd.DataFrame | None = None
) -> dict[str, Any]:
    """Theory-vs-measurement report (a JSON-serializable dict) for one run's table.

    ``config`` is a :class:`~normdyn.validate.runs.RunConfig`, its ``resolved()`` dict
    or a loaded ``config.json``; it selects the norm model (optimizer, momentum,
    weight decay).  ``sweep`` is the optional :func:`one_step_lr_sweep` frame.
    """
    cfg = _config_dict(config)
    arr = measured_arrays(steps_df)
    report: dict[str, Any] = {
        "run": {
            "steps_recorded": int(steps_df["step"].nunique()),
            "steps_compared": int(len(arr["steps"])),
            "non_finite_from_step": arr["truncated_at"],
            "layers": len(arr["layers"]),
            "config": {k: cfg.get(k) for k in (
                "arch", "depth", "shortcuts", "norm", "data", "steps", "batch_size", "lr",
                "schedule", "optimizer", "momentum", "weight_decay", "drift",
                "drift_projected", "seed") if k in cfg},
        },
        "replay": _replay(arr, cfg),
        "replay_plain_sgd_model": (
            _replay(arr, {"optimizer": "sgd"}) if _norm_model(cfg)[1:] != (True, 0.0, 0.0)
            else None),
        "constant_c_prediction": _constant_c(arr, cfg),
        "elr_spread": _spread(arr, "elr"),
        "update_elr_spread": _spread(arr, "update_elr"),
        "scale_invariance_defect": _defect(arr),
        "critical_lr": _critical(arr, sweep),
    }
    return _clean(report)


def _clean(obj: Any) -> Any:
    """JSON-safe: numpy scalars to Python, non-finite floats to ``None``."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.bool_ | bool):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(float(obj)) else None
    return obj


# --------------------------------------------------------------------------- output


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def _kv_table(rows: Sequence[tuple[str, Any]]) -> list[str]:
    lines = ["| quantity | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in rows]
    return lines


def to_markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown (numbers only; no verdict beyond the stated thresholds)."""
    run = report["run"]
    lines = ["# normdyn validate: theory against measurement", ""]
    cfg = run.get("config", {})
    lines.append("Run: " + ", ".join(f"{k}={_fmt(v)}" for k, v in cfg.items()) + ".")
    lines.append(f"Steps recorded: {run['steps_recorded']} (compared: "
                 f"{run['steps_compared']}); scale-invariant layers: {run['layers']}.")
    if run.get("non_finite_from_step") is not None:
        lines.append(f"Non-finite norms from step {run['non_finite_from_step']} on; "
                     "later steps are not compared.")
    rp = report["replay"]
    lines += ["", "## 1. Replay of the measured base gradients", "",
              f"Model: {rp['model']} (applicable: {_fmt(rp['applicable'])}).  Measured "
              "c_t = |grad|*|w| and lr_t fed into the discrete model from the measured "
              "sigma2_0; relative error of the predicted sigma2_t.", ""]
    lines += _kv_table([
        ("steps replayed", rp.get("steps_replayed")),
        ("max relative error", rp.get("max_rel_error")),
        ("median relative error", rp.get("median_rel_error")),
        ("max relative error per step", rp.get("max_rel_error_per_step")),
        ("worst layer", rp.get("worst_layer")),
        ("float32 threshold", rp.get("float32_threshold")),
        ("threshold rule", rp.get("float32_threshold_rule")),
        ("float32 level", rp.get("float32_level")),
    ])
    plain = report.get("replay_plain_sgd_model")
    if plain:
        lines += ["", f"For contrast, the plain SGD map (momentum and decay ignored): max "
                      f"relative error {_fmt(plain.get('max_rel_error'))}, median "
                      f"{_fmt(plain.get('median_rel_error'))}."]
    cc = report["constant_c_prediction"]
    lines += ["", "## 2. Constant-c prediction", "",
              f"c frozen at step {cc['c_from_step']}, actual lr_t; model: {cc['model']}.", "",
              "| step | max rel. error | median rel. error |", "|---|---|---|"]
    for step, v in cc.get("at_steps", {}).items():
        lines.append(f"| {step} | {_fmt(v['max_rel_error'])} | {_fmt(v['median_rel_error'])} |")
    for title, key in (("3. ELR spread max/min over layers", "elr_spread"),
                       ("3b. Update-ELR spread", "update_elr_spread")):
        sp_ = report.get(key)
        lines += ["", f"## {title}", ""]
        if not sp_:
            lines.append("Not available.")
            continue
        lines += _kv_table([(k, v) for k, v in sp_.items()])
    d = report.get("scale_invariance_defect")
    lines += ["", "## Scale-invariance defect max |cos(w, grad w)|", ""]
    if not d:
        lines.append("Not available.")
    else:
        lines += _kv_table([("max over layers", d.get("max_abs_cos")),
                            ("median of per-layer maxima", d.get("median_of_layer_max_abs_cos")),
                            ("worst layer", d.get("worst_layer"))])
    cr = report["critical_lr"]
    lines += ["", "## 4. Critical learning rate at step 0", ""]
    lines += _kv_table([("critical lr from measured step-0 norms", cr["critical_lr_step0"]),
                        ("lr at step 0", cr["lr_step0"])]
                       + [(f"sweep: {k}", v) for k, v in cr.get("sweep", {}).items()])
    return "\n".join(lines) + "\n"


def write_report(report: Mapping[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` into ``out_dir``; return both paths."""
    out_dir = Path(out_dir)
    return (atomic_write_json(out_dir / REPORT_JSON, _clean(dict(report))),
            atomic_write_text(out_dir / REPORT_MD, to_markdown(report)))
