r"""Model-side checks of the claims report: pure ``verdict_*(df) -> (verdict, evidence)``.

These grade whether *our model* agrees with a claim: the discrete and continuous
simulations, the drift (random-gradient) runs and the flip grid.  They feed a claim's
``theory`` field, and the verdict of the claims about the model itself (Lemmas 3.2,
3.4, 3.5, Thm. 3.6, Fig. 4).  They never grade a claim about trained networks; that
is :mod:`normdyn.measured`'s, from real runs only.

A verdict is one of ``confirmed``, ``refuted``, ``partly`` or ``not tested``
(:data:`VERDICTS`).  Each ``verdict_*`` function reads one figure CSV of
``normdyn figures`` (``<out>/figNN_*_<profile>.csv``) as a frame and grades it against
the thresholds of :mod:`normdyn.thresholds`; a missing frame or one without the
needed columns gives ``not tested``.  The formulas a verdict compares with come from
:mod:`normdyn.theory.numeric` only.

These names are re-exported by :mod:`normdyn.report`, the public entry of the report.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from normdyn.estimates import CONFIRMED, NOT_TESTED, PARTLY, REFUTED, VERDICTS
from normdyn.thresholds import (
    CRITICAL_CONFIRM_DECADES,
    CRITICAL_MONOTONE_SLACK,
    CRITICAL_REFUTE_DECADES,
    FLIP_BOUNDARY,
    FLOAT_SLACK,
    MOMENTUM_EARLY_MIN,
    RATIO_CONFIRM,
    RATIO_WINDOW,
    ROUNDING_ULPS,
    UGROWTH_CONFIRM,
    UGROWTH_PARTLY,
    WARMUP_EARLY_STEPS,
    WD_CONFIRM,
    WD_REFUTE,
)

__all__ = [
    "CONFIRMED", "REFUTED", "PARTLY", "NOT_TESTED", "VERDICTS", "Verdict",
    # one model-side check per figure claim
    "verdict_ratio_real", "verdict_ratio_sim", "verdict_rate_sim",
    "verdict_discrete_vs_continuous", "verdict_critical_lr", "verdict_warmup",
    "verdict_momentum_spread", "verdict_u_growth", "verdict_weight_decay",
    "verdict_flip_condition", "verdict_flip_once",
]

#: ``(verdict, evidence)``.
Verdict = tuple[str, str]

# ----------------------------------------------------------------------------- helpers


def _missing(df: pd.DataFrame | None, columns: Iterable[str], what: str) -> Verdict | None:
    if df is None:
        return NOT_TESTED, f"{what}: no measurement"
    lacking = [c for c in columns if c not in df.columns]
    if lacking:
        return NOT_TESTED, f"{what}: table lacks columns {lacking}"
    if df.empty:
        return NOT_TESTED, f"{what}: table is empty"
    return None


def _grade(value: float, confirm: float, partly: float, *, lower_is_better: bool = True) -> str:
    if not np.isfinite(value):
        return NOT_TESTED
    if lower_is_better:
        return CONFIRMED if value <= confirm else PARTLY if value <= partly else REFUTED
    return CONFIRMED if value >= confirm else PARTLY if value >= partly else REFUTED


def _worst(verdicts: Sequence[str]) -> str:
    """All confirmed -> confirmed; all refuted -> refuted; otherwise partly."""
    tested = [v for v in verdicts if v != NOT_TESTED]
    if not tested:
        return NOT_TESTED
    if all(v == CONFIRMED for v in tested):
        return CONFIRMED
    if all(v == REFUTED for v in tested):
        return REFUTED
    return PARTLY


def _spread_by_step(df: pd.DataFrame, value: str, keys: Sequence[str]) -> pd.DataFrame:
    """max/min of ``value`` over layers per (keys..., step)."""
    g = df[df[value] > 0].groupby([*keys, "step"])[value]
    out = (g.max() / g.min()).rename("spread").reset_index()
    return out


def _log_slope(x: np.ndarray, y: np.ndarray) -> float:
    if x.size < 2 or np.ptp(x) == 0:
        return float("nan")
    return float(np.polyfit(x, y, 1)[0])


def _fmt(x: float, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "nan"
    return f"{x:.{digits}g}"


# ----------------------------------------------------------------------------- verdicts



def verdict_ratio_real(df: pd.DataFrame | None, what: str = "fig03") -> Verdict:
    """fig02/fig03: does the layerwise ELR spread of a real run shrink at constant lr?

    Per run (``affine``, ``seed``) the geometric-mean spread of the first and last
    ``RATIO_WINDOW`` of the steps give ``r = log S_end / log S_start``.
    All runs ``r <= RATIO_CONFIRM``: confirmed; all ``r < 1``: partly (shrinking,
    slowly); some ``r >= 1``: partly; all ``r >= 1``: refuted.
    """
    miss = _missing(df, ("step", "layer", "elr"), what)
    if miss:
        return miss
    keys = [k for k in ("affine", "seed", "lr") if k in df.columns]
    spread = _spread_by_step(df, "elr", keys)
    results = []
    for key, g in spread.groupby(keys) if keys else [((), spread)]:
        g = g.sort_values("step")
        n = max(1, int(round(RATIO_WINDOW * len(g))))
        s0 = float(np.exp(np.log(g["spread"].iloc[:n]).mean()))
        s1 = float(np.exp(np.log(g["spread"].iloc[-n:]).mean()))
        r = math.log(s1) / math.log(s0) if s0 > 1 else float("nan")
        results.append((key, s0, s1, r))
    rs = np.array([r for *_, r in results])
    if not np.isfinite(rs).any():
        return NOT_TESTED, f"{what}: initial spread is 1; nothing to converge"
    rs = rs[np.isfinite(rs)]
    if np.all(rs <= RATIO_CONFIRM):
        verdict = CONFIRMED
    elif np.all(rs >= 1):
        verdict = REFUTED
    else:
        verdict = PARTLY
    detail = ", ".join(f"{_label(keys, k)}: {_fmt(s0)} -> {_fmt(s1)} (r={_fmt(r, 2)})"
                       for k, s0, s1, r in results)
    return verdict, (f"{what} spread start -> end, r = log S_end/log S_start "
                     f"(confirm <= {RATIO_CONFIRM}): {detail}")


def _label(keys: Sequence[str], key: Any) -> str:
    key = key if isinstance(key, tuple) else (key,)
    return ",".join(f"{k}={v}" for k, v in zip(keys, key, strict=False)) or "run"


def _discrete(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["model"] == "discrete"] if "model" in df.columns else df


def verdict_ratio_sim(df: pd.DataFrame | None) -> Verdict:
    """fig04: in the discrete model the spread never grows and falls towards 1, every lr.

    Confirmed iff for every lr the spread is non-increasing from step to step (relative
    slack ``FLOAT_SLACK``) and the last spread is below the first (or already 1).
    Refuted if it grows for every lr; partly otherwise.
    """
    miss = _missing(df, ("lr", "step", "layer", "elr"), "fig04")
    if miss:
        return miss
    spread = _spread_by_step(_discrete(df), "elr", ["lr"])
    ok, detail = [], []
    for lr, g in spread.groupby("lr"):
        s = g.sort_values("step")["spread"].to_numpy()
        mono = bool(np.all(s[1:] <= s[:-1] * (1 + FLOAT_SLACK)))
        falls = bool(s[-1] < s[0] or s[0] <= 1 + FLOAT_SLACK)
        ok.append(mono and falls)
        detail.append(f"lr={_fmt(lr)}: {_fmt(s[0])} -> {_fmt(s[-1])}"
                      + ("" if mono else " (grows somewhere)"))
    verdict = CONFIRMED if all(ok) else REFUTED if not any(ok) else PARTLY
    return verdict, f"discrete-model spread, step {int(spread.step.min())} -> " \
                    f"{int(spread.step.max())}: " + ", ".join(detail)


def verdict_rate_sim(df: pd.DataFrame | None) -> Verdict:
    """fig04, Thm 3.6: ``S_t^2 - 1 <= D_1/(u_min,0 + 2t)`` at every recorded ``t >= 1``.

    ``u = E^{-2}``; ``D_1`` is the range of ``u`` over layers after step 1 and
    ``u_min,0`` the smallest initial ``u``.  Needs steps 0 and 1 recorded.  Confirmed if
    the bound holds (relative slack ``FLOAT_SLACK``) for every lr; the fitted
    late-time slope of ``log(S^2-1)`` against ``log t`` is reported too.
    """
    miss = _missing(df, ("lr", "step", "layer", "elr"), "fig04")
    if miss:
        return miss
    d = _discrete(df)
    held, detail = [], []
    for lr, g in d.groupby("lr"):
        u = g.assign(u=g["elr"] ** -2.0).pivot_table(index="step", columns="layer",
                                                      values="u")
        if 0 not in u.index or 1 not in u.index:
            return NOT_TESTED, "fig04: steps 0 and 1 are not both recorded"
        u_min0 = float(u.loc[0].min())
        d1 = float(u.loc[1].max() - u.loc[1].min())
        t = u.index.to_numpy(dtype=float)
        s2m1 = (u.max(axis=1) / u.min(axis=1) - 1).to_numpy()
        mask = t >= 1
        bound = d1 / (u_min0 + 2 * t[mask])
        held.append(bool(np.all(s2m1[mask] <= bound * (1 + FLOAT_SLACK) + 1e-15)))
        late = (t >= max(2.0, t.max() / 4)) & (s2m1 > 0)
        slope = _log_slope(np.log(t[late]), np.log(s2m1[late]))
        detail.append(f"lr={_fmt(lr)}: bound {'holds' if held[-1] else 'violated'}, "
                      f"late slope {_fmt(slope, 2)}")
    verdict = CONFIRMED if all(held) else REFUTED if not any(held) else PARTLY
    return verdict, "S_t^2-1 <= D_1/(u_min0+2t): " + "; ".join(detail)


def verdict_discrete_vs_continuous(df: pd.DataFrame | None) -> Verdict:
    """fig04: the discrete ELR never exceeds the gradient-flow ELR from the same start.

    Also reports the largest gap ``u_disc - u_cont`` against
    :func:`~normdyn.theory.numeric.gap_bound`.  Confirmed iff ``E_disc <= E_cont`` and
    the gap is within the bound everywhere (relative slack ``FLOAT_SLACK``).
    """
    miss = _missing(df, ("model", "lr", "step", "layer", "elr"), "fig04")
    if miss:
        return miss
    from normdyn.theory.numeric import gap_bound

    wide = df.pivot_table(index=["lr", "layer", "step"], columns="model", values="elr")
    if not {"discrete", "continuous"} <= set(wide.columns):
        return NOT_TESTED, "fig04: needs both the discrete and the continuous model"
    wide = wide.dropna().reset_index()
    below = bool(np.all(wide["discrete"] <= wide["continuous"] * (1 + FLOAT_SLACK)))
    start = wide[wide["step"] == 0].set_index(["lr", "layer"])["discrete"]
    later = wide[wide["step"] >= 1].copy()
    u0 = start.reindex(pd.MultiIndex.from_frame(later[["lr", "layer"]])).to_numpy() ** -2.0
    gap = later["discrete"].to_numpy() ** -2.0 - later["continuous"].to_numpy() ** -2.0
    ok_rows = np.isfinite(u0)
    bound = np.full(gap.shape, np.nan)
    if ok_rows.any():
        bound[ok_rows] = gap_bound(u0[ok_rows], later["step"].to_numpy(float)[ok_rows])
    # Rounding: u = E^-2 of an ELR iterated t times carries a relative error ~ t*eps.
    u_cont = later["continuous"].to_numpy() ** -2.0
    slack = ROUNDING_ULPS * np.finfo(float).eps * (later["step"].to_numpy(float) + 1) * u_cont
    within = bool(np.all(gap[ok_rows] <= bound[ok_rows] * (1 + FLOAT_SLACK) + slack[ok_rows]))
    ratio = float(np.nanmax(gap[ok_rows] / bound[ok_rows])) if ok_rows.any() else float("nan")
    verdict = CONFIRMED if below and within else REFUTED if not below else PARTLY
    return verdict, (f"E_disc <= E_cont at all {len(wide)} points: {below}; largest "
                     f"(u_disc-u_cont)/gap_bound = {_fmt(ratio)} (<= 1 expected)")


def verdict_critical_lr(df: pd.DataFrame | None, source: str = "simulated") -> Verdict:
    """fig05: the lr that minimizes the simulated spread sits at the predicted eta*.

    Per curve (one per ``critical_lr`` value): ``delta = |log10(argmin lr / eta*)|``.
    Confirmed if ``delta <= max(CRITICAL_CONFIRM_DECADES, one grid step)`` and the
    spread does not fall for lrs beyond the argmin ("beyond it disparities widen");
    partly if ``delta <= CRITICAL_REFUTE_DECADES`` or only the monotonicity fails;
    refuted otherwise.  Uses ``spread`` (after the figure's steps).  When the table has
    a ``source`` column only the rows of ``source`` are used (``simulated``: the
    discrete model; ``real_one_step``: one measured SGD step of a real network).
    """
    miss = _missing(df, ("lr", "spread", "critical_lr"), "fig05")
    if miss:
        return miss
    if "source" in df.columns:
        df = df[df["source"] == source]
        if df.empty:
            return NOT_TESTED, f"fig05: no {source} rows"
    verdicts, detail = [], []
    for eta_star, g in df.groupby("critical_lr"):
        g = g.groupby("lr", as_index=False)["spread"].mean().sort_values("lr")
        lr = g["lr"].to_numpy()
        s = g["spread"].to_numpy()
        i = int(np.nanargmin(s))
        delta = abs(math.log10(lr[i] / eta_star))
        step = float(np.max(np.diff(np.log10(lr)))) if lr.size > 1 else 0.0
        tol = max(CRITICAL_CONFIRM_DECADES, step)
        beyond = s[i:]
        falls = np.sum(beyond[1:] < beyond[:-1] * (1 - FLOAT_SLACK))
        mono = falls <= CRITICAL_MONOTONE_SLACK * max(1, beyond.size - 1)
        if delta <= tol:
            v = CONFIRMED if mono else PARTLY
        elif delta <= CRITICAL_REFUTE_DECADES:
            v = PARTLY
        else:
            v = REFUTED
        verdicts.append(v)
        detail.append(f"eta*={_fmt(eta_star)}, argmin lr={_fmt(lr[i])} "
                      f"({_fmt(delta, 2)} decades; tolerance {_fmt(tol, 2)}), min spread "
                      f"{_fmt(s[i])}, spread beyond argmin "
                      + ("non-decreasing" if mono else f"falls at {falls} grid steps"))
    return _worst(verdicts), "; ".join(detail)


def verdict_warmup(df: pd.DataFrame | None, source: str) -> Verdict:
    """fig06: critical-lr warm-up gives the lowest early spread of all schedules.

    For ``source`` (``simulated`` or ``real``): the mean ``log(spread)`` over steps
    ``1..WARMUP_EARLY_STEPS`` (mean over seeds) per schedule.  Lowest for ``critical``:
    confirmed; lower than ``none`` but not the lowest: partly; else refuted.
    """
    miss = _missing(df, ("source", "schedule", "step", "spread"), "fig06")
    if miss:
        return miss
    d = df[(df["source"] == source) & (df["step"] >= 1) & (df["step"] <= WARMUP_EARLY_STEPS)]
    d = d[np.isfinite(d["spread"]) & (d["spread"] > 0)]
    if d.empty or "critical" not in set(d["schedule"]):
        return NOT_TESTED, f"fig06: no {source} rows with the critical warm-up"
    score = d.assign(log_spread=np.log(d["spread"])).groupby("schedule")["log_spread"].mean()
    best = score.idxmin()
    crit = score["critical"]
    if best == "critical":
        verdict = CONFIRMED
    elif "none" in score and crit < score["none"]:
        verdict = PARTLY
    else:
        verdict = REFUTED
    ranked = ", ".join(f"{k} {_fmt(math.exp(v))}" for k, v in score.sort_values().items())
    return verdict, (f"{source}: geometric-mean spread over steps 1..{WARMUP_EARLY_STEPS} "
                     f"(lowest first): {ranked}")



def verdict_momentum_spread(df: pd.DataFrame | None, source: str) -> Verdict:
    """fig08: with momentum the (update-ELR) spread is lower than without.

    For ``source``: the mean ``log(spread)`` of the largest momentum against momentum 0
    in two windows, *early* (steps ``1..max(MOMENTUM_EARLY_MIN, T*RATIO_WINDOW)``) and
    *late* (the second half of the steps).  Lower (by more than 1% in spread) in both:
    confirmed; in one: partly; in neither: refuted.
    """
    miss = _missing(df, ("source", "momentum", "step", "spread"), "fig08")
    if miss:
        return miss
    d = df[(df["source"] == source) & np.isfinite(df["spread"]) & (df["spread"] > 0)]
    if d.empty or d["momentum"].nunique() < 2 or 0 not in set(d["momentum"].round(12)):
        return NOT_TESTED, f"fig08: no {source} rows for momentum 0 and > 0"
    last = float(d["step"].max())
    windows = {
        "early": d[(d["step"] >= 1)
                   & (d["step"] <= max(MOMENTUM_EARLY_MIN, RATIO_WINDOW * last))],
        "late": d[d["step"] >= last / 2],
    }
    lower, shown = [], []
    for name, w in windows.items():
        per_step = w.groupby(["momentum", "seed", "step"] if "seed" in w else
                             ["momentum", "step"])["spread"].first().reset_index()
        score = per_step.assign(ls=np.log(per_step["spread"])).groupby("momentum")["ls"].mean()
        beta = float(score.index.max())
        base, with_m = float(score.loc[score.index.min()]), float(score.loc[beta])
        lower.append(with_m < base - 0.01)
        shown.append(f"{name}: " + ", ".join(f"beta={_fmt(b, 2)} {_fmt(math.exp(v))}"
                                              for b, v in score.items()))
    verdict = CONFIRMED if all(lower) else PARTLY if any(lower) else REFUTED
    return verdict, f"{source} geometric-mean update-ELR spread, " + "; ".join(shown)


def verdict_u_growth(df: pd.DataFrame | None) -> Verdict:
    """fig08 (drift simulation): ``u = E_update^{-2}`` grows by ``momentum_u_growth(beta)``.

    Least-squares slope of ``u`` over the second half of the steps, per layer and seed;
    median per momentum against :func:`~normdyn.theory.numeric.momentum_u_growth`.
    Worst relative error ``<= UGROWTH_CONFIRM``: confirmed; ``<= UGROWTH_PARTLY``:
    partly; else refuted.
    """
    miss = _missing(df, ("source", "momentum", "step", "layer", "update_elr"), "fig08")
    if miss:
        return miss
    from normdyn.theory.numeric import momentum_u_growth

    d = df[(df["source"] == "drift") & (df["update_elr"] > 0)]
    if d.empty:
        return NOT_TESTED, "fig08: no drift-simulation rows"
    errs, detail = [], []
    keys = ["momentum", "layer"] + (["seed"] if "seed" in d.columns else [])
    slopes: dict[float, list[float]] = {}
    for key, g in d.groupby(keys):
        g = g[g["step"] >= g["step"].max() / 2]
        slope = _log_slope(g["step"].to_numpy(float), g["update_elr"].to_numpy() ** -2.0)
        if np.isfinite(slope):
            slopes.setdefault(float(key[0]), []).append(slope)
    for beta, values in sorted(slopes.items()):
        measured = float(np.median(values))
        predicted = float(momentum_u_growth(beta))
        errs.append(abs(measured / predicted - 1))
        detail.append(f"beta={_fmt(beta, 2)}: {_fmt(measured, 4)} vs {_fmt(predicted, 4)}")
    if not errs:
        return NOT_TESTED, "fig08: no usable drift slopes"
    worst = max(errs)
    return _grade(worst, UGROWTH_CONFIRM, UGROWTH_PARTLY), (
        f"u growth per step, measured vs 2(1+b)/(1-b): {'; '.join(detail)}; worst "
        f"relative error {_fmt(worst, 2)} (confirm <= {UGROWTH_CONFIRM})")




def verdict_weight_decay(df: pd.DataFrame | None) -> Verdict:
    """fig11 (drift model): the equilibrium update ELR is ``sqrt(2 eta lam/(1+beta))``.

    Model side only: the ``drift`` rows (random tangent gradients).  Prediction from
    :func:`~normdyn.theory.numeric.momentum_equilibrium_update_elr_leading`; the median
    ``|measured/predicted - 1|`` per momentum group, and the *worst* group decides:
    ``<= WD_CONFIRM`` confirmed, ``<= WD_REFUTE`` partly, else refuted.  The
    ``drift_identity`` rows (``beta = 0``, projected: exact by Pythagoras) are identity
    checks of the simulator, reported apart and not graded as measurements.
    """
    cols = ("source", "lr", "weight_decay", "momentum", "measured_update_elr")
    miss = _missing(df, cols, "fig11")
    if miss:
        return miss
    from normdyn.theory.numeric import momentum_equilibrium_update_elr_leading as pred

    d = df[np.isfinite(df["measured_update_elr"]) & (df["weight_decay"] > 0)
           & df["source"].isin(["drift", "drift_identity"])]
    if d.empty:
        return NOT_TESTED, "fig11: no drift runs with weight decay"
    predicted = pred(d["lr"].to_numpy(float), d["weight_decay"].to_numpy(float),
                     d["momentum"].to_numpy(float))
    d = d.assign(err=np.abs(d["measured_update_elr"].to_numpy() / predicted - 1))
    identity = d[d["source"] == "drift_identity"]
    by = d[d["source"] == "drift"].groupby("momentum")["err"].median()
    text = ""
    if not identity.empty:
        text = f"identity checks (beta=0, projected): max error {_fmt(identity['err'].max())}; "
    if by.empty:
        return NOT_TESTED, text + "fig11: no drift rows with momentum > 0"
    worst = float(by.max())
    shown = ", ".join(f"beta={k:g}: {_fmt(v, 2)}" for k, v in by.items())
    return _grade(worst, WD_CONFIRM, WD_REFUTE), (
        text + f"drift, median |measured/sqrt(2 eta lam/(1+beta)) - 1| per beta: {shown}; "
        f"worst {_fmt(worst, 2)} (confirm <= {WD_CONFIRM}, partly <= {WD_REFUTE})")


def verdict_flip_condition(df: pd.DataFrame | None) -> Verdict:
    """fig12, Lemma 3.4: the first step flips the order iff ``E_l E_k > 1``.

    Agreement of ``flipped`` with ``predicted_flip`` over the grid (points with
    ``|log(E_l E_k)| < FLIP_BOUNDARY`` skipped) and the largest one-step change of
    ``|log rho|``.  Agreement 1 and no growth: confirmed; agreement >= 0.99: partly;
    else refuted.
    """
    miss = _missing(df, ("product", "predicted_flip", "flipped"), "fig12")
    if miss:
        return miss
    d = df[np.abs(np.log(df["product"])) >= FLIP_BOUNDARY]
    agree = float((d["flipped"].astype(int) == d["predicted_flip"].astype(int)).mean())
    growth = float(df["log_ratio_change"].max()) if "log_ratio_change" in df else float("nan")
    no_growth = not np.isfinite(growth) or growth <= 1e-12
    verdict = (CONFIRMED if agree == 1.0 and no_growth
               else PARTLY if agree >= 0.99 else REFUTED)
    return verdict, (f"flip iff E_l E_k > 1 at {agree:.4%} of {len(d)} grid points "
                     f"(boundary skipped); max one-step change of |log rho| = "
                     f"{_fmt(growth)}")


def verdict_flip_once(df: pd.DataFrame | None) -> Verdict:
    """fig12, Lemma 3.5: no pair flips more than once at constant lr (max ``n_flips`` <= 1)."""
    miss = _missing(df, ("n_flips",), "fig12")
    if miss:
        return miss
    worst = int(df["n_flips"].max())
    steps = int(df["steps"].iloc[0]) if "steps" in df.columns else -1
    share = float((df["n_flips"] > 0).mean())
    return (CONFIRMED if worst <= 1 else REFUTED,
            f"max flips per pair over {steps} steps = {worst} ({len(df)} pairs, "
            f"{share:.1%} flip once)")
