r"""The claims report: every claim of the paper and of the derivation, with a computed verdict.

Each row is one claim: the paper's (abstract, figure captions, Lemma 3.2, Def. 3.3 /
Lemma 3.4, Lemma 3.5, Thm. 3.6) and the derived ones (every claim of
:func:`normdyn.theory.run_claims`, the measured weight-decay equilibrium and the
measured momentum ``u``-growth).  A verdict is one of ``confirmed``, ``refuted``,
``partly`` or ``not tested`` and is *computed* in this run from

* the symbolic checks (:func:`normdyn.theory.run_claims`), and
* the figure CSVs of ``normdyn figures`` (``<out>/figNN_*_<profile>.csv``), through the
  small pure functions ``verdict_*(df) -> (verdict, evidence)`` of
  :mod:`normdyn.verdicts`.  Each states its thresholds as module constants there; a
  missing CSV or a CSV without the needed columns gives ``not tested``.

Several pieces of evidence for one claim are combined by :func:`combine`
(:mod:`normdyn.evidence`): *required* parts (e.g. theory **and** practice for the
warm-up) must all be tested, otherwise the verdict is at most ``partly``; *supporting*
parts that were not tested are ignored.

This module is the public entry: it builds the rows (:func:`build_report`) and renders
them (:func:`render_markdown`, :func:`write_report`, :func:`format_table`).  The verdict
functions, their thresholds, the evidence helpers and :data:`PROPERTY_TESTS` are
re-exported here, so ``normdyn.report.<name>`` keeps working for all of them.

The formulas a verdict compares with come from :mod:`normdyn.theory.numeric` only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from normdyn._io import atomic_write_json, atomic_write_text, provenance
from normdyn.evidence import (
    Part,
    _fig_part,
    _property_part,
    _symbolic_part,
    combine,
    find_figure_csv,
    load_tables,
    run_property_tests,
)
from normdyn.verdicts import (
    VERDICTS,
    Verdict,
    verdict_constrained,
    verdict_critical_lr,
    verdict_discrete_vs_continuous,
    verdict_flip_condition,
    verdict_flip_once,
    verdict_momentum_spread,
    verdict_norms_step10,
    verdict_rate_sim,
    verdict_ratio_real,
    verdict_ratio_sim,
    verdict_trainability,
    verdict_transformer,
    verdict_u_growth,
    verdict_warmup,
    verdict_weight_decay,
)

# Re-exported: ``normdyn.report.<name>`` predates the split into normdyn.verdicts and
# normdyn.evidence.  The redundant aliases mark deliberate re-exports (not in __all__).
# isort: off
from normdyn.evidence import PROPERTY_TESTS as PROPERTY_TESTS
from normdyn.verdicts import (
    CONFIRMED as CONFIRMED,
    CONSTRAINED_CONFIRM as CONSTRAINED_CONFIRM,
    CONSTRAINED_PARTLY as CONSTRAINED_PARTLY,
    CRITICAL_CONFIRM_DECADES as CRITICAL_CONFIRM_DECADES,
    CRITICAL_MONOTONE_SLACK as CRITICAL_MONOTONE_SLACK,
    CRITICAL_PARTLY_DECADES as CRITICAL_PARTLY_DECADES,
    FLIP_BOUNDARY as FLIP_BOUNDARY,
    FLOAT_SLACK as FLOAT_SLACK,
    MOMENTUM_EARLY_MIN as MOMENTUM_EARLY_MIN,
    NORMS_CONFIRM as NORMS_CONFIRM,
    NORMS_PARTLY as NORMS_PARTLY,
    NOT_TESTED as NOT_TESTED,
    PARTLY as PARTLY,
    RATIO_REAL_CONFIRM as RATIO_REAL_CONFIRM,
    RATIO_WINDOW as RATIO_WINDOW,
    REFUTED as REFUTED,
    ROUNDING_ULPS as ROUNDING_ULPS,
    TRAIN_CONFIRM as TRAIN_CONFIRM,
    TRAIN_PARTLY as TRAIN_PARTLY,
    TRANSFORMER_CONSTANT as TRANSFORMER_CONSTANT,
    TRANSFORMER_REPLAY as TRANSFORMER_REPLAY,
    UGROWTH_CONFIRM as UGROWTH_CONFIRM,
    UGROWTH_PARTLY as UGROWTH_PARTLY,
    WARMUP_EARLY_STEPS as WARMUP_EARLY_STEPS,
    WD_CONFIRM as WD_CONFIRM,
    WD_PARTLY as WD_PARTLY,
)
# isort: on

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



# ----------------------------------------------------------------------------- claims


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
        "thresholds are documented in `normdyn/verdicts.py`.",
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
