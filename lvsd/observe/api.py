"""The read-only HTTP endpoint: ``/metrics``, ``/status``, ``/healthz``, ``/readyz``.

No operator action is served here (drains and reloads go through the control socket).

* ``GET /metrics``: the Prometheus text format, or OpenMetrics when the ``Accept``
  header asks for ``application/openmetrics-text``. Each scrape makes ONE kernel dump
  (:meth:`StatusSource.snapshot`), builds the status report of that table and
  updates the metrics from both.

  A scrape of many destinations is a lot of pure Python. It runs on the event loop in
  steps (``lvsd.observe.status.build_steps``, ``Metrics.update_steps``,
  ``Metrics.exposition_parts``) that :func:`lvsd.observe.steps.drive` groups into
  slices, so probes due meanwhile start on time. The garbage collector runs as usual:
  what a scrape builds each time is made of untracked arrays, bytes and label sets
  kept from the config's load (frozen with it, ``lvsd.daemon.heap``), so its
  collections stay small.
  With ``Accept-Encoding: gzip`` the answer is compressed (zlib level 1, part by
  part on the loop: about 1.5 ms a MB, docs/operations.md).
* ``GET /status``: the status report as JSON (also one dump).
* ``GET /healthz``: 200 while the process serves.
* ``GET /readyz``: 200 once every check has run at least once, else 503.

A careless or hostile client cannot hurt the daemon: connections are capped
(MAX_CONNECTIONS, fewer under a low descriptor limit; one more is closed at once), a
request's headers must be in within HEADER_TIMEOUT of the connect or of its first
byte, an idle keep-alive connection is closed after KEEPALIVE_TIMEOUT, and an answer
not delivered within ANSWER_TIMEOUT is cut. Bad requests are debug lines, not errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import resource
import socket
import struct
import sys
import zlib
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Protocol, runtime_checkable

import structlog
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestHandler
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_TYPE

from lvsd.errors import IpvsError
from lvsd.model import Snapshot, Table, parse_hostport
from lvsd.observe.metrics import Metrics
from lvsd.observe.status import StatusReport
from lvsd.observe.steps import drive, release

log = structlog.get_logger("lvsd.observe.api")

#: The port lvsd listens on by default (``metrics_listen``).
DEFAULT_PORT = 9475

TEXT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

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
#: zlib level of a gzip answer: level 1 is 3-4 times faster than 6 for 10 % more bytes.
GZIP_LEVEL = 1


class StatusSource(Protocol):
    """What the endpoint reads from the daemon."""

    @property
    def ready(self) -> bool:
        """Every check has reported at least once."""
        ...

    async def snapshot(self) -> Snapshot:
        """One netlink dump of the kernel table with counters (raises IpvsError)."""
        ...

    def report(self, table: Table | None) -> StatusReport:
        """The status report as of now, with the kernel weights of ``table``."""
        ...


@runtime_checkable
class SteppedSource(StatusSource, Protocol):
    """A source that can also build its report in steps (the endpoint then lets the
    event loop run between them)."""

    def report_steps(self, table: Table | None) -> Generator[None, None, StatusReport]:
        """:meth:`StatusSource.report` as ``lvsd.observe.status.build_steps`` gives it."""
        ...


#: Bytes of a /metrics answer written between two yields to the event loop: a reader
#: that keeps up (Prometheus on the same host) would otherwise take a large answer in
#: one go, with every probe due meanwhile waiting.
SEND_STEP = 2 * 1024 * 1024


async def report(source: StatusSource, table: Table | None) -> StatusReport:
    """The source's report of ``table``, in steps when it can. A report whose steps
    found the health state out of step with the config (a reload in between) is
    built again in one go."""
    if isinstance(source, SteppedSource):
        try:
            return await drive(source.report_steps(table))
        except ValueError:
            pass
    return source.report(table)


def parse_listen(listen: str) -> tuple[str, int]:
    """``"127.0.0.1:9475"`` or ``"[::1]:9475"`` to a host and a port; raises ValueError."""
    try:
        address, port = parse_hostport(listen)
    except ValueError as exc:
        raise ValueError(f"metrics_listen: {exc}") from None
    return str(address), port


def wants_gzip(accept_encoding: str) -> bool:
    """Whether an ``Accept-Encoding`` header takes gzip (``gzip;q=0`` refuses it)."""
    for part in accept_encoding.split(","):
        coding, _, params = part.partition(";")
        if coding.strip().lower() in ("gzip", "x-gzip"):
            for param in params.split(";"):
                name, _, value = param.partition("=")
                if name.strip().lower() == "q":
                    try:
                        return float(value) > 0
                    except ValueError:
                        return False
            return True
    return False


def wants_openmetrics(accept: str) -> bool:
    """Whether an ``Accept`` header asks for OpenMetrics (as Prometheus sends it)."""
    for part in accept.split(","):
        media = part.split(";", 1)[0].strip().lower()
        if media == "application/openmetrics-text":
            return True
    return False


SOURCE_KEY = web.AppKey("source", StatusSource)
METRICS_KEY = web.AppKey("metrics", Metrics)
LOCK_KEY = web.AppKey("scrape_lock", asyncio.Lock)


async def _metrics(request: web.Request) -> web.StreamResponse:
    source = request.app[SOURCE_KEY]
    metrics = request.app[METRICS_KEY]
    openmetrics = wants_openmetrics(request.headers.get("Accept", ""))
    try:
        snapshot = await source.snapshot()
    except IpvsError as exc:
        log.warning("scrape.failed", path="/metrics", error=str(exc))
        return web.Response(status=503, text=f"kernel table unreadable: {exc}\n")
    built = await report(source, snapshot.table)
    # One scrape at a time: update then render must not interleave with another's.
    async with request.app[LOCK_KEY]:
        await drive(metrics.update_steps(snapshot, built))
        parts = await drive(metrics.exposition_parts(openmetrics))
    # Not kept while the answer is sent; freed in steps (at once, the counters and
    # reports of many destinations would hold the loop).
    held: list[list[object]] = [list(snapshot.dest_stats.values()), list(built.services)]
    del snapshot, built
    await drive(release(held))
    response = web.StreamResponse()
    response.headers["Content-Type"] = OPENMETRICS_TYPE if openmetrics else TEXT_TYPE
    response.headers["Vary"] = "Accept-Encoding"
    gzip = None
    if wants_gzip(request.headers.get("Accept-Encoding", "")):
        gzip = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # 31: the gzip container
        response.headers["Content-Encoding"] = "gzip"
    else:
        response.content_length = sum(len(part) for part in parts)
    await response.prepare(request)
    # A part at a time: the loop runs whenever the transport's buffer is full, and
    # after every SEND_STEP bytes of exposition (not every slice: on a busy loop each
    # yield waits for a whole round of other callbacks).
    sent = 0
    for part in parts:
        data = gzip.compress(part) if gzip is not None else part
        if data:
            await response.write(data)
        sent += len(part)
        if sent >= SEND_STEP:
            await asyncio.sleep(0)
            sent = 0
    if gzip is not None:
        await response.write(gzip.flush())
    await response.write_eof()
    return response


async def _status(request: web.Request) -> web.Response:
    source = request.app[SOURCE_KEY]
    table: Table | None
    try:
        table = (await source.snapshot()).table
    except IpvsError:
        table = None
    built = await report(source, table)
    return web.json_response(built.to_json(), dumps=lambda o: json.dumps(o, indent=1) + "\n")


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _readyz(request: web.Request) -> web.Response:
    if request.app[SOURCE_KEY].ready:
        return web.Response(text="ready\n")
    return web.Response(status=503, text="not ready: some checks have not run yet\n")


@web.middleware
async def _answer_deadline(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The handler and the sending of its answer within ANSWER_TIMEOUT; past it the
    connection is cut (a client that does not read holds nothing longer)."""
    connection = _Connection.of(request)
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


def make_app(source: StatusSource, metrics: Metrics) -> web.Application:
    """The aiohttp application (for tests; :func:`start` serves it)."""
    app = web.Application(middlewares=[_answer_deadline])
    app[SOURCE_KEY] = source
    app[METRICS_KEY] = metrics
    app[LOCK_KEY] = asyncio.Lock()
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/status", _status)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    return app


#: The running HTTP server, as the daemon holds it until it stops.
Runner = web.AppRunner


async def start(listen: str, source: StatusSource, metrics: Metrics) -> Runner:
    """Serve on ``listen`` (``"127.0.0.1:9475"``, ``"[::1]:9475"``). The caller stops
    it with ``await runner.cleanup()``. Raises ValueError for a bad address and
    OSError when the port cannot be bound."""
    host, port = parse_listen(listen)
    runner = web.AppRunner(
        make_app(source, metrics),
        access_log=None,
        logger=QuietLog(),
        keepalive_timeout=KEEPALIVE_TIMEOUT,
        max_headers=MAX_HEADERS,
    )
    await runner.setup()
    site = _Site(runner, host or None, port, connection_limit())
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    return runner


def connection_limit() -> int:
    """MAX_CONNECTIONS, or an eighth of the soft descriptor limit when that is less
    (the probes need the rest); at least 4."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(4, min(MAX_CONNECTIONS, soft // 8))


class _Site(web.BaseSite):
    """aiohttp's TCP site with every connection going through a :class:`_Gate`."""

    __slots__ = ("_host", "_limit", "_port")

    def __init__(self, runner: web.BaseRunner, host: str | None, port: int, limit: int) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._limit = limit

    @property
    def name(self) -> str:
        return f"http://{self._host or '0.0.0.0'}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None  # set up by the runner before its sites
        self._server = await asyncio.get_running_loop().create_server(
            _Gate(server, self._limit), self._host, self._port
        )


class _Gate:
    """The protocol factory: a :class:`_Connection` for each client while fewer than
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
            return _Refused()
        self.open += 1
        return _Connection(self, self._server())


class _Refused(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.close()


class _Connection(asyncio.Protocol):
    """aiohttp's protocol for one client, with the header and keep-alive deadlines:
    armed at the connect (headers), cleared while a request is answered, armed when
    it is (idle), and again at the first byte of the next request (headers)."""

    def __init__(self, gate: _Gate, inner: RequestHandler) -> None:
        self._gate = gate
        self._inner = inner
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._idle = False

    @staticmethod
    def of(request: web.Request) -> _Connection | None:
        transport = request.transport
        protocol = transport.get_protocol() if transport is not None else None
        return protocol if isinstance(protocol, _Connection) else None

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


def bound_port(runner: Runner) -> int:
    """The port a runner listens on (for ``listen`` with port 0)."""
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("runner is not listening")


__all__ = [
    "DEFAULT_PORT",
    "QuietLog",
    "StatusSource",
    "SteppedSource",
    "bound_port",
    "connection_limit",
    "make_app",
    "parse_listen",
    "report",
    "start",
    "wants_gzip",
    "wants_openmetrics",
]
