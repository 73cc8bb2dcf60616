"""The mysql probe against scripted loopback servers sending MySQL's first packet."""

from __future__ import annotations

from tests.checks.conftest import Loopback
from tests.checks.handshakes import heard_by_now, run, scripted


def _packet(payload: bytes, sequence: int = 0) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes([sequence]) + payload


#: The start of a real protocol 10 handshake (version, thread id, salt, capabilities...).
HANDSHAKE = (
    b"\x0a8.0.36-0ubuntu0.22.04.1\x00\x0b\x00\x00\x00abcdefgh\x00\xff\xff\xff\x02\x00"
    b"\xff\xdf\x15\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00ijklmnopqrst\x00"
    b"caching_sha2_password\x00"
)


async def test_handshake_is_up_and_nothing_is_sent(net: Loopback) -> None:
    """A protocol 10 handshake is up, naming the server version; the probe sends
    nothing (it only closes)."""
    heard: list[bytes] = []
    assert ("mysql: handshake v10, server 8.0.36-0ubuntu0.22.04.1", "ok", True) == await run(
        net, "mysql", scripted(_packet(HANDSHAKE), heard)
    )
    assert b"" == await heard_by_now(heard, want=0)


async def test_error_packet_is_down(net: Loopback) -> None:
    """An error packet (too many connections) is down with its code and message."""
    says = _packet(b"\xff\x10\x04Too many connections")
    assert ("mysql: error 1040: Too many connections", "status", False) == await run(
        net, "mysql", scripted(says)
    )


async def test_error_packet_with_sql_state(net: Loopback) -> None:
    """An error packet with a SQL state marker shows the message without it."""
    says = _packet(b"\xff\x69\x04#HY000Host '10.0.0.1' is blocked")
    assert ("mysql: error 1129: Host '10.0.0.1' is blocked", "status", False) == await run(
        net, "mysql", scripted(says)
    )


async def test_other_protocol_version(net: Loopback) -> None:
    """Protocol 9 (or anything but 10) is not accepted."""
    assert ("mysql: protocol version 9, want 10", "protocol", False) == await run(
        net, "mysql", scripted(_packet(b"\x093.22\x00"))
    )


async def test_not_mysql(net: Loopback) -> None:
    """Text that is no packet (an SMTP banner: a huge length) is garbage; a packet
    cut short is a closed connection."""
    assert ("mysql: greeting: garbage '220 '", "protocol", False) == await run(
        net, "mysql", scripted(b"220 mx ESMTP\r\n")
    )
    assert ("mysql: greeting: connection closed by peer", "reset", False) == await run(
        net, "mysql", scripted(_packet(HANDSHAKE)[:20], hang_up=True)
    )
