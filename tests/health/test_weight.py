"""Tests of a real server's weight and its factors: slow start, dynamic weights,
percentages and drain."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lvsd.health.weight import WeightFactors, effective_weight, percent_weight, ramp_factor
from lvsd.model import MAX_WEIGHT


@pytest.mark.parametrize(
    ("now", "expected"),
    [(100.0, 1), (105.0, 6), (110.0, 11), (115.0, 15), (119.0, 19), (120.0, 20), (500.0, 20)],
)
def test_slow_start_ramp_values(now: float, expected: int) -> None:
    """Weight 20 ramps linearly from 1 at up_since (100) to 20 over 20 seconds:
    1 + 19 * elapsed / 20, rounded half up (5.75 -> 6, 10.5 -> 11, 15.25 -> 15)."""
    factors = effective_weight(20, up_since=100.0, slow_start=20.0, now=now)
    assert expected == factors.effective


def test_ramp_factor_no_ramp_cases() -> None:
    """No anchor, no slow start, or a target of 1 mean no ramp."""
    assert [1.0, 1.0, 1.0] == [
        ramp_factor(10, None, 20.0, 5.0),
        ramp_factor(10, 0.0, 0.0, 5.0),
        ramp_factor(1, 0.0, 20.0, 5.0),
    ]


def test_weight_factors_explain_the_weight() -> None:
    """Configured 100, dynamic 50 (factor 0.5), halfway through slow start: the
    factors multiply to the effective weight."""
    factors = effective_weight(100, dynamic=50, up_since=0.0, slow_start=10.0, now=5.0)
    product = factors.configured * factors.dynamic * factors.ramp * factors.drain
    assert (0.5, 26) == (factors.dynamic, factors.effective)
    assert pytest.approx(25.5) == product


@pytest.mark.parametrize(
    ("configured", "dynamic", "max_dynamic", "expected"),
    [
        (10, 5, None, 5),
        (10, 50, None, 10),  # bounded by the configured weight
        (10, 50, 40, 40),  # exec max_weight raises the bound
        (10, -3, None, 0),  # negative = 0 = drained
        (10, 0, None, 0),
        (MAX_WEIGHT, 10**9, 10**9, MAX_WEIGHT),
        (0, 5, None, 0),  # configured 0: quiesced by the admin
    ],
)
def test_dynamic_weight_bounded(
    configured: int, dynamic: int, max_dynamic: int | None, expected: int
) -> None:
    """Dynamic weights are bounded to 0..max_dynamic (default configured) and MAX_WEIGHT."""
    assert (
        expected == effective_weight(configured, dynamic=dynamic, max_dynamic=max_dynamic).effective
    )


@pytest.mark.parametrize(
    ("percent", "weight", "expected"),
    [(75, 4, 3), (50, 3, 2), (1, 10, 1), (0, 10, 0), (100, 7, 7), (200, 7, 14), (10, 1, 1)],
)
def test_percent_weight(percent: int, weight: int, expected: int) -> None:
    """An agent's percentage of the configured weight, rounded, at least 1 unless 0%."""
    assert expected == percent_weight(percent, weight)


def test_drain_gives_zero() -> None:
    """Drained: weight 0 with drain factor 0."""
    assert WeightFactors(configured=7, drain=0.0, effective=0) == effective_weight(7, drain=True)


@given(
    configured=st.integers(min_value=1, max_value=MAX_WEIGHT),
    dynamic=st.none() | st.integers(min_value=1, max_value=2 * MAX_WEIGHT),
    elapsed=st.floats(min_value=0.0, max_value=100.0),
    slow_start=st.floats(min_value=0.0, max_value=60.0),
)
def test_effective_weight_bounds(
    configured: int, dynamic: int | None, elapsed: float, slow_start: float
) -> None:
    """Up and not drained: never 0, never above MAX_WEIGHT nor the bound."""
    factors = effective_weight(
        configured, dynamic=dynamic, up_since=0.0, slow_start=slow_start, now=elapsed
    )
    assert 1 <= factors.effective <= configured
