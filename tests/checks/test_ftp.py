"""The ftp probe against scripted loopback FTP servers."""

from __future__ import annotations

from tests.checks.conftest import Loopback
from tests.checks.handshakes import heard_by_now, run, scripted


async def test_220_then_quit(net: Loopback) -> None:
    """A 220 greeting is up, and the probe says QUIT."""
    heard: list[bytes] = []
    assert ("ftp: greeting 220", "ok", True) == await run(
        net, "ftp", scripted(b"220 (vsFTPd 3.0.5)\r\n", heard)
    )
    assert b"QUIT\r\n" == await heard_by_now(heard)


async def test_multiline_greeting(net: Loopback) -> None:
    """A multi-line greeting, with free text lines between, is read to its last line."""
    heard: list[bytes] = []
    says = b"220-Welcome\r\n  to our server\r\n220-rules apply\r\n220 ready\r\n"
    assert ("ftp: greeting 220", "ok", True) == await run(net, "ftp", scripted(says, heard))
    assert b"QUIT\r\n" == await heard_by_now(heard)


async def test_421_and_120_are_down(net: Loopback) -> None:
    """421 (closing) and 120 (ready later) are down."""
    assert ("ftp: greeting 421, want 220", "status", False) == await run(
        net, "ftp", scripted(b"421 Too many users\r\n")
    )
    assert ("ftp: greeting 120, want 220", "status", False) == await run(
        net, "ftp", scripted(b"120-wait\r\n120 in 5 minutes\r\n")
    )


async def test_not_ftp(net: Loopback) -> None:
    """An SSH banner is garbage."""
    assert ("ftp: greeting: garbage 'SSH-2.0-OpenSSH_9.6'", "protocol", False) == await run(
        net, "ftp", scripted(b"SSH-2.0-OpenSSH_9.6\r\n")
    )
