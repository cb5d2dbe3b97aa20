r"""Grading the paper's claims about trained networks on measured runs with real gradients.

Each ``real_*(df) -> list[Item]`` reads one figure CSV of ``normdyn figures`` and
returns the *real* evidence items of one claim (:class:`normdyn.estimates.Item` of kind
``real``, or ``diagnostic`` for what is shown but never graded).  Only rows measured in
torch runs with real gradients are used: the simulated, drift and replay rows of the
same tables belong to the model side (:mod:`normdyn.verdicts`).

Every statistic is computed per seed (or per run, for correlations) and carries a 95%
interval and an effect size (:mod:`normdyn.estimates`); it is graded against the
thresholds of :mod:`normdyn.thresholds` and against a control or null:

======================  ==========================================  =====================
claim                   statistic                                    control / null
======================  ==========================================  =====================
ratios converge         r = log S_end / log S_start per seed         r = 1 (no change)
critical lr             |log10(argmin lr / eta*)| per seed           half a decade
warm-up                 early spread critical / best tuned warm-up   best tuned warm-up
trainability            within-(depth, lr) Spearman(log S, acc)      0; Short vs NoShort
momentum                spread beta / SGD at eta/(1-beta)            SGD at same eff. lr
constrained ELR         test-accuracy gain over SGD at high lrs      SGD at the same lr
step-10 norms           median |model/real - 1|                      no-growth null
Transformer             median |constant-c / measured - 1|           no-growth null
weight decay            worst (beta) group |measured/predicted - 1|  25% off
======================  ==========================================  =====================

Fewer than ``MIN_SEEDS`` seeds give ``not tested``; so does a missing table.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pandas as pd

from normdyn.estimates import (
    DIAGNOSTIC,
    NOT_TESTED,
    REAL,
    Estimate,
    Item,
    across_seeds,
    grade,
    paired_across_seeds,
    stratified_bootstrap,
)
from normdyn.thresholds import (
    CONSTRAINED_CONFIRM,
    CONSTRAINED_NULL,
    CRITICAL_CONFIRM_DECADES,
    CRITICAL_REFUTE_DECADES,
    MOMENTUM_CONFIRM_RATIO,
    MOMENTUM_NULL_RATIO,
    NORMS_CONFIRM,
    NORMS_REFUTE,
    RATIO_CONFIRM,
    RATIO_NULL,
    RATIO_WINDOW,
    TRAIN_CONFIRM,
    TRAIN_NULL,
    TRAIN_SHORTCUT_MARGIN,
    TRANSFORMER_CONSTANT,
    TRANSFORMER_REFUTE,
    TRANSFORMER_REPLAY,
    WARMUP_EARLY_STEPS,
    WARMUP_FACTOR,
    WD_CONFIRM,
    WD_REFUTE,
)
from normdyn.verdicts import _spread_by_step

__all__ = [
    "real_ratio_convergence",
    "real_critical_lr",
    "real_warmup",
    "real_trainability",
    "real_momentum",
    "real_constrained",
    "real_norms_step10",
    "real_transformer",
    "real_weight_decay",
    "within_cell_spearman",
]


def _absent(df: pd.DataFrame | None, columns: Sequence[str], source: str,
            rows: str | None = None) -> list[Item] | None:
    if df is None:
        return [Item(REAL, source, NOT_TESTED, "no measurement")]
    lacking = [c for c in columns if c not in df.columns]
    if lacking:
        return [Item(REAL, source, NOT_TESTED, f"table lacks columns {lacking}")]
    if df.empty:
        return [Item(REAL, source, NOT_TESTED, f"no {rows or 'measured'} rows")]
    return None


def _item(source: str, est: Estimate, verdict: str, threshold: str, control: str,
          primary: bool = True) -> Item:
    return Item(REAL, source, verdict, est.describe(), est, threshold, control, primary)


def _exp(est: Estimate, statistic: str) -> Estimate:
    """An estimate made on the log scale, shown as a ratio (the effect size is kept)."""
    return replace(est, statistic=statistic, value=math.exp(est.value),
                   low=math.exp(est.low) if math.isfinite(est.low) else est.low,
                   high=math.exp(est.high) if math.isfinite(est.high) else est.high)


def _log_spread(df: pd.DataFrame, value: str, keys: Sequence[str]) -> pd.DataFrame:
    """log(max/min ``value`` over layers) per (keys..., step), finite rows only."""
    spread = _spread_by_step(df[np.isfinite(df[value])], value, keys)
    return spread.assign(log_spread=np.log(spread.pop("spread")))


# ----------------------------------------------------------------------------- fig03


def real_ratio_convergence(df: pd.DataFrame | None) -> list[Item]:
    """fig03: per seed, ``r = log S_end / log S_start`` of the layerwise ELR spread.

    Start and end are the geometric-mean spread over the first and last
    ``RATIO_WINDOW`` of the steps.  Graded per BN setting (without affine: primary):
    confirmed if the interval of the mean ``r`` is ``<= RATIO_CONFIRM``, refuted if it
    lies above the no-change null ``r = RATIO_NULL``.
    """
    src = "fig03 real runs"
    miss = _absent(df, ("step", "layer", "elr", "seed", "affine"), src)
    if miss:
        return miss
    spread = _log_spread(df, "elr", ["affine", "seed"])
    items = []
    for affine, g_aff in spread.groupby("affine"):
        rs = []
        for _, g in g_aff.groupby("seed"):
            g = g.sort_values("step")
            n = max(1, int(round(RATIO_WINDOW * len(g))))
            start, end = g["log_spread"].iloc[:n].mean(), g["log_spread"].iloc[-n:].mean()
            rs.append(end / start if start > 0 else math.nan)
        est = across_seeds(rs, f"r = log S_end/log S_start (affine={int(affine)})",
                           reference=RATIO_NULL)
        verdict = grade(est, RATIO_CONFIRM, RATIO_NULL, better="lower")
        items.append(_item(src, est, verdict, f"high <= {RATIO_CONFIRM:g}",
                           f"no-change null r = {RATIO_NULL:g}", primary=not affine))
    return items


# ----------------------------------------------------------------------------- fig05


def real_critical_lr(df: pd.DataFrame | None) -> list[Item]:
    """fig05: one real SGD step from init per seed; where is the spread smallest?

    Per seed: ``delta = log10(argmin lr / eta*)`` with that seed's predicted eta*.  The
    mean ``|delta|`` is graded: confirmed if its interval is ``<= max(CRITICAL_CONFIRM_
    DECADES, one grid step)``, refuted if it lies beyond ``CRITICAL_REFUTE_DECADES``.
    The evidence text also gives the signed mean and whether the spread keeps growing
    beyond the argmin ("beyond it, disparities widen").
    """
    src = "fig05 real one step"
    miss = _absent(df, ("source", "seed", "lr", "spread", "critical_lr"), src)
    if miss:
        return miss
    d = df[df["source"] == "real_one_step"]
    if d.empty:
        return [Item(REAL, src, NOT_TESTED, "no real_one_step rows")]
    deltas, grid, widening = [], 0.0, []
    for _, g in d.groupby("seed"):
        g = g.sort_values("lr")
        lr, s = g["lr"].to_numpy(float), g["spread"].to_numpy(float)
        if not np.isfinite(s).any():
            continue
        i = int(np.nanargmin(s))
        deltas.append(math.log10(lr[i] / float(g["critical_lr"].iloc[0])))
        if lr.size > 1:
            grid = max(grid, float(np.max(np.diff(np.log10(lr)))))
        beyond = s[i:]
        widening.append(bool(np.all(beyond[1:] >= beyond[:-1] * (1 - 1e-9))))
    tol = max(CRITICAL_CONFIRM_DECADES, grid)
    est = across_seeds(np.abs(deltas), "|log10(argmin lr / eta*)| (decades)",
                       reference=CRITICAL_REFUTE_DECADES)
    verdict = grade(est, tol, CRITICAL_REFUTE_DECADES, better="lower")
    item = _item(src, est, verdict, f"high <= {tol:.2g} decades",
                 f"{CRITICAL_REFUTE_DECADES:g} decades off")
    extra = (f"; signed mean log10(argmin/eta*) = {np.mean(deltas):.3g}; spread "
             f"non-decreasing beyond the argmin in {sum(widening)}/{len(widening)} seeds")
    return [replace(item, evidence=item.evidence + extra)]


# ----------------------------------------------------------------------------- fig06


def real_warmup(df: pd.DataFrame | None) -> list[Item]:
    """fig06: the shipped ``CriticalLRWarmup`` against the best tuned warm-up.

    Per seed and schedule: the mean log spread over steps ``1..WARMUP_EARLY_STEPS``.
    The best tuned warm-up is the candidate (every schedule but ``critical`` and
    ``none``) with the lowest mean over seeds, chosen on these same runs (which favours
    the control).  Statistic: the paired spread ratio critical / best.  Confirmed if
    its interval is ``<= WARMUP_FACTOR``; refuted if it lies above it.
    """
    src = "fig06 real runs"
    miss = _absent(df, ("source", "schedule", "seed", "step", "spread"), src)
    if miss:
        return miss
    d = df[(df["source"] == "real") & (df["step"] >= 1) & (df["step"] <= WARMUP_EARLY_STEPS)]
    d = d[np.isfinite(d["spread"]) & (d["spread"] > 0)]
    if d.empty or "critical" not in set(d["schedule"]):
        return [Item(REAL, src, NOT_TESTED, "no real rows with the critical warm-up")]
    score = (d.assign(ls=np.log(d["spread"])).groupby(["schedule", "seed"])["ls"].mean()
             .unstack("schedule"))
    candidates = [s for s in score.columns if s not in ("critical", "none")]
    if not candidates:
        return [Item(REAL, src, NOT_TESTED, "no tuned warm-up to compare with")]
    best = min(candidates, key=lambda s: score[s].mean())
    paired = score[["critical", best]].dropna()
    est = _exp(paired_across_seeds(paired["critical"], paired[best], "log ratio"),
               f"early spread ratio critical / best tuned ({best})")
    verdict = grade(est, WARMUP_FACTOR, WARMUP_FACTOR, better="lower")
    ranked = ", ".join(f"{k} {math.exp(v):.3g}" for k, v in score.mean().sort_values().items())
    item = _item(src, est, verdict, f"high <= {WARMUP_FACTOR:g}",
                 f"best of {len(candidates)} tuned warm-ups ({best})")
    return [replace(item, evidence=item.evidence + f"; geometric-mean spread over steps "
                                                   f"1..{WARMUP_EARLY_STEPS}: {ranked}")]


# ----------------------------------------------------------------------------- fig07


def _cell_rank_correlation(x: np.ndarray, y: np.ndarray, x_idx: Sequence[np.ndarray],
                           y_idx: Sequence[np.ndarray]) -> np.ndarray:
    """Correlation of within-cell centred ranks, pooled over cells (vectorized).

    ``x_idx[c]``/``y_idx[c]`` index the runs of cell ``c``, shape ``(..., n_c)``; ranks
    are taken along the last axis.  Returns the statistic over the leading axes.
    """
    from scipy.stats import rankdata

    sxy = sxx = syy = 0.0
    for ix, iy in zip(x_idx, y_idx, strict=True):
        n = ix.shape[-1]
        if n < 2:
            continue
        rx = rankdata(x[ix], axis=-1) - (n + 1) / 2
        ry = rankdata(y[iy], axis=-1) - (n + 1) / 2
        sxy = sxy + np.sum(rx * ry, axis=-1)
        sxx = sxx + np.sum(rx * rx, axis=-1)
        syy = syy + np.sum(ry * ry, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(sxy / np.sqrt(np.asarray(sxx) * np.asarray(syy)))


def within_cell_spearman(x: np.ndarray, y: np.ndarray, cells: np.ndarray) -> float:
    """Spearman correlation of ``x`` and ``y`` after removing each cell's mean rank.

    Ranks are taken within each cell (a depth and lr), centred, pooled over the cells
    and correlated: the association at matched depth and lr, with the lr's own effect
    on both removed.  NaN when nothing varies.
    """
    x, y, cells = np.asarray(x, float), np.asarray(y, float), np.asarray(cells)
    idx = [np.flatnonzero(cells == c) for c in np.unique(cells)]
    return float(_cell_rank_correlation(x, y, idx, idx))


def _cells(d: pd.DataFrame, keys: Sequence[str]) -> np.ndarray:
    return d[list(keys)].astype(str).agg("|".join, axis=1).to_numpy()


def real_trainability(df: pd.DataFrame | None) -> list[Item]:
    """fig07: high ELR spread goes with low accuracy, at matched depth and lr.

    Primary: :func:`within_cell_spearman` of ``log spread_mean`` with
    ``final_accuracy`` over all runs, cells = (depth, lr); percentile bootstrap over
    runs within cells, permutation p-value with accuracy shuffled within cells.
    Confirmed if the interval is ``<= TRAIN_CONFIRM``, refuted if above ``TRAIN_NULL``.
    Secondary ("most evident without shortcuts"): ``rho(NoShort) - rho(Short)``, each
    within its own (depth, lr) cells; confirmed if surely below ``TRAIN_SHORTCUT_MARGIN``.
    """
    src = "fig07 real runs"
    cols = ("shortcuts", "depth", "lr", "seed", "spread_mean", "final_accuracy")
    miss = _absent(df, cols, src)
    if miss:
        return miss
    d = df[np.isfinite(df["spread_mean"]) & (df["spread_mean"] > 0)
           & np.isfinite(df["final_accuracy"])].reset_index(drop=True)
    n_seeds = int(d["seed"].nunique())
    x = np.log(d["spread_mean"].to_numpy(float))
    y = d["final_accuracy"].to_numpy(float)

    def strata_of(keys: Sequence[str]) -> list[np.ndarray]:
        cells = _cells(d, keys)
        return [np.flatnonzero(cells == c) for c in np.unique(cells)]

    def rho(idx: Sequence[np.ndarray]) -> np.ndarray:
        return _cell_rank_correlation(x, y, idx, idx)

    def rho_null(idx: Sequence[np.ndarray], rng: np.random.Generator, n: int) -> np.ndarray:
        fixed = [np.broadcast_to(s, (n, len(s))) for s in idx]
        shuffled = [rng.permuted(np.tile(s, (n, 1)), axis=1) for s in idx]
        return _cell_rank_correlation(x, y, fixed, shuffled)

    strata = strata_of(["depth", "lr"])
    est = stratified_bootstrap(strata, rho, "within-(depth, lr) Spearman(log spread, acc)",
                               n_seeds=n_seeds, null_fn=rho_null)
    items = [_item(src, est, grade(est, TRAIN_CONFIRM, TRAIN_NULL, better="lower"),
                   f"high <= {TRAIN_CONFIRM:g}", f"no association (rho = {TRAIN_NULL:g})")]

    shortcut = d["shortcuts"].astype(int).to_numpy()
    if set(shortcut) >= {0, 1}:
        strata2 = strata_of(["shortcuts", "depth", "lr"])
        flag = np.array([int(shortcut[s[0]]) for s in strata2])

        def diff(idx: Sequence[np.ndarray]) -> np.ndarray:
            no = [s for s, f in zip(idx, flag, strict=True) if f == 0]
            yes = [s for s, f in zip(idx, flag, strict=True) if f == 1]
            return rho(no) - rho(yes)

        est2 = stratified_bootstrap(strata2, diff, "rho(NoShort) - rho(Short)",
                                    n_seeds=n_seeds)
        no = float(rho([s for s, f in zip(strata2, flag, strict=True) if f == 0]))
        yes = float(rho([s for s, f in zip(strata2, flag, strict=True) if f == 1]))
        v2 = grade(est2, TRAIN_SHORTCUT_MARGIN, TRAIN_SHORTCUT_MARGIN, better="lower")
        item2 = _item(src, est2, v2, f"high < {TRAIN_SHORTCUT_MARGIN:g}",
                      "the same correlation with shortcuts", primary=False)
        items.append(replace(item2, evidence=item2.evidence
                             + f"; rho NoShort = {no:.3g}, rho Short = {yes:.3g}"))
    return items


# ----------------------------------------------------------------------------- fig08


def real_momentum(df: pd.DataFrame | None) -> list[Item]:
    """fig08: momentum lowers the update-ELR spread beyond what its larger step explains.

    Per seed: the mean log update-ELR spread over steps >= 1 of each (momentum, lr) run.
    Primary: momentum ``beta`` at lr ``eta`` against SGD (``beta = 0``) at the same
    effective lr ``eta/(1-beta)`` (paired spread ratio); secondary: against SGD at
    ``eta``.  Confirmed if the interval is ``<= MOMENTUM_CONFIRM_RATIO``, refuted if it
    lies above ``MOMENTUM_NULL_RATIO``.
    """
    src = "fig08 real runs"
    miss = _absent(df, ("source", "momentum", "lr", "seed", "step", "spread"), src)
    if miss:
        return miss
    d = df[(df["source"] == "real") & (df["step"] >= 1) & np.isfinite(df["spread"])
           & (df["spread"] > 0)]
    per = (d.groupby(["momentum", "lr", "seed", "step"])["spread"].first().reset_index()
           .assign(ls=lambda f: np.log(f["spread"]))
           .groupby(["momentum", "lr", "seed"])["ls"].mean())
    momenta = sorted(m for m in per.index.get_level_values("momentum").unique() if m > 0)
    if not momenta or 0.0 not in per.index.get_level_values("momentum"):
        return [Item(REAL, src, NOT_TESTED, "needs runs with momentum 0 and > 0")]
    beta = momenta[-1]
    with_m = per.loc[beta]
    eta = float(with_m.index.get_level_values("lr").min())
    treated = with_m.loc[eta]
    base = per.loc[0.0]
    items = []
    for lr_c, label, primary in ((eta / (1 - beta), "SGD at eta/(1-beta)", True),
                                 (eta, "SGD at eta", False)):
        lrs = base.index.get_level_values("lr").unique()
        match = [lr for lr in lrs if math.isclose(lr, lr_c, rel_tol=1e-6)]
        if not match:
            items.append(Item(REAL, src, NOT_TESTED, f"no {label} = {lr_c:g} control runs",
                              primary=primary))
            continue
        pair = pd.concat([treated, base.loc[match[0]]], axis=1, keys=["m", "c"]).dropna()
        est = _exp(paired_across_seeds(pair["m"], pair["c"], "log ratio"),
                   f"update-ELR spread ratio beta={beta:g} / {label}")
        items.append(_item(src, est, grade(est, MOMENTUM_CONFIRM_RATIO, MOMENTUM_NULL_RATIO,
                                           better="lower"),
                           f"high <= {MOMENTUM_CONFIRM_RATIO:g}", f"{label} (lr {lr_c:g})",
                           primary=primary))
    return items


# ----------------------------------------------------------------------------- fig09


def real_constrained(df: pd.DataFrame | None) -> list[Item]:
    """fig09: constrained-ELR training beats SGD where SGD is unstable (the high lrs).

    Per seed: the mean over the upper half of the lr grid of test accuracy
    (constrained - SGD at the same lr), diverged runs counted at accuracy 0.  Confirmed
    if the interval is ``>= CONSTRAINED_CONFIRM``; refuted if the mean gain is below
    ``CONSTRAINED_NULL`` (a method that does worse is never partly).  Secondary: the
    same gain against the best SGD lr of the whole grid.
    """
    src = "fig09 real runs"
    miss = _absent(df, ("method", "lr", "seed", "test_accuracy"), src)
    if miss:
        return miss
    d = df.copy()
    if "diverged" in d.columns:
        d.loc[d["diverged"].astype(bool), "test_accuracy"] = 0.0
    d["test_accuracy"] = d["test_accuracy"].fillna(0.0)
    acc = d.groupby(["method", "lr", "seed"])["test_accuracy"].first().unstack("method")
    if not {"sgd", "constrained"} <= set(acc.columns):
        return [Item(REAL, src, NOT_TESTED, "needs methods sgd and constrained")]
    lrs = np.sort(acc.index.get_level_values("lr").unique().to_numpy())
    high = acc[acc.index.get_level_values("lr") >= np.median(lrs)]
    gain = (high["constrained"] - high["sgd"]).groupby(level="seed").mean()
    est = across_seeds(gain, "test-accuracy gain over SGD at the high lrs",
                       reference=CONSTRAINED_NULL, n_units=len(high) * 2)
    items = [_item(src, est, grade(est, CONSTRAINED_CONFIRM, CONSTRAINED_NULL, better="higher",
                                   null_strict=True),
                   f"low >= {CONSTRAINED_CONFIRM:g}", "SGD at the same lr")]
    sgd_best = acc["sgd"].groupby(level="lr").mean().idxmax()
    best = acc["sgd"].xs(sgd_best, level="lr")
    gain2 = high["constrained"].groupby(level="seed").mean() - best
    est2 = across_seeds(gain2.dropna(), f"gain over the best SGD lr ({sgd_best:g})",
                        reference=CONSTRAINED_NULL)
    items.append(_item(src, est2, grade(est2, CONSTRAINED_CONFIRM, CONSTRAINED_NULL,
                                        better="higher"),
                       f"low >= {CONSTRAINED_CONFIRM:g}", f"SGD at its best lr {sgd_best:g}",
                       primary=False))
    return items


# ----------------------------------------------------------------------------- fig01


def real_norms_step10(df: pd.DataFrame | None) -> list[Item]:
    """fig01: the model's step-10 first-layer norms against real runs, and a null.

    Per seed: the median over lrs of ``|model/real - 1|`` for the weight norm (primary)
    and the gradient norm; and the paired difference of the model's error and the
    no-growth null's (norms frozen at their step-0 values).  Confirmed if the error's
    interval is ``<= NORMS_CONFIRM``; refuted if above ``NORMS_REFUTE``; the model must
    beat the null (difference surely < 0) for a confirmation to stand.
    """
    src = "fig01 real runs"
    miss = _absent(df, ("source", "lr", "seed", "weight_norm", "grad_norm"), src)
    if miss:
        return miss
    wide = df.pivot_table(index=["seed", "lr"], columns="source",
                          values=["weight_norm", "grad_norm"])
    items = []
    for quantity, primary in (("weight_norm", True), ("grad_norm", False)):
        if quantity not in wide or not {"simulated", "real"} <= set(wide[quantity].columns):
            items.append(Item(REAL, src, NOT_TESTED, f"{quantity}: needs simulated and real "
                              "rows", primary=primary))
            continue
        w = wide[quantity]
        err = (w["simulated"] / w["real"] - 1).abs().groupby(level="seed").median()
        est = across_seeds(err, f"{quantity}: median |model/real - 1|",
                           reference=NORMS_REFUTE, n_units=len(w))
        items.append(_item(src, est, grade(est, NORMS_CONFIRM, NORMS_REFUTE, better="lower"),
                           f"high <= {NORMS_CONFIRM:g}", f"{NORMS_REFUTE:g} error",
                           primary=primary))
        if "no_growth" in w.columns:
            null = (w["no_growth"] / w["real"] - 1).abs().groupby(level="seed").median()
            pair = pd.concat([err, null], axis=1, keys=["m", "n"]).dropna()
            est2 = paired_across_seeds(pair["m"], pair["n"],
                                       f"{quantity}: model error - no-growth error")
            items.append(_item(src, est2, grade(est2, 0.0, 0.0, better="lower"), "high < 0",
                               "no-growth null (step-0 norms)", primary=False))
    return items


# ----------------------------------------------------------------------------- fig10


def real_transformer(df: pd.DataFrame | None) -> list[Item]:
    """fig10: the constant-c model's per-layer ELRs against a measured Transformer.

    Per seed (over norm positions, layers and steps >= 1): median
    ``|constant_c/measured - 1|``.  Confirmed if the interval is
    ``<= TRANSFORMER_CONSTANT`` and the model beats the no-growth null (ELR frozen at
    step 0); refuted if above ``TRANSFORMER_REFUTE``.  The replay of the measured c is
    a diagnostic of the bookkeeping, shown and never graded.
    """
    src = "fig10 real runs"
    miss = _absent(df, ("source", "seed", "step", "layer", "elr"), src)
    if miss:
        return miss
    keys = ["seed", "step", "layer"] + (["norm_position"] if "norm_position" in df else [])
    wide = df.pivot_table(index=keys, columns="source", values="elr")
    if not {"measured", "constant_c"} <= set(wide.columns):
        return [Item(REAL, src, NOT_TESTED, "needs measured and constant_c rows")]
    first = wide.xs(0, level="step")["measured"] if 0 in wide.index.get_level_values("step") \
        else None
    later = wide[wide.index.get_level_values("step") >= 1]

    def err_of(col: pd.Series) -> pd.Series:
        return (col / later["measured"] - 1).abs().groupby(level="seed").median()

    err = err_of(later["constant_c"])
    runs = df[[k for k in ("seed", "norm_position") if k in df]].drop_duplicates()
    est = across_seeds(err, "median |constant-c model/measured ELR - 1|",
                       reference=TRANSFORMER_REFUTE, n_units=len(runs))
    items = [_item(src, est, grade(est, TRANSFORMER_CONSTANT, TRANSFORMER_REFUTE,
                                   better="lower"),
                   f"high <= {TRANSFORMER_CONSTANT:g}", f"{TRANSFORMER_REFUTE:g} error")]
    if first is not None:
        null = later.index.droplevel("step").map(first.to_dict())
        null_err = err_of(pd.Series(np.asarray(null, dtype=float), index=later.index))
        pair = pd.concat([err, null_err], axis=1, keys=["m", "n"]).dropna()
        est2 = paired_across_seeds(pair["m"], pair["n"], "constant-c error - no-growth error")
        items.append(_item(src, est2, grade(est2, 0.0, 0.0, better="lower"), "high < 0",
                           "no-growth null (ELR frozen at step 0)", primary=False))
    if "replay" in later.columns:
        rep = float((later["replay"] / later["measured"] - 1).abs().median())
        items.append(Item(DIAGNOSTIC, "fig10 replay of the measured c", "not graded",
                          f"median |replay/measured - 1| = {rep:.3g} (bookkeeping check, "
                          f"expected <= {TRANSFORMER_REPLAY:g})"))
    return items


# ----------------------------------------------------------------------------- fig11


def real_weight_decay(df: pd.DataFrame | None) -> list[Item]:
    """fig11: the measured equilibrium update ELR under weight decay, worst group decides.

    Real rows only, grouped by momentum ``beta``; per seed the median over (config,
    layer) of ``|measured/predicted - 1|``.  Each group is a primary item: confirmed if
    its interval is ``<= WD_CONFIRM``, refuted if above ``WD_REFUTE``.  Drift rows are
    model evidence, and the ``beta = 0`` projected drift rows are identity checks.
    """
    src = "fig11 real runs"
    miss = _absent(df, ("source", "momentum", "seed", "weight_decay", "measured_update_elr",
                        "predicted_update_elr"), src)
    if miss:
        return miss
    d = df[(df["source"] == "real") & (df["weight_decay"] > 0)
           & np.isfinite(df["measured_update_elr"])]
    if d.empty:
        return [Item(REAL, src, NOT_TESTED, "no real runs with weight decay")]
    d = d.assign(err=(d["measured_update_elr"] / d["predicted_update_elr"] - 1).abs())
    items = []
    for beta, g in d.groupby("momentum"):
        per_seed = g.groupby("seed")["err"].median()
        est = across_seeds(per_seed, f"beta={beta:g}: median |measured/predicted - 1|",
                           reference=WD_REFUTE, n_units=len(g))
        items.append(_item(src, est, grade(est, WD_CONFIRM, WD_REFUTE, better="lower"),
                           f"high <= {WD_CONFIRM:g}", f"{WD_REFUTE:g} error"))
    return items
