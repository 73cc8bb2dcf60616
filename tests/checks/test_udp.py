"""The udp probe against loopback UDP servers: echo, wrong reply, silence, closed port."""

from __future__ import annotations

import socket

from lvsd.checks.udp import UdpProbe
from lvsd.config.model import UdpOptions
from lvsd.model import format_hostport
from tests.checks.conftest import TIMEOUT, Loopback, make_spec


async def _run(net: Loopback, port: int, options: UdpOptions) -> tuple[bool, str, str]:
    result = await UdpProbe(make_spec("udp", options), net.target(port)).probe()
    return result.ok, result.detail, result.reason


async def test_expected_reply(net: Loopback) -> None:
    """A reply containing `expect` is up; the payload reached the server."""
    heard: list[bytes] = []

    def pong(data: bytes) -> bytes:
        heard.append(data)
        return b"PONG " + data

    port = await net.udp(pong)
    ok, detail, reason = await _run(net, port, UdpOptions(send=b"ping", expect=b"PONG"))
    assert [b"ping"] == heard
    assert (True, f"udp {format_hostport(net.address, port)}: reply 'PONG ping'", "ok") == (
        ok,
        detail,
        reason,
    )


async def test_wrong_reply(net: Loopback) -> None:
    """Only wrong replies until the timeout: down, echoing the last one."""
    port = await net.udp(lambda data: b"nope")
    where = f"udp {format_hostport(net.address, port)}"
    assert (
        False,
        f"{where}: reply does not contain 'PONG' (got 'nope')",
        "body",
    ) == await _run(net, port, UdpOptions(send=b"ping", expect=b"PONG"))


async def test_expect_but_silent(net: Loopback) -> None:
    """No reply at all while one is expected: timeout."""
    port = await net.udp(lambda data: None)
    where = f"udp {format_hostport(net.address, port)}"
    assert (False, f"{where}: timeout after {TIMEOUT}s", "timeout") == await _run(
        net, port, UdpOptions(send=b"ping", expect=b"PONG")
    )


async def test_closed_port_is_refused(net: Loopback) -> None:
    """An ICMP port unreachable (nothing bound) is down with 'refused'."""
    port = net.free_port(socket.SOCK_DGRAM)
    where = f"udp {format_hostport(net.address, port)}"
    assert (False, f"{where}: refused", "refused") == await _run(net, port, UdpOptions(send=b"x"))


async def test_silence_without_expect_is_up(net: Loopback) -> None:
    """A bound port that says nothing is up when no reply is required."""
    port = await net.udp(lambda data: None)
    where = f"udp {format_hostport(net.address, port)}"
    assert (True, f"{where}: no reply, no ICMP unreachable", "ok") == await _run(
        net, port, UdpOptions(send=b"x")
    )


async def test_silence_with_require_reply_is_down(net: Loopback) -> None:
    """With `require_reply`, silence is a timeout."""
    port = await net.udp(lambda data: None)
    where = f"udp {format_hostport(net.address, port)}"
    assert (False, f"{where}: timeout after {TIMEOUT}s", "timeout") == await _run(
        net, port, UdpOptions(send=b"x", require_reply=True)
    )


async def test_any_reply_without_expect_is_up(net: Loopback) -> None:
    """Without `expect`, any reply is up at once."""
    port = await net.udp(lambda data: b"hi")
    result = await UdpProbe(make_spec("udp", UdpOptions(send=b"x")), net.target(port)).probe()
    assert result.ok
    assert result.duration < TIMEOUT


async def test_source_port(net: Loopback) -> None:
    """`source`/`source_port` are where the server sees the datagram come from."""
    port = await net.udp(lambda data: b"ok")
    source_port = net.free_port(socket.SOCK_DGRAM)
    spec = make_spec("udp", UdpOptions(send=b"x"), source=net.host, source_port=source_port)
    result = await UdpProbe(spec, net.target(port)).probe()
    assert result.ok, result.detail
    assert [(net.host, source_port)] == net.peers
