"""What the probe kinds share: the timed run, step-by-step details, socket helpers.

A probe's body names the step it is in (``progress.step = "connect 10.0.0.2:80"``)
and either returns a :class:`Verdict` or raises :class:`Fail` to stop early.
:func:`run_timed` bounds the body with the spec's timeout and turns every expected
error into a failed :class:`~lvsd.checks.base.ProbeResult` whose detail starts with
the step that failed: ``"connect 10.0.0.2:80: refused"``, ``"... timeout after 1.0s"``.
Anything else is a bug and propagates.
"""

from __future__ import annotations

import asyncio
import errno
import select
import socket
import ssl
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from lvsd.checks.base import ProbeResult
from lvsd.config.model import CheckSpec
from lvsd.health.check import LOCAL
from lvsd.model import IPAddress, format_hostport

#: Longest line a line-based protocol (smtp, agent) may send.
LINE_LIMIT = 4096

#: Bytes of an answer echoed in a detail.
ECHO_LIMIT = 64


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a probe body concluded; :func:`run_timed` adds the duration."""

    ok: bool
    detail: str
    reason: str = "ok"
    weight: int | None = None
    drain: bool = False
    local: str = ""  # the errno name when the failure is lvsd's own (reason ``local``)

    @classmethod
    def fail(cls, detail: str, reason: str) -> Verdict:
        return cls(ok=False, detail=detail, reason=reason)


class Fail(Exception):
    """Raised inside a probe body to stop with a failed verdict (never leaves a probe)."""

    def __init__(self, detail: str, reason: str) -> None:
        super().__init__(detail)
        self.verdict = Verdict.fail(detail, reason)


class Progress:
    """The step a probe is in, for the detail of whatever interrupts it.

    ``on_timeout``, when set, is the verdict a timeout in the current step means
    (a UDP probe that heard nothing back is up)."""

    __slots__ = ("on_timeout", "step")

    def __init__(self, step: str) -> None:
        self.step = step
        self.on_timeout: Verdict | None = None


#: Errors that say lvsd itself is short of something (descriptors, buffers, memory,
#: processes, local ports), never that the real server failed: the result is ``local``
#: and the server's health state is held (``docs/health.md``). EPERM/EACCES (a local
#: firewall, a policy) are left out on purpose: they persist, and holding on them would
#: freeze health until an operator noticed.
LOCAL_ERRNOS = {
    errno.EMFILE: "EMFILE",
    errno.ENFILE: "ENFILE",
    errno.ENOBUFS: "ENOBUFS",
    errno.ENOMEM: "ENOMEM",
    errno.EAGAIN: "EAGAIN",  # fork or a socket call out of resources
    errno.EADDRNOTAVAIL: "EADDRNOTAVAIL",  # no local port left, a source not on the host
    errno.EADDRINUSE: "EADDRINUSE",  # the source port still taken
}


class BindError(OSError):
    """The configured source address could not be bound: the config's (or the host's)
    problem, which persists, so a failure (``error``), never ``local``."""


def bind_source(sock: socket.socket, source: tuple[str, int]) -> None:
    """Bind ``sock`` to the spec's source; :class:`BindError` when that fails."""
    try:
        sock.bind(source)
    except OSError as exc:
        raise BindError(exc.errno, exc.strerror) from exc


def local_cause(exc: BaseException) -> str:
    """The errno name when ``exc`` is lvsd's own shortage (:data:`LOCAL_ERRNOS`), else ""."""
    if isinstance(exc, MemoryError):
        return "ENOMEM"
    if not isinstance(exc, OSError) or isinstance(exc, (ssl.SSLError, BindError)):
        return ""
    if "bind" in str(exc):  # asyncio's "error while attempting to bind on address ..."
        return ""
    return LOCAL_ERRNOS.get(exc.errno or 0, "")


def describe_os_error(exc: OSError) -> tuple[str, str]:
    """``(text, reason)`` for a socket error: ``("refused", "refused")``; reason
    ``local`` for lvsd's own shortage (:func:`local_cause`)."""
    if local_cause(exc):
        return f"{(exc.strerror or str(exc)).lower()} (lvsd's own error)", LOCAL
    if isinstance(exc, ConnectionRefusedError):
        return "refused", "refused"
    if isinstance(exc, ConnectionResetError):
        return "reset by peer", "reset"
    if isinstance(exc, BrokenPipeError):
        return "broken pipe", "reset"
    if isinstance(exc, ConnectionAbortedError):
        return "connection aborted", "reset"
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}", "tls"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "cannot bind source address", "error"
    if exc.errno == errno.EADDRINUSE:
        return "source address in use", "error"
    if exc.strerror:
        return exc.strerror.lower(), "error"
    return str(exc) or type(exc).__name__, "error"


def format_timeout(timeout: float) -> str:
    return f"timeout after {timeout}s"


#: A deadline's timer firing this much past its time (seconds) means lvsd's own loop
#: stood still or ran behind: the time is given back to the probe (:class:`Deadline`).
#: Below it (a busy loop's ordinary jitter) nothing is given back, so that a server
#: that does not answer is not found later on a merely busy host.
LATE = 0.25

#: The cause word (``ProbeResult.local``) of a timeout lvsd cannot tell from its own
#: lateness: the loop stood still for longer than the whole timeout.
LAG = "LAG"


class Deadline:
    """A probe's timeout that measures the real server, not lvsd's loop.

    At ``when`` it checks its own lateness: fired more than :data:`LATE` late, the loop
    was held up (a stall, a long callback, too much work for one core), so it moves on
    by that lateness, up to ``budget`` in all (the probe's timeout: at most double the
    time). Then it expires, one loop turn later, so that an answer that had arrived
    by then (read by the loop before the timers) is still a result. ``expire`` is
    called then with the last lateness."""

    __slots__ = ("_budget", "_expire", "_loop", "_timer", "when")

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        when: float,
        budget: float,
        expire: Callable[[float], None],
    ) -> None:
        self._loop = loop
        self._budget = budget
        self._expire = expire
        self.when = when
        self._timer: asyncio.Handle | None = loop.call_at(when, self._step)

    def _step(self) -> None:
        late = self._loop.time() - self.when
        if late > LATE and self._budget > 0:
            more = min(late, self._budget)
            self._budget -= more
            self.when = self._loop.time() + more
            self._timer = self._loop.call_at(self.when, self._step)
            return
        self._timer = self._loop.call_soon(self._expire, late)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def timed_out(step: str, seconds: float, late: float) -> Verdict:
    """What a probe's timeout means: the server's failure, unless the loop stood still
    for longer than the whole timeout at its end (then ``local``, cause :data:`LAG`)."""
    if late > seconds:
        return Verdict(
            ok=False,
            detail=f"{step}: {format_timeout(seconds)}, lvsd's loop {late:.1f}s late (held)",
            reason=LOCAL,
            local=LAG,
        )
    return Verdict.fail(f"{step}: {format_timeout(seconds)}", "timeout")


async def run_timed(
    seconds: float,
    progress: Progress,
    body: Callable[[], Awaitable[Verdict]],
) -> ProbeResult:
    """Run ``body`` within ``seconds`` of the server's time (a :class:`Deadline`);
    expected failures become values."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    task = asyncio.current_task()
    assert task is not None
    expired: list[float] = []  # the lateness at expiry, once expired

    def expire(late: float) -> None:
        expired.append(late)
        task.cancel()

    deadline = Deadline(loop, started + seconds, seconds, expire)
    try:
        try:
            verdict = await body()
        except asyncio.CancelledError:
            if not expired or task.uncancel() > 0:
                raise  # not our deadline's, or another cancel is pending
            verdict = progress.on_timeout or timed_out(progress.step, seconds, expired[0])
        except TimeoutError:  # a bound of the body's own
            verdict = progress.on_timeout or timed_out(progress.step, seconds, 0.0)
        finally:
            deadline.cancel()
    except Fail as failure:
        verdict = failure.verdict
    except asyncio.IncompleteReadError:
        verdict = Verdict.fail(f"{progress.step}: connection closed by peer", "reset")
    except OSError as exc:
        text, reason = describe_os_error(exc)
        verdict = Verdict(
            ok=False, detail=f"{progress.step}: {text}", reason=reason, local=local_cause(exc)
        )
    return ProbeResult(
        ok=verdict.ok,
        detail=verdict.detail,
        duration=loop.time() - started,
        reason=verdict.reason,
        weight=verdict.weight,
        drain=verdict.drain,
        local=verdict.local,
    )


class DatagramQueue(asyncio.DatagramProtocol):
    """Hands datagrams and ICMP errors (``ConnectionRefusedError`` on a connected
    socket) of a datagram endpoint to the waiting probe, in arrival order."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | OSError] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: object) -> None:
        self.queue.put_nowait(data)

    def error_received(self, exc: Exception) -> None:
        if isinstance(exc, OSError):
            self.queue.put_nowait(exc)


def hostport(address: IPAddress, port: int) -> str:
    return format_hostport(address, port)


def local_addr(spec: CheckSpec) -> tuple[str, int] | None:
    """The source address to bind (``spec.source``/``spec.source_port``), if any."""
    if spec.source is None and spec.source_port is None:
        return None
    return (spec.source or "", spec.source_port or 0)


def echo(data: bytes | str) -> str:
    """A short printable rendering of what the peer sent, for a detail."""
    text = data if isinstance(data, str) else data.decode("utf-8", "replace")
    if len(text) > ECHO_LIMIT:
        text = text[:ECHO_LIMIT] + "..."
    return repr(text)


async def open_stream(
    spec: CheckSpec, address: IPAddress, port: int, *, limit: int = 2**16
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection to ``address:port`` from the spec's source, if any."""
    return await asyncio.open_connection(
        str(address), port, local_addr=local_addr(spec), limit=limit
    )


def close_stream(writer: asyncio.StreamWriter) -> None:
    """Close without waiting: the loop closes the socket on its next turn."""
    transport = writer.transport
    if not transport.is_closing():
        transport.abort()


async def read_line(reader: asyncio.StreamReader, progress: Progress) -> bytes:
    """One line (without its end), or ``Fail`` if the peer closed before sending one."""
    try:
        line = await reader.readline()
    except ValueError as exc:  # readline's way of saying the line exceeds the limit
        raise Fail(f"{progress.step}: line too long ({exc})", "protocol") from exc
    if not line:
        raise Fail(f"{progress.step}: connection closed without a reply", "protocol")
    return line.rstrip(b"\r\n")


class Connector:
    """Watches the non-blocking TCP connects of many probes with one epoll set of its
    own, itself watched by the loop as a single reader.

    Cheaper per probe than ``loop.add_writer``/``remove_writer``: one ``epoll_ctl``
    (``EPOLLONESHOT``; closing the socket drops it from the set, so there is no second
    call) and no selector-key bookkeeping. :func:`connector` gives the running loop's
    one."""

    __slots__ = ("__weakref__", "_epoll", "_loop", "_waiting")

    _MASK = select.EPOLLOUT | select.EPOLLONESHOT

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._epoll = select.epoll()
        self._waiting: dict[int, Callable[[int, float], None]] = {}
        loop.add_reader(self._epoll.fileno(), self._ready)

    def _ready(self) -> None:
        waiting = self._waiting
        now = self._loop.time()  # one clock read for the whole batch
        for fd, events in self._epoll.poll(0):
            callback = waiting.pop(fd, None)
            if callback is None:
                continue
            try:
                callback(events, now)
            except Exception as exc:  # a bug in one probe must not lose the others' events
                self._loop.call_exception_handler(
                    {"message": "connect callback failed", "exception": exc}
                )

    def watch(self, fd: int, callback: Callable[[int, float], None]) -> None:
        """Call ``callback(events, now)`` once when the connect on ``fd`` ends
        (``EPOLLOUT``, with ``EPOLLERR``/``EPOLLHUP`` on failure; ``now`` is the loop's
        time, read once for every connect that ended together). Before closing ``fd``
        early, call :meth:`forget`."""
        self._epoll.register(fd, self._MASK)
        self._waiting[fd] = callback

    def forget(self, fd: int) -> None:
        self._waiting.pop(fd, None)

    def close(self) -> None:
        if not self._loop.is_closed():
            self._loop.remove_reader(self._epoll.fileno())
        self._epoll.close()


_connectors: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Connector] = (
    weakref.WeakKeyDictionary()
)


def connector() -> Connector:
    """The running loop's :class:`Connector` (made on first use, dropped with the loop)."""
    loop = asyncio.get_running_loop()
    found = _connectors.get(loop)
    if found is None or found._epoll.closed:
        found = _connectors[loop] = Connector(loop)
    return found
