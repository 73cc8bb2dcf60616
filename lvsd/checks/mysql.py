"""The ``mysql`` kind: read the server's first packet, which must be a protocol 10
handshake (its server version goes in the detail); an error packet (too many
connections, host blocked) is down.

Without ``options.user`` nothing is sent: the connection is closed before any login.
MySQL counts a connection closed during the handshake against the client host; after
``max_connect_errors`` of them in a row (with no good login between) it blocks the
host until ``FLUSH HOSTS``. With ``options.user`` the probe answers the handshake as
that user with an empty password (as HAProxy's ``mysql-check user``), expects OK, and
says ``COM_QUIT``: a finished handshake, which the server does not count. An
authentication switch request is answered with the same empty password.

Details: ``"mysql: handshake v10, server 8.0.36"``,
``"mysql: handshake v10, server 8.0.36, login as 'lvsd' ok"``,
``"mysql: error 1040: Too many connections"``,
``"mysql: login as 'lvsd': error 1045: Access denied for user 'lvsd'@'10.0.0.1'"``,
``"mysql: protocol version 9, want 10"``.
"""

from __future__ import annotations

import asyncio
import struct

from lvsd.checks.handshake import HandshakeProbe
from lvsd.checks.net import Fail, Progress, echo
from lvsd.config.model import MysqlOptions

#: The largest packet we read (a real handshake is about 100 bytes).
MAX_PACKET = 1 << 16
PROTOCOL_VERSION = 10
OK_PACKET, AUTH_SWITCH, ERROR_PACKET = 0x00, 0xFE, 0xFF
COM_QUIT = b"\x01"
#: CLIENT_LONG_PASSWORD | CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH
CAPABILITIES = 0x1 | 0x200 | 0x8000 | 0x80000
UTF8 = 0x21
DEFAULT_PLUGIN = b"mysql_native_password"


def packet(payload: bytes, sequence: int) -> bytes:
    """``payload`` framed: 3 bytes of length, 1 byte of sequence number."""
    return len(payload).to_bytes(3, "little") + bytes([sequence & 0xFF]) + payload


def handshake_response(user: str, plugin: bytes) -> bytes:
    """A HandshakeResponse41 logging in as ``user`` with an empty password."""
    fixed = struct.pack("<IIB23x", CAPABILITIES, 1 << 24, UTF8)
    return fixed + user.encode() + b"\0" + b"\0" + plugin + b"\0"


def auth_plugin(handshake: bytes) -> bytes:
    """The authentication plugin a protocol 10 handshake names (its default if none)."""
    rest = handshake[1:].partition(b"\0")[2]
    at = 4 + 8 + 1 + 2  # thread id, auth data part 1, filler, capabilities (low)
    if len(rest) < at + 16:
        return DEFAULT_PLUGIN
    auth_length = rest[at + 5]  # after charset (1), status (2), capabilities (high, 2)
    at += 1 + 2 + 2 + 1 + 10 + max(13, auth_length - 8)
    return rest[at:].partition(b"\0")[0] or DEFAULT_PLUGIN


class MysqlProbe(HandshakeProbe):
    """Read the MySQL/MariaDB server's handshake packet; log in when given a user."""

    __slots__ = ()
    options_type = MysqlOptions
    kind = "mysql"

    async def judge(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, progress: Progress
    ) -> str:
        sequence, payload = await _read_packet(reader, progress)
        _fail_on_error(payload, "mysql")
        if payload[0] != PROTOCOL_VERSION:
            raise Fail(f"mysql: protocol version {payload[0]}, want {PROTOCOL_VERSION}", "protocol")
        version, nul, _ = payload[1:].partition(b"\0")
        if not nul:
            raise Fail(f"{progress.step}: no server version in {echo(payload)}", "protocol")
        detail = (
            f"mysql: handshake v{PROTOCOL_VERSION}, server {version.decode('utf-8', 'replace')}"
        )
        assert isinstance(self._options, MysqlOptions)
        user = self._options.user
        if user is None:
            return detail
        progress.step = f"mysql: login as {user!r}"
        writer.write(packet(handshake_response(user, auth_plugin(payload)), sequence + 1))
        for _ in range(2):  # the answer, or an auth switch and then the answer
            await writer.drain()
            sequence, reply = await _read_packet(reader, progress)
            _fail_on_error(reply, progress.step)
            if reply[0] == OK_PACKET:
                writer.write(packet(COM_QUIT, 0))
                await writer.drain()
                return f"{detail}, login as {user!r} ok"
            if reply[0] != AUTH_SWITCH:
                raise Fail(f"{progress.step}: unexpected packet {echo(reply)}", "protocol")
            writer.write(packet(b"", sequence + 1))  # the empty password, for the new plugin
        raise Fail(f"{progress.step}: no OK after the authentication switch", "protocol")


async def _read_packet(reader: asyncio.StreamReader, progress: Progress) -> tuple[int, bytes]:
    """(sequence number, payload) of the next packet."""
    header = await reader.readexactly(4)  # 3 bytes length, 1 byte sequence number
    length = int.from_bytes(header[:3], "little")
    if not 0 < length <= MAX_PACKET:
        raise Fail(f"{progress.step}: garbage {echo(header)}", "protocol")
    return header[3], await reader.readexactly(length)


def _fail_on_error(payload: bytes, step: str) -> None:
    """Fail with the code and message of an error packet."""
    if payload[0] != ERROR_PACKET or len(payload) < 3:
        return
    code = int.from_bytes(payload[1:3], "little")
    message = payload[3:]
    if message.startswith(b"#"):  # a SQL state: '#' and 5 characters
        message = message[6:]
    raise Fail(f"{step}: error {code}: {message.decode('utf-8', 'replace')}", "status")
