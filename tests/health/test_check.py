"""Tests of one check: its identity, its rise/fall state machine (``step``, with
explicit ``now`` and no timers) and which check explains a real server's state."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

from dataclasses import replace

import pytest

from lvsd.config.model import CheckSpec, ExecOptions, InitialState
from lvsd.health.check import CheckStatus, cause, check_subscriptions, step
from lvsd.model import Protocol, ServiceKey
from tests.health.helpers import FAIL, LOCAL_FAIL, OK, TCP, TCP81, R, config, rs, service


def run(status: CheckStatus, results: list[R], spec: CheckSpec) -> list[bool]:
    states = []
    for t, result in enumerate(results, start=1):
        status = step(status, result, spec, float(t))
        states.append(status.up)
    return states


# --- one check ------------------------------------------------------------------------


def test_local_result_holds_the_state() -> None:
    """A ``local`` result (lvsd's own shortage) changes nothing: no fall count, no
    detail, no totals; the next real failure continues the count from before."""
    status = step(CheckStatus.initial(InitialState.UP, 0.0), FAIL, TCP, 1.0)
    assert status is step(status, LOCAL_FAIL, TCP, 2.0)
    assert [True, False] == run(status, [FAIL, FAIL], TCP)  # fall=3: 1 + 2


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


def test_a_failure_short_of_fall_keeps_the_drain() -> None:
    """An agent said drain; a missed answer (fall 3) keeps it drained, not back at its
    weight; a success without drain lifts it, and going down clears it."""
    status = step(CheckStatus.initial(InitialState.UP, 0.0), R(True, drain=True), TCP, 1.0)
    status = step(status, FAIL, TCP, 2.0)
    assert (True, True) == (status.up, status.drain)
    status = step(status, FAIL, TCP, 3.0)
    assert (True, True) == (status.up, status.drain)
    assert (False, False) == (lambda s: (s.up, s.drain))(step(status, FAIL, TCP, 4.0))
    assert not step(status, OK, TCP, 4.0).drain


# --- the deciding check -------------------------------------------------------------------

UP = CheckStatus.initial(InitialState.UP, 0.0)  # initial state up, no result yet
PENDING = CheckStatus.initial(InitialState.DOWN, 0.0)  # not checked yet
PASSED = step(PENDING, OK, TCP, 1.0)
FAILED = step(UP, R(False, "timed out", ""), TCP81, 1.0)  # fall=1, no reason word


@pytest.mark.parametrize(
    ("checks", "up", "expected"),
    [
        (((TCP, PASSED),), True, ("ok", "tcp: connect: ok", TCP)),
        (((TCP, UP), (TCP81, PASSED)), True, ("ok", "tcp port 81: connect: ok", TCP81)),
        # an up with no result yet: the first check
        (((TCP, UP), (TCP81, UP)), True, ("ok", "tcp: initial state up", TCP)),
        (((TCP, PASSED), (TCP81, FAILED)), False, ("error", "tcp port 81: timed out", TCP81)),
        # a down check with no result yet counts for a down
        (((TCP, PENDING), (TCP81, FAILED)), False, ("pending", "tcp: not checked yet", TCP)),
        ((), True, ("ok", "no checks", None)),
        # no check agrees (a held server let go while its checks are up): none named
        (((TCP, PASSED),), False, ("error", "", None)),
    ],
)
def test_cause_names_the_deciding_check(
    checks: tuple[tuple[CheckSpec, CheckStatus], ...],
    up: bool,
    expected: tuple[str, str, CheckSpec | None],
) -> None:
    """The first check that agrees with the state and has a result explains it (for a
    down, one without a result counts too), else the first up check; reason words
    default to ok, error, or pending for a check not run yet."""
    assert expected == cause(checks, up)


# --- identities ---------------------------------------------------------------------------


def test_exec_check_naming_the_vip_is_scoped_per_service() -> None:
    """An exec check whose command uses {vip} is probed per service."""
    spec = CheckSpec(kind="exec", options=ExecOptions(command=("check", "{vip}")))
    a = service("a", rs(1, checks=(spec,)))
    b = replace(
        service("b", rs(1, checks=(spec,))), key=ServiceKey.inet(Protocol.TCP, "192.0.2.2", 80)
    )
    assert 2 == len(check_subscriptions(config(a, b)))
