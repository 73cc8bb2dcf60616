"""The ``mysql`` kind: read the server's first packet, which must be a protocol 10
handshake (its server version goes in the detail); an error packet (too many
connections, host blocked) is down. Nothing is sent: the connection is closed before
any login.

MySQL counts a connection closed during the handshake against the client host;
after ``max_connect_errors`` of them in a row (with no good login between) it blocks
the host until ``FLUSH HOSTS``. Raise ``max_connect_errors`` for the director, as for
HAProxy's ``mysql-check`` without a user.

Details: ``"mysql: handshake v10, server 8.0.36"``,
``"mysql: error 1040: Too many connections"``, ``"mysql: protocol version 9, want 10"``.
"""

from __future__ import annotations

import asyncio

from lvsd.checks.handshake import HandshakeProbe
from lvsd.checks.net import Fail, Progress, echo

#: The largest first packet we read (a real handshake is about 100 bytes).
MAX_PACKET = 1 << 16
PROTOCOL_VERSION = 10
ERROR_PACKET = 0xFF


class MysqlProbe(HandshakeProbe):
    """Read the MySQL/MariaDB server's handshake packet and close."""

    __slots__ = ()
    kind = "mysql"

    async def judge(self, reader: asyncio.StreamReader, progress: Progress) -> str:
        header = await reader.readexactly(4)  # 3 bytes length, 1 byte sequence number
        length = int.from_bytes(header[:3], "little")
        if not 0 < length <= MAX_PACKET:
            raise Fail(f"{progress.step}: garbage {echo(header)}", "protocol")
        payload = await reader.readexactly(length)
        if payload[0] == ERROR_PACKET and length >= 3:
            code = int.from_bytes(payload[1:3], "little")
            message = payload[3:]
            if message.startswith(b"#"):  # a SQL state: '#' and 5 characters
                message = message[6:]
            text = message.decode("utf-8", "replace")
            raise Fail(f"mysql: error {code}: {text}", "status")
        if payload[0] != PROTOCOL_VERSION:
            raise Fail(f"mysql: protocol version {payload[0]}, want {PROTOCOL_VERSION}", "protocol")
        version, nul, _ = payload[1:].partition(b"\0")
        if not nul:
            raise Fail(f"{progress.step}: no server version in {echo(payload)}", "protocol")
        return f"mysql: handshake v{PROTOCOL_VERSION}, server {version.decode('utf-8', 'replace')}"
