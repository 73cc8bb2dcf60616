"""Tests of the pure health state machine: results in, states and weights out, with
explicit ``now`` and no timers."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

from dataclasses import replace

import pytest

from lvsd.config.model import (
    AgentOptions,
    CheckSpec,
    ExecOptions,
    InitialState,
    PanicGuard,
    Quorum,
    TcpOptions,
    VirtualServiceConfig,
)
from lvsd.desired import ServerHealth
from lvsd.health.check import CheckId, check_subscriptions
from lvsd.health.state import HealthState
from lvsd.model import Protocol, ServiceKey
from tests.health.helpers import (
    FAIL,
    LOCAL_FAIL,
    OK,
    TCP,
    TCP81,
    R,
    cid,
    config,
    dest,
    rs,
    service,
)


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


def test_local_results_hold_the_whole_pool() -> None:
    """lvsd out of descriptors for every probe of a pool, round after round: no server
    goes down, none comes up, and the failures before the shortage still count after
    it (held, not reset)."""
    svc = service("web", rs(1), rs(2), initial_state=InitialState.UP)
    state = HealthState.from_config(config(svc), 0.0)
    ids = [cid(svc, 0), cid(svc, 1)]
    assert not state.round([(ids[0], FAIL)], 1.0)  # one of fall=3
    for t in range(2, 12):
        assert not state.round([(c, LOCAL_FAIL) for c in ids], float(t))
    health = state.server_health(12.0)
    assert [True, True] == [health[("web", dest(n))].up for n in (1, 2)]
    assert not state.observe(ids[0], FAIL, 12.0)  # two of three
    assert [False] == [t.new for t in state.observe(ids[0], FAIL, 13.0).transitions]
    down = state.server_health(13.0)
    assert (False, True) == (down[("web", dest(1))].up, down[("web", dest(2))].up)
    start = service("web", rs(1))  # starting down: a local result does not bring it up
    held = HealthState.from_config(config(start), 0.0)
    assert not held.observe(cid(start), replace(LOCAL_FAIL, ok=True), 1.0)


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


def test_panic_trip_leaves_a_server_recovering_in_that_round_to_its_checks() -> None:
    """A server that went down in the window and whose checks recover in the round
    that trips the guard comes up once, for its checks, and is not held."""
    svc = _pool(4, panic=PanicGuard(threshold=0.5, min_servers=3))
    state = HealthState.from_config(config(svc), 0.0)
    state.round([(cid(svc, 0), FAIL), (cid(svc, 1), FAIL)], 1.0)  # 2/4: not yet
    report = state.round([(cid(svc, 1), OK), (cid(svc, 2), FAIL), (cid(svc, 3), FAIL)], 1.5)
    assert [(dest(1), "panic"), (dest(2), "ok")] == sorted(
        (t.realserver, t.reason) for t in report.transitions
    )
    assert [(True, 3)] == [(p.panic, p.failing) for p in report.panic]
    assert {dest(1), dest(3), dest(4)} == {s.realserver for s in state.status(1.5) if s.held}


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


def test_rebase_up_without_results_names_the_first_check() -> None:
    """A down server that a reload brings up (its new check starts up, not run yet)
    is reported with reason reload and that check's detail."""
    svc = service("web", rs(1))
    state = HealthState.from_config(config(svc), 0.0)
    new_svc = service("web", rs(1, checks=(TCP81,)), initial_state=InitialState.UP)
    report = state.rebase(config(new_svc), 1.0)
    assert [("reload", True, "tcp port 81: initial state up", TCP81)] == [
        (t.reason, t.new, t.detail, t.check) for t in report.transitions
    ]


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
