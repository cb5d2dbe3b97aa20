"""Hypothesis fuzz of the command line over argv, for every subcommand.

Every case runs in-process through :func:`normdyn.cli.main` (``SystemExit`` from argparse
caught) with stdout/stderr captured and warnings recorded.  The contract checked: the exit
code is 0 or 2 (``validate`` may also exit 1, the documented code of a run that diverged,
with one line naming the step), stderr holds no traceback, an exit 2 from a command (not
from argparse's usage error) is one line naming the command, and no NumPy RuntimeWarning
reaches the user.

Cases are kept short by construction: step counts are small or invalid
(:data:`tests.strategies.cli_steps`), sizes are small or beyond memory (refused before any
allocation), ``figures`` is only given selections that are refused or empty, ``report``
only bad profiles, and ``validate`` runs at most a 2-layer MLP for a few steps, all
writing into ``tmp_path``.  ``HYPOTHESIS_PROFILE=fuzz`` runs many more examples.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from normdyn.cli import main
from tests.strategies import (
    cli_bad_numbers,
    cli_figure_names,
    cli_huge_ints,
    cli_lists,
    cli_lr_specs,
    cli_numbers,
    cli_steps,
    cli_words,
)

_counter = itertools.count()
_N = settings.default.max_examples  # of the loaded profile: 60 for ci, 5000 for fuzz
_HEALTH = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
#: Fast subcommands: half the profile's count (30 in ci; the file stays within ~a minute).
FEW = settings(max_examples=max(10, _N // 2), suppress_health_check=_HEALTH)
#: ``validate`` (a torch run per valid case): an eighth of the profile's count (7 in ci).
SLOW = settings(max_examples=max(5, _N // 8), suppress_health_check=_HEALTH)


def run_cli(argv: list[str]) -> tuple[int, str, str, list[warnings.WarningMessage]]:
    """``(exit code, stdout, stderr, warnings)`` of ``normdyn argv`` run in-process."""
    out, err = io.StringIO(), io.StringIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exc:  # argparse: --help (0) or a usage error (2)
                code = exc.code if isinstance(exc.code, int) else 2
    return int(code), out.getvalue(), err.getvalue(), list(caught)


def check_contract(argv: list[str], allowed: tuple[int, ...] = (0, 2)) -> tuple[int, str]:
    code, _, err, caught = run_cli(argv)
    assert code in allowed, (argv, code, err)
    assert "Traceback" not in err, (argv, err)
    runtime = [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert not runtime, (argv, [str(w.message) for w in runtime])
    command = argv[0]
    if code == 2 and f"normdyn {command}: error:" in err:
        lines = [ln for ln in err.strip().splitlines() if ln.startswith("normdyn ")]
        assert len(lines) == 1 and "\n" not in lines[0], (argv, err)
    return code, err


def _fresh(tmp_path: Path, name: str) -> Path:
    return tmp_path / f"{name}{next(_counter)}"


# ----------------------------------------------------------------------------- simulate

_INITIAL = st.one_of(
    st.tuples(st.just("--elr"), cli_lists).map(list),
    st.tuples(st.just("--sigma2"), cli_lists, st.just("--c"), cli_lists).map(list),
    st.tuples(st.just("--layers"),
              st.one_of(st.integers(-2, 6).map(str), st.integers(10**15, 10**30).map(str),
                        cli_bad_numbers),
              st.just("--spread"), cli_numbers).map(list),
    st.just([]),  # no initial state: refused
)

_OPTIONS = st.fixed_dictionaries({}, optional={
    "--lr": cli_lr_specs,
    "--momentum": cli_numbers,
    "--weight-decay": cli_numbers,
    "--schedule": st.one_of(st.sampled_from(["constant", "linear_warmup", "exponential_warmup",
                                             "critical_warmup", "step_decay"]), cli_words),
    "--warmup-steps": st.one_of(st.integers(-2, 5).map(str), cli_huge_ints, cli_bad_numbers),
    "--tau": cli_numbers,
    "--milestones": cli_lists,
    "--gamma": cli_numbers,
    "--seed": st.one_of(st.integers(-2, 5).map(str), cli_huge_ints, cli_bad_numbers),
    "--elements": st.one_of(st.integers(-1, 6).map(str), cli_lists,
                            st.integers(10**13, 10**20).map(str)),
    "--record": st.one_of(st.sampled_from(["all", "summary"]), st.integers(-2, 3).map(str),
                          cli_words),
    "--engine": st.one_of(st.sampled_from(["auto", "numba", "numpy"]), cli_words),
})


@FEW
@given(mode=st.one_of(st.sampled_from(["discrete", "continuous", "drift"]), cli_words),
       initial=_INITIAL, options=_OPTIONS, steps=cli_steps,
       out=st.sampled_from([None, ".csv", ".parquet", ".txt", ""]), as_json=st.booleans())
@example(mode="discrete", initial=["--elr", "1e300,1e-300"], options={"--lr": "1"}, steps="5",
         out=".csv", as_json=True)  # issue 12: the spread 1e600 overflowed
@example(mode="continuous", initial=["--elr", "1e300,1e-300"], options={"--lr": "1"},
         steps="5", out=".csv", as_json=True)
@example(mode="drift", initial=["--elr", "1e300,1e-300"], options={"--lr": "1"}, steps="5",
         out=".csv", as_json=True)
@example(mode="discrete", initial=["--elr", "1e300,1e-300"],
         options={"--lr": "1", "--record": "summary"}, steps="5", out=".csv", as_json=False)
@example(mode="discrete", initial=["--sigma2", "1,1", "--c", "1e300,1"], options={}, steps="3",
         out=None, as_json=False)  # sigma2 overflows: an error naming sigma2
@example(mode="continuous", initial=["--elr", "1e300,1e-300"],
         options={"--schedule": "linear_warmup", "--warmup-steps": "2"}, steps="3", out=None,
         as_json=False)  # warnings from solve_ivp, then an error not naming sigma2
@example(mode="discrete", initial=["--elr", "1e300,1e-300"], options={"--momentum": "0.9"},
         steps="3", out=None, as_json=False)  # update_elr was NaN after a RuntimeWarning
@example(mode="discrete", initial=["--layers", "1000000000000", "--spread", "10"], options={},
         steps="1", out=None, as_json=False)  # was a MemoryError traceback
@example(mode="discrete", initial=["--elr", "1,2"], options={"--lr": "1e-3:1:1000000000000"},
         steps="1", out=None, as_json=False)  # was a MemoryError traceback
def test_simulate_fuzz(tmp_path, mode, initial, options, steps, out, as_json):
    argv = ["simulate", mode, *initial, "--steps", steps, "--no-progress"]
    for key, value in options.items():
        argv += [key, value]
    if out is not None:
        argv += ["--out", str(_fresh(tmp_path, "sim")) + out]
    if as_json:
        argv.append("--json")
    check_contract(argv)


def test_extreme_elrs_on_the_cli_give_log10_spread_600(tmp_path):
    """The issue's command succeeds, without warnings, and records the spread in log space."""
    import numpy as np
    import pandas as pd

    path = tmp_path / "b.csv"
    code, err = check_contract(["simulate", "discrete", "--elr", "1e300,1e-300", "--lr", "1",
                                "--steps", "5", "--out", str(path)])
    assert code == 0, err
    frame = pd.read_csv(path)
    first = frame[frame.step == 0]
    assert np.all(first.log10_spread == 600.0) and np.all(np.isinf(first.spread))
    assert np.all(np.isfinite(frame.elr)) and np.all(np.isfinite(frame.log10_spread))


# ----------------------------------------------------------------------------- check


@FEW
@given(only=st.one_of(cli_words, cli_lists, st.just("elr_map,critical_lr")),
       flags=st.lists(st.sampled_from(["--json", "--bogus", "-x"]), max_size=2))
@example(only=",", flags=[])
@example(only="elr_map", flags=["--json"])
def test_check_fuzz(only, flags):
    check_contract(["check", "--only", only, *flags], allowed=(0, 1, 2))


# ----------------------------------------------------------------------------- figures, report


@FEW
@given(only=cli_figure_names,
       profile=st.one_of(st.sampled_from(["micro", "quick", "full"]), cli_words),
       flags=st.lists(st.sampled_from(["--refresh", "--bogus", "--no-property-tests"]),
                      max_size=2, unique=True))
@example(only=",", profile="micro", flags=[])
def test_figures_fuzz(tmp_path, only, profile, flags):
    argv = ["figures", "--only", only, "--profile", profile, "--out",
            str(_fresh(tmp_path, "fig")), "--no-report", "--no-progress", *flags]
    check_contract(argv)


@FEW
@given(profile=cli_words.filter(lambda w: w not in ("quick", "full", "micro")),
       out=st.one_of(st.just("nan"), st.just("-1"), cli_words))
def test_report_fuzz(tmp_path, profile, out):
    argv = ["report", "--out", str(tmp_path / "rep" / out), "--profile", profile,
            "--no-property-tests"]
    check_contract(argv)


# ----------------------------------------------------------------------------- validate

torch_needed = pytest.mark.skipif(
    not all(__import__("importlib").util.find_spec(m) for m in ("torch", "sklearn")),
    reason="needs torch and scikit-learn")

_VALIDATE_BASE = ["validate", "--arch", "mlp", "--depth", "2", "--width", "4", "--data",
                  "synthetic", "--batch-size", "8", "--device", "cpu", "--no-progress",
                  "--threads", "1"]

_VALIDATE_OPTIONS = st.fixed_dictionaries({}, optional={
    "--lr": cli_numbers,
    "--momentum": cli_numbers,
    "--weight-decay": cli_numbers,
    "--width-multiplier": cli_numbers,
    "--depth": st.one_of(st.integers(-1, 3).map(str), st.integers(10**12, 10**30).map(str),
                         cli_bad_numbers),
    "--width": st.one_of(st.integers(-1, 6).map(str), st.integers(10**12, 10**30).map(str),
                         cli_bad_numbers),
    "--batch-size": st.one_of(st.integers(-1, 9).map(str), cli_huge_ints, cli_bad_numbers),
    "--seed": st.one_of(st.integers(-1, 3).map(str), cli_huge_ints),
    "--sync-every": st.one_of(st.integers(-1, 3).map(str), cli_huge_ints),
    "--checkpoint-every": st.one_of(st.integers(-1, 3).map(str), cli_huge_ints),
    "--schedule": st.one_of(st.sampled_from(["constant", "linear_warmup", "critical_warmup",
                                             "exponential_warmup", "step_decay"]), cli_words),
    "--schedule-steps": st.one_of(st.integers(-1, 3).map(str), cli_huge_ints),
    "--optimizer": st.one_of(st.sampled_from(["sgd", "adam"]), cli_words),
    "--threads": st.one_of(st.integers(-1, 2).map(str), cli_huge_ints),
    "--arch": st.one_of(st.just("mlp"), cli_words),
    "--data": st.one_of(st.just("synthetic"), cli_words),
    "--table-format": st.one_of(st.sampled_from(["csv", "parquet"]), cli_words),
})


@torch_needed
@pytest.mark.torch
@SLOW
@given(options=_VALIDATE_OPTIONS, steps=cli_steps)
@example(options={"--lr": "1e300"}, steps="1")  # was a torch RuntimeError traceback
@example(options={"--width-multiplier": "1e300"}, steps="1")  # was an OverflowError
@example(options={"--seed": str(10**24)}, steps="1")  # did not name the seed
@example(options={"--depth": str(10**30)}, steps="1")  # was killed for memory
def test_validate_fuzz(tmp_path, options, steps):
    import torch

    threads = torch.get_num_threads()
    argv = [*_VALIDATE_BASE, "--steps", steps, "--out", str(_fresh(tmp_path, "val"))]
    for key, value in options.items():
        argv += [key, value]
    try:
        code, err = check_contract(argv, allowed=(0, 1, 2))
    finally:
        torch.set_num_threads(threads)
    if code == 1:  # a diverged run: exactly one line that names the step
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "not finite at step" in lines[0], err
