"""The pgsql probe against scripted loopback servers answering an SSLRequest."""

from __future__ import annotations

import struct

from lvsd.checks.pgsql import SSL_REQUEST
from tests.checks.conftest import Loopback
from tests.checks.handshakes import heard_by_now, run, scripted


async def test_ssl_answers_are_up(net: Loopback) -> None:
    """'N' and 'S' both prove a live postmaster; the probe sent an SSLRequest."""
    heard: list[bytes] = []
    assert ("pgsql: SSLRequest answered 'N'", "ok", True) == await run(
        net, "pgsql", scripted(b"N", heard, first=8)
    )
    assert SSL_REQUEST == await heard_by_now(heard)
    assert ("pgsql: SSLRequest answered 'S'", "ok", True) == await run(
        net, "pgsql", scripted(b"S", first=8)
    )


async def test_error_response_is_down(net: Loopback) -> None:
    """An ErrorResponse is down with its message field."""
    fields = b"SFATAL\x00C57P03\x00Mthe database system is shutting down\x00\x00"
    says = b"E" + struct.pack("!I", 4 + len(fields)) + fields
    assert ("pgsql: error: the database system is shutting down", "status", False) == await run(
        net, "pgsql", scripted(says, first=8)
    )


async def test_not_pgsql(net: Loopback) -> None:
    """Any other first byte (an HTTP server's answer) is garbage."""
    assert ("pgsql: answer: garbage 'H'", "protocol", False) == await run(
        net, "pgsql", scripted(b"HTTP/1.1 400 Bad Request\r\n\r\n", first=8)
    )
