"""The http and https probes against loopback aiohttp servers and raw misbehaving ones,
with throwaway certificates made by the openssl CLI."""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from aiohttp import web

from lvsd.checks.http import HttpProbe
from lvsd.config.model import HttpOptions, StatusRange
from lvsd.model import format_hostport
from tests.checks.conftest import TIMEOUT, Certs, Loopback, make_spec

BIG = b"0123456789abcdef" * (1 << 17)  # 2 MiB

PEER = web.RequestKey("peer", tuple)

StartWeb = Callable[..., Awaitable[int]]


def _app(net: Loopback, seen: list[web.Request]) -> web.Application:
    async def ok(request: web.Request) -> web.Response:
        assert request.transport is not None
        request[PEER] = request.transport.get_extra_info("peername")
        seen.append(request)
        return web.Response(text="all ok here")

    async def fail(request: web.Request) -> web.Response:
        return web.Response(status=500, text="broken")

    async def slow(request: web.Request) -> web.Response:
        await net.hang()
        return web.Response(text="late")

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=BIG)

    async def latin(request: web.Request) -> web.Response:
        return web.Response(
            body="caf\xe9".encode("latin-1"), content_type="text/plain", charset="latin-1"
        )

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/ok")

    app = web.Application()
    app.router.add_route("*", "/ok", ok)
    app.router.add_get("/500", fail)
    app.router.add_get("/slow", slow)
    app.router.add_get("/big", big)
    app.router.add_get("/latin", latin)
    app.router.add_get("/redirect", redirect)
    return app


@pytest.fixture
async def start_web(net: Loopback) -> AsyncIterator[StartWeb]:
    """Start aiohttp servers on the loopback address; returns their port."""
    runners: list[web.AppRunner] = []

    async def start(
        seen: list[web.Request] | None = None, tls: ssl.SSLContext | None = None
    ) -> int:
        runner = web.AppRunner(_app(net, [] if seen is None else seen), shutdown_timeout=0.1)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, net.host, 0, ssl_context=tls)
        await site.start()
        return int(runner.addresses[0][1])

    try:
        yield start
    finally:
        net.stop.set()
        for runner in runners:
            await runner.cleanup()


async def _get(
    net: Loopback, port: int, kind: str = "http", **options: object
) -> tuple[bool, str, str]:
    probe = HttpProbe(make_spec(kind, HttpOptions(**options)), net.target(port))  # type: ignore[arg-type]
    try:
        result = await probe.probe()
    finally:
        await probe.close()
    return result.ok, result.detail, result.reason


# --- plain http -----------------------------------------------------------------------


async def test_ok(net: Loopback, start_web: StartWeb) -> None:
    """A 200 is up; the request went to the address with Connection: close."""
    seen: list[web.Request] = []
    port = await start_web(seen)
    assert (True, "GET /ok: status 200", "ok") == await _get(net, port, path="/ok")
    assert "close" == seen[0].headers["Connection"]
    assert format_hostport(net.address, port) == seen[0].headers["Host"]


async def test_status_500(net: Loopback, start_web: StartWeb) -> None:
    """A 500 is down, naming the wanted ranges."""
    port = await start_web()
    assert (False, "GET /500: status 500, want 200-299", "status") == await _get(
        net, port, path="/500"
    )


async def test_status_ranges(net: Loopback, start_web: StartWeb) -> None:
    """A status inside any configured range is up (a 302 is not followed)."""
    port = await start_web()
    wanted = (StatusRange(low=200, high=200), StatusRange(low=301, high=302))
    assert (True, "GET /redirect: status 302", "ok") == await _get(
        net, port, path="/redirect", status=wanted
    )
    assert (False, "GET /500: status 500, want 200, 301-302", "status") == await _get(
        net, port, path="/500", status=wanted
    )


async def test_body_regex(net: Loopback, start_web: StartWeb) -> None:
    """The body is searched with the regex: a match is up, no match is down."""
    port = await start_web()
    assert (True, "GET /ok: status 200", "ok") == await _get(
        net, port, path="/ok", body_regex=r"ok\s+here"
    )
    assert (False, "GET /ok: body does not match 'ready'", "body") == await _get(
        net, port, path="/ok", body_regex="ready"
    )


async def test_body_regex_uses_charset(net: Loopback, start_web: StartWeb) -> None:
    """The body is decoded with the response's charset before matching."""
    port = await start_web()
    ok, detail, _ = await _get(net, port, path="/latin", body_regex="caf\xe9")
    assert ok, detail


async def test_bad_regex_fails_every_probe(net: Loopback, start_web: StartWeb) -> None:
    """A regex that does not compile is a failed probe naming it, not an exception."""
    port = await start_web()
    ok, detail, reason = await _get(net, port, path="/ok", body_regex="(")
    assert (False, "error") == (ok, reason)
    assert detail.startswith("GET /ok: bad body_regex '(': ")


async def test_body_not_regex(net: Loopback, start_web: StartWeb) -> None:
    """A body matching body_not_regex is down; one that does not match is up."""
    port = await start_web()
    assert (False, "GET /ok: body matches 'ok h'", "body") == await _get(
        net, port, path="/ok", body_not_regex="ok h"
    )
    assert (True, "GET /ok: status 200", "ok") == await _get(
        net, port, path="/ok", body_regex="here", body_not_regex="maintenance"
    )


async def test_header_regex(net: Loopback, start_web: StartWeb) -> None:
    """Each header_regex header must be present (any case) and its value match."""
    port = await start_web()
    assert (True, "GET /latin: status 200", "ok") == await _get(
        net, port, path="/latin", header_regex=(("content-type", "^text/plain"),)
    )
    assert (
        False,
        "GET /latin: header Content-Type 'text/plain; charset=latin-1' does not match 'json'",
        "body",
    ) == await _get(net, port, path="/latin", header_regex=(("Content-Type", "json"),))
    assert (False, "GET /latin: no header X-Ready", "body") == await _get(
        net, port, path="/latin", header_regex=(("X-Ready", ""),)
    )


async def test_bad_header_regex_fails_every_probe(net: Loopback, start_web: StartWeb) -> None:
    """A header regex that does not compile fails the probe naming the header."""
    port = await start_web()
    ok, detail, reason = await _get(net, port, path="/ok", header_regex=(("Server", "["),))
    assert (False, "error") == (ok, reason)
    assert detail.startswith("GET /ok: bad header_regex Server '[': ")


async def test_body_digest(net: Loopback, start_web: StartWeb) -> None:
    """The MD5 of the whole body (beyond the 1 MiB kept for regexes) is compared."""
    port = await start_web()
    good = hashlib.md5(BIG, usedforsecurity=False).hexdigest()
    assert (True, "GET /big: status 200", "ok") == await _get(
        net, port, path="/big", body_digest=good.upper()
    )
    bad = "0" * 32
    assert (False, f"GET /big: body digest {good}, want {bad}", "body") == await _get(
        net, port, path="/big", body_digest=bad
    )


async def test_host_method_and_headers(net: Loopback, start_web: StartWeb) -> None:
    """Method, Host (virtual host) and extra headers are sent as configured."""
    seen: list[web.Request] = []
    port = await start_web(seen)
    ok, detail, _ = await _get(
        net,
        port,
        path="/ok",
        method="HEAD",
        host="www.example.test",
        headers=(("X-Check", "lvsd"),),
    )
    assert ok, detail
    request = seen[0]
    assert ("HEAD", "www.example.test", "lvsd") == (
        request.method,
        request.headers["Host"],
        request.headers["X-Check"],
    )


async def test_keepalive_reuses_the_connection(net: Loopback, start_web: StartWeb) -> None:
    """With keepalive, two probes by one instance use one connection; close() ends it."""
    seen: list[web.Request] = []
    port = await start_web(seen)
    probe = HttpProbe(make_spec("http", HttpOptions(path="/ok", keepalive=True)), net.target(port))
    try:
        first = await probe.probe()
        second = await probe.probe()
    finally:
        await probe.close()
    assert (True, True) == (first.ok, second.ok)
    assert "Connection" not in seen[0].headers
    assert 2 == len(seen)
    assert seen[0][PEER] == seen[1][PEER]


async def test_refused(net: Loopback) -> None:
    """Nothing listening: 'connect ...: refused'."""
    port = net.free_port()
    where = format_hostport(net.address, port)
    assert (False, f"connect {where}: refused", "refused") == await _get(net, port)


async def test_slow_answer_times_out(net: Loopback, start_web: StartWeb) -> None:
    """A server slower than the timeout: the request step times out."""
    port = await start_web()
    assert (False, f"GET /slow: timeout after {TIMEOUT}s", "timeout") == await _get(
        net, port, path="/slow"
    )


async def test_silent_server_times_out(net: Loopback) -> None:
    """A server that accepts and never answers: timeout in the request step."""
    port = await net.tcp(net.hang_handler())
    assert (False, f"GET /: timeout after {TIMEOUT}s", "timeout") == await _get(net, port)


async def _raw(net: Loopback, answer: bytes) -> int:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()

    return await net.tcp(handler)


async def test_closed_before_answer(net: Loopback) -> None:
    """A server that reads the request and closes: 'server disconnected'."""
    port = await _raw(net, b"")
    assert (False, "GET /: server disconnected", "reset") == await _get(net, port)


async def test_closed_mid_body(net: Loopback) -> None:
    """A body cut short (Content-Length not reached) is down."""
    port = await _raw(net, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
    ok, detail, reason = await _get(net, port)
    assert (False, "reset") == (ok, reason)
    assert detail.startswith("GET /: body: body cut short: ")


async def test_garbage_answer(net: Loopback) -> None:
    """Something that is not HTTP is a protocol error."""
    port = await _raw(net, b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
    ok, detail, reason = await _get(net, port)
    assert (False, "protocol") == (ok, reason)
    assert detail.startswith("GET /: bad response: ")


# --- https ----------------------------------------------------------------------------


def _server_tls(cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    if client_ca is not None:
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


async def test_https_trusted(net: Loopback, start_web: StartWeb, certs: Certs) -> None:
    """A certificate from the configured CA, valid for the address, is up."""
    port = await start_web(tls=_server_tls(str(certs.server_cert), str(certs.server_key)))
    assert (True, "GET /ok: status 200", "ok") == await _get(
        net, port, "https", path="/ok", ca_file=str(certs.ca)
    )


async def test_https_sni_name(net: Loopback, start_web: StartWeb, certs: Certs) -> None:
    """`sni` is the name verified (and sent); a name the certificate lacks fails."""
    port = await start_web(tls=_server_tls(str(certs.server_cert), str(certs.server_key)))
    ok, detail, _ = await _get(
        net, port, "https", path="/ok", ca_file=str(certs.ca), sni="www.example.test"
    )
    assert ok, detail
    ok, detail, reason = await _get(
        net, port, "https", path="/ok", ca_file=str(certs.ca), sni="other.example.test"
    )
    assert (False, "tls") == (ok, reason)
    assert detail.startswith("TLS: certificate verify failed: "), detail
    assert "other.example.test" in detail


async def test_https_untrusted(net: Loopback, start_web: StartWeb, certs: Certs) -> None:
    """A certificate from another CA is down with the verification error."""
    port = await start_web(tls=_server_tls(str(certs.rogue_cert), str(certs.rogue_key)))
    assert (
        False,
        "TLS: certificate verify failed: unable to get local issuer certificate",
        "tls",
    ) == await _get(net, port, "https", path="/ok", ca_file=str(certs.ca))


async def test_https_verify_off(net: Loopback, start_web: StartWeb, certs: Certs) -> None:
    """With verify = false, an untrusted certificate is accepted."""
    port = await start_web(tls=_server_tls(str(certs.rogue_cert), str(certs.rogue_key)))
    assert (True, "GET /ok: status 200", "ok") == await _get(
        net, port, "https", path="/ok", verify=False
    )


async def test_https_handshake_failure(net: Loopback, start_web: StartWeb) -> None:
    """Talking TLS to a plain-HTTP server is a TLS failure."""
    port = await start_web()
    assert (False, "TLS: wrong version number", "tls") == await _get(
        net, port, "https", path="/ok", verify=False
    )


async def test_https_silent_handshake(net: Loopback, certs: Certs) -> None:
    """A server that accepts and never does the handshake: timeout in the connect step."""
    port = await net.tcp(net.hang_handler())
    where = format_hostport(net.address, port)
    assert (False, f"connect {where}: timeout after {TIMEOUT}s", "timeout") == await _get(
        net, port, "https", ca_file=str(certs.ca)
    )


async def test_https_client_certificate(net: Loopback, start_web: StartWeb, certs: Certs) -> None:
    """A server requiring a client certificate accepts ours and rejects its absence."""
    tls = _server_tls(str(certs.server_cert), str(certs.server_key), client_ca=str(certs.ca))
    port = await start_web(tls=tls)
    ok, detail, _ = await _get(
        net,
        port,
        "https",
        path="/ok",
        ca_file=str(certs.ca),
        client_cert=str(certs.client_cert),
        client_key=str(certs.client_key),
    )
    assert ok, detail
    ok, detail, reason = await _get(net, port, "https", path="/ok", ca_file=str(certs.ca))
    assert not ok
    assert reason in {"tls", "reset"}, detail


async def test_https_missing_ca_file(net: Loopback) -> None:
    """An unreadable ca_file is a failed probe naming the problem."""
    ok, detail, reason = await _get(net, 443, "https", ca_file="/nonexistent/ca.pem")
    assert (False, "error") == (ok, reason)
    assert detail.startswith("TLS: cannot load certificates: ")


async def test_close_without_probe_is_harmless(net: Loopback) -> None:
    """close() on a probe that never ran (no session yet) does nothing, twice."""
    probe = HttpProbe(make_spec("http", HttpOptions()), net.target(80))
    await probe.close()
    await probe.close()
    assert "http://" + format_hostport(net.address, 80) + "/" == probe.url


# --- the response parser ----------------------------------------------------------------


CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"


async def test_chunked_body(net: Loopback) -> None:
    """A chunked body is put together before the regex and the digest see it."""
    body = b"all " + b"ok here"
    port = await _raw(net, CHUNKED + b"4\r\nall \r\n7;ext=1\r\nok here\r\n0\r\n\r\n")
    good = hashlib.md5(body, usedforsecurity=False).hexdigest()
    assert (True, "GET /: status 200", "ok") == await _get(
        net, port, body_regex="all ok", body_digest=good
    )


async def test_chunked_cut_short(net: Loopback) -> None:
    """A chunked body that ends before its last chunk is down."""
    port = await _raw(net, CHUNKED + b"10\r\nonly this")
    ok, detail, reason = await _get(net, port, body_regex="only")
    assert (False, "reset") == (ok, reason)
    assert detail.startswith("GET /: body: body cut short: "), detail


async def test_body_until_close(net: Loopback) -> None:
    """A body without Content-Length or chunks ends with the connection."""
    port = await _raw(net, b"HTTP/1.0 200 OK\r\n\r\nall ok here")
    assert (True, "GET /: status 200", "ok") == await _get(net, port, body_regex="ok here$")


async def _endless(net: Loopback) -> int:
    """A server that answers with a chunked body that never ends."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(CHUNKED + b"5\r\nfirst\r\n")
        chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
        while not net.stop.is_set():
            writer.write(chunk)
            await writer.drain()

    return await net.tcp(handler)


async def test_oversize_body_read_is_bounded(net: Loopback) -> None:
    """An endless body is read only up to the 1 MiB the regex sees: the probe ends
    (up, the match is in the first MiB; down, it is not) rather than timing out."""
    port = await _endless(net)
    assert (True, "GET /: status 200", "ok") == await _get(net, port, body_regex="^first")
    assert (False, "GET /: body does not match 'never'", "body") == await _get(
        net, port, body_regex="never"
    )


async def test_malformed_status_line(net: Loopback) -> None:
    """A status line that is not HTTP/1.x is a protocol error naming the parser's reason."""
    port = await _raw(net, b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n")
    ok, detail, reason = await _get(net, port)
    assert (False, "protocol") == (ok, reason)
    assert detail.startswith("GET /: bad response: "), detail


async def test_folded_response_header_refused(net: Loopback) -> None:
    """A response header folded onto a second line (obsolete, a smuggling vector) is
    a protocol error."""
    port = await _raw(net, b"HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\nContent-Length: 0\r\n\r\n")
    ok, detail, reason = await _get(net, port)
    assert (False, "protocol") == (ok, reason), detail


async def test_oversize_headers_refused(net: Loopback) -> None:
    """Headers beyond the parser's limit are refused, not buffered for ever."""
    many = b"".join(b"X-%d: %s\r\n" % (i, b"v" * 100) for i in range(1000))
    port = await _raw(net, b"HTTP/1.1 200 OK\r\n" + many + b"\r\n")
    ok, detail, reason = await _get(net, port)
    assert (False, "protocol") == (ok, reason)
    assert detail.startswith("GET /: bad response: headers exceed "), detail


async def test_header_with_line_break_is_not_sent(net: Loopback, start_web: StartWeb) -> None:
    """A configured header value with CR/LF (request splitting) fails the probe and
    nothing is sent to the server."""
    seen: list[web.Request] = []
    port = await start_web(seen)
    ok, detail, reason = await _get(net, port, path="/ok", headers=(("X-Check", "a\r\nX-Evil: 1"),))
    assert (False, "error") == (ok, reason)
    assert detail.startswith("GET /ok: bad header "), detail
    assert [] == seen


async def test_head_with_content_length(net: Loopback) -> None:
    """A HEAD answer announces a body it does not send: the probe does not wait for it."""
    port = await _raw(net, b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    assert (True, "HEAD /: status 200", "ok") == await _get(net, port, method="HEAD")
