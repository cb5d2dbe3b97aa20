r"""The claims report: every claim of the paper and of the derivation, with a computed verdict.

Each row is one claim: the paper's (abstract, summary, figure captions, theorem titles)
and the derived ones (every claim of :func:`normdyn.theory.run_claims`, the measured
weight-decay equilibrium and the momentum ``u``-growth).  Every row has two fields:

``theory``
    whether our model and its derivation agree with the claim: ``consistent``,
    ``inconsistent`` or ``n/a``, from the SymPy checks, the property tests, the
    simulations and the drift runs (:mod:`normdyn.verdicts`).
``verdict``
    ``confirmed``, ``refuted``, ``partly`` or ``not tested``.  For a claim about
    trained networks (``subject: networks``) it is computed **only** from measured
    torch runs with real gradients (:mod:`normdyn.measured`): at least 3 seeds, a 95%
    interval, an effect size, a threshold (:mod:`normdyn.thresholds`) and a control.
    No measurement means ``not tested``.  Claims about the model itself (Lemmas 3.2,
    3.4, 3.5, Thm. 3.6 and Fig. 4's discrete-versus-continuous claim, ``subject:
    model``) and the derived claims are graded by the model evidence, and say so.

This module is the public entry: it builds the rows (:func:`build_report`) and renders
them (:func:`render_markdown`, :func:`write_report`, :func:`format_table`).
The formulas a verdict compares with come from :mod:`normdyn.theory.numeric` only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from normdyn import measured as M
from normdyn._io import atomic_write_json, atomic_write_text, provenance
from normdyn.estimates import DIAGNOSTIC, FINDING, MODEL, POSITIVE, REAL, VERDICTS, Item
from normdyn.evidence import (
    PROPERTY_TESTS,
    _model_item,
    _property_item,
    _real_items,
    _symbolic_item,
    combine,
    combine_with_qualifier,
    find_figure_csv,
    load_tables,
    run_property_tests,
)
from normdyn.thresholds import THRESHOLDS, threshold_table
from normdyn.verdicts import (
    Verdict,
    verdict_critical_lr,
    verdict_discrete_vs_continuous,
    verdict_flip_condition,
    verdict_flip_once,
    verdict_momentum_spread,
    verdict_rate_sim,
    verdict_ratio_real,
    verdict_ratio_sim,
    verdict_u_growth,
    verdict_warmup,
    verdict_weight_decay,
)

__all__ = [
    "VERDICTS",
    "Item",
    "ReportRow",
    "PROPERTY_TESTS",
    "combine",
    "find_figure_csv",
    "load_tables",
    "build_report",
    "write_report",
    "format_table",
    "render_markdown",
]


@dataclass
class ReportRow:
    """One claim with its verdict (from real runs, or the model for model claims)."""

    claim: str
    kind: str  # "paper" | "derived"
    subject: str  # "networks" | "model"
    statement: str
    verdict: str
    theory: str
    evidence: str
    command: str
    items: list[Item] = field(default_factory=list)
    #: why a ``not tested`` is one (``uninformative: ...``, ``pipeline: ...``), or ""
    qualifier: str = ""

    def verdict_text(self) -> str:
        return f"{self.verdict} ({self.qualifier})" if self.qualifier else self.verdict

    def as_dict(self) -> dict[str, Any]:
        return {
            "claim": self.claim, "kind": self.kind, "subject": self.subject,
            "statement": self.statement, "verdict": self.verdict,
            "verdict_qualifier": self.qualifier, "theory": self.theory,
            "graded_by": "real runs" if self.subject == "networks" else "model evidence",
            "evidence": self.evidence, "command": self.command,
            "real": [i.as_dict() for i in self.items if i.kind == REAL],
            "model": [i.as_dict() for i in self.items if i.kind == MODEL],
            "diagnostic": [i.as_dict() for i in self.items if i.kind == DIAGNOSTIC],
            "positive_control": [i.as_dict() for i in self.items if i.kind == POSITIVE],
            "finding": [i.as_dict() for i in self.items if i.kind == FINDING],
        }


# ----------------------------------------------------------------------------- claims


def _paper_claims(results: dict[str, Any], tables: dict[str, pd.DataFrame],
                  notes: dict[str, str], profile: str | None) -> list[ReportRow]:
    def model(figure: str, fn: Callable[..., Verdict], *args: Any, source: str | None = None,
              required: bool = True) -> Item:
        return _model_item(tables, notes, figure, fn, profile, *args, source=source,
                           required=required)

    def real(figure: str, fn: Callable[[pd.DataFrame | None], list[Item]]) -> list[Item]:
        return _real_items(tables, notes, figure, fn, profile)

    def sym(name: str, required: bool = True) -> Item:
        return _symbolic_item(results, name, required)

    spec: list[tuple[str, str, str, list[Item]]] = [
        ("ratios_converge_constant_lr", "networks",
         "Abstract: with a constant lr the layerwise ELR ratios converge to 1, despite "
         "the initial gradient explosion (the paper says any constant lr; graded at the "
         "lr measured, named in the evidence).",
         [*real("fig03", M.real_ratio_convergence),
          sym("unique_attractor"), sym("convergence_rate"),
          model("fig04", verdict_ratio_sim, source="fig04 simulation"),
          model("fig02", verdict_ratio_real, "fig02", source="fig02 drift run")]),
        ("critical_lr_widens_beyond", "networks",
         "Abstract: a critical lr, depending only on the current ELRs; beyond it ELR "
         "disparities widen.",
         [*real("fig05", M.real_critical_lr), sym("critical_lr"),
          model("fig05", verdict_critical_lr, "simulated", source="fig05 simulation")]),
        ("warmup_minimizes_spread", "networks",
         "Abstract: the hyper-parameter-free (critical-lr) warm-up minimizes the ELR "
         "spread quickly, in theory and in practice.",
         [*real("fig06", M.real_warmup),
          model("fig06", verdict_warmup, "simulated", source="fig06 simulation")]),
        ("spread_vs_trainability", "networks",
         "Abstract: ELR spread is linked with trainability, most evidently in very deep "
         "networks without shortcuts.",
         real("fig07", M.real_trainability)),
        ("momentum_reduces_spread", "networks",
         "Summary: momentum reduces the ELR spread further.",
         [*real("fig08", M.real_momentum), sym("momentum_equilibrium", required=False),
          model("fig08", verdict_momentum_spread, "drift", source="fig08 drift simulation")]),
        ("constrained_elr_stabilizes", "networks",
         "Summary: constrained-ELR training stabilizes otherwise unstable (high-lr) "
         "regimes.",
         real("fig09", M.real_constrained)),
        ("norm_model_matches_real_norms", "networks",
         "Fig. 1: the discrete model (c from initialization) predicts the first layer's "
         "weight and gradient norm at step 10 of a real ResNet NoShort across lrs.",
         real("fig01", M.real_norms_step10)),
        ("model_describes_transformer", "networks",
         "Fig. 10 / summary: the model carries over to Transformers with LayerNorm (graded "
         "at the one constant lr measured, named in the evidence).",
         real("fig10", M.real_transformer)),
        ("discrete_below_continuous", "model",
         "Fig. 4: the discrete model's ELRs stay at or below the continuous (gradient-flow) "
         "model's, with a logarithmic gap.",
         [sym("continuous_elr"), model("fig04", verdict_discrete_vs_continuous,
                                       required=False)]),
        ("lemma_3_2_unique_attractor", "model",
         "Lemma 3.2: the stationary point rho = 1 is the unique attractor of the ratio "
         "dynamics.",
         [sym("unique_attractor"), sym("ratio_map"),
          model("fig04", verdict_ratio_sim, required=False)]),
        ("lemma_3_4_flipping_conditions", "model",
         "Def. 3.3 / Lemma 3.4: two ELRs flip order in a step iff E_l E_k > 1 (equal iff "
         "= 1), and |log rho| never grows.",
         [sym("flip_condition"), model("fig12", verdict_flip_condition, required=False)]),
        ("lemma_3_5_flip_at_most_once", "model",
         "Lemma 3.5: at constant lr the ratio of a pair flips at most once.",
         [sym("flip_at_most_once"), model("fig12", verdict_flip_once, required=False)]),
        ("theorem_3_6_convergence", "model",
         "Thm. 3.6: the ratios converge to the fixed point, |rho_t^2 - 1| = O(1/t).",
         [sym("convergence_rate"), model("fig04", verdict_rate_sim, required=False)]),
    ]
    return [_row(cid, "paper", subject, statement, items)
            for cid, subject, statement, items in spec]


def _row(cid: str, kind: str, subject: str, statement: str, items: list[Item]) -> ReportRow:
    verdict, qualifier, theory, evidence = combine_with_qualifier(items, subject)
    commands = list(dict.fromkeys(i.command for i in items if i.command))
    return ReportRow(cid, kind, subject, statement, verdict, theory, evidence,
                     "; ".join(commands), items, qualifier)


def _derived_claims(results: dict[str, Any], tables: dict[str, pd.DataFrame],
                    notes: dict[str, str], profile: str | None) -> list[ReportRow]:
    rows = [_row(name, "derived", "model", res.statement, [_symbolic_item(results, name)])
            for name, res in results.items()]
    rows.append(_row(
        "weight_decay_equilibrium_measured", "derived", "networks",
        "Under weight decay (and momentum) every layer's update ELR settles at "
        "sqrt(2 eta lam/(1+beta)), measured in trained networks.",
        [*_real_items(tables, notes, "fig11", M.real_weight_decay, profile),
         _symbolic_item(results, "weight_decay_equilibrium", required=False),
         _model_item(tables, notes, "fig11", verdict_weight_decay, profile,
                     source="fig11 drift simulation")]))
    rows.append(_row(
        "momentum_u_growth_drift", "derived", "model",
        "With heavy-ball momentum beta and uncorrelated gradients, u = E_update^-2 grows "
        "by 2(1+beta)/(1-beta) per step (drift simulation).",
        [_symbolic_item(results, "momentum_equilibrium", required=False),
         _model_item(tables, notes, "fig08", verdict_u_growth, profile,
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
        item = _property_item(row.claim, outcomes)
        if item is not None:
            rows[i] = _row(row.claim, row.kind, row.subject, row.statement,
                           [*row.items, item])
    seen: set[str] = set()
    for row in rows:
        if row.claim in seen:
            row.claim = f"{row.claim} ({row.kind})"
        seen.add(row.claim)
    return rows


# ----------------------------------------------------------------------------- output


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def summary_counts(rows: Sequence[ReportRow]) -> dict[str, dict[str, int]]:
    """Verdict counts of the paper claims (by subject) and of the derived claims."""
    def count(sel: Sequence[ReportRow]) -> dict[str, int]:
        return {v: sum(r.verdict == v for r in sel) for v in VERDICTS}

    paper = [r for r in rows if r.kind == "paper"]
    return {
        "paper": count(paper),
        "paper_networks": count([r for r in paper if r.subject == "networks"]),
        "paper_model": count([r for r in paper if r.subject == "model"]),
        "derived": count([r for r in rows if r.kind == "derived"]),
    }


def summary_line(rows: Sequence[ReportRow]) -> str:
    c = summary_counts(rows)

    def fmt(d: dict[str, int]) -> str:
        return ", ".join(f"{n} {v}" for v, n in d.items() if n)

    n_net = sum(c["paper_networks"].values())
    n_mod = sum(c["paper_model"].values())
    return (f"Paper claims about trained networks ({n_net}, graded on real runs): "
            f"{fmt(c['paper_networks']) or 'none'}. Paper claims about the model ({n_mod}, "
            f"graded on symbolic, property and simulation evidence): "
            f"{fmt(c['paper_model']) or 'none'}. Derived checks "
            f"({sum(c['derived'].values())}): {fmt(c['derived']) or 'none'}.")


def _real_cell(row: ReportRow) -> str:
    real = [i for i in row.items if i.kind in (REAL, DIAGNOSTIC, POSITIVE, FINDING)]
    if not real:
        return "none (model claim)" if row.subject == "model" else "no measurement"
    out = []
    for i in real:
        if i.kind == REAL:
            tag = "" if i.primary else "secondary, "
        else:
            tag = f"{i.kind}, "
        extra = f"; threshold {i.threshold}; control: {i.control}" if i.threshold else ""
        out.append(f"**{i.verdict_text()}** ({tag}{i.source}): {i.evidence}{extra}")
    return "<br>".join(_cell(x) for x in out)


def _model_cell(row: ReportRow) -> str:
    model = [i for i in row.items if i.kind == MODEL]
    return "<br>".join(_cell(f"{i.verdict} ({i.source}): {i.evidence}") for i in model) or "n/a"


def render_markdown(rows: Sequence[ReportRow], profile: str | None = None) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    prov = provenance()
    lines = [
        "# normdyn claims report",
        "",
        f"Generated {stamp} by `normdyn report` (normdyn {prov['normdyn_version']}, "
        f"git {prov['git_revision']}); figure profile: {profile or 'n/a'}.",
        "",
        "A claim about trained networks is graded **only** on measured torch runs with "
        "real gradients: at least 3 seeds, a 95% interval, an effect size, a threshold and "
        "a control. *confirmed*: the interval clears the threshold; *refuted*: it lies on "
        "the wrong side of the null or control; *partly*: in between; *not tested*: no "
        "measurement. Whether our model agrees (SymPy, property tests, simulations, drift "
        "runs) is the separate `theory` column. Claims about the model itself are graded "
        "by the model evidence.",
        "",
        "**Summary.** " + summary_line(rows),
        "",
    ]
    for kind, title in (("paper", "Claims of the paper"), ("derived", "Derived claims")):
        lines += [f"## {title}", "",
                  "| claim | subject | verdict | theory | real evidence | model evidence | "
                  "command |", "|---|---|---|---|---|---|---|"]
        for r in rows:
            if r.kind == kind:
                lines.append(f"| **{r.claim}**<br>{_cell(r.statement)} | {r.subject} | "
                             f"**{r.verdict_text()}** | {r.theory} | {_real_cell(r)} | "
                             f"{_model_cell(r)} | `{_cell(r.command)}` |")
        lines.append("")
    lines += ["## Thresholds", "",
              "Fixed before the evidence they grade; defined in `normdyn/thresholds.py`.", "",
              threshold_table(), ""]
    return "\n".join(lines)


def write_report(rows: Sequence[ReportRow], out_dir: str | Path,
                 profile: str | None = None) -> tuple[Path, Path]:
    """Write ``REPORT.md`` and ``REPORT.json`` into ``out_dir``."""
    out_dir = Path(out_dir)
    md = atomic_write_text(out_dir / "REPORT.md", render_markdown(rows, profile))
    js = atomic_write_json(out_dir / "REPORT.json", {
        "profile": profile,
        "provenance": provenance(),
        "summary": summary_line(rows),
        "counts": summary_counts(rows),
        "thresholds": [t.__dict__ for t in THRESHOLDS],
        "claims": [r.as_dict() for r in rows],
    })
    return md, js


def format_table(rows: Sequence[ReportRow]) -> str:
    """A plain-text verdict table for the terminal."""
    width = max((len(r.claim) for r in rows), default=5)
    out = [f"{'claim':<{width}}  {'subject':<8}  {'verdict':<10}  theory"]
    for r in rows:
        out.append(f"{r.claim:<{width}}  {r.subject:<8}  {r.verdict:<10}  {r.theory}")
    out.append(summary_line(rows))
    return "\n".join(out)
