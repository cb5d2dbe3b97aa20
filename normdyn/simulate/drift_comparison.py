r"""Where does the norm-level model hold?  Drift simulation against the model, side by side.

The norm-level model (THEORY §2, §5) tracks only :math:`\sigma^2_\ell` per layer.  The drift
simulator (:mod:`normdyn.simulate.drift`) moves actual weight vectors with random gradients
of the modeled norm and the exact ``torch.optim.SGD`` update, so it contains everything the
model leaves out:

* **radial noise** -- unprojected gradients have :math:`\cos(w,g)\sim N(0,1/e_\ell)`, so
  :math:`\sigma^2` random-walks around the model by :math:`\sim 2E/\sqrt{e_\ell}` per step;
* **momentum correlations** -- the model adds each gradient's *whole* displacement
  :math:`\eta g/(1-\beta)` at once and uses the *stationary* velocity norm
  :math:`\lVert v\rVert^2 = \lVert g\rVert^2/(1-\beta^2)`; the drift spreads the displacement
  over the following steps, starts from an empty buffer, and its velocity norm fluctuates
  with the random cross terms :math:`\langle g_s, g_{s'}\rangle \sim \lVert g\rVert^2/\sqrt{e}`;
* **the radial part of the update** -- the model fixes it by Pythagoras from its norm ratio
  (``update_elr_geometric``).  At equilibrium the radial parts of the accumulated past
  gradients cancel the decay term, so the measured step is nearly tangential.  An earlier
  version added the decay part :math:`\eta\lambda/(1-\beta)` orthogonally and overstated
  the update ELR (measured at :math:`\eta=0.1, \lambda=5\cdot10^{-3}, \beta=0.9`: drift
  0.02294, that version 0.02345, the geometric model 0.02291).

:func:`compare_drift_discrete` returns the relative errors per step over a grid of
:math:`\beta`, :math:`e_\ell`, projection and weight decay; :func:`summarize_comparison`
condenses them into a table; :func:`measure_u_growth` and :func:`measure_equilibrium`
measure the two momentum predictions of THEORY §5.

The norm-level model is :func:`normdyn.simulate.discrete.simulate_discrete`, or on request
:func:`norm_level_model`, a plain loop over ``norm_step.raw`` / ``momentum_norm_step.raw``
that cross-checks it (``df.attrs["model"]`` says which).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.optimize import brentq

from normdyn._checks import check_in_range, check_int, check_nonnegative, check_positive
from normdyn.simulate.discrete import simulate_discrete
from normdyn.simulate.discrete import update_elr as model_update_elr
from normdyn.simulate.drift import _elements, _per_layer, _seeds, simulate_drift
from normdyn.theory.numeric import (
    elr,
    momentum_equilibrium_update_elr,
    momentum_equilibrium_update_elr_leading,
    momentum_norm_step,
    momentum_u_growth,
    norm_step,
    weight_decay_equilibrium_elr,
    weight_decay_equilibrium_update_elr,
)

__all__ = [
    "COMPARISON_COLUMNS",
    "norm_level_model",
    "compare_drift_discrete",
    "summarize_comparison",
    "measure_u_growth",
    "measure_equilibrium",
]

#: Columns of :func:`compare_drift_discrete`, in order.
COMPARISON_COLUMNS: tuple[str, ...] = (
    "step", "beta", "elements", "projected", "weight_decay", "seed", "sigma2_drift",
    "sigma2_model", "rel_err_sigma2", "update_elr_drift", "update_elr_model",
    "rel_err_update_elr",
)


# ----------------------------------------------------------------------------- the model


def norm_level_model(sigma2_0: Any, c: Any, lr: float, steps: int, *, momentum: float = 0.0,
                     weight_decay: float = 0.0) -> pd.DataFrame:
    r"""The norm-level model as a plain loop: ``sigma2`` before each step and the update ELR.

    :math:`\sigma^2_{t+1}` = ``norm_step.raw(sigma2, lr, c)`` for plain SGD and
    ``momentum_norm_step.raw(sigma2, lr, c, weight_decay, momentum)`` otherwise; the update
    ELR is the discrete model's :func:`normdyn.simulate.discrete.update_elr` (stationary
    velocity plus the radial part implied by the norm ratio).  Rows
    ``step = 0..steps`` (``steps + 1`` states) for each layer of ``sigma2_0``/``c``
    (scalars or ``(L,)``); ``update_elr`` of the last row is that of a step not taken.
    """
    steps = check_int("steps", steps, minimum=0)
    beta = float(check_in_range("momentum", momentum, 0.0, 1.0))
    lam = float(check_nonnegative("weight_decay", weight_decay))
    eta = float(check_positive("lr", lr))
    s0 = np.atleast_1d(check_positive("sigma2_0", sigma2_0)).astype(np.float64)
    cc = np.atleast_1d(check_nonnegative("c", c)).astype(np.float64)
    s0, cc = np.broadcast_arrays(s0, cc)
    sig = np.empty((steps + 1, s0.size))
    sig[0] = s0
    plain = beta == 0.0 and lam == 0.0
    for t in range(steps):
        sig[t + 1] = (norm_step.raw(sig[t], eta, cc) if plain
                      else momentum_norm_step.raw(sig[t], eta, cc, lam, beta))
    upd = model_update_elr(elr.raw(eta, cc, sig), eta, beta, lam)
    n_layers = s0.size
    return pd.DataFrame({
        "step": np.repeat(np.arange(steps + 1), n_layers),
        "layer": np.tile(np.arange(n_layers), steps + 1),
        "sigma2": sig.reshape(-1),
        "update_elr": np.broadcast_to(upd, sig.shape).reshape(-1),
    })


def _model_frame(sigma2_0: np.ndarray, c: np.ndarray, lr: float, steps: int, beta: float,
                 lam: float, model: str) -> pd.DataFrame:
    """Columns step, layer, sigma2, update_elr of the chosen model; ``step`` = steps taken."""
    if model == "norm_step":
        return norm_level_model(sigma2_0, c, lr, steps, momentum=beta, weight_decay=lam)
    # The numpy engine gives the numba kernel's values without its compile time.
    frame = simulate_discrete(sigma2_0, c, lr, steps, momentum=beta, weight_decay=lam,
                              engine="numpy")
    frame = frame[["step", "layer", "sigma2", "update_elr"]].copy()
    first = frame[frame["step"] == frame["step"].min()].sort_values("layer")["sigma2"].to_numpy()
    if frame["step"].min() != 0 or not np.allclose(first, sigma2_0, rtol=1e-12, atol=0):
        raise ValueError("simulate_discrete does not start at sigma2_0 at step 0; cannot align")
    return frame


def _resolve_model(model: str) -> str:
    if model not in ("auto", "discrete", "norm_step"):
        raise ValueError(f"model must be 'auto', 'discrete' or 'norm_step', got {model!r}")
    return "discrete" if model == "auto" else model


# ----------------------------------------------------------------------------- comparison


def _as_tuple(name: str, value: Any) -> tuple:
    out = (value,) if np.ndim(value) == 0 else tuple(value)
    if not out:
        raise ValueError(f"{name} must not be empty")
    return out


def compare_drift_discrete(
    *,
    betas: Iterable[float] = (0.0, 0.5, 0.9),
    elements: Iterable[int] = (10, 100, 1000, 10000),
    projected: Iterable[bool] = (True, False),
    weight_decays: Iterable[float] = (0.0, 5e-4, 5e-3),
    lr: float = 0.1,
    sigma2_0: float = 1.0,
    c: float = 1.0,
    steps: int = 1000,
    seeds: int | Sequence[int] = (0, 1, 2, 3),
    record_steps: Iterable[int] | None = None,
    model: str = "auto",
) -> pd.DataFrame:
    r"""Drift vs norm-level model from the same state, for every grid point; relative errors per step.

    Every grid point ``(beta, weight_decay, projected)`` is one drift run whose layers are
    the ``elements`` grid (same ``sigma2_0``, ``c``, ``lr``; layers are independent at a
    constant lr), and one model run from the same ``sigma2_0``.  ``step`` counts steps
    taken: ``sigma2_*`` is :math:`\lVert w\rVert^2` after ``step`` steps (``step = 0`` is
    the shared initial state) and ``update_elr_*`` that of step ``step`` (the next one).
    ``rel_err_x = x_drift / x_model - 1``.  ``record_steps`` keeps only those steps
    (default: ``0..steps``).  ``model``: ``"auto"`` or ``"discrete"`` (the discrete
    simulator) or ``"norm_step"`` (:func:`norm_level_model`); the choice is in
    ``frame.attrs["model"]``.

    Columns: :data:`COMPARISON_COLUMNS`.
    """
    steps = check_int("steps", steps, minimum=0)
    betas = tuple(float(check_in_range("betas", b, 0.0, 1.0)) for b in _as_tuple("betas", betas))
    wds = tuple(float(check_nonnegative("weight_decays", w))
                for w in _as_tuple("weight_decays", weight_decays))
    proj = _as_tuple("projected", projected)
    for p in proj:
        if not isinstance(p, (bool, np.bool_)):
            raise ValueError(f"projected must contain only True/False, got {p!r}")
    elem = _elements(list(_as_tuple("elements", elements)))
    seed_list = _seeds(seeds)
    lr = float(check_positive("lr", lr))
    s0 = _per_layer("sigma2_0", sigma2_0, elem.size, check_positive)
    cc = _per_layer("c", c, elem.size, check_nonnegative)
    keep = None if record_steps is None else np.array(sorted({
        check_int("record_steps", s, minimum=0)
        for s in record_steps}))
    if keep is not None and keep.size and keep.max() > steps:
        raise ValueError(f"record_steps must be <= steps={steps}, got {keep.max()}")
    which = _resolve_model(model)

    frames = []
    for beta in betas:
        for lam in wds:
            mod = _model_frame(s0, cc, lr, steps, beta, lam, which)
            mod = mod.rename(columns={"sigma2": "sigma2_model", "update_elr": "update_elr_model"})
            for p in proj:
                drift = simulate_drift(s0, cc, elem, lr, steps + 1, momentum=beta,
                                       weight_decay=lam, projected=bool(p), seed=seed_list)
                drift = drift[["step", "layer", "seed", "elements", "sigma2", "update_elr"]]
                if keep is not None:
                    drift = drift[drift["step"].isin(keep)]
                merged = drift.merge(mod, on=["step", "layer"], how="left", validate="m:1")
                merged = merged.rename(columns={"sigma2": "sigma2_drift",
                                                "update_elr": "update_elr_drift"})
                merged["beta"] = beta
                merged["weight_decay"] = lam
                merged["projected"] = bool(p)
                frames.append(merged)
    out = pd.concat(frames, ignore_index=True)
    out["rel_err_sigma2"] = out["sigma2_drift"] / out["sigma2_model"] - 1.0
    out["rel_err_update_elr"] = out["update_elr_drift"] / out["update_elr_model"] - 1.0
    out = out[list(COMPARISON_COLUMNS)].sort_values(
        ["weight_decay", "beta", "elements", "projected", "seed", "step"],
        ascending=[True, True, True, False, True, True], ignore_index=True)
    out.attrs.update(model=which, lr=lr, sigma2_0=float(s0[0]), c=float(cc[0]), steps=steps)
    return out


def summarize_comparison(frame: pd.DataFrame, at_steps: Iterable[int] = (10, 100, 1000)
                         ) -> pd.DataFrame:
    """Wide table of a :func:`compare_drift_discrete` frame at ``at_steps``.

    One row per ``(weight_decay, beta, elements, projected)``; columns
    ``<quantity>_<stat>@<step>`` with quantity ``sigma2``/``update_elr`` and stat ``abs``
    (mean over seeds of ``|rel_err|``) or ``bias`` (mean signed ``rel_err``).
    """
    at = [int(s) for s in at_steps]
    sub = frame[frame["step"].isin(at)]
    missing = sorted(set(at) - set(sub["step"].unique()))
    if missing:
        raise ValueError(f"at_steps {missing} are not in the comparison frame")
    keys = ["weight_decay", "beta", "elements", "projected"]
    parts = {}
    for q in ("sigma2", "update_elr"):
        err = sub[f"rel_err_{q}"]
        g = sub.assign(_abs=err.abs(), _sig=err).groupby([*keys, "step"])
        parts[f"{q}_abs"] = g["_abs"].mean().unstack("step")
        parts[f"{q}_bias"] = g["_sig"].mean().unstack("step")
    cols = {}
    for name, table in parts.items():
        for s in at:
            cols[f"{name}@{s}"] = table[s]
    wide = pd.DataFrame(cols).reset_index()
    return wide.sort_values(keys, ascending=[True, True, True, False], ignore_index=True)


# ----------------------------------------------------------------------------- u growth


def _slopes(series: np.ndarray) -> np.ndarray:
    """Least-squares slope of every column of ``series`` (rows = consecutive steps)."""
    x = np.arange(series.shape[0], dtype=np.float64)
    x -= x.mean()
    return (x[:, None] * (series - series.mean(axis=0))).sum(axis=0) / (x * x).sum()


def measure_u_growth(
    beta: float | Iterable[float],
    *,
    elements: int = 10000,
    layers: int = 2,
    lr: float = 0.1,
    c: float = 1.0,
    sigma2_0: float = 1.0,
    steps: int = 3000,
    fit_start: int = 1000,
    projected: bool = True,
    seeds: int | Sequence[int] = (0, 1, 2, 3),
) -> pd.DataFrame:
    r"""Measured per-step growth of :math:`u = E_u^{-2}` (update ELR) against ``momentum_u_growth``.

    Runs the drift model with ``layers`` identical layers of ``elements`` elements, takes
    :math:`u_t` = ``update_elr**-2`` of each (seed, layer) series, and fits a least-squares
    line over steps ``[fit_start, steps)``.  One row per ``beta`` with ``measured`` (mean
    slope over the series), ``stderr`` (their standard error), ``predicted``
    (:math:`2(1+\beta)/(1-\beta)`, ``momentum_u_growth``), ``model_window`` (the slope of
    the norm-level model's own :math:`u_t` over the same window; it differs from
    ``predicted`` by its :math:`O(1/u)` discrete corrections), and
    ``rel_err = measured/predicted - 1``.

    The slope approaches ``predicted`` from above as :math:`u` grows: the fit over a
    window at larger :math:`t` is closer (a correction :math:`\propto 1/t`).
    """
    betas = _as_tuple("beta", beta)
    steps = check_int("steps", steps, minimum=3)
    fit_start = check_int("fit_start", fit_start, minimum=0)
    if fit_start > steps - 2:
        raise ValueError(f"fit_start must be <= steps - 2 = {steps - 2}, got {fit_start}")
    layers = check_int("layers", layers, minimum=1)
    elements = check_int("elements", elements, minimum=1)
    rows = []
    for b in betas:
        b = float(check_in_range("beta", b, 0.0, 1.0))
        df = simulate_drift(sigma2_0, c, [elements] * layers, lr, steps, momentum=b,
                            projected=projected, seed=seeds)
        u = df.pivot_table(index="step", columns=["seed", "layer"], values="update_elr") ** -2.0
        slopes = _slopes(u.to_numpy()[fit_start:])
        mod = norm_level_model(sigma2_0, c, lr, steps - 1, momentum=b)
        u_mod = mod["update_elr"].to_numpy().reshape(steps, -1) ** -2.0
        predicted = float(momentum_u_growth(b))
        rows.append({
            "beta": b, "elements": elements, "projected": bool(projected), "lr": float(lr),
            "fit_start": fit_start, "fit_stop": steps, "series": slopes.size,
            "measured": float(slopes.mean()),
            "stderr": float(slopes.std(ddof=1) / math.sqrt(slopes.size)) if slopes.size > 1
            else float("nan"),
            "predicted": predicted,
            "model_window": float(_slopes(u_mod[fit_start:]).mean()),
            "rel_err": float(slopes.mean()) / predicted - 1.0,
        })
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- equilibrium


def _model_equilibrium_sigma2(eta: float, lam: float, beta: float, c: float) -> float:
    """Fixed point of ``momentum_norm_step`` (root of step(s) - s), found numerically."""
    def f(s: float) -> float:
        return float(momentum_norm_step.raw(s, eta, c, lam, beta)) - s

    lo = hi = max(c, 1e-12)
    while f(lo) <= 0:
        lo /= 4.0
    while f(hi) >= 0:
        hi *= 4.0
    return float(brentq(f, lo, hi, xtol=1e-300, rtol=4 * np.finfo(float).eps, maxiter=500))


def measure_equilibrium(
    eta: float,
    lam: float,
    beta: float,
    *,
    elements: int = 10000,
    layers: int = 2,
    c: float = 1.0,
    burn_in: int | None = None,
    window: int = 1000,
    projected: bool = True,
    seeds: int | Sequence[int] = (0, 1, 2, 3),
) -> pd.DataFrame:
    r"""Measured equilibrium update ELR of the drift model against the model's predictions.

    The drift starts at the model's equilibrium :math:`\sigma^{2*}` (the fixed point of
    ``momentum_norm_step``, found numerically), runs ``burn_in`` steps (default: 20 momentum
    time constants :math:`1/(1-\beta)` plus 3 relaxation times of the model's map, the
    latter taken from a numerical derivative of ``momentum_norm_step`` and capped at 5000),
    and then averages over ``window`` steps, all seeds and layers.  One row with

    * ``measured`` -- mean ``update_elr`` (the whole step, weight decay included) and
      ``stderr`` over the (seed, layer) series means;
    * ``measured_elr`` -- mean gradient ELR, and ``sigma2_ratio`` -- mean
      :math:`\sigma^2/\sigma^{2*}`;
    * ``model_exact`` (``momentum_equilibrium_update_elr``) and ``model_leading``
      (``momentum_equilibrium_update_elr_leading``, :math:`\sqrt{2\eta\lambda/(1+\beta)}`),
      with ``rel_err_exact`` and ``rel_err_leading``;
    * for ``beta == 0`` also ``wd_update_elr`` (``weight_decay_equilibrium_update_elr``,
      which *does* count the :math:`\eta\lambda w` part of the step) and ``wd_elr``
      (``weight_decay_equilibrium_elr``, the gradient ELR); NaN otherwise.
    """
    eta = float(check_positive("eta", eta))
    lam = float(check_positive("lam", lam))
    beta = float(check_in_range("beta", beta, 0.0, 1.0))
    c = float(check_positive("c", c))
    window = check_int("window", window, minimum=1)
    s_star = _model_equilibrium_sigma2(eta, lam, beta, c)
    if burn_in is None:
        h = 1e-6 * s_star
        slope = (momentum_norm_step.raw(s_star + h, eta, c, lam, beta)
                 - momentum_norm_step.raw(s_star - h, eta, c, lam, beta)) / (2 * h)
        relax = 1.0 / max(1.0 - float(slope), 1e-12)
        burn_in = int(math.ceil(20.0 / (1.0 - beta) + min(3.0 * relax, 5000.0)))
    burn_in = check_int("burn_in", burn_in, minimum=0)
    df = simulate_drift(s_star, c, [elements] * layers, eta, burn_in + window, momentum=beta,
                        weight_decay=lam, projected=projected, seed=seeds)
    win = df[df["step"] >= burn_in]
    per_series = win.groupby(["seed", "layer"])["update_elr"].mean().to_numpy()
    measured = float(per_series.mean())
    exact = float(momentum_equilibrium_update_elr(eta, lam, beta))
    leading = float(momentum_equilibrium_update_elr_leading(eta, lam, beta))
    return pd.DataFrame([{
        "eta": eta, "lam": lam, "beta": beta, "elements": elements, "projected": bool(projected),
        "burn_in": burn_in, "window": window, "measured": measured,
        "stderr": float(per_series.std(ddof=1) / math.sqrt(per_series.size))
        if per_series.size > 1 else float("nan"),
        "measured_elr": float(win["elr"].mean()),
        "sigma2_ratio": float((win["sigma2"] / s_star).mean()),
        "model_exact": exact, "model_leading": leading,
        "rel_err_exact": measured / exact - 1.0, "rel_err_leading": measured / leading - 1.0,
        "wd_update_elr": float(weight_decay_equilibrium_update_elr(eta, lam)) if beta == 0
        else float("nan"),
        "wd_elr": float(weight_decay_equilibrium_elr(eta, lam)) if beta == 0 else float("nan"),
    }])
