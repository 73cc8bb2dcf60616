"""The ``imap`` kind: the greeting must be ``* OK`` (or ``* PREAUTH``); then ``LOGOUT``.

Details: ``"imap: greeting OK"``, ``"imap: greeting * BYE 'too many connections'"``,
``"imap: greeting: garbage '+OK dovecot'"``.
"""

from __future__ import annotations

import asyncio

from lvsd.checks.handshake import HandshakeProbe
from lvsd.checks.net import Fail, Progress, echo, read_line


class ImapProbe(HandshakeProbe):
    """Read the IMAP server's untagged greeting and log out."""

    __slots__ = ()
    kind = "imap"
    goodbye = b"a1 LOGOUT\r\n"

    async def judge(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, progress: Progress
    ) -> str:
        line = await read_line(reader, progress)
        status, _, text = line.removeprefix(b"* ").partition(b" ")
        if not line.startswith(b"* "):
            raise Fail(f"{progress.step}: garbage {echo(line)}", "protocol")
        if status.upper() in (b"OK", b"PREAUTH"):
            return f"imap: greeting {status.upper().decode()}"
        if status.upper() == b"BYE":
            raise Fail(f"imap: greeting * BYE {echo(text)}", "status")
        raise Fail(f"{progress.step}: garbage {echo(line)}", "protocol")
