"""Destinations kept at weight 0 while their connections drain, as values.

Two kinds linger: a real server a reload removed from the config (in a service the
new config still has), and a sorry server no longer needed while it still serves.
Each lingers until its active connections reach 0 or its deadline (``drain_timeout``
after it started lingering) passes; ``lvsd.desired`` keeps it in the desired table at
weight 0 meanwhile (``Overrides.lingering``).

Pure: no I/O, the time is an argument; the engine logs what these functions return.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from lvsd.config.model import Config
from lvsd.model import Destination, DestKey, ServiceKey, Snapshot, Table
from lvsd.plan import service_order


@dataclass(frozen=True, slots=True)
class Lingering:
    """A destination kept at weight 0 until its connections end or ``deadline``."""

    dest: Destination
    deadline: float


#: Lingering destinations by service, then by destination key (no empty services).
LingeringTable = Mapping[ServiceKey, Mapping[DestKey, Lingering]]


@dataclass(frozen=True, slots=True)
class Removed:
    """A lingering destination that leaves: ``drained`` (no connection left) or
    ``timeout`` (its deadline passed with ``active`` connections)."""

    service: ServiceKey
    realserver: DestKey
    reason: str
    active: int


def destinations(lingering: LingeringTable) -> dict[ServiceKey, tuple[Destination, ...]]:
    """The lingering destinations per service (``Overrides.lingering``)."""
    return {key: tuple(e.dest for e in dests.values()) for key, dests in lingering.items() if dests}


def names(lingering: LingeringTable) -> tuple[str, ...]:
    """``tcp 192.168.3.108:80 -> 10.0.0.3:80`` per lingering destination."""
    return tuple(f"{key} -> {dk}" for key, dests in lingering.items() for dk in dests)


def after_reload(
    lingering: LingeringTable, old: Config, new: Config, table: Table, now: float
) -> dict[ServiceKey, dict[DestKey, Lingering]]:
    """``lingering`` once the config moves from ``old`` to ``new``: real servers ``new``
    drops from a service it keeps linger if ``table`` has them, until ``now`` plus
    ``new``'s drain timeout; a real server listed again stops lingering; the services
    ``new`` drops lose their lingering destinations (the service is deleted)."""
    deadline = now + new.daemon.drain_timeout
    new_services = {s.key: s for s in new.services}
    out = {key: dict(dests) for key, dests in lingering.items()}
    for svc in old.services:
        kept = new_services.get(svc.key)
        live = table.get(svc.key)
        if kept is None or live is None:
            continue
        keep = {rs.key for rs in kept.real_servers}
        for rs in svc.real_servers:
            if rs.key in keep or rs.key not in live.destinations:
                continue
            dest = live.destinations[rs.key]
            out.setdefault(svc.key, {})[rs.key] = Lingering(dest=dest, deadline=deadline)
    for svc in new.services:
        dests = out.get(svc.key)
        if dests:
            for rs in svc.real_servers:
                dests.pop(rs.key, None)
    return {k: v for k, v in out.items() if k in new_services and v}


def sorry_leaving(
    config: Config, current: Table, desired: Table
) -> list[tuple[ServiceKey, Destination]]:
    """The sorry servers of ``config`` that ``plan(current, desired)`` would delete
    while they serve (weight above 0 in ``current``), with their entries in
    ``current``, in the order of plan's deletions. A sorry server at one of its
    service's real servers' address and port is that real server (``lvsd.desired``):
    never leaving."""
    leaving: list[tuple[ServiceKey, Destination]] = []
    for svc in config.services:
        sorry = svc.sorry_server
        want = desired.get(svc.key)
        have = current.get(svc.key)
        if sorry is None or want is None or have is None or sorry.key in want.destinations:
            continue
        if any(rs.key == sorry.key for rs in svc.real_servers):
            continue
        dest = have.destinations.get(sorry.key)
        if dest is not None and dest.weight > 0:
            leaving.append((svc.key, dest))
    leaving.sort(key=lambda entry: service_order(entry[0]))
    return leaving


def linger(
    lingering: LingeringTable, entries: Iterable[tuple[ServiceKey, Destination]], deadline: float
) -> dict[ServiceKey, dict[DestKey, Lingering]]:
    """``lingering`` with ``entries`` (service, destination) lingering until ``deadline``."""
    out = {key: dict(dests) for key, dests in lingering.items()}
    for key, dest in entries:
        out.setdefault(key, {})[dest.key] = Lingering(dest=dest, deadline=deadline)
    return out


def expire(
    lingering: LingeringTable, snapshot: Snapshot | None, now: float
) -> tuple[dict[ServiceKey, dict[DestKey, Lingering]], list[Removed]]:
    """``lingering`` without the destinations whose connections are gone (per
    ``snapshot``'s counters; without one, none is counted) or whose deadline passed
    at ``now``; and those that left, in order."""
    out: dict[ServiceKey, dict[DestKey, Lingering]] = {}
    removed: list[Removed] = []
    for key, dests in lingering.items():
        for dest_key, entry in dests.items():
            active = 0
            if snapshot is not None:
                stats = snapshot.dest_stats.get((key, dest_key))
                active = stats.active_connections if stats is not None else 0
            if active == 0 or now >= entry.deadline:
                reason = "drained" if active == 0 else "timeout"
                removed.append(Removed(key, dest_key, reason, active))
            else:
                out.setdefault(key, {})[dest_key] = entry
    return out, removed


__all__ = [
    "Lingering",
    "LingeringTable",
    "Removed",
    "after_reload",
    "destinations",
    "expire",
    "linger",
    "names",
    "sorry_leaving",
]
