"""Graders of the real runs: fabricated tables with a known truth, 3 seeds each.

Each case builds the table a figure script writes, with the effect planted (or planted
only in a confounder) and a realistic, wide scatter across the 3 seeds, and checks the
verdict and the statistic against a value worked out here by hand.  Every network claim
has a table graded confirmed and one graded refuted (issue 16, point 22), and each mended
defect of issue 16 (points 1-14) and issue 15 (A-D) is pinned by a table the old grader
got wrong.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given

from normdyn import measured as M
from normdyn.estimates import (
    CONFIRMED,
    DIAGNOSTIC,
    FINDING,
    NOT_TESTED,
    PARTLY,
    POSITIVE,
    REFUTED,
)
from normdyn.evidence import PIPELINE_FAILED, combine, combine_with_qualifier
from normdyn.theory.numeric import momentum_equilibrium_update_elr_leading
from tests.strategies import seed_distances, seed_moves

SEEDS = (0, 1, 2)
#: a wide per-seed scatter: -35%, +5%, +30% of the planted effect
SCATTER = {0: -0.35, 1: 0.05, 2: 0.30}
SEVERITY = {CONFIRMED: 0, PARTLY: 1, REFUTED: 2}


def _primary(items):
    return [i for i in items if i.kind == "real" and i.primary]


def _claim(items):
    return combine(items, "networks")[0]


# ----------------------------------------------------------------------------- fig03


def _fig03(r_by_seed: dict[int, float], seeds=SEEDS, dead: bool = False,
           drift_error: float | None = None) -> pd.DataFrame:
    """Spread falls geometrically from 100 to 100**r over 100 steps, both BN settings."""
    rows = []
    for affine in (0, 1):
        for seed in seeds:
            r = r_by_seed[seed]
            for step in range(100):
                log_s = math.log(100) * (1 - (1 - r) * step / 99)
                elrs = [1.0, math.exp(log_s)] + ([0.0] if dead else [])
                for layer, e in enumerate(elrs):
                    rows.append({"source": "real", "affine": affine, "seed": seed,
                                 "step": step, "layer": layer, "elr": e, "lr": 0.1})
    frame = pd.DataFrame(rows)
    if drift_error is not None:  # tangent-gradient runs: |w'|^2 = |w|^2 + lr^2 |g|^2
        drows = []
        for seed in seeds:
            s2 = 1.0
            for step in range(20):
                g = 0.5
                drows.append({"source": "drift", "affine": 0, "seed": seed, "step": step,
                              "layer": 0, "elr": 0.1 * g, "lr": 0.1, "sigma2": s2,
                              "grad_norm": g})
                s2 = (s2 + 0.01 * g**2) * (1 + drift_error)
        frame = pd.concat([frame, pd.DataFrame(drows)], ignore_index=True)
    return frame


def test_ratio_convergence_confirmed_refuted_and_untested():
    fast = M.real_ratio_convergence(_fig03({0: 0.05, 1: 0.15, 2: 0.2}))
    assert [i.verdict for i in fast] == [CONFIRMED, CONFIRMED]
    assert fast[0].primary and not fast[1].primary
    assert "lr=0.1" in fast[0].estimate.statistic  # graded at the lr measured (point 14)
    # the window means of a linear log-spread: r_hat = end/start of 10-step window means
    assert fast[0].estimate.value == pytest.approx(
        np.mean([(1 - (1 - r) * 94.5 / 99) / (1 - (1 - r) * 4.5 / 99)
                 for r in (0.05, 0.15, 0.2)]), rel=1e-9)
    growing = M.real_ratio_convergence(_fig03({0: 1.8, 1: 2.0, 2: 2.4}))
    assert growing[0].verdict == REFUTED and _claim(growing) == REFUTED
    assert _claim(fast) == CONFIRMED
    two = M.real_ratio_convergence(_fig03({0: 0.2, 1: 0.3}, seeds=(0, 1)))
    assert two[0].verdict == NOT_TESTED
    assert M.real_ratio_convergence(None)[0].verdict == NOT_TESTED


def test_ratio_convergence_ignores_a_dead_layer():
    """Issue 15 B: an ELR of 0 (a dead layer) made max/min infinite; live layers only."""
    live = M.real_ratio_convergence(_fig03({0: 0.05, 1: 0.15, 2: 0.2}))
    dead = M.real_ratio_convergence(_fig03({0: 0.05, 1: 0.15, 2: 0.2}, dead=True))
    assert dead[0].verdict == CONFIRMED
    assert dead[0].estimate.value == pytest.approx(live[0].estimate.value, rel=1e-12)
    assert "300/300 steps with dead layers" in dead[0].evidence


def test_ratio_convergence_drift_positive_control():
    table = _fig03({0: 0.1, 1: 0.25, 2: 0.35}, drift_error=0.0)
    ok = [i for i in M.real_ratio_convergence(table) if i.kind == POSITIVE]
    assert len(ok) == 1 and ok[0].verdict == CONFIRMED
    broken = M.real_ratio_convergence(_fig03({0: 0.1, 1: 0.25, 2: 0.35}, drift_error=0.01))
    assert [i.verdict for i in broken if i.kind == POSITIVE] == [REFUTED]
    assert combine_with_qualifier(broken)[:2] == (NOT_TESTED, PIPELINE_FAILED)


# ----------------------------------------------------------------------------- fig05


def _fig05(offsets: dict[int, float], *, beyond_slope: float = 1.0, eta: float = 0.1,
           gradient: str | None = None, control_offset: float = 0.0) -> pd.DataFrame:
    """log spread = (log10(lr/best))^2 below the minimum, ``beyond_slope`` times above."""
    rows = []
    lrs = eta * np.geomspace(1e-2, 1e2, 81)  # a grid step of 0.05 decades
    kinds = [("real", offsets)] + ([(gradient, {s: control_offset for s in offsets})]
                                   if gradient else [])
    for kind, offs in kinds:
        for seed, off in offs.items():
            best = eta * 10**off
            for lr in lrs:
                x = math.log10(lr / best)
                if x < 0 or beyond_slope > 0:
                    log_s = 2 + x**2
                else:  # rises to 0.3 decades beyond the minimum, then falls slowly
                    log_s = 2 + min(x, 0.3) ** 2 - 0.03 * max(x - 0.3, 0.0)
                row = {"source": "real_one_step", "seed": seed, "lr": lr,
                       "spread": math.exp(log_s), "critical_lr": eta,
                       "initial_spread": 100.0 * (1 + seed), "depth": 20}
                if gradient:
                    row["gradient"] = kind
                rows.append(row)
    return pd.DataFrame(rows)


def _crit(items):
    return next(i for i in items if i.kind == "real" and "argmin lr" in i.estimate.statistic)


def test_critical_lr_at_and_far_from_eta_star():
    at = M.real_critical_lr(_fig05({0: -0.03, 1: 0.01, 2: 0.04}))
    assert _crit(at).verdict == CONFIRMED and _claim(at) == CONFIRMED
    # the parabola through the grid minimum finds an off-grid minimum exactly
    assert _crit(at).estimate.value == pytest.approx(np.mean([0.03, 0.01, 0.04]), abs=1e-9)
    far = M.real_critical_lr(_fig05({0: -0.8, 1: -1.0, 2: -1.3}))
    assert _crit(far).verdict == REFUTED and _claim(far) == REFUTED
    assert _crit(M.real_critical_lr(_fig05({0: -0.2, 1: -0.3, 2: -0.45}))).verdict == PARTLY
    sim_only = _fig05({0: 0.0, 1: 0.0, 2: 0.0}).assign(source="simulated")
    assert M.real_critical_lr(sim_only)[0].verdict == NOT_TESTED


def test_critical_lr_the_issue_cases_are_monotone():
    """Point 1: 0.6,0.6,0.6 was refuted but 0.6,0.7,0.8 only partly; 0.1,0.1,0.1
    confirmed but 0,0,0.1 partly (zero-width intervals on the grid)."""
    def v(offs):
        return _crit(M.real_critical_lr(_fig05(dict(zip(SEEDS, offs, strict=True))))).verdict

    assert SEVERITY[v((0.6, 0.7, 0.8))] >= SEVERITY[v((0.6, 0.6, 0.6))]
    assert SEVERITY[v((0.1, 0.1, 0.1))] >= SEVERITY[v((0.0, 0.0, 0.1))]
    est = _crit(M.real_critical_lr(_fig05({0: 0.6, 1: 0.6, 2: 0.6}))).estimate
    assert est.high > est.low  # never a zero-width interval


@given(seed_distances, seed_moves)
def test_moving_a_seed_further_never_makes_the_verdict_milder(distances, move):
    from normdyn.estimates import grade, monotone_across_seeds

    which, by = move
    further = list(distances)
    further[which] += by

    def verdict(x):
        est = monotone_across_seeds(x, "d", resolution=0.05 / math.sqrt(12))
        return grade(est, 0.15, 0.5, better="lower")

    assert SEVERITY[verdict(further)] >= SEVERITY[verdict(distances)]


def test_critical_lr_widening_is_graded():
    """Point 12: 'beyond it, disparities widen' was printed, never graded."""
    widening = M.real_critical_lr(_fig05({0: -0.03, 1: 0.01, 2: 0.04}))
    trend = next(i for i in widening if "beyond the argmin" in i.estimate.statistic)
    assert trend.verdict == CONFIRMED and trend.primary
    falling = M.real_critical_lr(_fig05({0: -0.03, 1: 0.01, 2: 0.04}, beyond_slope=-1.0))
    trend = next(i for i in falling if "beyond the argmin" in i.estimate.statistic)
    assert trend.verdict == REFUTED
    assert _claim(falling) == REFUTED


def test_critical_lr_positive_control_failing_voids_the_claim():
    """Issue 15 D: with the model's constant-c gradient the argmin must sit at eta*."""
    offs = {0: -0.8, 1: -1.0, 2: -1.3}
    good = M.real_critical_lr(_fig05(offs, gradient="constant_c", control_offset=0.02))
    ctl = [i for i in good if i.kind == POSITIVE]
    assert [i.verdict for i in ctl] == [CONFIRMED]
    assert _claim(good) == REFUTED  # the pipeline works, so the refutation stands
    bad = M.real_critical_lr(_fig05(offs, gradient="constant_c", control_offset=0.3))
    assert [i.verdict for i in bad if i.kind == POSITIVE] == [REFUTED]
    assert combine_with_qualifier(bad)[:2] == (NOT_TESTED, PIPELINE_FAILED)


def test_critical_lr_shift_against_initial_spread_is_a_finding():
    frames = []
    for depth, shift in ((8, -0.2), (20, -0.5)):
        f = _fig05({s: shift + 0.02 * SCATTER[s] for s in SEEDS})
        frames.append(f.assign(depth=depth, initial_spread=10.0 if depth == 8 else 1000.0))
    items = M.real_critical_lr(pd.concat(frames, ignore_index=True))
    finding = [i for i in items if i.kind == FINDING]
    assert len(finding) == 1
    # slope = (-0.5 - (-0.2)) / (3 - 1) = -0.15 per decade of initial spread, every seed
    assert finding[0].estimate.value == pytest.approx(-0.15, abs=1e-6)


# ----------------------------------------------------------------------------- fig06


def _fig06(critical: float, best: float = 10.0, loss_fall: float = 0.5,
           scores: dict | None = None) -> pd.DataFrame:
    levels = {"critical": critical, "none": 1000.0, "linear5": best * 3, "linear20": best,
              "exp25": best * 2}
    rows = []
    for s, level in levels.items():
        for seed in SEEDS:
            lvl = level * (1 + SCATTER[seed] * 0.3) if scores is None else scores[s][seed]
            for step in range(30):
                rows.append({"source": "real", "schedule": s, "seed": seed, "step": step,
                             "spread": lvl, "dead_layers": 0, "robust_spread": lvl,
                             "loss": 2.3 * (1 - (1 - loss_fall) * step / 29)})
    return pd.DataFrame(rows)


def test_warmup_is_graded_against_the_best_tuned_schedule():
    equal = M.real_warmup(_fig06(10.0))
    assert equal[0].verdict == CONFIRMED and _claim(equal) == CONFIRMED
    assert equal[0].control == "best of 3 tuned warm-ups, chosen on the other seeds"
    # much better than no warm-up, but 4x worse than the tuned one: refuted
    worse = M.real_warmup(_fig06(40.0))
    assert worse[0].verdict == REFUTED and _claim(worse) == REFUTED
    sim = _fig06(10.0).assign(source="simulated")
    assert M.real_warmup(sim)[0].verdict == NOT_TESTED


def test_warmup_control_is_cross_fitted():
    """Point 9: the best warm-up was chosen on the runs it was graded on."""
    e = math.exp
    scores = {"critical": [e(7)] * 3, "none": [e(20)] * 3, "linear5": [e(0), e(10), e(10)],
              "linear20": [e(7)] * 3, "exp25": [e(30)] * 3}
    item = M.real_warmup(_fig06(0.0, scores=scores))[0]
    # seed 0: best of the others is linear20 (7 < 10): 7 - 7 = 0; seeds 1, 2: linear5
    # (mean 5 < 7): 7 - 10 = -3.  Mean log ratio -2 (in-sample linear5 would give +1/3).
    assert item.estimate.value == pytest.approx(math.exp(-2.0), rel=1e-12)


def test_warmup_uninformative_when_no_schedule_learned():
    """Issue 15 A: every loss still at its start: not tested (uninformative)."""
    items = M.real_warmup(_fig06(40.0, loss_fall=0.95))
    assert items[0].verdict == NOT_TESTED and items[0].qualifier.startswith("uninformative")
    verdict, qualifier, *_ = combine_with_qualifier(items)
    assert verdict == NOT_TESTED and qualifier.startswith("uninformative: no schedule")


# ----------------------------------------------------------------------------- fig07


def _fig07(kind: str, seed: int = 0, **extra) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for depth_i, depth in enumerate((8, 20, 38)):
        for lr in (0.03, 0.3, 3.0):
            for shortcuts in (0, 1):
                for s in SEEDS:
                    noise = rng.normal()
                    if kind in ("within", "against"):  # spread varies within cells
                        log_s = 1 + noise
                        sign = 1 if kind == "within" else -1
                        acc = 0.6 - sign * 0.1 * noise + 0.03 * rng.normal()
                    elif kind == "architecture":  # only NoShort vs Short differ
                        log_s = 1 + 2 * (1 - shortcuts) + 0.01 * noise
                        acc = 0.8 - 0.3 * (1 - shortcuts) + 0.05 * rng.normal()
                    else:  # "depth": both move with depth only; Short more negative
                        log_s = depth_i + 0.3 * noise
                        acc = 0.9 - 0.2 * depth_i - (0.05 if shortcuts else 0.0) * depth_i \
                            + 0.05 * rng.normal()
                    rows.append({"shortcuts": shortcuts, "depth": depth, "lr": lr,
                                 "seed": s, "spread_mean": math.exp(log_s),
                                 "test_accuracy": acc, "test_accuracy_batch_stats": acc,
                                 "train_loss_first": 2.3, "train_loss_last": 0.5,
                                 "dead_layers_init": 0, "diverged": 0, **extra})
    return pd.DataFrame(rows)


def test_trainability_within_cells_confirms_and_reversed_refutes():
    items = M.real_trainability(_fig07("within"))
    assert [i.verdict for i in _primary(items)] == [CONFIRMED, CONFIRMED]
    assert items[0].estimate.high <= -0.3 and items[0].estimate.p_value < 0.01
    assert items[0].estimate.n_seeds == 3
    against = M.real_trainability(_fig07("against"))
    assert [i.verdict for i in _primary(against)] == [REFUTED, REFUTED]
    assert _claim(against) == REFUTED  # point 22: refuted, not merely "!= confirmed"


def test_trainability_correlation_only_through_depth_is_not_confirmed():
    """Pinned regression: pooled correlation through depth alone used to confirm."""
    d = _fig07("depth")
    pooled = float(np.log(d["spread_mean"]).corr(d["test_accuracy"], method="spearman"))
    assert pooled < -0.8  # the old statistic saw a strong link
    items = M.real_trainability(d)
    assert items[0].verdict != CONFIRMED
    assert abs(items[0].estimate.value) < 0.3


def test_trainability_graded_within_architecture_too():
    """Point 11: cells (depth, lr) mixed NoShort and Short; a link only between the two
    architectures confirmed.  Within (shortcuts, depth, lr) it is not there."""
    items = M.real_trainability(_fig07("architecture"))
    by = {i.estimate.statistic.split(")")[0]: i for i in _primary(items)}
    assert by["within-(depth, lr"].verdict == CONFIRMED
    assert by["within-(shortcuts, depth, lr"].verdict != CONFIRMED
    assert _claim(items) != CONFIRMED


def test_trainability_secondary_bootstrap_survives_degenerate_resamples():
    """Point 3: one all-NaN resample made the secondary interval [nan, nan]."""
    items = M.real_trainability(_fig07("within"))
    second = next(i for i in items if i.kind == "real" and not i.primary)
    assert math.isfinite(second.estimate.low) and math.isfinite(second.estimate.high)


def test_trainability_uninformative_when_nothing_learned():
    """Issue 15 A: the best configuration at chance: not tested (uninformative)."""
    d = _fig07("within").assign(test_accuracy=lambda f: 0.1 + 0.05 * (f["test_accuracy"] - 0.6))
    items = M.real_trainability(d)
    assert all(i.verdict == NOT_TESTED for i in items if i.kind == "real")
    assert "chance" in combine_with_qualifier(items)[1]
    lossy = _fig07("within").assign(train_loss_last=2.2)
    assert combine_with_qualifier(M.real_trainability(lossy))[1].startswith(
        "uninformative: its training loss")


def test_trainability_leaves_out_dead_layer_spreads_of_older_tables():
    """Issue 15 B: a spread of 1e28 is a dead layer, not a disparity."""
    d = _fig07("within").drop(columns=["dead_layers_init"])
    d.loc[0, "spread_mean"] = 1e28
    item = M.real_trainability(d)[0]
    assert "1 spreads above 1e+12 left out as dead-layer dominated" in item.evidence
    assert item.estimate.n_units == len(d) - 1


def test_trainability_flags_batchnorm_disagreement():
    """Issue 15 C: |batch-stats - recalibrated accuracy| > 0.05 is listed per run."""
    d = _fig07("within")
    d.loc[3, "test_accuracy_batch_stats"] = d.loc[3, "test_accuracy"] + 0.2
    flag = [i for i in M.real_trainability(d) if i.kind == DIAGNOSTIC and "BatchNorm" in
            i.evidence]
    assert len(flag) == 1 and flag[0].evidence.startswith("BatchNorm flag: 1/54 runs")


def test_within_cell_spearman_closed_form():
    x = np.array([1.0, 2.0, 3.0, 10.0, 20.0, 30.0])
    y = np.array([3.0, 2.0, 1.0, 0.0, -1.0, -2.0])
    cells = np.array([0, 0, 0, 1, 1, 1])
    assert M.within_cell_spearman(x, y, cells) == pytest.approx(-1.0)
    # across cells the association is also negative, but within cell 1 it is reversed
    y2 = np.array([3.0, 2.0, 1.0, -2.0, -1.0, 0.0])
    assert M.within_cell_spearman(x, y2, cells) == pytest.approx(0.0)


# ----------------------------------------------------------------------------- fig08


def _fig08(ratio_to_control: float, diverge_at: int | None = None,
           late_treated: float | None = None) -> pd.DataFrame:
    rows = []
    levels = {(0.9, 0.1): 10.0 * ratio_to_control, (0.0, 0.1): 20.0, (0.0, 1.0): 10.0}
    for (beta, lr), level in levels.items():
        for seed in SEEDS:
            for step in range(50):
                v = level * (1 + 0.3 * SCATTER[seed])
                if beta == 0.0 and lr == 1.0 and diverge_at is not None and step >= diverge_at:
                    v = math.nan
                if beta > 0 and late_treated is not None and step >= 25:
                    v = late_treated
                rows.append({"source": "real", "momentum": beta, "lr": lr, "seed": seed,
                             "step": step, "spread": v})
    return pd.DataFrame(rows)


def test_momentum_is_separated_from_its_larger_effective_lr():
    same = M.real_momentum(_fig08(1.0))
    assert same[0].control == "SGD at eta/(1-beta) (lr 1)"
    assert same[0].verdict == PARTLY  # no better than SGD at the same effective lr
    assert same[1].verdict == CONFIRMED  # though better than SGD at the same lr
    good = M.real_momentum(_fig08(0.5))
    assert good[0].verdict == CONFIRMED
    bad = M.real_momentum(_fig08(1.6))
    assert bad[0].verdict == REFUTED and _claim(bad) == REFUTED
    no_control = _fig08(1.0).query("lr < 0.5")
    assert M.real_momentum(no_control)[0].verdict == NOT_TESTED


def test_momentum_compares_over_common_steps_only():
    """Point 13: the control diverges at step 25; the treated run's spread only rises
    after it.  Over each run's own steps the ratio was ~2x higher."""
    d = _fig08(0.5, diverge_at=25, late_treated=1e4)
    item = M.real_momentum(d)[0]
    assert item.estimate.value == pytest.approx(0.5, rel=1e-9)  # steps 1..24 only
    assert "over the 24 steps common" in item.evidence


# ----------------------------------------------------------------------------- fig09


def _fig09(gain: float, sgd_low: float = 0.3, sgd_best: float = 0.8,
           diverge_sgd_high: bool = False) -> pd.DataFrame:
    rows = []
    for seed in SEEDS:
        for lr in (0.1, 1.0, 10.0, 100.0):
            sgd = sgd_best if lr < 1 else sgd_low
            for method, acc in (("sgd", sgd), ("constrained", sgd + gain * (lr >= 10))):
                div = int(diverge_sgd_high and method == "sgd" and lr >= 10)
                sign = 1 if method == "sgd" else -1  # the arms scatter independently
                a = math.nan if div else acc + sign * 0.04 * SCATTER[seed]
                for step in range(20):
                    rows.append({"method": method, "lr": lr, "seed": seed, "step": step,
                                 "loss": 2.3 - 1.5 * step / 19, "test_accuracy": a,
                                 "test_accuracy_batch_stats": a, "diverged": div})
    return pd.DataFrame(rows)


def test_constrained_gain_confirmed_and_refuted():
    good = M.real_constrained(_fig09(0.6, sgd_best=0.8))
    assert good[0].verdict == CONFIRMED and good[1].verdict == CONFIRMED
    assert good[0].estimate.value == pytest.approx(0.6)
    assert _claim(good) == CONFIRMED
    worse = M.real_constrained(_fig09(-0.1))
    assert worse[0].verdict == REFUTED and _claim(worse) == REFUTED
    small = M.real_constrained(_fig09(0.04, sgd_best=0.35))
    assert small[0].verdict == PARTLY


def test_constrained_must_not_lose_to_tuned_sgd():
    """Point 4: the best-lr SGD control was secondary and could never refute."""
    items = M.real_constrained(_fig09(0.3, sgd_best=0.8))  # 0.6 at high lr vs 0.8 tuned
    tuned = items[1]
    assert tuned.primary and tuned.verdict == REFUTED
    assert items[0].verdict == CONFIRMED and _claim(items) == REFUTED


def test_null_strict_refutes_on_the_interval_not_the_point_estimate():
    """Point 7: -0.001 [-0.5, 0.5] was refuted on its point estimate."""
    from normdyn.estimates import Estimate, grade

    est = Estimate("x", -0.001, -0.5, 0.5, "t interval", 3, 3, 0.0, "d")
    assert grade(est, 0.05, 0.0, better="higher", null_strict=True) == PARTLY
    below = Estimate("x", 0.01, -0.02, 0.04, "t interval", 3, 3, 0.0, "d")
    assert grade(below, 0.05, 0.0, better="higher", null_strict=True) == REFUTED


def test_diverged_runs_count_at_chance_and_are_counted():
    """Point 8: a diverged SGD run counted at accuracy 0 (below chance 0.1)."""
    d = _fig09(0.0, sgd_low=0.1, diverge_sgd_high=True)  # constrained at 0.1 too
    item = M.real_constrained(d)[0]
    # high lrs (10, 100): constrained 0.1 + scatter vs SGD diverged -> chance 0.1
    assert item.estimate.value == pytest.approx(np.mean([-0.04 * SCATTER[s] for s in SEEDS]))
    assert "diverged runs (counted at chance 0.1): constrained 0, sgd 6" in item.evidence


def test_constrained_uninformative_when_sgd_never_learned():
    """Issue 15 A: SGD at its best lr at 0.19 (< chance + 0.2): nothing to stabilize."""
    items = M.real_constrained(_fig09(0.3, sgd_low=0.12, sgd_best=0.19))
    assert all(i.verdict == NOT_TESTED for i in items if i.kind == "real")
    assert combine_with_qualifier(items)[1].startswith(
        "uninformative: best control's test accuracy 0.19")


# ----------------------------------------------------------------------------- fig01


def _fig01(weight_error: float, grad_error: float | None = None,
           real_growth_after_1: bool = True) -> pd.DataFrame:
    """Real norms at step 10 from step-0 norms (w0 = 1, g0 = 2), the model off by a
    per-seed error with wide scatter."""
    grad_error = weight_error if grad_error is None else grad_error
    rows = []
    for seed in SEEDS:
        for lr in (0.1, 1.0, 10.0):
            w0, g0 = 1.0, 2.0
            w1 = math.sqrt(w0**2 + lr**2 * g0**2)
            real_w = w1 * (1.5 if real_growth_after_1 else 1.0)
            real_g = g0 * w0 / real_w
            ew = weight_error * (1 + SCATTER[seed])
            eg = grad_error * (1 + SCATTER[seed])
            rows += [{"source": "real", "seed": seed, "lr": lr, "weight_norm": real_w,
                      "grad_norm": real_g},
                     {"source": "simulated", "seed": seed, "lr": lr,
                      "weight_norm": real_w * (1 + ew), "grad_norm": real_g * (1 + eg)},
                     {"source": "no_growth", "seed": seed, "lr": lr, "weight_norm": w0,
                      "grad_norm": g0}]
    return pd.DataFrame(rows)


def test_step10_norms_confirmed_and_refuted():
    items = M.real_norms_step10(_fig01(0.05))
    assert [i.verdict for i in items] == [CONFIRMED] * 6
    assert items[1].control == "no-growth null (step-0 norms)"
    assert items[2].control == "step-1 null (norms frozen after step 1)"
    assert _claim(items) == CONFIRMED
    assert _claim(M.real_norms_step10(_fig01(2.0))) == REFUTED


def test_step10_heavy_tailed_errors_refute():
    """Point 2: grad-norm errors 1371, 311, 515 per seed were partly [-665, 2130]."""
    d = _fig01(0.05)
    sim = d["source"] == "simulated"
    for seed, e in zip(SEEDS, (1371, 311, 515), strict=True):
        rows = sim & (d["seed"] == seed)
        d.loc[rows, "grad_norm"] = d.loc[(d["source"] == "real") & (d["seed"] == seed),
                                         "grad_norm"].to_numpy() * (1 + e)
    items = M.real_norms_step10(d)
    grad = next(i for i in items if i.estimate.statistic == "grad_norm: median |model/real - 1|")
    assert grad.verdict == REFUTED
    assert grad.estimate.value == pytest.approx((1371 * 311 * 515) ** (1 / 3), rel=1e-9)
    assert grad.estimate.low > 0.5


def test_step10_gradient_norm_alone_flips_the_claim():
    """Point 5: the gradient norm is half the claim and was secondary."""
    items = M.real_norms_step10(_fig01(0.05, grad_error=3.0))
    weight = [i for i in items if i.estimate.statistic.startswith("weight_norm")]
    assert all(i.verdict == CONFIRMED for i in weight)
    grad = next(i for i in items if i.estimate.statistic == "grad_norm: median |model/real - 1|")
    assert grad.primary and grad.verdict == REFUTED
    assert _claim(items) == REFUTED


def test_step10_model_must_beat_the_step1_null():
    """Point 6: no growth after step 1 in the real run; the model (5% off) is beaten by the
    null that freezes the norms after step 1 (exact here)."""
    items = M.real_norms_step10(_fig01(0.05, real_growth_after_1=False))
    step1 = [i for i in items if i.control.startswith("step-1 null")]
    assert len(step1) == 2 and all(i.verdict == REFUTED for i in step1)
    no_growth = [i for i in items if i.control.startswith("no-growth")]
    assert all(i.verdict == CONFIRMED for i in no_growth)
    assert _claim(items) == REFUTED


# ----------------------------------------------------------------------------- fig10


def _fig10(const_error: float, null_better: bool = False, drift: bool = False) -> pd.DataFrame:
    rows = []
    for seed in SEEDS:
        for pos in ("post", "pre"):
            for layer in ("a", "b"):
                for step in range(20):
                    measured = 1.0 if null_better else 1.0 / math.sqrt(1 + step)
                    e = const_error * (1 + SCATTER[seed])
                    for source, v in (("measured", measured), ("replay", measured),
                                      ("constant_c", measured * (1 + e))):
                        rows.append({"source": source, "seed": seed, "norm_position": pos,
                                     "layer": layer, "step": step, "elr": v, "lr": 0.1})
        if drift:
            s2 = 1.0
            for step in range(10):
                e = 0.3
                rows.append({"source": "drift", "seed": seed, "norm_position": "post",
                             "layer": "a", "step": step, "elr": e, "lr": 0.1, "sigma2": s2})
                s2 *= 1 + e**2
    return pd.DataFrame(rows)


def test_transformer_confirmed_refuted_and_replay_is_diagnostic():
    items = M.real_transformer(_fig10(0.1))
    assert items[0].verdict == CONFIRMED
    assert items[1].verdict == CONFIRMED  # far better than the frozen-ELR null
    assert items[2].kind == DIAGNOSTIC and items[2].verdict == "not graded"
    assert items[0].estimate.n_units == 6
    assert "at lr 0.1" in items[0].estimate.statistic  # narrowed to the lr measured
    assert _claim(items) == CONFIRMED
    assert _claim(M.real_transformer(_fig10(1.5))) == REFUTED


def test_transformer_null_beats_the_model():
    """Point 22: the frozen-ELR null refuted case (measured ELR constant: the null is
    exact, the model 10% off)."""
    items = M.real_transformer(_fig10(0.1, null_better=True))
    assert items[0].verdict == CONFIRMED and items[1].verdict == REFUTED
    assert _claim(items) == REFUTED


def test_transformer_drift_positive_control():
    ctl = [i for i in M.real_transformer(_fig10(0.1, drift=True)) if i.kind == POSITIVE]
    assert [i.verdict for i in ctl] == [CONFIRMED]


# ----------------------------------------------------------------------------- fig11


def _fig11(error_by_config: dict[tuple, float]) -> pd.DataFrame:
    rows = []
    for (lr, wd, beta), err in error_by_config.items():
        pred = float(momentum_equilibrium_update_elr_leading(lr, wd, beta))
        for seed in SEEDS:
            for layer in range(4):
                for source in ("real", "drift" if beta else "drift_identity"):
                    e = err * (1 + SCATTER[seed]) if source == "real" else 0.0
                    rows.append({"source": source, "lr": lr, "weight_decay": wd,
                                 "momentum": beta, "seed": seed, "layer": layer,
                                 "measured_update_elr": pred * (1 + e),
                                 "predicted_update_elr": pred})
    return pd.DataFrame(rows)


GOOD_WD = {(0.1, 0.1, 0.0): 0.01, (0.1, 0.05, 0.5): 0.02, (0.05, 0.05, 0.9): 0.03}


def test_weight_decay_confirmed_and_refuted():
    good = M.real_weight_decay(_fig11(GOOD_WD))
    assert [i.verdict for i in good] == [CONFIRMED] * 3 and _claim(good) == CONFIRMED
    assert good[0].estimate.unit_name == "layer rows"  # point 14: not "runs"
    assert "12 layer rows" in good[0].evidence
    bad = M.real_weight_decay(_fig11({**GOOD_WD, (0.1, 0.05, 0.5): 0.9}))
    assert _claim(bad) == REFUTED


def test_weight_decay_worst_config_decides_within_a_beta_group():
    """Point 10: one (lr, lambda) config 50% off was hidden by pooling the beta group (and
    graded confirmed); 90% off (with the wide scatter) is refuted."""
    half = M.real_weight_decay(_fig11({**GOOD_WD, (0.2, 0.05, 0.5): 0.5,
                                       (0.05, 0.1, 0.5): 0.01, (0.1, 0.2, 0.5): 0.01}))
    assert _claim(half) != CONFIRMED
    table = _fig11({**GOOD_WD, (0.2, 0.05, 0.5): 0.9, (0.05, 0.1, 0.5): 0.01,
                    (0.1, 0.2, 0.5): 0.01})
    items = M.real_weight_decay(table)
    assert len(items) == 6
    bad = [i for i in items if i.estimate.statistic.startswith("lr=0.2, lambda=0.05, beta=0.5")]
    assert [i.verdict for i in bad] == [REFUTED]
    assert _claim(items) == REFUTED
