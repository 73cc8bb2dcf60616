"""The ``tcp`` kind: connect; optionally send bytes, then read until ``expect`` is seen.

Details: ``"connect 10.0.0.2:80: refused"``, ``"connect 10.0.0.2:80: timeout after 1.0s"``,
``"read 10.0.0.2:80: closed before 'OK' was seen (got 'ERR')"``.

A plain connect check (no ``send``, no ``expect``: the common case, and the one run
for thousands of real servers) is a :class:`ConnectProbe`. It runs from callbacks,
without a task (:class:`~lvsd.checks.base.QuickProbe`): a non-blocking socket whose
connect is watched by the loop's shared :class:`~lvsd.checks.net.Connector` (one
epoll set), one timer handle for its timeout, and a detail built once per probe
rather than once per run. It costs a fraction of the stream path's CPU and starts
its connect the moment it is due (see docs/performance.md); what it reports is the
same. It closes with a reset (``SO_LINGER`` 0), as keepalived's TCP_CHECK does: no
TIME_WAIT socket is left behind per probe. :func:`tcp_probe` picks the class.
"""

from __future__ import annotations

import asyncio
import errno
import os
import select
import socket
import struct

from lvsd.checks.base import Finish, Probe, ProbeResult, Target
from lvsd.checks.net import (
    Deadline,
    Fail,
    Progress,
    Verdict,
    bind_source,
    close_stream,
    connector,
    describe_os_error,
    echo,
    format_timeout,
    hostport,
    local_addr,
    local_cause,
    open_stream,
    run_timed,
    timed_out,
)
from lvsd.checks.probe import ProbeBase
from lvsd.config.model import CheckSpec, TcpOptions

#: Bytes of the answer kept while looking for ``expect``.
READ_LIMIT = 65536

#: ``SO_LINGER`` on with zero seconds: ``close`` ends the connection with a reset, so it
#: leaves no TIME_WAIT socket on the director (at high check rates the kernel's table
#: of them overflows). keepalived's TCP_CHECK and HAProxy's checks close so too.
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)

#: A non-blocking stream socket from the one ``socket()`` call (no ``ioctl`` after it).
_STREAM_NONBLOCK = socket.SOCK_STREAM | socket.SOCK_NONBLOCK

#: ``connect_ex`` on a non-blocking socket: the handshake goes on.
_IN_PROGRESS = (errno.EINPROGRESS, errno.EAGAIN, errno.EALREADY)

_FAILED = select.EPOLLERR | select.EPOLLHUP


def tcp_probe(spec: CheckSpec, target: Target) -> Probe:
    """The probe for a ``tcp`` check: a :class:`ConnectProbe` unless the check sends or
    expects bytes."""
    options = spec.options
    if isinstance(options, TcpOptions) and not options.send and not options.expect:
        return ConnectProbe(spec, target)
    return TcpProbe(spec, target)


class ConnectProbe(ProbeBase[TcpOptions]):
    """Connect and close, from callbacks."""

    __slots__ = (
        "_family",
        "_local",
        "_sockaddr",
        "_step",
        "_timeout",
        "ok_detail",
        "timeout_detail",
    )
    options_type = TcpOptions
    kind = "tcp"

    def __init__(self, spec: CheckSpec, target: Target) -> None:
        super().__init__(spec, target)
        port = self._port
        self._step = f"connect {hostport(target.address, port)}"
        self.ok_detail = f"{self._step}: ok"
        self._timeout = spec.timeout
        self.timeout_detail = f"{self._step}: {format_timeout(spec.timeout)}"
        self._family = socket.AF_INET6 if target.address.version == 6 else socket.AF_INET
        self._sockaddr = (str(target.address), port)
        self._local = local_addr(spec)

    def start(self, finish: Finish, now: float) -> _Connecting:
        """Begin a run at loop time ``now``; ``finish(result)`` is called once it ends,
        on a later turn of the loop."""
        loop = asyncio.get_running_loop()
        run = _Connecting(self, finish, loop, now)
        try:
            sock = socket.socket(self._family, _STREAM_NONBLOCK)
        except OSError as exc:
            run.end_soon(self.failed(exc, 0.0))
            return run
        try:
            if self._local is not None:
                bind_source(sock, self._local)
            err = sock.connect_ex(self._sockaddr)
            if err == 0:
                run.end_soon(run.conclude(sock, select.EPOLLOUT, loop.time()))
                return run
            if err not in _IN_PROGRESS:
                raise OSError(err, os.strerror(err))
            connector().watch(sock.fileno(), run.ready)
        except OSError as exc:
            sock.close()
            run.end_soon(self.failed(exc, loop.time() - run.started))
            return run
        run.sock = sock
        run.timer = Deadline(loop, run.started + self._timeout, self._timeout, run.timed_out)
        return run

    async def probe(self) -> ProbeResult:
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[ProbeResult | None] = loop.create_future()

        def finish(result: ProbeResult | None) -> None:
            if not ended.done():
                ended.set_result(result)

        run = self.start(finish, loop.time())
        try:
            result = await ended
        finally:
            run.cancel()
        assert result is not None  # None only after cancel(), which ends the wait first
        return result

    def failed(self, exc: OSError, duration: float) -> ProbeResult:
        text, reason = describe_os_error(exc)
        return ProbeResult(
            ok=False,
            detail=f"{self._step}: {text}",
            duration=duration,
            reason=reason,
            local=local_cause(exc),
        )


class _Connecting:
    """One run of a :class:`ConnectProbe`: the socket while its connect goes on."""

    __slots__ = ("_finish", "_loop", "_probe", "sock", "started", "timer")

    def __init__(
        self, probe: ConnectProbe, finish: Finish, loop: asyncio.AbstractEventLoop, now: float
    ) -> None:
        self._probe = probe
        self._finish: Finish | None = finish
        self._loop = loop
        self.started = now
        self.sock: socket.socket | None = None
        self.timer: Deadline | None = None

    def done(self) -> bool:
        return self._finish is None

    def cancel(self) -> bool:
        """Stop the run: its socket is closed and ``finish(None)`` called at once."""
        finish = self._finish
        if finish is None:
            return False
        self._finish = None
        self._drop()
        finish(None)
        return True

    def end_soon(self, result: ProbeResult) -> None:
        """Finish with ``result`` on the loop's next turn (never inside ``start``)."""
        self._loop.call_soon(self._end, result)

    def _end(self, result: ProbeResult) -> None:
        finish = self._finish
        if finish is not None:
            self._finish = None
            finish(result)

    def _drop(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        sock = self.sock
        if sock is not None:
            self.sock = None
            connector().forget(sock.fileno())
            sock.close()

    def ready(self, events: int, now: float) -> None:
        """The connect ended (the connector's callback)."""
        sock = self.sock
        if sock is None:
            return
        self.sock = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self._end(self.conclude(sock, events, now))

    def conclude(self, sock: socket.socket, events: int, now: float) -> ProbeResult:
        """Close ``sock``, whose connect ended with ``events`` by loop time ``now``:
        connected, or failed with the socket's error."""
        probe = self._probe
        duration = now - self.started
        try:
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if events & _FAILED else 0
            if err:
                raise OSError(err, os.strerror(err))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
        except OSError as exc:
            return probe.failed(exc, duration)
        finally:
            sock.close()
        return ProbeResult(ok=True, detail=probe.ok_detail, duration=duration)

    def timed_out(self, late: float) -> None:
        """The deadline expired, ``late`` seconds past its (lag-extended) time."""
        self.timer = None
        sock = self.sock
        if sock is None:
            return
        self.sock = None
        connector().forget(sock.fileno())
        sock.close()
        probe = self._probe
        detail, reason, cause = probe.timeout_detail, "timeout", ""
        if late > probe._timeout:  # the loop stood still past the whole timeout: held
            verdict = timed_out(probe._step, probe._timeout, late)
            detail, reason, cause = verdict.detail, verdict.reason, verdict.local
        self._end(
            ProbeResult(
                ok=False,
                detail=detail,
                duration=self._loop.time() - self.started,
                reason=reason,
                local=cause,
            )
        )


class TcpProbe(ProbeBase[TcpOptions]):
    """Connect to the target, send, and read until ``expect`` is seen (a task's run)."""

    __slots__ = ("_step", "_where")
    options_type = TcpOptions
    kind = "tcp"

    def __init__(self, spec: CheckSpec, target: Target) -> None:
        super().__init__(spec, target)
        self._where = hostport(target.address, self._port)
        self._step = f"connect {self._where}"

    async def probe(self) -> ProbeResult:
        progress = Progress(self._step)
        return await run_timed(
            self._spec.timeout, progress, lambda: self._run(progress, self._where)
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
