"""Tests of the pure health state machine: results in, states and weights out, with
explicit ``now`` and no timers."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lvsd.config.model import (
    AgentOptions,
    CheckSpec,
    Config,
    ExecOptions,
    InitialState,
    PanicGuard,
    Quorum,
    RealServer,
    TcpOptions,
    VirtualServiceConfig,
)
from lvsd.desired import ServerHealth
from lvsd.health.state import (
    CheckId,
    CheckStatus,
    HealthState,
    WeightFactors,
    check_id,
    check_subscriptions,
    effective_weight,
    percent_weight,
    ramp_factor,
    step,
)
from lvsd.model import MAX_WEIGHT, DestKey, Protocol, ServiceKey


@dataclass(frozen=True, slots=True)
class R:
    """A minimal probe result."""

    ok: bool
    detail: str = ""
    reason: str = "ok"
    weight: int | None = None
    drain: bool = False


OK = R(True, "connect: ok")
FAIL = R(False, "connect 10.0.0.1:80: refused", "refused")

TCP = CheckSpec(kind="tcp", options=TcpOptions(), rise=2, fall=3)
TCP81 = CheckSpec(kind="tcp", options=TcpOptions(), rise=1, fall=1, port=81)


def rs(n: int, *, weight: int = 1, checks: tuple[CheckSpec, ...] = (TCP,)) -> RealServer:
    return RealServer(
        address=ipaddress.ip_address(f"10.0.0.{n}"), port=80, weight=weight, checks=checks
    )


def service(name: str = "web", *servers: RealServer, **kw: object) -> VirtualServiceConfig:
    return VirtualServiceConfig(
        name=name,
        key=ServiceKey.inet(Protocol.TCP, "192.0.2.1", 80),
        real_servers=servers or (rs(1),),
        **kw,  # type: ignore[arg-type]
    )


def config(*services: VirtualServiceConfig) -> Config:
    return Config(path="test.toml", services=services)


def cid(svc: VirtualServiceConfig, n: int = 0, spec_index: int = 0) -> CheckId:
    server = svc.real_servers[n]
    return check_id(svc, server, server.checks[spec_index])


def dest(n: int) -> DestKey:
    return DestKey.of(f"10.0.0.{n}", 80)


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


# --- weights ------------------------------------------------------------------------------


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


# --- the whole state -------------------------------------------------------------------------


def test_alpha_start_and_transitions() -> None:
    """A service starting down: the first success brings the server up, reported as a
    realserver.up transition with its reason; fall failures bring it down."""
    svc = service("web", rs(1))
    state = HealthState.from_config(config(svc), 0.0)
    assert {("web", dest(1)): ServerHealth(up=False, weight=0)} == dict(state.server_health(0.0))
    report = state.observe(cid(svc), OK, 1.0)
    assert [("realserver.up", "ok", True)] == [
        (t.event, t.reason, t.new) for t in report.transitions
    ]
    assert ServerHealth(up=True, weight=1) == state.server_health(1.0)[("web", dest(1))]
    downs = [state.observe(cid(svc), FAIL, t) for t in (2.0, 3.0, 4.0)]
    assert [0, 0, 1] == [len(r.transitions) for r in downs]
    down = downs[2].transitions[0]
    assert ("realserver.down", "refused", f"tcp: {FAIL.detail}", TCP) == (
        down.event,
        down.reason,
        down.detail,
        down.check,
    )


def test_up_start() -> None:
    """A service with initial_state up: up at once with its weight, no ramp."""
    svc = service("web", rs(1, weight=5), initial_state=InitialState.UP, slow_start=30.0)
    state = HealthState.from_config(config(svc), 0.0)
    assert ServerHealth(up=True, weight=5) == state.server_health(0.0)[("web", dest(1))]


def test_multiple_checks_any_down_means_down() -> None:
    """A real server with two checks is down when either is down."""
    svc = service("web", rs(1, checks=(TCP, TCP81)), initial_state=InitialState.UP)
    state = HealthState.from_config(config(svc), 0.0)
    report = state.observe(cid(svc, 0, 1), FAIL, 1.0)  # fall=1 on port 81
    assert [(False, TCP81)] == [(t.new, t.check) for t in report.transitions]
    report = state.observe(cid(svc, 0, 1), OK, 2.0)
    assert [True] == [t.new for t in report.transitions]


def test_slow_start_after_down_up_but_not_at_first_up() -> None:
    """The first up at daemon start does not ramp; a later down->up ramps from 1 to 10
    over 10 s."""
    svc = service("web", rs(1, weight=10), slow_start=10.0)
    state = HealthState.from_config(config(svc), 0.0)
    state.observe(cid(svc), OK, 1.0)
    assert 10 == state.server_health(1.0)[("web", dest(1))].weight
    for t in (2.0, 3.0, 4.0):
        state.observe(cid(svc), FAIL, t)
    state.observe(cid(svc), OK, 5.0)
    state.observe(cid(svc), OK, 6.0)  # rise=2: up at 6
    weights = [state.server_health(t)[("web", dest(1))].weight for t in (6.0, 11.0, 16.0, 20.0)]
    assert [1, 6, 10, 10] == weights  # 1 + 9 * 0.5 = 5.5 -> 6


def test_dynamic_weight_and_drain_from_agent() -> None:
    """An agent-style result sets the weight; a drain result gives weight 0 while the
    server stays up."""
    svc = service("web", rs(1, weight=10), initial_state=InitialState.UP)
    state = HealthState.from_config(config(svc), 0.0)
    state.observe(cid(svc), R(True, weight=4), 1.0)
    assert ServerHealth(up=True, weight=4) == state.server_health(1.0)[("web", dest(1))]
    state.observe(cid(svc), R(True, drain=True), 2.0)
    assert ServerHealth(up=True, weight=0) == state.server_health(2.0)[("web", dest(1))]
    factors = state.explain("web", dest(1), 2.0)
    assert (0.4, 0.0, 0) == (factors.dynamic, factors.drain, factors.effective)


def _pool(n: int, *, interval: float = 2.0, **kw: object) -> VirtualServiceConfig:
    fast = CheckSpec(kind="tcp", options=TcpOptions(), rise=1, fall=1, interval=interval)
    return service(
        "web",
        *(rs(i, weight=1, checks=(fast,)) for i in range(1, n + 1)),
        initial_state=InitialState.UP,
        **kw,
    )


def test_quorum_hysteresis_both_ways() -> None:
    """Quorum 3 with hysteresis 1: lost below 2, regained at 4, with transitions."""
    svc = _pool(5, quorum=Quorum(minimum=3, hysteresis=1))
    state = HealthState.from_config(config(svc), 0.0)
    events: list[tuple[int, bool]] = []
    plan = [(0, FAIL), (1, FAIL), (2, FAIL), (3, FAIL), (3, OK), (2, OK), (1, OK)]
    for t, (n, result) in enumerate(plan, start=1):
        report = state.observe(cid(svc, n), result, float(t))
        events += [(t, q.up) for q in report.quorum]
        if t == 4:
            assert frozenset({"web"}) == state.quorum_lost()
    # live weights: 4, 3, 2, 1 (lost: 1 < 2), 2, 3, 4 (regained: 4 >= 4)
    assert [(4, False), (7, True)] == events
    assert frozenset() == state.quorum_lost()


def test_quorum_starts_lost_when_pool_starts_down() -> None:
    """A pool starting down starts with its quorum lost, regained as servers come up."""
    svc = replace(_pool(2, quorum=Quorum(minimum=2)), initial_state=InitialState.DOWN)
    state = HealthState.from_config(config(svc), 0.0)
    assert frozenset({"web"}) == state.quorum_lost()
    report = state.round([(cid(svc, 0), OK), (cid(svc, 1), OK)], 1.0)
    assert [True] == [q.up for q in report.quorum]


@pytest.mark.parametrize(
    ("failing", "threshold", "min_servers", "panic"),
    [
        (6, 0.5, 3, True),  # 6/10 > 0.5
        (5, 0.5, 3, False),  # 5/10 is not more than 0.5
        (10, 0.5, 11, False),  # pool too small for the guard
        (3, 0.2, 3, True),
    ],
)
def test_panic_guard_thresholds(
    failing: int, threshold: float, min_servers: int, panic: bool
) -> None:
    """When more than the threshold share fails in one round, the downs are held back
    and the servers keep their weights; otherwise they go down."""
    svc = _pool(10, panic=PanicGuard(threshold=threshold, min_servers=min_servers))
    state = HealthState.from_config(config(svc), 0.0)
    report = state.round([(cid(svc, i), FAIL) for i in range(failing)], 1.0)
    ups = sum(1 for h in state.server_health(1.0).values() if h.up)
    if panic:
        assert ([True], 10, frozenset({"web"}), 0) == (
            [p.panic for p in report.panic],
            ups,
            state.panicking(),
            len(report.transitions),
        )
    else:
        assert ([], 10 - failing, failing) == (
            list(report.panic),
            ups,
            len(report.transitions),
        )


@pytest.mark.parametrize(
    ("interval", "rounds", "panic"),
    [
        # one down a round, the six within one check interval (2 s)
        (2.0, [(1.0, [0]), (1.3, [1]), (1.6, [2]), (1.9, [3]), (2.2, [4]), (2.5, [5])], True),
        (2.0, [(1.0, [0, 1]), (2.0, [2, 3]), (2.9, [4, 5])], True),
        # the same six spread over 2.5 s: never more than four within 2 s
        (2.0, [(1.0, [0]), (1.5, [1]), (2.0, [2]), (2.5, [3]), (3.0, [4]), (3.5, [5])], False),
        # ... but within a 5 s check interval
        (5.0, [(1.0, [0]), (1.5, [1]), (2.0, [2]), (2.5, [3]), (3.0, [4]), (3.5, [5])], True),
        # a whole interval apart: the first three are out of the window
        (2.0, [(1.0, [0, 1, 2]), (3.0, [3, 4, 5])], False),
        # five of ten within the window is not more than half
        (2.0, [(1.0, [0]), (1.3, [1]), (1.6, [2]), (1.9, [3]), (2.2, [4])], False),
    ],
)
def test_panic_guard_counts_downs_within_the_check_interval(
    interval: float, rounds: list[tuple[float, list[int]]], panic: bool
) -> None:
    """The guard counts the servers that went down within the service's check interval
    up to now, not only those of one round: first probe runs are spread over the
    interval, so a broken checker takes a pool down over several rounds. On a trip
    every one of them is held up; downs spread over more than the window go down."""
    svc = _pool(10, interval=interval, panic=PanicGuard(threshold=0.5, min_servers=3))
    state = HealthState.from_config(config(svc), 0.0)
    for now, failing in rounds:
        state.round([(cid(svc, i), FAIL) for i in failing], now)
    end = rounds[-1][0]
    failed = sum(len(failing) for _, failing in rounds)
    ups = sum(1 for h in state.server_health(end).values() if h.up)
    held = sum(1 for s in state.status(end) if s.held)
    if panic:
        assert (frozenset({"web"}), 10, failed) == (state.panicking(), ups, held)
    else:
        assert (frozenset(), 10 - failed, 0) == (state.panicking(), ups, held)


def test_panic_brings_back_the_downs_of_the_window_at_their_last_good_weight() -> None:
    """When the guard trips, the servers that went down earlier in the window come back
    (``realserver.up`` with reason ``panic``) at the weight they had, and are held."""
    svc = _pool(4, panic=PanicGuard(threshold=0.5, min_servers=3))
    svc = replace(svc, real_servers=tuple(replace(r, weight=7) for r in svc.real_servers))
    state = HealthState.from_config(config(svc), 0.0)
    first = state.round([(cid(svc, 0), FAIL), (cid(svc, 1), FAIL)], 1.0)  # 2/4: not yet
    report = state.round([(cid(svc, 2), FAIL)], 1.5)  # 3/4 within 2 s
    assert ([dest(1), dest(2)], []) == (
        [t.realserver for t in first.transitions if not t.new],
        list(first.panic),
    )
    assert [(dest(1), True, "panic"), (dest(2), True, "panic")] == [
        (t.realserver, t.new, t.reason) for t in report.transitions
    ]
    assert [(True, 3, (dest(1), dest(2), dest(3)))] == [
        (p.panic, p.failing, p.held) for p in report.panic
    ]
    assert [7, 7, 7, 7] == [h.weight for h in state.server_health(1.5).values()]


def test_panic_guard_off_lets_everything_go_down() -> None:
    """Without a guard, a mass failure takes every server down."""
    svc = _pool(10)
    state = HealthState.from_config(config(svc), 0.0)
    report = state.round([(cid(svc, i), FAIL) for i in range(10)], 1.0)
    assert (10, frozenset()) == (len(report.transitions), state.panicking())


def test_panic_leaves_when_share_falls_under_threshold() -> None:
    """Held servers recover: once the failing share is back under the threshold, panic
    ends and the remaining failures go down."""
    svc = _pool(10, panic=PanicGuard(threshold=0.5, min_servers=3))
    state = HealthState.from_config(config(svc), 0.0)
    state.round([(cid(svc, i), FAIL) for i in range(8)], 1.0)
    report = state.round([(cid(svc, i), OK) for i in range(4)], 2.0)  # 4/10 still failing
    assert [False] == [p.panic for p in report.panic]
    assert {dest(i) for i in range(5, 9)} == {t.realserver for t in report.transitions}
    assert frozenset() == state.panicking()
    assert 6 == sum(1 for h in state.server_health(2.0).values() if h.up)


def test_panic_holds_last_good_weight() -> None:
    """A held server keeps the weight it had when the panic started."""
    svc = _pool(4, panic=PanicGuard(threshold=0.5, min_servers=3))
    svc = replace(svc, real_servers=tuple(replace(r, weight=7) for r in svc.real_servers))
    state = HealthState.from_config(config(svc), 0.0)
    state.round([(cid(svc, i), FAIL) for i in range(3)], 1.0)
    assert [7, 7, 7, 7] == [h.weight for h in state.server_health(1.0).values()]


def test_shared_check_feeds_every_subscriber() -> None:
    """The same spec on the same real server in two services is one check id with two
    subscribers, and one result moves both."""
    a = service("a", rs(1))
    b = replace(service("b", rs(1)), key=ServiceKey.inet(Protocol.TCP, "192.0.2.2", 80))
    subs = check_subscriptions(config(a, b))
    assert [[("a", dest(1), TCP), ("b", dest(1), TCP)]] == list(subs.values())
    state = HealthState.from_config(config(a, b), 0.0)
    report = state.observe(cid(a), OK, 1.0)
    assert {"a", "b"} == {t.service for t in report.transitions}


AGENT = CheckSpec(kind="agent", options=AgentOptions(), port=5555)
EXEC = CheckSpec(kind="exec", options=ExecOptions(command=("check",), dynamic=True))
EXEC30 = replace(EXEC, options=ExecOptions(command=("check",), dynamic=True, max_weight=30))


@pytest.mark.parametrize(
    ("spec", "reported", "expected"),
    [
        (AGENT, 50, {"small": 5, "big": 50}),  # 50% of each one's own weight
        (AGENT, 200, {"small": 10, "big": 100}),  # bounded by each configured weight
        (AGENT, 20, {"small": 2, "big": 20}),
        (AGENT, 1, {"small": 1, "big": 1}),  # at least 1 unless 0%
        (AGENT, 0, {"small": 0, "big": 0}),  # 0%: drained
        (EXEC, 50, {"small": 10, "big": 50}),  # absolute, bounded per real server
        (EXEC30, 50, {"small": 30, "big": 30}),  # bounded by max_weight
    ],
)
def test_shared_dynamic_weight_is_per_real_server(
    spec: CheckSpec, reported: int, expected: dict[str, int]
) -> None:
    """One dynamic check shared by two services whose real server has weights 10 and
    100: an agent's percentage applies to each real server's own weight; an exec
    check's absolute weight is bounded per real server (max_weight, else configured)."""
    small = service("small", rs(1, weight=10, checks=(spec,)), initial_state=InitialState.UP)
    big = replace(
        service("big", rs(1, weight=100, checks=(spec,)), initial_state=InitialState.UP),
        key=ServiceKey.inet(Protocol.TCP, "192.0.2.2", 80),
    )
    state = HealthState.from_config(config(small, big), 0.0)
    assert 1 == len(state.check_ids())
    state.observe(cid(small), R(True, weight=reported), 1.0)
    health = state.server_health(1.0)
    assert expected == {name: h.weight for (name, _), h in health.items()}


def test_exec_check_naming_the_vip_is_scoped_per_service() -> None:
    """An exec check whose command uses {vip} is probed per service."""
    spec = CheckSpec(kind="exec", options=ExecOptions(command=("check", "{vip}")))
    a = service("a", rs(1, checks=(spec,)))
    b = replace(
        service("b", rs(1, checks=(spec,))), key=ServiceKey.inet(Protocol.TCP, "192.0.2.2", 80)
    )
    assert 2 == len(check_subscriptions(config(a, b)))


def test_rebase_keeps_unchanged_state() -> None:
    """Reload: an unchanged check keeps its state and counters, a new check on a new
    server starts in the initial state, removed ones are gone."""
    svc = service("web", rs(1), rs(2))
    state = HealthState.from_config(config(svc), 0.0)
    state.observe(cid(svc, 0), OK, 1.0)
    state.observe(cid(svc, 0), FAIL, 2.0)
    new_svc = service("web", rs(1), rs(3))
    report = state.rebase(config(new_svc), 3.0)
    kept = state.check_status(("web", dest(1), TCP))
    assert (True, 1, 2) == (kept.up, kept.failures, kept.total)
    assert {("web", dest(1)), ("web", dest(3))} == set(state.server_health(3.0))
    assert not state.server_health(3.0)[("web", dest(3))].up
    assert () == report.transitions


def test_rebase_new_check_on_kept_server_starts_initial() -> None:
    """Adding a check to an up server (initial state down) takes it down with reason
    reload until the new check succeeds."""
    svc = service("web", rs(1))
    state = HealthState.from_config(config(svc), 0.0)
    state.observe(cid(svc), OK, 1.0)
    new_svc = service("web", rs(1, checks=(TCP, TCP81)))
    report = state.rebase(config(new_svc), 2.0)
    assert [("reload", False)] == [(t.reason, t.new) for t in report.transitions]


def test_adoption_keeps_servers_up_until_first_result() -> None:
    """Adopted servers are up at start (initial state down); the first result decides."""
    svc = service("web", rs(1, weight=3), rs(2, weight=3))
    state = HealthState.from_config(config(svc), 0.0, adopt={("web", dest(1)), ("web", dest(2))})
    assert [True, True] == [h.up for h in state.server_health(0.0).values()]
    report = state.round([(cid(svc, 0), OK), (cid(svc, 1), FAIL)], 1.0)
    assert [(dest(2), False)] == [(t.realserver, t.new) for t in report.transitions]
    assert ServerHealth(up=True, weight=3) == state.server_health(1.0)[("web", dest(1))]


def test_server_without_checks_is_up() -> None:
    """A real server with no checks is always up."""
    svc = service("web", rs(1, checks=()))
    state = HealthState.from_config(config(svc), 0.0)
    assert ServerHealth(up=True, weight=1) == state.server_health(0.0)[("web", dest(1))]


def test_unknown_check_id_is_ignored() -> None:
    """A result for a check that a reload removed changes nothing."""
    svc = service("web", rs(1))
    state = HealthState.from_config(config(svc), 0.0)
    stale = CheckId(spec=TCP81, address="10.9.9.9", port=81)
    assert not state.observe(stale, OK, 1.0)


def test_status_lists_factors_and_checks() -> None:
    """status() renders each server with its factors and check states."""
    svc = service("web", rs(1, weight=4), initial_state=InitialState.UP)
    state = HealthState.from_config(config(svc), 0.0)
    [status] = state.status(0.0)
    assert ("web", dest(1), True, 4, "up (initial state up)") == (
        status.service,
        status.realserver,
        status.up,
        status.factors.effective,
        str(status.checks[0][1]),
    )
