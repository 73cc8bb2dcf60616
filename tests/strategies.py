"""Hypothesis strategies for kernel-table values, shared by every test that wants them.

Values are drawn from small pools (a few addresses, ports and marks) so that two
drawn tables overlap often: the interesting cases for a planner are the shared keys.

Every value is in the planner's normal form (see ``lvsd.plan.service_fields`` and
``destination_fields``): no netmask without persistence, no netmask equal to the
host prefix, a tunnel type only with ``tun`` and a tunnel port only with gue/gre,
scheduler flags only on sh/mh. Two drawn values are therefore equal exactly when
the kernel would see them as equal.
"""

from __future__ import annotations

from dataclasses import replace

from hypothesis import strategies as st

from lvsd.model import (
    FLAGGED_SCHEDULERS,
    MAX_WEIGHT,
    Destination,
    DestKey,
    Family,
    Forward,
    Protocol,
    SchedFlag,
    Scheduler,
    Service,
    ServiceKey,
    Table,
    TunnelType,
    VirtualService,
)
from lvsd.plan import service_order

V4_ADDRESSES = ("10.0.0.1", "10.0.0.2", "10.0.0.3", "192.168.3.108")
V6_ADDRESSES = ("fd00::1", "fd00::2", "2001:db8::80")
PORTS = (80, 443, 8080)
FWMARKS = (1, 2, 7)

weights = st.integers(min_value=0, max_value=MAX_WEIGHT)


@st.composite
def service_keys(draw: st.DrawFn, family: Family | None = None) -> ServiceKey:
    """An address/port/protocol key or a fwmark key, from the small pools."""
    fam = draw(st.sampled_from(list(Family))) if family is None else family
    if draw(st.integers(min_value=0, max_value=3)) == 0:
        return ServiceKey.mark(draw(st.sampled_from(FWMARKS)), fam)
    pool = V6_ADDRESSES if fam is Family.INET6 else V4_ADDRESSES
    return ServiceKey.inet(
        draw(st.sampled_from(list(Protocol))),
        draw(st.sampled_from(pool)),
        draw(st.sampled_from(PORTS)),
    )


@st.composite
def services(draw: st.DrawFn, key: ServiceKey | None = None) -> Service:
    """A service in normal form (for ``key``, or a drawn key)."""
    skey = draw(service_keys()) if key is None else key
    scheduler = draw(st.sampled_from(list(Scheduler)))
    flags: frozenset[SchedFlag] = frozenset()
    if scheduler in FLAGGED_SCHEDULERS:
        flags = draw(st.frozensets(st.sampled_from(list(SchedFlag))))
    timeout = draw(st.sampled_from((0, 0, 300, 3600)))
    netmask = 0
    if timeout:
        netmask = draw(st.sampled_from((0, 64) if skey.family is Family.INET6 else (0, 24)))
    return Service(
        key=skey,
        scheduler=scheduler,
        flags=flags,
        one_packet=draw(st.booleans()) if skey.protocol is Protocol.UDP else False,
        timeout=timeout,
        netmask=netmask,
    )


@st.composite
def dest_keys(draw: st.DrawFn, fwmark: bool = False) -> DestKey:
    """A destination key; port 0 only for fwmark services."""
    address = draw(st.sampled_from(V4_ADDRESSES + V6_ADDRESSES))
    ports = (0, *PORTS) if fwmark else PORTS
    return DestKey.of(address, draw(st.sampled_from(ports)))


@st.composite
def destinations(draw: st.DrawFn, key: DestKey | None = None) -> Destination:
    """A destination in normal form (at ``key``, or a drawn key)."""
    dkey = draw(dest_keys()) if key is None else key
    forward = draw(st.sampled_from(list(Forward)))
    tunnel: TunnelType | None = None
    tunnel_port = 0
    if forward is Forward.TUN:
        tunnel = draw(st.sampled_from((None, TunnelType.GUE, TunnelType.GRE)))
        if tunnel is not None:
            tunnel_port = draw(st.sampled_from((5555, 6080)))
    upper = draw(st.sampled_from((0, 0, 100)))
    return Destination(
        address=dkey.address,
        port=dkey.port,
        weight=draw(weights),
        forward=forward,
        tunnel=tunnel,
        tunnel_port=tunnel_port,
        upper_threshold=upper,
        lower_threshold=draw(st.sampled_from((0, upper // 2))),
    )


@st.composite
def virtual_services(draw: st.DrawFn, key: ServiceKey | None = None) -> VirtualService:
    """A service with up to five destinations."""
    service = draw(services(key))
    keys = draw(st.sets(dest_keys(fwmark=bool(service.key.fwmark)), max_size=5))
    dests = {k: draw(destinations(k)) for k in sorted(keys)}
    return VirtualService(service=service, destinations=dests)


@st.composite
def tables(draw: st.DrawFn, max_services: int = 4) -> dict[ServiceKey, VirtualService]:
    """A table of up to ``max_services`` services."""
    keys = draw(st.sets(service_keys(), max_size=max_services))
    return {k: draw(virtual_services(k)) for k in sorted(keys, key=service_order)}


@st.composite
def variations(draw: st.DrawFn, table: Table) -> dict[ServiceKey, VirtualService]:
    """``table`` changed a little: services kept, changed, dropped; destinations kept,
    reweighted, redrawn, dropped; new services and destinations. Shares many keys with
    ``table``, which is what a planner sees in practice."""
    result: dict[ServiceKey, VirtualService] = {}
    for key, vs in table.items():
        choice = draw(st.sampled_from(("keep", "keep", "dests", "service", "drop")))
        if choice == "drop":
            continue
        service = draw(services(key)) if choice == "service" else vs.service
        dests = dict(vs.destinations)
        if choice == "dests":
            for dkey in sorted(dests):
                change = draw(st.sampled_from(("keep", "weight", "redraw", "drop")))
                if change == "weight":
                    dests[dkey] = replace(dests[dkey], weight=draw(weights))
                elif change == "redraw":
                    dests[dkey] = draw(destinations(dkey))
                elif change == "drop":
                    del dests[dkey]
            for dkey in draw(st.sets(dest_keys(fwmark=bool(key.fwmark)), max_size=2)):
                dests.setdefault(dkey, draw(destinations(dkey)))
        result[key] = VirtualService(service=service, destinations=dests)
    for key, vs in draw(tables(max_services=2)).items():
        result.setdefault(key, vs)
    return result
