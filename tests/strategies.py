"""Named Hypothesis strategies shared by the test suite.

Each strategy documents the range it covers and why.  Extreme values are
included on purpose: the numeric functions must stay finite where the
mathematics allows.  Append new strategies at the end of this file, each with
a docstring-style comment.
"""

from __future__ import annotations

from hypothesis import strategies as st

__all__ = [
    "elrs",
    "moderate_elrs",
    "extreme_elrs",
    "learning_rates",
    "step_counts",
    "elr_pairs",
    "elr_vectors",
    "lr_growth_factors",
    "momenta",
    "weight_decays",
]


def _log_uniform(lo_exp: float, hi_exp: float) -> st.SearchStrategy[float]:
    return st.floats(lo_exp, hi_exp, allow_nan=False, allow_infinity=False).map(
        lambda x: float(10.0**x)
    )


#: ELRs over the whole useful range, 1e-8 .. 1e8, log-uniform.
elrs = _log_uniform(-8, 8)

#: ELRs where products and squares are comfortably representable, 1e-3 .. 1e3.
moderate_elrs = _log_uniform(-3, 3)

#: ELRs at the edge of float64, 1e-300 .. 1e300 (finite-result checks only).
extreme_elrs = _log_uniform(-300, 300)

#: Learning rates, 1e-6 .. 1e3, log-uniform.
learning_rates = _log_uniform(-6, 3)

#: Step counts for iterated maps: 1 .. 2000.
step_counts = st.integers(min_value=1, max_value=2000)

#: Two distinct ELRs (E_l, E_k) of a pair of layers.
elr_pairs = st.tuples(moderate_elrs, moderate_elrs).filter(lambda p: p[0] != p[1])

#: Per-layer ELR vectors of 2 .. 50 layers.
elr_vectors = st.lists(elrs, min_size=2, max_size=50)

#: Step-to-step learning-rate growth factors in (0, 2]: the at-most-one-flip regime.
lr_growth_factors = st.floats(0.05, 2.0, allow_nan=False, exclude_min=False)

#: Heavy-ball momentum in [0, 0.99].
momenta = st.floats(0.0, 0.99, allow_nan=False)

#: Coupled weight decay, 1e-6 .. 1e-1, log-uniform.
weight_decays = _log_uniform(-6, -1)


# --- theory property tests (tests/theory) --------------------------------------------

#: Squared weight norms sigma2, 1e-6 .. 1e6, log-uniform (a layer's |w|^2 at any init scale).
squared_norms = _log_uniform(-6, 6)

#: Base gradients c = |grad||w|, 1e-6 .. 1e6, log-uniform.
base_gradients = _log_uniform(-6, 6)

#: u = E^-2 values, 1e-6 .. 1e16 (ELRs 1e3 .. 1e-8), log-uniform.
u_values = _log_uniform(-6, 16)

#: Learning-rate schedules as per-step gains in (0, 2] (the at-most-one-flip regime), 1..60 steps.
gain_schedules = st.lists(lr_growth_factors, min_size=1, max_size=60)

#: Products eta*lam in [1e-3, 0.5]: weight decay strong enough to equilibrate within ~1e4
#: steps, and far from eta*lam = 1 where the equilibrium is only marginally attracting.
decay_products = st.floats(1e-3, 0.5, allow_nan=False)

#: Positive rescalings alpha of a weight tensor, 1e-50 .. 1e50 (squares stay normal floats).
scale_factors = _log_uniform(-50, 50)


# --- drift simulator property tests (tests/simulate/test_drift.py) ---------------------

#: Element counts of 1..4 layers, 2..40 elements each (projected gradients need >= 2),
#: small enough that a Hypothesis example runs in milliseconds.
drift_elements = st.lists(st.integers(2, 40), min_size=1, max_size=4)

#: Short drift runs, 1..25 steps.
drift_steps = st.integers(min_value=1, max_value=25)

#: Coupled weight decay for the drift optimizer: exactly 0 or 1e-6 .. 1e-1 (log-uniform).
drift_weight_decays = st.one_of(st.just(0.0), _log_uniform(-6, -1))


# --- norm-level simulators (tests/simulate) -------------------------------------------

#: Initial per-layer ELR states of 2 .. 12 layers, each ELR 1e-3 .. 1e3 (log-uniform): wide
#: enough for flips (products > 1) and large spreads, small enough for plain-Python oracles.
sim_elr_states = st.lists(moderate_elrs, min_size=2, max_size=12)

#: Small lr sweeps: 1 .. 4 base lrs, 1e-2 .. 1e1 (log-uniform), possibly repeated.
sim_lr_sweeps = st.lists(_log_uniform(-2, 1), min_size=1, max_size=4)

#: Short simulation lengths, 0 .. 40 steps (plain-Python oracles stay fast).
sim_steps = st.integers(min_value=0, max_value=40)

#: Schedule specs (name, keyword arguments) for normdyn.simulate.schedules.make_schedule,
#: covering every schedule with its parameters in their useful ranges (gamma <= 1).
sim_schedule_specs = st.one_of(
    st.just(("constant", {})),
    st.just(("critical_warmup", {})),
    st.integers(1, 30).map(lambda n: ("linear_warmup", {"n_steps": n})),
    _log_uniform(0, 3).map(lambda tau: ("exponential_warmup", {"tau": tau})),
    st.tuples(st.lists(st.integers(0, 40), min_size=1, max_size=3, unique=True),
              st.floats(0.05, 1.0)).map(
        lambda p: ("step_decay", {"milestones": sorted(p[0]), "gamma": p[1]})),
)


# --- CLI fuzz (tests/test_cli_fuzz.py) ------------------------------------------------

#: Number-like tokens a user may type where a number is expected: NaN and infinities in
#: several spellings, signed zero, values that overflow float64 (1e309) or underflow to a
#: subnormal/zero (1e-320), huge and negative magnitudes, and non-numbers ("", "abc", "0x10",
#: a non-ASCII digit).  Each must be rejected with one line (exit 2) or accepted (exit 0).
cli_bad_numbers = st.sampled_from([
    "nan", "NaN", "-nan", "inf", "-inf", "Infinity", "0", "-0", "-1", "-1e-300", "1e309",
    "-1e309", "1e300", "-1e300", "1e-320", "1e-300", "abc", "", " ", "0x10", "1e", "1_000",
    "\u0663", "1,2", "--", "1.5",
])

#: Any float repr, NaN and infinities included (the CLI parses text, so repr is what it sees).
cli_floats = st.floats(allow_nan=True, allow_infinity=True).map(repr)

#: Integers from the useful to the absurd (beyond int64 and beyond memory), as text.
cli_huge_ints = st.one_of(st.integers(-(10**30), 10**30), st.sampled_from([2**63, -(2**63) - 1])).map(str)

#: Number tokens for float-valued options: bad spellings, any float, huge integers.
cli_numbers = st.one_of(cli_bad_numbers, cli_floats, cli_huge_ints)

#: Small step counts (a run finishes in milliseconds) or tokens argparse must refuse
#: (non-integers); never a large valid count, so a fuzz case cannot run long.
cli_steps = st.one_of(st.integers(-3, 4).map(str),
                      st.sampled_from(["nan", "inf", "1.5", "", "abc", "1e3", "-1e309"]))

#: Comma lists for per-layer options: empty lists and empty items, NaN/inf entries, mixed
#: good and bad entries, 1..4 items.
cli_lists = st.one_of(
    st.sampled_from(["", ",", ",,", "1,,2", " , ", "nan,1", "1,inf", "1e300,1e-300", "-1,1"]),
    st.lists(st.one_of(cli_bad_numbers, cli_floats), min_size=1, max_size=4).map(",".join),
)

#: lr values and sweeps start:stop:num (num small, or bad), plus bad tokens.
cli_lr_specs = st.one_of(
    cli_numbers,
    st.tuples(cli_numbers, cli_numbers, st.one_of(st.integers(-2, 4).map(str), cli_bad_numbers))
    .map(":".join),
    st.sampled_from([":", "1:2", "1:2:3:4", "1e-3:1:3", "1:1:2"]),
)

#: Figure selections that are rejected quickly (`--only`): names that do not exist, bad
#: numbers, an empty selection.  Excluded: "" (runs every figure) and tokens that name a
#: real figure (a non-ASCII digit such as "\u0663" does), which would start minutes of work.
cli_figure_names = st.one_of(
    st.sampled_from([",", "nan", "inf", "-1", "0", "99", "fig00", "fig", "1e309", "1.5",
                     "fig01x", "x,y", "-0"]),
    st.from_regex(r"\Afig[1-9][0-9]{2,3}\Z"),
)

#: Unknown or misspelled option values for choice-like options.
cli_words = st.one_of(st.sampled_from(["", "nan", "-1", "CONSTANT", "quick ", "none"]),
                      st.text(alphabet="abcxyz_-", min_size=1, max_size=8))

#: Per-seed distances from a target (decades), 3 seeds, and how far one seed moves away.
seed_distances = st.lists(st.floats(0.0, 1.5, allow_nan=False), min_size=3, max_size=3)
seed_moves = st.tuples(st.integers(0, 2), st.floats(0.0, 1.0, allow_nan=False))
