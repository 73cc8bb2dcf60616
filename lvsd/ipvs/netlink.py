"""The kernel IPVS table over generic netlink (pyroute2's ``AsyncIPVS``).

The only module of lvsd that imports pyroute2. It has two halves:

* pure converters between lvsd's model and the attribute dicts pyroute2 sends and
  decodes (``service_fields``, ``dest_fields``, ``service_from_attrs``,
  ``dest_from_attrs``, ``stats_from_attrs``), table-tested without a kernel;
* ``NetlinkBackend``: ``dump()`` and ``apply(ops)`` on one socket, translating
  ``NetlinkError`` (and a request that cannot be encoded) into ``IpvsError`` with the
  op and the reason in words.

Encoding quirks handled here (checked against a 6.1 kernel in the lab):

* the kernel refuses a service without ``IPVS_SVC_ATTR_NETMASK``. For IPv4 it is a
  dotted mask; for IPv6 it is the prefix length as a host-order u32, which pyroute2
  only encodes as a dotted quad (``ip4addr``), so 128 is sent as the four bytes of
  the u32 128 in host order (``128.0.0.0`` on x86);
* ``IPVS_DEST_ATTR_TUN_PORT`` is big-endian in the kernel but pyroute2 encodes it as
  a host-order u16, so the port is byte-swapped both ways;
* dumps carry ``UNKNOWN`` padding attributes: skipped; counters are read from
  ``STATS64`` (``STATS`` is 32-bit and wraps).
"""

from __future__ import annotations

import asyncio
import errno as errno_mod
import ipaddress
import os
import socket
import struct
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from pyroute2.ipvs import AsyncIPVS, IPVSDest, IPVSService
from pyroute2.netlink.exceptions import NetlinkError

from lvsd.errors import IpvsError
from lvsd.model import (
    ApplyResult,
    Destination,
    DestKey,
    DestStats,
    Family,
    Forward,
    Op,
    OpKind,
    Protocol,
    SchedFlag,
    Service,
    ServiceKey,
    Snapshot,
    Stats,
    TunnelType,
    VirtualService,
)

# --- kernel constants (include/uapi/linux/ip_vs.h) -------------------------------------

IP_VS_SVC_F_PERSISTENT = 0x0001
IP_VS_SVC_F_HASHED = 0x0002  # kernel-internal, shows in dumps
IP_VS_SVC_F_ONEPACKET = 0x0004
IP_VS_SVC_F_SCHED1 = 0x0008
IP_VS_SVC_F_SCHED2 = 0x0010
IP_VS_SVC_F_SCHED3 = 0x0020

_SCHED_FLAG_BITS: dict[SchedFlag, int] = {
    SchedFlag.FALLBACK: IP_VS_SVC_F_SCHED1,
    SchedFlag.PORT: IP_VS_SVC_F_SCHED2,
}

IP_VS_CONN_F_MASQ = 0
IP_VS_CONN_F_LOCALNODE = 1
IP_VS_CONN_F_TUNNEL = 2
IP_VS_CONN_F_DROUTE = 3

_FWD_CODES: dict[Forward, int] = {
    Forward.NAT: IP_VS_CONN_F_MASQ,
    Forward.TUN: IP_VS_CONN_F_TUNNEL,
    Forward.DR: IP_VS_CONN_F_DROUTE,
}
#: LOCALNODE is what the kernel makes of a destination whose address is local: it
#: forwards to the director itself; lvsd's model has no such method, so it reads as
#: NAT (the default such a destination is configured with).
_FWD_BY_CODE: dict[int, Forward] = {
    **{code: fwd for fwd, code in _FWD_CODES.items()},
    IP_VS_CONN_F_LOCALNODE: Forward.NAT,
}

_TUN_CODES: dict[TunnelType, int] = {TunnelType.IPIP: 0, TunnelType.GUE: 1, TunnelType.GRE: 2}
_TUN_BY_CODE: dict[int, TunnelType] = {code: t for t, code in _TUN_CODES.items()}

_AF: dict[Family, int] = {Family.INET: socket.AF_INET, Family.INET6: socket.AF_INET6}
_FAMILY_BY_AF: dict[int, Family] = {af: fam for fam, af in _AF.items()}

_PROTO: dict[Protocol, int] = {
    Protocol.TCP: socket.IPPROTO_TCP,
    Protocol.UDP: socket.IPPROTO_UDP,
    Protocol.SCTP: 132,  # socket.IPPROTO_SCTP is missing on some builds
}
_PROTOCOL_BY_NUMBER: dict[int, Protocol] = {n: p for p, n in _PROTO.items()}

_HOST_PREFIX: dict[Family, int] = {Family.INET: 32, Family.INET6: 128}


# --- pure converters: model -> pyroute2 fields -----------------------------------------


def encode_netmask(family: Family, prefix: int) -> str:
    """``IPVS_SVC_ATTR_NETMASK`` as pyroute2's ``ip4addr`` text.

    ``prefix`` 0 means the host prefix. IPv4: the dotted mask (``255.255.255.0``).
    IPv6: the prefix length as a host-order u32, spelled as the dotted quad of its
    bytes (``128.0.0.0`` for 128 on a little-endian host).
    """
    host = _HOST_PREFIX[family]
    prefix = prefix or host
    if not 1 <= prefix <= host:
        raise ValueError(f"netmask /{prefix} out of range for {family}")
    if family is Family.INET:
        return str(ipaddress.IPv4Network(f"0.0.0.0/{prefix}").netmask)
    return socket.inet_ntoa(struct.pack("=I", prefix))


def decode_netmask(family: Family, text: str) -> int:
    """The prefix length ``IPVS_SVC_ATTR_NETMASK`` holds (inverse of ``encode_netmask``)."""
    if family is Family.INET:
        return ipaddress.IPv4Network(f"0.0.0.0/{text}").prefixlen
    value: int = struct.unpack("=I", socket.inet_aton(text))[0]
    return value


def swap16(port: int) -> int:
    """A u16 between host and network order (``IPVS_DEST_ATTR_TUN_PORT`` is be16 in the
    kernel, host-order u16 in pyroute2)."""
    value: int = struct.unpack("=H", struct.pack("!H", port))[0]
    return value


def service_key_fields(key: ServiceKey) -> dict[str, Any]:
    """The fields that identify ``key`` in a request."""
    if key.fwmark:
        return {"af": _AF[key.family], "fwmark": key.fwmark}
    assert key.protocol is not None
    assert key.address is not None
    return {
        "af": _AF[key.family],
        "protocol": _PROTO[key.protocol],
        "addr": key.address,
        "port": key.port,
    }


def service_flags(service: Service) -> int:
    flags = 0
    if service.timeout:
        flags |= IP_VS_SVC_F_PERSISTENT
    if service.one_packet:
        flags |= IP_VS_SVC_F_ONEPACKET
    for flag in service.flags:
        flags |= _SCHED_FLAG_BITS[flag]
    return flags


def service_fields(service: Service) -> dict[str, Any]:
    """Every field of an add/edit-service request for ``service``."""
    return {
        **service_key_fields(service.key),
        "sched_name": str(service.scheduler),
        "flags": {"flags": service_flags(service), "mask": 0xFFFFFFFF},
        "timeout": service.timeout,
        "netmask": encode_netmask(service.key.family, service.netmask if service.timeout else 0),
    }


def dest_fields(dest: Destination) -> dict[str, Any]:
    """Every field of an add/edit-dest request for ``dest``."""
    ip = ipaddress.ip_address(dest.address)
    tunnel = TunnelType.IPIP
    tun_port = 0
    if dest.forward is Forward.TUN:
        tunnel = dest.tunnel or TunnelType.IPIP
        if tunnel is not TunnelType.IPIP:
            tun_port = dest.tunnel_port
    return {
        "addr_family": socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
        "addr": dest.address,
        "port": dest.port,
        "fwd_method": _FWD_CODES[dest.forward],
        "weight": dest.weight,
        "u_thresh": dest.upper_threshold,
        "l_thresh": dest.lower_threshold,
        "tun_type": _TUN_CODES[tunnel],
        "tun_port": swap16(tun_port),
        "tun_flags": 0,
    }


def dest_key_fields(dest: Destination) -> dict[str, Any]:
    """The fields that identify ``dest`` in a delete request."""
    ip = ipaddress.ip_address(dest.address)
    return {
        "addr_family": socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
        "addr": dest.address,
        "port": dest.port,
    }


# --- pure converters: decoded attributes -> model --------------------------------------

#: A decoded NLA: attribute name (``IPVS_SVC_ATTR_PORT``) to value; nested NLAs
#: (STATS64, FLAGS) are Mappings too.
Attrs = Mapping[str, Any]


def plain(nla: Any) -> dict[str, Any]:
    """A pyroute2 NLA as a plain dict of its attributes, ``UNKNOWN`` padding skipped,
    nested NLAs (stats) turned into dicts too."""
    out: dict[str, Any] = {}
    for name, value in nla["attrs"]:
        if name == "UNKNOWN":
            continue
        if hasattr(value, "get") and "attrs" in getattr(value, "keys", lambda: ())():
            out[name] = plain(value)
        else:
            out[name] = value
    return out


def _flag_word(value: Any) -> int:
    if isinstance(value, Mapping):
        return int(value["flags"])
    if hasattr(value, "get"):
        return int(value.get("flags"))
    return int(value)


def service_from_attrs(attrs: Attrs) -> Service:
    """The ``Service`` a dumped ``IPVS_CMD_ATTR_SERVICE`` describes."""
    family = _FAMILY_BY_AF[int(attrs["IPVS_SVC_ATTR_AF"])]
    fwmark = int(attrs.get("IPVS_SVC_ATTR_FWMARK", 0))
    if fwmark:
        key = ServiceKey.mark(fwmark, family)
    else:
        key = ServiceKey(
            family=family,
            protocol=_PROTOCOL_BY_NUMBER[int(attrs["IPVS_SVC_ATTR_PROTOCOL"])],
            address=str(ipaddress.ip_address(attrs["IPVS_SVC_ATTR_ADDR"])),
            port=int(attrs["IPVS_SVC_ATTR_PORT"]),
        )
    flags = _flag_word(attrs.get("IPVS_SVC_ATTR_FLAGS", 0))
    persistent = bool(flags & IP_VS_SVC_F_PERSISTENT)
    netmask = 0
    if persistent and "IPVS_SVC_ATTR_NETMASK" in attrs:
        netmask = decode_netmask(family, attrs["IPVS_SVC_ATTR_NETMASK"])
        if netmask == _HOST_PREFIX[family]:
            netmask = 0
    return Service(
        key=key,
        scheduler=str(attrs.get("IPVS_SVC_ATTR_SCHED_NAME", "")),
        flags=frozenset(f for f, bit in _SCHED_FLAG_BITS.items() if flags & bit),
        one_packet=bool(flags & IP_VS_SVC_F_ONEPACKET),
        timeout=int(attrs.get("IPVS_SVC_ATTR_TIMEOUT", 0)) if persistent else 0,
        netmask=netmask,
    )


def dest_from_attrs(attrs: Attrs) -> Destination:
    """The ``Destination`` a dumped ``IPVS_CMD_ATTR_DEST`` describes."""
    forward = _FWD_BY_CODE.get(int(attrs.get("IPVS_DEST_ATTR_FWD_METHOD", 0)) & 0x7, Forward.NAT)
    tunnel: TunnelType | None = None
    tunnel_port = 0
    if forward is Forward.TUN:
        tunnel = _TUN_BY_CODE.get(int(attrs.get("IPVS_DEST_ATTR_TUN_TYPE", 0)), TunnelType.IPIP)
        if tunnel is not TunnelType.IPIP:
            tunnel_port = swap16(int(attrs.get("IPVS_DEST_ATTR_TUN_PORT", 0)))
    return Destination(
        address=str(ipaddress.ip_address(attrs["IPVS_DEST_ATTR_ADDR"])),
        port=int(attrs["IPVS_DEST_ATTR_PORT"]),
        weight=int(attrs.get("IPVS_DEST_ATTR_WEIGHT", 0)),
        forward=forward,
        tunnel=tunnel,
        tunnel_port=tunnel_port,
        upper_threshold=int(attrs.get("IPVS_DEST_ATTR_U_THRESH", 0)),
        lower_threshold=int(attrs.get("IPVS_DEST_ATTR_L_THRESH", 0)),
    )


def stats_from_attrs(stats64: Attrs | None) -> Stats:
    """Counters from a decoded ``STATS64`` NLA (zeros when absent)."""
    if not stats64:
        return Stats()
    return Stats(
        connections=int(stats64.get("IPVS_STATS_ATTR_CONNS", 0)),
        packets_in=int(stats64.get("IPVS_STATS_ATTR_INPKTS", 0)),
        packets_out=int(stats64.get("IPVS_STATS_ATTR_OUTPKTS", 0)),
        bytes_in=int(stats64.get("IPVS_STATS_ATTR_INBYTES", 0)),
        bytes_out=int(stats64.get("IPVS_STATS_ATTR_OUTBYTES", 0)),
    )


def dest_stats_from_attrs(attrs: Attrs) -> DestStats:
    return DestStats(
        active_connections=int(attrs.get("IPVS_DEST_ATTR_ACTIVE_CONNS", 0)),
        inactive_connections=int(attrs.get("IPVS_DEST_ATTR_INACT_CONNS", 0)),
        persistent_connections=int(attrs.get("IPVS_DEST_ATTR_PERSIST_CONNS", 0)),
        stats=stats_from_attrs(attrs.get("IPVS_DEST_ATTR_STATS64")),
    )


# --- errors ------------------------------------------------------------------------------

NOT_LOADED = "ip_vs not loaded (modprobe ip_vs)"


def reason_for(op: Op | None, code: int) -> str:
    """The kernel's answer ``code`` (an errno) to ``op`` in words."""
    if code == errno_mod.EEXIST:
        return "already exists"
    if code == errno_mod.EPERM:
        return "needs CAP_NET_ADMIN"
    if code in (errno_mod.ENOENT, errno_mod.ESRCH):
        if (
            op is not None
            and code == errno_mod.ENOENT
            and op.kind in (OpKind.ADD_SERVICE, OpKind.EDIT_SERVICE)
        ):
            return f"scheduler module ip_vs_{op.service.scheduler} not available"
        if op is not None and op.dest is not None and code == errno_mod.ESRCH:
            return "service not found"
        return "not found"
    return f"{errno_mod.errorcode.get(code, str(code))}: {os.strerror(code)}"


def error_for(op: Op, exc: NetlinkError) -> IpvsError:
    return IpvsError(str(op), reason_for(op, exc.code), exc.code)


# --- the backend -------------------------------------------------------------------------


class NetlinkBackend:
    """``lvsd.ipvs.base.Backend`` over the kernel's IPVS generic netlink family.

    One socket, opened on first use. Use one instance per event loop.
    """

    def __init__(self, *, window: int = 64) -> None:
        self._ipvs: AsyncIPVS | None = None
        #: How many requests may be in flight at once (1: strictly one at a time).
        self.window = max(1, window)

    def __repr__(self) -> str:
        return f"<NetlinkBackend {'open' if self._ipvs is not None else 'closed'}>"

    async def _socket(self, what: str) -> AsyncIPVS:
        if self._ipvs is not None:
            return self._ipvs
        ipvs = AsyncIPVS()
        try:
            await ipvs.setup_endpoint()
        except NetlinkError as exc:
            ipvs.close()
            if exc.code == errno_mod.ENOENT:
                raise IpvsError(what, NOT_LOADED, exc.code) from exc
            raise IpvsError(what, reason_for(None, exc.code), exc.code) from exc
        except OSError as exc:
            ipvs.close()
            raise IpvsError(what, f"netlink socket: {exc.strerror or exc}", exc.errno) from exc
        self._ipvs = ipvs
        return ipvs

    async def dump(self) -> Snapshot:
        """Every service, then every service's destinations, with STATS64 counters."""
        return await self._dump(None)

    async def dump_services(self, keys: Collection[ServiceKey]) -> Snapshot:
        """The destinations of the services in ``keys`` only (one ``IPVS_CMD_GET_DEST``
        dump each), for a reload that changes a few services of a big table.

        Every service of the kernel is still read (one small message each): all of
        them are in ``service_stats``, so a caller can check which services exist;
        ``table`` and ``dest_stats`` hold only the services in ``keys`` that exist.
        """
        return await self._dump(frozenset(keys))

    async def _dump(self, keys: frozenset[ServiceKey] | None) -> Snapshot:
        ipvs = await self._socket("dump")
        table: dict[ServiceKey, VirtualService] = {}
        service_stats: dict[ServiceKey, Stats] = {}
        dest_stats: dict[tuple[ServiceKey, DestKey], DestStats] = {}
        try:
            services = [
                plain(msg.get_attr("IPVS_CMD_ATTR_SERVICE")) for msg in await ipvs.service("dump")
            ]
            for attrs in services:
                service = service_from_attrs(attrs)
                service_stats[service.key] = stats_from_attrs(attrs.get("IPVS_SVC_ATTR_STATS64"))
                if keys is not None and service.key not in keys:
                    continue
                request = IPVSService(**service_key_fields(service.key))
                dests: dict[DestKey, Destination] = {}
                for msg in await ipvs.dest("dump", service=request):
                    d_attrs = plain(msg.get_attr("IPVS_CMD_ATTR_DEST"))
                    dest = dest_from_attrs(d_attrs)
                    dests[dest.key] = dest
                    dest_stats[(service.key, dest.key)] = dest_stats_from_attrs(d_attrs)
                table[service.key] = VirtualService(
                    service=service, destinations={k: dests[k] for k in sorted(dests)}
                )
        except NetlinkError as exc:
            raise IpvsError("dump", reason_for(None, exc.code), exc.code) from exc
        return Snapshot(table=table, service_stats=service_stats, dest_stats=dest_stats)

    async def apply(self, ops: Sequence[Op]) -> ApplyResult:
        """One request per op, sent in order. A failed op is recorded and the rest go
        on, except the ops on a service whose ``add-service`` failed in this call
        (skipped, never sent). Up to ``window`` requests are in flight at once; an
        ``add-service`` waits for what is in flight and is answered before anything
        after it is sent."""
        if not ops:
            return ApplyResult()
        try:
            ipvs = await self._socket(str(ops[0]))
        except IpvsError as exc:
            return ApplyResult(
                failed=tuple((op, IpvsError(str(op), exc.reason, exc.errno)) for op in ops)
            )
        outcome: list[IpvsError | None] = []
        lost: set[ServiceKey] = set()
        window: list[Op] = []

        async def flush() -> None:
            # Requests in a window are all sent before any ack is awaited (the kernel
            # handles them in the order sent), which saves a round trip per op.
            results = await asyncio.gather(*(_attempt(ipvs, op) for op in window))
            outcome.extend(results)
            window.clear()

        for op in ops:
            key = op.service.key
            if key in lost:
                await flush()
                outcome.append(IpvsError(str(op), f"skipped: add-service {key} failed"))
                continue
            if op.kind is OpKind.ADD_SERVICE:
                # its dest ops depend on its outcome: send it alone, after the window
                await flush()
                error = await _attempt(ipvs, op)
                outcome.append(error)
                if error is not None:
                    lost.add(key)
                continue
            window.append(op)
            if len(window) >= self.window:
                await flush()
        await flush()
        applied = tuple(op for op, err in zip(ops, outcome, strict=True) if err is None)
        failed = tuple((op, err) for op, err in zip(ops, outcome, strict=True) if err is not None)
        return ApplyResult(applied=applied, failed=failed)

    async def close(self) -> None:
        if self._ipvs is not None:
            self._ipvs.close()
            self._ipvs = None


_SERVICE_COMMANDS = {
    OpKind.ADD_SERVICE: "add",
    OpKind.EDIT_SERVICE: "set",
    OpKind.DEL_SERVICE: "del",
}
_DEST_COMMANDS = {OpKind.ADD_DEST: "add", OpKind.EDIT_DEST: "set", OpKind.DEL_DEST: "del"}


def request_for(op: Op) -> tuple[str, dict[str, Any], dict[str, Any] | None]:
    """The pyroute2 call for ``op``: (command, service fields, dest fields or None)."""
    if op.kind in _SERVICE_COMMANDS:
        fields = (
            service_key_fields(op.service.key)
            if op.kind is OpKind.DEL_SERVICE
            else service_fields(op.service)
        )
        return _SERVICE_COMMANDS[op.kind], fields, None
    if op.dest is None:
        raise ValueError(f"{op.kind} without a destination")
    dest = dest_key_fields(op.dest) if op.kind is OpKind.DEL_DEST else dest_fields(op.dest)
    return _DEST_COMMANDS[op.kind], service_key_fields(op.service.key), dest


async def _attempt(ipvs: AsyncIPVS, op: Op) -> IpvsError | None:
    """Send ``op``; its error, or None when the kernel accepted it.

    A value the request cannot hold (pyroute2 raises struct.error, ValueError or
    TypeError while building or encoding it) fails this op only, like a kernel error.
    """
    try:
        await _request(ipvs, op)
    except NetlinkError as exc:
        return error_for(op, exc)
    except (struct.error, ValueError, TypeError) as exc:
        return IpvsError(str(op), f"cannot encode the request: {exc}")
    return None


async def _request(ipvs: AsyncIPVS, op: Op) -> None:
    command, svc, dest = request_for(op)
    if dest is None:
        await ipvs.service(command, service=IPVSService(**svc))
    else:
        await ipvs.dest(command, service=IPVSService(**svc), dest=IPVSDest(**dest))


__all__ = [
    "NOT_LOADED",
    "NetlinkBackend",
    "decode_netmask",
    "dest_fields",
    "dest_from_attrs",
    "dest_stats_from_attrs",
    "encode_netmask",
    "plain",
    "reason_for",
    "request_for",
    "service_fields",
    "service_from_attrs",
    "service_key_fields",
    "stats_from_attrs",
    "swap16",
]
