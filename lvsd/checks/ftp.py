"""The ``ftp`` kind: the greeting (single or multi-line, RFC 959) must be 220; then
``QUIT``. A 120 ("ready in nnn minutes") or 421 is down.

Details: ``"ftp: greeting 220"``, ``"ftp: greeting 421, want 220"``,
``"ftp: greeting: garbage 'SSH-2.0-OpenSSH_9.6'"``.
"""

from __future__ import annotations

import asyncio
import re

from lvsd.checks.handshake import HandshakeProbe
from lvsd.checks.net import Fail, Progress, echo, read_line

#: Lines a multi-line greeting may have before we call it garbage.
MAX_REPLY_LINES = 100

_FIRST_LINE = re.compile(rb"([1-5]\d\d)([ -]|$)")


class FtpProbe(HandshakeProbe):
    """Read the FTP server's greeting and quit."""

    __slots__ = ()
    kind = "ftp"
    goodbye = b"QUIT\r\n"

    async def judge(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, progress: Progress
    ) -> str:
        line = await read_line(reader, progress)
        match = _FIRST_LINE.match(line)
        if match is None:
            raise Fail(f"{progress.step}: garbage {echo(line)}", "protocol")
        code = match.group(1)
        if match.group(2) == b"-":  # continued until a line starting "CODE "
            for _ in range(MAX_REPLY_LINES):
                line = await read_line(reader, progress)
                if line.startswith(code + b" ") or line == code:
                    break
            else:
                raise Fail(
                    f"{progress.step}: reply longer than {MAX_REPLY_LINES} lines", "protocol"
                )
        if code != b"220":
            raise Fail(f"ftp: greeting {code.decode()}, want 220", "status")
        return "ftp: greeting 220"
