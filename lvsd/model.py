"""The kernel's IPVS table as plain values: services, destinations, operations.

These types hold exactly the fields the kernel holds, so two tables compare equal
when ``ipvsadm -Ln`` would print the same thing. They render themselves for logs
(``tcp 192.168.3.108:80 wrr``, ``10.0.0.2:80 w=3 nat``).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from lvsd.errors import IpvsError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

#: The largest weight ipvsadm accepts (the kernel takes any non-negative int, but
#: every tool in the field caps at 65535, and so do we).
MAX_WEIGHT = 65535


class Family(StrEnum):
    INET = "inet"
    INET6 = "inet6"


class Protocol(StrEnum):
    TCP = "tcp"
    UDP = "udp"
    SCTP = "sctp"


class Forward(StrEnum):
    """Forwarding method of a destination (ipvsadm -m / -g / -i)."""

    NAT = "nat"
    DR = "dr"
    TUN = "tun"


class TunnelType(StrEnum):
    IPIP = "ipip"
    GUE = "gue"
    GRE = "gre"


class Scheduler(StrEnum):
    RR = "rr"
    WRR = "wrr"
    LC = "lc"
    WLC = "wlc"
    LBLC = "lblc"
    LBLCR = "lblcr"
    DH = "dh"
    SH = "sh"
    SED = "sed"
    NQ = "nq"
    FO = "fo"
    OVF = "ovf"
    MH = "mh"
    TWOS = "twos"


class SchedFlag(StrEnum):
    """Scheduler flags. The kernel stores them as generic bits (SCHED1, SCHED2);
    only sh and mh give them a meaning: ``fallback`` and ``port``."""

    FALLBACK = "fallback"
    PORT = "port"


#: Schedulers that understand the flags above.
FLAGGED_SCHEDULERS = frozenset({Scheduler.SH, Scheduler.MH})


def format_hostport(address: IPAddress, port: int) -> str:
    if address.version == 6:
        return f"[{address}]:{port}"
    return f"{address}:{port}"


def parse_hostport(text: str) -> tuple[IPAddress, int]:
    """``10.0.0.2:80`` or ``[2001:db8::2]:80`` (the form :func:`format_hostport`
    writes) to an address and a port 0-65535; ValueError naming that form otherwise.
    The one parser for every ``ADDRESS:PORT`` lvsd reads (config, CLI, control)."""
    host, sep, port = text.rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError(text)
        address = ipaddress.ip_address(host[1:-1] if bracketed else host)
        if (address.version == 6) != bracketed:
            raise ValueError(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not ADDRESS:PORT (like 10.0.0.2:80 or [2001:db8::2]:80)"
        ) from None
    return address, int(port)


@dataclass(frozen=True, slots=True)
class ServiceKey:
    """What identifies a virtual service in the kernel.

    Either ``protocol`` + ``address`` + ``port`` (``fwmark == 0``), or ``fwmark`` with
    ``protocol``/``address`` None and ``port`` 0.
    """

    family: Family
    protocol: Protocol | None = None
    address: str | None = None  # compressed text form, so keys sort and hash simply
    port: int = 0
    fwmark: int = 0

    @classmethod
    def inet(cls, protocol: Protocol, address: str | IPAddress, port: int) -> ServiceKey:
        addr = ipaddress.ip_address(address)
        family = Family.INET6 if addr.version == 6 else Family.INET
        return cls(family=family, protocol=protocol, address=str(addr), port=port)

    @classmethod
    def mark(cls, fwmark: int, family: Family = Family.INET) -> ServiceKey:
        return cls(family=family, fwmark=fwmark)

    @property
    def ip(self) -> IPAddress | None:
        return ipaddress.ip_address(self.address) if self.address is not None else None

    def sort_key(self) -> tuple[int, str, int, str, int, int]:
        """Address services before fwmark ones, then family, mark, protocol, numeric
        address, port: a total order over every kind of key."""
        ip = self.ip
        return (
            1 if self.fwmark else 0,
            str(self.family),
            self.fwmark,
            str(self.protocol or ""),
            int(ip) if ip is not None else 0,
            self.port,
        )

    def __lt__(self, other: ServiceKey) -> bool:
        return self.sort_key() < other.sort_key()

    def __str__(self) -> str:
        if self.fwmark:
            suffix = " inet6" if self.family is Family.INET6 else ""
            return f"fwm {self.fwmark}{suffix}"
        ip = self.ip
        assert ip is not None
        assert self.protocol is not None
        return f"{self.protocol} {format_hostport(ip, self.port)}"


def _address_order(address: str) -> tuple[int, int]:
    """(IP version, numeric value) of an address in compressed text form, without
    building an ``ipaddress`` object (a tenth of the cost)."""
    if ":" in address:
        return 6, int.from_bytes(socket.inet_pton(socket.AF_INET6, address))
    return 4, int.from_bytes(socket.inet_pton(socket.AF_INET, address))


@dataclass(frozen=True, slots=True)
class DestKey:
    """What identifies a destination within its service."""

    address: str  # compressed text form
    port: int
    #: ``sort_key()``, computed on first use (not compared, hashed or shown).
    _order: tuple[int, int, int] | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def of(cls, address: str | IPAddress, port: int) -> DestKey:
        if isinstance(address, str):
            address = ipaddress.ip_address(address)
        return cls(address=str(address), port=port)

    @property
    def ip(self) -> IPAddress:
        return ipaddress.ip_address(self.address)

    def sort_key(self) -> tuple[int, int, int]:
        """IPv4 before IPv6, numeric address, then port (10.0.0.9 before 10.0.0.10)."""
        order = self._order
        if order is None:
            order = (*_address_order(self.address), self.port)
            object.__setattr__(self, "_order", order)
        return order

    def __lt__(self, other: DestKey) -> bool:
        return self.sort_key() < other.sort_key()

    def __str__(self) -> str:
        return format_hostport(self.ip, self.port)


#: One real server of one service: (service name, real server's key). The same address
#: and port in two services are two real servers, with two healths and two drains.
RealServerId = tuple[str, DestKey]


@dataclass(frozen=True, slots=True, kw_only=True)
class Service:
    """A virtual service as the kernel holds it (destinations aside)."""

    key: ServiceKey
    scheduler: str = Scheduler.WRR
    flags: frozenset[SchedFlag] = frozenset()
    one_packet: bool = False
    timeout: int = 0  # persistence, seconds; 0 = not persistent
    netmask: int = 0  # persistence granularity as a prefix length; 0 = host (32 / 128)

    def __str__(self) -> str:
        text = f"{self.key} {self.scheduler}"
        if self.flags:
            text += " " + ",".join(f"{self.scheduler}-{f}" for f in sorted(self.flags))
        if self.timeout:
            text += f" persistent {self.timeout}"
        if self.one_packet:
            text += " ops"
        return text


@dataclass(frozen=True, slots=True, kw_only=True)
class Destination:
    """A real server as the kernel holds it."""

    address: str  # compressed text form
    port: int
    weight: int = 1
    forward: Forward = Forward.NAT
    tunnel: TunnelType | None = None  # only with Forward.TUN; None means ipip
    tunnel_port: int = 0  # gue/gre encapsulation port
    upper_threshold: int = 0
    lower_threshold: int = 0
    #: ``key``, built on first use (not compared, hashed or shown).
    _key: DestKey | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def key(self) -> DestKey:
        key = self._key
        if key is None:
            key = DestKey(self.address, self.port)
            object.__setattr__(self, "_key", key)
        return key

    def __str__(self) -> str:
        text = f"{self.key} w={self.weight} {self.forward}"
        if self.forward is Forward.TUN and self.tunnel not in (None, TunnelType.IPIP):
            text += f"/{self.tunnel}"
        return text


@dataclass(frozen=True, slots=True)
class VirtualService:
    """A service with its destinations: one entry of ``ipvsadm -Ln``."""

    service: Service
    destinations: Mapping[DestKey, Destination] = field(default_factory=dict)


#: The whole table (or the part of it a caller cares about).
Table = Mapping[ServiceKey, VirtualService]


# --- counters, read from the kernel but never planned ------------------------------


class Stats(NamedTuple):
    """Traffic counters (the kernel's 64-bit ``STATS64``).

    This and :class:`DestStats` are named tuples, not frozen dataclasses: a dump builds
    them for every destination each scrape, and a frozen dataclass's ``__init__`` (an
    ``object.__setattr__`` per field) costs three times as much. As immutable."""

    connections: int = 0
    packets_in: int = 0
    packets_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0


class DestStats(NamedTuple):
    """A destination's connection counts and traffic counters."""

    active_connections: int = 0
    inactive_connections: int = 0
    persistent_connections: int = 0
    stats: Stats = Stats()


@dataclass(frozen=True, slots=True, kw_only=True)
class Snapshot:
    """One dump of the kernel: the table plus its counters."""

    table: Table
    service_stats: Mapping[ServiceKey, Stats] = field(default_factory=dict)
    dest_stats: Mapping[tuple[ServiceKey, DestKey], DestStats] = field(default_factory=dict)


# --- operations ----------------------------------------------------------------------


class OpKind(StrEnum):
    ADD_SERVICE = "add-service"
    EDIT_SERVICE = "edit-service"
    DEL_SERVICE = "del-service"
    ADD_DEST = "add-dest"
    EDIT_DEST = "edit-dest"
    DEL_DEST = "del-dest"


@dataclass(frozen=True, slots=True, kw_only=True)
class Op:
    """One kernel operation. Service ops carry ``service``; dest ops carry both the
    service (for its key) and ``dest``."""

    kind: OpKind
    service: Service
    dest: Destination | None = None

    def __str__(self) -> str:
        if self.dest is None:
            return f"{self.kind} {self.service}"
        return f"{self.kind} {self.service.key} -> {self.dest}"


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What an ``apply`` did: ops that took effect, and ops that failed with why."""

    applied: tuple[Op, ...] = ()
    failed: tuple[tuple[Op, IpvsError], ...] = ()

    @property
    def ok(self) -> bool:
        return not self.failed


# --- the connection sync daemon ------------------------------------------------------


class SyncState(StrEnum):
    """Which side of connection sync a kernel sync daemon runs (ipvsadm --start-daemon)."""

    MASTER = "master"
    BACKUP = "backup"


@dataclass(frozen=True, slots=True, kw_only=True)
class SyncDaemon:
    """One kernel IPVS sync daemon. The optional fields are 0 or "" for the kernel's
    default (port 8848, ttl 1, group 224.0.0.81, maxlen from the interface's MTU)."""

    state: SyncState
    interface: str
    syncid: int = 0
    port: int = 0
    ttl: int = 0
    maxlen: int = 0
    group: str = ""  # compressed text form of a multicast address

    def __str__(self) -> str:
        text = f"{self.state} {self.interface} syncid={self.syncid}"
        for name in ("group", "port", "ttl", "maxlen"):
            value = getattr(self, name)
            if value:
                text += f" {name}={value}"
        return text

    def covers(self, running: SyncDaemon) -> bool:
        """Whether ``running`` (as the kernel reports it, defaults filled in) is this
        daemon: the fields set here are equal, the ones left to the kernel are not
        compared."""
        if (self.state, self.interface, self.syncid) != (
            running.state,
            running.interface,
            running.syncid,
        ):
            return False
        return all(
            not getattr(self, name) or getattr(self, name) == getattr(running, name)
            for name in ("port", "ttl", "maxlen", "group")
        )
