r"""The claims report: every claim of the paper and of the derivation, with a computed verdict.

Each row is one claim: the paper's (abstract, figure captions, Lemma 3.2, Def. 3.3 /
Lemma 3.4, Lemma 3.5, Thm. 3.6) and the derived ones (every claim of
:func:`normdyn.theory.run_claims`, the measured weight-decay equilibrium and the
measured momentum ``u``-growth).  A verdict is one of ``confirmed``, ``refuted``,
``partly`` or ``not tested`` and is *computed* in this run from

* the symbolic checks (:func:`normdyn.theory.run_claims`), and
* the figure CSVs of ``normdyn figures`` (``<out>/figNN_*_<profile>.csv``), through the
  small pure functions ``verdict_*(df) -> (verdict, evidence)`` below.  Each states its
  thresholds as module constants; a missing CSV or a CSV without the needed columns
  gives ``not tested``.

Several pieces of evidence for one claim are combined by :func:`combine`: *required*
parts (e.g. theory **and** practice for the warm-up) must all be tested, otherwise the
verdict is at most ``partly``; *supporting* parts that were not tested are ignored.

The formulas a verdict compares with come from :mod:`normdyn.theory.numeric` only.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from normdyn._io import atomic_write_json, atomic_write_text, provenance

__all__ = [
    "VERDICTS",
    "Part",
    "ReportRow",
    "combine",
    "find_figure_csv",
    "load_tables",
    "build_report",
    "write_report",
    "format_table",
    "render_markdown",
    "verdict_norms_step10",
    "verdict_ratio_real",
    "verdict_ratio_sim",
    "verdict_rate_sim",
    "verdict_discrete_vs_continuous",
    "verdict_critical_lr",
    "verdict_warmup",
    "verdict_trainability",
    "verdict_momentum_spread",
    "verdict_u_growth",
    "verdict_constrained",
    "verdict_transformer",
    "verdict_weight_decay",
    "verdict_flip_condition",
    "verdict_flip_once",
]

CONFIRMED, REFUTED, PARTLY, NOT_TESTED = "confirmed", "refuted", "partly", "not tested"
VERDICTS = (CONFIRMED, REFUTED, PARTLY, NOT_TESTED)

# ----------------------------------------------------------------------------- thresholds

#: fig01: median relative error |sim/real - 1| of first-layer norms at step 10.
NORMS_CONFIRM, NORMS_PARTLY = 0.20, 0.50
#: fig02/fig03: log(spread at end) / log(spread at start); <= 0.5 confirms convergence.
RATIO_REAL_CONFIRM = 0.5
#: fraction of the steps that make up the "start" and the "end" windows (fig02/03).
RATIO_WINDOW = 0.1
#: relative slack for "non-increasing" and for bounds checked on floats.
FLOAT_SLACK = 1e-9
#: rounding allowance, in units of eps per step, of u = E^-2 read back from an iterated map.
ROUNDING_ULPS = 64
#: fig05: |log10(argmin lr / eta*)| (decades) that confirms / partly confirms; the
#: confirm tolerance is widened to one grid step where the grid is coarser.
CRITICAL_CONFIRM_DECADES, CRITICAL_PARTLY_DECADES = 0.15, 0.5
#: fig05: share of steps beyond eta* where the spread may fall (numerical noise).
CRITICAL_MONOTONE_SLACK = 0.0
#: fig08: the early window covers at least this many steps.
MOMENTUM_EARLY_MIN = 10
#: fig06: number of early steps over which the mean log spread is compared.
WARMUP_EARLY_STEPS = 20
#: fig07: Spearman correlation of log spread with final accuracy.
TRAIN_CONFIRM, TRAIN_PARTLY = -0.5, -0.2
#: fig08/fig11: relative error thresholds of measured vs predicted.
UGROWTH_CONFIRM, UGROWTH_PARTLY = 0.10, 0.25
WD_CONFIRM, WD_PARTLY = 0.10, 0.25
#: fig09: accuracy gain of constrained ELR over SGD at the high lrs.
CONSTRAINED_CONFIRM, CONSTRAINED_PARTLY = 0.05, -0.02
#: fig10: median relative ELR error of the replayed / constant-c model vs measurement.
TRANSFORMER_REPLAY, TRANSFORMER_CONSTANT = 0.05, 0.30
#: fig12: grid points with |log(E_l E_k)| below this lie on the boundary and are skipped.
FLIP_BOUNDARY = 1e-9


@dataclass(frozen=True)
class Part:
    """One piece of evidence for a claim."""

    source: str
    verdict: str
    evidence: str
    required: bool = True
    command: str = ""


@dataclass
class ReportRow:
    """One claim with its combined verdict."""

    claim: str
    kind: str  # "paper" | "derived"
    statement: str
    verdict: str
    evidence: str
    command: str
    parts: list[Part] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "claim": self.claim, "kind": self.kind, "statement": self.statement,
            "verdict": self.verdict, "evidence": self.evidence, "command": self.command,
            "parts": [p.__dict__ for p in self.parts],
        }


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


def combine(parts: Sequence[Part]) -> Verdict:
    """Combine evidence: required parts must all be tested; supporting ones may be missing.

    Over the tested parts: all confirmed -> ``confirmed``, all refuted -> ``refuted``,
    a mixture -> ``partly``.  A required part that was not tested caps the verdict at
    ``partly`` (and ``not tested`` when nothing was tested at all).
    """
    if not parts:
        return NOT_TESTED, "no evidence"
    tested = [p for p in parts if p.verdict != NOT_TESTED]
    evidence = "; ".join(f"[{p.source}: {p.verdict}] {p.evidence}" for p in parts)
    if not tested:
        return NOT_TESTED, evidence
    verdict = _worst([p.verdict for p in tested])
    untested_required = [p for p in parts if p.required and p.verdict == NOT_TESTED]
    if untested_required and verdict == CONFIRMED:
        verdict = PARTLY
    return verdict, evidence


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


def verdict_norms_step10(df: pd.DataFrame | None, quantity: str = "weight_norm") -> Verdict:
    """fig01: the discrete model (c from initialization) vs the real first-layer norms.

    ``quantity`` is ``weight_norm`` or ``grad_norm``.  Median over lrs of
    ``|sim/real - 1|``: ``<= NORMS_CONFIRM`` confirmed, ``<= NORMS_PARTLY`` partly, else
    refuted.  The drift runs' error against the real ones is reported alongside.
    """
    miss = _missing(df, ("source", "lr", quantity), "fig01")
    if miss:
        return miss
    mean = df.groupby(["source", "lr"])[quantity].mean()
    sources = set(mean.index.get_level_values(0))
    if not {"simulated", "real"} <= sources:
        return NOT_TESTED, f"fig01: needs sources simulated and real, has {sorted(sources)}"
    sim, real = mean.loc["simulated"], mean.loc["real"]
    common = sim.index.intersection(real.index)
    if common.empty:
        return NOT_TESTED, "fig01: no lr shared by the simulated and real rows"
    err = float((sim.loc[common] / real.loc[common] - 1).abs().median())
    text = (f"{quantity}: median |sim/real-1| over {len(common)} lrs = {_fmt(err)} "
            f"(confirm <= {NORMS_CONFIRM}, partly <= {NORMS_PARTLY})")
    if "drift" in sources:
        drift = mean.loc["drift"]
        dc = drift.index.intersection(real.index)
        if not dc.empty:
            derr = float((drift.loc[dc] / real.loc[dc] - 1).abs().median())
            text += f"; drift vs real: {_fmt(derr)}"
    return _grade(err, NORMS_CONFIRM, NORMS_PARTLY), text


def verdict_ratio_real(df: pd.DataFrame | None, what: str = "fig03") -> Verdict:
    """fig02/fig03: does the layerwise ELR spread of a real run shrink at constant lr?

    Per run (``affine``, ``seed``) the geometric-mean spread of the first and last
    ``RATIO_WINDOW`` of the steps give ``r = log S_end / log S_start``.
    All runs ``r <= RATIO_REAL_CONFIRM``: confirmed; all ``r < 1``: partly (shrinking,
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
    if np.all(rs <= RATIO_REAL_CONFIRM):
        verdict = CONFIRMED
    elif np.all(rs >= 1):
        verdict = REFUTED
    else:
        verdict = PARTLY
    detail = ", ".join(f"{_label(keys, k)}: {_fmt(s0)} -> {_fmt(s1)} (r={_fmt(r, 2)})"
                       for k, s0, s1, r in results)
    return verdict, (f"{what} spread start -> end, r = log S_end/log S_start "
                     f"(confirm <= {RATIO_REAL_CONFIRM}): {detail}")


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
    partly if ``delta <= CRITICAL_PARTLY_DECADES`` or only the monotonicity fails;
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
        elif delta <= CRITICAL_PARTLY_DECADES:
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


def verdict_trainability(df: pd.DataFrame | None) -> Verdict:
    """fig07: higher ELR spread goes with lower final accuracy, most of all without shortcuts.

    Spearman correlations of ``log(spread_mean)`` with ``final_accuracy``: over all runs
    (``rho_all``) and over the NoShort runs (``rho_noshort``, when ``shortcuts`` is
    present).  The claim is "linked with trainability, most evident in deep nets without
    shortcuts", so: confirmed if ``rho_noshort <= TRAIN_CONFIRM`` and
    ``rho_all <= TRAIN_PARTLY`` (without a NoShort subset: ``rho_all <= TRAIN_CONFIRM``);
    partly if either is ``<= TRAIN_PARTLY``; refuted otherwise.  Fewer than 4 runs or no
    variation: not tested.
    """
    miss = _missing(df, ("spread_mean", "final_accuracy"), "fig07")
    if miss:
        return miss
    d = df[np.isfinite(df["spread_mean"]) & np.isfinite(df["final_accuracy"])]
    if len(d) < 4 or d["final_accuracy"].nunique() < 2 or d["spread_mean"].nunique() < 2:
        return NOT_TESTED, f"fig07: {len(d)} usable runs without variation"

    def rho(sub: pd.DataFrame) -> float:
        if len(sub) < 4 or sub["final_accuracy"].nunique() < 2:
            return float("nan")
        return float(np.log(sub["spread_mean"]).corr(sub["final_accuracy"],
                                                     method="spearman"))

    rho_all = rho(d)
    text = f"Spearman(log spread, final accuracy) = {_fmt(rho_all, 2)} over {len(d)} runs"
    rho_noshort = float("nan")
    if "shortcuts" in d.columns:
        for flag, name in ((0, "NoShort"), (1, "Short")):
            sub = d[d["shortcuts"].astype(int) == flag]
            r = rho(sub)
            if flag == 0:
                rho_noshort = r
            text += f"; {name}: {_fmt(r, 2)} ({len(sub)} runs)"
    text += f" (confirm <= {TRAIN_CONFIRM}, partly <= {TRAIN_PARTLY})"
    if np.isfinite(rho_noshort):
        if rho_noshort <= TRAIN_CONFIRM and rho_all <= TRAIN_PARTLY:
            return CONFIRMED, text
        if rho_noshort <= TRAIN_PARTLY or rho_all <= TRAIN_PARTLY:
            return PARTLY, text
        return REFUTED, text
    return _grade(rho_all, TRAIN_CONFIRM, TRAIN_PARTLY), text


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


def verdict_constrained(df: pd.DataFrame | None) -> Verdict:
    """fig09: constrained ELR trains better than plain SGD at high lrs.

    Over the upper half of the lr grid: mean ``test_accuracy`` (constrained - SGD)
    ``>= CONSTRAINED_CONFIRM``: confirmed; ``>= CONSTRAINED_PARTLY``: partly
    (no worse); else refuted.  Diverged runs count with accuracy 0.
    """
    miss = _missing(df, ("method", "lr", "test_accuracy"), "fig09")
    if miss:
        return miss
    d = df.copy()
    if "diverged" in d.columns:
        d.loc[d["diverged"].astype(bool), "test_accuracy"] = 0.0
    d["test_accuracy"] = d["test_accuracy"].fillna(0.0)
    runs = d.groupby(["method", "lr"])["test_accuracy"].mean().unstack(0)
    if not {"sgd", "constrained"} <= set(runs.columns):
        return NOT_TESTED, "fig09: needs methods sgd and constrained"
    lrs = np.sort(runs.index.to_numpy())
    high = runs.loc[lrs[lrs >= np.median(lrs)]]
    gain = float((high["constrained"] - high["sgd"]).mean())
    verdict = _grade(gain, CONSTRAINED_CONFIRM, CONSTRAINED_PARTLY, lower_is_better=False)
    shown = ", ".join(f"lr={_fmt(lr)}: sgd {_fmt(r['sgd'], 2)} / constrained "
                      f"{_fmt(r['constrained'], 2)}" for lr, r in runs.iterrows())
    return verdict, (f"test accuracy {shown}; mean gain at high lrs {_fmt(gain, 2)} "
                     f"(confirm >= {CONSTRAINED_CONFIRM})")


def verdict_transformer(df: pd.DataFrame | None) -> Verdict:
    """fig10: the norm-level model reproduces the Transformer's measured ELRs.

    Median ``|sim/measured - 1|`` over layers and steps >= 1, for the replay of the
    measured base gradients (``replay``) and for constant ``c`` (``constant_c``).
    Replay ``<= TRANSFORMER_REPLAY`` and constant-c ``<= TRANSFORMER_CONSTANT``:
    confirmed; only the replay: partly; else refuted.
    """
    miss = _missing(df, ("source", "step", "layer", "elr"), "fig10")
    if miss:
        return miss
    keys = ["step", "layer"] + [k for k in ("seed", "norm_position") if k in df.columns]
    wide = df[df["step"] >= 1].pivot_table(index=keys, columns="source", values="elr")
    if "measured" not in wide.columns:
        return NOT_TESTED, "fig10: no measured rows"
    errs = {}
    for src in ("replay", "constant_c"):
        if src in wide.columns:
            errs[src] = float((wide[src] / wide["measured"] - 1).abs().median())
    if "replay" not in errs:
        return NOT_TESTED, "fig10: no replay rows"
    replay_ok = errs["replay"] <= TRANSFORMER_REPLAY
    const_ok = errs.get("constant_c", float("inf")) <= TRANSFORMER_CONSTANT
    verdict = CONFIRMED if replay_ok and const_ok else PARTLY if replay_ok else REFUTED
    shown = ", ".join(f"{k} {_fmt(v, 2)}" for k, v in errs.items())
    return verdict, (f"median |sim/measured-1|: {shown} (replay <= {TRANSFORMER_REPLAY}, "
                     f"constant c <= {TRANSFORMER_CONSTANT})")


def verdict_weight_decay(df: pd.DataFrame | None) -> Verdict:
    """fig11: the equilibrium update ELR under weight decay is ``sqrt(2 eta lam/(1+beta))``.

    Prediction from :func:`~normdyn.theory.numeric.momentum_equilibrium_update_elr_leading`;
    median ``|measured/predicted - 1|`` per source, the worst source decides:
    ``<= WD_CONFIRM`` confirmed, ``<= WD_PARTLY`` partly, else refuted.
    """
    cols = ("lr", "weight_decay", "momentum", "measured_update_elr")
    miss = _missing(df, cols, "fig11")
    if miss:
        return miss
    from normdyn.theory.numeric import momentum_equilibrium_update_elr_leading as pred

    d = df[np.isfinite(df["measured_update_elr"]) & (df["weight_decay"] > 0)]
    if d.empty:
        return NOT_TESTED, "fig11: no runs with weight decay"
    predicted = pred(d["lr"].to_numpy(float), d["weight_decay"].to_numpy(float),
                     d["momentum"].to_numpy(float))
    err = np.abs(d["measured_update_elr"].to_numpy() / predicted - 1)
    d = d.assign(err=err)
    by = d.groupby("source")["err"].median() if "source" in d.columns else \
        pd.Series({"all": float(np.median(err))})
    worst = float(by.max())
    shown = ", ".join(f"{k} {_fmt(v, 2)}" for k, v in by.items())
    return _grade(worst, WD_CONFIRM, WD_PARTLY), (
        f"median |measured/sqrt(2 eta lam/(1+beta)) - 1| over {len(d)} (config, layer) "
        f"rows: {shown} (confirm <= {WD_CONFIRM}, partly <= {WD_PARTLY})")


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


# ----------------------------------------------------------------------------- tables


def find_figure_csv(out_dir: str | Path, figure: str, profile: str | None = None) -> Path | None:
    """The CSV of ``figure`` in ``out_dir`` (``<figure>_*_<profile>.csv``; newest wins)."""
    out_dir = Path(out_dir)
    pattern = f"{figure}_*_{profile}.csv" if profile else f"{figure}_*.csv"
    found = [p for p in out_dir.glob(pattern) if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _manifest(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / "figures.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


def load_tables(
    out_dir: str | Path, profile: str | None = None,
) -> tuple[dict[str, pd.DataFrame], dict[str, str], str | None]:
    """``(tables, notes, profile)``: each figure's CSV, why one is absent, the profile used.

    Without ``profile`` the manifest's profile is used, else the newest CSV per figure.
    A figure that the manifest records as failed gets its error as the note.
    """
    out_dir = Path(out_dir)
    manifest = _manifest(out_dir)
    if profile is None and manifest is not None:
        profile = manifest.get("profile")
    tables: dict[str, pd.DataFrame] = {}
    notes: dict[str, str] = {}
    failed = {}
    if manifest is not None and manifest.get("profile") == profile:
        failed = {k: v.get("error", "") for k, v in manifest.get("figures", {}).items()
                  if v.get("status") != "ok"}
    for i in range(1, 13):
        fig = f"fig{i:02d}"
        if fig in failed:
            notes[fig] = f"{fig} failed: {failed[fig]}"
            continue
        path = find_figure_csv(out_dir, fig, profile)
        if path is None:
            notes[fig] = f"{fig}: no CSV in {out_dir}" + (f" for profile {profile}"
                                                          if profile else "")
            continue
        try:
            tables[fig] = pd.read_csv(path)
        except (OSError, ValueError, pd.errors.ParserError) as exc:
            notes[fig] = f"{fig}: unreadable CSV {path.name}: {exc}"
    return tables, notes, profile


# ----------------------------------------------------------------------------- property tests

#: claim id -> (test file relative to the repository, regex on the test function names).
PROPERTY_TESTS: dict[str, tuple[str, str]] = {
    "ratios_converge_constant_lr": ("tests/theory/test_pairs.py",
                                    r"pair_map_drives_ratio_to_one|convergence_rate_bound"),
    "critical_lr_widens_beyond": ("tests/theory/test_critical_lr.py", r"."),
    "discrete_below_continuous": ("tests/theory/test_continuous.py",
                                  r"discrete_u_stays_above|gap_grows|never_below_flow"),
    "lemma_3_2_unique_attractor": ("tests/theory/test_pairs.py",
                                   r"ratio_one_is_invariant|no_other_ratio|drives_ratio_to_one"),
    "lemma_3_4_flipping_conditions": ("tests/theory/test_pairs.py",
                                      r"flip_iff_product|tie_when_product|log_ratio_never_grows"),
    "lemma_3_5_flip_at_most_once": ("tests/theory/test_pairs.py",
                                    r"at_most_one_flip|gain_above_two|second_flip"),
    "theorem_3_6_convergence": ("tests/theory/test_pairs.py", r"convergence_rate_bound"),
    "weight_decay_equilibrium_measured": ("tests/theory/test_beyond_sgd.py", r"weight_decay"),
    "momentum_u_growth_measured": ("tests/theory/test_beyond_sgd.py", r"momentum_u_growth|"
                                   r"momentum_drift_simulation_u_growth"),
}


def run_property_tests(root: str | Path | None = None,
                       timeout: float = 600.0) -> dict[str, dict[str, str]]:
    """Run the property tests of :data:`PROPERTY_TESTS`; ``{file: {test name: outcome}}``.

    Outcomes are ``passed``, ``failed`` or ``skipped`` (parametrized cases are merged:
    a test fails if any case fails).  Files that are absent are left out; an empty dict
    means nothing could be run (no checkout, or pytest missing).
    """
    import subprocess
    import sys
    import tempfile
    import xml.etree.ElementTree as ET

    root = Path(root) if root is not None else Path(__file__).resolve().parent.parent
    files = sorted({f for f, _ in PROPERTY_TESTS.values() if (root / f).is_file()})
    if not files:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        xml = Path(tmp) / "junit.xml"
        try:
            subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                            f"--junitxml={xml}", *files], cwd=root, capture_output=True,
                           text=True, timeout=timeout, check=False)
        except (OSError, subprocess.SubprocessError):
            return {}
        if not xml.is_file():
            return {}
        tree = ET.parse(xml)
    out: dict[str, dict[str, str]] = {}
    for case in tree.iter("testcase"):
        path = case.get("classname", "").replace(".", "/") + ".py"
        name = re.sub(r"\[.*\]$", "", case.get("name", ""))
        if case.find("failure") is not None or case.find("error") is not None:
            outcome = "failed"
        elif case.find("skipped") is not None:
            outcome = "skipped"
        else:
            outcome = "passed"
        tests = out.setdefault(path, {})
        previous = tests.get(name)
        if outcome == "failed" or previous in (None, "skipped"):
            tests[name] = outcome
    return out


def _property_part(claim_id: str, results: dict[str, dict[str, str]] | None) -> Part | None:
    if claim_id not in PROPERTY_TESTS:
        return None
    path, pattern = PROPERTY_TESTS[claim_id]
    cmd = f"pytest {path} -k '{pattern.replace('|', ' or ')}'" if pattern != "." \
        else f"pytest {path}"
    if results is None:
        return Part("property tests", NOT_TESTED, "not run (normdyn report --property-tests)",
                    False, cmd)
    tests = {n: o for n, o in results.get(path, {}).items() if re.search(pattern, n)}
    ran = {n: o for n, o in tests.items() if o != "skipped"}
    if not ran:
        return Part("property tests", NOT_TESTED, f"no test of {path} ran", False, cmd)
    failed = sorted(n for n, o in ran.items() if o == "failed")
    verdict = CONFIRMED if not failed else REFUTED if len(failed) == len(ran) else PARTLY
    text = f"{len(ran) - len(failed)}/{len(ran)} Hypothesis/property tests passed in {path}"
    if failed:
        text += f" (failed: {', '.join(failed)})"
    return Part("property tests", verdict, text, False, cmd)


# ----------------------------------------------------------------------------- claims


def _fig_part(tables: dict[str, pd.DataFrame], notes: dict[str, str], fig: str,
              fn: Callable[..., Verdict], profile: str | None, *args: Any,
              source: str | None = None, required: bool = True) -> Part:
    cmd = f"normdyn figures --profile {profile or 'quick'} --only {fig}"
    src = source or fig
    if fig not in tables:
        return Part(src, NOT_TESTED, notes.get(fig, f"{fig}: not run"), required, cmd)
    try:
        verdict, evidence = fn(tables[fig], *args)
    except Exception as exc:  # noqa: BLE001 - a malformed table is "not tested", not a crash
        verdict, evidence = NOT_TESTED, f"{fig}: could not evaluate ({type(exc).__name__}: {exc})"
    return Part(src, verdict, evidence, required, cmd)


def _symbolic_part(results: dict[str, Any], name: str, required: bool = True) -> Part:
    cmd = f"normdyn check --only {name}"
    res = results.get(name)
    if res is None:
        return Part(f"symbolic:{name}", NOT_TESTED, f"claim {name!r} is not registered",
                    required, cmd)
    text = res.detail or res.statement
    if res.error:
        text = f"error: {res.error}"
    return Part(f"symbolic:{name}", CONFIRMED if res.passed else REFUTED,
                f"SymPy check {'passed' if res.passed else 'FAILED'}: {text}", required, cmd)


#: (claim id, statement, [(kind, ...)] ) -- kind "sym" (claim name) or "fig" (figure,
#: verdict function, extra args, source label, required).
def _paper_claims(results: dict[str, Any], tables: dict[str, pd.DataFrame],
                  notes: dict[str, str], profile: str | None) -> list[ReportRow]:
    def fig(figure: str, fn: Callable[..., Verdict], *args: Any, source: str | None = None,
            required: bool = True) -> Part:
        return _fig_part(tables, notes, figure, fn, profile, *args, source=source,
                         required=required)

    def sym(name: str, required: bool = True) -> Part:
        return _symbolic_part(results, name, required)

    spec: list[tuple[str, str, list[Part]]] = [
        ("ratios_converge_constant_lr",
         "Abstract: with any constant lr the layerwise ELR ratios converge to 1, despite "
         "the initial gradient explosion.",
         [sym("unique_attractor"), sym("convergence_rate"),
          fig("fig04", verdict_ratio_sim, source="fig04 simulation"),
          fig("fig02", verdict_ratio_real, "fig02", source="fig02 drift run"),
          fig("fig03", verdict_ratio_real, "fig03", source="fig03 real run")]),
        ("critical_lr_widens_beyond",
         "Abstract: a critical lr, depending only on the current ELRs; beyond it ELR "
         "disparities widen.",
         [sym("critical_lr"),
          fig("fig05", verdict_critical_lr, "simulated", source="fig05 simulation"),
          fig("fig05", verdict_critical_lr, "real_one_step", source="fig05 real one step",
              required=False)]),
        ("warmup_minimizes_spread",
         "Abstract: the hyper-parameter-free (critical-lr) warm-up minimizes the ELR "
         "spread quickly, in theory and in practice.",
         [fig("fig06", verdict_warmup, "simulated", source="fig06 theory"),
          fig("fig06", verdict_warmup, "real", source="fig06 practice")]),
        ("spread_vs_trainability",
         "Abstract: ELR spread is linked with trainability, most evidently in very deep "
         "networks without shortcuts.",
         [fig("fig07", verdict_trainability)]),
        ("momentum_reduces_spread",
         "Summary: momentum reduces the ELR spread further.",
         [sym("momentum_equilibrium", required=False),
          fig("fig08", verdict_momentum_spread, "drift", source="fig08 drift simulation"),
          fig("fig08", verdict_momentum_spread, "real", source="fig08 real run")]),
        ("constrained_elr_stabilizes",
         "Summary: constrained-ELR training stabilizes otherwise unstable (high-lr) "
         "regimes.",
         [fig("fig09", verdict_constrained)]),
        ("norm_model_matches_real_norms",
         "Fig. 1: the discrete model (c from initialization) predicts the first layer's "
         "weight and gradient norm at step 10 of a real ResNet NoShort across lrs.",
         [fig("fig01", verdict_norms_step10, "weight_norm", source="fig01 weight norm"),
          fig("fig01", verdict_norms_step10, "grad_norm", source="fig01 gradient norm")]),
        ("model_describes_transformer",
         "Fig. 10 / summary: the model carries over to Transformers with LayerNorm.",
         [fig("fig10", verdict_transformer)]),
        ("discrete_below_continuous",
         "Fig. 4: the discrete model's ELRs stay at or below the continuous (gradient-flow) "
         "model's, with a logarithmic gap.",
         [sym("continuous_elr"), fig("fig04", verdict_discrete_vs_continuous,
                                     required=False)]),
        ("lemma_3_2_unique_attractor",
         "Lemma 3.2: the stationary point rho = 1 is the unique attractor of the ratio "
         "dynamics.",
         [sym("unique_attractor"), sym("ratio_map"),
          fig("fig04", verdict_ratio_sim, required=False)]),
        ("lemma_3_4_flipping_conditions",
         "Def. 3.3 / Lemma 3.4: two ELRs flip order in a step iff E_l E_k > 1 (equal iff "
         "= 1), and |log rho| never grows.",
         [sym("flip_condition"), fig("fig12", verdict_flip_condition, required=False)]),
        ("lemma_3_5_flip_at_most_once",
         "Lemma 3.5: at constant lr the ratio of a pair flips at most once.",
         [sym("flip_at_most_once"), fig("fig12", verdict_flip_once, required=False)]),
        ("theorem_3_6_convergence",
         "Thm. 3.6: the ratios converge to the fixed point, |rho_t^2 - 1| = O(1/t).",
         [sym("convergence_rate"), fig("fig04", verdict_rate_sim, required=False)]),
    ]
    return [_row(cid, "paper", statement, parts) for cid, statement, parts in spec]


def _row(cid: str, kind: str, statement: str, parts: list[Part]) -> ReportRow:
    verdict, evidence = combine(parts)
    commands = list(dict.fromkeys(p.command for p in parts if p.command))
    return ReportRow(cid, kind, statement, verdict, evidence, "; ".join(commands), parts)


def _derived_claims(results: dict[str, Any], tables: dict[str, pd.DataFrame],
                    notes: dict[str, str], profile: str | None) -> list[ReportRow]:
    rows = [_row(name, "derived", res.statement, [_symbolic_part(results, name)])
            for name, res in results.items()]
    rows.append(_row(
        "weight_decay_equilibrium_measured", "derived",
        "Under weight decay (and momentum) every layer's update ELR settles at "
        "sqrt(2 eta lam/(1+beta)), measured.",
        [_symbolic_part(results, "weight_decay_equilibrium", required=False),
         _fig_part(tables, notes, "fig11", verdict_weight_decay, profile)]))
    rows.append(_row(
        "momentum_u_growth_measured", "derived",
        "With heavy-ball momentum beta and uncorrelated gradients, u = E_update^-2 grows "
        "by 2(1+beta)/(1-beta) per step (drift simulation).",
        [_symbolic_part(results, "momentum_equilibrium", required=False),
         _fig_part(tables, notes, "fig08", verdict_u_growth, profile,
                   source="fig08 drift simulation")]))
    return rows


def build_report(
    out_dir: str | Path,
    *,
    profile: str | None = None,
    claim_results: Sequence[Any] | None = None,
    tables: dict[str, pd.DataFrame] | None = None,
    property_tests: bool | dict[str, dict[str, str]] = False,
) -> list[ReportRow]:
    """Compute every row: run the symbolic claims (unless given) and read the CSVs.

    ``tables`` (``{"fig05": frame, ...}``) replaces reading ``out_dir``; figures absent
    from it are ``not tested``.  ``property_tests=True`` runs the property tests of
    :data:`PROPERTY_TESTS` (pytest, about 15 s) and adds them as supporting evidence; a
    dict is taken as their outcomes (see :func:`run_property_tests`).
    """
    if claim_results is None:
        from normdyn.theory import run_claims

        claim_results = run_claims()
    results = {r.name: r for r in claim_results}
    if tables is None:
        tables, notes, profile = load_tables(out_dir, profile)
    else:
        notes = {f"fig{i:02d}": f"fig{i:02d}: no measurement" for i in range(1, 13)}
    rows = (_paper_claims(results, tables, notes, profile)
            + _derived_claims(results, tables, notes, profile))
    outcomes: dict[str, dict[str, str]] | None = None
    if isinstance(property_tests, dict):
        outcomes = property_tests
    elif property_tests:
        outcomes = run_property_tests()
    for i, row in enumerate(rows):
        part = _property_part(row.claim, outcomes)
        if part is not None:
            rows[i] = _row(row.claim, row.kind, row.statement, [*row.parts, part])
    seen: set[str] = set()
    for row in rows:
        if row.claim in seen:
            row.claim = f"{row.claim} ({row.kind})"
        seen.add(row.claim)
    return rows


# ----------------------------------------------------------------------------- output


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(rows: Sequence[ReportRow], profile: str | None = None) -> str:
    counts = {v: sum(r.verdict == v for r in rows) for v in VERDICTS}
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    prov = provenance()
    lines = [
        "# normdyn claims report",
        "",
        f"Generated {stamp} by `normdyn report` (normdyn {prov['normdyn_version']}, "
        f"git {prov['git_revision']}); figure profile: {profile or 'n/a'}.",
        "",
        "Verdicts are computed in this run from the SymPy checks and the figure CSVs; "
        "thresholds are documented in `normdyn/report.py`.",
        "",
        "Summary: " + ", ".join(f"{n} {v}" for v, n in counts.items()),
        "",
    ]
    for kind, title in (("paper", "Claims of the paper"), ("derived", "Derived claims")):
        lines += [f"## {title}", "", "| claim | verdict | evidence | command |",
                  "|---|---|---|---|"]
        for r in rows:
            if r.kind == kind:
                lines.append(f"| **{r.claim}**<br>{_cell(r.statement)} | {r.verdict} | "
                             f"{_cell(r.evidence)} | `{_cell(r.command)}` |")
        lines.append("")
    return "\n".join(lines)


def write_report(rows: Sequence[ReportRow], out_dir: str | Path,
                 profile: str | None = None) -> tuple[Path, Path]:
    """Write ``REPORT.md`` and ``REPORT.json`` into ``out_dir``."""
    out_dir = Path(out_dir)
    md = atomic_write_text(out_dir / "REPORT.md", render_markdown(rows, profile))
    js = atomic_write_json(out_dir / "REPORT.json", {
        "profile": profile,
        "provenance": provenance(),
        "counts": {v: sum(r.verdict == v for r in rows) for v in VERDICTS},
        "claims": [r.as_dict() for r in rows],
    })
    return md, js


def format_table(rows: Sequence[ReportRow]) -> str:
    """A plain-text verdict table for the terminal."""
    width = max((len(r.claim) for r in rows), default=5)
    out = [f"{'claim':<{width}}  verdict"]
    for r in rows:
        out.append(f"{r.claim:<{width}}  {r.verdict}")
    return "\n".join(out)


