"""The table lvsd wants in the kernel, from the config, the health and operator overrides.

Pure: no I/O, no clock. The same function serves start-up, every health change, a
reload and drift repair; ``lvsd.plan`` then turns the difference into kernel ops.

Rules, per service of the config:

* a real server with no health entry is in its service's ``initial_state``: ``up``
  means up with its configured weight, ``down`` means down;
* up: present with the weight its health says (slow start, dynamic weights and the
  like are decided before this function);
* down: ``on_failure = quiesce`` keeps it at weight 0; ``remove`` leaves it out;
* drained by the operator: present at weight 0, whatever its health, and not up;
* lingering (removed from the config, connections still draining): weight 0, unless
  the config lists the same address and port again;
* the sorry server is present (with its configured weight) while no real server is
  up or the service has lost its quorum, and absent otherwise (once it has served,
  ``lvsd.engine.linger`` makes it linger at weight 0 until its connections end); when its
  address and port are a configured real server's, the real server owns that entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from lvsd.config.model import (
    Config,
    FailureAction,
    InitialState,
    RealServer,
    SorryServer,
    VirtualServiceConfig,
)
from lvsd.model import Destination, DestKey, RealServerId, Service, ServiceKey, VirtualService


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerHealth:
    """What the health machinery says of one real server.

    ``weight`` is the effective weight while up (configured, slowed-down or dynamic);
    it is ignored while down.
    """

    up: bool
    weight: int

    def __str__(self) -> str:
        return f"up w={self.weight}" if self.up else "down"


_NO_LINGERING: Mapping[ServiceKey, tuple[Destination, ...]] = MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class Overrides:
    """What the operator and the reload logic impose on top of health."""

    #: Operator drain: weight 0, kept in the table.
    drained: frozenset[RealServerId] = frozenset()
    #: Real servers removed from the config whose connections still drain: kept at
    #: weight 0 in their service (if the service is still configured).
    lingering: Mapping[ServiceKey, tuple[Destination, ...]] = field(
        default_factory=lambda: _NO_LINGERING
    )
    #: Names of services whose quorum is lost (hysteresis is decided elsewhere).
    quorum_lost: frozenset[str] = frozenset()


def service_of(svc: VirtualServiceConfig) -> Service:
    """The kernel fields of a configured service."""
    return Service(
        key=svc.key,
        scheduler=svc.scheduler,
        flags=svc.flags,
        one_packet=svc.one_packet,
        timeout=svc.persistence,
        netmask=svc.persistence_netmask,
    )


def destination_of(
    svc: VirtualServiceConfig, rs: RealServer | SorryServer, weight: int
) -> Destination:
    """The kernel entry of real server (or sorry server) ``rs`` of ``svc`` at ``weight``.

    The configured port is kept as it is, also for ``dr``/``tun`` (the kernel does
    not rewrite it; only ``ipvsadm`` copies the service's port there) and for the
    port 0 of a fwmark service. ``svc`` is where per-service rules would go; none
    applies today.
    """
    if isinstance(rs, SorryServer):
        return Destination(address=rs.key.address, port=rs.port, weight=weight, forward=rs.forward)
    return Destination(
        address=rs.key.address,
        port=rs.port,
        weight=weight,
        forward=rs.forward,
        tunnel=rs.tunnel,
        tunnel_port=rs.tunnel_port,
        upper_threshold=rs.upper_threshold,
        lower_threshold=rs.lower_threshold,
    )


_DEFAULT_OVERRIDES = Overrides()


def desired_table(
    config: Config,
    health: Mapping[RealServerId, ServerHealth],
    overrides: Overrides = _DEFAULT_OVERRIDES,
) -> dict[ServiceKey, VirtualService]:
    """The table lvsd wants: one entry per configured service, destinations by key
    (inserted in sorted order, so renderings are stable)."""
    return {svc.key: _virtual_service(svc, health, overrides) for svc in config.services}


def _virtual_service(
    svc: VirtualServiceConfig,
    health: Mapping[RealServerId, ServerHealth],
    overrides: Overrides,
) -> VirtualService:
    dests: dict[DestKey, Destination] = {}
    any_up = False
    for rs in svc.real_servers:
        rs_id: RealServerId = (svc.name, rs.key)
        state = health.get(rs_id) or _initial(svc, rs)
        if rs_id in overrides.drained:
            dests[rs.key] = destination_of(svc, rs, 0)
        elif state.up:
            any_up = True
            dests[rs.key] = destination_of(svc, rs, state.weight)
        elif svc.on_failure is FailureAction.QUIESCE:
            dests[rs.key] = destination_of(svc, rs, 0)
        # FailureAction.REMOVE: absent

    sorry = svc.sorry_server
    configured = {rs.key for rs in svc.real_servers}
    needs_sorry = not any_up or svc.name in overrides.quorum_lost
    if sorry is not None and needs_sorry and sorry.key not in configured:
        dests[sorry.key] = destination_of(svc, sorry, sorry.weight)

    for dest in overrides.lingering.get(svc.key, ()):
        if dest.key not in configured:
            dests.setdefault(dest.key, _with_weight(dest, 0))

    return VirtualService(
        service=service_of(svc), destinations={k: dests[k] for k in sorted(dests)}
    )


def _initial(svc: VirtualServiceConfig, rs: RealServer) -> ServerHealth:
    return ServerHealth(up=svc.initial_state is InitialState.UP, weight=rs.weight)


def _with_weight(dest: Destination, weight: int) -> Destination:
    return dest if dest.weight == weight else replace(dest, weight=weight)


__all__ = [
    "Overrides",
    "RealServerId",
    "ServerHealth",
    "desired_table",
    "destination_of",
    "service_of",
]
