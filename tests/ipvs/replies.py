"""Dump replies as a kernel sends them, and the conversion lvsd used before it decoded
them itself: shared by tests/ipvs and bench/.

The replies are built with pyroute2's own encoder and framed by pyroute2's own marshal
(as the socket does). The oracle is the old conversion (pyroute2's lazy decoding,
``plain()`` and the ``*_from_attrs`` converters, kept verbatim): tests/ipvs/test_decode.py
checks that ``lvsd.ipvs.decode`` gives the same model. ``FakeDumpIPVS`` answers a
backend's dumps with such replies.

``bench/dump_decode.py`` imports ``encode_reply``, ``frame``, ``legacy_service`` and
``legacy_dest`` from here to time the two; ``bench/scrape_bench.py`` the builders and
``FakeDumpIPVS``.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from collections.abc import Mapping
from typing import Any

from pyroute2.ipvs import IPVSService
from pyroute2.netlink import NLM_F_MULTI
from pyroute2.netlink.generic import ipvs as genl
from pyroute2.netlink.marshal import Marshal

from lvsd.ipvs.decode import RawReply
from lvsd.ipvs.encode import encode_netmask, swap16
from lvsd.ipvs.uapi import (
    FAMILY_BY_AF,
    FWD_BY_CODE,
    HOST_PREFIX,
    IP_VS_SVC_F_ONEPACKET,
    IP_VS_SVC_F_PERSISTENT,
    PROTOCOL_BY_NUMBER,
    SCHED_FLAG_BITS,
    TUN_BY_CODE,
)
from lvsd.model import (
    Destination,
    DestStats,
    Family,
    Forward,
    Protocol,
    Service,
    ServiceKey,
    Stats,
    TunnelType,
)

# --- building replies as the kernel sends them ------------------------------------------

GENL_ID = 0x1D  # the IPVS family's id: the kernel picks one when ip_vs loads
SEQ = 7
SERVICE = "IPVS_CMD_ATTR_SERVICE"
DEST = "IPVS_CMD_ATTR_DEST"

_STATS_NAMES = ("CONNS", "INPKTS", "OUTPKTS", "INBYTES", "OUTBYTES",
                "CPS", "INPPS", "OUTPPS", "INBPS", "OUTBPS")  # fmt: skip


def encode_reply(kind: str, attrs: list[Any], *, flags: int = 0) -> bytes:
    """One dump reply (``IPVS_CMD_NEW_SERVICE``/``_DEST``, NLM_F_MULTI) holding the
    nested attribute ``kind`` with ``attrs``, encoded by pyroute2."""
    msg = genl.ipvsmsg()
    msg["cmd"] = genl.IPVS_CMD_NEW_SERVICE if kind == SERVICE else genl.IPVS_CMD_NEW_DEST
    msg["version"] = genl.GENL_VERSION
    msg["header"]["type"] = GENL_ID
    msg["header"]["flags"] = NLM_F_MULTI
    msg["header"]["sequence_number"] = SEQ
    msg["attrs"] = [(kind, {"attrs": attrs}, flags)]
    msg.encode()
    return bytes(msg.data)


def frame(*replies: bytes) -> list[Any]:
    """The message objects pyroute2's socket yields for ``replies`` received in one
    buffer, with ``RawReply`` registered for the IPVS family as ``NetlinkBackend``
    does (each keeps the whole buffer in ``.data`` and its start in ``.offset``)."""
    marshal = Marshal()
    marshal.msg_map[GENL_ID] = RawReply
    return list(marshal.parse(b"".join(replies), SEQ))


def pyroute2_msg(msg: Any) -> Any:
    """The same reply as pyroute2's own message class builds it, for the oracle."""
    full = genl.ipvsmsg(msg.data, offset=msg.offset)
    full.decode()
    return full


def stats(
    conns: int = 0,
    inpkts: int = 0,
    outpkts: int = 0,
    inbytes: int = 0,
    outbytes: int = 0,
    *,
    wrap: bool = False,
) -> dict[str, Any]:
    """A STATS (``wrap``: 32-bit, as the kernel truncates them) or STATS64 NLA, with
    the rate attributes the kernel also sends."""
    values = [conns, inpkts, outpkts, inbytes, outbytes, 1, 2, 3, 4, 5]
    if wrap:
        values = [v & 0xFFFFFFFF for v in values]
    pairs = zip(_STATS_NAMES, values, strict=True)
    return {"attrs": [(f"IPVS_STATS_ATTR_{name}", value) for name, value in pairs]}


def nla(kind: int, payload: bytes) -> bytes:
    """One raw attribute, padded (for what pyroute2's encoder cannot write)."""
    raw = struct.pack("=HH", 4 + len(payload), kind) + payload
    return raw + b"\0" * (-len(raw) % 4)


def truncate(reply: bytes, cut: int) -> bytes:
    """``reply`` without its last ``cut`` bytes, the message's and the outer attribute's
    lengths fixed (so what is cut short is the last nested attribute)."""
    out = bytearray(reply[:-cut])
    struct.pack_into("=I", out, 0, len(out))
    struct.pack_into("=H", out, 20, len(out) - 20)
    return bytes(out)


def splice(reply: bytes, raw: bytes, *, first: bool = False) -> bytes:
    """``reply`` with ``raw`` attributes added to its nested attribute (first or last),
    the nested attribute's and the message's lengths fixed."""
    at = 24 if first else len(reply)  # nlmsghdr 16 + genlmsghdr 4 + the outer NLA header
    out = bytearray(reply[:at] + raw + reply[at:])
    struct.pack_into("=I", out, 0, len(out))
    struct.pack_into("=H", out, 20, len(out) - 20)
    return bytes(out)


def with_flag(reply: bytes, kind: int, flag: int) -> bytes:
    """``reply`` with ``flag`` set in the type of its nested attribute ``kind``."""
    out = bytearray(reply)
    offset = 24
    while offset < len(out):
        length, nla_type = struct.unpack_from("=HH", out, offset)
        if nla_type == kind:
            struct.pack_into("=H", out, offset + 2, nla_type | flag)
            return bytes(out)
        offset += (length + 3) & ~3
    raise AssertionError(f"no attribute {kind}")


# --- the oracle: the conversion through pyroute2's decoder, as lvsd did it --------------


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


def _decode_netmask(family: Family, text: str) -> int:
    if family is Family.INET:
        return ipaddress.IPv4Network(f"0.0.0.0/{text}").prefixlen
    value: int = struct.unpack("=I", socket.inet_aton(text))[0]
    return value


def service_from_attrs(attrs: Mapping[str, Any]) -> Service:
    family = FAMILY_BY_AF[int(attrs["IPVS_SVC_ATTR_AF"])]
    fwmark = int(attrs.get("IPVS_SVC_ATTR_FWMARK", 0))
    if fwmark:
        key = ServiceKey.mark(fwmark, family)
    else:
        key = ServiceKey(
            family=family,
            protocol=PROTOCOL_BY_NUMBER[int(attrs["IPVS_SVC_ATTR_PROTOCOL"])],
            address=str(ipaddress.ip_address(attrs["IPVS_SVC_ATTR_ADDR"])),
            port=int(attrs["IPVS_SVC_ATTR_PORT"]),
        )
    flags = _flag_word(attrs.get("IPVS_SVC_ATTR_FLAGS", 0))
    persistent = bool(flags & IP_VS_SVC_F_PERSISTENT)
    netmask = 0
    if persistent and "IPVS_SVC_ATTR_NETMASK" in attrs:
        netmask = _decode_netmask(family, attrs["IPVS_SVC_ATTR_NETMASK"])
        if netmask == HOST_PREFIX[family]:
            netmask = 0
    return Service(
        key=key,
        scheduler=str(attrs.get("IPVS_SVC_ATTR_SCHED_NAME", "")),
        flags=frozenset(f for f, bit in SCHED_FLAG_BITS.items() if flags & bit),
        one_packet=bool(flags & IP_VS_SVC_F_ONEPACKET),
        timeout=int(attrs.get("IPVS_SVC_ATTR_TIMEOUT", 0)) if persistent else 0,
        netmask=netmask,
    )


def dest_from_attrs(attrs: Mapping[str, Any]) -> Destination:
    forward = FWD_BY_CODE.get(int(attrs.get("IPVS_DEST_ATTR_FWD_METHOD", 0)) & 0x7, Forward.NAT)
    tunnel: TunnelType | None = None
    tunnel_port = 0
    if forward is Forward.TUN:
        tunnel = TUN_BY_CODE.get(int(attrs.get("IPVS_DEST_ATTR_TUN_TYPE", 0)), TunnelType.IPIP)
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


def stats_from_attrs(stats64: Mapping[str, Any] | None) -> Stats:
    if not stats64:
        return Stats()
    return Stats(
        connections=int(stats64.get("IPVS_STATS_ATTR_CONNS", 0)),
        packets_in=int(stats64.get("IPVS_STATS_ATTR_INPKTS", 0)),
        packets_out=int(stats64.get("IPVS_STATS_ATTR_OUTPKTS", 0)),
        bytes_in=int(stats64.get("IPVS_STATS_ATTR_INBYTES", 0)),
        bytes_out=int(stats64.get("IPVS_STATS_ATTR_OUTBYTES", 0)),
    )


def dest_stats_from_attrs(attrs: Mapping[str, Any]) -> DestStats:
    return DestStats(
        active_connections=int(attrs.get("IPVS_DEST_ATTR_ACTIVE_CONNS", 0)),
        inactive_connections=int(attrs.get("IPVS_DEST_ATTR_INACT_CONNS", 0)),
        persistent_connections=int(attrs.get("IPVS_DEST_ATTR_PERSIST_CONNS", 0)),
        stats=stats_from_attrs(attrs.get("IPVS_DEST_ATTR_STATS64")),
    )


def legacy_service(msg: Any) -> tuple[Service, Stats]:
    """A service reply as lvsd read it through pyroute2."""
    attrs = plain(pyroute2_msg(msg).get_attr(SERVICE))
    return service_from_attrs(attrs), stats_from_attrs(attrs.get("IPVS_SVC_ATTR_STATS64"))


def legacy_dest(msg: Any) -> tuple[Destination, DestStats]:
    """A destination reply as lvsd read it through pyroute2."""
    attrs = plain(pyroute2_msg(msg).get_attr(DEST))
    return dest_from_attrs(attrs), dest_stats_from_attrs(attrs)


# --- attributes of services and destinations ------------------------------------------

BIG = 2**32 + 5  # above what the 32-bit STATS can hold
V4 = [("IPVS_SVC_ATTR_AF", socket.AF_INET)]
V6 = [("IPVS_SVC_ATTR_AF", socket.AF_INET6)]


def tcp(addr: str, port: int, proto: int = socket.IPPROTO_TCP) -> list[tuple[str, Any]]:
    return [("IPVS_SVC_ATTR_PROTOCOL", proto), ("IPVS_SVC_ATTR_ADDR", addr),
            ("IPVS_SVC_ATTR_PORT", port)]  # fmt: skip


def mark(fwmark: int) -> list[tuple[str, Any]]:
    return [("IPVS_SVC_ATTR_FWMARK", fwmark)]


def svc_tail(sched: str, flags: int, timeout: int = 0, netmask: str = "255.255.255.255",
             counters: Stats = Stats()) -> list[tuple[str, Any]]:  # fmt: skip
    """What the kernel sends after a service's key (HASHED 0x2 is always set)."""
    c = counters
    values = (c.connections, c.packets_in, c.packets_out, c.bytes_in, c.bytes_out)
    return [
        ("IPVS_SVC_ATTR_SCHED_NAME", sched),
        ("IPVS_SVC_ATTR_FLAGS", {"flags": flags | 0x2, "mask": 0xFFFFFFFF}),
        ("IPVS_SVC_ATTR_TIMEOUT", timeout),
        ("IPVS_SVC_ATTR_NETMASK", netmask),
        ("IPVS_SVC_ATTR_STATS", stats(*values, wrap=True)),
        ("IPVS_SVC_ATTR_STATS64", stats(*values)),
    ]


VIP = ServiceKey.inet(Protocol.TCP, "192.168.3.108", 80)
VIP6 = ServiceKey.inet(Protocol.UDP, "2001:db8::108", 53)
COUNTERS = Stats(connections=BIG, packets_in=BIG + 1, packets_out=3, bytes_in=2**40, bytes_out=9)
V6_128 = encode_netmask(Family.INET6, 128)


def dest_attrs(addr: str = "10.0.0.2", port: int = 80, fwd: int = 0, weight: int = 1, *,
               tun: tuple[int, int] = (0, 0), thresh: tuple[int, int] = (0, 0),
               conns: tuple[int, int, int] = (0, 0, 0), counters: Stats = Stats(),
               family: int | None = None) -> list[tuple[str, Any]]:  # fmt: skip
    """A destination's attributes in the order the kernel sends them. ``tun`` is
    (type, port), the port as the kernel holds it (big-endian: pyroute2 writes a host
    u16, hence the swap)."""
    c = counters
    values = (c.connections, c.packets_in, c.packets_out, c.bytes_in, c.bytes_out)
    af = family or (socket.AF_INET6 if ":" in addr else socket.AF_INET)
    return [
        ("IPVS_DEST_ATTR_ADDR", addr),
        ("IPVS_DEST_ATTR_PORT", port),
        ("IPVS_DEST_ATTR_FWD_METHOD", fwd),
        ("IPVS_DEST_ATTR_WEIGHT", weight),
        ("IPVS_DEST_ATTR_TUN_TYPE", tun[0]),
        ("IPVS_DEST_ATTR_TUN_PORT", swap16(tun[1])),
        ("IPVS_DEST_ATTR_TUN_FLAGS", 0),
        ("IPVS_DEST_ATTR_U_THRESH", thresh[0]),
        ("IPVS_DEST_ATTR_L_THRESH", thresh[1]),
        ("IPVS_DEST_ATTR_ACTIVE_CONNS", conns[0]),
        ("IPVS_DEST_ATTR_INACT_CONNS", conns[1]),
        ("IPVS_DEST_ATTR_PERSIST_CONNS", conns[2]),
        ("IPVS_DEST_ATTR_ADDR_FAMILY", af),
        ("IPVS_DEST_ATTR_STATS", stats(*values, wrap=True)),
        ("IPVS_DEST_ATTR_STATS64", stats(*values)),
    ]


def rs(address: str = "10.0.0.2", port: int = 80, **kw: Any) -> Destination:
    return Destination(address=address, port=port, **kw)


# --- a socket answering dumps ------------------------------------------------------------


class FakeDumpIPVS:
    """Stands in for pyroute2's AsyncIPVS in a dump: answers ``service("dump")`` and
    ``dest("dump", service=...)`` with framed replies, as the socket would."""

    def __init__(self, services: list[bytes], dests: dict[ServiceKey, list[bytes]]) -> None:
        self.services = services
        self.dests = dests
        self.dest_dumps: list[ServiceKey] = []

    async def service(self, command: str) -> list[Any]:
        assert "dump" == command
        return frame(*self.services)

    async def dest(self, command: str, service: IPVSService) -> list[Any]:
        assert "dump" == command
        replies = self.replies(service)
        return frame(*replies) if replies else []

    def replies(self, service: IPVSService) -> list[bytes]:
        """The replies of the dest dump of ``service`` (recorded in ``dest_dumps``)."""
        fields = dict(service)
        family = FAMILY_BY_AF[fields["af"]]
        if fields.get("fwmark"):
            key = ServiceKey.mark(fields["fwmark"], family)
        else:
            key = ServiceKey.inet(PROTOCOL_BY_NUMBER[fields["protocol"]], fields["addr"],
                                  fields["port"])  # fmt: skip
        self.dest_dumps.append(key)
        return self.dests.get(key, [])

    def close(self) -> None:
        pass
