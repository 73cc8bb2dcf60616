"""The kernel's IPVS netlink constants (include/uapi/linux/ip_vs.h), and the tables
between lvsd's enums and the kernel's codes.

Pure: no I/O, no pyroute2. The attribute numbers are checked against pyroute2's
tables of the same names in tests/ipvs/test_decode.py.
"""

from __future__ import annotations

import socket

from lvsd.model import Family, Forward, Protocol, SchedFlag, TunnelType

# --- service flags (struct ip_vs_flags) ------------------------------------------------

IP_VS_SVC_F_PERSISTENT = 0x0001
IP_VS_SVC_F_HASHED = 0x0002  # kernel-internal, shows in dumps (ignored; kept as the uapi)
IP_VS_SVC_F_ONEPACKET = 0x0004
IP_VS_SVC_F_SCHED1 = 0x0008
IP_VS_SVC_F_SCHED2 = 0x0010
IP_VS_SVC_F_SCHED3 = 0x0020  # no SchedFlag of lvsd's model (kept as the uapi)

# --- forwarding methods (a destination's conn flags) -----------------------------------

IP_VS_CONN_F_MASQ = 0
IP_VS_CONN_F_LOCALNODE = 1
IP_VS_CONN_F_TUNNEL = 2
IP_VS_CONN_F_DROUTE = 3

# --- attribute numbers -----------------------------------------------------------------

IPVS_CMD_ATTR_SERVICE = 1
IPVS_CMD_ATTR_DEST = 2

# connection timeouts (``ipvsadm --set``): commands and their u32 attributes, seconds
IPVS_CMD_SET_CONFIG = 12
IPVS_CMD_GET_CONFIG = 13
IPVS_CMD_ATTR_TIMEOUT_TCP = 4
IPVS_CMD_ATTR_TIMEOUT_TCP_FIN = 5
IPVS_CMD_ATTR_TIMEOUT_UDP = 6

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

# --- lvsd's enums <-> the kernel's codes -----------------------------------------------

SCHED_FLAG_BITS: dict[SchedFlag, int] = {
    SchedFlag.FALLBACK: IP_VS_SVC_F_SCHED1,
    SchedFlag.PORT: IP_VS_SVC_F_SCHED2,
}

FWD_CODES: dict[Forward, int] = {
    Forward.NAT: IP_VS_CONN_F_MASQ,
    Forward.TUN: IP_VS_CONN_F_TUNNEL,
    Forward.DR: IP_VS_CONN_F_DROUTE,
}
#: LOCALNODE is what the kernel makes of a destination whose address is local: it
#: forwards to the director itself; lvsd's model has no such method, so it reads as
#: NAT (the default such a destination is configured with).
FWD_BY_CODE: dict[int, Forward] = {
    **{code: fwd for fwd, code in FWD_CODES.items()},
    IP_VS_CONN_F_LOCALNODE: Forward.NAT,
}

TUN_CODES: dict[TunnelType, int] = {TunnelType.IPIP: 0, TunnelType.GUE: 1, TunnelType.GRE: 2}
TUN_BY_CODE: dict[int, TunnelType] = {code: t for t, code in TUN_CODES.items()}

AF: dict[Family, int] = {Family.INET: socket.AF_INET, Family.INET6: socket.AF_INET6}
FAMILY_BY_AF: dict[int, Family] = {af: fam for fam, af in AF.items()}

PROTO: dict[Protocol, int] = {
    Protocol.TCP: socket.IPPROTO_TCP,
    Protocol.UDP: socket.IPPROTO_UDP,
    Protocol.SCTP: 132,  # socket.IPPROTO_SCTP is missing on some builds
}
PROTOCOL_BY_NUMBER: dict[int, Protocol] = {n: p for p, n in PROTO.items()}

#: The prefix length of one address (the netmask of a service that is not persistent).
HOST_PREFIX: dict[Family, int] = {Family.INET: 32, Family.INET6: 128}
