"""One HTTP/1.1 exchange on a socket, for the http probe: connect through the loop's
:class:`~lvsd.checks.net.Connector`, optional TLS, one request, and an httptools
(llhttp) parse of the status line, headers and body (Content-Length, chunked or
until close).

:class:`Exchange` is the asyncio protocol; it raises :class:`BadResponse` for what
is not HTTP, :class:`Disconnected` when the peer closes before the status line and
:class:`CutShort` when it closes inside a framed body.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from collections.abc import Callable

import httptools

from lvsd.checks.base import Target
from lvsd.checks.net import bind_source, connector, local_addr
from lvsd.config.model import CheckSpec

#: Bytes of status line and headers accepted before the answer is refused.
HEADER_LIMIT = 65536

_STREAM_NONBLOCK = socket.SOCK_STREAM | socket.SOCK_NONBLOCK
_IN_PROGRESS = (errno.EINPROGRESS, errno.EAGAIN, errno.EALREADY)


class BadResponse(Exception):
    """The answer is not HTTP/1.x (or exceeds a limit)."""


class Disconnected(Exception):
    """The peer closed before the status line was complete."""


class CutShort(Exception):
    """The peer closed inside a body framed by Content-Length or chunks."""


async def connect(spec: CheckSpec, target: Target, port: int) -> socket.socket:
    """A connected non-blocking TCP socket to the target, from the spec's source."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if target.address.version == 6 else socket.AF_INET
    sock = socket.socket(family, _STREAM_NONBLOCK)
    ended: asyncio.Future[int] = loop.create_future()

    def ready(events: int, _now: float) -> None:
        if not ended.done():
            ended.set_result(events)

    try:
        source = local_addr(spec)
        if source is not None:
            bind_source(sock, source)
        err = sock.connect_ex((str(target.address), port))
        if err in _IN_PROGRESS:
            connector().watch(sock.fileno(), ready)
            try:
                await ended
            finally:
                connector().forget(sock.fileno())
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise OSError(err, os.strerror(err))
    except BaseException:
        sock.close()
        raise
    return sock


def _refuse(field: str, text: str) -> str | None:
    """Why ``text`` cannot go in a request line or header, else None."""
    if any(ch in text for ch in "\r\n\0"):
        return f"bad {field} {text!r}: contains CR, LF or NUL"
    return None


def build_request(
    method: str, path: str, host: str, headers: tuple[tuple[str, str], ...], close: bool
) -> bytes | str:
    """The request's bytes, or why it cannot be sent (a header with a line break)."""
    for field, text in (("method", method), ("path", path)):
        why = _refuse(field, text) or (
            f"bad {field} {text!r}: contains a space" if " " in text else None
        )
        if why:
            return why
    lines = {"host": f"Host: {host}", "user-agent": "User-Agent: lvsd", "accept": "Accept: */*"}
    for name, value in headers:
        why = _refuse("header", name) or _refuse("header", value)
        if why or not name or ":" in name or " " in name:
            return why or f"bad header name {name!r}"
        lines[name.lower()] = f"{name}: {value}"
    if close:
        lines["connection"] = "Connection: close"
    head = "\r\n".join([f"{method} {path} HTTP/1.1", *lines.values()])
    return (head + "\r\n\r\n").encode("latin-1", "replace")


class Exchange(asyncio.Protocol):
    """Parses one response on a connection; ``consume`` gets the body piece by piece
    and returns False to stop reading it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._loop = asyncio.get_running_loop()
        self._waiter: asyncio.Future[None] | None = None
        self._error: Exception | None = None
        self.consume: Callable[[bytes], bool] = _keep_nothing
        self.reset(head_only=False)

    def reset(self, *, head_only: bool) -> None:
        """Ready for the next response (``head_only``: a HEAD request, no body)."""
        self._parser = httptools.HttpResponseParser(self)
        self._head_only = head_only
        self._head_bytes = 0
        self._header_bytes = 0
        self.status = 0
        self.headers: dict[bytes, bytes] = {}
        self._name = b""
        self.head_done = False
        self.message_done = False
        self._framed = False
        self._reusable = False
        self._got = 0

    # --- asyncio.Protocol --------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.message_done or self._error is not None:
            return
        if not self.head_done:
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:  # a limit, raised by on_header
            cause = exc.__context__
            self._fail(cause if isinstance(cause, BadResponse) else BadResponse(str(exc)))
            return
        except httptools.HttpParserError as exc:
            self._fail(BadResponse(_parser_text(exc)))
            return
        if not self.head_done and self._head_bytes > HEADER_LIMIT:
            self._fail(BadResponse(f"headers exceed {HEADER_LIMIT} bytes"))

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.message_done or self._error is not None:
            self._wake()
            return
        if exc is not None:
            self._fail(exc)
        elif not self.head_done:
            self._fail(Disconnected())
        elif self._framed:
            self._fail(CutShort(f"connection closed after {self._got} bytes"))
        else:  # a body delimited by the end of the connection
            self._complete()

    # --- httptools callbacks -----------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > HEADER_LIMIT:
            raise BadResponse(f"headers exceed {HEADER_LIMIT} bytes")
        key = name.lower()
        self.headers[key] = value
        if key in (b"content-length", b"transfer-encoding"):
            self._framed = True

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        self.head_done = True
        self._reusable = self._parser.should_keep_alive()
        if self._head_only or self.status in (204, 304) or self.status < 200:
            self._complete()
        else:
            self._wake()

    def on_body(self, body: bytes) -> None:
        self._got += len(body)
        if not self.message_done and not self.consume(body):
            self._complete()

    def on_message_complete(self) -> None:
        self._complete()

    # --- for the probe -----------------------------------------------------------

    def keep_alive(self) -> bool:
        """The connection may carry another request."""
        return self.message_done and not self.closed and not self._head_only and self._reusable

    async def wait(self, done: Callable[[], bool]) -> None:
        """Until ``done()`` (or raise what broke the exchange)."""
        while not done():
            if self._error is not None:
                raise self._error
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if self._error is not None and not self.message_done:
            raise self._error

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    def _complete(self) -> None:
        self.message_done = True
        self._wake()

    def _fail(self, exc: Exception) -> None:
        self._error = exc
        self.close()
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


def _keep_nothing(_body: bytes) -> bool:
    return True


def _parser_text(exc: httptools.HttpParserError) -> str:
    text = str(exc) or type(exc).__name__
    return text.removeprefix("Invalid ").strip() or text
