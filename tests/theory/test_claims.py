"""The symbolic claims registry: every claim passes and the theory's statements are covered."""

from __future__ import annotations

import pytest

from normdyn.theory import all_claims, run_claims
from normdyn.theory import numeric as N

REQUIRED = (
    "orthogonal_gradient gradient_scaling norm_recurrence elr_map gradient_flow_solution "
    "continuous_elr ratio_map unique_attractor flip_condition flip_at_most_once "
    "convergence_rate critical_lr weight_decay_equilibrium momentum_equilibrium"
).split()


@pytest.fixture(scope="module")
def results():
    return run_claims()


def test_required_claims_are_registered(results):
    names = [r.name for r in results]
    assert len(names) == len(set(names))
    missing = sorted(set(REQUIRED) - set(names))
    assert not missing, f"claims not registered: {missing}"


def test_every_claim_passes(results):
    failed = {r.name: (r.detail, r.error) for r in results if not r.passed}
    assert not failed


def test_claims_carry_statement_section_and_latex(results):
    for r in results:
        assert r.statement.strip() and r.section.strip() and r.latex.strip(), r.name
        assert r.error == ""
        d = r.as_dict()
        assert {"name", "statement", "passed", "latex"} <= set(d)


def test_run_claims_subset_and_unknown_name():
    sub = run_claims(["elr_map", "ratio_map"])
    assert [r.name for r in sub] == ["elr_map", "ratio_map"]
    with pytest.raises(ValueError) as info:
        run_claims(["elr_map", "no_such_claim"])
    assert str(info.value).startswith("names: unknown claim(s) ['no_such_claim']")


def test_claims_are_ordered_by_section():
    sections = [c.section for c in all_claims()]
    assert sections == sorted(sections)


def test_generated_function_docstrings_state_argument_order():
    for name, fn in N.FUNCTIONS.items():
        order = ", ".join(fn.arg_names)
        assert fn.__doc__.startswith(f"{name}({order})"), name
        assert f"Argument order is fixed: ({order})" in fn.__doc__, name
