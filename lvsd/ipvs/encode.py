"""lvsd's model as the request fields pyroute2 encodes (``IPVSService``, ``IPVSDest``).

Pure: no I/O; table-tested without a kernel in tests/ipvs/test_encode.py. Encoding
quirks handled here (checked against a 6.1 kernel in the lab):

* the kernel refuses a service without ``IPVS_SVC_ATTR_NETMASK``. For IPv4 it is a
  dotted mask; for IPv6 it is the prefix length as a host-order u32, which pyroute2
  only encodes as a dotted quad (``ip4addr``), so 128 is sent as the four bytes of
  the u32 128 in host order (``128.0.0.0`` on x86);
* ``IPVS_DEST_ATTR_TUN_PORT`` is big-endian in the kernel but pyroute2 encodes it as
  a host-order u16, so the port is byte-swapped on the way out.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
from typing import Any

from lvsd.ipvs.base import Timeouts
from lvsd.ipvs.uapi import (
    AF,
    FWD_CODES,
    HOST_PREFIX,
    IP_VS_SVC_F_ONEPACKET,
    IP_VS_SVC_F_PERSISTENT,
    IPVS_CMD_ATTR_TIMEOUT_TCP,
    IPVS_CMD_ATTR_TIMEOUT_TCP_FIN,
    IPVS_CMD_ATTR_TIMEOUT_UDP,
    PROTO,
    SCHED_FLAG_BITS,
    TUN_CODES,
)
from lvsd.model import Destination, Family, Forward, Op, OpKind, Service, ServiceKey, TunnelType


def encode_netmask(family: Family, prefix: int) -> str:
    """``IPVS_SVC_ATTR_NETMASK`` as pyroute2's ``ip4addr`` text.

    ``prefix`` 0 means the host prefix. IPv4: the dotted mask (``255.255.255.0``).
    IPv6: the prefix length as a host-order u32, spelled as the dotted quad of its
    bytes (``128.0.0.0`` for 128 on a little-endian host).
    """
    host = HOST_PREFIX[family]
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
        return {"af": AF[key.family], "fwmark": key.fwmark}
    assert key.protocol is not None
    assert key.address is not None
    return {
        "af": AF[key.family],
        "protocol": PROTO[key.protocol],
        "addr": key.address,
        "port": key.port,
    }


def service_flags(service: Service) -> int:
    """The ``IP_VS_SVC_F_*`` word of ``service``."""
    flags = 0
    if service.timeout:
        flags |= IP_VS_SVC_F_PERSISTENT
    if service.one_packet:
        flags |= IP_VS_SVC_F_ONEPACKET
    for flag in service.flags:
        flags |= SCHED_FLAG_BITS[flag]
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
        "fwd_method": FWD_CODES[dest.forward],
        "weight": dest.weight,
        "u_thresh": dest.upper_threshold,
        "l_thresh": dest.lower_threshold,
        "tun_type": TUN_CODES[tunnel],
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


def timeout_attrs(timeouts: Timeouts) -> list[tuple[int, int]]:
    """The (attribute, seconds) pairs of an ``IPVS_CMD_SET_CONFIG`` request. Each must
    be above 0: the kernel takes 0 as "leave this one alone"."""
    pairs = [
        (IPVS_CMD_ATTR_TIMEOUT_TCP, timeouts.tcp),
        (IPVS_CMD_ATTR_TIMEOUT_TCP_FIN, timeouts.tcp_fin),
        (IPVS_CMD_ATTR_TIMEOUT_UDP, timeouts.udp),
    ]
    for _, seconds in pairs:
        if not 1 <= seconds <= 0xFFFFFFFF:
            raise ValueError(f"timeout {seconds} out of range ({timeouts})")
    return pairs


__all__ = [
    "dest_fields",
    "encode_netmask",
    "request_for",
    "service_fields",
    "service_key_fields",
    "swap16",
    "timeout_attrs",
]
