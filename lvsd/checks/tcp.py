"""The ``tcp`` kind: connect; optionally send bytes, then read until ``expect`` is seen.

Details: ``"connect 10.0.0.2:80: refused"``, ``"connect 10.0.0.2:80: timeout after 1.0s"``,
``"read 10.0.0.2:80: closed before 'OK' was seen (got 'ERR')"``.

A plain connect check (no ``send``, no ``expect``: the common case, and the one run
for thousands of real servers) takes a fast path: a non-blocking socket whose connect
is awaited through the loop's shared :class:`~lvsd.checks._net.Connector` (one epoll
set, one future, one timer handle), and a detail built once per probe rather than once
per run. It costs a fraction of the stream path's CPU (see docs/performance.md); what
it reports is the same. It closes with a reset (``SO_LINGER`` 0), as keepalived's
TCP_CHECK does: no TIME_WAIT socket is left behind per probe.
"""

from __future__ import annotations

import asyncio
import socket
import struct

from lvsd.checks._net import (
    Fail,
    Progress,
    Verdict,
    close_stream,
    connector,
    describe_os_error,
    echo,
    format_timeout,
    hostport,
    local_addr,
    open_stream,
    probe_port,
    run_timed,
)
from lvsd.checks.base import ProbeResult, Target
from lvsd.config.model import CheckSpec, TcpOptions

#: Bytes of the answer kept while looking for ``expect``.
READ_LIMIT = 65536

#: ``SO_LINGER`` on with zero seconds: ``close`` ends the connection with a reset, so it
#: leaves no TIME_WAIT socket on the director (at 10,000 checks a second the kernel's
#: table of them overflows). keepalived's TCP_CHECK and HAProxy's checks close so too.
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)

#: A non-blocking stream socket from the one ``socket()`` call (no ``ioctl`` after it).
_STREAM_NONBLOCK = socket.SOCK_STREAM | socket.SOCK_NONBLOCK


class TcpProbe:
    """Connect to the target (and talk a little, if the options say so)."""

    __slots__ = (
        "_family",
        "_local",
        "_ok_detail",
        "_options",
        "_port",
        "_sockaddr",
        "_spec",
        "_step",
        "_target",
        "_where",
    )

    def __init__(self, spec: CheckSpec, target: Target) -> None:
        if not isinstance(spec.options, TcpOptions):
            raise TypeError(f"tcp probe needs TcpOptions, got {type(spec.options).__name__}")
        self._spec = spec
        self._options = spec.options
        self._target = target
        self._port = probe_port(spec, target)
        self._where = hostport(target.address, self._port)
        self._step = f"connect {self._where}"
        self._ok_detail = f"{self._step}: ok"
        self._family = socket.AF_INET6 if target.address.version == 6 else socket.AF_INET
        self._sockaddr = (str(target.address), self._port)
        self._local = local_addr(spec)

    async def probe(self) -> ProbeResult:
        if not self._options.send and not self._options.expect:
            return await self._connect_only()
        where = self._where
        progress = Progress(self._step)
        return await run_timed(self._spec.timeout, progress, lambda: self._run(progress, where))

    async def _connect_only(self) -> ProbeResult:
        """Connect and close: the same result as the stream path, at less cost."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            sock = socket.socket(self._family, _STREAM_NONBLOCK)
        except OSError as exc:
            return self._failed(exc, loop.time() - started)
        try:
            if self._local is not None:
                sock.bind(self._local)
            connected = await connector().connect(
                sock, self._sockaddr, started + self._spec.timeout
            )
            if connected:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
        except OSError as exc:
            return self._failed(exc, loop.time() - started)
        finally:
            sock.close()
        if not connected:
            return ProbeResult(
                ok=False,
                detail=f"{self._step}: {format_timeout(self._spec.timeout)}",
                duration=loop.time() - started,
                reason="timeout",
            )
        return ProbeResult(ok=True, detail=self._ok_detail, duration=loop.time() - started)

    def _failed(self, exc: OSError, duration: float) -> ProbeResult:
        text, reason = describe_os_error(exc)
        return ProbeResult(
            ok=False, detail=f"{self._step}: {text}", duration=duration, reason=reason
        )

    async def _run(self, progress: Progress, where: str) -> Verdict:
        reader, writer = await open_stream(self._spec, self._target.address, self._port)
        try:
            if self._options.send:
                progress.step = f"send {where}"
                writer.write(self._options.send)
                await writer.drain()
            expect = self._options.expect
            if not expect:
                return Verdict(ok=True, detail=f"connect {where}: ok")
            progress.step = f"read {where}"
            seen = b""
            while expect not in seen:
                chunk = await reader.read(READ_LIMIT)
                if not chunk:
                    raise Fail(
                        f"read {where}: closed before {echo(expect)} was seen (got {echo(seen)})",
                        "body",
                    )
                seen = (seen + chunk)[-READ_LIMIT:]
            return Verdict(ok=True, detail=f"read {where}: {echo(expect)} seen")
        finally:
            close_stream(writer)

    async def close(self) -> None:
        """Nothing is kept between probes."""
