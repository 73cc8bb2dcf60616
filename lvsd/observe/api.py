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
  part on the loop: about 2 ms a MB, docs/operations.md).
* ``GET /status``: the status report as JSON (also one dump); the status page
  (``lvsd.observe.page``) when ``Accept`` asks for ``text/html``, as a browser does.
* ``GET /``: the status page, with the recent transitions of a :class:`HistorySource`.
* ``GET /healthz``: 200 while the process serves.
* ``GET /readyz``: 200 once every check has run at least once, else 503.

Connections are capped and timed out by ``lvsd.observe.limits``. With a web config
file (``lvsd.config.web``) the port speaks TLS and every path asks for basic auth
(:func:`basic_auth`).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import zlib
from collections.abc import Awaitable, Callable, Generator, Mapping, Sequence
from typing import Protocol, runtime_checkable

import bcrypt
import structlog
from aiohttp import web
from aiohttp.typedefs import Middleware
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS_TYPE

from lvsd.config.web import WebConfig
from lvsd.errors import IpvsError
from lvsd.health.state import Transition
from lvsd.model import Snapshot, Table, parse_hostport
from lvsd.observe import limits, page
from lvsd.observe.metrics import Metrics
from lvsd.observe.status import StatusReport
from lvsd.observe.steps import drive, release

log = structlog.get_logger("lvsd.observe.api")

#: The port lvsd listens on by default (``metrics_listen``).
DEFAULT_PORT = 9475

TEXT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: zlib level of a gzip answer: level 1 is 3-5 times faster than 6 for 12 % more bytes.
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


@runtime_checkable
class HistorySource(StatusSource, Protocol):
    """A source that also keeps the last transitions (the status page lists them)."""

    def recent(self) -> Sequence[tuple[float, Transition]]:
        """(seconds ago, transition) of the last transitions, newest first."""
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
    return _accepts(accept_encoding, ("gzip", "x-gzip"))


def wants_html(accept: str) -> bool:
    """Whether an ``Accept`` header takes ``text/html`` (a browser's does, curl's not)."""
    return _accepts(accept, ("text/html",))


def _accepts(header: str, names: tuple[str, ...]) -> bool:
    """Whether an ``Accept``-like header lists one of ``names`` with a q above 0."""
    for part in header.split(","):
        item, _, params = part.partition(";")
        if item.strip().lower() in names:
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


async def _current(source: StatusSource) -> StatusReport:
    """The report of a fresh dump (without kernel weights when the dump fails)."""
    table: Table | None
    try:
        table = (await source.snapshot()).table
    except IpvsError:
        table = None
    return await report(source, table)


async def _status(request: web.Request) -> web.Response:
    if wants_html(request.headers.get("Accept", "")):
        return await _page(request)
    built = await _current(request.app[SOURCE_KEY])
    return web.json_response(built.to_json(), dumps=lambda o: json.dumps(o, indent=1) + "\n")


async def _page(request: web.Request) -> web.Response:
    source = request.app[SOURCE_KEY]
    built = await _current(source)
    recent = source.recent() if isinstance(source, HistorySource) else ()
    response = web.Response(text=page.render(built, recent), content_type="text/html")
    response.headers["Cache-Control"] = "no-store"
    return response


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def _readyz(request: web.Request) -> web.Response:
    if request.app[SOURCE_KEY].ready:
        return web.Response(text="ready\n")
    return web.Response(status=503, text="not ready: some checks have not run yet\n")


#: An aiohttp request handler.
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


#: Basic auth checks at once: each costs a bcrypt hash (tens of ms at cost 10) in a
#: thread; more wait, so wrong passwords cannot take every core.
AUTH_CHECKS = 2


def basic_auth(users: Mapping[str, bytes]) -> Middleware:
    """A middleware that answers 401 unless the request carries a user of ``users``
    (not empty) with the password its bcrypt hash is of. A good pair is remembered (a
    digest of it), so a scraper pays bcrypt once, as with the exporter toolkit."""
    known: set[bytes] = set()
    gate = asyncio.Semaphore(AUTH_CHECKS)
    # an unknown user is checked against a known user's hash: the same time as a
    # wrong password, so the answer's delay does not tell which users exist
    stand_in = next(iter(users.values()))

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        user, password = _credentials(request.headers.get("Authorization", ""))
        if user is not None and password is not None:
            hashed = users.get(user)
            digest = hashlib.sha256(b"\0".join((user.encode(), password, hashed or b""))).digest()
            if hashed is not None and digest in known:
                return await handler(request)
            async with gate:
                ok = await asyncio.to_thread(bcrypt.checkpw, password, hashed or stand_in)
            if ok and hashed is not None:
                if len(known) < 64 * len(users):  # each user's passwords, a few
                    known.add(digest)
                return await handler(request)
            log.info("http.unauthorized", path=request.path, user=user)
        return web.Response(
            status=401,
            text="401 unauthorized\n",
            headers={"WWW-Authenticate": 'Basic realm="lvsd", charset="UTF-8"'},
        )

    return middleware


def _credentials(header: str) -> tuple[str | None, bytes | None]:
    """The user and password of a ``Basic`` Authorization header (None, None if none)."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return None, None
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None, None
    user, colon, password = decoded.partition(b":")
    if not colon:
        return None, None
    return user.decode("utf-8", "replace"), password


def make_app(
    source: StatusSource, metrics: Metrics, web_config: WebConfig | None = None
) -> web.Application:
    """The aiohttp application (for tests; :func:`start` serves it)."""
    middlewares: list[Middleware] = [limits.answer_deadline]
    if web_config is not None and web_config.users:
        middlewares.append(basic_auth(web_config.users))
    app = web.Application(middlewares=middlewares)
    app[SOURCE_KEY] = source
    app[METRICS_KEY] = metrics
    app[LOCK_KEY] = asyncio.Lock()
    app.router.add_get("/", _page)
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/status", _status)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    return app


#: The running HTTP server, as the daemon holds it until it stops.
Runner = web.AppRunner


async def start(
    listen: str, source: StatusSource, metrics: Metrics, web_config: WebConfig | None = None
) -> Runner:
    """Serve on ``listen`` (``"127.0.0.1:9475"``, ``"[::1]:9475"``), with the TLS and
    basic auth of ``web_config``. The caller stops it with ``await runner.cleanup()``.
    Raises ValueError for a bad address and OSError when the port cannot be bound or
    the certificate not loaded (ssl.SSLError is one)."""
    host, port = parse_listen(listen)
    tls = web_config.ssl_context() if web_config is not None else None
    runner = web.AppRunner(make_app(source, metrics, web_config), **limits.runner_options())
    await runner.setup()
    site = limits.Site(runner, host or None, port, limits.connection_limit(), tls)
    try:
        await site.start()
    except OSError:
        await runner.cleanup()
        raise
    return runner


def bound_port(runner: Runner) -> int:
    """The port a runner listens on (for ``listen`` with port 0)."""
    for address in runner.addresses:
        if isinstance(address, tuple):
            return int(address[1])
    raise RuntimeError("runner is not listening")


__all__ = [
    "DEFAULT_PORT",
    "HistorySource",
    "StatusSource",
    "SteppedSource",
    "basic_auth",
    "bound_port",
    "make_app",
    "parse_listen",
    "report",
    "start",
    "wants_gzip",
    "wants_html",
    "wants_openmetrics",
]
