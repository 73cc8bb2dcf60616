"""The ``icmp`` kind: one ICMP (or ICMPv6) echo request to the real server's address,
up when the matching echo reply comes back.

It uses the kernel's unprivileged ping sockets (``socket(AF_INET, SOCK_DGRAM,
IPPROTO_ICMP)``, ``AF_INET6``/``IPPROTO_ICMPV6`` for IPv6): the kernel picks the
echo identifier (the socket's "port") and fills in the checksum, and hands the socket
only the replies to its own identifier. Ping sockets are allowed to the groups in
``net.ipv4.ping_group_range`` (for IPv6 too); outside it, every probe fails with a
detail saying so (and ``lvsd check --host`` reports it), never a plain "down".
It takes no options; ``port`` and ``source_port`` do not apply, ``source`` binds the
source address.

Details: ``"icmp 10.0.0.2: echo reply"``, ``"icmp 10.0.0.2: timeout after 1.0s"``,
``"icmp 10.0.0.2: no route to host"``, ``"icmp 10.0.0.2: ping sockets not permitted
for this process's groups (net.ipv4.ping_group_range = '1 0'); see lvsd check --host"``.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
import struct
from pathlib import Path

from lvsd.checks.base import ProbeResult, Target
from lvsd.checks.net import Fail, Progress, Verdict, run_timed
from lvsd.checks.probe import ProbeBase
from lvsd.config.model import CheckSpec, IcmpOptions

#: The sysctl that says which groups may open ping sockets.
PING_GROUP_RANGE = Path("/proc/sys/net/ipv4/ping_group_range")
#: (family, protocol, echo request type, echo reply type) per IP version.
_ICMP = {
    4: (socket.AF_INET, socket.IPPROTO_ICMP, 8, 0),
    6: (socket.AF_INET6, socket.IPPROTO_ICMPV6, 128, 129),
}
_HEADER = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence
#: Echo data: 56 bytes, as ping(8) sends.
PAYLOAD = b"lvsd" + bytes(52)
#: Sequence numbers, shared by every probe (each socket has its own identifier anyway).
_SEQUENCE = itertools.count(1)


def denied_text(path: Path = PING_GROUP_RANGE) -> str:
    """Why a ping socket could not be opened, with the sysctl's value as found."""
    try:
        value = repr(" ".join(path.read_text().split()))
    except OSError:
        value = "unreadable"
    return (
        f"ping sockets not permitted for this process's groups "
        f"(net.ipv4.ping_group_range = {value}); see lvsd check --host"
    )


class IcmpProbe(ProbeBase[IcmpOptions]):
    """Ping the real server once per probe."""

    __slots__ = ("_where",)
    options_type = IcmpOptions
    kind = "icmp"

    def __init__(self, spec: CheckSpec, target: Target) -> None:
        super().__init__(spec, target)
        self._where = f"icmp {target.address}"

    async def probe(self) -> ProbeResult:
        progress = Progress(self._where)
        return await run_timed(self._spec.timeout, progress, self._run)

    async def _run(self) -> Verdict:
        family, protocol, request, reply = _ICMP[self._target.address.version]
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM, protocol)
        except PermissionError as exc:
            raise Fail(f"{self._where}: {denied_text()}", "error") from exc
        try:
            sock.setblocking(False)
            if self._spec.source is not None:
                sock.bind((self._spec.source, 0))
            sock.connect((str(self._target.address), 0))  # errors from the target only
            sequence = next(_SEQUENCE) & 0xFFFF
            packet = _HEADER.pack(request, 0, 0, 0, sequence) + PAYLOAD
            loop = asyncio.get_running_loop()
            await loop.sock_sendall(sock, packet)
            while True:
                data = await loop.sock_recv(sock, len(packet) + 64)
                if len(data) < _HEADER.size:
                    continue
                kind, _, _, _, echoed = _HEADER.unpack_from(data)
                if kind == reply and echoed == sequence and data[_HEADER.size :] == PAYLOAD:
                    return Verdict(ok=True, detail=f"{self._where}: echo reply")
        finally:
            sock.close()
