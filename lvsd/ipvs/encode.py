"""lvsd's model as the request fields pyroute2 encodes (``IPVSService``, ``IPVSDest``).

Pure: no I/O; table-tested without a kernel in tests/ipvs/test_encode.py. Encoding
quirks handled here (checked against a 6.1 kernel in the lab):

* the kernel refuses a service without ``IPVS_SVC_ATTR_NETMASK``. For IPv4 it is a
  dotted mask; for IPv6 it is the prefix length as a host-order u32, which pyroute2
  only encodes as a dotted quad (``ip4addr``), so 128 is sent as the four bytes of
  the u32 128 in host order (``128.0.0.0`` on x86);
* ``IPVS_DEST_ATTR_TUN_PORT`` is big-endian in the kernel but pyroute2 encodes it as
  a host-order u16, so the port is byte-swapped on the way out;
* pyroute2 has no layout for ``IPVS_CMD_ATTR_DAEMON`` (it passes the payload through
  as bytes), so a sync daemon's attributes are packed here (:func:`daemon_nla`).
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
    IPVS_DAEMON_ATTR_MCAST_GROUP,
    IPVS_DAEMON_ATTR_MCAST_GROUP6,
    IPVS_DAEMON_ATTR_MCAST_IFN,
    IPVS_DAEMON_ATTR_MCAST_PORT,
    IPVS_DAEMON_ATTR_MCAST_TTL,
    IPVS_DAEMON_ATTR_STATE,
    IPVS_DAEMON_ATTR_SYNC_ID,
    IPVS_DAEMON_ATTR_SYNC_MAXLEN,
    PROTO,
    SCHED_FLAG_BITS,
    SYNC_STATE_CODES,
    TUN_CODES,
)
from lvsd.model import (
    Destination,
    Family,
    Forward,
    Op,
    OpKind,
    Service,
    ServiceKey,
    SyncDaemon,
    SyncState,
    TunnelType,
)


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


def _nla(kind: int, payload: bytes) -> bytes:
    """One netlink attribute: its header, ``payload``, and padding to 4 bytes."""
    data = struct.pack("=HH", 4 + len(payload), kind) + payload
    return data + b"\0" * (-len(data) % 4)


def daemon_state_nla(state: SyncState) -> bytes:
    """The ``IPVS_CMD_ATTR_DAEMON`` payload of a ``DEL_DAEMON`` request (the state alone)."""
    return _nla(IPVS_DAEMON_ATTR_STATE, struct.pack("=I", SYNC_STATE_CODES[state]))


def daemon_nla(daemon: SyncDaemon) -> bytes:
    """The ``IPVS_CMD_ATTR_DAEMON`` payload of a ``NEW_DAEMON`` request for ``daemon``;
    an optional field left at 0 or "" is not sent (the kernel picks its default)."""
    name = daemon.interface.encode()
    if not name or len(name) > 15 or b"\0" in name:
        raise ValueError(f"interface name {daemon.interface!r}: 1 to 15 bytes")
    data = daemon_state_nla(daemon.state)
    data += _nla(IPVS_DAEMON_ATTR_MCAST_IFN, name + b"\0")
    data += _nla(IPVS_DAEMON_ATTR_SYNC_ID, struct.pack("=I", daemon.syncid))
    if daemon.maxlen:
        data += _nla(IPVS_DAEMON_ATTR_SYNC_MAXLEN, struct.pack("=H", daemon.maxlen))
    if daemon.group:
        group = ipaddress.ip_address(daemon.group)
        kind = IPVS_DAEMON_ATTR_MCAST_GROUP if group.version == 4 else IPVS_DAEMON_ATTR_MCAST_GROUP6
        data += _nla(kind, group.packed)
    if daemon.port:
        data += _nla(IPVS_DAEMON_ATTR_MCAST_PORT, struct.pack("=H", daemon.port))
    if daemon.ttl:
        data += _nla(IPVS_DAEMON_ATTR_MCAST_TTL, struct.pack("=B", daemon.ttl))
    return data


__all__ = [
    "daemon_nla",
    "daemon_state_nla",
    "dest_fields",
    "encode_netmask",
    "request_for",
    "service_fields",
    "service_key_fields",
    "swap16",
    "timeout_attrs",
]
