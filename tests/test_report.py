"""The claims report: verdicts are computed from the evidence, and respond to it.

Fabricated measurements that violate a claim must give ``refuted``, consistent ones
``confirmed`` and a missing one ``not tested``.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from normdyn import report as R
from normdyn.theory.numeric import (
    critical_lr_of,
    elr_map,
    momentum_equilibrium_update_elr_leading,
    momentum_u_growth,
    one_step_spread,
)
from normdyn.theory.registry import ClaimResult


def _fig05(argmin_lr: float, eta_star: float = 0.1) -> pd.DataFrame:
    """A V-shaped spread curve (in log lr) with its minimum at ``argmin_lr``."""
    lr = np.geomspace(1e-4, 1e2, 121)
    spread = 1 + np.abs(np.log10(lr / argmin_lr))
    return pd.DataFrame({"depth": 56, "lr": lr, "steps": 10, "spread": spread,
                         "spread_one_step": spread, "initial_spread": 100.0,
                         "critical_lr": eta_star})


def test_critical_lr_confirmed_when_minimum_at_eta_star():
    verdict, evidence = R.verdict_critical_lr(_fig05(0.1))
    assert verdict == R.CONFIRMED
    assert "eta*=0.1" in evidence


def test_critical_lr_refuted_when_minimum_far_from_eta_star():
    verdict, _ = R.verdict_critical_lr(_fig05(10.0))
    assert verdict == R.REFUTED


def test_critical_lr_partly_when_close_but_not_within_tolerance():
    verdict, _ = R.verdict_critical_lr(_fig05(0.1 * 10**0.35))
    assert verdict == R.PARTLY


def test_critical_lr_on_the_exact_one_step_spread():
    a = np.geomspace(1, 1e3, 20)
    lr = np.geomspace(1e-5, 1e1, 241)
    s = one_step_spread(lr, a)
    df = pd.DataFrame({"lr": lr, "spread": s, "critical_lr": critical_lr_of(a)})
    assert R.verdict_critical_lr(df)[0] == R.CONFIRMED


def test_missing_table_or_columns_is_not_tested():
    assert R.verdict_critical_lr(None)[0] == R.NOT_TESTED
    assert R.verdict_critical_lr(pd.DataFrame({"lr": [1.0]}))[0] == R.NOT_TESTED
    assert R.verdict_weight_decay(pd.DataFrame())[0] == R.NOT_TESTED


def _fig12(flips_when: str = "product") -> pd.DataFrame:
    axis = np.geomspace(0.05, 20, 31)
    el, ek = (a.ravel() for a in np.meshgrid(axis, axis))
    prod = el * ek
    predicted = ((prod > 1) & (el != ek)).astype(int)
    flipped = predicted if flips_when == "product" else (el > 1).astype(int)
    return pd.DataFrame({"E_l": el, "E_k": ek, "product": prod, "predicted_flip": predicted,
                         "flipped": flipped, "n_flips": flipped,
                         "log_ratio_change": -np.abs(np.log(el / ek)) * 0.1, "steps": 5})


def test_flip_condition_verdicts():
    assert R.verdict_flip_condition(_fig12())[0] == R.CONFIRMED
    assert R.verdict_flip_condition(_fig12("other"))[0] == R.REFUTED
    twice = _fig12().assign(n_flips=2)
    assert R.verdict_flip_once(_fig12())[0] == R.CONFIRMED
    assert R.verdict_flip_once(twice)[0] == R.REFUTED


def _fig06(critical_best: bool) -> pd.DataFrame:
    rows = []
    levels = {"critical": 2.0, "none": 50.0, "linear5": 20.0, "linear50": 80.0,
              "exponential": 90.0}
    if not critical_best:
        levels["critical"] = 100.0
    for source in ("simulated", "real"):
        for sched, level in levels.items():
            for step in range(0, 30):
                rows.append({"source": source, "schedule": sched, "step": step,
                             "lr_t": 0.1, "spread": level, "seed": 0})
    return pd.DataFrame(rows)


def test_warmup_verdicts_follow_the_data():
    assert R.verdict_warmup(_fig06(True), "simulated")[0] == R.CONFIRMED
    assert R.verdict_warmup(_fig06(False), "real")[0] == R.REFUTED
    only_sim = _fig06(True).query("source == 'simulated'")
    assert R.verdict_warmup(only_sim, "real")[0] == R.NOT_TESTED


def test_trainability_correlation_sign():
    spread = np.geomspace(1, 1e4, 12)
    good = pd.DataFrame({"spread_mean": spread, "final_accuracy": 1 - np.log10(spread) / 5,
                         "shortcuts": [0, 1] * 6})
    bad = good.assign(final_accuracy=np.log10(spread) / 5)
    assert R.verdict_trainability(good)[0] == R.CONFIRMED
    assert R.verdict_trainability(bad)[0] == R.REFUTED


def _fig11(factor: float) -> pd.DataFrame:
    lr, wd, beta = np.array([0.1, 0.2, 0.1]), np.array([0.05, 0.05, 0.01]), np.array([0, .9, .5])
    pred = momentum_equilibrium_update_elr_leading(lr, wd, beta)
    return pd.DataFrame({"source": "real", "lr": lr, "weight_decay": wd, "momentum": beta,
                         "layer": 0, "measured_update_elr": pred * factor})


def test_weight_decay_relative_error_thresholds():
    assert R.verdict_weight_decay(_fig11(1.02))[0] == R.CONFIRMED
    assert R.verdict_weight_decay(_fig11(1.2))[0] == R.PARTLY
    assert R.verdict_weight_decay(_fig11(2.0))[0] == R.REFUTED


def _fig08_drift(growth_factor: float) -> pd.DataFrame:
    rows = []
    for beta in (0.0, 0.9):
        slope = momentum_u_growth(beta) * growth_factor
        for layer in range(3):
            for step in range(0, 100):
                u = 10 * (layer + 1) + slope * step
                rows.append({"source": "drift", "momentum": beta, "step": step,
                             "layer": layer, "update_elr": u**-0.5, "seed": 0,
                             "spread": 3.0 - beta})
    return pd.DataFrame(rows)


def test_u_growth_and_momentum_spread():
    assert R.verdict_u_growth(_fig08_drift(1.0))[0] == R.CONFIRMED
    assert R.verdict_u_growth(_fig08_drift(0.5))[0] == R.REFUTED
    assert R.verdict_momentum_spread(_fig08_drift(1.0), "drift")[0] == R.CONFIRMED
    worse = _fig08_drift(1.0).assign(spread=lambda d: 2.0 + d["momentum"])
    assert R.verdict_momentum_spread(worse, "drift")[0] == R.REFUTED


def _fig04(decay: bool) -> pd.DataFrame:
    e0 = np.array([0.05, 0.5, 5.0])
    rows = []
    for lr in (0.1, 1.0):
        e = e0 * lr
        for step in range(0, 50):
            for layer, v in enumerate(e):
                rows.append({"model": "discrete", "lr": lr, "step": step, "layer": layer,
                             "elr": v})
            e = elr_map(e) if decay else e * np.array([1.0, 1.0, 1.01])
    return pd.DataFrame(rows)


def test_ratio_convergence_and_rate_in_simulation():
    assert R.verdict_ratio_sim(_fig04(True))[0] == R.CONFIRMED
    assert R.verdict_rate_sim(_fig04(True))[0] == R.CONFIRMED
    assert R.verdict_ratio_sim(_fig04(False))[0] == R.REFUTED


def test_combine_rules():
    c, r, n = R.CONFIRMED, R.REFUTED, R.NOT_TESTED
    assert R.combine([R.Part("a", c, ""), R.Part("b", c, "")])[0] == c
    assert R.combine([R.Part("a", r, ""), R.Part("b", r, "")])[0] == r
    assert R.combine([R.Part("a", c, ""), R.Part("b", r, "")])[0] == R.PARTLY
    assert R.combine([R.Part("a", c, ""), R.Part("b", n, "", required=True)])[0] == R.PARTLY
    assert R.combine([R.Part("a", c, ""), R.Part("b", n, "", required=False)])[0] == c
    assert R.combine([R.Part("a", n, "")])[0] == n
    assert R.combine([])[0] == n


def _claims(passed: bool = True) -> list[ClaimResult]:
    names = ["unique_attractor", "convergence_rate", "critical_lr", "flip_condition",
             "flip_at_most_once", "ratio_map", "continuous_elr", "momentum_equilibrium",
             "weight_decay_equilibrium"]
    return [ClaimResult(n, f"statement of {n}", "s", passed, "", "detail", 0.0) for n in names]


def test_build_report_from_tables(tmp_path):
    rows = R.build_report(tmp_path, claim_results=_claims(),
                          tables={"fig05": _fig05(10.0), "fig12": _fig12()})
    by = {r.claim: r for r in rows}
    assert set(r.verdict for r in rows) <= set(R.VERDICTS)
    # symbolic check passes but the measurement contradicts it -> partly
    assert by["critical_lr_widens_beyond"].verdict == R.PARTLY
    assert "refuted" in by["critical_lr_widens_beyond"].evidence
    assert by["lemma_3_4_flipping_conditions"].verdict == R.CONFIRMED
    assert by["spread_vs_trainability"].verdict == R.NOT_TESTED
    assert by["warmup_minimizes_spread"].verdict == R.NOT_TESTED
    assert by["unique_attractor"].kind == "derived"
    assert "normdyn check --only critical_lr" in by["critical_lr_widens_beyond"].command
    assert "--only fig05" in by["critical_lr_widens_beyond"].command


def test_failed_symbolic_check_refutes(tmp_path):
    rows = R.build_report(tmp_path, claim_results=_claims(passed=False), tables={})
    by = {r.claim: r for r in rows}
    assert by["flip_condition"].verdict == R.REFUTED
    assert by["lemma_3_5_flip_at_most_once"].verdict == R.REFUTED


def test_report_reads_csvs_and_writes_files(tmp_path):
    _fig05(0.1).to_csv(tmp_path / "fig05_spread_vs_lr_L56_steps10_quick.csv", index=False)
    (tmp_path / "figures.json").write_text(json.dumps({
        "profile": "quick",
        "figures": {"fig07": {"status": "failed", "error": "ImportError: no torch"}},
    }))
    rows = R.build_report(tmp_path, claim_results=_claims())
    by = {r.claim: r for r in rows}
    assert by["critical_lr_widens_beyond"].verdict == R.CONFIRMED
    assert by["spread_vs_trainability"].verdict == R.NOT_TESTED
    assert "ImportError" in by["spread_vs_trainability"].evidence
    md, js = R.write_report(rows, tmp_path, profile="quick")
    text = md.read_text()
    assert "| claim | verdict | evidence | command |" in text
    data = json.loads(js.read_text())
    assert {c["claim"] for c in data["claims"]} == set(by)
    assert all(c["verdict"] in R.VERDICTS for c in data["claims"])


@pytest.mark.parametrize("profile", [None, "quick"])
def test_other_profile_csv_is_ignored(tmp_path, profile):
    _fig05(10.0).to_csv(tmp_path / "fig05_spread_vs_lr_L20_steps10_micro.csv", index=False)
    tables, notes, used = R.load_tables(tmp_path, "quick")
    assert "fig05" not in tables and "fig05" in notes
    assert used == "quick"


def test_cli_report(tmp_path, capsys):
    from normdyn.cli import main

    _fig05(0.1).to_csv(tmp_path / "fig05_spread_vs_lr_L56_steps10_quick.csv", index=False)
    assert main(["report", "--out", str(tmp_path), "--profile", "quick",
                 "--no-property-tests"]) == 0
    out = capsys.readouterr().out
    assert "critical_lr" in out
    assert (tmp_path / "REPORT.md").is_file() and (tmp_path / "REPORT.json").is_file()


def test_critical_lr_selects_rows_by_source():
    sim = _fig05(0.1).assign(source="simulated")
    real = _fig05(10.0).assign(source="real_one_step")
    both = pd.concat([sim, real], ignore_index=True)
    assert R.verdict_critical_lr(both, "simulated")[0] == R.CONFIRMED
    assert R.verdict_critical_lr(both, "real_one_step")[0] == R.REFUTED
    assert R.verdict_critical_lr(sim, "real_one_step")[0] == R.NOT_TESTED


def test_norms_step10_per_quantity():
    lr = [0.1, 1.0, 10.0]
    real = pd.DataFrame({"source": "real", "lr": lr, "weight_norm": [1.0, 2.0, 4.0],
                         "grad_norm": [1.0, 0.5, 0.1]})
    sim = real.assign(source="simulated", grad_norm=[3.0, 3.0, 3.0])
    df = pd.concat([real, sim], ignore_index=True)
    assert R.verdict_norms_step10(df, "weight_norm")[0] == R.CONFIRMED
    assert R.verdict_norms_step10(df, "grad_norm")[0] == R.REFUTED
    assert R.verdict_norms_step10(real, "weight_norm")[0] == R.NOT_TESTED


def test_property_test_outcomes_become_supporting_evidence(tmp_path):
    outcomes = {"tests/theory/test_pairs.py": {"test_flip_iff_product_exceeds_one": "failed",
                                               "test_tie_when_product_is_one": "passed",
                                               "test_convergence_rate_bound": "passed"}}
    rows = R.build_report(tmp_path, claim_results=_claims(), tables={},
                          property_tests=outcomes)
    by = {r.claim: r for r in rows}
    flip = by["lemma_3_4_flipping_conditions"]
    assert flip.verdict == R.PARTLY  # symbolic confirmed, property tests partly
    assert "1/2 Hypothesis/property tests passed" in flip.evidence
    assert by["theorem_3_6_convergence"].verdict == R.CONFIRMED
    assert "pytest tests/theory/test_pairs.py" in by["theorem_3_6_convergence"].command
    # claims without property tests get no such part
    assert "property" not in by["spread_vs_trainability"].evidence
