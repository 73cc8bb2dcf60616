"""The ``smtp`` kind: read the 220 banner (single or multi-line), optionally
``EHLO`` expecting 250, then ``QUIT``.

Details: ``"smtp: banner 554, want 220"``, ``"smtp: EHLO 550, want 250"``,
``"smtp: banner: garbage 'hello'"``, ``"smtp: connect 10.0.0.2:25: refused"``.
"""

from __future__ import annotations

import asyncio
import re

from lvsd.checks.handshake import StreamProbe
from lvsd.checks.net import Fail, Progress, Verdict, echo, read_line
from lvsd.config.model import SmtpOptions

#: Lines a multi-line reply may have before we call it garbage.
MAX_REPLY_LINES = 100

_REPLY_LINE = re.compile(rb"([2-5]\d\d)([ -]|$)")


async def read_reply(reader: asyncio.StreamReader, progress: Progress) -> int:
    """Read one SMTP reply (``250-a``, ``250-b``, ``250 c``) and return its code."""
    for _ in range(MAX_REPLY_LINES):
        line = await read_line(reader, progress)
        match = _REPLY_LINE.match(line)
        if match is None:
            raise Fail(f"{progress.step}: garbage {echo(line)}", "protocol")
        if match.group(2) != b"-":
            return int(match.group(1))
    raise Fail(f"{progress.step}: reply longer than {MAX_REPLY_LINES} lines", "protocol")


class SmtpProbe(StreamProbe[SmtpOptions]):
    """Greet the mail server and leave politely."""

    __slots__ = ()
    options_type = SmtpOptions
    kind = "smtp"

    async def exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, progress: Progress
    ) -> Verdict:
        progress.step = "smtp: banner"
        code = await read_reply(reader, progress)
        if code != 220:
            return Verdict.fail(f"smtp: banner {code}, want 220", "status")
        detail = "smtp: banner 220"
        if self._options.helo is not None:
            progress.step = "smtp: EHLO"
            writer.write(f"EHLO {self._options.helo}\r\n".encode())
            await writer.drain()
            code = await read_reply(reader, progress)
            if code != 250:
                return Verdict.fail(f"smtp: EHLO {code}, want 250", "status")
            detail += ", EHLO 250"
        progress.step = "smtp: QUIT"
        writer.write(b"QUIT\r\n")
        await writer.drain()
        return Verdict(ok=True, detail=detail)
