"""The desired table: config + health + overrides -> what the kernel should hold."""

# The project's test style is `expected == actual`; ruff's SIM300 (Yoda) says otherwise.

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lvsd.config.model import (
    Config,
    FailureAction,
    InitialState,
    RealServer,
    SorryServer,
    VirtualServiceConfig,
)
from lvsd.desired import (
    Overrides,
    ServerHealth,
    desired_table,
    destination_of,
    service_of,
)
from lvsd.model import (
    Destination,
    DestKey,
    Forward,
    Protocol,
    RealServerId,
    SchedFlag,
    Scheduler,
    Service,
    ServiceKey,
    TunnelType,
)

WEB = ServiceKey.inet(Protocol.TCP, "192.168.3.108", 80)
MARK = ServiceKey.mark(7)
RS2 = DestKey.of("10.0.0.2", 80)
RS3 = DestKey.of("10.0.0.3", 80)
SORRY = DestKey.of("10.0.0.99", 8080)


def rs(address: str, port: int = 80, weight: int = 1, **fields: Any) -> RealServer:
    return RealServer(address=ipaddress.ip_address(address), port=port, weight=weight, **fields)


def service(*servers: RealServer, **fields: Any) -> VirtualServiceConfig:
    values: dict[str, Any] = {"name": "web", "key": WEB, "real_servers": servers}
    values.update(fields)
    return VirtualServiceConfig(**values)


def config(*services: VirtualServiceConfig) -> Config:
    return Config(path="test.toml", services=services)


def weights(
    svc: VirtualServiceConfig,
    health: Mapping[RealServerId, ServerHealth] | None = None,
    overrides: Overrides | None = None,
) -> dict[str, int]:
    """The desired destinations of the one service as {"addr:port": weight}."""
    table = desired_table(config(svc), health or {}, overrides or Overrides())
    return {str(k): d.weight for k, d in table[svc.key].destinations.items()}


UP = ServerHealth(up=True, weight=5)
DOWN = ServerHealth(up=False, weight=5)
SORRY_SERVER = SorryServer(address=ipaddress.ip_address("10.0.0.99"), port=8080, weight=2)


# --- service_of / destination_of ---------------------------------------------------


def test_service_of_maps_persistence_to_timeout_and_netmask() -> None:
    """Persistence becomes the kernel's timeout and netmask; scheduler and flags carry over."""
    svc = service(
        scheduler=Scheduler.SH,
        flags=frozenset({SchedFlag.FALLBACK}),
        persistence=300,
        persistence_netmask=24,
        one_packet=True,
    )

    expected = Service(
        key=WEB,
        scheduler=Scheduler.SH,
        flags=frozenset({SchedFlag.FALLBACK}),
        one_packet=True,
        timeout=300,
        netmask=24,
    )
    assert expected == service_of(svc)


def test_destination_of_carries_forwarding_and_thresholds() -> None:
    """Forwarding, tunnel and thresholds come from the real server; the weight is given."""
    server = rs(
        "10.0.0.2",
        forward=Forward.TUN,
        tunnel=TunnelType.GUE,
        tunnel_port=6080,
        upper_threshold=100,
        lower_threshold=50,
    )

    expected = Destination(
        address="10.0.0.2",
        port=80,
        weight=7,
        forward=Forward.TUN,
        tunnel=TunnelType.GUE,
        tunnel_port=6080,
        upper_threshold=100,
        lower_threshold=50,
    )
    assert expected == destination_of(service(server), server, 7)


def test_destination_of_keeps_port_zero_on_fwmark_and_compresses_ipv6() -> None:
    """A fwmark service's real server may have port 0; addresses are in compressed form."""
    server = rs("2001:db8:0:0::2", port=0, forward=Forward.DR)

    dest = destination_of(service(server, key=MARK), server, 1)

    assert ("2001:db8::2", 0, Forward.DR) == (dest.address, dest.port, dest.forward)


# --- desired_table ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("initial", "on_failure", "expected"),
    [
        pytest.param(InitialState.UP, FailureAction.QUIESCE, {"10.0.0.2:80": 3}, id="up"),
        pytest.param(InitialState.DOWN, FailureAction.QUIESCE, {"10.0.0.2:80": 0}, id="down-q"),
        pytest.param(InitialState.DOWN, FailureAction.REMOVE, {}, id="down-remove"),
    ],
)
def test_no_health_entry_follows_initial_state(
    initial: InitialState, on_failure: FailureAction, expected: dict[str, int]
) -> None:
    """A real server not probed yet is up with its configured weight or down, per the
    service's initial_state."""
    svc = service(rs("10.0.0.2", weight=3), initial_state=initial, on_failure=on_failure)

    assert expected == weights(svc)


def test_up_takes_the_health_weight() -> None:
    """An up real server gets the weight its health carries, not the configured one."""
    svc = service(rs("10.0.0.2", weight=3))

    assert {"10.0.0.2:80": 5} == weights(svc, {("web", RS2): UP})


@pytest.mark.parametrize(
    ("on_failure", "expected"),
    [
        pytest.param(FailureAction.QUIESCE, {"10.0.0.2:80": 5, "10.0.0.3:80": 0}, id="quiesce"),
        pytest.param(FailureAction.REMOVE, {"10.0.0.2:80": 5}, id="remove"),
    ],
)
def test_down_is_quiesced_or_removed(on_failure: FailureAction, expected: dict[str, int]) -> None:
    """A down real server stays at weight 0 (quiesce) or leaves the table (remove)."""
    svc = service(rs("10.0.0.2"), rs("10.0.0.3"), on_failure=on_failure)

    actual = weights(svc, {("web", RS2): UP, ("web", RS3): DOWN})

    assert expected == actual


def test_health_is_per_service() -> None:
    """The same address in two services has two healths: the service name is in the id."""
    web = service(rs("10.0.0.2"), initial_state=InitialState.DOWN)
    other = service(rs("10.0.0.2"), name="other", key=MARK, initial_state=InitialState.DOWN)

    table = desired_table(config(web, other), {("other", RS2): UP})

    assert (0, 5) == (table[WEB].destinations[RS2].weight, table[MARK].destinations[RS2].weight)


@pytest.mark.parametrize("on_failure", list(FailureAction))
def test_drained_is_weight_zero_even_when_up(on_failure: FailureAction) -> None:
    """An operator drain keeps the real server in the table at weight 0, even with
    on_failure = remove."""
    svc = service(rs("10.0.0.2"), rs("10.0.0.3"), on_failure=on_failure)
    health = {("web", RS2): UP, ("web", RS3): UP}

    actual = weights(svc, health, Overrides(drained=frozenset({("web", RS3)})))

    assert {"10.0.0.2:80": 5, "10.0.0.3:80": 0} == actual


def test_sorry_server_when_no_real_server_is_up() -> None:
    """With every real server down, the sorry server is present with its weight."""
    svc = service(rs("10.0.0.2"), sorry_server=SORRY_SERVER)

    actual = weights(svc, {("web", RS2): DOWN})

    assert {"10.0.0.2:80": 0, "10.0.0.99:8080": 2} == actual


def test_sorry_server_absent_while_a_real_server_is_up() -> None:
    """One real server up is enough to keep the sorry server out."""
    svc = service(rs("10.0.0.2"), rs("10.0.0.3"), sorry_server=SORRY_SERVER)

    actual = weights(svc, {("web", RS2): DOWN, ("web", RS3): UP})

    assert {"10.0.0.2:80": 0, "10.0.0.3:80": 5} == actual


def test_sorry_server_when_every_up_server_is_drained() -> None:
    """Drained real servers are not up: the sorry server comes in."""
    svc = service(rs("10.0.0.2"), sorry_server=SORRY_SERVER)

    actual = weights(svc, {("web", RS2): UP}, Overrides(drained=frozenset({("web", RS2)})))

    assert {"10.0.0.2:80": 0, "10.0.0.99:8080": 2} == actual


def test_sorry_server_when_quorum_is_lost() -> None:
    """A lost quorum brings the sorry server in beside the servers still up."""
    svc = service(rs("10.0.0.2"), sorry_server=SORRY_SERVER)

    actual = weights(svc, {("web", RS2): UP}, Overrides(quorum_lost=frozenset({"web"})))

    assert {"10.0.0.2:80": 5, "10.0.0.99:8080": 2} == actual


def test_sorry_server_with_no_real_servers_at_all() -> None:
    """A service without real servers serves its sorry server."""
    svc = service(sorry_server=SORRY_SERVER)

    assert {"10.0.0.99:8080": 2} == weights(svc)


def test_sorry_server_keeps_its_own_forwarding() -> None:
    """The sorry server's entry has its configured forwarding method."""
    sorry = SorryServer(address=ipaddress.ip_address("10.0.0.99"), port=80, forward=Forward.DR)
    svc = service(sorry_server=sorry)

    table = desired_table(config(svc), {})

    expected = Destination(address="10.0.0.99", port=80, weight=1, forward=Forward.DR)
    assert {DestKey.of("10.0.0.99", 80): expected} == dict(table[WEB].destinations)


@pytest.mark.parametrize(
    ("on_failure", "expected"),
    [
        pytest.param(FailureAction.QUIESCE, {"10.0.0.2:80": 0}, id="quiesce"),
        pytest.param(FailureAction.REMOVE, {}, id="remove"),
    ],
)
def test_real_server_owns_the_sorry_servers_address(
    on_failure: FailureAction, expected: dict[str, int]
) -> None:
    """When the sorry server has a real server's address and port, the real server's
    entry wins, whatever it is."""
    sorry = SorryServer(address=ipaddress.ip_address("10.0.0.2"), port=80, weight=9)
    svc = service(rs("10.0.0.2"), sorry_server=sorry, on_failure=on_failure)

    assert expected == weights(svc, {("web", RS2): DOWN})


def test_lingering_destinations_stay_at_weight_zero() -> None:
    """A real server removed from the config but still draining stays, at weight 0,
    with its old forwarding."""
    old = Destination(address="10.0.0.7", port=80, weight=4, forward=Forward.DR)
    svc = service(rs("10.0.0.2"))

    table = desired_table(config(svc), {("web", RS2): UP}, Overrides(lingering={WEB: (old,)}))

    expected = Destination(address="10.0.0.7", port=80, weight=0, forward=Forward.DR)
    assert expected == table[WEB].destinations[old.key]


def test_lingering_yields_to_a_configured_real_server() -> None:
    """A lingering entry whose address is configured again is the configured one."""
    old = Destination(address="10.0.0.2", port=80, weight=4, forward=Forward.DR)
    svc = service(rs("10.0.0.2"))

    actual = weights(svc, {("web", RS2): UP}, Overrides(lingering={WEB: (old,)}))

    assert {"10.0.0.2:80": 5} == actual


def test_lingering_of_an_unconfigured_service_is_ignored() -> None:
    """Lingering entries of a service no longer configured add no service."""
    old = Destination(address="10.0.0.7", port=80)

    table = desired_table(config(service(rs("10.0.0.2"))), {}, Overrides(lingering={MARK: (old,)}))

    assert [WEB] == list(table)


def test_every_configured_service_is_desired_with_sorted_destinations() -> None:
    """Each configured service is in the table (even with nothing up); its
    destinations are in key order."""
    web = service(rs("10.0.0.3"), rs("10.0.0.2"), initial_state=InitialState.UP)
    empty = service(name="marks", key=MARK)

    table = desired_table(config(web, empty), {})

    assert [WEB, MARK] == list(table)
    assert [RS2, RS3] == list(table[WEB].destinations)
    assert {} == dict(table[MARK].destinations)
    assert service_of(empty) == table[MARK].service


# --- properties ------------------------------------------------------------------

SERVER_POOL = tuple(rs(f"10.0.0.{i}", weight=i) for i in range(1, 7))


@st.composite
def situations(
    draw: st.DrawFn,
) -> tuple[VirtualServiceConfig, dict[RealServerId, ServerHealth], Overrides]:
    """A service with some real servers and maybe a sorry server, a health for some of
    them, some drained, maybe a lost quorum."""
    servers = draw(st.lists(st.sampled_from(SERVER_POOL), unique=True, max_size=5))
    shadowed = SorryServer(address=SERVER_POOL[0].address, port=80)  # a real server's key
    sorry = draw(st.sampled_from((None, SORRY_SERVER, shadowed)))
    svc = service(
        *servers,
        sorry_server=sorry,
        on_failure=draw(st.sampled_from(list(FailureAction))),
        initial_state=draw(st.sampled_from(list(InitialState))),
    )
    probed = draw(st.sets(st.sampled_from(servers))) if servers else set()
    health = {
        ("web", s.key): ServerHealth(up=draw(st.booleans()), weight=draw(st.integers(0, 9)))
        for s in probed
    }
    drained = frozenset(("web", s.key) for s in servers if draw(st.booleans()))
    lost = frozenset({"web"}) if draw(st.booleans()) else frozenset()
    return svc, health, Overrides(drained=drained, quorum_lost=lost)


@settings(max_examples=200, deadline=None)
@given(situations())
def test_desired_table_invariants(
    situation: tuple[VirtualServiceConfig, dict[RealServerId, ServerHealth], Overrides],
) -> None:
    """Only up, undrained real servers carry weight; every configured real server is
    present unless down with on_failure = remove; the sorry server is present exactly
    when nothing is up or the quorum is lost (and its key is not a real server's)."""
    svc, health, overrides = situation

    dests = desired_table(config(svc), health, overrides)[WEB].destinations

    def state(server: RealServer) -> ServerHealth:
        default = ServerHealth(up=svc.initial_state is InitialState.UP, weight=server.weight)
        return health.get(("web", server.key), default)

    live = {
        s.key: state(s).weight
        for s in svc.real_servers
        if state(s).up and ("web", s.key) not in overrides.drained
    }
    kept = {
        s.key
        for s in svc.real_servers
        if s.key in live
        or ("web", s.key) in overrides.drained
        or svc.on_failure is FailureAction.QUIESCE
    }
    sorry = svc.sorry_server
    real_keys = {s.key for s in svc.real_servers}
    expected_keys = set(kept)
    needs_sorry = not live or "web" in overrides.quorum_lost
    if sorry is not None and sorry.key not in real_keys and needs_sorry:
        expected_keys.add(sorry.key)
        assert sorry.weight == dests[sorry.key].weight
    assert expected_keys == set(dests)
    for key in kept:
        assert live.get(key, 0) == dests[key].weight
