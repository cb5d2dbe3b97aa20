"""Bad input: every numeric function names the offending parameter, with the exact message.

Message formats (normdyn/_checks.py):
``"<name> must be positive, got <repr>"``, ``"<name> must be non-negative, got <repr>"``,
``"<name> must be finite, got <repr>"``, ``"<name> must lie in [0.0, 1.0), got <repr>"``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from normdyn._checks import NonFiniteError
from normdyn.theory import numeric as N

NAN, INF = math.nan, math.inf

# The domain each argument must have, by name (a theory statement, not read from the code):
# learning rates, norms, ELRs, u, per-unit ELRs, gains and decays' products are positive;
# c and |grad| may vanish; weight decay may be zero; momentum lies in [0, 1); d is signed.
EXPECTED_DOMAIN = {
    "eta": "positive", "sigma2": "positive", "sigma2_0": "positive", "weight_norm": "positive",
    "E": "positive", "E0": "positive", "E_l": "positive", "E_k": "positive",
    "E_max": "positive", "E_min": "positive", "a_max": "positive", "a_min": "positive",
    "u": "positive", "u0": "positive", "u_k": "positive", "u_l": "positive",
    "rho": "positive", "gain": "positive",
    "c": "nonnegative", "grad_norm": "nonnegative",
    "t": "nonnegative", "d": "finite", "beta": "unit",
    "norm_ratio": "positive", "E_tan": "nonnegative",
}
# Functions whose argument is legitimately wider/narrower than the table above.
DOMAIN_OVERRIDES = {
    ("gap_bound", "t"): "at_least_one",  # the bound holds for t >= 1
    ("weight_decay_equilibrium_elr", "lam"): "positive",
    ("weight_decay_equilibrium_update_elr", "lam"): "positive",
    ("momentum_equilibrium_update_elr", "lam"): "positive",
    ("momentum_equilibrium_update_elr_leading", "lam"): "positive",
    ("momentum_equilibrium_rotation", "lam"): "positive",
    ("weight_decay_norm_step", "lam"): "nonnegative",
    ("momentum_norm_step", "lam"): "nonnegative",
    ("momentum_update_elr", "E"): "nonnegative",  # a zero gradient has zero update ELR
    ("momentum_step_update_elr", "E"): "nonnegative",
    ("momentum_step_update_elr", "lam"): "nonnegative",
}

# (bad value, message suffix) per domain.
BAD = {
    "positive": [(0.0, "must be positive, got 0.0"), (-1.0, "must be positive, got -1.0"),
                 (-0.0, "must be positive, got -0.0"), (NAN, "must be finite, got nan"),
                 (INF, "must be finite, got inf"), (-INF, "must be finite, got -inf")],
    "nonnegative": [(-1.0, "must be non-negative, got -1.0"), (-1e-300, "must be non-negative, got -1e-300"),
                    (NAN, "must be finite, got nan"), (INF, "must be finite, got inf")],
    "finite": [(NAN, "must be finite, got nan"), (INF, "must be finite, got inf"),
               (-INF, "must be finite, got -inf")],
    "at_least_one": [(0.5, "must lie in [1.0, inf), got 0.5"),
                     (0.0, "must lie in [1.0, inf), got 0.0"),
                     (NAN, "must be finite, got nan"), (INF, "must be finite, got inf")],
    "unit": [(1.0, "must lie in [0.0, 1.0), got 1.0"), (-0.1, "must lie in [0.0, 1.0), got -0.1"),
             (NAN, "must be finite, got nan")],
}


def _valid_args(fn) -> list[float]:
    """0.3 everywhere (inside every domain), t = 3 steps (gap_bound needs t >= 1)."""
    return [3.0 if n == "t" else 0.3 for n in fn.arg_names]


def _domain(fn_name: str, arg: str) -> str:
    return DOMAIN_OVERRIDES.get((fn_name, arg), EXPECTED_DOMAIN.get(arg))


CASES = [
    pytest.param(name, i, bad, f"{arg} {suffix}", id=f"{name}-{arg}-{bad!r}")
    for name, fn in sorted(N.FUNCTIONS.items())
    for i, arg in enumerate(fn.arg_names)
    for bad, suffix in BAD[_domain(name, arg)]
]


@pytest.mark.parametrize(("name", "arg"), [
    (name, arg) for name, fn in sorted(N.FUNCTIONS.items()) for arg in fn.arg_names])
def test_argument_domains_are_the_expected_ones(name, arg):
    fn = N.FUNCTIONS[name]
    assert fn.domains[fn.arg_names.index(arg)] == _domain(name, arg)


@pytest.mark.parametrize(("name", "index", "bad", "message"), CASES)
def test_rejects_bad_value_naming_the_parameter(name, index, bad, message):
    fn = N.FUNCTIONS[name]
    args = _valid_args(fn)
    fn(*args)  # the baseline is valid
    args[index] = bad
    with pytest.raises(ValueError) as info:
        fn(*args)
    assert str(info.value) == message
    assert not isinstance(info.value, NonFiniteError)


def test_bad_values_inside_arrays_are_listed():
    with pytest.raises(ValueError) as info:
        N.elr_map(np.array([0.5, 0.0, -2.0, 1.0]))
    assert str(info.value) == "E must be positive, got 0.0, -2.0"
    with pytest.raises(ValueError) as info:
        N.norm_step(np.array([1.0, -1.0, -2.0, -3.0, -4.0]), 0.1, 1.0)
    assert str(info.value) == "sigma2 must be positive, got -1.0, -2.0, -3.0 (and 1 more)"
    with pytest.raises(ValueError) as info:
        N.continuous_elr(1.0, [1.0, NAN])
    assert str(info.value) == "t must be finite, got nan"


def test_non_numeric_and_wrong_arity():
    with pytest.raises(ValueError) as info:
        N.elr_map("fast")
    assert str(info.value) == "E must be numeric, got 'fast'"
    with pytest.raises(TypeError) as info:
        N.elr(0.1, 1.0)
    assert str(info.value) == "elr() takes 3 arguments (eta, c, sigma2), got 2"


@pytest.mark.parametrize(("bad", "message"), [
    (0.0, "lr must be positive, got 0.0"),
    (-1e-3, "lr must be positive, got -0.001"),
    (NAN, "lr must be finite, got nan"),
    (INF, "lr must be finite, got inf"),
])
def test_one_step_spread_rejects_bad_lr(bad, message):
    with pytest.raises(ValueError) as info:
        N.one_step_spread(bad, [0.1, 1.0])
    assert str(info.value) == message


@pytest.mark.parametrize(("bad", "message"), [
    ([1.0, 0.0], "per_unit_elr must be positive, got 0.0"),
    ([1.0, -2.0], "per_unit_elr must be positive, got -2.0"),
    ([NAN, 1.0], "per_unit_elr must be finite, got nan"),
    ([1.0, INF], "per_unit_elr must be finite, got inf"),
    ([], "per_unit_elr must contain at least one layer, got an empty array"),
])
def test_per_unit_elr_validation(bad, message):
    for call in (N.critical_lr_of, lambda a: N.one_step_spread(0.1, a)):
        with pytest.raises(ValueError) as info:
            call(bad)
        assert str(info.value) == message


@given(st.floats(max_value=0.0, allow_nan=False, allow_infinity=False))
def test_any_non_positive_lr_is_rejected(eta):
    with pytest.raises(ValueError) as info:
        N.elr(eta, 1.0, 1.0)
    assert str(info.value) == f"eta must be positive, got {eta!r}"


def test_overflow_raises_non_finite_error_not_inf():
    """A result that overflows float64 is an error that names the function and its inputs."""
    with pytest.raises(NonFiniteError) as info:
        N.norm_step(1e-300, 1e200, 1e200)
    assert str(info.value) == (
        "norm_step: result is not finite (overflow) for sigma2=1e-300, eta=1e+200, c=1e+200")
    assert isinstance(info.value, ValueError)


def test_gap_bound_below_one_step_names_t():
    """The gap bound is a statement for t >= 1 steps: smaller t is rejected by name."""
    with pytest.raises(ValueError) as info:
        N.gap_bound(0.5, 0.5)
    assert str(info.value) == "t must lie in [1.0, inf), got 0.5"
