"""The dead-layer rule and the live spreads, against values typed in the test."""

import numpy as np
import pandas as pd
import pytest

from normdyn._spread import dead_mask, robust_spread, spread_max_min, spread_table


def test_zero_gradient_and_tiny_elr_are_dead_and_left_out():
    elr = np.array([1e-3, 2e-3, 4e-3, 1e-20, 0.0])
    g = np.array([1.0, 1.0, 1.0, 1.0, 0.0])
    assert dead_mask(elr, g).tolist() == [False, False, False, True, True]
    # live layers 1e-3, 2e-3, 4e-3: max/min = 4, not 4e17 or inf
    assert spread_max_min(elr, g) == pytest.approx(4.0, rel=1e-15)


def test_exact_zero_gradient_is_dead_even_with_a_normal_elr():
    elr = np.array([1.0, 2.0, 3.0])
    assert dead_mask(elr, np.array([1.0, 0.0, 1.0])).tolist() == [False, True, False]
    assert spread_max_min(elr, np.array([1.0, 0.0, 1.0])) == 3.0


def test_threshold_edge_is_relative_to_the_median():
    # median of (1, 1, 1e-12) is 1: 1e-12 is dead (<=), 1.0001e-12 is not
    assert dead_mask(np.array([1.0, 1.0, 1e-12])).tolist() == [False, False, True]
    assert dead_mask(np.array([1.0, 1.0, 1.0001e-12])).tolist() == [False, False, False]


def test_robust_spread_is_the_quantile_ratio():
    elr = np.arange(1.0, 102.0)  # 1..101: Q05 = 6, Q95 = 96 (linear interpolation)
    assert robust_spread(elr) == pytest.approx(96.0 / 6.0, rel=1e-14)
    assert spread_max_min(elr) == 101.0


def test_nonfinite_is_not_dead_and_fewer_than_two_live_is_nan():
    assert not dead_mask(np.array([np.nan, 1.0]))[0]
    assert np.isnan(spread_max_min(np.array([1.0, 0.0])))
    assert np.isnan(robust_spread(np.array([1.0])))


def test_spread_table_counts_dead_layers_per_group():
    df = pd.DataFrame({"step": [0, 0, 0, 1, 1, 1], "elr": [1.0, 2.0, 0.0, 1.0, 8.0, 2.0]})
    t = spread_table(df, ["step"])
    assert t["spread"].tolist() == [2.0, 8.0]
    assert t["dead_layers"].tolist() == [1, 0]
    with pytest.raises(ValueError, match="lacks columns"):
        spread_table(df, ["seed"])
