"""The ``pop3`` kind: the greeting must be ``+OK``; then ``QUIT``.

Details: ``"pop3: greeting +OK"``, ``"pop3: greeting -ERR 'maintenance'"``,
``"pop3: greeting: garbage '* OK imap'"``.
"""

from __future__ import annotations

import asyncio

from lvsd.checks.handshake import HandshakeProbe
from lvsd.checks.net import Fail, Progress, echo, read_line


class Pop3Probe(HandshakeProbe):
    """Read the POP3 server's greeting and quit."""

    __slots__ = ()
    kind = "pop3"
    goodbye = b"QUIT\r\n"

    async def judge(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, progress: Progress
    ) -> str:
        line = await read_line(reader, progress)
        word, _, text = line.partition(b" ")
        if word == b"+OK":
            return "pop3: greeting +OK"
        if word == b"-ERR":
            raise Fail(f"pop3: greeting -ERR {echo(text)}", "status")
        raise Fail(f"{progress.step}: garbage {echo(line)}", "protocol")
