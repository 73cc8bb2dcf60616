"""Table tests of the dump decoder: reply bytes -> model, without a kernel.

The replies are built with pyroute2's own encoder, framed by pyroute2's own marshal
(as the socket does), then decoded twice: by ``lvsd.ipvs.netlink`` and by the
conversion lvsd used before it decoded replies itself (pyroute2's lazy decoding,
``plain()`` and the ``*_from_attrs`` converters, kept below verbatim as the oracle).
Both must give the same model, and the model must be the one expected.

``bench/dump_decode.py`` imports ``encode_reply``, ``frame``, ``legacy_service`` and
``legacy_dest`` from here to time the two.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import struct
from collections.abc import Mapping
from typing import Any

import pytest
from pyroute2.ipvs import IPVSService
from pyroute2.netlink import (
    NLA_F_NESTED,
    NLA_F_NET_BYTEORDER,
    NLM_F_MULTI,
    NLMSG_DONE,
    NLMSG_ERROR,
)
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic import ipvs as genl
from pyroute2.netlink.marshal import Marshal

from lvsd.errors import IpvsError
from lvsd.ipvs import netlink
from lvsd.ipvs.netlink import (
    _FAMILY_BY_AF,
    _FWD_BY_CODE,
    _HOST_PREFIX,
    _PROTOCOL_BY_NUMBER,
    _SCHED_FLAG_BITS,
    _TUN_BY_CODE,
    IP_VS_SVC_F_ONEPACKET,
    IP_VS_SVC_F_PERSISTENT,
    IPVS_CMD_ATTR_DEST,
    IPVS_CMD_ATTR_SERVICE,
    NetlinkBackend,
    dest_from_nla,
    dest_from_reply,
    encode_netmask,
    reply_attr,
    service_from_nla,
    swap16,
)
from lvsd.model import (
    Destination,
    DestKey,
    DestStats,
    Family,
    Forward,
    Protocol,
    SchedFlag,
    Service,
    ServiceKey,
    Snapshot,
    Stats,
    TunnelType,
    VirtualService,
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
    marshal.msg_map[GENL_ID] = netlink.RawReply
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


def decode_service(reply: bytes) -> tuple[Service, Stats]:
    (msg,) = frame(reply)
    return service_from_nla(reply_attr(msg, IPVS_CMD_ATTR_SERVICE))


def decode_dest(reply: bytes, family: Family = Family.INET) -> tuple[Destination, DestStats]:
    (msg,) = frame(reply)
    return dest_from_nla(reply_attr(msg, IPVS_CMD_ATTR_DEST), family)


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
        netmask = _decode_netmask(family, attrs["IPVS_SVC_ATTR_NETMASK"])
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


def dest_from_attrs(attrs: Mapping[str, Any]) -> Destination:
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


# --- services ---------------------------------------------------------------------------

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

SERVICE_CASES = [
    pytest.param(
        V4 + tcp("192.168.3.108", 80) + svc_tail("wrr", 0, counters=COUNTERS),
        Service(key=VIP), COUNTERS, id="v4-tcp-counters",
    ),
    pytest.param(
        V4 + tcp("192.168.3.108", 80) + svc_tail("rr", 0x1, 300, "255.255.255.0"),
        Service(key=VIP, scheduler="rr", timeout=300, netmask=24), Stats(), id="v4-persistent-24",
    ),
    pytest.param(
        V4 + tcp("192.168.3.108", 80) + svc_tail("wlc", 0x1, 60),
        Service(key=VIP, scheduler="wlc", timeout=60), Stats(), id="v4-persistent-host-mask",
    ),
    pytest.param(
        V4 + tcp("192.168.3.108", 80) + svc_tail("wlc", 0, 300, "255.255.0.0"),
        Service(key=VIP, scheduler="wlc"), Stats(), id="v4-timeout-without-persistent",
    ),
    pytest.param(
        V6 + tcp("2001:db8::108", 53, socket.IPPROTO_UDP)
        + svc_tail("sh", 0x1 | 0x10, 60, encode_netmask(Family.INET6, 64)),
        Service(key=VIP6, scheduler="sh", flags=frozenset({SchedFlag.PORT}), timeout=60,
                netmask=64),
        Stats(), id="v6-udp-persistent-64-sh-port",
    ),
    pytest.param(
        V6 + tcp("2001:db8::108", 53, socket.IPPROTO_UDP)
        + svc_tail("lblcr", 0x1 | 0x4, 10, V6_128),
        Service(key=VIP6, scheduler="lblcr", one_packet=True, timeout=10), Stats(),
        id="v6-ops-persistent-host-prefix",
    ),
    pytest.param(
        V6 + tcp("::ffff:10.1.2.3", 443) + svc_tail("wrr", 0),
        Service(key=ServiceKey.inet(Protocol.TCP, "::ffff:10.1.2.3", 443)), Stats(),
        id="v6-mapped-address",
    ),
    pytest.param(
        V4 + tcp("10.9.9.9", 2905, 132) + svc_tail("mh", 0x8 | 0x10),
        Service(key=ServiceKey.inet(Protocol.SCTP, "10.9.9.9", 2905), scheduler="mh",
                flags=frozenset({SchedFlag.FALLBACK, SchedFlag.PORT})),
        Stats(), id="v4-sctp-mh-fallback-port",
    ),
    pytest.param(
        V4 + mark(7) + svc_tail("mh", 0x10, counters=COUNTERS),
        Service(key=ServiceKey.mark(7), scheduler="mh", flags=frozenset({SchedFlag.PORT})),
        COUNTERS, id="fwmark-v4-mh-port",
    ),
    pytest.param(
        V6 + mark(2**32 - 1) + svc_tail("sh", 0x1 | 0x8, 30, V6_128),
        Service(key=ServiceKey.mark(2**32 - 1, Family.INET6), scheduler="sh",
                flags=frozenset({SchedFlag.FALLBACK}), timeout=30),
        Stats(), id="fwmark-v6-sh-fallback-persistent",
    ),
    pytest.param(
        V4 + tcp("192.168.3.108", 80) + [("IPVS_SVC_ATTR_PE_NAME", "sip")]
        + svc_tail("wrr", 0x1, 120, "255.255.255.0"),
        Service(key=VIP, timeout=120, netmask=24), Stats(), id="v4-sip-persistence-engine",
    ),
    pytest.param(
        V4 + tcp("192.168.3.108", 80) + [("IPVS_SVC_ATTR_SCHED_NAME", "wrr")],
        Service(key=VIP), Stats(), id="v4-old-kernel-no-flags-no-stats",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("attrs", "service", "counters"), SERVICE_CASES)
def test_service_reply(attrs: list[Any], service: Service, counters: Stats) -> None:
    """A dumped service decodes to the expected service and STATS64 counters (HASHED
    ignored, timeout and netmask only with PERSISTENT, the host mask read as 0), and
    to what the conversion through pyroute2 gave."""
    (msg,) = frame(encode_reply(SERVICE, attrs))
    decoded = service_from_nla(reply_attr(msg, IPVS_CMD_ATTR_SERVICE))
    assert (service, counters) == decoded
    assert legacy_service(msg) == decoded


# --- destinations -----------------------------------------------------------------------


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


DEST_CASES = [
    pytest.param(dest_attrs(fwd=0, weight=3), rs(weight=3), DestStats(), id="nat"),
    pytest.param(dest_attrs(fwd=1), rs(), DestStats(), id="localnode-reads-as-nat"),
    pytest.param(dest_attrs(fwd=3, weight=0), rs(weight=0, forward=Forward.DR), DestStats(),
                 id="dr-weight-0"),
    pytest.param(dest_attrs(fwd=0x10 | 3), rs(forward=Forward.DR), DestStats(),
                 id="fwd-method-high-bits-masked"),
    pytest.param(dest_attrs(fwd=2), rs(forward=Forward.TUN, tunnel=TunnelType.IPIP), DestStats(),
                 id="tun-ipip"),
    pytest.param(dest_attrs(fwd=2, tun=(0, 6080)), rs(forward=Forward.TUN, tunnel=TunnelType.IPIP),
                 DestStats(), id="tun-ipip-port-ignored"),
    pytest.param(dest_attrs(fwd=2, tun=(1, 6080)),
                 rs(forward=Forward.TUN, tunnel=TunnelType.GUE, tunnel_port=6080), DestStats(),
                 id="tun-gue-port"),
    pytest.param(dest_attrs(fwd=2, tun=(2, 4754)),
                 rs(forward=Forward.TUN, tunnel=TunnelType.GRE, tunnel_port=4754), DestStats(),
                 id="tun-gre-port"),
    pytest.param(dest_attrs(fwd=2, tun=(7, 1)), rs(forward=Forward.TUN, tunnel=TunnelType.IPIP),
                 DestStats(), id="tun-unknown-type-reads-as-ipip"),
    pytest.param(dest_attrs(fwd=0, tun=(1, 6080)), rs(), DestStats(), id="nat-stray-tunnel"),
    pytest.param(dest_attrs(weight=65535, thresh=(2**32 - 1, 400)),
                 rs(weight=65535, upper_threshold=2**32 - 1, lower_threshold=400), DestStats(),
                 id="thresholds"),
    pytest.param(
        dest_attrs("2001:db8::2", 8080, 3, 7, conns=(4, 5, 6), counters=COUNTERS),
        rs("2001:db8::2", 8080, weight=7, forward=Forward.DR),
        DestStats(active_connections=4, inactive_connections=5, persistent_connections=6,
                  stats=COUNTERS),
        id="v6-dr-counters-above-2**32",
    ),
    pytest.param(dest_attrs("2001:db8::2", 0, 2, tun=(1, 65535)),
                 rs("2001:db8::2", 0, forward=Forward.TUN, tunnel=TunnelType.GUE,
                    tunnel_port=65535),
                 DestStats(), id="v6-tun-gue-port-0"),
    pytest.param(dest_attrs("10.0.0.2", 65535, conns=(2**32 - 1, 0, 1)), rs(port=65535),
                 DestStats(active_connections=2**32 - 1, persistent_connections=1),
                 id="big-numbers"),
    pytest.param(dest_attrs()[:13], rs(), DestStats(),
                 id="old-kernel-no-stats"),
]  # fmt: skip


@pytest.mark.parametrize(("attrs", "dest", "counters"), DEST_CASES)
def test_dest_reply(attrs: list[Any], dest: Destination, counters: DestStats) -> None:
    """A dumped destination decodes to the expected destination and counters (from
    STATS64, never the 32-bit STATS), and to what the conversion through pyroute2 gave."""
    (msg,) = frame(encode_reply(DEST, attrs))
    payload = reply_attr(msg, IPVS_CMD_ATTR_DEST)
    netlink._dest_layouts.clear()
    decoded = dest_from_nla(payload, Family.INET)  # walked, and its layout learned
    assert (dest, counters) == decoded
    assert legacy_dest(msg) == decoded
    assert [len(payload)] == list(netlink._dest_layouts)
    assert decoded == dest_from_nla(payload, Family.INET)  # read through the layout
    assert decoded == netlink._walk_dest(payload, Family.INET)
    assert decoded == dest_from_reply(msg, Family.INET)  # read in place in the buffer


def test_a_reply_of_the_same_length_but_another_shape_is_walked() -> None:
    """A layout reads only replies whose every attribute header matches: one with the
    same length but its attributes in another order is walked, and decodes right."""
    netlink._dest_layouts.clear()
    (first,) = frame(encode_reply(DEST, dest_attrs("10.0.0.2", weight=2)))
    attrs = dest_attrs("10.0.0.3", weight=5)
    swapped = [attrs[1], attrs[0], *attrs[2:]]  # PORT before ADDR: same bytes, moved
    (second,) = frame(encode_reply(DEST, swapped))
    a, b = (reply_attr(m, IPVS_CMD_ATTR_DEST) for m in (first, second))
    assert len(a) == len(b)
    assert rs("10.0.0.2", weight=2) == dest_from_nla(a, Family.INET)[0]
    layout = netlink._dest_layouts[len(a)]
    assert None is layout.read(b)
    assert rs("10.0.0.3", weight=5) == dest_from_nla(b, Family.INET)[0]


# --- what pyroute2's encoder does not write: padding, unknown types, flags, 16-byte v4 --


def test_padding_and_unknown_attributes_are_skipped() -> None:
    """The kernel's PAD attributes and types a newer kernel may add (any length, not
    4-aligned) are skipped, first or last, in a destination and a service."""
    unknown = nla(16, b"") + nla(40, b"\x01\x02\x03\x04\x05") + nla(0, b"")
    dest = splice(splice(encode_reply(DEST, dest_attrs(weight=3)), unknown), unknown, first=True)
    service = splice(encode_reply(SERVICE, V4 + tcp("192.168.3.108", 80) + svc_tail("rr", 0)),
                     nla(13, b"") + nla(99, b"\xff" * 7), first=True)  # fmt: skip
    (d_msg,) = frame(dest)
    (s_msg,) = frame(service)
    expected = ((rs(weight=3), DestStats()), (Service(key=VIP, scheduler="rr"), Stats()))
    decoded = (
        dest_from_nla(reply_attr(d_msg, IPVS_CMD_ATTR_DEST), Family.INET),
        service_from_nla(reply_attr(s_msg, IPVS_CMD_ATTR_SERVICE)),
    )
    assert expected == decoded
    assert (legacy_dest(d_msg), legacy_service(s_msg)) == decoded
    assert expected[0] == dest_from_reply(d_msg, Family.INET)  # not first: found by a walk


def test_nested_and_byte_order_flags_are_masked() -> None:
    """NLA_F_NESTED (0x8000) on the outer attribute and on STATS64, and
    NLA_F_NET_BYTEORDER (0x4000) on a port, do not change the attribute's type."""
    reply = encode_reply(DEST, dest_attrs(counters=COUNTERS), flags=NLA_F_NESTED)
    reply = with_flag(reply, netlink.IPVS_DEST_ATTR_STATS64, NLA_F_NESTED)
    reply = with_flag(reply, netlink.IPVS_DEST_ATTR_PORT, NLA_F_NET_BYTEORDER)
    (msg,) = frame(reply)
    expected = (rs(), DestStats(stats=COUNTERS))
    decoded = dest_from_nla(reply_attr(msg, IPVS_CMD_ATTR_DEST), Family.INET)
    assert expected == decoded
    assert legacy_dest(msg) == decoded


def test_ipv4_address_in_16_bytes_as_the_kernel_sends_it() -> None:
    """The kernel sends an address as a 16-byte ``nf_inet_addr``: for IPv4, the first 4
    bytes count."""
    kernel_addr = nla(netlink.IPVS_DEST_ATTR_ADDR, socket.inet_aton("10.0.0.9") + b"\0" * 12)
    reply = splice(encode_reply(DEST, dest_attrs()[1:]), kernel_addr, first=True)
    (msg,) = frame(reply)
    decoded = dest_from_nla(reply_attr(msg, IPVS_CMD_ATTR_DEST), Family.INET)
    assert (rs("10.0.0.9"), DestStats()) == decoded
    assert legacy_dest(msg) == decoded


@pytest.mark.parametrize(
    ("family", "raw", "address"),
    [(Family.INET, socket.inet_aton("10.0.0.9"), "10.0.0.9"),
     (Family.INET6, socket.inet_pton(socket.AF_INET6, "2001:db8::9"), "2001:db8::9")],
)  # fmt: skip
def test_dest_without_address_family_has_its_services(
    family: Family, raw: bytes, address: str
) -> None:
    """An old kernel sends no IPVS_DEST_ATTR_ADDR_FAMILY: the destination's address is
    of its service's family (pyroute2 could not decode such an address at all)."""
    attrs = [a for a in dest_attrs() if a[0] not in ("IPVS_DEST_ATTR_ADDR",
                                                     "IPVS_DEST_ATTR_ADDR_FAMILY")]  # fmt: skip
    reply = splice(encode_reply(DEST, attrs), nla(netlink.IPVS_DEST_ATTR_ADDR, raw), first=True)
    assert (rs(address), DestStats()) == decode_dest(reply, family)


def test_replies_sharing_a_receive_buffer() -> None:
    """Replies received in one buffer are each read from their own offset."""
    replies = [encode_reply(DEST, dest_attrs(f"10.0.0.{i}", weight=i)) for i in range(1, 4)]
    decoded = [dest_from_nla(reply_attr(m, IPVS_CMD_ATTR_DEST), Family.INET)
               for m in frame(*replies)]  # fmt: skip
    assert [(rs(f"10.0.0.{i}", weight=i), DestStats()) for i in range(1, 4)] == decoded


def test_pyroute2_frames_replies_as_raw_replies_and_still_raises_errors() -> None:
    """With ``RawReply`` registered, pyroute2's marshal yields each IPVS reply with its
    header and bytes only, and still builds an error message itself (the socket raises
    its ``NetlinkError``) and the end of the dump."""
    reply = encode_reply(DEST, dest_attrs(counters=COUNTERS))
    error = struct.pack("=IHHIIi", 36, NLMSG_ERROR, 0, SEQ, 0, -errno.ENOENT) + bytes(16)
    done = struct.pack("=IHHIIi", 20, NLMSG_DONE, NLM_F_MULTI, SEQ, 0, 0)
    first, second, end = frame(reply, error, done)
    assert type(first) is netlink.RawReply
    header = first["header"]
    assert (header["length"], header["type"], header["flags"], header["sequence_number"]) == (
        len(reply),
        GENL_ID,
        NLM_F_MULTI,
        SEQ,
    )
    assert None is header["error"]
    assert (rs(), DestStats(stats=COUNTERS)) == dest_from_nla(
        reply_attr(first, IPVS_CMD_ATTR_DEST), Family.INET
    )
    assert isinstance(second["header"]["error"], NetlinkError)
    assert errno.ENOENT == second["header"]["error"].code
    assert NLMSG_DONE == end["header"]["type"]


def test_attribute_types_are_pyroute2s() -> None:
    """The attribute numbers the decoder reads are the ones pyroute2's tables (and
    include/uapi/linux/ip_vs.h) give those names."""
    tables = {
        "IPVS_CMD_ATTR_": genl.ipvsmsg,
        "IPVS_SVC_ATTR_": genl.ipvsmsg.service,
        "IPVS_DEST_ATTR_": genl.ipvsmsg.dest,
        "IPVS_STATS_ATTR_": genl.ipvsmsg.dest.stats64,
    }
    ours = {name: value for name, value in vars(netlink).items()
            if name.startswith(tuple(tables)) and isinstance(value, int)}  # fmt: skip
    theirs = {
        name: next(i for i, (n, _) in enumerate(table.nla_map) if n == name)
        for name in ours
        for prefix, table in tables.items()
        if name.startswith(prefix)
    }
    assert theirs == ours


# --- malformed replies ------------------------------------------------------------------

GOOD_DEST = dest_attrs(fwd=2, tun=(1, 6080), counters=COUNTERS)


def _dest_payload() -> bytes:
    (msg,) = frame(encode_reply(DEST, GOOD_DEST))
    return reply_attr(msg, IPVS_CMD_ATTR_DEST)


def _without(attrs: list[Any], name: str) -> list[Any]:
    return [a for a in attrs if a[0] != name]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (_dest_payload()[:-6],
         "malformed reply: IPVS_CMD_ATTR_DEST: attribute 12 at byte 196 is 124 bytes long,"
         " 118 left"),
        (_dest_payload() + nla(netlink.IPVS_DEST_ATTR_STATS64,
                               nla(1, b"\0" * 8) + struct.pack("=HH", 2, 2) + b"\0" * 8),
         "malformed reply: IPVS_DEST_ATTR_STATS64: attribute 2 at byte 12 is 2 bytes long,"
         " 12 left"),
        (_dest_payload() + nla(netlink.IPVS_DEST_ATTR_WEIGHT, b"\x01\x00"),
         "malformed reply: IPVS_CMD_ATTR_DEST: IPVS_DEST_ATTR_WEIGHT is 2 bytes, want 4"),
        (_dest_payload() + nla(netlink.IPVS_DEST_ATTR_ADDR, b"\x0a\x00"),
         "malformed reply: IPVS_CMD_ATTR_DEST: IPVS_DEST_ATTR_ADDR is 2 bytes, want 4"),
        (_dest_payload() + nla(netlink.IPVS_DEST_ATTR_TUN_PORT, b"\x01"),
         "malformed reply: IPVS_CMD_ATTR_DEST: IPVS_DEST_ATTR_TUN_PORT is 1 bytes, want 2"),
        (_dest_payload() + nla(netlink.IPVS_DEST_ATTR_ADDR_FAMILY, struct.pack("=H", 7)),
         "malformed reply: IPVS_CMD_ATTR_DEST: IPVS_DEST_ATTR_ADDR_FAMILY 7 is not AF_INET or"
         " AF_INET6"),
        (_dest_payload() + nla(netlink.IPVS_DEST_ATTR_STATS64,
                               nla(netlink.IPVS_STATS_ATTR_INBYTES, b"\0" * 4)),
         "malformed reply: IPVS_DEST_ATTR_STATS64: IPVS_STATS_ATTR_INBYTES is 4 bytes, want 8"),
    ],
    ids=["truncated", "stats-attr-shorter-than-header", "short-u32", "short-address",
         "short-be16", "unknown-family", "short-u64"],
)  # fmt: skip
def test_malformed_dest_is_a_dump_error(payload: bytes, reason: str) -> None:
    """A truncated or malformed attribute fails the dump with the attribute named,
    never with a struct.error."""
    with pytest.raises(IpvsError) as caught:
        dest_from_nla(payload, Family.INET)
    assert ("dump", reason) == (caught.value.op, caught.value.reason)


@pytest.mark.parametrize(
    ("attrs", "reason"),
    [
        (_without(GOOD_DEST, "IPVS_DEST_ATTR_PORT"), "IPVS_CMD_ATTR_DEST: no IPVS_DEST_ATTR_PORT"),
        (_without(GOOD_DEST, "IPVS_DEST_ATTR_ADDR"), "IPVS_CMD_ATTR_DEST: no IPVS_DEST_ATTR_ADDR"),
    ],
    ids=["no-port", "no-address"],
)  # fmt: skip
def test_dest_without_its_key_is_a_dump_error(attrs: list[Any], reason: str) -> None:
    """A destination without its address or port cannot be read."""
    with pytest.raises(IpvsError) as caught:
        decode_dest(encode_reply(DEST, attrs))
    assert ("dump", f"malformed reply: {reason}") == (caught.value.op, caught.value.reason)


@pytest.mark.parametrize(
    ("attrs", "reason"),
    [
        (mark(7) + svc_tail("wrr", 0),
         "IPVS_CMD_ATTR_SERVICE: no IPVS_SVC_ATTR_AF"),
        (V4 + tcp("192.168.3.108", 80, 1) + svc_tail("wrr", 0),
         "IPVS_CMD_ATTR_SERVICE: IPVS_SVC_ATTR_PROTOCOL 1 is not tcp, udp or sctp"),
        (V4 + tcp("192.168.3.108", 80)[:2] + svc_tail("wrr", 0),
         "IPVS_CMD_ATTR_SERVICE: no IPVS_SVC_ATTR_PORT"),
        (V4 + tcp("192.168.3.108", 80) + svc_tail("wrr", 0x1, 60, "255.0.255.0"),
         "IPVS_CMD_ATTR_SERVICE: IPVS_SVC_ATTR_NETMASK 255.0.255.0 is not a mask"),
    ],
    ids=["no-family", "unknown-protocol", "no-port", "not-a-mask"],
)  # fmt: skip
def test_malformed_service_is_a_dump_error(attrs: list[Any], reason: str) -> None:
    """A service the decoder cannot read fails the dump, with the reason."""
    with pytest.raises(IpvsError) as caught:
        decode_service(encode_reply(SERVICE, attrs))
    assert ("dump", f"malformed reply: {reason}") == (caught.value.op, caught.value.reason)


def test_non_utf8_scheduler_is_a_dump_error() -> None:
    """A scheduler name that is not text fails the dump."""
    reply = splice(encode_reply(SERVICE, V4 + tcp("192.168.3.108", 80) + svc_tail("wrr", 0)),
                   nla(netlink.IPVS_SVC_ATTR_SCHED_NAME, b"\xff\0"))  # fmt: skip
    with pytest.raises(IpvsError, match="IPVS_SVC_ATTR_SCHED_NAME is not UTF-8"):
        decode_service(reply)


def test_truncated_reply_is_a_dump_error() -> None:
    """A reply whose outer attribute runs past the message, or that lacks it."""
    reply = bytearray(encode_reply(DEST, dest_attrs()))
    struct.pack_into("=H", reply, 20, len(reply))  # 20 bytes longer than what follows it
    (msg,) = frame(bytes(reply))
    with pytest.raises(IpvsError) as too_long:
        reply_attr(msg, IPVS_CMD_ATTR_DEST)
    # The intact reply's layout learned, a reply cut 8 bytes short whose attribute
    # still says the intact length is not read in place past its end.
    intact = encode_reply(DEST, dest_attrs())
    decode_dest(intact)
    cut = bytearray(intact[:-8])
    struct.pack_into("=I", cut, 0, len(cut))
    (short,) = frame(bytes(cut))
    with pytest.raises(IpvsError, match="malformed reply: reply: attribute 2 at byte 20"):
        dest_from_reply(short, Family.INET)
    (msg,) = frame(encode_reply(DEST, dest_attrs()))
    with pytest.raises(IpvsError) as missing:
        reply_attr(msg, IPVS_CMD_ATTR_SERVICE)
    left = len(reply) - 20
    assert [
        f"malformed reply: reply: attribute 2 at byte 20 is {len(reply)} bytes long, {left} left",
        "malformed reply: reply: no IPVS_CMD_ATTR_SERVICE",
    ] == [too_long.value.reason, missing.value.reason]


# --- through NetlinkBackend._dump ---------------------------------------------------------


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
        family = _FAMILY_BY_AF[fields["af"]]
        if fields.get("fwmark"):
            key = ServiceKey.mark(fields["fwmark"], family)
        else:
            key = ServiceKey.inet(_PROTOCOL_BY_NUMBER[fields["protocol"]], fields["addr"],
                                  fields["port"])  # fmt: skip
        self.dest_dumps.append(key)
        return self.dests.get(key, [])

    def close(self) -> None:
        pass


MARK6 = ServiceKey.mark(9, Family.INET6)
TABLE_SERVICES = {
    VIP: V4 + tcp("192.168.3.108", 80) + svc_tail("wrr", 0, counters=COUNTERS),
    VIP6: V6 + tcp("2001:db8::108", 53, socket.IPPROTO_UDP) + svc_tail("sh", 0x1, 60, V6_128),
    MARK6: V6 + mark(9) + svc_tail("mh", 0x8),
}
TABLE_DESTS = {
    VIP: [dest_attrs("10.0.0.3", weight=2, counters=COUNTERS), dest_attrs("10.0.0.2", fwd=3)],
    VIP6: [dest_attrs("2001:db8::2", 53, fwd=2, tun=(1, 6080), conns=(1, 2, 3))],
    MARK6: [],
}


def _fake() -> FakeDumpIPVS:
    return FakeDumpIPVS(
        [encode_reply(SERVICE, attrs) for attrs in TABLE_SERVICES.values()],
        {key: [encode_reply(DEST, a) for a in dests] for key, dests in TABLE_DESTS.items()},
    )


def _legacy_snapshot(fake: FakeDumpIPVS, keys: frozenset[ServiceKey] | None) -> Snapshot:
    """What ``_dump`` made of the same replies through pyroute2's decoder."""
    table: dict[ServiceKey, VirtualService] = {}
    service_stats: dict[ServiceKey, Stats] = {}
    dest_stats: dict[tuple[ServiceKey, DestKey], DestStats] = {}
    for msg in frame(*fake.services):
        service, counters = legacy_service(msg)
        service_stats[service.key] = counters
        if keys is not None and service.key not in keys:
            continue
        dests = {}
        for d_msg in frame(*fake.dests[service.key]) if fake.dests[service.key] else []:
            dest, d_counters = legacy_dest(d_msg)
            dests[dest.key] = dest
            dest_stats[(service.key, dest.key)] = d_counters
        table[service.key] = VirtualService(
            service=service, destinations={k: dests[k] for k in sorted(dests)}
        )
    return Snapshot(table=table, service_stats=service_stats, dest_stats=dest_stats)


async def test_a_big_service_is_decoded_in_steps() -> None:
    """The replies of a service with many destinations are decoded, then put in
    order, a step of ``DECODE_STEP`` at a time, the event loop running in between; all
    of them, in order."""
    count = 2 * netlink.DECODE_STEP + 10
    addresses = [f"10.1.{n // 250}.{n % 250 + 1}" for n in range(count)]
    fake = FakeDumpIPVS(
        [encode_reply(SERVICE, TABLE_SERVICES[VIP])],
        {VIP: [encode_reply(DEST, dest_attrs(a)) for a in reversed(addresses)]},
    )
    backend = NetlinkBackend()
    backend._ipvs = fake  # the socket is what we fake
    turns = 0

    async def tick() -> None:
        nonlocal turns
        while True:
            await asyncio.sleep(0)
            turns += 1

    ticker = asyncio.create_task(tick())
    await asyncio.sleep(0)  # the ticker is waiting for its next turn
    start = turns
    snapshot = await backend.dump()
    during = turns - start
    ticker.cancel()
    await asyncio.gather(ticker, return_exceptions=True)
    assert [DestKey.of(a, 80) for a in addresses] == list(snapshot.table[VIP].destinations)
    assert 2 + 2 == during  # 266 decoded: after 128 and 256; ordered: before 128 and 256


async def test_dump_reads_the_whole_table() -> None:
    """``dump()`` decodes every service and its destinations (sorted), with counters,
    as the conversion through pyroute2 did."""
    fake = _fake()
    backend = NetlinkBackend()
    backend._ipvs = fake  # the socket is what we fake
    snapshot = await backend.dump()
    vip6_dest = rs("2001:db8::2", 53, forward=Forward.TUN, tunnel=TunnelType.GUE,
                   tunnel_port=6080)  # fmt: skip
    expected_table = {
        VIP: VirtualService(
            service=Service(key=VIP),
            destinations={DestKey.of("10.0.0.2", 80): rs("10.0.0.2", forward=Forward.DR),
                          DestKey.of("10.0.0.3", 80): rs("10.0.0.3", weight=2)},
        ),
        VIP6: VirtualService(
            service=Service(key=VIP6, scheduler="sh", timeout=60),
            destinations={vip6_dest.key: vip6_dest},
        ),
        MARK6: VirtualService(
            service=Service(key=MARK6, scheduler="mh", flags=frozenset({SchedFlag.FALLBACK})),
            destinations={},
        ),
    }  # fmt: skip
    assert expected_table == snapshot.table
    assert list(expected_table[VIP].destinations) == list(snapshot.table[VIP].destinations)
    assert {VIP: COUNTERS, VIP6: Stats(), MARK6: Stats()} == snapshot.service_stats
    expected_dest_stats = {
        (VIP, DestKey.of("10.0.0.3", 80)): DestStats(stats=COUNTERS),
        (VIP, DestKey.of("10.0.0.2", 80)): DestStats(),
        (VIP6, vip6_dest.key): DestStats(
            active_connections=1, inactive_connections=2, persistent_connections=3
        ),
    }
    assert expected_dest_stats == snapshot.dest_stats
    assert _legacy_snapshot(fake, None) == snapshot


async def test_dump_services_reads_only_the_destinations_asked_for() -> None:
    """``dump_services(keys)`` still reads every service (all in ``service_stats``) but
    the destinations of the services in ``keys`` only."""
    fake = _fake()
    backend = NetlinkBackend()
    backend._ipvs = fake  # the socket is what we fake
    snapshot = await backend.dump_services([VIP6, ServiceKey.mark(1)])
    assert [VIP6] == fake.dest_dumps
    assert ([VIP6], {VIP, VIP6, MARK6}) == (list(snapshot.table), set(snapshot.service_stats))
    assert _legacy_snapshot(fake, frozenset({VIP6})) == snapshot


async def test_dump_with_a_malformed_reply_fails_as_a_dump_error() -> None:
    """A reply the decoder cannot read fails the dump with ``IpvsError("dump", ...)``."""
    fake = _fake()
    fake.dests[VIP] = [truncate(encode_reply(DEST, dest_attrs()), 8)]
    backend = NetlinkBackend()
    backend._ipvs = fake  # the socket is what we fake
    with pytest.raises(IpvsError) as caught:
        await backend.dump()
    reason = "malformed reply: IPVS_CMD_ATTR_DEST: attribute 12 at byte 196 is 124 bytes long,"
    assert ("dump", f"{reason} 116 left") == (caught.value.op, caught.value.reason)


def test_an_unchanged_destination_is_not_built_again() -> None:
    """The second dump of an unchanged destination reuses its ``Destination`` (the
    counters are read anew); another weight is another destination; the cache is
    emptied when full."""
    netlink._dest_cache.clear()

    def decode(weight: int, conns: int) -> tuple[Destination, DestStats]:
        counters = Stats(connections=conns)
        (msg,) = frame(encode_reply(DEST, dest_attrs(weight=weight, counters=counters)))
        return dest_from_nla(reply_attr(msg, IPVS_CMD_ATTR_DEST), Family.INET)

    first, again, heavier = decode(1, 5), decode(1, 9), decode(2, 9)
    assert first[0] is again[0]
    assert (5, 9) == (first[1].stats.connections, again[1].stats.connections)
    assert rs(weight=2) == heavier[0]
    assert 2 == len(netlink._dest_cache)
    netlink._dest_cache.update((("filler", i), first[0]) for i in range(netlink.DEST_CACHE_MAX))
    assert rs(weight=3) == decode(3, 0)[0]
    assert 1 == len(netlink._dest_cache)
