r"""Evidence for the claims report: figure tables, property tests, symbolic checks.

An :class:`~normdyn.estimates.Item` is one graded piece of evidence for a claim, with
its kind and the command that reproduces it:

* ``real`` items come from measured torch runs with real gradients (the figure CSVs,
  graded by :mod:`normdyn.measured`), each with its statistic, 95% interval, seeds,
  threshold and control;
* ``model`` items say whether our model agrees: the symbolic checks
  (:func:`normdyn.theory.run_claims`), the Hypothesis property tests
  (:data:`PROPERTY_TESTS`), the simulations and the drift runs (:mod:`normdyn.verdicts`);
* ``diagnostic`` items are shown and never graded.

:func:`combine` keeps the two apart: a claim about trained networks
(``subject="networks"``) takes its verdict from its real items only, and its ``theory``
field from its model items; a claim about the model (``subject="model"``) is graded by
its model items, and the report says so.

These names are re-exported by :mod:`normdyn.report`, the public entry of the report.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from normdyn.estimates import (
    CONFIRMED,
    MODEL,
    NOT_TESTED,
    PARTLY,
    POSITIVE,
    REAL,
    REFUTED,
    Item,
)
from normdyn.verdicts import Verdict

__all__ = [
    "Item",
    "SUBJECTS",
    "THEORY_VALUES",
    "combine",
    "combine_with_qualifier",
    "PIPELINE_FAILED",
    "theory_of",
    "find_figure_csv",
    "load_tables",
    "PROPERTY_TESTS",
    "run_property_tests",
]

SUBJECTS = ("networks", "model")
THEORY_VALUES = ("consistent", "inconsistent", "n/a")


def theory_of(items: Sequence[Item]) -> str:
    """``consistent`` if every tested model item is confirmed (and one was tested),
    ``n/a`` if none was tested, else ``inconsistent``."""
    tested = [i for i in items if i.kind == MODEL and i.verdict != NOT_TESTED]
    if not tested:
        return "n/a"
    return "consistent" if all(i.verdict == CONFIRMED for i in tested) else "inconsistent"


PIPELINE_FAILED = "pipeline: positive control failed"


def _grade_real(items: Sequence[Item]) -> tuple[str, str]:
    """``(verdict, qualifier)`` from the real items (and the positive controls)."""
    if any(i.kind == POSITIVE and i.verdict == REFUTED for i in items):
        return NOT_TESTED, PIPELINE_FAILED
    real = [i for i in items if i.kind == REAL]
    tested = [i for i in real if i.verdict != NOT_TESTED]
    primary = [i for i in real if i.primary]
    if not tested or all(i.verdict == NOT_TESTED for i in primary):
        qualifiers = list(dict.fromkeys(i.qualifier for i in primary if i.qualifier))
        return NOT_TESTED, "; ".join(qualifiers)
    if any(i.verdict == REFUTED for i in primary if i.verdict != NOT_TESTED):
        return REFUTED, ""
    if all(i.verdict == CONFIRMED for i in real):
        return CONFIRMED, ""
    return PARTLY, ""


def _grade_model(items: Sequence[Item]) -> str:
    model = [i for i in items if i.kind == MODEL]
    tested = [i for i in model if i.verdict != NOT_TESTED]
    if not any(i.required for i in tested):
        return NOT_TESTED
    if all(i.verdict == REFUTED for i in tested):
        return REFUTED
    if all(i.verdict == CONFIRMED for i in tested):
        untested_required = [i for i in model if i.required and i.verdict == NOT_TESTED]
        return PARTLY if untested_required else CONFIRMED
    return PARTLY


def combine(items: Sequence[Item], subject: str = "networks") -> tuple[str, str, str]:
    """``(verdict, theory, evidence text)`` of a claim.

    ``subject="networks"``: the verdict comes from the real items only.  A failed
    positive control (an item of kind ``positive control`` refuted) makes it ``not
    tested`` whatever the real items say: the pipeline, not the claim, is at fault.  With
    no real item tested it is ``not tested``; a refuted primary item refutes; confirmed
    needs every real item (primary and secondary) confirmed; anything else is ``partly``.
    :func:`combine_with_qualifier` also returns why a ``not tested`` is one.
    ``subject="model"``: the verdict comes from the model items (``not tested`` unless a
    required one was tested): all confirmed ->
    confirmed (``partly`` if a required one is untested), all refuted -> refuted,
    a mixture -> partly.  ``theory`` is :func:`theory_of` the model items either way.
    """
    verdict, _, theory, text = combine_with_qualifier(items, subject)
    return verdict, theory, text


def combine_with_qualifier(items: Sequence[Item],
                           subject: str = "networks") -> tuple[str, str, str, str]:
    """``(verdict, qualifier, theory, evidence text)``; see :func:`combine`."""
    if subject not in SUBJECTS:
        raise ValueError(f"subject must be one of {SUBJECTS}, got {subject!r}")
    if subject == "networks":
        verdict, qualifier = _grade_real(items)
    else:
        verdict, qualifier = _grade_model(items), ""
    text = "; ".join(f"[{i.kind}: {i.source}: {i.verdict_text()}] {i.evidence}"
                     for i in items)
    return verdict, qualifier, theory_of(items), text or "no evidence"


# ----------------------------------------------------------------------------- tables


#: Side tables written beside a figure's main table (``<stem>_c_ratio.csv``): never the main one.
SIDE_TABLE_SUFFIXES = ("_c_ratio",)


def find_figure_csv(out_dir: str | Path, figure: str, profile: str | None = None) -> Path | None:
    """The CSV of ``figure`` in ``out_dir`` (``<figure>_*_<profile>.csv``; newest wins)."""
    out_dir = Path(out_dir)
    pattern = f"{figure}_*_{profile}.csv" if profile else f"{figure}_*.csv"
    found = [p for p in out_dir.glob(pattern)
             if p.is_file() and not p.stem.endswith(SIDE_TABLE_SUFFIXES)]
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
            tables[fig] = pd.read_csv(path, low_memory=False)  # layer: names and indices
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
    "momentum_u_growth_drift": ("tests/theory/test_beyond_sgd.py", r"momentum_u_growth|"
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


def _property_item(claim_id: str, results: dict[str, dict[str, str]] | None) -> Item | None:
    if claim_id not in PROPERTY_TESTS:
        return None
    path, pattern = PROPERTY_TESTS[claim_id]
    cmd = f"pytest {path} -k '{pattern.replace('|', ' or ')}'" if pattern != "." \
        else f"pytest {path}"
    if results is None:
        return Item(MODEL, "property tests", NOT_TESTED,
                    "not run (normdyn report --property-tests)", required=False, command=cmd)
    tests = {n: o for n, o in results.get(path, {}).items() if re.search(pattern, n)}
    ran = {n: o for n, o in tests.items() if o != "skipped"}
    if not ran:
        return Item(MODEL, "property tests", NOT_TESTED, f"no test of {path} ran",
                    required=False, command=cmd)
    failed = sorted(n for n, o in ran.items() if o == "failed")
    verdict = CONFIRMED if not failed else REFUTED if len(failed) == len(ran) else PARTLY
    text = f"{len(ran) - len(failed)}/{len(ran)} Hypothesis/property tests passed in {path}"
    if failed:
        text += f" (failed: {', '.join(failed)})"
    return Item(MODEL, "property tests", verdict, text, required=False, command=cmd)


# ----------------------------------------------------------------------------- items


def _figure_command(fig: str, profile: str | None) -> str:
    return f"normdyn figures --profile {profile or 'quick'} --only {fig}"


def _model_item(tables: dict[str, pd.DataFrame], notes: dict[str, str], fig: str,
                fn: Callable[..., Verdict], profile: str | None, *args: Any,
                source: str | None = None, required: bool = True) -> Item:
    """A model-side check of figure ``fig`` (simulation, drift run or flip grid)."""
    cmd = _figure_command(fig, profile)
    src = source or fig
    if fig not in tables:
        return Item(MODEL, src, NOT_TESTED, notes.get(fig, f"{fig}: not run"),
                    required=required, command=cmd)
    try:
        verdict, evidence = fn(tables[fig], *args)
    except Exception as exc:  # noqa: BLE001 - a malformed table is "not tested", not a crash
        verdict, evidence = NOT_TESTED, f"{fig}: could not evaluate ({type(exc).__name__}: {exc})"
    return Item(MODEL, src, verdict, evidence, required=required, command=cmd)


def _real_items(tables: dict[str, pd.DataFrame], notes: dict[str, str], fig: str,
                fn: Callable[[pd.DataFrame | None], list[Item]],
                profile: str | None) -> list[Item]:
    """The real (measured) items of figure ``fig``, graded by a ``measured.real_*``."""
    from dataclasses import replace

    cmd = _figure_command(fig, profile)
    if fig not in tables:
        return [Item(REAL, f"{fig} real runs", NOT_TESTED, notes.get(fig, f"{fig}: not run"),
                     command=cmd)]
    try:
        items = fn(tables[fig])
    except Exception as exc:  # noqa: BLE001 - a malformed table is "not tested", not a crash
        items = [Item(REAL, f"{fig} real runs", NOT_TESTED,
                      f"could not evaluate ({type(exc).__name__}: {exc})")]
    return [replace(i, command=cmd) for i in items]


def _symbolic_item(results: dict[str, Any], name: str, required: bool = True) -> Item:
    cmd = f"normdyn check --only {name}"
    res = results.get(name)
    if res is None:
        return Item(MODEL, f"symbolic:{name}", NOT_TESTED,
                    f"claim {name!r} is not registered", required=required, command=cmd)
    text = res.detail or res.statement
    if res.error:
        text = f"error: {res.error}"
    return Item(MODEL, f"symbolic:{name}", CONFIRMED if res.passed else REFUTED,
                f"SymPy check {'passed' if res.passed else 'FAILED'}: {text}",
                required=required, command=cmd)
