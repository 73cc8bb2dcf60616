"""Tests of one check: its identity and its rise/fall state machine (``step``, with
explicit ``now`` and no timers)."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

from dataclasses import replace

import pytest

from lvsd.config.model import CheckSpec, ExecOptions, InitialState
from lvsd.health.check import CheckStatus, check_subscriptions, step
from lvsd.model import Protocol, ServiceKey
from tests.health.helpers import FAIL, OK, TCP, R, config, rs, service


def run(status: CheckStatus, results: list[R], spec: CheckSpec) -> list[bool]:
    states = []
    for t, result in enumerate(results, start=1):
        status = step(status, result, spec, float(t))
        states.append(status.up)
    return states


# --- one check ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("initial", "results", "expected"),
    [
        # alpha: down until the first success, which brings it up at once
        (InitialState.DOWN, [FAIL, FAIL, OK], [False, False, True]),
        (InitialState.DOWN, [OK, FAIL, FAIL, FAIL], [True, True, True, False]),
        # after the first up, rise applies
        (InitialState.DOWN, [OK, FAIL, FAIL, FAIL, OK, OK], [True, True, True, False, False, True]),
        # UP start: up until fall failures in a row
        (InitialState.UP, [FAIL, FAIL, FAIL], [True, True, False]),
        (InitialState.UP, [FAIL, FAIL, OK, FAIL, FAIL], [True, True, True, True, True]),
        (
            InitialState.UP,
            [FAIL, FAIL, FAIL, OK, FAIL, OK, OK],
            [True, True, False] + [False] * 3 + [True],
        ),
    ],
)
def test_rise_fall(initial: InitialState, results: list[R], expected: list[bool]) -> None:
    """Rise/fall hysteresis with rise=2, fall=3 from either initial state."""
    assert expected == run(CheckStatus.initial(initial, 0.0), results, TCP)


def test_adopted_check_takes_first_result_as_is() -> None:
    """An adopted check is up, and its first result decides: one failure is enough."""
    assert [False] == run(CheckStatus.initial(InitialState.DOWN, 0.0, adopted=True), [FAIL], TCP)
    assert [True, True, True, False] == run(
        CheckStatus.initial(InitialState.DOWN, 0.0, adopted=True), [OK, FAIL, FAIL, FAIL], TCP
    )


def test_step_keeps_counters_detail_and_since() -> None:
    """A step records the result's detail and reason, counts, and when the state changed."""
    status = CheckStatus.initial(InitialState.UP, 0.0)
    status = step(status, FAIL, TCP, 1.0)
    status = step(status, FAIL, TCP, 2.0)
    status = step(status, FAIL, TCP, 3.0)
    expected = (False, 3.0, 0, 3, 3, 3, "refused", FAIL.detail, 3.0)
    assert expected == (
        status.up,
        status.since,
        status.successes,
        status.failures,
        status.total,
        status.total_failures,
        status.reason,
        status.detail,
        status.last_at,
    )


def test_dynamic_weight_none_keeps_last_opinion() -> None:
    """A result without a weight keeps the weight reported before; drain follows the
    latest result."""
    status = CheckStatus.initial(InitialState.UP, 0.0)
    status = step(status, R(True, weight=5, drain=True), TCP, 1.0)
    status = step(status, R(True), TCP, 2.0)
    assert (5, False) == (status.weight, status.drain)


# --- identities ---------------------------------------------------------------------------


def test_exec_check_naming_the_vip_is_scoped_per_service() -> None:
    """An exec check whose command uses {vip} is probed per service."""
    spec = CheckSpec(kind="exec", options=ExecOptions(command=("check", "{vip}")))
    a = service("a", rs(1, checks=(spec,)))
    b = replace(
        service("b", rs(1, checks=(spec,))), key=ServiceKey.inet(Protocol.TCP, "192.0.2.2", 80)
    )
    assert 2 == len(check_subscriptions(config(a, b)))
