"""The kernel IPVS table over generic netlink (pyroute2's ``AsyncIPVS``).

The only module of lvsd that imports pyroute2. It has two halves:

* pure converters: lvsd's model to the request fields pyroute2 encodes
  (``service_fields``, ``dest_fields``), and dump replies to the model, decoded here
  from the reply's bytes with ``struct`` (``reply_attr``, ``service_from_nla``,
  ``dest_from_nla``), since pyroute2's own decoding is slow for a big table;
  table-tested without a kernel;
* ``NetlinkBackend``: ``dump()`` and ``apply(ops)`` on one socket (pyroute2 sends the
  requests and frames the replies, as ``RawReply`` objects), translating
  ``NetlinkError`` (and a request that cannot be encoded, or a reply that cannot be
  decoded) into ``IpvsError`` with the op and the reason in words.

Encoding quirks handled here (checked against a 6.1 kernel in the lab):

* the kernel refuses a service without ``IPVS_SVC_ATTR_NETMASK``. For IPv4 it is a
  dotted mask; for IPv6 it is the prefix length as a host-order u32, which pyroute2
  only encodes as a dotted quad (``ip4addr``), so 128 is sent as the four bytes of
  the u32 128 in host order (``128.0.0.0`` on x86);
* ``IPVS_DEST_ATTR_TUN_PORT`` is big-endian in the kernel but pyroute2 encodes it as
  a host-order u16, so the port is byte-swapped on the way out;
* dumps carry padding attributes and 32-bit ``STATS`` (which wrap): skipped; counters
  are read from ``STATS64``.
"""

from __future__ import annotations

import asyncio
import errno as errno_mod
import ipaddress
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, TypeVar

import structlog
from pyroute2.ipvs import AsyncIPVS, IPVSDest, IPVSService
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic.ipvs import ipvsmsg

from lvsd.errors import IpvsError
from lvsd.ipvs.layout import Field, Layout, learn
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


# --- pure decoders: dump replies -> model -----------------------------------------------
#
# A dump reads each reply's attributes itself, with struct, from the bytes pyroute2
# received: pyroute2 builds one Python object per attribute when asked for one, which
# for a big table blocks the event loop. pyroute2 still frames the replies and raises
# the kernel's errors.

NLA_F_NESTED = 0x8000
NLA_F_NET_BYTEORDER = 0x4000
_NLA_TYPE_MASK = 0xFFFF & ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER)
_NLA_HEADER = struct.Struct("=HH")  # length (header included), type
_GENL_HEADER_LEN = 20  # nlmsghdr (16) + genlmsghdr (4)

IPVS_CMD_ATTR_SERVICE = 1
IPVS_CMD_ATTR_DEST = 2

IPVS_SVC_ATTR_AF = 1
IPVS_SVC_ATTR_PROTOCOL = 2
IPVS_SVC_ATTR_ADDR = 3
IPVS_SVC_ATTR_PORT = 4
IPVS_SVC_ATTR_FWMARK = 5
IPVS_SVC_ATTR_SCHED_NAME = 6
IPVS_SVC_ATTR_FLAGS = 7
IPVS_SVC_ATTR_TIMEOUT = 8
IPVS_SVC_ATTR_NETMASK = 9
IPVS_SVC_ATTR_STATS64 = 12

IPVS_DEST_ATTR_ADDR = 1
IPVS_DEST_ATTR_PORT = 2
IPVS_DEST_ATTR_FWD_METHOD = 3
IPVS_DEST_ATTR_WEIGHT = 4
IPVS_DEST_ATTR_U_THRESH = 5
IPVS_DEST_ATTR_L_THRESH = 6
IPVS_DEST_ATTR_ACTIVE_CONNS = 7
IPVS_DEST_ATTR_INACT_CONNS = 8
IPVS_DEST_ATTR_PERSIST_CONNS = 9
IPVS_DEST_ATTR_ADDR_FAMILY = 11
IPVS_DEST_ATTR_STATS64 = 12
IPVS_DEST_ATTR_TUN_TYPE = 13
IPVS_DEST_ATTR_TUN_PORT = 14

IPVS_STATS_ATTR_CONNS = 1
IPVS_STATS_ATTR_INPKTS = 2
IPVS_STATS_ATTR_OUTPKTS = 3
IPVS_STATS_ATTR_INBYTES = 4
IPVS_STATS_ATTR_OUTBYTES = 5

_U8 = struct.Struct("=B")
_U16 = struct.Struct("=H")
_BE16 = struct.Struct("!H")
_U32 = struct.Struct("=I")
_U64 = struct.Struct("=Q")
_FLAGS = struct.Struct("=II")  # struct ip_vs_flags: flags, mask (``uint`` reads flags)

#: Attribute names by type, for errors: pyroute2's tables of the same attributes.
_SVC_NAMES = tuple(str(name) for name, _ in ipvsmsg.service.nla_map)
_DEST_NAMES = tuple(str(name) for name, _ in ipvsmsg.dest.nla_map)
_STATS_NAMES = tuple(str(name) for name, _ in ipvsmsg.service.stats64.nla_map)


def _malformed(what: str, detail: str) -> IpvsError:
    return IpvsError("dump", f"malformed reply: {what}: {detail}")


def _overrun(what: str, kind: int, offset: int, length: int, left: int) -> IpvsError:
    """An attribute shorter than its own header, or longer than what is left."""
    return _malformed(
        what,
        f"attribute {kind & _NLA_TYPE_MASK} at byte {offset} is {length} bytes long, {left} left",
    )


#: Bytes of an address: the kernel sends 16, an IPv4 address in the first 4.
_ADDRESS_SIZE = {Family.INET: 4, Family.INET6: 16}


def _address_text(raw: bytes, family: Family) -> str:
    """The model's text form of the address in the first ``_ADDRESS_SIZE`` bytes."""
    if family is Family.INET:
        return socket.inet_ntoa(raw[:4])
    return str(ipaddress.IPv6Address(raw[:16]))


class _Nla:
    """The attributes of one nested NLA by type (flags masked), as payload bytes.

    The last attribute of a type wins; types never read (``STATS``, ``PE_NAME``,
    padding, whatever a newer kernel adds) cost one dict entry. An attribute that is
    shorter than its header or runs past the end raises ``IpvsError``; fewer bytes
    than a header at the end are ignored, as the kernel's ``nla_for_each_attr`` does.
    """

    __slots__ = ("names", "payloads", "what")

    def __init__(self, what: str, names: Sequence[str], data: bytes) -> None:
        self.what = what
        self.names = names
        payloads: dict[int, bytes] = {}
        self.payloads = payloads
        unpack = _NLA_HEADER.unpack_from
        end = len(data)
        offset = 0
        while offset + 4 <= end:
            length, kind = unpack(data, offset)
            stop = offset + length
            if length < 4 or stop > end:
                raise _overrun(what, kind, offset, length, end - offset)
            payloads[kind & _NLA_TYPE_MASK] = data[offset + 4 : stop]
            offset = (stop + 3) & ~3

    def name(self, kind: int) -> str:
        return self.names[kind] if kind < len(self.names) else f"attribute {kind}"

    def uint(self, kind: int, fmt: struct.Struct = _U32, *, required: bool = False) -> int:
        """The unsigned integer ``kind`` holds (0 when absent, unless ``required``)."""
        payload = self.payloads.get(kind)
        if payload is None:
            if required:
                raise _malformed(self.what, f"no {self.name(kind)}")
            return 0
        try:
            value: int = fmt.unpack_from(payload)[0]
        except struct.error:
            raise _malformed(
                self.what, f"{self.name(kind)} is {len(payload)} bytes, want {fmt.size}"
            ) from None
        return value

    def raw(self, kind: int, size: int) -> bytes:
        """The first ``size`` bytes ``kind`` holds (it must be there)."""
        payload = self.payloads.get(kind)
        if payload is None:
            raise _malformed(self.what, f"no {self.name(kind)}")
        if len(payload) < size:
            raise _malformed(self.what, f"{self.name(kind)} is {len(payload)} bytes, want {size}")
        return payload[:size]

    def text(self, kind: int) -> str:
        """The NUL-terminated string ``kind`` holds ("" when absent)."""
        payload = self.payloads.get(kind, b"")
        try:
            return payload.strip(b"\0").decode()
        except UnicodeDecodeError:
            raise _malformed(self.what, f"{self.name(kind)} is not UTF-8: {payload!r}") from None

    def family(self, kind: int) -> Family:
        af = self.uint(kind, _U16, required=True)
        family = _FAMILY_BY_AF.get(af)
        if family is None:
            raise _malformed(self.what, f"{self.name(kind)} {af} is not AF_INET or AF_INET6")
        return family

    def address(self, kind: int, family: Family) -> str:
        """The address ``kind`` holds, in the model's text form."""
        return _address_text(self.raw(kind, _ADDRESS_SIZE[family]), family)


_NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence number, port id


class RawReply(dict[str, Any]):
    """A message of the IPVS family as the socket hands it over: its netlink header
    decoded into ``self["header"]``, the rest left as bytes (``data`` from ``offset``).

    pyroute2 builds each received message with the class registered for its type in
    ``marshal.msg_map``; building its own ``ipvsmsg`` for every reply, before any
    attribute is read, is a cost of its own. The socket reads only ``decode()`` and
    the header (type, flags, error) of a message, which this class gives; errors and
    the end of a dump come in messages of their own types, which pyroute2 still builds
    itself. Registered by :class:`NetlinkBackend` for the IPVS family once the family's
    id is known.
    """

    __slots__ = ("data", "offset")

    def __init__(self, data: bytes = b"", offset: int = 0, **_: Any) -> None:
        super().__init__()
        self.data = data
        self.offset = offset

    def decode(self) -> None:
        length, kind, flags, seq, pid = _NLMSG_HEADER.unpack_from(self.data, self.offset)
        self["header"] = {
            "length": length,
            "type": kind,
            "flags": flags,
            "sequence_number": seq,
            "pid": pid,
        }


def reply_attr(msg: Any, kind: int) -> bytes:
    """The payload of the first top-level attribute ``kind`` (``IPVS_CMD_ATTR_SERVICE``
    or ``IPVS_CMD_ATTR_DEST``) of one dump reply, as pyroute2 received it.

    pyroute2 keeps the receive buffer in ``msg.data`` and where the message starts in
    ``msg.offset``; its header (decoded when the reply was framed) holds its length.
    None of this makes pyroute2 decode the attributes.
    """
    data: bytes | bytearray = msg.data
    start: int = msg.offset
    end = min(start + msg["header"]["length"], len(data))
    offset = start + _GENL_HEADER_LEN
    while offset + 4 <= end:
        length, nla_type = _NLA_HEADER.unpack_from(data, offset)
        if length < 4 or offset + length > end:
            raise _overrun("reply", nla_type, offset - start, length, end - offset)
        if nla_type & _NLA_TYPE_MASK == kind:
            return bytes(data[offset + 4 : offset + length])
        offset += (length + 3) & ~3
    raise _malformed("reply", f"no {ipvsmsg.nla_map[kind][0]}")


def decode_netmask(family: Family, raw: bytes) -> int:
    """The prefix length ``IPVS_SVC_ATTR_NETMASK`` holds (inverse of ``encode_netmask``):
    IPv4, a dotted mask; IPv6, the prefix length as a host-order u32."""
    if family is Family.INET:
        mask = socket.inet_ntoa(raw[:4])
        try:
            return ipaddress.IPv4Network(f"0.0.0.0/{mask}").prefixlen
        except ValueError:
            raise _malformed(
                "IPVS_CMD_ATTR_SERVICE", f"IPVS_SVC_ATTR_NETMASK {mask} is not a mask"
            ) from None
    value: int = _U32.unpack_from(raw)[0]
    return value


def stats_from_nla(payload: bytes | None, what: str = "STATS64") -> Stats:
    """Counters from a ``STATS64`` payload (zeros when absent; ``STATS`` is 32-bit and
    wraps, so it is never read). One pass, picking the five u64 counters lvsd keeps."""
    if payload is None:
        return Stats()
    counters = [0] * (IPVS_STATS_ATTR_OUTBYTES + 1)
    unpack, u64 = _NLA_HEADER.unpack_from, _U64.unpack_from
    first, last = IPVS_STATS_ATTR_CONNS, IPVS_STATS_ATTR_OUTBYTES
    end = len(payload)
    offset = 0
    while offset + 4 <= end:
        length, kind = unpack(payload, offset)
        stop = offset + length
        if length < 4 or stop > end:
            raise _overrun(what, kind, offset, length, end - offset)
        kind &= _NLA_TYPE_MASK
        if first <= kind <= last:
            if length < 12:
                raise _malformed(what, f"{_STATS_NAMES[kind]} is {length - 4} bytes, want 8")
            counters[kind] = u64(payload, offset + 4)[0]
        offset = (stop + 3) & ~3
    return Stats(
        connections=counters[IPVS_STATS_ATTR_CONNS],
        packets_in=counters[IPVS_STATS_ATTR_INPKTS],
        packets_out=counters[IPVS_STATS_ATTR_OUTPKTS],
        bytes_in=counters[IPVS_STATS_ATTR_INBYTES],
        bytes_out=counters[IPVS_STATS_ATTR_OUTBYTES],
    )


def service_from_nla(payload: bytes) -> tuple[Service, Stats]:
    """The ``Service`` and counters a dumped ``IPVS_CMD_ATTR_SERVICE`` describes.

    The kernel's HASHED flag is ignored; the timeout and netmask count only with
    PERSISTENT, and the host netmask reads as 0.
    """
    a = _Nla("IPVS_CMD_ATTR_SERVICE", _SVC_NAMES, payload)
    family = a.family(IPVS_SVC_ATTR_AF)
    fwmark = a.uint(IPVS_SVC_ATTR_FWMARK)
    if fwmark:
        key = ServiceKey.mark(fwmark, family)
    else:
        number = a.uint(IPVS_SVC_ATTR_PROTOCOL, _U16, required=True)
        protocol = _PROTOCOL_BY_NUMBER.get(number)
        if protocol is None:
            raise _malformed(a.what, f"IPVS_SVC_ATTR_PROTOCOL {number} is not tcp, udp or sctp")
        key = ServiceKey(
            family=family,
            protocol=protocol,
            address=a.address(IPVS_SVC_ATTR_ADDR, family),
            port=a.uint(IPVS_SVC_ATTR_PORT, _BE16, required=True),
        )
    flags = a.uint(IPVS_SVC_ATTR_FLAGS, _FLAGS)
    persistent = bool(flags & IP_VS_SVC_F_PERSISTENT)
    netmask = 0
    if persistent and IPVS_SVC_ATTR_NETMASK in a.payloads:
        netmask = decode_netmask(family, a.raw(IPVS_SVC_ATTR_NETMASK, 4))
        if netmask == _HOST_PREFIX[family]:
            netmask = 0
    service = Service(
        key=key,
        scheduler=a.text(IPVS_SVC_ATTR_SCHED_NAME),
        flags=frozenset(f for f, bit in _SCHED_FLAG_BITS.items() if flags & bit),
        one_packet=bool(flags & IP_VS_SVC_F_ONEPACKET),
        timeout=a.uint(IPVS_SVC_ATTR_TIMEOUT) if persistent else 0,
        netmask=netmask,
    )
    stats64 = a.payloads.get(IPVS_SVC_ATTR_STATS64)
    return service, stats_from_nla(stats64, "IPVS_SVC_ATTR_STATS64")


#: What a destination's layout reads (``lvsd.ipvs.layout``), in this order.
_DEST_FIELDS: tuple[Field, ...] = (
    (IPVS_DEST_ATTR_ADDR, None, "s"),
    (IPVS_DEST_ATTR_ADDR_FAMILY, None, "H"),
    (IPVS_DEST_ATTR_PORT, None, "2s"),  # big-endian
    (IPVS_DEST_ATTR_FWD_METHOD, None, "I"),
    (IPVS_DEST_ATTR_WEIGHT, None, "I"),
    (IPVS_DEST_ATTR_U_THRESH, None, "I"),
    (IPVS_DEST_ATTR_L_THRESH, None, "I"),
    (IPVS_DEST_ATTR_ACTIVE_CONNS, None, "I"),
    (IPVS_DEST_ATTR_INACT_CONNS, None, "I"),
    (IPVS_DEST_ATTR_PERSIST_CONNS, None, "I"),
    (IPVS_DEST_ATTR_TUN_TYPE, None, "B"),
    (IPVS_DEST_ATTR_TUN_PORT, None, "2s"),  # big-endian (0 when absent)
    *((IPVS_DEST_ATTR_STATS64, kind, "Q") for kind in range(1, IPVS_STATS_ATTR_OUTBYTES + 1)),
)
_DEST_REQUIRED = (IPVS_DEST_ATTR_ADDR, IPVS_DEST_ATTR_PORT)

#: Destinations of one service decoded (and put in order) between two yields to the
#: event loop, so that a big service does not hold the loop for its whole dump.
DECODE_STEP = 128

#: Layouts of destination replies by payload length (a kernel sends one or two).
_dest_layouts: dict[int, Layout] = {}


def dest_from_reply(msg: Any, family: Family) -> tuple[Destination, DestStats]:
    """``dest_from_nla`` of one dump reply as pyroute2 received it. A kernel puts the
    ``IPVS_CMD_ATTR_DEST`` first: when it is there, in a shape read before, its
    values are read in place from the receive buffer (no walk to find it, no copy);
    anything else goes through ``reply_attr`` and ``dest_from_nla``."""
    data: bytes | bytearray = msg.data
    start: int = msg.offset + _GENL_HEADER_LEN
    if start + 4 <= len(data):
        length, kind = _NLA_HEADER.unpack_from(data, start)
        layout = _dest_layouts.get(length - 4)
        if (
            layout is not None
            and kind & _NLA_TYPE_MASK == IPVS_CMD_ATTR_DEST
            and start + length <= msg.offset + msg["header"]["length"] <= len(data)
        ):
            values = layout.read_at(data, start + 4)
            if values is not None:
                found = _dest_from_values(values, family)
                if found is not None:
                    return found
    return dest_from_nla(reply_attr(msg, IPVS_CMD_ATTR_DEST), family)


def dest_from_nla(payload: bytes, family: Family) -> tuple[Destination, DestStats]:
    """The ``Destination`` and counters a dumped ``IPVS_CMD_ATTR_DEST`` describes.

    ``family`` is the service's, for an old kernel that sends no ``ADDR_FAMILY`` (from
    before a destination could be of another family than its service).

    Replies shaped like one seen before are read through its layout (cheaper than a
    walk, see ``lvsd.ipvs.layout``); the rest are walked, and the walk alone raises
    ``IpvsError`` for a malformed reply.
    """
    layout = _dest_layouts.get(len(payload))
    values = None if layout is None else layout.read(payload)
    if values is None:
        layout = learn(payload, _DEST_FIELDS, _DEST_REQUIRED)
        if layout is not None:
            if len(_dest_layouts) >= 16:
                _dest_layouts.clear()
            _dest_layouts[len(payload)] = layout
            values = layout.read(payload)
    if values is not None:
        found = _dest_from_values(values, family)
        if found is not None:
            return found
    return _walk_dest(payload, family)


#: Destinations already decoded, by the values they were read from: the dump of an
#: unchanged table builds no new ``Destination`` (only its counters are new each time).
_dest_cache: dict[tuple[Any, ...], Destination] = {}
#: Entries kept at most (cleared when full).
DEST_CACHE_MAX = 32768


def _dest_from_values(
    values: tuple[Any, ...], family: Family
) -> tuple[Destination, DestStats] | None:
    """What a layout read, as the model (None for a reply the walk must decide)."""
    (raw, af, port, fwd, weight, upper, lower, active, inactive, persistent,
     tun_type, tun_port, conns, pin, pout, bin_, bout) = values  # fmt: skip
    key = (raw, af, port, fwd, weight, upper, lower, tun_type, tun_port, family)
    dest = _dest_cache.get(key)
    if dest is None:
        dest = _new_dest(raw, af, port, fwd, weight, upper, lower, tun_type, tun_port, family)
        if dest is None:
            return None
        if len(_dest_cache) >= DEST_CACHE_MAX:
            _dest_cache.clear()
        _dest_cache[key] = dest
    # positional: keywords cost a named tuple's __new__ more, for every destination
    return dest, DestStats(active, inactive, persistent, Stats(conns, pin, pout, bin_, bout))


def _new_dest(
    raw: bytes,
    af: int,
    port: bytes,
    fwd: int,
    weight: int,
    upper: int,
    lower: int,
    tun_type: int,
    tun_port: bytes,
    family: Family,
) -> Destination | None:
    """The destination a layout's values describe (None for an unknown family or an
    address too short for its family: the walk decides those)."""
    if af:
        if af not in _FAMILY_BY_AF:
            return None
        family = _FAMILY_BY_AF[af]
    if len(raw) < _ADDRESS_SIZE[family]:
        return None
    return _destination(
        _forwarding(
            fwd, lambda: tun_type, lambda: tun_port[0] << 8 | tun_port[1] if tun_port else 0
        ),
        _address_text(raw, family),
        port[0] << 8 | port[1],
        weight,
        upper,
        lower,
    )


def _walk_dest(payload: bytes, family: Family) -> tuple[Destination, DestStats]:
    """``dest_from_nla`` attribute by attribute."""
    a = _Nla("IPVS_CMD_ATTR_DEST", _DEST_NAMES, payload)
    if IPVS_DEST_ATTR_ADDR_FAMILY in a.payloads:
        family = a.family(IPVS_DEST_ATTR_ADDR_FAMILY)
    dest = _destination(
        _forwarding(
            a.uint(IPVS_DEST_ATTR_FWD_METHOD),
            lambda: a.uint(IPVS_DEST_ATTR_TUN_TYPE, _U8),
            lambda: a.uint(IPVS_DEST_ATTR_TUN_PORT, _BE16),
        ),
        a.address(IPVS_DEST_ATTR_ADDR, family),
        a.uint(IPVS_DEST_ATTR_PORT, _BE16, required=True),
        a.uint(IPVS_DEST_ATTR_WEIGHT),
        a.uint(IPVS_DEST_ATTR_U_THRESH),
        a.uint(IPVS_DEST_ATTR_L_THRESH),
    )
    stats = DestStats(
        active_connections=a.uint(IPVS_DEST_ATTR_ACTIVE_CONNS),
        inactive_connections=a.uint(IPVS_DEST_ATTR_INACT_CONNS),
        persistent_connections=a.uint(IPVS_DEST_ATTR_PERSIST_CONNS),
        stats=stats_from_nla(a.payloads.get(IPVS_DEST_ATTR_STATS64), "IPVS_DEST_ATTR_STATS64"),
    )
    return dest, stats


def _forwarding(
    fwd: int, tun_type: Callable[[], int], tun_port: Callable[[], int]
) -> tuple[Forward, TunnelType | None, int]:
    """The forwarding method, tunnel and tunnel port a destination's codes mean (an
    unknown method reads as NAT, an unknown tunnel as IPIP). The tunnel's type is read
    only for ``tun``, its port only for GUE and GRE: the walk raises for a malformed
    one only when it counts."""
    forward = _FWD_BY_CODE.get(fwd & 0x7, Forward.NAT)
    if forward is not Forward.TUN:
        return forward, None, 0
    tunnel = _TUN_BY_CODE.get(tun_type(), TunnelType.IPIP)
    return forward, tunnel, 0 if tunnel is TunnelType.IPIP else tun_port()


def _destination(
    forwarding: tuple[Forward, TunnelType | None, int],
    address: str,
    port: int,
    weight: int,
    upper: int,
    lower: int,
) -> Destination:
    """The one constructor of both destination decoders (the layout's and the walk's):
    ``forwarding`` first, as the walk reads the attributes in this order."""
    forward, tunnel, tunnel_port = forwarding
    return Destination(
        address=address,
        port=port,
        weight=weight,
        forward=forward,
        tunnel=tunnel,
        tunnel_port=tunnel_port,
        upper_threshold=upper,
        lower_threshold=lower,
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

T = TypeVar("T")

log = structlog.get_logger("lvsd.ipvs")

#: A dump or apply that takes this many seconds or more is logged as ``kernel.slow``.
SLOW_CALL = 1.0

#: Seconds a dump, or a window of requests, may wait for the kernel's answer. The
#: kernel answers at once; a reply lost (a full receive buffer drops it) would
#: otherwise hold the engine's lock, and every health change behind it, forever.
REPLY_TIMEOUT = 30.0


#: Bytes of replies read at once, beyond the datagram the loop's transport hands over:
#: every ack of a window, or a few parts (~32 KiB each) of a dump, a turn.
DRAIN_BYTES = 256 * 1024
#: Largest datagram read (as asyncio's datagram transport reads).
RECV_SIZE = 256 * 1024


class DrainingIPVS(AsyncIPVS):  # type: ignore[misc]  # pyroute2 is untyped
    """pyroute2's ``AsyncIPVS``, taking the replies already queued in one turn of the
    event loop.

    The loop's datagram transport reads one datagram a turn, and the kernel answers
    each request with a datagram of its own, so an apply of n ops took n + 4 turns
    and a dump a turn per part, and on a busy loop (hundreds of probes, a scrape) a
    turn is long. The kernel has answered a request by the time ``send`` returns, so
    the replies are there to read.
    """

    def enqueue(self, data: bytes, addr: Any) -> None:
        super().enqueue(data, addr)
        left = DRAIN_BYTES
        try:
            sock = self.socket  # raises the error the transport reported, if any
            while left > 0:
                more = sock.recv(RECV_SIZE, socket.MSG_DONTWAIT)
                super().enqueue(more, None)
                left -= len(more)
        except BlockingIOError:
            pass
        except OSError as exc:  # ENOBUFS: reported as the transport would
            self.local.protocol.error_received(exc)


def _note_slow(call: str, started: float, **fields: int | float) -> None:
    seconds = time.monotonic() - started
    if seconds >= SLOW_CALL:
        log.warning("kernel.slow", call=call, seconds=round(seconds, 3), **fields)


class NetlinkBackend:
    """``lvsd.ipvs.base.Backend`` over the kernel's IPVS generic netlink family.

    One socket, opened on first use, and again after a call the kernel left
    unanswered (``REPLY_TIMEOUT``). Use one instance per event loop.
    """

    def __init__(self, *, window: int = 64) -> None:
        self._ipvs: AsyncIPVS | None = None
        # One dump at a time: the kernel answers EBUSY to a dump asked on a netlink
        # socket whose previous dump has not ended (a scrape's beside a reconcile's).
        self._dumping = asyncio.Lock()
        #: How many requests may be in flight at once (1: strictly one at a time).
        self.window = max(1, window)

    def __repr__(self) -> str:
        return f"<NetlinkBackend {'open' if self._ipvs is not None else 'closed'}>"

    async def _socket(self, what: str) -> AsyncIPVS:
        if self._ipvs is not None:
            return self._ipvs
        ipvs = DrainingIPVS()
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
        # dump replies stay bytes until lvsd decodes them (``RawReply``)
        ipvs.marshal.msg_map[ipvs.prid] = RawReply
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
        started = time.monotonic()
        async with self._dumping:
            waited = time.monotonic() - started  # behind another dump
            snapshot = await self._answered("dump", self._dump_now(keys))
        _note_slow("dump", started, waited=round(waited, 3), destinations=len(snapshot.dest_stats))
        return snapshot

    async def _dump_now(self, keys: frozenset[ServiceKey] | None) -> Snapshot:
        ipvs = await self._socket("dump")
        table: dict[ServiceKey, VirtualService] = {}
        service_stats: dict[ServiceKey, Stats] = {}
        dest_stats: dict[tuple[ServiceKey, DestKey], DestStats] = {}
        try:
            services = [
                service_from_nla(reply_attr(msg, IPVS_CMD_ATTR_SERVICE))
                for msg in await ipvs.service("dump")
            ]
            for service, stats in services:
                service_stats[service.key] = stats
                if keys is not None and service.key not in keys:
                    continue
                request = IPVSService(**service_key_fields(service.key))
                dests: dict[DestKey, Destination] = {}
                family = service.key.family
                for n, msg in enumerate(await ipvs.dest("dump", service=request), 1):
                    dest, counters = dest_from_reply(msg, family)
                    dkey = dest.key
                    dests[dkey] = dest
                    dest_stats[(service.key, dkey)] = counters
                    if n % DECODE_STEP == 0:
                        await asyncio.sleep(0)  # a big service is decoded in steps
                # by sort key: tuples compared in C, not DestKey.__lt__ 10,000 times
                order = sorted(dests, key=DestKey.sort_key)
                ordered: dict[DestKey, Destination] = {}
                for start in range(0, len(order), DECODE_STEP):
                    if start:
                        await asyncio.sleep(0)  # and put in order in steps
                    ordered.update({k: dests[k] for k in order[start : start + DECODE_STEP]})
                table[service.key] = VirtualService(service=service, destinations=ordered)
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
        started = time.monotonic()
        outcome: list[IpvsError | None] = []
        lost: set[ServiceKey] = set()
        window: list[Op] = []
        silent: IpvsError | None = None  # the kernel's reply timed out: send no more

        async def flush() -> None:
            # Requests in a window are all sent before any ack is awaited (the kernel
            # handles them in the order sent), which saves a round trip per op.
            nonlocal silent
            if not window:
                return
            if silent is None:
                sent = asyncio.gather(*(_attempt(ipvs, op) for op in window))
                try:
                    outcome.extend(await self._answered(str(window[0]), sent))
                except IpvsError as exc:
                    silent = exc
            if silent is not None:
                outcome.extend(IpvsError(str(op), silent.reason) for op in window)
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
                window.append(op)
                await flush()
                if outcome[-1] is not None:
                    lost.add(key)
                continue
            window.append(op)
            if len(window) >= self.window:
                await flush()
        await flush()
        _note_slow("apply", started, ops=len(ops))
        applied = tuple(op for op, err in zip(ops, outcome, strict=True) if err is None)
        failed = tuple((op, err) for op, err in zip(ops, outcome, strict=True) if err is not None)
        return ApplyResult(applied=applied, failed=failed)

    async def _answered(self, what: str, call: Awaitable[T]) -> T:
        """``call``'s result, or ``IpvsError(what)`` when the kernel has not answered
        within ``REPLY_TIMEOUT``. The socket is then closed (a late reply would go to a
        request forgotten) and the next call opens another."""
        try:
            async with asyncio.timeout(REPLY_TIMEOUT):
                return await call
        except TimeoutError:
            await self.close()
            reason = f"no answer from the kernel within {REPLY_TIMEOUT:g}s"
            raise IpvsError(what, reason) from None

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
    "RawReply",
    "decode_netmask",
    "dest_fields",
    "dest_from_nla",
    "dest_from_reply",
    "encode_netmask",
    "reason_for",
    "reply_attr",
    "request_for",
    "service_fields",
    "service_from_nla",
    "service_key_fields",
    "stats_from_nla",
    "swap16",
]
