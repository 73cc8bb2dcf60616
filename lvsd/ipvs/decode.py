"""Dump replies as lvsd's model, decoded from the bytes pyroute2 received.

A dump reads each reply's attributes itself, with ``struct``: pyroute2 builds one
Python object per attribute when asked for one, which for a big table blocks the
event loop. pyroute2 still frames the replies (as :class:`RawReply` objects) and
raises the kernel's errors. Dumps carry padding attributes and 32-bit ``STATS``
(which wrap): skipped; counters are read from ``STATS64``.

A destination reply shaped like one seen before is read through its layout
(``lvsd.ipvs.layout``), in place in the receive buffer, and an unchanged destination
is not built again (``_dest_cache``); the rest are walked attribute by attribute
(:class:`_Nla`), and the walk alone raises ``IpvsError`` for a malformed reply. Both
build the model with one constructor (:func:`_destination`).

Pure: no I/O; table-tested without a kernel in tests/ipvs/test_decode.py.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Callable, Sequence
from typing import Any

from pyroute2.netlink.generic.ipvs import ipvsmsg

from lvsd.errors import IpvsError
from lvsd.ipvs.base import Timeouts
from lvsd.ipvs.layout import Field, Layout, learn
from lvsd.ipvs.uapi import (
    FAMILY_BY_AF,
    FWD_BY_CODE,
    HOST_PREFIX,
    IP_VS_SVC_F_ONEPACKET,
    IP_VS_SVC_F_PERSISTENT,
    IPVS_CMD_ATTR_DEST,
    IPVS_CMD_ATTR_TIMEOUT_TCP,
    IPVS_CMD_ATTR_TIMEOUT_TCP_FIN,
    IPVS_CMD_ATTR_TIMEOUT_UDP,
    IPVS_DEST_ATTR_ACTIVE_CONNS,
    IPVS_DEST_ATTR_ADDR,
    IPVS_DEST_ATTR_ADDR_FAMILY,
    IPVS_DEST_ATTR_FWD_METHOD,
    IPVS_DEST_ATTR_INACT_CONNS,
    IPVS_DEST_ATTR_L_THRESH,
    IPVS_DEST_ATTR_PERSIST_CONNS,
    IPVS_DEST_ATTR_PORT,
    IPVS_DEST_ATTR_STATS64,
    IPVS_DEST_ATTR_TUN_PORT,
    IPVS_DEST_ATTR_TUN_TYPE,
    IPVS_DEST_ATTR_U_THRESH,
    IPVS_DEST_ATTR_WEIGHT,
    IPVS_STATS_ATTR_CONNS,
    IPVS_STATS_ATTR_INBYTES,
    IPVS_STATS_ATTR_INPKTS,
    IPVS_STATS_ATTR_OUTBYTES,
    IPVS_STATS_ATTR_OUTPKTS,
    IPVS_SVC_ATTR_ADDR,
    IPVS_SVC_ATTR_AF,
    IPVS_SVC_ATTR_FLAGS,
    IPVS_SVC_ATTR_FWMARK,
    IPVS_SVC_ATTR_NETMASK,
    IPVS_SVC_ATTR_PORT,
    IPVS_SVC_ATTR_PROTOCOL,
    IPVS_SVC_ATTR_SCHED_NAME,
    IPVS_SVC_ATTR_STATS64,
    IPVS_SVC_ATTR_TIMEOUT,
    PROTOCOL_BY_NUMBER,
    SCHED_FLAG_BITS,
    TUN_BY_CODE,
)
from lvsd.model import (
    Destination,
    DestStats,
    Family,
    Forward,
    Service,
    ServiceKey,
    Stats,
    TunnelType,
)

# --- netlink framing (include/uapi/linux/netlink.h) -------------------------------------

NLA_F_NESTED = 0x8000
NLA_F_NET_BYTEORDER = 0x4000
_NLA_TYPE_MASK = 0xFFFF & ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER)
_NLA_HEADER = struct.Struct("=HH")  # length (header included), type
_GENL_HEADER_LEN = 20  # nlmsghdr (16) + genlmsghdr (4)
_NLMSG_HEADER = struct.Struct("=IHHII")  # length, type, flags, sequence number, port id

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

#: Bytes of an address: the kernel sends 16, an IPv4 address in the first 4.
_ADDRESS_SIZE = {Family.INET: 4, Family.INET6: 16}


def _malformed(what: str, detail: str) -> IpvsError:
    return IpvsError("dump", f"malformed reply: {what}: {detail}")


def _overrun(what: str, kind: int, offset: int, length: int, left: int) -> IpvsError:
    """An attribute shorter than its own header, or longer than what is left."""
    return _malformed(
        what,
        f"attribute {kind & _NLA_TYPE_MASK} at byte {offset} is {length} bytes long, {left} left",
    )


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
        family = FAMILY_BY_AF.get(af)
        if family is None:
            raise _malformed(self.what, f"{self.name(kind)} {af} is not AF_INET or AF_INET6")
        return family

    def address(self, kind: int, family: Family) -> str:
        """The address ``kind`` holds, in the model's text form."""
        return _address_text(self.raw(kind, _ADDRESS_SIZE[family]), family)


# --- replies as the socket hands them over ----------------------------------------------


class RawReply(dict[str, Any]):
    """A message of the IPVS family as the socket hands it over: its netlink header
    decoded into ``self["header"]``, the rest left as bytes (``data`` from ``offset``).

    pyroute2 builds each received message with the class registered for its type in
    ``marshal.msg_map``; building its own ``ipvsmsg`` for every reply, before any
    attribute is read, is a cost of its own. The socket reads only ``decode()`` and
    the header (type, flags, error) of a message, which this class gives; errors and
    the end of a dump come in messages of their own types, which pyroute2 still builds
    itself. Registered by ``NetlinkBackend`` for the IPVS family once the family's id
    is known.
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


# --- services and counters --------------------------------------------------------------


def decode_netmask(family: Family, raw: bytes) -> int:
    """The prefix length ``IPVS_SVC_ATTR_NETMASK`` holds (inverse of
    ``lvsd.ipvs.encode.encode_netmask``): IPv4, a dotted mask; IPv6, the prefix length
    as a host-order u32."""
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
        protocol = PROTOCOL_BY_NUMBER.get(number)
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
        if netmask == HOST_PREFIX[family]:
            netmask = 0
    service = Service(
        key=key,
        scheduler=a.text(IPVS_SVC_ATTR_SCHED_NAME),
        flags=frozenset(f for f, bit in SCHED_FLAG_BITS.items() if flags & bit),
        one_packet=bool(flags & IP_VS_SVC_F_ONEPACKET),
        timeout=a.uint(IPVS_SVC_ATTR_TIMEOUT) if persistent else 0,
        netmask=netmask,
    )
    stats64 = a.payloads.get(IPVS_SVC_ATTR_STATS64)
    return service, stats_from_nla(stats64, "IPVS_SVC_ATTR_STATS64")


# --- destinations -----------------------------------------------------------------------

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
        if af not in FAMILY_BY_AF:
            return None
        family = FAMILY_BY_AF[af]
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
    forward = FWD_BY_CODE.get(fwd & 0x7, Forward.NAT)
    if forward is not Forward.TUN:
        return forward, None, 0
    tunnel = TUN_BY_CODE.get(tun_type(), TunnelType.IPIP)
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


def timeouts_from_reply(msg: Any) -> Timeouts:
    """The connection timeouts of an ``IPVS_CMD_GET_CONFIG`` reply (three u32s)."""

    def seconds(kind: int) -> int:
        payload = reply_attr(msg, kind)
        if len(payload) < 4:
            raise _malformed("timeouts", f"{ipvsmsg.nla_map[kind][0]} of {len(payload)} bytes")
        value: int = struct.unpack_from("=I", payload)[0]
        return value

    return Timeouts(
        tcp=seconds(IPVS_CMD_ATTR_TIMEOUT_TCP),
        tcp_fin=seconds(IPVS_CMD_ATTR_TIMEOUT_TCP_FIN),
        udp=seconds(IPVS_CMD_ATTR_TIMEOUT_UDP),
    )


__all__ = [
    "RawReply",
    "decode_netmask",
    "dest_from_nla",
    "dest_from_reply",
    "reply_attr",
    "service_from_nla",
    "stats_from_nla",
    "timeouts_from_reply",
]
