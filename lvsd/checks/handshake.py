"""What the stream kinds share: :class:`StreamProbe` connects, runs the kind's
exchange and closes (agent, smtp and the handshake kinds); :class:`HandshakeProbe` is
the login-free handshake (imap, pop3, ftp, mysql, pgsql, ldap): send ``hello`` (if any),
let the kind judge what the server says, send ``goodbye`` (if any). Nothing logs in, so
no credential is needed.

A kind subclasses :class:`HandshakeProbe`, names itself and implements ``judge``,
which returns the detail of a success or raises :class:`~lvsd.checks.net.Fail`.
Details start with the kind: ``"imap: greeting * BYE 'too many'"``,
``"pop3: connect 10.0.0.2:110: refused"``, ``"ftp: greeting: timeout after 1.0s"``.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

from lvsd.checks.base import ProbeResult
from lvsd.checks.net import (
    LINE_LIMIT,
    Progress,
    Verdict,
    close_stream,
    hostport,
    open_stream,
    run_timed,
)
from lvsd.checks.probe import OptionsT, ProbeBase
from lvsd.config.model import HandshakeOptions


class StreamProbe(ProbeBase[OptionsT]):
    """A kind over one TCP stream: connect, the kind's ``exchange``, close (details of
    a refused or slow connect read ``"<kind>: connect 10.0.0.2:25: refused"``)."""

    __slots__ = ()

    async def probe(self) -> ProbeResult:
        where = hostport(self._target.address, self._port)
        progress = Progress(f"{self._spec.kind}: connect {where}")
        return await run_timed(self._spec.timeout, progress, lambda: self._run(progress))

    async def _run(self, progress: Progress) -> Verdict:
        reader, writer = await open_stream(
            self._spec, self._target.address, self._port, limit=LINE_LIMIT
        )
        try:
            return await self.exchange(reader, writer, progress)
        finally:
            close_stream(writer)

    async def exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, progress: Progress
    ) -> Verdict:
        """What the kind says and hears once connected; raises ``Fail`` on a bad answer."""
        raise NotImplementedError


class HandshakeProbe(StreamProbe[HandshakeOptions]):
    """One short exchange that a live server of the kind answers without a login."""

    __slots__ = ()
    options_type = HandshakeOptions
    #: Sent right after connecting (empty: the server speaks first).
    hello: ClassVar[bytes] = b""
    #: Sent after a good answer, before closing (empty: just close).
    goodbye: ClassVar[bytes] = b""
    #: The step of reading the server's part, named in details.
    reading: ClassVar[str] = "greeting"

    async def exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, progress: Progress
    ) -> Verdict:
        if self.hello:
            progress.step = f"{self._spec.kind}: send"
            writer.write(self.hello)
            await writer.drain()
        progress.step = f"{self._spec.kind}: {self.reading}"
        detail = await self.judge(reader, writer, progress)
        if self.goodbye:
            progress.step = f"{self._spec.kind}: goodbye"
            writer.write(self.goodbye)
            await writer.drain()
        return Verdict(ok=True, detail=detail)

    async def judge(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, progress: Progress
    ) -> str:
        """The detail of a good answer read from ``reader`` (a kind that says more
        writes to ``writer``); raises ``Fail`` otherwise."""
        raise NotImplementedError
