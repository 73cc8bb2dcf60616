"""From the table in the kernel to the table lvsd wants: the fewest ops, in a safe order.

Pure: no I/O, no clock. ``plan`` compares only what the kernel holds and acts on:

* services: scheduler, scheduler flags, one-packet, persistence timeout and netmask
  (the netmask only while persistent; 0 means the host prefix, 32 or 128);
* destinations: weight, forwarding method, tunnel type and port (only for ``tun``;
  no type means ipip, which has no port) and the connection thresholds.

Services that are neither desired nor ``managed`` are never touched: kube-proxy's
entries, or the ones an operator made by hand, survive every plan.

The order is one the kernel accepts, and the same for the same input (services by
``service_order``, destinations by ``dest_order``: numeric addresses):

1. destination deletions (by service, then destination), so an address they
   free can be taken again further down;
2. service deletions; deleting a service deletes its destinations with it;
3. per desired service: add or edit the service, then edit and add its
   destinations.

``apply_ops`` plays ops on a table as the kernel would, refusing what it refuses.
"""

from __future__ import annotations

import errno
from collections.abc import Collection, Iterable, Mapping

from lvsd.errors import IpvsError
from lvsd.model import (
    Destination,
    DestKey,
    Family,
    Forward,
    Op,
    OpKind,
    Service,
    ServiceKey,
    Table,
    TunnelType,
    VirtualService,
)

_DEST_OPS = frozenset({OpKind.ADD_DEST, OpKind.EDIT_DEST, OpKind.DEL_DEST})

#: Tunnel types whose encapsulation uses ``tunnel_port``.
_PORTED_TUNNELS = frozenset({TunnelType.GUE, TunnelType.GRE})


def service_order(key: ServiceKey) -> tuple[int, str, int, str, int, int]:
    """Sort key for services (see ``ServiceKey.sort_key``)."""
    return key.sort_key()


def dest_order(key: DestKey) -> tuple[int, int, int]:
    """Sort key for destinations (see ``DestKey.sort_key``)."""
    return key.sort_key()


def service_fields(service: Service) -> tuple[object, ...]:
    """The kernel-relevant fields of a service, normalised: two services that compare
    equal here need no ``edit-service``."""
    host = 128 if service.key.family is Family.INET6 else 32
    netmask = (service.netmask or host) if service.timeout else None
    return (
        str(service.scheduler),
        frozenset(service.flags),
        service.one_packet,
        service.timeout,
        netmask,
    )


def destination_fields(dest: Destination) -> tuple[object, ...]:
    """The kernel-relevant fields of a destination, normalised: two destinations that
    compare equal here need no ``edit-dest``."""
    tunnel: TunnelType | None = None
    tunnel_port = 0
    if dest.forward is Forward.TUN:
        tunnel = dest.tunnel or TunnelType.IPIP
        if tunnel in _PORTED_TUNNELS:
            tunnel_port = dest.tunnel_port
    return (
        dest.weight,
        dest.forward,
        tunnel,
        tunnel_port,
        dest.upper_threshold,
        dest.lower_threshold,
    )


def plan(current: Table, desired: Table, managed: Collection[ServiceKey]) -> list[Op]:
    """The ops that turn ``current`` into ``desired`` for every desired service, and
    delete the services of ``managed`` that are not desired. Anything else in
    ``current`` is left alone."""
    dest_deletions: list[Op] = []
    service_deletions: list[Op] = []
    changes: list[Op] = []

    for key in sorted(current, key=service_order):
        if key not in desired and key in managed:
            service_deletions.append(Op(kind=OpKind.DEL_SERVICE, service=current[key].service))

    for key in sorted(desired, key=service_order):
        want = desired[key]
        have = current.get(key)
        if have is None:
            changes.append(Op(kind=OpKind.ADD_SERVICE, service=want.service))
            have_dests: Mapping[DestKey, Destination] = {}
        else:
            if service_fields(have.service) != service_fields(want.service):
                changes.append(Op(kind=OpKind.EDIT_SERVICE, service=want.service))
            have_dests = have.destinations
            for dest_key in sorted(have_dests, key=dest_order):
                if dest_key not in want.destinations:
                    dest_deletions.append(
                        Op(kind=OpKind.DEL_DEST, service=have.service, dest=have_dests[dest_key])
                    )
        for dest_key in sorted(want.destinations, key=dest_order):
            dest = want.destinations[dest_key]
            old = have_dests.get(dest_key)
            if old is None:
                changes.append(Op(kind=OpKind.ADD_DEST, service=want.service, dest=dest))
            elif destination_fields(old) != destination_fields(dest):
                changes.append(Op(kind=OpKind.EDIT_DEST, service=want.service, dest=dest))

    return dest_deletions + service_deletions + changes


def apply_ops(table: Table, ops: Iterable[Op]) -> dict[ServiceKey, VirtualService]:
    """``table`` after ``ops``, played one by one as the kernel would.

    Raises ``IpvsError`` at the first op the kernel would refuse: adding what exists
    (``exists``), editing or deleting what does not (``not found``), or a destination
    op on a missing service (``service not found``). ``table`` is never changed.
    """
    editor = TableEditor(table)
    for op in ops:
        editor.apply(op)
    return editor.table()


class TableEditor:
    """A table being changed op by op, with the kernel's refusals (``apply_ops`` one
    op at a time, without copying the table for each op)."""

    __slots__ = ("_dests", "_services")

    def __init__(self, table: Table) -> None:
        self._services: dict[ServiceKey, Service] = {k: vs.service for k, vs in table.items()}
        self._dests: dict[ServiceKey, dict[DestKey, Destination]] = {
            k: dict(vs.destinations) for k, vs in table.items()
        }

    def __len__(self) -> int:
        return len(self._services)

    def __contains__(self, key: object) -> bool:
        return key in self._services

    def table(self) -> dict[ServiceKey, VirtualService]:
        """A copy of the table as it stands, services and destinations sorted."""
        return {
            key: VirtualService(
                service=self._services[key],
                destinations={
                    k: self._dests[key][k] for k in sorted(self._dests[key], key=dest_order)
                },
            )
            for key in sorted(self._services, key=service_order)
        }

    def apply(self, op: Op) -> None:
        """Play ``op``; raise ``IpvsError`` and change nothing if the kernel would
        refuse it."""
        key = op.service.key
        if op.kind is OpKind.ADD_SERVICE:
            if key in self._services:
                raise IpvsError(str(op), "exists", errno.EEXIST)
            self._services[key] = op.service
            self._dests[key] = {}
            return
        if key not in self._services:
            reason = "service not found" if op.kind in _DEST_OPS else "not found"
            raise IpvsError(str(op), reason, errno.ESRCH)
        if op.kind is OpKind.EDIT_SERVICE:
            self._services[key] = op.service
            return
        if op.kind is OpKind.DEL_SERVICE:
            del self._services[key]
            del self._dests[key]
            return
        if op.dest is None:
            raise IpvsError(str(op), "no destination given", errno.EINVAL)
        dests = self._dests[key]
        dest_key = op.dest.key
        if op.kind is OpKind.ADD_DEST:
            if dest_key in dests:
                raise IpvsError(str(op), "exists", errno.EEXIST)
            dests[dest_key] = op.dest
        elif dest_key not in dests:
            raise IpvsError(str(op), "not found", errno.ENOENT)
        elif op.kind is OpKind.EDIT_DEST:
            dests[dest_key] = op.dest
        else:  # OpKind.DEL_DEST
            del dests[dest_key]


__all__ = [
    "TableEditor",
    "apply_ops",
    "dest_order",
    "destination_fields",
    "plan",
    "service_fields",
    "service_order",
]
