"""The radius probe against a loopback RADIUS server written here (RFC 2865/5997):
it checks the request's Message-Authenticator and signs its answer with its secret."""

from __future__ import annotations

import hashlib
import hmac
import socket
import struct

from lvsd.checks.radius import RadiusProbe
from lvsd.config.model import RadiusOptions
from tests.checks.conftest import TIMEOUT, DatagramHandler, Loopback, make_spec

SECRET = b"s3cret"


def _message_authenticator_ok(request: bytes, secret: bytes) -> bool:
    """Whether the request's Message-Authenticator is the HMAC-MD5 of the packet with
    that attribute zeroed."""
    at, zeroed, given = 20, bytearray(request), b""
    while at < len(request):
        kind, length = request[at], request[at + 1]
        if kind == 80:
            given = request[at + 2 : at + 18]
            zeroed[at + 2 : at + 18] = bytes(16)
        at += length
    return bool(given) and hmac.compare_digest(
        given, hmac.new(secret, bytes(zeroed), hashlib.md5).digest()
    )


def _server(code: int, secret: bytes = SECRET, seen: list[bytes] | None = None) -> DatagramHandler:
    """A datagram handler answering a valid Status-Server with ``code``, signed with
    ``secret``; requests with a bad Message-Authenticator are dropped, as RFC 5997 says."""

    def handle(request: bytes) -> bytes | None:
        if seen is not None:
            seen.append(request)
        if request[0] != 12 or not _message_authenticator_ok(request, SECRET):
            return None
        header = struct.pack("!BBH", code, request[1], 20)
        auth = hashlib.md5(header + request[4:20] + secret, usedforsecurity=False).digest()
        return header + auth

    return handle


async def _probe(net: Loopback, port: int, secret: str = SECRET.decode()) -> tuple[str, str, bool]:
    spec = make_spec("radius", RadiusOptions(secret=secret))
    result = await RadiusProbe(spec, net.target(port)).probe()
    return result.detail, result.reason, result.ok


async def test_access_accept_is_up(net: Loopback) -> None:
    """An Access-Accept with the right authenticator is up; the request was a signed
    Status-Server naming lvsd."""
    seen: list[bytes] = []
    port = await net.udp(_server(2, seen=seen))
    where = f"radius {net.target(port)}"
    assert (f"{where}: Access-Accept", "ok", True) == await _probe(net, port)
    assert 12 == seen[0][0]
    assert b"\x20\x06lvsd" in seen[0]


async def test_accounting_response_is_up(net: Loopback) -> None:
    """An accounting port answers Status-Server with an Accounting-Response: up."""
    port = await net.udp(_server(5))
    assert (f"radius {net.target(port)}: Accounting-Response", "ok", True) == await _probe(
        net, port
    )


async def test_access_reject_is_down(net: Loopback) -> None:
    """An Access-Reject is down."""
    port = await net.udp(_server(3))
    want = "want Access-Accept or Accounting-Response"
    assert (f"radius {net.target(port)}: Access-Reject, {want}", "status", False) == await _probe(
        net, port
    )


async def test_other_secret(net: Loopback) -> None:
    """A server with another secret drops the request (a timeout); an answer signed
    with another secret is a bad authenticator."""
    port = await net.udp(_server(2))
    where = f"radius {net.target(port)}"
    assert (f"{where}: timeout after {TIMEOUT}s", "timeout", False) == await _probe(
        net, port, "wrong"
    )
    port = await net.udp(_server(2, secret=b"other"))
    where = f"radius {net.target(port)}"
    assert (
        f"{where}: bad response authenticator (another secret?)",
        "protocol",
        False,
    ) == await _probe(net, port)


async def test_refused(net: Loopback) -> None:
    """Nobody on the port: the ICMP port unreachable is refused."""
    port = net.free_port(socket.SOCK_DGRAM)
    assert (f"radius {net.target(port)}: refused", "refused", False) == await _probe(net, port)


def test_secret_is_not_in_the_repr() -> None:
    """The secret does not show in the options' repr (nor so in logs of the spec)."""
    assert "s3cret" not in repr(RadiusOptions(secret="s3cret"))
