r"""Evidence for the claims report: figure tables, property tests, symbolic checks.

A :class:`Part` is one piece of evidence for a claim, with its verdict and the command
that reproduces it.  The parts come from

* the figure CSVs of ``normdyn figures`` (:func:`load_tables`, graded by the
  ``verdict_*`` functions of :mod:`normdyn.verdicts`),
* the symbolic checks (:func:`normdyn.theory.run_claims`), and
* the Hypothesis property tests behind the theorem claims (:data:`PROPERTY_TESTS`,
  :func:`run_property_tests`).

Several parts of one claim are combined by :func:`combine`: *required* parts (e.g.
theory **and** practice for the warm-up) must all be tested, otherwise the verdict is at
most ``partly``; *supporting* parts that were not tested are ignored.

These names are re-exported by :mod:`normdyn.report`, the public entry of the report.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from normdyn.verdicts import CONFIRMED, NOT_TESTED, PARTLY, REFUTED, Verdict, _worst

__all__ = [
    "Part",
    "combine",
    "find_figure_csv",
    "load_tables",
    "PROPERTY_TESTS",
    "run_property_tests",
]


@dataclass(frozen=True)
class Part:
    """One piece of evidence for a claim."""

    source: str
    verdict: str
    evidence: str
    required: bool = True
    command: str = ""


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


# ----------------------------------------------------------------------------- parts


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
