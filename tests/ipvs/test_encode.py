"""Table tests of the request encoder (model -> pyroute2 fields -> bytes -> model), on
the host.

The kernel round trip is tested in tests/lab; here the messages are encoded by
pyroute2 itself and read back by lvsd's decoder, so the byte-level quirks (IPv6
netmask, tunnel port) are checked without a kernel. The decoding of dump replies
has its own tables in test_decode.py.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Sequence
from typing import Any

import pytest
from pyroute2.ipvs import IPVSDest, IPVSService
from pyroute2.netlink.generic import ipvs as genl

from lvsd.ipvs import encode
from lvsd.ipvs.decode import dest_from_nla, reply_attr, service_from_nla
from lvsd.ipvs.encode import dest_fields, encode_netmask, request_for, service_fields
from lvsd.ipvs.uapi import IPVS_CMD_ATTR_DEST, IPVS_CMD_ATTR_SERVICE
from lvsd.model import (
    Destination,
    Family,
    Forward,
    Op,
    OpKind,
    Protocol,
    SchedFlag,
    Scheduler,
    Service,
    ServiceKey,
    TunnelType,
)
from tests.ipvs.replies import VIP, VIP6

RS = Destination(address="10.0.0.2", port=80)


def _wire(kind: str, fields: dict[str, Any]) -> genl.ipvsmsg:
    """Encode ``fields`` as pyroute2 would send them, and frame the bytes again."""
    msg = genl.ipvsmsg()
    msg["cmd"] = genl.IPVS_CMD_NEW_SERVICE
    msg["version"] = genl.GENL_VERSION
    if kind == "service":
        msg["attrs"] = [("IPVS_CMD_ATTR_SERVICE", IPVSService(**fields).dump_nla())]
    else:
        msg["attrs"] = [("IPVS_CMD_ATTR_DEST", IPVSDest(**fields).dump_nla())]
    msg.encode()
    decoded = genl.ipvsmsg(msg.data)
    decoded.decode()
    return decoded


def _attr_bytes(data: bytes, nla_type: int, start: int) -> bytes:
    """The payload of the first NLA of ``nla_type`` in nested attributes from ``start``."""
    offset = start
    while offset < len(data):
        length = int.from_bytes(data[offset : offset + 2], sys.byteorder)
        kind = int.from_bytes(data[offset + 2 : offset + 4], sys.byteorder) & 0x3FFF
        if kind == nla_type:
            return data[offset + 4 : offset + length]
        offset += (length + 3) & ~3
    raise AssertionError(f"attribute {nla_type} not found")


def _nested_payload(fields: dict[str, Any], kind: str, attr: int) -> bytes:
    msg = genl.ipvsmsg()
    msg["cmd"] = genl.IPVS_CMD_NEW_SERVICE
    msg["version"] = genl.GENL_VERSION
    nla = IPVSService(**fields) if kind == "service" else IPVSDest(**fields)
    name = "IPVS_CMD_ATTR_SERVICE" if kind == "service" else "IPVS_CMD_ATTR_DEST"
    msg["attrs"] = [(name, nla.dump_nla())]
    msg.encode()
    data = bytes(msg.data)
    # nlmsghdr (16) + genlmsghdr (4) + the outer NLA header (4)
    return _attr_bytes(data, attr, 24)


# --- netmask -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("family", "prefix", "expected"),
    [
        (Family.INET, 0, "255.255.255.255"),
        (Family.INET, 32, "255.255.255.255"),
        (Family.INET, 24, "255.255.255.0"),
        (Family.INET, 1, "128.0.0.0"),
    ],
)
def test_ipv4_netmask_is_a_dotted_mask(family: Family, prefix: int, expected: str) -> None:
    """An IPv4 persistence netmask goes out as the dotted mask of the prefix; 0 is /32."""
    assert expected == encode_netmask(family, prefix)


@pytest.mark.parametrize(("prefix", "length"), [(0, 128), (128, 128), (64, 64), (48, 48)])
def test_ipv6_netmask_is_the_prefix_length_as_host_order_u32(prefix: int, length: int) -> None:
    """On the wire, an IPv6 service's NETMASK is the prefix length as a host-order u32
    (0 in lvsd's model means the host prefix, 128)."""
    svc = Service(key=VIP6, scheduler="wrr", timeout=60, netmask=prefix)
    payload = _nested_payload(service_fields(svc), "service", 9)  # IPVS_SVC_ATTR_NETMASK
    assert length.to_bytes(4, sys.byteorder) == payload


def test_netmask_out_of_range_is_refused() -> None:
    """A prefix longer than the family's address cannot be encoded."""
    with pytest.raises(ValueError, match="out of range"):
        encode_netmask(Family.INET, 33)


def test_service_without_persistence_still_sends_the_host_netmask() -> None:
    """The kernel refuses a service without a netmask, so one is always sent (the host
    mask when not persistent, whatever the model's netmask says)."""
    fields = service_fields(Service(key=VIP6, netmask=64))
    expected = 128
    assert expected == int.from_bytes(socket.inet_aton(fields["netmask"]), sys.byteorder)


# --- service fields ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("service", "expected"),
    [
        (
            Service(key=VIP),
            {"af": 2, "protocol": 6, "addr": "192.168.3.108", "port": 80, "sched_name": "wrr",
             "flags": 0, "timeout": 0, "netmask": "255.255.255.255"},
        ),
        (
            Service(key=VIP, scheduler="rr", timeout=300, netmask=24),
            {"af": 2, "protocol": 6, "addr": "192.168.3.108", "port": 80, "sched_name": "rr",
             "flags": 0x1, "timeout": 300, "netmask": "255.255.255.0"},
        ),
        (
            Service(key=ServiceKey.inet(Protocol.UDP, "10.1.1.1", 53), one_packet=True),
            {"af": 2, "protocol": 17, "addr": "10.1.1.1", "port": 53, "sched_name": "wrr",
             "flags": 0x4, "timeout": 0, "netmask": "255.255.255.255"},
        ),
        (
            Service(
                key=ServiceKey.inet(Protocol.SCTP, "10.1.1.1", 9),
                scheduler="sh",
                flags=frozenset({SchedFlag.FALLBACK}),
            ),
            {"af": 2, "protocol": 132, "addr": "10.1.1.1", "port": 9, "sched_name": "sh",
             "flags": 0x8, "timeout": 0, "netmask": "255.255.255.255"},
        ),
        (
            Service(key=ServiceKey.mark(7), scheduler="mh", flags=frozenset({SchedFlag.PORT})),
            {"af": 2, "fwmark": 7, "sched_name": "mh", "flags": 0x10, "timeout": 0,
             "netmask": "255.255.255.255"},
        ),
        (
            Service(
                key=ServiceKey.mark(9, Family.INET6),
                scheduler="sh",
                flags=frozenset({SchedFlag.FALLBACK, SchedFlag.PORT}),
                timeout=10,
            ),
            {"af": 10, "fwmark": 9, "sched_name": "sh", "flags": 0x19, "timeout": 10,
             "netmask": encode_netmask(Family.INET6, 128)},
        ),
    ],
    ids=["plain", "persistent", "udp-ops", "sctp-fallback", "fwmark-port", "fwmark6-all"],
)  # fmt: skip
def test_service_fields(service: Service, expected: dict[str, Any]) -> None:
    """Each service becomes the request fields the kernel expects (flags as a word
    with a full mask: PERSISTENT 0x1, ONEPACKET 0x4, SCHED1 0x8, SCHED2 0x10)."""
    fields = service_fields(service)
    flags = fields.pop("flags")
    full_mask = 0xFFFFFFFF
    assert full_mask == flags["mask"]
    fields["flags"] = flags["flags"]
    assert expected == fields


@pytest.mark.parametrize("scheduler", [s.value for s in Scheduler])
def test_every_scheduler_name_goes_out_as_is(scheduler: str) -> None:
    """The scheduler name is sent verbatim (the kernel loads ip_vs_<name>)."""
    assert scheduler == service_fields(Service(key=VIP, scheduler=scheduler))["sched_name"]


# --- destination fields ------------------------------------------------------------


@pytest.mark.parametrize(
    ("dest", "fwd", "tun_type", "tun_port"),
    [
        (RS, 0, 0, 0),
        (Destination(address="10.0.0.2", port=80, forward=Forward.DR), 3, 0, 0),
        (Destination(address="10.0.0.2", port=80, forward=Forward.TUN), 2, 0, 0),
        (
            Destination(address="10.0.0.2", port=80, forward=Forward.TUN, tunnel=TunnelType.GUE,
                        tunnel_port=6080),
            2, 1, 6080,
        ),
        (
            Destination(address="10.0.0.2", port=80, forward=Forward.TUN, tunnel=TunnelType.GRE),
            2, 2, 0,
        ),
        (
            # a tunnel on a non-tun destination means nothing and is not sent
            Destination(address="10.0.0.2", port=80, tunnel=TunnelType.GUE, tunnel_port=5),
            0, 0, 0,
        ),
    ],
    ids=["nat", "dr", "tun-ipip", "tun-gue", "tun-gre", "nat-stray-tunnel"],
)  # fmt: skip
def test_dest_forwarding_and_tunnel(
    dest: Destination, fwd: int, tun_type: int, tun_port: int
) -> None:
    """Forwarding method nat 0 / tun 2 / dr 3, tunnel type ipip 0 / gue 1 / gre 2, and
    the tunnel port (host order here; see the wire test for its byte order)."""
    fields = dest_fields(dest)
    assert (fwd, tun_type, tun_port) == (
        fields["fwd_method"],
        fields["tun_type"],
        encode.swap16(fields["tun_port"]),
    )


def test_dest_weight_and_thresholds() -> None:
    """Weight and connection thresholds are sent as they are."""
    dest = Destination(
        address="2001:db8::2", port=8080, weight=7, upper_threshold=500, lower_threshold=400
    )
    fields = dest_fields(dest)
    expected = (10, "2001:db8::2", 8080, 7, 500, 400)
    assert expected == (
        fields["addr_family"],
        fields["addr"],
        fields["port"],
        fields["weight"],
        fields["u_thresh"],
        fields["l_thresh"],
    )


def test_tunnel_port_is_big_endian_on_the_wire() -> None:
    """The kernel reads IPVS_DEST_ATTR_TUN_PORT as be16 (pyroute2 writes a host u16)."""
    dest = Destination(
        address="10.0.0.2", port=80, forward=Forward.TUN, tunnel=TunnelType.GUE, tunnel_port=6080
    )
    payload = _nested_payload(dest_fields(dest), "dest", 14)  # IPVS_DEST_ATTR_TUN_PORT
    assert (6080).to_bytes(2, "big") == payload[:2]


# --- round trip through pyroute2's encoder and lvsd's decoder --------------------------------

ROUND_TRIP_SERVICES = [
    Service(key=VIP),
    Service(key=VIP, scheduler="rr", timeout=300, netmask=24),
    Service(key=VIP6, scheduler="sh", flags=frozenset({SchedFlag.PORT}), timeout=60, netmask=64),
    Service(key=VIP6, scheduler="lblcr", one_packet=True),
    Service(key=ServiceKey.inet(Protocol.SCTP, "10.9.9.9", 2905), scheduler="mh"),
    Service(key=ServiceKey.mark(1), scheduler="wlc", timeout=30),
    Service(key=ServiceKey.mark(2**32 - 1, Family.INET6), scheduler="fo"),
]


@pytest.mark.parametrize("service", ROUND_TRIP_SERVICES, ids=str)
def test_service_round_trip_through_pyroute2(service: Service) -> None:
    """model -> request fields -> bytes -> decoded attributes -> the same model."""
    decoded = _wire("service", service_fields(service))
    assert service == service_from_nla(reply_attr(decoded, IPVS_CMD_ATTR_SERVICE))[0]


ROUND_TRIP_DESTS = [
    RS,
    Destination(address="10.0.0.3", port=8080, weight=0, forward=Forward.DR),
    Destination(address="2001:db8::2", port=0, weight=65535, forward=Forward.TUN),
    Destination(address="10.0.0.4", port=80, forward=Forward.TUN, tunnel=TunnelType.GUE,
                tunnel_port=6080, upper_threshold=10, lower_threshold=5),
]  # fmt: skip


@pytest.mark.parametrize("dest", ROUND_TRIP_DESTS, ids=str)
def test_dest_round_trip_through_pyroute2(dest: Destination) -> None:
    """model -> request fields -> bytes -> decoded attributes -> the same model."""
    decoded = _wire("dest", dest_fields(dest))
    expected = dest
    if dest.forward is Forward.TUN and dest.tunnel is None:
        expected = Destination(
            address=dest.address, port=dest.port, weight=dest.weight, forward=Forward.TUN,
            tunnel=TunnelType.IPIP,
        )  # fmt: skip
    assert expected == dest_from_nla(reply_attr(decoded, IPVS_CMD_ATTR_DEST), Family.INET)[0]


# --- requests ----------------------------------------------------------------------

SVC = Service(key=VIP, scheduler="wrr")


@pytest.mark.parametrize(
    ("kind", "command", "dest_keys"),
    [
        (OpKind.ADD_SERVICE, "add", None),
        (OpKind.EDIT_SERVICE, "set", None),
        (OpKind.DEL_SERVICE, "del", None),
        (OpKind.ADD_DEST, "add", "full"),
        (OpKind.EDIT_DEST, "set", "full"),
        (OpKind.DEL_DEST, "del", "key"),
    ],
)
def test_request_for_each_op(kind: OpKind, command: str, dest_keys: str | None) -> None:
    """Each op kind maps to one pyroute2 command; edits use ``set`` (never ``update``,
    which pyroute2 maps to a delete); deletes send only the identifying fields."""
    dest = RS if kind in (OpKind.ADD_DEST, OpKind.EDIT_DEST, OpKind.DEL_DEST) else None
    cmd, svc_fields, d_fields = request_for(Op(kind=kind, service=SVC, dest=dest))
    expected_dest: Sequence[str] | None = {
        None: None,
        "key": ["addr", "addr_family", "port"],
        "full": sorted(dest_fields(RS)),
    }[dest_keys]
    service_keys = (
        sorted(service_fields(SVC)) if kind in (OpKind.ADD_SERVICE, OpKind.EDIT_SERVICE) else
        ["addr", "af", "port", "protocol"]
    )  # fmt: skip
    assert (command, service_keys, expected_dest) == (
        cmd,
        sorted(svc_fields),
        sorted(d_fields) if d_fields is not None else None,
    )
