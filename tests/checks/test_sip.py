"""The sip probe against loopback SIP servers over UDP and TCP."""

from __future__ import annotations

import asyncio
import re
import socket

from lvsd.checks.sip import SipProbe
from lvsd.config.model import SipOptions, StatusRange
from tests.checks.conftest import TIMEOUT, Loopback, make_spec


def _answer(request: bytes, *statuses: bytes) -> bytes:
    """Responses to ``request``, each echoing its Via, From, To, Call-ID and CSeq."""
    head = request.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    keep = [line for line in head[1:] if re.match(rb"(Via|From|To|Call-ID|CSeq):", line)]
    return b"".join(
        b"SIP/2.0 " + status + b"\r\n" + b"\r\n".join(keep) + b"\r\nContent-Length: 0\r\n\r\n"
        for status in statuses
    )


async def _probe(net: Loopback, port: int, **options: object) -> tuple[str, str, bool]:
    spec = make_spec("sip", SipOptions(**options))  # type: ignore[arg-type]
    result = await SipProbe(spec, net.target(port)).probe()
    return result.detail, result.reason, result.ok


async def test_udp_200_is_up(net: Loopback) -> None:
    """A 200 to OPTIONS over UDP is up; the request is a proper OPTIONS."""
    seen: list[bytes] = []

    def server(data: bytes) -> bytes:
        seen.append(data)
        return _answer(data, b"200 OK")

    port = await net.udp(server)
    where = f"sip udp {net.target(port)}"
    assert (f"{where}: status 200 'OK'", "ok", True) == await _probe(net, port)
    request = seen[0].decode()
    assert request.startswith(f"OPTIONS sip:{net.target(port)} SIP/2.0\r\n")
    assert re.search(r"\r\nVia: SIP/2\.0/UDP \S+;branch=z9hG4bK\w+;rport\r\n", request)
    assert "\r\nCSeq: 1 OPTIONS\r\n" in request
    assert request.endswith("\r\nContent-Length: 0\r\n\r\n")


async def test_udp_status_ranges(net: Loopback) -> None:
    """A final 404 is down unless the status ranges take it."""
    port = await net.udp(lambda data: _answer(data, b"404 Not Found"))
    where = f"sip udp {net.target(port)}"
    assert (f"{where}: status 404 'Not Found', want 200-299", "status", False) == await _probe(
        net, port
    )
    accept = (StatusRange(low=200, high=299), StatusRange(low=404, high=404))
    assert (f"{where}: status 404 'Not Found'", "ok", True) == await _probe(
        net, port, status=accept
    )


async def test_udp_answers_to_other_calls_are_ignored(net: Loopback) -> None:
    """A response without our Call-ID is not ours: silence until the timeout."""
    port = await net.udp(lambda data: b"SIP/2.0 200 OK\r\nCall-ID: other\r\n\r\n")
    where = f"sip udp {net.target(port)}"
    assert (f"{where}: timeout after {TIMEOUT}s", "timeout", False) == await _probe(net, port)


async def test_udp_refused(net: Loopback) -> None:
    """An ICMP port unreachable on UDP is refused."""
    port = net.free_port(socket.SOCK_DGRAM)
    where = f"sip udp {net.target(port)}"
    assert (f"{where}: refused", "refused", False) == await _probe(net, port)


async def test_tcp_provisional_then_200(net: Loopback) -> None:
    """Over TCP, a 100 Trying (with headers) and then a 200 is up."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        assert b"Via: SIP/2.0/TCP " in request
        writer.write(_answer(request, b"100 Trying", b"200 OK"))
        await writer.drain()
        await net.hang()

    port = await net.tcp(handler)
    where = f"sip tcp {net.target(port)}"
    assert (f"{where}: status 200 'OK'", "ok", True) == await _probe(net, port, tcp=True)


async def test_tcp_not_sip(net: Loopback) -> None:
    """An HTTP server on the SIP port is garbage."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()
        await net.hang()

    port = await net.tcp(handler)
    where = f"sip tcp {net.target(port)}"
    assert (f"{where}: garbage 'HTTP/1.1 400 Bad Request'", "protocol", False) == await _probe(
        net, port, tcp=True
    )
