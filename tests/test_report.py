"""The claims report: model checks, the combination rules and the written report.

Fabricated tables that violate a claim must give ``refuted``, consistent ones
``confirmed`` and a missing one ``not tested``.  The graders of the real runs are
tested in ``tests/test_measured.py``; here the model-side checks
(:mod:`normdyn.verdicts`) and how a row is put together.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from normdyn import report as R
from normdyn import verdicts as V
from normdyn.estimates import MODEL, REAL, Item
from normdyn.theory.numeric import (
    elr_map,
    momentum_equilibrium_update_elr_leading,
    momentum_u_growth,
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
    verdict, evidence = V.verdict_critical_lr(_fig05(0.1))
    assert verdict == V.CONFIRMED
    assert "eta*=0.1" in evidence


def test_critical_lr_refuted_when_minimum_far_from_eta_star():
    verdict, _ = V.verdict_critical_lr(_fig05(10.0))
    assert verdict == V.REFUTED


def test_critical_lr_partly_when_close_but_not_within_tolerance():
    verdict, _ = V.verdict_critical_lr(_fig05(0.1 * 10**0.35))
    assert verdict == V.PARTLY


def _typed_one_step_spread(lr: np.ndarray, a: np.ndarray) -> np.ndarray:
    """S(lr) = max F(lr a)/min F(lr a), F(x) = x/(1+x^2): typed here, not the package's."""
    x = np.outer(lr, a)
    f = x / (1.0 + x * x)
    return f.max(axis=1) / f.min(axis=1)


def test_critical_lr_on_the_exact_one_step_spread():
    a = np.geomspace(1, 1e3, 20)
    lr = np.geomspace(1e-5, 1e1, 241)
    eta_star = 1.0 / np.sqrt(a.max() * a.min())  # 1/sqrt(a_max a_min), typed
    df = pd.DataFrame({"lr": lr, "spread": _typed_one_step_spread(lr, a),
                       "critical_lr": eta_star})
    assert V.verdict_critical_lr(df)[0] == V.CONFIRMED
    # the verdict reads the table it is given: eta* put a decade off is refuted
    assert V.verdict_critical_lr(df.assign(critical_lr=10 * eta_star))[0] == V.REFUTED


def test_missing_table_or_columns_is_not_tested():
    assert V.verdict_critical_lr(None)[0] == V.NOT_TESTED
    assert V.verdict_critical_lr(pd.DataFrame({"lr": [1.0]}))[0] == V.NOT_TESTED
    assert V.verdict_weight_decay(pd.DataFrame())[0] == V.NOT_TESTED


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
    assert V.verdict_flip_condition(_fig12())[0] == V.CONFIRMED
    assert V.verdict_flip_condition(_fig12("other"))[0] == V.REFUTED
    twice = _fig12().assign(n_flips=2)
    assert V.verdict_flip_once(_fig12())[0] == V.CONFIRMED
    assert V.verdict_flip_once(twice)[0] == V.REFUTED


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
    assert V.verdict_warmup(_fig06(True), "simulated")[0] == V.CONFIRMED
    assert V.verdict_warmup(_fig06(False), "real")[0] == V.REFUTED
    only_sim = _fig06(True).query("source == 'simulated'")
    assert V.verdict_warmup(only_sim, "real")[0] == V.NOT_TESTED


def _fig11(factor: float) -> pd.DataFrame:
    lr, wd, beta = np.array([0.1, 0.2, 0.1]), np.array([0.05, 0.05, 0.01]), np.array([0, .9, .5])
    pred = momentum_equilibrium_update_elr_leading(lr, wd, beta)
    return pd.DataFrame({"source": "drift", "lr": lr, "weight_decay": wd, "momentum": beta,
                         "layer": 0, "measured_update_elr": pred * factor})


def test_weight_decay_relative_error_thresholds():
    assert V.verdict_weight_decay(_fig11(1.02))[0] == V.CONFIRMED
    assert V.verdict_weight_decay(_fig11(1.2))[0] == V.PARTLY
    assert V.verdict_weight_decay(_fig11(2.0))[0] == V.REFUTED


def test_weight_decay_model_check_worst_group_decides_and_identity_rows_apart():
    good = _fig11(1.0)
    bad_beta = good.assign(measured_update_elr=np.where(
        good["momentum"] == 0.9, good["measured_update_elr"] * 1.5, good["measured_update_elr"]))
    assert V.verdict_weight_decay(bad_beta)[0] == V.REFUTED
    identity = good.assign(source=np.where(good["momentum"] == 0, "drift_identity", "drift"))
    verdict, text = V.verdict_weight_decay(identity)
    assert verdict == V.CONFIRMED and text.startswith("identity checks (beta=0, projected)")
    # measured (real) rows never reach the model check
    assert V.verdict_weight_decay(good.assign(source="real"))[0] == V.NOT_TESTED


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
    assert V.verdict_u_growth(_fig08_drift(1.0))[0] == V.CONFIRMED
    assert V.verdict_u_growth(_fig08_drift(0.5))[0] == V.REFUTED
    assert V.verdict_momentum_spread(_fig08_drift(1.0), "drift")[0] == V.CONFIRMED
    worse = _fig08_drift(1.0).assign(spread=lambda d: 2.0 + d["momentum"])
    assert V.verdict_momentum_spread(worse, "drift")[0] == V.REFUTED


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
    assert V.verdict_ratio_sim(_fig04(True))[0] == V.CONFIRMED
    assert V.verdict_rate_sim(_fig04(True))[0] == V.CONFIRMED
    assert V.verdict_ratio_sim(_fig04(False))[0] == V.REFUTED


def _claims(passed: bool = True) -> list[ClaimResult]:
    names = ["unique_attractor", "convergence_rate", "critical_lr", "flip_condition",
             "flip_at_most_once", "ratio_map", "continuous_elr", "momentum_equilibrium",
             "weight_decay_equilibrium"]
    return [ClaimResult(n, f"statement of {n}", "s", passed, "", "detail", 0.0) for n in names]


def test_failed_symbolic_check_refutes(tmp_path):
    rows = R.build_report(tmp_path, claim_results=_claims(passed=False), tables={})
    by = {r.claim: r for r in rows}
    assert by["flip_condition"].verdict == V.REFUTED
    assert by["lemma_3_5_flip_at_most_once"].verdict == V.REFUTED


@pytest.mark.parametrize("profile", [None, "quick"])
def test_other_profile_csv_is_ignored(tmp_path, profile):
    _fig05(10.0).to_csv(tmp_path / "fig05_spread_vs_lr_L20_steps10_micro.csv", index=False)
    tables, notes, used = R.load_tables(tmp_path, "quick")
    assert "fig05" not in tables and "fig05" in notes
    assert used == "quick"


def test_critical_lr_selects_rows_by_source():
    sim = _fig05(0.1).assign(source="simulated")
    real = _fig05(10.0).assign(source="real_one_step")
    both = pd.concat([sim, real], ignore_index=True)
    assert V.verdict_critical_lr(both, "simulated")[0] == V.CONFIRMED
    assert V.verdict_critical_lr(both, "real_one_step")[0] == V.REFUTED
    assert V.verdict_critical_lr(sim, "real_one_step")[0] == V.NOT_TESTED


def _claims(passed: bool = True) -> list[ClaimResult]:
    names = ["unique_attractor", "convergence_rate", "critical_lr", "flip_condition",
             "flip_at_most_once", "ratio_map", "continuous_elr", "momentum_equilibrium",
             "weight_decay_equilibrium"]
    return [ClaimResult(n, f"statement of {n}", "s", passed, "", "detail", 0.0) for n in names]


def _real(verdict: str, primary: bool = True) -> Item:
    return Item(REAL, "fig", verdict, "", primary=primary)


def _model(verdict: str, required: bool = True) -> Item:
    return Item(MODEL, "sym", verdict, "", required=required)


def test_combine_networks_grades_from_real_items_only():
    c, r, p, n = V.CONFIRMED, V.REFUTED, V.PARTLY, V.NOT_TESTED
    # theory alone never grades a claim about networks
    assert R.combine([_model(c), _model(c)], "networks")[:2] == (n, "consistent")
    assert R.combine([_real(c), _model(r)], "networks")[:2] == (c, "inconsistent")
    assert R.combine([_real(r), _model(c)], "networks")[:2] == (r, "consistent")
    assert R.combine([_real(c), _real(c, primary=False)], "networks")[0] == c
    assert R.combine([_real(c), _real(r, primary=False)], "networks")[0] == p
    assert R.combine([_real(r), _real(c, primary=False)], "networks")[0] == r
    assert R.combine([_real(c), _real(n, primary=False)], "networks")[0] == p
    assert R.combine([_real(n), _real(c, primary=False)], "networks")[0] == n
    assert R.combine([_real(p)], "networks")[0] == p
    assert R.combine([], "networks")[:2] == (n, "n/a")


def test_combine_model_claims_from_model_items():
    c, r, n = V.CONFIRMED, V.REFUTED, V.NOT_TESTED
    assert R.combine([_model(c), _model(n, required=False)], "model")[0] == c
    assert R.combine([_model(c), _model(n)], "model")[0] == V.PARTLY
    assert R.combine([_model(c), _model(r)], "model")[0] == V.PARTLY
    assert R.combine([_model(r), _model(r)], "model")[0] == r
    assert R.combine([_model(c, required=False)], "model")[0] == n
    with pytest.raises(ValueError, match=r"^subject must be one of \('networks', 'model'\), "
                                         r"got 'nets'$"):
        R.combine([], "nets")


def test_report_without_measurements_grades_no_network_claim(tmp_path):
    """The issue's reproduction: ``normdyn report --out EMPTY_DIR`` grades nothing real."""
    rows = R.build_report(tmp_path, claim_results=_claims())
    by = {r.claim: r for r in rows}
    networks = [r for r in rows if r.subject == "networks"]
    assert networks and all(r.verdict == V.NOT_TESTED for r in networks)
    for claim in ("ratios_converge_constant_lr", "momentum_reduces_spread",
                  "weight_decay_equilibrium_measured"):
        assert by[claim].verdict == V.NOT_TESTED
    assert by["ratios_converge_constant_lr"].theory == "consistent"  # SymPy agrees
    assert by["lemma_3_4_flipping_conditions"].verdict == V.CONFIRMED
    assert by["lemma_3_4_flipping_conditions"].subject == "model"
    assert by["momentum_u_growth_drift"].verdict == V.NOT_TESTED  # no drift run


def test_failed_symbolic_check_refutes_model_claims(tmp_path):
    rows = R.build_report(tmp_path, claim_results=_claims(passed=False), tables={})
    by = {r.claim: r for r in rows}
    assert by["flip_condition"].verdict == V.REFUTED
    assert by["lemma_3_5_flip_at_most_once"].verdict == V.REFUTED
    assert by["critical_lr_widens_beyond"].verdict == V.NOT_TESTED
    assert by["critical_lr_widens_beyond"].theory == "inconsistent"


def test_report_reads_csvs_and_writes_files(tmp_path):
    _fig05(0.1).assign(source="simulated", seed=0).to_csv(
        tmp_path / "fig05_spread_vs_lr_L56_steps10_quick.csv", index=False)
    (tmp_path / "figures.json").write_text(json.dumps({
        "profile": "quick",
        "figures": {"fig07": {"status": "failed", "error": "ImportError: no torch"}},
    }))
    rows = R.build_report(tmp_path, claim_results=_claims())
    by = {r.claim: r for r in rows}
    crit = by["critical_lr_widens_beyond"]
    assert crit.verdict == V.NOT_TESTED and crit.theory == "consistent"
    assert "--only fig05" in crit.command and "normdyn check --only critical_lr" in crit.command
    assert by["spread_vs_trainability"].verdict == V.NOT_TESTED
    assert "ImportError" in by["spread_vs_trainability"].evidence
    md, js = R.write_report(rows, tmp_path, profile="quick")
    text = md.read_text()
    assert "| claim | subject | verdict | theory | real evidence | model evidence | command |" \
        in text
    assert "## Thresholds" in text and "`WARMUP_FACTOR` | 1.5 |" in text
    data = json.loads(js.read_text())
    assert {c["claim"] for c in data["claims"]} == set(by)
    assert all(c["verdict"] in R.VERDICTS for c in data["claims"])
    assert data["counts"]["paper_networks"]["not tested"] == 8
    assert {t["name"] for t in data["thresholds"]} >= {"MIN_SEEDS", "TRAIN_CONFIRM"}
    assert data["summary"].startswith("Paper claims about trained networks (8, graded on "
                                      "real runs): 8 not tested.")


def test_cli_report(tmp_path, capsys):
    from normdyn.cli import main

    assert main(["report", "--out", str(tmp_path), "--profile", "quick",
                 "--no-property-tests"]) == 0
    out = capsys.readouterr().out
    assert "critical_lr_widens_beyond" in out and "Paper claims about trained" in out
    assert (tmp_path / "REPORT.md").is_file() and (tmp_path / "REPORT.json").is_file()


def test_property_test_outcomes_are_model_evidence(tmp_path):
    outcomes = {"tests/theory/test_pairs.py": {"test_flip_iff_product_exceeds_one": "failed",
                                               "test_tie_when_product_is_one": "passed",
                                               "test_convergence_rate_bound": "passed"}}
    rows = R.build_report(tmp_path, claim_results=_claims(), tables={},
                          property_tests=outcomes)
    by = {r.claim: r for r in rows}
    flip = by["lemma_3_4_flipping_conditions"]
    assert flip.verdict == V.PARTLY  # symbolic confirmed, property tests partly
    assert "1/2 Hypothesis/property tests passed" in flip.evidence
    assert by["theorem_3_6_convergence"].verdict == V.CONFIRMED
    assert "pytest tests/theory/test_pairs.py" in by["theorem_3_6_convergence"].command
    conv = by["ratios_converge_constant_lr"]
    assert conv.verdict == V.NOT_TESTED and "property" in conv.evidence
    assert "property" not in by["spread_vs_trainability"].evidence


def test_find_figure_csv_never_takes_a_side_table(tmp_path):
    import os

    from normdyn.evidence import find_figure_csv

    main = tmp_path / "fig05_spread_vs_lr_L56_steps10_quick.csv"
    side = tmp_path / "fig05_spread_vs_lr_L56_steps10_quick_c_ratio.csv"
    main.write_text("a\n1\n")
    side.write_text("a\n1\n")
    os.utime(main, (1, 1))  # the side table is the newer one
    assert find_figure_csv(tmp_path, "fig05") == main
    assert find_figure_csv(tmp_path, "fig05", "quick") == main
