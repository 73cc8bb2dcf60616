"""Limits of the HTTP port, so that no careless or hostile client hurts the daemon.

* At most MAX_CONNECTIONS connections (fewer under a low descriptor limit,
  :func:`connection_limit`); one more is closed at once.
* A request's headers must be in within HEADER_TIMEOUT of the connect, or of its
  first byte on a kept-alive connection (trickling bytes does not extend it).
* An idle keep-alive connection is closed after KEEPALIVE_TIMEOUT.
* A request is answered, the client's reading included, within ANSWER_TIMEOUT, or
  its connection is reset (:func:`answer_deadline`).
* Bad requests are debug lines, not errors with a traceback (:class:`QuietLog`).

:class:`Site` is aiohttp's TCP site with these limits; ``lvsd.observe.api`` serves on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import socket
import ssl
import struct
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler

log = structlog.get_logger("lvsd.observe.limits")

#: Connections served at once (at most an eighth of the descriptor limit); one more
#: is closed at once.
MAX_CONNECTIONS = 256
#: Seconds from the connect, or from the first byte of a request on a kept-alive
#: connection, until the request's headers are in (slowloris).
HEADER_TIMEOUT = 10.0
#: Seconds an idle keep-alive connection is kept.
KEEPALIVE_TIMEOUT = 15.0
#: Seconds from a request's headers to the last byte of its answer (the client
#: must read it); past it the connection is cut.
ANSWER_TIMEOUT = 30.0
#: Headers a request may have (aiohttp's default is 128, of up to 8190 bytes each:
#: what a connection may buffer before its header deadline).
MAX_HEADERS = 32


def runner_options() -> dict[str, Any]:
    """The keyword arguments of ``web.AppRunner`` for these limits."""
    return {
        "access_log": None,
        "logger": QuietLog(),
        "keepalive_timeout": KEEPALIVE_TIMEOUT,
        "max_headers": MAX_HEADERS,
    }


@web.middleware
async def answer_deadline(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The handler and the sending of its answer within ANSWER_TIMEOUT; past it the
    connection is cut (a client that does not read holds nothing longer)."""
    connection = Connection.of(request)
    if connection is not None:
        connection.answering()
    try:
        async with asyncio.timeout(ANSWER_TIMEOUT):
            response = await handler(request)
            await response.prepare(request)  # here, not after: the sending is timed too
            await response.write_eof()
    except TimeoutError:
        log.debug("http.answer_timeout", path=request.path, timeout=ANSWER_TIMEOUT)
        if request.transport is not None:
            cut(request.transport)
        return web.Response(status=503)  # nobody gets it: the connection is gone
    finally:
        if connection is not None:
            connection.answered()
    return response


def connection_limit() -> int:
    """MAX_CONNECTIONS, or an eighth of the soft descriptor limit when that is less
    (the probes need the rest); at least 4."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(4, min(MAX_CONNECTIONS, soft // 8))


class Site(web.BaseSite):
    """aiohttp's TCP site with every connection going through a :class:`Gate`."""

    __slots__ = ("_host", "_limit", "_port", "_tls")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str | None,
        port: int,
        limit: int,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._limit = limit
        self._tls = tls

    @property
    def name(self) -> str:
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://{self._host or '0.0.0.0'}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None  # set up by the runner before its sites
        self._server = await asyncio.get_running_loop().create_server(
            Gate(server, self._limit), self._host, self._port, ssl=self._tls
        )


class Gate:
    """The protocol factory: a :class:`Connection` for each client while fewer than
    ``limit`` are open; beyond, a connection closed at once (a warning a minute)."""

    def __init__(self, server: web.Server, limit: int) -> None:
        self._server = server
        self._limit = limit
        self.open = 0
        self._refused = 0
        self._warned: float | None = None

    def __call__(self) -> asyncio.Protocol:
        if self.open >= self._limit:
            self._refused += 1
            now = asyncio.get_running_loop().time()
            if self._warned is None or now - self._warned >= 60:
                log.warning("http.refused", limit=self._limit, refused=self._refused)
                self._warned = now
            return Refused()
        self.open += 1
        return Connection(self, self._server())


class Refused(asyncio.Protocol):
    """A connection past the cap: closed as soon as it is made, nothing read."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class Connection(asyncio.Protocol):
    """aiohttp's protocol for one client, with the header and keep-alive deadlines:
    armed at the connect (headers), cleared while a request is answered, armed when
    it is (idle), and again at the first byte of the next request (headers)."""

    def __init__(self, gate: Gate, inner: RequestHandler) -> None:
        self._gate = gate
        self._inner = inner
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._idle = False

    @staticmethod
    def of(request: web.Request) -> Connection | None:
        transport = request.transport
        protocol = transport.get_protocol() if transport is not None else None
        return protocol if isinstance(protocol, Connection) else None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)  # a TCP server's
        self._transport = transport
        self._inner.connection_made(transport)
        self._arm(HEADER_TIMEOUT)

    def data_received(self, data: bytes) -> None:
        if self._idle:
            self._idle = False
            self._arm(HEADER_TIMEOUT)
        self._inner.data_received(data)

    def eof_received(self) -> None:
        self._inner.eof_received()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._transport = None
        self._gate.open -= 1
        self._inner.connection_lost(exc)

    def answering(self) -> None:
        self._idle = False
        self._disarm()

    def answered(self) -> None:
        self._idle = True
        if self._transport is not None:
            self._arm(KEEPALIVE_TIMEOUT)

    def _arm(self, delay: float) -> None:
        self._disarm()
        self._timer = asyncio.get_running_loop().call_later(delay, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        log.debug("http.timeout", idle=self._idle)
        if transport.get_write_buffer_size():
            cut(transport)  # close() would wait for a client that does not read
        else:
            transport.close()


def cut(transport: asyncio.Transport) -> None:
    """Abort a connection with a reset, so that neither lvsd nor the kernel keeps
    sending what is still buffered to a client that does not read."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class QuietLog:
    """aiohttp's server logger: a bad request or a client gone is a debug line
    without traceback (one a request would flood the journal); anything else, a bug
    of a handler, stays an error with its traceback."""

    def __init__(self) -> None:
        self._logger = logging.getLogger("aiohttp.server")

    def debug(self, msg: str, *args: Any, **kwargs: Any) -> None:
        kwargs.pop("exc_info", None)
        self._logger.debug(msg, *args, **kwargs)

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self._logger.warning(msg, *args, **kwargs)

    def exception(self, msg: str, *args: Any, exc_info: Any = True, **kwargs: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if exc is None or isinstance(exc, HttpProcessingError | ConnectionError):
            log.debug("http.bad_request", detail=msg % args, error=str(exc or ""))
            return
        self._logger.error(msg, *args, exc_info=exc, **kwargs)


__all__ = [
    "ANSWER_TIMEOUT",
    "HEADER_TIMEOUT",
    "KEEPALIVE_TIMEOUT",
    "MAX_CONNECTIONS",
    "MAX_HEADERS",
    "Connection",
    "Gate",
    "QuietLog",
    "Site",
    "answer_deadline",
    "connection_limit",
    "cut",
    "runner_options",
]
