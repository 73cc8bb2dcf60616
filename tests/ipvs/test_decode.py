"""Table tests of the dump decoder: reply bytes -> model, without a kernel.

The replies are built and framed as the socket frames them (``tests/ipvs/replies.py``),
then decoded twice: by ``lvsd.ipvs.decode`` and by the conversion lvsd used before it
decoded replies itself (the oracle, in the same helpers). Both must give the same
model, and the model must be the one expected.
"""

from __future__ import annotations

import errno
import socket
import struct
from typing import Any

import pytest
from pyroute2.netlink import (
    NLA_F_NESTED,
    NLA_F_NET_BYTEORDER,
    NLM_F_MULTI,
    NLMSG_DONE,
    NLMSG_ERROR,
)
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.generic import ipvs as genl

from lvsd.errors import IpvsError
from lvsd.ipvs import decode as decoder
from lvsd.ipvs import uapi
from lvsd.ipvs.decode import dest_from_nla, dest_from_reply, reply_attr, service_from_nla
from lvsd.ipvs.encode import encode_netmask
from lvsd.ipvs.uapi import IPVS_CMD_ATTR_DEST, IPVS_CMD_ATTR_SERVICE
from lvsd.model import (
    Destination,
    DestStats,
    Family,
    Forward,
    Protocol,
    SchedFlag,
    Service,
    ServiceKey,
    Stats,
    TunnelType,
)
from tests.ipvs.replies import (
    COUNTERS,
    DEST,
    GENL_ID,
    SEQ,
    SERVICE,
    V4,
    V6,
    V6_128,
    VIP,
    VIP6,
    dest_attrs,
    encode_reply,
    frame,
    legacy_dest,
    legacy_service,
    mark,
    nla,
    rs,
    splice,
    svc_tail,
    tcp,
    with_flag,
)


def decode_service(reply: bytes) -> tuple[Service, Stats]:
    (msg,) = frame(reply)
    return service_from_nla(reply_attr(msg, IPVS_CMD_ATTR_SERVICE))


def decode_dest(reply: bytes, family: Family = Family.INET) -> tuple[Destination, DestStats]:
    (msg,) = frame(reply)
    return dest_from_nla(reply_attr(msg, IPVS_CMD_ATTR_DEST), family)


# --- services ---------------------------------------------------------------------------

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
    decoder._dest_layouts.clear()
    decoded = dest_from_nla(payload, Family.INET)  # walked, and its layout learned
    assert (dest, counters) == decoded
    assert legacy_dest(msg) == decoded
    assert [len(payload)] == list(decoder._dest_layouts)
    assert decoded == dest_from_nla(payload, Family.INET)  # read through the layout
    assert decoded == decoder._walk_dest(payload, Family.INET)
    assert decoded == dest_from_reply(msg, Family.INET)  # read in place in the buffer


def test_a_reply_of_the_same_length_but_another_shape_is_walked() -> None:
    """A layout reads only replies whose every attribute header matches: one with the
    same length but its attributes in another order is walked, and decodes right."""
    decoder._dest_layouts.clear()
    (first,) = frame(encode_reply(DEST, dest_attrs("10.0.0.2", weight=2)))
    attrs = dest_attrs("10.0.0.3", weight=5)
    swapped = [attrs[1], attrs[0], *attrs[2:]]  # PORT before ADDR: same bytes, moved
    (second,) = frame(encode_reply(DEST, swapped))
    a, b = (reply_attr(m, IPVS_CMD_ATTR_DEST) for m in (first, second))
    assert len(a) == len(b)
    assert rs("10.0.0.2", weight=2) == dest_from_nla(a, Family.INET)[0]
    layout = decoder._dest_layouts[len(a)]
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
    reply = with_flag(reply, uapi.IPVS_DEST_ATTR_STATS64, NLA_F_NESTED)
    reply = with_flag(reply, uapi.IPVS_DEST_ATTR_PORT, NLA_F_NET_BYTEORDER)
    (msg,) = frame(reply)
    expected = (rs(), DestStats(stats=COUNTERS))
    decoded = dest_from_nla(reply_attr(msg, IPVS_CMD_ATTR_DEST), Family.INET)
    assert expected == decoded
    assert legacy_dest(msg) == decoded


def test_ipv4_address_in_16_bytes_as_the_kernel_sends_it() -> None:
    """The kernel sends an address as a 16-byte ``nf_inet_addr``: for IPv4, the first 4
    bytes count."""
    kernel_addr = nla(uapi.IPVS_DEST_ATTR_ADDR, socket.inet_aton("10.0.0.9") + b"\0" * 12)
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
    reply = splice(encode_reply(DEST, attrs), nla(uapi.IPVS_DEST_ATTR_ADDR, raw), first=True)
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
    assert type(first) is decoder.RawReply
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
    ours = {name: value for name, value in vars(uapi).items()
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
        (_dest_payload() + nla(uapi.IPVS_DEST_ATTR_STATS64,
                               nla(1, b"\0" * 8) + struct.pack("=HH", 2, 2) + b"\0" * 8),
         "malformed reply: IPVS_DEST_ATTR_STATS64: attribute 2 at byte 12 is 2 bytes long,"
         " 12 left"),
        (_dest_payload() + nla(uapi.IPVS_DEST_ATTR_WEIGHT, b"\x01\x00"),
         "malformed reply: IPVS_CMD_ATTR_DEST: IPVS_DEST_ATTR_WEIGHT is 2 bytes, want 4"),
        (_dest_payload() + nla(uapi.IPVS_DEST_ATTR_ADDR, b"\x0a\x00"),
         "malformed reply: IPVS_CMD_ATTR_DEST: IPVS_DEST_ATTR_ADDR is 2 bytes, want 4"),
        (_dest_payload() + nla(uapi.IPVS_DEST_ATTR_TUN_PORT, b"\x01"),
         "malformed reply: IPVS_CMD_ATTR_DEST: IPVS_DEST_ATTR_TUN_PORT is 1 bytes, want 2"),
        (_dest_payload() + nla(uapi.IPVS_DEST_ATTR_ADDR_FAMILY, struct.pack("=H", 7)),
         "malformed reply: IPVS_CMD_ATTR_DEST: IPVS_DEST_ATTR_ADDR_FAMILY 7 is not AF_INET or"
         " AF_INET6"),
        (_dest_payload() + nla(uapi.IPVS_DEST_ATTR_STATS64,
                               nla(uapi.IPVS_STATS_ATTR_INBYTES, b"\0" * 4)),
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
                   nla(uapi.IPVS_SVC_ATTR_SCHED_NAME, b"\xff\0"))  # fmt: skip
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


def test_an_unchanged_destination_is_not_built_again() -> None:
    """The second dump of an unchanged destination reuses its ``Destination`` (the
    counters are read anew); another weight is another destination; the cache is
    emptied when full."""
    decoder._dest_cache.clear()

    def decode(weight: int, conns: int) -> tuple[Destination, DestStats]:
        counters = Stats(connections=conns)
        (msg,) = frame(encode_reply(DEST, dest_attrs(weight=weight, counters=counters)))
        return dest_from_nla(reply_attr(msg, IPVS_CMD_ATTR_DEST), Family.INET)

    first, again, heavier = decode(1, 5), decode(1, 9), decode(2, 9)
    assert first[0] is again[0]
    assert (5, 9) == (first[1].stats.connections, again[1].stats.connections)
    assert rs(weight=2) == heavier[0]
    assert 2 == len(decoder._dest_cache)
    decoder._dest_cache.update((("filler", i), first[0]) for i in range(decoder.DEST_CACHE_MAX))
    assert rs(weight=3) == decode(3, 0)[0]
    assert 1 == len(decoder._dest_cache)
