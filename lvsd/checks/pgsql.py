"""The ``pgsql`` kind: send an SSLRequest, the one message a PostgreSQL postmaster
answers before any login, and expect its one-byte answer: ``S`` (TLS offered) or
``N`` (not). An ErrorResponse is down with its message. The connection is then
closed: no TLS handshake, no startup message, no login.

Details: ``"pgsql: SSLRequest answered 'N'"``, ``"pgsql: error: the database system
is shutting down"``, ``"pgsql: answer: garbage 'H'"``.
"""

from __future__ import annotations

import asyncio
import struct

from lvsd.checks.handshake import HandshakeProbe
from lvsd.checks.net import Fail, Progress, echo

#: The SSLRequest code (1234 << 16 | 5679) in an 8-byte message.
SSL_REQUEST = struct.pack("!II", 8, 80877103)
#: The largest ErrorResponse we read.
MAX_ERROR = 1 << 13


class PgsqlProbe(HandshakeProbe):
    """Ask the PostgreSQL server whether it speaks TLS; any proper answer is up."""

    __slots__ = ()
    kind = "pgsql"
    reading = "answer"
    hello = SSL_REQUEST

    async def judge(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, progress: Progress
    ) -> str:
        answer = await reader.readexactly(1)
        if answer in (b"S", b"N"):
            return f"pgsql: SSLRequest answered {answer.decode()!r}"
        if answer != b"E":
            raise Fail(f"{progress.step}: garbage {echo(answer)}", "protocol")
        (length,) = struct.unpack("!I", await reader.readexactly(4))
        if not 4 < length <= MAX_ERROR:
            raise Fail(f"{progress.step}: bad error length {length}", "protocol")
        raise Fail(f"pgsql: error: {_message(await reader.readexactly(length - 4))}", "status")


def _message(body: bytes) -> str:
    """The ``M`` (message) field of an ErrorResponse body, else the whole body."""
    for field in body.split(b"\0"):
        if field.startswith(b"M"):
            return field[1:].decode("utf-8", "replace")
    return echo(body)
